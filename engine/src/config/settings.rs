//! Every [`Config`] field as a named setting, read from the environment
//! (`RINGCAST_<KEY>`) and from a TOML file (`key = value`), with one table for both
//! that the README's configuration section is checked against.
//!
//! Precedence, lowest first: the defaults, the TOML file (`RINGCAST_CONFIG` names it,
//! or [`Config::builder_from_file`]), the environment, then the builder's setters
//! (the application's code wins). Each value remembers where it came from
//! ([`Config::origin`]; `ringcast config` prints them).

use std::fmt;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::{
    BackendChoice, Config, FlowControlStrategy, IdleStrategy, LocalTransport, SlowConsumerPolicy,
    Transport,
};
use crate::config::ThreadingMode;
use crate::error::Error;

/// The environment variable that names a TOML configuration file.
pub const CONFIG_ENV: &str = "RINGCAST_CONFIG";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A TOML configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// The application's code (a [`ConfigBuilder`](super::ConfigBuilder) setter).
    Code,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Code => f.write_str("code"),
        }
    }
}

/// One setting: its key (TOML; the environment variable is `RINGCAST_` and the key in
/// capitals), the syntax of its value, what it does, and how to set and show it.
pub(crate) struct Setting {
    pub key: &'static str,
    pub syntax: &'static str,
    pub doc: &'static str,
    /// The default as the README shows it, where showing the built-in value would
    /// mislead (it depends on the host).
    pub default_doc: Option<&'static str>,
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    pub get: fn(&Config) -> String,
}

impl Setting {
    /// Its environment variable.
    pub fn env(&self) -> String {
        format!("RINGCAST_{}", self.key.to_ascii_uppercase())
    }

    /// Its default, as documented.
    pub fn default_shown(&self) -> String {
        match self.default_doc {
            Some(d) => d.to_string(),
            None => (self.get)(&Config::default()),
        }
    }
}

/// A size in bytes: a number, optionally with `K`/`KiB`, `M`/`MiB` or `G`/`GiB`
/// (binary multiples) or `KB`/`MB`/`GB` (decimal).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(at);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 8MiB, 65536)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (K, KiB, M, MiB, G, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A duration: a number with `ns`, `us` (or `µs`), `ms` or `s` (`200us`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit (ns, us, ms, s)"))?;
    let (num, unit) = s.split_at(at);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 200us, 2ms, 1.5s)"))?;
    let secs = match unit.trim() {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        u => return Err(format!("unknown duration unit {u:?} (ns, us, ms, s)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true/false, 1/0, on/off)")),
    }
}

/// `none`/`off` (or empty) for an unset optional value.
fn is_none(s: &str) -> bool {
    matches!(s.trim(), "" | "none" | "off")
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not {what}"))
}

/// A duration as the settings write it (whole units where they fit).
pub(crate) fn show_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// A size as the settings write it (binary units where they fit).
pub(crate) fn show_size(b: usize) -> String {
    if b != 0 && b % (1 << 30) == 0 {
        format!("{}GiB", b >> 30)
    } else if b != 0 && b % (1 << 20) == 0 {
        format!("{}MiB", b >> 20)
    } else if b != 0 && b % (1 << 10) == 0 {
        format!("{}KiB", b >> 10)
    } else {
        b.to_string()
    }
}

fn opt<T>(v: Option<T>, show: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "none".to_string(), show)
}

macro_rules! setting {
    ($key:literal, $syntax:literal, $doc:literal, |$c:ident, $v:ident| $set:expr, |$g:ident| $get:expr) => {
        setting!($key, $syntax, $doc, None, |$c, $v| $set, |$g| $get)
    };
    ($key:literal, $syntax:literal, $doc:literal, $dd:expr, |$c:ident, $v:ident| $set:expr, |$g:ident| $get:expr) => {
        Setting {
            key: $key,
            syntax: $syntax,
            doc: $doc,
            default_doc: $dd,
            set: |$c: &mut Config, $v: &str| -> Result<(), String> {
                $set;
                Ok(())
            },
            get: |$g: &Config| -> String { $get },
        }
    };
}

