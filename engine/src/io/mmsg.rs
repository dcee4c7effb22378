//! `sendmmsg(2)` / `recvmmsg(2)` backend: the fallback where io_uring is blocked.
//!
//! All vectors (mmsghdr, iovec, sockaddr_in, receive buffers) are allocated once at
//! `batch` entries. Non-blocking calls use `MSG_DONTWAIT`. A receive that may wait
//! blocks in `recvmmsg` itself (`MSG_WAITFORONE`, the wait bounded by `SO_RCVTIMEO`),
//! so a wake-up is one syscall that returns with the datagram, as a blocking
//! `recv` is; only waits shorter than [`MIN_BLOCKING_WAIT`] use `ppoll`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::offload::{self, next_group, Group, GsoCmsg, Offload, GRO_BUFFER, RX_CONTROL_LEN};
use super::socket::SocketConfig;
use super::{BackendKind, IoError, RxBackend, TxBackend};

/// How long a transmit batch may make no progress before `send_batch` fails.
const TX_STALL_LIMIT: Duration = Duration::from_secs(5);

/// Waits at least this long block in `recvmmsg` under `SO_RCVTIMEO`; shorter ones
/// (a protocol timer is near) use `ppoll`.
const MIN_BLOCKING_WAIT: Duration = Duration::from_micros(100);
/// `SO_RCVTIMEO` takes one of these values (the longest not above the wait), so a
/// run of waits of about the same length sets it once.
const TIMEOUT_STEPS: [Duration; 10] = [
    Duration::from_millis(250),
    Duration::from_millis(100),
    Duration::from_millis(30),
    Duration::from_millis(10),
    Duration::from_millis(5),
    Duration::from_millis(2),
    Duration::from_millis(1),
    Duration::from_micros(500),
    Duration::from_micros(200),
    MIN_BLOCKING_WAIT,
];

/// Memory for GRO receive buffers (each [`GRO_BUFFER`] bytes): at most 128 of them.
const GRO_RX_BUDGET: usize = 8 << 20;

