//! Opens of key files: the exit tracepoints of every open syscall and the
//! io_uring completion tracepoint.
//!
//! A successful open is matched on the file it produced (fd -> struct file
//! -> inode), so the name used to reach it does not matter: absolute or
//! relative path, symlink, hardlink, bind mount, /proc/self/fd reopen.
//! Only matches are sent to user space. Opens that match nothing
//! but a /proc or core-dump control file are `open_proc.rs`'s; failed
//! opens, matched by their path argument, `open_arg.rs`'s.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
};
use sensor_common::{
    ARG_BUF, CODE_BY_NAME, FMODE_CREATED, FoldKey, HOLDER_RULE, INSERT_FAIL_PROTECTED,
    IORING_FILE_INDEX_ALLOC, InodeKey, MATCH_CODE, MATCH_INODE, MATCH_NAME, MATCH_PARENT,
    MATCH_TRACKED, OpenEvent, OpenKind, PATH_GUEST, PATH_OTHER_NS, SRC_CREAT, SRC_IO_URING,
    SRC_IO_URING_FIXED, SRC_OPEN, SRC_OPEN_BY_HANDLE, SRC_OPENAT, SRC_OPENAT2, STOP_ALLOWLIST,
    STOP_OWN_KEY, TAINT_FILE, TAINT_STRONG, Taint, WATCH_CHILDREN, WATCH_CODE, WATCH_IGEN,
    WATCH_SELF, WATCH_STRONG, WATCH_TRACKED,
    names::NameKey,
    x86_64::{NR_CREAT, NR_OPEN, NR_OPEN_BY_HANDLE_AT, NR_OPENAT, NR_OPENAT2},
};

use crate::vfs::{O_PATH, S_IFDIR, S_IFMT};
use crate::{
    emit::{emit_as, stage_as},
    fold::{fold_check, fold_sent},
    kptr::{DentryPtr, FilePtr, InodePtr, IoKiocbPtr, TaskPtr},
    maps::{
        BPF_NOEXIST, CODE_NAMES, NAME_PATTERNS, PROTECTED, WATCHED, any_watch_entry, check_insert,
        count_stop,
    },
    off,
    probes::{
        open_arg::check_failed,
        open_proc::{check_other_file, of_interest},
        open_raw::{Raw, check_raw_file},
        open_rules::{fold_mode, key_allowed, may_change, own_key},
        verdict,
    },
    setting,
    syscall::{args3, sys_ret, tp_nr},
    taint::add_taint,
    vfs::{Ptr, dentry_name_key, eval_patterns, fd_file, name_key_at},
};

const EPERM: i64 = 1;
const EACCES: i64 = 13;
const AT_FDCWD: i32 = -100;
const O_CREAT_WRONLY_TRUNC: u32 = 0o1101;

// syscalls:sys_exit_{open,openat,openat2,creat,open_by_handle_at}: common
// fields; int __syscall_nr; long ret (offsets checked against the
// tracepoints' formats at load time). One program attached to the five,
// dispatched on the syscall number: verified once instead of five times.
#[tracepoint]
pub fn ks_exit_open(ctx: TracePointContext) -> u32 {
    let src = match tp_nr(&ctx) {
        NR_OPENAT => SRC_OPENAT,
        NR_OPEN => SRC_OPEN,
        NR_OPENAT2 => SRC_OPENAT2,
        NR_CREAT => SRC_CREAT,
        NR_OPEN_BY_HANDLE_AT => SRC_OPEN_BY_HANDLE,
        _ => return 0,
    };
    // `src` is one of five constants here: `check_file` and the failed
    // open's check read it back from OPEN_STATE (`unknown_src`) before
    // their work, so the verifier goes through that work once, not once
    // per syscall (6.1's runs out of its 1,000,000 instructions that way).
    on_open_exit(&ctx, src)
}

/// `src` stored in the OPEN_STATE slot `s` and read back: a value the
/// verifier does not know, whichever constant it was.
///
/// # Safety
/// `s` is the caller's OPEN_STATE slot.
#[inline(always)]
unsafe fn unknown_src(s: *mut OpenState, src: u32) -> u32 {
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::write_volatile(&raw mut (*s).src, src);
        core::ptr::read_volatile(&raw const (*s).src)
    }
}

