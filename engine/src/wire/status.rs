//! Status messages: a receiver tells a publishing session how far it has got and how
//! many more datagrams it can take (flow control).
//!
//! ```text
//! header (kind = Status, session = the publisher's, seq = next datagram expected,
//!         msg_seq = 0, count = 0) | receiver u64 | window u32 | reserved u32
//! ```
//! Status messages travel on the group's control port (data port + 1), so every
//! publisher on the group hears them and keeps the ones addressed to its session.

use super::{Header, Kind, WireError, HEADER_LEN};

/// Encoded size of a status message.
pub const STATUS_LEN: usize = HEADER_LEN + 16;

/// A receiver's position and window for one publishing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The publishing session addressed.
    pub session: u32,
    /// The receiver (random per receiving node).
    pub receiver: u64,
    /// The next datagram sequence number the receiver expects.
    pub next_seq: u64,
    /// How many datagrams past `next_seq` it can take.
    pub window: u32,
}

impl Status {
    /// Encodes into `out`.
    pub fn encode(&self, out: &mut [u8; STATUS_LEN]) {
        let h = Header {
            kind: Kind::Status,
            flags: 0,
            session: self.session,
            stream: 0,
            count: 0,
            seq: self.next_seq,
            msg_seq: 0,
        };
        let mut head = [0u8; HEADER_LEN];
        h.encode(&mut head);
        out[..HEADER_LEN].copy_from_slice(&head);
        out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&self.receiver.to_le_bytes());
        out[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&self.window.to_le_bytes());
        out[HEADER_LEN + 12..].fill(0);
    }

    /// Decodes and checks a status message.
    pub fn decode(bytes: &[u8]) -> Result<Status, WireError> {
        let h = Header::decode(bytes)?;
        if h.kind != Kind::Status {
            return Err(WireError::BadKind(h.kind as u8));
        }
        if bytes.len() != STATUS_LEN || h.count != 0 {
            return Err(WireError::CountMismatch {
                declared: h.count,
                found: 0,
            });
        }
        let b = &bytes[HEADER_LEN..];
        Ok(Status {
            session: h.session,
            receiver: u64::from_le_bytes(
                b[0..8]
                    .try_into()
                    .map_err(|_| WireError::Truncated(bytes.len()))?,
            ),
            next_seq: h.seq,
            window: u32::from_le_bytes(
                b[8..12]
                    .try_into()
                    .map_err(|_| WireError::Truncated(bytes.len()))?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frames;

    #[test]
    fn round_trip_and_rejections() {
        let s = Status {
            session: 7,
            receiver: 0x1122_3344_5566_7788,
            next_seq: 1 << 40,
            window: 512,
        };
        let mut b = [0u8; STATUS_LEN];
        s.encode(&mut b);
        assert_eq!(Status::decode(&b), Ok(s));
        assert!(Status::decode(&b[..STATUS_LEN - 1]).is_err());
        let mut long = b.to_vec();
        long.push(0);
        assert!(Status::decode(&long).is_err());
        // a status is not data, and data is not a status
        assert_eq!(Frames::decode(&b, 1 << 20).unwrap_err(), WireError::Empty);
        let mut k = b;
        k[5] = 1;
        assert!(Status::decode(&k).is_err());
    }
}
