//! Group keys: every datagram on every port sealed with AES-256-GCM.
//!
//! A sealed datagram is the plain one with its 32-byte header kept in the clear
//! (flagged [`SEALED`]) and authenticated, then a 20-byte seal extension — the key id
//! (`u32`), the sender id (`u64`) and the sender's counter (`u64`), also
//! authenticated — then the encrypted body and the 16-byte tag:
//!
//! ```text
//! | header (32) | key id (4) | sender (8) | counter (8) | body, encrypted | tag (16) |
//! ```
//!
//! **Nonces never repeat under one key.** Each sealing context (a publisher's sender,
//! a receiver's control sender, discovery) draws a random 64-bit sender id from the
//! operating system when it starts, and derives its own AES key from the group key
//! with HKDF-SHA256 (info: sender id and key id). The nonce is the context's counter,
//! incremented for every datagram it seals — a retransmission is sealed again with a
//! new counter — and a `u64` cannot wrap (at ten million datagrams a second it would
//! take 58,000 years). A restart draws a new sender id, so a new key: no nonce is
//! used twice under one AES key unless two contexts of one group key draw the same
//! 64-bit id (after 2^20 starts under one key, a chance of 2^-25).
//!
//! **Replays are rejected**: the opener keeps, per (key id, sender), the highest
//! counter seen and a 1,024-counter window behind it. A datagram that fails is dropped
//! before any state changes, and counted by reason ([`SealError`]).
//!
//! **Rotation**: a key file holds up to [`MAX_KEYS`] keys; the first seals, every key
//! opens (one marked `until` only until then), see [`Keyring`].

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf;

pub use crate::wire::HEADER_LEN;

/// Header flag (high nibble of the kind byte): the datagram is sealed.
pub const SEALED: u8 = 0x8;
/// Bytes of the seal extension after the header.
pub const EXT_LEN: usize = 20;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a datagram.
pub const OVERHEAD: usize = EXT_LEN + TAG_LEN;
/// Keys a key file holds at most.
pub const MAX_KEYS: usize = 4;
/// Senders an opener keeps replay windows for at most (the least recently heard
/// makes room).
pub const MAX_SENDERS: usize = 4096;
/// Counters behind the highest one seen that a replay window still accepts.
pub const REPLAY_WINDOW: u64 = 1024;
/// The first line of a key file.
const FILE_MAGIC: &str = "ringcast-key 1";
/// HKDF salt: a sender's key is HKDF-SHA256(salt, group key, sender id ‖ key id).
const SALT: &[u8] = b"ringcast seal v1";

impl SealError {
    /// Counts the refusal of a datagram under its reason.
    pub(crate) fn count(&self, c: &crate::stats::ReceiverCounters) {
        match self {
            SealError::AuthFailed | SealError::BadFile(_) => c.auth_failed.add_shared(1),
            SealError::Replayed => c.replayed.add_shared(1),
            SealError::UnknownKey(_) => c.unknown_key.add_shared(1),
        }
    }
}

/// Why a key file or a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not sealed, truncated, or the tag does not verify (forged or mutated).
    #[error("authentication failed")]
    AuthFailed,
    /// Sealed with a counter this sender already used, or one older than the window.
    #[error("replayed")]
    Replayed,
    /// Sealed with a key id this node does not hold (or no longer accepts).
    #[error("unknown key id {0:#010x}")]
    UnknownKey(u32),
    /// The key file does not parse.
    #[error("key file: {0}")]
    BadFile(String),
}

/// One group key.
#[derive(Clone)]
struct GroupKey {
    id: u32,
    key: [u8; 32],
    /// Accepted until then (seconds since the UNIX epoch); `None`: always.
    until: Option<u64>,
}

/// The keys of a group: the first seals, all of them open (a previous one until its
/// `until`). Key bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<GroupKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self
            .keys
            .iter()
            .map(|k| (format!("{:08x}", k.id), k.until))
            .collect();
        f.debug_struct("Keyring").field("keys", &ids).finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.to_file() == other.to_file()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Key bytes and sender ids, from the operating system's CSPRNG (`getrandom(2)`:
