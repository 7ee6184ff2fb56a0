//! Sending one record to user space: `emit::<T>()` reserves a `T` on its
//! lane's ring (`T::LANE`, fixed per record type: `RB_CRITICAL`,
//! `RB_LIFECYCLE` or `RB_BULK`; a failed reserve is counted in
//! `LOST[lost_slot(lane, kind)]`, and a critical one sets `CRITICAL_LOST`;
//! a process past its critical rate limit is held back, `fold::crit_held`)
//! and fills its header from the current task; the caller fills the body through
//! [`Pending::ptr`] and calls [`Pending::submit`]. The kind comes from the
//! record's type (`sensor_common::Record`; `emit_as` for a
//! `SharedRecord`, with a kind of that type), and the size reserved and
//! written into the header is that type's, so neither can disagree with
//! the other or with what user space decodes.
//!
//! A record with a rebuilt path (`sensor_common::Compact`: an open, a
//! tracked write, an exec) is staged instead, by the tracepoint programs:
//! `stage::<T>()` hands out this CPU's [`STAGE`] with the header filled,
//! and [`Staged::submit`] sends only the bytes the path uses (the record's
//! trailer moved up behind them, `sensor_common::Compaction`), so a
//! 1.7 KB open takes about 0.45 KB of its ring. The LSM programs, which
//! can be preempted, stage theirs (a denial, an fd access) in a per-thread
//! entry of [`TASK_STAGE`] instead (`emit_lsm`), or reserve the whole
//! record when that map is full.
//!
//! A guard rather than a closure: a closure body used by several programs
//! is compiled as a BPF subprogram (rustc cannot be told to inline it),
//! while these `#[inline(always)]` functions leave each program's code as
//! it was written. The verifier requires the reserved record to be
//! submitted or discarded on every path: a `Pending` dropped without
//! `submit` discards it.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use core::ffi::c_void;
use sensor_common::{
    COMPACT_PATH_MAX, Compact, EventKind, ExecEvent, FileWriteEvent, Header, Lane, OpenEvent,
    PATH_BUF, Record, SharedRecord,
};

use crate::maps::{RB_BULK, RB_CRITICAL, RB_LIFECYCLE, count_lost, submit_flags};

/// A record reserved on its lane's ring, its header filled: submitted by
/// [`Pending::submit`], discarded if dropped.
#[must_use = "a reserved record is discarded unless submitted"]
pub struct Pending<T: 'static> {
    ev: *mut T,
    /// A constant once inlined (the record type's lane).
    lane: Lane,
}

/// Reserves a `T` record tagged `T::KIND` on `T::LANE` and fills its
/// header; `None` (counted lost) when that ring is full, or (counted
/// held) when the process is past its critical rate limit.
#[inline(always)]
pub fn emit<T: Record + 'static>() -> Option<Pending<T>> {
    reserve(T::LANE, T::KIND)
}

/// Reserves a `T` record that several kinds travel in, tagged `kind`, on
/// `T::LANE`.
#[inline(always)]
pub fn emit_as<T: SharedRecord + 'static>(kind: T::Kind) -> Option<Pending<T>> {
    reserve(T::LANE, kind.into())
}

/// The ring of `lane` (a constant once inlined).
#[inline(always)]
fn ring(lane: Lane) -> &'static RingBuf {
    match lane {
        Lane::Critical => &RB_CRITICAL,
        Lane::Lifecycle => &RB_LIFECYCLE,
        Lane::Bulk => &RB_BULK,
    }
}

/// Is a `kind` record of this process held back (a critical one past its
/// rate limit, counted by `fold::crit_held`)?
#[inline(always)]
fn held(lane: Lane, kind: EventKind) -> bool {
    lane == Lane::Critical && crate::fold::crit_held(kind)
}

/// Callers guarantee (through the `Record`/`SharedRecord` bound) that `T`
/// is a `#[repr(C)]` record starting with its `Header`.
#[inline(always)]
fn reserve<T: 'static>(lane: Lane, kind: EventKind) -> Option<Pending<T>> {
    if held(lane, kind) {
        return None;
    }
    reserve_held_checked(lane, kind)
}

