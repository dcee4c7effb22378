//! Inline threading (Aeron's "invoker"): no agent threads. The application's own
//! calls run the sender's and the receiver's duty cycles.
//!
//! - `offer`/`commit` runs a sender cycle at once, so a message is handed to the
//!   kernel before `offer` returns — unless the node is in a burst: a message offered
//!   before the previous send's cost has been paid again in application time (the
//!   previous cycle's duration, at most [`MAX_HOLD`]) waits in the datagram being
//!   built and goes, packed with what follows, at the next call that finds the hold
//!   over. That is natural batching on one thread: at low rates every message goes
//!   alone and at once, at full speed datagrams fill up, and no timer ever waits to
//!   fill one. While the publisher's ring is empty, `offer` appends the message
//!   straight to the datagram being built and `try_claim` hands out room in it (the
//!   application writes the message where it is sent from), under the sender's lock:
//!   no ring record, no second copy. Anything else (a busy sender, flow control, the
//!   rate limit) goes through the ring as before, so order holds.
//! - `Subscriber::poll` runs a receiver cycle (reading the socket itself) and takes
//!   its own messages straight out of the receive buffer while its ring is empty
//!   (one copy fewer, no ring record; other subscriptions get theirs in their
//!   rings); `poll_timeout`/`recv` block in the kernel when the idle strategy says to
//!   park, and take what wakes them the same way. A parking poller whose last
//!   receive brought a packed burst (a publisher at full speed) polls the socket for
//!   up to [`DENSE_SPIN`] before it blocks: the next datagram is usually closer than
//!   that, and a blocked receiver costs the publisher a wake-up (an IPI, a VM exit on
//!   a virtual machine) per datagram and itself a trip through the scheduler. At low
//!   rates (a message or two per receive) it blocks at once, as before.
//! - `Node::do_work` runs both, with the control socket (status, NAKs) and timers.
//! - A backstop thread, parked (it never spins), runs the cycles when the
//!   application has not called in for a while: held datagrams, NAK answers, status
//!   messages and heartbeats never wait for the application.
//!
//! The agents sit behind `try_lock`s that are never waited on: a thread that finds
//! one taken leaves the work to the holder (a flag makes the holder look again, so a
//! commit racing with a running cycle is never stranded).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::thread;

use spin::mutex::{SpinMutex, SpinMutexGuard};
use std::time::{Duration, Instant};

use super::{Direct, ReceiverAgent, SenderAgent, Shared};
use crate::config::IdleStrategy;

/// The longest a burst holds a message back (a slow cycle, e.g. preempted, does not
/// hold the next message for long).
/// (Holding for longer packs fuller datagrams — 1.5× the send's cost 55 messages
/// per 64 KiB datagram of 1 KB messages, 2.5× 59, against 53 — but measured side by
/// side on the project's 2-core VM, three rounds of three reps each, it bought no
/// throughput the noise did not swamp, and it adds its wait to every message of a
/// burst.)
const MAX_HOLD: Duration = Duration::from_micros(20);
/// A receive that handed over at least this many messages means the publisher is
/// batching (it is at full speed): the poller then polls before it blocks...
const DENSE_MESSAGES: u64 = 16;
/// ...for up to this long (a datagram of the burst comes every ~15 µs at full speed
/// with 1 KB messages on the project's VM).
const DENSE_SPIN: Duration = Duration::from_micros(30);
/// The control socket is read at least this often while the application offers or
/// calls `do_work` (an application spinning on `do_work` between its sends would
/// otherwise pay a receive syscall per turn, and be that much late when its send
/// time comes). Status and NAKs are millisecond-scale; a sender held by a
/// receiver's window reads it on every cycle.
const CONTROL_EVERY: Duration = Duration::from_micros(50);
/// The backstop runs a side's cycles after the application has not run them for
/// this long, and looks this often while there is traffic...
const BACKSTOP_MIN: Duration = Duration::from_millis(1);
/// ...and backs off to this while the node is idle (no datagram sent or received),
/// never past a protocol timer (an idle publisher's heartbeat, a receiver's status
/// or liveness timer): an idle node wakes a few times a second.
const BACKSTOP_MAX: Duration = Duration::from_millis(250);
/// The shortest the backstop parks (a timer due at once is run after this).
const BACKSTOP_FLOOR: Duration = Duration::from_micros(100);
/// Cycles one backstop turn runs at most before it looks at the clock again.
const BACKSTOP_CYCLES: usize = 64;
/// A parking poller blocks in the kernel (after [`DENSE_SPIN`] in a burst) for at
/// most this long at a time (and never past a protocol timer: a datagram
/// ends the block at once, so this only bounds an idle poller's wake-ups).
const MAX_BLOCK: Duration = Duration::from_millis(250);

