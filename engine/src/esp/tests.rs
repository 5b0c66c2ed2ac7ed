//! Round trips and refusals of tunnel-mode ESP, vpngw against itself. The
//! checks against independent implementations (Scapy fixtures, tshark) are
//! in `engine/tests/` and `scripts/interop/`.

use super::*;
use crate::crypto::Suite;
use crate::sa::{Direction, Expiry, InboundSa, OutboundSa, SaConfig};
use crate::sad::InboundSad;
use crate::wire::ipv4::Ipv4Repr;

const V4_LOCAL: &str = "192.0.2.1";
const V4_REMOTE: &str = "198.51.100.1";
const V6_LOCAL: &str = "2001:db8::1";
const V6_REMOTE: &str = "2001:db8:1::1";

fn keymat(suite: Suite) -> Vec<u8> {
    (0..suite.keymat_len()).map(|i| (i * 7 + 3) as u8).collect()
}

/// An outbound SA and the inbound SA that matches it at the peer.
fn pair(suite: Suite, outer_v6: bool, tweak: impl Fn(&mut SaConfig)) -> (OutboundSa, InboundSa) {
    let (l, r) = if outer_v6 { (V6_LOCAL, V6_REMOTE) } else { (V4_LOCAL, V4_REMOTE) };
    let mut out = SaConfig::new(0x1001, Direction::Outbound, suite, l.parse().unwrap(), r.parse().unwrap());
    tweak(&mut out);
    let mut inb = out.clone();
    inb.direction = Direction::Inbound;
    (inb.local, inb.remote) = (out.remote, out.local);
    (OutboundSa::new(out, &keymat(suite), 0).unwrap(), InboundSa::new(inb, &keymat(suite), 0).unwrap())
}

fn inner_v4(payload_len: usize, tos: u8) -> Vec<u8> {
    let mut p = vec![0u8; 20 + payload_len];
    Ipv4Repr {
        src: "10.1.0.5".parse().unwrap(),
        dst: "172.16.1.9".parse().unwrap(),
        protocol: proto::UDP,
        payload_len,
        ttl: 64,
        tos,
        ident: 77,
        dont_frag: true,
    }
    .emit(&mut p);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn inner_v6(payload_len: usize, tc: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload_len];
    Ipv6Repr {
        src: "fd00:1::5".parse().unwrap(),
        dst: "fd00:16:1::9".parse().unwrap(),
        next_header: proto::UDP,
        payload_len,
        hop_limit: 64,
        traffic_class: tc,
        flow_label: 7,
    }
    .emit(&mut p);
    p
}

fn room(p: &[u8]) -> PacketBuf<Vec<u8>> {
    PacketBuf::<Vec<u8>>::with_room(p, MAX_HEADROOM, MAX_TAILROOM)
}

/// Encapsulates `inner` and decapsulates it again; returns the outer bytes.
fn round_trip(out: &mut OutboundSa, inb: &mut InboundSa, inner: &[u8]) -> Vec<u8> {
    let mut ev = Vec::new();
    let mut pkt = room(inner);
    let seq = encap(out, &mut pkt, 0, &mut ev).unwrap();
    let outer = pkt.data().to_vec();
    let loc = locate(&outer).unwrap();
    assert_eq!((loc.spi, loc.seq_low as u64), (0x1001, seq & 0xffff_ffff));
    assert_eq!(decap(inb, &mut pkt, &loc, 0, &mut ev), Ok(seq));
    assert_eq!(pkt.data(), inner);
    assert!(ev.is_empty());
    outer
}

/// All four inner x outer combinations, every suite, every pad length,
/// with and without UDP encapsulation.
#[test]
fn every_combination_round_trips() {
    for suite in Suite::ALL {
        for outer_v6 in [false, true] {
            for natt in [false, true] {
                let (mut out, mut inb) = pair(suite, outer_v6, |c| c.natt = natt.then_some(NatT::DEFAULT));
                let (iv, block) = (suite.iv_len(), suite.block_len());
                for len in 0..18 {
                    for inner in [inner_v4(len, 0), inner_v6(len, 0)] {
                        let outer = round_trip(&mut out, &mut inb, &inner);
                        let ip_len = if outer_v6 { 40 } else { 20 };
                        let udp_len = if natt { 8 } else { 0 };
                        let esp_len = outer.len() - ip_len - udp_len;
                        // RFC 4303 2.4: payload + pad + 2 is aligned to 4,
                        // or to the cipher's block.
                        assert_eq!((esp_len - 8 - iv - 16) % block, 0, "{suite}");
                        assert!(esp_len - 8 - iv - 16 - inner.len() - 2 < block, "{suite}");
                    }
                }
            }
        }
    }
}

