//! A socket and its sock.

use super::*;
use crate::off;

impl SocketPtr {
    #[inline(always)]
    pub fn sk(self) -> Option<SockPtr> {
        member_ptr(self.0, off!(socket_sk)).map(SockPtr)
    }
}

impl SockPtr {
    /// AF_* (`sk_family`).
    #[inline(always)]
    pub fn family(self) -> Option<u16> {
        member(self.0, off!(sk_family))
    }

    /// SOCK_* (`sk_type`).
    #[inline(always)]
    pub fn sock_type(self) -> Option<u16> {
        member(self.0, off!(sk_type))
    }

    /// IPPROTO_* (`sk_protocol`).
    #[inline(always)]
    pub fn protocol(self) -> Option<u16> {
        member(self.0, off!(sk_protocol))
    }

    /// The local port, host order (`skc_num`).
    #[inline(always)]
    pub fn num(self) -> Option<u16> {
        member(self.0, off!(sk_num))
    }

    /// The peer's port, network order (`skc_dport`).
    #[inline(always)]
    pub fn dport(self) -> Option<u16> {
        member(self.0, off!(sk_dport))
    }

    /// The local IPv4 address (`skc_rcv_saddr`).
    #[inline(always)]
    pub fn rcv_saddr(self) -> Option<[u8; 4]> {
        member(self.0, off!(sk_rcv_saddr))
    }

    /// The peer's IPv4 address (`skc_daddr`).
    #[inline(always)]
    pub fn daddr(self) -> Option<[u8; 4]> {
        member(self.0, off!(sk_daddr))
    }

    /// The local IPv6 address (`skc_v6_rcv_saddr`).
    #[inline(always)]
    pub fn v6_rcv_saddr(self) -> Option<[u8; 16]> {
        member(self.0, off!(sk_v6_rcv_saddr))
    }

    /// The peer's IPv6 address (`skc_v6_daddr`).
    #[inline(always)]
    pub fn v6_daddr(self) -> Option<[u8; 16]> {
        member(self.0, off!(sk_v6_daddr))
    }

    /// A unix socket's peer (`unix_sock.peer`, the sock first in struct
    /// unix_sock): for a connected stream socket, the server's end, which
    /// carries the path of the socket connected to.
    #[inline(always)]
    pub fn unix_peer(self) -> Option<SockPtr> {
        let off = off!(unix_sock_peer);
        if off == 0 {
            return None;
        }
        member_ptr(self.0, off).map(SockPtr)
    }

    /// The socket file a bound unix socket is (`unix_sock.path.dentry`;
    /// None for an unbound or abstract socket).
    #[inline(always)]
    pub fn unix_path(self) -> Option<DentryPtr> {
        let off = off!(unix_sock_path);
        if off == 0 {
            return None;
        }
        member_ptr(self.0, off + off!(path_dentry)).map(DentryPtr)
    }
}
