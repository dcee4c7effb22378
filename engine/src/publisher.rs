//! Publishing: a topic's handle that queues messages for the sender agent.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{DirectClaim, Inline, Shared, POLL_SLEEP};
use crate::error::PublishError;
use crate::ring;
use crate::ring::log::{LogClaim, LogError, LogWriter};

/// A publisher's IPC log (issue 12): written on the application's thread, read in
/// place by subscribers on this host.
pub(crate) struct IpcLog {
    pub writer: LogWriter,
    /// `LocalTransport::Ipc`: the log only, nothing to the network.
    pub only: bool,
}

/// A log's refusal as the publisher's.
fn log_error(e: LogError, shared: &Shared) -> PublishError {
    match e {
        LogError::BackPressured => {
            shared.counters.app.back_pressure.add_shared(1);
            PublishError::BackPressured
        }
        LogError::TooLarge { len, capacity } => PublishError::TooLarge {
            len,
            max: capacity / 2 - ring::log::RECORD_HEADER,
        },
        // (a writer's claim fails only by size or back-pressure)
        _ => PublishError::Stopped,
    }
}

/// Publishes messages on one topic. Create with [`Node::publisher`](crate::Node::publisher).
///
/// `offer` and `try_claim` never block and never drop: a full ring is returned as
/// [`PublishError::BackPressured`]. A publisher belongs to one thread at a time
/// (it is `Send`, not `Sync`); create one per publishing thread.
pub struct Publisher {
    ring: ring::Producer,
    shared: Arc<Shared>,
    topic: Arc<str>,
    closed: Arc<AtomicBool>,
    max_message: usize,
    /// Messages' time to live (`Node::publisher_with_ttl`): ring records then start
    /// with the deadline.
    ttl: Option<Duration>,
    /// Its messages go into the node's last-value cache
    /// (`Node::publisher_with_last_value`): always through the ring.
    cached: bool,
    /// Its IPC log, when the node's local transport is `Ipc` or `Auto`.
    ipc: Option<Box<IpcLog>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Space claimed for one message: fill it, then [`commit`](Claim::commit). Dropping
/// it without committing publishes nothing. Under inline threading, while nothing of
/// the publisher waits in its ring, the space is in the datagram being built (the
/// message is written once, where it is sent from; the node's sender is held until
/// the claim is committed or dropped, so keep claims short); otherwise it is in the
/// publisher's ring.
pub struct Claim<'a> {
    inner: ClaimInner<'a>,
    shared: &'a Shared,
    /// Bytes of the ring record before the payload (a TTL publisher's deadline).
    skip: usize,
}

enum ClaimInner<'a> {
    Ring(ring::Claim<'a>),
    Direct(DirectClaim<'a>),
    /// In the IPC log (`LocalTransport::Ipc`).
    Log(LogClaim<'a>),
    /// In the log, copied into the ring at commit (`LocalTransport::Auto`).
    Both(LogClaim<'a>, ring::Claim<'a>),
}

impl Claim<'_> {
    /// Publishes the claimed message.
    pub fn commit(self) {
        match self.inner {
            ClaimInner::Ring(c) => {
                c.commit();
                self.shared.published();
            }
            ClaimInner::Direct(c) => Inline::commit_direct(c),
            ClaimInner::Log(c) => {
                c.commit();
            }
            ClaimInner::Both(c, mut r) => {
                r.copy_from_slice(c.bytes());
                c.commit();
                r.commit();
                self.shared.published();
            }
        }
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            ClaimInner::Ring(c) => &c[self.skip..],
            ClaimInner::Direct(c) => c.bytes(),
            ClaimInner::Log(c) | ClaimInner::Both(c, _) => c.bytes(),
        }
    }
}

impl DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            ClaimInner::Ring(c) => &mut c[self.skip..],
            ClaimInner::Direct(c) => c.bytes_mut(),
            ClaimInner::Log(c) | ClaimInner::Both(c, _) => c.payload(),
        }
    }
}

