//! The ICMP errors a gateway sends back to a packet's source: IPv4
//! "fragmentation needed" (RFC 1191) and "time exceeded" (RFC 792), ICMPv6
//! "packet too big" and "time exceeded" (RFC 4443). Built in place: the
//! offending packet, cut short, becomes the quote behind new headers.

use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr};
use super::{checksum, proto};
use crate::buf::PacketBuf;
use std::net::IpAddr;

/// Which error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// The packet needs to be at most `mtu` bytes to pass.
    TooBig {
        mtu: u16,
    },
    TimeExceeded,
}

/// ICMP header: type, code, checksum, 4 bytes of data.
const HEADER_LEN: usize = 8;
/// An ICMPv4 error stays within 576 bytes (RFC 1812 section 4.3.2.3).
const V4_MAX: usize = 576;
/// An ICMPv6 error stays within the minimum MTU (RFC 4443 section 2.4).
const V6_MAX: usize = 1280;
const HOP_LIMIT: u8 = 64;

/// Turns the IP packet in `pkt` into `error`, sent from `src` back to the
/// packet's source. Returns false, leaving `pkt` as it was, where no error
/// may be sent (RFC 1122 3.2.2, RFC 4443 2.4): the packet is itself an ICMP
/// error or a non-first fragment, its source is not a unicast address, `src`
/// is of the other family, or the frame has no room.
pub fn make_error<B: AsRef<[u8]> + AsMut<[u8]>>(pkt: &mut PacketBuf<B>, src: IpAddr, error: IcmpError) -> bool {
    match (src, pkt.data().first().map(|b| b >> 4)) {
        (IpAddr::V4(src), Some(4)) => {
            let Ok(p) = Ipv4Packet::new_checked(pkt.data()) else { return false };
            let dst = p.src_addr();
            let is_error =
                p.protocol() == proto::ICMP && p.payload().first().is_some_and(|&t| [3, 4, 5, 11, 12].contains(&t));
            if is_error || p.frag_offset() != 0 || dst.is_unspecified() || dst.is_multicast() || dst.is_broadcast() {
                return false;
            }
            let quote = pkt.len().min(V4_MAX - ipv4::HEADER_LEN - HEADER_LEN);
            let head = ipv4::HEADER_LEN + HEADER_LEN;
            if pkt.headroom() < head {
                return false;
            }
            pkt.narrow(0..quote).expect("quote within the packet");
            pkt.push_front(head).expect("headroom checked");
            let d = pkt.data_mut();
            let (ty, code, data) = match error {
                IcmpError::TooBig { mtu } => (3, 4, [0, 0, (mtu >> 8) as u8, mtu as u8]),
                IcmpError::TimeExceeded => (11, 0, [0; 4]),
            };
            let icmp = &mut d[ipv4::HEADER_LEN..];
            icmp[..8].copy_from_slice(&[ty, code, 0, 0, data[0], data[1], data[2], data[3]]);
            let c = checksum::checksum(icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let (ttl, tos, ident, dont_frag, protocol) = (HOP_LIMIT, 0, 0, false, proto::ICMP);
            Ipv4Repr { src, dst, protocol, payload_len: HEADER_LEN + quote, ttl, tos, ident, dont_frag }.emit(d);
            true
        }
        (IpAddr::V6(src), Some(6)) => {
            let Ok(p) = Ipv6Packet::new_checked(pkt.data()) else { return false };
            let dst = p.src_addr();
            let Ok(up) = p.upper_layer() else { return false };
            let is_error = up.protocol == proto::ICMPV6 && pkt.data().get(up.offset).is_some_and(|&t| t < 128);
            if is_error || dst.is_unspecified() || dst.is_multicast() {
                return false;
            }
            let quote = pkt.len().min(V6_MAX - ipv6::HEADER_LEN - HEADER_LEN);
            let head = ipv6::HEADER_LEN + HEADER_LEN;
            if pkt.headroom() < head {
                return false;
            }
            pkt.narrow(0..quote).expect("quote within the packet");
            pkt.push_front(head).expect("headroom checked");
            let d = pkt.data_mut();
            let (ty, data) = match error {
                IcmpError::TooBig { mtu } => (2, (mtu as u32).to_be_bytes()),
                IcmpError::TimeExceeded => (3, [0; 4]),
            };
            let icmp = &mut d[ipv6::HEADER_LEN..];
            icmp[..8].copy_from_slice(&[ty, 0, 0, 0, data[0], data[1], data[2], data[3]]);
            let len = icmp.len() as u32;
            let c = checksum::finish(checksum::pseudo_v6(src, dst, proto::ICMPV6, len) + checksum::sum(icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let (next_header, hop_limit, traffic_class, flow_label) = (proto::ICMPV6, HOP_LIMIT, 0, 0);
            Ipv6Repr { src, dst, next_header, payload_len: HEADER_LEN + quote, hop_limit, traffic_class, flow_label }
                .emit(d);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_packet(len: usize, protocol: u8) -> Vec<u8> {
        let mut p = vec![0xabu8; len];
        Ipv4Repr {
            src: "10.1.0.5".parse().unwrap(),
            dst: "172.16.1.9".parse().unwrap(),
            protocol,
            payload_len: len - 20,
            ttl: 1,
            tos: 0,
            ident: 7,
            dont_frag: true,
        }
        .emit(&mut p);
        p
    }

    #[test]
    fn fragmentation_needed_quotes_the_packet() {
        let orig = v4_packet(1400, proto::UDP);
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(&orig, 64, 0);
        assert!(make_error(&mut pkt, "10.1.0.1".parse().unwrap(), IcmpError::TooBig { mtu: 1418 }));
        let ip = Ipv4Packet::new_checked(pkt.data()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr().to_string(), ip.dst_addr().to_string()), ("10.1.0.1".into(), "10.1.0.5".into()));
        assert_eq!((ip.protocol(), ip.total_len()), (proto::ICMP, 576));
        let icmp = ip.payload();
        assert_eq!(&icmp[..2], &[3, 4]);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1418);
        assert_eq!(checksum::checksum(icmp), 0);
        assert_eq!(&icmp[8..], &orig[..548]);
    }

    #[test]
    fn packet_too_big_for_ipv6() {
        let mut orig = vec![0u8; 40 + 1500];
        let (src, dst) = ("fd00:1::5".parse().unwrap(), "fd00:16:1::9".parse().unwrap());
        Ipv6Repr {
            src,
            dst,
            next_header: proto::UDP,
            payload_len: 1500,
            hop_limit: 9,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut orig);
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(&orig, 64, 0);
        let me: IpAddr = "fd00:1::1".parse().unwrap();
        assert!(make_error(&mut pkt, me, IcmpError::TooBig { mtu: 1400 }));
        let ip = Ipv6Packet::new_checked(pkt.data()).unwrap();
        assert_eq!((ip.next_header(), ip.total_len(), ip.dst_addr()), (proto::ICMPV6, 1280, src));
        let icmp = ip.payload();
        assert_eq!((icmp[0], u32::from_be_bytes(icmp[4..8].try_into().unwrap())), (2, 1400));
        let IpAddr::V6(me) = me else { unreachable!() };
        assert_eq!(
            checksum::finish(checksum::pseudo_v6(me, src, proto::ICMPV6, icmp.len() as u32) + checksum::sum(icmp)),
            0
        );
    }

    #[test]
    fn no_errors_about_errors_or_from_elsewhere() {
        let mut err = v4_packet(56, proto::ICMP);
        err[20] = 3; // destination unreachable
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(&err, 64, 0);
        assert!(!make_error(&mut pkt, "10.1.0.1".parse().unwrap(), IcmpError::TimeExceeded));
        assert_eq!(pkt.data(), &err[..]);
        let mut echo = v4_packet(56, proto::ICMP);
        echo[20] = 8;
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(&echo, 64, 0);
        assert!(!make_error(&mut pkt, "fd00::1".parse().unwrap(), IcmpError::TimeExceeded), "wrong family");
        let mut tight = PacketBuf::<Vec<u8>>::with_room(&echo, 10, 0);
        assert!(!make_error(&mut tight, "10.1.0.1".parse().unwrap(), IcmpError::TimeExceeded), "no room");
        assert!(make_error(&mut pkt, "10.1.0.1".parse().unwrap(), IcmpError::TimeExceeded));
        assert_eq!(&pkt.data()[20..22], &[11, 0]);
    }
}
