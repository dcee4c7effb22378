//! ZeroMQ PUB/SUB through the `zmq` crate (libzmq compiled from source by
//! zmq-sys / zeromq-src; no system package).
//!
//! Variants: tcp and ipc, each with libzmq's default high-water mark (1000
//! messages; PUB silently drops beyond it, so these runs are lossy-allowed) and
//! with HWM=0 (unbounded queues: lossless, so any loss there is a FAILED run).

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for ipc in [false, true] {
        for hwm in [None, Some(0)] {
            v.push(Variant {
                system: "zeromq".into(),
                variant: match hwm {
                    None => "default".into(),
                    Some(h) => format!("hwm={h}"),
                },
                transport: if ipc { "ipc" } else { "tcp" }.into(),
                lossless_expected: hwm == Some(0),
                primary: hwm == Some(0),
                params: Params::Zeromq { ipc, hwm },
            });
        }
    }
    v
}

#[cfg(not(feature = "zeromq"))]
pub const UNAVAILABLE: Option<&str> = Some("not built: cargo feature `zeromq` is off");
#[cfg(feature = "zeromq")]
pub const UNAVAILABLE: Option<&str> = None;

#[cfg(not(feature = "zeromq"))]
pub fn library_version() -> Option<String> {
    None
}
#[cfg(feature = "zeromq")]
pub fn library_version() -> Option<String> {
    let (a, b, c) = zmq::version();
    Some(format!("{a}.{b}.{c}"))
}

#[cfg(not(feature = "zeromq"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!("zeromq {}", UNAVAILABLE.unwrap_or_default())
}
#[cfg(not(feature = "zeromq"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!("zeromq {}", UNAVAILABLE.unwrap_or_default())
}

#[cfg(feature = "zeromq")]
pub use imp::{open_publisher, open_subscriber};

#[cfg(feature = "zeromq")]
mod imp {
    use super::*;
    use crate::netns;
    use crate::systems::Counters;
    use anyhow::Context;
    use std::time::Duration;

    fn params(spec: &RunSpec) -> (String, Option<i32>) {
        let Params::Zeromq { ipc, hwm } = spec.variant.params else {
            unreachable!("zeromq spec without zeromq params")
        };
        let url = if ipc {
            format!("ipc://{}", spec.endpoint.ipc.display())
        } else {
            format!("tcp://{}", spec.endpoint.tcp)
        };
        (url, hwm)
    }

    struct ZmqPublisher {
        _ctx: zmq::Context,
        sock: zmq::Socket,
        errors: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        netns::check_tcp(spec.endpoint.tcp)?;
        let (url, hwm) = params(spec);
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::PUB)?;
        if let Some(h) = hwm {
            sock.set_sndhwm(h)?;
        }
        sock.set_linger(5_000)?;
        sock.bind(&url).with_context(|| format!("bind {url}"))?;
        Ok(Box::new(ZmqPublisher {
            _ctx: ctx,
            sock,
            errors: 0,
        }))
    }

    impl Publisher for ZmqPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            // PUB never blocks: beyond the HWM libzmq drops the message silently.
            loop {
                match self.sock.send(msg, 0) {
                    Ok(()) => return Ok(()),
                    Err(zmq::Error::EINTR) | Err(zmq::Error::EAGAIN) => self.errors += 1,
                    Err(e) => return Err(e).context("zmq send"),
                }
            }
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn counters(&self) -> Counters {
            Counters::from([("send_retries".into(), self.errors)])
        }
    }

    struct ZmqSubscriber {
        _ctx: zmq::Context,
        sock: zmq::Socket,
        msg: zmq::Message,
        timeout: Option<Duration>,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        netns::check_tcp(spec.endpoint.tcp)?;
        let (url, hwm) = params(spec);
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::SUB)?;
        if let Some(h) = hwm {
            sock.set_rcvhwm(h)?;
        }
        sock.set_linger(0)?;
        sock.set_subscribe(b"")?;
        sock.connect(&url)
            .with_context(|| format!("connect {url}"))?;
        Ok(Box::new(ZmqSubscriber {
            _ctx: ctx,
            sock,
            msg: zmq::Message::new(),
            timeout: None,
        }))
    }

    impl Subscriber for ZmqSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            if self.timeout != Some(timeout) {
                self.sock.set_rcvtimeo(timeout.as_millis() as i32)?;
                self.timeout = Some(timeout);
            }
            let mut n = 0;
            let mut flags = 0;
            while n < 256 {
                match self.sock.recv(&mut self.msg, flags) {
                    Ok(()) => {
                        on_msg(&self.msg);
                        n += 1;
                        flags = zmq::DONTWAIT;
                    }
                    Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => break,
                    Err(e) => return Err(e).context("zmq recv"),
                }
            }
            Ok(n)
        }

        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let mut n = 0;
            while n < 256 {
                match self.sock.recv(&mut self.msg, zmq::DONTWAIT) {
                    Ok(()) => {
                        on_msg(&self.msg);
                        n += 1;
                    }
                    Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => break,
                    Err(e) => return Err(e).context("zmq recv"),
                }
            }
            Ok(n)
        }
    }
}
