//! Raw kernel UDP multicast: the baseline with no protocol on top.
//!
//! * `one-dgram-per-msg` — one datagram per message, `send` / blocking `recv`
//!   (the "raw UDP one-datagram-per-message" baseline of the comparisons);
//! * `busy-poll` — the same datagrams, received by a non-blocking `recv` in a spin
//!   loop (plus `SO_BUSY_POLL` where the kernel lets it be set): the kernel's
//!   lowest-latency ceiling;
//! * `gso1472` — one message per datagram of at most 1472 bytes (Ethernet MTU),
//!   sent up to 64 segments per `sendmsg` with `UDP_SEGMENT` (GSO), received with
//!   `UDP_GRO` on and split by the segment size: the kernel ceiling at MTU size;
//! * `mmsg` — one datagram per message, batched 64 at a time with `sendmmsg` /
//!   `recvmmsg`;
//! * `packed` — as many messages as fit into one 65,507-byte datagram, each
//!   prefixed by its u32 length: the kernel ceiling for moving bytes through a
//!   multicast socket on loopback.
//!
//! Raw UDP has no repair and no flow control: when the receiver falls behind
//! the kernel drops datagrams. Its runs are "lossy-allowed": loss is counted
//! and reported, not marked FAILED.

use super::{Counters, Info, Params, Publisher, Subscriber, Variant};
use crate::netns;
use crate::spec::RunSpec;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::ErrorKind;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Messages per sendmmsg / recvmmsg call.
const BATCH: usize = 64;
/// Socket buffer asked for (SO_RCVBUFFORCE / SO_SNDBUFFORCE when root).
const SOCKET_BUFFER: usize = 64 << 20;
/// Length prefix of a message inside a packed datagram.
const FRAME_PREFIX: usize = 4;
/// Largest datagram of the GSO variant: a 1500-byte Ethernet MTU minus IP and UDP headers.
pub const MTU_DATAGRAM: usize = 1472;
/// Segments per GSO send (the kernel's limit is 64).
const GSO_SEGMENTS: usize = 64;
/// `setsockopt(SOL_UDP, ...)`: GSO segment size, GRO on (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// `setsockopt(SOL_SOCKET, SO_BUSY_POLL, µs)` (asm-generic/socket.h).
const SO_BUSY_POLL: libc::c_int = 46;
/// Microseconds of socket busy polling asked for by the busy-poll variant.
const BUSY_POLL_US: libc::c_int = 50;

/// How messages map onto datagrams and system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    Single,
    Mmsg,
    Packed,
    /// One datagram per message; the receiver spins on a non-blocking socket.
    BusyPoll,
    /// One message per ≤ 1472-byte datagram, GSO send, GRO receive.
    Gso,
}

pub fn variants() -> Vec<Variant> {
    let mk = |variant: &str, batching, primary| Variant {
        system: "udp".into(),
        variant: variant.into(),
        transport: "udp-multicast".into(),
        lossless_expected: false,
        primary,
        params: Params::Udp { batching },
    };
    vec![
        mk("one-dgram-per-msg", Batching::Single, true),
        mk("busy-poll", Batching::BusyPoll, true),
        mk("mmsg", Batching::Mmsg, false),
        mk("gso1472", Batching::Gso, false),
        mk("packed", Batching::Packed, false),
    ]
}

/// Messages of `size` bytes that fit into one packed datagram.
pub fn per_datagram(size: usize) -> usize {
    MAX_DATAGRAM / (size + FRAME_PREFIX)
}

/// Ask for a big socket buffer: the FORCE variant ignores rmem_max/wmem_max
/// (needs CAP_NET_ADMIN); fall back to the ordinary option. Returns the size granted.
fn big_buffer(sock: &Socket, recv: bool) -> usize {
    let (force, plain) = if recv {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    let val = SOCKET_BUFFER as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: the fd is open; we pass a pointer to a c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
    }
    if recv {
        sock.recv_buffer_size().unwrap_or(0)
    } else {
        sock.send_buffer_size().unwrap_or(0)
    }
}

fn check_size(size: usize, batching: Batching) -> Result<()> {
    if size > MAX_DATAGRAM || (batching == Batching::Packed && size + FRAME_PREFIX > MAX_DATAGRAM) {
        bail!("raw UDP cannot carry {size}-byte messages in one datagram");
    }
    if batching == Batching::Gso && size > MTU_DATAGRAM {
        bail!("gso1472 carries one message per datagram of at most {MTU_DATAGRAM} bytes; {size} is more");
    }
    Ok(())
}

