//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`;
//! not a public API).
//!
//! Each target takes the fuzzer's bytes:
//! - [`decode`]: one datagram, run through every wire decoder; whatever decodes is
//!   encoded again and must give back the same bytes (up to the fields a decoder
//!   does not read, which are normalised first), or, for an announcement, decode to
//!   the same value.
//! - [`receiver`]: a script of operations (datagrams, raw or built from the input with
//!   a valid header, replays, clock steps, timeouts, NAK and status polls, NAKs heard
//!   from other receivers) driving one [`Receiver`].
//! - [`publisher`]: a script driving one [`Publisher`] (offers and claims, status and
//!   NAKs, raw control bytes, clock steps, timeouts, transmits), whose datagrams go
//!   through a lossy link to a [`Receiver`] whose status and NAKs can be sent back.
//!
//! Scripts are bounded ([`MAX_OPS`] operations, bounded payloads and clock steps), so
//! an input's run time and memory stay small; the fuzzer looks for panics, arithmetic
//! overflows (fuzz builds check them) and runaway growth in the real code. The only
//! assertions here check wire contracts: decode/encode round trips, and that every
//! datagram the publisher hands out decodes. A failing assertion is a bug in the
//! engine, not in the harness. The harness itself neither panics nor overflows on any
//! input (it reads past the end of the input as zeros).
//!
//! - [`files`]: the bytes as a recording on disk (segments with valid headers and
//!   what follows from the input, an index) opened and read every way, and as an
//!   IPC log header read by [`read_meta`](crate::ring::log::read_meta): files are
//!   input too (a recording handed over, a log another user scribbled).
//!
//! [`seeds`] builds the committed seed corpus (one valid input of each kind per
//! target), written by `fuzz/examples/seeds.rs`; [`run`] runs a target by name.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::proto::publisher::STARTUP_GRACE;
use crate::proto::{
    Blocked, ControlEvent, Delivery, Publisher, PublisherConfig, Receiver, ReceiverConfig,
    SessionKey, Transmit,
};
use crate::wire::{
    decode_peer_list, encode_frame_ext, encode_peer_list, frame_len_ext, header_flags, stamp_flags,
    stamp_network, Announce, Control, Fragment, Frames, Header, Heartbeat, Kind, Nak, Status,
    CACHE_FLAG, HEADER_LEN, HEARTBEAT_LEN, MAX_ANNOUNCE, MAX_NAME, MAX_SEQ, NAK_LEN, SNAPSHOT,
    SNAPSHOT_FIRST, STATUS_LEN,
};
use crate::FlowControlStrategy;

/// Operations per script at most (receiver and publisher targets).
pub const MAX_OPS: usize = 256;
/// The fuzz targets, by name (as [`run`] takes them).
pub const TARGETS: [&str; 5] = ["decode", "receiver", "publisher", "seal", "files"];

/// Runs the target called `target` (one of [`TARGETS`]) on `data`; returns false for
/// an unknown name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "decode" => decode(data),
        "receiver" => receiver(data),
        "publisher" => publisher(data),
        "seal" => seal(data),
        "files" => files(data),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------
// Reading the input.

/// The fuzzer's bytes, read front to back; past the end every read gives zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A sequence number: mostly small (where sessions start), sometimes any 16-bit
    /// value, near [`MAX_SEQ`] (overflow), or any 64-bit value (rejected by decoders
    /// above `MAX_SEQ`).
    fn seq(&mut self) -> u64 {
        let b = self.u8();
        let small = u64::from(b & 0x3f);
        match b >> 6 {
            0 => small,
            1 => u64::from(self.u16()),
            2 => MAX_SEQ - small,
            _ => self.u64(),
        }
    }
}

/// Written by scripts of the seed corpus: the mirror of [`Input`].
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A sequence number as [`Input::seq`] reads it (small or 16-bit ones).
    fn seq(&mut self, v: u64) -> &mut Self {
        match u16::try_from(v) {
            Ok(s) if s < 0x40 => self.u8(s as u8),
            Ok(s) => self.u8(0x40).u16(s),
            Err(_) => self.u8(0xc0).u64(v),
        }
    }
}

// ---------------------------------------------------------------------------------
// Building datagrams from fuzzer-chosen fields.

/// The data groups' sources a script can name.
const SOURCES: [SocketAddrV4; 2] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40456),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40456),
];
/// Session ids a script can name (few, so that datagrams meet the same session).
const SESSIONS: [u32; 3] = [1, 77, 0xdead_beef];
/// Topics a script can use; the last is as long as a node allows
/// ([`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN)).
const TOPICS: [&str; 5] = ["/a", "/md/eurusd", "", "/\u{e9}t\u{e9}", LONG_TOPIC];
const LONG_TOPIC: &str = concat!(
    "/long/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef012345678901"
);
/// The network id of scripts that use one (0 is the default network).
const NETWORK: u32 = 0x6e65_7431;
/// The publisher target's session.
const SESSION: u32 = 77;
/// The publisher target's companion receiver, in its status and NAKs.
const RECEIVER_ID: u64 = 0x5ec0_11d0;

/// One frame of a data datagram to build.
struct FrameSpec<'a> {
    topic: &'a str,
    payload: &'a [u8],
    fragment: Option<Fragment>,
    expires: Option<u64>,
    snapshot: u8,
}

/// The fields of a header to build (kind, count and flags are set by the builders).
#[derive(Clone, Copy)]
struct HeadSpec {
    session: u32,
    network: u32,
    seq: u64,
    msg_seq: u64,
    flags: u8,
}

fn encode_header(kind: Kind, count: u16, h: HeadSpec, out: &mut [u8]) {
    if let Some(head) = out
        .get_mut(..HEADER_LEN)
        .and_then(|s| <&mut [u8; HEADER_LEN]>::try_from(s).ok())
    {
        Header {
            kind,
            count,
            session: h.session,
            network: h.network,
            seq: h.seq,
            msg_seq: h.msg_seq,
        }
        .encode(head);
    }
    stamp_flags(out, h.flags);
}

