//! UDP segmentation offloads: GSO on send (`UDP_SEGMENT`, Linux ≥ 4.18), GRO on
//! receive (`UDP_GRO`, Linux ≥ 5.0), and optional socket busy polling (`SO_BUSY_POLL`).
//!
//! Every kernel quirk of these options lives here, in socket-free functions the
//! backends call:
//!
//! * [`next_group`] cuts a batch into GSO groups: consecutive datagrams of one size
//!   (the last of a group may be shorter), at most [`MAX_SEGMENTS`] per send and at
//!   most [`MAX_GSO_BYTES`] in all (both kernel limits: `UDP_MAX_SEGMENTS` and the
//!   IPv4 datagram limit). A group of one goes out as a plain datagram.
//! * [`GsoCmsg`] is the `UDP_SEGMENT` control message of one GSO send.
//! * [`gro_segment`] reads the `UDP_GRO` control message of a received buffer, and
//!   [`split`] cuts a coalesced buffer back into its datagrams.
//! * A GSO send the kernel or the NIC refuses (`EIO`: no checksum offload on the
//!   route; `EINVAL`: segment larger than the path MTU, or checksums off) is resent
//!   without GSO and GSO stays off for that socket: [`is_gso_refusal`].
//!
//! What is on, why not, and the counters are shared between a node's backends and
//! its [`Stats`](crate::Stats) through an [`Offload`] handle (relaxed atomics, one
//! writer each).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` since 4.18; newer
/// kernels allow more, this stays at the value every GSO kernel accepts).
pub const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send: the largest IPv4 UDP payload.
pub const MAX_GSO_BYTES: usize = 65_507;
/// Receive buffer size while GRO is on: a coalesced buffer holds up to 64 KiB.
pub const GRO_BUFFER: usize = 65_535;
/// Bytes reserved per received message for control messages (`UDP_GRO` needs
/// `CMSG_SPACE(sizeof(int))` = 24 on 64-bit Linux).
pub const RX_CONTROL_LEN: usize = 32;

/// `SOL_UDP` option / cmsg type: GSO segment size (`u16`).
pub(crate) const UDP_SEGMENT: libc::c_int = 103;
/// `SOL_UDP` option / cmsg type: GRO on (option), segment size (cmsg, `int`).
pub(crate) const UDP_GRO: libc::c_int = 104;
/// `SOL_SOCKET` option: busy-poll time in µs for blocking receives.
pub(crate) const SO_BUSY_POLL: libc::c_int = 46;

/// Environment override: `RINGCAST_GSO=0` turns GSO off.
pub const GSO_ENV: &str = "RINGCAST_GSO";
/// Environment override: `RINGCAST_GRO=0` turns GRO off.
pub const GRO_ENV: &str = "RINGCAST_GRO";

/// Whether an offload is in use on a socket, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadStatus {
    /// The socket is not open yet (receive: before the first subscriber).
    #[default]
    NotOpen,
    /// In use.
    On,
    /// Turned off in the configuration ([`ConfigBuilder::gso`](crate::ConfigBuilder::gso)
    /// / [`gro`](crate::ConfigBuilder::gro)).
    Disabled,
    /// Turned off by `RINGCAST_GSO=0` / `RINGCAST_GRO=0`.
    DisabledByEnv,
    /// The kernel refused the socket option (errno): kernel too old, or the backend
    /// cannot carry control messages.
    Refused(i32),
    /// Switched off at run time after a GSO send failed with this errno (the kernel
    /// or the NIC cannot segment on this route); the datagrams went out one by one.
    SwitchedOff(i32),
    /// Not used with multicast loop on a kernel older than 5.0: before 5.0 a looped
    /// GSO send could reach a local socket without GRO still coalesced.
    OldKernel,
}

impl OffloadStatus {
    /// Whether the offload is in use.
    pub fn is_on(self) -> bool {
        self == OffloadStatus::On
    }

