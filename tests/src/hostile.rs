//! A hostile peer for the end-to-end tests: it captures, forges, mutates and replays
//! ringcast datagrams with plain UDP sockets, and sends them under a forged source
//! address through a raw socket.
//!
//! Everything here is bounded: each generator makes exactly the datagrams asked for,
//! each sender stops after the datagrams it was given (or at [`MAX_ATTACK`]), each
//! capture after a count or a time. Everything goes to loopback multicast only
//! (`IP_MULTICAST_IF` 127.0.0.1, TTL 0, raw datagrams with TTL 0 too): run the tests
//! that use it inside a fresh network namespace (`unshare -n`), where `lo` is the only
//! interface.
//!
//! The layout it forges (see `engine/src/wire` and `engine/src/seal.rs`): a 32-byte
//! little-endian header — magic `RCST`, version 2, kind (low nibble: 1 data, 2 status,
//! 3 heartbeat, 4 NAK; high nibble flags, 0x8 sealed), frame count u16, session u32,
//! network u32, seq u64, msg_seq u64 — then the body. A sealed datagram carries, after
//! the header, the key id u32, the sender id u64 and the sender's counter u64, then the
//! encrypted body and a 16-byte tag.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The only address the attacker sends from (or joins on): loopback.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// An address on `lo` that no node uses, for spoofed datagrams.
pub const SPOOFED_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// Size of the datagram header.
pub const HEADER_LEN: usize = 32;
/// Largest sequence number a valid header carries.
pub const MAX_SEQ: u64 = 1 << 62;
/// Header flag (high nibble of the kind byte): sealed with a group key.
pub const SEALED: u8 = 0x8;
/// Where a sealed datagram keeps its key id, sender id and counter.
pub const KEY_ID: std::ops::Range<usize> = 32..36;
/// See [`KEY_ID`].
pub const SENDER: std::ops::Range<usize> = 36..44;
/// See [`KEY_ID`].
pub const COUNTER: std::ops::Range<usize> = 44..52;
/// What sealing adds: the 20-byte extension and the 16-byte tag.
pub const SEAL_OVERHEAD: usize = 36;
/// Datagram kinds (low nibble of header byte 5).
pub const DATA: u8 = 1;
/// See [`DATA`].
pub const STATUS: u8 = 2;
/// See [`DATA`].
pub const HEARTBEAT: u8 = 3;
/// See [`DATA`].
pub const NAK: u8 = 4;
/// Longest any one attack call sends for, whatever it was given.
pub const MAX_ATTACK: Duration = Duration::from_secs(10);
/// The senders pause this long after every [`BURST`] datagrams, so that a flood
/// is not mostly dropped by the kernel at the nodes' socket buffers (tests account for
/// kernel drops with [`udp_drops`] anyway).
pub const PAUSE: Duration = Duration::from_millis(1);
/// See [`PAUSE`].
pub const BURST: usize = 32;

/// The group's control address (status and NAKs): the data port + 1.
pub fn control(group: SocketAddrV4) -> SocketAddrV4 {
    SocketAddrV4::new(*group.ip(), group.port() + 1)
}

/// A small deterministic generator (xorshift64*): attacks are reproducible by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Random bytes into `out`.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// A datagram header as the attacker reads it off the wire (or forges it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Kind (low nibble of byte 5).
    pub kind: u8,
    /// Flags (high nibble of byte 5).
    pub flags: u8,
    /// Frame count.
    pub count: u16,
    /// Publishing session.
    pub session: u32,
    /// Network id.
    pub network: u32,
    /// Datagram sequence number.
    pub seq: u64,
    /// Message sequence number.
    pub msg_seq: u64,
}

impl Head {
    /// A header of `kind` for `session` at `seq`/`msg_seq` (no frames, no flags,
    /// network 0).
    pub fn new(kind: u8, session: u32, seq: u64, msg_seq: u64) -> Head {
        Head {
            kind,
            flags: 0,
            count: 0,
            session,
            network: 0,
            seq,
            msg_seq,
        }
    }

