//! Fuzzes the control socket's request parser and what the control thread
//! does with a request: whatever line a client sends, `api::parse`,
//! `api::apply`, `Config::to_model`, the snapshot build and `Control`'s
//! answer never panic.
//!
//! Half the inputs are raw bytes (a request line). The other half are
//! valid requests, chosen by the input, damaged at input-chosen offsets
//! (bytes replaced or inserted), so the fuzzer reaches the configuration
//! checks behind the parser too. Beyond not panicking:
//! - an envelope that parses serializes back to one that parses equal;
//! - a refused line is refused as `parse`, `version` or `too-long`;
//! - a batch `api::apply` takes whose model and snapshot build is what the
//!   control thread applies (and it refuses the others, changing nothing);
//! - an applied configuration written as the state file (TOML) loads back
//!   equal.
//!
//! The templates cover every request, health checks and bandwidth limits
//! included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vpngw_ctrl::api::{self, ErrorKind, Request};
use vpngw_ctrl::config::{Config, Link};
use vpngw_ctrl::control::Control;
use vpngw_engine::snapshot::{Snapshot, SnapshotCell};

const KEY16: &str = "00112233445566778899aabbccddeeff01020304";
const KEY32: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304";

/// The running configuration the requests change: two gateways (one IPv4
/// vpc, one dual-stack unassociated cloud-connect), an IPv4 and an IPv6
/// customer gateway, three tunnels, SPD rules and routes; an outside and
/// an inside interface left for a new gateway.
fn base() -> &'static Config {
    static BASE: OnceLock<Config> = OnceLock::new();
    BASE.get_or_init(|| {
        format!(
            r#"
[[interface]]
name = "out"
role = "outside"
router = "192.0.2.254"

[[interface]]
name = "in"
role = "inside"

[[interface]]
name = "out2"
role = "outside"

[[interface]]
name = "in2"
role = "inside"

[[gateway]]
name = "gw1"
attachment = "vpc"
outside = "out"
inside = "in"
addresses = ["192.0.2.1"]

[[gateway]]
name = "gw2"
attachment = "cloud-connect-unassociated"
outside = "out2"
addresses = ["192.0.2.2", "2001:db8::2"]

[[customer_gateway]]
name = "idc1"
address = "198.51.100.1"

[[customer_gateway]]
name = "idc6"
address = "2001:db8:1::1"

[[tunnel]]
name = "t1"
gateway = "gw1"
customer_gateway = "idc1"
suite = "aes-gcm-128"
nat_t = true
outbound = {{ spi = 0x1001, key = "{KEY16}" }}
inbound = [{{ spi = 0x2001, key = "{KEY16}" }}]

[[tunnel]]
name = "t2"
gateway = "gw1"
customer_gateway = "idc1"
suite = "chacha20-poly1305"
esn = true
outbound = {{ spi = 0x1002, key = "{KEY32}" }}
inbound = [{{ spi = 0x2002, key = "{KEY32}" }}, {{ spi = 0x2012, key = "{KEY32}" }}]

[[tunnel]]
name = "t6"
gateway = "gw2"
customer_gateway = "idc6"
suite = "aes-gcm-256"
outbound = {{ spi = 0x1006, key = "{KEY32}" }}
inbound = [{{ spi = 0x2006, key = "{KEY32}" }}]

[[spd]]
gateway = "gw1"
priority = 10
local = "10.1.0.0/16"
remote = "172.16.1.0/24"
protocol = "tcp"
remote_ports = "443"
action = "protect:t1"

[[spd]]
gateway = "gw1"
local = "10.1.0.5-10.1.0.9"
remote = "any"
action = "discard"

[[spd]]
gateway = "gw2"
local = "fd00::/64"
remote = "fd01::/64"
action = "protect:t6"

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/16"
via = "tunnel:t1"

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/16"
via = "tunnel:t2"
priority = 10

[[route]]
gateway = "gw1"
prefix = "10.1.0.0/16"
via = "inside"
enabled = false

[[route]]
gateway = "gw2"
prefix = "fd01::/64"
via = "tunnel:t6"
"#
        )
        .parse()
        .expect("the base configuration parses")
    })
}

