//! The real publisher machine → simulated network → the real receiver machine(s),
//! with no sockets and no clock.
//!
//! Two kinds of test. Datagram-level ones run the publisher machine over a list of
//! messages ([`send_all`]) and feed its datagrams, mangled, to a receiver. Session
//! ones run [`Sim`], a deterministic simulator in the manner of quinn-proto's test
//! `Pair`: the clock jumps to the next event (the earliest of both machines'
//! timeouts and the network's next delivery) and data, retransmissions and
//! heartbeats travel publisher → receivers while NAKs and status travel back,
//! through seeded links that drop, double, delay and reorder.
//!
//! The invariant checked for every generated case: each message the publisher
//! numbered after a receiver joined is either delivered to it exactly once with its
//! exact topic and bytes, or covered by exactly one loss event; deliveries come in
//! sequence order; and the counters agree with what was handed out. Flow control,
//! heartbeats, the rate limit and the retransmit budget each have their own seeded
//! properties on top.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::publisher::PublisherConfig;
use super::receiver::JOIN_FROM_START;
use super::*;

pub(super) const SRC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);

/// A receiver that reports gaps at once (no NAKs).
fn best_effort(max_message: usize, max_sessions: usize) -> Receiver {
    Receiver::new(ReceiverConfig {
        max_message,
        max_sessions,
        reliable: false,
        ..ReceiverConfig::default()
    })
}

/// Runs the real publisher machine over `msgs` (no flow control, no rate limit) and
/// returns every data datagram it produced, in order.
pub(super) fn send_all(max_payload: usize, msgs: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let t0 = Instant::now();
    let mut p = Publisher::new(
        PublisherConfig {
            reliable: false,
            retransmit_window: 0,
            ..PublisherConfig::new(77, max_payload)
        },
        t0,
    );
    let mut out = Vec::new();
    let mut collect = |p: &mut Publisher| {
        p.poll_transmit(t0, &mut |kind, b| {
            if kind == Transmit::Data {
                out.extend(b.iter().map(|d| d.to_vec()));
            }
            true
        });
    };
    for (topic, payload) in msgs {
        while p.offer(t0, topic, payload) == Err(Blocked::Transmit) {
            collect(&mut p);
        }
    }
    collect(&mut p);
    out
}

#[derive(Debug, Default)]
pub(super) struct Seen {
    pub(super) messages: Vec<(u64, String, Vec<u8>)>,
    pub(super) losses: Vec<(u64, u64)>,
}

fn receive(rx: &mut Receiver, datagrams: &[Vec<u8>]) -> Seen {
    let mut seen = Seen::default();
    let now = Instant::now();
    for d in datagrams {
        let _ = rx.handle_datagram(now, SRC, d, &mut |ev| match ev {
            Delivery::Message {
                seq,
                topic,
                payload,
                ..
            } => seen
                .messages
                .push((seq, topic.to_string(), payload.to_vec())),
            Delivery::Loss {
                from_seq, to_seq, ..
            } => seen.losses.push((from_seq, to_seq)),
            Delivery::Joined { .. } | Delivery::Gone { .. } => {}
        });
    }
    seen
}

/// A delivery as text, for tests that check a sequence of them.
fn describe(ev: Delivery<'_>) -> String {
    match ev {
        Delivery::Message { seq, .. } => format!("m{seq}"),
        Delivery::Loss {
            from_seq, to_seq, ..
        } => format!("loss {from_seq}..{to_seq}"),
        Delivery::Joined { from } => format!("joined {}", from.session),
        Delivery::Gone { from } => format!("gone {}", from.session),
    }
}

/// Checks the invariant; `first` is the first sequence owed to the receiver.
fn check(msgs: &[(String, Vec<u8>)], seen: &Seen, rx: &Receiver, first: u64) {
    let mut owed = vec![0u32; msgs.len()];
    let mut last = None;
    for (seq, topic, payload) in &seen.messages {
        let i = *seq as usize;
        assert!(
            *seq >= first,
            "delivered {seq} before the join point {first}"
        );
        assert_eq!(
            (topic, payload),
            (&msgs[i].0, &msgs[i].1),
            "message {seq} corrupted"
        );
        assert!(last < Some(*seq), "out of order: {seq} after {last:?}");
        last = Some(*seq);
        owed[i] += 1;
    }
    for (from, to) in &seen.losses {
        assert!(from < to, "empty loss range {from}..{to}");
        for s in *from..*to {
            owed[s as usize] += 1;
        }
    }
    // Messages at the tail that were sent in datagrams all lost are not yet known to
    // be lost (heartbeats come with the reliability work); everything up to the last
    // accounted-for message is delivered or reported exactly once.
    let horizon = owed.iter().rposition(|&n| n > 0).map_or(0, |p| p + 1);
    for (s, n) in owed.iter().enumerate().take(horizon).skip(first as usize) {
        assert_eq!(*n, 1, "message {s} accounted {n} times");
    }
    let c = rx.counters();
    assert_eq!(c.messages as usize, seen.messages.len());
    let lost: u64 = seen.losses.iter().map(|(a, b)| b - a).sum();
    assert_eq!(c.lost_messages, lost);
}

fn messages() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            "/[a-c]{0,3}",
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 0..120),
                1 => proptest::collection::vec(any::<u8>(), 200..1500),
            ],
        ),
        1..150,
    )
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Pass,
    Drop,
    Duplicate,
    SwapWithNext,
}

fn faults() -> impl Strategy<Value = Vec<Fault>> {
    proptest::collection::vec(
        prop_oneof![
            12 => Just(Fault::Pass),
            2 => Just(Fault::Drop),
            1 => Just(Fault::Duplicate),
            1 => Just(Fault::SwapWithNext),
        ],
        0..400,
    )
}

