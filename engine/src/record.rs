//! Recordings (issue 12, point 2): every message a recorder is handed — topic,
//! session, sequence, publish and receive times, payload — appended to memory-mapped
//! segment files in a directory, with a sparse index by receive time and record
//! number, and a reader that iterates a recording or seeks into it.
//!
//! Modelled on Aeron Archive's segment files and Chronicle Queue's mapped journal:
//!
//! ```text
//! DIR/00000000.rcseg, 00000001.rcseg, …   segment: | header (64 B) | records … |
//! record (8-byte aligned): | commit: length + 1 (u32) | topic length (u16) | flags (u16)
//!                          | record number (u64) | session (u64) | seq (u64)
//!                          | publish ns (u64) | receive ns (u64) | topic | payload |
//! DIR/index.rcidx          every INDEX_EVERY-th record: record number, receive ns,
//!                          segment, offset (24 B each, appended)
//! ```
//!
//! The commit word is stored last (release), so a recorder killed mid-message
//! (`kill -9`) leaves a recording that reads up to the last complete message: the
//! stores a process made to a shared mapping are in the page cache when it dies, and
//! a record whose commit word is still 0 is where the recording ends. `u32::MAX` in a
//! commit word means "continued in the next segment". [`Recording::open`] checks
//! this: every record's fields are bounded by its segment, record numbers follow
//! each other, receive times never go back, and every index entry names the record it
//! claims to (an entry past the end — the recorder died between the two writes — is
//! dropped). Nothing in a file is trusted: a damaged one is an error, never a panic.
//!
//! No system call per message: a segment is mapped once, an index entry is written
//! every [`INDEX_EVERY`] records, [`Recorder::flush`] (`msync`) only when asked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{Mmap, MmapRaw};

/// Bytes of a segment's header.
pub const SEGMENT_HEADER: usize = 64;
/// Bytes of a record's header, before its topic and payload.
pub const RECORD_HEADER: usize = 48;
/// An index entry is written for every this many records.
pub const INDEX_EVERY: u64 = 1024;
/// The smallest segment.
pub const MIN_SEGMENT: usize = 64 * 1024;
/// The largest segment (offsets are u32).
pub const MAX_SEGMENT: usize = 1 << 31;
/// Segments a recording may have (names are 8 decimal digits).
pub const MAX_SEGMENTS: u32 = 99_999_999;

const MAGIC: u64 = u64::from_le_bytes(*b"RCRECSG1");
const VERSION: u32 = 1;
const NEXT_SEGMENT: u32 = u32::MAX;
const INDEX_FILE: &str = "index.rcidx";
const INDEX_ENTRY: usize = 24;

/// What can go wrong making, writing or reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file of the recording could not be made, opened, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `Recorder::create` was given a directory that already holds a recording.
    #[error("{0}: already holds a recording")]
    Exists(PathBuf),
    /// The directory holds no recording.
    #[error("{0}: no recording (no 00000000.rcseg)")]
    NotFound(PathBuf),
    /// The segment size is outside [`MIN_SEGMENT`]..=[`MAX_SEGMENT`].
    #[error("segment size {0} outside {MIN_SEGMENT}..={MAX_SEGMENT}")]
    SegmentSize(usize),
    /// A message (with its topic) does not fit in one segment.
    #[error("a record of {len} bytes does not fit in a segment of {segment}")]
    TooLarge {
        /// Bytes the record needs.
        len: usize,
        /// The segment size.
        segment: usize,
    },
    /// A topic longer than 65535 bytes.
    #[error("topic of {0} bytes (at most 65535)")]
    TopicTooLong(usize),
    /// The recording reached [`MAX_SEGMENTS`].
    #[error("the recording is full ({MAX_SEGMENTS} segments)")]
    Full,
    /// A file is not what a recorder writes (damaged, or not a recording).
    #[error("{path} at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.rcseg"))
}

