//! Sans-IO protocol state machines: deterministic, no sockets, time passed in.
//!
//! [`sender`] numbers and packs a publishing session's messages into datagrams;
//! [`receiver`] tracks the sessions heard on a group, detects loss, drops duplicates
//! and reassembles fragments. Tested with a simulated network in [`sim`](self) tests.

pub mod receiver;
pub mod sender;

#[cfg(test)]
mod sim_tests;

pub use receiver::{Delivery, Receiver, SessionKey};
pub use sender::{Append, DatagramBuf, SenderStream};
