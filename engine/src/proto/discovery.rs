//! Discovery and membership, sans-IO: a node announces itself on the discovery group
//! and keeps a directory of the nodes it hears (glue's announce/listen, Zyre's
//! ENTER/EXIT).
//!
//! - A node announces at once, twice more within 300 ms (a lost first announce does
//!   not delay its join), then every `interval` (±10 %, so nodes started together do
//!   not stay in step). Hearing a node for the first time makes it announce within
//!   a tenth of the interval, so a newcomer learns the whole group in well under a
//!   second.
//! - A peer is added on its first announce and removed after `interval × multiplier`
//!   without one ([`LeaveReason::Expired`]), at once on its leave message
//!   ([`LeaveReason::Left`]), or when its announce counter goes back — it restarted
//!   under the same id ([`LeaveReason::Restarted`], then joins again).
//! - Announces of another network ID, our own (looped back), malformed ones and those
//!   that do not fit the directory are counted and change nothing else. The directory
//!   is bounded: when it is full, a peer silent for two intervals makes room (counted
//!   as evicted); else the newcomer is refused (counted), so a flood of made-up ids
//!   cannot push out the peers already known.
//! - Where multicast does not reach (`unicast`), every announce is also sent by
//!   unicast, flagged as a copy: to each seed, to each peer heard only by unicast
//!   lately, and to each address a peer list named that is not a peer yet (a
//!   *hint*). A node that hears a unicast announce from a newcomer (or from a node
//!   that just started) answers with a peer list — the addresses of the peers it
//!   knows — so a seed relays the directory and the newcomer announces to everyone
//!   directly. Hints are bounded like the directory (refused, counted) and forgotten
//!   after the expiry unless named again. Whether any multicast announce was heard
//!   tells the driver whether multicast reaches this node.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::wire::{
    decode_peer_list, encode_peer_list, Announce, Header, Kind, WireError, MAX_ANNOUNCE,
    MAX_PEER_LIST,
};

/// A discovery machine's settings.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// This node's id.
    pub node: u64,
    /// This node's name.
    pub name: String,
    /// Its network ID (announces of others are ignored).
    pub network: u32,
    /// The data group it uses (announced).
    pub group: SocketAddrV4,
    /// Time between announces.
    pub interval: Duration,
    /// Announces missed before a peer expires.
    pub multiplier: u32,
    /// Most peers in the directory.
    pub max_peers: usize,
    /// Seed of the announce jitter.
    pub seed: u64,
    /// Rendezvous addresses announced to by unicast (any node can be one).
    pub seeds: Vec<SocketAddrV4>,
    /// Announce to the discovery group.
    pub multicast: bool,
    /// Announce by unicast as well (seeds, unicast-only peers, hints) and answer
    /// newcomers with peer lists.
    pub unicast: bool,
}

/// Where a datagram [`Discovery::poll_transmit`] yields goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The discovery group.
    Group,
    /// One address, by unicast.
    To(SocketAddrV4),
}

/// A node in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The address its announces come from.
    pub address: SocketAddrV4,
    /// The data group it uses.
    pub group: SocketAddrV4,
    /// Its software version.
    pub version: String,
    /// Topics it publishes.
    pub publishes: Vec<String>,
    /// Topic prefixes it subscribes to.
    pub subscribes: Vec<String>,
    /// Its topic lists did not fit one announce and were cut.
    pub truncated: bool,
    /// When it was last heard.
    pub last_heard: Instant,
}

/// Why a peer left the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said so (a clean stop).
    Left,
    /// Not heard for `interval × multiplier`.
    Expired,
    /// It came back under the same id with a new announce counter (it restarted).
    Restarted,
    /// Evicted to make room for a newcomer in a full directory.
    Evicted,
}

/// A change in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A node was heard for the first time (or again after it left).
    Joined(Peer),
    /// A node left the directory.
    Left {
        /// Its id.
        id: u64,
        /// Its name.
        name: String,
        /// Why.
        reason: LeaveReason,
    },
}

