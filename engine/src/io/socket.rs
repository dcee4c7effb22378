//! Opening and configuring the multicast UDP sockets (socket2 + a few raw options).
//!
//! Receive sockets set both `SO_REUSEADDR` and `SO_REUSEPORT`. On Linux a multicast
//! datagram is delivered to *every* socket bound to the group:port, whichever of the
//! two options allowed the shared bind (reuseport load-balancing applies to unicast
//! only). Setting both lets us share the port with peers that set only one of them,
//! and `SO_REUSEADDR` also lets processes of different users share it (reuseport alone
//! requires the same effective uid).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Interface, IoError};

/// Everything needed to open a group socket and size a backend for it.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Multicast group and port.
    pub group: SocketAddrV4,
    /// Interface to send from / join on.
    pub iface: Interface,
    /// `IP_MULTICAST_TTL` (0 keeps datagrams on this host).
    pub ttl: u32,
    /// `IP_MULTICAST_LOOP`: deliver our own datagrams to local receivers.
    pub loopback: bool,
    /// Requested receive buffer, bytes (0 = kernel default).
    pub rcvbuf: usize,
    /// Requested send buffer, bytes (0 = kernel default).
    pub sndbuf: usize,
    /// Largest UDP payload sent or received.
    pub max_datagram: usize,
    /// Maximum datagrams per send/receive batch.
    pub batch: usize,
    /// Use UDP GSO on the transmit socket where the kernel allows it.
    pub gso: bool,
    /// Use UDP GRO on the receive socket where the kernel allows it.
    pub gro: bool,
    /// `gso` came from `RINGCAST_GSO` (the builder did not override it): an "off"
    /// there is reported as the environment's doing.
    pub gso_from_env: bool,
    /// The same for `gro` and `RINGCAST_GRO`.
    pub gro_from_env: bool,
    /// `SO_BUSY_POLL` on the receive socket (`None`: not set).
    pub busy_poll: Option<std::time::Duration>,
    /// Where the backends report what the offloads do (shared with the node's stats).
    pub offload: super::offload::Offload,
    /// Receive sockets bind the port on every address (so unicast datagrams to this
    /// host arrive too) instead of the group's address alone.
    pub bind_any: bool,
    /// Receive sockets join the group (off: unicast only).
    pub join: bool,
}

/// What the kernel granted for an opened socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// Local address the socket is bound to.
    pub local: SocketAddrV4,
    /// `SO_RCVBUF` read back (the kernel doubles the requested value for bookkeeping
    /// and reports the doubled figure).
    pub rcvbuf: usize,
    /// `SO_SNDBUF` read back (doubled likewise).
    pub sndbuf: usize,
}

/// Opens the transmit socket: bound to the interface address (ephemeral port),
/// multicast interface/TTL/loop set, and connected to the group so plain `send` works.
pub fn open_tx_socket(cfg: &SocketConfig) -> Result<(Socket, SocketInfo), IoError> {
    let sock = new_udp()?;
    sock.set_multicast_if_v4(&cfg.iface.addr)
        .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_IF)", e))?;
    sock.set_multicast_ttl_v4(cfg.ttl)
        .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_TTL)", e))?;
    sock.set_multicast_loop_v4(cfg.loopback)
        .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_LOOP)", e))?;
    if cfg.sndbuf > 0 {
        set_buffer(&sock, BufDir::Send, cfg.sndbuf)?;
    }
    sock.bind(&SockAddr::from(SocketAddrV4::new(cfg.iface.addr, 0)))
        .map_err(|e| IoError::sys("bind (tx)", e))?;
    sock.connect(&SockAddr::from(cfg.group))
        .map_err(|e| IoError::sys("connect (tx to group)", e))?;
    let info = info(&sock)?;
    tracing::debug!(
        group = %cfg.group, iface = %cfg.iface.name, local = %info.local,
        requested = cfg.sndbuf, granted = info.sndbuf, "tx socket open"
    );
    Ok((sock, info))
}

