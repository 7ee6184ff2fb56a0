//! Cross-process memory access: ptrace, process_vm_readv/writev and
//! pidfd_getfd, at syscall exit (arguments from the task's saved user
//! registers, result from the tracepoint). Self access and PTRACE_TRACEME
//! are dropped here; ptrace reads and writes (PEEK*/POKE*/GETREGS...) only
//! reach user space when the target is protected. A thread id of a
//! protected process (`PROTECTED_THREADS`) names that process: the record's
//! target is its tgid (the tid named goes along), with the same taint. A
//! thread id of the caller's own group is no record (thread.rs). A pid
//! named from inside a pid namespace is its host pid first (pidns.rs).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sensor_common::{
    EventKind, FoldKey, MEM_PIDFD_GETFD, MEM_PTRACE, MEM_VM_READV, MEM_VM_WRITEV, MemAccessEvent,
    TAINT_MEMORY, TAINT_STRONG, Taint,
    x86_64::{PTRACE_GETREGS, PTRACE_SETFPREGS},
};

use crate::{
    emit::emit,
    fold::{fold_check, fold_sent},
    kptr::{PidPtr, TaskPtr},
    maps::protected_target,
    pidns::host_pid,
    syscall::{args3, sys_ret},
    taint::add_taint,
    thread::own_thread,
    vfs::fd_file,
};

const PTRACE_TRACEME: u64 = 0;
const PTRACE_PEEKTEXT: u64 = 1;
const PTRACE_POKEUSER: u64 = 6;
const PTRACE_ATTACH: u64 = 16;
const PTRACE_GETREGSET: u64 = 0x4204;
const PTRACE_SETREGSET: u64 = 0x4205;
const PTRACE_SEIZE: u64 = 0x4206;

/// Requests that read or write the tracee's memory or registers.
fn is_ptrace_access(req: u64) -> bool {
    (PTRACE_PEEKTEXT..=PTRACE_POKEUSER).contains(&req)
        || (PTRACE_GETREGS..=PTRACE_SETFPREGS).contains(&req)
        || req == PTRACE_GETREGSET
        || req == PTRACE_SETREGSET
}

/// The target of an access: the pid the caller named, the process it
/// belongs to (a thread id of a protected process resolves to its tgid)
/// and whether that process is protected.
#[derive(Clone, Copy)]
struct Target {
    named: u32,
    tgid: u32,
    protected: bool,
}

#[inline(always)]
fn target_of(named: u32) -> Target {
    match protected_target(named) {
        Some(tgid) => Target {
            named,
            tgid,
            protected: true,
        },
        None => Target {
            named,
            tgid: named,
            protected: false,
        },
    }
}

/// Reports an access to another process's memory (a successful one to a
/// protected process taints the actor first). An access to the actor's
/// own thread group, through any of its thread ids, is no report (a
/// protected process's threads resolve through `PROTECTED_THREADS`, any
/// other process's by a walk of the caller's own thread list).
#[inline(always)]
fn report(actor: u32, op: u32, ret: i64, t: Target, request: u64, arg: u64) {
    if t.tgid == actor || (!t.protected && own_thread(t.named)) {
        return;
    }
    // A successful read of (or attach to) a protected process taints the
    // actor: a file it writes next may be a dump of that memory.
    if t.protected && ret >= 0 && op != MEM_VM_WRITEV {
        add_taint(
            actor,
            &Taint {
                flags: TAINT_MEMORY | TAINT_STRONG,
                src_pid: t.tgid,
                ..Default::default()
            },
        );
    }
    // The same access again within the fold window (same process and
    // executable, target, operation and request, result) is counted, not
    // sent: a PEEKDATA loop is one record per window.
    let (exe_dev, exe_ino) = match TaskPtr::current().exe() {
        Some(e) => (e.dev, e.ino),
        None => (0, 0),
    };
    let key = FoldKey {
        tgid: actor,
        kind: EventKind::MemAccess as u32,
        exe_ino,
        obj: t.named as u64,
        exe_dev,
        dev: op,
        mode: request as u32,
        uid: aya_ebpf::helpers::bpf_get_current_uid_gid() as u32,
        extra: if ret < 0 { (-ret) as u32 } else { 0 },
        _pad: 0,
    };
    if !fold_check(&key) {
        return;
    }
    let Some(rec) = emit::<MemAccessEvent>() else {
        return;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        fold_sent(&key, &raw mut (*ev).fold);
        (*ev).ret = ret;
        (*ev).request = request;
        (*ev).arg = arg;
        (*ev).op = op;
        (*ev).target = t.tgid;
        (*ev).target_protected = t.protected as u32;
        (*ev).tid = if t.named != t.tgid { t.named } else { 0 };
    }
    rec.submit();
}

