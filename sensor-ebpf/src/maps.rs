//! Maps and load-time globals shared by all probes.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{
    AGENT_EXES_MAX, AGENT_SOCKS_MAX, AgentSock, AllowKey, CODE_NAMES_MAX, CRIT_RATE_ENTRIES,
    CritBucket, EventKind, FOLD_ENTRIES, FileOpener, FoldKey, FoldVal, INSERT_FAIL_SLOTS,
    INSERT_FAIL_WRITERS, InodeKey, KIND_SLOTS, KernelOffsets, LANES, LRU_SLOTS, Lane, RAW_DEVS_MAX,
    STOP_SLOTS, STOP_STALE_INODE, SensorSettings, Taint, WATCH_CODE, WATCH_IGEN, WatchEntry,
    WriteKey, lost_slot, lru_added, lru_removed,
    names::{NameKey, NamePatterns},
};

use crate::kptr::InodePtr;

/// Struct offsets of the running kernel (from its BTF), set at load time.
#[unsafe(no_mangle)]
// SAFETY: plain integers, valid as all zeroes.
pub static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// Run-time switches, set at load time.
#[unsafe(no_mangle)]
// SAFETY: plain integers, valid as all zeroes.
pub static SETTINGS: SensorSettings = unsafe { core::mem::zeroed() };

/// Reads one field of a load-time global. Volatile, so the compiler does not
/// fold the zero it was built with.
#[macro_export]
macro_rules! off {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        // SAFETY: an aligned read of a static's field (user space writes
        // the static only before the programs load).
        let v = unsafe { core::ptr::read_volatile(&raw const $crate::maps::OFFSETS.$field) };
        v
    }};
}

#[macro_export]
macro_rules! setting {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        // SAFETY: an aligned read of a static's field (user space writes
        // the static only before the programs load).
        let v = unsafe { core::ptr::read_volatile(&raw const $crate::maps::SETTINGS.$field) };
        v
    }};
}

/// The critical lane (`Lane::Critical`): memory access, dump signals and
/// configuration, LSM denials and fd accesses, tracked writes, sends and
/// path changes. Every submit wakes user space, which drains it first.
#[map]
pub static RB_CRITICAL: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// The lifecycle lane (`Lane::Lifecycle`): exec, fork, exit, rename.
#[map]
pub static RB_LIFECYCLE: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// The bulk lane (`Lane::Bulk`): opens and closes. Sized by user space
/// (`--ring-buffer-bytes`).
#[map]
pub static RB_BULK: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Records that did not fit in their lane's ring, per lane and EventKind
/// (`sensor_common::lost_slot`).
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LANES * KIND_SLOTS, 0);

/// [0]: set to 1 when a critical record did not fit; [1]: set to 1 when
/// a process's critical records were held back by its rate limit
/// (`fold::crit_held`). User space reads and clears both on every tick
/// and raises an `events-lost` alert.
#[map]
pub static CRITICAL_LOST: Array<u64> = Array::with_max_entries(2, 0);

/// Repeats folded in the kernel (`fold.rs`): the key of an event -> per
/// CPU, the start of its window and the events folded since its last
/// record.
#[map]
pub static FOLD: LruPerCpuHashMap<FoldKey, FoldVal> =
    LruPerCpuHashMap::with_max_entries(FOLD_ENTRIES, 0);

/// Events folded, per EventKind.
#[map]
pub static FOLDED: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS, 0);

/// The critical lane's rate limit per process and kind ((tgid << 32) |
/// kind -> bucket).
#[map]
pub static CRIT_RATE: LruHashMap<u64, CritBucket> =
    LruHashMap::with_max_entries(CRIT_RATE_ENTRIES, 0);

/// Critical records held back by the rate limit, per EventKind.
#[map]
pub static THROTTLED: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS, 0);

/// Watched inodes: key files, and directories whose children are watched.
#[map]
pub static WATCHED: HashMap<InodeKey, WatchEntry> = HashMap::with_max_entries(65536, 0);

/// Block devices under the watched key stores (kernel dev_t -> 1): the
/// file systems themselves, the disks their partitions are on, the devices
/// under a device-mapper or md device. An open of one is a raw read
/// (`probes/open_raw.rs`). Filled by user space.
#[map]
pub static RAW_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(RAW_DEVS_MAX, 0);

/// Final path components of watched files (filter for failed opens).
#[map]
pub static WATCHED_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(16384, 0);

