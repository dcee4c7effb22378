//! The library API across nodes on loopback multicast, with each backend.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast::{
    BackendChoice, BackendKind, Config, Event, IdleStrategy, LossReason, Node, PublishError,
    SlowConsumerPolicy, ThreadingMode,
};

use ringcast_e2e::{lo_config as config, LIB_BACKENDS as BACKENDS};

/// Messages (topic, payload, session, seq) and losses a subscriber handed out.
type Collected = (Vec<(String, Vec<u8>, u32, u64)>, Vec<ringcast::Loss>);

/// Polls until `want` messages arrived or `timeout` passed; returns (messages, losses).
fn collect(sub: &mut ringcast::Subscriber, want: usize, timeout: Duration) -> Collected {
    let deadline = Instant::now() + timeout;
    let (mut msgs, mut losses) = (Vec::new(), Vec::new());
    while msgs.len() < want && Instant::now() < deadline {
        sub.poll_timeout(1024, Duration::from_millis(20), |ev| match ev {
            Event::Message(m) => msgs.push((
                m.topic().to_string(),
                m.payload().to_vec(),
                m.session(),
                m.seq(),
            )),
            Event::Loss(l) => losses.push(l),
            Event::Session(_) => {}
            _ => {}
        });
    }
    (msgs, losses)
}

#[test]
fn claim_commit_across_nodes_with_metadata() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(config(20, backend, name).build().unwrap()).unwrap();
        let tx = Node::new(config(20, backend, name).build().unwrap()).unwrap();
        assert_eq!(
            rx.backend(),
            if name == "mmsg" {
                BackendKind::Mmsg
            } else {
                BackendKind::Uring
            }
        );
        let mut sub = rx.subscriber(&["/md/"]).unwrap();
        let mut publ = tx.publisher("/md/eurusd").unwrap();
        for i in 0..500u32 {
            let mut claim = publ.try_claim(8).unwrap();
            claim[..4].copy_from_slice(&i.to_le_bytes());
            claim[4..].copy_from_slice(b"tick");
            claim.commit();
        }
        // an abandoned claim publishes nothing
        {
            let _abandoned = publ.try_claim(8).unwrap();
        }
        publ.flush(Duration::from_secs(10)).unwrap();
        let (msgs, losses) = collect(&mut sub, 500, Duration::from_secs(10));
        assert!(losses.is_empty(), "[{name}] {losses:?}");
        assert_eq!(
            msgs.len(),
            500,
            "[{name}] {:?} {:?}",
            rx.stats(),
            tx.stats()
        );
        for (i, (topic, payload, session, seq)) in msgs.iter().enumerate() {
            assert_eq!(topic, "/md/eurusd");
            assert_eq!(&payload[..4], &(i as u32).to_le_bytes());
            assert_eq!(&payload[4..], b"tick");
            assert_eq!(*session, tx.session());
            assert_eq!(*seq, i as u64);
        }
        let s = tx.stats();
        assert_eq!(s.messages_sent, 500);
        let r = ringcast_e2e::settled(&rx, |r| r.messages_received >= 500);
        assert_eq!(
            (r.messages_received, r.gaps, r.malformed),
            (500, 0, 0),
            "[{name}] {r:?}"
        );
    }
}

