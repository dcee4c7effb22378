//! `ringcast record`: every message of the chosen topics into a recording
//! (`ringcast::record`), which `ringcast replay` re-publishes and the library reads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::record::{Entry, RecordError, Recorder};
use ringcast::{Event, Node, SlowConsumerPolicy};

use crate::listen::Policy;
use crate::{builder, interrupted, on_interrupt, stamp, Net, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast record --topic /md --out md-rec           until Ctrl-C; lossless (paces the publishers)
  ringcast record --out all --count 1000000          every topic, the first million messages
  ringcast record --topic /md --out r --slow-consumer drop
                                                     never hold a publisher back (gaps reported)
  ringcast replay md-rec --speed max                 publish it again

A recording is a directory of memory-mapped segment files (NNNNNNNN.rcseg) and an index
(index.rcidx), readable by this user only. Each record holds the topic, session,
sequence, receive time, publish time (from a `send --stamp` stamp, else 0: the wire
carries none) and payload. A recorder killed at any point (even kill -9) leaves every
message it had completely written; `ringcast replay DIR --summary` checks a recording
and says what it holds.";

#[derive(Args)]
pub struct RecordArgs {
    #[command(flatten)]
    net: Net,
    /// Topic prefix to record (repeatable; default: every topic).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// The directory to record into (created; it must not hold a recording already).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without traffic.
    #[arg(long)]
    timeout: Option<f64>,
    /// Size of each segment file, e.g. 64MiB (64KiB..=2GiB). A message with its topic
    /// must fit in one.
    #[arg(long, default_value = "64MiB", value_parser = ringcast::settings::parse_size)]
    segment_size: usize,
    /// What happens when the recorder falls behind. `back-pressure` (the default:
    /// a recording misses nothing) paces the publishers to the recorder; `drop`
    /// never holds them back, and what does not fit is reported as loss.
    #[arg(long, value_enum, default_value_t = Policy::BackPressure)]
    slow_consumer: Policy,
    /// Also write the recording to the disk (`msync`) every this many seconds,
    /// against a power loss (a killed recorder loses nothing without it).
    #[arg(long, value_name = "SECS")]
    sync_every: Option<f64>,
}

/// What one recording run did.
#[derive(Default)]
struct Tally {
    recorded: u64,
    bytes: u64,
    gaps: u64,
    lost: u64,
}

pub fn run(a: RecordArgs) -> Res {
    let config = builder(&a.net, None).build()?;
    let group = config.group();
    let node = Node::new(config)?;
    let topics = if a.topics.is_empty() {
        vec![String::new()]
    } else {
        a.topics.clone()
    };
    let policy: SlowConsumerPolicy = a.slow_consumer.into();
    let mut recorder = Recorder::create(&a.out, a.segment_size)?;
    let mut sub = node.subscriber_with_policy(&topics, policy)?;
    eprintln!(
        "recording {} topics {:?} to {} ({} backend, slow consumer {:?})",
        group,
        topics,
        a.out.display(),
        node.backend(),
        policy
    );
    on_interrupt();
    let idle_limit = a.timeout.map(Duration::from_secs_f64);
    let sync_every = a
        .sync_every
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);
    let mut last_sync = Instant::now();
    let mut last_traffic = Instant::now();
    let mut t = Tally::default();
    let mut failed: Option<RecordError> = None;
    let start = Instant::now();
    loop {
        let want = a
            .count
            .map_or(1024, |c| (c - t.recorded).min(1024) as usize);
        let n = sub.poll_timeout(want, Duration::from_millis(100), |ev| match ev {
            Event::Message(m) if failed.is_none() => {
                let receive_ns = stamp::now_ns();
                let entry = Entry {
                    topic: m.topic(),
                    session: u64::from(m.session()),
                    seq: m.seq(),
                    publish_ns: stamp::split(m.payload()).0.unwrap_or(0),
                    receive_ns,
                    payload: m.payload(),
                };
                match recorder.append(&entry) {
                    Ok(_) => {
                        t.recorded += 1;
                        t.bytes += m.payload().len() as u64;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            Event::Session(e) => crate::print_session(&e),
            Event::Loss(l) => {
                t.gaps += 1;
                t.lost += l.count();
                eprintln!(
                    "loss: session {:08x} from {} messages {}..{} ({:?}): not in the recording",
                    l.session, l.source, l.from_seq, l.to_seq, l.reason
                );
            }
            _ => {}
        });
        if let Some(e) = failed.take() {
            // What was appended before stays readable; say where it stopped.
            let _ = recorder.flush();
            eprintln!("recorded {} messages before the error", t.recorded);
            return Err(e.into());
        }
        if n > 0 {
            last_traffic = Instant::now();
        }
        if sync_every.is_some_and(|s| last_sync.elapsed() >= s) {
            recorder.flush()?;
            last_sync = Instant::now();
        }
        if interrupted()
            || a.count.is_some_and(|c| t.recorded >= c)
            || idle_limit.is_some_and(|l| last_traffic.elapsed() >= l)
        {
            break;
        }
    }
    recorder.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "recorded {} messages ({} payload bytes) to {} in {:.3} s, gaps {} (lost {})",
        t.recorded,
        t.bytes,
        a.out.display(),
        secs,
        t.gaps,
        t.lost
    );
    Ok(if t.gaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
