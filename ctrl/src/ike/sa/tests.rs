//! The state machine driven packet by packet with a made-up clock: two
//! vpngw IKE SAs talk through a test "network" that can drop, repeat,
//! corrupt or NAT their datagrams.

use super::*;
use crate::ike::message::TS_IPV4_ADDR_RANGE;
use std::net::Ipv4Addr;

const I_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const R_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

fn ts(first: &str, last: &str) -> TrafficSelector {
    let _ = TS_IPV4_ADDR_RANGE;
    TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: first.parse().unwrap(),
        end: last.parse().unwrap(),
    }
}

fn settings(local: IpAddr, remote: IpAddr, ike: &[&str], esp: &[&str]) -> Settings {
    let vpc = ts("10.1.0.0", "10.1.255.255");
    let idc = ts("172.16.1.0", "172.16.1.255");
    let initiator = local == I_ADDR;
    Settings {
        local,
        remote,
        psk: Zeroizing::new(b"lab secret 1".to_vec()),
        local_id: identity(&local.to_string()),
        remote_id: identity(&remote.to_string()),
        ike: ike.iter().map(|p| IkeProposal::parse(p).unwrap()).collect(),
        esp: esp.iter().map(|p| EspProposal::parse(p).unwrap()).collect(),
        // The responder (the IDC side) offers wider ranges than the
        // initiator asks for; the initiator gets what it asked for.
        local_ts: if initiator { vec![vpc] } else { vec![ts("172.16.0.0", "172.16.255.255")] },
        remote_ts: if initiator { vec![idc] } else { vec![ts("10.0.0.0", "10.255.255.255")] },
        dpd: None,
        child_lifetime: Duration::from_secs(3600),
        ike_lifetime: Duration::from_secs(86400),
    }
}

fn pair() -> (Settings, Settings) {
    let ike = ["aes256gcm16-prfsha256-x25519", "aes128-sha256-modp2048"];
    let esp = ["aes256gcm16", "aes128-sha256"];
    (settings(I_ADDR, R_ADDR, &ike, &esp), settings(R_ADDR, I_ADDR, &ike, &esp))
}

/// Everything an SA put out: its datagrams and the rest.
fn drain(sa: &mut IkeSa) -> (Vec<Datagram>, Vec<Output>) {
    let (mut sent, mut rest) = (Vec::new(), Vec::new());
    while let Some(o) = sa.poll() {
        match o {
            Output::Send(d) => sent.push(d),
            o => rest.push(o),
        }
    }
    (sent, rest)
}

fn deliver(to: &mut IkeSa, now: Instant, from: IpAddr, d: &Datagram) {
    to.receive(now, d.remote.port(), SocketAddr::new(from, d.local_port), &d.bytes);
}

/// The responder made from the initiator's IKE_SA_INIT, as the endpoint does.
fn answer_init(s: Settings, now: Instant, from: SocketAddr, d: &Datagram) -> IkeSa {
    let msg = message::parse(&d.bytes).unwrap();
    IkeSa::respond_init(s, now, d.remote.port(), from, &d.bytes, &msg)
}

