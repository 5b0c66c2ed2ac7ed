//! One IKE SA, sans-IO: fed datagrams and the time, it returns datagrams to
//! send, child SAs to install or remove, and the tunnel's ups and downs
//! (as [`Output`]s), and says when it next needs the clock.
//!
//! Both roles: as initiator it runs IKE_SA_INIT (answering COOKIE and
//! INVALID_KE_PAYLOAD by asking again) and IKE_AUTH with a pre-shared key,
//! which also makes the tunnel's child SA; as responder it answers them.
//! Established, it answers INFORMATIONAL requests (liveness checks and
//! deletes) and sends its own liveness checks when the peer has been quiet
//! for the dead-peer-detection interval. Requests are retransmitted with
//! backoff; a retransmitted request is answered from a cache of the last
//! response, never processed twice.
//!
//! NAT traversal: NAT detection payloads in IKE_SA_INIT; when either side
//! finds a NAT (strongSwan's userspace ESP always claims one), IKE moves
//! to port 4500 and the child SAs are ESP in UDP. Port 4500's non-ESP
//! marker is the driver's business: datagrams here are bare IKE messages.
//!
//! Nothing secret is ever in an output's text: no PSK, no key.

use super::crypto::{child_keymat, Group, IkeKeys, KeyPair, Prf, Secret};
use super::message::{self, exchange, flags, notify, Header, Identity, Message, Notify, Payload, TrafficSelector};
use super::proposal::{self, EspProposal, IkeProposal, PROTO_ESP, PROTO_IKE};
use super::sk::Protection;
use sha1::{Digest, Sha1};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use vpngw_engine::crypto::Suite;
use zeroize::Zeroizing;

/// IKE's ports.
pub const IKE_PORT: u16 = 500;
pub const NATT_PORT: u16 = 4500;

/// AUTH method 2, Shared Key Message Integrity Code.
const AUTH_PSK: u8 = 2;
const NONCE_LEN: usize = 32;
/// First retransmission after this; each next one after twice as long.
const RETRANSMIT_BASE: Duration = Duration::from_secs(1);
/// Retransmissions before a request is given up (about 31 s in all).
const RETRANSMITS: u32 = 5;

/// Identity types (RFC 7296 section 3.5).
pub mod id {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const IPV6_ADDR: u8 = 5;
}

/// An identity as configured: an IPv4 or IPv6 address, or else an FQDN.
pub fn identity(text: &str) -> Identity {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Identity { kind: id::IPV4_ADDR, data: a.octets().to_vec() },
        Ok(IpAddr::V6(a)) => Identity { kind: id::IPV6_ADDR, data: a.octets().to_vec() },
        Err(_) => Identity { kind: id::FQDN, data: text.as_bytes().to_vec() },
    }
}

/// An identity as an operator writes it.
pub fn show_identity(i: &Identity) -> String {
    match (i.kind, i.data.len()) {
        (id::IPV4_ADDR, 4) => IpAddr::from(<[u8; 4]>::try_from(&i.data[..]).expect("4")).to_string(),
        (id::IPV6_ADDR, 16) => IpAddr::from(<[u8; 16]>::try_from(&i.data[..]).expect("16")).to_string(),
        (id::FQDN, _) => String::from_utf8_lossy(&i.data).into_owned(),
        (k, _) => format!("identity type {k} ({} bytes)", i.data.len()),
    }
}

/// What to do when the peer stops answering liveness checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdAction {
    /// Take the tunnel down and wait (for the peer to come back).
    Clear,
    /// Take it down and negotiate again at once.
    Restart,
}

/// Dead peer detection: a liveness check after `interval` of silence;
/// the peer is dead when none is answered within `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpd {
    pub interval: Duration,
    pub timeout: Duration,
    pub action: DpdAction,
}

/// A tunnel's IKE settings.
#[derive(Clone)]
pub struct Settings {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub psk: Secret,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub ike: Vec<IkeProposal>,
    pub esp: Vec<EspProposal>,
    /// What the tunnel carries: our side's ranges and the peer's.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub dpd: Option<Dpd>,
    /// A child SA's life: it is rekeyed after 80-90% of it (jittered, so
    /// the two sides seldom start together), and the engine expires it at
    /// the end.
    pub child_lifetime: Duration,
    /// The IKE SA's life: rekeyed (CREATE_CHILD_SA, new keys and SPIs,
    /// the child SAs kept) after 80-90% of it.
    pub ike_lifetime: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("local_id", &show_identity(&self.local_id))
            .field("remote_id", &show_identity(&self.remote_id))
            .finish_non_exhaustive()
    }
}

/// A datagram to send: from our address's `local_port`, to `remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub local_port: u16,
    pub remote: SocketAddr,
    pub bytes: Vec<u8>,
}

/// One direction of a child SA, for the engine.
#[derive(Clone, PartialEq, Eq)]
pub struct SaKeys {
    pub spi: u32,
    pub suite: Suite,
    /// The engine's keying material for the suite.
    pub keymat: Secret,
    /// ESP in UDP: (our port, the peer's port).
    pub udp: Option<(u16, u16)>,
}

impl std::fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaKeys {{ spi: {:08x}, suite: {}, udp: {:?} }}", self.spi, self.suite, self.udp)
    }
}

/// What an IKE SA asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(Datagram),
    /// Install an inbound SA (before any outbound switches to its peer).
    InstallInbound(SaKeys),
    /// Send with this SA from now on.
    InstallOutbound(SaKeys),
    RemoveInbound(u32),
    /// The child SA carries the tunnel: its negotiated selectors.
    Up {
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    },
    /// The tunnel's IKE SA is gone with its child SAs, or our attempt to
    /// negotiate one failed: why.
    Down(String),
    /// The peer's attempt to negotiate failed (the tunnel is as it was):
    /// why.
    Failed(String),
    /// A line for the log (what happened and why; never a secret).
    Log(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// IKE_SA_INIT or IKE_AUTH under way.
    Connecting,
    Established,
    /// Gone: nothing more will come out.
    Closed,
}

/// The IKE SA's keys, once IKE_SA_INIT is done.
struct Keys {
    proposal: IkeProposal,
    sk_d: Secret,
    sk_pi: Secret,
    sk_pr: Secret,
    send: Protection,
    recv: Protection,
}

struct Child {
    proposal: EspProposal,
    inbound: u32,
    outbound: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    rekey_at: Instant,
}

/// A child the peer's rekey made, waiting for the peer to delete the old.
struct Successor {
    child: Child,
    outbound: SaKeys,
    /// The lower of that exchange's two nonces: when both sides rekey at
    /// once, the child made by the exchange with the lowest nonce is the
    /// redundant one (RFC 7296 section 2.8.1).
    lower_nonce: Vec<u8>,
}

/// What a request of ours was, so its response can be understood.
enum Request {
    Init {
        dh: KeyPair,
        cookie: Option<Vec<u8>>,
    },
    Auth {
        inbound: u32,
    },
    Liveness,
    Delete,
    /// CREATE_CHILD_SA rekeying the child: our new inbound SPI, our nonce,
    /// with PFS our key pair, and the inbound SPI of the child it replaces.
    RekeyChild {
        inbound: u32,
        ni: Vec<u8>,
        dh: Option<KeyPair>,
        old: u32,
    },
    /// Deleting a rekeyed child: our old inbound SPI, removed once the
    /// peer confirms.
    DeleteChild {
        inbound: u32,
    },
    /// CREATE_CHILD_SA rekeying the IKE SA: our new SPI, nonce, key pair.
    RekeyIke {
        spi: u64,
        ni: Vec<u8>,
        dh: KeyPair,
    },
}

struct Pending {
    message_id: u32,
    bytes: Vec<u8>,
    what: Request,
    retransmits: u32,
    next: Instant,
    /// Given up at this time.
    deadline: Instant,
}

/// One IKE SA: see the module documentation.
pub struct IkeSa {
    settings: Settings,
    initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    local_port: u16,
    remote: SocketAddr,
    nat: bool,
    phase: Phase,
    keys: Option<Keys>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// Our IKE_SA_INIT message and the peer's, as sent (AUTH signs them).
    init_ours: Vec<u8>,
    init_theirs: Vec<u8>,
    next_id: u32,
    expect_id: u32,
    pending: Option<Pending>,
    /// The last response we sent, for the request it answered.
    cached: Option<(u32, Vec<u8>)>,
    child: Option<Child>,
    /// Responder of a rekey: the new child and its outbound SA, held until
    /// the peer deletes the old one (make-before-break: the peer sends on
    /// the new SA only after installing its inbound).
    successor: Option<Successor>,
    /// The peer's child from a simultaneous rekey it lost: its inbound
    /// stays until the peer deletes it (the peer may have sent on it).
    redundant: Option<Child>,
    /// When this IKE SA is rekeyed.
    ike_rekey_at: Option<Instant>,
    /// The IKE SAs this one's rekeys made, for the endpoint to take: the
    /// one that replaces it (this one then only finishes its delete) and,
    /// after a simultaneous rekey, the redundant one, which is deleted.
    replacements: Vec<IkeSa>,
    /// The peer's rekey of this IKE SA that crossed ours, and the lower
    /// of its nonces: held until ours is answered (RFC 7296 2.8.2).
    crossed: Option<(Box<IkeSa>, Vec<u8>)>,
    /// Replaced: closes quietly (its tunnel lives on in the replacement),
    /// at the latest at this time.
    retired: Option<Instant>,
    last_heard: Instant,
    out: VecDeque<Output>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source");
    b
}

