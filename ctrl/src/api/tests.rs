use super::*;
use crate::config::Link;

const KEY16: &str = "00112233445566778899aabbccddeeff01020304";

/// Two gateways: gw1 with tunnels t1 and t2 to idc1, gw2 with t3 to idc2;
/// SPD rules and routes into each, and some that use no tunnel.
fn base() -> Config {
    format!(
        r#"
[[interface]]
name = "out"
role = "outside"

[[interface]]
name = "in"
role = "inside"

[[gateway]]
name = "gw1"
attachment = "vpc"
outside = "out"
inside = "in"
addresses = ["192.0.2.1"]

[[gateway]]
name = "gw2"
attachment = "vpc"
outside = "out"
inside = "in"
addresses = ["192.0.2.2"]

[[customer_gateway]]
name = "idc1"
address = "198.51.100.1"

[[customer_gateway]]
name = "idc2"
address = "198.51.100.2"

[[tunnel]]
name = "t1"
gateway = "gw1"
customer_gateway = "idc1"
suite = "aes-gcm-128"
outbound = {{ spi = 0x1001, key = "{KEY16}" }}
inbound = [{{ spi = 0x2001, key = "{KEY16}" }}]

[[tunnel]]
name = "t2"
gateway = "gw1"
customer_gateway = "idc1"
suite = "aes-gcm-128"
outbound = {{ spi = 0x1002, key = "{KEY16}" }}
inbound = [{{ spi = 0x2002, key = "{KEY16}" }}]

[[tunnel]]
name = "t3"
gateway = "gw2"
customer_gateway = "idc2"
suite = "aes-gcm-128"
outbound = {{ spi = 0x1003, key = "{KEY16}" }}
inbound = [{{ spi = 0x2003, key = "{KEY16}" }}]

[[spd]]
gateway = "gw1"
local = "10.1.0.0/16"
remote = "172.16.1.0/24"
action = "protect:t1"

[[spd]]
gateway = "gw1"
local = "10.1.0.0/16"
remote = "172.16.2.0/24"
action = "protect:t2"

[[spd]]
gateway = "gw1"
local = "10.1.0.5"
remote = "any"
action = "discard"

[[spd]]
gateway = "gw2"
local = "10.2.0.0/16"
remote = "172.17.0.0/16"
action = "protect:t3"

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

[[route]]
gateway = "gw2"
prefix = "172.17.0.0/16"
via = "tunnel:t3"
"#
    )
    .parse()
    .expect("the base configuration parses")
}

fn link(_: &str) -> Result<Link, String> {
    Ok(Link { mac: [2, 0, 0, 0, 0, 1], mtu: 1500, addrs: vec![], neighbours: vec![] })
}

/// The configuration still becomes a model: no reference dangles.
fn runs(cfg: &Config) {
    if let Err(e) = cfg.to_model(link, 0) {
        panic!("the configuration does not run: {e}\n{}", cfg.to_toml());
    }
}

fn tunnel(name: &str, gateway: &str, spi: u32) -> Tunnel {
    Tunnel {
        name: name.into(),
        gateway: gateway.into(),
        customer_gateway: "idc1".into(),
        suite: Some("aes-gcm-128".into()),
        up: true,
        nat_t: None,
        esn: false,
        replay_window: None,
        mss_clamp: None,
        health_check: None,
        soft_lifetime: None,
        hard_lifetime: None,
        outbound: Some(crate::config::StaticSa { spi, key: KEY16.into() }),
        inbound: vec![crate::config::StaticSa { spi: spi + 0x1000, key: KEY16.into() }],
        ike: None,
    }
}

fn route(gateway: &str, prefix: &str, via: &str) -> Route {
    Route { gateway: gateway.into(), prefix: prefix.into(), via: via.into(), priority: 0, enabled: true }
}

fn tunnel_names(cfg: &Config) -> Vec<&str> {
    cfg.tunnels.iter().map(|t| t.name.as_str()).collect()
}

fn spd_actions(cfg: &Config) -> Vec<(&str, &str)> {
    cfg.spd.iter().map(|r| (r.gateway.as_str(), r.action.as_str())).collect()
}

