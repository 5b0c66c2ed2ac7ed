use super::*;
use crate::api::{Change, Key, Object};
use crate::config::{Route, SpdRule, Tunnel};
use std::path::Path;

const KEY16: &str = "00112233445566778899aabbccddeeff01020304";
const KEY16_B: &str = "ffeeddccbbaa99887766554433221100a0b0c0d0";

/// One gateway with two tunnels (t1, t2) to one customer gateway, an SPD
/// rule into t1 and a route through each tunnel.
fn file() -> Config {
    format!(
        r#"
[[interface]]
name = "out"
role = "outside"
router = "192.0.2.254"

[[interface]]
name = "in"
role = "inside"

[[gateway]]
name = "gw1"
attachment = "vpc"
outside = "out"
inside = "in"
addresses = ["192.0.2.1"]

[[customer_gateway]]
name = "idc1"
address = "198.51.100.1"

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

[[spd]]
gateway = "gw1"
local = "10.1.0.0/16"
remote = "172.16.1.0/24"
action = "protect:t1"

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/16"
via = "tunnel:t1"

[[route]]
gateway = "gw1"
prefix = "172.16.0.0/16"
via = "tunnel:t2"
priority = 10
"#
    )
    .parse()
    .expect("the test configuration parses")
}

/// Placeholder link data, as `daemon::check` gives.
fn link(_: &str) -> Result<Link, String> {
    Ok(Link { mac: [2, 0, 0, 0, 0, 1], mtu: 1500, addrs: vec![], neighbours: vec![] })
}

/// A directory of its own for one test (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vpngw-control-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn state(&self) -> PathBuf {
        self.0.join("state.toml")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A control thread's state as the daemon makes it at start: the model of
/// `file`, published as generation 1.
fn control(file: Config, state: Option<&Path>) -> (Control, Arc<SnapshotCell>) {
    let model = file.to_model(link, 0).expect("the configuration runs");
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).expect("a snapshot")));
    let (c, _) = Control::new(file, model, cell.clone(), 1, state.map(Path::to_path_buf)).expect("Control::new");
    (c, cell)
}

fn apply(c: &mut Control, changes: Vec<Change>) -> Result<Value, ApiError> {
    c.handle(&Request::Apply { changes, cascade: false }, &[])
}

fn tunnel(c: &Control, name: &str) -> Tunnel {
    c.file().tunnels.iter().find(|t| t.name == name).expect("the tunnel").clone()
}

fn model_tunnel<'a>(c: &'a Control, name: &str) -> &'a model::Tunnel {
    c.model().tunnels.iter().find(|t| t.name == name).expect("the tunnel")
}

fn route(prefix: &str, via: &str) -> Route {
    Route { gateway: "gw1".into(), prefix: prefix.into(), via: via.into(), priority: 0, enabled: true }
}

fn spd(local: &str, remote: &str, action: &str) -> SpdRule {
    SpdRule {
        gateway: "gw1".into(),
        priority: 0,
        local: local.into(),
        remote: remote.into(),
        protocol: None,
        local_ports: None,
        remote_ports: None,
        action: action.into(),
    }
}

fn saved(state: &Path) -> Config {
    state::load(state).unwrap().expect("a state file")
}

#[test]
fn new_writes_the_state_file() {
    let dir = TempDir::new("new_writes_the_state_file");
    let (c, cell) = control(file(), Some(&dir.state()));
    assert_eq!(saved(&dir.state()), file());
    assert_eq!(c.file(), &file());
    assert_eq!(cell.load().generation, 1);
    assert!(state::marks_path(&dir.state()).exists(), "sequence marks from the start");
}

