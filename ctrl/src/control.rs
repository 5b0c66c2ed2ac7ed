//! The control thread's state and its answers to the socket's requests:
//! the running configuration (as the operator wrote it) and the engine
//! model built from it, the snapshot cell the workers read, and the state
//! file. A change is checked whole — references, values, then the
//! snapshot build — and only then written to the state file and published;
//! anything refused leaves all three as they were. SAs whose parameters
//! and keys did not change are carried into the new model as they are, so
//! their sequence numbers, replay windows and counters go on.
//!
//! It also runs the tunnels' health checks ([`crate::health`]): every tick
//! it hands the workers the probes that are due and judges the answers
//! they saw; a tunnel whose check fails is down in the model (with its
//! routes withdrawn in the next snapshot) until the check brings it back.
//! What happens is recorded as events ([`crate::events`]), alarms
//! included, and a capture in progress is fed from the workers' taps.
//!
//! The tunnels negotiated with IKE ([`crate::negotiation`]) get their SAs
//! from what the IKE endpoints say (`ike_output`, fed by the daemon's
//! drivers): each change of SAs is put into the model and published; IKE
//! taking a tunnel up or down is an event like a health check's.

use crate::api::{self, ApiError, CapturePoint, ErrorKind, Request};
use crate::config::{self as file_config, Config, Link, StaticSa};
use crate::events::Events;
use crate::health::{Checker, Transition};
use crate::ike::endpoint::{Endpoint, TunnelId};
use crate::ike::sa::Output;
use crate::negotiation::{self, Negotiation};
use crate::report::{Report, StateChange, Stats, HISTORY};
use crate::{hex, metrics, state};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpngw_engine::model::{self, AddrRange, NextHop, SaHandle};
use vpngw_engine::probe::ProbeRequest;
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};
use vpngw_engine::tap::{self, Tap, TapPoint};
use vpngw_engine::worker::{WorkerReport, WorkerShared};
use vpngw_engine::{OutboundSa, SaConfig};

/// A capture unread this long is ended (its client went away).
pub const CAPTURE_IDLE: Duration = Duration::from_secs(10);

/// The capture in progress.
struct Capture {
    id: u64,
    tap: Arc<Tap>,
    read: Instant,
    taken: u64,
}

/// The running configuration and where it is published.
pub struct Control {
    file: Config,
    model: model::Config,
    cell: Arc<SnapshotCell>,
    generation: u64,
    state: Option<PathBuf>,
    /// The clock the workers count SA lifetimes in (seconds from start).
    started: Instant,
    /// The last two counter samples, for rates.
    samples: [Option<(Instant, Report)>; 2],
    /// Each tunnel's outbound SA: its next sequence number at the last
    /// mark, and the mark written.
    marks: BTreeMap<String, (u64, state::SeqMark)>,
    /// A mark changed that the marks file does not have yet.
    marks_dirty: bool,
    /// What the workers share with this thread (none in some tests).
    workers: Vec<Arc<WorkerShared>>,
    /// The health checks, by tunnel name.
    health: BTreeMap<String, Checker>,
    /// Where the tunnels with a check are in the model, so a tick costs
    /// nothing for the others.
    checked: Vec<usize>,
    pub events: Events,
    /// Alarms raised and not cleared: (what, of which object).
    alarms: BTreeSet<(String, String)>,
    /// Log lines for the daemon to write (the events, as they happen).
    log: Vec<String>,
    capture: Option<Capture>,
    captures: u64,
    /// The tunnels IKE keys.
    ike: Negotiation,
}

