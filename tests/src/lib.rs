//! Helpers for ringcast's end-to-end tests: find the `ringcast` binary, run it as a
//! child process with a deadline, wait for a listener to be ready, and hand each
//! test its own multicast group so tests can run in parallel.
//!
//! Every test uses the loopback interface and TTL 0: nothing leaves the host. CI runs
//! them inside a fresh network namespace (`unshare -n`).

pub mod hostile;
pub mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The I/O backends every end-to-end test runs with.
pub const BACKENDS: [&str; 2] = ["uring", "mmsg"];

/// Path of the `ringcast` binary built alongside the tests
/// (`RINGCAST_BIN` overrides).
pub fn ringcast_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGCAST_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/ringcast
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("ringcast");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` (or set RINGCAST_BIN)",
        bin.display()
    );
    bin
}

/// A group and port unique to `test_id` (0..=250) and `backend`.
pub fn group(test_id: u8, backend: &str) -> SocketAddrV4 {
    let b = if backend == "mmsg" { 1 } else { 0 };
    SocketAddrV4::new(
        [239, 255, 100 + b, test_id].into(),
        41000 + u16::from(test_id) * 2 + b as u16,
    )
}

/// The library's backends, with the names [`group`] takes.
pub const LIB_BACKENDS: [(ringcast::BackendChoice, &str); 2] = [
    (ringcast::BackendChoice::Uring, "uring"),
    (ringcast::BackendChoice::Mmsg, "mmsg"),
];

/// A node configuration on `lo` for test `test_id` with `backend` (`name` from
/// [`LIB_BACKENDS`]). Its subscribers are lossless (`BackPressure`): these tests check
/// exact delivery at full speed, which the default `Drop` gives only to a subscriber
/// that keeps up ([`lo_config_default_policy`] keeps the default).
pub fn lo_config(
    test_id: u8,
    backend: ringcast::BackendChoice,
    name: &str,
) -> ringcast::ConfigBuilder {
    lo_config_default_policy(test_id, backend, name)
        .slow_consumer(ringcast::SlowConsumerPolicy::BackPressure)
}

/// [`lo_config`] with the library's default slow-consumer policy.
pub fn lo_config_default_policy(
    test_id: u8,
    backend: ringcast::BackendChoice,
    name: &str,
) -> ringcast::ConfigBuilder {
    ringcast::Config::builder()
        .group(group(test_id, name))
        .discovery(Some(discovery_group(test_id, name)))
        .iface("lo")
        .backend(backend)
}

/// A discovery group of its own for test `test_id` with backend `name`, so parallel
/// tests do not see each other's nodes.
pub fn discovery_group(test_id: u8, backend: &str) -> SocketAddrV4 {
    let b = if backend == "mmsg" { 1 } else { 0 };
    SocketAddrV4::new(
        [239, 255, 102 + b, test_id].into(),
        45000 + u16::from(test_id) * 2 + b as u16,
    )
}

/// A `ringcast` command for `backend` with the given arguments.
pub fn ringcast(backend: &str, args: &[&str]) -> Command {
    let mut c = Command::new(ringcast_bin());
    c.env("RINGCAST_BACKEND", backend).args(args);
    c
}

/// A running child with its stderr collected in the background.
pub struct Proc {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
}

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Proc {
    /// Starts `cmd` with piped stdout/stderr.
    pub fn spawn(cmd: Command) -> Proc {
        Self::spawn_with(cmd, None)
    }

    /// Starts `cmd` with `input` on its standard input (written from a thread, then
    /// closed) and piped stdout/stderr.
    pub fn spawn_with_input(cmd: Command, input: Vec<u8>) -> Proc {
        Self::spawn_with(cmd, Some(input))
    }

    fn spawn_with(mut cmd: Command, input: Option<Vec<u8>>) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn ringcast");
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&bytes);
            });
        }
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        Proc {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits until a stderr line contains `needle`; panics after `timeout`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr_seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {needle:?} on stderr within {timeout:?}; saw {:?}",
                        self.stderr_seen
                    );
                }
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last stderr line seen by [`wait_for_stderr`](Self::wait_for_stderr).
    pub fn last_stderr(&self) -> &str {
        self.stderr_seen.last().map_or("", String::as_str)
    }

    /// Sends SIGINT (Ctrl-C) to the child.
    pub fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -INT failed");
    }

    /// Stops a child that runs until killed (such as `ringcast stat --watch`) and
    /// returns what it printed.
    pub fn stop(mut self) -> Finished {
        let _ = self.child.kill();
        self.finish(Duration::from_secs(10))
    }

    /// Waits for the child to exit (killing it after `timeout`, which fails the test).
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let rest: Vec<String> = self.stderr_lines.try_iter().collect();
                panic!(
                    "child still running after {timeout:?}; stderr {:?} {rest:?}",
                    self.stderr_seen
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        // The reader thread ends at EOF once the child has exited.
        let mut stderr = self.stderr_seen.join("\n");
        for line in self.stderr_lines.iter() {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `ringcast listen` with `args` and waits until it has joined the group.
pub fn start_listener(backend: &str, args: &[&str]) -> Proc {
    let mut full = vec!["listen"];
    full.extend_from_slice(args);
    let mut p = Proc::spawn(ringcast(backend, &full));
    p.wait_for_stderr("listening on", Duration::from_secs(20));
    p
}

/// Runs `ringcast send` with `args` to completion and asserts it succeeded.
pub fn send(backend: &str, args: &[&str]) -> Finished {
    let mut full = vec!["send"];
    full.extend_from_slice(args);
    let f = Proc::spawn(ringcast(backend, &full)).finish(Duration::from_secs(120));
    assert!(f.status.success(), "send failed: {}", f.stderr);
    f
}

/// A scratch directory for one test, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory named after `name`.
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringcast-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines `MSG0` … `MSG{n-1}` as one expected file body.
pub fn numbered(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}{i}\n")).collect()
}

/// The counters of a summary line, by label: `received 5 messages, gaps 1 (lost 2),
/// naks sent 3` → {"received": 5, "gaps": 1, "lost": 2, "naks sent": 3}.
pub fn counters(line: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for part in line.split([',', '(', ')']) {
        let words: Vec<&str> = part.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| w.parse::<f64>().is_ok()) {
            m.entry(words[..i].join(" "))
                .or_insert_with(|| words[i].parse().unwrap());
        }
    }
    m
}