#[test]
fn an_accepted_apply_is_published_and_saved() {
    let dir = TempDir::new("an_accepted_apply_is_published_and_saved");
    let (mut c, cell) = control(file(), Some(&dir.state()));
    let r = apply(&mut c, vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t2")))]).unwrap();
    assert_eq!(r, json!({ "generation": 2, "changes": 1 }));
    assert_eq!(c.file().routes.len(), 3);
    assert_eq!(c.file().routes[2], route("172.20.0.0/16", "tunnel:t2"));
    assert_eq!(c.model().routes.len(), 3);
    let snap = cell.load();
    assert_eq!(snap.generation, 2);
    // The workers see the new route.
    let hop = snap.gateways[0].routes.lookup("172.20.1.1".parse().unwrap());
    assert!(hop.is_some(), "the published snapshot routes 172.20.0.0/16");
    assert_eq!(&saved(&dir.state()), c.file());

    // And a second one goes on from there.
    let r = apply(&mut c, vec![Change::Delete(Key::Route(api::RouteKey::of(&route("172.20.0.0/16", "tunnel:t2"))))]);
    assert_eq!(r.unwrap()["generation"], 3);
    assert_eq!(cell.load().generation, 3);
    assert!(cell.load().gateways[0].routes.lookup("172.20.1.1".parse().unwrap()).is_none());
    assert_eq!(saved(&dir.state()), file());
}

#[test]
fn a_refused_apply_changes_nothing() {
    let dir = TempDir::new("a_refused_apply_changes_nothing");
    let (mut c, cell) = control(file(), Some(&dir.state()));
    let mut spi_collision = tunnel(&c, "t2");
    spi_collision.name = "t3".into();
    spi_collision.inbound[0].spi = 0x2003; // only the outbound SPI collides with t2's
    let mut inbound_collision = tunnel(&c, "t2");
    inbound_collision.name = "t3".into();
    inbound_collision.outbound.as_mut().unwrap().spi = 0x1003;
    inbound_collision.inbound[0].spi = 0x2001; // t1 receives on it
    let mut short_key = tunnel(&c, "t1");
    short_key.outbound.as_mut().unwrap().key = KEY16[..32].into(); // no salt
    let mut long_key = tunnel(&c, "t2");
    long_key.inbound[0].key = format!("{KEY16}00");
    let mut wrong_suite = tunnel(&c, "t1");
    wrong_suite.suite = Some("aes-gcm-256".into()); // the key is 16 bytes and a salt
    let mut bad_window = tunnel(&c, "t1");
    bad_window.replay_window = Some(0);
    let cases: Vec<(Vec<Change>, api::ErrorKind, &str)> = vec![
        (vec![Change::Add(Object::Route(route("172.20.0.1/16", "tunnel:t1")))], ErrorKind::Invalid, "host bits set"),
        (vec![Change::Add(Object::Route(route("172.20.0.0/33", "tunnel:t1")))], ErrorKind::Invalid, "/33"),
        (vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t9")))], ErrorKind::Invalid, "is not a tunnel"),
        (
            vec![Change::Add(Object::Spd(spd("10.2.0.0/16", "172.16.1.0/24", "protect:t9")))],
            ErrorKind::Invalid,
            "is not a tunnel",
        ),
        (vec![Change::Add(Object::Tunnel(spi_collision))], ErrorKind::Invalid, "already sends to 198.51.100.1"),
        (vec![Change::Add(Object::Tunnel(inbound_collision))], ErrorKind::Invalid, "already receives on 192.0.2.1"),
        // Overlapping the rule into t1 (10.1.0.0/16 -> 172.16.1.0/24), into t2.
        (
            vec![Change::Add(Object::Spd(spd("10.1.2.0/24", "172.16.0.0/16", "protect:t2")))],
            ErrorKind::Invalid,
            "ambiguous",
        ),
        (vec![Change::Set(Object::Tunnel(short_key))], ErrorKind::Invalid, "tunnel t1: outbound = 0x1001"),
        (vec![Change::Set(Object::Tunnel(long_key))], ErrorKind::Invalid, "tunnel t2: inbound = 0x2002"),
        (vec![Change::Set(Object::Tunnel(wrong_suite))], ErrorKind::Invalid, "tunnel t1: outbound = 0x1001"),
        (vec![Change::Set(Object::Tunnel(bad_window))], ErrorKind::Invalid, "tunnel t1: inbound"),
        // A good change before a bad one in the same batch: neither.
        (
            vec![
                Change::Add(Object::Route(route("172.21.0.0/16", "tunnel:t2"))),
                Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t9"))),
            ],
            ErrorKind::Invalid,
            "is not a tunnel",
        ),
        (vec![Change::Delete(Key::Tunnel("t1".into()))], ErrorKind::InUse, "is used by"),
        (vec![Change::Delete(Key::Tunnel("t9".into()))], ErrorKind::NotFound, "does not exist"),
    ];
    let first_sa = model_tunnel(&c, "t1").outbound.clone().unwrap().clone();
    for (changes, kind, why) in cases {
        let e = apply(&mut c, changes.clone()).expect_err(&format!("accepted: {changes:?}"));
        assert_eq!(e.kind, kind, "{changes:?}: {e}");
        assert!(e.message.contains(why), "{changes:?}: want {why:?} in {:?}", e.message);
        assert_eq!(c.file(), &file(), "{changes:?}");
        assert_eq!(saved(&dir.state()), file(), "{changes:?}");
        assert_eq!(cell.load().generation, 1, "{changes:?}");
        assert_eq!(c.model().routes.len(), 2);
        assert!(
            Arc::ptr_eq(&model_tunnel(&c, "t1").outbound.clone().unwrap(), &first_sa),
            "the model is the one before"
        );
    }
    // A good change then goes through as generation 2.
    let r = apply(&mut c, vec![Change::Add(Object::Route(route("172.21.0.0/16", "tunnel:t2")))]).unwrap();
    assert_eq!(r["generation"], 2);
}

#[test]
fn a_change_that_cannot_be_saved_is_not_applied() {
    let dir = TempDir::new("a_change_that_cannot_be_saved_is_not_applied");
    let (mut c, cell) = control(file(), Some(&dir.state()));
    // A directory where the temporary file would go: the write fails.
    let tmp = dir.0.join("state.toml.tmp");
    std::fs::create_dir(&tmp).unwrap();
    let e = apply(&mut c, vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t2")))]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Persist);
    assert_eq!(c.file(), &file());
    assert_eq!(cell.load().generation, 1);
    assert_eq!(saved(&dir.state()), file());
    std::fs::remove_dir(&tmp).unwrap();
    apply(&mut c, vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t2")))]).unwrap();
    assert_eq!(cell.load().generation, 2);
}

#[test]
fn sas_of_untouched_tunnels_carry_on_and_a_new_key_is_a_new_sa() {
    let (mut c, cell) = control(file(), None);
    let out1 = model_tunnel(&c, "t1").outbound.clone().unwrap().clone();
    let in1 = model_tunnel(&c, "t1").inbound[0].clone();
    let out2 = model_tunnel(&c, "t2").outbound.clone().unwrap().clone();
    out1.lock().unwrap().state.next_seq = 4242;
    out2.lock().unwrap().state.next_seq = 777;
    in1.lock().unwrap().state.window.start_after(99);

    // Unrelated changes: a route, and t2 taken down (no SA parameter).
    let mut t2 = tunnel(&c, "t2");
    t2.up = false;
    apply(
        &mut c,
        vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t1"))), Change::Set(Object::Tunnel(t2))],
    )
    .unwrap();
    assert!(Arc::ptr_eq(&model_tunnel(&c, "t1").outbound.clone().unwrap(), &out1));
    assert!(Arc::ptr_eq(&model_tunnel(&c, "t1").inbound[0], &in1));
    assert!(Arc::ptr_eq(&model_tunnel(&c, "t2").outbound.clone().unwrap(), &out2));
    assert!(!model_tunnel(&c, "t2").up);
    assert_eq!(model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq, 4242);
    assert_eq!(model_tunnel(&c, "t2").outbound.clone().unwrap().lock().unwrap().state.next_seq, 777);
    assert_eq!(model_tunnel(&c, "t1").inbound[0].lock().unwrap().state.window.top(), 99);
    // The workers' snapshot holds those very SAs.
    let snap = cell.load();
    let view = snap.tunnels.iter().find(|t| t.name == "t1").unwrap();
    assert!(Arc::ptr_eq(view.outbound.as_ref().unwrap(), &out1));

    // t1's outbound key changes: a fresh outbound SA (starting above the
    // old one's numbers: marks go by SPI and peer); its inbound SA (same
    // SPI and key) carries on.
    let mut t1 = tunnel(&c, "t1");
    t1.outbound.as_mut().unwrap().key = KEY16_B.into();
    apply(&mut c, vec![Change::Set(Object::Tunnel(t1))]).unwrap();
    let now = model_tunnel(&c, "t1");
    assert!(!Arc::ptr_eq(now.outbound.as_ref().unwrap(), &out1));
    assert!(now.outbound.as_ref().unwrap().lock().unwrap().state.next_seq > 4242);
    assert!(Arc::ptr_eq(&now.inbound[0], &in1));
    assert!(Arc::ptr_eq(&model_tunnel(&c, "t2").outbound.clone().unwrap(), &out2), "t2 untouched");
    let snap = cell.load();
    let view = snap.tunnels.iter().find(|t| t.name == "t1").unwrap();
    assert!(
        Arc::ptr_eq(view.outbound.as_ref().unwrap(), &model_tunnel(&c, "t1").outbound.clone().unwrap()),
        "the new SA is published"
    );

    // A new SPI with the same key is a new SA too; so is a changed
    // parameter (NAT-T) under the same SPI and key.
    let mut t2 = tunnel(&c, "t2");
    t2.outbound.as_mut().unwrap().spi = 0x1012;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t2))]).unwrap();
    assert!(!Arc::ptr_eq(&model_tunnel(&c, "t2").outbound.clone().unwrap(), &out2));
    let out2 = model_tunnel(&c, "t2").outbound.clone().unwrap().clone();
    let mut t2 = tunnel(&c, "t2");
    t2.nat_t = Some(crate::config::NatTConfig::Enabled(true));
    apply(&mut c, vec![Change::Set(Object::Tunnel(t2))]).unwrap();
    assert!(!Arc::ptr_eq(&model_tunnel(&c, "t2").outbound.clone().unwrap(), &out2));
    assert!(model_tunnel(&c, "t2").outbound.clone().unwrap().lock().unwrap().cfg.natt.is_some());
}

