//! What happens to a burst of frames received on one port: strip the link
//! header, decrypt (outside port), check the tunnel's inbound selectors,
//! decide (SPD first, then the route table, else drop), police the
//! gateway's bandwidth, decrement the TTL, encrypt (into a tunnel), and
//! write the next hop's link header. Every drop has a reason, counted per
//! worker and per gateway. Health-check echoes addressed to a tunnel's
//! probe address are answered into the tunnel (requests) or reported
//! (replies); a capture in progress gets copies.
//!
//! The pipeline owns no ports: it turns received frames into frames to send
//! (with their port), frames to recycle, and frames to hand to the worker
//! that owns the tunnel they need (each tunnel's SAs have one owner).

use crate::buf::PacketBuf;
use crate::esp;
use crate::lifetime::{LifetimeEvent, Seconds};
use crate::model::{GatewayId, PortId, TunnelId};
use crate::probe::{ProbeEcho, ProbeRequest};
use crate::snapshot::{Hop, PortView, Side, Snapshot, Verdict};
use crate::spd::{FiveTuple, FlowCache};
use crate::stats::{DropCounters, DropReason};
use crate::tap::{Tap, TapPoint};
use crate::wire::ether::{self, ethertype, EthernetFrame};
use crate::wire::icmp::{self, IcmpError};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::{echo, proto, tcp};
use crate::{policer, prefetch};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// One worker's pipeline state: who it is among the workers (each tunnel's
/// SAs have one owning worker), its counters, and the lifetime events its
/// SAs raised, for the control thread to collect.
#[derive(Debug)]
pub struct Pipeline {
    worker: usize,
    workers: usize,
    pub drops: DropCounters,
    pub gateway_drops: HashMap<GatewayId, DropCounters>,
    pub events: Vec<LifetimeEvent>,
    /// On-demand tunnels (ids) a packet was sent into before they had an
    /// SA, for the control thread to negotiate; at most
    /// [`MAX_UNRESOLVED`] until taken.
    pub wanted: Vec<TunnelId>,
    /// Next hops a packet found no MAC for (port, address), for the
    /// control thread to ask the kernel to resolve; at most
    /// [`MAX_UNRESOLVED`] until taken.
    pub unresolved: Vec<(PortId, IpAddr)>,
    /// Echo replies to tunnels' probe addresses, for the control thread.
    pub probes: Vec<ProbeEcho>,
    /// The capture in progress, if any.
    pub tap: Option<Arc<Tap>>,
    flows: FlowCache<Verdict>,
    /// Per-burst scratch, kept to reuse its memory: each packet's step,
    /// the destinations for the route table and what it answered.
    steps: Vec<Step>,
    lookups: Vec<IpAddr>,
    hops: Vec<Option<Hop>>,
}

impl Default for Pipeline {
    /// The pipeline of the only worker.
    fn default() -> Self {
        Self::new(0, 1)
    }
}

/// How many unresolved next hops a pipeline keeps until they are taken.
pub const MAX_UNRESOLVED: usize = 64;

/// A frame to transmit, and the port to transmit it on.
pub type Tx<B> = (PortId, PacketBuf<B>);

/// Sends a packet to the worker that owns its tunnel; gives it back if
/// that worker's queue is full.
pub type HandOffFn<'o, B> = dyn FnMut(usize, HandOff<B>) -> Result<(), HandOff<B>> + 'o;

/// Where the pipeline puts what it is done with.
pub struct Out<'o, B> {
    /// Frames to send.
    pub tx: &'o mut Vec<Tx<B>>,
    /// Buffers of dropped frames.
    pub recycle: &'o mut Vec<B>,
    /// Empty frames for packets the pipeline makes (IPv4 fragments).
    pub alloc: &'o mut dyn FnMut() -> Option<PacketBuf<B>>,
    /// Packets for tunnels another worker owns.
    pub hand_off: &'o mut HandOffFn<'o, B>,
}

/// Where a handed-off packet resumes on the worker that owns its tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The outer packet, to decrypt.
    Decrypt,
    /// The inner packet (TTL already decremented), to encrypt into this
    /// tunnel (fragmenting first if it is too big).
    Encrypt { tunnel: usize, protocol: u8 },
}

