//! Enforcement: BPF LSM hooks that deny, with EPERM, what a rule in enforce
//! mode forbids. They are attached only where the kernel runs BPF LSM: the
//! `task_kill` hook only for rules in enforce mode, `file_open` and
//! `ptrace_access_check` always there (they also detect: `file_open`
//! records who opened each watched file for the fd hand-off detection,
//! `lsm_detect.rs`; `ptrace_access_check` reports accesses to other
//! processes through syscalls the tracepoints do not enumerate,
//! `detect_access`). The enforcement part reports only its denials
//! (`DeniedEvent`), never what it lets through: opens, ptrace,
//! process_vm_* and pidfd_getfd are detected by the tracepoints (no double
//! alerts).
//!
//! - `ptrace_access_check`: ptrace attach, process_vm_readv/writev,
//!   /proc/<pid>/mem and pidfd_getfd (PTRACE_MODE_ATTACH accesses) of a
//!   protected process by another process.
//! - `file_open`: opens of watched key files by processes not allowlisted;
//!   and the core file the kernel opens for a protected process that dumps.
//! - `task_kill`: dump-producing signals sent to a protected process by
//!   another process.
//!
//! Never denied: the sensor itself (`SETTINGS.self_pid`) and pid 1.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use sensor_common::{
    ALLOW_ANY_KEY, ALLOW_MEMORY, DENIED_OBSERVED, DeniedEvent, ENF_CORE_DUMP, ENF_FORCED_CRASH,
    ENF_KEY_OPEN, ENF_PIDFD_GETFD, ENF_PROC_MEM, ENF_PTRACE, ENF_VM_READ, ENF_VM_WRITE, InodeKey,
    MEM_LSM_ACCESS, MemAccessEvent, SIG_DISP_HANDLED, SIG_DISP_IGNORED, WATCH_CHILDREN, WATCH_SELF,
    WATCH_TRACKED, is_dump_signal,
    x86_64::{
        NR_CREAT, NR_IO_URING_ENTER, NR_OPEN, NR_OPEN_BY_HANDLE_AT, NR_OPENAT, NR_OPENAT2,
        NR_PIDFD_GETFD, NR_PROCESS_VM_READV, NR_PROCESS_VM_WRITEV, NR_PTRACE,
    },
};

use crate::vfs::{S_IFDIR, S_IFMT};
use crate::{
    emit::{emit, emit_lsm},
    kptr::{FilePtr, SignalPtr, TaskPtr},
    maps::{ENFORCE, PROTECTED, allowed, watch_entry},
    setting,
    syscall::{current_nr, current_nr_ax},
};

const EPERM: i32 = 1;
const PTRACE_MODE_ATTACH: u32 = 0x02;
const PTRACE_MODE_NOAUDIT: u32 = 0x04;
const PTRACE_MODE_REALCREDS: u32 = 0x10;
const PF_EXITING: u32 = 0x0000_0004;
const PF_IO_WORKER: u32 = 0x0000_0010;
const PF_KTHREAD: u32 = 0x0020_0000;
const ENOSYS: i64 = 38;
const PF_DUMPCORE: u32 = 0x0000_0200;

#[inline(always)]
fn enforced(rule: u32) -> bool {
    ENFORCE.get(0).is_some_and(|bits| *bits & (1 << rule) != 0)
}

/// The current tgid, or None when it is exempt (the sensor, pid 1).
#[inline(always)]
fn actor_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == setting!(self_pid) || tgid <= 1 {
        None
    } else {
        Some(tgid)
    }
}

/// Reports a denial. `file` (when given) gives the record its file.
#[inline(always)]
fn report(rule: u32, target: u32, arg: u32, file: Option<FilePtr>, key: InodeKey, watch_id: u32) {
    report_as(rule, target, arg, file, key, watch_id, 0);
}

/// `report`, or with `observed` = DENIED_OBSERVED what a hook saw without
/// denying it.
#[inline(always)]
fn report_as(
    rule: u32,
    target: u32,
    arg: u32,
    file: Option<FilePtr>,
    key: InodeKey,
    watch_id: u32,
    observed: u32,
) {
    // SAFETY: `ev` is the reserved record.
    unsafe {
        let Some(rec) = emit_lsm::<DeniedEvent>() else {
            return;
        };
        let ev = rec.ptr();
        (*ev).rule = rule;
        (*ev).target = target;
        (*ev).arg = arg;
        (*ev).syscall = current_nr();
        (*ev).ino = key.ino;
        (*ev).dev = key.dev;
        (*ev).watch_id = watch_id;
        (*ev).flags = 0;
        (*ev).observed = observed;
        (*ev).path.len = 0;
        (*ev).path.flags = 0;
        if let Some(file) = file {
            (*ev).flags = file.flags().unwrap_or(0);
            file.read_path(&raw mut (*ev).path);
        }
        // A denial is urgent: the critical lane wakes user space now.
        rec.submit();
    }
}

