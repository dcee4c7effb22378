//! The sender agent: a thin driver of the publisher state machine
//! ([`crate::proto::Publisher`]). It offers the records of its publishers' rings to
//! the machine, hands the datagrams the machine yields to the kernel in batches,
//! feeds the control socket's status messages and NAKs to the machine, and copies
//! the machine's counters into the node's stats.
//!
//! The machine decides everything else (packing, numbering, flow control, the rate
//! limit, retransmissions from its datagram pool — which is the retransmit window,
//! so a retransmission costs no copy — and heartbeats). Records are released back to
//! their publishers only after the datagrams holding them were accepted by the
//! kernel, so `Publisher::flush` means "on the wire"; records held back by flow
//! control or the rate limit stay in the rings, which is how back-pressure reaches
//! `offer`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::unicast::Fanout;
use super::{HeardNak, PublisherEntry, SenderCommand, Shared, MAX_BATCH};
use crate::config::Config;
use crate::io::socket::recv_control;
use crate::proto::{Blocked, ControlEvent, Publisher, PublisherConfig, Transmit, Transmitted};
use crate::wire::NAK_LEN;

// The machine's batch limit is the I/O layer's.
const _: () = assert!(MAX_BATCH == crate::proto::publisher::MAX_BATCH);

/// Messages taken from one publisher per duty cycle before moving to the next.
const FAIR_SHARE: usize = 4096;
/// Control messages read per duty cycle at most.
const CONTROL_PER_CYCLE: usize = 256;
/// A receiver silent this long no longer holds the publisher back.
pub(crate) const RECEIVER_TIMEOUT: Duration = Duration::from_secs(1);
/// Heartbeats back off to this interval while the publisher stays idle.
const MAX_HEARTBEAT: Duration = Duration::from_millis(100);
/// A datagram retransmitted this recently is not sent again for another NAK.
const RETRANSMIT_LINGER: Duration = Duration::from_micros(500);

/// The machine's configuration for a node's publishing session.
pub(crate) fn publisher_config(
    config: &Config,
    session: u32,
    max_payload: usize,
) -> PublisherConfig {
    PublisherConfig {
        session,
        network: config.network_id(),
        max_payload,
        reliable: config.reliable,
        batch: config.batch.clamp(1, MAX_BATCH),
        retransmit_window: config.retransmit_window,
        // One send batch of retransmissions per transmit at most.
        retransmit_budget: MAX_BATCH,
        retransmit_linger: RETRANSMIT_LINGER,
        heartbeat_interval: config.heartbeat_interval,
        max_heartbeat_interval: MAX_HEARTBEAT,
        flow_control: config.flow_control,
        receiver_timeout: RECEIVER_TIMEOUT,
        startup_grace: crate::proto::publisher::STARTUP_GRACE,
        rate_limit: config.rate_limit,
        repair_share: config.repair_share,
    }
}

/// Hands what the machine yields to the backend (none yet: nothing is sent): to the
/// group, or by unicast to each destination.
fn transmit(
    machine: &mut Publisher,
    out: &mut Fanout,
    shared: &Shared,
    now: Instant,
) -> Transmitted {
    let Some(mut send) = out.sender(&shared.unicast) else {
        return Transmitted::default();
    };
    machine.poll_transmit(now, &mut |kind, datagrams| match send(datagrams) {
        Ok(()) => true,
        Err(e) => {
            match kind {
                Transmit::Data => {
                    tracing::warn!(error = %e, datagrams = datagrams.len(), "send failed")
                }
                Transmit::Retransmit => tracing::warn!(error = %e, "retransmission failed"),
                Transmit::Heartbeat => tracing::debug!(error = %e, "heartbeat failed"),
            }
            false
        }
    })
}

pub(crate) struct SenderAgent {
    out: Fanout,
    control: Option<Socket>,
    machine: Publisher,
    publishers: Vec<PublisherEntry>,
    next_publisher: usize,
    blocked: bool,
    rate_blocked: bool,
    stats_file: Option<crate::stats_file::StatsFile>,
    /// The node's publishers write IPC logs: heart-beat them (`BEAT_EVERY`).
    ipc_beats: bool,
    next_ipc_beat: u64,
}

