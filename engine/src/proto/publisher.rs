//! Publisher side of a session as one sans-IO state machine: the counterpart of
//! [`Receiver`](super::Receiver). No sockets, no clock, no threads: the caller passes
//! the time in, offers messages with [`Publisher::offer`], feeds what arrives on the
//! control port to [`Publisher::handle_control`], calls [`Publisher::handle_timeout`]
//! when [`Publisher::poll_timeout`] says, and hands the datagrams
//! [`Publisher::poll_transmit`] yields to the kernel.
//!
//! It owns everything the publishing side decides:
//! - the stream ([`SenderStream`]): packing, numbering, fragmentation;
//! - the datagram pool, a ring of buffers: `pool[head]` is being filled, the `unsent`
//!   before it are sealed and wait for the next transmit, the rest hold sent datagrams.
//!   A sent buffer keeps its datagram until the ring comes round again, so the pool
//!   *is* the retransmit window and a retransmission costs no copy;
//! - flow control ([`FlowControl`]): a datagram never starts past the limit the
//!   receivers' status messages set; a message wider than the window goes once
//!   everything before it was received, so it can never wait forever;
//! - the rate limit ([`RateLimiter`]), charged with every datagram sealed and every
//!   retransmission (retransmissions are never held back: new data waits for them);
//! - repair ([`Retransmitter`]): a NAK queues retransmissions within a budget per
//!   transmit; what a budget leaves is resumed at the next timeout, batch after
//!   batch; a NAK for data no longer held makes a heartbeat go at once, so the
//!   receiver reports the loss now instead of asking on and on;
//! - heartbeats: an idle session sends one after `heartbeat_interval`, then backs off
//!   (doubling) to `max_heartbeat_interval`; data resets the interval.
//!
//! Timers live in a small typed table ([`Timer`]) rather than loose options.

// Parts of the API serve only drivers that are not built in every configuration
// (the simulator, the inline threading mode).
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::last_value::{LastValues, Value};
use super::{Append, DatagramBuf, FlowControl, RateLimiter, Retransmitter, SenderStream};
use crate::config::FlowControlStrategy;
use crate::wire::{Control, Header, Nak, WireError, HEARTBEAT_LEN, SNAPSHOT, SNAPSHOT_FIRST};

/// Largest number of datagrams in one transmit (the I/O layer's batch limit).
pub const MAX_BATCH: usize = 256;
/// Fewest buffers in the datagram pool (the window of datagrams kept is one fewer).
pub const MIN_POOL: usize = 4;
/// How long a new session waits at most for a first receiver's status once it has
/// filled its retransmit window (see [`FlowControl::with_startup`]).
pub const STARTUP_GRACE: Duration = Duration::from_millis(100);

/// How a publishing session behaves.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The session id carried in every datagram.
    pub session: u32,
    /// The network ID carried in every datagram; control messages of other networks
    /// are ignored (counted).
    pub network: u32,
    /// Largest datagram built.
    pub max_payload: usize,
    /// Keep sent datagrams for retransmission and answer NAKs.
    pub reliable: bool,
    /// Datagrams per transmit (1..=[`MAX_BATCH`]).
    pub batch: usize,
    /// Bytes of sent datagrams kept for retransmission (at least [`MIN_POOL`]
    /// buffers; a batch is at most half the pool).
    pub retransmit_window: usize,
    /// Retransmissions per transmit at most.
    pub retransmit_budget: usize,
    /// A datagram retransmitted this recently is not sent again for another NAK.
    pub retransmit_linger: Duration,
    /// First heartbeat after the last data.
    pub heartbeat_interval: Duration,
    /// Heartbeats back off to this interval while the session stays idle.
    pub max_heartbeat_interval: Duration,
    /// Whose windows hold the session back.
    pub flow_control: FlowControlStrategy,
    /// A receiver silent this long no longer holds the session back.
    pub receiver_timeout: Duration,
    /// A new session keeps within its retransmit window until a receiver's first
    /// status, or for this long at most (see [`FlowControl::with_startup`]).
    pub startup_grace: Duration,
    /// Bytes per second at most (bursts of a batch or 1 ms worth, whichever is larger).
    pub rate_limit: Option<u64>,
    /// Retransmitted bytes allowed per 100 bytes of data sent (see [`RepairBudget`]).
    pub repair_share: u32,
}

impl PublisherConfig {
    /// The defaults of a node, for `session` sending datagrams of `max_payload` bytes.
    pub fn new(session: u32, max_payload: usize) -> Self {
        PublisherConfig {
            session,
            network: 0,
            max_payload,
            reliable: true,
            batch: 32,
            retransmit_window: 4 << 20,
            retransmit_budget: MAX_BATCH,
            retransmit_linger: Duration::from_micros(500),
            heartbeat_interval: Duration::from_millis(1),
            max_heartbeat_interval: Duration::from_millis(100),
            flow_control: FlowControlStrategy::default(),
            receiver_timeout: Duration::from_secs(1),
            startup_grace: STARTUP_GRACE,
            rate_limit: None,
            repair_share: 100,
        }
    }

    /// Buffers in the datagram pool (the one being filled included).
    pub fn pool_slots(&self) -> usize {
        (self.retransmit_window / self.max_payload.max(1)).max(MIN_POOL)
    }

    /// Datagrams per transmit: the configured batch, at most half the pool (the
    /// datagrams waiting for a transmit are never the ones kept for retransmission).
    pub fn effective_batch(&self) -> usize {
        self.batch.clamp(1, MAX_BATCH).min(self.pool_slots() / 2)
    }

    /// The burst the rate limit allows at `rate` bytes per second.
    pub fn rate_burst(&self, rate: u64) -> u64 {
        let batch = self.effective_batch() as u64;
        (batch * self.max_payload as u64).max(rate / 1000)
    }
}

/// Why [`Publisher::offer`] did not take a message. The message stays with the
/// caller (in its ring) and is offered again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// A receiver's window (or the retransmit window) holds the session back: wait for
    /// a status message.
    #[error("held back by flow control")]
    FlowControl,
    /// The rate limit holds the session back until
    /// [`Publisher::rate_ready_at`] (also a [`Timer::RateLimit`] timeout).
    #[error("held back by the rate limit")]
    RateLimit,
    /// A batch of sealed datagrams waits: call [`Publisher::poll_transmit`], then offer
    /// the same message again. A message being fragmented goes on where it stopped.
    #[error("a batch waits to be transmitted")]
    Transmit,
}

