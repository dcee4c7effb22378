//! `ringcast peers`: the nodes this one hears on the discovery group (a live
//! directory with `--watch`, as Zyre's zpinger and zyredir show it).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use ringcast::{LeaveReason, Node, Peer, PeerEvent};
use serde_json::{json, Value};

use crate::{builder, interrupted, on_interrupt, Net, Res};

pub const EXAMPLES: &str = "Examples:
  ringcast peers                          who is on the group (after listening 1.5 s)
  ringcast peers --json | jq -r '.peers[].name'
  ringcast peers --watch                  joins and leaves as they happen, until Ctrl-C
  ringcast peers --watch --json           one JSON document per line at each change
  ringcast peers --watch --dir /tmp/peers one JSON file per online peer (zyredir)
  ringcast peers --network prod           only the nodes of network `prod`";

#[derive(Args)]
pub struct PeersArgs {
    #[command(flatten)]
    net: Net,
    /// Multicast TTL for the announces (default: 0 on loopback, else 1).
    #[arg(long)]
    ttl: Option<u32>,
    /// How long to listen before printing the directory (without --watch).
    #[arg(long, default_value_t = 1.5)]
    wait: f64,
    /// Print each join and leave as it happens, until interrupted (or --timeout).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// JSON: one document (with --watch, one per line at each change).
    #[arg(long)]
    json: bool,
    /// Keep one JSON file per online peer in DIR (`<id>.json`; removed when the peer
    /// leaves, and all of them when this command ends).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn since_epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn peer_json(p: &Peer) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "address": p.address.to_string(),
        "group": p.group.to_string(),
        "version": p.version,
        "publishes": p.publishes,
        "subscribes": p.subscribes,
        "topics_truncated": p.truncated,
        "last_heard_ms_ago": p.last_heard.elapsed().as_millis() as u64,
    })
}

/// A peer-supplied string made safe for a terminal: control characters (escape
/// sequences a hostile announce could carry) shown as `\u{..}`.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn reason(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::Expired => "expired",
        LeaveReason::Restarted => "restarted",
        LeaveReason::Evicted => "evicted",
        _ => "other",
    }
}

/// The zyredir-style directory: one file per online peer.
struct Dir {
    path: PathBuf,
    written: HashMap<u64, PathBuf>,
}

impl Dir {
    fn new(path: &Path) -> std::io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        Ok(Dir {
            path: path.to_path_buf(),
            written: HashMap::new(),
        })
    }

    fn put(&mut self, p: &Peer) {
        let f = self.path.join(format!("{}.json", p.id));
        let tmp = self.path.join(format!(".{}.json.tmp", p.id));
        let body = peer_json(p).to_string() + "\n";
        // Written whole, then renamed: a reader never sees half a file.
        if std::fs::write(&tmp, body).is_ok() && std::fs::rename(&tmp, &f).is_ok() {
            self.written.insert(p.id, f);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(f) = self.written.remove(&id) {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        for (_, f) in self.written.drain() {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub fn run(a: PeersArgs) -> Res {
    let config = builder(&a.net, a.ttl).build()?;
    if config.discovery().is_none() {
        return Err(
            "discovery is off (discovery = none in the environment or the file): no peers to show"
                .into(),
        );
    }
    let node = Node::new(config)?;
    let mut events = node.peer_events();
    let mut dir = a.dir.as_deref().map(Dir::new).transpose()?;
    on_interrupt();
    if !a.watch {
        std::thread::sleep(Duration::from_secs_f64(a.wait.max(0.0)));
        let mut peers = node.peers();
        peers.sort_by(|x, y| x.name.cmp(&y.name).then(x.id.cmp(&y.id)));
        if let Some(d) = dir.as_mut() {
            for p in &peers {
                d.put(p);
            }
        }
        let mut out = std::io::stdout().lock();
        if a.json {
            let doc = json!({
                "node": {"id": node.id().to_string(), "name": node.name()},
                "peers": peers.iter().map(peer_json).collect::<Vec<_>>(),
            });
            let _ = writeln!(out, "{doc}");
        } else {
            for p in &peers {
                let _ = writeln!(
                    out,
                    "{:>20}  {:<24} {:<21} group {}  publishes {:?}  subscribes {:?}",
                    p.id,
                    clean(&p.name),
                    p.address,
                    p.group,
                    p.publishes,
                    p.subscribes
                );
            }
        }
        let _ = out.flush();
        if peers.is_empty() {
            eprintln!(
                "ringcast peers: heard nobody in {:.1} s (discovery group, interface and network as configured: see `ringcast config`; where multicast is blocked, give a seed with --seed HOST)",
                a.wait
            );
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let end = a
        .timeout
        .map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    eprintln!("watching peers as {} ({})", node.name(), node.id());
    let mut refresh = Instant::now();
    while !interrupted() && end.is_none_or(|e| Instant::now() < e) {
        let Some(ev) = events.recv(Duration::from_millis(100)) else {
            if let Some(e) = events.error() {
                return Err(e.into());
            }
            // Keep the files' contents (topics, last heard) fresh.
            if let Some(d) = dir
                .as_mut()
                .filter(|_| refresh.elapsed() >= Duration::from_secs(1))
            {
                for p in node.peers() {
                    d.put(&p);
                }
                refresh = Instant::now();
            }
            continue;
        };
        let count = node.peers().len();
        let line = match &ev {
            PeerEvent::Joined(p) => {
                if let Some(d) = dir.as_mut() {
                    d.put(p);
                }
                if a.json {
                    json!({"event": "joined", "at_ms": since_epoch_ms(), "peer": peer_json(p), "peers": count}).to_string()
                } else {
                    format!(
                        "+ {} {} at {} (group {}), {count} peers",
                        clean(&p.name),
                        p.id,
                        p.address,
                        p.group
                    )
                }
            }
            PeerEvent::Left {
                id,
                name,
                reason: r,
            } => {
                if let Some(d) = dir.as_mut() {
                    d.remove(*id);
                }
                if a.json {
                    json!({"event": "left", "at_ms": since_epoch_ms(), "reason": reason(*r), "peer": {"id": id.to_string(), "name": name}, "peers": count}).to_string()
                } else {
                    format!("- {} {id} ({}), {count} peers", clean(name), reason(*r))
                }
            }
            _ => continue,
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away
        }
    }
    Ok(ExitCode::SUCCESS)
}
