//! A three-host lab in network namespaces, for fault-injection tests.
//!
//! ```text
//!   rc-<pid>-<name>-a          rc-<pid>-<name>-br           rc-<pid>-<name>-b / -c
//!   veth-a 10.77.k.1/24 ──── p-a ┐                 ┌ p-b ──── veth-b 10.77.k.2/24
//!                                └── br0 (bridge) ─┤
//!                                  nft loss rule   └ p-c ──── veth-c 10.77.k.3/24
//! ```
//!
//! Every interface, address, route and nftables rule lives in namespaces the lab creates
//! and deletes itself: the veth pairs are created directly inside the host namespaces
//! with their peers inside the bridge namespace, so the namespace the tests run in (and
//! the machine's own interfaces) are never touched. The bridge has multicast snooping
//! off, so multicast floods to every port; loss is injected on the bridge's forward hook,
//! once per output port, so every receiver sees its own independent loss.
//!
//! Names carry the test process id (and the lab's name), so parallel and aborted runs
//! do not collide; dropping the [`Lab`] deletes its namespaces (and with them the veths
//! and the bridge), also when a test panics, and [`Lab::new`] deletes leftovers of
//! processes that no longer exist.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::{ringcast_bin, Proc};

/// Host `a` (index 0), conventionally the publisher.
pub const A: usize = 0;
/// Host `b` (index 1).
pub const B: usize = 1;
/// Host `c` (index 2).
pub const C: usize = 2;

const HOSTS: [&str; 3] = ["a", "b", "c"];
const PREFIX: &str = "rc-";
const BRIDGE: &str = "br0";
const LOSS_TABLE: &str = "ringcast_loss";

/// Each lab in this process gets its own subnet 10.77.<k>.0/24 (only for legibility:
/// labs are isolated from each other anyway).
static NEXT_SUBNET: AtomicU8 = AtomicU8::new(1);

/// Three host namespaces joined through a bridge in a fourth namespace.
pub struct Lab {
    prefix: String,
    subnet: u8,
    /// Namespaces created so far (deleted on drop, in reverse order).
    created: Vec<String>,
    /// `RINGCAST_STATS_DIR` of every command run in the lab.
    stats_dir: std::path::PathBuf,
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` can be run (`program args` exits at all).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether `nft` is installed.
pub fn has_nft() -> bool {
    runs("nft", &["--version"])
}

fn output(program: &str, args: &[&str]) -> std::io::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// Runs `ip args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let o = output("ip", args).expect("run ip");
    assert!(
        o.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr).trim()
    );
}

