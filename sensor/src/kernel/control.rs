//! The user-space side of the kernel maps: `KernelMaps`, the maps the
//! pipeline writes (watched inodes and names, taint, the allowlist,
//! environment reads), with the key-path scan and allowlist updates that
//! fill them; `MapStats`, the maps user space only counts, for
//! `keysentry_map_entries` every 10 s.

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use sensor_common::{
    InodeKey, TAINT_FILE, TRACKED_PENDING, Taint, WATCH_IGEN, WATCH_SELF, WATCH_TRACKED,
    WatchEntry,
    names::{NameKey, name_key_of},
};

use crate::metrics::Metrics;

/// Kernel maps the agent writes.
pub(crate) struct KernelMaps {
    pub(crate) watched: BpfHashMap<MapData, InodeKey, WatchEntry>,
    pub(crate) names: BpfHashMap<MapData, NameKey, u32>,
    pub(crate) tainted: BpfHashMap<MapData, u32, Taint>,
    /// `[[allow]]` as the kernel checks it (LSM denials, and taint: an
    /// allowed key reader is not tainted).
    pub(crate) allowed: BpfHashMap<MapData, sensor_common::AllowKey, u32>,
    /// Environments each process read (proc-environ-read's lister count).
    pub(crate) environ: BpfHashMap<MapData, u32, u32>,
}

impl KernelMaps {
    /// Makes the kernel's `ALLOWED` hold exactly `keys` (start, SIGHUP).
    pub(crate) fn set_allowed(&mut self, keys: &[sensor_common::AllowKey]) {
        let old: Vec<sensor_common::AllowKey> = self.allowed.keys().flatten().collect();
        for k in old.iter().filter(|k| !keys.contains(k)) {
            let _ = self.allowed.remove(k);
        }
        for k in keys {
            if let Err(e) = self.allowed.insert(k, 1, 0) {
                tracing::warn!("allowlist map insert failed: {e}");
            }
        }
    }
}

/// The kernel maps user space only counts (their fill, every 10 s).
pub(crate) struct MapStats {
    pipes: BpfHashMap<MapData, u64, Taint>,
    written: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
    sent: BpfHashMap<MapData, [u64; 2], u32>,
    openers: BpfHashMap<MapData, u64, sensor_common::FileOpener>,
    received: BpfHashMap<MapData, [u64; 2], i32>,
    reported: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
}

/// Entries of a kernel hash map (one syscall per key).
pub(crate) fn count_keys<K: aya::Pod, V: aya::Pod>(m: &BpfHashMap<MapData, K, V>) -> i64 {
    m.keys().filter(|k| k.is_ok()).count() as i64
}

impl MapStats {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        Ok(Self {
            pipes: BpfHashMap::try_from(take("TAINTED_PIPES")?)?,
            written: BpfHashMap::try_from(take("WRITTEN")?)?,
            sent: BpfHashMap::try_from(take("SENT")?)?,
            openers: BpfHashMap::try_from(take("FILE_OPENERS")?)?,
            received: BpfHashMap::try_from(take("FD_RECEIVED")?)?,
            reported: BpfHashMap::try_from(take("FD_REPORTED")?)?,
        })
    }

    pub(crate) fn update(&self, metrics: &Metrics, k: Option<&KernelMaps>, protected: i64) {
        let set = |map: &str, n: i64| metrics.map_entries.with_label_values(&[map]).set(n);
        if let Some(k) = k {
            let tainted = count_keys(&k.tainted);
            metrics.tainted_processes.set(tainted);
            set("TAINTED", tainted);
            set("WATCHED", count_keys(&k.watched));
            set("WATCHED_NAMES", count_keys(&k.names));
            set("ENVIRON_READS", count_keys(&k.environ));
        }
        set("PROTECTED", protected);
        set("TAINTED_PIPES", count_keys(&self.pipes));
        set("WRITTEN", count_keys(&self.written));
        set("SENT", count_keys(&self.sent));
        set("FILE_OPENERS", count_keys(&self.openers));
        set("FD_RECEIVED", count_keys(&self.received));
        set("FD_REPORTED", count_keys(&self.reported));
    }
}

