//! Publisher-side flow control and rate limiting, sans-IO (time is passed in).
//!
//! [`FlowControl`]: the session may not send past the limit its receivers' status
//! messages set — by default the slowest live receiver's position plus its window
//! ([`FlowControlStrategy::Min`]); [`Max`](FlowControlStrategy::Max) follows the
//! fastest instead and [`Tagged`](FlowControlStrategy::Tagged) only the receivers
//! carrying a given tag, leaving the others behind. A receiver not heard from for
//! `timeout` is dropped from the set, so a vanished receiver cannot stall the
//! publisher forever. With no (pacing) receiver heard, sending is unconstrained —
//! except in a new session's first moments ([`FlowControl::with_startup`]): until a
//! receiver's first status comes (or a short grace ends), the session keeps to its
//! retransmit window, so a receiver that was there before the first datagram but
//! slower to speak than the publisher is to send loses nothing.
//!
//! [`RateLimiter`]: a token bucket capping the bytes a session sends per second.

use std::time::{Duration, Instant};

use crate::config::FlowControlStrategy;

#[derive(Debug, Clone, Copy)]
struct Peer {
    id: u64,
    next_seq: u64,
    window: u32,
    tag: u32,
    last_heard: Instant,
    /// Whether its position ever moved, and since when it has been behind what was
    /// sent (`None`: it has everything): one that never moved stops pacing the
    /// session once it has been behind for the timeout ([`FlowControl::expire`]).
    advanced: bool,
    behind_since: Option<Instant>,
    /// Left out of pacing for never acknowledging.
    unpaced: bool,
}

impl Peer {
    /// Notes whether it is behind what the session sent or wants to send (everything
    /// before `wanted`).
    fn behind(&mut self, now: Instant, wanted: u64) {
        if self.next_seq >= wanted {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
    }

    /// First sequence number past this receiver's window.
    fn edge(&self) -> u64 {
        self.next_seq.saturating_add(u64::from(self.window))
    }
}

/// Receivers a session keeps in flow control at most (the one heard least recently
/// makes room for a new one, counted).
pub const MAX_RECEIVERS: usize = 1024;

/// What hostile or confused status messages made flow control do (counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowCounters {
    /// Status positions past what the session has sent, clamped to it.
    pub clamped: u64,
    /// Receivers forgotten to make room (the table is full).
    pub evicted: u64,
    /// Receivers left out of pacing for never acknowledging data they could have
    /// received within the timeout.
    pub unpaced: u64,
}

/// The flow-control state of one publishing session.
#[derive(Debug)]
pub struct FlowControl {
    peers: Vec<Peer>,
    counters: FlowCounters,
    /// Everything before it was sent, or is waiting to be (held back by the limit).
    wanted: u64,
    timeout: Duration,
    strategy: FlowControlStrategy,
    /// Datagrams the publisher keeps for retransmission, when it does.
    retained: Option<u64>,
    /// Until then, with no pacing receiver heard yet, the session keeps within its
    /// retransmit window from its start.
    startup_until: Option<Instant>,
}

impl FlowControl {
    /// Receivers silent for longer than `timeout` stop counting.
    pub fn new(timeout: Duration, strategy: FlowControlStrategy) -> Self {
        FlowControl {
            peers: Vec::new(),
            counters: FlowCounters::default(),
            wanted: 0,
            timeout,
            strategy,
            retained: None,
            startup_until: None,
        }
    }

    /// A new session: until `until`, or until a pacing receiver is heard, it sends no
    /// more than its retransmit window (see [`with_retransmit_window`]
    /// (Self::with_retransmit_window)) from sequence 0. Receivers join at the first
    /// datagram they see, and one that was listening before the session started may
    /// take a few milliseconds to send its first status (its thread was parked, its
    /// host busy): without this, a publisher that starts with a burst can run past
    /// its window before it knows anyone listens, and that receiver then finds data
    /// it missed no longer kept. Aeron's publications wait for a first status
    /// ("connected") in the same way; here a session nobody listens to is held for
    /// the grace at most, and only once it has filled its window.
    pub fn with_startup(mut self, until: Instant) -> Self {
        self.startup_until = Some(until);
        self
    }

    /// The publisher keeps its last `datagrams` for retransmission. Under `Min` and
    /// `Tagged` the session then never runs more than that ahead of the slowest pacing
    /// receiver, so whatever such a receiver misses is still there to resend: those
    /// receivers never see a loss beyond the window.
    pub fn with_retransmit_window(mut self, datagrams: u64) -> Self {
        self.retained = Some(datagrams);
        self
    }

