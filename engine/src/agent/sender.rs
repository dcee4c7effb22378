//! The sender agent: drains publisher rings into datagrams and hands them to the
//! kernel in batches, never past what its receivers' windows allow. Records are
//! released back to their publishers only after the datagrams holding them were
//! accepted by the kernel, so `Publisher::flush` means "on the wire"; records held
//! back by flow control stay in the rings, which is how back-pressure reaches `offer`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{PublisherEntry, SenderCommand, Shared, MAX_BATCH};
use crate::io::socket::recv_control;
use crate::io::TxBackend;
use crate::proto::{Append, DatagramBuf, FlowControl, SenderStream};
use crate::wire::{Status, STATUS_LEN};

/// Messages taken from one publisher per duty cycle before moving to the next.
const FAIR_SHARE: usize = 4096;
/// Status messages read per duty cycle at most.
const STATUS_PER_CYCLE: usize = 256;
/// A receiver silent this long no longer holds the publisher back.
pub(crate) const RECEIVER_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct SenderAgent {
    backend: Option<Box<dyn TxBackend>>,
    control: Option<Socket>,
    stream: SenderStream,
    flow: FlowControl,
    publishers: Vec<PublisherEntry>,
    bufs: Vec<DatagramBuf>,
    /// Sealed datagrams waiting in `bufs[..ready]`.
    ready: usize,
    next_publisher: usize,
    blocked: bool,
}

/// Sends the sealed datagrams and empties the batch.
fn send(
    backend: &mut Option<Box<dyn TxBackend>>,
    bufs: &mut [DatagramBuf],
    ready: &mut usize,
    shared: &Shared,
) {
    if *ready == 0 {
        return;
    }
    let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
    let mut bytes = 0u64;
    for (r, b) in refs.iter_mut().zip(bufs[..*ready].iter()) {
        *r = b.bytes();
        bytes += b.bytes().len() as u64;
    }
    let c = &shared.counters.tx;
    match backend.as_mut().map(|b| b.send_batch(&refs[..*ready])) {
        Some(Ok(())) => {
            c.datagrams.add(*ready as u64);
            c.bytes.add(bytes);
        }
        Some(Err(e)) => {
            // The datagrams' sequence numbers are spent: receivers see the gap and
            // report it. Count it here too.
            c.send_errors.add(*ready as u64);
            tracing::warn!(error = %e, datagrams = *ready, "send failed");
        }
        None => c.send_errors.add(*ready as u64),
    }
    for b in bufs[..*ready].iter_mut() {
        b.clear();
    }
    *ready = 0;
}

/// Whether `n` more datagrams fit the receivers' windows.
fn window_allows(flow: &FlowControl, stream: &SenderStream, n: u64) -> bool {
    flow.limit()
        .is_none_or(|limit| stream.next_seq() + n <= limit)
}

impl SenderAgent {
    pub(crate) fn new(session: u32, max_payload: usize, batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        SenderAgent {
            backend: None,
            control: None,
            stream: SenderStream::new(session, max_payload),
            flow: FlowControl::new(RECEIVER_TIMEOUT),
            publishers: Vec::new(),
            bufs: (0..batch).map(|_| DatagramBuf::new(max_payload)).collect(),
            ready: 0,
            next_publisher: 0,
            blocked: false,
        }
    }

    /// Whether any publisher still has records queued.
    pub(crate) fn has_pending(&mut self) -> bool {
        self.publishers.iter_mut().any(|p| !p.ring.is_empty())
    }

    /// Whether the last duty cycle stopped at a receiver's window.
    pub(crate) fn flow_blocked(&self) -> bool {
        self.blocked
    }

    fn commands(&mut self, shared: &Shared) -> usize {
        let mut n = 0;
        while let Some(cmd) = shared.tx_commands.pop() {
            n += 1;
            match cmd {
                SenderCommand::Backend(b) => self.backend = Some(b),
                SenderCommand::Control(s) => self.control = Some(s),
                SenderCommand::Publisher(p) => self.publishers.push(p),
            }
        }
        n
    }