/// Valid requests for the damaged half of the inputs.
const TEMPLATES: &[&str] = &[
    concat!(
        r#"{"version":1,"id":1,"request":{"apply":{"changes":[{"add":{"tunnel":{"name":"t3","gateway":"gw1","#,
        r#""customer_gateway":"idc1","suite":"aes-gcm-128","up":true,"nat_t":{"src_port":4500,"dst_port":4501},"#,
        r#""esn":false,"replay_window":1024,"mss_clamp":1360,"soft_lifetime":{"bytes":1000000,"packets":900},"#,
        r#""hard_lifetime":{"bytes":9223372036854775807,"packets":1000,"seconds":3600},"#,
        r#""outbound":{"spi":4099,"key":"00112233445566778899aabbccddeeff01020304"},"#,
        r#""inbound":[{"spi":8195,"key":"00112233445566778899aabbccddeeff01020304"}]}}},"#,
        r#"{"add":{"route":{"gateway":"gw1","prefix":"172.20.0.0/16","via":"tunnel:t3","priority":1}}}],"cascade":false}}}"#
    ),
    concat!(
        r#"{"version":1,"request":{"apply":{"changes":[{"add":{"spd":{"gateway":"gw1","priority":5,"#,
        r#""local":"10.2.0.0/16","remote":"172.17.0.0-172.17.255.255","protocol":"udp","local_ports":"1024-65535","#,
        r#""remote_ports":"53","action":"protect:t2"}}},{"set":{"spd":{"gateway":"gw1","local":"10.1.0.5-10.1.0.9","#,
        r#""remote":"any","action":"bypass"}}},{"add":{"route":{"gateway":"gw1","prefix":"fd02::/48","via":"inside"}}}]}}}"#
    ),
    concat!(
        r#"{"version":1,"id":3,"request":{"apply":{"changes":[{"set":{"tunnel":{"name":"t1","gateway":"gw1","#,
        r#""customer_gateway":"idc1","suite":"aes-gcm-128","up":false,"nat_t":false,"esn":true,"#,
        r#""outbound":{"spi":4097,"key":"ffeeddccbbaa99887766554433221100a0b0c0d0"},"#,
        r#""inbound":[{"spi":8193,"key":"00112233445566778899aabbccddeeff01020304"}]}}},"#,
        r#"{"delete":{"tunnel":"t2"}},{"delete":{"route":{"gateway":"gw1","prefix":"10.1.0.0/16","via":"inside"}}}],"cascade":true}}}"#
    ),
    concat!(
        r#"{"version":1,"request":{"apply":{"changes":[{"delete":{"gateway":"gw2"}},{"add":{"gateway":{"name":"gw3","#,
        r#""attachment":"cloud-connect","outside":"out2","inside":"in2","addresses":["192.0.2.3","2001:db8::3"]}}},"#,
        r#"{"add":{"customer-gateway":{"name":"idc3","address":"203.0.113.3"}}},{"delete":{"spd":{"gateway":"gw1","#,
        r#""local":"10.1.0.0/16","remote":"172.16.1.0/24","protocol":"tcp","remote_ports":"443"}}}],"cascade":true}}}"#
    ),
    r#"{"version":1,"id":5,"request":{"lookup":{"gateway":"gw1","address":"172.16.1.9","source":"10.1.2.3"}}}"#,
    r#"{"version":1,"request":{"list":{"kind":"route","gateway":"gw1"}}}"#,
    r#"{"version":1,"request":{"show":{"kind":"customer-gateway","name":"idc6"}}}"#,
    r#"{"version":1,"request":"export"}"#,
    r#"{"version":1,"request":"stats"}"#,
    concat!(
        r#"{"version":1,"request":{"apply":{"changes":[{"set":{"gateway":{"name":"gw1","attachment":"vpc","#,
        r#""outside":"out","inside":"in","addresses":["192.0.2.1"],"bandwidth_mbps":100,"alarm_loss_percent":20,"#,
        r#""alarm_utilisation_percent":80}}},{"add":{"tunnel":{"name":"t4","gateway":"gw1","customer_gateway":"idc1","#,
        r#""suite":"aes-gcm-128","health_check":{"local":"169.254.1.1","remote":"169.254.1.2","interval_ms":1000,"#,
        r#""failures":3,"timeout_ms":500,"hold_down_ms":0},"outbound":{"spi":4100,"key":"00112233445566778899aabbccddeeff01020304"},"#,
        r#""inbound":[{"spi":8196,"key":"00112233445566778899aabbccddeeff01020304"}]}}}]}}}"#
    ),
    r#"{"version":1,"id":7,"request":{"events":{"since":0}}}"#,
    r#"{"version":1,"request":"metrics"}"#,
    r#"{"version":1,"request":{"capture":{"tunnel":"t1","point":"outer","count":10,"pps":100}}}"#,
    r#"{"version":1,"request":{"capture-read":{"id":1}}}"#,
];