/// Segments per GSO send for `size`-byte messages: at most 64, and together no
/// more than one UDP datagram can hold.
pub fn gso_segments(size: usize) -> usize {
    GSO_SEGMENTS.min(MAX_DATAGRAM / size.max(1)).max(1)
}

/// `setsockopt(fd, level, opt, &int)`; the OS error if refused.
fn set_int(
    sock: &Socket,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: the fd is open; we pass a pointer to a c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sending socket: bound to 127.0.0.1, multicast out of lo with TTL 0, connected to the group.
fn sender_socket(group: SocketAddrV4, iface: std::net::Ipv4Addr) -> Result<(Socket, usize)> {
    netns::check_multicast(group, iface)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(iface, 0)))?;
    sock.set_multicast_if_v4(&iface)?;
    sock.set_multicast_ttl_v4(0)?;
    sock.set_multicast_loop_v4(true)?;
    let granted = big_buffer(&sock, false);
    sock.connect(&SockAddr::from(group))?;
    Ok((sock, granted))
}

/// Receiving socket: bound to the group's port, member of the group on lo.
fn receiver_socket(group: SocketAddrV4, iface: std::net::Ipv4Addr) -> Result<(Socket, usize)> {
    netns::check_multicast(group, iface)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    let granted = big_buffer(&sock, true);
    sock.bind(&SockAddr::from(group))?;
    sock.join_multicast_v4(group.ip(), &iface)?;
    Ok((sock, granted))
}

fn transient(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
        || e.raw_os_error() == Some(libc::ENOBUFS)
}

pub struct UdpPublisher {
    sock: Socket,
    batching: Batching,
    size: usize,
    /// Batch storage: BATCH slots of `size` bytes (mmsg) or one datagram (packed).
    buf: Box<[u8]>,
    /// Bytes used in `buf` (packed) or slots used (mmsg).
    used: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    datagrams: u64,
    syscalls: u64,
    retries: u64,
    sndbuf: usize,
}

impl UdpPublisher {
    pub fn open(spec: &RunSpec, batching: Batching) -> Result<Self> {
        check_size(spec.size, batching)?;
        let (sock, sndbuf) = sender_socket(spec.endpoint.group, spec.endpoint.iface)?;
        let buf_len = match batching {
            Batching::Single | Batching::BusyPoll => 0,
            Batching::Mmsg => BATCH * spec.size,
            Batching::Gso => gso_segments(spec.size) * spec.size,
            Batching::Packed => MAX_DATAGRAM,
        };
        let mut p = UdpPublisher {
            sock,
            batching,
            size: spec.size,
            buf: vec![0u8; buf_len].into_boxed_slice(),
            used: 0,
            iovecs: Vec::new(),
            headers: Vec::new(),
            datagrams: 0,
            syscalls: 0,
            retries: 0,
            sndbuf,
        };
        if batching == Batching::Mmsg {
            let base = p.buf.as_mut_ptr();
            p.iovecs = (0..BATCH)
                .map(|i| libc::iovec {
                    // SAFETY: i * size is within `buf` (BATCH * size bytes).
                    iov_base: unsafe { base.add(i * spec.size) }.cast(),
                    iov_len: spec.size,
                })
                .collect();
            // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value
            // (no name, no control data).
            p.headers = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (h, iov) in p.headers.iter_mut().zip(p.iovecs.iter_mut()) {
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
        }
        Ok(p)
    }

    fn send_datagram(&mut self, bytes_from_buf: Option<usize>, msg: &[u8]) -> Result<()> {
        let data = match bytes_from_buf {
            Some(n) => &self.buf[..n],
            None => msg,
        };
        loop {
            self.syscalls += 1;
            match self.sock.send(data) {
                Ok(_) => {
                    self.datagrams += 1;
                    return Ok(());
                }
                Err(e) if transient(&e) => {
                    self.retries += 1;
                    std::hint::spin_loop();
                }
                Err(e) => return Err(e).context("send"),
            }
        }
    }

    /// Send the messages in `buf[..used × size]` as one GSO super-datagram (the
    /// kernel cuts it into `used` datagrams of `size` bytes).
    fn flush_gso(&mut self) -> Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let len = self.used * self.size;
        let segments = self.used as u64;
        self.used = 0;
        if segments == 1 {
            return self.send_datagram(Some(len), &[]);
        }
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        // Control message: one u16, the segment size.
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
        let mut control = [0u64; 4]; // 32 bytes, aligned for cmsghdr
        debug_assert!(space <= std::mem::size_of_val(&control));
        // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, large enough for one cmsg with a
        // u16 (checked above); CMSG_FIRSTHDR / CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), self.size as u16);
        }
        loop {
            self.syscalls += 1;
            // SAFETY: msg points at iov (into `buf`) and `control`, all alive for
            // the call; the fd is an open, connected UDP socket.
            let rc = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                self.datagrams += segments;
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if transient(&e) {
                self.retries += 1;
                std::hint::spin_loop();
                continue;
            }
            return Err(e).context("sendmsg with UDP_SEGMENT (GSO) refused");
        }
    }

    fn flush_mmsg(&mut self) -> Result<()> {
        let mut done = 0;
        while done < self.used {
            self.syscalls += 1;
            // SAFETY: headers[done..used] point at iovecs into `buf`, which live as
            // long as `self`; the fd is an open, connected UDP socket.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.headers.as_mut_ptr().add(done),
                    (self.used - done) as libc::c_uint,
                    0,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if transient(&e) {
                    self.retries += 1;
                    continue;
                }
                return Err(e).context("sendmmsg");
            }
            done += rc as usize;
            self.datagrams += rc as u64;
        }
        self.used = 0;
        Ok(())
    }
}

