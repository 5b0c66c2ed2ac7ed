//! Tunnel-mode ESP (RFC 4303): encapsulation and decapsulation for IPv4 and
//! IPv6 inside IPv4 and IPv6, optionally in UDP (RFC 3948), with ECN
//! handled as RFC 6040 normal mode says.
//!
//! Both directions work in place on a [`PacketBuf`]: encapsulation pushes
//! the outer headers into the headroom and the trailer into the tailroom;
//! decapsulation narrows the buffer to the inner packet. Every refusal is a
//! [`DropReason`], counted on the SA when it is the SA's.

use crate::buf::PacketBuf;
use crate::crypto::{Authenticated, ICV_LEN, MAX_BLOCK_LEN, MAX_IV_LEN};
use crate::sa::{InboundSa, LifetimeEvent, LimitKind, NatT, OutboundSa, SaConfig, Seconds};
use crate::stats::DropReason;
use crate::wire::esp::{self as esp_wire, EspPacket, TrailerError, HEADER_LEN, TRAILER_LEN};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::{checksum, proto, udp};
use std::net::IpAddr;

/// Most headroom encapsulation needs: outer IPv6, UDP, ESP header and the
/// longest IV.
pub const MAX_HEADROOM: usize = ipv6::HEADER_LEN + udp::HEADER_LEN + HEADER_LEN + MAX_IV_LEN;
/// Most tailroom encapsulation needs: padding, trailer and ICV.
pub const MAX_TAILROOM: usize = MAX_BLOCK_LEN - 1 + TRAILER_LEN + ICV_LEN;

/// Fixed bytes encapsulation adds under `cfg`: outer IP, UDP, ESP header,
/// IV, trailer and ICV (the padding comes on top).
fn overhead(cfg: &SaConfig) -> usize {
    let ip = if cfg.remote.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    let udp = if cfg.natt.is_some() { udp::HEADER_LEN } else { 0 };
    ip + udp + HEADER_LEN + cfg.suite.iv_len() + TRAILER_LEN + ICV_LEN
}

/// The length of the outer packet that encapsulating `inner_len` bytes
/// with `cfg` makes.
pub fn encap_len(cfg: &SaConfig, inner_len: usize) -> usize {
    overhead(cfg) + inner_len + esp_wire::pad_len(inner_len, cfg.suite.block_len())
}

/// The largest inner packet whose encapsulation with `cfg` fits `mtu`:
/// what "fragmentation needed" and "packet too big" report.
pub fn max_inner_len(cfg: &SaConfig, mtu: usize) -> usize {
    // inner + pad + 2 must be a multiple of the suite's block (RFC 4303 2.4).
    let align = cfg.suite.block_len();
    let room = mtu.saturating_sub(overhead(cfg) - TRAILER_LEN);
    (room - room % align).saturating_sub(TRAILER_LEN)
}

/// Encapsulates the inner IP packet in `pkt` with `sa` and returns the
/// sequence number it was sent with. Lifetime events are pushed to `events`.
pub fn encap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut OutboundSa,
    pkt: &mut PacketBuf<B>,
    now: Seconds,
    events: &mut Vec<LifetimeEvent>,
) -> Result<u64, DropReason> {
    let r = encap_packet(sa, pkt, now, events);
    if let Err(reason) = r {
        sa.state.drops.count(reason);
    }
    r
}

