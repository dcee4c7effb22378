//! A publisher's stream as a log in shared memory (issue 12's IPC transport, its
//! storage layer): one writer process appends records to a file that local readers
//! map and read at their own position.
//!
//! Modelled on Aeron's IPC publication (one log read in place by every subscriber)
//! and iceoryx2's rule that a loaned sample is never written while it is lent: a
//! reader that applies back-pressure holds a slot whose position the writer never
//! overtakes by more than the log's capacity, so it is handed records **in place**
//! (zero copies); any other reader may be lapped, so it copies a record out and checks
//! that the writer did not touch it meanwhile (a seqlock) before handing the copy,
//! and reports what the writer overwrote as lost.
//!
//! ```text
//! | header (4 KiB): magic, capacity, session, writer pid, tail, heartbeat, closed,
//! |                 64 reader slots (pid, position, heartbeat, back-pressure)      |
//! | data: `capacity` bytes, a ring of records, 16-byte aligned                    |
//! record: | commit word: lap (u32) ‹‹ 32 | kind bit 31 | length + 1 | seq (u64) | payload |
//! ```
//!
//! The commit word is stored last (release): length 0 marks a record in progress
//! (a writer that died mid-message leaves one: readers stop before it and report
//! the writer gone), and the lap — how many times the ring wrapped before this
//! record's position — tells a reader whether a record is the one it waits for, an
//! old one the writer has not yet reached, or a newer one (it was lapped). A record
//! never wraps around the end: the writer pads to the end first.
//!
//! Time is passed in (`now_ns`, any clock every process shares, such as
//! `CLOCK_MONOTONIC`); the only system calls are the liveness checks of other
//! processes (`kill(pid, 0)`), made on slow paths only.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;

/// Bytes of the file's header, before the data.
pub const HEADER_LEN: usize = 4096;
/// Bytes of a record's header, before its payload.
pub const RECORD_HEADER: usize = 16;
/// Records start at multiples of this.
pub const ALIGN: usize = 16;
/// Readers a log has slots for (a reader without one can still read, lapped).
pub const MAX_READERS: usize = 64;
/// The smallest data capacity.
pub const MIN_CAPACITY: usize = 64 * 1024;
/// The largest data capacity.
pub const MAX_CAPACITY: usize = 1 << 30;
/// File names of logs end with this.
pub const SUFFIX: &str = ".rclog";

const MAGIC: u64 = u64::from_le_bytes(*b"RCSTLOG1");
const VERSION: u32 = 1;
// Header offsets.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_SESSION: usize = 24;
const OFF_PID: usize = 32;
const OFF_TAIL: usize = 128;
const OFF_HEARTBEAT: usize = 192;
const OFF_CLOSED: usize = 200;
/// The writer's next sequence number (exact once it closed or died).
const OFF_NEXT_SEQ: usize = 208;
/// How far the writer may be writing: stored before it writes a byte (readers of
/// copies check it after copying).
const OFF_CLAIM: usize = 216;
/// Position of the latest record committed (where a lapped reader rejoins).
const OFF_LAST: usize = 224;
/// When the log was made (the writer's `now_ns` at create).
const OFF_CREATED: usize = 232;
/// The writer's network address (IPv4 << 16 | port), 0 when it has none.
const OFF_SOURCE: usize = 240;
/// The topic the log carries: length (u16), then its bytes.
const OFF_TOPIC: usize = 3072;
/// Longest topic a log header holds.
pub const MAX_TOPIC: usize = 256;
const OFF_SLOTS: usize = 256;
const SLOT_LEN: usize = 32;
// Slot fields.
const SLOT_STATE: usize = 0;
const SLOT_PID: usize = 4;
const SLOT_POSITION: usize = 8;
const SLOT_HEARTBEAT: usize = 16;
/// `HOLDS` when the reader back-pressures the writer; 0 for an observer (counted
/// as a reader, never waited for).
const SLOT_FLAGS: usize = 24;
const HOLDS: u32 = 1;
const FREE: u32 = 0;
const LIVE: u32 = 1;
/// Taken by a joining reader that is still filling it in.
const CLAIMING: u32 = 2;
/// Kind bit of the commit word: padding to the end of the ring.
const PADDING: u64 = 1 << 31;
const LEN_MASK: u64 = PADDING - 1;

const _: () = assert!(OFF_SLOTS + MAX_READERS * SLOT_LEN <= OFF_TOPIC);
const _: () = assert!(OFF_TOPIC + 2 + MAX_TOPIC <= HEADER_LEN);

/// Why a log could not be made, opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Creating, opening or mapping the file failed.
    #[error("log file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a log this version reads.
    #[error("{0} is not a ringcast log (or another version)")]
    NotALog(PathBuf),
    /// The capacity asked for is not allowed.
    #[error("capacity {0} bytes: must be a power of two from 64 KiB to 1 GiB")]
    BadCapacity(usize),
    /// A record larger than half the log.
    #[error("a {len}-byte record does not fit a log of {capacity} bytes")]
    TooLarge {
        /// The record's payload bytes.
        len: usize,
        /// The log's data capacity.
        capacity: usize,
    },
    /// Nothing written: try again once the slowest back-pressuring reader moved.
    #[error("the slowest back-pressuring reader is a whole log behind")]
    BackPressured,
    /// A topic longer than a log header holds.
    #[error("a {0}-byte topic does not fit a log header (at most {MAX_TOPIC})")]
    TopicTooLong(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The mapped file, with typed access to its words.
struct Map {
    map: MmapRaw,
    capacity: u64,
}

impl Map {
    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.map.len());
        // SAFETY: `off` is 8-aligned (the map is page-aligned) and inside the map,
        // which lives as long as `self`; every access to these words, in every
        // process, is atomic.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU64) }
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 4 == 0 && off + 4 <= self.map.len());
        // SAFETY: as for `atomic_u64`, 4-aligned.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU32) }
    }

    fn tail(&self) -> &AtomicU64 {
        self.atomic_u64(OFF_TAIL)
    }

    /// Live slots: back-pressuring readers, and observers whose heartbeat is within
    /// `timeout` of the writer's (or `now`, if later).
    fn readers(&self, now: u64, timeout: u64) -> usize {
        let now = now.max(self.atomic_u64(OFF_HEARTBEAT).load(Ordering::Acquire));
        (0..MAX_READERS)
            .filter(|&i| {
                self.slot_u32(i, SLOT_STATE).load(Ordering::Acquire) == LIVE
                    && (self.slot_u32(i, SLOT_FLAGS).load(Ordering::Relaxed) & HOLDS != 0
                        || now.saturating_sub(
                            self.slot_u64(i, SLOT_HEARTBEAT).load(Ordering::Acquire),
                        ) <= timeout)
            })
            .count()
    }

    fn slot(&self, i: usize, field: usize) -> usize {
        OFF_SLOTS + i * SLOT_LEN + field
    }

    /// A 64-bit field of reader slot `i`.
    fn slot_u64(&self, i: usize, field: usize) -> &AtomicU64 {
        self.atomic_u64(self.slot(i, field))
    }

    /// A 32-bit field of reader slot `i`.
    fn slot_u32(&self, i: usize, field: usize) -> &AtomicU32 {
        self.atomic_u32(self.slot(i, field))
    }

    /// Offset in the file of the record at `position`. Rounded down to a record
    /// boundary: the writer's positions always are one, but a position read from a
    /// scribbled file must still give aligned words inside the map.
    fn at(&self, position: u64) -> usize {
        HEADER_LEN + (position & (self.capacity - 1) & !(ALIGN as u64 - 1)) as usize
    }

    fn commit_word(&self, position: u64) -> &AtomicU64 {
        self.atomic_u64(self.at(position))
    }

    fn seq_word(&self, position: u64) -> &AtomicU64 {
        self.atomic_u64(self.at(position) + 8)
    }

    fn lap(&self, position: u64) -> u32 {
        (position / self.capacity) as u32
    }

    fn pid(&self) -> u32 {
        self.atomic_u32(OFF_PID).load(Ordering::Relaxed)
    }
}

