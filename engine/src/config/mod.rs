//! Node configuration: a builder with safe single-host defaults.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::error::Error;

mod settings;
pub use settings::{
    markdown_table, parse_duration, parse_size, unknown_env_vars, Origin, CONFIG_ENV,
};
use settings::{Layered, SETTINGS};

/// Default multicast group and port.
pub const DEFAULT_GROUP: &str = "239.255.0.1:40456";
/// Default interface: loopback, so nothing leaves the host unless asked.
pub const DEFAULT_IFACE: &str = "lo";
/// Default discovery group and port.
pub const DEFAULT_DISCOVERY: &str = "239.255.0.1:40400";

/// The wire value of a network name: 0 for the default network (`""`), else the
/// name's 32-bit FNV-1a hash (stable across versions and hosts).
pub fn network_id(name: &str) -> u32 {
    if name.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// How agents wait when they have no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleStrategy {
    /// Spin on the core: lowest latency, burns the core.
    BusySpin,
    /// Yield the core to the scheduler between polls.
    Yield,
    /// Spin briefly, then yield, then sleep with exponential backoff (up to
    /// `max_park`), blocking in the kernel where the backend can. Kind to shared hosts.
    #[default]
    Park,
}

/// How data reaches the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Multicast; with seeds configured, a node that hears no multicast discovery
    /// within [`UNICAST_FALLBACK`] says so and switches to unicast.
    #[default]
    Auto,
    /// Multicast only (seeds still help discovery).
    Multicast,
    /// Unicast from the start: discovery through the seeds, data sent to each
    /// interested peer (one node per host and port: the sockets bind the port on
    /// every address).
    Unicast,
}

/// How a node's publishers reach subscribers on the same host, and how its
/// subscribers hear publishers on it (issue 12's IPC transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalTransport {
    /// The network only (multicast or unicast, as [`Transport`] says), as before
    /// IPC existed.
    #[default]
    Udp,
    /// Shared memory only: each publisher writes its messages to a log file in
    /// `ipc_dir` that subscribers on this host map and read in place; nothing goes
    /// to the network, and subscribers hear only local publishers.
    Ipc,
    /// Both: publishers write the log and send to the network; subscribers read the
    /// logs of local publishers (those of `Auto` or `Ipc` nodes on the same group and
    /// network) and the network for everyone else, never a session twice.
    Auto,
}

/// How long a node in [`Transport::Auto`] with seeds waits for a multicast announce
/// before it switches to unicast.
pub const UNICAST_FALLBACK: Duration = Duration::from_secs(2);

/// Which threads run the agents' duty cycles (sending, receiving, timers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadingMode {
    /// Chosen for the host when the node starts: never more spinning threads than the
    /// cores this process may use, the application's thread counted. With fewer than
    /// three usable cores that is [`Inline`](Self::Inline), else
    /// [`Dedicated`](Self::Dedicated). [`Node::threading`](crate::Node::threading)
    /// and [`Stats::threading`](crate::Stats::threading) say which, and why.
    #[default]
    Auto,
    /// A sender agent and a receiver agent, each on its own thread (pinned to its own
    /// core when cores are given): for hosts with cores to spare.
    Dedicated,
    /// One thread runs both agents.
    Shared,
    /// No agent threads (Aeron's "invoker"): the application's own calls run the duty
    /// cycles. `offer`/`commit` hands the message to the kernel before returning when
    /// the node is not in the middle of a burst (natural batching: what is offered
    /// while the previous send was still being paid for goes in the next datagram);
    /// a subscriber's `poll` reads the socket itself; [`Node::do_work`](crate::Node::do_work)
    /// (also run by `poll`, `flush` and every offer) runs the timers. A parked
    /// backstop thread (it never spins) runs the duty cycles when the application has
    /// not called in for a millisecond, so NAKs, status, heartbeats and a burst's last
    /// datagram never wait on the application.
    Inline,
}