fn padded(len: usize) -> usize {
    (len + 7) & !7
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// One message as the recorder is handed it.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The message's topic.
    pub topic: &'a str,
    /// Its publisher's session.
    pub session: u64,
    /// Its sequence number in that session.
    pub seq: u64,
    /// When it was published (ns since the Unix epoch; 0 when unknown).
    pub publish_ns: u64,
    /// When it was received (ns since the Unix epoch). The recorder keeps receive
    /// times non-decreasing (a clock stepped back records the previous time), so the
    /// index can be searched by time.
    pub receive_ns: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Appends messages to a recording.
pub struct Recorder {
    dir: PathBuf,
    segment_len: usize,
    segment: u32,
    map: MmapRaw,
    offset: usize,
    next_record: u64,
    last_receive_ns: u64,
    index: File,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .field("segment", &self.segment)
            .field("records", &self.next_record)
            .finish_non_exhaustive()
    }
}

/// The header of segment `n` of `len` bytes, magic included.
pub(crate) fn segment_header(n: u32, len: usize) -> [u8; SEGMENT_HEADER] {
    let mut head = [0u8; SEGMENT_HEADER];
    head[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[12..16].copy_from_slice(&n.to_le_bytes());
    head[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    head
}

/// Whether a segment file's magic is still zero (its recorder died making it).
fn header_unwritten(file: &File) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    let mut f = file;
    f.read_exact(&mut magic).is_ok() && magic == [0; 8]
}

fn create_segment(dir: &Path, n: u32, len: usize) -> Result<MmapRaw, RecordError> {
    let path = segment_path(dir, n);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    file.set_len(len as u64).map_err(io(&path))?;
    let map = MmapRaw::map_raw(&file).map_err(io(&path))?;
    let head = segment_header(n, len);
    // SAFETY: the mapping is `len` >= MIN_SEGMENT bytes long, writable, and this
    // process created the file (no one else writes it). The magic goes last, through
    // an atomic: a segment whose magic is set has its whole header.
    unsafe {
        std::ptr::copy_nonoverlapping(
            head.as_ptr().add(8),
            map.as_mut_ptr().add(8),
            SEGMENT_HEADER - 8,
        );
        (*(map.as_mut_ptr() as *const std::sync::atomic::AtomicU64))
            .store(MAGIC, Ordering::Release);
    }
    Ok(map)
}

impl Recorder {
    /// Starts a recording in `dir` (created if missing; it must not already hold
    /// one), in segments of `segment_len` bytes. Files are readable by this user only.
    pub fn create(dir: &Path, segment_len: usize) -> Result<Recorder, RecordError> {
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment_len) {
            return Err(RecordError::SegmentSize(segment_len));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if segment_path(dir, 0).exists() || dir.join(INDEX_FILE).exists() {
            return Err(RecordError::Exists(dir.to_path_buf()));
        }
        let index_path = dir.join(INDEX_FILE);
        let index = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&index_path)
            .map_err(io(&index_path))?;
        let map = create_segment(dir, 0, segment_len)?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            segment_len,
            segment: 0,
            map,
            offset: SEGMENT_HEADER,
            next_record: 0,
            last_receive_ns: 0,
            index,
        })
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.next_record
    }

    /// Appends one message; returns its record number.
    pub fn append(&mut self, e: &Entry<'_>) -> Result<u64, RecordError> {
        let topic = e.topic.as_bytes();
        let topic_len =
            u16::try_from(topic.len()).map_err(|_| RecordError::TopicTooLong(topic.len()))?;
        let len = RECORD_HEADER + topic.len() + e.payload.len();
        let need = padded(len);
        // Room for the record and, after it, a commit word (end or next-segment mark).
        if need + 8 > self.segment_len - SEGMENT_HEADER {
            return Err(RecordError::TooLarge {
                len,
                segment: self.segment_len,
            });
        }
        if self.offset + need + 8 > self.segment_len {
            self.next_segment()?;
        }
        let receive_ns = e.receive_ns.max(self.last_receive_ns);
        let record = self.next_record;
        let mut head = [0u8; RECORD_HEADER];
        head[4..6].copy_from_slice(&topic_len.to_le_bytes());
        head[8..16].copy_from_slice(&record.to_le_bytes());
        head[16..24].copy_from_slice(&e.session.to_le_bytes());
        head[24..32].copy_from_slice(&e.seq.to_le_bytes());
        head[32..40].copy_from_slice(&e.publish_ns.to_le_bytes());
        head[40..48].copy_from_slice(&receive_ns.to_le_bytes());
        let at = self.offset;
        // SAFETY: `at + need + 8 <= segment_len` (checked above), the mapping is
        // that long and only this recorder writes it; the commit word at `at` is
        // 8-aligned (records are padded to 8) and written last, through an atomic.
        unsafe {
            let base = self.map.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(head.as_ptr().add(4), base.add(4), RECORD_HEADER - 4);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), base.add(RECORD_HEADER), topic.len());
            std::ptr::copy_nonoverlapping(
                e.payload.as_ptr(),
                base.add(RECORD_HEADER + topic.len()),
                e.payload.len(),
            );
            (*(base as *const AtomicU32)).store(len as u32 + 1, Ordering::Release);
        }
        if record % INDEX_EVERY == 0 {
            let mut entry = [0u8; INDEX_ENTRY];
            entry[0..8].copy_from_slice(&record.to_le_bytes());
            entry[8..16].copy_from_slice(&receive_ns.to_le_bytes());
            entry[16..20].copy_from_slice(&self.segment.to_le_bytes());
            entry[20..24].copy_from_slice(&(at as u32).to_le_bytes());
            let path = self.dir.join(INDEX_FILE);
            self.index.write_all(&entry).map_err(io(&path))?;
        }
        self.offset = at + need;
        self.next_record = record + 1;
        self.last_receive_ns = receive_ns;
        Ok(record)
    }

    fn next_segment(&mut self) -> Result<(), RecordError> {
        if self.segment + 1 >= MAX_SEGMENTS {
            return Err(RecordError::Full);
        }
        let map = create_segment(&self.dir, self.segment + 1, self.segment_len)?;
        // SAFETY: `offset + 8 <= segment_len` always holds (append keeps room for
        // this word), and it is 8-aligned.
        unsafe {
            let word = self.map.as_mut_ptr().add(self.offset) as *const AtomicU32;
            (*word).store(NEXT_SEGMENT, Ordering::Release);
        }
        let path = segment_path(&self.dir, self.segment);
        self.map.flush_async().map_err(io(&path))?;
        self.map = map;
        self.segment += 1;
        self.offset = SEGMENT_HEADER;
        Ok(())
    }

    /// Writes what is recorded to the disk (`msync`): needed only against a power
    /// loss; a recorder that is killed loses nothing it appended.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        let path = segment_path(&self.dir, self.segment);
        self.map.flush().map_err(io(&path))?;
        self.index
            .sync_data()
            .map_err(io(&self.dir.join(INDEX_FILE)))
    }
}

