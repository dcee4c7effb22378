//! The line protocol between the harness and its two child processes (over the
//! children's stdin / stdout pipes).
//!
//! ```text
//! child  -> harness   "@rcb BOUND"          publisher: endpoint open, warm-up started
//!                     "@rcb READY"          subscriber: first warm-up message received
//!                     "@rcb DONE <json>"    report of the side
//!                     "@rcb ERROR <text>"   the side failed
//! harness -> child    GO                    publisher: stop warm-up, start the counted run
//!                     PUB_DONE              subscriber: publisher finished; stop when quiet
//!                     ABORT                 subscriber: stop now and report
//!                     EXIT                  publisher: close and exit
//! ```

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Prefix of every protocol line a child writes (anything else is ignored).
pub const PREFIX: &str = "@rcb ";

/// Commands from the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Go,
    PubDone,
    Abort,
    Exit,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Go => "GO",
            Command::PubDone => "PUB_DONE",
            Command::Abort => "ABORT",
            Command::Exit => "EXIT",
        }
    }

    pub fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "GO" => Some(Command::Go),
            "PUB_DONE" => Some(Command::PubDone),
            "ABORT" => Some(Command::Abort),
            "EXIT" => Some(Command::Exit),
            _ => None,
        }
    }
}

/// A message from a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Bound,
    Ready,
    Done(String),
    Error(String),
}

impl Reply {
    pub fn parse(line: &str) -> Option<Reply> {
        let rest = line.strip_prefix(PREFIX)?;
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        match word.trim() {
            "BOUND" => Some(Reply::Bound),
            "READY" => Some(Reply::Ready),
            "DONE" => Some(Reply::Done(arg.to_owned())),
            "ERROR" => Some(Reply::Error(arg.to_owned())),
            _ => None,
        }
    }
}

/// Write one protocol line to stdout (child side).
pub fn say(word: &str, arg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = if arg.is_empty() {
        writeln!(out, "{PREFIX}{word}")
    } else {
        writeln!(out, "{PREFIX}{word} {arg}")
    };
    let _ = out.flush();
}

/// Commands read from stdin on a background thread, as a channel (publisher side).
/// End of input reads as `Exit`.
pub fn command_channel() -> mpsc::Receiver<Command> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(c) = Command::parse(&line) {
                if tx.send(c).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Command::Exit);
    });
    rx
}

/// Commands read from stdin into flags the subscriber's hot loop can poll cheaply.
#[derive(Debug, Default)]
pub struct SubscriberFlags {
    /// CLOCK_MONOTONIC ns when PUB_DONE arrived (0 = not yet).
    pub pub_done_at: AtomicU64,
    /// ABORT arrived, or stdin closed.
    pub abort: AtomicBool,
}

pub fn subscriber_flags() -> Arc<SubscriberFlags> {
    let flags = Arc::new(SubscriberFlags::default());
    let f = flags.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Command::parse(&line) {
                Some(Command::PubDone) => f
                    .pub_done_at
                    .store(crate::clock::now_ns().max(1), Ordering::Release),
                Some(Command::Abort) | Some(Command::Exit) => break,
                _ => {}
            }
        }
        f.abort.store(true, Ordering::Release);
    });
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lines() {
        assert_eq!(Reply::parse("@rcb BOUND"), Some(Reply::Bound));
        assert_eq!(
            Reply::parse("@rcb DONE {\"a\":1}"),
            Some(Reply::Done("{\"a\":1}".into()))
        );
        assert_eq!(
            Reply::parse("@rcb ERROR no socket"),
            Some(Reply::Error("no socket".into()))
        );
        assert_eq!(Reply::parse("BOUND"), None);
        for c in [Command::Go, Command::PubDone, Command::Abort, Command::Exit] {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
    }
}
