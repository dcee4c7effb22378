//! The harness's arithmetic: rates, latency percentiles, medians over repetitions.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Messages per second for `count` messages between `start_ns` and `end_ns`.
/// `None` when the interval is empty (fewer than two timestamps apart).
pub fn rate(count: u64, start_ns: u64, end_ns: u64) -> Option<f64> {
    if end_ns <= start_ns || count == 0 {
        return None;
    }
    Some(count as f64 * 1e9 / (end_ns - start_ns) as f64)
}

/// `num / den` when both are known and `den > 0`.
pub fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// A new latency histogram (ns, 3 significant digits, grows as needed).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    h.auto(true);
    h
}

/// One-way latency summary in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            p50: h.value_at_quantile(0.50) as f64,
            p90: h.value_at_quantile(0.90) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            p9999: h.value_at_quantile(0.9999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
        })
    }

    /// Field-wise combination of several summaries (e.g. the median over reps).
    pub fn combine(items: &[Latency], f: impl Fn(&[f64]) -> f64) -> Latency {
        let pick = |g: fn(&Latency) -> f64| f(&items.iter().map(g).collect::<Vec<_>>());
        Latency {
            p50: pick(|l| l.p50),
            p90: pick(|l| l.p90),
            p99: pick(|l| l.p99),
            p999: pick(|l| l.p999),
            p9999: pick(|l| l.p9999),
            max: pick(|l| l.max),
            mean: pick(|l| l.mean),
        }
    }
}

/// Median of a non-empty slice (mean of the two middle values for even lengths).
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Smallest value of a non-empty slice.
pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Largest value of a non-empty slice.
pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Median with the min–max range over repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Spread of the known values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            median: median(&v),
            min: min(&v),
            max: max(&v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(rate(1_000_000, 0, 1_000_000_000), Some(1_000_000.0));
        assert_eq!(rate(500, 1_000, 1_000 + 250_000_000), Some(2_000.0));
        assert_eq!(rate(1, 5, 5), None);
        assert_eq!(rate(0, 0, 10), None);
        assert_eq!(ratio(Some(90.0), Some(100.0)), Some(0.9));
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn percentiles_of_a_known_histogram() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap(); // 100 ns .. 1 ms, uniform
        }
        let l = Latency::from_histogram(&h).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002; // 3 significant digits
        assert!(close(l.p50, 500_000.0), "{l:?}");
        assert!(close(l.p90, 900_000.0), "{l:?}");
        assert!(close(l.p99, 990_000.0), "{l:?}");
        assert!(close(l.p999, 999_000.0), "{l:?}");
        assert!(close(l.p9999, 999_900.0), "{l:?}");
        assert!(close(l.max, 1_000_000.0), "{l:?}");
        assert!(close(l.mean, 500_050.0), "{l:?}");
        assert!(Latency::from_histogram(&new_histogram()).is_none());
    }

    #[test]
    fn single_outlier_shows_only_in_the_tail() {
        let mut h = new_histogram();
        h.record_n(1_000, 9_999).unwrap();
        h.record(5_000_000).unwrap();
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.p50, 1_000.0);
        assert_eq!(l.p999, 1_000.0);
        assert!(l.p9999 <= 1_001.0);
        assert!((l.max - 5_000_000.0).abs() / 5e6 < 0.001);
    }

    #[test]
    fn median_min_max_over_reps() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        let s = Spread::of([10.0, 30.0, 20.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (20.0, 10.0, 30.0));
        assert!(Spread::of(std::iter::empty()).is_none());
        let a = Latency {
            p50: 1.0,
            max: 10.0,
            ..Latency::default()
        };
        let b = Latency {
            p50: 3.0,
            max: 30.0,
            ..Latency::default()
        };
        let c = Latency {
            p50: 2.0,
            max: 20.0,
            ..Latency::default()
        };
        let m = Latency::combine(&[a, b, c], median);
        assert_eq!((m.p50, m.max), (2.0, 20.0));
        assert_eq!(Latency::combine(&[a, b, c], max).max, 30.0);
    }
}
