//! The probe registry: every kernel program keysentry attaches, with its
//! hook, whether the sensor can run without it and the detection it serves.
//! `PROBES` (tracepoints, attached by `loader::attach_all`) and
//! `LSM_PROBES` (BPF LSM hooks, attached by `loader::lsm::attach_lsm`).
//! The unit test below checks both against the programs of the built object.

use sensor_common::{
    ENF_CORE_DUMP, ENF_FORCED_CRASH, ENF_KEY_OPEN, ENF_PIDFD_GETFD, ENF_PROC_MEM, ENF_PTRACE,
    ENF_VM_READ, ENF_VM_WRITE,
};

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// Classic tracepoint category:name.
    Tracepoint(&'static str, &'static str),
    /// Raw tracepoint.
    Raw(&'static str),
    /// BPF LSM hook.
    Lsm(&'static str),
    /// Cgroup sysctl program, attached to the root of the cgroup v2
    /// hierarchy (`cgroup2_root`).
    CgroupSysctl,
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub program: &'static str,
    pub hook: Hook,
    pub required: bool,
    pub serves: &'static str,
}

pub const PROBES: &[Probe] = &[
    Probe {
        program: "ks_sched_exec",
        hook: Hook::Tracepoint("sched", "sched_process_exec"),
        required: true,
        serves: "process table (exec)",
    },
    Probe {
        program: "ks_sched_fork",
        hook: Hook::Raw("sched_process_fork"),
        required: true,
        serves: "process table (fork)",
    },
    Probe {
        program: "ks_sched_exit",
        hook: Hook::Tracepoint("sched", "sched_process_exit"),
        required: true,
        serves: "process table (exit)",
    },
    Probe {
        program: "ks_task_rename",
        hook: Hook::Tracepoint("task", "task_rename"),
        required: false,
        serves: "[[protected]] comm after a rename",
    },
    Probe {
        program: "ks_exit_open",
        hook: Hook::Tracepoint("syscalls", "sys_exit_openat"),
        required: true,
        serves: "key-file-open (openat)",
    },
    Probe {
        program: "ks_exit_open",
        hook: Hook::Tracepoint("syscalls", "sys_exit_open"),
        required: false,
        serves: "key-file-open (open)",
    },
    Probe {
        program: "ks_exit_open",
        hook: Hook::Tracepoint("syscalls", "sys_exit_openat2"),
        required: false,
        serves: "key-file-open (openat2)",
    },
    Probe {
        program: "ks_exit_open",
        hook: Hook::Tracepoint("syscalls", "sys_exit_creat"),
        required: false,
        serves: "key-file-open (creat)",
    },
    Probe {
        program: "ks_exit_open",
        hook: Hook::Tracepoint("syscalls", "sys_exit_open_by_handle_at"),
        required: false,
        serves: "key-file-open (open_by_handle_at)",
    },
    Probe {
        program: "ks_exit_ptrace",
        hook: Hook::Tracepoint("syscalls", "sys_exit_ptrace"),
        required: false,
        serves: "ptrace-attach",
    },
    Probe {
        program: "ks_exit_process_vm_readv",
        hook: Hook::Tracepoint("syscalls", "sys_exit_process_vm_readv"),
        required: false,
        serves: "process-vm-read",
    },
    Probe {
        program: "ks_exit_process_vm_writev",
        hook: Hook::Tracepoint("syscalls", "sys_exit_process_vm_writev"),
        required: false,
        serves: "process-vm-write",
    },
    Probe {
        program: "ks_exit_pidfd_getfd",
        hook: Hook::Tracepoint("syscalls", "sys_exit_pidfd_getfd"),
        required: false,
        serves: "pidfd-getfd",
    },
    Probe {
        program: "ks_signal_generate",
        hook: Hook::Raw("signal_generate"),
        required: false,
        serves: "forced-crash",
    },
    Probe {
        program: "ks_exit_prctl",
        hook: Hook::Tracepoint("syscalls", "sys_exit_prctl"),
        required: false,
        serves: "dump-config-change (PR_SET_DUMPABLE)",
    },
    Probe {
        program: "ks_exit_setrlimit",
        hook: Hook::Tracepoint("syscalls", "sys_exit_setrlimit"),
        required: false,
        serves: "dump-config-change (RLIMIT_CORE via setrlimit)",
    },
    Probe {
        program: "ks_exit_prlimit64",
        hook: Hook::Tracepoint("syscalls", "sys_exit_prlimit64"),
        required: false,
        serves: "dump-config-change (RLIMIT_CORE via prlimit64)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_bpf"),
        required: false,
        serves: "kernel-reader (bpf)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_init_module"),
        required: false,
        serves: "kernel-reader (init_module)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_finit_module"),
        required: false,
        serves: "kernel-reader (finit_module)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_kexec_load"),
        required: false,
        serves: "kernel-reader (kexec_load)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_kexec_file_load"),
        required: false,
        serves: "kernel-reader (kexec_file_load)",
    },
    Probe {
        program: "ks_exit_kreader",
        hook: Hook::Tracepoint("syscalls", "sys_exit_perf_event_open"),
        required: false,
        serves: "kernel-reader (perf_event_open)",
    },
    Probe {
        program: "ks_exit_swapon",
        hook: Hook::Tracepoint("syscalls", "sys_exit_swapon"),
        required: false,
        serves: "dump-config-change (a swap area switched on)",
    },
    Probe {
        program: "ks_exit_unix",
        hook: Hook::Tracepoint("syscalls", "sys_exit_bind"),
        required: false,
        serves: "agent-socket-use (a key agent's bind)",
    },
    Probe {
        program: "ks_exit_unix",
        hook: Hook::Tracepoint("syscalls", "sys_exit_connect"),
        required: false,
        serves: "agent-socket-use (a connect to a key agent)",
    },
    Probe {
        program: "ks_sysctl",
        hook: Hook::CgroupSysctl,
        required: false,
        serves: "dump-config-change (kernel guards weakened: sysctl values)",
    },
    Probe {
        program: "ks_iou_complete",
        hook: Hook::Tracepoint("io_uring", "io_uring_complete"),
        required: false,
        serves: "key-file-open (io_uring OPENAT/OPENAT2)",
    },
    Probe {
        program: "ks_exit_read",
        hook: Hook::Tracepoint("syscalls", "sys_exit_read"),
        required: false,
        serves: "pipe hand-off of tracked data (read)",
    },
    Probe {
        program: "ks_exit_read",
        hook: Hook::Tracepoint("syscalls", "sys_exit_readv"),
        required: false,
        serves: "pipe hand-off of tracked data (readv)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_write"),
        required: false,
        serves: "userspace-dump, tracked-copy (write)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_pwrite64"),
        required: false,
        serves: "userspace-dump, tracked-copy (pwrite64)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_writev"),
        required: false,
        serves: "userspace-dump, tracked-copy (writev)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_pwritev"),
        required: false,
        serves: "userspace-dump, tracked-copy (pwritev)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_pwritev2"),
        required: false,
        serves: "userspace-dump, tracked-copy (pwritev2)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_sendto"),
        required: false,
        serves: "exfiltration (sendto)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_sendmsg"),
        required: false,
        serves: "exfiltration (sendmsg)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_sendmmsg"),
        required: false,
        serves: "exfiltration (sendmmsg)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_sendfile64"),
        required: false,
        serves: "tracked-copy, exfiltration (sendfile64)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_copy_file_range"),
        required: false,
        serves: "tracked-copy, exfiltration (copy_file_range)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_splice"),
        required: false,
        serves: "tracked-copy, exfiltration (splice)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_vmsplice"),
        required: false,
        serves: "tracked-copy, exfiltration (vmsplice)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_tee"),
        required: false,
        serves: "tracked-copy, exfiltration (tee)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_ioctl"),
        required: false,
        serves: "tracked-copy (FICLONE reflink)",
    },
    Probe {
        program: "ks_exit_sink",
        hook: Hook::Tracepoint("syscalls", "sys_exit_mmap"),
        required: false,
        serves: "tracked-copy (shared writable mmap of a file)",
    },
    Probe {
        program: "ks_enter_close",
        hook: Hook::Tracepoint("syscalls", "sys_enter_close"),
        required: false,
        serves: "key-material scan of written files (close)",
    },
    Probe {
        program: "ks_iou_submit_req",
        hook: Hook::Raw("io_uring_submit_req"),
        required: false,
        serves: "key-material scan of written files (io_uring close), io_uring writes and sends with skipped completions (6.2+)",
    },
    Probe {
        program: "ks_iou_submit_sqe",
        hook: Hook::Raw("io_uring_submit_sqe"),
        required: false,
        serves: "key-material scan of written files (io_uring close), io_uring writes and sends with skipped completions (before 6.2)",
    },
    Probe {
        program: "ks_enter_close",
        hook: Hook::Tracepoint("syscalls", "sys_enter_close_range"),
        required: false,
        serves: "key-material scan of written files (close_range)",
    },
    Probe {
        program: "ks_enter_close",
        hook: Hook::Tracepoint("syscalls", "sys_enter_dup2"),
        required: false,
        serves: "key-material scan of written files (dup2 over them)",
    },
    Probe {
        program: "ks_enter_close",
        hook: Hook::Tracepoint("syscalls", "sys_enter_dup3"),
        required: false,
        serves: "key-material scan of written files (dup3 over them)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_rename"),
        required: false,
        serves: "tracked-copy (rename, rename)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_renameat"),
        required: false,
        serves: "tracked-copy (rename, renameat)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_renameat2"),
        required: false,
        serves: "tracked-copy (rename, renameat2)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_link"),
        required: false,
        serves: "tracked-copy (hard link, link)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_linkat"),
        required: false,
        serves: "tracked-copy (hard link, linkat)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_unlink"),
        required: false,
        serves: "tracked files end with their inode (unlink)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_unlinkat"),
        required: false,
        serves: "tracked files end with their inode (unlinkat)",
    },
    Probe {
        program: "ks_exit_keyctl",
        hook: Hook::Tracepoint("syscalls", "sys_exit_keyctl"),
        required: false,
        serves: "keyring-read (another uid's persistent keyring taken)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_symlink"),
        required: false,
        serves: "key-holder-tamper (a symlink put at a code-loading path, symlink)",
    },
    Probe {
        program: "ks_exit_pathchange",
        hook: Hook::Tracepoint("syscalls", "sys_exit_symlinkat"),
        required: false,
        serves: "key-holder-tamper (a symlink put at a code-loading path, symlinkat)",
    },
];

