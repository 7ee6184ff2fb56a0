//! The user-space side of the kernel maps: `KernelMaps`, the maps the
//! pipeline writes (watched inodes and names, taint, the allowlist,
//! environment reads), with the key-path scan and allowlist updates that
//! fill them (`MapStats`, the maps user space only counts, is in
//! `mapstats.rs`).

use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData};
use std::sync::atomic::{AtomicU64, Ordering};

use sensor_common::{
    INSERT_FAIL_ALLOW_EXES, INSERT_FAIL_ALLOWED, INSERT_FAIL_PROTECTED,
    INSERT_FAIL_PROTECTED_THREADS, INSERT_FAIL_SLOTS, INSERT_FAIL_WATCHED,
    INSERT_FAIL_WATCHED_NAMES, InodeKey, TAINT_FILE, TAINT_PIPE, TAINT_STRONG, TRACKED_PENDING,
    Taint, WATCH_IGEN, WATCH_SELF, WATCH_TRACKED, WatchEntry,
    names::{NameKey, name_key_of},
};

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

/// The narrow interface through which user space changes what the kernel
/// watches, taints and protects while it runs. The rules and the tracked-file
/// registry ask for actions here (track this inode, drop this taint); none of
/// them touches a map. Every action is a no-op when replaying (no kernel).
#[derive(Default)]
pub struct KernelControl {
    maps: Option<KernelMaps>,
    pub(super) protected: Option<ProtectedMaps>,
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
            let cap = super::mapstats::capacity(IterableMap::map(map)).max(1) as usize;
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
