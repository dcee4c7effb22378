//! The IPC transport (issue 12): every publisher of a node whose
//! [`LocalTransport`](crate::LocalTransport) is `Ipc` or `Auto` writes its messages to
//! a log in shared memory (`ring::log`), and subscribers on the same host read those
//! logs in place, with the same events as the network path.
//!
//! - **Finding logs.** A log's file name starts with the group, port and network ID
//!   ([`log_prefix`]); its header names the topic and session ([`read_meta`]). A
//!   subscriber looks for new logs when it is made and every [`SCAN_EVERY`] after
//!   ([`SCAN_EVERY_READING`] while it reads some), and opens those whose topic it
//!   matches (at most [`MAX_LOGS`] at once).
//! - **No gap, no duplicate at the start.** A log made after the subscriber is read
//!   from its first record (a publisher that starts after its subscribers loses
//!   nothing to the scan's delay); one made before is joined at its live end, as a
//!   late joiner on the network joins.
//! - **Policies.** Back-pressure takes a slot the writer waits for (records lent in
//!   place); the others read copies and, when the writer laps them, report it: `Drop`
//!   as a `SlowConsumer` loss, `Disconnect` as a `Disconnected` one (the backlog is
//!   gone, reading resumes at the newest record), `Conflate` as superseded messages
//!   (counted, the newest value delivered: each log is one topic).
//! - **Sessions.** A session (node) joins with its first log a subscriber opens and
//!   is gone when its last one is; a writer that died leaves a log read to its last
//!   complete record.
//! - **`Auto`: never a session twice.** The receiver agent checks, at the first
//!   datagram of each session, whether that session writes logs on this host
//!   ([`LocalSessions`]); if so, its datagrams are dropped (counted) and its messages
//!   come from the logs.
//!
//! Over IPC sequence numbers count the messages of one publisher (topic), not of
//! the session, and a message's source address is 0.0.0.0:0.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::SlowConsumerPolicy;
use crate::ring::log::{read_meta, Join, LogBeat, LogEvent, LogReader};
use crate::subscriber::{Event, Loss, LossReason, Message, SessionEvent, SessionState};

/// How often a subscriber that reads no log looks for new ones.
pub(crate) const SCAN_EVERY: u64 = 20_000_000;
/// How often one that reads some looks (a scan reads the directory: rarer while
/// data flows, for the latency of what is read meanwhile).
pub(crate) const SCAN_EVERY_READING: u64 = 200_000_000;
/// Logs a subscriber reads at once.
pub(crate) const MAX_LOGS: usize = 256;
/// Directory entries a scan looks at.
const MAX_SCAN: usize = 4096;
/// How often the node heart-beats its publishers' logs.
pub(crate) const BEAT_EVERY: u64 = 100_000_000;

/// `CLOCK_MONOTONIC` in ns: one clock for every process on the host.
pub(crate) fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
    // Linux (vDSO: no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The start of the names of the logs of nodes on `group` in network `network`.
pub(crate) fn log_prefix(group: SocketAddrV4, network: u32) -> String {
    format!("ringcast-{}-{}-{network:08x}-", group.ip(), group.port())
}

fn source_of(v: u64) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16)
}

/// What the node keeps for its publishers' logs: their heartbeats, made by its
/// sender agent, and their readers, for `wait_for_receivers`.
#[derive(Default)]
pub(crate) struct IpcShared {
    logs: Mutex<Vec<(LogBeat, Arc<AtomicBool>)>>,
    /// Records published into logs since closed.
    closed_published: std::sync::atomic::AtomicU64,
    /// Logs made (names a node's next one).
    made: std::sync::atomic::AtomicU32,
    /// Async IPC subscribers waiting: woken at the sender agent's next cycle.
    wakers: Mutex<Vec<std::task::Waker>>,
    has_wakers: AtomicBool,
}

impl IpcShared {
    /// A publisher's log, until `closed` is set.
    pub(crate) fn add(&self, beat: LogBeat, closed: Arc<AtomicBool>) {
        if let Ok(mut l) = self.logs.lock() {
            l.push((beat, closed));
        }
    }

