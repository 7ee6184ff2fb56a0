//! Opens: the [`OpenEvent`] record (key files, failed opens, /proc files)
//! with its source, match and /proc file values, and the name words the
//! kernel compares short fixed names with.

use crate::{ARG_BUF, EventKind, FoldTag, Header, KPath, Lane, SharedRecord, header::header_first};

/// Where an open was seen.
pub const SRC_OPEN: u32 = 1;
pub const SRC_OPENAT: u32 = 2;
pub const SRC_OPENAT2: u32 = 3;
pub const SRC_CREAT: u32 = 4;
pub const SRC_OPEN_BY_HANDLE: u32 = 5;
pub const SRC_IO_URING: u32 = 6;
/// An io_uring open into a fixed file slot (a direct descriptor), found
/// in the ring's fixed file table at the open's completion.
pub const SRC_IO_URING_FIXED: u32 = 7;

/// Why an open was reported (bits of `OpenEvent::matched`).
pub const MATCH_INODE: u32 = 1;
pub const MATCH_PARENT: u32 = 2;
pub const MATCH_NAME: u32 = 4;
/// A failed open whose final component names a watched file or key pattern.
pub const MATCH_FAILED_NAME: u32 = 8;
/// The inode is a tracked file (a registered dump or a derived copy).
pub const MATCH_TRACKED: u32 = 16;
/// The inode, or its directory, is a code-loading path (`WATCH_CODE`) and
/// the open may change it (`CodeWrite`).
pub const MATCH_CODE: u32 = 32;

/// A reported open (success or failure).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct OpenEvent {
    pub hdr: Header,
    /// Return value: the new fd, or -errno.
    pub ret: i64,
    /// Identity of the opened file (zero for failures).
    pub ino: u64,
    pub dev: u32,
    /// inode i_mode (zero for failures).
    pub mode: u32,
    /// file f_flags (success) or the flags argument (failure).
    pub flags: u32,
    /// dirfd argument (AT_FDCWD = -100), when the syscall has one.
    pub dfd: i32,
    /// SRC_* value.
    pub source: u32,
    /// MATCH_* bits.
    pub matched: u32,
    /// Value stored with the matched watch entry (its key_path index). For
    /// a `ProcFileOpen`: the thread group (tgid) of the process whose file
    /// it is, when the kernel resolved it (the directory named a thread of
    /// a protected process, or `/proc/<pid>/task/<tid>`), else 0.
    /// For a `RawOpen`: the device number (kernel dev_t) of the device
    /// opened (0 for /proc/kcore).
    pub watch_id: u32,
    /// Bit per key_name rule that matched.
    pub name_rules: u32,
    /// Bytes of `arg` read (0 when unavailable).
    pub arg_len: u32,
    /// The opened inode's i_generation (with (dev, ino): a reused inode
    /// number is another file).
    pub igen: u32,
    /// file f_mode (FMODE_CREATED: this open created the file).
    pub fmode: u32,
    /// The opened inode's owner (i_uid, in the initial user namespace).
    pub owner: u32,
    /// The opened inode's size (i_size) at the open.
    pub size: i64,
    /// The path argument as the process passed it.
    pub arg: [u8; ARG_BUF],
    /// The opened file's path, rebuilt from its dentry (success only).
    pub path: KPath,
    /// The fold key and the identical opens folded since the previous
    /// record of that key (last: records written before it decode
    /// without it).
    pub fold: FoldTag,
}
const _: () = assert!(core::mem::size_of::<OpenEvent>().is_multiple_of(8));
header_first!(OpenEvent);
// SAFETY: `path` is its KPath.
unsafe impl crate::Compact for OpenEvent {
    const COMPACTION: crate::Compaction =
        crate::Compaction::of::<OpenEvent>(core::mem::offset_of!(OpenEvent, path));
}
// SAFETY: repr(C), `hdr` first (checked above).
unsafe impl SharedRecord for OpenEvent {
    type Kind = OpenKind;
    const KINDS: &'static [OpenKind] = &[
        OpenKind::KeyOpen,
        OpenKind::KeyOpenFailed,
        OpenKind::ProcFileOpen,
        OpenKind::RawOpen,
        OpenKind::CodeWrite,
    ];
    const LANE: Lane = Lane::Bulk;
}

