//! Is a thread id one of the caller's own threads? A process that reads
//! its own memory through a thread id (`process_vm_readv(TID)`, ptrace of
//! a thread) is no cross-process access, and user space cannot tell once
//! the thread is gone. The answer walks the caller's thread list
//! (`signal_struct.thread_head`, each task's `thread_node`, offsets from
//! BTF) with bpf_loop, up to `MAX_THREADS` threads.

use core::ffi::c_void;

use aya_ebpf::helpers::generated;

use crate::{
    kptr::{SignalPtr, TaskPtr},
    vfs::rd,
};

/// Threads walked at most (a group with more is not searched further:
/// the thread id is then resolved in user space, as before).
const MAX_THREADS: u32 = 4096;

/// The walk's state (a bpf_loop callback's context).
#[repr(C)]
struct ThreadWalk {
    /// The list head (`&signal->thread_head`) and the next entry.
    head: u64,
    node: u64,
    tid: u32,
    found: u32,
}

/// bpf_loop callback: is the task at `walk.node` the thread id sought?
/// Returns 1 to stop (found, or back at the head).
#[inline(never)]
unsafe extern "C" fn thread_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is own_thread's `ThreadWalk`; kernel memory is read
    // through bpf_probe_read_kernel only.
    unsafe {
        let w = ctx as *mut ThreadWalk;
        let node = (*w).node;
        if node == 0 || node == (*w).head {
            return 1;
        }
        if TaskPtr::of_thread_node(node).pid() == Some((*w).tid) {
            (*w).found = 1;
            return 1;
        }
        // list_head.next is the node's first member.
        match rd::<u64>(node as *const u8, 0) {
            Some(next) => (*w).node = next,
            None => return 1,
        }
        0
    }
}

/// Whether `tid` names a thread of the current process.
#[inline(always)]
pub fn own_thread(tid: u32) -> bool {
    let Some(signal) = TaskPtr::current().signal() else {
        return false;
    };
    let Some(head) = SignalPtr::from_addr(signal as u64).thread_head() else {
        return false;
    };
    // SAFETY: read through bpf_probe_read_kernel.
    let Some(first) = (unsafe { rd::<u64>(head as *const u8, 0) }) else {
        return false;
    };
    let mut w = ThreadWalk {
        head,
        node: first,
        tid,
        found: 0,
    };
    // SAFETY: `w` outlives the bpf_loop that hands it to thread_step,
    // whose signature is bpf_loop's callback's.
    unsafe {
        generated::bpf_loop(
            MAX_THREADS,
            thread_step as *mut c_void,
            &raw mut w as *mut c_void,
            0,
        );
    }
    w.found != 0
}
