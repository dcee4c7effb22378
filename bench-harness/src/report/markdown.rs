//! The markdown table printed on stdout and `RESULTS.md`.

use super::Document;
use crate::rows::{Row, Status};
use std::fmt::Write;

/// `1234567.0` → `1.23M`.
pub fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

/// Nanoseconds as microseconds with a precision that suits the magnitude.
pub fn fmt_us(ns: f64) -> String {
    let us = ns / 1e3;
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

pub fn fmt_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn status(r: &Row) -> &'static str {
    match r.status {
        Status::Ok => "ok",
        Status::Lossy => "lossy",
        Status::Failed => "FAILED",
    }
}

fn range(v: Option<f64>, r: Option<[f64; 2]>, reps: u32) -> String {
    match (v, r) {
        (Some(_), Some([lo, hi])) if reps > 1 => {
            format!(
                "{} ({}–{})",
                fmt_rate(v),
                fmt_rate(Some(lo)),
                fmt_rate(Some(hi))
            )
        }
        _ => fmt_rate(v),
    }
}

/// The main table: one line per row.
pub fn table<'a>(rows: impl IntoIterator<Item = &'a Row>, with_ranges: bool) -> String {
    let mut s = String::new();
    s.push_str(
        "| system | transport | variant | mode | msgs | rate | wait | sender msg/s | receiver msg/s | ratio | lost | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | mean µs | CPU ns/msg pub+sub | status |\n",
    );
    s.push_str(
        "|---|---|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for r in rows {
        let (send, recv) = match (&r.range, with_ranges) {
            (Some(rg), true) => (
                range(r.sender_msgs_per_sec, rg.sender_msgs_per_sec, r.reps),
                range(r.receiver_msgs_per_sec, rg.receiver_msgs_per_sec, r.reps),
            ),
            _ => (
                fmt_rate(r.sender_msgs_per_sec),
                fmt_rate(r.receiver_msgs_per_sec),
            ),
        };
        let lat = |f: fn(&crate::stats::Latency) -> f64| {
            r.latency_ns.as_ref().map_or("–".into(), |l| fmt_us(f(l)))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.transport,
            r.variant,
            r.mode,
            fmt_count(r.messages),
            r.rate.map_or("–".into(), |v| fmt_rate(Some(v as f64))),
            r.wait.as_deref().unwrap_or("–"),
            send,
            recv,
            r.ratio.map_or("–".into(), |v| format!("{v:.2}")),
            r.lost,
            lat(|l| l.p50),
            lat(|l| l.p90),
            lat(|l| l.p99),
            lat(|l| l.p999),
            lat(|l| l.p9999),
            lat(|l| l.max),
            lat(|l| l.mean),
            fmt_cpu(r),
            status(r),
        );
    }
    s
}

/// CPU ns per delivered message: `sum (pub + sub)`, net of the harness's pacing
/// loop where it ran (rate mode: `net (pub−wait + sub) + wait`).
pub fn fmt_cpu(r: &Row) -> String {
    match (
        r.cpu_ns_per_msg_net,
        r.cpu_ns_per_msg_pub,
        r.cpu_ns_per_msg_sub,
    ) {
        (Some(t), Some(p), Some(s)) => match r.cpu_ns_per_msg_pacing {
            Some(w) => format!("{t:.0} ({:.0}+{s:.0}) +{w:.0} wait", (p - w).max(0.0)),
            None => format!("{t:.0} ({p:.0}+{s:.0})"),
        },
        _ => "–".into(),
    }
}

/// The raw-UDP baselines latency is compared with.
pub const UDP_BASELINE: &str = "udp/udp-multicast/one-dgram-per-msg";
pub const UDP_BUSY_POLL: &str = "udp/udp-multicast/busy-poll";

