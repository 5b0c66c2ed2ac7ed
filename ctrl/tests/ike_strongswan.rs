//! vpngw's IKEv2 against strongSwan 5.9.8 (charon with kernel-libipsec),
//! the independent implementation, in the namespace lab: charon is the
//! customer gateway in `cgw` (198.51.100.1, protecting 172.16.1.0/24);
//! vpngw's IKE endpoint and UDP driver run in `gw` (192.0.2.1, 10.1.0.0/16).
//!
//! - vpngw initiates, for each ESP suite, and with strongSwan's default
//!   proposals; strongSwan initiates. Each time both sides must agree on
//!   the child SA: charon's SPIs are ours crossed, its algorithms ours,
//!   ESP in UDP (libipsec always claims a NAT, so IKE moves to 4500).
//! - A wrong PSK fails with AUTHENTICATION_FAILED and installs nothing;
//!   disjoint proposals fail with NO_PROPOSAL_CHOSEN, both offers logged.
//! - Liveness: charon killed, vpngw's checks find it dead within the
//!   interval plus the timeout.
//! - Rekeys: each side rekeying the child and the IKE SA, and both sides
//!   rekeying the child or the IKE SA at once (vpngw winning and losing
//!   each collision).
//!
//! (Carrying traffic through these SAs comes with the daemon's use of
//! IKE; here the IKE exchanges themselves are checked.)

use serde_json::Value;
use std::time::{Duration, Instant};
use vpngw_ctrl::ike::driver::Driver;
use vpngw_ctrl::ike::endpoint::Endpoint;
use vpngw_ctrl::ike::message::TrafficSelector;
use vpngw_ctrl::ike::proposal::{EspProposal, IkeProposal};
use vpngw_ctrl::ike::sa::{identity, Dpd, DpdAction, Output, SaKeys, Settings};
use vpngw_testlab::{enter, Lab};
use zeroize::Zeroizing;

mod common;
use common::{swan, Charon, CGW, GW};

const PSK: &str = "lab pre-shared key 7";
const HOUR: Duration = Duration::from_secs(3600);

fn cidr(first: &str, last: &str) -> TrafficSelector {
    TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: first.parse().unwrap(),
        end: last.parse().unwrap(),
    }
}

fn settings(ike: &[&str], esp: &[&str], psk: &str) -> Settings {
    Settings {
        local: GW.parse().unwrap(),
        remote: CGW.parse().unwrap(),
        psk: Zeroizing::new(psk.as_bytes().to_vec()),
        local_id: identity(GW),
        remote_id: identity(CGW),
        ike: ike.iter().map(|p| IkeProposal::parse(p).unwrap()).collect(),
        esp: esp.iter().map(|p| EspProposal::parse(p).unwrap()).collect(),
        local_ts: vec![cidr("10.1.0.0", "10.1.255.255")],
        remote_ts: vec![cidr("172.16.1.0", "172.16.1.255")],
        dpd: None,
        child_lifetime: Duration::from_secs(3600),
        ike_lifetime: Duration::from_secs(86400),
    }
}

/// What vpngw's side saw in one negotiation.
#[derive(Default)]
struct Seen {
    up: bool,
    down: Option<(Instant, String)>,
    inbound: Vec<SaKeys>,
    outbound: Vec<SaKeys>,
    removed: Vec<u32>,
    log: Vec<String>,
    /// At the end: the SPIs (initiator's, responder's) of the IKE SA that
    /// carries the child.
    carrier: Option<(u64, u64)>,
}

impl Seen {
    fn note(&mut self, o: Output) {
        match o {
            Output::Up { .. } => self.up = true,
            Output::Down(why) => self.down = Some((Instant::now(), why)),
            Output::InstallInbound(k) => self.inbound.push(k),
            Output::InstallOutbound(k) => self.outbound.push(k),
            Output::RemoveInbound(spi) => self.removed.push(spi),
            Output::Log(l) => self.log.push(l),
            _ => {}
        }
    }

