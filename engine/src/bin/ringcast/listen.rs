//! `ringcast listen`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;
use ringcast::{Event, Message, Node, SlowConsumerPolicy};

use crate::{builder, histogram, interrupted, on_interrupt, percentiles, stamp, Net, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast listen --topic /demo                     one line per message, Ctrl-C for the summary
  ringcast listen --format json | jq .payload       topic, session, seq, source, times, payload
  ringcast listen --topic /md --latency             one-way latency of `send --stamp` messages
  ringcast listen --count 1000 --output F           the first 1000 messages into F, then exit
  ringcast listen --slow-consumer back-pressure     lossless: this listener paces the publishers";

#[derive(Args)]
pub struct ListenArgs {
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
    /// How each message is printed: `text` (the payload as UTF-8, one line), `json`
    /// (one object per line: topic, session, seq, source, recv_ns, payload and its
    /// encoding `utf-8` or `base64`; sent_ns and latency_ns for stamped messages) or
    /// `hex` (the payload in hex, one line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Report one-way latency of messages that carry a send stamp (`send --stamp`):
    /// per message, and percentiles in the summary.
    #[arg(long)]
    latency: bool,
    /// What happens when this listener falls behind. `drop` (the default, unless
    /// RINGCAST_SLOW_CONSUMER or the configuration file says otherwise) never holds
    /// a publisher back: what does not fit is dropped and reported as loss.
    /// `back-pressure` is lossless, and paces every publisher on the group to this
    /// listener (their flow control permitting).
    #[arg(long, value_enum)]
    slow_consumer: Option<Policy>,
    /// Sleep this many microseconds after each message: an application slower than
    /// the stream, to see the slow-consumer policies at work.
    #[arg(long, default_value_t = 0)]
    handler_delay_us: u64,
    /// Tests only: inject faults into what this listener receives, e.g.
    /// `loss=0.05,dup=0.01,reorder=0.02,delay=0.01:2ms,blackout=1000:300ms,seed=7`.
    #[arg(long)]
    inject_faults: Option<ringcast::FaultConfig>,
    /// Tag this listener's status messages carry (for `send --flow-control tagged:N`).
    #[arg(long)]
    receiver_tag: Option<u32>,
    /// Declare a publisher gone after this many seconds without a datagram or
    /// heartbeat from it [default: 2].
    #[arg(long)]
    publisher_timeout: Option<f64>,
}

/// `--format` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// The payload as UTF-8 (invalid bytes replaced), one line per message.
    Text,
    /// One JSON object per line.
    Json,
    /// The payload in lowercase hex, one line per message.
    Hex,
}

/// `--slow-consumer` values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Policy {
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

/// Writes one message in the chosen format; `latency` is the stamped one-way
/// latency in ns, when known.
fn write_message(
    out: &mut dyn Write,
    format: Format,
    m: &Message<'_>,
    recv_ns: u64,
    show_latency: bool,
) -> io::Result<Option<u64>> {
    let (sent, payload) = stamp::split(m.payload());
    let latency = sent.map(|s| recv_ns.saturating_sub(s));
    match format {
        Format::Text => {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            if show_latency {
                match latency {
                    Some(l) => write!(out, "\t[latency {:.1} µs]", l as f64 / 1e3)?,
                    None => write!(out, "\t[no stamp]")?,
                }
            }
        }
        Format::Hex => {
            for b in payload {
                write!(out, "{b:02x}")?;
            }
            if show_latency {
                if let Some(l) = latency {
                    write!(out, " {l}")?;
                }
            }
        }
        Format::Json => {
            let (text, encoding) = match std::str::from_utf8(payload) {
                Ok(s) => (s.to_owned(), "utf-8"),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(payload),
                    "base64",
                ),
            };
            let mut o = serde_json::json!({
                "topic": m.topic(),
                "session": format!("{:08x}", m.session()),
                "seq": m.seq(),
                "source": m.source().to_string(),
                "recv_ns": recv_ns,
                "payload": text,
                "encoding": encoding,
            });
            if m.is_snapshot() {
                // The latest value of its topic, sent before live data to a late joiner.
                o["snapshot"] = true.into();
            }
            if let (Some(s), Some(l)) = (sent, latency) {
                o["sent_ns"] = s.into();
                o["latency_ns"] = l.into();
            }
            serde_json::to_writer(&mut *out, &o)?;
        }
    }
    out.write_all(b"\n")?;
    Ok(latency)
}

