//! Subscribing: a handle that reads the messages and loss events the receiver agent
//! queued for this subscription's topic prefixes.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::agent::notify::Notify;
use crate::agent::{delivery, Direct, Inline, Shared};
use crate::error::Error;
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
    pub(crate) snapshot: bool,
}

impl<'a> Message<'a> {
    /// A last-value snapshot entry: this subscriber's node joined the session late,
    /// and its publisher (one made with
    /// [`Node::publisher_with_last_value`](crate::Node::publisher_with_last_value))
    /// sent the latest value of each of its cached topics first. The snapshot comes
    /// before the session's live data, with no gap or duplicate at the seam.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }
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
#[non_exhaustive]
pub enum LossReason {
    /// Datagrams never arrived (a gap in the publisher's sequence).
    Network,
    /// This subscription's ring was full: the application did not poll fast enough
    /// ([`SlowConsumerPolicy::Drop`](crate::SlowConsumerPolicy::Drop)).
    SlowConsumer,
    /// The subscription fell so far behind that it was disconnected and resynchronised
    /// at the live position: its backlog was discarded
    /// ([`SlowConsumerPolicy::Disconnect`](crate::SlowConsumerPolicy::Disconnect)).
    Disconnected,
    /// The message's time to live ran out before it could be delivered
    /// ([`Node::publisher_with_ttl`](crate::Node::publisher_with_ttl)).
    Expired,
}

/// Messages `from_seq..to_seq` of a session that will never be delivered to this
/// subscription. A range may include sequence numbers of topics the subscription does
/// not match (a session numbers all its topics' messages in one sequence).
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

/// A publishing session came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent {
    /// Publishing session.
    pub session: u32,
    /// Publisher's address.
    pub source: SocketAddrV4,
    /// What happened.
    pub state: SessionState,
}

/// See [`SessionEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// First heard (a new publisher, or a publisher restarted under a new session
    /// id), or heard again after it was declared gone.
    Joined,
    /// Not heard (data or heartbeat) for the publisher timeout: the publisher exited
    /// or is cut off. Whatever of it could not be repaired was reported as a loss
    /// before this event.
    Gone,
}

/// What a subscriber receives, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A message on a matching topic.
    Message(Message<'a>),
    /// An explicit loss.
    Loss(Loss),
    /// A publishing session joined or went away.
    Session(SessionEvent),
}

/// An owned [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedEvent {
    /// A message.
    Message(OwnedMessage),
    /// A loss.
    Loss(Loss),
    /// A session joined or went.
    Session(SessionEvent),
}

/// Receives messages whose topic starts with one of its prefixes (ZeroMQ-style).
/// Create with [`Node::subscriber`](crate::Node::subscriber).
pub struct Subscriber {
    ring: ring::Consumer,
    shared: Arc<Shared>,
    closed: Arc<AtomicBool>,
    /// Set by the receiver agent when a disconnect-policy subscription fell too far
    /// behind: the backlog is to be discarded (see [`Subscriber::poll`]).
    resync: Arc<AtomicBool>,
    /// What a resync turned the discarded backlog into (losses, and the loss and
    /// session events it held), handed out before anything newer.
    resynced: VecDeque<Event<'static>>,
    /// Wakes this subscriber's async task.
    notify: Arc<Notify>,
    /// Its prefixes (announced by discovery while it lives).
    prefixes: Vec<String>,
    /// Has waited to be woken at least once (counted in
    /// `Shared::wakeable_subscribers`).
    is_async: bool,
    /// Wakes the thread parked in `poll_timeout` (agent threading), made once.
    parker: Option<(std::thread::ThreadId, std::task::Waker)>,
    /// The stream handed out the node's stop as its last item.
    #[cfg(feature = "stream")]
    ended: bool,
    /// The IPC logs it reads, when the node's local transport is `Ipc` or `Auto`.
    ipc: Option<Box<crate::ipc::SubLogs>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    pub(crate) fn new(
        ring: ring::Consumer,
        shared: Arc<Shared>,
        closed: Arc<AtomicBool>,
        resync: Arc<AtomicBool>,
        notify: Arc<Notify>,
        prefixes: Vec<String>,
    ) -> Self {
        Subscriber {
            ring,
            shared,
            closed,
            resync,
            resynced: VecDeque::new(),
            notify,
            prefixes,
            is_async: false,
            parker: None,
            #[cfg(feature = "stream")]
            ended: false,
            ipc: None,
        }
    }

    /// This subscriber also (or only) reads the IPC logs of `logs`.
    pub(crate) fn with_ipc(mut self, logs: crate::ipc::SubLogs) -> Self {
        self.ipc = Some(Box::new(logs));
        self
    }

    /// IPC logs this subscriber reads now (0 without IPC).
    pub fn ipc_logs(&self) -> usize {
        self.ipc.as_ref().map_or(0, |l| l.logs())
    }