    /// The header at the start of `b`, if it has the magic and version.
    pub fn parse(b: &[u8]) -> Option<Head> {
        let h = b.get(..HEADER_LEN)?;
        if &h[0..4] != b"RCST" || h[4] != 2 {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
        Some(Head {
            kind: h[5] & 0x0f,
            flags: h[5] >> 4,
            count: u16::from_le_bytes([h[6], h[7]]),
            session: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            network: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            seq: u64_at(16),
            msg_seq: u64_at(24),
        })
    }

    /// The encoded header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(b"RCST");
        h[4] = 2;
        h[5] = (self.kind & 0x0f) | (self.flags << 4);
        h[6..8].copy_from_slice(&self.count.to_le_bytes());
        h[8..12].copy_from_slice(&self.session.to_le_bytes());
        h[12..16].copy_from_slice(&self.network.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.msg_seq.to_le_bytes());
        h
    }

    /// Whether the sealed flag is set.
    pub fn sealed(&self) -> bool {
        self.flags & SEALED != 0
    }
}

/// Whether `b` is flagged sealed (and long enough to carry a seal).
pub fn is_sealed(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN + SEAL_OVERHEAD && b[5] >> 4 & SEALED != 0
}

/// A heartbeat: "my next datagram is `next_seq`, next message `next_msg`, and I
/// still hold everything from `oldest`".
pub fn heartbeat(session: u32, next_seq: u64, next_msg: u64, oldest: u64) -> Vec<u8> {
    let mut d = Head::new(HEARTBEAT, session, next_seq, next_msg)
        .encode()
        .to_vec();
    d.extend_from_slice(&oldest.to_le_bytes());
    d
}

/// A receiver's status: at `next_seq`, room for `window` more datagrams.
pub fn status(session: u32, receiver: u64, next_seq: u64, window: u32) -> Vec<u8> {
    let mut d = Head::new(STATUS, session, next_seq, 0).encode().to_vec();
    d.extend_from_slice(&receiver.to_le_bytes());
    d.extend_from_slice(&window.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    d
}

/// A NAK for datagrams `from..to` of `session`, from `receiver`.
pub fn nak(session: u32, from: u64, to: u64, receiver: u64) -> Vec<u8> {
    let mut d = Head::new(NAK, session, from, 0).encode().to_vec();
    d.extend_from_slice(&to.to_le_bytes());
    d.extend_from_slice(&receiver.to_le_bytes());
    d
}

/// A well-formed data datagram: one whole message `payload` on `topic`.
pub fn data(session: u32, seq: u64, msg_seq: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = Head::new(DATA, session, seq, msg_seq);
    h.count = 1;
    let mut d = h.encode().to_vec();
    d.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    d.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    d.push(0x3); // begin | end: a whole message
    d.push(0);
    d.extend_from_slice(topic.as_bytes());
    d.extend_from_slice(payload);
    d
}

/// A well-formed data datagram holding the first `piece` bytes of a message of
/// `total` bytes (so a receiver reserves room for all of it).
pub fn first_fragment(
    session: u32,
    seq: u64,
    msg_seq: u64,
    topic: &str,
    total: u32,
    piece: &[u8],
) -> Vec<u8> {
    let mut h = Head::new(DATA, session, seq, msg_seq);
    h.count = 1;
    let mut d = h.encode().to_vec();
    d.extend_from_slice(&(piece.len() as u32).to_le_bytes());
    d.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    d.push(0x1); // begin only
    d.push(0);
    d.extend_from_slice(&total.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    d.extend_from_slice(topic.as_bytes());
    d.extend_from_slice(piece);
    d
}

/// `n` datagrams of junk that does not even start with the magic (1..=1400 bytes):
/// any node must drop each of them as malformed (or, with a group key, unsealed).
pub fn junk(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = 1 + rng.below(1400) as usize;
            let mut d = rng.bytes(len);
            d[0] = b'X'; // never the magic
            if d.len() > 5 {
                d[5] &= 0x7f; // never flagged sealed
            }
            d
        })
        .collect()
}

