//! Pid numbers as the caller's pid namespace sees them. A process in a
//! container names other processes by its own namespace's numbers
//! (`ptrace(PTRACE_ATTACH, 1)`, `process_vm_readv(1, ..)`, prlimit64,
//! perf_event_open), while the maps and records key processes by their
//! number in the root namespace. `host_pid` makes the kernel's own
//! translation (find_vpid): the number is looked up in the caller's
//! namespace's IDR, an xarray walked node by node (`MAX_DEPTH` levels of
//! `xa_slot_mask + 1` slots), and the struct pid found is checked to carry
//! that number in that namespace before its root number is taken.
//!
//! A /proc/<pid> directory carries its struct pid (`proc_inode.pid`),
//! whichever namespace the procfs mount belongs to: `proc_dir_pid`.

use crate::{
    kptr::{InodePtr, PidNsPtr, PidPtr, TaskPtr},
    off,
    vfs::{Ptr, rd, rd_ptr},
};

/// Node levels walked at most: 64-slot nodes cover 36 bits in 6 levels
/// (pid_max is at most 2^22).
const MAX_DEPTH: usize = 6;

/// The root-namespace number of the thread or process the caller names
/// `vnr` in its own pid namespace: `vnr` itself for a caller in the root
/// namespace (or a kernel without the offsets), None when the caller's
/// namespace has no such number.
#[inline(always)]
pub fn host_pid(vnr: u32) -> Option<u32> {
    if off!(pidns_idr_head) == 0 || vnr == 0 {
        return Some(vnr);
    }
    let me = TaskPtr::current().thread_pid()?;
    let level = me.level()?;
    if level == 0 {
        return Some(vnr);
    }
    let (_, ns) = me.upid(level)?;
    let (head, base) = PidNsPtr::from_addr(ns).idr()?;
    let index = (vnr as u64).wrapping_sub(base as u64);
    let mask = off!(xa_slot_mask) as u64;
    let mut entry = head;
    for _ in 0..MAX_DEPTH {
        // An internal entry above 4096 is a node (xa_is_node); anything
        // else ends the walk.
        if entry & 3 != 2 || entry <= 4096 {
            break;
        }
        let node = (entry - 2) as Ptr;
        // SAFETY: reads through bpf_probe_read_kernel, into integers.
        let shift: u8 = unsafe { rd(node, off!(xa_node_shift))? };
        let slot = (index >> (shift & 63)) & mask;
        entry = unsafe { rd(node, off!(xa_node_slots) + (slot as u32) * 8)? };
    }
    // A value or internal entry (a retry, a node too deep) is no pid.
    if entry == 0 || entry & 3 != 0 {
        return None;
    }
    let found = PidPtr::from_addr(entry);
    if found.level()? < level || found.upid(level)? != (vnr as i32, ns) {
        return None;
    }
    found.nr().filter(|n| *n > 0).map(|n| n as u32)
}

/// The root-namespace number of the task a /proc/<pid> (or
/// /proc/<pid>/task/<tid>) directory inode stands for.
#[inline(always)]
pub fn proc_dir_pid(dir: InodePtr) -> Option<u32> {
    let (pid_at, vfs_at) = (off!(proc_inode_pid), off!(proc_inode_vfs));
    if off!(pidns_idr_head) == 0 || pid_at >= vfs_at {
        return None;
    }
    let pi = (dir.addr() - (vfs_at - pid_at) as u64) as Ptr;
    // SAFETY: a read through bpf_probe_read_kernel.
    let pid = unsafe { rd_ptr(pi, 0)? };
    PidPtr::from_addr(pid as u64)
        .nr()
        .filter(|n| *n > 0)
        .map(|n| n as u32)
}
