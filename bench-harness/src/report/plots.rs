//! SVG plots drawn with `plotters`.
//!
//! * `throughput.svg` — sender vs receiver msg/s per configuration (full speed);
//! * `latency-percentiles-full.svg` (and `-rate-<R>.svg`) — latency by percentile;
//! * `latency-vs-count.svg` — mean and p99 latency against run length;
//! * `latency-vs-rate-<wait>.svg` — p50 and p99 latency against offered rate, one
//!   plot per waiting style of the publisher (one series per configuration);
//! * `latency-percentiles-rate-<R>-<wait>.svg` — latency by percentile at one rate
//!   and waiting style;
//! * `latency-percentiles-rtt.svg` — round-trip time by percentile.

use super::{Document, Merged};
use crate::rows::{Row, Status};
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A named latency statistic (e.g. `("p99", |l| l.p99)`).
type Metric = (&'static str, fn(&crate::stats::Latency) -> f64);

const FONT: &str = "sans-serif";

/// Draw every plot the data allows; returns the file names written.
pub fn write_all(dir: &Path, doc: &Document, merged: &Merged) -> Vec<String> {
    let mut written = Vec::new();
    let mut attempt = |name: String, f: &dyn Fn(&Path) -> PlotResult| {
        let path = dir.join(&name);
        match f(&path) {
            Ok(()) => written.push(name),
            Err(e) => eprintln!("plot {name}: {e}"),
        }
    };
    let full: Vec<&Row> = doc.medians().filter(|r| r.mode == "full").collect();
    if !full.is_empty() {
        attempt("throughput.svg".into(), &|p| throughput(p, &full));
        let series = histogram_series(&full, merged);
        if !series.is_empty() {
            attempt("latency-percentiles-full.svg".into(), &|p| {
                percentiles(p, "One-way latency by percentile, full speed", &series)
            });
        }
    }
    let rate: Vec<&Row> = doc.medians().filter(|r| r.mode == "rate").collect();
    if !rate.is_empty() {
        let mut rates: Vec<u64> = rate.iter().filter_map(|r| r.rate).collect();
        rates.sort_unstable();
        rates.dedup();
        let mut waits: Vec<Option<String>> = rate.iter().map(|r| r.wait.clone()).collect();
        waits.sort();
        waits.dedup();
        // One plot per waiting style: half the series each, so a reader can follow a line.
        for w in &waits {
            let at: Vec<&Row> = rate.iter().copied().filter(|x| x.wait == *w).collect();
            attempt(latency_vs_rate_file(w.as_deref()), &|p| {
                latency_vs_rate(p, &at, w.as_deref())
            });
        }
        for r in rates {
            for w in &waits {
                let at: Vec<&Row> = rate
                    .iter()
                    .copied()
                    .filter(|x| x.rate == Some(r) && x.wait == *w)
                    .collect();
                let series = histogram_series(&at, merged);
                if series.is_empty() {
                    continue;
                }
                let (file, how) = match w {
                    Some(w) => (
                        format!("latency-percentiles-rate-{r}-{w}.svg"),
                        format!(", publisher waits by {w}"),
                    ),
                    None => (format!("latency-percentiles-rate-{r}.svg"), String::new()),
                };
                attempt(file, &|p| {
                    percentiles(
                        p,
                        &format!("One-way latency by percentile at {r} msg/s offered{how}"),
                        &series,
                    )
                });
            }
        }
    }
    let rtt: Vec<&Row> = doc.medians().filter(|r| r.mode == "rtt").collect();
    let series = histogram_series(&rtt, merged);
    if !series.is_empty() {
        let rate = rtt.iter().find_map(|r| r.rate).unwrap_or(0);
        attempt("latency-percentiles-rtt.svg".into(), &|p| {
            percentiles(
                p,
                &format!("Round-trip time by percentile, pings at {rate} msg/s"),
                &series,
            )
        });
    }
    let sweep: Vec<&Row> = doc.medians().filter(|r| r.mode == "count-sweep").collect();
    if !sweep.is_empty() {
        attempt("latency-vs-count.svg".into(), &|p| {
            latency_vs_count(p, &sweep)
        });
    }
    written
}

fn histogram_series<'a>(rows: &[&Row], merged: &'a Merged) -> Vec<(String, &'a Histogram<u64>)> {
    rows.iter()
        .filter_map(|r| merged.get(&r.key()).map(|h| (r.label_wait(), h)))
        .filter(|(_, h)| !h.is_empty())
        .collect()
}

