//! Control messages: header-only datagrams with a small fixed body.
//!
//! ```text
//! Status    (receiver → publisher, control port): header(kind 2, session = the
//!           publisher's, seq = next datagram expected, msg_seq = 1 when it waits
//!           for a last-value snapshot) | receiver u64 | window u32 |
//!           tag u32 (flow-control tag, 0 = untagged)
//! Heartbeat (publisher → receivers, data port): header(kind 3, session, seq = next
//!           datagram seq, msg_seq = next message seq) | oldest retransmittable seq u64
//! Nak       (receiver → publisher, control port): header(kind 4, session = the
//!           publisher's, seq = first missing) | end (exclusive) u64 | receiver u64
//! ```
//! Status and NAKs travel on the group's control port (data port + 1), so every
//! publisher on the group hears them and keeps those addressed to its session.

use super::{Header, Kind, WireError, HEADER_LEN, MAX_SEQ};

fn header(kind: Kind, session: u32, seq: u64, msg_seq: u64) -> [u8; HEADER_LEN] {
    let mut head = [0u8; HEADER_LEN];
    Header {
        kind,
        count: 0,
        session,
        network: 0,
        seq,
        msg_seq,
    }
    .encode(&mut head);
    head
}

/// Checks a control message's header: its kind, no frames, and exactly `len` bytes.
fn check(bytes: &[u8], kind: Kind, len: usize) -> Result<Header, WireError> {
    let h = Header::decode(bytes)?;
    if h.kind != kind {
        return Err(WireError::BadKind(h.kind as u8));
    }
    if bytes.len() != len || h.count != 0 {
        return Err(WireError::CountMismatch {
            declared: h.count,
            found: 0,
        });
    }
    Ok(h)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

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
    /// The receiver's flow-control tag (0 = untagged), for publishers using
    /// [`FlowControlStrategy::Tagged`](crate::FlowControlStrategy::Tagged).
    pub tag: u32,
    /// The receiver joined the session late and waits for a last-value snapshot
    /// (carried as the header's `msg_seq`, 1 or 0).
    pub snapshot: bool,
}

impl Status {
    /// Encodes into `out`.
    pub fn encode(&self, out: &mut [u8; STATUS_LEN]) {
        out[..HEADER_LEN].copy_from_slice(&header(
            Kind::Status,
            self.session,
            self.next_seq,
            u64::from(self.snapshot),
        ));
        out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&self.receiver.to_le_bytes());
        out[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&self.window.to_le_bytes());
        out[HEADER_LEN + 12..].copy_from_slice(&self.tag.to_le_bytes());
    }

    /// Decodes and checks a status message.
    pub fn decode(bytes: &[u8]) -> Result<Status, WireError> {
        let h = check(bytes, Kind::Status, STATUS_LEN)?;
        Ok(Status {
            session: h.session,
            receiver: u64_at(bytes, HEADER_LEN),
            next_seq: h.seq,
            window: u32_at(bytes, HEADER_LEN + 8),
            tag: u32_at(bytes, HEADER_LEN + 12),
            snapshot: h.msg_seq == 1,
        })
    }
}

/// Encoded size of a heartbeat.
pub const HEARTBEAT_LEN: usize = HEADER_LEN + 8;

/// A publisher's "still here, and this is how far I have sent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The publishing session.
    pub session: u32,
    /// The sequence number its next data datagram will carry.
    pub next_seq: u64,
    /// The sequence number its next message will carry.
    pub next_msg_seq: u64,
    /// The oldest datagram it can still retransmit (`next_seq` when none).
    pub oldest: u64,
}

impl Heartbeat {
    /// Encodes into `out`.
    pub fn encode(&self, out: &mut [u8; HEARTBEAT_LEN]) {
        out[..HEADER_LEN].copy_from_slice(&header(
            Kind::Heartbeat,
            self.session,
            self.next_seq,
            self.next_msg_seq,
        ));
        out[HEADER_LEN..].copy_from_slice(&self.oldest.to_le_bytes());
    }

    /// Decodes and checks a heartbeat.
    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, WireError> {
        let h = check(bytes, Kind::Heartbeat, HEARTBEAT_LEN)?;
        let oldest = u64_at(bytes, HEADER_LEN);
        if oldest > h.seq {
            return Err(WireError::FragmentOutOfRange);
        }
        Ok(Heartbeat {
            session: h.session,
            next_seq: h.seq,
            next_msg_seq: h.msg_seq,
            oldest,
        })
    }
}

