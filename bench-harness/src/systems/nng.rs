//! nng (nanomsg-next-generation) pub0/sub0 through the `nng` crate, whose
//! nng-sys builds the bundled nng C sources with CMake (Debian package `cmake`).
//!
//! nng's pub/sub is best effort by design: pub0 drops when a pipe's send queue
//! is full and sub0 drops when its receive queue is full. Runs are therefore
//! lossy-allowed; the `buf=8192` variant raises both queues to nng's maximum.

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for ipc in [false, true] {
        for buffers in [None, Some(8192)] {
            v.push(Variant {
                system: "nng".into(),
                variant: match buffers {
                    None => "default".into(),
                    Some(b) => format!("buf={b}"),
                },
                transport: if ipc { "ipc" } else { "tcp" }.into(),
                lossless_expected: false,
                primary: buffers.is_some(),
                params: Params::Nng { ipc, buffers },
            });
        }
    }
    v
}

#[cfg(not(feature = "nng"))]
pub const UNAVAILABLE: Option<&str> = Some(
    "not built: its C library needs cmake at build time (apt-get install cmake, then add \
     --features nng; tests/run and .ci/run do this themselves as root)",
);
#[cfg(feature = "nng")]
pub const UNAVAILABLE: Option<&str> = None;

#[cfg(not(feature = "nng"))]
pub fn library_version() -> Option<String> {
    None
}
#[cfg(feature = "nng")]
pub fn library_version() -> Option<String> {
    // SAFETY: nng_version returns a pointer to a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(nng::ffi::nng_version()) };
    Some(v.to_string_lossy().into_owned())
}

#[cfg(not(feature = "nng"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!("nng {}", UNAVAILABLE.unwrap_or_default())
}
#[cfg(not(feature = "nng"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!("nng {}", UNAVAILABLE.unwrap_or_default())
}

#[cfg(feature = "nng")]
pub use imp::{open_publisher, open_subscriber};

#[cfg(feature = "nng")]
mod imp {
    use super::*;
    use crate::netns;
    use crate::systems::Counters;
    use anyhow::Context;
    use nng::options::protocol::pubsub::Subscribe;
    use nng::options::{Options, RecvBufferSize, RecvTimeout, SendBufferSize};
    use std::time::Duration;

    fn params(spec: &RunSpec) -> (String, Option<i32>) {
        let Params::Nng { ipc, buffers } = spec.variant.params else {
            unreachable!("nng spec without nng params")
        };
        let url = if ipc {
            format!("ipc://{}", spec.endpoint.ipc.display())
        } else {
            format!("tcp://{}", spec.endpoint.tcp)
        };
        (url, buffers)
    }

    struct NngPublisher {
        sock: nng::Socket,
        errors: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        netns::check_tcp(spec.endpoint.tcp)?;
        let (url, buffers) = params(spec);
        let sock = nng::Socket::new(nng::Protocol::Pub0)?;
        if let Some(b) = buffers {
            sock.set_opt::<SendBufferSize>(b)?;
        }
        sock.listen(&url).with_context(|| format!("listen {url}"))?;
        Ok(Box::new(NngPublisher { sock, errors: 0 }))
    }

    impl Publisher for NngPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            match self.sock.send(nng::Message::from(msg)) {
                Ok(()) => Ok(()),
                Err((_, nng::Error::TryAgain)) | Err((_, nng::Error::Interrupted)) => {
                    self.errors += 1;
                    Ok(())
                }
                Err((_, e)) => Err(e).context("nng send"),
            }
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn counters(&self) -> Counters {
            Counters::from([("send_errors".into(), self.errors)])
        }
    }

    struct NngSubscriber {
        sock: nng::Socket,
        timeout: Option<Duration>,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        netns::check_tcp(spec.endpoint.tcp)?;
        let (url, buffers) = params(spec);
        let sock = nng::Socket::new(nng::Protocol::Sub0)?;
        if let Some(b) = buffers {
            sock.set_opt::<RecvBufferSize>(b)?;
        }
        sock.set_opt::<Subscribe>(Vec::new())?;
        sock.dial(&url).with_context(|| format!("dial {url}"))?;
        Ok(Box::new(NngSubscriber {
            sock,
            timeout: None,
        }))
    }

    impl Subscriber for NngSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            if self.timeout != Some(timeout) {
                self.sock.set_opt::<RecvTimeout>(Some(timeout))?;
                self.timeout = Some(timeout);
            }
            let first = match self.sock.recv() {
                Ok(m) => m,
                Err(nng::Error::TimedOut) | Err(nng::Error::Interrupted) => return Ok(0),
                Err(e) => return Err(e).context("nng recv"),
            };
            on_msg(first.as_slice());
            let mut n = 1;
            while n < 256 {
                match self.sock.try_recv() {
                    Ok(m) => {
                        on_msg(m.as_slice());
                        n += 1;
                    }
                    Err(nng::Error::TryAgain) => break,
                    Err(e) => return Err(e).context("nng try_recv"),
                }
            }
            Ok(n)
        }

        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let mut n = 0;
            while n < 256 {
                match self.sock.try_recv() {
                    Ok(m) => {
                        on_msg(m.as_slice());
                        n += 1;
                    }
                    Err(nng::Error::TryAgain) | Err(nng::Error::Interrupted) => break,
                    Err(e) => return Err(e).context("nng try_recv"),
                }
            }
            Ok(n)
        }
    }
}
