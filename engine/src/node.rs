//! A node: one per process (or more), owning the sockets and the agent threads
//! that every publisher and subscriber created from it share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::StatsBase;
use crate::agent::{
    self, PublisherEntry, ReceiverCommand, SenderCommand, Shared, SubscriptionEntry,
};
use crate::config::{BackendChoice, Config, LocalTransport, Origin, SlowConsumerPolicy, Transport};
use crate::error::Error;
use crate::io::{self, BackendKind, BackendReport, Interface, SocketConfig, SocketInfo};
use crate::publisher::Publisher;
use crate::ring::byte_ring;
use crate::stats::Stats;
use crate::stats_file::StatsFile;
use crate::subscriber::Subscriber;
use crate::{MAX_TOPIC_LEN, MIN_PAYLOAD};

/// A participant on a multicast group: create publishers and subscribers from it.
///
/// Nodes find each other with no broker: every node joins the group, and every
/// datagram names its publishing session. Dropping the node sends what publishers
/// had queued, then stops its agents.
pub struct Node {
    shared: Arc<Shared>,
    config: Config,
    socket: SocketConfig,
    session: u32,
    backend: BackendReport,
    rx_info: OnceLock<SocketInfo>,
    rx_open: Mutex<()>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("group", &self.socket.group)
            .field("iface", &self.socket.iface.name)
            .field("session", &self.session)
            .field("backend", &self.backend.kind)
            .finish_non_exhaustive()
    }
}

/// `host:pid`, the default node name.
fn default_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length; gethostname NUL-terminates
    // within it (or truncates), and we read only up to the first NUL.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let host = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    format!("{host}:{}", std::process::id())
}

/// The configured seeds as addresses (`HOST[:PORT]`, the port defaulting to the
/// discovery port). Unicast needs discovery: without a discovery port it is refused.
fn resolve_seeds(config: &Config) -> Result<Vec<std::net::SocketAddrV4>, Error> {
    use std::net::{SocketAddr, ToSocketAddrs};
    let unicast = config.transport == Transport::Unicast;
    let Some(discovery) = config.discovery else {
        if unicast || !config.seeds.is_empty() {
            return Err(Error::Config(
                "unicast and seeds need discovery (set discovery to a group:port)".into(),
            ));
        }
        return Ok(Vec::new());
    };
    if unicast && config.seeds.is_empty() {
        tracing::warn!(
            "transport unicast without seeds: this node finds only the peers that name it as their seed"
        );
    }
    let mut out = Vec::new();
    for seed in &config.seeds {
        let with_port = if seed.contains(':') {
            seed.clone()
        } else {
            format!("{seed}:{}", discovery.port())
        };
        let addrs = with_port
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("seed {seed:?}: {e}")))?;
        let v4 = addrs
            .filter_map(|a| match a {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            })
            .next()
            .ok_or_else(|| Error::Config(format!("seed {seed:?} has no IPv4 address")))?;
        out.push(v4);
    }
    Ok(out)
}

/// The backend for `config`, the reason saying who chose it: `RINGCAST_BACKEND`, a
/// configuration file, the application's code, or the probe.
fn choose_backend(config: &Config, inline: bool) -> Result<BackendReport, Error> {
    use io::probe::BackendKind;
    let probe = io::probe::run();
    let kind = match config.backend {
        BackendChoice::Auto => None,
        BackendChoice::Uring => Some(BackendKind::Uring),
        BackendChoice::Mmsg => Some(BackendKind::Mmsg),
    };
    let report = match (config.origin("backend"), kind) {
        // The environment's value, as the probe reads and names it.
        (Some(Origin::Env(_)), _) => probe.choose_for(inline)?,
        (Some(Origin::File(f)), Some(k)) => {
            probe.choose_named(k, format!("{}: backend = \"{k}\"", f.display()))?
        }
        (_, Some(k)) => probe.choose_named(k, format!("Config::backend({k})"))?,
        // Auto from the code, a file or the default: the probe alone.
        (_, None) => probe.choose_for_with(inline, None)?,
    };
    Ok(report)
}

