//! Layout of one benchmark message, shared by every system.
//!
//! ```text
//! bytes 0..8    sequence number, little endian (bit 63 set = warm-up message)
//! bytes 8..16   send timestamp, CLOCK_MONOTONIC ns, little endian
//!               (full-speed mode: read just before the send call;
//!                rate mode: the *intended* send time on the schedule)
//! bytes 16..    payload pattern derived from the sequence number
//! ```
//!
//! The payload is a window into a fixed pseudo-random byte stream, starting at an
//! offset derived from the sequence number. Filling and checking it is a `memcpy`
//! / `memcmp`, so verification costs the subscriber little, and a payload that
//! belongs to another sequence number (or is stale, truncated or zeroed) fails.

/// Length of the sequence + timestamp header.
pub const HEADER_LEN: usize = 16;
/// Bit set in the sequence number of warm-up messages (sent before the counted run).
pub const WARMUP_FLAG: u64 = 1 << 63;
/// Number of distinct payload windows; prime, so neighbouring sequences differ.
const PERIOD: usize = 251;

/// What a received buffer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A counted message whose header and payload verified.
    Counted { seq: u64, stamp: u64 },
    /// A warm-up message whose payload verified.
    Warmup,
    /// Wrong length or a payload that does not match its sequence number.
    Corrupt,
}

/// Builds and checks messages of one fixed size.
#[derive(Debug, Clone)]
pub struct Pattern {
    size: usize,
    stream: Vec<u8>,
}

impl Pattern {
    /// A pattern for messages of `size` bytes (at least [`HEADER_LEN`]).
    pub fn new(size: usize) -> Self {
        assert!(size >= HEADER_LEN, "message size must be >= {HEADER_LEN}");
        let body = size - HEADER_LEN;
        let mut stream = Vec::with_capacity(body + PERIOD);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while stream.len() < body + PERIOD {
            // xorshift64*: a cheap non-periodic byte stream.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            stream.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        stream.truncate(body + PERIOD);
        Pattern { size, stream }
    }

    fn body(&self, seq: u64) -> &[u8] {
        let off = (seq % PERIOD as u64) as usize;
        &self.stream[off..off + self.size - HEADER_LEN]
    }

    /// Write message `seq` stamped `stamp_ns` into `buf` (exactly `size` bytes).
    #[inline]
    pub fn fill(&self, buf: &mut [u8], seq: u64, stamp_ns: u64) {
        buf[0..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&stamp_ns.to_le_bytes());
        buf[HEADER_LEN..self.size].copy_from_slice(self.body(seq));
    }

    /// Verify a received message.
    #[inline]
    pub fn decode(&self, msg: &[u8]) -> Decoded {
        if msg.len() != self.size {
            return Decoded::Corrupt;
        }
        let raw = u64::from_le_bytes(msg[0..8].try_into().expect("8 bytes"));
        let stamp = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
        if msg[HEADER_LEN..] != *self.body(raw) {
            return Decoded::Corrupt;
        }
        if raw & WARMUP_FLAG != 0 {
            Decoded::Warmup
        } else {
            Decoded::Counted { seq: raw, stamp }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let p = Pattern::new(1024);
        let mut buf = vec![0u8; 1024];
        p.fill(&mut buf, 42, 7_000);
        assert_eq!(
            p.decode(&buf),
            Decoded::Counted {
                seq: 42,
                stamp: 7_000
            }
        );
        // A payload byte flipped.
        buf[500] ^= 1;
        assert_eq!(p.decode(&buf), Decoded::Corrupt);
        // The header of one message on the payload of its neighbour.
        p.fill(&mut buf, 43, 1);
        buf[0..8].copy_from_slice(&42u64.to_le_bytes());
        assert_eq!(p.decode(&buf), Decoded::Corrupt);
        // Truncated.
        p.fill(&mut buf, 43, 1);
        assert_eq!(p.decode(&buf[..1000]), Decoded::Corrupt);
        // Warm-up.
        p.fill(&mut buf, 3 | WARMUP_FLAG, 1);
        assert_eq!(p.decode(&buf), Decoded::Warmup);
    }

    #[test]
    fn minimal_size() {
        let p = Pattern::new(HEADER_LEN);
        let mut buf = [0u8; HEADER_LEN];
        p.fill(&mut buf, 5, 6);
        assert_eq!(p.decode(&buf), Decoded::Counted { seq: 5, stamp: 6 });
    }
}
