//! ringcast itself, over UDP multicast on loopback.
//!
//! Variants:
//! * `default` — the engine's defaults: threading mode `Auto` (resolved per host at
//!   `Node::new`), backend probed, park/backoff idle, NAK repair on;
//! * `inline` — threading `Inline` (no agent threads: the application's `offer`,
//!   `poll` and `do_work` calls run the duty cycles), park idle;
//! * `inline-spin` — `Inline` with the subscriber polling in a spin loop (and socket
//!   busy polling where the engine offers it): the lowest-latency configuration;
//! * `dedicated` — a sender and a receiver agent thread (the layout before `Auto`);
//! * `busy-spin` — `IdleStrategy::BusySpin` as a trading user sets it, threading left
//!   at `Auto`: where agents and the application would outnumber the cores (this
//!   2-core VM) that is inline with the application's thread spinning, elsewhere
//!   dedicated agents that spin;
//! * `encrypted`, `encrypted-busy-spin` — `default` and `busy-spin` with a group key:
//!   every datagram sealed with AES-256-GCM (the cost of encryption, side by side);
//! * `encrypted-mtu1472` — `mtu1472` with the group key: the cost of encryption where
//!   datagrams are Ethernet-sized (per-datagram kernel work, not bytes, dominates);
//! * `shared` — one agent thread per node;
//! * `best-effort` — repair off (the cost of reliability is default vs best-effort);
//! * `io_uring`, `fallback` — the backend forced with `RINGCAST_BACKEND=uring|mmsg`
//!   on the child processes;
//! * `window4m`, `window16m` — a 4 MiB or 16 MiB retransmit window (the defaults
//!   before 1 MiB): what a window that no longer fits the core's cache costs at full
//!   speed (every datagram is built in a buffer last written a window earlier);
//! * `mtu1472`, `mtu1408` — datagram payload capped at 1472 bytes (Ethernet) or
//!   1408 bytes (Aeron's default MTU, for the comparison at equal datagram size);
//! * `ipc` (transport `ipc`) — the IPC transport (`LocalTransport::Ipc`, issue 12):
//!   the publisher's log in `/dev/shm` read in place by the subscriber through the
//!   same `Node`/`Publisher`/`Subscriber` API (topics, sessions, back-pressure
//!   policy), inline threading, the subscriber polling in a spin loop as Aeron's IPC
//!   subscriber does (next to `shm-log`, the storage layer alone).
//!
//! The threading modes reach the engine through [`adapter`]: until the engine has
//! `ThreadingMode::{Auto, Inline}`, `Node::do_work` and `Node::threading`, it maps
//! `Auto` and `Inline` to `Dedicated` (the row's `info` says so).
//!
//! In round-trip mode each process has one node that publishes one topic and
//! subscribes to the other (`/ping`, `/pong`).
//!
//! ringcast reports loss explicitly and the benchmark expects none, so any loss
//! marks the run FAILED. The engine is compiled in with the cargo feature
//! `ringcast`; without it the system reports "not built".

use super::{Params, Publisher, Subscriber, Variant};
use crate::spec::RunSpec;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The engine's threading mode as a variant asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Threading {
    /// The engine's default, resolved per host.
    Auto,
    Dedicated,
    Shared,
    /// No agent threads: the application's calls drive the engine.
    Inline,
}

/// How one ringcast variant is configured.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    threading: Threading,
    busy_spin: bool,
    spin_poll: bool,
    backend: Option<&'static str>,
    max_payload: Option<usize>,
    reliable: bool,
    retransmit_window: Option<usize>,
    encrypted: bool,
    primary: bool,
    ipc: bool,
}

const BASE: Cfg = Cfg {
    threading: Threading::Auto,
    busy_spin: false,
    spin_poll: false,
    backend: None,
    max_payload: None,
    reliable: true,
    retransmit_window: None,
    encrypted: false,
    primary: false,
    ipc: false,
};