/// `reserve` once the rate limit let the record through.
#[inline(always)]
fn reserve_held_checked<T: 'static>(lane: Lane, kind: EventKind) -> Option<Pending<T>> {
    let Some(mut entry) = ring(lane).reserve::<T>(0) else {
        count_lost(lane, kind);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at the `size_of::<T>()` bytes just reserved, and
    // `T` starts with its `Header` (the Record/SharedRecord contract).
    unsafe { fill_header(ev as *mut Header, kind as u32, size_of::<T>()) };
    Some(Pending { ev, lane })
}

impl<T: 'static> Pending<T> {
    /// The record, to fill its body: the header is written, the rest of
    /// the reserved memory is not initialised (write every field).
    #[inline(always)]
    pub fn ptr(&self) -> *mut T {
        self.ev
    }

    /// Submits the record: a critical one wakes user space at once, the
    /// others only once their ring holds more than its threshold
    /// (`submit_flags`).
    #[inline(always)]
    pub fn submit(self) {
        let flags = submit_flags(self.lane);
        let ev = self.ev;
        core::mem::forget(self);
        // SAFETY: `ev` was reserved on a ring and is released once: the
        // guard is forgotten, so its drop does not discard it too.
        unsafe { generated::bpf_ringbuf_submit(ev as *mut c_void, flags) };
    }
}

impl<T: 'static> Drop for Pending<T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `ev` was reserved on a ring and not submitted (submit
        // forgets the guard).
        unsafe { generated::bpf_ringbuf_discard(self.ev as *mut c_void, 0) };
    }
}

/// Fills a record header from the current task.
///
/// # Safety
/// `h` points at writable memory for a `Header`.
#[inline(always)]
unsafe fn fill_header(h: *mut Header, kind: u32, size: usize) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `h` is writable (the caller's contract).
    unsafe {
        (*h).kind = kind;
        (*h).size = size as u32;
        (*h).ts_boot_ns = generated::bpf_ktime_get_boot_ns();
        (*h).pid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).uid = uid_gid as u32;
        (*h).gid = (uid_gid >> 32) as u32;
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        // Straight into the header (the helper zeroes it on failure): a
        // zeroed stack buffer copied in becomes a call of the global
        // memset in some builds, which 6.1's verifier refuses a stack
        // pointer for ("reg type unsupported for arg#0 function memset").
        generated::bpf_get_current_comm(
            (&raw mut (*h).comm) as *mut c_void,
            sensor_common::COMM_LEN as u32,
        );
    }
}

/// Words of the largest record that is staged.
const STAGE_WORDS: usize = {
    let mut n = size_of::<OpenEvent>();
    if size_of::<ExecEvent>() > n {
        n = size_of::<ExecEvent>();
    }
    if size_of::<FileWriteEvent>() > n {
        n = size_of::<FileWriteEvent>();
    }
    n.div_ceil(8)
};

/// Where this CPU builds a staged record (`stage`). Only tracepoint and
/// raw tracepoint programs stage: they run with preemption off, and none
/// of the events they attach to happens inside another of them (no
/// interrupt context, no tracepoint fired by the helpers they call), so
/// one record at a time per CPU is in it, from `stage` to `submit`. LSM
/// programs run preemptible and never stage.
#[map]
static STAGE: PerCpuArray<[u64; STAGE_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// A record being built in this CPU's [`STAGE`]: sent by
/// [`Staged::submit`] with the bytes its path uses, dropped if not.
#[must_use = "a staged record is not sent unless submitted"]
pub struct Staged<T: 'static> {
    ev: *mut T,
    lane: Lane,
    kind: EventKind,
}

/// Stages a `T` record tagged `T::KIND` and fills its header; `None`
/// (counted held) when the process is past its critical rate limit. For
/// tracepoint programs only ([`STAGE`]).
#[inline(always)]
pub fn stage<T: Record + Compact + 'static>() -> Option<Staged<T>> {
    staged(T::LANE, T::KIND)
}

