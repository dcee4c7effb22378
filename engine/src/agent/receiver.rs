//! The receiver agent: datagrams → protocol receiver → topic filter → subscription
//! rings, and status messages back to the publishers (flow control).
//!
//! Slow consumers, per subscription policy. The agent never waits for an application:
//! - back-pressure: before reading the socket the agent checks that every
//!   back-pressure subscription has room for a batch and nothing queued; when one has
//!   not, datagrams stay in the socket, the position in its status messages stops
//!   advancing, and the publishers stop at their window. What does not fit anyway
//!   (held datagrams released by a repair, events raised by timers) is queued, copied,
//!   and written first once the ring has room. Nothing is lost; the slowest sets the pace.
//! - drop: a full ring drops the message for that subscription only, counted, and
//!   reported to it as a loss once its ring has room again.
//! - conflate: while the ring is full, only the newest message per (session, topic)
//!   waits; events wait in line with them.
//! - disconnect: a full ring makes the subscription resynchronise: the subscriber
//!   discards its backlog, everything it missed is reported as `Disconnected` losses.
//!
//! A message larger than a subscription's ring can ever hold is dropped for it and
//! reported as a `SlowConsumer` loss, whatever the policy.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{delivery, notify};
use super::{ReceiverCommand, Shared, SubscriptionEntry};
use crate::config::SlowConsumerPolicy;
use crate::io::RxBackend;
use crate::proto::{Delivery, Receiver, SessionKey};
use crate::stats::ReceiverCounters;
use crate::subscriber::{Event, Loss, LossReason, Message, SessionEvent, SessionState};
use crate::wire::{Nak, Status, NAK_LEN, STATUS_LEN};

/// Something owed to a subscription whose ring had no room for it, in order.
#[derive(Debug, Clone)]
enum Pending {
    Loss(Loss),
    Session(SessionEvent),
    /// A message for a back-pressure subscription, copied (rare: see the module doc).
    Message {
        key: SessionKey,
        seq: u64,
        topic: String,
        payload: Vec<u8>,
        snapshot: bool,
    },
}

impl Pending {
    fn session(&self) -> (u32, SocketAddrV4) {
        match self {
            Pending::Loss(l) => (l.session, l.source),
            Pending::Session(e) => (e.session, e.source),
            Pending::Message { key, .. } => (key.session, key.source),
        }
    }

    /// It as handed to an application.
    fn event(&self) -> Event<'_> {
        match self {
            Pending::Loss(l) => Event::Loss(*l),
            Pending::Session(e) => Event::Session(*e),
            Pending::Message {
                key,
                seq,
                topic,
                payload,
                snapshot,
            } => Event::Message(Message {
                topic,
                payload,
                session: key.session,
                source: key.source,
                seq: *seq,
                snapshot: *snapshot,
            }),
        }
    }

    /// Bytes of its record.
    fn len(&self) -> usize {
        match self {
            Pending::Loss(_) => delivery::LOSS_LEN,
            Pending::Session(_) => delivery::SESSION_LEN,
            Pending::Message { topic, payload, .. } => delivery::message_len(topic, payload),
        }
    }

    /// Writes its record into `out`, exactly [`len`](Self::len) long.
    fn write(&self, out: &mut [u8]) {
        match self {
            Pending::Loss(l) => delivery::write_loss(out, l),
            Pending::Session(e) => delivery::write_session(out, e),
            Pending::Message {
                key,
                seq,
                topic,
                payload,
                snapshot,
            } => delivery::write_message(out, *key, *seq, topic, payload, *snapshot),
        }
    }
}

/// Conflation: the newest undelivered message of one (session, topic).
#[derive(Default)]
struct Latest {
    key: Option<SessionKey>,
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    /// When it was last replaced (`u64::MAX`: the slot is free).
    stamp: u64,
}

/// An entry of the conflation queue.
enum Item {
    /// A slot as it was at `stamp` (stale once the slot changed).
    Slot(usize, u64),
    /// A loss or session event, in line with the messages around it.
    Event(Pending),
}

