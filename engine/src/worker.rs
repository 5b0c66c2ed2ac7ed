//! A worker: the busy-poll loop of one core. Each turn it loads the current
//! snapshot once, resumes the packets other workers handed it (it owns
//! their tunnels), sends the health-check probes the control thread asked
//! for, takes a burst from each of its ports, runs the pipeline, sends what
//! is to be sent on the right port, and hands dropped frames' buffers back.
//! It never blocks.

use crate::buf::PacketBuf;
use crate::io::Port;
use crate::lifetime::{LifetimeEvent, Seconds};
use crate::model::{GatewayId, PortId, TunnelId};
use crate::pipeline::{HandOff, Out, Pipeline, Tx};
use crate::probe::{ProbeEcho, ProbeRequest};
use crate::snapshot::SnapshotCell;
use crate::stats::{DropCounters, DropReason};
use crate::tap::Tap;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames taken from a port per turn (DPDK's usual 32 to 64).
pub const BURST: usize = 32;

/// One bounded hand-off queue per worker (where the others put packets for
/// the tunnels it owns), and what a clean shutdown needs to know: how many
/// workers still receive, and how many hand-offs are in flight.
pub struct Mailboxes<B> {
    queues: Vec<Arc<ArrayQueue<HandOff<B>>>>,
    receiving: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl<B> Mailboxes<B> {
    /// Queues of `capacity` packets for `workers` workers.
    pub fn new(workers: usize, capacity: usize) -> Self {
        Self {
            queues: (0..workers).map(|_| Arc::new(ArrayQueue::new(capacity))).collect(),
            receiving: Arc::new(AtomicUsize::new(workers)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Puts `h` in worker `owner`'s queue, counted in flight until resumed;
    /// gives it back if the queue is full.
    fn push(&self, owner: usize, h: HandOff<B>) -> Result<(), HandOff<B>> {
        self.queues[owner].push(h)?;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn share(&self) -> Self {
        Self { queues: self.queues.clone(), receiving: self.receiving.clone(), in_flight: self.in_flight.clone() }
    }
}

/// What a worker counted, as it last published it for the control
/// thread (about every [`REPORT_EVERY`]; its own copy stays authoritative).
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub drops: DropCounters,
    pub gateway_drops: HashMap<GatewayId, DropCounters>,
    /// Non-empty bursts, and their latency percentiles in nanoseconds.
    pub bursts: u64,
    pub latency_p50_ns: u64,
    pub latency_p99_ns: u64,
    pub latency_max_ns: u64,
    /// Each port's own counters ([`Port::counters`]).
    pub ports: Vec<(PortId, Vec<(&'static str, u64)>)>,
}

/// How often a busy worker publishes its report.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);

/// What a worker shares with the control thread: its report, the next
/// hops it found unresolved (for the kernel to resolve), its SAs' lifetime
/// events, the probes to send and the probe replies it saw, and the
/// capture in progress. Bounded: when full, the oldest news waits (a probe
/// that does not fit is not sent, and counts as lost).
#[derive(Debug)]
pub struct WorkerShared {
    pub report: Mutex<WorkerReport>,
    pub unresolved: ArrayQueue<(PortId, IpAddr)>,
    pub events: ArrayQueue<LifetimeEvent>,
    /// On-demand tunnels that traffic asked for.
    pub wanted: ArrayQueue<TunnelId>,
    pub probe_requests: ArrayQueue<ProbeRequest>,
    pub probe_echoes: ArrayQueue<ProbeEcho>,
    pub tap: ArcSwapOption<Tap>,
}

impl Default for WorkerShared {
    fn default() -> Self {
        Self {
            report: Mutex::new(WorkerReport::default()),
            unresolved: ArrayQueue::new(256),
            events: ArrayQueue::new(1024),
            wanted: ArrayQueue::new(256),
            probe_requests: ArrayQueue::new(4096),
            probe_echoes: ArrayQueue::new(4096),
            tap: ArcSwapOption::empty(),
        }
    }
}

pub struct Worker<P: Port> {
    index: usize,
    ports: Vec<P>,
    snapshots: Arc<SnapshotCell>,
    mailboxes: Mailboxes<P::Buf>,
    pub pipeline: Pipeline,
    /// Nanoseconds per non-empty burst, from receive to transmit.
    pub burst_latency: Histogram<u64>,
    rx: Vec<PacketBuf<P::Buf>>,
    tx: Vec<Tx<P::Buf>>,
    recycle: Vec<P::Buf>,
    rx_frames: u64,
    tx_frames: u64,
    shared: Arc<WorkerShared>,
    reported: Instant,
    idle_sleep: Option<Duration>,
}

/// Empty turns in a row after which a worker with an idle sleep naps.
pub const IDLE_TURNS: u32 = 1 << 12;

impl<P: Port> Worker<P> {
    /// Worker `index` of as many as `mailboxes` has, with its own `ports`
    /// (its queues of the gateway's ports).
    pub fn new(index: usize, ports: Vec<P>, snapshots: Arc<SnapshotCell>, mailboxes: &Mailboxes<P::Buf>) -> Self {
        Self {
            index,
            ports,
            snapshots,
            mailboxes: mailboxes.share(),
            pipeline: Pipeline::new(index, mailboxes.queues.len()),
            burst_latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
            rx: Vec::with_capacity(BURST),
            tx: Vec::with_capacity(BURST),
            recycle: Vec::new(),
            rx_frames: 0,
            tx_frames: 0,
            shared: Arc::new(WorkerShared::default()),
            reported: Instant::now(),
            idle_sleep: None,
        }
    }

    /// After [`IDLE_TURNS`] empty turns in a row, sleep `nap` between turns
    /// until traffic comes back (none: busy-poll always, the default). For
    /// a worker that shares its CPU: a busy poller there takes the time the
    /// others need, and loses packets whenever the scheduler takes it off.
    pub fn with_idle_sleep(mut self, nap: Option<Duration>) -> Self {
        self.idle_sleep = nap;
        self
    }

    /// What this worker shares with the control thread.
    pub fn shared(&self) -> Arc<WorkerShared> {
        self.shared.clone()
    }

    /// Publishes the report, and hands over unresolved next hops and
    /// lifetime events (what does not fit waits for the next time).
    pub fn publish(&mut self) {
        self.reported = Instant::now();
        for hop in self.pipeline.unresolved.drain(..) {
            let _ = self.shared.unresolved.push(hop);
        }
        for t in self.pipeline.wanted.drain(..) {
            let _ = self.shared.wanted.push(t);
        }
        let mut kept = Vec::new();
        for e in self.pipeline.events.drain(..) {
            if let Err(e) = self.shared.events.push(e) {
                kept.push(e);
            }
        }
        self.pipeline.events = kept;
        let h = &self.burst_latency;
        let report = WorkerReport {
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            drops: self.pipeline.drops.clone(),
            gateway_drops: self.pipeline.gateway_drops.clone(),
            bursts: h.len(),
            latency_p50_ns: h.value_at_quantile(0.5),
            latency_p99_ns: h.value_at_quantile(0.99),
            latency_max_ns: h.max(),
            ports: self.ports.iter().map(|p| (p.id(), p.counters())).collect(),
        };
        *self.shared.report.lock().expect("report lock") = report;
    }

    /// The only worker, with no one to hand off to.
    pub fn alone(ports: Vec<P>, snapshots: Arc<SnapshotCell>) -> Self {
        Self::new(0, ports, snapshots, &Mailboxes::new(1, 1))
    }

    pub fn ports(&mut self) -> &mut [P] {
        &mut self.ports
    }

    /// Runs the worker on a thread of its own, pinned to CPU `core` if given
    /// (a warning if the pin fails), busy-polling until `stop` is set. Then
    /// it stops receiving but keeps finishing hand-offs until no worker
    /// receives and none is in flight, so no packet is left in a queue; it
    /// returns itself (its ports and counters).
    pub fn spawn(mut self, core: Option<usize>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Self>
    where
        P: Send + 'static,
        P::Buf: Send,
    {
        std::thread::Builder::new()
            .name(format!("vpngw-worker-{}", self.index))
            .spawn(move || {
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        eprintln!("vpngw: worker {} could not be pinned to CPU {id}; running unpinned", self.index);
                    }
                }
                let start = Instant::now();
                let (mut turns, mut empty) = (0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    if self.poll(start.elapsed().as_secs()) == 0 {
                        empty = empty.saturating_add(1);
                        match self.idle_sleep {
                            Some(nap) if empty >= IDLE_TURNS => std::thread::sleep(nap),
                            _ => std::hint::spin_loop(),
                        }
                    } else {
                        empty = 0;
                    }
                    turns = turns.wrapping_add(1);
                    if turns.is_multiple_of(64) && self.reported.elapsed() >= REPORT_EVERY {
                        self.publish();
                    }
                }
                self.mailboxes.receiving.fetch_sub(1, Ordering::SeqCst);
                loop {
                    if self.resume_handed_off() == 0 {
                        let quiet = self.mailboxes.receiving.load(Ordering::SeqCst) == 0
                            && self.mailboxes.in_flight.load(Ordering::SeqCst) == 0;
                        if quiet {
                            self.publish();
                            return self;
                        }
                        std::hint::spin_loop();
                    }
                }
            })
            .expect("a worker thread starts")
    }

    /// One turn: the hand-off queue, the probes asked for, then every
    /// port; returns the packets taken in.
    pub fn poll(&mut self, now: Seconds) -> usize {
        let tap = self.shared.tap.load();
        let same = match (&*tap, &self.pipeline.tap) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            self.pipeline.tap = Option::clone(&tap);
        }
        let n = self.resume_handed_off() + self.send_probes(now) + self.poll_ports(now);
        for e in self.pipeline.probes.drain(..) {
            let _ = self.shared.probe_echoes.push(e);
        }
        n
    }

    /// Sends the probes the control thread asked for (frames from the first
    /// port); returns how many.
    fn send_probes(&mut self, now: Seconds) -> usize {
        if self.shared.probe_requests.is_empty() {
            return 0;
        }
        let snap = self.snapshots.load();
        let mailboxes = &self.mailboxes;
        let mut hand_off = |owner: usize, h: HandOff<P::Buf>| mailboxes.push(owner, h);
        let mut sent = 0;
        while let Some(req) = self.shared.probe_requests.pop() {
            let port = &mut self.ports[0];
            let mut out = Out {
                tx: &mut self.tx,
                recycle: &mut self.recycle,
                alloc: &mut || port.alloc(),
                hand_off: &mut hand_off,
            };
            sent += usize::from(self.pipeline.send_probe(&snap, &req, now, &mut out));
        }
        self.tx_frames += self.tx.len() as u64;
        Self::flush(&mut self.ports, &mut self.tx, &mut self.recycle, &mut self.pipeline, 0);
        sent
    }

    /// Resumes up to a burst of the packets other workers handed to this
    /// one, with the snapshots they were decided under; fragments they need
    /// come from the first port.
    fn resume_handed_off(&mut self) -> usize {
        let mailboxes = &self.mailboxes;
        let mut hand_off = |owner: usize, h: HandOff<P::Buf>| mailboxes.push(owner, h);
        // The clock is read only when there is something (most turns of a
        // single worker have nothing, and a read costs a system call's
        // worth on some virtual machines).
        let mut start = None;
        let mut resumed = 0;
        while resumed < BURST {
            let Some(h) = mailboxes.queues[self.index].pop() else { break };
            let _ = start.get_or_insert_with(Instant::now);
            let port = &mut self.ports[0];
            let mut out = Out {
                tx: &mut self.tx,
                recycle: &mut self.recycle,
                alloc: &mut || port.alloc(),
                hand_off: &mut hand_off,
            };
            self.pipeline.resume(h, &mut out);
            // Any hand-off it made is already counted in flight.
            mailboxes.in_flight.fetch_sub(1, Ordering::SeqCst);
            resumed += 1;
        }
        if resumed > 0 {
            self.tx_frames += self.tx.len() as u64;
            Self::flush(&mut self.ports, &mut self.tx, &mut self.recycle, &mut self.pipeline, 0);
            let took = start.map_or(0, |t| t.elapsed().as_nanos() as u64);
            let _ = self.burst_latency.record(took);
        }
        resumed
    }

    /// A burst from each port through the pipeline.
    fn poll_ports(&mut self, now: Seconds) -> usize {
        let snap = self.snapshots.load();
        let mailboxes = &self.mailboxes;
        let mut hand_off = |owner: usize, h: HandOff<P::Buf>| mailboxes.push(owner, h);
        let mut taken = 0;
        for i in 0..self.ports.len() {
            let n = self.ports[i].rx_burst(&mut self.rx, BURST);
            if n == 0 {
                continue;
            }
            taken += n;
            self.rx_frames += n as u64;
            let start = Instant::now();
            let id = self.ports[i].id();
            let port = &mut self.ports[i];
            let mut out = Out {
                tx: &mut self.tx,
                recycle: &mut self.recycle,
                alloc: &mut || port.alloc(),
                hand_off: &mut hand_off,
            };
            self.pipeline.process(&snap, id, &mut self.rx, now, &mut out);
            self.tx_frames += self.tx.len() as u64;
            Self::flush(&mut self.ports, &mut self.tx, &mut self.recycle, &mut self.pipeline, i);
            let _ = self.burst_latency.record(start.elapsed().as_nanos() as u64);
        }
        taken
    }

    /// Sends `tx` per destination port, in the order the frames came, and
    /// gives the dropped buffers back to port `home`.
    fn flush(
        ports: &mut [P],
        tx: &mut Vec<Tx<P::Buf>>,
        recycle: &mut Vec<P::Buf>,
        pipeline: &mut Pipeline,
        home: usize,
    ) {
        tx.sort_by_key(|(port, _)| *port);
        while let Some(&(port, _)) = tx.first() {
            let n = tx.iter().take_while(|(p, _)| *p == port).count();
            let mut frames = tx.drain(..n).map(|(_, f)| f);
            match ports.iter_mut().find(|p| p.id() == port) {
                Some(p) => p.tx_burst(&mut frames),
                None => {
                    for f in frames {
                        pipeline.drops.count(DropReason::NoPort);
                        recycle.push(f.into_frame());
                    }
                }
            }
        }
        for buf in recycle.drain(..) {
            ports[home].recycle(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mem::MemPort;
    use crate::model::{Attachment, Config, Gateway, NextHop, Port as PortCfg, Route};
    use crate::snapshot::Snapshot;
    use crate::wire::ether;
    use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const HOST: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// A VPC gateway whose inside route hairpins 10.1.0.0/16 (enough to see
    /// frames go round), with or without that route.
    fn config(with_route: bool) -> Config {
        let ip = |s: &str| s.parse().unwrap();
        let port = |id, neighbours| PortCfg { id, mac: MAC, mtu: 1500, addrs: vec![], router: None, neighbours };
        Config {
            ports: vec![port(1, vec![(ip("10.1.0.6"), HOST)]), port(2, vec![])],
            gateways: vec![Gateway {
                id: 1,
                name: "gw".into(),
                attachment: Attachment::Vpc,
                outside_port: 2,
                outside_addrs: vec![ip("192.0.2.1")],
                inside_port: Some(1),
                bandwidth_bps: None,
            }],
            routes: with_route
                .then(|| Route {
                    gateway: 1,
                    prefix: ip("10.1.0.0"),
                    len: 16,
                    next_hop: NextHop::Inside,
                    priority: 0,
                    enabled: true,
                })
                .into_iter()
                .collect(),
            ..Config::default()
        }
    }

    fn frame(ttl: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        ether::emit_header(&mut f, MAC, HOST, ether::ethertype::IPV4);
        let (src, dst) = ("10.1.0.5".parse().unwrap(), "10.1.0.6".parse().unwrap());
        Ipv4Repr { src, dst, protocol: 17, payload_len: 8, ttl, tos: 0, ident: 0, dont_frag: false }.emit(&mut f[14..]);
        f
    }

    #[test]
    fn bursts_go_round_and_a_new_snapshot_takes_effect_next_turn() {
        let cell = Arc::new(SnapshotCell::new(Snapshot::build(&config(true), 1).unwrap()));
        let mut w = Worker::alone(vec![MemPort::new(1)], cell.clone());
        for _ in 0..100 {
            w.ports()[0].inject(&frame(64));
        }
        let turns: Vec<usize> = (0..5).map(|_| w.poll(0)).collect();
        assert_eq!(turns, [32, 32, 32, 4, 0]);
        let sent = w.ports()[0].take_sent();
        assert_eq!(sent.len(), 100);
        assert_eq!(Ipv4Packet::new_checked(&sent[0][14..]).unwrap().ttl(), 63);
        assert_eq!(&sent[0][..6], &HOST);
        assert_eq!(w.burst_latency.len(), 4);

        cell.publish(Snapshot::build(&config(false), 2).unwrap());
        w.ports()[0].inject(&frame(64));
        assert_eq!(w.poll(0), 1);
        assert!(w.ports()[0].take_sent().is_empty());
        assert_eq!(w.pipeline.drops.get(DropReason::NoRoute), 1);
    }

    #[test]
    fn reports_counters_and_unresolved_next_hops_to_the_control_thread() {
        let mut cfg = config(true);
        cfg.ports[0].neighbours.clear();
        let cell = Arc::new(SnapshotCell::new(Snapshot::build(&cfg, 1).unwrap()));
        let mut w = Worker::alone(vec![MemPort::new(1)], cell);
        let shared = w.shared();
        for _ in 0..3 {
            w.ports()[0].inject(&frame(64));
        }
        w.poll(0);
        assert_eq!(shared.report.lock().unwrap().rx_frames, 0, "nothing published yet");
        w.publish();
        let r = shared.report.lock().unwrap().clone();
        assert_eq!((r.rx_frames, r.tx_frames, r.bursts), (3, 0, 1));
        assert_eq!(r.drops.get(DropReason::NoNeighbour), 3);
        assert_eq!(r.gateway_drops[&1].get(DropReason::NoNeighbour), 3);
        assert_eq!(shared.unresolved.pop(), Some((1, "10.1.0.6".parse().unwrap())), "once, however many packets");
        assert_eq!(shared.unresolved.pop(), None);
    }
}