/// io_uring:io_uring_complete: void *ctx; void *req; u64 user_data; int res;
/// ... (offsets of req and res read from the format at load time). The
/// completion runs in the submitter or one of its io_uring threads, which
/// share its file table. An OPENAT/OPENAT2 into the fd table (`file_slot`
/// 0) returns the fd; one into a fixed file slot (a direct descriptor)
/// returns 0 for the slot it named (`file_slot` - 1) or the slot the kernel
/// picked (IORING_FILE_INDEX_ALLOC): its file is found in the ring's fixed
/// file table. Where lsm/file_open reports io_uring opens
/// (`LSM_FILE_OPEN`), this probe leaves them to it (one report per open).
#[tracepoint]
pub fn ks_iou_complete(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Ok(res) = (unsafe { ctx.read_at::<i32>(off!(tp_iou_complete_res) as usize) }) else {
        return 0;
    };
    if res < 0 {
        return 0;
    }
    let Ok(req) = (unsafe { ctx.read_at::<u64>(off!(tp_iou_complete_req) as usize) }) else {
        return 0;
    };
    let req = IoKiocbPtr::from_addr(req);
    let opcode = req.opcode().unwrap_or(0) as u32;
    if opcode < 64 && (off!(iou_sink_ops) >> opcode) & 1 != 0 {
        if res > 0 {
            crate::probes::flow::iou_sink(req, res);
        }
        return 0;
    }
    if opcode != off!(iou_op_openat) && opcode != off!(iou_op_openat2) {
        return 0;
    }
    if is_self() || lsm_reports_iou_opens() {
        return 0;
    }
    match req.open_slot() {
        // Into the fd table: `res` is the fd (0 included).
        Some(0) => check_opened(res as u64, SRC_IO_URING, res as i64, false),
        // Into a fixed file slot.
        Some(slot) => {
            let index = if slot == IORING_FILE_INDEX_ALLOC {
                res as u32
            } else {
                slot - 1
            };
            let Some(file) = req.ctx().and_then(|c| c.fixed_file(index)) else {
                return 0;
            };
            check_file(file, SRC_IO_URING_FIXED, index as i64, TP_SLOT, false);
        }
        // No io_open offset in this kernel's BTF: a positive result is an
        // fd (or, for a direct descriptor the kernel picked, a slot: not
        // told apart here).
        None if res > 0 => check_opened(res as u64, SRC_IO_URING, res as i64, false),
        None => {}
    }
    0
}

/// Does lsm/file_open report io_uring opens (user space sets the flag once
/// it attached it for detection)?
#[inline(always)]
pub fn lsm_reports_iou_opens() -> bool {
    LSM_FILE_OPEN.get(0).is_some_and(|v| *v != 0)
}

/// lsm/file_open, for an open in io_uring context (`lsm.rs` decides: an
/// io-wq or SQPOLL thread, io_uring_enter's inline issue, task work run on
/// the way back to user space): the same check as an open syscall's, from
/// the `struct file` itself, so opens into fixed file slots (direct
/// descriptors, never in the fd table) and opens whose completion is
/// skipped (IOSQE_CQE_SKIP_SUCCESS) are seen. The syscall tracepoints
/// never see these opens (they see their own syscall's fd only).
#[inline(always)]
pub fn check_lsm_open(file: FilePtr) {
    if setting!(empty_programs) != 0 || is_self() {
        return;
    }
    check_file(file, SRC_IO_URING, 0, LSM_SLOT, false);
}

#[inline(always)]
fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == setting!(self_pid)
}

#[inline(always)]
fn on_open_exit(ctx: &TracePointContext, src: u32) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let ret = sys_ret(ctx);
    if ret >= 0 {
        if !is_self() {
            check_opened(ret as u64, src, ret, true);
        } else {
            stamp_opened(ret as u64);
        }
    } else if (ret == -EACCES || ret == -EPERM) && src != SRC_OPEN_BY_HANDLE && !is_self() {
        let Some(s) = OPEN_STATE.get_ptr_mut(TP_SLOT) else {
            return 0;
        };
        // SAFETY: this CPU's tracepoint slot, this program's while it runs.
        check_failed(unsafe { unknown_src(s, src) }, ret);
    }
    0
}

