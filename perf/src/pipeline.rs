//! The whole forwarding pipeline in process, on one core: one gateway with
//! N tunnels (each with its SAs, an SPD rule protecting its IDC's /24, and
//! a route), a route table grown to R routes, frames fed to
//! `Pipeline::process` in bursts of 32. Outbound (inside to tunnel: SPD
//! hit, encrypt) and inbound (tunnel to inside: decrypt, selectors, a FIB
//! lookup in the big table), at 64 B, IMIX and 1400 B, next to the raw
//! AEAD speed on the same packet sizes, measured in the same run.

use crate::esp::Raw;
use crate::{median, print_table, print_targets, rate, Target, XorShift};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vpngw_engine::io::FRAME_HEADROOM;
use vpngw_engine::model::*;
use vpngw_engine::pipeline::{Out, Pipeline};
use vpngw_engine::sa::Direction;
use vpngw_engine::snapshot::Snapshot;
use vpngw_engine::wire::ether;
use vpngw_engine::wire::ipv4::Ipv4Repr;
use vpngw_engine::{esp, InboundSa, OutboundSa, PacketBuf, SaConfig, Suite};

pub(crate) const BURST: usize = 32;
pub(crate) const INSIDE: PortId = 1;
pub(crate) const OUTSIDE: PortId = 2;
pub(crate) const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub(crate) const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub(crate) const VPC_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const GW_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// Packet sizes: one size, or the simple IMIX (7 x 64, 4 x 576, 1 x 1500
/// on the wire; here the IP packet, so 1400 stands for the large one).
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Mix {
    Fixed(usize),
    Imix,
}

impl Mix {
    fn sizes(self) -> Vec<usize> {
        match self {
            Mix::Fixed(n) => vec![n],
            Mix::Imix => [64; 7].into_iter().chain([576; 4]).chain([1400]).collect(),
        }
    }

    fn name(self) -> String {
        match self {
            Mix::Fixed(n) => n.to_string(),
            Mix::Imix => "imix".into(),
        }
    }
}

/// Tunnel i's IDC: 11.(i/256).(i%256).0/24 (up to 65,536 x 256 tunnels).
pub(crate) fn idc(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(11 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 0)
}

fn peer(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i as u32)
}

pub(crate) struct Lab {
    pub snap: Arc<Snapshot>,
    /// How long building that snapshot took (what every change the
    /// control thread publishes costs, a tunnel going down among them).
    pub build: Duration,
    /// Each tunnel's customer gateway side: it encrypts the inbound traffic.
    pub peers: Vec<OutboundSa>,
}

fn sa(spi: u32, dir: Direction, local: Ipv4Addr, remote: Ipv4Addr) -> SaConfig {
    SaConfig::new(spi, dir, Suite::AesGcm128, local.into(), remote.into())
}

/// A gateway with `tunnels` tunnels and `routes` routes in all.
fn lab(tunnels: usize, routes: usize) -> Lab {
    let (cfg, peers) = config(tunnels, routes);
    Lab::new(&cfg, peers)
}

impl Lab {
    /// The snapshot of `cfg`, timed.
    pub(crate) fn new(cfg: &Config, peers: Vec<OutboundSa>) -> Lab {
        let t = Instant::now();
        let snap = Arc::new(Snapshot::build(cfg, 1).expect("a valid bench configuration"));
        Lab { snap, build: t.elapsed(), peers }
    }
}

