//! Idle strategies: what an agent does after a duty cycle that found no work.

use std::time::{Duration, Instant};

use crate::config::IdleStrategy;

/// What the agent should do before its next duty cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Go again at once.
    Now,
    /// Spin-loop hint, then go again.
    Spin,
    /// Yield the core.
    Yield,
    /// Sleep (or block in the kernel) up to this long, waking early on work.
    Park(Duration),
}

/// Idle time spent spinning before yielding.
const SPIN_FOR: Duration = Duration::from_micros(10);
/// Idle time (from the last work) after which yielding gives way to parking. A
/// parked agent costs a thread wake-up (tens of µs or more on a busy host) on the
/// next message, so an agent that saw traffic within this long stays runnable.
const YIELD_UNTIL: Duration = Duration::from_micros(250);
const FIRST_PARK: Duration = Duration::from_micros(20);
/// Idle time after which a parking agent sleeps deep: until its next protocol timer
/// (the receiver blocks in the kernel, where a datagram wakes it at once; a sender
/// with no publishers until its next counters refresh), so an idle node costs a few
/// wake-ups a second instead of one per `max_park`.
const DEEP_AFTER: Duration = Duration::from_millis(20);

/// Tracks how long the agent has been idle and escalates as the strategy says.
#[derive(Debug)]
pub(crate) struct Idler {
    strategy: IdleStrategy,
    max_park: Duration,
    idle_since: Option<Instant>,
    park: Duration,
}

impl Idler {
    pub(crate) fn new(strategy: IdleStrategy, max_park: Duration) -> Self {
        Idler {
            strategy,
            max_park: max_park.max(FIRST_PARK),
            idle_since: None,
            park: FIRST_PARK,
        }
    }

    /// Whether the agent has been idle long enough to sleep deep (park strategy only).
    pub(crate) fn deep(&self) -> bool {
        self.deep_at(Instant::now())
    }

    fn deep_at(&self, now: Instant) -> bool {
        self.strategy == IdleStrategy::Park
            && self
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= DEEP_AFTER)
    }

    /// Call after every duty cycle with the amount of work it did.
    pub(crate) fn after(&mut self, work: usize) -> Wait {
        self.after_at(work, Instant::now())
    }

    /// [`after`](Self::after) with the time passed in (for tests).
    pub(crate) fn after_at(&mut self, work: usize, now: Instant) -> Wait {
        if work > 0 {
            self.idle_since = None;
            self.park = FIRST_PARK;
            return Wait::Now;
        }
        match self.strategy {
            IdleStrategy::BusySpin => Wait::Spin,
            IdleStrategy::Yield => Wait::Yield,
            IdleStrategy::Park => {
                let idle = now.saturating_duration_since(*self.idle_since.get_or_insert(now));
                if idle < SPIN_FOR {
                    Wait::Spin
                } else if idle < YIELD_UNTIL {
                    Wait::Yield
                } else {
                    let d = self.park;
                    self.park = (self.park * 2).min(self.max_park);
                    Wait::Park(d)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn park_escalates_with_idle_time_and_resets_on_work() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut i = Idler::new(IdleStrategy::Park, Duration::from_millis(1));
        assert_eq!(i.after_at(0, at(0)), Wait::Spin);
        assert_eq!(i.after_at(0, at(5)), Wait::Spin);
        assert_eq!(i.after_at(0, at(20)), Wait::Yield);
        assert_eq!(i.after_at(0, at(249)), Wait::Yield);
        assert_eq!(i.after_at(0, at(250)), Wait::Park(FIRST_PARK));
        assert_eq!(i.after_at(0, at(300)), Wait::Park(FIRST_PARK * 2));
        for k in 0..10 {
            i.after_at(0, at(400 + k));
        }
        assert_eq!(i.after_at(0, at(500)), Wait::Park(Duration::from_millis(1)));
        assert!(!i.deep_at(at(500)));
        assert!(i.deep_at(at(20_000)), "idle 20 ms: deep");
        assert_eq!(i.after_at(3, at(20_001)), Wait::Now);
        assert!(!i.deep_at(at(20_002)), "work ends it");
        assert_eq!(i.after_at(0, at(20_002)), Wait::Spin);
    }

    #[test]
    fn busy_spin_never_sleeps() {
        let mut i = Idler::new(IdleStrategy::BusySpin, Duration::from_millis(1));
        assert!((0..10_000).all(|_| i.after(0) == Wait::Spin));
        let mut y = Idler::new(IdleStrategy::Yield, Duration::from_millis(1));
        assert_eq!(y.after(0), Wait::Yield);
        assert!(
            !i.deep_at(Instant::now() + Duration::from_secs(1)),
            "spinning never sleeps"
        );
    }
}
