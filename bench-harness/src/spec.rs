//! What one measured run is: the description the harness hands to both child
//! processes (as JSON on their command line).

use crate::systems::Variant;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

/// How the publisher paces the counted messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// As fast as the publisher can send; latency includes queueing.
    Full,
    /// Open loop at a fixed offered rate; stamps carry the intended send time.
    Rate,
    /// Full speed for a series of message counts (latency vs run length).
    CountSweep,
    /// Round trip: pings at a fixed rate, the subscriber echoes each one back on a
    /// second channel, the publisher records `pong arrival − ping stamp`.
    Rtt,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Rate => "rate",
            Mode::CountSweep => "count-sweep",
            Mode::Rtt => "rtt",
        }
    }
}

/// How a paced publisher waits for the intended send time of its next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    /// Spin on the clock (as trading applications do).
    Spin,
    /// Polite: `thread::sleep` for waits above [`SLEEP_ABOVE_NS`], else `yield_now`.
    Sleep,
}

/// A sleeping publisher sleeps only for waits longer than this; shorter ones yield.
pub const SLEEP_ABOVE_NS: u64 = 50_000;

impl Wait {
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Sleep => "sleep",
        }
    }
}

/// Every address a run may use; each system takes the ones its transport needs.
/// All of them are loopback (checked again in the child before use).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// Multicast group (239.255.0.0/16) for UDP-based systems.
    pub group: SocketAddrV4,
    /// Interface address for multicast: 127.0.0.1.
    pub iface: Ipv4Addr,
    /// TCP address for broker-less TCP transports (127.0.0.1:port).
    pub tcp: SocketAddrV4,
    /// Path of a Unix socket for ipc transports.
    pub ipc: PathBuf,
    /// The echo channel of a round-trip run (subscriber → publisher): its own
    /// group, TCP port and ipc path.
    pub back_group: SocketAddrV4,
    pub back_tcp: SocketAddrV4,
    pub back_ipc: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Unique name of the run inside the output directory (file names).
    pub id: String,
    pub rep: u32,
    pub variant: Variant,
    pub mode: Mode,
    /// Counted messages.
    pub messages: u64,
    /// Bytes per message, header included.
    pub size: usize,
    /// Offered rate (msg/s) in rate and rtt mode.
    pub rate: Option<u64>,
    /// Rate mode: how the publisher waits for each send time (`None` = spin).
    pub wait: Option<Wait>,
    pub endpoint: Endpoint,
    pub pub_core: Option<usize>,
    pub sub_core: Option<usize>,
    /// Where the subscriber writes its latency histogram (HdrHistogram V2).
    pub hdr_path: PathBuf,
    /// Gap between warm-up messages while waiting for the subscriber.
    pub warmup_interval_us: u64,
    /// After the publisher is done, the subscriber stops after this long without a delivery.
    pub quiet_ms: u64,
    /// This spec describes the echo channel of a round trip (see [`RunSpec::echo_spec`]).
    #[serde(default)]
    pub echo: bool,
}

impl RunSpec {
    /// The spec of the echo channel (subscriber process → publisher process) of a
    /// round-trip run: the same run with the back endpoint in place of the forward
    /// one, so any system opens it with its ordinary publisher/subscriber code.
    /// Systems that need to tell the two apart (one node per process, one media
    /// driver) look at `echo`.
    pub fn echo_spec(&self) -> RunSpec {
        let mut s = self.clone();
        let e = &mut s.endpoint;
        std::mem::swap(&mut e.group, &mut e.back_group);
        std::mem::swap(&mut e.tcp, &mut e.back_tcp);
        std::mem::swap(&mut e.ipc, &mut e.back_ipc);
        s.echo = true;
        s
    }
}
