//! Security associations: the cold configuration an SA is made from, and
//! the hot runtime state (sequence number or replay window, lifetime
//! counters) that its one owning worker updates on every packet.
//!
//! Inbound and outbound SAs are separate types: they share a configuration
//! shape but not their runtime state, and a function that encrypts can
//! never be handed an SA that decrypts.

use crate::crypto::{Aead, KeyLength, Suite};
use crate::esp::OuterHeader;
use crate::replay::{ReplayWindow, WindowSize, DEFAULT_WINDOW};
use crate::stats::{DropCounters, DropReason, Traffic};
use std::net::IpAddr;

/// Seconds on a monotonic clock; the caller chooses the epoch.
pub type Seconds = u64;

/// Which way an SA protects traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// ESP in UDP (RFC 3948): the ports this SA's packets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatT {
    pub src_port: u16,
    pub dst_port: u16,
}

impl NatT {
    /// Port 4500 both ways, the IKE default.
    pub const DEFAULT: NatT = NatT {
        src_port: 4500,
        dst_port: 4500,
    };
}

/// One lifetime limit; `None` means unlimited in that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limit {
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
    pub seconds: Option<Seconds>,
}

/// Soft limits warn (the control plane rekeys); hard limits stop the SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetimes {
    pub soft: Limit,
    pub hard: Limit,
}

/// What the SA is made from. Never changes while the SA lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaConfig {
    pub spi: u32,
    pub direction: Direction,
    pub suite: Suite,
    /// The gateway's tunnel endpoint: the outer source when sending, the
    /// outer destination when receiving. Unspecified (0.0.0.0 or ::) on an
    /// inbound SA matches any destination.
    pub local: IpAddr,
    /// The peer's tunnel endpoint.
    pub remote: IpAddr,
    pub natt: Option<NatT>,
    pub esn: bool,
    /// Replay window size; used by inbound SAs.
    pub replay_window: u32,
    pub lifetimes: Lifetimes,
    /// TTL or hop limit of the outer header.
    pub outer_ttl: u8,
}

impl SaConfig {
    /// A config with the defaults: no NAT-T, no ESN, window 1024, no
    /// lifetimes, outer TTL 64.
    pub fn new(
        spi: u32,
        direction: Direction,
        suite: Suite,
        local: IpAddr,
        remote: IpAddr,
    ) -> Self {
        Self {
            spi,
            direction,
            suite,
            local,
            remote,
            natt: None,
            esn: false,
            replay_window: DEFAULT_WINDOW,
            lifetimes: Lifetimes::default(),
            outer_ttl: 64,
        }
    }

    /// The largest sequence number this SA may use: 2^32 - 1, or 2^64 - 1
    /// with ESN (RFC 4303 section 3.3.3: it never cycles).
    pub fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u32::MAX as u64
        }
    }
}

/// A configuration that cannot make an SA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaError {
    #[error("spi {0:#x}: values 0 to 255 are reserved (RFC 4303 section 2.1)")]
    ReservedSpi(u32),
    #[error("tunnel endpoints {0} and {1} are not of one address family")]
    MixedFamilies(IpAddr, IpAddr),
    #[error("outer TTL 0 would be dropped by the first router")]
    ZeroTtl,
    #[error("NAT-T port 0 is not a port")]
    ZeroPort,
    #[error(transparent)]
    Key(#[from] KeyLength),
    #[error(transparent)]
    Window(#[from] WindowSize),
}

impl SaConfig {
    fn validate(&self) -> Result<(), SaError> {
        if self.spi < 256 {
            return Err(SaError::ReservedSpi(self.spi));
        }
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(SaError::MixedFamilies(self.local, self.remote));
        }
        if self.outer_ttl == 0 {
            return Err(SaError::ZeroTtl);
        }
        if self
            .natt
            .is_some_and(|n| n.src_port == 0 || n.dst_port == 0)
        {
            return Err(SaError::ZeroPort);
        }
        Ok(())
    }
}

/// Which limit an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Bytes,
    Packets,
    Seconds,
    /// The sequence number reached its last value.
    SequenceSpace,
}

/// Soft or hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiry {
    Soft,
    Hard,
}

/// An SA crossed a lifetime limit: the control plane rekeys on `Soft` and
/// removes the SA on `Hard`. Raised once per SA and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LifetimeEvent {
    pub spi: u32,
    pub direction: Direction,
    pub expiry: Expiry,
    pub limit: LimitKind,
}

/// Where a set of limits lies, as absolute values (`u64::MAX`: never), so
/// the hot path compares instead of unwrapping options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marks {
    packets: u64,
    bytes: u64,
    time: Seconds,
}

impl Marks {
    const NEVER: Marks = Marks {
        packets: u64::MAX,
        bytes: u64::MAX,
        time: u64::MAX,
    };

