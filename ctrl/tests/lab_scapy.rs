//! vpngw against an independent ESP implementation in the namespace lab
//! (`scripts/lab.sh`): the customer gateway is Scapy
//! (`scripts/interop/scapy_cgw.py`: Scapy's `SecurityAssociation`, its own
//! padding, next-header, anti-replay and selector checks), not a second
//! vpngw. The VPC host and the IDC host ping each other through vpngw in
//! the gateway namespace and Scapy in the customer gateway namespace, over
//! raw ESP and over NAT-T (UDP 4500), with the SAs of `scripts/lab/gw.toml`
//! (AES-GCM-128). Afterwards both sides must have counted the same packets
//! and inner bytes each way, and neither refused anything.
//!
//! The daemon busy-polls a core, so the cases take turns (a lock).

use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vpngw_testlab::{Background, Lab};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const VPNGW: &str = env!("CARGO_BIN_EXE_vpngw");

/// The drop reasons that would mean the two ESP implementations disagree.
const ESP_DROPS: [&str; 8] =
    ["icv", "replay", "unknown-spi", "malformed", "encap-mismatch", "padding", "not-esp", "selector"];

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(lab: &Lab, name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}-{name}", lab.prefix));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The cloud gateway's configuration, `scripts/lab/gw.toml`, with
/// `nat_t = true` under the tunnel when `natt`.
fn gw_config(lab: &Lab, natt: bool) -> TempFile {
    let text = std::fs::read_to_string(scripts().join("lab/gw.toml")).expect("read scripts/lab/gw.toml");
    let suite = "suite = \"aes-gcm-128\"";
    assert!(text.contains(suite), "scripts/lab/gw.toml still has `{suite}` under its tunnel");
    let text = if natt { text.replace(suite, &format!("{suite}\nnat_t = true")) } else { text };
    let file = TempFile::new(lab, "gw.toml");
    std::fs::write(&file.0, text).expect("write the gateway's configuration");
    file
}

/// vpngw in the gateway namespace, reporting as JSON on exit.
fn start_vpngw(lab: &Lab, config: &TempFile) -> Background {
    let socket = std::env::temp_dir().join(format!("{}-gw.sock", lab.prefix)).display().to_string();
    let mut d = lab.spawn("gw", &[VPNGW, "--config", config.path(), "--json", "--no-state", "--socket", &socket]);
    std::thread::sleep(Duration::from_millis(300));
    if !d.running() {
        let (_, out, err) = d.stop(Duration::from_secs(1));
        panic!("vpngw exited at start:\n{out}{err}");
    }
    d
}