/// Every setting, in the order of the README's table.
pub(crate) static SETTINGS: &[Setting] = &[
    setting!(
        "group",
        "ADDR:PORT",
        "Multicast group (control on PORT + 1)",
        |c, v| c.group = parse::<SocketAddrV4>(v, "ADDR:PORT")?,
        |c| c.group.to_string()
    ),
    setting!(
        "iface",
        "name or IPv4",
        "Interface to send and join on",
        |c, v| c.iface = v.trim().to_string(),
        |c| c.iface.clone()
    ),
    setting!(
        "ttl",
        "0..255 or none",
        "Multicast TTL (none: 0 on loopback, else 1)",
        |c, v| c.ttl = if is_none(v) {
            None
        } else {
            Some(parse(v, "a TTL")?)
        },
        |c| opt(c.ttl, |t| t.to_string())
    ),
    setting!(
        "max_payload",
        "size or none",
        "Largest datagram payload (none: interface MTU - 28)",
        |c, v| c.max_payload = if is_none(v) {
            None
        } else {
            Some(parse_size(v)?)
        },
        |c| opt(c.max_payload, show_size)
    ),
    setting!(
        "max_message",
        "size",
        "Largest message (fragmented over datagrams)",
        |c, v| c.max_message = parse_size(v)?,
        |c| show_size(c.max_message)
    ),
    setting!(
        "cores",
        "N,N,...",
        "Cores to pin the agents to (empty: none)",
        |c, v| c.cores = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| parse(p, "a core number"))
            .collect::<Result<_, _>>()?,
        |c| c
            .cores
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ),
    setting!(
        "threading",
        "auto, dedicated, shared, inline",
        "Which threads run the agents",
        |c, v| c.threading = v.parse()?,
        |c| c.threading.to_string()
    ),
    setting!(
        "idle",
        "park, yield, busy-spin",
        "How agents (inline: pollers) wait",
        |c, v| c.idle = v.parse()?,
        |c| c.idle.to_string()
    ),
    setting!(
        "max_park",
        "duration",
        "Longest sleep of the park backoff",
        |c, v| c.max_park = parse_duration(v)?,
        |c| show_duration(c.max_park)
    ),
    setting!(
        "backend",
        "auto, uring, mmsg",
        "I/O backend (auto: probed)",
        |c, v| c.backend = v.parse()?,
        |c| c.backend.to_string()
    ),
    setting!(
        "publisher_ring",
        "size",
        "Each publisher's ring",
        |c, v| c.publisher_ring = parse_size(v)?,
        |c| show_size(c.publisher_ring)
    ),
    setting!(
        "subscriber_ring",
        "size",
        "Each subscription's ring",
        |c, v| c.subscriber_ring = parse_size(v)?,
        |c| show_size(c.subscriber_ring)
    ),
    setting!(
        "rcvbuf",
        "size",
        "Socket receive buffer asked for",
        |c, v| c.rcvbuf = parse_size(v)?,
        |c| show_size(c.rcvbuf)
    ),
    setting!(
        "sndbuf",
        "size",
        "Socket send buffer asked for",
        |c, v| c.sndbuf = parse_size(v)?,
        |c| show_size(c.sndbuf)
    ),
    setting!(
        "batch",
        "1..256",
        "Datagrams per send/receive batch",
        |c, v| c.batch = parse(v, "a batch size")?,
        |c| c.batch.to_string()
    ),
    setting!(
        "multicast_loop",
        "bool",
        "This host's subscribers hear its publishers",
        |c, v| c.loopback = parse_bool(v)?,
        |c| c.loopback.to_string()
    ),
    setting!(
        "max_sessions",
        "count",
        "Publishing sessions tracked at once",
        |c, v| c.max_sessions = parse(v, "a count")?,
        |c| c.max_sessions.to_string()
    ),
    setting!(
        "slow_consumer",
        "drop, back-pressure, conflate, disconnect",
        "Default slow-consumer policy",
        |c, v| c.slow_consumer = v.parse()?,
        |c| c.slow_consumer.to_string()
    ),
    setting!(
        "reliable",
        "bool",
        "NAK repair (false: best effort)",
        |c, v| c.reliable = parse_bool(v)?,
        |c| c.reliable.to_string()
    ),
    setting!(
        "retransmit_window",
        "size",
        "Bytes a publisher keeps for repair",
        |c, v| c.retransmit_window = parse_size(v)?,
        |c| show_size(c.retransmit_window)
    ),
    setting!(
        "heartbeat_interval",
        "duration",
        "First heartbeat of an idle publisher",
        |c, v| c.heartbeat_interval = parse_duration(v)?,
        |c| show_duration(c.heartbeat_interval)
    ),
    setting!(
        "nak_delay",
        "duration",
        "Random delay before a gap's first NAK, at most",
        |c, v| c.nak_delay = parse_duration(v)?,
        |c| show_duration(c.nak_delay)
    ),
    setting!(
        "nak_interval",
        "duration",
        "Time before the second NAK (then doubling)",
        |c, v| c.nak_interval = parse_duration(v)?,
        |c| show_duration(c.nak_interval)
    ),
    setting!(
        "nak_retries",
        "count",
        "NAK rounds before a gap is declared lost",
        |c, v| c.nak_retries = parse::<u32>(v, "a count")?.max(1),
        |c| c.nak_retries.to_string()
    ),
    setting!(
        "publisher_timeout",
        "duration",
        "Silence after which a session is gone",
        |c, v| c.publisher_timeout = parse_duration(v)?.max(Duration::from_millis(10)),
        |c| show_duration(c.publisher_timeout)
    ),
    setting!(
        "faults",
        "spec or none",
        "Tests only: injected receive faults (loss=0.1,...)",
        |c, v| c.faults = if is_none(v) {
            None
        } else {
            Some(
                v.parse()
                    .map_err(|e: crate::io::fault::FaultSpecError| e.to_string())?,
            )
        },
        |c| opt(c.faults.as_ref(), |f| format!("{f:?}"))
    ),
    setting!(
        "stats_dir",
        "path or none",
        "Directory of the counters file (`ringcast stat`)",
        Some("/dev/shm"),
        |c, v| c.stats_dir = if is_none(v) {
            None
        } else {
            Some(PathBuf::from(v.trim()))
        },
        |c| opt(c.stats_dir.as_ref(), |p| p.display().to_string())
    ),
    setting!(
        "flow_control",
        "min, max, tagged:N",
        "Whose status paces the publishers",
        |c, v| c.flow_control = v.parse()?,
        |c| c.flow_control.to_string()
    ),
    setting!(
        "receiver_tag",
        "u32",
        "Tag in this node's status (for tagged:N)",
        |c, v| c.receiver_tag = parse(v, "a tag")?,
        |c| c.receiver_tag.to_string()
    ),
    setting!(
        "rate_limit",
        "bytes/s or none",
        "Cap on the bytes/s the publishers send",
        |c, v| c.rate_limit = if is_none(v) {
            None
        } else {
            Some(parse_size(v)? as u64)
        },
        |c| opt(c.rate_limit, |r| r.to_string())
    ),
    setting!(
        "repair_share",
        "percent",
        "Retransmitted bytes a publisher may send per 100 bytes of data",
        |c, v| c.repair_share = v
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage (0 or more)"))?,
        |c| format!("{}%", c.repair_share)
    ),
    setting!(
        "key_file",
        "path or none",
        "Group key file (`ringcast keygen`): seal and authenticate every datagram",
        |c, v| if is_none(v) {
            c.key_file = None;
            c.keys = None;
        } else {
            let path = PathBuf::from(v.trim());
            c.keys = Some(crate::seal::Keyring::load(&path).map_err(|e| e.to_string())?);
            c.key_file = Some(path);
        },
        |c| match (&c.key_file, &c.keys) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(_)) => "(set in code)".to_string(),
            (None, None) => "none".to_string(),
        }
    ),
    setting!(
        "gso",
        "bool",
        "UDP GSO on send where the kernel has it",
        |c, v| c.gso = parse_bool(v)?,
        |c| c.gso.to_string()
    ),
    setting!(
        "gro",
        "bool",
        "UDP GRO on receive where the kernel has it",
        |c, v| c.gro = parse_bool(v)?,
        |c| c.gro.to_string()
    ),
    setting!(
        "busy_poll",
        "duration or none",
        "SO_BUSY_POLL on the receive socket",
        |c, v| c.busy_poll = if is_none(v) {
            None
        } else {
            Some(parse_duration(v)?)
        },
        |c| opt(c.busy_poll, show_duration)
    ),
    setting!(
        "network",
        "name",
        "Network ID: other networks are ignored (empty: default)",
        |c, v| c.network = v.trim().to_string(),
        |c| c.network.clone()
    ),
    setting!(
        "node_id",
        "u64 or none",
        "Node id in discovery (none: random per start)",
        |c, v| c.node_id = if is_none(v) {
            None
        } else {
            Some(parse(v, "a node id")?)
        },
        |c| opt(c.node_id, |n| n.to_string())
    ),
    setting!(
        "node_name",
        "text or none",
        "Node name in discovery (none: host:pid)",
        |c, v| c.node_name = if is_none(v) {
            None
        } else {
            Some(v.trim().to_string())
        },
        |c| opt(c.node_name.as_ref(), |n| n.clone())
    ),
    setting!(
        "discovery",
        "ADDR:PORT or none",
        "Discovery group (none: no discovery)",
        |c, v| c.discovery = if is_none(v) {
            None
        } else {
            Some(parse(v, "ADDR:PORT")?)
        },
        |c| opt(c.discovery, |g| g.to_string())
    ),
    setting!(
        "discovery_interval",
        "duration",
        "Time between a node's announces",
        |c, v| c.discovery_interval = parse_duration(v)?.max(Duration::from_millis(10)),
        |c| show_duration(c.discovery_interval)
    ),
    setting!(
        "discovery_multiplier",
        "count",
        "Announces missed before a peer expires",
        |c, v| c.discovery_multiplier = parse::<u32>(v, "a count")?.max(1),
        |c| c.discovery_multiplier.to_string()
    ),
    setting!(
        "max_peers",
        "count",
        "Most peers in the directory",
        |c, v| c.max_peers = parse::<usize>(v, "a count")?.max(1),
        |c| c.max_peers.to_string()
    ),
    setting!(
        "transport",
        "auto, multicast, unicast",
        "How data reaches peers (auto: multicast, unicast when it hears none and has seeds)",
        |c, v| c.transport = v.parse()?,
        |c| c.transport.to_string()
    ),
    setting!(
        "seeds",
        "HOST[:PORT],… or none",
        "Rendezvous nodes for discovery without multicast (port: the discovery port)",
        |c, v| c.seeds = if is_none(v) {
            Vec::new()
        } else {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        },
        |c| if c.seeds.is_empty() {
            "none".to_string()
        } else {
            c.seeds.join(",")
        }
    ),
    setting!(
        "local_transport",
        "udp, ipc, auto",
        "How nodes on one host meet: network, shared memory, or both (auto)",
        |c, v| c.local_transport = v.parse()?,
        |c| c.local_transport.to_string()
    ),
    setting!(
        "ipc_dir",
        "path",
        "Directory of the IPC logs (shared by every process that meets there)",
        |c, v| c.ipc_dir = std::path::PathBuf::from(v.trim()),
        |c| c.ipc_dir.display().to_string()
    ),
    setting!(
        "ipc_log",
        "size (power of two)",
        "Each IPC publisher's log",
        |c, v| c.ipc_log = parse_size(v)?,
        |c| show_size(c.ipc_log)
    ),
];