/// Syscalls whose access to another process the tracepoints report
/// (memory.rs, open.rs): the LSM hook leaves them to them (no double
/// alerts), and reports the others.
#[inline(always)]
fn enumerated(nr: i32) -> bool {
    matches!(
        nr,
        NR_PTRACE
            | NR_PROCESS_VM_READV
            | NR_PROCESS_VM_WRITEV
            | NR_PIDFD_GETFD
            | NR_OPEN
            | NR_OPENAT
            | NR_OPENAT2
            | NR_CREAT
            | NR_OPEN_BY_HANDLE_AT
            | NR_IO_URING_ENTER
    )
}

/// Detection: an access to another process through a syscall the
/// tracepoints do not enumerate. Syscall-level accesses by pid
/// (PTRACE_MODE_REALCREDS: perf_event_open, kcmp, get_robust_list,
/// move_pages...) of a protected process, or in attach mode of any process;
/// /proc file checks (FSCREDS) in attach mode of a protected process
/// (/proc/<pid>/stack, syscall, personality). NOAUDIT checks (ps reading
/// /proc/<pid>/stat) and io_uring workers are not reported.
#[inline(always)]
fn detect_access(target: u32, mode: u32) {
    if mode & PTRACE_MODE_NOAUDIT != 0 || crate::setting!(empty_programs) != 0 {
        return;
    }
    let nr = current_nr();
    if nr < 0 || enumerated(nr) {
        return;
    }
    let protected = unsafe { PROTECTED.get(target) }.is_some();
    let attach = mode & PTRACE_MODE_ATTACH != 0;
    let by_pid = mode & PTRACE_MODE_REALCREDS != 0;
    if !(if protected {
        attach || by_pid
    } else {
        attach && by_pid
    }) {
        return;
    }
    let flags = TaskPtr::current().flags().unwrap_or(0);
    if flags & PF_IO_WORKER != 0 {
        return;
    }
    let Some(rec) = emit::<MemAccessEvent>() else {
        return;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).ret = 0;
        (*ev).request = nr as u64;
        (*ev).arg = mode as u64;
        (*ev).op = MEM_LSM_ACCESS;
        (*ev).target = target;
        (*ev).target_protected = protected as u32;
        (*ev).tid = 0;
        crate::fold::no_fold(&raw mut (*ev).fold);
    }
    rec.submit();
}

// int ptrace_access_check(struct task_struct *child, unsigned int mode)
#[lsm(hook = "ptrace_access_check")]
pub fn ks_lsm_ptrace_access_check(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let child = TaskPtr::from_addr(ctx.arg(0));
    let mode: u32 = ctx.arg(1);
    let Some(actor) = actor_tgid() else {
        return 0;
    };
    let Some(target) = child.tgid() else {
        return 0;
    };
    if target == actor || target <= 1 {
        return 0;
    }
    detect_access(target, mode);
    if mode & PTRACE_MODE_ATTACH == 0 || unsafe { PROTECTED.get(target) }.is_none() {
        return 0;
    }
    let rule = match current_nr() {
        NR_PTRACE => ENF_PTRACE,
        NR_PROCESS_VM_READV => ENF_VM_READ,
        NR_PROCESS_VM_WRITEV => ENF_VM_WRITE,
        NR_PIDFD_GETFD => ENF_PIDFD_GETFD,
        // open/openat/openat2 of /proc/<pid>/mem, io_uring opens of it.
        _ => ENF_PROC_MEM,
    };
    if !enforced(rule) {
        return 0;
    }
    if let (Some(a), Some(t)) = (TaskPtr::current().exe(), child.exe())
        && allowed(&a, ALLOW_MEMORY, Some(&t))
    {
        return 0;
    }
    report(rule, target, mode, None, InodeKey::default(), 0);
    -EPERM
}

// int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
//               const struct cred *cred)
#[lsm(hook = "task_kill")]
pub fn ks_lsm_task_kill(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let sig: i32 = ctx.arg(2);
    if sig <= 0 || !is_dump_signal(sig as u32) || !enforced(ENF_FORCED_CRASH) {
        return 0;
    }
    let Some(actor) = actor_tgid() else {
        return 0;
    };
    let task = TaskPtr::from_addr(ctx.arg(0));
    let Some(target) = task.tgid() else {
        return 0;
    };
    if target == actor || target <= 1 || unsafe { PROTECTED.get(target) }.is_none() {
        return 0;
    }
    // A signal the target handles or ignores dumps nothing (nginx's
    // graceful SIGQUIT): let it through; the tracepoint reports it.
    let disposition = task.sig_disposition(sig as u32);
    if disposition == SIG_DISP_HANDLED || disposition == SIG_DISP_IGNORED {
        return 0;
    }
    report(
        ENF_FORCED_CRASH,
        target,
        sig as u32,
        None,
        InodeKey::default(),
        0,
    );
    -EPERM
}

