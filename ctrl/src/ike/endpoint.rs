//! All of a gateway's IKE SAs behind its IKE ports, sans-IO: it finds the
//! IKE SA a datagram belongs to (by our SPI; a new IKE_SA_INIT by the
//! peer's address, which names the tunnel), starts responders and
//! initiators, and asks for cookies (RFC 7296 section 2.6) while too many
//! IKE SAs are half open. Each output is tagged with its tunnel.

use super::message::{self, exchange, flags, notify, Header, Message, Notify, Payload};
use super::sa::{Datagram, IkeSa, Output, Phase, Settings};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet) above which
/// new initiators must return a cookie.
pub const COOKIE_THRESHOLD: usize = 64;

/// A tunnel's place in the endpoint (the caller's index).
pub type TunnelId = usize;

pub struct Endpoint {
    /// By [`TunnelId`]; None for a tunnel removed.
    tunnels: Vec<Option<Settings>>,
    sas: HashMap<u64, (TunnelId, IkeSa)>,
    /// Responders by (initiator's address, initiator's SPI), for
    /// retransmitted IKE_SA_INIT requests.
    half_open: HashMap<(SocketAddr, u64), u64>,
    cookie_secret: [u8; 32],
    pub cookie_threshold: usize,
    out: VecDeque<(Option<TunnelId>, Output)>,
}

impl Endpoint {
    /// An endpoint serving `tunnels` (a tunnel is found by its peer's
    /// address).
    pub fn new(tunnels: Vec<Settings>) -> Endpoint {
        let mut cookie_secret = [0u8; 32];
        getrandom::getrandom(&mut cookie_secret).expect("the OS random source");
        Endpoint {
            tunnels: tunnels.into_iter().map(Some).collect(),
            sas: HashMap::new(),
            half_open: HashMap::new(),
            cookie_secret,
            cookie_threshold: COOKIE_THRESHOLD,
            out: VecDeque::new(),
        }
    }

    /// Serves one more tunnel; its id.
    pub fn add(&mut self, settings: Settings) -> TunnelId {
        self.tunnels.push(Some(settings));
        self.tunnels.len() - 1
    }

    /// Deletes `tunnel`'s IKE SAs with the peer and serves it no more (its
    /// peer's new IKE_SA_INIT requests are ignored).
    pub fn remove(&mut self, now: Instant, tunnel: TunnelId) {
        self.delete(now, tunnel);
        if let Some(t) = self.tunnels.get_mut(tunnel) {
            *t = None;
        }
    }

    /// Starts negotiating `tunnel` as initiator (if it is served).
    pub fn initiate(&mut self, now: Instant, tunnel: TunnelId) {
        let Some(settings) = self.tunnels.get(tunnel).cloned().flatten() else { return };
        let sa = IkeSa::initiate(settings, now);
        self.keep(now, tunnel, sa);
    }

    /// Rekeys `tunnel`'s child SA at the next timeout (its volume limit is
    /// near).
    pub fn rekey_child_soon(&mut self, now: Instant, tunnel: TunnelId) {
        for (t, sa) in self.sas.values_mut() {
            if *t == tunnel {
                sa.rekey_child_soon(now);
            }
        }
    }

    /// The IKE SAs, with their tunnels.
    pub fn sas(&self) -> impl Iterator<Item = (TunnelId, &IkeSa)> {
        self.sas.values().map(|(t, sa)| (*t, sa))
    }

    /// The next output, with its tunnel (none for what concerns no tunnel).
    pub fn poll(&mut self) -> Option<(Option<TunnelId>, Output)> {
        self.out.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(|(_, sa)| sa.next_timeout()).min()
    }