/// What a batch handed out by [`Publisher::poll_transmit`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// New data datagrams, in sequence order.
    Data,
    /// Datagrams sent again for NAKs (straight from the retransmit window).
    Retransmit,
    /// One heartbeat.
    Heartbeat,
}

/// What [`Publisher::handle_control`] made of a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// A status for this session (flow control updated).
    Status,
    /// A NAK for this session (retransmissions queued, or a heartbeat when the data is
    /// no longer held).
    Nak,
    /// A NAK for another session on the group: a receiver of it may hold its own NAK
    /// back (suppression).
    OtherNak(Nak),
    /// A status for another session.
    Other,
}

/// What one [`Publisher::poll_transmit`] handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transmitted {
    /// New data datagrams.
    pub data: usize,
    /// Retransmitted datagrams.
    pub retransmits: usize,
    /// Heartbeats.
    pub heartbeats: usize,
}

/// The publisher's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The next heartbeat of an idle session.
    Heartbeat = 0,
    /// The next receiver to be forgotten for silence.
    ReceiverExpiry = 1,
    /// The rate limit lets the next datagram go.
    RateLimit = 2,
    /// Resume what a retransmit budget left of NAKed ranges.
    Resume = 3,
}

const TIMERS: [Timer; 4] = [
    Timer::Heartbeat,
    Timer::ReceiverExpiry,
    Timer::RateLimit,
    Timer::Resume,
];

/// One deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
struct TimerTable([Option<Instant>; 4]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn clear(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    /// Clears `t` and returns true when it is due at `now`.
    fn expire(&mut self, t: Timer, now: Instant) -> bool {
        if self.get(t).is_some_and(|at| at <= now) {
            self.clear(t);
            return true;
        }
        false
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// Counters kept by the publisher (mirrored by the agent into the node's stats).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublisherCounters {
    /// Data datagrams accepted by the kernel.
    pub datagrams: u64,
    /// Bytes of those.
    pub bytes: u64,
    /// Messages taken.
    pub messages: u64,
    /// Messages sent in fragments.
    pub fragmented: u64,
    /// Datagrams (data or retransmitted) the kernel refused.
    pub send_errors: u64,
    /// Status messages for this session.
    pub status_received: u64,
    /// Control messages that did not decode.
    pub control_malformed: u64,
    /// Control messages of another network ID, ignored.
    pub control_foreign: u64,
    /// NAKs for this session.
    pub naks_received: u64,
    /// Datagrams retransmitted.
    pub retransmits: u64,
    /// Bytes of those.
    pub retransmit_bytes: u64,
    /// NAK ranges cut to [`MAX_NAK_SPAN`] datagrams (the amplification ceiling).
    pub nak_clamped: u64,
    /// NAKs whose retransmissions were held back by the repair budget.
    pub repair_limited: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Snapshot bursts put in the stream for late joiners.
    pub snapshots: u64,
    /// Snapshot entries sent in them.
    pub snapshot_messages: u64,
}

/// Datagrams one NAK can have retransmitted at most: a NAK (48 bytes) costs the
/// publisher at most this many datagrams, whatever range it names (a receiver asks
/// again for the rest).
pub const MAX_NAK_SPAN: u64 = 256;

/// Retransmit windows per second the repair budget refills by, whatever is sent.
pub const REFILL_PER_SEC: u128 = 4;

/// What retransmissions may cost, in bytes: a share of the data sent
/// (`repair_share` bytes per 100), kept in a bucket no larger than the retransmit
/// window (which it starts with); it also refills by [`REFILL_PER_SEC`] windows per
/// second, so a repair never waits for data that is not coming (an idle publisher's
/// tail, or a session that flow control holds back until the repair is done). Over
/// a session, retransmitted bytes stay below one window + `repair_share`% of the
/// data + four windows per second: a NAK storm gets no more than that.
#[derive(Debug)]
pub struct RepairBudget {
    tokens: u64,
    cap: u64,
    share: u64,
    at: Instant,
}

impl RepairBudget {
    fn new(cap: u64, share: u32, now: Instant) -> Self {
        RepairBudget {
            tokens: cap,
            cap,
            share: u64::from(share),
            at: now,
        }
    }

    /// Data bytes were sent.
    fn earn(&mut self, bytes: u64) {
        let more = bytes.saturating_mul(self.share) / 100;
        self.tokens = self.tokens.saturating_add(more).min(self.cap);
    }

    /// Refills for the time passed ([`REFILL_PER_SEC`] windows per second).
    fn refill(&mut self, now: Instant) {
        let ns = now.saturating_duration_since(self.at).as_nanos();
        let more = ns.saturating_mul(u128::from(self.cap) * REFILL_PER_SEC) / 1_000_000_000;
        let more = u64::try_from(more).unwrap_or(u64::MAX);
        self.tokens = self.tokens.saturating_add(more).min(self.cap);
        self.at = now;
    }

    /// Datagrams of `size` bytes it pays for now.
    fn affordable(&self, size: u64) -> usize {
        (self.tokens / size.max(1)).min(usize::MAX as u64) as usize
    }

    /// When a datagram of `size` bytes is next affordable (`None`: never, the
    /// bucket being empty).
    fn ready_at(&self, size: u64) -> Option<Instant> {
        if self.cap == 0 {
            return None;
        }
        let short = size.saturating_sub(self.tokens);
        let ns = u128::from(short) * 1_000_000_000 / (u128::from(self.cap) * REFILL_PER_SEC);
        Some(self.at + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64))
    }
}

fn bump(c: &mut u64, n: usize) {
    *c = c.saturating_add(n as u64);
}

/// Why a heartbeat is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// The idle timer: not needed when data goes in the same transmit.
    Idle,
    /// A NAK asked for data no longer held: always goes.
    Now,
}

/// The publishing side of one session.
#[derive(Debug)]
pub struct Publisher {
    stream: SenderStream,
    flow: FlowControl,
    retransmit: Option<Retransmitter>,
    rate: Option<RateLimiter>,
    pool: Vec<DatagramBuf>,
    head: usize,
    unsent: usize,
    batch: usize,
    /// The message being fragmented: offset of its next piece, and its length.
    frag: Option<(usize, usize)>,
    /// Retransmissions queued for the next transmit (at most `budget`).
    resend: Vec<u64>,
    budget: usize,
    beat: Option<Beat>,
    /// [`announce`](Publisher::announce) was called: heartbeats go before the first
    /// message too.
    announced: bool,
    heartbeat_interval: Duration,
    max_heartbeat: Duration,
    heartbeat_every: Duration,
    timers: TimerTable,
    counters: PublisherCounters,
    /// The last-value cache (late joiners), and whether the next message goes in it.
    cache: LastValues,
    cache_next: bool,
    /// A late joiner asked for the snapshot; the burst not yet in the stream (its
    /// first entry starts a datagram of its own, flagged so a waiting receiver joins
    /// there); when the last burst began.
    snapshot_wanted: bool,
    burst: VecDeque<(String, Value)>,
    burst_first: bool,
    last_burst: Option<Instant>,
    /// What retransmissions may still cost.
    repair: RepairBudget,
    /// The largest datagram the session builds.
    max_datagram: u64,
}

