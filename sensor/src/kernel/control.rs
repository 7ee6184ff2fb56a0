//! The user-space side of the kernel maps: `KernelMaps`, the maps the
//! pipeline writes (watched inodes and names, taint, the allowlist,
//! environment reads), with the key-path scan and allowlist updates that
//! fill them; `MapStats`, the maps user space only counts, for
//! `keysentry_map_entries` (one map per step, each about every 10 s).

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use std::sync::atomic::{AtomicU64, Ordering};

use sensor_common::{
    INSERT_FAIL_ALLOW_EXES, INSERT_FAIL_ALLOWED, INSERT_FAIL_PROTECTED,
    INSERT_FAIL_PROTECTED_THREADS, INSERT_FAIL_SLOTS, INSERT_FAIL_WATCHED,
    INSERT_FAIL_WATCHED_NAMES, InodeKey, TAINT_FILE, TAINT_PIPE, TAINT_STRONG, TRACKED_PENDING,
    Taint, WATCH_IGEN, WATCH_SELF, WATCH_TRACKED, WatchEntry,
    names::{NameKey, name_key_of},
};

use crate::metrics::Metrics;

/// Inserts user space made into kernel maps that the maps refused, per
/// INSERT_FAIL_* slot: added to the kernel's own `INSERT_FAILED` counts
/// on each tick (`keysentry_map_insert_failures_total{map}` and its
/// warning, `agent::live`).
static USER_INSERT_FAILED: [AtomicU64; INSERT_FAIL_SLOTS as usize] =
    [const { AtomicU64::new(0) }; INSERT_FAIL_SLOTS as usize];

