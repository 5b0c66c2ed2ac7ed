//! IPv6 headers (RFC 8200), and the walk over extension headers that finds
//! the upper-layer payload.

use super::{be16, be32, proto, Result, WireError};
use std::net::Ipv6Addr;

/// Byte offsets of the header's fields.
pub mod field {
    use core::ops::Range;
    pub const VER_TC_FL: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// At most this many extension headers are walked; more is treated as
/// malformed, so a hostile chain cannot make the walk expensive.
const MAX_EXT_HEADERS: usize = 8;

/// A view of an IPv6 packet. After `new_checked`, the fixed header and the
/// payload length it claims lie within the buffer.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

/// Where the upper-layer payload of an IPv6 packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The protocol of the payload (the last Next Header).
    pub protocol: u8,
    /// Offset of the payload from the start of the IPv6 header.
    pub offset: usize,
    /// True if the packet is a fragment (the first too); an atomic fragment
    /// (RFC 6946) is not.
    pub fragment: bool,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Views `buffer` as an IPv6 packet. The buffer may be longer than the
    /// packet; the payload length says where it ends. Jumbograms are not
    /// supported: a payload length of 0 means an empty payload.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated("ipv6"));
        }
        if b[field::VER_TC_FL] >> 4 != 6 {
            return Err(WireError::Malformed("ipv6", "version is not 6"));
        }
        if HEADER_LEN + be16(b, field::PAYLOAD_LEN) as usize > b.len() {
            return Err(WireError::Truncated("ipv6"));
        }
        Ok(Self { buffer })
    }

    /// Views a buffer already known to hold a valid header (one the caller
    /// built or checked), without checks; accessors still bound-check.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        ((be16(self.b(), 0) >> 4) & 0xff) as u8
    }

    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0b11
    }

    pub fn flow_label(&self) -> u32 {
        be32(self.b(), 0) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> usize {
        be16(self.b(), field::PAYLOAD_LEN) as usize
    }

    /// Header plus payload: where the packet ends in the buffer.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HDR]
    }

    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        let o: [u8; 16] = self.b()[field::SRC].try_into().expect("16 bytes");
        Ipv6Addr::from(o)
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        let o: [u8; 16] = self.b()[field::DST].try_into().expect("16 bytes");
        Ipv6Addr::from(o)
    }

    /// Walks Hop-by-Hop, Routing, Destination Options, Fragment and AH
    /// headers to the upper-layer payload. Stops at a non-first fragment,
    /// whose payload is not a header. Every length is checked.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = &self.b()[..self.total_len()];
        let mut next = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment = false;
        // One pass per extension header, and one for the upper layer.
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match next {
                proto::HOPOPT if at != HEADER_LEN => {
                    return Err(WireError::Malformed("ipv6", "hop-by-hop header not first"))
                }
                proto::HOPOPT | proto::IPV6_ROUTE | proto::IPV6_OPTS => {
                    let h = b.get(at..at + 2).ok_or(WireError::Truncated("ipv6 extension"))?;
                    (h[1] as usize + 1) * 8
                }
                proto::AH => {
                    let h = b.get(at..at + 2).ok_or(WireError::Truncated("ipv6 ah"))?;
                    (h[1] as usize + 2) * 4
                }
                proto::IPV6_FRAG => {
                    let h = b.get(at..at + 8).ok_or(WireError::Truncated("ipv6 fragment"))?;
                    let (offset, more) = (be16(h, 2) & 0xfff8, be16(h, 2) & 1 != 0);
                    // An atomic fragment (offset 0, M clear) is a whole
                    // packet, processed as one (RFC 6946).
                    fragment |= offset != 0 || more;
                    if offset != 0 {
                        // A non-first fragment: what follows is not a header.
                        return Ok(UpperLayer { protocol: h[0], offset: at + 8, fragment });
                    }
                    8
                }
                _ => return Ok(UpperLayer { protocol: next, offset: at, fragment }),
            };
            if at + len > b.len() {
                return Err(WireError::Truncated("ipv6 extension"));
            }
            next = b[at];
            at += len;
        }
        Err(WireError::Malformed("ipv6", "too many extension headers"))
    }

    /// The payload after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the traffic class (DSCP and ECN), keeping version and flow label.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let w = be16(b, 0) & 0xf00f | (tc as u16) << 4;
        b[0..2].copy_from_slice(&w.to_be_bytes());
    }
}