/// What happens when a subscription's ring is full because its application does not
/// poll fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Hold back: the receiver leaves datagrams in the socket and its status messages
    /// stop the publishers (flow control) until the subscriber catches up. Lossless;
    /// the slowest back-pressure subscriber on a node sets the pace for that node, and
    /// under `Min` flow control for every publisher it hears. Ask for it where a
    /// subscriber must see everything and may hold the group back to get it.
    BackPressure,
    /// Drop the message for this subscription only, count it, and hand the
    /// subscriber an explicit [`Loss`](crate::Loss) with reason `SlowConsumer`.
    /// Never slows the publisher or the other subscriptions. The default: only a
    /// subscriber that asked to pace publishers ([`BackPressure`](Self::BackPressure))
    /// can, as with ZeroMQ (PUB drops at the high-water mark) and Aeron (multicast
    /// flow control leaves slow receivers behind by default). Network loss is still
    /// repaired (NAKs) under every policy; this is only about a slow application.
    #[default]
    Drop,
    /// Keep only the newest undelivered message per topic (and publishing session)
    /// while the ring is full, and deliver those, oldest update first, as room
    /// frees: for prices and telemetry, where only the latest value matters. The
    /// superseded messages are counted (`conflated`); their sequence numbers are the
    /// ones missing between delivered messages. Never slows anything else.
    Conflate,
    /// "Suicidal snail": when the ring overflows, the subscription declares itself
    /// too slow (counted in `slow_disconnects`), its queued backlog is discarded and
    /// reported as [`LossReason::Disconnected`](crate::LossReason::Disconnected)
    /// losses, and delivery resumes at the live position. Never slows anything else.
    Disconnect,
}

/// Which I/O backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Probe the host: io_uring when it works, else the mmsg fallback — and mmsg
    /// under inline threading, where the application's thread does the I/O one
    /// wake-up at a time (one blocking `recvmmsg`, one `send`), which io_uring only
    /// makes dearer. `RINGCAST_BACKEND=uring|mmsg` in the environment forces one.
    #[default]
    Auto,
    /// io_uring (fails at start if the host blocks it).
    Uring,
    /// `sendmmsg`/`recvmmsg` + poll.
    Mmsg,
}

/// Whose status messages pace a publisher (flow control). Live receivers are those
/// heard within the last second; with none that counts, a publisher is unconstrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowControlStrategy {
    /// The slowest live receiver sets the pace: a publisher never runs further ahead
    /// than any receiver's position plus window, nor (reliable mode) further than its
    /// retransmit window, so whatever a live receiver misses can still be resent.
    /// Lossless for every receiver the publisher has heard from: a receiver counts
    /// from its first status message (sent as soon as it hears the session), so
    /// before a burst wait for [`Stats::receivers`](crate::Stats::receivers) to
    /// reach the subscribers you expect.
    #[default]
    Min,
    /// The fastest live receiver sets the pace. Receivers further behind than their
    /// window are *left behind* (counted in `Stats::left_behind`): they still NAK and
    /// are repaired from the retransmit window while it holds the data, else they get
    /// explicit loss events.
    Max,
    /// Only receivers whose status carries this tag (see
    /// [`ConfigBuilder::receiver_tag`]) hold the publisher back, the slowest of them
    /// setting the pace; untagged and other-tag receivers are left behind as with
    /// `Max`. With no such receiver live the publisher is unconstrained. The tag must
    /// not be 0 (0 means untagged).
    Tagged(u32),
}

