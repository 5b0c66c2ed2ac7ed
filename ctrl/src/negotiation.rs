//! The tunnels IKE keys, between the control thread and [`crate::ike`]:
//! an IKE endpoint per gateway address these tunnels use (the daemon's
//! drivers feed them datagrams), each tunnel's settings made from its
//! `ike` section and the SPD rules that protect into it, the SAs
//! negotiated for it as engine SAs (the control thread puts them into the
//! model), initiating and restarting as the tunnel's configuration asks,
//! and the view `vpnctl show ike` prints. Without I/O: the time comes in.

use crate::config::ike::Negotiation as Start;
use crate::config::ike::{self, Mapping};
use crate::config::{Config, ConfigError, IkeConfig};
use crate::ike::endpoint::{Endpoint, TunnelId};
use crate::ike::message::TrafficSelector;
use crate::ike::sa::{show_identity, Output, Phase, SaKeys, Settings};
use crate::report::{named, Report, Retired};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vpngw_engine::lifetime::{Lifetimes, Limit};
use vpngw_engine::model::{self, PortRange, SaHandle, SpdAction, MAX_INBOUND_SAS};
use vpngw_engine::stats::DropCounters;
use vpngw_engine::{Direction, InboundSa, NatT, OutboundSa, SaConfig};

/// How long a tunnel that restarts waits after going down.
pub const RETRY: Duration = Duration::from_secs(5);

/// A tunnel's negotiation: where it is served, and what it has now.
struct Keyed {
    local: IpAddr,
    remote: IpAddr,
    slot: TunnelId,
    /// What it was made from, to tell a change.
    made_from: (IkeConfig, Vec<Mapping>),
    cfg: IkeConfig,
    outbound: Option<SaHandle<OutboundSa>>,
    /// Oldest first.
    inbound: Vec<SaHandle<InboundSa>>,
    selectors: Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)>,
    /// Why it last went down (or failed to come up).
    last_failure: Option<String>,
    retry_at: Option<Instant>,
    /// What its SAs that are gone carried.
    retired: Retired,
}

impl Keyed {
    fn retire_outbound(&mut self) {
        if let Some(sa) = self.outbound.take() {
            let sa = sa.lock().expect("SA lock");
            let t = sa.state.lifetime.traffic;
            self.retired.tx_packets += t.packets;
            self.retired.tx_bytes += t.bytes;
            self.retire_drops(&sa.state.drops);
        }
    }

    fn retire_inbound(&mut self, sa: SaHandle<InboundSa>) {
        let sa = sa.lock().expect("SA lock");
        let t = sa.state.lifetime.traffic;
        self.retired.rx_packets += t.packets;
        self.retired.rx_bytes += t.bytes;
        self.retire_drops(&sa.state.drops);
    }

    fn retire_drops(&mut self, drops: &DropCounters) {
        for (reason, n) in named(drops) {
            *self.retired.drops.entry(reason).or_default() += n;
        }
    }

    fn retire_all(&mut self) {
        self.retire_outbound();
        for sa in std::mem::take(&mut self.inbound) {
            self.retire_inbound(sa);
        }
    }
}

/// What the control thread must do about an IKE output.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The tunnel's SAs changed: put them into the model and publish.
    Keys,
    Up {
        tunnel: String,
        detail: String,
    },
    Down {
        tunnel: String,
        why: String,
    },
    /// A log line, about a tunnel or not.
    Log {
        tunnel: Option<String>,
        line: String,
    },
}

/// The IKE tunnels of a configuration, with their settings, as planned
/// (checked, not yet served).
pub struct Plan {
    tunnels: Vec<(String, IpAddr, IpAddr, Settings, IkeConfig, Vec<Mapping>)>,
}

#[derive(Default)]
pub struct Negotiation {
    endpoints: BTreeMap<IpAddr, Endpoint>,
    tunnels: BTreeMap<String, Keyed>,
}

