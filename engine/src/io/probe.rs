//! Start-up probe: can this host run the io_uring backend, with which features, and
//! which backend do we pick (and why).
//!
//! io_uring can be blocked by a seccomp profile (Docker's default) or by the
//! `kernel.io_uring_disabled` sysctl; the probe then reports the error text and
//! [`Probe::choose`] falls back to `sendmmsg`/`recvmmsg`.

use std::fmt;
use std::str::FromStr;

use super::uring;
use super::IoError;

/// Environment variable that forces a backend: `uring`, `io_uring` or `mmsg`.
pub const BACKEND_ENV: &str = "RINGCAST_BACKEND";

/// Which I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// io_uring: batched `Send` SQEs, multishot `RecvMsg` with a provided buffer ring.
    Uring,
    /// `sendmmsg(2)` / `recvmmsg(2)`.
    Mmsg,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Mmsg => "mmsg",
        })
    }
}

impl FromStr for BackendKind {
    type Err = IoError;

    fn from_str(s: &str) -> Result<Self, IoError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "io-uring" => Ok(BackendKind::Uring),
            "mmsg" => Ok(BackendKind::Mmsg),
            _ => Err(IoError::InvalidBackend(s.to_owned())),
        }
    }
}

/// The backend picked for this run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReport {
    /// The backend.
    pub kind: BackendKind,
    /// Human-readable reason, printed at start-up and by `ringcast doctor`.
    pub reason: String,
    /// Whether receive uses multishot `RecvMsg` with a buffer ring (io_uring only).
    pub multishot: bool,
    /// GSO/GRO/busy-poll state and counters of the sockets opened with this report.
    pub offload: super::Offload,
}

/// What the host supports.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/sys/kernel/io_uring_disabled` (0 enabled, 1 restricted to a group,
    /// 2 disabled), `None` when the file does not exist (older kernels).
    pub io_uring_disabled_sysctl: Option<u32>,
    /// An io_uring instance could be created and used.
    pub uring_ok: bool,
    /// Why not, when `uring_ok` is false.
    pub uring_error: Option<String>,
    /// Opcode support: `SendMsg`, `Send`, `RecvMsg`, `RecvMsgMulti` (multishot
    /// recvmsg, tested by actually receiving), `ProvideBuffers`, `SendZc`,
    /// `SendMsgZc`, `AsyncCancel`.
    pub opcodes: Vec<(&'static str, bool)>,
    /// `IORING_REGISTER_PBUF_RING` works.
    pub buf_ring: bool,
    /// `/proc/sys/net/core/rmem_max`.
    pub rmem_max: Option<u64>,
    /// `/proc/sys/net/core/wmem_max`.
    pub wmem_max: Option<u64>,
    /// Why UDP GSO (`UDP_SEGMENT`, Linux ≥ 4.18) is unavailable; `None`: available.
    pub gso_error: Option<String>,
    /// Why UDP GRO (`UDP_GRO`, Linux ≥ 5.0) is unavailable; `None`: available.
    pub gro_error: Option<String>,
    /// `/proc/sys/net/core/busy_read`: the default `SO_BUSY_POLL` (µs); a larger value
    /// needs `CAP_NET_ADMIN`.
    pub busy_read: Option<u64>,
    /// `/proc/sys/net/core/busy_poll`: busy polling of poll/select (µs).
    pub busy_poll: Option<u64>,
    /// The process holds `CAP_NET_ADMIN` (effective set).
    pub net_admin: bool,
}

/// Probes the host. Never panics; every failure ends up as a field value.
pub fn run() -> Probe {
    let caps = uring::caps();
    let (gso, gro) = super::socket::probe_offloads();
    Probe {
        kernel: kernel_release(),
        io_uring_disabled_sysctl: read_proc_u64("/proc/sys/kernel/io_uring_disabled")
            .and_then(|v| u32::try_from(v).ok()),
        uring_ok: caps.error.is_none(),
        uring_error: caps.error.clone(),
        opcodes: caps.opcodes.clone(),
        buf_ring: caps.buf_ring,
        rmem_max: read_proc_u64("/proc/sys/net/core/rmem_max"),
        wmem_max: read_proc_u64("/proc/sys/net/core/wmem_max"),
        gso_error: gso.err().map(os_error),
        gro_error: gro.err().map(os_error),
        busy_read: read_proc_u64("/proc/sys/net/core/busy_read"),
        busy_poll: read_proc_u64("/proc/sys/net/core/busy_poll"),
        net_admin: has_net_admin(),
    }
}

