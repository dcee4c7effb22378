//! The `ringcast` binary across processes, on loopback multicast, with each backend.

use std::net::{Ipv4Addr, UdpSocket};

/// A plain UDP socket whose multicast goes out on `lo` only, with TTL 0.
fn loopback_sender() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_ttl_v4(0).unwrap();
    s.bind(&std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
        .unwrap();
    s.into()
}
use std::time::{Duration, Instant};

use ringcast_e2e::{
    check_slow, get, group, line_numbers, numbered, ringcast, send, start_listener, summary, Proc,
    TempDir, BACKENDS,
};

const WAIT: Duration = Duration::from_secs(60);

/// Acceptance: `listen --count 1000 --output F` + `send --repeat 1000 --autonumber MSG`
/// → F holds MSG0 … MSG999 in order.
/// The two-terminal demo: a listener with no --count shows each message while it
/// runs, and Ctrl-C ends it with its summary and a clean exit.
#[test]
fn listen_shows_messages_as_they_arrive_and_ctrl_c_ends_it_cleanly() {
    for backend in BACKENDS {
        let dir = TempDir::new(&format!("live-{backend}"));
        let out = dir.file("F");
        let g = group(45, backend).to_string();
        let l = start_listener(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/demo",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        let s = send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/demo",
                "--repeat",
                "5",
                "--autonumber",
                "hello",
            ],
        );
        assert!(s.status.success(), "[{backend}] {}", s.stderr);
        // Still running, and the messages are already in the file.
        let deadline = Instant::now() + WAIT;
        let lines = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().count() >= 5 || Instant::now() >= deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            lines.lines().collect::<Vec<_>>(),
            (0..5).map(|i| format!("hello{i}")).collect::<Vec<_>>(),
            "[{backend}] messages written while the listener runs"
        );
        l.interrupt();
        let f = l.finish(WAIT);
        assert!(
            f.status.success(),
            "[{backend}] {:?} {}",
            f.status,
            f.stderr
        );
        assert!(
            f.stderr.contains("received 5 messages"),
            "[{backend}] summary after Ctrl-C: {}",
            f.stderr
        );
    }
}

#[test]
fn send_and_listen_in_order() {
    for backend in BACKENDS {
        let dir = TempDir::new(&format!("order-{backend}"));
        let out = dir.file("F");
        let g = group(1, backend).to_string();
        let out_s = out.to_str().unwrap();
        let l = start_listener(
            backend,
            &[
                "--group", &g, "--topic", "/t", "--count", "1000", "--output", out_s,
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/t",
                "--repeat",
                "1000",
                "--autonumber",
                "MSG",
            ],
        );
        let f = l.finish(WAIT);
        assert!(
            f.status.success(),
            "[{backend}] listener failed: {}",
            f.stderr
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            numbered("MSG", 1000),
            "[{backend}]"
        );
        assert!(
            f.stderr.contains("received 1000 messages, gaps 0"),
            "[{backend}] {}",
            f.stderr
        );
    }
}

/// One publisher, two subscribers in separate processes: both get the same 100,000
/// messages, in order, with no gap.
#[test]
fn two_listeners_each_get_all_100k() {
    const N: usize = 100_000;
    for backend in BACKENDS {
        let dir = TempDir::new(&format!("fanout-{backend}"));
        let g = group(2, backend).to_string();
        let (a, b) = (dir.file("a"), dir.file("b"));
        let n = N.to_string();
        let la = start_listener(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/f",
                "--count",
                &n,
                "--output",
                a.to_str().unwrap(),
            ],
        );
        let lb = start_listener(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/f",
                "--count",
                &n,
                "--output",
                b.to_str().unwrap(),
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/f",
                "--repeat",
                &n,
                "--autonumber",
                "m",
            ],
        );
        let expected = numbered("m", N);
        for (l, path) in [(la, a), (lb, b)] {
            let f = l.finish(WAIT);
            assert!(
                f.status.success(),
                "[{backend}] listener failed: {}",
                f.stderr
            );
            assert!(
                std::fs::read_to_string(&path).unwrap() == expected,
                "[{backend}] {} differs",
                path.display()
            );
        }
    }
}

/// A listener for `/a` prints nothing published on `/b`, and everything on `/a…`.
#[test]
fn topic_prefix_filtering() {
    for backend in BACKENDS {
        let g = group(3, backend).to_string();
        let l = start_listener(backend, &["--group", &g, "--topic", "/a", "--timeout", "2"]);
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/b",
                "--repeat",
                "50",
                "--autonumber",
                "B",
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/a/x",
                "--repeat",
                "3",
                "--autonumber",
                "A",
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/bb",
                "--repeat",
                "50",
                "--autonumber",
                "B",
            ],
        );
        let f = l.finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        assert_eq!(
            String::from_utf8_lossy(&f.stdout),
            "A0\nA1\nA2\n",
            "[{backend}]"
        );
    }
}

