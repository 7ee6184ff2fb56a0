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
//!
//! Here: loading the object and attaching the tracepoints. `probes` holds
//! the registry tables (`PROBES`, `LSM_PROBES`), `lsm` the BPF LSM probing
//! and the LSM hooks' attachment.

pub mod bench;
pub mod lsm;
pub mod probes;

use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSysctl, RawTracePoint, TracePoint},
};
use sensor_common::{KernelOffsets, SensorSettings};

use self::probes::{Hook, PROBES, Probe};
use crate::{kernel::tracefs, metrics::Metrics};

/// The kernel programs, built by `cargo xtask build-ebpf`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(env!("KEYSENTRY_EBPF_OBJ"));

/// Default size of the bulk lane's ring buffer (`--ring-buffer-bytes`).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
/// Size of the critical lane's ring buffer.
pub const CRITICAL_RING_BYTES: u32 = 2 << 20;
/// Size of the lifecycle lane's ring buffer.
pub const LIFECYCLE_RING_BYTES: u32 = 2 << 20;

/// Loads the object with the kernel's offsets and the settings as globals,
/// the bulk lane's ring buffer sized `ring_bytes` (a power of two, at least
/// a page) and the critical and lifecycle rings at their fixed sizes.
/// `sizes` (tests only) resizes maps by name: a name the object does not
/// have is an error.
pub fn load(
    offsets: &KernelOffsets,
    settings: &SensorSettings,
    ring_bytes: u32,
    sizes: &[(String, u32)],
) -> Result<Ebpf> {
    if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
        bail!("ring buffer size {ring_bytes} must be a power of two of at least 4096 bytes");
    }
    let mut loader = EbpfLoader::new();
    for (name, n) in sizes {
        loader.map_max_entries(name, (*n).max(1));
    }
    let ebpf = loader
        .override_global("OFFSETS", offsets, true)
        .override_global("SETTINGS", settings, true)
        .map_max_entries("RB_CRITICAL", CRITICAL_RING_BYTES)
        .map_max_entries("RB_LIFECYCLE", LIFECYCLE_RING_BYTES)
        .map_max_entries("RB_BULK", ring_bytes)
        .load(EBPF_OBJ)
        .context("loading the kernel programs")?;
    if let Some((name, _)) = sizes.iter().find(|(n, _)| ebpf.map(n).is_none()) {
        bail!("--map-entries: the kernel programs have no map {name}");
    }
    Ok(ebpf)
}

/// Attaches every probe; fails only when a required one cannot attach.
/// `skip` lists programs not to attach (e.g. io_uring without its offsets);
/// `other_kernel` programs whose hook another kernel version names (the
/// name this one uses has its own entry), left out without a warning.
pub fn attach_all(
    ebpf: &mut Ebpf,
    metrics: &Metrics,
    skip: &[&str],
    other_kernel: &[&str],
) -> Result<Vec<(Probe, Result<(), String>)>> {
    let mut report = Vec::new();
    for probe in PROBES {
        if other_kernel.contains(&probe.program) {
            continue;
        }
        let res = if skip.contains(&probe.program) {
            Err("the kernel lacks what it needs (see log)".to_string())
        } else {
            attach(ebpf, probe).map_err(|e| format!("{e:#}"))
        };
        metrics
            .probe_attached
            .with_label_values(&[probe.label().as_str(), probe.backend()])
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
        Hook::CgroupSysctl => {
            let Some(dir) = probes::cgroup2_root() else {
                bail!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
            };
            let prog: &mut CgroupSysctl = prog.try_into()?;
            // The cgroup v2 root: a directory only root can replace, opened
            // without following a symlink.
            let cgroup = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(dir)
                .with_context(|| format!("opening the cgroup {dir}"))?;
            let t = std::time::Instant::now();
            prog.load()
                .with_context(|| format!("loading {}", probe.program))?;
            log_verified(probe.program, prog.info().ok(), t);
            // A bpf_link (5.7+) takes no attach flags and never replaces
            // another program: `Single` passes none.
            prog.attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching to the cgroup {dir}"))?;
        }
        Hook::Lsm(hook) => bail!("LSM hook {hook} is attached by attach_lsm"),
    }
    Ok(())
}
