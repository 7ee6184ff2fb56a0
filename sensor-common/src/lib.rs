//! The contract between keysentry's kernel programs and its user-space agent.
//!
//! Every record is `#[repr(C)]`, has no implicit padding and no `bool`, and
//! starts with a [`Header`] whose `kind` tags it and whose `size` is the size
//! of the whole record. Sizes are checked at compile time below.
#![no_std]

pub mod names;

/// Bytes kept of a path rebuilt from dentries (components leaf first).
pub const PATH_BUF: usize = 1280;
/// Offset mask used while writing a component (must be a power of two - 1,
/// and `PATH_WRITE_MASK + NAME_MAX + 1 < PATH_BUF`).
pub const PATH_WRITE_MASK: usize = 1023;
/// Longest file-name component (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Bytes kept of a path argument as the process passed it.
pub const ARG_BUF: usize = 256;
/// Bytes kept of a command line (NUL separated).
pub const CMDLINE_BUF: usize = 512;
pub const COMM_LEN: usize = 16;
/// Offset of `long ret` in every syscalls:sys_exit_* record (common fields,
/// int __syscall_nr, padding). Checked against tracefs at load time.
pub const SYS_EXIT_RET_OFFSET: u32 = 16;
/// Offset of `int __syscall_nr` in every syscalls:sys_{enter,exit}_*
/// record. Checked against tracefs at load time.
pub const SYSCALL_NR_OFFSET: u32 = 8;
/// Most components walked when rebuilding a path.
pub const PATH_MAX_DEPTH: u32 = 48;

/// Event kinds. The value indexes the per-kind lost-event counters.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    /// The thread-group leader's comm changed (prctl(PR_SET_NAME), a write
    /// to /proc/<pid>/comm); not at exec.
    Rename = 5,
    /// A successful open of a watched or key-named file.
    KeyOpen = 10,
    /// A failed open (EACCES/EPERM) whose path may name a key file.
    KeyOpenFailed = 11,
    /// An open of /proc/<pid>/{mem,pagemap,environ}, or of
    /// /proc/<pid>/{maps,smaps,status} of a protected process.
    ProcFileOpen = 12,
    /// ptrace, process_vm_readv/writev or pidfd_getfd on another process.
    MemAccess = 20,
    /// A dump-producing signal sent to another process.
    DumpSignal = 21,
    /// A change that enables or redirects core dumps.
    DumpConfig = 22,
    /// A tainted process wrote a regular file (first write per file).
    FileWrite = 30,
    /// A tainted process closed a file it had written.
    FileClose = 31,
    /// A tainted process sent on a socket (first send per socket).
    NetSend = 32,
    /// A rename or link whose source names a tracked file or a key name.
    PathChange = 33,
    /// A BPF LSM hook denied an operation (rule in enforce mode).
    Denied = 24,
    /// A BPF LSM hook saw a process read, write or map a watched file
    /// through an fd it did not open itself (first access per process).
    FdAccess = 13,
}

/// Number of slots in the lost-event counter array.
pub const KIND_SLOTS: u32 = 64;

