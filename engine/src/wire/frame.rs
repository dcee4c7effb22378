//! Message frames: encoding into a datagram body and validated decoding out of one.

use super::{Header, Kind, WireError, HEADER_LEN};

/// Size of a frame header without the fragment extension.
pub const FRAME_HEADER_LEN: usize = 8;
/// Size of the fragment extension (total length, offset).
pub const FRAGMENT_EXT_LEN: usize = 8;
/// Size of the expiry extension (the message's deadline, µs since the UNIX epoch on
/// the publisher's clock), present when the frame's `ext` byte has [`EXPIRES`].
pub const EXPIRY_EXT_LEN: usize = 8;
/// The frame's `ext` byte (formerly reserved): an expiry extension follows.
const EXPIRES: u8 = 0x1;
/// `ext` bit: the message is a last-value snapshot entry (a late joiner's), not live.
pub const SNAPSHOT: u8 = 0x2;
/// `ext` bit (with [`SNAPSHOT`]): the first entry of a snapshot burst — where a
/// receiver waiting for a snapshot joins the session.
pub const SNAPSHOT_FIRST: u8 = 0x4;

const BEGIN: u8 = 0x1;
const END: u8 = 0x2;
const WHOLE: u8 = BEGIN | END;

/// Where a fragment lies in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Length of the whole message.
    pub total_len: u32,
    /// Offset of this piece in the message.
    pub offset: u32,
}

impl Fragment {
    /// Whether this piece starts its message.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// One decoded frame, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message's topic.
    pub topic: &'a str,
    /// The payload (or the fragment's piece of it).
    pub payload: &'a [u8],
    /// `Some` when this frame is one piece of a larger message.
    pub fragment: Option<Fragment>,
    /// The message's deadline (µs since the UNIX epoch, publisher's clock), if it
    /// has a time to live.
    pub expires: Option<u64>,
    /// Its snapshot bits ([`SNAPSHOT`], [`SNAPSHOT_FIRST`]; 0 for live data).
    pub snapshot: u8,
}

/// Bytes a frame needs on the wire.
pub fn frame_len(topic_len: usize, payload_len: usize, fragmented: bool) -> usize {
    FRAME_HEADER_LEN + if fragmented { FRAGMENT_EXT_LEN } else { 0 } + topic_len + payload_len
}

/// Bytes a frame needs with the expiry extension when `expires`.
pub fn frame_len_ext(
    topic_len: usize,
    payload_len: usize,
    fragmented: bool,
    expires: bool,
) -> usize {
    frame_len(topic_len, payload_len, fragmented) + if expires { EXPIRY_EXT_LEN } else { 0 }
}

/// Encodes one frame at the start of `out`. Returns the bytes written, or `None` when
/// it does not fit (nothing meaningful is written then) or a length exceeds the field.
pub fn encode_frame(
    out: &mut [u8],
    topic: &str,
    payload: &[u8],
    fragment: Option<Fragment>,
) -> Option<usize> {
    encode_frame_ext(out, topic, payload, fragment, None)
}

/// [`encode_frame`] with an optional expiry extension.
pub fn encode_frame_ext(
    out: &mut [u8],
    topic: &str,
    payload: &[u8],
    fragment: Option<Fragment>,
    expires: Option<u64>,
) -> Option<usize> {
    let (at, need) = encode_frame_head_ext(out, topic, payload.len(), fragment, expires)?;
    out[at..need].copy_from_slice(payload);
    Some(need)
}

/// Encodes the head of a frame carrying `payload_len` bytes (everything but the
/// payload) at the start of `out`, with the expiry extension when `expires`. Returns
/// where the payload goes and the frame's whole length, or `None` as
/// [`encode_frame`] does. A claim writes the payload in place afterwards.
pub fn encode_frame_head_ext(
    out: &mut [u8],
    topic: &str,
    payload_len: usize,
    fragment: Option<Fragment>,
    expires: Option<u64>,
) -> Option<(usize, usize)> {
    let need = frame_len_ext(
        topic.len(),
        payload_len,
        fragment.is_some(),
        expires.is_some(),
    );
    let len = u32::try_from(payload_len).ok()?;
    let topic_len = u16::try_from(topic.len()).ok()?;
    let out = out.get_mut(..need)?;
    let flags = match fragment {
        None => WHOLE,
        Some(f) => {
            let first = if f.offset == 0 { BEGIN } else { 0 };
            let last = if u64::from(f.offset) + u64::from(len) == u64::from(f.total_len) {
                END
            } else {
                0
            };
            first | last
        }
    };
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..6].copy_from_slice(&topic_len.to_le_bytes());
    out[6] = flags;
    out[7] = if expires.is_some() { EXPIRES } else { 0 };
    let mut pos = FRAME_HEADER_LEN;
    if let Some(f) = fragment {
        out[8..12].copy_from_slice(&f.total_len.to_le_bytes());
        out[12..16].copy_from_slice(&f.offset.to_le_bytes());
        pos += FRAGMENT_EXT_LEN;
    }
    if let Some(e) = expires {
        out[pos..pos + EXPIRY_EXT_LEN].copy_from_slice(&e.to_le_bytes());
        pos += EXPIRY_EXT_LEN;
    }
    out[pos..pos + topic.len()].copy_from_slice(topic.as_bytes());
    pos += topic.len();
    Some((pos, need))
}