fn aligned(len: usize) -> u64 {
    (len as u64 + RECORD_HEADER as u64).next_multiple_of(ALIGN as u64)
}

/// Whether process `pid` exists (a zombie counts as existing until reaped).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Counts of a writer's slow paths.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounters {
    /// Offers refused because a back-pressuring reader was a log behind.
    pub back_pressured: u64,
    /// Reader slots freed because their reader died or stopped heart-beating.
    pub readers_evicted: u64,
}

/// The one writer of a log.
pub struct LogWriter {
    map: std::sync::Arc<Map>,
    path: PathBuf,
    /// Position of the next record (the shared tail is this, published).
    tail: u64,
    /// How far the tail may go before the readers' slots are looked at again.
    limit: u64,
    seq: u64,
    /// The time of the last heartbeat (readers' staleness is judged against it: no
    /// clock is read per record).
    now: u64,
    reader_timeout: u64,
    counters: WriterCounters,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .field("tail", &self.tail)
            .field("seq", &self.seq)
            .finish()
    }
}

impl LogWriter {
    /// Creates the log `dir/name.rclog` (readable and writable by this user only),
    /// first removing any log in `dir` whose writer process is gone. A
    /// back-pressuring reader whose heartbeat is `reader_timeout_ns` older than the
    /// writer's own (see [`LogWriter::heartbeat`]) stops holding the writer.
    pub fn create(
        dir: &Path,
        name: &str,
        capacity: usize,
        session: u64,
        now_ns: u64,
        reader_timeout_ns: u64,
    ) -> Result<LogWriter, LogError> {
        let meta = LogMeta {
            session,
            topic: "",
            source: 0,
        };
        Self::create_with(dir, name, capacity, &meta, now_ns, reader_timeout_ns)
    }

    /// [`create`](Self::create) with a topic and source address in the header, for
    /// readers to choose logs by ([`read_meta`]).
    pub fn create_with(
        dir: &Path,
        name: &str,
        capacity: usize,
        meta: &LogMeta<'_>,
        now_ns: u64,
        reader_timeout_ns: u64,
    ) -> Result<LogWriter, LogError> {
        let session = meta.session;
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(LogError::BadCapacity(capacity));
        }
        if meta.topic.len() > MAX_TOPIC {
            return Err(LogError::TopicTooLong(meta.topic.len()));
        }
        remove_dead_logs(dir);
        let path = dir.join(format!("{name}{SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len((HEADER_LEN + capacity) as u64)
            .map_err(io(&path))?;
        let map = MmapRaw::map_raw(&file).map_err(io(&path))?;
        let map = std::sync::Arc::new(Map {
            map,
            capacity: capacity as u64,
        });
        // The file is new and zero; nobody reads it before the magic is stored.
        map.atomic_u64(OFF_CAPACITY)
            .store(capacity as u64, Ordering::Relaxed);
        map.atomic_u64(OFF_SESSION)
            .store(session, Ordering::Relaxed);
        map.atomic_u32(OFF_PID)
            .store(std::process::id(), Ordering::Relaxed);
        map.atomic_u64(OFF_HEARTBEAT)
            .store(now_ns, Ordering::Relaxed);
        map.atomic_u64(OFF_CREATED).store(now_ns, Ordering::Relaxed);
        map.atomic_u64(OFF_SOURCE)
            .store(meta.source, Ordering::Relaxed);
        let topic = meta.topic.as_bytes();
        // SAFETY: `OFF_TOPIC + 2 + MAX_TOPIC <= HEADER_LEN` (asserted above) and
        // `topic.len() <= MAX_TOPIC` (checked above); the file is new, so no other
        // process maps it yet.
        unsafe {
            let at = map.map.as_mut_ptr().add(OFF_TOPIC);
            std::ptr::copy_nonoverlapping((topic.len() as u16).to_le_bytes().as_ptr(), at, 2);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), at.add(2), topic.len());
        }
        map.atomic_u32(OFF_VERSION)
            .store(VERSION, Ordering::Relaxed);
        map.atomic_u64(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ok(LogWriter {
            map,
            path,
            tail: 0,
            limit: capacity as u64,
            seq: 0,
            now: now_ns,
            reader_timeout: reader_timeout_ns,
            counters: WriterCounters::default(),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records the log holds (a record may take at most half).
    pub fn capacity(&self) -> usize {
        self.map.capacity as usize
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Its slow-path counts.
    pub fn counters(&self) -> WriterCounters {
        self.counters
    }

    /// Appends one record (one copy, into the log); returns its sequence number.
    pub fn offer(&mut self, payload: &[u8]) -> Result<u64, LogError> {
        let mut c = self.try_claim(payload.len())?;
        c.payload().copy_from_slice(payload);
        Ok(c.commit())
    }

    /// Room for a `len`-byte record, written in place, visible to readers at
    /// [`LogClaim::commit`] (dropped uncommitted: committed as it is). Refused while a
    /// back-pressuring reader is a whole log behind — unless that reader's process is
    /// gone or its heartbeat is the reader timeout older than the writer's last one:
    /// then its slot is freed (counted).
    pub fn try_claim(&mut self, len: usize) -> Result<LogClaim<'_>, LogError> {
        self.claim(len)
    }

    /// [`try_claim`](Self::try_claim), but a claim dropped uncommitted publishes
    /// nothing (the space is claimed again by the next record).
    pub fn try_claim_or_abort(&mut self, len: usize) -> Result<LogClaim<'_>, LogError> {
        let mut c = self.claim(len)?;
        c.commit_on_drop = false;
        Ok(c)
    }

    fn claim(&mut self, len: usize) -> Result<LogClaim<'_>, LogError> {
        let cap = self.map.capacity;
        let need = aligned(len);
        if need > cap / 2 {
            return Err(LogError::TooLarge {
                len,
                capacity: cap as usize,
            });
        }
        let offset = self.tail & (cap - 1);
        let pad = if offset + need > cap { cap - offset } else { 0 };
        let end = self.tail + pad + need;
        if end > self.limit {
            self.limit = self.scan_readers(end);
            if end > self.limit {
                self.counters.back_pressured = self.counters.back_pressured.saturating_add(1);
                return Err(LogError::BackPressured);
            }
        }
        // Readers copying what these bytes held a lap ago see the claim and drop
        // their copy.
        self.map.atomic_u64(OFF_CLAIM).store(end, Ordering::Relaxed);
        fence(Ordering::Release);
        if pad > 0 {
            let lap = u64::from(self.map.lap(self.tail));
            self.map
                .commit_word(self.tail)
                .store(lap << 32 | PADDING | pad, Ordering::Release);
            self.tail += pad;
            self.map.tail().store(self.tail, Ordering::Release);
        }
        Ok(LogClaim {
            writer: self,
            len,
            done: false,
            commit_on_drop: true,
        })
    }

    /// The furthest the tail may go: a log ahead of the slowest live
    /// back-pressuring reader, and never more than a log ahead of the tail now — a
    /// reader that joins after this scan joins at the tail or later, so it is safe
    /// until the next one. A reader that would hold back a claim ending at `end`
    /// while its process is gone or its heartbeat is older than `timeout_ns` loses
    /// its slot (counted).
    fn scan_readers(&mut self, end: u64) -> u64 {
        // (a `LogBeat` on another thread may have moved the heartbeat on)
        let beat = self.map.atomic_u64(OFF_HEARTBEAT).load(Ordering::Acquire);
        self.now = self.now.max(beat);
        let (now_ns, timeout_ns) = (self.now, self.reader_timeout);
        let cap = self.map.capacity;
        let mut limit = self.tail.saturating_add(cap);
        for i in 0..MAX_READERS {
            let state = self.map.slot_u32(i, SLOT_STATE);
            if state.load(Ordering::Acquire) != LIVE {
                continue;
            }
            if self.map.slot_u32(i, SLOT_FLAGS).load(Ordering::Relaxed) & HOLDS == 0 {
                // An observer: never waited for; freed once its heartbeat is stale.
                let beat = self.map.slot_u64(i, SLOT_HEARTBEAT).load(Ordering::Acquire);
                if now_ns.saturating_sub(beat) > timeout_ns
                    && state
                        .compare_exchange(LIVE, FREE, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.counters.readers_evicted = self.counters.readers_evicted.saturating_add(1);
                }
                continue;
            }
            let position = self.map.slot_u64(i, SLOT_POSITION).load(Ordering::Acquire);
            let reach = position.saturating_add(cap);
            if reach < end {
                let beat = self.map.slot_u64(i, SLOT_HEARTBEAT).load(Ordering::Acquire);
                let pid = self.map.slot_u32(i, SLOT_PID).load(Ordering::Relaxed);
                if now_ns.saturating_sub(beat) > timeout_ns || !process_alive(pid) {
                    if state
                        .compare_exchange(LIVE, FREE, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.counters.readers_evicted =
                            self.counters.readers_evicted.saturating_add(1);
                    }
                    continue;
                }
            }
            limit = limit.min(reach);
        }
        limit
    }

    /// Tells readers the writer is alive, and gives it the time against which
    /// readers' heartbeats are judged: call it at least every half reader timeout
    /// (and, while back-pressured, before retrying, or a dead reader is never
    /// found out).
    pub fn heartbeat(&mut self, now_ns: u64) {
        self.now = self.now.max(now_ns);
        self.map
            .atomic_u64(OFF_HEARTBEAT)
            .fetch_max(now_ns, Ordering::AcqRel);
    }

    /// A handle that heart-beats this log from another thread (a node's timer
    /// thread, for a publisher that may be idle for long).
    pub fn beat_handle(&self) -> LogBeat {
        LogBeat {
            map: self.map.clone(),
            reader_timeout: self.reader_timeout,
        }
    }

    /// Readers with a slot: back-pressuring ones, and observers whose heartbeat is
    /// fresh.
    pub fn readers(&self) -> usize {
        self.map.readers(self.now, self.reader_timeout)
    }
}

impl Drop for LogWriter {
    /// A clean close: readers drain what is there, then see the writer gone. The
    /// name goes at once (mapped readers keep their mapping).
    fn drop(&mut self) {
        self.map.atomic_u32(OFF_CLOSED).store(1, Ordering::Release);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A record being written in place.
pub struct LogClaim<'a> {
    writer: &'a mut LogWriter,
    len: usize,
    done: bool,
    /// Dropped uncommitted: published as it is (else nothing is).
    commit_on_drop: bool,
}

impl LogClaim<'_> {
    /// The record's bytes, as written so far.
    pub fn bytes(&self) -> &[u8] {
        let at = self.writer.map.at(self.writer.tail) + RECORD_HEADER;
        // SAFETY: as for `payload`; shared access for reading what this process
        // wrote (no reader is lent these bytes before the commit).
        unsafe { std::slice::from_raw_parts(self.writer.map.map.as_ptr().add(at), self.len) }
    }