impl SenderAgent {
    pub(crate) fn new(config: &Config, session: u32, max_payload: usize) -> Self {
        let mut out = Fanout::new();
        out.guard = config
            .keys
            .as_ref()
            .map(|k| crate::seal::Guard::new(k, max_payload, MAX_BATCH));
        SenderAgent {
            out,
            control: None,
            machine: Publisher::new(
                publisher_config(config, session, max_payload),
                Instant::now(),
            ),
            publishers: Vec::new(),
            next_publisher: 0,
            blocked: false,
            rate_blocked: false,
            stats_file: None,
            ipc_beats: config.local_transport != crate::config::LocalTransport::Udp,
            next_ipc_beat: 0,
        }
    }

    /// Whether the node has publishers (or publisher rings still draining).
    pub(crate) fn has_publishers(&self) -> bool {
        !self.publishers.is_empty()
    }

    /// Whether any publisher still has records queued.
    pub(crate) fn has_pending(&mut self) -> bool {
        self.publishers.iter_mut().any(|p| !p.ring.is_empty())
    }

    /// Whether the last duty cycle stopped at a receiver's window.
    pub(crate) fn flow_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the last duty cycle stopped at the rate limit.
    pub(crate) fn rate_blocked(&self) -> bool {
        self.rate_blocked
    }

    /// When the last duty cycle stopped at the rate limit: how long from `now` until
    /// the limit lets the next datagram go (zero if it already does).
    pub(crate) fn rate_wait(&self, now: Instant) -> Option<Duration> {
        if !self.rate_blocked {
            return None;
        }
        let at = self.machine.rate_ready_at(now)?;
        Some(at.saturating_duration_since(now))
    }

    fn commands(&mut self, shared: &Shared) -> usize {
        let mut n = 0;
        while let Some(cmd) = super::next_queued(&shared.tx_commands) {
            n += 1;
            match cmd {
                SenderCommand::Backend(b) => self.out.backend = Some(b),
                SenderCommand::Control(s) => self.control = Some(s),
                SenderCommand::StatsFile(f) => self.stats_file = Some(f),
                SenderCommand::Publisher(p) => {
                    // The session makes itself known now, so receivers join it and
                    // report before its first message (`wait_for_receivers`).
                    self.machine.announce(Instant::now());
                    self.publishers.push(p);
                }
            }
        }
        n
    }

    /// Reads queued status messages and NAKs (waiting up to the socket's timeout for
    /// the first when `wait`), feeds them to the machine and sends the
    /// retransmissions (and heartbeat) they call for. Returns how many concerned us
    /// plus the datagrams resent.
    pub(crate) fn read_status(&mut self, shared: &Shared, mut wait: bool) -> usize {
        let Some(sock) = self.control.as_ref() else {
            return 0;
        };
        let mut buf = [0u8; NAK_LEN + crate::seal::OVERHEAD + 1];
        let mut mine = 0;
        for _ in 0..CONTROL_PER_CYCLE {
            match recv_control(sock, &mut buf, wait) {
                Ok(n) => match match self.out.guard.as_mut() {
                    // sealed: what does not open is dropped (counted) untouched
                    Some(g) => match g.open(&buf[..n], &shared.counters.rx) {
                        Some(plain) => self.machine.handle_control(Instant::now(), plain),
                        None => Ok(ControlEvent::Other),
                    },
                    None => self.machine.handle_control(Instant::now(), &buf[..n]),
                } {
                    Ok(ControlEvent::Status | ControlEvent::Nak) => mine += 1,
                    Ok(ControlEvent::OtherNak(nak)) => {
                        // Somebody else's session: our receiver may be missing the
                        // same range and can hold its own NAK back.
                        shared.heard_naks.force_push(HeardNak {
                            session: nak.session,
                            from: nak.from,
                            to: nak.to,
                            receiver: nak.receiver,
                        });
                    }
                    Ok(ControlEvent::Other) | Err(_) => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control receive failed");
                    break;
                }
            }
            wait = false;
        }
        let sent = transmit(&mut self.machine, &mut self.out, shared, Instant::now());
        self.mirror(shared);
        mine + sent.retransmits
    }

