//! keysentry's one architecture: x86_64. What depends on it:
//! - the syscall numbers below (the kernel programs dispatch on them);
//! - the registers that hold a syscall's arguments and number in the
//!   task's saved `pt_regs` (`di`, `si`, `dx`, `r10`, `r8`, `orig_ax`): read
//!   in `sensor-ebpf/src/syscall.rs` only, at the offsets user space
//!   resolves from the running kernel's BTF (`KernelOffsets::pt_regs_*`);
//! - the x86-only ptrace requests below.
//!
//! The user-space agent runs on the kernel it watches, so building it for
//! another architecture stops here. (The kernel programs are built for the
//! `bpf` target, which says nothing of the kernel's architecture.)

#[cfg(not(any(target_arch = "x86_64", target_arch = "bpf")))]
compile_error!(
    "keysentry supports x86_64 kernels only: syscall numbers and pt_regs registers are x86_64's \
     (sensor-common/src/x86_64.rs)"
);

// Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl), as the kernel
// passes them: `int __syscall_nr` of the syscall tracepoints, `orig_ax`.
pub const NR_WRITE: i32 = 1;
pub const NR_OPEN: i32 = 2;
pub const NR_CLOSE: i32 = 3;
pub const NR_MMAP: i32 = 9;
pub const NR_IOCTL: i32 = 16;
pub const NR_PWRITE64: i32 = 18;
pub const NR_WRITEV: i32 = 20;
pub const NR_DUP2: i32 = 33;
pub const NR_SENDFILE: i32 = 40;
pub const NR_SENDTO: i32 = 44;
pub const NR_SENDMSG: i32 = 46;
pub const NR_EXECVE: i32 = 59;
pub const NR_RENAME: i32 = 82;
pub const NR_CREAT: i32 = 85;
pub const NR_LINK: i32 = 86;
pub const NR_UNLINK: i32 = 87;
pub const NR_SYMLINK: i32 = 88;
pub const NR_PTRACE: i32 = 101;
pub const NR_OPENAT: i32 = 257;
pub const NR_UNLINKAT: i32 = 263;
pub const NR_RENAMEAT: i32 = 264;
pub const NR_LINKAT: i32 = 265;
pub const NR_SYMLINKAT: i32 = 266;
pub const NR_SPLICE: i32 = 275;
pub const NR_TEE: i32 = 276;
pub const NR_VMSPLICE: i32 = 278;
pub const NR_DUP3: i32 = 292;
pub const NR_PWRITEV: i32 = 296;
pub const NR_OPEN_BY_HANDLE_AT: i32 = 304;
pub const NR_SENDMMSG: i32 = 307;
pub const NR_PROCESS_VM_READV: i32 = 310;
pub const NR_PROCESS_VM_WRITEV: i32 = 311;
pub const NR_RENAMEAT2: i32 = 316;
pub const NR_EXECVEAT: i32 = 322;
pub const NR_COPY_FILE_RANGE: i32 = 326;
pub const NR_PWRITEV2: i32 = 328;
pub const NR_IO_URING_ENTER: i32 = 426;
pub const NR_CLOSE_RANGE: i32 = 436;
pub const NR_OPENAT2: i32 = 437;
pub const NR_PIDFD_GETFD: i32 = 438;
pub const NR_PERF_EVENT_OPEN: i32 = 298;
pub const NR_INIT_MODULE: i32 = 175;
pub const NR_FINIT_MODULE: i32 = 313;
pub const NR_KEXEC_LOAD: i32 = 246;
pub const NR_KEXEC_FILE_LOAD: i32 = 320;
pub const NR_BPF: i32 = 321;
pub const NR_CONNECT: i32 = 42;
pub const NR_BIND: i32 = 49;
pub const NR_SWAPON: i32 = 167;
pub const NR_KEYCTL: i32 = 250;

/// Names of the syscalls user space reports (an LSM denial's syscall, the
/// syscall behind a kernel ptrace access check), by number.
pub const SYSCALL_NAMES: &[(i32, &str)] = &[
    (0, "read"),
    (NR_OPEN, "open"),
    (17, "pread64"),
    (19, "readv"),
    (62, "kill"),
    (NR_CREAT, "creat"),
    (89, "readlink"),
    (NR_PTRACE, "ptrace"),
    (129, "rt_sigqueueinfo"),
    (200, "tkill"),
    (234, "tgkill"),
    (256, "migrate_pages"),
    (NR_OPENAT, "openat"),
    (267, "readlinkat"),
    (274, "get_robust_list"),
    (279, "move_pages"),
    (297, "rt_tgsigqueueinfo"),
    (298, "perf_event_open"),
    (NR_PROCESS_VM_READV, "process_vm_readv"),
    (NR_PROCESS_VM_WRITEV, "process_vm_writev"),
    (312, "kcmp"),
    (424, "pidfd_send_signal"),
    (NR_IO_URING_ENTER, "io_uring_enter"),
    (NR_OPENAT2, "openat2"),
    (NR_PIDFD_GETFD, "pidfd_getfd"),
    (440, "process_madvise"),
    (448, "process_mrelease"),
];

/// The name of syscall `nr`, when keysentry reports it.
pub fn syscall_name(nr: i32) -> Option<&'static str> {
    SYSCALL_NAMES
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| *s)
}

// ptrace requests of x86 only (the register sets; the generic PEEK/POKE,
// ATTACH, SEIZE and *REGSET requests are the same everywhere).
pub const PTRACE_GETREGS: u64 = 12;
pub const PTRACE_SETFPREGS: u64 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_names_are_one_per_number() {
        for (i, (n, name)) in SYSCALL_NAMES.iter().enumerate() {
            for (m, other) in &SYSCALL_NAMES[i + 1..] {
                assert!(n != m && name != other, "{n} {name} / {m} {other}");
            }
        }
        assert_eq!(syscall_name(NR_OPENAT2), Some("openat2"));
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(-1), None);
    }
}