    /// The record's bytes, in the log.
    pub fn payload(&mut self) -> &mut [u8] {
        let at = self.writer.map.at(self.writer.tail) + RECORD_HEADER;
        // SAFETY: `at..at + len` lies in the data area (the claim checked the record
        // fits before the ring's end); no reader reads it as this record before the
        // tail passes it, a lapped reader copying the old bytes sees the claim and
        // drops its copy, and a back-pressuring reader is never lent bytes a claim
        // may cover; `&mut self` makes this the only reference in this process.
        unsafe {
            std::slice::from_raw_parts_mut(self.writer.map.map.as_mut_ptr().add(at), self.len)
        }
    }

    /// Publishes the record; returns its sequence number.
    pub fn commit(mut self) -> u64 {
        self.publish()
    }

    fn publish(&mut self) -> u64 {
        self.done = true;
        let w = &mut *self.writer;
        let position = w.tail;
        let seq = w.seq;
        w.map.seq_word(position).store(seq, Ordering::Relaxed);
        let lap = u64::from(w.map.lap(position));
        w.map
            .commit_word(position)
            .store(lap << 32 | (self.len as u64 + 1), Ordering::Release);
        w.tail += aligned(self.len);
        w.seq += 1;
        w.map
            .atomic_u64(OFF_NEXT_SEQ)
            .store(w.seq, Ordering::Relaxed);
        w.map.tail().store(w.tail, Ordering::Release);
        w.map
            .atomic_u64(OFF_LAST)
            .store(position, Ordering::Release);
        seq
    }
}

impl Drop for LogClaim<'_> {
    fn drop(&mut self) {
        if !self.done && self.commit_on_drop {
            self.publish();
        }
    }
}

/// What a log's header says besides its records: set by its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMeta<'a> {
    /// The writer's session.
    pub session: u64,
    /// The topic its records carry (at most [`MAX_TOPIC`] bytes; may be empty).
    pub topic: &'a str,
    /// The writer's network address (IPv4 << 16 | port), 0 when none.
    pub source: u64,
}

/// Heart-beats a log from another thread than its writer's (see
/// [`LogWriter::beat_handle`]).
pub struct LogBeat {
    map: std::sync::Arc<Map>,
    reader_timeout: u64,
}

impl std::fmt::Debug for LogBeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBeat").finish_non_exhaustive()
    }
}

impl LogBeat {
    /// As [`LogWriter::heartbeat`]: the writer is alive at `now_ns` (never moves
    /// the heartbeat back).
    pub fn beat(&self, now_ns: u64) {
        self.map
            .atomic_u64(OFF_HEARTBEAT)
            .fetch_max(now_ns, Ordering::AcqRel);
    }

    /// As [`LogWriter::readers`].
    pub fn readers(&self) -> usize {
        self.map.readers(0, self.reader_timeout)
    }

    /// Whether every live reader's slot is at the tail: all of it was read.
    pub fn all_read(&self) -> bool {
        let tail = self.map.tail().load(Ordering::Acquire);
        let timeout = self.reader_timeout;
        let now = self.map.atomic_u64(OFF_HEARTBEAT).load(Ordering::Acquire);
        (0..MAX_READERS).all(|i| {
            self.map.slot_u32(i, SLOT_STATE).load(Ordering::Acquire) != LIVE
                // (a reader gone quiet for the timeout is not waited for)
                || now.saturating_sub(self.map.slot_u64(i, SLOT_HEARTBEAT).load(Ordering::Acquire))
                    > timeout
                || self.map.slot_u64(i, SLOT_POSITION).load(Ordering::Acquire) >= tail
        })
    }

    /// Records the writer published so far.
    pub fn published(&self) -> u64 {
        self.map.atomic_u64(OFF_NEXT_SEQ).load(Ordering::Relaxed)
    }
}

/// A log's header as a reader deciding whether to open it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// Where it is.
    pub path: PathBuf,
    /// Its writer's session.
    pub session: u64,
    /// Its writer's process.
    pub pid: u32,
    /// The topic its records carry.
    pub topic: String,
    /// When it was made (the writer's clock, as passed to create).
    pub created_ns: u64,
    /// Its writer's network address (IPv4 << 16 | port), 0 when none.
    pub source: u64,
}

/// Reads the header of the log at `path` (no mapping: one read), or `None` when it
/// is not a complete log of this version.
pub fn read_meta(path: &Path) -> Option<LogInfo> {
    use std::io::Read;
    let mut b = vec![0u8; HEADER_LEN];
    File::open(path).ok()?.read_exact(&mut b).ok()?;
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    if u64_at(OFF_MAGIC) != MAGIC || u32_at(OFF_VERSION) != VERSION {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([b[OFF_TOPIC], b[OFF_TOPIC + 1]]));
    if len > MAX_TOPIC {
        return None;
    }
    let topic = std::str::from_utf8(&b[OFF_TOPIC + 2..OFF_TOPIC + 2 + len]).ok()?;
    Some(LogInfo {
        path: path.to_path_buf(),
        session: u64_at(OFF_SESSION),
        pid: u32_at(OFF_PID),
        topic: topic.to_string(),
        created_ns: u64_at(OFF_CREATED),
        source: u64_at(OFF_SOURCE),
    })
}

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// After the latest record (a late joiner).
    Live,
    /// At the first record (for a log made after the reader's subscription: what
    /// the writer already overwrote is reported lost).
    Start,
}

