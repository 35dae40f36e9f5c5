//! Who listens on a TCP port of the host network: the listening sockets of `/proc/net/tcp{,6}` and
//! the processes holding them (their inode among the `/proc/<pid>/fd` links).
//!
//! Used when a session shares the host network: a declared port someone else holds fails the start,
//! and a healthcheck passes only when the listener answering it belongs to the service.

use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The state `/proc/net/tcp` shows for a listening socket.
const TCP_LISTEN: &str = "0A";

/// One listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    /// The local address (unspecified for a wildcard bind).
    pub(crate) addr: IpAddr,
    /// The socket's inode.
    pub(crate) inode: u64,
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Its pid.
    pub(crate) pid: i32,
    /// Its `comm`.
    pub(crate) name: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// The listeners on `port` in the host network faultd runs in.
pub(crate) fn listeners(port: u16) -> Vec<Listener> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| parse_table(&fs::read_to_string(table).unwrap_or_default(), port))
        .collect()
}

/// The listeners of one `/proc/net/tcp` or `tcp6` text on `port`.
fn parse_table(text: &str, port: u16) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != TCP_LISTEN {
                return None;
            }
            let (addr, p) = local.split_once(':')?;
            if u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            Some(Listener {
                addr: parse_addr(addr)?,
                inode: inode.parse().ok()?,
            })
        })
        .collect()
}

/// An address of `/proc/net/tcp{,6}`: hex, each 32-bit word in host byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a listener on `listener` takes connections meant for `target` (or would stop a service
/// binding `target`): the same address, or a wildcard on either side (IPv4 and IPv6 alike).
fn overlaps(listener: IpAddr, target: IpAddr) -> bool {
    let (l, t) = (plain(listener), plain(target));
    l.is_unspecified() || t.is_unspecified() || l == t
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
fn plain(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The listener a connect to `target:port` reaches: one bound to that very address, else a wildcard.
pub(crate) fn answering(target: IpAddr, port: u16) -> Option<Listener> {
    let all = listeners(port);
    all.iter()
        .find(|l| plain(l.addr) == plain(target))
        .or_else(|| all.iter().find(|l| l.addr.is_unspecified()))
        .cloned()
}

/// Why `host:port` cannot be bound by a service: `port 8080 is in use by pid 1234 (nginx)`.
pub(crate) fn in_use(host: IpAddr, port: u16) -> Option<String> {
    let taken = listeners(port)
        .into_iter()
        .find(|l| overlaps(l.addr, host))?;
    Some(match holder(taken.inode) {
        Some(h) => format!("port {port} is in use by {h}"),
        None => format!("port {port} is in use by a process faultd cannot see"),
    })
}

/// The process holding socket `inode`, if faultd can see it.
pub(crate) fn holder(inode: u64) -> Option<Holder> {
    let pid = fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| holds(*pid, inode))?;
    let name = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into());
    Some(Holder { pid, name })
}

/// Whether process `pid` has socket `inode` among its fds.
pub(crate) fn holds(pid: i32, inode: u64) -> bool {
    let link = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == Path::new(&link)))
}

/// The pids of process group `pgid` (a service without a cgroup).
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ')'.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0\n\
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_table(tcp, 8080),
            [Listener {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                inode: 4242
            }]
        );
        assert_eq!(
            parse_table(tcp, 5432)[0].addr,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1\n";
        assert_eq!(
            parse_table(tcp6, 8080),
            [Listener {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                inode: 7
            }]
        );
    }

    #[test]
    fn wildcards_overlap_everything() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(overlaps("0.0.0.0".parse().unwrap(), lo));
        assert!(overlaps("::".parse().unwrap(), lo));
        assert!(overlaps(lo, "0.0.0.0".parse().unwrap()));
        assert!(overlaps("::ffff:127.0.0.1".parse().unwrap(), lo));
        assert!(!overlaps(other, lo));
    }

    #[test]
    fn finds_the_holder_of_a_listener_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let found = answering(lo, port).expect("the listener is in /proc/net/tcp");
        let me = std::process::id() as i32;
        assert!(holds(me, found.inode));
        assert_eq!(holder(found.inode).map(|h| h.pid), Some(me));
        let message = in_use(lo, port).unwrap();
        assert!(
            message.starts_with(&format!("port {port} is in use by pid {me} (")),
            "{message}"
        );
        drop(listener);
        assert_eq!(in_use(lo, port), None);
    }
}
