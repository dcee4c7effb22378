//! Which runs a benchmark invocation consists of.

use crate::spec::{Mode, Wait};
use crate::systems::{self, Variant};

/// Resolved settings of one `run` invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub systems: Vec<String>,
    /// Only variants whose name (or `system/transport/variant` label) matches one of these.
    pub variants: Option<Vec<String>>,
    pub modes: Vec<Mode>,
    pub messages: u64,
    pub size: usize,
    pub rates: Vec<u64>,
    /// Waiting styles of the paced publisher in rate mode (one configuration each).
    pub waits: Vec<Wait>,
    /// Length of a rate-mode (and rtt-mode) run in seconds (messages = min(messages, rate × secs)).
    pub rate_secs: f64,
    /// Ping rate of the round-trip mode, msg/s.
    pub rtt_rate: u64,
    /// The `sleep` waiting style runs only at offered rates up to this one.
    pub sleep_max_rate: u64,
    /// Repetitions of the full-speed runs of non-primary variants and of the count
    /// sweep (at most `reps`); everything else runs `reps` times.
    pub secondary_reps: u32,
    pub counts: Vec<u64>,
    pub reps: u32,
    /// Run rate and count-sweep modes for every variant, not only the primary ones.
    pub all_variants: bool,
}

/// One configuration to measure (repeated `reps` times).
#[derive(Debug, Clone)]
pub struct Case {
    pub variant: Variant,
    pub mode: Mode,
    pub messages: u64,
    pub rate: Option<u64>,
    pub wait: Option<Wait>,
    /// Repetitions of this configuration.
    pub reps: u32,
}

/// The runs of an invocation, and the systems left out with the reason.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub cases: Vec<Case>,
    pub skipped: Vec<(String, String)>,
}

impl Plan {
    /// A rough estimate of the invocation's wall time: per run, the set-up and
    /// warm-up (~1.5 s: two processes, slow-joiner warm-up, drain), plus the
    /// counted part (rate and rtt: messages / rate; full speed: at ~200k msg/s, the
    /// slowest systems' pace here), plus the quiet wait of lossy runs.
    pub fn estimate_secs(&self, quiet_ms: u64) -> f64 {
        self.cases
            .iter()
            .map(|c| {
                let counted = match c.rate {
                    Some(r) => c.messages as f64 / r as f64,
                    None => c.messages as f64 / 200_000.0,
                };
                let quiet = if c.variant.lossless_expected {
                    0.0
                } else {
                    quiet_ms as f64 / 1e3
                };
                (1.5 + counted + quiet) * c.reps as f64
            })
            .sum()
    }

    /// Runs in the invocation (every configuration times its repetitions).
    pub fn runs(&self) -> u64 {
        self.cases.iter().map(|c| c.reps as u64).sum()
    }
}

/// Messages in a rate-mode run at `rate` msg/s.
pub fn rate_messages(messages: u64, rate: u64, secs: f64) -> u64 {
    let by_time = (rate as f64 * secs).round() as u64;
    messages.min(by_time.max(1_000)).max(1)
}

fn selected(v: &Variant, filter: &Option<Vec<String>>) -> bool {
    match filter {
        None => true,
        Some(names) => names
            .iter()
            .any(|n| *n == v.variant || *n == v.label() || *n == v.transport),
    }
}