#[test]
fn sas_are_kept_by_tunnel_name_when_tunnels_move() {
    let (mut c, _) = control(file(), None);
    let out2 = model_tunnel(&c, "t2").outbound.clone().unwrap().clone();
    out2.lock().unwrap().state.next_seq = 555;
    model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq = 5000;
    // t1 deleted (with its users): t2 is now the first tunnel.
    c.handle(&Request::Apply { changes: vec![Change::Delete(Key::Tunnel("t1".into()))], cascade: true }, &[]).unwrap();
    assert_eq!(c.model().tunnels.len(), 1);
    assert!(Arc::ptr_eq(&model_tunnel(&c, "t2").outbound.clone().unwrap(), &out2));
    assert_eq!(out2.lock().unwrap().state.next_seq, 555);
    // A tunnel added back under t1's name, SPI and peer is a new SA, but
    // it starts above every number the old one used (no state file needed).
    let t1 = file().tunnels[0].clone();
    apply(&mut c, vec![Change::Add(Object::Tunnel(t1))]).unwrap();
    let seq = model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq;
    assert!(seq > 5000, "the re-made SA starts at {seq}");
    // One with a new SPI starts from 1.
    let mut t3 = file().tunnels[0].clone();
    t3.name = "t3".into();
    (t3.outbound.as_mut().unwrap().spi, t3.inbound[0].spi) = (0x1003, 0x2003);
    apply(&mut c, vec![Change::Add(Object::Tunnel(t3))]).unwrap();
    assert_eq!(model_tunnel(&c, "t3").outbound.clone().unwrap().lock().unwrap().state.next_seq, 1);
}