fn apply(datagrams: &[Vec<u8>], faults: &[Fault]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < datagrams.len() {
        match faults.get(i).copied().unwrap_or(Fault::Pass) {
            Fault::Pass => v.push(datagrams[i].clone()),
            Fault::Drop => {}
            Fault::Duplicate => {
                v.push(datagrams[i].clone());
                v.push(datagrams[i].clone());
            }
            Fault::SwapWithNext if i + 1 < datagrams.len() => {
                v.push(datagrams[i + 1].clone());
                v.push(datagrams[i].clone());
                i += 1;
            }
            Fault::SwapWithNext => v.push(datagrams[i].clone()),
        }
        i += 1;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn lossless_network_delivers_everything_in_order(msgs in messages(), mtu in 150usize..600) {
        let d = send_all(mtu, &msgs);
        let mut rx = best_effort(1 << 20, 16);
        let seen = receive(&mut rx, &d);
        prop_assert_eq!(seen.messages.len(), msgs.len());
        prop_assert!(seen.losses.is_empty());
        check(&msgs, &seen, &rx, 0);
        prop_assert_eq!(rx.counters().gaps, 0);
    }

    #[test]
    fn faulty_network_never_loses_silently(msgs in messages(), mtu in 150usize..600, f in faults()) {
        let d = send_all(mtu, &msgs);
        let wire = apply(&d, &f);
        let mut rx = best_effort(1 << 20, 16);
        let seen = receive(&mut rx, &wire);
        // The receiver joins at the first datagram that reaches it.
        let first = seen.messages.first().map(|m| m.0).into_iter()
            .chain(seen.losses.first().map(|l| l.0)).min().unwrap_or(0);
        check(&msgs, &seen, &rx, first);
        let injected = f.iter().take(d.len()).any(|x| matches!(x, Fault::Duplicate | Fault::SwapWithNext));
        if !injected {
            prop_assert_eq!(rx.counters().duplicates, 0);
        }
    }

    #[test]
    fn late_joiner_starts_at_live_position(msgs in messages(), mtu in 150usize..600, skip in 0usize..50) {
        let d = send_all(mtu, &msgs);
        let skip = skip.min(d.len().saturating_sub(1));
        let mut rx = best_effort(1 << 20, 16);
        let seen = receive(&mut rx, &d[skip..]);
        prop_assert!(seen.losses.is_empty(), "joining late is not a loss: {:?}", seen.losses);
        let first = seen.messages.first().map_or(0, |m| m.0);
        check(&msgs, &seen, &rx, first);
        // every message from the join point on arrives (none when it joined inside
        // the last message's fragments)
        if !seen.messages.is_empty() {
            prop_assert_eq!(seen.messages.len() as u64, msgs.len() as u64 - first);
        }
    }
}

/// A receiver with a wide window still reports its position every `status_every`
/// datagrams (a publisher that keeps fewer than the window waits on it).
#[test]
fn status_comes_every_few_datagrams_however_wide_the_window() {
    let msgs: Vec<(String, Vec<u8>)> = (0..30u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs);
    assert_eq!(d.len(), 15);
    let statuses = |every: u32| {
        let mut rx = Receiver::new(ReceiverConfig {
            status_every: every,
            ..ReceiverConfig::default()
        });
        let now = Instant::now();
        let mut at = Vec::new();
        for dg in &d {
            let _ = rx.handle_datagram(now, SRC, dg, &mut |_| {});
            rx.poll_status(now, 10_000, &mut |_, next_seq, _, _| at.push(next_seq));
        }
        at
    };
    // at once for a new session, then each time the position moved `every`
    assert_eq!(statuses(4), vec![1, 5, 9, 13]);
    // without the cap a quarter of the window (2,500 datagrams) would pass first
    assert_eq!(statuses(u32::MAX), vec![1]);
}

#[test]
fn gap_reports_exact_message_range() {
    let msgs: Vec<(String, Vec<u8>)> = (0..30u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    // 32 + k*(8+2+40) <= 132  => 2 messages per datagram
    let d = send_all(132, &msgs);
    assert_eq!(d.len(), 15);
    let mut wire = d.clone();
    wire.remove(3); // messages 6, 7
    wire.remove(3); // messages 8, 9
    let mut rx = best_effort(1 << 20, 4);
    let seen = receive(&mut rx, &wire);
    assert_eq!(seen.losses, vec![(6, 10)]);
    assert_eq!(seen.messages.len(), 26);
    let c = rx.counters();
    assert_eq!((c.gaps, c.lost_datagrams, c.lost_messages), (1, 2, 4));
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs);
    let mut wire = d.clone();
    wire.insert(2, d[1].clone());
    wire.push(d[0].clone());
    let mut rx = best_effort(1 << 20, 4);
    let seen = receive(&mut rx, &wire);
    assert_eq!(seen.messages.len(), 10);
    assert_eq!(rx.counters().duplicates, 2);
}

#[test]
fn one_mebibyte_message_reassembles_and_losing_a_fragment_reports_it() {
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
    let msgs = vec![
        ("/a".to_string(), b"before".to_vec()),
        ("/big".to_string(), big.clone()),
        ("/a".to_string(), b"after".to_vec()),
    ];
    let d = send_all(65507, &msgs);
    let mut rx = best_effort(16 << 20, 4);
    let seen = receive(&mut rx, &d);
    assert_eq!(seen.messages.len(), 3);
    assert_eq!(seen.messages[1].2, big);
    // lose one fragment in the middle: the big message is reported lost, the rest arrive
    let mut wire = d.clone();
    wire.remove(5);
    let mut rx = best_effort(16 << 20, 4);
    let seen = receive(&mut rx, &wire);
    assert_eq!(seen.losses, vec![(1, 2)]);
    assert_eq!(
        seen.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![0, 2]
    );
    // a message above the receiver's limit is malformed, not delivered
    let mut rx = best_effort(1 << 19, 4);
    let seen = receive(&mut rx, &d);
    assert!(rx.counters().malformed > 0);
    assert!(seen.messages.iter().all(|m| m.2.len() < 1 << 19));
}

#[test]
fn sessions_are_bounded() {
    let mut rx = best_effort(1 << 20, 3);
    for session in 0..10u32 {
        let mut s = SenderStream::new(session, 200);
        let mut d = DatagramBuf::new(200);
        assert_eq!(s.append(&mut d, "/t", b"x"), Append::Done);
        s.seal(&mut d);
        rx.handle_datagram(Instant::now(), SRC, d.bytes(), &mut |_| {})
            .unwrap();
    }
    assert_eq!(rx.session_count(), 3);
    assert_eq!(rx.counters().sessions_evicted, 7);
}

#[test]
fn random_bytes_are_counted_malformed() {
    let mut rx = best_effort(1 << 20, 3);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..500usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(rx
            .handle_datagram(Instant::now(), SRC, &bytes, &mut |_| panic!(
                "delivered junk"
            ))
            .is_err());
    }
    assert_eq!(rx.counters().malformed, 500);
    assert_eq!(rx.session_count(), 0);
}

/// A seeded xorshift generator for the simulated network.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// What a one-way link does to each packet: drops or doubles some, delays every one
/// by `delay_us` plus a random jitter (which reorders them).
#[derive(Debug, Clone, Copy)]
struct Faults {
    drop: u64,
    dup: u64,
    /// Extra random delay per packet, µs (reorders packets).
    jitter_us: u64,
}

impl Faults {
    const NONE: Faults = Faults {
        drop: 0,
        dup: 0,
        jitter_us: 0,
    };
}

/// Fixed part of every link's delay.
const DELAY_US: u64 = 20;
/// The time a duty cycle takes: the simulator never steps by less.
const CYCLE: Duration = Duration::from_micros(1);
/// Receivers are polled for status at least this often (an agent's longest park).
const TICK: Duration = Duration::from_millis(1);

/// Where a packet in flight goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dst {
    /// The publisher's control port (status, NAKs).
    Publisher,
    /// A receiver's data port; `true` for a datagram's first transmission.
    Data(usize, bool),
    /// A NAK of another receiver, heard on the control port (suppression).
    Heard(usize),
}

/// One simulated receiver: the real receiver machine, its links and what it saw.
struct SimRx {
    rx: Receiver,
    id: u64,
    tag: u32,
    /// The window it announces in its status messages.
    window: u32,
    /// Publisher → this receiver.
    down: Faults,
    /// This receiver → publisher.
    up: Faults,
    /// Data and heartbeats to it are lost while the simulated time is in this range.
    cut: Option<(Duration, Duration)>,
    /// The first transmission of these datagrams is lost (`u64::MAX` as the start:
    /// the last `len` of the session).
    burst: Option<(u64, u64)>,
    seen: Seen,
    /// Highest position and position+window it put in a status so far.
    max_pos: u64,
    max_edge: u64,
}

impl SimRx {
    fn new(seed: u64, id: u64, window: u32, down: Faults, up: Faults) -> Self {
        SimRx {
            rx: Receiver::new(ReceiverConfig {
                seed: seed ^ id.wrapping_mul(0x9e37_79b9),
                reorder_limit: 1 << 20,
                ..ReceiverConfig::default()
            }),
            id,
            tag: 0,
            window,
            down,
            up,
            cut: None,
            burst: None,
            seen: Seen::default(),
            max_pos: 0,
            max_edge: 0,
        }
    }

    /// Messages delivered plus messages reported lost.
    fn accounted(&self) -> u64 {
        let lost: u64 = self.seen.losses.iter().map(|(a, b)| b - a).sum();
        self.seen.messages.len() as u64 + lost
    }
}

/// A flow-control property checked after every step: the publisher never runs past
/// what the pacing receivers allowed (the highest edge they announced), except by one
/// message wider than the window (`slack` datagrams), which goes once they drained.
#[derive(Debug, Clone)]
enum Pacing {
    /// Every one of these receivers holds the publisher back.
    All(Vec<usize>),
    /// The fastest of all receivers paces.
    Fastest,
}

/// A packet in flight: when it arrives, a tie-break (send order), where, its bytes.
type InFlight = (Instant, u64, Dst, Vec<u8>);

/// One datagram batch the publisher handed to the network.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    kind: Transmit,
    bytes: u64,
    seqs: Vec<u64>,
}

