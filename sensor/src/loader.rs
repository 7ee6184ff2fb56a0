//! Loading the kernel object and attaching its programs through a registry:
//! each probe names its hook, whether the sensor can run without it, and the
//! detection it serves. Optional probes that the kernel lacks are reported
//! (log line and keysentry_probe_attached 0) and the sensor runs on the rest.
//!
//! Two backends. Tracepoints detect, on every kernel. Where the kernel runs
//! BPF LSM (checked at start: BTF, `bpf` in /sys/kernel/security/lsm, a
//! real LSM program load) and `--backend tracepoint` is not given, the LSM
//! hooks (`LSM_PROBES`) add what tracepoints cannot see: accesses of
//! watched files through an fd the reader did not open (`file_open`,
//! `file_receive`, `file_permission`, `mmap_file`), and they enforce the
//! rules in enforce mode (an enforcing hook reports only its denials, so an
//! event is never alerted twice).

use anyhow::{Context, Result, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{Lsm, RawTracePoint, TracePoint},
};
use sensor_common::{
    ENF_CORE_DUMP, ENF_FORCED_CRASH, ENF_KEY_OPEN, ENF_PIDFD_GETFD, ENF_PROC_MEM, ENF_PTRACE,
    ENF_RULES, ENF_VM_READ, ENF_VM_WRITE, KernelOffsets, SensorSettings,
};

use crate::{metrics::Metrics, tracefs};

/// The kernel programs, built by `cargo xtask build-ebpf`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(env!("KEYSENTRY_EBPF_OBJ"));

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// Classic tracepoint category:name.
    Tracepoint(&'static str, &'static str),
    /// Raw tracepoint.
    Raw(&'static str),
    /// BPF LSM hook.
    Lsm(&'static str),
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
/// The detections only the LSM backend serves.
pub const LSM_DETECTIONS: &[&str] = &[FD_ACCESS_DETECTION, PROCESS_ACCESS_DETECTION];

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
        ENF_FORCED_CRASH => "tracepoint/signal/signal_generate",
        _ => "tracepoint/sched/sched_process_exit (exit code 0x80)",
    }
}

/// Which backend the user asked for (`keysentry run --backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// BPF LSM where the kernel allows it (fd hand-off detection, and
    /// enforcement of rules in enforce mode), tracepoints for the rest.
    Auto,
    /// Tracepoints only: no LSM program is loaded, nothing is denied, fd
    /// hand-offs are not seen.
    Tracepoint,
}

/// What the running kernel allows for BPF LSM, and why.
#[derive(Debug, Clone)]
pub struct LsmSupport {
    pub available: bool,
    pub reason: String,
}

pub const SECURITYFS_LSM: &str = "/sys/kernel/security/lsm";

/// The active LSMs (mounting securityfs when it is missing).
fn active_lsms() -> Result<String> {
    if !std::path::Path::new(SECURITYFS_LSM).exists() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    std::fs::read_to_string(SECURITYFS_LSM).with_context(|| format!("reading {SECURITYFS_LSM}"))
}

/// Checks BTF and the active LSM list, then loads (without attaching) the
/// object's file_open LSM program: the kernel's answer is the real test
/// (some kernels list bpf but refuse the load).
pub fn probe_lsm(ebpf: &mut Ebpf, backend: Backend) -> LsmSupport {
    let no = |reason: String| LsmSupport {
        available: false,
        reason,
    };
    if backend == Backend::Tracepoint {
        return no("--backend tracepoint".into());
    }
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => return no(format!("no kernel BTF: {e}")),
    };
    match active_lsms() {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => {}
        Ok(list) => {
            return no(format!(
                "bpf is not an active LSM ({SECURITYFS_LSM}: {}; boot with lsm=...,bpf)",
                list.trim()
            ));
        }
        Err(e) => return no(format!("{e:#}")),
    }
    let probe = &LSM_PROBES[0];
    let res = (|| -> Result<()> {
        let prog: &mut Lsm = ebpf
            .program_mut(probe.program)
            .with_context(|| format!("program {} missing from the object", probe.program))?
            .try_into()?;
        prog.load(probe.hook, &btf)?;
        Ok(())
    })();
    match res {
        Ok(()) => LsmSupport {
            available: true,
            reason: "BPF LSM active".into(),
        },
        Err(e) => {
            let msg = format!("{e:#}");
            let why = if msg.contains("Operation not permitted") || msg.contains("EPERM") {
                "LSM program load refused (EPERM)".to_string()
            } else {
                format!("LSM program load failed: {msg}")
            };
            no(why)
        }
    }
}