fn os_error(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// `CAP_NET_ADMIN` (bit 12) in `CapEff` of `/proc/self/status`.
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// One line about an offload for `doctor`: available or why not, and whether this
/// environment turns it off.
fn offload_line(error: Option<&str>, env: &str, setter: &str) -> String {
    let forced_off = super::offload::wanted(true, std::env::var(env).ok().as_deref()).is_some();
    match error {
        Some(e) => format!("unavailable (kernel refused: {e})"),
        None if forced_off => format!("available, but off: {env}=0"),
        None => format!("available, on by default (off: Config::{setter}(false) or {env}=0)"),
    }
}

impl Probe {
    /// Whether the named opcode (as listed in [`Probe::opcodes`]) is supported.
    pub fn has(&self, opcode: &str) -> bool {
        self.opcodes.iter().any(|&(n, ok)| ok && n == opcode)
    }

    /// Whether the io_uring receive path can use multishot `RecvMsg` with a buffer ring.
    pub fn multishot(&self) -> bool {
        self.uring_ok && self.buf_ring && self.has("RecvMsgMulti")
    }

    /// Picks the backend, honouring `RINGCAST_BACKEND` (`uring`, `io_uring`, `mmsg`).
    /// Forcing io_uring where it is unavailable is an error, not a silent fallback.
    pub fn choose(&self) -> Result<BackendReport, IoError> {
        let forced = std::env::var(BACKEND_ENV).ok();
        self.choose_with(forced.as_deref())
    }

    /// [`Probe::choose`] for a node whose threading resolved to inline (`inline`) or
    /// to agent threads. Inline, the application's thread does the I/O one wake-up at
    /// a time: a blocking `recvmmsg` returns with the datagram in one syscall and a
    /// lone datagram goes with one `send`, where io_uring adds its enter, task work
    /// and completion handling — measured lower latency and less CPU per message at
    /// 10k and 100k msg/s and no less throughput at full speed
    /// (`results/2026-12-01T14-15-40Z`). So inline gets the syscall backend unless
    /// `RINGCAST_BACKEND` says otherwise; agent threads get io_uring where it works.
    pub fn choose_for(&self, inline: bool) -> Result<BackendReport, IoError> {
        let forced = std::env::var(BACKEND_ENV).ok();
        self.choose_for_with(inline, forced.as_deref())
    }

    /// [`Probe::choose_for`] with the environment value passed in (`None` = unset).
    pub fn choose_for_with(
        &self,
        inline: bool,
        forced: Option<&str>,
    ) -> Result<BackendReport, IoError> {
        let r = self.choose_with(forced)?;
        let forced = forced.is_some_and(|v| !v.trim().is_empty());
        if !inline || forced || r.kind != BackendKind::Uring {
            return Ok(r);
        }
        Ok(BackendReport {
            kind: BackendKind::Mmsg,
            reason: format!(
                "inline threading: the application's thread does one syscall per wake-up ({} — for agent threads)",
                r.reason
            ),
            multishot: false,
            offload: r.offload,
        })
    }

    /// [`Probe::choose`] with the environment value passed in (`None` = unset).
    pub fn choose_with(&self, forced: Option<&str>) -> Result<BackendReport, IoError> {
        let forced = forced.map(str::trim).filter(|s| !s.is_empty());
        self.choose_by(forced.map(|v| (v, format!("{BACKEND_ENV}={v}"))))
    }

    /// The backend the application's code asked for (`Config::backend`), said so in
    /// the reason (not as if the environment had forced it).
    pub fn choose_in_code(&self, kind: BackendKind) -> Result<BackendReport, IoError> {
        self.choose_named(kind, format!("Config::backend({kind})"))
    }

    /// The backend `by` asked for (a configuration file, the code), named so in the
    /// reason: "forced by {by}".
    pub fn choose_named(&self, kind: BackendKind, by: String) -> Result<BackendReport, IoError> {
        let v = match kind {
            BackendKind::Uring => "uring",
            BackendKind::Mmsg => "mmsg",
        };
        self.choose_by(Some((v, by)))
    }

    /// `forced`: the backend's name and who forced it.
    fn choose_by(&self, forced: Option<(&str, String)>) -> Result<BackendReport, IoError> {
        let report = match forced {
            Some((v, by)) => match v.parse::<BackendKind>()? {
                BackendKind::Mmsg => BackendReport {
                    kind: BackendKind::Mmsg,
                    reason: format!("forced by {by}"),
                    multishot: false,
                    offload: Default::default(),
                },
                BackendKind::Uring if self.uring_ok => BackendReport {
                    kind: BackendKind::Uring,
                    reason: format!("forced by {by} ({})", self.uring_detail()),
                    multishot: self.multishot(),
                    offload: Default::default(),
                },
                BackendKind::Uring => {
                    return Err(IoError::Unavailable {
                        kind: BackendKind::Uring,
                        reason: format!(
                            "forced by {by} but {}",
                            self.uring_error
                                .as_deref()
                                .unwrap_or("io_uring is unusable")
                        ),
                    })
                }
            },
            None if self.uring_ok => BackendReport {
                kind: BackendKind::Uring,
                reason: format!("io_uring available ({})", self.uring_detail()),
                multishot: self.multishot(),
                offload: Default::default(),
            },
            None => BackendReport {
                kind: BackendKind::Mmsg,
                reason: format!(
                    "io_uring unavailable: {}",
                    self.uring_error.as_deref().unwrap_or("unknown error")
                ),
                multishot: false,
                offload: Default::default(),
            },
        };
        tracing::debug!(backend = %report.kind, reason = %report.reason, "backend chosen");
        Ok(report)
    }

    /// UDP GSO for `doctor`: available or why not, on or off here.
    pub fn gso_summary(&self) -> String {
        let old = if super::offload::loop_safe_kernel(&self.kernel) {
            ""
        } else {
            "; off while multicast loop is on (kernel < 5.0)"
        };
        offload_line(self.gso_error.as_deref(), super::offload::GSO_ENV, "gso")
            + ", up to 64 datagrams per send"
            + old
    }

    /// UDP GRO for `doctor`.
    pub fn gro_summary(&self) -> String {
        offload_line(self.gro_error.as_deref(), super::offload::GRO_ENV, "gro")
            + ", 64 KiB receive buffers"
    }

    /// Busy polling for `doctor`: off unless asked, what the kernel would allow.
    pub fn busy_poll_summary(&self) -> String {
        let v = |x: Option<u64>| x.map_or("unknown".to_string(), |v| v.to_string());
        format!(
            "off unless Config::busy_poll(..); net.core.busy_read={} busy_poll={} µs; {}",
            v(self.busy_read),
            v(self.busy_poll),
            if self.net_admin {
                "CAP_NET_ADMIN: any SO_BUSY_POLL value is accepted"
            } else {
                "no CAP_NET_ADMIN: SO_BUSY_POLL above busy_read is refused"
            }
        )
    }

    fn uring_detail(&self) -> &'static str {
        if self.multishot() {
            "multishot recvmsg + buffer ring"
        } else {
            "no multishot recvmsg / buffer ring: plain RecvMsg"
        }
    }
}

