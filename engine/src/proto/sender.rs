//! Publisher side of a session: packs messages into datagrams, numbers them, and
//! splits messages too large for one datagram into fragments. No I/O, no clock.

use crate::wire::{
    encode_frame_ext, encode_frame_head_ext, frame_len_ext, Fragment, Header, Kind, EXPIRY_EXT_LEN,
    FRAGMENT_EXT_LEN, FRAME_HEADER_LEN, HEADER_LEN,
};

/// A reusable datagram buffer being filled with frames.
#[derive(Debug)]
pub struct DatagramBuf {
    buf: Box<[u8]>,
    len: usize,
    count: u16,
    msg_seq: u64,
    seq: Option<u64>,
}

impl DatagramBuf {
    /// A buffer for datagrams of up to `max_payload` bytes (allocated once).
    pub fn new(max_payload: usize) -> Self {
        DatagramBuf {
            buf: vec![0u8; max_payload.max(HEADER_LEN)].into_boxed_slice(),
            len: HEADER_LEN,
            count: 0,
            msg_seq: 0,
            seq: None,
        }
    }

    /// The sequence number it was sealed with (`None` until sealed).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Whether no frame has been written since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded datagram (valid after [`SenderStream::seal`]).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes of the buffer (a claimed payload, see [`SenderStream::begin`]).
    pub fn room(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.buf[r]
    }

    /// The same, read-only.
    pub fn room_ref(&self, r: std::ops::Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Empties the buffer for reuse.
    pub fn clear(&mut self) {
        self.len = HEADER_LEN;
        self.count = 0;
        self.seq = None;
    }
}

/// Outcome of [`SenderStream::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// The message was written into the datagram.
    Done,
    /// The datagram has no room left for it: seal it and append to an empty one.
    Full,
    /// The message is larger than any single datagram: send it with
    /// [`SenderStream::fragment`].
    TooLarge,
}

/// The numbering state of one publishing session.
#[derive(Debug)]
pub struct SenderStream {
    session: u32,
    network: u32,
    /// The deadline the next messages' frames carry (a publisher with a TTL).
    expires: Option<u64>,
    /// Snapshot bits the next frames carry (`SNAPSHOT`, `SNAPSHOT_FIRST`; the
    /// latter goes on one frame only).
    snapshot: u8,
    /// Headers say the session keeps a last-value cache.
    cache_flag: bool,
    max_payload: usize,
    next_seq: u64,
    next_msg_seq: u64,
}

impl SenderStream {
    /// A session sending datagrams of at most `max_payload` bytes.
    pub fn new(session: u32, max_payload: usize) -> Self {
        SenderStream {
            session,
            network: 0,
            expires: None,
            snapshot: 0,
            cache_flag: false,
            max_payload,
            next_seq: 0,
            next_msg_seq: 0,
        }
    }

    /// The same on network `network` (written in every header; 0 by default).
    pub fn with_network(mut self, network: u32) -> Self {
        self.network = network;
        self
    }

    /// The deadline (µs since the UNIX epoch) the frames of the messages appended
    /// from now on carry; `None`: no expiry. A fragmented message keeps one deadline
    /// for all its pieces (set it before its first).
    pub fn set_expiry(&mut self, expires: Option<u64>) {
        self.expires = expires;
    }

    /// The deadline the next frames carry.
    pub fn expiry(&self) -> Option<u64> {
        self.expires
    }

    /// The snapshot bits of the next frames (see [`crate::wire::SNAPSHOT`]); the
    /// first-of-burst bit is cleared once a frame carries it.
    pub fn set_snapshot(&mut self, bits: u8) {
        self.snapshot = bits;
    }

    /// From now on every header says the session keeps a last-value cache.
    pub fn set_cache_flag(&mut self) {
        self.cache_flag = true;
    }

    /// Whether headers say so.
    pub fn cache_flag(&self) -> bool {
        self.cache_flag
    }

    /// Marks the frame just encoded at `at` with the snapshot bits.
    fn mark(&mut self, buf: &mut [u8], at: usize) {
        if self.snapshot != 0 {
            if let Some(ext) = buf.get_mut(at + 7) {
                *ext |= self.snapshot;
            }
            self.snapshot &= !crate::wire::SNAPSHOT_FIRST;
        }
    }

