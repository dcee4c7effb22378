//! Publisher-side flow control: the session may not send past the slowest live
//! receiver's position plus its window. A receiver not heard from for `timeout` is
//! dropped from the set, so a vanished receiver cannot stall the publisher forever.
//! With no receivers heard, sending is unconstrained (nobody to overrun).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Peer {
    id: u64,
    next_seq: u64,
    window: u32,
    last_heard: Instant,
}

/// The flow-control state of one publishing session.
#[derive(Debug)]
pub struct FlowControl {
    peers: Vec<Peer>,
    timeout: Duration,
}

impl FlowControl {
    /// Receivers silent for longer than `timeout` stop counting.
    pub fn new(timeout: Duration) -> Self {
        FlowControl {
            peers: Vec::new(),
            timeout,
        }
    }

    /// Records a status from receiver `id`. Positions never move backwards.
    pub fn on_status(&mut self, now: Instant, id: u64, next_seq: u64, window: u32) {
        match self.peers.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                p.next_seq = p.next_seq.max(next_seq);
                p.window = window;
                p.last_heard = now;
            }
            None => self.peers.push(Peer {
                id,
                next_seq,
                window,
                last_heard: now,
            }),
        }
    }

    /// Forgets receivers not heard from within the timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.peers
            .retain(|p| now.saturating_duration_since(p.last_heard) <= timeout);
    }

    /// First datagram sequence number the session may not send yet, or `None` when no
    /// receiver constrains it.
    pub fn limit(&self) -> Option<u64> {
        self.peers
            .iter()
            .map(|p| p.next_seq + u64::from(p.window))
            .min()
    }

    /// The slowest receiver's position (everything before it has been received).
    pub fn acked(&self) -> Option<u64> {
        self.peers.iter().map(|p| p.next_seq).min()
    }

    /// Receivers currently counted.
    pub fn receivers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_receiver_sets_the_limit_and_expires() {
        let t0 = Instant::now();
        let mut f = FlowControl::new(Duration::from_secs(1));
        assert_eq!(f.limit(), None);
        f.on_status(t0, 1, 100, 10);
        f.on_status(t0, 2, 50, 20);
        assert_eq!(f.limit(), Some(70));
        assert_eq!(f.acked(), Some(50));
        // stale reordering never moves a position back
        f.on_status(t0, 2, 40, 20);
        assert_eq!(f.limit(), Some(70));
        f.on_status(t0 + Duration::from_millis(900), 1, 120, 10);
        f.expire(t0 + Duration::from_millis(1500));
        assert_eq!(f.receivers(), 1);
        assert_eq!(f.limit(), Some(130));
        f.expire(t0 + Duration::from_secs(3));
        assert_eq!(f.limit(), None);
    }
}
