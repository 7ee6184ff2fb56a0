//! BPF LSM: whether the running kernel allows it (`probe_lsm`), which
//! enforce bits can really be enforced, and the attachment of the LSM hooks
//! of `probes::LSM_PROBES` (detection wherever BPF LSM works, enforcement
//! for rules in enforce mode).

use anyhow::{Context, Result};
use aya::{Btf, Ebpf, programs::Lsm};
use sensor_common::ENF_RULES;

use super::probes::LSM_PROBES;
use crate::metrics::Metrics;

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
