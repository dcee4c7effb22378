//! Publisher-side repair: which datagrams to send again for a NAK. The session keeps
//! its last `retained` datagrams (the sender agent's datagram pool doubles as the
//! retransmit window); a datagram asked for again within `linger` of its last
//! retransmission is not resent, so NAKs for the same loss from many receivers
//! cost one retransmission. What one call's budget leaves of a NAKed range is kept
//! and resent by later calls ([`Retransmitter::resume`]), so a burst loss larger than
//! a send batch is repaired at once, batch after batch, not one batch per NAK round.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// NAKed ranges kept for later calls at most (the oldest are dropped: their
/// receivers ask again).
const PENDING_RANGES: usize = 256;

/// Decides retransmissions for one publishing session.
#[derive(Debug)]
pub struct Retransmitter {
    retained: u64,
    linger: Duration,
    /// Per window slot: the sequence last retransmitted from it, and when.
    last: Vec<Option<(u64, Instant)>>,
    /// Parts of NAKed ranges a budget left unsent, oldest first.
    pending: VecDeque<(u64, u64)>,
}

impl Retransmitter {
    /// Keeps the last `retained` datagrams (at least 1).
    pub fn new(retained: usize, linger: Duration) -> Self {
        let retained = retained.max(1);
        Retransmitter {
            retained: retained as u64,
            linger,
            last: vec![None; retained],
            pending: VecDeque::new(),
        }
    }

    /// The oldest datagram still retransmittable when `next_seq` is the next to send.
    pub fn oldest(&self, next_seq: u64) -> u64 {
        next_seq.saturating_sub(self.retained)
    }

    /// Calls `resend(seq)` for every datagram of `from..to` still retained and not
    /// retransmitted within the linger time, at most `budget` of them; the rest is kept
    /// for [`resume`](Self::resume). Returns how many.
    pub fn on_nak(
        &mut self,
        now: Instant,
        from: u64,
        to: u64,
        next_seq: u64,
        budget: usize,
        resend: &mut dyn FnMut(u64),
    ) -> usize {
        let lo = from.max(self.oldest(next_seq));
        let hi = to.min(next_seq);
        let mut n = 0;
        for seq in lo..hi {
            if n == budget {
                self.keep(seq, hi);
                break;
            }
            let slot = &mut self.last[(seq % self.retained) as usize];
            let recent = matches!(*slot, Some((s, t)) if s == seq && now.saturating_duration_since(t) < self.linger);
            if !recent {
                *slot = Some((seq, now));
                resend(seq);
                n += 1;
            }
        }
        n
    }

    /// Whether NAKed datagrams wait for [`resume`](Self::resume).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Resends, within `budget`, what earlier calls' budgets left of NAKed ranges
    /// (what fell out of the window meanwhile is skipped). Returns how many.
    pub fn resume(
        &mut self,
        now: Instant,
        next_seq: u64,
        budget: usize,
        resend: &mut dyn FnMut(u64),
    ) -> usize {
        let mut n = 0;
        while n < budget {
            let Some((from, to)) = self.pending.pop_front() else {
                break;
            };
            // what the budget leaves of it goes back in the queue
            n += self.on_nak(now, from, to, next_seq, budget - n, resend);
        }
        n
    }

    /// Keeps `from..to` for later, merged into a kept range it touches.
    fn keep(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        if let Some(r) = self.pending.iter_mut().find(|r| from <= r.1 && r.0 <= to) {
            *r = (r.0.min(from), r.1.max(to));
            return;
        }
        if self.pending.len() == PENDING_RANGES {
            self.pending.pop_front();
        }
        self.pending.push_back((from, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_retained_once_per_linger() {
        let t0 = Instant::now();
        let mut r = Retransmitter::new(10, Duration::from_millis(1));
        let mut got = Vec::new();
        // 100 sent: 90..100 retained; 85..95 asked: 90..95 resent
        assert_eq!(r.on_nak(t0, 85, 95, 100, 64, &mut |s| got.push(s)), 5);
        assert_eq!(got, vec![90, 91, 92, 93, 94]);
        // asked again at once: lingering, nothing resent
        assert_eq!(
            r.on_nak(t0, 90, 95, 100, 64, &mut |_| panic!("resent twice")),
            0
        );
        // after the linger time it goes again; beyond next_seq is never "resent"
        got.clear();
        let later = t0 + Duration::from_millis(2);
        assert_eq!(r.on_nak(later, 93, 1000, 100, 64, &mut |s| got.push(s)), 7);
        assert_eq!(got, (93..100).collect::<Vec<_>>());
        assert_eq!(r.oldest(100), 90);
        // a budget leaves the rest unmarked: asked again, they go
        let mut first = Vec::new();
        let t2 = t0 + Duration::from_millis(10);
        assert_eq!(r.on_nak(t2, 90, 100, 100, 3, &mut |s| first.push(s)), 3);
        let mut rest = Vec::new();
        assert_eq!(r.on_nak(t2, 90, 100, 100, 64, &mut |s| rest.push(s)), 7);
        assert_eq!(
            (first, rest),
            (vec![90, 91, 92], (93..100).collect::<Vec<_>>())
        );
        assert_eq!(r.oldest(3), 0);
    }

    #[test]
    fn what_a_budget_leaves_is_resent_by_later_calls() {
        let t0 = Instant::now();
        let mut r = Retransmitter::new(1000, Duration::from_millis(1));
        let mut got = Vec::new();
        // a burst of 10 lost, 4 per call
        assert_eq!(r.on_nak(t0, 100, 110, 500, 4, &mut |s| got.push(s)), 4);
        assert!(r.has_pending());
        assert_eq!(r.resume(t0, 500, 4, &mut |s| got.push(s)), 4);
        // a second range joins the queue; the rest of both go, oldest first
        assert_eq!(r.on_nak(t0, 200, 203, 500, 0, &mut |s| got.push(s)), 0);
        assert_eq!(r.resume(t0, 500, 64, &mut |s| got.push(s)), 5);
        assert!(!r.has_pending());
        let want: Vec<u64> = (100..110).chain(200..203).collect();
        assert_eq!(got, want);
        // overlapping leftovers merge; what left the window meanwhile is skipped
        r.on_nak(t0 + Duration::from_millis(5), 300, 320, 500, 0, &mut |_| {});
        r.on_nak(t0 + Duration::from_millis(5), 310, 330, 500, 0, &mut |_| {});
        got.clear();
        let later = t0 + Duration::from_millis(10);
        assert_eq!(r.resume(later, 1315, 100, &mut |s| got.push(s)), 15);
        assert_eq!(got, (315..330).collect::<Vec<_>>());
    }
}