    fn pack(self) -> u64 {
        let (tag, v) = match self {
            OffloadStatus::NotOpen => (0u64, 0i32),
            OffloadStatus::On => (1, 0),
            OffloadStatus::Disabled => (2, 0),
            OffloadStatus::DisabledByEnv => (3, 0),
            OffloadStatus::Refused(e) => (4, e),
            OffloadStatus::SwitchedOff(e) => (5, e),
            OffloadStatus::OldKernel => (6, 0),
        };
        (tag << 32) | u64::from(v as u32)
    }

    fn unpack(v: u64) -> Self {
        let e = v as u32 as i32;
        match v >> 32 {
            1 => OffloadStatus::On,
            2 => OffloadStatus::Disabled,
            3 => OffloadStatus::DisabledByEnv,
            4 => OffloadStatus::Refused(e),
            5 => OffloadStatus::SwitchedOff(e),
            6 => OffloadStatus::OldKernel,
            _ => OffloadStatus::NotOpen,
        }
    }
}

impl fmt::Display for OffloadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OffloadStatus::NotOpen => f.write_str("not in use yet (socket not open)"),
            OffloadStatus::On => f.write_str("on"),
            OffloadStatus::Disabled => f.write_str("off (configuration)"),
            OffloadStatus::DisabledByEnv => f.write_str("off (environment =0)"),
            OffloadStatus::Refused(e) => write!(
                f,
                "off: kernel refused ({})",
                std::io::Error::from_raw_os_error(e)
            ),
            OffloadStatus::SwitchedOff(e) => write!(
                f,
                "off: switched off at run time after a send failed ({})",
                std::io::Error::from_raw_os_error(e)
            ),
            OffloadStatus::OldKernel => f.write_str(
                "off: kernel older than 5.0 (looped multicast GSO sends may reach local sockets coalesced)",
            ),
        }
    }
}

/// `SO_BUSY_POLL` on the receive socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusyPoll {
    /// Not asked for (the default), or the socket is not open yet.
    #[default]
    Off,
    /// Set: blocking receives busy-poll the device queue for this many µs.
    On(u32),
    /// The kernel refused this many µs with this errno (`EPERM`: a value above
    /// `net.core.busy_read` needs `CAP_NET_ADMIN`).
    Refused(u32, i32),
}

impl BusyPoll {
    fn pack(self) -> u64 {
        match self {
            BusyPoll::Off => 0,
            BusyPoll::On(us) => (1 << 48) | u64::from(us),
            BusyPoll::Refused(us, e) => (2 << 48) | (u64::from(e as u16) << 32) | u64::from(us),
        }
    }

    fn unpack(v: u64) -> Self {
        let us = v as u32;
        match v >> 48 {
            1 => BusyPoll::On(us),
            2 => BusyPoll::Refused(us, i32::from((v >> 32) as u16)),
            _ => BusyPoll::Off,
        }
    }
}

