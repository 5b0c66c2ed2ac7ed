use super::*;
use vpngw_engine::snapshot::Snapshot;

const KEY16: &str = "00112233445566778899aabbccddeeff01020304";

/// A gateway with one tunnel (static SAs), SPD rules and routes.
pub(crate) fn example() -> String {
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

pub(crate) fn link(name: &str) -> Result<Link, String> {
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

/// The example with tunnel t1 negotiated by IKE: `ike` is its inline
/// table's fields.
pub(crate) fn with_ike(ike: &str) -> String {
    let ex = example();
    let start = ex.find("suite = ").unwrap();
    let end = ex.find("inbound = [").unwrap();
    let end = end + ex[end..].find('\n').unwrap() + 1;
    format!("{}ike = {{ {ike} }}\n{}", &ex[..start], &ex[end..])
}

#[test]
fn an_ike_tunnel_has_no_sa_until_negotiated_and_its_settings_have_the_defaults() {
    let cfg: Config = with_ike(r#"psk = "a lab secret""#).parse().unwrap();
    let model = cfg.to_model(link, 0).unwrap();
    assert!(model.tunnels[0].outbound.is_none() && model.tunnels[0].inbound.is_empty());
    let snap = Snapshot::build(&model, 1).expect("the engine accepts it");
    assert!(!snap.tunnels[0].up, "a tunnel without an outbound SA is down");
    let ike = cfg.tunnels[0].ike.as_ref().unwrap();
    assert_eq!((ike.ike_lifetime, ike.lifetime, ike.negotiation), (86_400, 3_600, ike::Negotiation::Active));
    let rules = [(
        AddrRange::prefix("10.1.0.0".parse().unwrap(), 16),
        AddrRange::prefix("172.16.1.0".parse().unwrap(), 24),
        6,
        PortRange::ANY,
        PortRange { first: 443, last: 443 },
    )];
    let local: IpAddr = "192.0.2.1".parse().unwrap();
    let remote: IpAddr = "198.51.100.1".parse().unwrap();
    let s = ike::settings(&cfg.tunnels[0], local, remote, &rules).unwrap();
    assert_eq!(crate::ike::sa::show_identity(&s.local_id), "192.0.2.1");
    assert_eq!(crate::ike::sa::show_identity(&s.remote_id), "198.51.100.1");
    assert_eq!(s.ike.len(), 3);
    assert_eq!(
        (s.local_ts[0].start, s.local_ts[0].end),
        ("10.1.0.0".parse().unwrap(), "10.1.255.255".parse().unwrap())
    );
    assert_eq!((s.remote_ts[0].protocol, s.remote_ts[0].start_port, s.remote_ts[0].end_port), (6, 443, 443));
    assert_eq!(s.child_lifetime, std::time::Duration::from_secs(3600));
    // Route-based (no rules): everything, both families.
    let s = ike::settings(&cfg.tunnels[0], local, remote, &[]).unwrap();
    assert_eq!(s.local_ts.len(), 2);
    assert_eq!(s.remote_ts[1].end, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse::<IpAddr>().unwrap());
    // The PFS group joins the ESP proposals that have none.
    let cfg: Config =
        with_ike(r#"psk = "a lab secret", esp_proposals = ["aes128gcm16", "aes256gcm16-ecp384"], pfs = "x25519""#)
            .parse()
            .unwrap();
    let s = ike::settings(&cfg.tunnels[0], local, remote, &[]).unwrap();
    let esp: Vec<String> = s.esp.iter().map(|p| p.to_string()).collect();
    assert_eq!(esp, ["aes128gcm16-curve25519", "aes256gcm16-ecp384"]);
}

#[test]
fn ike_settings_are_checked_and_errors_name_the_field() {
    let ok = r#"psk = "a lab secret""#;
    let cases = [
        (with_ike(r#"psk = "short""#), "tunnel t1: ike.psk = (secret): a pre-shared key has at least 8 characters"),
        (with_ike(&format!("{ok}, ike_lifetime = 59")), "ike.ike_lifetime = 59: is not between 60 and 604800 seconds"),
        (with_ike(&format!("{ok}, lifetime = 604801")), "ike.lifetime = 604801: is not between 180 and 604800"),
        (
            with_ike(&format!("{ok}, ike_proposals = [\"3des-sha1-modp1024\"]")),
            "ike.ike_proposals = 3des-sha1-modp1024",
        ),
        (with_ike(&format!("{ok}, esp_proposals = [\"aes128-md5\"]")), "weak"),
        (with_ike(&format!("{ok}, esp_proposals = []")), "at least one proposal"),
        (with_ike(&format!("{ok}, dpd = {{ interval = 10, timeout = 5 }}")), "ike.dpd.timeout = 5"),
        (with_ike(&format!("{ok}, dpd = {{ interval = 0, timeout = 5 }}")), "ike.dpd.interval = 0"),
        (with_ike(&format!("{ok}, dpd = {{ interval = 2, timeout = 6, action = \"hold\" }}")), "unknown variant"),
        (with_ike(&format!("{ok}, negotiation = \"sometimes\"")), "unknown variant"),
        (with_ike(&format!("{ok}, remote_id = \"not an id!\"")), "ike.remote_id = not an id!: an identity is"),
        (with_ike(&format!("{ok}, lifetime_kilobytes = 10")), "ike.lifetime_kilobytes = 10"),
        (with_ike(&format!("{ok}, psks = \"x\"")), "unknown field"),
        (
            example().replace("suite = \"aes-gcm-128\"", "ike = { psk = \"a lab secret\" }\nsuite = \"aes-gcm-128\""),
            "or ike, not both",
        ),
        (example().replace("outbound = {", "outbounds = {"), "unknown field"),
        (with_ike(ok).replace("ike = {", "ikes = {"), "unknown field"),
    ];
    for (text, want) in cases {
        let got = error_of(&text);
        assert!(got.contains(want), "want {want:?}, got {got:?}");
    }
    // Neither static SAs nor IKE.
    let mut cfg: Config = example().parse().unwrap();
    cfg.tunnels[0].outbound = None;
    let e = cfg.to_model(link, 0).unwrap_err().to_string();
    assert!(e.contains("a tunnel has static SAs (suite, outbound, inbound) or ike"), "{e}");
}

#[test]
fn an_ike_tunnel_round_trips_and_its_psk_stays_out_of_debug_output() {
    let text = with_ike(
        r#"psk = "a lab secret", negotiation = "passive", dpd = { interval = 10, timeout = 30 }, lifetime_kilobytes = 4096"#,
    );
    let cfg: Config = text.parse().unwrap();
    let again: Config = cfg.to_toml().parse().unwrap();
    assert_eq!(again, cfg);
    assert!(!format!("{cfg:?}").contains("a lab secret"));
}
