//! Packet capture from the data plane (`vpnctl capture`): copies of one
//! tunnel's packets, inner (plaintext, as they enter or leave the tunnel)
//! or outer (ESP, as sent and received), taken at a bounded rate into a
//! bounded queue, so a capture never slows forwarding: a packet over the
//! rate, or finding the queue full, is simply not copied (and counted as
//! missed). The workers copy; the control thread takes the copies.

use crate::model::TunnelId;
use crate::policer::Policer;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which packets of the tunnel are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapPoint {
    /// The IP packet inside the tunnel: before encryption, after decryption.
    Inner,
    /// The ESP packet: after encryption, before decryption.
    Outer,
}

/// One copied packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Wall-clock time of the copy, in microseconds since 1970.
    pub micros: u64,
    /// Going into the tunnel (else coming out of it).
    pub outbound: bool,
    /// The IP packet (no link header).
    pub data: Vec<u8>,
}

/// The most packets a second a capture copies by default.
pub const DEFAULT_PPS: u64 = 10_000;
/// How many copies wait for the control thread at most.
pub const QUEUE: usize = 4096;

/// A capture in progress.
#[derive(Debug)]
pub struct Tap {
    pub tunnel: TunnelId,
    pub point: TapPoint,
    /// Copies still wanted.
    remaining: AtomicU64,
    /// A packet costs one "byte": the policer bounds packets per second.
    rate: Policer,
    queue: ArrayQueue<Captured>,
    missed: AtomicU64,
}

impl Tap {
    /// A capture of `count` packets of `tunnel` at `point`, at most `pps`
    /// a second (a burst of 64).
    pub fn new(tunnel: TunnelId, point: TapPoint, count: u64, pps: u64) -> Self {
        Self {
            tunnel,
            point,
            remaining: AtomicU64::new(count),
            rate: Policer::new(pps.clamp(1, u64::MAX / 8) * 8, 64),
            queue: ArrayQueue::new(QUEUE),
            missed: AtomicU64::new(0),
        }
    }

    /// Whether packets of `tunnel` at `point` are wanted.
    #[inline]
    pub fn wants(&self, tunnel: TunnelId, point: TapPoint) -> bool {
        self.tunnel == tunnel && self.point == point && self.remaining.load(Ordering::Relaxed) > 0
    }

    /// Copies `data` if the rate and the queue allow (and a copy is still
    /// wanted); `now` in the policers' ticks ([`crate::policer::now`], read once
    /// per burst by the pipeline). Over the rate it costs a load and a
    /// compare.
    pub fn copy(&self, data: &[u8], outbound: bool, now: u64) {
        if !self.rate.admit(1, now) {
            self.missed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let taken = self.remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if !taken {
            return;
        }
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        if self.queue.push(Captured { micros, outbound, data: data.to_vec() }).is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
            self.remaining.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The copies made since the last call.
    pub fn take(&self) -> Vec<Captured> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    /// Packets not copied: over the rate, or the queue was full.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// Copies still wanted (made but not taken count as made).
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policer;

    #[test]
    fn copies_what_is_asked_and_no_more() {
        let tap = Tap::new(7, TapPoint::Inner, 3, 1_000_000);
        assert!(tap.wants(7, TapPoint::Inner) && !tap.wants(7, TapPoint::Outer) && !tap.wants(8, TapPoint::Inner));
        for i in 0..5u8 {
            tap.copy(&[i; 4], i % 2 == 0, policer::now());
        }
        let got = tap.take();
        assert_eq!(got.iter().map(|c| (c.data[0], c.outbound)).collect::<Vec<_>>(), [(0, true), (1, false), (2, true)]);
        assert!(!tap.wants(7, TapPoint::Inner), "done");
        assert!(tap.take().is_empty());
    }

    #[test]
    fn the_rate_bounds_the_copies() {
        let tap = Tap::new(1, TapPoint::Outer, 1_000_000, 100);
        for _ in 0..10_000 {
            tap.copy(&[0; 64], true, policer::now());
        }
        let n = tap.take().len();
        assert!((64..=70).contains(&n), "a burst of 64, and what 100/s adds meanwhile: {n}");
        assert_eq!(tap.missed(), 10_000 - n as u64);
    }
}