impl fmt::Display for BusyPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BusyPoll::Off => f.write_str("off"),
            BusyPoll::On(us) => write!(f, "on ({us} µs)"),
            BusyPoll::Refused(us, e) => write!(
                f,
                "off: kernel refused {us} µs ({}{})",
                std::io::Error::from_raw_os_error(e),
                if e == libc::EPERM {
                    "; above net.core.busy_read it needs CAP_NET_ADMIN"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What a node's sockets use, and what the offloads did (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OffloadReport {
    /// UDP GSO on the transmit socket.
    pub gso: OffloadStatus,
    /// UDP GRO on the receive socket.
    pub gro: OffloadStatus,
    /// `SO_BUSY_POLL` on the receive socket.
    pub busy_poll: BusyPoll,
    /// io_uring NAPI busy polling (`IORING_REGISTER_NAPI`, Linux ≥ 6.9) on the receive
    /// ring, asked for with the same busy-poll time (io_uring backend only): the wait
    /// for completions polls the device queues of the sockets in flight.
    pub napi_busy_poll: BusyPoll,
    /// GSO sends (each carrying 2..=64 datagrams).
    pub gso_sends: u64,
    /// Datagrams carried by those sends.
    pub gso_segments: u64,
    /// GSO sends refused at run time and resent without GSO (after the first, GSO is
    /// off for the socket, so this stays at 0 or 1 per socket).
    pub gso_downgrades: u64,
    /// Received buffers that held several coalesced datagrams (GRO).
    pub gro_buffers: u64,
    /// Datagrams split out of those buffers.
    pub gro_segments: u64,
}

#[derive(Debug, Default)]
struct Shared {
    gso: AtomicU64,
    gro: AtomicU64,
    busy_poll: AtomicU64,
    napi_busy_poll: AtomicU64,
    gso_sends: AtomicU64,
    gso_segments: AtomicU64,
    gso_downgrades: AtomicU64,
    gro_buffers: AtomicU64,
    gro_segments: AtomicU64,
}

/// Shared offload state of one node: the transmit backend writes the GSO fields, the
/// receive backend the GRO and busy-poll ones, [`Stats`](crate::Stats) reads them.
/// Clones share the state; two handles are equal when they share it.
#[derive(Clone, Default)]
pub struct Offload(Arc<Shared>);

impl PartialEq for Offload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Offload {}

impl fmt::Debug for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report().fmt(f)
    }
}

/// Adds with one writer (load + store, saturating: no locked instruction).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).saturating_add(n), Relaxed);
}

impl Offload {
    /// A snapshot.
    pub fn report(&self) -> OffloadReport {
        let s = &self.0;
        OffloadReport {
            gso: OffloadStatus::unpack(s.gso.load(Relaxed)),
            gro: OffloadStatus::unpack(s.gro.load(Relaxed)),
            busy_poll: BusyPoll::unpack(s.busy_poll.load(Relaxed)),
            napi_busy_poll: BusyPoll::unpack(s.napi_busy_poll.load(Relaxed)),
            gso_sends: s.gso_sends.load(Relaxed),
            gso_segments: s.gso_segments.load(Relaxed),
            gso_downgrades: s.gso_downgrades.load(Relaxed),
            gro_buffers: s.gro_buffers.load(Relaxed),
            gro_segments: s.gro_segments.load(Relaxed),
        }
    }

    pub(crate) fn set_gso(&self, st: OffloadStatus) {
        self.0.gso.store(st.pack(), Relaxed);
    }

    pub(crate) fn set_gro(&self, st: OffloadStatus) {
        self.0.gro.store(st.pack(), Relaxed);
    }

    pub(crate) fn set_busy_poll(&self, b: BusyPoll) {
        self.0.busy_poll.store(b.pack(), Relaxed);
    }

    pub(crate) fn set_napi_busy_poll(&self, b: BusyPoll) {
        self.0.napi_busy_poll.store(b.pack(), Relaxed);
    }

    /// Counts one GSO send of `segments` datagrams.
    pub(crate) fn gso_sent(&self, segments: usize) {
        bump(&self.0.gso_sends, 1);
        bump(&self.0.gso_segments, segments as u64);
    }

    /// Records the run-time switch-off after `errno`.
    pub(crate) fn gso_downgraded(&self, errno: i32) {
        bump(&self.0.gso_downgrades, 1);
        self.set_gso(OffloadStatus::SwitchedOff(errno));
    }

    /// Counts one coalesced buffer of `segments` datagrams.
    pub(crate) fn gro_received(&self, segments: usize) {
        bump(&self.0.gro_buffers, 1);
        bump(&self.0.gro_segments, segments as u64);
    }
}

/// Decides whether an offload is wanted: the configuration, then the environment
/// variable (`0`, `off`, `false` or `no` turn it off). `None` = wanted.
pub(crate) fn wanted(config: bool, env_value: Option<&str>) -> Option<OffloadStatus> {
    let off = env_value
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| matches!(v.as_str(), "0" | "off" | "false" | "no"));
    if off {
        return Some(OffloadStatus::DisabledByEnv);
    }
    (!config).then_some(OffloadStatus::Disabled)
}

