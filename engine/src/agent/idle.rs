//! Idle strategies: what an agent does after a duty cycle that found no work.

use std::time::Duration;

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

const SPINS: u32 = 200;
const YIELDS: u32 = 20;
const FIRST_PARK: Duration = Duration::from_micros(20);

/// Tracks consecutive idle cycles and escalates as the strategy says.
#[derive(Debug)]
pub(crate) struct Idler {
    strategy: IdleStrategy,
    max_park: Duration,
    idle_cycles: u32,
    park: Duration,
}

impl Idler {
    pub(crate) fn new(strategy: IdleStrategy, max_park: Duration) -> Self {
        Idler {
            strategy,
            max_park: max_park.max(FIRST_PARK),
            idle_cycles: 0,
            park: FIRST_PARK,
        }
    }

    /// Call after every duty cycle with the amount of work it did.
    pub(crate) fn after(&mut self, work: usize) -> Wait {
        if work > 0 {
            self.idle_cycles = 0;
            self.park = FIRST_PARK;
            return Wait::Now;
        }
        self.idle_cycles = self.idle_cycles.saturating_add(1);
        match self.strategy {
            IdleStrategy::BusySpin => Wait::Spin,
            IdleStrategy::Yield => Wait::Yield,
            IdleStrategy::Park => {
                if self.idle_cycles <= SPINS {
                    Wait::Spin
                } else if self.idle_cycles <= SPINS + YIELDS {
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
    fn park_escalates_and_resets_on_work() {
        let mut i = Idler::new(IdleStrategy::Park, Duration::from_millis(1));
        let waits: Vec<Wait> = (0..(SPINS + YIELDS + 10)).map(|_| i.after(0)).collect();
        assert_eq!(waits[0], Wait::Spin);
        assert_eq!(waits[SPINS as usize], Wait::Yield);
        assert_eq!(waits[(SPINS + YIELDS) as usize], Wait::Park(FIRST_PARK));
        assert_eq!(*waits.last().unwrap(), Wait::Park(Duration::from_millis(1)));
        assert_eq!(i.after(3), Wait::Now);
        assert_eq!(i.after(0), Wait::Spin);
    }

    #[test]
    fn busy_spin_never_sleeps() {
        let mut i = Idler::new(IdleStrategy::BusySpin, Duration::from_millis(1));
        assert!((0..10_000).all(|_| i.after(0) == Wait::Spin));
        let mut y = Idler::new(IdleStrategy::Yield, Duration::from_millis(1));
        assert_eq!(y.after(0), Wait::Yield);
    }
}