fn encap_packet<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut OutboundSa,
    pkt: &mut PacketBuf<B>,
    now: Seconds,
    events: &mut Vec<LifetimeEvent>,
) -> Result<u64, DropReason> {
    let cfg = &sa.cfg;
    sa.state.lifetime.admit(now, events)?;
    let seq = sa.state.next_seq;
    if seq > cfg.max_seq() {
        return Err(DropReason::Expired);
    }

    // What the outer header copies from the inner one: DSCP and ECN (RFC
    // 6040 normal mode copies the ECN field) and, for IPv4, DF.
    let inner = pkt.data();
    let (next_header, tos, dont_frag) = match inner.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(inner).map_err(|_| DropReason::Malformed)?;
            if ip.total_len() != inner.len() {
                return Err(DropReason::Malformed);
            }
            (proto::IPV4, ip.tos(), ip.dont_frag())
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(inner).map_err(|_| DropReason::Malformed)?;
            if ip.total_len() != inner.len() {
                return Err(DropReason::Malformed);
            }
            (proto::IPV6, ip.traffic_class(), true)
        }
        _ => return Err(DropReason::Malformed),
    };

    let inner_len = inner.len();
    let iv_len = cfg.suite.iv_len();
    let pad = esp_wire::pad_len(inner_len, cfg.suite.block_len());
    let plain_len = inner_len + pad + TRAILER_LEN;
    let esp_len = HEADER_LEN + iv_len + plain_len + ICV_LEN;
    let udp_len = if cfg.natt.is_some() { udp::HEADER_LEN } else { 0 };
    let ip_len = if cfg.remote.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    // IPv4 counts its header in the 16-bit total length; IPv6 does not.
    let max_ip_payload = u16::MAX as usize - if cfg.remote.is_ipv4() { ipv4::HEADER_LEN } else { 0 };
    if udp_len + esp_len > max_ip_payload {
        return Err(DropReason::TooBig);
    }
    let head = ip_len + udp_len + HEADER_LEN + iv_len;
    let tail = pad + TRAILER_LEN + ICV_LEN;
    if pkt.headroom() < head || pkt.tailroom() < tail {
        return Err(DropReason::NoRoom);
    }
    pkt.push_front(head).expect("headroom checked");
    pkt.push_back(tail).expect("tailroom checked");
    let buf = pkt.data_mut();

    esp_wire::emit_trailer(&mut buf[head + inner_len..head + plain_len], next_header);
    let esp_at = ip_len + udp_len;
    esp_wire::emit_header(&mut buf[esp_at..], cfg.spi, seq as u32);
    // The IV: the 64-bit sequence number for the AEADs (unique under the
    // key, as RFC 4106 section 3.1 and RFC 7634 section 2 require), that
    // number encrypted for AES-CBC (unpredictable, RFC 3602 section 3).
    let (front, body) = buf.split_at_mut(head);
    let iv = &mut front[esp_at + HEADER_LEN..];
    sa.cipher.iv(seq, iv);
    let auth = Authenticated { spi: cfg.spi, seq, esn: cfg.esn };
    let icv = sa.cipher.seal(&auth, iv, &mut body[..plain_len]);
    body[plain_len..].copy_from_slice(&icv);

    sa.outer.write(buf, tos, dont_frag, seq as u16, esp_len);
    if let (Some(_), IpAddr::V6(src), IpAddr::V6(dst)) = (cfg.natt, cfg.local, cfg.remote) {
        // RFC 3948's zero checksum is for IPv4; IPv6 needs a real one.
        udp::fill_checksum_v6(&mut buf[ip_len..], src, dst);
    }

    let st = &mut sa.state;
    if seq == cfg.max_seq() {
        // RFC 4303 section 3.3.3: the counter must not cycle.
        st.lifetime.expire(LimitKind::SequenceSpace, events);
    } else {
        st.next_seq = seq + 1;
    }
    if seq == st.seq_warn {
        st.lifetime.warn(LimitKind::SequenceSpace, events);
    }
    st.lifetime.account(inner_len, now, events);
    Ok(seq)
}

/// The outer IP (and UDP) header of an outbound SA, built once, as VPP
/// prebuilds it: encapsulation copies it and patches only what varies per
/// packet (DSCP/ECN, lengths, IPv4 ID and DF), updating the IPv4 checksum
/// from the precomputed sum of the fixed fields.
#[derive(Debug, Clone)]
pub(crate) struct OuterHeader {
    bytes: [u8; ipv6::HEADER_LEN + udp::HEADER_LEN],
    ip_len: usize,
    udp_len: usize,
    /// IPv4 only: checksum sum of the header with the varying fields zero.
    fixed_sum: u64,
}