/// `n` random datagrams that get past the magic and version: a valid-looking header
/// (random kind 0..=7, count, session, sequence numbers up to 2^62) and a random body
/// of 0..1400 bytes. Never flagged sealed, so a node with a group key refuses each as
/// unauthenticated.
pub fn random_datagrams(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut h = Head::new(
                rng.below(8) as u8,
                rng.next_u64() as u32,
                rng.below(MAX_SEQ + 1),
                rng.below(MAX_SEQ + 1),
            );
            h.count = rng.below(8) as u16;
            h.flags = rng.below(8) as u8; // never SEALED (0x8)
            let mut d = h.encode().to_vec();
            let body = rng.below(1400) as usize;
            d.extend(rng.bytes(body));
            d
        })
        .collect()
}

/// `n` corrupted copies of real datagrams from `captured` (round robin): half with
/// one to four bit flips, half truncated to 1..len-1 bytes. Flips never touch a sealed
/// datagram's counter (bytes 44..52), so that [`refusal`] can tell what a keyed node
/// makes of each: a copy that still carries a counter the node accepted is refused as
/// a replay (the opener checks the replay window before the tag), one whose key id
/// was hit for its unknown key, the rest (too short, unflagged, another sender) for
/// failing authentication.
pub fn truncated_and_mutated(rng: &mut Rng, captured: &[Captured], n: usize) -> Vec<Vec<u8>> {
    let usable: Vec<&Captured> = captured.iter().filter(|c| c.bytes.len() > 1).collect();
    if usable.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let mut d = usable[i % usable.len()].bytes.clone();
            if i % 2 == 0 {
                // any position but 44..52 (the counter)
                let spots = d.len().min(COUNTER.start) + d.len().saturating_sub(COUNTER.end);
                for _ in 0..1 + rng.below(4) {
                    let k = rng.below(spots as u64) as usize;
                    let at = if k < COUNTER.start {
                        k
                    } else {
                        COUNTER.end + (k - COUNTER.start)
                    };
                    d[at] ^= 1 << rng.below(8);
                }
                // a flip that changed nothing (two flips of one bit) is flipped again
                if d == usable[i % usable.len()].bytes {
                    d[0] ^= 0x20;
                }
            } else {
                let len = 1 + rng.below(d.len() as u64 - 1) as usize;
                d.truncate(len);
            }
            d
        })
        .collect()
}

/// Exact copies of `captured`.
pub fn replay(captured: &[Captured]) -> Vec<Vec<u8>> {
    captured.iter().map(|c| c.bytes.clone()).collect()
}

/// Copies of the sealed datagrams of `captured` under another key id (the real one
/// with its bits inverted): a node refuses each for its unknown key.
pub fn rekeyed(captured: &[Captured]) -> Vec<Vec<u8>> {
    captured
        .iter()
        .filter(|c| is_sealed(&c.bytes))
        .map(|c| {
            let mut d = c.bytes.clone();
            for b in &mut d[KEY_ID] {
                *b = !*b;
            }
            d
        })
        .collect()
}

/// Forgeries of the sealed datagrams of `captured` that reuse a counter their sender
/// already used (the lowest one captured from that sender) with a changed body: the
/// opener refuses each as a replay before it even checks the tag.
pub fn rewound(captured: &[Captured]) -> Vec<Vec<u8>> {
    let sealed: Vec<&Captured> = captured.iter().filter(|c| is_sealed(&c.bytes)).collect();
    let lowest = |sender: &[u8]| {
        sealed
            .iter()
            .filter(|c| &c.bytes[SENDER] == sender)
            .map(|c| u64_at(&c.bytes, COUNTER.start))
            .min()
            .unwrap_or(0)
    };
    sealed
        .iter()
        .map(|c| {
            let mut d = c.bytes.clone();
            let low = lowest(&d[SENDER]);
            d[COUNTER].copy_from_slice(&low.to_le_bytes());
            let last = d.len() - 1;
            d[last] ^= 0xff;
            d
        })
        .collect()
}

