//! The control thread's state and its answers to the socket's requests:
//! the running configuration (as the operator wrote it) and the engine
//! model built from it, the snapshot cell the workers read, and the state
//! file. A change is checked whole — references, values, then the
//! snapshot build — and only then written to the state file and published;
//! anything refused leaves all three as they were. SAs whose parameters
//! and keys did not change are carried into the new model as they are, so
//! their sequence numbers, replay windows and counters go on.

use crate::api::{self, ApiError, ErrorKind, Request};
use crate::config::{Config, Link, StaticSa};
use crate::report::{Report, Stats};
use crate::state;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use vpngw_engine::model::{self, AddrRange, NextHop, SaHandle};
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};
use vpngw_engine::worker::WorkerReport;
use vpngw_engine::{OutboundSa, SaConfig};

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
        };
        let mut resumed = 0;
        if let Some(path) = &control.state {
            state::save(path, &control.file)?;
            let marks = state::load_marks(&state::marks_path(path))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            control.marks = marks.into_iter().map(|(k, m)| (k, (m.resume_at, m))).collect();
            let tunnels = control.model.tunnels.clone();
            for t in &tunnels {
                resumed += usize::from(control.resume(&t.outbound));
            }
        }
        control.mark_sequences()?;
        Ok((control, resumed))
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
        for t in &self.model.tunnels {
            let sa = t.outbound.lock().expect("SA lock");
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

    /// Takes a counter sample (once a second), for the rates in `stats`.
    pub fn sample(&mut self, workers: &[WorkerReport]) {
        let now = Report::gather(&self.model, workers);
        self.samples = [self.samples[1].take(), Some((Instant::now(), now))];
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

    /// Answers one request.
    pub fn handle(&mut self, request: &Request, workers: &[WorkerReport]) -> Result<Value, ApiError> {
        let value = |v: Result<Value, serde_json::Error>| v.expect("views serialize");
        match request {
            Request::Apply { changes, cascade } => self.apply(changes, *cascade),
            Request::List { kind, gateway } => Ok(api::list(&self.file, *kind, gateway.as_deref())),
            Request::Show { kind, name } => api::show(&self.file, *kind, name),
            Request::Export => Ok(json!({ "toml": self.file.to_toml() })),
            Request::Stats => {
                let now = Report::gather(&self.model, workers);
                let rates = match &self.samples {
                    [Some((t0, a)), Some((t1, b))] => Some((a, b, t1.duration_since(*t0))),
                    _ => None,
                };
                Ok(value(serde_json::to_value(Stats::new(&self.model, &now, rates))))
            }
            Request::Sas => Ok(value(serde_json::to_value(Report::gather(&self.model, workers).tunnels))),
            Request::Workers => Ok(value(serde_json::to_value(Report::gather(&self.model, workers).workers))),
            Request::Lookup { gateway, address, source } => self.lookup(gateway, *address, *source),
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
            !among.tunnels.iter().any(|t| Arc::ptr_eq(&t.outbound, sa))
        };
        for t in self.model.tunnels.iter().filter(|t| fresh(&t.outbound, &model)) {
            let sa = t.outbound.lock().expect("SA lock");
            let resume_at = sa.state.next_seq.saturating_add(1 << 16).min(sa.cfg.max_seq());
            let m = self.marks.entry(mark_key(&sa.cfg)).or_insert((0, state::SeqMark { spi: sa.cfg.spi, resume_at }));
            m.1.resume_at = m.1.resume_at.max(resume_at);
            self.marks_dirty = true;
        }
        for t in model.tunnels.iter().filter(|t| fresh(&t.outbound, &self.model)) {
            self.resume(&t.outbound);
        }
        self.generation += 1;
        self.cell.publish(snapshot);
        self.file = next;
        self.model = model;
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
        if same_key(&f.outbound, &old_f.outbound) {
            let same = old_t.outbound.lock().expect("SA lock").cfg == t.outbound.lock().expect("SA lock").cfg;
            if same {
                t.outbound = old_t.outbound.clone();
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