/// An SA replaced by one with the same SPI, peer and key (here NAT-T is
/// turned on) must not send a number the old one already used: with the
/// same key that repeats AES-GCM nonces, and the peer drops them as
/// replays. The old SA sent 1,000,000 packets since the last mark, so a
/// new SA resumed from the marks alone would start below that (at the last
/// mark, or at 1 without a state file).
#[test]
fn an_sa_remade_with_the_same_spi_and_key_starts_above_the_old_ones_numbers() {
    let dir = TempDir::new("an_sa_remade_with_the_same_spi_and_key_starts_above_the_old_ones_numbers");
    for state in [Some(dir.state()), None] {
        let (mut c, _) = control(file(), state.as_deref());
        let old = model_tunnel(&c, "t1").outbound.clone().unwrap().clone();
        // 1,000,000 packets sent since the last mark.
        old.lock().unwrap().state.next_seq = 1_000_000;
        let mut t1 = tunnel(&c, "t1");
        t1.nat_t = Some(crate::config::NatTConfig::Enabled(true));
        apply(&mut c, vec![Change::Set(Object::Tunnel(t1))]).unwrap();
        let new = model_tunnel(&c, "t1").outbound.clone().unwrap().clone();
        assert!(!Arc::ptr_eq(&new, &old), "a new SA");
        let seq = new.lock().unwrap().state.next_seq;
        assert!(seq >= 1_000_000, "state file {state:?}: the new SA starts at {seq}, below the old one's 1000000");
    }
}

fn lookup(c: &mut Control, address: &str, source: Option<&str>) -> Value {
    let request = Request::Lookup {
        gateway: "gw1".into(),
        address: address.parse().unwrap(),
        source: source.map(|s| s.parse().unwrap()),
    };
    c.handle(&request, &[]).unwrap()
}