fn inner_v4_df(payload_len: usize, tos: u8, dont_frag: bool) -> Vec<u8> {
    let mut p = inner_v4(payload_len, tos);
    Ipv4Packet::new_unchecked(&mut p[..]).set_unfragmented(dont_frag);
    Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

/// The MTU arithmetic agrees with what encapsulation really produces.
#[test]
fn encapsulated_lengths_and_the_largest_inner_packet() {
    for (suite, natt, outer_v6) in
        Suite::ALL.into_iter().flat_map(|s| [(s, false), (s, true)]).flat_map(|(s, n)| [(s, n, false), (s, n, true)])
    {
        {
            let (mut out, _) = pair(suite, outer_v6, |c| c.natt = natt.then_some(NatT::DEFAULT));
            for len in [20, 21, 22, 23, 100, 1400] {
                let mut p = room(&inner_v4(len - 20, 0));
                encap(&mut out, &mut p, 0, &mut Vec::new()).unwrap();
                assert_eq!(p.len(), encap_len(&out.cfg, len));
            }
            for mtu in 1300..1310 {
                let max = max_inner_len(&out.cfg, mtu);
                assert!(encap_len(&out.cfg, max) <= mtu && encap_len(&out.cfg, max + 1) > mtu, "mtu {mtu}");
            }
        }
    }
}

#[test]
fn outer_header_fields() {
    let (mut out, mut inb) = pair(Suite::AesGcm128, false, |c| c.outer_ttl = 33);
    let outer = round_trip(&mut out, &mut inb, &inner_v4(10, 0xb8 | 0b10));
    let ip = Ipv4Packet::new_checked(&outer[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.ttl(), ip.tos(), ip.protocol()), (33, 0xb8 | 0b10, proto::ESP));
    assert_eq!(ip.src_addr().to_string(), V4_LOCAL);
    assert!(ip.dont_frag(), "DF copied from the inner header");
    assert_eq!(ip.ident(), 1, "the IPv4 ID is the sequence number's low 16 bits");
    // DF clear is copied too; an IPv6 inner packet sets it; the incremental
    // checksum holds for every value of the varying fields.
    for (inner, df) in [(inner_v4_df(10, 0xff, false), false), (inner_v6(10, 0xfc), true)] {
        let outer = round_trip(&mut out, &mut inb, &inner);
        let ip = Ipv4Packet::new_checked(&outer[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.dont_frag(), ip.is_fragment()), (df, false));
    }

    // Outer IPv6: the traffic class spans two bytes; both nibbles are copied.
    let (mut out, mut inb) = pair(Suite::AesGcm128, true, |_| {});
    let outer = round_trip(&mut out, &mut inb, &inner_v6(10, 0xb9));
    let ip = Ipv6Packet::new_checked(&outer[..]).unwrap();
    assert_eq!((ip.traffic_class(), ip.flow_label(), ip.next_header()), (0xb9, 0, proto::ESP));

    let (mut out, mut inb) =
        pair(Suite::ChaCha20Poly1305, true, |c| c.natt = Some(NatT { src_port: 31000, dst_port: 4501 }));
    let outer = round_trip(&mut out, &mut inb, &inner_v4(10, 0x01));
    let ip = Ipv6Packet::new_checked(&outer[..]).unwrap();
    assert_eq!((ip.traffic_class(), ip.next_header(), ip.hop_limit()), (0x01, proto::UDP, 64));
    let u = udp::UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port()), (31000, 4501));
    assert!(u.verify_checksum(ip.src_addr().into(), ip.dst_addr().into()));

    let (mut out, mut inb) = pair(Suite::AesGcm256, false, |c| c.natt = Some(NatT::DEFAULT));
    let outer = round_trip(&mut out, &mut inb, &inner_v6(3, 0));
    assert_eq!(&outer[26..28], &[0, 0], "RFC 3948 2.1: UDP checksum 0 over IPv4");
}

