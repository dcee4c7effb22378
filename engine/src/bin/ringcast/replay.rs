//! `ringcast replay`: re-publish a recording (`ringcast record`), at its own pace
//! or faster, whole or a time range of it; `--summary` says what it holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::Args;
use ringcast::record::{Recorded, Recording};
use ringcast::{Node, PublishError, Publisher};

use crate::{builder, interrupted, on_interrupt, Net, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast replay md-rec                             at the pace it was recorded
  ringcast replay md-rec --speed max                 as fast as the receivers allow
  ringcast replay md-rec --speed 10 --topic /md/a    ten times faster, one topic only
  ringcast replay md-rec --from +30s --to +1m        30 s into the recording, for 30 s
  ringcast replay md-rec --from 2026-12-03T09:30:00Z --to 2026-12-03T09:31:00Z
  ringcast replay md-rec --summary                   check it; records, times, topics

Times (--from, --to) are receive times: an offset from the first record (+30s, +1.5m,
+200ms), an RFC 3339 time in UTC (2026-12-03T09:30:00Z, or without the Z), or ns since the Unix
epoch. Messages go out in the recorded order, each on its recorded topic, in this
node's own session (new sequence numbers).";

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    net: Net,
    /// Multicast TTL (default 0 on loopback, 1 otherwise).
    #[arg(long)]
    ttl: Option<u32>,
    /// The recording's directory.
    dir: PathBuf,
    /// `max` (as fast as flow control allows) or a factor of the recorded pace
    /// (1 = as recorded, 2 = twice as fast).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: Speed,
    /// Start at the first message received at or after this time.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Stop before the first message received at or after this time.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Replay only topics starting with this prefix (repeatable; default: all).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Check the recording, print what it holds (records, time span, topics) and exit
    /// without publishing.
    #[arg(long)]
    summary: bool,
    /// Wait until N receivers report (up to 10 s, exit code 1 if fewer) before the
    /// first message.
    #[arg(long, value_name = "N")]
    wait_receivers: Option<usize>,
    /// How long to wait at the end for the receivers to acknowledge everything
    /// (reliable mode; exit code 1 if they did not).
    #[arg(long, default_value_t = 5.0)]
    ack_timeout: f64,
}

/// `--speed`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Speed {
    Max,
    Factor(f64),
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
        _ => Err(format!("{s:?}: `max` or a factor above 0 (1, 0.5, 10)")),
    }
}

/// A `--from`/`--to` time as ns since the Unix epoch; `first_ns` is the recording's
/// first receive time (for `+offset`).
fn parse_time(s: &str, first_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Some(offset) = s.strip_prefix('+') {
        let d = parse_offset(offset)?;
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        return Ok(first_ns.saturating_add(ns));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?}: too large for ns since the Unix epoch"));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?}: not +OFFSET (+30s), an RFC 3339 time or ns since the epoch ({e})")
    })?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `30s`, `1.5m`, `200ms`, `2h`, `1m30s` (humantime's forms, and the engine's
/// decimal ones).
fn parse_offset(s: &str) -> Result<Duration, String> {
    if let Some(m) = s.strip_suffix('m').and_then(|m| m.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(m * 60.0).map_err(|e| format!("+{s}: {e}"));
    }
    ringcast::settings::parse_duration(s)
        .or_else(|_| humantime::parse_duration(s).map_err(|e| format!("+{s}: {e}")))
}

fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

fn matches(topic: &[u8], prefixes: &[String]) -> bool {
    prefixes.is_empty() || prefixes.iter().any(|p| topic.starts_with(p.as_bytes()))
}

/// Publishers open at once: each holds a ring (`publisher_ring`), so a recording
/// of many topics reuses the least recently used one's slot.
const MAX_OPEN_PUBLISHERS: usize = 64;
/// Distinct topics `--summary` counts one by one (the rest are summed).
const MAX_SUMMARY_TOPICS: usize = 1000;

/// One publisher per recorded topic, at most [`MAX_OPEN_PUBLISHERS`] open.
struct Publishers<'n> {
    node: &'n Node,
    open: HashMap<String, (Publisher, u64)>,
    tick: u64,
    /// The topic of the last message offered: a message on another topic waits
    /// until that one is handed to the kernel, so the order across topics holds.
    last: Option<String>,
}

