//! The fixed 32-byte datagram header.

use super::WireError;

/// First four bytes of every ringcast datagram.
pub const MAGIC: [u8; 4] = *b"RCST";
/// The protocol version this build speaks (2: the network ID replaced the reserved
/// flags and stream fields).
pub const VERSION: u8 = 2;
/// Size of the encoded header.
pub const HEADER_LEN: usize = 32;
/// Largest sequence number (datagram or message) a valid datagram carries.
pub const MAX_SEQ: u64 = 1 << 62;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Message frames.
    Data = 1,
    /// A receiver's status (flow control), on the control port.
    Status = 2,
    /// A publisher's heartbeat, on the data port.
    Heartbeat = 3,
    /// A receiver's retransmission request, on the control port.
    Nak = 4,
    /// A node's announcement (or leave) on the discovery group.
    Announce = 5,
    /// The addresses of the peers a node knows, sent by unicast to a newcomer (so a
    /// seed relays the directory).
    PeerList = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Result<Kind, WireError> {
        match v {
            1 => Ok(Kind::Data),
            2 => Ok(Kind::Status),
            3 => Ok(Kind::Heartbeat),
            4 => Ok(Kind::Nak),
            5 => Ok(Kind::Announce),
            6 => Ok(Kind::PeerList),
            other => Err(WireError::BadKind(other)),
        }
    }
}

/// A decoded datagram header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Datagram kind.
    pub kind: Kind,
    /// Number of frames that follow.
    pub count: u16,
    /// Publisher session (one per sending node, random).
    pub session: u32,
    /// The sender's network ID: nodes of other networks ignore the datagram (counted).
    pub network: u32,
    /// Datagram sequence number within the session.
    pub seq: u64,
    /// Sequence number of the first message that starts or continues here.
    pub msg_seq: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    ///
    /// `out` must be at least `HEADER_LEN` long (the writer guarantees it).
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..12].copy_from_slice(&self.session.to_le_bytes());
        out[12..16].copy_from_slice(&self.network.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.msg_seq.to_le_bytes());
    }

    /// Parses and checks the header at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Header, WireError> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Truncated(buf.len()))?;
        if h[0..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(WireError::BadVersion(h[4]));
        }
        let seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        let msg_seq = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
        if seq > MAX_SEQ || msg_seq > MAX_SEQ {
            return Err(WireError::SeqOutOfRange(seq.max(msg_seq)));
        }
        Ok(Header {
            kind: Kind::from_u8(h[5] & 0x0f)?,
            count: u16::from_le_bytes([h[6], h[7]]),
            session: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            network: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            seq,
            msg_seq,
        })
    }
}

/// Header flag (high nibble of the kind byte) on a session's data and heartbeats: its
/// publisher keeps a last-value cache, so a receiver joining late waits for the
/// snapshot burst instead of starting live.
pub const CACHE_FLAG: u8 = 0x1;

/// The flags of an encoded datagram's header (0 when too short).
pub fn header_flags(datagram: &[u8]) -> u8 {
    datagram.get(5).map_or(0, |k| k >> 4)
}

/// Sets `flags` in an encoded datagram's header (shorter buffers are left alone).
pub fn stamp_flags(datagram: &mut [u8], flags: u8) {
    if let Some(k) = datagram.get_mut(5) {
        *k = (*k & 0x0f) | (flags << 4);
    }
}

/// Writes `network` into an encoded datagram's header (control messages are encoded
/// without one, then stamped by whoever sends them). Shorter buffers are left alone.
pub fn stamp_network(datagram: &mut [u8], network: u32) {
    if let Some(b) = datagram.get_mut(12..16) {
        b.copy_from_slice(&network.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            kind: Kind::Data,
            count: 3,
            session: 0xdead_beef,
            network: 0x1234_5678,
            seq: MAX_SEQ,
            msg_seq: 42,
        }
    }

    #[test]
    fn round_trip() {
        let mut b = [0u8; HEADER_LEN];
        sample().encode(&mut b);
        assert_eq!(Header::decode(&b), Ok(sample()));
        stamp_network(&mut b, 9);
        assert_eq!(Header::decode(&b).map(|h| h.network), Ok(9));
        stamp_network(&mut b[..10], 9); // too short: untouched, no panic
    }

    #[test]
    fn rejects_short_bad_magic_version_kind() {
        let mut b = [0u8; HEADER_LEN];
        sample().encode(&mut b);
        assert_eq!(Header::decode(&b[..31]), Err(WireError::Truncated(31)));
        assert_eq!(Header::decode(&[]), Err(WireError::Truncated(0)));
        let mut m = b;
        m[0] = b'X';
        assert_eq!(Header::decode(&m), Err(WireError::BadMagic));
        let mut v = b;
        v[4] = 9;
        assert_eq!(Header::decode(&v), Err(WireError::BadVersion(9)));
        let mut k = b;
        k[5] = 0;
        assert_eq!(Header::decode(&k), Err(WireError::BadKind(0)));
    }

    #[test]
    fn rejects_sequence_numbers_that_could_overflow() {
        for (seq, msg_seq) in [(MAX_SEQ + 1, 0), (0, u64::MAX), (u64::MAX, u64::MAX)] {
            let mut b = [0u8; HEADER_LEN];
            Header {
                seq,
                msg_seq,
                ..sample()
            }
            .encode(&mut b);
            assert_eq!(
                Header::decode(&b),
                Err(WireError::SeqOutOfRange(seq.max(msg_seq)))
            );
        }
    }
}
