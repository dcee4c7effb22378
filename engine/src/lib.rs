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
pub use node::Node;
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
}

/// Smallest datagram payload a node accepts (room for headers and a topic).
pub const MIN_PAYLOAD: usize = 512;
/// Longest topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
