//! Agents: duty-cycle loops that own the sockets. The sender agent drains publisher
//! rings into datagrams; the receiver agent feeds datagrams through the protocol
//! receiver into subscription rings. Application threads reach them only through
//! lock-free rings and a command queue; an agent never waits on the application.

pub(crate) mod delivery;
pub(crate) mod discovery;
mod idle;
mod inline;
pub(crate) mod notify;
mod receiver;
mod sender;
pub(crate) mod threading;
pub(crate) mod unicast;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::{ArrayQueue, SegQueue};

use crate::config::{Config, SlowConsumerPolicy, ThreadingMode};
use crate::io::{RxBackend, TxBackend};
use crate::ring::{Consumer, Producer};
use crate::stats::Counters;

pub(crate) use idle::{Idler, Wait};
pub(crate) use inline::{DirectClaim, Inline};
pub use receiver::topic_matches;
pub(crate) use receiver::{Direct, ReceiverAgent};
pub(crate) use sender::SenderAgent;

/// Largest number of datagrams in one send or receive batch.
pub const MAX_BATCH: usize = 256;

/// A publisher's ring as the sender agent sees it.
pub(crate) struct PublisherEntry {
    pub topic: Arc<str>,
    pub ring: Consumer,
    pub closed: Arc<AtomicBool>,
    /// Its records start with their message's deadline (u64 µs since the UNIX epoch).
    pub ttl: bool,
    /// Its messages go into the last-value cache (late joiners get the latest).
    pub cache: bool,
}

/// A subscription's ring as the receiver agent sees it.
pub(crate) struct SubscriptionEntry {
    pub prefixes: Vec<String>,
    pub policy: SlowConsumerPolicy,
    pub ring: Producer,
    pub closed: Arc<AtomicBool>,
    /// Disconnect policy: set by the agent when the subscription is too slow, cleared
    /// by the subscriber once it discarded its backlog.
    pub resync: Arc<AtomicBool>,
    /// A handler subscription: called on the receiving thread with each event,
    /// borrowed from the receive buffer (the ring is then unused).
    pub handler: Option<EventHandler>,
    /// Wakes the subscriber's async task (see [`notify`]).
    pub notify: Arc<notify::Notify>,
}

/// The application's callback of a handler subscription.
pub(crate) type EventHandler = Box<dyn FnMut(crate::subscriber::Event<'_>) + Send>;

pub(crate) enum SenderCommand {
    Backend(Box<dyn TxBackend>),
    /// The socket status messages arrive on.
    Control(socket2::Socket),
    /// The file other processes read this node's counters from.
    StatsFile(crate::stats_file::StatsFile),
    Publisher(PublisherEntry),
}

pub(crate) enum ReceiverCommand {
    /// The group socket, the socket to send status on, and the window (datagrams) the
    /// socket buffer can absorb.
    Backend {
        backend: Box<dyn RxBackend>,
        control: socket2::Socket,
        window: u32,
    },
}

/// State shared by a node's handles and its agents.
pub(crate) struct Shared {
    pub counters: Counters,
    pub stop: AtomicBool,
    pub failure: OnceLock<String>,
    pub tx_commands: SegQueue<SenderCommand>,
    pub rx_commands: SegQueue<ReceiverCommand>,
    /// New subscriptions, taken by the receiver agent before it dispatches each
    /// datagram: a message published after `subscriber()` returned always finds its
    /// subscription, even when the agent was blocked in the kernel meanwhile.
    pub new_subscriptions: SegQueue<SubscriptionEntry>,
    pub sender_parked: AtomicBool,
    pub sender_thread: OnceLock<Thread>,
    /// The thread that runs the receiver agent (dedicated or shared threading): woken
    /// when its socket is installed, so a deep-idle agent picks it up at once.
    pub receiver_thread: OnceLock<Thread>,
    /// What stats report besides counters.
    pub base: StatsBase,
    /// Receive buffer granted (0 until the first subscriber).
    pub rcvbuf: std::sync::atomic::AtomicUsize,
    /// NAKs other receivers sent for sessions this node does not publish, heard by
    /// the sender agent on the control port and passed to the receiver agent, which
    /// holds back its own NAK for a range somebody already asked for (suppression).
    pub heard_naks: ArrayQueue<HeardNak>,
    /// The agents themselves in inline threading (no agent threads).
    pub inline: OnceLock<Inline>,
    /// Subscribers that wait to be woken — async tasks (`poll_recv`), or with agent
    /// threads a thread parked in `poll_timeout` — still alive: while there are any,
    /// the receiver wakes armed ones after each cycle, and in inline threading (where
    /// only async tasks count) the backstop waits in the kernel for datagrams instead
    /// of parking.
    pub wakeable_subscribers: AtomicUsize,
    /// Inline: the backstop is blocked in a receive for async subscribers (an arming
    /// task need not wake it).
    pub rx_waiting: AtomicBool,
    /// Every subscription's waker, to wake them all when the node stops (touched when
    /// a subscriber is created and at the stop, never per message).
    pub notifies: Mutex<Vec<Weak<notify::Notify>>>,
    /// Graceful shutdown: asks raised (`Node::shutdown`), and the last ask the sender
    /// saw with nothing left queued (every publisher ring empty, nothing unsent).
    pub drain_asked: std::sync::atomic::AtomicU64,
    pub drained: std::sync::atomic::AtomicU64,
    /// This node's identity, its topics for the announces, and the peer directory.
    pub membership: OnceLock<discovery::Membership>,
    /// Whether data goes by unicast, and to whom.
    pub unicast: unicast::Unicast,
    /// The publishers' IPC logs (heart-beaten by the sender agent).
    pub ipc: crate::ipc::IpcShared,
}

/// A NAK heard on the control port, for NAK suppression.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeardNak {
    pub session: u32,
    pub from: u64,
    pub to: u64,
    pub receiver: u64,
}

