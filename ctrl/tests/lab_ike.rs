//! The vpngw daemon negotiating its tunnel with strongSwan (charon with
//! kernel-libipsec, the customer gateway in `cgw`) and carrying traffic
//! through the SAs they agreed, in the namespace lab:
//!
//! - vpngw initiates (negotiation active): the VPC host and the IDC host
//!   ping each other, TCP runs through with iperf3; `vpnctl show ike`
//!   names the algorithms both sides chose.
//! - Rekeys under a 500 packets/s flow both ways, counted by sinks: charon
//!   rekeys the child every 6 s, and vpngw rekeys it when its volume
//!   limit (lifetime_kilobytes) nears; no packet may be lost.
//! - strongSwan initiates (vpngw passive) and traffic passes both ways;
//!   restarted, its new IKE SA supersedes the old without an outage;
//!   with each ESP suite and with strongSwan's default ESP proposal.
//! - Hostile datagrams on the IKE ports leave the tunnel undisturbed.
//! - A wrong PSK: AUTHENTICATION_FAILED, said by `show ike`, no SA.
//! - NAT keepalives: tshark sees vpngw's one-byte 0xff datagram.
//! - Negotiation on traffic: nothing until a packet is routed into the
//!   tunnel, which then comes up (identities FQDNs).
//! - Liveness: charon killed, vpngw takes the tunnel down within the DPD
//!   timeout, and says so in its events.

use serde_json::Value;
use std::time::{Duration, Instant};
use vpngw_testlab::Lab;

mod common;
use common::{repo, swan, tmp, Charon, Daemon};

const PSK: &str = "lab pre-shared key 7";
const IDC: &str = "172.16.1.9";
const VPC: &str = "10.1.0.5";
const FLOW: &str = "scripts/interop/udp_flow.py";

/// The cloud gateway's configuration (scripts/lab/gw.toml) with the
/// tunnel negotiated by IKE: `ike` is its inline table's fields.
fn gw_config(ike: &str) -> String {
    let text = std::fs::read_to_string(repo("scripts/lab/gw.toml")).expect("the lab's gw.toml");
    let start = text.find("suite = ").expect("a suite line");
    let end = text[start..].find("\n\n").expect("the tunnel's end") + start;
    format!("{}ike = {{ psk = \"{PSK}\", {ike} }}{}", &text[..start], &text[end..])
}

/// `vpnctl show ike --json`'s one tunnel.
fn ike(gw: &Daemon) -> Value {
    gw.json(&["show", "ike"])["tunnels"][0].clone()
}

