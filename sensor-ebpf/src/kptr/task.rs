//! A task, its mm, its thread group's signal struct, a struct pid.

use sensor_common::InodeKey;

use super::*;
use crate::{off, vfs::Ptr};

impl TaskPtr {
    /// The current task.
    #[inline(always)]
    pub fn current() -> TaskPtr {
        // SAFETY: a helper without arguments.
        TaskPtr(unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as Ptr)
    }

    #[inline(always)]
    pub fn tgid(self) -> Option<u32> {
        member(self.0, off!(task_tgid))
    }

    #[inline(always)]
    pub fn pid(self) -> Option<u32> {
        member(self.0, off!(task_pid))
    }

    /// start_boottime (ns since boot).
    #[inline(always)]
    pub fn start_time(self) -> Option<u64> {
        member(self.0, off!(task_start_time))
    }

    /// PF_* flags.
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        member(self.0, off!(task_flags))
    }

    /// task_struct.ptrace: non-zero while the task is traced.
    #[inline(always)]
    pub fn ptrace(self) -> Option<u32> {
        member(self.0, off!(task_ptrace))
    }

    #[inline(always)]
    pub fn exit_code(self) -> Option<u32> {
        member(self.0, off!(task_exit_code))
    }

    #[inline(always)]
    pub fn real_parent(self) -> Option<TaskPtr> {
        member_ptr(self.0, off!(task_real_parent)).map(TaskPtr)
    }

    /// `thread_pid`: the task's struct pid (its numbers in every pid
    /// namespace it is in).
    #[inline(always)]
    pub fn thread_pid(self) -> Option<PidPtr> {
        member_ptr(self.0, off!(task_thread_pid)).map(PidPtr)
    }

    #[inline(always)]
    pub fn group_leader(self) -> Option<TaskPtr> {
        member_ptr(self.0, off!(task_group_leader)).map(TaskPtr)
    }

    /// None for a kernel thread.
    #[inline(always)]
    pub fn mm(self) -> Option<MmPtr> {
        member_ptr(self.0, off!(task_mm)).map(MmPtr)
    }

    #[inline(always)]
    pub fn files(self) -> Option<FilesPtr> {
        member_ptr(self.0, off!(task_files)).map(FilesPtr)
    }

    /// `struct signal_struct *`, as an address for `SignalPtr::from_addr`:
    /// returning a `SignalPtr` here changed the code of ks_sched_exit, the
    /// program that once failed to load after such a change.
    #[inline(always)]
    pub fn signal(self) -> Option<Ptr> {
        member_ptr(self.0, off!(task_signal))
    }

    /// What this task does with signal `sig` (1..=64): `SIG_DISP_*`,
    /// from `sighand->action[sig - 1].sa.sa_handler`.
    #[inline(always)]
    pub fn sig_disposition(self, sig: u32) -> u32 {
        let size = off!(k_sigaction_size);
        if size == 0 || sig == 0 || sig > 64 {
            return sensor_common::SIG_DISP_UNKNOWN;
        }
        let Some(sighand) = member_ptr(self.0, off!(task_sighand)) else {
            return sensor_common::SIG_DISP_UNKNOWN;
        };
        match member::<u64>(sighand, off!(sighand_action) + (sig - 1) * size) {
            Some(0) => sensor_common::SIG_DISP_DEFAULT,
            Some(1) => sensor_common::SIG_DISP_IGNORED,
            Some(_) => sensor_common::SIG_DISP_HANDLED,
            None => sensor_common::SIG_DISP_UNKNOWN,
        }
    }

    /// The task whose `thread_node` is at `node` (an entry of a
    /// `SignalPtr::thread_head` list).
    #[inline(always)]
    pub fn of_thread_node(node: u64) -> TaskPtr {
        TaskPtr::from_addr(node.wrapping_sub(off!(task_thread_node) as u64))
    }

    /// The working directory (`fs->pwd.dentry`): where a relative path
    /// given with AT_FDCWD starts.
    #[inline(always)]
    pub fn cwd(self) -> Option<DentryPtr> {
        let fs = member_ptr(self.0, off!(task_fs))?;
        member_ptr(fs, off!(fs_pwd) + off!(path_dentry)).map(DentryPtr)
    }

    /// The login uid (`loginuid`: kept across setuid, su and sudo; None
    /// when the kernel has none).
    #[inline(always)]
    pub fn loginuid(self) -> Option<u32> {
        let off = off!(task_loginuid);
        if off == 0 {
            return None;
        }
        member(self.0, off)
    }

    /// (dev, inode) of the task's executable.
    #[inline(always)]
    pub fn exe(self) -> Option<InodeKey> {
        self.mm()?.exe_file()?.identity().map(|(k, _)| k)
    }
}