/// NAKs waiting for the receiver agent at most (the oldest are overwritten).
const HEARD_NAKS: usize = 1024;

/// The fixed part of a node's stats.
pub(crate) struct StatsBase {
    pub backend: crate::io::BackendReport,
    pub max_payload: usize,
    pub sndbuf: usize,
    /// The threading the node runs with, and why.
    pub threading: threading::Choice,
}

impl Shared {
    pub(crate) fn new(base: StatsBase) -> Self {
        Shared {
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            failure: OnceLock::new(),
            tx_commands: SegQueue::new(),
            rx_commands: SegQueue::new(),
            new_subscriptions: SegQueue::new(),
            sender_parked: AtomicBool::new(false),
            sender_thread: OnceLock::new(),
            receiver_thread: OnceLock::new(),
            base,
            rcvbuf: std::sync::atomic::AtomicUsize::new(0),
            heard_naks: ArrayQueue::new(HEARD_NAKS),
            inline: OnceLock::new(),
            wakeable_subscribers: AtomicUsize::new(0),
            rx_waiting: AtomicBool::new(false),
            notifies: Mutex::new(Vec::new()),
            drain_asked: std::sync::atomic::AtomicU64::new(0),
            drained: std::sync::atomic::AtomicU64::new(0),
            membership: OnceLock::new(),
            unicast: Default::default(),
            ipc: Default::default(),
        }
    }

    /// The peer directory now (empty with discovery off).
    pub(crate) fn peers(&self) -> Vec<crate::Peer> {
        self.membership.get().map(|m| m.peers()).unwrap_or_default()
    }

