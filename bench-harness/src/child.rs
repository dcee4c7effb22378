//! The two measured sides, each run as a child process of the harness
//! (`ringcast-bench pub --spec JSON` / `ringcast-bench sub --spec JSON`).
//!
//! The same loops drive every system: stamping, pacing, verification and timing
//! never depend on the system under test.

use crate::clock::{cpu_ns, now_ns};
use crate::control::{self, Command};
use crate::message::{Decoded, Pattern, WARMUP_FLAG};
use crate::spec::{Mode, RunSpec, Wait, SLEEP_ABOVE_NS};
use crate::stats;
use crate::systems::{self, Counters, Info, Publisher, Subscriber};
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
    /// CPU time of the publisher process (all threads) over the measured part.
    #[serde(default)]
    pub cpu_ns: Option<u64>,
    /// Rate mode: the part of `cpu_ns` the harness's own pacing loop spent spinning
    /// or yielding for send times, idle duty-cycle calls included (not a duty cycle
    /// that did work, not sleeps; a round in which the thread lost its core counts
    /// at most 1 µs): an estimate from the loop's clock reads that errs low.
    #[serde(default)]
    pub pacing_cpu_ns: Option<u64>,
    /// Round-trip mode: the pongs that came back, verified (the run's deliveries).
    #[serde(default)]
    pub rtt: Option<Tally>,
    pub counters: Counters,
    pub info: Info,
}

/// What the subscriber measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubReport {
    pub tally: Tally,
    /// Why the subscriber stopped: `complete`, `quiet`, `abort`, `pub-done` (rtt).
    pub stopped: String,
    /// CPU time of the subscriber process (all threads) from READY to the stop.
    #[serde(default)]
    pub cpu_ns: Option<u64>,
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
        tx.do_work()?;
        warmups += 1;
        std::thread::sleep(interval);
    }

    let cpu0 = cpu_ns();
    let mut report = match (spec.mode, spec.rate) {
        (Mode::Rtt, _) => round_trip(spec, &mut *tx, &pattern, &mut buf, &mut warmups)?,
        (Mode::Rate, Some(rate)) => paced(
            &mut *tx,
            &pattern,
            &mut buf,
            spec.messages,
            rate,
            spec.wait.unwrap_or(Wait::Spin),
        )?,
        _ => full_speed(&mut *tx, &pattern, &mut buf, spec.messages)?,
    };
    report.cpu_ns.get_or_insert(cpu_ns().saturating_sub(cpu0));
    report.warmups = warmups;
    report.counters.extend(tx.counters());
    report.info.extend(tx.info());
    control::say("DONE", &serde_json::to_string(&report)?);

    // Stay up (sockets open, engine running) until the subscriber has finished;
    // a system whose duty cycle runs here (invoker, inline) gets it at once while it
    // has work (the tail of the run, repairs), else every 100 µs.
    let mut busy = false;
    loop {
        let next = if busy {
            match commands.try_recv() {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Command::Exit),
            }
        } else {
            match commands.recv_timeout(Duration::from_micros(100)) {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(Command::Exit),
            }
        };
        if next == Some(Command::Exit) {
            break;
        }
        busy = tx.do_work()? > 0;
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
    wait: Wait,
) -> Result<PubReport> {
    let start = now_ns() + 1_000_000;
    let mut max_behind = 0;
    let mut pacing = 0;
    for seq in 0..n {
        let due = schedule(start, seq, rate);
        let mut now = now_ns();
        if now < due {
            tx.flush()?; // never hold a batch while idle
            now = wait_until(tx, due, wait, &mut pacing)?;
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
        pacing_cpu_ns: Some(pacing),
        ..PubReport::default()
    })
}

/// A round of the pacing loop (a spin or a yield, a clock read, an idle duty cycle)
/// that took longer than this was not all the loop's own: the thread gave the core
/// to another one.
const OWN_ROUND_MAX_NS: u64 = 1_000;

