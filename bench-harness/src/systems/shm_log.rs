//! ringcast's shared-memory log (`ringcast::shm`) alone, between two processes: the
//! storage layer of the coming IPC transport (issue 12), measured next to Aeron IPC
//! and the others so the layer's cost is known before the transport is built on it.
//! Not ringcast's publish/subscribe API: no topics, sessions or policies — one log,
//! one writer, one back-pressuring reader lent each record in place (lossless).
//!
//! Variant `shm-log` (system `ringcast`, transport `ipc`). The log is a file in
//! `/dev/shm` named after the run's ipc path; the reader opens it at its first poll
//! (the publisher's warm-ups bring it in before the measured run).

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    vec![Variant {
        system: "ringcast".into(),
        variant: "shm-log".into(),
        transport: "ipc".into(),
        lossless_expected: true,
        primary: false,
        params: Params::RingcastShm {},
    }]
}

#[cfg(not(feature = "ringcast"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!(
        "ringcast {}",
        super::ringcast::UNAVAILABLE.unwrap_or_default()
    )
}
#[cfg(not(feature = "ringcast"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!(
        "ringcast {}",
        super::ringcast::UNAVAILABLE.unwrap_or_default()
    )
}

#[cfg(feature = "ringcast")]
pub use imp::{open_publisher, open_subscriber};

#[cfg(feature = "ringcast")]
mod imp {
    use super::*;
    use crate::clock::now_ns;
    use crate::systems::{Counters, Info};
    use anyhow::Context;
    use ringcast::shm::{LogError, LogEvent, LogReader, LogWriter};
    use std::path::PathBuf;
    use std::time::Duration;

    /// 16 MiB of log: as much as ringcast's default publisher ring and the window.
    const CAPACITY: usize = 16 << 20;
    /// A side silent this long is gone (the reader's slot freed, the writer Gone).
    const TIMEOUT_NS: u64 = 10_000_000_000;
    /// Sends between two writer heartbeats.
    const BEAT_EVERY: u64 = 4096;

    /// The log's directory (`/dev/shm`: memory, not a disk's page cache) and name
    /// (the run's unique ipc file name).
    fn place(spec: &RunSpec) -> Result<(PathBuf, String)> {
        let ipc = &spec.endpoint.ipc;
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            ipc.parent().context("ipc path without a directory")?
        };
        let name = ipc
            .file_name()
            .and_then(|n| n.to_str())
            .context("ipc path without a name")?;
        Ok((dir.to_path_buf(), format!("{name}-shm")))
    }

    struct ShmPublisher {
        w: LogWriter,
        sends: u64,
        back_pressured: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        let (dir, name) = place(spec)?;
        let w = LogWriter::create(
            &dir,
            &name,
            CAPACITY,
            std::process::id().into(),
            now_ns(),
            TIMEOUT_NS,
        )
        .context("shm log")?;
        Ok(Box::new(ShmPublisher {
            w,
            sends: 0,
            back_pressured: 0,
        }))
    }

    impl Publisher for ShmPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            self.sends += 1;
            if self.sends % BEAT_EVERY == 0 {
                self.w.heartbeat(now_ns());
            }
            let mut tries = 0u32;
            loop {
                match self.w.offer(msg) {
                    Ok(_) => return Ok(()),
                    Err(LogError::BackPressured) => {
                        // (the clock is read only on this slow path: a full log)
                        self.w.heartbeat(now_ns());
                        self.back_pressured += 1;
                        tries += 1;
                        if tries < 64 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    Err(e) => return Err(e).context("shm offer"),
                }
            }
        }
        fn flush(&mut self) -> Result<()> {
            self.w.heartbeat(now_ns());
            Ok(())
        }
        fn do_work(&mut self) -> Result<usize> {
            self.w.heartbeat(now_ns());
            Ok(0)
        }
        fn counters(&self) -> Counters {
            let c = self.w.counters();
            Counters::from([
                ("back_pressured".into(), self.back_pressured),
                ("readers_evicted".into(), c.readers_evicted),
            ])
        }
        fn info(&self) -> Info {
            Info::from([("log".into(), self.w.path().display().to_string())])
        }
    }

    struct ShmSubscriber {
        path: PathBuf,
        r: Option<LogReader>,
        lost: u64,
        gone: bool,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        let (dir, name) = place(spec)?;
        Ok(Box::new(ShmSubscriber {
            path: dir.join(format!("{name}{}", ringcast::shm::SUFFIX)),
            r: None,
            lost: 0,
            gone: false,
        }))
    }

    impl ShmSubscriber {
        fn take(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            if self.r.is_none() {
                match LogReader::open(&self.path, true, now_ns()) {
                    Ok(r) => self.r = Some(r),
                    Err(LogError::Io { .. }) => return Ok(0), // not there yet
                    Err(e) => return Err(e).context("shm reader"),
                }
            }
            let Some(r) = self.r.as_mut() else {
                return Ok(0);
            };
            let (lost, gone) = (&mut self.lost, &mut self.gone);
            let mut n = 0;
            r.poll(256, now_ns(), TIMEOUT_NS, &mut |e| match e {
                LogEvent::Message { payload, .. } => {
                    on_msg(payload);
                    n += 1;
                }
                LogEvent::Lost { count, .. } => *lost += count,
                LogEvent::Gone => *gone = true,
            });
            Ok(n)
        }
    }

    impl Subscriber for ShmSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            // Spins (as Aeron's IPC subscriber does): one process per core.
            let deadline = now_ns() + timeout.as_nanos() as u64;
            loop {
                let n = self.take(on_msg)?;
                if n > 0 || self.gone || now_ns() >= deadline {
                    return Ok(n);
                }
                std::hint::spin_loop();
            }
        }
        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            self.take(on_msg)
        }
        fn counters(&self) -> Counters {
            Counters::from([
                ("lost".into(), self.lost),
                ("writer_gone".into(), u64::from(self.gone)),
            ])
        }
        fn info(&self) -> Info {
            Info::from([(
                "lent_in_place".into(),
                self.r
                    .as_ref()
                    .is_some_and(LogReader::back_pressures)
                    .to_string(),
            )])
        }
    }
}
