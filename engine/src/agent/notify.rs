//! Waking an async subscriber: the receiving side's half of
//! [`Subscriber::poll_recv`](crate::Subscriber::poll_recv).
//!
//! A task that found its subscription's ring empty registers its waker and *arms*
//! the subscription; whoever runs the receiver (an agent thread, or in inline
//! threading the backstop or another poller) looks at the armed subscriptions at the
//! end of each cycle and wakes those whose ring holds something. The look costs one
//! fence a cycle, and only while the node has async subscribers: no syscall, lock or
//! atomic read-modify-write per message.
//!
//! The handshake is Dekker's: the task stores "armed", fences, then looks at the ring;
//! the receiver commits to the ring, fences, then looks at "armed". At least one of
//! them sees the other's store, so a message is never left unannounced.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::task::Waker;

use atomic_waker::AtomicWaker;

/// One subscription's waker and whether its task waits.
#[derive(Default)]
pub(crate) struct Notify {
    armed: AtomicBool,
    waker: AtomicWaker,
}

impl Notify {
    /// The task is about to return `Pending`: wake it on the next event. The caller
    /// looks at its ring once more after this (the fence orders that look after the
    /// store).
    pub(crate) fn arm(&self, waker: &Waker) {
        self.waker.register(waker);
        self.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The task found an event: no wake needed.
    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// Whether a task waits (read after the cycle's [`fence`], see
    /// [`before_wakes`]).
    pub(crate) fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Wakes the waiting task (if any).
    pub(crate) fn wake(&self) {
        self.armed.store(false, Ordering::Relaxed);
        self.waker.wake();
    }
}

/// A waker that unparks the calling thread (for a thread that parks in
/// `poll_timeout`-style waits until a `Notify` wakes it).
pub(crate) fn thread_waker() -> Waker {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    Waker::from(std::sync::Arc::new(Unpark(std::thread::current())))
}

/// The receiver's half of the handshake: call once after a cycle's ring commits and
/// before reading [`Notify::armed`].
pub(crate) fn before_wakes() {
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn an_armed_task_is_woken_once_and_a_disarmed_one_not_at_all() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let n = Notify::default();
        assert!(!n.armed());
        n.arm(&waker);
        assert!(n.armed());
        n.wake();
        assert!(!n.armed());
        // The waker was taken: a second wake does nothing.
        n.wake();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        n.arm(&waker);
        n.disarm();
        assert!(!n.armed());
    }
}