/// `n` forgeries shaped like the sealed datagrams of `captured` (round robin): the
/// real header and key id, then in turn the real sender id or a made-up one, a counter
/// that sender never used (2^48 and up), and random bytes for the body and tag. A
/// keyed node refuses each for failing authentication.
pub fn forged_sealed(rng: &mut Rng, captured: &[Captured], n: usize) -> Vec<Vec<u8>> {
    let sealed: Vec<&Captured> = captured.iter().filter(|c| is_sealed(&c.bytes)).collect();
    if sealed.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let mut d = sealed[i % sealed.len()].bytes.clone();
            if i % 2 == 1 {
                rng.fill(&mut d[SENDER]);
            }
            let fresh = (1u64 << 48) + rng.below(1 << 40);
            d[COUNTER].copy_from_slice(&fresh.to_le_bytes());
            rng.fill(&mut d[COUNTER.end..]);
            d
        })
        .collect()
}

/// Why a node holding one group key refuses a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `auth_failed`: not sealed, too short, or its tag does not verify.
    AuthFailed,
    /// `replayed`: a counter its sender already used.
    Replayed,
    /// `unknown_key`: sealed under a key id the node does not hold.
    UnknownKey,
}

/// The (sender, counter) pairs of the sealed datagrams in `captured`.
pub fn counters_of(captured: &[Captured]) -> std::collections::HashSet<(u64, u64)> {
    captured
        .iter()
        .filter(|c| is_sealed(&c.bytes))
        .map(|c| {
            (
                u64_at(&c.bytes, SENDER.start),
                u64_at(&c.bytes, COUNTER.start),
            )
        })
        .collect()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// What a node holding only key `key_id` makes of the attack datagram `d`, when it has
/// accepted the sealed datagrams whose (sender, counter) are in `accepted`, and `d` is
/// not authentic — the order of the engine's opener (engine/src/seal.rs,
/// `Opener::open`): too short or unflagged, then the key id, then the replay window
/// (before the tag: a copy of an accepted datagram, however mutated, is a replay),
/// then the tag. (Counters of those senders the node accepted but `accepted` lacks are
/// never reused by the generators here: they reuse captured counters or pick fresh
/// ones far above.)
pub fn refusal(d: &[u8], key_id: u32, accepted: &std::collections::HashSet<(u64, u64)>) -> Refusal {
    if !is_sealed(d) {
        return Refusal::AuthFailed;
    }
    let id = u32::from_le_bytes([d[32], d[33], d[34], d[35]]);
    if id != key_id {
        return Refusal::UnknownKey;
    }
    if accepted.contains(&(u64_at(d, SENDER.start), u64_at(d, COUNTER.start))) {
        return Refusal::Replayed;
    }
    Refusal::AuthFailed
}

/// The key id of the first sealed datagram of `captured`.
pub fn key_id_of(captured: &[Captured]) -> Option<u32> {
    captured
        .iter()
        .find(|c| is_sealed(&c.bytes))
        .map(|c| u32::from_le_bytes([c.bytes[32], c.bytes[33], c.bytes[34], c.bytes[35]]))
}

/// `n` plain (unsealed), well-formed datagrams for made-up sessions, four kinds in
/// turn: a message at the session's start; a heartbeat claiming a huge position with
/// nothing retained (had it been believed: "everything before is lost"); a message
/// at a huge position; the first fragment of a `max_message`-byte message (a receiver
/// that believed it would reserve that much). Topics are `topic`.
pub fn forged_sessions(rng: &mut Rng, n: usize, topic: &str, max_message: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let session = rng.next_u64() as u32;
            match i % 4 {
                0 => data(session, 0, 0, topic, &rng.bytes(64)),
                1 => {
                    let at = MAX_SEQ - rng.below(1 << 20);
                    heartbeat(session, at, MAX_SEQ, at)
                }
                2 => {
                    let at = MAX_SEQ - rng.below(1 << 20);
                    data(session, at, MAX_SEQ - 1, topic, &rng.bytes(64))
                }
                _ => first_fragment(session, 0, 0, topic, max_message, &rng.bytes(1000)),
            }
        })
        .collect()
}