impl Control {
    /// Takes over a configuration already published in `cell` as
    /// `generation`, and writes it to the state file (if any), so the file
    /// exists from the start. Outbound SAs resume their sequence numbers
    /// from the marks a previous run left (the count is returned).
    pub fn new(
        file: Config,
        model: model::Config,
        cell: Arc<SnapshotCell>,
        generation: u64,
        state: Option<PathBuf>,
    ) -> std::io::Result<(Self, usize)> {
        let mut control = Control {
            file,
            model,
            cell,
            generation,
            state,
            started: Instant::now(),
            samples: [None, None],
            marks: BTreeMap::new(),
            marks_dirty: false,
            workers: Vec::new(),
            health: BTreeMap::new(),
            checked: Vec::new(),
            events: Events::default(),
            alarms: BTreeSet::new(),
            log: Vec::new(),
            capture: None,
            captures: 0,
            ike: Negotiation::default(),
        };
        let plan = Negotiation::plan(&control.file, &control.model)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let changes = control.ike.adopt(plan, Instant::now());
        control.ike_changes(changes);
        control.health = control.next_checks(&control.file, Instant::now());
        control.index_checks();
        let mut resumed = 0;
        if let Some(path) = &control.state {
            state::save(path, &control.file)?;
            let marks = state::load_marks(&state::marks_path(path))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            control.marks = marks.into_iter().map(|(k, m)| (k, (m.resume_at, m))).collect();
            for sa in control.static_outbound(&control.model) {
                resumed += usize::from(control.resume(&sa));
            }
        }
        control.mark_sequences()?;
        Ok((control, resumed))
    }

    /// The outbound SAs of `model` with static keys, which need sequence
    /// marks (IKE makes fresh keys).
    fn static_outbound(&self, model: &model::Config) -> Vec<SaHandle<OutboundSa>> {
        model.tunnels.iter().filter(|t| !self.ike.keys(&t.name)).filter_map(|t| t.outbound.clone()).collect()
    }

    /// Starts a new outbound SA above every sequence number an SA with its
    /// SPI and peer used before (in this run or an earlier one): the peer
    /// would drop lower ones as replays, and with the same key they would
    /// repeat nonces. True if it had a mark.
    fn resume(&self, sa: &SaHandle<OutboundSa>) -> bool {
        let mut sa = sa.lock().expect("SA lock");
        match self.marks.get(&mark_key(&sa.cfg)) {
            Some((_, m)) => {
                sa.state.next_seq = sa.state.next_seq.max(m.resume_at);
                true
            }
            None => false,
        }
    }

    /// Writes the sequence marks if any moved (once a second, and after a
    /// change): each outbound SA's next sequence number plus twice what it
    /// sent since the last mark (at least 65,536). Marks of SAs that are
    /// gone are kept, for an SA made again with the same SPI and peer.
    pub fn mark_sequences(&mut self) -> std::io::Result<()> {
        for sa in self.static_outbound(&self.model) {
            let sa = sa.lock().expect("SA lock");
            let (seq, k) = (sa.state.next_seq, mark_key(&sa.cfg));
            let (before, old) = self.marks.get(&k).map_or((seq, None), |(s, m)| (*s, Some(*m)));
            if old.is_some() && before == seq {
                continue;
            }
            let ahead = (2 * seq.saturating_sub(before)).max(1 << 16);
            let resume_at = seq.saturating_add(ahead).min(sa.cfg.max_seq()).max(old.map_or(0, |m| m.resume_at));
            self.marks.insert(k, (seq, state::SeqMark { spi: sa.cfg.spi, resume_at }));
            self.marks_dirty = true;
        }
        // Without a state file the marks still serve SAs made again in this
        // run; with one, they are written when they changed.
        if let (Some(path), true) = (&self.state, self.marks_dirty) {
            let marks: BTreeMap<String, state::SeqMark> =
                self.marks.iter().map(|(k, (_, m))| (k.clone(), *m)).collect();
            state::save_marks(&state::marks_path(path), &marks)?;
            self.marks_dirty = false;
        }
        Ok(())
    }

    pub fn file(&self) -> &Config {
        &self.file
    }

    pub fn model(&self) -> &model::Config {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut model::Config {
        &mut self.model
    }

    /// Publishes a snapshot of the model as it is now (after the neighbour
    /// tables changed).
    pub fn republish(&mut self) -> Result<(), String> {
        let s = Snapshot::build(&self.model, self.generation + 1).map_err(|e| e.to_string())?;
        self.generation += 1;
        self.cell.publish(s);
        Ok(())
    }

    /// Takes a counter sample (once a second), for the rates in `stats`,
    /// and raises or clears the alarms they cross.
    pub fn sample(&mut self, workers: &[WorkerReport]) {
        let now = self.report(workers);
        self.samples = [self.samples[1].take(), Some((Instant::now(), now))];
        self.check_alarms(workers);
    }

    /// The workers this thread hands probes and taps to, and hears from.
    pub fn attach_workers(&mut self, workers: Vec<Arc<WorkerShared>>) {
        self.workers = workers;
    }

    /// The log lines since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn event(&mut self, kind: &str, gateway: Option<&str>, tunnel: Option<&str>, detail: String) {
        let line = self.events.push(kind, gateway, tunnel, detail).log_line();
        self.log.push(line);
    }

