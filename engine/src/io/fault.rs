//! Fault injection on the receive path, for tests: drops, duplicates, reorders and
//! delays datagrams between the kernel and the protocol, as a loss-generator
//! transport binding does. Off unless a [`FaultConfig`] is given explicitly
//! ([`ConfigBuilder::inject_faults`](crate::config::ConfigBuilder::inject_faults), or
//! `ringcast listen --inject-faults`); every injected fault is counted.
//!
//! The decisions come from a seeded generator, so a given seed makes the same choices
//! for the same sequence of datagrams; when held datagrams come out depends on the
//! clock and on what arrives after them.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::{BackendKind, IoError, RxBackend};

/// What to inject. Probabilities are per datagram, 0.0..=1.0, decided in this order:
/// blackout, loss, duplication, reordering, delay.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Seed of the decisions.
    pub seed: u64,
    /// Drop the datagram.
    pub loss: f64,
    /// Deliver it twice.
    pub duplicate: f64,
    /// Hold it until one to three later datagrams were delivered (or `delay` passed).
    pub reorder: f64,
    /// Hold it for `delay_for`.
    pub delay: f64,
    /// How long a delayed datagram is held.
    pub delay_for: Duration,
    /// After this many datagrams, drop everything for `blackout_for` (a cut cable).
    pub blackout_after: Option<u64>,
    /// Length of the blackout.
    pub blackout_for: Duration,
    /// Tests of agent failure only: the receiving thread panics at this datagram, as a
    /// bug in an agent would (the node must then stop and tell every handle).
    pub panic_after: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 1,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            delay_for: Duration::from_millis(1),
            blackout_after: None,
            blackout_for: Duration::ZERO,
            panic_after: None,
        }
    }
}

/// A fault specification that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid fault spec {spec:?}: {why} (expected e.g. loss=0.05,dup=0.01,reorder=0.02,delay=0.01:2ms,blackout=1000:300ms,seed=7)")]
pub struct FaultSpecError {
    spec: String,
    why: String,
}

fn duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl FromStr for FaultConfig {
    type Err = FaultSpecError;

    /// `key=value` pairs separated by commas: `loss=P`, `dup=P`, `reorder=P`,
    /// `delay=P:DURATION`, `blackout=AFTER:DURATION`, `seed=N`, `panic=AFTER` (tests
    /// of agent failure); durations in `us`, `ms` or `s`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| FaultSpecError {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let prob = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| err("a probability must be 0..=1"))
        };
        let mut c = FaultConfig::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| err("missing '='"))?;
            match k {
                "loss" => c.loss = prob(v)?,
                "dup" => c.duplicate = prob(v)?,
                "reorder" => c.reorder = prob(v)?,
                "delay" => {
                    let (p, d) = v.split_once(':').ok_or_else(|| err("delay=P:DURATION"))?;
                    c.delay = prob(p)?;
                    c.delay_for = duration(d).ok_or_else(|| err("bad duration"))?;
                }
                "blackout" => {
                    let (n, d) = v
                        .split_once(':')
                        .ok_or_else(|| err("blackout=AFTER:DURATION"))?;
                    c.blackout_after = Some(n.parse().map_err(|_| err("bad count"))?);
                    c.blackout_for = duration(d).ok_or_else(|| err("bad duration"))?;
                }
                "seed" => c.seed = v.parse().map_err(|_| err("bad seed"))?,
                "panic" => c.panic_after = Some(v.parse().map_err(|_| err("bad count"))?),
                _ => return Err(err("unknown key")),
            }
        }
        Ok(c)
    }
}

/// What was injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Datagrams dropped (loss and blackout).
    pub dropped: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Datagrams delivered after later ones.
    pub reordered: u64,
    /// Datagrams held for the delay.
    pub delayed: u64,
}

struct Held {
    bytes: Vec<u8>,
    source: SocketAddrV4,
    /// Out no earlier than this.
    due: Instant,
    /// Out once this many later datagrams were delivered (reordering), if set.
    after: Option<u32>,
}

/// Wraps a receive backend and injects the configured faults.
pub struct FaultyRx {
    inner: Box<dyn RxBackend>,
    cfg: FaultConfig,
    rng: u64,
    seen: u64,
    blackout_until: Option<Instant>,
    held: VecDeque<Held>,
    pool: Vec<Vec<u8>>,
    counts: FaultCounts,
}

impl FaultyRx {
    /// Injects `cfg`'s faults into what `inner` receives.
    pub fn new(inner: Box<dyn RxBackend>, cfg: FaultConfig) -> Self {
        FaultyRx {
            inner,
            rng: cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            cfg,
            seen: 0,
            blackout_until: None,
            held: VecDeque::new(),
            pool: Vec::new(),
            counts: FaultCounts::default(),
        }
    }
}

/// A uniform draw in 0..1 from a xorshift64 state.
fn draw(rng: &mut u64) -> f64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng >> 11) as f64 / (1u64 << 53) as f64
}

/// Hands out held datagrams that are due: by time, or (reordering) once enough later
/// ones went out. `delivered` is how many went out just now.
fn release(
    held: &mut VecDeque<Held>,
    pool: &mut Vec<Vec<u8>>,
    now: Instant,
    delivered: u32,
    on: &mut dyn FnMut(&[u8], SocketAddrV4),
) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < held.len() {
        let h = &mut held[i];
        if let Some(a) = h.after.as_mut() {
            *a = a.saturating_sub(delivered);
        }
        if h.after == Some(0) || h.due <= now {
            if let Some(h) = held.remove(i) {
                on(&h.bytes, h.source);
                pool.push(h.bytes);
                n += 1;
            }
        } else {
            i += 1;
        }
    }
    n
}