impl Negotiation {
    /// The IKE settings of every tunnel of `file` with an `ike` section
    /// (`model` is `file.to_model`'s): checked, not yet used.
    pub fn plan(file: &Config, model: &model::Config) -> Result<Plan, ConfigError> {
        let mut tunnels = Vec::new();
        for (t, m) in file.tunnels.iter().zip(&model.tunnels) {
            if t.ike.is_none() {
                continue;
            }
            let remote = model
                .customer_gateways
                .iter()
                .find(|c| c.id == m.customer_gateway)
                .map(|c| c.addr)
                .expect("to_model checked the reference");
            let local = model
                .gateways
                .iter()
                .find(|g| g.id == m.gateway)
                .and_then(|g| g.outside_addrs.iter().copied().find(|a| a.is_ipv4() == remote.is_ipv4()))
                .expect("to_model checked the family");
            let rules: Vec<Mapping> = model
                .spd
                .iter()
                .filter(|r| r.action == SpdAction::Protect(m.id))
                .map(|r| (r.src, r.dst, r.protocol.unwrap_or(0), r.src_ports, r.dst_ports))
                .collect();
            let settings = ike::settings(t, local, remote, &rules)?;
            let cfg = *t.ike.clone().expect("checked above");
            tunnels.push((t.name.clone(), local, remote, settings, cfg, rules));
        }
        Ok(Plan { tunnels })
    }

    /// Serves `plan`: new tunnels are added (and initiated if active),
    /// changed ones deleted with their peer and negotiated afresh, removed
    /// ones deleted. Unchanged ones go on undisturbed.
    pub fn adopt(&mut self, plan: Plan, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for (name, local, remote, settings, cfg, rules) in plan.tunnels {
            let made_from = (cfg.clone(), rules);
            let mut retired = Retired::default();
            match self.tunnels.remove(&name) {
                Some(k) if k.made_from == made_from && k.local == local && k.remote == remote => {
                    next.insert(name, k);
                    continue;
                }
                Some(mut old) => {
                    old.retire_all();
                    retired = std::mem::take(&mut old.retired);
                    self.endpoint(old.local).remove(now, old.slot);
                    changes.push(Change::Keys);
                    changes.push(Change::Log {
                        tunnel: Some(name.clone()),
                        line: "ike: settings changed; negotiating afresh".into(),
                    });
                }
                None => {}
            }
            let slot = self.endpoint(local).add(settings);
            let active = cfg.negotiation == Start::Active;
            if active {
                self.endpoint(local).initiate(now, slot);
            }
            let k = Keyed {
                local,
                remote,
                slot,
                made_from,
                cfg,
                outbound: None,
                inbound: Vec::new(),
                selectors: None,
                last_failure: None,
                retry_at: None,
                retired,
            };
            next.insert(name, k);
        }
        for (_, gone) in std::mem::replace(&mut self.tunnels, next) {
            self.endpoint(gone.local).remove(now, gone.slot);
            changes.push(Change::Keys);
        }
        changes
    }

    fn endpoint(&mut self, local: IpAddr) -> &mut Endpoint {
        self.endpoints.entry(local).or_insert_with(|| Endpoint::new(Vec::new()))
    }

    /// The addresses IKE is served on, each with its endpoint (for the
    /// daemon's drivers).
    pub fn endpoints_mut(&mut self) -> impl Iterator<Item = (IpAddr, &mut Endpoint)> {
        self.endpoints.iter_mut().map(|(a, e)| (*a, e))
    }

    /// Puts each IKE tunnel's negotiated SAs into `model` (none yet: it
    /// carries nothing). With a `plan` not yet adopted, only the tunnels
    /// it leaves as they are keep theirs.
    pub fn overlay(&self, model: &mut model::Config, plan: Option<&Plan>) {
        for t in &mut model.tunnels {
            let Some(k) = self.tunnels.get(&t.name) else { continue };
            let kept = plan.is_none_or(|p| {
                p.tunnels.iter().any(|(name, local, remote, _, cfg, rules)| {
                    name == &t.name
                        && *local == k.local
                        && *remote == k.remote
                        && k.made_from == (cfg.clone(), rules.clone())
                })
            });
            if kept {
                t.outbound = k.outbound.clone();
                t.inbound = k.inbound.clone();
            }
        }
    }

    fn name_of(&self, local: IpAddr, slot: TunnelId) -> Option<String> {
        self.tunnels.iter().find(|(_, k)| k.local == local && k.slot == slot).map(|(n, _)| n.clone())
    }

