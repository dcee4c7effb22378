//! Typed errors of the public API.

use crate::io::IoError;

/// Errors creating or running a node, publisher or subscriber.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The I/O layer failed (socket setup, backend start).
    #[error(transparent)]
    Io(#[from] IoError),
    /// A topic is too long or empty where not allowed.
    #[error("invalid topic: {0}")]
    Topic(String),
    /// An agent thread could not be started.
    #[error("starting agent thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The node has stopped (an agent hit a fatal error, or the node was dropped).
    #[error("node stopped: {0}")]
    Stopped(String),
    /// A wait ran out of time ([`Node::wait_for_receivers`](crate::Node::wait_for_receivers)).
    #[error("timed out: {0}")]
    Timeout(String),
    /// [`Node::shutdown`](crate::Node::shutdown) ran out of time before everything
    /// was sent and acknowledged (the node stopped all the same).
    #[error(
        "shutdown timed out: {} {unacknowledged} datagram(s) not acknowledged by every receiver",
        if *unsent { "messages were left unsent (flow control held them);" } else { "all sent;" }
    )]
    Unflushed {
        /// Messages were still queued in publisher rings (or held by flow control).
        unsent: bool,
        /// Datagrams sent that not every live receiver acknowledged.
        unacknowledged: u64,
    },
}

/// Why a message was not accepted by a publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The publisher's ring is full: the sender agent has not caught up. Retry later;
    /// nothing was queued. Counted in `Stats::back_pressure`.
    #[error("back-pressured: publisher ring full")]
    BackPressured,
    /// The message exceeds the configured maximum (or the ring's capacity).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A blocking call gave up.
    #[error("timed out")]
    Timeout,
    /// The node's agents have stopped.
    #[error("node stopped")]
    Stopped,
    /// A whisper by name found no peer of that name in the directory, or several.
    #[error("no single peer named {0:?} in the directory")]
    UnknownPeer(String),
}