impl Publisher for UdpPublisher {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self.batching {
            Batching::Single | Batching::BusyPoll => self.send_datagram(None, msg),
            Batching::Gso => {
                let at = self.used * self.size;
                self.buf[at..at + self.size].copy_from_slice(msg);
                self.used += 1;
                if self.used * self.size == self.buf.len() {
                    self.flush_gso()?;
                }
                Ok(())
            }
            Batching::Mmsg => {
                let at = self.used * self.size;
                self.buf[at..at + self.size].copy_from_slice(msg);
                self.used += 1;
                if self.used == BATCH {
                    self.flush_mmsg()?;
                }
                Ok(())
            }
            Batching::Packed => {
                if self.used + FRAME_PREFIX + msg.len() > MAX_DATAGRAM {
                    self.flush()?;
                }
                let at = self.used;
                self.buf[at..at + FRAME_PREFIX].copy_from_slice(&(msg.len() as u32).to_le_bytes());
                self.buf[at + FRAME_PREFIX..at + FRAME_PREFIX + msg.len()].copy_from_slice(msg);
                self.used += FRAME_PREFIX + msg.len();
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self.batching {
            Batching::Single | Batching::BusyPoll => Ok(()),
            Batching::Mmsg => self.flush_mmsg(),
            Batching::Gso => self.flush_gso(),
            Batching::Packed => {
                if self.used > 0 {
                    let n = self.used;
                    self.used = 0;
                    self.send_datagram(Some(n), &[])?;
                }
                Ok(())
            }
        }
    }