/// A data datagram holding `frames` (those that do not encode are left out).
fn data_datagram(h: HeadSpec, frames: &[FrameSpec<'_>]) -> Vec<u8> {
    let len: usize = frames
        .iter()
        .map(|f| {
            frame_len_ext(
                f.topic.len(),
                f.payload.len(),
                f.fragment.is_some(),
                f.expires.is_some(),
            )
        })
        .sum();
    let mut out = vec![0u8; HEADER_LEN + len];
    let mut pos = HEADER_LEN;
    let mut count = 0u16;
    for f in frames {
        let Some(rest) = out.get_mut(pos..) else {
            break;
        };
        if let Some(n) = encode_frame_ext(rest, f.topic, f.payload, f.fragment, f.expires) {
            if let Some(ext) = out.get_mut(pos + 7) {
                *ext |= f.snapshot;
            }
            pos += n;
            count = count.saturating_add(1);
        }
    }
    out.truncate(pos);
    encode_header(Kind::Data, count, h, &mut out);
    out
}

fn heartbeat_datagram(hb: Heartbeat, network: u32, flags: u8) -> Vec<u8> {
    let mut b = [0u8; HEARTBEAT_LEN];
    hb.encode(&mut b);
    stamp_network(&mut b, network);
    stamp_flags(&mut b, flags);
    b.to_vec()
}

fn status_datagram(s: Status, network: u32) -> Vec<u8> {
    let mut b = [0u8; STATUS_LEN];
    s.encode(&mut b);
    stamp_network(&mut b, network);
    b.to_vec()
}

fn nak_datagram(n: Nak, network: u32) -> Vec<u8> {
    let mut b = [0u8; NAK_LEN];
    n.encode(&mut b);
    stamp_network(&mut b, network);
    b.to_vec()
}

/// A NAK range as a decoded NAK has it: `from < to <= MAX_SEQ`.
fn nak_range(from: u64, len: u64) -> (u64, u64) {
    let from = from.min(MAX_SEQ - 1);
    (from, from.saturating_add(len.max(1)).min(MAX_SEQ))
}

/// The snapshot bits of a frame from its frame byte: bit 3 a snapshot entry, bit 6
/// (with bit 3) the first of a burst (never `SNAPSHOT_FIRST` alone, which no sender
/// writes and the decoder rejects).
fn snapshot_bits(fb: u8) -> u8 {
    match (fb & 0x08 != 0, fb & 0x40 != 0) {
        (true, true) => SNAPSHOT | SNAPSHOT_FIRST,
        (true, false) => SNAPSHOT,
        _ => 0,
    }
}

/// A payload of `len` bytes, cheap to make.
fn payload(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// Takes what a receiver hands out; touches it so that nothing is optimised away.
#[derive(Default)]
struct Sink {
    events: u64,
    bytes: u64,
}

impl Sink {
    fn take(&mut self, d: Delivery<'_>) {
        self.events = self.events.wrapping_add(1);
        if let Delivery::Message { topic, payload, .. } = d {
            self.bytes = self.bytes.wrapping_add(payload.len() as u64);
            black_box((topic, payload));
        }
    }
}

// ---------------------------------------------------------------------------------
// decode

/// Runs every wire decoder on one datagram and checks the round trip of what decodes.
///
/// The first byte selects: with its high bit clear the rest is decoded as it is; with
/// it set, a rest of at least [`HEADER_LEN`] bytes gets a valid magic and version,
/// the kind `(first & 0x3f) % 6 + 1` (its flags kept) and sequence numbers within
/// [`MAX_SEQ`], so the fuzzer reaches the body decoders at once. Bit 6 picks the
/// largest message the frame decoder allows (4 MiB or 1 KiB).
///
/// # Panics
///
/// When a decoded datagram does not encode back to the same bytes: a wire bug.
pub fn decode(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if sel & 0x80 != 0 && bytes.len() >= HEADER_LEN {
        let kind = [
            Kind::Data,
            Kind::Status,
            Kind::Heartbeat,
            Kind::Nak,
            Kind::Announce,
            Kind::PeerList,
        ][usize::from(sel & 0x3f) % 6];
        let flags = header_flags(&bytes);
        let seq = u64_at(&bytes, 16) % (MAX_SEQ + 1);
        let msg_seq = u64_at(&bytes, 24) % (MAX_SEQ + 1);
        let h = HeadSpec {
            session: u32_at(&bytes, 8),
            network: u32_at(&bytes, 12),
            seq,
            msg_seq,
            flags,
        };
        let count = u16::from_le_bytes([bytes[6], bytes[7]]);
        encode_header(kind, count, h, &mut bytes);
    }
    let max_message = if sel & 0x40 != 0 { 1024 } else { 4 << 20 };
    check_datagram(&bytes, max_message);
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

/// `bytes` with the fields at `ranges` zeroed (those an encoder writes as 0 and a
/// decoder does not read).
fn zeroed(bytes: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    for r in ranges {
        if let Some(s) = v.get_mut(r.clone()) {
            s.fill(0);
        }
    }
    v
}

/// Every decoder on `bytes`; what decodes is encoded again and compared.
fn check_datagram(bytes: &[u8], max_message: usize) {
    let head = Header::decode(bytes);
    let flags = header_flags(bytes);
    if let Ok(h) = head {
        let mut enc = [0u8; HEADER_LEN];
        h.encode(&mut enc);
        stamp_flags(&mut enc, flags);
        assert_eq!(enc[..], bytes[..HEADER_LEN], "header round trip: {h:?}");
    }
    let kind = head.map(|h| h.kind).ok();
    let network = head.map_or(0, |h| h.network);

    if let Ok((h, frames)) = Frames::decode(bytes, max_message) {
        assert_eq!(Ok(h), head, "the frame decoder's header");
        assert_eq!(h.kind, Kind::Data, "frames decoded from a {:?}", h.kind);
        assert_eq!(frames.size_hint(), (h.count.into(), Some(h.count.into())));
        assert_eq!(frames.clone().count(), usize::from(h.count), "frame count");
        // Encode the frames again, exactly as decoded.
        let mut out = vec![0u8; bytes.len()];
        let mut pos = HEADER_LEN;
        for f in frames {
            let n = out
                .get_mut(pos..)
                .and_then(|rest| encode_frame_ext(rest, f.topic, f.payload, f.fragment, f.expires));
            let Some(n) = n else {
                panic!("decoded frame {f:?} at {pos} does not encode into the same room");
            };
            if let Some(ext) = out.get_mut(pos + 7) {
                *ext |= f.snapshot;
            }
            pos += n;
        }
        assert_eq!(pos, bytes.len(), "frames re-encoded to another length");
        let spec = HeadSpec {
            session: h.session,
            network: h.network,
            seq: h.seq,
            msg_seq: h.msg_seq,
            flags,
        };
        encode_header(Kind::Data, h.count, spec, &mut out);
        assert_eq!(out, bytes, "data datagram round trip");
    }

    let status = Status::decode(bytes);
    if let Ok(s) = status {
        let mut enc = status_datagram(s, network);
        stamp_flags(&mut enc, flags);
        // The snapshot flag travels as msg_seq == 1; any other value reads as 0.
        let mut want = bytes.to_vec();
        want[24..32].copy_from_slice(&u64::from(s.snapshot).to_le_bytes());
        assert_eq!(enc, want, "status round trip: {s:?}");
        assert_eq!(Status::decode(&enc), Ok(s), "status decodes again");
    }
    let nak = Nak::decode(bytes);
    if let Ok(n) = nak {
        let mut enc = nak_datagram(n, network);
        stamp_flags(&mut enc, flags);
        // A NAK's msg_seq is not read (0 when encoded).
        let mut want = bytes.to_vec();
        want[24..32].fill(0);
        assert_eq!(enc, want, "NAK round trip: {n:?}");
        assert!(n.from < n.to && n.to <= MAX_SEQ, "NAK range {n:?}");
    }
    match (kind, Control::decode(bytes)) {
        (Some(Kind::Status), c) => assert_eq!(c, status.map(Control::Status), "control"),
        (Some(Kind::Nak), c) => assert_eq!(c, nak.map(Control::Nak), "control"),
        (_, c) => assert!(c.is_err(), "control decoded from a {kind:?}: {c:?}"),
    }
    if let Ok(hb) = Heartbeat::decode(bytes) {
        let enc = heartbeat_datagram(hb, network, flags);
        assert_eq!(enc, bytes, "heartbeat round trip: {hb:?}");
        assert!(hb.oldest <= hb.next_seq, "heartbeat {hb:?}");
    }

    if let Ok(a) = Announce::decode(bytes) {
        let mut enc = Vec::new();
        a.encode(&mut enc);
        assert!(enc.len() <= MAX_ANNOUNCE, "announce of {} bytes", enc.len());
        // The encoder cuts long names and versions; everything else comes back.
        let want = Announce {
            name: crate::wire::cut(&a.name, MAX_NAME).to_string(),
            version: crate::wire::cut(&a.version, 32).to_string(),
            ..a.clone()
        };
        assert_eq!(
            Announce::decode(&enc),
            Ok(want.clone()),
            "announce round trip"
        );
        if want == a {
            // Byte for byte, but for what the decoder does not read: the header's
            // count, session and msg_seq, unknown flag bits, the reserved byte.
            stamp_flags(&mut enc, flags);
            let mut want = zeroed(bytes, &[6..12, 24..32, HEADER_LEN + 19..HEADER_LEN + 20]);
            if let Some(f) = want.get_mut(HEADER_LEN + 8) {
                *f &= 0x7;
            }
            assert_eq!(enc, want, "announce bytes round trip: {a:?}");
        }
    }

    if let Ok(peers) = decode_peer_list(bytes) {
        let mut enc = Vec::new();
        let n = encode_peer_list(network, &peers, &mut enc);
        assert_eq!(n, peers.len(), "peer list of {} cut", peers.len());
        stamp_flags(&mut enc, flags);
        // The decoder reads neither session nor sequence numbers.
        assert_eq!(enc, zeroed(bytes, &[8..12, 16..32]), "peer list round trip");
        assert_eq!(decode_peer_list(&enc), Ok(peers), "peer list decodes again");
    }
}

// ---------------------------------------------------------------------------------
// receiver

/// Receiver script operations (the op byte modulo their number).
mod rx_op {
    pub const RAW: u8 = 0;
    pub const DATA: u8 = 1;
    pub const HEARTBEAT: u8 = 2;
    pub const REPLAY: u8 = 3;
    pub const ADVANCE: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const POLL_NAK: u8 = 6;
    pub const POLL_STATUS: u8 = 7;
    pub const NAK_HEARD: u8 = 8;
    pub const BURST: u8 = 9;
    pub const COUNT: u8 = 10;
}

/// Datagrams kept for replays.
const HISTORY: usize = 16;

/// Keeps `d` among the last [`HISTORY`] datagrams.
fn remember(h: &mut Vec<(SocketAddrV4, Vec<u8>)>, d: (SocketAddrV4, Vec<u8>)) {
    if h.len() == HISTORY {
        h.remove(0);
    }
    h.push(d);
}

// Every field is set today; the struct update keeps the harness building when a
// field is added (it then keeps its default until the harness fuzzes it too).
#[allow(clippy::needless_update)]
fn receiver_config(input: &mut Input<'_>) -> ReceiverConfig {
    let flags = input.u8();
    let status_every = match input.u8() {
        0 => u32::MAX,
        n => u32::from(n),
    };
    ReceiverConfig {
        max_message: [64, 1500, 65536, 4 << 20][usize::from(flags & 3)],
        max_sessions: 1 + usize::from(input.u8() % 4),
        reliable: flags & 4 == 0,
        nak_delay: Duration::from_micros(u64::from(input.u8()) * 8),
        nak_interval: Duration::from_micros(u64::from(input.u16())),
        nak_max_interval: Duration::from_micros(u64::from(input.u16()) * 16),
        nak_retries: u32::from(input.u8() % 32),
        reorder_limit: 1 + usize::from(input.u8()),
        seed: u64::from(input.u16()),
        publisher_timeout: Duration::from_millis(1 + u64::from(input.u8()) * 16),
        status_every,
        snapshots: flags & 8 == 0,
        network: if flags & 16 != 0 { NETWORK } else { 0 },
        // (bits 5, 6: how far ahead a datagram may be; bit 7: small memory bounds)
        max_jump: [1 << 16, 64, 1, 0][usize::from((flags >> 5) & 3)],
        reorder_bytes: if flags & 0x80 != 0 { 4096 } else { 64 << 20 },
        reassembly_bytes: if flags & 0x80 != 0 { 2048 } else { 64 << 20 },
        // (limits added later keep their defaults)
        ..ReceiverConfig::default()
    }
}

/// A clock step of up to about 71 minutes: 16 bits of microseconds, shifted.
fn clock_step(input: &mut Input<'_>) -> Duration {
    let v = u64::from(input.u16());
    Duration::from_micros(v << (input.u8() % 17))
}

/// One data datagram built from the input: a valid header, 1 to 4 frames (one when a
/// fragment), of the script's sessions and topics.
fn data_from_input(input: &mut Input<'_>, network: u32) -> (SocketAddrV4, Vec<u8>) {
    let who = input.u8();
    let source = SOURCES[usize::from(who & 1)];
    let session = SESSIONS[usize::from((who >> 1) & 3) % SESSIONS.len()];
    let flags = if who & 0x10 != 0 { CACHE_FLAG } else { 0 };
    let net = if who & 0x20 != 0 {
        network ^ 1
    } else {
        network
    };
    let head = HeadSpec {
        session,
        network: net,
        seq: input.seq(),
        msg_seq: input.seq(),
        flags,
    };
    let n = 1 + usize::from(input.u8() % 4);
    let mut specs = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for _ in 0..n {
        let fb = input.u8();
        let len = if fb & 0x80 != 0 {
            usize::from(input.u16() % 4096)
        } else {
            usize::from(input.u8())
        };
        let fragment = if fb & 0x10 != 0 {
            let len = len.max(1) as u32;
            let offset = u32::from(input.u16());
            let mut extra = u32::from(input.u16());
            if offset == 0 && extra == 0 {
                extra = 1; // a whole message is not a fragment
            }
            Some(Fragment {
                total_len: offset.saturating_add(len).saturating_add(extra),
                offset,
            })
        } else {
            None
        };
        let len = if fragment.is_some() { len.max(1) } else { len };
        payloads.push((payload(len, fb), fb, fragment));
        if fragment.is_some() {
            break; // a fragment travels alone
        }
    }
    for (p, fb, fragment) in &payloads {
        specs.push(FrameSpec {
            topic: TOPICS[usize::from(fb & 0x7) % TOPICS.len()],
            payload: p,
            fragment: *fragment,
            expires: (fb & 0x20 != 0).then(|| input.u64()),
            snapshot: snapshot_bits(*fb),
        });
    }
    (source, data_datagram(head, &specs))
}

/// Drives one [`Receiver`] with a script read from `data`.
///
/// A few leading bytes choose the configuration (reliable or not, snapshots, small
/// session, reorder, reassembly and jump limits so that eviction, give-ups and
/// rejections happen, NAK timing, the network id). Then up to [`MAX_OPS`] operations, each an op byte and its fields:
/// a raw datagram; a data datagram or heartbeat built with a valid header; a replay
/// of one of the last datagrams (optionally with a byte flipped); a clock step; a
/// jump to [`Receiver::poll_timeout`]; [`Receiver::poll_nak`] (optionally echoing the
/// NAKs back as heard from another receiver); [`Receiver::poll_status`]; a NAK heard
/// from another receiver; a burst of consecutive datagrams with some lost. Every
/// clock change runs [`Receiver::handle_timeout`]; at the end the timers run out.
pub fn receiver(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = receiver_config(&mut input);
    let network = cfg.network;
    let mut rx = Receiver::new(cfg);
    let mut now = Instant::now();
    let mut sink = Sink::default();
    let mut history: Vec<(SocketAddrV4, Vec<u8>)> = Vec::new();

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % rx_op::COUNT {
            rx_op::RAW => {
                let source = SOURCES[usize::from(input.u8() & 1)];
                let n = usize::from(input.u16());
                let bytes = input.take(n);
                let _ = rx.handle_datagram(now, source, bytes, &mut |d| sink.take(d));
            }
            rx_op::DATA => {
                let (source, d) = data_from_input(&mut input, network);
                let _ = rx.handle_datagram(now, source, &d, &mut |e| sink.take(e));
                remember(&mut history, (source, d));
            }
            rx_op::HEARTBEAT => {
                let who = input.u8();
                let source = SOURCES[usize::from(who & 1)];
                let next_seq = input.seq();
                let hb = Heartbeat {
                    session: SESSIONS[usize::from((who >> 1) & 3) % SESSIONS.len()],
                    next_seq,
                    next_msg_seq: input.seq(),
                    oldest: next_seq.saturating_sub(u64::from(input.u16())),
                };
                let flags = if who & 0x10 != 0 { CACHE_FLAG } else { 0 };
                let d = heartbeat_datagram(hb, network, flags);
                let _ = rx.handle_datagram(now, source, &d, &mut |e| sink.take(e));
                remember(&mut history, (source, d));
            }
            rx_op::REPLAY => {
                let pick = input.u8();
                if history.is_empty() {
                    continue;
                }
                let (source, mut d) = history[usize::from(pick) % history.len()].clone();
                if pick & 0x80 != 0 && !d.is_empty() {
                    let at = usize::from(input.u16()) % d.len();
                    d[at] ^= input.u8().max(1);
                }
                let _ = rx.handle_datagram(now, source, &d, &mut |e| sink.take(e));
            }
            rx_op::ADVANCE => {
                now += clock_step(&mut input);
                rx.handle_timeout(now, &mut |d| sink.take(d));
            }
            rx_op::TIMEOUT => {
                if let Some(t) = rx.poll_timeout() {
                    now = now.max(t);
                }
                rx.handle_timeout(now, &mut |d| sink.take(d));
            }
            rx_op::POLL_NAK => {
                let echo = input.u8() & 1 != 0;
                let mut naks: Vec<(SessionKey, u64, u64)> = Vec::new();
                rx.poll_nak(&mut |key, from, to| naks.push((key, from, to)));
                if echo {
                    for (key, from, to) in naks {
                        // as if another receiver had sent it (decoded: from < to)
                        if from < to && to <= MAX_SEQ {
                            rx.on_nak_heard(now, key.session, from, to);
                        }
                    }
                }
            }
            rx_op::POLL_STATUS => {
                let window = match input.u8() {
                    0 => input.u32(),
                    n => u32::from(n),
                };
                rx.poll_status(now, window, &mut |key, seq, window, snapshot| {
                    black_box((key, seq, window, snapshot));
                });
            }
            rx_op::NAK_HEARD => {
                let session = SESSIONS[usize::from(input.u8()) % SESSIONS.len()];
                let from = input.seq();
                let len = u64::from(input.u16());
                let (from, to) = nak_range(from, len);
                rx.on_nak_heard(now, session, from, to);
            }
            rx_op::BURST => {
                // Consecutive datagrams of one session, those whose bit in the
                // loss mask is set are lost.
                let who = input.u8();
                let source = SOURCES[usize::from(who & 1)];
                let session = SESSIONS[usize::from((who >> 1) & 3) % SESSIONS.len()];
                let seq = input.seq();
                let msg = input.seq();
                let n = input.u8() % 32;
                let lost = input.u32();
                let gap = input.u8() & 3;
                for k in 0..n {
                    let k64 = u64::from(k);
                    let head = HeadSpec {
                        session,
                        network,
                        seq: seq.saturating_add(k64),
                        msg_seq: msg.saturating_add(k64 * u64::from(gap.max(1))),
                        flags: 0,
                    };
                    let p = [k; 8];
                    let spec = FrameSpec {
                        topic: TOPICS[usize::from(k) % 2],
                        payload: &p,
                        fragment: None,
                        expires: None,
                        snapshot: 0,
                    };
                    let d = data_datagram(head, &[spec]);
                    if lost & (1 << k) == 0 {
                        let _ = rx.handle_datagram(now, source, &d, &mut |e| sink.take(e));
                    }
                    if k + 1 == n {
                        remember(&mut history, (source, d));
                    }
                }
            }
            _ => {}
        }
    }
    // Let the timers run out: NAK rounds give up, sessions go.
    for _ in 0..64 {
        let Some(t) = rx.poll_timeout() else {
            break;
        };
        now = now.max(t);
        rx.handle_timeout(now, &mut |d| sink.take(d));
        rx.poll_nak(&mut |k, a, b| {
            black_box((k, a, b));
        });
        rx.poll_status(now, 1024, &mut |k, s, w, f| {
            black_box((k, s, w, f));
        });
    }
    black_box((sink.events, sink.bytes, rx.counters()));
}

// ---------------------------------------------------------------------------------
// publisher

/// Publisher script operations (the op byte modulo their number).
mod tx_op {
    pub const OFFER: u8 = 0;
    pub const STATUS: u8 = 1;
    pub const NAK: u8 = 2;
    pub const RAW: u8 = 3;
    pub const ADVANCE: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const TRANSMIT: u8 = 6;
    pub const FEEDBACK: u8 = 7;
    pub const ANNOUNCE: u8 = 8;
    pub const ON_NAK: u8 = 9;
    pub const COUNT: u8 = 10;
}

/// Transmit rounds one offer may take at most (a fragmented message of the largest
/// payload a script offers takes fewer).
const OFFER_ROUNDS: usize = 2048;
/// Largest datagram pool a script builds, in bytes.
const POOL_BYTES: usize = 4 << 20;

// Every field is set today; the struct update keeps the harness building when a
// field is added (it then keeps its default until the harness fuzzes it too).
#[allow(clippy::needless_update)]
fn publisher_config(input: &mut Input<'_>) -> PublisherConfig {
    let f = input.u8();
    let max_payload = [512, 576, 1472, 1472, 8972, 65507][usize::from(input.u8()) % 6];
    let mut batch = 1 + usize::from(input.u8());
    while batch > 1 && 2 * batch * max_payload > POOL_BYTES {
        batch /= 2;
    }
    let slots = usize::from(input.u8());
    let flow_control = match (f >> 1) & 3 {
        1 => FlowControlStrategy::Max,
        2 => FlowControlStrategy::Tagged(1 + u32::from(input.u8() % 3)),
        _ => FlowControlStrategy::Min,
    };
    let rate_limit = (f & 0x10 != 0).then(|| {
        let v = u64::from(input.u16());
        (v << (input.u8() % 40)).max(1)
    });
    PublisherConfig {
        session: SESSION,
        network: if f & 0x20 != 0 { NETWORK } else { 0 },
        max_payload,
        reliable: f & 1 == 0,
        batch,
        retransmit_window: (slots * max_payload).min(POOL_BYTES),
        retransmit_budget: 1 + usize::from(input.u8()),
        retransmit_linger: Duration::from_micros(u64::from(input.u8()) * 8),
        heartbeat_interval: Duration::from_micros(u64::from(input.u16())),
        max_heartbeat_interval: Duration::from_micros(u64::from(input.u16()) * 8),
        flow_control,
        receiver_timeout: Duration::from_millis(1 + u64::from(input.u8()) * 8),
        startup_grace: if f & 8 != 0 {
            Duration::ZERO
        } else {
            STARTUP_GRACE
        },
        rate_limit,
        // (bits 6, 7: retransmitted bytes per 100 of data)
        repair_share: [100, 0, 10, u32::MAX][usize::from(f >> 6)],
        // (settings added later keep a node's defaults)
        ..PublisherConfig::new(SESSION, max_payload)
    }
}

/// The publisher under test, the receiver at the end of its link, and the clock.
struct PubRig {
    p: Publisher,
    rx: Receiver,
    network: u32,
    now: Instant,
    sink: Sink,
    /// A message an offer was refused (flow control, rate limit): offered again
    /// before anything new, as a driver's ring does.
    pending: Option<(&'static str, Vec<u8>)>,
    /// Datagrams lost on the link: one bit per datagram, round robin.
    loss: u32,
    sent: u32,
}

/// Checks a datagram the publisher handed out: it must decode as what it claims.
fn check_sent(kind: Transmit, d: &[u8]) {
    match kind {
        Transmit::Data | Transmit::Retransmit => {
            if let Err(e) = Frames::decode(d, u32::MAX as usize) {
                panic!("the publisher sent a {kind:?} datagram that does not decode: {e:?}");
            }
        }
        Transmit::Heartbeat => {
            if let Err(e) = Heartbeat::decode(d) {
                panic!("the publisher sent a heartbeat that does not decode: {e:?}");
            }
        }
    }
}

impl PubRig {
    /// One transmit; `fail` says (a bit per batch) which batches the kernel refuses.
    fn transmit(&mut self, fail: u8) {
        let PubRig {
            p,
            rx,
            now,
            sink,
            loss,
            sent,
            ..
        } = self;
        let mut batch = 0u32;
        p.poll_transmit(*now, &mut |kind, datagrams| {
            let ok = fail & (1 << (batch % 8)) == 0;
            batch += 1;
            for d in datagrams {
                check_sent(kind, d);
                let lost = *loss & (1 << (*sent % 32)) != 0;
                *sent = sent.wrapping_add(1);
                if ok && !lost {
                    let _ = rx.handle_datagram(*now, SOURCES[0], d, &mut |e| sink.take(e));
                }
            }
            ok
        });
    }

    /// Offers (or claims) a message, transmitting when a batch waits, as a driver does.
    fn offer(&mut self, topic: &'static str, payload: &[u8], claim: bool) -> bool {
        for _ in 0..OFFER_ROUNDS {
            if claim && !self.p.in_message() {
                match self.p.claim(self.now, topic, payload.len()) {
                    Ok(Some(room)) => {
                        let buf = self.p.claimed(room.clone());
                        let n = buf.len().min(payload.len());
                        buf[..n].copy_from_slice(&payload[..n]);
                        self.p.commit_claim(room);
                        return true;
                    }
                    Ok(None) => {}
                    Err(Blocked::Transmit) => {
                        self.transmit(0);
                        continue;
                    }
                    Err(_) => return false,
                }
            }
            match self.p.offer(self.now, topic, payload) {
                Ok(()) => return true,
                Err(Blocked::Transmit) => self.transmit(0),
                Err(_) => return false,
            }
        }
        false
    }

    /// Hands what the receiver has to send (NAKs, status) to the publisher; NAKs for
    /// other sessions go back to the receiver as heard ones.
    fn feedback(&mut self, window: u32, tag: u32) {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let network = self.network;
        self.rx.poll_nak(&mut |key, from, to| {
            out.push(nak_datagram(
                Nak {
                    session: key.session,
                    from,
                    to,
                    receiver: RECEIVER_ID,
                },
                network,
            ));
        });
        self.rx
            .poll_status(self.now, window, &mut |key, next_seq, window, snapshot| {
                out.push(status_datagram(
                    Status {
                        session: key.session,
                        receiver: RECEIVER_ID,
                        next_seq,
                        window,
                        tag,
                        snapshot,
                    },
                    network,
                ));
            });
        for d in out {
            self.control(&d);
        }
    }

    fn control(&mut self, d: &[u8]) {
        if let Ok(ControlEvent::OtherNak(n)) = self.p.handle_control(self.now, d) {
            self.rx.on_nak_heard(self.now, n.session, n.from, n.to);
        }
    }

    fn timeouts(&mut self) {
        self.p.handle_timeout(self.now);
        let sink = &mut self.sink;
        self.rx.handle_timeout(self.now, &mut |d| sink.take(d));
    }
}

/// Drives one [`Publisher`] with a script read from `data`; its datagrams go through a
/// lossy link to a [`Receiver`].
///
/// A few leading bytes choose the configuration (reliable or not, datagram size, batch,
/// retransmit window and budget, repair share, heartbeat timing, flow-control
/// strategy, rate limit, startup grace, network id) and the link's loss pattern. Then up to [`MAX_OPS`]
/// operations: offer (or claim) a message, cached or with a deadline, transmitting
/// when a batch waits; a status or a NAK built from fuzzer-chosen fields (for this
/// session or another, this network or another); raw control bytes; a clock step; a
/// jump to the earlier of both machines' timeouts; a transmit (the kernel refusing
/// some batches); the receiver's NAKs and status sent back; [`Publisher::announce`];
/// [`Publisher::on_nak`] directly. Every clock change runs both machines' timeouts.
///
/// # Panics
///
/// When the publisher hands out a datagram that does not decode: a wire bug.
pub fn publisher(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = publisher_config(&mut input);
    let network = cfg.network;
    let rx_cfg = ReceiverConfig {
        reliable: cfg.reliable,
        network,
        reorder_limit: 256,
        ..ReceiverConfig::default()
    };
    let now = Instant::now();
    let mut rig = PubRig {
        p: Publisher::new(cfg, now),
        rx: Receiver::new(rx_cfg),
        network,
        now,
        sink: Sink::default(),
        pending: None,
        loss: input.u32(),
        sent: 0,
    };
    let mut counter = 0u8;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % tx_op::COUNT {
            tx_op::OFFER => {
                let b = input.u8();
                let len = match input.u8() >> 6 {
                    0 | 1 => usize::from(input.u8()),
                    2 => usize::from(input.u16() % 4096),
                    _ => usize::from(input.u16()),
                };
                let expires = (b & 0x20 != 0).then(|| input.u64());
                counter = counter.wrapping_add(1);
                if let Some((topic, p)) = rig.pending.take() {
                    if !rig.offer(topic, &p, false) {
                        rig.pending = Some((topic, p));
                        continue;
                    }
                }
                let topic = TOPICS[usize::from(b & 7) % TOPICS.len()];
                let p = payload(len, counter);
                rig.p.set_cached(b & 0x10 != 0);
                rig.p.set_expiry(expires);
                if !rig.offer(topic, &p, b & 0x40 != 0) {
                    rig.pending = Some((topic, p));
                }
            }
            tx_op::STATUS => {
                let b = input.u8();
                let next_seq = if b & 1 != 0 {
                    input.seq()
                } else {
                    rig.p.next_seq().saturating_sub(u64::from(input.u8()))
                };
                let s = Status {
                    session: if b & 2 != 0 { SESSION ^ 1 } else { SESSION },
                    receiver: u64::from(input.u8() % 4),
                    next_seq,
                    window: match input.u8() {
                        0 => input.u32(),
                        w => u32::from(w),
                    },
                    tag: u32::from(input.u8() % 4),
                    snapshot: b & 4 != 0,
                };
                let net = if b & 8 != 0 { network ^ 1 } else { network };
                rig.control(&status_datagram(s, net));
            }
            tx_op::NAK => {
                let b = input.u8();
                let from = if b & 1 != 0 {
                    input.seq()
                } else {
                    rig.p.next_seq().saturating_sub(u64::from(input.u16()))
                };
                let (from, to) = nak_range(from, u64::from(input.u16()));
                let n = Nak {
                    session: if b & 2 != 0 { SESSION ^ 1 } else { SESSION },
                    from,
                    to,
                    receiver: u64::from(input.u8() % 4),
                };
                let net = if b & 8 != 0 { network ^ 1 } else { network };
                rig.control(&nak_datagram(n, net));
            }
            tx_op::RAW => {
                let n = usize::from(input.u8());
                let bytes = input.take(n).to_vec();
                rig.control(&bytes);
            }
            tx_op::ADVANCE => {
                rig.now += clock_step(&mut input);
                rig.timeouts();
            }
            tx_op::TIMEOUT => {
                let next = match (rig.p.poll_timeout(), rig.rx.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(t) = next {
                    rig.now = rig.now.max(t);
                }
                rig.timeouts();
            }
            tx_op::TRANSMIT => {
                let fail = input.u8();
                rig.transmit(fail);
            }
            tx_op::FEEDBACK => {
                let window = match input.u8() {
                    0 => input.u32(),
                    w => u32::from(w) * 4,
                };
                let tag = u32::from(input.u8() % 4);
                rig.feedback(window, tag);
            }
            tx_op::ANNOUNCE => rig.p.announce(rig.now),
            tx_op::ON_NAK => {
                // What a decoded NAK for this session asks.
                let from = rig.p.next_seq().saturating_sub(u64::from(input.u16()));
                let (from, to) = nak_range(from, u64::from(input.u16()));
                rig.p.on_nak(rig.now, from, to);
            }
            _ => {}
        }
    }
    // Drain: transmit what is left, let the receiver ask and the publisher repair.
    for _ in 0..16 {
        rig.transmit(0);
        rig.feedback(256, 0);
        let next = match (rig.p.poll_timeout(), rig.rx.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(t) = next else {
            break;
        };
        rig.now = rig.now.max(t);
        rig.timeouts();
    }
    black_box((
        rig.sink.events,
        rig.sink.bytes,
        rig.p.counters(),
        rig.rx.counters(),
    ));
}

// ---------------------------------------------------------------------------------
// Seed corpus

/// The seed corpus: `(target, name, input)` for every target, a small valid input of
/// each kind (datagrams of every kind for `decode`; scripts that reach in-order
/// delivery, gaps and NAKs, heartbeats, fragments, snapshots, eviction and timeouts
/// for `receiver`; offers, fragmentation, status, NAKs, the last-value cache, the
/// rate limit and a lossy link for `publisher`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(s) = recording_seed(3000, 0) {
        out.push(("files", "recording".to_string(), s));
    }
    if let Some(s) = recording_seed(40, 1) {
        out.push(("files", "recording-two-segments".to_string(), s));
    }
    for (name, d) in seed_datagrams().into_iter().take(8) {
        // Each seal operation on a real datagram's body.
        for op in 0..5u8 {
            let mut script = vec![op, 3];
            script.extend_from_slice(&d[..d.len().min(200)]);
            out.push(("seal", format!("{name}-op{op}"), script));
        }
    }
    for (name, d) in seed_datagrams() {
        // Decoded as they are (selector 0).
        let mut raw = vec![0u8];
        raw.extend_from_slice(&d);
        out.push(("decode", name.clone(), raw));
    }
    for (name, s) in receiver_scripts() {
        out.push(("receiver", name.to_string(), s));
    }
    for (name, s) in publisher_scripts() {
        out.push(("publisher", name.to_string(), s));
    }
    out
}

/// A valid datagram of every kind, and the datagrams a real publisher sends.
fn seed_datagrams() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let head = HeadSpec {
        session: 77,
        network: 0,
        seq: 5,
        msg_seq: 10,
        flags: 0,
    };
    let one = |topic, payload, fragment, expires, snapshot| FrameSpec {
        topic,
        payload,
        fragment,
        expires,
        snapshot,
    };
    v.push((
        "data-one".into(),
        data_datagram(head, &[one("/a", b"hello", None, None, 0)]),
    ));
    v.push((
        "data-three".into(),
        data_datagram(
            head,
            &[
                one("/a", b"one", None, None, 0),
                one("/bb", b"", None, Some(1_700_000_000_000_000), 0),
                one("", b"three", None, None, 0),
            ],
        ),
    ));
    v.push((
        "data-snapshot-cache".into(),
        data_datagram(
            HeadSpec {
                flags: CACHE_FLAG,
                network: NETWORK,
                ..head
            },
            &[
                one("/s", b"first", None, None, SNAPSHOT | SNAPSHOT_FIRST),
                one("/t", b"second", None, Some(9), SNAPSHOT),
            ],
        ),
    ));
    for (name, offset, total) in [
        ("data-fragment-first", 0u32, 20u32),
        ("data-fragment-middle", 6, 20),
        ("data-fragment-last", 14, 20),
    ] {
        let frag = Fragment {
            total_len: total,
            offset,
        };
        v.push((
            name.into(),
            data_datagram(head, &[one("/big", b"abcdef", Some(frag), None, 0)]),
        ));
    }
    v.push((
        "status".into(),
        status_datagram(
            Status {
                session: 77,
                receiver: 0x1122_3344_5566_7788,
                next_seq: 40,
                window: 512,
                tag: 0,
                snapshot: false,
            },
            0,
        ),
    ));
    v.push((
        "status-snapshot-tagged".into(),
        status_datagram(
            Status {
                session: 77,
                receiver: 2,
                next_seq: 0,
                window: 64,
                tag: 7,
                snapshot: true,
            },
            NETWORK,
        ),
    ));
    v.push((
        "heartbeat".into(),
        heartbeat_datagram(
            Heartbeat {
                session: 77,
                next_seq: 100,
                next_msg_seq: 5000,
                oldest: 40,
            },
            0,
            CACHE_FLAG,
        ),
    ));
    v.push((
        "nak".into(),
        nak_datagram(
            Nak {
                session: 77,
                from: 10,
                to: 12,
                receiver: 9,
            },
            0,
        ),
    ));
    let announce = Announce {
        node: 0xfeed_f00d_dead_beef,
        seq: 17,
        network: 42,
        leave: false,
        name: "host-a:1234".into(),
        version: "0.1.0".into(),
        group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 40456),
        publishes: vec!["/md/eurusd".into(), "/md/gbpusd".into()],
        subscribes: vec!["/orders/".into(), "".into()],
        truncated: false,
        unicast: false,
    };
    let mut b = Vec::new();
    announce.encode(&mut b);
    v.push(("announce".into(), b.clone()));
    Announce {
        leave: true,
        unicast: true,
        publishes: Vec::new(),
        subscribes: Vec::new(),
        ..announce
    }
    .encode(&mut b);
    v.push(("announce-leave-unicast".into(), b.clone()));
    let peers: Vec<SocketAddrV4> = (1..=3)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 40400))
        .collect();
    encode_peer_list(7, &peers, &mut b);
    v.push(("peer-list".into(), b.clone()));
    encode_peer_list(0, &[], &mut b);
    v.push(("peer-list-empty".into(), b.clone()));
    // What a real publisher sends: packed data, fragments, a snapshot burst, a
    // heartbeat.
    let t0 = Instant::now();
    let mut p = Publisher::new(
        PublisherConfig {
            reliable: false,
            ..PublisherConfig::new(77, 512)
        },
        t0,
    );
    let mut sent: Vec<(Transmit, Vec<u8>)> = Vec::new();
    let mut collect = |p: &mut Publisher, now| {
        p.poll_transmit(now, &mut |kind, b| {
            sent.extend(b.iter().map(|d| (kind, d.to_vec())));
            true
        });
    };
    p.set_cached(true);
    for (topic, len) in [("/x", 10), ("/y", 20), ("/z", 1200)] {
        while p.offer(t0, topic, &payload(len, 1)) == Err(Blocked::Transmit) {
            collect(&mut p, t0);
        }
    }
    collect(&mut p, t0);
    let ask = status_datagram(
        Status {
            session: 77,
            receiver: 1,
            next_seq: p.next_seq(),
            window: 1024,
            tag: 0,
            snapshot: true,
        },
        0,
    );
    let _ = p.handle_control(t0, &ask);
    let _ = p.offer(t0, "/x", b"live");
    collect(&mut p, t0);
    let later = t0 + Duration::from_millis(5);
    p.handle_timeout(later);
    collect(&mut p, later);
    for (i, (kind, d)) in sent.into_iter().enumerate() {
        v.push((format!("publisher-{i}-{kind:?}").to_lowercase(), d));
    }
    v
}

