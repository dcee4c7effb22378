//! Subscribers awaited from async code (tokio, single-threaded runtime): the
//! `Stream` of events, woken by whoever runs the receiver — no thread polls for the
//! task, in every threading mode and with each backend.

use std::time::{Duration, Instant};

use ringcast::{Error, Node, OwnedEvent, ThreadingMode};
use tokio_stream::StreamExt;

use ringcast_e2e::{lo_config as config, LIB_BACKENDS as BACKENDS};

fn payload(i: u64) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.extend((0..120u64).map(|k| (i.wrapping_mul(131) + k) as u8));
    p
}

/// `fut`'s output, or a panic naming `what` after `limit`. The deadline is looked at
/// first, so a task that was never woken fails here (tokio's `timeout` polls the
/// future once more at its deadline, which would hide a lost wake-up).
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(limit) => panic!("{what}: not done in {limit:?} (a lost wake-up?)"),
        out = fut => out,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// 100,000 messages awaited from a `Stream` on a single-threaded tokio runtime: all
/// of them, in order, byte for byte, with the subscriber's node in each threading
/// mode (inline: the backstop thread blocks in the kernel for the task; dedicated and
/// shared: the receiver agent wakes it).
#[test]
fn a_tokio_task_awaits_100k_messages_from_a_stream() {
    const N: u64 = 100_000;
    for (backend, name) in BACKENDS {
        for mode in [
            ThreadingMode::Inline,
            ThreadingMode::Dedicated,
            ThreadingMode::Shared,
        ] {
            let who = format!("{name}/{mode:?}");
            let rx = Node::new(config(70, backend, name).threading(mode).build().unwrap()).unwrap();
            let tx = Node::new(
                config(70, backend, name)
                    .threading(ThreadingMode::Dedicated)
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let mut stream = rx.subscriber(&["/async"]).unwrap();
            let mut publ = tx.publisher("/async").unwrap();
            // The subscription exists before the first message (no late join).
            std::thread::sleep(Duration::from_millis(50));
            let sender = std::thread::spawn(move || {
                for i in 0..N {
                    publ.offer_blocking(&payload(i), Duration::from_secs(10))
                        .unwrap();
                }
                publ.flush(Duration::from_secs(10)).unwrap();
                publ
            });
            let (got, losses) = runtime().block_on(async {
                let mut next = 0u64;
                let mut losses = 0u64;
                let run = async {
                    while next < N {
                        match stream.next().await {
                            Some(Ok(OwnedEvent::Message(m))) => {
                                assert_eq!(m.seq, next, "[{who}] order");
                                assert_eq!(m.payload, payload(next), "[{who}] bytes of {next}");
                                assert_eq!(m.topic, "/async", "[{who}]");
                                next += 1;
                            }
                            Some(Ok(OwnedEvent::Loss(l))) => losses += l.count(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => panic!("[{who}] {e}"),
                            None => panic!("[{who}] the stream ended"),
                        }
                    }
                };
                within(Duration::from_secs(120), &who, run).await;
                (next, losses)
            });
            let _publ = sender.join().unwrap();
            assert_eq!(got, N, "[{who}] delivered ({losses} lost)");
            assert_eq!(losses, 0, "[{who}] losses");
        }
    }
}

/// A task that waits on an idle node is woken by the first message, however long
/// the node was idle before (inline: the backstop must have left its idle park to
/// wait on the socket), and more than one task can wait on one node.
#[test]
fn tasks_waiting_on_an_idle_node_are_woken_by_the_first_message() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(71, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(71, backend, name).build().unwrap()).unwrap();
        let mut a = rx.subscriber(&["/a"]).unwrap();
        let mut b = rx.subscriber(&["/b"]).unwrap();
        let mut pa = tx.publisher("/a").unwrap();
        let mut pb = tx.publisher("/b").unwrap();
        let sender = std::thread::spawn(move || {
            // Idle long enough for the backstop to back off to its longest park.
            std::thread::sleep(Duration::from_millis(700));
            pb.offer_blocking(b"to b", Duration::from_secs(5)).unwrap();
            pb.flush(Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            pa.offer_blocking(b"to a", Duration::from_secs(5)).unwrap();
            pa.flush(Duration::from_secs(5)).unwrap();
            (pa, pb)
        });
        let (first, second) = runtime().block_on(async {
            let message = |ev: Result<OwnedEvent, Error>| match ev {
                Ok(OwnedEvent::Message(m)) => Some((m.topic, m.payload)),
                Ok(_) => None,
                Err(e) => panic!("[{name}] {e}"),
            };
            let wait_a = async {
                loop {
                    if let Some(m) = message(a.recv_async().await) {
                        return (Instant::now(), m);
                    }
                }
            };
            let wait_b = async {
                loop {
                    if let Some(m) = message(b.recv_async().await) {
                        return (Instant::now(), m);
                    }
                }
            };
            let both = async { tokio::join!(wait_a, wait_b) };
            within(Duration::from_secs(20), name, both).await
        });
        let _ = sender.join().unwrap();
        assert_eq!(first.1, ("/a".to_string(), b"to a".to_vec()), "[{name}]");
        assert_eq!(second.1, ("/b".to_string(), b"to b".to_vec()), "[{name}]");
        // Each task was woken by its own message: b's came first.
        assert!(second.0 < first.0, "[{name}] b woken before a's message");
    }
}

/// The node's stop reaches an awaiting task: an agent that fails (fault injection:
/// the receiver agent panics) ends the stream with `Err(Error::Stopped)` naming the
/// failure, after what was queued; a dropped node ends it the same way.
#[test]
fn an_agent_failure_and_a_dropped_node_end_the_stream_with_the_error() {
    for (backend, name) in BACKENDS {
        let rx = Node::new(
            config(72, backend, name)
                .threading(ThreadingMode::Dedicated)
                .inject_faults(ringcast::FaultConfig {
                    panic_after: Some(5),
                    ..ringcast::FaultConfig::default()
                })
                .build()
                .unwrap(),
        )
        .unwrap();
        let tx = Node::new(config(72, backend, name).build().unwrap()).unwrap();
        let mut stream = rx.subscriber(&["/fail"]).unwrap();
        let mut publ = tx.publisher("/fail").unwrap();
        let sender = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let _ = publ.offer(b"x");
                let _ = publ.flush(Duration::from_millis(50));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let end = runtime().block_on(async {
            let mut items = Vec::new();
            let run = async {
                while let Some(item) = stream.next().await {
                    items.push(item);
                }
            };
            within(Duration::from_secs(10), name, run).await;
            items
        });
        let last = end.last().expect("an item");
        match last {
            Err(Error::Stopped(why)) => assert!(
                why.contains("receiver agent") && why.contains("injected fault"),
                "[{name}] {why}"
            ),
            other => panic!("[{name}] last item {other:?}"),
        }
        assert_eq!(
            end.iter().filter(|i| i.is_err()).count(),
            1,
            "[{name}] one error, then the end"
        );
        drop(tx);
        sender.join().unwrap();

        // A dropped node, a task waiting on it (another thread drops it meanwhile).
        let rx = Node::new(
            config(72, backend, name)
                .threading(ThreadingMode::Inline)
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut sub = rx.subscriber(&["/gone"]).unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(rx);
        });
        let got = runtime().block_on(within(Duration::from_secs(10), name, sub.recv_async()));
        dropper.join().unwrap();
        match got {
            Err(Error::Stopped(why)) => assert!(why.contains("dropped"), "[{name}] {why}"),
            other => panic!("[{name}] {other:?}"),
        }
    }
}