#[test]
fn lookup_fails_over_to_the_next_route_when_a_tunnel_goes_down() {
    let (mut c, _) = control(file(), None);
    let v = lookup(&mut c, "172.16.9.9", None);
    assert_eq!(v["by"], "route");
    assert_eq!(v["route"]["via"], "tunnel:t1");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);

    let mut t1 = tunnel(&c, "t1");
    t1.up = false;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t1))]).unwrap();
    let v = lookup(&mut c, "172.16.9.9", None);
    assert_eq!(v["by"], "route", "{v}");
    assert_eq!(v["route"]["via"], "tunnel:t2");
    assert_eq!(v["route"]["priority"], 10);
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates[0]["route"]["via"], "tunnel:t1");
    assert_eq!(candidates[0]["usable"], false);
    assert_eq!(candidates[0]["tunnel_up"], false);
    assert_eq!(candidates[1]["usable"], true);

    // Both down: nothing carries it.
    let mut t2 = tunnel(&c, "t2");
    t2.up = false;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t2))]).unwrap();
    let v = lookup(&mut c, "172.16.9.9", None);
    assert_eq!(v["by"], "none");
    assert_eq!(v["dropped"], "no-route");

    // t1 back up: it wins again.
    let mut t1 = tunnel(&c, "t1");
    t1.up = true;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t1))]).unwrap();
    assert_eq!(lookup(&mut c, "172.16.9.9", None)["route"]["via"], "tunnel:t1");
}

#[test]
fn lookup_prefers_longer_prefixes_and_spd_rules_for_a_source() {
    let (mut c, _) = control(file(), None);
    let mut disabled = route("172.16.5.0/24", "inside");
    disabled.enabled = false;
    apply(
        &mut c,
        vec![Change::Add(Object::Route(route("172.16.4.0/24", "tunnel:t2"))), Change::Add(Object::Route(disabled))],
    )
    .unwrap();
    assert_eq!(lookup(&mut c, "172.16.4.1", None)["route"]["via"], "tunnel:t2");
    // A disabled more specific route is skipped for the /16.
    let v = lookup(&mut c, "172.16.5.1", None);
    assert_eq!(v["route"]["prefix"], "172.16.0.0/16");
    assert_eq!(v["candidates"][0]["usable"], false);
    assert_eq!(lookup(&mut c, "192.168.0.1", None)["by"], "none");

    // With a source the SPD rule is asked first.
    let v = lookup(&mut c, "172.16.1.7", Some("10.1.2.3"));
    assert_eq!(v["by"], "spd");
    assert_eq!(v["rule"]["action"], "protect:t1");
    // Outside its selectors: the routes.
    assert_eq!(lookup(&mut c, "172.16.1.7", Some("10.9.2.3"))["by"], "route");

    let e =
        c.handle(&Request::Lookup { gateway: "gw9".into(), address: "10.0.0.1".parse().unwrap(), source: None }, &[]);
    assert_eq!(e.unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn sequence_numbers_resume_from_the_marks_after_a_restart() {
    let dir = TempDir::new("sequence_numbers_resume_from_the_marks_after_a_restart");
    let (mut c, _) = control(file(), Some(&dir.state()));
    model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq = 1_000_000;
    c.mark_sequences().unwrap();
    let marks = state::load_marks(&state::marks_path(&dir.state())).unwrap();
    // By SPI and peer.
    let mark = marks["0x1001@198.51.100.1"];
    assert_eq!(mark.spi, 0x1001);
    assert!(mark.resume_at >= 1_000_000, "{marks:?}");
    drop(c);

    // A restart: the configuration from the state file, its SAs fresh.
    let restored = saved(&dir.state());
    let model = restored.to_model(link, 0).unwrap();
    assert_eq!(model.tunnels[0].outbound.as_ref().unwrap().lock().unwrap().state.next_seq, 1);
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).unwrap()));
    let (c, resumed) = Control::new(restored, model, cell, 1, Some(dir.state())).unwrap();
    assert_eq!(resumed, 2, "both tunnels had marks");
    let t1 = model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq;
    assert!(t1 >= 1_000_000, "t1 resumes at {t1}");
    // t2 sent nothing; it still resumes above where it could have got to.
    let t2 = model_tunnel(&c, "t2").outbound.clone().unwrap().lock().unwrap().state.next_seq;
    assert!((2..1_000_000).contains(&t2), "t2 resumes at {t2}");
}

