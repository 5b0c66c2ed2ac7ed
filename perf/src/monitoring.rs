//! What monitoring costs the data plane: the pipeline of
//! [`crate::pipeline`] with one tunnel, plain, then with each feature of
//! issue 8 turned on — a bandwidth limit too high to be reached (so every
//! packet pays the policer's compare-and-swap and none is dropped), a
//! health check (probe addresses every decrypted packet is compared to),
//! a capture running on the measured tunnel (at most 10,000 copies a
//! second; the rest pay one load and compare), and all three. Outbound
//! and inbound, 64 and 1400 bytes; rounds interleave the variants, and
//! each is reported as a ratio to plain from the same run.

use crate::pipeline::{config, frame, idc, packet, run, Lab, BURST, INSIDE, MAC, OUTSIDE, PEER_MAC, VPC_HOST};
use crate::{median, print_table, print_targets, rate, Target};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use vpngw_engine::esp;
use vpngw_engine::io::FRAME_HEADROOM;
use vpngw_engine::model::Probe;
use vpngw_engine::pipeline::Pipeline;
use vpngw_engine::tap::{Tap, TapPoint};
use vpngw_engine::wire::ether;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Policed,
    Probed,
    Captured,
    All,
}

impl Variant {
    const ALL: [Variant; 5] = [Variant::Plain, Variant::Policed, Variant::Probed, Variant::Captured, Variant::All];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Policed => "bandwidth limit",
            Variant::Probed => "health check",
            Variant::Captured => "capture (10k pkt/s)",
            Variant::All => "all three",
        }
    }

    fn policed(self) -> bool {
        matches!(self, Variant::Policed | Variant::All)
    }
    fn probed(self) -> bool {
        matches!(self, Variant::Probed | Variant::All)
    }
    fn captured(self) -> bool {
        matches!(self, Variant::Captured | Variant::All)
    }
}

/// One tunnel with the variant's features, its pipeline, and its tap.
fn setup(v: Variant) -> (Lab, Pipeline, Option<Arc<Tap>>) {
    let (mut cfg, peers) = config(1, 1000);
    if v.policed() {
        cfg.gateways[0].bandwidth_bps = Some(1_000_000_000_000);
    }
    if v.probed() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        cfg.tunnels[0].probe = Some(Probe { local: a("169.254.0.1"), remote: a("169.254.0.2") });
    }
    let lab = Lab::new(&cfg, peers);
    let mut pipeline = Pipeline::default();
    let tap = v.captured().then(|| Arc::new(Tap::new(cfg.tunnels[0].id, TapPoint::Inner, u64::MAX, 10_000)));
    pipeline.tap = tap.clone();
    (lab, pipeline, tap)
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub variant: &'static str,
    pub direction: &'static str,
    pub size: usize,
    pub mpps: f64,
    /// To plain, same direction and size, same run.
    pub ratio: f64,
    /// Packets the capture copied during the measurement.
    pub copied: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub rounds: usize,
    pub round_ms: u64,
    pub results: Vec<Row>,
    pub targets: Vec<Target>,
}

pub fn run_bench(rounds: usize, round: Duration, progress: impl Fn(&str)) -> Report {
    let mut setups: Vec<_> = Variant::ALL.iter().map(|&v| (v, setup(v))).collect();
    let mut results = Vec::new();
    for size in [64usize, 1400] {
        let n = setups.len();
        let (mut outb, mut inb, mut copied) = (vec![vec![]; n], vec![vec![]; n], vec![0u64; n]);
        let mut k = 0usize;
        for r in 0..rounds {
            progress(&format!("monitoring: {size} B, round {} of {rounds}", r + 1));
            for (l, (_, (lab, pipeline, tap))) in setups.iter_mut().enumerate() {
                let dst = Ipv4Addr::from(u32::from(idc(0)) + 9);
                outb[l].push(rate(round, BURST, || {
                    let burst = (0..BURST).map(|_| packet(frame(VPC_HOST, dst, size, MAC))).collect();
                    k += BURST;
                    run(pipeline, &lab.snap, INSIDE, burst)
                }));
                inb[l].push(rate(round, BURST, || {
                    let burst = (0..BURST)
                        .map(|_| {
                            let mut p = packet(frame(dst, VPC_HOST, size, MAC));
                            p.narrow(14..p.len()).unwrap();
                            esp::encap(&mut lab.peers[0], &mut p, 0, &mut Vec::new()).unwrap();
                            let mut f = vec![0u8; FRAME_HEADROOM + 14 + p.len() + 64];
                            ether::emit_header(&mut f[FRAME_HEADROOM..], MAC, PEER_MAC, ether::ethertype::IPV4);
                            f[FRAME_HEADROOM + 14..FRAME_HEADROOM + 14 + p.len()].copy_from_slice(p.data());
                            packet(f)
                        })
                        .collect();
                    run(pipeline, &lab.snap, OUTSIDE, burst)
                }));
                // The control thread takes the copies (every 100 ms in the daemon).
                if let Some(t) = tap {
                    copied[l] += t.take().len() as u64;
                }
            }
        }
        let rates: Vec<(f64, f64)> =
            (0..n).map(|l| (median(std::mem::take(&mut outb[l])), median(std::mem::take(&mut inb[l])))).collect();
        for (l, (v, _)) in setups.iter().enumerate() {
            for (d, direction) in [(0, "outbound"), (1, "inbound")] {
                let pick = |r: (f64, f64)| if d == 0 { r.0 } else { r.1 };
                results.push(Row {
                    variant: v.name(),
                    direction,
                    size,
                    mpps: pick(rates[l]) / 1e6,
                    ratio: pick(rates[l]) / pick(rates[0]),
                    copied: copied[l],
                });
            }
        }
    }
    let targets = results
        .iter()
        .filter(|r| r.variant == Variant::Captured.name())
        .map(|r| Target {
            what: format!("{} {} B with a capture running, vs without", r.direction, r.size),
            want: ">= 0.95".into(),
            got: format!("{:.3}", r.ratio),
            met: r.ratio >= 0.95,
        })
        .collect();
    Report { bench: "monitoring", rounds, round_ms: round.as_millis() as u64, results, targets }
}

pub fn print(report: &Report) {
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.variant.to_string(),
                r.direction.to_string(),
                r.size.to_string(),
                format!("{:.3}", r.mpps),
                format!("{:.3}", r.ratio),
                r.copied.to_string(),
            ]
        })
        .collect();
    print_table(&["variant", "direction", "size", "Mpps", "vs plain", "copied"], &rows);
    print_targets(&report.targets);
}
