//! Node configuration: a builder with safe single-host defaults.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::error::Error;

/// Default multicast group and port.
pub const DEFAULT_GROUP: &str = "239.255.0.1:40456";
/// Default interface: loopback, so nothing leaves the host unless asked.
pub const DEFAULT_IFACE: &str = "lo";

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

/// How many threads run the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadingMode {
    /// A sender agent and a receiver agent, each on its own thread (pinned to its own
    /// core when cores are given).
    #[default]
    Dedicated,
    /// One thread runs both agents: for small hosts.
    Shared,
}

/// What happens when a subscription's ring is full because its application does not
/// poll fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Hold back: the receiver leaves datagrams in the socket and its status messages
    /// stop the publishers (flow control) until the subscriber catches up. Lossless;
    /// the slowest back-pressure subscriber on a node sets the pace for that node.
    #[default]
    BackPressure,
    /// Drop the message for this subscription only, count it, and hand the
    /// subscriber an explicit [`Loss`](crate::Loss) with reason `SlowConsumer`.
    /// Never slows the publisher or the other subscriptions.
    Drop,
}

/// Which I/O backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Probe the host: io_uring when it works, else the mmsg fallback.
    /// `RINGCAST_BACKEND=uring|mmsg` in the environment forces one.
    #[default]
    Auto,
    /// io_uring (fails at start if the host blocks it).
    Uring,
    /// `sendmmsg`/`recvmmsg` + poll.
    Mmsg,
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
    pub(crate) stats_dir: Option<std::path::PathBuf>,
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
            retransmit_window: 16 << 20,
            heartbeat_interval: Duration::from_millis(1),
            nak_delay: Duration::from_micros(200),
            nak_interval: Duration::from_millis(2),
            nak_retries: 20,
            stats_dir: Some(crate::stats_file::default_dir()),
        }
    }
}

impl Config {
    /// A builder starting from the defaults (group 239.255.0.1:40456 on `lo`, TTL 0).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// The multicast group.
    pub fn group(&self) -> SocketAddrV4 {
        self.group
    }

    /// The interface name or address.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Largest message accepted and reassembled.
    pub fn max_message(&self) -> usize {
        self.max_message
    }
}

/// Builds a [`Config`]; every setter is optional.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
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

    /// Dedicated (a thread per agent) or shared (one thread for both).
    pub fn threading(mut self, mode: ThreadingMode) -> Self {
        self.0.threading = mode;
        self
    }

    /// How agents wait for work.
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

    /// Bytes of recent datagrams a publisher keeps for retransmission. Default 16 MiB.
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

    /// Where this node's counters file goes, for `ringcast stat` (default
    /// `RINGCAST_STATS_DIR` or `/dev/shm`); `None`: no file.
    pub fn stats_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.0.stats_dir = dir;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Config, Error> {
        let c = self.0;
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
}
