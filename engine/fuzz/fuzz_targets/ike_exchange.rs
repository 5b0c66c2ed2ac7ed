//! Fuzzes vpngw's IKE endpoint with hostile datagrams: two endpoints set
//! up a tunnel (IKE SA and child SA), then the input is thrown at the
//! responder as datagrams from the initiator's address — raw bytes, or
//! real messages of the exchange with the input XORed in (so headers and
//! SPIs are right and the fuzzer reaches the decryption and the state
//! machine). Nothing may panic, and the tunnel must be undisturbed: the
//! initiator can still delete it, both sides agreeing, with no child SA
//! removed before that.
//!
//! The input: a sequence of records, each a length byte, a mode byte
//! (bit 0: XOR into the real message `mode >> 1`; bit 1 of the mode also
//! picks the port, 500 or 4500) and that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use vpngw_ctrl::ike::endpoint::Endpoint;
use vpngw_ctrl::ike::message::TrafficSelector;
use vpngw_ctrl::ike::proposal::{EspProposal, IkeProposal};
use vpngw_ctrl::ike::sa::{identity, Datagram, Output, Settings};

fn settings(local: &str, remote: &str) -> Settings {
    let any = TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: "0.0.0.0".parse().unwrap(),
        end: "255.255.255.255".parse().unwrap(),
    };
    Settings {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        psk: zeroize::Zeroizing::new(b"fuzz".to_vec()),
        local_id: identity(local),
        remote_id: identity(remote),
        ike: vec![IkeProposal::parse("aes128gcm16-prfsha256-x25519").unwrap()],
        esp: vec![EspProposal::parse("aes128gcm16").unwrap()],
        local_ts: vec![any],
        remote_ts: vec![any],
        dpd: None,
        child_lifetime: Duration::from_secs(3600),
        ike_lifetime: Duration::from_secs(86400),
    }
}

/// Delivers `from`'s datagrams to `to` (recording them); the rest of
/// `from`'s outputs are returned.
fn pass(from: &mut Endpoint, from_ip: IpAddr, to: &mut Endpoint, now: Instant, sent: &mut Vec<Datagram>) -> Vec<Output> {
    let mut rest = Vec::new();
    while let Some((_, o)) = from.poll() {
        match o {
            Output::Send(d) => {
                to.receive(now, d.remote.port(), SocketAddr::new(from_ip, d.local_port), &d.bytes);
                sent.push(d);
            }
            o => rest.push(o),
        }
    }
    rest
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (ip_i, ip_r): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
    let mut i = Endpoint::new(vec![settings("192.0.2.1", "198.51.100.1")]);
    let mut r = Endpoint::new(vec![settings("198.51.100.1", "192.0.2.1")]);
    i.initiate(now, 0);
    let mut real = Vec::new();
    for _ in 0..3 {
        pass(&mut i, ip_i, &mut r, now, &mut real);
        pass(&mut r, ip_r, &mut i, now, &mut real);
    }
    assert_eq!(r.sas().count(), 1);
    let child = r.sas().next().unwrap().1.child();

    let mut rest = data;
    while let [len, mode, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let port = if mode & 2 == 0 { 500 } else { 4500 };
        let datagram = if mode & 1 == 1 && !real.is_empty() {
            let mut m = real[(*mode as usize >> 1) % real.len()].bytes.clone();
            for (b, x) in m.iter_mut().zip(bytes) {
                *b ^= x;
            }
            m
        } else {
            bytes.to_vec()
        };
        r.receive(now, port, SocketAddr::new(ip_i, port), &datagram);
        while let Some((_, o)) = r.poll() {
            assert!(!matches!(o, Output::RemoveInbound(_) | Output::Down(_)), "a hostile datagram disturbed the tunnel: {o:?}");
        }
    }
    // Undisturbed: the established SA, its child, and a working delete.
    let established: Vec<_> = r.sas().filter(|(_, sa)| sa.child().is_some()).map(|(_, sa)| sa.child()).collect();
    assert_eq!(established, vec![child]);
    i.delete(now, 0);
    let mut sent = Vec::new();
    pass(&mut i, ip_i, &mut r, now, &mut sent);
    let answer = pass(&mut r, ip_r, &mut i, now, &mut sent);
    assert!(answer.iter().any(|o| matches!(o, Output::Down(d) if d.contains("the peer deleted the IKE SA"))), "{answer:?}");
});