    fn ext_len(&self) -> usize {
        if self.expires.is_some() {
            EXPIRY_EXT_LEN
        } else {
            0
        }
    }

    /// The network ID its datagrams carry.
    pub fn network(&self) -> u32 {
        self.network
    }

    /// Sequence number the next datagram will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The session id.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// A heartbeat for this session's current position.
    pub fn heartbeat(&self, oldest: u64) -> crate::wire::Heartbeat {
        crate::wire::Heartbeat {
            session: self.session,
            next_seq: self.next_seq,
            next_msg_seq: self.next_msg_seq,
            oldest: oldest.min(self.next_seq),
        }
    }

    /// Sequence number the next message will carry.
    #[cfg(test)]
    pub fn next_msg_seq(&self) -> u64 {
        self.next_msg_seq
    }

    /// Largest payload under `topic_len` that fits a datagram whole.
    pub fn max_whole_payload(&self, topic_len: usize) -> usize {
        self.max_payload
            .saturating_sub(HEADER_LEN + FRAME_HEADER_LEN + self.ext_len() + topic_len)
    }

    /// Payload bytes one fragment under `topic_len` carries.
    pub fn fragment_piece(&self, topic_len: usize) -> usize {
        self.max_payload.saturating_sub(
            HEADER_LEN + FRAME_HEADER_LEN + FRAGMENT_EXT_LEN + self.ext_len() + topic_len,
        )
    }

    /// Appends a whole message to `d`, numbering it.
    pub fn append(&mut self, d: &mut DatagramBuf, topic: &str, payload: &[u8]) -> Append {
        match self.begin(d, topic, payload.len()) {
            Ok(room) => {
                d.buf[room.clone()].copy_from_slice(payload);
                self.commit(d, room);
                Append::Done
            }
            Err(a) => a,
        }
    }

    /// Starts a whole message of `len` bytes in `d`: writes its frame head and returns
    /// where its payload goes. Nothing counts until [`commit`](Self::commit) (a claim
    /// that is never committed leaves `d` as it was); `Err` is `Full` or `TooLarge`
    /// as for [`append`](Self::append).
    pub fn begin(
        &mut self,
        d: &mut DatagramBuf,
        topic: &str,
        len: usize,
    ) -> Result<std::ops::Range<usize>, Append> {
        if len > self.max_whole_payload(topic.len()) {
            return Err(Append::TooLarge);
        }
        let limit = self.max_payload.min(d.buf.len());
        let need = frame_len_ext(topic.len(), len, false, self.expires.is_some());
        if d.len + need > limit || d.count == u16::MAX {
            return Err(Append::Full);
        }
        match encode_frame_head_ext(&mut d.buf[d.len..limit], topic, len, None, self.expires) {
            Some((at, need)) => {
                let start = d.len;
                self.mark(&mut d.buf, start);
                Ok(d.len + at..d.len + need)
            }
            None => Err(Append::Full),
        }
    }

    /// Numbers the message [`begin`](Self::begin) started in `d` (its payload at
    /// `room`, now filled).
    pub fn commit(&mut self, d: &mut DatagramBuf, room: std::ops::Range<usize>) {
        if d.count == 0 {
            d.msg_seq = self.next_msg_seq;
        }
        d.len = room.end;
        d.count += 1;
        self.next_msg_seq += 1;
    }

