//! The discovery thread: a thin driver of the sans-IO [`Discovery`] machine. It
//! blocks on the discovery group's socket until an announce arrives or the machine's
//! next timer (at most [`MAX_WAIT`]), so it never competes with the data path and an
//! idle node wakes a few times a second. On the node's stop it sends the leave.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::notify::Notify;
use super::Shared;
use crate::proto::{Discovery, DiscoveryCounters, Peer, PeerEvent};
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

/// Runs the discovery thread until the node stops; then sends the leave (twice: a
/// lost leave only delays the peers' notice to the expiry).
pub(crate) fn run(shared: &Shared, rx: &UdpSocket, tx: &UdpSocket, mut machine: Discovery) {
    let Some(m) = shared.membership.get() else {
        return;
    };
    let mut buf = vec![0u8; MAX_ANNOUNCE + 64];
    let mut out = Vec::with_capacity(MAX_ANNOUNCE);
    let mut seen = u64::MAX;
    let mut refresh = Instant::now();
    while !shared.stopped() {
        let now = Instant::now();
        let v = m.topics_version.load(Ordering::Acquire);
        if v != seen {
            seen = v;
            let t = lock(&m.topics);
            let (p, s) = (
                t.publishes.keys().cloned().collect(),
                t.subscribes.keys().cloned().collect(),
            );
            drop(t);
            machine.set_topics(now, p, s);
        }
        machine.handle_timeout(now);
        while machine.poll_transmit(now, &mut out) {
            if let Err(e) = tx.send(&out) {
                tracing::debug!(error = %e, "announce send failed");
            }
        }
        // The mirror follows every change (and the peers' last-heard times at least
        // once a second); it and the events change under the listeners' lock (see
        // `Membership::listen`).
        if machine.take_changed() || now >= refresh {
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
            let _ = machine.handle_datagram(Instant::now(), from, &buf[..n]);
            // Take what else is queued without waiting.
            let _ = rx.set_nonblocking(true);
            for _ in 0..64 {
                match rx.recv_from(&mut buf) {
                    Ok((n, SocketAddr::V4(from))) => {
                        let _ = machine.handle_datagram(Instant::now(), from, &buf[..n]);
                    }
                    _ => break,
                }
            }
            let _ = rx.set_nonblocking(false);
        }
    }
    machine.leave(&mut out);
    for _ in 0..2 {
        let _ = tx.send(&out);
    }
    *lock(&m.counters) = *machine.counters();
    m.wake_all();
}
