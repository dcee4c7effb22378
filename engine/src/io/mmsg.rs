//! `sendmmsg(2)` / `recvmmsg(2)` backend: the fallback where io_uring is blocked.
//!
//! All vectors (mmsghdr, iovec, sockaddr_in, receive buffers) are allocated once at
//! `batch` entries. Calls use `MSG_DONTWAIT`; waiting is done with `ppoll`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::socket::SocketConfig;
use super::{BackendKind, IoError, RxBackend, TxBackend};

/// How long a transmit batch may make no progress before `send_batch` fails.
const TX_STALL_LIMIT: Duration = Duration::from_secs(5);

/// `sendmmsg` transmit backend on a connected socket.
pub struct MmsgTx {
    sock: Socket,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are only meaningful during one
// `send_batch` call (they are rewritten each time) and point to memory owned by this
// value or borrowed for that call; nothing is tied to a thread.
unsafe impl Send for MmsgTx {}

impl MmsgTx {
    /// Wraps a transmit socket (from [`super::socket::open_tx_socket`]).
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
        })
    }
}

impl TxBackend for MmsgTx {
    fn send_batch(&mut self, datagrams: &[&[u8]]) -> Result<(), IoError> {
        let batch = self.hdrs.len();
        let mut start = 0;
        let mut stalled_since: Option<Instant> = None;
        while start < datagrams.len() {
            let n = (datagrams.len() - start).min(batch);
            for (iov, d) in self.iovs.iter_mut().zip(&datagrams[start..start + n]) {
                *iov = libc::iovec {
                    iov_base: d.as_ptr().cast_mut().cast(),
                    iov_len: d.len(),
                };
            }
            let iovp = self.iovs.as_mut_ptr();
            for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
                h.msg_hdr.msg_iov = iovp.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                h.msg_len = 0;
            }
            // SAFETY: the first `n` mmsghdrs are initialised, each pointing at one
            // iovec in `self.iovs`, which point into `datagrams` (borrowed for this
            // call); sendmmsg only reads them (and writes `msg_len`).
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            let errno = if rc > 0 {
                let k = rc as usize;
                for (h, d) in self.hdrs[..k].iter().zip(&datagrams[start..start + k]) {
                    if h.msg_len as usize != d.len() {
                        return Err(IoError::sys(
                            "sendmmsg",
                            io::Error::other(format!(
                                "short send: {} of {} bytes",
                                h.msg_len,
                                d.len()
                            )),
                        ));
                    }
                }
                start += k;
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

/// `recvmmsg` receive backend.
pub struct MmsgRx {
    sock: Socket,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    /// `batch × max_datagram` bytes, allocated once.
    bufs: Vec<u8>,
    max_datagram: usize,
    truncated: u64,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` point into `names`/`bufs`, owned by
// this value (heap allocations that do not move with it), and are rewritten before
// every call; nothing is tied to a thread.
unsafe impl Send for MmsgRx {}

impl MmsgRx {
    /// Wraps a receive socket (from [`super::socket::open_rx_socket`]).
    pub fn new(sock: Socket, cfg: &SocketConfig) -> Result<Self, IoError> {
        let batch = cfg.batch.clamp(1, libc::UIO_MAXIOV as usize);
        let max_datagram = cfg.max_datagram.max(1);
        let bytes = batch.checked_mul(max_datagram).ok_or_else(|| {
            IoError::sys(
                "recvmmsg buffers",
                io::Error::other("batch × max_datagram overflows"),
            )
        })?;
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
            bufs: vec![0; bytes],
            max_datagram,
            truncated: 0,
        })
    }

    /// One non-blocking `recvmmsg` of up to `n` datagrams; `Ok(0)` when none is ready.
    fn try_recv(
        &mut self,
        n: usize,
        f: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError> {
        let md = self.max_datagram;
        let bufp = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs[..n].iter_mut().enumerate() {
            *iov = libc::iovec {
                iov_base: bufp.wrapping_add(i * md).cast(),
                iov_len: md,
            };
        }
        let iovp = self.iovs.as_mut_ptr();
        let namep = self.names.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = namep.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` mmsghdrs point at `n` distinct iovecs/sockaddr_ins in
        // `self.iovs`/`self.names`; each iovec covers its own `max_datagram` bytes of
        // `self.bufs` (n ≤ batch, so in bounds). All live across the synchronous call.
        let rc = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(IoError::sys("recvmmsg", e)),
            };
        }
        let k = rc as usize;
        let mut delivered = 0;
        for i in 0..k {
            let h = &self.hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
                continue;
            }
            let len = (h.msg_len as usize).min(md);
            let src = sockaddr_from_in(&self.names[i]);
            f(&self.bufs[i * md..i * md + len], src);
            delivered += 1;
        }
        Ok(delivered)
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
        let deadline = wait.map(|d| Instant::now() + d);
        loop {
            let got = self.try_recv(n, on_datagram)?;
            if got > 0 {
                return Ok(got);
            }
            let Some(dl) = deadline else { return Ok(0) };
            let now = Instant::now();
            if now >= dl {
                return Ok(0);
            }
            wait_readable(&self.sock, dl - now)?;
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
    use crate::io::socket::tests::{check_backend, measure};

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
    #[ignore = "throughput measurement; run with --ignored --nocapture"]
    fn throughput() {
        measure("mmsg", mk_tx, mk_rx, 24, 41_024);
    }
}
