//! Zyre's zpinger, on ringcast's mesh: whisper "hello" to every peer that enters,
//! shout "hello" to GLOBAL for every whisper received, and print what comes.
//!
//! ```text
//! RINGCAST_IFACE=eth1 RINGCAST_NODE_NAME=alpha cargo run --example zpinger -- 10
//! ```
//!
//! The argument is how many seconds to run (default: until killed). Everything else is
//! configured from the environment (`RINGCAST_*`, see `ringcast config`).

use std::time::{Duration, Instant};

use ringcast::{Config, MeshEvent, Node, PeerEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: Option<f64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let end = secs.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let node = Node::new(Config::builder().build()?)?;
    let mut mesh = node.mesh()?;
    mesh.join("GLOBAL")?;
    let mut events = node.peer_events();
    let me = node.name().to_string();
    println!("[{me}] started as {}", node.id());
    while end.is_none_or(|e| Instant::now() < e) {
        while let Some(ev) = events.try_recv() {
            match ev {
                PeerEvent::Joined(p) => {
                    println!("[{me}] {} entered", p.name);
                    mesh.whisper(p.id, b"hello")?;
                }
                PeerEvent::Left { name, .. } => println!("[{me}] {name} exited"),
                _ => {}
            }
        }
        match mesh.recv(Duration::from_millis(20)) {
            Some(MeshEvent::Whisper { name, payload, .. }) => {
                let text = String::from_utf8_lossy(&payload);
                println!("[{me}] whisper from {name}: {text}");
                mesh.shout("GLOBAL", b"hello")?;
            }
            Some(MeshEvent::Shout {
                name,
                group,
                payload,
                ..
            }) => {
                let text = String::from_utf8_lossy(&payload);
                println!("[{me}] shout from {name} in {group}: {text}");
            }
            _ => {}
        }
        if let Some(e) = mesh.error() {
            return Err(e.into());
        }
    }
    Ok(())
}