// Every kind indexes the per-kind counters.
const _: () = {
    let mut i = 0;
    while i < EventKind::ALL.len() {
        assert!((EventKind::ALL[i] as u32) < KIND_SLOTS);
        i += 1;
    }
};

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::Rename,
        EventKind::KeyOpen,
        EventKind::KeyOpenFailed,
        EventKind::ProcFileOpen,
        EventKind::MemAccess,
        EventKind::DumpSignal,
        EventKind::DumpConfig,
        EventKind::FileWrite,
        EventKind::FileClose,
        EventKind::NetSend,
        EventKind::PathChange,
        EventKind::Denied,
        EventKind::FdAccess,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }

    /// Stable metric label.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::Rename => "rename",
            EventKind::KeyOpen => "key_open",
            EventKind::KeyOpenFailed => "key_open_failed",
            EventKind::ProcFileOpen => "proc_file_open",
            EventKind::MemAccess => "mem_access",
            EventKind::DumpSignal => "dump_signal",
            EventKind::DumpConfig => "dump_config",
            EventKind::FileWrite => "file_write",
            EventKind::FileClose => "file_close",
            EventKind::NetSend => "net_send",
            EventKind::PathChange => "path_change",
            EventKind::Denied => "denied",
            EventKind::FdAccess => "fd_access",
        }
    }

    /// Size of the record this kind travels in. An exhaustive match, so a new
    /// kind cannot be added without its size.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::Exec => core::mem::size_of::<ExecEvent>(),
            EventKind::Fork => core::mem::size_of::<ForkEvent>(),
            EventKind::Exit => core::mem::size_of::<ExitEvent>(),
            EventKind::Rename => core::mem::size_of::<RenameEvent>(),
            EventKind::KeyOpen | EventKind::KeyOpenFailed | EventKind::ProcFileOpen => {
                core::mem::size_of::<OpenEvent>()
            }
            EventKind::MemAccess => core::mem::size_of::<MemAccessEvent>(),
            EventKind::DumpSignal => core::mem::size_of::<SignalEvent>(),
            EventKind::DumpConfig => core::mem::size_of::<DumpConfigEvent>(),
            EventKind::FileWrite => core::mem::size_of::<FileWriteEvent>(),
            EventKind::FileClose => core::mem::size_of::<FileCloseEvent>(),
            EventKind::NetSend => core::mem::size_of::<NetSendEvent>(),
            EventKind::PathChange => core::mem::size_of::<PathChangeEvent>(),
            EventKind::Denied => core::mem::size_of::<DeniedEvent>(),
            EventKind::FdAccess => core::mem::size_of::<FdAccessEvent>(),
        }
    }
}

/// First bytes of every record.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct Header {
    pub kind: u32,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// bpf_ktime_get_boot_ns() at the event.
    pub ts_boot_ns: u64,
    /// Thread-group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// A path rebuilt in the kernel from dentries and mounts. `buf[..len]` holds
/// the components leaf first, each followed by `/`; user space reverses them.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct KPath {
    pub len: u32,
    /// PATH_* flags.
    pub flags: u32,
    pub buf: [u8; PATH_BUF],
}

impl KPath {
    /// Encodes `path` the way the kernel writes it (components leaf first,
    /// each followed by '/'): for tests and benchmarks that build records.
    /// Panics when the path does not fit.
    pub fn from_path(path: &str) -> KPath {
        let mut p = KPath {
            len: 0,
            flags: PATH_COMPLETE,
            buf: [0; PATH_BUF],
        };
        let mut pos = 0;
        for c in path.split('/').filter(|c| !c.is_empty()).rev() {
            p.buf[pos..pos + c.len()].copy_from_slice(c.as_bytes());
            pos += c.len();
            p.buf[pos] = b'/';
            pos += 1;
        }
        p.len = pos as u32;
        p
    }
}

pub const PATH_TRUNCATED: u32 = 1;
/// The walk reached the root of the mount namespace.
pub const PATH_COMPLETE: u32 = 2;

/// Where an open was seen.
pub const SRC_OPEN: u32 = 1;
pub const SRC_OPENAT: u32 = 2;
pub const SRC_OPENAT2: u32 = 3;
pub const SRC_CREAT: u32 = 4;
pub const SRC_OPEN_BY_HANDLE: u32 = 5;
pub const SRC_IO_URING: u32 = 6;

/// Why an open was reported (bits of `OpenEvent::matched`).
pub const MATCH_INODE: u32 = 1;
pub const MATCH_PARENT: u32 = 2;
pub const MATCH_NAME: u32 = 4;
/// A failed open whose final component names a watched file or key pattern.
pub const MATCH_FAILED_NAME: u32 = 8;
/// The inode is a tracked file (a registered dump or a derived copy).
pub const MATCH_TRACKED: u32 = 16;

