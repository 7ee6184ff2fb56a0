//! Opens of key files: the exit tracepoints of every open syscall and the
//! io_uring completion tracepoint.
//!
//! A successful open is matched on the file it produced (fd -> struct file
//! -> inode), so the name used to reach it does not matter: absolute or
//! relative path, symlink, hardlink, bind mount, /proc/self/fd reopen.
//! Only matches are reserved in the ring buffer.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use sensor_common::{
    ALLOW_ANY_KEY, ARG_BUF, DCFG_CORE_PATTERN, DCFG_CORE_PIPE_LIMIT, DCFG_COREDUMP_FILTER,
    DCFG_SUID_DUMPABLE, InodeKey, MATCH_FAILED_NAME, MATCH_INODE, MATCH_NAME, MATCH_PARENT,
    MATCH_TRACKED, OpenEvent, OpenKind, PROC_ENVIRON, PROC_MAPS, PROC_MEM, PROC_PAGEMAP,
    PROC_SMAPS, PROC_STATUS, SRC_CREAT, SRC_IO_URING, SRC_OPEN, SRC_OPEN_BY_HANDLE, SRC_OPENAT,
    SRC_OPENAT2, STOP_ALLOWLIST, STOP_OWN_KEY, TAINT_FILE, TAINT_MEMORY, Taint, WATCH_CHILDREN,
    WATCH_IGEN, WATCH_SELF, WATCH_TRACKED, name_head,
    names::{NameKey, name_key},
    short_name,
};

use crate::{
    emit::emit_as,
    kptr::{DentryPtr, FilePtr, InodePtr, TaskPtr},
    maps::{
        ENVIRON_READS, NAME_PATTERNS, PROTECTED, WATCHED, WATCHED_NAMES, allowed, count_stop,
        watch_entry,
    },
    off,
    probes::dumpcfg::emit_dump_config,
    setting,
    syscall::{args3, sys_ret},
    taint::add_taint,
    vfs::{Ptr, dentry_name_key, eval_patterns, fd_file, rd},
};

const EPERM: i64 = 1;
const EACCES: i64 = 13;
const AT_FDCWD: i32 = -100;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const O_CREAT_WRONLY_TRUNC: u32 = 0o1101;
const O_PATH: u32 = 0o10000000;

/// Scratch for a failed open's path argument (+ room for 16-byte reads).
#[map]
static ARG_SCRATCH: PerCpuArray<[u8; ARG_BUF + 32]> = PerCpuArray::with_max_entries(1, 0);

// syscalls:sys_exit_<name>: common fields; int __syscall_nr; long ret
// (offset of ret read from the tracepoint's format at load time).
#[tracepoint]
pub fn ks_exit_open(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, SRC_OPEN)
}

#[tracepoint]
pub fn ks_exit_openat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, SRC_OPENAT)
}

#[tracepoint]
pub fn ks_exit_openat2(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, SRC_OPENAT2)
}

#[tracepoint]
pub fn ks_exit_creat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, SRC_CREAT)
}

#[tracepoint]
pub fn ks_exit_open_by_handle_at(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx, SRC_OPEN_BY_HANDLE)
}

