//! A tiny end-to-end run of each system through the real harness binary: the
//! harness isolates the network (as root), starts a publisher and a subscriber
//! process per configuration, and `results.json` must show verified deliveries.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const MESSAGES: u64 = 2_000;

fn run(systems: &str, variants: Option<&str>, tag: &str) -> Vec<Value> {
    let out: PathBuf =
        std::env::temp_dir().join(format!("ringcast-bench-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast-bench"));
    cmd.args(["run", "--systems", systems, "--modes", "full"])
        .args(["--messages", &MESSAGES.to_string(), "--reps", "1"])
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
    for f in ["results.json", "RESULTS.md", "throughput.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "ringcast-bench/results/v1");
    let rows = doc["rows"].as_array().unwrap().clone();
    let reps: Vec<Value> = rows.into_iter().filter(|r| r["row"] == "rep").collect();
    assert!(!reps.is_empty());
    for r in &reps {
        let hdr = r["hdr"][0].as_str().expect("an hdr file per run");
        assert!(out.join(hdr).exists());
    }
    let _ = std::fs::remove_dir_all(&out);
    reps
}

fn check(rows: &[Value]) {
    for r in rows {
        let label = format!("{}/{}/{}", r["system"], r["transport"], r["variant"]);
        let received = r["received"].as_u64().unwrap();
        let lost = r["lost"].as_u64().unwrap();
        assert_eq!(received + lost, MESSAGES, "{label}: received + lost");
        assert_eq!(r["corrupted"], 0, "{label}: corrupted");
        assert_eq!(r["duplicated"], 0, "{label}: duplicated");
        assert!(received > 0, "{label}: nothing delivered: {}", r["reasons"]);
        if r["lossless_expected"] == true {
            assert_eq!(received, MESSAGES, "{label}: lossless run lost messages");
            assert_eq!(r["failed"], false, "{label}: {}", r["reasons"]);
        }
        assert!(
            r["latency_ns"]["p50"].as_f64().unwrap() > 0.0,
            "{label}: latency"
        );
        assert!(
            r["sender_msgs_per_sec"].as_f64().unwrap() > 0.0,
            "{label}: sender rate"
        );
    }
}

#[test]
fn udp_baselines_deliver_verified_messages() {
    let rows = run("udp", None, "udp");
    assert_eq!(rows.len(), 3);
    check(&rows);
}

#[cfg(feature = "zeromq")]
#[test]
fn zeromq_delivers_verified_messages() {
    let rows = run("zeromq", Some("hwm=0"), "zmq");
    assert_eq!(rows.len(), 2); // tcp and ipc
    check(&rows);
}

#[cfg(feature = "nng")]
#[test]
fn nng_delivers_verified_messages() {
    let rows = run("nng", Some("buf=8192"), "nng");
    assert_eq!(rows.len(), 2);
    check(&rows);
}

#[cfg(feature = "ringcast")]
#[test]
fn ringcast_delivers_every_message() {
    let rows = run("ringcast", Some("default,fallback"), "ringcast");
    assert_eq!(rows.len(), 2);
    check(&rows);
}

#[cfg(feature = "aeron")]
#[test]
fn aeron_delivers_verified_messages() {
    let rows = run("aeron", None, "aeron");
    assert_eq!(rows.len(), 2); // ipc and udp multicast
    check(&rows);
}

#[cfg(feature = "zenoh")]
#[test]
fn zenoh_delivers_verified_messages() {
    let rows = run("zenoh", None, "zenoh");
    assert_eq!(rows.len(), 3); // tcp block, tcp drop, udp multicast block
    check(&rows);
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

#[test]
fn unknown_system_is_refused() {
    let res = Command::new(env!("CARGO_BIN_EXE_ringcast-bench"))
        .args(["run", "--systems", "carrier-pigeon", "--out"])
        .arg(std::env::temp_dir().join("ringcast-bench-e2e-none"))
        .output()
        .unwrap();
    assert!(!res.status.success());
}