/// The meaning of a fixed IPv6 header, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Writes the 40-byte header into `buf[..40]`. `buf` must hold 40 bytes
    /// and `payload_len` fit 16 bits: builder invariants, so they panic.
    pub fn emit(&self, buf: &mut [u8]) {
        let plen = u16::try_from(self.payload_len).expect("IPv6 payload length");
        let h = &mut buf[..HEADER_LEN];
        let w = 6u32 << 28 | (self.traffic_class as u32) << 20 | (self.flow_label & 0x000f_ffff);
        h[0..4].copy_from_slice(&w.to_be_bytes());
        h[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2].copy_from_slice(&plen.to_be_bytes());
        h[field::NEXT_HDR] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], payload: usize) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + ext.len() + payload];
        Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8:1::1".parse().unwrap(),
            next_header: next,
            payload_len: ext.len() + payload,
            hop_limit: 64,
            traffic_class: 0xb8 | 2,
            flow_label: 0x12345,
        }
        .emit(&mut buf);
        buf[HEADER_LEN..HEADER_LEN + ext.len()].copy_from_slice(ext);
        buf
    }

    #[test]
    fn fixed_header_fields() {
        let mut b = packet(proto::UDP, &[], 8);
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.traffic_class(), p.ecn(), p.flow_label()), (0xba, 2, 0x12345));
        assert_eq!((p.payload_len(), p.hop_limit()), (8, 64));
        assert_eq!(p.dst_addr(), "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        p.set_traffic_class(0x01);
        assert_eq!((p.traffic_class(), p.flow_label()), (0x01, 0x12345));
        assert_eq!(p.upper_layer().unwrap(), UpperLayer { protocol: proto::UDP, offset: 40, fragment: false });
    }

    /// RFC 8200 section 4: Hop-by-Hop, Destination Options and a first
    /// Fragment header in front of ESP.
    #[test]
    fn walks_extension_headers_to_esp() {
        let mut ext = vec![proto::IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0]; // HBH, PadN
        ext.extend_from_slice(&[proto::IPV6_FRAG, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[proto::ESP, 0, 0, 1, 0, 0, 0, 7]); // fragment, offset 0, M=1
        let b = packet(proto::HOPOPT, &ext, 16);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(u, UpperLayer { protocol: proto::ESP, offset: 40 + 32, fragment: true });
    }

    /// RFC 6946: offset 0 and M clear is a whole packet.
    #[test]
    fn atomic_fragment_is_not_a_fragment() {
        let ext = [proto::ESP, 0, 0, 0, 0, 0, 0, 9];
        let b = packet(proto::IPV6_FRAG, &ext, 8);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(u, UpperLayer { protocol: proto::ESP, offset: 48, fragment: false });
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        let ext = [proto::UDP, 0, 0x00, 0x08, 0, 0, 0, 1]; // offset 1 (8 bytes)
        let b = packet(proto::IPV6_FRAG, &ext, 8);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert!(u.fragment);
        assert_eq!(u.offset, 48);
    }

    #[test]
    fn hostile_chains_are_errors() {
        // An extension header longer than the packet.
        let b = packet(proto::IPV6_OPTS, &[proto::UDP, 9, 0, 0, 0, 0, 0, 0], 0);
        assert!(Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().is_err());
        // Hop-by-Hop after the first position.
        let b = packet(proto::IPV6_OPTS, &[proto::HOPOPT, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0], 0);
        assert!(Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().is_err());
        // A long chain of destination options: 8 are walked, 9 are refused.
        for (n, ok) in [(MAX_EXT_HEADERS, true), (MAX_EXT_HEADERS + 1, false)] {
            let mut ext = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { proto::ESP } else { proto::IPV6_OPTS };
                ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            }
            let b = packet(proto::IPV6_OPTS, &ext, 8);
            assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer().is_ok(), ok, "{n} headers");
        }
        // Payload length beyond the buffer; wrong version.
        let mut b = packet(proto::UDP, &[], 8);
        assert!(Ipv6Packet::new_checked(&b[..47]).is_err());
        b[0] = 0x40;
        assert!(Ipv6Packet::new_checked(&b[..]).is_err());
    }
}
