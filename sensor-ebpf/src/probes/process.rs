//! Process lifecycle: exec, fork, exit. Feeds user space's process table.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    CMDLINE_BUF, EXEC_ALLOWLISTED, EXEC_ENV_UNCHECKED, EXEC_GUEST, EXEC_LD_AUDIT, EXEC_LD_ENV,
    EXEC_LD_PRELOAD, EXEC_PROTECTED, EXEC_PTRACED, ExecEvent, ExitEvent, ForkEvent, HOLDER_RULE,
    INSERT_FAIL_ALLOW_BYPASS, INSERT_FAIL_GROUP_EXITED, INSERT_FAIL_PROTECTED,
    INSERT_FAIL_PROTECTED_THREADS, INSERT_FAIL_TAINTED_PIPES, InodeKey, LRU_ENVIRON_READS,
    LRU_GROUP_EXITED, LRU_TAINTED_PIPES, RenameEvent, STOP_EXEC, STOP_MAP_FULL, TAINT_HELPER,
    TAINT_STRONG, Taint, WATCH_SELF,
    x86_64::{NR_EXECVE, NR_EXECVEAT},
};

use crate::{
    emit::{emit, stage},
    kptr::{FdArrayPtr, SignalPtr, TaskPtr},
    maps::{
        ALLOW_BYPASS, ALLOW_EXES, BPF_NOEXIST, ENVIRON_READS, GROUP_EXITED, PROTECTED,
        PROTECTED_COMMS, PROTECTED_EXES, PROTECTED_THREADS, TAINTED_PIPES, WRITERS, check_insert,
        count_insert_failed, count_stop, lru_added_one, lru_insert, lru_remove, watch_entry,
    },
    off, setting,
    syscall::current_nr,
    taint::{add_taint, insert_taint, is_tainted, next_gen, remove_taint, taint_of},
    vfs::fd_file,
};

/// sched:sched_process_exec (fields unused: the new image is read from
/// `current->mm`: exe_file for the real executable, arg_start..arg_end for
/// the command line).
#[tracepoint]
pub fn ks_sched_exec(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    forget_old_tid(&ctx);
    taint_at_exec();
    protect_at_exec();
    let (exe_id, exec_flags) = allowance_at_exec();
    let Some(rec) = stage::<ExecEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the staged record; kernel and user memory are read
    // through bpf_probe_read_kernel/user only (the command line into
    // `cmdline`, at most CMDLINE_BUF bytes).
    unsafe {
        let task = TaskPtr::current();
        (*ev).ppid = task.real_parent().and_then(|p| p.tgid()).unwrap_or(0);
        (*ev).start_ns = task.start_time().unwrap_or(0);
        (*ev).cmdline_len = 0;
        (*ev).exe_dev = exe_id.dev;
        (*ev).exe_ino = exe_id.ino;
        (*ev).exec_flags = exec_flags;
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

/// Most environment strings (or 4 KiB pieces of one) looked at when an
/// allowlisted executable execs; an environment with more is unchecked.
const ENV_SCAN: u32 = 4096;
/// Bytes of one environment string read at a time.
const ENV_PIECE: usize = 4096;

/// Where the environment scan stands (a bpf_loop callback's context).
#[repr(C)]
struct EnvScan {
    at: u64,
    end: u64,
    /// 1 while `at` is inside a string longer than ENV_PIECE.
    inside: u64,
    flags: u32,
    done: u32,
}

/// One environment string at a time (bpf_probe_read_user_str finds its end).
/// The whole environment is read (each variable's bit is wanted).
#[map]
static ENV_SCRATCH: PerCpuArray<[u8; ENV_PIECE]> = PerCpuArray::with_max_entries(1, 0);

/// The loader variables that put code into (or change the libraries of) an
/// allowlisted or protected executable, each with the EXEC_* bit that
/// names it (LD_LIBRARY_PATH has none of its own: EXEC_LD_ENV).
const LD_VARS: [(&[u8], u32); 3] = [
    (b"LD_PRELOAD=", EXEC_LD_PRELOAD),
    (b"LD_AUDIT=", EXEC_LD_AUDIT),
    (b"LD_LIBRARY_PATH=", 0),
];

/// bpf_loop callback: checks the environment string at `scan.at` and
/// moves past it. Returns 1 to stop (end reached or a variable found).
#[inline(never)]
unsafe extern "C" fn env_scan_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is allowance_at_exec's `EnvScan`; user memory is read
    // through bpf_probe_read_user_str into the per-CPU ENV_PIECE buffer.
    unsafe {
        let scan = ctx as *mut EnvScan;
        if (*scan).at >= (*scan).end {
            (*scan).done = 1;
            return 1;
        }
        let Some(buf) = ENV_SCRATCH.get_ptr_mut(0) else {
            return 1;
        };
        let n = generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            ENV_PIECE as u32,
            (*scan).at as *const c_void,
        );
        if n <= 0 {
            // Unreadable: the scan is not complete.
            return 1;
        }
        if (*scan).inside == 0 {
            for (var, bit) in LD_VARS {
                let mut same = true;
                let mut i = 0;
                while i < var.len() {
                    if (*buf)[i] != var[i] {
                        same = false;
                        break;
                    }
                    i += 1;
                }
                if same {
                    (*scan).flags |= EXEC_LD_ENV | bit;
                }
            }
        }
        if n as usize >= ENV_PIECE && (*buf)[ENV_PIECE - 1] != 0 {
            // No NUL in this piece: the rest of the string comes next.
            (*scan).at += ENV_PIECE as u64 - 1;
            (*scan).inside = 1;
        } else {
            (*scan).at += n as u64;
            (*scan).inside = 0;
        }
        0
    }
}