/// `n` heartbeats for a real `session` jumping far past `highest` (the highest
/// datagram sequence number seen of it): 2^20 ahead and more, up to 2^62, each
/// claiming nothing before it is retained any more (believed, it would declare the
/// whole stream in between lost).
pub fn heartbeats_ahead(session: u32, highest: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let at = if i % 2 == 0 {
                highest + (1 << 20) + i
            } else {
                MAX_SEQ - i
            };
            heartbeat(session, at, 1 << 61, at)
        })
        .collect()
}

/// `n` well-formed data datagrams for a real `session`, far past `highest` (2^20
/// ahead and more).
pub fn data_ahead(session: u32, highest: u64, n: usize, topic: &str) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let at = highest + (1 << 20) + i;
            data(session, at, 1 << 40, topic, b"forged far ahead")
        })
        .collect()
}

/// `n` NAKs naming the whole sequence space (`0..2^62`) of `session`, each from a
/// random receiver id.
pub fn nak_storm(rng: &mut Rng, session: u32, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| nak(session, 0, MAX_SEQ, rng.next_u64()))
        .collect()
}

/// `n` statuses from a fake receiver `receiver` of `session` that acknowledges nothing
/// and has no room (position 0, window 0).
pub fn fake_status(session: u32, receiver: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| status(session, receiver, 0, 0)).collect()
}

/// One datagram seen on a group port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Where it came from.
    pub source: SocketAddrV4,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Captured {
    /// Its header, when it has one.
    pub fn head(&self) -> Option<Head> {
        Head::parse(&self.bytes)
    }
}

