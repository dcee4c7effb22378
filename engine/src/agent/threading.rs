//! Which threads run the duty cycles: [`ThreadingMode::Auto`] resolved for the host,
//! with the reason, and a warning for configurations that put more spinning threads
//! than cores on the host (they measure the scheduler, not the engine).

use crate::config::{IdleStrategy, ThreadingMode};

/// The threading a node runs with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub mode: ThreadingMode,
    pub reason: String,
    /// Set when the configuration asks for more busy threads than usable cores.
    pub warning: Option<String>,
}

/// Cores this process may run on (its affinity mask), at least 1.
pub(crate) fn usable_cores() -> usize {
    core_affinity::get_core_ids().map_or(1, |ids| ids.len().max(1))
}

/// Agent threads that stay on a core while idle under `idle` (Park gives the core
/// back within a quarter of a millisecond, so it does not count).
fn spinning_agents(mode: ThreadingMode, idle: IdleStrategy) -> usize {
    let threads = match mode {
        ThreadingMode::Dedicated => 2,
        ThreadingMode::Shared => 1,
        ThreadingMode::Inline | ThreadingMode::Auto => 0,
    };
    match idle {
        IdleStrategy::BusySpin | IdleStrategy::Yield => threads,
        IdleStrategy::Park => 0,
    }
}

/// Resolves `requested` for a process that may use `cores` cores. The application's
/// thread is counted as one spinning thread (trading applications spin on their own
/// loop); a dedicated layout needs a core for each agent besides it.
pub(crate) fn resolve(requested: ThreadingMode, idle: IdleStrategy, cores: usize) -> Choice {
    let plural = if cores == 1 { "" } else { "s" };
    match requested {
        ThreadingMode::Auto if cores >= 3 => Choice {
            mode: ThreadingMode::Dedicated,
            reason: format!(
                "auto: {cores} usable cores: a sender and a receiver agent thread next to the application's"
            ),
            warning: None,
        },
        ThreadingMode::Auto => Choice {
            mode: ThreadingMode::Inline,
            reason: format!(
                "auto: {cores} usable core{plural}, fewer than the application's thread and two agent threads: \
                 the application's calls run the duty cycles (inline), a parked backstop thread covers its absences"
            ),
            warning: None,
        },
        mode => {
            let busy = spinning_agents(mode, idle) + 1;
            let warning = (busy > cores).then(|| {
                format!(
                    "{mode:?} threading with {idle:?} idling runs {busy} busy threads (the application's counted) \
                     on {cores} usable core{plural}: latency then depends on the scheduler, not the engine; \
                     use ThreadingMode::Auto or Inline"
                )
            });
            Choice {
                mode,
                reason: format!("configured: {mode:?} ({cores} usable core{plural})"),
                warning,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_puts_more_spinning_threads_than_cores() {
        for cores in 1..=2 {
            let c = resolve(ThreadingMode::Auto, IdleStrategy::BusySpin, cores);
            assert_eq!(c.mode, ThreadingMode::Inline, "{cores} cores");
            assert!(c.warning.is_none());
            assert!(c.reason.starts_with("auto:"), "{}", c.reason);
        }
        let c = resolve(ThreadingMode::Auto, IdleStrategy::Park, 8);
        assert_eq!(c.mode, ThreadingMode::Dedicated);
    }

    #[test]
    fn oversubscribing_configurations_are_warned_about() {
        let c = resolve(ThreadingMode::Dedicated, IdleStrategy::BusySpin, 2);
        assert_eq!(c.mode, ThreadingMode::Dedicated);
        let w = c.warning.expect("3 busy threads on 2 cores");
        assert!(w.contains("3 busy threads"), "{w}");
        assert!(resolve(ThreadingMode::Dedicated, IdleStrategy::BusySpin, 3)
            .warning
            .is_none());
        assert!(resolve(ThreadingMode::Shared, IdleStrategy::Yield, 1)
            .warning
            .is_some());
        assert!(resolve(ThreadingMode::Shared, IdleStrategy::BusySpin, 2)
            .warning
            .is_none());
        assert!(resolve(ThreadingMode::Dedicated, IdleStrategy::Park, 1)
            .warning
            .is_none());
        assert!(resolve(ThreadingMode::Inline, IdleStrategy::BusySpin, 1)
            .warning
            .is_none());
    }
}
