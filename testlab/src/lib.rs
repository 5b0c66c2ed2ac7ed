//! Network namespaces for integration tests: each test makes its own
//! (named after the test and the process, so parallel tests never meet),
//! runs commands or its own code inside them, and they are deleted on drop
//! with every interface in them, also when the test fails.
//!
//! Needs root and `ip` (iproute2).

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::thread;

/// Runs `ip` with `args`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop (with the interfaces in it).
pub struct Netns(pub String);

impl Netns {
    /// `vpngw-t-<test>-<pid>-<role>`.
    pub fn create(test: &str, role: &str) -> Netns {
        let name = format!("vpngw-t-{test}-{}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// Runs `command` in the namespace; panics with its stderr when it fails.
    pub fn exec(&self, command: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.0];
        args.extend_from_slice(command);
        ip(&args)
    }

    /// `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `body` on a thread that has entered this namespace (`setns`
    /// changes only the calling thread), re-raising its panic.
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        thread::scope(|scope| {
            let worker = scope.spawn(|| {
                enter(&path);
                body()
            });
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A veth pair: `a` in namespace `na` with MAC `mac_a`, `b` in `nb`, both up.
pub fn veth(na: &Netns, a: &str, mac_a: &str, nb: &Netns, b: &str, mac_b: &str) {
    #[rustfmt::skip]
    na.ip(&["link", "add", a, "address", mac_a, "type", "veth", "peer", "name", b, "address", mac_b, "netns", nb.name()]);
    na.ip(&["link", "set", a, "up"]);
    nb.ip(&["link", "set", b, "up"]);
}

/// The namespace lab of `scripts/lab.sh` (VPC host, gateway, internet
/// router, customer gateway, IDC host), under a prefix of this test's own;
/// torn down on drop.
pub struct Lab {
    pub prefix: String,
    queues: usize,
    idcs: usize,
}

impl Lab {
    /// Builds the lab as `vt<pid>-<test>` (kept short: interface-free
    /// names, but `ip netns` prints them).
    pub fn up(test: &str) -> Lab {
        Self::up_with_queues(test, 1)
    }

    /// The lab with `queues` queues on every veth (for several workers).
    pub fn up_with_queues(test: &str, queues: usize) -> Lab {
        Self::build(test, queues, 1)
    }

    /// The lab with `idcs` data centres (1 to 3): customer gateway `cgwI`
    /// at 198.51.100.I and IDC host `idcI` at 172.16.I.9 (the first are
    /// `cgw` and `idc`).
    pub fn up_with_idcs(test: &str, idcs: usize) -> Lab {
        Self::build(test, 1, idcs)
    }

    fn build(test: &str, queues: usize, idcs: usize) -> Lab {
        let prefix = format!("vt{}-{test}", std::process::id());
        let lab = Lab { prefix, queues, idcs };
        lab.script("up");
        lab
    }

    fn script(&self, what: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lab.sh");
        let out = Command::new("bash")
            .args([script, what, &self.prefix])
            .env("LAB_QUEUES", self.queues.to_string())
            .env("LAB_IDCS", self.idcs.to_string())
            .output()
            .expect("run scripts/lab.sh");
        assert!(out.status.success(), "lab.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The namespace of `role` (vpc, gw, inet, cgw, idc).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Runs `command` in `role`'s namespace to completion; its output, and
    /// whether it succeeded.
    pub fn run(&self, role: &str, command: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(command)
            .output()
            .expect("run ip netns exec");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Starts `command` in `role`'s namespace, in the background; it is
    /// killed when the returned guard drops.
    pub fn spawn(&self, role: &str, command: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(command)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn in the lab");
        Background { child: Some(child) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.script("down");
    }
}

/// A process in the lab: killed (SIGKILL) on drop unless stopped first.
pub struct Background {
    child: Option<std::process::Child>,
}

impl Background {
    /// Sends SIGTERM and waits up to `timeout` for the process to end;
    /// returns its exit success and its output (stdout, then stderr).
    pub fn stop(mut self, timeout: std::time::Duration) -> (bool, String, String) {
        let mut child = self.child.take().expect("running");
        let _ = nix_kill(child.id());
        let start = std::time::Instant::now();
        while child.try_wait().ok().flatten().is_none() && start.elapsed() < timeout {
            thread::sleep(std::time::Duration::from_millis(20));
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("collect output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits up to `timeout` for the process to end by itself (then
    /// stops it); its exit success and output.
    pub fn stop_after_exit(mut self, timeout: std::time::Duration) -> (bool, String, String) {
        let start = std::time::Instant::now();
        while self.running() && start.elapsed() < timeout {
            thread::sleep(std::time::Duration::from_millis(50));
        }
        self.stop(std::time::Duration::from_secs(1))
    }

    /// The process id (`ip netns exec` runs the command in its own place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

fn nix_kill(pid: u32) -> nix::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