/// Parses one frame at `pos` of `body`; returns it and the position after it. `prev`
/// is the previous frame's topic: a frame with the same topic bytes (the common case:
/// a datagram packs one publisher's messages) takes it without checking UTF-8 again.
fn parse_frame<'a>(
    body: &'a [u8],
    pos: usize,
    index: u16,
    prev: Option<&'a str>,
) -> Result<(Frame<'a>, usize), WireError> {
    let past = WireError::FramePastEnd { index };
    let h = body.get(pos..pos + FRAME_HEADER_LEN).ok_or(past)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let topic_len = u16::from_le_bytes([h[4], h[5]]) as usize;
    let flags = h[6];
    let ext = h[7];
    let snapshot = ext & (SNAPSHOT | SNAPSHOT_FIRST);
    if flags & !WHOLE != 0
        || ext & !(EXPIRES | SNAPSHOT | SNAPSHOT_FIRST) != 0
        || snapshot == SNAPSHOT_FIRST
    {
        return Err(WireError::FragmentOutOfRange);
    }
    let mut p = pos + FRAME_HEADER_LEN;
    let fragment = if flags == WHOLE {
        None
    } else {
        let e = body.get(p..p + FRAGMENT_EXT_LEN).ok_or(past)?;
        p += FRAGMENT_EXT_LEN;
        let f = Fragment {
            total_len: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            offset: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        };
        let end = u64::from(f.offset) + len as u64;
        let begin_ok = (flags & BEGIN != 0) == (f.offset == 0);
        let end_ok = (flags & END != 0) == (end == u64::from(f.total_len));
        if end > u64::from(f.total_len) || !begin_ok || !end_ok || len == 0 {
            return Err(WireError::FragmentOutOfRange);
        }
        Some(f)
    };
    let expires = if ext & EXPIRES != 0 {
        let e = body.get(p..p + EXPIRY_EXT_LEN).ok_or(past)?;
        p += EXPIRY_EXT_LEN;
        Some(u64::from_le_bytes([
            e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7],
        ]))
    } else {
        None
    };
    let topic = body.get(p..p + topic_len).ok_or(past)?;
    let topic = match prev {
        Some(t) if t.as_bytes() == topic => t,
        _ => std::str::from_utf8(topic).map_err(|_| WireError::BadTopic)?,
    };
    p += topic_len;
    let payload = body.get(p..p + len).ok_or(past)?;
    Ok((
        Frame {
            topic,
            payload,
            fragment,
            expires,
            snapshot,
        },
        p + len,
    ))
}

/// The validated frames of one datagram.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    body: &'a [u8],
    pos: usize,
    left: u16,
    index: u16,
    /// The last frame's topic.
    topic: Option<&'a str>,
}

impl<'a> Frames<'a> {
    /// Decodes a whole datagram: header, then every frame, checking every length,
    /// offset and the frame count, and that a fragment travels alone with a total
    /// length of at most `max_message`. Nothing is returned unless all of it is valid.
    pub fn decode(
        datagram: &'a [u8],
        max_message: usize,
    ) -> Result<(Header, Frames<'a>), WireError> {
        let header = Header::decode(datagram)?;
        let body = &datagram[HEADER_LEN..];
        match header.kind {
            Kind::Status | Kind::Heartbeat | Kind::Nak | Kind::Announce | Kind::PeerList => {
                return Err(WireError::Empty)
            }
            Kind::Data => {
                if header.count == 0 {
                    return Err(WireError::Empty);
                }
                let mut pos = 0;
                let mut topic = None;
                for index in 0..header.count {
                    if pos == body.len() {
                        return Err(WireError::CountMismatch {
                            declared: header.count,
                            found: index,
                        });
                    }
                    let (frame, next) = parse_frame(body, pos, index, topic)?;
                    topic = Some(frame.topic);
                    if let Some(f) = frame.fragment {
                        if header.count != 1 || f.total_len as usize > max_message {
                            return Err(WireError::FragmentOutOfRange);
                        }
                    }
                    pos = next;
                }
                if pos != body.len() {
                    return Err(WireError::CountMismatch {
                        declared: header.count,
                        found: header.count.saturating_add(1),
                    });
                }
            }
        }
        Ok((
            header,
            Frames {
                body,
                pos: 0,
                left: header.count,
                index: 0,
                topic: None,
            },
        ))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.left == 0 {
            return None;
        }
        // Already validated by `decode`; a failure here cannot happen, and ends iteration.
        let (frame, next) = parse_frame(self.body, self.pos, self.index, self.topic).ok()?;
        self.topic = Some(frame.topic);
        self.pos = next;
        self.left -= 1;
        self.index += 1;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 16 << 20;

    fn header(count: u16) -> Header {
        Header {
            kind: Kind::Data,
            session: 1,
            network: 0,
            count,
            seq: 5,
            msg_seq: 10,
        }
    }

    /// Builds a datagram from frames; the test-side mirror of the sender.
    fn build(frames: &[(&str, &[u8], Option<Fragment>)]) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let mut pos = HEADER_LEN;
        for (t, p, f) in frames {
            pos += encode_frame(&mut buf[pos..], t, p, *f).expect("fits");
        }
        let mut h = [0u8; HEADER_LEN];
        header(frames.len() as u16).encode(&mut h);
        buf[..HEADER_LEN].copy_from_slice(&h);
        buf.truncate(pos);
        buf
    }