/// A deleted tunnel's outbound SA leaves a mark above its last number, for
/// an SA made again with its SPI and peer, in this run or after a restart.
/// The other tunnel is idle: the file must get the deleted SA's mark even
/// though no live SA's number moved (else a restart that brings the tunnel
/// back would repeat numbers 65,537..1,000,000).
#[test]
fn a_deleted_tunnels_mark_outlives_a_restart() {
    let dir = TempDir::new("a_deleted_tunnels_mark_outlives_a_restart");
    let (mut c, _) = control(file(), Some(&dir.state()));
    model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq = 1_000_000;
    c.handle(&Request::Apply { changes: vec![Change::Delete(Key::Tunnel("t1".into()))], cascade: true }, &[]).unwrap();
    assert!(saved(&dir.state()).tunnels.iter().all(|t| t.name != "t1"));
    c.mark_sequences().unwrap(); // the daemon's once-a-second mark
    let marks = state::load_marks(&state::marks_path(&dir.state())).unwrap();
    let mark = marks["0x1001@198.51.100.1"].resume_at;
    assert!(mark >= 1_000_000, "the file marks the deleted SA at {mark}");
    drop(c);
    // The restart's configuration has t1 again, with its SPI and peer.
    let model = file().to_model(link, 0).unwrap();
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).unwrap()));
    let (c, resumed) = Control::new(file(), model, cell, 1, Some(dir.state())).unwrap();
    assert_eq!(resumed, 2);
    let seq = model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq;
    assert!(seq >= 1_000_000, "t1 resumes at {seq}");
}

#[test]
fn a_mark_for_another_spi_is_not_used() {
    let dir = TempDir::new("a_mark_for_another_spi_is_not_used");
    let (mut c, _) = control(file(), Some(&dir.state()));
    model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq = 1_000_000;
    c.mark_sequences().unwrap();
    drop(c);
    // The restart's configuration has a new outbound SA for t1.
    let mut restored = saved(&dir.state());
    restored.tunnels[0].outbound.as_mut().unwrap().spi = 0x1011;
    let model = restored.to_model(link, 0).unwrap();
    let cell = Arc::new(SnapshotCell::new(Snapshot::build(&model, 1).unwrap()));
    let (c, resumed) = Control::new(restored, model, cell, 1, Some(dir.state())).unwrap();
    assert_eq!(resumed, 1, "only t2's mark matches its SPI");
    assert_eq!(model_tunnel(&c, "t1").outbound.clone().unwrap().lock().unwrap().state.next_seq, 1);
}