/// What a reader finds.
#[derive(Debug, PartialEq, Eq)]
pub enum LogEvent<'a> {
    /// The next record.
    Message {
        /// Its sequence number (the writer's count of records before it).
        seq: u64,
        /// Its bytes: in the log itself for a back-pressuring reader, else a copy.
        payload: &'a [u8],
    },
    /// Records the writer overwrote before this reader got to them.
    Lost {
        /// The first one lost.
        from_seq: u64,
        /// How many.
        count: u64,
    },
    /// The writer closed the log (everything before was delivered) or its process
    /// is gone; nothing more will come.
    Gone,
}

/// One reader of a log.
pub struct LogReader {
    map: Map,
    /// Position of the next record to read.
    position: u64,
    /// The sequence number expected next (`None` until the first record).
    expected: Option<u64>,
    slot: Option<usize>,
    /// It asked to back-pressure the writer (its slot, if it has one, holds it).
    holds: bool,
    /// Records from here on are lent in place (with a slot); before it — a reader
    /// that joined at the start catching up — they are copied and checked, as the
    /// writer may have scanned the slots before this reader's slot was there.
    safe_from: u64,
    copy: Vec<u8>,
    gone: bool,
    /// When the writer was last seen alive (its heartbeat, or progress).
    writer_seen: u64,
    /// This process (`getpid` is a system call: asked once).
    pid: u32,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("position", &self.position)
            .field("back_pressure", &self.back_pressures())
            .finish()
    }
}

impl LogReader {
    /// Opens a log to read from its live end. With `back_pressure`, takes a slot the
    /// writer waits for (records are then lent in place); without one, or when every
    /// slot is taken, reads copies and may be lapped.
    pub fn open(path: &Path, back_pressure: bool, now_ns: u64) -> Result<LogReader, LogError> {
        Self::open_from(path, back_pressure, now_ns, Join::Live)
    }

