//! Subscriber side: tracks every publishing session heard, detects gaps in its
//! datagram sequence, turns them into explicit loss events over message sequence
//! numbers, drops duplicates and reassembles fragmented messages. No I/O; the caller
//! passes the time in.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::wire::{Frame, Frames, WireError};

/// Identifies a publishing session: its source address and session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Where its datagrams come from.
    pub source: SocketAddrV4,
    /// The session id in its header.
    pub session: u32,
}

/// What the receiver hands upwards.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// A complete message, in publisher order.
    Message {
        /// Which session published it.
        from: SessionKey,
        /// Its sequence number in that session.
        seq: u64,
        /// Its topic.
        topic: &'a str,
        /// Its payload (borrowed from the datagram or the reassembly buffer).
        payload: &'a [u8],
    },
    /// Messages `from_seq..to_seq` of a session will never be delivered.
    Loss {
        /// Which session lost them.
        from: SessionKey,
        /// First lost message sequence number.
        from_seq: u64,
        /// One past the last lost one.
        to_seq: u64,
    },
}

/// Counters kept by the receiver (read by the agent into the node's stats).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceiverCounters {
    /// Valid data datagrams accepted.
    pub datagrams: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Gaps seen in a datagram sequence.
    pub gaps: u64,
    /// Datagrams those gaps skipped.
    pub lost_datagrams: u64,
    /// Messages reported lost.
    pub lost_messages: u64,
    /// Datagrams already seen (or arriving after a gap passed them) dropped.
    pub duplicates: u64,
    /// Datagrams rejected by the decoder or inconsistent with their session.
    pub malformed: u64,
    /// Sessions first heard.
    pub sessions: u64,
    /// Sessions forgotten to make room for new ones.
    pub sessions_evicted: u64,
}

