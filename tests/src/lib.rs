//! Helpers for ringcast's end-to-end tests: find the `ringcast` binary, run it as a
//! child process with a deadline, wait for a listener to be ready, and hand each
//! test its own multicast group so tests can run in parallel.
//!
//! Every test uses the loopback interface and TTL 0: nothing leaves the host. CI runs
//! them inside a fresh network namespace (`unshare -n`).

pub mod netns;

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
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ringcast");
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