/// What waits at the head of the conflation queue.
enum Head<'a> {
    Message(&'a Latest),
    Event(&'a Pending),
}

/// The conflate policy's waiting messages: one slot per (session, topic), found by
/// index, handed out least recently updated first, with events in line. Allocates
/// only for a session or topic it has not seen before (buffers are reused); the work
/// per message does not grow with the number of topics.
#[derive(Default)]
struct Conflation {
    index: HashMap<SessionKey, HashMap<String, usize>>,
    slots: Vec<Latest>,
    free: Vec<usize>,
    order: VecDeque<Item>,
    next_stamp: u64,
    live: usize,
    events: usize,
}

impl Conflation {
    fn is_empty(&self) -> bool {
        self.live == 0 && self.events == 0
    }

    /// Queues an event behind what waits.
    fn push_event(&mut self, ev: Pending) {
        if let (Pending::Loss(l), Some(Item::Event(Pending::Loss(last)))) =
            (&ev, self.order.back_mut())
        {
            // back-to-back losses of a session merge (nothing of it waits between)
            let same = last.session == l.session && last.source == l.source;
            if same && last.reason == l.reason && last.to_seq <= l.from_seq {
                last.to_seq = l.to_seq;
                return;
            }
        }
        self.order.push_back(Item::Event(ev));
        self.events += 1;
    }

    /// Whether a message of (session, topic) waits.
    fn has(&self, key: SessionKey, topic: &str) -> bool {
        self.index.get(&key).is_some_and(|m| m.contains_key(topic))
    }

    /// Keeps `payload` as the newest of its (session, topic); true if it replaced an
    /// older one still waiting.
    fn put(&mut self, key: SessionKey, seq: u64, topic: &str, payload: &[u8]) -> bool {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let by_topic = self.index.entry(key).or_default();
        let (idx, replaced) = match by_topic.get(topic) {
            Some(&i) => (i, true),
            None => {
                let i = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(Latest::default());
                    self.slots.len() - 1
                });
                by_topic.insert(topic.to_string(), i);
                self.live += 1;
                (i, false)
            }
        };
        let l = &mut self.slots[idx];
        l.key = Some(key);
        l.seq = seq;
        l.topic.clear();
        l.topic.push_str(topic);
        l.payload.clear();
        l.payload.extend_from_slice(payload);
        l.stamp = stamp;
        self.order.push_back(Item::Slot(idx, stamp));
        if self.order.len() > 2 * (self.live + self.events) + 64 {
            let slots = &self.slots;
            self.order.retain(|it| match it {
                Item::Slot(i, st) => slots[*i].stamp == *st,
                Item::Event(_) => true,
            });
        }
        replaced
    }

    /// What waits longest (stale entries are skipped).
    fn front(&mut self) -> Option<Head<'_>> {
        loop {
            match self.order.front()? {
                Item::Slot(i, st) if self.slots[*i].stamp != *st => {
                    self.order.pop_front();
                }
                _ => break,
            }
        }
        match self.order.front()? {
            Item::Slot(i, _) => Some(Head::Message(&self.slots[*i])),
            Item::Event(ev) => Some(Head::Event(ev)),
        }
    }

    /// Removes what [`front`](Self::front) returned (it was delivered).
    fn pop_front(&mut self) {
        match self.order.pop_front() {
            Some(Item::Slot(i, _)) => {
                let l = &mut self.slots[i];
                l.stamp = u64::MAX;
                if let Some(k) = l.key {
                    if let Some(m) = self.index.get_mut(&k) {
                        m.remove(l.topic.as_str());
                        if m.is_empty() {
                            self.index.remove(&k);
                        }
                    }
                }
                self.free.push(i);
                self.live -= 1;
            }
            Some(Item::Event(_)) => self.events -= 1,
            None => {}
        }
    }
}

/// Whether a subscription with these topic prefixes takes a message on `topic` (the
/// empty prefix takes every topic). Public only for the micro-benchmarks.
#[doc(hidden)]
#[inline]
pub fn topic_matches(prefixes: &[String], topic: &str) -> bool {
    prefixes.iter().any(|p| topic.starts_with(p.as_str()))
}

/// Waiting items past which a subscription's losses merge whatever their cause.
const PENDING_FOLD: usize = 1024;
/// Items waiting for a subscription that does not poll, at most, before its session
/// events (joined, gone) are dropped (counted): a peer making up sessions cannot grow
/// the queue without bound. Losses are never dropped (they merge, see `note_loss`).
const PENDING_MAX: usize = 65_536;
/// (session, topic) slots the conflate policy keeps at most: a message for a new one
/// beyond that is reported lost (slow consumer) instead of kept.
const CONFLATED_MAX: usize = 65_536;

/// A poller that takes its own events straight out of the receive buffer during one
/// receiver cycle it runs itself (inline threading): no copy into its ring, no ring
/// record. Only while its ring and backlog are empty, so order holds: once one of its
/// events went to the ring instead (the poll's limit was reached), everything after it
/// in the cycle goes there too, and the poller reads it next.
///
/// Only under [`SlowConsumerPolicy::BackPressure`]: the application's callback then
/// runs inside the receiver's cycle, so a slow one holds the receiver (and through
/// its status messages, the publishers) back — which is what back-pressure means
/// anyway. Under drop, conflate and disconnect the ring is what keeps a slow
/// application from slowing anyone else (the backstop goes on receiving into it),
/// so those keep it.
///
/// And only for [`DIRECT_BUDGET`] of a cycle: a slow callback must not keep the
/// receiver from its timers and status messages for long (a publisher forgets a
/// receiver silent for a second, and would run past it). Past the budget the rest
/// goes to the ring, which the application then reads outside the receiver's cycle
/// while the backstop keeps the status going.
pub(crate) struct Direct<'a> {
    /// The subscription it is (its `closed` flag identifies it).
    pub(crate) sub: &'a Arc<AtomicBool>,
    /// Whether its ring is empty, asked under the receiver's lock (nobody writes it then).
    pub(crate) ring_empty: &'a mut dyn FnMut() -> bool,
    /// Events it takes at most.
    pub(crate) limit: usize,
    /// Events handed over so far.
    pub(crate) taken: usize,
    /// Still taking events directly in this cycle.
    open: bool,
    /// When this cycle began taking events directly.
    opened: Option<Instant>,
    pub(crate) f: &'a mut dyn FnMut(Event<'_>),
}

/// How long one receiver cycle hands events to a direct poller at most.
const DIRECT_BUDGET: Duration = Duration::from_millis(1);
/// The budget is looked at every this many events (one clock read per batch).
const DIRECT_BUDGET_EVERY: usize = 8;

