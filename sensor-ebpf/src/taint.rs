//! Taint: which processes carry tracked material, and how it moves.
//! A process is tainted when it reads a key, a dump or a derived copy
//! (`probes/open.rs`), a protected process's memory (`probes/memory.rs`,
//! `probes/lsm_detect.rs`), or a pipe a tainted process wrote (here); its
//! children inherit it (`probes/process.rs`), exec ends it unless a tainted
//! descriptor survives. Each hop adds one to the generation, up to
//! `[flow] max_generations`. The probes that report what tainted
//! processes write and send are `probes/flow.rs`.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use sensor_common::{STOP_GENERATION, STOP_MAP_FULL, TAINT_FILE, TAINT_PIPE, Taint};

use crate::{
    maps::{PIPE_TAINT_TS, TAINTED, TAINTED_PIPES, count_stop},
    setting,
    vfs::fd_file,
};

/// How long after the last pipe taint reads still look pipes up.
const PIPE_TAINT_WINDOW_NS: u64 = 300 * 1_000_000_000;

/// Adds `t` to the taint of `tgid`. The first source of each kind stays,
/// except that a file the process opens itself (flags exactly
/// `TAINT_FILE`; a pipe's taint carries `TAINT_PIPE`) replaces an
/// earlier file source: a copy tool's next writes come from what it read
/// last, not from what a parent's pipe once carried. The generation is the
/// replacing source's, else the nearest (smallest) of the two.
#[inline(always)]
pub fn add_taint(tgid: u32, t: &Taint) {
    match TAINTED.get_ptr_mut(tgid) {
        // SAFETY: a live map value (another CPU may update the same entry
        // at once: at worst a mixed taint).
        Some(cur) => unsafe {
            (*cur).flags |= t.flags;
            if (*cur).src_pid == 0 {
                (*cur).src_pid = t.src_pid;
            }
            if t.src_ino != 0 && ((*cur).src_ino == 0 || t.flags == TAINT_FILE) {
                (*cur).src_dev = t.src_dev;
                (*cur).src_ino = t.src_ino;
                (*cur).src_igen = t.src_igen;
                (*cur).generation = t.generation;
            } else if t.generation < (*cur).generation {
                (*cur).generation = t.generation;
            }
            if (*cur).via_pid == 0 {
                (*cur).via_pid = t.via_pid;
            }
        },
        None => {
            if TAINTED.insert(tgid, t, 0).is_err() {
                count_stop(STOP_MAP_FULL);
            }
        }
    }
}

/// The generation one hop after `g` (a file written, a pipe read, a
/// child), or None past `[flow] max_generations` (counted).
#[inline(always)]
pub fn next_gen(g: u32) -> Option<u32> {
    let next = g + 1;
    if next > setting!(max_generations) {
        count_stop(STOP_GENERATION);
        return None;
    }
    Some(next)
}

/// Was a pipe tainted recently? Reads look pipes up only then.
#[inline(always)]
pub fn pipe_gate(tgid: u32) -> bool {
    let Some(ts) = PIPE_TAINT_TS.get(0) else {
        return false;
    };
    let ts = *ts;
    ts != 0
        && unsafe { bpf_ktime_get_boot_ns() }.wrapping_sub(ts) <= PIPE_TAINT_WINDOW_NS
        && unsafe { TAINTED.get(tgid) }.is_none()
}

/// A read from `fd`: taints the reader when `fd` is a pipe a tainted
/// process wrote (callers check `pipe_gate` first).
#[inline(always)]
pub fn pipe_read(tgid: u32, fd: u64) {
    let Some(file) = fd_file(fd) else { return };
    let Some(inode) = file.inode() else {
        return;
    };
    // SAFETY: the map value is copied out.
    if let Some(t) = unsafe { TAINTED_PIPES.get(inode.addr()) }
        && t.flags != 0
    {
        let mut t = *t;
        t.flags |= TAINT_PIPE;
        add_taint(tgid, &t);
    }
}