impl Probe {
    pub fn label(&self) -> String {
        match self.hook {
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Hook::Raw(n) => format!("raw_tp/{n}"),
            Hook::Lsm(n) => format!("lsm/{n}"),
            Hook::CgroupSysctl => "cgroup_sysctl".to_string(),
        }
    }

    /// The `backend` label of `keysentry_probe_attached`.
    pub fn backend(&self) -> &'static str {
        match self.hook {
            Hook::Tracepoint(..) | Hook::Raw(_) => "tracepoint",
            Hook::Lsm(_) => "lsm",
            Hook::CgroupSysctl => "cgroup",
        }
    }
}

/// A BPF LSM hook: the rules (ENF_* bits) it enforces and the detection
/// it serves (attached wherever BPF LSM works).
#[derive(Debug, Clone, Copy)]
pub struct LsmProbe {
    pub program: &'static str,
    pub hook: &'static str,
    /// Bit per ENF_* rule.
    pub rules: u32,
    /// The detection it serves on the LSM backend (one of
    /// `LSM_DETECTIONS`), and its part in it.
    pub detects: Option<(&'static str, &'static str)>,
}

/// What the fd hand-off detection covers (all its hooks together).
pub const FD_ACCESS_DETECTION: &str = "key-file-open via an fd it did not open";
/// Accesses to other processes the syscall tracepoints do not enumerate.
pub const PROCESS_ACCESS_DETECTION: &str = "process-access (kcmp, perf_event_open, ...)";
/// Reads of other users' kernel keys.
pub const KEYRING_DETECTION: &str = "keyring-read (another user's kernel key read)";
/// The detections only the LSM backend serves.
pub const LSM_DETECTIONS: &[&str] = &[
    FD_ACCESS_DETECTION,
    PROCESS_ACCESS_DETECTION,
    KEYRING_DETECTION,
];