fn rx_data(s: &mut Script, who: u8, seq: u64, msg: u64, frames: &[(u8, &[u8])]) {
    // frames: (frame byte, payload); the frame byte as `data_from_input` reads it, with
    // bit 7 clear (8-bit length) and no fragment or expiry.
    s.u8(rx_op::DATA).u8(who).seq(seq).seq(msg);
    s.u8((frames.len().max(1) - 1) as u8);
    for (fb, p) in frames {
        s.u8(fb & 0x4f).u8(p.len() as u8);
    }
}

fn receiver_scripts() -> Vec<(&'static str, Vec<u8>)> {
    // Configuration bytes: flags, status_every, max_sessions, nak_delay, nak_interval
    // (2), nak_max_interval (2), nak_retries, reorder_limit, seed (2),
    // publisher_timeout.
    let config = |s: &mut Script, flags: u8| {
        s.u8(flags)
            .u8(4)
            .u8(1)
            .u8(25)
            .u16(2000)
            .u16(6250)
            .u8(5)
            .u8(64)
            .u16(0x5eed)
            .u8(125);
    };
    let advance = |s: &mut Script, us: u16| {
        s.u8(rx_op::ADVANCE).u16(us).u8(0);
    };
    let mut v = Vec::new();

    // In order, then a status poll and NAK poll.
    let mut s = Script::default();
    config(&mut s, 1);
    for k in 0..4u64 {
        rx_data(&mut s, 0, k, k * 2, &[(0, b"ab"), (1, b"cd")]);
    }
    s.u8(rx_op::POLL_STATUS).u8(64);
    s.u8(rx_op::POLL_NAK).u8(1);
    v.push(("in-order", s.0));

    // A gap: NAKed, retried, given up; then the hole is filled by a replay.
    let mut s = Script::default();
    config(&mut s, 1);
    s.u8(rx_op::BURST)
        .u8(0)
        .seq(0)
        .seq(0)
        .u8(12)
        .u32(0b0011_0000)
        .u8(1);
    for _ in 0..3 {
        s.u8(rx_op::TIMEOUT);
        s.u8(rx_op::POLL_NAK).u8(0);
    }
    s.u8(rx_op::REPLAY).u8(0);
    s.u8(rx_op::NAK_HEARD).u8(1).seq(3).u16(4);
    advance(&mut s, 60000);
    v.push(("gap-nak", s.0));

    // Best effort: gaps reported at once; a heartbeat tells the tail.
    let mut s = Script::default();
    config(&mut s, 4 | 1);
    s.u8(rx_op::BURST)
        .u8(2)
        .seq(100)
        .seq(400)
        .u8(20)
        .u32(0x0f0f)
        .u8(2);
    s.u8(rx_op::HEARTBEAT).u8(2).seq(130).seq(470).u16(10);
    v.push(("best-effort-heartbeat", s.0));

    // A heartbeat ahead of the data: missing datagrams at the tail, the publisher no
    // longer holds some of them.
    let mut s = Script::default();
    config(&mut s, 1);
    rx_data(&mut s, 0, 0, 0, &[(0, b"x")]);
    s.u8(rx_op::HEARTBEAT).u8(0).seq(40).seq(40).u16(20);
    s.u8(rx_op::TIMEOUT);
    s.u8(rx_op::POLL_NAK).u8(0);
    v.push(("heartbeat-tail", s.0));

    // A fragmented message, in three pieces.
    let mut s = Script::default();
    config(&mut s, 3);
    for (k, offset, extra) in [(0u64, 0u16, 40u16), (1, 20, 20), (2, 40, 0)] {
        s.u8(rx_op::DATA).u8(0).seq(k).seq(0).u8(0);
        s.u8(0x10).u8(20).u16(offset).u16(extra);
    }
    v.push(("fragments", s.0));

    // A late joiner of a session with a cache: waits, asks, joins at the burst.
    let mut s = Script::default();
    config(&mut s, 1);
    rx_data(&mut s, 0x10, 500, 900, &[(0, b"live")]);
    s.u8(rx_op::POLL_STATUS).u8(64);
    s.u8(rx_op::DATA).u8(0x10).seq(501).seq(901).u8(1);
    s.u8(0x48).u8(3); // SNAPSHOT | SNAPSHOT_FIRST
    s.u8(0x08).u8(3); // SNAPSHOT
    rx_data(&mut s, 0x10, 502, 903, &[(0, b"after")]);
    advance(&mut s, 30000);
    s.u8(rx_op::ADVANCE).u16(0xffff).u8(4);
    v.push(("snapshot-join", s.0));

    // More sessions than the receiver keeps, then silence: sessions go.
    let mut s = Script::default();
    config(&mut s, 1);
    for who in [0u8, 1, 2, 3, 4, 5] {
        rx_data(&mut s, who, 70, 70, &[(0, b"s")]);
    }
    s.u8(rx_op::ADVANCE).u16(0xffff).u8(6);
    s.u8(rx_op::TIMEOUT);
    v.push(("sessions-evicted-gone", s.0));

    // Raw bytes and a flipped replay.
    let mut s = Script::default();
    config(&mut s, 1);
    rx_data(&mut s, 0, 1, 1, &[(0, b"abc")]);
    s.u8(rx_op::REPLAY).u8(0x80).u16(40).u8(0x55);
    let (_, d) = seed_datagrams()
        .into_iter()
        .find(|(n, _)| n == "data-three")
        .unwrap_or_default();
    s.u8(rx_op::RAW).u8(1).u16(d.len() as u16).bytes(&d);
    v.push(("raw-replay", s.0));
    v
}