/// A packet on its way to the worker that owns its tunnel's SAs, with the
/// snapshot it was decided under (so its indexes stay valid).
pub struct HandOff<B> {
    pub pkt: PacketBuf<B>,
    pub stage: Stage,
    snap: Arc<Snapshot>,
    g: usize,
    rx_port: usize,
    now: Seconds,
}

/// Where a packet goes next.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Out of this port (an index of [`Snapshot::ports`]).
    Send(usize),
    /// To this worker, to resume at this stage.
    HandOff(usize, Stage),
    /// Taken by the gateway itself (a probe's answer): not a drop.
    Consumed,
}

/// What became of an outer ESP packet on arrival.
enum Arrival {
    /// Its inbound SA (by SPI) is this worker's, of tunnel `tunnel`.
    Mine { spi: u32, tunnel: usize },
    /// Another worker owns its tunnel.
    Theirs(usize),
}

/// Where one packet of the burst being processed stands: each stage of
/// [`Pipeline::process`] takes the packets at its step, for the whole
/// burst, and moves them on.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Decided: sent, handed off, or dropped.
    Done(Result<Next, DropReason>),
    /// An ESP packet for inbound SA `spi` (if we have it) at `dst`.
    Arrive { spi: u32, dst: IpAddr },
    /// An ESP packet to decrypt here, with its tunnel's inbound SA `spi`.
    Decrypt { spi: u32, tunnel: usize },
    /// An IP packet to check and classify; `from` is the tunnel it was
    /// decrypted from, if any.
    Admit { from: Option<usize> },
    /// Admitted; its flow-cache slot is on its way.
    Classify { flow: FiveTuple },
    /// Not in the flow cache: the SPD decides (its buckets are on their way).
    Policy { flow: FiveTuple },
    /// The SPD's verdict (a tunnel's state is on its way).
    Verdict { flow: FiveTuple, verdict: Option<Verdict> },
    /// SPD said bypass, or nothing: the route table decides.
    Lookup { flow: FiveTuple },
    /// Bound for `hop`.
    Forward { flow: FiveTuple, hop: Hop },
}

/// Where a packet is being handled: the snapshot, its gateway, the port it
/// arrived on (ICMP errors are sourced there), and the time (in seconds,
/// and in the policers' ticks).
struct At<'s> {
    snap: &'s Arc<Snapshot>,
    g: usize,
    rx_port: usize,
    now: Seconds,
    clock: u64,
}

impl Pipeline {
    /// The pipeline of worker `worker` of `workers`.
    pub fn new(worker: usize, workers: usize) -> Self {
        assert!(worker < workers, "worker {worker} of {workers}");
        Self {
            worker,
            workers,
            drops: DropCounters::default(),
            gateway_drops: HashMap::new(),
            events: Vec::new(),
            wanted: Vec::new(),
            unresolved: Vec::new(),
            probes: Vec::new(),
            tap: None,
            // 64 K recent flows per worker: 4 MiB.
            flows: FlowCache::new(16),
            steps: Vec::new(),
            lookups: Vec::new(),
            hops: Vec::new(),
        }
    }

    /// The worker that owns tunnel `t`'s SAs: the only one that encrypts
    /// or decrypts with them (one writer for sequence numbers and windows).
    pub fn owner(&self, t: usize) -> usize {
        t % self.workers
    }