fn random_vec(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).expect("the OS random source");
    b
}

/// A fresh IKE SPI (never zero).
fn ike_spi() -> u64 {
    loop {
        let s = u64::from_be_bytes(random());
        if s != 0 {
            return s;
        }
    }
}

/// A fresh ESP SPI (1-255 are reserved).
fn esp_spi() -> u32 {
    loop {
        let s = u32::from_be_bytes(random());
        if s > 255 {
            return s;
        }
    }
}

/// NAT detection hash: SHA-1(SPIi | SPIr | IP | port).
fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

fn status(kind: u16, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify { protocol: 0, spi: Vec::new(), kind, data })
}

fn notifies(payloads: &[Payload]) -> impl Iterator<Item = &Notify> {
    payloads.iter().filter_map(|p| match p {
        Payload::Notify(n) => Some(n),
        _ => None,
    })
}

fn find_notify(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    notifies(payloads).find(|n| n.kind == kind)
}

/// The first error notify, if any.
fn error_notify(payloads: &[Payload]) -> Option<&Notify> {
    notifies(payloads).find(|n| n.kind < notify::FIRST_STATUS)
}

/// The intersection of two selectors, if not empty.
pub fn narrow(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if a.start.is_ipv4() != b.start.is_ipv4() {
        return None;
    }
    let protocol = match (a.protocol, b.protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let (start_port, end_port) = (a.start_port.max(b.start_port), a.end_port.min(b.end_port));
    let (start, end) = (a.start.max(b.start), a.end.min(b.end));
    (start_port <= end_port && start <= end).then_some(TrafficSelector { protocol, start_port, end_port, start, end })
}

/// Every non-empty intersection of the peer's selectors with ours.
fn narrow_all(theirs: &[TrafficSelector], ours: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for t in theirs {
        for o in ours {
            if let Some(n) = narrow(t, o) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Is every selector of `inner` inside one of `outer`?
fn within(inner: &[TrafficSelector], outer: &[TrafficSelector]) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| narrow(i, o) == Some(*i)))
}

impl IkeSa {
    fn new(settings: Settings, initiator: bool, now: Instant, local_port: u16, remote: SocketAddr) -> IkeSa {
        IkeSa {
            settings,
            initiator,
            spi_i: 0,
            spi_r: 0,
            local_port,
            remote,
            nat: false,
            phase: Phase::Connecting,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_ours: Vec::new(),
            init_theirs: Vec::new(),
            next_id: 0,
            expect_id: 0,
            pending: None,
            cached: None,
            child: None,
            successor: None,
            redundant: None,
            ike_rekey_at: None,
            replacements: Vec::new(),
            crossed: None,
            retired: None,
            last_heard: now,
            out: VecDeque::new(),
        }
    }

    /// Starts negotiating as initiator: sends IKE_SA_INIT.
    pub fn initiate(settings: Settings, now: Instant) -> IkeSa {
        let remote = SocketAddr::new(settings.remote, IKE_PORT);
        let mut sa = IkeSa::new(settings, true, now, IKE_PORT, remote);
        sa.spi_i = ike_spi();
        sa.ni = random_vec(NONCE_LEN);
        let group = sa.settings.ike[0].group;
        match KeyPair::generate(group) {
            Ok(dh) => sa.send_init(now, dh, None),
            Err(e) => sa.close(format!("cannot make a Diffie-Hellman key: {e}")),
        }
        sa
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Our SPI of this IKE SA (how the driver finds it).
    pub fn our_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// The negotiated IKE proposal, once known.
    pub fn proposal(&self) -> Option<IkeProposal> {
        self.keys.as_ref().map(|k| k.proposal)
    }

    /// The child SA: its proposal and (inbound, outbound) SPIs.
    pub fn child(&self) -> Option<(EspProposal, u32, u32)> {
        self.child.as_ref().map(|c| (c.proposal, c.inbound, c.outbound))
    }

    /// The child SA's selectors: (ours, the peer's).
    pub fn selectors(&self) -> Option<(&[TrafficSelector], &[TrafficSelector])> {
        self.child.as_ref().map(|c| (&c.local_ts[..], &c.remote_ts[..]))
    }

    pub fn nat(&self) -> bool {
        self.nat
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the SA next needs [`Self::on_timeout`].
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        if let Some(p) = &self.pending {
            return Some(p.next.min(p.deadline));
        }
        if self.phase != Phase::Established {
            return None;
        }
        if self.retired.is_some() {
            return self.retired;
        }
        let dpd = self.settings.dpd.map(|d| self.last_heard + d.interval);
        let rekey = self.child.as_ref().map(|c| c.rekey_at);
        dpd.into_iter().chain(rekey).chain(self.ike_rekey_at).min()
    }

    /// Retransmits, gives up, or checks the peer's liveness, as due.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(p) = &mut self.pending {
            if now >= p.deadline {
                let what = match p.what {
                    Request::Liveness => "liveness check",
                    Request::Init { .. } => "IKE_SA_INIT request",
                    Request::Auth { .. } => "IKE_AUTH request",
                    Request::Delete => "delete",
                    Request::RekeyChild { .. } => "child SA rekey",
                    Request::DeleteChild { .. } => "delete of the rekeyed child SA",
                    Request::RekeyIke { .. } => "IKE SA rekey",
                };
                let why = format!("peer {} did not answer our {what} ({} retransmissions)", self.remote, p.retransmits);
                if matches!(p.what, Request::Delete) {
                    self.pending = None;
                    self.close("deleted (the peer did not confirm)".into());
                } else {
                    self.close(why);
                }
                return;
            }
            if now >= p.next {
                p.retransmits += 1;
                p.next = now + RETRANSMIT_BASE * (1 << p.retransmits.min(RETRANSMITS));
                let d = Datagram { local_port: self.local_port, remote: self.remote, bytes: p.bytes.clone() };
                self.out.push_back(Output::Send(d));
            }
            return;
        }
        if self.phase != Phase::Established {
            return;
        }
        if let Some(t) = self.retired {
            if now >= t {
                self.close("replaced by its rekeyed IKE SA".into());
            }
            return;
        }
        if self.child.as_ref().is_some_and(|c| now >= c.rekey_at) {
            return self.rekey_child(now);
        }
        if self.ike_rekey_at.is_some_and(|t| now >= t) {
            return self.rekey_ike(now);
        }
        if let Some(d) = self.settings.dpd {
            if now >= self.last_heard + d.interval {
                self.request(now, exchange::INFORMATIONAL, Vec::new(), Request::Liveness, Some(d.timeout));
            }
        }
    }

    /// Rekeys the child SA at the next timeout.
    pub fn rekey_child_soon(&mut self, now: Instant) {
        if let Some(c) = &mut self.child {
            c.rekey_at = c.rekey_at.min(now);
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// When the child SA or this IKE SA is rekeyed next.
    pub fn next_rekey(&self) -> Option<Instant> {
        self.child.as_ref().map(|c| c.rekey_at).into_iter().chain(self.ike_rekey_at).min()
    }

    /// A newer IKE SA carries the tunnel now: this one's child SA is
    /// removed and it is deleted with the peer, without taking the tunnel
    /// down.
    pub fn supersede(&mut self, now: Instant) {
        if self.phase != Phase::Established || self.retired.is_some() {
            return;
        }
        self.log("superseded by a newer IKE SA with the peer: deleting it".into());
        self.delete(now);
        self.retired = Some(now + Duration::from_secs(10));
    }

    /// Deletes the IKE SA (and its child SAs) with the peer.
    pub fn delete(&mut self, now: Instant) {
        if self.phase != Phase::Established {
            return self.close("deleted".into());
        }
        let del = Payload::Delete { protocol: PROTO_IKE, spi_size: 0, spis: Vec::new() };
        self.pending = None;
        self.request(now, exchange::INFORMATIONAL, vec![del], Request::Delete, Some(Duration::from_secs(5)));
        self.remove_child();
    }

    fn log(&mut self, text: String) {
        let who = if self.initiator { "initiator" } else { "responder" };
        self.out.push_back(Output::Log(format!(
            "ike {who} {:016x}_{:016x} peer {}: {text}",
            self.spi_i, self.spi_r, self.remote
        )));
    }

    fn close(&mut self, why: String) {
        if self.phase == Phase::Closed {
            return;
        }
        // Down concerns the tunnel: an SA that carried it, or our own
        // attempt to bring it up. A responder that never got that far
        // (a refused or hostile IKE_SA_INIT, a failed IKE_AUTH) says why
        // in the log only, so it cannot take an established tunnel down.
        let concerns_tunnel = self.phase == Phase::Established || self.initiator;
        self.phase = Phase::Closed;
        self.pending = None;
        if self.retired.is_some() {
            return self.log(format!("closed: {why}"));
        }
        if !concerns_tunnel {
            self.log(format!("closed: {why}"));
            return self.out.push_back(Output::Failed(why));
        }
        self.remove_child();
        self.log(format!("closed: {why}"));
        self.out.push_back(Output::Down(why));
    }

    fn remove_child(&mut self) {
        if let Some(c) = self.child.take() {
            self.out.push_back(Output::RemoveInbound(c.inbound));
        }
    }

    fn header(&self, exchange: u8, message_id: u32, response: bool) -> Header {
        let mut f = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next: 0,
            version: message::VERSION,
            exchange,
            flags: f,
            message_id,
            length: 0,
        }
    }

    fn seal(&self, header: &Header, inner: &[Payload]) -> Vec<u8> {
        let k = self.keys.as_ref().expect("keys before protected messages");
        let iv = random_vec(k.proposal.encryption.iv_len());
        k.send.seal(header, inner, &iv)
    }

    /// Sends a protected request and remembers it for retransmission.
    fn request(&mut self, now: Instant, exchange: u8, inner: Vec<Payload>, what: Request, limit: Option<Duration>) {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = self.seal(&self.header(exchange, id, false), &inner);
        self.send_request(now, id, bytes, what, limit);
    }

    fn send_request(&mut self, now: Instant, message_id: u32, bytes: Vec<u8>, what: Request, limit: Option<Duration>) {
        let all = RETRANSMIT_BASE * ((1 << (RETRANSMITS + 1)) - 1);
        let deadline = now + limit.map_or(all, |l| l.min(all));
        self.out.push_back(Output::Send(Datagram {
            local_port: self.local_port,
            remote: self.remote,
            bytes: bytes.clone(),
        }));
        self.pending = Some(Pending { message_id, bytes, what, retransmits: 0, next: now + RETRANSMIT_BASE, deadline });
    }

    /// Sends a response and caches it for the request's retransmissions.
    fn respond(&mut self, message_id: u32, bytes: Vec<u8>) {
        self.out.push_back(Output::Send(Datagram {
            local_port: self.local_port,
            remote: self.remote,
            bytes: bytes.clone(),
        }));
        self.cached = Some((message_id, bytes));
        self.expect_id = message_id + 1;
    }

    // ---- IKE_SA_INIT, initiator -------------------------------------

    fn send_init(&mut self, now: Instant, dh: KeyPair, cookie: Option<Vec<u8>>) {
        let local = SocketAddr::new(self.settings.local, self.local_port);
        let mut payloads = Vec::new();
        if let Some(c) = &cookie {
            payloads.push(status(notify::COOKIE, c.clone()));
        }
        // The proposal whose group the KE is of goes first.
        let mut offer = self.settings.ike.clone();
        offer.sort_by_key(|p| p.group != dh.group());
        payloads.push(Payload::Sa(proposal::ike_offer(&offer, &[])));
        payloads.push(Payload::Ke { group: dh.group().id(), data: dh.public().to_vec() });
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.push(status(notify::NAT_DETECTION_SOURCE_IP, nat_hash(self.spi_i, 0, local)));
        payloads.push(status(notify::NAT_DETECTION_DESTINATION_IP, nat_hash(self.spi_i, 0, self.remote)));
        let msg = Message { header: self.header(exchange::IKE_SA_INIT, 0, false), payloads };
        let bytes = msg.emit();
        self.init_ours = bytes.clone();
        self.next_id = 1;
        self.send_request(now, 0, bytes, Request::Init { dh, cookie }, None);
    }

    fn init_response(&mut self, now: Instant, msg: &Message, bytes: &[u8], dh: KeyPair, cookie: Option<Vec<u8>>) {
        let p = &msg.payloads;
        if let Some(c) = find_notify(p, notify::COOKIE) {
            if cookie.is_some() && cookie.as_deref() == Some(&c.data[..]) {
                return self.close("the responder asked for the same cookie again".into());
            }
            self.log("the responder asks for a cookie; asking again with it".into());
            return self.send_init(now, dh, Some(c.data.clone()));
        }
        if let Some(n) = find_notify(p, notify::INVALID_KE_PAYLOAD) {
            let wanted = (n.data.len() == 2).then(|| u16::from_be_bytes([n.data[0], n.data[1]]));
            let group = wanted.and_then(Group::from_id).filter(|g| self.settings.ike.iter().any(|i| i.group == *g));
            return match group {
                Some(g) if g != dh.group() => {
                    self.log(format!("the responder wants Diffie-Hellman group {}; asking again with it", g.id()));
                    match KeyPair::generate(g) {
                        Ok(new) => self.send_init(now, new, cookie),
                        Err(e) => self.close(format!("cannot make a Diffie-Hellman key: {e}")),
                    }
                }
                _ => self.close(format!(
                    "INVALID_KE_PAYLOAD: the responder wants group {}, which we do not offer",
                    wanted.map_or("?".into(), |g| g.to_string())
                )),
            };
        }
        if let Some(n) = error_notify(p) {
            let name = notify::name(n.kind);
            let why = if n.kind == notify::NO_PROPOSAL_CHOSEN {
                let ours: Vec<String> = self.settings.ike.iter().map(|p| p.to_string()).collect();
                format!("NO_PROPOSAL_CHOSEN: the responder takes none of our IKE proposals ({})", ours.join(", "))
            } else {
                format!("the responder refused IKE_SA_INIT with {name}")
            };
            return self.close(why);
        }
        let sa = p.iter().find_map(|x| if let Payload::Sa(s) = x { Some(s) } else { None });
        let ke = p.iter().find_map(|x| if let Payload::Ke { group, data } = x { Some((*group, data)) } else { None });
        let nonce = p.iter().find_map(|x| if let Payload::Nonce(n) = x { Some(n) } else { None });
        let (Some(sa), Some((group, ke)), Some(nonce)) = (sa, ke, nonce) else {
            return self.close("IKE_SA_INIT response without SA, KE or nonce".into());
        };
        // The answer must be one proposal, one we offered.
        let chosen = match (sa.len(), proposal::choose_ike(&self.settings.ike, sa)) {
            (1, Ok((c, _))) if c.group.id() == group && group == dh.group().id() => c,
            _ => {
                return self.close(format!(
                    "the responder chose {}, not one of our proposals with our KE's group",
                    proposal::describe(sa)
                ))
            }
        };
        if !(16..=256).contains(&nonce.len()) || msg.header.spi_r == 0 {
            return self.close("IKE_SA_INIT response with a bad nonce or no SPI".into());
        }
        let shared = match dh.shared(ke) {
            Ok(s) => s,
            Err(e) => return self.close(format!("the responder's KE payload is unusable: {e}")),
        };
        self.spi_r = msg.header.spi_r;
        self.nr = nonce.clone();
        self.init_theirs = bytes.to_vec();
        self.check_nat(p, msg.header.spi_i, msg.header.spi_r, self.remote);
        if let Err(e) = self.make_keys(chosen, &shared) {
            return self.close(e);
        }
        if self.nat {
            self.local_port = NATT_PORT;
            self.remote.set_port(NATT_PORT);
        }
        self.log(format!(
            "IKE_SA_INIT done: {chosen}{}",
            if self.nat { ", NAT detected: moving to port 4500" } else { "" }
        ));
        self.send_auth(now);
    }

    /// Compares the peer's NAT detection hashes with what we see: the
    /// source's against the address it came from, the destination's
    /// against ours.
    fn check_nat(&mut self, p: &[Payload], spi_i: u64, spi_r: u64, from: SocketAddr) {
        let ours = SocketAddr::new(self.settings.local, self.local_port);
        let src: Vec<_> = notifies(p).filter(|n| n.kind == notify::NAT_DETECTION_SOURCE_IP).collect();
        let dst = find_notify(p, notify::NAT_DETECTION_DESTINATION_IP);
        if src.is_empty() || dst.is_none() {
            return;
        }
        let peer_behind_nat = !src.iter().any(|n| n.data == nat_hash(spi_i, spi_r, from));
        let we_behind_nat = dst.is_some_and(|n| n.data != nat_hash(spi_i, spi_r, ours));
        self.nat = peer_behind_nat || we_behind_nat;
    }

    fn make_keys(&mut self, proposal: IkeProposal, shared: &[u8]) -> Result<(), String> {
        let e = proposal.encryption;
        let (ni, nr) = (&self.ni, &self.nr);
        let k = IkeKeys::derive(proposal.prf, shared, ni, nr, self.spi_i, self.spi_r, e.integ_len(), e.encr_len());
        self.set_keys(proposal, k)
    }

    fn set_keys(&mut self, proposal: IkeProposal, k: IkeKeys) -> Result<(), String> {
        let e = proposal.encryption;
        let (send, recv) = if self.initiator {
            ((&k.sk_ei, &k.sk_ai), (&k.sk_er, &k.sk_ar))
        } else {
            ((&k.sk_er, &k.sk_ar), (&k.sk_ei, &k.sk_ai))
        };
        let send = Protection::new(e, send.0, send.1).map_err(|e| e.to_string())?;
        let recv = Protection::new(e, recv.0, recv.1).map_err(|e| e.to_string())?;
        self.keys =
            Some(Keys { proposal, sk_d: k.sk_d.clone(), sk_pi: k.sk_pi.clone(), sk_pr: k.sk_pr.clone(), send, recv });
        Ok(())
    }

    /// The AUTH value a side computes: prf(prf(PSK, "Key Pad for IKEv2"),
    /// its IKE_SA_INIT message | the other's nonce | prf(SK_p, its ID)).
    fn auth(&self, by_initiator: bool, who: &Identity) -> Secret {
        let k = self.keys.as_ref().expect("keys");
        let prf: Prf = k.proposal.prf;
        let (msg, nonce, sk_p) = match (by_initiator, self.initiator) {
            (true, true) => (&self.init_ours, &self.nr, &k.sk_pi),
            (true, false) => (&self.init_theirs, &self.nr, &k.sk_pi),
            (false, true) => (&self.init_theirs, &self.ni, &k.sk_pr),
            (false, false) => (&self.init_ours, &self.ni, &k.sk_pr),
        };
        let id_body = [&[who.kind, 0, 0, 0][..], &who.data].concat();
        let maced_id = prf.compute(sk_p, &[&id_body]);
        let pad = prf.compute(&self.settings.psk, &[b"Key Pad for IKEv2"]);
        prf.compute(&pad, &[msg, nonce, &maced_id])
    }

    fn verify_auth(&self, by_initiator: bool, who: &Identity, payloads: &[Payload]) -> Result<(), String> {
        let got =
            payloads
                .iter()
                .find_map(|p| if let Payload::Auth { method, data } = p { Some((*method, data)) } else { None });
        let Some((method, data)) = got else { return Err("no AUTH payload".into()) };
        if method != AUTH_PSK {
            return Err(format!("the peer authenticates with method {method}, not a pre-shared key (2)"));
        }
        let want = self.auth(by_initiator, who);
        if bool::from(want.as_slice().ct_eq(data)) {
            Ok(())
        } else {
            Err("its AUTH payload does not verify: the pre-shared keys differ".into())
        }
    }

    fn check_identity(&self, got: Option<&Identity>) -> Result<Identity, String> {
        let want = &self.settings.remote_id;
        match got {
            Some(i) if i == want => Ok(i.clone()),
            Some(i) => Err(format!("the peer is {}, not the configured {}", show_identity(i), show_identity(want))),
            None => Err("no identity payload".into()),
        }
    }

    // ---- IKE_AUTH, initiator ----------------------------------------

    fn send_auth(&mut self, now: Instant) {
        let inbound = esp_spi();
        let me = self.settings.local_id.clone();
        let auth = self.auth(true, &me);
        let payloads = vec![
            Payload::IdI(me),
            Payload::IdR(self.settings.remote_id.clone()),
            Payload::Auth { method: AUTH_PSK, data: auth.to_vec() },
            Payload::Sa(proposal::esp_offer(&self.settings.esp, inbound, false)),
            Payload::TsI(self.settings.local_ts.clone()),
            Payload::TsR(self.settings.remote_ts.clone()),
        ];
        self.request(now, exchange::IKE_AUTH, payloads, Request::Auth { inbound }, None);
    }

    fn auth_response(&mut self, now: Instant, payloads: &[Payload], inbound: u32) {
        if let Some(n) = find_notify(payloads, notify::AUTHENTICATION_FAILED) {
            let _ = n;
            return self.close(
                "AUTHENTICATION_FAILED: the responder refused our authentication (check the pre-shared key and our identity)"
                    .into(),
            );
        }
        let idr = payloads.iter().find_map(|p| if let Payload::IdR(i) = p { Some(i) } else { None });
        let checked = self.check_identity(idr).and_then(|i| self.verify_auth(false, &i, payloads).map(|_| i));
        if let Err(e) = checked {
            return self.close(format!("authentication of the responder failed: {e}"));
        }
        self.phase = Phase::Established;
        self.ike_rekey_at = Some(self.rekey_time_of(self.settings.ike_lifetime, now));
        self.log(format!("IKE SA established with {}", show_identity(&self.settings.remote_id)));
        if let Some(n) = error_notify(payloads) {
            let why = match n.kind {
                notify::NO_PROPOSAL_CHOSEN => {
                    let ours: Vec<String> = self.settings.esp.iter().map(|p| p.to_string()).collect();
                    format!("NO_PROPOSAL_CHOSEN: the responder takes none of our ESP proposals ({})", ours.join(", "))
                }
                k => format!("{} from the responder", notify::name(k)),
            };
            self.log(format!("no child SA: {why}"));
            return self.delete_after_child_failure(why);
        }
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let tsi = payloads.iter().find_map(|p| if let Payload::TsI(t) = p { Some(t) } else { None });
        let tsr = payloads.iter().find_map(|p| if let Payload::TsR(t) = p { Some(t) } else { None });
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return self.delete_after_child_failure("IKE_AUTH response without SA or selectors".into());
        };
        let chosen = match proposal::choose_esp(&self.settings.esp, sa, false) {
            Ok((c, spi, _)) if sa.len() == 1 => (c, spi),
            _ => {
                return self.delete_after_child_failure(format!(
                    "the responder chose {}, which we did not offer",
                    proposal::describe(sa)
                ))
            }
        };
        if !within(tsi, &self.settings.local_ts)
            || !within(tsr, &self.settings.remote_ts)
            || tsi.is_empty()
            || tsr.is_empty()
        {
            return self.delete_after_child_failure("the responder's selectors are not within ours".into());
        }
        self.install_child(now, chosen.0, inbound, chosen.1, tsi.clone(), tsr.clone());
    }

    /// The IKE SA is up but the tunnel has no child SA: vpngw negotiates
    /// one child per IKE SA, so it deletes the IKE SA and says why.
    fn delete_after_child_failure(&mut self, why: String) {
        self.out.push_back(Output::Log(format!("tunnel not up: {why}")));
        self.pending = None;
        let del = Payload::Delete { protocol: PROTO_IKE, spi_size: 0, spis: Vec::new() };
        let id = self.next_id;
        self.next_id += 1;
        let bytes = self.seal(&self.header(exchange::INFORMATIONAL, id, false), &[del]);
        self.out.push_back(Output::Send(Datagram { local_port: self.local_port, remote: self.remote, bytes }));
        self.close(why);
    }

    /// A child SA's two directions from KEYMAT = prf+(SK_d, [g^ir |] Ni |
    /// Nr): the exchange's initiator sends with the first half.
    fn child_keys(
        &self,
        p: EspProposal,
        shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        we_initiated: bool,
        (inbound, outbound): (u32, u32),
    ) -> (SaKeys, SaKeys) {
        let k = self.keys.as_ref().expect("keys");
        let len = p.suite.keymat_len();
        let keymat = child_keymat(k.proposal.prf, &k.sk_d, shared, ni, nr, 2 * len);
        let (i_to_r, r_to_i) = keymat.split_at(len);
        let (out_key, in_key) = if we_initiated { (i_to_r, r_to_i) } else { (r_to_i, i_to_r) };
        let udp = self.nat.then_some((NATT_PORT, self.remote.port()));
        let sa = |spi, key: &[u8]| SaKeys { spi, suite: p.suite, keymat: Zeroizing::new(key.to_vec()), udp };
        (sa(inbound, in_key), sa(outbound, out_key))
    }

    /// When a child made now is rekeyed: after 80-90% of its life.
    fn rekey_time(&self, now: Instant) -> Instant {
        self.rekey_time_of(self.settings.child_lifetime, now)
    }

    /// After 80-90% of `life`, jittered so both sides seldom start at once.
    fn rekey_time_of(&self, life: Duration, now: Instant) -> Instant {
        let jitter = u32::from_be_bytes(random()) as f64 / u32::MAX as f64;
        now + life.mul_f64(0.9 - 0.1 * jitter)
    }

    /// Installs the first child SA: the inbound first, then the outbound.
    fn install_child(
        &mut self,
        now: Instant,
        p: EspProposal,
        inbound: u32,
        outbound: u32,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) {
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        let (in_sa, out_sa) = self.child_keys(p, None, &ni, &nr, self.initiator, (inbound, outbound));
        let udp = in_sa.udp;
        self.out.push_back(Output::InstallInbound(in_sa));
        self.out.push_back(Output::InstallOutbound(out_sa));
        self.out.push_back(Output::Up { local_ts: local_ts.clone(), remote_ts: remote_ts.clone() });
        self.log(format!(
            "child SA {p} up: in {inbound:08x}, out {outbound:08x}{}",
            if udp.is_some() { ", ESP in UDP" } else { "" }
        ));
        let rekey_at = self.rekey_time(now);
        self.child = Some(Child { proposal: p, inbound, outbound, local_ts, remote_ts, rekey_at });
    }

    // ---- CREATE_CHILD_SA: rekeying the child ----------------------------

    /// Asks the peer for the child's successor (with PFS when the proposal
    /// has a group).
    fn rekey_child(&mut self, now: Instant) {
        if self.successor.is_some() {
            // The peer's rekey is finishing; the successor brings its own
            // rekey time.
            if let Some(c) = &mut self.child {
                c.rekey_at = now + Duration::from_secs(10);
            }
            return;
        }
        let Some(c) = &self.child else { return };
        let (old_in, local_ts, remote_ts) = (c.inbound, c.local_ts.clone(), c.remote_ts.clone());
        let inbound = esp_spi();
        let ni = random_vec(NONCE_LEN);
        // Our proposals, the current one first.
        let mut offer = self.settings.esp.clone();
        offer.sort_by_key(|p| Some(*p) != self.child.as_ref().map(|c| c.proposal));
        let pfs = offer[0].pfs;
        let dh = match pfs.map(KeyPair::generate).transpose() {
            Ok(dh) => dh,
            Err(e) => return self.close(format!("cannot make a Diffie-Hellman key: {e}")),
        };
        let mut payloads = vec![
            Payload::Notify(Notify {
                protocol: PROTO_ESP,
                spi: old_in.to_be_bytes().to_vec(),
                kind: notify::REKEY_SA,
                data: Vec::new(),
            }),
            Payload::Sa(proposal::esp_offer(&offer, inbound, true)),
            Payload::Nonce(ni.clone()),
        ];
        if let Some(k) = &dh {
            payloads.push(Payload::Ke { group: k.group().id(), data: k.public().to_vec() });
        }
        payloads.extend([Payload::TsI(local_ts), Payload::TsR(remote_ts)]);
        self.log(format!("rekeying child SA {old_in:08x}"));
        self.request(
            now,
            exchange::CREATE_CHILD_SA,
            payloads,
            Request::RekeyChild { inbound, ni, dh, old: old_in },
            None,
        );
    }

    /// The peer's answer to our rekey: install the successor both ways,
    /// then delete the old child (its inbound goes when the peer confirms).
    /// If the peer rekeyed the same child meanwhile (a collision), the
    /// child made with the lowest of the four nonces is redundant and its
    /// maker deletes it (RFC 7296 section 2.8.1, as strongSwan does).
    fn rekey_response(
        &mut self,
        now: Instant,
        payloads: &[Payload],
        inbound: u32,
        ni: Vec<u8>,
        dh: Option<KeyPair>,
        old: u32,
    ) {
        // The peer's own rekey of this child finished first: ours is moot.
        let overtaken = self.child.as_ref().is_none_or(|c| c.inbound != old);
        let retry = |sa: &mut IkeSa, why: String| {
            if overtaken {
                return sa.log(format!("child rekey refused ({why}); the peer's own rekey replaced the child"));
            }
            sa.log(format!("child rekey refused: {why}; trying again in 10 s"));
            if let Some(c) = &mut sa.child {
                c.rekey_at = now + Duration::from_secs(10);
            }
        };
        if let Some(n) = error_notify(payloads) {
            return retry(self, notify::name(n.kind));
        }
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let nr = payloads.iter().find_map(|p| if let Payload::Nonce(n) = p { Some(n.clone()) } else { None });
        let ke =
            payloads.iter().find_map(|p| if let Payload::Ke { group, data } = p { Some((*group, data)) } else { None });
        let (Some(sa), Some(nr)) = (sa, nr) else { return retry(self, "no SA or nonce in the answer".into()) };
        let chosen = match proposal::choose_esp(&self.settings.esp, sa, true) {
            Ok((c, spi, _)) if sa.len() == 1 => (c, spi),
            _ => return retry(self, format!("the peer chose {}, which we did not offer", proposal::describe(sa))),
        };
        let shared = match (&dh, ke, chosen.0.pfs) {
            (Some(k), Some((g, data)), Some(pfs)) if g == pfs.id() && k.group() == pfs => match k.shared(data) {
                Ok(s) => Some(s),
                Err(e) => return retry(self, format!("the peer's KE payload is unusable: {e}")),
            },
            (_, None, None) => None,
            _ => return retry(self, "the KE payload does not match the chosen PFS group".into()),
        };
        let delete_ours = |sa: &mut IkeSa, why: String| {
            sa.log(format!("{why}: deleting our redundant child SA {inbound:08x}"));
            let del = Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis: vec![inbound.to_be_bytes().to_vec()] };
            sa.request(now, exchange::INFORMATIONAL, vec![del], Request::Liveness, None);
        };
        if overtaken {
            return delete_ours(self, "the peer's rekey of the same child finished first".into());
        }
        if let Some(theirs) = &self.successor {
            let ours = lower(&ni, &nr);
            if ours < theirs.lower_nonce.as_slice() {
                // Lost: the peer's child goes on; it deletes the old one.
                return delete_ours(self, "simultaneous rekey lost (our exchange has the lowest nonce)".into());
            }
            let theirs = self.successor.take().expect("checked above");
            self.log(format!(
                "simultaneous rekey won: the peer deletes its redundant child SA {:08x}",
                theirs.child.inbound
            ));
            if let Some(r) = self.redundant.replace(theirs.child) {
                self.out.push_back(Output::RemoveInbound(r.inbound));
            }
        }
        let Some(old) = self.child.take() else { return };
        let (in_sa, out_sa) =
            self.child_keys(chosen.0, shared.as_deref().map(|s| &s[..]), &ni, &nr, true, (inbound, chosen.1));
        self.out.push_back(Output::InstallInbound(in_sa));
        self.out.push_back(Output::InstallOutbound(out_sa));
        self.log(format!(
            "child SA rekeyed: in {inbound:08x}, out {:08x} (was in {:08x}, out {:08x})",
            chosen.1, old.inbound, old.outbound
        ));
        let rekey_at = self.rekey_time(now);
        self.child = Some(Child { proposal: chosen.0, inbound, outbound: chosen.1, rekey_at, ..old });
        let del = Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis: vec![old.inbound.to_be_bytes().to_vec()] };
        self.request(now, exchange::INFORMATIONAL, vec![del], Request::DeleteChild { inbound: old.inbound }, None);
    }

    /// The peer rekeys the child: install the successor's inbound now, its
    /// outbound when the peer deletes the old child.
    fn rekey_request(&mut self, now: Instant, payloads: &[Payload], id: u32) {
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        if sa.is_some_and(|s| s.iter().any(|p| p.protocol == PROTO_IKE)) {
            return self.rekey_ike_request(now, payloads, id);
        }
        let refuse = |sa: &mut IkeSa, kind: u16, data: Vec<u8>, why: String| {
            let bytes = sa.seal(&sa.header(exchange::CREATE_CHILD_SA, id, true), &[status(kind, data)]);
            sa.respond(id, bytes);
            sa.log(format!("refused a CREATE_CHILD_SA request: {why}"));
        };
        let rekeys = find_notify(payloads, notify::REKEY_SA).map(|n| n.spi.clone());
        let Some(c) = &self.child else { return refuse(self, notify::NO_ADDITIONAL_SAS, vec![], "no child SA".into()) };
        let Some(spi) = rekeys else {
            return refuse(self, notify::NO_ADDITIONAL_SAS, vec![], "one child SA per tunnel; not a rekey".into());
        };
        if spi != c.outbound.to_be_bytes() && spi != c.inbound.to_be_bytes() {
            return refuse(self, notify::CHILD_SA_NOT_FOUND, vec![], "a rekey of no child of ours".into());
        }
        if self.successor.is_some() {
            return refuse(self, notify::TEMPORARY_FAILURE, vec![], "a rekey is already under way".into());
        }
        let (local_ts, remote_ts, old_in) = (c.local_ts.clone(), c.remote_ts.clone(), c.inbound);
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let ni = payloads.iter().find_map(|p| if let Payload::Nonce(n) = p { Some(n.clone()) } else { None });
        let ke =
            payloads.iter().find_map(|p| if let Payload::Ke { group, data } = p { Some((*group, data)) } else { None });
        let (Some(sa), Some(ni)) = (sa, ni) else {
            return refuse(self, notify::INVALID_SYNTAX, vec![], "no SA or nonce".into());
        };
        let (p, outbound, mut answer) = match proposal::choose_esp(&self.settings.esp, sa, true) {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    self,
                    notify::NO_PROPOSAL_CHOSEN,
                    vec![],
                    format!("NO_PROPOSAL_CHOSEN for the rekey: {e}"),
                )
            }
        };
        let (shared, ke_r) = match (p.pfs, ke) {
            (None, _) => (None, None),
            (Some(g), Some((group, data))) if group == g.id() => {
                match KeyPair::generate(g)
                    .map_err(|e| e.to_string())
                    .and_then(|k| k.shared(data).map(|s| (s, k)).map_err(|e| e.to_string()))
                {
                    Ok((s, k)) => (Some(s), Some(k)),
                    Err(e) => {
                        return refuse(self, notify::INVALID_SYNTAX, vec![], format!("the KE payload is unusable: {e}"))
                    }
                }
            }
            (Some(g), _) => {
                return refuse(
                    self,
                    notify::INVALID_KE_PAYLOAD,
                    g.id().to_be_bytes().to_vec(),
                    format!("PFS wants group {}", g.id()),
                )
            }
        };
        let inbound = esp_spi();
        let nr = random_vec(NONCE_LEN);
        answer.spi = inbound.to_be_bytes().to_vec();
        let mut out = vec![Payload::Sa(vec![answer]), Payload::Nonce(nr.clone())];
        if let Some(k) = &ke_r {
            out.push(Payload::Ke { group: k.group().id(), data: k.public().to_vec() });
        }
        out.extend([Payload::TsI(remote_ts.clone()), Payload::TsR(local_ts.clone())]);
        let bytes = self.seal(&self.header(exchange::CREATE_CHILD_SA, id, true), &out);
        self.respond(id, bytes);
        let (in_sa, out_sa) =
            self.child_keys(p, shared.as_deref().map(|s| &s[..]), &ni, &nr, false, (inbound, outbound));
        self.out.push_back(Output::InstallInbound(in_sa));
        self.log(format!("the peer rekeys child SA {old_in:08x}: new in {inbound:08x} installed, out {outbound:08x} when the old is deleted"));
        if matches!(&self.pending, Some(Pending { what: Request::RekeyChild { .. }, .. })) {
            // Both sides rekey at once: both exchanges complete, and the
            // nonces decide which child stays (see `rekey_response`).
            self.log("simultaneous rekey: the peer's and ours crossed; the lowest nonce decides".into());
        }
        let rekey_at = self.rekey_time(now);
        let child = Child { proposal: p, inbound, outbound, local_ts, remote_ts, rekey_at };
        self.successor = Some(Successor { child, outbound: out_sa, lower_nonce: lower(&ni, &nr).to_vec() });
    }

    // ---- CREATE_CHILD_SA: rekeying the IKE SA ---------------------------

    fn rekey_ike(&mut self, now: Instant) {
        let Some(current) = self.proposal() else { return };
        let spi = ike_spi();
        let ni = random_vec(NONCE_LEN);
        let dh = match KeyPair::generate(current.group) {
            Ok(k) => k,
            Err(e) => return self.close(format!("cannot make a Diffie-Hellman key: {e}")),
        };
        let mut offer = self.settings.ike.clone();
        offer.sort_by_key(|p| *p != current);
        let payloads = vec![
            Payload::Sa(proposal::ike_offer(&offer, &spi.to_be_bytes())),
            Payload::Nonce(ni.clone()),
            Payload::Ke { group: dh.group().id(), data: dh.public().to_vec() },
        ];
        self.log("rekeying the IKE SA".into());
        self.request(now, exchange::CREATE_CHILD_SA, payloads, Request::RekeyIke { spi, ni, dh }, None);
    }

    /// The peer's answer to our IKE SA rekey. If the peer's own rekey
    /// crossed ours, the new IKE SA made with the lowest of the four
    /// nonces is redundant: its maker deletes it, the other takes the
    /// child SAs, and its maker deletes the old one (RFC 7296 2.8.2).
    fn rekey_ike_response(&mut self, now: Instant, payloads: &[Payload], spi_i: u64, ni: Vec<u8>, dh: KeyPair) {
        let retry = |sa: &mut IkeSa, why: String| {
            if let Some((theirs, _)) = sa.crossed.take() {
                sa.log(format!("IKE SA rekey refused ({why}); the peer's crossing rekey goes on"));
                return sa.hand_over(now, *theirs);
            }
            sa.log(format!("IKE SA rekey refused: {why}; trying again in 10 s"));
            sa.ike_rekey_at = Some(now + Duration::from_secs(10));
        };
        if let Some(n) = error_notify(payloads) {
            return retry(self, notify::name(n.kind));
        }
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let nr = payloads.iter().find_map(|p| if let Payload::Nonce(n) = p { Some(n.clone()) } else { None });
        let ke =
            payloads.iter().find_map(|p| if let Payload::Ke { group, data } = p { Some((*group, data)) } else { None });
        let (Some(sa), Some(nr), Some((group, ke))) = (sa, nr, ke) else {
            return retry(self, "no SA, nonce or KE in the answer".into());
        };
        let chosen = match proposal::choose_ike(&self.settings.ike, sa) {
            Ok((c, p)) if sa.len() == 1 && p.spi.len() == 8 && c.group == dh.group() && group == c.group.id() => {
                (c, u64::from_be_bytes(p.spi[..].try_into().expect("8 bytes")))
            }
            _ => {
                return retry(
                    self,
                    format!("the peer chose {}, not our proposal with our KE's group", proposal::describe(sa)),
                )
            }
        };
        let shared = match dh.shared(ke) {
            Ok(s) => s,
            Err(e) => return retry(self, format!("the peer's KE payload is unusable: {e}")),
        };
        let ours = match self.rekeyed(now, chosen.0, &shared, (&ni, &nr), (spi_i, chosen.1), true) {
            Ok(new) => new,
            Err(e) => return retry(self, e),
        };
        if let Some((theirs, their_lower)) = self.crossed.take() {
            if lower(&ni, &nr) < their_lower.as_slice() {
                self.log("simultaneous IKE SA rekey lost (our exchange has the lowest nonce): ours is deleted".into());
                self.discard(now, ours);
                // The peer deletes this one; it closes quietly.
                return self.hand_over(now, *theirs);
            }
            self.log("simultaneous IKE SA rekey won: the peer deletes its redundant IKE SA".into());
            let mut theirs = *theirs;
            theirs.retired = Some(now + Duration::from_secs(30));
            self.replacements.push(theirs);
        }
        self.hand_over(now, ours);
        let del = Payload::Delete { protocol: PROTO_IKE, spi_size: 0, spis: Vec::new() };
        self.request(now, exchange::INFORMATIONAL, vec![del], Request::Delete, Some(Duration::from_secs(10)));
    }

    fn rekey_ike_request(&mut self, now: Instant, payloads: &[Payload], id: u32) {
        let refuse = |sa: &mut IkeSa, kind: u16, data: Vec<u8>, why: String| {
            let bytes = sa.seal(&sa.header(exchange::CREATE_CHILD_SA, id, true), &[status(kind, data)]);
            sa.respond(id, bytes);
            sa.log(format!("refused to rekey the IKE SA: {why}"));
        };
        if self.retired.is_some() || self.successor.is_some() {
            return refuse(self, notify::TEMPORARY_FAILURE, vec![], "a rekey is under way".into());
        }
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let ni = payloads.iter().find_map(|p| if let Payload::Nonce(n) = p { Some(n.clone()) } else { None });
        let ke =
            payloads.iter().find_map(|p| if let Payload::Ke { group, data } = p { Some((*group, data)) } else { None });
        let (Some(sa), Some(ni), Some((group, ke))) = (sa, ni, ke) else {
            return refuse(self, notify::INVALID_SYNTAX, vec![], "no SA, nonce or KE".into());
        };
        if self.crossed.is_some() {
            return refuse(self, notify::TEMPORARY_FAILURE, vec![], "a rekey is under way".into());
        }
        let (p, mut answer) = match proposal::choose_ike(&self.settings.ike, sa) {
            Ok(c) if c.1.spi.len() == 8 => c,
            Ok(_) => {
                return refuse(self, notify::INVALID_SYNTAX, vec![], "an IKE proposal without an 8-byte SPI".into())
            }
            Err(e) => return refuse(self, notify::NO_PROPOSAL_CHOSEN, vec![], format!("NO_PROPOSAL_CHOSEN: {e}")),
        };
        if group != p.group.id() {
            let want = p.group.id();
            return refuse(
                self,
                notify::INVALID_KE_PAYLOAD,
                want.to_be_bytes().to_vec(),
                format!("we take group {want}"),
            );
        }
        let spi_i = u64::from_be_bytes(answer.spi[..].try_into().expect("8 bytes"));
        let (dh, shared) = match KeyPair::generate(p.group) {
            Ok(k) => match k.shared(ke) {
                Ok(s) => (k, s),
                Err(e) => {
                    return refuse(self, notify::INVALID_SYNTAX, vec![], format!("the KE payload is unusable: {e}"))
                }
            },
            Err(e) => return refuse(self, notify::TEMPORARY_FAILURE, vec![], e.to_string()),
        };
        let spi_r = ike_spi();
        let nr = random_vec(NONCE_LEN);
        answer.spi = spi_r.to_be_bytes().to_vec();
        let ke_r = Payload::Ke { group, data: dh.public().to_vec() };
        let bytes = self.seal(
            &self.header(exchange::CREATE_CHILD_SA, id, true),
            &[Payload::Sa(vec![answer]), Payload::Nonce(nr.clone()), ke_r],
        );
        self.respond(id, bytes);
        let new = match self.rekeyed(now, p, &shared, (&ni, &nr), (spi_i, spi_r), false) {
            Ok(new) => new,
            Err(e) => return self.log(format!("the rekeyed IKE SA cannot be made: {e}")),
        };
        if matches!(&self.pending, Some(Pending { what: Request::RekeyIke { .. }, .. })) {
            // Both sides rekey at once: both exchanges complete, and the
            // nonces decide which new IKE SA stays (`rekey_ike_response`).
            self.log("simultaneous IKE SA rekey: the peer's and ours crossed; the lowest nonce decides".into());
            self.crossed = Some((Box::new(new), lower(&ni, &nr).to_vec()));
        } else {
            self.hand_over(now, new);
        }
    }

    /// Makes the IKE SA a rekey of this one agreed on: new keys (RFC 7296
    /// section 2.18) and SPIs, message IDs from 0, the rekey's initiator
    /// as its initiator; no child SAs yet.
    fn rekeyed(
        &self,
        now: Instant,
        p: IkeProposal,
        shared: &[u8],
        (ni, nr): (&[u8], &[u8]),
        (spi_i, spi_r): (u64, u64),
        we_initiated: bool,
    ) -> Result<IkeSa, String> {
        let old = self.keys.as_ref().expect("keys");
        let e = p.encryption;
        let k = IkeKeys::rekey(
            old.proposal.prf,
            p.prf,
            &old.sk_d,
            shared,
            ni,
            nr,
            spi_i,
            spi_r,
            e.integ_len(),
            e.encr_len(),
        );
        let mut new = IkeSa::new(self.settings.clone(), we_initiated, now, self.local_port, self.remote);
        (new.spi_i, new.spi_r, new.nat) = (spi_i, spi_r, self.nat);
        (new.ni, new.nr) = (ni.to_vec(), nr.to_vec());
        new.set_keys(p, k)?;
        new.phase = Phase::Established;
        new.ike_rekey_at = Some(new.rekey_time_of(new.settings.ike_lifetime, now));
        Ok(new)
    }

    /// `new` replaces this IKE SA: it takes the child SAs, and this one is
    /// retired (it answers or sends the delete, then closes quietly).
    fn hand_over(&mut self, now: Instant, mut new: IkeSa) {
        new.child = self.child.take();
        new.successor = self.successor.take();
        new.redundant = self.redundant.take();
        let p = new.proposal().expect("keys");
        new.log(format!("IKE SA rekeyed: {p} (replaces {:016x}_{:016x})", self.spi_i, self.spi_r));
        self.replacements.push(new);
        self.retired = Some(now + Duration::from_secs(30));
    }

    /// A redundant IKE SA of ours from a simultaneous rekey: deleted with
    /// the peer, quietly.
    fn discard(&mut self, now: Instant, mut new: IkeSa) {
        new.retired = Some(now + Duration::from_secs(30));
        new.delete(now);
        self.replacements.push(new);
    }

    /// The IKE SAs this one's rekeys made, once (for the endpoint).
    pub fn take_replacements(&mut self) -> Vec<IkeSa> {
        std::mem::take(&mut self.replacements)
    }

    // ---- responder ----------------------------------------------------

    /// Answers an IKE_SA_INIT request as responder. The SA returned may
    /// already be closed (a refusal was sent); the caller drains it
    /// either way.
    pub fn respond_init(
        settings: Settings,
        now: Instant,
        local_port: u16,
        from: SocketAddr,
        bytes: &[u8],
        msg: &Message,
    ) -> IkeSa {
        let mut sa = IkeSa::new(settings, false, now, local_port, from);
        sa.spi_i = msg.header.spi_i;
        let p = &msg.payloads;
        let sa_p = p.iter().find_map(|x| if let Payload::Sa(s) = x { Some(s) } else { None });
        let ke = p.iter().find_map(|x| if let Payload::Ke { group, data } = x { Some((*group, data)) } else { None });
        let nonce = p.iter().find_map(|x| if let Payload::Nonce(n) = x { Some(n) } else { None });
        let (Some(offer), Some((group, ke)), Some(nonce)) = (sa_p, ke, nonce) else {
            sa.refuse_init(notify::INVALID_SYNTAX, Vec::new());
            return sa.closed("IKE_SA_INIT request without SA, KE or nonce".into());
        };
        let chosen = match proposal::choose_ike(&sa.settings.ike, offer) {
            Ok(c) => c,
            Err(e) => {
                sa.refuse_init(notify::NO_PROPOSAL_CHOSEN, Vec::new());
                return sa.closed(format!("NO_PROPOSAL_CHOSEN for IKE: {e}"));
            }
        };
        if chosen.0.group.id() != group {
            sa.refuse_init(notify::INVALID_KE_PAYLOAD, chosen.0.group.id().to_be_bytes().to_vec());
            return sa.closed(format!(
                "INVALID_KE_PAYLOAD: the initiator's KE is of group {group}; we take group {}",
                chosen.0.group.id()
            ));
        }
        if !(16..=256).contains(&nonce.len()) {
            sa.refuse_init(notify::INVALID_SYNTAX, Vec::new());
            return sa.closed("a nonce of a bad length".into());
        }
        let dh = match KeyPair::generate(chosen.0.group) {
            Ok(k) => k,
            Err(e) => return sa.closed(format!("cannot make a Diffie-Hellman key: {e}")),
        };
        let shared = match dh.shared(ke) {
            Ok(s) => s,
            Err(e) => {
                sa.refuse_init(notify::INVALID_SYNTAX, Vec::new());
                return sa.closed(format!("the initiator's KE payload is unusable: {e}"));
            }
        };
        sa.spi_r = ike_spi();
        sa.ni = nonce.clone();
        sa.nr = random_vec(NONCE_LEN);
        sa.init_theirs = bytes.to_vec();
        sa.check_nat(p, msg.header.spi_i, 0, from);
        let ours = SocketAddr::new(sa.settings.local, local_port);
        let payloads = vec![
            Payload::Sa(vec![chosen.1]),
            Payload::Ke { group, data: dh.public().to_vec() },
            Payload::Nonce(sa.nr.clone()),
            status(notify::NAT_DETECTION_SOURCE_IP, nat_hash(sa.spi_i, sa.spi_r, ours)),
            status(notify::NAT_DETECTION_DESTINATION_IP, nat_hash(sa.spi_i, sa.spi_r, from)),
        ];
        let out = Message { header: sa.header(exchange::IKE_SA_INIT, 0, true), payloads }.emit();
        sa.init_ours = out.clone();
        if let Err(e) = sa.make_keys(chosen.0, &shared) {
            return sa.closed(e);
        }
        sa.log(format!("IKE_SA_INIT answered: {}{}", chosen.0, if sa.nat { ", NAT detected" } else { "" }));
        sa.respond(0, out);
        sa
    }

    fn closed(mut self, why: String) -> IkeSa {
        self.close(why);
        self
    }

    /// An unprotected IKE_SA_INIT error response (no state kept).
    fn refuse_init(&mut self, kind: u16, data: Vec<u8>) {
        let msg = Message { header: self.header(exchange::IKE_SA_INIT, 0, true), payloads: vec![status(kind, data)] };
        self.out.push_back(Output::Send(Datagram {
            local_port: self.local_port,
            remote: self.remote,
            bytes: msg.emit(),
        }));
    }

    fn auth_request(&mut self, now: Instant, payloads: &[Payload], id: u32) {
        let idi = payloads.iter().find_map(|p| if let Payload::IdI(i) = p { Some(i) } else { None });
        let checked = self.check_identity(idi).and_then(|i| self.verify_auth(true, &i, payloads));
        if let Err(e) = checked {
            let bytes = self
                .seal(&self.header(exchange::IKE_AUTH, id, true), &[status(notify::AUTHENTICATION_FAILED, Vec::new())]);
            self.respond(id, bytes);
            return self.close(format!("AUTHENTICATION_FAILED: {e}"));
        }
        let me = self.settings.local_id.clone();
        let auth = self.auth(false, &me);
        let mut answer = vec![Payload::IdR(me), Payload::Auth { method: AUTH_PSK, data: auth.to_vec() }];
        self.phase = Phase::Established;
        self.ike_rekey_at = Some(self.rekey_time_of(self.settings.ike_lifetime, now));
        self.log(format!("IKE SA established with {}", show_identity(&self.settings.remote_id)));
        match self.choose_child(payloads) {
            Ok((p, outbound, tsi, tsr, sa_answer)) => {
                let inbound = esp_spi();
                let mut sa_answer = sa_answer;
                sa_answer.spi = inbound.to_be_bytes().to_vec();
                answer.extend([Payload::Sa(vec![sa_answer]), Payload::TsI(tsi.clone()), Payload::TsR(tsr.clone())]);
                let bytes = self.seal(&self.header(exchange::IKE_AUTH, id, true), &answer);
                self.respond(id, bytes);
                self.install_child(now, p, inbound, outbound, tsr, tsi);
            }
            Err((kind, why)) => {
                answer.push(status(kind, Vec::new()));
                let bytes = self.seal(&self.header(exchange::IKE_AUTH, id, true), &answer);
                self.respond(id, bytes);
                self.log(format!("no child SA: {why}"));
            }
        }
    }

    /// The child SA the initiator asks for: the ESP proposal, its SPI,
    /// and the selectors narrowed to ours (TSi is the peer's side).
    #[allow(clippy::type_complexity)]
    fn choose_child(
        &self,
        payloads: &[Payload],
    ) -> Result<(EspProposal, u32, Vec<TrafficSelector>, Vec<TrafficSelector>, message::Proposal), (u16, String)> {
        let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
        let tsi = payloads.iter().find_map(|p| if let Payload::TsI(t) = p { Some(t) } else { None });
        let tsr = payloads.iter().find_map(|p| if let Payload::TsR(t) = p { Some(t) } else { None });
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return Err((notify::INVALID_SYNTAX, "IKE_AUTH request without SA or selectors".into()));
        };
        if find_notify(payloads, notify::USE_TRANSPORT_MODE).is_some() {
            return Err((notify::NO_PROPOSAL_CHOSEN, "the initiator asks for transport mode; vpngw tunnels".into()));
        }
        let (p, spi, answer) = proposal::choose_esp(&self.settings.esp, sa, false)
            .map_err(|e| (notify::NO_PROPOSAL_CHOSEN, format!("NO_PROPOSAL_CHOSEN for ESP: {e}")))?;
        let (n_i, n_r) = (narrow_all(tsi, &self.settings.remote_ts), narrow_all(tsr, &self.settings.local_ts));
        if n_i.is_empty() || n_r.is_empty() {
            return Err((
                notify::TS_UNACCEPTABLE,
                format!(
                    "TS_UNACCEPTABLE: the initiator's selectors {} <-> {} meet none of ours",
                    show_ts(tsi),
                    show_ts(tsr)
                ),
            ));
        }
        Ok((p, spi, n_i, n_r, answer))
    }

    // ---- any message ----------------------------------------------------

    /// A datagram for this IKE SA (the driver found it by SPI), from `from`
    /// to our `local_port`. Bad messages are dropped, and said so in the
    /// log; they change nothing.
    pub fn receive(&mut self, now: Instant, local_port: u16, from: SocketAddr, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        let header = match message::parse_header(bytes) {
            Ok(h) => h,
            Err(e) => return self.log(format!("dropped: {e}")),
        };
        let response = header.flags & flags::RESPONSE != 0;
        if header.exchange == exchange::IKE_SA_INIT {
            return self.receive_init(now, response, header, bytes);
        }
        // Retransmitted requests are answered from the cache.
        if !response {
            if let Some((id, cached)) = &self.cached {
                if header.message_id == *id {
                    let d = Datagram { local_port, remote: from, bytes: cached.clone() };
                    self.out.push_back(Output::Send(d));
                    return;
                }
            }
            if header.message_id != self.expect_id {
                return self
                    .log(format!("dropped: request {} out of order (expected {})", header.message_id, self.expect_id));
            }
        } else if self.pending.as_ref().is_none_or(|p| p.message_id != header.message_id) {
            return self.log(format!("dropped: response {} to no request of ours", header.message_id));
        }
        let Some(keys) = &self.keys else { return self.log("dropped: a protected message before keys".into()) };
        let payloads = match keys.recv.open(bytes) {
            Ok((_, p)) => p,
            Err(e) => return self.log(format!("dropped: {e}")),
        };
        // Authentic: the peer is alive, and this is where it now is.
        self.last_heard = now;
        self.remote = from;
        self.local_port = local_port;
        if response {
            let p = self.pending.take().expect("checked above");
            match p.what {
                Request::Auth { inbound } if header.exchange == exchange::IKE_AUTH => {
                    self.auth_response(now, &payloads, inbound)
                }
                Request::Liveness => {}
                Request::Delete => self.close("deleted".into()),
                Request::RekeyChild { inbound, ni, dh, old } if header.exchange == exchange::CREATE_CHILD_SA => {
                    self.rekey_response(now, &payloads, inbound, ni, dh, old)
                }
                Request::DeleteChild { inbound } => self.out.push_back(Output::RemoveInbound(inbound)),
                Request::RekeyIke { spi, ni, dh } if header.exchange == exchange::CREATE_CHILD_SA => {
                    self.rekey_ike_response(now, &payloads, spi, ni, dh)
                }
                _ => self.log(format!("dropped: a response of exchange {}", header.exchange)),
            }
            return;
        }
        let id = header.message_id;
        match (header.exchange, self.phase) {
            (exchange::IKE_AUTH, Phase::Connecting) if !self.initiator => self.auth_request(now, &payloads, id),
            (exchange::INFORMATIONAL, Phase::Established) => self.informational(now, &payloads, id),
            (exchange::CREATE_CHILD_SA, Phase::Established) => self.rekey_request(now, &payloads, id),
            _ => {
                let bytes =
                    self.seal(&self.header(header.exchange, id, true), &[status(notify::INVALID_SYNTAX, Vec::new())]);
                self.respond(id, bytes);
                self.log(format!("refused a request of exchange {} in phase {:?}", header.exchange, self.phase));
            }
        }
    }

    fn receive_init(&mut self, now: Instant, response: bool, header: Header, bytes: &[u8]) {
        match (&self.pending, response) {
            (Some(p), true) if matches!(p.what, Request::Init { .. }) && header.spi_i == self.spi_i => {
                let msg = match message::parse(bytes) {
                    Ok(m) => m,
                    Err(e) => return self.log(format!("dropped: {e}")),
                };
                let Some(Pending { what: Request::Init { dh, cookie }, .. }) = self.pending.take() else {
                    unreachable!()
                };
                self.last_heard = now;
                self.init_response(now, &msg, bytes, dh, cookie);
            }
            // A retransmitted IKE_SA_INIT request: the cached answer.
            (_, false) if !self.initiator && bytes == self.init_theirs => {
                if let Some((0, cached)) = &self.cached {
                    let d = Datagram { local_port: self.local_port, remote: self.remote, bytes: cached.clone() };
                    self.out.push_back(Output::Send(d));
                }
            }
            _ => self.log("dropped: an IKE_SA_INIT message out of turn".into()),
        }
    }

    fn informational(&mut self, now: Instant, payloads: &[Payload], id: u32) {
        let mut answer = Vec::new();
        let mut close = None;
        for p in payloads {
            if let Payload::Delete { protocol, spis, .. } = p {
                if *protocol == PROTO_IKE {
                    if let Some((theirs, _)) = self.crossed.take() {
                        // The peer's crossing rekey finished before it saw
                        // ours: its new IKE SA carries on.
                        self.hand_over(now, *theirs);
                    }
                    close = Some("the peer deleted the IKE SA".to_string());
                } else if *protocol == PROTO_ESP {
                    let names = |spi: u32| spis.iter().any(|s| s.as_slice() == spi.to_be_bytes());
                    if let Some(r) = self.redundant.take_if(|r| names(r.outbound)) {
                        // The peer deletes the child it lost a collision with.
                        answer.push(Payload::Delete {
                            protocol: PROTO_ESP,
                            spi_size: 4,
                            spis: vec![r.inbound.to_be_bytes().to_vec()],
                        });
                        self.out.push_back(Output::RemoveInbound(r.inbound));
                        self.log(format!("the peer deleted its redundant child SA; {:08x} removed", r.inbound));
                        continue;
                    }
                    let Some(c) = &self.child else { continue };
                    let (inbound, outbound) = (c.inbound, c.outbound);
                    if !spis.iter().any(|s| s.as_slice() == outbound.to_be_bytes()) {
                        continue;
                    }
                    answer.push(Payload::Delete {
                        protocol: PROTO_ESP,
                        spi_size: 4,
                        spis: vec![inbound.to_be_bytes().to_vec()],
                    });
                    match self.successor.take() {
                        // The end of a rekey the peer made: now send on the
                        // successor, and drop the old inbound.
                        Some(Successor { child: next, outbound: out_sa, .. }) => {
                            self.out.push_back(Output::InstallOutbound(out_sa));
                            self.out.push_back(Output::RemoveInbound(inbound));
                            self.log(format!("child SA {inbound:08x} replaced by {:08x}", next.inbound));
                            self.child = Some(next);
                        }
                        None => close = Some("the peer deleted the tunnel's child SA".to_string()),
                    }
                }
            }
        }
        let bytes = self.seal(&self.header(exchange::INFORMATIONAL, id, true), &answer);
        self.respond(id, bytes);
        if let Some(why) = close {
            self.close(why);
        }
    }
}

/// The lower of an exchange's two nonces (compared as strongSwan does:
/// bytewise over the shorter length).
fn lower<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    let n = a.len().min(b.len());
    if a[..n] <= b[..n] {
        a
    } else {
        b
    }
}

fn show_ts(ts: &[TrafficSelector]) -> String {
    let one = |t: &TrafficSelector| {
        let mut s = format!("{}-{}", t.start, t.end);
        if t.protocol != 0 {
            s += &format!("/{}", t.protocol);
        }
        if (t.start_port, t.end_port) != (0, 65535) {
            s += &format!("[{}-{}]", t.start_port, t.end_port);
        }
        s
    };
    ts.iter().map(one).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests;
