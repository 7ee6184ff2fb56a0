//! Folding repeats in the kernel (issue 13): an event identical to one
//! sent less than `SensorSettings::fold_window_ms` ago (same [`FoldKey`])
//! is counted in the kernel's `FOLD` map instead of sent. The first is
//! always sent at once; the next one after the window is sent again and
//! carries the count folded since the previous record ([`FoldTag`]), and
//! user space sweeps the map for windows that closed with nothing after
//! them, so every folded event reaches an alert's `count`.

/// What makes two events the same event: the process and its executable
/// image, the object, the way it was accessed. An open: the file (dev,
/// inode), its access-mode bits, its match; a memory access: the target,
/// the operation and request, the result class. Any difference (another
/// file, mode, executable after exec, a failure instead of a success) is
/// another key, so it is sent.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FoldKey {
    pub tgid: u32,
    /// EventKind.
    pub kind: u32,
    /// The process's executable (`mm->exe_file`) inode and device.
    pub exe_ino: u64,
    /// Open: the file's inode; memory access: the target pid.
    pub obj: u64,
    pub exe_dev: u32,
    /// Open: the file's device; memory access: the MEM_* operation.
    pub dev: u32,
    /// Open: the FOLD_MODE_* bits of f_flags/f_mode; memory access: the
    /// request (ptrace request, pidfd).
    pub mode: u32,
    /// The actor's uid (a setuid between two events is another event).
    pub uid: u32,
    /// Open: MATCH_* bits | PROC_* value << 8; memory access: 0 for a
    /// success, the errno of a failure.
    pub extra: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FoldKey>() == 48);

/// A folded-events entry (the `FOLD` map's value, one per CPU).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldVal {
    /// Boot time of the last record sent for the key from this CPU: its
    /// window's start (0: none sent from this CPU).
    pub first_ns: u64,
    /// Events folded on this CPU since the last record sent from it (taken
    /// by the next record, or by user space's sweep).
    pub pending: u64,
}

/// Carried at the end of each record that can be folded: the key it was
/// sent under and how many identical events were folded into the FOLD
/// map since the previous record of that key. `key.kind` is 0 when the
/// event was not folded (folding off, or a record type folded by no key).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldTag {
    pub key: FoldKey,
    pub folded: u64,
}
const _: () = assert!(core::mem::size_of::<FoldTag>() == 56);

/// `FoldKey::mode` bits of an open: the access mode (O_ACCMODE), O_PATH,
/// O_CREAT, O_TRUNC, and whether the open created the file.
pub const FOLD_MODE_ACC: u32 = 3;
pub const FOLD_MODE_PATH: u32 = 4;
pub const FOLD_MODE_CREAT: u32 = 8;
pub const FOLD_MODE_TRUNC: u32 = 16;
pub const FOLD_MODE_CREATED: u32 = 32;

/// Default kernel fold window (`SensorSettings::fold_window_ms`).
pub const FOLD_WINDOW_MS: u32 = 1000;
/// Entries of the FOLD map (LRU: an evicted key costs an extra record).
pub const FOLD_ENTRIES: u32 = 16384;

/// The critical lane's rate limit per (tgid, kind): a process gets
/// `CRIT_BURST` records at once and one more every `CRIT_INTERVAL_NS`
/// (a token bucket kept as a theoretical arrival time, `CRIT_RATE`);
/// the excess is not reserved, counted per kind (`THROTTLED`) and per
/// process (the bucket's `held`), and reported by user space as an
/// `events-lost` alert naming the process.
pub const CRIT_BURST: u64 = 256;
pub const CRIT_INTERVAL_NS: u64 = 1_000_000_000 / 256;
/// Entries of the CRIT_RATE map.
pub const CRIT_RATE_ENTRIES: u32 = 4096;

/// A (tgid, kind) pair's bucket in the critical lane.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CritBucket {
    /// Theoretical arrival time (boot ns): a record is allowed while
    /// `tat <= now + burst`, and each allowed one moves it one interval on.
    pub tat: u64,
    /// Records held back since the bucket was created.
    pub held: u64,
}

/// Bit of `CRITICAL_LOST[0]`: a critical record did not fit in its ring.
pub const CRIT_FLAG_LOST: u64 = 1;
/// Bit of `CRITICAL_LOST[0]`: a critical record was held back by its
/// process's rate limit.
pub const CRIT_FLAG_THROTTLED: u64 = 2;