/// The setting named `key` (`-` and `_` alike).
pub(crate) fn find(key: &str) -> Option<&'static Setting> {
    let key = key.replace('-', "_");
    SETTINGS.iter().find(|s| s.key == key)
}

/// What the file and environment layers left: the values, and where each that is not
/// a default came from.
pub(crate) struct Layered {
    pub config: Config,
    pub origins: Vec<(&'static str, Origin)>,
}

/// Applies the TOML file at `path` to `layered`.
pub(crate) fn apply_file(layered: &mut Layered, path: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    for (key, value) in &table {
        let s = find(key).ok_or_else(|| {
            Error::Config(format!(
                "{}: unknown setting {key:?} (known: {})",
                path.display(),
                SETTINGS
                    .iter()
                    .map(|s| s.key)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let text = toml_text(value).ok_or_else(|| {
            Error::Config(format!(
                "{}: {key}: a string, number, boolean or array of numbers is expected",
                path.display()
            ))
        })?;
        (s.set)(&mut layered.config, &text)
            .map_err(|why| Error::Config(format!("{}: {key} = {text:?}: {why}", path.display())))?;
        set_origin(
            &mut layered.origins,
            s.key,
            Origin::File(path.to_path_buf()),
        );
    }
    Ok(())
}

/// A TOML value as the text a setting parses.
fn toml_text(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a
            .iter()
            .map(|e| match e {
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    })
}

/// Applies every `RINGCAST_<KEY>` variable set in `lookup` to `layered`.
pub(crate) fn apply_env(
    layered: &mut Layered,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    for s in SETTINGS {
        let var = s.env();
        // An empty variable counts as unset (as `VAR= cmd` is often meant).
        if let Some(v) = lookup(&var).filter(|v| !v.trim().is_empty()) {
            (s.set)(&mut layered.config, &v)
                .map_err(|why| Error::Config(format!("{var}={v:?}: {why}")))?;
            set_origin(&mut layered.origins, s.key, Origin::Env(var));
        }
    }
    Ok(())
}

pub(crate) fn set_origin(origins: &mut Vec<(&'static str, Origin)>, key: &'static str, o: Origin) {
    match origins.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = o,
        None => origins.push((key, o)),
    }
}

/// `RINGCAST_*` variables in the environment that are no setting (a typo, say), other
/// than the project's own non-setting variables.
pub fn unknown_env_vars() -> Vec<String> {
    const OTHERS: &[&str] = &["RINGCAST_CONFIG", "RINGCAST_LOG"];
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("RINGCAST_"))
        .filter(|k| !OTHERS.contains(&k.as_str()) && !k.starts_with("RINGCAST_TEST"))
        .filter(|k| !SETTINGS.iter().any(|s| s.env() == *k))
        .filter(|k| !matches!(k.as_str(), "RINGCAST_NO_INSTALL" | "RINGCAST_BENCH_ROOT"))
        .collect()
}

/// The README's configuration table, generated from the settings table.
pub fn markdown_table() -> String {
    let mut t = String::from(
        "| TOML key | Environment | Value | Default | What |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        t.push_str(&format!(
            "| `{}` | `{}` | {} | `{}` | {} |\n",
            s.key,
            s.env(),
            s.syntax,
            s.default_shown(),
            s.doc
        ));
    }
    t
}

macro_rules! names {
    ($t:ty, $what:literal, $($v:path => $name:literal $(| $alias:literal)*),+ $(,)?) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($v => $name),+ })
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name $(| $alias)* => Ok($v),)+
                    _ => Err(format!(concat!("{:?} is not ", $what), s)),
                }
            }
        }
    };
}