impl<'a> Direct<'a> {
    pub(crate) fn new(
        sub: &'a Arc<AtomicBool>,
        ring_empty: &'a mut dyn FnMut() -> bool,
        limit: usize,
        f: &'a mut dyn FnMut(Event<'_>),
    ) -> Self {
        Direct {
            sub,
            ring_empty,
            limit,
            taken: 0,
            open: false,
            opened: None,
            f,
        }
    }

    /// A cycle starts: take events directly if the poller's ring is empty.
    fn open(&mut self) {
        self.open = (self.ring_empty)();
        self.opened = self.open.then(Instant::now);
    }

    /// Whether `s` is this poller's subscription; if so and it may take the event now,
    /// hands it over and returns true, else closes for the rest of the cycle.
    fn take(&mut self, s: &Subscription, ev: Event<'_>) -> bool {
        if !Arc::ptr_eq(self.sub, &s.entry.closed) {
            return false;
        }
        if self.open
            && self.taken < self.limit
            && s.entry.policy == SlowConsumerPolicy::BackPressure
            && !s.has_backlog()
        {
            (self.f)(ev);
            self.taken += 1;
            if self.taken % DIRECT_BUDGET_EVERY == 0
                && self.opened.is_some_and(|t| t.elapsed() > DIRECT_BUDGET)
            {
                self.open = false;
            }
            return true;
        }
        self.open = false;
        false
    }
}

struct Subscription {
    entry: SubscriptionEntry,
    /// Events (and, for back-pressure, messages) not yet written, oldest first. A loss
    /// merges into the session's previous one, so drop and disconnect keep it small.
    pending: VecDeque<Pending>,
    /// Conflate policy: the newest message per (session, topic), and events, waiting.
    latest: Conflation,
    /// Disconnect policy: declared too slow; nothing is written until the subscriber
    /// has discarded its backlog (it clears `entry.resync`).
    resyncing: bool,
}

impl Subscription {
    fn new(entry: SubscriptionEntry) -> Self {
        Subscription {
            entry,
            pending: VecDeque::with_capacity(16),
            latest: Conflation::default(),
            resyncing: false,
        }
    }

    fn matches(&self, topic: &str) -> bool {
        topic_matches(&self.entry.prefixes, topic)
    }

    /// Hands `ev` to the subscription's handler, if it has one.
    fn hand_to_handler(&mut self, ev: &Pending) -> bool {
        let Some(h) = self.entry.handler.as_mut() else {
            return false;
        };
        h(ev.event());
        true
    }

    /// Whether anything waits to be written (or a resync to finish).
    fn has_backlog(&self) -> bool {
        self.resyncing || !self.pending.is_empty() || !self.latest.is_empty()
    }

    /// Writes what waits, in order. False if some remains (ring still full, or a
    /// resync not yet done by the subscriber).
    fn flush(&mut self) -> bool {
        if self.resyncing {
            if self.entry.resync.load(Ordering::Acquire) {
                return false;
            }
            self.resyncing = false;
        }
        while let Some(p) = self.pending.front() {
            let Some(mut claim) = self.entry.ring.try_claim(p.len()) else {
                return false;
            };
            p.write(&mut claim);
            claim.commit();
            self.pending.pop_front();
        }
        while let Some(head) = self.latest.front() {
            let len = match &head {
                Head::Message(l) => delivery::message_len(&l.topic, &l.payload),
                Head::Event(ev) => ev.len(),
            };
            let Some(mut claim) = self.entry.ring.try_claim(len) else {
                return false;
            };
            match head {
                Head::Message(l) => {
                    if let Some(key) = l.key {
                        // (a conflated snapshot entry is handed on as the latest value)
                        delivery::write_message(
                            &mut claim, key, l.seq, &l.topic, &l.payload, false,
                        );
                        claim.commit();
                    }
                }
                Head::Event(ev) => {
                    ev.write(&mut claim);
                    claim.commit();
                }
            }
            self.latest.pop_front();
        }
        true
    }

    /// Queues a loss. It extends the session's previous pending loss when that is the
    /// newest thing owed for the session and has the same cause: nothing of that
    /// session reached this subscription in between, so the merged range names every
    /// message it did not get (and may span sequence numbers of topics it does not
    /// match).
    ///
    /// Past `PENDING_FOLD` waiting items (a subscriber that does not poll at all) losses
    /// of different causes merge too, under the slow-consumer cause, so the queue stays
    /// bounded by the sessions heard.
    fn note_loss(&mut self, loss: Loss) {
        let fold = self.pending.len() >= PENDING_FOLD;
        let last_of_session = self
            .pending
            .iter_mut()
            .rev()
            .find(|p| p.session() == (loss.session, loss.source));
        if let Some(Pending::Loss(last)) = last_of_session {
            if (last.reason == loss.reason || fold) && last.to_seq <= loss.from_seq {
                if last.reason != loss.reason && loss.reason != LossReason::Network {
                    last.reason = loss.reason;
                }
                last.to_seq = loss.to_seq;
                return;
            }
        }
        self.pending.push_back(Pending::Loss(loss));
    }

    fn deliver_event(&mut self, ev: Pending, shared: &Shared) {
        if self.hand_to_handler(&ev) {
            return;
        }
        let waiting = self.pending.len() + self.latest.order.len();
        if matches!(ev, Pending::Session(_)) && waiting >= PENDING_MAX && !self.flush() {
            shared.counters.rx.events_dropped.add(1);
            return;
        }
        match ev {
            _ if self.entry.policy == SlowConsumerPolicy::Conflate => self.latest.push_event(ev),
            Pending::Loss(l) => self.note_loss(l),
            _ => self.pending.push_back(ev),
        }
        self.flush();
    }