    /// Reads queued status messages (waiting up to the socket's timeout for the first
    /// when `wait`). Returns how many concerned this session.
    pub(crate) fn read_status(&mut self, shared: &Shared, mut wait: bool) -> usize {
        let Some(sock) = self.control.as_ref() else {
            return 0;
        };
        let c = &shared.counters.tx;
        let mut buf = [0u8; STATUS_LEN + 1];
        let mut mine = 0;
        for _ in 0..STATUS_PER_CYCLE {
            match recv_control(sock, &mut buf, wait) {
                Ok(n) => match Status::decode(&buf[..n]) {
                    Ok(s) if s.session == self.stream.session() => {
                        self.flow
                            .on_status(Instant::now(), s.receiver, s.next_seq, s.window);
                        c.status_received.add(1);
                        mine += 1;
                    }
                    Ok(_) => {}
                    Err(_) => c.control_malformed.add(1),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control receive failed");
                    break;
                }
            }
            wait = false;
        }
        mine
    }

    /// One duty cycle: returns the number of messages (and commands) handled.
    pub(crate) fn do_work(&mut self, shared: &Shared) -> usize {
        let mut work = self.commands(shared);
        work += self.read_status(shared, false);
        self.flow.expire(Instant::now());
        shared
            .counters
            .tx
            .receivers
            .set(self.flow.receivers() as u64);
        self.blocked = false;
        if self.publishers.is_empty() || self.backend.is_none() {
            return work;
        }
        let count = self.publishers.len();
        let batch = self.bufs.len();
        let c = &shared.counters.tx;
        'publishers: for k in 0..count {
            let idx = (self.next_publisher + k) % count;
            let Self {
                backend,
                stream,
                flow,
                publishers,
                bufs,
                ready,
                blocked,
                ..
            } = self;
            let p = &mut publishers[idx];
            let mut taken = 0;
            while taken < FAIR_SHARE {
                let Some(rec) = p.ring.peek() else { break };
                if bufs[*ready].is_empty() && !window_allows(flow, stream, 1) {
                    *blocked = true;
                    work += taken;
                    break 'publishers;
                }
                match stream.append(&mut bufs[*ready], &p.topic, rec) {
                    Append::Done => {}
                    Append::Full => {
                        stream.seal(&mut bufs[*ready]);
                        *ready += 1;
                        if *ready == batch {
                            send(backend, bufs, ready, shared);
                            p.ring.release();
                        }
                        continue;
                    }
                    Append::TooLarge => {
                        if !bufs[*ready].is_empty() {
                            stream.seal(&mut bufs[*ready]);
                            *ready += 1;
                            if *ready == batch {
                                send(backend, bufs, ready, shared);
                            }
                        }
                        // A message wider than the window goes once everything before
                        // it was received, so it can never wait forever.
                        let piece = stream.fragment_piece(p.topic.len()).max(1);
                        let pieces = rec.len().div_ceil(piece) as u64;
                        let drained = flow.acked().is_none_or(|a| a >= stream.next_seq());
                        if !window_allows(flow, stream, pieces) && !drained {
                            *blocked = true;
                            work += taken;
                            break 'publishers;
                        }
                        let mut off = 0;
                        while off < rec.len() {
                            let next = stream.fragment(&mut bufs[*ready], &p.topic, rec, off);
                            if next == off {
                                break; // cannot happen: topics are checked at creation
                            }
                            off = next;
                            *ready += 1;
                            if *ready == batch {
                                send(backend, bufs, ready, shared);
                            }
                        }
                        c.fragmented.add(1);
                    }
                }
                c.messages.add(1);
                p.ring.consume();
                taken += 1;
            }
            work += taken;
        }
        if self.blocked {
            c.flow_blocked.add(1);
        }
        self.next_publisher = self.next_publisher.wrapping_add(1);
        // Nothing more to take right now: send what we have (no Nagle).
        if !self.bufs[self.ready].is_empty() {
            self.stream.seal(&mut self.bufs[self.ready]);
            self.ready += 1;
        }
        send(&mut self.backend, &mut self.bufs, &mut self.ready, shared);
        for p in &mut self.publishers {
            p.ring.release();
        }
        let before = self.publishers.len();
        self.publishers
            .retain_mut(|p| !(p.closed.load(Ordering::Acquire) && p.ring.is_empty()));
        work + (before - self.publishers.len())
    }
}