/// The real publisher machine and real receiver machines joined by a seeded lossy,
/// reordering, duplicating, delaying network, on a simulated clock that jumps to the
/// next event (the earliest of the machines' timeouts and the next delivery), as
/// quinn-proto's test `Pair` does.
struct Sim {
    t0: Instant,
    now: Instant,
    publisher: Publisher,
    rxs: Vec<SimRx>,
    net: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    rng: Rng,
    msgs: Vec<(String, Vec<u8>)>,
    next_msg: usize,
    /// The application offers message `k` no earlier than `k * pace`.
    pace: Option<Duration>,
    /// After the first message, the application waits until the publisher has heard
    /// this many receivers.
    gate: usize,
    /// What stopped the last offer.
    blocked: Option<Blocked>,
    /// Receivers hear each other's NAKs.
    suppression: bool,
    pacing: Option<(Pacing, u64)>,
    log: Vec<Sent>,
    next_tick: Instant,
    /// Most receivers the publisher had left behind at once.
    max_left_behind: usize,
}

impl Sim {
    fn new(cfg: PublisherConfig, msgs: &[(String, Vec<u8>)], rxs: Vec<SimRx>, seed: u64) -> Self {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            publisher: Publisher::new(cfg, t0),
            rxs,
            net: BinaryHeap::new(),
            order: 0,
            rng: Rng(seed | 1),
            msgs: msgs.to_vec(),
            next_msg: 0,
            pace: None,
            gate: 0,
            blocked: None,
            suppression: true,
            pacing: None,
            log: Vec::new(),
            next_tick: t0,
            max_left_behind: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn push(&mut self, dst: Dst, f: Faults, bytes: &[u8]) {
        if self.rng.percent(f.drop) {
            return;
        }
        let copies = if self.rng.percent(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = self.rng.next() % (f.jitter_us + 1);
            let at = self.now + Duration::from_micros(DELAY_US + jitter);
            self.order += 1;
            self.net
                .push(Reverse((at, self.order, dst, bytes.to_vec())));
        }
    }

    /// Hands what the publisher has to the network (multicast: one copy per receiver,
    /// each through its own link).
    fn transmit(&mut self) {
        let now = self.now;
        let at = self.elapsed();
        let mut batches: Vec<(Transmit, Vec<Vec<u8>>)> = Vec::new();
        self.publisher.poll_transmit(now, &mut |kind, b| {
            batches.push((kind, b.iter().map(|d| d.to_vec()).collect()));
            true
        });
        for (kind, datagrams) in batches {
            let seqs: Vec<u64> = datagrams
                .iter()
                .map(|d| crate::wire::Header::decode(d).map_or(u64::MAX, |h| h.seq))
                .collect();
            let bytes = datagrams.iter().map(|d| d.len() as u64).sum();
            let seqs_sent = seqs.clone();
            self.log.push(Sent {
                at,
                kind,
                bytes,
                seqs,
            });
            for (d, &seq) in datagrams.iter().zip(&seqs_sent) {
                for i in 0..self.rxs.len() {
                    // The session's first datagram sets where receivers join: it
                    // arrives, and first (a receiver joining later starts live, and
                    // would not be owed the messages before).
                    let first = kind == Transmit::Data && seq == 0;
                    let f = if first {
                        Faults::NONE
                    } else {
                        self.rxs[i].down
                    };
                    self.push(Dst::Data(i, kind == Transmit::Data), f, d);
                }
            }
        }
    }

    /// The application: offers its messages until something holds it back.
    fn offer(&mut self) {
        self.blocked = None;
        while let Some((topic, payload)) = self.msgs.get(self.next_msg) {
            if self.next_msg > 0 && self.publisher.receivers() < self.gate {
                return;
            }
            if self
                .pace
                .is_some_and(|p| self.now < self.t0 + p * self.next_msg as u32)
            {
                return;
            }
            match self.publisher.offer(self.now, topic, payload) {
                Ok(()) => self.next_msg += 1,
                Err(Blocked::Transmit) => self.transmit(),
                Err(b) => {
                    self.blocked = Some(b);
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, dst: Dst, bytes: Vec<u8>) {
        let now = self.now;
        match dst {
            Dst::Publisher => {
                // foreign or malformed control messages do not occur here
                let ev = self.publisher.handle_control(now, &bytes);
                assert!(
                    matches!(ev, Ok(ControlEvent::Status | ControlEvent::Nak)),
                    "{ev:?}"
                );
            }
            Dst::Data(i, first) => {
                let elapsed = self.elapsed();
                let next_seq = self.publisher.next_seq();
                let r = &mut self.rxs[i];
                if r.cut.is_some_and(|(a, b)| elapsed >= a && elapsed < b) {
                    return;
                }
                if let (true, Some((from, len)), Ok(h)) =
                    (first, r.burst, crate::wire::Header::decode(&bytes))
                {
                    let from = if from == u64::MAX {
                        next_seq.saturating_sub(len)
                    } else {
                        from
                    };
                    if h.kind == crate::wire::Kind::Data && (from..from + len).contains(&h.seq) {
                        return;
                    }
                }
                let SimRx { rx, seen, .. } = r;
                let _ = rx.handle_datagram(now, SRC, &bytes, &mut |ev| record(seen, ev));
            }
            Dst::Heard(i) => {
                let n = crate::wire::Nak::decode(&bytes).expect("valid nak");
                self.rxs[i].rx.on_nak_heard(now, n.session, n.from, n.to);
            }
        }
    }

    /// The receivers' duty cycle: timers, then NAKs and status out.
    fn receivers(&mut self) {
        let now = self.now;
        for i in 0..self.rxs.len() {
            let r = &mut self.rxs[i];
            if r.rx.poll_timeout().is_some_and(|t| t <= now) {
                let SimRx { rx, seen, .. } = r;
                rx.handle_timeout(now, &mut |ev| record(seen, ev));
            }
            let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
            let id = r.id;
            r.rx.poll_nak(&mut |key, from, to| out.push((true, nak_bytes(key, from, to, id))));
            let (tag, window) = (r.tag, r.window);
            let (mut max_pos, mut max_edge) = (r.max_pos, r.max_edge);
            r.rx.poll_status(now, window, &mut |key, next_seq, window, snapshot| {
                max_pos = max_pos.max(next_seq);
                max_edge = max_edge.max(next_seq + u64::from(window));
                let st = (next_seq, window, tag, snapshot);
                out.push((false, status_bytes(key, id, st)));
            });
            r.max_pos = max_pos;
            r.max_edge = max_edge;
            let up = r.up;
            for (is_nak, b) in out {
                self.push(Dst::Publisher, up, &b);
                if is_nak && self.suppression {
                    for j in (0..self.rxs.len()).filter(|&j| j != i) {
                        self.push(Dst::Heard(j), up, &b);
                    }
                }
            }
        }
    }

    fn check_pacing(&self) {
        let Some((pacing, slack)) = &self.pacing else {
            return;
        };
        if self.publisher.receivers() < self.rxs.len() {
            return; // not everyone heard yet: nothing holds the publisher back
        }
        let next = self.publisher.next_seq();
        match pacing {
            Pacing::All(set) => {
                for &i in set {
                    let r = &self.rxs[i];
                    assert!(
                        next <= r.max_edge.max(r.max_pos + slack),
                        "at {:?}: publisher at {next}, receiver {i} allowed {} (+{slack})",
                        self.elapsed(),
                        r.max_edge
                    );
                }
            }
            Pacing::Fastest => {
                let edge = self.rxs.iter().map(|r| r.max_edge).max().unwrap_or(0);
                let pos = self.rxs.iter().map(|r| r.max_pos).max().unwrap_or(0);
                assert!(
                    next <= edge.max(pos + slack),
                    "publisher at {next}, the fastest allowed {edge}"
                );
            }
        }
    }

    /// One step at `self.now`: deliveries, publisher timers, the application, the
    /// publisher's transmit, the receivers.
    fn step(&mut self) {
        while let Some(Reverse((at, _, _, _))) = self.net.peek() {
            if *at > self.now {
                break;
            }
            let Some(Reverse((_, _, dst, bytes))) = self.net.pop() else {
                break;
            };
            self.deliver(dst, bytes);
        }
        if self.publisher.poll_timeout().is_some_and(|t| t <= self.now) {
            self.publisher.handle_timeout(self.now);
        }
        self.offer();
        self.transmit();
        self.check_pacing();
        self.max_left_behind = self.max_left_behind.max(self.publisher.left_behind());
        self.receivers();
        if self.next_tick <= self.now {
            self.next_tick = self.now + TICK;
        }
    }

    /// Whether the application could offer more right now.
    fn app_ready(&self) -> bool {
        self.next_msg < self.msgs.len()
            && self.blocked.is_none()
            && (self.next_msg == 0 || self.publisher.receivers() >= self.gate)
    }

    /// The next event: a delivery, a machine's timeout, the application's next
    /// message, the receivers' status tick — never sooner than one cycle.
    fn next_event(&self) -> Instant {
        let mut t = self.next_tick;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = t.min(x);
            }
        };
        at(self.net.peek().map(|Reverse((a, ..))| *a));
        at(self.publisher.poll_timeout());
        for r in &self.rxs {
            at(r.rx.poll_timeout());
        }
        if self.app_ready() {
            at(Some(match self.pace {
                Some(p) => self.t0 + p * self.next_msg as u32,
                None => self.now,
            }));
        }
        if self.publisher.has_transmit() {
            at(Some(self.now));
        }
        t.max(self.now + CYCLE)
    }

    /// Whether every message went out and every receiver accounted for all of them.
    fn done(&self) -> bool {
        let total = self.msgs.len() as u64;
        self.next_msg == self.msgs.len()
            && !self.publisher.has_transmit()
            && self.rxs.iter().all(|r| r.accounted() >= total)
    }

    /// Runs until [`done`](Self::done) (when `until_done`) or `limit` of simulated time.
    fn run(&mut self, limit: Duration, until_done: bool) {
        let end = self.t0 + limit;
        while self.now < end {
            self.step();
            if until_done && self.done() {
                return;
            }
            self.now = self.next_event();
        }
    }

    /// Checks that receiver `i` got every message once or in exactly one loss range,
    /// in order, and returns how many messages it was reported lost.
    fn check_all(&self, i: usize) -> u64 {
        let r = &self.rxs[i];
        check(&self.msgs, &r.seen, &r.rx, 0);
        assert_eq!(
            r.accounted(),
            self.msgs.len() as u64,
            "receiver {i} accounted for {} of {} ({:?}) publisher {:?} now {:?}",
            r.accounted(),
            self.msgs.len(),
            r.rx.counters(),
            self.publisher.counters(),
            self.now - self.t0
        );
        r.rx.counters().lost_messages
    }

    /// Checks that receiver `i` got every message exactly once, in order, no loss.
    fn check_lossless(&self, i: usize) {
        let r = &self.rxs[i];
        assert!(
            r.seen.losses.is_empty(),
            "receiver {i} lost {:?} ({:?}, publisher {:?})",
            r.seen.losses,
            r.rx.counters(),
            self.publisher.counters()
        );
        self.check_all(i);
        assert_eq!(r.rx.held(), 0);
    }

    /// Retransmissions handed out per transmit.
    fn retransmit_batches(&self) -> impl Iterator<Item = &Sent> {
        self.log.iter().filter(|s| s.kind == Transmit::Retransmit)
    }
}

/// A NAK from receiver `id`, encoded.
pub(super) fn nak_bytes(key: SessionKey, from: u64, to: u64, id: u64) -> Vec<u8> {
    let mut b = [0u8; crate::wire::NAK_LEN];
    crate::wire::Nak {
        session: key.session,
        from,
        to,
        receiver: id,
    }
    .encode(&mut b);
    b.to_vec()
}

/// A status from receiver `id` — (next_seq, window, tag, snapshot) — encoded.
pub(super) fn status_bytes(
    key: SessionKey,
    id: u64,
    (next_seq, window, tag, snapshot): (u64, u32, u32, bool),
) -> Vec<u8> {
    let mut b = [0u8; crate::wire::STATUS_LEN];
    crate::wire::Status {
        session: key.session,
        receiver: id,
        next_seq,
        window,
        tag,
        snapshot,
    }
    .encode(&mut b);
    b.to_vec()
}

pub(super) fn record(seen: &mut Seen, ev: Delivery<'_>) {
    match ev {
        Delivery::Message {
            seq,
            topic,
            payload,
            ..
        } => seen
            .messages
            .push((seq, topic.to_string(), payload.to_vec())),
        Delivery::Loss {
            from_seq, to_seq, ..
        } => seen.losses.push((from_seq, to_seq)),
        Delivery::Joined { .. } | Delivery::Gone { .. } => {}
    }
}

/// Datagrams the widest message of `msgs` takes at `mtu` (1 when none fragments).
fn widest(msgs: &[(String, Vec<u8>)], mtu: usize) -> u64 {
    let s = SenderStream::new(0, mtu);
    msgs.iter()
        .map(|(t, p)| {
            if p.len() <= s.max_whole_payload(t.len()) {
                1
            } else {
                p.len().div_ceil(s.fragment_piece(t.len()).max(1)) as u64
            }
        })
        .max()
        .unwrap_or(1)
}

/// A publisher keeping `retained` datagrams (a send batch of `batch`).
///
/// The repair budget is ten times the default here: these links drop up to 15 % each
/// way and reorder every datagram, with windows of a few dozen datagrams, so repair
/// (with the retransmissions that jitter makes spurious) can pass the data itself;
/// the properties check that repair is exact, while the budget's own bounds are
/// checked in `hostile_tests` (and the end-to-end tests run the default).
fn publisher_cfg(mtu: usize, batch: usize, retained: usize) -> PublisherConfig {
    PublisherConfig {
        batch,
        retransmit_window: (retained + 1) * mtu,
        repair_share: 1_000,
        ..PublisherConfig::new(77, mtu)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn reliable_delivers_everything_despite_loss_dup_and_reorder(
        msgs in messages(),
        mtu in 150usize..600,
        drop in 0u64..25,
        dup in 0u64..10,
        jitter_us in 0u64..200,
        seed in any::<u64>(),
    ) {
        let f = Faults { drop, dup, jitter_us };
        let rx = SimRx::new(seed, 1, 256, f, f);
        let mut sim = Sim::new(publisher_cfg(mtu, 32, 1023), &msgs, vec![rx], seed);
        sim.gate = 1;
        sim.run(Duration::from_secs(3), true);
        sim.check_lossless(0);
        let c = sim.rxs[0].rx.counters();
        if drop > 0 && c.naks > 0 {
            prop_assert!(c.repaired > 0);
        }
    }

    #[test]
    fn beyond_the_window_losses_are_explicit_and_exact(
        msgs in messages(),
        mtu in 150usize..600,
        drop in 5u64..40,
        retained in 1usize..6,
        seed in any::<u64>(),
    ) {
        // Max does not cap the publisher at its retransmit window: it runs ahead of
        // what it keeps, and what is lost beyond it must be reported exactly.
        let f = Faults { drop, dup: 2, jitter_us: 100 };
        let rx = SimRx::new(seed, 1, 256, f, f);
        let cfg = PublisherConfig {
            flow_control: crate::config::FlowControlStrategy::Max,
            ..publisher_cfg(mtu, 1, retained)
        };
        let mut sim = Sim::new(cfg, &msgs, vec![rx], seed);
        sim.run(Duration::from_secs(5), true);
        sim.check_all(0);
    }
}

/// Faults of a mildly lossy link.
fn lossy() -> impl Strategy<Value = Faults> {
    (0u64..15, 0u64..5, 0u64..100).prop_map(|(drop, dup, jitter_us)| Faults {
        drop,
        dup,
        jitter_us,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Min: the publisher never runs past the slowest receiver's position plus its
    /// window (nor past what it can still repair), and nobody loses anything.
    #[test]
    fn flow_min_paces_the_slowest_and_is_lossless(
        msgs in messages(),
        mtu in 150usize..600,
        windows in proptest::collection::vec(4u32..64, 2..4),
        links in proptest::collection::vec(lossy(), 3),
        batch in 1usize..16,
        retained in 32usize..256,
        seed in any::<u64>(),
    ) {
        let n = windows.len();
        let rxs = (0..n)
            .map(|i| SimRx::new(seed, i as u64 + 1, windows[i], links[i % 3], links[(i + 1) % 3]))
            .collect();
        let mut sim = Sim::new(publisher_cfg(mtu, batch, retained), &msgs, rxs, seed);
        sim.gate = n;
        sim.pacing = Some((Pacing::All((0..n).collect()), widest(&msgs, mtu)));
        sim.run(Duration::from_secs(3), true);
        for i in 0..n {
            sim.check_lossless(i);
        }
        prop_assert_eq!(sim.max_left_behind, 0, "Min never leaves a receiver behind");
    }

    /// A receiver that listens before the session starts but is slow to send its
    /// first status (it takes milliseconds to arrive) loses nothing, however hard the
    /// publisher starts and however little it keeps: a new session keeps within its
    /// retransmit window until it has heard a receiver. (No `gate` here: the
    /// application offers everything at once.)
    #[test]
    fn a_receiver_slow_to_speak_loses_nothing_at_the_sessions_start(
        msgs in messages(),
        mtu in 150usize..600,
        down in lossy(),
        up_delay_us in 1000u64..20_000,
        extra in 1usize..16,
        seed in any::<u64>(),
    ) {
        // It keeps little, but the widest message whole (a message wider than the
        // window cannot always be repaired).
        let retained = widest(&msgs, mtu) as usize + extra;
        let up = Faults { drop: 0, dup: 0, jitter_us: up_delay_us };
        let rx = SimRx::new(seed, 1, 1 << 16, down, up);
        let mut sim = Sim::new(publisher_cfg(mtu, 1, retained), &msgs, vec![rx], seed);
        sim.run(Duration::from_secs(5), true);
        sim.check_lossless(0);
    }

    /// Max: the fastest receiver paces and gets everything; a slow one, cut off for
    /// longer than the retransmit window lasts, is left behind and accounts for every
    /// message exactly, delivered or inside one loss range.
    #[test]
    fn flow_max_leaves_the_slow_behind_with_exact_losses(
        msgs in messages(),
        mtu in 150usize..600,
        fast_window in 4u32..32,
        retained in 96usize..160,
        pace_us in 5u64..40,
        cut_ms in 1u64..20,
        dup in 0u64..5,
        jitter_us in 0u64..100,
        seed in any::<u64>(),
    ) {
        // The fast one's link loses nothing (so it stays the fastest), but doubles
        // and reorders. The publisher keeps well over the fast one's window plus what
        // the jitter holds in flight: the slow one, once back, can pace it for a while
        // (Max follows whoever is ahead) without the fast one losing what is late.
        let fast = Faults { drop: 0, dup, jitter_us };
        let f = SimRx::new(seed, 1, fast_window, fast, fast);
        let mut slow = SimRx::new(seed, 2, fast_window, Faults::NONE, Faults::NONE);
        slow.cut = Some((Duration::from_micros(100), Duration::from_millis(cut_ms) + Duration::from_micros(100)));
        let cfg = PublisherConfig {
            flow_control: crate::config::FlowControlStrategy::Max,
            ..publisher_cfg(mtu, 4, retained)
        };
        let mut sim = Sim::new(cfg, &msgs, vec![f, slow], seed);
        sim.gate = 2;
        sim.pace = Some(Duration::from_micros(pace_us));
        sim.pacing = Some((Pacing::Fastest, widest(&msgs, mtu)));
        sim.run(Duration::from_secs(5), true);
        sim.check_lossless(0);
        let lost = sim.check_all(1);
        // whatever it lost was lost while it was cut off, and only beyond the window
        let c = sim.rxs[1].rx.counters();
        prop_assert_eq!(c.lost_messages, lost);
        prop_assert_eq!(c.lost_nak_timeout + c.lost_reorder_full, 0, "{:?}", c);
        // a loss means the publisher ran past it: it was marked left behind
        if lost > 0 {
            prop_assert_eq!(sim.max_left_behind, 1);
        }
    }

    /// Tagged(t): only the receivers carrying the tag hold the publisher back, and
    /// they lose nothing; an untagged one cut off is left behind with exact losses.
    #[test]
    fn flow_tagged_paces_only_the_tagged(
        msgs in messages(),
        mtu in 150usize..600,
        windows in proptest::collection::vec(4u32..64, 2),
        tag in 1u32..1000,
        links in proptest::collection::vec(lossy(), 2),
        cut_ms in 1u64..10,
        seed in any::<u64>(),
    ) {
        let mut rxs: Vec<SimRx> = (0..2)
            .map(|i| {
                let mut r = SimRx::new(seed, i as u64 + 1, windows[i], links[i], links[1 - i]);
                r.tag = tag;
                r
            })
            .collect();
        let mut other = SimRx::new(seed, 3, 4, Faults::NONE, Faults::NONE);
        other.tag = tag + 1;
        other.cut = Some((Duration::from_micros(100), Duration::from_millis(cut_ms)));
        rxs.push(other);
        let cfg = PublisherConfig {
            flow_control: crate::config::FlowControlStrategy::Tagged(tag),
            ..publisher_cfg(mtu, 4, 48)
        };
        let mut sim = Sim::new(cfg, &msgs, rxs, seed);
        sim.gate = 3;
        sim.pace = Some(Duration::from_micros(10));
        sim.pacing = Some((Pacing::All(vec![0, 1]), widest(&msgs, mtu)));
        sim.run(Duration::from_secs(5), true);
        sim.check_lossless(0);
        sim.check_lossless(1);
        sim.check_all(2);
    }

    /// An idle publisher's tail loss is found through its heartbeat and repaired; the
    /// idle heartbeats back off exactly (interval, interval, 2×, 4× … up to the cap),
    /// retransmissions do not reset them.
    #[test]
    fn heartbeats_find_tail_loss_and_back_off(
        msgs in messages(),
        mtu in 150usize..600,
        tail in 1u64..4,
        interval_us in 500u64..3000,
        seed in any::<u64>(),
    ) {
        let mut rx = SimRx::new(seed, 1, 1 << 16, Faults::NONE, Faults::NONE);
        rx.burst = Some((u64::MAX, tail));
        let interval = Duration::from_micros(interval_us);
        let cfg = PublisherConfig {
            heartbeat_interval: interval,
            ..publisher_cfg(mtu, 32, 2047)
        };
        let mut sim = Sim::new(cfg, &msgs, vec![rx], seed);
        let limit = Duration::from_millis(500);
        sim.run(limit, false);
        sim.check_lossless(0);
        let n = sim.publisher.next_seq();
        let lost = tail.min(n);
        let c = sim.rxs[0].rx.counters();
        prop_assert_eq!(c.repaired, lost, "{:?}", c);
        // the repair could only start after the first heartbeat
        let last_data = sim.log.iter().filter(|s| s.kind == Transmit::Data).map(|s| s.at).max().unwrap();
        let first_retx = sim.retransmit_batches().map(|s| s.at).min().expect("repaired");
        prop_assert!(first_retx >= last_data + interval);
        let retx: u64 = sim.retransmit_batches().map(|s| s.seqs.len() as u64).sum();
        prop_assert_eq!(retx, lost);
        // exact backoff from the last data on
        let beats: Vec<Duration> = sim.log.iter().filter(|s| s.kind == Transmit::Heartbeat).map(|s| s.at).collect();
        let mut want = Vec::new();
        let (mut at, mut every) = (last_data + interval, interval);
        while at <= limit {
            want.push(at);
            at += every;
            every = (every * 2).min(Duration::from_millis(100));
        }
        prop_assert_eq!(beats, want);
    }

    /// The rate limit: over any stretch of simulated time, the bytes sent never exceed
    /// rate × t + burst (plus the one message that started within it); data only,
    /// when the network loses (retransmissions are never held back), all bytes
    /// otherwise. The limit does not starve the publisher either.
    #[test]
    fn rate_limit_bounds_bytes_over_time(
        msgs in messages(),
        mtu in 150usize..600,
        rate in 100_000u64..20_000_000,
        batch in 1usize..16,
        lossy_net in any::<bool>(),
        seed in any::<u64>(),
    ) {
// Without loss (nor reordering, which can make a receiver NAK) nothing is
        // retransmitted, and every byte counts.
        let f = if lossy_net {
            Faults { drop: 10, dup: 2, jitter_us: 50 }
        } else {
            Faults { drop: 0, dup: 2, jitter_us: 0 }
        };
        let rx = SimRx::new(seed, 1, 1 << 16, f, f);
        let cfg = PublisherConfig {
            rate_limit: Some(rate),
            ..publisher_cfg(mtu, batch, 2047)
        };
        let burst = cfg.rate_burst(rate);
        let slack = widest(&msgs, mtu) * mtu as u64;
        let mut sim = Sim::new(cfg, &msgs, vec![rx], seed);
        sim.run(Duration::from_secs(30), true);
        sim.check_lossless(0);
        if !lossy_net {
            prop_assert_eq!(sim.publisher.counters().retransmits, 0);
        }
        let counted: Vec<&Sent> = sim
            .log
            .iter()
            .filter(|s| s.kind == Transmit::Data || (!lossy_net && s.kind == Transmit::Retransmit))
            .collect();
        // max over a <= b of bytes(a..=b) - rate * (b - a), in one pass
        let mut best: i128 = i128::MIN;
        let mut before: i128 = 0; // bytes sent before the current one
        for s in &counted {
            let t = s.at.as_nanos() as i128;
            // a window starting at this send
            best = best.max(rate as i128 * t / 1_000_000_000 - before);
            before += s.bytes as i128;
            let excess = before - rate as i128 * t / 1_000_000_000 - best;
            prop_assert!(
                excess <= (burst + slack) as i128 + 1,
                "at {:?}: {excess} bytes over the rate (burst {burst}, slack {slack})", s.at
            );
        }
        // and it is not starved: the last data went within the time the rate needs
        let data: u64 = sim.log.iter().filter(|s| s.kind != Transmit::Heartbeat).map(|s| s.bytes).sum();
        let end = sim.log.iter().filter(|s| s.kind == Transmit::Data).map(|s| s.at).max().unwrap();
        let need = Duration::from_nanos(data.saturating_sub(burst) * 1_000_000_000 / rate);
        prop_assert!(end <= need + Duration::from_millis(1), "done at {end:?}, the rate needs {need:?}");
    }

    /// A burst loss larger than one retransmit budget is repaired batch after batch
    /// from a single NAK: never more than the budget per transmit, every lost datagram
    /// sent again exactly once.
    #[test]
    fn retransmit_budget_repairs_a_burst_batch_after_batch(
        budget in 1usize..8,
        times in 2usize..6,
        extra in 0usize..8,
        mtu in 150usize..300,
        seed in any::<u64>(),
    ) {
        let len = (budget * times + extra % budget.max(1)) as u64;
        let msgs: Vec<(String, Vec<u8>)> = (0..300u32)
            .map(|i| ("/t".to_string(), vec![i as u8; 100]))
            .collect();
        let mut rx = SimRx::new(seed, 1, 1 << 16, Faults::NONE, Faults::NONE);
        rx.burst = Some((20, len));
        let cfg = PublisherConfig {
            retransmit_budget: budget,
            ..publisher_cfg(mtu, 32, 2047)
        };
        let mut sim = Sim::new(cfg, &msgs, vec![rx], seed);
        sim.run(Duration::from_secs(3), true);
        sim.check_lossless(0);
        let batches: Vec<&Sent> = sim.retransmit_batches().collect();
        prop_assert!(batches.iter().all(|b| b.seqs.len() <= budget));
        let mut resent: Vec<u64> = batches.iter().flat_map(|b| b.seqs.iter().copied()).collect();
        resent.sort_unstable();
        prop_assert_eq!(resent, (20..20 + len).collect::<Vec<_>>());
        prop_assert_eq!(batches.len() as u64, len.div_ceil(budget as u64));
        let naks = sim.publisher.counters().naks_received;
        prop_assert!(naks < batches.len() as u64, "{naks} NAKs for {} batches", batches.len());
        prop_assert_eq!(sim.rxs[0].rx.counters().repaired, len);
    }
}

#[test]
fn tail_loss_is_found_by_heartbeat_and_repaired() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs);
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig::default());
    let seen = std::cell::RefCell::new(Seen::default());
    let mut sink = |ev: Delivery<'_>| match ev {
        Delivery::Message { seq, .. } => {
            seen.borrow_mut()
                .messages
                .push((seq, String::new(), Vec::new()))
        }
        Delivery::Loss {
            from_seq, to_seq, ..
        } => seen.borrow_mut().losses.push((from_seq, to_seq)),
        Delivery::Joined { .. } | Delivery::Gone { .. } => {}
    };
    // the last two datagrams (messages 6..10) are lost; only a heartbeat tells
    for b in &d[..3] {
        rx.handle_datagram(t0, SRC, b, &mut sink).unwrap();
    }
    let mut hb = [0u8; crate::wire::HEARTBEAT_LEN];
    crate::wire::Heartbeat {
        session: 77,
        next_seq: 5,
        next_msg_seq: 10,
        oldest: 0,
    }
    .encode(&mut hb);
    rx.handle_datagram(t0, SRC, &hb, &mut sink).unwrap();
    let due = rx.poll_timeout().expect("a NAK is scheduled");
    rx.handle_timeout(due, &mut sink);
    let mut naks = Vec::new();
    rx.poll_nak(&mut |_, from, to| naks.push((from, to)));
    assert_eq!(naks, vec![(3, 5)]);
    for b in &d[3..] {
        rx.handle_datagram(due, SRC, b, &mut sink).unwrap();
    }
    assert_eq!(seen.borrow().messages.len(), 10);
    assert!(seen.borrow().losses.is_empty());
    assert_eq!(
        rx.counters().repaired,
        2,
        "both missing datagrams filled the gap"
    );
    // only the liveness check is left
    assert_eq!(
        rx.poll_timeout(),
        Some(t0 + ReceiverConfig::default().publisher_timeout / 4)
    );
}

#[test]
fn heartbeat_oldest_makes_unrepairable_loss_immediate_and_exact() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs); // 2 messages per datagram
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig::default());
    let seen = std::cell::RefCell::new(Seen::default());
    let mut sink = |ev: Delivery<'_>| match ev {
        Delivery::Message { seq, .. } => {
            seen.borrow_mut()
                .messages
                .push((seq, String::new(), Vec::new()))
        }
        Delivery::Loss {
            from_seq, to_seq, ..
        } => seen.borrow_mut().losses.push((from_seq, to_seq)),
        Delivery::Joined { .. } | Delivery::Gone { .. } => {}
    };
    rx.handle_datagram(t0, SRC, &d[0], &mut sink).unwrap();
    rx.handle_datagram(t0, SRC, &d[4], &mut sink).unwrap(); // 1, 2, 3 missing
    assert_eq!(seen.borrow().messages.len(), 2);
    // the publisher can only resend from datagram 3 on
    let mut hb = [0u8; crate::wire::HEARTBEAT_LEN];
    crate::wire::Heartbeat {
        session: 77,
        next_seq: 5,
        next_msg_seq: 10,
        oldest: 3,
    }
    .encode(&mut hb);
    rx.handle_datagram(t0, SRC, &hb, &mut sink).unwrap();
    assert!(
        seen.borrow().losses.is_empty(),
        "datagram 3 is not held yet: the message range is unknown"
    );
    rx.handle_datagram(t0, SRC, &d[3], &mut sink).unwrap();
    assert_eq!(seen.borrow().losses, vec![(2, 6)]);
    assert_eq!(
        seen.borrow()
            .messages
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![0, 1, 6, 7, 8, 9]
    );
    assert_eq!(rx.counters().gaps, 1);
}