/// RFC 4303 3.4.3 and 3.4.4: replays and forgeries are dropped, and a
/// forgery does not move the window.
#[test]
fn replay_and_icv_are_separate_drops() {
    let (mut out, mut inb) = pair(Suite::AesGcm128, false, |_| {});
    let mut ev = Vec::new();
    let mut first = room(&inner_v4(20, 0));
    encap(&mut out, &mut first, 0, &mut ev).unwrap();
    let first = first.data().to_vec();

    let run = |inb: &mut InboundSa, bytes: &[u8]| {
        let mut p = room(bytes);
        let loc = locate(p.data()).unwrap();
        decap(inb, &mut p, &loc, 0, &mut Vec::new())
    };
    assert_eq!(run(&mut inb, &first), Ok(1));
    assert_eq!(run(&mut inb, &first), Err(DropReason::Replay));

    let mut p = room(&inner_v4(20, 0));
    encap(&mut out, &mut p, 0, &mut ev).unwrap();
    let mut forged = p.data().to_vec();
    let n = forged.len();
    forged[n - 1] ^= 0x80;
    assert_eq!(run(&mut inb, &forged), Err(DropReason::Icv));
    forged[n - 1] ^= 0x80;
    forged[40] ^= 1;
    assert_eq!(run(&mut inb, &forged), Err(DropReason::Icv));
    forged[40] ^= 1;
    assert_eq!(run(&mut inb, &forged), Ok(2), "the forgeries left seq 2 acceptable");
    assert_eq!((inb.state.drops.get(DropReason::Replay), inb.state.drops.get(DropReason::Icv)), (1, 2));
    assert_eq!(inb.state.lifetime.traffic.packets, 2);
}

/// RFC 4303 3.3.3: the counter never cycles; at the last value the SA
/// sends it, raises a hard expiry, and refuses everything after.
#[test]
fn sequence_number_never_wraps() {
    for esn in [false, true] {
        let (out, _) = pair(Suite::AesGcm128, false, |c| c.esn = esn);
        let last = if esn { u64::MAX } else { u32::MAX as u64 };
        let mut out = out.with_next_seq(last - 1);
        let mut ev = Vec::new();
        assert_eq!(encap(&mut out, &mut room(&inner_v4(1, 0)), 0, &mut ev), Ok(last - 1));
        assert_eq!(encap(&mut out, &mut room(&inner_v4(1, 0)), 0, &mut ev), Ok(last));
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].expiry, ev[0].limit), (Expiry::Hard, LimitKind::SequenceSpace));
        assert_eq!(encap(&mut out, &mut room(&inner_v4(1, 0)), 0, &mut ev), Err(DropReason::Expired));
        assert_eq!(ev.len(), 1, "raised once");
    }
}

/// ESN (RFC 4303 2.2.1, RFC 4106 5): the high half is authenticated but not
/// sent, and the receiver infers it across 2^32.
#[test]
fn esn_crosses_the_32_bit_boundary() {
    let (out, mut inb) = pair(Suite::AesGcm256, false, |c| c.esn = true);
    let mut out = out.with_next_seq(0xffff_fffe);
    inb.state.window.update(0xffff_fff0);
    let mut ev = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..4 {
        let mut p = room(&inner_v4(8, 0));
        sent.push((encap(&mut out, &mut p, 0, &mut ev).unwrap(), p.data().to_vec()));
    }
    assert_eq!(sent[2].0, 1 << 32);
    assert_eq!(&sent[2].1[24..28], &[0, 0, 0, 0], "only the low half is on the wire");
    // Deliver out of order: 2^32, then the two from below, then 2^32+1.
    for i in [2, 0, 1, 3] {
        let mut p = room(&sent[i].1);
        let loc = locate(p.data()).unwrap();
        assert_eq!(decap(&mut inb, &mut p, &loc, 0, &mut ev), Ok(sent[i].0));
    }
    // Without ESN on the receiver the same bytes fail the ICV.
    let (_, mut plain) = pair(Suite::AesGcm256, false, |_| {});
    let mut p = room(&sent[2].1);
    let loc = locate(p.data()).unwrap();
    assert_eq!(decap(&mut plain, &mut p, &loc, 0, &mut ev), Err(DropReason::Replay), "seq 0 is refused");
    let mut p = room(&sent[3].1);
    let loc = locate(p.data()).unwrap();
    assert_eq!(decap(&mut plain, &mut p, &loc, 0, &mut ev), Err(DropReason::Icv));
}

