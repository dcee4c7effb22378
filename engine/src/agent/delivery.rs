//! The record a receiver agent writes into a subscription's ring, and its reading.
//!
//! ```text
//! 0  kind u8 (1 message, 2 loss) | 1 reason u8 | 2 topic_len u16 | 4 session u32
//! 8  seq u64 (loss: first lost) | 16 source ip [u8;4] | 20 source port u16 | 22 pad
//! 24 message: topic | payload          loss: to_seq u64       session event: -
//! ```
//! A message's reason byte: 1 when it is a last-value snapshot entry, else 0.
//! A loss's reason: 1 network, 2 slow consumer (dropped), 3 disconnected (resync).
//! A session event's reason: 1 joined, 2 gone.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::proto::SessionKey;
use crate::subscriber::{Event, Loss, LossReason, Message, SessionEvent, SessionState};

const HEADER: usize = 24;
const KIND_MESSAGE: u8 = 1;
const KIND_LOSS: u8 = 2;
const KIND_SESSION: u8 = 3;
/// Size of a loss record.
pub(crate) const LOSS_LEN: usize = HEADER + 8;
/// Size of a session event record.
pub(crate) const SESSION_LEN: usize = HEADER;

/// Bytes a message record needs.
pub(crate) fn message_len(topic: &str, payload: &[u8]) -> usize {
    HEADER + topic.len() + payload.len()
}

fn head(out: &mut [u8], kind: u8, reason: u8, topic_len: usize, key: SessionKey, seq: u64) {
    out[0] = kind;
    out[1] = reason;
    out[2..4].copy_from_slice(&(topic_len as u16).to_le_bytes());
    out[4..8].copy_from_slice(&key.session.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..20].copy_from_slice(&key.source.ip().octets());
    out[20..22].copy_from_slice(&key.source.port().to_le_bytes());
    out[22..24].fill(0);
}

/// Writes a message record into `out`, which is exactly `message_len` long.
pub(crate) fn write_message(
    out: &mut [u8],
    key: SessionKey,
    seq: u64,
    topic: &str,
    payload: &[u8],
    snapshot: bool,
) {
    head(out, KIND_MESSAGE, u8::from(snapshot), topic.len(), key, seq);
    let t = HEADER + topic.len();
    out[HEADER..t].copy_from_slice(topic.as_bytes());
    out[t..t + payload.len()].copy_from_slice(payload);
}

/// Writes a loss record into `out`, which is exactly `LOSS_LEN` long.
pub(crate) fn write_loss(out: &mut [u8], loss: &Loss) {
    let key = SessionKey {
        source: loss.source,
        session: loss.session,
    };
    let reason = match loss.reason {
        LossReason::Network => 1,
        LossReason::SlowConsumer => 2,
        LossReason::Disconnected => 3,
        LossReason::Expired => 4,
    };
    head(out, KIND_LOSS, reason, 0, key, loss.from_seq);
    out[HEADER..HEADER + 8].copy_from_slice(&loss.to_seq.to_le_bytes());
}

/// Writes a session event record into `out`, which is exactly `SESSION_LEN` long.
pub(crate) fn write_session(out: &mut [u8], ev: &SessionEvent) {
    let key = SessionKey {
        source: ev.source,
        session: ev.session,
    };
    let state = match ev.state {
        SessionState::Joined => 1,
        SessionState::Gone => 2,
    };
    head(out, KIND_SESSION, state, 0, key, 0);
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a record written by this module; `None` for anything else.
pub(crate) fn read(rec: &[u8]) -> Option<Event<'_>> {
    let h = rec.get(..HEADER)?;
    let topic_len = u16::from_le_bytes([h[2], h[3]]) as usize;
    let session = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let seq = u64_at(h, 8)?;
    let source = SocketAddrV4::new(
        Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        u16::from_le_bytes([h[20], h[21]]),
    );
    match h[0] {
        KIND_MESSAGE => {
            let topic = std::str::from_utf8(rec.get(HEADER..HEADER + topic_len)?).ok()?;
            Some(Event::Message(Message {
                topic,
                payload: rec.get(HEADER + topic_len..)?,
                session,
                source,
                seq,
                snapshot: h[1] == 1,
            }))
        }
        KIND_LOSS => Some(Event::Loss(Loss {
            session,
            source,
            from_seq: seq,
            to_seq: u64_at(rec, HEADER)?,
            reason: match h[1] {
                2 => LossReason::SlowConsumer,
                3 => LossReason::Disconnected,
                4 => LossReason::Expired,
                _ => LossReason::Network,
            },
        })),
        KIND_SESSION => Some(Event::Session(SessionEvent {
            session,
            source,
            state: if h[1] == 2 {
                SessionState::Gone
            } else {
                SessionState::Joined
            },
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: SessionKey = SessionKey {
        source: SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 4567),
        session: 0xabcd,
    };

    #[test]
    fn message_round_trip() {
        let mut buf = vec![0u8; message_len("/md/eurusd", b"1.0842")];
        write_message(&mut buf, KEY, 99, "/md/eurusd", b"1.0842", false);
        match read(&buf) {
            Some(Event::Message(m)) => {
                assert_eq!(
                    (m.topic(), m.payload(), m.seq(), m.session()),
                    ("/md/eurusd", &b"1.0842"[..], 99, 0xabcd)
                );
                assert_eq!(m.source(), KEY.source);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loss_round_trip() {
        let loss = Loss {
            session: KEY.session,
            source: KEY.source,
            from_seq: 10,
            to_seq: 20,
            reason: LossReason::SlowConsumer,
        };
        let mut buf = [0u8; LOSS_LEN];
        write_loss(&mut buf, &loss);
        assert_eq!(read(&buf), Some(Event::Loss(loss)));
        assert_eq!(read(&buf[..10]), None);
    }

    #[test]
    fn session_event_round_trip() {
        for state in [SessionState::Joined, SessionState::Gone] {
            let ev = SessionEvent {
                session: KEY.session,
                source: KEY.source,
                state,
            };
            let mut buf = [0u8; SESSION_LEN];
            write_session(&mut buf, &ev);
            assert_eq!(read(&buf), Some(Event::Session(ev)));
        }
    }
}