names!(ThreadingMode, "a threading mode (auto, dedicated, shared, inline)",
    ThreadingMode::Auto => "auto",
    ThreadingMode::Dedicated => "dedicated",
    ThreadingMode::Shared => "shared",
    ThreadingMode::Inline => "inline");
names!(IdleStrategy, "an idle strategy (park, yield, busy-spin)",
    IdleStrategy::BusySpin => "busy-spin" | "busy_spin" | "spin",
    IdleStrategy::Yield => "yield",
    IdleStrategy::Park => "park");
names!(Transport, "a transport (auto, multicast, unicast)",
    Transport::Auto => "auto",
    Transport::Multicast => "multicast",
    Transport::Unicast => "unicast");
names!(LocalTransport, "a local transport (udp, ipc, auto)",
    LocalTransport::Udp => "udp",
    LocalTransport::Ipc => "ipc" | "shm",
    LocalTransport::Auto => "auto");
names!(BackendChoice, "a backend (auto, uring, mmsg)",
    BackendChoice::Auto => "auto",
    BackendChoice::Uring => "uring" | "io_uring",
    BackendChoice::Mmsg => "mmsg");
names!(SlowConsumerPolicy, "a slow-consumer policy (drop, back-pressure, conflate, disconnect)",
    SlowConsumerPolicy::BackPressure => "back-pressure" | "back_pressure" | "backpressure",
    SlowConsumerPolicy::Drop => "drop",
    SlowConsumerPolicy::Conflate => "conflate",
    SlowConsumerPolicy::Disconnect => "disconnect");