#[test]
fn list_show_and_export_answer_from_the_running_configuration() {
    let (mut c, _) = control(file(), None);
    let v = c.handle(&Request::List { kind: api::Kind::Route, gateway: Some("gw1".into()) }, &[]).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let v = c.handle(&Request::Show { kind: api::Kind::Tunnel, name: "t2".into() }, &[]).unwrap();
    assert_eq!(v["outbound"]["spi"], 0x1002);
    let v = c.handle(&Request::Export, &[]).unwrap();
    let exported: Config = v["toml"].as_str().unwrap().parse().unwrap();
    assert_eq!(exported, file());
    let e = c.handle(&Request::Show { kind: api::Kind::Gateway, name: "gw9".into() }, &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

/// Whatever change is accepted, the state file it writes loads back as
/// the running configuration (else the daemon cannot restart, and
/// `export` gives a file `vpngw --check` refuses). Found by the
/// `control_request` fuzz target: a lifetime above i64::MAX (JSON has it,
/// TOML integers do not) and a name with U+007F (JSON leaves it
/// unescaped, TOML forbids it raw) are accepted, and their state file does
/// not load.
#[test]
fn every_accepted_change_leaves_a_state_file_that_loads() {
    let dir = TempDir::new("every_accepted_change_leaves_a_state_file_that_loads");
    let mut big_lifetime = file().tunnels[1].clone();
    big_lifetime.hard_lifetime = Some(crate::config::LimitConfig { packets: Some(u64::MAX), ..Default::default() });
    let del = crate::config::CustomerGateway { name: "idc\u{7f}".into(), address: "203.0.113.9".parse().unwrap() };
    for change in [Change::Set(Object::Tunnel(big_lifetime)), Change::Add(Object::CustomerGateway(del))] {
        let (mut c, _) = control(file(), Some(&dir.state()));
        if apply(&mut c, vec![change.clone()]).is_err() {
            continue; // refusing it is a fix too
        }
        match state::load(&dir.state()) {
            Ok(Some(loaded)) => assert_eq!(&loaded, c.file(), "{change:?}"),
            other => panic!("{change:?}: the state file does not load: {other:?}"),
        }
        let exported = c.handle(&Request::Export, &[]).unwrap();
        let text = exported["toml"].as_str().unwrap();
        assert!(text.parse::<Config>().is_ok(), "{change:?}: export does not load");
    }
}

/// `file()` with a health check on t1 (1 s apart, 3 failures, 500 ms
/// timeout, 2 s hold-down) and two workers that share with the control
/// thread.
fn with_health() -> (Control, Arc<SnapshotCell>, Vec<Arc<WorkerShared>>) {
    let mut f = file();
    let mut h = crate::config::HealthCheck::new("169.254.1.1".parse().unwrap(), "169.254.1.2".parse().unwrap());
    (h.interval_ms, h.failures, h.timeout_ms, h.hold_down_ms) = (1000, 3, 500, 2000);
    f.tunnels[0].health_check = Some(h);
    let (mut c, cell) = control(f, None);
    let workers: Vec<Arc<WorkerShared>> = (0..2).map(|_| Arc::new(WorkerShared::default())).collect();
    c.attach_workers(workers.clone());
    (c, cell, workers)
}

/// Runs the control thread's ticks every 100 ms over `ms` from `from_ms`
/// after `t0`; the peer answers each probe 3 ms after it is handed to a
/// worker while `alive(t)`.
fn run_checks(
    c: &mut Control,
    workers: &[Arc<WorkerShared>],
    t0: Instant,
    from_ms: u64,
    ms: u64,
    alive: impl Fn(u64) -> bool,
) {
    for t in (from_ms..from_ms + ms).step_by(100) {
        let now = t0 + Duration::from_millis(t);
        c.tick(now);
        for w in workers {
            while let Some(req) = w.probe_requests.pop() {
                assert_eq!((req.src.to_string(), req.dst.to_string()), ("169.254.1.1".into(), "169.254.1.2".into()));
                if alive(t) {
                    let at = now + Duration::from_millis(3);
                    let echo =
                        vpngw_engine::probe::ProbeEcho { tunnel: req.tunnel, ident: req.ident, seq: req.seq, at };
                    workers[0].probe_echoes.push(echo).unwrap();
                }
            }
        }
    }
}

fn kinds(c: &Control) -> Vec<(String, Option<String>)> {
    c.events.after(None, 1000).into_iter().map(|e| (e.kind, e.tunnel)).collect()
}

#[test]
fn a_failed_health_check_fails_the_routes_over_and_a_passing_one_brings_them_back() {
    let (mut c, cell, workers) = with_health();
    let t0 = Instant::now();
    let dst = "172.16.9.9".parse().unwrap();
    let via = |cell: &SnapshotCell| cell.load().gateways[0].routes.lookup(dst);
    assert_eq!(via(&cell), Some(vpngw_engine::snapshot::Hop::Tunnel(0)), "t1 first");
    run_checks(&mut c, &workers, t0, 0, 5000, |_| true);
    assert!(model_tunnel(&c, "t1").up && kinds(&c).is_empty(), "{:?}", kinds(&c));
    let h = c.stats(&[]).tunnels[0].health.clone().unwrap();
    assert_eq!((h.state.as_str(), h.loss_percent, h.probes_sent), ("up", 0.0, 5));
    assert!((h.delay_ms.unwrap() - 3.0).abs() < 0.01, "{h:?}");

    // The peer dies at 5 s: probes at 5, 6, 7 s are lost, the third judged at 7.5 s.
    run_checks(&mut c, &workers, t0, 5000, 2400, |_| false);
    assert!(model_tunnel(&c, "t1").up, "two lost are not enough");
    run_checks(&mut c, &workers, t0, 7400, 200, |_| false);
    assert!(!model_tunnel(&c, "t1").up, "down at 7.5 s");
    assert_eq!(via(&cell), Some(vpngw_engine::snapshot::Hop::Tunnel(1)), "t2 carries it");
    let k = kinds(&c);
    let t1 = Some("t1".to_string());
    assert_eq!(
        k,
        [("health-failing".into(), t1.clone()), ("tunnel-down".into(), t1.clone()), ("alarm".into(), t1.clone())]
    );
    assert!(c.take_log().iter().any(|l| l.contains("kind=tunnel-down") && l.contains("3 probes in a row")));

    // Back at 10 s; up 2 s after the first answer.
    run_checks(&mut c, &workers, t0, 7600, 4300, |t| t >= 10_000);
    assert!(!model_tunnel(&c, "t1").up, "in the hold-down");
    run_checks(&mut c, &workers, t0, 11_900, 300, |_| true);
    assert!(model_tunnel(&c, "t1").up);
    assert_eq!(via(&cell), Some(vpngw_engine::snapshot::Hop::Tunnel(0)), "back on t1");
    let k = kinds(&c);
    assert_eq!(
        k[3..],
        [
            ("health-recovering".into(), t1.clone()),
            ("tunnel-up".into(), t1.clone()),
            ("alarm-cleared".into(), t1.clone())
        ]
    );

    let history: Vec<(bool, bool)> =
        c.stats(&[]).tunnels[0].history.iter().map(|h| (h.up, h.reason.contains("health check"))).collect();
    assert_eq!(history, [(false, true), (true, true)], "the tunnel's history: down, then up, both by the check");
    // An operator's change keeps the check's state; the operator's down is an event too.
    let mut t = tunnel(&c, "t1");
    t.up = false;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t.clone()))]).unwrap();
    assert_eq!(kinds(&c).last().unwrap(), &("tunnel-down".to_string(), t1.clone()));
    assert_eq!(c.stats(&[]).tunnels[0].health.as_ref().unwrap().state, "up", "the check goes on");
    t.up = true;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t))]).unwrap();
    assert!(model_tunnel(&c, "t1").up);
    let v = c.handle(&Request::Events { since: Some(6) }, &[]).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["last"], 8);
}