/// Several prefixes on one listener; messages keep their publisher's order.
#[test]
fn several_prefixes() {
    for backend in BACKENDS {
        let g = group(4, backend).to_string();
        let l = start_listener(
            backend,
            &[
                "--group", &g, "--topic", "/x", "--topic", "/y", "--count", "4",
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/x",
                "--repeat",
                "2",
                "--autonumber",
                "x",
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/z",
                "--repeat",
                "2",
                "--autonumber",
                "z",
            ],
        );
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/y",
                "--repeat",
                "2",
                "--autonumber",
                "y",
            ],
        );
        let f = l.finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        assert_eq!(
            String::from_utf8_lossy(&f.stdout),
            "x0\nx1\ny0\ny1\n",
            "[{backend}]"
        );
    }
}

/// A 1 MiB message is fragmented across datagrams and arrives intact.
#[test]
fn one_mebibyte_message_arrives_intact() {
    const SIZE: usize = 1 << 20;
    for backend in BACKENDS {
        let g = group(5, backend).to_string();
        let l = start_listener(backend, &["--group", &g, "--topic", "/big", "--count", "2"]);
        let size = SIZE.to_string();
        send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/big",
                "--repeat",
                "2",
                "--autonumber",
                "--size",
                &size,
                "HEAD",
            ],
        );
        let f = l.finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        let text = String::from_utf8(f.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "[{backend}]");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line.len(), SIZE, "[{backend}] message {i} length");
            let head = format!("HEAD{i}");
            assert!(line.starts_with(&head), "[{backend}]");
            assert!(
                line[head.len()..].bytes().all(|b| b == b' '),
                "[{backend}] padding corrupted"
            );
        }
    }
}

/// Random bytes sent to the group do not crash a listener; they are counted as
/// malformed and real messages still arrive.
#[test]
fn garbage_datagram_is_counted_not_fatal() {
    for backend in BACKENDS {
        let g = group(6, backend);
        let gs = g.to_string();
        let l = start_listener(backend, &["--group", &gs, "--topic", "/t", "--count", "2"]);
        let sock = loopback_sender();
        let mut x: u32 = 0x1234_5678;
        for len in [0usize, 1, 7, 31, 32, 33, 100, 1400] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            sock.send_to(&junk, g).unwrap();
        }
        // A valid header with a lying frame length.
        let mut lie = b"RCST\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00".to_vec();
        lie.extend_from_slice(&[0u8; 16]);
        lie.extend_from_slice(&[0xff, 0xff, 0, 0, 2, 0, 3, 0, b'/', b't']);
        sock.send_to(&lie, g).unwrap();
        send(
            backend,
            &[
                "--group",
                &gs,
                "--topic",
                "/t",
                "--repeat",
                "2",
                "--autonumber",
                "ok",
            ],
        );
        let f = l.finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        assert_eq!(
            String::from_utf8_lossy(&f.stdout),
            "ok0\nok1\n",
            "[{backend}]"
        );
        assert!(f.stderr.contains("malformed 9"), "[{backend}] {}", f.stderr);
    }
}

/// `ringcast doctor` names the backend and exits 0 on this host.
#[test]
fn doctor_names_backend() {
    for backend in BACKENDS {
        let f = Proc::spawn(ringcast(backend, &["doctor"])).finish(WAIT);
        let out = String::from_utf8_lossy(&f.stdout);
        assert!(f.status.success(), "[{backend}] {out} {}", f.stderr);
        let want = if backend == "mmsg" {
            "backend:           mmsg"
        } else {
            "backend:           io_uring"
        };
        assert!(out.contains(want), "[{backend}] {out}");
        assert!(out.contains("loopback self-test: ok"), "[{backend}] {out}");
    }
}

/// `listen --timeout` exits after that long without traffic, with a clean summary.
#[test]
fn listen_times_out_when_idle() {
    let g = group(7, "uring").to_string();
    let l = start_listener("uring", &["--group", &g, "--timeout", "0.5"]);
    let f = l.finish(Duration::from_secs(10));
    assert!(f.status.success());
    assert!(
        f.stderr.contains("received 0 messages, gaps 0"),
        "{}",
        f.stderr
    );
}

