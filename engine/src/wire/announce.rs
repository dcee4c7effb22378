//! A node's announcement on the discovery group (and its clean leave).
//!
//! ```text
//! Announce = header(kind 5, session 0, network, seq = the node's announce counter)
//!            | node u64 | flags u8 (1 = leave, 2 = topic lists truncated,
//!                                   4 = a unicast copy)
//!            | name_len u8 | version_len u8 | publishes u8 | subscribes u8
//!            | group ip [4] | group port u16 | reserved u8
//!            | name | version | (topic_len u16 | topic){publishes + subscribes}
//! ```
//!
//! An announcement fits one datagram of [`MAX_ANNOUNCE`] bytes (an Ethernet MTU): topic
//! lists that do not fit are cut, and the cut is flagged.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Header, Kind, WireError, HEADER_LEN};

/// Largest announcement (fits a 1500-byte Ethernet MTU with IP and UDP headers).
pub const MAX_ANNOUNCE: usize = 1400;
/// Fixed part after the header.
const FIXED: usize = 8 + 1 + 1 + 1 + 1 + 1 + 4 + 2 + 1;
const LEAVE: u8 = 1;
const TRUNCATED: u8 = 2;
const UNICAST: u8 = 4;
/// Longest node name (bytes; longer names are cut at a character boundary).
pub const MAX_NAME: usize = 64;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The node's id.
    pub node: u64,
    /// The node's announce counter (a restarted node starts again at 0).
    pub seq: u64,
    /// The node's network ID.
    pub network: u32,
    /// A clean leave: the node is going away.
    pub leave: bool,
    /// The node's name (default host:pid).
    pub name: String,
    /// The software version.
    pub version: String,
    /// The data group the node uses.
    pub group: SocketAddrV4,
    /// Topics it publishes.
    pub publishes: Vec<String>,
    /// Topic prefixes it subscribes to.
    pub subscribes: Vec<String>,
    /// The topic lists were cut to fit one datagram.
    pub truncated: bool,
    /// Sent by unicast (to a seed or a peer), not to the discovery group: what a node
    /// hears tells it whether multicast reaches it.
    pub unicast: bool,
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Announce {
    /// Encodes into `out` (cleared first); at most [`MAX_ANNOUNCE`] bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut head = [0u8; HEADER_LEN];
        Header {
            kind: Kind::Announce,
            count: 0,
            session: 0,
            network: self.network,
            seq: self.seq.min(super::MAX_SEQ),
            msg_seq: 0,
        }
        .encode(&mut head);
        out.extend_from_slice(&head);
        let name = cut(&self.name, MAX_NAME);
        let version = cut(&self.version, 32);
        let mut room = MAX_ANNOUNCE - HEADER_LEN - FIXED - name.len() - version.len();
        let mut fit = |list: &[String]| {
            list.iter()
                .take(255)
                .take_while(|t| {
                    let need = 2 + t.len().min(u16::MAX as usize);
                    let ok = need <= room;
                    if ok {
                        room -= need;
                    }
                    ok
                })
                .count()
        };
        let (np, ns) = (fit(&self.publishes), fit(&self.subscribes));
        let truncated = self.truncated || np < self.publishes.len() || ns < self.subscribes.len();
        out.extend_from_slice(&self.node.to_le_bytes());
        out.push(
            (u8::from(self.leave) * LEAVE)
                | (u8::from(truncated) * TRUNCATED)
                | (u8::from(self.unicast) * UNICAST),
        );
        out.push(name.len() as u8);
        out.push(version.len() as u8);
        out.push(np as u8);
        out.push(ns as u8);
        out.extend_from_slice(&self.group.ip().octets());
        out.extend_from_slice(&self.group.port().to_le_bytes());
        out.push(0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(version.as_bytes());
        for t in self.publishes[..np].iter().chain(&self.subscribes[..ns]) {
            out.extend_from_slice(&(t.len() as u16).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
    }

    /// Decodes and checks an announcement (every length is checked against the
    /// datagram; text must be UTF-8).
    pub fn decode(bytes: &[u8]) -> Result<Announce, WireError> {
        let h = Header::decode(bytes)?;
        if h.kind != Kind::Announce {
            return Err(WireError::BadKind(h.kind as u8));
        }
        if bytes.len() > MAX_ANNOUNCE {
            return Err(WireError::FramePastEnd { index: 0 });
        }
        let body = &bytes[HEADER_LEN..];
        let fixed = body.get(..FIXED).ok_or(WireError::Truncated(bytes.len()))?;
        let node = u64::from_le_bytes(fixed[0..8].try_into().map_err(|_| WireError::BadTopic)?);
        let (flags, name_len, version_len) = (fixed[8], fixed[9] as usize, fixed[10] as usize);
        let (np, ns) = (fixed[11] as usize, fixed[12] as usize);
        let group = SocketAddrV4::new(
            Ipv4Addr::new(fixed[13], fixed[14], fixed[15], fixed[16]),
            u16::from_le_bytes([fixed[17], fixed[18]]),
        );
        let mut pos = FIXED;
        let name = text(body, &mut pos, name_len, 0)?;
        let version = text(body, &mut pos, version_len, 0)?;
        let mut topics = Vec::with_capacity(np + ns);
        for i in 0..np + ns {
            let len = body
                .get(pos..pos + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or(WireError::FramePastEnd { index: i as u16 })?;
            pos += 2;
            topics.push(text(body, &mut pos, len, i as u16)?);
        }
        if pos != body.len() {
            return Err(WireError::CountMismatch {
                declared: (np + ns) as u16,
                found: (np + ns) as u16,
            });
        }
        let subscribes = topics.split_off(np);
        Ok(Announce {
            node,
            seq: h.seq,
            network: h.network,
            leave: flags & LEAVE != 0,
            name,
            version,
            group,
            publishes: topics,
            subscribes,
            truncated: flags & TRUNCATED != 0,
            unicast: flags & UNICAST != 0,
        })
    }
}

/// `len` bytes of UTF-8 at `*pos`, advancing it.
fn text(body: &[u8], pos: &mut usize, len: usize, index: u16) -> Result<String, WireError> {
    let b = body
        .get(*pos..*pos + len)
        .ok_or(WireError::FramePastEnd { index })?;
    *pos += len;
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| WireError::BadTopic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Announce {
        Announce {
            node: 0xfeed_f00d_dead_beef,
            seq: 17,
            network: 42,
            leave: false,
            name: "host-a:1234".into(),
            version: "0.1.0".into(),
            group: "239.255.0.1:40456".parse().unwrap(),
            publishes: vec!["/md/eurusd".into(), "/md/gbpusd".into()],
            subscribes: vec!["/orders/".into(), "".into()],
            truncated: false,
            unicast: false,
        }
    }

    #[test]
    fn round_trip_leave_and_rejections() {
        let mut b = Vec::new();
        sample().encode(&mut b);
        assert_eq!(Announce::decode(&b), Ok(sample()));
        let leave = Announce {
            leave: true,
            ..sample()
        };
        leave.encode(&mut b);
        assert!(Announce::decode(&b).unwrap().leave);
        let copy = Announce {
            unicast: true,
            ..sample()
        };
        copy.encode(&mut b);
        assert_eq!(Announce::decode(&b), Ok(copy));
        // Every cut of a valid announcement is rejected, never a panic.
        sample().encode(&mut b);
        for n in 0..b.len() {
            assert!(Announce::decode(&b[..n]).is_err(), "cut at {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Announce::decode(&long).is_err(), "trailing bytes");
        let mut bad = b.clone();
        bad[HEADER_LEN + FIXED] = 0xff; // name no longer UTF-8
        assert!(Announce::decode(&bad).is_err());
    }

    #[test]
    fn too_many_topics_are_cut_to_one_datagram_and_flagged() {
        let many = Announce {
            publishes: (0..300)
                .map(|i| format!("/topic/with/a/long/name/{i}"))
                .collect(),
            name: "n".repeat(200),
            ..sample()
        };
        let mut b = Vec::new();
        many.encode(&mut b);
        assert!(b.len() <= MAX_ANNOUNCE);
        let got = Announce::decode(&b).unwrap();
        assert!(got.truncated);
        assert_eq!(got.name.len(), MAX_NAME);
        assert!(got.publishes.len() < 300 && !got.publishes.is_empty());
        assert_eq!(got.publishes[..], many.publishes[..got.publishes.len()]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1500)) {
            let mut b = bytes;
            if b.len() >= HEADER_LEN {
                // Make most inputs reach the body decoder.
                b[..4].copy_from_slice(b"RCST");
                b[4] = super::super::header::VERSION;
                b[5] = Kind::Announce as u8;
                for x in &mut b[16..32] { *x = 0; }
            }
            let _ = Announce::decode(&b);
        }
    }
}