fn color(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn suffix(r: &Row) -> &'static str {
    match r.status {
        Status::Ok => "",
        Status::Lossy => " (lossy)",
        Status::Failed => " (FAILED)",
    }
}

fn throughput(path: &Path, rows: &[&Row]) -> PlotResult {
    let n = rows.len() as u32;
    let height = 90 + 36 * n;
    let root: Area = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows
        .iter()
        .flat_map(|r| [r.sender_msgs_per_sec, r.receiver_msgs_per_sec])
        .flatten()
        .fold(1.0, f64::max);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{}{}", r.label(), suffix(r)))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput at full speed (median), sender vs receiver",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(300)
        .build_cartesian_2d(0f64..max * 1.18, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels
                .get((n - 1 - *i) as usize)
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("messages per second")
        .x_label_formatter(&|v| super::markdown::fmt_rate(Some(*v)))
        .draw()?;
    let blue = RGBColor(52, 101, 164);
    let orange = RGBColor(245, 121, 0);
    // Each category is split into two bars: sender (upper half), receiver (lower half).
    let bar_h = 14;
    for (i, r) in rows.iter().enumerate() {
        let i = n - 1 - i as u32; // first row at the top
        for (k, (v, c)) in [
            (r.sender_msgs_per_sec, blue),
            (r.receiver_msgs_per_sec, orange),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(v) = v else { continue };
            let mut rect = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (v, SegmentValue::Exact(i + 1)),
                ],
                c.filled(),
            );
            // Shrink the segment to one half-height bar.
            let (top, bottom) = if k == 0 {
                (2, bar_h + 2)
            } else {
                (bar_h + 2, 2)
            };
            rect.set_margin(top, bottom, 0, 0);
            chart.draw_series(std::iter::once(rect))?;
        }
        if let Some(v) = r.receiver_msgs_per_sec.or(r.sender_msgs_per_sec) {
            let ratio = r.ratio.map_or(String::new(), |x| format!("  ratio {x:.2}"));
            chart.draw_series(std::iter::once(Text::new(
                format!(
                    "{} / {}{ratio}",
                    super::markdown::fmt_rate(r.sender_msgs_per_sec),
                    super::markdown::fmt_rate(Some(v))
                ),
                (
                    r.sender_msgs_per_sec.unwrap_or(v).max(v) * 1.01,
                    SegmentValue::CenterOf(i),
                ),
                (FONT, 12).into_font(),
            )))?;
        }
    }
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Exact(0))],
            blue.filled(),
        )))?
        .label("sender")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], blue.filled()));
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Exact(0))],
            orange.filled(),
        )))?
        .label("receiver")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], orange.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Percentile → position on a "number of nines" axis: 0.99 → 2.