    fn of(limit: &Limit, created: Seconds) -> Self {
        Marks {
            packets: limit.packets.unwrap_or(u64::MAX),
            bytes: limit.bytes.unwrap_or(u64::MAX),
            time: limit
                .seconds
                .map_or(u64::MAX, |s| created.saturating_add(s)),
        }
    }

    fn min(self, o: Marks) -> Marks {
        Marks {
            packets: self.packets.min(o.packets),
            bytes: self.bytes.min(o.bytes),
            time: self.time.min(o.time),
        }
    }

    /// The first of these marks that `traffic` at `now` has reached.
    #[inline]
    fn reached(&self, t: &Traffic, now: Seconds) -> Option<LimitKind> {
        if t.packets >= self.packets {
            Some(LimitKind::Packets)
        } else if t.bytes >= self.bytes {
            Some(LimitKind::Bytes)
        } else if now >= self.time {
            Some(LimitKind::Seconds)
        } else {
            None
        }
    }
}

/// Lifetime accounting, on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifetimeState {
    pub created: Seconds,
    pub traffic: Traffic,
    spi: u32,
    direction: Direction,
    soft: Marks,
    hard: Marks,
    /// The nearest mark still to raise an event: soft (until raised) and hard.
    next: Marks,
    soft_raised: bool,
    hard_expired: bool,
}

impl LifetimeState {
    fn new(cfg: &SaConfig, created: Seconds) -> Self {
        let soft = Marks::of(&cfg.lifetimes.soft, created);
        let hard = Marks::of(&cfg.lifetimes.hard, created);
        Self {
            created,
            traffic: Traffic::default(),
            spi: cfg.spi,
            direction: cfg.direction,
            soft,
            hard,
            next: soft.min(hard),
            soft_raised: false,
            hard_expired: false,
        }
    }

    pub fn is_expired(&self) -> bool {
        self.hard_expired
    }

    fn event(&self, expiry: Expiry, limit: LimitKind) -> LifetimeEvent {
        LifetimeEvent {
            spi: self.spi,
            direction: self.direction,
            expiry,
            limit,
        }
    }

    /// Refuses a packet on an expired SA, or at its hard time limit
    /// (expiring it there and then, with its event).
    #[inline]
    pub(crate) fn admit(
        &mut self,
        now: Seconds,
        events: &mut Vec<LifetimeEvent>,
    ) -> Result<(), DropReason> {
        if self.hard_expired {
            return Err(DropReason::Expired);
        }
        if now >= self.hard.time {
            events.extend(self.expire(LimitKind::Seconds));
            return Err(DropReason::Expired);
        }
        Ok(())
    }

    /// Re-evaluates the limits at `now`; returns an event on a transition.
    fn evaluate(&mut self, now: Seconds) -> Option<LifetimeEvent> {
        if self.hard_expired {
            return None;
        }
        if let Some(limit) = self.hard.reached(&self.traffic, now) {
            return self.expire(limit);
        }
        if !self.soft_raised {
            if let Some(limit) = self.soft.reached(&self.traffic, now) {
                self.soft_raised = true;
                self.next = self.hard;
                return Some(self.event(Expiry::Soft, limit));
            }
        }
        None
    }

    /// Counts one packet of `bytes` inner bytes; evaluates only when a
    /// mark is reached.
    #[inline]
    pub(crate) fn account(&mut self, bytes: usize, now: Seconds) -> Option<LifetimeEvent> {
        self.traffic.packets += 1;
        self.traffic.bytes += bytes as u64;
        self.next.reached(&self.traffic, now)?;
        self.evaluate(now)
    }

    /// Marks the SA hard-expired (a limit, or its sequence space).
    pub(crate) fn expire(&mut self, limit: LimitKind) -> Option<LifetimeEvent> {
        if self.hard_expired {
            return None;
        }
        self.hard_expired = true;
        self.soft_raised = true;
        self.next = Marks::NEVER;
        Some(self.event(Expiry::Hard, limit))
    }
}

/// Hot state of an outbound SA.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct OutboundState {
    /// The sequence number the next packet carries (starts at 1).
    pub next_seq: u64,
    pub lifetime: LifetimeState,
    pub drops: DropCounters,
}

/// An SA that encrypts: see [`crate::esp::encap`].
#[derive(Debug)]
pub struct OutboundSa {
    pub cfg: SaConfig,
    pub(crate) aead: Aead,
    pub(crate) outer: OuterHeader,
    pub state: OutboundState,
}