/// io_uring:io_uring_complete: void *ctx; void *req; u64 user_data; int res;
/// ... (offsets of req and res read from the format at load time). The
/// completion runs in the submitter or one of its io_uring threads, which
/// share its file table, so `res` is an fd of that table for OPENAT/OPENAT2.
#[tracepoint]
pub fn ks_iou_complete(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Ok(res) = (unsafe { ctx.read_at::<i32>(off!(tp_iou_complete_res) as usize) }) else {
        return 0;
    };
    // res 0 is also what a direct-descriptor (fixed file slot) open returns.
    if res <= 0 {
        return 0;
    }
    let Ok(req) = (unsafe { ctx.read_at::<u64>(off!(tp_iou_complete_req) as usize) }) else {
        return 0;
    };
    let opcode = unsafe { rd::<u8>(req as Ptr, off!(io_kiocb_opcode)) }.unwrap_or(0) as u32;
    if opcode < 64 && (off!(iou_sink_ops) >> opcode) & 1 != 0 {
        crate::probes::flow::iou_sink(req as Ptr, res);
        return 0;
    }
    if opcode != off!(iou_op_openat) && opcode != off!(iou_op_openat2) {
        return 0;
    }
    if is_self() {
        return 0;
    }
    check_opened(res as u64, SRC_IO_URING, res as i64);
    0
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
            check_opened(ret as u64, src, ret);
        } else {
            stamp_opened(ret as u64);
        }
    } else if (ret == -EACCES || ret == -EPERM) && src != SRC_OPEN_BY_HANDLE && !is_self() {
        check_failed(src, ret);
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
fn syscall_args(src: u32) -> Option<(i32, u64, u64)> {
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
    file: u64,
    inode: u64,
    dentry: u64,
    /// 0 when the dentry's parent could not be read.
    parent: u64,
    ino: u64,
    dev: u32,
    matched: u32,
    watch_id: u32,
    /// Generation of a tracked file's readers (the watch entry's).
    generation: u32,
    rules: u32,
    kind: OpenKind,
    /// A failed open's path: (len, start of the final component, end).
    arg_len: u32,
    arg_start: u32,
    arg_end: u32,
}

#[map]
static OPEN_STATE: PerCpuArray<OpenState> = PerCpuArray::with_max_entries(1, 0);

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

/// Checks the file behind `fd` of the current task against the watch map
/// (the inode itself, then its parent directory) and the name patterns.
#[inline(always)]
fn check_opened(fd: u64, src: u32, ret: i64) {
    // SAFETY: `s` is this CPU's OPEN_STATE slot, the program's alone while
    // it runs; watch entries are live map values.
    unsafe {
        let Some(s) = OPEN_STATE.get_ptr_mut(0) else {
            return;
        };
        // The file, its identity, its dentry and parent.
        {
            let Some(file) = fd_file(fd) else { return };
            let Some((key, inode)) = file.identity() else {
                return;
            };
            let Some(dentry) = file.dentry() else {
                return;
            };
            let parent = dentry.parent().map_or(0, |p| p.addr());
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
            let key = InodeKey {
                dev,
                _pad: 0,
                ino: get!(s.ino),
            };
            if let Some(w) = watch_entry(&key, InodePtr::from_addr(get!(s.inode)))
                && (*w).flags & WATCH_SELF != 0
            {
                matched |= MATCH_INODE;
                if (*w).flags & WATCH_TRACKED != 0 {
                    matched |= MATCH_TRACKED;
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
                    if let Some(w) = watch_entry(&pkey, pi)
                        && (*w).flags & WATCH_CHILDREN != 0
                    {
                        matched |= MATCH_PARENT;
                        watch_id = (*w).watch_id;
                    }
                }
            }
            put!(s.matched, matched);
            put!(s.watch_id, watch_id);
            put!(s.generation, g);
            put!(s.kind, OpenKind::KeyOpen);
        }
        // The name patterns.
        let name = dentry_name_key(DentryPtr::from_addr(get!(s.dentry)));
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
        if get!(s.matched) == 0 && !check_other_file(s, &name, ret) {
            return;
        }
        report_open(s, src, ret);
    }
}

/// An open that matched no watch or pattern: a write-open of a core-dump
/// control file (reported here) or a /proc/<pid>/ file worth reporting
/// (returns true with `kind` and `rules` set in the state).
#[inline(always)]
unsafe fn check_other_file(s: *mut OpenState, name: &NameKey, ret: i64) -> bool {
    // SAFETY: `s` is check_opened's OPEN_STATE slot (the caller's); map
    // values are live while the program runs.
    unsafe {
        let inode = InodePtr::from_addr(get!(s.inode));
        let parent = match get!(s.parent) {
            0 => None,
            p => Some(DentryPtr::from_addr(p)),
        };
        if check_dump_config(name, inode, FilePtr::from_addr(get!(s.file)), parent, ret) {
            return false;
        }
        // /proc/<pid>/{mem,pagemap,environ}, and the reconnaissance
        // files of protected processes.
        let pf = proc_file(name);
        if pf == 0 {
            return false;
        }
        let magic = inode.fs_magic().unwrap_or(0);
        if magic != PROC_SUPER_MAGIC {
            return false;
        }
        let pid = match parent {
            Some(p) => parse_pid(&dentry_name_key(p)),
            None => 0,
        };
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if pf == PROC_ENVIRON && pid != tgid {
            match ENVIRON_READS.get_ptr_mut(tgid) {
                Some(n) => *n += 1,
                None => {
                    let _ = ENVIRON_READS.insert(tgid, 1, 0);
                }
            }
        }
        let protected = pid != 0 && PROTECTED.get(pid).is_some();
        // mem and pagemap of any process; environ (tokens) and the
        // reconnaissance files of protected processes only.
        if (pf == PROC_ENVIRON || pf >= PROC_MAPS) && !protected {
            return false;
        }
        // Reading a protected process's memory taints the reader: what it
        // writes next may be a dump. Its environment is not its memory.
        if (pf == PROC_MEM || pf == PROC_PAGEMAP) && protected && tgid != pid {
            add_taint(
                tgid,
                &Taint {
                    flags: TAINT_MEMORY,
                    src_pid: pid,
                    ..Default::default()
                },
            );
        }
        put!(s.kind, OpenKind::ProcFileOpen);
        put!(s.rules, pf);
        true
    }
}

/// Reports the open `s` describes (taints the opener of a key file first).
#[inline(always)]
unsafe fn report_open(s: *mut OpenState, src: u32, ret: i64) {
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
        if kind == OpenKind::KeyOpen && f_flags & 3 != 1 && f_flags & O_PATH == 0 {
            if key_allowed(get!(s.matched), get!(s.watch_id)) {
                count_stop(STOP_ALLOWLIST);
            } else if own_key(get!(s.matched), owner) {
                count_stop(STOP_OWN_KEY);
            } else {
                let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
                add_taint(
                    tgid,
                    &Taint {
                        flags: TAINT_FILE,
                        src_dev: get!(s.dev),
                        src_ino: get!(s.ino),
                        src_igen: igen,
                        generation: get!(s.generation),
                        ..Default::default()
                    },
                );
            }
        }
        let Some(rec) = emit_as::<OpenEvent>(kind) else {
            return;
        };
        let ev = rec.ptr();
        (*ev).ret = ret;
        (*ev).ino = get!(s.ino);
        (*ev).dev = get!(s.dev);
        (*ev).mode = mode;
        (*ev).flags = f_flags;
        (*ev).source = src;
        (*ev).matched = get!(s.matched);
        (*ev).watch_id = get!(s.watch_id);
        (*ev).name_rules = get!(s.rules);
        (*ev).igen = igen;
        (*ev).fmode = file.mode().unwrap_or(0);
        (*ev).owner = owner;
        (*ev).size = inode.size().unwrap_or(0);
        (*ev).dfd = AT_FDCWD;
        (*ev).arg_len = 0;
        if let Some((dfd, path, _flags)) = syscall_args(src) {
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
        rec.submit();
    }
}

/// Is the current executable allowed the key it opened (tracked dumps
/// and copies are never: `[[allow]] dumps` is a user-space allowance)?
#[inline(always)]
fn key_allowed(matched: u32, watch_id: u32) -> bool {
    if matched & MATCH_TRACKED != 0 {
        return false;
    }
    match TaskPtr::current().exe() {
        Some(exe) => allowed(&exe, ALLOW_ANY_KEY, None) || allowed(&exe, watch_id, None),
        None => false,
    }
}

/// A non-root process reading a file it owns that only a key-name pattern
/// matched (not a configured key path, not a tracked file): a user's own
/// key (ssh reading ~/.ssh/id_ed25519), not followed.
#[inline(always)]
fn own_key(matched: u32, owner: u32) -> bool {
    if matched & (MATCH_INODE | MATCH_PARENT | MATCH_TRACKED) != 0 {
        return false;
    }
    let uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
    uid != 0 && uid == owner
}

const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// DCFG_* value of a core-dump control file name, 0 for other names.
#[inline(always)]
fn dump_config_file(name: &NameKey) -> u32 {
    let h = name.head;
    if name.len == 12 && h == name_head(b"core_pattern") {
        DCFG_CORE_PATTERN
    } else if name.len == 15 && h == name_head(b"core_pipe_limit") {
        DCFG_CORE_PIPE_LIMIT
    } else if name.len == 13 && h == name_head(b"suid_dumpable") {
        DCFG_SUID_DUMPABLE
    } else if name.len == 15 && h == name_head(b"coredump_filter") {
        DCFG_COREDUMP_FILTER
    } else {
        0
    }
}

/// A write-open of /proc/sys/kernel/core_pattern, core_pipe_limit,
/// /proc/sys/fs/suid_dumpable or /proc/<pid>/coredump_filter. Returns true
/// when the open was one (reported or not).
#[inline(always)]
fn check_dump_config(
    name: &NameKey,
    inode: InodePtr,
    file: FilePtr,
    parent: Option<DentryPtr>,
    ret: i64,
) -> bool {
    let what = dump_config_file(name);
    if what == 0 {
        return false;
    }
    let magic = inode.fs_magic().unwrap_or(0);
    if magic != PROC_SUPER_MAGIC {
        return false;
    }
    let flags = file.flags().unwrap_or(0);
    if flags & 3 == 0 {
        return true;
    }
    let target = if what == DCFG_COREDUMP_FILTER {
        match parent {
            Some(p) => parse_pid(&dentry_name_key(p)),
            None => 0,
        }
    } else {
        0
    };
    emit_dump_config(what, target, 0, ret);
    true
}

/// PROC_* value of a /proc/<pid>/ file name, 0 for other names.
#[inline(always)]
fn proc_file(name: &NameKey) -> u32 {
    if name.len > 8 {
        return 0;
    }
    let w = name.head[0];
    if w == short_name(b"mem") {
        PROC_MEM
    } else if w == short_name(b"pagemap") {
        PROC_PAGEMAP
    } else if w == short_name(b"environ") {
        PROC_ENVIRON
    } else if w == short_name(b"maps") {
        PROC_MAPS
    } else if w == short_name(b"smaps") {
        PROC_SMAPS
    } else if w == short_name(b"status") {
        PROC_STATUS
    } else {
        0
    }
}

/// The number a /proc directory is named after (0 if not all digits).
#[inline(always)]
fn parse_pid(name: &NameKey) -> u32 {
    if name.len == 0 || name.len > 10 {
        return 0;
    }
    let mut n = 0u32;
    let mut i = 0u32;
    while i < 10 {
        if i >= name.len {
            break;
        }
        let b = ((name.head[(i / 8) as usize] >> (8 * (i % 8))) & 0xff) as u8;
        if !b.is_ascii_digit() {
            return 0;
        }
        n = n.wrapping_mul(10).wrapping_add((b - b'0') as u32);
        i += 1;
    }
    n
}

#[repr(C)]
struct SlashScan {
    len: u64,
    start: u64,
}

/// bpf_loop callback: remembers the position after each '/'.
#[inline(never)]
unsafe extern "C" fn slash_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is arg_final_name's `SlashScan` (bpf_loop passes it
    // through); the scratch index is masked into the buffer.
    unsafe {
        let scan = ctx as *mut SlashScan;
        if i >= (*scan).len {
            return 1;
        }
        let Some(buf) = ARG_SCRATCH.get_ptr(0) else {
            return 1;
        };
        if (*buf)[(i as usize) & (ARG_BUF - 1)] == b'/' {
            (*scan).start = i + 1;
        }
        0
    }
}