/// `send --rate` paces messages (the listener gets them all, spread over time).
#[test]
fn send_rate_and_size() {
    let g = group(8, "mmsg").to_string();
    let l = start_listener("mmsg", &["--group", &g, "--count", "20"]);
    let s = send(
        "mmsg",
        &[
            "--group", &g, "--topic", "/r", "--repeat", "20", "--rate", "200", "--size", "16", "r",
        ],
    );
    let f = l.finish(WAIT);
    assert!(f.status.success());
    let text = String::from_utf8_lossy(&f.stdout);
    assert_eq!(text.lines().count(), 20);
    assert!(text.lines().all(|l| l == "r               "), "{text:?}");
    // 20 messages at 200/s take at least 95 ms: check the sender's own report.
    let secs: f64 = s
        .stderr
        .split(", ")
        .find_map(|p| p.split_once(" s (").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or(0.0);
    assert!(secs >= 0.09, "paced send took {secs} s: {}", s.stderr);
}

/// Bad input on the command line is an error, not a panic.
#[test]
fn cli_rejects_bad_arguments() {
    let f = Proc::spawn(ringcast(
        "uring",
        &["send", "--group", "10.0.0.1:5000", "--topic", "/t", "x"],
    ))
    .finish(WAIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert!(f.stderr.contains("not a multicast address"), "{}", f.stderr);
    let f = Proc::spawn(ringcast("uring", &["listen", "--iface", "nosuchif0"])).finish(WAIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    let f = Proc::spawn(ringcast("bogus", &["doctor"])).finish(WAIT);
    assert!(!f.status.success());
}

/// `ringcast stat` shows another process's counters while it runs, and the file goes
/// away with the process.
#[test]
fn stat_reads_counters_of_running_nodes() {
    let dir = TempDir::new("stat");
    let stats_dir = dir.file("shm");
    std::fs::create_dir_all(&stats_dir).unwrap();
    let g = group(9, "uring").to_string();
    let mut listen = ringcast(
        "uring",
        &["listen", "--group", &g, "--count", "100", "--timeout", "20"],
    );
    listen.env("RINGCAST_STATS_DIR", &stats_dir);
    let mut l = Proc::spawn(listen);
    l.wait_for_stderr("listening on", WAIT);
    send(
        "uring",
        &[
            "--group",
            &g,
            "--topic",
            "/s",
            "--repeat",
            "50",
            "--autonumber",
            "s",
        ],
    );
    // the listener's counters are refreshed every 100 ms
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let mut stat = ringcast(
            "uring",
            &[
                "stat",
                "--interval",
                "0.1",
                "--dir",
                stats_dir.to_str().unwrap(),
            ],
        );
        stat.env_remove("RINGCAST_STATS_DIR");
        let f = Proc::spawn(stat).finish(WAIT);
        assert!(f.status.success(), "{}", f.stderr);
        let text = String::from_utf8_lossy(&f.stdout).to_string();
        // `  messages_received   50   <per second>`
        if text.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("messages_received") && w.next() == Some("50")
        }) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counters never showed 50 messages: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("running"), "{text}");
    send(
        "uring",
        &[
            "--group",
            &g,
            "--topic",
            "/s",
            "--repeat",
            "50",
            "--autonumber",
            "t",
        ],
    );
    let f = l.finish(WAIT);
    assert!(f.status.success());
    let left: Vec<_> = std::fs::read_dir(&stats_dir).unwrap().collect();
    assert!(left.is_empty(), "stats file not removed: {left:?}");
}

/// Acceptance (slow consumer, across processes): a publisher at a steady rate, a
/// listener that keeps up, and one whose handler sleeps 1 ms per message. Under
/// drop, conflate and disconnect the slow one neither slows the publisher (`offer`
/// is never refused) nor the other listener (it gets everything, in order); what
/// the slow one misses is reported exactly (drop, disconnect) or counted as
/// conflated (conflate). Under back-pressure it loses nothing, and the publisher's
/// `offer` reports being held back.
#[test]
fn slow_listener_under_each_policy() {
    const N: usize = 4000;
    let backend = BACKENDS[0];
    // `default`: no --slow-consumer at all. A diagnostic listener that cannot keep up
    // must not hold a production group back: it behaves as `drop`.
    for (i, policy) in ["drop", "conflate", "disconnect", "back-pressure", "default"]
        .into_iter()
        .enumerate()
    {
        let dir = TempDir::new(&format!("slow-{policy}"));
        let g = group(if i < 4 { 40 + i as u8 } else { 46 }, backend).to_string();
        let (fast_out, slow_out) = (dir.file("fast"), dir.file("slow"));
        let n = N.to_string();
        let fast = start_listener(
            backend,
            &[
                "--group",
                &g,
                "--count",
                &n,
                "--output",
                fast_out.to_str().unwrap(),
            ],
        );
        let slow_out_s = slow_out.to_str().unwrap();
        let mut args = vec![
            "--group",
            &g,
            "--count",
            &n,
            "--timeout",
            "3",
            "--handler-delay-us",
            "1000",
            "--output",
            slow_out_s,
        ];
        if policy != "default" {
            args.extend(["--slow-consumer", policy]);
        }
        let slow = start_listener(backend, &args);
        // Under back-pressure the publisher goes at twice the others' rate, so the
        // slow listener's backlog outgrows everything that can hold it on the way (the
        // receivers' windows, the rings) within the run, whatever their sizes: offer
        // must then refuse. (At 2000/s an 8 MiB publisher ring can absorb it.)
        let rate = if policy == "back-pressure" {
            "4000"
        } else {
            "2000"
        };
        let sent = send(
            backend,
            &[
                "--group",
                &g,
                "--topic",
                "/slow",
                "--repeat",
                &n,
                "--rate",
                rate,
                "--size",
                "8000",
                "--autonumber",
                "m",
            ],
        );
        let back_pressured = get(&summary(&sent, "sent "), "back-pressured");
        let f = fast.finish(WAIT);
        assert!(f.status.success(), "[{policy}] fast listener: {}", f.stderr);
        let fast_got = line_numbers(&std::fs::read(&fast_out).unwrap(), "m");
        assert_eq!(
            fast_got,
            (0..N as u64).collect::<Vec<_>>(),
            "[{policy}] fast"
        );
        let s = slow.finish(WAIT);
        check_slow(
            if policy == "default" { "drop" } else { policy },
            &s,
            &line_numbers(&std::fs::read(&slow_out).unwrap(), "m"),
            N as u64,
        );
        if policy == "back-pressure" {
            assert!(
                back_pressured > 0,
                "[{policy}] offer never held back: {}",
                sent.stderr
            );
        } else {
            assert_eq!(
                back_pressured, 0,
                "[{policy}] publisher slowed: {}",
                sent.stderr
            );
        }
    }
}