fn publisher_scripts() -> Vec<(&'static str, Vec<u8>)> {
    // Configuration bytes: flags, max_payload choice, batch, slots, [tag],
    // [rate (2), shift], budget, linger, heartbeat (2), max heartbeat (2), receiver
    // timeout; then the link's loss mask (4).
    let config = |s: &mut Script, flags: u8, loss: u32| {
        s.u8(flags).u8(2).u8(7).u8(64);
        if (flags >> 1) & 3 == 2 {
            s.u8(0);
        }
        if flags & 0x10 != 0 {
            s.u16(1000).u8(10);
        }
        s.u8(63).u8(62).u16(1000).u16(12500).u8(125).u32(loss);
    };
    let offer = |s: &mut Script, b: u8, len: u16| {
        match len {
            0..=255 => s.u8(tx_op::OFFER).u8(b).u8(0).u8(len as u8),
            _ => s.u8(tx_op::OFFER).u8(b).u8(0xc0).u16(len),
        };
        if b & 0x20 != 0 {
            s.u64(1_700_000_000_000_000);
        }
    };
    let mut v = Vec::new();

    // Offers, a transmit, the receiver's status back.
    let mut s = Script::default();
    config(&mut s, 0, 0);
    for k in 0..20u8 {
        offer(&mut s, k % 4, 40 + u16::from(k));
    }
    s.u8(tx_op::TRANSMIT).u8(0);
    s.u8(tx_op::FEEDBACK).u8(64).u8(0);
    s.u8(tx_op::TIMEOUT);
    v.push(("offers-status", s.0));

    // A lossy link: the receiver NAKs, the publisher repairs.
    let mut s = Script::default();
    config(&mut s, 0, 0x0000_0f30);
    for k in 0..40u8 {
        offer(&mut s, k % 2, 300);
    }
    s.u8(tx_op::TRANSMIT).u8(0);
    for _ in 0..4 {
        s.u8(tx_op::TIMEOUT);
        s.u8(tx_op::FEEDBACK).u8(64).u8(0);
        s.u8(tx_op::TRANSMIT).u8(0);
    }
    v.push(("lossy-repair", s.0));

    // Fragmented messages (one claimed), a deadline, Max flow control.
    let mut s = Script::default();
    config(&mut s, 2, 0);
    offer(&mut s, 1 | 0x20, 5000);
    offer(&mut s, 0x40, 30);
    offer(&mut s, 4, 3000);
    s.u8(tx_op::TRANSMIT).u8(0);
    s.u8(tx_op::STATUS).u8(0).u8(0).u8(1).u8(16).u8(0);
    v.push(("fragments-claim", s.0));

    // The last-value cache: a status asks for the snapshot.
    let mut s = Script::default();
    config(&mut s, 0, 0);
    for k in 0..6u8 {
        offer(&mut s, 0x10 | (k % 3), 20);
    }
    s.u8(tx_op::TRANSMIT).u8(0);
    s.u8(tx_op::STATUS).u8(4).u8(0).u8(2).u8(64).u8(0);
    offer(&mut s, 0x10, 20);
    s.u8(tx_op::TRANSMIT).u8(0);
    v.push(("snapshot-burst", s.0));

    // NAKs for data held and no longer held, raw control bytes, refused batches.
    let mut s = Script::default();
    config(&mut s, 0, 0);
    for k in 0..30u8 {
        offer(&mut s, k % 2, 200);
    }
    s.u8(tx_op::TRANSMIT).u8(0xff);
    s.u8(tx_op::NAK).u8(0).u16(10).u16(5).u8(1);
    s.u8(tx_op::NAK).u8(1).seq(0).u16(1).u8(1);
    s.u8(tx_op::ON_NAK).u16(3).u16(2);
    let nak = nak_datagram(
        Nak {
            session: SESSION,
            from: 0,
            to: 2,
            receiver: 3,
        },
        0,
    );
    s.u8(tx_op::RAW).u8(nak.len() as u8).bytes(&nak);
    s.u8(tx_op::TRANSMIT).u8(0);
    v.push(("naks", s.0));

    // Rate limited, tagged flow control, announced before any data; time passes.
    let mut s = Script::default();
    config(&mut s, 0x10 | 4, 0);
    s.u8(tx_op::ANNOUNCE);
    s.u8(tx_op::ADVANCE).u16(2000).u8(0);
    s.u8(tx_op::TRANSMIT).u8(0);
    for _ in 0..10 {
        offer(&mut s, 0, 1000);
    }
    s.u8(tx_op::ADVANCE).u16(5000).u8(2);
    s.u8(tx_op::TIMEOUT);
    s.u8(tx_op::FEEDBACK).u8(0).u32(1 << 20).u8(1);
    v.push(("rate-tagged-announce", s.0));
    v
}

