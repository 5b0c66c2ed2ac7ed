//! UDP headers (RFC 768) and their checksums over IPv4 and IPv6.

use super::{be16, checksum, proto, Result, WireError};
use std::net::{IpAddr, Ipv6Addr};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram. After `new_checked` the length field is at
/// least 8 and lies within the buffer.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated("udp"));
        }
        let len = be16(b, 4) as usize;
        if len < HEADER_LEN {
            return Err(WireError::Malformed("udp", "length below 8"));
        }
        if len > b.len() {
            return Err(WireError::Truncated("udp"));
        }
        Ok(Self { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The Length field: header plus payload.
    pub fn length(&self) -> usize {
        be16(self.buffer.as_ref(), 4) as usize
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.length()]
    }

    /// True if the checksum verifies for these addresses. A zero checksum
    /// over IPv4 means "not computed" and verifies; over IPv6 it does not.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let dgram = &self.buffer.as_ref()[..self.length()];
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) if self.checksum() == 0 => true,
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                checksum::finish(checksum::pseudo_v4(s, d, proto::UDP, dgram.len() as u16) + checksum::sum(dgram)) == 0
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.checksum() != 0
                    && checksum::finish(
                        checksum::pseudo_v6(s, d, proto::UDP, dgram.len() as u32) + checksum::sum(dgram),
                    ) == 0
            }
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Views a buffer the caller has just built a header in (a prebuilt
    /// template), without checks: the setter still bound-checks.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Sets the Length field (header plus payload).
    pub fn set_length(&mut self, len: u16) {
        self.buffer.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes a UDP header for a payload of `payload_len` bytes into `buf[..8]`,
/// with checksum 0 (to be filled by [`fill_checksum_v6`] where one is needed).
pub fn emit_header(buf: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) {
    let len = u16::try_from(HEADER_LEN + payload_len).expect("UDP length");
    buf[0..2].copy_from_slice(&src_port.to_be_bytes());
    buf[2..4].copy_from_slice(&dst_port.to_be_bytes());
    buf[4..6].copy_from_slice(&len.to_be_bytes());
    buf[6..8].fill(0);
}

/// Computes and writes the checksum of the datagram `dgram` (header and
/// payload) sent over IPv6, where it is mandatory (RFC 8200 section 8.1).
pub fn fill_checksum_v6(dgram: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    dgram[6..8].fill(0);
    let mut c = checksum::finish(checksum::pseudo_v6(src, dst, proto::UDP, dgram.len() as u32) + checksum::sum(dgram));
    if c == 0 {
        c = 0xffff;
    }
    dgram[6..8].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn header_round_trip_and_checksums() {
        let mut d = [0u8; 12];
        emit_header(&mut d, 4500, 4501, 4);
        d[8..].copy_from_slice(&[1, 2, 3, 4]);
        let (s4, d4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("2001:db8::1".parse().unwrap(), "2001:db8:1::1".parse().unwrap());
        {
            let u = UdpPacket::new_checked(&d[..]).unwrap();
            assert_eq!((u.src_port(), u.dst_port(), u.length(), u.payload()), (4500, 4501, 12, &[1, 2, 3, 4][..]));
            assert!(u.verify_checksum(s4.into(), d4.into()), "zero means none over IPv4");
            assert!(!u.verify_checksum(s6.into(), d6.into()), "zero is invalid over IPv6");
        }
        fill_checksum_v6(&mut d, s6, d6);
        assert!(UdpPacket::new_checked(&d[..]).unwrap().verify_checksum(s6.into(), d6.into()));
        d[9] ^= 0xff;
        assert!(!UdpPacket::new_checked(&d[..]).unwrap().verify_checksum(s6.into(), d6.into()));
        UdpPacket::new_unchecked(&mut d[..]).set_length(11);
        assert!(UdpPacket::new_checked(&d[..]).unwrap().payload().len() == 3);
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut d = [0u8; 8];
        emit_header(&mut d, 1, 2, 0);
        assert!(UdpPacket::new_checked(&d[..7]).is_err());
        d[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&d[..]).is_err());
        d[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&d[..]).is_err());
    }
}