    fn counters(&self) -> Counters {
        Counters::from([
            ("datagrams_sent".into(), self.datagrams),
            ("send_syscalls".into(), self.syscalls),
            ("send_retries".into(), self.retries),
            ("sndbuf_bytes".into(), self.sndbuf as u64),
            (
                "messages_per_datagram".into(),
                match self.batching {
                    Batching::Packed => per_datagram(self.size) as u64,
                    _ => 1,
                },
            ),
            (
                "messages_per_send_call".into(),
                match self.batching {
                    Batching::Mmsg => BATCH as u64,
                    Batching::Gso => gso_segments(self.size) as u64,
                    _ => 1,
                },
            ),
        ])
    }
}

pub struct UdpSubscriber {
    sock: Socket,
    batching: Batching,
    slot: usize,
    buf: Box<[u8]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    timeout: Option<Duration>,
    datagrams: u64,
    truncated: u64,
    bad_frames: u64,
    /// GRO: super-datagrams received (more than one segment).
    coalesced: u64,
    rcvbuf: usize,
    /// What SO_BUSY_POLL / UDP_GRO setup did, for the row's info.
    notes: Info,
}

impl UdpSubscriber {
    pub fn open(spec: &RunSpec, batching: Batching) -> Result<Self> {
        check_size(spec.size, batching)?;
        let (sock, rcvbuf) = receiver_socket(spec.endpoint.group, spec.endpoint.iface)?;
        let mut notes = Info::new();
        if batching == Batching::BusyPoll {
            sock.set_nonblocking(true)?;
            let r = set_int(&sock, libc::SOL_SOCKET, SO_BUSY_POLL, BUSY_POLL_US);
            notes.insert(
                "so_busy_poll".into(),
                match r {
                    Ok(()) => format!("{BUSY_POLL_US} µs"),
                    Err(e) => format!("not set ({e})"),
                },
            );
            notes.insert("receive".into(), "non-blocking recv in a spin loop".into());
        }
        if batching == Batching::Gso {
            set_int(&sock, libc::SOL_UDP, UDP_GRO, 1).context("setsockopt UDP_GRO")?;
            notes.insert("udp_gro".into(), "on".into());
        }
        // One byte more than a message so oversized datagrams show as wrong-sized.
        let slot = match batching {
            Batching::Packed => MAX_DATAGRAM + 1,
            // GRO hands over up to 64 KiB of coalesced segments at once.
            Batching::Gso => 65_536,
            _ => spec.size + 1,
        };
        let slots = if batching == Batching::Mmsg { BATCH } else { 1 };
        let mut s = UdpSubscriber {
            sock,
            batching,
            slot,
            buf: vec![0u8; slot * slots].into_boxed_slice(),
            iovecs: Vec::new(),
            headers: Vec::new(),
            timeout: None,
            datagrams: 0,
            truncated: 0,
            bad_frames: 0,
            coalesced: 0,
            rcvbuf,
            notes,
        };
        if batching == Batching::Mmsg {
            let base = s.buf.as_mut_ptr();
            s.iovecs = (0..BATCH)
                .map(|i| libc::iovec {
                    // SAFETY: i * slot is within `buf` (BATCH * slot bytes).
                    iov_base: unsafe { base.add(i * slot) }.cast(),
                    iov_len: slot,
                })
                .collect();
            // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value.
            s.headers = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (h, iov) in s.headers.iter_mut().zip(s.iovecs.iter_mut()) {
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
        }
        Ok(s)
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        if self.timeout != Some(timeout) {
            self.sock.set_read_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }

    /// One `recv` into the first slot; `flags` = 0 (wait up to SO_RCVTIMEO) or MSG_DONTWAIT.
    fn recv_one(&mut self, flags: libc::c_int) -> Result<Option<usize>> {
        // SAFETY: `buf` holds at least `slot` writable bytes; the fd is open.
        let rc = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.slot,
                flags,
            )
        };
        if rc >= 0 {
            self.datagrams += 1;
            return Ok(Some(rc as usize));
        }
        let e = std::io::Error::last_os_error();
        if transient(&e) {
            Ok(None)
        } else {
            Err(e).context("recv")
        }
    }

    /// One `recvmsg` with GRO: returns the bytes and the segment size (the whole
    /// length when the kernel did not coalesce).
    fn recv_gro(&mut self, flags: libc::c_int) -> Result<Option<(usize, usize)>> {
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.slot,
        };
        let mut control = [0u64; 8]; // 64 bytes, aligned for cmsghdr
                                     // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at iov (into `buf`) and `control`, alive for the call.
        let rc = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, flags) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return if transient(&e) {
                Ok(None)
            } else {
                Err(e).context("recvmsg")
            };
        }
        let n = rc as usize;
        let mut segment = n;
        // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR and
        // CMSG_NXTHDR walk only inside it, and a UDP_GRO cmsg carries one c_int.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                    let size =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let segments = n.div_ceil(segment.max(1)).max(1);
        self.datagrams += segments as u64;
        if segments > 1 {
            self.coalesced += 1;
        }
        Ok(Some((n, segment)))
    }

    /// Receive once (`flags` = 0: wait up to SO_RCVTIMEO; MSG_DONTWAIT: not at all)
    /// and hand over the messages.
    fn receive(&mut self, flags: libc::c_int, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        match self.batching {
            Batching::Single | Batching::BusyPoll => match self.recv_one(flags)? {
                Some(n) => {
                    on_msg(&self.buf[..n]);
                    Ok(1)
                }
                None => Ok(0),
            },
            Batching::Gso => match self.recv_gro(flags)? {
                Some((n, segment)) => Ok(split(&self.buf[..n], segment, on_msg)),
                None => Ok(0),
            },
            Batching::Packed => match self.recv_one(flags)? {
                Some(n) => {
                    if n == self.slot {
                        self.truncated += 1;
                    }
                    let (count, ok) = unpack(&self.buf[..n], on_msg);
                    if !ok {
                        self.bad_frames += 1;
                    }
                    Ok(count)
                }
                None => Ok(0),
            },
            Batching::Mmsg => {
                // MSG_WAITFORONE blocks (up to SO_RCVTIMEO) for the first datagram only.
                let flags = if flags == 0 {
                    libc::MSG_WAITFORONE
                } else {
                    flags
                };
                // SAFETY: headers point at iovecs into `buf`, all owned by `self`.
                let rc = unsafe {
                    libc::recvmmsg(
                        self.sock.as_raw_fd(),
                        self.headers.as_mut_ptr(),
                        BATCH as libc::c_uint,
                        flags,
                        std::ptr::null_mut(),
                    )
                };
                if rc < 0 {
                    let e = std::io::Error::last_os_error();
                    if transient(&e) {
                        return Ok(0);
                    }
                    return Err(e).context("recvmmsg");
                }
                let n = rc as usize;
                self.datagrams += n as u64;
                for i in 0..n {
                    let len = self.headers[i].msg_len as usize;
                    on_msg(&self.buf[i * self.slot..i * self.slot + len]);
                }
                Ok(n)
            }
        }
    }
}

