//! Moves N messages of B bytes (default 1,000,000 × 1 KiB) from a publisher in this
//! process to a subscriber in a child process over loopback multicast, verifies every
//! payload and sequence number, and prints sender and receiver rates.
//!
//! ```sh
//! cargo run --release --example throughput -- [--messages N] [--size B]
//!     [--backend auto|uring|mmsg] [--idle park|yield|spin] [--max-payload BYTES]
//!     [--pub-cores A,B] [--sub-cores C,D] [--best-effort] [--retransmit-window BYTES]
//! ```
//! Exit status 0 only when every message arrived intact, in order, with no gap.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::{BackendChoice, Config, Event, IdleStrategy, Node, PublishError};

#[derive(Clone)]
struct Opts {
    messages: u64,
    size: usize,
    group: SocketAddrV4,
    backend: String,
    idle: String,
    max_payload: Option<usize>,
    pub_cores: Vec<usize>,
    sub_cores: Vec<usize>,
    best_effort: bool,
    retransmit_window: Option<usize>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        messages: 1_000_000,
        size: 1024,
        group: "239.255.0.9:40999".parse().map_err(|e| format!("{e}"))?,
        backend: "auto".into(),
        idle: "park".into(),
        max_payload: None,
        pub_cores: Vec::new(),
        sub_cores: Vec::new(),
        best_effort: false,
        retransmit_window: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let cores = |s: String| -> Result<Vec<usize>, String> {
            s.split(',')
                .map(|c| c.trim().parse().map_err(|e| format!("{e}")))
                .collect()
        };
        match flag.as_str() {
            "--messages" => o.messages = val()?.parse().map_err(|e| format!("{e}"))?,
            "--size" => o.size = val()?.parse().map_err(|e| format!("{e}"))?,
            "--group" => o.group = val()?.parse().map_err(|e| format!("{e}"))?,
            "--backend" => o.backend = val()?,
            "--idle" => o.idle = val()?,
            "--max-payload" => o.max_payload = Some(val()?.parse().map_err(|e| format!("{e}"))?),
            "--pub-cores" => o.pub_cores = cores(val()?)?,
            "--sub-cores" => o.sub_cores = cores(val()?)?,
            "--best-effort" => o.best_effort = true,
            "--retransmit-window" => {
                o.retransmit_window = Some(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.size < 8 {
        return Err("--size must be at least 8 (the sequence number)".into());
    }
    Ok(o)
}

fn to_args(o: &Opts) -> Vec<String> {
    let mut v = vec![
        "--messages".into(),
        o.messages.to_string(),
        "--size".into(),
        o.size.to_string(),
        "--group".into(),
        o.group.to_string(),
        "--backend".into(),
        o.backend.clone(),
        "--idle".into(),
        o.idle.clone(),
    ];
    if let Some(p) = o.max_payload {
        v.extend(["--max-payload".into(), p.to_string()]);
    }
    let join = |c: &[usize]| {
        c.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if o.best_effort {
        v.push("--best-effort".into());
    }
    if !o.sub_cores.is_empty() {
        v.extend(["--sub-cores".into(), join(&o.sub_cores)]);
    }
    v
}

fn node(o: &Opts, cores: &[usize]) -> Result<Node, ringcast::Error> {
    let backend = match o.backend.as_str() {
        "uring" | "io_uring" => BackendChoice::Uring,
        "mmsg" => BackendChoice::Mmsg,
        _ => BackendChoice::Auto,
    };
    let idle = match o.idle.as_str() {
        "spin" | "busy-spin" => IdleStrategy::BusySpin,
        "yield" => IdleStrategy::Yield,
        _ => IdleStrategy::Park,
    };
    let mut b = Config::builder()
        .group(o.group)
        .iface("lo")
        .backend(backend)
        .idle(idle)
        .cores(cores.to_vec())
        .reliable(!o.best_effort);
    if let Some(w) = o.retransmit_window {
        b = b.retransmit_window(w);
    }
    if let Some(p) = o.max_payload {
        b = b.max_payload(p);
    }
    Node::new(b.build()?)
}

/// Byte `i` of message `seq`'s payload after the 8-byte sequence number.
#[inline]
fn pattern(seq: u64) -> u8 {
    (seq % 251) as u8
}

fn subscriber(o: Opts) -> Result<(), Box<dyn std::error::Error>> {
    let node = node(&o, &o.sub_cores)?;
    let mut sub = node.subscriber(&["/throughput"])?;
    println!("READY");
    std::io::stdout().flush()?;
    let (mut received, mut corrupt, mut lost, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    let mut expected = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut idle_since = Instant::now();
    while received + lost < o.messages {
        let n = sub.poll(4096, |ev| match ev {
            Event::Message(m) => {
                let p = m.payload();
                let seq = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                if seq != expected || m.seq() != seq {
                    out_of_order += 1;
                }
                expected = seq + 1;
                let b = pattern(seq);
                if p.len() != o.size || !p[8..].iter().all(|&x| x == b) {
                    corrupt += 1;
                }
                received += 1;
            }
            Event::Loss(l) => {
                lost += l.count();
                expected = l.to_seq;
            }
            Event::Session(_) => {}
            _ => {}
        });
        if n > 0 {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            idle_since = now;
        } else if idle_since.elapsed() > Duration::from_secs(10) {
            break;
        } else {
            std::thread::yield_now();
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let s = node.stats();
    println!(
        "RESULT received={received} lost={lost} corrupt={corrupt} out_of_order={out_of_order} secs={secs:.6} \
         rate={:.0} gaps={} ring_full_drops={} datagrams={} backend={}",
        received as f64 / secs.max(1e-9),
        s.gaps,
        s.ring_full_drops,
        s.datagrams_received,
        s.backend
    );
    Ok(())
}

fn publisher(o: Opts) -> Result<bool, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("sub")
        .args(to_args(&o))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    match lines.next() {
        Some(Ok(l)) if l == "READY" => {}
        other => return Err(format!("subscriber did not start: {other:?}").into()),
    }
    let node = node(&o, &o.pub_cores)?;
    let mut publ = node.publisher("/throughput")?;
    let mut back_pressured = 0u64;
    let start = Instant::now();
    for seq in 0..o.messages {
        loop {
            match publ.try_claim(o.size) {
                Ok(mut claim) => {
                    claim[..8].copy_from_slice(&seq.to_le_bytes());
                    claim[8..].fill(pattern(seq));
                    claim.commit();
                    break;
                }
                Err(PublishError::BackPressured) => {
                    // On a small host the agents need this core more than we do.
                    back_pressured += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let offered = start.elapsed();
    publ.flush(Duration::from_secs(60))?;
    let sent = start.elapsed();
    let s = node.stats();
    let result = lines.next().ok_or("subscriber printed no result")??;
    child.wait()?;
    let field = |k: &str| -> f64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let sender_rate = o.messages as f64 / sent.as_secs_f64();
    let receiver_rate = field("rate");
    println!(
        "ringcast throughput: {} × {} B over loopback multicast, backend {}, {} B datagrams",
        o.messages, o.size, s.backend, s.max_payload
    );
    println!(
        "  sender:   {:>12.0} msg/s  {:>8.1} MB/s  (offer loop {:.3} s, all on the wire {:.3} s, {} datagrams, back-pressured {} times)",
        sender_rate,
        sender_rate * o.size as f64 / 1e6,
        offered.as_secs_f64(),
        sent.as_secs_f64(),
        s.datagrams_sent,
        back_pressured
    );
    println!(
        "  receiver: {:>12.0} msg/s  {:>8.1} MB/s  (receiver/sender {:.3})",
        receiver_rate,
        receiver_rate * o.size as f64 / 1e6,
        receiver_rate / sender_rate
    );
    println!("  subscriber: {result}");
    let ok = field("received") as u64 == o.messages
        && field("lost") == 0.0
        && field("corrupt") == 0.0
        && field("out_of_order") == 0.0;
    println!(
        "  verdict: {}",
        if ok {
            "OK — every message intact, in order, no gap"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (is_sub, rest) = match args.first().map(String::as_str) {
        Some("sub") => (true, &args[1..]),
        _ => (false, &args[..]),
    };
    let opts = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("throughput: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let r = if is_sub {
        subscriber(opts).map(|()| true)
    } else {
        publisher(opts)
    };
    match r {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("throughput: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