/// Stages a `T` record that several kinds travel in, tagged `kind`.
#[inline(always)]
pub fn stage_as<T: SharedRecord + Compact + 'static>(kind: T::Kind) -> Option<Staged<T>> {
    staged(T::LANE, kind.into())
}

#[inline(always)]
fn staged<T: Compact + 'static>(lane: Lane, kind: EventKind) -> Option<Staged<T>> {
    const { assert!(size_of::<T>() <= STAGE_WORDS * 8) };
    if held(lane, kind) {
        return None;
    }
    let Some(stage) = STAGE.get_ptr_mut(0) else {
        count_lost(lane, kind);
        return None;
    };
    let ev = stage as *mut T;
    // SAFETY: the stage holds `size_of::<T>()` bytes (asserted above) and
    // `T` starts with its `Header` (the Record/SharedRecord contract).
    unsafe { fill_header(ev as *mut Header, kind as u32, size_of::<T>()) };
    Some(Staged { ev, lane, kind })
}

impl<T: Compact + 'static> Staged<T> {
    /// The record, to fill its body (the stage holds whatever the previous
    /// record left: write every field).
    #[inline(always)]
    pub fn ptr(&self) -> *mut T {
        self.ev
    }

    /// Sends the record: compact when its path fits `COMPACT_PATH_MAX`
    /// (the trailer moved up behind the path's used bytes, the header's
    /// size set to match), whole otherwise; a full ring is counted lost.
    /// Wakes user space as [`Pending::submit`] does.
    #[inline(always)]
    pub fn submit(self) {
        // SAFETY: `ev` is a staged `T` (this CPU's stage).
        unsafe { send_compact::<T>(self.ev as *mut u8, self.lane, self.kind) }
    }
}

/// Sends the staged `T` at `base` compact (`Staged::submit`).
///
/// # Safety
/// `base` points at a whole `T` record being staged, its header filled.
#[inline(always)]
unsafe fn send_compact<T: Compact>(base: *mut u8, lane: Lane, kind: EventKind) {
    let c = T::COMPACTION;
    const { assert!(T::COMPACTION.trailer.is_multiple_of(8)) };
    const { assert!(T::COMPACTION.bytes_at().is_multiple_of(8)) };
    // SAFETY: `base` is a staged record, `size_of::<T>()` bytes; the
    // path's `len` is at `path_at` (the Compact contract); every offset
    // below is at most `bytes_at + COMPACT_PATH_MAX + trailer`, inside it.
    unsafe {
        let len = *(base.add(c.path_at) as *const u32) as usize;
        let used = (len + 7) & !7;
        let size = if used <= COMPACT_PATH_MAX {
            let from = base.add(c.bytes_at() + PATH_BUF) as *const u64;
            let to = base.add(c.bytes_at() + used) as *mut u64;
            let mut i = 0;
            while i < c.trailer / 8 {
                *to.add(i) = *from.add(i);
                i += 1;
            }
            c.bytes_at() + used + c.trailer
        } else {
            size_of::<T>()
        };
        // Through memory and checked again at its use: the compiler
        // computes `size` before the branch that bounds `used`, and
        // 6.1's verifier does not carry that bound over to `size`.
        let hsize = &raw mut (*(base as *mut Header)).size;
        core::ptr::write_volatile(hsize, size as u32);
        let size = core::ptr::read_volatile(hsize) as usize;
        if size > size_of::<T>() {
            count_lost(lane, kind);
            return;
        }
        let bytes = core::slice::from_raw_parts(base as *const u8, size);
        if ring(lane)
            .output::<[u8]>(bytes, submit_flags(lane))
            .is_err()
        {
            count_lost(lane, kind);
        }
    }
}

/// Threads at once between `emit_lsm` and their record's submit (each
/// entry holds a record: about 450 KB in all, preallocated).
const TASK_STAGE_ENTRIES: u32 = 256;