/// Cut a GRO super-datagram into its `segment`-byte datagrams (the last may be
/// shorter); returns how many.
pub fn split(data: &[u8], segment: usize, on_msg: &mut dyn FnMut(&[u8])) -> usize {
    let mut n = 0;
    for chunk in data.chunks(segment.max(1)) {
        on_msg(chunk);
        n += 1;
    }
    n
}

/// Split a packed datagram into its messages; a malformed frame yields one
/// empty message (which verification counts as corrupt) and ends the datagram.
pub fn unpack(datagram: &[u8], on_msg: &mut dyn FnMut(&[u8])) -> (usize, bool) {
    let mut off = 0;
    let mut n = 0;
    while off < datagram.len() {
        if off + FRAME_PREFIX > datagram.len() {
            on_msg(&[]);
            return (n + 1, false);
        }
        let len =
            u32::from_le_bytes(datagram[off..off + FRAME_PREFIX].try_into().expect("4")) as usize;
        let start = off + FRAME_PREFIX;
        if len > datagram.len() - start {
            on_msg(&[]);
            return (n + 1, false);
        }
        on_msg(&datagram[start..start + len]);
        n += 1;
        off = start + len;
    }
    (n, true)
}

impl Subscriber for UdpSubscriber {
    fn poll(&mut self, timeout: Duration, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        if self.batching == Batching::BusyPoll {
            // Spin on the non-blocking socket until something arrives or time is up.
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let n = self.receive(libc::MSG_DONTWAIT, on_msg)?;
                if n > 0 || std::time::Instant::now() >= deadline {
                    return Ok(n);
                }
                std::hint::spin_loop();
            }
        }
        self.set_timeout(timeout)?;
        self.receive(0, on_msg)
    }

    fn try_poll(&mut self, on_msg: &mut dyn FnMut(&[u8])) -> Result<usize> {
        self.receive(libc::MSG_DONTWAIT, on_msg)
    }

    fn counters(&self) -> Counters {
        Counters::from([
            ("datagrams_received".into(), self.datagrams),
            ("truncated_datagrams".into(), self.truncated),
            ("bad_frames".into(), self.bad_frames),
            ("gro_coalesced_receives".into(), self.coalesced),
            ("rcvbuf_bytes".into(), self.rcvbuf as u64),
        ])
    }

    fn info(&self) -> Info {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_arithmetic() {
        assert_eq!(per_datagram(1024), 63);
        assert_eq!(per_datagram(16), 3275);
    }

    #[test]
    fn gso_arithmetic_and_split() {
        assert_eq!(gso_segments(1024), 63); // 64 × 1024 would pass 65,507 bytes
        assert_eq!(gso_segments(1000), 64);
        assert_eq!(gso_segments(1472), 44);
        let data: Vec<u8> = (0..10u8).collect();
        let mut got = Vec::new();
        assert_eq!(split(&data, 4, &mut |m| got.push(m.to_vec())), 3);
        assert_eq!(got, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert!(check_size(1473, Batching::Gso).is_err());
        assert!(check_size(1472, Batching::Gso).is_ok());
    }

    #[test]
    fn unpack_frames() {
        let mut d = Vec::new();
        for m in [&b"abc"[..], b"", b"hello"] {
            d.extend_from_slice(&(m.len() as u32).to_le_bytes());
            d.extend_from_slice(m);
        }
        let mut got = Vec::new();
        assert_eq!(unpack(&d, &mut |m| got.push(m.to_vec())), (3, true));
        assert_eq!(got, vec![b"abc".to_vec(), vec![], b"hello".to_vec()]);
        // Length running past the end.
        d.extend_from_slice(&100u32.to_le_bytes());
        d.push(1);
        let mut got = Vec::new();
        assert_eq!(unpack(&d, &mut |m| got.push(m.len())), (4, false));
        assert_eq!(got, vec![3, 0, 5, 0]);
    }
}
