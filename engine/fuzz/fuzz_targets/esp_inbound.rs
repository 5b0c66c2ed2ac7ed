//! Fuzzes inbound ESP: whatever arrives on the outside port, `locate` and
//! `decap` never panic and never read out of bounds.
//!
//! Half the inputs are raw bytes. The other half are valid ESP packets that
//! vpngw sealed and then damaged at input-chosen offsets, so the fuzzer
//! reaches the code behind the ICV too. The input chooses the suite, NAT-T,
//! ESN, outer and inner IP version, DSCP/ECN, the sequence number (so ESN
//! inference and the replay window are exercised), and the inner bytes. An
//! undamaged packet must come back intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use vpngw_engine::esp::{self, MAX_HEADROOM, MAX_TAILROOM};
use vpngw_engine::sad::InboundSad;
use vpngw_engine::wire::ipv4::Ipv4Repr;
use vpngw_engine::wire::ipv6::Ipv6Repr;
use vpngw_engine::{Direction, InboundSa, NatT, OutboundSa, PacketBuf, SaConfig, Suite};

const NATT: u8 = 1 << 3;
const ESN: u8 = 1 << 4;
const OUTER_V6: u8 = 1 << 5;
const INNER_V6: u8 = 1 << 6;

fn sas(mode: u8, seq: u64) -> (OutboundSa, InboundSad) {
    // Bits 1, 2 and 7 choose among every suite (AES-CBC's included).
    let pick = (mode as usize >> 1 & 3) | (mode as usize >> 7) << 2;
    let suite = Suite::ALL[pick % Suite::ALL.len()];
    let key: Vec<u8> = (0..suite.keymat_len() as u8).collect();
    let (a, b): (IpAddr, IpAddr) = if mode & OUTER_V6 != 0 {
        ("2001:db8::1".parse().unwrap(), "2001:db8:1::1".parse().unwrap())
    } else {
        ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap())
    };
    let mut out = SaConfig::new(0x1001, Direction::Outbound, suite, a, b);
    out.natt = (mode & NATT != 0).then_some(NatT::DEFAULT);
    out.esn = mode & ESN != 0;
    let mut inb = out.clone();
    inb.direction = Direction::Inbound;
    (inb.local, inb.remote) = (b, a);
    inb.replay_window = 64;
    let mut rx = InboundSa::new(inb, &key, 0).unwrap();
    rx.state.window.start_after(seq - 1);
    let mut sad = InboundSad::default();
    sad.insert(rx).unwrap();
    (OutboundSa::new(out, &key, 0).unwrap().with_next_seq(seq), sad)
}

fn inner_packet(mode: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = ("10.1.0.5".parse().unwrap(), "172.16.1.9".parse().unwrap());
    if mode & INNER_V6 != 0 {
        let mut p = vec![0u8; 40 + payload.len()];
        let (src, dst) = ("fd00:1::5".parse().unwrap(), "fd00:16:1::9".parse().unwrap());
        let (next_header, payload_len, hop_limit, traffic_class, flow_label) = (17, payload.len(), 64, tos, 0);
        Ipv6Repr { src, dst, next_header, payload_len, hop_limit, traffic_class, flow_label }.emit(&mut p);
        p[40..].copy_from_slice(payload);
        p
    } else {
        let mut p = vec![0u8; 20 + payload.len()];
        let (protocol, payload_len, ttl, ident, dont_frag) = (17, payload.len(), 64, 1, false);
        Ipv4Repr { src, dst, protocol, payload_len, ttl, tos, ident, dont_frag }.emit(&mut p);
        p[20..].copy_from_slice(payload);
        p
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut events = Vec::new();

    if mode & 1 == 0 {
        let (_, mut sad) = sas(mode, 1);
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(rest, 0, 0);
        assert!(sad.receive(&mut pkt, 0, &mut events).is_err(), "raw bytes cannot carry a valid ICV");
        return;
    }

    // [tos, seq (8 bytes), payload length, payload..., damage...]
    let Some((head, rest)) = rest.split_first_chunk::<10>() else { return };
    let tos = head[0];
    let raw_seq = u64::from_be_bytes(head[1..9].try_into().unwrap());
    let seq = if mode & ESN != 0 { raw_seq.max(1) } else { (raw_seq as u32).max(1) as u64 };
    let payload_len = (head[9] as usize).min(rest.len());
    let (payload, damage) = rest.split_at(payload_len);

    let (mut out, mut sad) = sas(mode, seq);
    let inner = inner_packet(mode, tos, payload);
    let mut pkt = PacketBuf::<Vec<u8>>::with_room(&inner, MAX_HEADROOM, MAX_TAILROOM);
    esp::encap(&mut out, &mut pkt, 0, &mut events).expect("a valid inner packet is sealed");
    let mut bytes = pkt.data().to_vec();
    let mut damaged = false;
    for pair in damage.chunks_exact(2) {
        let at = pair[0] as usize % bytes.len();
        bytes[at] ^= pair[1];
        damaged |= pair[1] != 0;
    }
    // Truncation, when the damage list has an odd length.
    if damage.len() % 2 == 1 {
        let cut = damage[damage.len() - 1] as usize % (bytes.len() + 1);
        damaged |= cut != bytes.len();
        bytes.truncate(cut);
    }
    let mut pkt = PacketBuf::<Vec<u8>>::with_room(&bytes, 0, 0);
    let r = sad.receive(&mut pkt, 0, &mut events);
    if !damaged {
        assert_eq!(r.map(|r| r.seq), Ok(seq), "an undamaged packet must decapsulate");
        assert_eq!(pkt.data(), &inner[..]);
        // And a second copy is a replay.
        let mut again = PacketBuf::<Vec<u8>>::with_room(&bytes, 0, 0);
        assert!(sad.receive(&mut again, 0, &mut events).is_err());
    }
});
