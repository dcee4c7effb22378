//! Threading modes across nodes on loopback multicast, with each backend: inline
//! (the application's calls run the engine), handler subscriptions (no ring), and the
//! host-based default.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcast::{Event, IdleStrategy, Node, ThreadingMode};

use ringcast_e2e::{lo_config as config, LIB_BACKENDS as BACKENDS};

/// Polls until `want` messages arrived or `timeout` passed; returns their
/// (seq, payload) and the number of losses seen.
fn collect(
    sub: &mut ringcast::Subscriber,
    want: usize,
    timeout: Duration,
) -> (Vec<(u64, Vec<u8>)>, usize) {
    let deadline = Instant::now() + timeout;
    let (mut msgs, mut losses) = (Vec::new(), 0);
    while msgs.len() < want && Instant::now() < deadline {
        sub.poll_timeout(1024, Duration::from_millis(20), |ev| match ev {
            Event::Message(m) => msgs.push((m.seq(), m.payload().to_vec())),
            Event::Loss(_) => losses += 1,
            Event::Session(_) => {}
            _ => {}
        });
    }
    (msgs, losses)
}

/// What a handler saw: (topic, seq, payload).
type Handled = (String, u64, Vec<u8>);

fn payload(i: u64) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.extend((0..200u64).map(|k| (i.wrapping_mul(31) + k) as u8));
    p
}

fn check_exact(msgs: &[(u64, Vec<u8>)], n: u64, who: &str) {
    assert_eq!(msgs.len() as u64, n, "[{who}] delivered");
    for (i, (seq, p)) in msgs.iter().enumerate() {
        assert_eq!(*seq, i as u64, "[{who}] order");
        assert_eq!(p, &payload(i as u64), "[{who}] bytes of {i}");
    }
}

#[test]
fn inline_nodes_deliver_everything_in_order_both_ways() {
    for (backend, name) in BACKENDS {
        for idle in [IdleStrategy::Park, IdleStrategy::BusySpin] {
            let who = format!("{name}/{idle:?}");
            let mk = || {
                Node::new(
                    config(60, backend, name)
                        .threading(ThreadingMode::Inline)
                        .idle(idle)
                        .build()
                        .unwrap(),
                )
                .unwrap()
            };
            let (a, b) = (mk(), mk());
            assert_eq!(a.threading(), ThreadingMode::Inline);
            assert_eq!(a.stats().threading, ThreadingMode::Inline);
            assert!(a.stats().threading_reason.contains("Inline"), "{who}");
            let mut sub_b = b.subscriber(&["/ping"]).unwrap();
            let mut sub_a = a.subscriber(&["/pong"]).unwrap();
            let mut ping = a.publisher("/ping").unwrap();
            let mut pong = b.publisher("/pong").unwrap();
            // Round trips: one message each way at a time, only the applications'
            // calls (offer, poll) running the engine.
            let n = 2_000u64;
            let (mut got_b, mut got_a) = (Vec::new(), Vec::new());
            for i in 0..n {
                ping.offer(&payload(i)).unwrap();
                let (m, l) = collect(&mut sub_b, 1, Duration::from_secs(5));
                assert_eq!(l, 0, "[{who}] losses at b");
                assert_eq!(m.len(), 1, "[{who}] ping {i} not echoed: {:?}", b.stats());
                pong.offer(&m[0].1).unwrap();
                got_b.extend(m);
                let (m, l) = collect(&mut sub_a, 1, Duration::from_secs(5));
                assert_eq!(l, 0, "[{who}] losses at a");
                assert_eq!(m.len(), 1, "[{who}] pong {i} lost: {:?}", a.stats());
                got_a.extend(m);
            }
            check_exact(&got_b, n, &who);
            check_exact(&got_a, n, &who);
            // A burst at full speed: datagrams fill up (natural batching), nothing lost.
            let burst = 20_000u64;
            for i in n..n + burst {
                ping.offer_blocking(&payload(i), Duration::from_secs(10))
                    .unwrap();
            }
            ping.flush(Duration::from_secs(10)).unwrap();
            let (m, l) = collect(&mut sub_b, burst as usize, Duration::from_secs(20));
            assert_eq!(l, 0, "[{who}] burst losses");
            assert_eq!(m.len() as u64, burst, "[{who}] burst: {:?}", b.stats());
            for (k, (seq, p)) in m.iter().enumerate() {
                let i = n + k as u64;
                assert_eq!((*seq, p), (i, &payload(i)), "[{who}] burst message {i}");
            }
            let s = a.stats();
            assert_eq!(s.messages_sent, n + burst, "[{who}]");
            assert!(
                s.datagrams_sent < n + burst,
                "[{who}] a full-speed burst shares datagrams: {} datagrams for {} messages",
                s.datagrams_sent,
                n + burst
            );
        }
    }
}