/// keysentry's own open of a file it just registered: stamps the watch
/// entry with the inode's i_generation (user space then checks the fd is
/// the inode it meant). An entry stamped once keeps its stamp.
#[inline(always)]
fn stamp_opened(fd: u64) {
    let Some(file) = fd_file(fd) else { return };
    let Some((key, inode)) = file.identity() else {
        return;
    };
    let Some(w) = WATCHED.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: `w` is a live map value.
    unsafe {
        if (*w).flags & WATCH_IGEN == 0 {
            (*w).igen = inode.generation().unwrap_or(0);
            (*w).flags |= WATCH_IGEN;
        }
    }
}

/// The syscall's arguments, from the task's saved user registers:
/// (dirfd, path pointer, flags or `struct open_how *` for openat2).
#[inline(always)]
pub(super) fn syscall_args(src: u32) -> Option<(i32, u64, u64)> {
    let (di, si, dx) = args3()?;
    match src {
        SRC_OPEN => Some((AT_FDCWD, di, si)),
        SRC_CREAT => Some((AT_FDCWD, di, O_CREAT_WRONLY_TRUNC as u64)),
        SRC_OPENAT => Some((di as i32, si, dx)),
        SRC_OPENAT2 => {
            // SAFETY: a helper read of user memory into an integer.
            let flags: u64 = unsafe { bpf_probe_read_user(dx as *const u64) }.unwrap_or(0);
            Some((di as i32, si, flags))
        }
        SRC_OPEN_BY_HANDLE => Some((di as i32, 0, dx)),
        _ => None,
    }
}

/// What `check_opened` found so far, kept between its steps in per-CPU map
/// memory rather than in registers or on the stack. A value read back from
/// a map is unknown to the verifier, so the paths of one step (watched or
/// not, by inode or parent, which rules, which /proc file) become one
/// state at the next step instead of each being verified through all the
/// steps after it. 6.1's verifier (weaker precision tracking around
/// bpf_loop calls, so weaker pruning) explored about 435,000 instructions
/// for each open program without this (docs/testing.md).
#[repr(C)]
pub struct OpenState {
    pub(super) file: u64,
    pub(super) inode: u64,
    pub(super) dentry: u64,
    /// 0 when the dentry's parent could not be read.
    pub(super) parent: u64,
    pub(super) ino: u64,
    pub(super) dev: u32,
    pub(super) matched: u32,
    pub(super) watch_id: u32,
    /// Generation of a tracked file's readers (the watch entry's).
    pub(super) generation: u32,
    /// TAINT_STRONG when a reader's taint is strong (a key path's file, a
    /// file in a watched directory, a tracked file marked WATCH_STRONG).
    pub(super) strength: u32,
    pub(super) rules: u32,
    pub(super) kind: OpenKind,
    /// A failed open's path: (len, start of the final component, end).
    pub(super) arg_len: u32,
    pub(super) arg_start: u32,
    pub(super) arg_end: u32,
    /// The opener's executable (dev, inode); `exe_ok` 0 when unknown.
    /// Kept here rather than in an `Option` on the stack, whose unset
    /// payload 6.1's verifier refuses to see read (a path the compiler
    /// shares between Some and None).
    pub(super) exe_ino: u64,
    pub(super) exe_dev: u32,
    pub(super) exe_ok: u32,
    /// What the verdict cache keys on (`verdict::cached`, `v_ok` 1 once
    /// read): the dentry's parent, name and inode, the parent's name, the
    /// watch map's generations.
    pub(super) v_parent: u64,
    pub(super) v_hash_len: u64,
    pub(super) v_name: u64,
    pub(super) v_inode: u64,
    pub(super) v_pname: u64,
    pub(super) v_ugen: u64,
    pub(super) v_kgen: u64,
    pub(super) v_ok: u32,
    /// 1 when the verdict holds for reads only (a code-loading path read:
    /// an open that may change it is evaluated).
    pub(super) v_ro: u32,
    /// The open's source (`SRC_*`), stored and read back unknown to the
    /// verifier (`unknown_src`).
    pub(super) src: u32,
}