#[derive(Debug, Default)]
struct Reassembly {
    active: bool,
    msg_seq: u64,
    total: usize,
    topic: String,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Session {
    next_seq: u64,
    next_msg: u64,
    last_seen: Instant,
    asm: Reassembly,
    /// Position in the last status sent for this session (`None`: none sent yet).
    reported: Option<u64>,
    last_status: Instant,
}

/// How often a receiver reports status for a session that is sending.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(5);
/// A session silent this long gets no more status messages.
pub const SESSION_QUIET: Duration = Duration::from_secs(2);

/// The receive-side protocol state for every session heard on a group.
#[derive(Debug)]
pub struct Receiver {
    max_message: usize,
    max_sessions: usize,
    sessions: HashMap<SessionKey, Session>,
    counters: ReceiverCounters,
}

impl Receiver {
    /// A receiver that reassembles messages of up to `max_message` bytes and tracks
    /// at most `max_sessions` publishing sessions (least recently heard evicted).
    pub fn new(max_message: usize, max_sessions: usize) -> Self {
        Receiver {
            max_message,
            max_sessions: max_sessions.max(1),
            sessions: HashMap::new(),
            counters: ReceiverCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &ReceiverCounters {
        &self.counters
    }

    /// Number of sessions tracked.
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Processes one datagram received at `now` from `source`, handing every
    /// resulting message or loss to `out`. A malformed datagram is counted and
    /// returned as an error; it changes no state.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        bytes: &[u8],
        out: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<(), WireError> {
        let (header, frames) = match Frames::decode(bytes, self.max_message) {
            Ok(d) => d,
            Err(e) => {
                self.counters.malformed += 1;
                return Err(e);
            }
        };
        let key = SessionKey {
            source,
            session: header.session,
        };
        let first = frames.clone().next();
        let starts_mid_message =
            matches!(first, Some(Frame { fragment: Some(f), .. }) if !f.is_first());
        // The first message this datagram starts (a leading continuation belongs to an
        // earlier one).
        let first_start = header.msg_seq + u64::from(starts_mid_message);

        if !self.sessions.contains_key(&key) {
            self.make_room();
            self.counters.sessions += 1;
            // A late joiner starts at the live position: nothing before is owed to it.
            self.sessions.insert(
                key,
                Session {
                    next_seq: header.seq,
                    next_msg: first_start,
                    last_seen: now,
                    asm: Reassembly::default(),
                    reported: None,
                    last_status: now,
                },
            );
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return Ok(());
        };
        let c = &mut self.counters;
        if header.seq < s.next_seq {
            c.duplicates += 1;
            return Ok(());
        }
        if header.seq > s.next_seq {
            if first_start < s.next_msg {
                // Sequence moved forward while message numbers went back: not our sender.
                c.malformed += 1;
                return Err(WireError::FragmentOutOfRange);
            }
            c.gaps += 1;
            c.lost_datagrams += header.seq - s.next_seq;
            s.asm.active = false;
            if first_start > s.next_msg {
                c.lost_messages += first_start - s.next_msg;
                out(Delivery::Loss {
                    from: key,
                    from_seq: s.next_msg,
                    to_seq: first_start,
                });
                s.next_msg = first_start;
            }
        } else if !starts_mid_message && header.msg_seq != s.next_msg {
            if header.msg_seq < s.next_msg {
                c.malformed += 1;
                return Err(WireError::FragmentOutOfRange);
            }
            // In sequence but message numbers jumped: report them rather than hide it.
            c.lost_messages += header.msg_seq - s.next_msg;
            out(Delivery::Loss {
                from: key,
                from_seq: s.next_msg,
                to_seq: header.msg_seq,
            });
            s.next_msg = header.msg_seq;
            s.asm.active = false;
        }
        s.next_seq = header.seq + 1;
        s.last_seen = now;
        c.datagrams += 1;

        let mut seq = header.msg_seq;
        for frame in frames {
            match frame.fragment {
                None => {
                    c.messages += 1;
                    c.bytes += frame.payload.len() as u64;
                    out(Delivery::Message {
                        from: key,
                        seq,
                        topic: frame.topic,
                        payload: frame.payload,
                    });
                    seq += 1;
                    s.next_msg = seq;
                }
                Some(f) if f.is_first() => {
                    let a = &mut s.asm;
                    a.active = true;
                    a.msg_seq = seq;
                    a.total = f.total_len as usize;
                    a.topic.clear();
                    a.topic.push_str(frame.topic);
                    a.buf.clear();
                    a.buf.extend_from_slice(frame.payload);
                }
                Some(f) => {
                    let a = &mut s.asm;
                    let continues = a.active
                        && a.msg_seq == seq
                        && a.buf.len() == f.offset as usize
                        && a.total == f.total_len as usize
                        && a.topic == frame.topic;
                    if continues {
                        a.buf.extend_from_slice(frame.payload);
                        if a.buf.len() == a.total {
                            a.active = false;
                            c.messages += 1;
                            c.bytes += a.buf.len() as u64;
                            s.next_msg = seq + 1;
                            out(Delivery::Message {
                                from: key,
                                seq,
                                topic: &a.topic,
                                payload: &a.buf,
                            });
                        }
                    } else if !a.active && seq < s.next_msg {
                        // The rest of a message already reported lost, or begun before
                        // this receiver joined.
                    } else {
                        c.malformed += 1;
                        a.active = false;
                        if seq >= s.next_msg {
                            c.lost_messages += seq + 1 - s.next_msg;
                            out(Delivery::Loss {
                                from: key,
                                from_seq: s.next_msg,
                                to_seq: seq + 1,
                            });
                            s.next_msg = seq + 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `out(session, next_seq, window)` for every session that is owed a status
    /// now: a new session at once, then whenever the position moved a quarter of
    /// `window` past the last report, or `STATUS_INTERVAL` passed while it was sending.
    /// `window` is shared among the sessions heard recently.
    pub fn poll_status(
        &mut self,
        now: Instant,
        window: u32,
        out: &mut dyn FnMut(SessionKey, u64, u32),
    ) {
        let live = self
            .sessions
            .values()
            .filter(|s| now.saturating_duration_since(s.last_seen) < SESSION_QUIET)
            .count()
            .max(1);
        let share = (window / live as u32).max(1);
        for (key, s) in self.sessions.iter_mut() {
            if now.saturating_duration_since(s.last_seen) >= SESSION_QUIET {
                continue;
            }
            let due = match s.reported {
                None => true,
                Some(pos) => {
                    s.next_seq.saturating_sub(pos) >= u64::from(share / 4).max(1)
                        || (now.saturating_duration_since(s.last_status) >= STATUS_INTERVAL
                            && pos != s.next_seq)
                        || now.saturating_duration_since(s.last_status) >= STATUS_INTERVAL * 20
                }
            };
            if due {
                out(*key, s.next_seq, share);
                s.reported = Some(s.next_seq);
                s.last_status = now;
            }
        }
    }

    fn make_room(&mut self) {
        while self.sessions.len() >= self.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.sessions.remove(&k);
                    self.counters.sessions_evicted += 1;
                }
                None => return,
            }
        }
    }
}