/// `send --flow-control tagged:N --rate-limit B` with a listener tagged N: everything
/// arrives, and bad strategy names are refused.
#[test]
fn tagged_flow_control_and_rate_limit_from_the_cli() {
    const N: usize = 2000;
    let backend = BACKENDS[1];
    let dir = TempDir::new("tagged");
    let out = dir.file("out");
    let g = group(44, backend).to_string();
    let n = N.to_string();
    let l = start_listener(
        backend,
        &[
            "--group",
            &g,
            "--count",
            &n,
            "--receiver-tag",
            "5",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let sent = send(
        backend,
        &[
            "--group",
            &g,
            "--topic",
            "/t",
            "--repeat",
            &n,
            "--autonumber",
            "--flow-control",
            "tagged:5",
            "--rate-limit",
            "1000000",
            "m",
        ],
    );
    let f = l.finish(WAIT);
    assert!(f.status.success(), "{}\n{}", f.stderr, sent.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), numbered("m", N));
    for bad in ["tagged:0", "tagged:x", "fastest"] {
        let o = ringcast(
            backend,
            &["send", "--topic", "/t", "--flow-control", bad, "x"],
        )
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad} accepted");
    }
}

/// `send --stamp` from standard input, `listen --format json --latency`: every line is
/// a JSON object with the documented fields; a non-UTF-8 payload comes as base64;
/// `--format hex` prints payloads in hex; `--stdin-raw` takes length-framed records.
#[test]
fn listen_formats_json_and_hex_and_the_latency_of_stamped_messages() {
    let backend = BACKENDS[0];
    let g = group(47, backend).to_string();
    let l = start_listener(
        backend,
        &[
            "--group",
            &g,
            "--format",
            "json",
            "--latency",
            "--count",
            "4",
        ],
    );
    let h = start_listener(backend, &["--group", &g, "--format", "hex", "--count", "4"]);
    // Three lines, then (framed) one binary record.
    let sent = Proc::spawn_with_input(
        ringcast(
            backend,
            &["send", "--group", &g, "--topic", "/j/x", "--stamp"],
        ),
        b"alpha\nbeta\r\ngamma\n".to_vec(),
    )
    .finish(WAIT);
    assert!(sent.status.success(), "{}", sent.stderr);
    let mut framed = 2u32.to_be_bytes().to_vec();
    framed.extend_from_slice(&[0xff, 0x00]);
    let sent = Proc::spawn_with_input(
        ringcast(
            backend,
            &["send", "--group", &g, "--topic", "/j/y", "--stdin-raw"],
        ),
        framed,
    )
    .finish(WAIT);
    assert!(sent.status.success(), "{}", sent.stderr);

    let f = l.finish(WAIT);
    assert!(f.status.success(), "{}", f.stderr);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&f.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, (v, want)) in lines.iter().zip(["alpha", "beta", "gamma"]).enumerate() {
        assert_eq!(v["topic"], "/j/x");
        assert_eq!(v["payload"], want, "{v}");
        assert_eq!(v["encoding"], "utf-8");
        assert_eq!(v["seq"], i as u64);
        let session = v["session"].as_str().unwrap();
        assert!(
            session.len() == 8 && u32::from_str_radix(session, 16).is_ok(),
            "{v}"
        );
        let source: std::net::SocketAddrV4 = v["source"].as_str().unwrap().parse().unwrap();
        assert_eq!(*source.ip(), Ipv4Addr::LOCALHOST);
        let (recv, sent, lat) = (
            v["recv_ns"].as_u64().unwrap(),
            v["sent_ns"].as_u64().unwrap(),
            v["latency_ns"].as_u64().unwrap(),
        );
        assert!(sent <= recv && lat == recv - sent, "{v}");
    }
    let bin = &lines[3];
    assert_eq!(bin["topic"], "/j/y");
    assert_eq!(bin["encoding"], "base64");
    assert_eq!(bin["payload"], "/wA=");
    assert!(bin.get("latency_ns").is_none(), "no stamp: {bin}");
    assert!(
        f.stderr.contains("latency: 3 stamped messages (1 without)"),
        "{}",
        f.stderr
    );

    let f = h.finish(WAIT);
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(
        String::from_utf8_lossy(&f.stdout),
        "616c706861\n62657461\n67616d6d61\nff00\n"
    );
}

