//! The sender agent: drains publisher rings into datagrams and hands them to the
//! kernel in batches. Records are released back to their publishers only after the
//! datagrams holding them were accepted by the kernel, so `Publisher::flush` means
//! "on the wire".

use std::sync::atomic::Ordering;

use super::{PublisherEntry, SenderCommand, Shared, MAX_BATCH};
use crate::io::TxBackend;
use crate::proto::{Append, DatagramBuf, SenderStream};

/// Messages taken from one publisher per duty cycle before moving to the next.
const FAIR_SHARE: usize = 4096;

pub(crate) struct SenderAgent {
    backend: Option<Box<dyn TxBackend>>,
    stream: SenderStream,
    publishers: Vec<PublisherEntry>,
    bufs: Vec<DatagramBuf>,
    /// Sealed datagrams waiting in `bufs[..ready]`.
    ready: usize,
    next_publisher: usize,
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

impl SenderAgent {
    pub(crate) fn new(session: u32, max_payload: usize, batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        SenderAgent {
            backend: None,
            stream: SenderStream::new(session, max_payload),
            publishers: Vec::new(),
            bufs: (0..batch).map(|_| DatagramBuf::new(max_payload)).collect(),
            ready: 0,
            next_publisher: 0,
        }
    }

    /// Whether any publisher still has records queued.
    pub(crate) fn has_pending(&mut self) -> bool {
        self.publishers.iter_mut().any(|p| !p.ring.is_empty())
    }

    fn commands(&mut self, shared: &Shared) -> usize {
        let mut n = 0;
        while let Some(cmd) = shared.tx_commands.pop() {
            n += 1;
            match cmd {
                SenderCommand::Backend(b) => self.backend = Some(b),
                SenderCommand::Publisher(p) => self.publishers.push(p),
            }
        }
        n
    }

    /// One duty cycle: returns the number of messages (and commands) handled.
    pub(crate) fn do_work(&mut self, shared: &Shared) -> usize {
        let mut work = self.commands(shared);
        if self.publishers.is_empty() || self.backend.is_none() {
            return work;
        }
        let count = self.publishers.len();
        let batch = self.bufs.len();
        let c = &shared.counters.tx;
        for k in 0..count {
            let idx = (self.next_publisher + k) % count;
            let Self {
                backend,
                stream,
                publishers,
                bufs,
                ready,
                ..
            } = self;
            let p = &mut publishers[idx];
            let mut taken = 0;
            while taken < FAIR_SHARE {
                let Some(rec) = p.ring.peek() else { break };
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
        self.next_publisher = self.next_publisher.wrapping_add(1);
        // Nothing more queued right now: send what we have (no Nagle).
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