impl<'n> Publishers<'n> {
    fn new(node: &'n Node) -> Self {
        Publishers {
            node,
            open: HashMap::new(),
            tick: 0,
            last: None,
        }
    }

    /// The publisher for `topic`, opened if need be; the last topic's messages are
    /// handed to the kernel first when it is another.
    fn switch_to(&mut self, topic: &str) -> Result<(), Box<dyn std::error::Error>> {
        if self.last.as_deref() == Some(topic) {
            return Ok(());
        }
        if let Some((p, _)) = self.last.take().and_then(|t| self.open.get_mut(&t)) {
            p.flush(Duration::from_secs(30))?;
        }
        if !self.open.contains_key(topic) {
            if self.open.len() >= MAX_OPEN_PUBLISHERS {
                // Already flushed (only the last topic can have anything queued).
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(t, _)| t.clone());
                if let Some(t) = oldest {
                    self.open.remove(&t);
                }
            }
            let p = self.node.publisher(topic)?;
            self.open.insert(topic.to_string(), (p, self.tick));
        }
        self.last = Some(topic.to_string());
        Ok(())
    }

    fn offer(&mut self, topic: &str, payload: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
        self.tick += 1;
        self.switch_to(topic)?;
        let (p, used) = self
            .open
            .get_mut(topic)
            .ok_or("a replay publisher went missing")?;
        *used = self.tick;
        match p.offer_blocking(payload, Duration::from_secs(30)) {
            Ok(()) => Ok(()),
            Err(PublishError::Timeout) => Err("replay stayed back-pressured for 30 s".into()),
            Err(e) => Err(format!("topic {topic:?}: {e}").into()),
        }
    }

    fn flush(&mut self) -> Result<(), PublishError> {
        for (p, _) in self.open.values_mut() {
            p.flush(Duration::from_secs(30))?;
        }
        Ok(())
    }
}

