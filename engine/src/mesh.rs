//! Whisper and shout between nodes (Zyre's WHISPER and SHOUT): a message to one peer
//! by id, or to every member of a named group. [`Node::mesh`](crate::Node::mesh).
//!
//! Both ride the node's reliable multicast session on two reserved topics, so they
//! get its NAK repair and flow control; a whisper's datagrams reach every node with a
//! mesh on the group, and all but the addressee drop it on arrival. A unicast path for
//! whispers comes with the mesh's unicast mode. The sender's id travels in the message: in the open mode anyone on
//! the group can claim any id (group keys will authenticate it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::{Error, PublishError};
use crate::publisher::Publisher;
use crate::subscriber::{Event, Subscriber};

/// Topic whispers travel on.
pub const WHISPER_TOPIC: &str = "/.ringcast/whisper";
/// Topic shouts travel on.
pub const SHOUT_TOPIC: &str = "/.ringcast/shout";
/// Longest group name (bytes).
pub const MAX_GROUP: usize = 255;

/// A whisper or a shout received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A message to this node alone.
    Whisper {
        /// The sender's node id.
        from: u64,
        /// The sender's node name.
        name: String,
        /// What it said.
        payload: Vec<u8>,
    },
    /// A message to a group this node has joined.
    Shout {
        /// The sender's node id.
        from: u64,
        /// The sender's node name.
        name: String,
        /// The group.
        group: String,
        /// What it said.
        payload: Vec<u8>,
    },
}

/// A node's whisper/shout endpoint. Whispers to this node and shouts to the groups it
/// [`join`](Mesh::join)ed arrive through [`recv`](Mesh::recv).
pub struct Mesh {
    id: u64,
    name: String,
    whisper: Publisher,
    shout: Publisher,
    sub: Subscriber,
    groups: BTreeSet<String>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    pub(crate) fn new(
        id: u64,
        name: &str,
        whisper: Publisher,
        shout: Publisher,
        sub: Subscriber,
    ) -> Self {
        let mut end = name.len().min(crate::wire::MAX_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Mesh {
            id,
            name: name[..end].to_string(),
            whisper,
            shout,
            sub,
            groups: BTreeSet::new(),
            buf: Vec::new(),
        }
    }

    /// Joins `group`: its shouts arrive from now on.
    pub fn join(&mut self, group: &str) -> Result<(), Error> {
        if group.is_empty() || group.len() > MAX_GROUP {
            return Err(Error::Topic(format!(
                "a group name is 1..={MAX_GROUP} bytes"
            )));
        }
        self.groups.insert(group.to_string());
        Ok(())
    }

    /// Leaves `group`.
    pub fn leave(&mut self, group: &str) {
        self.groups.remove(group);
    }

    /// The groups joined.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(String::as_str)
    }

    /// Sends `payload` to the node `to` alone (reliable: repaired like any message).
    pub fn whisper(&mut self, to: u64, payload: &[u8]) -> Result<(), PublishError> {
        self.buf.clear();
        self.buf.extend_from_slice(&to.to_le_bytes());
        self.buf.extend_from_slice(&self.id.to_le_bytes());
        self.buf.push(self.name.len() as u8);
        self.buf.extend_from_slice(self.name.as_bytes());
        self.buf.extend_from_slice(payload);
        self.whisper
            .offer_blocking(&self.buf, Duration::from_secs(1))
    }

    /// Sends `payload` to the peer named `name` (its node name, as `ringcast peers`
    /// lists it); `PublishError::UnknownPeer` unless the directory holds exactly one
    /// peer of that name. Returns its id.
    pub fn whisper_named(&mut self, name: &str, payload: &[u8]) -> Result<u64, PublishError> {
        let peers = self.whisper.shared().peers();
        let mut named = peers.iter().filter(|p| p.name == name);
        let (Some(p), None) = (named.next(), named.next()) else {
            return Err(PublishError::UnknownPeer(name.to_string()));
        };
        let id = p.id;
        self.whisper(id, payload)?;
        Ok(id)
    }

