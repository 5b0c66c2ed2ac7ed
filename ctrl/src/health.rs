//! A tunnel's health check as a state machine, without I/O: fed the time
//! and the probe answers the workers saw, it says when to send a probe and
//! when the tunnel goes down or comes back (so it is tested with a made-up
//! clock). The product's rules: a probe every interval; a probe not
//! answered within the timeout is lost; `failures` lost in a row take the
//! tunnel down; once down, answered probes for the hold-down time in a row
//! bring it back, so a flapping tunnel does not flap its routes.

use crate::config::HealthCheck;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many recent probes loss and delay are computed over.
pub const WINDOW: usize = 10;

/// What a probe result changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The first probe lost while up.
    Failing,
    /// `failures` probes in a row lost: the tunnel goes down.
    Down { lost: u8 },
    /// Down, and a probe answered: the hold-down starts.
    Recovering,
    /// Answered for the whole hold-down: the tunnel comes back.
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Up,
    /// Down; `since` the first answer of the current run of answers, if any.
    Down {
        #[serde(skip)]
        recovering_since: Option<Instant>,
    },
}

/// One tunnel's health check.
#[derive(Debug, Clone)]
pub struct Checker {
    pub cfg: HealthCheck,
    /// The ICMP identifier of this tunnel's probes.
    pub ident: u16,
    next_seq: u16,
    next_probe: Instant,
    /// Sent and not yet answered or lost: sequence number, when sent.
    outstanding: VecDeque<(u16, Instant)>,
    lost_in_row: u8,
    state: State,
    /// The last [`WINDOW`] results: the round trip, or lost.
    recent: VecDeque<Option<Duration>>,
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
}

/// A checker's numbers, as operators see them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HealthView {
    /// `up`, `down`, or `recovering` (down, in the hold-down).
    pub state: String,
    /// Lost, of the last [`WINDOW`] probes judged.
    pub loss_percent: f64,
    /// The mean round trip of the answered ones among them.
    pub delay_ms: Option<f64>,
    pub probes_sent: u64,
    pub probes_answered: u64,
    pub probes_lost: u64,
}

impl Checker {
    /// A check that sends its first probe at `now`, the tunnel up.
    pub fn new(cfg: HealthCheck, ident: u16, now: Instant) -> Self {
        Self {
            cfg,
            ident,
            next_seq: 1,
            next_probe: now,
            outstanding: VecDeque::new(),
            lost_in_row: 0,
            state: State::Up,
            recent: VecDeque::with_capacity(WINDOW),
            sent: 0,
            answered: 0,
            lost: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.cfg.interval_ms as u64)
    }

