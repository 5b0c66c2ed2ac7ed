//! vpngw carrying real packets in the namespace lab (`scripts/lab.sh`):
//! two vpngw daemons, the cloud gateway and the customer gateway, with
//! static SAs; the VPC host and the IDC host ping each other and run iperf3
//! TCP both ways, over raw ESP and NAT-T, with every suite; tshark (an
//! independent decoder) checks the ICVs of what crossed the internet; and
//! bad traffic on the outside port is dropped with the right counters while
//! nothing reaches the inside.
//!
//! The daemons busy-poll a core each, so the lab tests take turns (a lock)
//! rather than run side by side on a two-core machine.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vpngw_testlab::{Background, Lab};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const VPNGW: &str = env!("CARGO_BIN_EXE_vpngw");
const GW_KEY: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20a0a1a2a3\
                      a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7";
const CGW_KEY: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0d0d1d2d3\
                       d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7";

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The keying material for `suite` (key and salt; for AES-CBC encryption
/// and HMAC keys), cut from `long`.
fn keymat(long: &str, suite: &str) -> String {
    let bytes: usize = suite.parse::<vpngw_engine::Suite>().expect("a suite").keymat_len();
    long[..bytes * 2].to_string()
}

/// The lab's configuration `name` (gw or cgw) for `suite` and NAT-T,
/// written next to the lab's other files.
fn config(lab: &Lab, name: &str, suite: &str, natt: bool) -> PathBuf {
    let text = std::fs::read_to_string(scripts().join(format!("lab/{name}.toml"))).expect("lab config");
    let mut text = text
        .replace("0102030405060708090a0b0c0d0e0f1011121314", &keymat(GW_KEY, suite))
        .replace("a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4", &keymat(CGW_KEY, suite))
        .replace("suite = \"aes-gcm-128\"", &format!("suite = \"{suite}\""));
    if natt {
        text = text.replace(&format!("suite = \"{suite}\""), &format!("suite = \"{suite}\"\nnat_t = true"));
    }
    let path = std::env::temp_dir().join(format!("{}-{name}.toml", lab.prefix));
    std::fs::write(&path, text).expect("write a lab config");
    path
}

/// Where the daemon in `role`'s namespace serves its control socket.
fn socket(lab: &Lab, role: &str) -> String {
    std::env::temp_dir().join(format!("{}-{role}.sock", lab.prefix)).display().to_string()
}

/// A vpngw daemon in `role`'s namespace (no state file), started and
/// waited for.
fn vpngw(lab: &Lab, role: &str, config: &Path) -> Background {
    let mut d = lab.spawn(
        role,
        &[VPNGW, "--config", config.to_str().unwrap(), "--json", "--no-state", "--socket", &socket(lab, role)],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.running(), "vpngw in {role} is running");
    d
}

/// Stops a daemon (SIGTERM) and returns its report (printed as JSON on exit).
fn stop(d: Background) -> Value {
    let (ok, out, err) = d.stop(Duration::from_secs(5));
    assert!(ok, "vpngw exits cleanly on SIGTERM: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the exit report is JSON ({e}): {out}"))
}