/// Encoded size of a NAK.
pub const NAK_LEN: usize = HEADER_LEN + 16;

/// A receiver's request to retransmit datagrams `from..to` of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nak {
    /// The publishing session addressed.
    pub session: u32,
    /// First missing datagram.
    pub from: u64,
    /// One past the last missing datagram.
    pub to: u64,
    /// The receiver asking.
    pub receiver: u64,
}

impl Nak {
    /// Encodes into `out`.
    pub fn encode(&self, out: &mut [u8; NAK_LEN]) {
        out[..HEADER_LEN].copy_from_slice(&header(Kind::Nak, self.session, self.from, 0));
        out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&self.to.to_le_bytes());
        out[HEADER_LEN + 8..].copy_from_slice(&self.receiver.to_le_bytes());
    }

    /// Decodes and checks a NAK (a range must not be empty or reversed).
    pub fn decode(bytes: &[u8]) -> Result<Nak, WireError> {
        let h = check(bytes, Kind::Nak, NAK_LEN)?;
        let to = u64_at(bytes, HEADER_LEN);
        if to <= h.seq {
            return Err(WireError::FragmentOutOfRange);
        }
        if to > MAX_SEQ {
            return Err(WireError::SeqOutOfRange(to));
        }
        Ok(Nak {
            session: h.session,
            from: h.seq,
            to,
            receiver: u64_at(bytes, HEADER_LEN + 8),
        })
    }
}

/// A decoded message from the control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Flow control.
    Status(Status),
    /// A retransmission request.
    Nak(Nak),
}

impl Control {
    /// Decodes whichever control message `bytes` holds.
    pub fn decode(bytes: &[u8]) -> Result<Control, WireError> {
        match Header::decode(bytes)?.kind {
            Kind::Status => Status::decode(bytes).map(Control::Status),
            Kind::Nak => Nak::decode(bytes).map(Control::Nak),
            other => Err(WireError::BadKind(other as u8)),
        }
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
            tag: 0xdead_beef,
            snapshot: false,
        };
        let mut b = [0u8; STATUS_LEN];
        s.encode(&mut b);
        assert_eq!(Status::decode(&b), Ok(s));
        let waiting = Status {
            snapshot: true,
            ..s
        };
        waiting.encode(&mut b);
        assert_eq!(Status::decode(&b), Ok(waiting));
        s.encode(&mut b);
        assert_eq!(b[HEADER_LEN + 12..], 0xdead_beef_u32.to_le_bytes());
        // an untagged status keeps the old layout: zero after the window
        let mut untagged = [0xffu8; STATUS_LEN];
        Status { tag: 0, ..s }.encode(&mut untagged);
        assert_eq!(untagged[HEADER_LEN + 12..], [0; 4]);
        assert_eq!(Status::decode(&untagged).map(|d| d.tag), Ok(0));
        assert!(Status::decode(&b[..STATUS_LEN - 1]).is_err());
        let mut long = b.to_vec();
        long.push(0);
        assert!(Status::decode(&long).is_err());
        // a status is not data, and data is not a status
        assert_eq!(Frames::decode(&b, 1 << 20).unwrap_err(), WireError::Empty);
        let mut k = b;
        k[5] = 1;
        assert!(Status::decode(&k).is_err());
        assert_eq!(Control::decode(&b), Ok(Control::Status(s)));
    }

    #[test]
    fn heartbeat_and_nak_round_trip_and_reject_nonsense() {
        let hb = Heartbeat {
            session: 3,
            next_seq: 100,
            next_msg_seq: 5000,
            oldest: 40,
        };
        let mut b = [0u8; HEARTBEAT_LEN];
        hb.encode(&mut b);
        assert_eq!(Heartbeat::decode(&b), Ok(hb));
        assert!(
            Control::decode(&b).is_err(),
            "heartbeats belong on the data port"
        );
        let mut bad = hb;
        bad.oldest = 101;
        bad.encode(&mut b);
        assert!(Heartbeat::decode(&b).is_err());

        let nak = Nak {
            session: 3,
            from: 10,
            to: 12,
            receiver: 9,
        };
        let mut n = [0u8; NAK_LEN];
        nak.encode(&mut n);
        assert_eq!(Control::decode(&n), Ok(Control::Nak(nak)));
        let mut empty = nak;
        empty.to = 10;
        empty.encode(&mut n);
        assert!(Nak::decode(&n).is_err());
        assert!(Nak::decode(&n[..NAK_LEN - 1]).is_err());
    }
}
