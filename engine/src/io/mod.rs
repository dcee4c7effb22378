//! I/O layer: the only place that talks to the kernel's network stack.
//!
//! Two backends sit behind one pair of traits: io_uring ([`uring`]) and a
//! `sendmmsg`/`recvmmsg` fallback ([`mmsg`]). [`probe`] decides at start-up which one
//! this host can run, and why. [`socket`] opens and configures the multicast sockets
//! (socket2), [`iface`] resolves an interface name or address and reads its MTU.
//! [`offload`] holds UDP GSO/GRO and busy polling: the kernel quirks, the batch
//! grouping and buffer splitting both backends use, and the state and counters a
//! node's [`Stats`](crate::Stats) report.
//!
//! Each agent thread owns its own backend instance (one ring per thread): the
//! sender agent a [`TxBackend`], the receiver agent an [`RxBackend`].

pub mod fault;
pub mod iface;
pub mod mmsg;
pub mod offload;
pub mod probe;
pub mod socket;
pub mod uring;

use std::net::SocketAddrV4;
use std::time::Duration;

pub use iface::Interface;
pub use offload::{BusyPoll, Offload, OffloadReport, OffloadStatus};
pub use probe::{BackendKind, BackendReport};
pub use socket::{SocketConfig, SocketInfo};

/// Errors of the I/O layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The interface could not be resolved.
    #[error("interface {0:?} not found or has no IPv4 address")]
    NoSuchInterface(String),
    /// The requested backend is not available on this host.
    #[error("backend {kind} unavailable: {reason}")]
    Unavailable {
        /// Which backend.
        kind: BackendKind,
        /// Why.
        reason: String,
    },
    /// `RINGCAST_BACKEND` (or a backend name given elsewhere) is not a known backend.
    #[error("invalid backend {0:?} (expected uring, io_uring or mmsg)")]
    InvalidBackend(String),
}

impl IoError {
    pub(crate) fn sys(op: &'static str, source: std::io::Error) -> Self {
        IoError::Sys { op, source }
    }
}

/// Sends datagrams to the multicast group, or to one unicast destination a batch.
pub trait TxBackend: Send {
    /// Hands every datagram in `datagrams` to the kernel, in order, addressed to
    /// `to`, or to the group the socket is connected to when `None`. Returns once the
    /// kernel has accepted all of them (their buffers may then be reused).
    /// Implementations batch: one `io_uring_enter`/`sendmmsg` per call where the
    /// batch fits the ring/vector; with GSO on, each run of equal-size datagrams is
    /// one kernel send (see [`offload`]).
    fn send_batch_to(
        &mut self,
        datagrams: &[&[u8]],
        to: Option<SocketAddrV4>,
    ) -> Result<(), IoError>;

    /// [`send_batch_to`](Self::send_batch_to) the group.
    fn send_batch(&mut self, datagrams: &[&[u8]]) -> Result<(), IoError> {
        self.send_batch_to(datagrams, None)
    }

    /// Which backend this is.
    fn kind(&self) -> BackendKind;
}

/// Receives datagrams from the group.
pub trait RxBackend: Send {
    /// Delivers up to `max` received datagrams to `on_datagram(bytes, source)`, one
    /// call per datagram: with GRO on, a buffer of coalesced datagrams is split first
    /// (what `max` leaves of it is delivered by the next call).
    ///
    /// With `wait == None` it never blocks: returns `Ok(0)` when nothing is ready.
    /// With `Some(d)` it may block up to `d` for the first datagram (used by park idle
    /// strategies); it returns early as soon as something arrives.
    fn recv_batch(
        &mut self,
        max: usize,
        wait: Option<Duration>,
        on_datagram: &mut dyn FnMut(&[u8], SocketAddrV4),
    ) -> Result<usize, IoError>;

    /// Datagrams dropped because they were larger than `max_datagram` (MSG_TRUNC),
    /// since the backend was opened.
    fn truncated(&self) -> u64 {
        0
    }

