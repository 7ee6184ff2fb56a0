//! Opens that matched no watch or pattern but are still worth a record:
//! write-opens of the core-dump control files and opens of the /proc/<pid>/
//! files (mem, pagemap, environ, and the reconnaissance files of protected
//! processes), both recognised on procfs by superblock magic. A thread id
//! of a protected process (/proc/<tid>/, /proc/<pid>/task/<tid>/) names
//! that process (`PROTECTED_THREADS`). Part of
//! `check_opened` (open.rs), working on its `OPEN_STATE` slot.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::{
    DCFG_CORE_PATTERN, DCFG_CORE_PIPE_LIMIT, DCFG_COREDUMP_FILTER, DCFG_DYNAMIC_EVENTS,
    DCFG_FROM_GUEST, DCFG_KPROBE_EVENTS, DCFG_RELEASE_AGENT, DCFG_SUID_DUMPABLE, DCFG_SYS_POWER,
    DCFG_SYSRQ_TRIGGER, DCFG_UPROBE_EVENTS, INSERT_FAIL_ENVIRON_READS, LRU_ENVIRON_READS, OpenKind,
    PATH_GUEST, POWER_DISK, POWER_RESUME, POWER_RESUME_OFFSET, POWER_STATE, PROC_ENVIRON,
    PROC_MAPS, PROC_MEM, PROC_PAGEMAP, PROC_SMAPS, PROC_STATUS, TAINT_MEMORY, Taint, name_head,
    names::NameKey, short_name,
};

use crate::vfs::{CGROUP_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC, TRACEFS_MAGIC};
use crate::{
    kptr::{DentryPtr, FilePtr, InodePtr, TaskPtr},
    maps::{ENVIRON_READS, check_insert, lru_insert, protected_target},
    probes::{
        dumpcfg::emit_dump_config,
        open::{OpenState, get, put},
    },
    taint::add_taint,
    vfs::dentry_name_key,
};

/// An open that matched no watch or pattern: a write-open of a core-dump
/// control file (reported here) or a /proc/<pid>/ file worth reporting
/// (returns true with `kind` and `rules` set in the state).
#[inline(always)]
pub(super) unsafe fn check_other_file(s: *mut OpenState, name: &NameKey, ret: i64) -> bool {
    // SAFETY: `s` is check_opened's OPEN_STATE slot (the caller's); map
    // values are live while the program runs.
    unsafe {
        let inode = InodePtr::from_addr(get!(s.inode));
        let parent = match get!(s.parent) {
            0 => None,
            p => Some(DentryPtr::from_addr(p)),
        };
        if check_dump_config(name, inode, FilePtr::from_addr(get!(s.file)), parent, ret) {
            return false;
        }
        // /proc/<pid>/{mem,pagemap,environ}, and the reconnaissance
        // files of protected processes.
        let pf = proc_file(name);
        if pf == 0 {
            return false;
        }
        let magic = inode.fs_magic().unwrap_or(0);
        if magic != PROC_SUPER_MAGIC {
            return false;
        }
        // The directory: /proc/<pid>, /proc/<tid> or /proc/<pid>/task/<tid>.
        // A thread of a protected process names that process.
        let named = match parent {
            Some(p) => parse_pid(&dentry_name_key(p)),
            None => 0,
        };
        let t = proc_target(get!(s.parent), named);
        let protected = t >> 32 != 0;
        let pid = t as u32;
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // The process's own files (through any of its thread ids, when
        // the kernel knows them) are no report.
        if pid == tgid {
            return false;
        }
        // mem, pagemap and environ keep the mm they opened (proc_mem_open's
        // file->private_data): the caller's own mm is its own memory, through
        // a thread id user space may no longer resolve.
        if (pf == PROC_MEM || pf == PROC_PAGEMAP || pf == PROC_ENVIRON)
            && let Some(mm) = FilePtr::from_addr(get!(s.file)).private_data()
            && TaskPtr::current()
                .mm()
                .is_some_and(|m| m.addr() == mm as u64)
        {
            return false;
        }
        if pf == PROC_ENVIRON {
            match ENVIRON_READS.get_ptr_mut(tgid) {
                Some(n) => *n += 1,
                None => {
                    check_insert(
                        lru_insert(&ENVIRON_READS, LRU_ENVIRON_READS, &tgid, &1),
                        INSERT_FAIL_ENVIRON_READS,
                    );
                }
            }
        }
        // mem and pagemap of any process; environ (tokens) and the
        // reconnaissance files of protected processes only.
        if (pf == PROC_ENVIRON || pf >= PROC_MAPS) && !protected {
            return false;
        }
        // Reading a protected process's memory taints the reader: what it
        // writes next may be a dump. Its environment is not its memory.
        if (pf == PROC_MEM || pf == PROC_PAGEMAP) && protected {
            add_taint(
                tgid,
                &Taint {
                    flags: TAINT_MEMORY,
                    src_pid: pid,
                    ..Default::default()
                },
            );
        }
        // The process as the kernel resolved it (0: user space resolves
        // the directory's number).
        put!(s.watch_id, if protected { pid } else { 0 });
        put!(s.kind, OpenKind::ProcFileOpen);
        put!(s.rules, pf);
        true
    }
}