/// Pings `dst` from `role` until a reply comes (neighbours resolve on the
/// first packets), then `count` more that must all be answered.
fn ping(lab: &Lab, role: &str, dst: &str, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.run(role, &["ping", "-c1", "-W1", dst]).0 {
        assert!(Instant::now() < deadline, "{role} reaches {dst} within 10 s");
    }
    let (ok, out) = lab.run(role, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", dst]);
    assert!(ok && out.contains(&format!("{count} received")), "{role} -> {dst}: {out}");
}

/// A `seconds` iperf3 TCP run from the VPC host to the IDC host (or back,
/// `reverse`); returns the receiver's bit/s.
fn iperf(lab: &Lab, seconds: u32, reverse: bool, port: u16) -> f64 {
    let port = port.to_string();
    let server = lab.spawn("idc", &["iperf3", "-s", "-1", "-p", &port]);
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec!["iperf3", "-c", "172.16.1.9", "-p", &port, "-J"];
    let t = seconds.to_string();
    args.extend(["-t", &t]);
    if reverse {
        args.push("-R");
    }
    let (ok, out) = lab.run("vpc", &args);
    drop(server);
    assert!(ok, "iperf3 ran: {out}");
    let v: Value = serde_json::from_str(&out).expect("iperf3 -J output");
    v["end"]["sum_received"]["bits_per_second"].as_f64().expect("received bit/s")
}

fn tunnel(report: &Value) -> &Value {
    &report["tunnels"][0]
}

fn drops(report: &Value, reason: &str) -> u64 {
    report["workers"][0]["drops"][reason].as_u64().unwrap_or(0)
}

/// Every suite (AES-CBC in its 128-bit form, strongSwan's default), raw ESP
/// and NAT-T: ping both ways and ten seconds of TCP each way through two
/// vpngw instances; what crossed the internet decodes in tshark with good
/// ICVs (AES-GCM and AES-CBC; tshark 4.0 has no ChaCha20-Poly1305).
#[test]
fn two_vpngw_carry_ping_and_tcp_with_every_suite_raw_and_natt() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for suite in ["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305", "aes-cbc-128-hmac-sha256"] {
        for natt in [false, true] {
            let what = format!("{suite}{}", if natt { " nat-t" } else { "" });
            let lab = Lab::up(if natt { "e2en" } else { "e2e" });
            let (gw_cfg, cgw_cfg) = (config(&lab, "gw", suite, natt), config(&lab, "cgw", suite, natt));
            let gw = vpngw(&lab, "gw", &gw_cfg);
            let cgw = vpngw(&lab, "cgw", &cgw_cfg);
            let pcap = std::env::temp_dir().join(format!("{}.pcap", lab.prefix));
            let capture = lab.spawn("inet", &["tshark", "-q", "-i", "inet0", "-w", pcap.to_str().unwrap()]);
            std::thread::sleep(Duration::from_millis(800));
            ping(&lab, "vpc", "172.16.1.9", 5);
            ping(&lab, "idc", "10.1.0.5", 5);
            let (ok, out) = lab.run("vpc", &["ping", "-c", "20", "-i", "0.01", "-s", "1200", "172.16.1.9"]);
            assert!(ok, "{what}: large pings: {out}");
            // The capture covers the pings; TCP runs without it.
            std::thread::sleep(Duration::from_millis(500));
            drop(capture.stop(Duration::from_secs(3)));
            let up = iperf(&lab, 10, false, 5201);
            let down = iperf(&lab, 10, true, 5202);
            println!("{what}: TCP VPC->IDC {:.0} Mbit/s, IDC->VPC {:.0} Mbit/s", up / 1e6, down / 1e6);
            assert!(up > 100e6 && down > 100e6, "{what}: TCP runs at a usable rate ({up} / {down} bit/s)");
            let (gw_report, cgw_report) = (stop(gw), stop(cgw));
            for (side, r) in [("gw", &gw_report), ("cgw", &cgw_report)] {
                let t = tunnel(r);
                assert!(t["outbound"]["packets"].as_u64().unwrap() > 10_000, "{what} {side}: sent {t}");
                assert!(t["inbound"][0]["packets"].as_u64().unwrap() > 10_000, "{what} {side}: received {t}");
                for port in ["1", "2"] {
                    let tx = r["workers"][0]["ports"][port]["tx"].as_u64().unwrap_or(0);
                    assert!(tx > 10_000, "{what} {side}: port {port}'s own counters report what it sent: {r}");
                    let lost = &r["workers"][0]["ports"][port]["kernel-rx-dropped"];
                    assert!(lost.is_u64(), "{what} {side}: port {port} reports the kernel's receive drops: {r}");
                }
                for reason in ["icv", "replay", "unknown-spi", "malformed", "encap-mismatch"] {
                    assert_eq!(drops(r, reason), 0, "{what} {side}: no {reason} drops: {r}");
                }
            }
            if suite != "chacha20-poly1305" {
                tshark_checks(&pcap, suite, natt, &what);
            }
            let _ = std::fs::remove_file(&pcap);
            for f in [gw_cfg, cgw_cfg] {
                let _ = std::fs::remove_file(f);
            }
            let (_, links) = lab.run("gw", &["ip", "-d", "link", "show"]);
            assert!(!links.contains("prog/xdp"), "{what}: no XDP program left behind: {links}");
        }
    }
}