pub(crate) struct Tx {
    agent: SenderAgent,
    /// When (ns on the inline clock) the control socket is read next.
    next_control: u64,
    /// The OS clock's time read last (after the last send).
    last_os: Instant,
}

impl Tx {
    /// The time for an offer into the machine: the OS clock's when the offer may start
    /// a datagram (the rate limit reads it), else the last reading (not read by the
    /// machine: see `Publisher::mid_datagram`). Returns it, and whether it is fresh.
    fn offer_time(&self) -> (Instant, bool) {
        if self.agent.mid_datagram() {
            (self.last_os, false)
        } else {
            (Instant::now(), true)
        }
    }
}

/// The clock of the inline fast path: the CPU's time-stamp counter where it is
/// invariant, scaled to nanoseconds (`quanta`; else the OS clock). An offer reads it
/// to decide whether a burst holds the message, at well under half of
/// `Instant::now()`'s cost (12 against 32 ns on this project's VM); the OS clock is
/// read only when a datagram starts or goes.
struct Clock {
    clock: quanta::Clock,
    epoch: u64,
}

impl Clock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        Clock { clock, epoch }
    }

    /// Nanoseconds since the node started.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.delta_as_nanos(self.epoch, self.clock.raw())
    }
}

/// A claim in the datagram being built (inline threading): the sender's lock is held
/// until it is committed or dropped; dropped, it publishes nothing.
pub(crate) struct DirectClaim<'a> {
    tx: Option<Held<'a, Tx>>,
    room: std::ops::Range<usize>,
    now: Instant,
    /// Whether `now` was read for this claim.
    fresh: bool,
    /// `now` on the inline clock.
    t: u64,
    inline: &'a Inline,
    shared: &'a Shared,
}

impl DirectClaim<'_> {
    /// The payload bytes to fill.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.tx {
            Some(tx) => tx.agent.claimed_ref(self.room.clone()),
            None => &[],
        }
    }

    /// The same, writable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.tx {
            Some(tx) => tx.agent.claimed(self.room.clone()),
            None => &mut [],
        }
    }
}

impl Drop for DirectClaim<'_> {
    /// An abandoned claim: nothing is numbered or sent (the frame head written past
    /// the datagram's end is overwritten by the next message).
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            self.inline.released(self.shared);
        }
    }
}

/// The agents of an inline node, driven by whichever thread calls in.
pub(crate) struct Inline {
    tx: SpinMutex<Tx>,
    rx: SpinMutex<ReceiverAgent>,
    /// Set by a thread that wanted a sender cycle while another ran one.
    tx_wanted: AtomicBool,
    /// Records wait in a publisher ring (a burst held them back).
    tx_held: AtomicBool,
    /// The last receive that got anything brought a packed burst
    /// ([`DENSE_MESSAGES`]).
    rx_dense: AtomicBool,
    clock: Clock,
    /// Until when (ns since `epoch`) an offer joins the next datagram.
    hold_until: AtomicU64,
    /// When a sender cycle last ran for the application (an offer, `flush`,
    /// `do_work`), on the inline clock.
    last_tx: AtomicU64,
    /// When a receiver cycle last ran for the application (`poll`, `do_work`).
    last_rx: AtomicU64,
    /// How an application thread waits in `poll_timeout`, `recv` and `flush`.
    idle: IdleStrategy,
}