    /// Processes the frames `burst` drains, received on port `rx_port`,
    /// with snapshot `snap` at time `now`, into `out`.
    ///
    /// Stage by stage over the whole burst, as VPP does: link headers and
    /// SA lookup; decryption; admission and policy; the route table, in one
    /// batched lookup; then forwarding. Before a stage touches per-packet
    /// state it prefetches it for all packets (flow-cache slots, SAs), so
    /// with many tunnels the cache misses of a burst overlap.
    pub fn process<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        snap: &Arc<Snapshot>,
        rx_port: PortId,
        burst: &mut Vec<PacketBuf<B>>,
        now: Seconds,
        out: &mut Out<B>,
    ) {
        let port = snap.port(rx_port);
        let Some((rx_port, (g, side))) = port.and_then(|p| Some((p, snap.ports[p].role?))) else {
            for pkt in burst.drain(..) {
                self.drops.count(DropReason::NoRoute);
                out.recycle.push(pkt.into_frame());
            }
            return;
        };
        let at = At { snap, g, rx_port, now, clock: policer::now() };
        let mut steps = std::mem::take(&mut self.steps);
        steps.clear();
        // Link headers; on the outside, the ESP header, with the SA
        // table's slot prefetched; then which SA.
        steps.extend(burst.iter_mut().map(|pkt| {
            let arrived = strip_link_header(pkt, side == Side::Inside).and_then(|()| match side {
                Side::Inside => Ok(Step::Admit { from: None }),
                Side::Outside => esp::locate(pkt.data()).map(|loc| {
                    snap.inbound.prefetch(loc.spi);
                    Step::Arrive { spi: loc.spi, dst: loc.dst }
                }),
            });
            arrived.unwrap_or_else(|e| Step::Done(Err(e)))
        }));
        for step in &mut steps {
            if let Step::Arrive { spi, dst } = *step {
                *step = match self.found(&at, spi, dst) {
                    Ok(Arrival::Mine { spi, tunnel }) => Step::Decrypt { spi, tunnel },
                    Ok(Arrival::Theirs(owner)) => Step::Done(Ok(Next::HandOff(owner, Stage::Decrypt))),
                    Err(e) => Step::Done(Err(e)),
                };
            }
        }
        // Decryption.
        if side == Side::Outside {
            for step in &steps {
                if let Step::Decrypt { spi, tunnel } = *step {
                    if let Some(r) = snap.inbound.get(spi) {
                        crate::sa::InboundSa::prefetch(&r.sa, r.suite);
                    }
                    snap.tunnels[tunnel].selectors.prefetch();
                }
            }
            for (pkt, step) in burst.iter_mut().zip(&mut steps) {
                if let Step::Decrypt { spi, tunnel } = *step {
                    *step = match self.decrypt(&at, pkt, spi) {
                        Ok(()) => Step::Admit { from: Some(tunnel) },
                        Err(e) => Step::Done(Err(e)),
                    };
                }
            }
        }
        // Admission (selectors), then policy: the flow cache, and the SPD
        // for what it does not know, each prefetched a stage ahead.
        let (spd, generation) = (&snap.gateways[g].spd, snap.generation);
        for (pkt, step) in burst.iter_mut().zip(&mut steps) {
            if let Step::Admit { from } = *step {
                if let Some(done) = from.and_then(|t| self.probe(&at, pkt, t)) {
                    *step = Step::Done(done);
                    continue;
                }
                *step = match self.admit(&at, pkt, from) {
                    Ok(flow) => {
                        self.flows.prefetch(g, &flow);
                        Step::Classify { flow }
                    }
                    Err(e) => Step::Done(Err(e)),
                };
            }
        }
        let decided = |flow: FiveTuple, verdict: Option<Verdict>| {
            if let Some(Verdict::Protect(t)) = verdict {
                prefetch::value(&snap.tunnels[t]);
            }
            Step::Verdict { flow, verdict }
        };
        for step in &mut steps {
            if let Step::Classify { flow } = *step {
                *step = match self.flows.get(generation, g, &flow) {
                    Some(verdict) => decided(flow, verdict),
                    None => {
                        spd.prefetch(&flow);
                        Step::Policy { flow }
                    }
                };
            }
        }
        for step in &mut steps {
            if let Step::Policy { flow } = *step {
                let verdict = spd.classify(&flow);
                self.flows.insert(generation, g, &flow, verdict);
                *step = decided(flow, verdict);
            }
        }
        self.lookups.clear();
        for step in &mut steps {
            if let Step::Verdict { flow, verdict } = *step {
                *step = match Self::verdict(&at, verdict) {
                    Ok(Some(hop)) => Step::Forward { flow, hop },
                    Ok(None) => {
                        self.lookups.push(flow.dst);
                        Step::Lookup { flow }
                    }
                    Err(e) => Step::Done(Err(e)),
                };
            }
        }
        // The route table, for the rest, in one batch.
        self.hops.clear();
        self.hops.resize(self.lookups.len(), None);
        snap.gateways[g].routes.lookup_batch(&self.lookups, &mut self.hops);
        let mut hops = self.hops.iter();
        for step in &mut steps {
            if let Step::Lookup { flow } = *step {
                *step = match hops.next().copied().flatten() {
                    Some(hop) => Step::Forward { flow, hop },
                    None => Step::Done(Err(DropReason::NoRoute)),
                };
            }
        }
        // Forwarding, with the outbound SAs prefetched.
        for step in &steps {
            if let Step::Forward { hop: Hop::Tunnel(t), .. } = *step {
                let tunnel = &snap.tunnels[t];
                if let (true, Some(sa), Some(suite)) =
                    (self.owner(t) == self.worker, &tunnel.outbound, tunnel.outbound_suite)
                {
                    crate::sa::OutboundSa::prefetch(sa, suite);
                }
            }
        }
        for (pkt, step) in burst.iter_mut().zip(&mut steps) {
            if let Step::Forward { flow, hop } = *step {
                *step = Step::Done(self.forward(&at, pkt, &flow, hop, out));
            }
        }
        for (pkt, step) in burst.drain(..).zip(steps.drain(..)) {
            let Step::Done(r) = step else { unreachable!("every packet is decided: {step:?}") };
            self.finish(&at, r, pkt, out);
        }
        self.steps = steps;
    }

    /// Continues a packet another worker handed to this one, its owner.
    pub fn resume<B: AsRef<[u8]> + AsMut<[u8]>>(&mut self, h: HandOff<B>, out: &mut Out<B>) {
        let HandOff { mut pkt, stage, snap, g, rx_port, now } = h;
        let at = At { snap: &snap, g, rx_port, now, clock: policer::now() };
        let r = match stage {
            Stage::Decrypt => self.decrypt_and_route(&at, &mut pkt, out),
            Stage::Encrypt { tunnel, protocol } => self.encrypt(&at, tunnel, &mut pkt, protocol, out).map(Next::Send),
        };
        self.finish(&at, r, pkt, out);
    }

    /// Sends the health-check probe `req` into its tunnel (or hands it to
    /// the tunnel's owner), in a frame from `out.alloc`. False if the
    /// tunnel is not in `snap` or no frame is free.
    pub fn send_probe<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        snap: &Arc<Snapshot>,
        req: &ProbeRequest,
        now: Seconds,
        out: &mut Out<B>,
    ) -> bool {
        let Some(t) = snap.tunnel(req.tunnel) else { return false };
        let Some(mut pkt) = (out.alloc)().filter(|f| f.tailroom() >= req.wire_len()) else { return false };
        pkt.push_back(req.wire_len()).expect("tailroom checked");
        req.emit(pkt.data_mut());
        let g = snap.tunnels[t].gateway;
        let at = At { snap, g, rx_port: snap.gateways[g].outside_port, now, clock: policer::now() };
        let r = match self.owner(t) {
            owner if owner != self.worker => {
                Ok(Next::HandOff(owner, Stage::Encrypt { tunnel: t, protocol: proto::ICMP }))
            }
            _ => self.send_into_tunnel(&at, t, &mut pkt, proto::ICMP).map(Next::Send),
        };
        self.finish(&at, r, pkt, out);
        true
    }

    /// Sends, hands off, or counts and recycles `pkt`, as `r` says.
    fn finish<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        r: Result<Next, DropReason>,
        pkt: PacketBuf<B>,
        out: &mut Out<B>,
    ) {
        let reason = match r {
            Ok(Next::Send(port)) => return out.tx.push((at.snap.ports[port].id, pkt)),
            Ok(Next::Consumed) => return out.recycle.push(pkt.into_frame()),
            Ok(Next::HandOff(owner, stage)) => {
                let h = HandOff { pkt, stage, snap: at.snap.clone(), g: at.g, rx_port: at.rx_port, now: at.now };
                match (out.hand_off)(owner, h) {
                    Ok(()) => return,
                    Err(h) => {
                        self.count(at.snap, Some(at.g), DropReason::HandOffFull);
                        return out.recycle.push(h.pkt.into_frame());
                    }
                }
            }
            Err(reason) => reason,
        };
        self.count(at.snap, Some(at.g), reason);
        out.recycle.push(pkt.into_frame());
    }

    fn count(&mut self, snap: &Snapshot, g: Option<usize>, reason: DropReason) {
        self.drops.count(reason);
        if let Some(g) = g {
            self.gateway_drops.entry(snap.gateways[g].id).or_default().count(reason);
        }
    }

    /// Finds the inbound SA of the outer ESP packet in `pkt` (by SPI, for
    /// one of this gateway's addresses) and whose it is.
    fn arrive<B: AsRef<[u8]> + AsMut<[u8]>>(&self, at: &At, pkt: &PacketBuf<B>) -> Result<Arrival, DropReason> {
        let loc = esp::locate(pkt.data())?;
        self.found(at, loc.spi, loc.dst)
    }

    /// Inbound SA `spi`, for an ESP packet sent to `dst`: ours, or another
    /// worker's (the owner of its tunnel).
    fn found(&self, at: &At, spi: u32, dst: IpAddr) -> Result<Arrival, DropReason> {
        let inbound = at.snap.inbound.get(spi).ok_or(DropReason::UnknownSpi)?;
        let t = inbound.tunnel;
        if at.snap.tunnels[t].gateway != at.g || !at.snap.gateways[at.g].outside_addrs.contains(&dst) {
            return Err(DropReason::UnknownSpi);
        }
        Ok(match self.owner(t) {
            owner if owner != self.worker => Arrival::Theirs(owner),
            _ => Arrival::Mine { spi, tunnel: t },
        })
    }

    /// Decrypts the ESP packet in `pkt` with inbound SA `spi`, which this
    /// worker owns; `pkt` is left holding the inner packet.
    fn decrypt<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        spi: u32,
    ) -> Result<(), DropReason> {
        let loc = esp::locate(pkt.data())?;
        let inbound = at.snap.inbound.get(spi).ok_or(DropReason::UnknownSpi)?;
        let tunnel = at.snap.tunnels[inbound.tunnel].id;
        self.tap(at, tunnel, TapPoint::Outer, pkt.data(), false);
        let mut sa = inbound.sa.lock().expect("SA lock");
        esp::decap(&mut sa, pkt, &loc, at.now, &mut self.events)?;
        self.tap(at, tunnel, TapPoint::Inner, pkt.data(), false);
        Ok(())
    }

    /// Gives the capture in progress a copy of `data`, if it wants one.
    #[inline]
    fn tap(&self, at: &At, tunnel: crate::model::TunnelId, point: TapPoint, data: &[u8], outbound: bool) {
        if let Some(tap) = self.tap.as_ref().filter(|t| t.wants(tunnel, point)) {
            tap.copy(data, outbound, at.clock);
        }
    }

    /// A health-check echo addressed to tunnel `t`'s probe address, just
    /// decrypted from it: a request is answered into the tunnel, a reply is
    /// reported to the control thread. `None`: not one.
    fn probe<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        t: usize,
    ) -> Option<Result<Next, DropReason>> {
        let tunnel = &at.snap.tunnels[t];
        let probe = tunnel.probe?;
        let e = echo::parse(pkt.data()).filter(|e| e.dst == probe.local)?;
        if !e.request {
            self.probes.push(ProbeEcho { tunnel: tunnel.id, ident: e.ident, seq: e.seq, at: Instant::now() });
            return Some(Ok(Next::Consumed));
        }
        echo::answer_in_place(pkt.data_mut());
        Some(self.send_into_tunnel(at, t, pkt, proto::ICMP).map(Next::Send))
    }

    /// Decrypts the ESP packet in `pkt` (or hands it to the worker that
    /// owns its tunnel) and routes what comes out: one packet through the
    /// stages [`Self::process`] runs burst-wide.
    fn decrypt_and_route<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        out: &mut Out<B>,
    ) -> Result<Next, DropReason> {
        match self.arrive(at, pkt)? {
            Arrival::Theirs(owner) => Ok(Next::HandOff(owner, Stage::Decrypt)),
            Arrival::Mine { spi, tunnel } => {
                self.decrypt(at, pkt, spi)?;
                match self.probe(at, pkt, tunnel) {
                    Some(done) => done,
                    None => self.route(at, pkt, Some(tunnel), out),
                }
            }
        }
    }

    /// Forwards the IP packet in `pkt`: SPD first, then the route table.
    /// `from` is the tunnel it was decrypted from, if any.
    fn route<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        from: Option<usize>,
        out: &mut Out<B>,
    ) -> Result<Next, DropReason> {
        let flow = self.admit(at, pkt, from)?;
        let hop = match self.policy(at, &flow)? {
            Some(hop) => hop,
            None => at.snap.gateways[at.g].routes.lookup(flow.dst).ok_or(DropReason::NoRoute)?,
        };
        self.forward(at, pkt, &flow, hop, out)
    }

    /// Reads the five-tuple of the IP packet in `pkt`; one decrypted from
    /// a policy-based tunnel must fit that tunnel's inbound selectors.
    fn admit<B: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        at: &At,
        pkt: &PacketBuf<B>,
        from: Option<usize>,
    ) -> Result<FiveTuple, DropReason> {
        let flow = FiveTuple::of(pkt.data())?;
        if let Some(t) = from {
            let selectors = &at.snap.tunnels[t].selectors;
            if !selectors.is_empty() && !selectors.allow(&flow) {
                return Err(DropReason::Selector);
            }
            if let Some(b) = &at.snap.gateways[at.g].bandwidth {
                if !b.inbound.admit(pkt.len(), at.clock) {
                    return Err(DropReason::BandwidthLimit);
                }
            }
        }
        Ok(flow)
    }

    /// What the SPD says of `flow`: a tunnel it must go into, nothing (the
    /// route table decides), or a drop.
    fn policy(&mut self, at: &At, flow: &FiveTuple) -> Result<Option<Hop>, DropReason> {
        let spd = &at.snap.gateways[at.g].spd;
        let verdict = self.flows.classify(at.snap.generation, at.g, spd, flow);
        Self::verdict(at, verdict)
    }

    /// What the SPD's `verdict` means for a packet.
    fn verdict(at: &At, verdict: Option<Verdict>) -> Result<Option<Hop>, DropReason> {
        match verdict {
            Some(Verdict::Protect(t)) if !at.snap.tunnels[t].up => Err(DropReason::TunnelDown),
            Some(Verdict::Protect(t)) => Ok(Some(Hop::Tunnel(t))),
            Some(Verdict::Discard) => Err(DropReason::SpdDiscard),
            Some(Verdict::Bypass) | None => Ok(None),
        }
    }

    /// Sends the IP packet in `pkt`, of flow `flow`, towards `hop`: MTU,
    /// TTL, then the inside port's link header, or the tunnel (here, or
    /// handed to its owner).
    fn forward<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        flow: &FiveTuple,
        hop: Hop,
        out: &mut Out<B>,
    ) -> Result<Next, DropReason> {
        let snap = at.snap;
        // Too big for the tunnel: IPv4 without DF is fragmented before
        // encryption (by the tunnel's owner); IPv6 and IPv4 with DF are
        // refused, and the sender is told the size that fits (RFC 1191,
        // RFC 8201).
        if let Hop::Tunnel(t) = hop {
            if let Some(b) = &snap.gateways[at.g].bandwidth {
                if !b.outbound.admit(pkt.len(), at.clock) {
                    return Err(DropReason::BandwidthLimit);
                }
            }
            let max = snap.tunnels[t].max_inner;
            let may_fragment = Ipv4Packet::new_checked(pkt.data()).is_ok_and(|p| !p.dont_frag());
            if pkt.len() > max && !may_fragment {
                let mtu = IcmpError::TooBig { mtu: max.min(u16::MAX as usize) as u16 };
                return self.refuse(at, pkt, DropReason::TooBig, mtu, out);
            }
        }
        if decrement_ttl(pkt).is_err() {
            return self.refuse(at, pkt, DropReason::TtlExpired, IcmpError::TimeExceeded, out);
        }
        match hop {
            Hop::Inside => {
                let port = snap.gateways[at.g].inside_port.ok_or(DropReason::NoRoute)?;
                self.link_header(snap, pkt, port, flow.dst)?;
                Ok(Next::Send(port))
            }
            Hop::Tunnel(t) if self.owner(t) != self.worker => {
                Ok(Next::HandOff(self.owner(t), Stage::Encrypt { tunnel: t, protocol: flow.protocol }))
            }
            Hop::Tunnel(t) => self.encrypt(at, t, pkt, flow.protocol, out).map(Next::Send),
        }
    }

    /// Encrypts the inner packet in `pkt` into tunnel `t`, fragmenting an
    /// IPv4 packet that is too big first (each fragment its own ESP packet,
    /// sent from here); returns the outside port for `pkt`.
    fn encrypt<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        t: usize,
        pkt: &mut PacketBuf<B>,
        protocol: u8,
        out: &mut Out<B>,
    ) -> Result<usize, DropReason> {
        if pkt.len() > at.snap.tunnels[t].max_inner {
            for mut fragment in fragment_v4(pkt, at.snap.tunnels[t].max_inner, out)? {
                let r = self.send_into_tunnel(at, t, &mut fragment, protocol).map(Next::Send);
                self.finish(at, r, fragment, out);
            }
        }
        self.send_into_tunnel(at, t, pkt, protocol)
    }

    /// Encrypts the IP packet in `pkt` into tunnel `t` and addresses it to
    /// the customer gateway; returns the outside port.
    fn send_into_tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        t: usize,
        pkt: &mut PacketBuf<B>,
        protocol: u8,
    ) -> Result<usize, DropReason> {
        let (tunnel, gw) = (&at.snap.tunnels[t], &at.snap.gateways[at.g]);
        debug_assert_eq!(self.owner(t), self.worker, "only the owner touches a tunnel's SAs");
        if let (Some(mss), proto::TCP) = (tunnel.mss_clamp, protocol) {
            clamp_mss(pkt.data_mut(), mss);
        }
        self.tap(at, tunnel.id, TapPoint::Inner, pkt.data(), true);
        {
            // Only an on-demand tunnel is chosen without an outbound SA:
            // the packet asks for one.
            let Some(sa) = tunnel.outbound.as_ref() else {
                if self.wanted.len() < MAX_UNRESOLVED && !self.wanted.contains(&tunnel.id) {
                    self.wanted.push(tunnel.id);
                }
                return Err(DropReason::TunnelDown);
            };
            let mut sa = sa.lock().expect("SA lock");
            esp::encap(&mut sa, pkt, at.now, &mut self.events)?;
        }
        self.tap(at, tunnel.id, TapPoint::Outer, pkt.data(), true);
        self.link_header(at.snap, pkt, gw.outside_port, tunnel.peer)?;
        Ok(gw.outside_port)
    }

    /// Drops the packet in `pkt` for `reason`, and answers its source with
    /// `error` where ICMP allows it: then `pkt` holds the error, routed like
    /// any packet of this gateway.
    fn refuse<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        reason: DropReason,
        error: IcmpError,
        out: &mut Out<B>,
    ) -> Result<Next, DropReason> {
        let src = FiveTuple::of(pkt.data()).map_err(|_| reason)?.src;
        let Some(me) = at.snap.ports[at.rx_port].addr_like(src) else { return Err(reason) };
        if !icmp::make_error(pkt, me, error) {
            return Err(reason);
        }
        self.count(at.snap, Some(at.g), reason);
        // The error goes wherever its destination is reached, tunnel or not;
        // no error is ever sent about it.
        self.route(at, pkt, None, out)
    }
}