    /// Applies one output of the endpoint on `local` about `slot`; the
    /// engine clock is `clock` (seconds), the control thread's `now`.
    pub fn output(
        &mut self,
        local: IpAddr,
        slot: Option<TunnelId>,
        o: Output,
        clock: u64,
        now: Instant,
    ) -> Vec<Change> {
        let name = slot.and_then(|s| self.name_of(local, s));
        let Some(k) = name.as_ref().and_then(|n| self.tunnels.get_mut(n)) else {
            // A tunnel removed meanwhile: only its words matter.
            return match o {
                Output::Log(line) => vec![Change::Log { tunnel: name, line: format!("ike: {line}") }],
                Output::Down(why) | Output::Failed(why) => {
                    vec![Change::Log { tunnel: name, line: format!("ike: down: {why}") }]
                }
                _ => Vec::new(),
            };
        };
        let tunnel = name.clone().expect("found by name");
        match o {
            Output::Send(_) => Vec::new(),
            Output::InstallInbound(keys) => match engine_sa(k, &keys, Direction::Inbound) {
                Ok(cfg) => match InboundSa::new(cfg, &keys.keymat, clock) {
                    Ok(sa) => {
                        if k.inbound.len() == MAX_INBOUND_SAS {
                            let oldest = k.inbound.remove(0);
                            k.retire_inbound(oldest);
                        }
                        k.inbound.push(Arc::new(Mutex::new(sa)));
                        vec![Change::Keys]
                    }
                    Err(e) => vec![Change::Log { tunnel: name, line: format!("ike: inbound SA refused: {e}") }],
                },
                Err(e) => vec![Change::Log { tunnel: name, line: e }],
            },
            Output::InstallOutbound(keys) => match engine_sa(k, &keys, Direction::Outbound) {
                Ok(cfg) => match OutboundSa::new(cfg, &keys.keymat, clock) {
                    Ok(sa) => {
                        k.retire_outbound();
                        k.outbound = Some(Arc::new(Mutex::new(sa)));
                        vec![Change::Keys]
                    }
                    Err(e) => vec![Change::Log { tunnel: name, line: format!("ike: outbound SA refused: {e}") }],
                },
                Err(e) => vec![Change::Log { tunnel: name, line: e }],
            },
            Output::RemoveInbound(spi) => {
                let (gone, kept) = std::mem::take(&mut k.inbound)
                    .into_iter()
                    .partition(|sa| sa.lock().expect("SA lock").cfg.spi == spi);
                k.inbound = kept;
                for sa in gone {
                    k.retire_inbound(sa);
                }
                vec![Change::Keys]
            }
            Output::Up { local_ts, remote_ts } => {
                let detail = format!(
                    "IKE: child SA up, local {} remote {}",
                    show_selectors(&local_ts),
                    show_selectors(&remote_ts)
                );
                k.selectors = Some((local_ts, remote_ts));
                k.last_failure = None;
                k.retry_at = None;
                vec![Change::Up { tunnel, detail }]
            }
            Output::Down(why) => {
                let had = k.outbound.is_some() || !k.inbound.is_empty();
                k.retire_all();
                k.selectors = None;
                k.last_failure = Some(why.clone());
                if k.cfg.restarts() {
                    k.retry_at = Some(now + RETRY);
                }
                let mut changes = vec![Change::Down { tunnel, why }];
                if had {
                    changes.push(Change::Keys);
                }
                changes
            }
            Output::Failed(why) => {
                k.last_failure = Some(why.clone());
                vec![Change::Log { tunnel: name, line: format!("ike: the peer's negotiation failed: {why}") }]
            }
            Output::Log(line) => vec![Change::Log { tunnel: name, line: format!("ike: {line}") }],
        }
    }

    /// Deletes every IKE SA with its peer; nothing is negotiated again.
    pub fn shutdown(&mut self, now: Instant) {
        for k in self.tunnels.values_mut() {
            k.retry_at = None;
            k.cfg.negotiation = Start::Passive;
            k.cfg.dpd = None;
        }
        let all: Vec<(IpAddr, TunnelId)> = self.tunnels.values().map(|k| (k.local, k.slot)).collect();
        for (local, slot) in all {
            self.endpoint(local).remove(now, slot);
        }
    }