/// Opens the receive socket: bound to group:port (so other groups on the same port
/// stay out; to the port on every address with `bind_any`), joined on the interface
/// (unless `join` is off), `IP_MULTICAST_ALL` off, non-blocking.
pub fn open_rx_socket(cfg: &SocketConfig) -> Result<(Socket, SocketInfo), IoError> {
    let sock = new_udp()?;
    sock.set_reuse_address(true)
        .map_err(|e| IoError::sys("setsockopt(SO_REUSEADDR)", e))?;
    sock.set_reuse_port(true)
        .map_err(|e| IoError::sys("setsockopt(SO_REUSEPORT)", e))?;
    if cfg.rcvbuf > 0 {
        set_buffer(&sock, BufDir::Recv, cfg.rcvbuf)?;
    }
    let local = if cfg.bind_any {
        if wildcard_bound(cfg.group.port()) {
            tracing::warn!(
                port = cfg.group.port(),
                "another socket on this host already takes unicast on this port: two unicast nodes on one host and port share (and split) what is sent to it; give each its own group port"
            );
        }
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.group.port())
    } else {
        cfg.group
    };
    sock.bind(&SockAddr::from(local))
        .map_err(|e| IoError::sys("bind (rx)", e))?;
    if cfg.join {
        sock.join_multicast_v4(cfg.group.ip(), &cfg.iface.addr)
            .map_err(|e| IoError::sys("setsockopt(IP_ADD_MEMBERSHIP)", e))?;
    }
    sock.set_multicast_all_v4(false)
        .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_ALL)", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| IoError::sys("fcntl(O_NONBLOCK)", e))?;
    let info = info(&sock)?;
    tracing::debug!(
        group = %cfg.group, iface = %cfg.iface.name,
        requested = cfg.rcvbuf, granted = info.rcvbuf, "rx socket open"
    );
    Ok((sock, info))
}

/// Whether a UDP socket of this network namespace is bound to `port` on every
/// address already (`/proc/net/udp`, local address `00000000:PORT`): a unicast node
/// binding it too would share its unicast datagrams (`SO_REUSEPORT` spreads them).
fn wildcard_bound(port: u16) -> bool {
    let want = format!("00000000:{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| {
        t.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
    })
}

/// The group's control address: the same group on the data port + 1 (as RTCP sits
/// beside RTP). Receivers' status messages travel there.
pub fn control_addr(group: SocketAddrV4) -> Option<SocketAddrV4> {
    Some(SocketAddrV4::new(*group.ip(), group.port().checked_add(1)?))
}

fn control_config(cfg: &SocketConfig) -> Result<SocketConfig, IoError> {
    let group = control_addr(cfg.group).ok_or_else(|| {
        IoError::sys(
            "control port",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "data port 65535 leaves no control port",
            ),
        )
    })?;
    Ok(SocketConfig {
        group,
        rcvbuf: 1 << 20,
        sndbuf: 0,
        // Control sockets are read and written one datagram at a time.
        gso: false,
        gro: false,
        busy_poll: None,
        offload: Default::default(),
        ..cfg.clone()
    })
}

/// Opens a publisher's control socket: joined to the control address, blocking, with
/// reads timing out after `wait` (so an agent can wait for a status instead of
/// sleeping blind). Poll it without blocking with `MSG_DONTWAIT`.
pub fn open_control_rx(cfg: &SocketConfig, wait: std::time::Duration) -> Result<Socket, IoError> {
    let (sock, _) = open_rx_socket(&control_config(cfg)?)?;
    sock.set_nonblocking(false)
        .map_err(|e| IoError::sys("fcntl(O_NONBLOCK)", e))?;
    sock.set_read_timeout(Some(wait.max(std::time::Duration::from_micros(1))))
        .map_err(|e| IoError::sys("setsockopt(SO_RCVTIMEO)", e))?;
    Ok(sock)
}

/// Opens the discovery sockets on `group` (same interface, TTL and loop as data):
/// a blocking receive socket joined to it, and a send socket connected to it; with
/// `bind_any`, the send socket is the receive socket (bound to the discovery port
/// on every address), so unicast announces come from the port peers answer to.
pub fn open_discovery(
    cfg: &SocketConfig,
    group: SocketAddrV4,
) -> Result<(std::net::UdpSocket, std::net::UdpSocket), IoError> {
    let aux = SocketConfig {
        group,
        rcvbuf: 1 << 20,
        sndbuf: 0,
        max_datagram: 2048,
        batch: 1,
        gso: false,
        gro: false,
        gso_from_env: false,
        gro_from_env: false,
        busy_poll: None,
        offload: Default::default(),
        ..cfg.clone()
    };
    let (rx, _) = open_rx_socket(&aux)?;
    rx.set_nonblocking(false)
        .map_err(|e| IoError::sys("fcntl(O_NONBLOCK)", e))?;
    if cfg.bind_any {
        // Unicast peers answer the address announces come from: send from the
        // discovery port itself (to the group as well).
        rx.set_multicast_if_v4(&cfg.iface.addr)
            .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_IF)", e))?;
        rx.set_multicast_ttl_v4(cfg.ttl)
            .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_TTL)", e))?;
        rx.set_multicast_loop_v4(cfg.loopback)
            .map_err(|e| IoError::sys("setsockopt(IP_MULTICAST_LOOP)", e))?;
        let tx = rx
            .try_clone()
            .map_err(|e| IoError::sys("dup (discovery)", e))?;
        return Ok((rx.into(), tx.into()));
    }
    let (tx, _) = open_tx_socket(&aux)?;
    Ok((rx.into(), tx.into()))
}