impl Pipeline {
    /// Puts the link header for the next hop towards `dst` out of port
    /// `port`; a next hop with no known MAC is noted for resolution.
    fn link_header<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        snap: &Snapshot,
        pkt: &mut PacketBuf<B>,
        port: usize,
        dst: IpAddr,
    ) -> Result<(), DropReason> {
        let view = &snap.ports[port];
        let r = push_link_header(pkt, view, dst);
        if r == Err(DropReason::NoNeighbour) && self.unresolved.len() < MAX_UNRESOLVED {
            let hop = (view.id, view.next_hop(dst));
            if !self.unresolved.contains(&hop) {
                self.unresolved.push(hop);
            }
        }
        r
    }
}

/// Checks the Ethernet header and the IP header behind it (its checksum
/// too, if `verify`), and narrows `pkt` to the IP packet (link padding
/// dropped).
fn strip_link_header<B: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut PacketBuf<B>, verify: bool) -> Result<(), DropReason> {
    let eth = EthernetFrame::new_checked(pkt.data()).map_err(|_| DropReason::Malformed)?;
    let (hl, ip) = (eth.header_len(), eth.payload());
    let len = match eth.ethertype() {
        ethertype::IPV4 => {
            let p = Ipv4Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
            if verify && !p.verify_checksum() {
                return Err(DropReason::Malformed);
            }
            p.total_len()
        }
        ethertype::IPV6 => Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?.total_len(),
        _ => return Err(DropReason::NotIp),
    };
    pkt.narrow(hl..hl + len).map_err(|_| DropReason::Malformed)
}