fn logs(outs: &[Output]) -> String {
    outs.iter()
        .filter_map(|o| match o {
            Output::Log(l) => Some(l.as_str()),
            Output::Down(d) => Some(d.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn installs(outs: &[Output]) -> (Vec<SaKeys>, Vec<SaKeys>) {
    let inb =
        outs.iter().filter_map(|o| if let Output::InstallInbound(k) = o { Some(k.clone()) } else { None }).collect();
    let outb =
        outs.iter().filter_map(|o| if let Output::InstallOutbound(k) = o { Some(k.clone()) } else { None }).collect();
    (inb, outb)
}

/// A whole negotiation without loss: both SAs, and what each put out
/// besides datagrams.
fn establish(si: Settings, sr: Settings, now: Instant) -> (IkeSa, IkeSa, Vec<Output>, Vec<Output>) {
    let mut i = IkeSa::initiate(si, now);
    let (d, mut oi) = drain(&mut i);
    let mut r = answer_init(sr, now, SocketAddr::new(I_ADDR, d[0].local_port), &d[0]);
    let (mut to_i, mut or) = drain(&mut r);
    let mut to_r = Vec::new();
    for _ in 0..4 {
        for d in to_i.drain(..) {
            deliver(&mut i, now, R_ADDR, &d);
        }
        let (s, o) = drain(&mut i);
        oi.extend(o);
        to_r.extend(s);
        for d in to_r.drain(..) {
            deliver(&mut r, now, I_ADDR, &d);
        }
        let (s, o) = drain(&mut r);
        or.extend(o);
        to_i.extend(s);
    }
    (i, r, oi, or)
}

#[test]
fn establishes_a_tunnel_and_both_sides_agree_on_keys_and_selectors() {
    let now = Instant::now();
    let (si, sr) = pair();
    let (i, r, oi, or) = establish(si, sr, now);
    assert_eq!((i.phase(), r.phase()), (Phase::Established, Phase::Established), "{}\n{}", logs(&oi), logs(&or));
    assert_eq!(i.proposal().unwrap().to_string(), "aes256gcm16-prfsha256-curve25519");
    let ((i_in, i_out), (r_in, r_out)) = (installs(&oi), installs(&or));
    assert_eq!((i_in.len(), i_out.len(), r_in.len(), r_out.len()), (1, 1, 1, 1));
    // What one side sends with, the other receives with.
    assert_eq!(i_out[0], r_in[0]);
    assert_eq!(r_out[0], i_in[0]);
    assert_ne!(i_in[0].keymat, i_out[0].keymat);
    assert_eq!(i_out[0].suite, Suite::AesGcm256);
    assert_eq!(i_out[0].keymat.len(), Suite::AesGcm256.keymat_len());
    assert_eq!(i_out[0].udp, None, "no NAT, plain ESP");
    // The responder narrowed its wider ranges to what the initiator asked.
    let up = |o: &[Output]| {
        o.iter()
            .find_map(|o| {
                if let Output::Up { local_ts, remote_ts } = o {
                    Some((local_ts.clone(), remote_ts.clone()))
                } else {
                    None
                }
            })
            .unwrap()
    };
    let (vpc, idc) = (ts("10.1.0.0", "10.1.255.255"), ts("172.16.1.0", "172.16.1.255"));
    assert_eq!(up(&oi), (vec![vpc], vec![idc]));
    assert_eq!(up(&or), (vec![idc], vec![vpc]));
    // Inbound installed before outbound, on both sides.
    for o in [&oi, &or] {
        let at = |f: fn(&Output) -> bool| o.iter().position(f).unwrap();
        assert!(at(|o| matches!(o, Output::InstallInbound(_))) < at(|o| matches!(o, Output::InstallOutbound(_))));
    }
    assert!(!logs(&oi).contains("lab secret"), "the PSK is never logged");
}

#[test]
fn every_suite_and_group_negotiates() {
    let now = Instant::now();
    for ike in ["aes128gcm16-prfsha512-ecp384", "aes256-sha256-prfsha384-ecp256", "aes128-sha256-modp2048"] {
        for esp in ["aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256", "aes256-sha256"] {
            let si = settings(I_ADDR, R_ADDR, &[ike], &[esp]);
            let sr = settings(R_ADDR, I_ADDR, &[ike], &[esp]);
            let (i, r, oi, or) = establish(si, sr, now);
            assert_eq!(r.phase(), Phase::Established, "{ike} {esp}: {}", logs(&or));
            let ((_, i_out), (r_in, _)) = (installs(&oi), installs(&or));
            assert_eq!(i_out, r_in, "{ike} {esp}");
            assert_eq!(i.child().unwrap().0.to_string(), esp);
        }
    }
}

#[test]
fn nat_moves_ike_to_port_4500_and_esp_into_udp() {
    let now = Instant::now();
    let (si, sr) = pair();
    let nat = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let mut i = IkeSa::initiate(si, now);
    let (d, _) = drain(&mut i);
    // The NAT maps the initiator's port 500 to 31000, 4500 to 31001.
    let mapped = |port: u16| SocketAddr::new(nat, if port == IKE_PORT { 31000 } else { 31001 });
    let mut r = answer_init(sr, now, mapped(d[0].local_port), &d[0]);
    let (d, _) = drain(&mut r);
    deliver(&mut i, now, R_ADDR, &d[0]);
    let (d, _) = drain(&mut i);
    assert!(i.nat());
    assert_eq!((d[0].local_port, d[0].remote.port()), (NATT_PORT, NATT_PORT), "IKE_AUTH goes to 4500");
    r.receive(now, d[0].remote.port(), mapped(d[0].local_port), &d[0].bytes);
    let (d, or) = drain(&mut r);
    assert_eq!(d[0].remote, mapped(NATT_PORT), "answered where the NAT put it");
    deliver(&mut i, now, R_ADDR, &d[0]);
    let (_, oi) = drain(&mut i);
    assert_eq!(installs(&or).1[0].udp, Some((NATT_PORT, 31001)));
    assert_eq!(installs(&oi).1[0].udp, Some((NATT_PORT, NATT_PORT)));
    assert_eq!(r.phase(), Phase::Established);
}

#[test]
fn invalid_ke_makes_the_initiator_ask_again_with_the_responders_group() {
    let now = Instant::now();
    let si =
        settings(I_ADDR, R_ADDR, &["aes256gcm16-prfsha256-x25519", "aes256gcm16-prfsha256-ecp256"], &["aes256gcm16"]);
    let sr = settings(R_ADDR, I_ADDR, &["aes256gcm16-prfsha256-ecp256"], &["aes256gcm16"]);
    let mut i = IkeSa::initiate(si, now);
    let (d, _) = drain(&mut i);
    let mut r = answer_init(sr.clone(), now, SocketAddr::new(I_ADDR, 500), &d[0]);
    let (refusal, or) = drain(&mut r);
    assert_eq!(r.phase(), Phase::Closed, "no state kept for a refusal");
    assert!(
        logs(&or).contains("INVALID_KE_PAYLOAD: the initiator's KE is of group 31; we take group 19"),
        "{}",
        logs(&or)
    );
    let n = message::parse(&refusal[0].bytes).unwrap();
    assert_eq!(n.payloads, vec![status(notify::INVALID_KE_PAYLOAD, 19u16.to_be_bytes().to_vec())]);
    deliver(&mut i, now, R_ADDR, &refusal[0]);
    let (again, oi) = drain(&mut i);
    assert!(logs(&oi).contains("wants Diffie-Hellman group 19"));
    let m = message::parse(&again[0].bytes).unwrap();
    assert!(m.payloads.iter().any(|p| matches!(p, Payload::Ke { group: 19, .. })));
    let mut r = answer_init(sr, now, SocketAddr::new(I_ADDR, 500), &again[0]);
    let (d, _) = drain(&mut r);
    deliver(&mut i, now, R_ADDR, &d[0]);
    let (d, _) = drain(&mut i);
    deliver(&mut r, now, I_ADDR, &d[0]);
    assert_eq!(r.phase(), Phase::Established);
    assert_eq!(r.proposal().unwrap().group, Group::Ecp256);
}

#[test]
fn a_cookie_request_is_answered_with_the_cookie_and_the_same_nonce() {
    let now = Instant::now();
    let (si, sr) = pair();
    let mut i = IkeSa::initiate(si, now);
    let (first, _) = drain(&mut i);
    let m1 = message::parse(&first[0].bytes).unwrap();
    let header = Header { spi_r: 0, flags: flags::RESPONSE, ..m1.header };
    let cookie = Message { header, payloads: vec![status(notify::COOKIE, vec![7; 20])] }.emit();
    deliver(&mut i, now, R_ADDR, &Datagram { local_port: 500, remote: SocketAddr::new(I_ADDR, 500), bytes: cookie });
    let (second, _) = drain(&mut i);
    let m2 = message::parse(&second[0].bytes).unwrap();
    assert_eq!(m2.payloads[0], status(notify::COOKIE, vec![7; 20]), "the cookie comes first");
    assert_eq!(m2.payloads[1..], m1.payloads[..], "the rest as before");
    let mut r = answer_init(sr, now, SocketAddr::new(I_ADDR, 500), &second[0]);
    let (d, _) = drain(&mut r);
    deliver(&mut i, now, R_ADDR, &d[0]);
    let (d, _) = drain(&mut i);
    deliver(&mut r, now, I_ADDR, &d[0]);
    assert_eq!(r.phase(), Phase::Established, "AUTH signs the message with the cookie");
}

#[test]
fn requests_are_retransmitted_with_backoff_then_given_up() {
    let t0 = Instant::now();
    let (si, _) = pair();
    let mut i = IkeSa::initiate(si, t0);
    let (first, _) = drain(&mut i);
    let mut sent_at = Vec::new();
    let mut down = None;
    for ms in (0..70_000).step_by(100) {
        let now = t0 + Duration::from_millis(ms);
        if i.next_timeout().is_some_and(|t| t <= now) {
            i.on_timeout(now);
        }
        let (d, o) = drain(&mut i);
        for d in d {
            assert_eq!(d.bytes, first[0].bytes, "the same request again");
            sent_at.push(ms);
        }
        if let Some(Output::Down(why)) = o.into_iter().find(|o| matches!(o, Output::Down(_))) {
            down = Some((ms, why));
            break;
        }
    }
    assert_eq!(sent_at, vec![1000, 3000, 7000, 15000, 31000]);
    let (ms, why) = down.expect("given up");
    assert_eq!(ms, 63_000, "after the last retransmission's wait (32 s)");
    assert!(why.contains("did not answer our IKE_SA_INIT request (5 retransmissions)"), "{why}");
    assert_eq!(i.phase(), Phase::Closed);
}

#[test]
fn the_responder_answers_retransmitted_requests_from_its_cache() {
    let now = Instant::now();
    let (si, sr) = pair();
    let mut i = IkeSa::initiate(si, now);
    let (init, _) = drain(&mut i);
    let mut r = answer_init(sr, now, SocketAddr::new(I_ADDR, 500), &init[0]);
    let (resp, _) = drain(&mut r);
    deliver(&mut r, now, I_ADDR, &init[0]);
    let (again, o) = drain(&mut r);
    assert_eq!(again[0].bytes, resp[0].bytes, "the same IKE_SA_INIT answer");
    assert!(o.is_empty());
    deliver(&mut i, now, R_ADDR, &resp[0]);
    let (auth, _) = drain(&mut i);
    deliver(&mut r, now, I_ADDR, &auth[0]);
    let (first, o1) = drain(&mut r);
    deliver(&mut r, now, I_ADDR, &auth[0]);
    let (second, o2) = drain(&mut r);
    assert_eq!(first[0].bytes, second[0].bytes, "the cached IKE_AUTH answer, byte for byte");
    assert_eq!(installs(&o1).0.len(), 1);
    assert!(o2.is_empty(), "processed once: nothing installed twice");
    // A duplicate response at the initiator is ignored.
    deliver(&mut i, now, R_ADDR, &first[0]);
    deliver(&mut i, now, R_ADDR, &second[0]);
    let (_, oi) = drain(&mut i);
    assert_eq!(installs(&oi).1.len(), 1);
    assert!(logs(&oi).contains("dropped: response 1 to no request of ours"));
}

#[test]
fn a_wrong_psk_fails_with_authentication_failed_and_installs_nothing() {
    let now = Instant::now();
    let (si, mut sr) = pair();
    sr.psk = Zeroizing::new(b"another secret".to_vec());
    let (i, r, oi, or) = establish(si, sr, now);
    assert_eq!((i.phase(), r.phase()), (Phase::Closed, Phase::Closed));
    assert!(
        logs(&or).contains("AUTHENTICATION_FAILED: its AUTH payload does not verify: the pre-shared keys differ"),
        "{}",
        logs(&or)
    );
    assert!(logs(&oi).contains("AUTHENTICATION_FAILED: the responder refused our authentication"), "{}", logs(&oi));
    let nothing = |o: &[Output]| {
        !o.iter().any(|o| matches!(o, Output::InstallInbound(_) | Output::InstallOutbound(_) | Output::Up { .. }))
    };
    assert!(nothing(&oi) && nothing(&or));
    assert!(!logs(&or).contains("secret"));
}

#[test]
fn an_unexpected_identity_fails_authentication() {
    let now = Instant::now();
    let (mut si, sr) = pair();
    si.local_id = identity("cgw.example.net");
    let (_, r, _, or) = establish(si, sr, now);
    assert_eq!(r.phase(), Phase::Closed);
    assert!(logs(&or).contains("the peer is cgw.example.net, not the configured 192.0.2.1"), "{}", logs(&or));
}

#[test]
fn disjoint_proposals_fail_with_no_proposal_chosen_naming_both_sides() {
    let now = Instant::now();
    let si = settings(I_ADDR, R_ADDR, &["aes128-sha256-modp2048"], &["aes256gcm16"]);
    let sr = settings(R_ADDR, I_ADDR, &["aes256gcm16-prfsha384-ecp384"], &["aes256gcm16"]);
    let (i, r, oi, or) = establish(si, sr, now);
    assert_eq!((i.phase(), r.phase()), (Phase::Closed, Phase::Closed));
    assert!(
        logs(&oi).contains(
            "NO_PROPOSAL_CHOSEN: the responder takes none of our IKE proposals (aes128-sha256-prfsha256-modp2048)"
        ),
        "{}",
        logs(&oi)
    );
    assert!(
        logs(&or)
            .contains("we offer aes256gcm16-prfsha384-ecp384; the peer offers IKE:aes128-sha256-prfsha256-modp2048"),
        "{}",
        logs(&or)
    );
    // ESP: the IKE SA comes up, the child cannot, and the IKE SA is deleted.
    let si = settings(I_ADDR, R_ADDR, &["aes256gcm16-prfsha256-x25519"], &["aes128-sha256"]);
    let sr = settings(R_ADDR, I_ADDR, &["aes256gcm16-prfsha256-x25519"], &["chacha20poly1305"]);
    let (i, r, oi, or) = establish(si, sr, now);
    assert_eq!((i.phase(), r.phase()), (Phase::Closed, Phase::Closed), "{}\n{}", logs(&oi), logs(&or));
    assert!(logs(&oi).contains("NO_PROPOSAL_CHOSEN: the responder takes none of our ESP proposals (aes128-sha256)"));
    assert!(logs(&or).contains("we offer chacha20poly1305; the peer offers ESP:aes128-sha256-noesn"), "{}", logs(&or));
    assert!(logs(&or).contains("the peer deleted the IKE SA"));
    assert!(installs(&oi).0.is_empty() && installs(&or).0.is_empty());
}

#[test]
fn selectors_that_meet_none_of_ours_are_ts_unacceptable() {
    let now = Instant::now();
    let (mut si, sr) = pair();
    si.remote_ts = vec![ts("192.168.0.0", "192.168.255.255")];
    let (i, _, oi, or) = establish(si, sr, now);
    assert_eq!(i.phase(), Phase::Closed);
    assert!(
        logs(&or).contains(
            "TS_UNACCEPTABLE: the initiator's selectors 10.1.0.0-10.1.255.255 <-> 192.168.0.0-192.168.255.255"
        ),
        "{}",
        logs(&or)
    );
    assert!(logs(&oi).contains("TS_UNACCEPTABLE from the responder"));
}

#[test]
fn liveness_checks_keep_a_live_peer_and_find_a_dead_one() {
    let t0 = Instant::now();
    let (mut si, sr) = pair();
    si.dpd = Some(Dpd { interval: Duration::from_secs(2), timeout: Duration::from_secs(6), action: DpdAction::Clear });
    let (mut i, mut r, _, _) = establish(si, sr, t0);
    assert_eq!(i.next_timeout(), Some(t0 + Duration::from_secs(2)));
    // A live peer answers; the check is repeated after the next interval.
    let t = t0 + Duration::from_secs(2);
    i.on_timeout(t);
    let (d, _) = drain(&mut i);
    deliver(&mut r, t, I_ADDR, &d[0]);
    let (d, _) = drain(&mut r);
    deliver(&mut i, t, R_ADDR, &d[0]);
    assert_eq!(i.next_timeout(), Some(t + Duration::from_secs(2)));
    // Now it is dead: down within interval + timeout.
    let mut down = None;
    for ms in (2000..20_000).step_by(100) {
        let now = t + Duration::from_millis(ms);
        if i.next_timeout().is_some_and(|x| x <= now) {
            i.on_timeout(now);
        }
        let (_, o) = drain(&mut i);
        if let Some(Output::Down(why)) = o.iter().find(|o| matches!(o, Output::Down(_))) {
            down = Some((ms, why.clone()));
            assert!(o.iter().any(|o| matches!(o, Output::RemoveInbound(_))), "its SAs go with it");
            break;
        }
    }
    let (ms, why) = down.expect("the dead peer is found");
    assert_eq!(ms, 2000 + 6000, "interval, then the timeout");
    assert!(why.contains("did not answer our liveness check"), "{why}");
}

#[test]
fn garbage_and_tampering_change_nothing() {
    let now = Instant::now();
    let (si, sr) = pair();
    let mut i = IkeSa::initiate(si, now);
    let (init, _) = drain(&mut i);
    let mut r = answer_init(sr, now, SocketAddr::new(I_ADDR, 500), &init[0]);
    let (resp, _) = drain(&mut r);
    deliver(&mut i, now, R_ADDR, &resp[0]);
    let (auth, _) = drain(&mut i);
    let mut hostile: Vec<Vec<u8>> = vec![vec![], vec![0; 3], auth[0].bytes[..40].to_vec()];
    for at in [30, 60, auth[0].bytes.len() - 1] {
        let mut b = auth[0].bytes.clone();
        b[at] ^= 1;
        hostile.push(b);
    }
    let mut wrong_id = auth[0].bytes.clone();
    wrong_id[20..24].copy_from_slice(&7u32.to_be_bytes());
    hostile.push(wrong_id);
    for b in &hostile {
        deliver(
            &mut r,
            now,
            I_ADDR,
            &Datagram { local_port: 500, remote: SocketAddr::new(R_ADDR, 500), bytes: b.clone() },
        );
        deliver(
            &mut i,
            now,
            R_ADDR,
            &Datagram { local_port: 500, remote: SocketAddr::new(I_ADDR, 500), bytes: b.clone() },
        );
    }
    let (sent, o) = drain(&mut r);
    assert!(sent.is_empty() && o.iter().all(|o| matches!(o, Output::Log(l) if l.contains("dropped"))), "{o:?}");
    deliver(&mut r, now, I_ADDR, &auth[0]);
    let (d, _) = drain(&mut r);
    deliver(&mut i, now, R_ADDR, &d[0]);
    assert_eq!((i.phase(), r.phase()), (Phase::Established, Phase::Established));
}

#[test]
fn a_delete_takes_both_sides_down() {
    let now = Instant::now();
    let (si, sr) = pair();
    let (mut i, mut r, _, _) = establish(si, sr, now);
    i.delete(now);
    let (d, oi) = drain(&mut i);
    assert!(oi.iter().any(|o| matches!(o, Output::RemoveInbound(_))));
    deliver(&mut r, now, I_ADDR, &d[0]);
    let (d, or) = drain(&mut r);
    assert!(or.iter().any(|o| matches!(o, Output::RemoveInbound(_))));
    assert!(logs(&or).contains("the peer deleted the IKE SA"));
    deliver(&mut i, now, R_ADDR, &d[0]);
    assert_eq!((i.phase(), r.phase()), (Phase::Closed, Phase::Closed));
}

#[test]
fn narrowing_intersects_ranges_protocols_and_ports() {
    let a = TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: "10.0.0.0".parse().unwrap(),
        end: "10.0.255.255".parse().unwrap(),
    };
    let b = TrafficSelector {
        protocol: 6,
        start_port: 80,
        end_port: 443,
        start: "10.0.1.0".parse().unwrap(),
        end: "10.9.0.0".parse().unwrap(),
    };
    assert_eq!(
        narrow(&a, &b),
        Some(TrafficSelector {
            protocol: 6,
            start_port: 80,
            end_port: 443,
            start: "10.0.1.0".parse().unwrap(),
            end: "10.0.255.255".parse().unwrap()
        })
    );
    let v6 = TrafficSelector { start: "::".parse().unwrap(), end: "::1".parse().unwrap(), ..a };
    assert_eq!(narrow(&a, &v6), None);
    assert_eq!(narrow(&b, &TrafficSelector { protocol: 17, ..a }), None);
}

/// What each side's engine holds: inbound SAs by SPI, and the outbound.
#[derive(Default)]
struct Engine {
    inbound: std::collections::HashMap<u32, SaKeys>,
    outbound: Option<SaKeys>,
}

impl Engine {
    fn apply(&mut self, outs: &[Output]) {
        for o in outs {
            match o {
                Output::InstallInbound(k) => {
                    assert!(self.inbound.insert(k.spi, k.clone()).is_none(), "an SPI installed twice")
                }
                Output::InstallOutbound(k) => self.outbound = Some(k.clone()),
                Output::RemoveInbound(spi) => assert!(self.inbound.remove(spi).is_some(), "removing what is not there"),
                _ => {}
            }
        }
    }
}

/// Make-before-break: whatever a side sends on, the other can receive.
fn no_packet_lost(a: &Engine, b: &Engine) {
    for (x, y) in [(a, b), (b, a)] {
        let out = x.outbound.as_ref().unwrap();
        assert_eq!(y.inbound.get(&out.spi), Some(out), "an outbound SA without its inbound on the other side");
    }
}

/// Both rekey timers as `first` says, then every datagram delivered one at
/// a time (in the order sent), the invariant checked after each.
fn rekey(
    si: Settings,
    sr: Settings,
    initiator_first: bool,
    responder_first: bool,
) -> (IkeSa, IkeSa, Engine, Engine, String) {
    let t0 = Instant::now();
    let (mut i, mut r, oi, or) = establish(si, sr, t0);
    let (mut ei, mut er) = (Engine::default(), Engine::default());
    ei.apply(&oi);
    er.apply(&or);
    let (old_i, old_r) = (i.child().unwrap(), r.child().unwrap());
    let now = t0 + Duration::from_secs(95);
    assert!(i.next_timeout().unwrap() <= now && i.next_timeout().unwrap() >= t0 + Duration::from_secs(80));
    if initiator_first {
        i.on_timeout(now);
    }
    if responder_first {
        r.on_timeout(now);
    }
    let mut log = String::new();
    let mut queue: VecDeque<(bool, Datagram)> = VecDeque::new();
    let mut collect = |sa: &mut IkeSa, e: &mut Engine, to_r: bool, queue: &mut VecDeque<(bool, Datagram)>| {
        let (d, o) = drain(sa);
        e.apply(&o);
        log += &(logs(&o) + "\n");
        queue.extend(d.into_iter().map(|d| (to_r, d)));
    };
    collect(&mut i, &mut ei, true, &mut queue);
    collect(&mut r, &mut er, false, &mut queue);
    while let Some((to_r, d)) = queue.pop_front() {
        if to_r {
            deliver(&mut r, now, I_ADDR, &d);
            collect(&mut r, &mut er, false, &mut queue);
        } else {
            deliver(&mut i, now, R_ADDR, &d);
            collect(&mut i, &mut ei, true, &mut queue);
        }
        no_packet_lost(&ei, &er);
    }
    assert_eq!((ei.inbound.len(), er.inbound.len()), (1, 1), "the old inbound SAs are gone: {log}");
    let (new_i, new_r) = (i.child().unwrap(), r.child().unwrap());
    assert_ne!((new_i.1, new_i.2), (old_i.1, old_i.2), "a new child: {log}");
    assert_ne!((new_r.1, new_r.2), (old_r.1, old_r.2));
    assert_eq!((new_i.1, new_i.2), (new_r.2, new_r.1), "the same child on both sides");
    assert_eq!(ei.outbound.as_ref().unwrap().spi, new_i.2);
    (i, r, ei, er, log)
}

fn with_lifetime(mut s: Settings, esp: &str) -> Settings {
    s.child_lifetime = Duration::from_secs(100);
    s.esp = vec![EspProposal::parse(esp).unwrap()];
    s
}

#[test]
fn child_rekey_installs_the_new_inbound_before_any_outbound_switches() {
    for (esp, i_first, r_first) in [
        ("aes256gcm16", true, false),
        ("aes128-sha256", false, true),
        ("aes256gcm16-x25519", true, false),
        ("chacha20poly1305-ecp384", false, true),
        ("aes128gcm16-modp2048", true, false),
    ] {
        let (si, sr) = pair();
        let (i, r, ei, _, log) = rekey(with_lifetime(si, esp), with_lifetime(sr, esp), i_first, r_first);
        assert!(log.contains("child SA rekeyed") && log.contains("replaced by"), "{esp}: {log}");
        assert_eq!(i.child().unwrap().0, EspProposal::parse(esp).unwrap());
        assert_eq!(ei.outbound.as_ref().unwrap().suite, i.child().unwrap().0.suite);
        assert_eq!((i.phase(), r.phase()), (Phase::Established, Phase::Established));
        // The successor's rekey is due again after 80-90% of its life.
        let next = i.next_timeout().unwrap().max(r.next_timeout().unwrap());
        assert!(next > Instant::now() + Duration::from_secs(160), "{esp}");
    }
}

#[test]
fn simultaneous_rekeys_end_with_one_child_on_both_sides() {
    for esp in ["aes256gcm16", "aes128-sha256-ecp256", "aes256gcm16", "chacha20poly1305"] {
        let (si, sr) = pair();
        let (_, _, _, _, log) = rekey(with_lifetime(si, esp), with_lifetime(sr, esp), true, true);
        // Both exchanges complete; the side whose exchange holds the
        // lowest nonce deletes its child, the other's child goes on.
        assert_eq!(log.matches("simultaneous rekey: the peer's and ours crossed").count(), 2, "{log}");
        assert_eq!(log.matches("simultaneous rekey lost").count(), 1, "{log}");
        assert_eq!(log.matches("simultaneous rekey won").count(), 1, "{log}");
        assert_eq!(log.matches("child SA rekeyed").count(), 1, "{log}");
        assert!(log.contains("the peer deleted its redundant child SA"), "{log}");
    }
}

/// Both sides rekey, but the peer's rekey finishes (its delete of the old
/// child arrives) before it even sees ours: it refuses ours, and ours
/// is dropped quietly, not tried again, and nothing is lost meanwhile.
#[test]
fn a_rekey_overtaken_by_the_peers_finished_rekey_is_dropped() {
    let (si, sr) = pair();
    let t0 = Instant::now();
    let (mut i, mut r, oi, or) = establish(with_lifetime(si, "aes256gcm16"), with_lifetime(sr, "aes256gcm16"), t0);
    let (mut ei, mut er) = (Engine::default(), Engine::default());
    ei.apply(&oi);
    er.apply(&or);
    let now = t0 + Duration::from_secs(95);
    let mut log = String::new();
    let mut step = |sa: &mut IkeSa, e: &mut Engine| {
        let (d, o) = drain(sa);
        e.apply(&o);
        log += &(logs(&o) + "\n");
        d
    };
    i.on_timeout(now);
    r.on_timeout(now);
    let ours = step(&mut i, &mut ei); // i's rekey request: held back
    let theirs = step(&mut r, &mut er);
    deliver(&mut i, now, R_ADDR, &theirs[0]);
    let answer = step(&mut i, &mut ei);
    deliver(&mut r, now, I_ADDR, &answer[0]);
    let delete_old = step(&mut r, &mut er); // r's rekey done: the old goes
    no_packet_lost(&ei, &er);
    deliver(&mut i, now, R_ADDR, &delete_old[0]);
    let confirm = step(&mut i, &mut ei);
    no_packet_lost(&ei, &er);
    deliver(&mut r, now, I_ADDR, &confirm[0]);
    step(&mut r, &mut er);
    // Now i's request reaches r, which no longer has that child.
    deliver(&mut r, now, I_ADDR, &ours[0]);
    let refusal = step(&mut r, &mut er);
    deliver(&mut i, now, R_ADDR, &refusal[0]);
    assert!(step(&mut i, &mut ei).is_empty(), "nothing more to say: {log}");
    assert!(log.contains("the peer's own rekey replaced the child"), "{log}");
    no_packet_lost(&ei, &er);
    assert_eq!((ei.inbound.len(), er.inbound.len()), (1, 1), "{log}");
    let (ci, cr) = (i.child().unwrap(), r.child().unwrap());
    assert_eq!((ci.1, ci.2), (cr.2, cr.1), "the peer's new child on both sides: {log}");
    // Not tried again in 10 s: the new child's own rekey time holds.
    assert!(i.next_timeout().unwrap() > now + Duration::from_secs(60), "{log}");
}