    /// Wakes `w` at the sender agent's next cycle (bounded: a waker already
    /// waiting is not added twice).
    pub(crate) fn wake_later(&self, w: &std::task::Waker) {
        if let Ok(mut l) = self.wakers.lock() {
            if !l.iter().any(|x| x.will_wake(w)) && l.len() < 4096 {
                l.push(w.clone());
            }
            self.has_wakers.store(true, Ordering::Release);
        }
    }

    /// Wakes the async IPC subscribers that wait (the sender agent, each cycle).
    pub(crate) fn wake_all(&self) {
        if !self.has_wakers.swap(false, Ordering::AcqRel) {
            return;
        }
        let wakers = self.wakers.lock().map(|mut l| std::mem::take(&mut *l));
        for w in wakers.unwrap_or_default() {
            w.wake();
        }
    }

    /// A number for the node's next log's name.
    pub(crate) fn next_log(&self) -> u32 {
        self.made.fetch_add(1, Ordering::Relaxed)
    }

    /// Records the node's publishers wrote to their logs.
    pub(crate) fn published(&self) -> u64 {
        let open: u64 = self
            .logs
            .lock()
            .map_or(0, |l| l.iter().map(|(b, _)| b.published()).sum());
        open.saturating_add(self.closed_published.load(Ordering::Relaxed))
    }

    /// Heart-beats every open log; forgets closed ones.
    pub(crate) fn beat(&self, now_ns: u64) {
        if let Ok(mut l) = self.logs.lock() {
            l.retain(|(b, closed)| {
                let keep = !closed.load(Ordering::Acquire);
                if !keep {
                    self.closed_published
                        .fetch_add(b.published(), Ordering::Relaxed);
                }
                keep
            });
            for (b, _) in l.iter() {
                b.beat(now_ns);
            }
        }
    }

    /// Whether every reader of every open log has read all of it.
    pub(crate) fn all_read(&self) -> bool {
        self.logs.lock().map_or(true, |l| {
            l.iter()
                .filter(|(_, c)| !c.load(Ordering::Acquire))
                .all(|(b, _)| b.all_read())
        })
    }

    /// The most readers any of the node's logs has.
    pub(crate) fn readers(&self) -> usize {
        self.logs.lock().map_or(0, |l| {
            l.iter()
                .filter(|(_, c)| !c.load(Ordering::Acquire))
                .map(|(b, _)| b.readers())
                .max()
                .unwrap_or(0)
        })
    }
}

/// Which sessions write logs on this host (`Auto`): decided at a session's first
/// datagram, once.
pub(crate) struct LocalSessions {
    dir: PathBuf,
    prefix: String,
    known: HashMap<u32, bool>,
    max: usize,
}

impl LocalSessions {
    pub(crate) fn new(dir: PathBuf, prefix: String, max: usize) -> Self {
        LocalSessions {
            dir,
            prefix,
            known: HashMap::new(),
            max,
        }
    }

    /// Whether `session`'s datagrams are to be dropped: it writes logs here, so its
    /// messages come from them.
    pub(crate) fn is_local(&mut self, session: u32) -> bool {
        if let Some(&local) = self.known.get(&session) {
            return local;
        }
        let local = logs(&self.dir, &self.prefix)
            .iter()
            .filter_map(|p| read_meta(p))
            .any(|m| m.session == u64::from(session) && crate::ring::log::process_alive(m.pid));
        if self.known.len() >= self.max {
            // (bounded: forget the decisions; they are made again as datagrams come)
            self.known.clear();
        }
        self.known.insert(session, local);
        local
    }
}

/// The log files in `dir` whose names start with `prefix` (at most [`MAX_SCAN`]).
fn logs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    crate::ring::log::log_files(dir, prefix, MAX_SCAN)
}

/// One log a subscriber reads.
struct Open {
    reader: LogReader,
    session: u32,
    source: SocketAddrV4,
    topic: String,
    gone: bool,
}