pub const LSM_PROBES: &[LsmProbe] = &[
    LsmProbe {
        program: "ks_lsm_file_open",
        hook: "file_open",
        rules: 1 << ENF_KEY_OPEN | 1 << ENF_CORE_DUMP,
        detects: Some((FD_ACCESS_DETECTION, "who opened each watched file")),
    },
    LsmProbe {
        program: "ks_lsm_file_receive",
        hook: "file_receive",
        rules: 0,
        detects: Some((
            FD_ACCESS_DETECTION,
            "fds received (SCM_RIGHTS, pidfd_getfd)",
        )),
    },
    LsmProbe {
        program: "ks_lsm_file_permission",
        hook: "file_permission",
        rules: 0,
        detects: Some((FD_ACCESS_DETECTION, "reads and writes of watched files")),
    },
    LsmProbe {
        program: "ks_lsm_mmap_file",
        hook: "mmap_file",
        rules: 0,
        detects: Some((FD_ACCESS_DETECTION, "mappings of watched files")),
    },
    LsmProbe {
        program: "ks_lsm_ptrace_access_check",
        hook: "ptrace_access_check",
        rules: 1 << ENF_PTRACE
            | 1 << ENF_VM_READ
            | 1 << ENF_VM_WRITE
            | 1 << ENF_PROC_MEM
            | 1 << ENF_PIDFD_GETFD,
        detects: Some((
            PROCESS_ACCESS_DETECTION,
            "accesses to other processes by syscalls the tracepoints do not enumerate",
        )),
    },
    LsmProbe {
        program: "ks_lsm_key_permission",
        hook: "key_permission",
        rules: 0,
        detects: Some((
            KEYRING_DETECTION,
            "key reads the key's permissions granted, by another uid than its owner",
        )),
    },
    LsmProbe {
        program: "ks_lsm_task_kill",
        hook: "task_kill",
        rules: 1 << ENF_FORCED_CRASH,
        detects: None,
    },
];

