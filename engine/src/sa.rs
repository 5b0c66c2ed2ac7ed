//! Security associations: the cold configuration an SA is made from, and
//! the hot runtime state (sequence number or replay window, lifetime
//! counters) that its one owning worker updates on every packet.
//!
//! Inbound and outbound SAs are separate types: they share a configuration
//! shape but not their runtime state, and a function that encrypts can
//! never be handed an SA that decrypts.

use crate::crypto::{EspCipher, KeyLength, Suite};
use crate::esp::OuterHeader;
pub use crate::lifetime::{Expiry, LifetimeEvent, LifetimeState, Lifetimes, Limit, LimitKind, Seconds};
use crate::replay::{ReplayWindow, WindowSize, DEFAULT_WINDOW};
use crate::stats::DropCounters;
use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

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
    pub const DEFAULT: NatT = NatT { src_port: 4500, dst_port: 4500 };
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
    /// Starts loading, from the `SaConfig` at `c` (an address only), the
    /// fields a packet reads: not the lifetimes, which the state applies.
    #[inline]
    fn prefetch(c: *const u8) {
        const HOT: [usize; 8] = [
            offset_of!(SaConfig, spi),
            offset_of!(SaConfig, direction),
            offset_of!(SaConfig, suite),
            offset_of!(SaConfig, local),
            offset_of!(SaConfig, remote),
            offset_of!(SaConfig, natt),
            offset_of!(SaConfig, esn),
            offset_of!(SaConfig, outer_ttl),
        ];
        for at in HOT {
            crate::prefetch::bytes(c.wrapping_add(at), 1);
        }
    }

    /// A config with the defaults: no NAT-T, no ESN, window 1024, no
    /// lifetimes, outer TTL 64.
    pub fn new(spi: u32, direction: Direction, suite: Suite, local: IpAddr, remote: IpAddr) -> Self {
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
    #[error("an outbound SA needs a local address to send from, not {0}")]
    UnspecifiedSource(IpAddr),
    #[error("a {wanted:?} SA cannot be made from a {got:?} config")]
    Direction { wanted: Direction, got: Direction },
    #[error("outer TTL 0 would be dropped by the first router")]
    ZeroTtl,
    #[error("NAT-T port 0 is not a port")]
    ZeroPort,
    #[error("lifetime: {0}")]
    Lifetime(&'static str),
    #[error(transparent)]
    Key(#[from] KeyLength),
    #[error(transparent)]
    Window(#[from] WindowSize),
}

impl SaConfig {
    fn validate(&self, wanted: Direction) -> Result<(), SaError> {
        if self.direction != wanted {
            return Err(SaError::Direction { wanted, got: self.direction });
        }
        if self.spi < 256 {
            return Err(SaError::ReservedSpi(self.spi));
        }
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(SaError::MixedFamilies(self.local, self.remote));
        }
        if wanted == Direction::Outbound && self.local.is_unspecified() {
            return Err(SaError::UnspecifiedSource(self.local));
        }
        if self.outer_ttl == 0 {
            return Err(SaError::ZeroTtl);
        }
        if self.natt.is_some_and(|n| n.src_port == 0 || n.dst_port == 0) {
            return Err(SaError::ZeroPort);
        }
        let (soft, hard) = (&self.lifetimes.soft, &self.lifetimes.hard);
        for (s, h) in [(soft.bytes, hard.bytes), (soft.packets, hard.packets), (soft.seconds, hard.seconds)] {
            if s == Some(0) || h == Some(0) {
                return Err(SaError::Lifetime("a limit of 0 would expire the SA before its first packet"));
            }
            if let (Some(s), Some(h)) = (s, h) {
                if s >= h {
                    return Err(SaError::Lifetime("a soft limit must be below the hard one"));
                }
            }
        }
        Ok(())
    }

    fn lifetime(&self, now: Seconds) -> LifetimeState {
        LifetimeState::new(self.spi, self.direction, &self.lifetimes, now)
    }
}

/// Hot state of an outbound SA. In this order: what every packet reads
/// and writes first (the lines [`OutboundSa::prefetch`] loads), the drop
/// counters last.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct OutboundState {
    /// The sequence number the next packet carries (starts at 1).
    pub next_seq: u64,
    /// At this sequence number a soft `SequenceSpace` expiry is raised, so
    /// the SA is rekeyed before its counter runs out: 15/16 of the space.
    pub seq_warn: u64,
    pub lifetime: LifetimeState,
    pub drops: DropCounters,
}

/// An SA that encrypts: see [`crate::esp::encap`].
#[derive(Debug)]
pub struct OutboundSa {
    pub cfg: SaConfig,
    pub(crate) cipher: EspCipher,
    pub(crate) outer: OuterHeader,
    pub state: OutboundState,
}

impl OutboundSa {
    /// Starts loading what sealing a packet reads of the SA `m` guards
    /// (not its drop counters, not its cipher's unused key schedules),
    /// and `m`'s lock word, without taking the lock.
    #[inline]
    pub(crate) fn prefetch(m: &Mutex<Self>, suite: Suite) {
        static DATA: OnceLock<usize> = OnceLock::new();
        let sa = crate::prefetch::guarded(m, &DATA);
        crate::prefetch::bytes(sa.wrapping_add(offset_of!(Self, state)), offset_of!(OutboundState, drops));
        EspCipher::prefetch(sa.wrapping_add(offset_of!(Self, cipher)), suite);
        crate::prefetch::bytes(sa.wrapping_add(offset_of!(Self, outer)), size_of::<OuterHeader>());
        SaConfig::prefetch(sa.wrapping_add(offset_of!(Self, cfg)));
    }

    /// Makes an outbound SA from its config and keying material (key ||
    /// salt), created at `now` (for the time lifetimes).
    pub fn new(cfg: SaConfig, keymat: &[u8], now: Seconds) -> Result<Self, SaError> {
        cfg.validate(Direction::Outbound)?;
        let cipher = EspCipher::new(cfg.suite, keymat)?;
        let outer = OuterHeader::new(&cfg);
        let state = OutboundState {
            next_seq: 1,
            seq_warn: cfg.max_seq() - cfg.max_seq() / 16,
            lifetime: cfg.lifetime(now),
            drops: DropCounters::default(),
        };
        Ok(Self { cfg, cipher, outer, state })
    }

    /// Starts the sequence at `seq` (at least 1) instead of 1: for tools and
    /// tests that show what happens near 2^32 or the end of the space.
    pub fn with_next_seq(mut self, seq: u64) -> Self {
        self.state.next_seq = seq.max(1);
        self
    }

    /// Time-based expiry for an idle SA: the control plane polls this.
    pub fn poll_lifetime(&mut self, now: Seconds, events: &mut Vec<LifetimeEvent>) {
        self.state.lifetime.poll(now, events)
    }
}

/// Hot state of an inbound SA. In this order: what every packet reads
/// and writes first (the lines [`InboundSa::prefetch`] loads), the drop
/// counters last.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct InboundState {
    pub window: ReplayWindow,
    pub lifetime: LifetimeState,
    pub drops: DropCounters,
}