/// AWS-LC's own generator would first seed itself from CPU jitter, ~25 ms at every
/// start of a keyed node).
fn random_bytes<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|_| SealError::BadFile("the system has no randomness".into()))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Keyring {
    /// A new group: one fresh random key (random id).
    pub fn generate() -> Result<Keyring, SealError> {
        Ok(Keyring {
            keys: vec![Self::fresh()?],
        })
    }

    fn fresh() -> Result<GroupKey, SealError> {
        Ok(GroupKey {
            id: u32::from_le_bytes(random_bytes()?),
            key: random_bytes()?,
            until: None,
        })
    }

    /// Rotation, first step: the same sealing key, and a fresh one accepted too.
    /// Rolled out to every node first, so that none refuses the new key once nodes
    /// start sealing with it.
    pub fn with_next(&self) -> Result<Keyring, SealError> {
        let mut keys: Vec<GroupKey> = self.live().cloned().collect();
        keys.truncate(MAX_KEYS - 1);
        keys.insert(1, Self::fresh()?);
        Ok(Keyring { keys })
    }

    /// Rotation, second step: the key added by [`with_next`](Self::with_next) (or a
    /// fresh one if there is none) seals; the old sealing key is accepted for
    /// `overlap_secs` more, then refused.
    pub fn rotated(&self, overlap_secs: u64) -> Result<Keyring, SealError> {
        let old = self.keys[0].clone();
        let next = match self.keys.get(1) {
            Some(k) if k.until.is_none() => k.clone(),
            _ => Self::fresh()?,
        };
        Ok(Keyring {
            keys: vec![
                next,
                GroupKey {
                    until: Some(unix_now().saturating_add(overlap_secs)),
                    ..old
                },
            ],
        })
    }

    fn live(&self) -> impl Iterator<Item = &GroupKey> {
        let now = unix_now();
        self.keys
            .iter()
            .enumerate()
            .filter(move |(i, k)| *i == 0 || k.until.is_none_or(|u| u > now))
            .map(|(_, k)| k)
    }

    /// The id of the sealing key.
    pub fn current_id(&self) -> u32 {
        self.keys[0].id
    }

    /// The key file's text.
    pub fn to_file(&self) -> String {
        let mut s = format!(
            "{FILE_MAGIC}\n# ringcast group key file: whoever holds it is a member of the group.\n\
             # key <id> <256-bit key> [until <UNIX seconds>]; the first key seals, all open.\n"
        );
        for k in &self.keys {
            s.push_str(&format!("key {:08x} {}", k.id, hex(&k.key)));
            if let Some(u) = k.until {
                s.push_str(&format!(" until {u}"));
            }
            s.push('\n');
        }
        s
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let bad = |why: String| SealError::BadFile(why);
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(FILE_MAGIC) {
            return Err(bad(format!("does not start with {FILE_MAGIC:?}")));
        }
        let mut keys = Vec::new();
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            let until = match w.as_slice() {
                ["key", _, _] => None,
                ["key", _, _, "until", u] => Some(
                    u.parse::<u64>()
                        .map_err(|_| bad(format!("bad until {u:?}")))?,
                ),
                _ => return Err(bad(format!("unexpected line {line:?}"))),
            };
            let id = unhex::<4>(w[1])
                .map(u32::from_be_bytes)
                .ok_or_else(|| bad(format!("bad key id {:?} (8 hex digits)", w[1])))?;
            let key =
                unhex::<32>(w[2]).ok_or_else(|| bad("bad key (64 hex digits)".to_string()))?;
            if keys.iter().any(|k: &GroupKey| k.id == id) {
                return Err(bad(format!("key id {id:08x} twice")));
            }
            keys.push(GroupKey { id, key, until });
        }
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(bad(format!("holds {} keys (1 to {MAX_KEYS})", keys.len())));
        }
        if keys[0].until.is_some() {
            return Err(bad("the first (sealing) key has an until".into()));
        }
        Ok(Keyring { keys })
    }

    /// Reads a key file.
    pub fn load(path: &std::path::Path) -> Result<Keyring, SealError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::BadFile(format!("{}: {e}", path.display())))?;
        Keyring::parse(&text)
    }

    /// A sealing context with a fresh random sender id (from the operating system;
    /// should it have none, from std's randomly seeded hasher, itself seeded by the
    /// operating system).
    pub fn sealer(&self) -> Sealer {
        let sender = random_bytes()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| crate::agent::random_u64());
        Sealer::with_sender(&self.keys[0], sender)
    }

    /// An opener for the keys live now.
    pub fn opener(&self) -> Opener {
        Opener {
            keys: self.keys.clone(),
            senders: HashMap::new(),
            clock: 0,
        }
    }
}