#[test]
fn losing_the_sessions_first_datagram_is_repaired_not_skipped() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs); // 2 messages per datagram
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig::default());
    let mut got = Vec::new();
    let mut sink = |ev: Delivery<'_>| {
        if let Delivery::Message { seq, .. } = ev {
            got.push(seq)
        }
    };
    rx.handle_datagram(t0, SRC, &d[1], &mut sink).unwrap();
    let due = rx.poll_timeout().expect("the missing start is NAKed");
    rx.handle_timeout(due, &mut sink);
    let mut naks = Vec::new();
    rx.poll_nak(&mut |_, from, to| naks.push((from, to)));
    assert_eq!(naks, vec![(0, 1)]);
    rx.handle_datagram(due, SRC, &d[0], &mut sink).unwrap();
    assert_eq!(got, vec![0, 1, 2, 3]);
    // far into a session, a new receiver starts live instead
    let mut late = Receiver::new(ReceiverConfig::default());
    let mut s = SenderStream::new(5, 132);
    let mut buf = DatagramBuf::new(132);
    for _ in 0..(JOIN_FROM_START + 2) {
        buf.clear();
        assert_eq!(s.append(&mut buf, "/t", b"x"), Append::Done);
        s.seal(&mut buf);
    }
    let mut first = None;
    late.handle_datagram(t0, SRC, buf.bytes(), &mut |ev| {
        if let Delivery::Message { seq, .. } = ev {
            first = Some(seq)
        }
    })
    .unwrap();
    assert_eq!(first, Some(JOIN_FROM_START + 1));
    // no NAK: only the liveness check is scheduled
    assert_eq!(
        late.poll_timeout(),
        Some(t0 + ReceiverConfig::default().publisher_timeout / 4)
    );
}