/// OPEN_STATE slots: the tracepoints' (they run with preemption off, so a
/// CPU's slot is one program's at a time) and lsm/file_open's (BPF LSM
/// programs can be preempted, and are not mixed with the tracepoints').
const TP_SLOT: u32 = 0;
const LSM_SLOT: u32 = 1;

#[map]
pub(super) static OPEN_STATE: PerCpuArray<OpenState> = PerCpuArray::with_max_entries(2, 0);

/// Set to 1 by user space once lsm/file_open is attached for detection:
/// it reports io_uring opens, and `ks_iou_complete` leaves them to it.
#[map]
pub static LSM_FILE_OPEN: Array<u32> = Array::with_max_entries(1, 0);

/// Stores a field of the OpenState behind `$s`.
macro_rules! put {
    ($s:ident . $f:ident, $v:expr) => {
        core::ptr::write_volatile(&raw mut (*$s).$f, $v)
    };
}

/// Reads a field of the OpenState behind `$s` back (volatile: the compiler
/// must not reuse the value it stored).
macro_rules! get {
    ($s:ident . $f:ident) => {
        core::ptr::read_volatile(&raw const (*$s).$f)
    };
}

pub(super) use {get, put};

/// Checks the file behind `fd` of the current task (`check_file`, with
/// the verdict cache when `cache`).
#[inline(always)]
fn check_opened(fd: u64, src: u32, ret: i64, cache: bool) {
    let Some(file) = fd_file(fd) else { return };
    check_file(file, src, ret, TP_SLOT, cache);
}

