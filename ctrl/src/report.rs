//! What the gateway has carried and dropped, gathered from the SAs (per
//! tunnel) and the workers' published reports, as data a script reads
//! (JSON) and a table a person reads.

use crate::health::HealthView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;
use vpngw_engine::model;
use vpngw_engine::stats::{self, DropCounters};
use vpngw_engine::worker::WorkerReport;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaStats {
    pub spi: u32,
    pub packets: u64,
    pub bytes: u64,
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStats {
    pub name: String,
    pub gateway: String,
    pub up: bool,
    /// Encrypted and sent.
    /// None while an IKE tunnel has no SA negotiated.
    pub outbound: Option<SaStats>,
    /// Decrypted and accepted, per inbound SA.
    pub inbound: Vec<SaStats>,
    /// What the tunnel's SAs that are gone carried (IKE rekeys them), so
    /// its totals never go back.
    #[serde(default, skip_serializing_if = "Retired::is_zero")]
    pub retired: Retired,
}

/// Packets, bytes and drops of SAs no longer installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, u64>,
}

impl Retired {
    pub fn is_zero(&self) -> bool {
        *self == Retired::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub drops: BTreeMap<String, u64>,
    pub bursts: u64,
    pub latency_p50_ns: u64,
    pub latency_p99_ns: u64,
    pub latency_max_ns: u64,
    /// Each port's own counters (AF_XDP: tx-full drops, wake-up calls...),
    /// by port id.
    pub ports: BTreeMap<u16, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub tunnels: Vec<TunnelStats>,
    pub workers: Vec<WorkerStats>,
    /// Drops per gateway (by name), summed over the workers.
    pub gateway_drops: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Drops by reason as `reason=n ...`, or `-` for none.
pub fn drops_text(d: &BTreeMap<String, u64>) -> String {
    if d.is_empty() {
        "-".to_string()
    } else {
        d.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" ")
    }
}

/// Drop counters by reason name, the nonzero ones.
pub fn named(d: &DropCounters) -> BTreeMap<String, u64> {
    d.nonzero().map(|(r, n)| (r.name().to_string(), n)).collect()
}

fn sa_stats(spi: u32, traffic: stats::Traffic, drops: &DropCounters) -> SaStats {
    SaStats { spi, packets: traffic.packets, bytes: traffic.bytes, drops: named(drops) }
}

impl Report {
    /// Reads the counters of `cfg`'s SAs (each lock held a moment) and the
    /// workers' last reports.
    pub fn gather(cfg: &model::Config, workers: &[WorkerReport]) -> Report {
        let gw_name = |id| cfg.gateways.iter().find(|g| g.id == id).map_or(String::new(), |g| g.name.clone());
        let tunnels = cfg
            .tunnels
            .iter()
            .map(|t| {
                let outbound = t.outbound.as_ref().map(|sa| {
                    let sa = sa.lock().expect("SA lock");
                    sa_stats(sa.cfg.spi, sa.state.lifetime.traffic, &sa.state.drops)
                });
                let inbound = t
                    .inbound
                    .iter()
                    .map(|sa| {
                        let sa = sa.lock().expect("SA lock");
                        sa_stats(sa.cfg.spi, sa.state.lifetime.traffic, &sa.state.drops)
                    })
                    .collect();
                TunnelStats {
                    name: t.name.clone(),
                    gateway: gw_name(t.gateway),
                    up: t.up,
                    outbound,
                    inbound,
                    retired: Retired::default(),
                }
            })
            .collect();
        let mut gateway_drops: BTreeMap<String, DropCounters> = BTreeMap::new();
        for w in workers {
            for (id, d) in &w.gateway_drops {
                gateway_drops.entry(gw_name(*id)).or_default().add(d);
            }
        }
        let workers = workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerStats {
                worker: i,
                rx_frames: w.rx_frames,
                tx_frames: w.tx_frames,
                drops: named(&w.drops),
                bursts: w.bursts,
                latency_p50_ns: w.latency_p50_ns,
                latency_p99_ns: w.latency_p99_ns,
                latency_max_ns: w.latency_max_ns,
                ports: w
                    .ports
                    .iter()
                    .map(|(id, c)| (*id, c.iter().map(|(k, v)| (k.to_string(), *v)).collect()))
                    .collect(),
            })
            .collect();
        let gateway_drops = gateway_drops.into_iter().map(|(g, d)| (g, named(&d))).collect();
        Report { tunnels, workers, gateway_drops }
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let drops = drops_text;
        let _ = writeln!(
            s,
            "{:<12} {:<8} {:<4} {:>10} {:>12} {:>10} {:>12}  drops",
            "tunnel", "gateway", "up", "tx pkts", "tx bytes", "rx pkts", "rx bytes"
        );
        for t in &self.tunnels {
            let (tx_p, tx_b, rx_p, rx_b) = totals(t);
            let mut all = t.outbound.as_ref().map(|o| o.drops.clone()).unwrap_or_default();
            add_drops(&mut all, &t.retired.drops);
            for sa in &t.inbound {
                for (r, n) in &sa.drops {
                    *all.entry(r.clone()).or_default() += n;
                }
            }
            let up = if t.up { "yes" } else { "no" };
            let _ = writeln!(
                s,
                "{:<12} {:<8} {:<4} {tx_p:>10} {tx_b:>12} {rx_p:>10} {rx_b:>12}  {}",
                t.name,
                t.gateway,
                up,
                drops(&all)
            );
        }
        for w in &self.workers {
            let _ = writeln!(
                s,
                "worker {}: rx {} tx {} frames; bursts {} (p50 {} ns, p99 {} ns); drops {}",
                w.worker,
                w.rx_frames,
                w.tx_frames,
                w.bursts,
                w.latency_p50_ns,
                w.latency_p99_ns,
                drops(&w.drops)
            );
            for (port, counters) in &w.ports {
                let nonzero: BTreeMap<String, u64> =
                    counters.iter().filter(|(_, n)| **n != 0).map(|(k, n)| (k.clone(), *n)).collect();
                let _ = writeln!(s, "  port {port}: {}", drops(&nonzero));
            }
        }
        for (g, d) in &self.gateway_drops {
            let _ = writeln!(s, "gateway {g}: drops {}", drops(d));
        }
        s
    }
}