// ---------------------------------------------------------------------------------
// The sealed-datagram opener.

/// The key every `seal` run uses (the target checks the opener, not key secrecy).
const FUZZ_KEY: &str = "ringcast-key 1\nkey 0f0f0f0f \
    606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\n\
    key 1e1e1e1e 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff until 1\n";

/// The opener fed arbitrary bytes and real sealed datagrams, then mutated,
/// truncated, replayed and reordered ones, with what each must give asserted: a
/// datagram sealed with the key opens to exactly its plain bytes, once; any flipped
/// bit or cut byte is refused; a replay is refused as one; an expired key's datagram
/// is refused. Script: `[op, len, bytes…]…`.
pub fn seal(data: &[u8]) {
    use crate::seal::{Keyring, SealError, HEADER_LEN as H, OVERHEAD};
    let Ok(keys) = Keyring::parse(FUZZ_KEY) else {
        return;
    };
    let mut sealer = keys.sealer();
    let mut opener = keys.opener();
    let mut input = Input::new(data);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut out = vec![0u8; 4096 + OVERHEAD];
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 5;
        let len = usize::from(input.u8()) * 8 % 2048;
        let body = input.take(len);
        // A plain datagram: a header (the fuzzer's bytes, or a valid one) and a body.
        let mut plain = vec![0u8; H];
        plain[..4].copy_from_slice(b"RCST");
        plain[4] = 2;
        plain[5] = 1;
        plain.extend_from_slice(body);
        match op {
            0 => {
                // arbitrary bytes: never opens (the fuzzer cannot forge the tag)
                let mut raw = body.to_vec();
                let mut into = [0u8; 4096];
                assert!(
                    opener.open_into(0, &raw, &mut into).is_err(),
                    "forged, opened"
                );
                assert!(opener.open(0, &mut raw).is_err(), "forged datagram opened");
            }
            1..=3 => {
                let n = sealer.seal(&plain, &mut out).expect("seals");
                let sealed = out[..n].to_vec();
                match op {
                    1 if len % 16 == 8 => {
                        // opened out of place (as the agents do), then in place: a replay
                        let mut into = vec![0u8; n];
                        let p = opener.open_into(0, &sealed, &mut into).expect("opens");
                        assert_eq!(&into[..p], &plain[..], "opened into other bytes");
                        let mut again = sealed.clone();
                        assert_eq!(opener.open(0, &mut again), Err(SealError::Replayed));
                    }
                    1 => {
                        let mut b = sealed.clone();
                        let r = opener.open(0, &mut b).expect("a sealed datagram opens");
                        assert_eq!(&b[r], &plain[..], "opened to other bytes");
                        let mut into = vec![0u8; n];
                        let replay = opener.open_into(0, &sealed, &mut into);
                        assert_eq!(replay, Err(SealError::Replayed));
                        let mut again = sealed.clone();
                        assert_eq!(opener.open(0, &mut again), Err(SealError::Replayed));
                    }
                    2 => {
                        let mut b = sealed.clone();
                        let at = usize::from(input.u8()) * 7 % b.len();
                        b[at] ^= 1 << (input.u8() % 8);
                        let mut into = vec![0u8; n];
                        let r = opener.open_into(0, &b, &mut into);
                        assert!(r.is_err(), "mutated byte {at} opened into");
                        assert!(opener.open(0, &mut b).is_err(), "mutated byte {at} opened");
                        kept.push(sealed);
                    }
                    _ => {
                        let mut b = sealed.clone();
                        let cut = usize::from(input.u8()) % b.len();
                        b.truncate(cut);
                        assert!(opener.open(0, &mut b).is_err(), "cut to {cut} opened");
                        kept.push(sealed);
                    }
                }
                kept.truncate(64);
            }
            _ => {
                // an untouched one kept from before: opens once, in any order
                if let Some(mut k) = kept.pop() {
                    let plain_len = k.len() - OVERHEAD;
                    let first = opener.open(0, &mut k.clone());
                    assert!(
                        first.is_ok() || first == Err(SealError::Replayed),
                        "{first:?}"
                    );
                    let r = opener.open(0, &mut k);
                    assert_eq!(r, Err(SealError::Replayed));
                    assert!(plain_len >= H);
                }
            }
        }
    }
}