/// Splits the IPv4 packet in `pkt` into fragments of at most `max` bytes
/// (RFC 791 section 3.2): `pkt` keeps the first (with the options), the
/// others are returned in new frames. If frames run out, the ones taken go
/// back and the packet is dropped (`no-room`).
fn fragment_v4<B: AsRef<[u8]> + AsMut<[u8]>>(
    pkt: &mut PacketBuf<B>,
    max: usize,
    out: &mut Out<B>,
) -> Result<Vec<PacketBuf<B>>, DropReason> {
    let ip = Ipv4Packet::new_checked(pkt.data()).map_err(|_| DropReason::Malformed)?;
    let (hl, total, base, more) = (ip.header_len(), ip.total_len(), ip.frag_offset(), ip.more_frags());
    if max < hl + 8 {
        return Err(DropReason::TooBig);
    }
    let chunk = (max - hl) & !7;
    let repr = Ipv4Repr {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: ip.protocol(),
        payload_len: 0,
        ttl: ip.ttl(),
        tos: ip.tos(),
        ident: ip.ident(),
        dont_frag: false,
    };
    let payload = total - hl;
    let mut rest = Vec::new();
    for off in (chunk..payload).step_by(chunk) {
        let n = chunk.min(payload - off);
        let Some(mut f) = (out.alloc)().filter(|f| f.tailroom() >= ipv4::HEADER_LEN + n) else {
            out.recycle.extend(rest.into_iter().map(PacketBuf::into_frame));
            return Err(DropReason::NoRoom);
        };
        f.push_back(ipv4::HEADER_LEN + n).expect("tailroom checked");
        let d = f.data_mut();
        Ipv4Repr { payload_len: n, ..repr }.emit(d);
        d[ipv4::HEADER_LEN..].copy_from_slice(&pkt.data()[hl + off..hl + off + n]);
        let mut h = Ipv4Packet::new_unchecked(d);
        h.set_fragment(base + off, off + n < payload || more);
        h.fill_checksum();
        rest.push(f);
    }
    pkt.narrow(0..hl + chunk).expect("the first fragment is within the packet");
    let mut first = Ipv4Packet::new_unchecked(pkt.data_mut());
    first.set_total_len((hl + chunk) as u16);
    first.set_fragment(base, true);
    first.fill_checksum();
    Ok(rest)
}

