//! Types shared with `bpf/cgroup.bpf.c` (the ebpf-cgroup backend's connect and packet-drop programs).
//!
//! The C side pins the same layout with `_Static_assert`s; the tests below pin this side.

/// [`ConnKey::family`]: any address (the address is all zero).
pub const FD_CONN_ANY: u8 = 0;
/// [`ConnKey::family`]: an IPv4 address in `addr[0]`.
pub const FD_CONN_INET: u8 = 4;
/// [`ConnKey::family`]: an IPv6 address.
pub const FD_CONN_INET6: u8 = 6;

/// Names of the programs in the object, as `bpftool prog show` lists them.
pub const CONNECT4_PROGRAM: &str = "fd_connect4";
/// See [`CONNECT4_PROGRAM`].
pub const CONNECT6_PROGRAM: &str = "fd_connect6";
/// Destination → deciding rule (`struct fd_conn_key` → `struct fd_conn_verdict`).
pub const RULES_MAP: &str = "fd_conn_rules";
/// Rule id (`u32`) → times it decided a connect (`u64`).
pub const HITS_MAP: &str = "fd_conn_hits";
/// Ring buffer of [`ConnEvent`]s.
pub const EVENTS_MAP: &str = "fd_conn_events";
/// The `cgroup_skb/egress` program that drops a partition's outgoing packets.
pub const SKB_EGRESS_PROGRAM: &str = "fd_skb_egress";
/// The `cgroup_skb/ingress` program that drops a partition's incoming packets.
pub const SKB_INGRESS_PROGRAM: &str = "fd_skb_ingress";
/// Peer ([`ConnKey`]) → [`DropRule`]: whose TCP and UDP packets the skb programs drop.
pub const DROP_PEERS_MAP: &str = "fd_drop_peers";
/// Rule id (`u32`) → packets dropped (`u64`).
pub const DROP_HITS_MAP: &str = "fd_drop_hits";

/// [`DropRule::directions`]: drop packets sent to the peer.
pub const FD_DROP_EGRESS: u32 = 1;
/// [`DropRule::directions`]: drop packets received from the peer.
pub const FD_DROP_INGRESS: u32 = 2;

/// A destination key of `fd_conn_rules` (`struct fd_conn_key`).
///
/// The address is in network byte order (an IPv4 address in `addr[0]`, the rest zero), the port in host
/// byte order. Family [`FD_CONN_ANY`] with a zero address means any address; port 0 means any port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    /// The address, as the kernel's `user_ip4`/`user_ip6` words.
    pub addr: [u32; 4],
    /// The port, host byte order; 0 = any.
    pub port: u16,
    /// [`FD_CONN_ANY`], [`FD_CONN_INET`] or [`FD_CONN_INET6`].
    pub family: u8,
    /// Always 0 (part of the hash key).
    pub _pad: u8,
}

impl ConnKey {
    /// The key for `ip` (any address when `None`) and `port` (any port when 0).
    pub fn new(ip: Option<std::net::IpAddr>, port: u16) -> ConnKey {
        let (family, addr) = match ip {
            None => (FD_CONN_ANY, [0; 4]),
            Some(std::net::IpAddr::V4(v4)) => {
                (FD_CONN_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0])
            }
            Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => (FD_CONN_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
                None => {
                    let o = v6.octets();
                    let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                    (FD_CONN_INET6, [word(0), word(4), word(8), word(12)])
                }
            },
        };
        ConnKey {
            addr,
            port,
            family,
            _pad: 0,
        }
    }

    /// The address this key names, `None` for any.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        let bytes = |w: u32| w.to_ne_bytes();
        match self.family {
            FD_CONN_INET => Some(std::net::Ipv4Addr::from(bytes(self.addr[0])).into()),
            FD_CONN_INET6 => {
                let mut o = [0u8; 16];
                for (i, w) in self.addr.iter().enumerate() {
                    o[i * 4..i * 4 + 4].copy_from_slice(&bytes(*w));
                }
                Some(std::net::Ipv6Addr::from(o).into())
            }
            _ => None,
        }
    }
}

/// What the deciding rule does (`struct fd_conn_verdict`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnVerdict {
    /// faultd's rule id.
    pub rule_id: u32,
    /// Positive errno to fail `connect` with; 0 lets it through.
    pub errno: i32,
}