/// Names of the network namespaces `ip netns list` shows.
fn netns_list() -> Vec<String> {
    output("ip", &["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes `rc-<pid>-…` namespaces whose process no longer exists (best effort).
fn delete_leftovers() {
    let me = std::process::id();
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns: deleting leftover namespace {ns}");
            let _ = output("ip", &["netns", "del", &ns]);
        }
    }
}

impl Lab {
    /// Builds the lab, or returns `None` (after printing why) when this process is not
    /// root, `ip` is missing, or namespaces cannot be created here.
    pub fn new(name: &str) -> Option<Lab> {
        if !is_root() {
            eprintln!("skipping: needs root and ip/nft (not running as root)");
            return None;
        }
        if !runs("ip", &["-V"]) {
            eprintln!("skipping: needs root and ip/nft (`ip` not found: install iproute2)");
            return None;
        }
        delete_leftovers();
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let subnet = NEXT_SUBNET.fetch_add(1, Ordering::Relaxed);
        let stats_dir =
            std::env::temp_dir().join(format!("ringcast-lab-{}-{clean}", std::process::id()));
        let _ = std::fs::create_dir_all(&stats_dir);
        let mut lab = Lab {
            prefix: format!("{PREFIX}{}-{clean}", std::process::id()),
            subnet,
            created: Vec::new(),
            stats_dir,
        };
        // The first namespace tells whether this environment allows namespaces at all.
        let br = lab.bridge_ns();
        let o = output("ip", &["netns", "add", &br]).expect("run ip");
        if !o.status.success() {
            eprintln!(
                "skipping: needs root and ip/nft (ip netns add failed: {})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        lab.created.push(br.clone());
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ip(&["-n", &br, "link", "set", BRIDGE, "up"]);
        for host in [A, B, C] {
            let ns = lab.ns(host);
            ip(&["netns", "add", &ns]);
            lab.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let veth = lab.iface(host);
            let port = format!("p-{}", HOSTS[host]);
            // Created inside the host namespace, peer straight into the bridge's.
            ip(&[
                "-n", &ns, "link", "add", &veth, "type", "veth", "peer", "name", &port, "netns",
                &br,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", BRIDGE]);
            ip(&["-n", &br, "link", "set", &port, "up"]);
            let addr = format!("{}/24", lab.addr(host));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &veth]);
            ip(&["-n", &ns, "link", "set", &veth, "up"]);
            // Multicast leaves through the veth (the only way out of this namespace).
            ip(&["-n", &ns, "route", "add", "239.0.0.0/8", "dev", &veth]);
        }
        lab.wait_up(Duration::from_secs(10));
        Some(lab)
    }

    /// Waits until every host's veth reports its carrier up.
    fn wait_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for host in [A, B, C] {
            loop {
                let o = output(
                    "ip",
                    &[
                        "-n",
                        &self.ns(host),
                        "-br",
                        "link",
                        "show",
                        &self.iface(host),
                    ],
                )
                .expect("run ip");
                let s = String::from_utf8_lossy(&o.stdout).to_string();
                if s.split_whitespace().nth(1) == Some("UP") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} not up after {timeout:?}: {s}",
                    self.iface(host)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The namespace of host `host` (`A`, `B` or `C`).
    pub fn ns(&self, host: usize) -> String {
        format!("{}-{}", self.prefix, HOSTS[host])
    }

    /// The namespace the bridge (and the loss rule) lives in.
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// The interface of `host` inside its namespace (`veth-a`, …).
    pub fn iface(&self, host: usize) -> String {
        format!("veth-{}", HOSTS[host])
    }

    /// The address of `host` (10.77.<k>.1, .2, .3).
    pub fn addr(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, host as u8 + 1)
    }

    /// Runs `nft` in the bridge namespace with `script` on stdin.
    fn nft(&self, script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.bridge_ns(), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    /// Drops `percent` % of the IPv4 multicast (239.0.0.0/8) the bridge forwards, drawn
    /// independently for every output port: each receiver sees its own ~`percent` % loss
    /// of data, status, NAKs and retransmissions alike. Replaces any earlier loss rule.
    /// Returns `None` (after printing why) when `nft` is not installed; panics when nft
    /// fails otherwise.
    pub fn loss(&self, percent: u32) -> Option<()> {
        self.set_loss(percent, "")
    }

    /// Cuts `host` off: of the multicast the bridge forwards to it, the first `skip`
    /// bytes pass, the next `bytes` are all dropped (data, heartbeats and
    /// retransmissions alike; what `host` sends still goes out), then it flows again.
    pub fn cut_off(&self, host: usize, skip: u64, bytes: u64) -> Option<()> {
        self.set_loss(
            100,
            &format!(
                "oifname \"p-{}\" quota over {skip} bytes quota until {bytes} bytes ",
                HOSTS[host]
            ),
        )
    }

    /// As [`Lab::loss`], but only within a window of the multicast traffic: the first
    /// `skip` bytes the bridge forwards (summed over its ports) pass untouched, loss
    /// applies to the next `lossy` bytes, and everything after passes again. Unlike a
    /// timed window this does not depend on how fast the processes run.
    pub fn loss_window(&self, percent: u32, skip: u64, lossy: u64) -> Option<()> {
        self.set_loss(
            percent,
            &format!("quota over {skip} bytes quota until {lossy} bytes "),
        )
    }

    fn set_loss(&self, percent: u32, window: &str) -> Option<()> {
        if !has_nft() {
            eprintln!("skipping: needs root and ip/nft (`nft` not found: install nftables)");
            return None;
        }
        assert!(percent <= 100, "loss {percent} % is not a percentage");
        self.clear_loss();
        // (`mod 100 < 100` is out of nft's range: 100 % needs no draw)
        let draw = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let script = format!(
            "table bridge {LOSS_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip daddr 239.0.0.0/8 {window}{draw}counter drop\n  }}\n}}\n"
        );
        if let Err(e) = self.nft(&script) {
            panic!("nft (loss {percent} %) failed in {}: {e}", self.bridge_ns());
        }
        Some(())
    }

    /// A network that filters multicast (as most clouds and overlays do): the bridge
    /// drops every multicast datagram it forwards, and `unicast_percent` % of the
    /// unicast UDP, drawn per packet and output port. Replaces any earlier rule.
    /// Returns `None` (after printing why) when `nft` is not installed.
    pub fn block_multicast(&self, unicast_percent: u32) -> Option<()> {
        if !has_nft() {
            eprintln!("skipping: needs root and ip/nft (`nft` not found: install nftables)");
            return None;
        }
        assert!(unicast_percent < 100, "{unicast_percent} % of unicast");
        self.clear_loss();
        // Fixed rule order, which `dropped_by_rule` reports: [0] UDP to a multicast
        // address (ringcast's data and discovery), [1] the share of unicast UDP lost
        // (never matches at 0 %), [2] the rest of multicast (the kernel's IGMP
        // reports: a previous round's listeners leaving retransmit theirs for up to
        // a second, so they must not count as data sent by multicast).
        let script = format!(
            "table bridge {LOSS_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip daddr 224.0.0.0/4 meta l4proto udp counter drop\n    ip daddr != 224.0.0.0/4 meta l4proto udp numgen random mod 100 < {unicast_percent} counter drop\n    ip daddr 224.0.0.0/4 counter drop\n  }}\n}}\n"
        );
        if let Err(e) = self.nft(&script) {
            panic!("nft (no multicast) failed in {}: {e}", self.bridge_ns());
        }
        Some(())
    }

    /// Packets each rule of the loss table dropped so far, in rule order (empty
    /// without a table).
    pub fn dropped_by_rule(&self) -> Vec<u64> {
        let Ok(o) = output(
            "ip",
            &[
                "netns",
                "exec",
                &self.bridge_ns(),
                "nft",
                "list",
                "table",
                "bridge",
                LOSS_TABLE,
            ],
        ) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&o.stdout)
            .split("counter packets ")
            .skip(1)
            .filter_map(|t| t.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Removes the loss rule (if any).
    pub fn clear_loss(&self) {
        if has_nft() {
            let _ = self.nft(&format!("delete table bridge {LOSS_TABLE}\n"));
        }
    }

    /// How many packets the loss rule has dropped so far (`None` without a rule).
    pub fn dropped(&self) -> Option<u64> {
        self.dropped_by_rule().first().copied()
    }

    /// `cmd` (program, arguments, environment changes, directory) wrapped so it runs
    /// inside `host`'s namespace.
    pub fn command(&self, host: usize, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("RINGCAST_STATS_DIR", &self.stats_dir);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    }

    /// Starts `cmd` inside `host`'s namespace (`ip netns exec` execs it, so the child
    /// is the command itself: [`Proc`] kills it when dropped).
    pub fn run(&self, host: usize, cmd: Command) -> Proc {
        Proc::spawn(self.command(host, &cmd))
    }

    /// Where this lab's nodes write their counters (`ringcast stat --dir`): one
    /// directory per lab, so parallel tests do not see each other's nodes.
    pub fn stats_dir(&self) -> &std::path::Path {
        &self.stats_dir
    }

    /// A `ringcast` command with `args`.
    pub fn ringcast<S: AsRef<OsStr>>(args: &[S]) -> Command {
        let mut c = Command::new(ringcast_bin());
        c.args(args);
        c
    }

    /// Starts `ringcast listen --iface veth-<host> args…` on `host` and waits until it
    /// has joined the group.
    pub fn listen(&self, host: usize, args: &[&str]) -> Proc {
        let iface = self.iface(host);
        let mut full = vec!["listen", "--iface", &iface];
        full.extend_from_slice(args);
        let mut p = self.run(host, Lab::ringcast(&full));
        p.wait_for_stderr("listening on", Duration::from_secs(20));
        p
    }

    /// Starts `ringcast send --iface veth-<host> args…` on `host`.
    pub fn send(&self, host: usize, args: &[&str]) -> Proc {
        let iface = self.iface(host);
        let mut full = vec!["send", "--iface", &iface];
        full.extend_from_slice(args);
        self.run(host, Lab::ringcast(&full))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.stats_dir);
        for ns in self.created.iter().rev() {
            if let Ok(o) = output("ip", &["netns", "del", ns]) {
                if !o.status.success() {
                    eprintln!(
                        "netns: could not delete {ns}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                }
            }
        }
    }
}