/// A reported open (success or failure).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct OpenEvent {
    pub hdr: Header,
    /// Return value: the new fd, or -errno.
    pub ret: i64,
    /// Identity of the opened file (zero for failures).
    pub ino: u64,
    pub dev: u32,
    /// inode i_mode (zero for failures).
    pub mode: u32,
    /// file f_flags (success) or the flags argument (failure).
    pub flags: u32,
    /// dirfd argument (AT_FDCWD = -100), when the syscall has one.
    pub dfd: i32,
    /// SRC_* value.
    pub source: u32,
    /// MATCH_* bits.
    pub matched: u32,
    /// Value stored with the matched watch entry (its key_path index).
    pub watch_id: u32,
    /// Bit per key_name rule that matched.
    pub name_rules: u32,
    /// Bytes of `arg` read (0 when unavailable).
    pub arg_len: u32,
    /// The opened inode's i_generation (with (dev, ino): a reused inode
    /// number is another file).
    pub igen: u32,
    /// file f_mode (FMODE_CREATED: this open created the file).
    pub fmode: u32,
    /// The opened inode's owner (i_uid, in the initial user namespace).
    pub owner: u32,
    /// The opened inode's size (i_size) at the open.
    pub size: i64,
    /// The path argument as the process passed it.
    pub arg: [u8; ARG_BUF],
    /// The opened file's path, rebuilt from its dentry (success only).
    pub path: KPath,
}

/// `struct file` f_mode bit: the open created the file (stable since 4.19).
pub const FMODE_CREATED: u32 = 0x100000;

#[repr(C)]
#[derive(Copy, Clone)]
pub struct ExecEvent {
    pub hdr: Header,
    pub ppid: u32,
    pub cmdline_len: u32,
    /// task start_boottime, ns since boot (CLOCK_BOOTTIME, as /proc stat).
    pub start_ns: u64,
    pub cmdline: [u8; CMDLINE_BUF],
    /// mm->exe_file, rebuilt from its dentry.
    pub exe: KPath,
}

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ForkEvent {
    /// The header describes the parent.
    pub hdr: Header,
    pub child_pid: u32,
    pub _pad: u32,
    pub child_start_ns: u64,
}

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ExitEvent {
    pub hdr: Header,
    /// task->exit_code (signal in the low 7 bits, 0x80 core dumped).
    pub exit_code: u32,
    /// /proc/<pid>/environ files the process opened (any process's): a
    /// process lister such as `ps aux` reads them all.
    pub environ_reads: u32,
}

/// The thread-group leader of the process in the header was renamed. The
/// header describes the renaming thread (the leader itself for
/// prctl(PR_SET_NAME), any thread of the group for a /proc/<pid>/comm
/// write), so its `comm` is the name before the rename.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct RenameEvent {
    pub hdr: Header,
    /// The new comm, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// `comm` with every byte after its first NUL zeroed (a `PROTECTED_COMMS`
/// key), as bpf_get_current_comm gives it; task:task_rename's `newcomm`
/// is copied without padding. Branch free: a branch per byte would
/// multiply the paths the verifier walks.
#[inline(always)]
pub fn comm_key(comm: [u8; COMM_LEN]) -> [u8; COMM_LEN] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&comm[..8]);
    hi.copy_from_slice(&comm[8..]);
    let (lo, hi) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
    // The lowest set bit of the has-a-zero-byte test is the high bit of
    // the first NUL byte (exact for the first one).
    let t = lo.wrapping_sub(ONES) & !lo & HIGHS;
    let first = t & t.wrapping_neg();
    // Ones below the first NUL; all ones when there is none.
    let lo = lo & (first >> 7).wrapping_sub(1);
    // The high word only counts when the low one has no NUL.
    let lo_has_nul = (first | first.wrapping_neg()) >> 63;
    let t = hi.wrapping_sub(ONES) & !hi & HIGHS;
    let first = t & t.wrapping_neg();
    let hi = hi & (first >> 7).wrapping_sub(1) & lo_has_nul.wrapping_sub(1);
    let mut out = [0u8; COMM_LEN];
    out[..8].copy_from_slice(&lo.to_le_bytes());
    out[8..].copy_from_slice(&hi.to_le_bytes());
    out
}