#[inline(always)]
fn skip() -> Option<u32> {
    crate::maps::acting_tgid()
}

// syscalls:sys_exit_ptrace; long ptrace(long request, pid_t pid, addr, data)
#[tracepoint]
pub fn ks_exit_ptrace(ctx: TracePointContext) -> u32 {
    let Some(tgid) = skip() else { return 0 };
    let Some((request, pid, addr)) = args3() else {
        return 0;
    };
    if request == PTRACE_TRACEME {
        return 0;
    }
    // A caller in a container names the target in its pid namespace.
    let Some(pid) = host_pid(pid as u32) else {
        return 0;
    };
    if pid == tgid {
        return 0;
    }
    let attach = request == PTRACE_ATTACH || request == PTRACE_SEIZE;
    if !attach && !is_ptrace_access(request) {
        return 0;
    }
    // ptrace works on threads: PEEKDATA of a protected process's thread
    // id reads the protected process.
    let t = target_of(pid);
    if !(attach || t.protected) {
        return 0;
    }
    report(tgid, MEM_PTRACE, sys_ret(&ctx), t, request, addr);
    0
}

// syscalls:sys_exit_process_vm_readv; (pid_t pid, lvec, liovcnt, rvec, ...)
#[tracepoint]
pub fn ks_exit_process_vm_readv(ctx: TracePointContext) -> u32 {
    vm_access(&ctx, MEM_VM_READV)
}

// syscalls:sys_exit_process_vm_writev
#[tracepoint]
pub fn ks_exit_process_vm_writev(ctx: TracePointContext) -> u32 {
    vm_access(&ctx, MEM_VM_WRITEV)
}

#[inline(always)]
fn vm_access(ctx: &TracePointContext, op: u32) -> u32 {
    let Some(tgid) = skip() else { return 0 };
    let Some((pid, _, _)) = args3() else {
        return 0;
    };
    let Some(pid) = host_pid(pid as u32) else {
        return 0;
    };
    if pid == tgid {
        return 0;
    }
    report(tgid, op, sys_ret(ctx), target_of(pid), 0, 0);
    0
}

const PID_FS_MAGIC: u64 = 0x5049_4446;

/// The global pid behind a pidfd of the current task: a pidfs inode keeps
/// its struct pid in i_private, an anon-inode pidfd (before pidfs) in the
/// file's private_data.
#[inline(always)]
fn pidfd_target(pidfd: u64) -> u32 {
    let Some(file) = fd_file(pidfd) else { return 0 };
    let Some(inode) = file.inode() else {
        return 0;
    };
    let magic = inode.fs_magic().unwrap_or(0);
    let pid = if magic == PID_FS_MAGIC {
        inode.private()
    } else {
        file.private_data()
    };
    pid.and_then(|p| PidPtr::from_addr(p as u64).nr())
        .map(|n| n.max(0) as u32)
        .unwrap_or(0)
}

// syscalls:sys_exit_pidfd_getfd; (int pidfd, int targetfd, unsigned int flags)
#[tracepoint]
pub fn ks_exit_pidfd_getfd(ctx: TracePointContext) -> u32 {
    let Some(tgid) = skip() else { return 0 };
    let Some((pidfd, targetfd, _)) = args3() else {
        return 0;
    };
    // A pidfd may name a thread (PIDFD_THREAD, 6.9+): its pid is a tid.
    let t = target_of(pidfd_target(pidfd));
    report(tgid, MEM_PIDFD_GETFD, sys_ret(&ctx), t, pidfd, targetfd);
    0
}