pub(crate) fn kernel_release() -> String {
    // SAFETY: `utsname` is plain old data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_owned();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn read_proc_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(uring_ok: bool, multishot: bool) -> Probe {
        Probe {
            kernel: "test".into(),
            io_uring_disabled_sysctl: Some(0),
            uring_ok,
            uring_error: (!uring_ok).then(|| "Operation not permitted (os error 1)".into()),
            opcodes: vec![("RecvMsgMulti", multishot)],
            buf_ring: multishot,
            rmem_max: None,
            wmem_max: None,
            gso_error: None,
            gro_error: Some("Protocol not available (os error 92)".into()),
            busy_read: Some(0),
            busy_poll: Some(0),
            net_admin: false,
        }
    }

    #[test]
    fn run_reports_uring_on_this_host() {
        let p = run();
        assert!(!p.kernel.is_empty());
        assert!(p.uring_ok, "io_uring unusable here: {:?}", p.uring_error);
        assert!(p.has("Send") && p.has("RecvMsg"));
        assert!(
            p.multishot(),
            "expected multishot recvmsg on this kernel: {p:?}"
        );
        assert!(p.rmem_max.is_some() && p.wmem_max.is_some());
        // (net.core.busy_read is not visible inside a network namespace.)
        assert!(p.gso_error.is_none() && p.gro_error.is_none(), "{p:?}");
        let r = p.choose_with(None).expect("choose");
        assert_eq!(r.kind, BackendKind::Uring);
        assert!(r.multishot);
        assert_eq!(
            r.reason,
            "io_uring available (multishot recvmsg + buffer ring)"
        );
    }

    #[test]
    fn inline_threading_gets_the_syscall_backend_unless_forced() {
        let p = fake(true, true);
        let r = p.choose_for_with(true, None).expect("inline");
        assert_eq!(r.kind, BackendKind::Mmsg);
        assert!(r.reason.starts_with("inline threading:"), "{}", r.reason);
        assert!(r.reason.contains("io_uring available"), "{}", r.reason);
        assert_eq!(
            p.choose_for_with(false, None).expect("agents").kind,
            BackendKind::Uring
        );
        for v in ["uring", "io_uring"] {
            let r = p.choose_for_with(true, Some(v)).expect("forced");
            assert_eq!(r.kind, BackendKind::Uring, "{v}");
        }
        assert_eq!(
            p.choose_for_with(true, Some("  ")).expect("blank").kind,
            BackendKind::Mmsg
        );
        // Without io_uring both get the fallback, with the probe's reason.
        let none = fake(false, false);
        for inline in [true, false] {
            let r = none.choose_for_with(inline, None).expect("fallback");
            assert_eq!(r.kind, BackendKind::Mmsg);
            assert!(!r.reason.starts_with("inline threading"), "{}", r.reason);
        }
    }

    #[test]
    fn a_backend_chosen_in_code_says_so() {
        let p = fake(true, true);
        let r = p.choose_in_code(BackendKind::Mmsg).expect("mmsg");
        assert_eq!(r.kind, BackendKind::Mmsg);
        assert!(!r.reason.contains(BACKEND_ENV), "{}", r.reason);
        assert!(
            r.reason.starts_with("forced by Config::backend("),
            "{}",
            r.reason
        );
        let r = p.choose_in_code(BackendKind::Uring).expect("uring");
        assert_eq!(r.kind, BackendKind::Uring);
        assert!(!r.reason.contains(BACKEND_ENV), "{}", r.reason);
    }

    #[test]
    fn env_forces_backend() {
        let p = fake(true, true);
        let r = p.choose_with(Some("mmsg")).expect("mmsg");
        assert_eq!(r.kind, BackendKind::Mmsg);
        assert_eq!(r.reason, "forced by RINGCAST_BACKEND=mmsg");
        for v in ["uring", "io_uring"] {
            let r = p.choose_with(Some(v)).expect("uring");
            assert_eq!(r.kind, BackendKind::Uring);
            assert!(r
                .reason
                .starts_with(&format!("forced by RINGCAST_BACKEND={v}")));
        }
        assert_eq!(
            p.choose_with(Some("")).expect("empty").kind,
            BackendKind::Uring
        );
        assert!(matches!(
            p.choose_with(Some("epoll")),
            Err(IoError::InvalidBackend(_))
        ));
    }

    #[test]
    fn unavailable_uring_falls_back_or_errors_when_forced() {
        let p = fake(false, false);
        let r = p.choose_with(None).expect("fallback");
        assert_eq!(r.kind, BackendKind::Mmsg);
        assert!(r
            .reason
            .starts_with("io_uring unavailable: Operation not permitted"));
        assert!(matches!(
            p.choose_with(Some("uring")),
            Err(IoError::Unavailable {
                kind: BackendKind::Uring,
                ..
            })
        ));
        let r = fake(true, false).choose_with(None).expect("no multishot");
        assert_eq!(r.kind, BackendKind::Uring);
        assert!(!r.multishot);
    }

    #[test]
    fn offload_summaries_say_why_not() {
        let p = fake(true, true);
        assert!(p
            .gro_summary()
            .starts_with("unavailable (kernel refused: Protocol not available"));
        assert!(p.busy_poll_summary().contains("above busy_read is refused"));
        assert_eq!(
            offload_line(None, "RINGCAST_TEST_UNSET_VAR", "gso"),
            "available, on by default (off: Config::gso(false) or RINGCAST_TEST_UNSET_VAR=0)"
        );
    }

    #[test]
    fn kind_display_and_parse() {
        assert_eq!(BackendKind::Uring.to_string(), "io_uring");
        assert_eq!(BackendKind::Mmsg.to_string(), "mmsg");
        assert_eq!(
            "uring".parse::<BackendKind>().ok(),
            Some(BackendKind::Uring)
        );
        assert_eq!(
            "io_uring".parse::<BackendKind>().ok(),
            Some(BackendKind::Uring)
        );
        assert_eq!("MMSG".parse::<BackendKind>().ok(), Some(BackendKind::Mmsg));
        assert!("x".parse::<BackendKind>().is_err());
    }
}