    fn deliver_message(
        &mut self,
        key: SessionKey,
        seq: u64,
        (topic, payload): (&str, &[u8]),
        snapshot: bool,
        shared: &Shared,
    ) {
        if let Some(h) = self.entry.handler.as_mut() {
            // Zero copies: the handler reads the message in the receive buffer.
            h(Event::Message(Message {
                topic,
                payload,
                session: key.session,
                source: key.source,
                seq,
                snapshot,
            }));
            return;
        }
        let len = delivery::message_len(topic, payload);
        let c = &shared.counters.rx;
        let loss = |reason| Loss {
            session: key.session,
            source: key.source,
            from_seq: seq,
            to_seq: seq + 1,
            reason,
        };
        if len > self.entry.ring.max_record() {
            // can never fit this subscription's ring
            c.ring_full_drops.add(1);
            self.deliver_event(Pending::Loss(loss(LossReason::SlowConsumer)), shared);
            return;
        }
        if self.flush() {
            if let Some(mut claim) = self.entry.ring.try_claim(len) {
                delivery::write_message(&mut claim, key, seq, topic, payload, snapshot);
                claim.commit();
                return;
            }
        }
        match self.entry.policy {
            SlowConsumerPolicy::BackPressure => self.pending.push_back(Pending::Message {
                key,
                seq,
                topic: topic.to_string(),
                payload: payload.to_vec(),
                snapshot,
            }),
            SlowConsumerPolicy::Drop => {
                c.ring_full_drops.add(1);
                self.note_loss(loss(LossReason::SlowConsumer));
            }
            SlowConsumerPolicy::Conflate => {
                if self.latest.live >= CONFLATED_MAX && !self.latest.has(key, topic) {
                    c.ring_full_drops.add(1);
                    self.deliver_event(Pending::Loss(loss(LossReason::SlowConsumer)), shared);
                } else if self.latest.put(key, seq, topic, payload) {
                    c.conflated.add(1);
                }
            }
            SlowConsumerPolicy::Disconnect => {
                if !self.resyncing {
                    // Too slow: ask the subscriber to throw its backlog away and start
                    // again at the live position.
                    self.resyncing = true;
                    self.entry.resync.store(true, Ordering::Release);
                    c.slow_disconnects.add(1);
                }
                c.disconnect_skipped.add(1);
                self.note_loss(loss(LossReason::Disconnected));
            }
        }
    }
}

/// Registers subscriptions created since the last look.
fn adopt(subs: &mut Vec<Subscription>, shared: &Shared) -> usize {
    let mut n = 0;
    while let Some(entry) = super::next_queued(&shared.new_subscriptions) {
        subs.push(Subscription::new(entry));
        n += 1;
    }
    n
}

fn dispatch(
    subs: &mut [Subscription],
    shared: &Shared,
    direct: &mut Option<&mut Direct<'_>>,
    d: Delivery<'_>,
) {
    let ev = match d {
        Delivery::Message {
            from,
            seq,
            topic,
            payload,
            expires,
            snapshot,
        } => {
            if expires.is_some_and(|e| e < crate::stats_file::now_us()) {
                // Past its time to live: dropped for everyone, counted, and
                // reported to the subscriptions that wanted it.
                shared.counters.rx.expired.add(1);
                let ev = Pending::Loss(Loss {
                    session: from.session,
                    source: from.source,
                    from_seq: seq,
                    to_seq: seq + 1,
                    reason: LossReason::Expired,
                });
                hand_event(
                    subs.iter_mut().filter(|s| s.matches(topic)),
                    direct,
                    &ev,
                    shared,
                );
                return;
            }
            let mut matched = false;
            for s in subs.iter_mut().filter(|s| s.matches(topic)) {
                matched = true;
                if let Some(dr) = direct.as_deref_mut() {
                    let m = Message {
                        topic,
                        payload,
                        session: from.session,
                        source: from.source,
                        seq,
                        snapshot,
                    };
                    if dr.take(s, Event::Message(m)) {
                        continue;
                    }
                }
                s.deliver_message(from, seq, (topic, payload), snapshot, shared);
            }
            if !matched {
                shared.counters.rx.unmatched.add(1);
            }
            return;
        }
        Delivery::Loss {
            from,
            from_seq,
            to_seq,
        } => Pending::Loss(Loss {
            session: from.session,
            source: from.source,
            from_seq,
            to_seq,
            reason: LossReason::Network,
        }),
        Delivery::Joined { from } => session_event(from, SessionState::Joined),
        Delivery::Gone { from } => session_event(from, SessionState::Gone),
    };
    // What was lost cannot be filtered by topic, nor can a publisher's coming and
    // going: every subscription hears them.
    hand_event(subs.iter_mut(), direct, &ev, shared);
}

/// Hands `ev` to each of `subs`: straight to a direct poller that takes it, else
/// through the subscription's queue.
fn hand_event<'s>(
    subs: impl Iterator<Item = &'s mut Subscription>,
    direct: &mut Option<&mut Direct<'_>>,
    ev: &Pending,
    shared: &Shared,
) {
    for s in subs {
        if let Some(dr) = direct.as_deref_mut() {
            if dr.take(s, ev.event()) {
                continue;
            }
        }
        s.deliver_event(ev.clone(), shared);
    }
}

fn session_event(from: SessionKey, state: SessionState) -> Pending {
    Pending::Session(SessionEvent {
        session: from.session,
        source: from.source,
        state,
    })
}

/// Bytes a receiver lets pass between two status messages to a sending publisher at
/// most (a quarter of its window when that is less). Publishers keep
/// `retransmit_window` bytes (1 MiB by default) and never run further ahead of their
/// slowest receiver than that: the status must come well before, and one lost
/// status must not stall it (the next comes at 768 KiB). Every status costs both
/// nodes syscalls: measured side by side at 100k msg/s of 1 KB messages (one per
/// datagram, so the cadence is every 6 datagrams of a 15-datagram window), every
/// 256 KiB cost the subscriber ~650 ns per message more than every 512 KiB.
const STATUS_EVERY_BYTES: usize = 384 << 10;