fn ratio_to(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

/// Latency next to raw UDP's: one block per (rate, wait style) — or per rate for
/// round trips — with every configuration's p50 / p99 and their ratio to raw UDP
/// one-datagram-per-message (blocking receive) and to raw UDP busy-poll, measured
/// at the same rate in the same style.
pub fn versus_udp(rows: &[&Row]) -> String {
    let mut s = String::new();
    let mut groups: Vec<(Option<u64>, Option<String>)> = Vec::new();
    for r in rows {
        let g = (r.rate, r.wait.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for (rate, wait) in groups {
        let at: Vec<&&Row> = rows
            .iter()
            .filter(|r| r.rate == rate && r.wait == wait)
            .collect();
        let base = |label: &str| {
            at.iter()
                .find(|r| r.label() == label)
                .and_then(|r| r.latency_ns)
        };
        let (udp, busy) = (base(UDP_BASELINE), base(UDP_BUSY_POLL));
        let _ = writeln!(
            s,
            "**{} msg/s{}** — raw UDP one datagram per message (blocking recv): p50 {} µs, p99 {} µs; busy-poll: p50 {} µs, p99 {} µs\n",
            rate.map_or("–".into(), |v| fmt_rate(Some(v as f64))),
            wait.as_ref().map_or(String::new(), |w| format!(", publisher waits by {w}")),
            udp.map_or("–".into(), |l| fmt_us(l.p50)),
            udp.map_or("–".into(), |l| fmt_us(l.p99)),
            busy.map_or("–".into(), |l| fmt_us(l.p50)),
            busy.map_or("–".into(), |l| fmt_us(l.p99)),
        );
        s.push_str("| configuration | p50 µs | p99 µs | p50 ÷ UDP | p99 ÷ UDP | p50 ÷ UDP busy-poll | p99 ÷ UDP busy-poll | CPU ns/msg (net of wait) | status |\n");
        s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for r in at {
            let l = r.latency_ns;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label(),
                l.map_or("–".into(), |l| fmt_us(l.p50)),
                l.map_or("–".into(), |l| fmt_us(l.p99)),
                ratio_to(l.map(|l| l.p50), udp.map(|l| l.p50)),
                ratio_to(l.map(|l| l.p99), udp.map(|l| l.p99)),
                ratio_to(l.map(|l| l.p50), busy.map(|l| l.p50)),
                ratio_to(l.map(|l| l.p99), busy.map(|l| l.p99)),
                r.cpu_ns_per_msg_net
                    .map_or("–".into(), |c| format!("{c:.0}")),
                status(r),
            );
        }
        s.push('\n');
    }
    s
}

fn section_rows<'a>(doc: &'a Document, mode: &str) -> Vec<&'a Row> {
    doc.medians().filter(|r| r.mode == mode).collect()
}

