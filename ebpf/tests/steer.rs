//! The steering program on a real veth pair: each test builds two network
//! namespaces of its own (the gateway's and a peer's) joined by a veth,
//! attaches the program to the gateway's end, sends frames built by Scapy
//! (an independent implementation) from the peer's end, and reads the
//! program's counters after each one. No AF_XDP socket is bound here, so a
//! redirect shows as its reason plus `no-socket`; binding sockets is the
//! engine's `io/xsk` business.
//!
//! Needs root, `ip` (iproute2) and python3 with Scapy (scripts/deps.sh).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vpngw_ebpf::{Counters, Error, Mode, Reason, Role, Steering};
use vpngw_testlab::{veth, Netns};

const GW_MAC: &str = "02:00:00:00:00:01";
const PEER_MAC: &str = "02:00:00:00:00:02";

/// The gateway's namespace with `gw0` (192.0.2.1/24, 2001:db8::1/64) and
/// the peer's with `peer0` (192.0.2.2/24, IPv6 off), a veth pair between
/// them. Static neighbours and IPv6 off on the peer keep the kernels quiet,
/// so every frame that reaches `gw0` is one the test sent.
struct Lab {
    gw: Netns,
    peer: Netns,
}

impl Lab {
    fn new(test: &str) -> Lab {
        let (gw, peer) = (Netns::create(&format!("ebpf-{test}"), "gw"), Netns::create(&format!("ebpf-{test}"), "peer"));
        peer.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
        veth(&gw, "gw0", GW_MAC, &peer, "peer0", PEER_MAC);
        peer.exec(&["sysctl", "-qw", "net.ipv6.conf.peer0.disable_ipv6=1"]);
        gw.ip(&["addr", "add", "192.0.2.1/24", "dev", "gw0"]);
        gw.ip(&["addr", "add", "2001:db8::1/64", "dev", "gw0", "nodad"]);
        gw.ip(&["neigh", "add", "192.0.2.2", "lladdr", PEER_MAC, "dev", "gw0", "nud", "permanent"]);
        gw.ip(&["neigh", "add", "2001:db8::2", "lladdr", PEER_MAC, "dev", "gw0", "nud", "permanent"]);
        peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "peer0"]);
        peer.ip(&["neigh", "add", "192.0.2.1", "lladdr", GW_MAC, "dev", "peer0", "nud", "permanent"]);
        Lab { gw, peer }
    }

    /// Runs `body` on a thread in the gateway's namespace.
    fn in_gw<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        self.gw.run(body)
    }

    /// `ip -d link show dev gw0`: it names the XDP program while one is
    /// attached.
    fn gw0_details(&self) -> String {
        self.gw.ip(&["-d", "link", "show", "dev", "gw0"])
    }

    fn sender(&self) -> Sender {
        Sender::start(self.peer.name())
    }
}

/// Scapy in the peer's namespace: it reads one Scapy expression per line
/// (the frame after its Ethernet header), sends it out of `peer0` to `gw0`'s
/// MAC, and says `sent`.
struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const SENDER: &str = r#"
import sys
from scapy.all import *
from scapy.layers.ipsec import ESP
conf.verb = 0
print("ready", flush=True)
for line in sys.stdin:
    sendp(Ether(dst=sys.argv[1], src=sys.argv[2]) / eval(line), iface="peer0")
    print("sent", flush=True)
"#;

impl Sender {
    fn start(ns: &str) -> Sender {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", SENDER, GW_MAC, PEER_MAC])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 with Scapy (scripts/deps.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut sender = Sender { child, stdin, stdout };
        sender.expect_line("ready");
        sender
    }

    fn send(&mut self, frame: &str) {
        writeln!(self.stdin, "{frame}").expect("write to the Scapy sender");
        self.expect_line("sent");
    }