impl OuterHeader {
    pub(crate) fn new(cfg: &SaConfig) -> Self {
        let mut bytes = [0u8; ipv6::HEADER_LEN + udp::HEADER_LEN];
        let protocol = if cfg.natt.is_some() { proto::UDP } else { proto::ESP };
        let ip_len = match (cfg.local, cfg.remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let (ttl, tos, ident, dont_frag) = (cfg.outer_ttl, 0, 0, false);
                Ipv4Repr { src, dst, protocol, payload_len: 0, ttl, tos, ident, dont_frag }.emit(&mut bytes);
                bytes[2..4].fill(0); // total length: per packet
                bytes[10..12].fill(0); // checksum: per packet
                ipv4::HEADER_LEN
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let (hop_limit, traffic_class, flow_label) = (cfg.outer_ttl, 0, 0);
                Ipv6Repr { src, dst, next_header: protocol, payload_len: 0, hop_limit, traffic_class, flow_label }
                    .emit(&mut bytes);
                ipv6::HEADER_LEN
            }
            _ => unreachable!("SaConfig::validate refuses mixed families"),
        };
        let udp_len = match cfg.natt {
            Some(n) => {
                udp::emit_header(&mut bytes[ip_len..], n.src_port, n.dst_port, 0);
                udp::HEADER_LEN
            }
            None => 0,
        };
        let fixed_sum = if ip_len == ipv4::HEADER_LEN { checksum::sum(&bytes[..ip_len]) } else { 0 };
        Self { bytes, ip_len, udp_len, fixed_sum }
    }

    /// Writes the header for an ESP packet of `esp_len` bytes into `buf`.
    #[inline]
    fn write(&self, buf: &mut [u8], tos: u8, dont_frag: bool, ident: u16, esp_len: usize) {
        let (ip_len, udp_len) = (self.ip_len, self.udp_len);
        let hdr = &mut buf[..ip_len + udp_len];
        hdr.copy_from_slice(&self.bytes[..ip_len + udp_len]);
        let ip_payload = (udp_len + esp_len) as u16;
        if udp_len != 0 {
            udp::UdpPacket::new_unchecked(&mut hdr[ip_len..]).set_length(ip_payload);
        }
        if ip_len == ipv4::HEADER_LEN {
            let total = ipv4::HEADER_LEN as u16 + ip_payload;
            let flags = if dont_frag { ipv4::FLAG_DF } else { 0 };
            let mut ip = Ipv4Packet::new_unchecked(hdr);
            ip.set_tos(tos);
            ip.set_total_len(total);
            ip.set_ident(ident);
            ip.set_unfragmented(dont_frag);
            // The sum of the fixed fields plus the words that vary (tos is
            // the low byte of the first word, flags the whole fourth one).
            let sum = self.fixed_sum + tos as u64 + total as u64 + ident as u64 + flags as u64;
            ip.set_checksum(checksum::finish(sum));
        } else {
            let mut ip = Ipv6Packet::new_unchecked(hdr);
            ip.set_traffic_class(tos);
            ip.set_payload_len(ip_payload);
        }
    }
}

/// Where ESP sits in a received outer packet, and what the SA lookup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspLocation {
    pub spi: u32,
    /// The sequence number's low 32 bits, as on the wire.
    pub seq_low: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The UDP ports the peer used, for ESP in UDP.
    pub natt: Option<NatT>,
    /// Offset of the ESP header in the packet.
    pub esp_offset: usize,
    /// Length of the outer packet (bytes past it are link padding).
    pub outer_len: usize,
    /// The outer ECN field, for RFC 6040 decapsulation.
    pub outer_ecn: u8,
}

/// Parses the outer headers of a received packet down to ESP. Outer IPv4
/// needs a valid header checksum; fragments are refused (no reassembly);
/// UDP that is IKE (non-ESP marker) or a NAT keepalive is `NotEsp`.
pub fn locate(packet: &[u8]) -> Result<EspLocation, DropReason> {
    let malformed = |_| DropReason::Malformed;
    let (src, dst, protocol, offset, outer_len, outer_ecn) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).map_err(malformed)?;
            if !ip.verify_checksum() {
                return Err(DropReason::Malformed);
            }
            if ip.is_fragment() {
                return Err(DropReason::Fragment);
            }
            (ip.src_addr().into(), ip.dst_addr().into(), ip.protocol(), ip.header_len(), ip.total_len(), ip.ecn())
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).map_err(malformed)?;
            let upper = ip.upper_layer().map_err(malformed)?;
            if upper.fragment {
                return Err(DropReason::Fragment);
            }
            (ip.src_addr().into(), ip.dst_addr().into(), upper.protocol, upper.offset, ip.total_len(), ip.ecn())
        }
        _ => return Err(DropReason::Malformed),
    };
    let (esp_offset, natt) = match protocol {
        proto::ESP => (offset, None),
        proto::UDP => {
            let u = udp::UdpPacket::new_checked(&packet[offset..outer_len]).map_err(malformed)?;
            if offset + u.length() != outer_len {
                return Err(DropReason::Malformed);
            }
            let payload = u.payload();
            // RFC 3948 section 2.2 (keepalive) and 2.3 (non-ESP marker).
            if payload == [0xff] || payload.get(..4) == Some(&[0; 4]) {
                return Err(DropReason::NotEsp);
            }
            (offset + udp::HEADER_LEN, Some(NatT { src_port: u.src_port(), dst_port: u.dst_port() }))
        }
        _ => return Err(DropReason::NotEsp),
    };
    let esp = EspPacket::new_checked(&packet[esp_offset..outer_len]).map_err(malformed)?;
    Ok(EspLocation { spi: esp.spi(), seq_low: esp.seq(), src, dst, natt, esp_offset, outer_len, outer_ecn })
}

/// Decapsulates the ESP packet `pkt` (located by [`locate`]) with `sa`: on
/// success `pkt` is narrowed to the inner IP packet, and the full sequence
/// number is returned. Lifetime events are pushed to `events`.
///
/// Order (RFC 4303 section 3.4): lifetime, replay pre-check, ICV, window
/// update, trailer, inner packet.
pub fn decap<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut InboundSa,
    pkt: &mut PacketBuf<B>,
    loc: &EspLocation,
    now: Seconds,
    events: &mut Vec<LifetimeEvent>,
) -> Result<u64, DropReason> {
    let r = decap_packet(sa, pkt, loc, now, events);
    if let Err(reason) = r {
        sa.state.drops.count(reason);
    }
    r
}