/// The enforce bits that can really be enforced: requested ones when BPF
/// LSM is available, none otherwise (with a warning per rule).
pub fn effective_enforce(requested: u32, lsm: &LsmSupport) -> u32 {
    if requested != 0 && !lsm.available {
        for (i, name) in ENF_RULES.iter().enumerate() {
            if requested & (1 << i) != 0 {
                tracing::warn!(
                    "rule {name}: mode enforce requested, but BPF LSM is not available ({}): running in observe mode",
                    lsm.reason
                );
            }
        }
        return 0;
    }
    requested
}

/// Attaches the LSM hooks that serve a rule in `enforce`, and with
/// `detect` (BPF LSM available, backend auto) the detection hooks. An
/// enforcing hook that fails is fatal (the operator asked for
/// enforcement); a detection hook that fails is logged and skipped.
/// Returns the labels of the detection hooks attached.
pub fn attach_lsm(
    ebpf: &mut Ebpf,
    metrics: &Metrics,
    enforce: u32,
    detect: bool,
) -> Result<Vec<String>> {
    let btf = if enforce != 0 || detect {
        Some(Btf::from_sys_fs().context("reading kernel BTF")?)
    } else {
        None
    };
    let mut detecting = Vec::new();
    for p in LSM_PROBES {
        let label = format!("lsm/{}", p.hook);
        let enforcing = p.rules & enforce != 0;
        let detects = detect && p.detects.is_some();
        let mut attached = false;
        if let (true, Some(btf)) = (enforcing || detects, btf.as_ref()) {
            let res = (|| -> Result<()> {
                let prog: &mut Lsm = ebpf
                    .program_mut(p.program)
                    .with_context(|| format!("program {} missing from the object", p.program))?
                    .try_into()?;
                if prog.fd().is_err() {
                    prog.load(p.hook, btf)
                        .with_context(|| format!("loading {}", p.program))?;
                }
                prog.attach()
                    .with_context(|| format!("attaching LSM hook {}", p.hook))?;
                Ok(())
            })();
            match res {
                Ok(()) => {
                    attached = true;
                    if detects {
                        detecting.push(label.clone());
                    }
                    tracing::info!(
                        "attached {label}:{}{}",
                        if enforcing {
                            format!(" enforcing {}", rule_names(p.rules & enforce))
                        } else {
                            String::new()
                        },
                        p.detects
                            .filter(|_| detects)
                            .map(|(d, part)| format!(" detecting {d}: {part}"))
                            .unwrap_or_default()
                    );
                }
                Err(e) if enforcing => return Err(e),
                Err(e) => tracing::warn!(
                    "LSM hook {label} not attached, {} is not covered: {e:#}",
                    p.detects.map(|(d, _)| d).unwrap_or_default()
                ),
            }
        }
        metrics
            .probe_attached
            .with_label_values(&[label.as_str(), "lsm"])
            .set(attached as i64);
    }
    Ok(detecting)
}

/// "a, b" for the ENF_* bits in `bits`.
pub fn rule_names(bits: u32) -> String {
    ENF_RULES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
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
];

impl Probe {
    pub fn label(&self) -> String {
        match self.hook {
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Hook::Raw(n) => format!("raw_tp/{n}"),
            Hook::Lsm(n) => format!("lsm/{n}"),
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
            .with_label_values(&[probe.label().as_str(), "tracepoint"])
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

/// Debug log of a program's load: the verifier's processed instructions
/// (`verified_insns`, limit 1,000,000) and the load's wall time, which is
/// mostly the verifier's (see docs/testing.md).
fn log_verified(
    program: &str,
    info: Option<aya::programs::ProgramInfo>,
    start: std::time::Instant,
) {
    let insns = info.and_then(|i| i.verified_instruction_count());
    tracing::debug!(
        "loaded {program}: verified_insns {}, {:.1} s",
        insns.map_or("?".to_string(), |n| n.to_string()),
        start.elapsed().as_secs_f64()
    );
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
                let t = std::time::Instant::now();
                tp.load()
                    .with_context(|| format!("loading {}", probe.program))?;
                log_verified(probe.program, tp.info().ok(), t);
            }
            tp.attach(cat, name)
                .with_context(|| format!("attaching {cat}:{name}"))?;
        }
        Hook::Raw(name) => {
            let tp: &mut RawTracePoint = prog.try_into()?;
            let t = std::time::Instant::now();
            tp.load()
                .with_context(|| format!("loading {}", probe.program))?;
            log_verified(probe.program, tp.info().ok(), t);
            tp.attach(name)
                .with_context(|| format!("attaching raw_tp {name}"))?;
        }
        Hook::Lsm(hook) => bail!("LSM hook {hook} is attached by attach_lsm"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use aya_obj::{Object, ProgramSection};

    use super::*;

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
