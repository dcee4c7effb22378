//! Network safety: every packet a run sends stays on loopback.
//!
//! As root the harness moves itself into a fresh network namespace (as
//! `unshare -n` does) before it starts any thread or child, and brings `lo` up
//! there; its children inherit that namespace, so nothing they send can reach a
//! real interface. Without root it stays in the host namespace, and every
//! endpoint a system opens is checked to be a loopback address (multicast groups
//! must be administratively scoped 239.255.0.0/16 on interface 127.0.0.1, TTL 0).

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::ffi::CStr;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Where the run's processes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh network namespace holding only `lo` (the harness ran as root).
    FreshNamespace,
    /// The host namespace; endpoints are restricted to loopback addresses.
    HostLoopbackOnly,
}

impl Isolation {
    pub fn describe(self) -> &'static str {
        match self {
            Isolation::FreshNamespace => {
                "fresh network namespace (unshare CLONE_NEWNET as root), only `lo` present"
            }
            Isolation::HostLoopbackOnly => {
                "host network namespace (not root); every endpoint checked to be loopback"
            }
        }
    }
}

/// Move this process into a fresh network namespace when running as root.
///
/// Must be called before any thread is started: `unshare` moves only the calling
/// thread, and children inherit the namespace of the thread that spawns them.
pub fn isolate() -> Result<Isolation> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Isolation::HostLoopbackOnly);
    }
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_default();
    if threads != "1" {
        bail!("network isolation must happen before any thread starts (threads: {threads})");
    }
    // SAFETY: unshare(CLONE_NEWNET) only changes this process's (single thread's)
    // network namespace; it takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "running as root but unshare(CLONE_NEWNET) failed ({err}); refusing to run \
             benchmarks in the host network namespace as root"
        );
    }
    set_interface_up("lo").context("bringing lo up in the new network namespace")?;
    let names = interface_names()?;
    if names != ["lo"] {
        bail!("fresh network namespace unexpectedly holds interfaces {names:?}");
    }
    Ok(Isolation::FreshNamespace)
}

/// Set IFF_UP on an interface through SIOCGIFFLAGS / SIOCSIFFLAGS.
fn set_interface_up(name: &str) -> Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is a plain C struct/union for which all-zero bytes are valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() {
        bail!("interface name too long: {name}");
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is an open socket and `ifr` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the kernel only reads `ifr`.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
    }
    Ok(())
}

/// Names of the interfaces in this process's network namespace.
pub fn interface_names() -> Result<Vec<String>> {
    // SAFETY: if_nameindex has no preconditions; it returns NULL on failure.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error()).context("if_nameindex");
    }
    let mut names = Vec::new();
    let mut p = list;
    // SAFETY: the array returned by if_nameindex ends with an entry whose
    // if_index is 0 and if_name is NULL; every other if_name is a C string. The
    // array is freed exactly once, after the last read.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// Refuse a multicast endpoint that could leave the host.
pub fn check_multicast(group: SocketAddrV4, iface: Ipv4Addr) -> Result<()> {
    let o = group.ip().octets();
    if !(o[0] == 239 && o[1] == 255) {
        bail!("multicast group {group} is outside 239.255.0.0/16; refused");
    }
    if !iface.is_loopback() {
        bail!("multicast interface {iface} is not loopback; refused");
    }
    Ok(())
}

/// Refuse a TCP endpoint that is not on loopback.
#[cfg_attr(
    not(any(feature = "zeromq", feature = "nng", feature = "zenoh")),
    allow(dead_code)
)]
pub fn check_tcp(addr: SocketAddrV4) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("tcp endpoint {addr} is not loopback; refused");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards() {
        let lo = Ipv4Addr::LOCALHOST;
        assert!(check_multicast("239.255.0.1:4000".parse().unwrap(), lo).is_ok());
        assert!(check_multicast("239.1.0.1:4000".parse().unwrap(), lo).is_err());
        assert!(check_multicast("224.0.0.1:4000".parse().unwrap(), lo).is_err());
        assert!(check_multicast(
            "239.255.0.1:4000".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        )
        .is_err());
        assert!(check_tcp("127.0.0.1:5555".parse().unwrap()).is_ok());
        assert!(check_tcp("192.168.1.1:5555".parse().unwrap()).is_err());
        assert!(interface_names().unwrap().contains(&"lo".to_owned()));
    }
}
