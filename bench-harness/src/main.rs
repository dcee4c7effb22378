//! `ringcast-bench`: ringcast vs ZeroMQ, nng and raw UDP multicast, side by side.
//!
//! `ringcast-bench run ...` orchestrates; each measured side runs as a child
//! process of this same binary (`ringcast-bench pub|sub --spec JSON`, hidden).

mod child;
mod clock;
mod control;
mod env;
mod jitter;
mod message;
mod method;
mod netns;
mod report;
mod rows;
mod runner;
mod spec;
mod stats;
mod suite;
mod systems;
mod verify;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ringcast-bench",
    version,
    about = "Pub/sub benchmark: ringcast vs ZeroMQ, nng, raw UDP multicast and Aeron"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark suite and write results (the main job).
    Run(Box<RunArgs>),
    /// Print the environment record (kernel, CPU, io_uring, versions) as JSON.
    Env,
    /// Child: the publishing side of one run.
    #[command(hide = true)]
    Pub {
        #[arg(long)]
        spec: String,
    },
    /// Child: the subscribing side of one run.
    #[command(hide = true)]
    Sub {
        #[arg(long)]
        spec: String,
    },
}

/// Options of `run`. Unset options take the standard suite's values, or the
/// `--quick` values when that is given.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Systems to run: ringcast, zeromq, nng, udp, aeron, zenoh (comma separated).
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Only these variants (names such as `hwm=0`, `packed`, or `system/transport/variant`).
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<String>>,
    /// Modes: full, rate, rtt, count-sweep (comma separated).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// Messages per full-speed run [default: 1000000; quick: 100000].
    #[arg(long)]
    messages: Option<u64>,
    /// Bytes per message, including the 16-byte sequence/timestamp header.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Offered rates for the open-loop mode, msg/s [default: 10000,100000,500000,1000000; quick: 100000].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Waiting styles of the paced publisher in rate mode: spin, sleep [default: both].
    #[arg(long, value_delimiter = ',')]
    waits: Option<Vec<String>>,
    /// Ping rate of the round-trip mode, msg/s.
    #[arg(long, default_value_t = 10_000)]
    rtt_rate: u64,
    /// Seconds per rate-mode (and rtt-mode) run (messages = min(--messages, rate × secs)) [default: 2; quick: 1].
    #[arg(long)]
    rate_secs: Option<f64>,
    /// Message counts of the count sweep [default: 1k..1M; quick: 1000,10000,100000].
    #[arg(long, value_delimiter = ',')]
    counts: Option<Vec<u64>>,
    /// Repetitions per configuration [default: 3; quick: 1].
    #[arg(long)]
    reps: Option<u32>,
    /// Repetitions of the full-speed runs of non-primary variants and of the count
    /// sweep [default: 1].
    #[arg(long)]
    secondary_reps: Option<u32>,
    /// Small, fast suite (100k messages, 1 rep, one rate); finishes in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Output directory [default: results/<UTC date-time>/ under the workspace root].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rate and count-sweep modes for every variant, not only the primary ones.
    #[arg(long)]
    all_variants: bool,
    /// Core for the publisher process (`none` = unpinned).
    #[arg(long, default_value = "0")]
    pub_core: String,
    /// Core for the subscriber process (`none` = unpinned).
    #[arg(long, default_value = "1")]
    sub_core: String,
    /// Seconds of the machine-jitter probe (0 = skip).
    #[arg(long)]
    jitter_secs: Option<f64>,
    /// After the publisher finishes, the subscriber stops after this long without a delivery.
    #[arg(long, default_value_t = 500)]
    quiet_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Pub { spec } => ExitCode::from(child::run("pub", &spec) as u8),
        Cmd::Sub { spec } => ExitCode::from(child::run("sub", &spec) as u8),
        Cmd::Env => {
            let e = env::capture("host (env subcommand: no isolation)");
            println!(
                "{}",
                serde_json::to_string_pretty(&e).expect("serialisable")
            );
            ExitCode::SUCCESS
        }
        Cmd::Run(args) => match method::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