    /// The child SA now: (inbound, outbound) SPIs.
    fn current(&self) -> (u32, u32) {
        let live: Vec<u32> = self.inbound.iter().map(|k| k.spi).filter(|s| !self.removed.contains(s)).collect();
        assert_eq!(live.len(), 1, "one inbound SA left: {live:x?}\n{}", self.text());
        (live[0], self.outbound.last().expect("an outbound SA").spi)
    }

    fn says(&self, what: &str) -> bool {
        self.log.iter().any(|l| l.contains(what))
    }

    fn text(&self) -> String {
        self.log.join("\n") + "\n" + self.down.as_ref().map_or("", |d| &d.1)
    }
}

/// Runs vpngw's endpoint in the gateway's namespace until `done` says so
/// or `limit` passes; `initiate`: vpngw starts; `meanwhile` runs on this
/// thread once the driver is bound (strongSwan initiating, or killing it).
fn run(
    lab: &Lab,
    s: Settings,
    initiate: bool,
    limit: Duration,
    done: impl Fn(&Seen) -> bool + Send,
    meanwhile: impl FnOnce(),
) -> Seen {
    let path = format!("/run/netns/{}", lab.ns("gw"));
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            enter(&path);
            let mut driver = Driver::bind(GW.parse().unwrap()).expect("bind IKE ports in the lab");
            let mut endpoint = Endpoint::new(vec![s]);
            let t0 = Instant::now();
            if initiate {
                endpoint.initiate(t0, 0);
            }
            bound_tx.send(()).unwrap();
            let mut seen = Seen::default();
            while t0.elapsed() < limit && !done(&seen) {
                driver.turn(&mut endpoint, Instant::now(), |_, o| seen.note(o));
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen, endpoint, driver)
        });
        bound_rx.recv().expect("the driver binds");
        meanwhile();
        let (seen, _endpoint, _driver) = worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        seen
    })
}

