//! Memory access to other processes, dump-producing signals and dump
//! configuration changes.

use crate::{FoldTag, Header, InodeKey, KPath, header::record};

/// Memory-access operations (`MemAccessEvent::op`).
pub const MEM_PTRACE: u32 = 1;
pub const MEM_VM_READV: u32 = 2;
pub const MEM_VM_WRITEV: u32 = 3;
pub const MEM_PIDFD_GETFD: u32 = 4;
/// Another process accessed through a syscall the tracepoints do not
/// enumerate (perf_event_open, kcmp, get_robust_list, process_madvise,
/// move_pages, reads of /proc/<pid>/stack...), seen by the BPF LSM hook
/// ptrace_access_check: `request` is the syscall number, `arg` the
/// ptrace access mode, `ret` 0 (the access check passed).
pub const MEM_LSM_ACCESS: u32 = 5;

/// Cross-process memory access by the current task.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct MemAccessEvent {
    pub hdr: Header,
    /// Syscall result (0/bytes/fd, or -errno).
    pub ret: i64,
    /// ptrace request; pidfd for pidfd_getfd.
    pub request: u64,
    /// ptrace addr; target fd for pidfd_getfd.
    pub arg: u64,
    /// MEM_* value.
    pub op: u32,
    /// Target process: the pid the caller named, or the thread group
    /// (tgid) of the thread id it named when the kernel knows that thread
    /// (`PROTECTED_THREADS`: threads of protected processes); 0 when user
    /// space must resolve it (an unresolved pidfd).
    pub target: u32,
    /// 1 when the target is in the kernel's protected set.
    pub target_protected: u32,
    /// The thread id the caller named when the kernel resolved it to
    /// another thread group id (`target`), else 0.
    pub tid: u32,
    /// The fold key and the identical accesses folded since the previous
    /// record of that key (last: records written before it decode
    /// without it).
    pub fold: FoldTag,
}
const _: () = assert!(core::mem::size_of::<MemAccessEvent>() == 96 + 56);
record!(MemAccessEvent: MemAccess, Critical);

/// A dump-producing signal (SIGQUIT, ILL, TRAP, ABRT, BUS, FPE, SEGV, XCPU,
/// XFSZ, SYS) generated for another process.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct SignalEvent {
    /// The sender.
    pub hdr: Header,
    pub sig: u32,
    /// Target thread id.
    pub target: u32,
    /// siginfo si_code: SI_USER (kill, pidfd_send_signal), SI_TKILL
    /// (tkill, tgkill), SI_QUEUE (rt_sigqueueinfo), ...
    pub code: i32,
    /// TRACE_SIGNAL_* result (0 delivered, 1 ignored, 2 already pending...).
    pub result: i32,
    /// The signal's disposition at the target when it was sent
    /// (`SIG_DISP_*`). Last: records made before it decode with
    /// `SIG_DISP_UNKNOWN` (`SIGNAL_RECORD_WITHOUT_DISPOSITION`).
    pub disposition: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SignalEvent>() == 80);
/// The size of a signal record before it carried the disposition.
pub const SIGNAL_RECORD_WITHOUT_DISPOSITION: usize = 72;
/// Not known (a record made before the field, the target's handler
/// table unreadable).
pub const SIG_DISP_UNKNOWN: u32 = 0;
/// SIG_DFL: a dump signal's default action, a core dump.
pub const SIG_DISP_DEFAULT: u32 = 1;
/// SIG_IGN.
pub const SIG_DISP_IGNORED: u32 = 2;
/// The target handles the signal itself (nginx's SIGQUIT, a graceful
/// shutdown; a runtime's SIGSEGV handler): no dump unless its handler
/// makes one.
pub const SIG_DISP_HANDLED: u32 = 3;
record!(SignalEvent: DumpSignal, Critical);

/// What a DumpConfigEvent changes.
pub const DCFG_CORE_PATTERN: u32 = 1;
pub const DCFG_CORE_PIPE_LIMIT: u32 = 2;
pub const DCFG_SUID_DUMPABLE: u32 = 3;
pub const DCFG_COREDUMP_FILTER: u32 = 4;
pub const DCFG_SET_DUMPABLE: u32 = 5;
pub const DCFG_RLIMIT_CORE: u32 = 6;
/// Write-opens of the kernel's own back doors, reported as DumpConfigEvent
/// records and judged by kernel-reader: /proc/sysrq-trigger (a crash into
/// kdump, whose vmcore holds all memory), tracefs's uprobe_events,
/// kprobe_events and dynamic_events (probes whose fetch arguments read any
/// process's or the kernel's memory, no BPF needed).
pub const DCFG_SYSRQ_TRIGGER: u32 = 7;
pub const DCFG_UPROBE_EVENTS: u32 = 8;
pub const DCFG_KPROBE_EVENTS: u32 = 9;
pub const DCFG_DYNAMIC_EVENTS: u32 = 10;
/// A swap area switched on (swapon succeeded): pages of every process,
/// keys included, may be written to it (`value`: swapon's flags).
pub const DCFG_SWAPON: u32 = 11;
/// A write-open of a hibernation control in sysfs's power/ directory
/// (`value`: POWER_*): hibernation writes all of memory to swap.
pub const DCFG_SYS_POWER: u32 = 12;
/// A write-open of a cgroup v1 hierarchy's `release_agent`: the program
/// it names runs as root in the host's namespaces when a cgroup of that
/// hierarchy empties (a container escape; judged by container-escape).
pub const DCFG_RELEASE_AGENT: u32 = 13;
/// `DumpConfigEvent::value` of a DCFG_CORE_PATTERN, DCFG_CORE_PIPE_LIMIT
/// or DCFG_SUID_DUMPABLE: the opener's mount namespace is not the host's
/// (these sysctls are the host's, whoever writes them: a container
/// setting the core handler runs its program as root on the host).
pub const DCFG_FROM_GUEST: u64 = 1;
/// `DumpConfigEvent::value` of a DCFG_SYS_POWER: which file.
pub const POWER_STATE: u64 = 1;
pub const POWER_DISK: u64 = 2;
pub const POWER_RESUME: u64 = 3;
pub const POWER_RESUME_OFFSET: u64 = 4;