/// Checks an opened file against the watch map (the inode itself, then its
/// parent directory) and the name patterns, and reports a match (tainting
/// the opener of a key), working in OPEN_STATE slot `slot`. `cache`: the
/// verdict cache serves it (the open syscalls' tracepoints only: it costs
/// the io_uring completion program, verified with every io_uring path,
/// more than 6.1's verifier should have to explore, and BPF LSM programs
/// can be preempted).
#[inline(always)]
fn check_file(file: FilePtr, src: u32, ret: i64, slot: u32, cache: bool) {
    // SAFETY: `s` is this CPU's OPEN_STATE slot `slot`, the program's
    // alone while it runs (checked again before the report); watch
    // entries are live map values.
    unsafe {
        let Some(s) = OPEN_STATE.get_ptr_mut(slot) else {
            return;
        };
        let src = unknown_src(s, src);
        // The file's dentry: an open of a file that matched nothing last
        // time, through the same dentry, ends here (with `cache`).
        let Some(dentry) = file.dentry() else {
            return;
        };
        put!(s.v_ok, 0);
        put!(s.v_ro, 0);
        if cache && verdict::cached(s, dentry, file) {
            return;
        }
        // Its identity and parent.
        {
            let Some((key, inode)) = file.identity() else {
                return;
            };
            let parent = if get!(s.v_ok) != 0 {
                get!(s.v_parent)
            } else {
                dentry.parent().map_or(0, |p| p.addr())
            };
            put!(s.file, file.addr());
            put!(s.inode, inode.addr());
            put!(s.dentry, dentry.addr());
            put!(s.parent, parent);
            put!(s.dev, key.dev);
            put!(s.ino, key.ino);
        }
        // The watch map: the inode, else its parent directory (entries of
        // a reused inode number do not match).
        {
            let dev = get!(s.dev);
            let mut matched = 0u32;
            let mut watch_id = 0u32;
            let mut g = 0u32;
            let mut strength = 0u32;
            let key = InodeKey {
                dev,
                _pad: 0,
                ino: get!(s.ino),
            };
            let mut code = false;
            if let Some(w) = any_watch_entry(&key, InodePtr::from_addr(get!(s.inode)))
                && (*w).flags & WATCH_SELF != 0
            {
                if (*w).flags & WATCH_CODE != 0 {
                    code = true;
                }
                matched |= MATCH_INODE;
                if (*w).flags & WATCH_TRACKED != 0 {
                    matched |= MATCH_TRACKED;
                    if (*w).flags & WATCH_STRONG != 0 {
                        strength = TAINT_STRONG;
                    }
                } else {
                    strength = TAINT_STRONG;
                }
                watch_id = (*w).watch_id;
                g = (*w).generation;
            }
            let parent = get!(s.parent);
            if matched == 0 && parent != 0 {
                let pi = DentryPtr::from_addr(parent).inode();
                let pino = pi.and_then(|pi| pi.ino());
                if let (Some(pi), Some(pino)) = (pi, pino) {
                    let pkey = InodeKey {
                        dev,
                        _pad: 0,
                        ino: pino,
                    };
                    if let Some(w) = any_watch_entry(&pkey, pi)
                        && (*w).flags & WATCH_CHILDREN != 0
                    {
                        if (*w).flags & WATCH_CODE != 0 {
                            code = true;
                        }
                        matched |= MATCH_PARENT;
                        watch_id = (*w).watch_id;
                        strength = TAINT_STRONG;
                    }
                }
            }
            put!(s.v_ro, 0);
            put!(s.kind, OpenKind::KeyOpen);
            if code {
                // A code-loading path: reported only when the open may
                // change the file; a read is nothing to report, and the
                // verdict cache keeps that for reads only.
                if may_change(file) {
                    matched = MATCH_CODE;
                    put!(s.kind, OpenKind::CodeWrite);
                } else {
                    matched = 0;
                    put!(s.v_ro, 1);
                }
                strength = 0;
            }
            put!(s.matched, matched);
            put!(s.watch_id, watch_id);
            put!(s.generation, g);
            put!(s.strength, strength);
        }
        // The name patterns.
        let name = if get!(s.v_ok) != 0 && get!(s.v_name) != 0 {
            name_key_at((get!(s.v_hash_len) >> 32) as u32, get!(s.v_name) as Ptr)
        } else {
            dentry_name_key(DentryPtr::from_addr(get!(s.dentry)))
        };
        {
            let mut rules = 0u32;
            if let Some(pats) = NAME_PATTERNS.get(0)
                && pats.count > 0
            {
                let parent = get!(s.parent);
                let pname = if parent != 0 && pats.has_dir != 0 {
                    dentry_name_key(DentryPtr::from_addr(parent))
                } else {
                    NameKey::default()
                };
                rules = eval_patterns(pats.count, &name, &pname);
            }
            put!(s.rules, rules);
            if rules != 0 {
                put!(s.matched, get!(s.matched) | MATCH_NAME);
            }
        }
        // A file created under a code path's name (one that did not exist:
        // no watched inode yet), or in a directory just made in a code
        // directory, before keysentry's rescan watches it (`mkdir
        // vault.service.d && echo ... > vault.service.d/x.conf`).
        if get!(s.matched) == 0 && file.mode().unwrap_or(0) & FMODE_CREATED != 0 {
            if CODE_NAMES.get(name).is_some() {
                put!(s.matched, MATCH_CODE);
                put!(s.watch_id, CODE_BY_NAME);
                put!(s.kind, OpenKind::CodeWrite);
            } else if let Some(id) = code_grandparent(get!(s.parent), get!(s.dev)) {
                put!(s.matched, MATCH_CODE);
                put!(s.watch_id, id);
                put!(s.kind, OpenKind::CodeWrite);
            }
        }
        if get!(s.matched) == 0 {
            // Nothing to report, for as long as the file, its name and the
            // watch map stay as they are.
            if of_interest(&name) {
                if !check_other_file(s, &name, ret) {
                    return;
                }
            } else {
                match check_raw_file(s, &name) {
                    Raw::No => {
                        verdict::store(s);
                        return;
                    }
                    Raw::Quiet => return,
                    Raw::Report => {}
                }
            }
        }
        // A preempted LSM program whose slot another one took meanwhile
        // reports nothing rather than another open's findings.
        if get!(s.file) != file.addr() {
            return;
        }
        report_open(s, src, ret, slot);
    }
}

