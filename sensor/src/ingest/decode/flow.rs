//! Flow records (`sensor_common::flow`): what a tainted process writes,
//! closes and sends, and renames and links of files that may be tracked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sensor_common::{
    ARG_BUF, FileCloseEvent, FileWriteEvent, NetSendEvent, PathChangeEvent, Taint,
};

use super::{Task, cstr, kpath, read, task};

/// A tainted process's first write to a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub task: Task,
    pub taint: Taint,
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    pub bytes: i64,
    /// The written inode's i_generation.
    pub igen: u32,
    /// The writer created the file with the open it writes through.
    pub created: bool,
    pub path: Option<String>,
    pub path_truncated: bool,
}

/// A tainted process closed a file it had written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRecord {
    pub task: Task,
    pub dev: u32,
    pub ino: u64,
    pub igen: u32,
    pub fd: i32,
    /// The file's size at the close.
    pub size: i64,
    /// Bytes the process wrote to it since its first reported write.
    pub written: u64,
}

/// A tainted process's first send on a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    pub task: Task,
    pub taint: Taint,
    pub bytes: i64,
    pub fd: i32,
    pub via: u32,
    /// AF_* family, SOCK_* type, protocol number.
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub local: Option<SocketAddr>,
    /// The connected peer, or the address the send named.
    pub remote: Option<SocketAddr>,
}

/// A rename or link of a file whose name may be tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRecord {
    pub task: Task,
    /// PATH_OP_* value.
    pub op: u32,
    pub old_dfd: i32,
    pub new_dfd: i32,
    pub old: String,
    pub new: String,
    /// The new name's directory (kernel dev, inode), when the kernel knew
    /// it (a bare relative name or `./name`).
    pub base: Option<(u32, u64)>,
}

pub(super) fn file_write(buf: &[u8]) -> WriteRecord {
    let w: FileWriteEvent = read(buf);
    let (path, path_truncated) = match kpath(&w.path) {
        Some((p, t)) => (Some(p), t),
        None => (None, false),
    };
    WriteRecord {
        task: task(&w.hdr),
        taint: w.taint,
        dev: w.dev,
        ino: w.ino,
        mode: w.mode,
        fd: w.fd,
        via: w.via,
        bytes: w.bytes,
        igen: w.igen,
        created: w.fmode & sensor_common::FMODE_CREATED != 0,
        path,
        path_truncated,
    }
}

pub(super) fn file_close(buf: &[u8]) -> CloseRecord {
    let c: FileCloseEvent = read(buf);
    CloseRecord {
        task: task(&c.hdr),
        dev: c.dev,
        ino: c.ino,
        igen: c.igen,
        fd: c.fd,
        size: c.size,
        written: c.written,
    }
}

pub(super) fn net_send(buf: &[u8]) -> SendRecord {
    let n: NetSendEvent = read(buf);
    let dest = (n.dest_len > 0).then(|| sockaddr(&n.dest)).flatten();
    let (local, peer) = sock_addrs(&n);
    SendRecord {
        task: task(&n.hdr),
        taint: n.taint,
        bytes: n.bytes,
        fd: n.fd,
        via: n.via,
        family: n.family,
        sock_type: n.sock_type,
        protocol: n.protocol,
        local,
        remote: dest.or(peer),
    }
}

pub(super) fn path_change(buf: &[u8]) -> PathRecord {
    let p: PathChangeEvent = read(buf);
    let old = (p.old_len as usize).min(ARG_BUF);
    let new = (p.new_len as usize).min(ARG_BUF);
    PathRecord {
        task: task(&p.hdr),
        op: p.op,
        old_dfd: p.old_dfd,
        new_dfd: p.new_dfd,
        old: cstr(&p.old[..old]),
        new: cstr(&p.new[..new]),
        base: (p.base_flags & sensor_common::PATH_BASE_KNOWN != 0)
            .then_some((p.base_dev, p.base_ino)),
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A raw `struct sockaddr_in`/`sockaddr_in6` as user space passed it.
fn sockaddr(raw: &[u8; 32]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match family {
        AF_INET => {
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[8..24]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port))
        }
        _ => None,
    }
}

/// (local, peer) of an inet socket as the kernel holds them; the peer is
/// None when the socket is not connected.
fn sock_addrs(n: &NetSendEvent) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let ip = |b: &[u8; 16]| -> Option<IpAddr> {
        match n.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
            _ => None,
        }
    };
    let local = ip(&n.saddr).map(|a| SocketAddr::new(a, n.sport));
    let peer = ip(&n.daddr)
        .filter(|_| n.dport != 0)
        .map(|a| SocketAddr::new(a, n.dport));
    (local, peer)
}