/// Placeholder link data, as `vpngw --check` gives.
fn link(_: &str) -> Result<Link, String> {
    Ok(Link { mac: [2, 0, 0, 0, 0, 1], mtu: 1500, addrs: vec![], neighbours: vec![] })
}

/// A template with the damage applied: 4-byte chunks `[op, at, at, byte]`
/// replacing (op even) or inserting (op odd) `byte` at `at`.
fn damaged(template: &str, damage: &[u8]) -> Vec<u8> {
    let mut line = template.as_bytes().to_vec();
    for c in damage.chunks_exact(4) {
        let at = u16::from_be_bytes([c[1], c[2]]) as usize;
        if c[0] & 1 == 0 {
            let at = at % line.len();
            line[at] = c[3];
        } else {
            line.insert(at % (line.len() + 1), c[3]);
        }
    }
    line
}

fn check(line: &[u8]) {
    let env = match api::parse(line) {
        Ok(env) => env,
        Err(e) => {
            assert!(matches!(e.kind, ErrorKind::Parse | ErrorKind::Version | ErrorKind::TooLong), "{e:?}");
            return;
        }
    };
    let text = serde_json::to_string(&env).expect("an envelope serializes");
    let again = api::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text} does not parse back: {e}"));
    assert_eq!(again, env, "{text}");

    let base = base();
    // What the control thread should make of a batch.
    let wanted = match &env.request {
        Request::Apply { changes, cascade } => match api::apply(base, changes, *cascade) {
            Ok(next) => match next.to_model(link, 0) {
                Ok(model) => match Snapshot::build(&model, 2) {
                    Ok(_) => {
                        // The state file the daemon writes loads back.
                        let toml = next.to_toml();
                        let back: Config =
                            toml.parse().unwrap_or_else(|e| panic!("the state file does not load: {e}\n{toml}"));
                        assert_eq!(back, next, "{toml}");
                        Some(Some(next))
                    }
                    Err(_) => Some(None),
                },
                Err(_) => Some(None),
            },
            Err(_) => Some(None),
        },
        _ => None,
    };

    // The control thread itself (no state file), on the base configuration.
    let model = base.to_model(link, 0).expect("the base configuration runs");
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).expect("the base snapshot")));
    let (mut control, _) = Control::new(base.clone(), model, cell.clone(), 1, None).expect("Control::new");
    let answer = control.handle(&env.request, &[]);
    if let Ok(v) = &answer {
        serde_json::to_string(v).expect("an answer serializes");
    }
    match (wanted, answer) {
        (None, _) => {}
        (Some(Some(next)), Ok(_)) => {
            assert_eq!(control.file(), &next);
            assert_eq!(cell.load().generation, 2);
        }
        (Some(None), Err(_)) => {
            assert_eq!(control.file(), base);
            assert_eq!(cell.load().generation, 1);
        }
        (Some(w), a) => panic!("api::apply, to_model and the snapshot say {:?}, Control says {a:?}", w.is_some()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        check(rest);
    } else {
        let template = TEMPLATES[(mode as usize >> 1) % TEMPLATES.len()];
        check(&damaged(template, rest));
    }
});
