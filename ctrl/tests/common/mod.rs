//! What the lab tests that run vpngw daemons share: a daemon in a lab
//! namespace with its own control socket, vpnctl against it, and the lab's
//! keying material.
#![allow(dead_code)] // each test file uses its part

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use vpngw_testlab::{Background, Lab};

pub const VPNGW: &str = env!("CARGO_BIN_EXE_vpngw");
pub const VPNCTL: &str = env!("CARGO_BIN_EXE_vpnctl");

/// Lab keying material (key and salt) of the SA with `spi`: distinct per
/// SA, so no two SAs share a nonce space.
pub fn key(spi: u32) -> String {
    format!("{spi:08x}0102030405060708090a0b0c0d0e0f10")
}

pub fn tmp(lab: &Lab, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", lab.prefix))
}

/// A daemon in the lab with its control socket (and state file, for the
/// cloud gateway).
pub struct Daemon {
    pub role: String,
    pub socket: PathBuf,
    args: Vec<String>,
    pub process: Option<Background>,
}

impl Daemon {
    pub fn start(lab: &Lab, role: &str, config: &str, keep_state: bool) -> Daemon {
        Self::start_with(lab, role, config, keep_state, &[])
    }

    /// [`Self::start`] with more arguments for vpngw.
    pub fn start_with(lab: &Lab, role: &str, config: &str, keep_state: bool, more: &[&str]) -> Daemon {
        let (file, socket, state) =
            (tmp(lab, &format!("{role}.toml")), tmp(lab, &format!("{role}.sock")), tmp(lab, &format!("{role}.state")));
        std::fs::write(&file, config).expect("write a configuration");
        let _ = std::fs::remove_file(&state);
        let _ = std::fs::remove_file(tmp(lab, &format!("{role}.state.seq")));
        let mut args = vec![VPNGW.to_string(), "--config".into(), file.display().to_string()];
        args.extend(["--socket".into(), socket.display().to_string(), "--idle-sleep-us".into(), "200".into()]);
        if keep_state {
            args.extend(["--state".into(), state.display().to_string()]);
        } else {
            args.push("--no-state".into());
        }
        args.extend(more.iter().map(|a| a.to_string()));
        let mut d = Daemon { role: role.to_string(), socket, args, process: None };
        d.launch(lab);
        d
    }

    pub fn launch(&mut self, lab: &Lab) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut p = lab.spawn(&self.role, &args);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Command::new(VPNCTL)
            .args(["--socket", self.socket.to_str().unwrap(), "stats"])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
        {
            assert!(p.running(), "vpngw in {} is running", self.role);
            assert!(Instant::now() < deadline, "vpngw in {} answers on its socket within 10 s", self.role);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(p);
    }

    /// Runs vpnctl against this daemon: exit code and output.
    pub fn ctl(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(VPNCTL).arg("--socket").arg(&self.socket).args(args).output().expect("run vpnctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// vpnctl that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out) = self.ctl(args);
        assert_eq!(code, 0, "vpnctl {}: {out}", args.join(" "));
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vpnctl --json {}: {e}: {out}", args.join(" ")))
    }

    /// Packets sent into each tunnel so far.
    pub fn tx(&self, tunnel: &str) -> u64 {
        let s = self.json(&["stats"]);
        let t = s["tunnels"].as_array().unwrap().iter().find(|t| t["name"] == tunnel);
        t.map_or(0, |t| t["tx_packets"].as_u64().unwrap())
    }

    /// A drop counter of gateway `gw`.
    pub fn drops(&self, gw: &str, reason: &str) -> u64 {
        let s = self.json(&["stats"]);
        let g = s["gateways"].as_array().unwrap().iter().find(|g| g["name"] == gw).cloned().unwrap_or_default();
        g["drops"][reason].as_u64().unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        drop(self.process.take());
    }
}

/// `from` reaches `to`: a reply within 10 s (neighbours resolve on the
/// first packets), then three more, all answered.
pub fn reaches(lab: &Lab, from: &str, to: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.run(from, &["ping", "-c1", "-W1", to]).0 {
        assert!(Instant::now() < deadline, "{from} reaches {to} within 10 s");
    }
    let (ok, out) = lab.run(from, &["ping", "-c3", "-i0.2", "-W2", to]);
    assert!(ok && out.contains(" 0% packet loss"), "{from} -> {to}: {out}");
}