    /// [`open`](Self::open), joining where `join` says. A back-pressuring reader
    /// that joins at the start holds the writer from the tail as it was when it
    /// took its slot; what it reads before that is copied (and what the writer
    /// overwrote meanwhile reported lost).
    pub fn open_from(
        path: &Path,
        back_pressure: bool,
        now_ns: u64,
        join: Join,
    ) -> Result<LogReader, LogError> {
        // Read and write: a reader's slot is in the header.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < (HEADER_LEN + MIN_CAPACITY) as u64 {
            return Err(LogError::NotALog(path.to_path_buf()));
        }
        let raw = MmapRaw::map_raw(&file).map_err(io(path))?;
        let probe = Map {
            map: raw,
            capacity: 0,
        };
        let capacity = probe.atomic_u64(OFF_CAPACITY).load(Ordering::Relaxed);
        if probe.atomic_u64(OFF_MAGIC).load(Ordering::Acquire) != MAGIC
            || probe.atomic_u32(OFF_VERSION).load(Ordering::Relaxed) != VERSION
            || !capacity.is_power_of_two()
            || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&capacity)
            || HEADER_LEN as u64 + capacity != len
        {
            return Err(LogError::NotALog(path.to_path_buf()));
        }
        let map = Map {
            map: probe.map,
            capacity,
        };
        let mut r = LogReader {
            position: 0,
            expected: None,
            slot: None,
            holds: false,
            safe_from: 0,
            copy: Vec::new(),
            gone: false,
            writer_seen: now_ns,
            pid: std::process::id(),
            map,
        };
        r.holds = back_pressure;
        r.slot = r.take_slot(now_ns);
        match join {
            Join::Live => {
                // The live end, read after the slot is published so the writer
                // cannot lap the position taken.
                (r.position, r.expected) = r.live_end();
                r.safe_from = r.position;
                if let Some(i) = r.slot {
                    r.map
                        .slot_u64(i, SLOT_POSITION)
                        .store(r.position, Ordering::Release);
                }
            }
            Join::Start => {
                // The slot stays at the tail it was taken at: safe from there.
                r.safe_from = match r.slot {
                    Some(i) => r.map.slot_u64(i, SLOT_POSITION).load(Ordering::Relaxed),
                    None => u64::MAX,
                };
                (r.position, r.expected) = (0, Some(0));
            }
        }
        Ok(r)
    }

    /// Where a reader joins: after the latest record, expecting the sequence number
    /// after its own (so a reader lapped before it read anything is told too).
    fn live_end(&self) -> (u64, Option<u64>) {
        let cap = self.map.capacity;
        for _ in 0..4 {
            if self.map.atomic_u64(OFF_NEXT_SEQ).load(Ordering::Acquire) == 0 {
                // nothing published yet (or record 0 just now: read from there)
                return (0, Some(0));
            }
            let last = self.map.atomic_u64(OFF_LAST).load(Ordering::Acquire);
            let word = self.map.commit_word(last).load(Ordering::Acquire);
            let seq = self.map.seq_word(last).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let claim = self.map.atomic_u64(OFF_CLAIM).load(Ordering::Relaxed);
            let len = word & LEN_MASK;
            if claim <= last.saturating_add(cap) && word & PADDING == 0 && len > 0 {
                return (
                    last.saturating_add(aligned((len - 1) as usize)),
                    Some(seq.wrapping_add(1)),
                );
            }
        }
        // (lapped at once, four times: join at the tail, counting from what comes)
        (self.map.tail().load(Ordering::Acquire), None)
    }

    fn take_slot(&self, now_ns: u64) -> Option<usize> {
        // Held at the tail as it is now until the real position is stored: the
        // writer may not lap it meanwhile.
        let tail = self.map.tail().load(Ordering::Acquire);
        for i in 0..MAX_READERS {
            let state = self.map.slot_u32(i, SLOT_STATE);
            // Owned first, then filled, then published: two readers racing for one
            // slot cannot mix their fields. (A reader killed between the two steps
            // leaves its slot claimed, never live: it holds nobody back and is one
            // of MAX_READERS lost until the log is made again.)
            if state
                .compare_exchange(FREE, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            self.map
                .slot_u64(i, SLOT_POSITION)
                .store(tail, Ordering::Relaxed);
            self.map
                .slot_u32(i, SLOT_PID)
                .store(self.pid, Ordering::Relaxed);
            self.map
                .slot_u64(i, SLOT_HEARTBEAT)
                .store(now_ns, Ordering::Relaxed);
            self.map
                .slot_u32(i, SLOT_FLAGS)
                .store(if self.holds { HOLDS } else { 0 }, Ordering::Relaxed);
            state.store(LIVE, Ordering::Release);
            return Some(i);
        }
        None
    }

    /// Whether the writer waits for this reader (it holds a slot).
    pub fn back_pressures(&self) -> bool {
        self.holds && self.slot.is_some()
    }

    /// The writer's session id.
    pub fn session(&self) -> u64 {
        self.map.atomic_u64(OFF_SESSION).load(Ordering::Relaxed)
    }

    /// The writer's network address (IPv4 << 16 | port), 0 when none.
    pub fn source(&self) -> u64 {
        self.map.atomic_u64(OFF_SOURCE).load(Ordering::Relaxed)
    }

    /// Hands up to `max` events to `f`; returns how many. `timeout_ns`: a writer
    /// whose process is gone, or that neither wrote nor heart-beat for that long, is
    /// reported [`LogEvent::Gone`] once this reader has read everything complete.
    pub fn poll(
        &mut self,
        max: usize,
        now_ns: u64,
        timeout_ns: u64,
        f: &mut dyn FnMut(LogEvent<'_>),
    ) -> usize {
        if self.gone {
            return 0;
        }
        self.keep_slot(now_ns);
        let mut n = 0;
        // Rejoins per call are bounded: a writer lapping this reader faster than it
        // reads (or a corrupt log) cannot keep it here.
        let mut rejoins = 0;
        while n < max {
            match self.next_record(f, false) {
                Step::Handed => n += 1,
                Step::Padding => {}
                Step::Lapped if rejoins < 2 => rejoins += 1,
                Step::Lapped | Step::Empty => break,
            }
        }
        if let Some(i) = self.slot {
            // (never below where the slot was taken: see `safe_from`)
            self.map
                .slot_u64(i, SLOT_POSITION)
                .store(self.position.max(self.safe_from), Ordering::Release);
        }
        if n > 0 {
            self.writer_seen = now_ns;
        } else if n < max && self.writer_gone(now_ns, timeout_ns) {
            // (what it completed but had not published yet)
            while n < max {
                match self.next_record(f, true) {
                    Step::Handed => n += 1,
                    Step::Padding => {}
                    Step::Lapped | Step::Empty => break,
                }
            }
            if n > 0 {
                return n;
            }
            self.gone = true;
            // Skipped when lapped and never followed by a record: the writer's count
            // is final now.
            let last = self.map.atomic_u64(OFF_NEXT_SEQ).load(Ordering::Acquire);
            if let Some(e) = self.expected.filter(|&e| last > e) {
                f(LogEvent::Lost {
                    from_seq: e,
                    count: last - e,
                });
            }
            f(LogEvent::Gone);
            n += 1;
        }
        n
    }

    /// Heartbeats the slot; a slot the writer freed (this reader was too slow to
    /// answer) is lost: reading goes on without back-pressure.
    fn keep_slot(&mut self, now_ns: u64) {
        let Some(i) = self.slot else { return };
        let live = self.map.slot_u32(i, SLOT_STATE).load(Ordering::Acquire) == LIVE
            && self.map.slot_u32(i, SLOT_PID).load(Ordering::Relaxed) == self.pid;
        if live {
            self.map
                .slot_u64(i, SLOT_HEARTBEAT)
                .store(now_ns, Ordering::Release);
        } else {
            self.slot = None;
        }
    }

    fn writer_gone(&mut self, now_ns: u64, timeout_ns: u64) -> bool {
        let beat = self.map.atomic_u64(OFF_HEARTBEAT).load(Ordering::Acquire);
        self.writer_seen = self.writer_seen.max(beat);
        let complete = self.position == self.map.tail().load(Ordering::Acquire);
        if self.map.atomic_u32(OFF_CLOSED).load(Ordering::Acquire) != 0 && complete {
            return true;
        }
        // (a writer that died mid-record leaves the tail before it: stop there)
        now_ns.saturating_sub(self.writer_seen) > timeout_ns || !process_alive(self.map.pid())
    }

    /// The next record. Everything before the tail is committed (the tail is stored
    /// after the commit word); with `past_tail` (the writer is gone: nothing moves
    /// any more) a record whose commit word is stored but whose tail is not — a
    /// writer killed between the two — is read too.
    fn next_record(&mut self, f: &mut dyn FnMut(LogEvent<'_>), past_tail: bool) -> Step {
        let cap = self.map.capacity;
        let position = self.position;
        let mut tail = self.map.tail().load(Ordering::Acquire);
        // Past the tail, a record that does not check out is one never committed
        // (not one overwritten): nothing to read, not a lap.
        let beyond = past_tail && position >= tail;
        if beyond {
            tail = position.saturating_add(cap);
        }
        if position >= tail {
            return Step::Empty;
        }
        if tail - position > cap {
            return self.lapped();
        }
        let word = self.map.commit_word(position).load(Ordering::Acquire);
        let len = word & LEN_MASK;
        let fits = (position & (cap - 1)) + len <= cap;
        if (word >> 32) as u32 != self.map.lap(position) || len == 0 || !fits {
            return if beyond { Step::Empty } else { self.lapped() }; // overwritten since the tail was read
        }
        if word & PADDING != 0 {
            self.position = position.saturating_add(len);
            return Step::Padding;
        }
        let len = (len - 1) as usize;
        if (position & (cap - 1)) + aligned(len) > cap {
            return if beyond { Step::Empty } else { self.lapped() };
        }
        let seq = self.map.seq_word(position).load(Ordering::Relaxed);
        let at = self.map.at(position) + RECORD_HEADER;
        // SAFETY: `at .. at + len` is inside the data area (checked: the record fits
        // before the ring's end) and the map lives as long as `self`. Bytes another
        // process may change: read as plain bytes (any value is valid), and either
        // the writer is held off them (back-pressure) or the copy is checked below.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.map.as_ptr().add(at), len) };
        let payload: &[u8] = if self.back_pressures() && position >= self.safe_from {
            // The writer cannot claim these bytes before this reader's position
            // moves past them: lent in place.
            bytes
        } else {
            self.copy.clear();
            self.copy.extend_from_slice(bytes);
            fence(Ordering::Acquire);
            let claim = self.map.atomic_u64(OFF_CLAIM).load(Ordering::Relaxed);
            if claim > position.saturating_add(cap) {
                return self.lapped(); // overwritten while it was copied
            }
            &self.copy
        };
        if let Some(e) = self.expected.filter(|&e| seq > e) {
            f(LogEvent::Lost {
                from_seq: e,
                count: seq - e,
            });
        }
        f(LogEvent::Message { seq, payload });
        self.expected = Some(seq.wrapping_add(1));
        self.position = position.saturating_add(aligned(len));
        Step::Handed
    }

    /// The writer overwrote this reader's position: rejoin at the latest record
    /// (Aeron's untethered subscriber rejoining live). Reading it tells what was
    /// skipped (its sequence number gives the count); were it overwritten too, the
    /// next record read does, or [`LogEvent::Gone`].
    fn lapped(&mut self) -> Step {
        // (the tail stored before it is visible with it)
        let last = self.map.atomic_u64(OFF_LAST).load(Ordering::Acquire);
        if last <= self.position {
            // (never backwards: that would hand out records again)
            return Step::Empty;
        }
        self.position = last;
        Step::Lapped
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        // (a slot the writer freed may be another process's by now: left alone)
        if let Some(i) = self.slot {
            if self.map.slot_u32(i, SLOT_PID).load(Ordering::Relaxed) == self.pid {
                let _ = self.map.slot_u32(i, SLOT_STATE).compare_exchange(
                    LIVE,
                    FREE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

enum Step {
    Handed,
    Padding,
    Lapped,
    Empty,
}

/// Removes the logs in `dir` whose writer process is gone (best effort).
pub fn remove_dead_logs(dir: &Path) -> usize {
    let mut removed = 0;
    for path in log_files(dir, "", usize::MAX) {
        let Ok(bytes) = read_head(&path) else {
            continue;
        };
        let magic =
            u64::from_le_bytes(bytes[OFF_MAGIC..OFF_MAGIC + 8].try_into().unwrap_or([0; 8]));
        let pid = u32::from_le_bytes(bytes[OFF_PID..OFF_PID + 4].try_into().unwrap_or([0; 4]));
        if magic == MAGIC && !process_alive(pid) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The log files in `dir` whose names start with `prefix` (at most `max` entries of
/// the directory looked at).
pub(crate) fn log_files(dir: &Path, prefix: &str, max: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .take(max)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(prefix) && n.ends_with(SUFFIX)
        })
        .map(|e| e.path())
        .collect()
}

fn read_head(path: &Path) -> std::io::Result<[u8; 64]> {
    use std::io::Read;
    let mut b = [0u8; 64];
    File::open(path)?.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
impl LogWriter {
    /// Pretends the writer is process `pid` (a dead one, in tests).
    fn set_pid(&self, pid: u32) {
        self.map.atomic_u32(OFF_PID).store(pid, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const CAP: usize = MIN_CAPACITY;
    const SEC: u64 = 1_000_000_000;

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("ringcast-log-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Record `seq`'s bytes: its length and contents follow from `seq`.
    fn body(seq: u64) -> Vec<u8> {
        let len = (seq * 37 % 301) as usize;
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    /// Everything a reader is handed, in order.
    #[derive(Debug, PartialEq)]
    enum Got {
        Msg(u64, Vec<u8>),
        Lost(u64, u64),
        Gone,
    }

    fn drain(r: &mut LogReader, now: u64, timeout: u64) -> Vec<Got> {
        let mut got = Vec::new();
        while r.poll(64, now, timeout, &mut |e| {
            got.push(match e {
                LogEvent::Message { seq, payload } => Got::Msg(seq, payload.to_vec()),
                LogEvent::Lost { from_seq, count } => Got::Lost(from_seq, count),
                LogEvent::Gone => Got::Gone,
            })
        }) > 0
        {}
        got
    }

    #[test]
    fn the_header_names_topic_session_source_and_creation_and_a_beat_handle_keeps_it_alive() {
        let dir = Dir::new("meta");
        let meta = LogMeta {
            session: 0xabcd,
            topic: "/md/eurusd",
            source: 0x7f00_0001_1234,
        };
        let w = LogWriter::create_with(&dir.0, "m", CAP, &meta, 5 * SEC, SEC).unwrap();
        let info = read_meta(w.path()).unwrap();
        assert_eq!(
            (
                info.session,
                info.pid,
                info.topic.as_str(),
                info.created_ns,
                info.source
            ),
            (
                0xabcd,
                std::process::id(),
                "/md/eurusd",
                5 * SEC,
                0x7f00_0001_1234
            )
        );
        let long = "x".repeat(MAX_TOPIC + 1);
        let too_long = LogMeta {
            topic: &long,
            ..meta
        };
        assert!(matches!(
            LogWriter::create_with(&dir.0, "n", CAP, &too_long, 0, SEC),
            Err(LogError::TopicTooLong(_))
        ));
        // An idle writer whose node beats for it is not declared gone.
        let mut r = LogReader::open(w.path(), false, 5 * SEC).unwrap();
        let beat = w.beat_handle();
        for t in 6..20 {
            beat.beat(t * SEC);
            assert_eq!(drain(&mut r, t * SEC, 2 * SEC), vec![], "at {t} s");
        }
        beat.beat(SEC); // never backwards
        assert_eq!(drain(&mut r, 20 * SEC, 2 * SEC), vec![]);
        assert_eq!(drain(&mut r, 22 * SEC + 1, 2 * SEC), vec![Got::Gone]);
        assert!(read_meta(&dir.0.join("nothing")).is_none());
    }

    #[test]
    fn a_reader_joining_at_the_start_gets_what_came_before_it_then_holds_the_writer() {
        let dir = Dir::new("start");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        for seq in 0..100 {
            w.offer(&body(seq)).unwrap();
        }
        let mut r = LogReader::open_from(w.path(), true, 0, Join::Start).unwrap();
        let mut copy = LogReader::open_from(w.path(), false, 0, Join::Start).unwrap();
        assert!(r.back_pressures());
        // What came before it (copied), then what comes after.
        let mut got = drain(&mut r, 0, SEC);
        // Held from where it took its slot: the writer stops a log past it.
        let mut seq = 100;
        while w.offer(&body(seq)).is_ok() {
            seq += 1;
        }
        got.extend(drain(&mut r, 0, SEC));
        let want: Vec<Got> = (0..seq).map(|s| Got::Msg(s, body(s))).collect();
        assert!(got == want, "{} events for {seq} records", got.len());
        // The copying one was lapped (nobody waits for it): told what it lost.
        let got = drain(&mut copy, 0, SEC);
        assert!(
            matches!(got[0], Got::Lost(0, n) if n > 0),
            "{:?}",
            &got[..1]
        );
        // Joining at the start of a log lapped long ago: the loss, then live records.
        let mut late = LogReader::open_from(w.path(), false, 0, Join::Start).unwrap();
        w.offer(&body(seq)).unwrap();
        let got = drain(&mut late, 0, SEC);
        assert!(matches!(got[0], Got::Lost(0, _)), "{:?}", &got[..1]);
        assert_eq!(got.last(), Some(&Got::Msg(seq, body(seq))));
    }

    #[test]
    fn three_back_pressuring_readers_get_every_record_in_order_byte_exact() {
        const N: u64 = 200_000;
        let dir = Dir::new("three");
        let t0 = Instant::now();
        let now = move || t0.elapsed().as_nanos() as u64;
        let mut w = LogWriter::create(&dir.0, "s", CAP, 7, now(), SEC).unwrap();
        let readers: Vec<_> = (0..3)
            .map(|_| LogReader::open(w.path(), true, now()).unwrap())
            .collect();
        assert_eq!(w.readers(), 3);
        assert!(readers
            .iter()
            .all(|r| r.back_pressures() && r.session() == 7));
        let threads: Vec<_> = readers
            .into_iter()
            .map(|mut r| {
                std::thread::spawn(move || {
                    let mut next = 0u64;
                    let mut gone = false;
                    while !gone {
                        r.poll(256, now(), 10 * SEC, &mut |e| match e {
                            LogEvent::Message { seq, payload } => {
                                assert_eq!(seq, next, "out of order");
                                assert_eq!(payload, &body(seq)[..], "record {seq}");
                                next += 1;
                            }
                            LogEvent::Lost { .. } => panic!("lost under back-pressure: {e:?}"),
                            LogEvent::Gone => gone = true,
                        });
                        std::thread::yield_now();
                    }
                    next
                })
            })
            .collect();
        let mut refused = 0u64;
        for seq in 0..N {
            let b = body(seq);
            loop {
                match w.offer(&b) {
                    Ok(s) => {
                        assert_eq!(s, seq);
                        break;
                    }
                    Err(LogError::BackPressured) => {
                        refused += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // ~15 MB through a 64 KiB log: the readers held the writer back, and wrapped it.
        assert!(refused > 0);
        assert_eq!(w.counters().back_pressured, refused);
        assert_eq!(w.counters().readers_evicted, 0);
        drop(w);
        for t in threads {
            assert_eq!(t.join().unwrap(), N);
        }
    }

    /// A writer that never waits and a reader that falls behind, on two threads:
    /// every record handed is byte-exact and in order, and handed + lost = written.
    #[test]
    fn a_reader_lapped_while_it_reads_never_gets_torn_bytes() {
        const N: u64 = 300_000;
        let dir = Dir::new("race");
        let t0 = Instant::now();
        let now = move || t0.elapsed().as_nanos() as u64;
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, now(), SEC).unwrap();
        let mut r = LogReader::open(w.path(), false, now()).unwrap();
        let reader = std::thread::spawn(move || {
            let (mut handed, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            let mut gone = false;
            let mut polls = 0u64;
            while !gone {
                polls += 1;
                r.poll(32, now(), 10 * SEC, &mut |e| match e {
                    LogEvent::Message { seq, payload } => {
                        assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                        assert_eq!(payload, &body(seq)[..], "record {seq} torn");
                        last = Some(seq);
                        handed += 1;
                    }
                    LogEvent::Lost { from_seq, count } => {
                        assert_eq!(Some(from_seq), last.map(|l| l + 1).or(Some(0)));
                        lost += count;
                    }
                    LogEvent::Gone => gone = true,
                });
                if polls % 64 == 0 {
                    // fall behind now and then
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            (handed, lost)
        });
        for seq in 0..N {
            w.offer(&body(seq)).unwrap();
        }
        drop(w);
        let (handed, lost) = reader.join().unwrap();
        assert_eq!(handed + lost, N, "handed {handed}, lost {lost}");
        eprintln!("race: handed {handed}, lost {lost}");
        assert!(handed > 0);
    }

    /// The writer ran ahead with nobody reading, then a back-pressuring reader
    /// joins: from then on the writer waits for it (it was once free to lap it).
    #[test]
    fn a_reader_joining_a_running_writer_is_never_lapped() {
        let dir = Dir::new("join");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let payload = [3u8; 1000];
        for _ in 0..(3 * CAP / 1000) {
            w.offer(&payload).unwrap();
        }
        let mut r = LogReader::open(w.path(), true, 0).unwrap();
        let first = w.next_seq();
        let mut offered = 0u64;
        while w.offer(&payload).is_ok() {
            offered += 1;
            assert!(
                offered <= CAP as u64 / 1000,
                "the writer ran past its reader"
            );
        }
        let got = drain(&mut r, 0, SEC);
        assert_eq!(got.len() as u64, offered);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g, &Got::Msg(first + i as u64, payload.to_vec()));
        }
    }

    /// Readers joining at once each get a slot of their own, and give it back.
    #[test]
    fn readers_joining_at_once_get_slots_of_their_own() {
        let dir = Dir::new("slots");
        let w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let path = w.path().to_path_buf();
        let readers: Vec<LogReader> = std::thread::scope(|sc| {
            let joins: Vec<_> = (0..MAX_READERS + 8)
                .map(|_| sc.spawn(|| LogReader::open(&path, true, 0).unwrap()))
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let mut slots: Vec<usize> = readers.iter().filter_map(|r| r.slot).collect();
        assert_eq!(
            slots.len(),
            MAX_READERS,
            "the rest read without back-pressure"
        );
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), MAX_READERS, "a slot given twice");
        assert_eq!(w.readers(), MAX_READERS);
        drop(readers);
        assert_eq!(w.readers(), 0);
    }

    #[test]
    fn a_lapped_reader_is_told_exactly_what_it_lost_then_reads_on() {
        let dir = Dir::new("lapped");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let mut r = LogReader::open(w.path(), false, 0).unwrap();
        assert!(!r.back_pressures());
        for seq in 0..10 {
            w.offer(&body(seq)).unwrap();
        }
        let mut got = Vec::new();
        r.poll(5, 0, SEC, &mut |e| {
            if let LogEvent::Message { seq, .. } = e {
                got.push(seq)
            }
        });
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // Many laps of the ring: the reader never held the writer.
        for seq in 10..10_000 {
            w.offer(&body(seq)).unwrap();
        }
        let got = drain(&mut r, 0, SEC);
        let Some(Got::Lost(5, lost)) = got.first() else {
            panic!("no loss first: {:?}", &got[..3.min(got.len())]);
        };
        let first = 5 + lost;
        assert!(first < 10_000 && first > 5);
        for (i, g) in got[1..].iter().enumerate() {
            let seq = first + i as u64;
            assert_eq!(g, &Got::Msg(seq, body(seq)));
        }
        assert_eq!(
            5 + lost + (got.len() as u64 - 1),
            10_000,
            "delivered + lost"
        );
        // A reader that read one record, then lapped by ten thousand.
        for seq in 10_000..20_000 {
            w.offer(&body(seq)).unwrap();
        }
        let mut r2 = LogReader::open(w.path(), false, 0).unwrap();
        w.offer(&body(20_000)).unwrap();
        assert_eq!(drain(&mut r2, 0, SEC), [Got::Msg(20_000, body(20_000))]);
        for seq in 20_001..30_000 {
            w.offer(&body(seq)).unwrap();
        }
        drop(w);
        // (it rejoins at the latest record: told the loss, given that record)
        let got = drain(&mut r2, 0, SEC);
        let lost: u64 = got
            .iter()
            .map(|g| if let Got::Lost(_, n) = g { *n } else { 0 })
            .sum();
        let read = got.iter().filter(|g| matches!(g, Got::Msg(..))).count() as u64;
        assert_eq!(lost + read, 9_999, "{:?}", &got[..2]);
        assert_eq!(got.last(), Some(&Got::Gone));
    }

    #[test]
    fn a_writer_that_dies_mid_record_leaves_every_complete_record_then_gone() {
        let dir = Dir::new("crash");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let path = w.path().to_path_buf();
        let mut r = LogReader::open(&path, true, 0).unwrap();
        for seq in 0..100 {
            w.offer(&body(seq)).unwrap();
        }
        let mut c = w.try_claim(200).unwrap();
        c.payload()[..100].fill(0xee);
        // The process "dies" here: no commit, no close.
        std::mem::forget(c);
        w.set_pid(dead_pid());
        std::mem::forget(w);
        let got = drain(&mut r, 0, SEC);
        assert_eq!(got.len(), 101, "{:?}", got.last());
        for (seq, g) in got[..100].iter().enumerate() {
            assert_eq!(g, &Got::Msg(seq as u64, body(seq as u64)));
        }
        assert_eq!(got[100], Got::Gone);
        // A new reader sees the same, and the log is removed by the next writer.
        let mut late = LogReader::open(&path, false, 0).unwrap();
        assert_eq!(drain(&mut late, 0, SEC), [Got::Gone]);
        let _next = LogWriter::create(&dir.0, "other", CAP, 2, 0, SEC).unwrap();
        assert!(!path.exists(), "a dead writer's log was left");
    }

    #[test]
    fn a_silent_writer_is_gone_after_the_timeout_and_a_live_one_is_not() {
        let dir = Dir::new("silent");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let mut r = LogReader::open(w.path(), true, 0).unwrap();
        w.offer(b"one").unwrap();
        assert_eq!(drain(&mut r, SEC / 2, SEC), [Got::Msg(0, b"one".to_vec())]);
        w.heartbeat(SEC);
        assert_eq!(drain(&mut r, 2 * SEC - 1, SEC), []);
        assert_eq!(drain(&mut r, 2 * SEC + 1, SEC), [Got::Gone]);
    }

    #[test]
    fn a_stuck_back_pressuring_reader_holds_the_writer_only_until_its_timeout() {
        let dir = Dir::new("stuck");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let mut stuck = LogReader::open(w.path(), true, 0).unwrap();
        let mut seq = 0u64;
        let payload = [7u8; 1000];
        w.heartbeat(SEC / 2);
        loop {
            match w.offer(&payload) {
                Ok(_) => seq += 1,
                Err(LogError::BackPressured) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // A log's worth, and no more, while the reader is within its timeout.
        assert_eq!(seq, (CAP as u64) / aligned(1000));
        assert_eq!(w.counters().readers_evicted, 0);
        // Past it: the slot is freed (counted) and the writer goes on.
        w.heartbeat(2 * SEC);
        w.offer(&payload).unwrap();
        assert_eq!(w.counters().readers_evicted, 1);
        assert_eq!(w.readers(), 0);
        for _ in 0..200 {
            w.offer(&payload).unwrap();
        }
        // The reader wakes up: it lost its slot, reads on as a lapped reader, told.
        let got = drain(&mut stuck, 2 * SEC, SEC);
        assert!(!stuck.back_pressures());
        let lost: u64 = got
            .iter()
            .map(|g| if let Got::Lost(_, n) = g { *n } else { 0 })
            .sum();
        let read = got.iter().filter(|g| matches!(g, Got::Msg(..))).count() as u64;
        assert!(lost > 0);
        assert_eq!(lost + read, seq + 201);
        // A reader that closes frees its slot at once.
        let r = LogReader::open(w.path(), true, 2 * SEC).unwrap();
        assert_eq!(w.readers(), 1);
        drop(r);
        assert_eq!(w.readers(), 0);
    }

    /// Another process of the user scribbling over the log (data, tail, latest
    /// record, claim, reader slots): readers and the writer neither panic nor hang.
    #[test]
    fn a_scribbled_log_never_panics_or_hangs_its_reader_or_writer() {
        use std::os::unix::fs::FileExt;
        let dir = Dir::new("scribble");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let file = OpenOptions::new().write(true).open(w.path()).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut readers: Vec<_> = [true, false]
            .iter()
            .map(|&bp| LogReader::open(w.path(), bp, 0).unwrap())
            .collect();
        for round in 0..300 {
            for seq in 0..20 {
                let _ = w.offer(&body(seq));
            }
            // words of the header and of the data, at random
            for _ in 0..8 {
                let off = match rnd() % 4 {
                    0 => [OFF_TAIL, OFF_LAST, OFF_CLAIM, OFF_NEXT_SEQ][(rnd() % 4) as usize],
                    1 => OFF_SLOTS + (rnd() as usize % (MAX_READERS * SLOT_LEN)) / 8 * 8,
                    _ => HEADER_LEN + (rnd() as usize % CAP) / 8 * 8,
                } as u64;
                let v = match rnd() % 3 {
                    0 => rnd(),
                    1 => rnd() % (4 * CAP as u64),
                    _ => u64::MAX - rnd() % 64,
                };
                file.write_at(&v.to_le_bytes(), off).unwrap();
            }
            for r in readers.iter_mut() {
                let mut events = 0;
                r.poll(64, round, SEC, &mut |_| events += 1);
                assert!(events <= 64 * 2 + 2, "{events} events from one poll");
            }
        }
    }

    /// Set in a child process started by the `kill -9` tests: what it is to be.
    const CHILD: &str = "RINGCAST_SHM_TEST_CHILD";

    /// A child process, killed and reaped when dropped (also when a test fails).
    struct Reap(std::process::Child);
    impl Reap {
        /// SIGKILL, then wait for it.
        fn kill_9(&mut self) {
            self.0.kill().unwrap();
            self.0.wait().unwrap();
        }
    }
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// This test binary again, running only `test` with `role` (see `child_role`).
    fn spawn_child(test: &str, role: &str, path: &Path) -> Reap {
        Reap(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test, "--nocapture", "--test-threads", "1"])
                .env(CHILD, role)
                .env("RINGCAST_SHM_TEST_PATH", path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// In a child: the role it was started for, and the log's path.
    fn child_role() -> Option<(String, PathBuf)> {
        let role = std::env::var(CHILD).ok()?;
        Some((role, std::env::var_os("RINGCAST_SHM_TEST_PATH")?.into()))
    }

    /// A writer process killed with SIGKILL in the middle of a stream: its reader
    /// gets every record it completed, in order, byte-exact, then `Gone`.
    #[test]
    fn kill_9_of_the_writer_leaves_every_complete_record_then_gone() {
        const TEST: &str =
            "ring::log::tests::kill_9_of_the_writer_leaves_every_complete_record_then_gone";
        if let Some((role, dir)) = child_role() {
            assert_eq!(role, "writer");
            let mut w = LogWriter::create(&dir, "k", CAP, 1, 0, 10 * SEC).unwrap();
            let t0 = Instant::now();
            for seq in 0.. {
                while w.offer(&body(seq)).is_err() {
                    std::thread::yield_now();
                }
                if seq % 1024 == 0 && t0.elapsed().as_secs() > 30 {
                    return; // (killed long before, unless the test failed)
                }
            }
            return;
        }
        let dir = Dir::new("kill-writer");
        let mut child = spawn_child(TEST, "writer", &dir.0);
        let path = dir.0.join(format!("k{SUFFIX}"));
        let t0 = Instant::now();
        let mut r = loop {
            if let Ok(r) = LogReader::open(&path, true, 0) {
                break r;
            }
            assert!(t0.elapsed().as_secs() < 20, "the writer never made its log");
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let (mut next, mut gone, mut killed) = (None::<u64>, false, false);
        while !gone {
            r.poll(256, 0, 60 * SEC, &mut |e| match e {
                LogEvent::Message { seq, payload } => {
                    assert!(next.is_none_or(|n| n == seq), "{seq} after {next:?}");
                    assert_eq!(payload, &body(seq)[..], "record {seq}");
                    next = Some(seq + 1);
                }
                LogEvent::Lost { .. } => panic!("lost under back-pressure: {e:?}"),
                LogEvent::Gone => gone = true,
            });
            if !killed && next.is_some_and(|n| n > 50_000) {
                child.kill_9(); // mid-stream
                killed = true;
            }
            assert!(t0.elapsed().as_secs() < 60, "no Gone after the kill");
        }
        assert!(killed, "Gone before the writer was killed");
        // Everything the writer completed was read: no complete record where the
        // reader stopped (at most one begun one), and its count as it died.
        let word = r.map.commit_word(r.position).load(Ordering::Acquire);
        let complete = (word >> 32) as u32 == r.map.lap(r.position) && word & LEN_MASK > 0;
        let tail = r.map.tail().load(Ordering::Acquire);
        assert!(!complete, "a complete record was left unread: word {word:#x} at {} (lap {}), tail {tail}, next {next:?}", r.position, r.map.lap(r.position));
        let counted = r.map.atomic_u64(OFF_NEXT_SEQ).load(Ordering::Acquire);
        assert!(
            next.is_some_and(|n| n == counted || n == counted + 1),
            "{next:?} {counted}"
        );
        // A reader joining now starts after the last record the writer published
        // in full; killed between a record's commit word and its tail, that record
        // is complete yet after the published end: it gets that one, then Gone.
        let mut late = LogReader::open(&path, false, 0).unwrap();
        let got = drain(&mut late, 0, SEC);
        let last = next.map(|n| n - 1);
        assert!(
            matches!(&got[..], [Got::Gone])
                || matches!(&got[..], [Got::Msg(s, _), Got::Gone] if Some(*s) == last),
            "{:?}",
            got.iter()
                .map(|g| match g {
                    Got::Msg(s, _) => format!("msg {s}"),
                    o => format!("{o:?}"),
                })
                .collect::<Vec<_>>()
        );
    }

    /// A back-pressuring reader process killed with SIGKILL while the writer waits
    /// for it: the writer goes on at its next try (the process is gone), long before
    /// the reader timeout.
    #[test]
    fn kill_9_of_a_back_pressuring_reader_releases_the_writer() {
        const TEST: &str =
            "ring::log::tests::kill_9_of_a_back_pressuring_reader_releases_the_writer";
        if let Some((role, path)) = child_role() {
            assert_eq!(role, "reader");
            let _r = LogReader::open(&path, true, 0).unwrap();
            // holds its slot, reads nothing (and ends by itself if not killed)
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        let dir = Dir::new("kill-reader");
        let mut w = LogWriter::create(&dir.0, "k", CAP, 1, 0, 3600 * SEC).unwrap();
        let mut child = spawn_child(TEST, "reader", w.path());
        let t0 = Instant::now();
        while w.readers() == 0 {
            assert!(
                t0.elapsed().as_secs() < 20,
                "the reader never took its slot"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut written = 0u64;
        while w.offer(&[1u8; 1000]).is_ok() {
            written += 1;
        }
        assert!(written <= CAP as u64 / 1000, "ran past a live reader");
        assert!(w.offer(&[1u8; 1000]).is_err(), "still held");
        child.kill_9();
        w.offer(&[1u8; 1000]).unwrap();
        assert_eq!(w.counters().readers_evicted, 1);
        assert_eq!(w.readers(), 0);
    }

    #[test]
    fn files_are_private_and_what_is_not_a_log_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("files");
        let mut w = LogWriter::create(&dir.0, "s", CAP, 1, 0, SEC).unwrap();
        let mode = std::fs::metadata(w.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            w.offer(&vec![0u8; CAP / 2]),
            Err(LogError::TooLarge { .. })
        ));
        for bad in [
            0,
            1000,
            MIN_CAPACITY / 2,
            MAX_CAPACITY * 2,
            MIN_CAPACITY + 1,
        ] {
            assert!(matches!(
                LogWriter::create(&dir.0, "x", bad, 1, 0, SEC),
                Err(LogError::BadCapacity(_))
            ));
        }
        let junk = dir.0.join("junk.rclog");
        std::fs::write(&junk, vec![0x5au8; HEADER_LEN + CAP]).unwrap();
        assert!(matches!(
            LogReader::open(&junk, true, 0),
            Err(LogError::NotALog(_))
        ));
        std::fs::write(&junk, b"short").unwrap();
        assert!(matches!(
            LogReader::open(&junk, false, 0),
            Err(LogError::NotALog(_))
        ));
        assert!(LogReader::open(&dir.0.join("none.rclog"), false, 0).is_err());
        // A clean close removes the name.
        let path = w.path().to_path_buf();
        drop(w);
        assert!(!path.exists());
    }
}
