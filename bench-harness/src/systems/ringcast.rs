//! ringcast itself, over UDP multicast on loopback.
//!
//! Variants: `default` (backend probed, park/backoff idle, a sender and a
//! receiver agent thread, NAK repair on), `best-effort` (repair off: the cost of
//! reliability is default vs best-effort), `busy-spin` (agents spin), `shared` (one agent
//! thread per node), `io_uring` and `fallback` (the backend forced with
//! `RINGCAST_BACKEND=uring|mmsg` on the child processes), and `mtu1472`
//! (datagram payload capped at 1472 bytes, as on an Ethernet network).
//! ringcast reports loss explicitly and the benchmark expects none, so any loss
//! marks the run FAILED.
//!
//! The engine is compiled in with the cargo feature `ringcast`; without it the
//! system reports "not built".

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;

pub fn variants() -> Vec<Variant> {
    let mk = |variant: &str,
              busy_spin,
              shared,
              backend: Option<&str>,
              max_payload,
              reliable,
              primary| Variant {
        system: "ringcast".into(),
        variant: variant.into(),
        transport: "udp-multicast".into(),
        lossless_expected: true,
        primary,
        params: Params::Ringcast {
            busy_spin,
            shared,
            backend: backend.map(str::to_owned),
            max_payload,
            reliable,
        },
    };
    vec![
        mk("default", false, false, None, None, true, true),
        mk("best-effort", false, false, None, None, false, true),
        mk("busy-spin", true, false, None, None, true, true),
        mk("shared", false, true, None, None, true, false),
        mk("io_uring", false, false, Some("uring"), None, true, false),
        mk("fallback", false, false, Some("mmsg"), None, true, false),
        mk("mtu1472", false, false, None, Some(1472), true, false),
    ]
}

#[cfg(not(feature = "ringcast"))]
pub const UNAVAILABLE: Option<&str> =
    Some("not built: the engine is compiled in with `--features ringcast` once it builds");
#[cfg(feature = "ringcast")]
pub const UNAVAILABLE: Option<&str> = None;

#[cfg(not(feature = "ringcast"))]
pub fn open_publisher(_: &RunSpec) -> Result<Box<dyn Publisher>> {
    anyhow::bail!("ringcast {}", UNAVAILABLE.unwrap_or_default())
}
#[cfg(not(feature = "ringcast"))]
pub fn open_subscriber(_: &RunSpec) -> Result<Box<dyn Subscriber>> {
    anyhow::bail!("ringcast {}", UNAVAILABLE.unwrap_or_default())
}

#[cfg(feature = "ringcast")]
pub use imp::{open_publisher, open_subscriber};

#[cfg(feature = "ringcast")]
mod imp {
    use super::*;
    use crate::netns;
    use crate::systems::{Counters, Info};
    use anyhow::Context;
    use ringcast::{BackendChoice, Config, Event, IdleStrategy, Node, PublishError, ThreadingMode};
    use std::time::Duration;

    const TOPIC: &str = "/bench";

    fn node(spec: &RunSpec, core: Option<usize>) -> Result<(Node, bool)> {
        let Params::Ringcast {
            busy_spin,
            shared,
            max_payload,
            reliable,
            ..
        } = spec.variant.params.clone()
        else {
            unreachable!("ringcast spec without ringcast params")
        };
        netns::check_multicast(spec.endpoint.group, spec.endpoint.iface)?;
        let mut b = Config::builder()
            .group(spec.endpoint.group)
            .iface("lo")
            .threading(if shared {
                ThreadingMode::Shared
            } else {
                ThreadingMode::Dedicated
            })
            // RINGCAST_BACKEND (set by the harness for the io_uring / fallback
            // variants) overrides the probe.
            .backend(BackendChoice::Auto)
            .reliable(reliable);
        if let Some(m) = max_payload {
            b = b.max_payload(m);
        }
        if busy_spin {
            b = b.idle(IdleStrategy::BusySpin);
        }
        // The agents are left to the scheduler, as ZeroMQ's I/O threads are; only the
        // process's main thread is pinned. (On a 2-core host an application thread that
        // busy-waits on its send schedule delays its own sender agent by about one
        // scheduler slice either way: see the notes in RESULTS.)
        let _ = core;
        let cfg = b.build().context("ringcast config")?;
        Ok((Node::new(cfg).context("ringcast node")?, busy_spin))
    }