    /// Restarts the tunnels whose retry is due (an on-demand one waits for
    /// traffic).
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<(IpAddr, TunnelId)> = self
            .tunnels
            .values_mut()
            .filter(|k| k.retry_at.is_some_and(|t| t <= now) && k.cfg.negotiation != Start::OnTraffic)
            .map(|k| {
                k.retry_at = None;
                (k.local, k.slot)
            })
            .collect();
        for (local, slot) in due {
            let endpoint = self.endpoint(local);
            if !endpoint.sas().any(|(t, _)| t == slot) {
                endpoint.initiate(now, slot);
            }
        }
    }

    /// Traffic was routed into on-demand tunnel `tunnel`, which has no SA:
    /// negotiate, unless under way or tried less than [`RETRY`] ago.
    /// Whether a negotiation started.
    pub fn demand(&mut self, tunnel: &str, now: Instant) -> bool {
        let Some(k) = self.tunnels.get_mut(tunnel) else { return false };
        if k.outbound.is_some() || k.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        k.retry_at = Some(now + RETRY);
        let (local, slot) = (k.local, k.slot);
        let endpoint = self.endpoint(local);
        if endpoint.sas().any(|(t, _)| t == slot) {
            return false;
        }
        endpoint.initiate(now, slot);
        true
    }

    /// The tunnel whose SAs include SPI `spi` (an engine lifetime event).
    pub fn rekey_soon(&mut self, spi: u32, now: Instant) -> Option<String> {
        let has = |k: &Keyed| {
            k.outbound.iter().any(|sa| sa.lock().expect("SA lock").cfg.spi == spi)
                || k.inbound.iter().any(|sa| sa.lock().expect("SA lock").cfg.spi == spi)
        };
        let (name, local, slot) =
            self.tunnels.iter().find(|(_, k)| has(k)).map(|(n, k)| (n.clone(), k.local, k.slot))?;
        self.endpoint(local).rekey_child_soon(now, slot);
        Some(name)
    }

    /// Adds what each IKE tunnel's retired SAs carried to `report`.
    pub fn add_retired(&self, report: &mut Report) {
        for t in &mut report.tunnels {
            if let Some(k) = self.tunnels.get(&t.name) {
                t.retired = k.retired.clone();
            }
        }
    }

    /// Whether `tunnel` is keyed by IKE.
    pub fn keys(&self, tunnel: &str) -> bool {
        self.tunnels.contains_key(tunnel)
    }

    /// `show ike`: per IKE tunnel, its IKE SAs with state, algorithms,
    /// identities, child SA and next rekey, and why it last failed.
    pub fn view(&self, now: Instant) -> Value {
        let tunnels: Vec<Value> = self
            .tunnels
            .iter()
            .map(|(name, k)| {
                let sas: Vec<Value> = self
                    .endpoints
                    .get(&k.local)
                    .into_iter()
                    .flat_map(|e| e.sas())
                    .filter(|(slot, _)| *slot == k.slot)
                    .map(|(_, sa)| {
                        let s = sa.settings();
                        let child = sa.child().map(|(p, inbound, outbound)| {
                            let (l, r) = sa.selectors().unwrap_or((&[], &[]));
                            json!({
                                "proposal": p.to_string(),
                                "spi_in": format!("{inbound:08x}"),
                                "spi_out": format!("{outbound:08x}"),
                                "local_ts": show_selectors(l),
                                "remote_ts": show_selectors(r),
                            })
                        });
                        json!({
                            "state": match sa.phase() {
                                Phase::Connecting => "connecting",
                                Phase::Established => "established",
                                Phase::Closed => "closed",
                            },
                            "initiator": sa.is_initiator(),
                            "spi": format!("{:016x}", sa.our_spi()),
                            "remote": sa.remote().to_string(),
                            "nat_t": sa.nat(),
                            "proposal": sa.proposal().map(|p| p.to_string()),
                            "local_id": show_identity(&s.local_id),
                            "remote_id": show_identity(&s.remote_id),
                            "child": child,
                            "next_rekey_s": sa.next_rekey().map(|t| t.saturating_duration_since(now).as_secs()),
                        })
                    })
                    .collect();
                json!({
                    "tunnel": name,
                    "negotiation": k.cfg.negotiation,
                    "local": k.local,
                    "remote": k.remote,
                    "up": k.outbound.is_some(),
                    "ike_sas": sas,
                    "last_failure": k.last_failure,
                    "retry_in_s": k.retry_at.map(|t| t.saturating_duration_since(now).as_secs()),
                })
            })
            .collect();
        json!({ "tunnels": tunnels })
    }
}

