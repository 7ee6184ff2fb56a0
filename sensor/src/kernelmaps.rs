//! The user-space side of the kernel maps: `KernelMaps`, the maps the
//! pipeline writes (watched inodes and names, taint, the allowlist,
//! environment reads), with the key-path scan and allowlist updates that
//! fill them; `MapStats`, the maps user space only counts, for
//! `keysentry_map_entries` every 10 s.

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use sensor_common::{InodeKey, Taint, WatchEntry, names::NameKey};

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

    /// Pushes a scan's new entries into the kernel. `initial`: the first
    /// scan (summarised); later ones log each new directory.
    pub(crate) fn apply(&mut self, delta: &crate::watch::ScanDelta, initial: bool) {
        for (k, v, _) in &delta.entries {
            if let Err(e) = self.watched.insert(k, v, 0) {
                tracing::warn!("watch map insert failed: {e}");
            }
        }
        // Once the probes are attached (not at the first scan: `stamp_all`
        // follows the attach), keysentry's own open of each new entry makes
        // the kernel stamp it with the inode's generation.
        if !initial {
            for (k, _, p) in &delta.entries {
                crate::handle::stamp(p, k.dev, k.ino);
            }
        }
        // Key files no key path leads to any more (deleted, or replaced by
        // a rename over them).
        for k in &delta.removed {
            if self
                .watched
                .get(k, 0)
                .is_ok_and(|e| e.flags & sensor_common::WATCH_TRACKED == 0)
            {
                let _ = self.watched.remove(k);
            }
        }
        for n in &delta.names {
            let _ = self.names.insert(n, 1, 0);
        }
        if !initial {
            for d in &delta.new_dirs {
                tracing::info!("watching new directory {}", d.display());
            }
            for p in &delta.appeared {
                tracing::info!("watching key path {}", p.display());
            }
        }
        if delta.overflow > 0 {
            tracing::warn!(
                "watch map full: {} inodes not watched (at most {})",
                delta.overflow,
                crate::watch::MAX_WATCHED
            );
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
