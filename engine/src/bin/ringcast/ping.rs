//! `ringcast ping` / `ringcast pong`: round-trip latency between two nodes.
//!
//! `ping` publishes on `PREFIX/ping` (each payload: its number and its send time on
//! ping's own monotonic clock, padded to `--size`); `pong` echoes every message it
//! receives there on `PREFIX/pong`; `ping` matches the echoes by number and records
//! the round trip in an HdrHistogram. Both ends use their own clocks only, so hosts
//! need no clock synchronisation.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::{Event, IdleStrategy, Node, PublishError, SlowConsumerPolicy};

use crate::{builder, histogram, interrupted, on_interrupt, percentiles, Net, Res};

pub const PING_EXAMPLES: &str = "Examples:
  ringcast pong &  ringcast ping                1000 round trips at 1000/s, percentiles
  ringcast ping --count 100000 --rate 10000 --size 1024
  ringcast ping --busy-spin --threading inline  (with `pong --busy-spin`): lowest latency";
pub const PONG_EXAMPLES: &str = "Examples:
  ringcast pong                 echo pings on /ringcast/ping until Ctrl-C
  ringcast pong --count 1000    exit after 1000 echoes";

/// Bytes of a ping's header: number (u64 LE) and send time (ns, u64 LE).
const HEAD: usize = 16;

#[derive(Args)]
pub struct PingArgs {
    #[command(flatten)]
    net: Net,
    /// Topic prefix: pings go on PREFIX/ping, pongs come back on PREFIX/pong.
    #[arg(long, default_value = "/ringcast")]
    topic: String,
    /// Round trips to measure.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Pings per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Bytes per ping (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pings sent first and not measured.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Seconds to wait for the last pongs (and, at the start, for a pong at all).
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Spin instead of sleeping while waiting (a core for this process: lowest latency).
    #[arg(long)]
    busy_spin: bool,
    /// Multicast TTL (default 0 on loopback, 1 otherwise).
    #[arg(long)]
    ttl: Option<u32>,
}

#[derive(Args)]
pub struct PongArgs {
    #[command(flatten)]
    net: Net,
    /// Topic prefix: pings come on PREFIX/ping, echoes go on PREFIX/pong.
    #[arg(long, default_value = "/ringcast")]
    topic: String,
    /// Exit after this many echoes.
    #[arg(long)]
    count: Option<u64>,
    /// Spin instead of sleeping while waiting.
    #[arg(long)]
    busy_spin: bool,
    /// Multicast TTL (default 0 on loopback, 1 otherwise).
    #[arg(long)]
    ttl: Option<u32>,
}

/// What came back.
struct Tally {
    /// Answered pings by number (warm-ups included).
    answered: Vec<bool>,
    warmup: u64,
    hist: hdrhistogram::Histogram<u64>,
    /// Measured pings answered.
    got: u64,
    /// Echoes that are not an unanswered ping of this run (duplicates, another
    /// pinger's, malformed).
    strays: u64,
}

impl Tally {
    /// Takes the pongs that arrive within `wait`.
    fn take(&mut self, sub: &mut ringcast::Subscriber, clock: &dyn Fn() -> u64, wait: Duration) {
        sub.poll_timeout(256, wait, |ev| {
            let Event::Message(m) = ev else { return };
            let p = m.payload();
            let word = |r: std::ops::Range<usize>| {
                p.get(r)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
            };
            let (Some(n), Some(sent)) = (word(0..8), word(8..16)) else {
                self.strays += 1;
                return;
            };
            match usize::try_from(n)
                .ok()
                .and_then(|n| self.answered.get_mut(n))
            {
                Some(seen) if !*seen => {
                    *seen = true;
                    if n >= self.warmup {
                        self.got += 1;
                        let _ = self.hist.record(clock().saturating_sub(sent).max(1));
                    }
                }
                _ => self.strays += 1,
            }
        });
    }
}

/// One end: a node publishing on `PREFIX/send` and subscribed (lossless) to
/// `PREFIX/listen`, and where it is ("GROUP via IFACE").
type Endpoint = (Node, ringcast::Publisher, ringcast::Subscriber, String);

