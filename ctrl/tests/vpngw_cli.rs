//! The daemon's command line: a broken configuration file is refused with
//! a message naming what is wrong, and a daemon that cannot start (an
//! interface the kernel does not have) says why, exits non-zero and leaves
//! nothing attached.

use std::process::Command;
use vpngw_testlab::Netns;

const VPNGW: &str = env!("CARGO_BIN_EXE_vpngw");

fn lab_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lab/gw.toml")).unwrap()
}

fn check(text: &str) -> (i32, String) {
    let path = std::env::temp_dir().join(format!("vpngw-cli-{}-{}.toml", std::process::id(), text.len()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(VPNGW).args(["--check", "--config", path.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_accepts_the_lab_file_and_names_what_is_wrong_in_others() {
    let good = lab_config();
    let (code, out) = check(&good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");
    for (broken, want) in [
        (good.replace("via = \"inside\"", "via = \"internet\""), "route 10.1.0.0/16 (gateway gw1): via = internet"),
        (good.replace("spi = 0x1001", "spi = 0x1001, colour = 3"), "unknown field `colour`"),
        (good.replace("key = \"0102", "key = \"02"), "tunnel t-idc1: outbound = 0x1001"),
        ("[[gateway]\n".to_string(), "TOML parse error"),
        (String::from_utf8_lossy(&[0xff, 0xfe, 0x00]).into_owned(), "TOML parse error"),
    ] {
        let (code, out) = check(&broken);
        assert_eq!(code, 2, "{want}: {out}");
        assert!(out.contains(want), "want {want:?} in {out:?}");
    }
    let out = Command::new(VPNGW).args(["--check", "--config", "/nonexistent/vpngw.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vpngw.toml: No such file"));
}

#[test]
fn a_daemon_without_its_interfaces_says_so_and_exits() {
    let ns = Netns::create("cli", "gw");
    let path = std::env::temp_dir().join(format!("vpngw-cli-{}-missing.toml", std::process::id()));
    std::fs::write(&path, lab_config()).unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            VPNGW,
            "--config",
            path.to_str().unwrap(),
            "--no-state",
            "--socket",
            "/tmp/vpngw-cli-missing.sock",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no interface \"gw-out\""), "{err}");
    let bad = Command::new(VPNGW).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap refuses unknown flags");
}

#[test]
fn a_metrics_address_that_is_wrong_or_taken_is_an_error() {
    let bad = Command::new(VPNGW).args(["--metrics", "localhost"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--metrics"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = std::env::temp_dir().join(format!("vpngw-cli-{}-metrics.toml", std::process::id()));
    std::fs::write(&path, lab_config()).unwrap();
    let socket = std::env::temp_dir().join(format!("vpngw-cli-{}-metrics.sock", std::process::id()));
    let out = Command::new(VPNGW)
        .args(["--config", path.to_str().unwrap(), "--no-state", "--socket", socket.to_str().unwrap()])
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&socket);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("metrics endpoint {addr}")), "{err}");
}