/// Files of /proc/<pid>/ reported by ProcFileOpen (in `OpenEvent::name_rules`).
pub const PROC_MEM: u32 = 1;
pub const PROC_PAGEMAP: u32 = 2;
pub const PROC_ENVIRON: u32 = 3;
/// Reconnaissance files, reported only for protected targets.
pub const PROC_MAPS: u32 = 4;
pub const PROC_SMAPS: u32 = 5;
pub const PROC_STATUS: u32 = 6;

/// A short (<= 8 bytes) file name as the first head word of its NameKey.
pub const fn short_name(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        v |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// Head words of a name of up to 16 bytes (NameKey::head).
pub const fn name_head(s: &[u8]) -> [u64; 2] {
    let mut w = [0u64; 2];
    let mut i = 0;
    while i < s.len() && i < 16 {
        w[i / 8] |= (s[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    w
}

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
    /// Target pid (tid for ptrace), 0 when user space must resolve it.
    pub target: u32,
    /// 1 when the target is in the kernel's protected set.
    pub target_protected: u32,
    pub _pad: u32,
}

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
}

/// What a DumpConfigEvent changes.
pub const DCFG_CORE_PATTERN: u32 = 1;
pub const DCFG_CORE_PIPE_LIMIT: u32 = 2;
pub const DCFG_SUID_DUMPABLE: u32 = 3;
pub const DCFG_COREDUMP_FILTER: u32 = 4;
pub const DCFG_SET_DUMPABLE: u32 = 5;
pub const DCFG_RLIMIT_CORE: u32 = 6;

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

/// Why a process is tainted (bits of `Taint::flags`).
/// It opened a tracked file (key, dump or derived copy) for reading.
pub const TAINT_FILE: u32 = 1;
/// It read or attached to a protected process's memory.
pub const TAINT_MEMORY: u32 = 2;
/// It read from a pipe a tainted process had written.
pub const TAINT_PIPE: u32 = 4;
/// It is the core_pattern pipe helper (it receives core dumps).
pub const TAINT_HELPER: u32 = 8;

/// What a process has read that its writes and sends may carry.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Taint {
    /// TAINT_* bits.
    pub flags: u32,
    /// Protected process whose memory it read (TAINT_MEMORY).
    pub src_pid: u32,
    /// Tracked file it read (TAINT_FILE), kernel dev_t encoding.
    pub src_dev: u32,
    /// The process that wrote the pipe it read (TAINT_PIPE).
    pub via_pid: u32,
    pub src_ino: u64,
    /// Hops from the origin: 0 for a process that read a key, a dump or a
    /// protected process's memory itself (or a tracked copy of generation
    /// 0); each file written, pipe read or child forked adds one.
    pub generation: u32,
    /// i_generation of the source file (TAINT_FILE).
    pub src_igen: u32,
}

/// Why taint or tracking stopped (index of the kernel's `FLOW_STOPPED`
/// counters, `keysentry_flow_stopped_total{reason}`).
pub const STOP_EXEC: u32 = 0;
pub const STOP_GENERATION: u32 = 1;
pub const STOP_ALLOWLIST: u32 = 2;
pub const STOP_MAP_FULL: u32 = 3;
pub const STOP_STALE_INODE: u32 = 4;
pub const STOP_OWN_KEY: u32 = 5;
/// Slots of `FLOW_STOPPED`.
pub const STOP_SLOTS: u32 = 8;
/// Metric label of each STOP_* reason kept in the kernel.
pub const STOP_REASONS: [&str; 6] = [
    "exec",
    "generation",
    "allowlist",
    "map_full",
    "stale_inode",
    "own_key",
];

/// How data left a tainted process (`via` of writes and sends).
pub const VIA_WRITE: u32 = 1;
pub const VIA_SEND: u32 = 2;
pub const VIA_SENDFILE: u32 = 3;
pub const VIA_COPY_FILE_RANGE: u32 = 4;
pub const VIA_SPLICE: u32 = 5;
pub const VIA_CLONE: u32 = 6;
pub const VIA_IO_URING: u32 = 7;
pub const VIA_MMAP: u32 = 8;

/// A tainted process wrote a regular file: the first write per (process,
/// file); the file may become a dump or a derived copy.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct FileWriteEvent {
    pub hdr: Header,
    pub taint: Taint,
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    /// Bytes the syscall wrote.
    pub bytes: i64,
    /// The written inode's i_generation.
    pub igen: u32,
    /// file f_mode of the fd written (FMODE_CREATED: the writer created
    /// the file with that open).
    pub fmode: u32,
    pub path: KPath,
}