/// What the machine counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryCounters {
    /// Announces sent (leaves included).
    pub announces_sent: u64,
    /// Announces of peers heard.
    pub announces_received: u64,
    /// Announces of another network ID, ignored.
    pub foreign: u64,
    /// Our own announces heard back (multicast loop), ignored.
    pub own: u64,
    /// Malformed announces, dropped.
    pub malformed: u64,
    /// Newcomers refused because the directory was full.
    pub refused: u64,
    /// Silent peers evicted to make room.
    pub evicted: u64,
    /// Peers that joined.
    pub joined: u64,
    /// Peers that left (any reason).
    pub left: u64,
    /// Events dropped because the application did not take them (bounded queue).
    pub events_dropped: u64,
    /// Peer lists sent to newcomers (unicast).
    pub peer_lists_sent: u64,
    /// Peer lists received.
    pub peer_lists_received: u64,
    /// Addresses named in peer lists that did not fit the hint table.
    pub hints_refused: u64,
    /// Datagrams not sent because the outbox was full.
    pub outbox_dropped: u64,
}

/// Announces sent soon after the first (a lost first announce does not delay a join).
const QUICK: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];
/// Events kept for the application at most (the oldest are dropped, counted).
const MAX_EVENTS: usize = 4096;
/// A node whose announce counter is below this just started: a unicast announce
/// from it is answered with a peer list even when it is known already (its first
/// list may have been lost).
const FRESH: u64 = QUICK.len() as u64 + 1;
/// Own addresses remembered (to never announce to ourselves from a hint).
const MAX_OWN: usize = 8;

/// How a peer was heard lately.
#[derive(Debug, Clone, Copy)]
struct Heard {
    seq: u64,
    unicast: Option<Instant>,
    multicast: Option<Instant>,
}

/// The discovery and membership state machine of one node.
#[derive(Debug)]
pub struct Discovery {
    cfg: DiscoveryConfig,
    publishes: Vec<String>,
    subscribes: Vec<String>,
    peers: HashMap<u64, (Peer, Heard)>,
    /// Addresses peer lists named that are not peers yet, and when last named.
    hints: HashMap<SocketAddrV4, Instant>,
    /// Where our own announces came back from.
    own: Vec<SocketAddrV4>,
    /// Datagrams waiting for [`poll_transmit`](Discovery::poll_transmit).
    outbox: VecDeque<(Destination, Vec<u8>)>,
    heard_multicast: bool,
    leaving: bool,
    seq: u64,
    started: Instant,
    quick: usize,
    next_announce: Instant,
    /// When the directory is next swept for expired peers (every quarter interval,
    /// so a timeout costs nothing per peer).
    next_sweep: Instant,
    events: VecDeque<PeerEvent>,
    /// The directory changed (a peer joined, left, or announced other topics, name or
    /// group) since the last [`take_changed`](Discovery::take_changed).
    changed: bool,
    rng: u64,
    counters: DiscoveryCounters,
}

impl Discovery {
    /// A node that starts announcing at `now`.
    pub fn new(cfg: DiscoveryConfig, now: Instant) -> Self {
        let rng = cfg.seed | 1;
        Discovery {
            cfg: DiscoveryConfig {
                interval: cfg.interval.max(Duration::from_millis(10)),
                multiplier: cfg.multiplier.max(1),
                max_peers: cfg.max_peers.max(1),
                ..cfg
            },
            publishes: Vec::new(),
            subscribes: Vec::new(),
            peers: HashMap::new(),
            hints: HashMap::new(),
            own: Vec::new(),
            outbox: VecDeque::new(),
            heard_multicast: false,
            leaving: false,
            seq: 0,
            started: now,
            quick: 0,
            next_announce: now,
            next_sweep: now,
            events: VecDeque::new(),
            changed: false,
            rng,
            counters: DiscoveryCounters::default(),
        }
    }

    /// What was counted so far.
    pub fn counters(&self) -> &DiscoveryCounters {
        &self.counters
    }

