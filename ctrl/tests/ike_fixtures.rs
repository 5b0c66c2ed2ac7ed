//! vpngw's IKEv2 codec against Scapy's (`scapy.contrib.ikev2`), an
//! independent implementation: every message and payload chain Scapy
//! built (`tests/fixtures/ike/`, made by `gen_ike_fixtures.py`) reads back
//! field by field as the manifest says, and vpngw writes it again byte for
//! byte.

use serde_json::{json, Value};
use std::path::PathBuf;
use vpngw_ctrl::ike::message::{self, Payload};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ike")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A payload in the manifest's form.
fn as_json(p: &Payload) -> Value {
    let ts = |list: &[message::TrafficSelector]| -> Vec<Value> {
        list.iter()
            .map(|s| {
                json!({ "protocol": s.protocol, "start_port": s.start_port, "end_port": s.end_port,
                        "start": s.start.to_string(), "end": s.end.to_string() })
            })
            .collect()
    };
    match p {
        Payload::Sa(proposals) => json!({ "type": "sa", "proposals": proposals.iter().map(|pr| json!({
            "number": pr.number, "protocol": pr.protocol, "spi": hex(&pr.spi),
            "transforms": pr.transforms.iter().map(|t| json!({
                "type": t.kind, "id": t.id, "key_length": t.key_length() })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>() }),
        Payload::Ke { group, data } => json!({ "type": "ke", "group": group, "data": hex(data) }),
        Payload::Nonce(d) => json!({ "type": "nonce", "data": hex(d) }),
        Payload::Notify(n) => json!({ "type": "notify", "protocol": n.protocol, "spi": hex(&n.spi),
                                      "kind": n.kind, "data": hex(&n.data) }),
        Payload::VendorId(d) => json!({ "type": "vendor", "data": hex(d) }),
        Payload::IdI(id) => json!({ "type": "idi", "kind": id.kind, "data": hex(&id.data) }),
        Payload::IdR(id) => json!({ "type": "idr", "kind": id.kind, "data": hex(&id.data) }),
        Payload::Auth { method, data } => json!({ "type": "auth", "method": method, "data": hex(data) }),
        Payload::TsI(s) => json!({ "type": "tsi", "selectors": ts(s) }),
        Payload::TsR(s) => json!({ "type": "tsr", "selectors": ts(s) }),
        Payload::Delete { protocol, spi_size, spis } => json!({ "type": "delete", "protocol": protocol,
            "spi_size": spi_size, "spis": spis.iter().map(|s| hex(s)).collect::<Vec<_>>() }),
        Payload::Sk { first, data } => json!({ "type": "sk", "first": first, "data": hex(data) }),
        Payload::Other { kind, critical, data } => {
            json!({ "type": "other", "kind": kind, "critical": critical, "data": hex(data) })
        }
    }
}

#[test]
fn vpngw_reads_what_scapy_wrote_and_writes_it_back_byte_for_byte() {
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap();
    let fixtures = manifest["fixtures"].as_array().unwrap();
    assert!(fixtures.len() >= 7);
    for f in fixtures {
        let name = f["name"].as_str().unwrap();
        let bytes = std::fs::read(dir().join(format!("{name}.bin"))).unwrap();
        let (payloads, again) = match f.get("header") {
            Some(h) => {
                let m = message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                let want = (
                    h["spi_i"].as_str().unwrap().to_string(),
                    h["spi_r"].as_str().unwrap().to_string(),
                    h["exchange"].as_u64().unwrap() as u8,
                    h["flags"].as_u64().unwrap() as u8,
                    h["message_id"].as_u64().unwrap() as u32,
                );
                let got = (
                    format!("{:016x}", m.header.spi_i),
                    format!("{:016x}", m.header.spi_r),
                    m.header.exchange,
                    m.header.flags,
                    m.header.message_id,
                );
                assert_eq!(got, want, "{name}: header");
                assert_eq!(m.header.version, message::VERSION, "{name}");
                let again = m.emit();
                (m.payloads, again)
            }
            None => {
                let first = f["first"].as_u64().unwrap() as u8;
                let p = message::parse_chain(first, &bytes, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
                let again = message::emit_chain(&p);
                (p, again)
            }
        };
        let got: Vec<Value> = payloads.iter().map(as_json).collect();
        assert_eq!(Value::Array(got), f["payloads"], "{name}: payloads");
        assert_eq!(hex(&again), hex(&bytes), "{name}: written again byte for byte");
    }
}
