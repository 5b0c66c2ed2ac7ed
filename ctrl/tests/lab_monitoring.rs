//! Health checks, failover, the bandwidth limit and monitoring, in the
//! namespace lab with real daemons and real traffic:
//!
//! - Active tunnel `ta` to one customer gateway, standby `tb` to another,
//!   both with health checks. The customer gateway behind `ta` is killed
//!   under a 500 packets/s flow: the check takes `ta` down and the flow
//!   moves to `tb`, by itself; restarted, `ta` comes back after the
//!   hold-down and the flow returns. The failover time (last packet through
//!   the active to first through the standby) and the losses are measured
//!   by the sinks, not by vpngw.
//! - A 20 Mbit/s bandwidth limit under 40 Mbit/s offered: what passes,
//!   measured by the sink over 10 s.
//! - The Prometheus endpoint read by Prometheus's own text parser
//!   (prometheus-client), its counters checked against what the sink
//!   counted; `vpnctl events`, `vpnctl top`, and `vpnctl capture` files
//!   read by tshark.
//!
//! The data centre has one address (172.16.1.9) reachable behind either
//! customer gateway; the lab stands it in with two hosts of that address,
//! one behind each (`idc` behind `cgw`, `idc2` behind `cgw2`), so each
//! sink tells which tunnel carried a packet.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use vpngw_testlab::Lab;

mod common;
use common::{key, reaches, tmp, Daemon, VPNCTL};

const FLOW: &str = "scripts/interop/udp_flow.py";
const METRICS: &str = "127.0.0.1:9477";
const IDC: &str = "172.16.1.9";
const VPC: &str = "10.1.0.5";
/// Health check timings (ms): interval, failures, timeout, hold-down.
const CHECK: (u64, u64, u64, u64) = (1000, 3, 500, 3000);

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

fn health(local: &str, remote: &str) -> String {
    let (i, f, t, h) = CHECK;
    format!(
        "health_check = {{ local = \"{local}\", remote = \"{remote}\", interval_ms = {i}, failures = {f}, \
         timeout_ms = {t}, hold_down_ms = {h} }}\n"
    )
}

/// The customer gateway `n` (1: behind `ta`, 2: behind `tb`).
fn cgw_config(n: u32) -> String {
    let (to_cgw, to_cloud) = (0x1000 + n, 0x2000 + n);
    format!(
        "[[interface]]\nname = \"cgw-out\"\nrole = \"outside\"\nrouter = \"198.51.100.254\"\n\n\
         [[interface]]\nname = \"cgw-in\"\nrole = \"inside\"\n\n\
         [[gateway]]\nname = \"idc\"\nattachment = \"vpc\"\noutside = \"cgw-out\"\ninside = \"cgw-in\"\n\
         addresses = [\"198.51.100.{n}\"]\n\n\
         [[customer_gateway]]\nname = \"cloud\"\naddress = \"192.0.2.1\"\n\n\
         [[tunnel]]\nname = \"to-cloud\"\ngateway = \"idc\"\ncustomer_gateway = \"cloud\"\nsuite = \"aes-gcm-128\"\n\
         outbound = {{ spi = {to_cloud:#x}, key = \"{}\" }}\ninbound = [{{ spi = {to_cgw:#x}, key = \"{}\" }}]\n{}\n\
         [[route]]\ngateway = \"idc\"\nprefix = \"172.16.1.0/24\"\nvia = \"inside\"\n\n\
         [[route]]\ngateway = \"idc\"\nprefix = \"10.0.0.0/8\"\nvia = \"tunnel:to-cloud\"\n",
        key(to_cloud),
        key(to_cgw),
        health(&format!("169.254.1{n}.2"), &format!("169.254.1{n}.1")),
    )
}

fn gw_config() -> String {
    let mut s = "[[interface]]\nname = \"gw-out\"\nrole = \"outside\"\nrouter = \"192.0.2.254\"\n\n\
                 [[interface]]\nname = \"gw-in\"\nrole = \"inside\"\n\n\
                 [[gateway]]\nname = \"gw1\"\nattachment = \"vpc\"\noutside = \"gw-out\"\ninside = \"gw-in\"\n\
                 addresses = [\"192.0.2.1\"]\n\n\
                 [[route]]\ngateway = \"gw1\"\nprefix = \"10.1.0.0/16\"\nvia = \"inside\"\n"
        .to_string();
    for (n, name, priority) in [(1u32, "ta", 0), (2, "tb", 10)] {
        let (to_cgw, to_cloud) = (0x1000 + n, 0x2000 + n);
        s += &format!(
            "\n[[customer_gateway]]\nname = \"idc-{name}\"\naddress = \"198.51.100.{n}\"\n\n\
             [[tunnel]]\nname = \"{name}\"\ngateway = \"gw1\"\ncustomer_gateway = \"idc-{name}\"\nsuite = \"aes-gcm-128\"\n\
             outbound = {{ spi = {to_cgw:#x}, key = \"{}\" }}\ninbound = [{{ spi = {to_cloud:#x}, key = \"{}\" }}]\n{}\n\
             [[route]]\ngateway = \"gw1\"\nprefix = \"172.16.1.0/24\"\nvia = \"tunnel:{name}\"\npriority = {priority}\n",
            key(to_cgw),
            key(to_cloud),
            health(&format!("169.254.1{n}.1"), &format!("169.254.1{n}.2")),
        );
    }
    s
}