impl RxBackend for FaultyRx {
    fn recv_batch(
        &mut self,
        max: usize,
        wait: Option<Duration>,
        on_datagram: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let now = Instant::now();
        let mut n = release(&mut self.held, &mut self.pool, now, 0, on_datagram);
        // Do not sleep past the next held datagram's time.
        let wait = match self.held.iter().map(|h| h.due).min() {
            Some(due) => Some(wait.unwrap_or(Duration::ZERO).min(due - now.min(due))),
            None => wait,
        };
        let Self {
            inner,
            cfg,
            rng,
            seen,
            blackout_until,
            held,
            pool,
            counts,
        } = self;
        inner.recv_batch(max, wait, &mut |bytes, source| {
            *seen += 1;
            if cfg.panic_after == Some(*seen) {
                panic!("injected fault: the receiver panics at datagram {seen}");
            }
            let now = Instant::now();
            if cfg.blackout_after == Some(*seen) {
                *blackout_until = Some(now + cfg.blackout_for);
            }
            if blackout_until.is_some_and(|t| now < t) || draw(rng) < cfg.loss {
                counts.dropped += 1;
                return;
            }
            let dup = draw(rng) < cfg.duplicate;
            let (reorder, delay) = (draw(rng) < cfg.reorder, draw(rng) < cfg.delay);
            if reorder || delay {
                let mut buf = pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(bytes);
                let after = reorder.then(|| 1 + (draw(rng) * 3.0) as u32);
                let hold = if delay {
                    cfg.delay_for
                } else {
                    Duration::from_millis(1)
                };
                held.push_back(Held {
                    bytes: buf,
                    source,
                    due: now + hold,
                    after,
                });
                if reorder {
                    counts.reordered += 1;
                } else {
                    counts.delayed += 1;
                }
            } else {
                on_datagram(bytes, source);
                n += 1 + release(held, pool, now, 1, on_datagram);
            }
            if dup {
                counts.duplicated += 1;
                on_datagram(bytes, source);
                n += 1;
            }
        })?;
        Ok(n)
    }

    fn truncated(&self) -> u64 {
        self.inner.truncated()
    }

    fn injected(&self) -> FaultCounts {
        self.counts
    }

    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Hands out the datagrams it was given, `per_call` at a time.
    struct Script {
        queue: VecDeque<Vec<u8>>,
    }

    impl RxBackend for Script {
        fn recv_batch(
            &mut self,
            max: usize,
            _wait: Option<Duration>,
            on: &mut dyn FnMut(&[u8], SocketAddrV4),
        ) -> Result<usize, IoError> {
            let mut n = 0;
            while n < max {
                let Some(d) = self.queue.pop_front() else {
                    break;
                };
                on(&d, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
                n += 1;
            }
            Ok(n)
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Mmsg
        }
    }

    fn run(cfg: FaultConfig, n: u32) -> (Vec<u32>, FaultCounts) {
        let queue = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut rx = FaultyRx::new(Box::new(Script { queue }), cfg);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            rx.recv_batch(16, None, &mut |b, _| {
                got.push(u32::from_le_bytes(b.try_into().unwrap()))
            })
            .unwrap();
            if rx.held.is_empty()
                && got.len() as u64 + rx.counts.dropped >= u64::from(n) + rx.counts.duplicated
            {
                break;
            }
        }
        (got, rx.injected())
    }

    #[test]
    fn parses_specs_and_rejects_bad_ones() {
        let c: FaultConfig =
            "loss=0.05,dup=0.01,reorder=0.02,delay=0.5:2ms,blackout=1000:300ms,seed=7"
                .parse()
                .unwrap();
        assert_eq!(c.loss, 0.05);
        assert_eq!(c.duplicate, 0.01);
        assert_eq!(c.reorder, 0.02);
        assert_eq!((c.delay, c.delay_for), (0.5, Duration::from_millis(2)));
        assert_eq!(c.blackout_after, Some(1000));
        assert_eq!(c.blackout_for, Duration::from_millis(300));
        assert_eq!(c.seed, 7);
        for bad in [
            "loss=2",
            "loss",
            "nope=1",
            "delay=0.1",
            "blackout=x:1s",
            "delay=0.1:3h",
        ] {
            assert!(bad.parse::<FaultConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        let (got, counts) = run(FaultConfig::default(), 1000);
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(counts, FaultCounts::default());
    }

    #[test]
    fn every_datagram_is_delivered_dropped_or_duplicated_as_counted() {
        let cfg = FaultConfig {
            seed: 42,
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            delay: 0.05,
            delay_for: Duration::from_millis(2),
            ..FaultConfig::default()
        };
        let (got, counts) = run(cfg.clone(), 5000);
        assert!(
            counts.dropped > 300 && counts.duplicated > 100,
            "{counts:?}"
        );
        assert!(counts.reordered > 300 && counts.delayed > 100, "{counts:?}");
        assert_eq!(got.len() as u64, 5000 - counts.dropped + counts.duplicated);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len() as u64, 5000 - counts.dropped);
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "something came out of order"
        );
        // the same seed makes the same drops
        let (again, counts2) = run(cfg, 5000);
        let set = |v: &[u32]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(counts.dropped, counts2.dropped);
        assert_eq!(set(&got), set(&again));
    }

    #[test]
    fn blackout_drops_everything_for_its_duration() {
        let cfg = FaultConfig {
            blackout_after: Some(10),
            blackout_for: Duration::from_secs(60),
            ..FaultConfig::default()
        };
        let (got, counts) = run(cfg, 100);
        assert_eq!(got, (0..9).collect::<Vec<_>>());
        assert_eq!(counts.dropped, 91);
    }
}