/// [`lab`]'s configuration, and each tunnel's customer gateway side.
pub(crate) fn config(tunnels: usize, routes: usize) -> (Config, Vec<OutboundSa>) {
    let ip = |a: Ipv4Addr| IpAddr::V4(a);
    let port = |id, neighbours| Port { id, mac: MAC, mtu: 9000, addrs: vec![], router: None, neighbours };
    let mut outside = port(OUTSIDE, vec![(ip(ROUTER), PEER_MAC)]);
    outside.router = Some(ip(ROUTER));
    let mut cfg = Config {
        ports: vec![port(INSIDE, vec![(ip(VPC_HOST), PEER_MAC)]), outside],
        gateways: vec![Gateway {
            id: 1,
            name: "bench".into(),
            attachment: Attachment::Vpc,
            outside_port: OUTSIDE,
            outside_addrs: vec![ip(GW_ADDR)],
            inside_port: Some(INSIDE),
            bandwidth_bps: None,
        }],
        ..Config::default()
    };
    let route = |prefix: Ipv4Addr, len, next_hop| Route {
        gateway: 1,
        prefix: ip(prefix),
        len,
        next_hop,
        priority: 0,
        enabled: true,
    };
    cfg.routes.push(route(Ipv4Addr::new(10, 1, 0, 0), 16, NextHop::Inside));
    let mut peers = Vec::with_capacity(tunnels);
    for i in 0..tunnels {
        let id = i as u32;
        let key: Vec<u8> = (0..20).map(|k| (k as u8) ^ (i as u8)).collect();
        let (spi_out, spi_in) = (0x10000 + 2 * id, 0x10001 + 2 * id);
        cfg.customer_gateways.push(CustomerGateway { id, name: format!("cgw{i}"), addr: ip(peer(i)) });
        let out = OutboundSa::new(sa(spi_out, Direction::Outbound, GW_ADDR, peer(i)), &key, 0).unwrap();
        let inb = InboundSa::new(sa(spi_in, Direction::Inbound, GW_ADDR, peer(i)), &key, 0).unwrap();
        cfg.tunnels.push(Tunnel {
            id,
            name: format!("t{i}"),
            gateway: 1,
            customer_gateway: id,
            outbound: Some(Arc::new(Mutex::new(out))),
            inbound: vec![Arc::new(Mutex::new(inb))],
            up: true,
            mss_clamp: None,
            probe: None,
            on_demand: false,
        });
        peers.push(OutboundSa::new(sa(spi_in, Direction::Outbound, peer(i), GW_ADDR), &key, 0).unwrap());
        cfg.spd.push(SpdRule {
            gateway: 1,
            priority: 100,
            src: AddrRange::prefix(ip(Ipv4Addr::new(10, 1, 0, 0)), 16),
            dst: AddrRange::prefix(ip(idc(i)), 24),
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
            action: SpdAction::Protect(id),
        });
        cfg.routes.push(route(idc(i), 24, NextHop::Tunnel(id)));
    }
    // Filler routes up to `routes`: deterministic, 20.0.0.0 and above, /16
    // to /28, spread over the tunnels.
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    while cfg.routes.len() < routes {
        let x = rng.next();
        let a = 0x1400_0000 + (x as u32 % 0xb000_0000);
        let len = 16 + (x >> 40) as u8 % 13;
        cfg.routes.push(route(Ipv4Addr::from(a), len, NextHop::Tunnel((x >> 20) as u32 % tunnels as u32)));
    }
    (cfg, peers)
}

/// A frame: Ethernet and a UDP/IPv4 packet of `size` bytes, in a buffer
/// with the head- and tailroom a UMEM frame has.
pub(crate) fn frame(src: Ipv4Addr, dst: Ipv4Addr, size: usize, to: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADROOM + 14 + size + 64];
    ether::emit_header(&mut f[FRAME_HEADROOM..], MAC, to, ether::ethertype::IPV4);
    let ip = &mut f[FRAME_HEADROOM + 14..FRAME_HEADROOM + 14 + size];
    Ipv4Repr { src, dst, protocol: 17, payload_len: size - 20, ttl: 64, tos: 0, ident: 1, dont_frag: true }.emit(ip);
    f
}

pub(crate) fn packet(f: Vec<u8>) -> PacketBuf<Vec<u8>> {
    let len = f.len() - FRAME_HEADROOM - 64;
    PacketBuf::new(f, FRAME_HEADROOM, len).unwrap()
}