pub fn plan(s: &Settings) -> Plan {
    let mut p = Plan::default();
    let catalog = systems::catalog();
    for system in &s.systems {
        if let Some(why) = systems::unavailable(system) {
            p.skipped.push((system.clone(), why.to_owned()));
        }
    }
    let runnable: Vec<&Variant> = s
        .systems
        .iter()
        .filter(|sys| systems::unavailable(sys).is_none())
        .flat_map(|sys| catalog.iter().filter(move |v| &v.system == sys))
        .filter(|v| selected(v, &s.variants))
        .collect();
    let light = s.secondary_reps.clamp(1, s.reps.max(1));
    let mut push = |variant: &Variant, mode, messages, rate, wait| {
        let reps = match mode {
            Mode::CountSweep => light,
            Mode::Full if !variant.primary => light,
            _ => s.reps.max(1),
        };
        p.cases.push(Case {
            variant: variant.clone(),
            mode,
            messages,
            rate,
            wait,
            reps,
        })
    };
    for mode in &s.modes {
        for v in &runnable {
            let secondary = !v.primary && !s.all_variants;
            match mode {
                Mode::Full => push(v, Mode::Full, s.messages, None, None),
                Mode::Rate if !secondary => {
                    for &r in &s.rates {
                        for &w in &s.waits {
                            if w == Wait::Sleep && r > s.sleep_max_rate {
                                continue;
                            }
                            push(
                                v,
                                Mode::Rate,
                                rate_messages(s.messages, r, s.rate_secs),
                                Some(r),
                                Some(w),
                            );
                        }
                    }
                }
                Mode::Rtt if !secondary => push(
                    v,
                    Mode::Rtt,
                    rate_messages(s.messages, s.rtt_rate, s.rate_secs),
                    Some(s.rtt_rate),
                    None,
                ),
                Mode::CountSweep if !secondary => {
                    for &c in &s.counts {
                        push(v, Mode::CountSweep, c, None, None);
                    }
                }
                _ => {}
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            systems: vec!["udp".into(), "carrier-pigeon".into()],
            variants: None,
            modes: vec![Mode::Full, Mode::Rate, Mode::Rtt, Mode::CountSweep],
            messages: 100_000,
            size: 1024,
            rates: vec![10_000, 1_000_000],
            waits: vec![Wait::Spin, Wait::Sleep],
            rate_secs: 1.0,
            rtt_rate: 10_000,
            sleep_max_rate: u64::MAX,
            secondary_reps: 1,
            counts: vec![1_000, 10_000],
            reps: 1,
            all_variants: false,
        }
    }

    /// Every variant of the catalog planned as if every system were built.
    fn full_catalog_plan(s: &Settings) -> Plan {
        let mut p = Plan::default();
        for v in &systems::catalog() {
            for m in &s.modes {
                let mut only = s.clone();
                only.modes = vec![*m];
                p.cases.extend(plan_ignoring_build(&only, v));
            }
        }
        p
    }

    fn standard() -> Settings {
        Settings {
            systems: systems::SYSTEMS.iter().map(|s| s.to_string()).collect(),
            variants: None,
            modes: vec![Mode::Full, Mode::Rate, Mode::Rtt, Mode::CountSweep],
            messages: 1_000_000,
            size: 1024,
            rates: vec![10_000, 100_000, 500_000, 1_000_000],
            waits: vec![Wait::Spin, Wait::Sleep],
            rate_secs: 2.0,
            rtt_rate: 10_000,
            sleep_max_rate: 100_000,
            counts: vec![1_000, 10_000, 100_000, 500_000, 1_000_000],
            reps: 3,
            secondary_reps: 1,
            all_variants: false,
        }
    }

    /// The standard suite (every system, `--features aeron`) and the quick one stay
    /// within their budgets (by the plan's own estimate).
    #[test]
    fn suite_sizes() {
        let catalog = systems::catalog();
        let primary = catalog.iter().filter(|v| v.primary).count();
        assert_eq!((catalog.len(), primary), (40, 17));
        let p = full_catalog_plan(&standard());
        // full 17 × 3 + 23 × 1; rate 17 × 6 × 3; rtt 17 × 3; sweep 17 × 5 × 1.
        assert_eq!(p.runs(), 74 + 306 + 51 + 85);
        let minutes = p.estimate_secs(500) / 60.0;
        eprintln!("standard suite: {} runs, ~{minutes:.1} min", p.runs());
        // (the estimate is pessimistic: 395 runs took 17 minutes in 2026-12-01T16-54-57Z)
        // (IPC rows — ringcast, iceoryx2, Aeron's two layouts — took it past 30)
        assert!(minutes < 40.0, "{minutes:.1} min");
        let quick = Settings {
            messages: 100_000,
            rates: vec![100_000],
            rate_secs: 1.0,
            counts: vec![1_000, 10_000, 100_000],
            reps: 1,
            ..standard()
        };
        let q = full_catalog_plan(&quick);
        // full 40; rate 17 × 2 waits; rtt 17; sweep 17 × 3.
        assert_eq!(q.runs(), 40 + 34 + 17 + 51);
        let minutes = q.estimate_secs(500) / 60.0;
        eprintln!("quick suite: {} runs, ~{minutes:.1} min", q.runs());
        assert!(minutes < 6.0, "{minutes:.1} min");
    }

    fn plan_ignoring_build(s: &Settings, v: &Variant) -> Vec<Case> {
        let mut p = plan(&Settings {
            systems: vec!["udp".into()],
            variants: Some(vec!["udp/udp-multicast/one-dgram-per-msg".into()]),
            ..s.clone()
        });
        for c in &mut p.cases {
            c.variant = v.clone();
            c.reps = match c.mode {
                Mode::Full if !v.primary => s.secondary_reps,
                Mode::CountSweep => s.secondary_reps,
                _ => s.reps,
            };
        }
        if !v.primary {
            p.cases.retain(|c| c.mode == Mode::Full);
        }
        p.cases
    }

    #[test]
    fn rate_run_length() {
        assert_eq!(rate_messages(1_000_000, 10_000, 2.0), 20_000);
        assert_eq!(rate_messages(1_000_000, 1_000_000, 2.0), 1_000_000);
        assert_eq!(rate_messages(50_000, 100, 2.0), 1_000);
        assert_eq!(rate_messages(500, 100, 2.0), 500);
    }

    #[test]
    fn plan_the_suite() {
        let p = plan(&settings());
        assert_eq!(p.skipped.len(), 1); // carrier-pigeon (unknown)
        let primaries = systems::udp::variants()
            .iter()
            .filter(|v| v.primary)
            .count();
        assert_eq!(primaries, 2); // one datagram per message, busy-poll receiver
        let all = systems::udp::variants().len();
        // full: every variant; rate: 2 rates × 2 waits per primary; rtt: 1 per
        // primary; sweep: 2 counts per primary.
        assert_eq!(p.cases.len(), all + 8 + 2 + 4);
        let rate: Vec<&Case> = p.cases.iter().filter(|c| c.mode == Mode::Rate).collect();
        assert_eq!(rate[0].messages, 10_000);
        assert_eq!(rate[0].wait, Some(Wait::Spin));
        assert_eq!(rate[1].wait, Some(Wait::Sleep));
        assert_eq!(rate[2].messages, 100_000);
        let rtt: Vec<&Case> = p.cases.iter().filter(|c| c.mode == Mode::Rtt).collect();
        assert_eq!(rtt.len(), 2);
        assert_eq!(
            (rtt[0].rate, rtt[0].messages, rtt[0].wait),
            (Some(10_000), 10_000, None)
        );
        // Estimate: 19 runs × 1.5 s set-up, plus the counted parts.
        let est = p.estimate_secs(500);
        assert!(est > 19.0 * 1.5 && est < 19.0 * 1.5 + 30.0, "{est}");
        assert_eq!(p.runs(), 19);
        // Three repetitions: all but the non-primary full-speed runs and the sweep.
        let mut s3 = settings();
        s3.reps = 3;
        let p3 = plan(&s3);
        let light = (all - primaries) + 4;
        assert_eq!(p3.runs(), 3 * 19 - 2 * light as u64);
        // `sleep` only up to sleep_max_rate: the 1M msg/s runs lose it.
        s3.sleep_max_rate = 100_000;
        let p3 = plan(&s3);
        let rate: Vec<&Case> = p3.cases.iter().filter(|c| c.mode == Mode::Rate).collect();
        assert_eq!(rate.len(), 2 * 3);
        assert!(rate
            .iter()
            .all(|c| c.wait == Some(Wait::Spin) || c.rate == Some(10_000)));
        let mut s = settings();
        s.variants = Some(vec!["packed".into()]);
        s.all_variants = true;
        let p = plan(&s);
        assert!(p.cases.iter().all(|c| c.variant.variant == "packed"));
        assert_eq!(p.cases.len(), 1 + 4 + 1 + 2);
    }
}
