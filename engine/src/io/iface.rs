//! Network interface resolution: name or IPv4 address → index, address, MTU, flags.
//!
//! Uses `getifaddrs(3)` and the `SIOCGIFMTU` ioctl, both of which answer for the
//! network namespace of the calling thread (unlike `/sys/class/net`, which shows the
//! namespace sysfs was mounted in).

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use super::IoError;

/// IPv4 header (20) + UDP header (8).
const IPV4_UDP_OVERHEAD: u32 = 28;
/// Largest UDP payload over IPv4: 65535 − 20 − 8.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// A local network interface with an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name (`lo`, `eth1`; an address label such as `eth0:1` for an alias).
    pub name: String,
    /// Its IPv4 address (the first one, or the one asked for).
    pub addr: Ipv4Addr,
    /// Kernel interface index.
    pub index: u32,
    /// Link MTU in bytes.
    pub mtu: u32,
    /// `IFF_UP`.
    pub up: bool,
    /// `IFF_MULTICAST` (loopback does multicast without this flag).
    pub multicast: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
}

impl Interface {
    /// Largest UDP payload that fits one unfragmented IPv4 packet on this link:
    /// `min(mtu − 28, 65507)`.
    pub fn max_udp_payload(&self) -> usize {
        let by_mtu = self.mtu.saturating_sub(IPV4_UDP_OVERHEAD) as usize;
        by_mtu.min(MAX_UDP_PAYLOAD)
    }
}

/// Resolves `spec` — an interface name (`lo`, `eth1`) or the IPv4 address of a local
/// interface — to an [`Interface`].
pub fn resolve(spec: &str) -> Result<Interface, IoError> {
    let spec = spec.trim();
    let by_addr: Option<Ipv4Addr> = spec.parse().ok();
    list()?
        .into_iter()
        .find(|i| match by_addr {
            Some(a) => i.addr == a,
            None => i.name == spec,
        })
        .ok_or_else(|| IoError::NoSuchInterface(spec.to_owned()))
}

/// Every local interface address of family IPv4, in kernel order (an interface with
/// several IPv4 addresses appears once per address).
pub fn list() -> Result<Vec<Interface>, IoError> {
    let addrs = IfAddrs::new()?;
    // One socket for all the MTU ioctls.
    let probe_sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| IoError::sys("socket (for SIOCGIFMTU)", e))?;
    let mut out = Vec::new();
    for ifa in addrs.iter() {
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr owned by the
        // getifaddrs list, which lives as long as `addrs`.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: the family is AF_INET, so the kernel stored a `sockaddr_in` there;
        // read_unaligned copes with any alignment.
        let sin = unsafe { ifa.ifa_addr.cast::<libc::sockaddr_in>().read_unaligned() };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: `ifa_name` is a non-null NUL-terminated string owned by the list.
        let cname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        let name = cname.to_string_lossy().into_owned();
        let flags = ifa.ifa_flags;
        let index = if_index(cname);
        let mtu = if_mtu(&probe_sock, cname)?;
        out.push(Interface {
            name,
            addr,
            index,
            mtu,
            up: flags & libc::IFF_UP as u32 != 0,
            multicast: flags & libc::IFF_MULTICAST as u32 != 0,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    Ok(out)
}

/// `if_nametoindex`; 0 when unknown (an alias label resolves to its device's index).
fn if_index(name: &CStr) -> u32 {
    // SAFETY: `name` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// MTU via `ioctl(SIOCGIFMTU)` on any socket.
fn if_mtu(sock: &socket2::Socket, name: &CStr) -> Result<u32, IoError> {
    let bytes = name.to_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(IoError::NoSuchInterface(
            name.to_string_lossy().into_owned(),
        ));
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads `ifr_name` (NUL-terminated: len < IFNAMSIZ and the rest
    // is zero) and writes `ifr_mtu` inside `req`, which outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(IoError::sys(
            "ioctl(SIOCGIFMTU)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds `ifru_mtu`.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Owner of a `getifaddrs` list; frees it on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn new() -> Result<Self, IoError> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: `head` is a valid out-pointer; on success the list is ours to free.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(IoError::sys("getifaddrs", std::io::Error::last_os_error()));
        }
        Ok(IfAddrs(head))
    }

    fn iter(&self) -> impl Iterator<Item = &libc::ifaddrs> + '_ {
        let mut cur = self.0;
        std::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            // SAFETY: `cur` is a non-null node of the list owned by `self`, which is
            // borrowed for the iterator's lifetime.
            let node = unsafe { &*cur };
            cur = node.ifa_next;
            Some(node)
        })
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from getifaddrs and is freed exactly once.
            unsafe { libc::freeifaddrs(self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_lo_by_name_and_addr() {
        let by_name = resolve("lo").expect("lo");
        let by_addr = resolve("127.0.0.1").expect("127.0.0.1");
        assert_eq!(by_name, by_addr);
        assert_eq!(by_name.addr, Ipv4Addr::LOCALHOST);
        assert!(by_name.loopback);
        assert!(by_name.index > 0);
        assert_eq!(by_name.mtu, 65_536);
        assert_eq!(by_name.max_udp_payload(), 65_507);
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(matches!(
            resolve("nosuchif0"),
            Err(IoError::NoSuchInterface(_))
        ));
        assert!(matches!(
            resolve("192.0.2.77"),
            Err(IoError::NoSuchInterface(_))
        ));
    }

    #[test]
    fn max_payload_follows_mtu() {
        let mut i = resolve("lo").expect("lo");
        i.mtu = 1500;
        assert_eq!(i.max_udp_payload(), 1472);
        i.mtu = 10;
        assert_eq!(i.max_udp_payload(), 0);
    }

    #[test]
    fn list_contains_lo() {
        assert!(list().expect("list").iter().any(|i| i.name == "lo"));
    }
}