/// Everything a [`Node`](crate::Node) needs. Build with [`Config::builder`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) group: SocketAddrV4,
    pub(crate) iface: String,
    pub(crate) ttl: Option<u32>,
    pub(crate) max_payload: Option<usize>,
    pub(crate) max_message: usize,
    pub(crate) cores: Vec<usize>,
    pub(crate) threading: ThreadingMode,
    pub(crate) idle: IdleStrategy,
    pub(crate) max_park: Duration,
    pub(crate) backend: BackendChoice,
    pub(crate) publisher_ring: usize,
    pub(crate) subscriber_ring: usize,
    pub(crate) rcvbuf: usize,
    pub(crate) sndbuf: usize,
    pub(crate) batch: usize,
    pub(crate) loopback: bool,
    pub(crate) max_sessions: usize,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) reliable: bool,
    pub(crate) retransmit_window: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) nak_delay: Duration,
    pub(crate) nak_interval: Duration,
    pub(crate) nak_retries: u32,
    pub(crate) publisher_timeout: Duration,
    pub(crate) faults: Option<crate::io::fault::FaultConfig>,
    pub(crate) stats_dir: Option<std::path::PathBuf>,
    pub(crate) flow_control: FlowControlStrategy,
    pub(crate) receiver_tag: u32,
    pub(crate) rate_limit: Option<u64>,
    pub(crate) repair_share: u32,
    /// The group key file (`key_file`), and the keys (from it, or set in code).
    pub(crate) key_file: Option<std::path::PathBuf>,
    pub(crate) keys: Option<crate::seal::Keyring>,
    pub(crate) gso: bool,
    pub(crate) gro: bool,
    pub(crate) busy_poll: Option<Duration>,
    pub(crate) network: String,
    pub(crate) node_id: Option<u64>,
    pub(crate) node_name: Option<String>,
    pub(crate) discovery: Option<SocketAddrV4>,
    pub(crate) discovery_interval: Duration,
    pub(crate) discovery_multiplier: u32,
    pub(crate) max_peers: usize,
    pub(crate) transport: Transport,
    pub(crate) seeds: Vec<String>,
    pub(crate) local_transport: LocalTransport,
    pub(crate) ipc_dir: std::path::PathBuf,
    pub(crate) ipc_log: usize,
    /// Where each value that is not a default came from (set by `build`).
    pub(crate) origins: Vec<(&'static str, Origin)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group: DEFAULT_GROUP
                .parse()
                .unwrap_or(SocketAddrV4::new([239, 255, 0, 1].into(), 40456)),
            iface: DEFAULT_IFACE.to_string(),
            ttl: None,
            max_payload: None,
            max_message: 4 << 20,
            cores: Vec::new(),
            threading: ThreadingMode::default(),
            idle: IdleStrategy::default(),
            max_park: Duration::from_millis(1),
            backend: BackendChoice::default(),
            publisher_ring: 8 << 20,
            subscriber_ring: 8 << 20,
            rcvbuf: 32 << 20,
            sndbuf: 4 << 20,
            batch: 32,
            loopback: true,
            max_sessions: 1024,
            slow_consumer: SlowConsumerPolicy::default(),
            reliable: true,
            retransmit_window: 1 << 20,
            heartbeat_interval: Duration::from_millis(1),
            nak_delay: Duration::from_micros(200),
            nak_interval: Duration::from_millis(2),
            nak_retries: 20,
            publisher_timeout: Duration::from_secs(2),
            faults: None,
            stats_dir: Some(std::path::PathBuf::from("/dev/shm")),
            flow_control: FlowControlStrategy::default(),
            receiver_tag: 0,
            rate_limit: None,
            repair_share: 100,
            key_file: None,
            keys: None,
            gso: true,
            gro: true,
            busy_poll: None,
            network: String::new(),
            node_id: None,
            node_name: None,
            discovery: DEFAULT_DISCOVERY.parse().ok(),
            discovery_interval: Duration::from_secs(1),
            discovery_multiplier: 5,
            max_peers: 1024,
            transport: Transport::default(),
            seeds: Vec::new(),
            local_transport: LocalTransport::default(),
            ipc_dir: std::path::PathBuf::from("/dev/shm"),
            ipc_log: 8 << 20,
            origins: Vec::new(),
        }
    }
}

impl Config {
    /// A builder starting from the defaults (group 239.255.0.1:40456 on `lo`, TTL 0),
    /// then the TOML file `RINGCAST_CONFIG` names (if set), then the `RINGCAST_<KEY>`
    /// environment variables: every setting can come from the environment or a file,
    /// and the builder's setters win over both (see the README's configuration
    /// table, or `ringcast config`). A bad value or file is reported by
    /// [`build`](ConfigBuilder::build), naming the variable or key.
    pub fn builder() -> ConfigBuilder {
        let file = std::env::var_os(CONFIG_ENV).filter(|f| !f.is_empty());
        ConfigBuilder::layered(file.as_deref().map(std::path::Path::new), true)
    }

    /// Like [`builder`](Self::builder), with `path` as the TOML file (the
    /// environment still wins over it, and the setters over both).
    pub fn builder_from_file(path: impl AsRef<std::path::Path>) -> ConfigBuilder {
        ConfigBuilder::layered(Some(path.as_ref()), true)
    }

