//! Lock-free single-producer single-consumer ring of variable-length byte records.
//!
//! # Layout
//!
//! One contiguous, zero-initialised buffer whose capacity is a power of two. Every record
//! starts at an 8-byte aligned offset with an 8-byte header `[len: u32 LE][kind: u32 LE]`
//! followed by `len` payload bytes, padded up to the next multiple of 8. `kind` is
//! `1` (data) for a record handed to the consumer or `2` (padding) for padding that fills
//! the rest of the buffer when a record does not fit before the end (records are never split).
//!
//! # Synchronisation
//!
//! The producer position (`head`) and the consumer position (`tail`) are monotonically
//! increasing byte counters (`AtomicU64`, each on its own cache line); the buffer index is
//! `pos & (capacity - 1)`. The producer writes a record, then publishes it with a `Release`
//! store of `head`; the consumer `Acquire`-loads `head` before reading. Symmetrically the
//! consumer `Release`-stores `tail` once it is done with a batch of records and the producer
//! `Acquire`-loads it before overwriting that space. Each side keeps a cached copy of the
//! other side's position and refreshes it only when the cached view says "full" (producer)
//! or "empty" (consumer), so the shared cache lines are touched once per batch, not per record.
//!
//! The bytes `[tail, head)` belong to the consumer, `[head, tail + capacity)` to the producer;
//! the two regions never overlap, which is what makes the unsynchronised buffer accesses sound.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Size of a record header in bytes: `[len: u32 LE][kind: u32 LE]`.
const HEADER: usize = 8;
/// Record alignment in bytes (records start at multiples of this).
const ALIGN: usize = 8;
/// Header `kind` of a record that carries data for the consumer.
const KIND_DATA: u32 = 1;
/// Header `kind` of a padding record that runs to the end of the buffer.
const KIND_PAD: u32 = 2;
/// Smallest ring capacity; smaller requests are rounded up to this.
const MIN_CAPACITY: usize = 4096;
/// Largest ring capacity; larger requests are clamped to this. Keeps every record length
/// representable in the `u32` header and every allocation within `isize::MAX`.
const MAX_CAPACITY: usize = if usize::BITS >= 64 { 1 << 31 } else { 1 << 30 };

/// Bytes occupied in the ring by a data record with `len` payload bytes (header + payload,
/// rounded up to [`ALIGN`]). Never overflows for `len <= MAX_CAPACITY`.
#[inline]
const fn record_size(len: usize) -> usize {
    (HEADER + len + (ALIGN - 1)) & !(ALIGN - 1)
}

/// State shared by both ends: the buffer and the two published positions.
struct Shared {
    /// Start of the buffer: `cap` bytes, zero-initialised, aligned to [`ALIGN`].
    buf: NonNull<u8>,
    /// Buffer length in bytes (a power of two).
    cap: usize,
    /// Producer position: everything below it has been written and published.
    head: CachePadded<AtomicU64>,
    /// Consumer position: everything below it has been read and may be overwritten.
    tail: CachePadded<AtomicU64>,
}