/// Counts a subscriber's IPC reading adds to the node's counters at each poll.
#[derive(Default, Clone, Copy)]
pub(crate) struct Tally {
    pub delivered: u64,
    pub lost: u64,
    pub conflated: u64,
    pub refused: u64,
}

/// A subscriber's side of IPC: the logs it reads.
pub(crate) struct SubLogs {
    dir: PathBuf,
    prefix: String,
    prefixes: Vec<String>,
    policy: SlowConsumerPolicy,
    timeout_ns: u64,
    created_ns: u64,
    next_scan: u64,
    open: Vec<Open>,
    /// Paths already opened or passed over (not this topic, dead writer).
    seen: HashSet<PathBuf>,
    /// Open logs per session (Joined at the first, Gone after the last).
    sessions: HashMap<u32, u32>,
    /// Events a scan made, handed out first.
    pending: std::collections::VecDeque<SessionEvent>,
    next: usize,
    pub(crate) tally: Tally,
}

impl SubLogs {
    pub(crate) fn new(
        dir: PathBuf,
        prefix: String,
        prefixes: Vec<String>,
        policy: SlowConsumerPolicy,
        timeout_ns: u64,
    ) -> Self {
        let now = mono_ns();
        let mut s = SubLogs {
            dir,
            prefix,
            prefixes,
            policy,
            timeout_ns,
            created_ns: now,
            next_scan: now,
            open: Vec::new(),
            seen: HashSet::new(),
            sessions: HashMap::new(),
            pending: Default::default(),
            next: 0,
            tally: Tally::default(),
        };
        // Logs that exist now are found now (joined live).
        s.scan(now);
        s
    }

    /// Logs open.
    pub(crate) fn logs(&self) -> usize {
        self.open.len()
    }

    fn matches(&self, topic: &str) -> bool {
        self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }

    fn scan(&mut self, now: u64) {
        self.next_scan = now.saturating_add(if self.open.is_empty() {
            SCAN_EVERY
        } else {
            SCAN_EVERY_READING
        });
        let paths = logs(&self.dir, &self.prefix);
        // Forget names that are gone (a log re-made under one is new).
        if self.seen.len() > MAX_SCAN {
            let live: HashSet<&PathBuf> = paths.iter().collect();
            self.seen.retain(|p| live.contains(p));
        }
        for path in paths {
            if self.seen.contains(&path) {
                continue;
            }
            if self.open.len() >= MAX_LOGS {
                self.tally.refused = self.tally.refused.saturating_add(1);
                break;
            }
            // (a log whose writer is still making it has no magic yet: looked at
            // again at the next scan)
            let Some(meta) = read_meta(&path) else {
                continue;
            };
            if !self.matches(&meta.topic) || !crate::ring::log::process_alive(meta.pid) {
                self.seen.insert(path);
                continue;
            }
            let join = if meta.created_ns >= self.created_ns {
                Join::Start
            } else {
                Join::Live
            };
            let bp = self.policy == SlowConsumerPolicy::BackPressure;
            let Ok(reader) = LogReader::open_from(&path, bp, now, join) else {
                continue;
            };
            self.seen.insert(path);
            let session = meta.session as u32;
            let n = self.sessions.entry(session).or_insert(0);
            *n += 1;
            let source = source_of(meta.source);
            if *n == 1 {
                self.pending.push_back(SessionEvent {
                    session,
                    source,
                    state: SessionState::Joined,
                });
            }
            self.open.push(Open {
                reader,
                session,
                source,
                topic: meta.topic,
                gone: false,
            });
        }
    }