#[test]
fn lifetimes_on_both_sides() {
    let (mut out, mut inb) = pair(Suite::AesGcm128, false, |c| {
        c.lifetimes.soft.packets = Some(2);
        c.lifetimes.hard.packets = Some(3);
        c.lifetimes.hard.seconds = Some(100);
    });
    let mut ev = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let mut p = room(&inner_v4(8, 0));
        encap(&mut out, &mut p, 5, &mut ev).unwrap();
        sent.push(p.data().to_vec());
    }
    assert_eq!(
        ev.iter().map(|e| (e.direction, e.expiry)).collect::<Vec<_>>(),
        [(Direction::Outbound, Expiry::Soft), (Direction::Outbound, Expiry::Hard)]
    );
    assert_eq!(encap(&mut out, &mut room(&inner_v4(8, 0)), 5, &mut ev), Err(DropReason::Expired));
    ev.clear();
    for s in &sent {
        let mut p = room(s);
        let loc = locate(p.data()).unwrap();
        decap(&mut inb, &mut p, &loc, 5, &mut ev).unwrap();
    }
    assert_eq!(
        ev.iter().map(|e| (e.direction, e.expiry)).collect::<Vec<_>>(),
        [(Direction::Inbound, Expiry::Soft), (Direction::Inbound, Expiry::Hard)]
    );

    // The time limit: polled by the control plane, enforced by the data path.
    let (mut out, _) = pair(Suite::AesGcm128, false, |c| c.lifetimes.hard.seconds = Some(100));
    ev.clear();
    assert!(encap(&mut out, &mut room(&inner_v4(8, 0)), 99, &mut ev).is_ok());
    assert_eq!(encap(&mut out, &mut room(&inner_v4(8, 0)), 100, &mut ev), Err(DropReason::Expired));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].limit, LimitKind::Seconds);
    let before = ev.len();
    out.poll_lifetime(200, &mut ev);
    assert_eq!(ev.len(), before, "raised once");
}

/// RFC 6040 section 4.2, every cell of figure 4.
#[test]
fn ecn_decapsulation_table() {
    let (not_ect, ect1, ect0, ce) = (0, 1, 2, 3);
    let rows = [
        (not_ect, [Some(not_ect), Some(not_ect), Some(not_ect), None]),
        (ect0, [Some(ect0), Some(ect1), Some(ect0), Some(ce)]),
        (ect1, [Some(ect1), Some(ect1), Some(ect1), Some(ce)]),
        (ce, [Some(ce), Some(ce), Some(ce), Some(ce)]),
    ];
    for (inner, cells) in rows {
        for (outer, want) in [not_ect, ect1, ect0, ce].into_iter().zip(cells) {
            assert_eq!(ecn_decap(outer, inner), want, "inner {inner} outer {outer}");
        }
    }
}

#[test]
fn ce_on_an_outer_ipv6_header_reaches_an_inner_ipv6_one() {
    let (mut out, mut inb) = pair(Suite::AesGcm128, true, |_| {});
    let mut p = room(&inner_v6(8, 0xb8 | 0b01));
    encap(&mut out, &mut p, 0, &mut Vec::new()).unwrap();
    let mut ip = Ipv6Packet::new_checked(p.data_mut()).unwrap();
    ip.set_traffic_class(ip.traffic_class() | 0b11);
    let loc = locate(p.data()).unwrap();
    decap(&mut inb, &mut p, &loc, 0, &mut Vec::new()).unwrap();
    assert_eq!(Ipv6Packet::new_checked(p.data()).unwrap().traffic_class(), 0xb8 | 0b11, "DSCP kept, CE set");
}