/// A tainted process closed a file it had written.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct FileCloseEvent {
    pub hdr: Header,
    pub ino: u64,
    pub dev: u32,
    pub fd: i32,
    pub igen: u32,
    pub _pad: u32,
    /// The file's size (i_size) at the close.
    pub size: i64,
    /// Bytes this process wrote to it since its first reported write.
    pub written: u64,
}

/// A tainted process sent on a socket (the first send per socket).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct NetSendEvent {
    pub hdr: Header,
    pub taint: Taint,
    pub bytes: i64,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    /// AF_* of the socket.
    pub family: u16,
    /// SOCK_* type.
    pub sock_type: u16,
    /// IPPROTO_* (or the family's protocol number).
    pub protocol: u16,
    /// Local and remote port, host order (connected or bound sockets).
    pub sport: u16,
    pub dport: u16,
    pub _pad: [u16; 3],
    /// Local and remote address: 4 bytes for AF_INET, 16 for AF_INET6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The destination sockaddr the syscall passed (sendto, sendmsg), raw.
    pub dest_len: u32,
    pub _pad2: u32,
    pub dest: [u8; 32],
}

/// PathChangeEvent::op values.
pub const PATH_OP_RENAME: u32 = 1;
pub const PATH_OP_LINK: u32 = 2;
/// unlink/unlinkat of a name: `old` is the name, `new` empty.
pub const PATH_OP_UNLINK: u32 = 3;

/// A successful rename or link whose source's or destination's final
/// component names a watched or tracked file or matches a key-name pattern
/// (a rename over a tracked file ends it), or an unlink of such a name;
/// user space resolves it.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct PathChangeEvent {
    pub hdr: Header,
    pub ret: i64,
    /// PATH_OP_* value.
    pub op: u32,
    pub flags: u32,
    pub old_dfd: i32,
    pub new_dfd: i32,
    pub old_len: u32,
    pub new_len: u32,
    pub old: [u8; ARG_BUF],
    pub new: [u8; ARG_BUF],
}

/// Is `sig` a signal whose default action dumps core?
pub const fn is_dump_signal(sig: u32) -> bool {
    matches!(sig, 3 | 4 | 5 | 6 | 7 | 8 | 11 | 24 | 25 | 31)
}

/// Key of the watched-inode map.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Value of the watched-inode map.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    /// Index of the key_path this inode belongs to.
    pub watch_id: u32,
    /// WATCH_* bits.
    pub flags: u32,
    /// The inode's i_generation (valid with WATCH_IGEN): an entry whose
    /// inode number was reused by a new file does not match it.
    pub igen: u32,
    /// Taint generation a reader of this file starts at (tracked copies).
    pub generation: u32,
}

/// The inode itself is watched.
pub const WATCH_SELF: u32 = 1;
/// Files directly inside this directory are watched.
pub const WATCH_CHILDREN: u32 = 2;
/// The inode is a tracked file (registered dump or derived copy); its
/// `watch_id` is the tracked-file id.
pub const WATCH_TRACKED: u32 = 4;
/// `igen` holds the inode's i_generation. Entries without it get it from
/// keysentry's own open of the file (user space registers, then opens it
/// and checks the fd's (dev, inode): the kernel stamps the entry).
pub const WATCH_IGEN: u32 = 8;
/// `watch_id` of a file the kernel marked tracked itself, at the first
/// write of a tainted process, before user space registered it (or
/// removed it: not every write of a tainted process is a copy). A reader
/// that opens it at once is then followed without waiting for user space.
pub const TRACKED_PENDING: u32 = u32::MAX;

