//! Hostile peers against the real state machines, with no sockets and no clock:
//! forged heartbeats and data far ahead, made-up sessions, NAK storms, fake and
//! forged status, floods of receivers, sessions and fragments. Each attack is held
//! to a bounded cost in work and memory and counted, and the real session's data
//! still arrives whole, in order.

use std::time::{Duration, Instant};

use super::publisher::{PublisherConfig, MAX_NAK_SPAN};
use super::sim_tests::{nak_bytes, record, send_all, status_bytes, Seen, SRC};
use super::*;
use crate::wire::{Heartbeat, HEARTBEAT_LEN, MAX_SEQ};

/// The session `send_all` publishes.
const SESSION: u32 = 77;

fn key(session: u32) -> SessionKey {
    SessionKey {
        source: SRC,
        session,
    }
}

fn heartbeat(session: u32, next_seq: u64, next_msg_seq: u64, oldest: u64) -> Vec<u8> {
    let mut b = [0u8; HEARTBEAT_LEN];
    Heartbeat {
        session,
        next_seq,
        next_msg_seq,
        oldest,
    }
    .encode(&mut b);
    b.to_vec()
}

/// `n` messages of 100 bytes, each its index repeated.
fn messages(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| ("/t".to_string(), vec![i as u8; 100]))
        .collect()
}

/// Rewrites an encoded datagram's session, sequence and message sequence.
fn forge(datagram: &[u8], session: u32, seq: u64, msg_seq: u64) -> Vec<u8> {
    let mut d = datagram.to_vec();
    d[8..12].copy_from_slice(&session.to_le_bytes());
    d[16..24].copy_from_slice(&seq.to_le_bytes());
    d[24..32].copy_from_slice(&msg_seq.to_le_bytes());
    d
}

fn feed(rx: &mut Receiver, now: Instant, seen: &mut Seen, d: &[u8]) {
    let _ = rx.handle_datagram(now, SRC, d, &mut |e| record(seen, e));
}

/// Heartbeats and data that jump far ahead of a session are rejected: no loss is
/// declared, the session is not moved, and its real data all arrives.
#[test]
fn forged_jumps_far_ahead_are_rejected_and_the_session_keeps_its_data() {
    let msgs = messages(200);
    let data = send_all(1400, &msgs);
    let mut rx = Receiver::new(ReceiverConfig::default());
    let t = Instant::now();
    let mut seen = Seen::default();
    let half = data.len() / 2;
    for d in &data[..half] {
        feed(&mut rx, t, &mut seen, d);
    }
    let at = half as u64;
    let jump = ReceiverConfig::default().max_jump + 1;
    // "everything before is gone", from far ahead
    for ahead in [jump, 1 << 40, MAX_SEQ - at] {
        feed(
            &mut rx,
            t,
            &mut seen,
            &heartbeat(SESSION, at + ahead, 1 << 61, at + ahead),
        );
    }
    // data far ahead, and data in sequence whose message numbers leap
    feed(
        &mut rx,
        t,
        &mut seen,
        &forge(&data[half], SESSION, at + jump, 1 << 50),
    );
    feed(
        &mut rx,
        t,
        &mut seen,
        &forge(&data[half], SESSION, at, 1 << 50),
    );
    assert_eq!(rx.counters().implausible, 5);
    for d in &data[half..] {
        feed(&mut rx, t, &mut seen, d);
    }
    rx.handle_timeout(t + Duration::from_millis(50), &mut |e| record(&mut seen, e));
    assert!(seen.losses.is_empty(), "{:?}", seen.losses);
    let got: Vec<_> = seen
        .messages
        .iter()
        .map(|(_, t, p)| (t.clone(), p.clone()))
        .collect();
    assert_eq!(got, msgs);
    assert_eq!(rx.counters().lost_messages, 0);
}

