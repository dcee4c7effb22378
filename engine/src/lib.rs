//! ringcast — brokerless UDP multicast pub/sub for latency-critical applications.
//!
//! A [`Node`] joins a multicast group; [`Publisher`]s send topic-tagged messages
//! through lock-free rings to a sender agent that packs them into datagrams and
//! hands them to the kernel in batches (io_uring, or `sendmmsg` where io_uring is
//! unavailable); a receiver agent checks every publisher's sequence, reassembles
//! fragments and fills each [`Subscriber`]'s ring. Loss is never silent: a gap is
//! handed to subscribers as an explicit [`Loss`] event and counted in [`Stats`].
//!
//! ```
//! use std::time::Duration;
//! use ringcast::{Config, Event, Node, SlowConsumerPolicy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Loopback and TTL 0 are the defaults: nothing leaves this host.
//! let node = Node::new(Config::builder().group("239.255.42.43:41990".parse()?).build()?)?;
//! // The default policy (Drop) never holds a publisher back; this subscriber asks to be
//! // lossless instead, and paces the publishers it hears.
//! let mut prices = node.subscriber_with_policy(&["/md/"], SlowConsumerPolicy::BackPressure)?;
//! let mut publisher = node.publisher("/md/eurusd")?;
//! publisher.offer(b"1.0842")?;
//! publisher.flush(Duration::from_secs(5))?;
//!
//! let mut got = None;
//! while got.is_none() {
//!     prices.poll_timeout(16, Duration::from_secs(5), |event| {
//!         if let Event::Message(m) = event {
//!             got = Some((m.topic().to_owned(), m.payload().to_vec(), m.seq()));
//!         }
//!     });
//!     if let Some(e) = prices.error() {
//!         return Err(e.into()); // the node stopped
//!     }
//! }
//! assert_eq!(got, Some(("/md/eurusd".to_owned(), b"1.0842".to_vec(), 0)));
//! # Ok(())
//! # }
//! ```
//!
//! The README has the rest: threading, handlers, policies, flow control, the CLI.

#![warn(missing_docs)]

mod agent;
mod config;
mod error;
mod io;
mod ipc;
mod mesh;
mod node;
mod peers;
mod proto;
mod publisher;
mod ring;
mod seal;
mod stats;
mod stats_file;
mod subscriber;
mod wire;

/// Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`):
/// each feeds arbitrary bytes to a decoder or a state machine.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use config::{
    BackendChoice, Config, ConfigBuilder, FlowControlStrategy, IdleStrategy, LocalTransport,
    Origin, SlowConsumerPolicy, ThreadingMode, Transport, CONFIG_ENV, DEFAULT_GROUP, DEFAULT_IFACE,
    UNICAST_FALLBACK,
};
pub use error::{Error, PublishError};
pub use io::fault::{FaultConfig, FaultCounts, FaultSpecError};
pub use io::{BackendKind, IoError};
pub use io::{BusyPoll, OffloadReport, OffloadStatus};
pub use mesh::{Mesh, MeshEvent};
pub use node::{HandlerGuard, Node};
pub use peers::PeerEvents;
pub use proto::{LeaveReason, Peer, PeerEvent};
pub use publisher::{Claim, Publisher};
pub use seal::{Keyring, SealError, OVERHEAD as SEAL_OVERHEAD};
pub use stats::Stats;
pub use subscriber::{
    Event, Loss, LossReason, Message, OwnedEvent, OwnedMessage, SessionEvent, SessionState,
    Subscriber,
};

/// The settings' syntax and table (`ringcast config`, the README's table).
pub mod settings {
    pub use crate::config::{markdown_table, parse_duration, parse_size, unknown_env_vars};
}

/// Reading other processes' counters (`ringcast stat`).
pub mod stat {
    pub use crate::stats_file::{default_dir, read_all, NodeStats};
}

/// Host diagnostics for `ringcast doctor`: kernel, io_uring probe, interfaces.
pub mod doctor {
    pub use crate::io::iface::{list as interfaces, resolve as resolve_interface, Interface};
    pub use crate::io::probe::{run as probe, BackendReport, Probe};
    pub use crate::io::Offload;

    /// The threading a node would run with on this host for `mode` and `idle`: the
    /// resolved mode, why, and a warning when it oversubscribes the usable cores.
    pub fn threading(
        mode: crate::ThreadingMode,
        idle: crate::IdleStrategy,
    ) -> (crate::ThreadingMode, String, Option<String>) {
        let cores = crate::agent::threading::usable_cores();
        let c = crate::agent::threading::resolve(mode, idle, cores);
        (c.mode, c.reason, c.warning)
    }
}

/// Recordings: messages appended to memory-mapped segment files with an index, and read back.
pub mod record;

/// A stream in a shared-memory file that local processes map and read (the storage
/// of the IPC transport, issue 12): one writer, readers at their own positions,
/// back-pressuring readers lent records in place, others copying and told what they
/// lost when lapped.
pub mod shm {
    pub use crate::ring::log::{
        process_alive, read_meta, remove_dead_logs, Join, LogBeat, LogClaim, LogError, LogEvent,
        LogInfo, LogMeta, LogReader, LogWriter, WriterCounters, HEADER_LEN, MAX_CAPACITY,
        MAX_READERS, MAX_TOPIC, MIN_CAPACITY, RECORD_HEADER, SUFFIX,
    };
}

/// Internals re-exported for the micro-benchmarks in `engine/benches/` only: not part of
/// the API, no stability promise, may change with any commit.
#[doc(hidden)]
pub mod __bench {
    pub use crate::agent::topic_matches;
    pub use crate::proto::{Append, DatagramBuf, Delivery, Receiver, ReceiverConfig, SenderStream};
    pub use crate::ring::{byte_ring, Claim, Consumer, Producer};
    pub use crate::wire::{encode_frame, Frames, Header, Kind, HEADER_LEN};
}

/// Smallest datagram payload a node accepts (room for headers and a topic).
pub const MIN_PAYLOAD: usize = 512;
/// Longest topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
