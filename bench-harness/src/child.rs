//! The two measured sides, each run as a child process of the harness
//! (`ringcast-bench pub --spec JSON` / `ringcast-bench sub --spec JSON`).
//!
//! The same loops drive every system: stamping, pacing, verification and timing
//! never depend on the system under test.

use crate::clock::{now_ns, spin_until};
use crate::control::{self, Command};
use crate::message::{Pattern, WARMUP_FLAG};
use crate::spec::{Mode, RunSpec};
use crate::stats;
use crate::systems::{self, Counters, Info, Publisher};
use crate::verify::{Outcome, Tally, Tracker};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the publisher measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PubReport {
    pub sent: u64,
    pub warmups: u64,
    /// Start of the first counted send (rate mode: its intended time).
    pub first_send_ns: u64,
    /// Return of the last counted send.
    pub last_send_ns: u64,
    /// Return of `finish()` (batches flushed / engine drained).
    pub finished_ns: u64,
    /// Rate mode: the largest delay of an actual send behind its schedule.
    pub max_behind_ns: u64,
    pub counters: Counters,
    pub info: Info,
}

/// What the subscriber measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubReport {
    pub tally: Tally,
    /// Why the subscriber stopped: `complete`, `quiet`, `abort`.
    pub stopped: String,
    pub counters: Counters,
    pub info: Info,
}

/// Pin the calling thread (and so every thread it starts later) to `core`.
fn pin(core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("warning: could not pin to core {id}");
        }
    }
}

/// Child entry point: run one side and report on stdout.
pub fn run(side: &str, spec_json: &str) -> i32 {
    let result = serde_json::from_str::<RunSpec>(spec_json)
        .context("bad --spec")
        .and_then(|spec| match side {
            "pub" => publish(&spec).map(|r| serde_json::to_string(&r).expect("serialisable")),
            _ => subscribe(&spec).map(|r| serde_json::to_string(&r).expect("serialisable")),
        });
    match result {
        Ok(json) => {
            if side == "pub" {
                // DONE was already said; nothing more.
                0
            } else {
                control::say("DONE", &json);
                0
            }
        }
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("{side}: {text}");
            control::say("ERROR", &text);
            1
        }
    }
}

fn publish(spec: &RunSpec) -> Result<PubReport> {
    pin(spec.pub_core);
    let commands = control::command_channel();
    let mut tx = systems::open_publisher(spec)?;
    let pattern = Pattern::new(spec.size);
    let mut buf = vec![0u8; spec.size];
    control::say("BOUND", "");

    // Warm-up until the subscriber is known to receive (the slow-joiner problem).
    let mut warmups = 0u64;
    let interval = Duration::from_micros(spec.warmup_interval_us);
    loop {
        match commands.try_recv() {
            Ok(Command::Go) => break,
            Ok(Command::Exit) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                anyhow::bail!("harness ended the run before GO")
            }
            _ => {}
        }
        pattern.fill(&mut buf, warmups | WARMUP_FLAG, now_ns());
        tx.send(&buf)?;
        tx.flush()?;
        warmups += 1;
        std::thread::sleep(interval);
    }

    let mut report = match (spec.mode, spec.rate) {
        (Mode::Rate, Some(rate)) => paced(&mut *tx, &pattern, &mut buf, spec.messages, rate)?,
        _ => full_speed(&mut *tx, &pattern, &mut buf, spec.messages)?,
    };
    report.warmups = warmups;
    report.counters = tx.counters();
    report.info = tx.info();
    control::say("DONE", &serde_json::to_string(&report)?);

    // Stay up (sockets open, engine running) until the subscriber has finished.
    while let Ok(c) = commands.recv() {
        if c == Command::Exit {
            break;
        }
    }
    drop(tx);
    Ok(report)
}