    /// The directory.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().map(|(p, _)| p)
    }

    /// How long a silent peer stays.
    pub fn expiry(&self) -> Duration {
        self.cfg.interval * self.cfg.multiplier
    }

    /// Whether an announce of another node ever came through the discovery group
    /// (not as a unicast copy): multicast reaches this node.
    pub fn heard_multicast(&self) -> bool {
        self.heard_multicast
    }

    /// Addresses named by peer lists, not heard from yet.
    #[cfg(test)]
    pub fn hints(&self) -> usize {
        self.hints.len()
    }

    /// Most datagrams waiting to be sent: an announce to the group and to every
    /// target, and the peer lists answering newcomers.
    fn max_outbox(&self) -> usize {
        4 * self.cfg.max_peers + self.cfg.seeds.len() + 64
    }

    fn push_out(&mut self, to: Destination, bytes: Vec<u8>) {
        if self.outbox.len() >= self.max_outbox() {
            self.counters.outbox_dropped = self.counters.outbox_dropped.saturating_add(1);
            return;
        }
        self.outbox.push_back((to, bytes));
    }

    /// The unicast targets of an announce: the seeds, the peers heard by unicast and
    /// not by multicast for two intervals, and the hints (never our own address).
    fn targets(&self, now: Instant) -> Vec<SocketAddrV4> {
        let recent = now.checked_sub(self.cfg.interval * 2);
        let mut t: Vec<SocketAddrV4> = self.cfg.seeds.clone();
        t.extend(self.peers.values().filter_map(|(p, h)| {
            let multicast_lately = h.multicast.is_some_and(|m| recent.is_none_or(|r| m > r));
            (h.unicast.is_some() && !multicast_lately).then_some(p.address)
        }));
        t.extend(self.hints.keys().copied());
        t.sort_unstable();
        t.dedup();
        t.retain(|a| !self.own.contains(a));
        t
    }

    /// Queues the announce (or leave) to the group and, by unicast, to every target.
    fn queue_announce(&mut self, now: Instant, leave: bool) {
        let mut a = self.announce(leave);
        if self.cfg.multicast {
            let mut b = Vec::with_capacity(MAX_ANNOUNCE);
            a.encode(&mut b);
            self.push_out(Destination::Group, b);
        }
        if self.cfg.unicast {
            a.unicast = true;
            let mut b = Vec::with_capacity(MAX_ANNOUNCE);
            a.encode(&mut b);
            for to in self.targets(now) {
                self.push_out(Destination::To(to), b.clone());
            }
        }
    }

    /// Answers a newcomer heard by unicast with the addresses of the peers we know.
    fn queue_peer_list(&mut self, to: SocketAddrV4) {
        let known: Vec<SocketAddrV4> = self
            .peers
            .values()
            .map(|(p, _)| p.address)
            .filter(|&a| a != to)
            .collect();
        let mut chunks = known.chunks(MAX_PEER_LIST).peekable();
        if chunks.peek().is_none() {
            return;
        }
        for chunk in chunks {
            let mut b = Vec::new();
            encode_peer_list(self.cfg.network, chunk, &mut b);
            self.counters.peer_lists_sent = self.counters.peer_lists_sent.saturating_add(1);
            self.push_out(Destination::To(to), b);
        }
    }

    /// A peer list: its addresses become hints (bounded), announced to soon.
    fn handle_peer_list(&mut self, now: Instant, bytes: &[u8]) -> Result<(), WireError> {
        let list = decode_peer_list(bytes).inspect_err(|_| {
            self.counters.malformed = self.counters.malformed.saturating_add(1);
        })?;
        self.counters.peer_lists_received = self.counters.peer_lists_received.saturating_add(1);
        if !self.cfg.unicast {
            return Ok(());
        }
        let mut new = false;
        for a in list {
            if self.own.contains(&a) || self.peers.values().any(|(p, _)| p.address == a) {
                continue;
            }
            if let Some(t) = self.hints.get_mut(&a) {
                *t = now;
            } else if self.hints.len() < self.cfg.max_peers {
                self.hints.insert(a, now);
                new = true;
            } else {
                self.counters.hints_refused = self.counters.hints_refused.saturating_add(1);
            }
        }
        if new {
            let soon = now + self.jitter(self.cfg.interval / 10);
            self.next_announce = self.next_announce.min(soon);
        }
        Ok(())
    }

    /// The topics this node publishes and subscribes to changed: announced now.
    pub fn set_topics(&mut self, now: Instant, publishes: Vec<String>, subscribes: Vec<String>) {
        if publishes != self.publishes || subscribes != self.subscribes {
            self.publishes = publishes;
            self.subscribes = subscribes;
            self.next_announce = self.next_announce.min(now);
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Up to `d`, at random.
    fn jitter(&mut self, d: Duration) -> Duration {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if ns == 0 { 0 } else { self.random() % ns })
    }

    /// Whether the directory changed since the last call (then `false` until the
    /// next change): a driver that mirrors it copies only then.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn event(&mut self, e: PeerEvent) {
        self.changed = true;
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
        self.events.push_back(e);
    }

    fn remove(&mut self, id: u64, reason: LeaveReason) {
        if let Some((p, _)) = self.peers.remove(&id) {
            self.counters.left = self.counters.left.saturating_add(1);
            self.event(PeerEvent::Left {
                id,
                name: p.name,
                reason,
            });
        }
    }

    /// A datagram from the discovery group. A malformed one is counted and returned as
    /// an error; it changes nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        match Header::decode(bytes) {
            Ok(h) if h.network != self.cfg.network => {
                self.counters.foreign = self.counters.foreign.saturating_add(1);
                return Ok(());
            }
            Ok(h) if h.kind == Kind::PeerList => return self.handle_peer_list(now, bytes),
            _ => {}
        }
        let a = match Announce::decode(bytes) {
            Ok(a) => a,
            Err(e) => {
                self.counters.malformed = self.counters.malformed.saturating_add(1);
                return Err(e);
            }
        };
        if a.node == self.cfg.node {
            self.counters.own = self.counters.own.saturating_add(1);
            if a.unicast && !self.own.contains(&source) && self.own.len() < MAX_OWN {
                self.own.push(source);
                self.hints.remove(&source);
            }
            return Ok(());
        }
        self.counters.announces_received = self.counters.announces_received.saturating_add(1);
        if !a.unicast {
            self.heard_multicast = true;
        }
        if a.leave {
            self.remove(a.node, LeaveReason::Left);
            return Ok(());
        }
        if let Some((_, h)) = self.peers.get(&a.node) {
            if a.seq < h.seq {
                self.remove(a.node, LeaveReason::Restarted);
            }
        }
        self.hints.remove(&source);
        let answer =
            self.cfg.unicast && a.unicast && (a.seq < FRESH || !self.peers.contains_key(&a.node));
        let peer = Peer {
            id: a.node,
            name: a.name,
            address: source,
            group: a.group,
            version: a.version,
            publishes: a.publishes,
            subscribes: a.subscribes,
            truncated: a.truncated,
            last_heard: now,
        };
        if let Some(known) = self.peers.get_mut(&a.node) {
            let k = &known.0;
            if (
                &k.name,
                k.address,
                k.group,
                &k.version,
                &k.publishes,
                &k.subscribes,
                k.truncated,
            ) != (
                &peer.name,
                peer.address,
                peer.group,
                &peer.version,
                &peer.publishes,
                &peer.subscribes,
                peer.truncated,
            ) {
                self.changed = true;
            }
            let h = &mut known.1;
            h.seq = a.seq;
            if a.unicast {
                h.unicast = Some(now);
            } else {
                h.multicast = Some(now);
            }
            known.0 = peer;
            if answer {
                self.queue_peer_list(source);
            }
            return Ok(());
        }
        if self.peers.len() >= self.cfg.max_peers {
            let stale = now.checked_sub(self.cfg.interval * 2);
            let stalest = self
                .peers
                .values()
                .min_by_key(|(p, _)| p.last_heard)
                .filter(|(p, _)| stale.is_some_and(|s| p.last_heard <= s))
                .map(|(p, _)| p.id);
            match stalest {
                Some(id) => {
                    self.counters.evicted = self.counters.evicted.saturating_add(1);
                    self.remove(id, LeaveReason::Evicted);
                }
                None => {
                    self.counters.refused = self.counters.refused.saturating_add(1);
                    return Ok(());
                }
            }
        }
        self.counters.joined = self.counters.joined.saturating_add(1);
        let heard = Heard {
            seq: a.seq,
            unicast: a.unicast.then_some(now),
            multicast: (!a.unicast).then_some(now),
        };
        self.peers.insert(a.node, (peer.clone(), heard));
        self.event(PeerEvent::Joined(peer));
        if answer {
            self.queue_peer_list(source);
        }
        // The newcomer learns about us soon, not at our next periodic announce.
        let soon = now + self.jitter(self.cfg.interval / 10);
        self.next_announce = self.next_announce.min(soon);
        Ok(())
    }

    fn announce(&self, leave: bool) -> Announce {
        Announce {
            node: self.cfg.node,
            seq: self.seq,
            network: self.cfg.network,
            leave,
            name: self.cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            group: self.cfg.group,
            publishes: self.publishes.clone(),
            subscribes: self.subscribes.clone(),
            truncated: false,
            unicast: false,
        }
    }

    /// The next datagram to send, encoded into `out`, and where it goes: the
    /// announce when it is due (to the group, then its unicast copies), the peer
    /// lists answering newcomers. `None` when nothing is to be sent now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Destination> {
        if now >= self.next_announce && !self.leaving {
            self.queue_announce(now, false);
            self.seq = self.seq.saturating_add(1);
            self.next_announce = match QUICK.get(self.quick) {
                Some(&q) if self.started + q > now => {
                    self.quick += 1;
                    self.started + q
                }
                _ => {
                    self.quick = QUICK.len();
                    let i = self.cfg.interval;
                    now + i - i / 10 + self.jitter(i / 5)
                }
            };
        }
        let (to, bytes) = self.outbox.pop_front()?;
        if Header::decode(&bytes).is_ok_and(|h| h.kind == Kind::Announce) {
            self.counters.announces_sent = self.counters.announces_sent.saturating_add(1);
        }
        out.clear();
        out.extend_from_slice(&bytes);
        Some(to)
    }

    /// This node's clean stop: what is queued is dropped and the leave is queued
    /// (to the group and every unicast target), for [`poll_transmit`](Self::poll_transmit);
    /// no announce follows it.
    pub fn leave(&mut self, now: Instant) {
        self.outbox.clear();
        self.leaving = true;
        self.queue_announce(now, true);
    }

    /// When [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            return Some(self.started);
        }
        if self.leaving {
            return None;
        }
        if self.peers.is_empty() && self.hints.is_empty() {
            return Some(self.next_announce);
        }
        Some(self.next_sweep.min(self.next_announce))
    }

    /// Expires the peers not heard for `interval × multiplier` (looked at every
    /// quarter interval, so a timer costs nothing per peer: a peer expires at most
    /// that late).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.cfg.interval / 4;
        let expiry = self.expiry();
        let gone: Vec<u64> = self
            .peers
            .values()
            .filter(|(p, _)| p.last_heard + expiry <= now)
            .map(|(p, _)| p.id)
            .collect();
        for id in gone {
            self.remove(id, LeaveReason::Expired);
        }
        self.hints.retain(|_, named| *named + expiry > now);
    }

    /// The next change in the directory, oldest first.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(node: u64) -> DiscoveryConfig {
        DiscoveryConfig {
            node,
            name: format!("node-{node}"),
            network: 7,
            group: "239.255.0.1:40456".parse().unwrap(),
            interval: Duration::from_secs(1),
            multiplier: 5,
            max_peers: 1024,
            seed: node,
            seeds: Vec::new(),
            multicast: true,
            unicast: false,
        }
    }

    /// A node of a network without multicast: seeds `seeds`.
    fn uni(node: u64, seeds: &[u64]) -> DiscoveryConfig {
        DiscoveryConfig {
            seeds: seeds.iter().map(|&s| addr(s)).collect(),
            unicast: true,
            ..cfg(node)
        }
    }

    fn addr(node: u64) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, (node >> 8) as u8, node as u8), 40400)
    }

    /// A simulated group: an announce to the group reaches every other machine
    /// (unless multicast is blocked), a unicast datagram the machine at that address
    /// (node `i` is at `addr(i + 1)`); loss as given; the clock jumps from event to
    /// event. Counts the bytes sent.
    struct Group {
        nodes: Vec<Discovery>,
        alive: Vec<bool>,
        now: Instant,
        bytes: u64,
        rng: u64,
        loss_pct: u64,
        multicast_blocked: bool,
    }

    impl Group {
        fn new(n: u64, t0: Instant, loss_pct: u64) -> Self {
            Self::with((0..n).map(|i| cfg(i + 1)).collect(), t0, loss_pct)
        }

        fn with(cfgs: Vec<DiscoveryConfig>, t0: Instant, loss_pct: u64) -> Self {
            Group {
                alive: vec![true; cfgs.len()],
                nodes: cfgs.into_iter().map(|c| Discovery::new(c, t0)).collect(),
                now: t0,
                bytes: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
                loss_pct,
                multicast_blocked: false,
            }
        }

        fn lost(&mut self) -> bool {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % 100 < self.loss_pct
        }

        fn deliver(&mut self, from: usize, to: Destination, buf: &[u8]) {
            self.bytes += buf.len() as u64 + 28;
            let dests: Vec<usize> = match to {
                Destination::Group if self.multicast_blocked => Vec::new(),
                Destination::Group => (0..self.nodes.len()).filter(|&j| j != from).collect(),
                Destination::To(a) => (0..self.nodes.len())
                    .filter(|&j| addr(j as u64 + 1) == a)
                    .collect(),
            };
            for j in dests {
                if self.alive[j] && !self.lost() {
                    let src = addr(from as u64 + 1);
                    self.nodes[j].handle_datagram(self.now, src, buf).unwrap();
                }
            }
        }

        /// Runs until `until`, delivering every datagram at once.
        fn run(&mut self, until: Instant) {
            let mut buf = Vec::new();
            loop {
                let next = (0..self.nodes.len())
                    .filter(|&i| self.alive[i])
                    .filter_map(|i| self.nodes[i].poll_timeout())
                    .min();
                let Some(t) = next.filter(|&t| t <= until) else {
                    self.now = until;
                    return;
                };
                self.now = self.now.max(t);
                for i in 0..self.nodes.len() {
                    if !self.alive[i] {
                        continue;
                    }
                    self.nodes[i].handle_timeout(self.now);
                    while let Some(to) = self.nodes[i].poll_transmit(self.now, &mut buf) {
                        self.deliver(i, to, &buf.clone());
                    }
                }
            }
        }

        fn ids(&self, i: usize) -> Vec<u64> {
            let mut v: Vec<u64> = self.nodes[i].peers().map(|p| p.id).collect();
            v.sort_unstable();
            v
        }

        fn events(&mut self, i: usize) -> Vec<PeerEvent> {
            std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
        }
    }

    #[test]
    fn three_nodes_find_each_other_within_a_second_and_expire_a_dead_one() {
        let t0 = Instant::now();
        let mut g = Group::new(3, t0, 0);
        g.nodes[0].set_topics(t0, vec!["/md/eurusd".into()], vec!["/orders/".into()]);
        g.run(t0 + Duration::from_millis(400));
        assert_eq!(g.ids(0), vec![2, 3]);
        assert_eq!(g.ids(1), vec![1, 3]);
        let p1 = g.nodes[1].peers().find(|p| p.id == 1).unwrap().clone();
        assert_eq!((p1.name.as_str(), p1.address), ("node-1", addr(1)));
        assert_eq!(p1.publishes, vec!["/md/eurusd".to_string()]);
        assert_eq!(p1.subscribes, vec!["/orders/".to_string()]);
        let joined: Vec<_> = g.events(1);
        assert!(
            matches!(&joined[..], [PeerEvent::Joined(a), PeerEvent::Joined(b)] if a.id != b.id)
        );
        // Node 3 dies (no leave): gone at the others within interval × multiplier
        // of its last announce, and not before.
        g.alive[2] = false;
        let died = g.now;
        g.run(died + Duration::from_secs(3));
        assert_eq!(g.ids(0), vec![2, 3], "still within the expiry");
        g.run(died + Duration::from_secs(6));
        assert_eq!(g.ids(0), vec![2]);
        assert_eq!(
            g.events(0).last(),
            Some(&PeerEvent::Left {
                id: 3,
                name: "node-3".into(),
                reason: LeaveReason::Expired
            })
        );
        // It restarts with the same id: joined again.
        g.nodes[2] = Discovery::new(cfg(3), g.now);
        g.alive[2] = true;
        g.run(g.now + Duration::from_millis(500));
        assert_eq!(g.ids(0), vec![2, 3]);
        assert!(matches!(g.events(0).last(), Some(PeerEvent::Joined(p)) if p.id == 3));
    }

    #[test]
    fn a_leave_removes_at_once_and_a_quick_restart_is_seen() {
        let t0 = Instant::now();
        let mut g = Group::new(2, t0, 0);
        g.run(t0 + Duration::from_millis(500));
        assert_eq!(g.ids(0), vec![2]);
        let _ = g.events(0);
        let mut buf = Vec::new();
        g.nodes[1].leave(g.now);
        assert_eq!(
            g.nodes[1].poll_transmit(g.now, &mut buf),
            Some(Destination::Group)
        );
        assert_eq!(g.nodes[1].poll_transmit(g.now, &mut buf), None);
        g.nodes[0].handle_datagram(g.now, addr(2), &buf).unwrap();
        assert_eq!(g.ids(0), Vec::<u64>::new());
        assert!(matches!(
            g.events(0)[..],
            [PeerEvent::Left {
                id: 2,
                reason: LeaveReason::Left,
                ..
            }]
        ));
        // Started again (heard again), then restarted before it could expire: the
        // counter went back.
        g.nodes[1] = Discovery::new(cfg(2), g.now);
        g.run(g.now + Duration::from_millis(1500));
        assert_eq!(g.ids(0), vec![2]);
        let _ = g.events(0);
        g.nodes[1] = Discovery::new(cfg(2), g.now);
        g.run(g.now + Duration::from_millis(50));
        let ev = g.events(0);
        assert!(
            matches!(&ev[..], [PeerEvent::Left { id: 2, reason: LeaveReason::Restarted, .. }, PeerEvent::Joined(p)] if p.id == 2),
            "{ev:?}"
        );
    }

    #[test]
    fn other_networks_and_own_announces_are_ignored_and_counted() {
        let t0 = Instant::now();
        let mut a = Discovery::new(cfg(1), t0);
        let mut other = Discovery::new(
            DiscoveryConfig {
                network: 8,
                ..cfg(2)
            },
            t0,
        );
        let mut buf = Vec::new();
        assert!(other.poll_transmit(t0, &mut buf).is_some());
        a.handle_datagram(t0, addr(2), &buf).unwrap();
        assert!(a.poll_transmit(t0, &mut buf).is_some());
        a.handle_datagram(t0, addr(1), &buf).unwrap();
        assert!(a.handle_datagram(t0, addr(3), b"RCST nonsense").is_err());
        assert_eq!(a.peers().count(), 0);
        let c = a.counters();
        assert_eq!((c.foreign, c.own, c.malformed, c.joined), (1, 1, 1, 0));
    }

    /// Acceptance (issue 10, 7): 1,000 nodes discovering each other cost well under
    /// 1 % of a 1 Gbit/s link, start-up burst included, with 5 % loss.
    #[test]
    fn a_thousand_peers_cost_under_one_percent_of_a_gigabit() {
        let t0 = Instant::now();
        let mut g = Group::new(1000, t0, 5);
        let secs = 4;
        g.run(t0 + Duration::from_secs(secs));
        for i in [0, 499, 999] {
            assert_eq!(g.nodes[i].peers().count(), 999, "node {i} knows everyone");
        }
        let per_sec = g.bytes as f64 / secs as f64;
        let share = per_sec * 8.0 / 1e9;
        assert!(
            share < 0.01,
            "discovery used {:.3} % of 1 Gbit/s",
            share * 100.0
        );
    }

    /// Acceptance (issue 10, 7): a flood of made-up announces leaves the directory
    /// bounded, counted, and the peers known before it in place.
    #[test]
    fn a_flood_of_fake_announces_keeps_the_directory_bounded() {
        let t0 = Instant::now();
        let mut a = Discovery::new(
            DiscoveryConfig {
                max_peers: 64,
                ..cfg(1)
            },
            t0,
        );
        let mut real = Discovery::new(cfg(2), t0);
        let mut buf = Vec::new();
        real.poll_transmit(t0, &mut buf);
        a.handle_datagram(t0, addr(2), &buf).unwrap();
        for fake in 0..100_000u64 {
            let mut f = Discovery::new(cfg(1_000_000 + fake), t0);
            f.poll_transmit(t0, &mut buf);
            a.handle_datagram(t0 + Duration::from_millis(1), addr(9), &buf)
                .unwrap();
        }
        assert_eq!(a.peers().count(), 64);
        assert!(a.peers().any(|p| p.id == 2), "the real peer stays");
        assert_eq!(a.counters().refused, 100_000 - 63);
        assert!(a.events.len() <= MAX_EVENTS);
        // Once the fakes go silent, they expire and make room again.
        a.handle_timeout(t0 + Duration::from_secs(6));
        assert_eq!(a.peers().count(), 0);
    }

    /// Issue 10, build 3: with multicast blocked, nodes that know one seed find each
    /// other through it within a second (5 % loss), and a dead one still expires.
    #[test]
    fn without_multicast_nodes_find_each_other_through_a_seed() {
        let t0 = Instant::now();
        // Node 1 is the seed (and names itself, as a shared configuration would).
        let cfgs = (1..=5).map(|i| uni(i, &[1])).collect();
        let mut g = Group::with(cfgs, t0, 5);
        g.multicast_blocked = true;
        g.run(t0 + Duration::from_secs(1));
        for i in 0..5 {
            let want: Vec<u64> = (1..=5).filter(|&n| n != i as u64 + 1).collect();
            assert_eq!(g.ids(i), want, "node {} knows everyone", i + 1);
            assert!(!g.nodes[i].heard_multicast());
            assert_eq!(g.nodes[i].hints(), 0, "every hint became a peer");
        }
        assert!(g.nodes[0].counters().peer_lists_sent >= 4);
        assert_eq!(g.nodes[0].own, vec![addr(1)], "the seed saw itself once");
        g.alive[3] = false;
        let died = g.now;
        g.run(died + Duration::from_secs(7));
        assert_eq!(g.ids(1), vec![1, 3, 5]);
        // The seed itself dies: the others still know each other directly.
        g.alive[0] = false;
        g.run(g.now + Duration::from_secs(7));
        assert_eq!(g.ids(1), vec![3, 5]);
        assert_eq!(g.ids(2), vec![2, 5]);
    }

    /// Issue 10, acceptance 3: without seeds a node on a network that drops
    /// multicast hears nobody, and says so through `heard_multicast` and an empty
    /// directory; with multicast working, unicast copies go to the seeds alone.
    #[test]
    fn no_seeds_hear_nobody_and_working_multicast_keeps_unicast_to_the_seeds() {
        let t0 = Instant::now();
        let mut g = Group::new(3, t0, 0);
        g.multicast_blocked = true;
        g.run(t0 + Duration::from_secs(3));
        for i in 0..3 {
            assert_eq!(g.ids(i), Vec::<u64>::new());
            assert!(!g.nodes[i].heard_multicast());
        }
        let cfgs = (1..=4).map(|i| uni(i, &[1])).collect();
        let mut g = Group::with(cfgs, t0, 0);
        g.run(t0 + Duration::from_secs(3));
        for i in 0..4 {
            assert_eq!(g.ids(i).len(), 3);
            assert!(g.nodes[i].heard_multicast());
        }
        let now = g.now;
        assert_eq!(g.nodes[2].targets(now), vec![addr(1)]);
        assert_eq!(g.nodes[0].targets(now), Vec::<SocketAddrV4>::new());
    }

    /// Made-up peer lists cannot grow the hints beyond the directory's bound, nor
    /// make a node announce to more than that; unheard hints are forgotten.
    #[test]
    fn a_flood_of_peer_lists_keeps_the_hints_bounded() {
        let t0 = Instant::now();
        let mut a = Discovery::new(
            DiscoveryConfig {
                max_peers: 64,
                ..uni(1, &[2])
            },
            t0,
        );
        let mut buf = Vec::new();
        for k in 0..100u32 {
            let list: Vec<SocketAddrV4> = (0..MAX_PEER_LIST as u32)
                .map(|i| SocketAddrV4::new(Ipv4Addr::from(0x0a80_0000 + k * 1000 + i), 40400))
                .collect();
            encode_peer_list(7, &list, &mut buf);
            a.handle_datagram(t0, addr(9), &buf).unwrap();
        }
        assert_eq!(a.hints(), 64);
        assert_eq!(a.counters().hints_refused, 100 * MAX_PEER_LIST as u64 - 64);
        assert_eq!(a.counters().peer_lists_received, 100);
        let mut sent = 0;
        while a
            .poll_transmit(t0 + Duration::from_millis(200), &mut buf)
            .is_some()
        {
            sent += 1;
        }
        assert!(sent <= 1 + 1 + 64, "{sent} datagrams for one announce");
        a.handle_timeout(t0 + Duration::from_secs(6));
        assert_eq!(a.hints(), 0);
        // A malformed list is counted and changes nothing.
        encode_peer_list(7, &[addr(3)], &mut buf);
        buf.push(1);
        assert!(a.handle_datagram(t0, addr(9), &buf).is_err());
        assert_eq!(a.hints(), 0);
    }
}
