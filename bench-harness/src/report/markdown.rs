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
        "| system | transport | variant | mode | msgs | rate | sender msg/s | receiver msg/s | ratio | lost | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | mean µs | status |\n",
    );
    s.push_str("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.transport,
            r.variant,
            r.mode,
            fmt_count(r.messages),
            r.rate.map_or("–".into(), |v| fmt_rate(Some(v as f64))),
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
            status(r),
        );
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
        s.push_str(&table(rate.iter().copied(), true));
        s.push('\n');
        embed(
            &mut s,
            plots,
            "latency-vs-rate.svg",
            "Latency vs offered rate",
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
            "| udp | udp-multicast | default | full | 1k | – | 2.00M | 1.00M | 0.50 | 3 | 5.00 |"
        ));
    }
}