pub fn variants() -> Vec<Variant> {
    let mk = |variant: &str, c: Cfg| Variant {
        system: "ringcast".into(),
        variant: variant.into(),
        transport: if c.ipc { "ipc" } else { "udp-multicast" }.into(),
        lossless_expected: true,
        primary: c.primary,
        params: Params::Ringcast {
            busy_spin: c.busy_spin,
            threading: c.threading,
            spin_poll: c.spin_poll,
            backend: c.backend.map(str::to_owned),
            max_payload: c.max_payload,
            reliable: c.reliable,
            retransmit_window: c.retransmit_window,
            encrypted: c.encrypted,
            ipc: c.ipc,
        },
    };
    let dedicated = Cfg {
        threading: Threading::Dedicated,
        ..BASE
    };
    let inline = Cfg {
        threading: Threading::Inline,
        ..BASE
    };
    vec![
        mk(
            "default",
            Cfg {
                primary: true,
                ..BASE
            },
        ),
        mk(
            "inline",
            Cfg {
                primary: true,
                ..inline
            },
        ),
        mk(
            "inline-spin",
            Cfg {
                spin_poll: true,
                primary: true,
                ..inline
            },
        ),
        mk("dedicated", dedicated),
        mk(
            "busy-spin",
            Cfg {
                busy_spin: true,
                primary: true,
                ..BASE
            },
        ),
        mk(
            "encrypted",
            Cfg {
                encrypted: true,
                ..BASE
            },
        ),
        mk(
            "encrypted-busy-spin",
            Cfg {
                encrypted: true,
                busy_spin: true,
                ..BASE
            },
        ),
        mk(
            "shared",
            Cfg {
                threading: Threading::Shared,
                ..BASE
            },
        ),
        mk(
            "best-effort",
            Cfg {
                reliable: false,
                ..BASE
            },
        ),
        mk(
            "io_uring",
            Cfg {
                backend: Some("uring"),
                ..BASE
            },
        ),
        mk(
            "fallback",
            Cfg {
                backend: Some("mmsg"),
                ..BASE
            },
        ),
        mk(
            "window4m",
            Cfg {
                retransmit_window: Some(4 << 20),
                ..BASE
            },
        ),
        mk(
            "window16m",
            Cfg {
                retransmit_window: Some(16 << 20),
                ..BASE
            },
        ),
        mk(
            "mtu1472",
            Cfg {
                max_payload: Some(1472),
                ..BASE
            },
        ),
        mk(
            "encrypted-mtu1472",
            Cfg {
                encrypted: true,
                max_payload: Some(1472),
                ..BASE
            },
        ),
        mk(
            "mtu1408",
            Cfg {
                max_payload: Some(1408),
                ..BASE
            },
        ),
        mk(
            "ipc",
            Cfg {
                ipc: true,
                spin_poll: true,
                primary: true,
                ..inline
            },
        ),
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

/// Where the engine's threading API meets the harness.
#[cfg(feature = "ringcast")]
mod adapter {
    use super::Threading;
    use ringcast::{ConfigBuilder, Node, ThreadingMode};

    /// The engine mode for what a variant asks.
    pub fn mode(t: Threading) -> ThreadingMode {
        match t {
            Threading::Shared => ThreadingMode::Shared,
            Threading::Dedicated => ThreadingMode::Dedicated,
            Threading::Auto => ThreadingMode::Auto,
            Threading::Inline => ThreadingMode::Inline,
        }
    }

    /// Socket busy polling (SO_BUSY_POLL, io_uring NAPI where the kernel has it) for
    /// the lowest-latency variant; on loopback it changes nothing (no NAPI device).
    pub fn busy_poll(b: ConfigBuilder) -> ConfigBuilder {
        b.busy_poll(Some(std::time::Duration::from_micros(50)))
    }

    /// Run the node's duty cycles from the application's thread (inline mode; 0
    /// elsewhere).
    pub fn do_work(node: &Node) -> usize {
        node.do_work()
    }

    /// The mode the node resolved to, for the row's info.
    pub fn resolved(node: &Node, _asked: Threading) -> String {
        format!("{:?}", node.threading())
    }
}

#[cfg(feature = "ringcast")]
mod imp {
    use super::adapter;
    use super::*;
    use crate::netns;
    use crate::spec::Mode;
    use crate::systems::{Counters, Info};
    use anyhow::Context;
    use ringcast::{BackendChoice, Config, Event, IdleStrategy, Node, PublishError};
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};
    use std::time::{Duration, Instant};

    const TOPIC: &str = "/bench";
    /// Round trip: the publisher process publishes pings and subscribes to pongs.
    const PING: &str = "/ping";
    const PONG: &str = "/pong";

    thread_local! {
        /// Round trip: the node of this process, shared by its publisher and its
        /// subscriber (one node publishes one topic and subscribes to the other).
        static RTT_NODE: RefCell<Weak<Node>> = const { RefCell::new(Weak::new()) };
    }

    struct Settings {
        threading: Threading,
        spin_poll: bool,
    }

    fn settings(spec: &RunSpec) -> Settings {
        let Params::Ringcast {
            threading,
            spin_poll,
            ..
        } = spec.variant.params
        else {
            unreachable!("ringcast spec without ringcast params")
        };
        Settings {
            threading,
            spin_poll,
        }
    }

    /// The benchmark's group key: fixed, so that the publisher's and the
    /// subscriber's processes share it (a loopback benchmark keeps no secret).
    fn bench_key() -> Result<ringcast::Keyring> {
        let text = "ringcast-key 1\nkey 0be4c400 \
                    000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
        Ok(ringcast::Keyring::parse(text)?)
    }

    fn new_node(spec: &RunSpec) -> Result<Node> {
        let Params::Ringcast {
            busy_spin,
            threading,
            spin_poll,
            max_payload,
            reliable,
            retransmit_window,
            encrypted,
            ipc,
            ..
        } = spec.variant.params.clone()
        else {
            unreachable!("ringcast spec without ringcast params")
        };
        if !ipc {
            netns::check_multicast(spec.endpoint.group, spec.endpoint.iface)?;
        }
        let mut b = Config::builder()
            .group(spec.endpoint.group)
            .iface("lo")
            .threading(adapter::mode(threading))
            // RINGCAST_BACKEND (set by the harness for the io_uring / fallback
            // variants) overrides the probe.
            .backend(BackendChoice::Auto)
            .reliable(reliable);
        if let Some(m) = max_payload {
            b = b.max_payload(m);
        }
        if let Some(w) = retransmit_window {
            b = b.retransmit_window(w);
        }
        if busy_spin {
            b = b.idle(IdleStrategy::BusySpin);
        }
        if spin_poll {
            b = adapter::busy_poll(b);
        }
        if encrypted {
            b = b.key(Some(bench_key()?));
        }
        if ipc {
            // Logs in /dev/shm (the default), named after this run's group.
            b = b.local_transport(ringcast::LocalTransport::Ipc);
        }
        // The agents are left to the scheduler, as ZeroMQ's I/O threads are; only the
        // process's main thread is pinned.
        let cfg = b.build().context("ringcast config")?;
        Node::new(cfg).context("ringcast node")
    }

    /// The node for `spec`: in round-trip mode one per process, shared by the
    /// publisher and the subscriber of both channels (the echo spec's group is not
    /// used: both topics travel on the forward group).
    fn node(spec: &RunSpec) -> Result<Rc<Node>> {
        if spec.mode != Mode::Rtt {
            return Ok(Rc::new(new_node(spec)?));
        }
        if let Some(n) = RTT_NODE.with(|w| w.borrow().upgrade()) {
            return Ok(n);
        }
        let mut forward = spec.clone();
        if spec.echo {
            forward = spec.echo_spec(); // swap back to the forward endpoint
        }
        let n = Rc::new(new_node(&forward)?);
        RTT_NODE.with(|w| *w.borrow_mut() = Rc::downgrade(&n));
        Ok(n)
    }

    /// The topic a side publishes or subscribes to.
    fn topic(spec: &RunSpec) -> &'static str {
        match (spec.mode, spec.echo) {
            (Mode::Rtt, false) => PING,
            (Mode::Rtt, true) => PONG,
            _ => TOPIC,
        }
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
            ("gso_sends".into(), s.offload.gso_sends),
            ("gso_segments".into(), s.offload.gso_segments),
            ("gro_buffers".into(), s.offload.gro_buffers),
            ("gro_segments".into(), s.offload.gro_segments),
            ("ipc_published".into(), s.ipc_published),
            ("ipc_delivered".into(), s.ipc_delivered),
            ("ipc_lost".into(), s.ipc_lost),
            ("delivered_direct".into(), s.delivered_direct),
        ])
    }

    fn stats_info(node: &Node, asked: Threading) -> Info {
        let s = node.stats();
        Info::from([
            ("backend".into(), s.backend.to_string()),
            ("backend_reason".into(), s.backend_reason),
            ("threading".into(), adapter::resolved(node, asked)),
            ("threading_reason".into(), s.threading_reason),
            ("gso".into(), format!("{:?}", s.offload.gso)),
            ("gro".into(), format!("{:?}", s.offload.gro)),
        ])
    }

    struct RcPublisher {
        publ: ringcast::Publisher,
        node: Rc<Node>,
        threading: Threading,
        back_pressured: u64,
    }

    pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
        let node = node(spec)?;
        let publ = node.publisher(topic(spec))?;
        Ok(Box::new(RcPublisher {
            publ,
            node,
            threading: settings(spec).threading,
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
                        // this core, or be this thread in inline mode) the chance to
                        // drain it.
                        self.back_pressured += 1;
                        tries += 1;
                        adapter::do_work(&self.node);
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
        fn do_work(&mut self) -> Result<usize> {
            Ok(adapter::do_work(&self.node))
        }
        fn counters(&self) -> Counters {
            let mut c = stats_counters(&self.node);
            c.insert("offer_back_pressured".into(), self.back_pressured);
            c
        }
        fn info(&self) -> Info {
            stats_info(&self.node, self.threading)
        }
    }

    struct RcSubscriber {
        sub: ringcast::Subscriber,
        node: Rc<Node>,
        threading: Threading,
        spin_poll: bool,
        loss_events: u64,
        loss_reported: u64,
    }

    pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
        let node = node(spec)?;
        // Lossless, as every system here is configured (ZeroMQ HWM=0, nng's and
        // Aeron's defaults): the subscriber paces the publisher.
        let sub = node
            .subscriber_with_policy(&[topic(spec)], ringcast::SlowConsumerPolicy::BackPressure)?;
        let s = settings(spec);
        Ok(Box::new(RcSubscriber {
            sub,
            node,
            threading: s.threading,
            spin_poll: s.spin_poll,
            loss_events: 0,
            loss_reported: 0,
        }))
    }

    impl RcSubscriber {
        /// One non-blocking poll (inline, `poll` reads the socket itself).
        fn poll_once(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> usize {
            let (events, lost) = (&mut self.loss_events, &mut self.loss_reported);
            let mut n = 0;
            self.sub
                .poll(256, |ev| handle(ev, on_msg, &mut n, events, lost));
            n
        }
    }

    fn handle(
        ev: Event<'_>,
        on_msg: &mut dyn FnMut(&[u8]),
        n: &mut usize,
        events: &mut u64,
        lost: &mut u64,
    ) {
        match ev {
            Event::Message(m) => {
                on_msg(m.payload());
                *n += 1;
            }
            Event::Loss(l) => {
                *events += 1;
                *lost += l.count();
            }
            Event::Session(_) => {}
            _ => {}
        }
    }

    impl Subscriber for RcSubscriber {
        fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            if self.spin_poll {
                let deadline = Instant::now() + timeout;
                loop {
                    let n = self.poll_once(on_msg);
                    if n > 0 || Instant::now() >= deadline {
                        return Ok(n);
                    }
                    std::hint::spin_loop();
                }
            }
            let (events, lost) = (&mut self.loss_events, &mut self.loss_reported);
            let mut n = 0;
            self.sub
                .poll_timeout(256, timeout, |ev| handle(ev, on_msg, &mut n, events, lost));
            Ok(n)
        }
        fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
            Ok(self.poll_once(on_msg))
        }
        fn counters(&self) -> Counters {
            let mut c = stats_counters(&self.node);
            c.insert("loss_events".into(), self.loss_events);
            c.insert("loss_reported_messages".into(), self.loss_reported);
            c
        }
        fn info(&self) -> Info {
            let mut i = stats_info(&self.node, self.threading);
            i.insert("spin_poll".into(), self.spin_poll.to_string());
            i
        }
    }
}