/// Packets and bytes each way, and their rates over the last sample
/// interval (zero until there are two samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub rx_pps: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TunnelTraffic {
    pub name: String,
    pub gateway: String,
    pub up: bool,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Drops on the tunnel's SAs, by reason.
    pub drops: BTreeMap<String, u64>,
    /// The health check's state and numbers, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
    /// Its latest state changes, oldest first (at most
    /// [`HISTORY`]): when, which way, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StateChange>,
}

/// How many state changes a tunnel's history shows.
pub const HISTORY: usize = 10;

/// A tunnel going up or down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// Milliseconds since 1970.
    pub time_ms: u64,
    pub up: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayTraffic {
    pub name: String,
    pub tunnels: usize,
    pub tunnels_up: usize,
    /// The sum over its tunnels.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Drops by reason: the workers' for this gateway and its tunnels' SAs.
    pub drops: BTreeMap<String, u64>,
    /// The bandwidth limit, bit/s each way, and the rates as percentages
    /// of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_utilisation_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_utilisation_percent: Option<f64>,
}

/// Traffic per gateway and per tunnel: `vpnctl stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub gateways: Vec<GatewayTraffic>,
    pub tunnels: Vec<TunnelTraffic>,
}

/// A tunnel's packets and bytes sent and received, its retired SAs' too.
fn totals(t: &TunnelStats) -> (u64, u64, u64, u64) {
    let r = &t.retired;
    let (rx_p, rx_b) = t.inbound.iter().fold((r.rx_packets, r.rx_bytes), |(p, b), sa| (p + sa.packets, b + sa.bytes));
    let (tx_p, tx_b) = t.outbound.as_ref().map_or((0, 0), |o| (o.packets, o.bytes));
    (tx_p + r.tx_packets, tx_b + r.tx_bytes, rx_p, rx_b)
}