fn decap_packet<B: AsRef<[u8]> + AsMut<[u8]>>(
    sa: &mut InboundSa,
    pkt: &mut PacketBuf<B>,
    loc: &EspLocation,
    now: Seconds,
    events: &mut Vec<LifetimeEvent>,
) -> Result<u64, DropReason> {
    let cfg = &sa.cfg;
    let st = &mut sa.state;
    st.lifetime.admit(now, events)?;
    // The encapsulation must be the SA's: UDP to its port (RFC 3948; the
    // peer's port may change behind a NAT), or raw ESP.
    match (cfg.natt, loc.natt) {
        (None, None) => {}
        (Some(want), Some(got)) if want.dst_port == got.dst_port => {}
        _ => return Err(DropReason::EncapMismatch),
    }
    if loc.outer_len > pkt.len() || loc.esp_offset > loc.outer_len {
        return Err(DropReason::Malformed);
    }
    let esp_len = loc.outer_len - loc.esp_offset;
    let iv_len = cfg.suite.iv_len();
    let body_len = esp_len.checked_sub(HEADER_LEN + iv_len + ICV_LEN).ok_or(DropReason::Malformed)?;
    if body_len < TRAILER_LEN || body_len % cfg.suite.block_len() != 0 {
        return Err(DropReason::Malformed);
    }

    let seq = st.window.infer(loc.seq_low).ok_or(DropReason::Replay)?;
    st.window.check(seq).map_err(|_| DropReason::Replay)?;

    let esp = &mut pkt.data_mut()[loc.esp_offset..loc.outer_len];
    let (head, rest) = esp.split_at_mut(HEADER_LEN + iv_len);
    let iv = &head[HEADER_LEN..];
    let (body, icv) = rest.split_at_mut(rest.len() - ICV_LEN);
    let icv: &[u8; ICV_LEN] = (&*icv).try_into().expect("16 bytes");
    let auth = Authenticated { spi: cfg.spi, seq, esn: cfg.esn };
    sa.cipher.open(&auth, iv, body, icv).map_err(|_| DropReason::Icv)?;
    // Authentic: only now may the window move (RFC 4303 section 3.4.3).
    st.window.update(seq);

    let trailer = esp_wire::parse_trailer(body).map_err(|e| match e {
        TrailerError::Malformed => DropReason::Malformed,
        TrailerError::Padding => DropReason::Padding,
    })?;
    let inner = &mut body[..trailer.payload_len];
    let inner_len = match trailer.next_header {
        proto::IPV4 => {
            let mut ip = Ipv4Packet::new_checked(&mut *inner).map_err(|_| DropReason::Malformed)?;
            if !ip.verify_checksum() {
                return Err(DropReason::Malformed);
            }
            let ecn = ecn_decap(loc.outer_ecn, ip.ecn()).ok_or(DropReason::EcnNotEct)?;
            if ecn != ip.ecn() {
                ip.set_tos(ip.tos() & !0b11 | ecn);
                ip.fill_checksum();
            }
            // Anything after total_len is TFC padding (RFC 4303 section 2.7).
            ip.total_len()
        }
        proto::IPV6 => {
            let mut ip = Ipv6Packet::new_checked(&mut *inner).map_err(|_| DropReason::Malformed)?;
            let ecn = ecn_decap(loc.outer_ecn, ip.ecn()).ok_or(DropReason::EcnNotEct)?;
            if ecn != ip.ecn() {
                ip.set_traffic_class(ip.traffic_class() & !0b11 | ecn);
            }
            ip.total_len()
        }
        proto::IPV6_NONXT => return Err(DropReason::Dummy),
        _ => return Err(DropReason::Malformed),
    };

    st.lifetime.account(inner_len, now, events);
    let start = loc.esp_offset + HEADER_LEN + iv_len;
    pkt.narrow(start..start + inner_len).expect("inner packet lies inside the ESP payload");
    Ok(seq)
}

/// The inner ECN field after decapsulation (RFC 6040 section 4.2, figure
/// 4), or `None` where the packet must be dropped: CE outside a Not-ECT
/// packet.
fn ecn_decap(outer: u8, inner: u8) -> Option<u8> {
    const NOT_ECT: u8 = 0b00;
    const ECT1: u8 = 0b01;
    const ECT0: u8 = 0b10;
    const CE: u8 = 0b11;
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (_, CE) => Some(CE),
        (ECT0, ECT1) => Some(ECT1),
        (inner, _) => Some(inner),
    }
}

#[cfg(test)]
mod tests;
