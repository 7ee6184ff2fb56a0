//! Loading the kernel object and attaching its programs through a registry:
//! each probe names its hook, whether the sensor can run without it, and the
//! detection it serves. Optional probes that the kernel lacks are reported
//! (log line and keysentry_probe_attached 0) and the sensor runs on the rest.

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{RawTracePoint, TracePoint},
};
use sensor_common::{KernelOffsets, SensorSettings};

use crate::{metrics::Metrics, tracefs};

/// The kernel programs, built by `cargo xtask build-ebpf`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(env!("KEYSENTRY_EBPF_OBJ"));

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// Classic tracepoint category:name.
    Tracepoint(&'static str, &'static str),
    /// Raw tracepoint.
    Raw(&'static str),
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
        program: "ks_exit_openat",
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
        program: "ks_exit_openat2",
        hook: Hook::Tracepoint("syscalls", "sys_exit_openat2"),
        required: false,
        serves: "key-file-open (openat2)",
    },
    Probe {
        program: "ks_exit_creat",
        hook: Hook::Tracepoint("syscalls", "sys_exit_creat"),
        required: false,
        serves: "key-file-open (creat)",
    },
    Probe {
        program: "ks_exit_open_by_handle_at",
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
        hook: Hook::Tracepoint("signal", "signal_generate"),
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
];

impl Probe {
    pub fn label(&self) -> String {
        match self.hook {
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Hook::Raw(n) => format!("raw_tp/{n}"),
        }
    }
}

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// Loads the object with the kernel's offsets and the settings as globals
/// and the event ring buffer sized `ring_bytes` (a power of two, at least a
/// page).
pub fn load(offsets: &KernelOffsets, settings: &SensorSettings, ring_bytes: u32) -> Result<Ebpf> {
    if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
        bail!("ring buffer size {ring_bytes} must be a power of two of at least 4096 bytes");
    }
    EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("SETTINGS", settings, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(EBPF_OBJ)
        .context("loading the kernel programs")
}

/// Attaches every probe; fails only when a required one cannot attach.
/// `skip` lists programs not to attach (e.g. io_uring without its offsets).
pub fn attach_all(
    ebpf: &mut Ebpf,
    metrics: &Metrics,
    skip: &[&str],
) -> Result<Vec<(Probe, Result<(), String>)>> {
    let mut report = Vec::new();
    for probe in PROBES {
        let res = if skip.contains(&probe.program) {
            Err("the kernel lacks what it needs (see log)".to_string())
        } else {
            attach(ebpf, probe).map_err(|e| format!("{e:#}"))
        };
        metrics
            .probe_attached
            .with_label_values(&[probe.label().as_str()])
            .set(res.is_ok() as i64);
        match &res {
            Ok(()) => tracing::debug!("attached {} ({})", probe.label(), probe.serves),
            Err(e) if probe.required => bail!("required probe {} failed: {e}", probe.label()),
            Err(e) => tracing::warn!(
                "probe {} not attached, {} is not covered: {e}",
                probe.label(),
                probe.serves
            ),
        }
        report.push((*probe, res));
    }
    Ok(report)
}

fn attach(ebpf: &mut Ebpf, probe: &Probe) -> Result<()> {
    let prog = ebpf
        .program_mut(probe.program)
        .with_context(|| format!("program {} missing from the object", probe.program))?;
    match probe.hook {
        Hook::Tracepoint(cat, name) => {
            if !tracefs::has_tracepoint(cat, name) {
                bail!("tracepoint {cat}:{name} does not exist on this kernel");
            }
            let tp: &mut TracePoint = prog.try_into()?;
            // One program may serve several tracepoints: loaded once.
            if tp.fd().is_err() {
                tp.load()
                    .with_context(|| format!("loading {}", probe.program))?;
            }
            tp.attach(cat, name)
                .with_context(|| format!("attaching {cat}:{name}"))?;
        }
        Hook::Raw(name) => {
            let tp: &mut RawTracePoint = prog.try_into()?;
            tp.load()
                .with_context(|| format!("loading {}", probe.program))?;
            tp.attach(name)
                .with_context(|| format!("attaching raw_tp {name}"))?;
        }
    }
    Ok(())
}