/// A NAT-T SA takes only UDP to its port; a raw SA only raw ESP.
#[test]
fn encapsulation_must_be_the_sas() {
    let (mut out_raw, _) = pair(Suite::AesGcm128, false, |_| {});
    let (mut out_udp, _) = pair(Suite::AesGcm128, false, |c| c.natt = Some(NatT::DEFAULT));
    let (mut out_other, _) = pair(Suite::AesGcm128, false, |c| c.natt = Some(NatT { src_port: 4500, dst_port: 4501 }));
    let (_, mut inb_raw) = pair(Suite::AesGcm128, false, |_| {});
    let (_, mut inb_udp) = pair(Suite::AesGcm128, false, |c| c.natt = Some(NatT { src_port: 31000, dst_port: 4500 }));
    let sealed = |out: &mut OutboundSa| {
        let mut p = room(&inner_v4(8, 0));
        encap(out, &mut p, 0, &mut Vec::new()).unwrap();
        p.data().to_vec()
    };
    let (raw, udp, other) = (sealed(&mut out_raw), sealed(&mut out_udp), sealed(&mut out_other));
    let run = |inb: &mut InboundSa, bytes: &[u8]| {
        let mut p = room(bytes);
        let loc = locate(p.data()).unwrap();
        decap(inb, &mut p, &loc, 0, &mut Vec::new()).map(|_| ())
    };
    assert_eq!(run(&mut inb_raw, &udp), Err(DropReason::EncapMismatch));
    assert_eq!(run(&mut inb_udp, &raw), Err(DropReason::EncapMismatch));
    assert_eq!(run(&mut inb_udp, &other), Err(DropReason::EncapMismatch));
    assert_eq!(run(&mut inb_udp, &udp), Ok(()), "the peer's source port may differ (NAT)");
    assert_eq!(run(&mut inb_raw, &raw), Ok(()));
}

/// Before the counter runs out, a soft expiry asks for a rekey.
#[test]
fn sequence_space_warns_before_it_ends() {
    let (out, _) = pair(Suite::AesGcm128, false, |_| {});
    let warn = out.state.seq_warn;
    assert_eq!(warn, u32::MAX as u64 - (u32::MAX as u64) / 16);
    let mut out = out.with_next_seq(warn - 1);
    let mut ev = Vec::new();
    for _ in 0..3 {
        encap(&mut out, &mut room(&inner_v4(1, 0)), 0, &mut ev).unwrap();
    }
    assert_eq!(ev.iter().map(|e| (e.expiry, e.limit)).collect::<Vec<_>>(), [(Expiry::Soft, LimitKind::SequenceSpace)]);
}

#[test]
fn ce_on_the_outer_header_reaches_the_inner_one() {
    let (mut out, mut inb) = pair(Suite::AesGcm128, false, |_| {});
    for (inner, want) in [(inner_v4(8, 0b10), Ok(0b11)), (inner_v4(8, 0), Err(DropReason::EcnNotEct))] {
        let mut p = room(&inner);
        encap(&mut out, &mut p, 0, &mut Vec::new()).unwrap();
        let mut ip = Ipv4Packet::new_checked(p.data_mut()).unwrap();
        ip.set_tos(ip.tos() | 0b11); // a router marked CE
        ip.fill_checksum();
        let loc = locate(p.data()).unwrap();
        let r = decap(&mut inb, &mut p, &loc, 0, &mut Vec::new()).map(|_| {
            let ip = Ipv4Packet::new_checked(p.data()).unwrap();
            assert!(ip.verify_checksum());
            ip.ecn()
        });
        assert_eq!(r, want);
    }
}

#[test]
fn bad_outer_packets_are_located_as_drops() {
    let (mut out, _) = pair(Suite::AesGcm128, false, |c| c.natt = Some(NatT::DEFAULT));
    let mut p = room(&inner_v4(8, 0));
    encap(&mut out, &mut p, 0, &mut Vec::new()).unwrap();
    let good = p.data().to_vec();
    assert!(locate(&good).is_ok());
    assert_eq!(locate(&[]), Err(DropReason::Malformed));
    assert_eq!(locate(&[0x45; 10]), Err(DropReason::Malformed));
    let mut bad = good.clone();
    bad[10] ^= 1;
    assert_eq!(locate(&bad), Err(DropReason::Malformed), "outer checksum");
    // IKE on 4500 (non-ESP marker) and NAT keepalives belong to the kernel.
    let mut ike = good.clone();
    ike[28..32].fill(0);
    assert_eq!(locate(&ike), Err(DropReason::NotEsp));
    let mut ka = vec![0u8; 29];
    Ipv4Repr {
        src: "198.51.100.1".parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        protocol: proto::UDP,
        payload_len: 9,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut ka);
    udp::emit_header(&mut ka[20..], 4500, 4500, 1);
    ka[28] = 0xff;
    assert_eq!(locate(&ka), Err(DropReason::NotEsp));
    let mut frag = good.clone();
    frag[6] |= 0x20;
    let mut ip = Ipv4Packet::new_checked(&mut frag[..]).unwrap();
    ip.fill_checksum();
    assert_eq!(locate(&frag), Err(DropReason::Fragment));
}