/// Acceptance: `send` of 10,000 lines from standard input arrives complete and in
/// order; a truncated framed record is refused with exit code 2.
#[test]
fn send_from_standard_input_ten_thousand_lines() {
    const N: usize = 10_000;
    let backend = BACKENDS[1];
    let dir = TempDir::new("stdin");
    let out = dir.file("F");
    let g = group(48, backend).to_string();
    let l = start_listener(
        backend,
        &[
            "--group",
            &g,
            "--count",
            &N.to_string(),
            "--slow-consumer",
            "back-pressure",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let input = numbered("line", N);
    let s = Proc::spawn_with_input(
        ringcast(backend, &["send", "--group", &g, "--topic", "/in"]),
        input.clone().into_bytes(),
    )
    .finish(WAIT);
    assert!(s.status.success(), "{}", s.stderr);
    assert!(
        s.stderr.contains(&format!("sent {N} messages")),
        "{}",
        s.stderr
    );
    let f = l.finish(WAIT);
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), input);

    let f = Proc::spawn_with_input(
        ringcast(
            backend,
            &["send", "--group", &g, "--topic", "/in", "--stdin-raw"],
        ),
        vec![0, 0, 0, 9, b'x'],
    )
    .finish(WAIT);
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert!(f.stderr.contains("ends inside a record"), "{}", f.stderr);
}

/// In reliable mode `send` waits for its receivers and exits 1 when one did not
/// acknowledge everything in time (here a listener cut off after a few datagrams,
/// still alive and sending status).
#[test]
fn send_fails_when_a_receiver_does_not_acknowledge() {
    let backend = BACKENDS[0];
    let g = group(49, backend).to_string();
    let _l = start_listener(
        backend,
        &[
            "--group",
            &g,
            "--inject-faults",
            "blackout=5:60s",
            "--timeout",
            "30",
        ],
    );
    let f = Proc::spawn(ringcast(
        backend,
        &[
            "send",
            "--group",
            &g,
            "--topic",
            "/ack",
            // (within the sender's retransmit window — 15 datagrams of 64 KiB by
            // default — so flow control does not hold it until the silent receiver
            // times out and stops counting)
            "--repeat",
            "12",
            "--rate",
            "200",
            "--ack-timeout",
            "0.5",
            "m",
        ],
    ))
    .finish(WAIT);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("receivers did not acknowledge everything"),
        "{}",
        f.stderr
    );
}

/// `ringcast ping` against a `ringcast pong`: every round trip answered, percentiles
/// printed; without a pong, ping says so and exits 1.
#[test]
fn ping_and_pong_print_round_trip_percentiles() {
    let backend = BACKENDS[1];
    let g = group(50, backend).to_string();
    let mut pong = Proc::spawn(ringcast(
        backend,
        &["pong", "--group", &g, "--count", "300"],
    ));
    pong.wait_for_stderr("pong: echoing", WAIT);
    let f = Proc::spawn(ringcast(
        backend,
        &[
            "ping", "--group", &g, "--count", "200", "--warmup", "100", "--rate", "2000",
        ],
    ))
    .finish(WAIT);
    let out = String::from_utf8_lossy(&f.stdout);
    assert!(f.status.success(), "{out} {}", f.stderr);
    assert!(
        out.contains("200 round trips, 200 answered, 0 missing"),
        "{out}"
    );
    for p in ["min ", "p50 ", "p90 ", "p99 ", "p99.9 ", "max "] {
        assert!(out.contains(p), "{p} in {out}");
    }
    let p = pong.finish(WAIT);
    assert!(p.status.success(), "{}", p.stderr);
    assert!(p.stderr.contains("pong: echoed 300"), "{}", p.stderr);

    let g2 = group(51, backend).to_string();
    let f = Proc::spawn(ringcast(
        backend,
        &["ping", "--group", &g2, "--count", "5", "--timeout", "0.3"],
    ))
    .finish(WAIT);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("no pong answered"), "{}", f.stderr);
}

/// Checks Prometheus text against the exposition format's rules: every sample's
/// family has `# HELP` and `# TYPE` lines before it, names are valid, counters end in
/// `_total`, values are numbers, label values are quoted.
fn check_prometheus_rules(text: &str) {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            typed.insert(name.to_owned(), kind.to_owned());
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value of {line}"));
            let name = series.split('{').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(helped.contains(name), "no HELP before {line}");
            let kind = typed
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE before {line}"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                    for kv in inner.unwrap_or_else(|| panic!("{line}")).split(',') {
                        let (k, v) = kv.split_once('=').unwrap();
                        assert!(valid_name(k), "{line}");
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                }
            }
        }
    }
}