/// `sendmmsg` transmit backend on a connected socket. With GSO on, each run of
/// equal-size datagrams goes as one message whose iovecs point at the datagrams and
/// whose `UDP_SEGMENT` cmsg gives the size: the kernel cuts it into datagrams.
pub struct MmsgTx {
    sock: Socket,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<GsoCmsg>,
    groups: Vec<Group>,
    gso: bool,
    max_segment: usize,
    offload: Offload,
    /// The destination of the current batch when it is not the connected group.
    dest: Option<libc::sockaddr_in>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are only meaningful during one
// `send_batch` call (they are rewritten each time) and point to memory owned by this
// value or borrowed for that call; nothing is tied to a thread.
unsafe impl Send for MmsgTx {}

impl MmsgTx {
    /// Wraps a transmit socket (from [`super::socket::open_tx_socket`]); GSO is used
    /// when `cfg.gso` says the kernel accepted it (see [`super::open_tx`]).
    pub fn new(sock: Socket, cfg: &SocketConfig) -> Result<Self, IoError> {
        let batch = cfg.batch.clamp(1, libc::UIO_MAXIOV as usize);
        Ok(MmsgTx {
            sock,
            // SAFETY: mmsghdr is plain old data; all-zero is valid (null pointers).
            hdrs: (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: (0..batch)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            cmsgs: vec![GsoCmsg::new(); batch],
            groups: Vec::with_capacity(batch),
            gso: cfg.gso,
            max_segment: cfg.max_datagram,
            offload: cfg.offload.clone(),
            dest: None,
        })
    }

    /// Cuts `window` into the messages of one `sendmmsg` (GSO groups or single
    /// datagrams) and points the mmsghdrs at them. Returns the message count.
    fn prepare(&mut self, window: &[&[u8]]) -> usize {
        for (iov, d) in self.iovs.iter_mut().zip(window) {
            *iov = libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            };
        }
        self.groups.clear();
        let mut at = 0;
        while at < window.len() {
            let g = if self.gso {
                next_group(&window[at..], self.max_segment, window.len() - at)
            } else {
                let len = window[at].len();
                Group {
                    count: 1,
                    segment: len,
                    bytes: len,
                }
            };
            self.groups.push(g); // at most `batch` groups: within capacity
            at += g.count;
        }
        for (c, g) in self.cmsgs.iter_mut().zip(&self.groups) {
            c.set(g.segment);
        }
        let iovp = self.iovs.as_mut_ptr();
        let cmsgp = self.cmsgs.as_mut_ptr();
        let (name, namelen) = match self.dest.as_mut() {
            Some(d) => (
                (d as *mut libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            None => (std::ptr::null_mut(), 0),
        };
        let mut at = 0;
        for (k, (h, g)) in self.hdrs.iter_mut().zip(&self.groups).enumerate() {
            h.msg_hdr.msg_name = name;
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = iovp.wrapping_add(at);
            h.msg_hdr.msg_iovlen = g.count as _;
            if g.is_gso() {
                h.msg_hdr.msg_control = cmsgp.wrapping_add(k).cast();
                h.msg_hdr.msg_controllen = GsoCmsg::LEN as _;
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            h.msg_len = 0;
            at += g.count;
        }
        self.groups.len()
    }
}

impl TxBackend for MmsgTx {
    fn send_batch_to(
        &mut self,
        datagrams: &[&[u8]],
        to: Option<std::net::SocketAddrV4>,
    ) -> Result<(), IoError> {
        self.dest = to.map(super::sockaddr_in);
        let batch = self.hdrs.len();
        let mut start = 0;
        let mut stalled_since: Option<Instant> = None;
        while start < datagrams.len() {
            let n = (datagrams.len() - start).min(batch);
            if datagrams.len() - start == 1 {
                // One datagram (the low-rate case): plain `send`, no message headers
                // for the kernel to copy and check.
                let d = datagrams[start];
                let (name, namelen) = match self.dest.as_ref() {
                    Some(a) => (
                        (a as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    ),
                    None => (std::ptr::null(), 0),
                };
                // SAFETY: `d` is a live slice of `d.len()` bytes for the whole call; the
                // descriptor belongs to `self.sock`; `name` is null or points at
                // `self.dest`, alive for the call.
                let rc = unsafe {
                    libc::sendto(
                        self.sock.as_raw_fd(),
                        d.as_ptr().cast(),
                        d.len(),
                        libc::MSG_DONTWAIT,
                        name,
                        namelen,
                    )
                };
                if rc >= 0 {
                    if rc as usize != d.len() {
                        return Err(IoError::sys(
                            "send",
                            io::Error::other(format!("short send: {rc} of {} bytes", d.len())),
                        ));
                    }
                    start += 1;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(errno @ (libc::EAGAIN | libc::ENOBUFS)) => {
                        let since = *stalled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > TX_STALL_LIMIT {
                            return Err(IoError::sys("send (stalled)", e));
                        }
                        super::uring::wait_writable(&self.sock, errno);
                    }
                    _ => return Err(IoError::sys("send", e)),
                }
                continue;
            }
            let m = self.prepare(&datagrams[start..start + n]);
            // SAFETY: the first `m` mmsghdrs are initialised, each pointing at its
            // iovecs in `self.iovs` (which point into `datagrams`, borrowed for this
            // call), for GSO groups at its cmsg in `self.cmsgs`, and at `self.dest`
            // when the batch has a destination; sendmmsg only
            // reads them (and writes `msg_len`).
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    m as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            let errno = if rc > 0 {
                let k = rc as usize;
                for (h, g) in self.hdrs[..k].iter().zip(&self.groups) {
                    if h.msg_len as usize != g.bytes {
                        return Err(IoError::sys(
                            "sendmmsg",
                            io::Error::other(format!(
                                "short send: {} of {} bytes",
                                h.msg_len, g.bytes
                            )),
                        ));
                    }
                    if g.is_gso() {
                        self.offload.gso_sent(g.count);
                    }
                    start += g.count;
                }
                stalled_since = None;
                continue;
            } else if rc == 0 {
                libc::EAGAIN
            } else {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
            };
            match errno {
                // The first message failed: if it was a GSO group the kernel or the
                // NIC cannot segment here. Resend it (and everything after) without
                // GSO, and keep GSO off for this socket.
                e if self.groups[0].is_gso() && offload::is_gso_refusal(e) => {
                    tracing::warn!(
                        errno = e,
                        "sendmmsg: UDP GSO refused; switched off for this socket"
                    );
                    self.gso = false;
                    self.offload.gso_downgraded(e);
                }
                libc::EINTR => {}
                libc::EAGAIN | libc::ENOBUFS => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > TX_STALL_LIMIT {
                        return Err(IoError::sys(
                            "sendmmsg (stalled)",
                            io::Error::from_raw_os_error(errno),
                        ));
                    }
                    super::uring::wait_writable(&self.sock, errno);
                }
                _ => {
                    return Err(IoError::sys(
                        "sendmmsg",
                        io::Error::from_raw_os_error(errno),
                    ))
                }
            }
        }
        Ok(())
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Mmsg
    }
}

/// Where delivery stands in the results of the last `recvmmsg`: a coalesced (GRO)
/// buffer may hold more datagrams than one call may deliver.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    next: usize,
    count: usize,
    offset: usize,
}

/// `recvmmsg` receive backend. With GRO on, buffers are [`GRO_BUFFER`] bytes and a
/// coalesced one is split into its datagrams (resumed by the next call when it holds
/// more than the caller asked for).
pub struct MmsgRx {
    sock: Socket,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    /// Control message space per buffer (8-byte aligned, as cmsghdr needs).
    ctrls: Vec<[u64; RX_CONTROL_LEN / 8]>,
    /// `count × buf_len` bytes, allocated once.
    bufs: Vec<u8>,
    buf_len: usize,
    max_datagram: usize,
    gro: bool,
    cursor: Cursor,
    truncated: u64,
    offload: Offload,
    /// The socket's `SO_RCVTIMEO` as last set.
    timeout: Option<Duration>,
    /// Buffers offered to the next receive: 1 while receives bring one datagram (the
    /// kernel then does not look for a second before returning), doubled while they
    /// fill what was offered.
    wait_batch: usize,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` point into `names`/`bufs`/`ctrls`,
// owned by this value (heap allocations that do not move with it), and are rewritten
// before every call; nothing is tied to a thread.
unsafe impl Send for MmsgRx {}

impl MmsgRx {
    /// Wraps a receive socket (from [`super::socket::open_rx_socket`]); `cfg.gro`
    /// says whether GRO was turned on for it (see [`super::open_rx`]).
    pub fn new(sock: Socket, cfg: &SocketConfig) -> Result<Self, IoError> {
        let mut batch = cfg.batch.clamp(1, libc::UIO_MAXIOV as usize);
        let max_datagram = cfg.max_datagram.max(1);
        let buf_len = if cfg.gro {
            batch = batch.clamp(1, GRO_RX_BUDGET / GRO_BUFFER);
            GRO_BUFFER.max(max_datagram)
        } else {
            max_datagram
        };
        let bytes = batch.checked_mul(buf_len).ok_or_else(|| {
            IoError::sys(
                "recvmmsg buffers",
                io::Error::other("batch × max_datagram overflows"),
            )
        })?;
        // Blocking, so a waiting receive can block in `recvmmsg`; every other call
        // passes MSG_DONTWAIT.
        sock.set_nonblocking(false)
            .map_err(|e| IoError::sys("fcntl(O_NONBLOCK)", e))?;
        Ok(MmsgRx {
            sock,
            // SAFETY: mmsghdr is plain old data; all-zero is valid (null pointers).
            hdrs: (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: (0..batch)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: sockaddr_in is plain old data; all-zero is valid.
            names: (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect(),
            ctrls: vec![[0; RX_CONTROL_LEN / 8]; batch],
            bufs: vec![0; bytes],
            buf_len,
            max_datagram,
            gro: cfg.gro,
            cursor: Cursor::default(),
            truncated: 0,
            timeout: None,
            wait_batch: 1,
            offload: cfg.offload.clone(),
        })
    }

    /// One non-blocking `recvmmsg` of up to `n` buffers, then delivery of up to
    /// `budget` datagrams from them; `Ok(0)` when none is ready.
    fn try_recv(
        &mut self,
        n: usize,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        self.recv_adaptive(n, budget, libc::MSG_DONTWAIT, f)
    }

    /// `recv_into` offering as many buffers as the last receives filled: one while
    /// each brings one datagram (so the kernel does not look for a second, which a
    /// spinning or waking poller pays on every message), doubling while they fill up.
    fn recv_adaptive(
        &mut self,
        n: usize,
        budget: usize,
        flags: libc::c_int,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let offered = self.wait_batch.clamp(1, n);
        let received = self.recv_into(offered, budget, flags, f)?;
        let came = self.cursor.count;
        self.wait_batch = if came >= offered {
            (offered * 2).min(n)
        } else {
            came.max(1)
        };
        Ok(received)
    }

    /// One `recvmmsg` of up to `n` buffers with `flags`, then delivery of up to
    /// `budget` datagrams from them; `Ok(0)` when none came (`EAGAIN`: nothing
    /// queued, or a blocking call's `SO_RCVTIMEO` ran out).
    fn recv_into(
        &mut self,
        n: usize,
        budget: usize,
        flags: libc::c_int,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let bl = self.buf_len;
        let bufp = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs[..n].iter_mut().enumerate() {
            *iov = libc::iovec {
                iov_base: bufp.wrapping_add(i * bl).cast(),
                iov_len: bl,
            };
        }
        let iovp = self.iovs.as_mut_ptr();
        let namep = self.names.as_mut_ptr();
        let ctrlp = self.ctrls.as_mut_ptr();
        let gro = self.gro;
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = namep.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            if gro {
                h.msg_hdr.msg_control = ctrlp.wrapping_add(i).cast();
                h.msg_hdr.msg_controllen = RX_CONTROL_LEN as _;
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` mmsghdrs point at `n` distinct iovecs/sockaddr_ins/
        // control areas in `self.iovs`/`self.names`/`self.ctrls`; each iovec covers its
        // own `buf_len` bytes of `self.bufs` (n ≤ count, so in bounds). All live
        // across the synchronous call.
        let rc = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.cursor = Cursor::default();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(IoError::sys("recvmmsg", e)),
            };
        }
        self.cursor = Cursor {
            next: 0,
            count: rc as usize,
            offset: 0,
        };
        Ok(self.drain(budget, f))
    }

