//! The receiver agent: datagrams → protocol receiver → topic filter → subscription
//! rings. A full subscription ring never stalls the agent or the other
//! subscriptions: the message is dropped for that subscription, counted, and
//! reported to it as a loss once its ring has room again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::delivery;
use super::{ReceiverCommand, Shared, SubscriptionEntry};
use crate::io::RxBackend;
use crate::proto::{Delivery, Receiver, SessionKey};
use crate::stats::ReceiverCounters;
use crate::subscriber::{Loss, LossReason};

struct Subscription {
    entry: SubscriptionEntry,
    /// Losses not yet written to the ring (it was full), oldest first.
    pending: Vec<Loss>,
}

impl Subscription {
    fn matches(&self, topic: &str) -> bool {
        self.entry
            .prefixes
            .iter()
            .any(|p| topic.starts_with(p.as_str()))
    }

    /// Writes queued losses; false if some remain (ring still full).
    fn flush_pending(&mut self) -> bool {
        while let Some(loss) = self.pending.first() {
            match self.entry.ring.try_claim(delivery::LOSS_LEN) {
                Some(mut claim) => {
                    delivery::write_loss(&mut claim, loss);
                    claim.commit();
                    self.pending.remove(0);
                }
                None => return false,
            }
        }
        true
    }

    /// Queues a loss, merging it into the previous one when contiguous.
    fn note_loss(&mut self, loss: Loss) {
        if let Some(last) = self.pending.last_mut() {
            let same = last.session == loss.session
                && last.source == loss.source
                && last.reason == loss.reason;
            if same && last.to_seq == loss.from_seq {
                last.to_seq = loss.to_seq;
                return;
            }
        }
        self.pending.push(loss);
    }

    fn deliver_loss(&mut self, loss: Loss) {
        self.note_loss(loss);
        self.flush_pending();
    }

    fn deliver_message(
        &mut self,
        key: SessionKey,
        seq: u64,
        topic: &str,
        payload: &[u8],
        drops: &crate::stats::Counter,
    ) {
        if self.flush_pending() {
            if let Some(mut claim) = self
                .entry
                .ring
                .try_claim(delivery::message_len(topic, payload))
            {
                delivery::write_message(&mut claim, key, seq, topic, payload);
                claim.commit();
                return;
            }
        }
        drops.add(1);
        self.note_loss(Loss {
            session: key.session,
            source: key.source,
            from_seq: seq,
            to_seq: seq + 1,
            reason: LossReason::SlowConsumer,
        });
    }
}

fn dispatch(subs: &mut [Subscription], c: &ReceiverCounters, d: Delivery<'_>) {
    match d {
        Delivery::Message {
            from,
            seq,
            topic,
            payload,
        } => {
            for s in subs.iter_mut().filter(|s| s.matches(topic)) {
                s.deliver_message(from, seq, topic, payload, &c.ring_full_drops);
            }
        }
        Delivery::Loss {
            from,
            from_seq,
            to_seq,
        } => {
            // What was lost cannot be filtered by topic: every subscription hears it.
            for s in subs.iter_mut() {
                s.deliver_loss(Loss {
                    session: from.session,
                    source: from.source,
                    from_seq,
                    to_seq,
                    reason: LossReason::Network,
                });
            }
        }
    }
}

pub(crate) struct ReceiverAgent {
    backend: Option<Box<dyn RxBackend>>,
    proto: Receiver,
    subs: Vec<Subscription>,
    batch: usize,
}

impl ReceiverAgent {
    pub(crate) fn new(max_message: usize, max_sessions: usize, batch: usize) -> Self {
        ReceiverAgent {
            backend: None,
            proto: Receiver::new(max_message, max_sessions),
            subs: Vec::new(),
            batch,
        }
    }

    pub(crate) fn has_backend(&self) -> bool {
        self.backend.is_some()
    }

    /// One duty cycle; may block up to `block` waiting for the first datagram.
    pub(crate) fn do_work(&mut self, shared: &Shared, block: Option<Duration>) -> usize {
        let mut work = 0;
        while let Some(cmd) = shared.rx_commands.pop() {
            work += 1;
            match cmd {
                ReceiverCommand::Backend(b) => self.backend = Some(b),
                ReceiverCommand::Subscription(entry) => self.subs.push(Subscription {
                    entry,
                    pending: Vec::with_capacity(16),
                }),
            }
        }
        let Some(backend) = self.backend.as_mut() else {
            if let Some(d) = block {
                std::thread::park_timeout(d);
            }
            return work;
        };
        let c = &shared.counters.rx;
        let now = Instant::now();
        let (proto, subs) = (&mut self.proto, &mut self.subs);
        let got = backend.recv_batch(self.batch, block, &mut |bytes, source| {
            // Malformed datagrams are counted inside the receiver and dropped here.
            let _ = proto.handle_datagram(now, source, bytes, &mut |d| dispatch(subs, c, d));
        });
        match got {
            Ok(n) => work += n,
            Err(e) => {
                c.recv_errors.add(1);
                tracing::warn!(error = %e, "receive failed");
                if let Some(d) = block {
                    std::thread::sleep(d);
                }
            }
        }
        // Retry losses owed to subscriptions whose rings were full.
        for s in self.subs.iter_mut().filter(|s| !s.pending.is_empty()) {
            s.flush_pending();
        }
        let before = self.subs.len();
        self.subs
            .retain(|s| !s.entry.closed.load(Ordering::Acquire));
        work += before - self.subs.len();
        c.truncated.set(backend.truncated());
        let pc = self.proto.counters();
        c.datagrams.set(pc.datagrams);
        c.messages.set(pc.messages);
        c.bytes.set(pc.bytes);
        c.gaps.set(pc.gaps);
        c.lost_datagrams.set(pc.lost_datagrams);
        c.lost_messages.set(pc.lost_messages);
        c.duplicates.set(pc.duplicates);
        c.malformed.set(pc.malformed);
        c.sessions.set(pc.sessions);
        work
    }
}