/// One thread's sealing and opening, for the agents: what it sends is sealed into its
/// own buffers, what it receives is copied and opened there (refusals counted).
pub(crate) struct Guard {
    sealer: Sealer,
    opener: Opener,
    /// Sealed datagrams of one batch, `slot` bytes apart; and one opened datagram.
    out: Vec<u8>,
    slot: usize,
    inbound: Vec<u8>,
}

impl Guard {
    /// Seals batches of up to `batch` datagrams of up to `max_plain` bytes.
    pub(crate) fn new(keys: &Keyring, max_plain: usize, batch: usize) -> Guard {
        let slot = max_plain + OVERHEAD;
        Guard {
            sealer: keys.sealer(),
            opener: keys.opener(),
            out: vec![0; slot * batch.max(1)],
            slot,
            inbound: vec![0; slot],
        }
    }

    /// Opens `bytes`: the plain datagram, or `None` (counted in `c`) to drop it.
    /// Decrypted straight out of `bytes` (the receive buffer) into this guard's own.
    pub(crate) fn open(
        &mut self,
        bytes: &[u8],
        c: &crate::stats::ReceiverCounters,
    ) -> Option<&[u8]> {
        if bytes.len() > self.inbound.len() {
            // (a datagram larger than this node builds: bounded by the UDP maximum)
            self.inbound.resize(bytes.len(), 0);
        }
        match self.opener.open_into(unix_now(), bytes, &mut self.inbound) {
            Ok(n) => Some(&self.inbound[..n]),
            Err(e) => {
                e.count(c);
                None
            }
        }
    }

    /// Seals one datagram (control and discovery messages).
    pub(crate) fn seal_one(&mut self, plain: &[u8]) -> Option<&[u8]> {
        if plain.len() + OVERHEAD > self.out.len() {
            return None;
        }
        let n = self.sealer.seal(plain, &mut self.out)?;
        Some(&self.out[..n])
    }

    /// Seals a batch (the first as many as fit) and hands it to `send`.
    pub(crate) fn seal_batch<R>(
        &mut self,
        datagrams: &[&[u8]],
        send: impl FnOnce(&[&[u8]]) -> R,
    ) -> R {
        const MAX: usize = crate::agent::MAX_BATCH;
        let n = datagrams.len().min(MAX).min(self.out.len() / self.slot);
        let mut lens = [0usize; MAX];
        for (i, d) in datagrams.iter().take(n).enumerate() {
            let out = &mut self.out[i * self.slot..(i + 1) * self.slot];
            lens[i] = self.sealer.seal(d, out).unwrap_or(0);
        }
        let mut refs: [&[u8]; MAX] = [&[]; MAX];
        for (i, r) in refs.iter_mut().take(n).enumerate() {
            *r = &self.out[i * self.slot..i * self.slot + lens[i]];
        }
        send(&refs[..n])
    }
}

/// The AES-256-GCM key of `sender` under group key `k`.
fn sender_key(k: &GroupKey, sender: u64) -> LessSafeKey {
    let mut info = [0u8; 12];
    info[..8].copy_from_slice(&sender.to_le_bytes());
    info[8..].copy_from_slice(&k.id.to_le_bytes());
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&k.key);
    let info = [&info[..]];
    // 32 bytes are always within HKDF-SHA256's 8,160-byte limit
    let okm = prk.expand(&info, &AES_256_GCM);
    match okm {
        Ok(okm) => LessSafeKey::new(UnboundKey::from(okm)),
        Err(_) => unreachable!("HKDF-SHA256 expands 32 bytes"),
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals the datagrams of one sender (one thread).
pub struct Sealer {
    key: LessSafeKey,
    key_id: u32,
    sender: u64,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("sender", &format_args!("{:016x}", self.sender))
            .field("counter", &self.counter)
            .finish()
    }
}

