//! IPv4 headers (RFC 791), options included, with the header checksum.

use super::{be16, checksum, Result, WireError};
use std::net::Ipv4Addr;

/// Byte offsets of the header's fields.
pub mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// The Don't Fragment flag in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A view of an IPv4 packet. After `new_checked`, the header, its options
/// and the total length it claims all lie within the buffer.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Views `buffer` as an IPv4 packet. The buffer may be longer than the
    /// packet (Ethernet padding); `total_len` says where the packet ends.
    /// The checksum is not verified here: see [`Self::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated("ipv4"));
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed("ipv4", "version is not 4"));
        }
        let header_len = ((b[field::VER_IHL] & 0x0f) as usize) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed("ipv4", "header length below 20"));
        }
        let total_len = be16(b, field::LEN) as usize;
        if total_len < header_len {
            return Err(WireError::Malformed("ipv4", "total length below header length"));
        }
        if header_len > b.len() || total_len > b.len() {
            return Err(WireError::Truncated("ipv4"));
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

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        ((self.b()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    pub fn total_len(&self) -> usize {
        be16(self.b(), field::LEN) as usize
    }

    /// The whole TOS byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.tos() & 0b11
    }

    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        be16(self.b(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        ((be16(self.b(), field::FLAGS_FRAG) & 0x1fff) as usize) * 8
    }

    /// True for any fragment of a fragmented packet, the first included.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTO]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[field::SRC], b[field::SRC + 1], b[field::SRC + 2], b[field::SRC + 3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[field::DST], b[field::DST + 1], b[field::DST + 2], b[field::DST + 3])
    }

    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.b()[..self.header_len()]) == 0
    }

    /// The payload, up to `total_len` (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn b_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    pub fn set_tos(&mut self, tos: u8) {
        self.b_mut()[field::TOS] = tos;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.b_mut()[field::LEN..field::LEN + 2].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.b_mut()[field::IDENT..field::IDENT + 2].copy_from_slice(&ident.to_be_bytes());
    }

    /// Marks the packet a fragment at `offset` bytes (a multiple of 8),
    /// with more to follow or not; DF clear.
    pub fn set_fragment(&mut self, offset: usize, more: bool) {
        let w = (offset / 8) as u16 & 0x1fff | if more { FLAG_MF } else { 0 };
        self.b_mut()[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets DF and clears MF and the fragment offset: a whole packet.
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        let w = if dont_frag { FLAG_DF } else { 0 };
        self.b_mut()[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&w.to_be_bytes());
    }

    /// Decrements the TTL (which must be at least 1) and updates the
    /// checksum incrementally (RFC 1624 equation 3).
    pub fn decrement_ttl(&mut self) {
        let old = be16(self.b(), field::TTL);
        self.b_mut()[field::TTL] -= 1;
        let new = be16(self.b(), field::TTL);
        let sum = !self.checksum() as u64 + !old as u64 + new as u64;
        self.set_checksum(checksum::finish(sum));
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.b_mut()[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.b_mut();
        b[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// The meaning of an option-less IPv4 header, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Payload length in bytes (the header is added to make `total_len`).
    pub payload_len: usize,
    pub ttl: u8,
    /// DSCP and ECN, as one byte.
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Writes a 20-byte header with its checksum into `buf[..20]`.
    /// `buf` must hold at least 20 bytes and `payload_len` fit the 16-bit
    /// length field; both are the builder's invariants, so they panic.
    pub fn emit(&self, buf: &mut [u8]) {
        let total = u16::try_from(HEADER_LEN + self.payload_len).expect("IPv4 total length");
        let h = &mut buf[..HEADER_LEN];
        h[field::VER_IHL] = 0x45;
        h[field::TOS] = self.tos;
        h[field::LEN..field::LEN + 2].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT..field::IDENT + 2].copy_from_slice(&self.ident.to_be_bytes());
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        h[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&flags.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTO] = self.protocol;
        h[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 1, 0, 5),
            dst: Ipv4Addr::new(172, 16, 1, 9),
            protocol: 17,
            payload_len: 8,
            ttl: 63,
            tos: 0xb9,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn emit_then_view_round_trips() {
        let mut buf = [0u8; 28];
        repr().emit(&mut buf);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(172, 16, 1, 9));
        assert_eq!((p.dscp(), p.ecn()), (0xb9 >> 2, 1));
        assert_eq!((p.total_len(), p.header_len(), p.ttl()), (28, 20, 63));
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        for ttl in [1u8, 2, 64, 255] {
            for tos in [0u8, 0xff] {
                let mut buf = [0u8; 28];
                Ipv4Repr { ttl, tos, ..repr() }.emit(&mut buf);
                let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
                p.decrement_ttl();
                assert_eq!(p.ttl(), ttl - 1);
                assert!(p.verify_checksum(), "ttl {ttl} tos {tos}");
            }
        }
    }

    #[test]
    fn options_are_skipped() {
        let mut buf = [0u8; 32];
        repr().emit(&mut buf);
        buf[0] = 0x46; // IHL 6: one word of options
        buf[2..4].copy_from_slice(&32u16.to_be_bytes());
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let mut buf = [0u8; 28];
        repr().emit(&mut buf);
        let mut bad = buf;
        bad[0] = 0x65;
        assert!(matches!(Ipv4Packet::new_checked(&bad[..]), Err(WireError::Malformed(..))));
        let mut bad = buf;
        bad[0] = 0x44;
        assert!(matches!(Ipv4Packet::new_checked(&bad[..]), Err(WireError::Malformed(..))));
        let mut bad = buf;
        bad[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert!(matches!(Ipv4Packet::new_checked(&bad[..]), Err(WireError::Malformed(..))));
        bad[2..4].copy_from_slice(&60u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).unwrap_err(), WireError::Truncated("ipv4"));
        let mut bad = buf;
        bad[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&bad[..]).unwrap_err(), WireError::Truncated("ipv4"));
        let mut bad = buf;
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(Ipv4Packet::new_checked(&bad[..]), Err(WireError::Malformed(..))));
        assert!(Ipv4Packet::new_checked(&buf[..19]).is_err());
        let mut bad = buf;
        bad[10] ^= 1;
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }
}
