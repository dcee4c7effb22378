//! The messaging systems under test, behind one small publisher/subscriber interface.
//!
//! Each system module opens a [`Publisher`] or a [`Subscriber`] for a
//! [`RunSpec`]; the generic loops in `child.rs` do the pacing, stamping,
//! verification and timing, so every system is measured by the same code.

pub mod aeron;
pub mod iceoryx2;
pub mod nng;
pub mod ringcast;
pub mod shm_log;
pub mod udp;
pub mod zenoh;
pub mod zeromq;

use crate::spec::RunSpec;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Counters a system reports about itself (back-pressure retries, drops, ...).
pub type Counters = BTreeMap<String, u64>;
/// Facts a system reports about itself (e.g. the I/O backend it chose).
pub type Info = BTreeMap<String, String>;

/// The sending side of a system.
pub trait Publisher {
    /// Send one message. Back-pressure is handled inside (retry and count);
    /// returns once the message is accepted (possibly into a batch).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Hand any batched messages to the kernel or library now.
    fn flush(&mut self) -> Result<()>;
    /// Everything sent so far has left the publisher's own buffers (where the
    /// system can tell); called once after the last counted send.
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
    /// Give the system's own duty cycle a turn while the application waits (an
    /// invoker-mode media driver, an inline engine); returns the work done.
    /// Called in every spin of a paced wait and while idle.
    fn do_work(&mut self) -> Result<usize> {
        Ok(0)
    }
    fn counters(&self) -> Counters {
        Counters::new()
    }
    fn info(&self) -> Info {
        Info::new()
    }
}

/// The receiving side of a system.
pub trait Subscriber {
    /// Wait up to about `timeout` for data, hand each received message to
    /// `on_msg`, and return how many were handed over.
    fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize>;
    /// Hand over what has arrived without waiting (the round-trip publisher polls
    /// its pongs between pings). The default waits at most 1 ms; systems override it
    /// with a truly non-blocking receive.
    fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        self.poll(Duration::from_millis(1), on_msg)
    }
    fn counters(&self) -> Counters {
        Counters::new()
    }
    fn info(&self) -> Info {
        Info::new()
    }
}

/// System-specific settings of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Params {
    Udp {
        batching: udp::Batching,
    },
    Zeromq {
        ipc: bool,
        /// SNDHWM/RCVHWM; `None` leaves libzmq's default (1000).
        hwm: Option<i32>,
    },
    Nng {
        ipc: bool,
        /// NNG_OPT_SENDBUF/RECVBUF in messages; `None` leaves the defaults.
        buffers: Option<i32>,
    },
    Ringcast {
        busy_spin: bool,
        /// The engine's threading mode (see `ringcast::Threading`).
        threading: ringcast::Threading,
        /// The subscriber polls in a spin loop instead of waiting in `poll_timeout`.
        #[serde(default)]
        spin_poll: bool,
        /// RINGCAST_BACKEND for the children (`uring`, `mmsg`); `None` = probe.
        backend: Option<String>,
        max_payload: Option<usize>,
        /// NAK repair on (default) or best effort.
        reliable: bool,
        /// Bytes a publisher keeps for retransmission; `None` = the engine's default.
        #[serde(default)]
        retransmit_window: Option<usize>,
        /// Every datagram sealed with a group key (AES-256-GCM).
        #[serde(default)]
        encrypted: bool,
        /// The IPC transport (`LocalTransport::Ipc`): publisher and subscriber meet
        /// over a log in shared memory, no network.
        #[serde(default)]
        ipc: bool,
    },
    /// ringcast's shared-memory log alone (`shm_log`).
    RingcastShm {},
    /// Eclipse iceoryx2, lossless (`iceoryx2`).
    Iceoryx2 {},
    Aeron {
        /// Media driver and client conductor in INVOKER mode: their duty cycles run in
        /// the application's loop (no driver threads).
        #[serde(default)]
        invoker: bool,
        /// `aeron:ipc` instead of UDP multicast on loopback.
        ipc: bool,
    },
    Zenoh {
        /// The UDP multicast locator instead of loopback TCP.
        multicast: bool,
        /// CongestionControl::Block (else Drop).
        block: bool,
        /// Payloads in zenoh's shared memory (an `ShmProvider` buffer per message;
        /// the loopback TCP session carries only their descriptors).
        #[serde(default)]
        shm: bool,
    },
}

