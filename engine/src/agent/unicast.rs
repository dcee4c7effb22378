//! Unicast where multicast does not reach: whether the node sends by unicast, and to
//! whom. The discovery thread decides both (from the transport setting, what it hears,
//! and the peers whose subscriptions match what this node publishes); the sender agent
//! reads them once per transmit (one atomic load while nothing changed, never per
//! message) and sends each batch to every destination in turn; the receiver agent
//! sends its NAKs and status to each publisher's own address instead of the group's
//! control address.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::io::TxBackend;

/// Destinations a node sends to at most (the directory's bound already caps them).
pub(crate) const MAX_DESTINATIONS: usize = 4096;

/// The node's unicast state, shared by discovery and the agents.
#[derive(Default)]
pub(crate) struct Unicast {
    active: AtomicBool,
    version: AtomicU64,
    destinations: Mutex<Vec<SocketAddrV4>>,
}

impl Unicast {
    /// Whether data, NAKs and status go by unicast.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// From now on data, NAKs and status go by unicast.
    pub(crate) fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    /// The peers this node's data goes to (each one's data port); true when that
    /// changed.
    pub(crate) fn set_destinations(&self, mut to: Vec<SocketAddrV4>) -> bool {
        to.sort_unstable();
        to.dedup();
        to.truncate(MAX_DESTINATIONS);
        let mut d = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        if *d == to {
            return false;
        }
        *d = to;
        self.version.fetch_add(1, Ordering::Release);
        true
    }

    /// The destinations now.
    pub(crate) fn destinations(&self) -> Vec<SocketAddrV4> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The sender's side: its backend, its copy of the destinations, and (with a group
/// key) the sealing of every batch.
pub(crate) struct Fanout {
    pub backend: Option<Box<dyn TxBackend>>,
    seen: u64,
    destinations: Vec<SocketAddrV4>,
    pub guard: Option<crate::seal::Guard>,
}

impl Fanout {
    pub(crate) fn new() -> Self {
        Fanout {
            backend: None,
            seen: 0,
            destinations: Vec::new(),
            guard: None,
        }
    }

    /// A sender for one transmit: to the group, or (unicast) to each destination.
    /// Looks at the shared state once.
    pub(crate) fn sender<'a>(
        &'a mut self,
        shared: &Unicast,
    ) -> Option<impl FnMut(&[&[u8]]) -> Result<(), crate::io::IoError> + 'a> {
        let unicast = shared.is_active();
        if unicast {
            let v = shared.version.load(Ordering::Acquire);
            if v != self.seen {
                self.seen = v;
                self.destinations.clone_from(
                    &shared
                        .destinations
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
        let Fanout {
            backend,
            destinations,
            guard,
            ..
        } = self;
        let b = backend.as_mut()?;
        Some(move |datagrams: &[&[u8]]| {
            let mut send =
                |datagrams: &[&[u8]]| Self::send(b.as_mut(), unicast, destinations, datagrams);
            match guard.as_mut() {
                Some(g) => g.seal_batch(datagrams, send),
                None => send(datagrams),
            }
        })
    }

    fn send(
        b: &mut dyn TxBackend,
        unicast: bool,
        destinations: &[SocketAddrV4],
        datagrams: &[&[u8]],
    ) -> Result<(), crate::io::IoError> {
        {
            if !unicast {
                return b.send_batch(datagrams);
            }
            // One failed destination must not stop the others: the batch counts as
            // sent when any took it (a receiver that missed it asks again).
            let mut last = Ok(());
            let mut any = destinations.is_empty();
            for &to in destinations.iter() {
                match b.send_batch_to(datagrams, Some(to)) {
                    Ok(()) => any = true,
                    Err(e) => {
                        tracing::debug!(error = %e, %to, "unicast send failed");
                        last = Err(e);
                    }
                }
            }
            if any {
                Ok(())
            } else {
                last
            }
        }
    }
}