#[test]
fn a_tunnel_the_check_took_down_stays_down_across_other_changes() {
    let (mut c, cell, workers) = with_health();
    let t0 = Instant::now();
    run_checks(&mut c, &workers, t0, 0, 4000, |_| false);
    assert!(!model_tunnel(&c, "t1").up);
    apply(&mut c, vec![Change::Add(Object::Route(route("172.20.0.0/16", "tunnel:t1")))]).unwrap();
    assert!(!model_tunnel(&c, "t1").up, "the new model keeps the check's verdict");
    assert!(!cell.load().tunnels[0].up);
    // Removing the check brings it back (nothing says it is down any more).
    let mut t = tunnel(&c, "t1");
    t.health_check = None;
    apply(&mut c, vec![Change::Set(Object::Tunnel(t))]).unwrap();
    assert!(model_tunnel(&c, "t1").up);
}

#[test]
fn metrics_and_captures_are_answered() {
    let (mut c, _cell, workers) = with_health();
    let text = c.handle(&Request::Metrics, &[]).unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.contains("vpngw_tunnel_up{gateway=\"gw1\",tunnel=\"t1\"} 1"), "{text}");
    let capture = |tunnel: &str, count| Request::Capture {
        tunnel: tunnel.into(),
        point: api::CapturePoint::Inner,
        count,
        pps: None,
    };
    assert_eq!(c.handle(&capture("t9", 5), &[]).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(c.handle(&capture("t1", 0), &[]).unwrap_err().kind, ErrorKind::Invalid);
    let id = c.handle(&capture("t1", 2), &[]).unwrap()["id"].as_u64().unwrap();
    assert_eq!(c.handle(&capture("t2", 2), &[]).unwrap_err().kind, ErrorKind::Busy, "one at a time");
    let tap = workers[1].tap.load_full().expect("every worker has the tap");
    tap.copy(&[0x45, 1, 2], true, vpngw_engine::policer::now());
    let v = c.handle(&Request::CaptureRead { id }, &[]).unwrap();
    assert_eq!((v["packets"][0]["data"].as_str(), v["done"].as_bool()), (Some("450102"), Some(false)));
    tap.copy(&[0x45, 3], false, vpngw_engine::policer::now());
    tap.copy(&[0x45, 4], false, vpngw_engine::policer::now());
    let v = c.handle(&Request::CaptureRead { id }, &[]).unwrap();
    assert_eq!((v["packets"].as_array().unwrap().len(), v["remaining"].as_u64()), (1, Some(0)));
    let v = c.handle(&Request::CaptureRead { id }, &[]).unwrap();
    assert_eq!(v["done"], true);
    assert!(workers[0].tap.load().is_none(), "taken off when done");
    assert_eq!(c.handle(&Request::CaptureRead { id }, &[]).unwrap_err().kind, ErrorKind::NotFound);
    // A capture nobody reads ends by itself.
    let id = c.handle(&capture("t1", 2), &[]).unwrap()["id"].as_u64().unwrap();
    c.tick(Instant::now() + CAPTURE_IDLE);
    assert!(workers[0].tap.load().is_none());
    assert_eq!(c.handle(&Request::CaptureStop { id }, &[]).unwrap_err().kind, ErrorKind::NotFound);
}
