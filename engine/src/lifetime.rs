//! SA lifetimes (RFC 4301 section 4.4.2.1): soft and hard limits on bytes,
//! packets and seconds, counted on both sides. Crossing a soft limit raises
//! an event the control plane rekeys on; crossing a hard limit stops the SA.
//! Each expiry is raised exactly once.

use crate::sa::Direction;
use crate::stats::{DropReason, Traffic};
use std::fmt;

/// Seconds on a monotonic clock; the caller chooses the epoch.
pub type Seconds = u64;

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

/// Which limit an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Bytes,
    Packets,
    Seconds,
    /// The sequence number is near (soft) or at (hard) its last value.
    SequenceSpace,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Bytes => "bytes",
            LimitKind::Packets => "packets",
            LimitKind::Seconds => "seconds",
            LimitKind::SequenceSpace => "sequence-space",
        })
    }
}

/// Soft or hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiry {
    Soft,
    Hard,
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expiry::Soft => "soft",
            Expiry::Hard => "hard",
        })
    }
}

/// An SA crossed a lifetime limit: the control plane rekeys on `Soft` and
/// removes the SA on `Hard`.
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
    const NEVER: Marks = Marks { packets: u64::MAX, bytes: u64::MAX, time: u64::MAX };

    fn of(limit: &Limit, created: Seconds) -> Self {
        Marks {
            packets: limit.packets.unwrap_or(u64::MAX),
            bytes: limit.bytes.unwrap_or(u64::MAX),
            time: limit.seconds.map_or(u64::MAX, |s| created.saturating_add(s)),
        }
    }

    fn min(self, o: Marks) -> Marks {
        Marks { packets: self.packets.min(o.packets), bytes: self.bytes.min(o.bytes), time: self.time.min(o.time) }
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

/// The lifetime of one SA: its traffic so far and the events it raised.
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
    pub fn new(spi: u32, direction: Direction, lifetimes: &Lifetimes, created: Seconds) -> Self {
        let soft = Marks::of(&lifetimes.soft, created);
        let hard = Marks::of(&lifetimes.hard, created);
        Self {
            created,
            traffic: Traffic::default(),
            spi,
            direction,
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
        LifetimeEvent { spi: self.spi, direction: self.direction, expiry, limit }
    }

    /// Refuses a packet on an expired SA, or at its hard time limit
    /// (expiring it there and then).
    #[inline]
    pub fn admit(&mut self, now: Seconds, events: &mut Vec<LifetimeEvent>) -> Result<(), DropReason> {
        if self.hard_expired {
            return Err(DropReason::Expired);
        }
        if now >= self.hard.time {
            self.poll(now, events);
            return Err(DropReason::Expired);
        }
        Ok(())
    }

    /// Counts one packet of `bytes` inner bytes; evaluates the limits only
    /// when the nearest mark is reached.
    #[inline]
    pub fn account(&mut self, bytes: usize, now: Seconds, events: &mut Vec<LifetimeEvent>) {
        self.traffic.packets += 1;
        self.traffic.bytes += bytes as u64;
        if self.next.reached(&self.traffic, now).is_some() {
            self.poll(now, events);
        }
    }

    /// Evaluates the limits at `now` (the control plane polls idle SAs for
    /// their time limits): soft first, then hard, each raised once.
    pub fn poll(&mut self, now: Seconds, events: &mut Vec<LifetimeEvent>) {
        if let Some(limit) = self.soft.reached(&self.traffic, now) {
            self.warn(limit, events);
        }
        if let Some(limit) = self.hard.reached(&self.traffic, now) {
            self.expire(limit, events);
        }
    }

    /// Raises the soft expiry for `limit`, unless one was raised already.
    pub fn warn(&mut self, limit: LimitKind, events: &mut Vec<LifetimeEvent>) {
        if !self.soft_raised {
            self.soft_raised = true;
            self.next = if self.hard_expired { Marks::NEVER } else { self.hard };
            events.push(self.event(Expiry::Soft, limit));
        }
    }

    /// Expires the SA for `limit`, unless it expired already.
    pub fn expire(&mut self, limit: LimitKind, events: &mut Vec<LifetimeEvent>) {
        if !self.hard_expired {
            self.hard_expired = true;
            self.next = Marks::NEVER;
            events.push(self.event(Expiry::Hard, limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(soft: Limit, hard: Limit, created: Seconds) -> LifetimeState {
        LifetimeState::new(0x1001, Direction::Inbound, &Lifetimes { soft, hard }, created)
    }

    fn kinds(ev: &[LifetimeEvent]) -> Vec<(Expiry, LimitKind)> {
        ev.iter().map(|e| (e.expiry, e.limit)).collect()
    }

    #[test]
    fn soft_then_hard_each_raised_once() {
        let mut l =
            state(Limit { packets: Some(2), ..Limit::default() }, Limit { packets: Some(4), ..Limit::default() }, 0);
        let mut ev = Vec::new();
        for _ in 0..6 {
            l.account(100, 0, &mut ev);
        }
        assert_eq!(kinds(&ev), [(Expiry::Soft, LimitKind::Packets), (Expiry::Hard, LimitKind::Packets)]);
        assert_eq!(ev[0].spi, 0x1001);
        assert!(l.is_expired());
        assert_eq!(l.admit(0, &mut ev), Err(DropReason::Expired));
        assert_eq!(ev.len(), 2);
    }

    /// Found in review: a soft and a hard limit crossed by the same packet
    /// raise both, soft first.
    #[test]
    fn soft_and_hard_on_one_packet_raise_both() {
        let mut l =
            state(Limit { bytes: Some(1000), ..Limit::default() }, Limit { bytes: Some(1000), ..Limit::default() }, 0);
        let mut ev = Vec::new();
        l.account(1500, 0, &mut ev);
        assert_eq!(kinds(&ev), [(Expiry::Soft, LimitKind::Bytes), (Expiry::Hard, LimitKind::Bytes)]);
    }

    #[test]
    fn time_limits_by_polling_and_by_admission() {
        let mut l = state(
            Limit { seconds: Some(10), ..Limit::default() },
            Limit { seconds: Some(20), ..Limit::default() },
            100,
        );
        let mut ev = Vec::new();
        l.poll(109, &mut ev);
        assert!(ev.is_empty());
        l.poll(110, &mut ev);
        assert_eq!(l.admit(119, &mut ev), Ok(()));
        assert_eq!(l.admit(120, &mut ev), Err(DropReason::Expired));
        assert_eq!(kinds(&ev), [(Expiry::Soft, LimitKind::Seconds), (Expiry::Hard, LimitKind::Seconds)]);
    }

    #[test]
    fn no_limits_never_expire() {
        let mut l = state(Limit::default(), Limit::default(), 0);
        let mut ev = Vec::new();
        l.account(usize::MAX / 2, u64::MAX - 1, &mut ev);
        l.poll(u64::MAX - 1, &mut ev);
        assert!(ev.is_empty() && !l.is_expired());
    }
}