    fn stats_counters(node: &Node) -> Counters {
        let s = node.stats();
        Counters::from([
            ("datagrams_sent".into(), s.datagrams_sent),
            ("messages_sent".into(), s.messages_sent),
            ("send_errors".into(), s.send_errors),
            ("datagrams_received".into(), s.datagrams_received),
            ("messages_received".into(), s.messages_received),
            ("gaps".into(), s.gaps),
            ("lost_messages".into(), s.lost_messages),
            ("duplicates".into(), s.duplicates),
            ("malformed".into(), s.malformed),
            ("ring_full_drops".into(), s.ring_full_drops),
            ("back_pressure".into(), s.back_pressure),
            ("sender_max_cycle_ns".into(), s.sender_max_cycle_ns),
            ("receiver_max_cycle_ns".into(), s.receiver_max_cycle_ns),
            ("max_payload".into(), s.max_payload as u64),
            ("rcvbuf".into(), s.rcvbuf as u64),
            ("sndbuf".into(), s.sndbuf as u64),
        ])
    }

    fn stats_info(node: &Node) -> Info {
        let s = node.stats();
        Info::from([
            ("backend".into(), s.backend.to_string()),
            ("backend_reason".into(), s.backend_reason),
        ])
    }

    struct RcPublisher {
        publ: ringcast::Publisher,
        node: Node,
        back_pressured: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        let (node, _) = node(spec, spec.pub_core)?;
        let publ = node.publisher(TOPIC)?;
        Ok(Box::new(RcPublisher {
            publ,
            node,
            back_pressured: 0,
        }))
    }

    impl Publisher for RcPublisher {
        fn send(&mut self, msg: &[u8]) -> Result<()> {
            let mut tries = 0u32;
            loop {
                match self.publ.offer(msg) {
                    Ok(()) => return Ok(()),
                    Err(PublishError::BackPressured) => {
                        // The ring is full: give the sender agent (which may share
                        // this core) the chance to drain it.
                        self.back_pressured += 1;
                        tries += 1;
                        if tries < 64 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    Err(e) => return Err(e).context("ringcast offer"),
                }
            }
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            self.publ
                .flush(Duration::from_secs(30))
                .context("ringcast flush")?;
            Ok(())
        }
        fn counters(&self) -> Counters {
            let mut c = stats_counters(&self.node);
            c.insert("offer_back_pressured".into(), self.back_pressured);
            c
        }
        fn info(&self) -> Info {
            stats_info(&self.node)
        }
    }

    struct RcSubscriber {
        sub: ringcast::Subscriber,
        node: Node,
        loss_events: u64,
        loss_reported: u64,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        let (node, _) = node(spec, spec.sub_core)?;
        let sub = node.subscriber(&[TOPIC])?;
        Ok(Box::new(RcSubscriber {
            sub,
            node,
            loss_events: 0,
            loss_reported: 0,
        }))
    }

    impl Subscriber for RcSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let (events, lost) = (&mut self.loss_events, &mut self.loss_reported);
            let mut n = 0;
            self.sub.poll_timeout(256, timeout, |ev| match ev {
                Event::Message(m) => {
                    on_msg(m.payload());
                    n += 1;
                }
                Event::Loss(l) => {
                    *events += 1;
                    *lost += l.count();
                }
                Event::Session(_) => {}
            });
            Ok(n)
        }
        fn counters(&self) -> Counters {
            let mut c = stats_counters(&self.node);
            c.insert("loss_events".into(), self.loss_events);
            c.insert("loss_reported_messages".into(), self.loss_reported);
            c
        }
        fn info(&self) -> Info {
            stats_info(&self.node)
        }
    }
}
