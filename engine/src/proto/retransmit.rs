//! Publisher-side repair: which datagrams to send again for a NAK. The session keeps
//! its last `retained` datagrams (the sender agent's datagram pool doubles as the
//! retransmit window); a datagram asked for again within `linger` of its last
//! retransmission is not resent, so NAKs for the same loss from many receivers
//! cost one retransmission.

use std::time::{Duration, Instant};

/// Decides retransmissions for one publishing session.
#[derive(Debug)]
pub struct Retransmitter {
    retained: u64,
    linger: Duration,
    /// Per window slot: the sequence last retransmitted from it, and when.
    last: Vec<Option<(u64, Instant)>>,
}

impl Retransmitter {
    /// Keeps the last `retained` datagrams (at least 1).
    pub fn new(retained: usize, linger: Duration) -> Self {
        let retained = retained.max(1);
        Retransmitter {
            retained: retained as u64,
            linger,
            last: vec![None; retained],
        }
    }

    /// The oldest datagram still retransmittable when `next_seq` is the next to send.
    pub fn oldest(&self, next_seq: u64) -> u64 {
        next_seq.saturating_sub(self.retained)
    }

    /// Calls `resend(seq)` for every datagram of `from..to` still retained and not
    /// retransmitted within the linger time, at most `budget` of them (the rest are
    /// left untouched, to be asked for again). Returns how many.
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
}