/// True while the current task's process is dumping core.
#[inline(always)]
fn dumping() -> bool {
    let task = TaskPtr::current();
    let flags = task.flags().unwrap_or(0);
    if flags & PF_DUMPCORE != 0 {
        return true;
    }
    task.signal()
        .and_then(|s| SignalPtr::from_addr(s as u64).core_state())
        .is_some()
}

// int file_open(struct file *file)
#[lsm(hook = "file_open")]
pub fn ks_lsm_file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file = FilePtr::from_addr(ctx.arg(0));
    crate::probes::lsm_detect::note_opener(file);
    let Some(actor) = actor_tgid() else {
        return 0;
    };
    // The core file the kernel opens for a protected process that dumps:
    // denied in enforce mode; else reported as seen, so user space names
    // the core by the inode the kernel opened (whatever core_pattern, the
    // dead process's cwd or a rename since say).
    if dumping() && unsafe { PROTECTED.get(actor) }.is_some() {
        let key = file.identity().map(|(k, _)| k).unwrap_or_default();
        if enforced(ENF_CORE_DUMP) {
            report(ENF_CORE_DUMP, actor, 0, Some(file), key, 0);
            return -EPERM;
        }
        report_as(ENF_CORE_DUMP, actor, 0, Some(file), key, 0, DENIED_OBSERVED);
        return 0;
    }
    if enforced(ENF_KEY_OPEN) {
        let r = check_key_open(file);
        if r != 0 {
            return r;
        }
    }
    // Detection of the opens no syscall tracepoint sees: io_uring's.
    if crate::probes::open::lsm_reports_iou_opens() && iou_context() {
        crate::probes::open::check_lsm_open(file);
    }
    0
}

/// Is the current open io_uring's (an OPENAT/OPENAT2 request issued by
/// the ring rather than an open syscall of the task)? An io-wq or SQPOLL
/// thread (PF_IO_WORKER, in the submitter's thread group); the submitter
/// inside io_uring_enter (inline issue, task work while it waits); the
/// submitter past the end of any syscall or outside one (task work run on
/// the way back to user space: `ax` no longer -ENOSYS, or no syscall), or
/// exiting (requests cancelled or run at exit). Open syscalls in progress
/// (their own exit tracepoints report them), exec, kernel threads and core
/// dumps are not.
#[inline(always)]
fn iou_context() -> bool {
    let flags = TaskPtr::current().flags().unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return false;
    }
    if flags & PF_IO_WORKER != 0 {
        return true;
    }
    let (nr, ax) = current_nr_ax();
    if nr == NR_IO_URING_ENTER {
        return true;
    }
    let in_syscall = nr >= 0 && ax == -ENOSYS;
    (!in_syscall || flags & PF_EXITING != 0) && !dumping()
}

#[inline(always)]
fn check_key_open(file: FilePtr) -> i32 {
    // SAFETY: `watch_entry`'s pointers are live map values.
    unsafe {
        let Some((key, inode)) = file.identity() else {
            return 0;
        };
        let mut watch_id = None;
        if let Some(w) = watch_entry(&key, inode)
            && (*w).flags & WATCH_SELF != 0
        {
            // Tracked files (dumps, copies) are dump-file-access's.
            if (*w).flags & WATCH_TRACKED != 0 {
                return 0;
            }
            watch_id = Some((*w).watch_id);
        }
        if watch_id.is_none() {
            let Some(dentry) = file.dentry() else {
                return 0;
            };
            let Some(parent) = dentry.parent() else {
                return 0;
            };
            let Some(pi) = parent.inode() else {
                return 0;
            };
            let Some(pino) = pi.ino() else {
                return 0;
            };
            let pkey = InodeKey {
                dev: key.dev,
                _pad: 0,
                ino: pino,
            };
            if let Some(w) = watch_entry(&pkey, pi)
                && (*w).flags & WATCH_CHILDREN != 0
            {
                watch_id = Some((*w).watch_id);
            }
        }
        let Some(watch_id) = watch_id else {
            return 0;
        };
        let mode = inode.mode().unwrap_or(0) as u32;
        if mode & S_IFMT == S_IFDIR {
            return 0;
        }
        if let Some(exe) = TaskPtr::current().exe()
            && (allowed(&exe, ALLOW_ANY_KEY, None) || allowed(&exe, watch_id, None))
        {
            return 0;
        }
        report(ENF_KEY_OPEN, 0, 0, Some(file), key, watch_id);
        -EPERM
    }
}
