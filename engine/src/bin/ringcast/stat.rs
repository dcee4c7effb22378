//! `ringcast stat`: every node's counters on this host (as AeronStat shows a media
//! driver's), with rates, as text, one JSON document, or the Prometheus text format.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::stat::NodeStats;
use serde_json::{json, Value};

use crate::{interrupted, on_interrupt, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast stat                              counters and per-second rates of every node
  ringcast stat --watch --interval 2         refreshed until Ctrl-C
  ringcast stat --json | jq '.nodes[].publisher'
  ringcast stat --prometheus                 the OpenMetrics/Prometheus text format
  ringcast stat --prometheus --serve 127.0.0.1:9464   scrape http://127.0.0.1:9464/metrics";

/// Counters that are levels, not running totals.
const GAUGES: &[&str] = &[
    "max_payload",
    "receivers",
    "peers",
    "position",
    "acked_position",
    "left_behind",
    "sessions",
    "sender_max_cycle_ns",
    "receiver_max_cycle_ns",
    "rcvbuf",
    "sndbuf",
];

#[derive(Args)]
pub struct StatArgs {
    /// Refresh every INTERVAL seconds until interrupted (or --count times).
    #[arg(long)]
    watch: bool,
    /// Seconds between the two readings rates come from, and between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
    /// Show zero counters too.
    #[arg(long)]
    all: bool,
    /// Print one JSON document (per refresh with --watch: one per line).
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print the Prometheus (OpenMetrics) text exposition format.
    #[arg(long)]
    prometheus: bool,
    /// With --prometheus: serve it over HTTP on ADDR (GET /metrics) until
    /// interrupted, instead of printing it once.
    #[arg(long, requires = "prometheus")]
    serve: Option<SocketAddr>,
    /// Directory of the stats files (default: RINGCAST_STATS_DIR or /dev/shm).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One node between two readings.
struct Sample {
    node: NodeStats,
    /// Per second over the interval, for counters (gauges have none).
    rates: HashMap<String, f64>,
}

/// A reading of every node, and when it was taken.
type Reading = (Vec<NodeStats>, Instant);

/// Reads every node twice, `interval` apart (the first reading from `before`, if
/// given), and pairs them.
fn sample(
    dir: &std::path::Path,
    before: Option<Reading>,
    interval: Duration,
) -> io::Result<(Vec<Sample>, Reading)> {
    let (first, t0) = match before {
        Some(b) => b,
        None => {
            let b = (ringcast::stat::read_all(dir)?, Instant::now());
            std::thread::sleep(interval);
            b
        }
    };
    let now = ringcast::stat::read_all(dir)?;
    let t1 = Instant::now();
    let secs = t1.duration_since(t0).as_secs_f64().max(1e-6);
    let samples = now
        .iter()
        .map(|n| {
            let prev = first
                .iter()
                .find(|p| p.pid == n.pid && p.session == n.session);
            let rates = n
                .fields
                .iter()
                .filter(|(k, _)| !GAUGES.contains(&k.as_str()))
                .map(|(k, v)| {
                    let was = prev
                        .and_then(|p| p.fields.iter().find(|(pk, _)| pk == k))
                        .map_or(*v, |(_, pv)| *pv);
                    (k.clone(), v.saturating_sub(was) as f64 / secs)
                })
                .collect();
            Sample {
                node: n.clone(),
                rates,
            }
        })
        .collect();
    Ok((samples, (now, t1)))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn field(n: &NodeStats, name: &str) -> Option<u64> {
    n.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// The publishing session's positions (as AeronStat shows a publication's).
fn publisher(n: &NodeStats) -> Value {
    json!({
        "session": format!("{:08x}", n.session),
        "position": field(n, "position"),
        "acked_position": field(n, "acked_position").filter(|&a| a != u64::MAX),
        "receivers": field(n, "receivers"),
        "left_behind": field(n, "left_behind"),
    })
}

fn text(
    out: &mut dyn Write,
    dir: &std::path::Path,
    samples: &[Sample],
    all: bool,
) -> io::Result<()> {
    if samples.is_empty() {
        writeln!(out, "no ringcast nodes in {}", dir.display())?;
    }
    for s in samples {
        let n = &s.node;
        writeln!(
            out,
            "pid {} session {:08x} backend {} — {}, updated {:.1} s ago",
            n.pid,
            n.session,
            n.backend,
            if n.alive {
                "running"
            } else {
                "gone (stale file)"
            },
            now_us().saturating_sub(n.updated_us) as f64 / 1e6
        )?;
        let acked = field(n, "acked_position")
            .filter(|&a| a != u64::MAX)
            .map_or("-".to_string(), |a| a.to_string());
        writeln!(
            out,
            "  publisher: position {}, acknowledged {acked}, receivers {}, left behind {}",
            field(n, "position").unwrap_or(0),
            field(n, "receivers").unwrap_or(0),
            field(n, "left_behind").unwrap_or(0)
        )?;
        writeln!(
            out,
            "  {:<24} {:>16} {:>14}",
            "counter", "total", "per second"
        )?;
        for (name, v) in n.fields.iter().filter(|(_, v)| all || *v != 0) {
            match s.rates.get(name) {
                Some(r) => writeln!(out, "  {name:<24} {v:>16} {r:>14.1}")?,
                None => writeln!(out, "  {name:<24} {v:>16} {:>14}", "")?,
            }
        }
    }
    Ok(())
}

fn document(dir: &std::path::Path, samples: &[Sample], interval: f64) -> Value {
    let nodes: Vec<Value> = samples
        .iter()
        .map(|s| {
            let n = &s.node;
            let counters: serde_json::Map<String, Value> = n
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let rates: serde_json::Map<String, Value> = n
                .fields
                .iter()
                .filter_map(|(k, _)| s.rates.get(k).map(|r| (k.clone(), json!(r))))
                .collect();
            json!({
                "pid": n.pid,
                "session": format!("{:08x}", n.session),
                "backend": n.backend,
                "alive": n.alive,
                "updated_us": n.updated_us,
                "publisher": publisher(n),
                "counters": counters,
                "rates_per_second": rates,
            })
        })
        .collect();
    json!({
        "dir": dir.display().to_string(),
        "interval_seconds": interval,
        "nodes": nodes,
    })
}

/// The Prometheus text exposition format: one family per counter, each node a
/// labelled sample; counters as `ringcast_<name>_total`, gauges as `ringcast_<name>`
/// (Prometheus computes rates itself).
fn prometheus(nodes: &[NodeStats]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for n in nodes {
        for (k, _) in &n.fields {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
    }
    let mut out = String::new();
    for name in names {
        let gauge = GAUGES.contains(&name);
        let metric = if gauge {
            format!("ringcast_{name}")
        } else {
            format!("ringcast_{name}_total")
        };
        out.push_str(&format!(
            "# HELP {metric} ringcast node counter {name}\n# TYPE {metric} {}\n",
            if gauge { "gauge" } else { "counter" }
        ));
        for n in nodes {
            let Some(v) = field(n, name) else { continue };
            if name == "acked_position" && v == u64::MAX {
                continue; // no receiver paces the session
            }
            out.push_str(&format!(
                "{metric}{{pid=\"{}\",session=\"{:08x}\",backend=\"{}\"}} {v}\n",
                n.pid,
                n.session,
                n.backend.replace(['\\', '"', '\n'], "_")
            ));
        }
    }
    out.push_str(&format!(
        "# HELP ringcast_nodes ringcast nodes with a stats file\n# TYPE ringcast_nodes gauge\nringcast_nodes {}\n",
        nodes.len()
    ));
    out
}

pub fn run(a: StatArgs) -> Res {
    let dir = a.dir.clone().unwrap_or_else(ringcast::stat::default_dir);
    let interval = Duration::from_secs_f64(a.interval.max(0.05));
    if let Some(addr) = a.serve {
        return serve(&dir, addr);
    }
    let rounds = if a.watch {
        a.count.unwrap_or(u64::MAX)
    } else {
        1
    };
    on_interrupt();
    let mut out = io::stdout().lock();
    let mut before = None;
    for round in 0..rounds {
        if a.prometheus {
            write!(out, "{}", prometheus(&ringcast::stat::read_all(&dir)?))?;
            out.flush()?;
            if interrupted() || round + 1 == rounds {
                break;
            }
            std::thread::sleep(interval);
            continue;
        }
        let (samples, now) = sample(&dir, before.take(), interval)?;
        if a.json {
            writeln!(out, "{}", document(&dir, &samples, interval.as_secs_f64()))?;
        } else {
            if round > 0 {
                writeln!(out)?;
            }
            text(&mut out, &dir, &samples, a.all)?;
        }
        out.flush()?;
        if interrupted() || round + 1 == rounds {
            break;
        }
        std::thread::sleep(interval);
        if interrupted() {
            break;
        }
        before = Some(now);
    }
    Ok(ExitCode::SUCCESS)
}

/// A minimal HTTP/1.1 endpoint: `GET /metrics` (or `/`) answers the Prometheus text,
/// anything else 404; one connection at a time, each read bounded by a timeout.
fn serve(dir: &std::path::Path, addr: SocketAddr) -> Res {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    eprintln!(
        "serving Prometheus metrics on http://{}/metrics",
        listener.local_addr()?
    );
    on_interrupt();
    while !interrupted() {
        let (stream, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers (bounded: the read timeout, at most 100 lines).
        for _ in 0..100 {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(n) if n > 2 => {}
                _ => break,
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let mut w = &stream;
        let reply = if line.starts_with("GET ") && (path == "/metrics" || path == "/") {
            let nodes = match ringcast::stat::read_all(dir) {
                Ok(n) => n,
                Err(e) => {
                    let _ = write!(w, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    eprintln!("stat: {e}");
                    continue;
                }
            };
            let body = prometheus(&nodes);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        };
        let _ = w.write_all(reply.as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}