/// The LSM hook that enforces rule bit `rule`.
pub fn lsm_probe_for(rule: u32) -> &'static LsmProbe {
    LSM_PROBES
        .iter()
        .find(|p| p.rules & (1 << rule) != 0)
        .expect("every ENF_* rule has an LSM hook")
}

/// The tracepoint-side detection of each enforceable rule (what serves it
/// in observe mode and where BPF LSM is not available).
pub fn tracepoint_for(rule: u32) -> &'static str {
    match rule {
        ENF_KEY_OPEN => "tracepoint/syscalls/sys_exit_open* and io_uring:io_uring_complete",
        ENF_PTRACE => "tracepoint/syscalls/sys_exit_ptrace",
        ENF_VM_READ => "tracepoint/syscalls/sys_exit_process_vm_readv",
        ENF_VM_WRITE => "tracepoint/syscalls/sys_exit_process_vm_writev",
        ENF_PROC_MEM => "tracepoint/syscalls/sys_exit_openat (/proc/<pid>/mem)",
        ENF_PIDFD_GETFD => "tracepoint/syscalls/sys_exit_pidfd_getfd",
        ENF_FORCED_CRASH => "raw_tp/signal_generate",
        _ => "tracepoint/sched/sched_process_exit (exit code 0x80)",
    }
}

/// The root of the cgroup v2 hierarchy, which every process belongs to:
/// /sys/fs/cgroup (unified), or /sys/fs/cgroup/unified (hybrid, as systemd
/// mounts it beside the v1 controllers). None when neither is cgroup2.
pub fn cgroup2_root() -> Option<&'static str> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| {
            nix::sys::statfs::statfs(*p)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use aya_obj::{Object, ProgramSection};

    use super::{super::EBPF_OBJ, *};

    /// The programs of the embedded object, by name.
    fn object_programs() -> BTreeMap<String, ProgramSection> {
        let obj = Object::parse(EBPF_OBJ).expect("the embedded eBPF object parses");
        obj.programs
            .into_iter()
            .map(|(name, p)| (name, p.section))
            .collect()
    }

    /// `PROBES` and `LSM_PROBES` name only programs of the object, each
    /// of the type its hook loads it as, and every program is attached by
    /// some entry; no hook is attached twice.
    #[test]
    fn probe_tables_match_the_programs_of_the_object() {
        let programs = object_programs();
        assert!(!programs.is_empty());
        let mut used = BTreeSet::new();
        let mut labels = BTreeSet::new();
        for p in PROBES {
            let label = p.label();
            let section = programs
                .get(p.program)
                .unwrap_or_else(|| panic!("{label}: no program {} in the object", p.program));
            let fits = match p.hook {
                Hook::Tracepoint(..) => matches!(section, ProgramSection::TracePoint),
                Hook::Raw(_) => matches!(section, ProgramSection::RawTracePoint),
                Hook::CgroupSysctl => matches!(section, ProgramSection::CgroupSysctl),
                // attach() refuses these: LSM hooks go in LSM_PROBES.
                Hook::Lsm(_) => false,
            };
            assert!(fits, "{label}: program {} is {section:?}", p.program);
            assert!(labels.insert(label.clone()), "{label} attached twice");
            used.insert(p.program);
        }
        for p in LSM_PROBES {
            let label = format!("lsm/{}", p.hook);
            let section = programs
                .get(p.program)
                .unwrap_or_else(|| panic!("{label}: no program {} in the object", p.program));
            assert!(
                matches!(section, ProgramSection::Lsm { sleepable: false }),
                "{label}: program {} is {section:?}",
                p.program
            );
            assert!(labels.insert(label.clone()), "{label} attached twice");
            used.insert(p.program);
        }
        // The bench's dispatcher (loader/bench.rs), attached by
        // `--bench-dispatcher` only.
        for name in super::super::bench::BENCH_PROGRAMS {
            let section = programs
                .get(*name)
                .unwrap_or_else(|| panic!("no bench program {name} in the object"));
            assert!(
                matches!(section, ProgramSection::BtfTracePoint),
                "bench program {name} is {section:?}"
            );
            used.insert(name);
        }
        let unattached: Vec<&String> = programs
            .keys()
            .filter(|name| !used.contains(name.as_str()))
            .collect();
        assert!(
            unattached.is_empty(),
            "programs of the object no probe attaches: {unattached:?}"
        );
    }
}