    /// Records a status from receiver `id` (carrying `tag`, 0 when untagged) when the
    /// session has sent everything before `sent`. Positions never move backwards, nor
    /// past what was sent (clamped, counted): a forged status cannot take a receiver
    /// out of pacing by claiming data that does not exist.
    pub fn on_status(
        &mut self,
        now: Instant,
        id: u64,
        next_seq: u64,
        window: u32,
        tag: u32,
        sent: u64,
    ) {
        if next_seq > sent {
            self.counters.clamped = self.counters.clamped.saturating_add(1);
        }
        let next_seq = next_seq.min(sent);
        match self.peers.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                if next_seq > p.next_seq {
                    // acknowledging: it paces (again)
                    p.advanced = true;
                    p.unpaced = false;
                }
                p.next_seq = p.next_seq.max(next_seq);
                p.behind(now, self.wanted.max(sent));
                p.window = window;
                p.tag = tag;
                p.last_heard = now;
            }
            None => {
                if self.peers.len() >= MAX_RECEIVERS {
                    // The one heard least recently makes room.
                    if let Some(i) = (0..self.peers.len()).min_by_key(|&i| self.peers[i].last_heard)
                    {
                        self.peers.swap_remove(i);
                        self.counters.evicted = self.counters.evicted.saturating_add(1);
                    }
                }
                self.peers.push(Peer {
                    id,
                    next_seq,
                    window,
                    tag,
                    last_heard: now,
                    advanced: false,
                    behind_since: (next_seq < self.wanted.max(sent)).then_some(now),
                    unpaced: false,
                })
            }
        }
        if self.pacing().next().is_some() {
            self.startup_until = None;
        }
    }

    /// Forgets receivers not heard from within the timeout, and leaves out of pacing
    /// those that never acknowledged anything while behind what was sent (everything
    /// before `sent`) for longer than the timeout: a fake receiver that stays at
    /// position 0 stalls a publisher for the timeout at most. (One that ever moved
    /// keeps pacing however slow it is: that is what `Min` flow control promises.)
    pub fn expire(&mut self, now: Instant, sent: u64) {
        let timeout = self.timeout;
        self.peers
            .retain(|p| now.saturating_duration_since(p.last_heard) <= timeout);
        let wanted = self.wanted.max(sent);
        for p in &mut self.peers {
            p.behind(now, wanted);
            let stale = !p.advanced
                && !p.unpaced
                && p.behind_since
                    .is_some_and(|t| now.saturating_duration_since(t) > timeout);
            if stale {
                p.unpaced = true;
                self.counters.unpaced = self.counters.unpaced.saturating_add(1);
            }
        }
        if self.startup_until.is_some_and(|t| t <= now) {
            self.startup_until = None;
        }
    }

    /// When [`expire`](Self::expire) next forgets a receiver (if none is heard
    /// before): just past the oldest last-heard time plus the timeout.
    /// The end of the startup grace counts too.
    pub fn next_expiry(&self) -> Option<Instant> {
        let peer = self
            .peers
            .iter()
            .map(|p| match (p.advanced || p.unpaced, p.behind_since) {
                (false, Some(t)) => t.min(p.last_heard),
                _ => p.last_heard,
            })
            .min()
            .map(|t| t + self.timeout + Duration::from_nanos(1));
        match (peer, self.startup_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The receivers whose windows count under the strategy (for `Max`, all of them:
    /// the fastest is picked by the caller).
    fn pacing(&self) -> impl Iterator<Item = &Peer> {
        let tag = match self.strategy {
            FlowControlStrategy::Tagged(t) => Some(t),
            FlowControlStrategy::Min | FlowControlStrategy::Max => None,
        };
        self.peers
            .iter()
            .filter(move |p| !p.unpaced && tag.is_none_or(|t| p.tag == t))
    }

    /// First datagram sequence number the session may not send yet, or `None` when no
    /// receiver constrains it.
    pub fn limit(&self) -> Option<u64> {
        if self.startup_until.is_some() && self.pacing().next().is_none() {
            // Nobody heard yet in the session's first moments: keep what we send.
            return self.retained;
        }
        let edges = self.pacing().map(Peer::edge);
        match self.strategy {
            FlowControlStrategy::Max => edges.max(),
            FlowControlStrategy::Min | FlowControlStrategy::Tagged(_) => {
                let edge = edges.min()?;
                let kept = self
                    .retained
                    .zip(self.acked())
                    .map(|(r, a)| a.saturating_add(r));
                Some(kept.map_or(edge, |k| k.min(edge)))
            }
        }
    }

    /// The pacing position: everything before it has been received by the receivers
    /// that hold the publisher back (the slowest of all for `Min`, the fastest for
    /// `Max`, the slowest tagged one for `Tagged`). `None` when none is live (0 in a
    /// new session's startup, see [`with_startup`](Self::with_startup)).
    pub fn acked(&self) -> Option<u64> {
        if self.startup_until.is_some() && self.pacing().next().is_none() {
            // A new session nobody has spoken to yet: as far as we know, a receiver
            // listening since its start is still at its start.
            return Some(0);
        }
        let positions = self.pacing().map(|p| p.next_seq);
        match self.strategy {
            FlowControlStrategy::Max => positions.max(),
            FlowControlStrategy::Min | FlowControlStrategy::Tagged(_) => positions.min(),
        }
    }

    /// Live receivers left behind ("marked"): those the publisher, now at `next_seq`,
    /// has run past — their position plus window is below both `next_seq` and the
    /// limit, so under `Min` they would have held it back. Always 0 under `Min`.
    pub fn left_behind(&self, next_seq: u64) -> usize {
        let bar = self.limit().map_or(next_seq, |l| l.min(next_seq));
        self.peers.iter().filter(|p| p.edge() < bar).count()
    }

    /// The session would send everything before `seq` but the limit holds it back:
    /// the receivers behind it are waited for from now (see [`expire`](Self::expire)).
    pub fn want(&mut self, now: Instant, seq: u64) {
        self.wanted = self.wanted.max(seq);
        let wanted = self.wanted;
        for p in &mut self.peers {
            p.behind(now, wanted);
        }
    }

    /// Receivers currently counted.
    pub fn receivers(&self) -> usize {
        self.peers.len()
    }

    /// What hostile or confused status messages made it do.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }
}

/// Nano-bytes per byte: token amounts are kept in these so that refilling
/// `elapsed_ns * bytes_per_sec` is exact integer arithmetic (no drift).
const NANO: i128 = 1_000_000_000;

/// A token bucket of `burst` bytes refilled at `bytes_per_sec`, allowed into debt:
/// [`ready`](Self::ready) lets a datagram start whenever the bucket is not empty or
/// in debt, and [`consume`](Self::consume) charges its actual size once known, which
/// later sends wait out. The sustained rate is exactly `bytes_per_sec`; in any
/// interval of `t` seconds at most `burst + bytes_per_sec * t` bytes plus one send
/// go out.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Bytes per second (at least 1).
    rate: i128,
    /// Capacity, in nano-bytes.
    cap: i128,
    /// Current content, in nano-bytes; negative when in debt.
    tokens: i128,
    /// When `tokens` was last refilled.
    last: Instant,
}

impl RateLimiter {
    /// A full bucket of `burst` bytes (at least 1), refilled at `bytes_per_sec` (at
    /// least 1), starting at `now`.
    pub fn new(bytes_per_sec: u64, burst: u64, now: Instant) -> Self {
        let cap = i128::from(burst.max(1)) * NANO;
        RateLimiter {
            rate: i128::from(bytes_per_sec.max(1)),
            cap,
            tokens: cap,
            last: now,
        }
    }

    /// The bucket's content at `now`, in nano-bytes (without changing it).
    fn level(&self, now: Instant) -> i128 {
        let elapsed = i128::try_from(now.saturating_duration_since(self.last).as_nanos())
            .unwrap_or(i128::MAX / 2);
        self.tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.cap)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.tokens = self.level(now);
            self.last = now;
        }
    }

    /// Whether a send may start at `now`: the bucket is not empty or in debt.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    /// Charges `bytes` sent (possibly into debt).
    pub fn consume(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(i128::from(bytes) * NANO);
    }

    /// When [`ready`](Self::ready) will next be true (`now` if it is already).
    pub fn next_ready(&self, now: Instant) -> Instant {
        let level = self.level(now);
        if level > 0 {
            return now;
        }
        // the first instant the level reaches one nano-byte
        let ns = (1 - level + self.rate - 1) / self.rate;
        now.max(self.last) + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the session has sent, in the tests that do not care.
    const SENT: u64 = 1 << 40;

    const T: Duration = Duration::from_secs(1);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn min_never_runs_past_what_the_slowest_could_still_get_repaired() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(Duration::from_secs(1), FlowControlStrategy::Min)
            .with_retransmit_window(64);
        f.on_status(t0, 1, 100, 1000, 0, SENT);
        assert_eq!(f.limit(), Some(164), "the window would allow 1100");
        f.on_status(t0, 2, 90, 20, 0, SENT);
        assert_eq!(f.limit(), Some(110), "a small window still wins");
        // Max leaves the slow behind: no cap
        let mut m = FlowControl::new(Duration::from_secs(1), FlowControlStrategy::Max)
            .with_retransmit_window(64);
        m.on_status(t0, 1, 100, 1000, 0, SENT);
        m.on_status(t0, 2, 10, 1000, 0, SENT);
        assert_eq!(m.limit(), Some(1100));
    }

    #[test]
    fn min_slowest_receiver_sets_the_limit_and_expires() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(T, FlowControlStrategy::Min);
        assert_eq!(f.limit(), None);
        f.on_status(t0, 1, 100, 10, 0, SENT);
        f.on_status(t0, 2, 50, 20, 0, SENT);
        assert_eq!(f.limit(), Some(70));
        assert_eq!(f.acked(), Some(50));
        assert_eq!(f.left_behind(70), 0);
        // stale reordering never moves a position back
        f.on_status(t0, 2, 40, 20, 0, SENT);
        assert_eq!(f.limit(), Some(70));
        f.on_status(ms(t0, 900), 1, 120, 10, 0, SENT);
        f.expire(ms(t0, 1500), SENT);
        assert_eq!(f.receivers(), 1);
        assert_eq!(f.limit(), Some(130));
        f.expire(ms(t0, 3000), SENT);
        assert_eq!(f.limit(), None);
        assert_eq!(f.acked(), None);
    }

    #[test]
    fn min_never_marks_a_receiver_even_when_its_window_shrinks() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(T, FlowControlStrategy::Min);
        f.on_status(t0, 1, 100, 50, 0, SENT);
        // the publisher reached 150, then the receiver's window shrank
        f.on_status(t0, 1, 100, 10, 0, SENT);
        assert_eq!(f.limit(), Some(110));
        assert_eq!(f.left_behind(150), 0);
    }

    #[test]
    fn max_fastest_receiver_sets_the_limit_and_the_slow_are_marked() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(T, FlowControlStrategy::Max);
        assert_eq!(f.limit(), None);
        assert_eq!(f.left_behind(1000), 0);
        f.on_status(t0, 1, 100, 10, 0, SENT);
        f.on_status(t0, 2, 50, 20, 0, SENT);
        f.on_status(t0, 3, 10, 5, 7, SENT);
        assert_eq!(f.limit(), Some(110));
        assert_eq!(f.acked(), Some(100));
        // the publisher has sent up to 60: only receiver 3 (edge 15) was overrun
        assert_eq!(f.left_behind(60), 1);
        // at 110 receiver 2 (edge 70) is behind as well; the pacer never is
        assert_eq!(f.left_behind(110), 2);
        // a slow receiver that caught up, with a smaller window, is no longer marked
        f.on_status(ms(t0, 100), 2, 110, 4, 0, SENT);
        f.on_status(ms(t0, 100), 3, 110, 4, 7, SENT);
        assert_eq!(f.left_behind(110), 0);
        // the fast one goes quiet: the next fastest takes over
        f.expire(ms(t0, 1050), SENT);
        assert_eq!(f.receivers(), 2);
        assert_eq!(f.limit(), Some(114));
        f.expire(ms(t0, 2000), SENT);
        assert_eq!(f.limit(), None);
    }

    #[test]
    fn tagged_only_receivers_with_the_tag_hold_the_publisher_back() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(T, FlowControlStrategy::Tagged(9));
        // receiver 1 is untagged (and slowest), receiver 2 has another tag: with no
        // tagged receiver live the publisher is unconstrained, everyone overrun marked
        f.on_status(t0, 1, 10, 10, 0, SENT);
        f.on_status(t0, 2, 50, 10, 3, SENT);
        assert_eq!(f.limit(), None);
        assert_eq!(f.acked(), None);
        assert_eq!(f.left_behind(40), 1);
        assert_eq!(f.left_behind(100), 2);
        f.on_status(t0, 3, 100, 20, 9, SENT);
        f.on_status(ms(t0, 500), 4, 90, 20, 9, SENT);
        assert_eq!(f.limit(), Some(110), "slowest tagged receiver");
        assert_eq!(f.acked(), Some(90));
        assert_eq!(f.left_behind(110), 2);
        assert_eq!(f.left_behind(15), 0);
        // the tagged receivers expire one by one
        f.on_status(ms(t0, 1200), 1, 10, 10, 0, SENT);
        f.expire(ms(t0, 1200), SENT);
        assert_eq!(f.limit(), Some(110));
        f.expire(ms(t0, 1600), SENT);
        assert_eq!(f.limit(), None);
        assert_eq!(f.receivers(), 1);
        // a receiver that changes its tag changes its role
        f.on_status(ms(t0, 1700), 1, 12, 10, 9, SENT);
        assert_eq!(f.limit(), Some(22));
        assert_eq!(f.left_behind(22), 0);
    }

    #[test]
    fn rate_limiter_sustains_the_rate_within_one_percent() {
        let t0 = Instant::now();
        for &(rate, datagram) in &[
            (10_000_000u64, 1472u64),
            (1_000_000, 65_507),
            (3_333_333, 999),
            (1_000_000_000, 8972),
        ] {
            let burst = (32 * datagram).max(rate / 1000);
            let mut r = RateLimiter::new(rate, burst, t0);
            let mut now = t0;
            let mut sent = 0u64;
            let end = t0 + Duration::from_secs(10);
            while now < end {
                if r.ready(now) {
                    r.consume(datagram);
                    sent += datagram;
                } else {
                    let next = r.next_ready(now);
                    assert!(next > now);
                    // an agent oversleeps: model it with a 50 µs slack
                    now = next + Duration::from_micros(50);
                }
            }
            // the bucket starts full: its burst comes on top of the sustained rate
            let expected = (rate * 10 + burst) as f64;
            let err = (sent as f64 - expected).abs() / (rate as f64 * 10.0);
            assert!(err < 0.01, "rate {rate}: sent {sent}, error {err}");
        }
    }

    #[test]
    fn rate_limiter_bounds_bursts() {
        let t0 = Instant::now();
        let rate = 1_000_000u64;
        let mut r = RateLimiter::new(rate, 10_000, t0);
        // debt mode: a full bucket lets at most burst + one datagram out at once
        let mut sent = 0;
        while r.ready(t0) {
            r.consume(1500);
            sent += 1500;
        }
        assert_eq!(sent, 10_500);
        // it refills at the rate: the 500 bytes of debt take 500 µs to pay off
        assert_eq!(r.next_ready(t0), t0 + Duration::from_nanos(500_001));
        assert!(!r.ready(t0 + Duration::from_micros(500)));
        assert!(r.ready(t0 + Duration::from_micros(501)));

        // however sends are spread, at most burst + rate * elapsed + one datagram
        let t0 = t0 + Duration::from_secs(1);
        let mut r = RateLimiter::new(rate, 10_000, t0);
        let mut sent = 0u64;
        for us in (0..200_000u64).step_by(7) {
            let now = t0 + Duration::from_micros(us);
            while r.ready(now) {
                r.consume(1000 + us % 700);
                sent += 1000 + us % 700;
            }
            assert!(
                sent <= 10_000 + rate * us / 1_000_000 + 1700,
                "at {us} µs: {sent}"
            );
        }
        assert!(sent >= 10_000 + 199_000 - 1700, "{sent}");
        // a send larger than the whole bucket goes, then its debt is waited out
        let mut r = RateLimiter::new(rate, 1000, t0);
        assert!(r.ready(t0));
        r.consume(5000);
        assert!(!r.ready(t0 + Duration::from_millis(4)));
        assert_eq!(r.next_ready(t0), t0 + Duration::from_nanos(4_000_001));
        assert!(r.ready(t0 + Duration::from_nanos(4_000_001)));
    }

    #[test]
    fn rate_limiter_ignores_time_going_backwards() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1000, 1000, t0 + Duration::from_secs(1));
        assert!(r.ready(t0));
        r.consume(1000);
        assert!(!r.ready(t0));
        assert!(!r.ready(t0 + Duration::from_millis(500)));
        assert!(r.ready(t0 + Duration::from_millis(1001)));
    }
}