/// The engine's configuration of a negotiated SA of tunnel `k`: it expires
/// at the end of its lifetime (IKE rekeys it before), and with a volume
/// limit, is rekeyed at 80% of it (a soft limit) and expires at 100%.
fn engine_sa(k: &Keyed, keys: &SaKeys, direction: Direction) -> Result<SaConfig, String> {
    let mut c = SaConfig::new(keys.spi, direction, keys.suite, k.local, k.remote);
    c.natt = keys.udp.map(|(ours, theirs)| match direction {
        Direction::Outbound => NatT { src_port: ours, dst_port: theirs },
        Direction::Inbound => NatT { src_port: theirs, dst_port: ours },
    });
    let bytes = k.cfg.lifetime_kilobytes.map(|kb| kb * 1024);
    c.lifetimes = Lifetimes {
        soft: Limit { bytes: bytes.map(|b| b / 10 * 8), packets: None, seconds: None },
        // The IKE SA rekeys at 80-90% of the lifetime; a little slack for
        // the exchange.
        hard: Limit { bytes, packets: None, seconds: Some(u64::from(k.cfg.lifetime) + 30) },
    };
    if keys.keymat.len() != keys.suite.keymat_len() {
        return Err(format!("ike: SA {:08x}: keying material of the wrong length", keys.spi));
    }
    Ok(c)
}

