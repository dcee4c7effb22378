//! Reliability through the whole engine (agents, sockets, both backends), in one
//! process on loopback multicast, with faults injected into the subscribers' receive
//! path: repair under loss, duplication, reordering and delay; exact loss reports
//! beyond the retransmit window; NAK suppression; publishers coming and going; the
//! conflate and disconnect slow-consumer policies.

use std::time::{Duration, Instant};

use ringcast::{
    Event, FaultConfig, FlowControlStrategy, LossReason, Node, SessionState, SlowConsumerPolicy,
    Subscriber,
};

use ringcast_e2e::{lo_config as config, LIB_BACKENDS as BACKENDS};

/// What a subscriber handed out: every message as (seq, seq + 1, payload ok) and
/// every loss as (from, to, reason), in order, plus session events.
#[derive(Default, Debug)]
struct Log {
    ranges: Vec<(u64, u64, Option<LossReason>)>,
    corrupt: u64,
    sessions: Vec<(u32, SessionState)>,
}

impl Log {
    fn delivered(&self) -> u64 {
        self.ranges.iter().filter(|r| r.2.is_none()).count() as u64
    }

    fn lost(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.2.is_some())
            .map(|r| r.1 - r.0)
            .sum()
    }

    /// How far the messages and losses reach (one past the last sequence covered).
    fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    /// Messages and losses cover 0..n exactly once, in order.
    fn assert_exact(&self, n: u64, who: &str) {
        let mut next = 0;
        for &(from, to, reason) in &self.ranges {
            assert_eq!(
                from,
                next,
                "[{who}] hole or overlap at {from} ({reason:?}); delivered {} lost {}",
                self.delivered(),
                self.lost()
            );
            next = to;
        }
        assert_eq!(next, n, "[{who}] stream ends early");
        assert_eq!(self.delivered() + self.lost(), n);
        assert_eq!(self.corrupt, 0, "[{who}] corrupted payloads");
    }
}

