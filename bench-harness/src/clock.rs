//! The one clock every process of a run shares: CLOCK_MONOTONIC in nanoseconds.
//!
//! Publisher and subscriber are separate processes on the same host, so a
//! system-wide monotonic clock lets the subscriber compute one-way latency as
//! `now - stamp` without any clock synchronisation.

/// Current CLOCK_MONOTONIC time in nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call and
    // CLOCK_MONOTONIC is always available on Linux (served by the vDSO).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spin until the monotonic clock reaches `deadline_ns`; returns the time read last.
#[cfg(test)]
pub fn spin_until(deadline_ns: u64) -> u64 {
    loop {
        let now = now_ns();
        if now >= deadline_ns {
            return now;
        }
        std::hint::spin_loop();
    }
}

/// CPU time (user + system) this process has used so far, all its threads, in ns
/// (`getrusage(RUSAGE_SELF)`).
pub fn cpu_ns() -> u64 {
    // SAFETY: rusage is a plain C struct; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_spins() {
        let a = now_ns();
        let b = spin_until(a + 1_000);
        assert!(b >= a + 1_000);
        assert!(now_ns() >= b);
    }

    #[test]
    fn cpu_time_grows_while_spinning() {
        let a = cpu_ns();
        // Spin 20 ms of wall time: the process's CPU time must grow by a good part of it.
        spin_until(now_ns() + 20_000_000);
        let b = cpu_ns();
        assert!(b > a, "{a} -> {b}");
    }
}
