//! Reading memory from the kernel side: loads of BPF tracing programs,
//! kernel modules and kexec images, and perf sampling of other processes'
//! user stacks, registers or raw data. One program on the exit
//! tracepoints of bpf, init_module, finit_module, kexec_load,
//! kexec_file_load and perf_event_open, dispatched on the syscall number;
//! arguments from the task's saved user registers, so a failed attempt is
//! reported with its error too. User space decides (rule `kernel-reader`).

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use sensor_common::{
    BPF_TRACING_PROG_TYPES, KR_BPF_PROG_LOAD, KR_FINIT_MODULE, KR_INIT_MODULE, KR_KEXEC_FILE_LOAD,
    KR_KEXEC_LOAD, KR_PERF_EVENT, KernelReaderEvent, PERF_SAMPLE_USER_DATA, name_head,
    x86_64::{
        NR_BPF, NR_FINIT_MODULE, NR_INIT_MODULE, NR_KEXEC_FILE_LOAD, NR_KEXEC_LOAD,
        NR_PERF_EVENT_OPEN,
    },
};

use crate::{
    emit::emit,
    kptr::FilePtr,
    maps::{acting_tgid, protected_target},
    syscall::{arg4, arg5, args3, sys_ret, tp_nr},
    vfs::fd_file,
};

const BPF_PROG_LOAD: u64 = 5;
/// perf_event_open's flag: `pid` is a cgroup descriptor.
const PERF_FLAG_PID_CGROUP: u64 = 1 << 2;

/// What to report, filled per syscall. Scalars only: an aggregate
/// copied or zeroed whole becomes a memset/memcpy call, a global function
/// 6.1's verifier refuses pointers into the stack or the ring for.
struct Report {
    what: u32,
    arg: u64,
    /// The file loaded (finit_module, kexec_file_load).
    file: Option<FilePtr>,
    detail: u32,
    detail2: u32,
    target: i32,
    target_tgid: u32,
    verified: u32,
    /// bpf: prog_name, as two words.
    name: [u64; 2],
}

impl Report {
    #[inline(always)]
    fn new(what: u32) -> Self {
        Report {
            what,
            arg: 0,
            file: None,
            detail: 0,
            detail2: 0,
            target: 0,
            target_tgid: 0,
            verified: 0,
            name: [0, 0],
        }
    }
}

/// A user-memory read of a `T` at `addr + off` (0 when it faults).
#[inline(always)]
fn user_at<T: Default>(addr: u64, off: u64) -> T {
    if addr == 0 {
        return T::default();
    }
    // SAFETY: bpf_probe_read_user checks the address.
    unsafe { bpf_probe_read_user((addr + off) as *const T) }.unwrap_or_default()
}

/// The file a successful syscall returned as fd `ret`, when it is still
/// the anonymous-inode file named `name` (`len` bytes) it made.
#[inline(always)]
fn new_file(ret: i64, len: u32, name: [u64; 2]) -> Option<FilePtr> {
    if ret < 0 {
        return None;
    }
    fd_file(ret as u64).filter(|f| f.named(len, name))
}

