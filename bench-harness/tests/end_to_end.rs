//! A tiny end-to-end run of each system through the real harness binary: the
//! harness isolates the network (as root), starts a publisher and a subscriber
//! process per configuration, and `results.json` must show verified deliveries.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const MESSAGES: u64 = 2_000;

fn run(systems: &str, variants: Option<&str>, tag: &str) -> Vec<Value> {
    run_mode(systems, variants, tag, &["--modes", "full"], MESSAGES)
}

/// Round trips: pings at 5k/s, each echoed back on the second channel.
fn run_rtt(systems: &str, variants: Option<&str>, tag: &str) -> Vec<Value> {
    let rows = run_mode(
        systems,
        variants,
        tag,
        &[
            "--modes",
            "rtt",
            "--rtt-rate",
            "5000",
            "--rate-secs",
            "0.1",
            "--all-variants",
        ],
        RTT_MESSAGES,
    );
    for r in &rows {
        assert_eq!(r["mode"], "rtt");
        assert_eq!(r["rate"], 5000);
    }
    rows
}

/// Pings per round-trip run (the shortest rate-mode run: 1,000).
const RTT_MESSAGES: u64 = 1_000;

fn run_mode(
    systems: &str,
    variants: Option<&str>,
    tag: &str,
    mode: &[&str],
    messages: u64,
) -> Vec<Value> {
    let out: PathBuf =
        std::env::temp_dir().join(format!("ringcast-bench-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast-bench"));
    cmd.args(["run", "--systems", systems])
        .args(mode)
        .args(["--messages", &messages.to_string(), "--reps", "1"])
        .args(["--jitter-secs", "0", "--quiet-ms", "300"])
        .arg("--out")
        .arg(&out);
    if let Some(v) = variants {
        cmd.args(["--variants", v]);
    }
    let res = cmd.output().expect("run the harness");
    assert!(
        res.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("| system |"),
        "no table on stdout: {stdout}"
    );
    let plot = match mode[1] {
        "full" => "throughput.svg",
        "rtt" => "latency-percentiles-rtt.svg",
        _ => "latency-vs-rate-spin.svg",
    };
    for f in ["results.json", "RESULTS.md", plot] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "ringcast-bench/results/v2");
    // The workspace is a git checkout: its commit is recorded.
    assert_eq!(
        doc["environment"]["git_commit"].as_str().unwrap().len(),
        40,
        "{}",
        doc["environment"]["git_commit"]
    );
    assert!(doc["environment"]["git_dirty"].is_boolean());
    let rows = doc["rows"].as_array().unwrap().clone();
    let reps: Vec<Value> = rows.into_iter().filter(|r| r["row"] == "rep").collect();
    assert!(!reps.is_empty());
    for r in &reps {
        let hdr = r["hdr"][0].as_str().expect("an hdr file per run");
        assert!(out.join(hdr).exists());
    }
    // RINGCAST_BENCH_E2E_KEEP=1 keeps the output (RESULTS.md, plots) to look at.
    if std::env::var_os("RINGCAST_BENCH_E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    } else {
        eprintln!("kept {}", out.display());
    }
    for r in &reps {
        check_row(r, messages);
    }
    reps
}

fn check(rows: &[Value]) {
    for r in rows {
        check_row(r, MESSAGES);
    }
}