/// tshark decrypts the captured ESP of both directions with the SAs' keys
/// and finds every ICV good.
fn tshark_checks(pcap: &Path, suite: &str, natt: bool, what: &str) {
    let sa = |spi: &str, key: &str| {
        let algos = match suite {
            "aes-gcm-128" | "aes-gcm-256" => {
                format!("\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{key}\",\"NULL\",\"\"")
            }
            "aes-cbc-128-hmac-sha256" => {
                let (enc, auth) = key.split_at(32);
                format!("\"AES-CBC [RFC3602]\",\"0x{enc}\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x{auth}\"")
            }
            _ => unreachable!("tshark 4.0 decodes AES-GCM and AES-CBC only"),
        };
        format!("\"IPv4\",\"*\",\"*\",\"{spi}\",{algos}")
    };
    let out_sa = format!("uat:esp_sa:{}", sa("0x00001001", &keymat(GW_KEY, suite)));
    let in_sa = format!("uat:esp_sa:{}", sa("0x00002001", &keymat(CGW_KEY, suite)));
    let out = std::process::Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE", "-o", &out_sa, "-o", &in_sa, "-Y", "esp"])
        .args(["-T", "fields", "-e", "esp.spi", "-e", "esp.icv_good", "-e", "esp.icv_bad", "-e", "udp.dstport"])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let good = |spi: &str| lines.iter().filter(|l| l.starts_with(spi) && l.split('\t').nth(1) == Some("1")).count();
    let (out_good, in_good) = (good("0x00001001"), good("0x00002001"));
    assert!(out_good >= 10 && in_good >= 10, "{what}: tshark finds good ICVs both ways ({out_good}, {in_good})");
    assert!(lines.iter().all(|l| l.split('\t').nth(1) == Some("1")), "{what}: every ICV good");
    let udp = lines.iter().filter(|l| l.split('\t').nth(3) == Some("4500")).count();
    assert_eq!(udp == lines.len(), natt, "{what}: NAT-T iff ESP-in-UDP ({udp} of {})", lines.len());
}

/// Scapy in the internet namespace, aiming at the gateway's public address:
/// garbage, truncated ESP, an unknown SPI, one good packet (sealed by
/// Scapy with the customer gateway's SA), its replay, and a tampered one.
const BAD_TRAFFIC: &str = r#"
from scapy.all import IP, UDP, ESP, Raw, send, conf
from scapy.layers.ipsec import SecurityAssociation
conf.verb = 0
gw, cgw = "192.0.2.1", "198.51.100.1"
sa = SecurityAssociation(ESP, spi=0x2001, crypt_algo="AES-GCM",
                         crypt_key=bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"),
                         tunnel_header=IP(src=cgw, dst=gw))
inner = IP(src="172.16.1.9", dst="10.1.0.5") / UDP(sport=9999, dport=9999) / Raw(b"hello")
good = sa.encrypt(inner, seq_num=1, iv=b"\x01" * 8)
tampered = bytearray(bytes(sa.encrypt(inner, seq_num=2, iv=b"\x02" * 8)))
tampered[-1] ^= 1
send(IP(src=cgw, dst=gw, proto=50) / Raw(b"\x01\x02\x03"))                     # garbage
send(IP(src=cgw, dst=gw) / UDP(sport=4500, dport=4500) / Raw(b"\x00\x00\x20\x01\xff"))  # truncated ESP-in-UDP
send(IP(src=cgw, dst=gw) / ESP(spi=0x2001, seq=3) / Raw(b"\x00" * 10))        # truncated ESP
send(IP(src=cgw, dst=gw) / ESP(spi=0x9999, seq=1) / Raw(b"\x00" * 48))        # unknown SPI
send(good)
send(good)                                                                      # replay
send(IP(bytes(tampered)))                                                       # tampered ICV
print("sent")
"#;

/// Bad traffic on the outside port is dropped and counted, each for its
/// reason; only the one good packet reaches the VPC host.
#[test]
fn bad_traffic_on_the_outside_is_counted_and_goes_nowhere() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("bad");
    let gw = vpngw(&lab, "gw", &scripts().join("lab/gw.toml"));
    // The gateway's kernel learns the VPC host's MAC from its ARP request;
    // the daemon follows the neighbour table.
    assert!(lab.run("vpc", &["ping", "-c1", "-W1", "10.1.0.1"]).0, "the VPC host reaches the gateway's kernel");
    std::thread::sleep(Duration::from_millis(600));
    let pcap = std::env::temp_dir().join(format!("{}-vpc.pcap", lab.prefix));
    let capture = lab.spawn("vpc", &["tshark", "-q", "-i", "vpc0", "-f", "udp", "-w", pcap.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(800));
    let (ok, out) = lab.run("inet", &["python3", "-c", BAD_TRAFFIC]);
    assert!(ok && out.contains("sent"), "Scapy sent its packets: {out}");
    std::thread::sleep(Duration::from_millis(500));
    drop(capture.stop(Duration::from_secs(3)));
    let report = stop(gw);
    let out = std::process::Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-T", "fields", "-e", "ip.src", "-e", "udp.dstport", "-e", "data.data"])
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_file(&pcap);
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(seen.trim(), "172.16.1.9\t9999\t68656c6c6f", "only the good packet reached the VPC host");
    let t = tunnel(&report);
    assert_eq!(t["inbound"][0]["packets"], 1, "one packet accepted: {t}");
    for (reason, n) in [("malformed", 3), ("unknown-spi", 1), ("replay", 1), ("icv", 1)] {
        assert_eq!(drops(&report, reason), n, "{reason}: {report}");
    }
}