    /// Faults injected so far (only [`fault::FaultyRx`] injects any).
    fn injected(&self) -> fault::FaultCounts {
        fault::FaultCounts::default()
    }

    /// Which backend this is.
    fn kind(&self) -> BackendKind;
}

/// `addr` as the kernel's `sockaddr_in`.
pub(crate) fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = addr.port().to_be();
    sin.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    sin
}

/// Opens a transmit backend of the given kind on a socket configured by `cfg`, with
/// UDP GSO where `cfg.gso` asks for it, `RINGCAST_GSO` does not forbid it and the
/// kernel accepts it (reported in `cfg.offload`).
pub fn open_tx(
    kind: BackendKind,
    cfg: &SocketConfig,
) -> Result<(Box<dyn TxBackend>, SocketInfo), IoError> {
    let (sock, info) = socket::open_tx_socket(cfg)?;
    let env = cfg
        .gso_from_env
        .then(|| std::env::var(offload::GSO_ENV).ok())
        .flatten();
    let gso = offload::wanted(cfg.gso, env.as_deref()).unwrap_or_else(|| {
        match socket::probe_gso(&sock) {
            // io_uring carries the segment size only in a SendMsg's control message.
            Ok(()) if kind == BackendKind::Uring && !uring::caps().has("SendMsg") => {
                OffloadStatus::Refused(libc::EOPNOTSUPP)
            }
            Ok(()) if cfg.loopback && !offload::loop_safe_kernel(&probe::kernel_release()) => {
                OffloadStatus::OldKernel
            }
            Ok(()) => OffloadStatus::On,
            Err(e) => OffloadStatus::Refused(e),
        }
    });
    cfg.offload.set_gso(gso);
    tracing::debug!(%gso, "udp gso");
    let eff = SocketConfig {
        gso: gso.is_on(),
        ..cfg.clone()
    };
    let b: Box<dyn TxBackend> = match kind {
        BackendKind::Uring => Box::new(uring::UringTx::new(sock, &eff)?),
        BackendKind::Mmsg => Box::new(mmsg::MmsgTx::new(sock, &eff)?),
    };
    Ok((b, info))
}

/// Opens a receive backend of the given kind on a socket joined to `cfg.group`, with
/// UDP GRO where `cfg.gro` asks for it, `RINGCAST_GRO` does not forbid it and the
/// kernel accepts it, and `SO_BUSY_POLL` when `cfg.busy_poll` is set (both reported in
/// `cfg.offload`; a refused busy poll is reported, not an error).
pub fn open_rx(
    kind: BackendKind,
    cfg: &SocketConfig,
) -> Result<(Box<dyn RxBackend>, SocketInfo), IoError> {
    let (sock, info) = socket::open_rx_socket(cfg)?;
    let env = cfg
        .gro_from_env
        .then(|| std::env::var(offload::GRO_ENV).ok())
        .flatten();
    let gro =
        offload::wanted(cfg.gro, env.as_deref()).unwrap_or_else(|| {
            match socket::enable_gro(&sock) {
                Ok(()) => OffloadStatus::On,
                Err(e) => OffloadStatus::Refused(e),
            }
        });
    cfg.offload.set_gro(gro);
    let busy = match cfg.busy_poll {
        None => BusyPoll::Off,
        Some(d) => {
            let us = offload::busy_poll_us(d);
            match socket::set_busy_poll(&sock, us) {
                Ok(()) => BusyPoll::On(us),
                Err(e) => {
                    tracing::warn!(us, errno = e, "SO_BUSY_POLL refused");
                    BusyPoll::Refused(us, e)
                }
            }
        }
    };
    cfg.offload.set_busy_poll(busy);
    tracing::debug!(%gro, %busy, "udp gro, busy poll");
    let eff = SocketConfig {
        gro: gro.is_on(),
        ..cfg.clone()
    };
    let b: Box<dyn RxBackend> = match kind {
        BackendKind::Uring => Box::new(uring::UringRx::new(sock, &eff)?),
        BackendKind::Mmsg => Box::new(mmsg::MmsgRx::new(sock, &eff)?),
    };
    Ok((b, info))
}
