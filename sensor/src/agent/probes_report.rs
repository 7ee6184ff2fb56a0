//! `keysentry probes`, around the path rather than on it: loads the object
//! (and one LSM program, to ask the kernel whether BPF LSM works) without
//! attaching anything, and says for each detection which hook serves it on
//! this kernel and why, and for each enforceable rule its mode and whether
//! BPF LSM can enforce it.

use anyhow::Result;
use sensor_common::SensorSettings;

use crate::{
    agent::live::check_privileges, config::Config, kernel::btf, kernel::loader, kernel::tracefs,
};

/// Why a detection is served by its tracepoint, with or without BPF LSM.
fn tracepoint_why(program: &str) -> &'static str {
    match program {
        "ks_exit_ptrace"
        | "ks_exit_process_vm_readv"
        | "ks_exit_process_vm_writev"
        | "ks_exit_pidfd_getfd" => {
            "only the tracepoint sees failed attempts, the result and the ptrace request (lsm/ptrace_access_check leaves this syscall to it)"
        }
        "ks_exit_open" => {
            "only the tracepoint sees the path argument and failed opens (lsm/file_open only records openers)"
        }
        "ks_iou_complete" => {
            "io_uring writes and sends; io_uring opens only where lsm/file_open does not report them (below)"
        }
        "ks_sysctl" => {
            "a cgroup sysctl program sees the value written; no tracepoint or LSM hook does"
        }
        _ => "no LSM hook serves it",
    }
}

/// How io_uring opens into fixed file slots (direct descriptors, never in
/// the fd table) are seen on this kernel.
fn iou_direct_line(
    lsm_available: bool,
    lsm_reason: &str,
    offsets: &sensor_common::KernelOffsets,
) -> String {
    if lsm_available {
        format!(
            "lsm/file_open: {lsm_reason} (every io_uring open, with its file, whatever its completion)"
        )
    } else if btf::has_io_uring(offsets) && btf::has_io_uring_fixed_table(offsets) {
        format!(
            "tracepoint/io_uring/io_uring_complete: the ring's fixed file table ({}); partial: a completion the submitter skips (IOSQE_CQE_SKIP_SUCCESS), or a slot closed or reused before the completion is posted, is not seen without BPF LSM ({})",
            if offsets.iou_table_layout == sensor_common::IOU_TABLE_FIXED_FILES {
                "file_table.files, 6.1-6.12 layout"
            } else {
                "file_table.data.nodes, 6.13+ layout"
            },
            lsm_unavailable_words(lsm_reason)
        )
    } else {
        format!(
            "not covered: seen only with BPF LSM on this kernel ({}; the fixed file table's layout is not in its BTF)",
            lsm_unavailable_words(lsm_reason)
        )
    }
}

/// The detection line for io_uring opens into fixed file slots.
pub const IOU_DIRECT_DETECTION: &str = "key-file-open (io_uring direct descriptor)";

/// Memory access named from inside a pid namespace (a container's pid 1).
pub const PIDNS_DETECTION: &str = "memory-access targets in a pid namespace";
/// The `keysentry probes` line for container-escape's key opens.
pub const ESCAPE_DETECTION: &str = "container-escape (key opened through another namespace)";

/// Why BPF LSM is not used, as `keysentry probes` says it.
fn lsm_unavailable_words(reason: &str) -> String {
    if reason.starts_with("--backend") {
        reason.to_string()
    } else {
        format!("BPF LSM unavailable: {reason}")
    }
}