/// Counts an insert into the map of INSERT_FAIL_* slot `map` that failed.
pub(crate) fn count_insert_failed(map: u32) {
    if let Some(c) = USER_INSERT_FAILED.get(map as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Inserts into the map of slot `map` that user space saw refused, so far.
pub(crate) fn user_insert_failures(map: u32) -> u64 {
    USER_INSERT_FAILED
        .get(map as usize)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Counts a failed user-space insert (`r`) into the map of slot `map`;
/// `what` names the entry for the debug log (the warning is per tick).
fn check_insert(r: Result<(), aya::maps::MapError>, map: u32, what: impl std::fmt::Display) {
    if let Err(e) = r {
        count_insert_failed(map);
        tracing::debug!(
            "{} insert of {what}: {e}",
            sensor_common::INSERT_FAIL_MAPS[map as usize]
        );
    }
}

/// Kernel maps the agent writes.
pub(crate) struct KernelMaps {
    pub(crate) watched: BpfHashMap<MapData, InodeKey, WatchEntry>,
    pub(crate) names: BpfHashMap<MapData, NameKey, u32>,
    pub(crate) tainted: BpfHashMap<MapData, u32, Taint>,
    /// Strong taints that found `tainted` full.
    pub(crate) taint_reserve: BpfHashMap<MapData, u32, Taint>,
    /// `[[allow]]` as the kernel checks it (LSM denials, and taint: an
    /// allowed key reader is not tainted).
    pub(crate) allowed: BpfHashMap<MapData, sensor_common::AllowKey, u32>,
    /// Every `[[allow]]` executable: their execs are checked for loader
    /// variables and tracing (ALLOW_BYPASS).
    pub(crate) allow_exes: BpfHashMap<MapData, InodeKey, u32>,
    /// Environments each process read (proc-environ-read's lister count).
    pub(crate) environ: BpfHashMap<MapData, u32, u32>,
    /// Pipes a tainted process wrote (pipe address -> the writer's taint).
    pub(crate) pipes: BpfHashMap<MapData, u64, Taint>,
    /// The watch map's generations ([0] user space's): the kernel's open
    /// verdict cache forgets what it kept when one changes
    /// (sensor-ebpf/src/probes/verdict.rs).
    pub(crate) verdict_gen: aya::maps::Array<MapData, u64>,
    /// The block devices under the watched key stores (raw-read).
    pub(crate) raw_devs: BpfHashMap<MapData, u32, u32>,
    pub(crate) agent_socks: BpfHashMap<MapData, InodeKey, sensor_common::AgentSock>,
    /// Final components of the code-loading paths (files created under
    /// them are reported).
    pub(crate) code_names: BpfHashMap<MapData, NameKey, u32>,
}

impl KernelMaps {
    /// Inserts into WATCHED, then voids the kernel's cached open verdicts
    /// (a file opened before may be watched now).
    fn watch(&mut self, key: &InodeKey, entry: &WatchEntry) -> Result<(), aya::maps::MapError> {
        let r = self.watched.insert(key, entry, 0);
        self.void_verdicts();
        r
    }

    /// Voids the kernel's cached open verdicts (sensor-ebpf's verdict.rs):
    /// after any change that can turn an open that matched nothing into a
    /// match (an insert into WATCHED, new key-name patterns).
    fn void_verdicts(&mut self) {
        let g = self.verdict_gen.get(&0, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.verdict_gen.set(0, g, 0) {
            tracing::warn!("verdict generation: {e}");
        }
    }

    /// Makes the kernel's `ALLOWED` hold exactly `keys` (start, SIGHUP).
    pub(crate) fn set_allowed(&mut self, keys: &[sensor_common::AllowKey], exes: &[InodeKey]) {
        let old: Vec<sensor_common::AllowKey> = self.allowed.keys().flatten().collect();
        for k in old.iter().filter(|k| !keys.contains(k)) {
            let _ = self.allowed.remove(k);
        }
        for k in keys {
            check_insert(
                self.allowed.insert(k, 1, 0),
                INSERT_FAIL_ALLOWED,
                "an [[allow]] entry",
            );
        }
        let old: Vec<InodeKey> = self.allow_exes.keys().flatten().collect();
        for k in old.iter().filter(|k| !exes.contains(k)) {
            let _ = self.allow_exes.remove(k);
        }
        for k in exes {
            check_insert(
                self.allow_exes.insert(k, 1, 0),
                INSERT_FAIL_ALLOW_EXES,
                "an [[allow]] program",
            );
        }
    }
}

/// The kernel maps user space only counts, and those it fills at start
/// only.
pub(crate) struct MapStats {
    written: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
    writers: BpfHashMap<MapData, u32, u32>,
    sent: BpfHashMap<MapData, [u64; 2], u32>,
    openers: BpfHashMap<MapData, u64, sensor_common::FileOpener>,
    received: BpfHashMap<MapData, [u64; 2], i32>,
    reported: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
    bypass: BpfHashMap<MapData, u32, u32>,
    group_exited: BpfHashMap<MapData, u32, u64>,
    protected_exes: BpfHashMap<MapData, InodeKey, u32>,
    protected_comms: BpfHashMap<MapData, [u8; 16], u32>,
    /// The next map of `SAMPLED` to count.
    next: usize,
    /// TAINTED's last count (keysentry_tainted_processes adds TAINT_RESERVE).
    tainted: i64,
    /// The LRU maps' churn, for their evictions.
    lru: super::lru::LruChurn,
}

/// The kernel maps sampled into `keysentry_map_entries{map}`, one per
/// `MapStats::step` (the agent steps every 500 ms, so each is counted
/// about every 10 s; `FOLD` and `CRIT_RATE` are counted by the agent's
/// fold sweep, `agent/folds.rs`).
pub(crate) const SAMPLED: [&str; 20] = [
    "WATCHED",
    "WATCHED_NAMES",
    "TAINTED",
    "TAINT_RESERVE",
    "PROTECTED",
    "PROTECTED_THREADS",
    "ALLOW_BYPASS",
    "ENVIRON_READS",
    "GROUP_EXITED",
    "TAINTED_PIPES",
    "WRITTEN",
    "SENT",
    "FILE_OPENERS",
    "FD_RECEIVED",
    "FD_REPORTED",
    "ALLOWED",
    "ALLOW_EXES",
    "PROTECTED_EXES",
    "PROTECTED_COMMS",
    "WRITERS",
];

/// A kernel map's `max_entries`, as the kernel has it (0 if it cannot say).
pub(crate) fn capacity(m: &MapData) -> i64 {
    m.info().map_or(0, |i| i.max_entries() as i64)
}

/// Entries of a kernel hash map: one syscall per key, at most its
/// capacity (a key removed while the walk passes it restarts the walk, so
/// a map that changes fast cannot keep the count going).
pub(crate) fn count_keys<K: aya::Pod, V: aya::Pod>(m: &BpfHashMap<MapData, K, V>) -> i64 {
    use aya::maps::IterableMap;
    let cap = capacity(IterableMap::map(m)).max(1) as usize;
    m.keys().take(cap).filter(|k| k.is_ok()).count() as i64
}

/// A map's fill and capacity into `keysentry_map_entries{map}` and
/// `keysentry_map_capacity{map}`.
pub(crate) fn set_fill<K: aya::Pod, V: aya::Pod>(
    metrics: &Metrics,
    name: &str,
    m: &BpfHashMap<MapData, K, V>,
) -> i64 {
    use aya::maps::IterableMap;
    let n = count_keys(m);
    metrics.map_entries.with_label_values(&[name]).set(n);
    metrics
        .map_capacity
        .with_label_values(&[name])
        .set(capacity(IterableMap::map(m)));
    n
}

impl MapStats {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        Ok(Self {
            written: BpfHashMap::try_from(take("WRITTEN")?)?,
            writers: BpfHashMap::try_from(take("WRITERS")?)?,
            sent: BpfHashMap::try_from(take("SENT")?)?,
            openers: BpfHashMap::try_from(take("FILE_OPENERS")?)?,
            received: BpfHashMap::try_from(take("FD_RECEIVED")?)?,
            reported: BpfHashMap::try_from(take("FD_REPORTED")?)?,
            bypass: BpfHashMap::try_from(take("ALLOW_BYPASS")?)?,
            group_exited: BpfHashMap::try_from(take("GROUP_EXITED")?)?,
            protected_exes: BpfHashMap::try_from(take("PROTECTED_EXES")?)?,
            protected_comms: BpfHashMap::try_from(take("PROTECTED_COMMS")?)?,
            next: 0,
            tainted: 0,
            lru: super::lru::LruChurn::take(ebpf)?,
        })
    }

    /// The LRU maps' churn (FOLD and CRIT_RATE are sampled by the agent's
    /// fold sweep).
    pub(crate) fn lru(&mut self) -> &mut super::lru::LruChurn {
        &mut self.lru
    }

    /// Counts the next map of `SAMPLED` (its cost: one syscall per entry,
    /// at most the map's capacity: 65536 for WATCHED, 16384 or less for
    /// the others), an LRU map's evictions with it. Returns true when the
    /// round of all maps is done.
    pub(crate) fn step(&mut self, metrics: &Metrics, kernel: &KernelControl) -> bool {
        use sensor_common::{
            LRU_ENVIRON_READS, LRU_FD_RECEIVED, LRU_FD_REPORTED, LRU_FILE_OPENERS,
            LRU_GROUP_EXITED, LRU_SENT, LRU_TAINTED_PIPES, LRU_WRITTEN,
        };
        let name = SAMPLED[self.next % SAMPLED.len()];
        self.next = (self.next + 1) % SAMPLED.len();
        let set = |m: &str, n: i64| metrics.map_entries.with_label_values(&[m]).set(n);
        let k = kernel.maps();
        let lru = &mut self.lru;
        match name {
            "WATCHED" => k.map(|k| set_fill(metrics, name, &k.watched)),
            "WATCHED_NAMES" => k.map(|k| set_fill(metrics, name, &k.names)),
            "TAINTED" => k.map(|k| {
                self.tainted = set_fill(metrics, name, &k.tainted);
                self.tainted
            }),
            "TAINT_RESERVE" => k.map(|k| {
                let n = set_fill(metrics, name, &k.taint_reserve);
                metrics.tainted_processes.set(self.tainted + n);
                n
            }),
            "ENVIRON_READS" => k.map(|k| {
                lru.sample(metrics, LRU_ENVIRON_READS, || {
                    set_fill(metrics, name, &k.environ)
                })
            }),
            "ALLOWED" => k.map(|k| set_fill(metrics, name, &k.allowed)),
            "ALLOW_EXES" => k.map(|k| set_fill(metrics, name, &k.allow_exes)),
            "PROTECTED" => kernel
                .protected
                .as_ref()
                .map(|p| set_fill(metrics, name, &p.tgids)),
            "PROTECTED_THREADS" => kernel
                .protected
                .as_ref()
                .map(|p| set_fill(metrics, name, &p.threads)),
            "ALLOW_BYPASS" => Some(set_fill(metrics, name, &self.bypass)),
            "GROUP_EXITED" => Some(lru.sample(metrics, LRU_GROUP_EXITED, || {
                set_fill(metrics, name, &self.group_exited)
            })),
            "TAINTED_PIPES" => k.map(|k| {
                lru.sample(metrics, LRU_TAINTED_PIPES, || {
                    set_fill(metrics, name, &k.pipes)
                })
            }),
            "WRITTEN" => Some(lru.sample(metrics, LRU_WRITTEN, || {
                set_fill(metrics, name, &self.written)
            })),
            "WRITERS" => Some(set_fill(metrics, name, &self.writers)),
            "SENT" => Some(lru.sample(metrics, LRU_SENT, || set_fill(metrics, name, &self.sent))),
            "FILE_OPENERS" => Some(lru.sample(metrics, LRU_FILE_OPENERS, || {
                set_fill(metrics, name, &self.openers)
            })),
            "FD_RECEIVED" => Some(lru.sample(metrics, LRU_FD_RECEIVED, || {
                set_fill(metrics, name, &self.received)
            })),
            "FD_REPORTED" => Some(lru.sample(metrics, LRU_FD_REPORTED, || {
                set_fill(metrics, name, &self.reported)
            })),
            "PROTECTED_EXES" => Some(set_fill(metrics, name, &self.protected_exes)),
            "PROTECTED_COMMS" => Some(set_fill(metrics, name, &self.protected_comms)),
            _ => None,
        }
        .unwrap_or_else(|| {
            set(name, 0);
            0
        });
        self.next == 0
    }
}

/// The narrow interface through which user space changes what the kernel
/// watches, taints and protects while it runs. The rules and the tracked-file
/// registry ask for actions here (track this inode, drop this taint); none of
/// them touches a map. Every action is a no-op when replaying (no kernel).
#[derive(Default)]
pub struct KernelControl {
    maps: Option<KernelMaps>,
    protected: Option<ProtectedMaps>,
}

/// The kernel's protected set: PROTECTED (tgid -> rule) and
/// PROTECTED_THREADS (tid of a protected process's other threads -> tgid).
pub(crate) struct ProtectedMaps {
    pub(crate) tgids: BpfHashMap<MapData, u32, u32>,
    pub(crate) threads: BpfHashMap<MapData, u32, u32>,
}

/// The thread ids of process `pid` other than its leader's, from
/// /proc/<pid>/task (empty when it is gone).
fn other_threads(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tid| tid != pid)
        .collect()
}

fn inode_key(dev: u32, ino: u64) -> InodeKey {
    InodeKey { dev, _pad: 0, ino }
}

impl KernelControl {
    /// With the kernel's maps (live); `default()` is the replay's.
    pub(crate) fn new(maps: KernelMaps) -> Self {
        Self {
            maps: Some(maps),
            protected: None,
        }
    }

    /// With the kernel's PROTECTED and PROTECTED_THREADS maps.
    pub(crate) fn with_protected(mut self, protected: ProtectedMaps) -> Self {
        self.protected = Some(protected);
        self
    }

    /// Watches a key path's inode (the key-path scan's entries).
    pub fn watch_inode(&mut self, key: &InodeKey, entry: &WatchEntry) {
        if let Some(m) = self.maps.as_mut() {
            check_insert(
                m.watch(key, entry),
                INSERT_FAIL_WATCHED,
                format_args!("inode {}:{}", key.dev, key.ino),
            );
        }
    }

    /// A name pattern key for the rename filter.
    pub fn watch_name_key(&mut self, key: &NameKey) {
        if let Some(m) = self.maps.as_mut() {
            check_insert(
                m.names.insert(key, 1, 0),
                INSERT_FAIL_WATCHED_NAMES,
                "a name pattern",
            );
        }
    }

    /// Makes the kernel's allowlist exactly `keys`.
    /// Adds entries to the kernel's `ALLOWED` and `ALLOW_EXES` (a program
    /// replaced in place, `detect::allow_ids`); removes none.
    pub(crate) fn add_allowed(&mut self, keys: &[sensor_common::AllowKey], exes: &[InodeKey]) {
        if let Some(m) = self.maps.as_mut() {
            for k in keys {
                check_insert(
                    m.allowed.insert(k, 1, 0),
                    INSERT_FAIL_ALLOWED,
                    "an [[allow]] entry",
                );
            }
            for k in exes {
                check_insert(
                    m.allow_exes.insert(k, 1, 0),
                    INSERT_FAIL_ALLOW_EXES,
                    "an [[allow]] program",
                );
            }
        }
    }

    pub(crate) fn set_allowed(&mut self, keys: &[sensor_common::AllowKey], exes: &[InodeKey]) {
        if let Some(m) = self.maps.as_mut() {
            m.set_allowed(keys, exes);
        }
    }

    /// Drops every key-path entry of the watch map (the key paths changed);
    /// tracked files stay.
    pub(crate) fn clear_key_paths(&mut self) {
        if let Some(m) = self.maps.as_mut() {
            let stale: Vec<InodeKey> = m
                .watched
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(_, v)| v.flags & WATCH_TRACKED == 0)
                .map(|(k, _)| k)
                .collect();
            for k in &stale {
                let _ = m.watched.remove(k);
            }
        }
    }

    /// A block device under a watched key store: its opens are raw reads.
    /// Cached open verdicts are void (an open of it matched nothing).
    pub fn watch_raw_dev(&mut self, kdev: u32) {
        if let Some(m) = self.maps.as_mut() {
            if let Err(e) = m.raw_devs.insert(kdev, 1, 0) {
                tracing::warn!("RAW_DEVS insert of {}:{}: {e}", kdev >> 20, kdev & 0xfffff);
            }
            m.void_verdicts();
        }
    }

    /// The final components of the code-loading paths: a file created
    /// under one of those names is reported (`CodeWrite`).
    pub fn watch_code_names(&mut self, paths: &[std::path::PathBuf]) {
        use std::os::unix::ffi::OsStrExt;
        if paths.is_empty() {
            return;
        }
        if let Some(m) = self.maps.as_mut() {
            // Each path's name, and the name of the file a symlink there
            // leads to.
            let real = paths.iter().filter_map(|p| std::fs::canonicalize(p).ok());
            let all: Vec<std::path::PathBuf> = paths.iter().cloned().chain(real).collect();
            for p in &all {
                let Some(name) = p.file_name() else { continue };
                let key = sensor_common::names::name_key_of(name.as_bytes());
                if let Err(e) = m.code_names.insert(key, 1, 0) {
                    tracing::warn!("CODE_NAMES insert of {}: {e}", p.display());
                }
            }
            m.void_verdicts();
        }
    }

    /// A key agent's socket: connections to it by others are reported.
    pub fn watch_agent_sock(&mut self, key: InodeKey, v: sensor_common::AgentSock) {
        if let Some(m) = self.maps.as_mut() {
            check_insert(
                m.agent_socks.insert(key, v, 0),
                sensor_common::INSERT_FAIL_AGENT_SOCKS,
                "a key agent's socket",
            );
        }
    }

    /// A key agent's socket no agent holds any more.
    pub fn forget_agent_sock(&mut self, key: &InodeKey) {
        if let Some(m) = self.maps.as_mut() {
            let _ = m.agent_socks.remove(key);
        }
    }

    /// The kernel's name patterns changed: cached open verdicts are void.
    pub(crate) fn void_verdicts(&mut self) {
        if let Some(m) = self.maps.as_mut() {
            m.void_verdicts();
        }
    }

    /// Attached to a kernel (false when replaying).
    pub fn is_live(&self) -> bool {
        self.maps.is_some()
    }

    /// The maps, for the map-fill metrics.
    pub(crate) fn maps(&self) -> Option<&KernelMaps> {
        self.maps.as_ref()
    }

    /// Marks a process protected in the kernel (`rule`: the index of the
    /// `[[protected]]` entry that matched), and its threads: the kernel
    /// adds the threads it starts from now on (the process is in PROTECTED
    /// first), this adds those it has already (a process protected at
    /// start, by a pid file or by a rename), so that any of its thread ids
    /// names it.
    pub fn protect(&mut self, pid: u32, rule: u32) {
        let Some(m) = self.protected.as_mut() else {
            return;
        };
        check_insert(
            m.tgids.insert(pid, rule, 0),
            INSERT_FAIL_PROTECTED,
            format_args!("process {pid}"),
        );
        for tid in other_threads(pid) {
            if let Err(e) = m.threads.insert(tid, pid, 0) {
                check_insert(
                    Err(e),
                    INSERT_FAIL_PROTECTED_THREADS,
                    format_args!("thread {tid} of {pid}"),
                );
                break;
            }
        }
    }

    /// Whether the kernel has the process as a key holder (None without a
    /// kernel: a replay).
    pub fn is_holder(&self, pid: u32) -> Option<bool> {
        let m = self.protected.as_ref()?;
        Some(
            m.tgids
                .get(&pid, 0)
                .is_ok_and(|r| r == sensor_common::HOLDER_RULE),
        )
    }

    /// Lifts a process's protection in the kernel, with its threads'
    /// entries.
    pub fn unprotect(&mut self, pid: u32) {
        let Some(m) = self.protected.as_mut() else {
            return;
        };
        if let Err(e) = m.tgids.remove(&pid) {
            tracing::debug!("protected map remove {pid}: {e}");
        }
        for tid in other_threads(pid) {
            if m.threads.get(&tid, 0).is_ok_and(|g| g == pid) {
                let _ = m.threads.remove(&tid);
            }
        }
    }

    /// Watches a tracked file (opens of it are reported, reads taint) and
    /// its name in the rename filter. Never replaces a key path's entry (a
    /// dump registered over a key's inode stays a key to the kernel).
    pub fn track(&mut self, entry: WatchEntry, kdev: u32, ino: u64, path: &str) {
        let Some(m) = self.maps.as_mut() else {
            return;
        };
        let key = inode_key(kdev, ino);
        if m.watched
            .get(&key, 0)
            .is_ok_and(|e| e.flags & WATCH_TRACKED == 0 && e.flags & WATCH_SELF != 0)
        {
            return;
        }
        check_insert(m.watch(&key, &entry), INSERT_FAIL_WATCHED, path);
        if let Some(name) = std::path::Path::new(path).file_name() {
            self.watch_name(name.as_encoded_bytes());
        }
    }

    /// A name that renames, links and unlinks are reported for.
    pub fn watch_name(&mut self, name: &[u8]) {
        if let Some(m) = self.maps.as_mut() {
            check_insert(
                m.names.insert(name_key_of(name), 1, 0),
                INSERT_FAIL_WATCHED_NAMES,
                String::from_utf8_lossy(name),
            );
        }
    }

    /// Drops the key-path entry of an inode (not a tracked file's): a key
    /// that moved out of its key path, about to be tracked instead.
    pub fn drop_key_entry(&mut self, kdev: u32, ino: u64) {
        if let Some(m) = self.maps.as_mut() {
            let key = inode_key(kdev, ino);
            if m.watched
                .get(&key, 0)
                .is_ok_and(|e| e.flags & WATCH_TRACKED == 0)
            {
                let _ = m.watched.remove(&key);
            }
        }
    }

    /// A tracked file is gone: its entry leaves the watch map, or the
    /// kernel's pending entry for that inode; never an entry of a new file
    /// that reused the number.
    pub fn untrack(&mut self, id: u32, kdev: u32, ino: u64, igen: Option<u32>) {
        if let Some(m) = self.maps.as_mut() {
            let key = inode_key(kdev, ino);
            if m.watched.get(&key, 0).is_ok_and(|e| {
                e.flags & WATCH_TRACKED != 0
                    && (e.watch_id == id
                        || (e.watch_id == TRACKED_PENDING
                            && igen.is_none_or(|g| e.flags & WATCH_IGEN == 0 || e.igen == g)))
            }) {
                let _ = m.watched.remove(&key);
            }
        }
    }

    /// The kernel marked a file tracked at its first write (pending id) and
    /// user space did not register it: the mark goes. Returns the entry's
    /// inode generation (`None` for none, or when there was no pending mark).
    pub fn drop_pending(&mut self, kdev: u32, ino: u64) -> Option<Option<u32>> {
        let m = self.maps.as_mut()?;
        let key = inode_key(kdev, ino);
        let e = m.watched.get(&key, 0).ok()?;
        if e.watch_id != TRACKED_PENDING {
            return None;
        }
        m.watched.remove(&key).ok()?;
        Some((e.flags & WATCH_IGEN != 0).then_some(e.igen))
    }

    /// A pending file turned out to be no copy, but the kernel followed its
    /// readers while it was pending: taints whose only source is that file
    /// (file or pipe taint, same inode generation) leave `TAINTED`,
    /// `TAINT_RESERVE` and `TAINTED_PIPES`, so the readers, their children
    /// and the pipes they wrote stop carrying a source nobody tracks.
    /// Returns how many went.
    pub fn drop_taint_from(&mut self, kdev: u32, ino: u64, igen: Option<u32>) -> u64 {
        let Some(m) = self.maps.as_mut() else {
            return 0;
        };
        let only_from = |t: &Taint| {
            t.flags & !TAINT_STRONG != 0
                && t.flags & !(TAINT_STRONG | TAINT_FILE | TAINT_PIPE) == 0
                && (t.src_dev, t.src_ino) == (kdev, ino)
                && igen.is_none_or(|g| t.src_igen == g)
        };
        fn sweep<K: aya::Pod + Eq>(
            map: &mut BpfHashMap<MapData, K, Taint>,
            only_from: &impl Fn(&Taint) -> bool,
        ) -> u64 {
            use aya::maps::IterableMap;
            let cap = capacity(IterableMap::map(map)).max(1) as usize;
            let gone: Vec<K> = map
                .iter()
                .take(cap)
                .flatten()
                .filter(|(_, t)| only_from(t))
                .map(|(k, _)| k)
                .collect();
            // Read again just before the removal: an entry the kernel
            // changed since the walk (the process read a real key meanwhile)
            // stays. (The kernel can still change it between this read and
            // the removal; the window is one syscall, not the whole walk.)
            gone.iter()
                .filter(|k| map.get(k, 0).is_ok_and(|t| only_from(&t)) && map.remove(k).is_ok())
                .count() as u64
        }
        let pipes = sweep(&mut m.pipes, &only_from);
        super::lru::count_removed(sensor_common::LRU_TAINTED_PIPES, pipes);
        sweep(&mut m.tainted, &only_from) + sweep(&mut m.taint_reserve, &only_from) + pipes
    }

    /// Whether the kernel follows this inode as the tracked file `id`.
    pub fn tracks_as(&self, kdev: u32, ino: u64, id: u32) -> bool {
        self.maps.as_ref().is_some_and(|m| {
            m.watched
                .get(&inode_key(kdev, ino), 0)
                .is_ok_and(|e| e.flags & WATCH_TRACKED != 0 && e.watch_id == id)
        })
    }

    /// Drops a process's taint when its only source is this one key file
    /// (an allowed reader, or the uid that just made the key).
    pub fn drop_key_taint(&mut self, pid: u32, kdev: u32, ino: u64) {
        if let Some(m) = self.maps.as_mut()
            && m.tainted.get(&pid, 0).is_ok_and(|t| {
                t.flags & !TAINT_STRONG == TAINT_FILE && (t.src_dev, t.src_ino) == (kdev, ino)
            })
        {
            let _ = m.tainted.remove(&pid);
        }
        // Or in the reserve, where a strong taint goes when TAINTED is full.
        if let Some(m) = self.maps.as_mut()
            && m.taint_reserve.get(&pid, 0).is_ok_and(|t| {
                t.flags & !TAINT_STRONG == TAINT_FILE && (t.src_dev, t.src_ino) == (kdev, ino)
            })
        {
            let _ = m.taint_reserve.remove(&pid);
        }
    }

    /// The environments a process read, as the kernel counted them.
    pub fn environ_reads(&self, pid: u32) -> u32 {
        self.maps
            .as_ref()
            .and_then(|m| m.environ.get(&pid, 0).ok())
            .unwrap_or(0)
    }
}