// syscalls:sys_exit_{bpf,init_module,finit_module,kexec_load,
// kexec_file_load,perf_event_open}.
#[tracepoint]
pub fn ks_exit_kreader(ctx: TracePointContext) -> u32 {
    if acting_tgid().is_none() {
        return 0;
    }
    let Some((a1, a2, _a3)) = args3() else {
        return 0;
    };
    let r = match tp_nr(&ctx) {
        NR_BPF => {
            // bpf(cmd, union bpf_attr *attr, size): prog_type at 0,
            // prog_name at 48, expected_attach_type at 68.
            if a1 != BPF_PROG_LOAD {
                return 0;
            }
            // A loaded program's type as the kernel holds it: another
            // thread can rewrite the caller's attr once the kernel copied
            // it. A refused load: what the caller asked for.
            let ret = sys_ret(&ctx);
            let loaded = new_file(ret, 8, name_head(b"bpf-prog"));
            let kernel_type = loaded.and_then(|f| f.bpf_prog_type());
            let prog_type = match kernel_type {
                Some(t) => t,
                None => user_at(a2, 0),
            };
            // The new fd no longer names the program (another thread
            // closed it and opened something else): reported whatever
            // the attr says now.
            let replaced = ret >= 0 && loaded.is_none();
            if !replaced && !BPF_TRACING_PROG_TYPES.contains(&prog_type) {
                return 0;
            }
            let mut r = Report::new(KR_BPF_PROG_LOAD);
            r.verified = kernel_type.is_some() as u32;
            r.detail = prog_type;
            r.detail2 = user_at(a2, 68);
            r.name = [user_at(a2, 48), user_at(a2, 56)];
            r
        }
        NR_INIT_MODULE => Report::new(KR_INIT_MODULE),
        NR_FINIT_MODULE => {
            // finit_module(fd, uargs, flags)
            let mut r = Report::new(KR_FINIT_MODULE);
            r.file = fd_file(a1);
            r.detail2 = a1 as u32;
            r.arg = args3().map(|a| a.2).unwrap_or(0);
            r
        }
        NR_KEXEC_LOAD => {
            // kexec_load(entry, nr_segments, segments, flags)
            let mut r = Report::new(KR_KEXEC_LOAD);
            r.arg = arg4().unwrap_or(0);
            r
        }
        NR_KEXEC_FILE_LOAD => {
            // kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)
            let mut r = Report::new(KR_KEXEC_FILE_LOAD);
            r.file = fd_file(a1);
            r.detail2 = a1 as u32;
            r.arg = arg5().unwrap_or(0);
            r
        }
        NR_PERF_EVENT_OPEN => {
            // perf_event_open(attr, pid, cpu, group_fd, flags): type at 0,
            // config at 8, sample_type at 24 (uapi offsets). An event the
            // kernel made: its own copy of the attr (see NR_BPF).
            let ret = sys_ret(&ctx);
            let made = new_file(ret, 12, name_head(b"[perf_event]"));
            let kernel_attr = made.and_then(|f| f.perf_attr::<u64>(24));
            let (kind, config, sample_type) = match (made, kernel_attr) {
                (Some(f), Some(st)) => (
                    f.perf_attr::<u32>(0).unwrap_or(0),
                    f.perf_attr::<u64>(8).unwrap_or(0),
                    st,
                ),
                _ => (
                    user_at::<u32>(a1, 0),
                    user_at::<u64>(a1, 8),
                    user_at::<u64>(a1, 24),
                ),
            };
            let replaced = ret >= 0 && made.is_none();
            if !replaced && sample_type & PERF_SAMPLE_USER_DATA == 0 {
                return 0;
            }
            let pid = a2 as i32;
            let flags = arg5().unwrap_or(0);
            let mut r = Report::new(KR_PERF_EVENT);
            if flags & PERF_FLAG_PID_CGROUP != 0 {
                // Every process of a cgroup.
                r.target = -2;
            } else if pid == -1 {
                r.target = -1;
            } else {
                // One process: reported when it is protected.
                // Named in the caller's pid namespace.
                let Some(host) = crate::pidns::host_pid(pid as u32) else {
                    return 0;
                };
                let Some(t) = protected_target(host) else {
                    return 0;
                };
                r.target = host as i32;
                r.target_tgid = t;
            }
            r.verified = kernel_attr.is_some() as u32;
            r.arg = sample_type;
            r.detail = kind;
            r.detail2 = config as u32;
            r
        }
        _ => return 0,
    };
    let Some(rec) = emit::<KernelReaderEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; every field is written.
    unsafe {
        (*ev).ret = sys_ret(&ctx);
        (*ev).arg = r.arg;
        // Volatile: plain zero stores into the ring record are merged into
        // a memset call, which 6.1's verifier refuses a ring pointer for.
        let (dev, ino) = match r.file.and_then(|f| f.identity()) {
            Some((k, _)) => (k.dev, k.ino),
            None => (0, 0),
        };
        core::ptr::write_volatile(&raw mut (*ev).file.dev, dev);
        core::ptr::write_volatile(&raw mut (*ev).file._pad, 0);
        core::ptr::write_volatile(&raw mut (*ev).file.ino, ino);
        match r.file {
            Some(f) => f.read_path(&raw mut (*ev).path),
            None => {
                (*ev).path.len = 0;
                (*ev).path.flags = 0;
            }
        }
        (*ev).what = r.what;
        (*ev).detail = r.detail;
        (*ev).detail2 = r.detail2;
        (*ev).target = r.target;
        (*ev).target_tgid = r.target_tgid;
        (*ev).verified = r.verified;
        let name = (&raw mut (*ev).name) as *mut [u64; 2];
        core::ptr::write_unaligned(name, r.name);
    }
    rec.submit();
    0
}