    /// A snapshot of the node's counters.
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        let b = &self.base;
        let mut s = self.counters.snapshot(
            &b.backend,
            b.max_payload,
            self.rcvbuf.load(Ordering::Relaxed),
            b.sndbuf,
        );
        s.threading = b.threading.mode;
        if let Some(m) = self.membership.get() {
            let d = m.counters();
            s.peers = m.peer_count() as u64;
            s.announces_sent = d.announces_sent;
            s.announces_received = d.announces_received;
            s.discovery_foreign = d.foreign;
            s.discovery_malformed = d.malformed;
            s.peers_refused = d.refused;
            s.peers_evicted = d.evicted;
        }
        s.ipc_published = self.ipc.published();
        s.threading_reason.clone_from(&b.threading.reason);
        if let Some(w) = &b.threading.warning {
            s.threading_reason.push_str("; WARNING: ");
            s.threading_reason.push_str(w);
        }
        s
    }

    /// After a publisher committed a record: inline, run a sender cycle (unless a
    /// burst holds it for the next datagram); else wake the sender agent.
    #[inline]
    pub(crate) fn published(&self) {
        match self.inline.get() {
            Some(i) => i.offered(self),
            None => self.wake_sender(),
        }
    }

    /// Makes the sender look at the rings now (inline: runs its cycle here, control
    /// socket included). Returns the work an inline cycle did.
    pub(crate) fn kick_sender(&self) -> usize {
        match self.inline.get() {
            Some(i) => i.do_work(self),
            None => {
                self.wake_sender();
                0
            }
        }
    }

    /// Inline: wakes the backstop thread (a sender cycle found the sender taken; the
    /// backstop looks at the wish, see `Inline::released`). Rare: only when two
    /// threads want the sender at once.
    pub(crate) fn wake_backstop(&self) {
        if let Some(t) = self.sender_thread.get() {
            t.unpark();
        }
    }

    /// Wakes the sender agent if it is parked (called after a publish).
    #[inline]
    pub(crate) fn wake_sender(&self) {
        if self.sender_parked.load(Ordering::Relaxed) {
            if let Some(t) = self.sender_thread.get() {
                t.unpark();
            }
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stops the node for `why` (the first reason given is kept).
    pub(crate) fn fail(&self, why: String) {
        tracing::error!(%why, "node stopped");
        let _ = self.failure.set(why);
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.sender_thread.get() {
            t.unpark();
        }
        self.wake_all();
    }

    /// `Node::wait_for_receivers` (and the publisher's).
    pub(crate) fn wait_for_receivers(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<usize, crate::Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.counters.tx.receivers.get() as usize + self.ipc.readers();
            if have >= n {
                return Ok(have);
            }
            if let Some(why) = self.failure.get() {
                return Err(crate::Error::Stopped(why.clone()));
            }
            if Instant::now() >= deadline {
                return Err(crate::Error::Timeout(format!(
                    "{have} of {n} receivers after {timeout:?}"
                )));
            }
            // Inline: this thread reads the status; else the sender agent does.
            if self.kick_sender() == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// A new subscription's waker, registered to be woken at the stop.
    pub(crate) fn new_notify(&self) -> Arc<notify::Notify> {
        let n = Arc::new(notify::Notify::default());
        if let Ok(mut all) = self.notifies.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&n));
        }
        n
    }

    /// Wakes every waiting async subscriber and peer-event listener (the node
    /// stopped: they learn why).
    pub(crate) fn wake_all(&self) {
        if let Some(m) = self.membership.get() {
            m.wake_all();
        }
        let all = match self.notifies.lock() {
            Ok(all) => all.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for n in all.iter().filter_map(Weak::upgrade) {
            n.wake();
        }
    }
}

/// A random 64-bit id (session and receiver ids), from the std hasher's random keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::warn!(core = id, "could not pin agent thread");
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn run_sender(shared: &Shared, mut tx: SenderAgent, mut idler: Idler) {
    let mut heard = shared.counters.rx.datagrams.get();
    loop {
        let stopping = shared.stopped();
        let t0 = Instant::now();
        let work = tx.do_work(shared);
        if work > 0 {
            shared.counters.tx.max_cycle_ns.max(elapsed_ns(t0));
        }
        if stopping && work == 0 {
            return;
        }
        // A cycle stopped by the rate limit counts as idle: the idler goes on to park
        // (never past the limit's next send) instead of spinning for every datagram.
        let busy = if tx.rate_blocked() { 0 } else { work };
        match idler.after(busy) {
            Wait::Now => {}
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => thread::yield_now(),
            Wait::Park(d) => {
                // A sender with no publisher has nothing to send and no session to
                // keep alive: it wakes only for its counters file (a new publisher
                // wakes it) — unless the receiver has traffic, whose NAKs it hears
                // on the control port for suppression.
                let now_heard = shared.counters.rx.datagrams.get();
                let quiet = now_heard == heard;
                heard = now_heard;
                let d = if quiet && idler.deep() && !tx.has_publishers() {
                    crate::stats_file::REFRESH
                } else {
                    d
                };
                park_sender(shared, &mut tx, d)
            }
        }
    }
}

