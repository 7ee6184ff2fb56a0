//! The end of a descriptor of a file a tainted process wrote: close,
//! close_range, dup2/dup3 over it, and io_uring's IORING_OP_CLOSE. Each is
//! reported (`FileClose`) with the bytes written and the file's size, so
//! user space decides the copy and scans it once it is complete (the
//! writes themselves are flow.rs's, but for io_uring writes and sends
//! whose completion is skipped, seen here at their submission).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    CLOSE_BY_CLOSE, CLOSE_BY_CLOSE_RANGE, CLOSE_BY_DUP2, CLOSE_BY_IO_URING, FileCloseEvent,
    LRU_WRITTEN, REQ_F_CQE_SKIP, REQ_F_FIXED_FILE, WriteKey,
    x86_64::{NR_CLOSE, NR_CLOSE_RANGE, NR_DUP2, NR_DUP3},
};

use crate::{
    emit::emit,
    kptr::{FdArrayPtr, FilePtr, IoKiocbPtr, TaskPtr},
    maps::{WRITTEN, acting_tgid, lru_remove, may_have_written},
    off,
    probes::flow::{NOT_FOLLOWED, iou_sink_file},
    setting,
    syscall::{args3, tp_nr},
    taint::is_tainted,
    vfs::fd_file,
};

/// Most descriptors a close_range looks at (from its first): bpf_loop's
/// limit (BPF_MAX_LOOPS), above the default fs.nr_open (2^20), so any
/// descriptor a process can have under the default limits. The scan stops
/// at the table's size, so an ordinary table costs only its size, and
/// only a tainted process scans at all. Where fs.nr_open is raised above
/// 2^23, a written file closed by close_range alone above that is
/// finalised at its writer's exit (`writer_exited`).
const CLOSE_RANGE_SCAN: u32 = 1 << 23;
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

// One program for the enter tracepoints of the syscalls that can end a
// descriptor, dispatched on the number: close(fd); close_range(first,
// last, flags); dup2(old, new) and dup3(old, new, flags), which close
// `new` first. The files are still installed here. A tainted process's
// descriptor of a file it wrote (`WRITTEN`) going away is reported
// (`FileClose`) so user space decides the copy and scans it, whichever
// way it went. exit_group (and a fatal signal) closes them without any
// of these: user space decides a writer's copies at its exit
// (`Flows::writer_exited`), and at its exec (close-on-exec descriptors).
// The untainted pay one hash lookup and one array load (`is_tainted`); a
// tainted process that never wrote a file `WRITTEN` follows one lookup
// more (`may_have_written`: a key reader's closes of what it only read).
// No hook on the file's last release (`__fput`) is used: it has no
// tracepoint, and kprobes and fentry are not available on every kernel
// keysentry runs on.
#[tracepoint]
pub fn ks_enter_close(ctx: TracePointContext) -> u32 {
    let Some(tgid) = acting_tgid() else { return 0 };
    if !is_tainted(tgid) || !may_have_written(tgid) {
        return 0;
    }
    let Some((a0, a1, a2)) = args3() else {
        return 0;
    };
    match tp_nr(&ctx) {
        NR_CLOSE => {
            if let Some(file) = fd_file(a0) {
                close_written(tgid, a0, file, CLOSE_BY_CLOSE);
            }
        }
        NR_DUP2 | NR_DUP3 => {
            // dup2(fd, fd) closes nothing (dup3's is EINVAL), nor does a
            // failing one (a bad old descriptor) or one that installs the
            // same file again.
            let (old, new) = (a0, a1);
            if old == new {
                return 0;
            }
            // One at a time: a pair of Options leaves the compiler free
            // to read the second's unset payload, which 6.1's verifier
            // refuses as an uninitialised stack read.
            let Some(o) = fd_file_checked(old) else {
                return 0;
            };
            let Some(n) = fd_file_checked(new) else {
                return 0;
            };
            if o.addr() != n.addr() {
                close_written(tgid, new, n, CLOSE_BY_DUP2);
            }
        }
        NR_CLOSE_RANGE => close_range(tgid, a0, a1, a2),
        _ => {}
    }
    0
}

// io_uring:io_uring_submit_req (6.2+) and io_uring_submit_sqe (before),
// raw: (struct io_kiocb *req, ...). Fired once the request is prepared
// and before it runs, so an IORING_OP_CLOSE's descriptor still holds its
// file: reported like a close. A direct descriptor (file_slot) is found in
// the ring's fixed file table (`IoRingCtxPtr::fixed_file`) and reported
// with fd -1. A write or send with a skipped completion is followed here
// too (`skipped_sink`). Every io_uring submission on the host pays
// `acting_tgid` and `is_tainted`.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn ks_iou_submit_req(ctx: RawTracePointContext) -> u32 {
    iou_submit(ctx.arg(0))
}

#[raw_tracepoint(tracepoint = "io_uring_submit_sqe")]
pub fn ks_iou_submit_sqe(ctx: RawTracePointContext) -> u32 {
    iou_submit(ctx.arg(0))
}

