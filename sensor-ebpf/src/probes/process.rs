//! Process lifecycle: exec, fork, exit. Feeds user space's process table.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{CMDLINE_BUF, EventKind, ExecEvent, ExitEvent, ForkEvent, TAINT_HELPER, Taint};

use crate::{
    maps::{EVENTS, PROTECTED, PROTECTED_COMMS, PROTECTED_EXES, TAINTED, count_lost, submit_flags},
    off,
    probes::flow::add_taint,
    setting,
    vfs::{Ptr, current_task, file_identity, fill_header, rd, rd_ptr, read_path},
};

/// sched:sched_process_exec (fields unused: the new image is read from
/// `current->mm`: exe_file for the real executable, arg_start..arg_end for
/// the command line).
#[tracepoint]
pub fn ks_sched_exec(_ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    protect_at_exec();
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_lost(EventKind::Exec);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_header(
            &raw mut (*ev).hdr,
            EventKind::Exec as u32,
            size_of::<ExecEvent>(),
        );
        let task = current_task();
        (*ev).ppid = rd_ptr(task, off!(task_real_parent))
            .and_then(|p| rd::<u32>(p, off!(task_tgid)))
            .unwrap_or(0);
        (*ev).start_ns = rd::<u64>(task, off!(task_start_time)).unwrap_or(0);
        (*ev).cmdline_len = 0;
        (*ev).exe.len = 0;
        (*ev).exe.flags = 0;
        if let Some(mm) = rd_ptr(task, off!(task_mm)) {
            let start: u64 = rd(mm, off!(mm_arg_start)).unwrap_or(0);
            let end: u64 = rd(mm, off!(mm_arg_end)).unwrap_or(0);
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
            if let Some(exe) = rd_ptr(mm, off!(mm_exe_file)) {
                read_path(exe.add(off!(file_f_path) as usize), &raw mut (*ev).exe);
            }
        }
    }
    entry.submit(submit_flags());
    0
}

/// Protects the process from its first instruction when its executable
/// (dev, inode) or its comm is a protected one (even if its exec event is
/// then lost to a full ring).
#[inline(always)]
fn protect_at_exec() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe {
        let exe =
            rd_ptr(current_task(), off!(task_mm)).and_then(|mm| rd_ptr(mm, off!(mm_exe_file)));
        // A usermode helper (the kernel starts it as a child of kthreadd,
        // pid 2) may be the core_pattern pipe helper, which receives core
        // dumps on stdin: what it writes is followed, and user space keeps
        // the files of the helper that core_pattern names.
        let parent = rd_ptr(current_task(), off!(task_real_parent))
            .and_then(|p| rd::<u32>(p, off!(task_tgid)))
            .unwrap_or(0);
        if parent == 2 {
            add_taint(
                tgid,
                &Taint {
                    flags: TAINT_HELPER,
                    ..Default::default()
                },
            );
        }
        if let Some(exe) = exe
            && let Some((key, _)) = file_identity(exe)
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
    let child: u64 = ctx.arg(1);
    let child = child as Ptr;
    let (pid, tgid) = unsafe {
        (
            rd::<u32>(child, off!(task_pid)).unwrap_or(0),
            rd::<u32>(child, off!(task_tgid)).unwrap_or(1),
        )
    };
    if pid != tgid {
        return 0;
    }
    // A protected process's children are protected from their first
    // instruction (user space may lift it when the child execs).
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = unsafe { PROTECTED.get(parent) } {
        let _ = PROTECTED.insert(tgid, p, 0);
    }
    // What the parent read, the child may write.
    if let Some(t) = unsafe { TAINTED.get(parent) } {
        let _ = TAINTED.insert(tgid, t, 0);
    }
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count_lost(EventKind::Fork);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_header(
            &raw mut (*ev).hdr,
            EventKind::Fork as u32,
            size_of::<ForkEvent>(),
        );
        (*ev).child_pid = tgid;
        (*ev)._pad = 0;
        (*ev).child_start_ns = rd::<u64>(child, off!(task_start_time)).unwrap_or(0);
    }
    entry.submit(submit_flags());
    0
}

/// sched:sched_process_exit, reported for the thread-group leader.
#[tracepoint]
pub fn ks_sched_exit(_ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0;
    }
    let _ = PROTECTED.remove((pid_tgid >> 32) as u32);
    let _ = TAINTED.remove((pid_tgid >> 32) as u32);
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_lost(EventKind::Exit);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_header(
            &raw mut (*ev).hdr,
            EventKind::Exit as u32,
            size_of::<ExitEvent>(),
        );
        (*ev).exit_code = rd::<u32>(current_task(), off!(task_exit_code)).unwrap_or(0);
        (*ev)._pad = 0;
    }
    entry.submit(submit_flags());
    0
}

/// x86_64 numbers of the exec syscalls: exec renames the task too
/// (`begin_new_exec`), and that name is the exec record's.
const NR_EXECVE: i64 = 59;
const NR_EXECVEAT: i64 = 322;
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
    let nr = crate::probes::lsm::syscall_nr();
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
    let Some(mut entry) = EVENTS.reserve::<sensor_common::RenameEvent>(0) else {
        count_lost(EventKind::Rename);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_header(
            &raw mut (*ev).hdr,
            EventKind::Rename as u32,
            size_of::<sensor_common::RenameEvent>(),
        );
        (*ev).comm = comm;
    }
    entry.submit(submit_flags());
    0
}