#[test]
fn silent_publisher_is_declared_gone_after_its_gaps_are_reported() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs); // 2 messages per datagram
    let t0 = Instant::now();
    let cfg = ReceiverConfig {
        publisher_timeout: Duration::from_millis(400),
        ..ReceiverConfig::default()
    };
    let mut rx = Receiver::new(cfg);
    let events = std::cell::RefCell::new(Vec::new());
    let mut sink = |ev: Delivery<'_>| events.borrow_mut().push(describe(ev));
    rx.handle_datagram(t0, SRC, &d[0], &mut sink).unwrap();
    rx.handle_datagram(t0, SRC, &d[2], &mut sink).unwrap(); // datagram 1 missing
                                                            // the publisher falls silent; NAKs go unanswered, then the liveness check fires
    let mut now = t0;
    while events.borrow().iter().all(|e| !e.starts_with("gone")) {
        now = rx
            .poll_timeout()
            .expect("a timer is always set while a session lives");
        assert!(now < t0 + Duration::from_secs(1), "never declared gone");
        rx.handle_timeout(now, &mut sink);
        rx.poll_nak(&mut |_, _, _| {});
    }
    assert!(now >= t0 + Duration::from_millis(400));
    assert_eq!(
        *events.borrow(),
        ["joined 77", "m0", "m1", "loss 2..4", "m4", "m5", "gone 77"]
    );
    assert_eq!(rx.counters().sessions_gone, 1);
    // heard again: announced again, and delivery goes on where it stopped
    rx.handle_datagram(now, SRC, &d[3], &mut sink).unwrap();
    assert_eq!(events.borrow()[7..], ["joined 77", "m6", "m7"]);
}