/// A write-open of a core-dump sysctl or of /proc/<pid>/coredump_filter,
/// PR_SET_DUMPABLE by a protected process, or RLIMIT_CORE set on one.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct DumpConfigEvent {
    pub hdr: Header,
    pub ret: i64,
    /// New value (PR_SET_DUMPABLE argument, RLIMIT_CORE soft limit).
    pub value: u64,
    /// DCFG_* value.
    pub what: u32,
    /// Process affected (0: system-wide sysctl; for coredump_filter the
    /// /proc directory's number, parsed in the kernel).
    pub target: u32,
}
const _: () = assert!(core::mem::size_of::<DumpConfigEvent>() == 80);
record!(DumpConfigEvent: DumpConfig, Critical);

/// What a KernelReaderEvent reports: a way to read any process's memory
/// from the kernel side, around the watched syscalls and files.
/// bpf(BPF_PROG_LOAD) of a tracing program type (`detail`: prog_type).
pub const KR_BPF_PROG_LOAD: u32 = 1;
/// init_module (a module image from memory).
pub const KR_INIT_MODULE: u32 = 2;
/// finit_module (`file`: the module file).
pub const KR_FINIT_MODULE: u32 = 3;
/// kexec_load (`arg`: flags).
pub const KR_KEXEC_LOAD: u32 = 4;
/// kexec_file_load (`file`: the kernel image, `arg`: flags).
pub const KR_KEXEC_FILE_LOAD: u32 = 5;
/// perf_event_open sampling user stacks, user registers or raw data of
/// every process (`target` -1) or of a protected one (`detail`:
/// attr.type, `arg`: attr.sample_type).
pub const KR_PERF_EVENT: u32 = 6;

/// BPF program types that can read any process's memory
/// (bpf_probe_read_user, bpf_copy_from_user_task): kprobe (and uprobe),
/// tracepoint, perf_event, raw tracepoint (and writable), tracing
/// (fentry/fexit, iterators) and LSM.
pub const BPF_TRACING_PROG_TYPES: [u32; 7] = [2, 5, 7, 17, 24, 26, 29];

/// perf_event_attr.sample_type bits that copy a process's data out:
/// PERF_SAMPLE_RAW, PERF_SAMPLE_REGS_USER, PERF_SAMPLE_STACK_USER.
pub const PERF_SAMPLE_USER_DATA: u64 = (1 << 10) | (1 << 12) | (1 << 13);

/// Loading code into the kernel or sampling other processes' user data:
/// BPF tracing programs, kernel modules, kexec images, perf sampling of
/// user stacks (`KR_*`). Reported at syscall exit, failed or not.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct KernelReaderEvent {
    pub hdr: Header,
    pub ret: i64,
    /// perf: attr.sample_type; kexec: flags; finit_module: flags.
    pub arg: u64,
    /// The file loaded (finit_module, kexec_file_load), zero otherwise.
    pub file: InodeKey,
    /// KR_* value.
    pub what: u32,
    /// bpf: prog_type; perf: attr.type.
    pub detail: u32,
    /// bpf: expected_attach_type; perf: attr.config (low 32 bits);
    /// finit_module, kexec_file_load: the file's descriptor.
    pub detail2: u32,
    /// perf: the pid argument (-1: every process).
    pub target: i32,
    /// perf: the process `target` names when it is protected (a thread id
    /// names its process), 0 otherwise.
    pub target_tgid: u32,
    /// bpf, perf: 1 when `detail`, `detail2` (perf) and `arg` were read
    /// from the object the kernel made (through the new fd), 0 when from
    /// the caller's attr (a refused call, or a kernel without the offsets).
    pub verified: u32,
    /// bpf: prog_name (NUL padded).
    pub name: [u8; 16],
    /// The file loaded (finit_module, kexec_file_load), rebuilt from its
    /// dentries; empty otherwise.
    pub path: KPath,
}
const _: () =
    assert!(core::mem::size_of::<KernelReaderEvent>() == 128 + core::mem::size_of::<KPath>());
record!(KernelReaderEvent: KernelReader, Critical);

/// Bytes kept of a sysctl's name ("kernel/perf_event_paranoid") and of
/// each of its values.
pub const SYSCTL_NAME: usize = 64;
pub const SYSCTL_VALUE: usize = 32;

/// A write to a sysctl (/proc/sys/...), from the cgroup sysctl hook before
/// the kernel applies it: its name, the value in force and the value
/// written. The write may still fail (an out-of-range value).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct SysctlEvent {
    pub hdr: Header,
    /// bpf_sysctl_get_name's, get_current_value's and get_new_value's
    /// results: bytes copied (NUL excluded), -E2BIG when cut short.
    pub name_len: i32,
    pub old_len: i32,
    pub new_len: i32,
    pub _pad: u32,
    pub name: [u8; SYSCTL_NAME],
    pub old: [u8; SYSCTL_VALUE],
    pub new: [u8; SYSCTL_VALUE],
}
const _: () = assert!(core::mem::size_of::<SysctlEvent>() == 200);
record!(SysctlEvent: Sysctl, Critical);

/// Is `sig` a signal whose default action dumps core?
pub const fn is_dump_signal(sig: u32) -> bool {
    matches!(sig, 3 | 4 | 5 | 6 | 7 | 8 | 11 | 24 | 25 | 31)
}