fn check_row(r: &Value, expected: u64) {
    {
        let label = format!("{}/{}/{}", r["system"], r["transport"], r["variant"]);
        let received = r["received"].as_u64().unwrap();
        let lost = r["lost"].as_u64().unwrap();
        assert_eq!(received + lost, expected, "{label}: received + lost");
        assert_eq!(r["corrupted"], 0, "{label}: corrupted");
        assert_eq!(r["duplicated"], 0, "{label}: duplicated");
        assert!(received > 0, "{label}: nothing delivered: {}", r["reasons"]);
        if r["lossless_expected"] == true {
            assert_eq!(received, expected, "{label}: lossless run lost messages");
            // A paced run on a loaded test machine may miss its rate (a timing
            // verdict, not a delivery one); nothing else may fail it.
            let other: Vec<&str> = r["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|x| x.as_str())
                .filter(|x| !x.starts_with("rate not met"))
                .collect();
            assert!(other.is_empty(), "{label}: {other:?}");
        }
        assert!(
            r["latency_ns"]["p50"].as_f64().unwrap() > 0.0,
            "{label}: latency"
        );
        assert!(
            r["sender_msgs_per_sec"].as_f64().unwrap() > 0.0,
            "{label}: sender rate"
        );
        // Both processes reported their CPU time; the sum is per verified delivery.
        let cpu = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{label}: {k}"));
        let (p, s, sum) = (
            cpu("cpu_ns_per_msg_pub"),
            cpu("cpu_ns_per_msg_sub"),
            cpu("cpu_ns_per_msg"),
        );
        assert!(p >= 0.0 && s >= 0.0, "{label}: cpu");
        assert!(
            (p + s - sum).abs() <= 1e-6 * sum.max(1.0),
            "{label}: cpu sum"
        );
    }
}

#[test]
fn udp_baselines_deliver_verified_messages() {
    let rows = run("udp", None, "udp");
    assert_eq!(rows.len(), 5);
    check(&rows);
    let gso = rows.iter().find(|r| r["variant"] == "gso1472").unwrap();
    // 1 KiB messages: 63 datagrams per GSO send.
    assert_eq!(gso["sender_counters"]["messages_per_send_call"], 63);
    assert!(gso["sender_counters"]["datagrams_sent"].as_u64().unwrap() >= MESSAGES);
}

#[test]
fn udp_round_trips_and_paced_styles() {
    let rows = run_rtt("udp", Some("one-dgram-per-msg,busy-poll"), "udp-rtt");
    assert_eq!(rows.len(), 2);
    let rows = run_mode(
        "udp",
        Some("busy-poll"),
        "udp-rate",
        &["--modes", "rate", "--rates", "2000", "--rate-secs", "0.5"],
        1_000,
    );
    let waits: Vec<&str> = rows.iter().map(|r| r["wait"].as_str().unwrap()).collect();
    assert_eq!(waits, ["spin", "sleep"]);
}

#[cfg(feature = "zeromq")]
#[test]
fn zeromq_delivers_verified_messages() {
    let rows = run("zeromq", Some("hwm=0"), "zmq");
    assert_eq!(rows.len(), 2); // tcp and ipc
    check(&rows);
    let rows = run_rtt("zeromq", Some("zeromq/tcp/hwm=0"), "zmq-rtt");
    assert_eq!(rows.len(), 1);
}

#[cfg(feature = "nng")]
#[test]
fn nng_delivers_verified_messages() {
    let rows = run("nng", Some("buf=8192"), "nng");
    assert_eq!(rows.len(), 2);
    check(&rows);
    let rows = run_rtt("nng", Some("nng/tcp/buf=8192"), "nng-rtt");
    assert_eq!(rows.len(), 1);
}

#[cfg(feature = "ringcast")]
#[test]
fn ringcast_delivers_every_message() {
    let rows = run(
        "ringcast",
        Some("default,fallback,inline-spin,mtu1408,ringcast/ipc/ipc"),
        "ringcast",
    );
    assert_eq!(rows.len(), 5);
    check(&rows);
    for r in &rows {
        assert!(r["info"]["receiver.threading"].is_string(), "{}", r["info"]);
    }
    // The IPC row went through the logs, not the network.
    let ipc = rows
        .iter()
        .find(|r| r["transport"] == "ipc")
        .expect("an ipc row");
    assert!(
        ipc["receiver_counters"]["ipc_delivered"].as_u64() >= Some(MESSAGES),
        "{ipc}"
    );
    assert_eq!(
        ipc["receiver_counters"]["datagrams_received"].as_u64(),
        Some(0),
        "{ipc}"
    );
    let rows = run_rtt(
        "ringcast",
        Some("default,inline-spin,ringcast/ipc/ipc"),
        "ringcast-rtt",
    );
    assert_eq!(rows.len(), 3);
}

#[cfg(feature = "aeron")]
#[test]
fn aeron_delivers_verified_messages() {
    let rows = run("aeron", None, "aeron");
    assert_eq!(rows.len(), 4); // ipc and udp multicast, dedicated and invoker layouts
    check(&rows);
    for r in &rows {
        let invoker = r["variant"].as_str().unwrap().ends_with("-invoker");
        let layout = r["info"]["sender.media_driver"].as_str().unwrap();
        assert_eq!(layout.starts_with("INVOKER"), invoker, "{layout}");
        if invoker {
            assert!(r["sender_counters"]["do_work_calls"].as_u64().unwrap() > MESSAGES);
        }
    }
    let rows = run_rtt("aeron", Some("udp,udp-invoker,ipc-invoker"), "aeron-rtt");
    assert_eq!(rows.len(), 3);
}

#[cfg(feature = "zenoh")]
#[test]
fn zenoh_delivers_verified_messages() {
    let rows = run("zenoh", None, "zenoh");
    assert_eq!(rows.len(), 4); // tcp block, tcp drop, udp multicast block, shm
    check(&rows);
    let shm = rows
        .iter()
        .find(|r| r["transport"] == "ipc" && r["variant"] == "shm")
        .expect("an ipc/shm row");
    assert_eq!(
        shm["info"]["sender.zenoh_config"]
            .as_str()
            .map(|c| c.contains("transport/shared_memory/enabled=true")),
        Some(true),
        "{shm}"
    );
    let block = rows
        .iter()
        .find(|r| r["transport"] == "tcp" && r["variant"] == "block")
        .expect("a tcp/block row");
    assert_eq!(block["lossless_expected"], true);
    assert_eq!(block["received"].as_u64(), Some(MESSAGES));
    // finish() ran its drain probe (a query round trip) on TCP.
    for r in rows.iter().filter(|r| r["transport"] == "tcp") {
        assert!(
            r["sender_counters"]["drain_probe_us"].as_u64() > Some(0),
            "{r}"
        );
    }
}

#[cfg(feature = "iceoryx2")]
#[test]
fn iceoryx2_delivers_verified_messages() {
    let rows = run("iceoryx2", None, "iceoryx2");
    assert_eq!(rows.len(), 1);
    check(&rows);
    assert_eq!(rows[0]["received"].as_u64(), Some(MESSAGES));
    let rows = run_rtt("iceoryx2", None, "iceoryx2-rtt");
    assert_eq!(rows.len(), 1);
}

#[test]
fn unknown_system_is_refused() {
    let res = Command::new(env!("CARGO_BIN_EXE_ringcast-bench"))
        .args(["run", "--systems", "carrier-pigeon", "--out"])
        .arg(std::env::temp_dir().join("ringcast-bench-e2e-none"))
        .output()
        .unwrap();
    assert!(!res.status.success());
}