impl fmt::Display for FlowControlStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowControlStrategy::Min => f.write_str("min"),
            FlowControlStrategy::Max => f.write_str("max"),
            FlowControlStrategy::Tagged(t) => write!(f, "tagged:{t}"),
        }
    }
}

impl FromStr for FlowControlStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "min" => Ok(FlowControlStrategy::Min),
            "max" => Ok(FlowControlStrategy::Max),
            t => t
                .strip_prefix("tagged:")
                .and_then(|t| t.parse().ok())
                .filter(|&t| t != 0)
                .map(FlowControlStrategy::Tagged)
                .ok_or_else(|| format!("{s:?} is not min, max or tagged:N (N > 0)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layered() -> Layered {
        Layered {
            config: Config::default(),
            origins: Vec::new(),
        }
    }

    #[test]
    fn sizes_and_durations_parse_in_their_units() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert_eq!(parse_duration("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2ms"), Ok(Duration::from_millis(2)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    /// What a setting shows, it reads back to the same value: for every setting at its
    /// default and at a changed value.
    #[test]
    fn every_setting_reads_back_what_it_shows() {
        let changed = Config {
            ttl: Some(3),
            max_payload: Some(1472),
            cores: vec![0, 1],
            threading: ThreadingMode::Inline,
            idle: IdleStrategy::BusySpin,
            backend: BackendChoice::Mmsg,
            slow_consumer: SlowConsumerPolicy::BackPressure,
            flow_control: FlowControlStrategy::Tagged(7),
            rate_limit: Some(1_000_000),
            busy_poll: Some(Duration::from_micros(50)),
            stats_dir: None,
            nak_delay: Duration::from_nanos(1500),
            ..Config::default()
        };
        for base in [Config::default(), changed] {
            for s in SETTINGS {
                if s.key == "faults" {
                    continue; // shown as Debug (tests only), parsed from the spec
                }
                let shown = (s.get)(&base);
                let mut c = Config::default();
                (s.set)(&mut c, &shown).unwrap_or_else(|e| panic!("{}: {shown:?}: {e}", s.key));
                assert_eq!((s.get)(&c), shown, "{}", s.key);
            }
        }
    }

    #[test]
    fn the_environment_sets_fields_and_names_the_variable_in_errors() {
        let mut l = layered();
        let env = |k: &str| match k {
            "RINGCAST_GROUP" => Some("239.1.2.3:5000".to_string()),
            "RINGCAST_NAK_DELAY" => Some("50us".to_string()),
            "RINGCAST_SLOW_CONSUMER" => Some("back-pressure".to_string()),
            "RINGCAST_CORES" => Some("1, 0".to_string()),
            _ => None,
        };
        apply_env(&mut l, &env).unwrap();
        assert_eq!(l.config.group, "239.1.2.3:5000".parse().unwrap());
        assert_eq!(l.config.nak_delay, Duration::from_micros(50));
        assert_eq!(l.config.slow_consumer, SlowConsumerPolicy::BackPressure);
        assert_eq!(l.config.cores, vec![1, 0]);
        assert!(l
            .origins
            .contains(&("nak_delay", Origin::Env("RINGCAST_NAK_DELAY".into()))));
        let bad = |k: &str| (k == "RINGCAST_BATCH").then(|| "lots".to_string());
        let e = apply_env(&mut layered(), &bad).unwrap_err().to_string();
        assert!(e.contains("RINGCAST_BATCH") && e.contains("lots"), "{e}");
    }

    #[test]
    fn a_toml_file_sets_fields_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "group = \"239.9.9.9:6000\"\nbatch = 64\nreliable = false\ncores = [0, 1]\n\
             subscriber-ring = \"16MiB\"\nflow_control = \"tagged:3\"\n",
        )
        .unwrap();
        let mut l = layered();
        apply_file(&mut l, &good).unwrap();
        assert_eq!(l.config.group, "239.9.9.9:6000".parse().unwrap());
        assert_eq!(l.config.batch, 64);
        assert!(!l.config.reliable);
        assert_eq!(l.config.cores, vec![0, 1]);
        assert_eq!(l.config.subscriber_ring, 16 << 20);
        assert_eq!(l.config.flow_control, FlowControlStrategy::Tagged(3));
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "batchsize = 64\n").unwrap();
        let e = apply_file(&mut layered(), &bad).unwrap_err().to_string();
        assert!(e.contains("unknown setting \"batchsize\""), "{e}");
        std::fs::write(&bad, "batch = \"many\"\n").unwrap();
        let e = apply_file(&mut layered(), &bad).unwrap_err().to_string();
        assert!(e.contains("batch"), "{e}");
        std::fs::write(&bad, "batch = [\n").unwrap();
        assert!(apply_file(&mut layered(), &bad).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The README's table is this module's: regenerate it with
    /// `cargo run -p ringcast -- config --markdown` when a setting changes.
    #[test]
    fn the_readme_table_matches_the_settings() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let (start, end) = ("<!-- config-table:start -->\n", "<!-- config-table:end -->");
        let from = readme
            .find(start)
            .expect("README has the config table markers")
            + start.len();
        let to = readme[from..].find(end).expect("end marker") + from;
        let want = markdown_table();
        assert!(
            readme[from..to] == want,
            "README's configuration table is out of date; it should read:\n{want}"
        );
    }

    /// Every `Config` field is a setting: the destructuring below names every field
    /// (no `..`), so a new field does not compile until it is listed here with its
    /// setting's key.
    #[test]
    fn every_config_field_has_a_setting() {
        let Config {
            group: _,
            iface: _,
            ttl: _,
            max_payload: _,
            max_message: _,
            cores: _,
            threading: _,
            idle: _,
            max_park: _,
            backend: _,
            publisher_ring: _,
            subscriber_ring: _,
            rcvbuf: _,
            sndbuf: _,
            batch: _,
            loopback: _,
            max_sessions: _,
            slow_consumer: _,
            reliable: _,
            retransmit_window: _,
            heartbeat_interval: _,
            nak_delay: _,
            nak_interval: _,
            nak_retries: _,
            publisher_timeout: _,
            faults: _,
            stats_dir: _,
            flow_control: _,
            receiver_tag: _,
            rate_limit: _,
            repair_share: _,
            key_file: _,
            keys: _,
            gso: _,
            gro: _,
            busy_poll: _,
            network: _,
            node_id: _,
            node_name: _,
            discovery: _,
            discovery_interval: _,
            discovery_multiplier: _,
            max_peers: _,
            transport: _,
            seeds: _,
            local_transport: _,
            ipc_dir: _,
            ipc_log: _,
            origins: _,
        } = Config::default();
        let keys = [
            "group",
            "iface",
            "ttl",
            "max_payload",
            "max_message",
            "cores",
            "threading",
            "idle",
            "max_park",
            "backend",
            "publisher_ring",
            "subscriber_ring",
            "rcvbuf",
            "sndbuf",
            "batch",
            "multicast_loop",
            "max_sessions",
            "slow_consumer",
            "reliable",
            "retransmit_window",
            "heartbeat_interval",
            "nak_delay",
            "nak_interval",
            "nak_retries",
            "publisher_timeout",
            "faults",
            "stats_dir",
            "flow_control",
            "receiver_tag",
            "rate_limit",
            "repair_share",
            "key_file",
            "gso",
            "gro",
            "busy_poll",
            "network",
            "node_id",
            "node_name",
            "discovery",
            "discovery_interval",
            "discovery_multiplier",
            "max_peers",
            "transport",
            "seeds",
            "local_transport",
            "ipc_dir",
            "ipc_log",
        ];
        for k in keys {
            assert!(find(k).is_some(), "{k} has no setting");
        }
        assert_eq!(SETTINGS.len(), keys.len(), "a setting for no field");
    }
}