impl Shared {
    /// Layout of a buffer of `cap` bytes. `cap` is a power of two in
    /// `MIN_CAPACITY..=MAX_CAPACITY`, so this cannot fail.
    fn layout(cap: usize) -> Layout {
        match Layout::from_size_align(cap, ALIGN) {
            Ok(layout) => layout,
            Err(_) => unreachable!("ring capacity {cap} is clamped to a valid layout"),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: `buf` was returned by `alloc::alloc_zeroed` with exactly
        // `Self::layout(self.cap)` in `byte_ring`, and is freed only here, once, when the last
        // `Arc<Shared>` (and therefore the last `Producer`/`Consumer`/`Claim`) is gone.
        unsafe { alloc::dealloc(self.buf.as_ptr(), Self::layout(self.cap)) }
    }
}

// SAFETY: `Shared` owns its heap buffer (like a `Box<[u8]>`), so moving it across threads is
// fine. Shared access (`&Shared`) only touches the atomics; the buffer is accessed through raw
// pointers by exactly one `Producer` and one `Consumer`, whose disjoint regions are delimited
// by the Release/Acquire protocol on `head`/`tail` (see the module documentation).
unsafe impl Send for Shared {}
// SAFETY: see the `Send` impl above: every access to the buffer through a shared `Shared` is
// confined to the producer's or the consumer's region, which never overlap.
unsafe impl Sync for Shared {}

/// Creates a single-producer single-consumer byte ring and returns its two ends.
///
/// `capacity` is rounded up to a power of two, and clamped to at least 4096 bytes and at
/// most 2 GiB (1 GiB on 32-bit targets); [`Producer::capacity`] reports the actual size.
/// The buffer is allocated once, here, zero-initialised (pages that are never written stay
/// unmapped on most allocators); no call on either end allocates. Aborts the process, like
/// `Vec`, if the allocation fails.
#[must_use]
pub fn byte_ring(capacity: usize) -> (Producer, Consumer) {
    let cap = capacity
        .clamp(MIN_CAPACITY, MAX_CAPACITY)
        .next_power_of_two();
    let layout = Shared::layout(cap);
    // SAFETY: `layout` has a non-zero size (`cap >= MIN_CAPACITY`).
    let raw = unsafe { alloc::alloc_zeroed(layout) };
    let Some(buf) = NonNull::new(raw) else {
        alloc::handle_alloc_error(layout)
    };
    let shared = Arc::new(Shared {
        buf,
        cap,
        head: CachePadded::new(AtomicU64::new(0)),
        tail: CachePadded::new(AtomicU64::new(0)),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        buf,
        cap,
        head: 0,
        cached_tail: 0,
    };
    let consumer = Consumer {
        shared,
        buf,
        cap,
        tail: 0,
        released: 0,
        cached_head: 0,
        pending: 0,
    };
    (producer, consumer)
}

/// Writing end of a [`byte_ring`]: reserve space with [`try_claim`](Self::try_claim), fill
/// it in place through the returned [`Claim`], then [`commit`](Claim::commit) it.
///
/// `Send` but not `Sync`: exactly one thread produces at a time.
pub struct Producer {
    /// Keeps the buffer alive and gives access to the shared positions.
    shared: Arc<Shared>,
    /// Copy of `shared.buf` (saves an indirection on the hot path).
    buf: NonNull<u8>,
    /// Copy of `shared.cap`.
    cap: usize,
    /// Producer position; equal to `shared.head` (this end is its only writer).
    head: u64,
    /// Last consumer position seen; `<= shared.tail`.
    cached_tail: u64,
}

// SAFETY: `Producer` owns the producer role of the ring; the raw `buf` pointer refers to the
// heap buffer kept alive by `shared` (which is `Send + Sync`), and every write through it is
// confined to the producer's region, whichever thread the `Producer` lives on.
unsafe impl Send for Producer {}

impl Producer {
    /// Size of the ring buffer in bytes (a power of two).
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Largest payload length [`try_claim`](Self::try_claim) can ever grant:
    /// `capacity() - 8` (the record header). A claim of this size succeeds once the consumer
    /// has drained the ring (possibly after one padding record has also been consumed).
    #[inline]
    #[must_use]
    pub fn max_record(&self) -> usize {
        self.cap - HEADER
    }

    /// Reserves `len` contiguous bytes for the next record (`len == 0` is a valid record).
    ///
    /// Returns `None` if there is not room now (back-pressure: retry after the consumer has
    /// released) or if `len > max_record()` (never succeeds). If the record does not fit
    /// before the end of the buffer but a padding record does, the padding is written and
    /// published and the record is placed at the start of the buffer; if it does not fit
    /// there yet, `None` is returned and a later call retries from the start, so a record of
    /// up to `max_record()` bytes eventually fits once the consumer drains.
    ///
    /// The reserved bytes hold stale data from earlier records (or zeros); nothing is
    /// visible to the consumer until the [`Claim`] is committed.
    #[inline]
    #[must_use = "dropping the Claim abandons the reservation"]
    pub fn try_claim(&mut self, len: usize) -> Option<Claim<'_>> {
        if len > self.max_record() {
            return None;
        }
        let need = record_size(len);
        let idx = self.index(self.head);
        let to_end = self.cap - idx;
        if need > to_end {
            if !self.has_room(to_end) {
                return None;
            }
            // `to_end` is a non-zero multiple of ALIGN (positions are ALIGN-aligned and
            // `idx < cap`), so the padding header fits; its length is informational only.
            let pad_len = (to_end - HEADER) as u32;
            self.write_header(idx, pad_len, KIND_PAD);
            self.head += to_end as u64;
            self.shared.head.store(self.head, Ordering::Release);
        }
        if !self.has_room(need) {
            return None;
        }
        Some(Claim {
            producer: self,
            len,
        })
    }

    /// Free bytes in the ring as currently visible to the producer (approximate: the
    /// consumer may release more at any time; wrap padding can make a smaller record not fit).
    #[inline]
    #[must_use]
    pub fn free_bytes(&self) -> usize {
        let tail = self.shared.tail.load(Ordering::Relaxed);
        // `head - tail <= cap` always holds, so this neither underflows nor truncates.
        self.cap - (self.head - tail) as usize
    }

    /// `true` if the consumer has released everything the producer has published (including
    /// padding). Use it to wait for the consumer to drain, e.g. in a flush.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shared.tail.load(Ordering::Acquire) == self.head
    }