fn endpoint(
    net: &Net,
    ttl: Option<u32>,
    spin: bool,
    prefix: &str,
    send: &str,
    listen: &str,
) -> Result<Endpoint, Box<dyn std::error::Error>> {
    let mut b = builder(net, ttl);
    if spin {
        b = b.idle(IdleStrategy::BusySpin);
    }
    let config = b.build()?;
    let at = format!("{} via {}", config.group(), config.iface());
    let node = Node::new(config)?;
    let publ = node.publisher(&format!("{prefix}/{send}"))?;
    let sub = node.subscriber_with_policy(
        &[format!("{prefix}/{listen}")],
        SlowConsumerPolicy::BackPressure,
    )?;
    Ok((node, publ, sub, at))
}

fn offer(p: &mut ringcast::Publisher, payload: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    match p.offer_blocking(payload, Duration::from_secs(10)) {
        Ok(()) => Ok(()),
        Err(PublishError::Timeout) => Err("publisher stayed back-pressured for 10 s".into()),
        Err(e) => Err(e.into()),
    }
}

pub fn ping(a: PingArgs) -> Res {
    if a.size < HEAD {
        return Err(format!("--size must be at least {HEAD}").into());
    }
    if a.count == 0 {
        return Err("--count must be positive".into());
    }
    if !a.rate.is_finite() || a.rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let (_node, mut publ, mut sub, at) =
        endpoint(&a.net, a.ttl, a.busy_spin, &a.topic, "ping", "pong")?;
    on_interrupt();
    let epoch = Instant::now();
    let clock = || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut buf = vec![0u8; a.size];
    let total = a.warmup + a.count;
    let mut t = Tally {
        answered: vec![false; usize::try_from(total).unwrap_or(usize::MAX)],
        warmup: a.warmup,
        hist: histogram(),
        got: 0,
        strays: 0,
    };
    let wait = Duration::from_secs_f64(a.timeout.max(0.1));
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    eprintln!(
        "ping: {} round trips ({} warm-up) at {}/s, {} bytes, on {at}",
        a.count, a.warmup, a.rate, a.size
    );
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        loop {
            let now = Instant::now();
            if now >= due || interrupted() {
                break;
            }
            t.take(
                &mut sub,
                &clock,
                if a.busy_spin {
                    Duration::ZERO
                } else {
                    due - now
                },
            );
        }
        if interrupted() {
            break;
        }
        buf[..8].copy_from_slice(&i.to_le_bytes());
        buf[8..16].copy_from_slice(&clock().to_le_bytes());
        offer(&mut publ, &buf)?;
        if i == 0 {
            // Nobody to answer: say so rather than measure nothing.
            let deadline = Instant::now() + wait;
            while !t.answered[0] && Instant::now() < deadline && !interrupted() {
                t.take(&mut sub, &clock, Duration::from_millis(10));
            }
            if !t.answered[0] {
                eprintln!("ping: no pong answered within {:.1} s (is `ringcast pong` running on this group?)", wait.as_secs_f64());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    publ.flush(Duration::from_secs(5))?;
    let deadline = Instant::now() + wait;
    while t.got < a.count && Instant::now() < deadline && !interrupted() {
        t.take(&mut sub, &clock, Duration::from_millis(10));
    }
    let missing = a.count - t.got.min(a.count);
    println!(
        "{} round trips, {} answered, {missing} missing, {} stray; RTT {}",
        a.count,
        t.got,
        t.strays,
        if t.hist.is_empty() {
            "-".into()
        } else {
            percentiles(&t.hist)
        }
    );
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn pong(a: PongArgs) -> Res {
    let (node, mut publ, mut sub, at) =
        endpoint(&a.net, a.ttl, a.busy_spin, &a.topic, "pong", "ping")?;
    on_interrupt();
    eprintln!("pong: echoing {}/ping on {at}", a.topic);
    let mut echoed = 0u64;
    let mut err = None;
    while !interrupted() && a.count.is_none_or(|c| echoed < c) {
        let wait = if a.busy_spin {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        sub.poll_timeout(256, wait, |ev| {
            if let Event::Message(m) = ev {
                if err.is_none() {
                    match offer(&mut publ, m.payload()) {
                        Ok(()) => echoed += 1,
                        Err(e) => err = Some(e),
                    }
                }
            }
        });
        if let Some(e) = err.take() {
            return Err(e);
        }
    }
    publ.flush(Duration::from_secs(5))?;
    node.wait_acknowledged(Duration::from_millis(50), Duration::from_secs(2));
    eprintln!("pong: echoed {echoed}");
    Ok(ExitCode::SUCCESS)
}