/// A snapshot is sent at most this often (late joiners asking meanwhile share it).
pub const SNAPSHOT_HOLDOFF: Duration = Duration::from_millis(50);

impl Publisher {
    /// A session that starts at `now` (the rate limit's bucket starts full).
    pub fn new(cfg: PublisherConfig, now: Instant) -> Self {
        let batch = cfg.effective_batch();
        let slots = cfg.pool_slots();
        let mut flow = FlowControl::new(cfg.receiver_timeout, cfg.flow_control);
        if cfg.reliable {
            // The buffer being filled is not retained: the window is the others.
            flow = flow.with_retransmit_window(slots as u64 - 1);
            if !cfg.startup_grace.is_zero() {
                flow = flow.with_startup(now + cfg.startup_grace);
            }
        }
        let budget = cfg.retransmit_budget.clamp(1, MAX_BATCH);
        let mut timers = TimerTable::default();
        if let Some(at) = flow.next_expiry() {
            // The end of the startup grace.
            timers.set(Timer::ReceiverExpiry, at);
        }
        Publisher {
            stream: SenderStream::new(cfg.session, cfg.max_payload).with_network(cfg.network),
            flow,
            retransmit: cfg
                .reliable
                .then(|| Retransmitter::new(slots - 1, cfg.retransmit_linger)),
            rate: cfg
                .rate_limit
                .map(|rate| RateLimiter::new(rate, cfg.rate_burst(rate), now)),
            pool: (0..slots)
                .map(|_| DatagramBuf::new(cfg.max_payload))
                .collect(),
            head: 0,
            unsent: 0,
            batch,
            frag: None,
            resend: Vec::with_capacity(budget),
            budget,
            beat: None,
            announced: false,
            heartbeat_interval: cfg.heartbeat_interval,
            max_heartbeat: cfg.max_heartbeat_interval.max(cfg.heartbeat_interval),
            heartbeat_every: cfg.heartbeat_interval,
            timers,
            counters: PublisherCounters::default(),
            cache: LastValues::default(),
            cache_next: false,
            snapshot_wanted: false,
            burst: VecDeque::new(),
            burst_first: false,
            last_burst: None,
            repair: RepairBudget::new(
                (slots as u64 - 1).saturating_mul(cfg.max_payload as u64),
                cfg.repair_share,
                now,
            ),
            max_datagram: cfg.max_payload as u64,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &PublisherCounters {
        &self.counters
    }

    /// The session id.
    pub fn session(&self) -> u32 {
        self.stream.session()
    }

    /// Sequence number the next datagram will carry (sealed datagrams count).
    pub fn next_seq(&self) -> u64 {
        self.stream.next_seq()
    }

    /// Receivers currently holding a place in flow control.
    pub fn receivers(&self) -> usize {
        self.flow.receivers()
    }

    /// What hostile or confused status messages made flow control do.
    pub fn flow_counters(&self) -> super::flow::FlowCounters {
        self.flow.counters()
    }

    /// The pacing position (see [`FlowControl::acked`]).
    pub fn acked(&self) -> Option<u64> {
        self.flow.acked()
    }

    /// Live receivers the session has run past (see [`FlowControl::left_behind`]).
    pub fn left_behind(&self) -> usize {
        self.flow.left_behind(self.stream.next_seq())
    }

    /// The oldest datagram still retransmittable (`next_seq` when none is kept).
    pub fn oldest(&self) -> u64 {
        let next = self.stream.next_seq();
        self.retransmit.as_ref().map_or(next, |r| r.oldest(next))
    }

    /// When the rate limit next lets a datagram start (`None` without a limit).
    pub fn rate_ready_at(&self, now: Instant) -> Option<Instant> {
        self.rate.as_ref().map(|r| r.next_ready(now))
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to hand out now.
    pub fn has_transmit(&self) -> bool {
        self.unsent > 0
            || !self.pool[self.head].is_empty()
            || !self.resend.is_empty()
            || self.beat.is_some()
    }

    /// Whether a message is half fragmented (the same message must be offered again).
    pub fn in_message(&self) -> bool {
        self.frag.is_some()
    }

    /// Flow control holds back the next `datagrams`: the receivers it waits for are
    /// timed from now (one that never acknowledges stops pacing after the timeout).
    fn held_back(&mut self, now: Instant, datagrams: u64) {
        self.flow
            .want(now, self.stream.next_seq().saturating_add(datagrams));
        if let Some(at) = self.flow.next_expiry() {
            self.timers.set(Timer::ReceiverExpiry, at);
        }
    }

    /// Everything sealed before the unsent ones was handed out.
    fn sent_up_to(&self) -> u64 {
        self.stream.next_seq() - self.unsent as u64
    }

    /// Whether the next whole message that fits goes into a datagram already begun:
    /// such an offer reads no clock (only a new datagram consults the rate limit),
    /// so an inline caller may pass the time it last read.
    pub fn mid_datagram(&self) -> bool {
        !self.pool[self.head].is_empty() && self.frag.is_none() && !self.needs_transmit()
    }

    fn needs_transmit(&self) -> bool {
        self.unsent >= self.batch || (self.head == 0 && self.unsent > 0)
    }

    fn window_allows(&self, n: u64) -> bool {
        self.flow
            .limit()
            .is_none_or(|limit| self.stream.next_seq() + n <= limit)
    }

    fn rate_allows(&mut self, now: Instant) -> Result<(), Blocked> {
        let Some(r) = self.rate.as_mut() else {
            return Ok(());
        };
        if r.ready(now) {
            self.timers.clear(Timer::RateLimit);
            return Ok(());
        }
        let at = r.next_ready(now);
        self.timers.set(Timer::RateLimit, at);
        Err(Blocked::RateLimit)
    }

    /// Moves past the current buffer, already sealed.
    fn advance(&mut self) {
        if let Some(r) = self.rate.as_mut() {
            r.consume(self.pool[self.head].bytes().len() as u64);
        }
        self.unsent += 1;
        self.head = (self.head + 1) % self.pool.len();
        self.pool[self.head].clear();
    }

    /// Seals the current datagram (if it has frames) and moves on.
    fn seal(&mut self) {
        if !self.pool[self.head].is_empty() {
            self.stream.seal(&mut self.pool[self.head]);
            self.advance();
        }
    }

    /// The next messages offered go into the last-value cache (`true`) or not; a
    /// driver sets it before each message, as it does the expiry.
    pub fn set_cached(&mut self, cached: bool) {
        self.cache_next = cached;
    }

    /// Topics in the last-value cache.
    pub fn cached_topics(&self) -> usize {
        self.cache.len()
    }

    /// New topics the full last-value cache did not take.
    pub fn cache_refused(&self) -> u64 {
        self.cache.refused()
    }

    fn snapshot_pending(&self) -> bool {
        self.snapshot_wanted || !self.burst.is_empty()
    }

    /// Puts the snapshot burst a late joiner asked for into the stream, before any
    /// further live message (a live message half fragmented goes first). `Err` as
    /// [`offer`](Self::offer)'s: the rest of the burst follows at the next call.
    fn drive_burst(&mut self, now: Instant) -> Result<(), Blocked> {
        if self.burst.is_empty() {
            if self.frag.is_some() || !self.snapshot_wanted {
                return Ok(());
            }
            self.snapshot_wanted = false;
            self.burst = self
                .cache
                .entries()
                .map(|(t, v)| (t.clone(), v.clone()))
                .collect();
            self.burst_first = true;
            self.last_burst = Some(now);
            bump(&mut self.counters.snapshots, 1);
        }
        let expiry = self.stream.expiry();
        let mut result = Ok(());
        while let Some((topic, v)) = self.burst.pop_front() {
            let first = self.burst_first && self.frag.is_none();
            if first {
                // The burst starts a datagram: a waiting receiver joins there.
                self.seal();
                if self.needs_transmit() {
                    self.burst.push_front((topic, v));
                    result = Err(Blocked::Transmit);
                    break;
                }
            }
            self.stream.set_expiry(v.expires);
            self.stream
                .set_snapshot(SNAPSHOT | if first { SNAPSHOT_FIRST } else { 0 });
            match self.offer_live(now, &topic, &v.payload) {
                Ok(()) => {
                    self.burst_first = false;
                    bump(&mut self.counters.snapshot_messages, 1);
                }
                Err(e) => {
                    self.burst.push_front((topic, v));
                    result = Err(e);
                    break;
                }
            }
        }
        self.stream.set_snapshot(0);
        self.stream.set_expiry(expiry);
        if result == Err(Blocked::Transmit) {
            // Resumed after this transmit even if nothing else is offered (flow
            // control and the rate limit have their own wake-ups).
            self.timers.set(Timer::Resume, now);
        }
        result
    }

    /// Takes one message: packs it into the datagram being built (sealing full ones)
    /// or, when it is larger than a datagram, fragments it. The payload is copied
    /// once, straight into the datagram pool, so the caller can offer records it
    /// peeks from a ring and release them after the transmit.
    ///
    /// A new datagram starts only within the receivers' windows and the rate limit.
    /// After [`Blocked::Transmit`] the caller transmits and offers the same message
    /// again.
    pub fn offer(&mut self, now: Instant, topic: &str, payload: &[u8]) -> Result<(), Blocked> {
        // A burst under way (its entry may be the fragmented message), or one to
        // start at this message boundary.
        if !self.burst.is_empty() || (self.snapshot_wanted && self.frag.is_none()) {
            self.drive_burst(now)?;
        }
        self.offer_live(now, topic, payload)?;
        if self.cache_next {
            self.cache.put(topic, payload, self.stream.expiry());
            self.stream.set_cache_flag();
        }
        Ok(())
    }

    fn offer_live(&mut self, now: Instant, topic: &str, payload: &[u8]) -> Result<(), Blocked> {
        if self.needs_transmit() {
            return Err(Blocked::Transmit);
        }
        if let Some((off, len)) = self.frag {
            if len == payload.len() {
                return self.fragment_from(topic, payload, off);
            }
            // Not the message being fragmented (a caller bug): start over with it.
            self.frag = None;
        }
        if let Some(room) = self.room_for(now, topic, payload.len())? {
            self.pool[self.head]
                .room(room.clone())
                .copy_from_slice(payload);
            self.commit_claim(room);
            return Ok(());
        }
        // Larger than a datagram (or, which cannot happen, not fitting an empty one).
        self.seal();
        if self.needs_transmit() {
            return Err(Blocked::Transmit);
        }
        // A message wider than the window goes once everything before it was
        // received, so it can never wait forever.
        let piece = self.stream.fragment_piece(topic.len()).max(1);
        let pieces = payload.len().div_ceil(piece) as u64;
        let drained = self
            .flow
            .acked()
            .is_none_or(|a| a >= self.stream.next_seq());
        if !self.window_allows(pieces) && !drained {
            self.held_back(now, pieces);
            return Err(Blocked::FlowControl);
        }
        self.rate_allows(now)?;
        self.fragment_from(topic, payload, 0)
    }

    /// Room for a whole message of `len` bytes in the datagram being built (sealing
    /// a full one first), within the windows and the rate limit; `None` when it does
    /// not fit a datagram whole.
    fn room_for(
        &mut self,
        now: Instant,
        topic: &str,
        len: usize,
    ) -> Result<Option<std::ops::Range<usize>>, Blocked> {
        for _ in 0..2 {
            if self.pool[self.head].is_empty() {
                if self.needs_transmit() {
                    // a full batch goes out before a new datagram starts
                    return Err(Blocked::Transmit);
                }
                if !self.window_allows(1) {
                    self.held_back(now, 1);
                    return Err(Blocked::FlowControl);
                }
                self.rate_allows(now)?;
            }
            match self.stream.begin(&mut self.pool[self.head], topic, len) {
                Ok(room) => return Ok(Some(room)),
                Err(Append::Full) => {
                    self.seal();
                    if self.needs_transmit() {
                        return Err(Blocked::Transmit);
                    }
                }
                Err(_) => break,
            }
        }
        Ok(None)
    }

    /// Claims room for a whole message of `len` bytes in the datagram being built, to
    /// be filled in place through [`claimed`](Self::claimed) and then numbered by
    /// [`commit_claim`](Self::commit_claim); a claim never committed publishes
    /// nothing (call nothing else on the machine in between). The same rules as
    /// [`offer`](Self::offer) decide; `Ok(None)` when the message cannot be claimed in
    /// place — wider than a datagram, or a fragmented message is half sent — and is to
    /// be offered as a whole instead.
    pub fn claim(
        &mut self,
        now: Instant,
        topic: &str,
        len: usize,
    ) -> Result<Option<std::ops::Range<usize>>, Blocked> {
        if self.needs_transmit() {
            return Err(Blocked::Transmit);
        }
        if self.frag.is_some() || self.cache_next {
            // (a cached message is offered whole: the cache keeps a copy)
            return Ok(None);
        }
        if self.snapshot_pending() {
            self.drive_burst(now)?;
            // The burst may have filled the batch (its last fragment wrapping the
            // pool): that goes out before anything new starts (found by fuzzing).
            if self.needs_transmit() {
                return Err(Blocked::Transmit);
            }
        }
        self.room_for(now, topic, len)
    }

    /// The payload bytes of a claim.
    pub fn claimed(&mut self, room: std::ops::Range<usize>) -> &mut [u8] {
        self.pool[self.head].room(room)
    }

    /// The same, read-only.
    pub fn claimed_ref(&self, room: std::ops::Range<usize>) -> &[u8] {
        self.pool[self.head].room_ref(room)
    }

    /// Numbers the message of a claim (its payload filled).
    pub fn commit_claim(&mut self, room: std::ops::Range<usize>) {
        self.stream.commit(&mut self.pool[self.head], room);
        bump(&mut self.counters.messages, 1);
    }

    fn fragment_from(
        &mut self,
        topic: &str,
        payload: &[u8],
        mut off: usize,
    ) -> Result<(), Blocked> {
        while off < payload.len() {
            let next = self
                .stream
                .fragment(&mut self.pool[self.head], topic, payload, off);
            if next == off {
                break; // cannot happen: topics are checked at creation
            }
            off = next;
            self.advance();
            if off < payload.len() && self.needs_transmit() {
                self.frag = Some((off, payload.len()));
                return Err(Blocked::Transmit);
            }
        }
        self.frag = None;
        bump(&mut self.counters.fragmented, 1);
        bump(&mut self.counters.messages, 1);
        Ok(())
    }

    /// Processes one datagram from the control port (status or NAK) received at
    /// `now`. A malformed one is counted and returned as an error; it changes nothing.
    pub fn handle_control(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<ControlEvent, WireError> {
        let session = self.stream.session();
        if Header::decode(bytes).is_ok_and(|h| h.network != self.stream.network()) {
            bump(&mut self.counters.control_foreign, 1);
            return Ok(ControlEvent::Other);
        }
        match Control::decode(bytes) {
            Ok(Control::Status(s)) if s.session == session => {
                let sent = self.sent_up_to();
                self.flow
                    .on_status(now, s.receiver, s.next_seq, s.window, s.tag, sent);
                let held_off = self
                    .last_burst
                    .is_some_and(|t| now.saturating_duration_since(t) < SNAPSHOT_HOLDOFF);
                if s.snapshot && !self.cache.is_empty() && !self.snapshot_pending() && !held_off {
                    // A late joiner waits for the snapshot.
                    self.snapshot_wanted = true;
                    self.timers.set(Timer::Resume, now);
                }
                bump(&mut self.counters.status_received, 1);
                if let Some(at) = self.flow.next_expiry() {
                    self.timers.set(Timer::ReceiverExpiry, at);
                }
                Ok(ControlEvent::Status)
            }
            Ok(Control::Nak(nak)) if nak.session == session => {
                bump(&mut self.counters.naks_received, 1);
                self.on_nak(now, nak.from, nak.to);
                Ok(ControlEvent::Nak)
            }
            Ok(Control::Nak(nak)) => Ok(ControlEvent::OtherNak(nak)),
            Ok(Control::Status(_)) => Ok(ControlEvent::Other),
            Err(e) => {
                bump(&mut self.counters.control_malformed, 1);
                Err(e)
            }
        }
    }

    /// Queues datagrams `from..to` for retransmission, within what is left of the
    /// budget (the rest is resumed later).
    pub fn on_nak(&mut self, now: Instant, from: u64, to: u64) {
        let sent_up_to = self.sent_up_to();
        if self.retransmit.is_none() {
            return;
        }
        let budget = self.repair_room(now);
        let Some(r) = self.retransmit.as_mut() else {
            return;
        };
        if from < r.oldest(sent_up_to) {
            // Asked for what is no longer kept: say at once where the window starts.
            self.beat = Some(Beat::Now);
        }
        // The amplification ceiling: one NAK, whatever it names, costs at most
        // MAX_NAK_SPAN datagrams of what the session sent.
        let lo = from.max(r.oldest(sent_up_to));
        let to = to.min(sent_up_to);
        let to = if to.saturating_sub(lo) > MAX_NAK_SPAN {
            bump(&mut self.counters.nak_clamped, 1);
            lo + MAX_NAK_SPAN
        } else {
            to
        };
        if budget == 0 && lo < to {
            // kept for later (resumed when the budget allows)
            bump(&mut self.counters.repair_limited, 1);
        }
        let resend = &mut self.resend;
        r.on_nak(now, lo, to, sent_up_to, budget, &mut |seq| resend.push(seq));
    }

    /// Retransmissions that may be queued now: what is left of this transmit's budget
    /// and what the repair budget pays for (what is queued since the last transmit is
    /// not paid for yet, so it counts).
    fn repair_room(&mut self, now: Instant) -> usize {
        self.repair.refill(now);
        let queued = self.resend.len();
        let affordable = self
            .repair
            .affordable(self.max_datagram)
            .saturating_sub(queued);
        (self.budget - queued).min(affordable)
    }

    /// The deadline (µs since the UNIX epoch) that the messages offered or claimed
    /// from now on carry (`None`: no expiry); a driver sets it before each message.
    pub fn set_expiry(&mut self, expires: Option<u64>) {
        self.stream.set_expiry(expires);
    }

    /// Makes the session known before its first message: heartbeats (at position 0)
    /// start now and back off as an idle session's do, so receivers join it and send
    /// status, and the publisher learns its audience before it sends (Aeron's setup
    /// frames do the same). Without it an idle session is silent until its first
    /// message: a node that only subscribes announces nothing.
    pub fn announce(&mut self, now: Instant) {
        if !self.announced && self.stream.next_seq() == 0 {
            self.announced = true;
            self.timers.set(Timer::Heartbeat, now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due at `now`: forgets silent receivers, queues the idle
    /// heartbeat (backing off), resumes what a retransmit budget left.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in TIMERS {
            if !self.timers.expire(t, now) {
                continue;
            }
            match t {
                Timer::Heartbeat => {
                    if self.stream.next_seq() > 0 || self.announced {
                        self.beat.get_or_insert(Beat::Idle);
                    }
                    self.timers
                        .set(Timer::Heartbeat, now + self.heartbeat_every);
                    self.heartbeat_every = (self.heartbeat_every * 2).min(self.max_heartbeat);
                }
                Timer::ReceiverExpiry => {
                    let sent = self.sent_up_to();
                    self.flow.expire(now, sent);
                    if let Some(at) = self.flow.next_expiry() {
                        self.timers.set(Timer::ReceiverExpiry, at);
                    }
                }
                Timer::RateLimit => {}
                Timer::Resume => {
                    let sent_up_to = self.sent_up_to();
                    let budget = self.repair_room(now);
                    if let Some(r) = self.retransmit.as_mut() {
                        let resend = &mut self.resend;
                        r.resume(now, sent_up_to, budget, &mut |seq| resend.push(seq));
                    }
                }
            }
        }
    }

    /// Hands out everything due: the queued retransmissions (one batch, straight from
    /// the window), then the data sealed since the last transmit together with the
    /// datagram being built (no waiting to fill it), then a heartbeat. `send` gets
    /// each batch and returns whether the kernel took it.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(Transmit, &[&[u8]]) -> bool,
    ) -> Transmitted {
        let mut done = Transmitted::default();
        if !self.resend.is_empty() {
            let mut refs: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
            let n = self.pool.len() as u64;
            let mut k = 0;
            let mut total = 0u64;
            for &seq in &self.resend {
                let b = &self.pool[(seq % n) as usize];
                if b.seq() == Some(seq) {
                    refs[k] = b.bytes();
                    total += b.bytes().len() as u64;
                    k += 1;
                }
            }
            self.resend.clear();
            if k > 0 {
                self.repair.tokens = self.repair.tokens.saturating_sub(total);
                if send(Transmit::Retransmit, &refs[..k]) {
                    bump(&mut self.counters.retransmits, k);
                    self.counters.retransmit_bytes =
                        self.counters.retransmit_bytes.saturating_add(total);
                    if let Some(r) = self.rate.as_mut() {
                        r.consume(total);
                    }
                } else {
                    bump(&mut self.counters.send_errors, k);
                }
                done.retransmits = k;
            }
        }
        if self.snapshot_pending() {
            // What the burst could not put in now follows at the next transmit.
            let _ = self.drive_burst(now);
        }
        self.seal();
        if self.unsent > 0 {
            let n = self.pool.len();
            let start = (self.head + n - self.unsent) % n;
            let unsent = &self.pool[start..start + self.unsent];
            let bytes: u64 = unsent.iter().map(|b| b.bytes().len() as u64).sum();
            // On failure the sequence numbers are spent all the same: receivers NAK
            // them, and they are retransmitted from the pool, or reported lost.
            if with_refs(unsent, |refs| send(Transmit::Data, refs)) {
                bump(&mut self.counters.datagrams, self.unsent);
                self.counters.bytes = self.counters.bytes.saturating_add(bytes);
                self.repair.earn(bytes);
            } else {
                bump(&mut self.counters.send_errors, self.unsent);
            }
            done.data = self.unsent;
            self.unsent = 0;
            // Data went: the idle heartbeat starts over.
            self.heartbeat_every = self.heartbeat_interval;
            self.timers
                .set(Timer::Heartbeat, now + self.heartbeat_interval);
            if self.beat == Some(Beat::Idle) {
                self.beat = None;
            }
        }
        if self.beat.take().is_some() {
            let mut hb = [0u8; HEARTBEAT_LEN];
            self.stream.heartbeat(self.oldest()).encode(&mut hb);
            crate::wire::stamp_network(&mut hb, self.stream.network());
            if self.stream.cache_flag() {
                crate::wire::stamp_flags(&mut hb, crate::wire::CACHE_FLAG);
            }
            if send(Transmit::Heartbeat, &[&hb]) {
                bump(&mut self.counters.heartbeats, 1);
            }
            done.heartbeats = 1;
        }
        if self.retransmit.as_ref().is_some_and(|r| r.has_pending()) {
            // Resumed now, or when the repair budget allows one more datagram.
            if self.repair.affordable(self.max_datagram) > 0 {
                self.timers.set(Timer::Resume, now);
            } else if let Some(at) = self.repair.ready_at(self.max_datagram) {
                self.timers.set(Timer::Resume, at.max(now));
            }
        }
        done
    }
}

/// Calls `f` with the bytes of `bufs` (at most [`MAX_BATCH`]). A lone datagram — what
/// a paced publisher sends — is referenced from a small array: the full-batch one is
/// 4 KiB to fill on every send.
fn with_refs<R>(bufs: &[DatagramBuf], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    fn refs<const N: usize, R>(bufs: &[DatagramBuf], f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let mut refs: [&[u8]; N] = [&[]; N];
        for (r, b) in refs.iter_mut().zip(bufs) {
            *r = b.bytes();
        }
        f(&refs[..bufs.len().min(N)])
    }
    if bufs.len() <= 4 {
        refs::<4, R>(bufs, f)
    } else {
        refs::<MAX_BATCH, R>(bufs, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frames, Header, Heartbeat, Nak, Status, NAK_LEN, STATUS_LEN};

    fn cfg() -> PublisherConfig {
        PublisherConfig {
            batch: 4,
            retransmit_window: 16 * 200,
            startup_grace: Duration::ZERO,
            ..PublisherConfig::new(7, 200)
        }
    }

    /// Transmits, returning every batch as (kind, datagrams).
    fn drain(p: &mut Publisher, now: Instant) -> Vec<(Transmit, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        p.poll_transmit(now, &mut |k, b| {
            out.push((k, b.iter().map(|d| d.to_vec()).collect()));
            true
        });
        out
    }

    fn seq_of(d: &[u8]) -> u64 {
        Header::decode(d).unwrap().seq
    }

    fn status(p: &mut Publisher, now: Instant, receiver: u64, next_seq: u64, window: u32) {
        let mut b = [0u8; STATUS_LEN];
        Status {
            session: 7,
            receiver,
            next_seq,
            window,
            tag: 0,
            snapshot: false,
        }
        .encode(&mut b);
        assert_eq!(p.handle_control(now, &b), Ok(ControlEvent::Status));
    }

    fn nak(p: &mut Publisher, now: Instant, session: u32, from: u64, to: u64) -> ControlEvent {
        let mut b = [0u8; NAK_LEN];
        Nak {
            session,
            from,
            to,
            receiver: 1,
        }
        .encode(&mut b);
        p.handle_control(now, &b).unwrap()
    }

    /// An announced session heartbeats at position 0 before any data, backing off;
    /// one that was not stays silent.
    #[test]
    fn an_announced_session_heartbeats_before_its_first_message() {
        let t0 = Instant::now();
        let mut quiet = Publisher::new(cfg(), t0);
        let mut p = Publisher::new(cfg(), t0);
        p.announce(t0);
        let mut beats = Vec::new();
        for ms in 0..40u64 {
            let now = t0 + Duration::from_millis(ms);
            for m in [&mut quiet, &mut p] {
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
            }
            assert!(drain(&mut quiet, now).is_empty(), "silent until data");
            for (kind, dgrams) in drain(&mut p, now) {
                assert_eq!(kind, Transmit::Heartbeat);
                let hb = Heartbeat::decode(&dgrams[0]).unwrap();
                assert_eq!((hb.session, hb.next_seq), (p.session(), 0));
                beats.push(ms);
            }
        }
        // At once, then the idle backoff (1 ms doubling).
        assert_eq!(beats, vec![0, 1, 3, 7, 15, 31]);
    }

    #[test]
    fn packs_numbers_and_asks_for_a_transmit_per_batch() {
        let t0 = Instant::now();
        let mut p = Publisher::new(cfg(), t0);
        assert_eq!(p.session(), 7);
        // 32 + k * (8 + 2 + 50) <= 200 => 2 messages per datagram, 4 datagrams a batch
        let mut taken = 0;
        while p.offer(t0, "/t", &[taken as u8; 50]).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 8);
        assert_eq!(p.offer(t0, "/t", &[0; 50]), Err(Blocked::Transmit));
        let out = drain(&mut p, t0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Transmit::Data);
        let seqs: Vec<u64> = out[0].1.iter().map(|d| seq_of(d)).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        // the same message now goes; a transmit sends the partial datagram at once
        p.offer(t0, "/t", &[8; 50]).unwrap();
        let out = drain(&mut p, t0);
        let (h, frames) = Frames::decode(&out[0].1[0], 1 << 20).unwrap();
        assert_eq!((h.seq, h.msg_seq, h.count), (4, 8, 1));
        assert_eq!(frames.count(), 1);
        assert_eq!(p.counters().messages, 9);
        assert_eq!(p.counters().datagrams, 5);
        assert!(!p.has_transmit());
    }

    #[test]
    fn a_claim_is_written_in_place_and_an_abandoned_one_publishes_nothing() {
        let t0 = Instant::now();
        let mut p = Publisher::new(cfg(), t0);
        let room = p.claim(t0, "/t", 3).unwrap().unwrap();
        p.claimed(room.clone()).copy_from_slice(b"abc");
        assert_eq!(p.claimed_ref(room.clone()), b"abc");
        p.commit_claim(room);
        // abandoned: claimed and filled, never committed
        let room = p.claim(t0, "/t", 3).unwrap().unwrap();
        p.claimed(room).copy_from_slice(b"zzz");
        p.offer(t0, "/u", b"de").unwrap();
        let out = drain(&mut p, t0);
        let (h, frames) = Frames::decode(&out[0].1[0], 1 << 20).unwrap();
        assert_eq!((h.seq, h.msg_seq, h.count), (0, 0, 2));
        let got: Vec<(&str, &[u8])> = frames.map(|f| (f.topic, f.payload)).collect();
        assert_eq!(got, vec![("/t", &b"abc"[..]), ("/u", &b"de"[..])]);
        assert_eq!(p.counters().messages, 2);
        // wider than a datagram: not claimable in place, offered whole instead
        assert_eq!(p.claim(t0, "/t", 1000), Ok(None));
        // the windows hold a claim back as they hold an offer
        status(&mut p, t0, 1, 1, 0);
        assert_eq!(p.claim(t0, "/t", 3), Err(Blocked::FlowControl));
    }

    #[test]
    fn a_fragmented_message_crosses_batches() {
        let t0 = Instant::now();
        let mut p = Publisher::new(cfg(), t0);
        let big: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let mut batches = 0;
        while let Err(b) = p.offer(t0, "/big", &big) {
            assert_eq!(b, Blocked::Transmit);
            assert!(p.in_message());
            assert_eq!(drain(&mut p, t0)[0].1.len(), 4);
            batches += 1;
        }
        // piece = 200 - 32 - 8 - 8 - 4 = 148 bytes => 14 fragments
        assert_eq!(batches, 3);
        let out = drain(&mut p, t0);
        assert_eq!(out[0].1.len(), 2);
        assert_eq!(p.next_seq(), 14);
        assert_eq!((p.counters().messages, p.counters().fragmented), (1, 1));
    }

    #[test]
    fn flow_control_holds_new_datagrams_back() {
        let t0 = Instant::now();
        let mut p = Publisher::new(cfg(), t0);
        status(&mut p, t0, 1, 0, 2);
        assert_eq!(p.receivers(), 1);
        for i in 0..4u8 {
            p.offer(t0, "/t", &[i; 50]).unwrap();
        }
        // a third datagram would pass the window of 2
        assert_eq!(p.offer(t0, "/t", &[4; 50]), Err(Blocked::FlowControl));
        // (a receiver has only what was sent)
        drain(&mut p, t0);
        status(&mut p, t0, 1, 1, 2);
        p.offer(t0, "/t", &[4; 50]).unwrap();
        // a message wider than the window waits until everything before it arrived
        drain(&mut p, t0);
        let big = vec![1u8; 1000];
        assert_eq!(p.offer(t0, "/t", &big), Err(Blocked::FlowControl));
        status(&mut p, t0, 1, 3, 2);
        while let Err(b) = p.offer(t0, "/t", &big) {
            assert_eq!(b, Blocked::Transmit);
            drain(&mut p, t0);
        }
        // the receiver goes quiet: forgotten after the timeout, via the timer
        let at = p.timers.get(Timer::ReceiverExpiry).unwrap();
        assert_eq!(at, t0 + Duration::from_secs(1) + Duration::from_nanos(1));
        p.handle_timeout(at);
        assert_eq!(p.receivers(), 0);
    }

    /// Sends until the machine stops taking 50-byte messages; returns the datagrams.
    fn fill(p: &mut Publisher, now: Instant) -> (Vec<Vec<u8>>, Option<Blocked>) {
        let mut sent = Vec::new();
        for i in 0..10_000u32 {
            match p.offer(now, "/t", &[i as u8; 50]) {
                Ok(()) => {}
                Err(Blocked::Transmit) => {
                    sent.extend(drain(p, now).into_iter().flat_map(|(_, d)| d));
                }
                Err(b) => {
                    sent.extend(drain(p, now).into_iter().flat_map(|(_, d)| d));
                    return (sent, Some(b));
                }
            }
        }
        (sent, None)
    }

    #[test]
    fn a_new_session_keeps_its_window_until_a_receiver_speaks_or_the_grace_ends() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(100);
        let startup = PublisherConfig {
            startup_grace: grace,
            ..cfg()
        };
        // Nobody speaks: 15 datagrams (what the pool keeps), then held for the grace.
        let mut p = Publisher::new(startup.clone(), t0);
        let (sent, why) = fill(&mut p, t0);
        assert_eq!((sent.len(), why), (15, Some(Blocked::FlowControl)));
        assert_eq!(p.oldest(), 0, "everything sent is still kept");
        assert_eq!(p.timers.get(Timer::ReceiverExpiry), Some(t0 + grace));
        p.handle_timeout(t0 + grace);
        assert_eq!(p.timers.get(Timer::ReceiverExpiry), None);
        let (more, why) = fill(&mut p, t0 + grace);
        assert_eq!(why, None, "unconstrained once the grace is over");
        assert!(more.len() > 1000);
        // A receiver's first status ends the startup at once: its window rules.
        let mut p = Publisher::new(startup.clone(), t0);
        let (sent, _) = fill(&mut p, t0);
        assert_eq!(sent.len(), 15);
        status(&mut p, t0, 1, 15, 10);
        let (more, why) = fill(&mut p, t0);
        assert_eq!((more.len(), why), (10, Some(Blocked::FlowControl)));
        let expiry = t0 + Duration::from_secs(1) + Duration::from_nanos(1);
        assert_eq!(p.timers.get(Timer::ReceiverExpiry), Some(expiry));
        // A status for another session, or from a receiver that does not pace a
        // tagged session, does not end it.
        let mut p = Publisher::new(
            PublisherConfig {
                flow_control: FlowControlStrategy::Tagged(5),
                ..startup
            },
            t0,
        );
        status(&mut p, t0, 1, 0, 1000);
        let (sent, why) = fill(&mut p, t0);
        assert_eq!((sent.len(), why), (15, Some(Blocked::FlowControl)));
    }

    #[test]
    fn naks_are_answered_from_the_pool_and_too_old_ones_with_a_heartbeat() {
        let t0 = Instant::now();
        let mut p = Publisher::new(
            PublisherConfig {
                retransmit_budget: 3,
                ..cfg()
            },
            t0,
        );
        let mut sent = Vec::new();
        for i in 0..40u8 {
            while p.offer(t0, "/t", &[i; 50]) == Err(Blocked::Transmit) {
                sent.extend(drain(&mut p, t0).remove(0).1);
            }
        }
        sent.extend(drain(&mut p, t0).remove(0).1);
        assert_eq!(sent.len(), 20);
        // the pool has 16 buffers: 15 sent datagrams are kept (5..20)
        assert_eq!(p.oldest(), 5);
        assert_eq!(nak(&mut p, t0, 7, 10, 15), ControlEvent::Nak);
        let out = drain(&mut p, t0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Transmit::Retransmit);
        assert_eq!(out[0].1, sent[10..13].to_vec(), "the same bytes, budget 3");
        // the rest of the range resumes at the next timeout
        let due = p.poll_timeout().unwrap();
        assert_eq!(due, t0);
        p.handle_timeout(due);
        assert_eq!(drain(&mut p, t0)[0].1, sent[13..15].to_vec());
        // a NAK for datagrams no longer held: a heartbeat says where the window starts
        let t1 = t0 + Duration::from_millis(1);
        nak(&mut p, t1, 7, 2, 6);
        let out = drain(&mut p, t1);
        assert_eq!(out[0], (Transmit::Retransmit, vec![sent[5].clone()]));
        assert_eq!(out[1].0, Transmit::Heartbeat);
        let hb = Heartbeat::decode(&out[1].1[0]).unwrap();
        assert_eq!((hb.next_seq, hb.next_msg_seq, hb.oldest), (20, 40, 5));
        // a NAK for another session is handed back for suppression
        assert!(matches!(nak(&mut p, t1, 8, 1, 2), ControlEvent::OtherNak(n) if n.session == 8));
        assert_eq!(p.counters().naks_received, 2);
        assert_eq!(p.counters().retransmits, 6);
        assert!(p.handle_control(t1, &[0u8; 10]).is_err());
        assert_eq!(p.counters().control_malformed, 1);
    }

    #[test]
    fn idle_heartbeats_back_off_and_data_resets_them() {
        let t0 = Instant::now();
        let mut p = Publisher::new(cfg(), t0);
        assert_eq!(p.poll_timeout(), None, "nothing sent: no heartbeat");
        p.offer(t0, "/t", b"x").unwrap();
        drain(&mut p, t0);
        let mut at = Vec::new();
        let mut now = t0;
        loop {
            let next = p.poll_timeout().unwrap();
            if next > t0 + Duration::from_millis(400) {
                break;
            }
            now = next;
            p.handle_timeout(now);
            for (k, _) in drain(&mut p, now) {
                assert_eq!(k, Transmit::Heartbeat);
                at.push((now - t0).as_millis());
            }
        }
        assert_eq!(at, vec![1, 2, 4, 8, 16, 32, 64, 128, 228, 328]);
        // data again: the next heartbeat is one interval after it
        p.offer(now, "/t", b"y").unwrap();
        drain(&mut p, now);
        assert_eq!(p.poll_timeout(), Some(now + Duration::from_millis(1)));
        assert_eq!(p.counters().heartbeats, 10);
    }

    #[test]
    fn the_rate_limit_blocks_and_sets_its_timer() {
        let t0 = Instant::now();
        let mut p = Publisher::new(
            PublisherConfig {
                rate_limit: Some(100_000),
                batch: 1,
                ..cfg()
            },
            t0,
        );
        // burst = max(1 * 200, 100) = 200 bytes; a datagram of one 80-byte message is
        // 122 bytes: two go (the second into debt), then the limit holds
        let mut n = 0;
        let err = loop {
            match p.offer(t0, "/t", &[1; 80]) {
                Ok(()) => n += 1,
                Err(Blocked::Transmit) => {
                    drain(&mut p, t0);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err, Blocked::RateLimit);
        assert_eq!(n, 2);
        let at = p.rate_ready_at(t0).unwrap();
        assert_eq!(p.poll_timeout(), Some(at));
        assert!(at > t0);
        p.handle_timeout(at);
        assert!(p.offer(at, "/t", &[1; 80]).is_ok());
    }
}