    /// A frame with a deadline carries it (whole or as a fragment), next to frames
    /// without one; unknown `ext` bits are rejected.
    #[test]
    fn the_expiry_extension_round_trips() {
        let mut buf = vec![0u8; 4096];
        let mut pos = HEADER_LEN;
        pos += encode_frame_ext(&mut buf[pos..], "/q", b"quote", None, Some(1_234_567)).unwrap();
        pos += encode_frame(&mut buf[pos..], "/q", b"plain", None).unwrap();
        let mut h = [0u8; HEADER_LEN];
        header(2).encode(&mut h);
        buf[..HEADER_LEN].copy_from_slice(&h);
        buf.truncate(pos);
        let (_, frames) = Frames::decode(&buf, MAX).unwrap();
        let got: Vec<_> = frames.map(|f| (f.payload.to_vec(), f.expires)).collect();
        assert_eq!(
            got,
            vec![
                (b"quote".to_vec(), Some(1_234_567)),
                (b"plain".to_vec(), None)
            ]
        );
        let frag = Fragment {
            total_len: 10,
            offset: 0,
        };
        let mut one = vec![0u8; 256];
        let n =
            encode_frame_ext(&mut one[HEADER_LEN..], "/q", b"01234", Some(frag), Some(9)).unwrap();
        header(1).encode((&mut one[..HEADER_LEN]).try_into().unwrap());
        one.truncate(HEADER_LEN + n);
        let (_, mut frames) = Frames::decode(&one, MAX).unwrap();
        let f = frames.next().unwrap();
        assert_eq!(
            (f.fragment, f.expires, f.payload),
            (Some(frag), Some(9), &b"01234"[..])
        );
        // An `ext` bit this version does not know.
        let mut bad = buf.clone();
        bad[HEADER_LEN + 7] = 0x2;
        assert!(Frames::decode(&bad, MAX).is_err());
        // A deadline cut short.
        assert!(Frames::decode(&buf[..HEADER_LEN + FRAME_HEADER_LEN + 4], MAX).is_err());
    }

    #[test]
    fn round_trip_many_frames() {
        let d = build(&[
            ("/a", b"one", None),
            ("/bb", b"", None),
            ("", b"three", None),
        ]);
        let (h, frames) = Frames::decode(&d, MAX).unwrap();
        assert_eq!(h, header(3));
        let got: Vec<_> = frames.map(|f| (f.topic, f.payload)).collect();
        assert_eq!(
            got,
            vec![("/a", &b"one"[..]), ("/bb", &b""[..]), ("", &b"three"[..])]
        );
    }

    #[test]
    fn round_trip_fragment() {
        let f = Fragment {
            total_len: 10,
            offset: 4,
        };
        let d = build(&[("/big", b"456789", Some(f))]);
        let (_, mut frames) = Frames::decode(&d, MAX).unwrap();
        let fr = frames.next().unwrap();
        assert_eq!(fr.fragment, Some(f));
        assert_eq!(fr.payload, b"456789");
        assert!(frames.next().is_none());
    }

    #[test]
    fn encode_refuses_what_does_not_fit() {
        let mut small = [0u8; 12];
        assert_eq!(encode_frame(&mut small, "/t", b"ab", None), Some(12));
        assert_eq!(encode_frame(&mut small, "/t", b"abc", None), None);
    }

    #[test]
    fn rejects_length_past_end() {
        let mut d = build(&[("/a", b"hello", None)]);
        d[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            Frames::decode(&d, MAX).unwrap_err(),
            WireError::FramePastEnd { index: 0 }
        );
        let mut t = build(&[("/a", b"hello", None)]);
        t[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&60000u16.to_le_bytes());
        assert_eq!(
            Frames::decode(&t, MAX).unwrap_err(),
            WireError::FramePastEnd { index: 0 }
        );
        let cut = build(&[("/a", b"hello", None)]);
        assert_eq!(
            Frames::decode(&cut[..HEADER_LEN + 5], MAX).unwrap_err(),
            WireError::FramePastEnd { index: 0 }
        );
    }

