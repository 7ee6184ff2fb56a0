//! What the BPF LSM hooks share with user space: enforced rules, the
//! kernel allowlist, denials, and accesses through handed-over fds.

use crate::{Header, KPath, PATH_BUF, header::record};

/// Rules an LSM hook can enforce (bit numbers of the kernel's `ENFORCE[0]`,
/// values of `DeniedEvent::rule`).
pub const ENF_KEY_OPEN: u32 = 0;
pub const ENF_PTRACE: u32 = 1;
pub const ENF_VM_READ: u32 = 2;
pub const ENF_VM_WRITE: u32 = 3;
pub const ENF_PROC_MEM: u32 = 4;
pub const ENF_PIDFD_GETFD: u32 = 5;
pub const ENF_FORCED_CRASH: u32 = 6;
pub const ENF_CORE_DUMP: u32 = 7;
/// Rule names of the ENF_* bits, in bit order.
pub const ENF_RULES: [&str; 8] = [
    "key-file-open",
    "ptrace-attach",
    "process-vm-read",
    "process-vm-write",
    "proc-mem-open",
    "pidfd-getfd",
    "forced-crash",
    "core-dump",
];

/// `AllowKey::scope` of a memory-access allowance (actor exe may access
/// processes running the target exe).
pub const ALLOW_MEMORY: u32 = u32::MAX - 1;
/// `AllowKey::scope` of a key-file allowance covering every key path.
pub const ALLOW_ANY_KEY: u32 = u32::MAX;

/// An `[[allow]]` entry as the LSM hooks check it: the actor's executable
/// (dev, inode), the key_path index it may open (or ALLOW_*), and for
/// memory allowances the target's executable.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowKey {
    pub dev: u32,
    pub scope: u32,
    pub ino: u64,
    pub target_dev: u32,
    pub _pad: u32,
    pub target_ino: u64,
}
const _: () = assert!(core::mem::size_of::<AllowKey>() == 32);

/// An operation a BPF LSM hook denied (EPERM) because its rule is in
/// enforce mode. The header describes the actor (for `ENF_CORE_DUMP`, the
/// dumping process).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct DeniedEvent {
    pub hdr: Header,
    /// ENF_* value.
    pub rule: u32,
    /// Target process (tgid) for the memory rules and forced-crash.
    pub target: u32,
    /// Signal (forced-crash); ptrace access mode (memory rules).
    pub arg: u32,
    /// Syscall number of the actor (orig_ax), -1 when none.
    pub syscall: i32,
    /// The file (key-file-open, core-dump).
    pub ino: u64,
    pub dev: u32,
    /// Watch entry value (key_path index) for key-file-open.
    pub watch_id: u32,
    /// file f_flags (key-file-open, core-dump).
    pub flags: u32,
    /// 0: a denial. `DENIED_OBSERVED`: nothing was denied; what the hook
    /// saw, for user space (ENF_CORE_DUMP: the core file the kernel opened
    /// for a protected process that dumps, in observe mode).
    pub observed: u32,
    pub path: KPath,
}

/// `DeniedEvent::observed`: not a denial (see there).
pub const DENIED_OBSERVED: u32 = 1;
const _: () = assert!(core::mem::size_of::<DeniedEvent>() == 56 + 40 + 8 + PATH_BUF);
record!(DeniedEvent: Denied, Critical);
// SAFETY: `path` is its KPath (the last field: no trailer).
unsafe impl crate::Compact for DeniedEvent {
    const COMPACTION: crate::Compaction =
        crate::Compaction::of::<DeniedEvent>(core::mem::offset_of!(DeniedEvent, path));
}

/// What a process did through an fd it did not open (`FdAccessEvent::op`).
pub const FDA_READ: u32 = 1;
pub const FDA_WRITE: u32 = 2;
pub const FDA_MMAP: u32 = 3;

/// How the fd reached the process (`FdAccessEvent::how`).
/// Opened by another process and inherited at fork (e.g. `cat < key`).
pub const FDV_INHERITED: u32 = 1;
/// Opened by this process before it exec'd the program that reads it.
pub const FDV_EXEC: u32 = 2;
/// Received: SCM_RIGHTS over a unix socket, pidfd_getfd, binder (the
/// kernel's file_receive hook); `syscall` says which.
pub const FDV_RECEIVED: u32 = 3;
/// Opened before keysentry started (no opener recorded).
pub const FDV_UNKNOWN: u32 = 4;

/// A process read, wrote or mapped a watched file (a key path or a tracked
/// file) through an fd it did not open itself, seen by the BPF LSM hooks
/// `file_permission` and `mmap_file`. First access per (process image,
/// file) only. The header describes the reader.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct FdAccessEvent {
    pub hdr: Header,
    pub ino: u64,
    pub dev: u32,
    /// FDA_* value.
    pub op: u32,
    /// FDV_* value.
    pub how: u32,
    /// Tgid that opened the file (0: unknown).
    pub opener: u32,
    /// For FDV_RECEIVED: the syscall the fd arrived by (x86_64 number),
    /// else -1.
    pub syscall: i32,
    /// file f_flags.
    pub flags: u32,
    /// The watch entry's value and flags (WATCH_TRACKED: a tracked file).
    pub watch_id: u32,
    pub watch_flags: u32,
    /// The inode's i_generation, and the owner (i_uid).
    pub igen: u32,
    pub owner: u32,
    pub path: KPath,
}
const _: () = assert!(core::mem::size_of::<FdAccessEvent>() == 56 + 48 + 8 + PATH_BUF);
record!(FdAccessEvent: FdAccess, Critical);
// SAFETY: `path` is its KPath (the last field: no trailer).
unsafe impl crate::Compact for FdAccessEvent {
    const COMPACTION: crate::Compaction =
        crate::Compaction::of::<FdAccessEvent>(core::mem::offset_of!(FdAccessEvent, path));
}

/// Who opened a watched file (`struct file` address -> opener), recorded
/// by the LSM file_open hook: the process image (tgid and mm) that owns
/// the fd, to tell an fd handed over from one opened by the reader.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FileOpener {
    pub tgid: u32,
    pub _pad: u32,
    /// The opener's mm: a new one after exec.
    pub mm: u64,
}

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AllowKey {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileOpener {}
