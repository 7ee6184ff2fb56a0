//! Cross-process memory access: ptrace, process_vm_readv/writev and
//! pidfd_getfd, at syscall exit (arguments from the task's saved user
//! registers, result from the tracepoint). Self access and PTRACE_TRACEME
//! are dropped here; ptrace reads and writes (PEEK*/POKE*/GETREGS...) only
//! reach user space when the target is protected.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use sensor_common::{
    MEM_PIDFD_GETFD, MEM_PTRACE, MEM_VM_READV, MEM_VM_WRITEV, MemAccessEvent, TAINT_MEMORY, Taint,
    x86_64::{PTRACE_GETREGS, PTRACE_SETFPREGS},
};

use crate::{
    emit::emit,
    kptr::PidPtr,
    maps::PROTECTED,
    syscall::{args3, sys_ret},
    taint::add_taint,
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

/// Reports an access to another process's memory (a successful one to a
/// protected process taints the actor first).
#[inline(always)]
fn report(op: u32, ret: i64, target: u32, request: u64, arg: u64) {
    let protected = unsafe { PROTECTED.get(target) }.is_some() as u32;
    // A successful read of (or attach to) a protected process taints the
    // actor: a file it writes next may be a dump of that memory.
    if protected != 0 && ret >= 0 && op != MEM_VM_WRITEV {
        add_taint(
            (bpf_get_current_pid_tgid() >> 32) as u32,
            &Taint {
                flags: TAINT_MEMORY,
                src_pid: target,
                ..Default::default()
            },
        );
    }
    let Some(rec) = emit::<MemAccessEvent>() else {
        return;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).ret = ret;
        (*ev).request = request;
        (*ev).arg = arg;
        (*ev).op = op;
        (*ev).target = target;
        (*ev).target_protected = protected;
        (*ev)._pad = 0;
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
    let pid = pid as u32;
    if request == PTRACE_TRACEME || pid == tgid {
        return 0;
    }
    let attach = request == PTRACE_ATTACH || request == PTRACE_SEIZE;
    let protected_access = is_ptrace_access(request) && unsafe { PROTECTED.get(pid) }.is_some();
    if !(attach || protected_access) {
        return 0;
    }
    report(MEM_PTRACE, sys_ret(&ctx), pid, request, addr);
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
    let pid = pid as u32;
    if pid == tgid {
        return 0;
    }
    report(op, sys_ret(ctx), pid, 0, 0);
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
    if skip().is_none() {
        return 0;
    }
    let Some((pidfd, targetfd, _)) = args3() else {
        return 0;
    };
    let target = pidfd_target(pidfd);
    report(MEM_PIDFD_GETFD, sys_ret(&ctx), target, pidfd, targetfd);
    0
}
