//! Machine-jitter probe: how long a pinned, spinning thread is kept off its core.
//!
//! One thread per probed core reads the monotonic clock in a tight loop for a
//! fixed time; any gap between consecutive reads beyond a few hundred
//! nanoseconds is time the thread did not run (hypervisor steal, interrupts,
//! other tenants). Recorded with every report so readers can tell the VM's
//! noise from the system's.

use crate::clock::now_ns;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Gaps shorter than this are the loop itself, not interference.
const FLOOR_NS: u64 = 500;

/// Result for one core.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CoreJitter {
    pub core: usize,
    pub duration_ns: u64,
    /// The largest gaps between consecutive clock reads, largest first (ns).
    pub largest_gaps_ns: Vec<u64>,
    pub gaps_over_10us: u64,
    pub gaps_over_100us: u64,
    pub gaps_over_1ms: u64,
    /// Fraction of the probe spent in gaps over the floor (time off core).
    pub stolen_fraction: f64,
}

/// Probe each core in `cores` at the same time for `duration`.
pub fn probe(cores: &[usize], duration: Duration) -> Vec<CoreJitter> {
    let handles: Vec<_> = cores
        .iter()
        .map(|&core| {
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
                spin(core, duration)
            })
        })
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

fn spin(core: usize, duration: Duration) -> CoreJitter {
    let start = now_ns();
    let end = start + duration.as_nanos() as u64;
    let mut gaps = Vec::new();
    let mut prev = start;
    loop {
        let now = now_ns();
        let gap = now - prev;
        if gap > FLOOR_NS {
            gaps.push(gap);
        }
        prev = now;
        if now >= end {
            break;
        }
    }
    summarize(core, prev - start, gaps)
}

/// Summary of the gaps seen over `duration_ns`.
pub fn summarize(core: usize, duration_ns: u64, mut gaps: Vec<u64>) -> CoreJitter {
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    let stolen: u64 = gaps.iter().sum();
    CoreJitter {
        core,
        duration_ns,
        gaps_over_10us: gaps.iter().filter(|&&g| g > 10_000).count() as u64,
        gaps_over_100us: gaps.iter().filter(|&&g| g > 100_000).count() as u64,
        gaps_over_1ms: gaps.iter().filter(|&&g| g > 1_000_000).count() as u64,
        stolen_fraction: if duration_ns == 0 {
            0.0
        } else {
            stolen as f64 / duration_ns as f64
        },
        largest_gaps_ns: gaps.into_iter().take(5).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_arithmetic() {
        let j = summarize(1, 1_000_000_000, vec![600, 20_000, 2_000_000, 150_000]);
        assert_eq!(j.largest_gaps_ns, vec![2_000_000, 150_000, 20_000, 600]);
        assert_eq!(
            (j.gaps_over_10us, j.gaps_over_100us, j.gaps_over_1ms),
            (3, 2, 1)
        );
        assert!((j.stolen_fraction - 0.0021706).abs() < 1e-9);
    }

    #[test]
    fn short_probe_runs() {
        let r = probe(&[0], Duration::from_millis(20));
        assert_eq!(r.len(), 1);
        assert!(r[0].duration_ns >= 20_000_000);
    }
}
