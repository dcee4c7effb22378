//! Counters: written by the agents and publishers with relaxed atomics, read as a
//! [`Stats`] snapshot from any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

use crate::io::{BackendKind, BackendReport};

/// A monotonically increasing counter with one writer (an agent) and many readers;
/// it saturates instead of wrapping.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning agent calls this, so a load + store is enough (no
    /// locked read-modify-write on the hot path).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Relaxed).saturating_add(n), Relaxed);
    }

    /// Adds `n` from any thread (saturating: one that would wrap stays at the top).
    #[inline]
    pub(crate) fn add_shared(&self, n: u64) {
        if self.0.fetch_add(n, Relaxed).checked_add(n).is_none() {
            self.0.store(u64::MAX, Relaxed);
        }
    }

    /// Sets the value (for counters mirrored from a protocol state machine).
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Raises the value to `v` if larger.
    #[inline]
    pub(crate) fn max(&self, v: u64) {
        if v > self.0.load(Relaxed) {
            self.0.store(v, Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Written by the sender agent.
#[derive(Debug, Default)]
pub(crate) struct SenderCounters {
    pub datagrams: Counter,
    pub messages: Counter,
    pub bytes: Counter,
    pub fragmented: Counter,
    pub send_errors: Counter,
    pub status_received: Counter,
    pub control_malformed: Counter,
    pub control_foreign: Counter,
    pub flow_blocked: Counter,
    pub receivers: Counter,
    pub naks_received: Counter,
    pub retransmits: Counter,
    pub heartbeats: Counter,
    pub snapshots: Counter,
    pub cache_refused: Counter,
    pub receivers_unpaced: Counter,
    pub receivers_evicted: Counter,
    pub status_clamped: Counter,
    pub repair_limited: Counter,
    pub nak_clamped: Counter,
    pub retransmit_bytes: Counter,
    pub next_seq: Counter,
    pub acked: Counter,
    pub left_behind: Counter,
    pub rate_limited: Counter,
    pub max_cycle_ns: Counter,
}

/// Written by the receiver agent.
#[derive(Debug, Default)]
pub(crate) struct ReceiverCounters {
    pub datagrams: Counter,
    pub messages: Counter,
    pub bytes: Counter,
    pub gaps: Counter,
    pub lost_datagrams: Counter,
    pub lost_messages: Counter,
    pub duplicates: Counter,
    pub malformed: Counter,
    pub foreign: Counter,
    pub expired: Counter,
    pub snapshot_messages: Counter,
    pub before_snapshot: Counter,
    pub snapshot_timeouts: Counter,
    pub unknown_key: Counter,
    pub replayed: Counter,
    pub auth_failed: Counter,
    pub events_dropped: Counter,
    pub reassembly_refused: Counter,
    pub implausible: Counter,
    pub ring_full_drops: Counter,
    pub recv_errors: Counter,
    pub truncated: Counter,
    pub status_sent: Counter,
    pub back_pressured: Counter,
    pub naks_sent: Counter,
    pub unmatched: Counter,
    pub delivered_direct: Counter,
    /// `Auto`: datagrams of sessions read over IPC instead, dropped.
    pub ipc_skipped: Counter,
    pub lost_nak_timeout: Counter,
    pub lost_beyond_window: Counter,
    pub lost_reorder_full: Counter,
    pub reordered: Counter,
    pub repaired: Counter,
    pub sessions: Counter,
    pub sessions_gone: Counter,
    pub naks_suppressed: Counter,
    pub conflated: Counter,
    pub slow_disconnects: Counter,
    pub disconnect_skipped: Counter,
    pub injected_dropped: Counter,
    pub injected_duplicated: Counter,
    pub injected_reordered: Counter,
    pub injected_delayed: Counter,
    pub max_cycle_ns: Counter,
}

/// Written by application threads.
#[derive(Debug, Default)]
pub(crate) struct AppCounters {
    pub back_pressure: Counter,
    /// IPC (issue 12): messages subscribers read from logs, lost when lapped,
    /// superseded (conflate), logs not opened (a subscriber's limit).
    pub ipc_delivered: Counter,
    pub ipc_lost: Counter,
    pub ipc_conflated: Counter,
    pub ipc_refused: Counter,
    /// Messages discarded by disconnect-policy subscribers when resynchronising.
    pub resync_discarded: Counter,
}

/// All counters of a node, each writer's group on its own cache line.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tx: CachePadded<SenderCounters>,
    pub rx: CachePadded<ReceiverCounters>,
    pub app: CachePadded<AppCounters>,
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The I/O backend in use.
    pub backend: BackendKind,
    /// Why that backend was chosen.
    pub backend_reason: String,
    /// The threading the node runs with ([`ThreadingMode::Auto`](crate::ThreadingMode::Auto) resolved).
    pub threading: crate::config::ThreadingMode,
    /// Why (and a warning when the configuration oversubscribes the cores).
    pub threading_reason: String,
    /// Largest datagram payload this node sends.
    pub max_payload: usize,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Messages that needed fragmenting.
    pub messages_fragmented: u64,
    /// Datagrams the kernel refused (their sequence numbers show up as gaps at the
    /// receivers).
    pub send_errors: u64,
    /// Status messages heard from receivers of this node's publishers.
    pub status_received: u64,
    /// Malformed datagrams on the control port.
    pub control_malformed: u64,
    /// Peers in the discovery directory.
    pub peers: u64,
    /// Announces this node sent (discovery; leaves included).
    pub announces_sent: u64,
    /// Peers' announces heard.
    pub announces_received: u64,
    /// Announces of another network ID, ignored.
    pub discovery_foreign: u64,
    /// Malformed announces, dropped.
    pub discovery_malformed: u64,
    /// Newcomers refused because the directory was full.
    pub peers_refused: u64,
    /// Silent peers evicted to make room in a full directory.
    pub peers_evicted: u64,
    /// Status messages and NAKs of another network ID, ignored.
    pub control_foreign: u64,
    /// Duty cycles in which the sender stopped at a receiver's window.
    pub flow_blocked: u64,
    /// Live receivers of this node's publishers (heard within 1 s); under flow control
    /// `Min` each of them holds the publishers back.
    pub receivers: u64,
    /// The publishing session's position: the sequence number its next message gets
    /// (messages sent so far).
    pub position: u64,
    /// Up to where every receiver that paces the session has everything (`None`
    /// when none paces it).
    pub acked_position: Option<u64>,
    /// Live receivers this node's publishers are currently leaving behind: they have
    /// sent past those receivers' windows (flow control `Max` or `Tagged`).
    pub left_behind: u64,
    /// Duty cycles in which the sender stopped at the rate limit.
    pub rate_limited: u64,
    /// NAK ranges heard for this node's publishers.
    pub naks_received: u64,
    /// Datagrams sent again in answer to NAKs.
    pub retransmits: u64,
    /// Heartbeats sent while idle.
    pub heartbeats_sent: u64,
    /// Last-value snapshot bursts sent for late joiners.
    pub snapshots_sent: u64,
    /// Topics not taken into a full last-value cache.
    pub cache_refused: u64,
    /// Receivers left out of flow control for never acknowledging data within the
    /// receiver timeout (a fake receiver stalls a publisher that long at most).
    pub receivers_unpaced: u64,
    /// Receivers dropped from flow control to make room (1,024 at most).
    pub receivers_evicted: u64,
    /// Status messages claiming a position past what was sent, clamped.
    pub status_clamped: u64,
    /// NAKs whose retransmissions waited for the repair budget (`repair_share`).
    pub repair_limited: u64,
    /// NAK ranges cut to the amplification ceiling (256 datagrams a NAK).
    pub nak_clamped: u64,
    /// Bytes retransmitted (with `naks_received`, the amplification NAKs caused).
    pub retransmit_bytes: u64,
    /// Valid datagrams received.
    pub datagrams_received: u64,
    /// Messages received (before topic filtering).
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Gaps that could not be repaired (each reported to subscribers as a loss).
    pub gaps: u64,
    /// NAK ranges this node's receiver sent.
    pub naks_sent: u64,
    /// NAK rounds this node's receiver held back because another receiver had just
    /// NAKed the same data (the retransmission is multicast to all).
    pub naks_suppressed: u64,
    /// Datagrams that arrived ahead of a missing one and were held.
    pub reordered: u64,
    /// Missing datagrams that arrived later (mostly retransmissions) and filled a gap.
    pub gaps_filled: u64,
    /// Datagrams those gaps skipped.
    pub lost_datagrams: u64,
    /// Messages reported lost to subscribers because of gaps.
    pub lost_messages: u64,
    /// Duplicate or late datagrams dropped.
    pub duplicates: u64,
    /// Malformed or hostile datagrams dropped.
    pub malformed: u64,
    /// Last-value snapshot entries received (this node joined a session late).
    pub snapshot_messages: u64,
    /// Datagrams dropped while waiting for a session's snapshot (their content is
    /// in the snapshot or follows it: not a loss).
    pub before_snapshot: u64,
    /// Late joins whose snapshot did not come within a second (joined live).
    pub snapshot_timeouts: u64,
    /// Sealed datagrams refused for a key id this node does not hold (another group,
    /// or a previous key past its overlap).
    pub unknown_key: u64,
    /// Sealed datagrams refused as replays: a counter the sender already used (a
    /// replay, or a copy of an accepted datagram with bytes changed: the window is
    /// checked before the tag), or one older than its 1,024-counter window.
    pub replayed: u64,
    /// Datagrams (any port) refused by the group key: not sealed, forged, mutated or
    /// truncated. Dropped before any state changed.
    pub auth_failed: u64,
    /// Session events (joined, gone) dropped for a subscription that does not poll and
    /// has 65,536 items waiting (losses are never dropped).
    pub events_dropped: u64,
    /// Fragmented messages not reassembled (the reassembly memory bound was reached),
    /// each reported lost.
    pub reassembly_refused: u64,
    /// Data and heartbeats rejected for jumping implausibly far ahead of their session.
    pub implausible: u64,
    /// Data and heartbeats of another network ID, ignored (never delivered).
    pub foreign_network: u64,
    /// Messages past their time to live at delivery, dropped (each reported to the
    /// matching subscribers as an `Expired` loss).
    pub expired: u64,
    /// Messages dropped because a subscription's ring was full (each reported to
    /// that subscriber as a loss).
    pub ring_full_drops: u64,
    /// Unrepairable gaps by cause: NAKs unanswered, data no longer retained by the
    /// publisher, reorder buffer full.
    pub lost_nak_timeout: u64,
    /// See `lost_nak_timeout`.
    pub lost_beyond_window: u64,
    /// See `lost_nak_timeout`.
    pub lost_reorder_full: u64,
    /// Messages received that no subscription of this node wanted (topic filter).
    pub unmatched: u64,
    /// Events an inline poller took straight out of the receive buffer (no copy into
    /// its ring).
    pub delivered_direct: u64,
    /// IPC: messages this node's publishers wrote to their logs.
    pub ipc_published: u64,
    /// IPC: messages this node's subscribers read from logs.
    pub ipc_delivered: u64,
    /// IPC: messages subscribers lost because a log's writer lapped them (each
    /// reported as a loss).
    pub ipc_lost: u64,
    /// IPC: messages a conflating subscriber skipped for a newer one.
    pub ipc_conflated: u64,
    /// IPC: logs a subscriber could not open (it reads at most 256).
    pub ipc_refused: u64,
    /// `Auto`: datagrams dropped because their session is read over IPC.
    pub ipc_skipped: u64,
    /// Receive calls that failed.
    pub recv_errors: u64,
    /// Datagrams larger than the receive buffers (over the configured max payload),
    /// truncated by the kernel and dropped.
    pub truncated: u64,
    /// Status messages this node's receiver sent to publishers.
    pub status_sent: u64,
    /// Duty cycles in which the receiver left datagrams in the socket because a
    /// back-pressure subscription's ring was full.
    pub receive_back_pressured: u64,
    /// Publishing sessions heard.
    pub sessions: u64,
    /// Publishing sessions declared gone (silent for the publisher timeout).
    pub sessions_gone: u64,
    /// Messages superseded by a newer one on the same topic while a conflate-policy
    /// subscription was behind.
    pub conflated: u64,
    /// Times a disconnect-policy subscription was declared too slow and resynchronised.
    pub slow_disconnects: u64,
    /// Messages disconnect-policy subscriptions did not get because of those
    /// resynchronisations (skipped by the agent, or discarded from the backlog); each
    /// reported as a `Disconnected` loss.
    pub disconnect_skipped: u64,
    /// Fault injection (tests only): datagrams dropped, duplicated, reordered and
    /// delayed on purpose between the kernel and the protocol.
    pub injected_dropped: u64,
    /// See `injected_dropped`.
    pub injected_duplicated: u64,
    /// See `injected_dropped`.
    pub injected_reordered: u64,
    /// See `injected_dropped`.
    pub injected_delayed: u64,
    /// `offer`/`try_claim` calls refused because a publisher ring was full.
    pub back_pressure: u64,
    /// Longest sender agent duty cycle that did work, in nanoseconds.
    pub sender_max_cycle_ns: u64,
    /// Longest receiver agent duty cycle that did work, in nanoseconds.
    pub receiver_max_cycle_ns: u64,
    /// Socket receive buffer the kernel granted (0 before the first subscriber).
    pub rcvbuf: usize,
    /// Socket send buffer the kernel granted.
    pub sndbuf: usize,
    /// UDP GSO/GRO and busy polling: on or why not, and their counters.
    pub offload: crate::io::OffloadReport,
}

impl Stats {
    /// Every numeric counter with its name, in a fixed order (for `ringcast stat`).
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("max_payload", self.max_payload as u64),
            ("datagrams_sent", self.datagrams_sent),
            ("messages_sent", self.messages_sent),
            ("bytes_sent", self.bytes_sent),
            ("messages_fragmented", self.messages_fragmented),
            ("send_errors", self.send_errors),
            ("status_received", self.status_received),
            ("control_malformed", self.control_malformed),
            ("control_foreign", self.control_foreign),
            ("peers", self.peers),
            ("announces_sent", self.announces_sent),
            ("announces_received", self.announces_received),
            ("discovery_foreign", self.discovery_foreign),
            ("discovery_malformed", self.discovery_malformed),
            ("peers_refused", self.peers_refused),
            ("peers_evicted", self.peers_evicted),
            ("flow_blocked", self.flow_blocked),
            ("receivers", self.receivers),
            ("position", self.position),
            // u64::MAX: no receiver paces the session.
            ("acked_position", self.acked_position.unwrap_or(u64::MAX)),
            ("left_behind", self.left_behind),
            ("rate_limited", self.rate_limited),
            ("naks_received", self.naks_received),
            ("retransmits", self.retransmits),
            ("heartbeats_sent", self.heartbeats_sent),
            ("snapshots_sent", self.snapshots_sent),
            ("cache_refused", self.cache_refused),
            ("receivers_unpaced", self.receivers_unpaced),
            ("receivers_evicted", self.receivers_evicted),
            ("status_clamped", self.status_clamped),
            ("repair_limited", self.repair_limited),
            ("nak_clamped", self.nak_clamped),
            ("retransmit_bytes", self.retransmit_bytes),
            ("datagrams_received", self.datagrams_received),
            ("messages_received", self.messages_received),
            ("bytes_received", self.bytes_received),
            ("gaps", self.gaps),
            ("naks_sent", self.naks_sent),
            ("naks_suppressed", self.naks_suppressed),
            ("reordered", self.reordered),
            ("gaps_filled", self.gaps_filled),
            ("lost_datagrams", self.lost_datagrams),
            ("lost_messages", self.lost_messages),
            ("duplicates", self.duplicates),
            ("malformed", self.malformed),
            ("foreign_network", self.foreign_network),
            ("expired", self.expired),
            ("snapshot_messages", self.snapshot_messages),
            ("before_snapshot", self.before_snapshot),
            ("snapshot_timeouts", self.snapshot_timeouts),
            ("unknown_key", self.unknown_key),
            ("replayed", self.replayed),
            ("auth_failed", self.auth_failed),
            ("events_dropped", self.events_dropped),
            ("reassembly_refused", self.reassembly_refused),
            ("implausible", self.implausible),
            ("ring_full_drops", self.ring_full_drops),
            ("unmatched", self.unmatched),
            ("delivered_direct", self.delivered_direct),
            ("ipc_published", self.ipc_published),
            ("ipc_delivered", self.ipc_delivered),
            ("ipc_lost", self.ipc_lost),
            ("ipc_conflated", self.ipc_conflated),
            ("ipc_refused", self.ipc_refused),
            ("ipc_skipped", self.ipc_skipped),
            ("recv_errors", self.recv_errors),
            ("truncated", self.truncated),
            ("status_sent", self.status_sent),
            ("receive_back_pressured", self.receive_back_pressured),
            ("sessions", self.sessions),
            ("sessions_gone", self.sessions_gone),
            ("conflated", self.conflated),
            ("slow_disconnects", self.slow_disconnects),
            ("disconnect_skipped", self.disconnect_skipped),
            ("injected_dropped", self.injected_dropped),
            ("injected_duplicated", self.injected_duplicated),
            ("injected_reordered", self.injected_reordered),
            ("injected_delayed", self.injected_delayed),
            ("back_pressure", self.back_pressure),
            ("sender_max_cycle_ns", self.sender_max_cycle_ns),
            ("receiver_max_cycle_ns", self.receiver_max_cycle_ns),
            ("rcvbuf", self.rcvbuf as u64),
            ("sndbuf", self.sndbuf as u64),
            ("gso_sends", self.offload.gso_sends),
            ("gso_segments", self.offload.gso_segments),
            ("gso_downgrades", self.offload.gso_downgrades),
            ("gro_buffers", self.offload.gro_buffers),
            ("gro_segments", self.offload.gro_segments),
        ]
    }
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        backend: &BackendReport,
        max_payload: usize,
        rcvbuf: usize,
        sndbuf: usize,
    ) -> Stats {
        Stats {
            backend: backend.kind,
            backend_reason: backend.reason.clone(),
            threading: crate::config::ThreadingMode::Auto,
            threading_reason: String::new(),
            offload: backend.offload.report(),
            max_payload,
            rcvbuf,
            sndbuf,
            datagrams_sent: self.tx.datagrams.get(),
            messages_sent: self.tx.messages.get(),
            bytes_sent: self.tx.bytes.get(),
            messages_fragmented: self.tx.fragmented.get(),
            send_errors: self.tx.send_errors.get(),
            status_received: self.tx.status_received.get(),
            control_malformed: self.tx.control_malformed.get(),
            control_foreign: self.tx.control_foreign.get(),
            peers: 0,
            announces_sent: 0,
            announces_received: 0,
            discovery_foreign: 0,
            discovery_malformed: 0,
            peers_refused: 0,
            peers_evicted: 0,
            flow_blocked: self.tx.flow_blocked.get(),
            receivers: self.tx.receivers.get(),
            position: self.tx.next_seq.get(),
            acked_position: Some(self.tx.acked.get()).filter(|&a| a != u64::MAX),
            left_behind: self.tx.left_behind.get(),
            rate_limited: self.tx.rate_limited.get(),
            naks_received: self.tx.naks_received.get(),
            retransmits: self.tx.retransmits.get(),
            heartbeats_sent: self.tx.heartbeats.get(),
            snapshots_sent: self.tx.snapshots.get(),
            cache_refused: self.tx.cache_refused.get(),
            receivers_unpaced: self.tx.receivers_unpaced.get(),
            receivers_evicted: self.tx.receivers_evicted.get(),
            status_clamped: self.tx.status_clamped.get(),
            repair_limited: self.tx.repair_limited.get(),
            nak_clamped: self.tx.nak_clamped.get(),
            retransmit_bytes: self.tx.retransmit_bytes.get(),
            naks_sent: self.rx.naks_sent.get(),
            naks_suppressed: self.rx.naks_suppressed.get(),
            sessions_gone: self.rx.sessions_gone.get(),
            conflated: self.rx.conflated.get(),
            slow_disconnects: self.rx.slow_disconnects.get(),
            disconnect_skipped: self.rx.disconnect_skipped.get() + self.app.resync_discarded.get(),
            injected_dropped: self.rx.injected_dropped.get(),
            injected_duplicated: self.rx.injected_duplicated.get(),
            injected_reordered: self.rx.injected_reordered.get(),
            injected_delayed: self.rx.injected_delayed.get(),
            reordered: self.rx.reordered.get(),
            gaps_filled: self.rx.repaired.get(),
            sender_max_cycle_ns: self.tx.max_cycle_ns.get(),
            datagrams_received: self.rx.datagrams.get(),
            messages_received: self.rx.messages.get(),
            bytes_received: self.rx.bytes.get(),
            gaps: self.rx.gaps.get(),
            lost_datagrams: self.rx.lost_datagrams.get(),
            lost_messages: self.rx.lost_messages.get(),
            duplicates: self.rx.duplicates.get(),
            malformed: self.rx.malformed.get(),
            foreign_network: self.rx.foreign.get(),
            expired: self.rx.expired.get(),
            snapshot_messages: self.rx.snapshot_messages.get(),
            before_snapshot: self.rx.before_snapshot.get(),
            snapshot_timeouts: self.rx.snapshot_timeouts.get(),
            unknown_key: self.rx.unknown_key.get(),
            replayed: self.rx.replayed.get(),
            auth_failed: self.rx.auth_failed.get(),
            events_dropped: self.rx.events_dropped.get(),
            reassembly_refused: self.rx.reassembly_refused.get(),
            implausible: self.rx.implausible.get(),
            ring_full_drops: self.rx.ring_full_drops.get(),
            recv_errors: self.rx.recv_errors.get(),
            unmatched: self.rx.unmatched.get(),
            delivered_direct: self.rx.delivered_direct.get(),
            ipc_published: 0,
            ipc_delivered: self.app.ipc_delivered.get(),
            ipc_lost: self.app.ipc_lost.get(),
            ipc_conflated: self.app.ipc_conflated.get(),
            ipc_refused: self.app.ipc_refused.get(),
            ipc_skipped: self.rx.ipc_skipped.get(),
            lost_nak_timeout: self.rx.lost_nak_timeout.get(),
            lost_beyond_window: self.rx.lost_beyond_window.get(),
            lost_reorder_full: self.rx.lost_reorder_full.get(),
            truncated: self.rx.truncated.get(),
            status_sent: self.rx.status_sent.get(),
            receive_back_pressured: self.rx.back_pressured.get(),
            sessions: self.rx.sessions.get(),
            receiver_max_cycle_ns: self.rx.max_cycle_ns.get(),
            back_pressure: self.app.back_pressure.get(),
        }
    }
}
