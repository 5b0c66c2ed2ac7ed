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
