//! A publisher's last-value cache, for late joiners (ZeroMQ's last-value cache, kept at
//! the publisher as glue does): the newest message of each cached topic. A receiver
//! that joins the session late asks for it; the publisher then puts every entry into
//! its stream as one burst flagged as a snapshot, and live data resumes after it — so
//! the late joiner gets each topic's latest value once, before live data, with no gap
//! or duplicate at the seam (the burst is the session's state at one position).
//!
//! Bounded: at most [`MAX_TOPICS`] topics and [`MAX_BYTES`] payload bytes; a new topic
//! beyond either is not cached (counted), values of cached topics are still replaced.

use std::collections::BTreeMap;

/// Topics cached at most.
pub const MAX_TOPICS: usize = 65_536;
/// Payload bytes cached at most.
pub const MAX_BYTES: usize = 64 << 20;

/// A cached message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its deadline, if it has a time to live (receivers drop it past that, so a
    /// stale value is never delivered from the cache).
    pub expires: Option<u64>,
}

/// The newest value of each cached topic.
#[derive(Debug, Default)]
pub struct LastValues {
    entries: BTreeMap<String, Value>,
    bytes: usize,
    refused: u64,
}

impl LastValues {
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Topics cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// New topics not cached because the cache was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// `payload` is the newest value of `topic`. Reuses the entry's buffer (no
    /// allocation once a topic's values stop growing).
    pub fn put(&mut self, topic: &str, payload: &[u8], expires: Option<u64>) {
        if let Some(v) = self.entries.get_mut(topic) {
            let grown = payload.len().saturating_sub(v.payload.len());
            if self.bytes + grown > MAX_BYTES {
                self.refused = self.refused.saturating_add(1);
                return;
            }
            self.bytes = self.bytes + payload.len() - v.payload.len();
            v.payload.clear();
            v.payload.extend_from_slice(payload);
            v.expires = expires;
            return;
        }
        if self.entries.len() >= MAX_TOPICS || self.bytes + payload.len() > MAX_BYTES {
            self.refused = self.refused.saturating_add(1);
            return;
        }
        self.bytes += payload.len();
        self.entries.insert(
            topic.to_string(),
            Value {
                payload: payload.to_vec(),
                expires,
            },
        );
    }

    /// Every entry, in topic order (a snapshot burst's content).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_value_per_topic_within_its_bounds() {
        let mut c = LastValues::default();
        c.put("/b", b"1", None);
        c.put("/a", b"2", Some(9));
        c.put("/b", b"33", None);
        let got: Vec<(&str, &[u8])> = c
            .entries()
            .map(|(t, v)| (t.as_str(), v.payload.as_slice()))
            .collect();
        assert_eq!(got, vec![("/a", &b"2"[..]), ("/b", &b"33"[..])]);
        assert_eq!(c.bytes, 3);
        let big = vec![0u8; MAX_BYTES];
        c.put("/c", &big, None);
        assert_eq!((c.len(), c.refused()), (2, 1));
        for i in 0..MAX_TOPICS + 10 {
            c.put(&format!("/t/{i}"), b"", None);
        }
        assert_eq!(c.len(), MAX_TOPICS);
        assert_eq!(c.refused(), 1 + 12);
    }
}