/// Final path components of the code-loading paths (`[tamper]
/// code_paths`): a file created under one of these names (wherever: user
/// space decides whether it is at a code path) is reported, so a code path
/// that did not exist (/etc/ld.so.preload) is seen as it is made.
#[map]
pub static CODE_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(CODE_NAMES_MAX, 0);

/// Protected processes (tgid -> 1 + index of the [[protected]] rule; the
/// sensor itself is protected too). Children inherit it at fork.
#[map]
pub static PROTECTED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Threads of protected processes other than their leader (tid -> tgid),
/// so that a thread id given as the target of ptrace, process_vm_readv/
/// writev, pidfd_getfd or a /proc/<tid>/ open is the protected process:
/// added when a protected process starts a thread (`ks_sched_fork`), by
/// user space for the threads a process already had when it protects it
/// (`KernelControl::protect`, from /proc/<pid>/task), removed at each
/// thread's exit and at a non-leader's exec (its old tid). Bounded: at most
/// 16384 threads over all protected processes; past that, further threads
/// are not added (`PROTECTED_THREADS` in `keysentry_map_entries`), and an
/// access through such a tid falls back to user space's resolution
/// (severity right, no kernel taint).
#[map]
pub static PROTECTED_THREADS: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Protected programs by executable (dev, inode) -> rule value: a process
/// is protected in the kernel at its exec, before user space sees it.
#[map]
pub static PROTECTED_EXES: HashMap<InodeKey, u32> = HashMap::with_max_entries(256, 0);

/// Key agents by executable (dev, inode), from `[agents] exes`: a unix
/// socket one of them binds goes into `AGENT_SOCKS` (agent-socket-use).
#[map]
pub static AGENT_EXES: HashMap<InodeKey, u32> = HashMap::with_max_entries(AGENT_EXES_MAX, 0);

/// Key agents' sockets by socket file (dev, inode) -> who bound it: added
/// by the kernel when an agent binds, by user space for the sockets agents
/// already listened on; removed by user space when the file is gone.
/// Connections to one by another uid or login uid are reported.
#[map]
pub static AGENT_SOCKS: HashMap<InodeKey, AgentSock> =
    HashMap::with_max_entries(AGENT_SOCKS_MAX, 0);

/// Protected programs by comm (16 bytes, NUL padded) -> rule value.
#[map]
pub static PROTECTED_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(256, 0);

/// Processes that have read tracked material (tgid -> what), and so whose
/// writes and sends are followed. Children inherit it at fork (one
/// generation further); exec ends it unless the new image holds a
/// descriptor of a tainted source; the last thread's exit removes it. Not
/// an LRU: nobody can push a thief's entry out by tainting many processes
/// (a full map refuses new entries, counted as `map_full`). Read and
/// changed through `taint.rs` only, which also looks in `TAINT_RESERVE`.
#[map]
pub static TAINTED: HashMap<u32, Taint> = HashMap::with_max_entries(16384, 0);

/// Where a strong taint (`TAINT_STRONG`: a key path's key, a protected
/// process's memory, a dump, the core helper) goes when `TAINTED` is full.
/// A name-only taint never comes here, so a user who fills `TAINTED` with
/// thousands of self-tainted processes cannot keep a real theft from being
/// followed; filling this one takes thousands of processes descending from
/// an alerted read. Both full: counted (`INSERT_FAILED`) and alerted.
#[map]
pub static TAINT_RESERVE: HashMap<u32, Taint> = HashMap::with_max_entries(4096, 0);

/// [0]: nonzero once `TAINT_RESERVE` took an entry. Until then (a host
/// whose `TAINTED` never filled) a lookup that misses `TAINTED` costs one
/// array load more, not a second hash lookup.
#[map]
pub static TAINT_RESERVE_USED: Array<u32> = Array::with_max_entries(1, 0);

/// Inserts refused by a map that decides detection, per INSERT_FAIL_*
/// slot (`keysentry_map_insert_failures_total{map}`, a warning per map).
#[map]
pub static INSERT_FAILED: PerCpuArray<u64> = PerCpuArray::with_max_entries(INSERT_FAIL_SLOTS, 0);

/// /proc/<pid>/environ opens per process (tgid -> count), reported at its
/// exit: a lister (`ps aux` reads every environment) from a targeted read.
#[map]
pub static ENVIRON_READS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(8192, 0);

