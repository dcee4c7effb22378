//! Subscriber side: tracks every publishing session heard, puts its datagrams back in
//! order, asks for the missing ones (NAKs), and turns what cannot be repaired into
//! explicit loss events over message sequence numbers; drops duplicates and
//! reassembles fragmented messages. No I/O, no clock: the caller passes the time in,
//! calls [`Receiver::handle_timeout`] when [`Receiver::poll_timeout`] says, and sends
//! what [`Receiver::poll_nak`] and [`Receiver::poll_status`] hand out.
//!
//! Reliable mode: a datagram ahead of the next expected one is held (bounded); after a
//! short random delay (so receivers that lost the same datagram do not all ask at
//! once) the missing ranges are NAKed, and again every `nak_interval`. A gap is
//! declared lost — and reported with its exact message range — only when the
//! publisher's heartbeat says it no longer holds the data, when `nak_retries` NAKs
//! went unanswered, or when the reorder buffer is full. Best-effort mode reports a gap
//! at once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::wire::{
    header_flags, Frame, Frames, Header, Heartbeat, Kind, WireError, CACHE_FLAG, SNAPSHOT,
    SNAPSHOT_FIRST,
};

/// Identifies a publishing session: its source address and session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Where its datagrams come from.
    pub source: SocketAddrV4,
    /// The session id in its header.
    pub session: u32,
}

/// What the receiver hands upwards.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// A complete message, in publisher order.
    Message {
        /// Which session published it.
        from: SessionKey,
        /// Its sequence number in that session.
        seq: u64,
        /// Its topic.
        topic: &'a str,
        /// Its payload (borrowed from the datagram or the reassembly buffer).
        payload: &'a [u8],
        /// Its deadline (µs since the UNIX epoch), if its publisher gave it a time
        /// to live: the driver drops it when delivered later.
        expires: Option<u64>,
        /// A last-value snapshot entry: the latest value of its topic when this
        /// receiver joined late, delivered before the live data that follows it.
        snapshot: bool,
    },
    /// Messages `from_seq..to_seq` of a session will never be delivered.
    Loss {
        /// Which session lost them.
        from: SessionKey,
        /// First lost message sequence number.
        from_seq: u64,
        /// One past the last lost one.
        to_seq: u64,
    },
    /// A session was heard for the first time, or again after it was declared gone.
    Joined {
        /// Which session.
        from: SessionKey,
    },
    /// A session was not heard for `publisher_timeout`: its publisher is gone (or cut
    /// off). Its unrepaired gaps were reported as losses just before.
    Gone {
        /// Which session.
        from: SessionKey,
    },
}

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest message reassembled.
    pub max_message: usize,
    /// Most sessions tracked (least recently heard evicted).
    pub max_sessions: usize,
    /// Repair gaps with NAKs (else report them at once).
    pub reliable: bool,
    /// Upper bound of the random delay before the first NAK of a gap.
    pub nak_delay: Duration,
    /// Time before the second NAK for a gap; it doubles with every NAK (a
    /// retransmission can queue behind a whole window of new data) up to
    /// `nak_max_interval`.
    pub nak_interval: Duration,
    /// Longest time between NAKs.
    pub nak_max_interval: Duration,
    /// NAK rounds for the gap at the front before it is declared lost.
    pub nak_retries: u32,
    /// Datagrams held out of order, over all sessions, before the oldest gap is given up.
    pub reorder_limit: usize,
    /// Seed of the NAK-delay randomness (deterministic tests).
    pub seed: u64,
    /// A session not heard (data or heartbeat) for this long is declared gone.
    pub publisher_timeout: Duration,
    /// A sending session gets a status at least every this many datagrams, however
    /// wide the window: a publisher that keeps fewer datagrams than the window is
    /// held by what it keeps, and must hear the position move before it runs out.
    pub status_every: u32,
    /// Join sessions whose publisher keeps a last-value cache at its snapshot: a
    /// late joiner waits (at most [`SNAPSHOT_WAIT`]) for the burst of last values and
    /// starts there, instead of starting live.
    pub snapshots: bool,
    /// This node's network ID: datagrams of other networks are ignored (counted).
    pub network: u32,
    /// A datagram or heartbeat more than this many datagrams ahead of what its session
    /// is known to have sent is rejected (counted as implausible), not adopted: one
    /// forged heartbeat must neither declare a session's data lost nor move the
    /// session out of its publisher's reach. A real session that did jump further (a
    /// receiver cut off for longer than that) is declared gone after
    /// `publisher_timeout` and joined again at its live position.
    pub max_jump: u64,
    /// Bytes held out of order over all sessions before the oldest gap is given up
    /// (with `reorder_limit`, the count of datagrams).
    pub reorder_bytes: usize,
    /// Bytes of reassembly buffers over all sessions: a fragmented message that would
    /// pass it is reported lost (counted as refused) instead of buffered.
    pub reassembly_bytes: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_message: 4 << 20,
            max_sessions: 1024,
            reliable: true,
            nak_delay: Duration::from_micros(200),
            nak_interval: Duration::from_millis(2),
            nak_max_interval: Duration::from_millis(100),
            nak_retries: 20,
            reorder_limit: 8192,
            seed: 0x5eed,
            publisher_timeout: Duration::from_secs(2),
            status_every: u32::MAX,
            snapshots: true,
            network: 0,
            max_jump: 1 << 16,
            reorder_bytes: 64 << 20,
            reassembly_bytes: 64 << 20,
        }
    }
}