    /// Buffer index of position `pos`.
    #[inline]
    fn index(&self, pos: u64) -> usize {
        // `cap` is a power of two, so the mask keeps the value below `cap` (fits a usize).
        (pos & (self.cap as u64 - 1)) as usize
    }

    /// `true` if `n` more bytes fit after `head`; refreshes the cached consumer position
    /// (Acquire) only when the cached view is too full.
    #[inline]
    fn has_room(&mut self, n: usize) -> bool {
        let n = n as u64;
        let cap = self.cap as u64;
        if self.head + n - self.cached_tail <= cap {
            return true;
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.head + n - self.cached_tail <= cap
    }

    /// Writes a record header at buffer index `idx`.
    #[inline]
    fn write_header(&mut self, idx: usize, len: u32, kind: u32) {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&kind.to_le_bytes());
        debug_assert!(idx % ALIGN == 0 && idx + HEADER <= self.cap);
        // SAFETY: callers pass the index of the producer position, which is ALIGN-aligned
        // and below `cap`, so `idx + HEADER <= cap` and the 8 bytes are inside the buffer.
        // Callers have checked (`has_room`) that these bytes lie in the producer's region
        // `[head, tail + cap)`, which the consumer does not read until a later Release store
        // of `head` publishes them; `&mut self` excludes any live `Claim` slice over them.
        unsafe {
            self.buf
                .as_ptr()
                .add(idx)
                .cast::<[u8; HEADER]>()
                .write(header);
        }
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.cap)
            .field("head", &self.head)
            .field("cached_tail", &self.cached_tail)
            .finish_non_exhaustive()
    }
}

/// A reservation of `len` bytes in the ring, obtained from [`Producer::try_claim`].
///
/// Dereferences to exactly the reserved bytes; fill them, then call [`commit`](Self::commit)
/// or [`commit_len`](Self::commit_len). Dropping a `Claim` without committing abandons it:
/// no data record is published and the space stays free for the next claim.
#[must_use = "dropping a Claim abandons it; call commit() to publish the record"]
pub struct Claim<'a> {
    /// The producer whose position the claim starts at (borrowed exclusively).
    producer: &'a mut Producer,
    /// Reserved payload length; `<= producer.max_record()` and in the producer's region.
    len: usize,
}

impl Claim<'_> {
    /// Publishes the whole reservation as one record.
    #[inline]
    pub fn commit(self) {
        let len = self.len;
        self.commit_len(len);
    }

    /// Publishes only the first `len` bytes of the reservation as the record (`len` is
    /// clamped to the claimed length); the rest of the reservation is returned to the ring.
    #[inline]
    pub fn commit_len(self, len: usize) {
        let len = len.min(self.len);
        let producer = self.producer;
        let idx = producer.index(producer.head);
        // `len <= max_record() < 2^31`, so the cast is lossless.
        producer.write_header(idx, len as u32, KIND_DATA);
        producer.head += record_size(len) as u64;
        producer.shared.head.store(producer.head, Ordering::Release);
    }

    /// Pointer to the first payload byte of the reservation.
    #[inline]
    fn payload(&self) -> *mut u8 {
        let idx = self.producer.index(self.producer.head);
        // SAFETY: `try_claim` checked `record_size(len) <= cap - idx`, so `idx + HEADER <=
        // cap` and the result is inside the buffer or one past its end (only when len == 0).
        unsafe { self.producer.buf.as_ptr().add(idx + HEADER) }
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `[payload, payload + len)` lies inside the buffer (checked by `try_claim`),
        // is initialised (the buffer is zeroed at allocation and only ever holds bytes), and
        // is in the producer's region, which the consumer neither reads nor can see until the
        // claim is committed; the `Claim` borrows the `Producer` exclusively, so no other
        // reference into this region exists while the returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.payload(), self.len) }
    }
}