    /// The health checks `file` asks for: the running ones whose settings
    /// are unchanged go on, the others start afresh (up).
    fn next_checks(&self, file: &Config, now: Instant) -> BTreeMap<String, Checker> {
        let mut next = BTreeMap::new();
        for (i, t) in file.tunnels.iter().enumerate() {
            let Some(h) = t.health_check else { continue };
            let c = match self.health.get(&t.name) {
                Some(c) if c.cfg == h => c.clone(),
                _ => Checker::new(h, i as u16 ^ 0x5a5a, now),
            };
            next.insert(t.name.clone(), c);
        }
        next
    }

    /// Notes where the tunnels with a check are in the model.
    fn index_checks(&mut self) {
        let health = &self.health;
        self.checked = self
            .model
            .tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| health.contains_key(&t.name))
            .map(|(i, _)| i)
            .collect();
    }

    /// Takes the tunnels whose health check failed down in `model` (an
    /// administratively down tunnel stays down).
    fn overlay_health(model: &mut model::Config, health: &BTreeMap<String, Checker>) {
        for t in &mut model.tunnels {
            if health.get(&t.name).is_some_and(|c| !c.is_up()) {
                t.up = false;
            }
        }
    }

    /// Advances the health checks and the capture to `now`: the probe
    /// answers the workers saw, the probes that are due (handed to the
    /// workers), tunnels going down or up (a new snapshot), SA lifetime
    /// events; a capture nobody reads is ended.
    pub fn tick(&mut self, now: Instant) {
        let ids: BTreeMap<u32, usize> = self.checked.iter().map(|&i| (self.model.tunnels[i].id, i)).collect();
        let mut changes: Vec<(String, Transition)> = Vec::new();
        for w in &self.workers {
            while let Some(e) = w.probe_echoes.pop() {
                let Some(&i) = ids.get(&e.tunnel) else { continue };
                let name = &self.model.tunnels[i].name;
                if let Some(c) = self.health.get_mut(name).filter(|c| c.ident == e.ident) {
                    let mut ch = Vec::new();
                    c.answer(e.seq, e.at, &mut ch);
                    changes.extend(ch.into_iter().map(|t| (name.clone(), t)));
                }
            }
        }
        for &i in &self.checked {
            let t = &self.model.tunnels[i];
            let Some(c) = self.health.get_mut(&t.name) else { continue };
            let mut ch = Vec::new();
            if let Some(seq) = c.tick(now, &mut ch) {
                let req = ProbeRequest { tunnel: t.id, src: c.cfg.local, dst: c.cfg.remote, ident: c.ident, seq };
                if let Some(w) = self.workers.get(i % self.workers.len().max(1)) {
                    let _ = w.probe_requests.push(req);
                }
            }
            changes.extend(ch.into_iter().map(|x| (t.name.clone(), x)));
        }
        self.ike.tick(now);
        let wanted: Vec<u32> = self.workers.iter().flat_map(|w| std::iter::from_fn(|| w.wanted.pop())).collect();
        for id in wanted {
            let Some(t) = self.model.tunnels.iter().find(|t| t.id == id).map(|t| t.name.clone()) else { continue };
            if self.ike.demand(&t, now) {
                let gw = self.tunnel_gateway(&t);
                self.event("ike", gw.as_deref(), Some(&t), "traffic for the tunnel: negotiating".into());
            }
        }
        let lifetimes: Vec<_> = self.workers.iter().flat_map(|w| std::iter::from_fn(|| w.events.pop())).collect();
        for e in lifetimes {
            if e.expiry == vpngw_engine::lifetime::Expiry::Soft {
                if let Some(t) = self.ike.rekey_soon(e.spi, now) {
                    let detail = format!("SA {:#x}: {:?} volume limit near: rekeying", e.spi, e.direction);
                    let gw = self.tunnel_gateway(&t);
                    self.event("ike", gw.as_deref(), Some(&t), detail);
                }
            }
            let tunnel = self.model.tunnels.iter().find(|t| {
                t.outbound.as_ref().is_some_and(|sa| sa.lock().expect("SA lock").cfg.spi == e.spi)
                    || t.inbound.iter().any(|sa| sa.lock().expect("SA lock").cfg.spi == e.spi)
            });
            let (gw, name) = match tunnel {
                Some(t) => (self.gateway_name(t.gateway), Some(t.name.clone())),
                None => (None, None),
            };
            let detail = format!("SA {:#x} {:?}: {:?} lifetime reached ({:?})", e.spi, e.direction, e.expiry, e.limit);
            self.event("sa-lifetime", gw.as_deref(), name.as_deref(), detail);
        }
        if !changes.is_empty() {
            self.health_changed(changes);
        }
        if self.capture.as_ref().is_some_and(|c| now.saturating_duration_since(c.read) >= CAPTURE_IDLE) {
            self.end_capture();
        }
    }

    fn gateway_name(&self, id: model::GatewayId) -> Option<String> {
        self.model.gateways.iter().find(|g| g.id == id).map(|g| g.name.clone())
    }

    /// Records health transitions, and publishes a snapshot if a tunnel
    /// went down or came up.
    fn health_changed(&mut self, changes: Vec<(String, Transition)>) {
        let mut republish = false;
        for (name, change) in changes {
            let Some(t) = self.model.tunnels.iter().position(|t| t.name == name) else { continue };
            let gw = self.gateway_name(self.model.tunnels[t].gateway);
            let admin_up = self.file.tunnels.iter().find(|f| f.name == name).is_some_and(|f| f.up);
            let c = &self.health[&name].cfg;
            let (interval, failures, hold) = (c.interval_ms, c.failures, c.hold_down_ms);
            match change {
                Transition::Failing => {
                    self.event("health-failing", gw.as_deref(), Some(&name), "a probe went unanswered".into())
                }
                Transition::Recovering => self.event(
                    "health-recovering",
                    gw.as_deref(),
                    Some(&name),
                    format!("a probe was answered; up after {hold} ms answered throughout"),
                ),
                Transition::Down { lost } => {
                    let why = format!(
                        "health check: {lost} probes in a row unanswered ({interval} ms apart, {failures} allowed)"
                    );
                    if self.model.tunnels[t].up {
                        self.model.tunnels[t].up = false;
                        republish = true;
                        self.event("tunnel-down", gw.as_deref(), Some(&name), why.clone());
                        self.raise("tunnel-down", &name, gw.as_deref(), why);
                    }
                }
                Transition::Up => {
                    if admin_up && !self.model.tunnels[t].up {
                        self.model.tunnels[t].up = true;
                        republish = true;
                        let why = format!("health check: probes answered for {hold} ms");
                        self.event("tunnel-up", gw.as_deref(), Some(&name), why.clone());
                        self.clear("tunnel-down", &name, gw.as_deref(), why);
                    }
                }
            }
        }
        if republish {
            if let Err(e) = self.republish() {
                self.log.push(format!("tunnel state change not published: {e}"));
            }
        }
    }

    /// Raises alarm `what` on `object` unless it is raised.
    fn raise(&mut self, what: &str, object: &str, gateway: Option<&str>, detail: String) {
        if self.alarms.insert((what.to_string(), object.to_string())) {
            let tunnel = (what != "utilisation").then_some(object);
            self.event("alarm", gateway, tunnel, format!("{what}: {detail}"));
        }
    }

    /// Clears alarm `what` on `object` if it is raised.
    fn clear(&mut self, what: &str, object: &str, gateway: Option<&str>, detail: String) {
        if self.alarms.remove(&(what.to_string(), object.to_string())) {
            let tunnel = (what != "utilisation").then_some(object);
            self.event("alarm-cleared", gateway, tunnel, format!("{what}: {detail}"));
        }
    }

    /// Probe loss above the gateway's threshold, and traffic above its
    /// share of the bandwidth limit, raise alarms; back below, they clear.
    fn check_alarms(&mut self, workers: &[WorkerReport]) {
        let stats = self.stats(workers);
        let gw = |name: &str| self.file.gateways.iter().find(|g| g.name == name).cloned();
        let mut todo = Vec::new();
        for t in &stats.tunnels {
            let (Some(h), Some(g)) = (&t.health, gw(&t.gateway)) else { continue };
            let limit = g.alarm_loss_percent.unwrap_or(file_config::DEFAULT_ALARM_LOSS_PERCENT) as f64;
            let detail = format!("probe loss {:.0}% (threshold {limit:.0}%)", h.loss_percent);
            todo.push((h.loss_percent > limit, "loss", t.name.clone(), t.gateway.clone(), detail));
        }
        for g in &stats.gateways {
            let (Some(tx), Some(rx), Some(f)) = (g.tx_utilisation_percent, g.rx_utilisation_percent, gw(&g.name))
            else {
                continue;
            };
            let limit = f.alarm_utilisation_percent.unwrap_or(file_config::DEFAULT_ALARM_UTILISATION_PERCENT) as f64;
            let detail = format!("tx {tx:.0}% rx {rx:.0}% of the bandwidth limit (threshold {limit:.0}%)");
            todo.push((tx.max(rx) > limit, "utilisation", g.name.clone(), g.name.clone(), detail));
        }
        for (above, what, object, gateway, detail) in todo {
            if above {
                self.raise(what, &object, Some(&gateway), detail);
            } else {
                self.clear(what, &object, Some(&gateway), detail);
            }
        }
    }

    /// Traffic per gateway and per tunnel, with rates and health.
    fn stats(&self, workers: &[WorkerReport]) -> Stats {
        let now = self.report(workers);
        let rates = match &self.samples {
            [Some((t0, a)), Some((t1, b))] => Some((a, b, t1.duration_since(*t0))),
            _ => None,
        };
        let mut stats = Stats::new(&self.model, &now, rates);
        let mut history: BTreeMap<&str, Vec<StateChange>> = BTreeMap::new();
        for e in self.events.iter().rev() {
            let (Some(t), up) = (e.tunnel.as_deref(), e.kind == "tunnel-up") else { continue };
            let h = history.entry(t).or_default();
            if (up || e.kind == "tunnel-down") && h.len() < HISTORY {
                h.push(StateChange { time_ms: e.time_ms, up, reason: e.detail.clone() });
            }
        }
        for t in &mut stats.tunnels {
            t.health = self.health.get(&t.name).map(Checker::view);
            if let Some(mut h) = history.remove(t.name.as_str()) {
                h.reverse();
                t.history = h;
            }
        }
        stats
    }

    /// Starts a capture on every worker.
    fn start_capture(
        &mut self,
        tunnel: &str,
        point: CapturePoint,
        count: u64,
        pps: Option<u64>,
    ) -> Result<Value, ApiError> {
        if let Some(c) = &self.capture {
            return Err(ApiError::new(ErrorKind::Busy, format!("capture {} is running; one at a time", c.id)));
        }
        let t = self
            .model
            .tunnels
            .iter()
            .find(|t| t.name == tunnel)
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("tunnel {tunnel} does not exist")))?;
        if count == 0 || pps == Some(0) {
            return Err(ApiError::new(ErrorKind::Invalid, "count and pps are at least 1"));
        }
        let point = match point {
            CapturePoint::Inner => TapPoint::Inner,
            CapturePoint::Outer => TapPoint::Outer,
        };
        let tap = Arc::new(Tap::new(t.id, point, count, pps.unwrap_or(tap::DEFAULT_PPS)));
        for w in &self.workers {
            w.tap.store(Some(tap.clone()));
        }
        self.captures += 1;
        self.capture = Some(Capture { id: self.captures, tap, read: Instant::now(), taken: 0 });
        Ok(json!({ "id": self.captures }))
    }

    fn end_capture(&mut self) {
        for w in &self.workers {
            w.tap.store(None);
        }
        self.capture = None;
    }

    fn read_capture(&mut self, id: u64) -> Result<Value, ApiError> {
        let c = self
            .capture
            .as_mut()
            .filter(|c| c.id == id)
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no capture {id} is running")))?;
        c.read = Instant::now();
        let mut packets = c.tap.take();
        packets.truncate(1000);
        c.taken += packets.len() as u64;
        let done = c.tap.remaining() == 0 && packets.is_empty();
        let v = json!({
            "packets": packets.iter().map(|p| json!({
                "micros": p.micros,
                "outbound": p.outbound,
                "data": hex::encode(&p.data),
            })).collect::<Vec<_>>(),
            "taken": c.taken,
            "remaining": c.tap.remaining(),
            "missed": c.tap.missed(),
            "done": done,
        });
        if done {
            self.end_capture();
        }
        Ok(v)
    }

    /// The addresses each outside interface steers to the data plane: the
    /// public addresses of the gateways on it.
    pub fn steered(&self) -> BTreeMap<String, Vec<IpAddr>> {
        let mut m: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for g in &self.file.gateways {
            m.entry(g.outside.clone()).or_default().extend(g.addresses.iter().copied());
        }
        m
    }

    /// The counters: the SAs' and workers', with what IKE tunnels' retired
    /// SAs carried.
    pub fn report(&self, workers: &[WorkerReport]) -> Report {
        let mut r = Report::gather(&self.model, workers);
        self.ike.add_retired(&mut r);
        r
    }

    /// The IKE endpoints, by the address each serves (for the daemon's
    /// drivers).
    pub fn ike_endpoints(&mut self) -> impl Iterator<Item = (IpAddr, &mut Endpoint)> {
        self.ike.endpoints_mut()
    }

    /// Deletes every IKE SA with its peer (the daemon is stopping).
    pub fn ike_shutdown(&mut self, now: Instant) {
        self.ike.shutdown(now);
    }

    /// Applies what the IKE endpoint on `local` asked for `slot`.
    pub fn ike_output(&mut self, local: IpAddr, slot: Option<TunnelId>, o: Output) {
        let clock = self.started.elapsed().as_secs();
        let changes = self.ike.output(local, slot, o, clock, Instant::now());
        self.ike_changes(changes);
    }

    /// Records IKE's changes: events, alarms, and the tunnels' SAs into
    /// the model (a snapshot published) when they changed.
    fn ike_changes(&mut self, changes: Vec<negotiation::Change>) {
        let mut republish = false;
        for c in changes {
            match c {
                negotiation::Change::Keys => republish = true,
                negotiation::Change::Up { tunnel, detail } => {
                    let gw = self.tunnel_gateway(&tunnel);
                    self.event("tunnel-up", gw.as_deref(), Some(&tunnel), detail.clone());
                    self.clear("tunnel-down", &tunnel, gw.as_deref(), detail);
                }
                negotiation::Change::Down { tunnel, why } => {
                    let gw = self.tunnel_gateway(&tunnel);
                    let why = format!("IKE: {why}");
                    self.event("tunnel-down", gw.as_deref(), Some(&tunnel), why.clone());
                    self.raise("tunnel-down", &tunnel, gw.as_deref(), why);
                }
                negotiation::Change::Log { tunnel, line } => {
                    let gw = tunnel.as_deref().and_then(|t| self.tunnel_gateway(t));
                    self.event("ike", gw.as_deref(), tunnel.as_deref(), line);
                }
            }
        }
        if republish {
            self.ike.overlay(&mut self.model, None);
            if let Err(e) = self.republish() {
                self.log.push(format!("IKE SAs not published: {e}"));
            }
        }
    }

    fn tunnel_gateway(&self, tunnel: &str) -> Option<String> {
        let t = self.model.tunnels.iter().find(|t| t.name == tunnel)?;
        self.gateway_name(t.gateway)
    }

    /// Answers one request.
    pub fn handle(&mut self, request: &Request, workers: &[WorkerReport]) -> Result<Value, ApiError> {
        let value = |v: Result<Value, serde_json::Error>| v.expect("views serialize");
        match request {
            Request::Apply { changes, cascade } => self.apply(changes, *cascade),
            Request::List { kind, gateway } => Ok(api::list(&self.file, *kind, gateway.as_deref())),
            Request::Show { kind, name } => api::show(&self.file, *kind, name),
            Request::Export => Ok(json!({ "toml": self.file.to_toml() })),
            Request::Stats => Ok(value(serde_json::to_value(self.stats(workers)))),
            Request::Sas => Ok(value(serde_json::to_value(self.report(workers).tunnels))),
            Request::Workers => Ok(value(serde_json::to_value(self.report(workers).workers))),
            Request::Lookup { gateway, address, source } => self.lookup(gateway, *address, *source),
            Request::Events { since } => {
                Ok(json!({ "events": self.events.after(*since, 1000), "last": self.events.last() }))
            }
            Request::Metrics => {
                let report = self.report(workers);
                Ok(json!({ "text": metrics::render(&self.stats(workers), &report) }))
            }
            Request::Capture { tunnel, point, count, pps } => self.start_capture(tunnel, *point, *count, *pps),
            Request::CaptureRead { id } => self.read_capture(*id),
            Request::Ike => Ok(self.ike.view(Instant::now())),
            Request::CaptureStop { id } => match &self.capture {
                Some(c) if c.id == *id => {
                    self.end_capture();
                    Ok(json!({ "stopped": id }))
                }
                _ => Err(ApiError::new(ErrorKind::NotFound, format!("no capture {id} is running"))),
            },
        }
    }

    /// Applies a batch: the next configuration, its model (keeping the SAs
    /// that did not change), its snapshot, the state file; then publishes.
    fn apply(&mut self, changes: &[api::Change], cascade: bool) -> Result<Value, ApiError> {
        let next = api::apply(&self.file, changes, cascade)?;
        let ports: BTreeMap<&str, &model::Port> =
            self.file.interfaces.iter().map(|i| i.name.as_str()).zip(&self.model.ports).collect();
        let link = |name: &str| {
            let p = ports.get(name).ok_or("interfaces are fixed at start; restart the daemon to add one")?;
            Ok(Link { mac: p.mac, mtu: p.mtu, addrs: p.addrs.clone(), neighbours: p.neighbours.clone() })
        };
        if next.interfaces != self.file.interfaces {
            return Err(ApiError::new(ErrorKind::Invalid, "interfaces are fixed at start"));
        }
        let mut model = next.to_model(link, self.started.elapsed().as_secs())?;
        keep_sas(&mut model, &next, &self.model, &self.file);
        let plan = Negotiation::plan(&next, &model)?;
        self.ike.overlay(&mut model, Some(&plan));
        let health = self.next_checks(&next, Instant::now());
        Self::overlay_health(&mut model, &health);
        let snapshot = Snapshot::build(&model, self.generation + 1)
            .map_err(|e| ApiError::new(ErrorKind::Invalid, e.to_string()))?;
        if let Some(path) = &self.state {
            state::save(path, &next).map_err(|e| {
                ApiError::new(ErrorKind::Persist, format!("{}: {e}; the change was not applied", path.display()))
            })?;
        }
        // Accepted. The outbound SAs that are gone leave their numbers in
        // the marks (workers on the old snapshot may send a few more: 2^16
        // ahead); the new ones start above any mark of their SPI and peer.
        let fresh = |sa: &SaHandle<OutboundSa>, among: &model::Config| {
            !among.tunnels.iter().any(|t| t.outbound.as_ref().is_some_and(|o| Arc::ptr_eq(o, sa)))
        };
        let (old_static, new_static) = (self.static_outbound(&self.model), self.static_outbound(&model));
        for sa in old_static.iter().filter(|sa| fresh(sa, &model)) {
            let sa = sa.lock().expect("SA lock");
            let resume_at = sa.state.next_seq.saturating_add(1 << 16).min(sa.cfg.max_seq());
            let m = self.marks.entry(mark_key(&sa.cfg)).or_insert((0, state::SeqMark { spi: sa.cfg.spi, resume_at }));
            m.1.resume_at = m.1.resume_at.max(resume_at);
            self.marks_dirty = true;
        }
        for sa in new_static.iter().filter(|sa| fresh(sa, &self.model)) {
            self.resume(sa);
        }
        self.generation += 1;
        self.cell.publish(snapshot);
        let was: BTreeMap<String, bool> = self.model.tunnels.iter().map(|t| (t.name.clone(), t.up)).collect();
        self.file = next;
        self.model = model;
        self.health = health;
        self.index_checks();
        let ike = self.ike.adopt(plan, Instant::now());
        self.ike_changes(ike);
        for i in 0..self.model.tunnels.len() {
            let (name, up) = (self.model.tunnels[i].name.clone(), self.model.tunnels[i].up);
            if was.get(&name).is_some_and(|&w| w != up) {
                let gw = self.gateway_name(self.model.tunnels[i].gateway);
                let kind = if up { "tunnel-up" } else { "tunnel-down" };
                self.event(kind, gw.as_deref(), Some(&name), "set by the operator".into());
            }
        }
        if let Err(e) = self.mark_sequences() {
            return Err(ApiError::new(
                ErrorKind::Persist,
                format!("applied, but the sequence marks were not written: {e}"),
            ));
        }
        Ok(json!({ "generation": self.generation, "changes": changes.len() }))
    }

    /// What carries traffic from `source` (if given) to `address` on
    /// `gateway` now: the SPD rule that matches first (for any protocol
    /// and port), else the best usable route, with the other candidates.
    fn lookup(&self, gateway: &str, address: IpAddr, source: Option<IpAddr>) -> Result<Value, ApiError> {
        let g = self
            .model
            .gateways
            .iter()
            .find(|g| g.name == gateway)
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("gateway {gateway} does not exist")))?;
        let tunnel_name = |id| self.model.tunnels.iter().find(|t| t.id == id).map(|t| t.name.as_str());
        if let Some(src) = source {
            let best = self
                .model
                .spd
                .iter()
                .zip(&self.file.spd)
                .filter(|(r, _)| r.gateway == g.id && r.src.contains(src) && r.dst.contains(address))
                .min_by_key(|(r, _)| r.priority);
            if let Some((_, rule)) = best {
                return Ok(json!({ "by": "spd", "rule": rule }));
            }
        }
        let up = |hop: &NextHop| match hop {
            NextHop::Tunnel(t) => self.model.tunnels.iter().any(|x| x.id == *t && x.up),
            _ => true,
        };
        let mut candidates: Vec<(&model::Route, &crate::config::Route)> = self
            .model
            .routes
            .iter()
            .zip(&self.file.routes)
            .filter(|(r, _)| r.gateway == g.id && AddrRange::prefix(r.prefix, r.len).contains(address))
            .collect();
        candidates.sort_by_key(|(r, _)| (std::cmp::Reverse(r.len), r.priority));
        let active = candidates.iter().find(|(r, _)| r.enabled && up(&r.next_hop)).map(|(_, f)| *f);
        let all: Vec<Value> = candidates
            .iter()
            .map(|(r, f)| {
                let tunnel_up = match r.next_hop {
                    NextHop::Tunnel(t) => tunnel_name(t).map(|_| up(&r.next_hop)),
                    _ => None,
                };
                json!({ "route": f, "usable": r.enabled && up(&r.next_hop), "tunnel_up": tunnel_up })
            })
            .collect();
        match active {
            Some(r) => Ok(json!({ "by": "route", "route": r, "candidates": all })),
            None => Ok(json!({ "by": "none", "dropped": "no-route", "candidates": all })),
        }
    }
}

