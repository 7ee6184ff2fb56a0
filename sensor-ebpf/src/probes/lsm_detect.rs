//! Detection through BPF LSM hooks (BPF LSM backend only): reads, writes
//! and mappings of a watched file (a key path or a tracked dump or copy)
//! through an fd the process did not open itself. The syscall tracepoints
//! see opens only, so a key fd handed over a unix socket (SCM_RIGHTS),
//! taken with pidfd_getfd, inherited at fork (`cat < key`) or kept across
//! an exec into another program reaches a reader they never see.
//!
//! - `file_open` (in `lsm.rs`) calls `note_opener`: the opener (tgid, mm)
//!   of each watched file, by `struct file` address.
//! - `file_receive`: the file arrived in this process (SCM_RIGHTS,
//!   pidfd_getfd, binder), and by which syscall.
//! - `file_permission` (every read and write) and `mmap_file`: a watched
//!   inode accessed by a process image that did not open it is reported
//!   once per (process image, file) and taints the reader like an open.
//!
//! The cost on an unwatched file: the file's (dev, inode) and one hash
//! lookup in WATCHED.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use sensor_common::{
    ALLOW_ANY_KEY, FDA_MMAP, FDA_READ, FDA_WRITE, FDV_EXEC, FDV_INHERITED, FDV_RECEIVED,
    FDV_UNKNOWN, FdAccessEvent, FileOpener, INSERT_FAIL_FD_RECEIVED, INSERT_FAIL_FD_REPORTED,
    INSERT_FAIL_FILE_OPENERS, InodeKey, LRU_FD_RECEIVED, LRU_FD_REPORTED, LRU_FILE_OPENERS,
    TAINT_FILE, TAINT_STRONG, Taint, WATCH_CHILDREN, WATCH_SELF, WATCH_STRONG, WATCH_TRACKED,
    WatchEntry, WriteKey,
};

use crate::{
    emit::emit_lsm,
    kptr::{FilePtr, InodePtr, TaskPtr},
    maps::{
        FD_RECEIVED, FD_REPORTED, FILE_OPENERS, acting_tgid, allowed, check_insert, lru_insert,
        watch_entry,
    },
    syscall::current_nr,
    taint::add_taint,
};

const MAY_WRITE: i32 = 0x2;
const MAY_READ: i32 = 0x4;

/// The watch entry of an open file whose inode itself is watched.
#[inline(always)]
fn watched_file(file: FilePtr) -> Option<(InodeKey, WatchEntry, InodePtr)> {
    // SAFETY: the watch entry is a live map value, copied out.
    unsafe {
        let (key, inode) = file.identity()?;
        let w = watch_entry(&key, inode)?;
        if (*w).flags & WATCH_SELF == 0 {
            return None;
        }
        Some((key, *w, inode))
    }
}

/// The current process's mm (0 for a kernel thread).
#[inline(always)]
fn current_mm() -> u64 {
    TaskPtr::current().mm().map_or(0, |mm| mm.addr())
}

/// Is `file` in a watched directory (`WATCH_CHILDREN` on its parent)? A
/// file created there is watched itself only once user space rescans.
#[inline(always)]
fn in_watched_dir(file: FilePtr) -> bool {
    // SAFETY: the watch entry is a live map value.
    unsafe {
        let Some((key, _)) = file.identity() else {
            return false;
        };
        let Some(pi) = file
            .dentry()
            .and_then(|d| d.parent())
            .and_then(|p| p.inode())
        else {
            return false;
        };
        let Some(pino) = pi.ino() else {
            return false;
        };
        let pkey = InodeKey {
            dev: key.dev,
            _pad: 0,
            ino: pino,
        };
        watch_entry(&pkey, pi).is_some_and(|w| (*w).flags & WATCH_CHILDREN != 0)
    }
}

/// Called by the file_open hook for every open: remembers who opened a
/// watched file, or a file in a watched directory (it becomes watched
/// when user space sees it: a key created there is written through the
/// fd of the open that created it).
#[inline(always)]
pub fn note_opener(file: FilePtr) {
    let Some(tgid) = acting_tgid() else { return };
    if watched_file(file).is_none() && !in_watched_dir(file) {
        return;
    }
    let o = FileOpener {
        tgid,
        _pad: 0,
        mm: current_mm(),
    };
    check_insert(
        lru_insert(&FILE_OPENERS, LRU_FILE_OPENERS, &file.addr(), &o),
        INSERT_FAIL_FILE_OPENERS,
    );
}

