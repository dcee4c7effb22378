//! `ringcast`: send, listen, measure and check a host from the command line.

use std::io;
use std::net::SocketAddrV4;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringcast::{Config, FlowControlStrategy, ThreadingMode};

mod config;
mod doctor;
mod keygen;
mod listen;
mod peers;
mod ping;
mod record;
mod replay;
mod send;
mod stamp;
mod stat;

#[derive(Parser)]
#[command(
    name = "ringcast",
    version,
    about = "Brokerless UDP multicast pub/sub",
    after_help = "Exit codes: 0 success; 1 the run went wrong (loss, receivers that did not \
                  acknowledge, missing pongs, an unhealthy host); 2 bad arguments or an error.\n\
                  Data goes to the group's port, control (status, NAKs) to port + 1: a \
                  firewall must pass both."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish messages on a topic: MESSAGE, or each line (or length-framed record) of
    /// standard input or a file.
    #[command(after_help = send::EXAMPLES)]
    Send(send::SendArgs),
    /// Print messages whose topic starts with one of the prefixes, as they arrive.
    #[command(after_help = listen::EXAMPLES)]
    Listen(listen::ListenArgs),
    /// Measure round-trip latency against a `ringcast pong` (percentiles).
    #[command(after_help = ping::PING_EXAMPLES)]
    Ping(ping::PingArgs),
    /// Echo what `ringcast ping` sends, until interrupted.
    #[command(after_help = ping::PONG_EXAMPLES)]
    Pong(ping::PongArgs),
    /// Check whether this host can run ringcast, and how.
    #[command(after_help = doctor::EXAMPLES)]
    Doctor(doctor::DoctorArgs),
    /// The nodes heard on the discovery group: names, addresses, topics; --watch for
    /// joins and leaves as they happen.
    #[command(after_help = peers::EXAMPLES)]
    Peers(peers::PeersArgs),
    /// Show every setting's value and where it came from (default, file, environment).
    #[command(after_help = config::EXAMPLES)]
    Config(config::ConfigArgs),
    /// Show the counters of every ringcast node on this host, with rates.
    #[command(after_help = stat::EXAMPLES)]
    Stat(stat::StatArgs),
    /// Record every message of some topics into a directory (segment files and an
    /// index) that survives a crash of the recorder.
    #[command(after_help = record::EXAMPLES)]
    Record(record::RecordArgs),
    /// Publish a recording again: at its pace or faster, all of it or a time range.
    #[command(after_help = replay::EXAMPLES)]
    Replay(replay::ReplayArgs),
    /// Write a new group key file to standard output (or rotate one).
    #[command(after_help = keygen::EXAMPLES)]
    Keygen(keygen::KeygenArgs),
}

/// Where a node sends and listens, shared by the subcommands that make one. A flag
/// given wins over the configuration file and the `RINGCAST_*` environment (see
/// `ringcast config`); a flag not given leaves their value.
#[derive(Args)]
struct Net {
    /// Turn repair off: gaps are reported as loss at once, NAKs are not answered.
    #[arg(long)]
    best_effort: bool,
    /// Multicast group ADDR:PORT (control goes to PORT + 1) [default: RINGCAST_GROUP,
    /// else 239.255.0.1:40456].
    #[arg(long)]
    group: Option<SocketAddrV4>,
    /// Interface name or address [default: RINGCAST_IFACE, else lo].
    #[arg(long)]
    iface: Option<String>,
    /// Which threads run the engine: `auto` (chosen for this host's cores, see
    /// `ringcast doctor`), `dedicated`, `shared` or `inline` [default: auto].
    #[arg(long, value_enum)]
    threading: Option<Threading>,
    /// A TOML configuration file (keys as in `ringcast config`) [default:
    /// RINGCAST_CONFIG]. The environment wins over it, flags over both.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Network ID: nodes of other networks on the same group are ignored [default:
    /// RINGCAST_NETWORK, else the default network].
    #[arg(long)]
    network: Option<String>,
    /// This node's id in discovery, stable across restarts [default: RINGCAST_NODE_ID,
    /// else random].
    #[arg(long)]
    node_id: Option<u64>,
    /// This node's name in discovery [default: RINGCAST_NODE_NAME, else host:pid].
    #[arg(long)]
    node_name: Option<String>,
    /// A rendezvous node where multicast does not reach, HOST[:PORT] (the port
    /// defaults to the discovery port); repeatable. A node that hears no multicast
    /// discovery within 2 s then sends by unicast [default: RINGCAST_SEEDS].
    #[arg(long = "seed", value_name = "HOST[:PORT]")]
    seeds: Vec<String>,
    /// Send by unicast from the start (discovery through --seed) [default:
    /// RINGCAST_TRANSPORT, else auto].
    #[arg(long)]
    unicast: bool,
    /// How nodes on this host meet: `udp` (the network only), `ipc` (shared memory
    /// only: logs in the IPC directory, nothing on the network) or `auto` (both:
    /// local publishers over shared memory, remote ones over the network) [default:
    /// RINGCAST_LOCAL_TRANSPORT, else udp]. Not the network transport (`--unicast`,
    /// RINGCAST_TRANSPORT).
    #[arg(long = "transport", alias = "local-transport", value_enum)]
    local_transport: Option<Local>,
    /// The directory of the IPC logs [default: RINGCAST_IPC_DIR, else /dev/shm].
    #[arg(long, value_name = "DIR")]
    ipc_dir: Option<std::path::PathBuf>,
    /// The group key file (`ringcast keygen`): every datagram is sealed with it, and
    /// only datagrams sealed with it are heard [default: RINGCAST_KEY_FILE, else
    /// none: open mode].
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
}

