//! The discovery thread: a thin driver of the sans-IO [`Discovery`] machine. It
//! blocks on the discovery group's socket until an announce arrives or the machine's
//! next timer (at most [`MAX_WAIT`]), so it never competes with the data path and an
//! idle node wakes a few times a second. On the node's stop it sends the leave.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::notify::Notify;
use super::Shared;
use crate::config::UNICAST_FALLBACK;
use crate::proto::{Destination, Discovery, DiscoveryCounters, Peer, PeerEvent};
use crate::seal::Guard;
use crate::wire::MAX_ANNOUNCE;

/// Longest block on the discovery socket (bounds how late the node's stop is seen).
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Peer events a [`PeerEvents`](crate::PeerEvents) handle holds before the oldest are
/// dropped (counted).
pub(crate) const LISTENER_QUEUE: usize = 1024;

/// The topics this node's handles publish and subscribe to, for its announces.
#[derive(Default)]
pub(crate) struct Topics {
    publishes: BTreeMap<String, usize>,
    subscribes: BTreeMap<String, usize>,
}

/// A peer-event listener (one per [`PeerEvents`](crate::PeerEvents) handle).
pub(crate) struct Listener {
    pub queue: ArrayQueue<PeerEvent>,
    pub dropped: AtomicU64,
    pub notify: Notify,
}

/// What the node shares with its discovery thread.
pub(crate) struct Membership {
    /// This node's id and name.
    pub id: u64,
    pub name: String,
    topics: Mutex<Topics>,
    topics_version: AtomicU64,
    directory: Mutex<Vec<Peer>>,
    listeners: Mutex<Vec<Weak<Listener>>>,
    counters: Mutex<DiscoveryCounters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn add(map: &mut BTreeMap<String, usize>, key: &str, by: isize) {
    let n = map.entry(key.to_string()).or_insert(0);
    *n = n.saturating_add_signed(by);
    if *n == 0 {
        map.remove(key);
    }
}

impl Membership {
    pub(crate) fn new(id: u64, name: String) -> Self {
        Membership {
            id,
            name,
            topics: Mutex::default(),
            topics_version: AtomicU64::new(0),
            directory: Mutex::default(),
            listeners: Mutex::default(),
            counters: Mutex::default(),
        }
    }

    /// A publisher on `topic` was created (`by` 1) or dropped (`by` -1).
    pub(crate) fn publishes(&self, topic: &str, by: isize) {
        add(&mut lock(&self.topics).publishes, topic, by);
        self.topics_version.fetch_add(1, Ordering::Release);
    }

    /// A subscription to `prefixes` was created or dropped.
    pub(crate) fn subscribes(&self, prefixes: &[String], by: isize) {
        let mut t = lock(&self.topics);
        for p in prefixes {
            add(&mut t.subscribes, p, by);
        }
        drop(t);
        self.topics_version.fetch_add(1, Ordering::Release);
    }

    /// The directory now.
    pub(crate) fn peers(&self) -> Vec<Peer> {
        lock(&self.directory).clone()
    }

    /// How many peers the directory holds.
    pub(crate) fn peer_count(&self) -> usize {
        lock(&self.directory).len()
    }

    /// What discovery counted.
    pub(crate) fn counters(&self) -> DiscoveryCounters {
        *lock(&self.counters)
    }

    /// A new listener for peer events: it starts with a `Joined` for every peer in
    /// the directory (as Zyre's ENTER for the peers already there), then every
    /// change. The directory and the events are updated under the listeners' lock,
    /// so no peer is missed or seen twice.
    pub(crate) fn listen(&self) -> Arc<Listener> {
        let l = Arc::new(Listener {
            queue: ArrayQueue::new(LISTENER_QUEUE),
            dropped: AtomicU64::new(0),
            notify: Notify::default(),
        });
        let mut all = lock(&self.listeners);
        for p in lock(&self.directory).iter() {
            if l.queue.force_push(PeerEvent::Joined(p.clone())).is_some() {
                l.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&l));
        l
    }

    /// Wakes every listener (the node stopped).
    pub(crate) fn wake_all(&self) {
        for l in lock(&self.listeners).iter().filter_map(Weak::upgrade) {
            l.notify.wake();
        }
    }

    fn publish(&self, listeners: &[Weak<Listener>], ev: &PeerEvent) {
        for l in listeners.iter().filter_map(Weak::upgrade) {
            if l.queue.force_push(ev.clone()).is_some() {
                l.dropped.fetch_add(1, Ordering::Relaxed);
            }
            l.notify.wake();
        }
    }
}

/// What the discovery thread needs besides the machine.
pub(crate) struct Driver {
    /// The discovery group (announces to [`Destination::Group`] go there).
    pub group: SocketAddrV4,
    /// The node may switch to unicast on its own ([`Transport::Auto`](crate::Transport::Auto)
    /// with seeds).
    pub may_fall_back: bool,
    /// Seeds are configured (for the warning when nobody is heard).
    pub seeds: Vec<SocketAddrV4>,
    /// The group keys: announces and peer lists are sealed, and only sealed ones
    /// that open are heard.
    pub keys: Option<crate::seal::Keyring>,
}

/// The peers this node's data goes to by unicast: those subscribed to a topic it
/// publishes (or whose lists were cut), each at its data port.
fn destinations<'a>(
    peers: impl Iterator<Item = &'a Peer>,
    publishes: &[String],
) -> Vec<SocketAddrV4> {
    peers
        .filter(|p| {
            p.truncated
                || publishes
                    .iter()
                    .any(|t| super::topic_matches(&p.subscribes, t))
        })
        .map(|p| SocketAddrV4::new(*p.address.ip(), p.group.port()))
        .collect()
}