/// Reports the open `s` describes (taints the opener of a key file first).
#[inline(always)]
unsafe fn report_open(s: *mut OpenState, src: u32, ret: i64, slot: u32) {
    // SAFETY: `s` is check_opened's OPEN_STATE slot (the caller's); user
    // memory read through bpf_probe_read_user_str only, into the
    // ARG_BUF-byte `arg`; `ev` is the reserved record.
    unsafe {
        let file = FilePtr::from_addr(get!(s.file));
        let inode = InodePtr::from_addr(get!(s.inode));
        let mode = inode.mode().unwrap_or(0) as u32;
        if mode & S_IFMT == S_IFDIR {
            return;
        }
        let kind = get!(s.kind);
        let f_flags = file.flags().unwrap_or(0);
        // A key or tracked file opened for reading taints the opener (not
        // O_PATH, which grants no access to the content), unless the
        // opener's executable is allowed that key (`[[allow]]`, in ALLOWED
        // whatever the rule mode): a service reading its own key must not
        // taint what it writes to pipes and sockets before user space
        // could drop its taint.
        let igen = inode.generation().unwrap_or(0);
        let owner = inode.uid().unwrap_or(u32::MAX);
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        match TaskPtr::current().exe() {
            Some(e) => {
                put!(s.exe_dev, e.dev);
                put!(s.exe_ino, e.ino);
                put!(s.exe_ok, 1);
            }
            None => {
                put!(s.exe_dev, 0);
                put!(s.exe_ino, 0);
                put!(s.exe_ok, 0);
            }
        }
        let exe = InodeKey {
            dev: get!(s.exe_dev),
            _pad: 0,
            ino: get!(s.exe_ino),
        };
        let exe_ok = get!(s.exe_ok) != 0;
        if kind == OpenKind::KeyOpen && f_flags & 3 != 1 && f_flags & O_PATH == 0 {
            // A key holder, allowed or not: its memory now holds the key,
            // so it is protected from here on (before user space hears of
            // the open: a dump right after it is a protected dump). A rule
            // that protects it already stays its reason. Watched key files
            // only: readers of tracked copies and dumps are followed by
            // taint.
            if setting!(key_holders) != 0 && get!(s.matched) & MATCH_TRACKED == 0 {
                check_insert(
                    PROTECTED.insert(tgid, HOLDER_RULE, BPF_NOEXIST),
                    INSERT_FAIL_PROTECTED,
                );
            }
            if key_allowed(get!(s.matched), get!(s.watch_id), exe_ok, &exe) {
                count_stop(STOP_ALLOWLIST);
            } else if own_key(get!(s.matched), owner) {
                count_stop(STOP_OWN_KEY);
            } else {
                add_taint(
                    tgid,
                    &Taint {
                        flags: TAINT_FILE | get!(s.strength),
                        src_dev: get!(s.dev),
                        src_ino: get!(s.ino),
                        src_igen: igen,
                        generation: get!(s.generation),
                        ..Default::default()
                    },
                );
            }
        }
        // The same open again within the fold window (same process and
        // executable, file, access mode, match and uid) is counted, not
        // sent: taint above is kept up to date all the same.
        let fmode = file.mode().unwrap_or(0);
        let (exe_dev, exe_ino) = (exe.dev, exe.ino);
        let key = FoldKey {
            tgid,
            kind: kind as u32,
            exe_ino,
            obj: get!(s.ino),
            exe_dev,
            dev: get!(s.dev),
            mode: fold_mode(f_flags, fmode),
            uid: aya_ebpf::helpers::bpf_get_current_uid_gid() as u32,
            extra: get!(s.matched) | (get!(s.rules) << 8),
            _pad: 0,
        };
        if !fold_check(&key) {
            return;
        }
        // A tracepoint program stages the record (sent as long as its
        // path); an LSM program, which can be preempted, reserves it.
        let at = OpenAt {
            ret,
            mode,
            f_flags,
            src,
            igen,
            fmode,
            owner,
            size: inode.size().unwrap_or(0),
        };
        if slot == LSM_SLOT {
            let Some(rec) = emit_as::<OpenEvent>(kind) else {
                return;
            };
            fill_open(rec.ptr(), s, &key, &at);
            rec.submit();
        } else {
            let Some(rec) = stage_as::<OpenEvent>(kind) else {
                return;
            };
            fill_open(rec.ptr(), s, &key, &at);
            rec.submit();
        }
    }
}