/// 1 KB payload for message `i`: its number, then a byte pattern derived from it.
fn payload(i: u64) -> [u8; 1000] {
    let mut p = [(i % 251) as u8; 1000];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn poll_into(sub: &mut Subscriber, log: &mut Log, limit: usize) -> usize {
    sub.poll(limit, |ev| match ev {
        Event::Message(m) => {
            let p = m.payload();
            if p.len() != 1000 || p[..8] != m.seq().to_le_bytes() || p[8..] != payload(m.seq())[8..]
            {
                log.corrupt += 1;
            }
            log.ranges.push((m.seq(), m.seq() + 1, None));
        }
        Event::Loss(l) => log.ranges.push((l.from_seq, l.to_seq, Some(l.reason))),
        Event::Session(e) => log.sessions.push((e.session, e.state)),
        _ => {}
    })
}

/// Publishes `n` messages while polling every subscriber, then polls until each has
/// accounted for all `n` (delivered or lost) or `timeout` passes.
///
/// Before the bulk it sends one message and waits until the publishing node has
/// heard a status from each subscriber node (`receivers`), as an application would
/// wait for its subscribers: data sent before a receiver is known is not paced by it.
fn run(
    tx: &Node,
    receivers: u64,
    publ: &mut ringcast::Publisher,
    subs: &mut [&mut Subscriber],
    n: u64,
    timeout: Duration,
) -> Vec<Log> {
    let mut logs: Vec<Log> = subs.iter().map(|_| Log::default()).collect();
    let deadline = Instant::now() + timeout;
    publ.offer_blocking(&payload(0), timeout).unwrap();
    let mut sent = 1;
    while tx.stats().receivers < receivers && Instant::now() < deadline {
        for (s, log) in subs.iter_mut().zip(logs.iter_mut()) {
            poll_into(s, log, 1024);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        tx.stats().receivers,
        receivers,
        "subscribers never reported"
    );
    while Instant::now() < deadline {
        while sent < n && publ.offer(&payload(sent)).is_ok() {
            sent += 1;
            if sent % 256 == 0 {
                break;
            }
        }
        let mut busy = 0;
        for (s, log) in subs.iter_mut().zip(logs.iter_mut()) {
            busy += poll_into(s, log, 1024);
        }
        if sent == n && logs.iter().all(|l| l.end() >= n) {
            break;
        }
        if busy == 0 && sent == n {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(sent, n, "publisher stayed back-pressured");
    logs
}

/// One publisher on `topic` (node `tx`) and a subscriber to `prefix` on each of the
/// two `nodes`: [`run`] with `n` messages.
fn run_two(tx: &Node, nodes: [&Node; 2], topic: &str, prefix: &str, n: u64, secs: u64) -> Vec<Log> {
    let mut a = nodes[0].subscriber(&[prefix]).unwrap();
    let mut b = nodes[1].subscriber(&[prefix]).unwrap();
    let mut publ = tx.publisher(topic).unwrap();
    run(
        tx,
        2,
        &mut publ,
        &mut [&mut a, &mut b],
        n,
        Duration::from_secs(secs),
    )
}

/// Acceptance: 100,000 × 1 KB arrive complete and in order at two subscribers whose
/// receive paths drop 5 %, duplicate, reorder and delay datagrams; the counters show
/// the NAKs and retransmissions that did it.
#[test]
fn injected_loss_duplication_reordering_and_delay_are_repaired() {
    const N: u64 = 100_000;
    for (backend, name) in BACKENDS {
        let faults = |seed| FaultConfig {
            seed,
            loss: 0.05,
            duplicate: 0.02,
            reorder: 0.05,
            delay: 0.02,
            delay_for: Duration::from_millis(2),
            ..FaultConfig::default()
        };
        let subs_nodes: Vec<Node> = [11, 12]
            .into_iter()
            .map(|seed| {
                Node::new(
                    config(30, backend, name)
                        .inject_faults(faults(seed))
                        .build()
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let tx = Node::new(config(30, backend, name).max_payload(8192).build().unwrap()).unwrap();
        let logs = run_two(&tx, [&subs_nodes[0], &subs_nodes[1]], "/r/x", "/r", N, 90);
        for (i, (log, node)) in logs.iter().zip(&subs_nodes).enumerate() {
            let who = format!("{name} subscriber {i}");
            log.assert_exact(N, &who);
            let s = node.stats();
            assert_eq!(log.lost(), 0, "[{who}] {s:?}");
            assert!(
                s.injected_dropped > 0 && s.injected_duplicated > 0,
                "[{who}] {s:?}"
            );
            assert!(
                s.injected_reordered > 0 && s.injected_delayed > 0,
                "[{who}] {s:?}"
            );
            assert!(s.naks_sent > 0 && s.gaps_filled > 0, "[{who}] {s:?}");
            assert!(s.duplicates > 0 && s.reordered > 0, "[{who}] {s:?}");
            assert_eq!(s.gaps, 0, "[{who}] {s:?}");
        }
        let t = tx.stats();
        assert!(t.naks_received > 0 && t.retransmits > 0, "[{name}] {t:?}");
    }
}

/// Acceptance: with loss beyond the retransmit window, a subscriber gets explicit
/// loss events whose ranges add up exactly to what it did not get. Flow control
/// `Max` (or `Tagged`, with only the healthy subscriber tagged) lets the publisher
/// run at the healthy subscriber's pace, leaving the one behind a blackout with more
/// missing than the publisher still holds.
#[test]
fn loss_beyond_the_retransmit_window_is_reported_exactly() {
    const N: u64 = 100_000;
    let cases = [
        (BACKENDS[0], FlowControlStrategy::Max),
        (BACKENDS[1], FlowControlStrategy::Max),
        (BACKENDS[0], FlowControlStrategy::Tagged(7)),
    ];
    for ((backend, name), strategy) in cases {
        let who = format!("{name} {strategy:?}");
        let healthy =
            Node::new(config(31, backend, name).receiver_tag(7).build().unwrap()).unwrap();
        let cut = Node::new(
            config(31, backend, name)
                .inject_faults(FaultConfig {
                    seed: 5,
                    loss: 0.005,
                    blackout_after: Some(2000),
                    blackout_for: Duration::from_millis(100),
                    ..FaultConfig::default()
                })
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(
            config(31, backend, name)
                .max_payload(4096)
                .retransmit_window(4 << 20)
                .flow_control(strategy)
                .build()
                .unwrap(),
        )
        .unwrap();
        let logs = run_two(&tx, [&healthy, &cut], "/w", "", N, 90);
        logs[0].assert_exact(N, &format!("{who} healthy"));
        assert_eq!(logs[0].lost(), 0, "[{who}] {:?}", healthy.stats());
        logs[1].assert_exact(N, &format!("{who} cut off"));
        assert!(
            logs[1].lost() > 0,
            "[{who}] nothing lost: {:?}",
            cut.stats()
        );
        assert!(logs[1].delivered() > 0);
        assert!(
            logs[1]
                .ranges
                .iter()
                .all(|r| r.2.is_none() || r.2 == Some(LossReason::Network)),
            "[{who}]"
        );
        let s = ringcast_e2e::settled(&cut, |s| s.lost_messages == logs[1].lost());
        assert_eq!(s.lost_messages, logs[1].lost(), "[{who}] {s:?}");
        assert!(s.lost_beyond_window > 0, "[{who}] {s:?}");
        assert!(
            s.gaps_filled > 0,
            "[{who}] the small losses were repaired: {s:?}"
        );
    }
}

/// The same blackout under the default `Min` flow control: the publisher waits for
/// the cut-off subscriber (never running further ahead than it can still resend),
/// and after the blackout everything is repaired: nothing lost anywhere.
#[test]
fn min_flow_control_waits_for_the_slowest_and_loses_nothing() {
    const N: u64 = 50_000;
    let (backend, name) = BACKENDS[0];
    let healthy = Node::new(config(35, backend, name).build().unwrap()).unwrap();
    let cut = Node::new(
        config(35, backend, name)
            .inject_faults(FaultConfig {
                seed: 5,
                loss: 0.005,
                blackout_after: Some(2000),
                blackout_for: Duration::from_millis(100),
                ..FaultConfig::default()
            })
            .build()
            .unwrap(),
    )
    .unwrap();
    let tx = Node::new(
        config(35, backend, name)
            .max_payload(4096)
            .retransmit_window(1 << 20)
            .build()
            .unwrap(),
    )
    .unwrap();
    let logs = run_two(&tx, [&healthy, &cut], "/m", "", N, 90);
    for (i, l) in logs.iter().enumerate() {
        l.assert_exact(N, &format!("subscriber {i}"));
        assert_eq!(
            l.lost(),
            0,
            "[subscriber {i}] {:?}\n{:?}",
            cut.stats(),
            tx.stats()
        );
    }
    let s = cut.stats();
    assert!(s.injected_dropped > 0 && s.gaps_filled > 0, "{s:?}");
    assert!(tx.stats().flow_blocked > 0, "{:?}", tx.stats());
}

/// A rate-limited publisher is held back by its limit (counted), and everything
/// still arrives.
#[test]
fn rate_limited_publisher_delivers_everything() {
    const N: u64 = 5_000;
    let (backend, name) = BACKENDS[1];
    let rx = Node::new(config(36, backend, name).build().unwrap()).unwrap();
    let tx = Node::new(
        config(36, backend, name)
            .max_payload(8192)
            .rate_limit(Some(2 << 20))
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut sub = rx.subscriber(&[""]).unwrap();
    let mut publ = tx.publisher("/rate").unwrap();
    let logs = run(
        &tx,
        1,
        &mut publ,
        &mut [&mut sub],
        N,
        Duration::from_secs(60),
    );
    logs[0].assert_exact(N, "rate");
    assert_eq!(logs[0].lost(), 0);
    let t = tx.stats();
    assert!(t.rate_limited > 0, "{t:?}");
}

/// Two subscribers that lose the same datagrams: one NAKs, the other hears it and
/// holds its own NAK back; both still get everything.
#[test]
fn a_nak_heard_from_another_receiver_suppresses_ours() {
    const N: u64 = 20_000;
    let (backend, name) = BACKENDS[0];
    let nodes: Vec<Node> = (0..2)
        .map(|_| {
            Node::new(
                config(32, backend, name)
                    // same seed: the same datagrams go missing at both
                    .inject_faults(FaultConfig {
                        seed: 9,
                        loss: 0.05,
                        ..FaultConfig::default()
                    })
                    // a random NAK delay long enough to hear each other first
                    .nak(Duration::from_millis(5), Duration::from_millis(10), 20)
                    .build()
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let tx = Node::new(config(32, backend, name).max_payload(4096).build().unwrap()).unwrap();
    let logs = run_two(&tx, [&nodes[0], &nodes[1]], "/n", "", N, 60);
    for (i, l) in logs.iter().enumerate() {
        l.assert_exact(N, &format!("subscriber {i}"));
        assert_eq!(l.lost(), 0);
    }
    let (sa, sb) = (nodes[0].stats(), nodes[1].stats());
    assert!(
        sa.naks_suppressed + sb.naks_suppressed > 0,
        "no NAK was suppressed: {sa:?} {sb:?}"
    );
}

/// A publisher that goes silent is declared gone (after the losses it leaves); one
/// that restarts under a new session is announced and delivered from its start.
#[test]
fn publishers_gone_and_restarted_are_announced() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(33, backend, name)
                .publisher_timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut sub = rx.subscriber(&[""]).unwrap();
        let mut log = Log::default();
        let mut sessions = Vec::new();
        for round in 0..2usize {
            let tx = Node::new(config(33, backend, name).build().unwrap()).unwrap();
            sessions.push(tx.session());
            let mut publ = tx.publisher("/p").unwrap();
            for i in 0..100 {
                publ.offer_blocking(&payload(i), Duration::from_secs(5))
                    .unwrap();
            }
            publ.flush(Duration::from_secs(5)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while log.delivered() < 100 * (round as u64 + 1) && Instant::now() < deadline {
                poll_into(&mut sub, &mut log, 256);
            }
            // the publisher stops: its node goes away, and is declared gone
            drop(publ);
            drop(tx);
            let deadline = Instant::now() + Duration::from_secs(5);
            while log.sessions.len() < 2 * (round + 1) && Instant::now() < deadline {
                poll_into(&mut sub, &mut log, 256);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(log.delivered(), 200, "[{name}] {log:?}");
        assert_eq!(log.lost(), 0, "[{name}]");
        assert_eq!(log.corrupt, 0);
        // both sessions joined and went, in order; each delivered 0..100
        assert_eq!(
            log.sessions,
            [
                (sessions[0], SessionState::Joined),
                (sessions[0], SessionState::Gone),
                (sessions[1], SessionState::Joined),
                (sessions[1], SessionState::Gone),
            ],
            "[{name}]"
        );
        let seqs: Vec<u64> = log.ranges.iter().map(|r| r.0).collect();
        let want: Vec<u64> = (0..100).chain(0..100).collect();
        assert_eq!(seqs, want, "[{name}]");
        let s = ringcast_e2e::settled(&rx, |s| s.sessions_gone >= 2);
        assert_eq!((s.sessions, s.sessions_gone), (2, 2), "[{name}] {s:?}");
    }
}

/// Conflate: a subscriber that falls behind gets the newest message per topic, in
/// order, never a loss; the superseded ones are counted. Disconnect: it discards its
/// backlog, which is reported as `Disconnected` losses, and carries on live. Neither
/// slows the publisher or a subscriber that keeps up.
#[test]
fn conflate_and_disconnect_policies() {
    const N: u64 = 20_000;
    let (backend, name) = BACKENDS[0];
    for policy in [SlowConsumerPolicy::Conflate, SlowConsumerPolicy::Disconnect] {
        let rx = Node::new(
            config(34, backend, name)
                .subscriber_ring(256 << 10)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(34, backend, name).build().unwrap()).unwrap();
        let mut fast = rx.subscriber(&[""]).unwrap();
        let mut slow = rx.subscriber_with_policy(&[""], policy).unwrap();
        let mut publ = tx.publisher("/c").unwrap();
        // The slow one only looks after everything was sent.
        let logs = run(
            &tx,
            1,
            &mut publ,
            &mut [&mut fast],
            N,
            Duration::from_secs(60),
        );
        logs[0].assert_exact(N, "fast");
        assert_eq!(logs[0].lost(), 0);
        let mut log = Log::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.end() < N && Instant::now() < deadline {
            if poll_into(&mut slow, &mut log, 1024) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let s = rx.stats();
        let who = format!("{policy:?}");
        assert_eq!(log.corrupt, 0);
        let seqs: Vec<u64> = log.ranges.iter().map(|r| r.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "[{who}] out of order");
        match policy {
            SlowConsumerPolicy::Conflate => {
                assert_eq!(log.lost(), 0, "[{who}]");
                assert!(log.delivered() < N, "[{who}] nothing was conflated");
                assert_eq!(
                    log.ranges.last().map(|r| r.0),
                    Some(N - 1),
                    "[{who}] newest"
                );
                assert_eq!(s.conflated, N - log.delivered(), "[{who}] {s:?}");
            }
            _ => {
                log.assert_exact(N, &who);
                assert!(log.lost() > 0, "[{who}]");
                assert!(log
                    .ranges
                    .iter()
                    .all(|r| r.2.is_none() || r.2 == Some(LossReason::Disconnected)));
                assert!(s.slow_disconnects > 0, "[{who}] {s:?}");
                assert_eq!(s.disconnect_skipped, log.lost(), "[{who}] {s:?}");
            }
        }
        assert_eq!((s.ring_full_drops, s.gaps), (0, 0), "[{who}] {s:?}");
    }
}
