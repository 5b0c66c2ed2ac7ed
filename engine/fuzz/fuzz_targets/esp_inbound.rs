//! Fuzzes inbound ESP: whatever arrives on the outside port, `locate` and
//! `decap` never panic and never read out of bounds.
//!
//! Half the inputs are raw bytes. The other half are valid ESP packets that
//! vpngw sealed (suite, NAT-T, ESN, inner length and bytes chosen by the
//! input) and then damaged at input-chosen offsets, so the fuzzer reaches
//! the code behind the ICV too; an undamaged packet must come back intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpngw_engine::esp::{self, MAX_HEADROOM, MAX_TAILROOM};
use vpngw_engine::sad::InboundSad;
use vpngw_engine::wire::ipv4::Ipv4Repr;
use vpngw_engine::{Direction, InboundSa, NatT, OutboundSa, PacketBuf, SaConfig, Suite};

fn sas(suite: Suite, natt: bool, esn: bool) -> (OutboundSa, InboundSad) {
    let key: Vec<u8> = (0..suite.keymat_len() as u8).collect();
    let (a, b) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
    let mut out = SaConfig::new(0x1001, Direction::Outbound, suite, a, b);
    out.natt = natt.then_some(NatT::DEFAULT);
    out.esn = esn;
    let mut inb = out.clone();
    inb.direction = Direction::Inbound;
    (inb.local, inb.remote) = (b, a);
    inb.replay_window = 64;
    let mut sad = InboundSad::default();
    sad.insert(InboundSa::new(inb, &key, 0).unwrap()).unwrap();
    (OutboundSa::new(out, &key, 0).unwrap(), sad)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let suite = Suite::ALL[(mode as usize >> 1) % 3];
    let (mut out, mut sad) = sas(suite, mode & 8 != 0, mode & 16 != 0);
    let mut events = Vec::new();

    if mode & 1 == 0 {
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(rest, 0, 0);
        if sad.receive(&mut pkt, 0, &mut events).is_ok() {
            unreachable!("raw bytes cannot carry a valid ICV");
        }
        return;
    }

    // A sealed packet, then damage: pairs of (offset, xor).
    let Some((&len, rest)) = rest.split_first() else { return };
    let payload_len = (len as usize).min(rest.len());
    let (payload, damage) = rest.split_at(payload_len);
    let mut inner = vec![0u8; 20 + payload_len];
    Ipv4Repr {
        src: "10.1.0.5".parse().unwrap(),
        dst: "172.16.1.9".parse().unwrap(),
        protocol: 17,
        payload_len,
        ttl: 64,
        tos: mode & 3,
        ident: 1,
        dont_frag: false,
    }
    .emit(&mut inner);
    inner[20..].copy_from_slice(payload);
    let mut pkt = PacketBuf::<Vec<u8>>::with_room(&inner, MAX_HEADROOM, MAX_TAILROOM);
    esp::encap(&mut out, &mut pkt, 0, &mut events).expect("a valid inner packet is sealed");
    let mut bytes = pkt.data().to_vec();
    let mut damaged = false;
    for pair in damage.chunks_exact(2) {
        if bytes.is_empty() {
            break;
        }
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
        assert!(r.is_ok(), "an undamaged packet must decapsulate: {r:?}");
        assert_eq!(pkt.data(), &inner[..]);
    }
});