/// A [`files`] input holding a real recording of `n` records: its index and the
/// records of its first segment.
fn recording_seed(n: u64, flags: u8) -> Option<Vec<u8>> {
    use crate::record::{Entry, Recorder, MIN_SEGMENT, SEGMENT_HEADER};
    let dir = scratch().with_extension(format!("seed-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = Recorder::create(&dir, MIN_SEGMENT).ok()?;
    for i in 0..n {
        let payload = vec![i as u8; (i % 40) as usize];
        r.append(&Entry {
            topic: "/t",
            session: 1,
            seq: i,
            publish_ns: 0,
            receive_ns: 1_000 + i * 10,
            payload: &payload,
        })
        .ok()?;
    }
    drop(r);
    let seg = std::fs::read(dir.join("00000000.rcseg")).ok()?;
    let index = std::fs::read(dir.join("index.rcidx")).ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = vec![flags];
    out.extend_from_slice(&(index.len() as u16).to_le_bytes());
    out.extend_from_slice(&index);
    // (the records as written, without trailing zeros)
    let used = seg
        .iter()
        .rposition(|&b| b != 0)
        .map_or(SEGMENT_HEADER, |p| p + 1);
    out.extend_from_slice(&seg[SEGMENT_HEADER..used.max(SEGMENT_HEADER)]);
    Some(out)
}

/// A directory of this process for [`files`] (memory-backed where `/dev/shm` is).
fn scratch() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("ringcast-fuzz-files-{}", std::process::id()))
    })
}