// int file_receive(struct file *file)
#[lsm(hook = "file_receive")]
pub fn ks_lsm_file_receive(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let Some(tgid) = acting_tgid() else { return 0 };
    if watched_file(FilePtr::from_addr(file)).is_none() {
        return 0;
    }
    check_insert(
        lru_insert(
            &FD_RECEIVED,
            LRU_FD_RECEIVED,
            &[tgid as u64, file],
            &current_nr(),
        ),
        INSERT_FAIL_FD_RECEIVED,
    );
    0
}

// int file_permission(struct file *file, int mask): every read and write
// (rw_verify_area: read, write, their vector forms, sendfile, splice,
// copy_file_range, io_uring).
#[lsm(hook = "file_permission")]
pub fn ks_lsm_file_permission(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let mask: i32 = ctx.arg(1);
    let op = if mask & MAY_READ != 0 {
        FDA_READ
    } else if mask & MAY_WRITE != 0 {
        FDA_WRITE
    } else {
        return 0;
    };
    fd_access(FilePtr::from_addr(ctx.arg(0)), op);
    0
}

// int mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
//               unsigned long flags): file is NULL for anonymous mappings.
#[lsm(hook = "mmap_file")]
pub fn ks_lsm_mmap_file(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    if file == 0 {
        return 0;
    }
    fd_access(FilePtr::from_addr(file), FDA_MMAP);
    0
}

/// Reports the first access of a watched file through an fd the current
/// process image did not open.
#[inline(always)]
fn fd_access(file: FilePtr, op: u32) {
    // SAFETY: map values are read while the program runs; `ev` is the
    // reserved record.
    unsafe {
        let Some((key, w, inode)) = watched_file(file) else {
            return;
        };
        let Some(tgid) = acting_tgid() else { return };
        let mm = current_mm();
        let (opener, opener_mm) = match FILE_OPENERS.get(file.addr()) {
            Some(o) => (o.tgid, o.mm),
            None => (0, 0),
        };
        let (how, syscall) = match FD_RECEIVED.get([tgid as u64, file.addr()]) {
            Some(nr) => (FDV_RECEIVED, *nr),
            None if opener == 0 => (FDV_UNKNOWN, -1),
            // Its own open: the tracepoints reported it.
            None if opener == tgid && opener_mm == mm => return,
            None if opener == tgid => (FDV_EXEC, -1),
            None => (FDV_INHERITED, -1),
        };
        let rk = WriteKey {
            tgid,
            dev: key.dev,
            ino: key.ino,
        };
        if FD_REPORTED.get(rk).is_some_and(|m| *m == mm) {
            return;
        }
        check_insert(
            lru_insert(&FD_REPORTED, LRU_FD_REPORTED, &rk, &mm),
            INSERT_FAIL_FD_REPORTED,
        );
        let igen = inode.generation().unwrap_or(0);
        // A reader is followed like a process that opened the file (not a
        // program allowed that key: a service's workers reading the key
        // their master opened).
        let allowed = w.flags & WATCH_TRACKED == 0
            && TaskPtr::current().exe().is_some_and(|exe| {
                allowed(&exe, ALLOW_ANY_KEY, None) || allowed(&exe, w.watch_id, None)
            });
        if op != FDA_WRITE && !allowed {
            add_taint(
                tgid,
                &Taint {
                    // Strong from a key path's file or a strong tracked one.
                    flags: TAINT_FILE
                        | if w.flags & WATCH_TRACKED == 0 || w.flags & WATCH_STRONG != 0 {
                            TAINT_STRONG
                        } else {
                            0
                        },
                    src_dev: key.dev,
                    src_ino: key.ino,
                    src_igen: igen,
                    generation: w.generation,
                    ..Default::default()
                },
            );
        }
        let Some(rec) = emit_lsm::<FdAccessEvent>() else {
            return;
        };
        let ev = rec.ptr();
        (*ev).ino = key.ino;
        (*ev).dev = key.dev;
        (*ev).op = op;
        (*ev).how = how;
        (*ev).opener = opener;
        (*ev).syscall = syscall;
        (*ev).flags = file.flags().unwrap_or(0);
        (*ev).watch_id = w.watch_id;
        (*ev).watch_flags = w.flags;
        (*ev).igen = igen;
        (*ev).owner = inode.uid().unwrap_or(u32::MAX);
        file.read_path(&raw mut (*ev).path);
        rec.submit();
    }
}