pub fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// Microseconds on an axis: `0.5 µs`, `20 µs`, `3 ms`, `1.5 s`.
pub fn fmt_axis_us(us: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

/// Axis position → percentile label: 2 → "99%".
pub fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn percentiles(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) -> PlotResult {
    const TOP: f64 = 5.0; // 99.999 %
    let root: Area = SVGBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = series
        .iter()
        .map(|(_, h)| h.min().max(1) as f64 / 1e3)
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .map(|(_, h)| h.max() as f64 / 1e3)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..TOP, (lo * 0.8..hi * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .x_desc("percentile")
        .y_desc("latency (log)")
        .y_label_formatter(&|v| fmt_axis_us(*v))
        .draw()?;
    for (i, (label, h)) in series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = (0..=100)
            .map(|k| {
                let x = TOP * k as f64 / 100.0;
                let q = (1.0 - 10f64.powf(-x)).min(0.999_99);
                debug_assert!((nines(q) - x).abs() < 1e-6 || x >= TOP);
                (x, (h.value_at_quantile(q).max(1)) as f64 / 1e3)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Series of (x, y) per configuration label from median rows.
fn by_label<'a>(
    rows: &[&'a Row],
    x: fn(&Row) -> Option<f64>,
) -> Vec<(String, Vec<(f64, &'a Row)>)> {
    let mut out: Vec<(String, Vec<(f64, &'a Row)>)> = Vec::new();
    for r in rows {
        let Some(xv) = x(r) else { continue };
        match out.iter_mut().find(|(l, _)| *l == r.label_wait()) {
            Some((_, v)) => v.push((xv, *r)),
            None => out.push((r.label_wait(), vec![(xv, *r)])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn two_metric_plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    rows: &[&Row],
    x: fn(&Row) -> Option<f64>,
    metrics: [Metric; 2],
) -> PlotResult {
    let series = by_label(rows, x);
    let lat: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.latency_ns)
        .flat_map(|l| [metrics[0].1(&l), metrics[1].1(&l)])
        .map(|v| v.max(1.0) / 1e3)
        .collect();
    if lat.is_empty() {
        return Err("no latency data".into());
    }
    let (ylo, yhi) = (crate::stats::min(&lat), crate::stats::max(&lat));
    let xs: Vec<f64> = rows.iter().filter_map(|r| x(r)).collect();
    let (xlo, xhi) = (crate::stats::min(&xs), crate::stats::max(&xs));
    let root: Area = SVGBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (xlo * 0.8..xhi * 1.25).log_scale(),
            (ylo * 0.8..yhi * 1.25).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("latency (log)")
        .y_label_formatter(&|v| fmt_axis_us(*v))
        .x_label_formatter(&|v| super::markdown::fmt_rate(Some(*v)))
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = color(i);
        for (m, (name, f)) in metrics.iter().enumerate() {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|(xv, r)| r.latency_ns.map(|l| (*xv, f(&l).max(1.0) / 1e3)))
                .collect();
            let style = if m == 0 {
                c.stroke_width(1)
            } else {
                c.stroke_width(3)
            };
            chart
                .draw_series(LineSeries::new(line.clone(), style))?
                .label(format!("{label} {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart.draw_series(line.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        // Mark failed configurations with a red cross at their p99.
        chart.draw_series(pts.iter().filter(|(_, r)| r.failed).filter_map(|(xv, r)| {
            r.latency_ns.map(|l| {
                Cross::new(
                    (*xv, metrics[1].1(&l).max(1.0) / 1e3),
                    7,
                    RED.stroke_width(2),
                )
            })
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency_vs_count(path: &Path, rows: &[&Row]) -> PlotResult {
    two_metric_plot(
        path,
        "Latency vs message count at full speed (thin: mean, thick: p99)",
        "messages in the run (log)",
        rows,
        |r| Some(r.messages as f64),
        [("mean", |l| l.mean), ("p99", |l| l.p99)],
    )
}

/// The file of the latency-vs-rate plot for one waiting style.
pub fn latency_vs_rate_file(wait: Option<&str>) -> String {
    match wait {
        Some(w) => format!("latency-vs-rate-{w}.svg"),
        None => "latency-vs-rate.svg".to_string(),
    }
}

fn latency_vs_rate(path: &Path, rows: &[&Row], wait: Option<&str>) -> PlotResult {
    let title = match wait {
        Some(w) => format!(
            "Latency vs offered rate, publisher waits by {w} (thin: p50, thick: p99; red cross: FAILED)"
        ),
        None => "Latency vs offered rate, open loop (thin: p50, thick: p99; red cross: FAILED)"
            .to_string(),
    };
    two_metric_plot(
        path,
        &title,
        "offered msg/s (log)",
        rows,
        |r| r.rate.map(|v| v as f64),
        [("p50", |l| l.p50), ("p99", |l| l.p99)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
        assert_eq!(fmt_axis_us(0.5), "0.5 µs");
        assert_eq!(fmt_axis_us(20.0), "20 µs");
        assert_eq!(fmt_axis_us(3_000.0), "3 ms");
        assert_eq!(fmt_axis_us(1_500_000.0), "1.5 s");
    }
}