/// Counters kept by the receiver (read by the agent into the node's stats).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceiverCounters {
    /// Valid data datagrams accepted.
    pub datagrams: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Gaps that could not be repaired (each reported as a loss).
    pub gaps: u64,
    /// Datagrams those gaps skipped.
    pub lost_datagrams: u64,
    /// Messages reported lost.
    pub lost_messages: u64,
    /// Datagrams already seen (or older than the position) dropped.
    pub duplicates: u64,
    /// Datagrams held because they arrived ahead of a missing one.
    pub reordered: u64,
    /// Missing datagrams that arrived later (retransmitted or late) and filled a gap.
    pub repaired: u64,
    /// NAK ranges handed out for sending.
    pub naks: u64,
    /// NAK rounds held back because another receiver had just NAKed the same data.
    pub naks_suppressed: u64,
    /// Heartbeats heard.
    pub heartbeats: u64,
    /// Gaps given up because their NAKs went unanswered.
    pub lost_nak_timeout: u64,
    /// Gaps given up because the publisher no longer retains the data.
    pub lost_beyond_window: u64,
    /// Gaps given up because the reorder buffer was full.
    pub lost_reorder_full: u64,
    /// Datagrams rejected by the decoder or inconsistent with their session.
    pub malformed: u64,
    /// Datagrams of another network ID, ignored.
    pub foreign: u64,
    /// Sessions first heard.
    pub sessions: u64,
    /// Sessions forgotten to make room for new ones.
    pub sessions_evicted: u64,
    /// Sessions declared gone (not heard for `publisher_timeout`).
    pub sessions_gone: u64,
    /// Datagrams dropped while waiting for a session's snapshot (what they carried
    /// is in the snapshot, or comes after it).
    pub before_snapshot: u64,
    /// Snapshot entries delivered to a late joiner.
    pub snapshot_messages: u64,
    /// Snapshot entries of bursts meant for others, skipped.
    pub snapshot_skipped: u64,
    /// Sessions whose snapshot did not come within [`SNAPSHOT_WAIT`] (joined live).
    pub snapshot_timeouts: u64,
    /// Datagrams and heartbeats rejected for jumping implausibly far ahead of their
    /// session ([`ReceiverConfig::max_jump`]).
    pub implausible: u64,
    /// Fragmented messages not reassembled because the reassembly bound was reached
    /// (each reported lost).
    pub reassembly_refused: u64,
}

#[derive(Debug, Default)]
struct Reassembly {
    active: bool,
    msg_seq: u64,
    /// The deadline its first fragment carried.
    expires: Option<u64>,
    /// Its first fragment was a snapshot entry.
    snapshot: bool,
    total: usize,
    topic: String,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Held {
    /// The first message this datagram starts.
    first_start: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Session {
    next_seq: u64,
    next_msg: u64,
    last_seen: Instant,
    asm: Reassembly,
    /// Position in the last status sent for this session (`None`: none sent yet).
    reported: Option<u64>,
    last_status: Instant,
    /// Datagrams ahead of `next_seq`, waiting for the gap before them.
    held: BTreeMap<u64, Held>,
    /// One past the highest datagram known to exist (from data or a heartbeat).
    highest: u64,
    /// The next message sequence at `highest`, when a heartbeat said so.
    tail_msg: Option<u64>,
    /// The oldest datagram the publisher can still retransmit.
    oldest_available: u64,
    /// When the gap at the front (`front`, the `next_seq` it was seen at) opened, and
    /// when the next NAK is due. Giving up is judged per front gap: one that opens
    /// after an older one was filled gets its own full allowance of NAKs.
    gap_since: Option<Instant>,
    front: u64,
    /// The earlier of `fresh_due` and `renak_at`.
    nak_due: Option<Instant>,
    /// NAK rounds that asked for the front gap.
    nak_attempts: u32,
    /// Time until the next full round; doubles every round.
    nak_backoff: Duration,
    /// Missing datagrams below this were NAKed at least once: holes that open above
    /// it get their first NAK after the short random delay, while holes already asked
    /// for wait for the next full round, so a retransmission still on its way is not
    /// asked for again and again.
    naked_upto: u64,
    /// First NAK due for holes above `naked_upto`.
    fresh_due: Option<Instant>,
    /// When every hole still missing is NAKed again (a full round).
    renak_at: Option<Instant>,
    /// When the front gap was first NAKed (to measure how long a repair takes).
    front_naked_at: Option<Instant>,
    /// Smoothed time from a front gap's first NAK to its repair: full rounds are at
    /// least twice this apart, so a repair queued behind a window of data is waited
    /// for rather than asked for again.
    repair_time: Option<Duration>,
    /// Declared gone (not heard for the publisher timeout); cleared when heard again.
    gone: bool,
    /// Where the session stands with its publisher's last-value snapshot.
    snap: Snap,
}

/// A late joiner and its publisher's last-value snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snap {
    /// Live data (no snapshot due, or it is over).
    Live,
    /// Joined late a session that keeps a cache: its data is dropped (asking for the
    /// snapshot meanwhile) until a datagram starts the snapshot burst.
    Waiting { since: Instant },
    /// No snapshot came in time: the next data datagram is joined as it comes.
    Rejoin,
    /// Delivering the burst this receiver joined at (until the first live message).
    InBurst,
}

impl Session {
    fn waiting(&self) -> bool {
        matches!(self.snap, Snap::Waiting { .. } | Snap::Rejoin)
    }

    /// Whether a datagram `seq` starting message `msg` (or a heartbeat at that
    /// position) jumps further ahead than a real publisher could have sent: more than
    /// `max_jump` datagrams past the highest one known, or more messages than that many
    /// datagrams can hold (a late joiner waiting for its snapshot has no message
    /// position yet).
    fn implausible(&self, seq: u64, msg: u64, max_jump: u64) -> bool {
        let base = self.highest.max(self.next_seq);
        if seq > base.saturating_add(max_jump) {
            return true;
        }
        !self.waiting() && too_many_messages((self.next_seq, self.next_msg), (seq, msg))
    }

    /// Starts the session over at datagram `seq` whose first new message is `msg`
    /// (a late joiner joins at its snapshot): nothing before is owed. Returns how
    /// many held datagrams it let go (into `pool`), and their bytes.
    fn rejoin_at(&mut self, seq: u64, msg: u64, pool: &mut Vec<Vec<u8>>) -> (usize, usize) {
        let held = self.held.len();
        let mut bytes = 0;
        for h in std::mem::take(&mut self.held).into_values() {
            bytes += h.bytes.len();
            recycle(pool, h.bytes);
        }
        self.next_seq = seq;
        self.next_msg = msg;
        self.highest = seq;
        self.tail_msg = None;
        self.front = seq;
        self.naked_upto = seq;
        self.asm.active = false;
        self.close_gap();
        (held, bytes)
    }
    fn missing(&self) -> bool {
        self.highest > self.next_seq
    }

