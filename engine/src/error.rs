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
}