/// Input: a flags byte (bit 0: a second segment; bit 1: segment 0's header damaged
/// by the input too), an index length (u16, at most 4 KiB), the index, then the
/// records' bytes (segment 0 after its header, the rest into segment 1). The same
/// bytes are also read as an IPC log's header.
pub fn files(data: &[u8]) {
    use crate::record::{segment_header, Recording, MIN_SEGMENT, SEGMENT_HEADER};
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let mut input = Input::new(data);
    let flags = input.u8();
    let index_len = usize::from(input.u16()) % 4096;
    let rest = input.take(usize::MAX);
    let (index, body) = rest.split_at(index_len.min(rest.len()));
    let room = MIN_SEGMENT - SEGMENT_HEADER;
    let (first, second) = body.split_at(body.len().min(room));
    let segments: &[&[u8]] = if flags & 1 != 0 {
        &[first, second]
    } else {
        &[first]
    };
    for (n, records) in segments.iter().enumerate() {
        let mut seg = vec![0u8; MIN_SEGMENT];
        seg[..SEGMENT_HEADER].copy_from_slice(&segment_header(n as u32, MIN_SEGMENT));
        let at = if n == 0 && flags & 2 != 0 {
            0
        } else {
            SEGMENT_HEADER
        };
        let len = records.len().min(MIN_SEGMENT - at);
        seg[at..at + len].copy_from_slice(&records[..len]);
        if std::fs::write(dir.join(format!("{n:08}.rcseg")), &seg).is_err() {
            return;
        }
    }
    if std::fs::write(dir.join("index.rcidx"), index).is_err() {
        return;
    }
    if let Ok(rec) = Recording::open(dir) {
        let mut count = 0u64;
        let mut last = None;
        for r in rec.iter() {
            count += 1;
            last = Some(r.receive_ns);
            black_box(r);
        }
        // `open` counted the records the iteration hands out.
        assert_eq!(count, rec.records(), "records iterated against counted");
        for e in rec.index() {
            let r = rec.iter_from_record(e.record).next();
            assert_eq!(
                r.map(|r| r.record),
                Some(e.record),
                "an index entry names its record"
            );
        }
        if let Some(t) = last {
            assert!(
                rec.iter_from_time(t).next().is_some(),
                "the last time is found"
            );
        }
        black_box(rec.iter_from_record(u64::MAX).next());
        black_box(rec.iter_from_time(u64::MAX).next());
    }
    // The same bytes as a log header.
    let log = dir.join("x.rclog");
    let mut head = data.to_vec();
    head.resize(crate::ring::log::HEADER_LEN, 0);
    if std::fs::write(&log, &head).is_ok() {
        black_box(crate::ring::log::read_meta(&log));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_run_clean() {
        let seeds = seeds();
        for t in TARGETS {
            assert!(seeds.iter().any(|(n, _, _)| *n == t), "no seed for {t}");
        }
        for (target, name, input) in &seeds {
            assert!(run(target, input), "{target}/{name}");
        }
        // Every seed datagram decodes as its kind.
        for (name, d) in seed_datagrams() {
            assert!(Header::decode(&d).is_ok(), "{name}");
        }
    }

    /// Pseudo-random inputs, and the seeds with bytes flipped: the harness neither
    /// panics nor overflows of its own.
    #[test]
    fn arbitrary_inputs_run() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = seeds();
        for i in 0..3000 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                let (_, _, s) = &seeds[(next() as usize) % seeds.len()];
                data = s.clone();
                for _ in 0..1 + next() % 4 {
                    if !data.is_empty() {
                        let at = (next() as usize) % data.len();
                        data[at] ^= next() as u8;
                    }
                }
            }
            for t in TARGETS {
                run(t, &data);
            }
        }
    }
}