fn route_vias(cfg: &Config) -> Vec<(&str, &str)> {
    cfg.routes.iter().map(|r| (r.gateway.as_str(), r.via.as_str())).collect()
}

fn kind_of(r: Result<Envelope, ApiError>) -> ErrorKind {
    match r {
        Ok(e) => panic!("accepted: {e:?}"),
        Err(e) => e.kind,
    }
}

// ---- parse ----

#[test]
fn parses_the_documented_envelope() {
    let line = br#"{"version": 1, "id": 7, "request": {"apply": {"changes": [
        {"add": {"route": {"gateway": "gw1", "prefix": "172.16.0.0/16", "via": "tunnel:t1"}}},
        {"delete": {"tunnel": "t0"}}], "cascade": false}}}"#;
    let want = Envelope {
        version: 1,
        id: Some(7),
        request: Request::Apply {
            changes: vec![
                Change::Add(Object::Route(route("gw1", "172.16.0.0/16", "tunnel:t1"))),
                Change::Delete(Key::Tunnel("t0".into())),
            ],
            cascade: false,
        },
    };
    assert_eq!(parse(line).unwrap(), want);
}

#[test]
fn parses_requests_without_id_and_with_defaults() {
    let e = parse(br#"{"version":1,"request":"export"}"#).unwrap();
    assert_eq!((e.id, e.request), (None, Request::Export));
    let e = parse(br#"{"version":1,"request":{"apply":{"changes":[]}}}"#).unwrap();
    assert_eq!(e.request, Request::Apply { changes: vec![], cascade: false }, "cascade defaults to false");
    let e = parse(br#"{"version":1,"request":{"list":{"kind":"customer-gateway","gateway":"gw1"}}}"#).unwrap();
    assert_eq!(e.request, Request::List { kind: Kind::CustomerGateway, gateway: Some("gw1".into()) });
    let e = parse(br#"{"version":1,"request":{"lookup":{"gateway":"gw1","address":"fd00::1"}}}"#).unwrap();
    assert_eq!(e.request, Request::Lookup { gateway: "gw1".into(), address: "fd00::1".parse().unwrap(), source: None });
    // A route given in full: priority and enabled as written.
    let e = parse(
        br#"{"version":1,"request":{"apply":{"cascade":true,"changes":[{"set":{"route":
            {"gateway":"gw1","prefix":"10.0.0.0/8","via":"inside","priority":3,"enabled":false}}}]}}}"#,
    )
    .unwrap();
    let mut r = route("gw1", "10.0.0.0/8", "inside");
    (r.priority, r.enabled) = (3, false);
    assert_eq!(e.request, Request::Apply { changes: vec![Change::Set(Object::Route(r))], cascade: true });
}

#[test]
fn a_version_other_than_1_is_a_version_error_whatever_else_is_wrong() {
    for line in [
        &br#"{"version":2,"request":"export"}"#[..],
        br#"{"version":0,"request":"export"}"#,
        // A newer client's fields are not what it hears about.
        br#"{"version":2,"request":{"frobnicate":{}},"extra":true}"#,
    ] {
        let e = parse(line).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Version, "{}", String::from_utf8_lossy(line));
        assert!(e.message.contains("this daemon speaks 1"), "{}", e.message);
    }
}