#[inline(always)]
fn iou_submit(req: u64) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Some(tgid) = acting_tgid() else { return 0 };
    if !is_tainted(tgid) {
        return 0;
    }
    let req = IoKiocbPtr::from_addr(req);
    let op = req.opcode().map_or(u32::MAX, |o| o as u32);
    if op < 64 && (off!(iou_sink_ops) >> op) & 1 != 0 {
        skipped_sink(req);
        return 0;
    }
    if op != off!(iou_op_close) || off!(iou_close_fd) == 0 {
        return 0;
    }
    let Some(v) = req.close_fd_slot() else {
        return 0;
    };
    let (fd, slot) = (v as u32 as u64, (v >> 32) as u32);
    if slot != 0 {
        // A direct descriptor (file_slot is the slot + 1): its file is in
        // the ring's fixed file table, not the process's (fd -1).
        if let Some(file) = req.ctx().and_then(|c| c.fixed_file(slot - 1)) {
            close_written(tgid, u64::MAX, file, CLOSE_BY_IO_URING);
        }
        return 0;
    }
    if let Some(file) = fd_file_checked(fd) {
        close_written(tgid, fd, file, CLOSE_BY_IO_URING);
    }
    0
}

/// A write or send submitted with IOSQE_CQE_SKIP_SUCCESS posts no
/// completion when it succeeds, so `io_uring_complete` (where io_uring
/// writes and sends are followed) never sees it. It is followed here, from
/// the file its SQE named (the request gets its file only when issued): a
/// descriptor, or a fixed file slot with REQ_F_FIXED_FILE. The bytes are
/// not known yet (0): the file's size at its close gives them.
#[inline(always)]
fn skipped_sink(req: IoKiocbPtr) {
    let Some(flags) = req.flags() else { return };
    if flags & REQ_F_CQE_SKIP == 0 {
        return;
    }
    let Some(fd) = req.cqe_fd() else { return };
    if fd < 0 {
        return;
    }
    let file = if flags & REQ_F_FIXED_FILE != 0 {
        req.ctx().and_then(|c| c.fixed_file(fd as u32))
    } else {
        fd_file_checked(fd as u64)
    };
    if let Some(file) = file {
        iou_sink_file(file, 0);
    }
}

/// The file at `fd` (within the table's `max_fds`) of the current task.
#[inline(always)]
fn fd_file_checked(fd: u64) -> Option<FilePtr> {
    let fdt = TaskPtr::current().files()?.fdt()?;
    if fd >= fdt.max_fds()? as u64 {
        return None;
    }
    FdArrayPtr::from_addr(fdt.fd()? as u64).get(fd as usize)
}

/// State of close_range's descriptor scan (a bpf_loop callback's context).
#[repr(C)]
struct RangeScan {
    fds: u64,
    first: u64,
    end: u64,
    tgid: u64,
}

/// close_range(first, last, flags): each written file in the range (up to
/// `CLOSE_RANGE_SCAN` descriptors, and the table's size) is reported.
/// CLOSE_RANGE_CLOEXEC closes nothing now (the exec does).
#[inline(always)]
fn close_range(tgid: u32, first: u64, last: u64, flags: u64) {
    if flags & CLOSE_RANGE_CLOEXEC != 0 || first > last {
        return;
    }
    let Some(fdt) = TaskPtr::current().files().and_then(|f| f.fdt()) else {
        return;
    };
    let max = fdt.max_fds().unwrap_or(0) as u64;
    let Some(fds) = fdt.fd() else { return };
    let end = if last >= max { max } else { last + 1 };
    if first >= end {
        return;
    }
    let mut scan = RangeScan {
        fds: fds as u64,
        first,
        end,
        tgid: tgid as u64,
    };
    // SAFETY: `scan` outlives the bpf_loop that hands it to
    // range_scan_step, whose signature is bpf_loop's callback's.
    unsafe {
        generated::bpf_loop(
            CLOSE_RANGE_SCAN,
            range_scan_step as *mut c_void,
            &raw mut scan as *mut c_void,
            0,
        );
    }
}

/// bpf_loop callback: descriptor `first + i` of a close_range. Returns 1
/// to stop.
#[inline(never)]
unsafe extern "C" fn range_scan_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is close_range's `RangeScan` (bpf_loop passes it
    // through); the fd array is read through FdArrayPtr
    // (bpf_probe_read_kernel).
    unsafe {
        let scan = ctx as *mut RangeScan;
        let fd = (*scan).first + i;
        if fd >= (*scan).end {
            return 1;
        }
        if let Some(file) = FdArrayPtr::from_addr((*scan).fds).get(fd as usize) {
            close_written((*scan).tgid as u32, fd, file, CLOSE_BY_CLOSE_RANGE);
        }
        0
    }
}

/// `fd` (holding `file`) of the tainted `tgid` goes away: when the process
/// wrote that file (`WRITTEN`), the close is reported with the bytes
/// written and the size, and the entry removed (a later write reports the
/// file again, and a later close rescans it).
#[inline(always)]
fn close_written(tgid: u32, fd: u64, file: FilePtr, how: u32) {
    // SAFETY: the map value is copied out; `ev` is the reserved record.
    unsafe {
        let Some((key, inode)) = file.identity() else {
            return;
        };
        let wk = WriteKey {
            tgid,
            dev: key.dev,
            ino: key.ino,
        };
        let Some(written) = WRITTEN.get(wk).copied() else {
            return;
        };
        lru_remove(&WRITTEN, LRU_WRITTEN, &wk);
        if written == NOT_FOLLOWED {
            return;
        }
        let Some(rec) = emit::<FileCloseEvent>() else {
            return;
        };
        let ev = rec.ptr();
        (*ev).ino = key.ino;
        (*ev).dev = key.dev;
        (*ev).fd = fd as i32;
        (*ev).igen = inode.generation().unwrap_or(0);
        (*ev).how = how;
        (*ev).size = inode.size().unwrap_or(0);
        (*ev).written = written;
        rec.submit();
    }
}
