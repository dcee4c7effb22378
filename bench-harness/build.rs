//! Records the rustc version and the versions of the crates the harness links
//! (read from the workspace's Cargo.lock) for the environment section of reports.

use std::process::Command;

const CRATES: &[&str] = &[
    "ringcast",
    "zmq",
    "zmq-sys",
    "zeromq-src",
    "nng",
    "nng-sys",
    "hdrhistogram",
    "plotters",
    "socket2",
    "core_affinity",
    "libc",
    "io-uring",
    "rusteron-client",
    "rusteron-media-driver",
    "zenoh",
];

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RINGCAST_BENCH_RUSTC={version}");

    let lock =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                if CRATES.contains(&n.as_str()) {
                    found.push(format!("{n}={}", v.trim_matches('"')));
                }
            }
        }
    }
    println!("cargo:rustc-env=RINGCAST_BENCH_CRATES={}", found.join(";"));
}