#[test]
fn slow_subscriber_gets_explicit_losses_and_does_not_deafen_others() {
    const N: u64 = 5000;
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(21, backend, name)
                .subscriber_ring(64 * 1024)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(21, backend, name).build().unwrap()).unwrap();
        let mut slow = rx
            .subscriber_with_policy(&["/s"], SlowConsumerPolicy::Drop)
            .unwrap();
        let mut fast = rx.subscriber(&["/s"]).unwrap();
        let mut publ = tx.publisher("/s").unwrap();
        let payload = [7u8; 100];
        // Chunks of 200 records (~27 KiB) fit the fast ring; the fast subscriber drains
        // each chunk before the next. The slow one never polls and overflows its ring.
        let mut fast_seqs = Vec::new();
        for chunk in 0..N / 200 {
            for _ in 0..200 {
                publ.offer_blocking(&payload, Duration::from_secs(10))
                    .unwrap();
            }
            publ.flush(Duration::from_secs(10)).unwrap();
            let (msgs, losses) = collect(&mut fast, 200, Duration::from_secs(10));
            assert!(
                losses.is_empty(),
                "[{name}] fast subscriber lost {losses:?} in chunk {chunk}"
            );
            fast_seqs.extend(msgs.iter().map(|m| m.3));
        }
        assert_eq!(fast_seqs, (0..N).collect::<Vec<_>>(), "[{name}]");

        // The slow one: whatever did not fit is reported as slow-consumer loss, in
        // order, and together with what it got covers every message exactly once.
        let mut seen: Vec<(u64, u64, bool)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let n = slow.poll(1024, |ev| match ev {
                Event::Message(m) => seen.push((m.seq(), m.seq() + 1, false)),
                Event::Loss(l) => {
                    assert_eq!(l.reason, LossReason::SlowConsumer);
                    seen.push((l.from_seq, l.to_seq, true));
                }
                Event::Session(_) => {}
                _ => {}
            });
            if n == 0 && seen.last().is_some_and(|r| r.1 == N) {
                break;
            }
        }
        let mut next = 0;
        for (from, to, _) in &seen {
            assert_eq!(*from, next, "[{name}] hole or overlap at {from}");
            next = *to;
        }
        assert_eq!(next, N, "[{name}]");
        let dropped: u64 = seen.iter().filter(|r| r.2).map(|r| r.1 - r.0).sum();
        let s = rx.stats();
        assert!(s.ring_full_drops > 0, "[{name}] the slow ring never filled");
        assert!(
            s.ring_full_drops >= dropped.saturating_sub(1),
            "[{name}] {s:?}"
        );
        assert_eq!(s.gaps, 0);
    }
}

#[test]
fn many_publishers_many_nodes_keep_per_session_order() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(config(22, backend, name).build().unwrap()).unwrap();
        let mut sub = rx.subscriber(&["/p"]).unwrap();
        let nodes: Vec<Node> = (0..3)
            .map(|_| Node::new(config(22, backend, name).build().unwrap()).unwrap())
            .collect();
        let mut pubs: Vec<_> = nodes
            .iter()
            .flat_map(|n| {
                [
                    n.publisher("/p/one").unwrap(),
                    n.publisher("/p/two").unwrap(),
                ]
            })
            .collect();
        for i in 0..1000u32 {
            for p in pubs.iter_mut() {
                p.offer_blocking(&i.to_le_bytes(), Duration::from_secs(10))
                    .unwrap();
            }
        }
        for p in pubs.iter_mut() {
            p.flush(Duration::from_secs(10)).unwrap();
        }
        let (msgs, losses) = collect(&mut sub, 6000, Duration::from_secs(20));
        assert!(losses.is_empty(), "[{name}] {losses:?}");
        assert_eq!(msgs.len(), 6000, "[{name}]");
        // per session, sequence numbers are consecutive; per (session, topic) payloads count up
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        let mut per_topic: HashMap<(u32, String), u32> = HashMap::new();
        for (topic, payload, session, seq) in msgs {
            if let Some(prev) = last_seq.insert(session, seq) {
                assert_eq!(seq, prev + 1, "[{name}] session {session:08x}");
            }
            let v = u32::from_le_bytes(payload[..4].try_into().unwrap());
            let next = per_topic.entry((session, topic)).or_insert(0);
            assert_eq!(v, *next);
            *next += 1;
        }
        assert_eq!(last_seq.len(), 3);
        assert!(per_topic.values().all(|&n| n == 1000));
    }
}

#[test]
fn shared_threading_busy_spin_and_capped_datagrams() {
    for (backend, name) in BACKENDS {
        let base = config(23, backend, name)
            .threading(ThreadingMode::Shared)
            .idle(IdleStrategy::Yield)
            .max_payload(1472);
        let rx = Node::new(base.clone().build().unwrap()).unwrap();
        let tx = Node::new(base.idle(IdleStrategy::BusySpin).build().unwrap()).unwrap();
        assert_eq!(tx.max_payload(), 1472);
        let mut sub = rx.subscriber(&[""]).unwrap();
        let mut publ = tx.publisher("/cap").unwrap();
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for i in 0..200u32 {
            let msg: &[u8] = if i % 50 == 0 { &big } else { &[1u8; 1000] };
            publ.offer_blocking(msg, Duration::from_secs(10)).unwrap();
        }
        publ.flush(Duration::from_secs(10)).unwrap();
        let (msgs, losses) = collect(&mut sub, 200, Duration::from_secs(10));
        assert!(losses.is_empty(), "[{name}] {losses:?}");
        assert_eq!(msgs.len(), 200);
        for (i, m) in msgs.iter().enumerate() {
            if i % 50 == 0 {
                assert_eq!(m.1, big, "[{name}] fragmented message {i}");
            } else {
                assert_eq!(m.1, vec![1u8; 1000]);
            }
        }
        let s = tx.stats();
        assert_eq!(s.messages_fragmented, 4);
        // 1000-byte messages one per 1472-byte datagram; each 20 kB one in 14 fragments
        assert!(s.datagrams_sent >= 196 + 4 * 14, "{s:?}");
    }
}