/// [`STATUS_EVERY_BYTES`] in datagrams of `max_payload` (publishers count their
/// window in datagrams of the same size).
fn status_every(max_payload: usize) -> u32 {
    u32::try_from((STATUS_EVERY_BYTES / max_payload.max(1)).max(2)).unwrap_or(u32::MAX)
}

pub(crate) struct ReceiverAgent {
    backend: Option<Box<dyn RxBackend>>,
    control: Option<Socket>,
    window: u32,
    id: u64,
    /// Flow-control tag put in every status message (0 = untagged).
    tag: u32,
    proto: Receiver,
    subs: Vec<Subscription>,
    batch: usize,
    max_payload: usize,
    /// Publishers' control port (the data port + 1): where NAKs and status go by
    /// unicast, at each publisher's own address.
    control_port: u16,
    /// With a group key: opens what arrives, seals the NAKs and status sent.
    guard: Option<crate::seal::Guard>,
    /// `LocalTransport::Auto`: the sessions read over IPC instead (their datagrams
    /// are dropped).
    local: Option<crate::ipc::LocalSessions>,
    /// The most messages a datagram carried lately (at least 1, decaying by an
    /// eighth per receive): a direct poller's receive is sized by it.
    per_datagram: usize,
}

/// `plain` as it goes out: sealed with the group key when there is one.
fn sealed<'a>(guard: &'a mut Option<crate::seal::Guard>, plain: &'a [u8]) -> &'a [u8] {
    match guard {
        Some(g) => g.seal_one(plain).unwrap_or_default(),
        None => plain,
    }
}

/// Sends a NAK or status: to the group's control address, or (unicast) to the
/// publisher's own.
fn send_control(
    sock: &Socket,
    unicast: bool,
    to: SocketAddrV4,
    buf: &[u8],
) -> std::io::Result<usize> {
    if unicast {
        sock.send_to(buf, &to.into())
    } else {
        sock.send(buf)
    }
}

impl ReceiverAgent {
    pub(crate) fn new(config: &crate::config::Config, max_payload: usize) -> Self {
        ReceiverAgent {
            per_datagram: 1,
            backend: None,
            control: None,
            window: 1,
            id: super::random_u64(),
            tag: config.receiver_tag,
            proto: Receiver::new(crate::proto::ReceiverConfig {
                max_message: config.max_message,
                max_sessions: config.max_sessions,
                reliable: config.reliable,
                nak_delay: config.nak_delay,
                nak_interval: config.nak_interval,
                nak_retries: config.nak_retries,
                seed: super::random_u64(),
                publisher_timeout: config.publisher_timeout,
                status_every: status_every(max_payload),
                network: config.network_id(),
                // Twice the largest window a publisher with this node's settings
                // keeps, and never less than the default.
                max_jump: (2 * (config.retransmit_window / max_payload.max(1)) as u64)
                    .max(crate::proto::ReceiverConfig::default().max_jump),
                // Room for a few of the largest messages at once.
                reassembly_bytes: crate::proto::ReceiverConfig::default()
                    .reassembly_bytes
                    .max(config.max_message.saturating_mul(4)),
                ..Default::default()
            }),
            subs: Vec::new(),
            batch: config.batch,
            max_payload,
            control_port: config.group.port().saturating_add(1),
            guard: config
                .keys
                .as_ref()
                .map(|k| crate::seal::Guard::new(k, max_payload, 1)),
            local: (config.local_transport == crate::config::LocalTransport::Auto).then(|| {
                crate::ipc::LocalSessions::new(
                    config.ipc_dir.clone(),
                    crate::ipc::log_prefix(config.group, config.network_id()),
                    config.max_sessions,
                )
            }),
        }
    }

    pub(crate) fn has_backend(&self) -> bool {
        self.backend.is_some()
    }