/// Processes whose exit was reported (tgid -> start time of its leader).
/// Threads that exit together can each see `signal->live` at 0 after the
/// last decrement: the first to insert reports the exit, the others find
/// the same leader here. A reused tgid has another leader start time.
#[map]
pub static GROUP_EXITED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(2048, 0);

/// Why taint or tracking stopped, per STOP_* reason.
#[map]
pub static FLOW_STOPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(STOP_SLOTS, 0);

/// Pipes a tainted process wrote (pipe inode address -> the writer's taint).
#[map]
pub static TAINTED_PIPES: LruHashMap<u64, Taint> = LruHashMap::with_max_entries(4096, 0);

/// [0]: boot time of the last pipe taint. Reads look pipes up only while
/// it is recent, so untainted hosts pay one array load per read.
#[map]
pub static PIPE_TAINT_TS: Array<u64> = Array::with_max_entries(1, 0);

/// (process, file) pairs already reported as written -> bytes written
/// since (reported at the close).
#[map]
pub static WRITTEN: LruHashMap<WriteKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Tainted processes that wrote a file `WRITTEN` follows (tgid -> 1, from
/// the write until the process exits): the close probe skips every other
/// tainted process at once. A plain hash, never evicted: a full map sets
/// `WRITERS_FULL` instead, and every tainted close then takes the full
/// path (slower, nothing missed).
#[map]
pub static WRITERS: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

#[map]
pub static WRITERS_FULL: Array<u32> = Array::with_max_entries(1, 0);

/// Records `tgid` as a writer, before its first `WRITTEN` entry.
#[inline(always)]
pub fn note_writer(tgid: u32) {
    // SAFETY: a lookup; the value is not read.
    if unsafe { WRITERS.get(tgid) }.is_some() {
        return;
    }
    if WRITERS.insert(tgid, 1, 0).is_err() {
        if let Some(f) = WRITERS_FULL.get_ptr_mut(0) {
            // SAFETY: a live map value; a sticky flag (a plain store).
            unsafe { core::ptr::write_volatile(f, 1) };
        }
        count_insert_failed(INSERT_FAIL_WRITERS);
    }
}

/// May `tgid` have a file in `WRITTEN` (a close to report)?
#[inline(always)]
pub fn may_have_written(tgid: u32) -> bool {
    // SAFETY: a lookup; the value is not read.
    WRITERS_FULL.get(0).is_some_and(|f| *f != 0) || unsafe { WRITERS.get(tgid) }.is_some()
}

/// (process, socket address) pairs already reported as sent on.
#[map]
pub static SENT: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(8192, 0);

/// `[[allow]]` entries the LSM hooks honour (actor exe, scope, target exe).
#[map]
pub static ALLOWED: HashMap<AllowKey, u32> = HashMap::with_max_entries(1024, 0);

/// Executables (dev, inode) with any `[[allow]]` entry: only their execs
/// have the environment checked for loader variables.
#[map]
pub static ALLOW_EXES: HashMap<InodeKey, u32> = HashMap::with_max_entries(1024, 0);

/// Processes (tgid -> EXEC_* bits) of an allowlisted executable that lost
/// their allowance at exec (loader variables, traced). Removed at the next
/// exec and when the group dies; a hash map, not an LRU, so a flood of
/// other processes cannot evict an entry and give an allowance back. Only
/// live processes of allowlisted executables run with loader variables or
/// traced hold an entry; a failed insert is counted (STOP_MAP_FULL and
/// `INSERT_FAILED`) and user space still withdraws the allowance from the
/// exec record's flags.
#[map]
pub static ALLOW_BYPASS: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// [0]: bit per ENF_* rule in enforce mode (written by user space once it
/// knows the kernel runs BPF LSM).
#[map]
pub static ENFORCE: Array<u32> = Array::with_max_entries(1, 0);

/// Who opened each open watched file (`struct file` address -> opener),
/// written by the LSM file_open hook (BPF LSM backend only).
#[map]
pub static FILE_OPENERS: LruHashMap<u64, FileOpener> = LruHashMap::with_max_entries(16384, 0);

/// Watched files a process received (tgid, `struct file` address) -> the
/// syscall it received them by (SCM_RIGHTS, pidfd_getfd), from the LSM
/// file_receive hook.
#[map]
pub static FD_RECEIVED: LruHashMap<[u64; 2], i32> = LruHashMap::with_max_entries(4096, 0);

/// (process, file) pairs already reported as accessed through an fd the
/// process did not open -> the process's mm at that time (a new program
/// after exec is reported again).
#[map]
pub static FD_REPORTED: LruHashMap<WriteKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Key-file name patterns.
#[map]
pub static NAME_PATTERNS: Array<NamePatterns> = Array::with_max_entries(1, 0);

pub const BPF_RB_NO_WAKEUP: u64 = 1;
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Counts an event that could not be reserved in `lane`; a critical one
/// also sets the sticky `CRITICAL_LOST` flag.
#[inline(always)]
pub fn count_lost(lane: Lane, kind: EventKind) {
    if let Some(p) = LOST.get_ptr_mut(lost_slot(lane, kind)) {
        // SAFETY: a per-CPU array slot, this CPU's alone.
        unsafe { *p += 1 };
    }
    if lane == Lane::Critical
        && let Some(p) = CRITICAL_LOST.get_ptr_mut(0)
    {
        // SAFETY: an array slot; every writer stores the same value, user
        // space clears it.
        unsafe { core::ptr::write_volatile(p, 1) };
    }
}

/// Counts a STOP_* reason.
#[inline(always)]
pub fn count_stop(reason: u32) {
    if let Some(p) = FLOW_STOPPED.get_ptr_mut(reason) {
        // SAFETY: a per-CPU array slot, this CPU's alone.
        unsafe { *p += 1 };
    }
}

/// Counts an insert that `map` (an INSERT_FAIL_* slot) refused.
#[inline(always)]
pub fn count_insert_failed(map: u32) {
    if let Some(p) = INSERT_FAILED.get_ptr_mut(map) {
        // SAFETY: a per-CPU array slot, this CPU's alone.
        unsafe { *p += 1 };
    }
}

/// Counts a refused insert (`r`, an insert's result) into the map of
/// INSERT_FAIL_* slot `map`. An insert with BPF_NOEXIST that found its key
/// (-EEXIST) was not refused.
#[inline(always)]
pub fn check_insert(r: Result<(), i32>, map: u32) {
    if let Err(e) = r
        && e != -EEXIST
    {
        count_insert_failed(map);
    }
}

const EEXIST: i32 = 17;

/// Keys added to and removed from each LRU map, per CPU
/// (`sensor_common::lru_added`, `lru_removed`): user space tells its
/// evictions from them (`keysentry_map_evictions_total{map}`). Plain
/// per-CPU increments: a preempted LSM program may lose one, which makes
/// the count of evictions lower, never higher, for an added key.
#[map]
pub static LRU_CHURN: PerCpuArray<u64> = PerCpuArray::with_max_entries(LRU_SLOTS * 2, 0);

#[inline(always)]
fn churn(i: u32) {
    if let Some(p) = LRU_CHURN.get_ptr_mut(i) {
        // SAFETY: a per-CPU array slot, this CPU's alone.
        unsafe { *p += 1 };
    }
}

/// Inserts into the LRU map of LRU_* slot `slot`, counting a new key: the
/// key is added if absent, else its value replaced. Returns the insert's
/// result for `check_insert`.
#[inline(always)]
pub fn lru_insert<K, V>(map: &LruHashMap<K, V>, slot: u32, key: &K, value: &V) -> Result<(), i32> {
    match map.insert(key, value, BPF_NOEXIST) {
        Ok(()) => {
            churn(lru_added(slot));
            Ok(())
        }
        Err(e) if e == -EEXIST => map.insert(key, value, 0),
        Err(e) => Err(e),
    }
}

/// `lru_insert` for the per-CPU LRU map `FOLD` (its value on this CPU).
#[inline(always)]
pub fn lru_insert_percpu<K, V>(
    map: &LruPerCpuHashMap<K, V>,
    slot: u32,
    key: &K,
    value: &V,
) -> Result<(), i32> {
    match map.insert(key, value, BPF_NOEXIST) {
        Ok(()) => {
            churn(lru_added(slot));
            Ok(())
        }
        Err(e) if e == -EEXIST => map.insert(key, value, 0),
        Err(e) => Err(e),
    }
}

/// Removes a key from the LRU map of LRU_* slot `slot`, counted when it
/// was there.
#[inline(always)]
pub fn lru_remove<K, V>(map: &LruHashMap<K, V>, slot: u32, key: &K) {
    if map.remove(key).is_ok() {
        churn(lru_removed(slot));
    }
}

/// Counts a key added to the LRU map of slot `slot` by an insert the
/// caller made itself (with BPF_NOEXIST, which succeeded).
#[inline(always)]
pub fn lru_added_one(slot: u32) {
    churn(lru_added(slot));
}

/// Map update flag: insert only when the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// The watch entry of a key, a key directory or a tracked file (not of a
/// code-loading path: those are the open probes' alone, `any_watch_entry`),
/// unless it is stale.
#[inline(always)]
pub fn watch_entry(key: &InodeKey, inode: InodePtr) -> Option<*mut WatchEntry> {
    let w = any_watch_entry(key, inode)?;
    // SAFETY: a live map value.
    if unsafe { (*w).flags } & WATCH_CODE != 0 {
        return None;
    }
    Some(w)
}

/// The watch entry of an inode, code-loading paths' included, unless it is
/// stale: an entry stamped with an i_generation other than the inode's
/// belongs to a file that is gone, whose inode number a new file reuses. A
/// stale entry is removed (and counted) and never matches.
#[inline(always)]
pub fn any_watch_entry(key: &InodeKey, inode: InodePtr) -> Option<*mut WatchEntry> {
    let w = WATCHED.get_ptr_mut(key)?;
    // SAFETY: a map value pointer stays valid for the program's run (even
    // if the entry is removed meanwhile).
    unsafe {
        if (*w).flags & WATCH_IGEN != 0 {
            let g: u32 = inode.generation().unwrap_or(0);
            if g != (*w).igen {
                let _ = WATCHED.remove(key);
                count_stop(STOP_STALE_INODE);
                return None;
            }
        }
    }
    Some(w)
}

/// Submit flags of a record in `lane`: a critical record wakes user space
/// at once; the others wake it only when their ring holds more than its
/// threshold (`wakeup_bytes` for bulk, `lifecycle_wakeup_bytes`), and user
/// space also drains on a short timer. Waking user space per event would
/// cost the workload several microseconds per event.
#[inline(always)]
pub fn submit_flags(lane: Lane) -> u64 {
    let (ring, threshold) = match lane {
        Lane::Critical => return BPF_RB_FORCE_WAKEUP,
        Lane::Lifecycle => (&RB_LIFECYCLE, crate::setting!(lifecycle_wakeup_bytes)),
        Lane::Bulk => (&RB_BULK, crate::setting!(wakeup_bytes)),
    };
    if ring.query(BPF_RB_AVAIL_DATA) >= threshold as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// The current process's tgid, unless it is the sensor itself or the
/// programs are switched off (bench floor): the common first check of the
/// syscall probes.
#[inline(always)]
pub fn acting_tgid() -> Option<u32> {
    if crate::setting!(empty_programs) != 0 {
        return None;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == crate::setting!(self_pid) {
        return None;
    }
    Some(tgid)
}

/// The protected process that `pid` names, as a target: `pid` itself when
/// it is a protected tgid, the thread group of a thread of a protected
/// process (`PROTECTED_THREADS`), else None.
#[inline(always)]
pub fn protected_target(pid: u32) -> Option<u32> {
    if pid == 0 {
        return None;
    }
    // SAFETY: map values are read while the program runs.
    unsafe {
        if PROTECTED.get(pid).is_some() {
            return Some(pid);
        }
        let tgid = *PROTECTED_THREADS.get(pid)?;
        PROTECTED.get(tgid).map(|_| tgid)
    }
}

/// Is executable `exe` in `ALLOWED` for `scope` (a key path's watch id,
/// `ALLOW_ANY_KEY` or `ALLOW_MEMORY`) and `target`?
#[inline(always)]
pub fn allowed(exe: &InodeKey, scope: u32, target: Option<&InodeKey>) -> bool {
    // An allowance trusts the executable's image, not what is loaded into
    // it or what controls it: none while the process is traced, or since
    // it exec'd with loader variables (ALLOW_BYPASS).
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    if crate::kptr::TaskPtr::current()
        .ptrace()
        .is_none_or(|p| p != 0)
        || unsafe { ALLOW_BYPASS.get(tgid) }.is_some()
    {
        return false;
    }
    let mut k = AllowKey {
        dev: exe.dev,
        scope,
        ino: exe.ino,
        ..Default::default()
    };
    if let Some(t) = target {
        k.target_dev = t.dev;
        k.target_ino = t.ino;
    }
    unsafe { ALLOWED.get(k).is_some() }
}
