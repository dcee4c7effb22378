//! Counters readable from other processes: each node maps a small file (under
//! `/dev/shm` by default, like Aeron's CnC file) and its sender agent copies the
//! node's counters into it every 100 ms. `ringcast stat` reads every such file.
//!
//! ```text
//! 0  magic "RCSTATS1" | 8 version u32 | 12 pid u32 | 16 session u32 | 20 fields u32
//! 24 updated (µs since the Unix epoch) u64 | 32 backend name [u8; 32]
//! 64 names: fields × [u8; 32] (NUL-padded) | then values: fields × u64 (little-endian)
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{Mmap, MmapMut};

use crate::stats::Stats;

const MAGIC: &[u8; 8] = b"RCSTATS1";
const VERSION: u32 = 1;
const HEADER: usize = 64;
const NAME: usize = 32;
/// How often the sender agent refreshes the file.
pub(crate) const REFRESH: Duration = Duration::from_millis(100);

/// The directory stats files live in: `RINGCAST_STATS_DIR`, else `/dev/shm`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("RINGCAST_STATS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// The wall clock in µs since the UNIX epoch (stats files' stamps, TTL deadlines).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A node's stats file, written by its sender agent.
pub(crate) struct StatsFile {
    path: PathBuf,
    map: MmapMut,
    fields: usize,
    last: Option<Instant>,
}

impl StatsFile {
    /// Creates `dir/ringcast-<pid>-<session>.stats` laid out for `sample`'s fields.
    pub(crate) fn create(dir: &Path, session: u32, sample: &Stats) -> std::io::Result<StatsFile> {
        let fields = sample.fields();
        let path = dir.join(format!(
            "ringcast-{}-{session:08x}.stats",
            std::process::id()
        ));
        let len = HEADER + fields.len() * (NAME + 8);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.set_len(len as u64)?;
        // SAFETY: the file was just created (truncated) by this process under a name
        // unique to it (pid + session) and is only ever written through this map;
        // readers map it read-only and validate every field.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..8].copy_from_slice(MAGIC);
        map[8..12].copy_from_slice(&VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&std::process::id().to_le_bytes());
        map[16..20].copy_from_slice(&session.to_le_bytes());
        map[20..24].copy_from_slice(&(fields.len() as u32).to_le_bytes());
        let backend = sample.backend.to_string();
        let b = backend.as_bytes();
        map[32..32 + b.len().min(32)].copy_from_slice(&b[..b.len().min(32)]);
        for (i, (name, _)) in fields.iter().enumerate() {
            let at = HEADER + i * NAME;
            let n = name.as_bytes();
            map[at..at + n.len().min(NAME)].copy_from_slice(&n[..n.len().min(NAME)]);
        }
        let mut f = StatsFile {
            path,
            map,
            fields: fields.len(),
            last: None,
        };
        f.write(sample);
        Ok(f)
    }

    /// Copies the values in, if the refresh interval has passed.
    pub(crate) fn maybe_write(&mut self, now: Instant, stats: impl FnOnce() -> Stats) {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < REFRESH)
        {
            return;
        }
        self.last = Some(now);
        self.write(&stats());
    }

    fn write(&mut self, stats: &Stats) {
        let values = HEADER + self.fields * NAME;
        for (i, (_, v)) in stats.fields().iter().enumerate().take(self.fields) {
            let at = values + i * 8;
            self.map[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        self.map[24..32].copy_from_slice(&now_us().to_le_bytes());
    }
}

impl Drop for StatsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One node's counters as read by another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// The file read.
    pub path: PathBuf,
    /// The node's process.
    pub pid: u32,
    /// Its publishing session.
    pub session: u32,
    /// Its I/O backend.
    pub backend: String,
    /// When its counters were last written (µs since the Unix epoch).
    pub updated_us: u64,
    /// Whether its process still exists.
    pub alive: bool,
    /// The counters, by name.
    pub fields: Vec<(String, u64)>,
}

fn read_one(path: &Path) -> Option<NodeStats> {
    let file = File::open(path).ok()?;
    // SAFETY: read-only map of a stats file; its writer only overwrites values in
    // place (never truncates while mapped), and every offset below is bounds-checked.
    let map = unsafe { Mmap::map(&file).ok()? };
    let m: &[u8] = &map;
    if m.len() < HEADER
        || &m[..8] != MAGIC
        || u32::from_le_bytes(m[8..12].try_into().ok()?) != VERSION
    {
        return None;
    }
    let u32_at = |at: usize| {
        m.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |at: usize| {
        m.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let pid = u32_at(12)?;
    let n = u32_at(20)? as usize;
    if m.len() < HEADER + n * (NAME + 8) {
        return None;
    }
    let text =
        |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b)).into_owned();
    let fields = (0..n)
        .map(|i| {
            let name = text(&m[HEADER + i * NAME..HEADER + (i + 1) * NAME]);
            (name, u64_at(HEADER + n * NAME + i * 8).unwrap_or(0))
        })
        .collect();
    Some(NodeStats {
        path: path.to_path_buf(),
        pid,
        session: u32_at(16)?,
        backend: text(&m[32..64]),
        updated_us: u64_at(24)?,
        alive: Path::new(&format!("/proc/{pid}")).exists(),
        fields,
    })
}

/// Reads every node's stats file in `dir`, sorted by pid and session.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<NodeStats>> {
    let mut out: Vec<NodeStats> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ringcast-") && n.ends_with(".stats"))
        })
        .filter_map(|p| read_one(&p))
        .collect();
    out.sort_by_key(|s| (s.pid, s.session));
    Ok(out)
}
