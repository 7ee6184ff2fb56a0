//! Changes that enable or redirect core dumps: PR_SET_DUMPABLE by a
//! protected process, RLIMIT_CORE set on one (setrlimit, prlimit64), and
//! (from the open probe) write-opens of the core-dump sysctls and of
//! /proc/<pid>/coredump_filter; and a swap area switched on (swapon), to
//! which every process's pages, keys included, may be written.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{DCFG_RLIMIT_CORE, DCFG_SET_DUMPABLE, DCFG_SWAPON, DumpConfigEvent};

use crate::{
    emit::emit,
    maps::{PROTECTED, protected_target},
    setting,
    syscall::{args3, sys_ret},
};

const PR_SET_DUMPABLE: u64 = 4;
const RLIMIT_CORE: u64 = 4;

/// Reports a dump-configuration change.
#[inline(always)]
pub fn emit_dump_config(what: u32, target: u32, value: u64, ret: i64) {
    let Some(rec) = emit::<DumpConfigEvent>() else {
        return;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).ret = ret;
        (*ev).value = value;
        (*ev).what = what;
        (*ev).target = target;
    }
    rec.submit();
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn is_protected(pid: u32) -> bool {
    unsafe { PROTECTED.get(pid) }.is_some()
}

// syscalls:sys_exit_prctl; int prctl(int option, unsigned long arg2, ...)
#[tracepoint]
pub fn ks_exit_prctl(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Some((option, arg2, _)) = args3() else {
        return 0;
    };
    let me = current_tgid();
    if option != PR_SET_DUMPABLE || me == setting!(self_pid) || !is_protected(me) {
        return 0;
    }
    emit_dump_config(DCFG_SET_DUMPABLE, me, arg2, sys_ret(&ctx));
    0
}

/// RLIMIT_CORE soft limit from a user `struct rlimit` (or rlimit64).
#[inline(always)]
fn rlimit_cur(ptr: u64) -> u64 {
    if ptr == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_user(ptr as *const u64) }.unwrap_or(0)
}

// syscalls:sys_exit_setrlimit; int setrlimit(unsigned int resource, struct rlimit *rlim)
#[tracepoint]
pub fn ks_exit_setrlimit(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Some((resource, rlim, _)) = args3() else {
        return 0;
    };
    let me = current_tgid();
    if resource != RLIMIT_CORE || !is_protected(me) {
        return 0;
    }
    emit_dump_config(DCFG_RLIMIT_CORE, me, rlimit_cur(rlim), sys_ret(&ctx));
    0
}

// syscalls:sys_exit_prlimit64; (pid_t pid, unsigned int resource,
// const struct rlimit64 *new_rlim, struct rlimit64 *old_rlim)
#[tracepoint]
pub fn ks_exit_prlimit64(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Some((pid, resource, new)) = args3() else {
        return 0;
    };
    if resource != RLIMIT_CORE || new == 0 {
        return 0;
    }
    // prlimit64 of a thread id sets its process's limit: a thread of a
    // protected process names that process.
    let named = if pid == 0 {
        current_tgid()
    } else {
        match crate::pidns::host_pid(pid as u32) {
            Some(p) => p,
            None => return 0,
        }
    };
    let Some(target) = protected_target(named) else {
        return 0;
    };
    emit_dump_config(DCFG_RLIMIT_CORE, target, rlimit_cur(new), sys_ret(&ctx));
    0
}

// syscalls:sys_exit_swapon; int swapon(const char *path, int swapflags).
// A swap area switched on: cached open verdicts are void (an active swap
// file is a raw read from now on, `open_raw.rs`), and user space is told.
#[tracepoint]
pub fn ks_exit_swapon(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let ret = sys_ret(&ctx);
    if ret != 0 {
        return 0;
    }
    crate::probes::verdict::bump();
    let flags = args3().map_or(0, |(_, f, _)| f);
    emit_dump_config(DCFG_SWAPON, current_tgid(), flags, ret);
    0
}