/// Whether GSO may be used with multicast loop on the kernel `release` (`uname -r`):
/// from 5.0 on the kernel splits a looped GSO send for local sockets without GRO.
/// An unparsable release counts as new enough (GSO itself is probed separately).
pub(crate) fn loop_safe_kernel(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    major.is_none_or(|m| m >= 5)
}

/// Whether `errno` from a GSO send means "this route cannot do GSO" (resend the
/// group without it and switch GSO off), as opposed to an ordinary send failure.
pub(crate) fn is_gso_refusal(errno: i32) -> bool {
    errno == libc::EIO || errno == libc::EINVAL
}

/// The busy-poll value for `SO_BUSY_POLL`: whole µs, at least 1, at most `i32::MAX`.
pub(crate) fn busy_poll_us(d: Duration) -> u32 {
    d.as_micros().clamp(1, i32::MAX as u128) as u32
}

/// One GSO group: `count` datagrams from the front of the batch, each `segment`
/// bytes but the last (which may be shorter), `bytes` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pub count: usize,
    pub segment: usize,
    pub bytes: usize,
}

impl Group {
    /// Whether the group goes out as one GSO send (two or more datagrams).
    pub fn is_gso(&self) -> bool {
        self.count >= 2
    }
}

/// The group starting at `datagrams[0]` (which must not be empty), with at most
/// `max_count` datagrams. Segments larger than `max_segment` (the socket's largest
/// datagram) or empty never group.
pub(crate) fn next_group(datagrams: &[&[u8]], max_segment: usize, max_count: usize) -> Group {
    let segment = datagrams.first().map_or(0, |d| d.len());
    let mut g = Group {
        count: 1,
        segment,
        bytes: segment,
    };
    if segment == 0 || segment > max_segment {
        return g;
    }
    let limit = max_count.min(MAX_SEGMENTS);
    for d in &datagrams[1..] {
        let len = d.len();
        if g.count >= limit || len == 0 || len > segment || g.bytes + len > MAX_GSO_BYTES {
            break;
        }
        g.count += 1;
        g.bytes += len;
        if len < segment {
            break; // a shorter datagram ends the group
        }
    }
    g
}

/// The control message of one GSO send: `cmsghdr` + the `u16` segment size,
/// `CMSG_SPACE(2)` bytes, suitably aligned for `msg_control`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
}

impl GsoCmsg {
    pub(crate) fn new() -> Self {
        // SAFETY: cmsghdr is plain old data; all-zero is valid.
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // CMSG_LEN(2): Linux's cmsghdr needs no padding before its data.
        hdr.cmsg_len = (std::mem::size_of::<libc::cmsghdr>() + 2) as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = UDP_SEGMENT;
        GsoCmsg { hdr, segment: 0 }
    }

    pub(crate) fn set(&mut self, segment: usize) {
        self.segment = segment.min(usize::from(u16::MAX)) as u16;
    }

    /// `msg_controllen` to pass with it (`CMSG_SPACE(2)`).
    pub(crate) const LEN: usize = std::mem::size_of::<GsoCmsg>();
}

/// The segment size of a coalesced receive, from the `UDP_GRO` control message in
/// `control` (as the kernel wrote it; `msg_controllen` bytes). `None` when absent: a
/// single datagram.
pub(crate) fn gro_segment(control: &[u8]) -> Option<usize> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<usize>();
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut off = 0;
    while off + hdr <= control.len() {
        let len_bytes = control.get(off..off + align)?;
        let len = match align {
            8 => u64::from_ne_bytes(len_bytes.try_into().ok()?) as usize,
            _ => u32::from_ne_bytes(len_bytes.get(..4)?.try_into().ok()?) as usize,
        };
        if len < hdr {
            return None;
        }
        let level = int(control, off + align)?;
        let kind = int(control, off + align + 4)?;
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= hdr + 4 {
            return usize::try_from(int(control, off + hdr)?)
                .ok()
                .filter(|&s| s > 0);
        }
        off += len.div_ceil(align) * align;
    }
    None
}