/// Which packets of a peer to drop (`struct fd_drop_rule`, the value of `fd_drop_peers`).
///
/// The peer is a [`ConnKey`]: an address and port (family [`FD_CONN_ANY`]: any address, that port).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropRule {
    /// faultd's rule id (the partition's connect rule), for the per-rule drop counter.
    pub rule_id: u32,
    /// [`FD_DROP_EGRESS`] and/or [`FD_DROP_INGRESS`].
    pub directions: u32,
}

/// One decision, from the `fd_conn_events` ring buffer (`struct fd_conn_event`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// The deciding rule.
    pub rule_id: u32,
    /// The errno returned, 0 for an allow.
    pub errno: i32,
    /// Thread group id of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// Destination address, as in [`ConnKey`].
    pub addr: [u32; 4],
    /// Destination port, host byte order.
    pub port: u16,
    /// [`FD_CONN_INET`] or [`FD_CONN_INET6`].
    pub family: u8,
    /// Always 0.
    pub _pad: u8,
    /// Always 0.
    pub _pad2: u32,
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) of the decision.
    pub ts_ns: u64,
}

impl ConnEvent {
    /// The destination as a socket address.
    pub fn destination(&self) -> Option<std::net::SocketAddr> {
        let key = ConnKey {
            addr: self.addr,
            port: self.port,
            family: self.family,
            _pad: 0,
        };
        key.ip().map(|ip| std::net::SocketAddr::new(ip, self.port))
    }

    /// Reads an event from a ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<ConnEvent> {
        if bytes.len() < size_of::<ConnEvent>() {
            return None;
        }
        // SAFETY: the length is checked, ConnEvent is plain old data valid for any bit pattern, and
        // read_unaligned has no alignment requirement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn layouts_match_the_c_side() {
        assert_eq!(size_of::<ConnKey>(), 20);
        assert_eq!(align_of::<ConnKey>(), 4);
        assert_eq!(offset_of!(ConnKey, port), 16);
        assert_eq!(offset_of!(ConnKey, family), 18);
        assert_eq!(size_of::<ConnVerdict>(), 8);
        assert_eq!(offset_of!(ConnVerdict, errno), 4);
        assert_eq!(size_of::<ConnEvent>(), 48);
        assert_eq!(offset_of!(ConnEvent, ts_ns), 40);
        assert_eq!(offset_of!(ConnEvent, pid), 8);
        assert_eq!(offset_of!(ConnEvent, tid), 12);
        assert_eq!(offset_of!(ConnEvent, addr), 16);
        assert_eq!(offset_of!(ConnEvent, port), 32);
        assert_eq!(offset_of!(ConnEvent, family), 34);
        assert_eq!(size_of::<DropRule>(), 8);
        assert_eq!(align_of::<DropRule>(), 4);
        assert_eq!(offset_of!(DropRule, directions), 4);
    }

    #[test]
    fn the_object_has_the_drop_programs_and_maps() {
        let elf = crate::CGROUP_OBJ;
        for name in [
            SKB_EGRESS_PROGRAM,
            SKB_INGRESS_PROGRAM,
            DROP_PEERS_MAP,
            DROP_HITS_MAP,
            "cgroup_skb/egress",
            "cgroup_skb/ingress",
        ] {
            assert!(
                elf.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} is not in cgroup.bpf.o"
            );
        }
    }

    #[test]
    fn keys_hold_addresses_in_network_order() {
        let k = ConnKey::new(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))), 5432);
        assert_eq!(k.family, FD_CONN_INET);
        assert_eq!(k.addr[0].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(k.ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mapped = ConnKey::new(Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())), 5432);
        assert_eq!(
            mapped, k,
            "IPv4-mapped addresses are IPv4 keys, as connect6 makes them"
        );
        let v6 = ConnKey::new(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), 1);
        assert_eq!(v6.family, FD_CONN_INET6);
        assert_eq!(v6.addr[3].to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(v6.ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ConnKey::new(None, 80).family, FD_CONN_ANY);
        assert_eq!(ConnKey::new(None, 80).ip(), None);
    }

    #[test]
    fn events_decode_their_destination() {
        let key = ConnKey::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 5433);
        let event = ConnEvent {
            rule_id: 7,
            errno: 111,
            pid: 1,
            tid: 2,
            addr: key.addr,
            port: 5433,
            family: FD_CONN_INET,
            _pad: 0,
            _pad2: 0,
            ts_ns: 42,
        };
        // SAFETY: ConnEvent is plain old data; the slice covers exactly one value.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<ConnEvent>())
        };
        let back = ConnEvent::from_bytes(bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.destination().unwrap().to_string(), "127.0.0.1:5433");
        assert!(ConnEvent::from_bytes(&bytes[..35]).is_none());
    }
}