/// Idles the sender: waits for a status message when a window holds it back (the
/// status is what lets it go on), sleeps until the next send the rate limit allows
/// (at most `d`) when that holds it back, else parks until a publisher wakes it.
fn park_sender(shared: &Shared, tx: &mut SenderAgent, d: Duration) {
    if tx.flow_blocked() {
        tx.read_status(shared, true);
        return;
    }
    if let Some(wait) = tx.rate_wait(Instant::now()) {
        if !wait.is_zero() && !shared.stopped() {
            thread::sleep(wait.min(d));
        }
        return;
    }
    shared.sender_parked.store(true, Ordering::SeqCst);
    if !tx.has_pending() && !shared.stopped() {
        thread::park_timeout(d);
    }
    shared.sender_parked.store(false, Ordering::Relaxed);
}

fn run_receiver(shared: &Shared, mut rx: ReceiverAgent, mut idler: Idler) {
    let mut block = None;
    while !shared.stopped() {
        let t0 = Instant::now();
        let work = rx.do_work(shared, block.take());
        if work > 0 {
            shared.counters.rx.max_cycle_ns.max(elapsed_ns(t0));
        }
        match idler.after(work) {
            Wait::Now => {}
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => thread::yield_now(),
            Wait::Park(d) => {
                block = Some(if idler.deep() {
                    deep_block(rx.next_timeout(), d)
                } else {
                    d
                })
            }
        }
    }
}

/// The longest an idle receiver blocks in the kernel (a datagram ends the block at
/// once; this bounds an idle node's wake-ups and how long a drop waits for it).
const DEEP_BLOCK: Duration = Duration::from_millis(250);
/// A deep sleep is never shorter than this (a timer due at once runs after it).
const DEEP_FLOOR: Duration = Duration::from_micros(100);

/// How long a deep-idle agent sleeps: until `timer` (its machine's next), at most
/// [`DEEP_BLOCK`], and no less than the ordinary park `d` unless the timer is sooner.
fn deep_block(timer: Option<Instant>, d: Duration) -> Duration {
    let until = timer.map_or(DEEP_BLOCK, |t| t.saturating_duration_since(Instant::now()));
    until.min(DEEP_BLOCK).max(DEEP_FLOOR.min(d))
}

fn run_shared(shared: &Shared, mut tx: SenderAgent, mut rx: ReceiverAgent, mut idler: Idler) {
    let mut block = None;
    loop {
        let stopping = shared.stopped();
        let t0 = Instant::now();
        let sent = tx.do_work(shared);
        if sent > 0 {
            shared.counters.tx.max_cycle_ns.max(elapsed_ns(t0));
        }
        let t1 = Instant::now();
        let received = if stopping {
            0
        } else {
            rx.do_work(shared, block.take())
        };
        if received > 0 {
            shared.counters.rx.max_cycle_ns.max(elapsed_ns(t1));
        }
        if stopping && sent == 0 {
            return;
        }
        // As in `run_sender`: a cycle stopped by the rate limit sent nothing that counts.
        let busy = if tx.rate_blocked() { 0 } else { sent };
        match idler.after(busy + received) {
            Wait::Now => {}
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => thread::yield_now(),
            Wait::Park(d) => {
                // Deep idle with no publisher: block in the receive until the next
                // timer or counters refresh (a datagram ends it at once).
                let d = if idler.deep() && !tx.has_publishers() {
                    deep_block(rx.next_timeout(), d).min(crate::stats_file::REFRESH)
                } else {
                    d
                };
                if rx.has_backend() && !tx.flow_blocked() {
                    // Block in the receive, but not past the rate limit's next send.
                    block = match tx.rate_wait(Instant::now()) {
                        Some(w) if w.is_zero() => None,
                        Some(w) => Some(w.min(d)),
                        None => Some(d),
                    };
                } else {
                    park_sender(shared, &mut tx, d);
                }
            }
        }
    }
}