/// What [`split`] did with (part of) one received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Datagrams handed to the callback.
    pub delivered: usize,
    /// Where to resume when the budget ran out before the buffer's end.
    pub resume: Option<usize>,
    /// Datagrams dropped as larger than the maximum datagram.
    pub truncated: u64,
    /// Datagrams the buffer held in all when it was coalesced and seen from its
    /// start (for the GRO counters), else 0.
    pub coalesced: usize,
}

/// Hands the datagrams of `buf` from byte `offset` on to `f`, at most `budget` (≥ 1)
/// of them. `segment` is the `UDP_GRO` segment size (`None`: one datagram).
/// Datagrams larger than `max_datagram` are dropped and counted, as a kernel
/// truncation would be: a coalesced buffer of oversize segments is dropped whole.
pub(crate) fn split(
    buf: &[u8],
    segment: Option<usize>,
    max_datagram: usize,
    offset: usize,
    budget: usize,
    f: &mut dyn FnMut(&[u8]),
) -> Split {
    let mut out = Split {
        delivered: 0,
        resume: None,
        truncated: 0,
        coalesced: 0,
    };
    let seg = match segment {
        Some(s) if s > 0 && s < buf.len() => s,
        _ => {
            // One datagram.
            if offset > 0 {
                return out;
            }
            if buf.len() > max_datagram {
                out.truncated = 1;
            } else {
                f(buf);
                out.delivered = 1;
            }
            return out;
        }
    };
    let total = buf.len().div_ceil(seg);
    if seg > max_datagram {
        if offset == 0 {
            out.truncated = total as u64;
        }
        return out;
    }
    if offset == 0 {
        out.coalesced = total;
    }
    let mut at = offset;
    while at < buf.len() {
        if out.delivered >= budget.max(1) {
            out.resume = Some(at);
            break;
        }
        let end = (at + seg).min(buf.len());
        f(&buf[at..end]);
        out.delivered += 1;
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(sizes: &[usize], max_segment: usize, max_count: usize) -> Vec<(usize, usize)> {
        let bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let mut at = 0;
        let mut out = Vec::new();
        while at < refs.len() {
            let g = next_group(&refs[at..], max_segment, max_count);
            assert_eq!(
                g.bytes,
                sizes[at..at + g.count].iter().sum::<usize>(),
                "bytes of {g:?}"
            );
            out.push((g.count, g.segment));
            at += g.count;
        }
        out
    }

    #[test]
    fn equal_sizes_group_and_a_shorter_one_ends_the_group() {
        assert_eq!(
            groups(&[1000, 1000, 1000, 400, 1000, 1000], 1472, 64),
            vec![(4, 1000), (2, 1000)]
        );
        // A longer datagram starts a new group; a single datagram is its own group.
        assert_eq!(
            groups(&[500, 500, 900, 100], 1472, 64),
            vec![(2, 500), (2, 900)]
        );
        assert_eq!(groups(&[7], 1472, 64), vec![(1, 7)]);
        assert!(!next_group(&[&[1u8; 7][..]], 1472, 64).is_gso());
    }

    #[test]
    fn segment_count_and_byte_caps() {
        // 100 × 100 B: 64 segments per send at most.
        assert_eq!(groups(&[100; 100], 1472, 256), vec![(64, 100), (36, 100)]);
        // 60 × 1472 B = 88,320 > 65,507: 44 × 1472 = 64,768 fits, 45 would not.
        let g = groups(&[1472; 60], 1472, 256);
        assert_eq!(g, vec![(44, 1472), (16, 1472)]);
        // Exactly at the byte cap: 65,507 = 7 × 9,358 + 1 (shorter last one).
        let mut sizes = vec![9358; 7];
        sizes.push(1);
        assert_eq!(groups(&sizes, 65_507, 64), vec![(8, 9358)]);
        sizes.push(1);
        assert_eq!(groups(&sizes, 65_507, 64), vec![(8, 9358), (1, 1)]);
        // The caller's limit (iovecs left) caps a group too.
        assert_eq!(groups(&[10; 5], 1472, 3), vec![(3, 10), (2, 10)]);
    }

    #[test]
    fn oversize_and_empty_segments_never_group() {
        assert_eq!(groups(&[2000, 2000], 1472, 64), vec![(1, 2000), (1, 2000)]);
        assert_eq!(groups(&[0, 0], 1472, 64), vec![(1, 0), (1, 0)]);
        assert_eq!(
            groups(&[10, 0, 10], 1472, 64),
            vec![(1, 10), (1, 0), (1, 10)]
        );
        // 40,000-byte segments: two would exceed 65,507.
        assert_eq!(
            groups(&[40_000, 40_000], 65_507, 64),
            vec![(1, 40_000), (1, 40_000)]
        );
    }

    fn collect(buf: &[u8], seg: Option<usize>, max: usize, budget: usize) -> (Vec<Vec<u8>>, Split) {
        let mut got = Vec::new();
        let s = split(buf, seg, max, 0, budget, &mut |d| got.push(d.to_vec()));
        (got, s)
    }

    #[test]
    fn gro_split_into_segments_with_a_shorter_last() {
        let buf: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let (got, s) = collect(&buf, Some(1000), 1472, 64);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], &buf[..1000]);
        assert_eq!(got[1], &buf[1000..2000]);
        assert_eq!(got[2], &buf[2000..]);
        assert_eq!(
            (s.delivered, s.resume, s.truncated, s.coalesced),
            (3, None, 0, 3)
        );
        // No cmsg, or a segment size ≥ the length: one datagram.
        let (got, s) = collect(&buf[..900], None, 1472, 64);
        assert_eq!((got.len(), s.coalesced), (1, 0));
        let (got, _) = collect(&buf[..900], Some(900), 1472, 64);
        assert_eq!(got, vec![buf[..900].to_vec()]);
    }

    #[test]
    fn gro_split_resumes_where_the_budget_ran_out() {
        let buf: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let s = split(&buf, Some(100), 1472, 0, 4, &mut |d| got.push(d.to_vec()));
        assert_eq!((s.delivered, s.resume, s.coalesced), (4, Some(400), 10));
        let s = split(&buf, Some(100), 1472, 400, 4, &mut |d| got.push(d.to_vec()));
        assert_eq!((s.delivered, s.resume, s.coalesced), (4, Some(800), 0));
        let s = split(&buf, Some(100), 1472, 800, 4, &mut |d| got.push(d.to_vec()));
        assert_eq!((s.delivered, s.resume), (2, None));
        assert_eq!(got.concat(), buf);
        assert!(got.iter().all(|d| d.len() == 100));
    }

    #[test]
    fn oversize_datagrams_are_counted_not_delivered() {
        let buf = vec![1u8; 3000];
        let (got, s) = collect(&buf, None, 1472, 64);
        assert!(got.is_empty());
        assert_eq!(s.truncated, 1);
        let (got, s) = collect(&buf, Some(1500), 1472, 64);
        assert!(got.is_empty());
        assert_eq!((s.truncated, s.coalesced), (2, 0));
    }

    /// Builds control bytes as the kernel lays them out.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let len = hdr + data.len();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % std::mem::size_of::<usize>() != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn gro_cmsg_parsed_among_others() {
        let gro = cmsg(libc::SOL_UDP, UDP_GRO, &1234i32.to_ne_bytes());
        assert_eq!(gro_segment(&gro), Some(1234));
        let mut two = cmsg(libc::SOL_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        two.extend_from_slice(&gro);
        assert_eq!(gro_segment(&two), Some(1234));
        assert_eq!(gro_segment(&two[..two.len() - 8]), None);
        assert_eq!(gro_segment(&[]), None);
        assert_eq!(gro_segment(&[0u8; 16]), None); // cmsg_len 0: malformed, stop
        let zero = cmsg(libc::SOL_UDP, UDP_GRO, &0i32.to_ne_bytes());
        assert_eq!(gro_segment(&zero), None);
    }

    #[test]
    fn gso_cmsg_layout_matches_the_kernel_macros() {
        // SAFETY: CMSG_SPACE / CMSG_LEN only compute sizes.
        let (space, len) = unsafe { (libc::CMSG_SPACE(2) as usize, libc::CMSG_LEN(2) as usize) };
        assert_eq!(GsoCmsg::LEN, space);
        let mut c = GsoCmsg::new();
        c.set(1472);
        assert_eq!(c.hdr.cmsg_len as u64, len as u64);
        assert_eq!(c.segment, 1472);
    }

    #[test]
    fn status_round_trips_through_the_atomics() {
        let o = Offload::default();
        assert_eq!(o.report(), OffloadReport::default());
        for st in [
            OffloadStatus::On,
            OffloadStatus::Disabled,
            OffloadStatus::DisabledByEnv,
            OffloadStatus::Refused(libc::ENOPROTOOPT),
            OffloadStatus::SwitchedOff(libc::EIO),
            OffloadStatus::OldKernel,
            OffloadStatus::NotOpen,
        ] {
            o.set_gso(st);
            o.set_gro(st);
            assert_eq!((o.report().gso, o.report().gro), (st, st));
        }
        for b in [
            BusyPoll::On(50),
            BusyPoll::Refused(50, libc::EPERM),
            BusyPoll::Off,
        ] {
            o.set_busy_poll(b);
            o.set_napi_busy_poll(b);
            assert_eq!((o.report().busy_poll, o.report().napi_busy_poll), (b, b));
        }
        o.gso_sent(44);
        o.gso_sent(2);
        o.gso_downgraded(libc::EIO);
        o.gro_received(10);
        let r = o.report();
        assert_eq!(
            (
                r.gso_sends,
                r.gso_segments,
                r.gso_downgrades,
                r.gro_buffers,
                r.gro_segments
            ),
            (2, 46, 1, 1, 10)
        );
        assert_eq!(r.gso, OffloadStatus::SwitchedOff(libc::EIO));
        assert!(r
            .gso
            .to_string()
            .starts_with("off: switched off at run time"));
        assert!(BusyPoll::Refused(50, libc::EPERM)
            .to_string()
            .contains("CAP_NET_ADMIN"));
        assert_eq!(o.clone(), o);
        assert_ne!(o, Offload::default());
    }

    #[test]
    fn old_kernels_keep_gso_off_with_multicast_loop() {
        assert!(loop_safe_kernel("6.18.44-fc-v1045"));
        assert!(loop_safe_kernel("5.0.0"));
        assert!(!loop_safe_kernel("4.19.0-27-amd64"));
        assert!(!loop_safe_kernel("4.18"));
        assert!(loop_safe_kernel("weird"));
        assert!(OffloadStatus::OldKernel.to_string().contains("5.0"));
    }

    #[test]
    fn config_and_env_decide() {
        assert_eq!(wanted(true, None), None);
        assert_eq!(wanted(true, Some("1")), None);
        assert_eq!(wanted(false, None), Some(OffloadStatus::Disabled));
        for v in ["0", "off", " FALSE ", "no"] {
            assert_eq!(wanted(true, Some(v)), Some(OffloadStatus::DisabledByEnv));
        }
        assert!(is_gso_refusal(libc::EIO) && is_gso_refusal(libc::EINVAL));
        assert!(!is_gso_refusal(libc::EAGAIN));
        assert_eq!(busy_poll_us(Duration::from_nanos(10)), 1);
        assert_eq!(busy_poll_us(Duration::from_micros(50)), 50);
    }
}
