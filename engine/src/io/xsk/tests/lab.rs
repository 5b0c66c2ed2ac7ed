//! The test bench: two network namespaces (the engine's and the peer's)
//! joined by veth pairs, the XDP programs AF_XDP needs, and a raw packet
//! socket for the peer's side. Everything is deleted when the `Lab` drops,
//! even after a failed test.

use super::super::XskSocket;
use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Two namespaces, `pairs` veth pairs between them; all links up, IPv6
/// off (no router solicitations in the way).
pub struct Lab {
    engine_ns: String,
    peer_ns: String,
    /// (engine side, peer side) interface names.
    pub pairs: Vec<(String, String)>,
}

impl Lab {
    pub fn new(pairs: usize) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id());
        let mut lab = Lab {
            engine_ns: format!("vpngw-xsk-{tag}-e"),
            peer_ns: format!("vpngw-xsk-{tag}-p"),
            pairs: (0..pairs).map(|i| (format!("xk{tag}{i}e"), format!("xk{tag}{i}p"))).collect(),
        };
        // From here on, Drop cleans up whatever was made.
        let (e, p) = (lab.engine_ns.clone(), lab.peer_ns.clone());
        for ns in [&e, &p] {
            ip(&["netns", "add", ns]).unwrap();
            ip(&["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]).unwrap();
            ip(&["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]).unwrap();
        }
        for (a, b) in std::mem::take(&mut lab.pairs) {
            ip(&["link", "add", &a, "netns", &e, "type", "veth", "peer", "name", &b, "netns", &p]).unwrap();
            ip(&["-n", &e, "link", "set", &a, "up"]).unwrap();
            ip(&["-n", &p, "link", "set", &b, "up"]).unwrap();
            lab.pairs.push((a, b));
        }
        lab
    }

    /// Runs `f` on a thread inside the engine's namespace (sockets it
    /// opens live there); a panic in it fails the test after the lab is
    /// cleaned up.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.engine_ns, f)
    }

    /// Runs `f` on a thread inside the peer's namespace.
    pub fn in_peer<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.peer_ns, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veths in it (and so both ends).
        for (a, _) in &self.pairs {
            let _ = ip(&["-n", &self.engine_ns, "link", "del", a]);
        }
        for ns in [&self.engine_ns, &self.peer_ns] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lab cleanup: {e}");
            }
        }
    }
}

fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: `file` is an open namespace file; setns changes only
            // this thread's network namespace, and this thread ends with `f`.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

pub fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name} here");
    i
}

/// The tests' XDP programs, compiled once per test run (the object file
/// is read and removed).
fn bpf_object() -> &'static [u8] {
    static OBJECT: OnceLock<Vec<u8>> = OnceLock::new();
    OBJECT.get_or_init(|| {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/io/xsk/tests/redirect.bpf.c");
        let out = std::env::temp_dir().join(format!("vpngw-xsk-redirect-{}.bpf.o", std::process::id()));
        let include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", &include, "-c", src, "-o"])
            .arg(&out)
            .status()
            .expect("clang (scripts/deps.sh installs it)");
        assert!(status.success(), "clang failed on {src}");
        let object = std::fs::read(&out).expect("clang's output");
        let _ = std::fs::remove_file(&out);
        object
    })
}

/// An attached XDP program; detached when dropped.
pub struct Attached(#[allow(dead_code)] Ebpf);

fn attach(program: &str, ifname: &str) -> Ebpf {
    let mut ebpf = Ebpf::load(bpf_object()).expect("load the test XDP object");
    let prog: &mut Xdp = ebpf.program_mut(program).expect("program in object").try_into().expect("an XDP program");
    prog.load().expect("verifier accepts it");
    prog.attach(ifname, XdpMode::Driver).unwrap_or_else(|e| panic!("attach {program} to {ifname}: {e}"));
    ebpf
}

/// Redirects every frame arriving on `ifname` to `socket` (bound to its
/// queue 0).
pub fn redirect_to(ifname: &str, socket: &XskSocket) -> Attached {
    let mut ebpf = attach("redirect", ifname);
    let mut map = XskMap::try_from(ebpf.map_mut("xsks").expect("xsks map")).expect("an XSKMAP");
    map.set(socket.queue(), socket.as_raw_fd(), 0).expect("socket into the XSKMAP");
    Attached(ebpf)
}

/// Passes every frame on `ifname` to the kernel.
pub fn pass(ifname: &str) -> Attached {
    Attached(attach("pass", ifname))
}

/// A raw AF_PACKET socket on one interface: sends whole Ethernet frames,
/// receives what arrives there.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open(ifname: &str) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto as i32) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex(ifname) as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a complete sockaddr_ll of `len` bytes.
        let r = unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), len) };
        assert_eq!(r, 0, "bind AF_PACKET to {ifname}: {}", std::io::Error::last_os_error());
        let rcvbuf: libc::c_int = 8 << 20;
        // SAFETY: `rcvbuf` is a c_int that outlives the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&rcvbuf as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Self { fd }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its length during the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "AF_PACKET send: {}", std::io::Error::last_os_error());
    }

    /// The next frame that arrived (not one this host sent), waiting up to
    /// `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if ready <= 0 {
                return None;
            }
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is writable for its length, `from`/`len` a valid
            // address buffer and its length.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                return Some(buf[..n as usize].to_vec());
            }
        }
    }
}
