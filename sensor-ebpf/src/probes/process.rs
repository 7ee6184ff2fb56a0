//! Process lifecycle: exec, fork, exit. Feeds user space's process table.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    CMDLINE_BUF, ExecEvent, ExitEvent, ForkEvent, RenameEvent, STOP_EXEC, STOP_MAP_FULL,
    TAINT_HELPER, Taint, WATCH_SELF,
    x86_64::{NR_EXECVE, NR_EXECVEAT},
};

use crate::{
    emit::emit,
    kptr::{FdArrayPtr, SignalPtr, TaskPtr},
    maps::{
        ENVIRON_READS, GROUP_EXITED, PROTECTED, PROTECTED_COMMS, PROTECTED_EXES, TAINTED,
        TAINTED_PIPES, count_stop, watch_entry,
    },
    off, setting,
    syscall::current_nr,
    taint::{add_taint, next_gen},
    vfs::fd_file,
};

/// sched:sched_process_exec (fields unused: the new image is read from
/// `current->mm`: exe_file for the real executable, arg_start..arg_end for
/// the command line).
#[tracepoint]
pub fn ks_sched_exec(_ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    taint_at_exec();
    protect_at_exec();
    let Some(rec) = emit::<ExecEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; kernel and user memory are read
    // through bpf_probe_read_kernel/user only (the command line into
    // `cmdline`, at most CMDLINE_BUF bytes).
    unsafe {
        let task = TaskPtr::current();
        (*ev).ppid = task.real_parent().and_then(|p| p.tgid()).unwrap_or(0);
        (*ev).start_ns = task.start_time().unwrap_or(0);
        (*ev).cmdline_len = 0;
        (*ev).exe.len = 0;
        (*ev).exe.flags = 0;
        if let Some(mm) = task.mm() {
            let start = mm.arg_start().unwrap_or(0);
            let end = mm.arg_end().unwrap_or(0);
            if end > start {
                let mut n = end - start;
                if n > CMDLINE_BUF as u64 {
                    n = CMDLINE_BUF as u64;
                }
                if generated::bpf_probe_read_user(
                    (*ev).cmdline.as_mut_ptr() as *mut c_void,
                    n as u32,
                    start as *const c_void,
                ) == 0
                {
                    (*ev).cmdline_len = n as u32;
                }
            }
            if let Some(exe) = mm.exe_file() {
                exe.read_path(&raw mut (*ev).exe);
            }
        }
    }
    rec.submit();
    0
}

/// Most descriptors looked at when a tainted process execs.
const EXEC_FD_SCAN: u32 = 1024;

/// State of the descriptor scan at exec (a bpf_loop callback's context).
#[repr(C)]
struct FdScan {
    fds: u64,
    max: u64,
    found: u64,
}

/// bpf_loop callback: is descriptor `i` a tainted source (a watched key, a
/// tracked file, or a pipe a tainted process wrote)? Returns 1 to stop.
#[inline(never)]
unsafe extern "C" fn fd_scan_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is taint_at_exec's `FdScan` (bpf_loop passes it
    // through); the fd array is read through FdArrayPtr (bpf_probe_read_kernel);
    // `watch_entry`'s pointer is a live map value.
    unsafe {
        let scan = ctx as *mut FdScan;
        if i >= (*scan).max {
            return 1;
        }
        let fds = FdArrayPtr::from_addr((*scan).fds);
        let Some(file) = fds.get(i as usize & (EXEC_FD_SCAN as usize - 1)) else {
            return 0;
        };
        let Some((key, inode)) = file.identity() else {
            return 0;
        };
        let source = match watch_entry(&key, inode) {
            Some(w) => (*w).flags & WATCH_SELF != 0,
            None => TAINTED_PIPES.get(inode.addr()).is_some(),
        };
        if source {
            (*scan).found = 1;
            return 1;
        }
        0
    }
}

