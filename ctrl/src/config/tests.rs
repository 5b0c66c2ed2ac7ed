use super::*;
use vpngw_engine::snapshot::Snapshot;

const KEY16: &str = "00112233445566778899aabbccddeeff01020304";

fn example() -> String {
    format!(
        r#"
[[interface]]
name = "gw-out"
role = "outside"
router = "192.0.2.254"

[[interface]]
name = "gw-in"
role = "inside"

[[gateway]]
name = "gw1"
attachment = "vpc"
outside = "gw-out"
inside = "gw-in"
addresses = ["192.0.2.1"]

[[customer_gateway]]
name = "idc1"
address = "198.51.100.1"

[[tunnel]]
name = "t1"
gateway = "gw1"
customer_gateway = "idc1"
suite = "aes-gcm-128"
nat_t = true
mss_clamp = 1360
hard_lifetime = {{ seconds = 3600 }}
outbound = {{ spi = 0x1001, key = "{KEY16}" }}
inbound = [{{ spi = 0x2001, key = "{KEY16}" }}]

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

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/16"
via = "tunnel:t1"

[[route]]
gateway = "gw1"
prefix = "10.1.0.0/16"
via = "inside"
priority = 5
enabled = false
"#
    )
}

fn link(name: &str) -> Result<Link, String> {
    let n = name.len() as u8;
    Ok(Link { mac: [2, 0, 0, 0, 0, n], mtu: 1500, addrs: vec![], neighbours: vec![] })
}

fn error_of(text: &str) -> String {
    match text.parse::<Config>().and_then(|c| c.to_model(link, 0)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_example_becomes_a_model_a_snapshot_accepts() {
    let cfg: Config = example().parse().unwrap();
    let model = cfg.to_model(link, 0).unwrap();
    assert_eq!(model.ports.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(model.ports[0].router, Some("192.0.2.254".parse().unwrap()));
    let t = &model.tunnels[0];
    assert_eq!((t.gateway, t.customer_gateway, t.mss_clamp), (1, 1, Some(1360)));
    let out = t.outbound.as_ref().unwrap().lock().unwrap();
    assert_eq!(out.cfg.spi, 0x1001);
    assert_eq!(out.cfg.natt, Some(NatT::DEFAULT));
    assert_eq!(out.cfg.lifetimes.hard.seconds, Some(3600));
    assert_eq!(out.cfg.local, "192.0.2.1".parse::<IpAddr>().unwrap());
    drop(out);
    assert_eq!(model.spd[0].protocol, Some(6));
    assert_eq!(model.spd[0].dst_ports, PortRange { first: 443, last: 443 });
    assert_eq!(model.spd[0].action, SpdAction::Protect(1));
    assert_eq!(model.spd[1].action, SpdAction::Discard);
    assert_eq!((model.routes[0].len, model.routes[0].next_hop), (16, NextHop::Tunnel(1)));
    assert!(!model.routes[1].enabled);
    Snapshot::build(&model, 1).expect("the engine accepts it");
}

#[test]
fn toml_round_trips() {
    let cfg: Config = example().parse().unwrap();
    let again: Config = cfg.to_toml().parse().unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn errors_name_object_field_and_value() {
    let ex = example();
    let cases = [
        (ex.replace("mss_clamp", "mss_clamps"), "unknown field"),
        (ex.replace("prefix = \"172.16.0.0/16\"", "prefix = \"172.16.0.1/16\""), "route 172.16.0.1/16 (gateway gw1): prefix = 172.16.0.1/16: host bits set"),
        (ex.replace("via = \"tunnel:t1\"", "via = \"tunnel:t9\""), "via = t9: is not a tunnel"),
        (ex.replace("action = \"protect:t1\"", "action = \"encrypt\""), "spd rule 1 (gateway gw1): action = encrypt"),
        (ex.replace("suite = \"aes-gcm-128\"", "suite = \"aes-gcm-256\""), "tunnel t1: outbound = 0x1001"),
        (ex.replace("suite = \"aes-gcm-128\"", "suite = \"des\""), "tunnel t1: suite = des"),
        (ex.replace("spi = 0x1001", "spi = 7"), "reserved"),
        (ex.replace("inside = \"gw-in\"\n", ""), "gateway gw1: inside = (none)"),
        (ex.replace("outside = \"gw-out\"", "outside = \"gw-in\""), "gateway gw1: outside = gw-in: is not an outside interface"),
        (ex.replace("remote = \"any\"", "remote = \"fd00::/64\""), "is not of the local range's address family"),
        (ex.replace("remote_ports = \"443\"", "remote_ports = \"443-80\""), "remote_ports = 443-80: the range is out of order"),
        (ex.replace("customer_gateway = \"idc1\"", "customer_gateway = \"idc9\""), "customer_gateway = idc9"),
        (ex.replace("key = \"0011", "key = \"zz11"), "tunnel t1: outbound = (key): not hex"),
        (ex.replace("name = \"gw-in\"", "name = \"gw-out\""), "interface gw-out: name = gw-out: is defined twice"),
        (format!("{ex}\n[[gateway]]\nname = \"gw1\"\nattachment = \"vpc\"\noutside = \"gw-out\"\ninside = \"gw-in\"\naddresses = [\"192.0.2.2\"]\n"), "is defined twice"),
        ("interface = 3".to_string(), "invalid type"),
        ("[[route]\n".to_string(), "TOML parse error"),
    ];
    for (text, want) in cases {
        let got = error_of(&text);
        assert!(got.contains(want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn the_kernel_not_knowing_an_interface_is_an_error() {
    let cfg: Config = example().parse().unwrap();
    let e = cfg.to_model(|n| Err(format!("no interface {n}")), 0).unwrap_err().to_string();
    assert_eq!(e, "interface gw-out: name = gw-out: no interface gw-out");
}

#[test]
fn keys_stay_out_of_debug_output() {
    let cfg: Config = example().parse().unwrap();
    assert!(!format!("{cfg:?}").contains("00112233"));
}