    /// Whether a datagram known to exist is missing at or above `naked_upto` (never
    /// NAKed yet). Moves `naked_upto` past the held datagrams it scanned (nothing
    /// there is missing), so later calls do not scan them again.
    fn has_unnaked(&mut self) -> bool {
        let mut seq = self
            .naked_upto
            .max(self.next_seq)
            .max(self.oldest_available);
        for (&held, _) in self.held.range(seq..) {
            if held != seq {
                break;
            }
            seq += 1;
        }
        self.naked_upto = self.naked_upto.max(seq.min(self.highest));
        seq < self.highest
    }

    fn sync_due(&mut self) {
        self.nak_due = match (self.fresh_due, self.renak_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The gap episode is over: nothing is missing (or nobody is left to ask).
    fn close_gap(&mut self) {
        self.gap_since = None;
        self.nak_due = None;
        self.fresh_due = None;
        self.renak_at = None;
        self.front_naked_at = None;
        self.nak_attempts = 0;
    }
}

/// How often a receiver reports status for a session that is sending.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(5);
/// A session silent this long gets no more status messages.
pub const SESSION_QUIET: Duration = Duration::from_secs(2);
/// NAK ranges sent per session per round at most.
const NAK_RANGES: usize = 64;
/// A session first heard within this many datagrams of its start is joined from its
/// first datagram (NAKing what was missed), not at the live position: a receiver that
/// was listening before the publisher started must not lose the session's first
/// datagrams silently. Later joiners start live.
pub const JOIN_FROM_START: u64 = 64;
/// How long a late joiner waits for its publisher's snapshot before it joins live.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);
/// How often a late joiner asks for the snapshot while it waits.
pub const SNAPSHOT_ASK: Duration = Duration::from_millis(100);
/// Most frames (so messages) one datagram carries: its header counts them in 16 bits.
const MAX_FRAMES: u64 = 1 << 16;
/// Spare datagram buffers kept for reuse at most (the rest are freed).
const POOL_KEEP: usize = 256;
/// A reassembly buffer larger than this is freed when its message is done.
const ASM_KEEP: usize = 256 << 10;

/// The receive-side protocol state for every session heard on a group.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    sessions: HashMap<SessionKey, Session, ahash::RandomState>,
    counters: ReceiverCounters,
    pool: Vec<Vec<u8>>,
    held_total: usize,
    /// Bytes of the datagrams held out of order.
    held_bytes: usize,
    /// Capacity of every session's reassembly buffer, and its bound.
    asm: AsmBudget,
    naks: Vec<(SessionKey, u64, u64)>,
    /// Earliest NAK due.
    next_timeout: Option<Instant>,
    /// When sessions are next checked for liveness (`None`: no live session).
    next_liveness: Option<Instant>,
    /// When a session waiting for its snapshot next asks (`None`: none waits).
    next_ask: Option<Instant>,
    rng: u64,
}

impl Receiver {
    /// The network ID it accepts (and its status and NAKs carry).
    pub fn network(&self) -> u32 {
        self.cfg.network
    }

    /// A receiver with the given behaviour.
    pub fn new(cfg: ReceiverConfig) -> Self {
        let rng = cfg.seed | 1;
        Receiver {
            cfg: ReceiverConfig {
                max_sessions: cfg.max_sessions.max(1),
                ..cfg
            },
            sessions: HashMap::default(),
            counters: ReceiverCounters::default(),
            pool: Vec::new(),
            held_total: 0,
            held_bytes: 0,
            asm: AsmBudget {
                used: 0,
                limit: cfg.reassembly_bytes,
            },
            naks: Vec::new(),
            next_timeout: None,
            next_liveness: None,
            next_ask: None,
            rng,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &ReceiverCounters {
        &self.counters
    }

    /// Number of sessions tracked.
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Datagrams currently held out of order.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held_total
    }

    /// Bytes held out of order, and bytes of reassembly buffers.
    #[cfg(test)]
    pub fn memory(&self) -> (usize, usize) {
        (self.held_bytes, self.asm.used)
    }

    fn random_delay(&mut self) -> Duration {
        // xorshift64: deterministic for a given seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let max = self.cfg.nak_delay.as_nanos().max(1) as u64;
        Duration::from_nanos(self.rng % max)
    }

    /// [`ensure_session`](Self::ensure_session); a session whose publisher keeps a
    /// cache (`cache`) and that is first heard past its first datagram (`heard`)
    /// then waits for its snapshot. (Within [`JOIN_FROM_START`] datagrams of the start
    /// too: datagrams can be large enough for a long history to fit, and a late
    /// joiner wants the last values, not the history; a receiver that was listening
    /// hears datagram 0.)
    fn begin_session(
        &mut self,
        now: Instant,
        key: SessionKey,
        (seq, msg): (u64, u64),
        (cache, heard): (bool, u64),
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let fresh = self.ensure_session(now, key, seq, msg, out);
        if fresh && cache && heard > 0 && self.cfg.snapshots {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.snap = Snap::Waiting { since: now };
                s.reported = None;
                self.next_ask = Some(now);
            }
        }
    }