    pub fn on_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, (_, sa))| sa.next_timeout().is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for spi in due {
            if let Some((t, mut sa)) = self.sas.remove(&spi) {
                sa.on_timeout(now);
                self.keep(now, t, sa);
            }
        }
    }

    /// Deletes every IKE SA of `tunnel` with its peer.
    pub fn delete(&mut self, now: Instant, tunnel: TunnelId) {
        let ours: Vec<u64> = self.sas.iter().filter(|(_, (t, _))| *t == tunnel).map(|(s, _)| *s).collect();
        for spi in ours {
            if let Some((t, mut sa)) = self.sas.remove(&spi) {
                sa.delete(now);
                self.keep(now, t, sa);
            }
        }
    }

    /// Drains an SA's outputs; keeps it unless closed. A new IKE SA that
    /// brings its tunnel up supersedes the tunnel's others (the peer
    /// restarted, or both sides initiated at once): their child SAs are
    /// removed and they are deleted with the peer, quietly, so the tunnel
    /// stays with the newest (strongSwan's `unique = replace`).
    fn keep(&mut self, now: Instant, tunnel: TunnelId, mut sa: IkeSa) {
        let mut up = false;
        while let Some(o) = sa.poll() {
            up |= matches!(o, Output::Up { .. });
            self.out.push_back((Some(tunnel), o));
        }
        if up {
            let others: Vec<u64> = self
                .sas
                .iter()
                .filter(|(_, (t, other))| *t == tunnel && other.phase() == Phase::Established)
                .map(|(spi, _)| *spi)
                .collect();
            for spi in others {
                if let Some((t, mut old)) = self.sas.remove(&spi) {
                    old.supersede(now);
                    self.keep(now, t, old);
                }
            }
        }
        for new in sa.take_replacements() {
            self.keep(now, tunnel, new);
        }
        let key = (sa.remote(), sa.spi_i);
        if sa.phase() == Phase::Closed {
            self.half_open.retain(|_, s| *s != sa.our_spi());
            return;
        }
        if sa.phase() == Phase::Established {
            self.half_open.remove(&key);
        }
        self.sas.insert(sa.our_spi(), (tunnel, sa));
    }

    fn log(&mut self, tunnel: Option<TunnelId>, text: String) {
        self.out.push_back((tunnel, Output::Log(text)));
    }

    /// A datagram that came to our `local_port` from `from` (IKE, without
    /// port 4500's non-ESP marker).
    pub fn receive(&mut self, now: Instant, local_port: u16, from: SocketAddr, bytes: &[u8]) {
        let header = match message::parse_header(bytes) {
            Ok(h) => h,
            Err(e) => return self.log(None, format!("ike: dropped a datagram from {from}: {e}")),
        };
        let request = header.flags & flags::RESPONSE == 0;
        if header.exchange == exchange::IKE_SA_INIT && request && header.spi_r == 0 {
            return self.new_initiator(now, local_port, from, header, bytes);
        }
        // The sender set INITIATOR: it is the original initiator, ours is
        // the responder's SPI.
        let ours = if header.flags & flags::INITIATOR != 0 { header.spi_r } else { header.spi_i };
        match self.sas.remove(&ours) {
            Some((t, mut sa)) => {
                sa.receive(now, local_port, from, bytes);
                self.keep(now, t, sa);
            }
            None => self.log(None, format!("ike: dropped a message from {from} for no IKE SA of ours ({ours:016x})")),
        }
    }

    fn new_initiator(&mut self, now: Instant, local_port: u16, from: SocketAddr, header: Header, bytes: &[u8]) {
        if let Some(spi) = self.half_open.get(&(from, header.spi_i)).copied() {
            if let Some((t, mut sa)) = self.sas.remove(&spi) {
                sa.receive(now, local_port, from, bytes);
                self.keep(now, t, sa);
            }
            return;
        }
        let Some(tunnel) = self.tunnels.iter().position(|s| s.as_ref().is_some_and(|s| s.remote == from.ip())) else {
            return self.log(None, format!("ike: IKE_SA_INIT from {from}, which is no tunnel's peer: ignored"));
        };
        let msg = match message::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.log(Some(tunnel), format!("ike: dropped IKE_SA_INIT from {from}: {e}")),
        };
        if self.half_open.len() >= self.cookie_threshold && !self.cookie_ok(&msg, from) {
            let cookie = self.cookie(&msg, from);
            let header = Header { spi_r: 0, flags: flags::RESPONSE, ..msg.header };
            let payloads =
                vec![Payload::Notify(Notify { protocol: 0, spi: Vec::new(), kind: notify::COOKIE, data: cookie })];
            let bytes = Message { header, payloads }.emit();
            self.out.push_back((Some(tunnel), Output::Send(Datagram { local_port, remote: from, bytes })));
            return;
        }
        let settings = self.tunnels[tunnel].clone().expect("found among the served");
        let sa = IkeSa::respond_init(settings, now, local_port, from, bytes, &msg);
        if sa.phase() == Phase::Connecting {
            self.half_open.insert((from, header.spi_i), sa.our_spi());
        }
        self.keep(now, tunnel, sa);
    }

    /// A stateless cookie: HMAC(secret, Ni | IPi | SPIi).
    fn cookie(&self, msg: &Message, from: SocketAddr) -> Vec<u8> {
        let nonce = msg.payloads.iter().find_map(|p| if let Payload::Nonce(n) = p { Some(&n[..]) } else { None });
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.cookie_secret).expect("any key length");
        m.update(nonce.unwrap_or_default());
        m.update(from.ip().to_string().as_bytes());
        m.update(&msg.header.spi_i.to_be_bytes());
        m.finalize().into_bytes().to_vec()
    }

    fn cookie_ok(&self, msg: &Message, from: SocketAddr) -> bool {
        let given = msg.payloads.first().and_then(|p| match p {
            Payload::Notify(n) if n.kind == notify::COOKIE => Some(&n.data),
            _ => None,
        });
        given.is_some_and(|g| bool::from(subtle::ConstantTimeEq::ct_eq(&g[..], &self.cookie(msg, from)[..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::proposal::{EspProposal, IkeProposal};
    use crate::ike::sa::identity;
    use std::net::IpAddr;
    use std::time::Duration;
    use zeroize::Zeroizing;

    fn settings(local: &str, remote: &str) -> Settings {
        let any = crate::ike::message::TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: "0.0.0.0".parse().unwrap(),
            end: "255.255.255.255".parse().unwrap(),
        };
        Settings {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            psk: Zeroizing::new(b"k".to_vec()),
            local_id: identity(local),
            remote_id: identity(remote),
            ike: vec![IkeProposal::parse("aes128gcm16-prfsha256-ecp256").unwrap()],
            esp: vec![EspProposal::parse("aes128gcm16").unwrap()],
            local_ts: vec![any],
            remote_ts: vec![any],
            dpd: None,
            child_lifetime: Duration::from_secs(3600),
            ike_lifetime: Duration::from_secs(86400),
        }
    }

    /// Runs datagrams between two endpoints until quiet.
    fn run(a: &mut Endpoint, a_ip: IpAddr, b: &mut Endpoint, b_ip: IpAddr, now: Instant) -> Vec<(bool, Output)> {
        let mut seen = Vec::new();
        for _ in 0..10 {
            let moved = pass(a, a_ip, b, true, now, &mut seen) | pass(b, b_ip, a, false, now, &mut seen);
            if !moved {
                break;
            }
        }
        seen
    }

    /// Delivers `src`'s datagrams to `dst`, keeps the rest; did any move?
    fn pass(
        src: &mut Endpoint,
        src_ip: IpAddr,
        dst: &mut Endpoint,
        from_a: bool,
        now: Instant,
        seen: &mut Vec<(bool, Output)>,
    ) -> bool {
        let mut moved = false;
        while let Some((_, o)) = src.poll() {
            match o {
                Output::Send(d) => {
                    moved = true;
                    dst.receive(now, d.remote.port(), SocketAddr::new(src_ip, d.local_port), &d.bytes);
                }
                o => seen.push((from_a, o)),
            }
        }
        moved
    }

    #[test]
    fn finds_tunnels_by_peer_and_sas_by_spi() {
        let now = Instant::now();
        let (ip_a, ip_b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let mut a = Endpoint::new(vec![settings("192.0.2.1", "198.51.100.9"), settings("192.0.2.1", "198.51.100.1")]);
        let mut b = Endpoint::new(vec![settings("198.51.100.1", "192.0.2.1")]);
        a.initiate(now, 1);
        let seen = run(&mut a, ip_a, &mut b, ip_b, now);
        assert_eq!(seen.iter().filter(|(_, o)| matches!(o, Output::Up { .. })).count(), 2, "{seen:?}");
        assert!(a.sas().all(|(t, sa)| t == 1 && sa.phase() == Phase::Established));
        assert!(b.half_open.is_empty());
        // Not a tunnel's peer: ignored, said so.
        let mut c = Endpoint::new(vec![settings("203.0.113.1", "192.0.2.1")]);
        c.initiate(now, 0);
        let seen = run(&mut c, "203.0.113.1".parse().unwrap(), &mut b, ip_b, now);
        assert!(seen.iter().any(|(_, o)| matches!(o, Output::Log(l) if l.contains("which is no tunnel's peer"))));
    }

    #[test]
    fn a_restarted_peer_supersedes_the_old_ike_sa_without_taking_the_tunnel_down() {
        let now = Instant::now();
        let (ip_a, ip_b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let mut a = Endpoint::new(vec![settings("192.0.2.1", "198.51.100.1")]);
        let mut b = Endpoint::new(vec![settings("198.51.100.1", "192.0.2.1")]);
        a.initiate(now, 0);
        run(&mut a, ip_a, &mut b, ip_b, now);
        let old_child = b.sas().next().unwrap().1.child().unwrap();
        // a restarts: it knows nothing of the old IKE SA and negotiates anew.
        let mut a = Endpoint::new(vec![settings("192.0.2.1", "198.51.100.1")]);
        a.initiate(now, 0);
        let seen = run(&mut a, ip_a, &mut b, ip_b, now);
        let b_said: Vec<&Output> = seen.iter().filter(|(from_a, _)| !from_a).map(|(_, o)| o).collect();
        assert!(b_said.iter().any(|o| matches!(o, Output::Up { .. })), "{b_said:?}");
        assert!(b_said.iter().any(|o| **o == Output::RemoveInbound(old_child.1)), "the old child goes: {b_said:?}");
        assert!(!b_said.iter().any(|o| matches!(o, Output::Down(_))), "the tunnel stays up: {b_said:?}");
        let carrying: Vec<_> = b.sas().filter_map(|(_, sa)| sa.child()).collect();
        assert_eq!(carrying.len(), 1, "one IKE SA carries the tunnel");
        assert_ne!(carrying[0], old_child);
        // The old one closes quietly when its time is up.
        b.on_timeout(now + Duration::from_secs(11));
        let later: Vec<_> = std::iter::from_fn(|| b.poll()).collect();
        assert!(!later.iter().any(|(_, o)| matches!(o, Output::Down(_) | Output::RemoveInbound(_))), "{later:?}");
        assert_eq!(b.sas().count(), 1);
    }

    #[test]
    fn ike_sa_rekeys_keep_the_tunnel_and_its_child() {
        let t0 = Instant::now();
        let (ip_a, ip_b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let short = |mut s: Settings| {
            s.ike_lifetime = Duration::from_secs(100);
            s
        };
        // a first, b first, and both at once (RFC 7296 section 2.8.2: the
        // new IKE SA with the lowest nonce is redundant, deleted by its
        // maker; the other carries the child).
        for (a_rekeys, b_rekeys) in [(true, false), (false, true), (true, true)] {
            let mut a = Endpoint::new(vec![short(settings("192.0.2.1", "198.51.100.1"))]);
            let mut b = Endpoint::new(vec![short(settings("198.51.100.1", "192.0.2.1"))]);
            a.initiate(t0, 0);
            run(&mut a, ip_a, &mut b, ip_b, t0);
            let spis = |e: &Endpoint| e.sas().map(|(_, sa)| (sa.spi_i, sa.spi_r, sa.child())).collect::<Vec<_>>();
            let (before, child) = (spis(&a), spis(&a)[0].2);
            // The timers (80-90% of 100 s) of one side or both.
            let now = t0 + Duration::from_secs(95);
            if a_rekeys {
                a.on_timeout(now)
            }
            if b_rekeys {
                b.on_timeout(now)
            }
            let seen = run(&mut a, ip_a, &mut b, ip_b, now);
            let text = format!("{seen:?}");
            assert!(text.contains("IKE SA rekeyed"), "{text}");
            assert!(
                !seen
                    .iter()
                    .any(|(_, o)| matches!(o, Output::Down(_) | Output::RemoveInbound(_) | Output::InstallOutbound(_))),
                "{text}"
            );
            // Only the new IKE SA is left on each side, with the same child.
            let (after_a, after_b) = (spis(&a), spis(&b));
            assert_eq!((after_a.len(), after_b.len()), (1, 1), "{text}");
            assert_ne!((after_a[0].0, after_a[0].1), (before[0].0, before[0].1));
            assert_eq!((after_a[0].0, after_a[0].1), (after_b[0].0, after_b[0].1));
            assert_eq!(after_a[0].2, child, "the child SA lives on");
            let initiators: Vec<bool> = [&a, &b].iter().map(|e| e.sas().next().unwrap().1.is_initiator()).collect();
            if a_rekeys && b_rekeys {
                assert_eq!(text.matches("simultaneous IKE SA rekey: the peer's and ours crossed").count(), 2, "{text}");
                let a_won = text.contains("simultaneous IKE SA rekey won") && initiators == [true, false];
                let b_won = text.contains("simultaneous IKE SA rekey lost") && initiators == [false, true];
                assert!(a_won ^ b_won, "the winner's new IKE SA stays: {initiators:?} {text}");
                assert_eq!(text.matches("simultaneous IKE SA rekey lost").count(), 1, "{text}");
            } else {
                assert_eq!(initiators, vec![a_rekeys, !a_rekeys], "the rekey's initiator is the new SA's");
            }
            // The new SA's keys work: a delete goes through.
            a.delete(now, 0);
            let seen = run(&mut a, ip_a, &mut b, ip_b, now);
            assert!(format!("{seen:?}").contains("the peer deleted the IKE SA"));
            assert_eq!((a.sas().count(), b.sas().count()), (0, 0));
        }
    }

    #[test]
    fn asks_for_cookies_while_too_many_are_half_open() {
        let now = Instant::now();
        let (ip_a, ip_b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let mut a = Endpoint::new(vec![settings("192.0.2.1", "198.51.100.1")]);
        let mut b = Endpoint::new(vec![settings("198.51.100.1", "192.0.2.1")]);
        b.cookie_threshold = 0;
        a.initiate(now, 0);
        let (_, first) = a.poll().unwrap();
        let Output::Send(d) = first else { panic!() };
        b.receive(now, 500, SocketAddr::new(ip_a, 500), &d.bytes);
        let (_, answer) = b.poll().unwrap();
        let Output::Send(c) = answer else { panic!() };
        let m = message::parse(&c.bytes).unwrap();
        assert!(matches!(&m.payloads[..], [Payload::Notify(n)] if n.kind == notify::COOKIE), "{m:?}");
        assert!(b.sas.is_empty(), "no state for a cookie request");
        // With the cookie, the initiator gets through.
        a.receive(now, 500, SocketAddr::new(ip_b, 500), &c.bytes);
        let seen = run(&mut a, ip_a, &mut b, ip_b, now);
        assert_eq!(seen.iter().filter(|(_, o)| matches!(o, Output::Up { .. })).count(), 2, "{seen:?}");
        // A forged cookie does not.
        let mut forged = message::parse(&d.bytes).unwrap();
        forged.header.spi_i ^= 1;
        forged
            .payloads
            .insert(0, Payload::Notify(Notify { protocol: 0, spi: vec![], kind: notify::COOKIE, data: vec![0; 32] }));
        b.receive(now, 500, SocketAddr::new(ip_a, 500), &forged.emit());
        let (_, again) = b.poll().unwrap();
        assert!(matches!(again, Output::Send(_)));
        assert_eq!(b.sas.len(), 1, "only the one established");
    }
}