/// Opens a receiver's socket for sending status messages to the control address
/// (same interface, TTL and loop settings as data), non-blocking.
pub fn open_control_tx(cfg: &SocketConfig) -> Result<Socket, IoError> {
    let (sock, _) = open_tx_socket(&control_config(cfg)?)?;
    sock.set_nonblocking(true)
        .map_err(|e| IoError::sys("fcntl(O_NONBLOCK)", e))?;
    Ok(sock)
}

/// Reads one datagram from a control socket into `buf`: waits up to the socket's
/// read timeout when `wait`, else returns `WouldBlock` at once if nothing is queued.
pub fn recv_control(sock: &Socket, buf: &mut [u8], wait: bool) -> std::io::Result<usize> {
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call, and
    // the descriptor belongs to `sock`, which outlives the call.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn new_udp() -> Result<Socket, IoError> {
    // socket2 sets SOCK_CLOEXEC on Linux.
    Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| IoError::sys("socket(AF_INET, SOCK_DGRAM)", e))
}

#[derive(Clone, Copy)]
enum BufDir {
    Send,
    Recv,
}

/// Requests a socket buffer of `bytes`: `SO_*BUFFORCE` first (CAP_NET_ADMIN may exceed
/// `net.core.[rw]mem_max`), then the plain option, which the kernel caps silently.
fn set_buffer(sock: &Socket, dir: BufDir, bytes: usize) -> Result<(), IoError> {
    // The kernel doubles the value and keeps it in an int: stay below INT_MAX / 2.
    let val = libc::c_int::try_from(bytes.min((libc::c_int::MAX / 2) as usize))
        .unwrap_or(libc::c_int::MAX / 2);
    let (force, plain, name) = match dir {
        BufDir::Send => (
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            "setsockopt(SO_SNDBUF)",
        ),
        BufDir::Recv => (
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            "setsockopt(SO_RCVBUF)",
        ),
    };
    if setsockopt_int(sock, libc::SOL_SOCKET, force, val).is_ok() {
        return Ok(());
    }
    setsockopt_int(sock, libc::SOL_SOCKET, plain, val).map_err(|e| IoError::sys(name, e))
}

/// Checks that the kernel accepts UDP GSO on `sock` (`UDP_SEGMENT` exists: Linux ≥
/// 4.18). Sets the socket-wide segment size to 0 (none): sizes go per send, in a cmsg.
pub(crate) fn probe_gso(sock: &Socket) -> Result<(), i32> {
    setsockopt_int(sock, libc::SOL_UDP, super::offload::UDP_SEGMENT, 0).map_err(errno)
}

/// Turns UDP GRO on for `sock` (Linux ≥ 5.0): received buffers may then hold several
/// datagrams, with a `UDP_GRO` cmsg giving the segment size.
pub(crate) fn enable_gro(sock: &Socket) -> Result<(), i32> {
    setsockopt_int(sock, libc::SOL_UDP, super::offload::UDP_GRO, 1).map_err(errno)
}

/// Sets `SO_BUSY_POLL` to `us` microseconds (above `net.core.busy_read` the kernel
/// asks for `CAP_NET_ADMIN`).
pub(crate) fn set_busy_poll(sock: &Socket, us: u32) -> Result<(), i32> {
    let v = libc::c_int::try_from(us).unwrap_or(libc::c_int::MAX);
    setsockopt_int(sock, libc::SOL_SOCKET, super::offload::SO_BUSY_POLL, v).map_err(errno)
}