/// Runs one burst through the pipeline; returns the time it took and the
/// frames' buffers. Every frame must be sent (a drop here is a bench bug).
pub(crate) fn run(
    pipeline: &mut Pipeline,
    snap: &Arc<Snapshot>,
    port: PortId,
    mut burst: Vec<PacketBuf<Vec<u8>>>,
) -> Duration {
    let (mut tx, mut recycle) = (Vec::with_capacity(BURST), Vec::new());
    let n = burst.len();
    let (mut alloc, mut hand_off) = (|| None, |_, h| Err(h));
    let mut out = Out { tx: &mut tx, recycle: &mut recycle, alloc: &mut alloc, hand_off: &mut hand_off };
    let t = Instant::now();
    pipeline.process(snap, port, &mut burst, 0, &mut out);
    let took = t.elapsed();
    assert_eq!(tx.len(), n, "every frame forwarded: drops {:?}", pipeline.drops.nonzero().collect::<Vec<_>>());
    took
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub tunnels: usize,
    pub routes: usize,
    pub direction: &'static str,
    pub size: String,
    pub mpps: f64,
    pub gbps: f64,
    pub raw_mpps: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub tunnels: usize,
    pub routes: usize,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub rounds: usize,
    pub round_ms: u64,
    pub results: Vec<Row>,
    /// Building the snapshot, per tunnel count (with the routes).
    pub builds: Vec<Build>,
    pub targets: Vec<Target>,
}

