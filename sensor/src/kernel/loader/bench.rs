//! Bench only (`--bench-dispatcher`, with `--bench-empty-programs`): one
//! tp_btf dispatcher on `raw_syscalls:sys_exit` in place of every
//! `syscalls:sys_exit_*` tracepoint, so `cargo xtask bench` can weigh the
//! two designs' floors (sensor-ebpf/src/probes/bench.rs). x86_64 only.

use anyhow::{Context, Result, bail};
use aya::{
    Btf, Ebpf,
    maps::{Array, ProgramArray},
    programs::BtfTracePoint,
};

use super::probes::{Hook, PROBES};

/// The programs of the dispatcher (none is in `PROBES`).
pub const BENCH_PROGRAMS: &[&str] = &["ks_bench_sys_exit", "ks_bench_exit_handler"];

/// Whether `hook` is one the dispatcher replaces.
pub fn replaced(hook: &Hook) -> bool {
    matches!(hook, Hook::Tracepoint("syscalls", n) if n.starts_with("sys_exit_"))
}

/// The syscalls the `syscalls:sys_exit_*` tracepoints of `PROBES` hook.
#[cfg(target_arch = "x86_64")]
fn hooked_syscalls() -> Result<Vec<i64>> {
    let mut nrs = Vec::new();
    for p in PROBES {
        let Hook::Tracepoint("syscalls", tp) = p.hook else {
            continue;
        };
        let Some(name) = tp.strip_prefix("sys_exit_") else {
            continue;
        };
        let nr = match name {
            "openat" => libc::SYS_openat,
            "open" => libc::SYS_open,
            "openat2" => libc::SYS_openat2,
            "creat" => libc::SYS_creat,
            "open_by_handle_at" => libc::SYS_open_by_handle_at,
            "ptrace" => libc::SYS_ptrace,
            "process_vm_readv" => libc::SYS_process_vm_readv,
            "process_vm_writev" => libc::SYS_process_vm_writev,
            "pidfd_getfd" => libc::SYS_pidfd_getfd,
            "prctl" => libc::SYS_prctl,
            "setrlimit" => libc::SYS_setrlimit,
            "prlimit64" => libc::SYS_prlimit64,
            "read" => libc::SYS_read,
            "readv" => libc::SYS_readv,
            "write" => libc::SYS_write,
            "pwrite64" => libc::SYS_pwrite64,
            "writev" => libc::SYS_writev,
            "pwritev" => libc::SYS_pwritev,
            "pwritev2" => libc::SYS_pwritev2,
            "sendto" => libc::SYS_sendto,
            "sendmsg" => libc::SYS_sendmsg,
            "sendmmsg" => libc::SYS_sendmmsg,
            "sendfile64" => libc::SYS_sendfile,
            "copy_file_range" => libc::SYS_copy_file_range,
            "splice" => libc::SYS_splice,
            "vmsplice" => libc::SYS_vmsplice,
            "tee" => libc::SYS_tee,
            "ioctl" => libc::SYS_ioctl,
            "mmap" => libc::SYS_mmap,
            "rename" => libc::SYS_rename,
            "renameat" => libc::SYS_renameat,
            "renameat2" => libc::SYS_renameat2,
            "link" => libc::SYS_link,
            "linkat" => libc::SYS_linkat,
            "unlink" => libc::SYS_unlink,
            "unlinkat" => libc::SYS_unlinkat,
            "symlink" => libc::SYS_symlink,
            "symlinkat" => libc::SYS_symlinkat,
            "bpf" => libc::SYS_bpf,
            "init_module" => libc::SYS_init_module,
            "finit_module" => libc::SYS_finit_module,
            "kexec_load" => libc::SYS_kexec_load,
            "kexec_file_load" => libc::SYS_kexec_file_load,
            "perf_event_open" => libc::SYS_perf_event_open,
            "bind" => libc::SYS_bind,
            "swapon" => libc::SYS_swapon,
            "connect" => libc::SYS_connect,
            "keyctl" => libc::SYS_keyctl,
            other => bail!("no syscall number known for tracepoint syscalls:{other}"),
        };
        nrs.push(nr);
    }
    Ok(nrs)
}

#[cfg(not(target_arch = "x86_64"))]
fn hooked_syscalls() -> Result<Vec<i64>> {
    bail!("--bench-dispatcher is x86_64 only")
}

/// Loads and attaches the dispatcher, routing every hooked syscall to its
/// handler.
pub fn attach_dispatcher(ebpf: &mut Ebpf) -> Result<()> {
    let nrs = hooked_syscalls()?;
    let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
    for name in ["ks_bench_exit_handler", "ks_bench_sys_exit"] {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        p.load("sys_exit", &btf)
            .with_context(|| format!("loading {name}"))?;
    }
    let mut route: Array<_, u32> =
        Array::try_from(ebpf.map_mut("BENCH_ROUTE").context("BENCH_ROUTE")?)?;
    for nr in nrs {
        route.set(nr as u32, 1, 0)?;
    }
    let fd = ebpf
        .program("ks_bench_exit_handler")
        .context("ks_bench_exit_handler")?
        .fd()?
        .try_clone()?;
    // Borrowed: the array stays the object's (closing its last fd would
    // empty it).
    let mut progs = ProgramArray::try_from(
        ebpf.map_mut("BENCH_EXIT_PROGS")
            .context("BENCH_EXIT_PROGS")?,
    )?;
    progs.set(0, &fd, 0)?;
    let p: &mut BtfTracePoint = ebpf
        .program_mut("ks_bench_sys_exit")
        .context("ks_bench_sys_exit")?
        .try_into()?;
    p.attach().context("attaching ks_bench_sys_exit")?;
    Ok(())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    /// Every syscall exit tracepoint of the registry has its number here,
    /// or `--bench-dispatcher` refuses to start (as it did when the
    /// kernel-reader probes came without theirs).
    #[test]
    fn every_hooked_syscall_has_a_number() {
        let nrs = super::hooked_syscalls().unwrap();
        assert!(nrs.len() > 30, "{nrs:?}");
    }
}