/// Full speed: stamp = clock read just before each send.
fn full_speed(
    tx: &mut dyn Publisher,
    pattern: &Pattern,
    buf: &mut [u8],
    n: u64,
) -> Result<PubReport> {
    let first = now_ns();
    for seq in 0..n {
        pattern.fill(buf, seq, now_ns());
        tx.send(buf)?;
    }
    let last = now_ns();
    tx.finish()?;
    Ok(PubReport {
        sent: n,
        first_send_ns: first,
        last_send_ns: last,
        finished_ns: now_ns(),
        ..PubReport::default()
    })
}

/// Open loop at a fixed rate: message `i` is due at `start + i / rate` and carries
/// that intended time as its stamp, however late it is actually sent, so a
/// stalled sender shows up as latency (no coordinated omission).
fn paced(
    tx: &mut dyn Publisher,
    pattern: &Pattern,
    buf: &mut [u8],
    n: u64,
    rate: u64,
) -> Result<PubReport> {
    let start = now_ns() + 1_000_000;
    let mut max_behind = 0;
    for seq in 0..n {
        let due = schedule(start, seq, rate);
        let mut now = now_ns();
        if now < due {
            tx.flush()?; // never hold a batch while idle
            now = spin_until(due);
        }
        max_behind = max_behind.max(now - due);
        pattern.fill(buf, seq, due);
        tx.send(buf)?;
    }
    let last = now_ns();
    tx.finish()?;
    Ok(PubReport {
        sent: n,
        first_send_ns: start,
        last_send_ns: last,
        finished_ns: now_ns(),
        max_behind_ns: max_behind,
        ..PubReport::default()
    })
}

/// Intended send time of message `seq` at `rate` msg/s from `start_ns`.
pub fn schedule(start_ns: u64, seq: u64, rate: u64) -> u64 {
    start_ns + (seq as u128 * 1_000_000_000 / rate as u128) as u64
}

fn subscribe(spec: &RunSpec) -> Result<SubReport> {
    pin(spec.sub_core);
    let flags = control::subscriber_flags();
    let mut rx = systems::open_subscriber(spec)?;
    let pattern = Pattern::new(spec.size);
    let mut tracker = Tracker::new(spec.messages);
    let mut hist = stats::new_histogram();
    let quiet_ns = spec.quiet_ms * 1_000_000;
    let mut ready = false;
    let stopped = loop {
        rx.poll(Duration::from_millis(20), &mut |msg| {
            let now = now_ns();
            if let Outcome::Delivered { stamp } = tracker.on_message(pattern.decode(msg), now) {
                let _ = hist.record(now.saturating_sub(stamp));
            }
        })?;
        let tally = tracker.tally();
        if !ready && (tally.warmups > 0 || tally.received > 0) {
            control::say("READY", "");
            ready = true;
        }
        if tracker.complete() {
            break "complete";
        }
        if flags.abort.load(Ordering::Acquire) {
            break "abort";
        }
        let done_at = flags.pub_done_at.load(Ordering::Acquire);
        if done_at != 0 {
            let last = tally.last_recv_ns.unwrap_or(0).max(done_at);
            if now_ns().saturating_sub(last) > quiet_ns {
                break "quiet";
            }
        }
    };
    let mut file = std::fs::File::create(&spec.hdr_path)
        .with_context(|| format!("create {}", spec.hdr_path.display()))?;
    use hdrhistogram::serialization::Serializer;
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(&hist, &mut file)
        .map_err(|e| anyhow::anyhow!("write histogram: {e:?}"))?;
    Ok(SubReport {
        tally: tracker.tally().clone(),
        stopped: stopped.to_owned(),
        counters: rx.counters(),
        info: rx.info(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_exact() {
        assert_eq!(schedule(1_000, 0, 100_000), 1_000);
        assert_eq!(schedule(1_000, 1, 100_000), 11_000);
        assert_eq!(schedule(0, 999_999, 1_000_000), 999_999_000);
        assert_eq!(schedule(0, 3, 3), 1_000_000_000);
        // No drift over long runs at rates that do not divide 1e9.
        assert_eq!(schedule(0, 3_000_000, 3_000_000), 1_000_000_000);
    }
}