/// `stat --json` is one JSON document with each node's counters, rates and publisher
/// positions; `stat --prometheus` (printed, and served over HTTP) parses as the
/// Prometheus text format, with the same counts.
#[test]
fn stat_json_and_prometheus() {
    let backend = BACKENDS[0];
    let dir = TempDir::new("stat-json");
    let stats_dir = dir.file("shm");
    std::fs::create_dir_all(&stats_dir).unwrap();
    let d = stats_dir.to_str().unwrap();
    let g = group(52, backend).to_string();
    let mut listen = ringcast(
        backend,
        &["listen", "--group", &g, "--count", "100", "--timeout", "30"],
    );
    listen.env("RINGCAST_STATS_DIR", &stats_dir);
    let mut l = Proc::spawn(listen);
    l.wait_for_stderr("listening on", WAIT);
    send(
        backend,
        &["--group", &g, "--topic", "/st", "--repeat", "60", "m"],
    );
    let deadline = Instant::now() + WAIT;
    let doc = loop {
        let f = Proc::spawn(ringcast(
            backend,
            &["stat", "--json", "--interval", "0.1", "--dir", d],
        ))
        .finish(WAIT);
        assert!(f.status.success(), "{}", f.stderr);
        let doc: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
        if doc["nodes"][0]["counters"]["messages_received"] == 60 {
            break doc;
        }
        assert!(Instant::now() < deadline, "{doc}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let node = &doc["nodes"][0];
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(node["alive"], true);
    assert!(node["pid"].as_u64().unwrap() > 0);
    assert!(
        node["rates_per_second"]["messages_received"].is_number(),
        "{node}"
    );
    assert!(
        node["rates_per_second"].get("receivers").is_none(),
        "gauges have no rate"
    );
    assert_eq!(
        node["publisher"]["position"], 0,
        "the listener publishes nothing"
    );
    assert_eq!(node["counters"]["gaps"], 0);

    let f = Proc::spawn(ringcast(backend, &["stat", "--prometheus", "--dir", d])).finish(WAIT);
    assert!(f.status.success(), "{}", f.stderr);
    let text = String::from_utf8(f.stdout).unwrap();
    check_prometheus_rules(&text);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let got = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ringcast_messages_received_total")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        matches!(got.value, prometheus_parse::Value::Counter(v) if v == 60.0),
        "{got:?}"
    );
    assert_eq!(got.labels.get("backend"), Some("io_uring"), "{got:?}");

    // The same over HTTP (loopback only; port chosen by the kernel).
    let mut serve = Proc::spawn(ringcast(
        backend,
        &["stat", "--prometheus", "--serve", "127.0.0.1:0", "--dir", d],
    ));
    serve.wait_for_stderr("serving Prometheus metrics on http://", WAIT);
    let addr = {
        // The line just seen: "serving Prometheus metrics on http://127.0.0.1:PORT/metrics".
        let line = serve.last_stderr().to_owned();
        line.split("http://")
            .nth(1)
            .and_then(|r| r.strip_suffix("/metrics"))
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap()
    };
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    check_prometheus_rules(body);
    assert!(body.contains("ringcast_messages_received_total{"), "{body}");
    drop(serve);
    drop(l);
}

/// Acceptance: an idle `listen` (default configuration, no traffic) over 5 s uses at
/// most 1 % of a core and at most 100 voluntary context switches a second, all its
/// threads counted — and so does one with agent threads (`dedicated`, `shared`), the
/// default `auto` picks on hosts with three or more cores.
#[test]
fn an_idle_listen_costs_almost_nothing() {
    // The default (inline on this project's 2-core machines), and the agent-thread
    // modes `auto` picks on larger hosts.
    for threading in [None, Some("dedicated"), Some("shared")] {
        idle_listen_cost(threading);
    }
}

fn idle_listen_cost(threading: Option<&str>) {
    let backend = BACKENDS[1];
    let who = threading.unwrap_or("default");
    let g = group(53, backend).to_string();
    let mut args = vec!["--group", g.as_str()];
    if let Some(t) = threading {
        args.extend(["--threading", t]);
    }
    let l = start_listener(backend, &args);
    let pid = l.pid();
    let read = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f[11] + f[12];
        let mut switches = 0u64;
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let status =
                std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        (ticks, switches, Instant::now())
    };
    std::thread::sleep(Duration::from_secs(1));
    let (t0, s0, i0) = read();
    std::thread::sleep(Duration::from_secs(5));
    let (t1, s1, i1) = read();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let secs = (i1 - i0).as_secs_f64();
    let cpu = (t1 - t0) as f64 / hz / secs;
    let per_sec = (s1 - s0) as f64 / secs;
    l.interrupt();
    let f = l.finish(WAIT);
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        cpu <= 0.01,
        "[{who}] idle listen used {:.2} % of a core",
        cpu * 100.0
    );
    assert!(
        per_sec <= 100.0,
        "[{who}] idle listen: {per_sec:.0} voluntary switches/s"
    );
    eprintln!(
        "[{who}] idle listen: {:.2} % of a core, {per_sec:.0} voluntary switches/s",
        cpu * 100.0
    );
}