#[test]
fn a_nak_heard_from_another_receiver_holds_ours_back() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs);
    let t0 = Instant::now();
    let mut a = Receiver::new(ReceiverConfig {
        seed: 1,
        ..ReceiverConfig::default()
    });
    let mut b = Receiver::new(ReceiverConfig {
        seed: 2,
        ..ReceiverConfig::default()
    });
    let mut sink = |_: Delivery<'_>| {};
    for r in [&mut a, &mut b] {
        r.handle_datagram(t0, SRC, &d[0], &mut sink).unwrap();
        r.handle_datagram(t0, SRC, &d[2], &mut sink).unwrap(); // both miss datagram 1
    }
    let (ta, tb) = (a.poll_timeout().unwrap(), b.poll_timeout().unwrap());
    // whoever is due first NAKs; the other hears it before its own timer fires
    let (first, second, t) = if ta <= tb {
        (&mut a, &mut b, ta)
    } else {
        (&mut b, &mut a, tb)
    };
    first.handle_timeout(t, &mut sink);
    let mut heard = Vec::new();
    first.poll_nak(&mut |k, from, to| heard.push((k.session, from, to)));
    assert_eq!(heard, vec![(77, 1, 2)]);
    // a NAK for another session or for other data changes nothing
    second.on_nak_heard(t, 78, 1, 2);
    second.on_nak_heard(t, 77, 5, 6);
    assert_eq!(second.counters().naks_suppressed, 0);
    for (s, from, to) in heard {
        second.on_nak_heard(t, s, from, to);
    }
    assert_eq!(second.counters().naks_suppressed, 1);
    let due = second.poll_timeout().unwrap();
    assert!(due >= t + ReceiverConfig::default().nak_interval);
    // its own turn comes a NAK interval later, if the repair has not come by then
    second.handle_timeout(t + Duration::from_micros(500), &mut sink);
    let mut sent = 0;
    second.poll_nak(&mut |_, _, _| sent += 1);
    assert_eq!(sent, 0, "suppressed");
    second.handle_timeout(due, &mut sink);
    second.poll_nak(&mut |_, _, _| sent += 1);
    assert_eq!(sent, 1, "asks itself once the interval passed");
}

