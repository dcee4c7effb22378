//! `ringcast record` and `ringcast replay` across processes (issue 12, acceptance 5):
//! a million messages recorded byte-exact and replayed in order, a recorder killed
//! with SIGKILL mid-run leaving every complete message, time ranges and topics.

use std::path::Path;
use std::time::{Duration, Instant};

use ringcast::record::Recording;
use ringcast_e2e::{group, ringcast, start_listener, Finished, Proc, TempDir};

const WAIT: Duration = Duration::from_secs(120);
/// Payloads are `PREFIX{n}` padded with spaces to this many bytes (`send --size`).
const SIZE: usize = 100;

fn padded(prefix: &str, n: u64) -> Vec<u8> {
    let mut v = format!("{prefix}{n}").into_bytes();
    v.resize(v.len().max(SIZE), b' ');
    v
}

/// Starts `ringcast record ARGS` and waits until it listens.
fn start_recorder(backend: &str, args: &[&str]) -> Proc {
    let mut full = vec!["record"];
    full.extend_from_slice(args);
    let mut p = Proc::spawn(ringcast(backend, &full));
    p.wait_for_stderr("recording ", Duration::from_secs(20));
    p
}

fn run(backend: &str, args: &[&str]) -> Proc {
    Proc::spawn(ringcast(backend, args))
}

/// `ringcast replay --speed max` of `dir` to group `g`, once a receiver reports; it
/// must succeed.
fn replay_max(backend: &str, g: &str, dir: &Path) -> Finished {
    let d = dir.to_str().unwrap();
    let args = [
        "replay",
        "--group",
        g,
        "--speed",
        "max",
        "--wait-receivers",
        "1",
        d,
    ];
    let rep = run(backend, &args).finish(WAIT);
    assert_ok(&rep, "replay");
    rep
}

fn assert_ok(f: &Finished, what: &str) {
    assert!(f.status.success(), "{what}: {:?} {}", f.status, f.stderr);
}

/// The recording's index is what `Recording::open` promises: an entry every 1024
/// records, each naming the record it points at (a recorder killed between a
/// record and its entry may leave one out).
fn check_index(rec: &Recording) {
    let want = rec.records().div_ceil(ringcast::record::INDEX_EVERY);
    let got = rec.index().len() as u64;
    assert!(
        got == want || got + 1 == want,
        "{got} index entries for {} records",
        rec.records()
    );
    for e in rec.index() {
        let r = rec
            .iter_from_record(e.record)
            .next()
            .expect("an index entry names a record");
        assert_eq!(r.record, e.record);
        assert_eq!(r.receive_ns, e.receive_ns);
    }
    // Seeking by time lands on the first record at or after it.
    let times: Vec<u64> = rec.iter().map(|r| r.receive_ns).collect();
    for k in [0, times.len() / 3, times.len() - 1] {
        let r = rec.iter_from_time(times[k]).next().expect("a record");
        assert_eq!(r.receive_ns, times[k]);
        assert!(r.record as usize <= k);
    }
}

