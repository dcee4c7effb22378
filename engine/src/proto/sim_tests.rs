//! Sender → simulated network → receiver, with no sockets and no clock.
//!
//! The invariant checked for every generated case: each message the sender numbered
//! after the receiver joined is either delivered exactly once with its exact topic
//! and bytes, or covered by exactly one loss event; deliveries come in sequence
//! order; and the counters agree with what was handed out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::receiver::JOIN_FROM_START;
use super::*;

const SRC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);

/// A receiver that reports gaps at once (no NAKs).
fn best_effort(max_message: usize, max_sessions: usize) -> Receiver {
    Receiver::new(ReceiverConfig {
        max_message,
        max_sessions,
        reliable: false,
        ..ReceiverConfig::default()
    })
}

/// Runs the sender over `msgs` and returns every datagram it produced, in order.
fn send_all(max_payload: usize, msgs: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut s = SenderStream::new(77, max_payload);
    let mut d = DatagramBuf::new(max_payload);
    let mut out = Vec::new();
    for (topic, payload) in msgs {
        loop {
            match s.append(&mut d, topic, payload) {
                Append::Done => break,
                Append::Full => {
                    s.seal(&mut d);
                    out.push(d.bytes().to_vec());
                    d.clear();
                }
                Append::TooLarge => {
                    if !d.is_empty() {
                        s.seal(&mut d);
                        out.push(d.bytes().to_vec());
                        d.clear();
                    }
                    let mut off = 0;
                    while off < payload.len() {
                        off = s.fragment(&mut d, topic, payload, off);
                        out.push(d.bytes().to_vec());
                        d.clear();
                    }
                    break;
                }
            }
        }
    }
    if !d.is_empty() {
        s.seal(&mut d);
        out.push(d.bytes().to_vec());
    }
    out
}

#[derive(Debug, Default)]
struct Seen {
    messages: Vec<(u64, String, Vec<u8>)>,
    losses: Vec<(u64, u64)>,
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

#[derive(Debug, Clone, Copy)]
struct Faults {
    drop: u64,
    dup: u64,
    /// Extra random delay per packet, µs (reorders packets).
    jitter_us: u64,
}

/// A one-way lossy link: packets arrive after 20 µs plus jitter, some dropped or doubled.
struct Link {
    queue: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    order: u64,
}

impl Link {
    fn new() -> Self {
        Link {
            queue: BinaryHeap::new(),
            order: 0,
        }
    }
    fn send(&mut self, rng: &mut Rng, f: Faults, now_us: u64, bytes: &[u8], never_drop: bool) {
        // `never_drop` (the first datagram, which sets the receiver's join point)
        // also arrives first: no jitter, no copy.
        if !never_drop && rng.percent(f.drop) {
            return;
        }
        let copies = if !never_drop && rng.percent(f.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if never_drop {
                0
            } else {
                rng.next() % (f.jitter_us + 1)
            };
            let at = now_us + 20 + jitter;
            self.order += 1;
            self.queue.push(Reverse((at, self.order, bytes.to_vec())));
        }
    }
    fn due(&mut self, now_us: u64) -> Option<Vec<u8>> {
        match self.queue.peek() {
            Some(Reverse((at, _, _))) if *at <= now_us => {
                self.queue.pop().map(|Reverse((_, _, b))| b)
            }
            _ => None,
        }
    }
}

/// Publisher (retaining its last `retained` datagrams) → lossy link → reliable
/// receiver → lossy link → publisher, on a simulated clock. Returns what the
/// subscriber saw and the receiver.
fn run_reliable(
    msgs: &[(String, Vec<u8>)],
    mtu: usize,
    f: Faults,
    retained: usize,
    seed: u64,
) -> (Seen, Receiver) {
    use crate::wire::{Nak, HEARTBEAT_LEN, NAK_LEN};
    let datagrams = send_all(mtu, msgs);
    let mut rng = Rng(seed | 1);
    let t0 = Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let mut rx = Receiver::new(ReceiverConfig {
        seed,
        reorder_limit: 1 << 20,
        ..ReceiverConfig::default()
    });
    let mut retx = Retransmitter::new(retained, Duration::from_micros(500));
    let (mut down, mut up) = (Link::new(), Link::new());
    let mut seen = Seen::default();
    let mut sent = 0usize;
    let total_msgs = msgs.len() as u64;
    let mut now = 0u64;
    while now < 3_000_000 {
        // the publisher: one datagram every 10 µs, then a heartbeat every 1 ms
        if sent < datagrams.len() {
            down.send(&mut rng, f, now, &datagrams[sent], sent == 0);
            sent += 1;
        } else if now % 1000 == 0 {
            let hb = crate::wire::Heartbeat {
                session: 77,
                next_seq: sent as u64,
                next_msg_seq: total_msgs,
                oldest: retx.oldest(sent as u64),
            };
            let mut b = [0u8; HEARTBEAT_LEN];
            hb.encode(&mut b);
            down.send(&mut rng, f, now, &b, false);
        }
        while let Some(nak) = up.due(now) {
            let n = Nak::decode(&nak).expect("valid nak");
            let mut resend = Vec::new();
            retx.on_nak(at(now), n.from, n.to, sent as u64, 256, &mut |seq| {
                resend.push(seq)
            });
            for seq in resend {
                down.send(&mut rng, f, now, &datagrams[seq as usize], false);
            }
        }
        let mut sink = |ev: Delivery<'_>| match ev {
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
        };
        while let Some(d) = down.due(now) {
            let _ = rx.handle_datagram(at(now), SRC, &d, &mut sink);
        }
        rx.handle_timeout(at(now), &mut sink);
        rx.poll_nak(&mut |key, from, to| {
            let mut b = [0u8; NAK_LEN];
            Nak {
                session: key.session,
                from,
                to,
                receiver: 1,
            }
            .encode(&mut b);
            up.send(&mut rng, f, now, &b, false);
        });
        let lost: u64 = seen.losses.iter().map(|(a, b)| b - a).sum();
        if sent == datagrams.len() && seen.messages.len() as u64 + lost == total_msgs {
            break;
        }
        now += 10;
    }
    (seen, rx)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

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
        let (seen, rx) = run_reliable(&msgs, mtu, f, 1 << 16, seed);
        prop_assert!(seen.losses.is_empty(), "unrepaired: {:?} ({:?})", seen.losses, rx.counters());
        prop_assert_eq!(seen.messages.len(), msgs.len(), "{:?}", rx.counters());
        check(&msgs, &seen, &rx, 0);
        prop_assert_eq!(rx.held(), 0);
        if drop > 0 && rx.counters().naks > 0 {
            prop_assert!(rx.counters().repaired > 0);
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
        let f = Faults { drop, dup: 2, jitter_us: 100 };
        let (seen, rx) = run_reliable(&msgs, mtu, f, retained, seed);
        // everything is either delivered once or inside exactly one loss range
        let lost: u64 = seen.losses.iter().map(|(a, b)| b - a).sum();
        prop_assert_eq!(seen.messages.len() as u64 + lost, msgs.len() as u64, "{:?}", rx.counters());
        check(&msgs, &seen, &rx, 0);
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