    /// When the protocol receiver's next timer (NAK, give-up, liveness) is due.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.proto.poll_timeout()
    }

    /// Datagrams that may be read now without overrunning a back-pressure
    /// subscription: each needs room for about twice its size (record headers and
    /// wrap padding); an empty ring always takes one.
    fn room(&mut self) -> usize {
        let per = 2 * self.max_payload + 64;
        let mut n = self.batch;
        for s in self.subs.iter_mut() {
            if s.entry.policy == SlowConsumerPolicy::BackPressure && s.entry.handler.is_none() {
                let free = s.entry.ring.free_bytes();
                let fits = if s.has_backlog() {
                    0 // what is queued goes first
                } else if free == s.entry.ring.capacity() {
                    (free / per).max(1)
                } else {
                    free / per
                };
                n = n.min(fits);
            }
        }
        n
    }

    fn send_naks(&mut self, shared: &Shared) {
        let (Some(sock), id) = (self.control.as_ref(), self.id) else {
            return;
        };
        let c = &shared.counters.rx;
        let network = self.proto.network();
        let (unicast, port) = (shared.unicast.is_active(), self.control_port);
        let guard = &mut self.guard;
        self.proto.poll_nak(&mut |key, from, to| {
            let mut buf = [0u8; NAK_LEN];
            Nak {
                session: key.session,
                from,
                to,
                receiver: id,
            }
            .encode(&mut buf);
            crate::wire::stamp_network(&mut buf, network);
            let dest = SocketAddrV4::new(*key.source.ip(), port);
            match send_control(sock, unicast, dest, sealed(guard, &buf)) {
                Ok(_) => c.naks_sent.add(1),
                Err(e) => tracing::debug!(error = %e, "NAK send failed"),
            }
        });
    }

    fn send_status(&mut self, now: Instant, shared: &Shared) {
        let (Some(sock), id, tag) = (self.control.as_ref(), self.id, self.tag) else {
            return;
        };
        let c = &shared.counters.rx;
        let network = self.proto.network();
        let (unicast, port) = (shared.unicast.is_active(), self.control_port);
        let guard = &mut self.guard;
        self.proto
            .poll_status(now, self.window, &mut |key, next_seq, window, snapshot| {
                let mut buf = [0u8; STATUS_LEN];
                Status {
                    session: key.session,
                    receiver: id,
                    next_seq,
                    window,
                    tag,
                    snapshot,
                }
                .encode(&mut buf);
                crate::wire::stamp_network(&mut buf, network);
                let dest = SocketAddrV4::new(*key.source.ip(), port);
                match send_control(sock, unicast, dest, sealed(guard, &buf)) {
                    Ok(_) => c.status_sent.add(1),
                    Err(e) => tracing::debug!(error = %e, "status send failed"),
                }
            });
    }

    /// One duty cycle; may block up to `block` waiting for the first datagram.
    pub(crate) fn do_work(&mut self, shared: &Shared, block: Option<Duration>) -> usize {
        self.cycle(shared, block, None)
    }

    /// A duty cycle run by a poller (inline threading) that takes its own events
    /// directly (see [`Direct`]).
    pub(crate) fn cycle(
        &mut self,
        shared: &Shared,
        block: Option<Duration>,
        mut direct: Option<&mut Direct<'_>>,
    ) -> usize {
        let mut work = 0;
        while let Some(cmd) = super::next_queued(&shared.rx_commands) {
            work += 1;
            match cmd {
                ReceiverCommand::Backend {
                    backend,
                    control,
                    window,
                } => {
                    self.backend = Some(backend);
                    self.control = Some(control);
                    self.window = window;
                }
            }
        }
        work += adopt(&mut self.subs, shared);
        if let Some(d) = direct.as_deref_mut() {
            d.open();
        }
        if self.backend.is_none() {
            if let Some(d) = block {
                std::thread::park_timeout(d);
            }
            return work;
        }
        let c: &ReceiverCounters = &shared.counters.rx;
        let mut room = self.room();
        if let Some(d) = direct.as_deref().filter(|d| d.open) {
            // A direct poller takes at most `limit` events; what a bigger receive
            // brings goes through its ring (a copy in, a copy out). Receive what it
            // will take, by the fullest datagram of the last receive.
            let left = d.limit.saturating_sub(d.taken);
            room = room.min((left / self.per_datagram).max(1));
        }
        let mut most = 0u64;
        if room == 0 {
            // Nothing may be read until a subscriber polls: wait as the idle strategy
            // asked (the subscriber's progress is seen at the next look), but not past
            // a protocol timer.
            c.back_pressured.add(1);
            if let Some(d) = block {
                let until = self
                    .proto
                    .poll_timeout()
                    .map_or(d, |t| t.saturating_duration_since(Instant::now()).min(d));
                std::thread::park_timeout(until);
            }
        } else if let Some(backend) = self.backend.as_mut() {
            let (proto, subs, guard, local) = (
                &mut self.proto,
                &mut self.subs,
                &mut self.guard,
                &mut self.local,
            );
            let got = backend.recv_batch(room, block, &mut |bytes, source| {
                let bytes = match guard.as_mut() {
                    Some(g) => match g.open(bytes, c) {
                        Some(plain) => plain,
                        None => return, // refused (counted) before any state changed
                    },
                    None => bytes,
                };
                // (the header is decoded here only when some sessions are local)
                if let Some(l) = local.as_mut() {
                    if let Ok(h) = crate::wire::Header::decode(bytes) {
                        if l.is_local(h.session) {
                            // Its messages come from its IPC logs.
                            c.ipc_skipped.add(1);
                            return;
                        }
                    }
                }
                adopt(subs, shared);
                // Stamped when it came off the socket: the receive may have blocked.
                let now = Instant::now();
                // Malformed datagrams are counted inside the receiver and dropped here.
                let before = proto.counters().messages;
                let _ = proto.handle_datagram(now, source, bytes, &mut |d| {
                    dispatch(subs, shared, &mut direct, d)
                });
                most = most.max(proto.counters().messages.saturating_sub(before));
            });
            if most > 0 {
                // The fullest datagram seen lately: a receive of small ones (a burst's
                // first message goes alone) lowers it only slowly.
                let most = usize::try_from(most).unwrap_or(usize::MAX);
                self.per_datagram = most.max(self.per_datagram - self.per_datagram / 8);
            }
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
            c.truncated.set(backend.truncated());
            let f = backend.injected();
            c.injected_dropped.set(f.dropped);
            c.injected_duplicated.set(f.duplicated);
            c.injected_reordered.set(f.reordered);
            c.injected_delayed.set(f.delayed);
        }
        let now = Instant::now();
        while let Some(n) = shared.heard_naks.pop() {
            // our own NAKs come back too (multicast loop): those are not news
            if n.receiver != self.id {
                self.proto.on_nak_heard(now, n.session, n.from, n.to);
            }
        }
        if self.proto.poll_timeout().is_some_and(|t| t <= now) {
            let (proto, subs) = (&mut self.proto, &mut self.subs);
            proto.handle_timeout(now, &mut |d| dispatch(subs, shared, &mut direct, d));
        }
        self.send_naks(shared);
        self.send_status(now, shared);
        // Retry losses owed to subscriptions whose rings were full.
        for s in self.subs.iter_mut().filter(|s| s.has_backlog()) {
            s.flush();
        }
        if shared.wakeable_subscribers.load(Ordering::Relaxed) > 0 {
            // What this cycle committed is visible before we look who waits (see
            // `notify`).
            notify::before_wakes();
            for s in &self.subs {
                let n = &s.entry.notify;
                if n.armed() && !s.entry.ring.is_empty() {
                    n.wake();
                }
            }
        }
        let before = self.subs.len();
        self.subs
            .retain(|s| !s.entry.closed.load(Ordering::Acquire));
        work += before - self.subs.len();
        let pc = self.proto.counters();
        c.datagrams.set(pc.datagrams);
        c.messages.set(pc.messages);
        c.bytes.set(pc.bytes);
        c.gaps.set(pc.gaps);
        c.lost_datagrams.set(pc.lost_datagrams);
        c.lost_messages.set(pc.lost_messages);
        c.duplicates.set(pc.duplicates);
        c.snapshot_messages.set(pc.snapshot_messages);
        c.before_snapshot.set(pc.before_snapshot);
        c.snapshot_timeouts.set(pc.snapshot_timeouts);
        c.reassembly_refused.set(pc.reassembly_refused);
        c.implausible.set(pc.implausible);
        c.malformed.set(pc.malformed);
        c.foreign.set(pc.foreign);
        c.sessions.set(pc.sessions);
        c.reordered.set(pc.reordered);
        c.lost_nak_timeout.set(pc.lost_nak_timeout);
        c.lost_beyond_window.set(pc.lost_beyond_window);
        c.lost_reorder_full.set(pc.lost_reorder_full);
        c.repaired.set(pc.repaired);
        c.naks_suppressed.set(pc.naks_suppressed);
        c.sessions_gone.set(pc.sessions_gone);
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn key(session: u32) -> SessionKey {
        SessionKey {
            source: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            session,
        }
    }

    fn drain(c: &mut Conflation) -> Vec<(u32, String, u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(head) = c.front() {
            let Head::Message(l) = head else {
                panic!("no events were queued")
            };
            let k = l.key.expect("live slot");
            out.push((k.session, l.topic.clone(), l.seq, l.payload.clone()));
            c.pop_front();
        }
        out
    }

    #[test]
    fn topics_match_by_prefix_any_of_several() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(topic_matches(&p(&["/md/"]), "/md/EURO"));
        assert!(topic_matches(&p(&["/x/", "/md/E"]), "/md/EURO"));
        assert!(topic_matches(&p(&[""]), "anything"));
        assert!(!topic_matches(&p(&["/md/"]), "/m"));
        assert!(!topic_matches(&p(&["/md/EURO/"]), "/md/EURO"));
        assert!(!topic_matches(&[], "/md/EURO"));
    }

    #[test]
    fn conflation_keeps_the_newest_per_session_and_topic_in_update_order() {
        let mut c = Conflation::default();
        assert!(!c.put(key(1), 0, "/a", b"a0"));
        assert!(!c.put(key(1), 1, "/b", b"b1"));
        assert!(!c.put(key(2), 0, "/a", b"x0"));
        assert!(c.put(key(1), 2, "/a", b"a2"), "replaces /a of session 1");
        let got = drain(&mut c);
        assert_eq!(
            got,
            vec![
                (1, "/b".into(), 1, b"b1".to_vec()),
                (2, "/a".into(), 0, b"x0".to_vec()),
                (1, "/a".into(), 2, b"a2".to_vec()),
            ]
        );
        assert!(c.is_empty());
        // slots are reused; a delivered topic starts afresh
        assert!(!c.put(key(1), 3, "/a", b"a3"));
        assert_eq!(drain(&mut c), vec![(1, "/a".into(), 3, b"a3".to_vec())]);
        assert_eq!(c.slots.len(), 3);
    }

    #[test]
    fn many_topics_and_updates_stay_bounded() {
        let mut c = Conflation::default();
        let topics: Vec<String> = (0..1000).map(|i| format!("/px/{i}")).collect();
        for round in 0..50u64 {
            for (i, t) in topics.iter().enumerate() {
                c.put(key(1), round * 1000 + i as u64, t, &round.to_le_bytes());
            }
        }
        assert_eq!(c.live, 1000);
        assert!(c.order.len() <= 2 * 1000 + 64, "stale entries compacted");
        let got = drain(&mut c);
        assert_eq!(got.len(), 1000);
        // the newest of each, in the order they were last updated
        for (i, (_, t, seq, p)) in got.iter().enumerate() {
            assert_eq!((t, *seq), (&topics[i], 49_000 + i as u64));
            assert_eq!(p, &49u64.to_le_bytes());
        }
    }

    #[test]
    fn events_wait_their_turn_behind_conflated_messages() {
        let mut c = Conflation::default();
        c.put(key(1), 0, "/a", b"a0");
        c.push_event(Pending::Session(SessionEvent {
            session: 1,
            source: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            state: SessionState::Gone,
        }));
        c.put(key(1), 1, "/b", b"b1");
        c.put(key(1), 2, "/a", b"a2"); // newer /a: now behind the event
        let mut seen = Vec::new();
        while let Some(head) = c.front() {
            seen.push(match head {
                Head::Message(l) => format!("{}@{}", l.topic, l.seq),
                Head::Event(_) => "gone".to_string(),
            });
            c.pop_front();
        }
        assert_eq!(seen, ["gone", "/b@1", "/a@2"]);
        assert!(c.is_empty());
    }

    /// A subscription (agent side) and its subscriber over a ring of `ring` bytes.
    fn pair(
        policy: SlowConsumerPolicy,
        ring: usize,
    ) -> (Subscription, crate::Subscriber, Arc<Shared>) {
        let shared = Arc::new(Shared::new(super::super::StatsBase {
            backend: crate::io::BackendReport {
                kind: crate::io::BackendKind::Mmsg,
                reason: "test".into(),
                multishot: false,
                offload: Default::default(),
            },
            max_payload: 1472,
            sndbuf: 0,
            threading: super::super::threading::resolve(
                crate::ThreadingMode::Dedicated,
                crate::IdleStrategy::Park,
                2,
            ),
        }));
        let (producer, consumer) = crate::ring::byte_ring(ring);
        let closed = Arc::new(AtomicBool::new(false));
        let resync = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(super::super::notify::Notify::default());
        let sub = Subscription::new(SubscriptionEntry {
            prefixes: vec![String::new()],
            policy,
            ring: producer,
            closed: closed.clone(),
            resync: resync.clone(),
            handler: None,
            notify: notify.clone(),
        });
        let subscriber =
            crate::Subscriber::new(consumer, shared.clone(), closed, resync, notify, Vec::new());
        (sub, subscriber, shared)
    }

    fn owned(ev: crate::Event<'_>) -> String {
        match ev {
            crate::Event::Message(m) => format!("{}:m{}", m.session(), m.seq()),
            crate::Event::Loss(l) => format!(
                "{}:loss {}..{} {:?}",
                l.session, l.from_seq, l.to_seq, l.reason
            ),
            crate::Event::Session(e) => format!("{}:{:?}", e.session, e.state),
        }
    }

    #[test]
    fn disconnect_resync_hands_out_every_loss_one_poll_at_a_time() {
        let (mut sub, mut subscriber, shared) = pair(SlowConsumerPolicy::Disconnect, 4096);
        let payload = [0u8; 100];
        // two sessions interleaved until the ring overflows, then some more
        for seq in 0..40u64 {
            for s in [1, 2] {
                sub.deliver_message(key(s), seq, ("/t", &payload), false, &shared);
            }
        }
        assert!(sub.resyncing);
        // one event per call, as `recv` takes them
        let mut got = Vec::new();
        for _ in 0..100 {
            let mut n = 0;
            subscriber.poll(1, |ev| {
                got.push(owned(ev));
                n += 1;
            });
            assert!(n <= 1);
            sub.flush();
        }
        // every message of both sessions is either lost (Disconnected) or delivered,
        // exactly once, in order per session
        for s in [1u32, 2] {
            let mut next = 0;
            for e in got.iter().filter(|e| e.starts_with(&format!("{s}:"))) {
                let rest = &e[2..];
                if let Some(m) = rest.strip_prefix('m') {
                    assert_eq!(m.parse::<u64>().unwrap(), next, "{got:?}");
                    next += 1;
                } else {
                    let r = rest.strip_prefix("loss ").unwrap();
                    assert!(r.ends_with("Disconnected"), "{r}");
                    let (a, b) = r.split(' ').next().unwrap().split_once("..").unwrap();
                    assert_eq!(a.parse::<u64>().unwrap(), next, "{got:?}");
                    next = b.parse().unwrap();
                }
            }
            assert_eq!(next, 40, "session {s}: {got:?}");
        }
    }

    #[test]
    fn conflate_reports_an_oversized_message_in_line() {
        let (mut sub, mut subscriber, shared) = pair(SlowConsumerPolicy::Conflate, 4096);
        let small = [0u8; 100];
        let big = vec![0u8; 8192];
        let mut seq = 0;
        while sub.latest.is_empty() {
            sub.deliver_message(key(1), seq, ("/a", &small), false, &shared);
            seq += 1;
        }
        let waiting = seq - 1; // /a@waiting is conflated, waiting for room
        sub.deliver_message(key(1), seq, ("/big", &big), false, &shared);
        sub.deliver_message(key(1), seq + 1, ("/b", &small), false, &shared);
        let mut got = Vec::new();
        for _ in 0..50 {
            subscriber.poll(1024, |ev| got.push(owned(ev)));
            sub.flush();
        }
        let tail: Vec<&String> = got.iter().rev().take(3).rev().collect();
        assert_eq!(
            tail,
            [
                &format!("1:m{waiting}"),
                &format!("1:loss {seq}..{} SlowConsumer", seq + 1),
                &format!("1:m{}", seq + 1)
            ],
            "{got:?}"
        );
    }

    #[test]
    fn a_subscriber_that_never_polls_keeps_the_queue_bounded() {
        let (mut sub, _subscriber, shared) = pair(SlowConsumerPolicy::Drop, 4096);
        let payload = [0u8; 100];
        let mut seq = 0;
        for _ in 0..10_000 {
            // a slow-consumer drop, then a network gap, over and over
            sub.deliver_message(key(1), seq, ("/t", &payload), false, &shared);
            sub.deliver_event(
                Pending::Loss(Loss {
                    session: 1,
                    source: key(1).source,
                    from_seq: seq + 1,
                    to_seq: seq + 2,
                    reason: LossReason::Network,
                }),
                &shared,
            );
            seq += 2;
        }
        assert!(
            sub.pending.len() <= PENDING_FOLD + 1,
            "{}",
            sub.pending.len()
        );
    }

    #[test]
    fn made_up_sessions_cannot_grow_a_silent_subscribers_queue() {
        let (mut sub, _subscriber, shared) = pair(SlowConsumerPolicy::Drop, 4096);
        let payload = [0u8; 100];
        // fill the ring so that nothing more is written
        for seq in 0..1000 {
            sub.deliver_message(key(1), seq, ("/t", &payload), false, &shared);
        }
        for session in 0..(PENDING_MAX as u32 + 5000) {
            for state in [SessionState::Joined, SessionState::Gone] {
                sub.deliver_event(session_event(key(session), state), &shared);
            }
        }
        assert!(sub.pending.len() <= PENDING_MAX, "{}", sub.pending.len());
        assert!(shared.counters.rx.events_dropped.get() > 0);
    }
}