#[test]
fn window_start_past_held_datagrams_delivers_them_and_loses_only_the_holes() {
    let msgs: Vec<(String, Vec<u8>)> = (0..10u8).map(|i| ("/t".to_string(), vec![i; 40])).collect();
    let d = send_all(132, &msgs); // 2 messages per datagram, 5 datagrams
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig::default());
    let events = std::cell::RefCell::new(Vec::new());
    let mut sink = |ev: Delivery<'_>| events.borrow_mut().push(describe(ev));
    for i in [0, 2, 4] {
        rx.handle_datagram(t0, SRC, &d[i], &mut sink).unwrap();
    }
    // the publisher now keeps only datagram 4 on: 1 and 3 are gone, 2 and 4 are held
    let mut hb = [0u8; crate::wire::HEARTBEAT_LEN];
    crate::wire::Heartbeat {
        session: 77,
        next_seq: 5,
        next_msg_seq: 10,
        oldest: 4,
    }
    .encode(&mut hb);
    rx.handle_datagram(t0, SRC, &hb, &mut sink).unwrap();
    assert_eq!(
        *events.borrow(),
        [
            "joined 77",
            "m0",
            "m1",
            "loss 2..4",
            "m4",
            "m5",
            "loss 6..8",
            "m8",
            "m9"
        ]
    );
    assert_eq!(rx.held(), 0);
    assert_eq!(rx.counters().lost_beyond_window, 2);
}

#[test]
fn many_heard_naks_in_one_interval_count_as_one_round() {
    let msgs: Vec<(String, Vec<u8>)> = (0..120u8)
        .map(|i| ("/t".to_string(), vec![i; 40]))
        .collect();
    let d = send_all(132, &msgs); // 2 messages per datagram
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig {
        nak_retries: 3,
        ..ReceiverConfig::default()
    });
    let mut lost = 0u64;
    let mut sink = |ev: Delivery<'_>| {
        if let Delivery::Loss {
            from_seq, to_seq, ..
        } = ev
        {
            lost += to_seq - from_seq;
        }
    };
    rx.handle_datagram(t0, SRC, &d[0], &mut sink).unwrap();
    // holes keep opening and other receivers keep NAKing them, 25 times within 50 µs
    for i in 1..=25u64 {
        let now = t0 + Duration::from_micros(2 * i);
        rx.handle_datagram(now, SRC, &d[2 * i as usize], &mut sink)
            .unwrap();
        rx.on_nak_heard(now, 77, 1, 2 * i);
    }
    assert!(rx.counters().naks_suppressed >= 25);
    rx.handle_timeout(t0 + Duration::from_millis(1), &mut sink);
    assert_eq!(
        rx.counters().lost_nak_timeout,
        0,
        "given up after one interval"
    );
    assert_eq!(lost, 0);
}

