//! Delivery accounting on the subscriber: only verified deliveries count.
//!
//! Every counted message `0..expected` must arrive exactly once with a payload
//! that matches its sequence number. The tracker keeps one bit per expected
//! message, so duplicates are found exactly and `lost = expected - unique`.

use crate::message::Decoded;
use serde::{Deserialize, Serialize};

/// What one received message did to the tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First verified delivery of a counted message; its send stamp.
    Delivered { stamp: u64 },
    /// A verified warm-up message (not counted).
    Warmup,
    /// A counted message seen before.
    Duplicate,
    /// Wrong size, bad payload, or a sequence number outside the run.
    Corrupt,
}

/// Tallies of one subscriber run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub expected: u64,
    /// Unique verified deliveries.
    pub received: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    /// Messages that arrived with a lower sequence than one already seen.
    pub reordered: u64,
    pub warmups: u64,
    /// CLOCK_MONOTONIC ns of the first and last verified delivery.
    pub first_recv_ns: Option<u64>,
    pub last_recv_ns: Option<u64>,
}

impl Tally {
    /// Messages of the run never delivered (verified).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

/// Tracks which sequence numbers have been delivered.
#[derive(Debug)]
pub struct Tracker {
    seen: Vec<u64>,
    max_seq: Option<u64>,
    tally: Tally,
}

impl Tracker {
    /// Expect messages `0..expected`.
    pub fn new(expected: u64) -> Self {
        Tracker {
            seen: vec![0; expected.div_ceil(64) as usize],
            max_seq: None,
            tally: Tally {
                expected,
                ..Tally::default()
            },
        }
    }

    /// Account for one decoded message received at `now_ns`.
    #[inline]
    pub fn on_message(&mut self, decoded: Decoded, now_ns: u64) -> Outcome {
        match decoded {
            Decoded::Warmup => {
                self.tally.warmups += 1;
                Outcome::Warmup
            }
            Decoded::Corrupt => {
                self.tally.corrupted += 1;
                Outcome::Corrupt
            }
            Decoded::Counted { seq, stamp } => {
                if seq >= self.tally.expected {
                    self.tally.corrupted += 1;
                    return Outcome::Corrupt;
                }
                let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if self.seen[word] & bit != 0 {
                    self.tally.duplicated += 1;
                    return Outcome::Duplicate;
                }
                self.seen[word] |= bit;
                match self.max_seq {
                    Some(m) if seq < m => self.tally.reordered += 1,
                    _ => self.max_seq = Some(seq),
                }
                self.tally.received += 1;
                self.tally.first_recv_ns.get_or_insert(now_ns);
                self.tally.last_recv_ns = Some(now_ns);
                Outcome::Delivered { stamp }
            }
        }
    }

    /// Every expected message has been delivered.
    #[inline]
    pub fn complete(&self) -> bool {
        self.tally.received == self.tally.expected
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Pattern, WARMUP_FLAG};

    fn counted(seq: u64) -> Decoded {
        Decoded::Counted {
            seq,
            stamp: seq * 10,
        }
    }

    #[test]
    fn counts_a_known_delivery_sequence() {
        let mut t = Tracker::new(10);
        let deliveries = [
            Decoded::Warmup,
            counted(0),
            counted(1),
            counted(3), // 2 skipped
            counted(2), // late: reordered
            counted(3), // duplicate
            Decoded::Corrupt,
            counted(99), // outside the run: corrupt
            counted(5),
            counted(9),
        ];
        let outcomes: Vec<_> = deliveries
            .iter()
            .enumerate()
            .map(|(i, d)| t.on_message(*d, 100 + i as u64))
            .collect();
        assert_eq!(outcomes[1], Outcome::Delivered { stamp: 0 });
        assert_eq!(outcomes[5], Outcome::Duplicate);
        assert_eq!(outcomes[7], Outcome::Corrupt);
        let tally = t.tally();
        assert_eq!(tally.received, 6); // 0 1 3 2 5 9
        assert_eq!(tally.lost(), 4); // 4 6 7 8
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.corrupted, 2);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.warmups, 1);
        assert_eq!(tally.first_recv_ns, Some(101));
        assert_eq!(tally.last_recv_ns, Some(109));
        assert!(!t.complete());
    }

    #[test]
    fn complete_run_through_the_pattern() {
        let p = Pattern::new(64);
        let mut t = Tracker::new(130);
        let mut buf = vec![0u8; 64];
        p.fill(&mut buf, 7 | WARMUP_FLAG, 0);
        t.on_message(p.decode(&buf), 0);
        for seq in 0..130 {
            p.fill(&mut buf, seq, seq);
            assert!(matches!(
                t.on_message(p.decode(&buf), seq + 1),
                Outcome::Delivered { .. }
            ));
        }
        assert!(t.complete());
        assert_eq!(t.tally().lost(), 0);
        assert_eq!(t.tally().warmups, 1);
    }
}
