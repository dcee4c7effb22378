//! Orchestrates one measured run: starts the publisher and subscriber child
//! processes, walks them through warm-up → counted run → drain over their
//! pipes, and collects their reports.

use crate::child::{PubReport, SubReport};
use crate::control::{Command, Reply};
use crate::spec::{Mode, RunSpec};
use crate::systems;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Everything one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub spec: RunSpec,
    pub publ: Option<PubReport>,
    pub sub: Option<SubReport>,
    pub hist: Option<Histogram<u64>>,
    /// Why the run did not complete normally.
    pub error: Option<String>,
    pub wall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pub,
    Sub,
}

impl Side {
    fn arg(self) -> &'static str {
        match self {
            Side::Pub => "pub",
            Side::Sub => "sub",
        }
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn tell(&mut self, c: Command) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{}", c.as_str());
            let _ = s.flush();
        }
    }

    /// Close stdin, wait up to `grace` for exit, then kill.
    fn reap(&mut self, grace: Duration) {
        self.stdin = None;
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    exe: &Path,
    side: Side,
    spec: &RunSpec,
    log: &std::fs::File,
    events: mpsc::Sender<(Side, Option<String>)>,
) -> Result<Proc> {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(side.arg())
        .arg("--spec")
        .arg(serde_json::to_string(spec)?)
        .env_remove("RINGCAST_BACKEND")
        .envs(systems::child_env(&spec.variant))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.try_clone()?));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", side.arg()))?;
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if events.send((side, Some(line))).is_err() {
                return;
            }
        }
        let _ = events.send((side, None));
    });
    let stdin = child.stdin.take();
    Ok(Proc { child, stdin })
}

/// Upper bound on how long the counted part of a run may take.
pub fn run_timeout(spec: &RunSpec) -> Duration {
    let base = Duration::from_secs(20) + Duration::from_micros(20 * spec.messages);
    match (spec.mode, spec.rate) {
        (Mode::Rate | Mode::Rtt, Some(r)) if r > 0 => {
            base + Duration::from_secs_f64(1.5 * spec.messages as f64 / r as f64)
        }
        _ => base,
    }
}

/// Run one measurement; never panics on a misbehaving child.
pub fn run(exe: &Path, spec: &RunSpec, log_path: &Path) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome {
        spec: spec.clone(),
        publ: None,
        sub: None,
        hist: None,
        error: None,
        wall: Duration::ZERO,
    };
    if let Err(e) = drive(exe, spec, log_path, &mut out) {
        out.error.get_or_insert(format!("{e:#}"));
    }
    if out.sub.is_some() {
        match read_histogram(&spec.hdr_path) {
            Ok(h) => out.hist = Some(h),
            Err(e) => {
                out.error.get_or_insert(format!("histogram: {e:#}"));
            }
        }
    }
    let _ = std::fs::remove_file(&spec.endpoint.ipc);
    let _ = std::fs::remove_file(&spec.endpoint.back_ipc);
    out.wall = started.elapsed();
    out
}

fn drive(exe: &Path, spec: &RunSpec, log_path: &Path, out: &mut Outcome) -> Result<()> {
    let log = std::fs::File::create(log_path)?;
    let (tx, rx) = mpsc::channel();
    let mut publ = spawn(exe, Side::Pub, spec, &log, tx.clone())?;
    let mut sub: Option<Proc> = None;
    let setup = Duration::from_secs(15);
    let mut deadline = Instant::now() + setup;
    let mut phase = "publisher start";
    while out.publ.is_none() || out.sub.is_none() {
        let now = Instant::now();
        if now >= deadline {
            out.error = Some(format!("timeout waiting for {phase}"));
            break;
        }
        let (side, line) = match rx.recv_timeout(deadline - now) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let Some(line) = line else {
            let missing = match side {
                Side::Pub => out.publ.is_none(),
                Side::Sub => out.sub.is_none(),
            };
            if missing {
                out.error = Some(format!("{} exited without a report", side.arg()));
                break;
            }
            continue;
        };
        match (side, Reply::parse(&line)) {
            (Side::Pub, Some(Reply::Bound)) => {
                sub = Some(spawn(exe, Side::Sub, spec, &log, tx.clone())?);
                phase = "subscriber ready";
                deadline = Instant::now() + setup;
            }
            (Side::Sub, Some(Reply::Ready)) => {
                publ.tell(Command::Go);
                phase = "end of run";
                deadline = Instant::now() + run_timeout(spec);
            }
            (Side::Pub, Some(Reply::Done(json))) => {
                out.publ = Some(serde_json::from_str(&json).context("publisher report")?);
                if let Some(s) = sub.as_mut() {
                    s.tell(Command::PubDone);
                }
            }
            (Side::Sub, Some(Reply::Done(json))) => {
                out.sub = Some(serde_json::from_str(&json).context("subscriber report")?);
            }
            (side, Some(Reply::Error(text))) => {
                out.error = Some(format!("{}: {text}", side.arg()));
                break;
            }
            _ => {}
        }
    }
    // A failed or timed-out run: ask the subscriber for what it has.
    if let (Some(s), None) = (sub.as_mut(), out.sub.as_ref()) {
        s.tell(Command::Abort);
        let until = Instant::now() + Duration::from_secs(3);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((Side::Sub, Some(line))) => {
                    if let Some(Reply::Done(json)) = Reply::parse(&line) {
                        out.sub = serde_json::from_str(&json).ok();
                        break;
                    }
                }
                Ok((Side::Sub, None)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    publ.tell(Command::Exit);
    if let Some(s) = sub.as_mut() {
        s.reap(Duration::from_secs(5));
    }
    publ.reap(Duration::from_secs(5));
    Ok(())
}

/// Read a V2-serialised histogram written by a subscriber.
pub fn read_histogram(path: &Path) -> Result<Histogram<u64>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut f)
        .map_err(|e| anyhow::anyhow!("decode {}: {e:?}", path.display()))
}