/// A made-up session cannot make a receiver report more lost messages than its
/// datagrams could have carried: a heartbeat claiming 2^62 messages is rejected.
#[test]
fn a_made_up_session_cannot_claim_a_huge_loss() {
    let mut rx = Receiver::new(ReceiverConfig::default());
    let t = Instant::now();
    let mut seen = Seen::default();
    feed(&mut rx, t, &mut seen, &heartbeat(9, 10, MAX_SEQ, 10));
    assert_eq!(rx.counters().implausible, 1);
    // a plausible one is taken: its loss is bounded by what 10 datagrams carry
    feed(&mut rx, t, &mut seen, &heartbeat(9, 10, 100, 10));
    rx.handle_timeout(t + Duration::from_secs(5), &mut |e| record(&mut seen, e));
    let lost: u64 = seen.losses.iter().map(|(a, b)| b - a).sum();
    assert_eq!(lost, 100);
    assert_eq!(rx.counters().lost_messages, 100);
}

/// A publisher with `retained` datagrams of `mtu` bytes kept, no flow control
/// partner, that has sent `n` messages at `t0`.
fn publisher_with_data(n: usize, t0: Instant) -> (Publisher, u64) {
    let mut p = Publisher::new(
        PublisherConfig {
            retransmit_window: 1024 * 1400,
            startup_grace: Duration::ZERO,
            ..PublisherConfig::new(SESSION, 1400)
        },
        t0,
    );
    let mut bytes = 0;
    for (topic, payload) in messages(n) {
        while p.offer(t0, &topic, &payload) == Err(Blocked::Transmit) {
            p.poll_transmit(t0, &mut |_, b| {
                bytes += b.iter().map(|d| d.len() as u64).sum::<u64>();
                true
            });
        }
    }
    p.poll_transmit(t0, &mut |_, b| {
        bytes += b.iter().map(|d| d.len() as u64).sum::<u64>();
        true
    });
    (p, bytes)
}

/// A NAK storm — ten thousand NAKs for everything, over 100 ms — gets no more
/// retransmitted bytes than the repair budget allows (one window, plus the share of
/// the data, plus one window per second), and no NAK more than the ceiling.
#[test]
fn a_nak_storm_is_held_to_the_repair_budget() {
    let t0 = Instant::now();
    let (mut p, data_bytes) = publisher_with_data(5000, t0);
    let window = 1023 * 1400u64; // the pool less the buffer being filled
    let mut retransmitted = 0u64;
    let mut most_per_nak = 0;
    let storm = Duration::from_millis(100);
    for i in 0..10_000u32 {
        let now = t0 + storm * i / 10_000;
        // sixteen NAKs read between two transmits, as the agent reads a burst
        for _ in 0..16 {
            let b = nak_bytes(key(SESSION), 0, u64::MAX >> 2, 666);
            let _ = p.handle_control(now, &b);
        }
        p.handle_timeout(now);
        let mut this = 0;
        p.poll_transmit(now, &mut |kind, b| {
            if kind == Transmit::Retransmit {
                this += b.len();
                retransmitted += b.iter().map(|d| d.len() as u64).sum::<u64>();
            }
            true
        });
        most_per_nak = most_per_nak.max(this);
    }
    let c = p.counters();
    assert_eq!(c.retransmit_bytes, retransmitted);
    let per_sec = super::publisher::REFILL_PER_SEC as u64;
    let bound = window + data_bytes + per_sec * window * storm.as_millis() as u64 / 1000;
    assert!(retransmitted <= bound, "{retransmitted} > {bound}");
    assert!(retransmitted > 0, "real repair still works");
    assert!(most_per_nak as u64 <= MAX_NAK_SPAN);
    assert!(c.nak_clamped > 0 && c.repair_limited > 0, "{c:?}");
}

/// Status past what was sent is clamped: one status claiming 2^62 for a real
/// receiver's id does not take that receiver out of pacing.
#[test]
fn a_status_past_what_was_sent_is_clamped() {
    let t0 = Instant::now();
    let (mut p, _) = publisher_with_data(10, t0);
    let sent = p.next_seq();
    let s = status_bytes(key(SESSION), 1, (sent, 4, 0, false));
    p.handle_control(t0, &s).unwrap();
    let forged = status_bytes(key(SESSION), 1, (MAX_SEQ, u32::MAX, 0, false));
    p.handle_control(t0, &forged).unwrap();
    assert_eq!(p.flow_counters().clamped, 1);
    assert_eq!(p.acked(), Some(sent), "the receiver is where it really is");
}

