//! The IPC transport through the library (issue 12): nodes with
//! `LocalTransport::Ipc` meet over logs in shared memory — delivery under each
//! slow-consumer policy, what a lapped subscriber is told, sessions, counters.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringcast::{
    Config, Event, LocalTransport, LossReason, Node, PublishError, SessionState, SlowConsumerPolicy,
};

use ringcast_e2e::{discovery_group, group};

const POLICIES: [SlowConsumerPolicy; 4] = [
    SlowConsumerPolicy::BackPressure,
    SlowConsumerPolicy::Drop,
    SlowConsumerPolicy::Conflate,
    SlowConsumerPolicy::Disconnect,
];

/// A directory in `/dev/shm` (memory, as IPC logs should be), removed when dropped.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(name: &str) -> ShmDir {
        let p = PathBuf::from(format!(
            "/dev/shm/ringcast-e2e-ipc-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        ShmDir(p)
    }
    fn logs(&self) -> usize {
        std::fs::read_dir(&self.0).map_or(0, |d| d.count())
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(id: u8, dir: &ShmDir, log: usize, policy: SlowConsumerPolicy) -> Node {
    let c = Config::builder()
        .group(group(id, "uring"))
        .discovery(Some(discovery_group(id, "uring")))
        .iface("lo")
        .local_transport(LocalTransport::Ipc)
        .ipc_dir(dir.0.clone())
        .ipc_log(log)
        .slow_consumer(policy)
        .publisher_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Node::new(c).unwrap()
}

/// Message `i`'s bytes: its number, then a length and contents that follow from it.
fn body(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..(i % 23) as u8).map(|k| k.wrapping_mul(31).wrapping_add(i as u8)));
    v
}

/// What a subscriber saw: messages in order (seq checked against `body`), losses,
/// session events.
#[derive(Default, Debug)]
struct Seen {
    messages: u64,
    next: u64,
    losses: Vec<ringcast::Loss>,
    joined: u32,
    gone: u32,
    wrong: Option<String>,
}

impl Seen {
    fn take(&mut self, ev: Event<'_>) {
        match ev {
            Event::Message(m) => {
                if m.seq() < self.next && self.wrong.is_none() {
                    self.wrong = Some(format!("seq {} after {}", m.seq(), self.next));
                }
                if m.payload() != body(m.seq()) && self.wrong.is_none() {
                    self.wrong = Some(format!("message {} is not byte-exact", m.seq()));
                }
                if m.topic() != "/ipc/t" && self.wrong.is_none() {
                    self.wrong = Some(format!("topic {}", m.topic()));
                }
                self.next = m.seq() + 1;
                self.messages += 1;
            }
            Event::Loss(l) => self.losses.push(l),
            Event::Session(s) => match s.state {
                SessionState::Joined => self.joined += 1,
                SessionState::Gone => self.gone += 1,
                _ => {}
            },
            _ => {}
        }
    }
}

/// Acceptance 4 of issue 12: 1M messages, byte-exact and in order, to three
/// subscribers (three nodes) under each slow-consumer policy; the publisher's end
/// is each one's `Gone`; the counters agree.
#[test]
fn a_million_messages_reach_three_subscribers_byte_exact_under_each_policy() {
    const N: u64 = 1_000_000;
    for (k, policy) in POLICIES.into_iter().enumerate() {
        let dir = ShmDir::new(&format!("million-{k}"));
        // 1M records of at most 48 bytes fit a 64 MiB log: nobody is lapped.
        let log = 64 << 20;
        let subs: Vec<Node> = (0..3).map(|_| node(70, &dir, log, policy)).collect();
        let mut handles = Vec::new();
        for n in &subs {
            let mut s = n.subscriber_with_policy(&["/ipc/"], policy).unwrap();
            handles.push(std::thread::spawn(move || {
                let mut seen = Seen::default();
                let deadline = Instant::now() + Duration::from_secs(120);
                while seen.gone == 0 && Instant::now() < deadline {
                    s.poll_timeout(4096, Duration::from_millis(50), |ev| seen.take(ev));
                }
                seen
            }));
        }
        let tx = node(70, &dir, log, policy);
        let mut p = tx.publisher("/ipc/t").unwrap();
        assert_eq!(
            tx.wait_for_receivers(3, Duration::from_secs(10)).unwrap(),
            3
        );
        for i in 0..N {
            let b = body(i);
            loop {
                match p.offer(&b) {
                    Ok(()) => break,
                    Err(PublishError::BackPressured) => std::thread::yield_now(),
                    Err(e) => panic!("offer {i}: {e}"),
                }
            }
        }
        assert_eq!(tx.stats().ipc_published, N);
        drop(p); // the readers drain the log, then see it gone
        for (h, n) in handles.into_iter().zip(&subs) {
            let seen = h.join().unwrap();
            assert_eq!(seen.wrong, None, "{policy:?}");
            assert_eq!(
                (seen.messages, seen.losses.len(), seen.joined, seen.gone),
                (N, 0, 1, 1),
                "{policy:?}: {:?}",
                &seen.losses[..seen.losses.len().min(3)]
            );
            let s = n.stats();
            assert_eq!((s.ipc_delivered, s.ipc_lost), (N, 0), "{policy:?}");
        }
        assert_eq!(dir.logs(), 0, "a closed log's file goes");
    }
}