/// Key of the once-per-file write filter: (process, file).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteKey {
    pub tgid: u32,
    pub dev: u32,
    pub ino: u64,
}

/// Byte offsets of kernel struct members, read from the running kernel's
/// BTF at load time and handed to the programs as a global.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_start_time: u32,
    pub task_exit_code: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub file_f_inode: u32,
    pub file_f_path: u32,
    pub file_f_flags: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_mode: u32,
    pub sb_s_dev: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    /// Offset of `len` inside struct qstr.
    pub qstr_len: u32,
    /// Offset of `name` inside struct qstr.
    pub qstr_name: u32,
    /// Offset of the embedded `struct vfsmount mnt` in struct mount.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub pt_regs_di: u32,
    pub pt_regs_si: u32,
    pub pt_regs_dx: u32,
    pub pt_regs_r10: u32,
    pub pt_regs_r8: u32,
    /// struct socket -> sk, and struct sock fields (sock_common included).
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub io_kiocb_opcode: u32,
    pub sb_s_magic: u32,
    pub file_private_data: u32,
    pub inode_i_private: u32,
    /// Offset of `numbers[0].nr` in struct pid (the pid in the root namespace).
    pub pid_nr: u32,
    /// signal:signal_generate field offsets.
    pub tp_sig_sig: u32,
    pub tp_sig_code: u32,
    pub tp_sig_pid: u32,
    pub tp_sig_result: u32,
    /// Field offsets inside tracepoint records (from tracefs formats).
    pub tp_sys_exit_ret: u32,
    pub tp_iou_complete_req: u32,
    pub tp_iou_complete_res: u32,
    /// IORING_OP_OPENAT / OPENAT2 opcode values.
    pub iou_op_openat: u32,
    pub iou_op_openat2: u32,
    /// io_kiocb.file, and a bit per io_uring opcode that writes or sends.
    pub io_kiocb_file: u32,
    pub _pad_iou: u32,
    pub iou_sink_ops: u64,
    /// task_struct.flags (PF_DUMPCORE), task_struct.signal,
    /// signal_struct.core_state (non-null while the process dumps core).
    pub task_flags: u32,
    pub task_signal: u32,
    pub signal_core_state: u32,
    /// pt_regs.orig_ax: the current syscall number (LSM hooks).
    pub pt_regs_orig_ax: u32,
    /// inode.i_generation, inode.i_uid, inode.i_size, file.f_mode.
    pub inode_i_generation: u32,
    pub inode_i_uid: u32,
    pub inode_i_size: u32,
    pub file_f_mode: u32,
    /// signal_struct.live (threads alive; 0 once the last one exits) and
    /// signal_struct.group_exit_code (the group's exit code: a core dump's
    /// 0x80 is there, whichever thread exits last).
    pub signal_live: u32,
    pub signal_group_exit_code: u32,
    /// fdtable.max_fds.
    pub fdt_max_fds: u32,
    /// task:task_rename field offsets (`pid`, `newcomm`); 0 when the
    /// kernel has no such tracepoint (its probe then does not attach).
    pub tp_rename_pid: u32,
    pub tp_rename_newcomm: u32,
}

/// Run-time switches handed to the programs as a global.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SensorSettings {
    /// The sensor's own pid: its opens are not reported.
    pub self_pid: u32,
    /// Bench switch: every program returns at once (measures the hook floor).
    pub empty_programs: u32,
    /// Ring-buffer fill (bytes) above which a non-urgent submit wakes user space.
    pub wakeup_bytes: u32,
    /// `[flow] max_generations`: the last generation of tracked files.
    pub max_generations: u32,
}

