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

fn unhex(v: &Value) -> Vec<u8> {
    vpngw_ctrl::hex::decode(v.as_str().expect("hex")).expect("hex")
}

/// The DH groups and the key derivation against pyca/cryptography
/// (OpenSSL), Python's integers and Python's hmac
/// (`gen_crypto_vectors.py`).
#[test]
fn ike_crypto_agrees_with_independent_vectors() {
    use vpngw_ctrl::ike::crypto::{child_keymat, Group, IkeKeys, KeyPair, Prf};
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("crypto_vectors.json")).unwrap()).unwrap();
    for d in v["dh"].as_array().unwrap() {
        let group = Group::from_id(d["group"].as_u64().unwrap() as u16).unwrap();
        let a = KeyPair::from_private(group, &unhex(&d["private_a"])).unwrap();
        let b = KeyPair::from_private(group, &unhex(&d["private_b"])).unwrap();
        assert_eq!(hex(a.public()), d["public_a"].as_str().unwrap(), "{group:?} public a");
        assert_eq!(hex(b.public()), d["public_b"].as_str().unwrap(), "{group:?} public b");
        assert_eq!(hex(&a.shared(b.public()).unwrap()), d["shared"].as_str().unwrap(), "{group:?} g^ir");
        assert_eq!(hex(&b.shared(a.public()).unwrap()), d["shared"].as_str().unwrap(), "{group:?} g^ir");
    }
    assert_eq!(v["dh"].as_array().unwrap().len(), Group::ALL.len());
    for k in v["keys"].as_array().unwrap() {
        let prf = Prf::from_id(k["prf"].as_u64().unwrap() as u16).unwrap();
        let spi = |x: &Value| u64::from_be_bytes(unhex(x).try_into().unwrap());
        let (integ, encr) = (k["integ_len"].as_u64().unwrap() as usize, k["encr_len"].as_u64().unwrap() as usize);
        let keys = IkeKeys::derive(
            prf,
            &unhex(&k["shared"]),
            &unhex(&k["ni"]),
            &unhex(&k["nr"]),
            spi(&k["spi_i"]),
            spi(&k["spi_r"]),
            integ,
            encr,
        );
        assert_eq!(hex(&keys.skeyseed), k["skeyseed"].as_str().unwrap(), "{prf:?} SKEYSEED");
        let got = [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr];
        for (name, key) in ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"].iter().zip(got) {
            assert_eq!(hex(key), k["keys"][name].as_str().unwrap(), "{prf:?} {name}");
        }
        let r = &k["rekey"];
        // The IKE SA rekeyed (SKEYSEED with the old IKE SA's PRF, prf+ with
        // the new SA's): to the same PRF, and to another.
        let rekey = |to| {
            let (ni, nr) = (unhex(&r["ni"]), unhex(&r["nr"]));
            IkeKeys::rekey(
                prf,
                to,
                &keys.sk_d,
                &unhex(&r["shared"]),
                &ni,
                &nr,
                spi(&r["spi_i"]),
                spi(&r["spi_r"]),
                0,
                0,
            )
        };
        let rekeyed = rekey(prf);
        assert_eq!(hex(&rekeyed.skeyseed), r["skeyseed"].as_str().unwrap(), "{prf:?} rekeyed SKEYSEED");
        assert_eq!(hex(&rekeyed.sk_d), r["sk_d"].as_str().unwrap(), "{prf:?} rekeyed SK_d");
        let to = Prf::from_id(k["rekey_to"]["prf"].as_u64().unwrap() as u16).unwrap();
        assert_ne!(to, prf);
        assert_eq!(hex(&rekey(to).sk_d), k["rekey_to"]["sk_d"].as_str().unwrap(), "{prf:?} rekeyed to {to:?}: SK_d");
        let child = child_keymat(prf, &keys.sk_d, None, &unhex(&r["ni"]), &unhex(&r["nr"]), 96);
        assert_eq!(hex(&child), k["child"].as_str().unwrap(), "{prf:?} child KEYMAT");
        let pfs = child_keymat(prf, &keys.sk_d, Some(&unhex(&r["shared"])), &unhex(&r["ni"]), &unhex(&r["nr"]), 72);
        assert_eq!(hex(&pfs), k["child_pfs"].as_str().unwrap(), "{prf:?} child KEYMAT with PFS");
    }
}

/// The Encrypted payload against pyca/cryptography and Python's hmac
/// (`gen_sk_vectors.py`): the payloads Scapy built for IKE_AUTH, protected
/// with each transform; vpngw writes the same bytes and opens them.
#[test]
fn encrypted_payloads_agree_with_independent_vectors() {
    use vpngw_ctrl::ike::message::{Header, VERSION};
    use vpngw_ctrl::ike::sk::{Encryption, Integ, Protection};
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("sk_vectors.json")).unwrap()).unwrap();
    let inner_bytes = std::fs::read(dir().join(v["inner"].as_str().unwrap())).unwrap();
    let inner = message::parse_chain(v["first"].as_u64().unwrap() as u8, &inner_bytes, 0).unwrap();
    let header = Header {
        spi_i: 0x0102030405060708,
        spi_r: 0x1112131415161718,
        next: 0,
        version: VERSION,
        exchange: message::exchange::IKE_AUTH,
        flags: message::flags::INITIATOR,
        message_id: 1,
        length: 0,
    };
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for t in vectors {
        let name = t["name"].as_str().unwrap();
        let key_bytes = t["key_bytes"].as_u64().unwrap() as usize;
        let e = match t["transform"].as_str().unwrap() {
            "aes-gcm-16" => Encryption::AesGcm16 { key_bytes },
            "aes-cbc-hmac-sha256" => Encryption::AesCbc { key_bytes, integ: Integ::Sha256 },
            "aes-cbc-hmac-sha384" => Encryption::AesCbc { key_bytes, integ: Integ::Sha384 },
            "aes-cbc-hmac-sha512" => Encryption::AesCbc { key_bytes, integ: Integ::Sha512 },
            other => panic!("{name}: transform {other}"),
        };
        let p = Protection::new(e, &unhex(&t["sk_e"]), &unhex(&t["sk_a"])).unwrap();
        let sealed = p.seal(&header, &inner, &unhex(&t["iv"]));
        assert_eq!(hex(&sealed), t["message"].as_str().unwrap(), "{name}: sealed as Python seals");
        let (h, payloads) = p.open(&unhex(&t["message"])).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((h.message_id, payloads), (1, inner.clone()), "{name}: opened");
    }
}
