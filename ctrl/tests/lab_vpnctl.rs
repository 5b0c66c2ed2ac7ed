//! The product's six scenarios (`../shared/docs/SCENARIOS.md`), configured
//! entirely through `vpnctl` against a running vpngw in the namespace lab
//! with three data centres (`scripts/lab.sh`, `LAB_IDCS=3`), with real
//! traffic checked; then a kill -9 and restart under traffic (the export
//! is identical and traffic flows again), and hostile clients on the
//! control socket while traffic flows.
//!
//! The cloud gateway starts from a file with its interfaces only; every
//! gateway, tunnel, SPD rule and route comes over the socket. The three
//! customer gateways are vpngw too, from files: each has a route-based
//! tunnel `ta` to the cloud (and the first a standby `tb`), so what they
//! can reach is decided by the cloud gateway's configuration alone.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vpngw_testlab::Lab;

mod common;
use common::{key, reaches, Daemon};

/// The SPIs of tunnel `n` of data centre `i`: cloud-to-IDC, IDC-to-cloud.
fn spis(i: u32, standby: bool) -> (u32, u32) {
    let s = if standby { 0x100 } else { 0 };
    (0x1000 + s + i, 0x2000 + s + i)
}

/// Customer gateway `i`'s configuration: tunnel `ta` (and for the first,
/// a standby `tb`) to the cloud; its IDC's prefix inside; the VPC ranges
/// and the other IDCs through the tunnel.
fn cgw_config(i: u32) -> String {
    let mut s = format!(
        "[[interface]]\nname = \"cgw-out\"\nrole = \"outside\"\nrouter = \"198.51.100.254\"\n\n\
         [[interface]]\nname = \"cgw-in\"\nrole = \"inside\"\n\n\
         [[gateway]]\nname = \"idc{i}\"\nattachment = \"vpc\"\noutside = \"cgw-out\"\ninside = \"cgw-in\"\n\
         addresses = [\"198.51.100.{i}\"]\n\n\
         [[customer_gateway]]\nname = \"cloud\"\naddress = \"192.0.2.1\"\n\n\
         [[route]]\ngateway = \"idc{i}\"\nprefix = \"172.16.{i}.0/24\"\nvia = \"inside\"\n"
    );
    let tunnels: &[(&str, bool, u32)] =
        if i == 1 { &[("ta", false, 0), ("tb", true, 10)] } else { &[("ta", false, 0)] };
    for &(name, standby, priority) in tunnels {
        let (to_idc, to_cloud) = spis(i, standby);
        s += &format!(
            "\n[[tunnel]]\nname = \"{name}\"\ngateway = \"idc{i}\"\ncustomer_gateway = \"cloud\"\nsuite = \"aes-gcm-128\"\n\
             outbound = {{ spi = {to_cloud:#x}, key = \"{}\" }}\ninbound = [{{ spi = {to_idc:#x}, key = \"{}\" }}]\n",
            key(to_cloud),
            key(to_idc)
        );
        for prefix in ["10.0.0.0/8", "172.16.0.0/16"] {
            s += &format!(
                "\n[[route]]\ngateway = \"idc{i}\"\nprefix = \"{prefix}\"\nvia = \"tunnel:{name}\"\npriority = {priority}\n"
            );
        }
    }
    s
}

const GW_INTERFACES: &str = "[[interface]]\nname = \"gw-out\"\nrole = \"outside\"\nrouter = \"192.0.2.254\"\n\n\
                             [[interface]]\nname = \"gw-in\"\nrole = \"inside\"\n";

/// `from` does not reach `to`.
fn cut_off(lab: &Lab, from: &str, to: &str) {
    let (ok, out) = lab.run(from, &["ping", "-c2", "-i0.3", "-W1", to]);
    assert!(!ok && out.contains("100% packet loss"), "{from} must not reach {to}: {out}");
}

const VPC: &str = "10.1.0.5";
const IDC: [&str; 4] = ["", "172.16.1.9", "172.16.2.9", "172.16.3.9"];
const HOST: [&str; 4] = ["", "idc", "idc2", "idc3"];
const INTERNET: &str = "203.0.113.7";

/// Gateway gw1 of `attachment` (with the inside interface unless
/// unassociated), tunnel tI to each listed IDC, nothing else.
fn gateway(gw: &Daemon, attachment: &str, idcs: &[u32]) {
    let mut args =
        vec!["gateway", "add", "gw1", "--attachment", attachment, "--outside", "gw-out", "--address", "192.0.2.1"];
    if attachment != "cloud-connect-unassociated" {
        args.extend(["--inside", "gw-in"]);
    }
    gw.ok(&args);
    for &i in idcs {
        tunnel(gw, &format!("t{i}"), i, false);
    }
}

