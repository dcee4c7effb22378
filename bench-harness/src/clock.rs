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
#[inline]
pub fn spin_until(deadline_ns: u64) -> u64 {
    loop {
        let now = now_ns();
        if now >= deadline_ns {
            return now;
        }
        std::hint::spin_loop();
    }
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
}
