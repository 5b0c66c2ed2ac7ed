//! vpngw decrypts what Scapy (an independent ESP implementation) encrypted.
//!
//! The fixtures and the script that made them are in `tests/fixtures/esp/`
//! (`gen_fixtures.py`; see its docstring). For every case of the manifest,
//! each packet goes through the inbound SA database in file order, so the
//! replay window and ESN inference act as they would on the wire; each
//! outcome must be the manifest's, and each accepted packet must equal the
//! inner packet Scapy started from, byte for byte.

use serde::Deserialize;
use std::fs::File;
use std::path::PathBuf;
use vpngw_engine::pcap::{LinkType, PcapReader};
use vpngw_engine::sad::InboundSad;
use vpngw_engine::wire::ether::EthernetFrame;
use vpngw_engine::{Direction, InboundSa, PacketBuf, SaConfig};

#[derive(Deserialize)]
struct Manifest {
    generator: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    suite: String,
    key: String,
    spi: u32,
    esn: bool,
    natt: Option<[u16; 2]>,
    dst: String,
    src: String,
    window: u32,
    packets: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    seq: u64,
    expect: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esp")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The IP packets of a capture, link headers stripped.
fn ip_packets(name: &str) -> Vec<Vec<u8>> {
    let r = PcapReader::new(File::open(dir().join(name)).unwrap()).unwrap();
    let link = r.link_type();
    r.map(|rec| {
        let data = rec.unwrap().data;
        match link {
            LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => data,
            LinkType::Ethernet => EthernetFrame::new_checked(&data[..]).unwrap().payload().to_vec(),
        }
    })
    .collect()
}

#[test]
fn vpngw_decrypts_every_scapy_fixture() {
    let manifest: Manifest = serde_json::from_reader(File::open(dir().join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.generator.starts_with("scapy"), "{}", manifest.generator);
    assert!(manifest.cases.len() >= 20, "the manifest lost cases");
    let (mut ok, mut dropped) = (0, 0);
    for case in &manifest.cases {
        let mut cfg = SaConfig::new(
            case.spi,
            Direction::Inbound,
            case.suite.parse().unwrap(),
            case.dst.parse().unwrap(),
            case.src.parse().unwrap(),
        );
        cfg.esn = case.esn;
        cfg.natt = case.natt.map(|[src_port, dst_port]| vpngw_engine::NatT { src_port, dst_port });
        cfg.replay_window = case.window;
        let mut sad = InboundSad::default();
        sad.insert(InboundSa::new(cfg, &hex(&case.key), 0).unwrap()).unwrap();

        let esp = ip_packets(&format!("{}.esp.pcap", case.name));
        let plain = ip_packets(&format!("{}.plain.pcap", case.name));
        assert_eq!((esp.len(), plain.len()), (case.packets.len(), case.packets.len()), "{}", case.name);
        for (i, want) in case.packets.iter().enumerate() {
            let mut pkt = PacketBuf::<Vec<u8>>::with_room(&esp[i], 0, 0);
            let got = sad.receive(&mut pkt, 0, &mut Vec::new());
            let outcome = match &got {
                Ok(r) => {
                    assert_eq!(r.seq, want.seq, "{} packet {i}: inferred sequence number", case.name);
                    assert_eq!(
                        r.location.natt.map(|n| [n.src_port, n.dst_port]),
                        case.natt,
                        "{} packet {i}",
                        case.name
                    );
                    assert_eq!(pkt.data(), &plain[i][..], "{} packet {i}: inner packet", case.name);
                    ok += 1;
                    "ok".to_string()
                }
                Err(reason) => {
                    dropped += 1;
                    format!("drop {reason}")
                }
            };
            assert_eq!(outcome, want.expect, "{} packet {i} (seq {})", case.name, want.seq);
        }
    }
    // Both outcomes occurred: the test exercised acceptance and refusal.
    assert!(ok > 100 && dropped >= 8, "ok {ok}, dropped {dropped}");
}