impl Node {
    /// Resolves the interface, probes the backend, opens the send socket and starts
    /// the agents. The receive socket joins the group with the first subscriber.
    pub fn new(config: Config) -> Result<Node, Error> {
        let iface: Interface = io::iface::resolve(&config.iface)?;
        let ceiling = iface.max_udp_payload();
        let max_payload = config.max_payload.map_or(ceiling, |p| p.min(ceiling));
        let seal = config.keys.as_ref().map_or(0, |_| crate::seal::OVERHEAD);
        if max_payload < MIN_PAYLOAD + seal {
            return Err(Error::Config(format!(
                "interface {} allows datagrams of {max_payload} bytes; at least {MIN_PAYLOAD} needed",
                iface.name
            )));
        }
        let ttl = config.ttl.unwrap_or(if iface.loopback { 0 } else { 1 });
        let cores = if config.cores.is_empty() {
            agent::threading::usable_cores()
        } else {
            config.cores.len()
        };
        let threading = agent::threading::resolve(config.threading, config.idle, cores);
        tracing::info!(mode = ?threading.mode, reason = %threading.reason, "ringcast threading");
        if let Some(w) = &threading.warning {
            tracing::warn!("{w}");
        }
        let backend = choose_backend(&config, threading.mode == crate::ThreadingMode::Inline)?;
        tracing::info!(backend = %backend.kind, reason = %backend.reason, "ringcast backend");
        let seeds = resolve_seeds(&config)?;
        // Unicast may be used: the receive sockets take unicast datagrams too.
        let unicast_capable = config.transport == Transport::Unicast || !seeds.is_empty();
        let socket = SocketConfig {
            group: config.group,
            iface,
            ttl,
            loopback: config.loopback,
            rcvbuf: config.rcvbuf,
            sndbuf: config.sndbuf,
            max_datagram: max_payload,
            batch: config.batch,
            gso: config.gso,
            gro: config.gro,
            gso_from_env: matches!(config.origin("gso"), Some(Origin::Env(_))),
            gro_from_env: matches!(config.origin("gro"), Some(Origin::Env(_))),
            busy_poll: config.busy_poll,
            offload: backend.offload.clone(),
            bind_any: unicast_capable,
            join: config.transport != Transport::Unicast,
        };
        let (tx, tx_info) = io::open_tx(backend.kind, &socket)?;
        debug_assert_eq!(tx.kind(), backend.kind);
        let control = io::socket::open_control_rx(&socket, config.max_park)?;
        let mode = threading.mode;
        let shared = Arc::new(Shared::new(StatsBase {
            backend: backend.clone(),
            max_payload,
            sndbuf: tx_info.sndbuf,
            threading,
        }));
        shared.tx_commands.push(SenderCommand::Backend(tx));
        shared.tx_commands.push(SenderCommand::Control(control));
        let session = agent::random_u64() as u32;
        if let Some(dir) = config.stats_dir.as_deref() {
            match StatsFile::create(dir, session, &shared.stats()) {
                Ok(f) => shared.tx_commands.push(SenderCommand::StatsFile(f)),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "no stats file: `ringcast stat` will not see this node")
                }
            }
        }
        if config.transport == Transport::Unicast {
            shared.unicast.activate();
        }
        // Sealed datagrams carry the seal: the protocol builds smaller ones.
        let proto_payload = max_payload - seal;
        let mut threads =
            agent::start(&shared, &config, mode, session, proto_payload).map_err(Error::Thread)?;
        let id = config.node_id.unwrap_or_else(agent::random_u64);
        let name = config.node_name.clone().unwrap_or_else(default_name);
        let _ = shared
            .membership
            .set(agent::discovery::Membership::new(id, name.clone()));
        if let Some(group) = config.discovery {
            let machine = crate::proto::Discovery::new(
                crate::proto::DiscoveryConfig {
                    node: id,
                    name,
                    network: config.network_id(),
                    group: config.group,
                    interval: config.discovery_interval,
                    multiplier: config.discovery_multiplier,
                    max_peers: config.max_peers,
                    seed: agent::random_u64(),
                    seeds: seeds.clone(),
                    multicast: config.transport != Transport::Unicast,
                    unicast: unicast_capable,
                },
                Instant::now(),
            );
            let (rx, tx) = io::socket::open_discovery(&socket, group)?;
            let driver = agent::discovery::Driver {
                group,
                may_fall_back: config.transport == Transport::Auto && !seeds.is_empty(),
                seeds: seeds.clone(),
                keys: config.keys.clone(),
            };
            match agent::start_discovery(&shared, rx, tx, machine, driver) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The agents are running: stop them before reporting.
                    shared.fail(format!("starting the discovery thread: {e}"));
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(Error::Thread(e));
                }
            }
        }
        Ok(Node {
            shared,
            config,
            socket,
            session,
            backend,
            rx_info: OnceLock::new(),
            rx_open: Mutex::new(()),
            threads,
        })
    }

    /// The data group this node publishes and subscribes on.
    pub fn group(&self) -> std::net::SocketAddrV4 {
        self.config.group
    }

    /// This node's id in discovery (configured, or random per start).
    pub fn id(&self) -> u64 {
        self.shared.membership.get().map_or(0, |m| m.id)
    }

    /// This node's name in discovery (configured, or host:pid).
    pub fn name(&self) -> &str {
        self.shared.membership.get().map_or("", |m| m.name.as_str())
    }

    /// The nodes this one hears on the discovery group (its own network only), with
    /// their names, addresses and topics. Empty with discovery off.
    pub fn peers(&self) -> Vec<crate::Peer> {
        self.shared.peers()
    }

    /// A handle receiving every `PeerEvent` (joined, left with the reason) from now on.
    pub fn peer_events(&self) -> crate::PeerEvents {
        let listener = match self.shared.membership.get() {
            Some(m) => m.listen(),
            None => Arc::new(agent::discovery::Listener {
                queue: crossbeam_queue::ArrayQueue::new(1),
                dropped: Default::default(),
                notify: Default::default(),
            }),
        };
        crate::PeerEvents::new(listener, self.shared.clone())
    }

    /// This node's whisper/shout endpoint (Zyre's WHISPER and SHOUT): whispers to
    /// a peer by id, shouts to a named group, and receives those meant for it. Each
    /// call makes a new endpoint (two publishers and a subscriber).
    pub fn mesh(&self) -> Result<crate::Mesh, Error> {
        let whisper = self.publisher(crate::mesh::WHISPER_TOPIC)?;
        let shout = self.publisher(crate::mesh::SHOUT_TOPIC)?;
        let sub = self.subscriber(&[crate::mesh::WHISPER_TOPIC, crate::mesh::SHOUT_TOPIC])?;
        Ok(crate::Mesh::new(
            self.id(),
            self.name(),
            whisper,
            shout,
            sub,
        ))
    }

    /// A node with the default configuration (loopback, TTL 0).
    pub fn loopback() -> Result<Node, Error> {
        Node::new(Config::default())
    }

    fn check_running(&self) -> Result<(), Error> {
        match self.shared.failure.get() {
            Some(why) => Err(Error::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    /// A publisher on `topic` (UTF-8, at most 256 bytes).
    pub fn publisher(&self, topic: &str) -> Result<Publisher, Error> {
        self.make_publisher(topic, None, false)
    }

    /// A publisher whose messages live `ttl`: each carries a deadline (its offer
    /// time plus `ttl`, on this host's clock), and receivers drop a message past it
    /// at delivery, counted (`expired`) and reported to matching subscribers as a
    /// [`LossReason::Expired`](crate::LossReason::Expired) loss — for values that are
    /// worthless late (quotes, telemetry). The hosts' clocks must agree to well
    /// within `ttl` (NTP or PTP).
    pub fn publisher_with_ttl(&self, topic: &str, ttl: Duration) -> Result<Publisher, Error> {
        self.make_publisher(topic, Some(ttl), false)
    }

    /// A publisher whose node keeps the latest message of `topic` (a last-value
    /// cache, as ZeroMQ's guide and glue describe): a node that joins this node's
    /// session late gets the latest value of every cached topic once, flagged
    /// [`Message::is_snapshot`](crate::Message::is_snapshot), before live data, with
    /// no gap or duplicate at the seam. The snapshot travels in the session's
    /// reliable stream as one burst (repaired like any data); the cache holds at most
    /// 65,536 topics and 64 MiB.
    pub fn publisher_with_last_value(&self, topic: &str) -> Result<Publisher, Error> {
        self.make_publisher(topic, None, true)
    }

    fn make_publisher(
        &self,
        topic: &str,
        ttl: Option<Duration>,
        cache: bool,
    ) -> Result<Publisher, Error> {
        self.check_running()?;
        if topic.len() > MAX_TOPIC_LEN {
            return Err(Error::Topic(format!(
                "{} bytes; at most {MAX_TOPIC_LEN}",
                topic.len()
            )));
        }
        let local = self.config.local_transport;
        if local != LocalTransport::Udp && (ttl.is_some() || cache) {
            return Err(Error::Config(format!(
                "a publisher with a time to live or a last-value cache goes by the network only; \
                 local_transport is {local} (use udp)"
            )));
        }
        let only_ipc = local == LocalTransport::Ipc;
        // Over IPC only, nothing reads the ring: a small one.
        let ring = if only_ipc {
            4096
        } else {
            self.config.publisher_ring
        };
        let (producer, consumer) = byte_ring(ring);
        let closed = Arc::new(AtomicBool::new(false));
        let ipc = match local {
            LocalTransport::Udp => None,
            _ => Some(self.make_log(topic, &closed)?),
        };
        let topic: Arc<str> = Arc::from(topic);
        if !only_ipc {
            self.shared
                .tx_commands
                .push(SenderCommand::Publisher(PublisherEntry {
                    topic: topic.clone(),
                    ring: consumer,
                    closed: closed.clone(),
                    ttl: ttl.is_some(),
                    cache,
                }));
            self.shared.kick_sender();
        }
        if let Some(m) = self.shared.membership.get() {
            m.publishes(&topic, 1);
        }
        let p = Publisher::new(
            producer,
            self.shared.clone(),
            topic,
            closed,
            self.config.max_message,
            ttl,
            cache,
        );
        Ok(match ipc {
            Some(log) => p.with_ipc(log),
            None => p,
        })
    }

    /// A publisher's IPC log in `ipc_dir`, heart-beaten by the node until `closed`.
    fn make_log(
        &self,
        topic: &str,
        closed: &Arc<AtomicBool>,
    ) -> Result<crate::publisher::IpcLog, Error> {
        let prefix = crate::ipc::log_prefix(self.config.group, self.config.network_id());
        let name = format!(
            "{prefix}{}-{:08x}-{}",
            std::process::id(),
            self.session,
            self.shared.ipc.next_log()
        );
        let meta = crate::ring::log::LogMeta {
            session: u64::from(self.session),
            topic,
            source: 0,
        };
        let timeout = u64::try_from(self.config.publisher_timeout.as_nanos()).unwrap_or(u64::MAX);
        let writer = crate::ring::log::LogWriter::create_with(
            &self.config.ipc_dir,
            &name,
            self.config.ipc_log,
            &meta,
            crate::ipc::mono_ns(),
            timeout,
        )
        .map_err(|e| Error::Config(format!("IPC log in {}: {e}", self.config.ipc_dir.display())))?;
        self.shared.ipc.add(writer.beat_handle(), closed.clone());
        Ok(crate::publisher::IpcLog {
            only: self.config.local_transport == LocalTransport::Ipc,
            writer,
        })
    }

    /// A subscriber to every topic starting with one of `prefixes` (`""` matches
    /// all), with the configured slow-consumer policy (default
    /// [`SlowConsumerPolicy::Drop`](crate::SlowConsumerPolicy::Drop): it never holds a
    /// publisher back; ask for `BackPressure` with
    /// [`subscriber_with_policy`](Self::subscriber_with_policy) to be lossless). The
    /// first subscriber joins the group.
    pub fn subscriber<S: AsRef<str>>(&self, prefixes: &[S]) -> Result<Subscriber, Error> {
        self.subscriber_with_policy(prefixes, self.config.slow_consumer)
    }

    /// Like [`subscriber`](Self::subscriber), with its own slow-consumer policy.
    pub fn subscriber_with_policy<S: AsRef<str>>(
        &self,
        prefixes: &[S],
        policy: SlowConsumerPolicy,
    ) -> Result<Subscriber, Error> {
        self.check_running()?;
        if prefixes.is_empty() {
            return Err(Error::Topic(
                "a subscriber needs at least one prefix".into(),
            ));
        }
        let owned: Vec<String> = prefixes.iter().map(|p| p.as_ref().to_string()).collect();
        let local = self.config.local_transport;
        let logs = (local != LocalTransport::Udp).then(|| {
            crate::ipc::SubLogs::new(
                self.config.ipc_dir.clone(),
                crate::ipc::log_prefix(self.config.group, self.config.network_id()),
                owned.clone(),
                policy,
                u64::try_from(self.config.publisher_timeout.as_nanos()).unwrap_or(u64::MAX),
            )
        });
        let closed = Arc::new(AtomicBool::new(false));
        let resync = Arc::new(AtomicBool::new(false));
        let notify = self.shared.new_notify();
        if let Some(m) = self.shared.membership.get() {
            m.subscribes(&owned, 1);
        }
        if local == LocalTransport::Ipc {
            // Shared memory only: no socket, and a ring nothing writes.
            let (_, consumer) = byte_ring(4096);
            let sub = Subscriber::new(consumer, self.shared.clone(), closed, resync, notify, owned);
            return Ok(match logs {
                Some(l) => sub.with_ipc(l),
                None => sub,
            });
        }
        self.ensure_receiving()?;
        let (producer, consumer) = byte_ring(self.config.subscriber_ring);
        self.shared.new_subscriptions.push(SubscriptionEntry {
            prefixes: owned.clone(),
            policy,
            ring: producer,
            closed: closed.clone(),
            resync: resync.clone(),
            handler: None,
            notify: notify.clone(),
        });
        let sub = Subscriber::new(consumer, self.shared.clone(), closed, resync, notify, owned);
        Ok(match logs {
            Some(l) => sub.with_ipc(l),
            None => sub,
        })
    }

    /// A handler subscription: `handler` is called on the receiving thread with every
    /// event for topics starting with one of `prefixes`, the message borrowed from the
    /// receive buffer — no copy, no ring, no hand-off. It runs on whichever thread
    /// runs the receiver: the receiver agent's, or in
    /// [`ThreadingMode::Inline`](crate::ThreadingMode::Inline) the thread calling
    /// [`Node::do_work`] or a subscriber's `poll` (or the backstop thread while the
    /// application is away), so it must be quick: while it runs the node receives
    /// nothing, which holds the publishers back as a back-pressure subscriber would.
    /// Dropping the returned guard removes it.
    pub fn handler<S: AsRef<str>>(
        &self,
        prefixes: &[S],
        handler: impl FnMut(crate::Event<'_>) + Send + 'static,
    ) -> Result<HandlerGuard, Error> {
        self.check_running()?;
        if prefixes.is_empty() {
            return Err(Error::Topic("a handler needs at least one prefix".into()));
        }
        if self.config.local_transport != LocalTransport::Udp {
            return Err(Error::Config(format!(
                "handler subscriptions go by the network only; local_transport is {} \
                 (use udp, or a subscriber)",
                self.config.local_transport
            )));
        }
        self.ensure_receiving()?;
        // The ring is never written: events go to the handler.
        let (producer, _) = byte_ring(4096);
        let closed = Arc::new(AtomicBool::new(false));
        let owned: Vec<String> = prefixes.iter().map(|p| p.as_ref().to_string()).collect();
        if let Some(m) = self.shared.membership.get() {
            m.subscribes(&owned, 1);
        }
        self.shared.new_subscriptions.push(SubscriptionEntry {
            prefixes: owned.clone(),
            policy: SlowConsumerPolicy::BackPressure,
            ring: producer,
            closed: closed.clone(),
            resync: Arc::new(AtomicBool::new(false)),
            handler: Some(Box::new(handler)),
            notify: Arc::default(),
        });
        Ok(HandlerGuard {
            closed,
            shared: self.shared.clone(),
            prefixes: owned,
        })
    }

    fn ensure_receiving(&self) -> Result<(), Error> {
        let _guard = self.rx_open.lock().unwrap_or_else(|p| p.into_inner());
        if self.rx_info.get().is_none() {
            let (mut rx, info) = io::open_rx(self.backend.kind, &self.socket)?;
            debug_assert_eq!(rx.kind(), self.backend.kind);
            if let Some(f) = &self.config.faults {
                tracing::warn!(faults = ?f, "injecting faults into the receive path");
                rx = Box::new(io::fault::FaultyRx::new(rx, f.clone()));
            }
            let control = io::socket::open_control_tx(&self.socket)?;
            // Publishers may have this many datagrams in flight towards us: half of
            // what the socket buffer holds (the kernel counts a datagram's truesize,
            // its payload plus a few KiB of bookkeeping).
            let per = self.socket.max_datagram + 4096;
            let window = (info.rcvbuf / 2 / per).clamp(4, u32::MAX as usize) as u32;
            self.shared.rx_commands.push(ReceiverCommand::Backend {
                backend: rx,
                control,
                window,
            });
            // An agent idling deep (no socket yet) takes it now, not at its next look.
            if let Some(t) = self.shared.receiver_thread.get() {
                t.unpark();
            }
            self.shared
                .rcvbuf
                .store(info.rcvbuf, std::sync::atomic::Ordering::Relaxed);
            let _ = self.rx_info.set(info);
        }
        Ok(())
    }

    /// Waits until every receiver that reported to this node's publishers has
    /// acknowledged everything sent so far (so late NAKs can still be answered before
    /// the node goes away), waiting at least `min` for receivers to make themselves
    /// known. Returns whether everything was acknowledged within `timeout`.
    pub fn wait_acknowledged(&self, min: Duration, timeout: Duration) -> bool {
        let start = Instant::now();
        let tx = &self.shared.counters.tx;
        loop {
            let (next, acked) = (tx.next_seq.get(), tx.acked.get());
            let elapsed = start.elapsed();
            // (and every IPC reader has read everything in the logs)
            if acked >= next && elapsed >= min && self.shared.ipc.all_read() {
                return true;
            }
            if elapsed >= timeout || self.shared.stopped() {
                return false;
            }
            // Inline: status messages are read, and NAKs answered, by this thread.
            self.do_work();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until at least `n` receivers report to this node's publishers (status
    /// messages; a receiver is a node on the group with a subscriber, whichever its
    /// topics), for publishers that must not start before their audience. A node with
    /// a publisher announces its session at once (heartbeats before the first
    /// message), so receivers report before anything is sent. Returns how many
    /// there are; `Error::Timeout` after `timeout`, `Error::Stopped` if the node stops.
    pub fn wait_for_receivers(&self, n: usize, timeout: Duration) -> Result<usize, Error> {
        self.shared.wait_for_receivers(n, timeout)
    }

    /// Stops the node gracefully: waits (up to `timeout`) until everything its
    /// publishers queued has been sent — including what flow control still holds
    /// back for a slow receiver — and every live receiver has acknowledged it
    /// (answering NAKs meanwhile), then stops as dropping it does. Dropping a node
    /// instead stops it at once: what was still queued is not sent (its receivers
    /// report the loss). `Error::Unflushed` says what was left when time ran out.
    /// Offer nothing meanwhile from other threads: it would be waited for too.
    pub fn shutdown(self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let ask = self.shared.drain_asked.fetch_add(1, Ordering::AcqRel) + 1;
        let tx = &self.shared.counters.tx;
        loop {
            self.check_running()?;
            let sent_all = self.shared.drained.load(Ordering::Acquire) >= ask;
            let (next, acked) = (tx.next_seq.get(), tx.acked.get());
            if sent_all && acked >= next {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unflushed {
                    unsent: !sent_all,
                    unacknowledged: next.saturating_sub(acked),
                });
            }
            if self.shared.kick_sender() == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Runs one duty cycle of the sender and the receiver on the calling thread, with
    /// the control socket and timers (heartbeats, NAKs, status), and returns the work
    /// done. Only inline threading needs it (elsewhere it returns 0): publishers'
    /// `offer` and subscribers' `poll` run cycles themselves, and a parked backstop
    /// thread covers an application that stops calling, so an application calls this
    /// from its own loop when it wants its timers run on its own thread.
    pub fn do_work(&self) -> usize {
        self.shared
            .inline
            .get()
            .map_or(0, |i| i.do_work(&self.shared))
    }

    /// The threading this node runs with ([`ThreadingMode::Auto`](crate::ThreadingMode::Auto)
    /// resolved for the host); [`Stats::threading_reason`] says why.
    pub fn threading(&self) -> crate::ThreadingMode {
        self.shared.base.threading.mode
    }

    /// Whether this node sends by unicast now ([`Transport::Unicast`], or
    /// [`Transport::Auto`] with seeds after it heard no multicast discovery), and to
    /// which peers' data ports (those subscribed to something it publishes).
    pub fn unicast(&self) -> Option<Vec<std::net::SocketAddrV4>> {
        let u = &self.shared.unicast;
        u.is_active().then(|| u.destinations())
    }

    /// This node's publishing session id.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// The I/O backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind
    }

    /// Largest datagram payload this node sends.
    pub fn max_payload(&self) -> usize {
        self.socket.max_datagram
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

/// Keeps a [`Node::handler`] registered; dropping it removes the handler (at the
/// receiver's next cycle).
pub struct HandlerGuard {
    closed: Arc<AtomicBool>,
    shared: Arc<Shared>,
    prefixes: Vec<String>,
}

impl std::fmt::Debug for HandlerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerGuard")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(m) = self.shared.membership.get() {
            m.subscribes(&self.prefixes, -1);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Handles that outlive the node are told so.
        let _ = self.shared.failure.set("the node was dropped".to_string());
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.shared.sender_thread.get() {
            t.unpark();
        }
        self.shared.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Inline: what publishers queued goes out now, as a sender agent's last
        // cycles would (the backstop has stopped).
        if let Some(i) = self.shared.inline.get() {
            i.drain(&self.shared);
        }
    }
}