/// One configuration of one system, as it appears in the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// `ringcast`, `zeromq`, `nng`, `udp`, `aeron` or `zenoh`.
    pub system: String,
    /// e.g. `default`, `hwm=0`, `packed`, `mmsg`, `busy-spin`, `io_uring`, `fallback`.
    pub variant: String,
    /// `udp-multicast`, `tcp`, `ipc`.
    pub transport: String,
    /// Whether any loss marks the run FAILED (otherwise loss is reported as "lossy").
    pub lossless_expected: bool,
    /// Primary variants also run the rate and count-sweep modes.
    pub primary: bool,
    pub params: Params,
}

impl Variant {
    /// `system/variant/transport`, the label used in tables and plots.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.system, self.transport, self.variant)
    }
}

/// Every system the harness knows, in report order.
pub const SYSTEMS: &[&str] = &[
    "ringcast", "zeromq", "nng", "udp", "aeron", "zenoh", "iceoryx2",
];

/// Why a system cannot run in this build, if it cannot.
pub fn unavailable(system: &str) -> Option<&'static str> {
    match system {
        "ringcast" => ringcast::UNAVAILABLE,
        "zeromq" => zeromq::UNAVAILABLE,
        "nng" => nng::UNAVAILABLE,
        "udp" => None,
        "aeron" => aeron::UNAVAILABLE,
        "zenoh" => zenoh::UNAVAILABLE,
        "iceoryx2" => iceoryx2::UNAVAILABLE,
        _ => Some("unknown system"),
    }
}

/// All variants of all systems.
pub fn catalog() -> Vec<Variant> {
    let mut v = Vec::new();
    v.extend(ringcast::variants());
    v.extend(shm_log::variants());
    v.extend(zeromq::variants());
    v.extend(nng::variants());
    v.extend(udp::variants());
    v.extend(aeron::variants());
    v.extend(zenoh::variants());
    v.extend(iceoryx2::variants());
    v
}

/// Open the publishing side of `spec`'s system.
pub fn open_publisher(spec: &RunSpec) -> Result<Box<dyn Publisher>> {
    match &spec.variant.params {
        Params::Udp { batching } => Ok(Box::new(udp::UdpPublisher::open(spec, *batching)?)),
        Params::Zeromq { .. } => zeromq::open_publisher(spec),
        Params::Nng { .. } => nng::open_publisher(spec),
        Params::Ringcast { .. } => ringcast::open_publisher(spec),
        Params::RingcastShm {} => shm_log::open_publisher(spec),
        Params::Aeron { .. } => aeron::open_publisher(spec),
        Params::Zenoh { .. } => zenoh::open_publisher(spec),
        Params::Iceoryx2 {} => iceoryx2::open_publisher(spec),
    }
}

/// Open the subscribing side of `spec`'s system.
pub fn open_subscriber(spec: &RunSpec) -> Result<Box<dyn Subscriber>> {
    match &spec.variant.params {
        Params::Udp { batching } => Ok(Box::new(udp::UdpSubscriber::open(spec, *batching)?)),
        Params::Zeromq { .. } => zeromq::open_subscriber(spec),
        Params::Nng { .. } => nng::open_subscriber(spec),
        Params::Ringcast { .. } => ringcast::open_subscriber(spec),
        Params::RingcastShm {} => shm_log::open_subscriber(spec),
        Params::Aeron { .. } => aeron::open_subscriber(spec),
        Params::Zenoh { .. } => zenoh::open_subscriber(spec),
        Params::Iceoryx2 {} => iceoryx2::open_subscriber(spec),
    }
}

/// Environment variables a child of this variant needs.
pub fn child_env(variant: &Variant) -> Vec<(&'static str, String)> {
    match &variant.params {
        Params::Ringcast {
            backend: Some(b), ..
        } => vec![("RINGCAST_BACKEND", b.clone())],
        _ => Vec::new(),
    }
}

/// Versions of the C libraries linked in, for the environment record.
pub fn library_versions() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(v) = zeromq::library_version() {
        m.insert("libzmq".to_owned(), v);
    }
    if let Some(v) = nng::library_version() {
        m.insert("nng (C)".to_owned(), v);
    }
    if let Some(v) = aeron::library_version() {
        m.insert("aeron (C)".to_owned(), v);
    }
    if let Some(v) = iceoryx2::library_version() {
        m.insert("iceoryx2".to_owned(), v);
    }
    m
}