/// Acceptance: record 1M messages on two topics; the recording holds each byte-exact,
/// in each topic's order, with a consistent index; `replay --speed max` publishes them
/// again and a second recorder gets the same messages in the same order.
#[test]
fn a_million_messages_recorded_byte_exact_and_replayed_in_order_at_max_speed() {
    let backend = "uring";
    let dir = TempDir::new("record-1m");
    let (first, second) = (dir.file("first"), dir.file("second"));
    let g1 = group(60, backend).to_string();
    let g2 = group(61, backend).to_string();
    const HALF: u64 = 500_000;
    let rec = start_recorder(
        backend,
        &[
            "--group",
            &g1,
            "--topic",
            "/rec/",
            "--out",
            first.to_str().unwrap(),
            "--count",
            &(2 * HALF).to_string(),
        ],
    );
    // Two publishers at once, one topic each: the recording interleaves them.
    let senders: Vec<Proc> = ["a", "b"]
        .iter()
        .map(|t| {
            run(
                backend,
                &[
                    "send",
                    "--group",
                    &g1,
                    "--topic",
                    &format!("/rec/{t}"),
                    "--repeat",
                    &HALF.to_string(),
                    "--autonumber",
                    "--size",
                    &SIZE.to_string(),
                    "--wait-receivers",
                    "1",
                    &t.to_uppercase(),
                ],
            )
        })
        .collect();
    for s in senders {
        assert_ok(&s.finish(WAIT), "send");
    }
    let f = rec.finish(WAIT);
    assert_ok(&f, "record");
    assert!(
        f.stderr.contains("recorded 1000000 messages"),
        "{}",
        f.stderr
    );

    let r = Recording::open(&first).expect("open the recording");
    assert_eq!(r.records(), 2 * HALF);
    assert_eq!(r.dropped_index_entries(), 0);
    let mut next = [0u64; 2];
    let mut last_seq: [Option<(u64, u64)>; 2] = [None, None];
    for (i, m) in r.iter().enumerate() {
        assert_eq!(m.record, i as u64);
        let k = match m.topic {
            b"/rec/a" => 0,
            b"/rec/b" => 1,
            t => panic!("record {i}: topic {:?}", String::from_utf8_lossy(t)),
        };
        let prefix = ["A", "B"][k];
        assert_eq!(
            m.payload,
            &padded(prefix, next[k])[..],
            "record {i}: message {} of /rec/{}",
            next[k],
            prefix
        );
        next[k] += 1;
        // One session per sender, sequence numbers rising by one.
        if let Some((session, seq)) = last_seq[k] {
            assert_eq!((m.session, m.seq), (session, seq + 1), "record {i}");
        }
        last_seq[k] = Some((m.session, m.seq));
        assert!(m.receive_ns > 0);
    }
    assert_eq!(next, [HALF, HALF]);
    check_index(&r);
    let sum = run(backend, &["replay", first.to_str().unwrap(), "--summary"]).finish(WAIT);
    assert_ok(&sum, "replay --summary");
    let text = String::from_utf8_lossy(&sum.stdout);
    assert!(text.contains("1000000 records"), "{text}");
    assert!(
        text.contains("500000  /rec/a") && text.contains("500000  /rec/b"),
        "{text}"
    );

    // Replay it as fast as a lossless recorder takes it: same messages, same order.
    let rec2 = start_recorder(
        backend,
        &[
            "--group",
            &g2,
            "--out",
            second.to_str().unwrap(),
            "--count",
            &(2 * HALF).to_string(),
        ],
    );
    let rep = replay_max(backend, &g2, &first);
    assert!(
        rep.stderr.contains("replayed 1000000 messages"),
        "{}",
        rep.stderr
    );
    assert_ok(&rec2.finish(WAIT), "second record");
    let again = Recording::open(&second).expect("open the replayed recording");
    assert_eq!(again.records(), 2 * HALF);
    let mut seq = None;
    for (a, b) in r.iter().zip(again.iter()) {
        assert_eq!(
            (a.topic, a.payload),
            (b.topic, b.payload),
            "record {}",
            a.record
        );
        // The replay is one session (the replaying node's), in order.
        if let Some((session, s)) = seq {
            assert_eq!((b.session, b.seq), (session, s + 1), "record {}", b.record);
        }
        seq = Some((b.session, b.seq));
    }
}

