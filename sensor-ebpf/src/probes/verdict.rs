//! The open verdict cache: an open that matched nothing (no watched inode
//! or directory, no name pattern, no /proc or dump control file) leaves
//! its "nothing to report" here, and the next open of the same file
//! through the same dentry ends after one read of the dentry instead of
//! the whole evaluation (about ten kernel reads, two hash lookups and the
//! pattern loop). Most opens on a host are of files opened before.
//!
//! A slot holds the dentry's address with everything the verdict came
//! from: the dentry's parent, name (hash and length, name pointer) and
//! inode, the parent's name (when a pattern names a directory), and the
//! generations of the watch map. A hit needs all of them unchanged:
//! - a rename or move changes the name or the parent; a file put in the
//!   dentry's place changes the inode; a renamed parent changes its name;
//! - any insert into WATCHED, and a reload's new key-name patterns, change
//!   a generation: user space's (`VERDICT_GEN[0]`, bumped after each of its
//!   inserts and after the patterns, `kernel::control`)
//!   or the kernel's (`VERDICT_GEN[1]`, a fresh timestamp after each of its
//!   own, `bump`). The generations are read before the evaluation they
//!   vouch for, so an insert that evaluation may have missed always
//!   changes one of them before the slot could be hit. Removals need no
//!   bump: a removed entry only turns matches into non-matches.
//!
//! Only "nothing to report" is kept: a match is evaluated every time. A
//! read of a code-loading path (`WATCH_CODE`) is nothing to report too,
//! but its slot says so (`ro`): an open that may change the file misses.
//!
//! The cache is per CPU and used by the open syscalls' tracepoints only
//! (they run with preemption off, so a CPU's slots are one program's at a
//! time). BPF LSM programs can be preempted, and the io_uring completion
//! program is verified with every io_uring path already (the cache's
//! branches cost 6.1's verifier 270,000 more instructions there): neither
//! uses it.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray},
};

use crate::{
    kptr::{DentryPtr, FilePtr},
    maps::NAME_PATTERNS,
    off,
    probes::{
        open::{OpenState, get, put},
        open_rules::may_change,
    },
};

/// Slots per CPU (a power of two).
const SLOTS: u32 = 1024;

#[repr(C)]
pub struct VerdictSlot {
    dentry: u64,
    parent: u64,
    hash_len: u64,
    name: u64,
    inode: u64,
    pname: u64,
    ugen: u64,
    kgen: u64,
    /// 1: the verdict holds for opens that cannot change the file only.
    ro: u64,
}

#[map]
static VERDICTS: PerCpuArray<VerdictSlot> = PerCpuArray::with_max_entries(SLOTS, 0);

/// The watch map's generations: [0] user space's, [1] the kernel's.
#[map]
pub static VERDICT_GEN: Array<u64> = Array::with_max_entries(2, 0);

/// The kernel inserted into WATCHED: cached verdicts are void.
#[inline(always)]
pub fn bump() {
    if let Some(p) = VERDICT_GEN.get_ptr_mut(1) {
        // SAFETY: a live map value; a plain store (a timestamp differs from
        // every value stored before it, so concurrent bumps need no atomics).
        unsafe { core::ptr::write_volatile(p, bpf_ktime_get_ns()) };
    }
}

#[inline(always)]
fn generation(i: u32) -> u64 {
    VERDICT_GEN
        .get_ptr(i)
        // SAFETY: a live map value.
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

#[inline(always)]
fn slot_of(dentry: u64) -> u32 {
    ((dentry >> 6) ^ (dentry >> 16)) as u32 & (SLOTS - 1)
}

/// Reads what the verdict on `dentry` depends on into `s` (`v_ok` 1 once
/// read) and tells whether the cache holds "nothing to report" for it.
///
/// # Safety
/// `s` is the caller's OPEN_STATE slot.
#[inline(always)]
pub(super) unsafe fn cached(s: *mut OpenState, dentry: DentryPtr, file: FilePtr) -> bool {
    // SAFETY: `s` is the caller's; map values are live while the program
    // runs.
    unsafe {
        put!(s.v_ok, 0);
        if off!(dentry_span) == 0 {
            return false;
        }
        let Some(span) = dentry.span() else {
            return false;
        };
        let pname = if span[0] != 0 && NAME_PATTERNS.get(0).is_some_and(|p| p.has_dir != 0) {
            DentryPtr::from_addr(span[0]).hash_len().unwrap_or(0)
        } else {
            0
        };
        put!(s.v_parent, span[0]);
        put!(s.v_hash_len, span[1]);
        put!(s.v_name, span[2]);
        put!(s.v_inode, span[3]);
        put!(s.v_pname, pname);
        put!(s.v_ugen, generation(0));
        put!(s.v_kgen, generation(1));
        put!(s.v_ok, 1);
        let Some(c) = VERDICTS.get_ptr(slot_of(dentry.addr())) else {
            return false;
        };
        (*c).dentry == dentry.addr()
            && (*c).parent == get!(s.v_parent)
            && (*c).hash_len == get!(s.v_hash_len)
            && (*c).name == get!(s.v_name)
            && (*c).inode == get!(s.v_inode)
            && (*c).pname == get!(s.v_pname)
            && (*c).ugen == get!(s.v_ugen)
            && (*c).kgen == get!(s.v_kgen)
            && ((*c).ro == 0 || !may_change(file))
    }
}

/// Keeps "nothing to report" for the dentry `s` describes (read by
/// `cached`).
///
/// # Safety
/// `s` is the caller's OPEN_STATE slot.
#[inline(always)]
pub(super) unsafe fn store(s: *mut OpenState) {
    // SAFETY: as `cached`.
    unsafe {
        if get!(s.v_ok) == 0 {
            return;
        }
        let dentry = get!(s.dentry);
        let Some(c) = VERDICTS.get_ptr_mut(slot_of(dentry)) else {
            return;
        };
        (*c).dentry = dentry;
        (*c).parent = get!(s.v_parent);
        (*c).hash_len = get!(s.v_hash_len);
        (*c).name = get!(s.v_name);
        (*c).inode = get!(s.v_inode);
        (*c).pname = get!(s.v_pname);
        (*c).ugen = get!(s.v_ugen);
        (*c).kgen = get!(s.v_kgen);
        (*c).ro = get!(s.v_ro) as u64;
    }
}
