//! vpnctl's behaviour at the edges, without a gateway: bad arguments,
//! no daemon, a stale socket, a peer that is not a vpngw, completions, and
//! help with examples.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;

const VPNCTL: &str = env!("CARGO_BIN_EXE_vpnctl");

fn vpnctl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(VPNCTL).args(args).env_remove("VPNGW_SOCKET").output().expect("run vpnctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vpnctl-cli-{}-{name}", std::process::id()))
}

#[test]
fn bad_arguments_exit_2_naming_the_problem() {
    let (code, _, err) = vpnctl(&["route", "add", "10.0.0.0/8", "--gateway", "gw1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--via"), "{err}");
    let (code, _, err) = vpnctl(&[
        "tunnel",
        "add",
        "t1",
        "--gateway",
        "g",
        "--customer-gateway",
        "c",
        "--suite",
        "aes-gcm-128",
        "--outbound",
        "0x1001",
        "--inbound",
        "0x2001:00",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("SPI:KEY"), "{err}");
    let (code, _, err) = vpnctl(&[
        "tunnel",
        "add",
        "t1",
        "--gateway",
        "g",
        "--customer-gateway",
        "c",
        "--suite",
        "aes-gcm-128",
        "--outbound",
        "0x1001:zz",
        "--inbound",
        "0x2001:00",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not hex"), "{err}");
    let (code, _, err) =
        vpnctl(&["gateway", "add", "g", "--attachment", "moon", "--outside", "o", "--address", "192.0.2.1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cloud-connect"), "{err}");
    let (code, _, err) = vpnctl(&["capture", "--tunnel", "t1", "--count", "5"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--write"), "{err}");
    let (code, _, err) = vpnctl(&["capture", "--tunnel", "t1", "--inner", "--outer", "-w", "x.pcap"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = vpnctl(&[
        "tunnel",
        "add",
        "t1",
        "--gateway",
        "g",
        "--customer-gateway",
        "c",
        "--suite",
        "aes-gcm-128",
        "--outbound",
        "0x1001:00",
        "--inbound",
        "0x2001:00",
        "--health-interval-ms",
        "1000",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--health-local and --health-remote"), "{err}");
    let (code, _, err) = vpnctl(&["gateway", "set", "g", "--bandwidth-mbps", "5", "--no-bandwidth-limit"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = vpnctl(&["top", "--interval", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    // A tunnel has static SAs or a PSK (IKE), not both, not neither.
    let add = ["tunnel", "add", "t1", "--gateway", "gw1", "--customer-gateway", "idc1"];
    let (code, _, err) = vpnctl(&add);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--suite") && err.contains("--outbound"), "{err}");
    let mut both = add.to_vec();
    both.extend(["--psk", "a lab secret", "--suite", "aes-gcm-128"]);
    let (code, _, err) = vpnctl(&both);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    for (dpd, why) in [("10", "INTERVAL:TIMEOUT"), ("10:x", "\"x\" is not a number"), ("2:6:hold", "clear or restart")]
    {
        let mut args = add.to_vec();
        args.extend(["--psk", "a lab secret", "--dpd", dpd]);
        let (code, _, err) = vpnctl(&args);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(why), "--dpd {dpd}: {err}");
    }
    let mut args = add.to_vec();
    args.extend(["--psk", "a lab secret", "--negotiation", "sometimes"]);
    assert_eq!(vpnctl(&args).0, Some(2));
}

#[test]
fn no_daemon_exits_3_saying_why() {
    let missing = tmp("missing.sock");
    let (code, _, err) = vpnctl(&["--socket", missing.to_str().unwrap(), "stats"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no such socket") && err.contains("is vpngw running"), "{err}");

    // A socket file nobody listens on: a daemon that died.
    let stale = tmp("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let (code, _, err) = vpnctl(&["--socket", stale.to_str().unwrap(), "stats"]);
    let _ = std::fs::remove_file(&stale);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn a_peer_that_is_not_vpngw_is_reported_not_trusted() {
    let path = tmp("impostor.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap();
        (&s).write_all(b"HTTP/1.1 400 Bad Request\n").unwrap();
        line
    });
    let (code, _, err) = vpnctl(&["--socket", path.to_str().unwrap(), "export"]);
    let request = server.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        request.contains("\"version\":1") && request.contains("\"export\""),
        "vpnctl speaks the protocol: {request}"
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("not a vpngw reply"), "{err}");
}

#[test]
fn help_has_examples_and_completions_are_generated() {
    let (code, out, _) = vpnctl(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Examples:") && out.contains("vpnctl route add 172.16.1.0/24"), "{out}");
    assert!(out.contains("Exit status"), "{out}");
    let (code, out, _) = vpnctl(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("complete") && out.contains("customer-gateway"), "the bash completion knows the subcommands");
}

/// The daemon's side of permissions: even with the socket file opened to
/// everyone, a peer that is neither root, the daemon's user nor in the
/// socket's group is refused after SO_PEERCRED, and vpnctl says so.
#[test]
fn a_peer_without_permission_is_refused_by_its_credentials() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};
    use vpngw_ctrl::server::{self, Access, Call};
    assert_eq!(unsafe_free_euid(), 0, "the control-socket permission test runs as root (as CI does)");
    let dir = tmp("perm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("vpngw.sock");
    let listener = server::bind(&path, Access::default()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (tx, calls) = mpsc::sync_channel::<Call>(4);
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = server::serve(listener, tx, Access::default(), stop.clone());
    // A control thread that answers every request it is handed.
    let answered = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(call) = calls.recv_timeout(std::time::Duration::from_secs(5)) {
            let _ = call.reply.send(vpngw_ctrl::api::Response::ok(call.envelope.id, serde_json::json!({})));
            n += 1;
        }
        n
    });
    let socket = path.to_str().unwrap();
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", VPNCTL, "--socket", socket, "export"])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&as_nobody.stderr);
    assert_eq!(as_nobody.status.code(), Some(1), "{err}");
    assert!(err.contains("may not manage this gateway"), "{err}");
    let (code, _, err) = vpnctl(&["--socket", socket, "export"]);
    assert_eq!(code, Some(0), "root is served: {err}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    acceptor.join().unwrap();
    assert_eq!(answered.join().unwrap(), 1, "only root's request reached the control thread");
    let _ = std::fs::remove_dir_all(&dir);
}

fn unsafe_free_euid() -> u32 {
    // The owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}