    /// Sends `payload` to every member of `group` (joined or not, as Zyre allows).
    pub fn shout(&mut self, group: &str, payload: &[u8]) -> Result<(), PublishError> {
        if group.is_empty() || group.len() > MAX_GROUP {
            return Err(PublishError::TooLarge {
                len: group.len(),
                max: MAX_GROUP,
            });
        }
        self.buf.clear();
        self.buf.extend_from_slice(&self.id.to_le_bytes());
        self.buf.push(self.name.len() as u8);
        self.buf.extend_from_slice(self.name.as_bytes());
        self.buf.push(group.len() as u8);
        self.buf.extend_from_slice(group.as_bytes());
        self.buf.extend_from_slice(payload);
        self.shout.offer_blocking(&self.buf, Duration::from_secs(1))
    }

    /// The next whisper to this node or shout to a joined group, waiting up to
    /// `timeout` (parked as a subscriber's `poll_timeout` is). Messages for other
    /// nodes and groups are dropped here.
    pub fn recv(&mut self, timeout: Duration) -> Option<MeshEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let (me, groups) = (self.id, &self.groups);
            let mut got = None;
            let left = deadline.saturating_duration_since(Instant::now());
            self.sub.poll_timeout(1, left, |ev| {
                if let Event::Message(m) = ev {
                    got = parse(me, groups, m.topic(), m.payload());
                }
            });
            if got.is_some() {
                return got;
            }
            if Instant::now() >= deadline || self.sub.error().is_some() {
                return None;
            }
        }
    }

    /// Why the node stopped, if it did.
    pub fn error(&self) -> Option<Error> {
        self.sub.error()
    }
}

/// A whisper for `me` or a shout to one of `groups`, else `None` (also for a
/// malformed one).
fn parse(me: u64, groups: &BTreeSet<String>, topic: &str, p: &[u8]) -> Option<MeshEvent> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?))
    };
    // A length-prefixed string at `at`: it and the position after it.
    let text = |at: usize| -> Option<(&str, usize)> {
        let len = *p.get(at)? as usize;
        let s = std::str::from_utf8(p.get(at + 1..at + 1 + len)?).ok()?;
        Some((s, at + 1 + len))
    };
    match topic {
        WHISPER_TOPIC => {
            let (to, from) = (u64_at(0)?, u64_at(8)?);
            let (name, at) = text(16)?;
            (to == me).then(|| MeshEvent::Whisper {
                from,
                name: name.to_string(),
                payload: p[at..].to_vec(),
            })
        }
        SHOUT_TOPIC => {
            let from = u64_at(0)?;
            let (name, at) = text(8)?;
            let (group, at) = text(at)?;
            (groups.contains(group) && from != me).then(|| MeshEvent::Shout {
                from,
                name: name.to_string(),
                group: group.to_string(),
                payload: p[at..].to_vec(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whispers_and_shouts_are_filtered_by_addressee_and_group() {
        let groups: BTreeSet<String> = ["GLOBAL".to_string()].into();
        let mut w = 7u64.to_le_bytes().to_vec();
        w.extend_from_slice(&9u64.to_le_bytes());
        w.extend_from_slice(b"\x01n");
        w.extend_from_slice(b"hi");
        assert_eq!(
            parse(7, &groups, WHISPER_TOPIC, &w),
            Some(MeshEvent::Whisper {
                from: 9,
                name: "n".into(),
                payload: b"hi".to_vec()
            })
        );
        assert_eq!(parse(8, &groups, WHISPER_TOPIC, &w), None, "not for us");
        let mut s = 9u64.to_le_bytes().to_vec();
        s.extend_from_slice(b"\x01n");
        s.push(6);
        s.extend_from_slice(b"GLOBAL");
        s.extend_from_slice(b"yo");
        assert!(matches!(
            parse(7, &groups, SHOUT_TOPIC, &s),
            Some(MeshEvent::Shout { from: 9, ref group, ref name, .. }) if group == "GLOBAL" && name == "n"
        ));
        assert_eq!(parse(9, &groups, SHOUT_TOPIC, &s), None, "our own shout");
        assert_eq!(
            parse(7, &BTreeSet::new(), SHOUT_TOPIC, &s),
            None,
            "not joined"
        );
        // Malformed: short, a group length past the end, bad UTF-8.
        for bad in [&s[..5], &[9, 0, 0, 0, 0, 0, 0, 0, 200][..], &w[..10]] {
            assert_eq!(parse(7, &groups, SHOUT_TOPIC, bad), None);
            assert_eq!(parse(7, &groups, WHISPER_TOPIC, bad), None);
        }
    }
}