    /// Hands up to `limit` events from the IPC logs to `f` (0 without IPC).
    fn poll_ipc(&mut self, limit: usize, f: &mut dyn FnMut(Event<'_>)) -> usize {
        let Some(logs) = self.ipc.as_deref_mut() else {
            return 0;
        };
        if limit == 0 {
            return 0;
        }
        let n = logs.poll(limit, f);
        let t = std::mem::take(&mut logs.tally);
        let c = &self.shared.counters.app;
        if t.delivered > 0 {
            c.ipc_delivered.add_shared(t.delivered);
        }
        if t.lost + t.conflated + t.refused > 0 {
            c.ipc_lost.add_shared(t.lost);
            c.ipc_conflated.add_shared(t.conflated);
            c.ipc_refused.add_shared(t.refused);
        }
        n
    }

    /// Why this subscriber's node stopped, if it did: an agent failed (say it
    /// panicked), or the node was dropped. After a `poll_timeout` or `recv` that brought
    /// nothing, `None` means the time ran out with the node alive. What was already in
    /// the ring is still handed out by `poll` after the node stopped.
    pub fn error(&self) -> Option<Error> {
        if !self.shared.stopped() {
            return None;
        }
        Some(Error::Stopped(
            self.shared
                .failure
                .get()
                .cloned()
                .unwrap_or_else(|| "the node stopped".to_string()),
        ))
    }

    /// Hands up to `limit` queued events to `f`, without blocking. Returns how many.
    ///
    /// Under [`SlowConsumerPolicy::Disconnect`](crate::SlowConsumerPolicy::Disconnect),
    /// once the subscription was declared too slow the queued backlog is discarded
    /// here: its messages become [`LossReason::Disconnected`] losses (losses and
    /// session events in it are still handed over, in order), and delivery resumes at
    /// the live position.
    ///
    /// In [`ThreadingMode::Inline`](crate::ThreadingMode::Inline) this call reads the
    /// socket itself (unless another thread is doing so) once what waits in the ring
    /// has been handed out and `limit` leaves room (so a poller that fell behind
    /// drains its ring, then takes its messages directly again). Under the
    /// back-pressure policy, while nothing of this subscription waits in its ring, `f`
    /// then gets the messages straight out of the receive buffer, inside the
    /// receiver's cycle: no copy, no ring record (for up to 1 ms of a cycle, so a slow
    /// `f` holds the receiver back only briefly; the rest goes through the ring). Under the other policies they always go through the
    /// ring, so a slow application slows nobody else.
    pub fn poll(&mut self, limit: usize, mut f: impl FnMut(Event<'_>)) -> usize {
        // What waits in the ring is older than anything in the socket: out first.
        // Receiving while it waits would put the new messages behind it, in the ring
        // too — a poller that fell behind once would then copy every message through
        // its ring for as long as it stays behind, which is what keeps it there.
        let mut n = self.read(limit, &mut f);
        // (with agent threads nothing runs here: the ring was all there is)
        if self.shared.inline.get().is_some() && (n < limit || limit == 0) {
            n += self.inline_cycle(limit - n, &mut f, |i, shared, direct| {
                i.poll(shared, direct);
            });
            n += self.read(limit - n, &mut f);
        }
        n + self.poll_ipc(limit - n, &mut f)
    }

    /// In inline threading, runs `cycle` (a receiver cycle on this thread), letting
    /// this subscription take its own events straight out of the receive buffer
    /// ([`Direct`]) unless something of it waits to be handed out first. Returns how
    /// many it took (0 without inline threading: nothing runs).
    fn inline_cycle(
        &mut self,
        limit: usize,
        f: &mut dyn FnMut(Event<'_>),
        cycle: impl FnOnce(&Inline, &Shared, Option<&mut Direct<'_>>),
    ) -> usize {
        let direct_ok =
            limit > 0 && self.resynced.is_empty() && !self.resync.load(Ordering::Acquire);
        let Subscriber {
            ring,
            shared,
            closed,
            ..
        } = self;
        let Some(i) = shared.inline.get() else {
            return 0;
        };
        if !direct_ok {
            cycle(i, shared, None);
            return 0;
        }
        let mut empty = || ring.is_empty();
        let mut direct = Direct::new(closed, &mut empty, limit, f);
        cycle(i, shared, Some(&mut direct));
        let taken = direct.taken;
        if taken > 0 {
            shared.counters.rx.delivered_direct.add_shared(taken as u64);
        }
        taken
    }

    /// [`poll`](Self::poll) without running the receiver first.
    fn read(&mut self, limit: usize, mut f: impl FnMut(Event<'_>)) -> usize {
        if let Some(i) = self.shared.inline.get() {
            // The application is about (see `Inline::note_rx`).
            i.note_rx();
        }
        if self.resync.load(Ordering::Acquire) {
            self.resync();
        }
        let mut n = 0;
        while n < limit {
            let Some(ev) = self.resynced.pop_front() else {
                break;
            };
            f(ev);
            n += 1;
        }
        if n < limit && self.resynced.is_empty() {
            n += self.ring.read_batch(limit - n, |rec| {
                if let Some(ev) = delivery::read(rec) {
                    f(ev);
                }
            });
        }
        n
    }

    /// Discards every queued message, turning each run of them into one loss per
    /// session (queued for [`poll`](Self::poll) with the loss and session events found
    /// among them, in order), then tells the receiver agent to go on.
    fn resync(&mut self) {
        let mut runs: Vec<Loss> = Vec::new();
        let mut discarded = 0u64;
        while let Some(rec) = self.ring.peek() {
            match delivery::read(rec) {
                Some(Event::Message(m)) => {
                    discarded += 1;
                    let run = runs
                        .iter_mut()
                        .find(|l| l.session == m.session && l.source == m.source);
                    match run {
                        Some(l) if l.to_seq <= m.seq => l.to_seq = m.seq + 1,
                        _ => runs.push(Loss {
                            session: m.session,
                            source: m.source,
                            from_seq: m.seq,
                            to_seq: m.seq + 1,
                            reason: LossReason::Disconnected,
                        }),
                    }
                }
                Some(Event::Loss(l)) => {
                    self.resynced.extend(runs.drain(..).map(Event::Loss));
                    self.resynced.push_back(Event::Loss(l));
                }
                Some(Event::Session(e)) => {
                    self.resynced.extend(runs.drain(..).map(Event::Loss));
                    self.resynced.push_back(Event::Session(e));
                }
                None => {}
            }
            self.ring.consume();
        }
        self.ring.release();
        self.resynced.extend(runs.drain(..).map(Event::Loss));
        self.shared
            .counters
            .app
            .resync_discarded
            .add_shared(discarded);
        self.resync.store(false, Ordering::Release);
    }

    /// Like [`poll`](Self::poll), but waits up to `timeout` for the first event.
    pub fn poll_timeout(
        &mut self,
        limit: usize,
        timeout: Duration,
        mut f: impl FnMut(Event<'_>),
    ) -> usize {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut tries = 0u32;
        // A parking inline poller does not try the socket before it waits: its wait
        // is a blocking receive, which returns at once when a datagram is queued
        // (one syscall per wake-up, as a blocking `recv`).
        let mut waited = !timeout.is_zero() && self.shared.inline.get().is_some_and(|i| i.parks());
        // Events the last inline wait handed over directly.
        let mut taken = 0;
        loop {
            // After an inline wait the receiver just ran (it is what woke us): read.
            let n = taken
                + if waited {
                    self.read(limit - taken, &mut f)
                } else {
                    self.poll(limit - taken, &mut f)
                };
            let now = Instant::now();
            if n > 0 || now >= deadline || self.shared.stopped() {
                return n;
            }
            if self.ipc.is_some() {
                // Nothing wakes a reader of shared memory: spin, yield, then sleep
                // briefly between looks (at most `POLL_SLEEP`).
                crate::publisher::backoff(&mut tries);
                waited = false;
                taken = 0;
                continue;
            }
            if self.shared.inline.get().is_none() {
                // Agent threads: spin and yield briefly (the next message is often
                // close behind), then park until the receiver agent wakes us.
                if tries < PARK_AFTER_TRIES {
                    backoff(&mut tries);
                } else {
                    self.park_until(deadline);
                }
                waited = false;
                continue;
            }
            let (waited_so_far, left) = (now - start, deadline - now);
            let mut ran = false;
            taken = self.inline_cycle(limit, &mut f, |i, shared, direct| {
                ran = i.wait(shared, waited_so_far, left, direct);
            });
            waited = ran;
        }
    }

    /// Waits up to `timeout` for the next event and returns an owned copy.
    pub fn recv(&mut self, timeout: Duration) -> Option<OwnedEvent> {
        let mut out = None;
        self.poll_timeout(1, timeout, |ev| out = Some(owned(ev)));
        out
    }

    /// Iterates over events as they come, ending after `idle` without one.
    pub fn iter(&mut self, idle: Duration) -> impl Iterator<Item = OwnedEvent> + '_ {
        std::iter::from_fn(move || self.recv(idle))
    }

    /// The next event for async code, or `Pending` with `cx`'s waker registered: the
    /// thread that runs the receiver wakes the task when the next event is in the
    /// ring. No thread polls for it: with agent threads the receiver agent wakes it;
    /// in [`ThreadingMode::Inline`](crate::ThreadingMode::Inline), while the node has
    /// async subscribers, its backstop thread waits for datagrams in the kernel (as a
    /// receiver agent does) instead of parking. Works with any executor.
    ///
    /// `Err(Error::Stopped)` once the node stopped (an agent failed, or the node was
    /// dropped) and what was queued before has been handed out.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<OwnedEvent, Error>> {
        self.count_wakeable();
        let mut armed = false;
        loop {
            if let Some(ev) = self.take_one() {
                if armed {
                    self.notify.disarm();
                }
                return Poll::Ready(Ok(ev));
            }
            if let Some(e) = self.error() {
                // Stopped: one more look, for what the last cycle committed.
                return match self.take_one() {
                    Some(ev) => Poll::Ready(Ok(ev)),
                    None => Poll::Ready(Err(e)),
                };
            }
            if armed {
                if self.ipc.is_some() {
                    // Nothing wakes the task when a log grows: the node's sender
                    // agent wakes it at its next cycle (within ~1 ms when idle).
                    self.shared.ipc.wake_later(cx.waker());
                }
                return Poll::Pending;
            }
            // Armed, then one more look (a cycle that committed before the arm was
            // visible to it did not wake us).
            self.notify.arm(cx.waker());
            armed = true;
            if self.shared.inline.get().is_some() && !self.shared.rx_waiting.load(Ordering::SeqCst)
            {
                // The backstop may be parked for its idle period: it is to wait on
                // the socket for us now.
                if let Some(t) = self.shared.sender_thread.get() {
                    t.unpark();
                }
            }
        }
    }

    /// Parks this thread until the receiver agent puts something in the ring (it wakes
    /// armed subscriptions at the end of its cycle), the node stops, or `deadline`.
    fn park_until(&mut self, deadline: Instant) {
        self.count_wakeable();
        let me = std::thread::current();
        let waker = match &self.parker {
            Some((id, w)) if *id == me.id() => w.clone(),
            _ => {
                let w = crate::agent::notify::thread_waker();
                self.parker = Some((me.id(), w.clone()));
                w
            }
        };
        self.notify.arm(&waker);
        let ready = !self.ring.is_empty()
            || !self.resynced.is_empty()
            || self.resync.load(Ordering::Acquire)
            || self.shared.stopped();
        if !ready {
            std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        self.notify.disarm();
    }

    /// From now on the receiver wakes this subscriber when it is armed.
    fn count_wakeable(&mut self) {
        if !self.is_async {
            self.is_async = true;
            self.shared
                .wakeable_subscribers
                .fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits for the next event without blocking the thread: `poll_recv` as a future.
    /// `Err(Error::Stopped)` once the node stopped and its queued events are out.
    ///
    /// ```no_run
    /// # async fn consume(node: &ringcast::Node) -> Result<(), ringcast::Error> {
    /// let mut sub = node.subscriber(&["/prices/"])?;
    /// loop {
    ///     match sub.recv_async().await? {
    ///         ringcast::OwnedEvent::Message(m) => println!("{} {:?}", m.topic, m.payload),
    ///         ringcast::OwnedEvent::Loss(l) => eprintln!("lost {} messages", l.count()),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// With the `stream` feature the subscriber is also a `futures_core::Stream` of
    /// `Result<OwnedEvent, Error>` (the stop is its last item).
    pub async fn recv_async(&mut self) -> Result<OwnedEvent, Error> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// One event if one is ready: the ring first, then (inline) a receiver cycle run
    /// here without blocking.
    fn take_one(&mut self) -> Option<OwnedEvent> {
        let mut out = None;
        let mut own = |ev: Event<'_>| out = Some(owned(ev));
        if self.read(1, &mut own) == 0 {
            if self.shared.inline.get().is_some() {
                self.poll(1, &mut own);
            } else {
                self.poll_ipc(1, &mut own);
            }
        }
        out
    }
}

/// Tries of the spin-then-yield backoff before a waiting thread parks.
const PARK_AFTER_TRIES: u32 = 200;

/// An owned copy of an event.
fn owned(ev: Event<'_>) -> OwnedEvent {
    match ev {
        Event::Message(m) => OwnedEvent::Message(m.to_owned()),
        Event::Loss(l) => OwnedEvent::Loss(l),
        Event::Session(e) => OwnedEvent::Session(e),
    }
}

/// With the `stream` feature: the subscriber's events as a [`futures_core::Stream`],
/// awaited without a polling thread (see [`Subscriber::poll_recv`]). The node's stop
/// is the last item (`Err(Error::Stopped)`), then the stream ends.
#[cfg(feature = "stream")]
impl futures_core::Stream for Subscriber {
    type Item = Result<OwnedEvent, Error>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        this.poll_recv(cx).map(|r| {
            this.ended = r.is_err();
            Some(r)
        })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(m) = self.shared.membership.get() {
            m.subscribes(&self.prefixes, -1);
        }
        if self.is_async {
            self.shared
                .wakeable_subscribers
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}