    /// A receive that blocks up to `timeout` for the first datagram and takes what
    /// else is queued with it (`MSG_WAITFORONE`).
    fn recv_blocking(
        &mut self,
        n: usize,
        timeout: Duration,
        budget: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        if self.timeout != Some(timeout) {
            self.sock
                .set_read_timeout(Some(timeout))
                .map_err(|e| IoError::sys("setsockopt(SO_RCVTIMEO)", e))?;
            self.timeout = Some(timeout);
        }
        self.recv_adaptive(n, budget, libc::MSG_WAITFORONE, f)
    }

    /// Delivers up to `budget` datagrams from the buffers of the last `recvmmsg` not
    /// yet (fully) delivered.
    fn drain(&mut self, budget: usize, f: &mut dyn FnMut(&[u8], SocketAddrV4)) -> usize {
        let (bl, md) = (self.buf_len, self.max_datagram);
        let mut delivered = 0;
        while self.cursor.next < self.cursor.count && delivered < budget {
            let i = self.cursor.next;
            let h = &self.hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated = self.truncated.saturating_add(1);
                self.cursor.next += 1;
                self.cursor.offset = 0;
                continue;
            }
            let len = (h.msg_len as usize).min(bl);
            let segment = if self.gro {
                #[allow(clippy::unnecessary_cast)] // socklen_t on musl, size_t on glibc
                let clen = (h.msg_hdr.msg_controllen as usize).min(RX_CONTROL_LEN);
                // SAFETY: `ctrls[i]` is RX_CONTROL_LEN initialised bytes owned by
                // this value; the kernel is done writing them (the call returned).
                let ctrl =
                    unsafe { std::slice::from_raw_parts(self.ctrls[i].as_ptr().cast(), clen) };
                offload::gro_segment(ctrl)
            } else {
                None
            };
            let src = sockaddr_from_in(&self.names[i]);
            let sp = offload::split(
                &self.bufs[i * bl..i * bl + len],
                segment,
                md,
                self.cursor.offset,
                budget - delivered,
                &mut |d| f(d, src),
            );
            self.truncated = self.truncated.saturating_add(sp.truncated);
            if sp.coalesced > 0 {
                self.offload.gro_received(sp.coalesced);
            }
            delivered += sp.delivered;
            match sp.resume {
                Some(at) => self.cursor.offset = at,
                None => {
                    self.cursor.next += 1;
                    self.cursor.offset = 0;
                }
            }
        }
        delivered
    }
}

