//! Raw reads: opens of the kernel's memory (/dev/mem, /dev/kmem,
//! /dev/port, /proc/kcore) and of a block device that holds a watched file
//! system (`RAW_DEVS`, which user space fills with the devices under each
//! watched key store). Recognised by the inode: a character device's
//! number, a block device's number, procfs's kcore. A node made with mknod
//! anywhere, a symlink, a relative path or a renamed copy of the device
//! file is the same device. An active swap file, by the `S_SWAPFILE` flag
//! swapon set on its inode (the swapon probe voids cached verdicts). Part
//! of `check_file` (open.rs), for opens that matched no watch or pattern.
//!
//! Also here, for the same opens: a regular file no name leads to (a
//! memfd, a deleted file: `i_nlink` 0) opened by path, which only a /proc
//! magic link can do (`/proc/<pid>/fd/N`, `map_files/`), however the path
//! was spelt. Reported as a `ProcFileOpen` of `PROC_REOPEN`; user space
//! finds the protected process that holds it.

use sensor_common::{
    DEV_KMEM, DEV_MEM, DEV_PORT, OpenKind, PROC_REOPEN, RAW_BLOCK, RAW_KCORE, RAW_KMEM, RAW_MEM,
    RAW_PORT, RAW_SWAP, S_SWAPFILE, names::NameKey, short_name,
};

use crate::vfs::{FMODE_READ, FMODE_WRITE, PROC_SUPER_MAGIC, S_IFBLK, S_IFCHR, S_IFMT, S_IFREG};
use crate::{
    kptr::{FilePtr, InodePtr},
    maps::RAW_DEVS,
    probes::open::{OpenState, get, put},
};

/// f_flags: O_TMPFILE (a new unnamed file, not a reopen).
const O_TMPFILE: u32 = 0o20000000;

/// `check_raw_file`'s class for an unnamed regular file (not a RAW_*).
const REOPEN: u32 = 0x100;

/// What `check_raw_file` found.
#[derive(PartialEq, Eq)]
pub(super) enum Raw {
    /// Not a raw device: the open's "nothing to report" may be cached.
    No,
    /// A raw device opened without access to its content (O_PATH): no
    /// report, and no cached verdict (the next open may read it).
    Quiet,
    /// A raw open to report (`kind` and `rules` set in the state).
    Report,
}

/// Is the opened file a raw device, or an unnamed file reopened? Sets the
/// state's kind (`RawOpen`, `ProcFileOpen`) and `rules` (RAW_*,
/// PROC_REOPEN) when it is to be reported.
#[inline(always)]
pub(super) unsafe fn check_raw_file(s: *mut OpenState, name: &NameKey) -> Raw {
    // SAFETY: `s` is check_file's OPEN_STATE slot (the caller's).
    unsafe {
        let inode = InodePtr::from_addr(get!(s.inode));
        let Some(mode) = inode.mode() else {
            return Raw::No;
        };
        let rdev = inode.rdev().unwrap_or(0);
        let class = match mode as u32 & S_IFMT {
            S_IFCHR => match Some(rdev) {
                Some(DEV_MEM) => RAW_MEM,
                Some(DEV_KMEM) => RAW_KMEM,
                Some(DEV_PORT) => RAW_PORT,
                _ => 0,
            },
            S_IFBLK if RAW_DEVS.get(rdev).is_some() => RAW_BLOCK,
            S_IFREG
                if name.len == 5
                    && name.head[0] == short_name(b"kcore")
                    && inode.fs_magic() == Some(PROC_SUPER_MAGIC) =>
            {
                RAW_KCORE
            }
            // An active swap file, by the flag swapon set on its inode.
            S_IFREG if inode.flags().unwrap_or(0) & S_SWAPFILE != 0 => RAW_SWAP,
            S_IFREG if inode.nlink() == Some(0) => REOPEN,
            _ => 0,
        };
        if class == 0 {
            return Raw::No;
        }
        let file = FilePtr::from_addr(get!(s.file));
        let fmode = file.mode().unwrap_or(0);
        if fmode & (FMODE_READ | FMODE_WRITE) == 0 {
            return Raw::Quiet;
        }
        if class == REOPEN {
            if file.flags().unwrap_or(0) & O_TMPFILE != 0 {
                return Raw::Quiet;
            }
            put!(s.watch_id, 0);
            put!(s.kind, OpenKind::ProcFileOpen);
            put!(s.rules, PROC_REOPEN);
            return Raw::Report;
        }
        put!(s.watch_id, rdev);
        put!(s.kind, OpenKind::RawOpen);
        put!(s.rules, class);
        Raw::Report
    }
}
