//! The RFC 6479 replay window against a plain reference model: a set of
//! every number received and the highest one. Reordering, duplicates, large
//! jumps, every window size class, and ESN across 2^32.

use proptest::prelude::*;
use std::collections::BTreeSet;
use vpngw_engine::replay::{ReplayWindow, MAX_WINDOW, MIN_WINDOW};

/// RFC 4303 section 3.4.3, written as plainly as possible.
struct Model {
    size: u64,
    top: u64,
    seen: BTreeSet<u64>,
}

impl Model {
    fn accepts(&self, seq: u64) -> bool {
        seq != 0 && (seq > self.top || (self.top - seq < self.size && !self.seen.contains(&seq)))
    }

    fn receive(&mut self, seq: u64) {
        self.seen.insert(seq);
        self.top = self.top.max(seq);
    }
}

/// A step of the sender: how the next number relates to the highest so far.
#[derive(Debug, Clone)]
enum Step {
    /// top + k: in order, or a small gap.
    Ahead(u64),
    /// top - k: reordered (k < window) or too old (k >= window).
    Behind(u64),
    /// A number seen before, again.
    Duplicate(usize),
    /// A jump of up to `max_jump`.
    Jump(u64),
}

/// Steps whose jumps stay below `max_jump`: 2^31 for ESN (what inference
/// can follow), 2^20 without (so a run stays far from 2^32 - 1, where every
/// further number would clamp to the same one).
fn step(max_jump: u64) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..4).prop_map(Step::Ahead),
        4 => (0u64..5000).prop_map(Step::Behind),
        2 => any::<usize>().prop_map(Step::Duplicate),
        1 => (1u64..max_jump).prop_map(Step::Jump),
    ]
}

fn window_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(MIN_WINDOW), Just(1024), Just(4096), MIN_WINDOW..=8192u32, Just(MAX_WINDOW)]
}

fn next_seq(s: &Step, model: &Model, sent: &[u64]) -> u64 {
    match *s {
        Step::Ahead(k) | Step::Jump(k) => model.top + k,
        Step::Behind(k) => model.top.saturating_sub(k),
        Step::Duplicate(i) if !sent.is_empty() => sent[i % sent.len()],
        Step::Duplicate(_) => 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Without ESN: for 32-bit sequence numbers the window decides exactly as
    /// the model does, and only what passed the check moves it.
    #[test]
    fn window_matches_model(size in window_size(), steps in prop::collection::vec(step(1 << 20), 1..300)) {
        let mut w = ReplayWindow::new(size, false).unwrap();
        let mut m = Model { size: size as u64, top: 0, seen: BTreeSet::new() };
        let mut sent = Vec::new();
        for s in &steps {
            let seq = next_seq(s, &m, &sent);
            sent.push(seq);
            let ok = w.check(seq).is_ok();
            prop_assert_eq!(ok, m.accepts(seq), "seq {} top {}", seq, m.top);
            if ok {
                w.update(seq);
                m.receive(seq);
            }
            prop_assert_eq!(w.top(), m.top);
        }
    }

    /// A packet whose ICV fails never reaches `update`: the window is as if
    /// the packet never came.
    #[test]
    fn forged_packets_do_not_move_the_window(size in window_size(), steps in prop::collection::vec(step(1 << 20), 1..200), forged in prop::collection::vec(any::<bool>(), 200)) {
        let mut w = ReplayWindow::new(size, false).unwrap();
        let mut m = Model { size: size as u64, top: 0, seen: BTreeSet::new() };
        let mut sent = Vec::new();
        for (s, &bad) in steps.iter().zip(&forged) {
            let seq = next_seq(s, &m, &sent);
            if w.check(seq).is_ok() && !bad {
                w.update(seq);
                m.receive(seq);
                sent.push(seq);
            }
        }
        for seq in m.top.saturating_sub(m.size + 10)..=m.top + 10 {
            prop_assert_eq!(w.check(seq).is_ok(), m.accepts(seq), "seq {}", seq);
        }
    }

    /// With ESN the receiver sees only the low 32 bits. Starting anywhere,
    /// around 2^32 included, every number within the inference range
    /// (RFC 4303 appendix A) is recovered exactly, and the decision is the
    /// model's decision on the full number.
    #[test]
    fn esn_inference_recovers_the_full_number(
        size in window_size(),
        start in prop_oneof![Just(0u64), (1u64 << 32) - 3000..(1u64 << 32) + 3000, (5u64 << 32) - 100..(5u64 << 32) + 100],
        steps in prop::collection::vec(step(1 << 31), 1..300),
    ) {
        let mut w = ReplayWindow::new(size, true).unwrap();
        w.start_after(start);
        let mut m = Model { size: size as u64, top: start, seen: BTreeSet::new() };
        let mut sent = Vec::new();
        for s in &steps {
            let seq = next_seq(s, &m, &sent);
            sent.push(seq);
            let lowest = m.top.saturating_sub(m.size - 1).max(1);
            let inferred = w.infer(seq as u32);
            if seq == 0 {
                // Senders never send 0. Its low half may stand for 2^32 k
                // (for the ICV to decide), but the number 0 is never accepted.
                prop_assert!(w.check(0).is_err());
                continue;
            }
            if seq >= lowest {
                prop_assert_eq!(inferred, Some(seq), "top {:#x}", m.top);
            } else if let Some(guess) = inferred {
                // Too old to tell apart: the guess is another number with the
                // same low half, which the ICV would then refuse.
                prop_assert_eq!(guess as u32, seq as u32);
                prop_assert_ne!(guess, seq);
                continue;
            } else {
                continue;
            }
            let ok = w.check(seq).is_ok();
            prop_assert_eq!(ok, m.accepts(seq));
            if ok {
                w.update(seq);
                m.receive(seq);
            }
        }
    }
}