    /// Copies the machine's counters into the node's stats.
    fn mirror(&self, shared: &Shared) {
        let c = &shared.counters.tx;
        let m = self.machine.counters();
        c.datagrams.set(m.datagrams);
        c.bytes.set(m.bytes);
        c.messages.set(m.messages);
        c.fragmented.set(m.fragmented);
        c.send_errors.set(m.send_errors);
        c.status_received.set(m.status_received);
        c.control_malformed.set(m.control_malformed);
        c.control_foreign.set(m.control_foreign);
        c.naks_received.set(m.naks_received);
        c.retransmits.set(m.retransmits);
        c.heartbeats.set(m.heartbeats);
        c.snapshots.set(m.snapshots);
        c.cache_refused.set(self.machine.cache_refused());
        c.receivers_unpaced
            .set(self.machine.flow_counters().unpaced);
        c.receivers_evicted
            .set(self.machine.flow_counters().evicted);
        c.status_clamped.set(self.machine.flow_counters().clamped);
        c.repair_limited.set(m.repair_limited);
        c.nak_clamped.set(m.nak_clamped);
        c.retransmit_bytes.set(m.retransmit_bytes);
    }

    /// Inline `offer` from a publisher whose ring is empty: the message goes straight
    /// into the datagram being built (no ring record, no second copy); full batches go
    /// to the kernel on the way. False when it did not go in whole (flow control, the
    /// rate limit, no backend yet, or a send that makes no progress): the caller then
    /// queues it in its ring as usual, and a fragment already taken is resumed from
    /// there (the machine keeps a fragmented message's position until it is offered
    /// again).
    pub(crate) fn offer_direct(
        &mut self,
        shared: &Shared,
        topic: &str,
        payload: &[u8],
        expires: Option<u64>,
        now: Instant,
    ) -> bool {
        // A message needs at most one round per datagram it spans (datagrams carry at
        // least MIN_PAYLOAD bytes, a fragment well over 256 of them), plus the batch
        // ahead of it.
        let rounds = payload.len() / 256 + 4;
        // (cached publishers never offer directly: their records go through the ring)
        self.direct(shared, now, rounds, |m, now| {
            m.set_expiry(expires);
            m.set_cached(false);
            m.offer(now, topic, payload).map(Some)
        })
        .is_some()
    }

    /// Inline `try_claim` from a publisher whose ring is empty: room for a whole
    /// message of `len` bytes in the datagram being built (see
    /// [`Publisher::claim`]); `None` when the caller is to claim in its ring instead.
    pub(crate) fn claim_direct(
        &mut self,
        shared: &Shared,
        topic: &str,
        len: usize,
        now: Instant,
    ) -> Option<std::ops::Range<usize>> {
        self.direct(shared, now, 4, |m, now| {
            m.set_expiry(None);
            m.set_cached(false);
            m.claim(now, topic, len)
        })
    }

    /// The payload bytes of a direct claim.
    pub(crate) fn claimed(&mut self, room: std::ops::Range<usize>) -> &mut [u8] {
        self.machine.claimed(room)
    }

    /// The same, read-only.
    pub(crate) fn claimed_ref(&self, room: std::ops::Range<usize>) -> &[u8] {
        self.machine.claimed_ref(room)
    }

    /// Numbers a direct claim's message.
    pub(crate) fn commit_claim(&mut self, room: std::ops::Range<usize>) {
        self.machine.commit_claim(room);
    }

    /// Runs `attempt` on the machine, transmitting the batches it asks for, up to
    /// `rounds` times; `None` when it did not succeed (or there is no backend yet).
    fn direct<T>(
        &mut self,
        shared: &Shared,
        mut now: Instant,
        rounds: usize,
        mut attempt: impl FnMut(&mut Publisher, Instant) -> Result<Option<T>, Blocked>,
    ) -> Option<T> {
        self.commands(shared);
        self.out.backend.as_ref()?;
        for _ in 0..rounds {
            match attempt(&mut self.machine, now) {
                Ok(v) => return v,
                Err(Blocked::Transmit) => {
                    // The caller's time may be the last one it read (see
                    // `mid_datagram`): what follows a transmit reads the clock.
                    now = Instant::now();
                    transmit(&mut self.machine, &mut self.out, shared, now);
                }
                Err(Blocked::FlowControl | Blocked::RateLimit) => return None,
            }
        }
        None
    }

    /// When the machine's next timer (heartbeat, receiver expiry, retransmit budget,
    /// rate limit) is due.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    /// See [`Publisher::mid_datagram`].
    pub(crate) fn mid_datagram(&self) -> bool {
        self.machine.mid_datagram()
    }

