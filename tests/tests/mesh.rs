//! The mesh across network namespaces (three hosts on a bridge, see
//! `ringcast_e2e::netns`): discovery and membership, and network IDs. Needs root and
//! `ip`; otherwise the tests skip with a message.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringcast_e2e::netns::{Lab, A, B, C};
use ringcast_e2e::{brief, numbered, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// Discovery group, data group of test `id`.
fn groups(id: u8) -> (String, String) {
    (
        format!("239.255.78.{id}:{}", 42600 + u16::from(id)),
        format!("239.255.79.{id}:{}", 42700 + u16::from(id) * 2),
    )
}

/// A long-running `ringcast listen` on `host` as node `id`, on discovery group `disc`.
fn node(lab: &Lab, host: usize, id: u64, disc: &str, group: &str, network: &str) -> Proc {
    let mut cmd = Lab::ringcast(&[
        "listen",
        "--iface",
        &lab.iface(host),
        "--group",
        group,
        "--node-id",
        &id.to_string(),
        "--node-name",
        &format!("node-{id}"),
    ]);
    cmd.env("RINGCAST_DISCOVERY", disc)
        .env("RINGCAST_NETWORK", network);
    let mut p = lab.run(host, cmd);
    p.wait_for_stderr("listening on", Duration::from_secs(20));
    p
}

/// `ringcast peers --json` on `host` (listening 1 s): the ids it lists.
fn peers_once(lab: &Lab, host: usize, disc: &str, extra: &[&str]) -> (Vec<u64>, String) {
    let mut args = vec!["peers", "--json", "--wait", "1", "--iface"];
    let iface = lab.iface(host);
    args.push(&iface);
    args.extend_from_slice(extra);
    let mut cmd = Lab::ringcast(&args);
    cmd.env("RINGCAST_DISCOVERY", disc);
    let f = lab.run(host, cmd).finish(WAIT);
    let out = String::from_utf8_lossy(&f.stdout).to_string();
    let doc: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("peers --json on {host}: {e}: {out:?} {}", brief(&f.stderr)));
    let mut ids: Vec<u64> = doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    (ids, out)
}

/// `ringcast peers --watch --json` on `host`, its lines arriving on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<(Instant, serde_json::Value)>,
    /// Lines read while waiting for another node's event, oldest first.
    backlog: std::cell::RefCell<std::collections::VecDeque<(Instant, serde_json::Value)>>,
}