/// Acceptance: a recorder killed with SIGKILL in the middle of a run leaves a
/// recording that opens, holds every message it completed byte-exact with a
/// consistent index; `replay --speed max` re-delivers exactly those, in order.
#[test]
fn a_recorder_killed_mid_run_leaves_every_complete_message() {
    let backend = "mmsg";
    let dir = TempDir::new("record-kill");
    let out = dir.file("rec");
    let g1 = group(62, backend).to_string();
    let g2 = group(63, backend).to_string();
    let total: u64 = 1_000_000;
    let rec = start_recorder(
        backend,
        &[
            "--group",
            &g1,
            "--topic",
            "/k",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let sender = run(
        backend,
        &[
            "send",
            "--group",
            &g1,
            "--topic",
            "/k",
            "--repeat",
            &total.to_string(),
            "--autonumber",
            "--size",
            &SIZE.to_string(),
            "--wait-receivers",
            "1",
            "--ack-timeout",
            "0",
            "MSG",
        ],
    );
    // Kill it once it is well into the run.
    let deadline = Instant::now() + WAIT;
    loop {
        let n = Recording::open(&out).map_or(0, |r| r.records());
        if n >= 100_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recorder recorded {n} in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = rec.stop(); // SIGKILL
    assert!(!killed.status.success(), "{:?}", killed.status);
    let _ = sender.stop();

    let r = Recording::open(&out).expect("a killed recorder's recording opens");
    let n = r.records();
    assert!(
        (100_000..total).contains(&n),
        "{n} records: the recorder was not killed mid-run"
    );
    check_recording(&out, n);
    check_index(&r);

    // Replay what it holds into a listener: exactly those messages, in order.
    let listened = dir.file("listened");
    let l = start_listener(
        backend,
        &[
            "--group",
            &g2,
            "--topic",
            "/k",
            "--count",
            &n.to_string(),
            "--slow-consumer",
            "back-pressure",
            "--output",
            listened.to_str().unwrap(),
        ],
    );
    replay_max(backend, &g2, &out);
    assert_ok(&l.finish(WAIT), "listen");
    let got = std::fs::read(&listened).unwrap();
    let mut want = Vec::with_capacity(got.len());
    for i in 0..n {
        want.extend_from_slice(&padded("MSG", i));
        want.push(b'\n');
    }
    assert!(
        got == want,
        "the listener's {} bytes differ from the {} expected",
        got.len(),
        want.len()
    );
}

/// Every record `i` of the recording at `dir` is message `MSG{i}`, byte-exact.
fn check_recording(dir: &Path, n: u64) {
    let r = Recording::open(dir).unwrap();
    let mut count = 0;
    for (i, m) in r.iter().enumerate() {
        assert_eq!(m.topic, b"/k");
        assert_eq!(m.payload, &padded("MSG", i as u64)[..], "record {i}");
        count += 1;
    }
    assert_eq!(count, n);
}

/// `--from`/`--to` pick records by receive time, `--topic` by prefix, at the recorded
/// pace; a second recording into the same directory is refused.
#[test]
fn replay_picks_a_time_range_and_topics_and_record_refuses_to_overwrite() {
    let backend = "uring";
    let dir = TempDir::new("record-range");
    let out = dir.file("rec");
    let g1 = group(64, backend).to_string();
    let g2 = group(65, backend).to_string();
    let rec = start_recorder(
        backend,
        &[
            "--group",
            &g1,
            "--out",
            out.to_str().unwrap(),
            "--count",
            "20",
        ],
    );
    // Ten messages on each of two topics, 20 per second: the recording spans ~1 s.
    let senders: Vec<Proc> = ["/x", "/y"]
        .iter()
        .map(|t| {
            run(
                backend,
                &[
                    "send",
                    "--group",
                    &g1,
                    "--topic",
                    t,
                    "--repeat",
                    "10",
                    "--autonumber",
                    "--rate",
                    "10",
                    "--wait-receivers",
                    "1",
                    t,
                ],
            )
        })
        .collect();
    for s in senders {
        assert_ok(&s.finish(WAIT), "send");
    }
    assert_ok(&rec.finish(WAIT), "record");
    let r = Recording::open(&out).unwrap();
    assert_eq!(r.records(), 20);
    let first = r.iter().next().unwrap().receive_ns;
    let (from, to) = (first + 300_000_000, first + 700_000_000);
    let want: Vec<Vec<u8>> = r
        .iter()
        .filter(|m| (from..to).contains(&m.receive_ns) && m.topic == b"/y")
        .map(|m| m.payload.to_vec())
        .collect();
    assert!(
        !want.is_empty(),
        "no /y message in 300..700 ms of the recording"
    );

    let listened = dir.file("listened");
    let l = start_listener(
        backend,
        &[
            "--group",
            &g2,
            "--count",
            &want.len().to_string(),
            "--timeout",
            "5",
            "--output",
            listened.to_str().unwrap(),
        ],
    );
    let rep = run(
        backend,
        &[
            "replay",
            "--group",
            &g2,
            "--from",
            "+300ms",
            "--to",
            &to.to_string(),
            "--topic",
            "/y",
            "--wait-receivers",
            "1",
            out.to_str().unwrap(),
        ],
    )
    .finish(WAIT);
    assert_ok(&rep, "replay");
    assert!(
        rep.stderr
            .contains(&format!("replayed {} messages", want.len())),
        "{}",
        rep.stderr
    );
    assert_ok(&l.finish(WAIT), "listen");
    let got = std::fs::read_to_string(&listened).unwrap();
    let want_text: String = want
        .iter()
        .map(|p| format!("{}\n", String::from_utf8_lossy(p)))
        .collect();
    assert_eq!(got, want_text);

    // The directory holds a recording: a second recorder refuses it (exit 2).
    let again = run(
        backend,
        &[
            "record",
            "--group",
            &g1,
            "--out",
            out.to_str().unwrap(),
            "--count",
            "1",
        ],
    )
    .finish(WAIT);
    assert_eq!(again.status.code(), Some(2), "{}", again.stderr);
    assert!(
        again.stderr.contains("already holds a recording"),
        "{}",
        again.stderr
    );
    // And a directory without one is an error that says so.
    let none = run(backend, &["replay", dir.file("nothing").to_str().unwrap()]).finish(WAIT);
    assert_eq!(none.status.code(), Some(2), "{}", none.stderr);
    assert!(none.stderr.contains("no recording"), "{}", none.stderr);
}