fn tunnel(gw: &Daemon, name: &str, i: u32, standby: bool) {
    let (to_idc, to_cloud) = spis(i, standby);
    let (out, inb) = (format!("{to_idc:#x}:{}", key(to_idc)), format!("{to_cloud:#x}:{}", key(to_cloud)));
    let cgw = format!("idc{i}");
    gw.ok(&[
        "tunnel",
        "add",
        name,
        "--gateway",
        "gw1",
        "--customer-gateway",
        &cgw,
        "--suite",
        "aes-gcm-128",
        "--outbound",
        &out,
        "--inbound",
        &inb,
    ]);
}

fn route(gw: &Daemon, prefix: &str, via: &str, priority: u32) {
    gw.ok(&["route", "add", prefix, "--gateway", "gw1", "--via", via, "--priority", &priority.to_string()]);
}

#[test]
fn six_scenarios_through_vpnctl_then_restart_and_hostile_clients() {
    let lab = Lab::up_with_idcs("vctl", 3);
    let cgws: Vec<Daemon> = (1..=3)
        .map(|i| Daemon::start(&lab, HOST[i as usize].replace("idc", "cgw").as_str(), &cgw_config(i), false))
        .collect();
    let mut gw = Daemon::start(&lab, "gw", GW_INTERFACES, true);
    for i in 1..=3 {
        gw.ok(&["customer-gateway", "add", &format!("idc{i}"), "--address", &format!("198.51.100.{i}")]);
    }

    // 1. VPC <-> one IDC; nothing to the Internet.
    gateway(&gw, "vpc", &[1]);
    route(&gw, "10.1.0.0/16", "inside", 0);
    route(&gw, "172.16.1.0/24", "tunnel:t1", 0);
    reaches(&lab, "vpc", IDC[1]);
    reaches(&lab, "idc", VPC);
    let before = gw.drops("gw1", "no-route");
    cut_off(&lab, "vpc", INTERNET);
    assert!(gw.drops("gw1", "no-route") >= before + 2, "the Internet-bound pings are counted as no-route");
    println!("scenario 1: VPC <-> IDC1 yes; VPC -> Internet dropped (no-route)");

    // 2. VPC and three IDCs, which reach each other through the gateway.
    tunnel(&gw, "t2", 2, false);
    tunnel(&gw, "t3", 3, false);
    route(&gw, "172.16.2.0/24", "tunnel:t2", 0);
    route(&gw, "172.16.3.0/24", "tunnel:t3", 0);
    for i in 1..=3 {
        reaches(&lab, "vpc", IDC[i]);
        reaches(&lab, HOST[i], VPC);
    }
    reaches(&lab, "idc", IDC[2]);
    reaches(&lab, "idc2", IDC[3]);
    reaches(&lab, "idc3", IDC[1]);
    println!("scenario 2: every pair of VPC, IDC1..3 reaches the other");

    // Restart under traffic: kill -9 while pings flow; the export is the
    // same after the restart and traffic flows again.
    let export = gw.ok(&["export"]);
    let flood = lab.spawn("vpc", &["ping", "-i", "0.01", "-c", "400", IDC[2]]);
    std::thread::sleep(Duration::from_millis(1500));
    gw.kill9();
    assert_eq!(gw.ctl(&["stats"]).0, 3, "vpnctl says the daemon is unreachable (exit 3) while it is down");
    gw.launch(&lab);
    assert_eq!(gw.ok(&["export"]), export, "the restored configuration is the one exported before the kill");
    drop(flood);
    reaches(&lab, "vpc", IDC[1]);
    reaches(&lab, "vpc", IDC[2]);
    reaches(&lab, "idc3", VPC);
    println!("restart: kill -9 under traffic, export identical, traffic flows again");

    // Hostile clients on the socket while traffic flows: none of it
    // costs a packet or a configuration change.
    let pings = lab.spawn("vpc", &["ping", "-i", "0.01", "-c", "500", "-W", "2", IDC[3]]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/hostile_clients.py");
    let out = Command::new("python3").arg(&script).arg(&gw.socket).output().expect("run the hostile clients");
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the daemon answers everyone else through hostile clients: {report}");
    println!("hostile clients: {report}");
    let (_, ping_out, _) = pings.stop_after_exit(Duration::from_secs(15));
    assert!(
        ping_out.contains("500 packets transmitted, 500 received"),
        "no ping lost while hostile clients ran: {ping_out}"
    );
    assert_eq!(gw.ok(&["export"]), export, "hostile clients changed nothing");

    // 3. Three IDCs through a cloud-connect gateway with no network behind.
    gw.ok(&["gateway", "delete", "gw1", "--cascade"]);
    assert!(gw.json(&["route", "list"]).as_array().unwrap().is_empty(), "the cascade took the routes");
    gateway(&gw, "cloud-connect-unassociated", &[1, 2, 3]);
    for i in 1..=3 {
        route(&gw, &format!("172.16.{i}.0/24"), &format!("tunnel:t{i}"), 0);
    }
    reaches(&lab, "idc", IDC[2]);
    reaches(&lab, "idc2", IDC[3]);
    reaches(&lab, "idc3", IDC[1]);
    cut_off(&lab, "vpc", IDC[1]);
    cut_off(&lab, "idc", VPC);
    println!("scenario 3: IDCs reach each other; nothing behind the gateway");

    // 4. IDCs and a cloud-connect network holding VPC and VPC-B.
    gw.ok(&["gateway", "delete", "gw1", "--cascade"]);
    gateway(&gw, "cloud-connect", &[1, 2, 3]);
    for i in 1..=3 {
        route(&gw, &format!("172.16.{i}.0/24"), &format!("tunnel:t{i}"), 0);
    }
    route(&gw, "10.1.0.0/16", "cloud-connect", 0);
    route(&gw, "10.2.0.0/16", "cloud-connect", 0);
    let (ok, out) = lab.run("vpc", &["ip", "addr", "add", "10.2.0.5/16", "dev", "vpc0"]);
    assert!(ok, "VPC-B's address: {out}");
    for host in &HOST[1..] {
        reaches(&lab, host, VPC);
        reaches(&lab, host, "10.2.0.5");
    }
    reaches(&lab, "idc", IDC[3]);
    cut_off(&lab, "vpc", INTERNET);
    println!("scenario 4: IDC1..3, VPC and VPC-B reach each other; Internet dropped");

    // 5. Active and standby tunnels to IDC1: down, failover, back.
    gw.ok(&["gateway", "delete", "gw1", "--cascade"]);
    gateway(&gw, "vpc", &[]);
    tunnel(&gw, "ta", 1, false);
    tunnel(&gw, "tb", 1, true);
    route(&gw, "10.1.0.0/16", "inside", 0);
    route(&gw, "172.16.1.0/24", "tunnel:ta", 0);
    route(&gw, "172.16.1.0/24", "tunnel:tb", 10);
    reaches(&lab, "vpc", IDC[1]);
    let (ta, tb) = (gw.tx("ta"), gw.tx("tb"));
    assert!(ta >= 4 && tb == 0, "both up: traffic uses the active tunnel (ta {ta}, tb {tb})");
    gw.ok(&["tunnel", "set", "ta", "--down"]);
    cgws[0].ok(&["tunnel", "set", "ta", "--down"]);
    let active = gw.json(&["route", "lookup", IDC[1], "--gateway", "gw1"]);
    assert_eq!(active["route"]["via"], "tunnel:tb", "{active}");
    reaches(&lab, "vpc", IDC[1]);
    assert_eq!(gw.tx("ta"), ta, "nothing is sent into the down tunnel");
    assert!(gw.tx("tb") >= 4, "the standby carries the traffic");
    gw.ok(&["tunnel", "set", "ta", "--up"]);
    cgws[0].ok(&["tunnel", "set", "ta", "--up"]);
    let tb = gw.tx("tb");
    reaches(&lab, "vpc", IDC[1]);
    assert!(gw.tx("ta") >= ta + 4 && gw.tx("tb") == tb, "traffic returns to the active tunnel");
    println!("scenario 5: failover to the standby and back, nothing into the down tunnel");

    // 6. Three IDCs that must not reach each other: SPD only.
    gw.ok(&["gateway", "delete", "gw1", "--cascade"]);
    gateway(&gw, "vpc", &[1, 2, 3]);
    route(&gw, "10.1.0.0/16", "inside", 0);
    for i in 1..=3 {
        let remote = format!("172.16.{i}.0/24");
        let action = format!("protect:t{i}");
        gw.ok(&["spd", "add", "--gateway", "gw1", "--local", "10.1.0.0/16", "--remote", &remote, "--action", &action]);
    }
    let (code, out) = gw.ctl(&[
        "spd",
        "add",
        "--gateway",
        "gw1",
        "--local",
        "10.1.0.0/24",
        "--remote",
        "172.16.0.0/16",
        "--action",
        "protect:t2",
    ]);
    assert!(code == 1 && out.contains("ambiguous"), "an overlapping mapping into another tunnel is refused: {out}");
    for i in 1..=3 {
        reaches(&lab, "vpc", IDC[i]);
        reaches(&lab, HOST[i], VPC);
    }
    cut_off(&lab, "idc", IDC[2]);
    cut_off(&lab, "idc2", IDC[3]);
    cut_off(&lab, "idc3", IDC[1]);
    // Mixed: SPD for IDC1 and IDC2, a route for IDC3.
    gw.ok(&["spd", "delete", "--gateway", "gw1", "--local", "10.1.0.0/16", "--remote", "172.16.3.0/24"]);
    route(&gw, "172.16.3.0/24", "tunnel:t3", 0);
    reaches(&lab, "vpc", IDC[3]);
    reaches(&lab, "idc3", VPC);
    cut_off(&lab, "idc", IDC[3]);
    cut_off(&lab, "idc3", IDC[1]);
    println!("scenario 6: IDCs isolated by SPD; mixed SPD and route as well");
    drop(cgws);
}