    #[test]
    fn rejects_count_mismatch() {
        let mut d = build(&[("/a", b"x", None), ("/a", b"y", None)]);
        d[6..8].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            Frames::decode(&d, MAX).unwrap_err(),
            WireError::CountMismatch {
                declared: 3,
                found: 2
            }
        );
        d[6..8].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(
            Frames::decode(&d, MAX).unwrap_err(),
            WireError::CountMismatch {
                declared: 1,
                found: 2
            }
        );
        d[6..8].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(Frames::decode(&d, MAX).unwrap_err(), WireError::Empty);
    }

    #[test]
    fn rejects_bad_topic_and_flags() {
        let mut d = build(&[("/a", b"x", None)]);
        d[HEADER_LEN + FRAME_HEADER_LEN] = 0xff;
        assert_eq!(Frames::decode(&d, MAX).unwrap_err(), WireError::BadTopic);
        let mut f = build(&[("/a", b"x", None)]);
        f[HEADER_LEN + 6] = 0x80 | WHOLE;
        assert_eq!(
            Frames::decode(&f, MAX).unwrap_err(),
            WireError::FragmentOutOfRange
        );
        // Snapshot bits: an entry, the first of a burst; "first" alone or an unknown
        // ext bit is rejected.
        let mut g = build(&[("/a", b"x", None)]);
        for (ext, ok) in [
            (SNAPSHOT, true),
            (SNAPSHOT | SNAPSHOT_FIRST, true),
            (SNAPSHOT_FIRST, false),
            (0x10, false),
        ] {
            g[HEADER_LEN + 7] = ext;
            match Frames::decode(&g, MAX) {
                Ok((_, mut fr)) => {
                    assert!(ok, "ext {ext:#x} accepted");
                    assert_eq!(fr.next().unwrap().snapshot, ext);
                }
                Err(e) => assert!(!ok, "ext {ext:#x}: {e}"),
            }
        }
    }

    #[test]
    fn rejects_fragment_out_of_range() {
        let frag = |total, offset| {
            Some(Fragment {
                total_len: total,
                offset,
            })
        };
        // piece past the message's end (offset 8 + 6 > 10): hand-patch the total.
        let mut d = build(&[("/b", b"abcdef", frag(14, 8))]);
        d[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(
            Frames::decode(&d, MAX).unwrap_err(),
            WireError::FragmentOutOfRange
        );
        // message bigger than allowed
        let big = build(&[("/b", b"abc", frag(1000, 0))]);
        assert_eq!(
            Frames::decode(&big, 999).unwrap_err(),
            WireError::FragmentOutOfRange
        );
        assert!(Frames::decode(&big, 1000).is_ok());
        // a fragment must travel alone
        let two = build(&[("/b", b"abc", frag(1000, 0)), ("/c", b"x", None)]);
        assert_eq!(
            Frames::decode(&two, MAX).unwrap_err(),
            WireError::FragmentOutOfRange
        );
        // BEGIN flag with a non-zero offset
        let mut lie = build(&[("/b", b"abc", frag(1000, 3))]);
        lie[HEADER_LEN + 6] |= BEGIN;
        assert_eq!(
            Frames::decode(&lie, MAX).unwrap_err(),
            WireError::FragmentOutOfRange
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok((h, frames)) = Frames::decode(&bytes, MAX) {
                prop_assert_eq!(frames.count(), h.count as usize);
            }
        }

        #[test]
        fn corrupted_valid_datagrams_never_panic(
            msgs in proptest::collection::vec(("[a-z/]{0,12}", proptest::collection::vec(any::<u8>(), 0..300)), 1..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let frames: Vec<(&str, &[u8], Option<Fragment>)> =
                msgs.iter().map(|(t, p)| (t.as_str(), p.as_slice(), None)).collect();
            let mut d = build(&frames);
            let (_, decoded) = Frames::decode(&d, MAX).unwrap();
            let got: Vec<_> = decoded.map(|f| (f.topic.to_string(), f.payload.to_vec())).collect();
            prop_assert_eq!(&got, &msgs.iter().map(|(t, p)| (t.clone(), p.clone())).collect::<Vec<_>>());
            for (at, v) in flips {
                let i = at % d.len();
                d[i] ^= v;
            }
            if let Ok((h, frames)) = Frames::decode(&d, MAX) {
                prop_assert_eq!(frames.count(), h.count as usize);
            }
            let cut = d.len() / 2;
            let _ = Frames::decode(&d[..cut], MAX);
        }
    }
}