impl Sealer {
    fn with_sender(k: &GroupKey, sender: u64) -> Sealer {
        Sealer {
            key: sender_key(k, sender),
            key_id: k.id,
            sender,
            counter: 0,
        }
    }

    /// Seals `plain` (a whole datagram, header first) into `out`, returning the sealed
    /// length (`plain.len() + OVERHEAD`). `None` when `plain` has no header or `out` is
    /// too short.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Option<usize> {
        let n = plain.len().checked_add(OVERHEAD)?;
        if plain.len() < HEADER_LEN || out.len() < n {
            return None;
        }
        let counter = self.counter;
        self.counter += 1;
        let (aad, rest) = out[..n].split_at_mut(HEADER_LEN + EXT_LEN);
        aad[..HEADER_LEN].copy_from_slice(&plain[..HEADER_LEN]);
        aad[5] |= SEALED << 4;
        let ext = &mut aad[HEADER_LEN..];
        ext[..4].copy_from_slice(&self.key_id.to_le_bytes());
        ext[4..12].copy_from_slice(&self.sender.to_le_bytes());
        ext[12..].copy_from_slice(&counter.to_le_bytes());
        // Encrypted straight from `plain` into `out` (one pass over the body, no copy
        // first), the tag after it.
        let (body, tag) = rest.split_at_mut(plain.len() - HEADER_LEN);
        self.key
            .seal_out_of_place_scatter(
                nonce(counter),
                Aad::from(&aad[..]),
                &plain[HEADER_LEN..],
                body,
                &[],
                tag,
            )
            .ok()?;
        Some(n)
    }
}

/// The counters a sender has used: the highest, and which of the
/// [`REPLAY_WINDOW`] before it.
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    /// One past the highest counter accepted (0: none yet).
    top: u64,
    /// Bit `i`: counter `top - 1 - i` was accepted.
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn fresh(&self, counter: u64) -> bool {
        if counter >= self.top {
            return true;
        }
        let back = self.top - 1 - counter;
        back < REPLAY_WINDOW && self.seen[(back / 64) as usize] & (1 << (back % 64)) == 0
    }

    fn accept(&mut self, counter: u64) {
        if counter >= self.top {
            let shift = counter - self.top + 1;
            self.shift(shift);
            self.top = counter + 1;
        }
        let back = self.top - 1 - counter;
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }

    /// Moves the window `by` counters up.
    fn shift(&mut self, by: u64) {
        let words = self.seen.len();
        if by >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let (w, b) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..words).rev() {
            let lo = if i >= w { self.seen[i - w] } else { 0 };
            let carry = if b > 0 && i > w {
                self.seen[i - w - 1] >> (64 - b)
            } else {
                0
            };
            self.seen[i] = if b > 0 { (lo << b) | carry } else { lo };
        }
    }
}

struct SenderState {
    key: LessSafeKey,
    window: ReplayWindow,
    last_used: u64,
}

/// Opens the datagrams of every sender heard on one socket (one thread).
pub struct Opener {
    keys: Vec<GroupKey>,
    senders: HashMap<(u32, u64), SenderState>,
    /// Ticks per datagram opened (for least-recently-heard eviction).
    clock: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("keys", &self.keys.len())
            .field("senders", &self.senders.len())
            .finish()
    }
}

impl Opener {
    /// Senders it keeps a replay window for.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Checks and decrypts the sealed datagram in `buf` in place; on success returns
    /// the range of `buf` holding the plain datagram (header, then body). On failure
    /// nothing changed but `buf`'s bytes (the datagram is to be dropped).
    /// `now` is the time in seconds since the UNIX epoch (a previous key is refused
    /// after its `until`).
    pub fn open(&mut self, now: u64, buf: &mut [u8]) -> Result<std::ops::Range<usize>, SealError> {
        let n = buf.len();
        let s = self.check(now, buf)?;
        let (aad, rest) = buf.split_at_mut(HEADER_LEN + EXT_LEN);
        self.key_of(&s)?
            .open_in_place(nonce(s.counter), Aad::from(&aad[..]), rest)
            .map_err(|_| SealError::AuthFailed)?;
        self.accept(s);
        // The plain datagram: the header moved up against the body, unflagged.
        buf.copy_within(..HEADER_LEN, EXT_LEN);
        buf[EXT_LEN + 5] &= 0x7f;
        Ok(EXT_LEN..n - TAG_LEN)
    }