/// One recorded message, borrowed from the recording's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<'a> {
    /// Its number in the recording (0, 1, 2, …).
    pub record: u64,
    /// Its topic (as recorded: bytes, UTF-8 when a recorder wrote it).
    pub topic: &'a [u8],
    /// Its publisher's session.
    pub session: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Publish time, ns since the Unix epoch (0 when unknown).
    pub publish_ns: u64,
    /// Receive time, ns since the Unix epoch.
    pub receive_ns: u64,
    /// The payload.
    pub payload: &'a [u8],
}

impl Recorded<'_> {
    /// The topic as text (invalid UTF-8 shown with replacement characters).
    pub fn topic_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.topic)
    }
}

/// Where a record is: segment and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    segment: u32,
    offset: usize,
}

/// An index entry that [`Recording::open`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record it points at.
    pub record: u64,
    /// That record's receive time.
    pub receive_ns: u64,
    segment: u32,
    offset: u32,
}

/// A recording opened for reading, checked to its last complete message.
pub struct Recording {
    dir: PathBuf,
    segments: Vec<Mmap>,
    index: Vec<IndexEntry>,
    records: u64,
    /// Index entries dropped on open (written past the last complete record, or
    /// naming a record they do not point at).
    dropped_index: u64,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

enum Step<'a> {
    Record(Recorded<'a>, usize),
    Next,
    End,
}

fn parse<'a>(path: &Path, seg: &'a [u8], at: usize) -> Result<Step<'a>, RecordError> {
    let corrupt = |offset: usize, what| RecordError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        what,
    };
    if at + 4 > seg.len() {
        return Err(corrupt(at, "no room for a commit word"));
    }
    let commit = u32_at(seg, at);
    if commit == 0 {
        return Ok(Step::End);
    }
    if commit == NEXT_SEGMENT {
        return Ok(Step::Next);
    }
    let len = (commit - 1) as usize;
    if len < RECORD_HEADER || at + padded(len) > seg.len() {
        return Err(corrupt(at, "record length out of bounds"));
    }
    let b = &seg[at..at + len];
    let topic_len = usize::from(u16::from_le_bytes([b[4], b[5]]));
    if RECORD_HEADER + topic_len > len {
        return Err(corrupt(at, "topic longer than its record"));
    }
    Ok(Step::Record(
        Recorded {
            record: u64_at(b, 8),
            session: u64_at(b, 16),
            seq: u64_at(b, 24),
            publish_ns: u64_at(b, 32),
            receive_ns: u64_at(b, 40),
            topic: &b[RECORD_HEADER..RECORD_HEADER + topic_len],
            payload: &b[RECORD_HEADER + topic_len..],
        },
        at + padded(len),
    ))
}

