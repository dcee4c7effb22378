//! `ringcast send`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::{FlowControlStrategy, Node, PublishError};

use crate::{builder, parse_flow, stamp, Net, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast send --topic /demo hello                 one message
  ringcast send --topic /demo --repeat 5 --autonumber hello
  tail -f app.log | ringcast send --topic /log      each line of standard input
  ringcast send --topic /md --file quotes.txt --rate 1000 --stamp
  producer | ringcast send --topic /bin --stdin-raw each 4-byte big-endian length + bytes";

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    net: Net,
    /// Multicast TTL (default 0 on loopback, 1 otherwise).
    #[arg(long)]
    ttl: Option<u32>,
    /// Topic to publish on.
    #[arg(long)]
    topic: String,
    /// How many times to send MESSAGE.
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
    /// Start each payload with a send stamp (16 bytes: see `listen --latency`).
    #[arg(long)]
    stamp: bool,
    /// Read the messages from FILE (one per line, or framed with --stdin-raw).
    #[arg(long, conflicts_with = "message")]
    file: Option<PathBuf>,
    /// Standard input (or --file) holds length-framed binary messages: each a 4-byte
    /// big-endian length, then that many bytes.
    #[arg(long)]
    stdin_raw: bool,
    /// Whose status messages pace this publisher: `min` (the slowest receiver that
    /// paces, i.e. listens with back-pressure), `max` (the fastest; slower ones are
    /// left behind) or `tagged:N` (receivers listening with `--receiver-tag N`).
    #[arg(long, value_parser = parse_flow)]
    flow_control: Option<FlowControlStrategy>,
    /// Cap the publisher at this many bytes per second (on the wire).
    #[arg(long)]
    rate_limit: Option<u64>,
    /// Reliable mode: how long to wait at the end for the receivers to acknowledge
    /// everything (exit code 1 if they did not).
    #[arg(long, default_value_t = 5.0)]
    ack_timeout: f64,
    /// Give each message this many seconds to live (not the multicast --ttl):
    /// receivers drop, count and report what they would deliver later (the hosts'
    /// clocks must agree).
    #[arg(long, value_name = "SECS")]
    expire_after: Option<f64>,
    /// Keep the latest message as a last-value cache: a listener that joins late gets
    /// it first (flagged as a snapshot), then live data. Useful while `send` stays up
    /// (reading standard input).
    #[arg(long, conflicts_with = "expire_after")]
    last_value: bool,
    /// Wait until N receivers report (up to 10 s, exit code 1 if fewer) before
    /// sending the first message.
    #[arg(long, value_name = "N")]
    wait_receivers: Option<usize>,
    /// The message (default: read standard input, one message per line).
    message: Option<String>,
}

/// Where the messages come from.
enum Source {
    /// MESSAGE, `repeat` times.
    Argument(Vec<u8>, u64),
    /// Lines of a reader (without their `\n` or `\r\n`).
    Lines(Box<dyn BufRead>),
    /// Length-framed records of a reader.
    Framed(Box<dyn Read>),
}

/// Refused input (`--stdin-raw`).
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("input ends inside a record: {got} of its {want} bytes")]
    Truncated { got: usize, want: usize },
    #[error("input ends inside a record's 4-byte length")]
    TruncatedLength,
    #[error("record {index} is {len} bytes, more than the largest message ({max})")]
    TooLarge { index: u64, len: usize, max: usize },
}

/// Largest record `--stdin-raw` takes (the engine's own limit is checked at offer).
const MAX_RECORD: usize = 64 << 20;