    /// Like [`Opener::open`], but leaves `sealed` as it is (a receive buffer) and
    /// decrypts into `out` in the same pass: returns the plain datagram's length in
    /// `out` (`sealed.len() - OVERHEAD`). `out` shorter than that: refused as
    /// [`SealError::AuthFailed`], nothing changed.
    pub fn open_into(
        &mut self,
        now: u64,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let plain = sealed
            .len()
            .checked_sub(OVERHEAD)
            .filter(|&p| p <= out.len())
            .ok_or(SealError::AuthFailed)?;
        let s = self.check(now, sealed)?;
        let body = HEADER_LEN + EXT_LEN;
        let (aad, rest) = sealed.split_at(body);
        let (cipher, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (head, out_body) = out[..plain].split_at_mut(HEADER_LEN);
        self.key_of(&s)?
            .open_separate_gather(nonce(s.counter), Aad::from(aad), cipher, tag, out_body)
            .map_err(|_| SealError::AuthFailed)?;
        self.accept(s);
        head.copy_from_slice(&sealed[..HEADER_LEN]);
        head[5] &= 0x7f;
        Ok(plain)
    }

    /// What a sealed datagram claims (key, sender, counter), refused when it cannot
    /// be opened: too short, not sealed, an unknown or expired key, a replay. Changes
    /// nothing.
    fn check(&self, now: u64, buf: &[u8]) -> Result<Claim, SealError> {
        if buf.len() < HEADER_LEN + OVERHEAD || (buf[5] >> 4) & SEALED == 0 {
            return Err(SealError::AuthFailed);
        }
        let ext = &buf[HEADER_LEN..HEADER_LEN + EXT_LEN];
        let key_id = u32::from_le_bytes([ext[0], ext[1], ext[2], ext[3]]);
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&ext[4..12]);
        let sender = u64::from_le_bytes(b8);
        b8.copy_from_slice(&ext[12..20]);
        let counter = u64::from_le_bytes(b8);
        let group = self
            .keys
            .iter()
            .enumerate()
            .find(|(i, k)| k.id == key_id && (*i == 0 || k.until.is_none_or(|u| u > now)))
            .map(|(_, k)| k)
            .ok_or(SealError::UnknownKey(key_id))?;
        let known = self.senders.get(&(key_id, sender));
        if known.is_some_and(|s| !s.window.fresh(counter)) {
            return Err(SealError::Replayed);
        }
        // A new sender's key is derived, but kept only once a datagram of it opens.
        let derived = known.is_none().then(|| sender_key(group, sender));
        Ok(Claim {
            key_id,
            sender,
            counter,
            derived,
        })
    }

    /// The key that opens what `c` claims (always one: `check` derives a key for
    /// every sender it does not know).
    fn key_of<'a>(&'a self, c: &'a Claim) -> Result<&'a LessSafeKey, SealError> {
        match &c.derived {
            Some(k) => Ok(k),
            None => self
                .senders
                .get(&(c.key_id, c.sender))
                .map(|s| &s.key)
                .ok_or(SealError::AuthFailed),
        }
    }

    /// Records a datagram that opened: its sender's window moves (a new sender is
    /// kept, the least recently heard making room).
    fn accept(&mut self, c: Claim) {
        let Claim {
            key_id,
            sender,
            counter,
            derived,
        } = c;
        self.clock += 1;
        let clock = self.clock;
        if let Some(s) = self.senders.get_mut(&(key_id, sender)) {
            s.window.accept(counter);
            s.last_used = clock;
            return;
        }
        let Some(key) = derived else { return };
        if self.senders.len() >= MAX_SENDERS {
            let oldest = self
                .senders
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            if let Some(o) = oldest {
                self.senders.remove(&o);
            }
        }
        let mut window = ReplayWindow::default();
        window.accept(counter);
        self.senders.insert(
            (key_id, sender),
            SenderState {
                key,
                window,
                last_used: clock,
            },
        );
    }
}