/// A tunnel's entry in `vpnctl stats --json`.
fn tunnel(gw: &Daemon, name: &str) -> Value {
    let s = gw.json(&["stats"]);
    s["tunnels"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().expect("the tunnel")
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// What a sink wrote.
struct Sink {
    count: u64,
    ip_bytes: u64,
    first: f64,
    last: f64,
    arrivals: Vec<(u64, f64)>,
}

fn sink_result(file: &Path) -> Sink {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("the sink wrote its file")).unwrap();
    Sink {
        count: v["count"].as_u64().unwrap(),
        ip_bytes: v["ip_bytes"].as_u64().unwrap(),
        first: v["first"].as_f64().unwrap_or(0.0),
        last: v["last"].as_f64().unwrap_or(0.0),
        arrivals: v["arrivals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a[0].as_u64().unwrap(), a[1].as_f64().unwrap()))
            .collect(),
    }
}

/// The metrics endpoint as Prometheus's parser reads it: sample name and
/// sorted labels to value.
fn scrape(lab: &Lab) -> serde_json::Map<String, Value> {
    let (ok, out) =
        lab.run("gw", &["python3", &repo("scripts/interop/check_metrics.py"), &format!("http://{METRICS}/metrics")]);
    assert!(ok, "the endpoint serves text Prometheus parses: {out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["samples"].as_object().unwrap().clone()
}

fn sample(m: &serde_json::Map<String, Value>, key: &str) -> f64 {
    m.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("{key} is scraped"))
}

#[test]
fn health_checks_fail_over_and_back_the_limit_holds_and_operators_see_it() {
    let lab = Lab::up_with_idcs("mon", 2);
    let _scratch = common::Scratch::new(&lab);
    // The second data centre host takes the first one's address, behind cgw2.
    for (role, cmds) in [
        (
            "cgw2",
            vec![
                vec!["ip", "addr", "flush", "dev", "cgw-in"],
                vec!["ip", "addr", "add", "172.16.1.2/24", "dev", "cgw-in"],
            ],
        ),
        (
            "idc2",
            vec![
                vec!["ip", "addr", "flush", "dev", "idc0"],
                vec!["ip", "addr", "add", "172.16.1.9/24", "dev", "idc0"],
                vec!["ip", "route", "add", "default", "via", "172.16.1.2"],
            ],
        ),
    ] {
        for c in cmds {
            let (ok, out) = lab.run(role, &c);
            assert!(ok, "{role}: {c:?}: {out}");
        }
    }
    let mut cgw1 = Daemon::start(&lab, "cgw", &cgw_config(1), true);
    let _cgw2 = Daemon::start(&lab, "cgw2", &cgw_config(2), false);
    let gw = Daemon::start_with(&lab, "gw", &gw_config(), false, &["--metrics", METRICS]);
    reaches(&lab, "vpc", IDC);
    wait_for("both checks answered", Duration::from_secs(10), || {
        ["ta", "tb"].iter().all(|t| tunnel(&gw, t)["health"]["probes_answered"].as_u64().unwrap_or(0) >= 2)
    });
    let h = tunnel(&gw, "ta")["health"].clone();
    assert_eq!(h["state"], "up", "{h}");
    assert!(h["delay_ms"].as_f64().unwrap() < 100.0, "{h}");

    // Failover and failback under a 500 packets/s flow.
    let (out1, out2) = (tmp(&lab, "sink1.json"), tmp(&lab, "sink2.json"));
    let sinks = [("idc", &out1), ("idc2", &out2)].map(|(role, out)| {
        lab.spawn(
            role,
            &["python3", &repo(FLOW), "sink", "5000", "--seconds", "32", "--out", &out.display().to_string()],
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let sender = lab.spawn("vpc", &["python3", &repo(FLOW), "send", IDC, "5000", "--pps", "500", "--seconds", "28"]);
    std::thread::sleep(Duration::from_secs(5));
    let killed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    cgw1.kill9();
    let detected = wait_for("ta down", Duration::from_secs(8), || tunnel(&gw, "ta")["up"] == false);
    println!("ta down {detected:?} after its customer gateway was killed");
    // Nothing but probes goes into the down tunnel.
    let (a, b) = (tunnel(&gw, "ta"), {
        std::thread::sleep(Duration::from_secs(3));
        tunnel(&gw, "ta")
    });
    let (tx, probes) = (
        b["tx_packets"].as_u64().unwrap() - a["tx_packets"].as_u64().unwrap(),
        b["health"]["probes_sent"].as_u64().unwrap() - a["health"]["probes_sent"].as_u64().unwrap(),
    );
    assert!(probes >= 2 && tx <= probes, "into the down tunnel: {tx} packets, {probes} of them probes");
    cgw1.launch(&lab);
    let back = wait_for("ta back up", Duration::from_secs(12), || tunnel(&gw, "ta")["up"] == true);
    println!("ta up again {back:?} after its customer gateway restarted (hold-down {} ms)", CHECK.3);
    let (ok, sent, _) = sender.stop_after_exit(Duration::from_secs(30));
    assert!(ok, "the sender ran");
    let sent: u64 = serde_json::from_str::<Value>(sent.trim()).unwrap()["sent"].as_u64().unwrap();
    for s in sinks {
        s.stop_after_exit(Duration::from_secs(10));
    }
    let (s1, s2) = (sink_result(&out1), sink_result(&out2));
    let before = s1.arrivals.iter().filter(|a| a.1 < killed + 0.5).map(|a| a.1).fold(0.0, f64::max);
    let via_standby = s2.arrivals.iter().map(|a| a.1).fold(f64::MAX, f64::min);
    let failover = via_standby - before;
    let returned =
        s1.arrivals.iter().filter(|a| a.1 > killed + 1.0).map(|a| (a.0, a.1)).next().expect("traffic returned to ta");
    let last_standby = s2.arrivals.iter().map(|a| a.0).max().unwrap();
    let mut seen: Vec<u64> = s1.arrivals.iter().chain(&s2.arrivals).map(|a| a.0).collect();
    seen.sort_unstable();
    seen.dedup();
    let lost_failback =
        (last_standby.min(returned.0)..returned.0.max(last_standby)).filter(|s| seen.binary_search(s).is_err()).count();
    let (i, f, _, _) = CHECK;
    println!(
        "failover: {failover:.3} s from the last packet through ta to the first through tb (target <= {} s); \
         sent {sent}, received {} via ta and {} via tb, lost {}; failback lost {lost_failback}",
        (i * f + i) as f64 / 1000.0,
        s1.count,
        s2.count,
        sent - seen.len() as u64
    );
    assert!(failover > 0.0 && failover <= (i * f + i) as f64 / 1000.0, "failover {failover:.3} s");
    assert!(s2.count > 0 && s1.count > s2.count / 4, "both carried traffic: {} {}", s1.count, s2.count);
    assert!(
        lost_failback <= 5,
        "failback loses at most the packets that find cgw's neighbour unresolved: {lost_failback}"
    );
    let events = gw.ok(&["events", "--json"]);
    let events: Vec<Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of_ta = |kind: &str| events.iter().find(|e| e["kind"] == kind && e["tunnel"] == "ta").cloned();
    let down = of_ta("tunnel-down").expect("a tunnel-down event");
    assert!(down["detail"].as_str().unwrap().contains("3 probes in a row unanswered"), "{down}");
    assert!(of_ta("tunnel-up").is_some() && of_ta("alarm").is_some() && of_ta("alarm-cleared").is_some(), "{events:?}");
    let text = gw.ok(&["events"]);
    assert!(text.contains("tunnel-down") && text.contains("gw1/ta"), "{text}");

    // The bandwidth limit: 40 Mbit/s offered, 20 allowed.
    gw.ok(&["gateway", "set", "gw1", "--bandwidth-mbps", "20"]);
    // The tunnel also carries the probes and the answers to the peer's.
    let peer_probes = || tunnel(&cgw1, "to-cloud")["health"]["probes_sent"].as_f64().unwrap();
    let (before, peer_before) = (scrape(&lab), peer_probes());
    let out = tmp(&lab, "sink-bw.json");
    let sink = lab.spawn(
        "idc",
        &["python3", &repo(FLOW), "sink", "5000", "--seconds", "14", "--out", &out.display().to_string()],
    );
    std::thread::sleep(Duration::from_millis(500));
    let sender = lab.spawn(
        "vpc",
        &["python3", &repo(FLOW), "send", IDC, "5000", "--pps", "3572", "--seconds", "10", "--size", "1400"],
    );
    std::thread::sleep(Duration::from_secs(6));
    let during = scrape(&lab);
    let top = gw.ok(&["top", "--iterations", "1"]);
    let (ok, _, _) = sender.stop_after_exit(Duration::from_secs(20));
    assert!(ok);
    sink.stop_after_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let (after, peer_after) = (scrape(&lab), peer_probes());
    let bw = sink_result(&out);
    let rate = bw.ip_bytes as f64 * 8.0 / (bw.last - bw.first);
    println!(
        "bandwidth limit 20 Mbit/s: {:.3} Mbit/s through over {:.2} s ({} packets)",
        rate / 1e6,
        bw.last - bw.first,
        bw.count
    );
    assert!((rate - 20e6).abs() / 20e6 < 0.02, "within 2% of 20 Mbit/s: {:.3} Mbit/s", rate / 1e6);
    let util = sample(&during, "vpngw_gateway_utilisation_ratio{direction=tx,gateway=gw1}");
    assert!((0.9..1.1).contains(&util), "utilisation while policed: {util}");
    assert!(top.contains("tunnel ta") && top.contains("up") && top.contains("util"), "{top}");
    let dropped = sample(&after, "vpngw_gateway_drops_total{gateway=gw1,reason=bandwidth-limit}");
    assert!(dropped > 10_000.0, "over the limit is dropped and counted: {dropped}");
    let delta = |m: &serde_json::Map<String, Value>| {
        sample(m, "vpngw_tunnel_tx_packets_total{gateway=gw1,tunnel=ta}")
            - sample(m, "vpngw_tunnel_probes_sent_total{gateway=gw1,tunnel=ta}")
    };
    let through = delta(&after) - delta(&before) - (peer_after - peer_before);
    assert!(
        (through - bw.count as f64).abs() <= 2.0,
        "the endpoint's count ({through}) is what the sink saw ({})",
        bw.count
    );
    let alarm = gw.ok(&["events", "--json"]);
    assert!(
        alarm.lines().any(|l| l.contains("\"alarm\"") && l.contains("utilisation: tx")),
        "the utilisation alarm was raised: {alarm}"
    );

    // The other direction has its own limit: out of the tunnels into the VPC.
    let out = tmp(&lab, "sink-bw-in.json");
    let sink = lab.spawn(
        "vpc",
        &["python3", &repo(FLOW), "sink", "5001", "--seconds", "14", "--out", &out.display().to_string()],
    );
    std::thread::sleep(Duration::from_millis(500));
    let sender = lab.spawn(
        "idc",
        &["python3", &repo(FLOW), "send", VPC, "5001", "--pps", "3572", "--seconds", "10", "--size", "1400"],
    );
    let (ok, _, _) = sender.stop_after_exit(Duration::from_secs(20));
    assert!(ok);
    sink.stop_after_exit(Duration::from_secs(10));
    let bw = sink_result(&out);
    let rate = bw.ip_bytes as f64 * 8.0 / (bw.last - bw.first);
    println!("bandwidth limit 20 Mbit/s inbound: {:.3} Mbit/s through over {:.2} s", rate / 1e6, bw.last - bw.first);
    assert!((rate - 20e6).abs() / 20e6 < 0.02, "inbound within 2% of 20 Mbit/s: {:.3} Mbit/s", rate / 1e6);
    gw.ok(&["gateway", "set", "gw1", "--no-bandwidth-limit"]);

    // events --follow prints what happens as it happens.
    let mut follow = std::process::Command::new(VPNCTL)
        .args(["--socket", gw.socket.to_str().unwrap(), "events", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    gw.ok(&["tunnel", "set", "tb", "--down"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("an event within 5 s");
        if line.contains("\"tunnel-down\"") && line.contains("\"tb\"") {
            break line;
        }
    };
    assert!(seen.contains("set by the operator"), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();
    gw.ok(&["tunnel", "set", "tb", "--up"]);

    // Capture, inner and outer, read by tshark.
    let ping = lab.spawn("vpc", &["ping", "-i", "0.05", "-c", "400", IDC]);
    for (flag, filter) in [("--inner", "icmp"), ("--outer", "esp")] {
        let file = tmp(&lab, &format!("capture{flag}.pcap"));
        let out = std::process::Command::new(VPNCTL)
            .args(["--socket", gw.socket.to_str().unwrap(), "capture", "--tunnel", "ta", flag, "--count", "20"])
            .args(["--timeout", "15", "-w", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = std::process::Command::new("tshark")
            .args(["-r", file.to_str().unwrap(), "-Y", filter, "-T", "fields", "-e", "ip.dst"])
            .output()
            .unwrap();
        let lines = String::from_utf8_lossy(&t.stdout).lines().count();
        assert_eq!(lines, 20, "{flag}: tshark reads 20 {filter} packets: {}", String::from_utf8_lossy(&t.stderr));
    }
    drop(ping);
}