/// What sequence marks are kept by: an outbound SA's SPI and peer.
fn mark_key(cfg: &SaConfig) -> String {
    format!("{:#x}@{}", cfg.spi, cfg.remote)
}

/// Carries each SA of `old` whose configuration and key are unchanged in
/// `new` (same tunnel name, same SPI) into `new`, state and all.
pub fn keep_sas(new: &mut model::Config, new_file: &Config, old: &model::Config, old_file: &Config) {
    let old_tunnels: BTreeMap<&str, (&model::Tunnel, &crate::config::Tunnel)> =
        old.tunnels.iter().zip(&old_file.tunnels).map(|(m, f)| (f.name.as_str(), (m, f))).collect();
    let same_key = |a: &StaticSa, b: &StaticSa| a.spi == b.spi && a.key == b.key;
    for (t, f) in new.tunnels.iter_mut().zip(&new_file.tunnels) {
        let Some((old_t, old_f)) = old_tunnels.get(f.name.as_str()) else { continue };
        if let (Some(f_o), Some(old_f_o), Some(o), Some(old_o)) =
            (&f.outbound, &old_f.outbound, &t.outbound, &old_t.outbound)
        {
            if same_key(f_o, old_f_o) && old_o.lock().expect("SA lock").cfg == o.lock().expect("SA lock").cfg {
                t.outbound = Some(old_o.clone());
            }
        }
        for (sa, s) in t.inbound.iter_mut().zip(&f.inbound) {
            let Some(i) = old_f.inbound.iter().position(|o| same_key(o, s)) else { continue };
            let same = old_t.inbound[i].lock().expect("SA lock").cfg == sa.lock().expect("SA lock").cfg;
            if same {
                *sa = old_t.inbound[i].clone();
            }
        }
    }
}

#[cfg(test)]
mod tests;