impl Recording {
    /// Opens the recording in `dir` and checks it: every segment's header, every
    /// record's bounds, record numbers in order, receive times non-decreasing, index
    /// entries pointing at the records they name. A recording whose recorder was
    /// killed reads up to its last complete message.
    pub fn open(dir: &Path) -> Result<Recording, RecordError> {
        let mut segments = Vec::new();
        loop {
            let n = segments.len() as u32;
            let path = segment_path(dir, n);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && n > 0 => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RecordError::NotFound(dir.to_path_buf()))
                }
                Err(e) => return Err(io(&path)(e)),
            };
            // A recorder killed while it made its next segment leaves that file
            // without a header (empty, or zero: the magic is stored last); no record
            // is in it, and the segment before it ends without pointing to it.
            let len = file.metadata().map_err(io(&path))?.len();
            let last = !segment_path(dir, n + 1).exists();
            if n > 0 && last && (len < (SEGMENT_HEADER + 8) as u64 || header_unwritten(&file)) {
                break;
            }
            // SAFETY: the file is mapped read-only; a recorder still appending may
            // change bytes past the end this open finds, which no reader reads
            // (records are read up to the commit word found 0, through copies of
            // their fields).
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let corrupt = |what| RecordError::Corrupt {
                path: path.clone(),
                offset: 0,
                what,
            };
            if map.len() < SEGMENT_HEADER + 8 || map.len() > MAX_SEGMENT {
                return Err(corrupt("segment size out of bounds"));
            }
            if u64_at(&map, 0) != MAGIC || u32_at(&map, 8) != VERSION {
                return Err(corrupt("not a ringcast recording segment (magic, version)"));
            }
            if u32_at(&map, 12) != n || u64_at(&map, 16) != map.len() as u64 {
                return Err(corrupt("segment number or size differs from its header"));
            }
            segments.push(map);
            if segments.len() as u32 >= MAX_SEGMENTS {
                break;
            }
        }
        let mut rec = Recording {
            dir: dir.to_path_buf(),
            segments,
            index: Vec::new(),
            records: 0,
            dropped_index: 0,
        };
        // The scan: counts records and checks their order.
        let mut pos = Some(Pos {
            segment: 0,
            offset: SEGMENT_HEADER,
        });
        let mut last_ns = 0;
        let mut records = 0;
        // Where every INDEX_EVERY-th record really is: an index entry must name one
        // of these (a record-like run of bytes inside a payload is not a record).
        let mut anchors = Vec::new();
        while let Some(p) = pos {
            let Some((r, next)) = rec.at(p)? else { break };
            if r.record != records || r.receive_ns < last_ns {
                return Err(RecordError::Corrupt {
                    path: segment_path(dir, p.segment),
                    offset: p.offset as u64,
                    what: "record number or receive time out of order",
                });
            }
            if records % INDEX_EVERY == 0 {
                anchors.push(rec.resolve(p));
            }
            records += 1;
            last_ns = r.receive_ns;
            pos = next;
        }
        rec.records = records;
        let index_path = dir.join(INDEX_FILE);
        let raw = match std::fs::read(&index_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&index_path)(e)),
        };
        for entry in raw.chunks_exact(INDEX_ENTRY) {
            let e = IndexEntry {
                record: u64_at(entry, 0),
                receive_ns: u64_at(entry, 8),
                segment: u32_at(entry, 16),
                offset: u32_at(entry, 20),
            };
            let pos = Pos {
                segment: e.segment,
                offset: e.offset as usize,
            };
            let anchor = (e.record % INDEX_EVERY == 0)
                .then(|| anchors.get((e.record / INDEX_EVERY) as usize))
                .flatten();
            let names_it = e.record < rec.records
                && anchor == Some(&pos)
                && rec.index.last().is_none_or(|l| l.record < e.record)
                && matches!(rec.at(pos), Ok(Some((r, _))) if r.record == e.record && r.receive_ns == e.receive_ns);
            if names_it {
                rec.index.push(e);
            } else {
                rec.dropped_index += 1;
            }
        }
        // A partial entry (killed mid-write) is dropped too.
        rec.dropped_index += u64::from(raw.len() % INDEX_ENTRY != 0);
        Ok(rec)
    }

    /// Where the record read at `p` really starts: past the next-segment marks.
    fn resolve(&self, mut p: Pos) -> Pos {
        while let Some(seg) = self.segments.get(p.segment as usize) {
            match parse(&segment_path(&self.dir, p.segment), seg, p.offset) {
                Ok(Step::Next) => {
                    p = Pos {
                        segment: p.segment + 1,
                        offset: SEGMENT_HEADER,
                    }
                }
                _ => break,
            }
        }
        p
    }

    /// The record at `p` and where the next one is (None at the end).
    #[allow(clippy::type_complexity)]
    fn at(&self, mut p: Pos) -> Result<Option<(Recorded<'_>, Option<Pos>)>, RecordError> {
        loop {
            let Some(seg) = self.segments.get(p.segment as usize) else {
                return Ok(None);
            };
            if p.offset < SEGMENT_HEADER || p.offset % 8 != 0 {
                return Err(RecordError::Corrupt {
                    path: segment_path(&self.dir, p.segment),
                    offset: p.offset as u64,
                    what: "record offset out of bounds",
                });
            }
            match parse(&segment_path(&self.dir, p.segment), seg, p.offset)? {
                Step::End => return Ok(None),
                Step::Next => {
                    p = Pos {
                        segment: p.segment + 1,
                        offset: SEGMENT_HEADER,
                    }
                }
                Step::Record(r, next) => {
                    let next = (next + 4 <= seg.len()).then_some(Pos {
                        segment: p.segment,
                        offset: next,
                    });
                    return Ok(Some((r, next)));
                }
            }
        }
    }

    /// Complete records in the recording.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The checked index entries.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Index entries dropped on open (written past the end, or not naming the record
    /// at their position).
    pub fn dropped_index_entries(&self) -> u64 {
        self.dropped_index
    }

    /// Every record, in order.
    pub fn iter(&self) -> Iter<'_> {
        self.iter_from(Pos {
            segment: 0,
            offset: SEGMENT_HEADER,
        })
    }

    fn iter_from(&self, pos: Pos) -> Iter<'_> {
        Iter {
            rec: self,
            pos: Some(pos),
        }
    }

    /// The records from number `record` on (the index finds the nearest entry
    /// before it; the rest is a short scan).
    pub fn iter_from_record(&self, record: u64) -> impl Iterator<Item = Recorded<'_>> {
        let i = self.index.partition_point(|e| e.record <= record);
        self.seek(i).skip_while(move |r| r.record < record)
    }

    /// The records received at or after `receive_ns` (ns since the Unix epoch).
    pub fn iter_from_time(&self, receive_ns: u64) -> impl Iterator<Item = Recorded<'_>> {
        let i = self.index.partition_point(|e| e.receive_ns < receive_ns);
        self.seek(i).skip_while(move |r| r.receive_ns < receive_ns)
    }

    /// An iterator starting at the index entry before entry `i` (or the start).
    fn seek(&self, i: usize) -> Iter<'_> {
        match i.checked_sub(1).map(|j| self.index[j]) {
            Some(e) => self.iter_from(Pos {
                segment: e.segment,
                offset: e.offset as usize,
            }),
            None => self.iter(),
        }
    }
}

