//! The sender agent: drains publisher rings into datagrams and hands them to the
//! kernel in batches, never past what its receivers' windows allow; answers NAKs from
//! its retransmit window and sends heartbeats when idle.
//!
//! Datagrams are built in a pool of buffers used as a ring; once sent, a buffer keeps
//! its datagram until the ring comes round again, so the pool *is* the retransmit
//! window and a retransmission costs no copy. Records are released back to their
//! publishers only after the datagrams holding them were accepted by the kernel, so
//! `Publisher::flush` means "on the wire"; records held back by flow control stay in
//! the rings, which is how back-pressure reaches `offer`. An optional rate limit (a
//! token bucket consulted before each new datagram) holds records back the same way.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{HeardNak, PublisherEntry, SenderCommand, Shared, MAX_BATCH};
use crate::config::Config;
use crate::io::socket::recv_control;
use crate::io::TxBackend;
use crate::proto::{Append, DatagramBuf, FlowControl, RateLimiter, Retransmitter, SenderStream};
use crate::wire::{Control, HEARTBEAT_LEN, NAK_LEN};

/// Messages taken from one publisher per duty cycle before moving to the next.
const FAIR_SHARE: usize = 4096;
/// Control messages read per duty cycle at most.
const CONTROL_PER_CYCLE: usize = 256;
/// A receiver silent this long no longer holds the publisher back.
pub(crate) const RECEIVER_TIMEOUT: Duration = Duration::from_secs(1);
/// Heartbeats back off to this interval while the publisher stays idle.
const MAX_HEARTBEAT: Duration = Duration::from_millis(100);
/// A datagram retransmitted this recently is not sent again for another NAK.
const RETRANSMIT_LINGER: Duration = Duration::from_micros(500);

/// The ring of datagram buffers: `pool[head]` is being filled; the `unsent` before
/// it are sealed and waiting for the next batch; the rest hold sent datagrams.
struct Outbox {
    pool: Vec<DatagramBuf>,
    head: usize,
    unsent: usize,
    batch: usize,
    /// The publisher rate limit, charged with every datagram sealed.
    rate: Option<RateLimiter>,
}

impl Outbox {
    /// Whether the rate limit lets a new datagram start now (always without one).
    fn rate_allows(&mut self) -> bool {
        self.rate.as_mut().is_none_or(|r| r.ready(Instant::now()))
    }

    fn current(&mut self) -> &mut DatagramBuf {
        &mut self.pool[self.head]
    }

    /// Seals the current datagram (if it has frames) and moves on.
    fn seal(
        &mut self,
        stream: &mut SenderStream,
        backend: &mut Option<Box<dyn TxBackend>>,
        shared: &Shared,
    ) {
        if !self.pool[self.head].is_empty() {
            stream.seal(&mut self.pool[self.head]);
            self.advance(backend, shared);
        }
    }

    /// Moves past the current buffer, already sealed; sends when a batch is full or
    /// the ring wraps (so a batch is always contiguous).
    fn advance(&mut self, backend: &mut Option<Box<dyn TxBackend>>, shared: &Shared) {
        if let Some(r) = self.rate.as_mut() {
            r.consume(self.pool[self.head].bytes().len() as u64);
        }
        self.unsent += 1;
        self.head = (self.head + 1) % self.pool.len();
        self.pool[self.head].clear();
        if self.unsent >= self.batch || self.head == 0 {
            self.send(backend, shared);
        }
    }

    /// Hands the sealed datagrams to the kernel.
    fn send(&mut self, backend: &mut Option<Box<dyn TxBackend>>, shared: &Shared) {
        if self.unsent == 0 {
            return;
        }
        let n = self.pool.len();
        let start = (self.head + n - self.unsent) % n;
        let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let mut bytes = 0u64;
        for (r, b) in refs
            .iter_mut()
            .zip(self.pool[start..start + self.unsent].iter())
        {
            *r = b.bytes();
            bytes += b.bytes().len() as u64;
        }
        let c = &shared.counters.tx;
        match backend.as_mut().map(|b| b.send_batch(&refs[..self.unsent])) {
            Some(Ok(())) => {
                c.datagrams.add(self.unsent as u64);
                c.bytes.add(bytes);
            }
            Some(Err(e)) => {
                // The sequence numbers are spent: receivers NAK them, and they are
                // retransmitted from the pool, or reported lost.
                c.send_errors.add(self.unsent as u64);
                tracing::warn!(error = %e, datagrams = self.unsent, "send failed");
            }
            None => c.send_errors.add(self.unsent as u64),
        }
        self.unsent = 0;
    }

