//! The benchmark method end to end: isolate the network, record the
//! environment and machine jitter, run every configuration `reps` times
//! (repetition-major, so configurations are interleaved in time), then write
//! the reports.

use crate::report::{self, Document, SettingsRecord, Skipped};
use crate::rows;
use crate::spec::{Endpoint, Mode, RunSpec, Wait};
use crate::suite::{self, Settings};
use crate::systems;
use crate::{env, jitter, netns, runner, RunArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_COUNTS: &[u64] = &[1_000, 10_000, 100_000, 500_000, 1_000_000];
const DEFAULT_RATES: &[u64] = &[10_000, 100_000, 500_000, 1_000_000];

fn parse_core(s: &str) -> Result<Option<usize>> {
    match s {
        "none" | "" => Ok(None),
        n => Ok(Some(n.parse().with_context(|| format!("bad core {n}"))?)),
    }
}

fn parse_mode(s: &str) -> Result<Mode> {
    Ok(match s {
        "full" => Mode::Full,
        "rate" => Mode::Rate,
        "count-sweep" | "sweep" => Mode::CountSweep,
        "rtt" | "round-trip" => Mode::Rtt,
        other => bail!("unknown mode {other} (full, rate, rtt, count-sweep)"),
    })
}

fn parse_wait(s: &str) -> Result<Wait> {
    Ok(match s {
        "spin" => Wait::Spin,
        "sleep" => Wait::Sleep,
        other => bail!("unknown wait style {other} (spin, sleep)"),
    })
}

/// Resolve explicit options over the quick or standard defaults.
pub fn settings(a: &RunArgs) -> Result<Settings> {
    let q = a.quick;
    let messages = a.messages.unwrap_or(if q { 100_000 } else { 1_000_000 });
    if messages == 0 {
        bail!("--messages must be at least 1");
    }
    if a.size < crate::message::HEADER_LEN {
        bail!(
            "--size must be at least {} bytes",
            crate::message::HEADER_LEN
        );
    }
    let systems = a
        .systems
        .clone()
        .unwrap_or_else(|| systems::SYSTEMS.iter().map(|s| s.to_string()).collect());
    for s in &systems {
        if !systems::SYSTEMS.contains(&s.as_str()) {
            bail!(
                "unknown system {s} (known: {})",
                systems::SYSTEMS.join(", ")
            );
        }
    }
    let modes = match &a.modes {
        Some(m) => m.iter().map(|s| parse_mode(s)).collect::<Result<_>>()?,
        None => vec![Mode::Full, Mode::Rate, Mode::Rtt, Mode::CountSweep],
    };
    let waits = match &a.waits {
        Some(w) => w.iter().map(|s| parse_wait(s)).collect::<Result<_>>()?,
        None => vec![Wait::Spin, Wait::Sleep],
    };
    if a.rtt_rate == 0 {
        bail!("--rtt-rate must be positive");
    }
    let rates = a.rates.clone().unwrap_or_else(|| {
        if q {
            vec![100_000]
        } else {
            DEFAULT_RATES.to_vec()
        }
    });
    if rates.contains(&0) {
        bail!("rates must be positive");
    }
    let counts = a.counts.clone().unwrap_or_else(|| {
        let all = if q {
            vec![1_000, 10_000, 100_000]
        } else {
            DEFAULT_COUNTS.to_vec()
        };
        all.into_iter().filter(|&c| c <= messages).collect()
    });
    Ok(Settings {
        systems,
        variants: a.variants.clone(),
        modes,
        messages,
        size: a.size,
        rates,
        waits,
        rate_secs: a.rate_secs.unwrap_or(if q { 1.0 } else { 2.0 }),
        rtt_rate: a.rtt_rate,
        // The polite style at the rates the comparisons quote, unless asked for.
        sleep_max_rate: if a.waits.is_some() { u64::MAX } else { 100_000 },
        secondary_reps: a.secondary_reps.unwrap_or(1),
        counts,
        reps: a.reps.unwrap_or(if q { 1 } else { 3 }).max(1),
        all_variants: a.all_variants,
    })
}

/// Default output directory: `results/<UTC date-time>/` under the workspace root.
fn default_out(stamp: &str) -> PathBuf {
    env::workspace_root()
        .join("results")
        .join(stamp.replace(':', "-"))
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn free_tcp_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn run(args: RunArgs) -> Result<()> {
    // First, before any thread exists: leave the host network.
    let isolation = netns::isolate()?;
    let settings = settings(&args)?;
    let pub_core = parse_core(&args.pub_core)?;
    let sub_core = parse_core(&args.sub_core)?;
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let out = args.out.clone().unwrap_or_else(|| default_out(&created));
    std::fs::create_dir_all(out.join("hdr"))?;
    std::fs::create_dir_all(out.join("logs"))?;
    let out = out.canonicalize()?;
    let exe = std::env::current_exe()?;

    let environment = env::capture(isolation.describe());
    let jitter_secs = args
        .jitter_secs
        .unwrap_or(if args.quick { 0.5 } else { 1.0 });
    let cores: Vec<usize> = [pub_core, sub_core].into_iter().flatten().collect();
    let probe_cores = if cores.is_empty() { vec![0] } else { cores };
    let jitter = if jitter_secs > 0.0 {
        eprintln!("jitter probe: {jitter_secs} s on cores {probe_cores:?}");
        jitter::probe(&probe_cores, Duration::from_secs_f64(jitter_secs))
    } else {
        Vec::new()
    };

    let plan = suite::plan(&settings);
    for (s, why) in &plan.skipped {
        eprintln!("{s}: {why}");
    }
    if plan.cases.is_empty() {
        bail!("nothing to run");
    }
    let total = plan.runs();
    let estimate = plan.estimate_secs(args.quiet_ms);
    eprintln!(
        "{total} runs ({} configurations, up to {} repetitions), estimated {:.0} min",
        plan.cases.len(),
        settings.reps,
        (estimate / 60.0).ceil()
    );
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    let mut runs = Vec::new();
    let mut index = 0u32;
    let pid = std::process::id();
    for rep in 0..settings.reps {
        for case in plan.cases.iter().filter(|c| rep < c.reps) {
            index += 1;
            let id = safe_name(&format!(
                "{index:04}-{}-{}-{}-{}-{}{}{}-r{rep}",
                case.variant.system,
                case.variant.transport,
                case.variant.variant,
                case.mode.as_str(),
                case.messages,
                case.rate.map_or(String::new(), |r| format!("-at{r}")),
                case.wait
                    .map_or(String::new(), |w| format!("-{}", w.as_str())),
            ));
            let group = Ipv4Addr::new(239, 255, (pid % 256) as u8, 1);
            let port = 40_000 + ((index * 2 + pid * 131) % 20_000) as u16;
            let ipc_base = std::env::temp_dir().join(format!("ringcast-bench-{pid}-{index}"));
            let spec = RunSpec {
                id: id.clone(),
                rep,
                variant: case.variant.clone(),
                mode: case.mode,
                messages: case.messages,
                size: settings.size,
                rate: case.rate,
                wait: case.wait,
                endpoint: Endpoint {
                    // A fresh group and port per run (and per harness process, in
                    // case several share the host namespace); the echo channel of
                    // a round trip has the next group up (Aeron's control address
                    // is data + 1, so the back group is data + 2) and the next port.
                    group: SocketAddrV4::new(group, port),
                    iface: Ipv4Addr::LOCALHOST,
                    tcp: SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_tcp_port()?),
                    ipc: ipc_base.with_extension("ipc"),
                    back_group: SocketAddrV4::new(
                        Ipv4Addr::new(239, 255, (pid % 256) as u8, 3),
                        port + 1,
                    ),
                    back_tcp: SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_tcp_port()?),
                    back_ipc: std::env::temp_dir()
                        .join(format!("ringcast-bench-{pid}-{index}-echo.ipc")),
                },
                pub_core,
                sub_core,
                hdr_path: out.join("hdr").join(format!("{id}.hdr")),
                warmup_interval_us: 1_000,
                quiet_ms: args.quiet_ms,
                echo: false,
            };
            bar.set_message(format!(
                "{} {} {}{}{}",
                case.variant.label(),
                case.mode.as_str(),
                case.messages,
                case.rate.map_or(String::new(), |r| format!(" @{r}/s")),
                case.wait
                    .map_or(String::new(), |w| format!(" {}", w.as_str()))
            ));
            let outcome = runner::run(&exe, &spec, &out.join("logs").join(format!("{id}.log")));
            let row = rows::rep_row(&outcome, &format!("hdr/{id}.hdr"));
            if row.failed {
                bar.println(format!("FAILED {id}: {}", row.reasons.join("; ")));
            }
            runs.push((row, outcome.hist));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let rep_rows: Vec<rows::Row> = runs.iter().map(|(r, _)| r.clone()).collect();
    let medians = rows::medians(&rep_rows);
    let merged = report::merge(&runs);
    let doc = Document {
        schema: report::json::SCHEMA,
        created_utc: created,
        settings: SettingsRecord {
            systems: settings.systems.clone(),
            modes: settings
                .modes
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            messages: settings.messages,
            size: settings.size,
            rates: settings.rates.clone(),
            waits: settings
                .waits
                .iter()
                .map(|w| w.as_str().to_owned())
                .collect(),
            rate_secs: settings.rate_secs,
            rtt_rate: settings.rtt_rate,
            sleep_max_rate: settings.sleep_max_rate,
            secondary_reps: settings.secondary_reps,
            counts: settings.counts.clone(),
            reps: settings.reps,
            quick: args.quick,
            pub_core,
            sub_core,
        },
        environment,
        jitter,
        skipped: plan
            .skipped
            .iter()
            .map(|(s, r)| Skipped {
                system: s.clone(),
                reason: r.clone(),
            })
            .collect(),
        rows: rep_rows.into_iter().chain(medians).collect(),
    };
    let plots = report::write_all(&out, &doc, &merged)?;
    println!("{}", report::markdown::table(doc.medians(), false));
    let failed = doc.medians().filter(|r| r.failed).count();
    eprintln!(
        "{} configuration(s), {failed} FAILED; wrote {} (results.json, RESULTS.md, {} plots, hdr/, logs/)",
        doc.medians().count(),
        out.display(),
        plots.len()
    );
    Ok(())
}