impl Publisher {
    pub(crate) fn new(
        ring: ring::Producer,
        shared: Arc<Shared>,
        topic: Arc<str>,
        closed: Arc<AtomicBool>,
        max_message: usize,
        ttl: Option<Duration>,
        cached: bool,
    ) -> Self {
        let prefix = if ttl.is_some() { 8 } else { 0 };
        let max_message = max_message.min(ring.max_record().saturating_sub(prefix));
        Publisher {
            ring,
            shared,
            topic,
            closed,
            max_message,
            ttl,
            cached,
            ipc: None,
        }
    }

    /// This publisher also (or only) writes `log`.
    pub(crate) fn with_ipc(mut self, log: IpcLog) -> Self {
        let max = log.writer.capacity() / 2 - ring::log::RECORD_HEADER;
        self.max_message = if log.only {
            max
        } else {
            self.max_message.min(max)
        };
        self.ipc = Some(Box::new(log));
        self
    }

    /// The deadline of a message offered now (µs since the UNIX epoch), for a
    /// publisher with a time to live.
    fn deadline(&self) -> Option<u64> {
        let ttl = u64::try_from(self.ttl?.as_micros()).unwrap_or(u64::MAX);
        Some(crate::stats_file::now_us().saturating_add(ttl))
    }

    /// The node's shared state.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The topic this publisher sends on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Largest message this publisher accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    fn check(&self, len: usize) -> Result<(), PublishError> {
        if len > self.max_message {
            return Err(PublishError::TooLarge {
                len,
                max: self.max_message,
            });
        }
        if self.shared.stopped() {
            return Err(PublishError::Stopped);
        }
        Ok(())
    }

    /// Claims `len` bytes in the ring to be filled in place (no copy) and committed.
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        self.check(len)?;
        if self.ipc.is_some() {
            return self.try_claim_ipc(len);
        }
        let deadline = self.deadline();
        let Publisher {
            ring,
            shared,
            topic,
            ..
        } = self;
        if let Some(e) = deadline {
            // The record carries the deadline first (claimed in the ring: a direct
            // claim's frame is written before the payload is known, deadline too).
            let mut c = claim_in_ring(ring, shared, len + 8)?;
            if let ClaimInner::Ring(r) = &mut c.inner {
                r[..8].copy_from_slice(&e.to_le_bytes());
            }
            c.skip = 8;
            return Ok(c);
        }
        if let Some(i) = shared.inline.get().filter(|_| !self.cached) {
            // Inline, with nothing of ours queued ahead: in the datagram being built
            // (a cached message goes through the ring: the cache keeps a copy).
            if ring.is_empty() {
                if let Some(c) = i.claim_direct(shared, topic, len) {
                    return Ok(Claim {
                        inner: ClaimInner::Direct(c),
                        shared,
                        skip: 0,
                    });
                }
            }
        }
        claim_in_ring(ring, shared, len)
    }

    /// [`try_claim`](Self::try_claim) of an IPC publisher.
    fn try_claim_ipc(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        let Publisher {
            ipc, ring, shared, ..
        } = self;
        let shared = &**shared;
        let Some(log) = ipc.as_deref_mut() else {
            return Err(PublishError::Stopped);
        };

        // Room in the ring first (Auto): a refusal by either publishes nothing.
        let ring_claim = if log.only {
            None
        } else {
            match ring.try_claim(len) {
                Some(r) => Some(r),
                None => {
                    shared.counters.app.back_pressure.add_shared(1);
                    return Err(PublishError::BackPressured);
                }
            }
        };
        let c = log
            .writer
            .try_claim_or_abort(len)
            .map_err(|e| log_error(e, shared))?;
        Ok(Claim {
            inner: match ring_claim {
                Some(r) => ClaimInner::Both(c, r),
                None => ClaimInner::Log(c),
            },
            shared,
            skip: 0,
        })
    }

    /// Copies `payload` into the ring for sending.
    pub fn offer(&mut self, payload: &[u8]) -> Result<(), PublishError> {
        self.check(payload.len())?;
        if let Some(log) = self.ipc.as_deref_mut() {
            let shared = &*self.shared;
            if log.only {
                return match log.writer.offer(payload) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(log_error(e, shared)),
                };
            }
            // Both: room in the ring first, so a refusal by either publishes nothing.
            let mut claim = claim_in_ring(&mut self.ring, shared, payload.len())?;
            log.writer
                .offer(payload)
                .map_err(|e| log_error(e, shared))?;
            claim.copy_from_slice(payload);
            claim.commit();
            return Ok(());
        }
        let deadline = self.deadline();
        if let Some(i) = self.shared.inline.get().filter(|_| !self.cached) {
            // Inline, with nothing of ours queued ahead: straight into the datagram
            // being built (one copy fewer, no ring record).
            if self.ring.is_empty() && i.offer_direct(&self.shared, &self.topic, payload, deadline)
            {
                return Ok(());
            }
        }
        let prefix = if deadline.is_some() { 8 } else { 0 };
        let mut claim = claim_in_ring(&mut self.ring, &self.shared, payload.len() + prefix)?;
        if let (Some(e), ClaimInner::Ring(r)) = (deadline, &mut claim.inner) {
            r[..8].copy_from_slice(&e.to_le_bytes());
            claim.skip = 8;
        }
        claim.copy_from_slice(payload);
        claim.commit();
        Ok(())
    }

    /// Like [`offer`](Self::offer) but waits (spinning, then yielding, then sleeping)
    /// while back-pressured, up to `timeout`.
    pub fn offer_blocking(
        &mut self,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + timeout;
        let mut tries = 0u32;
        loop {
            match self.offer(payload) {
                Err(PublishError::BackPressured) => {}
                other => return other,
            }
            if Instant::now() >= deadline {
                return Err(PublishError::Timeout);
            }
            backoff(&mut tries);
        }
    }

    /// [`Node::wait_for_receivers`](crate::Node::wait_for_receivers): waits until at
    /// least `n` receivers report to this node's publishers.
    pub fn wait_for_receivers(&self, n: usize, timeout: Duration) -> Result<usize, crate::Error> {
        self.shared.wait_for_receivers(n, timeout)
    }

    /// Waits until every message offered so far has been handed to the kernel.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), PublishError> {
        let deadline = Instant::now() + timeout;
        let mut tries = 0u32;
        while !self.ring.is_empty() || self.shared.inline.get().is_some_and(|i| i.tx_pending()) {
            if self.shared.stopped() {
                return Err(PublishError::Stopped);
            }
            if Instant::now() >= deadline {
                return Err(PublishError::Timeout);
            }
            if self.shared.kick_sender() == 0 {
                backoff(&mut tries);
            }
        }
        Ok(())
    }
}

/// Spin, then yield, then sleep.
pub(crate) fn backoff(tries: &mut u32) {
    *tries = tries.saturating_add(1);
    if *tries < 100 {
        std::hint::spin_loop();
    } else if *tries < 200 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(POLL_SLEEP);
    }
}

/// Claims `len` bytes in a publisher's ring.
fn claim_in_ring<'a>(
    ring: &'a mut ring::Producer,
    shared: &'a Shared,
    len: usize,
) -> Result<Claim<'a>, PublishError> {
    if shared.inline.get().is_some() && ring.free_bytes() < len + 2 * 64 {
        // Inline, nobody else drains the ring: send what waits (a burst may have held
        // it) before deciding the ring is full.
        shared.kick_sender();
    }
    match ring.try_claim(len) {
        Some(inner) => Ok(Claim {
            inner: ClaimInner::Ring(inner),
            shared,
            skip: 0,
        }),
        None => {
            shared.counters.app.back_pressure.add_shared(1);
            Err(PublishError::BackPressured)
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(m) = self.shared.membership.get() {
            m.publishes(&self.topic, -1);
        }
        self.shared.kick_sender();
    }
}