    /// Sends what the machine holds (after direct offers) and mirrors the counters.
    pub(crate) fn send_pending(&mut self, shared: &Shared, now: Instant) {
        self.machine.handle_timeout(now);
        transmit(&mut self.machine, &mut self.out, shared, now);
        self.mirror(shared);
        let c = &shared.counters.tx;
        c.next_seq.set(self.machine.next_seq());
    }

    /// One duty cycle: returns the number of messages (and commands) handled.
    pub(crate) fn do_work(&mut self, shared: &Shared) -> usize {
        self.cycle(shared, true)
    }

    /// A duty cycle that reads the control socket only when `control` is set or the
    /// last cycle stopped at a receiver's window (inline mode reads it on a deadline,
    /// not on every offer: a receive per message would double the syscalls).
    pub(crate) fn cycle(&mut self, shared: &Shared, control: bool) -> usize {
        // Read before the rings: what was published before the ask is seen below.
        let drain_asked = shared.drain_asked.load(Ordering::Acquire);
        let mut work = self.commands(shared);
        if control || self.blocked {
            work += self.read_status(shared, false);
        }
        let now = Instant::now();
        let c = &shared.counters.tx;
        c.receivers.set(self.machine.receivers() as u64);
        if let Some(f) = self.stats_file.as_mut() {
            f.maybe_write(now, || shared.stats());
        }
        if self.ipc_beats {
            shared.ipc.wake_all();
            let mono = crate::ipc::mono_ns();
            if mono >= self.next_ipc_beat {
                shared.ipc.beat(mono);
                self.next_ipc_beat = mono.saturating_add(crate::ipc::BEAT_EVERY);
            }
        }
        self.blocked = false;
        self.rate_blocked = false;
        if self.out.backend.is_none() {
            return work;
        }
        let count = self.publishers.len();
        'publishers: for k in 0..count {
            let idx = (self.next_publisher + k) % count;
            let Self {
                out,
                machine,
                publishers,
                blocked,
                rate_blocked,
                ..
            } = self;
            let p = &mut publishers[idx];
            let mut taken = 0;
            while taken < FAIR_SHARE {
                let Some(rec) = p.ring.peek() else { break };
                // A publisher with a time to live prefixes each record with its
                // message's deadline.
                let (expires, rec) = match (p.ttl, rec.split_first_chunk::<8>()) {
                    (true, Some((e, rest))) => (Some(u64::from_le_bytes(*e)), rest),
                    _ => (None, rec),
                };
                machine.set_expiry(expires);
                machine.set_cached(p.cache);
                match machine.offer(now, &p.topic, rec) {
                    Ok(()) => {
                        p.ring.consume();
                        taken += 1;
                    }
                    Err(Blocked::Transmit) => {
                        // A batch is full: on the wire with it, then the records it
                        // held go back to their publisher.
                        transmit(machine, out, shared, now);
                        p.ring.release();
                    }
                    Err(Blocked::FlowControl) => {
                        *blocked = true;
                        work += taken;
                        break 'publishers;
                    }
                    Err(Blocked::RateLimit) => {
                        *rate_blocked = true;
                        work += taken;
                        break 'publishers;
                    }
                }
            }
            work += taken;
        }
        if self.blocked {
            c.flow_blocked.add(1);
        }
        if self.rate_blocked {
            c.rate_limited.add(1);
        }
        self.next_publisher = self.next_publisher.wrapping_add(1);
        // Timers (idle heartbeat, receiver expiry, what a retransmit budget left),
        // then send what we have: nothing waits to fill a datagram (no Nagle).
        self.machine.handle_timeout(now);
        transmit(&mut self.machine, &mut self.out, shared, now);
        for p in &mut self.publishers {
            p.ring.release();
        }
        self.mirror(shared);
        c.next_seq.set(self.machine.next_seq());
        c.acked.set(self.machine.acked().unwrap_or(u64::MAX));
        c.left_behind.set(self.machine.left_behind() as u64);
        let before = self.publishers.len();
        self.publishers
            .retain_mut(|p| !(p.closed.load(Ordering::Acquire) && p.ring.is_empty()));
        if drain_asked > shared.drained.load(Ordering::Relaxed)
            && !self.has_pending()
            && !self.machine.has_transmit()
        {
            shared.drained.store(drain_asked, Ordering::Release);
        }
        work + (before - self.publishers.len())
    }
}
