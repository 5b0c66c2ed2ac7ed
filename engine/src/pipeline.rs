//! What happens to a burst of frames received on one port: strip the link
//! header, decrypt (outside port), check the tunnel's inbound selectors,
//! decide (SPD first, then the route table, else drop), decrement the TTL,
//! encrypt (into a tunnel), and write the next hop's link header. Every
//! drop has a reason, counted per worker and per gateway.
//!
//! The pipeline owns no ports: it turns received frames into frames to send
//! (with their port) and frames to recycle.

use crate::buf::PacketBuf;
use crate::esp;
use crate::lifetime::{LifetimeEvent, Seconds};
use crate::model::{GatewayId, PortId};
use crate::snapshot::{Hop, PortView, Side, Snapshot, Verdict};
use crate::spd::{FiveTuple, FlowCache};
use crate::stats::{DropCounters, DropReason};
use crate::wire::ether::{self, ethertype, EthernetFrame};
use crate::wire::icmp::{self, IcmpError};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::{proto, tcp};
use std::collections::HashMap;
use std::net::IpAddr;

/// One worker's pipeline state: its counters and the lifetime events its
/// SAs raised, for the control thread to collect.
#[derive(Debug)]
pub struct Pipeline {
    pub drops: DropCounters,
    pub gateway_drops: HashMap<GatewayId, DropCounters>,
    pub events: Vec<LifetimeEvent>,
    flows: FlowCache<Verdict>,
}

impl Default for Pipeline {
    fn default() -> Self {
        // 64 K recent flows per worker: 4 MiB.
        Self {
            drops: DropCounters::default(),
            gateway_drops: HashMap::new(),
            events: Vec::new(),
            flows: FlowCache::new(16),
        }
    }
}

/// A frame to transmit, and the port to transmit it on.
pub type Tx<B> = (PortId, PacketBuf<B>);

/// Where a packet is being handled: the snapshot, its gateway, the port it
/// arrived on (ICMP errors are sourced there), and the time.
struct At<'s> {
    snap: &'s Snapshot,
    g: usize,
    rx_port: usize,
    now: Seconds,
}

