//! Sans-IO protocol state machines: deterministic, no sockets, time passed in.
//!
//! [`publisher`] is the publishing side of a session as one state machine (stream,
//! retransmit window, flow control, rate limit, heartbeats); [`sender`] numbers and packs a publishing session's messages into datagrams;
//! [`receiver`] tracks the sessions heard on a group, detects loss, drops duplicates
//! and reassembles fragments, and says when to report status; [`flow`] keeps a
//! publisher within its receivers' windows. Tested with a simulated network in [`sim`](self) tests.

pub mod discovery;
pub mod flow;
pub mod last_value;
pub mod publisher;
pub mod receiver;
pub mod retransmit;
pub mod sender;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod sim_tests;

pub use discovery::{
    Destination, Discovery, DiscoveryConfig, DiscoveryCounters, LeaveReason, Peer, PeerEvent,
};
pub use flow::{FlowControl, RateLimiter};
pub use publisher::{Blocked, ControlEvent, Publisher, PublisherConfig, Transmit, Transmitted};
pub use receiver::{Delivery, Receiver, ReceiverConfig, SessionKey};
pub use retransmit::Retransmitter;
pub use sender::{Append, DatagramBuf, SenderStream};
