//! Sans-IO wire codec: the datagram header and the message frames behind it.
//!
//! ```text
//! datagram = header (32 bytes) frame{count}
//! header   = magic "RCST" | version u8 (2) | kind u8 (low nibble; high nibble flags:
//!            1 = the session keeps a last-value cache) | count u16 | session u32
//!            | network u32 | seq u64 | msg_seq u64                   (little-endian)
//! frame    = len u32 | topic_len u16 | flags u8 | ext u8 (1 expiry, 2 snapshot,
//!            4 first of a snapshot burst)
//!            [ total_len u32 | offset u32 ]   only when the frame is a fragment
//!            [ expires_us u64 ]               only when ext has bit 0 (a TTL)
//!            topic (topic_len bytes, UTF-8) | payload (len bytes)
//! ```
//!
//! `seq` numbers datagrams per session (gap detection); `msg_seq` is the sequence
//! number of the first message that starts or continues in the datagram, so the
//! receiver knows exactly which messages a gap swallowed. A message that does not fit
//! one datagram is split into fragments, one per datagram, each carrying the topic,
//! the message's total length and the fragment's offset.
//!
//! Decoding validates every length and offset before anything is handed out; a
//! datagram that fails is rejected whole with a [`WireError`].

mod announce;
mod control;
mod frame;
mod header;
mod peer_list;

#[cfg(feature = "fuzzing")]
pub(crate) use announce::cut;
pub use announce::{Announce, MAX_ANNOUNCE, MAX_NAME};
pub use control::{Control, Heartbeat, Nak, Status, HEARTBEAT_LEN, NAK_LEN, STATUS_LEN};
pub use frame::{
    encode_frame, encode_frame_ext, encode_frame_head_ext, frame_len_ext, Fragment, Frame, Frames,
    EXPIRY_EXT_LEN, FRAGMENT_EXT_LEN, FRAME_HEADER_LEN, SNAPSHOT, SNAPSHOT_FIRST,
};
pub use header::{
    header_flags, stamp_flags, stamp_network, Header, Kind, CACHE_FLAG, HEADER_LEN, MAX_SEQ,
};
pub use peer_list::{decode_peer_list, encode_peer_list, MAX_PEER_LIST};

/// Why a datagram was rejected. Each variant is counted by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header.
    #[error("datagram of {0} bytes is shorter than the header")]
    Truncated(usize),
    /// The first four bytes are not the magic.
    #[error("bad magic")]
    BadMagic,
    /// A protocol version this build does not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// An unknown datagram kind.
    #[error("unknown datagram kind {0}")]
    BadKind(u8),
    /// A frame header or body runs past the end of the datagram.
    #[error("frame {index} runs past the end of the datagram")]
    FramePastEnd {
        /// Index of the offending frame.
        index: u16,
    },
    /// The header's frame count does not match the frames present.
    #[error("header says {declared} frames, datagram holds {found}")]
    CountMismatch {
        /// Count in the header.
        declared: u16,
        /// Frames actually parsed before the bytes ran out (or trailing bytes found).
        found: u16,
    },
    /// A topic is not valid UTF-8.
    #[error("topic is not UTF-8")]
    BadTopic,
    /// A sequence number beyond [`MAX_SEQ`] (no session ever gets there: 2^62
    /// datagrams at a billion a second take 146 years), so that `seq + n` arithmetic on
    /// what came off the wire can never overflow.
    #[error("sequence number {0} out of range")]
    SeqOutOfRange(u64),
    /// A fragment's offset/length lies outside its message, or the message exceeds the
    /// configured maximum, or a fragment shares its datagram with other frames.
    #[error("fragment out of range")]
    FragmentOutOfRange,
    /// A data datagram without frames.
    #[error("empty data datagram")]
    Empty,
}
