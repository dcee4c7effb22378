//! The environment a report was measured in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything a reader needs to judge where the numbers came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub clocksource: String,
    /// io_uring: whether io_uring_setup works here, its feature bits, and the sysctl.
    pub io_uring: String,
    pub rmem_max: String,
    pub wmem_max: String,
    pub rustc: String,
    /// Versions of the crates (from Cargo.lock at build time) and C libraries.
    pub versions: BTreeMap<String, String>,
    pub features: Vec<String>,
    pub command_line: Vec<String>,
    pub isolation: String,
    pub interfaces: Vec<String>,
    /// `git rev-parse HEAD` of the workspace the harness was built from, at run
    /// time ("unknown" when it is not a git checkout or git is missing).
    pub git_commit: String,
    /// `git status --porcelain` printed anything: uncommitted changes (`null` = unknown).
    pub git_dirty: Option<bool>,
}

/// The workspace root (the harness's source tree), if it is still there; else ".".
pub fn workspace_root() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if root.join("Cargo.toml").exists() {
        root
    } else {
        std::path::PathBuf::from(".")
    }
}

/// Run `git args...` in `dir`; its trimmed stdout when it succeeds.
fn git(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        // The tree may belong to another user than the one running the harness (root).
        .args(["-c", "safe.directory=*"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Commit and dirty flag of the git checkout at `dir`.
pub fn git_state(dir: &std::path::Path) -> (String, Option<bool>) {
    match git(dir, &["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = git(dir, &["status", "--porcelain"]).map(|s| !s.is_empty());
            (commit, dirty)
        }
        _ => ("unknown".to_owned(), None),
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// io_uring feature bits known to this harness (IORING_FEAT_*).
const URING_FEATURES: &[(u32, &str)] = &[
    (1 << 0, "SINGLE_MMAP"),
    (1 << 1, "NODROP"),
    (1 << 2, "SUBMIT_STABLE"),
    (1 << 3, "RW_CUR_POS"),
    (1 << 4, "CUR_PERSONALITY"),
    (1 << 5, "FAST_POLL"),
    (1 << 6, "POLL_32BITS"),
    (1 << 7, "SQPOLL_NONFIXED"),
    (1 << 8, "EXT_ARG"),
    (1 << 9, "NATIVE_WORKERS"),
    (1 << 10, "RSRC_TAGS"),
    (1 << 11, "CQE_SKIP"),
    (1 << 12, "LINKED_FILE"),
    (1 << 13, "REG_REG_RING"),
    (1 << 14, "RECVSEND_BUNDLE"),
    (1 << 15, "MIN_TIMEOUT"),
];

/// Try io_uring_setup(2) with a tiny ring and describe what happened.
pub fn io_uring_probe() -> String {
    // struct io_uring_params is 120 bytes; `features` is the 6th u32.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes a 120-byte io_uring_params, which
    // `params` provides; the returned fd (if any) is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| format!("kernel.io_uring_disabled={}", s.trim()))
        .unwrap_or_else(|_| "kernel.io_uring_disabled absent".into());
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return format!("unavailable: io_uring_setup failed ({e}); {sysctl}");
    }
    // SAFETY: fd was just returned by io_uring_setup and is owned here.
    unsafe { libc::close(fd as libc::c_int) };
    let bits = params[5];
    let names: Vec<&str> = URING_FEATURES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    format!(
        "available; features 0x{bits:x} [{}]; {sysctl}",
        names.join(" ")
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Crate versions recorded by build.rs from the workspace's Cargo.lock.
fn crate_versions() -> BTreeMap<String, String> {
    env!("RINGCAST_BENCH_CRATES")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Compile-time cargo features of this harness.
pub fn features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "zeromq") {
        f.push("zeromq".to_owned());
    }
    if cfg!(feature = "nng") {
        f.push("nng".to_owned());
    }
    if cfg!(feature = "ringcast") {
        f.push("ringcast".to_owned());
    }
    if cfg!(feature = "aeron") {
        f.push("aeron".to_owned());
    }
    if cfg!(feature = "zenoh") {
        f.push("zenoh".to_owned());
    }
    if cfg!(feature = "iceoryx2") {
        f.push("iceoryx2".to_owned());
    }
    f
}

/// Capture the environment now.
pub fn capture(isolation: &str) -> Environment {
    let (git_commit, git_dirty) = git_state(&workspace_root());
    let mut versions = crate_versions();
    versions.extend(crate::systems::library_versions());
    Environment {
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu_model: cpu_model(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        io_uring: io_uring_probe(),
        rmem_max: read("/proc/sys/net/core/rmem_max"),
        wmem_max: read("/proc/sys/net/core/wmem_max"),
        rustc: env!("RINGCAST_BENCH_RUSTC").to_owned(),
        versions,
        features: features(),
        command_line: std::env::args().collect(),
        isolation: isolation.to_owned(),
        interfaces: crate::netns::interface_names().unwrap_or_default(),
        git_commit,
        git_dirty,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn captures_something() {
        let e = super::capture("test");
        assert!(!e.kernel.is_empty());
        assert!(e.cores >= 1);
        assert!(e.rustc.starts_with("rustc"));
        assert!(e.versions.contains_key("hdrhistogram"));
        assert!(!e.io_uring.is_empty());
        // Built from the workspace's git checkout: a full commit hash.
        if super::workspace_root().join(".git").exists() {
            assert_eq!(e.git_commit.len(), 40, "{}", e.git_commit);
            assert!(e.git_dirty.is_some());
        }
    }

    #[test]
    fn not_a_checkout_is_unknown() {
        let dir = std::env::temp_dir().join(format!("ringcast-bench-nogit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(super::git_state(&dir), ("unknown".to_owned(), None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