/// A fake receiver that never acknowledges (position 0, window 0, repeated) holds a
/// Min publisher back for the receiver timeout at most, then stops pacing it.
#[test]
fn a_receiver_that_never_acknowledges_stalls_the_publisher_for_the_timeout_at_most() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(1);
    let mut p = Publisher::new(
        PublisherConfig {
            receiver_timeout: timeout,
            startup_grace: Duration::ZERO,
            ..PublisherConfig::new(SESSION, 1400)
        },
        t0,
    );
    let fake = |p: &mut Publisher, now| {
        let s = status_bytes(key(SESSION), 666, (0, 0, 0, false));
        p.handle_control(now, &s).unwrap();
    };
    fake(&mut p, t0);
    let mut blocked_at = None;
    let mut sent_at = None;
    let step = Duration::from_millis(5);
    for i in 0..1000u32 {
        let now = t0 + step * i;
        fake(&mut p, now);
        p.handle_timeout(now);
        match p.offer(now, "/t", &[1; 100]) {
            Ok(()) if blocked_at.is_some() => {
                sent_at = Some(now);
                break;
            }
            Ok(()) => {}
            Err(Blocked::FlowControl) => {
                blocked_at.get_or_insert(now);
            }
            Err(_) => {}
        }
        p.poll_transmit(now, &mut |_, _| true);
    }
    let (blocked, sent) = (blocked_at.unwrap(), sent_at.expect("never unblocked"));
    assert!(
        sent - t0 <= timeout + step * 2,
        "stalled {:?}",
        sent - blocked
    );
    assert_eq!(p.flow_counters().unpaced, 1);
}

/// Ten thousand made-up receivers take no more than the table's room.
#[test]
fn the_receiver_table_is_bounded() {
    let t0 = Instant::now();
    let (mut p, _) = publisher_with_data(10, t0);
    for id in 0..10_000u64 {
        let s = status_bytes(key(SESSION), id, (0, 1 << 20, 0, false));
        p.handle_control(t0 + Duration::from_micros(id), &s)
            .unwrap();
    }
    assert_eq!(p.receivers(), flow::MAX_RECEIVERS);
    assert_eq!(
        p.flow_counters().evicted,
        10_000 - flow::MAX_RECEIVERS as u64
    );
}

/// Sessions beyond the table's room evict the least recently heard, which is
/// reported gone; memory for reassembly and reordering stays within its bounds.
#[test]
fn floods_of_sessions_fragments_and_out_of_order_data_stay_bounded() {
    let big = vec![("/big".to_string(), vec![7u8; 256 << 10])];
    let frags = send_all(1400, &big);
    let cfg = ReceiverConfig {
        max_sessions: 16,
        max_message: 1 << 20,
        reassembly_bytes: 1 << 20,
        reorder_bytes: 64 << 10,
        ..ReceiverConfig::default()
    };
    let mut rx = Receiver::new(cfg.clone());
    let t = Instant::now();
    let mut gone = 0;
    let mut losses = 0u64;
    // 200 sessions each start a 256 KiB message, and hold data out of order
    for session in 0..200u32 {
        for (i, d) in frags[..3].iter().enumerate() {
            let seq = if i == 0 { 0 } else { 10 + i as u64 };
            let d = forge(d, session, seq, 0);
            let _ = rx.handle_datagram(t, SRC, &d, &mut |e| match e {
                Delivery::Gone { .. } => gone += 1,
                Delivery::Loss {
                    from_seq, to_seq, ..
                } => losses += to_seq - from_seq,
                _ => {}
            });
        }
        let (held, asm) = rx.memory();
        assert!(held <= cfg.reorder_bytes + 1500, "held {held}");
        assert!(asm <= cfg.reassembly_bytes, "reassembly {asm}");
    }
    assert_eq!(rx.session_count(), 16);
    let c = rx.counters();
    assert_eq!(c.sessions_evicted, 200 - 16);
    assert_eq!(
        gone,
        200 - 16,
        "every evicted live session is reported gone"
    );
    assert!(c.reassembly_refused > 0, "{c:?}");
    assert!(losses > 0);
}
