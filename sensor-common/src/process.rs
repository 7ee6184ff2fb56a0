//! Process lifecycle records (exec, fork, exit, rename) and the comm key
//! of the protected-comm map.

use crate::{CMDLINE_BUF, COMM_LEN, Header, KPath, header::record};

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
    /// (dev, inode) of mm->exe_file (kernel dev encoding): the identity
    /// allowlists compare, never the path string. Last, with the flags:
    /// records written before them decode without them
    /// (`EXEC_RECORD_WITHOUT_IDENTITY`).
    pub exe_ino: u64,
    pub exe_dev: u32,
    /// EXEC_* bits: what the loader was told at exec.
    pub exec_flags: u32,
}

/// Size of an exec record written before it carried the executable's
/// identity (a recording's).
pub const EXEC_RECORD_WITHOUT_IDENTITY: usize = core::mem::offset_of!(ExecEvent, exe_ino);
const _: () = assert!(core::mem::size_of::<ExecEvent>().is_multiple_of(8));
record!(ExecEvent: Exec, Lifecycle);
// SAFETY: `exe` is its KPath.
unsafe impl crate::Compact for ExecEvent {
    const COMPACTION: crate::Compaction =
        crate::Compaction::of::<ExecEvent>(core::mem::offset_of!(ExecEvent, exe));
}

/// The process was being traced when it exec'd (PTRACE_TRACEME, or a
/// tracer attached before the exec).
pub const EXEC_PTRACED: u32 = 1;
/// LD_PRELOAD, LD_AUDIT or LD_LIBRARY_PATH was in the new environment.
pub const EXEC_LD_ENV: u32 = 2;
/// The environment was too large to check completely (treated as if it
/// had one of those variables: the allowance fails closed).
pub const EXEC_ENV_UNCHECKED: u32 = 4;
/// The executable is allowlisted (`[[allow]]`): its allowance is
/// withdrawn by the bits above.
pub const EXEC_ALLOWLISTED: u32 = 8;
/// LD_PRELOAD was in the new environment.
pub const EXEC_LD_PRELOAD: u32 = 16;
/// LD_AUDIT was in the new environment.
pub const EXEC_LD_AUDIT: u32 = 32;
/// The process is protected from its exec (`[[protected]]` exe or comm):
/// its environment and tracer were checked as an allowlisted one's are.
pub const EXEC_PROTECTED: u32 = 64;
/// The process's mount namespace is not the host's (a container): its
/// environment and tracer were checked as an allowlisted one's are, for
/// an `[[allow]]` with a container selector, which user space decides.
pub const EXEC_GUEST: u32 = 128;
/// Set by the decoder (never by the kernel) on a record written before
/// exec records carried the executable's identity: its path is taken as
/// it was then.
pub const EXEC_NO_IDENTITY: u32 = 1 << 31;

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ForkEvent {
    /// The header describes the parent.
    pub hdr: Header,
    pub child_pid: u32,
    pub _pad: u32,
    pub child_start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 72);
record!(ForkEvent: Fork, Lifecycle);

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
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 64);
record!(ExitEvent: Exit, Lifecycle);

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
const _: () = assert!(core::mem::size_of::<RenameEvent>() == 72);
record!(RenameEvent: Rename, Lifecycle);

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