/// Wait for `due` in the given style, giving the system's duty cycle a turn in
/// every round; returns the clock read last. Adds to `pacing` the time the loop
/// itself spun or yielded: rounds whose `do_work` did no work are the loop's (a
/// spinning application's idle polling), the time of a `do_work` that did some is
/// the system's, sleeps are no one's, and each round counts at most
/// [`OWN_ROUND_MAX_NS`] (a longer one lost the core to another thread, whose CPU
/// time is counted where it belongs).
fn wait_until(tx: &mut dyn Publisher, due: u64, wait: Wait, pacing: &mut u64) -> Result<u64> {
    let mut now = now_ns();
    loop {
        if now >= due {
            return Ok(now);
        }
        let round = now;
        let work = tx.do_work()?;
        let worked = now_ns();
        match wait {
            Wait::Spin => std::hint::spin_loop(),
            Wait::Sleep => {
                let left = due.saturating_sub(worked);
                if left > SLEEP_ABOVE_NS {
                    std::thread::sleep(Duration::from_nanos(left));
                    now = now_ns();
                    continue;
                }
                std::thread::yield_now();
            }
        }
        now = now_ns();
        let own = now.saturating_sub(if work == 0 { round } else { worked });
        *pacing += own.min(OWN_ROUND_MAX_NS);
    }
}