    /// Creates the session at `seq`/`msg` if it is new, and notes it was heard
    /// (announcing it when it is new or was gone). True when it is new.
    fn ensure_session(
        &mut self,
        now: Instant,
        key: SessionKey,
        seq: u64,
        msg: u64,
        out: &mut dyn FnMut(Delivery<'_>),
    ) -> bool {
        if self.next_liveness.is_none() {
            self.next_liveness = Some(now + self.cfg.publisher_timeout / 4);
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.last_seen = now;
            if s.gone {
                s.gone = false;
                out(Delivery::Joined { from: key });
            }
            return false;
        }
        self.make_room(now, out);
        add(&mut self.counters.sessions, 1);
        // A late joiner starts at the live position: nothing before is owed to it.
        self.sessions.insert(
            key,
            Session {
                next_seq: seq,
                next_msg: msg,
                last_seen: now,
                asm: Reassembly::default(),
                reported: None,
                last_status: now,
                held: BTreeMap::new(),
                highest: seq,
                tail_msg: None,
                oldest_available: 0,
                gap_since: None,
                front: seq,
                nak_due: None,
                nak_attempts: 0,
                nak_backoff: Duration::ZERO,
                naked_upto: 0,
                fresh_due: None,
                renak_at: None,
                front_naked_at: None,
                repair_time: None,
                gone: false,
                snap: Snap::Live,
            },
        );
        out(Delivery::Joined { from: key });
        true
    }

    /// Processes one datagram from the data port (data or heartbeat) received at
    /// `now` from `source`, handing every resulting message or loss to `out`. A
    /// malformed datagram is counted and returned as an error; it changes no state.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        bytes: &[u8],
        out: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<(), WireError> {
        let head = Header::decode(bytes);
        if head.is_ok_and(|h| h.network != self.cfg.network) {
            // Another network on the same group and port: not ours, not malformed.
            add(&mut self.counters.foreign, 1);
            return Ok(());
        }
        let kind = head.map(|h| h.kind);
        let cache = header_flags(bytes) & CACHE_FLAG != 0;
        if kind == Ok(Kind::Heartbeat) {
            return match Heartbeat::decode(bytes) {
                Ok(hb) => {
                    self.on_heartbeat(now, source, hb, cache, out);
                    Ok(())
                }
                Err(e) => {
                    add(&mut self.counters.malformed, 1);
                    Err(e)
                }
            };
        }
        let (header, frames) = match Frames::decode(bytes, self.cfg.max_message) {
            Ok(d) => d,
            Err(e) => {
                add(&mut self.counters.malformed, 1);
                return Err(e);
            }
        };
        let key = SessionKey {
            source,
            session: header.session,
        };
        let first_start = first_start(&header, &frames);
        let reliable = self.cfg.reliable;
        let (join_seq, join_msg) = if reliable && header.seq <= JOIN_FROM_START {
            (0, 0)
        } else {
            (header.seq, first_start)
        };
        if !self.plausible(key, (header.seq, first_start), (join_seq, join_msg)) {
            return Ok(());
        }
        self.begin_session(now, key, (join_seq, join_msg), (cache, header.seq), out);
        let Some(s) = self.sessions.get_mut(&key) else {
            return Ok(());
        };
        if s.waiting() {
            let first = frames.clone().next().map_or(0, |f| f.snapshot);
            let burst = first & SNAPSHOT_FIRST != 0;
            if !burst && s.snap != Snap::Rejoin {
                // What this carries is in the snapshot to come, or follows it.
                s.next_seq = s.next_seq.max(header.seq + 1);
                add(&mut self.counters.before_snapshot, 1);
                return Ok(());
            }
            let (n, bytes) = s.rejoin_at(header.seq, first_start, &mut self.pool);
            self.held_total -= n;
            self.held_bytes -= bytes;
            s.snap = if burst { Snap::InBurst } else { Snap::Live };
        }
        if header.seq < s.next_seq || s.held.contains_key(&header.seq) {
            add(&mut self.counters.duplicates, 1);
            return Ok(());
        }
        if header.seq > s.next_seq {
            if first_start < s.next_msg {
                // Sequence moved forward while message numbers went back: not our sender.
                add(&mut self.counters.malformed, 1);
                return Err(WireError::FragmentOutOfRange);
            }
            if !reliable {
                lose_until(s, key, header.seq, first_start, &mut self.counters, out);
            } else {
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(bytes);
                self.held_bytes += buf.len();
                s.held.insert(
                    header.seq,
                    Held {
                        first_start,
                        bytes: buf,
                    },
                );
                s.highest = s.highest.max(header.seq + 1);
                self.held_total += 1;
                add(&mut self.counters.reordered, 1);
                self.open_gap(now, key);
                if self.held_total > self.cfg.reorder_limit
                    || self.held_bytes > self.cfg.reorder_bytes
                {
                    // The session holding the most gives up its oldest gap.
                    add(&mut self.counters.lost_reorder_full, 1);
                    let victim = self
                        .sessions
                        .iter()
                        .max_by_key(|(_, s)| s.held.len())
                        .map_or(key, |(k, _)| *k);
                    self.give_up_front_gap(now, victim, out);
                    if victim != key {
                        self.drain(now, key, out);
                    }
                } else {
                    // it may be where the data the publisher still holds begins
                    self.drain(now, key, out);
                }
                return Ok(());
            }
        }
        if s.gap_since.is_some() || s.highest > header.seq + 1 {
            // it fills a gap we knew of (held datagrams after it, or a heartbeat)
            add(&mut self.counters.repaired, 1);
            if let Some(t) = s.front_naked_at.take() {
                let sample = now.saturating_duration_since(t);
                s.repair_time = Some(match s.repair_time {
                    Some(r) => (r * 7 + sample) / 8,
                    None => sample,
                });
            }
        }
        s.highest = s.highest.max(header.seq + 1);
        process(
            s,
            key,
            (header, first_start),
            frames,
            &mut self.counters,
            &mut self.asm,
            out,
        )?;
        self.drain(now, key, out);
        Ok(())
    }

    fn on_heartbeat(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        hb: Heartbeat,
        cache: bool,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        add(&mut self.counters.heartbeats, 1);
        let key = SessionKey {
            source,
            session: hb.session,
        };
        let reliable = self.cfg.reliable;
        let (join_seq, join_msg) = if reliable && hb.next_seq <= JOIN_FROM_START {
            (0, 0)
        } else {
            (hb.next_seq, hb.next_msg_seq)
        };
        if !self.plausible(key, (hb.next_seq, hb.next_msg_seq), (join_seq, join_msg)) {
            return;
        }
        self.begin_session(now, key, (join_seq, join_msg), (cache, hb.next_seq), out);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.waiting() {
            // Nothing is missing before the snapshot: only the position moves.
            s.next_seq = s.next_seq.max(hb.next_seq);
            return;
        }
        s.oldest_available = s.oldest_available.max(hb.oldest);
        if hb.next_seq >= s.highest {
            s.highest = hb.next_seq;
            s.tail_msg = Some(hb.next_msg_seq);
        }
        if hb.next_seq <= s.next_seq {
            return;
        }
        if !reliable {
            lose_until(
                s,
                key,
                hb.next_seq,
                hb.next_msg_seq,
                &mut self.counters,
                out,
            );
            return;
        }
        self.open_gap(now, key);
        self.drain(now, key, out);
    }

    /// Time between full NAK rounds at the start of a gap: the configured interval,
    /// or twice the time repairs have been taking, whichever is longer.
    fn base_interval(&self, s: &Session) -> Duration {
        let max = self.cfg.nak_max_interval.max(self.cfg.nak_interval);
        s.repair_time
            .map_or(self.cfg.nak_interval, |r| {
                (r * 2).max(self.cfg.nak_interval)
            })
            .min(max)
    }

    /// Notes that datagrams of a session are missing: starts its gap episode if none
    /// is open, and schedules a first NAK (after a random delay) for holes never
    /// NAKed.
    fn open_gap(&mut self, now: Instant, key: SessionKey) {
        let delay = self.random_delay();
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let base = self.base_interval(s);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.gap_since.is_none() {
            s.gap_since = Some(now);
            s.front = s.next_seq;
            s.nak_attempts = 0;
            s.nak_backoff = base;
        }
        if s.fresh_due.is_none() && s.has_unnaked() {
            s.fresh_due = Some(now + delay);
        }
        if s.fresh_due.is_none() && s.renak_at.is_none() && s.missing() {
            // every hole was asked for before, but no round is pending: ask again
            s.renak_at = Some(now + delay);
        }
        s.sync_due();
        if let Some(due) = s.nak_due {
            self.next_timeout = Some(self.next_timeout.map_or(due, |t| t.min(due)));
        }
    }

    /// Delivers held datagrams that are next in line, gives up gaps the publisher can
    /// no longer repair, and settles the session's gap timer.
    fn drain(&mut self, now: Instant, key: SessionKey, out: &mut dyn FnMut(Delivery<'_>)) {
        loop {
            let Some(s) = self.sessions.get_mut(&key) else {
                return;
            };
            // Held datagrams a loss has jumped over (already reported) are let go.
            while let Some(stale) = s.held.first_entry().filter(|e| *e.key() < s.next_seq) {
                let bytes = stale.remove().bytes;
                self.held_total -= 1;
                self.held_bytes -= bytes.len();
                recycle(&mut self.pool, bytes);
            }
            if let Some(held) = s.held.remove(&s.next_seq) {
                self.held_total -= 1;
                self.held_bytes -= held.bytes.len();
                if let Ok((header, frames)) = Frames::decode(&held.bytes, self.cfg.max_message) {
                    let c = &mut self.counters;
                    let first = first_start(&header, &frames);
                    let _ = process(s, key, (header, first), frames, c, &mut self.asm, out);
                }
                recycle(&mut self.pool, held.bytes);
                continue;
            }
            // Data older than what the publisher retains will never come: report it as
            // soon as we know where the next available data starts.
            if s.next_seq < s.oldest_available && s.missing() {
                // The next data still to be had: a datagram we hold from before the
                // window's start, else the window's start.
                let end = match s.held.range(s.next_seq..).next() {
                    Some((&k, _)) if k < s.oldest_available => k,
                    _ => s.oldest_available,
                };
                let resume = match s.held.get(&end) {
                    Some(h) => Some(h.first_start),
                    None if end == s.highest => s.tail_msg,
                    None => None,
                };
                if let Some(msg) = resume {
                    add(&mut self.counters.lost_beyond_window, 1);
                    lose_until(s, key, end, msg, &mut self.counters, out);
                    s.gap_since = None;
                    continue;
                }
            }
            break;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if !s.missing() {
            let had_timer = s.nak_due.is_some();
            s.close_gap();
            if had_timer {
                self.next_timeout = self.sessions.values().filter_map(|s| s.nak_due).min();
            }
        } else if s.gap_since.is_none() {
            self.open_gap(now, key);
        }
    }

    /// Declares the gap at the front of a session lost (up to the next datagram that
    /// is held, or the heartbeat's tail) and delivers what follows it.
    fn give_up_front_gap(
        &mut self,
        now: Instant,
        key: SessionKey,
        out: &mut dyn FnMut(Delivery<'_>),
    ) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let next = s
            .held
            .range(s.next_seq..)
            .next()
            .map(|(&seq, h)| (seq, h.first_start));
        let (end, msg) = match next {
            Some(n) => n,
            None => match s.tail_msg {
                Some(m) if s.highest > s.next_seq => (s.highest, m),
                _ => return,
            },
        };
        lose_until(s, key, end, msg, &mut self.counters, out);
        s.gap_since = None;
        self.drain(now, key, out);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = match (self.next_timeout, self.next_liveness) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A late joiner asks for its snapshot again (or gives up) on time.
        match (t, self.next_ask) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Declares sessions not heard for the publisher timeout gone: their gaps that
    /// are still open are reported lost first, then [`Delivery::Gone`].
    fn check_liveness(&mut self, now: Instant, out: &mut dyn FnMut(Delivery<'_>)) {
        let timeout = self.cfg.publisher_timeout;
        let silent: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.gone && now.saturating_duration_since(s.last_seen) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in silent {
            self.declare_gone(now, key, out);
        }
        self.next_timeout = self.sessions.values().filter_map(|s| s.nak_due).min();
        self.next_liveness = self
            .sessions
            .values()
            .any(|s| !s.gone)
            .then(|| now + timeout / 4);
    }

    /// A session's publisher is gone (silent, or its session evicted): what is still
    /// missing is reported lost, then [`Delivery::Gone`]; its reassembly buffer is
    /// freed.
    fn declare_gone(&mut self, now: Instant, key: SessionKey, out: &mut dyn FnMut(Delivery<'_>)) {
        // Nobody is left to repair what is missing: report it now.
        for _ in 0..=self.cfg.reorder_limit {
            let before = self.sessions.get(&key).map(|s| s.next_seq);
            if !self.sessions.get(&key).is_some_and(|s| s.missing()) {
                break;
            }
            self.give_up_front_gap(now, key, out);
            if self.sessions.get(&key).map(|s| s.next_seq) == before {
                break; // the end of the gap is unknown (no heartbeat told it)
            }
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            if s.asm.active {
                // the rest of a fragmented message will not come either
                s.asm.active = false;
                add(&mut self.counters.gaps, 1);
                add(&mut self.counters.lost_messages, 1);
                out(Delivery::Loss {
                    from: key,
                    from_seq: s.next_msg,
                    to_seq: s.next_msg + 1,
                });
                s.next_msg += 1;
            }
            s.gone = true;
            s.close_gap();
            self.asm.used -= s.asm.buf.capacity();
            s.asm.buf = Vec::new();
            add(&mut self.counters.sessions_gone, 1);
            out(Delivery::Gone { from: key });
        }
    }

    /// Sends due NAKs (into the queue read by [`poll_nak`](Self::poll_nak)), gives
    /// up gaps whose NAKs went unanswered `nak_retries` times, and declares silent
    /// sessions gone.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut dyn FnMut(Delivery<'_>)) {
        if self.next_liveness.is_some_and(|t| t <= now) {
            self.check_liveness(now, out);
        }
        if self.next_timeout.is_none_or(|t| t > now) {
            return;
        }
        let due: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.nak_due.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(s) = self.sessions.get_mut(&key) {
                if s.front != s.next_seq {
                    // the gap that was at the front was filled: the next one gets its
                    // own allowance of NAKs
                    s.front = s.next_seq;
                    s.gap_since = Some(now);
                    s.nak_attempts = 0;
                    s.front_naked_at = None;
                }
            }
            let expired = self
                .sessions
                .get(&key)
                .is_some_and(|s| s.nak_attempts >= self.cfg.nak_retries);
            if expired {
                add(&mut self.counters.lost_nak_timeout, 1);
                self.give_up_front_gap(now, key, out);
                continue;
            }
            let max_interval = self.cfg.nak_max_interval.max(self.cfg.nak_interval);
            let delay = self.cfg.nak_delay;
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            // A full round asks for every hole again; otherwise only for holes never
            // asked for (their first NAK).
            let full = s.renak_at.is_none_or(|t| t <= now);
            let first = s.next_seq.max(s.oldest_available);
            let start = if full { first } else { first.max(s.naked_upto) };
            let mut from = start;
            let mut ranges = 0;
            let mut asked_front = false;
            let mut truncated = false;
            for (&seq, _) in s.held.range(start..) {
                if seq > from {
                    if ranges == NAK_RANGES {
                        truncated = true;
                        break;
                    }
                    self.naks.push((key, from, seq));
                    asked_front |= from == first;
                    ranges += 1;
                    s.naked_upto = s.naked_upto.max(seq);
                }
                from = seq + 1;
            }
            if !truncated && s.highest > from {
                if ranges < NAK_RANGES {
                    self.naks.push((key, from, s.highest));
                    asked_front |= from == first;
                    ranges += 1;
                    s.naked_upto = s.naked_upto.max(s.highest);
                } else {
                    truncated = true;
                }
            }
            add(&mut self.counters.naks, ranges as u64);
            if asked_front {
                s.nak_attempts += 1;
                s.front_naked_at.get_or_insert(now);
            }
            if full {
                s.renak_at = Some(now + s.nak_backoff);
                s.nak_backoff = (s.nak_backoff * 2).min(max_interval);
            }
            // more holes than one NAK carries: the rest go shortly
            s.fresh_due = truncated.then(|| now + delay.max(Duration::from_micros(50)));
            s.sync_due();
        }
        self.next_timeout = self.sessions.values().filter_map(|s| s.nak_due).min();
    }

    /// Another receiver NAKed datagrams `from..to` of session id `session`. Where that
    /// covers the front of a gap of ours whose NAK is not yet due, ours is held back
    /// for a NAK interval as if we had sent it: the retransmission is multicast, so it
    /// reaches us too, and a hundred receivers that lost the same datagram do not all
    /// ask for it.
    pub fn on_nak_heard(&mut self, now: Instant, session: u32, from: u64, to: u64) {
        let max_interval = self.cfg.nak_max_interval.max(self.cfg.nak_interval);
        for (key, s) in self.sessions.iter_mut() {
            if key.session != session || s.gone || !s.missing() {
                continue;
            }
            let Some(due) = s.fresh_due else { continue };
            let start = s.next_seq.max(s.oldest_available).max(s.naked_upto);
            if due <= now || from > start || to <= start {
                continue;
            }
            // as if we had sent it
            if s.front != s.next_seq {
                s.front = s.next_seq;
                s.gap_since = Some(now);
                s.nak_attempts = 0;
                s.front_naked_at = None;
            }
            // It stands for our round only when one of ours would be due: many
            // receivers' NAKs within one interval count as one round, not many.
            let round_due = s.renak_at.is_none_or(|t| t <= now);
            if round_due && from <= s.next_seq.max(s.oldest_available) {
                s.nak_attempts += 1;
                s.front_naked_at.get_or_insert(now);
                s.renak_at = Some(now + s.nak_backoff);
                s.nak_backoff = (s.nak_backoff * 2).min(max_interval);
            }
            s.naked_upto = s.naked_upto.max(to);
            if s.renak_at.is_none() {
                s.renak_at = Some(now + s.nak_backoff);
            }
            if !s.has_unnaked() {
                s.fresh_due = None;
            }
            s.sync_due();
            add(&mut self.counters.naks_suppressed, 1);
        }
        self.next_timeout = self.sessions.values().filter_map(|s| s.nak_due).min();
    }

    /// Hands out queued NAKs as (session, first missing, one past the last).
    pub fn poll_nak(&mut self, out: &mut dyn FnMut(SessionKey, u64, u64)) {
        for (k, from, to) in self.naks.drain(..) {
            out(k, from, to);
        }
    }

    /// Calls `out(session, next_seq, window)` for every session that is owed a status
    /// now: a new session at once, then whenever the position moved a quarter of
    /// `window` (or [`ReceiverConfig::status_every`] datagrams, if fewer) past the last
    /// report, or `STATUS_INTERVAL` passed while it was sending.
    /// `window` is shared among the sessions heard recently.
    pub fn poll_status(
        &mut self,
        now: Instant,
        window: u32,
        out: &mut dyn FnMut(SessionKey, u64, u32, bool),
    ) {
        let live = self
            .sessions
            .values()
            .filter(|s| now.saturating_duration_since(s.last_seen) < SESSION_QUIET)
            .count()
            .max(1);
        let share = (window / live as u32).max(1);
        let every = (share / 4).min(self.cfg.status_every).max(1);
        self.next_ask = None;
        for (key, s) in self.sessions.iter_mut() {
            if now.saturating_duration_since(s.last_seen) >= SESSION_QUIET {
                continue;
            }
            if let Snap::Waiting { since } = s.snap {
                if now.saturating_duration_since(since) >= SNAPSHOT_WAIT {
                    s.snap = Snap::Rejoin;
                    add(&mut self.counters.snapshot_timeouts, 1);
                    continue;
                }
                // Ask (again) for the snapshot.
                if s.reported.is_none()
                    || now.saturating_duration_since(s.last_status) >= SNAPSHOT_ASK
                {
                    out(*key, s.next_seq, share, true);
                    s.reported = Some(s.next_seq);
                    s.last_status = now;
                }
                let ask = s.last_status + SNAPSHOT_ASK;
                self.next_ask = Some(self.next_ask.map_or(ask, |a| a.min(ask)));
                continue;
            }
            if s.snap == Snap::Rejoin {
                continue;
            }
            let due = match s.reported {
                None => true,
                Some(pos) => {
                    s.next_seq.saturating_sub(pos) >= u64::from(every)
                        || (now.saturating_duration_since(s.last_status) >= STATUS_INTERVAL
                            && pos != s.next_seq)
                        || now.saturating_duration_since(s.last_status) >= STATUS_INTERVAL * 20
                }
            };
            if due {
                out(*key, s.next_seq, share, false);
                s.reported = Some(s.next_seq);
                s.last_status = now;
            }
        }
    }

    /// Forgets the least recently heard sessions until there is room for one more;
    /// one still live is first declared gone (its open gaps reported lost).
    fn make_room(&mut self, now: Instant, out: &mut dyn FnMut(Delivery<'_>)) {
        while self.sessions.len() >= self.cfg.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, s)| (*k, s.gone));
            let Some((key, gone)) = oldest else { return };
            if !gone {
                self.declare_gone(now, key, out);
            }
            let Some(s) = self.sessions.remove(&key) else {
                return;
            };
            self.held_total -= s.held.len();
            self.asm.used -= s.asm.buf.capacity();
            for h in s.held.into_values() {
                self.held_bytes -= h.bytes.len();
                recycle(&mut self.pool, h.bytes);
            }
            add(&mut self.counters.sessions_evicted, 1);
        }
    }

    /// Whether a datagram or heartbeat at `(seq, msg)` may be taken for its session
    /// (see [`Session::implausible`]; a new session would start at `join`); an
    /// implausible one is counted and changes nothing, unless its session was
    /// declared gone: that is joined again there.
    fn plausible(&mut self, key: SessionKey, (seq, msg): (u64, u64), join: (u64, u64)) -> bool {
        let Some(s) = self.sessions.get_mut(&key) else {
            if too_many_messages(join, (seq, msg)) {
                add(&mut self.counters.implausible, 1);
                return false;
            }
            return true;
        };
        if !s.implausible(seq, msg, self.cfg.max_jump) {
            return true;
        }
        if !s.gone {
            add(&mut self.counters.implausible, 1);
            return false;
        }
        let (n, bytes) = s.rejoin_at(seq, msg, &mut self.pool);
        self.held_total -= n;
        self.held_bytes -= bytes;
        true
    }
}

/// The first message a data datagram starts (a leading continuation belongs to an
/// earlier one).
fn first_start(header: &Header, frames: &Frames<'_>) -> u64 {
    let first = frames.clone().next();
    let mid = matches!(first, Some(Frame { fragment: Some(f), .. }) if !f.is_first());
    header.msg_seq + u64::from(mid)
}

/// Whether reaching datagram `seq` at message `msg` from `(next_seq, next_msg)`
/// takes more messages than the datagrams in between can carry (one more for a
/// message begun in the last of them): a datagram in sequence skips none.
fn too_many_messages((next_seq, next_msg): (u64, u64), (seq, msg): (u64, u64)) -> bool {
    let datagrams = seq.saturating_sub(next_seq);
    msg > next_msg
        .saturating_add(datagrams.saturating_mul(MAX_FRAMES))
        .saturating_add(1)
}

/// Bytes of reassembly buffers (their capacity) over all sessions, and the bound.
#[derive(Debug)]
struct AsmBudget {
    used: usize,
    limit: usize,
}

/// Keeps a spare datagram buffer for reuse, while the pool is not full.
fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_KEEP {
        pool.push(buf);
    }
}

/// Adds to a counter, saturating (a hostile peer must not make it wrap, or panic a
/// build with overflow checks).
fn add(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

/// Declares datagrams `next_seq..seq` lost, and with them messages `next_msg..msg`.
fn lose_until(
    s: &mut Session,
    key: SessionKey,
    seq: u64,
    msg: u64,
    c: &mut ReceiverCounters,
    out: &mut dyn FnMut(Delivery<'_>),
) {
    if seq <= s.next_seq {
        return;
    }
    add(&mut c.gaps, 1);
    add(&mut c.lost_datagrams, seq - s.next_seq);
    s.asm.active = false;
    if msg > s.next_msg {
        add(&mut c.lost_messages, msg - s.next_msg);
        out(Delivery::Loss {
            from: key,
            from_seq: s.next_msg,
            to_seq: msg,
        });
        s.next_msg = msg;
    }
    s.next_seq = seq;
    s.highest = s.highest.max(seq);
}

/// Whether a complete message (a snapshot entry when `snapshot`) is delivered: the
/// entries of the burst a late joiner joined at are (until its first live message),
/// those of bursts meant for other receivers are skipped (counted).
fn deliverable(s: &mut Session, snapshot: bool, c: &mut ReceiverCounters) -> bool {
    match (snapshot, s.snap) {
        (true, Snap::InBurst) => {
            add(&mut c.snapshot_messages, 1);
            true
        }
        (true, _) => {
            add(&mut c.snapshot_skipped, 1);
            false
        }
        (false, Snap::InBurst) => {
            s.snap = Snap::Live;
            true
        }
        (false, _) => true,
    }
}

/// Delivers the frames of the datagram that is next in line (`header.seq == next_seq`).
fn process(
    s: &mut Session,
    key: SessionKey,
    (header, first): (Header, u64),
    frames: Frames<'_>,
    c: &mut ReceiverCounters,
    budget: &mut AsmBudget,
    out: &mut dyn FnMut(Delivery<'_>),
) -> Result<(), WireError> {
    // `first` is `first_start(&header, &frames)`: the caller has it.
    let starts_mid_message = first != header.msg_seq;
    if !starts_mid_message && header.msg_seq != s.next_msg {
        if header.msg_seq < s.next_msg {
            // Changes nothing: the genuine datagram with this sequence may still come.
            add(&mut c.malformed, 1);
            return Err(WireError::FragmentOutOfRange);
        }
        // In sequence but message numbers jumped: report them rather than hide it.
        add(&mut c.lost_messages, header.msg_seq - s.next_msg);
        out(Delivery::Loss {
            from: key,
            from_seq: s.next_msg,
            to_seq: header.msg_seq,
        });
        s.next_msg = header.msg_seq;
        s.asm.active = false;
    }
    s.next_seq = header.seq + 1;
    add(&mut c.datagrams, 1);

    let mut seq = header.msg_seq;
    for frame in frames {
        match frame.fragment {
            None => {
                if deliverable(s, frame.snapshot & SNAPSHOT != 0, c) {
                    add(&mut c.messages, 1);
                    add(&mut c.bytes, frame.payload.len() as u64);
                    out(Delivery::Message {
                        from: key,
                        seq,
                        topic: frame.topic,
                        payload: frame.payload,
                        expires: frame.expires,
                        snapshot: s.snap == Snap::InBurst,
                    });
                }
                seq += 1;
                s.next_msg = seq;
            }
            Some(f) if f.is_first() => {
                let a = &mut s.asm;
                let total = f.total_len as usize;
                let others = budget.used - a.buf.capacity();
                if others.saturating_add(total) > budget.limit {
                    // Reassembly memory is bounded over all sessions: this message is
                    // lost, and said so (its continuations are skipped).
                    a.active = false;
                    add(&mut c.reassembly_refused, 1);
                    add(&mut c.lost_messages, 1);
                    out(Delivery::Loss {
                        from: key,
                        from_seq: seq,
                        to_seq: seq + 1,
                    });
                    s.next_msg = seq + 1;
                    continue;
                }
                a.active = true;
                a.msg_seq = seq;
                a.expires = frame.expires;
                a.snapshot = frame.snapshot & SNAPSHOT != 0;
                a.total = f.total_len as usize;
                a.topic.clear();
                a.topic.push_str(frame.topic);
                a.buf.clear();
                let before = a.buf.capacity();
                a.buf.reserve_exact(total);
                a.buf.extend_from_slice(frame.payload);
                budget.used = budget.used - before + a.buf.capacity();
            }
            Some(f) => {
                let a = &mut s.asm;
                let continues = a.active
                    && a.msg_seq == seq
                    && a.buf.len() == f.offset as usize
                    && a.total == f.total_len as usize
                    && a.buf.len() + frame.payload.len() <= a.total
                    && a.topic == frame.topic;
                if continues {
                    // within the capacity reserved for `total`: no reallocation
                    a.buf.extend_from_slice(frame.payload);
                    if a.buf.len() == a.total {
                        a.active = false;
                        s.next_msg = seq + 1;
                        let snapshot = a.snapshot;
                        if deliverable(s, snapshot, c) {
                            add(&mut c.messages, 1);
                            add(&mut c.bytes, s.asm.buf.len() as u64);
                            out(Delivery::Message {
                                from: key,
                                seq,
                                topic: &s.asm.topic,
                                payload: &s.asm.buf,
                                expires: s.asm.expires,
                                snapshot: s.snap == Snap::InBurst,
                            });
                        }
                        if s.asm.buf.capacity() > ASM_KEEP {
                            // a large message's buffer is not kept for the next one
                            budget.used -= s.asm.buf.capacity();
                            s.asm.buf = Vec::new();
                        }
                    }
                } else if !a.active && seq < s.next_msg {
                    // The rest of a message already reported lost, or begun before
                    // this receiver joined.
                } else {
                    add(&mut c.malformed, 1);
                    a.active = false;
                    if seq >= s.next_msg {
                        add(&mut c.lost_messages, seq + 1 - s.next_msg);
                        out(Delivery::Loss {
                            from: key,
                            from_seq: s.next_msg,
                            to_seq: seq + 1,
                        });
                        s.next_msg = seq + 1;
                    }
                }
            }
        }
    }
    Ok(())
}