/// What `report_open` learnt of the open, for `fill_open`.
struct OpenAt {
    ret: i64,
    mode: u32,
    f_flags: u32,
    src: u32,
    igen: u32,
    fmode: u32,
    owner: u32,
    size: i64,
}

/// Fills a reported open's record (reserved or staged).
///
/// # Safety
/// `ev` is a writable `OpenEvent` whose header is filled; `s` is the
/// caller's OPEN_STATE slot.
#[inline(always)]
unsafe fn fill_open(ev: *mut OpenEvent, s: *mut OpenState, key: &FoldKey, at: &OpenAt) {
    // SAFETY: the caller's contract; user memory read through
    // bpf_probe_read_user_str only, into the ARG_BUF-byte `arg`.
    unsafe {
        fold_sent(key, &raw mut (*ev).fold);
        (*ev).ret = at.ret;
        (*ev).ino = get!(s.ino);
        (*ev).dev = get!(s.dev);
        (*ev).mode = at.mode;
        (*ev).flags = at.f_flags;
        (*ev).source = at.src;
        (*ev).matched = get!(s.matched);
        (*ev).watch_id = get!(s.watch_id);
        (*ev).name_rules = get!(s.rules);
        (*ev).igen = at.igen;
        (*ev).fmode = at.fmode;
        (*ev).owner = at.owner;
        (*ev).size = at.size;
        (*ev).dfd = AT_FDCWD;
        (*ev).arg_len = 0;
        if let Some((dfd, path, _flags)) = syscall_args(at.src) {
            (*ev).dfd = dfd;
            if path != 0 {
                let n = generated::bpf_probe_read_user_str(
                    (*ev).arg.as_mut_ptr() as *mut c_void,
                    ARG_BUF as u32,
                    path as *const c_void,
                );
                if n > 0 {
                    (*ev).arg_len = n as u32 - 1;
                }
            }
        }
        FilePtr::from_addr(get!(s.file)).read_path(&raw mut (*ev).path);
        (*ev).path.flags |= ns_flags(get!(s.file));
    }
}

/// PATH_OTHER_NS (the file's mount is not in the opener's mount
/// namespace: reached through /proc/<pid>/root, a descriptor from another
/// namespace, or a detached mount) and PATH_GUEST (the opener's namespace
/// is not the host's) of an open of `file` by the current task; 0 where
/// the kernel's BTF lacks the offsets. A BPF function of its own: the
/// open programs stay as the verifier knew them.
#[inline(never)]
pub(crate) fn ns_flags(file: u64) -> u32 {
    use crate::vfs::{Ptr, rd, rd_ptr};
    if file == 0 {
        return 0;
    }
    let Some(mine) = crate::vfs::current_mnt_ns() else {
        return 0;
    };
    // SAFETY: kernel memory is read through bpf_probe_read_kernel only.
    unsafe {
        let mut flags = 0;
        let host = crate::setting!(host_mnt_ns);
        if host != 0 && rd::<u32>(mine, off!(mnt_ns_inum)).is_some_and(|n| n != host) {
            flags |= PATH_GUEST;
        }
        let Some(vfsmnt) = rd_ptr(file as Ptr, off!(file_f_path) + off!(path_mnt)) else {
            return flags;
        };
        let mount = (vfsmnt as u64).wrapping_sub(off!(mount_mnt) as u64) as Ptr;
        let theirs = rd::<u64>(mount, off!(mount_mnt_ns)).unwrap_or(0);
        if theirs != mine as u64 {
            flags |= PATH_OTHER_NS;
        }
        flags
    }
}

/// The code directory (its `watch_id`) a directory is in, when it is not
/// watched itself yet: the parent of `parent`, on the same device.
#[inline(always)]
fn code_grandparent(parent: u64, dev: u32) -> Option<u32> {
    if parent == 0 {
        return None;
    }
    let gp = DentryPtr::from_addr(parent).parent()?;
    let gi = gp.inode()?;
    let key = InodeKey {
        dev,
        _pad: 0,
        ino: gi.ino()?,
    };
    let w = any_watch_entry(&key, gi)?;
    let flags = unsafe { (*w).flags };
    (flags & WATCH_CHILDREN != 0 && flags & WATCH_CODE != 0).then(|| unsafe { (*w).watch_id })
}