/// Reads the user path at `path` into ARG_SCRATCH and checks its final
/// component: when it names a watched or tracked file or matches a key-name
/// pattern, returns (the scratch buffer, the path length, the matching
/// name rules).
#[inline(always)]
pub unsafe fn arg_final_name(path: u64) -> Option<(*const u8, u32, u32)> {
    // SAFETY: user memory read through bpf_probe_read_user_str only, into
    // this CPU's ARG_SCRATCH (ARG_BUF + 32 bytes); every index into it is
    // masked below ARG_BUF, and the 16-byte reads start below ARG_BUF;
    // `scan` outlives the bpf_loop that hands it to slash_step.
    unsafe {
        if path == 0 {
            return None;
        }
        let buf = ARG_SCRATCH.get_ptr_mut(0)? as *mut u8;
        let n = generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            ARG_BUF as u32,
            path as *const c_void,
        );
        if n <= 1 {
            return None;
        }
        let len = (n - 1) as usize & (ARG_BUF - 1);
        // A trailing '/' (a directory named "dir/"): look at the name before it.
        let mut end = len;
        if end > 1 && *buf.add((end - 1) & (ARG_BUF - 1)) == b'/' {
            end -= 1;
        }
        // Start of the final component (a bpf_loop: verified once).
        let mut scan = SlashScan {
            len: end as u64,
            start: 0,
        };
        generated::bpf_loop(
            ARG_BUF as u32,
            slash_step as *mut c_void,
            &raw mut scan as *mut c_void,
            0,
        );
        // Through map memory: what the verifier knows of these values
        // (from branches before, and the callback's stack writes) is
        // dropped, so the paths before converge (see OpenState).
        let s = OPEN_STATE.get_ptr_mut(0)?;
        put!(s.arg_len, len as u32);
        put!(s.arg_end, end as u32);
        put!(s.arg_start, scan.start as u32);
        let len = get!(s.arg_len) as usize & (ARG_BUF - 1);
        let end = get!(s.arg_end) as usize & (ARG_BUF - 1);
        let start = get!(s.arg_start) as usize & (ARG_BUF - 1);
        let name_len = end.saturating_sub(start);
        if name_len == 0 {
            return None;
        }
        let head: [u64; 2] = core::ptr::read_unaligned(buf.add(start) as *const [u64; 2]);
        let tail: [u64; 2] = if name_len >= 16 {
            core::ptr::read_unaligned(buf.add((end - 16) & (ARG_BUF - 1)) as *const [u64; 2])
        } else {
            [0, 0]
        };
        let key: NameKey = name_key(head, tail, name_len as u32);
        let mut rules = 0u32;
        if let Some(pats) = NAME_PATTERNS.get(0) {
            rules = eval_patterns(pats.count, &key, &NameKey::default());
        }
        let watched = WATCHED_NAMES.get(key).is_some();
        if rules == 0 && !watched {
            return None;
        }
        Some((buf as *const u8, len as u32, rules))
    }
}