/// A subscriber the publisher laps (a 64 KiB log, 20k messages offered while it
/// does not poll) is told, as its policy says: `Drop` and `Disconnect` get losses
/// (`SlowConsumer`, `Disconnected`) covering exactly what it missed, `Conflate` gets
/// the newest value with the rest counted as conflated, `BackPressure` holds the
/// publisher and misses nothing.
#[test]
fn a_lapped_subscriber_is_told_what_it_missed_as_its_policy_says() {
    const N: u64 = 20_000;
    for (k, policy) in POLICIES.into_iter().enumerate() {
        let dir = ShmDir::new(&format!("lapped-{k}"));
        let rx = node(71, &dir, 64 << 10, policy);
        let mut sub = rx.subscriber_with_policy(&["/ipc/"], policy).unwrap();
        let tx = node(71, &dir, 64 << 10, policy);
        let mut p = tx.publisher("/ipc/t").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Seen::default();
        while sub.ipc_logs() == 0 {
            assert!(Instant::now() < deadline, "the log was never found");
            sub.poll(16, |ev| seen.take(ev));
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut held = 0u64;
        let mut i = 0;
        while i < N {
            match p.offer(&body(i)) {
                Ok(()) => i += 1,
                Err(PublishError::BackPressured) => {
                    // Only a back-pressure subscriber holds the publisher: it reads.
                    held += 1;
                    sub.poll(4096, |ev| seen.take(ev));
                }
                Err(e) => panic!("{e}"),
            }
        }
        drop(p);
        while seen.gone == 0 && Instant::now() < deadline {
            sub.poll_timeout(4096, Duration::from_millis(20), |ev| seen.take(ev));
        }
        assert_eq!(seen.wrong, None, "{policy:?}");
        assert_eq!((seen.joined, seen.gone), (1, 1), "{policy:?}");
        let lost: u64 = seen.losses.iter().map(|l| l.count()).sum();
        let conflated = rx.stats().ipc_conflated;
        assert_eq!(
            seen.messages + lost + conflated,
            N,
            "{policy:?}: every message accounted for"
        );
        assert_eq!(seen.next, N, "{policy:?}: the newest message is delivered");
        match policy {
            SlowConsumerPolicy::BackPressure => {
                assert!(held > 0, "the publisher was never held back");
                assert_eq!(seen.messages, N);
            }
            SlowConsumerPolicy::Conflate => {
                assert!(seen.losses.is_empty(), "{:?}", seen.losses);
                assert!(conflated > 0);
                assert_eq!(held, 0);
            }
            _ => {
                let want = if policy == SlowConsumerPolicy::Drop {
                    LossReason::SlowConsumer
                } else {
                    LossReason::Disconnected
                };
                assert!(
                    lost > 0 && seen.losses.iter().all(|l| l.reason == want),
                    "{policy:?}: {:?}",
                    seen.losses
                );
                assert_eq!(rx.stats().ipc_lost, lost);
                assert_eq!(held, 0, "a {policy:?} subscriber never holds the publisher");
            }
        }
    }
}

/// Two topics, two publishers of one node: a subscriber of one prefix opens only
/// the matching log; a subscriber made after a publisher started joins it live; the
/// session joins once (with its first log) and goes with its last.
#[test]
fn subscribers_open_the_logs_of_their_topics_and_late_ones_join_live() {
    let dir = ShmDir::new("topics");
    let tx = node(72, &dir, 1 << 20, SlowConsumerPolicy::BackPressure);
    let mut a = tx.publisher("/ipc/a").unwrap();
    let mut b = tx.publisher("/ipc/b").unwrap();
    for i in 0..10u64 {
        a.offer(&body(i)).unwrap();
    }
    let rx = node(72, &dir, 1 << 20, SlowConsumerPolicy::BackPressure);
    let mut only_a = rx.subscriber(&["/ipc/a"]).unwrap();
    let mut both = rx.subscriber(&["/ipc/"]).unwrap();
    assert_eq!((only_a.ipc_logs(), both.ipc_logs()), (1, 2));
    for i in 10..20u64 {
        a.offer(&body(i)).unwrap();
        b.offer(&body(i)).unwrap();
    }
    let mut got_a = Vec::new();
    let mut got_both = Vec::new();
    let mut joined = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (got_a.len() < 10 || got_both.len() < 20) && Instant::now() < deadline {
        only_a.poll(64, |ev| {
            if let Event::Message(m) = ev {
                got_a.push((m.topic().to_string(), m.seq()));
            }
        });
        both.poll(64, |ev| match ev {
            Event::Message(m) => got_both.push((m.topic().to_string(), m.seq())),
            Event::Session(s) if s.state == SessionState::Joined => {
                assert_eq!(s.session, tx.session());
                joined += 1;
            }
            _ => {}
        });
    }
    // Joined live: what /ipc/a had before the subscriber is not replayed.
    let want_a: Vec<(String, u64)> = (10..20).map(|s| ("/ipc/a".to_string(), s)).collect();
    assert_eq!(got_a, want_a);
    assert_eq!(got_both.iter().filter(|(t, _)| t == "/ipc/b").count(), 10);
    assert_eq!(joined, 1, "one session, one Joined");
    drop(a);
    drop(b);
    let mut gone = 0;
    while gone == 0 && Instant::now() < deadline {
        both.poll_timeout(64, Duration::from_millis(20), |ev| {
            if let Event::Session(s) = ev {
                if s.state == SessionState::Gone {
                    gone += 1;
                }
            }
        });
    }
    assert_eq!(gone, 1, "the session goes with its last log");
}

/// Over IPC only, a publisher with a time to live or a last-value cache, or a
/// handler subscription, is refused with the reason (they go by the network).
#[test]
fn what_goes_by_the_network_only_is_refused_over_ipc() {
    let dir = ShmDir::new("refused");
    let n = node(73, &dir, 1 << 20, SlowConsumerPolicy::Drop);
    let e = n
        .publisher_with_ttl("/x", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("network only"), "{e}");
    assert!(n.publisher_with_last_value("/x").is_err());
    assert!(n.handler(&["/x"], |_| {}).is_err());
    // A message larger than half the log is refused as too large.
    let mut p = n.publisher("/x").unwrap();
    assert!(p.max_message() < 1 << 19);
    let big = vec![0u8; p.max_message() + 1];
    assert!(matches!(p.offer(&big), Err(PublishError::TooLarge { .. })));
    assert!(p.offer(&vec![7u8; p.max_message()]).is_ok());
}

/// `ringcast ARGS` with the IPC transport in `dir`, on the group of test `id`.
fn cli(id: u8, dir: &ShmDir, args: &[&str]) -> ringcast_e2e::Proc {
    let g = group(id, "uring").to_string();
    let d = dir.0.to_string_lossy().to_string();
    let mut full: Vec<&str> = args.to_vec();
    full.extend_from_slice(&["--group", &g, "--transport", "ipc", "--ipc-dir", &d]);
    ringcast_e2e::Proc::spawn(ringcast_e2e::ringcast("uring", &full))
}

/// Acceptance 4 of issue 12: a publisher process killed with SIGKILL mid-stream
/// leaves a log its subscriber reads to the last complete message, then `Gone`; the
/// dead process's log is removed when the next publisher starts there.
#[test]
fn an_ipc_publisher_killed_mid_stream_leaves_every_complete_message_then_gone() {
    let dir = ShmDir::new("kill-pub");
    let rx = node(74, &dir, 1 << 20, SlowConsumerPolicy::BackPressure);
    let mut sub = rx.subscriber(&["/ipc/"]).unwrap();
    let sender = cli(
        74,
        &dir,
        &[
            "send",
            "--topic",
            "/ipc/k",
            "--repeat",
            "100000000",
            "--autonumber",
            "--size",
            "64",
            "MSG",
        ],
    );
    let mut sender = Some(sender);
    let mut seen = 0u64;
    let mut gone = false;
    let mut losses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone {
        assert!(Instant::now() < deadline, "no Gone ({seen} messages)");
        sub.poll_timeout(4096, Duration::from_millis(20), |ev| match ev {
            Event::Message(m) => {
                let mut want = format!("MSG{seen}").into_bytes();
                want.resize(64, b' ');
                assert_eq!(m.seq(), seen);
                assert!(m.payload() == want, "message {seen} is not byte-exact");
                seen += 1;
            }
            Event::Loss(l) => losses.push(l),
            Event::Session(s) if s.state == SessionState::Gone => gone = true,
            _ => {}
        });
        if seen >= 50_000 {
            if let Some(s) = sender.take() {
                let f = s.stop(); // SIGKILL, mid-stream
                assert!(!f.status.success(), "{:?}", f.status);
            }
        }
    }
    assert!(sender.is_none(), "Gone before the kill");
    assert!(losses.is_empty(), "{losses:?}");
    assert!(seen >= 50_000);
    // The dead writer's log is still there; the next publisher here removes it.
    assert_eq!(dir.logs(), 1);
    let tx = node(74, &dir, 1 << 20, SlowConsumerPolicy::BackPressure);
    let _p = tx.publisher("/ipc/k").unwrap();
    assert_eq!(dir.logs(), 1, "the dead process's log was not removed");
}

/// Acceptance 4 of issue 12: a back-pressuring subscriber process that is killed
/// while it holds the publisher back holds it no longer: the publisher's next offers
/// go through.
#[test]
fn a_back_pressuring_ipc_subscriber_killed_releases_the_publisher() {
    let dir = ShmDir::new("kill-sub");
    let mut listener = cli(
        75,
        &dir,
        &[
            "listen",
            "--topic",
            "/ipc/",
            "--slow-consumer",
            "back-pressure",
            "--handler-delay-us",
            "100000",
            "--publisher-timeout",
            "0.5",
        ],
    );
    listener.wait_for_stderr("listening on", Duration::from_secs(20));
    let tx = node(75, &dir, 64 << 10, SlowConsumerPolicy::BackPressure);
    let mut p = tx.publisher("/ipc/t").unwrap();
    assert_eq!(
        tx.wait_for_receivers(1, Duration::from_secs(10)).unwrap(),
        1
    );
    // Fill the log: the listener reads ten a second, so the publisher is held.
    let mut i = 0;
    let held_since = loop {
        match p.offer(&body(i)) {
            Ok(()) => i += 1,
            Err(PublishError::BackPressured) => break Instant::now(),
            Err(e) => panic!("{e}"),
        }
        assert!(i < 1_000_000, "never held back");
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(p.offer(&body(i)), Err(PublishError::BackPressured)),
        "released while the subscriber lives"
    );
    let f = listener.stop(); // SIGKILL
    assert!(!f.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.offer(&body(i)) {
            Ok(()) => break,
            Err(PublishError::BackPressured) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "still held 10 s after the kill");
    }
    eprintln!("released {:?} after the hold began", held_since.elapsed());
    // And nothing holds it any more.
    for k in 1..10_000 {
        assert_eq!(p.offer(&body(i + k)), Ok(()));
    }
}

/// An async IPC subscriber (`recv_async`) is woken for what a publisher writes into a
/// log — nothing wakes it from the log itself, so the node's sender agent does — in
/// each threading mode.
#[test]
fn an_async_ipc_subscriber_is_woken_in_every_threading_mode() {
    for (k, mode) in [
        ringcast::ThreadingMode::Auto,
        ringcast::ThreadingMode::Inline,
        ringcast::ThreadingMode::Dedicated,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = ShmDir::new(&format!("async-{k}"));
        let mk = || {
            let c = Config::builder()
                .group(group(76, "uring"))
                .discovery(Some(discovery_group(76, "uring")))
                .iface("lo")
                .local_transport(LocalTransport::Ipc)
                .ipc_dir(dir.0.clone())
                .threading(mode)
                .build()
                .unwrap();
            Node::new(c).unwrap()
        };
        let rx = mk();
        let mut sub = rx
            .subscriber_with_policy(&["/ipc/"], SlowConsumerPolicy::BackPressure)
            .unwrap();
        let tx = mk();
        let mut p = tx.publisher("/ipc/a").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let writer = std::thread::spawn(move || {
            for i in 0..100u64 {
                std::thread::sleep(Duration::from_millis(2));
                while p.offer(&body(i)).is_err() {
                    std::thread::yield_now();
                }
            }
            p
        });
        let got = rt.block_on(async {
            let mut got = Vec::new();
            while got.len() < 100 {
                let ev = tokio::select! {
                    biased;
                    _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("{mode:?}: not woken ({} so far)", got.len()),
                    ev = sub.recv_async() => ev.unwrap(),
                };
                if let ringcast::OwnedEvent::Message(m) = ev {
                    got.push(m.seq);
                }
            }
            got
        });
        let _p = writer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<u64>>(), "{mode:?}");
    }
}