/// `keysentry probes`: for each detection, the hook that serves it on this
/// kernel and why; for each enforceable rule, its mode and whether BPF LSM
/// can enforce it. Loads the object (and one LSM program, to ask the
/// kernel) but attaches nothing.
pub fn probes_report(cfg: &Config, backend: loader::lsm::Backend) -> Result<String> {
    use std::fmt::Write;
    check_privileges()?;
    tracefs::ensure_mounted()?;
    let kbtf = btf::KernelBtf::load()?;
    let offsets = btf::kernel_offsets(&kbtf)?;
    let settings = SensorSettings {
        self_pid: std::process::id(),
        empty_programs: 0,
        wakeup_bytes: 1 << 16,
        lifecycle_wakeup_bytes: 1 << 16,
        max_generations: cfg.flow.max_generations,
        fold_window_ms: sensor_common::FOLD_WINDOW_MS,
        crit_rate_limit: 1,
        key_holders: 0,
        agent_protected: 0,
        host_mnt_ns: 0,
    };
    let mut ebpf = loader::load(&offsets, &settings, 1 << 16, &[])?;
    let lsm = loader::lsm::probe_lsm(&mut ebpf, backend);
    let enforce = loader::lsm::effective_enforce(cfg.enforce_bits(), &lsm);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    let mut out = String::new();
    let _ = writeln!(out, "kernel {kernel}");
    let _ = writeln!(
        out,
        "BPF LSM: {} ({})",
        if lsm.available {
            "available"
        } else {
            "unavailable"
        },
        lsm.reason
    );
    let _ = writeln!(out, "\ndetections (hook serving each: why):");
    for p in loader::probes::PROBES {
        let status = match p.hook {
            loader::probes::Hook::Tracepoint(c, n) if !tracefs::has_tracepoint(c, n) => {
                "unavailable: the tracepoint does not exist on this kernel"
            }
            _ if p.program == "ks_iou_complete" && !btf::has_io_uring(&offsets) => {
                "unavailable: no io_uring offsets in the kernel's BTF"
            }
            _ if p.program.starts_with("ks_iou_submit_")
                && btf::io_uring_close_probe(&offsets) != Some(p.program) =>
            {
                "unavailable: not this kernel's io_uring submit tracepoint, or no io_close in its BTF"
            }
            loader::probes::Hook::CgroupSysctl if loader::probes::cgroup2_root().is_none() => {
                "unavailable: no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"
            }
            _ if p.program == "ks_task_rename" && !btf::has_task_rename(&offsets) => {
                "unavailable: task:task_rename has no pid/newcomm fields in tracefs"
            }
            _ if p.program == "ks_exit_unix" && !btf::has_unix_sock(&offsets) => {
                "unavailable: no unix_sock.peer/path in the kernel's BTF"
            }
            _ => "available",
        };
        // The same on every kernel: these detections stay on tracepoints.
        let why = if status == "available" {
            format!(" ({})", tracepoint_why(p.program))
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {:<50} {}: {status}{why}", p.serves, p.label());
    }
    let _ = writeln!(
        out,
        "  {:<50} {}",
        IOU_DIRECT_DETECTION,
        iou_direct_line(lsm.available, &lsm.reason, &offsets)
    );
    let _ = writeln!(
        out,
        "  {:<50} {}",
        PIDNS_DETECTION,
        if btf::has_pid_namespaces(&offsets) {
            "available (the caller's pid namespace IDR, /proc directories' struct pid)"
        } else {
            "unavailable: no pid namespace IDR or proc_inode in the kernel's BTF (numbers taken as host pids)"
        }
    );
    let _ = writeln!(
        out,
        "  {:<50} {}",
        ESCAPE_DETECTION,
        if btf::has_mount_namespaces(&offsets) {
            "available (the opened file's mount's namespace against the opener's)"
        } else {
            "unavailable: no nsproxy, mount.mnt_ns or mnt_namespace.ns in the kernel's BTF"
        }
    );
    // What only the LSM backend sees.
    for d in loader::probes::LSM_DETECTIONS {
        let hooks: Vec<String> = loader::probes::LSM_PROBES
            .iter()
            .filter(|p| p.detects.is_some_and(|(pd, _)| pd == *d))
            .map(|p| format!("lsm/{}", p.hook))
            .collect();
        let line = if lsm.available {
            format!("{}: {}", hooks.join(", "), lsm.reason)
        } else {
            format!(
                "not covered: {} (no tracepoint sees it)",
                lsm_unavailable_words(&lsm.reason)
            )
        };
        let _ = writeln!(out, "  {d:<50} {line}");
    }
    let _ = writeln!(out, "\nenforcement (per [[rule]] mode; default observe):");
    let requested = cfg.enforce_bits();
    for (i, name) in sensor_common::ENF_RULES.iter().enumerate() {
        let i = i as u32;
        let lsm_hook = format!("lsm/{}", loader::probes::lsm_probe_for(i).hook);
        let line = if enforce & (1 << i) != 0 {
            format!(
                "enforce  {lsm_hook}: {} (denials), detection by {}",
                lsm.reason,
                loader::probes::tracepoint_for(i)
            )
        } else if requested & (1 << i) != 0 {
            format!(
                "observe  {}: enforce requested but {} (runs in observe mode)",
                loader::probes::tracepoint_for(i),
                lsm.reason
            )
        } else {
            format!(
                "observe  {}: rule in observe mode ({lsm_hook} {})",
                loader::probes::tracepoint_for(i),
                if lsm.available {
                    "available for enforce"
                } else {
                    "unavailable"
                }
            )
        };
        let _ = writeln!(out, "  {name:<18} {line}");
    }
    Ok(out)
}