/// Where the LSM programs, which run preemptible (so another program on
/// the same CPU could take a per-CPU [`STAGE`] over midway), build a
/// record that travels compact: one entry per thread, made by
/// [`emit_lsm`] and removed when its record is sent or dropped. A
/// program never runs inside another LSM program of the same thread, so
/// an entry left by one (none should be) is simply overwritten.
#[map]
static TASK_STAGE: HashMap<u32, [u64; STAGE_WORDS]> =
    HashMap::with_max_entries(TASK_STAGE_ENTRIES, 0);

/// Zeroes, the value a new [`TASK_STAGE`] entry is made from (a record
/// does not fit on the BPF stack). Never written.
#[map]
static STAGE_ZERO: Array<[u64; STAGE_WORDS]> = Array::with_max_entries(1, 0);

/// A record an LSM program fills: staged in [`TASK_STAGE`] and sent
/// compact, or, when that map is full, reserved whole on its ring as
/// [`emit`] does. Sent by [`LsmRecord::submit`], discarded if dropped.
#[must_use = "a record is not sent unless submitted"]
pub struct LsmRecord<T: 'static> {
    ev: *mut T,
    lane: Lane,
    kind: EventKind,
    /// The thread whose `TASK_STAGE` entry holds the record; None for a
    /// record reserved on the ring.
    staged: Option<u32>,
}

/// `emit` for LSM programs, for records that can travel compact: `None`
/// (counted) when the process is past its critical rate limit or the ring
/// is full.
#[inline(always)]
pub fn emit_lsm<T: Record + Compact + 'static>() -> Option<LsmRecord<T>> {
    const { assert!(size_of::<T>() <= STAGE_WORDS * 8) };
    let (lane, kind) = (T::LANE, T::KIND);
    if held(lane, kind) {
        return None;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(zero) = STAGE_ZERO.get(0)
        && TASK_STAGE.insert(tid, zero, 0).is_ok()
    {
        if let Some(p) = TASK_STAGE.get_ptr_mut(tid) {
            let ev = p as *mut T;
            // SAFETY: the entry holds `size_of::<T>()` bytes (asserted
            // above) and `T` starts with its `Header`.
            unsafe { fill_header(ev as *mut Header, kind as u32, size_of::<T>()) };
            return Some(LsmRecord {
                ev,
                lane,
                kind,
                staged: Some(tid),
            });
        }
        let _ = TASK_STAGE.remove(tid);
    }
    let p = reserve_held_checked::<T>(lane, kind)?;
    let ev = p.ev;
    core::mem::forget(p);
    Some(LsmRecord {
        ev,
        lane,
        kind,
        staged: None,
    })
}

impl<T: Compact + 'static> LsmRecord<T> {
    /// The record, to fill its body (write every field).
    #[inline(always)]
    pub fn ptr(&self) -> *mut T {
        self.ev
    }

    /// Sends the record (compact when staged) and wakes user space.
    #[inline(always)]
    pub fn submit(self) {
        let (ev, lane, kind, staged) = (self.ev, self.lane, self.kind, self.staged);
        core::mem::forget(self);
        match staged {
            Some(tid) => {
                // SAFETY: `ev` is this thread's staged record.
                unsafe { send_compact::<T>(ev as *mut u8, lane, kind) };
                let _ = TASK_STAGE.remove(tid);
            }
            // SAFETY: `ev` was reserved on a ring and is released once.
            None => unsafe { generated::bpf_ringbuf_submit(ev as *mut c_void, submit_flags(lane)) },
        }
    }
}

impl<T: 'static> Drop for LsmRecord<T> {
    #[inline(always)]
    fn drop(&mut self) {
        match self.staged {
            Some(tid) => {
                let _ = TASK_STAGE.remove(tid);
            }
            // SAFETY: `ev` was reserved on a ring and not submitted.
            None => unsafe { generated::bpf_ringbuf_discard(self.ev as *mut c_void, 0) },
        }
    }
}