fn show_selectors(ts: &[TrafficSelector]) -> String {
    let one = |t: &TrafficSelector| {
        let ports = if (t.start_port, t.end_port) == (PortRange::ANY.first, PortRange::ANY.last) {
            String::new()
        } else {
            format!("[{}-{}]", t.start_port, t.end_port)
        };
        let proto = if t.protocol == 0 { String::new() } else { format!(" proto {}", t.protocol) };
        format!("{}-{}{ports}{proto}", t.start, t.end)
    };
    ts.iter().map(one).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::link;
    use vpngw_engine::stats::{DropReason, Traffic};
    use vpngw_engine::Suite;

    /// The configuration tests' example, its tunnel t1 negotiated by IKE
    /// (passive) and protecting 10.1.0.0/16 -> 172.16.1.0/24 (TCP 443).
    fn config() -> String {
        crate::config::tests::with_ike(r#"psk = "a lab secret", negotiation = "passive""#)
    }

    fn keys(spi: u32) -> SaKeys {
        SaKeys { spi, suite: Suite::AesGcm128, keymat: zeroize::Zeroizing::new(vec![7; 20]), udp: Some((4500, 4500)) }
    }

    /// Counts traffic and a drop on an installed SA.
    fn carry<S>(sa: &SaHandle<S>, packets: u64, state: impl Fn(&mut S) -> (&mut Traffic, &mut DropCounters)) {
        let mut sa = sa.lock().unwrap();
        let (traffic, drops) = state(&mut sa);
        traffic.packets += packets;
        traffic.bytes += packets * 100;
        drops.count(DropReason::Replay);
    }

    #[test]
    fn negotiated_sas_go_into_the_model_and_their_counters_outlive_them() {
        let file: Config = config().parse().unwrap();
        let mut model = file.to_model(link, 0).unwrap();
        let plan = Negotiation::plan(&file, &model).unwrap();
        let mut n = Negotiation::default();
        let now = Instant::now();
        assert!(n.adopt(plan, now).is_empty(), "passive: nothing happens");
        assert_eq!(n.endpoints[&n.tunnels["t1"].local].sas().count(), 0, "no IKE SA started");
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let out = |n: &mut Negotiation, o| n.output(local, Some(0), o, 0, now);

        // Inbound first, then outbound, then up: into the model.
        assert_eq!(out(&mut n, Output::InstallInbound(keys(0x100))), vec![Change::Keys]);
        assert_eq!(out(&mut n, Output::InstallOutbound(keys(0x200))), vec![Change::Keys]);
        let up = out(&mut n, Output::Up { local_ts: vec![], remote_ts: vec![] });
        assert!(matches!(&up[..], [Change::Up { tunnel, .. }] if tunnel == "t1"), "{up:?}");
        n.overlay(&mut model, None);
        let t = &model.tunnels[0];
        let (o, i) = (t.outbound.clone().unwrap(), t.inbound[0].clone());
        assert_eq!((o.lock().unwrap().cfg.spi, i.lock().unwrap().cfg.spi), (0x200, 0x100));
        assert_eq!(o.lock().unwrap().cfg.natt, Some(NatT { src_port: 4500, dst_port: 4500 }));
        assert_eq!(o.lock().unwrap().cfg.lifetimes.hard.seconds, Some(3600 + 30));
        carry(&o, 5, |s| (&mut s.state.lifetime.traffic, &mut s.state.drops));
        carry(&i, 7, |s| (&mut s.state.lifetime.traffic, &mut s.state.drops));

        // A rekey: new inbound, new outbound, the old inbound removed.
        out(&mut n, Output::InstallInbound(keys(0x101)));
        out(&mut n, Output::InstallOutbound(keys(0x201)));
        out(&mut n, Output::RemoveInbound(0x100));
        n.overlay(&mut model, None);
        let spis: Vec<u32> = model.tunnels[0].inbound.iter().map(|sa| sa.lock().unwrap().cfg.spi).collect();
        assert_eq!(spis, [0x101]);
        let mut report = Report::gather(&model, &[]);
        n.add_retired(&mut report);
        let r = &report.tunnels[0].retired;
        assert_eq!((r.tx_packets, r.tx_bytes, r.rx_packets, r.rx_bytes), (5, 500, 7, 700));
        assert_eq!(r.drops.get("replay"), Some(&2));

        // Down: no SA is left, the counters stay.
        carry(model.tunnels[0].outbound.as_ref().unwrap(), 1, |s| (&mut s.state.lifetime.traffic, &mut s.state.drops));
        let down = out(&mut n, Output::Down("the peer is dead".into()));
        assert!(down.contains(&Change::Keys), "{down:?}");
        n.overlay(&mut model, None);
        assert!(model.tunnels[0].outbound.is_none() && model.tunnels[0].inbound.is_empty());
        let mut report = Report::gather(&model, &[]);
        n.add_retired(&mut report);
        assert_eq!(report.tunnels[0].retired.tx_packets, 6);
        let view = n.view(now);
        assert_eq!(view["tunnels"][0]["last_failure"], "the peer is dead");
        assert_eq!(view["tunnels"][0]["up"], false);

        // Keys of the wrong length are refused, said in the log.
        let mut bad = keys(0x300);
        bad.keymat = zeroize::Zeroizing::new(vec![1; 3]);
        let said = out(&mut n, Output::InstallOutbound(bad));
        assert!(matches!(&said[..], [Change::Log { line, .. }] if line.contains("wrong length")), "{said:?}");
    }

    #[test]
    fn a_changed_tunnel_is_negotiated_afresh_and_an_unchanged_one_is_left_alone() {
        let file: Config = config().parse().unwrap();
        let model = file.to_model(link, 0).unwrap();
        let mut n = Negotiation::default();
        let now = Instant::now();
        n.adopt(Negotiation::plan(&file, &model).unwrap(), now);
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        n.output(local, Some(0), Output::InstallOutbound(keys(0x200)), 0, now);
        // The same configuration again: untouched.
        assert!(n.adopt(Negotiation::plan(&file, &model).unwrap(), now).is_empty());
        assert!(n.tunnels["t1"].outbound.is_some());
        // A new SPD rule into it changes its selectors: afresh, on a new slot.
        let text = format!("{}\n[[spd]]\ngateway = \"gw1\"\nlocal = \"10.2.0.0/16\"\nremote = \"172.16.2.0/24\"\naction = \"protect:t1\"\n", config());
        let file: Config = text.parse().unwrap();
        let model = file.to_model(link, 0).unwrap();
        let changes = n.adopt(Negotiation::plan(&file, &model).unwrap(), now);
        assert!(changes.contains(&Change::Keys), "{changes:?}");
        assert!(n.tunnels["t1"].outbound.is_none());
        assert_eq!(n.tunnels["t1"].slot, 1);
        // What the old slot says now concerns no tunnel.
        let late = n.output(local, Some(0), Output::InstallOutbound(keys(0x201)), 0, now);
        assert!(late.is_empty() && n.tunnels["t1"].outbound.is_none());
    }
}
