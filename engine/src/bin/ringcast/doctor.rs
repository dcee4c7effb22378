//! `ringcast doctor`.

use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::{doctor, Config, Event, IdleStrategy, Node, ThreadingMode, DEFAULT_IFACE};
use serde_json::{json, Value};

use crate::Res;

pub const EXAMPLES: &str = "Examples:
  ringcast doctor                   this host, the loopback interface, a self-test
  ringcast doctor --iface eth1      another interface (no self-test off loopback)
  ringcast doctor --json | jq .warnings";

/// Below this, a burst overflows the receive socket buffer (ringcast asks for 8 MiB).
const SMALL_RMEM: u64 = 4 << 20;

#[derive(Args)]
pub struct DoctorArgs {
    /// Interface to check.
    #[arg(long, default_value = DEFAULT_IFACE)]
    iface: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// What `doctor` found: ordered (name, value) lines, warnings, and a verdict.
struct Report {
    lines: Vec<(&'static str, Value)>,
    warnings: Vec<String>,
    healthy: bool,
}

impl Report {
    fn line(&mut self, name: &'static str, v: impl Into<Value>) {
        self.lines.push((name, v.into()));
    }
}

pub fn run(a: DoctorArgs) -> Res {
    let r = examine(&a.iface);
    if a.json {
        let mut o = serde_json::Map::new();
        for (k, v) in &r.lines {
            o.insert((*k).to_owned(), v.clone());
        }
        o.insert("warnings".into(), json!(r.warnings));
        o.insert("healthy".into(), json!(r.healthy));
        println!("{}", Value::Object(o));
    } else {
        for (k, v) in &r.lines {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{:<18} {text}", format!("{k}:"));
        }
        for w in &r.warnings {
            println!("{:<18} {w}", "warning:");
        }
        println!(
            "{:<18} {}",
            "verdict:",
            if r.healthy {
                "this host can run ringcast"
            } else {
                "NOT READY"
            }
        );
    }
    Ok(if r.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn examine(iface: &str) -> Report {
    let mut r = Report {
        lines: Vec::new(),
        warnings: Vec::new(),
        healthy: true,
    };
    let probe = doctor::probe();
    r.line("kernel", probe.kernel.clone());
    r.line(
        "io_uring_disabled",
        probe
            .io_uring_disabled_sysctl
            .map_or("(sysctl absent)".to_string(), |v| v.to_string()),
    );
    r.line(
        "io_uring",
        match &probe.uring_error {
            None if probe.uring_ok => "works".to_string(),
            err => format!("unavailable ({})", err.as_deref().unwrap_or("unknown")),
        },
    );
    let ops: Vec<String> = probe
        .opcodes
        .iter()
        .map(|(name, ok)| format!("{name}{}", if *ok { "" } else { " (missing)" }))
        .collect();
    r.line("io_uring opcodes", ops.join(", "));
    r.line("buffer ring", if probe.buf_ring { "yes" } else { "no" });
    let (mode, why, _) = doctor::threading(ThreadingMode::Auto, IdleStrategy::Park);
    match probe.choose_for(mode == ThreadingMode::Inline) {
        Ok(b) => r.line("backend", format!("{} — {}", b.kind, b.reason)),
        Err(e) => {
            r.healthy = false;
            r.line("backend", format!("NONE — {e}"));
        }
    }
    r.line("threading", format!("{mode:?} — {why}"));
    let (_, _, spin) = doctor::threading(ThreadingMode::Dedicated, IdleStrategy::BusySpin);
    if let Some(w) = spin {
        r.warnings.push(format!("busy-spinning agents: {w}"));
    }
    for v in ringcast::settings::unknown_env_vars() {
        r.warnings.push(format!(
            "{v} is set but is no ringcast setting (a typo? `ringcast config` lists them)"
        ));
    }
    match Config::builder().build() {
        Err(e) => {
            r.healthy = false;
            r.warnings
                .push(format!("the configuration does not load: {e}"));
        }
        Ok(c) => {
            let network = match c.network() {
                "" => "the default network".to_string(),
                n => format!("network {n:?} (id {:#010x})", c.network_id()),
            };
            r.line(
                "discovery",
                match c.discovery() {
                    Some(g) => format!("announces on {g}, {network}"),
                    None => format!("off, {network}"),
                },
            );
        }
    }
    r.line("udp gso", probe.gso_summary());
    r.line("udp gro", probe.gro_summary());
    r.line("busy poll", probe.busy_poll_summary());
    let show = |v: Option<u64>| v.map_or("unknown".to_string(), |b| format!("{b} bytes"));
    r.line("net.core.rmem_max", show(probe.rmem_max));
    r.line("net.core.wmem_max", show(probe.wmem_max));
    if probe.rmem_max.is_some_and(|m| m < SMALL_RMEM) {
        r.warnings.push(format!(
            "net.core.rmem_max is {} bytes: a burst overflows the receive buffer and must be repaired (sysctl -w net.core.rmem_max=16777216; see tuning/)",
            probe.rmem_max.unwrap_or(0)
        ));
    }
    match doctor::resolve_interface(iface) {
        Ok(i) => {
            r.line(
                "interface",
                format!(
                    "{} {} mtu {} (datagram payload {}) {}{}{}",
                    i.name,
                    i.addr,
                    i.mtu,
                    i.max_udp_payload(),
                    if i.up { "up" } else { "DOWN" },
                    if i.loopback { " loopback" } else { "" },
                    if i.multicast { " multicast" } else { "" },
                ),
            );
            if !i.loopback {
                if let Some(w) = rp_filter_warning(&i.name) {
                    r.warnings.push(w);
                }
            }
            let ready = i.up && (i.multicast || i.loopback);
            r.line(
                "multicast ready",
                if ready {
                    "yes"
                } else {
                    "no (interface down or without MULTICAST)"
                },
            );
            r.healthy &= ready;
            if ready && i.loopback {
                let t = self_test(iface);
                r.line(
                    "self-test sockets",
                    format!("udp gso {}; udp gro {}", t.gso, t.gro),
                );
                r.line(
                    "loopback self-test",
                    t.failure
                        .clone()
                        .unwrap_or("ok: a message went round".into()),
                );
                if t.failure.is_none() && !t.control_heard {
                    r.warnings.push(
                        "no status message came back on the control port (group port + 1): a firewall dropping it stops NAK repair and flow control".into(),
                    );
                }
                r.healthy &= t.failure.is_none();
            }
        }
        Err(e) => {
            r.healthy = false;
            r.line("interface", format!("{iface} — {e}"));
        }
    }
    r
}

/// Strict reverse-path filtering drops multicast from sources the host would not
/// route back to through this interface.
fn rp_filter_warning(iface: &str) -> Option<String> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    // The kernel applies the larger of the interface's and `all`'s.
    let v = read(iface).max(read("all"))?;
    (v == 1).then(|| {
        format!(
            "rp_filter is strict (1) on {iface}: multicast from publishers the host would not route back to via {iface} is dropped (sysctl -w net.ipv4.conf.{iface}.rp_filter=2)"
        )
    })
}

/// What the loopback self-test saw.
struct SelfTest {
    failure: Option<String>,
    /// A receiver's status reached the publisher (the control port works).
    control_heard: bool,
    gso: String,
    gro: String,
}

/// Sends one message round the loopback interface (TTL 0).
fn self_test(iface: &str) -> SelfTest {
    let port = 40000 + (std::process::id() % 20000) as u16;
    let mut t = SelfTest {
        failure: None,
        control_heard: false,
        gso: "-".into(),
        gro: "-".into(),
    };
    let cfg = match Config::builder()
        .group(SocketAddrV4::new([239, 255, 77, 77].into(), port))
        .iface(iface)
        .ttl(0)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            t.failure = Some(format!("failed: {e}"));
            return t;
        }
    };
    let node = match Node::new(cfg) {
        Ok(n) => n,
        Err(e) => {
            t.failure = Some(format!("failed: {e}"));
            return t;
        }
    };
    let run = || -> Result<bool, Box<dyn std::error::Error>> {
        let mut sub = node.subscriber(&["/doctor"])?;
        let mut publ = node.publisher("/doctor")?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            publ.offer_blocking(b"ping", Duration::from_secs(1))?;
            let mut got = false;
            sub.poll_timeout(16, Duration::from_millis(100), |ev| {
                got |= matches!(ev, Event::Message(m) if m.payload() == b"ping");
            });
            if got {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let result = run();
    // Status follows delivery within a few ms.
    let deadline = Instant::now() + Duration::from_millis(500);
    while node.stats().status_received == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = node.stats();
    t.control_heard = s.status_received > 0;
    t.gso = s.offload.gso.to_string();
    t.gro = s.offload.gro.to_string();
    t.failure = match result {
        Ok(true) => None,
        Ok(false) => Some("FAILED: nothing came back within 2 s".into()),
        Err(e) => Some(format!("failed: {e}")),
    };
    t
}