    fn expect_line(&mut self, want: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from the Scapy sender");
        assert_eq!(line.trim(), want, "the Scapy sender stopped (its stderr is above)");
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `frame` and asserts that exactly the counters `want` moved, by one
/// each.
fn expect(steering: &Steering, sender: &mut Sender, frame: &str, want: &[Reason]) {
    let before = steering.counters().unwrap();
    sender.send(frame);
    // The frame may still be on its way through the veth's NAPI: wait for
    // the counters to move, then a little longer for anything unexpected.
    let deadline = Instant::now() + Duration::from_secs(3);
    let moved = |delta: &Counters| delta.nonzero().map(|(_, n)| n).sum::<u64>();
    while moved(&steering.counters().unwrap().since(&before)) < want.len() as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(20));
    let delta = steering.counters().unwrap().since(&before);
    let got: Vec<(Reason, u64)> = delta.nonzero().collect();
    let mut want: Vec<(Reason, u64)> = want.iter().map(|&r| (r, 1)).collect();
    want.sort();
    assert_eq!(got, want, "{frame}: counted {delta}");
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Outside: ESP and ESP-in-UDP for the gateway's addresses to the engine,
/// IKE, keepalives, ARP, ICMP and traffic for others to the kernel (the
/// rules in bpf/steer.c, RFC 3948 sections 2.2 and 2.3 for port 4500).
#[test]
fn outside_port_steers_esp_to_the_engine_and_the_rest_to_the_kernel() {
    let lab = Lab::new("out");
    lab.in_gw(|| {
        let mut steering = Steering::attach("gw0", Role::Outside).unwrap();
        assert_eq!(steering.mode(), Mode::Driver, "veth has native XDP; driver error: {:?}", steering.driver_error());
        assert!(lab.gw0_details().contains("xdp"), "attached: {}", lab.gw0_details());
        steering.add_addr(addr("192.0.2.1")).unwrap();
        steering.add_addr(addr("2001:db8::1")).unwrap();
        let mut sender = lab.sender();
        let esp = [Reason::Esp, Reason::NoSocket];
        let esp_in_udp = [Reason::EspInUdp, Reason::NoSocket];
        #[rustfmt::skip]
        let cases: &[(&str, &[Reason])] = &[
            // (a) ICMP to the gateway is the host's.
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/ICMP()"#, &[Reason::Local]),
            // (b) ESP to the gateway goes to the engine.
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/ESP(spi=0x1001, seq=1, data=b"x"*32)"#, &esp),
            // (c) IKE on 4500: the non-ESP marker (four zero bytes).
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=4500, dport=4500)/(b"\0\0\0\0" + b"i"*28)"#, &[Reason::Ike]),
            // (d) ESP in UDP 4500: a non-zero SPI where the marker would be.
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=4500, dport=4500)/(b"\0\0\x10\x01" + b"e"*28)"#, &esp_in_udp),
            // (e) ESP to an address that is not the gateway's.
            (r#"IP(src="192.0.2.2", dst="192.0.2.99")/ESP(spi=0x1001, seq=1, data=b"x"*32)"#, &[Reason::NotOurs]),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=500, dport=500)/(b"i"*28)"#, &[Reason::Ike]),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=4500, dport=4500)/b"\xff""#, &[Reason::NatKeepalive]),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/TCP(dport=22, flags="S")"#, &[Reason::Local]),
            (r#"ARP(psrc="192.0.2.2", hwsrc="02:00:00:00:00:02", pdst="192.0.2.1")"#, &[Reason::NotIp]),
            // IPv4 options: the UDP header is found past them.
            (r#"IP(src="192.0.2.2", dst="192.0.2.1", options=[IPOption_NOP()]*4)/UDP(sport=4500, dport=4500)/(b"\0\0\x10\x01" + b"e"*28)"#, &esp_in_udp),
            // One VLAN tag is skipped.
            (r#"Dot1Q(vlan=7)/IP(src="192.0.2.2", dst="192.0.2.1")/ESP(spi=0x1001, seq=2, data=b"x"*32)"#, &esp),
            (r#"Dot1Q(vlan=7)/IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=500, dport=500)/(b"i"*28)"#, &[Reason::Ike]),
            // UDP fragments are the kernel's to reassemble (large IKE messages).
            (r#"IP(src="192.0.2.2", dst="192.0.2.1", flags="MF")/UDP(sport=4500, dport=4500)/(b"\0\0\0\0" + b"i"*28)"#, &[Reason::Fragment]),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1", proto=17, frag=100)/(b"i"*32)"#, &[Reason::Fragment]),
            // A UDP header cut short.
            (r#"IP(src="192.0.2.2", dst="192.0.2.1", proto=17)/b"\x11\x94""#, &[Reason::Malformed]),
            // IPv6: the first header after the fixed one.
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/ESP(spi=0x1001, seq=3, data=b"x"*32)"#, &esp),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/UDP(sport=4500, dport=4500)/(b"\0\0\x10\x01" + b"e"*28)"#, &esp_in_udp),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/UDP(sport=4500, dport=4500)/(b"\0\0\0\0" + b"i"*28)"#, &[Reason::Ike]),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/ICMPv6EchoRequest()"#, &[Reason::Local]),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/IPv6ExtHdrFragment()/UDP(sport=4500, dport=4500)/(b"\0\0\0\0" + b"i"*28)"#, &[Reason::Fragment]),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::99")/ESP(spi=0x1001, seq=4, data=b"x"*32)"#, &[Reason::NotOurs]),
        ];
        for (frame, want) in cases {
            expect(&steering, &mut sender, frame, want);
        }

        // An address removed is no longer the gateway's.
        steering.remove_addr(addr("192.0.2.1")).unwrap();
        assert_eq!(steering.addrs().unwrap(), vec![addr("2001:db8::1")]);
        expect(
            &steering,
            &mut sender,
            r#"IP(src="192.0.2.2", dst="192.0.2.1")/ESP(spi=0x1001, seq=5, data=b"x"*32)"#,
            &[Reason::NotOurs],
        );

        let totals = steering.counters().unwrap();
        assert_eq!(totals.redirected(), 0, "no socket is bound: {totals}");
        drop(steering);
        assert!(!lab.gw0_details().contains("xdp"), "detached on drop: {}", lab.gw0_details());
    });
}

/// Inside: what is not for the gateway is to be forwarded and goes to the
/// engine; ARP, neighbour discovery, broadcast and multicast, and traffic
/// for the gateway's own addresses go to the kernel.
#[test]
fn inside_port_steers_traffic_to_forward_to_the_engine() {
    let lab = Lab::new("in");
    lab.in_gw(|| {
        let mut steering = Steering::attach("gw0", Role::Inside).unwrap();
        assert_eq!(steering.mode(), Mode::Driver);
        steering.add_addr(addr("192.0.2.1")).unwrap();
        steering.add_addr(addr("2001:db8::1")).unwrap();
        let mut sender = lab.sender();
        let forward = [Reason::Forward, Reason::NoSocket];
        #[rustfmt::skip]
        let cases: &[(&str, &[Reason])] = &[
            (r#"IP(src="192.0.2.2", dst="198.51.100.7")/UDP(sport=1000, dport=53)/(b"q"*20)"#, &forward),
            (r#"IP(src="192.0.2.2", dst="198.51.100.7")/ICMP()"#, &forward),
            // ESP on the inside is just traffic to forward.
            (r#"IP(src="192.0.2.2", dst="198.51.100.7")/ESP(spi=0x1001, seq=1, data=b"x"*32)"#, &forward),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/ICMP()"#, &[Reason::Local]),
            (r#"IP(src="192.0.2.2", dst="192.0.2.1")/TCP(dport=22, flags="S")"#, &[Reason::Local]),
            (r#"ARP(psrc="192.0.2.2", hwsrc="02:00:00:00:00:02", pdst="192.0.2.1")"#, &[Reason::NotIp]),
            (r#"IP(src="0.0.0.0", dst="255.255.255.255")/UDP(sport=68, dport=67)/(b"d"*20)"#, &[Reason::Control]),
            (r#"IP(src="192.0.2.2", dst="224.0.0.5")/(b"o"*20)"#, &[Reason::Control]),
            (r#"Dot1Q(vlan=7)/IP(src="192.0.2.2", dst="198.51.100.7")/ICMP()"#, &forward),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8:5::9")/TCP(dport=443, flags="S")"#, &forward),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8:5::9")/ICMPv6EchoRequest()"#, &forward),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::1")/ICMPv6EchoRequest()"#, &[Reason::Local]),
            // Neighbour discovery, multicast and unicast (RFC 4861).
            (r#"IPv6(src="2001:db8::2", dst="ff02::1:ff00:1", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::1")"#, &[Reason::Control]),
            (r#"IPv6(src="2001:db8::2", dst="2001:db8::5", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::5")"#, &[Reason::Control]),
            (r#"IPv6(src="fe80::2", dst="fe80::1")/UDP(sport=546, dport=547)/(b"d"*20)"#, &[Reason::Control]),
            // An ICMPv6 header cut short.
            (r#"IPv6(src="2001:db8::2", dst="2001:db8:5::9", nh=58, plen=0)"#, &[Reason::Malformed]),
        ];
        for (frame, want) in cases {
            expect(&steering, &mut sender, frame, want);
        }

        steering.detach().unwrap();
        assert!(!lab.gw0_details().contains("xdp"), "detached: {}", lab.gw0_details());
    });
}

/// Errors say which interface and what failed; a failed call changes
/// nothing.
#[test]
fn errors_name_the_interface_and_what_failed() {
    let lab = Lab::new("err");
    lab.in_gw(|| {
        let err = Steering::attach("vpngw-nope0", Role::Outside).unwrap_err();
        assert!(matches!(err, Error::NoSuchInterface { .. }), "{err:?}");
        assert_eq!(err.to_string(), "vpngw-nope0: no such interface");

        let mut steering = Steering::attach("gw0", Role::Outside).unwrap();
        let err = Steering::attach("gw0", Role::Inside).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("gw0: attaching steer_inside failed"), "{text}");
        assert!(lab.gw0_details().contains("steer_outside"), "the first program stays: {}", lab.gw0_details());

        // Only AF_XDP sockets go into the socket map (the loopback is down here).
        let udp = UdpSocket::bind("192.0.2.1:0").unwrap();
        let err = steering.set_socket(0, udp.as_fd()).unwrap_err();
        assert!(err.to_string().starts_with("gw0: map xsks: setting the socket of queue 0: "), "{err}");
        let err = steering.set_socket(vpngw_ebpf::MAX_QUEUES, udp.as_fd()).unwrap_err();
        assert!(err.to_string().starts_with("gw0: map xsks: setting the socket of queue 64: "), "{err}");

        let err = steering.remove_addr(addr("192.0.2.1")).unwrap_err();
        assert!(matches!(err, Error::NotAnAddr { .. }), "{err:?}");
        assert_eq!(err.to_string(), "gw0: 192.0.2.1 is not one of the gateway's addresses here");
        steering.add_addr(addr("::ffff:192.0.2.1")).unwrap();
        assert_eq!(steering.addrs().unwrap(), vec![addr("192.0.2.1")], "an IPv4-mapped address is the IPv4 one");
        steering.remove_addr(addr("192.0.2.1")).unwrap();
        assert!(steering.addrs().unwrap().is_empty());
    });
}

/// An interface without native XDP (the loopback) gets generic mode, and
/// says why.
#[test]
fn without_native_xdp_the_program_runs_in_generic_mode() {
    let lab = Lab::new("lo");
    lab.in_gw(|| {
        let steering = Steering::attach("lo", Role::Inside).unwrap();
        assert_eq!(steering.mode(), Mode::Generic);
        let why = steering.driver_error().expect("the driver's refusal is kept");
        eprintln!("lo: driver mode refused: {why}");
        let details = lab.gw.ip(&["-d", "link", "show", "dev", "lo"]);
        assert!(details.contains("xdpgeneric"), "{details}");
        drop(steering);
        let details = lab.gw.ip(&["-d", "link", "show", "dev", "lo"]);
        assert!(!details.contains("xdp"), "{details}");
    });
}