/// An inline poller takes its own messages straight out of the receive buffer; what
/// does not fit its poll's limit goes to its ring and comes next, in order; a second
/// subscription on the same topics gets everything through its ring.
#[test]
fn an_inline_poller_takes_its_messages_directly_and_in_order() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(65, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(65, backend, name).build().unwrap()).unwrap();
        let mut direct = rx.subscriber(&["/d"]).unwrap();
        let mut other = rx.subscriber(&["/d"]).unwrap();
        let mut publ = tx.publisher("/d").unwrap();
        let n = 6_000u64;
        let (mut got, mut got_other) = (Vec::new(), Vec::new());
        let (mut losses, mut joined) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        // The session announces itself (heartbeats) before its first message: its
        // Joined comes first, alone.
        while joined == 0 && Instant::now() < deadline {
            direct.poll_timeout(1, Duration::from_millis(1), |ev| match ev {
                Event::Session(_) => joined += 1,
                Event::Loss(_) => losses += 1,
                _ => {}
            });
        }
        // Ten messages wait in the socket; the next poll may take one event, so the
        // first goes directly and the rest of the receive batch to the ring (the
        // spill path, every time).
        let mut i = 0;
        for _ in 0..10 {
            publ.offer_blocking(&payload(i), Duration::from_secs(5))
                .unwrap();
            i += 1;
        }
        publ.flush(Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut limit = 1;
        while (got.len() as u64) < n && Instant::now() < deadline {
            for _ in 0..2 {
                if i < n && publ.offer(&payload(i)).is_ok() {
                    i += 1;
                }
            }
            direct.poll_timeout(limit, Duration::from_millis(1), |ev| match ev {
                Event::Message(m) => got.push((m.seq(), m.payload().to_vec())),
                Event::Loss(_) => losses += 1,
                Event::Session(_) => joined += 1,
                _ => {}
            });
            limit = 3;
            if i % 256 == 0 {
                // the other subscription reads its ring now and then (back-pressure)
                other.poll(usize::MAX, |ev| {
                    if let Event::Message(m) = ev {
                        got_other.push((m.seq(), m.payload().to_vec()));
                    }
                });
            }
        }
        assert_eq!((losses, joined), (0, 1), "[{name}]");
        check_exact(&got, n, name);
        let s = rx.stats();
        // n messages and one Joined (direct): some of the ten went by the ring, and
        // once it drained the poller took its events directly again.
        assert!(
            s.delivered_direct > 1 && s.delivered_direct < n + 1,
            "[{name}] {s:?}"
        );
        drop(direct);
        let want = n as usize - got_other.len();
        let (rest, l) = collect(&mut other, want, Duration::from_secs(10));
        assert_eq!(l, 0, "[{name}]");
        got_other.extend(rest);
        check_exact(&got_other, n, &format!("{name}/other"));
    }
}