impl RxBackend for MmsgRx {
    fn recv_batch(
        &mut self,
        max: usize,
        wait: Option<Duration>,
        on_datagram: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let n = max.min(self.hdrs.len());
        if n == 0 {
            return Ok(0);
        }
        // What the last call left of a coalesced buffer goes first.
        let got = self.drain(max, on_datagram);
        if got > 0 {
            return Ok(got);
        }
        let Some(wait) = wait else {
            return self.try_recv(n, max, on_datagram);
        };
        // No non-blocking look first: the blocking receive returns at once when a
        // datagram is queued, so a wake-up costs one syscall.
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = match TIMEOUT_STEPS.iter().find(|&&t| t <= left) {
                Some(&t) => self.recv_blocking(n, t, max, on_datagram)?,
                None if left.is_zero() => 0,
                None => {
                    wait_readable(&self.sock, left)?;
                    self.try_recv(n, max, on_datagram)?
                }
            };
            if got > 0 {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Ok(0);
            }
        }
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Mmsg
    }

    fn truncated(&self) -> u64 {
        self.truncated
    }
}

/// `ppoll(POLLIN)` for up to `d` (nanosecond resolution).
fn wait_readable(sock: &Socket, d: Duration) -> Result<(), IoError> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(IoError::sys("ppoll", e));
        }
    }
    Ok(())
}