/// Round trip: after the echo channel is warm, ping `n` times at the run's rate
/// (stamp = intended send time), and between pings take in the pongs the
/// subscriber process echoes back; RTT = pong arrival − ping stamp. The pongs
/// are verified (sequence, payload) like any delivery; the histogram of the run
/// is written here, not by the subscriber.
fn round_trip(
    spec: &RunSpec,
    tx: &mut dyn Publisher,
    pattern: &Pattern,
    buf: &mut [u8],
    warmups: &mut u64,
) -> Result<PubReport> {
    let rate = spec.rate.unwrap_or(DEFAULT_RTT_RATE);
    let n = spec.messages;
    let mut rx = systems::open_subscriber(&spec.echo_spec()).context("echo subscriber")?;
    // The echo channel has a slow joiner too: ping warm-ups until one comes back.
    let give_up = now_ns() + 15_000_000_000;
    let interval = spec.warmup_interval_us * 1_000;
    let mut next = 0;
    loop {
        let now = now_ns();
        if now >= next {
            pattern.fill(buf, *warmups | WARMUP_FLAG, now);
            tx.send(buf)?;
            tx.flush()?;
            *warmups += 1;
            next = now + interval;
        }
        tx.do_work()?;
        let mut back = false;
        rx.try_poll(&mut |m| back |= pattern.decode(m) == Decoded::Warmup)?;
        if back {
            break;
        }
        if now > give_up {
            anyhow::bail!("no pong came back on the echo channel within 15 s");
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    // Let the warm-up pongs still in flight arrive (and be ignored).
    let settle = now_ns() + 5_000_000;
    while now_ns() < settle {
        tx.do_work()?;
        rx.try_poll(&mut |_| {})?;
    }

    let mut tracker = Tracker::new(n);
    let mut hist = stats::new_histogram();
    let mut pongs = |rx: &mut dyn Subscriber, tracker: &mut Tracker| {
        rx.try_poll(&mut |m| {
            let now = now_ns();
            if let Outcome::Delivered { stamp } = tracker.on_message(pattern.decode(m), now) {
                let _ = hist.record(now.saturating_sub(stamp));
            }
        })
    };
    let cpu0 = cpu_ns();
    let start = now_ns() + 1_000_000;
    let mut max_behind = 0;
    for seq in 0..n {
        let due = schedule(start, seq, rate);
        let mut now = now_ns();
        if now < due {
            tx.flush()?;
            loop {
                pongs(&mut *rx, &mut tracker)?;
                now = now_ns();
                if now >= due {
                    break;
                }
                tx.do_work()?;
                std::hint::spin_loop();
            }
        }
        max_behind = max_behind.max(now - due);
        pattern.fill(buf, seq, due);
        tx.send(buf)?;
    }
    tx.flush()?;
    let last_send = now_ns();
    // Collect the remaining pongs: until all are back or none came for quiet_ms.
    let quiet = spec.quiet_ms * 1_000_000;
    let mut last_pong = last_send;
    loop {
        let got = pongs(&mut *rx, &mut tracker)?;
        let now = now_ns();
        if got > 0 {
            last_pong = now;
        }
        if tracker.complete() || now.saturating_sub(last_pong) > quiet {
            break;
        }
        tx.do_work()?;
        if got == 0 {
            std::hint::spin_loop();
        }
    }
    let finished = now_ns();
    let cpu = cpu_ns().saturating_sub(cpu0);
    write_histogram(&spec.hdr_path, &hist)?;
    let mut counters = Counters::new();
    for (k, v) in rx.counters() {
        counters.insert(format!("echo.{k}"), v);
    }
    let mut info = Info::new();
    for (k, v) in rx.info() {
        info.insert(format!("echo.{k}"), v);
    }
    drop(rx);
    Ok(PubReport {
        sent: n,
        first_send_ns: start,
        last_send_ns: last_send,
        finished_ns: finished,
        max_behind_ns: max_behind,
        cpu_ns: Some(cpu),
        rtt: Some(tracker.tally().clone()),
        counters,
        info,
        ..PubReport::default()
    })
}

/// Offered ping rate of the round-trip mode when none is given.
pub const DEFAULT_RTT_RATE: u64 = 10_000;

fn write_histogram(path: &std::path::Path, hist: &hdrhistogram::Histogram<u64>) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    use hdrhistogram::serialization::Serializer;
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(hist, &mut file)
        .map_err(|e| anyhow::anyhow!("write histogram: {e:?}"))?;
    Ok(())
}

/// Intended send time of message `seq` at `rate` msg/s from `start_ns`.
pub fn schedule(start_ns: u64, seq: u64, rate: u64) -> u64 {
    start_ns + (seq as u128 * 1_000_000_000 / rate as u128) as u64
}

fn subscribe(spec: &RunSpec) -> Result<SubReport> {
    pin(spec.sub_core);
    let flags = control::subscriber_flags();
    let rtt = spec.mode == Mode::Rtt;
    let mut rx = systems::open_subscriber(spec)?;
    // Round trip: every verified ping (warm-ups included) goes straight back.
    let mut echo = if rtt {
        Some(systems::open_publisher(&spec.echo_spec()).context("echo publisher")?)
    } else {
        None
    };
    let pattern = Pattern::new(spec.size);
    let mut tracker = Tracker::new(spec.messages);
    let mut hist = stats::new_histogram();
    let quiet_ns = spec.quiet_ms * 1_000_000;
    let mut ready = false;
    let mut cpu0 = 0;
    let mut echo_error: Option<anyhow::Error> = None;
    let mut echoed = 0u64;
    let stopped = loop {
        let mut sent_back = 0usize;
        rx.poll(Duration::from_millis(20), &mut |msg| {
            let now = now_ns();
            let outcome = tracker.on_message(pattern.decode(msg), now);
            if let Outcome::Delivered { stamp } = outcome {
                let _ = hist.record(now.saturating_sub(stamp));
            }
            if let Some(e) = echo.as_mut() {
                if matches!(outcome, Outcome::Delivered { .. } | Outcome::Warmup)
                    && echo_error.is_none()
                {
                    match e.send(msg) {
                        Ok(()) => sent_back += 1,
                        Err(err) => echo_error = Some(err),
                    }
                }
            }
        })?;
        if let Some(err) = echo_error.take() {
            return Err(err.context("echo send"));
        }
        if let Some(e) = echo.as_mut() {
            if sent_back > 0 {
                e.flush()?;
                echoed += sent_back as u64;
            }
            e.do_work()?;
        }
        let tally = tracker.tally();
        if !ready && (tally.warmups > 0 || tally.received > 0) {
            cpu0 = cpu_ns();
            control::say("READY", "");
            ready = true;
        }
        if flags.abort.load(Ordering::Acquire) {
            break "abort";
        }
        let done_at = flags.pub_done_at.load(Ordering::Acquire);
        if rtt {
            // The publisher decides when the round trips are over.
            if done_at != 0 {
                break "pub-done";
            }
            continue;
        }
        if tracker.complete() {
            break "complete";
        }
        if done_at != 0 {
            let last = tally.last_recv_ns.unwrap_or(0).max(done_at);
            if now_ns().saturating_sub(last) > quiet_ns {
                break "quiet";
            }
        }
    };
    let cpu = ready.then(|| cpu_ns().saturating_sub(cpu0));
    if !rtt {
        write_histogram(&spec.hdr_path, &hist)?;
    }
    let mut counters = rx.counters();
    let mut info = rx.info();
    if let Some(e) = echo.as_ref() {
        counters.insert("echoed".into(), echoed);
        for (k, v) in e.counters() {
            counters.insert(format!("echo.{k}"), v);
        }
        for (k, v) in e.info() {
            info.insert(format!("echo.{k}"), v);
        }
    }
    drop(echo);
    Ok(SubReport {
        tally: tracker.tally().clone(),
        stopped: stopped.to_owned(),
        cpu_ns: cpu,
        counters,
        info,
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