pub fn run(a: ListenArgs) -> Res {
    let mut b = builder(&a.net, None);
    if let Some(t) = a.receiver_tag {
        b = b.receiver_tag(t);
    }
    if let Some(t) = a.publisher_timeout {
        b = b.publisher_timeout(Duration::from_secs_f64(t.max(0.01)));
    }
    if let Some(f) = a.inject_faults.clone() {
        b = b.inject_faults(f);
    }
    let config = b.build()?;
    let (group, iface) = (config.group(), config.iface().to_string());
    let reliable = config.reliable();
    let ipc = config.local_transport() != ringcast::LocalTransport::Udp;
    let node = Node::new(config)?;
    let topics = if a.topics.is_empty() {
        vec![String::new()]
    } else {
        a.topics.clone()
    };
    let mut sub = match a.slow_consumer {
        Some(p) => node.subscriber_with_policy(&topics, p.into())?,
        None => node.subscriber(&topics)?,
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(File::create(p)?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    eprintln!(
        "listening on {} via {} ({} backend), topics {:?}",
        group,
        iface,
        node.backend(),
        topics
    );
    let idle_limit = a.timeout.map(Duration::from_secs_f64);
    on_interrupt();
    let mut received = 0u64;
    let mut gaps = 0u64;
    let mut lost = 0u64;
    let mut unstamped = 0u64;
    let mut lat = histogram();
    let mut last_traffic = Instant::now();
    let mut write_err = None;
    loop {
        let want = a.count.map_or(1024, |c| (c - received).min(1024) as usize);
        // Long enough that an idle listener wakes ~10 times a second; a message
        // ends the wait at once, and Ctrl-C within this.
        let n = sub.poll_timeout(want, Duration::from_millis(100), |ev| match ev {
            Event::Message(m) => {
                received += 1;
                let recv_ns = stamp::now_ns();
                match write_message(&mut *out, a.format, &m, recv_ns, a.latency) {
                    Ok(Some(l)) => {
                        let _ = lat.record(l.max(1));
                    }
                    Ok(None) => unstamped += 1,
                    Err(e) => {
                        write_err.get_or_insert(e);
                    }
                }
                if a.handler_delay_us > 0 {
                    std::thread::sleep(Duration::from_micros(a.handler_delay_us));
                }
            }
            Event::Session(e) => crate::print_session(&e),
            Event::Loss(l) => {
                gaps += 1;
                lost += l.count();
                eprintln!(
                    "loss: session {:08x} from {} messages {}..{} ({:?})",
                    l.session, l.source, l.from_seq, l.to_seq, l.reason
                );
            }
            _ => {}
        });
        if let Some(e) = write_err.take() {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // `listen | head`: the reader is done; so are we (with the summary).
                break;
            }
            return Err(e.into());
        }
        if n > 0 {
            last_traffic = Instant::now();
            // Each batch reaches the terminal (or pipe) as it arrives.
            if let Err(e) = out.flush() {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(e.into());
            }
        }
        if interrupted()
            || a.count.is_some_and(|c| received >= c)
            || idle_limit.is_some_and(|t| last_traffic.elapsed() >= t)
        {
            break;
        }
    }
    let _ = out.flush();
    let s = node.stats();
    eprintln!(
        "received {received} messages, gaps {gaps} (lost {lost}), gaps filled {}, unrecoverable {}, naks sent {}, naks suppressed {}, duplicates {}, malformed {}, datagrams {}, ring-full drops {}, conflated {}, slow disconnects {}, snapshot values {}",
        s.gaps_filled,
        s.gaps,
        s.naks_sent,
        s.naks_suppressed,
        s.duplicates,
        s.malformed,
        s.datagrams_received,
        s.ring_full_drops,
        s.conflated,
        s.slow_disconnects,
        s.snapshot_messages
    );
    if ipc {
        eprintln!(
            "ipc: {} messages read from shared memory, lost {}, conflated {}, datagrams of local sessions skipped {}",
            s.ipc_delivered, s.ipc_lost, s.ipc_conflated, s.ipc_skipped
        );
    }
    if a.latency {
        if lat.is_empty() {
            eprintln!("latency: no stamped messages ({unstamped} without a stamp)");
        } else {
            eprintln!(
                "latency: {} stamped messages ({unstamped} without), {}",
                lat.len(),
                percentiles(&lat)
            );
        }
    }
    if s.gaps > 0 && !reliable {
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