impl Pipeline {
    /// Processes the frames of `burst`, received on port `rx_port`, with
    /// snapshot `snap` at time `now`. Frames to send are appended to `tx`;
    /// the buffers of dropped frames to `recycle`.
    pub fn process<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        snap: &Snapshot,
        rx_port: PortId,
        burst: impl IntoIterator<Item = PacketBuf<B>>,
        now: Seconds,
        tx: &mut Vec<Tx<B>>,
        recycle: &mut Vec<B>,
    ) {
        let port = snap.port(rx_port);
        let role = port.and_then(|p| snap.ports[p].role);
        for mut pkt in burst {
            let r = match (port, role) {
                (Some(rx_port), Some((g, side))) => self.forward(&At { snap, g, rx_port, now }, side, &mut pkt),
                _ => Err(DropReason::NoRoute),
            };
            match r {
                Ok(port) => tx.push((snap.ports[port].id, pkt)),
                Err(reason) => {
                    self.count(snap, role.map(|(g, _)| g), reason);
                    recycle.push(pkt.into_frame());
                }
            }
        }
    }

    fn count(&mut self, snap: &Snapshot, g: Option<usize>, reason: DropReason) {
        self.drops.count(reason);
        if let Some(g) = g {
            self.gateway_drops.entry(snap.gateways[g].id).or_default().count(reason);
        }
    }

    /// One frame received on the gateway's `side`: the index of the port to
    /// send it on, or why it is dropped.
    fn forward<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        side: Side,
        pkt: &mut PacketBuf<B>,
    ) -> Result<usize, DropReason> {
        strip_link_header(pkt)?;
        let from = match side {
            Side::Inside => None,
            Side::Outside => Some(self.decrypt(at, pkt)?),
        };
        self.route(at, pkt, from)
    }

    /// Decrypts the ESP packet in `pkt`; returns the tunnel it came from.
    fn decrypt<B: AsRef<[u8]> + AsMut<[u8]>>(&mut self, at: &At, pkt: &mut PacketBuf<B>) -> Result<usize, DropReason> {
        let loc = esp::locate(pkt.data())?;
        let inbound = at.snap.inbound.get(&loc.spi).ok_or(DropReason::UnknownSpi)?;
        if at.snap.tunnels[inbound.tunnel].gateway != at.g || !at.snap.gateways[at.g].outside_addrs.contains(&loc.dst) {
            return Err(DropReason::UnknownSpi);
        }
        let mut sa = inbound.sa.lock().expect("SA lock");
        esp::decap(&mut sa, pkt, &loc, at.now, &mut self.events)?;
        Ok(inbound.tunnel)
    }

    /// Forwards the IP packet in `pkt`: SPD first, then the route table.
    /// `from` is the tunnel it was decrypted from, if any.
    fn route<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        from: Option<usize>,
    ) -> Result<usize, DropReason> {
        let (snap, gw) = (at.snap, &at.snap.gateways[at.g]);
        let flow = FiveTuple::of(pkt.data())?;
        if let Some(t) = from {
            if snap.tunnels[t].policy_based && !gw.spd.inbound_allows(Verdict::Protect(t), &flow) {
                return Err(DropReason::Selector);
            }
        }
        let hop = match self.flows.classify(snap.generation, at.g, &gw.spd, &flow) {
            Some(Verdict::Protect(t)) if !snap.tunnels[t].up => return Err(DropReason::TunnelDown),
            Some(Verdict::Protect(t)) => Hop::Tunnel(t),
            Some(Verdict::Discard) => return Err(DropReason::SpdDiscard),
            Some(Verdict::Bypass) | None => gw.routes.lookup(flow.dst).ok_or(DropReason::NoRoute)?,
        };
        if let Hop::Tunnel(t) = hop {
            let max = snap.tunnels[t].max_inner;
            if pkt.len() > max {
                // IPv6, and IPv4 with DF: tell the sender (RFC 1191, RFC
                // 8201). IPv4 without DF is to be fragmented before
                // encryption; not yet: dropped as too big.
                if Ipv4Packet::new_checked(pkt.data()).is_ok_and(|p| !p.dont_frag()) {
                    return Err(DropReason::TooBig);
                }
                let mtu = IcmpError::TooBig { mtu: max.min(u16::MAX as usize) as u16 };
                return self.refuse(at, pkt, DropReason::TooBig, mtu);
            }
        }
        if decrement_ttl(pkt).is_err() {
            return self.refuse(at, pkt, DropReason::TtlExpired, IcmpError::TimeExceeded);
        }
        match hop {
            Hop::Inside => {
                let port = gw.inside_port.ok_or(DropReason::NoRoute)?;
                push_link_header(pkt, &snap.ports[port], flow.dst)?;
                Ok(port)
            }
            Hop::Tunnel(t) => {
                let tunnel = &snap.tunnels[t];
                if let (Some(mss), proto::TCP) = (tunnel.mss_clamp, flow.protocol) {
                    clamp_mss(pkt.data_mut(), mss);
                }
                {
                    let mut sa = tunnel.outbound.lock().expect("SA lock");
                    esp::encap(&mut sa, pkt, at.now, &mut self.events)?;
                }
                push_link_header(pkt, &snap.ports[gw.outside_port], tunnel.peer)?;
                Ok(gw.outside_port)
            }
        }
    }

    /// Drops the packet in `pkt` for `reason`, and answers its source with
    /// `error` where ICMP allows it: then `pkt` holds the error, routed like
    /// any packet of this gateway, and the port to send it on is returned.
    fn refuse<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        at: &At,
        pkt: &mut PacketBuf<B>,
        reason: DropReason,
        error: IcmpError,
    ) -> Result<usize, DropReason> {
        let src = FiveTuple::of(pkt.data()).map_err(|_| reason)?.src;
        let Some(me) = at.snap.ports[at.rx_port].addr_like(src) else { return Err(reason) };
        if !icmp::make_error(pkt, me, error) {
            return Err(reason);
        }
        self.count(at.snap, Some(at.g), reason);
        // The error goes wherever its destination is reached, tunnel or not;
        // no error is ever sent about it.
        self.route(at, pkt, None)
    }
}

/// Checks the Ethernet header and the IP header behind it, and narrows
/// `pkt` to the IP packet (link padding dropped).
fn strip_link_header<B: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut PacketBuf<B>) -> Result<(), DropReason> {
    let eth = EthernetFrame::new_checked(pkt.data()).map_err(|_| DropReason::Malformed)?;
    let (hl, ip) = (eth.header_len(), eth.payload());
    let len = match eth.ethertype() {
        ethertype::IPV4 => {
            let p = Ipv4Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
            if !p.verify_checksum() {
                return Err(DropReason::Malformed);
            }
            p.total_len()
        }
        ethertype::IPV6 => Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?.total_len(),
        _ => return Err(DropReason::NotIp),
    };
    pkt.narrow(hl..hl + len).map_err(|_| DropReason::Malformed)
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