/// Brings the tunnel up (vpngw initiating), then rekeys just as charon
/// does, 4 s after: from 3.5 s to 5 s nothing is read, so charon's request
/// waits in the socket while ours goes out (the child's rekey at 4.5 s;
/// an IKE SA's comes by itself when its lifetime says). Returns once both
/// exchanges and the deletes are done.
fn collide(lab: &Lab, s: Settings, child: bool) -> Seen {
    let path = format!("/run/netns/{}", lab.ns("gw"));
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(&path);
                let mut driver = Driver::bind(GW.parse().unwrap()).expect("bind IKE ports in the lab");
                let mut endpoint = Endpoint::new(vec![s]);
                let t0 = Instant::now();
                endpoint.initiate(t0, 0);
                let mut seen = Seen::default();
                let mut up_at = None;
                let (mut asked, mut rekeyed) = (false, false);
                while t0.elapsed() < Duration::from_secs(25) && seen.down.is_none() {
                    let now = Instant::now();
                    let since_up = up_at.map(|t| now - t);
                    let hold = since_up.is_some_and(|d| d > Duration::from_millis(3500) && d < Duration::from_secs(5));
                    if hold && child && !asked && since_up.is_some_and(|d| d >= Duration::from_millis(4500)) {
                        endpoint.rekey_child_soon(now, 0);
                        asked = true;
                    }
                    rekeyed |= since_up.is_some_and(|d| d >= Duration::from_secs(5));
                    if !hold {
                        driver.receive(&mut endpoint, now);
                    }
                    driver.act(&mut endpoint, now, |_, o| seen.note(o));
                    if seen.up && up_at.is_none() {
                        up_at = Some(now);
                    }
                    // Done: one inbound SA left, 2 s after our rekey.
                    let live = seen.inbound.iter().filter(|k| !seen.removed.contains(&k.spi)).count();
                    if rekeyed && live == 1 && since_up.is_some_and(|d| d > Duration::from_millis(6500)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen.carrier = endpoint.sas().find(|(_, sa)| sa.child().is_some()).map(|(_, sa)| (sa.spi_i, sa.spi_r));
                seen
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Both sides agree on the child SA: charon's inbound SPI is our
/// outbound, and the other way round; ESP in UDP; the algorithm.
fn check_agreement(charon: &Charon, seen: &Seen, encr: &str) {
    let sas = charon.sas();
    let ike = &sas.as_array().expect("a list of IKE SAs")[0];
    assert_eq!(ike["state"], "ESTABLISHED", "{sas}");
    let installed = |c: &&Value| c["state"] == "INSTALLED";
    let child = ike["children"].as_array().expect("children").iter().find(installed).expect("an installed child");
    let spi = |v: &Value| u32::from_str_radix(v.as_str().unwrap(), 16).unwrap();
    let (inbound, outbound) = seen.current();
    assert_eq!(spi(&child["spi_in"]), outbound, "{sas}");
    assert_eq!(spi(&child["spi_out"]), inbound, "{sas}");
    assert_eq!(child["encap"], true, "libipsec: ESP in UDP");
    assert_eq!(seen.outbound[0].udp, Some((4500, 4500)));
    assert!(child["encr_alg"].as_str().unwrap().to_lowercase().contains(encr), "{encr}: {sas}");
    eprintln!(
        "agreed with charon: IKE {}/{}/{}, ESP {} {} bits, SPIs in {} out {}, ESP in UDP {}:{}",
        ike["encr_alg"],
        ike["prf_alg"],
        ike["dh_group"],
        child["encr_alg"],
        child["encr_keysize"],
        child["spi_in"],
        child["spi_out"],
        ike["remote_host"],
        ike["remote_port"]
    );
}

#[test]
fn ike_against_strongswan() {
    let lab = Lab::up("ikesw");
    let charon = Charon::start(&lab);
    let up = |s: &Seen| s.up || s.down.is_some();

    // (a) vpngw initiates: each ESP suite the engine carries.
    let suites = [
        ("aes128gcm16", "aes_gcm"),
        ("aes256gcm16", "aes_gcm"),
        ("chacha20poly1305", "chacha20"),
        ("aes128-sha256", "aes_cbc"),
        ("aes256-sha256", "aes_cbc"),
    ];
    for (n, (esp, encr)) in suites.iter().enumerate() {
        let name = format!("esp{n}");
        charon.load(&name, PSK, &["--ike-proposals", "aes256gcm16-prfsha256-x25519", "--esp-proposals", esp]);
        let seen = run(
            &lab,
            settings(&["aes256gcm16-prfsha256-x25519"], &[esp], PSK),
            true,
            Duration::from_secs(15),
            up,
            || {},
        );
        assert!(seen.up, "{esp}: vpngw initiating: {}\ncharon:\n{}", seen.text(), charon.log());
        check_agreement(&charon, &seen, encr);
        let _ = swan(&["terminate", "--dir", charon.dir(), "--name", &name]);
    }

    // strongSwan's default proposals (none configured): vpngw offers
    // AES-CBC with HMAC-SHA2-256 for both, which charon's defaults include.
    charon.load("defaults", PSK, &[]);
    let seen = run(
        &lab,
        settings(&["aes128-sha256-ecp256", "aes128-sha256-modp2048"], &["aes128-sha256"], PSK),
        true,
        Duration::from_secs(15),
        up,
        || {},
    );
    assert!(seen.up, "default proposals: {}\ncharon:\n{}", seen.text(), charon.log());
    check_agreement(&charon, &seen, "aes_cbc");
    let _ = swan(&["terminate", "--dir", charon.dir(), "--name", "defaults"]);

    // IKE SAs protected by AES-CBC with HMAC-SHA2-384-192 and -512-256.
    for (ike, integ, prf) in [
        ("aes256-sha384-prfsha384-ecp384", "HMAC_SHA2_384_192", "PRF_HMAC_SHA2_384"),
        ("aes128-sha512-prfsha512-modp2048", "HMAC_SHA2_512_256", "PRF_HMAC_SHA2_512"),
    ] {
        charon.load("integ", PSK, &["--ike-proposals", ike, "--esp-proposals", "aes128gcm16"]);
        let seen = run(&lab, settings(&[ike], &["aes128gcm16"], PSK), true, Duration::from_secs(15), up, || {});
        assert!(seen.up, "{ike}: {}\ncharon:\n{}", seen.text(), charon.log());
        check_agreement(&charon, &seen, "aes_gcm");
        let sas = charon.sas();
        assert_eq!((sas[0]["integ_alg"].as_str(), sas[0]["prf_alg"].as_str()), (Some(integ), Some(prf)), "{sas}");
        let _ = swan(&["terminate", "--dir", charon.dir(), "--name", "integ"]);
    }

    // (b) strongSwan initiates; vpngw answers.
    charon.load("theirs", PSK, &["--ike-proposals", "aes128gcm16-prfsha256-ecp256", "--esp-proposals", "aes256gcm16"]);
    let s = settings(&["aes128gcm16-prfsha256-ecp256"], &["aes256gcm16"], PSK);
    let dir = charon.dir().to_string();
    let seen = run(&lab, s, false, Duration::from_secs(15), up, || {
        let (ok, out) = swan(&["initiate", "--dir", &dir, "--name", "theirs", "--timeout", "10"]);
        assert!(ok, "charon initiates: {out}");
    });
    assert!(seen.up, "strongSwan initiating: {}\ncharon:\n{}", seen.text(), charon.log());
    check_agreement(&charon, &seen, "aes_gcm");
    let _ = swan(&["terminate", "--dir", charon.dir(), "--name", "theirs"]);

    // (c) Rekeys: charon rekeys the child (every 6 s), vpngw rekeys it
    // (with PFS), vpngw and then charon rekey the IKE SA; each time the
    // two sides agree on the child afterwards. Charon's liveness checks
    // (every 2 s) run over the rekeyed IKE SA and must be answered.
    let pfs = "aes256gcm16-x25519";
    let cases: [(&str, &[&str], Duration, Duration, &str); 4] = [
        ("charon rekeys the child", &["--rekey-time", "6", "--life-time", "30"], HOUR, HOUR, "replaced by"),
        ("vpngw rekeys the child", &[], Duration::from_secs(8), HOUR, "child SA rekeyed"),
        ("vpngw rekeys the IKE SA", &["--dpd-delay", "2"], HOUR, Duration::from_secs(8), "IKE SA rekeyed"),
        ("charon rekeys the IKE SA", &["--ike-rekey-time", "6", "--dpd-delay", "2"], HOUR, HOUR, "IKE SA rekeyed"),
    ];
    for (n, (what, theirs, child_life, ike_life, sign)) in cases.into_iter().enumerate() {
        let name = format!("rekey{n}");
        let mut args = vec!["--ike-proposals", "aes256gcm16-prfsha256-x25519", "--esp-proposals", pfs];
        args.extend(theirs);
        charon.load(&name, PSK, &args);
        let mut s = settings(&["aes256gcm16-prfsha256-x25519"], &[pfs], PSK);
        (s.child_lifetime, s.ike_lifetime) = (child_life, ike_life);
        // Until the rekey, then 5 s more (charon's liveness checks).
        let since = std::sync::Mutex::new(None::<Instant>);
        let done = |seen: &Seen| {
            let mut t = since.lock().unwrap();
            if t.is_none() && seen.says(sign) {
                *t = Some(Instant::now());
            }
            t.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) || seen.down.is_some()
        };
        let seen = run(&lab, s, true, Duration::from_secs(25), done, || {});
        assert!(seen.says(sign) && seen.down.is_none(), "{what}: {}\ncharon:\n{}", seen.text(), charon.log());
        check_agreement(&charon, &seen, "aes_gcm");
        assert_eq!(charon.sas().as_array().unwrap().len(), 1, "{what}: one IKE SA left at charon");
        eprintln!("{what}: agreed afterwards");
        let _ = swan(&["terminate", "--dir", charon.dir(), "--name", &name]);
    }

    // (e) A wrong PSK: AUTHENTICATION_FAILED, nothing installed.
    charon.load(
        "wrongpsk",
        "not the same key",
        &["--ike-proposals", "aes256gcm16-prfsha256-x25519", "--esp-proposals", "aes256gcm16"],
    );
    let seen = run(
        &lab,
        settings(&["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"], PSK),
        true,
        Duration::from_secs(15),
        up,
        || {},
    );
    let (_, why) = seen.down.as_ref().unwrap_or_else(|| panic!("a wrong PSK fails: {}", seen.text()));
    assert!(why.contains("AUTHENTICATION_FAILED"), "{why}");
    assert!(!seen.up && seen.inbound.is_empty() && seen.outbound.is_empty());
    assert!(!seen.text().contains(PSK), "the PSK is never logged");
    assert!(charon.logs("N(AUTH_FAILED)"), "charon refused us too:\n{}", charon.log());

    // (f) Disjoint proposals: NO_PROPOSAL_CHOSEN, both offers named. As
    // initiator vpngw hears the refusal; as responder it writes both.
    charon.load("disjoint", PSK, &["--ike-proposals", "aes128-sha256-modp2048", "--esp-proposals", "aes128-sha256"]);
    let seen = run(
        &lab,
        settings(&["aes256gcm16-prfsha384-ecp384"], &["aes256gcm16"], PSK),
        true,
        Duration::from_secs(15),
        up,
        || {},
    );
    let (_, why) = seen.down.as_ref().unwrap_or_else(|| panic!("disjoint proposals fail: {}", seen.text()));
    assert!(why.contains("NO_PROPOSAL_CHOSEN") && why.contains("aes256gcm16-prfsha384-ecp384"), "{why}");
    assert!(charon.logs("N(NO_PROP)"), "charon's refusal:\n{}", charon.log());
    let s = settings(&["aes256gcm16-prfsha384-ecp384"], &["aes256gcm16"], PSK);
    let dir = charon.dir().to_string();
    let seen = run(
        &lab,
        s,
        false,
        Duration::from_secs(8),
        |s| s.log.iter().any(|l| l.contains("NO_PROPOSAL_CHOSEN")),
        || {
            let _ = swan(&["initiate", "--dir", &dir, "--name", "disjoint", "--timeout", "5"]);
        },
    );
    let text = seen.text();
    assert!(text.contains("we offer aes256gcm16-prfsha384-ecp384; the peer offers IKE:aes128-sha256"), "{text}");

    // (d) Liveness: charon killed; found dead within interval + timeout.
    charon.load("dpd", PSK, &["--ike-proposals", "aes256gcm16-prfsha256-x25519", "--esp-proposals", "aes256gcm16"]);
    let mut s = settings(&["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"], PSK);
    let dpd = Dpd { interval: Duration::from_secs(2), timeout: Duration::from_secs(6), action: DpdAction::Clear };
    s.dpd = Some(dpd);
    let killed = std::sync::Mutex::new(None);
    let seen = run(
        &lab,
        s,
        true,
        Duration::from_secs(30),
        |s| s.down.is_some(),
        || {
            // Up first (charon answers), then killed.
            std::thread::sleep(Duration::from_secs(3));
            let (ok, out) = swan(&["stop", "--dir", charon.dir(), "--kill9"]);
            assert!(ok, "kill charon: {out}");
            *killed.lock().unwrap() = Some(Instant::now());
        },
    );
    assert!(seen.up, "up before the kill: {}", seen.text());
    let (at, why) = seen.down.as_ref().expect("the dead peer is found");
    assert!(why.contains("did not answer our liveness check"), "{why}");
    let after = at.duration_since(killed.lock().unwrap().expect("killed"));
    eprintln!(
        "liveness: down {after:?} after charon was killed (interval {:?}, timeout {:?})",
        dpd.interval, dpd.timeout
    );
    assert!(after <= dpd.interval + dpd.timeout + Duration::from_secs(1), "down {after:?} after the kill");
}

/// Both sides rekey at once: the child (RFC 7296 section 2.8.1), then the
/// IKE SA (section 2.8.2).
#[test]
fn simultaneous_rekeys_against_strongswan() {
    let lab = Lab::up("ikecol");
    let charon = Charon::start(&lab);
    collisions(&lab, &charon, Collide::Child);
    collisions(&lab, &charon, Collide::IkeSa);
}

/// What both sides rekey at once.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Collide {
    Child,
    IkeSa,
}

/// Charon rekeys 4 s after the tunnel is up; its request is held in our
/// socket (as a slow link would hold it) while ours goes out, so the two
/// exchanges cross and both complete. The SA made by the exchange with
/// the lowest nonce is redundant and its maker deletes it. Nonces are
/// random, so this repeats until vpngw has both won and lost (each time
/// 1 in 2; twelve tries fail to see both 1 in 2048). Each time both sides
/// must agree on what is left, and charon on who won.
fn collisions(lab: &Lab, charon: &Charon, what: Collide) {
    let said = |what: &str| charon.log().matches(what).count();
    // Charon's words when it lost (also when our delete of the old SA
    // reached it before our answer), and when it won.
    let (lost, won, ours, theirs) = match what {
        Collide::Child => (
            &["deleting redundant child"][..],
            "CHILD_SA rekey collision won",
            "simultaneous rekey",
            ["--rekey-time", "4", "--life-time", "60"],
        ),
        Collide::IkeSa => (
            &["IKE_SA rekey collision lost", "peer did not notice IKE_SA rekey collision"][..],
            "IKE_SA rekey collision won",
            "simultaneous IKE SA rekey",
            ["--ike-rekey-time", "4", "--life-time", "60"],
        ),
    };
    let charon_lost = || lost.iter().map(|w| said(w)).sum::<usize>();
    let mut outcomes = Vec::new();
    for n in 0..12 {
        let name = format!("collide{what:?}{n}");
        let args = ["--ike-proposals", "aes256gcm16-prfsha256-x25519", "--esp-proposals", "aes128gcm16"];
        charon.load(&name, PSK, &[&args[..], &theirs[..]].concat());
        let before = (charon_lost(), said(won));
        let mut s = settings(&["aes256gcm16-prfsha256-x25519"], &["aes128gcm16"], PSK);
        if what == Collide::IkeSa {
            // Our IKE SA's rekey comes 4.2-4.8 s after it is up.
            s.ike_lifetime = Duration::from_millis(5300);
        }
        let seen = collide(lab, s, what == Collide::Child);
        let we_won = seen.says(&format!("{ours} won"));
        assert!(
            seen.says(&format!("{ours}: the peer's and ours crossed"))
                && (we_won || seen.says(&format!("{ours} lost"))),
            "{what:?}: a collision: {}\ncharon:\n{}",
            seen.text(),
            charon.log()
        );
        assert!(seen.down.is_none(), "{}", seen.text());
        check_agreement(charon, &seen, "aes_gcm");
        let sas = charon.sas();
        let ike = sas.as_array().unwrap();
        assert_eq!(ike.len(), 1, "one IKE SA left at charon: {sas}");
        let installed = ike[0]["children"].as_array().unwrap().iter().filter(|c| c["state"] == "INSTALLED").count();
        assert_eq!(installed, 1, "one child left at charon: {sas}");
        let spi = |k: &str| u64::from_str_radix(ike[0][k].as_str().unwrap(), 16).unwrap();
        assert_eq!(seen.carrier, Some((spi("initiator_spi"), spi("responder_spi"))), "the same IKE SA: {sas}");
        // Charon comes to the opposite conclusion from the same nonces
        // (and logs a moment after it sends).
        std::thread::sleep(Duration::from_millis(300));
        let agrees = if we_won { charon_lost() > before.0 } else { said(won) > before.1 };
        let verdict = if we_won { "won" } else { "lost" };
        assert!(agrees, "{what:?}: charon agrees that vpngw {verdict}:\n{}", charon.log());
        eprintln!("simultaneous {what:?} rekey {n}: vpngw {verdict}, charon agrees");
        outcomes.push(we_won);
        let _ = swan(&["terminate", "--dir", charon.dir(), "--name", &name]);
        if outcomes.contains(&true) && outcomes.contains(&false) {
            return;
        }
    }
    panic!("{what:?}: vpngw did not both win and lose in {} collisions: {outcomes:?}", outcomes.len());
}
