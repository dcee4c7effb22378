//! Which runs a benchmark invocation consists of.

use crate::spec::Mode;
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
    /// Length of a rate-mode run in seconds (messages = min(messages, rate × secs)).
    pub rate_secs: f64,
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
}

/// The runs of an invocation, and the systems left out with the reason.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub cases: Vec<Case>,
    pub skipped: Vec<(String, String)>,
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
    let mut push = |variant: &Variant, mode, messages, rate| {
        p.cases.push(Case {
            variant: variant.clone(),
            mode,
            messages,
            rate,
        })
    };
    for mode in &s.modes {
        for v in &runnable {
            let secondary = !v.primary && !s.all_variants;
            match mode {
                Mode::Full => push(v, Mode::Full, s.messages, None),
                Mode::Rate if !secondary => {
                    for &r in &s.rates {
                        push(
                            v,
                            Mode::Rate,
                            rate_messages(s.messages, r, s.rate_secs),
                            Some(r),
                        );
                    }
                }
                Mode::CountSweep if !secondary => {
                    for &c in &s.counts {
                        push(v, Mode::CountSweep, c, None);
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
            modes: vec![Mode::Full, Mode::Rate, Mode::CountSweep],
            messages: 100_000,
            size: 1024,
            rates: vec![10_000, 1_000_000],
            rate_secs: 1.0,
            counts: vec![1_000, 10_000],
            reps: 1,
            all_variants: false,
        }
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
                                        // full: 3 udp variants; rate: 2 rates × 1 primary; sweep: 2 counts × 1 primary.
        assert_eq!(p.cases.len(), 3 + 2 + 2);
        assert_eq!(p.cases[3].messages, 10_000);
        assert_eq!(p.cases[4].messages, 100_000);
        let mut s = settings();
        s.variants = Some(vec!["packed".into()]);
        s.all_variants = true;
        let p = plan(&s);
        assert!(p.cases.iter().all(|c| c.variant.variant == "packed"));
        assert_eq!(p.cases.len(), 5);
    }
}