#[test]
fn publisher_errors_are_typed() {
    let node = Node::new(
        config(24, BackendChoice::Mmsg, "mmsg")
            .max_message(1000)
            .publisher_ring(4096)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut p = node.publisher("/e").unwrap();
    assert_eq!(
        p.offer(&[0u8; 1001]),
        Err(PublishError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert!(node.publisher(&"x".repeat(300)).is_err());
    // The same with agent threads (offer's size check is not the inline path's).
    let agents = Node::new(
        config(24, BackendChoice::Mmsg, "mmsg")
            .max_message(1000)
            .threading(ThreadingMode::Dedicated)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut q = agents.publisher("/e").unwrap();
    assert_eq!(
        q.offer(&[0u8; 1001]),
        Err(PublishError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    drop(q);
    drop(agents);
    // Hammer a 4 KiB ring: every refusal is BackPressured and counted.
    let mut refused = 0u64;
    for _ in 0..20_000 {
        match p.offer(&[9u8; 900]) {
            Ok(()) => {}
            Err(PublishError::BackPressured) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    p.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(node.stats().back_pressure, refused);
    assert!(Config::builder()
        .group("10.1.1.1:5".parse().unwrap())
        .build()
        .is_err());
    assert!(Config::builder().max_payload(100).build().is_err());
}

/// Under the default back-pressure policy a subscriber that stops polling holds the
/// publisher back (its `offer` reports it), and nothing is lost once it resumes.
#[test]
fn back_pressure_reaches_the_publisher_and_loses_nothing() {
    const N: u64 = 20_000;
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(25, backend, name)
                .subscriber_ring(256 * 1024)
                .rcvbuf(1 << 20)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(
            config(25, backend, name)
                .publisher_ring(64 * 1024)
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut sub = rx.subscriber(&["/bp"]).unwrap();
        let mut publ = tx.publisher("/bp").unwrap();
        let payload = [3u8; 1000];
        let mut sent = 0u64;
        let mut refused = 0u64;
        // Offer without polling until the publisher is pushed back for a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        while sent < N && Instant::now() < deadline {
            match publ.offer(&payload) {
                Ok(()) => sent += 1,
                Err(PublishError::BackPressured) => {
                    refused += 1;
                    if refused > 1000 {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            refused > 1000,
            "[{name}] publisher never back-pressured after {sent} messages"
        );
        assert!(sent < N, "[{name}] all {N} fitted: the test proves nothing");
        let s = tx.stats();
        assert!(s.flow_blocked > 0 && s.receivers == 1, "[{name}] {s:?}");
        assert!(
            rx.stats().receive_back_pressured > 0,
            "[{name}] {:?}",
            rx.stats()
        );
        // Now drain while sending the rest: every message arrives, in order.
        let mut next = 0u64;
        let mut losses = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < N && Instant::now() < deadline {
            if sent < N && publ.offer(&payload).is_ok() {
                sent += 1;
            }
            sub.poll(256, |ev| match ev {
                Event::Message(m) => {
                    assert_eq!(m.seq(), next, "[{name}]");
                    next += 1;
                }
                Event::Loss(_) => losses += 1,
                Event::Session(_) => {}
                _ => {}
            });
        }
        assert_eq!(
            (next, losses),
            (N, 0),
            "[{name}] rx {:?} tx {:?}",
            rx.stats(),
            tx.stats()
        );
        assert_eq!(rx.stats().ring_full_drops, 0);
        assert_eq!(rx.stats().gaps, 0);
    }
}

/// The library's default policy is `Drop`: a subscriber that does not keep up (here it
/// does not poll at all while 8 MB go by, twice the publisher's retransmit window, which
/// bounds what a pacing receiver lets it send ahead) never holds the publisher back —
/// the publisher finishes — and is told exactly what it missed. The same stream to a
/// `BackPressure` subscriber that never polls cannot finish.
#[test]
fn a_default_subscriber_never_holds_the_publisher_back() {
    const N: u64 = 8000;
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            ringcast_e2e::lo_config_default_policy(26, backend, name)
                .subscriber_ring(64 * 1024)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(26, backend, name).build().unwrap()).unwrap();
        let mut sub = rx.subscriber(&["/dflt"]).unwrap();
        let mut publ = tx.publisher("/dflt").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let payload = [5u8; 1000];
        for i in 0..N {
            publ.offer_blocking(&payload, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("[{name}] held back at {i}: {e}"));
        }
        publ.flush(Duration::from_secs(10)).unwrap();
        // Everything was received (what the network lost, repaired)...
        let s = ringcast_e2e::settled(&rx, |s| s.messages_received >= N);
        assert_eq!(s.messages_received, N, "[{name}] {s:?}");
        // ...and what the ring could not hold is reported, exactly, as slow-consumer loss.
        let (mut got, mut lost) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got + lost < N && Instant::now() < deadline {
            sub.poll(1024, |ev| match ev {
                Event::Message(_) => got += 1,
                Event::Loss(l) => {
                    assert_eq!(l.reason, LossReason::SlowConsumer, "[{name}]");
                    lost += l.count();
                }
                Event::Session(_) => {}
                _ => {}
            });
        }
        assert_eq!(got + lost, N, "[{name}] got {got} lost {lost}");
        assert!(lost > 0, "[{name}] a 64 KiB ring held 8 MB");
    }
}

/// An agent that fails (here the receiver agent panics, by fault injection) stops the
/// node, and every handle says so: the subscriber's `error()` (a timeout before, with
/// the node alive, says `None`), a publisher's `offer`, new handles. Handles that
/// outlive their node are told the same.
#[test]
fn an_agent_failure_and_a_dropped_node_reach_every_handle() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(27, backend, name)
                .threading(ringcast::ThreadingMode::Dedicated)
                .inject_faults(ringcast::FaultConfig {
                    panic_after: Some(3),
                    ..ringcast::FaultConfig::default()
                })
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(27, backend, name).build().unwrap()).unwrap();
        let mut sub = rx.subscriber(&["/fail"]).unwrap();
        // Alive and idle: a timeout, no error.
        assert_eq!(sub.poll_timeout(16, Duration::from_millis(20), |_| {}), 0);
        assert!(sub.error().is_none(), "[{name}]");
        // (Its session announces itself: the receiver hears it, which counts towards
        // the injected panic.)
        let mut own = rx.publisher("/own").unwrap();
        let mut publ = tx.publisher("/fail").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sub.error().is_none() && Instant::now() < deadline {
            let _ = publ.offer(b"x");
            let _ = publ.flush(Duration::from_millis(100));
            sub.poll_timeout(16, Duration::from_millis(10), |_| {});
        }
        match sub.error() {
            Some(ringcast::Error::Stopped(why)) => {
                assert!(
                    why.contains("receiver agent") && why.contains("injected fault"),
                    "[{name}] {why}"
                );
            }
            other => panic!("[{name}] the failure did not reach the subscriber: {other:?}"),
        }
        assert_eq!(own.offer(b"y"), Err(PublishError::Stopped), "[{name}]");
        assert!(
            matches!(rx.publisher("/new"), Err(ringcast::Error::Stopped(_))),
            "[{name}]"
        );
        // Handles outliving a (healthy) node.
        let mut late = tx.subscriber(&["/late"]).unwrap();
        drop(publ);
        let mut orphan = tx.publisher("/orphan").unwrap();
        drop(tx);
        match late.error() {
            Some(ringcast::Error::Stopped(why)) => assert!(why.contains("dropped"), "{why}"),
            other => panic!("[{name}] {other:?}"),
        }
        // Polling a dead node's subscriber is safe (what its ring held is handed out).
        let _ = late.poll(16, |_| {});
        assert_eq!(orphan.offer(b"z"), Err(PublishError::Stopped), "[{name}]");
    }
}

/// A publisher can wait for its audience before it sends: with nobody listening the
/// wait times out; once a subscriber's node is up it returns before the first
/// message (the session announces itself with heartbeats: the subscriber already
/// saw it join), and what follows arrives from the first message on.
#[test]
fn a_publisher_waits_for_its_receivers_before_the_first_message() {
    for (backend, name) in BACKENDS {
        for mode in [ThreadingMode::Inline, ThreadingMode::Dedicated] {
            let who = format!("{name}/{mode:?}");
            let tx = Node::new(config(28, backend, name).threading(mode).build().unwrap()).unwrap();
            let mut publ = tx.publisher("/audience").unwrap();
            match publ.wait_for_receivers(1, Duration::from_millis(300)) {
                Err(ringcast::Error::Timeout(why)) => assert!(why.contains("0 of 1"), "{why}"),
                other => panic!("[{who}] nobody listens yet: {other:?}"),
            }
            let rx = Node::new(config(28, backend, name).build().unwrap()).unwrap();
            let mut sub = rx.subscriber(&["/audience"]).unwrap();
            // The subscriber's node reads the socket in the background only with agent
            // threads; inline, its own polls do (here in a thread of its own).
            let polling = std::thread::spawn(move || {
                let mut joined = false;
                let mut msgs = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(20);
                while msgs.len() < 100 && Instant::now() < deadline {
                    sub.poll_timeout(64, Duration::from_millis(10), |ev| match ev {
                        Event::Session(s) if s.state == ringcast::SessionState::Joined => {
                            assert!(msgs.is_empty(), "joined before the first message");
                            joined = true;
                        }
                        Event::Message(m) => msgs.push((m.seq(), m.payload().to_vec())),
                        Event::Loss(l) => panic!("loss {l:?}"),
                        _ => {}
                    });
                }
                (joined, msgs)
            });
            let n = publ
                .wait_for_receivers(1, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("[{who}] {e}"));
            assert!(n >= 1, "[{who}]");
            assert_eq!(
                tx.stats().messages_sent,
                0,
                "[{who}] before the first message"
            );
            for i in 0..100u64 {
                publ.offer_blocking(&i.to_le_bytes(), Duration::from_secs(5))
                    .unwrap();
            }
            publ.flush(Duration::from_secs(5)).unwrap();
            let (joined, msgs) = polling.join().unwrap();
            assert!(joined, "[{who}] the announced session joined");
            let want: Vec<(u64, Vec<u8>)> =
                (0..100u64).map(|i| (i, i.to_le_bytes().to_vec())).collect();
            assert_eq!(msgs, want, "[{who}] from the first message on");
        }
    }
}

/// `shutdown` sends what flow control still holds for a slow receiver and waits for
/// its acknowledgement: a lossless subscriber that has not polled yet (its ring is
/// small, so the publisher's window closes) gets every message after its publisher's
/// node was shut down.
#[test]
fn shutdown_sends_what_flow_control_held_back() {
    const N: u64 = 3000;
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(29, backend, name)
                .threading(ThreadingMode::Dedicated)
                .subscriber_ring(64 << 10)
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut sub = rx
            .subscriber_with_policy(&["/drain"], SlowConsumerPolicy::BackPressure)
            .unwrap();
        let tx = Node::new(
            config(29, backend, name)
                .retransmit_window(256 << 10)
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut publ = tx.publisher("/drain").unwrap();
        tx.wait_for_receivers(1, Duration::from_secs(10)).unwrap();
        let payload = |i: u64| {
            let mut p = i.to_le_bytes().to_vec();
            p.resize(1000, i as u8);
            p
        };
        for i in 0..N {
            publ.offer_blocking(&payload(i), Duration::from_secs(5))
                .unwrap();
        }
        drop(publ);
        let held = tx.stats();
        assert!(
            held.messages_sent < N,
            "[{name}] the window held some back ({} of {N} sent)",
            held.messages_sent
        );
        let collector = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while (got.len() as u64) < N && Instant::now() < deadline {
                sub.poll_timeout(256, Duration::from_millis(10), |ev| match ev {
                    Event::Message(m) => got.push((m.seq(), m.payload().to_vec())),
                    Event::Loss(l) => panic!("loss {l:?}"),
                    _ => {}
                });
            }
            got
        });
        tx.shutdown(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("[{name}] {e}"));
        let got = collector.join().unwrap();
        assert_eq!(got.len() as u64, N, "[{name}] delivered");
        for (i, (seq, p)) in got.iter().enumerate() {
            assert_eq!((*seq, p), (i as u64, &payload(i as u64)), "[{name}]");
        }
    }
}

/// Discovery between two nodes: each joins the other's directory with its name and
/// topics, a `PeerEvents` handle sees `Joined`, and dropping a node is a clean
/// `Left` at once (the expiry is set far longer than the wait, so only the leave
/// message can explain it).
#[test]
fn nodes_discover_each_other_and_a_clean_stop_leaves_at_once() {
    for (backend, name) in BACKENDS {
        let mk = |id: u64| {
            Node::new(
                config(37, backend, name)
                    .node_id(Some(id))
                    .node_name(Some(format!("node-{id}")))
                    .discovery_timing(Duration::from_millis(200), 100)
                    .build()
                    .unwrap(),
            )
            .unwrap()
        };
        let a = mk(1);
        let mut events = a.peer_events();
        let b = mk(2);
        let _p = b.publisher("/prices/eurusd").unwrap();
        let _s = b.subscriber(&["/orders/"]).unwrap();
        assert_eq!((b.id(), b.name()), (2, "node-2"));
        let joined = events
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("[{name}] no join"));
        match joined {
            ringcast::PeerEvent::Joined(p) => assert_eq!((p.id, p.name.as_str()), (2, "node-2")),
            other => panic!("[{name}] {other:?}"),
        }
        // The topics follow in the next announces.
        let deadline = Instant::now() + Duration::from_secs(5);
        let topics = loop {
            let peers = a.peers();
            let p = peers.iter().find(|p| p.id == 2).cloned();
            if let Some(p) = p.filter(|p| !p.publishes.is_empty() && !p.subscribes.is_empty()) {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "[{name}] topics never announced: {peers:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(topics.publishes, vec!["/prices/eurusd".to_string()]);
        assert_eq!(topics.subscribes, vec!["/orders/".to_string()]);
        assert_eq!(topics.group, b.group());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.peers().iter().any(|p| p.id == 1) {
            assert!(
                Instant::now() < deadline,
                "[{name}] b knows a: {:?} {:?}",
                b.peers(),
                b.stats()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop((_p, _s));
        drop(b);
        let left = events
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("[{name}] no leave"));
        assert_eq!(
            left,
            ringcast::PeerEvent::Left {
                id: 2,
                name: "node-2".into(),
                reason: ringcast::LeaveReason::Left
            },
            "[{name}]"
        );
        assert!(a.peers().is_empty(), "[{name}]");
        assert!(a.stats().announces_received > 0, "[{name}]");
    }
}

/// Two network IDs on one group, port and discovery group: no message, peer, status
/// or NAK crosses, and each side counts what it ignored; a node of the same network
/// gets everything.
#[test]
fn two_network_ids_on_one_group_ignore_each_other() {
    for (backend, name) in BACKENDS {
        let mk = |net: &str| {
            Node::new(
                config(38, backend, name)
                    .network(net)
                    .discovery_timing(Duration::from_millis(100), 5)
                    .build()
                    .unwrap(),
            )
            .unwrap()
        };
        let red = mk("red");
        let blue = mk("blue");
        let red2 = mk("red");
        let mut blue_sub = blue.subscriber(&[""]).unwrap();
        // Blue publishes too: its receiver's status for its own session goes to the
        // control port, where red's publisher hears (and ignores) it.
        let _blue_publ = blue.publisher("/blue").unwrap();
        let mut red_sub = red2.subscriber(&[""]).unwrap();
        let mut publ = red.publisher("/data").unwrap();
        red.wait_for_receivers(1, Duration::from_secs(10)).unwrap();
        for i in 0..100u64 {
            publ.offer_blocking(&i.to_le_bytes(), Duration::from_secs(5))
                .unwrap();
        }
        publ.flush(Duration::from_secs(5)).unwrap();
        let (msgs, losses) = collect(&mut red_sub, 100, Duration::from_secs(10));
        assert_eq!(
            (msgs.len(), losses.len()),
            (100, 0),
            "[{name}] same network"
        );
        let (other, _) = collect(&mut blue_sub, 1, Duration::from_millis(500));
        assert!(other.is_empty(), "[{name}] nothing crosses networks");
        let (bs, rs) = (blue.stats(), red.stats());
        assert_eq!(bs.messages_received, 0, "[{name}]");
        assert!(
            bs.foreign_network > 0,
            "[{name}] ignored and counted: {bs:?}"
        );
        assert!(bs.discovery_foreign > 0, "[{name}] {bs:?}");
        assert!(
            rs.control_foreign > 0,
            "[{name}] blue's status reached red's control port: {rs:?}"
        );
        assert_eq!(rs.receivers, 1, "[{name}] only red2 paces red");
        assert!(blue.peers().is_empty(), "[{name}] no peer crosses");
        let red_peers: Vec<u64> = red.peers().iter().map(|p| p.id).collect();
        assert_eq!(red_peers, vec![red2.id()], "[{name}]");
    }
}

/// Acceptance (issue 10, 5): messages whose time to live is shorter than the delay
/// they meet (here injected at the receiver: every datagram held 100 ms) are dropped
/// at delivery, counted and reported as `Expired` losses, never delivered; messages
/// with a long time to live on the same path all arrive. Offered and claimed, from an
/// inline publisher (direct into the datagram) and a dedicated one (through the ring).
#[test]
fn messages_past_their_time_to_live_are_dropped_and_counted() {
    const N: u64 = 100;
    for (backend, name) in BACKENDS {
        for mode in [ThreadingMode::Inline, ThreadingMode::Dedicated] {
            let who = format!("{name}/{mode:?}");
            let rx = Node::new(
                config(39, backend, name)
                    .inject_faults(ringcast::FaultConfig {
                        delay: 1.0,
                        delay_for: Duration::from_millis(100),
                        seed: 39,
                        ..ringcast::FaultConfig::default()
                    })
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let tx = Node::new(config(39, backend, name).threading(mode).build().unwrap()).unwrap();
            let mut sub = rx.subscriber(&["/ttl/"]).unwrap();
            let mut short = tx
                .publisher_with_ttl("/ttl/short", Duration::from_millis(5))
                .unwrap();
            let mut long = tx
                .publisher_with_ttl("/ttl/long", Duration::from_secs(60))
                .unwrap();
            tx.wait_for_receivers(1, Duration::from_secs(10)).unwrap();
            for i in 0..N {
                let p = i.to_le_bytes();
                if i % 2 == 0 {
                    short.offer_blocking(&p, Duration::from_secs(5)).unwrap();
                    long.offer_blocking(&p, Duration::from_secs(5)).unwrap();
                } else {
                    let mut c = short.try_claim(8).unwrap();
                    c.copy_from_slice(&p);
                    c.commit();
                    let mut c = long.try_claim(8).unwrap();
                    c.copy_from_slice(&p);
                    c.commit();
                }
            }
            short.flush(Duration::from_secs(5)).unwrap();
            long.flush(Duration::from_secs(5)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut longs, mut expired) = (Vec::new(), 0u64);
            while (longs.len() as u64) < N || expired < N {
                assert!(
                    Instant::now() < deadline,
                    "[{who}] {} long, {expired} expired",
                    longs.len()
                );
                sub.poll_timeout(256, Duration::from_millis(20), |ev| match ev {
                    Event::Message(m) => {
                        assert_eq!(
                            m.topic(),
                            "/ttl/long",
                            "[{who}] an expired message was delivered"
                        );
                        longs.push(u64::from_le_bytes(m.payload().try_into().unwrap()));
                    }
                    Event::Loss(l) => {
                        assert_eq!(l.reason, LossReason::Expired, "[{who}] {l:?}");
                        expired += l.count();
                    }
                    _ => {}
                });
            }
            assert_eq!(
                longs,
                (0..N).collect::<Vec<_>>(),
                "[{who}] every long-lived message, in order"
            );
            assert_eq!(expired, N, "[{who}] every short-lived one reported");
            assert_eq!(rx.stats().expired, N, "[{who}] counted");
        }
    }
}

/// Acceptance (issue 10, 4): a subscriber started after 1,000 updates on each of 100
/// topics gets 100 snapshot values (the latest of each), then live data with no gap
/// or duplicate — for each backend, with the publishing node's agents inline and
/// dedicated.
#[test]
fn a_late_subscriber_gets_the_last_values_then_live_data() {
    const TOPICS: usize = 100;
    const BEFORE: usize = 1000;
    const AFTER: usize = 200;
    for (backend, name) in BACKENDS {
        for mode in [ThreadingMode::Inline, ThreadingMode::Dedicated] {
            let who = format!("{name}/{mode:?}");
            let tx = Node::new(config(73, backend, name).threading(mode).build().unwrap()).unwrap();
            let mut pubs: Vec<_> = (0..TOPICS)
                .map(|t| tx.publisher_with_last_value(&format!("/lv/{t}")).unwrap())
                .collect();
            for k in 0..BEFORE {
                for p in pubs.iter_mut() {
                    p.offer_blocking(k.to_string().as_bytes(), Duration::from_secs(5))
                        .unwrap();
                }
            }
            for p in pubs.iter_mut() {
                p.flush(Duration::from_secs(5)).unwrap();
            }
            // The late joiner: a node of its own, started now.
            let rx = Node::new(config(73, backend, name).build().unwrap()).unwrap();
            let mut sub = rx.subscriber(&["/lv/"]).unwrap();
            let mut got: Vec<(bool, usize, usize)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut poll = |got: &mut Vec<(bool, usize, usize)>| {
                sub.poll_timeout(256, Duration::from_millis(10), |ev| {
                    if let Event::Message(m) = ev {
                        let t = m.topic().trim_start_matches("/lv/").parse().unwrap();
                        let k = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
                        got.push((m.is_snapshot(), t, k));
                    }
                });
            };
            while got.len() < TOPICS {
                assert!(
                    Instant::now() < deadline,
                    "[{who}] {} snapshot values",
                    got.len()
                );
                poll(&mut got);
            }
            for k in BEFORE..BEFORE + AFTER {
                for p in pubs.iter_mut() {
                    p.offer_blocking(k.to_string().as_bytes(), Duration::from_secs(5))
                        .unwrap();
                }
                poll(&mut got);
            }
            while got.len() < TOPICS * (1 + AFTER) {
                assert!(Instant::now() < deadline, "[{who}] {} messages", got.len());
                poll(&mut got);
            }
            let (snap, live) = got.split_at(TOPICS);
            let mut latest: Vec<(bool, usize, usize)> = snap.to_vec();
            latest.sort_unstable();
            let want: Vec<(bool, usize, usize)> =
                (0..TOPICS).map(|t| (true, t, BEFORE - 1)).collect();
            assert_eq!(
                latest, want,
                "[{who}] one snapshot value per topic, the latest"
            );
            for t in 0..TOPICS {
                let ks: Vec<(bool, usize)> = live
                    .iter()
                    .filter(|g| g.1 == t)
                    .map(|g| (g.0, g.2))
                    .collect();
                let want: Vec<(bool, usize)> =
                    (BEFORE..BEFORE + AFTER).map(|k| (false, k)).collect();
                assert_eq!(ks, want, "[{who}] topic {t}: live data after the snapshot");
            }
            std::thread::sleep(Duration::from_millis(50));
            poll(&mut got);
            assert_eq!(got.len(), TOPICS * (1 + AFTER), "[{who}] nothing more");
            let s = rx.stats();
            assert_eq!(
                (s.snapshot_messages, s.lost_messages),
                (TOPICS as u64, 0),
                "[{who}]"
            );
            assert!(tx.stats().snapshots_sent >= 1, "[{who}]");
        }
    }
}

/// Issue 10, build 6: a whisper by node name reaches that node (and says which id it
/// went to); an unknown name is refused with `UnknownPeer`, nothing sent.
#[test]
fn a_whisper_by_name_reaches_that_peer() {
    for (backend, name) in BACKENDS {
        let mk = |id: u64| {
            Node::new(
                config(74, backend, name)
                    .node_id(Some(id))
                    .node_name(Some(format!("node-{id}")))
                    .build()
                    .unwrap(),
            )
            .unwrap()
        };
        let (a, b) = (mk(1), mk(2));
        let mut ma = a.mesh().unwrap();
        let mut mb = b.mesh().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !a.peers().iter().any(|p| p.id == 2) {
            assert!(Instant::now() < deadline, "[{name}] a never heard b");
            std::thread::sleep(Duration::from_millis(20));
        }
        a.wait_for_receivers(1, Duration::from_secs(10)).unwrap();
        assert_eq!(
            ma.whisper_named("node-9", b"lost"),
            Err(PublishError::UnknownPeer("node-9".into()))
        );
        assert_eq!(ma.whisper_named("node-2", b"hello"), Ok(2), "[{name}]");
        let got = loop {
            assert!(Instant::now() < deadline, "[{name}] no whisper");
            if let Some(ev) = mb.recv(Duration::from_millis(50)) {
                break ev;
            }
        };
        assert_eq!(
            got,
            ringcast::MeshEvent::Whisper {
                from: 1,
                name: "node-1".into(),
                payload: b"hello".to_vec()
            },
            "[{name}]"
        );
        assert!(
            mb.recv(Duration::from_millis(100)).is_none(),
            "[{name}] only one"
        );
    }
}