impl DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; additionally `&mut self` guarantees this is the only live
        // reference into the reservation.
        unsafe { std::slice::from_raw_parts_mut(self.payload(), self.len) }
    }
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("len", &self.len)
            .field("position", &self.producer.head)
            .finish_non_exhaustive()
    }
}

/// Reading end of a [`byte_ring`]: [`peek`](Self::peek) at the next record,
/// [`consume`](Self::consume) it, and [`release`](Self::release) consumed space to the
/// producer once per batch (or use [`read_batch`](Self::read_batch), which does all three).
///
/// `Send` but not `Sync`: exactly one thread consumes at a time.
pub struct Consumer {
    /// Keeps the buffer alive and gives access to the shared positions.
    shared: Arc<Shared>,
    /// Copy of `shared.buf`.
    buf: NonNull<u8>,
    /// Copy of `shared.cap`.
    cap: usize,
    /// Consumer position: start of the next record to read (consumed but maybe unreleased).
    tail: u64,
    /// Last position stored to `shared.tail` (this end is its only writer).
    released: u64,
    /// Last producer position seen; `<= shared.head`.
    cached_head: u64,
    /// Ring footprint of the record returned by the last `peek` (0: none pending).
    pending: u64,
}

// SAFETY: `Consumer` owns the consumer role of the ring; the raw `buf` pointer refers to the
// heap buffer kept alive by `shared` (which is `Send + Sync`), and every read through it is
// confined to the consumer's region, whichever thread the `Consumer` lives on.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Returns the next data record without consuming it, or `None` if the ring is empty.
    ///
    /// Padding records are skipped (and consumed) transparently. Calling `peek` again
    /// before [`consume`](Self::consume) returns the same record. When it returns `None`,
    /// any consumed but unreleased space is [released](Self::release) first, so a consumer
    /// that polls until empty never leaves the producer waiting on an unreleased position.
    #[inline]
    pub fn peek(&mut self) -> Option<&[u8]> {
        self.pending = 0;
        loop {
            if self.tail == self.cached_head {
                self.cached_head = self.shared.head.load(Ordering::Acquire);
                if self.tail == self.cached_head {
                    self.release();
                    return None;
                }
            }
            // `cap` is a power of two, so the index is below `cap`; positions advance in
            // multiples of ALIGN, so it is ALIGN-aligned and `idx + HEADER <= cap`.
            let idx = (self.tail & (self.cap as u64 - 1)) as usize;
            let to_end = self.cap - idx;
            // SAFETY: `[idx, idx + HEADER)` is inside the buffer (see above) and lies in
            // `[tail, cached_head)`: the producer wrote this header before the Release store
            // of `head` that our Acquire load observed, and will not overwrite it before we
            // Release-store a `tail` past it.
            let header = unsafe { self.buf.as_ptr().add(idx).cast::<[u8; HEADER]>().read() };
            let [l0, l1, l2, l3, k0, k1, k2, k3] = header;
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            if u32::from_le_bytes([k0, k1, k2, k3]) == KIND_PAD {
                // Padding always runs to the end of the buffer.
                self.tail += to_end as u64;
                continue;
            }
            // The producer never writes a longer length; clamping keeps the slice in bounds
            // by construction rather than by trusting the header.
            let len = len.min(to_end - HEADER);
            self.pending = record_size(len) as u64;
            // SAFETY: `[idx + HEADER, idx + HEADER + len)` is inside the buffer (`len` is
            // clamped to `to_end - HEADER`), initialised (zeroed at allocation, then written
            // bytes), and part of a record published by the Release store of `head` we
            // Acquire-loaded; the producer does not write it until we Release a `tail` past
            // it, which needs `&mut self` and so cannot happen while the slice is borrowed.
            return Some(unsafe {
                std::slice::from_raw_parts(self.buf.as_ptr().add(idx + HEADER), len)
            });
        }
    }

    /// Advances past the record returned by the last [`peek`](Self::peek) (local only: the
    /// space goes back to the producer at the next [`release`](Self::release)). Does nothing
    /// if the last `peek` returned `None` or the record was already consumed.
    #[inline]
    pub fn consume(&mut self) {
        self.tail += self.pending;
        self.pending = 0;
    }

    /// Publishes the consumed position to the producer (Release), freeing the space of all
    /// consumed records. Cheap enough to call once per batch; a no-op if nothing is new.
    #[inline]
    pub fn release(&mut self) {
        if self.released != self.tail {
            self.shared.tail.store(self.tail, Ordering::Release);
            self.released = self.tail;
        }
    }

    /// Passes up to `limit` records to `f` in order, consuming each, then releases once.
    /// Returns the number of records passed.
    #[inline]
    pub fn read_batch(&mut self, limit: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < limit {
            let Some(record) = self.peek() else { break };
            f(record);
            self.consume();
            n += 1;
        }
        self.release();
        n
    }

    /// `true` if there is no data record to read now (padding is skipped as by
    /// [`peek`](Self::peek), which this calls).
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        self.peek().is_none()
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.cap)
            .field("tail", &self.tail)
            .field("released", &self.released)
            .field("cached_head", &self.cached_head)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    /// Deterministic content byte `j` of record number `i`.
    fn content(i: u64, j: usize) -> u8 {
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (j as u8).wrapping_mul(31)
    }

    fn fill(buf: &mut [u8], i: u64) {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = content(i, j);
        }
    }

    fn check(buf: &[u8], i: u64) -> bool {
        buf.iter().enumerate().all(|(j, &b)| b == content(i, j))
    }

    /// Claims `len` bytes, retrying once after draining padding through the consumer.
    fn push(p: &mut Producer, c: &mut Consumer, len: usize, i: u64) {
        let mut claim = match p.try_claim(len) {
            Some(claim) => claim,
            None => {
                assert!(c.peek().is_none(), "push() is only for an empty ring");
                p.try_claim(len).expect("fits after padding was drained")
            }
        };
        fill(&mut claim, i);
        claim.commit();
    }

    fn pop(c: &mut Consumer) -> Option<Vec<u8>> {
        let v = c.peek()?.to_vec();
        c.consume();
        Some(v)
    }

    #[test]
    fn ends_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Producer>();
        assert_send::<Consumer>();
        assert_send::<Claim<'static>>();
    }

    #[test]
    fn capacity_rounding() {
        for (req, cap) in [
            (0, 4096),
            (1, 4096),
            (4096, 4096),
            (4097, 8192),
            (5000, 8192),
            (1 << 20, 1 << 20),
        ] {
            let (p, _c) = byte_ring(req);
            assert_eq!(p.capacity(), cap, "requested {req}");
            assert_eq!(p.max_record(), cap - 8);
            assert_eq!(p.free_bytes(), cap);
        }
    }

    #[test]
    fn huge_capacity_is_clamped_not_panicking() {
        // Zeroed allocation: the untouched pages are never mapped.
        let (mut p, mut c) = byte_ring(usize::MAX);
        assert_eq!(p.capacity(), MAX_CAPACITY);
        p.try_claim(3).expect("claim").copy_from_slice(b"abc");
        p.try_claim(3).expect("claim").commit();
        // The abandoned claim's bytes are still there: claims start with stale content.
        assert_eq!(pop(&mut c).as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn round_trip() {
        let (mut p, mut c) = byte_ring(4096);
        assert!(c.peek().is_none());
        assert!(c.is_empty());
        assert!(p.is_empty());
        let mut claim = p.try_claim(5).expect("room");
        assert_eq!(claim.len(), 5);
        claim.copy_from_slice(b"hello");
        claim.commit();
        p.try_claim(0).expect("room").commit();
        let mut claim = p.try_claim(3).expect("room");
        claim.copy_from_slice(b"xyz");
        claim.commit();
        assert!(!p.is_empty());
        assert_eq!(p.free_bytes(), 4096 - 16 - 8 - 16);

        assert_eq!(c.peek(), Some(&b"hello"[..]));
        assert_eq!(c.peek(), Some(&b"hello"[..]), "peek is idempotent");
        c.consume();
        c.consume(); // no pending peek: no-op
        assert_eq!(c.peek(), Some(&b""[..]));
        c.consume();
        assert!(!c.is_empty());
        assert_eq!(c.peek(), Some(&b"xyz"[..]));
        c.consume();
        assert!(!p.is_empty(), "consumed but not released");
        c.release();
        assert!(p.is_empty());
        assert!(c.is_empty());
        assert_eq!(p.free_bytes(), 4096);
    }

    #[test]
    fn peek_none_releases() {
        let (mut p, mut c) = byte_ring(4096);
        p.try_claim(10).expect("room").commit();
        assert!(c.peek().is_some());
        c.consume();
        assert!(!p.is_empty());
        assert!(c.peek().is_none());
        assert!(p.is_empty());
    }

    #[test]
    fn read_batch_limits_and_releases() {
        let (mut p, mut c) = byte_ring(4096);
        for i in 0..10u8 {
            p.try_claim(1).expect("room").copy_from_slice(&[i]);
        }
        for i in 0..10u8 {
            let mut claim = p.try_claim(1).expect("room");
            claim[0] = i;
            claim.commit();
        }
        let mut seen = Vec::new();
        assert_eq!(c.read_batch(0, |r| seen.extend_from_slice(r)), 0);
        assert_eq!(c.read_batch(4, |r| seen.extend_from_slice(r)), 4);
        assert_eq!(p.free_bytes(), 4096 - 6 * 16, "batch released");
        assert_eq!(c.read_batch(100, |r| seen.extend_from_slice(r)), 6);
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert!(p.is_empty());
    }

    #[test]
    fn abandoned_claim_publishes_nothing() {
        let (mut p, mut c) = byte_ring(4096);
        {
            let mut claim = p.try_claim(100).expect("room");
            claim.fill(0xAA);
        }
        assert!(c.peek().is_none());
        assert!(p.is_empty());
        assert_eq!(p.free_bytes(), 4096);
        let mut claim = p.try_claim(4).expect("room");
        claim.copy_from_slice(b"next");
        claim.commit();
        assert_eq!(pop(&mut c).as_deref(), Some(&b"next"[..]));
        assert!(c.peek().is_none());
    }

    #[test]
    fn commit_len_returns_the_rest() {
        let (mut p, mut c) = byte_ring(4096);
        let mut claim = p.try_claim(1000).expect("room");
        claim[..3].copy_from_slice(b"abc");
        claim.commit_len(3);
        assert_eq!(p.free_bytes(), 4096 - 16);
        let mut claim = p.try_claim(8).expect("room");
        claim.copy_from_slice(b"12345678");
        claim.commit_len(usize::MAX); // clamped to the claim
        p.try_claim(50).expect("room").commit_len(0);
        assert_eq!(pop(&mut c).as_deref(), Some(&b"abc"[..]));
        assert_eq!(pop(&mut c).as_deref(), Some(&b"12345678"[..]));
        assert_eq!(pop(&mut c).as_deref(), Some(&b""[..]));
        assert!(c.peek().is_none());
    }

    #[test]
    fn too_large_is_none() {
        let (mut p, _c) = byte_ring(4096);
        assert!(p.try_claim(p.max_record() + 1).is_none());
        assert!(p.try_claim(usize::MAX).is_none());
        assert!(p.try_claim(usize::MAX - 3).is_none());
        assert!(p.is_empty(), "nothing written");
    }

    #[test]
    fn max_record_when_empty() {
        for cap in [4096, 8192] {
            for offset in [0, 8, 16, 24, 1000, cap / 2, cap - 16, cap - 8] {
                let (mut p, mut c) = byte_ring(cap);
                if offset > 0 {
                    // Move the positions to `offset` with one record.
                    p.try_claim(offset - 8).expect("room").commit();
                    assert!(pop(&mut c).is_some());
                    assert!(c.peek().is_none());
                }
                assert!(p.is_empty());
                let max = p.max_record();
                push(&mut p, &mut c, max, 7);
                let got = pop(&mut c).expect("record");
                assert_eq!(got.len(), max);
                assert!(check(&got, 7), "cap {cap} offset {offset}");
                assert!(c.peek().is_none());
                assert!(p.is_empty());
            }
        }
    }

    #[test]
    fn full_ring_then_release() {
        let (mut p, mut c) = byte_ring(4096);
        let mut n = 0u64;
        while let Some(mut claim) = p.try_claim(120) {
            fill(&mut claim, n);
            claim.commit();
            n += 1;
        }
        assert_eq!(n, 4096 / 128);
        assert_eq!(p.free_bytes(), 0);
        assert!(p.try_claim(0).is_none());
        assert!(pop(&mut c).is_some());
        assert!(p.try_claim(0).is_none(), "consumed but not released");
        c.release();
        let mut claim = p.try_claim(120).expect("released space");
        fill(&mut claim, n);
        claim.commit();
        for i in 1..=n {
            let got = pop(&mut c).expect("record");
            assert!(check(&got, i));
        }
        assert!(c.peek().is_none());
    }

    #[test]
    fn wrap_around_many_sizes() {
        let (mut p, mut c) = byte_ring(4096);
        let max = p.max_record();
        let mut sent = 0u64;
        let mut received = 0u64;
        for len in (0..=max).step_by(7).chain([max - 1, max, 1, 0, 4087, 4080]) {
            // A few records of each size, keeping the ring partly full.
            for _ in 0..3 {
                loop {
                    if let Some(mut claim) = p.try_claim(len) {
                        fill(&mut claim[..], sent);
                        claim.commit();
                        sent += 1;
                        break;
                    }
                    let got = pop(&mut c);
                    match got {
                        Some(got) => {
                            assert!(check(&got, received), "record {received}");
                            received += 1;
                        }
                        None => assert!(c.peek().is_none()), // padding skipped
                    }
                    c.release();
                }
            }
        }
        while let Some(got) = pop(&mut c) {
            assert!(check(&got, received));
            received += 1;
        }
        assert_eq!(sent, received);
        c.release();
        assert!(p.is_empty());
    }

    #[test]
    fn padding_exact_fit_at_end() {
        let (mut p, mut c) = byte_ring(4096);
        // Leave exactly 8 bytes before the end: a zero-length record fits without padding.
        p.try_claim(4096 - 16).expect("room").commit();
        p.try_claim(0).expect("room").commit();
        assert_eq!(pop(&mut c).map(|r| r.len()), Some(4080));
        assert_eq!(pop(&mut c).map(|r| r.len()), Some(0));
        assert!(c.peek().is_none());
        // Now at index 0 again: fill to 8 bytes before the end, then a 1-byte record pads.
        p.try_claim(4096 - 16).expect("room").commit();
        assert_eq!(pop(&mut c).map(|r| r.len()), Some(4080));
        c.release();
        let mut claim = p.try_claim(1).expect("padding then index 0");
        claim[0] = 42;
        claim.commit();
        assert_eq!(pop(&mut c).as_deref(), Some(&[42u8][..]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Claim `len` bytes; commit `commit` of them (None: abandon).
        Claim { len: usize, commit: Option<usize> },
        /// Read up to `n` records with peek/consume.
        Read { n: usize, release: bool },
        /// Read a batch.
        Batch { n: usize },
        /// Drain the ring, then a max-size record must be claimable.
        DrainMax,
    }

    fn op(cap: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2 * cap, prop::option::weighted(0.85, 0..2 * cap))
                .prop_map(|(len, commit)| Op::Claim { len, commit }),
            3 => (0usize..8, any::<bool>()).prop_map(|(n, release)| Op::Read { n, release }),
            2 => (0usize..8).prop_map(|n| Op::Batch { n }),
            1 => Just(Op::DrainMax),
        ]
    }

    fn ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
        prop_oneof![Just(4096usize), Just(8192usize)]
            .prop_flat_map(|cap| (Just(cap), prop::collection::vec(op(cap), 0..200)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_vecdeque_model((cap, ops) in ops()) {
            let (mut p, mut c) = byte_ring(cap);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Claim { len, commit } => {
                        let max = p.max_record();
                        let claim = p.try_claim(len);
                        if len > max {
                            prop_assert!(claim.is_none());
                        }
                        if let Some(mut claim) = claim {
                            prop_assert_eq!(claim.len(), len);
                            fill(&mut claim, next);
                            match commit {
                                Some(n) => {
                                    let n = n.min(len);
                                    let mut v = vec![0u8; n];
                                    fill(&mut v, next);
                                    model.push_back(v);
                                    if n == len { claim.commit() } else { claim.commit_len(n) }
                                }
                                None => drop(claim),
                            }
                            next += 1;
                        }
                    }
                    Op::Read { n, release } => {
                        for _ in 0..n {
                            let got = pop(&mut c);
                            prop_assert_eq!(got, model.pop_front());
                        }
                        if release { c.release() }
                    }
                    Op::Batch { n } => {
                        let mut got = Vec::new();
                        let k = c.read_batch(n, |r| got.push(r.to_vec()));
                        prop_assert_eq!(k, got.len());
                        prop_assert!(k == n || model.len() == k);
                        for g in got {
                            prop_assert_eq!(Some(g), model.pop_front());
                        }
                    }
                    Op::DrainMax => {
                        while let Some(got) = pop(&mut c) {
                            prop_assert_eq!(Some(got), model.pop_front());
                        }
                        prop_assert!(model.is_empty());
                        prop_assert!(p.is_empty());
                        let max = p.max_record();
                        let claim = match p.try_claim(max) {
                            Some(claim) => claim,
                            None => {
                                prop_assert!(c.peek().is_none());
                                p.try_claim(max).expect("fits after padding drained")
                            }
                        };
                        drop(claim);
                    }
                }
            }
            while let Some(got) = pop(&mut c) {
                prop_assert_eq!(Some(got), model.pop_front());
            }
            prop_assert!(model.is_empty());
            prop_assert!(p.is_empty());
        }
    }

    /// Length of record `i` in the stress test: mostly small, some large, a few maximal.
    fn stress_len(i: u64, max: usize) -> usize {
        let h = i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        match h % 100 {
            0 => max,
            1..=9 => (h as usize >> 8) % (max + 1),
            _ => (h as usize >> 8) % 300,
        }
    }

    fn stress(cap: usize, records: u64) {
        let (mut p, mut c) = byte_ring(cap);
        let max = p.max_record();
        let deadline = Instant::now() + Duration::from_secs(20);
        let producer = std::thread::spawn(move || {
            let mut spins = 0u32;
            let mut abandoned = None;
            let mut i = 0u64;
            while i < records {
                let len = stress_len(i, max);
                // Partial commits: claim more than needed every so often.
                let extra = if i % 5 == 0 { 40.min(max - len) } else { 0 };
                match p.try_claim(len + extra) {
                    Some(mut claim) => {
                        if i % 97 == 0 && abandoned != Some(i) {
                            claim.fill(0xEE);
                            drop(claim); // abandoned: must not appear
                            abandoned = Some(i);
                            continue;
                        }
                        fill(&mut claim[..len], i);
                        if extra == 0 {
                            claim.commit();
                        } else {
                            claim[len..].fill(0xEE);
                            claim.commit_len(len);
                        }
                        i += 1;
                        spins = 0;
                    }
                    None => {
                        assert!(Instant::now() < deadline, "producer stalled");
                        backoff(&mut spins);
                    }
                }
            }
            while !p.is_empty() {
                assert!(Instant::now() < deadline, "flush stalled");
                std::thread::yield_now();
            }
        });
        let mut expected = 0u64;
        let mut spins = 0u32;
        while expected < records {
            let n = c.read_batch(64, |r| {
                assert_eq!(r.len(), stress_len(expected, max), "record {expected}");
                assert!(check(r, expected), "record {expected} content");
                expected += 1;
            });
            if n == 0 {
                assert!(Instant::now() < deadline, "consumer stalled at {expected}");
                backoff(&mut spins);
            } else {
                spins = 0;
            }
        }
        assert!(c.is_empty());
        producer.join().expect("producer thread");
    }

    /// Spin briefly, then yield: the test machine may have fewer cores than threads.
    fn backoff(spins: &mut u32) {
        *spins += 1;
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    #[test]
    fn stress_two_threads_small_ring() {
        stress(
            4096,
            if cfg!(debug_assertions) {
                100_000
            } else {
                200_000
            },
        );
    }

    #[test]
    fn stress_two_threads_8k_ring() {
        stress(
            8192,
            if cfg!(debug_assertions) {
                100_000
            } else {
                200_000
            },
        );
    }
}