/// The complete RESULTS.md.
pub fn results_md(doc: &Document, plots: &[String]) -> String {
    let mut s = String::new();
    let st = &doc.settings;
    let _ = writeln!(s, "# ringcast-bench results\n");
    let _ = writeln!(
        s,
        "Measured {} on {} ({} cores, kernel {}). {} × {}-byte messages per full-speed run, \
         {} repetition(s) per configuration; tables show the median with min–max over repetitions.\n",
        doc.created_utc,
        doc.environment.cpu_model,
        doc.environment.cores,
        doc.environment.kernel,
        fmt_count(st.messages),
        st.size,
        st.reps,
    );
    let _ = writeln!(s, "Command: `{}`\n", doc.environment.command_line.join(" "));
    let _ = writeln!(
        s,
        "Source: git commit `{}`{}.\n",
        doc.environment.git_commit,
        match doc.environment.git_dirty {
            Some(true) => " (dirty: uncommitted changes)",
            Some(false) => " (clean)",
            None => "",
        }
    );
    let _ = writeln!(s, "Network: {}.\n", doc.environment.isolation);
    if !doc.skipped.is_empty() {
        let _ = writeln!(s, "Not measured:\n");
        for k in &doc.skipped {
            let _ = writeln!(s, "- **{}**: {}", k.system, k.reason);
        }
        s.push('\n');
    }

    let full = section_rows(doc, "full");
    if !full.is_empty() {
        let _ = writeln!(s, "## Full speed\n");
        let _ = writeln!(
            s,
            "Sender rate = messages / (first send → return of last send); receiver rate = \
             verified messages / (first → last receive); latency = one-way `receive − send stamp`, \
             which at full speed includes queueing.\n"
        );
        s.push_str(&table(full.iter().copied(), true));
        s.push('\n');
        embed(
            &mut s,
            plots,
            "throughput.svg",
            "Throughput, sender vs receiver",
        );
        embed(
            &mut s,
            plots,
            "latency-percentiles-full.svg",
            "Latency percentiles at full speed",
        );
    }
    let rate = section_rows(doc, "rate");
    if !rate.is_empty() {
        let _ = writeln!(s, "## Open loop at fixed offered rates\n");
        let _ = writeln!(
            s,
            "The publisher sends on a fixed schedule and stamps each message with its *intended* \
             send time, so stalls show up as latency (no coordinated omission). A run that sent \
             below {:.0} % of the offered rate is FAILED.\n",
            crate::rows::RATE_TOLERANCE * 100.0
        );
        let _ = writeln!(
            s,
            "Each rate runs twice per configuration, once per waiting style of the paced \
             publisher (`wait`): `spin` spins on the clock until the next send time (as trading \
             applications do); `sleep` calls `thread::sleep` for waits above {} µs and \
             `yield_now` below (as polite applications do).\n",
            crate::spec::SLEEP_ABOVE_NS / 1_000
        );
        let _ = writeln!(s, "### Next to raw UDP\n");
        s.push_str(&versus_udp(&rate));
        let _ = writeln!(s, "### Every configuration\n");
        s.push_str(&table(rate.iter().copied(), true));
        s.push('\n');
        for w in [None, Some("spin"), Some("sleep")] {
            embed(
                &mut s,
                plots,
                &super::plots::latency_vs_rate_file(w),
                &format!(
                    "Latency vs offered rate{}",
                    w.map_or(String::new(), |w| format!(", {w}"))
                ),
            );
        }
    }
    let rtt = section_rows(doc, "rtt");
    if !rtt.is_empty() {
        let _ = writeln!(s, "## Round trip\n");
        let _ = writeln!(
            s,
            "The publisher process sends pings at a fixed rate (stamped with the intended send \
             time, spinning between sends and taking in pongs as they come); the subscriber \
             process verifies each ping and sends it straight back on a second channel (topic, \
             stream, group or port); the publisher verifies the pong and records RTT = arrival − \
             stamp. `lost` counts pongs that never came back verified. Latency columns are RTT.\n"
        );
        s.push_str(&versus_udp(&rtt));
        s.push_str(&table(rtt.iter().copied(), true));
        s.push('\n');
        embed(
            &mut s,
            plots,
            "latency-percentiles-rtt.svg",
            "Round-trip time by percentile",
        );
    }
    let sweep = section_rows(doc, "count-sweep");
    if !sweep.is_empty() {
        let _ = writeln!(s, "## Latency vs message count (full speed)\n");
        s.push_str(&table(sweep.iter().copied(), true));
        s.push('\n');
        embed(
            &mut s,
            plots,
            "latency-vs-count.svg",
            "Latency vs message count",
        );
    }
    for p in plots
        .iter()
        .filter(|p| p.starts_with("latency-percentiles-rate"))
    {
        embed(&mut s, plots, p, "Latency percentiles at a fixed rate");
    }
    let _ = writeln!(s, "## CPU time per delivered message\n");
    let _ = writeln!(
        s,
        "`CPU ns/msg` = CPU time (user + system, every thread, `getrusage(RUSAGE_SELF)`) of the \
         publisher process from GO to the end of its sends (rtt: of its pings and pongs) plus the \
         subscriber process's from its first warm-up to its stop, divided by the verified \
         deliveries; shown as `sum (pub+sub)`. Spinning threads of the system count in full. \
         Paced rows show it net of the harness's own pacing loop — the rounds the publisher \
         spun or yielded for its send times, idle `do_work` calls included, not a `do_work` \
         that did work, not sleeps, at most 1 µs a round (a longer one lost the core to another \
         thread) — as `net (pub+sub) +W wait`, W the loop's part per message (an estimate that \
         errs low); `results.json` has both (`cpu_ns_per_msg`, `cpu_ns_per_msg_net`, \
         `cpu_ns_per_msg_pacing`).\n"
    );

    let problems: Vec<&Row> = doc.reps().filter(|r| !r.reasons.is_empty()).collect();
    if !problems.is_empty() {
        let _ = writeln!(s, "## Failures and loss\n");
        for r in problems {
            let _ = writeln!(
                s,
                "- {} {} {} msgs{} rep {}: {} — {}",
                r.label(),
                r.mode,
                fmt_count(r.messages),
                r.rate.map_or(String::new(), |v| format!(
                    " @ {}/s",
                    fmt_rate(Some(v as f64))
                )),
                r.rep.unwrap_or(0),
                status(r),
                r.reasons.join("; ")
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Loss policy\n");
    let _ = writeln!(
        s,
        "Every message carries its sequence number and a payload derived from it; the subscriber \
         counts only verified, first-time deliveries, so `lost` = expected − verified. Lossless \
         runs (any loss = FAILED): ringcast (loss is never silent and the benchmark expects none), \
         ZeroMQ with HWM=0. Lossy-allowed runs (loss reported as `lossy`): raw UDP (no repair, \
         no flow control: the kernel drops when the receiver falls behind), ZeroMQ with the \
         default HWM (PUB drops silently beyond it), nng pub/sub (best effort by design). \
         Corruption and duplicates fail any run.\n"
    );

    let _ = writeln!(s, "## Environment\n");
    let e = &doc.environment;
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in [
        ("kernel", e.kernel.clone()),
        ("CPU", e.cpu_model.clone()),
        ("cores", e.cores.to_string()),
        ("clocksource", e.clocksource.clone()),
        ("io_uring", e.io_uring.clone()),
        (
            "net.core.rmem_max / wmem_max",
            format!("{} / {}", e.rmem_max, e.wmem_max),
        ),
        ("rustc", e.rustc.clone()),
        ("harness features", e.features.join(", ")),
        ("interfaces", e.interfaces.join(", ")),
        (
            "pinning",
            format!(
                "publisher process on core {}, subscriber process on core {}",
                st.pub_core.map_or("(none)".into(), |c| c.to_string()),
                st.sub_core.map_or("(none)".into(), |c| c.to_string())
            ),
        ),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    for (k, v) in &e.versions {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
    if !doc.jitter.is_empty() {
        let _ = writeln!(s, "Machine-jitter probe (a pinned thread spinning on the clock; gaps = time kept off its core):\n");
        let _ = writeln!(s, "| core | probe s | largest gaps µs | gaps > 10 µs | > 100 µs | > 1 ms | time off core |");
        let _ = writeln!(s, "|--:|--:|---|--:|--:|--:|--:|");
        for j in &doc.jitter {
            let gaps: Vec<String> = j
                .largest_gaps_ns
                .iter()
                .map(|g| fmt_us(*g as f64))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {:.1} | {} | {} | {} | {} | {:.3} % |",
                j.core,
                j.duration_ns as f64 / 1e9,
                gaps.join(", "),
                j.gaps_over_10us,
                j.gaps_over_100us,
                j.gaps_over_1ms,
                j.stolen_fraction * 100.0
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Every repetition\n");
    s.push_str(&table(doc.reps(), false));
    s
}

fn embed(s: &mut String, plots: &[String], name: &str, alt: &str) {
    if plots.iter().any(|p| p == name) {
        let _ = writeln!(s, "![{alt}]({name})\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(fmt_rate(Some(1_234_567.0)), "1.23M");
        assert_eq!(fmt_rate(Some(45_600.0)), "45.6k");
        assert_eq!(fmt_rate(Some(999.0)), "999");
        assert_eq!(fmt_rate(None), "–");
        assert_eq!(fmt_us(1_234.0), "1.23");
        assert_eq!(fmt_us(123_456.0), "123.5");
        assert_eq!(fmt_us(12_345_678.0), "12346");
        assert_eq!(fmt_count(1_000_000), "1M");
        assert_eq!(fmt_count(5_000), "5k");
        assert_eq!(fmt_count(1_234), "1234");
    }

    #[test]
    fn table_has_a_line_per_row() {
        let rows = [crate::rows::tests::row(0, 2e6, 1e6, 3, 5_000.0)];
        let t = table(rows.iter(), false);
        assert_eq!(t.lines().count(), 3);
        assert!(t.contains(
            "| udp | udp-multicast | default | full | 1k | – | – | 2.00M | 1.00M | 0.50 | 3 | 5.00 |"
        ));
        assert!(t.contains("| 1500 (1000+500) | lossy |"), "{t}");
    }

    #[test]
    fn latency_next_to_raw_udp() {
        let mk = |variant: &str, wait: &str, p50: f64| {
            let mut r = crate::rows::tests::row(0, 1.0, 1.0, 0, p50);
            r.variant = variant.into();
            r.mode = "rate".into();
            r.rate = Some(10_000);
            r.wait = Some(wait.into());
            if let Some(l) = r.latency_ns.as_mut() {
                l.p99 = p50 * 2.0;
            }
            r
        };
        let rows = [
            mk("one-dgram-per-msg", "spin", 10_000.0),
            mk("busy-poll", "spin", 5_000.0),
            mk("x", "spin", 15_000.0),
            mk("x", "sleep", 60_000.0),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let t = versus_udp(&refs);
        // Two blocks: spin (with both baselines) and sleep (none measured).
        assert_eq!(t.matches("**10.0k msg/s").count(), 2);
        assert!(
            t.contains("| udp/udp-multicast/x | 15.0 | 30.0 | 1.50× | 1.50× | 3.00× | 3.00× |"),
            "{t}"
        );
        assert!(
            t.contains("| udp/udp-multicast/x | 60.0 | 120.0 | – | – | – | – |"),
            "{t}"
        );
    }
}