/// DCFG_* value of a core-dump control file name, 0 for other names.
#[inline(always)]
fn dump_config_file(name: &NameKey) -> u32 {
    let h = name.head;
    if name.len == 12 && h == name_head(b"core_pattern") {
        DCFG_CORE_PATTERN
    } else if name.len == 15 && h == name_head(b"core_pipe_limit") {
        DCFG_CORE_PIPE_LIMIT
    } else if name.len == 13 && h == name_head(b"suid_dumpable") {
        DCFG_SUID_DUMPABLE
    } else if name.len == 15 && h == name_head(b"coredump_filter") {
        DCFG_COREDUMP_FILTER
    } else if name.len == 13 && h == name_head(b"sysrq-trigger") {
        DCFG_SYSRQ_TRIGGER
    } else if name.len == 13 && h == name_head(b"uprobe_events") {
        DCFG_UPROBE_EVENTS
    } else if name.len == 13 && h == name_head(b"kprobe_events") {
        DCFG_KPROBE_EVENTS
    } else if name.len == 14 && h == name_head(b"dynamic_events") {
        DCFG_DYNAMIC_EVENTS
    } else if name.len == 13 && h == name_head(b"release_agent") {
        DCFG_RELEASE_AGENT
    } else if power_file(name) != 0 {
        DCFG_SYS_POWER
    } else {
        0
    }
}

/// POWER_* of a hibernation control's name in sysfs's power/ directory,
/// 0 for other names.
#[inline(always)]
fn power_file(name: &NameKey) -> u64 {
    let h = name.head;
    if name.len == 5 && h == name_head(b"state") {
        POWER_STATE
    } else if name.len == 4 && h == name_head(b"disk") {
        POWER_DISK
    } else if name.len == 6 && h == name_head(b"resume") {
        POWER_RESUME
    } else if name.len == 13 && h == name_head(b"resume_offset") {
        POWER_RESUME_OFFSET
    } else {
        0
    }
}