impl Watch {
    fn start(lab: &Lab, host: usize, disc: &str, dir: &std::path::Path) -> Watch {
        let mut cmd = Lab::ringcast(&[
            "peers",
            "--watch",
            "--json",
            "--iface",
            &lab.iface(host),
            "--node-id",
            "999",
            "--dir",
            dir.to_str().unwrap(),
        ]);
        cmd.env("RINGCAST_DISCOVERY", disc);
        let mut c = lab.command(host, &cmd);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn peers --watch");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send((Instant::now(), v));
                }
            }
        });
        Watch {
            child,
            lines,
            backlog: Default::default(),
        }
    }

    /// Waits up to `timeout` for an event about node `id`; returns when it was read
    /// and the event.
    fn next_about(&self, id: u64, timeout: Duration) -> Option<(Instant, serde_json::Value)> {
        let about =
            |v: &serde_json::Value| v["peer"]["id"].as_str() == Some(id.to_string().as_str());
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(|(_, v)| about(v)) {
            return backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, v) = self.lines.recv_timeout(left).ok()?;
            if about(&v) {
                return Some((at, v));
            }
            backlog.push_back((at, v));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Acceptance (issue 10, 1): three hosts see each other within a second of starting;
/// `kill -9` of one is `left`/`expired` at the others within (interval × multiplier)
/// plus 1 s; a clean stop is `left`/`left` at once; a restart with the same id joins
/// again.
#[test]
fn three_hosts_find_each_other_and_see_them_leave() {
    let Some(lab) = Lab::new("mesh") else {
        return;
    };
    let (disc, group) = groups(1);
    let mut nodes = vec![
        Some(node(&lab, A, 1, &disc, &group, "")),
        Some(node(&lab, B, 2, &disc, &group, "")),
        Some(node(&lab, C, 3, &disc, &group, "")),
    ];
    // `peers` is a node of its own: on each host it must list the nodes of the two
    // other hosts (and the one next to it) after listening 1 s.
    for (host, me) in [(A, 1u64), (B, 2), (C, 3)] {
        let (ids, out) = peers_once(&lab, host, &disc, &[]);
        let want: Vec<u64> = [1u64, 2, 3].into_iter().filter(|&i| i != me).collect();
        for w in &want {
            assert!(
                ids.contains(w),
                "host {host} within 1 s: {ids:?} (want {want:?}) {out}"
            );
        }
    }
    let dir = ringcast_e2e::TempDir::new("mesh-dir");
    let watch = Watch::start(&lab, A, &disc, &dir.file(""));
    for id in [1, 2, 3] {
        let (_, v) = watch
            .next_about(id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the watch saw no join of {id}"));
        assert_eq!(v["event"], "joined", "{v}");
    }
    // zyredir: one JSON file per online peer, named by its id.
    let file = |id: u64| dir.file(&format!("{id}.json"));
    for id in [1u64, 2, 3] {
        let body = std::fs::read_to_string(file(id))
            .unwrap_or_else(|e| panic!("no directory file for {id}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["name"], format!("node-{id}"), "{body}");
    }
    // kill -9 of node 2: no leave message, so it expires.
    let killed_at = Instant::now();
    drop(nodes[1].take()); // Proc's drop kills (SIGKILL) and reaps
    let (at, v) = watch
        .next_about(2, Duration::from_secs(15))
        .expect("node 2 never expired");
    assert_eq!(
        (v["event"].as_str(), v["reason"].as_str()),
        (Some("left"), Some("expired")),
        "{v}"
    );
    let took = at - killed_at;
    assert!(
        took <= Duration::from_secs(6) + Duration::from_millis(500),
        "expired after {took:?} (interval 1 s × 5 + 1 s)"
    );
    assert!(
        took >= Duration::from_secs(3),
        "expired too early: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!file(2).exists(), "an expired peer's file is removed");
    // A clean stop of node 3: its leave message.
    let stopped_at = Instant::now();
    let c = nodes[2].take().unwrap();
    c.interrupt();
    let f = c.finish(WAIT);
    assert!(f.status.success(), "{}", brief(&f.stderr));
    let (at, v) = watch
        .next_about(3, Duration::from_secs(10))
        .expect("node 3's leave never seen");
    assert_eq!(
        (v["event"].as_str(), v["reason"].as_str()),
        (Some("left"), Some("left")),
        "{v}"
    );
    assert!(
        at - stopped_at < Duration::from_secs(3),
        "a leave is at once: {:?}",
        at - stopped_at
    );
    // Node 2 restarts with the same id: joined again.
    nodes[1] = Some(node(&lab, B, 2, &disc, &group, ""));
    let (_, v) = watch
        .next_about(2, Duration::from_secs(5))
        .expect("restarted node 2 not seen");
    assert_eq!(v["event"], "joined", "{v}");
    drop(nodes);
}

/// Acceptance (issue 10, 2): two network IDs on one group and port across hosts:
/// no message and no peer crosses; the same network gets everything.
#[test]
fn two_network_ids_across_hosts_see_nothing_of_each_other() {
    let Some(lab) = Lab::new("netid") else {
        return;
    };
    let (disc, group) = groups(2);
    let listen = |host: usize, network: &str| {
        let mut cmd = Lab::ringcast(&[
            "listen",
            "--iface",
            &lab.iface(host),
            "--group",
            &group,
            "--network",
            network,
            "--topic",
            "/n",
            "--count",
            "1000",
            "--timeout",
            "4",
        ]);
        cmd.env("RINGCAST_DISCOVERY", &disc);
        let mut p = lab.run(host, cmd);
        p.wait_for_stderr("listening on", Duration::from_secs(20));
        p
    };
    let blue = listen(B, "blue");
    let red = listen(C, "red");
    let mut send = Lab::ringcast(&[
        "send",
        "--iface",
        &lab.iface(A),
        "--group",
        &group,
        "--network",
        "red",
        "--topic",
        "/n",
        "--repeat",
        "1000",
        "--autonumber",
        "MSG",
        "--ack-timeout",
        "2",
    ]);
    send.env("RINGCAST_DISCOVERY", &disc);
    let s = lab.run(A, send).finish(WAIT);
    assert!(s.status.success(), "send: {}", brief(&s.stderr));
    let r = red.finish(WAIT);
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        numbered("MSG", 1000),
        "red gets all"
    );
    let b = blue.finish(WAIT);
    assert!(
        b.stdout.is_empty(),
        "nothing reaches blue: {}",
        brief(&b.stderr)
    );
    assert!(
        b.stderr.contains("received 0 messages"),
        "{}",
        brief(&b.stderr)
    );
    // Peers: a blue observer next to a red node sees nobody; a red one sees it.
    let red_node = node(&lab, A, 7, &disc, &group, "red");
    let (blue_ids, _) = {
        let mut cmd = Lab::ringcast(&[
            "peers",
            "--json",
            "--wait",
            "1",
            "--iface",
            &lab.iface(B),
            "--network",
            "blue",
        ]);
        cmd.env("RINGCAST_DISCOVERY", &disc);
        let f = lab.run(B, cmd).finish(WAIT);
        (f.stdout, f.stderr)
    };
    let doc: serde_json::Value = serde_json::from_slice(&blue_ids).unwrap_or(serde_json::json!({}));
    assert!(
        doc["peers"].as_array().is_none_or(|p| p.is_empty()),
        "blue sees no red node: {doc}"
    );
    drop(red_node);
}

/// Acceptance (issue 10, 6): Zyre's zpinger on three hosts (`engine/examples/zpinger.rs`):
/// each node whispers "hello" to every peer that enters and shouts "hello" to GLOBAL
/// for every whisper it gets, so each host prints a whisper and shouts from both others.
#[test]
fn the_whisper_shout_example_runs_on_three_hosts() {
    let Some(lab) = Lab::new("zping") else {
        return;
    };
    let example = ringcast_e2e::ringcast_bin()
        .parent()
        .expect("target dir")
        .join("examples/zpinger");
    assert!(
        example.exists(),
        "build the example first: {}",
        example.display()
    );
    let (disc, group) = groups(3);
    let names = ["alpha", "bravo", "charlie"];
    let runs: Vec<Proc> = [A, B, C]
        .into_iter()
        .zip(names)
        .map(|(host, name)| {
            let mut cmd = std::process::Command::new(&example);
            cmd.arg("4")
                .env("RINGCAST_IFACE", lab.iface(host))
                .env("RINGCAST_GROUP", &group)
                .env("RINGCAST_DISCOVERY", &disc)
                .env("RINGCAST_TTL", "1")
                .env("RINGCAST_NODE_NAME", name);
            lab.run(host, cmd)
        })
        .collect();
    for (p, me) in runs.into_iter().zip(names) {
        let f = p.finish(WAIT);
        let out = String::from_utf8_lossy(&f.stdout).to_string();
        assert!(f.status.success(), "[{me}] {out} {}", brief(&f.stderr));
        for other in names.iter().filter(|n| **n != me) {
            for want in [
                format!("[{me}] {other} entered"),
                format!("[{me}] whisper from {other}: hello"),
                format!("[{me}] shout from {other} in GLOBAL: hello"),
            ] {
                assert!(out.contains(&want), "[{me}] no {want:?} in:\n{out}");
            }
        }
        assert!(
            !out.contains(&format!("whisper from {me}")),
            "[{me}] whispered itself"
        );
    }
}

/// Acceptance (issue 10, 3): the bridge drops all multicast, as most clouds do.
/// Without seeds a node says it hears nobody. With `--seed` (host a's address), the
/// nodes find each other through it and 100,000 × 1 KB reach two subscribers
/// complete and in order by unicast: first with every node switching by itself
/// (transport auto), then forced (`--unicast`) with 5 % of the unicast lost, repaired.
#[test]
fn without_multicast_seeds_carry_discovery_and_data_by_unicast() {
    const N: u64 = 100_000;
    let t0 = Instant::now();
    let Some(lab) = Lab::new("unicast") else {
        return;
    };
    if lab.block_multicast(0).is_none() {
        return;
    }
    let (disc, group) = groups(4);
    // No seeds: nobody heard, and the node says so.
    let mut cmd = Lab::ringcast(&["peers", "--json", "--wait", "3", "--iface", &lab.iface(B)]);
    cmd.env("RINGCAST_DISCOVERY", &disc);
    let f = lab.run(B, cmd).finish(WAIT);
    let doc: serde_json::Value = serde_json::from_slice(&f.stdout).expect("peers --json");
    assert_eq!(doc["peers"].as_array().map(Vec::len), Some(0), "{doc}");
    assert!(
        f.stderr.contains("hears nobody") && f.stderr.contains("--seed"),
        "no clear report: {}",
        brief(&f.stderr)
    );
    let seed = lab.addr(A).to_string();
    let dir = ringcast_e2e::TempDir::new("mesh-unicast");
    for (round, loss, forced) in [(1, 0, false), (2, 5, true)] {
        lab.block_multicast(loss).expect("nft");
        let n = N.to_string();
        let files = [
            dir.file(&format!("a{round}")),
            dir.file(&format!("b{round}")),
        ];
        let listen = |host: usize, path: &std::path::Path| {
            let mut args = vec![
                "listen",
                "--iface",
                &lab.iface(host),
                "--group",
                &group,
                "--topic",
                "/u",
                "--count",
                &n,
                "--timeout",
                "30",
                "--seed",
                &seed,
                "--output",
                path.to_str().unwrap(),
            ]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
            if forced {
                args.push("--unicast".into());
            }
            let mut cmd = Lab::ringcast(&args);
            cmd.env("RINGCAST_DISCOVERY", &disc);
            let mut p = lab.run(host, cmd);
            p.wait_for_stderr("listening on", Duration::from_secs(20));
            p
        };
        let la = listen(A, &files[0]);
        let lb = listen(B, &files[1]);
        let iface_c = lab.iface(C);
        let mut args = vec![
            "send",
            "--iface",
            &iface_c,
            "--group",
            &group,
            "--topic",
            "/u/x",
            "--repeat",
            &n,
            "--size",
            "1024",
            "--autonumber",
            "--seed",
            &seed,
            "--wait-receivers",
            "2",
        ];
        if forced {
            args.push("--unicast");
        }
        args.push("MSG");
        let mut cmd = Lab::ringcast(&args);
        cmd.env("RINGCAST_DISCOVERY", &disc);
        let s = lab.run(C, cmd).finish(WAIT);
        eprintln!("unicast {round}: {}", s.stderr.trim());
        let dropped = lab.dropped_by_rule();
        eprintln!("unicast {round}: the bridge dropped {dropped:?} (multicast UDP, unicast UDP, other multicast)");
        assert!(s.status.success(), "send failed: {}", brief(&s.stderr));
        if !forced {
            assert!(
                s.stderr.contains("sending by unicast"),
                "the sender did not say it switched: {}",
                brief(&s.stderr)
            );
        }
        let sm = ringcast_e2e::summary(&s, "sent ");
        assert_eq!(ringcast_e2e::get(&sm, "sent"), N);
        // Forced unicast sends no multicast at all; auto tried it first.
        assert_eq!(
            dropped.first().is_some_and(|&m| m > 0),
            !forced,
            "multicast dropped: {dropped:?}"
        );
        if loss > 0 {
            assert!(ringcast_e2e::get(&sm, "retransmits") > 0, "{sm:?}");
            assert!(dropped.get(1).is_some_and(|&u| u > 0), "no unicast dropped");
        }
        let done: Vec<_> = [("a", la), ("b", lb)]
            .into_iter()
            .map(|(name, l)| (name, l.finish(WAIT)))
            .collect();
        for ((name, f), path) in done.into_iter().zip(&files) {
            assert!(f.status.success(), "listener {name}: {}", brief(&f.stderr));
            let m = ringcast_e2e::summary(&f, "received ");
            assert_eq!(ringcast_e2e::get(&m, "received"), N, "{name}");
            assert_eq!(ringcast_e2e::get(&m, "lost"), 0, "{name}");
            if loss > 0 {
                assert!(ringcast_e2e::get(&m, "naks sent") > 0, "{name}: {m:?}");
            }
            let out = std::fs::read(path).expect("listener output");
            let got = ringcast_e2e::line_numbers(&out, "MSG");
            assert!(
                got.iter().copied().eq(0..N),
                "{name}: {} messages, not MSG0..MSG{} in order",
                got.len(),
                N - 1
            );
        }
    }
    eprintln!(
        "without_multicast_seeds_carry_discovery_and_data_by_unicast took {:?}",
        t0.elapsed()
    );
}