    /// A builder from the built-in defaults alone: no file, no environment.
    pub fn builder_ignoring_env() -> ConfigBuilder {
        ConfigBuilder::layered(None, false)
    }

    /// Where the setting `key` (a TOML key, e.g. `"nak_delay"`) got its value.
    /// `None` for an unknown key.
    pub fn origin(&self, key: &str) -> Option<Origin> {
        let s = settings::find(key)?;
        Some(
            self.origins
                .iter()
                .find(|(k, _)| *k == s.key)
                .map_or(Origin::Default, |(_, o)| o.clone()),
        )
    }

    /// Every setting: key, environment variable, value as the settings write it,
    /// and where it came from (what `ringcast config` prints).
    pub fn settings(&self) -> Vec<(&'static str, String, String, Origin)> {
        SETTINGS
            .iter()
            .map(|s| {
                let origin = self.origin(s.key).unwrap_or(Origin::Default);
                (s.key, s.env(), (s.get)(self), origin)
            })
            .collect()
    }

    /// The multicast group.
    pub fn group(&self) -> SocketAddrV4 {
        self.group
    }

    /// The interface name or address.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The discovery group (`None`: discovery off).
    pub fn discovery(&self) -> Option<SocketAddrV4> {
        self.discovery
    }

    /// How data reaches other nodes.
    pub fn transport_mode(&self) -> Transport {
        self.transport
    }

    /// How this node meets publishers and subscribers on its host.
    pub fn local_transport(&self) -> LocalTransport {
        self.local_transport
    }

    /// The seeds as configured (`HOST[:PORT]`).
    pub fn seed_list(&self) -> &[String] {
        &self.seeds
    }

    /// The network ID datagrams carry (see [`ConfigBuilder::network`]).
    pub fn network_id(&self) -> u32 {
        network_id(&self.network)
    }

    /// The network's name (`""`: the default network).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Whether repair (NAKs, retransmission) is on.
    pub fn reliable(&self) -> bool {
        self.reliable
    }

    /// Largest message accepted and reassembled.
    pub fn max_message(&self) -> usize {
        self.max_message
    }
}

/// Builds a [`Config`]; every setter is optional.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config, Layers);

/// What the builder started from: the file and environment layers' values (to tell
/// the setters' changes from them), where those came from, and a layer's error.
#[derive(Debug, Clone)]
struct Layers {
    start: Box<Config>,
    origins: Vec<(&'static str, Origin)>,
    error: Option<String>,
}

impl ConfigBuilder {
    fn layered(file: Option<&std::path::Path>, env: bool) -> Self {
        let mut l = Layered {
            config: Config::default(),
            origins: Vec::new(),
        };
        let mut result = Ok(());
        if let Some(f) = file {
            result = settings::apply_file(&mut l, f);
        }
        if env && result.is_ok() {
            result = settings::apply_env(&mut l, &|k| std::env::var(k).ok());
        }
        let error = result.err().map(|e| match e {
            Error::Config(why) => why,
            other => other.to_string(),
        });
        ConfigBuilder(
            l.config.clone(),
            Layers {
                start: Box::new(l.config),
                origins: l.origins,
                error,
            },
        )
    }

    /// Multicast group `ADDR:PORT` (must be an IPv4 multicast address).
    pub fn group(mut self, group: SocketAddrV4) -> Self {
        self.0.group = group;
        self
    }

    /// Interface by name (`lo`, `eth1`) or by one of its IPv4 addresses.
    pub fn iface(mut self, iface: impl Into<String>) -> Self {
        self.0.iface = iface.into();
        self
    }

    /// Multicast TTL. Defaults to 0 on loopback (never leaves the host), 1 otherwise.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.0.ttl = Some(ttl);
        self
    }

