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
/// The taint comes from a real secret: a configured key path (or a file
/// in a watched key directory), a protected process's memory, the core
/// helper, or a tracked file marked `WATCH_STRONG` (a dump, or a copy of
/// such a source). Nobody can create it without an alert, so it may use
/// `TAINT_RESERVE` when `TAINTED` is full; a taint without it (a file
/// matched by name only, and what it was handed on to) may not. Carried
/// to pipes and children like the other bits.
pub const TAINT_STRONG: u32 = 0x100;

/// Slots of the kernel's `INSERT_FAILED` counters, one per map whose
/// entries decide detection (`keysentry_map_insert_failures_total{map}`,
/// label `INSERT_FAIL_MAPS[slot]`). User space counts its own failed
/// inserts into the same maps under the same slots
/// (`kernel::control::count_insert_failed`). A refusal by a full hash map
/// (or, rarely, an LRU map that could not free an entry) costs what
/// `INSERT_FAIL_COSTS[slot]` says; the agent warns with it once per tick
/// per map whose count moved. FOLD and CRIT_RATE are not counted: a fold
/// or rate entry that could not be made costs a record more, never an
/// alert.
///
/// `TAINTED`: a taint refused by a full `TAINTED` (a name-only one, which
/// may not use the reserve); `TAINT_RESERVE`: a strong taint refused by a
/// full `TAINT_RESERVE` too (an `events-lost` alert, not only a warning).
pub const INSERT_FAIL_TAINTED: u32 = 0;
pub const INSERT_FAIL_RESERVE: u32 = 1;
pub const INSERT_FAIL_WATCHED: u32 = 2;
pub const INSERT_FAIL_WATCHED_NAMES: u32 = 3;
pub const INSERT_FAIL_PROTECTED: u32 = 4;
pub const INSERT_FAIL_PROTECTED_THREADS: u32 = 5;
pub const INSERT_FAIL_ALLOW_BYPASS: u32 = 6;
pub const INSERT_FAIL_GROUP_EXITED: u32 = 7;
pub const INSERT_FAIL_TAINTED_PIPES: u32 = 8;
pub const INSERT_FAIL_WRITTEN: u32 = 9;
pub const INSERT_FAIL_SENT: u32 = 10;
pub const INSERT_FAIL_ENVIRON_READS: u32 = 11;
pub const INSERT_FAIL_FILE_OPENERS: u32 = 12;
pub const INSERT_FAIL_FD_RECEIVED: u32 = 13;
pub const INSERT_FAIL_FD_REPORTED: u32 = 14;
pub const INSERT_FAIL_ALLOWED: u32 = 15;
pub const INSERT_FAIL_ALLOW_EXES: u32 = 16;
pub const INSERT_FAIL_WRITERS: u32 = 17;
pub const INSERT_FAIL_AGENT_SOCKS: u32 = 18;
pub const INSERT_FAIL_SLOTS: u32 = 19;
/// Map label of each INSERT_FAIL_* slot.
pub const INSERT_FAIL_MAPS: [&str; INSERT_FAIL_SLOTS as usize] = [
    "TAINTED",
    "TAINT_RESERVE",
    "WATCHED",
    "WATCHED_NAMES",
    "PROTECTED",
    "PROTECTED_THREADS",
    "ALLOW_BYPASS",
    "GROUP_EXITED",
    "TAINTED_PIPES",
    "WRITTEN",
    "SENT",
    "ENVIRON_READS",
    "FILE_OPENERS",
    "FD_RECEIVED",
    "FD_REPORTED",
    "ALLOWED",
    "ALLOW_EXES",
    "WRITERS",
    "AGENT_SOCKS",
];
/// What a refused insert into each INSERT_FAIL_* map costs (the warning's
/// text after "<map> full: ").
pub const INSERT_FAIL_COSTS: [&str; INSERT_FAIL_SLOTS as usize] = [
    "a process that read a file matched by name only is not tainted, so what it writes or sends is not followed",
    "a process that read a key path's key, a dump or a protected process's memory is not tainted (an events-lost alert follows)",
    "a key path's file or a copy of tracked material is not watched in the kernel: its opens are not reported and its readers are not tainted",
    "a watched file's name is not in the rename/link/unlink filter: such a change to it may go unreported",
    "a new process of a protected program is not protected in the kernel: access to its memory is neither denied nor tainting",
    "a thread of a protected process is not known to the kernel: access through that thread id falls back to user space (no denial, no taint)",
    "a process of an allowlisted program that lost its allowance (loader variables, traced) may keep it in the kernel's LSM checks",
    "an exit of a multi-threaded process may be reported twice",
    "a pipe a tainted process wrote is not followed: its readers are not tainted",
    "a file a tainted process wrote is reported again at each write, or not marked as past the last generation",
    "a tainted process's send on a socket is reported again at each send",
    "a process's /proc/<pid>/environ reads are not counted: proc-environ-read may miss it",
    "the opener of a watched file is not recorded: an access through a passed descriptor may be taken for its opener's",
    "a watched file received over SCM_RIGHTS or pidfd_getfd is not recorded as received",
    "an access to a watched file through a descriptor the process did not open is reported again",
    "an [[allow]] entry is not in the kernel: the allowed program's reads are tainted and may be denied",
    "an [[allow]]ed program's execs are not checked for loader variables or tracing: a run with LD_PRELOAD may keep its allowance in the kernel",
    "a tainted process that wrote a file is not recorded as a writer: every tainted process's closes take the slow path from then on (nothing is missed)",
    "a socket a key agent bound is not watched: connections to it by other users are not reported",
];