/// The kinds an [`OpenEvent`] travels as (the same values as their
/// [`EventKind`]s).
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpenKind {
    KeyOpen = EventKind::KeyOpen as u32,
    KeyOpenFailed = EventKind::KeyOpenFailed as u32,
    ProcFileOpen = EventKind::ProcFileOpen as u32,
    RawOpen = EventKind::RawOpen as u32,
    CodeWrite = EventKind::CodeWrite as u32,
}

impl From<OpenKind> for EventKind {
    #[inline(always)]
    fn from(k: OpenKind) -> EventKind {
        match k {
            OpenKind::KeyOpen => EventKind::KeyOpen,
            OpenKind::KeyOpenFailed => EventKind::KeyOpenFailed,
            OpenKind::ProcFileOpen => EventKind::ProcFileOpen,
            OpenKind::RawOpen => EventKind::RawOpen,
            OpenKind::CodeWrite => EventKind::CodeWrite,
        }
    }
}

/// `struct file` f_mode bit: the open created the file (stable since 4.19).
pub const FMODE_CREATED: u32 = 0x100000;

/// Files of /proc/<pid>/ reported by ProcFileOpen (in `OpenEvent::name_rules`).
pub const PROC_MEM: u32 = 1;
pub const PROC_PAGEMAP: u32 = 2;
pub const PROC_ENVIRON: u32 = 3;
/// Reconnaissance files, reported only for protected targets.
pub const PROC_MAPS: u32 = 4;
pub const PROC_SMAPS: u32 = 5;
pub const PROC_STATUS: u32 = 6;
/// A regular file no name leads to (a memfd, a deleted file) opened by
/// path: only a /proc magic link reaches one (/proc/<pid>/fd/N,
/// /proc/<pid>/map_files/A-B, through any symlink or relative path).
/// Whose it is, user space finds (`watch_id` 0).
pub const PROC_REOPEN: u32 = 7;

/// What a `RawOpen` opened (in `OpenEvent::name_rules`): physical memory
/// (char 1:1), kernel virtual memory (1:2, gone since 5.13), I/O ports
/// (1:4), /proc/kcore, a block device holding a watched file system.
pub const RAW_MEM: u32 = 1;
pub const RAW_KMEM: u32 = 2;
pub const RAW_PORT: u32 = 3;
pub const RAW_KCORE: u32 = 4;
pub const RAW_BLOCK: u32 = 5;
/// A file the kernel swaps to (`S_SWAPFILE` on its inode: an active swap
/// file), opened for reading or writing: pages of every process.
pub const RAW_SWAP: u32 = 6;
/// inode.i_flags bit of an active swap file (and a swap block device's
/// inode).
pub const S_SWAPFILE: u32 = 1 << 8;
/// Kernel dev_t of /dev/mem, /dev/kmem and /dev/port (MEM_MAJOR 1).
pub const DEV_MEM: u32 = (1 << 20) | 1;
pub const DEV_KMEM: u32 = (1 << 20) | 2;
pub const DEV_PORT: u32 = (1 << 20) | 4;
/// Most block devices the kernel checks raw opens against (`RAW_DEVS`).
pub const RAW_DEVS_MAX: u32 = 64;

/// A short (<= 8 bytes) file name as the first head word of its NameKey.
pub const fn short_name(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        v |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// Head words of a name of up to 16 bytes (NameKey::head).
pub const fn name_head(s: &[u8]) -> [u64; 2] {
    let mut w = [0u64; 2];
    let mut i = 0;
    while i < s.len() && i < 16 {
        w[i / 8] |= (s[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    w
}
