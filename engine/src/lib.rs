//! ringcast — brokerless UDP multicast pub/sub for latency-critical applications.
//!
//! A [`Node`] joins a multicast group; [`Publisher`]s send topic-tagged messages
//! through lock-free rings to a sender agent that packs them into datagrams and
//! hands them to the kernel in batches (io_uring, or `sendmmsg` where io_uring is
//! unavailable); a receiver agent checks every publisher's sequence, reassembles
//! fragments and fills each [`Subscriber`]'s ring. Loss is never silent: a gap is
//! handed to subscribers as an explicit [`Loss`] event and counted in [`Stats`].
//!
//! See the README for an example.

mod agent;
mod config;
mod error;
mod io;
mod node;
mod proto;
mod publisher;
mod ring;
mod stats;
mod stats_file;
mod subscriber;
mod wire;

pub use config::{
    BackendChoice, Config, ConfigBuilder, FlowControlStrategy, IdleStrategy, SlowConsumerPolicy,
    ThreadingMode, DEFAULT_GROUP, DEFAULT_IFACE,
};
pub use error::{Error, PublishError};
pub use io::fault::{FaultConfig, FaultCounts};
pub use io::BackendKind;
pub use io::{BusyPoll, OffloadReport, OffloadStatus};
pub use node::{HandlerGuard, Node};
pub use publisher::{Claim, Publisher};
pub use stats::Stats;
pub use subscriber::{
    Event, Loss, LossReason, Message, OwnedEvent, OwnedMessage, SessionEvent, SessionState,
    Subscriber,
};

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