impl Source {
    /// The next message into `buf` (cleared); false at the end.
    fn next(&mut self, index: u64, buf: &mut Vec<u8>) -> Result<bool, Box<dyn std::error::Error>> {
        buf.clear();
        match self {
            Source::Argument(m, repeat) => {
                if index >= *repeat {
                    return Ok(false);
                }
                buf.extend_from_slice(m);
                Ok(true)
            }
            Source::Lines(r) => {
                if r.read_until(b'\n', buf)? == 0 {
                    return Ok(false);
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Ok(true)
            }
            Source::Framed(r) => {
                let mut len = [0u8; 4];
                match read_full(r, &mut len)? {
                    0 => return Ok(false),
                    4 => {}
                    _ => return Err(InputError::TruncatedLength.into()),
                }
                let want = u32::from_be_bytes(len) as usize;
                if want > MAX_RECORD {
                    return Err(InputError::TooLarge {
                        index,
                        len: want,
                        max: MAX_RECORD,
                    }
                    .into());
                }
                buf.resize(want, 0);
                let got = read_full(r, buf)?;
                if got < want {
                    return Err(InputError::Truncated { got, want }.into());
                }
                Ok(true)
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

pub fn run(a: SendArgs) -> Res {
    let reader: Option<Box<dyn Read>> = match (&a.message, &a.file) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(Box::new(File::open(path)?)),
        (None, None) => {
            if io::stdin().is_terminal() {
                eprintln!("reading messages from standard input, one per line (Ctrl-D ends)");
            }
            Some(Box::new(io::stdin().lock()))
        }
    };
    if reader.is_some() && a.repeat != 1 {
        return Err("--repeat applies to MESSAGE, not to standard input or --file".into());
    }
    let mut source = match (reader, &a.message) {
        (None, Some(m)) => Source::Argument(m.clone().into_bytes(), a.repeat),
        (Some(r), _) if a.stdin_raw => Source::Framed(r),
        (Some(r), _) => Source::Lines(Box::new(BufReader::new(r))),
        (None, None) => unreachable!("no message means a reader"),
    };
    let mut b = builder(&a.net, a.ttl);
    if let Some(f) = a.flow_control {
        b = b.flow_control(f);
    }
    if let Some(r) = a.rate_limit {
        b = b.rate_limit(Some(r));
    }
    let config = b.build()?;
    let reliable = config.reliable();
    let ipc = config.local_transport() != ringcast::LocalTransport::Udp;
    let node = Node::new(config)?;
    let mut publisher = match a.expire_after {
        Some(t) => node.publisher_with_ttl(&a.topic, Duration::from_secs_f64(t.max(0.0)))?,
        None if a.last_value => node.publisher_with_last_value(&a.topic)?,
        None => node.publisher(&a.topic)?,
    };
    if let Some(n) = a.wait_receivers {
        let got = node.wait_for_receivers(n, Duration::from_secs(10))?;
        eprintln!("{got} receivers");
    }
    let mut input = Vec::new();
    let mut payload = Vec::with_capacity(a.size.unwrap_or(0).max(64));
    let interval = a
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let start = Instant::now();
    let mut sent = 0u64;
    while source.next(sent, &mut input)? {
        if let Some(iv) = interval {
            let due = start + iv.mul_f64(sent as f64);
            while Instant::now() < due {
                let left = due - Instant::now();
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        payload.clear();
        if a.stamp {
            // Stamped when it goes (after the rate's wait).
            stamp::push(&mut payload);
        }
        payload.extend_from_slice(&input);
        if a.autonumber {
            write!(payload, "{sent}")?;
        }
        if let Some(size) = a.size {
            if payload.len() < size {
                payload.resize(size, b' ');
            }
        }
        match publisher.offer_blocking(&payload, Duration::from_secs(30)) {
            Ok(()) => {}
            Err(PublishError::Timeout) => {
                return Err("publisher stayed back-pressured for 30 s".into())
            }
            Err(e) => return Err(e.into()),
        }
        sent += 1;
    }
    publisher.flush(Duration::from_secs(30))?;
    let secs = start.elapsed().as_secs_f64();
    let acked = crate::stay_until_acknowledged(&node, reliable, a.ack_timeout);
    let s = node.stats();
    eprintln!(
        "sent {sent} messages in {} datagrams, {:.3} s ({:.0} msg/s), backend {}, send errors {}, retransmits {}, naks received {}, back-pressured {}, flow-blocked {}, receivers {}",
        s.datagrams_sent,
        secs,
        sent as f64 / secs.max(1e-9),
        s.backend,
        s.send_errors,
        s.retransmits,
        s.naks_received,
        s.back_pressure,
        s.flow_blocked,
        s.receivers
    );
    if ipc {
        eprintln!("ipc: {} messages written to shared memory", s.ipc_published);
    }
    if !acked {
        eprintln!(
            "receivers did not acknowledge everything within {} s (position {}, acknowledged up to {})",
            a.ack_timeout,
            s.position,
            s.acked_position.map_or("-".into(), |p| p.to_string())
        );
    }
    Ok(if s.send_errors == 0 && acked {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