/// A socket joined to a group port on `lo` that records what it hears, in a thread of
/// its own, until it has `max_count` datagrams, `max_time` passed, or it is finished.
pub struct Capture {
    seen: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing at `addr` (a group and port).
    pub fn start(addr: SocketAddrV4, max_count: usize, max_time: Duration) -> io::Result<Capture> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.bind(&SockAddr::from(addr))?;
        sock.join_multicast_v4(addr.ip(), &LOOPBACK)?;
        sock.set_multicast_all_v4(false)?;
        sock.set_read_timeout(Some(Duration::from_millis(10)))?;
        let sock: UdpSocket = sock.into();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + max_time;
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            while n < max_count && Instant::now() < end && !stop2.load(Ordering::Relaxed) {
                if let Ok((len, std::net::SocketAddr::V4(src))) = sock.recv_from(&mut buf) {
                    let c = Captured {
                        source: src,
                        bytes: buf[..len].to_vec(),
                    };
                    seen2.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                    n += 1;
                }
            }
        });
        Ok(Capture {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Datagrams captured so far.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `n` datagrams are captured (or the capture ended, or `timeout`),
    /// then stops and returns them.
    pub fn finish_after(mut self, n: usize, timeout: Duration) -> Vec<Captured> {
        let end = Instant::now() + timeout;
        while self.len() < n
            && Instant::now() < end
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
        {
            thread::sleep(Duration::from_millis(2));
        }
        self.stop_thread();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The attacker: a UDP socket on 127.0.0.1 sending to loopback multicast (TTL 0), and
/// a raw socket for datagrams under a forged source address.
pub struct Attacker {
    sock: UdpSocket,
    raw: Socket,
    ip_id: std::sync::atomic::AtomicU16,
}

impl Attacker {
    /// Opens the sockets. The raw one needs `CAP_NET_RAW` (root in the test's network
    /// namespace).
    pub fn new() -> io::Result<Attacker> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_multicast_if_v4(&LOOPBACK)?;
        s.set_multicast_ttl_v4(0)?;
        s.set_multicast_loop_v4(true)?;
        s.bind(&SockAddr::from(SocketAddrV4::new(LOOPBACK, 0)))?;
        // IPPROTO_RAW: we write the IP header ourselves (IP_HDRINCL).
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        raw.set_header_included_v4(true)?;
        raw.set_multicast_if_v4(&LOOPBACK)?;
        raw.set_multicast_ttl_v4(0)?;
        raw.set_multicast_loop_v4(true)?;
        Ok(Attacker {
            sock: s.into(),
            raw,
            ip_id: std::sync::atomic::AtomicU16::new(1),
        })
    }

    /// The address its plain datagrams come from.
    pub fn local(&self) -> SocketAddrV4 {
        match self.sock.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(LOOPBACK, 0),
        }
    }

    /// Sends each of `datagrams` to `to` from its own socket, in bursts of [`BURST`]
    /// with a [`PAUSE`] between them, stopping at [`MAX_ATTACK`]. Returns how many the
    /// kernel took.
    pub fn send_all(&self, to: SocketAddrV4, datagrams: &[Vec<u8>]) -> usize {
        self.paced(datagrams, |d| self.sock.send_to(d, to).is_ok())
    }

    /// [`send_all`](Self::send_all) under the forged source address `from` (see
    /// [`spoofed`](Self::spoofed)).
    pub fn spoof_all(&self, from: SocketAddrV4, to: SocketAddrV4, datagrams: &[Vec<u8>]) -> usize {
        self.paced(datagrams, |d| self.spoofed(from, to, d).is_ok())
    }

    fn paced(&self, datagrams: &[Vec<u8>], mut send: impl FnMut(&[u8]) -> bool) -> usize {
        let end = Instant::now() + MAX_ATTACK;
        let mut sent = 0;
        for (i, d) in datagrams.iter().enumerate() {
            if Instant::now() >= end {
                break;
            }
            if send(d) {
                sent += 1;
            }
            if i % BURST == BURST - 1 {
                thread::sleep(PAUSE);
            }
        }
        sent
    }

    /// Sends one UDP datagram carrying `payload` to `to` (a loopback multicast group)
    /// with the forged source address `from`, through the raw socket: the IP header
    /// (TTL 0) and UDP header (with its checksum) are written here. On `lo` the kernel
    /// loops a multicast datagram sent this way back to the group's listeners with the
    /// forged source as is (the `raw_socket_spoofing_reaches_multicast_listeners` test
    /// checks it), so to a node it comes from `from`.
    pub fn spoofed(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        let id = self.ip_id.fetch_add(1, Ordering::Relaxed);
        let packet = ip_udp_packet(from, to, id, payload);
        let n = self
            .raw
            .send_to(&packet, &SockAddr::from(SocketAddrV4::new(*to.ip(), 0)))?;
        if n != packet.len() {
            return Err(io::Error::other("short raw send"));
        }
        Ok(())
    }

    /// A fake receiver: sends `status` to `to` every `every` until `stop` is set or
    /// `duration` passed (at most [`MAX_ATTACK`]). Returns how many it sent.
    pub fn fake_receiver(
        &self,
        to: SocketAddrV4,
        status: &[u8],
        every: Duration,
        duration: Duration,
        stop: &AtomicBool,
    ) -> usize {
        let end = Instant::now() + duration.min(MAX_ATTACK);
        let mut sent = 0;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            if self.sock.send_to(status, to).is_ok() {
                sent += 1;
            }
            thread::sleep(every);
        }
        sent
    }
}

/// The one's-complement sum of `data` as 16-bit big-endian words.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An IPv4 packet (TTL 0) holding a UDP datagram from `from` to `to`.
pub fn ip_udp_packet(from: SocketAddrV4, to: SocketAddrV4, id: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.push(0x45); // IPv4, 5-word header
    p.push(0);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // no fragmentation
    p.push(0); // TTL 0: never beyond this host
    p.push(17); // UDP
    p.extend_from_slice(&0u16.to_be_bytes()); // checksum, below
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    let ip_sum = fold(sum16(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_at = p.len();
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(payload);
    // pseudo header: source, destination, zero, protocol, UDP length
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = fold(sum16(&p[udp_at..], sum16(&pseudo, 0)));
    let sum = if sum == 0 { 0xffff } else { sum };
    p[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// UDP datagrams the kernel dropped on receipt (a full socket buffer) at the sockets
/// of this network namespace bound to `port`, as they stand (the `drops` column of
/// `/proc/net/udp`; sockets since closed no longer show). A test's nodes bind the
/// group's data port (the subscriber's node) and control port (every node) afresh, so
/// this bounds how many datagrams sent to that port never reached a node.
pub fn udp_drops(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.split(':').nth(1)?;
            let p = u16::from_str_radix(local_port, 16).ok()?;
            (p == port).then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