fn send(
    sock: &UdpSocket,
    group: SocketAddrV4,
    to: Destination,
    bytes: &[u8],
    guard: &mut Option<Guard>,
) {
    let dest = match to {
        Destination::Group => group,
        Destination::To(a) => a,
    };
    let bytes = match guard {
        Some(g) => match g.seal_one(bytes) {
            Some(b) => b,
            None => return,
        },
        None => bytes,
    };
    if let Err(e) = sock.send_to(bytes, dest) {
        tracing::debug!(error = %e, %dest, "discovery send failed");
    }
}

/// Runs the discovery thread until the node stops; then sends the leave (twice: a
/// lost leave only delays the peers' notice to the expiry).
pub(crate) fn run(
    shared: &Shared,
    rx: &UdpSocket,
    tx: &UdpSocket,
    mut machine: Discovery,
    driver: Driver,
) {
    let Some(m) = shared.membership.get() else {
        return;
    };
    let mut buf = vec![0u8; MAX_ANNOUNCE + 64 + crate::seal::OVERHEAD];
    let mut out = Vec::with_capacity(MAX_ANNOUNCE);
    let mut guard = driver
        .keys
        .as_ref()
        .map(|k| Guard::new(k, MAX_ANNOUNCE + 64, 1));
    let c = &shared.counters.rx;
    // What arrives, opened when sealed (refusals counted, dropped untouched).
    let hear = |machine: &mut Discovery, guard: &mut Option<Guard>, from, bytes: &[u8]| {
        let plain = match guard.as_mut() {
            Some(g) => match g.open(bytes, c) {
                Some(p) => p,
                None => return,
            },
            None => bytes,
        };
        let _ = machine.handle_datagram(Instant::now(), from, plain);
    };
    let mut seen = u64::MAX;
    let mut refresh = Instant::now();
    let started = Instant::now();
    let mut looked = false;
    let mut publishes: Vec<String> = Vec::new();
    while !shared.stopped() {
        let now = Instant::now();
        let v = m.topics_version.load(Ordering::Acquire);
        let mut topics_changed = false;
        if v != seen {
            seen = v;
            let t = lock(&m.topics);
            let (p, s): (Vec<String>, Vec<String>) = (
                t.publishes.keys().cloned().collect(),
                t.subscribes.keys().cloned().collect(),
            );
            drop(t);
            publishes.clone_from(&p);
            machine.set_topics(now, p, s);
            topics_changed = true;
        }
        machine.handle_timeout(now);
        while let Some(to) = machine.poll_transmit(now, &mut out) {
            send(tx, driver.group, to, &out, &mut guard);
        }
        if !looked && now >= started + UNICAST_FALLBACK {
            looked = true;
            look_around(shared, &machine, &driver);
        }
        // The mirror follows every change (and the peers' last-heard times at least
        // once a second); it and the events change under the listeners' lock (see
        // `Membership::listen`).
        let changed = machine.take_changed();
        if changed || topics_changed {
            let to = destinations(machine.peers(), &publishes);
            if shared.unicast.set_destinations(to) && shared.unicast.is_active() {
                tracing::debug!(to = ?shared.unicast.destinations(), "unicast destinations");
            }
        }
        if changed || now >= refresh {
            let listeners = lock(&m.listeners);
            *lock(&m.directory) = machine.peers().cloned().collect();
            while let Some(ev) = machine.poll_event() {
                m.publish(&listeners, &ev);
            }
            refresh = now + Duration::from_secs(1);
        }
        *lock(&m.counters) = *machine.counters();
        let wait = machine
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(1), MAX_WAIT);
        let _ = rx.set_read_timeout(Some(wait));
        if let Ok((n, SocketAddr::V4(from))) = rx.recv_from(&mut buf) {
            hear(&mut machine, &mut guard, from, &buf[..n]);
            // Take what else is queued without waiting.
            let _ = rx.set_nonblocking(true);
            for _ in 0..64 {
                match rx.recv_from(&mut buf) {
                    Ok((n, SocketAddr::V4(from))) => {
                        hear(&mut machine, &mut guard, from, &buf[..n]);
                    }
                    _ => break,
                }
            }
            let _ = rx.set_nonblocking(false);
        }
    }
    machine.leave(Instant::now());
    while let Some(to) = machine.poll_transmit(Instant::now(), &mut out) {
        for _ in 0..2 {
            send(tx, driver.group, to, &out, &mut guard);
        }
    }
    *lock(&m.counters) = *machine.counters();
    m.wake_all();
}

/// [`UNICAST_FALLBACK`] after the start: a node that heard no multicast announce
/// switches to unicast if it may, and says what it heard either way.
fn look_around(shared: &Shared, machine: &Discovery, driver: &Driver) {
    if machine.heard_multicast() || shared.unicast.is_active() {
        return;
    }
    let heard = machine.peers().count();
    let wait = UNICAST_FALLBACK;
    if driver.may_fall_back {
        shared.unicast.activate();
        tracing::warn!(
            group = %driver.group, seeds = ?driver.seeds, peers = heard,
            "no multicast discovery heard in {wait:?}: multicast looks blocked, sending by unicast through the seeds"
        );
        if heard == 0 {
            tracing::warn!(seeds = ?driver.seeds, "the seeds did not answer either: this node hears nobody yet");
        }
    } else if heard == 0 {
        tracing::warn!(
            group = %driver.group,
            "this node hears nobody: no other node's announce in {wait:?} on the discovery group (multicast may be blocked here: give seeds with --seed HOST or RINGCAST_SEEDS)"
        );
    }
}