/// Acceptance (issue 9, 2): the two-terminal demo through a pipe. Each message's line
/// comes out of `listen`'s standard output (a pipe, read line by line) before the next
/// message is sent; SIGINT then ends it with its summary and exit code 0.
#[test]
fn listen_to_a_pipe_shows_each_message_before_the_next_is_sent() {
    use std::io::BufRead;
    let backend = BACKENDS[0];
    let g = group(54, backend).to_string();
    let mut child = ringcast(backend, &["listen", "--group", &g, "--topic", "/demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (etx, errs) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if etx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    while !errs
        .recv_timeout(Duration::from_millis(100))
        .is_ok_and(|l| l.contains("listening on"))
    {
        assert!(Instant::now() < deadline, "listen never joined");
    }
    for i in 0..5 {
        let msg = format!("hello{i}");
        send(backend, &["--group", &g, "--topic", "/demo", &msg]);
        let line = lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line for {msg}: {e}"));
        assert_eq!(line, msg, "line {i}, before message {} is sent", i + 1);
    }
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    let status = child.wait().unwrap();
    let rest: Vec<String> = errs.iter().collect();
    assert!(status.success(), "{status:?} {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("received 5 messages, gaps 0")),
        "summary after SIGINT: {rest:?}"
    );
}

/// Configuration from a file and the environment reaches the CLI's nodes, flags win
/// over both, and `ringcast config` says who set what: a listener whose group comes
/// from a TOML file (`RINGCAST_CONFIG`) and a sender whose group comes from
/// `RINGCAST_GROUP` meet on it; a wrong group in the environment is overridden by
/// `--group`; a bad value is an error naming the variable.
#[test]
fn configuration_from_a_file_and_the_environment_reaches_the_nodes() {
    for backend in BACKENDS {
        let dir = TempDir::new(&format!("config-{backend}"));
        let g = group(55, backend).to_string();
        let file = dir.file("node.toml");
        std::fs::write(&file, format!("group = \"{g}\"\nbatch = 16\n")).unwrap();
        let out = dir.file("out");
        let mut listen = ringcast(
            backend,
            &[
                "listen",
                "--topic",
                "/cfg",
                "--count",
                "20",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        listen.env("RINGCAST_CONFIG", &file);
        let mut l = Proc::spawn(listen);
        // On the file's group.
        l.wait_for_stderr(&format!("listening on {g}"), Duration::from_secs(20));
        let mut s = ringcast(
            backend,
            &[
                "send",
                "--topic",
                "/cfg",
                "--repeat",
                "10",
                "--autonumber",
                "env",
            ],
        );
        s.env("RINGCAST_GROUP", &g);
        let f = Proc::spawn(s).finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        // A wrong group in the environment, the right one as a flag: the flag wins.
        let mut s = ringcast(
            backend,
            &[
                "send",
                "--group",
                &g,
                "--topic",
                "/cfg",
                "--repeat",
                "10",
                "--autonumber",
                "flag",
            ],
        );
        s.env("RINGCAST_GROUP", group(56, backend).to_string());
        let f = Proc::spawn(s).finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        let f = l.finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        let want = numbered("env", 10) + &numbered("flag", 10);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want, "[{backend}]");

        // `config`: the file, the environment and the defaults, each named.
        let mut c = ringcast(
            backend,
            &["config", "--json", "--config", file.to_str().unwrap()],
        );
        c.env("RINGCAST_BATCH", "64")
            .env("RINGCAST_NAK_DELY", "1ms");
        let f = Proc::spawn(c).finish(WAIT);
        assert!(f.status.success(), "[{backend}] {}", f.stderr);
        let doc: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
        let find = |k: &str| {
            doc["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["key"] == k)
                .cloned()
                .unwrap()
        };
        assert_eq!(find("group")["value"], g.as_str());
        assert!(find("group")["origin"]
            .as_str()
            .unwrap()
            .starts_with("file "));
        assert_eq!(
            find("batch")["value"],
            "64",
            "the environment wins over the file"
        );
        assert_eq!(find("batch")["origin"], "env RINGCAST_BATCH");
        assert_eq!(find("backend")["origin"], "env RINGCAST_BACKEND");
        assert_eq!(find("nak_delay")["origin"], "default");
        assert_eq!(doc["unknown_env"], serde_json::json!(["RINGCAST_NAK_DELY"]));

        let mut c = ringcast(backend, &["listen", "--timeout", "0.1"]);
        c.env("RINGCAST_RETRANSMIT_WINDOW", "lots");
        let f = Proc::spawn(c).finish(WAIT);
        assert_eq!(f.status.code(), Some(2), "[{backend}] {}", f.stderr);
        assert!(
            f.stderr.contains("RINGCAST_RETRANSMIT_WINDOW") && f.stderr.contains("lots"),
            "[{backend}] {}",
            f.stderr
        );
    }
}

/// `send --last-value` reading standard input keeps the latest line for late joiners: a
/// `listen --format json` started after 1,000 lines gets the last one first, marked
/// `"snapshot": true`, then each line sent after it, in order, unmarked.
#[test]
fn a_late_listener_gets_the_last_value_of_send_first() {
    use std::io::Write;
    let backend = BACKENDS[1];
    let g = group(57, backend).to_string();
    let mut sender = ringcast(
        backend,
        &["send", "--group", &g, "--topic", "/lv/cli", "--last-value"],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn send");
    let mut input = sender.stdin.take().expect("stdin");
    for i in 0..1000 {
        writeln!(input, "v{i}").unwrap();
    }
    input.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let listener = start_listener(
        backend,
        &[
            "--group",
            &g,
            "--topic",
            "/lv/",
            "--format",
            "json",
            "--count",
            "11",
            "--timeout",
            "20",
        ],
    );
    // The snapshot comes before anything else is sent.
    std::thread::sleep(Duration::from_millis(500));
    for i in 1000..1010 {
        writeln!(input, "v{i}").unwrap();
    }
    input.flush().unwrap();
    let f = listener.finish(WAIT);
    drop(input);
    let _ = sender.wait();
    assert!(f.status.success(), "{}", f.stderr);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&f.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let got: Vec<(String, bool)> = lines
        .iter()
        .map(|v| {
            (
                v["payload"].as_str().unwrap_or("").to_string(),
                v["snapshot"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let mut want = vec![("v999".to_string(), true)];
    want.extend((1000..1010).map(|i| (format!("v{i}"), false)));
    assert_eq!(got, want, "{}", f.stderr);
    assert!(f.stderr.contains("snapshot values 1"), "{}", f.stderr);
}

/// Acceptance (issue 11): `ringcast keygen` writes a key file; `send --key-file` is
/// heard by a listener with the same file, byte-exact and in order, and by nobody
/// else: a listener with another group's key and one without a key get nothing, and
/// the publisher counts only the keyed listener as a receiver.
#[test]
fn a_group_key_lets_only_its_holders_hear_the_group() {
    let backend = BACKENDS[0];
    let dir = TempDir::new("keys");
    let keygen = |name: &str| {
        let out = ringcast(backend, &["keygen"]).output().expect("keygen");
        assert!(out.status.success());
        let path = dir.file(name);
        std::fs::write(&path, &out.stdout).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (ours, theirs) = (keygen("ours.key"), keygen("theirs.key"));
    let text = std::fs::read_to_string(&ours).unwrap();
    assert!(text.starts_with("ringcast-key 1\n"), "{text}");
    let g = group(58, backend).to_string();
    let base = ["--group", g.as_str(), "--topic", "/sealed"];
    let listen = |extra: &[&str], count: &str, timeout: &str| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--count", count, "--timeout", timeout]);
        start_listener(backend, &a)
    };
    let keyed = listen(&["--key-file", &ours], "200", "30");
    let wrong = listen(&["--key-file", &theirs], "1", "4");
    let open = listen(&[], "1", "4");
    let mut a: Vec<&str> = base.to_vec();
    a.extend_from_slice(&[
        "--key-file",
        &ours,
        "--repeat",
        "200",
        "--autonumber",
        "--wait-receivers",
        "1",
        "secret",
    ]);
    let s = send(backend, &a);
    let k = keyed.finish(WAIT);
    assert!(k.status.success(), "{}", k.stderr);
    let got: Vec<String> = String::from_utf8_lossy(&k.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("secret{i}")).collect();
    assert_eq!(got, want);
    for other in [wrong.finish(WAIT), open.finish(WAIT)] {
        assert!(other.stdout.is_empty(), "heard: {:?}", other.stdout);
        assert!(
            other.stderr.contains("received 0 messages"),
            "{}",
            other.stderr
        );
    }
    // Only the key holder reports to the publisher: 1 receiver when it waited, and at
    // the end 1 — or 0 once that listener, done after its 200, has left.
    assert!(s.stderr.contains("1 receivers"), "{}", s.stderr);
    let m = ringcast_e2e::summary(&s, "sent ");
    assert!(ringcast_e2e::get(&m, "receivers") <= 1, "{}", s.stderr);
    // a key file that does not parse is refused up front
    let bad = dir.file("bad.key");
    std::fs::write(&bad, "ringcast-key 1\nkey zz\n").unwrap();
    let out = ringcast(backend, &["listen", "--key-file", &bad.to_string_lossy()])
        .output()
        .expect("listen");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key file"));
}