    /// A sent datagram still in the pool.
    fn sent(&self, seq: u64) -> Option<&[u8]> {
        let b = &self.pool[(seq % self.pool.len() as u64) as usize];
        (b.seq() == Some(seq)).then(|| b.bytes())
    }
}

pub(crate) struct SenderAgent {
    backend: Option<Box<dyn TxBackend>>,
    control: Option<Socket>,
    stream: SenderStream,
    flow: FlowControl,
    retransmit: Option<Retransmitter>,
    outbox: Outbox,
    publishers: Vec<PublisherEntry>,
    next_publisher: usize,
    blocked: bool,
    rate_blocked: bool,
    heartbeat_interval: Duration,
    heartbeat_every: Duration,
    next_heartbeat: Option<Instant>,
    stats_file: Option<crate::stats_file::StatsFile>,
}

/// Whether `n` more datagrams fit the receivers' windows.
fn window_allows(flow: &FlowControl, stream: &SenderStream, n: u64) -> bool {
    flow.limit()
        .is_none_or(|limit| stream.next_seq() + n <= limit)
}

impl SenderAgent {
    pub(crate) fn new(config: &Config, session: u32, max_payload: usize) -> Self {
        let batch = config.batch.clamp(1, MAX_BATCH);
        let slots = (config.retransmit_window / max_payload.max(1)).max(2 * batch);
        SenderAgent {
            backend: None,
            control: None,
            stream: SenderStream::new(session, max_payload),
            flow: if config.reliable {
                FlowControl::new(RECEIVER_TIMEOUT, config.flow_control)
                    .with_retransmit_window(slots as u64 - 1)
            } else {
                FlowControl::new(RECEIVER_TIMEOUT, config.flow_control)
            },
            // The buffer being filled is not retained: the window is the others.
            retransmit: config
                .reliable
                .then(|| Retransmitter::new(slots - 1, RETRANSMIT_LINGER)),
            outbox: Outbox {
                pool: (0..slots).map(|_| DatagramBuf::new(max_payload)).collect(),
                head: 0,
                unsent: 0,
                batch,
                // Bursts of a send batch or 1 ms worth, whichever is larger.
                rate: config.rate_limit.map(|rate| {
                    let burst = (batch as u64 * max_payload as u64).max(rate / 1000);
                    RateLimiter::new(rate, burst, Instant::now())
                }),
            },
            publishers: Vec::new(),
            next_publisher: 0,
            blocked: false,
            rate_blocked: false,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_every: config.heartbeat_interval,
            next_heartbeat: None,
            stats_file: None,
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

    /// Whether the last duty cycle stopped at the rate limit.
    pub(crate) fn rate_blocked(&self) -> bool {
        self.rate_blocked
    }

    /// When the last duty cycle stopped at the rate limit: how long from `now` until
    /// the limit lets the next datagram go (zero if it already does).
    pub(crate) fn rate_wait(&self, now: Instant) -> Option<Duration> {
        if !self.rate_blocked {
            return None;
        }
        let r = self.outbox.rate.as_ref()?;
        Some(r.next_ready(now).saturating_duration_since(now))
    }

    fn commands(&mut self, shared: &Shared) -> usize {
        let mut n = 0;
        while let Some(cmd) = shared.tx_commands.pop() {
            n += 1;
            match cmd {
                SenderCommand::Backend(b) => self.backend = Some(b),
                SenderCommand::Control(s) => self.control = Some(s),
                SenderCommand::StatsFile(f) => self.stats_file = Some(f),
                SenderCommand::Publisher(p) => self.publishers.push(p),
            }
        }
        n
    }

    /// Reads queued status messages and NAKs (waiting up to the socket's timeout for
    /// the first when `wait`) and answers the NAKs. Returns how many concerned us plus
    /// the datagrams resent.
    pub(crate) fn read_status(&mut self, shared: &Shared, mut wait: bool) -> usize {
        let Some(sock) = self.control.as_ref() else {
            return 0;
        };
        let c = &shared.counters.tx;
        let mut buf = [0u8; NAK_LEN + 1];
        let mut mine = 0;
        let mut resend: [u64; MAX_BATCH] = [0; MAX_BATCH];
        let mut queued = 0usize;
        let mut too_old = false;
        for _ in 0..CONTROL_PER_CYCLE {
            let now = Instant::now();
            match recv_control(sock, &mut buf, wait) {
                Ok(n) => match Control::decode(&buf[..n]) {
                    Ok(Control::Status(s)) if s.session == self.stream.session() => {
                        self.flow
                            .on_status(now, s.receiver, s.next_seq, s.window, s.tag);
                        c.status_received.add(1);
                        mine += 1;
                    }
                    Ok(Control::Nak(nak)) if nak.session == self.stream.session() => {
                        c.naks_received.add(1);
                        mine += 1;
                        let Some(r) = self.retransmit.as_mut() else {
                            continue;
                        };
                        // Everything sealed was sent at the end of the last cycle.
                        let sent_up_to = self.stream.next_seq() - self.outbox.unsent as u64;
                        too_old |= nak.from < r.oldest(sent_up_to);
                        let budget = MAX_BATCH - queued;
                        r.on_nak(now, nak.from, nak.to, sent_up_to, budget, &mut |seq| {
                            resend[queued] = seq;
                            queued += 1;
                        });
                    }
                    Ok(Control::Nak(nak)) => {
                        // Somebody else's session: our receiver may be missing the
                        // same range and can hold its own NAK back.
                        shared.heard_naks.force_push(HeardNak {
                            session: nak.session,
                            from: nak.from,
                            to: nak.to,
                            receiver: nak.receiver,
                        });
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
        // Then what earlier budgets left of NAKed ranges (a burst loss larger than a
        // batch goes out batch after batch, one per duty cycle).
        if let Some(r) = self.retransmit.as_mut().filter(|r| r.has_pending()) {
            let sent_up_to = self.stream.next_seq() - self.outbox.unsent as u64;
            r.resume(Instant::now(), sent_up_to, MAX_BATCH - queued, &mut |seq| {
                resend[queued] = seq;
                queued += 1;
            });
        }
        if queued > 0 {
            self.retransmit(&resend[..queued], shared);
        }
        if too_old {
            // Asked for what is no longer kept: say at once where the window starts,
            // so the receiver reports the loss now instead of asking on and on.
            self.send_heartbeat(shared);
        }
        mine + queued
    }

    fn retransmit(&mut self, seqs: &[u64], shared: &Shared) {
        let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let mut n = 0;
        let mut total = 0u64;
        for &seq in seqs {
            if let Some(bytes) = self.outbox.sent(seq) {
                refs[n] = bytes;
                total += bytes.len() as u64;
                n += 1;
            }
        }
        let c = &shared.counters.tx;
        match self.backend.as_mut().map(|b| b.send_batch(&refs[..n])) {
            Some(Ok(())) => {
                c.retransmits.add(n as u64);
                // Retransmissions are never held back, but they count against the
                // rate limit: new data waits for them.
                if let Some(r) = self.outbox.rate.as_mut() {
                    r.consume(total);
                }
            }
            Some(Err(e)) => {
                c.send_errors.add(n as u64);
                tracing::warn!(error = %e, "retransmission failed");
            }
            None => {}
        }
    }

    /// Sends a heartbeat when the session has been idle long enough.
    fn heartbeat(&mut self, now: Instant, sent_data: bool, shared: &Shared) {
        if sent_data || self.stream.next_seq() == 0 {
            self.heartbeat_every = self.heartbeat_interval;
            self.next_heartbeat = Some(now + self.heartbeat_interval);
            return;
        }
        if self.next_heartbeat.is_some_and(|t| now < t) {
            return;
        }
        self.send_heartbeat(shared);
        self.next_heartbeat = Some(now + self.heartbeat_every);
        self.heartbeat_every = (self.heartbeat_every * 2).min(MAX_HEARTBEAT);
    }

    /// Sends a heartbeat: the next sequence numbers and the oldest datagram kept.
    fn send_heartbeat(&mut self, shared: &Shared) {
        let oldest = self
            .retransmit
            .as_ref()
            .map_or(self.stream.next_seq(), |r| r.oldest(self.stream.next_seq()));
        let mut buf = [0u8; HEARTBEAT_LEN];
        self.stream.heartbeat(oldest).encode(&mut buf);
        if let Some(Ok(())) = self.backend.as_mut().map(|b| b.send_batch(&[&buf])) {
            shared.counters.tx.heartbeats.add(1);
        }
    }

    /// One duty cycle: returns the number of messages (and commands) handled.
    pub(crate) fn do_work(&mut self, shared: &Shared) -> usize {
        self.cycle(shared, true)
    }

    /// A duty cycle that reads the control socket only when `control` is set or the
    /// last cycle stopped at a receiver's window (inline mode reads it on a deadline,
    /// not on every offer: a receive per message would double the syscalls).
    pub(crate) fn cycle(&mut self, shared: &Shared, control: bool) -> usize {
        let mut work = self.commands(shared);
        if control || self.blocked {
            work += self.read_status(shared, false);
        }
        let now = Instant::now();
        self.flow.expire(now);
        let c = &shared.counters.tx;
        c.receivers.set(self.flow.receivers() as u64);
        if let Some(f) = self.stats_file.as_mut() {
            f.maybe_write(now, || shared.stats());
        }
        self.blocked = false;
        self.rate_blocked = false;
        if self.backend.is_none() {
            return work;
        }
        let seq_before = self.stream.next_seq();
        let count = self.publishers.len();
        'publishers: for k in 0..count {
            let idx = (self.next_publisher + k) % count;
            let Self {
                backend,
                stream,
                flow,
                publishers,
                outbox,
                blocked,
                rate_blocked,
                ..
            } = self;
            let p = &mut publishers[idx];
            let mut taken = 0;
            while taken < FAIR_SHARE {
                let Some(rec) = p.ring.peek() else { break };
                if outbox.current().is_empty() {
                    if !window_allows(flow, stream, 1) {
                        *blocked = true;
                        work += taken;
                        break 'publishers;
                    }
                    if !outbox.rate_allows() {
                        *rate_blocked = true;
                        work += taken;
                        break 'publishers;
                    }
                }
                match stream.append(outbox.current(), &p.topic, rec) {
                    Append::Done => {}
                    Append::Full => {
                        outbox.seal(stream, backend, shared);
                        if outbox.unsent == 0 {
                            p.ring.release();
                        }
                        continue;
                    }
                    Append::TooLarge => {
                        outbox.seal(stream, backend, shared);
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
                        if !outbox.rate_allows() {
                            *rate_blocked = true;
                            work += taken;
                            break 'publishers;
                        }
                        let mut off = 0;
                        while off < rec.len() {
                            let next = stream.fragment(outbox.current(), &p.topic, rec, off);
                            if next == off {
                                break; // cannot happen: topics are checked at creation
                            }
                            off = next;
                            outbox.advance(backend, shared);
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
        if self.rate_blocked {
            c.rate_limited.add(1);
        }
        self.next_publisher = self.next_publisher.wrapping_add(1);
        // Nothing more to take right now: send what we have (no Nagle).
        self.outbox
            .seal(&mut self.stream, &mut self.backend, shared);
        self.outbox.send(&mut self.backend, shared);
        for p in &mut self.publishers {
            p.ring.release();
        }
        let sent_data = self.stream.next_seq() != seq_before;
        self.heartbeat(now, sent_data, shared);
        c.next_seq.set(self.stream.next_seq());
        c.acked.set(self.flow.acked().unwrap_or(u64::MAX));
        c.left_behind
            .set(self.flow.left_behind(self.stream.next_seq()) as u64);
        let before = self.publishers.len();
        self.publishers
            .retain_mut(|p| !(p.closed.load(Ordering::Acquire) && p.ring.is_empty()));
        work + (before - self.publishers.len())
    }
}
