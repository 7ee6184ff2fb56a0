//! Folding repeats in the kernel (`sensor_common::FoldKey`) and the
//! critical lane's per-(tgid, kind) rate limit.
//!
//! `FOLD` is a per-CPU LRU hash: each CPU keeps its own window and count
//! for a key, so counting needs no atomics (which BPF programs built by
//! this toolchain cannot emit); a process that moves to another CPU has
//! its first event there sent too (one extra record, never a hidden one).
//!
//! A probe builds the key of its event and asks [`fold_check`]: an event
//! identical to one sent less than the fold window ago is counted in the
//! key's `FOLD` entry (and in `FOLDED[kind]`) and not sent. Otherwise the
//! probe reserves its record and, once it has one, calls [`fold_sent`],
//! which starts the key's window again and hands over the count folded
//! since the previous record (carried in the record's `FoldTag`). A
//! record that could not be reserved leaves the entry as it was, so the
//! next identical event is sent, not folded: nothing is hidden behind a
//! record user space never got. User space sweeps the map for windows
//! that closed with a count and nothing after them (`agent/fold.rs`).

use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use sensor_common::{
    CRIT_BURST, CRIT_INTERVAL_NS, CritBucket, EventKind, FoldKey, FoldTag, FoldVal, KIND_SLOTS,
    LRU_CRIT_RATE, LRU_FOLD,
};

use crate::{
    maps::{CRIT_RATE, CRITICAL_LOST, FOLD, FOLDED, THROTTLED, lru_insert, lru_insert_percpu},
    setting,
};

/// The fold window in ns (0: folding is off).
#[inline(always)]
fn window_ns() -> u64 {
    setting!(fold_window_ms) as u64 * 1_000_000
}

/// Counts one more of `kind` in a per-CPU counter array.
#[inline(always)]
fn count_kind(counters: &aya_ebpf::maps::PerCpuArray<u64>, kind: u32) {
    if let Some(p) = counters.get_ptr_mut(kind % KIND_SLOTS) {
        // SAFETY: a per-CPU array slot, this CPU's alone.
        unsafe { *p += 1 };
    }
}

/// True when the event `key` describes must be sent; false when it was
/// folded (counted in its FOLD entry and in FOLDED[kind]).
#[inline(always)]
pub fn fold_check(key: &FoldKey) -> bool {
    let w = window_ns();
    if w == 0 {
        return true;
    }
    let Some(v) = FOLD.get_ptr_mut(key) else {
        return true;
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: this CPU's slot of a live map value (it stays valid while the
    // program runs, even if user space removes the entry meanwhile).
    unsafe {
        let first = core::ptr::read_volatile(&raw const (*v).first_ns);
        // 0: the entry was created on another CPU, none was sent from here.
        if first == 0 || now.wrapping_sub(first) >= w {
            return true;
        }
        (*v).pending += 1;
    }
    count_kind(&FOLDED, key.kind);
    false
}

/// The record of `key` was reserved: its window starts now. Writes the
/// tag the record carries (the key, and the events folded since the
/// previous record of that key; an unfolded key when folding is off).
///
/// # Safety
/// `tag` points at the reserved record's `FoldTag`.
#[inline(always)]
pub unsafe fn fold_sent(key: &FoldKey, tag: *mut FoldTag) {
    let w = window_ns();
    let mut folded = 0u64;
    if w != 0 {
        let now = unsafe { bpf_ktime_get_boot_ns() };
        match FOLD.get_ptr_mut(key) {
            // SAFETY: this CPU's slot of a live map value.
            Some(v) => unsafe {
                folded = core::ptr::read_volatile(&raw const (*v).pending);
                core::ptr::write_volatile(&raw mut (*v).pending, 0);
                core::ptr::write_volatile(&raw mut (*v).first_ns, now);
            },
            None => {
                let _ = lru_insert_percpu(
                    &FOLD,
                    LRU_FOLD,
                    key,
                    &FoldVal {
                        first_ns: now,
                        pending: 0,
                    },
                );
            }
        }
    }
    // SAFETY: `tag` is the record's (the caller's contract); field by
    // field, so no memcpy loop is emitted.
    unsafe {
        let k = &raw mut (*tag).key;
        let kind = if w != 0 { key.kind } else { 0 };
        (*k).tgid = key.tgid;
        (*k).kind = kind;
        (*k).exe_ino = key.exe_ino;
        (*k).obj = key.obj;
        (*k).exe_dev = key.exe_dev;
        (*k).dev = key.dev;
        (*k).mode = key.mode;
        (*k).uid = key.uid;
        (*k).extra = key.extra;
        (*k)._pad = 0;
        (*tag).folded = folded;
    }
}

/// Writes the tag of a record no key folds (a failed open, an LSM access).
///
/// # Safety
/// `tag` points at a reserved record's `FoldTag`.
#[inline(always)]
pub unsafe fn no_fold(tag: *mut FoldTag) {
    // SAFETY: the caller's contract.
    unsafe {
        let k = &raw mut (*tag).key;
        (*k).tgid = 0;
        (*k).kind = 0;
        (*k).exe_ino = 0;
        (*k).obj = 0;
        (*k).exe_dev = 0;
        (*k).dev = 0;
        (*k).mode = 0;
        (*k).uid = 0;
        (*k).extra = 0;
        (*k)._pad = 0;
        (*tag).folded = 0;
    }
}

/// The critical lane's rate limit: true when the current process has used
/// its burst of `kind` records (`CRIT_BURST`, refilled one every
/// `CRIT_INTERVAL_NS`) and this one is held back: counted per kind
/// (`THROTTLED`) and in the process's bucket (`held`), and flagged for
/// user space (`CRITICAL_LOST[1]`), which raises `events-lost` naming the
/// process. A process's first record of each kind always goes through.
#[inline(always)]
pub fn crit_held(kind: EventKind) -> bool {
    if setting!(crit_rate_limit) == 0 {
        return false;
    }
    let tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32;
    let key = (tgid << 32) | kind as u64;
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(b) = CRIT_RATE.get_ptr_mut(key) else {
        let _ = lru_insert(
            &CRIT_RATE,
            LRU_CRIT_RATE,
            &key,
            &CritBucket {
                tat: now + CRIT_INTERVAL_NS,
                held: 0,
            },
        );
        return false;
    };
    // SAFETY: a live map value (threads of one process may race on it:
    // at worst a record more or less goes through).
    unsafe {
        let tat = core::ptr::read_volatile(&raw const (*b).tat).max(now);
        if tat - now < CRIT_BURST * CRIT_INTERVAL_NS {
            core::ptr::write_volatile(&raw mut (*b).tat, tat + CRIT_INTERVAL_NS);
            return false;
        }
        (*b).held += 1;
    }
    count_kind(&THROTTLED, kind as u32);
    if let Some(p) = CRITICAL_LOST.get_ptr_mut(1) {
        // SAFETY: an array slot; every writer stores the same value, user
        // space clears it.
        unsafe { core::ptr::write_volatile(p, 1) };
    }
    true
}