fn add_drops(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (r, n) in from {
        *into.entry(r.clone()).or_default() += n;
    }
}

impl Stats {
    /// The totals of `now`, with rates from the samples `(earlier, later,
    /// interval)` when there are two.
    pub fn new(cfg: &model::Config, now: &Report, rates: Option<(&Report, &Report, Duration)>) -> Stats {
        let rate = |name: &str| -> (f64, f64, f64, f64) {
            let Some((a, b, dt)) = rates else { return (0.0, 0.0, 0.0, 0.0) };
            let secs = dt.as_secs_f64();
            let find = |r: &Report| r.tunnels.iter().find(|t| t.name == name).map(totals);
            match (find(a), find(b)) {
                (Some(x), Some(y)) if secs > 0.0 => {
                    let per_s = |from: u64, to: u64| to.saturating_sub(from) as f64 / secs;
                    (per_s(x.1, y.1) * 8.0, per_s(x.0, y.0), per_s(x.3, y.3) * 8.0, per_s(x.2, y.2))
                }
                _ => (0.0, 0.0, 0.0, 0.0),
            }
        };
        let tunnels: Vec<TunnelTraffic> = now
            .tunnels
            .iter()
            .map(|t| {
                let (tx_packets, tx_bytes, rx_packets, rx_bytes) = totals(t);
                let (tx_bps, tx_pps, rx_bps, rx_pps) = rate(&t.name);
                let mut drops = t.outbound.as_ref().map(|o| o.drops.clone()).unwrap_or_default();
                add_drops(&mut drops, &t.retired.drops);
                for sa in &t.inbound {
                    add_drops(&mut drops, &sa.drops);
                }
                TunnelTraffic {
                    name: t.name.clone(),
                    gateway: t.gateway.clone(),
                    up: t.up,
                    traffic: Traffic { tx_packets, tx_bytes, rx_packets, rx_bytes, tx_bps, tx_pps, rx_bps, rx_pps },
                    drops,
                    health: None,
                    history: Vec::new(),
                }
            })
            .collect();
        let gateways = cfg
            .gateways
            .iter()
            .map(|g| {
                let mut s = GatewayTraffic { name: g.name.clone(), ..Default::default() };
                for t in tunnels.iter().filter(|t| t.gateway == g.name) {
                    s.tunnels += 1;
                    s.tunnels_up += usize::from(t.up);
                    let (a, b) = (&mut s.traffic, &t.traffic);
                    (a.tx_packets, a.tx_bytes, a.rx_packets, a.rx_bytes) = (
                        a.tx_packets + b.tx_packets,
                        a.tx_bytes + b.tx_bytes,
                        a.rx_packets + b.rx_packets,
                        a.rx_bytes + b.rx_bytes,
                    );
                    (a.tx_bps, a.tx_pps, a.rx_bps, a.rx_pps) =
                        (a.tx_bps + b.tx_bps, a.tx_pps + b.tx_pps, a.rx_bps + b.rx_bps, a.rx_pps + b.rx_pps);
                    add_drops(&mut s.drops, &t.drops);
                }
                if let Some(d) = now.gateway_drops.get(&g.name) {
                    add_drops(&mut s.drops, d);
                }
                if let Some(limit) = g.bandwidth_bps {
                    s.bandwidth_bps = Some(limit);
                    s.tx_utilisation_percent = Some(100.0 * s.traffic.tx_bps / limit as f64);
                    s.rx_utilisation_percent = Some(100.0 * s.traffic.rx_bps / limit as f64);
                }
                s
            })
            .collect();
        Stats { gateways, tunnels }
    }
}