/// Exec ends a process's taint: the image that held the data is gone. It
/// survives only while the new image holds an open (not close-on-exec:
/// those are closed by now) descriptor of a tainted source, which it can
/// read (`cat < key`, a pipe a tainted writer feeds).
#[inline(always)]
fn taint_at_exec() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if TAINTED.get_ptr_mut(tgid).is_none() {
        return;
    }
    // SAFETY: `scan` outlives the bpf_loop that hands it to fd_scan_step,
    // whose signature is bpf_loop's callback's.
    let keep = unsafe {
        let fdt = TaskPtr::current().files().and_then(|f| f.fdt());
        match fdt {
            Some(fdt) => {
                let max = fdt.max_fds().unwrap_or(0);
                let fds = fdt.fd().map_or(0, |p| p as u64);
                let mut scan = FdScan {
                    fds,
                    max: if max > EXEC_FD_SCAN {
                        EXEC_FD_SCAN
                    } else {
                        max
                    } as u64,
                    found: 0,
                };
                if fds != 0 {
                    generated::bpf_loop(
                        EXEC_FD_SCAN,
                        fd_scan_step as *mut c_void,
                        &raw mut scan as *mut c_void,
                        0,
                    );
                }
                scan.found != 0
            }
            None => false,
        }
    };
    if !keep {
        let _ = TAINTED.remove(tgid);
        count_stop(STOP_EXEC);
    }
}

/// Protects the process from its first instruction when its executable
/// (dev, inode) or its comm is a protected one (even if its exec event is
/// then lost to a full ring).
#[inline(always)]
fn protect_at_exec() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: map values are read while the program runs.
    unsafe {
        let task = TaskPtr::current();
        let exe = task.mm().and_then(|mm| mm.exe_file());
        // A usermode helper (the kernel starts it as a child of kthreadd,
        // pid 2) may be the core_pattern pipe helper, which receives core
        // dumps on stdin: what it writes is followed, and user space keeps
        // the files of the helper that core_pattern names.
        let parent = task.real_parent().and_then(|p| p.tgid()).unwrap_or(0);
        if parent == 2 {
            let t = Taint {
                flags: TAINT_HELPER,
                ..Default::default()
            };
            add_taint(tgid, &t);
            // Its stdin is the pipe the kernel writes the core into: what
            // holds or reads that pipe (the helper's children) is followed
            // like a reader of a tainted pipe.
            if let Some(stdin) = fd_file(0)
                && let Some(inode) = stdin.inode()
            {
                let mut pt = t;
                pt.via_pid = tgid;
                let _ = TAINTED_PIPES.insert(inode.addr(), pt, 0);
            }
        }
        if let Some(exe) = exe
            && let Some((key, _)) = exe.identity()
            && let Some(rule) = PROTECTED_EXES.get(key)
        {
            let _ = PROTECTED.insert(tgid, *rule, 0);
            return;
        }
    }
    if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm()
        && let Some(rule) = unsafe { PROTECTED_COMMS.get(comm) }
    {
        let _ = PROTECTED.insert(tgid, *rule, 0);
    }
}

/// raw_tp sched_process_fork: TP_PROTO(struct task_struct *parent,
/// struct task_struct *child). Only new processes (child pid == tgid).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn ks_sched_fork(ctx: RawTracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let child = TaskPtr::from_addr(ctx.arg(1));
    let (pid, tgid) = (child.pid().unwrap_or(0), child.tgid().unwrap_or(1));
    if pid != tgid {
        return 0;
    }
    // A protected process's children are protected from their first
    // instruction (user space may lift it when the child execs).
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = unsafe { PROTECTED.get(parent) } {
        let _ = PROTECTED.insert(tgid, p, 0);
    }
    // What the parent read, the child may write (one generation further).
    if let Some(t) = unsafe { TAINTED.get(parent) }
        && let Some(g) = next_gen(t.generation)
    {
        let mut t = *t;
        t.generation = g;
        if TAINTED.insert(tgid, t, 0).is_err() {
            count_stop(STOP_MAP_FULL);
        }
    }
    let Some(rec) = emit::<ForkEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).child_pid = tgid;
        (*ev)._pad = 0;
        (*ev).child_start_ns = child.start_time().unwrap_or(0);
    }
    rec.submit();
    0
}