/// A write-open of /proc/sys/kernel/core_pattern, core_pipe_limit,
/// /proc/sys/fs/suid_dumpable or /proc/<pid>/coredump_filter, or of
/// /proc/sysrq-trigger or tracefs's uprobe_events, kprobe_events and
/// dynamic_events (kernel-reader's). Returns true when the open was one
/// (reported or not).
#[inline(always)]
fn check_dump_config(
    name: &NameKey,
    inode: InodePtr,
    file: FilePtr,
    parent: Option<DentryPtr>,
    ret: i64,
) -> bool {
    let what = dump_config_file(name);
    if what == 0 {
        return false;
    }
    let magic = inode.fs_magic().unwrap_or(0);
    let want = if what == DCFG_SYS_POWER {
        SYSFS_MAGIC
    } else if what == DCFG_RELEASE_AGENT {
        CGROUP_SUPER_MAGIC
    } else if what >= DCFG_UPROBE_EVENTS {
        TRACEFS_MAGIC
    } else {
        PROC_SUPER_MAGIC
    };
    if magic != want {
        return false;
    }
    let flags = file.flags().unwrap_or(0);
    if flags & 3 == 0 {
        return true;
    }
    // sysfs's power/ directory (/sys/power): its hibernation controls.
    if what == DCFG_SYS_POWER {
        let in_power = parent.is_some_and(|p| {
            let n = dentry_name_key(p);
            n.len == 5 && n.head == name_head(b"power")
        });
        if in_power {
            emit_dump_config(what, 0, power_file(name), ret);
        }
        return in_power;
    }
    let target = if what == DCFG_COREDUMP_FILTER {
        match parent {
            Some(p) => proc_target(p.addr(), parse_pid(&dentry_name_key(p))) as u32,
            None => 0,
        }
    } else {
        0
    };
    // The host's core-dump sysctls written from a container.
    let value = if what <= DCFG_SUID_DUMPABLE
        && crate::probes::open::ns_flags(file.addr()) & PATH_GUEST != 0
    {
        DCFG_FROM_GUEST
    } else {
        0
    };
    emit_dump_config(what, target, value, ret);
    true
}

/// The process the /proc/<pid>/ (or <tid>/) directory `dentry`, named
/// `named`, stands for, packed as `protected << 32 | pid`: its host pid (a
/// thread of a protected process names that process), 0 when the name is
/// no number. The directory's own struct pid gives the host pid whichever
/// pid namespace the procfs mount shows (a container's /proc numbers its
/// own processes from 1). A BPF function of its own: inlined into the open
/// programs, LLVM reloaded the target from a stack slot on a path that
/// never stored it, which the 6.1 verifier refuses.
#[inline(never)]
fn proc_target(dentry: u64, named: u32) -> u64 {
    if named == 0 {
        return 0;
    }
    let host = DentryPtr::from_addr(dentry)
        .inode()
        .and_then(crate::pidns::proc_dir_pid)
        .unwrap_or(named);
    match protected_target(host) {
        Some(tgid) => (1 << 32) | tgid as u64,
        None => host as u64,
    }
}

/// Is `name` one `check_other_file` looks at (a /proc/<pid>/ file or a
/// dump control file)? Its verdict then depends on more than the file
/// (the target's protection, the opener), and is never cached.
#[inline(always)]
pub(super) fn of_interest(name: &NameKey) -> bool {
    proc_file(name) != 0 || dump_config_file(name) != 0
}

/// PROC_* value of a /proc/<pid>/ file name, 0 for other names.
#[inline(always)]
fn proc_file(name: &NameKey) -> u32 {
    if name.len > 8 {
        return 0;
    }
    let w = name.head[0];
    if w == short_name(b"mem") {
        PROC_MEM
    } else if w == short_name(b"pagemap") {
        PROC_PAGEMAP
    } else if w == short_name(b"environ") {
        PROC_ENVIRON
    } else if w == short_name(b"maps") {
        PROC_MAPS
    } else if w == short_name(b"smaps") {
        PROC_SMAPS
    } else if w == short_name(b"status") {
        PROC_STATUS
    } else {
        0
    }
}

/// The number a /proc directory is named after (0 if not all digits).
#[inline(always)]
fn parse_pid(name: &NameKey) -> u32 {
    if name.len == 0 || name.len > 10 {
        return 0;
    }
    let mut n = 0u32;
    let mut i = 0u32;
    while i < 10 {
        if i >= name.len {
            break;
        }
        let b = ((name.head[(i / 8) as usize] >> (8 * (i % 8))) & 0xff) as u8;
        if !b.is_ascii_digit() {
            return 0;
        }
        n = n.wrapping_mul(10).wrapping_add((b - b'0') as u32);
        i += 1;
    }
    n
}
