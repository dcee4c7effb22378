//! The send stamp `send --stamp` puts at the start of each payload and
//! `listen --latency` reads: 8 bytes of magic (starting with a NUL, so no text
//! message begins with it by accident) and the send time, nanoseconds since the Unix
//! epoch on the sender's `CLOCK_REALTIME`, little-endian. One-way latency across
//! hosts is only as good as their clocks' synchronisation (PTP, NTP); on one host it
//! is exact.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"\0rcstamp";
/// Bytes a stamp takes at the start of a payload.
pub const LEN: usize = 16;

/// Now on `CLOCK_REALTIME`, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Appends a stamp for now to `buf`.
pub fn push(buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&now_ns().to_le_bytes());
}

/// The stamp a payload starts with, if any, and the rest of the payload.
pub fn split(payload: &[u8]) -> (Option<u64>, &[u8]) {
    match payload.split_at_checked(LEN) {
        Some((head, rest)) if head.starts_with(MAGIC) => {
            let mut t = [0u8; 8];
            t.copy_from_slice(&head[8..]);
            (Some(u64::from_le_bytes(t)), rest)
        }
        _ => (None, payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_and_plain_payloads_have_none() {
        let mut b = Vec::new();
        push(&mut b);
        b.extend_from_slice(b"hello");
        let (t, rest) = split(&b);
        assert!(t.is_some_and(|t| t > 1_600_000_000_000_000_000));
        assert_eq!(rest, b"hello");
        assert_eq!(split(b"hello"), (None, &b"hello"[..]));
        assert_eq!(split(b"\0rcstam"), (None, &b"\0rcstam"[..]));
        assert_eq!(split(&b[..LEN - 1]), (None, &b[..LEN - 1]));
    }
}