    fn record(&mut self, r: Option<Duration>) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(r);
    }

    /// Advances to `now`: probes unanswered past the timeout are lost (which
    /// may take the tunnel down), a hold-down that ran out brings it up;
    /// returns the probe to send now (its sequence number), if one is due.
    pub fn tick(&mut self, now: Instant, changes: &mut Vec<Transition>) -> Option<u16> {
        let timeout = Duration::from_millis(self.cfg.timeout_ms as u64);
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now.duration_since(sent) < timeout {
                break;
            }
            self.outstanding.pop_front();
            self.lost += 1;
            self.record(None);
            self.lost_in_row = self.lost_in_row.saturating_add(1);
            match &mut self.state {
                State::Up if self.lost_in_row == 1 && self.cfg.failures > 1 => changes.push(Transition::Failing),
                State::Up if self.lost_in_row >= self.cfg.failures => {
                    self.state = State::Down { recovering_since: None };
                    changes.push(Transition::Down { lost: self.lost_in_row });
                }
                State::Up => {}
                State::Down { recovering_since } => *recovering_since = None,
            }
        }
        self.check_hold_down(now, changes);
        if now < self.next_probe {
            return None;
        }
        // Due: one probe, however late the tick (no catching up in bursts).
        self.next_probe = (self.next_probe + self.interval()).max(now);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.outstanding.push_back((seq, now));
        self.sent += 1;
        Some(seq)
    }

    /// Probe `seq` was answered at `at`. An answer to a probe already lost,
    /// or never sent, changes nothing.
    pub fn answer(&mut self, seq: u16, at: Instant, changes: &mut Vec<Transition>) {
        let Some(i) = self.outstanding.iter().position(|&(s, _)| s == seq) else { return };
        let (_, sent) = self.outstanding.remove(i).expect("found");
        self.answered += 1;
        self.record(Some(at.saturating_duration_since(sent)));
        self.lost_in_row = 0;
        if let State::Down { recovering_since: since @ None } = &mut self.state {
            *since = Some(at);
            changes.push(Transition::Recovering);
        }
        self.check_hold_down(at, changes);
    }

    fn check_hold_down(&mut self, now: Instant, changes: &mut Vec<Transition>) {
        if let State::Down { recovering_since: Some(since) } = self.state {
            if now.saturating_duration_since(since) >= Duration::from_millis(self.cfg.hold_down_ms as u64) {
                self.state = State::Up;
                changes.push(Transition::Up);
            }
        }
    }

    /// Lost, of the recent probes, in percent (0 before any was judged).
    pub fn loss_percent(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        100.0 * self.recent.iter().filter(|r| r.is_none()).count() as f64 / self.recent.len() as f64
    }

    /// The mean round trip of the recent answered probes, in milliseconds.
    pub fn delay_ms(&self) -> Option<f64> {
        let rtts: Vec<f64> = self.recent.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
        (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64)
    }

    pub fn view(&self) -> HealthView {
        let state = match self.state {
            State::Up => "up",
            State::Down { recovering_since: None } => "down",
            State::Down { recovering_since: Some(_) } => "recovering",
        };
        HealthView {
            state: state.to_string(),
            loss_percent: self.loss_percent(),
            delay_ms: self.delay_ms(),
            probes_sent: self.sent,
            probes_answered: self.answered,
            probes_lost: self.lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(interval_ms: u32, failures: u8, timeout_ms: u32, hold_down_ms: u32) -> HealthCheck {
        let mut h = HealthCheck::new("169.254.0.1".parse().unwrap(), "169.254.0.2".parse().unwrap());
        (h.interval_ms, h.failures, h.timeout_ms, h.hold_down_ms) = (interval_ms, failures, timeout_ms, hold_down_ms);
        h
    }

    /// Runs `c` from `t0` for `ms` in steps of 10 ms; the peer answers
    /// after 5 ms while `alive(t)` says so. Returns the transitions, each
    /// with its time in ms.
    fn run(c: &mut Checker, t0: Instant, from_ms: u64, ms: u64, alive: impl Fn(u64) -> bool) -> Vec<(u64, Transition)> {
        let mut out = Vec::new();
        let mut pending: Vec<(u64, u16)> = Vec::new();
        for t in (from_ms..from_ms + ms).step_by(10) {
            let now = t0 + Duration::from_millis(t);
            let mut changes = Vec::new();
            for (due, seq) in std::mem::take(&mut pending) {
                if due <= t {
                    c.answer(seq, now, &mut changes);
                } else {
                    pending.push((due, seq));
                }
            }
            if let Some(seq) = c.tick(now, &mut changes) {
                if alive(t) {
                    pending.push((t + 5, seq));
                }
            }
            out.extend(changes.into_iter().map(|c| (t, c)));
        }
        out
    }

    #[test]
    fn a_dead_peer_takes_the_tunnel_down_within_failures_times_interval_plus_one() {
        let t0 = Instant::now();
        let mut c = Checker::new(check(1000, 3, 500, 5000), 1, t0);
        // Alive for 10 s, dead after.
        let changes = run(&mut c, t0, 0, 20_000, |t| t < 10_000);
        let down = changes.iter().find(|(_, c)| matches!(c, Transition::Down { .. })).expect("down");
        // Last answered probe at 9,000; lost ones sent at 10,000, 11,000, 12,000;
        // the third times out at 12,500.
        assert_eq!(down.0, 12_500);
        assert!(down.0 - 10_000 <= 3 * 1000 + 1000, "within failures x interval + one interval of the death");
        assert_eq!(changes[0], (10_500, Transition::Failing));
        assert!(!c.is_up());
        assert_eq!(c.loss_percent(), 100.0);
    }

    #[test]
    fn it_comes_back_only_after_the_hold_down_answered_throughout() {
        let t0 = Instant::now();
        let mut c = Checker::new(check(1000, 3, 500, 5000), 1, t0);
        run(&mut c, t0, 0, 5000, |_| false);
        assert!(!c.is_up());
        // The peer is back from 5 s, but one probe is lost at 8 s: the hold-down restarts.
        let changes = run(&mut c, t0, 5000, 15_000, |t| !(8000..8010).contains(&t));
        let kinds: Vec<_> = changes.iter().map(|(t, c)| (*t, c.clone())).collect();
        assert_eq!(
            kinds,
            [(5010, Transition::Recovering), (9010, Transition::Recovering), (14_010, Transition::Up)],
            "answered at 5,005 (seen at 5,010); lost at 8,000 (judged at 8,500); again from 9,005; up 5 s later"
        );
        assert!(c.is_up());
    }

    #[test]
    fn loss_and_delay_are_over_the_recent_probes() {
        let t0 = Instant::now();
        let mut c = Checker::new(check(1000, 8, 100, 0), 1, t0);
        // Every other probe lost: not 8 in a row, so it stays up.
        let changes = run(&mut c, t0, 0, 20_000, |t| (t / 1000) % 2 == 0);
        assert!(c.is_up());
        assert!(changes.iter().all(|(_, c)| *c == Transition::Failing));
        assert!((c.loss_percent() - 50.0).abs() < 10.1, "{}", c.loss_percent());
        let d = c.delay_ms().unwrap();
        assert!((5.0..=10.0).contains(&d), "answered 5 ms later, seen on the next 10 ms tick: {d}");
        let v = c.view();
        assert_eq!((v.state.as_str(), v.probes_sent), ("up", 20));
        assert_eq!(v.probes_answered + v.probes_lost + c.outstanding.len() as u64, 20);
    }

    #[test]
    fn late_and_unknown_answers_change_nothing() {
        let t0 = Instant::now();
        let mut c = Checker::new(check(1000, 3, 100, 0), 1, t0);
        let mut ch = Vec::new();
        let seq = c.tick(t0, &mut ch).unwrap();
        assert_eq!(c.tick(t0 + Duration::from_millis(200), &mut ch), None, "not due");
        assert_eq!(c.lost, 1, "timed out at 100 ms");
        c.answer(seq, t0 + Duration::from_millis(300), &mut ch);
        c.answer(999, t0 + Duration::from_millis(300), &mut ch);
        assert_eq!((c.answered, c.lost, ch.len()), (0, 1, 1), "only the Failing of the loss");
    }
}