fn summary(dir: &std::path::Path, rec: &Recording) -> Res {
    println!(
        "recording {}: {} records in {} segments, {} index entries ({} dropped on open)",
        dir.display(),
        rec.records(),
        rec.segments(),
        rec.index().len(),
        rec.dropped_index_entries()
    );
    let mut topics: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut other = 0u64;
    let (mut first, mut last, mut bytes, mut stamped) = (None, 0u64, 0u64, 0u64);
    for r in rec.iter() {
        first.get_or_insert(r.receive_ns);
        last = r.receive_ns;
        bytes += r.payload.len() as u64;
        stamped += u64::from(r.publish_ns != 0);
        if let Some(n) = topics.get_mut(r.topic) {
            *n += 1;
        } else if topics.len() < MAX_SUMMARY_TOPICS {
            topics.insert(r.topic.to_vec(), 1);
        } else {
            other += 1;
        }
    }
    if let Some(first) = first {
        println!(
            "received {} .. {} ({:.3} s), {} payload bytes, {} with a publish time",
            rfc3339(first),
            rfc3339(last),
            (last - first) as f64 / 1e9,
            bytes,
            stamped
        );
    }
    let mut by_count: Vec<_> = topics.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (t, n) in &by_count {
        println!("  {:>12}  {}", n, String::from_utf8_lossy(t));
    }
    if other > 0 {
        println!("  {other:>12}  (more than {MAX_SUMMARY_TOPICS} topics: the rest)");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: ReplayArgs) -> Res {
    let rec = Recording::open(&a.dir)?;
    if a.summary {
        return summary(&a.dir, &rec);
    }
    let first_ns = rec.iter().next().map_or(0, |r| r.receive_ns);
    let from = a
        .from
        .as_deref()
        .map(|s| parse_time(s, first_ns))
        .transpose()?;
    let to =
        a.to.as_deref()
            .map(|s| parse_time(s, first_ns))
            .transpose()?
            .unwrap_or(u64::MAX);
    let records: Box<dyn Iterator<Item = Recorded<'_>>> = match from {
        Some(t) => Box::new(rec.iter_from_time(t)),
        None => Box::new(rec.iter()),
    };
    let mut records = records
        .take_while(|r| r.receive_ns < to)
        .filter(|r| matches(r.topic, &a.topics))
        .peekable();
    let config = builder(&a.net, a.ttl).build()?;
    let reliable = config.reliable();
    let node = Node::new(config)?;
    let mut pubs = Publishers::new(&node);
    if let Some(n) = a.wait_receivers {
        // Receivers report to publishers: open the first one before waiting.
        if let Some(t) = records
            .peek()
            .and_then(|r| std::str::from_utf8(r.topic).ok())
        {
            pubs.switch_to(t)?;
        }
        let got = node.wait_for_receivers(n, Duration::from_secs(10))?;
        eprintln!("{got} receivers");
    }
    eprintln!(
        "replaying {} ({} records) at speed {}",
        a.dir.display(),
        rec.records(),
        match a.speed {
            Speed::Max => "max".to_string(),
            Speed::Factor(f) => format!("{f}x"),
        }
    );
    on_interrupt();
    let start = Instant::now();
    let mut base_ns = None;
    let (mut sent, mut skipped) = (0u64, 0u64);
    for r in records {
        if interrupted() {
            break;
        }
        let Ok(topic) = std::str::from_utf8(r.topic) else {
            // Only a damaged or foreign recording has one: a recorder writes UTF-8.
            skipped += 1;
            continue;
        };
        if let Speed::Factor(f) = a.speed {
            let base = *base_ns.get_or_insert(r.receive_ns);
            let due = start + Duration::from_nanos(r.receive_ns - base).div_f64(f);
            wait_until(due);
        }
        pubs.offer(topic, r.payload)?;
        sent += 1;
    }
    pubs.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let acked = crate::stay_until_acknowledged(&node, reliable, a.ack_timeout);
    let s = node.stats();
    eprintln!(
        "replayed {sent} messages in {:.3} s ({:.0} msg/s), {skipped} skipped (topic not UTF-8), datagrams {}, retransmits {}, receivers {}",
        secs,
        sent as f64 / secs.max(1e-9),
        s.datagrams_sent,
        s.retransmits,
        s.receivers
    );
    if !acked {
        eprintln!(
            "receivers did not acknowledge everything within {} s",
            a.ack_timeout
        );
    }
    Ok(if acked && s.send_errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sleeps, then spins the last stretch, until `due`.
fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_offsets_rfc3339_and_epoch_ns() {
        let first = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("+30s", first), Ok(first + 30_000_000_000));
        assert_eq!(parse_time("+1.5m", first), Ok(first + 90_000_000_000));
        assert_eq!(parse_time("+200ms", first), Ok(first + 200_000_000));
        assert_eq!(parse_time("+1m 30s", first), Ok(first + 90_000_000_000));
        assert_eq!(parse_time("12345", first), Ok(12345));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z", 0),
            Ok(1_700_000_000_500_000_000)
        );
        assert!(parse_time("yesterday", first).is_err());
        assert!(parse_time("+", first).is_err());
        assert!(parse_time("99999999999999999999999", first).is_err());
        assert_eq!(
            rfc3339(1_700_000_000_500_000_000),
            "2023-11-14T22:13:20.500000000Z"
        );
    }

    #[test]
    fn speeds_are_max_or_a_positive_factor() {
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("MAX"), Ok(Speed::Max));
        assert_eq!(parse_speed("2.5"), Ok(Speed::Factor(2.5)));
        for bad in ["0", "-1", "fast", "inf", "NaN"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