/// Starts the agent threads of a node (inline: installs the agents in `shared` and
/// starts the parked backstop thread).
pub(crate) fn start(
    shared: &Arc<Shared>,
    config: &Config,
    mode: ThreadingMode,
    session: u32,
    max_payload: usize,
) -> Result<Vec<JoinHandle<()>>, std::io::Error> {
    let tx = SenderAgent::new(config, session, max_payload);
    let rx = ReceiverAgent::new(config, max_payload);
    let idler = || Idler::new(config.idle, config.max_park);
    let core = |i: usize| {
        if config.cores.is_empty() {
            None
        } else {
            Some(config.cores[i % config.cores.len()])
        }
    };
    let mut handles = Vec::new();
    match mode {
        ThreadingMode::Dedicated => {
            let (s, c, i) = (shared.clone(), core(0), idler());
            let h = thread::Builder::new()
                .name("ringcast-sender".into())
                .spawn(move || {
                    pin(c);
                    guarded(&s, "sender agent", || run_sender(&s, tx, i));
                })?;
            let _ = shared.sender_thread.set(h.thread().clone());
            handles.push(h);
            let (s, c, i) = (shared.clone(), core(1), idler());
            let h = thread::Builder::new()
                .name("ringcast-receiver".into())
                .spawn(move || {
                    pin(c);
                    guarded(&s, "receiver agent", || run_receiver(&s, rx, i));
                })?;
            let _ = shared.receiver_thread.set(h.thread().clone());
            handles.push(h);
        }
        ThreadingMode::Shared => {
            let (s, c, i) = (shared.clone(), core(0), idler());
            let h = thread::Builder::new()
                .name("ringcast-agent".into())
                .spawn(move || {
                    pin(c);
                    guarded(&s, "agent", || run_shared(&s, tx, rx, i));
                })?;
            let _ = shared.sender_thread.set(h.thread().clone());
            let _ = shared.receiver_thread.set(h.thread().clone());
            handles.push(h);
        }
        ThreadingMode::Inline | ThreadingMode::Auto => {
            let _ = shared.inline.set(Inline::new(tx, rx, config.idle));
            let (s, c) = (shared.clone(), core(0));
            let h = thread::Builder::new()
                .name("ringcast-backstop".into())
                .spawn(move || {
                    pin(c);
                    if let Some(i) = s.inline.get() {
                        guarded(&s, "backstop", || i.backstop(&s));
                    }
                })?;
            let _ = shared.sender_thread.set(h.thread().clone());
            handles.push(h);
        }
    }
    Ok(handles)
}

/// Starts the discovery thread (it blocks on the discovery socket, never spins).
pub(crate) fn start_discovery(
    shared: &Arc<Shared>,
    rx: std::net::UdpSocket,
    tx: std::net::UdpSocket,
    machine: crate::proto::Discovery,
    driver: discovery::Driver,
) -> Result<JoinHandle<()>, std::io::Error> {
    let s = shared.clone();
    thread::Builder::new()
        .name("ringcast-discovery".into())
        .spawn(move || {
            guarded(&s, "discovery", || {
                discovery::run(&s, &rx, &tx, machine, driver)
            })
        })
}

/// Runs an agent's loop; if it panics, the node stops and every handle learns why
/// (`Error::Stopped`, `PublishError::Stopped`, [`Subscriber::error`](crate::Subscriber::error))
/// instead of going on as if the agent were alive.
fn guarded(shared: &Shared, who: &str, run: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        shared.fail(format!("the {who} failed: {what}"));
    }
}

/// How long `flush`-style waits sleep between checks once spinning stops paying.
pub(crate) const POLL_SLEEP: Duration = Duration::from_micros(50);

/// The next entry of an agent's queue (commands, new subscriptions). `SegQueue::pop`
/// on an empty queue costs a full fence, and the agents look every cycle (inline: on
/// every offer, and per datagram received); a look at the indices does not. An entry pushed meanwhile by another thread is seen at the
/// next look; one pushed by this thread before, always.
pub(crate) fn next_queued<T>(queue: &SegQueue<T>) -> Option<T> {
    if queue.is_empty() {
        None
    } else {
        queue.pop()
    }
}