    /// Hands up to `limit` events from the logs to `f`; returns how many.
    pub(crate) fn poll(&mut self, limit: usize, f: &mut dyn FnMut(Event<'_>)) -> usize {
        let now = mono_ns();
        if now >= self.next_scan {
            self.scan(now);
        }
        let mut n = 0;
        while n < limit {
            let Some(e) = self.pending.pop_front() else {
                break;
            };
            f(Event::Session(e));
            n += 1;
        }
        let count = self.open.len();
        let mut any_gone = false;
        for k in 0..count {
            if n >= limit {
                break;
            }
            // Round robin: a busy log cannot starve the others.
            let i = (self.next + k) % count;
            let (policy, timeout) = (self.policy, self.timeout_ns);
            let tally = &mut self.tally;
            let o = &mut self.open[i];
            let (session, source) = (o.session, o.source);
            let topic = o.topic.as_str();
            let mut gone = false;
            n += o.reader.poll(limit - n, now, timeout, &mut |ev| match ev {
                LogEvent::Message { seq, payload } => {
                    tally.delivered += 1;
                    f(Event::Message(Message {
                        topic,
                        payload,
                        session,
                        source,
                        seq,
                        snapshot: false,
                    }));
                }
                LogEvent::Lost { from_seq, count } => {
                    let reason = match policy {
                        SlowConsumerPolicy::Conflate => {
                            // Superseded by the newest value, which comes next.
                            tally.conflated = tally.conflated.saturating_add(count);
                            return;
                        }
                        SlowConsumerPolicy::Disconnect => LossReason::Disconnected,
                        _ => LossReason::SlowConsumer,
                    };
                    tally.lost = tally.lost.saturating_add(count);
                    f(Event::Loss(Loss {
                        session,
                        source,
                        from_seq,
                        to_seq: from_seq.saturating_add(count),
                        reason,
                    }));
                }
                LogEvent::Gone => gone = true,
            });
            if gone {
                // (handed out below as the session's Gone, once its last log went)
                n -= 1;
                o.gone = true;
                any_gone = true;
            }
        }
        if count > 0 {
            self.next = (self.next + 1) % count;
        }
        if any_gone {
            let mut gone_sessions = Vec::new();
            self.open.retain(|o| {
                if o.gone {
                    gone_sessions.push((o.session, o.source));
                }
                !o.gone
            });
            for (session, source) in gone_sessions {
                if let Some(c) = self.sessions.get_mut(&session) {
                    *c -= 1;
                    if *c == 0 {
                        self.sessions.remove(&session);
                        let e = SessionEvent {
                            session,
                            source,
                            state: SessionState::Gone,
                        };
                        if n < limit {
                            f(Event::Session(e));
                            n += 1;
                        } else {
                            self.pending.push_back(e);
                        }
                    }
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::log::{LogMeta, LogWriter, SUFFIX};

    /// A log a scan finds while its writer is still making it (no magic yet) is
    /// looked at again, and opened, at the next scan.
    #[test]
    fn a_log_found_half_made_is_opened_at_the_next_scan() {
        let dir = std::env::temp_dir().join(format!("ringcast-ipc-half-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 9, 9), 40000);
        let prefix = log_prefix(group, 7);
        let name = format!("{prefix}half");
        // The file as `create` leaves it for a moment: there, sized, all zero.
        let path = dir.join(format!("{name}{SUFFIX}"));
        std::fs::write(&path, vec![0u8; 4096 + (64 << 10)]).unwrap();
        let mut sub = SubLogs::new(
            dir.clone(),
            prefix.clone(),
            vec!["/t".into()],
            SlowConsumerPolicy::BackPressure,
            1_000_000_000,
        );
        assert_eq!(sub.logs(), 0);
        let meta = LogMeta {
            session: 5,
            topic: "/t",
            source: 0,
        };
        let mut w =
            LogWriter::create_with(&dir, &name, 64 << 10, &meta, mono_ns(), 1 << 30).unwrap();
        assert_eq!(w.path(), path.as_path());
        w.offer(b"hello").unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.is_empty() && std::time::Instant::now() < deadline {
            sub.poll(16, &mut |ev| {
                if let Event::Message(m) = ev {
                    got.push(m.payload().to_vec());
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, vec![b"hello".to_vec()]);
        assert_eq!(sub.logs(), 1);
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