#[test]
fn a_missing_or_malformed_version_is_a_parse_error() {
    let e = parse(br#"{"request":"export"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Parse);
    assert!(e.message.contains("no \"version\""), "{}", e.message);
    for line in [
        &br#"{"version":"1","request":"export"}"#[..],
        br#"{"version":-1,"request":"export"}"#,
        br#"{"version":1.5,"request":"export"}"#,
        br#"{"version":null,"request":"export"}"#,
    ] {
        assert_eq!(kind_of(parse(line)), ErrorKind::Parse, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    let cases: [(&[u8], &str); 6] = [
        (br#"{"version":1,"request":"export","colour":"red"}"#, "colour"),
        (br#"{"version":1,"request":{"list":{"kind":"tunnel","colour":"red"}}}"#, "colour"),
        (br#"{"version":1,"request":{"apply":{"changes":[],"cascade":false,"force":true}}}"#, "force"),
        (br#"{"version":1,"request":{"frobnicate":{}}}"#, "frobnicate"),
        (
            br#"{"version":1,"request":{"apply":{"changes":[{"add":{"route":
                {"gateway":"gw1","prefix":"10.0.0.0/8","via":"inside","metric":5}}}]}}}"#,
            "metric",
        ),
        (br#"{"version":1,"request":{"apply":{"changes":[{"delete":{"spd":{"gateway":"gw1","local":"any","remote":"any","action":"discard"}}}]}}}"#, "action"),
    ];
    for (line, field) in cases {
        let e = parse(line).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Parse, "{}", String::from_utf8_lossy(line));
        assert!(e.message.contains(field), "the message names {field:?}: {}", e.message);
    }
    // The same lines without the stranger parse: it was the unknown field.
    assert!(parse(br#"{"version":1,"request":{"list":{"kind":"tunnel"}}}"#).is_ok());
    assert!(parse(
        br#"{"version":1,"request":{"apply":{"changes":[{"add":{"route":
        {"gateway":"gw1","prefix":"10.0.0.0/8","via":"inside"}}}]}}}"#
    )
    .is_ok());
}

#[test]
fn a_line_over_max_line_is_too_long_and_one_at_max_line_is_not() {
    let request = br#"{"version":1,"request":"export"}"#;
    let mut line = request.to_vec();
    line.resize(MAX_LINE, b' ');
    assert_eq!(parse(&line).unwrap().request, Request::Export);
    line.push(b' ');
    let e = parse(&line).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLong);
    assert!(e.message.contains(&MAX_LINE.to_string()), "{}", e.message);
}