/// The executable's (dev, inode) and the EXEC_* bits that withdraw an
/// allowance: an allowlisted executable exec'd while traced, or with a
/// loader variable anywhere in its environment (an environment too large
/// to check counts as one), is recorded in ALLOW_BYPASS so `allowed`
/// refuses it until its next exec or exit. A process protected from its
/// exec (`protect_at_exec`, before this) is checked the same way for
/// user space (`key-holder-tamper`: code loaded into it at start, or a
/// tracer from its start), without ALLOW_BYPASS. Other executables are
/// not scanned (two map lookups).
#[inline(always)]
fn allowance_at_exec() -> (InodeKey, u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let task = TaskPtr::current();
    let mm = task.mm();
    let Some(exe) = mm
        .and_then(|mm| mm.exe_file())
        .and_then(|f| f.identity())
        .map(|(k, _)| k)
    else {
        return (InodeKey::default(), 0);
    };
    // SAFETY: map lookups.
    let allowlisted = unsafe { ALLOW_EXES.get(exe) }.is_some();
    if !allowlisted && unsafe { ALLOW_BYPASS.get(tgid) }.is_some() {
        let _ = ALLOW_BYPASS.remove(tgid);
    }
    let protected = unsafe { PROTECTED.get(tgid) }.is_some_and(|r| *r != HOLDER_RULE);
    let guest = crate::vfs::in_guest_mnt_ns() != 0;
    if !allowlisted && !protected && !guest {
        return (exe, 0);
    }
    let mut flags = if allowlisted { EXEC_ALLOWLISTED } else { 0 };
    if protected {
        flags |= EXEC_PROTECTED;
    }
    if guest {
        flags |= EXEC_GUEST;
    }
    if task.ptrace().is_none_or(|p| p != 0) {
        flags |= EXEC_PTRACED;
    }
    let (start, end) = match mm {
        Some(mm) => (mm.env_start().unwrap_or(0), mm.env_end().unwrap_or(0)),
        None => (0, 0),
    };
    let mut scan = EnvScan {
        at: start,
        end,
        inside: 0,
        flags: 0,
        done: 0,
    };
    if end > start {
        // SAFETY: `scan` outlives the bpf_loop that hands it to
        // env_scan_step, whose signature is bpf_loop's callback's.
        unsafe {
            generated::bpf_loop(
                ENV_SCAN,
                env_scan_step as *mut c_void,
                &raw mut scan as *mut c_void,
                0,
            );
        }
        flags |= scan.flags;
        if scan.done == 0 {
            flags |= EXEC_ENV_UNCHECKED;
        }
    }
    if !allowlisted {
        return (exe, flags);
    }
    if flags & (EXEC_PTRACED | EXEC_LD_ENV | EXEC_ENV_UNCHECKED) != 0 {
        if ALLOW_BYPASS.insert(tgid, flags, 0).is_err() {
            count_stop(STOP_MAP_FULL);
            count_insert_failed(INSERT_FAIL_ALLOW_BYPASS);
        }
    } else if unsafe { ALLOW_BYPASS.get(tgid) }.is_some() {
        let _ = ALLOW_BYPASS.remove(tgid);
    }
    (exe, flags)
}

