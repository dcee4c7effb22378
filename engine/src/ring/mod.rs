//! Lock-free rings between application threads and agents.
//!
//! [`spsc`] is a single-producer single-consumer ring of variable-length records in one
//! contiguous byte buffer (claim → fill in place → commit; peek → consume → release),
//! the structure behind every publisher and subscription queue. [`log`] is a
//! publisher's stream in a shared-memory file that local readers map (IPC).

pub mod log;
pub mod spsc;

pub use spsc::{byte_ring, Claim, Consumer, Producer};
