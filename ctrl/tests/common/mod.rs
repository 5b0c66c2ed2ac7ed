//! What the lab tests that run vpngw daemons share: a daemon in a lab
//! namespace with its own control socket, vpnctl against it, the lab's
//! keying material, and strongSwan's charon as the customer gateway.
#![allow(dead_code)] // each test file uses its part

use serde_json::Value;
use std::path::{Path, PathBuf};
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

/// Removes the lab's [`tmp`] files when dropped (a test's end, also when
/// it fails): declared after the lab, so it goes first.
pub struct Scratch(String);

impl Scratch {
    pub fn new(lab: &Lab) -> Scratch {
        Scratch(format!("{}-", lab.prefix))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for entry in dir.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&self.0) && entry.path().is_file() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A daemon in the lab with its control socket (and state file, for the
/// cloud gateway).
pub struct Daemon {
    pub role: String,
    pub socket: PathBuf,
    args: Vec<String>,
    pub process: Option<Background>,
    /// Its configuration, socket and state files, removed on drop.
    files: Vec<PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.process.take());
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
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
        let seq = tmp(lab, &format!("{role}.state.seq"));
        let files = vec![file, socket.clone(), state, seq];
        let mut d = Daemon { role: role.to_string(), socket, args, process: None, files };
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

/// The cloud gateway's and the customer gateway's outside addresses.
pub const GW: &str = "192.0.2.1";
pub const CGW: &str = "198.51.100.1";

pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

/// Runs scripts/interop/swan.py; its output, and whether it succeeded.
pub fn swan(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3").arg(repo("scripts/interop/swan.py")).args(args).output().expect("run swan.py");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A charon in the customer gateway's namespace; stopped on drop.
pub struct Charon {
    dir: PathBuf,
}

impl Charon {
    pub fn start(lab: &Lab) -> Charon {
        let dir = std::env::temp_dir().join(format!("{}-charon", lab.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = Charon { dir };
        let (ok, out) = swan(&["start", "--ns", &lab.ns("cgw"), "--dir", c.dir(), "--forward"]);
        assert!(ok, "charon starts: {out}");
        c
    }

    pub fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Loads connection `name` (to vpngw) with more swan.py options.
    pub fn load(&self, name: &str, psk: &str, more: &[&str]) {
        let mut args = vec!["load", "--dir", self.dir(), "--name", name, "--local", CGW, "--remote", GW, "--psk", psk];
        args.extend(["--local-ts", "172.16.1.0/24", "--remote-ts", "10.1.0.0/16"]);
        args.extend(more);
        let (ok, out) = swan(&args);
        assert!(ok, "swanctl loads {name}: {out}");
    }

    pub fn sas(&self) -> Value {
        let (ok, out) = swan(&["sas", "--dir", self.dir(), "--json"]);
        assert!(ok, "swan.py sas: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("swan.py sas --json: {e}: {out}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Whether charon's log says `what` within 3 s (it writes a moment
    /// after it sends).
    pub fn logs(&self, what: &str) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if self.log().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = swan(&["stop", "--dir", self.dir()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