/// sched:sched_process_exit of the process's last thread (the group dies:
/// `signal->live` reached 0 before the tracepoint), whichever thread that
/// is: a leader that exits first leaves its process, its taint and its
/// protection to the threads still running.
#[tracepoint]
pub fn ks_sched_exit(_ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = TaskPtr::current();
    let signal = task.signal().map_or(0, |p| p as u64);
    // The group is dead when `signal->live` reached 0; without a signal
    // struct, when the leader exits. Decided in each branch rather than
    // through an `Option` of `live`: LLVM computed `n == 0` on the payload
    // of a `None` made of nothing, a register the verifier rejects as
    // never written ("!read_ok").
    let leader = (pid_tgid >> 32) as u32 == pid_tgid as u32;
    let group_dead = if signal == 0 {
        leader
    } else {
        match SignalPtr::from_addr(signal).live() {
            Some(n) => n == 0,
            None => leader,
        }
    };
    // The group's code when it exited as a group (exit_group, a fatal
    // signal, a core dump: the dumping thread need not be the last to
    // exit); the thread's own otherwise. Read before the reserve.
    let group: u32 = if signal == 0 {
        0
    } else {
        SignalPtr::from_addr(signal).group_exit_code().unwrap_or(0)
    };
    let own: u32 = task.exit_code().unwrap_or(0);
    let exit_code = if group != 0 { group } else { own };
    if !group_dead {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let leader_start = task
        .group_leader()
        .and_then(|l| l.start_time())
        .unwrap_or(0);
    if GROUP_EXITED
        .insert(tgid, leader_start, BPF_NOEXIST)
        .is_err()
    {
        // Another thread of this group reported it already, or the entry
        // is an earlier process's with the same tgid.
        if unsafe { GROUP_EXITED.get(tgid) }.is_some_and(|s| *s == leader_start) {
            return 0;
        }
        let _ = GROUP_EXITED.insert(tgid, leader_start, 0);
    }
    let _ = PROTECTED.remove(tgid);
    let _ = TAINTED.remove(tgid);
    let Some(rec) = emit::<ExitEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; the map value is copied before
    // its entry is removed.
    unsafe {
        (*ev).exit_code = exit_code;
        (*ev).environ_reads = 0;
        if let Some(n) = ENVIRON_READS.get(tgid) {
            (*ev).environ_reads = *n;
            let _ = ENVIRON_READS.remove(tgid);
        }
    }
    rec.submit();
    0
}

/// BPF_NOEXIST: a rename keeps the rule that protects a process already.
const BPF_NOEXIST: u64 = 1;

/// task:task_rename (`pid` and `newcomm` offsets from tracefs): a task's
/// comm changes, in the renaming task's context: prctl(PR_SET_NAME) by the
/// task itself, a write to /proc/<pid>/comm by any thread of its group.
/// Only the thread-group leader's comm is the process's name (thread
/// renames of JVM or Go workers protect nothing and are not reported), and
/// exec's rename is ks_sched_exec's. A leader renamed to a protected comm
/// is protected at once; every leader rename is reported so user space
/// follows the name. Renaming away from a protected name does not lift the
/// protection: the secrets are still in the process's memory.
#[tracepoint]
pub fn ks_task_rename(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(off!(tp_rename_pid) as usize) }) else {
        return 0;
    };
    if pid as u32 != tgid {
        return 0;
    }
    // Exec renames the task too (`begin_new_exec`): that name is the exec
    // record's.
    let nr = current_nr();
    if nr == NR_EXECVE || nr == NR_EXECVEAT {
        return 0;
    }
    let Ok(comm) = (unsafe { ctx.read_at::<[u8; 16]>(off!(tp_rename_newcomm) as usize) }) else {
        return 0;
    };
    // The kernel copies the new name without padding: what follows its
    // NUL is stale, and PROTECTED_COMMS keys are NUL padded.
    let comm = sensor_common::comm_key(comm);
    if let Some(rule) = unsafe { PROTECTED_COMMS.get(comm) } {
        let _ = PROTECTED.insert(tgid, *rule, BPF_NOEXIST);
    }
    let Some(rec) = emit::<RenameEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).comm = comm;
    }
    rec.submit();
    0
}