/// A sealed datagram's claims, checked against the opener's state.
struct Claim {
    key_id: u32,
    sender: u64,
    counter: u64,
    /// A new sender's key, derived (a known sender's is in the opener).
    derived: Option<LessSafeKey>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, Kind, Nak, NAK_LEN};

    fn datagram(body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; HEADER_LEN];
        Header {
            kind: Kind::Data,
            count: 1,
            session: 7,
            network: 9,
            seq: 3,
            msg_seq: 4,
        }
        .encode(&mut h);
        let mut d = h.to_vec();
        d.extend_from_slice(body);
        d
    }

    fn sealed(s: &mut Sealer, plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + OVERHEAD];
        assert_eq!(s.seal(plain, &mut out), Some(out.len()));
        out
    }

    #[test]
    fn a_sealed_datagram_opens_to_the_same_bytes_once() {
        let ring = Keyring::generate().unwrap();
        let mut s = ring.sealer();
        let mut o = ring.opener();
        let plain = datagram(b"hello, group");
        let mut a = sealed(&mut s, &plain);
        assert_ne!(
            &a[HEADER_LEN + EXT_LEN..a.len() - TAG_LEN],
            &plain[HEADER_LEN..]
        );
        let copy = a.clone();
        let r = o.open(0, &mut a).unwrap();
        assert_eq!(&a[r], &plain[..]);
        // the same datagram again: a replay
        let mut again = copy;
        assert_eq!(o.open(0, &mut again), Err(SealError::Replayed));
    }

    #[test]
    fn opening_into_another_buffer_checks_as_much_and_leaves_the_datagram() {
        let ring = Keyring::generate().unwrap();
        let mut s = ring.sealer();
        let mut o = ring.opener();
        let plain = datagram(&[9u8; 1000]);
        let good = sealed(&mut s, &plain);
        // Too small an output: refused, and the datagram still opens afterwards.
        let mut small = vec![0u8; plain.len() - 1];
        assert_eq!(
            o.open_into(0, &good, &mut small),
            Err(SealError::AuthFailed)
        );
        // Every single-bit mutation and every truncation is refused, nothing written
        // that counts (the window does not move: the good one opens after them).
        let mut out = vec![0u8; plain.len() + 64];
        for i in (0..good.len()).step_by(7) {
            let mut m = good.clone();
            m[i] ^= 0x10;
            assert!(o.open_into(0, &m, &mut out).is_err(), "byte {i} accepted");
        }
        for len in (0..good.len()).step_by(13) {
            assert!(
                o.open_into(0, &good[..len], &mut out).is_err(),
                "cut to {len}"
            );
        }
        assert_eq!(o.open_into(0, &good, &mut out), Ok(plain.len()));
        assert_eq!(&out[..plain.len()], &plain[..]);
        assert_eq!(
            o.open_into(0, &good, &mut out),
            Err(SealError::Replayed),
            "a replay"
        );
        // The next datagram opens the same way in place and into a buffer.
        let next = sealed(&mut s, &plain);
        let mut in_place = next.clone();
        let r = ring.opener().open(0, &mut in_place).unwrap();
        assert_eq!(ring.opener().open_into(0, &next, &mut out), Ok(r.len()));
        assert_eq!(&out[..r.len()], &in_place[r]);
    }

    #[test]
    fn every_mutation_truncation_and_forgery_fails() {
        let ring = Keyring::generate().unwrap();
        let mut s = ring.sealer();
        let plain = datagram(&[5u8; 100]);
        let good = sealed(&mut s, &plain);
        for i in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = good.clone();
                m[i] ^= bit;
                let r = ring.opener().open(0, &mut m);
                assert!(r.is_err(), "byte {i} bit {bit:#x} accepted");
            }
        }
        for len in 0..good.len() {
            let mut t = good[..len].to_vec();
            assert!(ring.opener().open(0, &mut t).is_err(), "truncated to {len}");
        }
        // unsealed, and sealed under another group's key
        let mut p = plain.clone();
        assert_eq!(ring.opener().open(0, &mut p), Err(SealError::AuthFailed));
        let other = Keyring::generate().unwrap();
        let mut foreign = sealed(&mut other.sealer(), &plain);
        assert!(matches!(
            ring.opener().open(0, &mut foreign),
            Err(SealError::UnknownKey(_))
        ));
        // same key id, other key bytes: a forgery
        let mut forged_ring = other.clone();
        forged_ring.keys[0].id = ring.current_id();
        let mut forged = sealed(&mut forged_ring.sealer(), &plain);
        assert_eq!(
            ring.opener().open(0, &mut forged),
            Err(SealError::AuthFailed)
        );
    }

    #[test]
    fn the_replay_window_takes_reordering_and_refuses_repeats_and_the_too_old() {
        let ring = Keyring::generate().unwrap();
        let mut s = ring.sealer();
        let mut o = ring.opener();
        let all: Vec<Vec<u8>> = (0..3000).map(|_| sealed(&mut s, &datagram(b"x"))).collect();
        // out of order within the window: all accepted, each once
        for (i, d) in all[1000..2000].iter().enumerate().rev() {
            assert!(o.open(0, &mut d.clone()).is_ok(), "{i}");
        }
        for (i, d) in all[1000..2000].iter().enumerate() {
            assert_eq!(o.open(0, &mut d.clone()), Err(SealError::Replayed), "{i}");
        }
        // older than the window below the highest (1999)
        assert_eq!(o.open(0, &mut all[900].clone()), Err(SealError::Replayed));
        // a jump forward, then what it left behind within the window
        assert!(o.open(0, &mut all[2999].clone()).is_ok());
        assert!(o.open(0, &mut all[2500].clone()).is_ok());
        assert_eq!(o.open(0, &mut all[1990].clone()), Err(SealError::Replayed));
    }

    #[test]
    fn rotation_accepts_the_previous_key_until_its_time() {
        let old = Keyring::generate().unwrap();
        let mid = old.with_next().unwrap();
        assert_eq!(mid.current_id(), old.current_id());
        let new = mid.rotated(60).unwrap();
        assert_eq!(new.current_id(), mid.keys[1].id, "the added key seals");
        let plain = datagram(b"rotating");
        let from_old = sealed(&mut old.sealer(), &plain);
        let from_new = sealed(&mut new.sealer(), &plain);
        // a node on mid opens both; one on old refuses the new key
        assert!(mid.opener().open(0, &mut from_new.clone()).is_ok());
        assert!(matches!(
            old.opener().open(0, &mut from_new.clone()),
            Err(SealError::UnknownKey(_))
        ));
        // a node on new opens the old key within the overlap, not after it
        let now = unix_now();
        assert!(new.opener().open(now, &mut from_old.clone()).is_ok());
        assert!(matches!(
            new.opener().open(now + 61, &mut from_old.clone()),
            Err(SealError::UnknownKey(_))
        ));
        // the file round-trips
        assert_eq!(Keyring::parse(&new.to_file()).unwrap(), new);
    }

    #[test]
    fn key_files_are_checked() {
        let good = Keyring::generate().unwrap().to_file();
        assert!(Keyring::parse(&good).is_ok());
        for bad in [
            "",
            "ringcast-key 1\n",
            "ringcast-key 2\nkey 00000001 00\n",
            &good.replace("key ", "kee "),
            &format!("{good}{}", good.lines().last().unwrap_or("")),
        ] {
            assert!(Keyring::parse(bad).is_err(), "{bad:?}");
        }
        let dbg = format!("{:?}", Keyring::parse(&good).unwrap());
        let key_hex = good.lines().last().unwrap().split(' ').nth(2).unwrap();
        assert!(!dbg.contains(key_hex), "Debug shows the key");
    }

    #[test]
    fn senders_are_bounded() {
        let ring = Keyring::generate().unwrap();
        let mut o = ring.opener();
        for _ in 0..MAX_SENDERS + 10 {
            let mut d = sealed(&mut ring.sealer(), &datagram(b"y"));
            o.open(0, &mut d).unwrap();
        }
        assert_eq!(o.senders(), MAX_SENDERS);
        // a NAK-sized control datagram seals too
        let mut nak = [0u8; NAK_LEN];
        Nak {
            session: 1,
            from: 0,
            to: 1,
            receiver: 2,
        }
        .encode(&mut nak);
        let mut d = sealed(&mut ring.sealer(), &nak);
        let r = o.open(0, &mut d).unwrap();
        assert_eq!(&d[r], &nak[..]);
    }
}