    /// Cap on a datagram's UDP payload. Defaults to the interface MTU minus the IP
    /// and UDP headers (65507 on loopback, 1472 on a 1500-byte Ethernet NIC).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.0.max_payload = Some(bytes);
        self
    }

    /// Largest message (fragmented across datagrams when needed). Default 4 MiB.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.0.max_message = bytes;
        self
    }

    /// Cores to pin agents to: the sender agent to the first, the receiver agent to
    /// the second (or the first when only one is given). Empty: no pinning.
    pub fn cores(mut self, cores: Vec<usize>) -> Self {
        self.0.cores = cores;
        self
    }

    /// Which threads run the agents (default [`ThreadingMode::Auto`]: chosen for the host).
    pub fn threading(mut self, mode: ThreadingMode) -> Self {
        self.0.threading = mode;
        self
    }

    /// How agents wait for work (in [`ThreadingMode::Inline`]: how
    /// `Subscriber::poll_timeout`, `recv` and `flush` wait; `BusySpin` polls the socket
    /// in a loop, the lowest-latency configuration).
    pub fn idle(mut self, idle: IdleStrategy) -> Self {
        self.0.idle = idle;
        self
    }

    /// Longest sleep of the [`IdleStrategy::Park`] backoff. Default 1 ms.
    pub fn max_park(mut self, d: Duration) -> Self {
        self.0.max_park = d;
        self
    }

    /// I/O backend.
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.0.backend = backend;
        self
    }

    /// Bytes of each publisher's ring (rounded up to a power of two). Default 8 MiB.
    pub fn publisher_ring(mut self, bytes: usize) -> Self {
        self.0.publisher_ring = bytes;
        self
    }

    /// Bytes of each subscription's ring (rounded up to a power of two). Default 8 MiB.
    pub fn subscriber_ring(mut self, bytes: usize) -> Self {
        self.0.subscriber_ring = bytes;
        self
    }

    /// Requested socket receive buffer (the kernel may grant less; see stats).
    pub fn rcvbuf(mut self, bytes: usize) -> Self {
        self.0.rcvbuf = bytes;
        self
    }

    /// Requested socket send buffer.
    pub fn sndbuf(mut self, bytes: usize) -> Self {
        self.0.sndbuf = bytes;
        self
    }

    /// Datagrams per send/receive batch (one kernel entry per batch). Default 32.
    pub fn batch(mut self, n: usize) -> Self {
        self.0.batch = n;
        self
    }

    /// Whether this host's own subscribers hear its publishers (IP_MULTICAST_LOOP).
    pub fn multicast_loop(mut self, on: bool) -> Self {
        self.0.loopback = on;
        self
    }

    /// Most publishing sessions tracked at once.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.0.max_sessions = n;
        self
    }

    /// Default policy for subscriptions whose application falls behind
    /// ([`Node::subscriber_with_policy`](crate::Node::subscriber_with_policy) overrides it).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.0.slow_consumer = policy;
        self
    }

    /// Reliable delivery (default on): receivers NAK missing datagrams and publishers
    /// retransmit them from their retransmit window; only what cannot be repaired is
    /// reported as a loss. Off (best effort): a gap is reported at once and publishers
    /// ignore NAKs.
    pub fn reliable(mut self, on: bool) -> Self {
        self.0.reliable = on;
        self
    }

    /// Bytes of recent datagrams a publisher keeps for retransmission. Default 1 MiB.
    ///
    /// Under `min` and `tagged` flow control this is also how far the publisher may
    /// run ahead of its slowest receiver, so it sets the data in flight (a receiver
    /// that keeps pace is never further behind, so it never misses anything the
    /// window no longer holds). The datagrams are built in the window's buffers, each
    /// one reused a window later: a window that stays in the CPU's own cache is
    /// faster at full speed (on the project's 2-core VM, interleaved pairs measured
    /// 1.05–1.6× the messages per second for 1 MiB against 4 MiB — within the noise
    /// while the host was slow — and 16 MiB cost another ~15 %: the benchmark's
    /// `window4m` and `window16m` variants), a wider one repairs losses
    /// over longer round trips and lets more data fly (1 MiB per round trip of the
    /// receivers' status: ~8 Gbit/s at 1 ms). Receivers report their position at
    /// least every 384 KiB, so keep the window at 1 MiB or more: a smaller one
    /// waits on their status timers.
    pub fn retransmit_window(mut self, bytes: usize) -> Self {
        self.0.retransmit_window = bytes;
        self
    }

    /// How soon an idle publisher sends its first heartbeat (then backing off to
    /// 100 ms): how fast receivers learn of a lost last datagram. Default 1 ms.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.0.heartbeat_interval = d;
        self
    }

    /// NAK timing: the random delay before a gap's first NAK (at most `delay`), the
    /// time before the second (doubling with every further NAK, up to 100 ms: a
    /// retransmission may queue behind a window of new data), and how many NAK rounds
    /// go unanswered before the gap is declared lost. Defaults: 200 µs, 2 ms, 20
    /// (about 1.5 s). A publisher whose heartbeat says it no longer has the data ends
    /// the wait at once.
    pub fn nak(mut self, delay: Duration, interval: Duration, retries: u32) -> Self {
        self.0.nak_delay = delay;
        self.0.nak_interval = interval;
        self.0.nak_retries = retries.max(1);
        self
    }

    /// A publishing session not heard (data or heartbeat) for this long is declared
    /// gone: subscribers get [`SessionState::Gone`](crate::SessionState::Gone) after
    /// the losses it leaves. Idle publishers heartbeat at least every 100 ms, so keep
    /// it well above that. Default 2 s; checked every quarter of it.
    pub fn publisher_timeout(mut self, d: Duration) -> Self {
        self.0.publisher_timeout = d.max(Duration::from_millis(10));
        self
    }

    /// Tests only: injects faults (loss, duplication, reordering, delay, a blackout)
    /// into everything this node receives on the data port, between the kernel and
    /// the protocol. Every injected fault is counted (`injected_*` in the stats).
    pub fn inject_faults(mut self, faults: crate::io::fault::FaultConfig) -> Self {
        self.0.faults = Some(faults);
        self
    }

    /// Where this node's counters file goes, for `ringcast stat` (default
    /// `RINGCAST_STATS_DIR` or `/dev/shm`); `None`: no file.
    pub fn stats_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.0.stats_dir = dir;
        self
    }

    /// Whose status messages pace this node's publishers. Default
    /// [`FlowControlStrategy::Min`] (the slowest receiver; lossless).
    pub fn flow_control(mut self, strategy: FlowControlStrategy) -> Self {
        self.0.flow_control = strategy;
        self
    }

    /// The tag this node's receiver puts in every status message it sends, for
    /// publishers using [`FlowControlStrategy::Tagged`]. Default 0: untagged.
    pub fn receiver_tag(mut self, tag: u32) -> Self {
        self.0.receiver_tag = tag;
        self
    }

    /// Caps the datagram bytes (UDP payload, retransmissions included) this node's
    /// publishers send per second, with bursts of up to one send batch or 1 ms worth,
    /// whichever is larger; records wait in the publisher rings meanwhile, so
    /// back-pressure reaches `offer`. Default `None`: no limit.
    pub fn rate_limit(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.0.rate_limit = bytes_per_sec;
        self
    }

    /// Caps what a publisher retransmits for NAKs, in bytes per 100 bytes of data
    /// it sent (on top of one retransmit window, and of one window per second while
    /// flow control holds it back): a storm of NAKs, forged or not, cannot make it
    /// send more. Default 100: repair may double the traffic, no more.
    pub fn repair_share(mut self, percent: u32) -> Self {
        self.0.repair_share = percent;
        self
    }

    /// Seals every datagram this node sends, on every port, with the group's keys,
    /// and accepts only datagrams sealed with them (see [`Keyring`](crate::Keyring)):
    /// a node without the key sees nothing of the group, and is seen by nobody.
    /// `None` (the default): open mode. The `key_file` setting loads one from a file.
    pub fn key(mut self, keys: Option<crate::seal::Keyring>) -> Self {
        self.0.keys = keys;
        self.0.key_file = None;
        self
    }

    /// Loads the group keys from a key file written by `ringcast keygen` (see
    /// [`key`](Self::key)); a file that does not load fails [`build`](Self::build).
    pub fn key_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        match crate::seal::Keyring::load(&path) {
            Ok(k) => {
                self.0.keys = Some(k);
                self.0.key_file = Some(path);
            }
            Err(e) => {
                self.1.error.get_or_insert(e.to_string());
            }
        }
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Config, Error> {
        let ConfigBuilder(mut c, layers) = self;
        if let Some(why) = layers.error {
            return Err(Error::Config(why));
        }
        let mut origins = layers.origins;
        for s in SETTINGS {
            if (s.get)(&c) != (s.get)(&layers.start) {
                settings::set_origin(&mut origins, s.key, Origin::Code);
            }
        }
        c.origins = origins;
        if c.local_transport != LocalTransport::Udp
            && (!c.ipc_log.is_power_of_two()
                || !(crate::ring::log::MIN_CAPACITY..=crate::ring::log::MAX_CAPACITY)
                    .contains(&c.ipc_log))
        {
            return Err(Error::Config(format!(
                "ipc_log {} bytes: a power of two from 64 KiB to 1 GiB",
                c.ipc_log
            )));
        }
        if c.rate_limit == Some(0) {
            return Err(Error::Config("rate limit must be at least 1 byte/s".into()));
        }
        if c.flow_control == FlowControlStrategy::Tagged(0) {
            return Err(Error::Config(
                "flow control tag must not be 0 (0 means untagged)".into(),
            ));
        }
        if !c.group.ip().is_multicast() {
            return Err(Error::Config(format!(
                "{} is not a multicast address",
                c.group.ip()
            )));
        }
        if c.max_payload
            .is_some_and(|p| !(crate::MIN_PAYLOAD..=65507).contains(&p))
        {
            return Err(Error::Config(format!(
                "max payload must be {}..=65507 bytes",
                crate::MIN_PAYLOAD
            )));
        }
        if c.batch == 0 || c.batch > crate::agent::MAX_BATCH {
            return Err(Error::Config(format!(
                "batch must be 1..={}",
                crate::agent::MAX_BATCH
            )));
        }
        if c.group.port() == u16::MAX {
            return Err(Error::Config(
                "port 65535 leaves no room for the control port (port + 1)".into(),
            ));
        }
        if c.max_message == 0 || c.max_message > u32::MAX as usize {
            return Err(Error::Config("max message must be 1..=4 GiB".into()));
        }
        Ok(c)
    }

    /// UDP GSO on send (default on): consecutive equal-size datagrams of a batch go
    /// to the kernel as one send, cut into datagrams by the kernel or NIC. Used only
    /// where the kernel accepts it (Linux ≥ 4.18); switched off for the socket if a
    /// send is refused (`EIO`/`EINVAL`). `RINGCAST_GSO=0` also turns it off. See
    /// `Stats::offload`.
    pub fn gso(mut self, on: bool) -> Self {
        self.0.gso = on;
        self
    }

    /// UDP GRO on receive (default on, Linux ≥ 5.0): the kernel may hand over several
    /// datagrams of one sender in one buffer, split again before the protocol sees
    /// them. Receive buffers are 64 KiB each while it is on. `RINGCAST_GRO=0` also
    /// turns it off.
    pub fn gro(mut self, on: bool) -> Self {
        self.0.gro = on;
        self
    }

    /// The network this node belongs to: nodes of other networks on the same group
    /// and port ignore its data, control and discovery entirely (counted as
    /// `foreign_network`, `control_foreign`, `discovery_foreign`), as glue's network
    /// IDs do. Default `""`, the default network. Not a security boundary: anyone who
    /// knows the name can join (group keys are).
    pub fn network(mut self, name: impl Into<String>) -> Self {
        self.0.network = name.into();
        self
    }

    /// This node's id in discovery: stable across restarts when configured, else
    /// random per start.
    pub fn node_id(mut self, id: Option<u64>) -> Self {
        self.0.node_id = id;
        self
    }

    /// This node's name in discovery (default `host:pid`; at most 64 bytes).
    pub fn node_name(mut self, name: Option<String>) -> Self {
        self.0.node_name = name;
        self
    }

    /// The discovery group nodes announce themselves on (default
    /// 239.255.0.1:40400, on the node's interface with its TTL); `None` turns
    /// discovery off (no announces, an empty directory).
    pub fn discovery(mut self, group: Option<SocketAddrV4>) -> Self {
        self.0.discovery = group;
        self
    }

    /// Time between a node's announces (default 1 s), and how many a peer may miss
    /// before it expires (default 5).
    pub fn discovery_timing(mut self, interval: Duration, multiplier: u32) -> Self {
        self.0.discovery_interval = interval.max(Duration::from_millis(10));
        self.0.discovery_multiplier = multiplier.max(1);
        self
    }

    /// How data reaches other nodes (default [`Transport::Auto`]).
    pub fn transport(mut self, t: Transport) -> Self {
        self.0.transport = t;
        self
    }

    /// How publishers and subscribers on this host reach each other: the network
    /// ([`LocalTransport::Udp`], the default), shared memory
    /// ([`LocalTransport::Ipc`]) or both ([`LocalTransport::Auto`]).
    pub fn local_transport(mut self, t: LocalTransport) -> Self {
        self.0.local_transport = t;
        self
    }

    /// Where IPC logs live (default `/dev/shm`: memory, not disk). Every process
    /// that is to meet over IPC must use the same directory.
    pub fn ipc_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.0.ipc_dir = dir.into();
        self
    }

    /// Each IPC publisher's log, in bytes (a power of two, 64 KiB to 1 GiB; default
    /// 8 MiB): how far a subscriber may fall behind before back-pressure holds the
    /// publisher, or it is lapped.
    pub fn ipc_log(mut self, bytes: usize) -> Self {
        self.0.ipc_log = bytes;
        self
    }

    /// Rendezvous nodes for discovery where multicast does not reach, as
    /// `HOST[:PORT]` (the port defaults to the discovery port). Any node can be one:
    /// a node relays the addresses of the peers it knows to each newcomer.
    pub fn seeds<S: AsRef<str>>(mut self, seeds: &[S]) -> Self {
        self.0.seeds = seeds
            .iter()
            .map(|s| s.as_ref().trim().to_string())
            .collect();
        self
    }

    /// Most peers in the directory (default 1024): beyond it newcomers are refused
    /// (counted) unless a silent peer makes room.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.0.max_peers = n.max(1);
        self
    }

    /// `SO_BUSY_POLL` on the receive socket: blocking receives poll the NIC's queue
    /// for up to this long instead of sleeping until an interrupt (lowest latency,
    /// burns CPU; only NAPI devices, not loopback). Above `net.core.busy_read` the
    /// kernel requires `CAP_NET_ADMIN`; a refusal is reported in `Stats::offload`,
    /// not an error. Default `None`: off.
    pub fn busy_poll(mut self, d: Option<Duration>) -> Self {
        self.0.busy_poll = d;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file sets what it names, the code wins over it, and each value says where it
    /// came from; a broken file fails `build`, naming the file.
    #[test]
    fn the_builder_wins_over_the_file_and_origins_say_who_set_what() {
        let dir = std::env::temp_dir().join(format!("ringcast-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("node.toml");
        std::fs::write(
            &f,
            "batch = 64\nsubscriber_ring = \"16MiB\"\nidle = \"busy-spin\"\n",
        )
        .unwrap();
        let c = Config::builder_from_file(&f)
            .batch(128)
            .max_sessions(7)
            .build()
            .unwrap();
        assert_eq!(c.batch, 128);
        assert_eq!(c.subscriber_ring, 16 << 20);
        assert_eq!(c.idle, IdleStrategy::BusySpin);
        assert_eq!(c.max_sessions, 7);
        assert_eq!(c.origin("batch"), Some(Origin::Code));
        assert_eq!(c.origin("max_sessions"), Some(Origin::Code));
        assert_eq!(c.origin("subscriber_ring"), Some(Origin::File(f.clone())));
        assert_eq!(c.origin("nak_delay"), Some(Origin::Default));
        assert_eq!(c.origin("no_such_key"), None);
        // A setter that leaves the file's value as it was does not claim it.
        let c = Config::builder_from_file(&f).batch(64).build().unwrap();
        assert_eq!(c.origin("batch"), Some(Origin::File(f.clone())));
        std::fs::write(&f, "batch = 0\n").unwrap();
        assert!(
            Config::builder_from_file(&f).build().is_err(),
            "batch 0 is checked"
        );
        std::fs::write(&f, "retransmit_window = \"lots\"\n").unwrap();
        let e = Config::builder_from_file(&f)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node.toml") && e.contains("retransmit_window"),
            "{e}"
        );
        let e = Config::builder_from_file(dir.join("missing.toml"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        // Without file or environment: the defaults, every origin the default.
        let c = Config::builder_ignoring_env().build().unwrap();
        assert!(c.settings().iter().all(|s| s.3 == Origin::Default));
    }
}