/// `--transport` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Local {
    /// The network only.
    Udp,
    /// Shared memory only.
    Ipc,
    /// Shared memory for local nodes, the network for the others.
    Auto,
}

impl From<Local> for ringcast::LocalTransport {
    fn from(l: Local) -> Self {
        match l {
            Local::Udp => ringcast::LocalTransport::Udp,
            Local::Ipc => ringcast::LocalTransport::Ipc,
            Local::Auto => ringcast::LocalTransport::Auto,
        }
    }
}

/// `--threading` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Threading {
    /// Chosen for the host.
    Auto,
    /// A sender and a receiver agent thread.
    Dedicated,
    /// One agent thread.
    Shared,
    /// No agent threads: this program's calls run the engine.
    Inline,
}

impl From<Threading> for ThreadingMode {
    fn from(t: Threading) -> Self {
        match t {
            Threading::Auto => ThreadingMode::Auto,
            Threading::Dedicated => ThreadingMode::Dedicated,
            Threading::Shared => ThreadingMode::Shared,
            Threading::Inline => ThreadingMode::Inline,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGCAST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(a) => send::run(a),
        Command::Listen(a) => listen::run(a),
        Command::Ping(a) => ping::ping(a),
        Command::Pong(a) => ping::pong(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Stat(a) => stat::run(a),
        Command::Config(a) => config::run(a),
        Command::Peers(a) => peers::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Record(a) => record::run(a),
        Command::Replay(a) => replay::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::from(2)
        }
    }
}

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

/// Set by SIGINT/SIGTERM: a long-running command stops at its next look and prints
/// its summary.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C (SIGINT) and SIGTERM end a command cleanly instead of killing it.
fn on_interrupt() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); the
        // sigaction struct is zeroed and then filled as sigaction(2) requires.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The node's configuration: the defaults, the file (`--config` or
/// `RINGCAST_CONFIG`), the environment, then the flags given.
fn builder(net: &Net, ttl: Option<u32>) -> ringcast::ConfigBuilder {
    let mut b = match &net.config {
        Some(f) => Config::builder_from_file(f),
        None => Config::builder(),
    };
    if let Some(g) = net.group {
        b = b.group(g);
    }
    if let Some(i) = &net.iface {
        b = b.iface(i.clone());
    }
    if net.best_effort {
        b = b.reliable(false);
    }
    if let Some(t) = net.threading {
        b = b.threading(t.into());
    }
    if let Some(n) = &net.network {
        b = b.network(n.clone());
    }
    if let Some(id) = net.node_id {
        b = b.node_id(Some(id));
    }
    if let Some(n) = &net.node_name {
        b = b.node_name(Some(n.clone()));
    }
    if !net.seeds.is_empty() {
        b = b.seeds(&net.seeds);
    }
    if net.unicast {
        b = b.transport(ringcast::Transport::Unicast);
    }
    if let Some(k) = &net.key_file {
        b = b.key_file(k);
    }
    if let Some(l) = net.local_transport {
        b = b.local_transport(l.into());
    }
    if let Some(d) = &net.ipc_dir {
        b = b.ipc_dir(d.clone());
    }
    if let Some(t) = ttl {
        b = b.ttl(t);
    }
    b
}

fn parse_flow(s: &str) -> Result<FlowControlStrategy, String> {
    s.parse()
}

/// A `session … joined|gone` line on stderr.
fn print_session(e: &ringcast::SessionEvent) {
    let state = match e.state {
        ringcast::SessionState::Joined => "joined",
        ringcast::SessionState::Gone => "gone",
        _ => "changed",
    };
    eprintln!("session {:08x} from {} {state}", e.session, e.source);
}

/// Reliable mode: stays to answer NAKs until the receivers this node knows of
/// (and its IPC readers) have everything, up to `timeout_secs`; whether they do.
fn stay_until_acknowledged(node: &ringcast::Node, reliable: bool, timeout_secs: f64) -> bool {
    !reliable
        || node.wait_acknowledged(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs_f64(timeout_secs.max(0.0)),
        )
}

/// Percentiles of a latency histogram (ns), in µs, for a summary line.
fn percentiles(h: &hdrhistogram::Histogram<u64>) -> String {
    let us = |ns: u64| ns as f64 / 1e3;
    format!(
        "min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} µs",
        us(h.min()),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    )
}

/// A latency histogram: 1 ns to 100 s, 3 significant digits.
fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}