/// Whether the kernel accepts UDP GSO and GRO, tried on a throwaway UDP socket
/// (for `ringcast doctor`; no packet is sent).
pub(crate) fn probe_offloads() -> (Result<(), i32>, Result<(), i32>) {
    match new_udp() {
        Ok(s) => (probe_gso(&s), enable_gro(&s)),
        Err(_) => (Err(libc::EAFNOSUPPORT), Err(libc::EAFNOSUPPORT)),
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn setsockopt_int(sock: &Socket, level: i32, opt: i32, val: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `val` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(&val).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn info(sock: &Socket) -> Result<SocketInfo, IoError> {
    let local = sock
        .local_addr()
        .map_err(|e| IoError::sys("getsockname", e))?
        .as_socket();
    let local = match local {
        Some(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    let rcvbuf = sock
        .recv_buffer_size()
        .map_err(|e| IoError::sys("getsockopt(SO_RCVBUF)", e))?;
    let sndbuf = sock
        .send_buffer_size()
        .map_err(|e| IoError::sys("getsockopt(SO_SNDBUF)", e))?;
    Ok(SocketInfo {
        local,
        rcvbuf,
        sndbuf,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::{iface, RxBackend, TxBackend};
    use std::time::{Duration, Instant};

    /// A loopback-only config: lo, TTL 0, group 239.255.x.y, the given port.
    pub(crate) fn lo_config(group_last: u8, port: u16) -> SocketConfig {
        SocketConfig {
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 42, group_last), port),
            iface: iface::resolve("lo").expect("lo"),
            ttl: 0,
            loopback: true,
            rcvbuf: 8 << 20,
            sndbuf: 4 << 20,
            max_datagram: 60_000,
            batch: 64,
            gso: false,
            gro: false,
            gso_from_env: false,
            gro_from_env: false,
            busy_poll: None,
            offload: Default::default(),
            bind_any: false,
            join: true,
        }
    }

    pub(crate) type MkTx = fn(Socket, &SocketConfig) -> Result<Box<dyn TxBackend>, IoError>;
    pub(crate) type MkRx = fn(Socket, &SocketConfig) -> Result<Box<dyn RxBackend>, IoError>;

    /// Datagram `i` of the round-trip test: sizes cover 1..=60000, content depends on
    /// the index and the offset.
    fn datagram(i: usize) -> Vec<u8> {
        let len = match i {
            0 => 1,
            1 => 60_000,
            _ => 1 + (i * 7919) % 60_000,
        };
        (0..len)
            .map(|j| (i.wrapping_mul(131) ^ j.wrapping_mul(7) ^ (j >> 8)) as u8)
            .collect()
    }

    /// Receives until `expected.len()` datagrams have arrived in order from `from`.
    fn drain(rx: &mut dyn RxBackend, got: &mut usize, expected: &[Vec<u8>], from: SocketAddrV4) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while *got < expected.len() {
            assert!(Instant::now() < deadline, "timed out at datagram {}", *got);
            rx.recv_batch(64, Some(Duration::from_millis(20)), &mut |d, src| {
                assert!(
                    *got < expected.len(),
                    "unexpected extra datagram of {} bytes",
                    d.len()
                );
                assert_eq!(d.len(), expected[*got].len(), "length of datagram {}", *got);
                assert!(
                    d == expected[*got].as_slice(),
                    "content of datagram {}",
                    *got
                );
                assert_eq!(src, from);
                *got += 1;
            })
            .expect("recv_batch");
        }
    }

    /// The shared backend test: idle wait, group isolation, 1000 datagrams of
    /// 1..=60000 bytes to two receivers in order, truncation counting.
    pub(crate) fn check_backend(mk_tx: MkTx, mk_rx: MkRx, group_last: u8, port: u16) {
        let cfg = lo_config(group_last, port);
        let mut other = cfg.clone();
        other.group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 43, group_last), port);
        let open_rx =
            |c: &SocketConfig| mk_rx(open_rx_socket(c).expect("rx socket").0, c).expect("rx");
        let mut rx_a = open_rx(&cfg);
        let mut rx_b = open_rx(&cfg);
        let mut rx_other = open_rx(&other);
        let (ts, tinfo) = open_tx_socket(&cfg).expect("tx socket");
        let mut tx = mk_tx(ts, &cfg).expect("tx");
        let (ots, oinfo) = open_tx_socket(&other).expect("tx socket");
        let mut tx_other = mk_tx(ots, &other).expect("tx");
        assert_eq!(tx.kind(), rx_a.kind());

        // Nothing sent yet: a bounded wait returns 0 after about that long.
        let t0 = Instant::now();
        let n = rx_a
            .recv_batch(64, Some(Duration::from_millis(50)), &mut |_, _| {
                panic!("no traffic")
            })
            .expect("idle recv");
        let waited = t0.elapsed();
        assert_eq!(n, 0);
        assert!(
            waited >= Duration::from_millis(45),
            "returned after {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(500),
            "returned after {waited:?}"
        );
        let t0 = Instant::now();
        assert_eq!(
            rx_a.recv_batch(64, None, &mut |_, _| panic!("no traffic"))
                .expect("poll"),
            0
        );
        assert!(t0.elapsed() < Duration::from_millis(20));

        // A datagram to another group on the same port reaches only that group.
        let marker = b"other-group".to_vec();
        tx_other.send_batch(&[&marker]).expect("send other");
        let mut got = 0;
        drain(
            &mut *rx_other,
            &mut got,
            std::slice::from_ref(&marker),
            oinfo.local,
        );

        let expected: Vec<Vec<u8>> = (0..1000).map(datagram).collect();
        let (mut got_a, mut got_b) = (0, 0);
        let mut sent = 0;
        for chunk in expected.chunks(cfg.batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            tx.send_batch(&refs).expect("send_batch");
            sent += chunk.len();
            drain(&mut *rx_a, &mut got_a, &expected[..sent], tinfo.local);
            drain(&mut *rx_b, &mut got_b, &expected[..sent], tinfo.local);
        }
        assert_eq!((got_a, got_b), (1000, 1000));

        // Oversize datagram: counted as truncated, not delivered; the next one is.
        let big = vec![0xA5u8; cfg.max_datagram + 1];
        let after = b"after-truncation".to_vec();
        tx.send_batch(&[&big, &after]).expect("send big");
        for rx in [&mut rx_a, &mut rx_b] {
            let mut got = 0;
            drain(
                &mut **rx,
                &mut got,
                std::slice::from_ref(&after),
                tinfo.local,
            );
            assert_eq!(rx.truncated(), 1);
        }

        // Nothing else arrives (in particular not the other group's datagram).
        for rx in [&mut rx_a, &mut rx_b, &mut rx_other] {
            let n = rx
                .recv_batch(64, Some(Duration::from_millis(30)), &mut |d, _| {
                    panic!("unexpected datagram of {} bytes", d.len())
                })
                .expect("final recv");
            assert_eq!(n, 0);
        }

        // Unicast: batches (one datagram, and many) to a port bound on every address
        // arrive there in order, from the same socket.
        let mut uni = cfg.clone();
        uni.group = SocketAddrV4::new(*cfg.group.ip(), port + 500);
        uni.bind_any = true;
        uni.join = false;
        assert!(!wildcard_bound(port + 500));
        let mut rx_uni = open_rx(&uni);
        assert!(
            wildcard_bound(port + 500),
            "/proc/net/udp shows the bound port"
        );
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, uni.group.port());
        let mut got = 0;
        let mut sent = 0;
        for n in [1, 2, cfg.batch, 1] {
            let refs: Vec<&[u8]> = expected[sent..sent + n].iter().map(Vec::as_slice).collect();
            tx.send_batch_to(&refs, Some(to)).expect("send_batch_to");
            sent += n;
            drain(&mut *rx_uni, &mut got, &expected[..sent], tinfo.local);
        }
        // And the next plain batch goes to the group again.
        tx.send_batch(&[&marker]).expect("send to group");
        let mut got = 0;
        drain(
            &mut *rx_a,
            &mut got,
            std::slice::from_ref(&marker),
            tinfo.local,
        );
        let n = rx_uni
            .recv_batch(64, Some(Duration::from_millis(30)), &mut |d, _| {
                panic!("unexpected datagram of {} bytes", d.len())
            })
            .expect("final unicast recv");
        assert_eq!(n, 0);
    }

    /// Datagram `i` of the offload tests: mostly runs of 1000 bytes, with full-size
    /// (1472) runs and short ones mixed in; the first 4 bytes are the index.
    fn offload_datagram(i: usize) -> Vec<u8> {
        let len = match i % 97 {
            0..=59 => 1000,
            60..=89 => 1472,
            90 => 12,
            _ => 300 + i % 7,
        };
        let mut d: Vec<u8> = (0..len).map(|j| (i ^ (j * 13)) as u8).collect();
        d[..4].copy_from_slice(&(i as u32).to_le_bytes());
        d
    }

    /// Sends 3,000 datagrams through a backend pair with GSO and/or GRO on (the
    /// socket options set as `open_tx`/`open_rx` would) and checks byte-exact,
    /// in-order delivery in calls of at most 5 datagrams, and the offload counters.
    pub(crate) fn check_offload(
        mk_tx: MkTx,
        mk_rx: MkRx,
        gso: bool,
        gro: bool,
        group_last: u8,
        port: u16,
    ) {
        let mut cfg = lo_config(group_last, port);
        cfg.max_datagram = 1472;
        cfg.gso = gso;
        cfg.gro = gro;
        let (rs, _) = open_rx_socket(&cfg).expect("rx socket");
        if gro {
            enable_gro(&rs).expect("UDP_GRO");
        }
        let mut rx = mk_rx(rs, &cfg).expect("rx");
        let (ts, tinfo) = open_tx_socket(&cfg).expect("tx socket");
        if gso {
            probe_gso(&ts).expect("UDP_SEGMENT");
        }
        let mut tx = mk_tx(ts, &cfg).expect("tx");
        let expected: Vec<Vec<u8>> = (0..3000).map(offload_datagram).collect();
        let mut got = 0usize;
        for chunk in expected.chunks(cfg.batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            tx.send_batch(&refs).expect("send_batch");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < expected.len() {
            assert!(Instant::now() < deadline, "timed out at datagram {got}");
            let n = rx
                .recv_batch(5, Some(Duration::from_millis(50)), &mut |d, src| {
                    assert_eq!(src, tinfo.local);
                    assert_eq!(d, expected[got].as_slice(), "datagram {got}");
                    got += 1;
                })
                .expect("recv");
            assert!(n <= 5, "{n} datagrams delivered for a budget of 5");
        }
        let n = rx
            .recv_batch(64, Some(Duration::from_millis(30)), &mut |d, _| {
                panic!("unexpected datagram of {} bytes", d.len())
            })
            .expect("final recv");
        assert_eq!(n, 0);
        assert_eq!(rx.truncated(), 0);
        // A datagram over the maximum is still dropped and counted, even where GRO
        // buffers would hold it; the one after it arrives.
        let big = vec![0x5Au8; cfg.max_datagram + 1];
        let after = b"after-truncation".to_vec();
        tx.send_batch(&[&big, &after]).expect("send big");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.is_empty() && Instant::now() < deadline {
            rx.recv_batch(5, Some(Duration::from_millis(50)), &mut |d, _| {
                seen.push(d.to_vec())
            })
            .expect("recv after big");
        }
        assert_eq!(seen, vec![after]);
        assert_eq!(rx.truncated(), 1);
        let r = cfg.offload.report();
        if gso {
            assert!(r.gso_sends > 0, "{r:?}");
            assert!(r.gso_segments >= 2 * r.gso_sends, "{r:?}");
            assert_eq!(r.gso_downgrades, 0, "{r:?}");
        } else {
            assert_eq!((r.gso_sends, r.gso_segments), (0, 0), "{r:?}");
        }
        if gso && gro {
            // On loopback a GSO send reaches a GRO socket still coalesced.
            assert!(r.gro_buffers > 0, "{r:?}");
            assert!(r.gro_segments >= 2 * r.gro_buffers, "{r:?}");
        } else {
            assert_eq!((r.gro_buffers, r.gro_segments), (0, 0), "{r:?}");
        }
    }

    /// A GSO send the kernel refuses (here: UDP checksums off with `SO_NO_CHECK`,
    /// which GSO cannot do; `EINVAL`) is resent datagram by datagram and GSO is
    /// switched off for the socket, counted.
    pub(crate) fn check_gso_downgrade(mk_tx: MkTx, mk_rx: MkRx, group_last: u8, port: u16) {
        let mut cfg = lo_config(group_last, port);
        cfg.max_datagram = 1472;
        cfg.gso = true;
        let (rs, _) = open_rx_socket(&cfg).expect("rx socket");
        let mut rx = mk_rx(rs, &cfg).expect("rx");
        let (ts, _) = open_tx_socket(&cfg).expect("tx socket");
        probe_gso(&ts).expect("UDP_SEGMENT");
        setsockopt_int(&ts, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).expect("SO_NO_CHECK");
        let mut tx = mk_tx(ts, &cfg).expect("tx");
        let expected: Vec<Vec<u8>> = (0..300).map(offload_datagram).collect();
        for chunk in expected.chunks(cfg.batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            tx.send_batch(&refs).expect("send_batch");
        }
        let mut got = 0usize;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < expected.len() {
            assert!(Instant::now() < deadline, "timed out at datagram {got}");
            rx.recv_batch(64, Some(Duration::from_millis(50)), &mut |d, _| {
                assert_eq!(d, expected[got].as_slice(), "datagram {got}");
                got += 1;
            })
            .expect("recv");
        }
        let r = cfg.offload.report();
        assert_eq!(r.gso_downgrades, 1, "{r:?}");
        assert_eq!(r.gso_sends, 0, "{r:?}");
        assert!(
            matches!(
                r.gso,
                crate::io::OffloadStatus::SwitchedOff(libc::EINVAL | libc::EIO)
            ),
            "{r:?}"
        );
    }

    /// Quick loopback throughput: one sender thread, one receiver thread.
    pub(crate) fn measure(name: &str, mk_tx: MkTx, mk_rx: MkRx, group_last: u8, port: u16) {
        for &(size, count) in &[(64usize, 1_000_000usize), (1400, 500_000), (8192, 200_000)] {
            let mut cfg = lo_config(group_last, port);
            let count = count.div_ceil(cfg.batch) * cfg.batch;
            cfg.rcvbuf = 64 << 20;
            cfg.max_datagram = size;
            let mut rx = mk_rx(open_rx_socket(&cfg).expect("rx socket").0, &cfg).expect("rx");
            let mut tx = mk_tx(open_tx_socket(&cfg).expect("tx socket").0, &cfg).expect("tx");
            let rx_thread = std::thread::spawn(move || {
                let mut n = 0usize;
                let mut first: Option<Instant> = None;
                let mut last = Instant::now();
                loop {
                    let k = rx
                        .recv_batch(64, Some(Duration::from_millis(300)), &mut |_, _| {})
                        .expect("recv");
                    if k == 0 {
                        if first.is_some() || n >= count {
                            break;
                        }
                        continue;
                    }
                    first.get_or_insert_with(Instant::now);
                    n += k;
                    last = Instant::now();
                    if n >= count {
                        break;
                    }
                }
                (n, first.map(|f| last - f))
            });
            let payload = vec![7u8; size];
            let batch: Vec<&[u8]> = (0..cfg.batch).map(|_| payload.as_slice()).collect();
            let t0 = Instant::now();
            let mut sent = 0;
            while sent < count {
                tx.send_batch(&batch).expect("send");
                sent += batch.len();
            }
            let tx_time = t0.elapsed();
            let (recvd, rx_time) = rx_thread.join().expect("rx thread");
            eprintln!(
                "{name}: {size} B x {sent}: tx {:.0} dgram/s ({:.2} Gbit/s); rx got {recvd} ({:.1}%) {}",
                sent as f64 / tx_time.as_secs_f64(),
                (sent * size * 8) as f64 / tx_time.as_secs_f64() / 1e9,
                recvd as f64 * 100.0 / sent as f64,
                rx_time.map_or(String::new(), |t| format!(
                    "at {:.0} dgram/s",
                    recvd as f64 / t.as_secs_f64().max(1e-9)
                )),
            );
        }
    }

    #[test]
    fn sockets_open_and_report_buffers() {
        let cfg = lo_config(1, 41_001);
        let (tx, tinfo) = open_tx_socket(&cfg).expect("tx");
        let (_rx, rinfo) = open_rx_socket(&cfg).expect("rx");
        assert_eq!(*tinfo.local.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(tinfo.local.port(), 0);
        assert_eq!(rinfo.local, cfg.group);
        // Root (CAP_NET_ADMIN) gets the forced size, doubled by the kernel; others
        // get at least something.
        assert!(rinfo.rcvbuf > 0 && tinfo.sndbuf > 0);
        assert_eq!(tx.multicast_ttl_v4().expect("ttl"), 0);
        assert!(tx.multicast_loop_v4().expect("loop"));
    }

    #[test]
    fn two_receivers_share_the_port() {
        let cfg = lo_config(2, 41_002);
        let _a = open_rx_socket(&cfg).expect("rx a");
        let _b = open_rx_socket(&cfg).expect("rx b");
    }
}