/// A thread other than the leader that execs takes the leader's pid (the
/// other threads exited, each removing its own entry): its old thread id
/// no longer names the process.
#[inline(always)]
fn forget_old_tid(ctx: &TracePointContext) {
    let off = off!(tp_exec_old_pid);
    if off == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Ok(old) = unsafe { ctx.read_at::<i32>(off as usize) }
        && old as u32 != tgid
    {
        let _ = PROTECTED_THREADS.remove(old as u32);
    }
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
    if !is_tainted(tgid) {
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
        remove_taint(tgid);
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
        // A key holder's new image holds no key: the exec ends it here,
        // whatever order user space reads the open, fork and exec in (a
        // child that inherited it at fork and execs a shell is no holder).
        // The rules below may protect the new image again.
        if PROTECTED.get(tgid).is_some_and(|r| *r == HOLDER_RULE) {
            let _ = PROTECTED.remove(tgid);
        }
        let task = TaskPtr::current();
        let exe = task.mm().and_then(|mm| mm.exe_file());
        // A usermode helper (the kernel starts it as a child of kthreadd,
        // pid 2) may be the core_pattern pipe helper, which receives core
        // dumps on stdin: what it writes is followed, and user space keeps
        // the files of the helper that core_pattern names.
        let parent = task.real_parent().and_then(|p| p.tgid()).unwrap_or(0);
        if parent == 2 {
            let t = Taint {
                flags: TAINT_HELPER | TAINT_STRONG,
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
                check_insert(
                    lru_insert(&TAINTED_PIPES, LRU_TAINTED_PIPES, &inode.addr(), &pt),
                    INSERT_FAIL_TAINTED_PIPES,
                );
            }
        }
        if let Some(exe) = exe
            && let Some((key, _)) = exe.identity()
            && let Some(rule) = PROTECTED_EXES.get(key)
        {
            check_insert(PROTECTED.insert(tgid, *rule, 0), INSERT_FAIL_PROTECTED);
            return;
        }
    }
    if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm()
        && let Some(rule) = unsafe { PROTECTED_COMMS.get(comm) }
    {
        check_insert(PROTECTED.insert(tgid, *rule, 0), INSERT_FAIL_PROTECTED);
    }
}

/// raw_tp sched_process_fork: TP_PROTO(struct task_struct *parent,
/// struct task_struct *child). New processes (child pid == tgid); a new
/// thread of a protected process only goes into `PROTECTED_THREADS`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn ks_sched_fork(ctx: RawTracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let child = TaskPtr::from_addr(ctx.arg(1));
    let (pid, tgid) = (child.pid().unwrap_or(0), child.tgid().unwrap_or(1));
    if pid != tgid {
        // Its thread id names the protected process from now on.
        if unsafe { PROTECTED.get(tgid) }.is_some() {
            check_insert(
                PROTECTED_THREADS.insert(pid, tgid, 0),
                INSERT_FAIL_PROTECTED_THREADS,
            );
        }
        return 0;
    }
    // A protected process's children are protected from their first
    // instruction (user space may lift it when the child execs).
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = unsafe { PROTECTED.get(parent) } {
        check_insert(PROTECTED.insert(tgid, p, 0), INSERT_FAIL_PROTECTED);
    }
    // The child runs the parent's code, preloaded libraries included: an
    // allowance the parent lost, the child has not either.
    if let Some(f) = unsafe { ALLOW_BYPASS.get(parent) }
        && ALLOW_BYPASS.insert(tgid, *f, 0).is_err()
    {
        count_stop(STOP_MAP_FULL);
        count_insert_failed(INSERT_FAIL_ALLOW_BYPASS);
    }
    // What the parent read, the child may write (one generation further).
    if let Some(mut t) = taint_of(parent)
        && let Some(g) = next_gen(t.generation)
    {
        t.generation = g;
        insert_taint(tgid, &t);
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
    // A thread's id is free again once it exits: it no longer names the
    // process (a hash delete; nothing to do for most threads).
    if !leader {
        let _ = PROTECTED_THREADS.remove(pid_tgid as u32);
    }
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
        .inspect(|()| lru_added_one(LRU_GROUP_EXITED))
        .is_err()
    {
        // Another thread of this group reported it already, or the entry
        // is an earlier process's with the same tgid.
        if unsafe { GROUP_EXITED.get(tgid) }.is_some_and(|s| *s == leader_start) {
            return 0;
        }
        check_insert(
            GROUP_EXITED.insert(tgid, leader_start, 0),
            INSERT_FAIL_GROUP_EXITED,
        );
    }
    let _ = PROTECTED.remove(tgid);
    remove_taint(tgid);
    let _ = WRITERS.remove(tgid);
    let _ = ALLOW_BYPASS.remove(tgid);
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
            lru_remove(&ENVIRON_READS, LRU_ENVIRON_READS, &tgid);
        }
    }
    rec.submit();
    0
}

// BPF_NOEXIST (maps.rs): a rename keeps the rule that protects a process
// already.

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
        check_insert(
            PROTECTED.insert(tgid, *rule, BPF_NOEXIST),
            INSERT_FAIL_PROTECTED,
        );
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