/// The summary line starting with `start` in a child's stderr, as counters.
pub fn summary(f: &Finished, start: &str) -> HashMap<String, f64> {
    let line = f
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no {start:?} summary in stderr: {}", brief(&f.stderr)));
    counters(line)
}

/// Counter `key` of summary `m` (panics, showing the summary, when absent).
pub fn get(m: &HashMap<String, f64>, key: &str) -> u64 {
    match m.get(key) {
        Some(v) => *v as u64,
        None => panic!("no {key:?} in summary {m:?}"),
    }
}

/// `stderr` cut to its first 20 lines and its last line.
pub fn brief(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() <= 21 {
        return stderr.to_string();
    }
    format!(
        "{}\n… ({} more lines)\n{}",
        lines[..20].join("\n"),
        lines.len() - 21,
        lines[lines.len() - 1]
    )
}

/// The losses a listener reported on stderr (`loss: … messages A..B (Reason)`), as
/// (A, B, reason).
pub fn reported_losses(stderr: &str) -> Vec<(u64, u64, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let range = l.strip_prefix("loss: ")?.split(" messages ").nth(1)?;
            let (r, reason) = range.split_once(' ').unwrap_or((range, ""));
            let (a, b) = r.split_once("..")?;
            let reason = reason.trim_matches(|c| c == '(' || c == ')');
            Some((a.parse().ok()?, b.parse().ok()?, reason.to_string()))
        })
        .collect()
}

/// The numbers of the complete `<prefix><n>` lines of `out` (trailing padding
/// ignored; an unterminated last line, from a killed child, is skipped).
pub fn line_numbers(out: &[u8], prefix: &str) -> Vec<u64> {
    let text = String::from_utf8_lossy(out);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            l.trim_end()
                .strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

/// Panics unless the messages `got` (increasing) and the reported `losses` cover
/// `0..n` exactly once: nothing missing without a loss event, nothing both.
pub fn assert_exact_cover(got: &[u64], losses: &[(u64, u64, String)], n: u64, who: &str) {
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "[{who}] messages out of order"
    );
    let mut ranges: Vec<(u64, u64)> = got.iter().map(|&m| (m, m + 1)).collect();
    ranges.extend(losses.iter().map(|l| (l.0, l.1)));
    ranges.sort_unstable();
    let mut next = 0;
    for (a, b) in ranges {
        assert_eq!(a, next, "[{who}] hole or overlap at {a}");
        next = b;
    }
    assert_eq!(next, n, "[{who}] ends at {next}");
}

/// Checks what a slow listener (`--slow-consumer POLICY`) printed (`got`, its message
/// numbers) and reported (`f`'s stderr) for a stream of `n` messages: back-pressure
/// loses nothing; drop and disconnect report exactly what they miss, with their reason;
/// conflate loses nothing, ends at the newest message, and counts the rest conflated.
pub fn check_slow(policy: &str, f: &Finished, got: &[u64], n: u64) {
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "[{policy}] out of order"
    );
    let losses = reported_losses(&f.stderr);
    let m = summary(f, "received ");
    match policy {
        "back-pressure" => {
            assert!(f.status.success(), "[{policy}] {}", brief(&f.stderr));
            assert_eq!(got.len() as u64, n, "[{policy}]");
        }
        "conflate" => {
            assert!(losses.is_empty(), "[{policy}] {losses:?}");
            assert!((got.len() as u64) < n, "[{policy}] nothing conflated");
            assert_eq!(got.last(), Some(&(n - 1)), "[{policy}] not the newest");
            assert_eq!(
                get(&m, "conflated"),
                n - got.len() as u64,
                "[{policy}] {m:?}"
            );
        }
        "drop" | "disconnect" => {
            let want = if policy == "drop" {
                "SlowConsumer"
            } else {
                "Disconnected"
            };
            assert!(
                !losses.is_empty(),
                "[{policy}] nothing lost: {}",
                brief(&f.stderr)
            );
            assert!(losses.iter().all(|l| l.2 == want), "[{policy}] {losses:?}");
            assert_exact_cover(got, &losses, n, policy);
            if policy == "disconnect" {
                assert!(get(&m, "slow disconnects") > 0, "[{policy}] {m:?}");
            }
        }
        _ => panic!("unknown policy {policy}"),
    }
}

/// A node's counters are mirrored at the end of its agents' duty cycles, just after
/// the events they count were handed out: waits up to 2 s for `done(stats)` and returns
/// the last stats read either way.
pub fn settled(node: &ringcast::Node, done: impl Fn(&ringcast::Stats) -> bool) -> ringcast::Stats {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = node.stats();
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        thread::sleep(Duration::from_millis(1));
    }
}