/// Decapsulation refuses what is short, unknown, or not a valid inner
/// packet, each with its own reason, through the SA database.
#[test]
fn sad_lookup_and_short_packets() {
    let (mut out, inb) = pair(Suite::AesGcm128, false, |_| {});
    let mut sad = InboundSad::default();
    sad.insert(inb).unwrap();
    let mut ev = Vec::new();
    let mut p = room(&inner_v4(8, 0));
    encap(&mut out, &mut p, 0, &mut ev).unwrap();
    let good = p.data().to_vec();

    let mut other_spi = good.clone();
    other_spi[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(sad.receive(&mut room(&other_spi), 0, &mut ev).unwrap_err(), DropReason::UnknownSpi);

    let mut other_dst = good.clone();
    other_dst[19] = 99;
    let mut ip = Ipv4Packet::new_checked(&mut other_dst[..]).unwrap();
    ip.fill_checksum();
    assert_eq!(sad.receive(&mut room(&other_dst), 0, &mut ev).unwrap_err(), DropReason::UnknownSpi);

    // Shorter than header + IV + trailer + ICV.
    let mut short = good[..20 + 8 + 8 + 17].to_vec();
    let len = short.len() as u16;
    short[2..4].copy_from_slice(&len.to_be_bytes());
    Ipv4Packet::new_checked(&mut short[..]).unwrap().fill_checksum();
    assert_eq!(sad.receive(&mut room(&short), 0, &mut ev).unwrap_err(), DropReason::Malformed);

    let r = sad.receive(&mut room(&good), 0, &mut ev).unwrap();
    assert_eq!((r.location.spi, r.seq), (0x1001, 1));
    assert_eq!(sad.drops.get(DropReason::UnknownSpi), 2, "the SAD counts drops before an SA is found");
    assert_eq!(sad.drops.get(DropReason::Malformed), 0, "short ESP is the SA's drop");
    assert!(sad.insert(pair(Suite::AesGcm128, false, |_| {}).1).is_err(), "SPI in use");
}

#[test]
fn encap_refuses_what_it_cannot_carry() {
    let (mut out, _) = pair(Suite::AesGcm128, false, |_| {});
    let mut ev = Vec::new();
    let inner = inner_v4(8, 0);
    let mut no_head = PacketBuf::<Vec<u8>>::with_room(&inner, 10, MAX_TAILROOM);
    assert_eq!(encap(&mut out, &mut no_head, 0, &mut ev), Err(DropReason::NoRoom));
    assert_eq!(no_head.data(), &inner[..], "a refused packet is left as it was");
    let mut no_tail = PacketBuf::<Vec<u8>>::with_room(&inner, MAX_HEADROOM, 3);
    assert_eq!(encap(&mut out, &mut no_tail, 0, &mut ev), Err(DropReason::NoRoom));
    let mut garbage = room(&[0x99; 30]);
    assert_eq!(encap(&mut out, &mut garbage, 0, &mut ev), Err(DropReason::Malformed));
    let mut trailing = inner.clone();
    trailing.push(0);
    assert_eq!(encap(&mut out, &mut room(&trailing), 0, &mut ev), Err(DropReason::Malformed));
    let big = inner_v4(65535 - 20, 0);
    assert_eq!(encap(&mut out, &mut room(&big), 0, &mut ev), Err(DropReason::TooBig));
    assert_eq!(out.state.drops.total(), 5);
    assert_eq!(out.state.next_seq, 1, "no sequence number was used");
}