impl OutboundSa {
    /// Makes an outbound SA from its config and keying material (key ||
    /// salt), created at `now` (for the time lifetimes).
    pub fn new(cfg: SaConfig, keymat: &[u8], now: Seconds) -> Result<Self, SaError> {
        cfg.validate()?;
        let aead = Aead::new(cfg.suite, keymat)?;
        let outer = OuterHeader::new(&cfg);
        let state = OutboundState {
            next_seq: 1,
            lifetime: LifetimeState::new(&cfg, now),
            drops: DropCounters::default(),
        };
        Ok(Self {
            cfg,
            aead,
            outer,
            state,
        })
    }

    /// Starts the sequence at `seq` instead of 1: for tools and tests that
    /// need to show what happens near 2^32 or the end of the sequence space.
    pub fn with_next_seq(mut self, seq: u64) -> Self {
        self.state.next_seq = seq.max(1);
        self
    }

    /// Time-based expiry for an idle SA: the control plane polls this.
    pub fn poll_lifetime(&mut self, now: Seconds) -> Option<LifetimeEvent> {
        self.state.lifetime.evaluate(now)
    }
}

/// Hot state of an inbound SA.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct InboundState {
    pub window: ReplayWindow,
    pub lifetime: LifetimeState,
    pub drops: DropCounters,
}

/// An SA that decrypts: see [`crate::esp::decap`].
#[derive(Debug)]
pub struct InboundSa {
    pub cfg: SaConfig,
    pub(crate) aead: Aead,
    pub state: InboundState,
}

impl InboundSa {
    pub fn new(cfg: SaConfig, keymat: &[u8], now: Seconds) -> Result<Self, SaError> {
        cfg.validate()?;
        let aead = Aead::new(cfg.suite, keymat)?;
        let window = ReplayWindow::new(cfg.replay_window, cfg.esn)?;
        let state = InboundState {
            window,
            lifetime: LifetimeState::new(&cfg, now),
            drops: DropCounters::default(),
        };
        Ok(Self { cfg, aead, state })
    }

    /// Time-based expiry for an idle SA: the control plane polls this.
    pub fn poll_lifetime(&mut self, now: Seconds) -> Option<LifetimeEvent> {
        self.state.lifetime.evaluate(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: Direction) -> SaConfig {
        SaConfig::new(
            0x1001,
            dir,
            Suite::AesGcm128,
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
    }

    #[test]
    fn configs_are_validated() {
        let key = [0u8; 20];
        let mut c = cfg(Direction::Outbound);
        c.spi = 255;
        assert_eq!(
            OutboundSa::new(c, &key, 0).unwrap_err(),
            SaError::ReservedSpi(255)
        );
        let mut c = cfg(Direction::Outbound);
        c.remote = "2001:db8::1".parse().unwrap();
        assert!(matches!(
            OutboundSa::new(c, &key, 0),
            Err(SaError::MixedFamilies(..))
        ));
        let mut c = cfg(Direction::Inbound);
        c.replay_window = 32;
        assert!(matches!(
            InboundSa::new(c, &key, 0),
            Err(SaError::Window(_))
        ));
        assert!(matches!(
            InboundSa::new(cfg(Direction::Inbound), &key[..16], 0),
            Err(SaError::Key(_))
        ));
        let mut c = cfg(Direction::Outbound);
        c.natt = Some(NatT {
            src_port: 0,
            dst_port: 4500,
        });
        assert_eq!(OutboundSa::new(c, &key, 0).unwrap_err(), SaError::ZeroPort);
    }

    #[test]
    fn soft_then_hard_each_raised_once() {
        let mut c = cfg(Direction::Inbound);
        c.lifetimes.soft.packets = Some(2);
        c.lifetimes.hard.packets = Some(4);
        let mut l = LifetimeState::new(&c, 0);
        assert_eq!(l.account(100, 0), None);
        let soft = l.account(100, 0).unwrap();
        assert_eq!(
            (soft.expiry, soft.limit),
            (Expiry::Soft, LimitKind::Packets)
        );
        assert_eq!(l.account(100, 0), None);
        let hard = l.account(100, 0).unwrap();
        assert_eq!(
            (hard.expiry, hard.limit),
            (Expiry::Hard, LimitKind::Packets)
        );
        assert!(l.is_expired());
        assert_eq!(l.account(100, 0), None);
    }

    #[test]
    fn time_and_byte_limits() {
        let mut c = cfg(Direction::Outbound);
        c.lifetimes.soft.seconds = Some(10);
        c.lifetimes.hard.bytes = Some(1000);
        let mut l = LifetimeState::new(&c, 100);
        assert_eq!(l.evaluate(109), None);
        assert_eq!(
            l.evaluate(110).map(|e| (e.expiry, e.limit)),
            Some((Expiry::Soft, LimitKind::Seconds))
        );
        assert_eq!(l.account(999, 111), None);
        assert_eq!(
            l.account(1, 111).map(|e| (e.expiry, e.limit)),
            Some((Expiry::Hard, LimitKind::Bytes))
        );
    }
}