/// Two workers on the cloud gateway, each with its share of two queues per
/// interface: traffic arriving on either queue is carried, the worker that
/// does not own the tunnel hands its packets to the one that does, and the
/// customer gateway (one worker, both queues) carries the rest.
#[test]
fn two_workers_share_the_queues_and_hand_off_to_the_tunnel_owner() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_with_queues("mq", 2);
    let gw_cfg = scripts().join("lab/gw.toml");
    let mut gw = lab.spawn(
        "gw",
        &[
            VPNGW,
            "--config",
            gw_cfg.to_str().unwrap(),
            "--cores",
            "0,1",
            "--json",
            "--no-state",
            "--socket",
            &socket(&lab, "gw"),
        ],
    );
    let cgw = vpngw(&lab, "cgw", &scripts().join("lab/cgw.toml"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.running(), "vpngw with two workers is running");
    ping(&lab, "vpc", "172.16.1.9", 5);
    ping(&lab, "idc", "10.1.0.5", 5);
    let server = lab.spawn("idc", &["iperf3", "-s", "-1", "-p", "5203"]);
    std::thread::sleep(Duration::from_millis(300));
    // Sixteen streams: the veth spreads flows over its two queues by hash.
    // With four, all of them landed on one queue in a CI rehearsal (by
    // chance: 2 in 16); with sixteen that is 2 in 65,536.
    let (ok, out) = lab.run("vpc", &["iperf3", "-c", "172.16.1.9", "-p", "5203", "-t", "3", "-P", "16", "-J"]);
    drop(server);
    assert!(ok, "iperf3 with sixteen streams ran: {out}");
    let (gw_report, cgw_report) = (stop(gw), stop(cgw));
    let workers = gw_report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{gw_report}");
    for w in workers {
        assert!(w["rx_frames"].as_u64().unwrap() > 100, "every worker received on its queues: {w}");
    }
    // Tunnel 0's owner is worker 0: what worker 1 received for the tunnel
    // went to worker 0 and out of worker 0's UMEM.
    let copied = workers[0]["ports"]["1"]["tx-copied"].as_u64().unwrap_or(0);
    assert!(copied > 0, "worker 0 sent frames worker 1 handed over: {gw_report}");
    for r in [&gw_report, &cgw_report] {
        for reason in ["icv", "replay", "unknown-spi", "malformed"] {
            let n: u64 =
                r["workers"].as_array().unwrap().iter().map(|w| w["drops"][reason].as_u64().unwrap_or(0)).sum();
            assert_eq!(n, 0, "no {reason} drops: {r}");
        }
    }
    assert!(tunnel(&cgw_report)["inbound"][0]["packets"].as_u64().unwrap() > 1000, "{cgw_report}");
}

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    let after_name = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// `--idle-sleep-us`: an idle gateway naps instead of spinning a core, and
/// still carries traffic the moment it comes.
#[test]
fn an_idle_gateway_with_idle_sleep_leaves_its_core_alone() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("idle");
    let cfg = |name: &str| scripts().join(format!("lab/{name}.toml"));
    let gw = lab.spawn(
        "gw",
        &[
            VPNGW,
            "--config",
            cfg("gw").to_str().unwrap(),
            "--idle-sleep-us",
            "200",
            "--json",
            "--no-state",
            "--socket",
            &socket(&lab, "gw"),
        ],
    );
    let cgw = vpngw(&lab, "cgw", &cfg("cgw"));
    std::thread::sleep(Duration::from_millis(500));
    let (before, t) = (cpu_seconds(gw.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_seconds(gw.pid()) - before) / t.elapsed().as_secs_f64();
    let busy = {
        let c = cpu_seconds(cgw.pid());
        std::thread::sleep(Duration::from_secs(1));
        cpu_seconds(cgw.pid()) - c
    };
    println!("idle: vpngw with --idle-sleep-us 200 used {used:.2} of a core; busy-polling vpngw {busy:.2}");
    assert!(used < 0.3, "an idle napping gateway uses little CPU ({used:.2} of a core)");
    assert!(busy > 0.5, "the busy-polling one spins ({busy:.2}): the measure is sound");
    ping(&lab, "vpc", "172.16.1.9", 5);
    ping(&lab, "idc", "10.1.0.5", 5);
    let report = stop(gw);
    assert!(tunnel(&report)["outbound"]["packets"].as_u64().unwrap() >= 5, "{report}");
    drop(stop(cgw));
}
