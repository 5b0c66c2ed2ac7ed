//! ICMP echo (RFC 792 types 8 and 0; ICMPv6 128 and 129, RFC 4443): the
//! health-check probes a gateway sends into a tunnel and answers. Whole IP
//! packets, built and read here; an answer is made in place from the
//! request.

use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr};
use super::{checksum, proto};
use std::net::IpAddr;

/// Type, code, checksum, identifier, sequence number.
pub const HEADER_LEN: usize = 8;
const TTL: u8 = 64;

/// An echo message, as read from an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// A request (else a reply).
    pub request: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ident: u16,
    pub seq: u16,
}

/// The length of an echo request with `payload` bytes of data.
pub fn len(family: IpAddr, payload: usize) -> usize {
    let ip = if family.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    ip + HEADER_LEN + payload
}

/// Writes an echo request from `src` to `dst` with `payload` into the start
/// of `buf` (which must hold [`len`] bytes); returns its length. `src` and
/// `dst` are of one family.
pub fn emit_request(buf: &mut [u8], src: IpAddr, dst: IpAddr, ident: u16, seq: u16, payload: &[u8]) -> usize {
    let n = len(src, payload.len());
    let hl = n - HEADER_LEN - payload.len();
    let icmp = &mut buf[hl..n];
    let ty = if src.is_ipv4() { 8 } else { 128 };
    icmp[..HEADER_LEN].copy_from_slice(&[ty, 0, 0, 0, (ident >> 8) as u8, ident as u8, (seq >> 8) as u8, seq as u8]);
    icmp[HEADER_LEN..].copy_from_slice(payload);
    let payload_len = HEADER_LEN + payload.len();
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let (protocol, ttl, tos, ident, dont_frag) = (proto::ICMP, TTL, 0, seq, false);
            Ipv4Repr { src, dst, protocol, payload_len, ttl, tos, ident, dont_frag }.emit(buf);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let (next_header, hop_limit, traffic_class, flow_label) = (proto::ICMPV6, TTL, 0, 0);
            Ipv6Repr { src, dst, next_header, payload_len, hop_limit, traffic_class, flow_label }.emit(buf);
        }
        _ => panic!("echo from {src} to {dst}: one family"),
    }
    fill_checksum(&mut buf[..n], hl);
    n
}

/// The echo message in the IP packet `ip`, if it is one (unfragmented, with
/// a valid checksum).
pub fn parse(ip: &[u8]) -> Option<Echo> {
    let (src, dst, icmp, v4) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.protocol() != proto::ICMP || p.is_fragment() {
                return None;
            }
            let hl = p.header_len();
            (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()), &ip[hl..p.total_len()], true)
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != proto::ICMPV6 {
                return None;
            }
            (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()), &ip[ipv6::HEADER_LEN..p.total_len()], false)
        }
        _ => return None,
    };
    if icmp.len() < HEADER_LEN || icmp[1] != 0 {
        return None;
    }
    let request = match (icmp[0], v4) {
        (8, true) | (128, false) => true,
        (0, true) | (129, false) => false,
        _ => return None,
    };
    let ok = match (src, dst) {
        (IpAddr::V4(_), _) => checksum::checksum(icmp) == 0,
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::finish(checksum::pseudo_v6(s, d, proto::ICMPV6, icmp.len() as u32) + checksum::sum(icmp)) == 0
        }
        _ => false,
    };
    let word = |i: usize| u16::from_be_bytes([icmp[i], icmp[i + 1]]);
    ok.then(|| Echo { request, src, dst, ident: word(4), seq: word(6) })
}

/// Turns the echo request in `ip` (as [`parse`] read it) into its reply, in
/// place: addresses swapped, a fresh TTL, the reply type, checksums anew.
pub fn answer_in_place(ip: &mut [u8]) {
    if ip[0] >> 4 == 4 {
        let hl = Ipv4Packet::new_unchecked(&*ip).header_len();
        let (s, d) = (ipv4::field::SRC, ipv4::field::DST);
        for i in 0..4 {
            ip.swap(s + i, d + i);
        }
        ip[ipv4::field::TTL] = TTL;
        ip[hl] = 0;
        Ipv4Packet::new_unchecked(&mut *ip).fill_checksum();
        fill_checksum(ip, hl);
    } else {
        for i in 0..16 {
            ip.swap(ipv6::field::SRC.start + i, ipv6::field::DST.start + i);
        }
        ip[ipv6::field::HOP_LIMIT] = TTL;
        ip[ipv6::HEADER_LEN] = 129;
        fill_checksum(ip, ipv6::HEADER_LEN);
    }
}

/// Writes the ICMP checksum of the message at `ip[hl..]`.
fn fill_checksum(ip: &mut [u8], hl: usize) {
    ip[hl + 2..hl + 4].fill(0);
    let c = if ip[0] >> 4 == 4 {
        checksum::checksum(&ip[hl..])
    } else {
        let p = Ipv6Packet::new_unchecked(&*ip);
        let (s, d, n) = (p.src_addr(), p.dst_addr(), (ip.len() - hl) as u32);
        checksum::finish(checksum::pseudo_v6(s, d, proto::ICMPV6, n) + checksum::sum(&ip[hl..]))
    };
    ip[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_round_trip_and_are_answered_in_place() {
        for (a, b) in [("169.254.0.1", "169.254.0.2"), ("fd00:99::1", "fd00:99::2")] {
            let mut buf = vec![0u8; 200];
            let n = emit_request(&mut buf, ip(a), ip(b), 0x1234, 7, b"vpngw probe");
            let pkt = &mut buf[..n];
            let e = parse(pkt).expect("an echo request");
            assert_eq!(e, Echo { request: true, src: ip(a), dst: ip(b), ident: 0x1234, seq: 7 });
            answer_in_place(pkt);
            let r = parse(pkt).expect("a valid reply");
            assert_eq!(r, Echo { request: false, src: ip(b), dst: ip(a), ident: 0x1234, seq: 7 });
            assert!(pkt.ends_with(b"vpngw probe"), "the data comes back");
            if a.contains('.') {
                assert!(Ipv4Packet::new_checked(&*pkt).unwrap().verify_checksum());
            }
        }
    }

    #[test]
    fn other_packets_and_bad_checksums_are_not_echoes() {
        let mut buf = vec![0u8; 100];
        let n = emit_request(&mut buf, ip("10.0.0.1"), ip("10.0.0.2"), 1, 1, &[0; 8]);
        let mut bad = buf[..n].to_vec();
        bad[n - 1] ^= 1;
        assert_eq!(parse(&bad), None, "checksum");
        let mut unreachable = buf[..n].to_vec();
        unreachable[20] = 3;
        assert_eq!(parse(&unreachable), None, "not an echo");
        assert_eq!(parse(&buf[..10]), None, "truncated");
        assert_eq!(parse(&[]), None);
    }
}