/// Decrements the TTL or hop limit of the IP packet in `pkt`; a packet that
/// would leave with 0 is dropped.
fn decrement_ttl<B: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut PacketBuf<B>) -> Result<(), DropReason> {
    let data = pkt.data_mut();
    if data[0] >> 4 == 4 {
        let mut ip = Ipv4Packet::new_unchecked(data);
        if ip.ttl() <= 1 {
            return Err(DropReason::TtlExpired);
        }
        ip.decrement_ttl();
    } else {
        let mut ip = Ipv6Packet::new_unchecked(data);
        if ip.hop_limit() <= 1 {
            return Err(DropReason::TtlExpired);
        }
        ip.set_hop_limit(ip.hop_limit() - 1);
    }
    Ok(())
}

/// Clamps the MSS of a TCP SYN in the IP packet `ip` (first fragments and
/// whole packets only).
fn clamp_mss(ip: &mut [u8], mss: u16) {
    let (start, end) = if ip[0] >> 4 == 4 {
        let p = Ipv4Packet::new_unchecked(&*ip);
        if p.frag_offset() != 0 {
            return;
        }
        (p.header_len(), p.total_len())
    } else {
        let p = Ipv6Packet::new_unchecked(&*ip);
        match p.upper_layer() {
            Ok(u) => (u.offset, p.total_len()),
            Err(_) => return,
        }
    };
    tcp::clamp_mss(&mut ip[start..end], mss);
}

/// Puts an Ethernet header for the next hop towards `dst` on port `port`.
fn push_link_header<B: AsRef<[u8]> + AsMut<[u8]>>(
    pkt: &mut PacketBuf<B>,
    port: &PortView,
    dst: IpAddr,
) -> Result<(), DropReason> {
    let mac = port.next_hop_mac(dst).ok_or(DropReason::NoNeighbour)?;
    let ethertype = ether::ethertype_for_ip(pkt.data()).ok_or(DropReason::Malformed)?;
    pkt.push_front(ether::HEADER_LEN).map_err(|_| DropReason::NoRoom)?;
    ether::emit_header(pkt.data_mut(), mac, port.mac, ethertype);
    Ok(())
}