#[test]
fn a_message_cut_short_by_a_gone_publisher_is_reported_lost() {
    let msgs = vec![("/big".to_string(), vec![7u8; 1000])];
    let d = send_all(132, &msgs); // one message in many fragments
    assert!(d.len() > 3);
    let t0 = Instant::now();
    let mut rx = Receiver::new(ReceiverConfig {
        publisher_timeout: Duration::from_millis(100),
        ..ReceiverConfig::default()
    });
    let events = std::cell::RefCell::new(Vec::new());
    let mut sink = |ev: Delivery<'_>| events.borrow_mut().push(describe(ev));
    for b in &d[..2] {
        rx.handle_datagram(t0, SRC, b, &mut sink).unwrap();
    }
    let mut now = t0;
    while !events.borrow().iter().any(|e| e == "gone 77") {
        now = rx.poll_timeout().expect("liveness check scheduled");
        assert!(now < t0 + Duration::from_secs(1));
        rx.handle_timeout(now, &mut sink);
    }
    assert_eq!(*events.borrow(), ["joined 77", "loss 0..1", "gone 77"]);
    // the rest arriving after all changes nothing but the announcement
    for b in &d[2..] {
        rx.handle_datagram(now, SRC, b, &mut sink).unwrap();
    }
    assert_eq!(
        *events.borrow(),
        ["joined 77", "loss 0..1", "gone 77", "joined 77"]
    );
}

/// Late joiners (issue 10, build 4): a publisher keeps the last value of each of 100
/// topics; after 1,000 updates of each, a receiver joins — while the publisher keeps
/// publishing, through a lossy link (NAK repair on). It gets exactly one snapshot
/// value per topic, all before any live message, then every later update with no gap
/// or duplicate: per topic, what it sees is the unbroken run of updates from the
/// snapshot's value to the last. The receiver that was there from the start gets
/// every update and no snapshot entry.
#[test]
fn a_late_joiner_gets_the_last_values_then_live_data_with_no_seam() {
    const TOPICS: usize = 100;
    const BEFORE: usize = 1000;
    const AFTER: usize = 300;
    for seed in 1..=20u64 {
        let t0 = Instant::now();
        let mut now = t0;
        let mut p = Publisher::new(
            PublisherConfig {
                startup_grace: Duration::ZERO,
                // Small batches: the burst spans several transmits, with live offers
                // waiting in between.
                batch: 4,
                ..PublisherConfig::new(9, 1400)
            },
            t0,
        );
        p.set_cached(true);
        let rcfg = ReceiverConfig {
            max_message: 1 << 20,
            ..ReceiverConfig::default()
        };
        let mut early = Receiver::new(rcfg.clone());
        let mut late = Receiver::new(ReceiverConfig { seed, ..rcfg });
        let mut rng = Rng((seed * 0x9e37_79b9) | 1);
        // (snapshot, topic, update index) as each receiver got them
        let mut got_early: Vec<(bool, usize, usize)> = Vec::new();
        let mut got_late: Vec<(bool, usize, usize)> = Vec::new();
        let mut late_on = false;
        let parse = |topic: &str, payload: &[u8]| -> (usize, usize) {
            let t = topic.trim_start_matches("/t/").parse().unwrap();
            let k = std::str::from_utf8(payload)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            (t, k)
        };
        // One step of the world: the publisher transmits, both receivers take what
        // arrives (5 % lost on the way to the late one), and status and NAKs go back.
        let mut step = |p: &mut Publisher,
                        early: &mut Receiver,
                        late: &mut Receiver,
                        late_on: bool,
                        now: Instant,
                        got_early: &mut Vec<(bool, usize, usize)>,
                        got_late: &mut Vec<(bool, usize, usize)>| {
            p.handle_timeout(now);
            let mut out: Vec<Vec<u8>> = Vec::new();
            p.poll_transmit(now, &mut |_, b| {
                out.extend(b.iter().map(|d| d.to_vec()));
                true
            });
            let take = |r: &mut Receiver, d: &[u8], got: &mut Vec<(bool, usize, usize)>| {
                let _ = r.handle_datagram(now, SRC, d, &mut |ev| {
                    if let Delivery::Message {
                        topic,
                        payload,
                        snapshot,
                        ..
                    } = ev
                    {
                        let (t, k) = parse(topic, payload);
                        got.push((snapshot, t, k));
                    }
                });
            };
            for d in &out {
                take(early, d, got_early);
                if late_on && !rng.percent(5) {
                    take(late, d, got_late);
                }
            }
            let mut control: Vec<Vec<u8>> = Vec::new();
            for (id, r, on) in [(1u64, &mut *early, true), (2, &mut *late, late_on)] {
                if !on {
                    continue;
                }
                r.handle_timeout(now, &mut |_| {});
                r.poll_nak(&mut |key, from, to| control.push(nak_bytes(key, from, to, id)));
                r.poll_status(now, 4096, &mut |key, next_seq, window, snapshot| {
                    control.push(status_bytes(key, id, (next_seq, window, 0, snapshot)));
                });
            }
            for c in control {
                let _ = p.handle_control(now, &c);
            }
        };
        let mut offered = 0usize;
        let total = TOPICS * (BEFORE + AFTER);
        let mut rounds = 0;
        let mut tail = 0;
        // Until everything was offered, then 50 ms more for the last repairs.
        while offered < total || tail < 500 {
            rounds += 1;
            if offered == total {
                tail += 1;
            }
            assert!(rounds < 200_000, "seed {seed}: no progress");
            now += Duration::from_micros(100);
            if offered == TOPICS * BEFORE {
                late_on = true;
            }
            // A few messages per step: the late joiner arrives mid-stream.
            for _ in 0..7 {
                if offered >= total || (offered == TOPICS * BEFORE && !late_on) {
                    break;
                }
                let (t, k) = (offered % TOPICS, offered / TOPICS);
                match p.offer(now, &format!("/t/{t}"), format!("{k:<200}").as_bytes()) {
                    Ok(()) => offered += 1,
                    Err(_) => break,
                }
            }
            step(
                &mut p,
                &mut early,
                &mut late,
                late_on,
                now,
                &mut got_early,
                &mut got_late,
            );
        }
        // The early receiver: every update of every topic, in order, no snapshot.
        assert_eq!(got_early.len(), total, "seed {seed}");
        assert!(
            got_early.iter().all(|g| !g.0),
            "seed {seed}: snapshot at early"
        );
        // The late one: 100 snapshot values first, then live.
        let snaps = got_late.iter().take_while(|g| g.0).count();
        assert_eq!(snaps, TOPICS, "seed {seed}: snapshot entries");
        assert!(
            got_late[snaps..].iter().all(|g| !g.0),
            "seed {seed}: snapshot after live"
        );
        for t in 0..TOPICS {
            let ks: Vec<usize> = got_late.iter().filter(|g| g.1 == t).map(|g| g.2).collect();
            let first = ks[0];
            assert!(
                first + 1 >= BEFORE,
                "seed {seed}: topic {t} starts at {first}"
            );
            let want: Vec<usize> = (first..BEFORE + AFTER).collect();
            assert_eq!(ks, want, "seed {seed}: topic {t} has a gap or a duplicate");
        }
        assert_eq!(late.counters().lost_messages, 0, "seed {seed}");
        assert!(p.counters().snapshots >= 1);
        assert_eq!(p.cached_topics(), TOPICS);
    }
}