    /// Writes the fragment of `payload` that starts at `offset` into the empty
    /// datagram `d` and seals it. Returns the offset of the next fragment
    /// (`payload.len()` when this was the last). The message is numbered when its
    /// last fragment is written; every fragment's datagram carries that number.
    ///
    /// `d` must be empty and the topic must leave room for a piece (the publisher
    /// checks topic lengths when it is created); otherwise nothing is written and
    /// `offset` is returned unchanged.
    pub fn fragment(
        &mut self,
        d: &mut DatagramBuf,
        topic: &str,
        payload: &[u8],
        offset: usize,
    ) -> usize {
        let piece = self.fragment_piece(topic.len());
        let (Ok(total_len), Ok(off32)) = (u32::try_from(payload.len()), u32::try_from(offset))
        else {
            return offset;
        };
        if !d.is_empty() || piece == 0 || offset >= payload.len() {
            return offset;
        }
        let end = (offset + piece).min(payload.len());
        let frag = Fragment {
            total_len,
            offset: off32,
        };
        let limit = self.max_payload.min(d.buf.len());
        match encode_frame_ext(
            &mut d.buf[d.len..limit],
            topic,
            &payload[offset..end],
            Some(frag),
            self.expires,
        ) {
            Some(n) => {
                let start = d.len;
                self.mark(&mut d.buf, start);
                d.len += n;
                d.count = 1;
                d.msg_seq = self.next_msg_seq;
                if end == payload.len() {
                    self.next_msg_seq += 1;
                }
                self.seal(d);
                end
            }
            None => offset,
        }
    }

    /// Writes the header of `d` and gives it the next datagram sequence number.
    /// Does nothing to an empty datagram.
    pub fn seal(&mut self, d: &mut DatagramBuf) {
        if d.is_empty() {
            return;
        }
        let h = Header {
            kind: Kind::Data,
            count: d.count,
            session: self.session,
            network: self.network,
            seq: self.next_seq,
            msg_seq: d.msg_seq,
        };
        let head: &mut [u8; HEADER_LEN] = match (&mut d.buf[..HEADER_LEN]).try_into() {
            Ok(h) => h,
            Err(_) => return,
        };
        h.encode(head);
        if self.cache_flag {
            crate::wire::stamp_flags(&mut d.buf, crate::wire::CACHE_FLAG);
        }
        d.seq = Some(self.next_seq);
        self.next_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frames;

    #[test]
    fn packs_until_full_then_numbers_datagrams() {
        let mut s = SenderStream::new(9, 200);
        let mut d = DatagramBuf::new(200);
        let msg = [7u8; 50];
        let mut n = 0;
        while s.append(&mut d, "/t", &msg) == Append::Done {
            n += 1;
        }
        // 32 header + k * (8 + 2 + 50) <= 200  =>  k = 2
        assert_eq!(n, 2);
        s.seal(&mut d);
        let (h, frames) = Frames::decode(d.bytes(), 1 << 20).unwrap();
        assert_eq!((h.session, h.seq, h.msg_seq, h.count), (9, 0, 0, 2));
        assert_eq!(frames.count(), 2);
        d.clear();
        assert_eq!(s.append(&mut d, "/t", &msg), Append::Done);
        s.seal(&mut d);
        let (h, _) = Frames::decode(d.bytes(), 1 << 20).unwrap();
        assert_eq!((h.seq, h.msg_seq), (1, 2));
    }

    #[test]
    fn fragments_a_large_message() {
        let mut s = SenderStream::new(1, 100);
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut d = DatagramBuf::new(100);
        assert_eq!(s.append(&mut d, "/big", &payload), Append::TooLarge);
        let mut off = 0;
        let mut rebuilt = Vec::new();
        let mut datagrams = 0;
        while off < payload.len() {
            d.clear();
            off = s.fragment(&mut d, "/big", &payload, off);
            let (h, mut f) = Frames::decode(d.bytes(), 1 << 20).unwrap();
            assert_eq!(h.msg_seq, 0);
            assert_eq!(h.seq, datagrams);
            let fr = f.next().unwrap();
            assert_eq!(fr.fragment.unwrap().offset as usize, rebuilt.len());
            rebuilt.extend_from_slice(fr.payload);
            datagrams += 1;
        }
        assert_eq!(rebuilt, payload);
        assert_eq!(s.next_msg_seq(), 1);
        // piece = 100 - 32 - 8 - 8 - 4 = 48 bytes => 21 datagrams
        assert_eq!(datagrams, 21);
    }

    #[test]
    fn refuses_fragment_into_non_empty_datagram() {
        let mut s = SenderStream::new(1, 100);
        let mut d = DatagramBuf::new(100);
        assert_eq!(s.append(&mut d, "/t", b"x"), Append::Done);
        assert_eq!(s.fragment(&mut d, "/t", &[0u8; 500], 0), 0);
    }
}