fn sockaddr_from_in(sin: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::socket::tests::{check_backend, check_gso_downgrade, check_offload, measure};

    fn mk_tx(s: Socket, c: &SocketConfig) -> Result<Box<dyn TxBackend>, IoError> {
        Ok(Box::new(MmsgTx::new(s, c)?))
    }
    fn mk_rx(s: Socket, c: &SocketConfig) -> Result<Box<dyn RxBackend>, IoError> {
        Ok(Box::new(MmsgRx::new(s, c)?))
    }

    #[test]
    fn mmsg_roundtrip() {
        check_backend(mk_tx, mk_rx, 21, 41_021);
    }

    #[test]
    fn mmsg_gso_gro() {
        check_offload(mk_tx, mk_rx, true, true, 25, 41_025);
        check_offload(mk_tx, mk_rx, true, false, 26, 41_026);
        check_offload(mk_tx, mk_rx, false, true, 27, 41_027);
    }

    #[test]
    fn mmsg_gso_refused_at_run_time() {
        check_gso_downgrade(mk_tx, mk_rx, 28, 41_028);
    }

    #[test]
    #[ignore = "throughput measurement; run with --ignored --nocapture"]
    fn throughput() {
        measure("mmsg", mk_tx, mk_rx, 24, 41_024);
    }
}