#[test]
fn what_is_not_a_json_request_object_is_a_parse_error() {
    for line in [
        &b""[..],
        b"hello",
        b"[1, 2]",
        b"1",
        b"{\"version\":1,\"request\":\"export\"",
        b"{\"version\":1,\"request\":\"export\"} {}",
        b"{\"version\":1,\"request\":\"exp\xffort\"}",
        b"{\"version\":1,\"request\":\"export\",\"request\":\"stats\"}",
    ] {
        assert_eq!(kind_of(parse(line)), ErrorKind::Parse, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn a_change_list_round_trips_through_json() {
    let cfg = base();
    let changes = vec![
        Change::Add(Object::Gateway(cfg.gateways[0].clone())),
        Change::Add(Object::CustomerGateway(cfg.customer_gateways[1].clone())),
        Change::Set(Object::Tunnel(cfg.tunnels[2].clone())),
        Change::Set(Object::Spd(cfg.spd[0].clone())),
        Change::Add(Object::Route(cfg.routes[1].clone())),
        Change::Delete(Key::Gateway("gw1".into())),
        Change::Delete(Key::CustomerGateway("idc1".into())),
        Change::Delete(Key::Tunnel("t1".into())),
        Change::Delete(Key::Spd(SpdKey::of(&cfg.spd[2]))),
        Change::Delete(Key::Route(RouteKey::of(&cfg.routes[3]))),
    ];
    let text = serde_json::to_string(&changes).unwrap();
    let back: Vec<Change> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, changes);
    // The shape the protocol documents.
    assert_eq!(serde_json::to_string(&changes[7]).unwrap(), r#"{"delete":{"tunnel":"t1"}}"#);
    assert_eq!(
        serde_json::to_value(&changes[9]).unwrap(),
        serde_json::json!({"delete": {"route": {"gateway": "gw2", "prefix": "172.17.0.0/16", "via": "tunnel:t3"}}})
    );
    // And inside an envelope, through `parse`.
    let env = Envelope { version: VERSION, id: Some(9), request: Request::Apply { changes, cascade: true } };
    assert_eq!(parse(serde_json::to_string(&env).unwrap().as_bytes()).unwrap(), env);
}

// ---- apply ----

#[test]
fn the_base_configuration_runs() {
    runs(&base());
}

#[test]
fn an_add_appends_and_a_second_add_is_exists() {
    let cfg = base();
    let t4 = tunnel("t4", "gw1", 0x1004);
    let next = apply(&cfg, &[Change::Add(Object::Tunnel(t4.clone()))], false).unwrap();
    assert_eq!(tunnel_names(&next), ["t1", "t2", "t3", "t4"]);
    assert_eq!(next.tunnels[3], t4);
    runs(&next);

    let e = apply(&next, &[Change::Add(Object::Tunnel(t4.clone()))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists);
    assert_eq!(e.object.as_deref(), Some("tunnel t4"));
    // The identity is the name: other fields differing does not matter.
    let mut other = t4;
    other.outbound.as_mut().unwrap().spi = 0x9999;
    assert_eq!(apply(&next, &[Change::Add(Object::Tunnel(other))], false).unwrap_err().kind, ErrorKind::Exists);
    // A route's identity is gateway, prefix and next hop, not its priority.
    let mut r = cfg.routes[0].clone();
    r.priority = 99;
    let e = apply(&cfg, &[Change::Add(Object::Route(r))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists);
    assert_eq!(e.object.as_deref(), Some("route 172.16.0.0/16 via tunnel:t1 (gateway gw1)"));
    // Same selectors with another action: the same SPD rule.
    let mut s = cfg.spd[0].clone();
    s.action = "discard".into();
    assert_eq!(apply(&cfg, &[Change::Add(Object::Spd(s))], false).unwrap_err().kind, ErrorKind::Exists);
    // Two adds of one gateway in one batch.
    let mut g = cfg.gateways[0].clone();
    g.name = "gw3".into();
    let twice = [Change::Add(Object::Gateway(g.clone())), Change::Add(Object::Gateway(g))];
    assert_eq!(apply(&cfg, &twice, false).unwrap_err().kind, ErrorKind::Exists);
}

#[test]
fn a_set_replaces_in_place_and_a_set_of_what_is_missing_is_not_found() {
    let cfg = base();
    let mut t2 = cfg.tunnels[1].clone();
    t2.up = false;
    let next = apply(&cfg, &[Change::Set(Object::Tunnel(t2.clone()))], false).unwrap();
    assert_eq!(tunnel_names(&next), ["t1", "t2", "t3"], "the order is kept");
    assert_eq!(next.tunnels[1], t2);
    assert_eq!((&next.tunnels[0], &next.tunnels[2]), (&cfg.tunnels[0], &cfg.tunnels[2]));

    let mut s = cfg.spd[1].clone();
    (s.priority, s.action) = (7, "bypass".into());
    let next = apply(&cfg, &[Change::Set(Object::Spd(s.clone()))], false).unwrap();
    assert_eq!(next.spd.len(), cfg.spd.len());
    assert_eq!(next.spd[1], s);

    let e = apply(&cfg, &[Change::Set(Object::Tunnel(tunnel("t9", "gw1", 0x1009)))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.object.as_deref(), Some("tunnel t9"));
    assert_eq!(e.message, "tunnel t9 does not exist");
    // A route with another next hop is another route.
    let e = apply(&cfg, &[Change::Set(Object::Route(route("gw1", "172.16.0.0/16", "inside")))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let mut g = cfg.gateways[0].clone();
    g.name = "gw9".into();
    assert_eq!(apply(&cfg, &[Change::Set(Object::Gateway(g))], false).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn deletes_of_what_is_missing_are_not_found() {
    let cfg = base();
    let mut missing_spd = SpdKey::of(&cfg.spd[0]);
    missing_spd.protocol = Some("tcp".into());
    for k in [
        Key::Gateway("gw9".into()),
        Key::CustomerGateway("idc9".into()),
        Key::Tunnel("t9".into()),
        Key::Spd(missing_spd),
        Key::Route(RouteKey { gateway: "gw2".into(), prefix: "172.16.0.0/16".into(), via: "tunnel:t1".into() }),
    ] {
        for cascade in [false, true] {
            let e = apply(&cfg, &[Change::Delete(k.clone())], cascade).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound, "{k:?}");
        }
    }
}

#[test]
fn deleting_a_tunnel_in_use_is_refused_naming_the_users_and_a_cascade_takes_them() {
    let cfg = base();
    let e = apply(&cfg, &[Change::Delete(Key::Tunnel("t1".into()))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InUse);
    assert_eq!(e.object.as_deref(), Some("tunnel t1"));
    assert!(e.message.contains("spd rule 10.1.0.0/16 -> 172.16.1.0/24 (gateway gw1)"), "{}", e.message);
    assert!(e.message.contains("route 172.16.0.0/16 via tunnel:t1 (gateway gw1)"), "{}", e.message);
    assert!(!e.message.contains("tunnel:t2") && !e.message.contains("172.16.2.0"), "only t1's users: {}", e.message);

    let next = apply(&cfg, &[Change::Delete(Key::Tunnel("t1".into()))], true).unwrap();
    assert_eq!(tunnel_names(&next), ["t2", "t3"]);
    assert_eq!(spd_actions(&next), [("gw1", "protect:t2"), ("gw1", "discard"), ("gw2", "protect:t3")]);
    assert_eq!(route_vias(&next), [("gw1", "tunnel:t2"), ("gw1", "inside"), ("gw2", "tunnel:t3")]);
    runs(&next);

    // Its users deleted first (in the same batch), the tunnel goes without a cascade.
    let by_hand = [
        Change::Delete(Key::Spd(SpdKey::of(&cfg.spd[0]))),
        Change::Delete(Key::Route(RouteKey::of(&cfg.routes[0]))),
        Change::Delete(Key::Tunnel("t1".into())),
    ];
    assert_eq!(apply(&cfg, &by_hand, false).unwrap(), next);
}

#[test]
fn a_refusal_lists_five_users_and_counts_the_rest() {
    let mut cfg = base();
    for i in 0..7 {
        cfg.routes.push(route("gw1", &format!("172.20.{i}.0/24"), "tunnel:t2"));
    }
    let e = apply(&cfg, &[Change::Delete(Key::Tunnel("t2".into()))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InUse);
    // 1 SPD rule and 8 routes: five named, four more.
    assert!(e.message.contains(" and 4 more;"), "{}", e.message);
    assert_eq!(e.message.matches("route ").count(), 4, "{}", e.message);
}

#[test]
fn deleting_a_gateway_with_a_cascade_takes_its_tunnels_rules_and_routes() {
    let cfg = base();
    let e = apply(&cfg, &[Change::Delete(Key::Gateway("gw1".into()))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InUse);
    assert!(e.message.contains("tunnel t1") && e.message.contains("tunnel t2"), "{}", e.message);
    assert!(!e.message.contains("t3"), "{}", e.message);

    let next = apply(&cfg, &[Change::Delete(Key::Gateway("gw1".into()))], true).unwrap();
    assert_eq!(next.gateways.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["gw2"]);
    assert_eq!(tunnel_names(&next), ["t3"]);
    assert_eq!(spd_actions(&next), [("gw2", "protect:t3")]);
    assert_eq!(route_vias(&next), [("gw2", "tunnel:t3")]);
    assert_eq!(next.customer_gateways, cfg.customer_gateways, "customer gateways are not the gateway's");
    runs(&next);
}

#[test]
fn deleting_a_gateway_without_users_needs_no_cascade() {
    let mut cfg = base();
    let mut g = cfg.gateways[0].clone();
    g.name = "gw3".into();
    cfg.gateways.push(g);
    let next = apply(&cfg, &[Change::Delete(Key::Gateway("gw3".into()))], false).unwrap();
    assert_eq!(next, base());
}

#[test]
fn deleting_a_customer_gateway_with_a_cascade_takes_its_tunnels_and_their_users() {
    let cfg = base();
    let e = apply(&cfg, &[Change::Delete(Key::CustomerGateway("idc2".into()))], false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InUse);
    assert!(e.message.contains("tunnel t3"), "{}", e.message);
    let next = apply(&cfg, &[Change::Delete(Key::CustomerGateway("idc2".into()))], true).unwrap();
    assert_eq!(next.customer_gateways.len(), 1);
    assert_eq!(tunnel_names(&next), ["t1", "t2"]);
    assert!(next.spd.iter().all(|r| r.action != "protect:t3"));
    assert!(next.routes.iter().all(|r| r.via != "tunnel:t3"));
    assert_eq!(next.gateways, cfg.gateways, "the gateway stays");
    runs(&next);
}

#[test]
fn spd_rules_and_routes_are_deleted_by_their_identity() {
    let cfg = base();
    let next = apply(
        &cfg,
        &[Change::Delete(Key::Spd(SpdKey::of(&cfg.spd[2]))), Change::Delete(Key::Route(RouteKey::of(&cfg.routes[1])))],
        false,
    )
    .unwrap();
    assert_eq!(spd_actions(&next), [("gw1", "protect:t1"), ("gw1", "protect:t2"), ("gw2", "protect:t3")]);
    assert_eq!(route_vias(&next), [("gw1", "tunnel:t1"), ("gw1", "inside"), ("gw2", "tunnel:t3")]);
}

#[test]
fn a_batch_that_fails_late_changes_nothing() {
    let cfg = base();
    let before = cfg.clone();
    let changes = [
        Change::Add(Object::Tunnel(tunnel("t4", "gw1", 0x1004))),
        Change::Delete(Key::Tunnel("t1".into())),
        Change::Add(Object::Route(route("gw1", "172.30.0.0/16", "tunnel:t4"))),
        Change::Set(Object::Tunnel(tunnel("t9", "gw1", 0x1009))),
    ];
    let e = apply(&cfg, &changes, true).unwrap_err();
    assert_eq!((e.kind, e.object.as_deref()), (ErrorKind::NotFound, Some("tunnel t9")));
    assert_eq!(cfg, before);
    // The first three alone are fine: it was the last one.
    let next = apply(&cfg, &changes[..3], true).unwrap();
    assert_eq!(tunnel_names(&next), ["t2", "t3", "t4"]);
    // Later changes see earlier ones: a tunnel added, then deleted.
    let next = apply(
        &cfg,
        &[Change::Add(Object::Tunnel(tunnel("t4", "gw1", 0x1004))), Change::Delete(Key::Tunnel("t4".into()))],
        false,
    )
    .unwrap();
    assert_eq!(next, cfg);
}

// ---- list and show ----

#[test]
fn list_filters_by_gateway() {
    let cfg = base();
    let names = |v: serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(list(&cfg, Kind::Tunnel, None)), ["t1", "t2", "t3"]);
    assert_eq!(names(list(&cfg, Kind::Tunnel, Some("gw2"))), ["t3"]);
    assert_eq!(names(list(&cfg, Kind::Gateway, Some("gw1"))), ["gw1"]);
    assert_eq!(names(list(&cfg, Kind::CustomerGateway, None)), ["idc1", "idc2"]);
    assert!(list(&cfg, Kind::Tunnel, Some("gw9")).as_array().unwrap().is_empty());

    let spd = list(&cfg, Kind::Spd, Some("gw1"));
    assert_eq!(spd.as_array().unwrap().len(), 3);
    let back: Vec<SpdRule> = serde_json::from_value(spd).unwrap();
    assert_eq!(back, cfg.spd[..3]);
    let routes: Vec<Route> = serde_json::from_value(list(&cfg, Kind::Route, Some("gw2"))).unwrap();
    assert_eq!(routes, cfg.routes[3..]);
    let all: Vec<Route> = serde_json::from_value(list(&cfg, Kind::Route, None)).unwrap();
    assert_eq!(all, cfg.routes);
}

#[test]
fn show_finds_named_objects_only() {
    let cfg = base();
    let t: Tunnel = serde_json::from_value(show(&cfg, Kind::Tunnel, "t2").unwrap()).unwrap();
    assert_eq!(t, cfg.tunnels[1]);
    let g: Gateway = serde_json::from_value(show(&cfg, Kind::Gateway, "gw2").unwrap()).unwrap();
    assert_eq!(g, cfg.gateways[1]);
    let c: CustomerGateway = serde_json::from_value(show(&cfg, Kind::CustomerGateway, "idc1").unwrap()).unwrap();
    assert_eq!(c, cfg.customer_gateways[0]);

    let e = show(&cfg, Kind::Tunnel, "t9").unwrap_err();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::NotFound, "tunnel t9 does not exist"));
    // A gateway's name is not a tunnel's.
    assert_eq!(show(&cfg, Kind::Tunnel, "gw1").unwrap_err().kind, ErrorKind::NotFound);
    for kind in [Kind::Spd, Kind::Route] {
        assert_eq!(show(&cfg, kind, "t1").unwrap_err().kind, ErrorKind::Invalid);
    }
}