/// Slots of the kernel's `LRU_CHURN` counters, one per LRU map. An LRU
/// map makes room by evicting its least recently used entry without a
/// word, so the kernel counts, per CPU, the keys it added
/// (`lru_added(slot)`) and removed (`lru_removed(slot)`) in each; user
/// space counts its own removals, and every entry that is neither there
/// nor removed was evicted: `keysentry_map_evictions_total{map}`
/// (`kernel::lru` in the agent).
pub const LRU_FOLD: u32 = 0;
pub const LRU_CRIT_RATE: u32 = 1;
pub const LRU_ENVIRON_READS: u32 = 2;
pub const LRU_GROUP_EXITED: u32 = 3;
pub const LRU_TAINTED_PIPES: u32 = 4;
pub const LRU_WRITTEN: u32 = 5;
pub const LRU_SENT: u32 = 6;
pub const LRU_FILE_OPENERS: u32 = 7;
pub const LRU_FD_RECEIVED: u32 = 8;
pub const LRU_FD_REPORTED: u32 = 9;
pub const LRU_SLOTS: u32 = 10;
/// Map label of each LRU_* slot.
pub const LRU_MAPS: [&str; LRU_SLOTS as usize] = [
    "FOLD",
    "CRIT_RATE",
    "ENVIRON_READS",
    "GROUP_EXITED",
    "TAINTED_PIPES",
    "WRITTEN",
    "SENT",
    "FILE_OPENERS",
    "FD_RECEIVED",
    "FD_REPORTED",
];
/// Index in `LRU_CHURN` of the count of keys added to LRU map `slot`.
pub const fn lru_added(slot: u32) -> u32 {
    slot * 2
}
/// Index in `LRU_CHURN` of the count of keys removed from LRU map `slot`.
pub const fn lru_removed(slot: u32) -> u32 {
    slot * 2 + 1
}

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
// SAFETY: `path` is its KPath.
unsafe impl crate::Compact for FileWriteEvent {
    const COMPACTION: crate::Compaction =
        crate::Compaction::of::<FileWriteEvent>(core::mem::offset_of!(FileWriteEvent, path));
}

/// How the writer's descriptor of a written file went (`FileCloseEvent::how`).
pub const CLOSE_BY_CLOSE: u32 = 0;
pub const CLOSE_BY_CLOSE_RANGE: u32 = 1;
pub const CLOSE_BY_DUP2: u32 = 2;
pub const CLOSE_BY_IO_URING: u32 = 3;

/// A tainted process closed a file it had written (close, close_range,
/// dup2/dup3 over its descriptor, io_uring IORING_OP_CLOSE).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct FileCloseEvent {
    pub hdr: Header,
    pub ino: u64,
    pub dev: u32,
    pub fd: i32,
    pub igen: u32,
    /// CLOSE_BY_*: the syscall that closed the descriptor.
    pub how: u32,
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
/// symlink/symlinkat: `new` is the link made, `old` what it points to
/// (only the new name is matched).
pub const PATH_OP_SYMLINK: u32 = 4;

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
    /// The directory the new name is in, when the kernel knows it without
    /// a lookup (`PATH_BASE_KNOWN` in `base_flags`: a bare relative name,
    /// or `./name`: the working directory or `new_dfd`'s directory), so
    /// user space resolves it after the process is gone.
    pub base_dev: u32,
    pub base_flags: u32,
    pub base_ino: u64,
}
const _: () = assert!(core::mem::size_of::<PathChangeEvent>() == 56 + 32 + 2 * ARG_BUF + 16);
/// The layout before `base_*` (recordings): decoded with them zero.
pub const PATH_CHANGE_WITHOUT_BASE: usize = 56 + 32 + 2 * ARG_BUF;
/// `PathChangeEvent::base_flags`: `base_dev`/`base_ino` hold the new
/// name's directory.
pub const PATH_BASE_KNOWN: u32 = 1;
/// `PathChangeEvent::flags`: the new name's directory is named like a
/// code-loading directory (CODE_NAMES): reported for that alone.
pub const PATH_IN_CODE_DIR: u32 = 1;
record!(PathChangeEvent: PathChange, Critical);

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Taint {}
