//! Subscribing: a handle that reads the messages and loss events the receiver agent
//! queued for this subscription's topic prefixes.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{delivery, Shared};
use crate::publisher::backoff;
use crate::ring;

/// A message, borrowed from the subscription's ring for the duration of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) session: u32,
    pub(crate) source: SocketAddrV4,
    pub(crate) seq: u64,
}

impl<'a> Message<'a> {
    /// The topic it was published on.
    pub fn topic(&self) -> &'a str {
        self.topic
    }
    /// Its bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The publishing session (one per publishing node).
    pub fn session(&self) -> u32 {
        self.session
    }
    /// The publisher's address.
    pub fn source(&self) -> SocketAddrV4 {
        self.source
    }
    /// Its sequence number within the session.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedMessage {
        OwnedMessage {
            topic: self.topic.to_string(),
            payload: self.payload.to_vec(),
            session: self.session,
            source: self.source,
            seq: self.seq,
        }
    }
}

/// An owned message (from [`Subscriber::recv`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Topic.
    pub topic: String,
    /// Bytes.
    pub payload: Vec<u8>,
    /// Publishing session.
    pub session: u32,
    /// Publisher's address.
    pub source: SocketAddrV4,
    /// Sequence number within the session.
    pub seq: u64,
}

/// Why messages were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Datagrams never arrived (a gap in the publisher's sequence).
    Network,
    /// This subscription's ring was full: the application did not poll fast enough.
    SlowConsumer,
}

/// Messages `from_seq..to_seq` of a session that will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Publishing session.
    pub session: u32,
    /// Publisher's address.
    pub source: SocketAddrV4,
    /// First lost sequence number.
    pub from_seq: u64,
    /// One past the last lost sequence number.
    pub to_seq: u64,
    /// Why.
    pub reason: LossReason,
}

impl Loss {
    /// Number of messages lost.
    pub fn count(&self) -> u64 {
        self.to_seq - self.from_seq
    }
}

/// What a subscriber receives, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A message on a matching topic.
    Message(Message<'a>),
    /// An explicit loss.
    Loss(Loss),
}

/// An owned [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    /// A message.
    Message(OwnedMessage),
    /// A loss.
    Loss(Loss),
}

/// Receives messages whose topic starts with one of its prefixes (ZeroMQ-style).
/// Create with [`Node::subscriber`](crate::Node::subscriber).
pub struct Subscriber {
    ring: ring::Consumer,
    shared: Arc<Shared>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    pub(crate) fn new(ring: ring::Consumer, shared: Arc<Shared>, closed: Arc<AtomicBool>) -> Self {
        Subscriber {
            ring,
            shared,
            closed,
        }
    }

    /// Hands up to `limit` queued events to `f`, without blocking. Returns how many.
    pub fn poll(&mut self, limit: usize, mut f: impl FnMut(Event<'_>)) -> usize {
        self.ring.read_batch(limit, |rec| {
            if let Some(ev) = delivery::read(rec) {
                f(ev);
            }
        })
    }

    /// Like [`poll`](Self::poll), but waits up to `timeout` for the first event.
    pub fn poll_timeout(
        &mut self,
        limit: usize,
        timeout: Duration,
        mut f: impl FnMut(Event<'_>),
    ) -> usize {
        let deadline = Instant::now() + timeout;
        let mut tries = 0u32;
        loop {
            let n = self.poll(limit, &mut f);
            if n > 0 || Instant::now() >= deadline || self.shared.stopped() {
                return n;
            }
            backoff(&mut tries);
        }
    }

    /// Waits up to `timeout` for the next event and returns an owned copy.
    pub fn recv(&mut self, timeout: Duration) -> Option<OwnedEvent> {
        let mut out = None;
        self.poll_timeout(1, timeout, |ev| {
            out = Some(match ev {
                Event::Message(m) => OwnedEvent::Message(m.to_owned()),
                Event::Loss(l) => OwnedEvent::Loss(l),
            })
        });
        out
    }

    /// Iterates over events as they come, ending after `idle` without one.
    pub fn iter(&mut self, idle: Duration) -> impl Iterator<Item = OwnedEvent> + '_ {
        std::iter::from_fn(move || self.recv(idle))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}
