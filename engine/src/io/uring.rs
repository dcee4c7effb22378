//! io_uring backend.
//!
//! * Transmit ([`UringTx`]): one ring per instance, the connected socket registered
//!   as fixed file 0. A batch becomes one `Send` SQE per datagram, linked
//!   (`IOSQE_IO_LINK`) so the kernel sends them strictly in order even when the
//!   socket buffer fills (unlinked SQEs that hit `EAGAIN` are retried from poll
//!   wake-ups, which can reorder them). One `io_uring_enter` per chunk of up to SQ-size
//!   datagrams; every completion is checked. A transient failure (`ENOBUFS`, `EAGAIN`)
//!   cancels the rest of the chain, and the batch resumes from the failed datagram
//!   after waiting for the socket to drain — never a silent drop.
//! * Receive ([`UringRx`]): one multishot `RecvMsg` fed by a provided buffer ring
//!   (`IORING_REGISTER_PBUF_RING`); each completion names a buffer holding an
//!   `io_uring_recvmsg_out` header, the source `sockaddr_in` and the payload. The
//!   buffer goes back to the ring right after the callback. Where multishot recvmsg or
//!   buffer rings are missing (kernel < 6.0) it keeps a fixed set of plain `RecvMsg`
//!   requests in flight instead. No allocation per datagram in either mode.
//!
//! All memory the kernel reads or writes asynchronously (buffer ring, buffers, msghdrs)
//! is one `mmap` per region, allocated at construction and unmapped only after every
//! request that could touch it has completed (or leaked if that cannot be confirmed).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::Socket;

use super::offload::{self, next_group, Group, GsoCmsg, Offload, GRO_BUFFER, RX_CONTROL_LEN};
use super::socket::SocketConfig;
use super::{BackendKind, BusyPoll, IoError, RxBackend, TxBackend};

/// Largest SQ we ask for; bigger batches are sent in chunks of this size.
const MAX_SQ_ENTRIES: usize = 4096;
/// Size of the uapi `struct io_uring_recvmsg_out` (four `__u32`) that starts every
/// multishot recvmsg buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// Size of the source address area we reserve (`struct sockaddr_in`).
const SOCKADDR_IN_LEN: usize = std::mem::size_of::<libc::sockaddr_in>();
/// Buffer group id of the receive buffer ring (one group per ring).
const BGID: u16 = 0x5243;
/// Memory budget for receive buffers per ring.
const RX_MEMORY_BUDGET: usize = 64 << 20;
/// Memory budget for receive buffers per ring while GRO is on (64 KiB buffers).
const GRO_MEMORY_BUDGET: usize = 16 << 20;
/// How long a transmit batch may make no progress (socket full, `ENOBUFS`) before
/// `send_batch` gives up with an error.
const TX_STALL_LIMIT: Duration = Duration::from_secs(5);

const UD_MULTISHOT: u64 = u64::MAX - 1;
const UD_TIMEOUT: u64 = u64::MAX - 2;
const UD_CANCEL: u64 = u64::MAX - 3;

// ---------------------------------------------------------------------------------
// Page-aligned memory shared with the kernel.
// ---------------------------------------------------------------------------------

/// An anonymous, page-aligned, zeroed mapping, allocated once and never moved.
/// Accessed only through raw pointers, since the kernel writes into it asynchronously.
struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value and has no thread affinity;
// the raw pointer is only dereferenced by the owner.
unsafe impl Send for PageBuf {}

