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
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Rate => "rate",
            Mode::CountSweep => "count-sweep",
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
    /// Offered rate (msg/s) in rate mode.
    pub rate: Option<u64>,
    pub endpoint: Endpoint,
    pub pub_core: Option<usize>,
    pub sub_core: Option<usize>,
    /// Where the subscriber writes its latency histogram (HdrHistogram V2).
    pub hdr_path: PathBuf,
    /// Gap between warm-up messages while waiting for the subscriber.
    pub warmup_interval_us: u64,
    /// After the publisher is done, the subscriber stops after this long without a delivery.
    pub quiet_ms: u64,
}