#[test]
fn an_inline_poller_receives_only_what_its_limit_takes_so_bursts_skip_the_ring() {
    // A publisher runs ahead (flow control keeps the socket full) of a poller that
    // takes 32 events a call and looks every 300 µs. Messages of 4 KiB pack 15 to a
    // datagram: the poller receives about as many datagrams as its limit holds (by
    // the last receive's messages per datagram), so nearly every message is handed
    // over straight from the receive buffer. A receive of what waits (up to a batch
    // of 32 datagrams) would push most of each through the subscription's ring.
    fn big(i: u64) -> Vec<u8> {
        let mut p = i.to_le_bytes().to_vec();
        p.extend((0..4088u64).map(|k| (i.wrapping_mul(7) + k) as u8));
        p
    }
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(67, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(67, backend, name).build().unwrap()).unwrap();
        let mut sub = rx.subscriber(&["/b"]).unwrap();
        let mut publ = tx.publisher("/b").unwrap();
        let n = 12_000u64;
        let sender = std::thread::spawn(move || {
            for i in 0..n {
                publ.offer_blocking(&big(i), Duration::from_secs(10))
                    .unwrap();
            }
            publ.flush(Duration::from_secs(10)).unwrap();
            tx
        });
        let (mut next, mut losses) = (0u64, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < n && Instant::now() < deadline {
            sub.poll_timeout(32, Duration::from_millis(1), |ev| match ev {
                Event::Message(m) => {
                    assert_eq!(m.seq(), next, "[{name}] order");
                    assert_eq!(m.payload(), &big(next)[..], "[{name}] bytes of {next}");
                    next += 1;
                }
                Event::Loss(_) => losses += 1,
                _ => {}
            });
            let pause = Instant::now() + Duration::from_micros(300);
            while Instant::now() < pause {
                std::hint::spin_loop();
            }
        }
        let _tx = sender.join().unwrap();
        assert_eq!((next, losses), (n, 0), "[{name}]");
        let s = rx.stats();
        assert!(
            // (alone it is ~95 %; a test host busy with other tests preempts the
            // poller for milliseconds, and the backstop then reads for it — into
            // the ring; before the poller drained its ring first, 0–41 %)
            s.delivered_direct * 20 >= n * 11,
            "[{name}] {} of {n} handed over directly ({} datagrams; {s:?})",
            s.delivered_direct,
            s.datagrams_received
        );
    }
}

#[test]
fn an_inline_publisher_that_stops_calling_still_gets_everything_out() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(config(61, backend, name).build().unwrap()).unwrap();
        let tx = Node::new(
            config(61, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut sub = rx.subscriber(&["/away"]).unwrap();
        let mut publ = tx.publisher("/away").unwrap();
        // A burst, then the application goes away (no flush, no further calls): what
        // the burst held back for the next datagram goes with the backstop.
        let n = 5_000u64;
        for i in 0..n {
            publ.offer_blocking(&payload(i), Duration::from_secs(10))
                .unwrap();
        }
        let (msgs, losses) = collect(&mut sub, n as usize, Duration::from_secs(20));
        assert_eq!(losses, 0, "[{name}]");
        check_exact(&msgs, n, name);
        drop(publ);
    }
}