/// Waits (up to `secs`) for `what` of the tunnel's IKE view; the last view.
fn wait(gw: &Daemon, secs: u64, what: impl Fn(&Value) -> bool) -> (bool, Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = ike(gw);
        if what(&v) {
            return (true, v);
        }
        if Instant::now() > deadline {
            return (false, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn up(v: &Value) -> bool {
    v["up"] == true
}

/// A flow of `pps` datagrams a second for `secs` from `from` to `to`,
/// and what its sink received: (sent, received, out of order or repeated).
fn flow(lab: &Lab, from: &str, to_role: &str, to: &str, port: &str, pps: u32, secs: u32) -> (u64, u64, u64) {
    let out = tmp(lab, &format!("sink-{port}.json"));
    let sink_secs = (secs + 3).to_string();
    let sink = lab.spawn(
        to_role,
        &["python3", &repo(FLOW), "sink", port, "--seconds", &sink_secs, "--out", &out.display().to_string()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let sender = lab.spawn(
        from,
        &[
            "python3",
            &repo(FLOW),
            "send",
            to,
            port,
            "--pps",
            &pps.to_string(),
            "--seconds",
            &secs.to_string(),
            "--size",
            "1400",
        ],
    );
    let (ok, sent, err) = sender.stop_after_exit(Duration::from_secs(u64::from(secs) + 10));
    assert!(ok, "the flow is sent: {err}");
    let (ok, _, err) = sink.stop_after_exit(Duration::from_secs(10));
    assert!(ok, "the sink ends: {err}");
    let sent: Value = serde_json::from_str(sent.trim()).expect("the sender's count");
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("the sink's file")).expect("JSON");
    let _ = std::fs::remove_file(&out);
    let arrivals = got["arrivals"].as_array().expect("arrivals");
    let mut seen = std::collections::BTreeSet::new();
    let mut disorder = 0;
    for a in arrivals {
        if !seen.insert(a[0].as_u64().unwrap()) {
            disorder += 1;
        }
    }
    (sent["sent"].as_u64().unwrap(), seen.len() as u64, disorder)
}

#[test]
fn vpngw_negotiates_with_strongswan_and_carries_traffic() {
    let lab = Lab::up("ikelab");
    let _scratch = common::Scratch::new(&lab);
    let charon = Charon::start(&lab);
    // NAT keepalives (libipsec makes vpngw see a NAT): the first one
    // vpngw sends to the customer gateway is kept.
    let keepalive = tmp(&lab, "keepalive.pcap");
    let filter = format!("udp and src host {} and src port 4500 and udp[4:2] = 9", common::GW);
    let capture = lab.spawn(
        "cgw",
        &["tshark", "-q", "-i", "cgw-out", "-c", "1", "-f", &filter, "-w", &keepalive.display().to_string()],
    );

    // (a) vpngw initiates; charon's child SA rekeys every 6 s, and
    // vpngw's when 1 MiB has passed (80% of lifetime_kilobytes).
    charon.load(
        "vpc",
        PSK,
        &[
            "--ike-proposals",
            "aes256gcm16-prfsha256-x25519",
            "--esp-proposals",
            "aes128gcm16",
            "--dpd-delay",
            "2",
            "--rekey-time",
            "6",
            "--life-time",
            "60",
        ],
    );
    let gw = Daemon::start(
        &lab,
        "gw",
        &gw_config(
            "ike_proposals = [\"aes256gcm16-prfsha256-x25519\"], esp_proposals = [\"aes128gcm16\"], \
             dpd = { interval = 2, timeout = 6, action = \"clear\" }",
        ),
        false,
    );
    let (ok, v) = wait(&gw, 15, up);
    assert!(ok, "the tunnel comes up: {v}\ncharon:\n{}", charon.log());
    let sa = &v["ike_sas"][0];
    assert_eq!(sa["initiator"], true);
    assert_eq!(sa["proposal"], "aes256gcm16-prfsha256-curve25519");
    assert_eq!(sa["child"]["proposal"], "aes128gcm16");
    let theirs = charon.sas();
    let child = &theirs[0]["children"][0];
    assert_eq!(
        child["spi_in"].as_str().unwrap().trim_start_matches('0'),
        sa["child"]["spi_out"].as_str().unwrap().trim_start_matches('0'),
        "{theirs}\n{v}"
    );
    common::reaches(&lab, "idc", VPC);
    common::reaches(&lab, "vpc", IDC);
    println!("show ike:\n{}", gw.ok(&["show", "ike"]));
    let shown = gw.ok(&["tunnel", "show", "t-idc1"]) + &gw.ok(&["show", "ike"]) + &gw.ok(&["events"]);
    assert!(!shown.contains(PSK), "the PSK is never shown: {shown}");

    // Hostile datagrams from the customer gateway's own address (other
    // ports): garbage, a truncated header, and well-formed headers naming
    // our IKE SA with nonsense in them, on 500 and 4500. The daemon lives
    // on and the tunnel is undisturbed.
    let spi = sa["spi"].as_str().unwrap();
    let hostile = format!(
        r#"
import os, socket, struct
ours = bytes.fromhex("{spi}")
msgs = [os.urandom(n) for n in (1, 3, 27, 28, 100, 1500)]
for exch, flags in ((34, 0x08), (35, 0x20), (36, 0x20), (37, 0x20), (37, 0x08)):
    for mid in (0, 1, 7, 2**31):
        body = os.urandom(40)
        msgs.append(ours + os.urandom(8) + bytes([46, 0x20, exch, flags]) + struct.pack("!II", mid, 28 + len(body)) + body)
        msgs.append(os.urandom(8) + ours + bytes([46, 0x20, exch, flags]) + struct.pack("!II", mid, 28 + len(body)) + body)
for port, prefix in ((500, b""), (4500, b"\0\0\0\0")):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{cgw}", 0))
    for m in msgs:
        s.sendto(prefix + m, ("{gw_addr}", port))
print(len(msgs) * 2)
"#,
        cgw = common::CGW,
        gw_addr = common::GW
    );
    let (ok, out) = lab.run("cgw", &["python3", "-c", &hostile]);
    assert!(ok, "hostile datagrams sent: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let after = ike(&gw);
    assert!(up(&after), "the tunnel is undisturbed: {after}");
    assert_eq!(after["ike_sas"][0]["child"], sa["child"], "the same child SA");
    common::reaches(&lab, "idc", VPC);
    println!("{} hostile datagrams: tunnel undisturbed", out.trim());

    // TCP through the tunnel.
    let server = lab.spawn("vpc", &["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = lab.run("idc", &["iperf3", "-c", VPC, "-t", "3", "-J"]);
    assert!(ok, "iperf3 through the negotiated tunnel: {out}");
    let j: Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bps = j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap();
    println!("TCP idc -> vpc through vpngw and strongSwan: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 1e6, "TCP goodput {bps} bit/s");
    drop(server);

    // (c) Rekeys under traffic, 500 packets/s each way, counted by sinks:
    // first charon rekeys the child (every 6 s); then vpngw does, at 80%
    // of a 2 MiB volume limit (every 2.4 s at 1400 B a packet; the limit
    // is a change of settings, so the tunnel is negotiated afresh first).
    let rekeys = |phase: &str, secs: u32| {
        let before = (count_events(&gw, &[OURS]), count_events(&gw, &[THEIRS]));
        let (there, back) = std::thread::scope(|s| {
            let back = s.spawn(|| flow(&lab, "idc", "vpc", VPC, "5002", 500, secs));
            (flow(&lab, "vpc", "idc", IDC, "5001", 500, secs), back.join().unwrap())
        });
        let (ours, theirs) = (count_events(&gw, &[OURS]) - before.0, count_events(&gw, &[THEIRS]) - before.1);
        println!(
            "{phase}: vpngw rekeyed {ours}, charon {theirs}; vpc->idc {there:?}, idc->vpc {back:?} (sent, received, repeated)"
        );
        assert_eq!(there.0, there.1, "{phase}: vpc -> idc: every packet arrived across the rekeys");
        assert_eq!(back.0, back.1, "{phase}: idc -> vpc: every packet arrived across the rekeys");
        assert_eq!((there.2, back.2), (0, 0), "{phase}: no packet arrived twice");
        (ours, theirs)
    };
    let counted = |gw: &Daemon| {
        let s = gw.json(&["stats"]);
        let t = s["tunnels"][0].clone();
        (t["tx_packets"].as_u64().unwrap(), t["rx_packets"].as_u64().unwrap())
    };
    let before = counted(&gw);
    let (_, theirs) = rekeys("charon rekeying", 10);
    assert!(theirs >= 1, "charon rekeyed during the flow\n{}", gw.ok(&["events"]));
    gw.ok(&["tunnel", "set", "t-idc1", "--lifetime-kilobytes", "2048"]);
    let (ok, v) = wait(&gw, 15, |v| up(v) && v["ike_sas"].as_array().is_some_and(|a| a.len() == 1));
    assert!(ok, "negotiated afresh with the volume limit: {v}");
    common::reaches(&lab, "idc", VPC);
    let (ours, _) = rekeys("vpngw rekeying", 10);
    assert!(ours >= 2, "vpngw rekeyed during the flow\n{}", gw.ok(&["events"]));
    // The tunnel's counters went on across the rekeys and the
    // renegotiation: every flow packet (and the pings) is in them.
    let after = counted(&gw);
    println!("tunnel counters across the rekeys: tx {} rx {}", after.0 - before.0, after.1 - before.1);
    assert!(after.0 - before.0 >= 10_000 && after.1 - before.1 >= 10_000, "{before:?} -> {after:?}");

    // (d) Liveness: charon killed; down within interval + timeout.
    let (ok, out) = swan(&["stop", "--dir", charon.dir(), "--kill9"]);
    assert!(ok, "charon killed: {out}");
    let t0 = Instant::now();
    let (ok, v) = wait(&gw, 15, |v| !up(v));
    let took = t0.elapsed();
    assert!(ok, "the tunnel goes down: {v}");
    println!("tunnel down {:.1} s after charon was killed (DPD interval 2 s, timeout 6 s)", took.as_secs_f64());
    assert!(took <= Duration::from_secs(9), "{took:?}");
    let events = gw.ok(&["events"]);
    assert!(events.contains("tunnel-down"), "{events}");
    drop(charon);

    // (b) strongSwan initiates, vpngw passive; then (e) a wrong PSK.
    let charon = Charon::start(&lab);
    charon.load("vpc", PSK, &["--ike-proposals", "aes128gcm16-prfsha256-ecp256", "--esp-proposals", "aes256gcm16"]);
    gw.ok(&[
        "tunnel",
        "set",
        "t-idc1",
        "--negotiation",
        "passive",
        "--ike-proposal",
        "aes128gcm16-prfsha256-ecp256",
        "--esp-proposal",
        "aes256gcm16",
    ]);
    let (ok, out) = swan(&["initiate", "--dir", charon.dir(), "--name", "vpc", "--timeout", "10"]);
    assert!(ok, "charon initiates: {out}");
    let (ok, v) = wait(&gw, 10, up);
    assert!(ok, "up as responder: {v}");
    assert_eq!(v["ike_sas"][0]["initiator"], false);
    assert_eq!(v["ike_sas"][0]["child"]["proposal"], "aes256gcm16");
    common::reaches(&lab, "idc", VPC);

    // charon crashes, restarts and negotiates anew before vpngw's liveness checks
    // notice: the new IKE SA supersedes the old, which never takes the
    // tunnel down, even after the DPD timeout has long passed.
    let old_spi = v["ike_sas"][0]["spi"].clone();
    let events_before = gw.ok(&["events"]).lines().count();
    let (ok, out) = swan(&["stop", "--dir", charon.dir(), "--kill9"]);
    assert!(ok, "charon killed: {out}");
    drop(charon);
    let charon = Charon::start(&lab);
    charon.load("vpc", PSK, &["--ike-proposals", "aes128gcm16-prfsha256-ecp256", "--esp-proposals", "aes256gcm16"]);
    let (ok, out) = swan(&["initiate", "--dir", charon.dir(), "--name", "vpc", "--timeout", "10"]);
    assert!(ok, "the restarted charon initiates: {out}");
    std::thread::sleep(Duration::from_secs(10));
    let v = ike(&gw);
    assert!(up(&v), "up on the new IKE SA: {v}");
    let sas = v["ike_sas"].as_array().unwrap();
    assert!(sas.iter().all(|sa| sa["spi"] != old_spi), "the old IKE SA is gone: {v}");
    let events = gw.ok(&["events"]);
    let since: Vec<&str> = events.lines().skip(events_before).collect();
    assert!(!since.iter().any(|l| l.contains("tunnel-down")), "no outage: {since:#?}");
    common::reaches(&lab, "idc", VPC);
    println!("charon restarted: the new IKE SA took over, the tunnel stayed up");

    // The other ESP suites, and strongSwan's default ESP proposal (none
    // given to charon): charon initiates, traffic passes both ways.
    for (esp, charon_offers) in [
        ("chacha20poly1305", Some("chacha20poly1305")),
        ("aes128-sha256", Some("aes128-sha256")),
        ("aes256-sha256", Some("aes256-sha256")),
        ("aes128-sha256", None),
    ] {
        let _ = swan(&["terminate", "--dir", charon.dir(), "--name", "vpc"]);
        let mut more = vec!["--ike-proposals", "aes128gcm16-prfsha256-ecp256"];
        more.extend(charon_offers.map(|p| ["--esp-proposals", p]).into_iter().flatten());
        charon.load("vpc", PSK, &more);
        gw.ok(&["tunnel", "set", "t-idc1", "--esp-proposal", esp]);
        let (ok, v) = wait(&gw, 5, |v| !up(v));
        assert!(ok, "down while charon has not initiated: {v}");
        let (ok, out) = swan(&["initiate", "--dir", charon.dir(), "--name", "vpc", "--timeout", "10"]);
        assert!(ok, "charon initiates with {charon_offers:?}: {out}");
        let (ok, v) = wait(&gw, 10, up);
        assert!(ok, "up with {esp}: {v}");
        assert_eq!(v["ike_sas"][0]["child"]["proposal"], esp, "{v}");
        common::reaches(&lab, "idc", VPC);
        common::reaches(&lab, "vpc", IDC);
        println!("ESP {esp} (charon offering {}): ping both ways", charon_offers.unwrap_or("its defaults"));
    }

    gw.ok(&["tunnel", "set", "t-idc1", "--psk", "not the lab's key"]);
    let (ok, v) = wait(&gw, 5, |v| !up(v));
    assert!(ok, "a changed PSK takes the tunnel down (negotiated afresh): {v}");
    let (ok, out) = swan(&["initiate", "--dir", charon.dir(), "--name", "vpc", "--timeout", "10"]);
    assert!(!ok, "charon's initiation fails: {out}");
    let (ok, v) = wait(&gw, 5, |v| {
        v["last_failure"].as_str().is_some_and(|f| f.contains("AUTHENTICATION_FAILED") || f.contains("authentication"))
    });
    assert!(ok, "show ike says why: {v}");
    assert!(!up(&v));
    let sas = gw.json(&["sas"]);
    assert!(
        sas[0]["outbound"].is_null() && sas[0]["inbound"].as_array().unwrap().is_empty(),
        "nothing installed: {sas}"
    );
    println!("wrong PSK: {}", v["last_failure"]);

    // On first traffic: nothing is negotiated until a packet is routed
    // into the tunnel; that packet asks for it, and the ones after pass.
    // Identities are domain names this time.
    let fqdn = ["--local-id", "idc1.example.net", "--remote-id", "vpc.example.com"];
    let mut more = vec!["--ike-proposals", "aes128gcm16-prfsha256-ecp256", "--esp-proposals", "aes128-sha256"];
    more.extend(fqdn);
    charon.load("vpc", PSK, &more);
    gw.ok(&[
        "tunnel",
        "set",
        "t-idc1",
        "--psk",
        PSK,
        "--negotiation",
        "on-traffic",
        "--local-id",
        "vpc.example.com",
        "--remote-id",
        "idc1.example.net",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let v = ike(&gw);
    assert!(!up(&v) && v["ike_sas"].as_array().unwrap().is_empty(), "nothing negotiated without traffic: {v}");
    let t0 = Instant::now();
    common::reaches(&lab, "vpc", IDC);
    let v = ike(&gw);
    assert!(up(&v) && v["ike_sas"][0]["initiator"] == true, "negotiated by vpngw on traffic: {v}");
    assert_eq!(
        (v["ike_sas"][0]["local_id"].as_str(), v["ike_sas"][0]["remote_id"].as_str()),
        (Some("vpc.example.com"), Some("idc1.example.net"))
    );
    assert!(gw.ok(&["events"]).contains("traffic for the tunnel: negotiating"));
    println!("on-traffic: negotiated and reached in {:.1} s from the first ping", t0.elapsed().as_secs_f64());

    // A NAT keepalive went out (every 20 s while an IKE SA saw a NAT).
    let (ok, _, err) = capture.stop_after_exit(Duration::from_secs(1));
    assert!(ok, "tshark caught a keepalive: {err}");
    let (ok, out) = lab.run(
        "cgw",
        &[
            "tshark",
            "-r",
            &keepalive.display().to_string(),
            "-T",
            "fields",
            "-e",
            "udp.srcport",
            "-e",
            "udp.payload",
            "-e",
            "udpencap.nat_keepalive",
        ],
    );
    let _ = std::fs::remove_file(&keepalive);
    let keepalive_line = out.lines().next().unwrap_or_default();
    assert!(ok && keepalive_line == "4500\tff\t1", "tshark: a NAT-keepalive, one 0xff byte from port 4500: {out:?}");
    println!("NAT keepalive seen by tshark: {keepalive_line}");
}

/// What vpngw logs when it rekeys the child, and when charon does.
const OURS: &str = "child SA rekeyed";
const THEIRS: &str = "the peer rekeys child SA";

/// How many events say one of `what`.
fn count_events(gw: &Daemon, what: &[&str]) -> usize {
    let events = gw.ok(&["--json", "events"]);
    let detail = |line: &str| serde_json::from_str::<Value>(line).expect("an event")["detail"].to_string();
    events.lines().filter(|e| what.iter().any(|w| detail(e).contains(w))).count()
}