/// The narrow interface through which user space changes what the kernel
/// watches, taints and protects while it runs. The rules and the tracked-file
/// registry ask for actions here (track this inode, drop this taint); none of
/// them touches a map. Every action is a no-op when replaying (no kernel).
#[derive(Default)]
pub struct KernelControl {
    maps: Option<KernelMaps>,
    protected: Option<BpfHashMap<MapData, u32, u32>>,
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

    /// With the kernel's PROTECTED map.
    pub(crate) fn with_protected(mut self, protected: BpfHashMap<MapData, u32, u32>) -> Self {
        self.protected = Some(protected);
        self
    }

    /// Watches a key path's inode (the key-path scan's entries).
    pub fn watch_inode(&mut self, key: &InodeKey, entry: &WatchEntry) {
        if let Some(m) = self.maps.as_mut()
            && let Err(e) = m.watched.insert(key, entry, 0)
        {
            tracing::warn!("watch map insert failed: {e}");
        }
    }

    /// A name pattern key for the rename filter.
    pub fn watch_name_key(&mut self, key: &NameKey) {
        if let Some(m) = self.maps.as_mut() {
            let _ = m.names.insert(key, 1, 0);
        }
    }

    /// Makes the kernel's allowlist exactly `keys`.
    pub(crate) fn set_allowed(&mut self, keys: &[sensor_common::AllowKey]) {
        if let Some(m) = self.maps.as_mut() {
            m.set_allowed(keys);
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

    /// Attached to a kernel (false when replaying).
    pub fn is_live(&self) -> bool {
        self.maps.is_some()
    }

    /// The maps, for the map-fill metrics.
    pub(crate) fn maps(&self) -> Option<&KernelMaps> {
        self.maps.as_ref()
    }

    /// Entries of the kernel's PROTECTED map (0 when replaying).
    pub fn protected_entries(&self) -> i64 {
        self.protected.as_ref().map_or(0, count_keys)
    }

    /// Marks a process protected in the kernel (`rule`: the index of the
    /// `[[protected]]` entry that matched).
    pub fn protect(&mut self, pid: u32, rule: u32) {
        if let Some(m) = self.protected.as_mut()
            && let Err(e) = m.insert(pid, rule, 0)
        {
            tracing::debug!("protected map insert {pid}: {e}");
        }
    }

    pub fn unprotect(&mut self, pid: u32) {
        if let Some(m) = self.protected.as_mut()
            && let Err(e) = m.remove(&pid)
        {
            tracing::debug!("protected map remove {pid}: {e}");
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
        if let Err(e) = m.watched.insert(key, entry, 0) {
            tracing::warn!("tracking {path} in the kernel: {e}");
        }
        if let Some(name) = std::path::Path::new(path).file_name() {
            self.watch_name(name.as_encoded_bytes());
        }
    }

    /// A name that renames, links and unlinks are reported for.
    pub fn watch_name(&mut self, name: &[u8]) {
        if let Some(m) = self.maps.as_mut() {
            let _ = m.names.insert(name_key_of(name), 1, 0);
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
    /// user space did not register it: the mark goes.
    pub fn drop_pending(&mut self, kdev: u32, ino: u64) {
        if let Some(m) = self.maps.as_mut() {
            let key = inode_key(kdev, ino);
            if m.watched
                .get(&key, 0)
                .is_ok_and(|e| e.watch_id == TRACKED_PENDING)
            {
                let _ = m.watched.remove(&key);
            }
        }
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
            && m.tainted
                .get(&pid, 0)
                .is_ok_and(|t| t.flags == TAINT_FILE && (t.src_dev, t.src_ino) == (kdev, ino))
        {
            let _ = m.tainted.remove(&pid);
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
