//! Membership events for the application: [`PeerEvents`], from
//! [`Node::peer_events`](crate::Node::peer_events).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::agent::discovery::Listener;
use crate::agent::Shared;
use crate::error::Error;
use crate::proto::PeerEvent;

/// Peers joining and leaving, as the node's discovery sees them (Zyre's ENTER and
/// EXIT). Each handle gets every event from its creation on, in order; a handle
/// that is not read keeps the newest 1,024 and counts what it dropped.
pub struct PeerEvents {
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    /// Wakes the thread parked in `recv` (made once per thread).
    parker: Option<(std::thread::ThreadId, std::task::Waker)>,
}

impl std::fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerEvents").finish_non_exhaustive()
    }
}

impl PeerEvents {
    pub(crate) fn new(listener: Arc<Listener>, shared: Arc<Shared>) -> Self {
        PeerEvents {
            listener,
            shared,
            parker: None,
        }
    }

    /// The next event, if one is queued.
    pub fn try_recv(&mut self) -> Option<PeerEvent> {
        self.listener.queue.pop()
    }

    /// Waits up to `timeout` for the next event (parked: the discovery thread wakes
    /// it). `None` when the time ran out or the node stopped ([`error`](Self::error)
    /// says which).
    pub fn recv(&mut self, timeout: Duration) -> Option<PeerEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            let now = Instant::now();
            if now >= deadline || self.shared.stopped() {
                return None;
            }
            let me = std::thread::current().id();
            let waker = match &self.parker {
                Some((id, w)) if *id == me => w.clone(),
                _ => {
                    let w = crate::agent::notify::thread_waker();
                    self.parker = Some((me, w.clone()));
                    w
                }
            };
            self.listener.notify.arm(&waker);
            if self.listener.queue.is_empty() && !self.shared.stopped() {
                std::thread::park_timeout(deadline - now);
            }
            self.listener.notify.disarm();
        }
    }

    /// The next event for async code (any executor): `Err(Error::Stopped)` once the
    /// node stopped and what was queued has been handed out.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<PeerEvent, Error>> {
        for _ in 0..2 {
            if let Some(ev) = self.try_recv() {
                self.listener.notify.disarm();
                return Poll::Ready(Ok(ev));
            }
            if self.shared.stopped() {
                return Poll::Ready(Err(self
                    .error()
                    .unwrap_or_else(|| Error::Stopped("the node stopped".to_string()))));
            }
            self.listener.notify.arm(cx.waker());
        }
        Poll::Pending
    }

    /// [`poll_recv`](Self::poll_recv) as a future.
    pub async fn recv_async(&mut self) -> Result<PeerEvent, Error> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Events this handle dropped because it was not read (the newest are kept).
    pub fn dropped(&self) -> u64 {
        self.listener.dropped.load(Ordering::Relaxed)
    }

    /// Why the node stopped, if it did.
    pub fn error(&self) -> Option<Error> {
        self.shared.stopped().then(|| {
            Error::Stopped(
                self.shared
                    .failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "the node stopped".to_string()),
            )
        })
    }
}