/// Iterates a [`Recording`]'s records.
#[derive(Debug)]
pub struct Iter<'a> {
    rec: &'a Recording,
    pos: Option<Pos>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Recorded<'a>;

    fn next(&mut self) -> Option<Recorded<'a>> {
        // `open` checked every record up to the end, so an error cannot occur here
        // unless the files changed since; it ends the iteration.
        let (r, next) = self.rec.at(self.pos?).ok().flatten()?;
        self.pos = next;
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rc-rec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn payload(i: u64) -> Vec<u8> {
        let len = (i * 37 % 300) as usize;
        (0..len).map(|j| (i as usize + j) as u8).collect()
    }

    fn entry<'a>(i: u64, topic: &'a str, p: &'a [u8]) -> Entry<'a> {
        Entry {
            topic,
            session: 7 + i % 3,
            seq: i,
            publish_ns: 1000 + i,
            receive_ns: 2000 + i * 10,
            payload: p,
        }
    }

    fn record_n(d: &Path, n: u64, segment: usize) -> Recorder {
        let mut r = Recorder::create(d, segment).unwrap();
        for i in 0..n {
            let p = payload(i);
            let topic = format!("/t/{}", i % 5);
            assert_eq!(r.append(&entry(i, &topic, &p)).unwrap(), i);
        }
        r
    }

    fn check_all(rec: &Recording, n: u64) {
        assert_eq!(rec.records(), n);
        let mut i = 0;
        for r in rec.iter() {
            assert_eq!(r.record, i);
            assert_eq!(r.payload, &payload(i)[..], "record {i}");
            assert_eq!(r.topic, format!("/t/{}", i % 5).as_bytes());
            assert_eq!(
                (r.session, r.seq, r.publish_ns, r.receive_ns),
                (7 + i % 3, i, 1000 + i, 2000 + i * 10)
            );
            i += 1;
        }
        assert_eq!(i, n);
    }

    #[test]
    fn records_across_segments_read_back_byte_exact_and_seek() {
        let d = dir("segments");
        let n = 20_000;
        drop(record_n(&d, n, MIN_SEGMENT));
        let rec = Recording::open(&d).unwrap();
        assert!(rec.segments() > 20, "{} segments", rec.segments());
        check_all(&rec, n);
        assert_eq!(rec.index().len() as u64, n.div_ceil(INDEX_EVERY));
        assert_eq!(rec.dropped_index_entries(), 0);
        for start in [0, 1, 1023, 1024, 1025, 5000, 19_999] {
            let first = rec.iter_from_record(start).next().unwrap();
            assert_eq!(first.record, start);
            assert_eq!(rec.iter_from_record(start).count() as u64, n - start);
            let by_time = rec.iter_from_time(2000 + start * 10 - 5).next().unwrap();
            assert_eq!(by_time.record, start);
        }
        assert_eq!(rec.iter_from_record(n).count(), 0);
        assert_eq!(rec.iter_from_time(u64::MAX).count(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_a_second_recorder_a_bad_size_and_a_record_larger_than_a_segment() {
        let d = dir("refuse");
        let r = Recorder::create(&d, MIN_SEGMENT).unwrap();
        assert!(matches!(
            Recorder::create(&d, MIN_SEGMENT),
            Err(RecordError::Exists(_))
        ));
        drop(r);
        assert!(matches!(
            Recorder::create(&dir("x"), 100),
            Err(RecordError::SegmentSize(100))
        ));
        let big_dir = dir("big");
        let mut r = Recorder::create(&big_dir, MIN_SEGMENT).unwrap();
        let big = vec![0u8; MIN_SEGMENT];
        assert!(matches!(
            r.append(&entry(0, "/t", &big)),
            Err(RecordError::TooLarge { .. })
        ));
        assert!(matches!(
            Recording::open(&dir("none")),
            Err(RecordError::NotFound(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&big_dir).unwrap();
    }

    #[test]
    fn a_clock_stepped_back_keeps_receive_times_in_order() {
        let d = dir("clock");
        let mut r = Recorder::create(&d, MIN_SEGMENT).unwrap();
        for ns in [50, 40, 60] {
            let e = Entry {
                receive_ns: ns,
                ..entry(0, "/c", b"x")
            };
            r.append(&e).unwrap();
        }
        let rec = Recording::open(&d).unwrap();
        let times: Vec<u64> = rec.iter().map(|r| r.receive_ns).collect();
        assert_eq!(times, [50, 50, 60]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A record cut mid-write (its commit word 0), an index entry past the end and a
    /// half-written entry: the recording ends at the last complete message.
    #[test]
    fn a_torn_tail_and_a_stale_index_end_the_recording_at_the_last_complete_message() {
        let d = dir("torn");
        let r = record_n(&d, 3000, MIN_SEGMENT);
        let (seg, off) = (r.segment, r.offset);
        drop(r);
        // Fake a record in progress at the end: header bytes written, commit 0.
        let path = segment_path(&d, seg);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[off + 8..off + 16].copy_from_slice(&3000u64.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut idx = OpenOptions::new()
            .append(true)
            .open(d.join(INDEX_FILE))
            .unwrap();
        let mut stale = [0u8; INDEX_ENTRY];
        stale[0..8].copy_from_slice(&3072u64.to_le_bytes());
        idx.write_all(&stale).unwrap();
        idx.write_all(&[1, 2, 3]).unwrap();
        let rec = Recording::open(&d).unwrap();
        check_all(&rec, 3000);
        assert_eq!(rec.index().len(), 3);
        assert_eq!(rec.dropped_index_entries(), 2);
        drop(rec);
        // Killed while making the next segment: the file is there, empty or with
        // its header unwritten (zero); the recording ends where it did.
        let next = segment_path(&d, seg + 1);
        for len in [0, MIN_SEGMENT] {
            let f = File::create(&next).unwrap();
            f.set_len(len as u64).unwrap();
            drop(f);
            let rec = Recording::open(&d).unwrap();
            check_all(&rec, 3000);
            assert_eq!(
                rec.segments() as u32,
                seg + 1,
                "{len}-byte segment in the making"
            );
        }
        // A segment in the middle with no header is damage, not a torn end.
        std::fs::write(segment_path(&d, seg + 2), vec![0u8; MIN_SEGMENT]).unwrap();
        assert!(matches!(
            Recording::open(&d),
            Err(RecordError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Damaged files are errors, never panics: every byte of a small recording
    /// flipped in turn.
    #[test]
    fn a_damaged_segment_is_an_error_or_a_shorter_recording_never_a_panic() {
        let d = dir("damage");
        drop(record_n(&d, 40, MIN_SEGMENT));
        let path = segment_path(&d, 0);
        let good = std::fs::read(&path).unwrap();
        let used = SEGMENT_HEADER
            + (0..40)
                .map(|i| padded(RECORD_HEADER + 4 + payload(i).len()))
                .sum::<usize>()
            + 8;
        for at in 0..used {
            let mut bad = good.clone();
            bad[at] ^= 0xA5;
            std::fs::write(&path, &bad).unwrap();
            if let Ok(rec) = Recording::open(&d) {
                assert!(rec.records() <= 40);
                assert_eq!(rec.iter().count() as u64, rec.records());
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    const CHILD: &str = "RINGCAST_RECORD_TEST_CHILD";

    /// The recorder as a real process, killed with SIGKILL mid-recording: reopened,
    /// every complete message is there, byte-exact, and the index is consistent.
    #[test]
    fn a_recorder_killed_mid_recording_leaves_every_complete_message() {
        if let Ok(d) = std::env::var(CHILD) {
            let mut r = Recorder::create(Path::new(&d), 1 << 20).unwrap();
            let mut i = 0;
            loop {
                let p = payload(i);
                let topic = format!("/t/{}", i % 5);
                r.append(&entry(i, &topic, &p)).unwrap();
                i += 1;
                if i == 20_000 {
                    std::fs::write(Path::new(&d).join("started"), b"").unwrap();
                }
            }
        }
        let d = dir("kill");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "record::tests::a_recorder_killed_mid_recording_leaves_every_complete_message",
                "--nocapture",
            ])
            .env(CHILD, &d)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !d.join("started").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the recorder never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        child.kill().unwrap();
        child.wait().unwrap();
        let rec = Recording::open(&d).unwrap();
        let n = rec.records();
        assert!(n >= 20_000, "{n} records");
        check_all(&rec, n);
        assert!(rec.index().len() as u64 >= n / INDEX_EVERY);
        for e in rec.index() {
            assert_eq!(
                rec.iter_from_record(e.record).next().unwrap().receive_ns,
                e.receive_ns
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