/// A failed open (EACCES/EPERM) has no file: report it when the final
/// component of the path argument names a watched file or matches a key
/// name pattern. User space resolves the path and confirms.
#[inline(always)]
fn check_failed(src: u32, ret: i64) {
    // SAFETY: user memory read through bpf_probe_read_user only; `buf` is
    // arg_final_name's scratch, ARG_BUF bytes readable; `ev` is the
    // reserved record.
    unsafe {
        let Some((dfd, path, flags)) = syscall_args(src) else {
            return;
        };
        let Some((buf, len, rules)) = arg_final_name(path) else {
            return;
        };
        let Some(rec) = emit_as::<OpenEvent>(OpenKind::KeyOpenFailed) else {
            return;
        };
        let ev = rec.ptr();
        (*ev).ret = ret;
        (*ev).ino = 0;
        (*ev).dev = 0;
        (*ev).mode = 0;
        (*ev).flags = flags as u32;
        (*ev).dfd = dfd;
        (*ev).source = src;
        (*ev).matched = MATCH_FAILED_NAME;
        (*ev).watch_id = 0;
        (*ev).name_rules = rules;
        (*ev).igen = 0;
        (*ev).fmode = 0;
        (*ev).owner = u32::MAX;
        (*ev).size = 0;
        (*ev).arg_len = len;
        generated::bpf_probe_read_kernel(
            (*ev).arg.as_mut_ptr() as *mut c_void,
            ARG_BUF as u32,
            buf as *const c_void,
        );
        (*ev).path.len = 0;
        (*ev).path.flags = 0;
        rec.submit();
    }
}
