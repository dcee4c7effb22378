//! `ringcast`: send, listen and check a host from the command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use ringcast::{
    doctor, Config, Event, FlowControlStrategy, IdleStrategy, Node, PublishError, SessionState,
    SlowConsumerPolicy, ThreadingMode, DEFAULT_GROUP, DEFAULT_IFACE,
};

#[derive(Parser)]
#[command(name = "ringcast", version, about = "Brokerless UDP multicast pub/sub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish MESSAGE on a topic.
    Send(SendArgs),
    /// Print messages whose topic starts with one of the prefixes.
    Listen(ListenArgs),
    /// Check whether this host can run ringcast, and how.
    Doctor(DoctorArgs),
    /// Show the counters of every ringcast node on this host.
    Stat(StatArgs),
}

#[derive(Args)]
struct StatArgs {
    /// Refresh every INTERVAL seconds until interrupted (or --count times).
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
    /// Show zero counters too.
    #[arg(long)]
    all: bool,
    /// Directory of the stats files (default: RINGCAST_STATS_DIR or /dev/shm).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct Net {
    /// Turn repair off: gaps are reported as loss at once, NAKs are not answered.
    #[arg(long)]
    best_effort: bool,
    /// Multicast group ADDR:PORT.
    #[arg(long, default_value = DEFAULT_GROUP)]
    group: SocketAddrV4,
    /// Interface name or address.
    #[arg(long, default_value = DEFAULT_IFACE)]
    iface: String,
    /// Which threads run the engine: `auto` (chosen for this host's cores, see
    /// `ringcast doctor`), `dedicated`, `shared` or `inline`.
    #[arg(long, value_enum, default_value_t = Threading::Auto)]
    threading: Threading,
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

#[derive(Args)]
struct SendArgs {
    #[command(flatten)]
    net: Net,
    /// Multicast TTL (default 0 on loopback, 1 otherwise).
    #[arg(long)]
    ttl: Option<u32>,
    /// Topic to publish on.
    #[arg(long)]
    topic: String,
    /// How many times to send the message.
    #[arg(long, default_value_t = 1)]
    repeat: u64,
    /// Append the message's number (from 0) to each payload.
    #[arg(long)]
    autonumber: bool,
    /// Messages per second (default: as fast as the receivers' path allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Pad each payload with spaces to this many bytes.
    #[arg(long)]
    size: Option<usize>,
    /// Whose status messages pace this publisher: `min` (the slowest receiver),
    /// `max` (the fastest; slower ones are left behind) or `tagged:N` (receivers
    /// listening with `--receiver-tag N`).
    #[arg(long, default_value = "min", value_parser = parse_flow)]
    flow_control: FlowControlStrategy,
    /// Cap the publisher at this many bytes per second (on the wire).
    #[arg(long)]
    rate_limit: Option<u64>,
    /// The message.
    message: String,
}

#[derive(Args)]
struct ListenArgs {
    #[command(flatten)]
    net: Net,
    /// Topic prefix to receive (repeatable; default: every topic).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without traffic.
    #[arg(long)]
    timeout: Option<f64>,
    /// Write messages to FILE instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// What happens when this listener falls behind.
    #[arg(long, value_enum, default_value_t = Policy::BackPressure)]
    slow_consumer: Policy,
    /// Sleep this many microseconds after each message: an application slower than
    /// the stream, to see the slow-consumer policies at work.
    #[arg(long, default_value_t = 0)]
    handler_delay_us: u64,
    /// Tests only: inject faults into what this listener receives, e.g.
    /// `loss=0.05,dup=0.01,reorder=0.02,delay=0.01:2ms,blackout=1000:300ms,seed=7`.
    #[arg(long)]
    inject_faults: Option<ringcast::FaultConfig>,
    /// Tag this listener's status messages carry (for `send --flow-control tagged:N`).
    #[arg(long, default_value_t = 0)]
    receiver_tag: u32,
    /// Declare a publisher gone after this many seconds without a datagram or
    /// heartbeat from it.
    #[arg(long, default_value_t = 2.0)]
    publisher_timeout: f64,
}

/// `--slow-consumer` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Policy {
    /// Hold the publishers back (lossless).
    BackPressure,
    /// Drop what does not fit, reported as losses.
    Drop,
    /// Keep only the newest message per topic while behind.
    Conflate,
    /// Discard the backlog, report it as lost, resume live.
    Disconnect,
}