pub fn run_bench(
    tunnel_counts: &[usize],
    routes: usize,
    rounds: usize,
    round: Duration,
    progress: impl Fn(&str),
) -> Report {
    let mixes = [Mix::Fixed(64), Mix::Imix, Mix::Fixed(1400)];
    let raw = Raw::new(Suite::AesGcm128, &[7u8; 20]);
    let mut labs: Vec<(Lab, Pipeline)> = tunnel_counts
        .iter()
        .map(|&n| {
            progress(&format!("pipeline: building {n} tunnels, {routes} routes"));
            (lab(n, routes), Pipeline::default())
        })
        .collect();
    let mut results = Vec::new();
    for mix in mixes {
        let sizes = mix.sizes();
        let avg = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        // Rounds interleave the tunnel counts and the raw AEAD, so a noisy
        // moment on a shared machine hurts them alike.
        let (mut outb, mut inb) = (vec![vec![]; labs.len()], vec![vec![]; labs.len()]);
        let mut raws = vec![];
        let mut k = 0usize;
        for r in 0..rounds {
            progress(&format!("pipeline: {} B, round {} of {rounds}", mix.name(), r + 1));
            for (l, (lab, pipeline)) in labs.iter_mut().enumerate() {
                let n = lab.peers.len();
                outb[l].push(rate(round, BURST, || {
                    let burst = (0..BURST)
                        .map(|j| {
                            let (i, size) = ((k + j) % n, sizes[(k + j) % sizes.len()]);
                            packet(frame(VPC_HOST, Ipv4Addr::from(u32::from(idc(i)) + 9), size, MAC))
                        })
                        .collect();
                    k += BURST;
                    run(pipeline, &lab.snap, INSIDE, burst)
                }));
                inb[l].push(rate(round, BURST, || {
                    let burst = (0..BURST)
                        .map(|j| {
                            let (i, size) = ((k + j) % n, sizes[(k + j) % sizes.len()]);
                            let inner = frame(Ipv4Addr::from(u32::from(idc(i)) + 9), VPC_HOST, size, MAC);
                            let mut p = packet(inner);
                            p.narrow(14..p.len()).unwrap();
                            esp::encap(&mut lab.peers[i], &mut p, 0, &mut Vec::new()).unwrap();
                            let mut f = vec![0u8; FRAME_HEADROOM + 14 + p.len() + 64];
                            ether::emit_header(&mut f[FRAME_HEADROOM..], MAC, PEER_MAC, ether::ethertype::IPV4);
                            f[FRAME_HEADROOM + 14..FRAME_HEADROOM + 14 + p.len()].copy_from_slice(p.data());
                            packet(f)
                        })
                        .collect();
                    k += BURST;
                    run(pipeline, &lab.snap, OUTSIDE, burst)
                }));
            }
            raws.push(rate(round, BURST, || {
                let mut bufs: Vec<Vec<u8>> = (0..BURST).map(|j| vec![0x5a; sizes[(k + j) % sizes.len()]]).collect();
                k += BURST;
                let t = Instant::now();
                for b in &mut bufs {
                    std::hint::black_box(raw.seal(&[1; 12], b));
                }
                t.elapsed()
            }));
        }
        let raw_rate = median(raws);
        for (l, &n) in tunnel_counts.iter().enumerate() {
            for (direction, r) in
                [("outbound", median(std::mem::take(&mut outb[l]))), ("inbound", median(std::mem::take(&mut inb[l])))]
            {
                results.push(Row {
                    tunnels: n,
                    routes,
                    direction,
                    size: mix.name(),
                    mpps: r / 1e6,
                    gbps: r * avg * 8.0 / 1e9,
                    raw_mpps: raw_rate / 1e6,
                    ratio: r / raw_rate,
                });
            }
        }
    }
    results.sort_by_key(|r| r.tunnels);
    let targets = targets(&results);
    let builds =
        labs.iter().map(|(l, _)| Build { tunnels: l.peers.len(), routes, ms: l.build.as_secs_f64() * 1e3 }).collect();
    Report { bench: "pipeline", rounds, round_ms: round.as_millis() as u64, results, builds, targets }
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let find =
        |n: usize, dir: &str, size: &str| rows.iter().find(|r| r.tunnels == n && r.direction == dir && r.size == size);
    for r in rows.iter().filter(|r| r.size == "1400" && r.tunnels == rows[0].tunnels) {
        t.push(Target {
            what: format!("{} 1400 B, {} tunnel(s), vs raw AEAD", r.direction, r.tunnels),
            want: ">= 0.85".into(),
            got: format!("{:.3}", r.ratio),
            met: r.ratio >= 0.85,
        });
    }
    let base = rows[0].tunnels;
    for (n, limit) in [(1000, 0.90), (100_000, 0.75)] {
        for dir in ["outbound", "inbound"] {
            for size in ["64", "imix", "1400"] {
                if let (Some(b), Some(r)) = (find(base, dir, size), find(n, dir, size)) {
                    t.push(Target {
                        what: format!("{dir} {size} B, {n} tunnels vs {base}"),
                        want: format!(">= {limit:.2}"),
                        got: format!("{:.3}", r.mpps / b.mpps),
                        met: r.mpps / b.mpps >= limit,
                    });
                }
            }
        }
    }
    t
}

pub fn print(report: &Report) {
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.tunnels.to_string(),
                r.routes.to_string(),
                r.direction.to_string(),
                r.size.clone(),
                format!("{:.3}", r.mpps),
                format!("{:.2}", r.gbps),
                format!("{:.3}", r.raw_mpps),
                format!("{:.3}", r.ratio),
            ]
        })
        .collect();
    println!(
        "Pipeline in process, one core, AES-GCM-128; raw = AES-GCM-128 seal of the same sizes, same run (median of {} rounds of {} ms)",
        report.rounds, report.round_ms
    );
    print_table(&["tunnels", "routes", "direction", "bytes", "Mpps", "Gbit/s", "raw Mpps", "ratio"], &rows);
    println!();
    println!("Snapshot build (every change the control thread publishes, a tunnel going down among them)");
    let builds: Vec<Vec<String>> = report
        .builds
        .iter()
        .map(|b| vec![b.tunnels.to_string(), b.routes.to_string(), format!("{:.0}", b.ms)])
        .collect();
    print_table(&["tunnels", "routes", "build ms"], &builds);
    println!();
    print_targets(&report.targets);
}