/// An agent held by the thread running its cycle. The locks are never waited on
/// (`try_lock` only: a thread that finds one taken leaves the work to the holder), so
/// they are spin locks that are never spun on: taking one is a compare-exchange and
/// releasing it a plain store. A `std` mutex's release is an atomic exchange (it looks
/// for sleepers), and on the offer path that exchange waited for the message copy just
/// written to drain from the store buffer: ~18 ns of a ~240 ns offer at full speed.
/// A cycle that panics leaves the agent in an unknown state: the guard stops the node
/// (as a poisoned mutex did).
struct Held<'a, T> {
    guard: SpinMutexGuard<'a, T>,
    shared: &'a Shared,
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.shared
                .fail("an inline duty cycle panicked".to_string());
        }
    }
}

/// Datagrams sent and received so far: whether the node has traffic.
fn activity(shared: &Shared) -> (u64, u64) {
    (
        shared.counters.tx.datagrams.get(),
        shared.counters.rx.datagrams.get(),
    )
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Inline {
    pub(crate) fn new(tx: SenderAgent, rx: ReceiverAgent, idle: IdleStrategy) -> Self {
        Inline {
            tx: SpinMutex::new(Tx {
                agent: tx,
                next_control: 0,
                last_os: Instant::now(),
            }),
            rx: SpinMutex::new(rx),
            tx_wanted: AtomicBool::new(false),
            tx_held: AtomicBool::new(false),
            rx_dense: AtomicBool::new(false),
            clock: Clock::new(),
            hold_until: AtomicU64::new(0),
            last_tx: AtomicU64::new(0),
            last_rx: AtomicU64::new(0),
            idle,
        }
    }

    /// Notes that the application runs the sender; returns the time on the inline
    /// clock.
    #[inline]
    fn note_tx(&self) -> u64 {
        let t = self.clock.now();
        self.last_tx.store(t, Ordering::Relaxed);
        t
    }

    /// Notes that the application runs the receiver (or reads what it received: a
    /// poller draining its ring is about, and the backstop's receive would only put
    /// more in the ring behind what it drains).
    pub(crate) fn note_rx(&self) {
        self.last_rx.store(self.clock.now(), Ordering::Relaxed);
    }

    /// A lock that is never waited on (see [`Held`]).
    fn try_lock<'a, T>(shared: &'a Shared, m: &'a SpinMutex<T>) -> Option<Held<'a, T>> {
        m.try_lock().map(|guard| Held { guard, shared })
    }

    /// After a commit: send now unless a burst holds the message for the next datagram.
    #[inline]
    pub(crate) fn offered(&self, shared: &Shared) {
        let t = self.note_tx();
        if t < self.hold_until.load(Ordering::Relaxed) {
            self.tx_held.store(true, Ordering::Relaxed);
            return;
        }
        self.drive_tx(shared, false);
    }

    /// `offer` from a publisher whose ring is empty: into the datagram being built
    /// under the sender's lock, then on the wire now unless a burst holds it (as
    /// [`offered`](Self::offered)). False when it did not go (the sender is busy on
    /// another thread, or the message is held back): the caller queues it in its ring.
    pub(crate) fn offer_direct(
        &self,
        shared: &Shared,
        topic: &str,
        payload: &[u8],
        expires: Option<u64>,
    ) -> bool {
        let Some(mut tx) = Self::try_lock(shared, &self.tx) else {
            return false;
        };
        let t = self.note_tx();
        let (now, fresh) = tx.offer_time();
        if !tx.agent.offer_direct(shared, topic, payload, expires, now) {
            return false;
        }
        self.sent_direct(shared, tx, now, fresh, t);
        true
    }

    /// `try_claim` from a publisher whose ring is empty: room for the message in the
    /// datagram being built, held under the sender's lock until the claim is
    /// committed ([`commit_direct`](Self::commit_direct)) or dropped. `None` when the
    /// caller is to claim in its ring instead.
    pub(crate) fn claim_direct<'a>(
        &'a self,
        shared: &'a Shared,
        topic: &str,
        len: usize,
    ) -> Option<DirectClaim<'a>> {
        let mut tx = Self::try_lock(shared, &self.tx)?;
        let t = self.note_tx();
        let (now, fresh) = tx.offer_time();
        let room = tx.agent.claim_direct(shared, topic, len, now)?;
        Some(DirectClaim {
            tx: Some(tx),
            room,
            now,
            fresh,
            t,
            inline: self,
            shared,
        })
    }

    /// Numbers a direct claim's message, then sends as `offer_direct` does.
    pub(crate) fn commit_direct(mut claim: DirectClaim<'_>) {
        if let Some(mut tx) = claim.tx.take() {
            tx.agent.commit_claim(claim.room.clone());
            claim
                .inline
                .sent_direct(claim.shared, tx, claim.now, claim.fresh, claim.t);
        }
    }

    /// After a message went into the datagram being built: it goes on the wire now
    /// unless a burst holds it; then the sender is released, and another thread's
    /// wish for a cycle meanwhile is honoured.
    fn sent_direct(
        &self,
        shared: &Shared,
        mut tx: Held<'_, Tx>,
        now: Instant,
        fresh: bool,
        t: u64,
    ) {
        if t < self.hold_until.load(Ordering::Relaxed) {
            // The datagram being built waits for the next call (or the backstop).
            self.tx_held.store(true, Ordering::Relaxed);
        } else {
            let now = if fresh { now } else { Instant::now() };
            let sent_before = shared.counters.tx.datagrams.get();
            tx.agent.send_pending(shared, now);
            self.note_send(shared, &mut tx, t, sent_before);
            if t >= tx.next_control {
                // Status and NAKs while the application offers (as `drive_tx` does),
                // after the message went: the look costs a syscall.
                tx.next_control = t.saturating_add(ns(CONTROL_EVERY));
                tx.agent.read_status(shared, false);
            }
        }
        drop(tx);
        self.released(shared);
    }

    /// After a sender cycle that began at `start` (inline clock): if it sent
    /// datagrams (the counter moved past `sent_before`), what the send cost is how
    /// long the next offers wait to share a datagram (at most [`MAX_HOLD`]).
    fn note_send(&self, shared: &Shared, tx: &mut Tx, start: u64, sent_before: u64) {
        if shared.counters.tx.datagrams.get() == sent_before {
            return;
        }
        tx.last_os = Instant::now();
        let end = self.clock.now();
        let took = end.saturating_sub(start);
        let cost = took.min(ns(MAX_HOLD));
        self.hold_until
            .store(end.saturating_add(cost), Ordering::Relaxed);
        shared.counters.tx.max_cycle_ns.max(took);
    }

    /// The sender was just released: a thread that found it taken meanwhile left its
    /// work to us. No fence between the release and the look (a fence there waits for
    /// the message copy to drain from the store buffer, as the release of a `std` mutex
    /// did): a look that misses a wish — the wish's store and our release passing each
    /// other in the store buffers — leaves it to the backstop, which the wishing thread
    /// woke (see [`drive_tx`](Self::drive_tx)), or to our own next offer, whose lock
    /// (a full barrier) sees the wish.
    fn released(&self, shared: &Shared) {
        if self.tx_wanted.load(Ordering::Relaxed) {
            self.drive_tx(shared, false);
        }
    }

    /// Whether records or a datagram being built wait for the next sender cycle.
    pub(crate) fn tx_pending(&self) -> bool {
        self.tx_held.load(Ordering::Relaxed)
    }

    /// Runs sender cycles until no thread wants another; `backstop` (the backstop's
    /// and `drain`'s calls) also reads the control socket. Returns the work done (0
    /// when another thread holds the sender: it looks again when it releases it, and
    /// the backstop is woken to make sure — the holder's look has no fence, see
    /// [`released`](Self::released)).
    fn drive_tx(&self, shared: &Shared, backstop: bool) -> usize {
        self.tx_wanted.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut work = 0;
        loop {
            let Some(mut tx) = Self::try_lock(shared, &self.tx) else {
                if !backstop {
                    shared.wake_backstop();
                }
                return work;
            };
            self.tx_wanted.store(false, Ordering::Relaxed);
            self.tx_held.store(false, Ordering::Relaxed);
            let start = self.clock.now();
            let read = backstop || start >= tx.next_control;
            if read {
                tx.next_control = start.saturating_add(ns(CONTROL_EVERY));
            }
            let sent_before = shared.counters.tx.datagrams.get();
            let w = tx.agent.cycle(shared, read);
            self.note_send(shared, &mut tx, start, sent_before);
            work += w;
            drop(tx);
            // A cycle is a datagram's work, not a message's: here the fence is cheap.
            fence(Ordering::SeqCst);
            if !self.tx_wanted.load(Ordering::SeqCst) {
                return work;
            }
        }
    }

    /// Runs a receiver cycle unless another thread is running one. Runs the sender too when a
    /// burst left records waiting. A `direct` poller takes its own events straight
    /// from the receive buffer.
    pub(crate) fn poll(&self, shared: &Shared, direct: Option<&mut Direct<'_>>) -> usize {
        self.note_rx();
        let mut work = 0;
        if self.tx_held.load(Ordering::Relaxed) {
            work += self.drive_tx(shared, false);
        }
        if let Some(mut rx) = Self::try_lock(shared, &self.rx) {
            work += self.rx_run(shared, || rx.cycle(shared, None, direct));
        }
        work
    }

    /// Runs a receiver cycle and notes whether what it received was a packed burst
    /// (a cycle that received nothing leaves the note as it was).
    fn rx_run(&self, shared: &Shared, cycle: impl FnOnce() -> usize) -> usize {
        let before = shared.counters.rx.messages.get();
        let work = cycle();
        let got = shared.counters.rx.messages.get().saturating_sub(before);
        if got > 0 {
            self.rx_dense
                .store(got >= DENSE_MESSAGES, Ordering::Relaxed);
        }
        work
    }

    /// How long a parking poller polls before it blocks: [`DENSE_SPIN`] in a burst.
    fn spin_before_block(&self) -> Duration {
        if self.rx_dense.load(Ordering::Relaxed) {
            DENSE_SPIN
        } else {
            Duration::ZERO
        }
    }

    /// Whether a waiting poller blocks in the kernel (the idle strategy parks).
    pub(crate) fn parks(&self) -> bool {
        matches!(self.idle, IdleStrategy::Park)
    }

    /// A poller found nothing and `waited` so far: wait as the idle strategy says —
    /// spin or yield, or (park) block in the kernel for the next datagram, up to
    /// `left` and never past a protocol timer. True when this call ran the receiver
    /// (what it received is in the rings).
    pub(crate) fn wait(
        &self,
        shared: &Shared,
        waited: Duration,
        left: Duration,
        direct: Option<&mut Direct<'_>>,
    ) -> bool {
        match self.idle {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::Yield => thread::yield_now(),
            IdleStrategy::Park if waited < self.spin_before_block() => std::hint::spin_loop(),
            IdleStrategy::Park => {
                self.note_rx();
                if self.tx_held.load(Ordering::Relaxed) {
                    self.drive_tx(shared, false);
                }
                match Self::try_lock(shared, &self.rx) {
                    Some(mut rx) => {
                        let now = Instant::now();
                        let timer = rx
                            .next_timeout()
                            .map_or(MAX_BLOCK, |t| t.saturating_duration_since(now));
                        let block = left.min(MAX_BLOCK).min(timer);
                        self.rx_run(shared, || rx.cycle(shared, Some(block), direct));
                        return true;
                    }
                    // Another thread reads the socket: it fills our ring too.
                    None => thread::sleep(super::POLL_SLEEP),
                }
            }
        }
        false
    }

    /// `Node::do_work` and `flush`: both cycles, with timers, and the control socket
    /// when its [`CONTROL_EVERY`] is due.
    pub(crate) fn do_work(&self, shared: &Shared) -> usize {
        self.note_tx();
        self.note_rx();
        let mut work = self.drive_tx(shared, false);
        if let Some(mut rx) = Self::try_lock(shared, &self.rx) {
            work += self.rx_run(shared, || rx.do_work(shared, None));
        }
        work
    }

    /// The backstop thread's loop: parked, it runs a side's cycles when the
    /// application has not run them for its period — so an application that only
    /// polls still has its publishers' heartbeats sent and NAKs answered, and one
    /// that only offers still has its receivers' status sent. The period is short
    /// while datagrams flow and backs off while the node is idle, up to the next
    /// protocol timer.
    pub(crate) fn backstop(&self, shared: &Shared) {
        let mut period = BACKSTOP_MIN;
        let mut seen = activity(shared);
        while !shared.stopped() {
            let (tx_timer, rx_timer) = self.timers();
            let start = Instant::now();
            let park = [tx_timer, rx_timer]
                .into_iter()
                .flatten()
                .fold(period, |p, t| p.min(t.saturating_duration_since(start)));
            // A wish for a sender cycle that found the sender taken is looked at
            // again soon (its holder's look may have missed it).
            let park = if self.tx_wanted.load(Ordering::Relaxed) {
                BACKSTOP_FLOOR
            } else {
                park.max(BACKSTOP_FLOOR)
            };
            if shared.wakeable_subscribers.load(Ordering::Relaxed) > 0 {
                self.wait_for_async(shared, park);
            } else {
                thread::park_timeout(park);
            }
            if shared.stopped() {
                break;
            }
            let woke = Instant::now();
            let now = self.clock.now();
            let p = ns(period);
            let held = self.tx_held.load(Ordering::Relaxed);
            // A side is due when the application has not run it for the period, or
            // its machine's timer has come and the application has not run the side
            // since (its own call runs the timers; a backstop receive meanwhile would
            // put what the application is about to take straight from the receive
            // buffer through the rings instead).
            let (last_tx, last_rx) = (
                self.last_tx.load(Ordering::Relaxed),
                self.last_rx.load(Ordering::Relaxed),
            );
            let missed = |timer: Option<Instant>, last: u64| {
                timer.is_some_and(|t| {
                    t <= woke && last < now.saturating_sub(ns(woke.saturating_duration_since(t)))
                })
            };
            // Held records go at the application's next offer if it is still
            // offering (taking the sender from it meanwhile would push its offers
            // through the ring, and preempt it on its own core).
            let tx_due = self.tx_wanted.load(Ordering::Relaxed)
                || (held && now.saturating_sub(last_tx) >= ns(MAX_HOLD))
                || now.saturating_sub(last_tx) >= p
                || missed(tx_timer, last_tx);
            let rx_due = now.saturating_sub(last_rx) >= p || missed(rx_timer, last_rx);
            let mut work = 0;
            for _ in 0..BACKSTOP_CYCLES {
                if !(tx_due || rx_due) {
                    break;
                }
                let mut w = 0;
                if tx_due {
                    w += self.drive_tx(shared, true);
                }
                if rx_due {
                    if let Some(mut rx) = Self::try_lock(shared, &self.rx) {
                        w += rx.do_work(shared, None);
                    }
                }
                work += w;
                if w == 0 {
                    break;
                }
            }
            let now_seen = activity(shared);
            let traffic = held || work > 0 || now_seen != seen;
            seen = now_seen;
            period = if traffic {
                BACKSTOP_MIN
            } else {
                (period * 2).min(BACKSTOP_MAX)
            };
        }
    }

    /// The backstop's park while the node has async subscribers: a receive that
    /// blocks in the kernel for up to `park` (a datagram ends it at once; the
    /// receiver's cycle then wakes the tasks whose rings it filled), so an awaiting
    /// task gets its message at the kernel's wake-up latency, with no thread polling.
    /// An application thread already in the receiver reads for everyone.
    fn wait_for_async(&self, shared: &Shared, park: Duration) {
        match Self::try_lock(shared, &self.rx) {
            Some(mut rx) => {
                shared.rx_waiting.store(true, Ordering::SeqCst);
                rx.do_work(shared, Some(park));
                shared.rx_waiting.store(false, Ordering::SeqCst);
            }
            None => thread::park_timeout(park.min(super::POLL_SLEEP)),
        }
    }

    /// The two machines' next timers (`None` for a side busy on another thread: it
    /// runs its own).
    fn timers(&self) -> (Option<Instant>, Option<Instant>) {
        let tx = self.tx.try_lock().and_then(|t| t.agent.next_timeout());
        let rx = self.rx.try_lock().and_then(|r| r.next_timeout());
        (tx, rx)
    }

    /// At node drop, after the backstop stopped: sends what publishers queued.
    pub(crate) fn drain(&self, shared: &Shared) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if self.drive_tx(shared, true) == 0 {
                break;
            }
        }
    }
}