/// Rules an LSM hook can enforce (bit numbers of the kernel's `ENFORCE[0]`,
/// values of `DeniedEvent::rule`).
pub const ENF_KEY_OPEN: u32 = 0;
pub const ENF_PTRACE: u32 = 1;
pub const ENF_VM_READ: u32 = 2;
pub const ENF_VM_WRITE: u32 = 3;
pub const ENF_PROC_MEM: u32 = 4;
pub const ENF_PIDFD_GETFD: u32 = 5;
pub const ENF_FORCED_CRASH: u32 = 6;
pub const ENF_CORE_DUMP: u32 = 7;
/// Rule names of the ENF_* bits, in bit order.
pub const ENF_RULES: [&str; 8] = [
    "key-file-open",
    "ptrace-attach",
    "process-vm-read",
    "process-vm-write",
    "proc-mem-open",
    "pidfd-getfd",
    "forced-crash",
    "core-dump",
];

/// `AllowKey::scope` of a memory-access allowance (actor exe may access
/// processes running the target exe).
pub const ALLOW_MEMORY: u32 = u32::MAX - 1;
/// `AllowKey::scope` of a key-file allowance covering every key path.
pub const ALLOW_ANY_KEY: u32 = u32::MAX;

/// An `[[allow]]` entry as the LSM hooks check it: the actor's executable
/// (dev, inode), the key_path index it may open (or ALLOW_*), and for
/// memory allowances the target's executable.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowKey {
    pub dev: u32,
    pub scope: u32,
    pub ino: u64,
    pub target_dev: u32,
    pub _pad: u32,
    pub target_ino: u64,
}

/// An operation a BPF LSM hook denied (EPERM) because its rule is in
/// enforce mode. The header describes the actor (for `ENF_CORE_DUMP`, the
/// dumping process).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct DeniedEvent {
    pub hdr: Header,
    /// ENF_* value.
    pub rule: u32,
    /// Target process (tgid) for the memory rules and forced-crash.
    pub target: u32,
    /// Signal (forced-crash); ptrace access mode (memory rules).
    pub arg: u32,
    /// Syscall number of the actor (orig_ax), -1 when none.
    pub syscall: i32,
    /// The file (key-file-open, core-dump).
    pub ino: u64,
    pub dev: u32,
    /// Watch entry value (key_path index) for key-file-open.
    pub watch_id: u32,
    /// file f_flags (key-file-open, core-dump).
    pub flags: u32,
    pub _pad: u32,
    pub path: KPath,
}

/// What a process did through an fd it did not open (`FdAccessEvent::op`).
pub const FDA_READ: u32 = 1;
pub const FDA_WRITE: u32 = 2;
pub const FDA_MMAP: u32 = 3;

/// How the fd reached the process (`FdAccessEvent::how`).
/// Opened by another process and inherited at fork (e.g. `cat < key`).
pub const FDV_INHERITED: u32 = 1;
/// Opened by this process before it exec'd the program that reads it.
pub const FDV_EXEC: u32 = 2;
/// Received: SCM_RIGHTS over a unix socket, pidfd_getfd, binder (the
/// kernel's file_receive hook); `syscall` says which.
pub const FDV_RECEIVED: u32 = 3;
/// Opened before keysentry started (no opener recorded).
pub const FDV_UNKNOWN: u32 = 4;

/// A process read, wrote or mapped a watched file (a key path or a tracked
/// file) through an fd it did not open itself, seen by the BPF LSM hooks
/// `file_permission` and `mmap_file`. First access per (process image,
/// file) only. The header describes the reader.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct FdAccessEvent {
    pub hdr: Header,
    pub ino: u64,
    pub dev: u32,
    /// FDA_* value.
    pub op: u32,
    /// FDV_* value.
    pub how: u32,
    /// Tgid that opened the file (0: unknown).
    pub opener: u32,
    /// For FDV_RECEIVED: the syscall the fd arrived by (x86_64 number),
    /// else -1.
    pub syscall: i32,
    /// file f_flags.
    pub flags: u32,
    /// The watch entry's value and flags (WATCH_TRACKED: a tracked file).
    pub watch_id: u32,
    pub watch_flags: u32,
    /// The inode's i_generation, and the owner (i_uid).
    pub igen: u32,
    pub owner: u32,
    pub path: KPath,
}