#[test]
fn handler_sees_every_message_in_place_and_in_order() {
    for (backend, name) in BACKENDS {
        for mode in [ThreadingMode::Inline, ThreadingMode::Dedicated] {
            let who = format!("{name}/{mode:?}");
            let rx = Node::new(config(62, backend, name).threading(mode).build().unwrap()).unwrap();
            let tx = Node::new(config(62, backend, name).build().unwrap()).unwrap();
            let got: Arc<Mutex<Vec<Handled>>> = Arc::default();
            let sink = got.clone();
            let _h = rx
                .handler(&["/h/"], move |ev| {
                    if let Event::Message(m) = ev {
                        sink.lock().unwrap().push((
                            m.topic().to_string(),
                            m.seq(),
                            m.payload().to_vec(),
                        ));
                    }
                })
                .unwrap();
            let mut a = tx.publisher("/h/a").unwrap();
            let mut other = tx.publisher("/other").unwrap();
            let n = 10_000u64;
            for i in 0..n {
                a.offer_blocking(&payload(i), Duration::from_secs(10))
                    .unwrap();
                if i % 100 == 0 {
                    other
                        .offer_blocking(b"not for the handler", Duration::from_secs(10))
                        .unwrap();
                }
            }
            a.flush(Duration::from_secs(10)).unwrap();
            other.flush(Duration::from_secs(10)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.lock().unwrap().len() < n as usize && Instant::now() < deadline {
                // inline: this thread runs the receiver (the backstop would too)
                if rx.do_work() == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            let got = got.lock().unwrap();
            assert_eq!(got.len() as u64, n, "[{who}] {:?}", rx.stats());
            // the shared sequence numbers skip the other topic's messages
            let mut last = None;
            for (k, (topic, seq, p)) in got.iter().enumerate() {
                assert_eq!(topic, "/h/a", "[{who}]");
                assert_eq!(p, &payload(k as u64), "[{who}] bytes of {k}");
                assert!(last.is_none_or(|l| *seq > l), "[{who}] order");
                last = Some(*seq);
            }
        }
    }
}

#[test]
fn auto_threading_is_resolved_and_explained() {
    let (backend, name) = BACKENDS[1];
    let node = Node::new(config(63, backend, name).build().unwrap()).unwrap();
    let s = node.stats();
    assert_ne!(node.threading(), ThreadingMode::Auto);
    assert_eq!(s.threading, node.threading());
    assert!(
        s.threading_reason.starts_with("auto:"),
        "{}",
        s.threading_reason
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 3 {
        assert_eq!(
            node.threading(),
            ThreadingMode::Inline,
            "{}",
            s.threading_reason
        );
    }
    // an oversubscribing configuration is warned about in the stats
    let spin = Node::new(
        config(63, backend, name)
            .threading(ThreadingMode::Dedicated)
            .idle(IdleStrategy::BusySpin)
            .cores(vec![0])
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(
        spin.stats().threading_reason.contains("WARNING"),
        "{}",
        spin.stats().threading_reason
    );
}

/// An inline application that offers and then only polls in a loop (a subscription of
/// its own, on another topic) still has its publisher's NAKs answered and its tail
/// heartbeats sent: the backstop runs the sender's cycles when the application does
/// not, however busy the application is on the receiving side.
#[test]
fn an_inline_publisher_whose_application_only_polls_still_repairs() {
    const N: u64 = 200;
    for (backend, name) in BACKENDS {
        let a = Node::new(
            config(66, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let b = Node::new(
            config(66, backend, name)
                .threading(ThreadingMode::Dedicated)
                .inject_faults(ringcast::FaultConfig {
                    seed: 66,
                    loss: 0.3,
                    ..ringcast::FaultConfig::default()
                })
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut got_b = b.subscriber(&["/repair"]).unwrap();
        let mut own = a.subscriber(&["/elsewhere"]).unwrap();
        let mut publ = a.publisher("/repair").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let collector =
            std::thread::spawn(move || collect(&mut got_b, N as usize, Duration::from_secs(20)));
        for i in 0..N {
            publ.offer_blocking(&payload(i), Duration::from_secs(5))
                .unwrap();
            // One datagram each: losses fall all along the stream, the tail included.
            std::thread::sleep(Duration::from_micros(200));
        }
        // From here the application only polls, without ever blocking (a busy
        // application: it never leaves the backstop an "away" gap on its own).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !collector.is_finished() && Instant::now() < deadline {
            own.poll(64, |_| {});
        }
        let (msgs, losses) = collector.join().unwrap();
        check_exact(&msgs, N, name);
        assert_eq!(losses, 0, "[{name}] losses");
        let s = a.stats();
        assert!(
            s.naks_received > 0 && s.retransmits > 0,
            "[{name}] repairs came from the polling node: {s:?}"
        );
    }
}