impl MmPtr {
    /// Start and end of the command line in the process's memory.
    #[inline(always)]
    pub fn arg_start(self) -> Option<u64> {
        member(self.0, off!(mm_arg_start))
    }

    #[inline(always)]
    pub fn arg_end(self) -> Option<u64> {
        member(self.0, off!(mm_arg_end))
    }

    /// Start and end of the environment strings in the process's memory.
    #[inline(always)]
    pub fn env_start(self) -> Option<u64> {
        member(self.0, off!(mm_env_start))
    }

    #[inline(always)]
    pub fn env_end(self) -> Option<u64> {
        member(self.0, off!(mm_env_end))
    }

    #[inline(always)]
    pub fn exe_file(self) -> Option<FilePtr> {
        member_ptr(self.0, off!(mm_exe_file)).map(FilePtr)
    }
}
impl SignalPtr {
    /// Address of `thread_head`, the list of the group's threads (None
    /// when the kernel's BTF did not give its offset).
    #[inline(always)]
    pub fn thread_head(self) -> Option<u64> {
        match off!(signal_thread_head) {
            0 => None,
            o => Some(self.0 as u64 + o as u64),
        }
    }

    /// Threads alive (0 once the last one exits).
    #[inline(always)]
    pub fn live(self) -> Option<i32> {
        member(self.0, off!(signal_live))
    }

    /// The group's exit code when it exited as a group (exit_group, a
    /// fatal signal, a core dump's 0x80).
    #[inline(always)]
    pub fn group_exit_code(self) -> Option<u32> {
        member(self.0, off!(signal_group_exit_code))
    }

    /// `struct core_state *`, non-null while the group dumps core.
    #[inline(always)]
    pub fn core_state(self) -> Option<Ptr> {
        member_ptr(self.0, off!(signal_core_state))
    }
}
impl PidPtr {
    /// `numbers[0].nr`: the pid in the root namespace.
    #[inline(always)]
    pub fn nr(self) -> Option<i32> {
        member(self.0, off!(pid_nr))
    }

    /// The depth of the namespace the pid was made in (0: the root).
    #[inline(always)]
    pub fn level(self) -> Option<u32> {
        member(self.0, off!(pid_level))
    }

    /// `numbers[level]`: the number and namespace at `level` (at most
    /// 32, MAX_PID_NS_LEVEL; the caller checks `level()` first).
    #[inline(always)]
    pub fn upid(self, level: u32) -> Option<(i32, u64)> {
        let at = level.min(32) * off!(upid_size);
        let nr = member(self.0, off!(pid_nr) + at)?;
        let ns = member(self.0, off!(pid_ns0) + at)?;
        Some((nr, ns))
    }
}
impl PidNsPtr {
    /// The head of the namespace's IDR (its xarray's `xa_head`) and the
    /// IDR's base (the number its index 0 stands for).
    #[inline(always)]
    pub fn idr(self) -> Option<(u64, u32)> {
        Some((
            member(self.0, off!(pidns_idr_head))?,
            member(self.0, off!(pidns_idr_base))?,
        ))
    }
}