/// Who opened a watched file (`struct file` address -> opener), recorded
/// by the LSM file_open hook: the process image (tgid and mm) that owns
/// the fd, to tell an fd handed over from one opened by the reader.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FileOpener {
    pub tgid: u32,
    pub _pad: u32,
    /// The opener's mm: a new one after exec.
    pub mm: u64,
}

const _: () = assert!(core::mem::size_of::<FdAccessEvent>() == 56 + 48 + 8 + PATH_BUF);
const _: () = assert!(core::mem::size_of::<Header>() == 56);
const _: () = assert!(core::mem::size_of::<DeniedEvent>() == 56 + 40 + 8 + PATH_BUF);
const _: () = assert!(core::mem::size_of::<AllowKey>() == 32);
const _: () = assert!(core::mem::size_of::<KPath>() == 8 + PATH_BUF);
const _: () = assert!(core::mem::size_of::<OpenEvent>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<ExecEvent>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 72);
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 64);
const _: () = assert!(core::mem::size_of::<RenameEvent>() == 72);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<WatchEntry>() == 16);
const _: () = assert!(core::mem::size_of::<MemAccessEvent>() == 96);
const _: () = assert!(core::mem::size_of::<SignalEvent>() == 72);
const _: () = assert!(core::mem::size_of::<DumpConfigEvent>() == 80);
const _: () = assert!(core::mem::size_of::<Taint>() == 32);
const _: () = assert!(core::mem::size_of::<FileWriteEvent>() == 56 + 32 + 32 + 8 + 8 + PATH_BUF);
const _: () = assert!(core::mem::size_of::<FileCloseEvent>() == 96);
const _: () = assert!(core::mem::size_of::<NetSendEvent>() == 56 + 32 + 16 + 16 + 32 + 8 + 32);
const _: () = assert!(core::mem::size_of::<PathChangeEvent>() == 56 + 32 + 2 * ARG_BUF);
const _: () = assert!(PATH_WRITE_MASK + NAME_MAX + 1 < PATH_BUF);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), without padding, valid for any bits.
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for WatchEntry {}
    unsafe impl aya::Pod for Taint {}
    unsafe impl aya::Pod for WriteKey {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for SensorSettings {}
    unsafe impl aya::Pod for AllowKey {}
    unsafe impl aya::Pod for FileOpener {}
    unsafe impl aya::Pod for names::NamePatterns {}
    unsafe impl aya::Pod for names::NameKey {}
}

#[cfg(test)]
mod comm_tests {
    use super::*;

    fn naive(mut c: [u8; COMM_LEN]) -> [u8; COMM_LEN] {
        if let Some(n) = c.iter().position(|b| *b == 0) {
            c[n..].fill(0);
        }
        c
    }

    #[test]
    fn comm_key_zeroes_what_follows_the_first_nul() {
        let mut k = [0u8; COMM_LEN];
        k[..7].copy_from_slice(b"signerd");
        let mut raw = [0xffu8; COMM_LEN];
        raw[..8].copy_from_slice(b"signerd\0");
        assert_eq!(comm_key(raw), k);
        // Every NUL position, with stale bytes of every kind after it
        // (0x80 and 0x01 are the has-zero-byte test's edge cases).
        for stale in [0x00u8, 0x01, 0x7f, 0x80, 0x81, 0xff, b'a'] {
            for nul in 0..=COMM_LEN {
                let mut c = [stale; COMM_LEN];
                for (i, b) in c.iter_mut().enumerate().take(nul) {
                    *b = [b'a', 0x80, 0x01, 0xff, 0x81][i % 5];
                }
                if nul < COMM_LEN {
                    c[nul] = 0;
                }
                assert_eq!(comm_key(c), naive(c), "nul at {nul}, stale {stale:#x}");
            }
        }
    }
}
