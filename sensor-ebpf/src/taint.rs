//! Taint: which processes carry tracked material, and how it moves.
//! A process is tainted when it reads a key, a dump or a derived copy
//! (`probes/open.rs`), a protected process's memory (`probes/memory.rs`,
//! `probes/lsm_detect.rs`), or a pipe a tainted process wrote (here); its
//! children inherit it (`probes/process.rs`), exec ends it unless a tainted
//! descriptor survives. Each hop adds one to the generation, up to
//! `[flow] max_generations`. The probes that report what tainted
//! processes write and send are `probes/flow.rs`.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use sensor_common::{
    INSERT_FAIL_RESERVE, INSERT_FAIL_TAINTED, STOP_GENERATION, STOP_MAP_FULL, TAINT_FILE,
    TAINT_PIPE, TAINT_STRONG, Taint,
};

use crate::{
    maps::{
        PIPE_TAINT_TS, TAINT_RESERVE, TAINT_RESERVE_USED, TAINTED, TAINTED_PIPES,
        count_insert_failed, count_stop,
    },
    setting,
    vfs::fd_file,
};

/// Has `TAINT_RESERVE` ever taken an entry (one array load)?
#[inline(always)]
fn reserve_used() -> bool {
    TAINT_RESERVE_USED.get(0).is_some_and(|u| *u != 0)
}

/// The taint entry of `tgid` (in `TAINTED`, else in `TAINT_RESERVE` once
/// that was used): one hash lookup and one array load for an untainted
/// process while the reserve was never needed.
#[inline(always)]
pub fn taint_ptr(tgid: u32) -> Option<*mut Taint> {
    if let Some(p) = TAINTED.get_ptr_mut(tgid) {
        return Some(p);
    }
    if reserve_used() {
        return TAINT_RESERVE.get_ptr_mut(tgid);
    }
    None
}

/// Is `tgid` tainted?
#[inline(always)]
pub fn is_tainted(tgid: u32) -> bool {
    taint_ptr(tgid).is_some()
}

/// A copy of the taint of `tgid`.
#[inline(always)]
pub fn taint_of(tgid: u32) -> Option<Taint> {
    // SAFETY: a live map value, copied out.
    taint_ptr(tgid).map(|p| unsafe { *p })
}

/// Ends the taint of `tgid` (wherever it is).
#[inline(always)]
pub fn remove_taint(tgid: u32) {
    if TAINTED.remove(tgid).is_err() && reserve_used() {
        let _ = TAINT_RESERVE.remove(tgid);
    }
}

/// A new taint entry: in `TAINTED`, or, when that is full, a strong one
/// in `TAINT_RESERVE`. A refusal is counted per map (a name-only taint
/// refused by a full `TAINTED`; a strong one refused by both, which user
/// space alerts on) and as `map_full`.
#[inline(always)]
pub fn insert_taint(tgid: u32, t: &Taint) {
    if TAINTED.insert(tgid, t, 0).is_ok() {
        return;
    }
    let slot = if t.flags & TAINT_STRONG == 0 {
        INSERT_FAIL_TAINTED
    } else {
        if let Some(u) = TAINT_RESERVE_USED.get_ptr_mut(0) {
            // SAFETY: an array slot; every writer stores the same 1.
            unsafe { *u = 1 };
        }
        if TAINT_RESERVE.insert(tgid, t, 0).is_ok() {
            return;
        }
        INSERT_FAIL_RESERVE
    };
    count_stop(STOP_MAP_FULL);
    count_insert_failed(slot);
}

/// How long after the last pipe taint reads still look pipes up.
const PIPE_TAINT_WINDOW_NS: u64 = 300 * 1_000_000_000;

/// Adds `t` to the taint of `tgid`. The first source of each kind stays,
/// except that a file the process opens itself (flags exactly
/// `TAINT_FILE`; a pipe's taint carries `TAINT_PIPE`) replaces an
/// earlier file source (the `TAINT_STRONG` bit aside): a copy tool's next writes come from what it read
/// last, not from what a parent's pipe once carried. The generation is the
/// replacing source's, else the nearest (smallest) of the two.
#[inline(always)]
pub fn add_taint(tgid: u32, t: &Taint) {
    match taint_ptr(tgid) {
        // SAFETY: a live map value (another CPU may update the same entry
        // at once: at worst a mixed taint).
        Some(cur) => unsafe {
            (*cur).flags |= t.flags;
            if (*cur).src_pid == 0 {
                (*cur).src_pid = t.src_pid;
            }
            if t.src_ino != 0 && ((*cur).src_ino == 0 || t.flags & !TAINT_STRONG == TAINT_FILE) {
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
        None => insert_taint(tgid, t),
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
        && !is_tainted(tgid)
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