/// An SA that decrypts: see [`crate::esp::decap`].
#[derive(Debug)]
pub struct InboundSa {
    pub cfg: SaConfig,
    pub(crate) cipher: EspCipher,
    pub state: InboundState,
}

impl InboundSa {
    /// Starts loading what opening a packet reads of the SA `m` guards
    /// (its replay window's ring is behind a pointer: that line comes when
    /// it is read), and `m`'s lock word, without taking the lock.
    #[inline]
    pub(crate) fn prefetch(m: &Mutex<Self>, suite: Suite) {
        static DATA: OnceLock<usize> = OnceLock::new();
        let sa = crate::prefetch::guarded(m, &DATA);
        crate::prefetch::bytes(sa.wrapping_add(offset_of!(Self, state)), offset_of!(InboundState, drops));
        EspCipher::prefetch(sa.wrapping_add(offset_of!(Self, cipher)), suite);
        SaConfig::prefetch(sa.wrapping_add(offset_of!(Self, cfg)));
    }

    pub fn new(cfg: SaConfig, keymat: &[u8], now: Seconds) -> Result<Self, SaError> {
        cfg.validate(Direction::Inbound)?;
        let cipher = EspCipher::new(cfg.suite, keymat)?;
        let window = ReplayWindow::new(cfg.replay_window, cfg.esn)?;
        let state = InboundState { window, lifetime: cfg.lifetime(now), drops: DropCounters::default() };
        Ok(Self { cfg, cipher, state })
    }

    /// Time-based expiry for an idle SA: the control plane polls this.
    pub fn poll_lifetime(&mut self, now: Seconds, events: &mut Vec<LifetimeEvent>) {
        self.state.lifetime.poll(now, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: Direction) -> SaConfig {
        SaConfig::new(0x1001, dir, Suite::AesGcm128, "192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap())
    }

    #[test]
    fn configs_are_validated() {
        let key = [0u8; 20];
        let mut c = cfg(Direction::Outbound);
        c.spi = 255;
        assert_eq!(OutboundSa::new(c, &key, 0).unwrap_err(), SaError::ReservedSpi(255));
        let mut c = cfg(Direction::Outbound);
        c.remote = "2001:db8::1".parse().unwrap();
        assert!(matches!(OutboundSa::new(c, &key, 0), Err(SaError::MixedFamilies(..))));
        let mut c = cfg(Direction::Inbound);
        c.replay_window = 32;
        assert!(matches!(InboundSa::new(c, &key, 0), Err(SaError::Window(_))));
        assert!(matches!(InboundSa::new(cfg(Direction::Inbound), &key[..16], 0), Err(SaError::Key(_))));
        let mut c = cfg(Direction::Outbound);
        c.natt = Some(NatT { src_port: 0, dst_port: 4500 });
        assert_eq!(OutboundSa::new(c, &key, 0).unwrap_err(), SaError::ZeroPort);
        assert!(matches!(OutboundSa::new(cfg(Direction::Inbound), &key, 0), Err(SaError::Direction { .. })));
        assert!(matches!(InboundSa::new(cfg(Direction::Outbound), &key, 0), Err(SaError::Direction { .. })));
        let mut c = cfg(Direction::Outbound);
        c.local = "0.0.0.0".parse().unwrap();
        assert!(matches!(OutboundSa::new(c.clone(), &key, 0), Err(SaError::UnspecifiedSource(_))));
        c.direction = Direction::Inbound;
        assert!(InboundSa::new(c, &key, 0).is_ok(), "an inbound SA may accept any destination");
        let mut c = cfg(Direction::Outbound);
        c.lifetimes.soft.seconds = Some(3600);
        c.lifetimes.hard.seconds = Some(3600);
        assert!(matches!(OutboundSa::new(c.clone(), &key, 0), Err(SaError::Lifetime(_))));
        c.lifetimes.soft.seconds = Some(3000);
        assert!(OutboundSa::new(c.clone(), &key, 0).is_ok());
        c.lifetimes.hard.packets = Some(0);
        assert!(matches!(OutboundSa::new(c, &key, 0), Err(SaError::Lifetime(_))));
    }
}