impl PageBuf {
    /// Maps `len` bytes (rounded up to whole pages), pre-faulted.
    fn new(len: usize) -> Result<Self, IoError> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping at a kernel-chosen address: it aliases
        // nothing, and we check the result before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(IoError::sys("mmap", io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| IoError::sys("mmap", io::Error::other("null mapping")))?;
        Ok(PageBuf { ptr, len })
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Gives up the mapping without unmapping it: used when the kernel might still
    /// write into it (better a leak than a write into reused memory).
    fn leak(&mut self) {
        self.len = 0;
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr`/`len` describe a mapping we created and still own.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

// ---------------------------------------------------------------------------------
// Capability detection (shared with `probe`).
// ---------------------------------------------------------------------------------

/// What io_uring can do on this host; detected once per process.
#[derive(Debug, Clone)]
pub(crate) struct UringCaps {
    /// Why io_uring is unusable, if it is.
    pub(crate) error: Option<String>,
    pub(crate) opcodes: Vec<(&'static str, bool)>,
    pub(crate) buf_ring: bool,
    pub(crate) recvmsg_multishot: bool,
    pub(crate) ext_arg: bool,
}

impl UringCaps {
    /// Whether the named opcode (see [`OPCODE_NAMES`]) is supported.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.opcodes.iter().any(|&(n, ok)| ok && n == name)
    }
}

/// The host's io_uring capabilities (probed on first call, then cached).
pub(crate) fn caps() -> &'static UringCaps {
    static CAPS: OnceLock<UringCaps> = OnceLock::new();
    CAPS.get_or_init(detect)
}

const OPCODE_NAMES: [&str; 8] = [
    "SendMsg",
    "Send",
    "RecvMsg",
    "RecvMsgMulti",
    "ProvideBuffers",
    "SendZc",
    "SendMsgZc",
    "AsyncCancel",
];

fn detect() -> UringCaps {
    let unusable = |error: String| UringCaps {
        error: Some(error),
        opcodes: OPCODE_NAMES.iter().map(|&n| (n, false)).collect(),
        buf_ring: false,
        recvmsg_multishot: false,
        ext_arg: false,
    };
    let mut ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return unusable(format!("io_uring_setup: {e}")),
    };
    // Creating a ring is not enough (a seccomp filter may block io_uring_enter).
    if let Err(e) = nop_roundtrip(&mut ring) {
        return unusable(format!("io_uring_enter: {e}"));
    }
    let mut probe = io_uring::Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let op = |code: u8| probed && probe.is_supported(code);
    let ext_arg = ring.params().is_feature_ext_arg();
    let buf_ring = test_buf_ring(&ring);
    let recvmsg_multishot =
        ext_arg && buf_ring && op(opcode::RecvMsg::CODE) && test_multishot(&mut ring);
    let opcodes = vec![
        ("SendMsg", op(opcode::SendMsg::CODE)),
        ("Send", op(opcode::Send::CODE)),
        ("RecvMsg", op(opcode::RecvMsg::CODE)),
        ("RecvMsgMulti", recvmsg_multishot),
        ("ProvideBuffers", op(opcode::ProvideBuffers::CODE)),
        ("SendZc", op(opcode::SendZc::CODE)),
        ("SendMsgZc", op(opcode::SendMsgZc::CODE)),
        ("AsyncCancel", op(opcode::AsyncCancel::CODE)),
    ];
    UringCaps {
        error: None,
        opcodes,
        buf_ring,
        recvmsg_multishot,
        ext_arg,
    }
}

fn nop_roundtrip(ring: &mut IoUring) -> io::Result<()> {
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("SQ full"))?;
    ring.submit_and_wait(1)?;
    match ring.completion().next() {
        Some(c) if c.user_data() == 7 && c.result() >= 0 => Ok(()),
        Some(c) => Err(io::Error::from_raw_os_error(-c.result())),
        None => Err(io::Error::other("no completion for NOP")),
    }
}

fn test_buf_ring(ring: &IoUring) -> bool {
    let Ok(mem) = PageBuf::new(4096) else {
        return false;
    };
    // SAFETY: `mem` is page-aligned, large enough for 8 entries, and is unregistered
    // below before it is unmapped.
    let ok = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(mem.ptr() as u64, 8, BGID, 0)
            .is_ok()
    };
    if ok && ring.submitter().unregister_buf_ring(BGID).is_err() {
        // The kernel still references the memory: keep it.
        std::mem::forget(mem);
    }
    ok
}

/// Receives one datagram with a multishot `RecvMsg` on a socketpair (no network).
fn test_multishot(ring: &mut IoUring) -> bool {
    let Ok((a, b)) = std::os::unix::net::UnixDatagram::pair() else {
        return false;
    };
    if a.send(b"ringcast-probe").is_err() {
        return false;
    }
    let Ok(mut br) = BufRing::new(ring, 2, 128, 64, 0) else {
        return false;
    };
    let sqe = br.multishot_sqe(types::Fd(b.as_raw_fd()));
    // SAFETY: the msghdr and the buffer ring live in `br`, which outlives the request:
    // it is cancelled and its final completion awaited below (or `br` is leaked).
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return false;
    }
    br.armed = true;
    let mut received = false;
    let ts = types::Timespec::new().sec(1);
    let args = types::SubmitArgs::new().timespec(&ts);
    if ring.submitter().submit_with_args(1, &args).is_ok() {
        for c in ring.completion() {
            if c.user_data() != UD_MULTISHOT {
                continue;
            }
            if !cqueue::more(c.flags()) {
                br.armed = false;
            }
            received |= c.result() > 0 && cqueue::buffer_select(c.flags()).is_some();
        }
    }
    // Only called when EXT_ARG is available.
    if !cancel_and_wait(ring, true, &[UD_MULTISHOT], &mut |c| {
        if c.user_data() == UD_MULTISHOT && !cqueue::more(c.flags()) {
            br.armed = false;
        }
        !br.armed
    }) {
        br.leak();
        return false;
    }
    br.unregister(ring);
    received
}

/// Cancels the requests with the given user_data and waits (bounded) until `done`
/// returns true after seeing completions. Returns whether `done` was reached.
fn cancel_and_wait(
    ring: &mut IoUring,
    ext_arg: bool,
    targets: &[u64],
    done: &mut dyn FnMut(&cqueue::Entry) -> bool,
) -> bool {
    for &t in targets {
        let sqe = opcode::AsyncCancel::new(t).build().user_data(UD_CANCEL);
        loop {
            // SAFETY: AsyncCancel references no memory.
            if unsafe { ring.submission().push(&sqe) }.is_ok() {
                break;
            }
            if ring.submit().is_err() {
                return false;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut finished = targets.is_empty();
    loop {
        for c in ring.completion() {
            finished = done(&c);
        }
        if finished {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let ts = types::Timespec::new().nsec(10_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        let r = if ext_arg {
            ring.submitter().submit_with_args(1, &args)
        } else {
            std::thread::sleep(Duration::from_millis(1));
            ring.submit()
        };
        if let Err(e) = r {
            if !matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
            ) {
                return false;
            }
        }
    }
}

/// Builds a ring, preferring `SUBMIT_ALL` (never leave SQEs behind on an error) and,
/// for `coop`, `COOP_TASKRUN` (no inter-processor interrupt for completions: for rings
/// that always wait inside `io_uring_enter`). Falls back to a plain ring on old kernels.
fn build_ring(entries: u32, cq_entries: Option<u32>, coop: bool) -> Result<IoUring, IoError> {
    let mut b = IoUring::builder();
    b.setup_submit_all();
    if coop {
        b.setup_coop_taskrun();
    }
    if let Some(c) = cq_entries {
        b.setup_cqsize(c);
    }
    match b.build(entries) {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut b = IoUring::builder();
            if let Some(c) = cq_entries {
                b.setup_cqsize(c);
            }
            b.build(entries)
                .map_err(|e| IoError::sys("io_uring_setup", e))
        }
        Err(e) => Err(IoError::sys("io_uring_setup", e)),
    }
}

fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME
    )
}

// ---------------------------------------------------------------------------------
// Transmit.
// ---------------------------------------------------------------------------------

/// io_uring transmit backend: linked `Send` SQEs on a registered, connected socket;
/// with GSO on, a run of equal-size datagrams is one `SendMsg` SQE whose iovecs point
/// at the datagrams and whose `UDP_SEGMENT` cmsg gives the size.
pub struct UringTx {
    ring: IoUring,
    /// Keeps the registered fd open; dropped after the ring.
    sock: Socket,
    /// Completion result per SQE of the current chunk.
    results: Vec<i32>,
    chunk: usize,
    /// Per chunk: one iovec per datagram, one msghdr and cmsg per GSO group. Boxed
    /// slices: they do not move while the kernel reads them.
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::msghdr]>,
    cmsgs: Box<[GsoCmsg]>,
    groups: Vec<Group>,
    gso: bool,
    max_segment: usize,
    offload: Offload,
    /// The destination of the current batch when it is not the connected group
    /// (boxed: the kernel reads it through the msghdrs).
    dest: Box<libc::sockaddr_in>,
    to: bool,
    /// Set when the ring may hold SQEs pointing into a caller's buffers that the
    /// kernel never consumed; the instance refuses further work.
    poisoned: bool,
}

// SAFETY: the raw pointers in `iovs`/`msgs` point into this value's own boxed slices
// or into a caller's buffers during one `send_batch` call only (rewritten every
// call); io_uring rings may be used from any thread.
unsafe impl Send for UringTx {}

const PENDING: i32 = i32::MIN;

/// How a chunk went: datagrams sent from its front, and if fewer than all, the errno
/// of the first failure and whether it was a GSO send the kernel refused.
struct ChunkResult {
    sent: usize,
    errno: i32,
    gso_refused: bool,
}

impl UringTx {
    /// Wraps a transmit socket (from [`super::socket::open_tx_socket`]); GSO is used
    /// when `cfg.gso` says the kernel accepted it (see [`super::open_tx`]).
    pub fn new(sock: Socket, cfg: &SocketConfig) -> Result<Self, IoError> {
        let entries = cfg.batch.clamp(8, MAX_SQ_ENTRIES).next_power_of_two();
        let ring = build_ring(entries as u32, None, true)?;
        ring.submitter()
            .register_files(&[sock.as_raw_fd()])
            .map_err(|e| IoError::sys("io_uring_register(FILES)", e))?;
        let chunk = (ring.params().sq_entries() as usize).min(entries);
        tracing::debug!(sq = chunk, gso = cfg.gso, "io_uring tx ready");
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(UringTx {
            ring,
            sock,
            results: vec![PENDING; chunk],
            chunk,
            iovs: vec![iov; chunk].into_boxed_slice(),
            // SAFETY: msghdr is plain old data; all-zero is valid (null pointers).
            msgs: (0..chunk).map(|_| unsafe { std::mem::zeroed() }).collect(),
            cmsgs: vec![GsoCmsg::new(); chunk].into_boxed_slice(),
            groups: Vec::with_capacity(chunk),
            gso: cfg.gso,
            max_segment: cfg.max_datagram,
            offload: cfg.offload.clone(),
            dest: Box::new(super::sockaddr_in(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::UNSPECIFIED,
                0,
            ))),
            to: false,
            poisoned: false,
        })
    }

    /// Sends `chunk` (at most `self.chunk` datagrams) as one linked SQE chain: one
    /// SQE per GSO group or single datagram. Fewer sent than `chunk.len()` means a
    /// failure at that index (the rest were cancelled and not sent): transient, or a
    /// GSO send refused.
    fn send_chunk(&mut self, chunk: &[&[u8]]) -> Result<ChunkResult, IoError> {
        let n = chunk.len();
        // Validate before queueing anything: an early return must not leave SQEs
        // pointing into the caller's buffers in the SQ.
        if chunk.iter().any(|d| u32::try_from(d.len()).is_err()) {
            return Err(IoError::sys(
                "send",
                io::Error::from_raw_os_error(libc::EMSGSIZE),
            ));
        }
        self.groups.clear();
        let mut at = 0;
        while at < n {
            let g = if self.gso {
                next_group(&chunk[at..], self.max_segment, n - at)
            } else {
                let len = chunk[at].len();
                Group {
                    count: 1,
                    segment: len,
                    bytes: len,
                }
            };
            self.groups.push(g); // at most `chunk` groups: within capacity
            at += g.count;
        }
        let m = self.groups.len();
        for (iov, d) in self.iovs.iter_mut().zip(chunk) {
            *iov = libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            };
        }
        for (c, g) in self.cmsgs.iter_mut().zip(&self.groups) {
            c.set(g.segment);
        }
        let iovp = self.iovs.as_mut_ptr();
        let cmsgp = self.cmsgs.as_mut_ptr();
        let msgp = self.msgs.as_mut_ptr();
        let name: *mut libc::sockaddr_in = if self.to {
            &mut *self.dest
        } else {
            std::ptr::null_mut()
        };
        {
            let mut sq = self.ring.submission();
            let mut at = 0;
            for (k, g) in self.groups.iter().enumerate() {
                // A batch to a unicast destination goes as `SendMsg`s naming it.
                let sqe = if g.is_gso() || self.to {
                    // SAFETY: k < m ≤ chunk, so the msghdr, its iovecs
                    // (at..at + count ≤ n) and cmsg are in bounds of our slices; the
                    // destination is boxed in `self` (or null: the connected group).
                    let h = unsafe {
                        let h = msgp.add(k);
                        let mut v: libc::msghdr = std::mem::zeroed();
                        v.msg_iov = iovp.add(at);
                        v.msg_iovlen = g.count as _;
                        if g.is_gso() {
                            v.msg_control = cmsgp.add(k).cast();
                            v.msg_controllen = GsoCmsg::LEN as _;
                        }
                        if !name.is_null() {
                            v.msg_name = name.cast();
                            v.msg_namelen =
                                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                        }
                        h.write(v);
                        h
                    };
                    opcode::SendMsg::new(types::Fixed(0), h).build()
                } else {
                    let d = chunk[at];
                    opcode::Send::new(types::Fixed(0), d.as_ptr(), d.len() as u32).build()
                };
                let mut sqe = sqe.user_data(k as u64);
                if k + 1 < m {
                    sqe = sqe.flags(squeue::Flags::IO_LINK);
                }
                // SAFETY: the datagrams are borrowed for the whole call, the msghdrs,
                // iovecs and cmsgs are owned by `self`, and this function does not
                // return before every SQE pushed here has completed (or the instance
                // is poisoned so they are never submitted).
                if unsafe { sq.push(&sqe) }.is_err() {
                    // Cannot happen (the SQ is empty and m <= its size), but if it
                    // did, the pushed part must never be submitted.
                    self.poisoned = true;
                    return Err(IoError::sys("io_uring SQ", io::Error::other("SQ full")));
                }
                at += g.count;
            }
        }
        self.results[..m].fill(PENDING);
        let mut seen = 0;
        let mut busy_spins = 0u32;
        while seen < m {
            match self.ring.submit_and_wait(m - seen) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
                        && busy_spins < 10_000 =>
                {
                    busy_spins += 1;
                    std::thread::yield_now();
                }
                Err(e) => {
                    self.poisoned = true;
                    return Err(IoError::sys("io_uring_enter (send)", e));
                }
            }
            for c in self.ring.completion() {
                let i = c.user_data() as usize;
                if i < m && self.results[i] == PENDING {
                    self.results[i] = c.result();
                    seen += 1;
                }
            }
        }
        let mut sent = 0;
        for (&r, g) in self.results[..m].iter().zip(&self.groups) {
            if r >= 0 {
                if r as usize != g.bytes {
                    return Err(IoError::sys(
                        "io_uring send",
                        io::Error::other(format!("short send: {r} of {} bytes", g.bytes)),
                    ));
                }
                if g.is_gso() {
                    self.offload.gso_sent(g.count);
                }
                sent += g.count;
                continue;
            }
            let errno = -r;
            if g.is_gso() && offload::is_gso_refusal(errno) {
                return Ok(ChunkResult {
                    sent,
                    errno,
                    gso_refused: true,
                });
            }
            return match errno {
                libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::ECANCELED => Ok(ChunkResult {
                    sent,
                    errno,
                    gso_refused: false,
                }),
                _ => Err(IoError::sys(
                    "io_uring send",
                    io::Error::from_raw_os_error(errno),
                )),
            };
        }
        Ok(ChunkResult {
            sent: n,
            errno: 0,
            gso_refused: false,
        })
    }
}

impl TxBackend for UringTx {
    fn send_batch_to(
        &mut self,
        datagrams: &[&[u8]],
        to: Option<std::net::SocketAddrV4>,
    ) -> Result<(), IoError> {
        self.to = to.is_some();
        if let Some(a) = to {
            *self.dest = super::sockaddr_in(a);
        }
        if self.poisoned {
            return Err(IoError::sys(
                "io_uring send",
                io::Error::other("backend unusable after an earlier submission failure"),
            ));
        }
        let mut start = 0;
        let mut stalled_since: Option<Instant> = None;
        while start < datagrams.len() {
            let end = (start + self.chunk).min(datagrams.len());
            let r = self.send_chunk(&datagrams[start..end])?;
            start += r.sent;
            if start == end {
                stalled_since = None;
                continue;
            }
            if r.gso_refused {
                // The kernel or the NIC cannot segment on this route: resend from
                // the refused group on without GSO, and keep it off for the socket.
                tracing::warn!(
                    errno = r.errno,
                    "io_uring send: UDP GSO refused; switched off for this socket"
                );
                self.gso = false;
                self.offload.gso_downgraded(r.errno);
                continue;
            }
            // Transient failure at `start`: wait for room, then resume from there.
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > TX_STALL_LIMIT {
                return Err(IoError::sys(
                    "io_uring send (stalled)",
                    io::Error::from_raw_os_error(r.errno),
                ));
            }
            tracing::debug!(
                errno = r.errno,
                at = start,
                "io_uring send: transient failure, retrying"
            );
            wait_writable(&self.sock, r.errno);
        }
        Ok(())
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }
}

/// After `EAGAIN`/`ENOBUFS`: wait until the socket is writable (bounded), and for
/// `ENOBUFS` (device queue full; poll may report writable at once) back off briefly.
pub(crate) fn wait_writable(sock: &Socket, errno: i32) {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    unsafe { libc::poll(&mut pfd, 1, 10) };
    if errno == libc::ENOBUFS {
        std::thread::sleep(Duration::from_micros(100));
    }
}

// ---------------------------------------------------------------------------------
// Receive.
// ---------------------------------------------------------------------------------

/// How [`UringRx`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringRxMode {
    /// One multishot `RecvMsg` with a provided buffer ring (kernel ≥ 6.0).
    Multishot,
    /// A fixed set of plain `RecvMsg` requests kept in flight (older kernels).
    Slots,
}

/// io_uring receive backend.
pub struct UringRx {
    ring: IoUring,
    recv: Recv,
    /// Keeps the registered fd open; dropped after the ring.
    _sock: Socket,
    max_datagram: usize,
    /// GRO is on: buffers hold up to 64 KiB and a `UDP_GRO` cmsg.
    gro: bool,
    /// A coalesced buffer not fully delivered yet (it stays ours until it is).
    held: Option<Held>,
    offload: Offload,
    truncated: u64,
    no_buffer: u64,
    malformed: u64,
    ext_arg: bool,
    /// Timeout for the `Timeout` SQE used when `EXT_ARG` is missing.
    timeout: Box<types::Timespec>,
    timeout_armed: bool,
}

enum Recv {
    Multi(BufRing),
    Slots(Slots),
}

/// A received buffer (multishot: buffer id; slots: slot index) of `len` bytes whose
/// datagrams from byte `offset` of its payload on are still to be delivered.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: usize,
    len: usize,
    offset: usize,
}

impl UringRx {
    /// Wraps a receive socket (from [`super::socket::open_rx_socket`]), using multishot
    /// recvmsg with a buffer ring when the kernel supports it.
    pub fn new(sock: Socket, cfg: &SocketConfig) -> Result<Self, IoError> {
        let c = caps();
        let mode = if c.recvmsg_multishot && c.buf_ring {
            UringRxMode::Multishot
        } else {
            UringRxMode::Slots
        };
        Self::with_mode(sock, cfg, mode)
    }

    /// Like [`UringRx::new`] with the receive mode chosen by the caller.
    pub fn with_mode(sock: Socket, cfg: &SocketConfig, mode: UringRxMode) -> Result<Self, IoError> {
        let max = cfg.max_datagram.max(1);
        let batch = cfg.batch.max(1);
        let c = caps();
        if let Some(e) = &c.error {
            return Err(IoError::Unavailable {
                kind: BackendKind::Uring,
                reason: e.clone(),
            });
        }
        let gro = cfg.gro;
        let budget = if gro {
            GRO_MEMORY_BUDGET
        } else {
            RX_MEMORY_BUDGET
        };
        let recv_mem;
        let ring;
        match mode {
            UringRxMode::Multishot => {
                let (payload, ctrl) = if gro {
                    (GRO_BUFFER.max(max), RX_CONTROL_LEN)
                } else {
                    (max, 0)
                };
                let stride = round_up(RECVMSG_OUT_LEN + SOCKADDR_IN_LEN + ctrl + payload, 64);
                let count = buffer_count(batch, stride, 256, 32_768, budget);
                ring = build_ring(8, Some((count * 2) as u32), false)?;
                recv_mem = Recv::Multi(BufRing::new(&ring, count, stride, payload, ctrl)?);
            }
            UringRxMode::Slots => {
                // One spare byte detects oversize datagrams where the kernel does not
                // report MSG_TRUNC back; with GRO the buffer is far above any datagram.
                let buf_len = if gro {
                    GRO_BUFFER.max(max + 1)
                } else {
                    max + 1
                };
                let stride = round_up(buf_len, 64);
                let count = buffer_count(batch, stride, 16, 1024, budget);
                ring = build_ring((count + 8).next_power_of_two() as u32, None, false)?;
                recv_mem = Recv::Slots(Slots::new(count, stride, buf_len, gro)?);
            }
        }
        ring.submitter()
            .register_files(&[sock.as_raw_fd()])
            .map_err(|e| IoError::sys("io_uring_register(FILES)", e))?;
        if let Some(d) = cfg.busy_poll {
            // NAPI busy polling while waiting for completions (Linux ≥ 6.9): the
            // io_uring counterpart of SO_BUSY_POLL, which only covers recvmsg calls.
            let us = offload::busy_poll_us(d);
            let mut napi = types::Napi::new().set_busy_poll_timeout(us);
            let st = match ring.submitter().register_napi(&mut napi) {
                Ok(()) => BusyPoll::On(us),
                Err(e) => BusyPoll::Refused(us, e.raw_os_error().unwrap_or(libc::EINVAL)),
            };
            tracing::debug!(%st, "io_uring NAPI busy poll");
            cfg.offload.set_napi_busy_poll(st);
        }
        tracing::debug!(?mode, gro, "io_uring rx ready");
        Ok(UringRx {
            ring,
            recv: recv_mem,
            _sock: sock,
            max_datagram: max,
            gro,
            held: None,
            offload: cfg.offload.clone(),
            truncated: 0,
            no_buffer: 0,
            malformed: 0,
            ext_arg: c.ext_arg,
            timeout: Box::new(types::Timespec::new()),
            timeout_armed: false,
        })
    }

    /// The receive mode in use.
    #[allow(dead_code)] // diagnostic accessor (tests, future counters)
    pub fn mode(&self) -> UringRxMode {
        match self.recv {
            Recv::Multi(_) => UringRxMode::Multishot,
            Recv::Slots(_) => UringRxMode::Slots,
        }
    }

    /// Times the multishot receive stopped for lack of a free buffer (`ENOBUFS`) and
    /// was re-armed; the datagrams wait in the socket buffer meanwhile.
    #[allow(dead_code)] // diagnostic accessor (tests, future counters)
    pub fn buffer_exhaustions(&self) -> u64 {
        self.no_buffer
    }

    /// Completions whose buffer could not be parsed (should stay 0).
    #[allow(dead_code)] // diagnostic accessor (tests, future counters)
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Queues the receive request(s) that are not in flight. Does not submit.
    fn arm(&mut self) -> Result<(), IoError> {
        let mut sq = self.ring.submission();
        match &mut self.recv {
            Recv::Multi(br) => {
                if !br.armed {
                    let sqe = br.multishot_sqe(types::Fixed(0));
                    // SAFETY: the msghdr and buffer ring are owned by `self` and kept
                    // until the request's final completion has been reaped (Drop
                    // cancels and waits).
                    unsafe { sq.push(&sqe) }.map_err(|_| sq_full())?;
                    br.armed = true;
                }
            }
            Recv::Slots(s) => {
                let held = self.held.map(|h| h.id);
                for slot in 0..s.count {
                    if s.in_flight[slot] || held == Some(slot) {
                        continue;
                    }
                    let hdr = s.reset(slot);
                    let sqe = opcode::RecvMsg::new(types::Fixed(0), hdr)
                        .build()
                        .user_data(slot as u64);
                    // SAFETY: `hdr`, its iovec, name and buffer live in `s.mem`, owned
                    // by `self`, untouched by us until this slot's completion is reaped,
                    // and kept until then (Drop cancels and waits).
                    unsafe { sq.push(&sqe) }.map_err(|_| sq_full())?;
                    s.in_flight[slot] = true;
                    s.in_flight_count += 1;
                }
            }
        }
        Ok(())
    }

    /// Submits queued SQEs without waiting (skips the syscall if there is nothing to
    /// submit and no overflow to flush).
    fn submit_pending(&mut self) -> Result<(), IoError> {
        let need = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.cq_overflow() || sq.taskrun()
        };
        if need {
            if let Err(e) = self.ring.submit() {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) {
                    return Err(IoError::sys("io_uring_enter (recv)", e));
                }
            }
        }
        Ok(())
    }

    /// Submits and blocks up to `d` for at least one completion.
    fn wait_for(&mut self, d: Duration) -> Result<(), IoError> {
        let ts = types::Timespec::new()
            .sec(d.as_secs())
            .nsec(d.subsec_nanos());
        let r = if self.ext_arg {
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            if !self.timeout_armed {
                *self.timeout = ts;
                let sqe = opcode::Timeout::new(&*self.timeout)
                    .count(1)
                    .build()
                    .user_data(UD_TIMEOUT);
                // SAFETY: the timespec is boxed in `self` (and copied by the kernel at
                // submission anyway).
                unsafe { self.ring.submission().push(&sqe) }.map_err(|_| sq_full())?;
                self.timeout_armed = true;
            }
            self.ring.submit_and_wait(1)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error().is_some_and(is_transient) => Ok(()),
            Err(e) => Err(IoError::sys("io_uring_enter (recv wait)", e)),
        }
    }

    /// Delivers up to `max` datagrams: first what is left of a held coalesced
    /// buffer, then from completions already in the CQ.
    fn reap(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let mut delivered = 0;
        let mut ctx = Deliver {
            max_datagram: self.max_datagram,
            gro: self.gro,
            offload: &self.offload,
            truncated: &mut self.truncated,
            malformed: &mut self.malformed,
        };
        if let Some(h) = self.held.take() {
            let (n, resume) = ctx.buffer(&self.recv, h.id, h.len, h.offset, max, f);
            delivered += n;
            if let Some(offset) = resume {
                self.held = Some(Held { offset, ..h });
                return Ok(delivered);
            }
            if let Recv::Multi(br) = &mut self.recv {
                br.recycle(h.id as u16);
                br.publish();
            }
        }
        let mut failure: Option<IoError> = None;
        let mut cq = self.ring.completion();
        while delivered < max {
            let Some(c) = cq.next() else { break };
            let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
            if ud == UD_TIMEOUT {
                self.timeout_armed = false;
                continue;
            }
            match &mut self.recv {
                Recv::Multi(br) => {
                    if ud != UD_MULTISHOT {
                        continue;
                    }
                    if !cqueue::more(flags) {
                        br.armed = false;
                    }
                    let bid = cqueue::buffer_select(flags);
                    if res < 0 {
                        if let Some(b) = bid {
                            br.recycle(b);
                        }
                        match -res {
                            libc::ENOBUFS => self.no_buffer += 1,
                            libc::ECANCELED => {}
                            e if is_transient(e) => {}
                            e => {
                                failure = Some(IoError::sys(
                                    "io_uring recvmsg",
                                    io::Error::from_raw_os_error(e),
                                ));
                                break;
                            }
                        }
                        continue;
                    }
                    let Some(bid) = bid.filter(|&b| usize::from(b) < br.count) else {
                        failure = Some(IoError::sys(
                            "io_uring recvmsg",
                            io::Error::other("completion without a valid buffer id"),
                        ));
                        break;
                    };
                    let len = (res as usize).min(br.stride);
                    let id = usize::from(bid);
                    let (n, resume) = ctx.multi(br, id, len, 0, max - delivered, f);
                    delivered += n;
                    if let Some(offset) = resume {
                        // Keep the buffer until its last datagram is delivered.
                        self.held = Some(Held { id, len, offset });
                        break;
                    }
                    br.recycle(bid);
                }
                Recv::Slots(s) => {
                    let slot = ud as usize;
                    if slot >= s.count || !s.in_flight[slot] {
                        continue;
                    }
                    s.in_flight[slot] = false;
                    s.in_flight_count -= 1;
                    if res < 0 {
                        match -res {
                            libc::ECANCELED | libc::ENOBUFS => {}
                            e if is_transient(e) => {}
                            e => {
                                failure = Some(IoError::sys(
                                    "io_uring recvmsg",
                                    io::Error::from_raw_os_error(e),
                                ));
                                break;
                            }
                        }
                        continue;
                    }
                    let len = res as usize;
                    let (n, resume) = ctx.slot(s, slot, len, 0, max - delivered, f);
                    delivered += n;
                    if let Some(offset) = resume {
                        // The slot is re-armed once its last datagram is delivered.
                        self.held = Some(Held {
                            id: slot,
                            len,
                            offset,
                        });
                        break;
                    }
                }
            }
        }
        drop(cq);
        if let Recv::Multi(br) = &mut self.recv {
            br.publish();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }
}

/// What delivering one received buffer needs of a [`UringRx`] (borrowed field by
/// field, so the completion queue can stay borrowed meanwhile).
struct Deliver<'a> {
    max_datagram: usize,
    gro: bool,
    offload: &'a Offload,
    truncated: &'a mut u64,
    malformed: &'a mut u64,
}

impl Deliver<'_> {
    fn buffer(
        &mut self,
        recv: &Recv,
        id: usize,
        len: usize,
        offset: usize,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> (usize, Option<usize>) {
        match recv {
            Recv::Multi(br) => self.multi(br, id, len, offset, budget, f),
            Recv::Slots(s) => self.slot(s, id, len, offset, budget, f),
        }
    }

    /// Buffer `id` (< count) of the buffer ring, `len` bytes written by the kernel.
    fn multi(
        &mut self,
        br: &BufRing,
        id: usize,
        len: usize,
        offset: usize,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> (usize, Option<usize>) {
        // SAFETY: the kernel wrote `len` (≤ stride) bytes into buffer `id` and handed it
        // to us with its completion; it will not touch it again until `recycle` puts
        // it back in the ring, which happens only after we are done with it.
        let buf = unsafe { std::slice::from_raw_parts(br.buf(id as u16), len) };
        match types::RecvMsgOut::parse(buf, &br.msghdr) {
            Ok(out) if out.is_payload_truncated() => {
                *self.truncated = self.truncated.saturating_add(1);
                (0, None)
            }
            Ok(out) => {
                let segment = if self.gro {
                    offload::gro_segment(out.control_data())
                } else {
                    None
                };
                let src = sockaddr_from_bytes(out.name_data());
                self.split(out.payload_data(), segment, src, offset, budget, f)
            }
            Err(()) => {
                *self.malformed = self.malformed.saturating_add(1);
                tracing::warn!(len, "io_uring recvmsg: unparsable buffer dropped");
                (0, None)
            }
        }
    }

    /// Slot `slot` (< count, completed, not re-armed) with `len` bytes received.
    fn slot(
        &mut self,
        s: &Slots,
        slot: usize,
        len: usize,
        offset: usize,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> (usize, Option<usize>) {
        // SAFETY: this slot's request has completed and it is not re-armed before we
        // are done with it, so the kernel no longer writes its msghdr, name, control
        // area or buffer.
        let (msg_flags, src, buf, ctrl) = unsafe { s.completed(slot, len) };
        if msg_flags & libc::MSG_TRUNC != 0 {
            *self.truncated = self.truncated.saturating_add(1);
            return (0, None);
        }
        let segment = if self.gro {
            offload::gro_segment(ctrl)
        } else {
            None
        };
        self.split(buf, segment, src, offset, budget, f)
    }

    fn split(
        &mut self,
        payload: &[u8],
        segment: Option<usize>,
        src: SocketAddrV4,
        offset: usize,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> (usize, Option<usize>) {
        let sp = offload::split(
            payload,
            segment,
            self.max_datagram,
            offset,
            budget,
            &mut |d| f(d, src),
        );
        *self.truncated = self.truncated.saturating_add(sp.truncated);
        if sp.coalesced > 0 {
            self.offload.gro_received(sp.coalesced);
        }
        (sp.delivered, sp.resume)
    }
}

impl RxBackend for UringRx {
    fn recv_batch(
        &mut self,
        max: usize,
        wait: Option<Duration>,
        on_datagram: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        if max == 0 {
            return Ok(0);
        }
        let deadline = wait.map(|d| Instant::now() + d);
        loop {
            // Reap first, then (re-)arm: a completion just reaped may have ended the
            // multishot request or freed a slot, and the wait below must submit the
            // replacement or it would sleep with nothing in flight.
            let n = self.reap(max, on_datagram)?;
            self.arm()?;
            if n > 0 {
                self.submit_pending()?;
                return Ok(n);
            }
            match deadline {
                None => {
                    self.submit_pending()?;
                    let n = self.reap(max, on_datagram)?;
                    self.arm()?;
                    self.submit_pending()?;
                    return Ok(n);
                }
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        self.submit_pending()?;
                        return Ok(0);
                    }
                    self.wait_for(dl - now)?;
                }
            }
        }
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn truncated(&self) -> u64 {
        self.truncated
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        let mut targets: Vec<u64> = Vec::new();
        match &self.recv {
            Recv::Multi(br) if br.armed => targets.push(UD_MULTISHOT),
            Recv::Multi(_) => {}
            Recv::Slots(s) => {
                targets.extend((0..s.count).filter(|&i| s.in_flight[i]).map(|i| i as u64))
            }
        }
        if self.timeout_armed {
            targets.push(UD_TIMEOUT);
        }
        let Self {
            ring,
            recv,
            timeout_armed,
            ext_arg,
            ..
        } = self;
        let ok = cancel_and_wait(ring, *ext_arg, &targets, &mut |c| {
            let ud = c.user_data();
            if ud == UD_TIMEOUT {
                *timeout_armed = false;
            }
            match recv {
                Recv::Multi(br) => {
                    if ud == UD_MULTISHOT && !cqueue::more(c.flags()) {
                        br.armed = false;
                    }
                    !br.armed && !*timeout_armed
                }
                Recv::Slots(s) => {
                    let slot = ud as usize;
                    if slot < s.count && s.in_flight[slot] {
                        s.in_flight[slot] = false;
                        s.in_flight_count -= 1;
                    }
                    s.in_flight_count == 0 && !*timeout_armed
                }
            }
        });
        match &mut self.recv {
            Recv::Multi(br) if ok => br.unregister(&self.ring),
            Recv::Multi(br) => {
                tracing::warn!("io_uring rx: could not confirm cancellation; leaking buffers");
                br.leak();
            }
            Recv::Slots(s) if !ok => {
                tracing::warn!("io_uring rx: could not confirm cancellation; leaking buffers");
                s.mem.leak();
            }
            Recv::Slots(_) => {}
        }
    }
}

fn sq_full() -> IoError {
    IoError::sys("io_uring SQ", io::Error::other("submission queue full"))
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Number of receive buffers: a power of two ≥ `min` and ≥ 2 × batch, at most `max`,
/// shrunk to fit `budget` bytes (but at least 8).
fn buffer_count(batch: usize, stride: usize, min: usize, max: usize, budget: usize) -> usize {
    let mut count = batch
        .saturating_mul(2)
        .max(min)
        .min(max)
        .next_power_of_two()
        .min(max);
    while count > 8 && count * stride > budget {
        count /= 2;
    }
    count
}

/// Parses a `sockaddr_in` as written by the kernel (family, port BE, address BE).
fn sockaddr_from_bytes(b: &[u8]) -> SocketAddrV4 {
    if b.len() >= 8 && i32::from(u16::from_ne_bytes([b[0], b[1]])) == libc::AF_INET {
        SocketAddrV4::new(
            Ipv4Addr::new(b[4], b[5], b[6], b[7]),
            u16::from_be_bytes([b[2], b[3]]),
        )
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
    }
}

fn sockaddr_from_in(sin: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    )
}

/// A provided-buffer ring: `count` entries (page-aligned ring memory) and `count`
/// buffers of `stride` bytes, each offered to the kernel with length `buf_len`.
struct BufRing {
    entries: PageBuf,
    bufs: PageBuf,
    /// Template for the multishot request: only `msg_namelen`/`msg_controllen` matter
    /// (the control length reserves room for a `UDP_GRO` cmsg in every buffer).
    msghdr: Box<libc::msghdr>,
    count: usize,
    stride: usize,
    buf_len: u32,
    /// Our copy of the ring tail (published with a release store).
    tail: u16,
    armed: bool,
    registered: bool,
}

// SAFETY: the raw pointers in `msghdr` are null; the mappings are owned by this value.
unsafe impl Send for BufRing {}

impl BufRing {
    /// `count` must be a power of two ≤ 32768; buffers hold `max_payload` bytes of
    /// payload after the recvmsg_out header, the sockaddr_in and `ctrl` bytes of
    /// control messages.
    fn new(
        ring: &IoUring,
        count: usize,
        stride: usize,
        max_payload: usize,
        ctrl: usize,
    ) -> Result<Self, IoError> {
        let entries_len = count * std::mem::size_of::<types::BufRingEntry>();
        let entries = PageBuf::new(entries_len)?;
        let bufs = PageBuf::new(count * stride)?;
        let buf_len = u32::try_from(RECVMSG_OUT_LEN + SOCKADDR_IN_LEN + ctrl + max_payload)
            .map_err(|_| IoError::sys("buffer ring", io::Error::other("buffer too large")))?;
        let ring_entries = u16::try_from(count)
            .map_err(|_| IoError::sys("buffer ring", io::Error::other("too many buffers")))?;
        // SAFETY: `msghdr` is plain old data; all-zero is valid (null pointers).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
        msghdr.msg_controllen = ctrl as _;
        let mut br = BufRing {
            entries,
            bufs,
            msghdr,
            count,
            stride,
            buf_len,
            tail: 0,
            armed: false,
            registered: false,
        };
        // SAFETY: the entry memory is page-aligned, holds `count` entries, is owned by
        // the returned value and unregistered (or leaked) before it is unmapped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.entries.ptr() as u64, ring_entries, BGID, 0)
                .map_err(|e| IoError::sys("io_uring_register(PBUF_RING)", e))?;
        }
        br.registered = true;
        for bid in 0..ring_entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    fn multishot_sqe(&self, fd: impl RecvFd) -> squeue::Entry {
        fd.recvmsg_multi(&*self.msghdr, BGID)
            .user_data(UD_MULTISHOT)
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        // `bid < count` is checked by callers, so the offset stays in the mapping.
        self.bufs.ptr().wrapping_add(usize::from(bid) * self.stride)
    }

    /// Offers buffer `bid` to the kernel again (visible after [`BufRing::publish`]).
    fn recycle(&mut self, bid: u16) {
        let idx = usize::from(self.tail) & (self.count - 1);
        let base = self.entries.ptr().cast::<types::BufRingEntry>();
        // SAFETY: idx < count, so the entry lies inside the mapping. Slots between the
        // kernel's head and our tail are owned by the kernel, this one (at our tail) is
        // ours. The setters leave `resv` alone, which for entry 0 is the shared tail.
        let e = unsafe { &mut *base.add(idx) };
        e.set_addr(self.buf(bid) as u64);
        e.set_len(self.buf_len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    fn publish(&self) {
        let base = self.entries.ptr().cast::<types::BufRingEntry>();
        // SAFETY: `base` is the first entry of the ring we registered; the tail is a
        // naturally aligned u16 inside our mapping that the kernel reads with
        // acquire semantics, so a release store through an atomic view is the
        // protocol liburing uses.
        let tail = unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(base).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    fn unregister(&mut self, ring: &IoUring) {
        if self.registered {
            if ring.submitter().unregister_buf_ring(BGID).is_ok() {
                self.registered = false;
            } else {
                self.leak();
            }
        }
    }

    fn leak(&mut self) {
        self.entries.leak();
        self.bufs.leak();
    }
}

/// Builds a multishot recvmsg SQE for a fixed or a plain fd.
trait RecvFd {
    fn recvmsg_multi(self, msg: *const libc::msghdr, bgid: u16) -> squeue::Entry;
}

impl RecvFd for types::Fixed {
    fn recvmsg_multi(self, msg: *const libc::msghdr, bgid: u16) -> squeue::Entry {
        opcode::RecvMsgMulti::new(self, msg, bgid).build()
    }
}

impl RecvFd for types::Fd {
    fn recvmsg_multi(self, msg: *const libc::msghdr, bgid: u16) -> squeue::Entry {
        opcode::RecvMsgMulti::new(self, msg, bgid).build()
    }
}

/// Plain `RecvMsg` slots: per slot a msghdr, an iovec, a sockaddr_in, a control area
/// (with GRO) and a buffer of `buf_len` bytes (`max_datagram + 1` without GRO: one
/// spare byte detects oversize datagrams even where the kernel does not report
/// `MSG_TRUNC` back). All in one mapping.
struct Slots {
    mem: PageBuf,
    count: usize,
    stride: usize,
    buf_len: usize,
    gro: bool,
    hdr_off: usize,
    iov_off: usize,
    name_off: usize,
    ctl_off: usize,
    buf_off: usize,
    in_flight: Vec<bool>,
    in_flight_count: usize,
}

impl Slots {
    fn new(count: usize, stride: usize, buf_len: usize, gro: bool) -> Result<Self, IoError> {
        let hdr_off = 0;
        let iov_off = round_up(hdr_off + count * std::mem::size_of::<libc::msghdr>(), 64);
        let name_off = round_up(iov_off + count * std::mem::size_of::<libc::iovec>(), 64);
        let ctl_off = round_up(name_off + count * SOCKADDR_IN_LEN, 64);
        let ctl_len = if gro { count * RX_CONTROL_LEN } else { 0 };
        let buf_off = round_up(ctl_off + ctl_len, 4096);
        let mem = PageBuf::new(buf_off + count * stride)?;
        Ok(Slots {
            mem,
            count,
            stride,
            buf_len,
            gro,
            hdr_off,
            iov_off,
            name_off,
            ctl_off,
            buf_off,
            in_flight: vec![false; count],
            in_flight_count: 0,
        })
    }

    /// Pointer to element `slot` of the array of `T` starting `off` bytes into `mem`.
    fn at<T>(&self, off: usize, slot: usize) -> *mut T {
        self.mem
            .ptr()
            .wrapping_add(off)
            .cast::<T>()
            .wrapping_add(slot)
    }

    fn hdr(&self, slot: usize) -> *mut libc::msghdr {
        self.at(self.hdr_off, slot)
    }

    fn iov(&self, slot: usize) -> *mut libc::iovec {
        self.at(self.iov_off, slot)
    }

    fn name(&self, slot: usize) -> *mut libc::sockaddr_in {
        self.at(self.name_off, slot)
    }

    fn ctl(&self, slot: usize) -> *mut u8 {
        self.mem
            .ptr()
            .wrapping_add(self.ctl_off + slot * RX_CONTROL_LEN)
    }

    fn buf(&self, slot: usize) -> *mut u8 {
        self.mem
            .ptr()
            .wrapping_add(self.buf_off + slot * self.stride)
    }

    /// Re-initialises `slot`'s msghdr/iovec for a new request; returns the msghdr.
    fn reset(&mut self, slot: usize) -> *mut libc::msghdr {
        let (hdr, iov, name, buf) = (
            self.hdr(slot),
            self.iov(slot),
            self.name(slot),
            self.buf(slot),
        );
        // SAFETY: slot < count, so all pointers are in bounds of `mem` and suitably
        // aligned (offsets are multiples of 64, element sizes of 8); the slot is not
        // in flight, so the kernel is not using it.
        unsafe {
            iov.write(libc::iovec {
                iov_base: buf.cast(),
                iov_len: self.buf_len,
            });
            let mut h: libc::msghdr = std::mem::zeroed();
            h.msg_name = name.cast();
            h.msg_namelen = SOCKADDR_IN_LEN as libc::socklen_t;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            if self.gro {
                h.msg_control = self.ctl(slot).cast();
                h.msg_controllen = RX_CONTROL_LEN as _;
            }
            hdr.write(h);
        }
        hdr
    }

    /// The completed slot's flags, source, payload and control messages.
    ///
    /// # Safety
    /// `slot < count`, its request has completed (not in flight), and `len` is the
    /// completion's non-negative result.
    unsafe fn completed(&self, slot: usize, len: usize) -> (i32, SocketAddrV4, &[u8], &[u8]) {
        // SAFETY: per the contract the kernel is done with this slot; the pointers are
        // in bounds and aligned (see `reset`), the control area is RX_CONTROL_LEN
        // bytes when GRO is on and absent (length 0) otherwise.
        unsafe {
            let h = &*self.hdr(slot);
            let flags = h.msg_flags;
            let src = sockaddr_from_in(&*self.name(slot));
            let buf = std::slice::from_raw_parts(self.buf(slot), len.min(self.buf_len));
            #[allow(clippy::unnecessary_cast)] // socklen_t on musl, size_t on glibc
            let clen = if self.gro {
                (h.msg_controllen as usize).min(RX_CONTROL_LEN)
            } else {
                0
            };
            let ctrl = std::slice::from_raw_parts(self.ctl(slot).cast_const(), clen);
            (flags, src, buf, ctrl)
        }
    }
}

// SAFETY: every raw pointer held (directly or inside the kernel-shared mappings) points
// into memory owned by this value; io_uring rings may be used from any thread.
unsafe impl Send for UringRx {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::socket::tests::{
        check_backend, check_gso_downgrade, check_offload, lo_config, measure,
    };

    fn mk_tx(s: Socket, c: &SocketConfig) -> Result<Box<dyn TxBackend>, IoError> {
        Ok(Box::new(UringTx::new(s, c)?))
    }
    fn mk_rx(s: Socket, c: &SocketConfig) -> Result<Box<dyn RxBackend>, IoError> {
        let rx = UringRx::new(s, c)?;
        assert_eq!(rx.mode(), UringRxMode::Multishot);
        Ok(Box::new(rx))
    }
    fn mk_rx_slots(s: Socket, c: &SocketConfig) -> Result<Box<dyn RxBackend>, IoError> {
        Ok(Box::new(UringRx::with_mode(s, c, UringRxMode::Slots)?))
    }

    #[test]
    fn caps_on_this_host() {
        let c = caps();
        assert!(c.error.is_none(), "{c:?}");
        assert!(c.buf_ring && c.recvmsg_multishot && c.ext_arg, "{c:?}");
    }

    #[test]
    fn multishot_roundtrip() {
        check_backend(mk_tx, mk_rx, 11, 41_011);
    }

    #[test]
    fn slots_roundtrip() {
        check_backend(mk_tx, mk_rx_slots, 12, 41_012);
    }

    #[test]
    fn small_buffer_ring_survives_exhaustion() {
        // 8 buffers, many datagrams queued before the first recv: the multishot
        // request runs out of buffers (ENOBUFS), is re-armed, and nothing is lost.
        let mut cfg = lo_config(13, 41_013);
        cfg.batch = 1;
        cfg.max_datagram = 2048;
        let (rs, _) = crate::io::socket::open_rx_socket(&cfg).expect("rx sock");
        let mut rx = UringRx::new(rs, &cfg).expect("rx");
        let (ts, _) = crate::io::socket::open_tx_socket(&cfg).expect("tx sock");
        let mut tx = UringTx::new(ts, &cfg).expect("tx");
        // Arm first so the multishot request is live while datagrams arrive.
        assert_eq!(rx.recv_batch(16, None, &mut |_, _| {}).expect("recv"), 0);
        let n = 2000u32;
        for i in 0..n {
            tx.send_batch(&[&i.to_le_bytes()]).expect("send");
        }
        // Everything is queued already: every call must deliver (a call that waits
        // out its timeout means the request was not re-armed before sleeping).
        let mut next = 0u32;
        while next < n {
            let t0 = Instant::now();
            let k = rx
                .recv_batch(16, Some(Duration::from_secs(2)), &mut |d, _| {
                    let v = u32::from_le_bytes(d.try_into().expect("4 bytes"));
                    assert_eq!(v, next);
                    next += 1;
                })
                .expect("recv");
            assert!(k > 0, "stalled at {next} after {:?}", t0.elapsed());
        }
        assert!(rx.buffer_exhaustions() > 0, "expected ENOBUFS re-arms");
        assert_eq!(rx.malformed(), 0);
    }

    #[test]
    fn uring_gso_gro() {
        check_offload(mk_tx, mk_rx, true, true, 15, 41_015);
        check_offload(mk_tx, mk_rx, true, false, 16, 41_016);
        check_offload(mk_tx, mk_rx, false, true, 17, 41_017);
    }

    #[test]
    fn uring_slots_gro() {
        check_offload(mk_tx, mk_rx_slots, true, true, 18, 41_018);
    }

    #[test]
    fn uring_gso_refused_at_run_time() {
        check_gso_downgrade(mk_tx, mk_rx, 19, 41_019);
    }

    #[test]
    #[ignore = "throughput measurement; run with --ignored --nocapture"]
    fn throughput() {
        measure("io_uring", mk_tx, mk_rx, 14, 41_014);
    }
}
