//! Taint and the way data leaves a tainted process: file writes and
//! closes, sends, renames, links and unlinks.

use crate::{ARG_BUF, Header, KPath, PATH_BUF, header::record};

/// Why a process is tainted (bits of `Taint::flags`).
/// It opened a tracked file (key, dump or derived copy) for reading.
pub const TAINT_FILE: u32 = 1;
/// It read or attached to a protected process's memory.
pub const TAINT_MEMORY: u32 = 2;
/// It read from a pipe a tainted process had written.
pub const TAINT_PIPE: u32 = 4;
/// It is the core_pattern pipe helper (it receives core dumps).
pub const TAINT_HELPER: u32 = 8;

/// What a process has read that its writes and sends may carry.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Taint {
    /// TAINT_* bits.
    pub flags: u32,
    /// Protected process whose memory it read (TAINT_MEMORY).
    pub src_pid: u32,
    /// Tracked file it read (TAINT_FILE), kernel dev_t encoding.
    pub src_dev: u32,
    /// The process that wrote the pipe it read (TAINT_PIPE).
    pub via_pid: u32,
    pub src_ino: u64,
    /// Hops from the origin: 0 for a process that read a key, a dump or a
    /// protected process's memory itself (or a tracked copy of generation
    /// 0); each file written, pipe read or child forked adds one.
    pub generation: u32,
    /// i_generation of the source file (TAINT_FILE).
    pub src_igen: u32,
}
const _: () = assert!(core::mem::size_of::<Taint>() == 32);

/// Why taint or tracking stopped (index of the kernel's `FLOW_STOPPED`
/// counters, `keysentry_flow_stopped_total{reason}`).
pub const STOP_EXEC: u32 = 0;
pub const STOP_GENERATION: u32 = 1;
pub const STOP_ALLOWLIST: u32 = 2;
pub const STOP_MAP_FULL: u32 = 3;
pub const STOP_STALE_INODE: u32 = 4;
pub const STOP_OWN_KEY: u32 = 5;
/// Slots of `FLOW_STOPPED`.
pub const STOP_SLOTS: u32 = 8;
/// Metric label of each STOP_* reason kept in the kernel.
pub const STOP_REASONS: [&str; 6] = [
    "exec",
    "generation",
    "allowlist",
    "map_full",
    "stale_inode",
    "own_key",
];

/// How data left a tainted process (`via` of writes and sends).
pub const VIA_WRITE: u32 = 1;
pub const VIA_SEND: u32 = 2;
pub const VIA_SENDFILE: u32 = 3;
pub const VIA_COPY_FILE_RANGE: u32 = 4;
pub const VIA_SPLICE: u32 = 5;
pub const VIA_CLONE: u32 = 6;
pub const VIA_IO_URING: u32 = 7;
pub const VIA_MMAP: u32 = 8;

/// A tainted process wrote a regular file: the first write per (process,
/// file); the file may become a dump or a derived copy.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct FileWriteEvent {
    pub hdr: Header,
    pub taint: Taint,
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    /// Bytes the syscall wrote.
    pub bytes: i64,
    /// The written inode's i_generation.
    pub igen: u32,
    /// file f_mode of the fd written (FMODE_CREATED: the writer created
    /// the file with that open).
    pub fmode: u32,
    pub path: KPath,
}
const _: () = assert!(core::mem::size_of::<FileWriteEvent>() == 56 + 32 + 32 + 8 + 8 + PATH_BUF);
record!(FileWriteEvent: FileWrite, Critical);

/// A tainted process closed a file it had written.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct FileCloseEvent {
    pub hdr: Header,
    pub ino: u64,
    pub dev: u32,
    pub fd: i32,
    pub igen: u32,
    pub _pad: u32,
    /// The file's size (i_size) at the close.
    pub size: i64,
    /// Bytes this process wrote to it since its first reported write.
    pub written: u64,
}
const _: () = assert!(core::mem::size_of::<FileCloseEvent>() == 96);
record!(FileCloseEvent: FileClose, Bulk);

/// A tainted process sent on a socket (the first send per socket).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct NetSendEvent {
    pub hdr: Header,
    pub taint: Taint,
    pub bytes: i64,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    /// AF_* of the socket.
    pub family: u16,
    /// SOCK_* type.
    pub sock_type: u16,
    /// IPPROTO_* (or the family's protocol number).
    pub protocol: u16,
    /// Local and remote port, host order (connected or bound sockets).
    pub sport: u16,
    pub dport: u16,
    pub _pad: [u16; 3],
    /// Local and remote address: 4 bytes for AF_INET, 16 for AF_INET6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The destination sockaddr the syscall passed (sendto, sendmsg), raw.
    pub dest_len: u32,
    pub _pad2: u32,
    pub dest: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<NetSendEvent>() == 56 + 32 + 16 + 16 + 32 + 8 + 32);
record!(NetSendEvent: NetSend, Critical);

/// PathChangeEvent::op values.
pub const PATH_OP_RENAME: u32 = 1;
pub const PATH_OP_LINK: u32 = 2;
/// unlink/unlinkat of a name: `old` is the name, `new` empty.
pub const PATH_OP_UNLINK: u32 = 3;

/// A successful rename or link whose source's or destination's final
/// component names a watched or tracked file or matches a key-name pattern
/// (a rename over a tracked file ends it), or an unlink of such a name;
/// user space resolves it.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct PathChangeEvent {
    pub hdr: Header,
    pub ret: i64,
    /// PATH_OP_* value.
    pub op: u32,
    pub flags: u32,
    pub old_dfd: i32,
    pub new_dfd: i32,
    pub old_len: u32,
    pub new_len: u32,
    pub old: [u8; ARG_BUF],
    pub new: [u8; ARG_BUF],
}
const _: () = assert!(core::mem::size_of::<PathChangeEvent>() == 56 + 32 + 2 * ARG_BUF);
record!(PathChangeEvent: PathChange, Critical);

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Taint {}