impl From<Policy> for SlowConsumerPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::BackPressure => SlowConsumerPolicy::BackPressure,
            Policy::Drop => SlowConsumerPolicy::Drop,
            Policy::Conflate => SlowConsumerPolicy::Conflate,
            Policy::Disconnect => SlowConsumerPolicy::Disconnect,
        }
    }
}

#[derive(Args)]
struct DoctorArgs {
    /// Interface to check.
    #[arg(long, default_value = DEFAULT_IFACE)]
    iface: String,
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
        Command::Send(a) => send(a),
        Command::Listen(a) => listen(a),
        Command::Doctor(a) => doctor(a),
        Command::Stat(a) => stat(a),
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

/// Set by SIGINT/SIGTERM: the listener stops at its next look and prints its summary.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C (SIGINT) and SIGTERM end a listener cleanly instead of killing it.
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

fn builder(net: &Net, ttl: Option<u32>) -> ringcast::ConfigBuilder {
    let mut b = Config::builder()
        .group(net.group)
        .iface(net.iface.clone())
        .reliable(!net.best_effort)
        .threading(net.threading.into());
    if let Some(t) = ttl {
        b = b.ttl(t);
    }
    b
}

fn parse_flow(s: &str) -> Result<FlowControlStrategy, String> {
    match s {
        "min" => Ok(FlowControlStrategy::Min),
        "max" => Ok(FlowControlStrategy::Max),
        _ => s
            .strip_prefix("tagged:")
            .and_then(|t| t.parse().ok())
            .filter(|&t| t != 0)
            .map(FlowControlStrategy::Tagged)
            .ok_or_else(|| "expected min, max or tagged:N (N > 0)".to_string()),
    }
}

fn send(a: SendArgs) -> Res {
    let node = Node::new(
        builder(&a.net, a.ttl)
            .flow_control(a.flow_control)
            .rate_limit(a.rate_limit)
            .build()?,
    )?;
    let mut publisher = node.publisher(&a.topic)?;
    let mut payload = Vec::with_capacity(a.size.unwrap_or(0).max(a.message.len() + 20));
    let interval = a
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let start = Instant::now();
    for i in 0..a.repeat {
        payload.clear();
        payload.extend_from_slice(a.message.as_bytes());
        if a.autonumber {
            write!(payload, "{i}")?;
        }
        if let Some(size) = a.size {
            if payload.len() < size {
                payload.resize(size, b' ');
            }
        }
        if let Some(iv) = interval {
            let due = start + iv.mul_f64(i as f64);
            while Instant::now() < due {
                let left = due - Instant::now();
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        match publisher.offer_blocking(&payload, Duration::from_secs(30)) {
            Ok(()) => {}
            Err(PublishError::Timeout) => {
                return Err("publisher stayed back-pressured for 30 s".into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    publisher.flush(Duration::from_secs(30))?;
    let secs = start.elapsed().as_secs_f64();
    if !a.net.best_effort {
        // Stay to answer NAKs until the receivers we know of have everything.
        node.wait_acknowledged(Duration::from_millis(50), Duration::from_secs(5));
    }
    let s = node.stats();
    eprintln!(
        "sent {} messages in {} datagrams, {:.3} s ({:.0} msg/s), backend {}, send errors {}, retransmits {}, naks received {}, back-pressured {}, flow-blocked {}",
        a.repeat,
        s.datagrams_sent,
        secs,
        a.repeat as f64 / secs.max(1e-9),
        s.backend,
        s.send_errors,
        s.retransmits,
        s.naks_received,
        s.back_pressure,
        s.flow_blocked
    );
    Ok(if s.send_errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn listen(a: ListenArgs) -> Res {
    let mut b = builder(&a.net, None)
        .receiver_tag(a.receiver_tag)
        .publisher_timeout(Duration::from_secs_f64(a.publisher_timeout.max(0.01)));
    if let Some(f) = a.inject_faults.clone() {
        b = b.inject_faults(f);
    }
    let node = Node::new(b.build()?)?;
    let topics = if a.topics.is_empty() {
        vec![String::new()]
    } else {
        a.topics.clone()
    };
    let mut sub = node.subscriber_with_policy(&topics, a.slow_consumer.into())?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(File::create(p)?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    eprintln!(
        "listening on {} via {} ({} backend), topics {:?}",
        a.net.group,
        a.net.iface,
        node.backend(),
        topics
    );
    let idle_limit = a.timeout.map(Duration::from_secs_f64);
    on_interrupt();
    let mut received = 0u64;
    let mut gaps = 0u64;
    let mut lost = 0u64;
    let mut last_traffic = Instant::now();
    let mut write_err = None;
    'outer: loop {
        let want = a.count.map_or(1024, |c| (c - received).min(1024) as usize);
        let n = sub.poll_timeout(want, Duration::from_millis(50), |ev| match ev {
            Event::Message(m) => {
                received += 1;
                let r = out
                    .write_all(String::from_utf8_lossy(m.payload()).as_bytes())
                    .and_then(|_| out.write_all(b"\n"));
                if let Err(e) = r {
                    write_err.get_or_insert(e);
                }
                if a.handler_delay_us > 0 {
                    std::thread::sleep(Duration::from_micros(a.handler_delay_us));
                }
            }
            Event::Session(e) => eprintln!(
                "session {:08x} from {} {}",
                e.session,
                e.source,
                match e.state {
                    SessionState::Joined => "joined",
                    SessionState::Gone => "gone",
                }
            ),
            Event::Loss(l) => {
                gaps += 1;
                lost += l.count();
                eprintln!(
                    "loss: session {:08x} from {} messages {}..{} ({:?})",
                    l.session, l.source, l.from_seq, l.to_seq, l.reason
                );
            }
        });
        if let Some(e) = write_err.take() {
            return Err(e.into());
        }
        if n > 0 {
            last_traffic = Instant::now();
            // Each batch reaches the terminal (or pipe) as it arrives.
            out.flush()?;
        }
        if interrupted() {
            break 'outer;
        }
        if a.count.is_some_and(|c| received >= c) {
            break 'outer;
        }
        if idle_limit.is_some_and(|t| last_traffic.elapsed() >= t) {
            break 'outer;
        }
    }
    out.flush()?;
    let s = node.stats();
    eprintln!(
        "received {received} messages, gaps {gaps} (lost {lost}), gaps filled {}, unrecoverable {}, naks sent {}, naks suppressed {}, duplicates {}, malformed {}, datagrams {}, conflated {}, slow disconnects {}",
        s.gaps_filled,
        s.gaps,
        s.naks_sent,
        s.naks_suppressed,
        s.duplicates,
        s.malformed,
        s.datagrams_received,
        s.conflated,
        s.slow_disconnects
    );
    if s.gaps > 0 && a.net.best_effort {
        eprintln!("unrecoverable gaps: best effort, nothing was asked for again");
    } else if s.gaps > 0 {
        eprintln!(
            "unrecoverable gaps by cause: NAKs unanswered {}, beyond the publisher's window {}, reorder buffer full {}",
            s.lost_nak_timeout, s.lost_beyond_window, s.lost_reorder_full
        );
    }
    Ok(if gaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn doctor(a: DoctorArgs) -> Res {
    let probe = doctor::probe();
    println!("kernel:            {}", probe.kernel);
    match probe.io_uring_disabled_sysctl {
        Some(v) => println!("io_uring_disabled: {v}"),
        None => println!("io_uring_disabled: (sysctl absent)"),
    }
    match &probe.uring_error {
        None if probe.uring_ok => println!("io_uring:          works"),
        err => println!(
            "io_uring:          unavailable ({})",
            err.as_deref().unwrap_or("unknown")
        ),
    }
    let ops: Vec<String> = probe
        .opcodes
        .iter()
        .map(|(name, ok)| format!("{name}{}", if *ok { "" } else { " (missing)" }))
        .collect();
    println!("io_uring opcodes:  {}", ops.join(", "));
    println!(
        "buffer ring:       {}",
        if probe.buf_ring { "yes" } else { "no" }
    );
    let mut healthy = true;
    let (mode, why, _) = doctor::threading(ThreadingMode::Auto, IdleStrategy::Park);
    match probe.choose_for(mode == ThreadingMode::Inline) {
        Ok(r) => println!("backend:           {} — {}", r.kind, r.reason),
        Err(e) => {
            healthy = false;
            println!("backend:           NONE — {e}");
        }
    }
    println!("threading:         {mode:?} — {why}");
    let (_, _, spin) = doctor::threading(ThreadingMode::Dedicated, IdleStrategy::BusySpin);
    if let Some(w) = spin {
        println!("warning:           busy-spinning agents: {w}");
    }
    println!("udp gso:           {}", probe.gso_summary());
    println!("udp gro:           {}", probe.gro_summary());
    println!("busy poll:         {}", probe.busy_poll_summary());
    let show = |v: Option<u64>| v.map_or("unknown".to_string(), |b| format!("{b} bytes"));
    println!("net.core.rmem_max: {}", show(probe.rmem_max));
    println!("net.core.wmem_max: {}", show(probe.wmem_max));
    match doctor::resolve_interface(&a.iface) {
        Ok(i) => {
            println!(
                "interface:         {} {} mtu {} (datagram payload {}) {}{}{}",
                i.name,
                i.addr,
                i.mtu,
                i.max_udp_payload(),
                if i.up { "up" } else { "DOWN" },
                if i.loopback { " loopback" } else { "" },
                if i.multicast { " multicast" } else { "" },
            );
            let ready = i.up && (i.multicast || i.loopback);
            println!(
                "multicast ready:   {}",
                if ready {
                    "yes"
                } else {
                    "no (interface down or without MULTICAST)"
                }
            );
            healthy &= ready;
            if ready && i.loopback {
                let ok = self_test(&a.iface);
                println!(
                    "loopback self-test: {}",
                    ok.as_deref().unwrap_or("ok: a message went round")
                );
                healthy &= ok.is_none();
            }
        }
        Err(e) => {
            healthy = false;
            println!("interface:         {} — {e}", a.iface);
        }
    }
    println!(
        "verdict:           {}",
        if healthy {
            "this host can run ringcast"
        } else {
            "NOT READY"
        }
    );
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends one message round the loopback interface (TTL 0); `None` when it arrived.
fn self_test(iface: &str) -> Option<String> {
    let port = 40000 + (std::process::id() % 20000) as u16;
    let cfg = Config::builder()
        .group(SocketAddrV4::new([239, 255, 77, 77].into(), port))
        .iface(iface)
        .ttl(0)
        .build()
        .ok()?;
    let node = match Node::new(cfg) {
        Ok(n) => n,
        Err(e) => return Some(format!("failed: {e}")),
    };
    let run = || -> Result<bool, Box<dyn std::error::Error>> {
        let mut sub = node.subscriber(&["/doctor"])?;
        let mut publ = node.publisher("/doctor")?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            publ.offer_blocking(b"ping", Duration::from_secs(1))?;
            let mut got = false;
            sub.poll_timeout(16, Duration::from_millis(100), |ev| {
                got |= matches!(ev, Event::Message(m) if m.payload() == b"ping");
            });
            if got {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let result = run();
    let o = node.stats().offload;
    println!("self-test sockets: udp gso {}; udp gro {}", o.gso, o.gro);
    match result {
        Ok(true) => None,
        Ok(false) => Some("FAILED: nothing came back within 2 s".into()),
        Err(e) => Some(format!("failed: {e}")),
    }
}

fn stat(a: StatArgs) -> Res {
    let dir = a.dir.clone().unwrap_or_else(ringcast::stat::default_dir);
    let rounds = if a.watch {
        a.count.unwrap_or(u64::MAX)
    } else {
        1
    };
    let mut out = io::stdout().lock();
    for round in 0..rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_secs_f64(a.interval.max(0.05)));
            writeln!(out)?;
        }
        let nodes = ringcast::stat::read_all(&dir)?;
        if nodes.is_empty() {
            writeln!(out, "no ringcast nodes in {}", dir.display())?;
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        for n in &nodes {
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
                now_us.saturating_sub(n.updated_us) as f64 / 1e6
            )?;
            for (name, v) in n.fields.iter().filter(|(_, v)| a.all || *v != 0) {
                writeln!(out, "  {name:<24} {v:>16}")?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