/// The Scapy customer gateway, started and waited for (it writes `ready`
/// once its sockets are open and the router and IDC host are resolved).
fn start_scapy(lab: &Lab, natt: bool, ready: &TempFile) -> Background {
    let script = scripts().join("interop/scapy_cgw.py");
    let mut args = vec!["python3", script.to_str().unwrap(), "--ready-file", ready.path()];
    if natt {
        args.push("--natt");
    }
    let mut peer = lab.spawn("cgw", &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.0.exists() {
        if !peer.running() || Instant::now() > deadline {
            let (_, out, err) = peer.stop(Duration::from_secs(2));
            panic!(
                "the Scapy customer gateway did not get ready within 20 s (Scapy 2.8 installed? see \
                    scripts/requirements.txt):\n{out}{err}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    peer
}

/// Pings `dst` from `role` until a reply comes (the gateway resolves its
/// neighbours on the first packets), then `count` more that must all be
/// answered.
fn ping(lab: &Lab, role: &str, dst: &str, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.run(role, &["ping", "-c1", "-W1", dst]).0 {
        assert!(Instant::now() < deadline, "{role} reaches {dst} through vpngw and Scapy within 10 s");
    }
    let (ok, out) = lab.run(role, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", dst]);
    assert!(ok && out.contains(&format!("{count} received")), "{role} -> {dst}: every ping is answered:\n{out}");
}

fn u64_at(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("`{field}` is a number in {v}"))
}

/// Ping both ways between the VPC and IDC hosts through vpngw and the
/// Scapy peer; then both sides' counters must agree.
fn interop(natt: bool) {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let what = if natt { "NAT-T (ESP in UDP 4500)" } else { "raw ESP" };
    let lab = Lab::up(if natt { "scapyn" } else { "scapy" });
    let config = gw_config(&lab, natt);
    let ready = TempFile::new(&lab, "scapy.ready");
    let gw = start_vpngw(&lab, &config);
    let peer = start_scapy(&lab, natt, &ready);

    ping(&lab, "vpc", "172.16.1.9", 5);
    ping(&lab, "idc", "10.1.0.5", 5);

    let (ok, out, err) = gw.stop(Duration::from_secs(5));
    assert!(ok, "{what}: vpngw exits cleanly on SIGTERM:\n{out}{err}");
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vpngw's exit report is JSON ({e}):\n{out}"));
    let (ok, log, err) = peer.stop(Duration::from_secs(5));
    let summary_line = log.lines().find_map(|l| l.strip_prefix("summary ")).unwrap_or_else(|| {
        panic!("{what}: the Scapy peer printed a summary on SIGTERM:\n{log}{err}");
    });
    let scapy: Value = serde_json::from_str(summary_line).expect("the Scapy peer's summary is JSON");
    assert!(ok, "{what}: the Scapy peer exits 0 (refused nothing):\n{log}{err}");

    let t = &report["tunnels"][0];
    assert_eq!(t["name"], "t-idc1", "{what}: the report's tunnel: {report}");
    let (out_sa, in_sa) = (&t["outbound"], &t["inbound"][0]);
    assert_eq!(u64_at(out_sa, "spi"), 0x1001, "{what}: vpngw's outbound SA: {t}");
    assert_eq!(u64_at(in_sa, "spi"), 0x2001, "{what}: vpngw's inbound SA: {t}");
    let (sent, received) = (u64_at(out_sa, "packets"), u64_at(in_sa, "packets"));
    println!(
        "{what}: vpngw encrypted {sent} and decrypted {received}; Scapy decrypted {} and encrypted {}",
        scapy["decrypted"], scapy["encrypted"]
    );
    // 5 + at least 1 echo requests from the VPC host, the same number of
    // replies from the IDC host, and the other way round.
    assert!(sent >= 12 && received >= 12, "{what}: vpngw carried the pings both ways: {t}");
    for sa in [out_sa, in_sa] {
        assert_eq!(sa["drops"], serde_json::json!({}), "{what}: vpngw's SA dropped nothing: {t}");
    }
    for (scope, drops) in
        [("worker 0", &report["workers"][0]["drops"]), ("gateway gw1", &report["gateway_drops"]["gw1"])]
    {
        for reason in ESP_DROPS {
            assert_eq!(drops[reason].as_u64().unwrap_or(0), 0, "{what}: vpngw {scope}: no {reason} drops: {report}");
        }
    }

    // What vpngw encrypted, Scapy decrypted, and the other way round:
    // packets and inner bytes, in sequence from 1 with no gap.
    assert_eq!(u64_at(&scapy, "decrypted"), sent, "{what}: Scapy decrypted what vpngw sent:\n{log}");
    assert_eq!(u64_at(&scapy, "decrypted_bytes"), u64_at(out_sa, "bytes"), "{what}: inner bytes to Scapy:\n{log}");
    assert_eq!(u64_at(&scapy, "replay_top"), sent, "{what}: vpngw numbered its packets 1..={sent}:\n{log}");
    assert_eq!(u64_at(&scapy, "encrypted"), received, "{what}: vpngw decrypted what Scapy sent:\n{log}");
    assert_eq!(u64_at(&scapy, "encrypted_bytes"), u64_at(in_sa, "bytes"), "{what}: inner bytes from Scapy:\n{log}");
    assert_eq!(u64_at(&scapy, "next_out_seq"), received + 1, "{what}: Scapy's sequence numbers:\n{log}");
    let (udp, esp) = (u64_at(&scapy["encap"], "udp"), u64_at(&scapy["encap"], "esp"));
    let expected = if natt { (sent, 0) } else { (0, sent) };
    assert_eq!((udp, esp), expected, "{what}: vpngw's encapsulation (ESP in UDP, raw ESP):\n{log}");
    assert_eq!(scapy["drops"], serde_json::json!({}), "{what}: Scapy refused nothing:\n{log}");
    assert_eq!(
        u64_at(&scapy, "kernel_icmp_unreachables"),
        0,
        "{what}: the customer gateway's kernel stayed out of the tunnel (no ICMP unreachable):\n{log}"
    );
}

#[test]
fn vpngw_and_a_scapy_customer_gateway_carry_ping_over_raw_esp() {
    interop(false);
}

#[test]
fn vpngw_and_a_scapy_customer_gateway_carry_ping_over_nat_t() {
    interop(true);
}
