//! The tracked-file registry's life in the kernel: keys seen opened,
//! dumps and copies enter the `WATCHED` map (with their inode generation
//! and taint generation), and leave it when their last name goes away
//! (file handles tell), when evicted, or when their inode number is reused
//! by a new file; key path rescans hand keys moved out of their path over
//! to tracking.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sensor_common::{
    InodeKey, MATCH_INODE, MATCH_PARENT, TAINT_FILE, TRACKED_PENDING, WATCH_IGEN, WATCH_SELF,
    WATCH_TRACKED, WatchEntry, names::name_key_of,
};

use crate::{alert::TrackedKind, decode::open::OpenRecord, pipeline::Pipeline, watch::kdev};

/// How long after a key was created its creator's uid may read it as its
/// own new key (`fresh_key`: `openssl req -key` right after `genpkey`).
pub const FRESH_KEY_NS: u64 = 600 * 1_000_000_000;

impl Pipeline {
    /// A key file opened successfully: it is an origin of lineages. An
    /// open that created it registers who created it (a new key, not a
    /// stolen one), unless its writer turns out to be tainted (its write
    /// then makes it a copy).
    pub(crate) fn note_key(&mut self, rec: &OpenRecord, path: &str, allowed: bool) {
        if rec.failed || rec.ino == 0 {
            return;
        }
        let (_, stale) = self.registry.by_file(rec.dev, rec.ino, rec.igen);
        if let Some(t) = stale {
            self.untrack_in_kernel(&t);
        }
        let (id, new) = self.registry.register(
            rec.dev,
            rec.ino,
            path.to_string(),
            TrackedKind::Key,
            "key",
            None,
            None,
            None,
        );
        if new {
            self.identify(id);
        }
        if let Some(t) = self.registry.get_mut(id) {
            t.igen = Some(rec.igen);
            if t.kind == TrackedKind::Key {
                if rec.matched & (MATCH_INODE | MATCH_PARENT) != 0 {
                    t.watch = Some(rec.watch_id);
                }
                if new || rec.created() {
                    t.size = rec.size;
                }
                if rec.created() {
                    t.created = Some((rec.task.uid, rec.task.ts_boot_ns));
                }
            }
        }
        // An allowlisted reader (the service that owns the key), or the
        // uid that just made the key, is not followed: its logs and TLS
        // traffic are not copies. Only a taint that is this key's alone
        // goes (a dump it read before keeps it followed).
        if allowed
            && let Some(m) = self.kmaps.as_mut()
            && m.tainted.get(&rec.task.pid, 0).is_ok_and(|t| {
                t.flags == TAINT_FILE && (t.src_dev, t.src_ino) == (rec.dev, rec.ino)
            })
        {
            let _ = m.tainted.remove(&rec.task.pid);
        }
    }

    /// Is `actor` reading the key `id` as a benign reader: a key its uid
    /// created in the last ten minutes (`fresh_key`)?
    pub(crate) fn fresh_own_key(&self, id: u32, uid: u32, now_ns: u64) -> bool {
        self.registry
            .get(id)
            .and_then(|t| t.created)
            .is_some_and(|(u, at)| u == uid && now_ns.saturating_sub(at) < FRESH_KEY_NS)
    }

    /// Puts a tracked file in the kernel's watch map (opens of it are
    /// reported, reads taint) and its name in the rename filter. Never
    /// replaces a key path's entry (a dump registered over a key's inode
    /// stays a key to the kernel).
    pub(crate) fn track_in_kernel(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        let (igen, generation) = self
            .registry
            .get(id)
            .map_or((None, 0), |t| (t.igen, t.generation));
        let Some(m) = self.kmaps.as_mut() else {
            return;
        };
        let key = InodeKey {
            dev: kdev,
            _pad: 0,
            ino,
        };
        if m.watched
            .get(&key, 0)
            .is_ok_and(|e| e.flags & WATCH_TRACKED == 0 && e.flags & WATCH_SELF != 0)
        {
            return;
        }
        let entry = WatchEntry {
            watch_id: id,
            flags: WATCH_SELF | WATCH_TRACKED | if igen.is_some() { WATCH_IGEN } else { 0 },
            igen: igen.unwrap_or(0),
            generation,
        };
        if let Err(e) = m.watched.insert(key, entry, 0) {
            tracing::warn!("tracking {path} in the kernel: {e}");
        }
        if let Some(name) = Path::new(path).file_name() {
            let _ = m.names.insert(name_key_of(name.as_encoded_bytes()), 1, 0);
        }
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// A key that left its key path (moved or linked out): its kernel entry
    /// becomes a tracked file's, so opens of it stay seen after the key
    /// path rescan drops it.
    pub(crate) fn track_moved_key(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        if let Some(m) = self.kmaps.as_mut() {
            let key = InodeKey {
                dev: kdev,
                _pad: 0,
                ino,
            };
            if m.watched
                .get(&key, 0)
                .is_ok_and(|e| e.flags & WATCH_TRACKED == 0)
            {
                let _ = m.watched.remove(&key);
            }
        }
        self.track_in_kernel(id, kdev, ino, path);
        self.identify(id);
    }

    /// A tracked file is gone (its inode died, or was evicted): out of the
    /// kernel's watch map, unless the entry there is not the tracked one.
    pub(crate) fn untrack_in_kernel(&mut self, t: &crate::track::Tracked) {
        if let Some(m) = self.kmaps.as_mut() {
            let key = InodeKey {
                dev: t.kdev,
                _pad: 0,
                ino: t.ino,
            };
            // Its own entry, or the kernel's pending entry for that inode;
            // never an entry of a new file that reused the number.
            if m.watched.get(&key, 0).is_ok_and(|e| {
                e.flags & WATCH_TRACKED != 0
                    && (e.watch_id == t.id
                        || (e.watch_id == TRACKED_PENDING
                            && t.igen
                                .is_none_or(|g| e.flags & WATCH_IGEN == 0 || e.igen == g)))
            }) {
                let _ = m.watched.remove(&key);
            }
        }
        self.pending_copies.retain(|c| c.id != t.id);
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// Key files no key path leads to any more (deleted, replaced, or moved
    /// out: a move is re-tracked when its rename is handled): their registry
    /// entries are kept for lineage, marked gone (evictable).
    pub(crate) fn keys_departed(&mut self, removed: &[InodeKey]) {
        for k in removed {
            let Some((id, path, handle)) = self
                .registry
                .by_inode(k.dev, k.ino)
                .filter(|t| t.kind == TrackedKind::Key)
                .map(|t| (t.id, t.path.clone(), t.handle.clone()))
            else {
                continue;
            };
            let retracked = self.kmaps.as_ref().is_some_and(|m| {
                m.watched
                    .get(k, 0)
                    .is_ok_and(|e| e.flags & WATCH_TRACKED != 0 && e.watch_id == id)
            });
            if retracked {
                continue;
            }
            // Still alive under another name (a hard link made outside the
            // key path, then the key's own name removed): followed as a
            // tracked file from now on.
            if handle.and_then(|h| h.alive(Path::new(&path))) == Some(true) {
                self.track_in_kernel(id, k.dev, k.ino, &path);
                continue;
            }
            if let Some(t) = self.registry.get_mut(id) {
                t.gone = true;
            }
        }
    }

    /// Kernel entries of files the registry evicted (it was full).
    pub(crate) fn drop_evicted(&mut self) {
        let gone = self.registry.take_evicted();
        if gone.is_empty() {
            return;
        }
        self.metrics
            .flow_stopped
            .with_label_values(&["eviction"])
            .inc_by(gone.len() as u64);
        for t in &gone {
            self.untrack_in_kernel(t);
        }
    }

    /// A tracked file's size now, read through its path only when the
    /// path still leads to the same inode, never following a link
    /// (recorded for replay).
    pub(crate) fn size_fact(&mut self, id: u32) -> i64 {
        let Some(t) = self.registry.get(id) else {
            return 0;
        };
        let (path, kd, ino) = (PathBuf::from(&t.path), t.kdev, t.ino);
        self.view
            .value(
                format!("size:{kd}:{ino}"),
                || match std::fs::symlink_metadata(&path) {
                    Ok(md) if md.is_file() && kdev(md.dev()) == kd && md.ino() == ino => {
                        md.len().into()
                    }
                    _ => 0.into(),
                },
            )
            .as_i64()
            .unwrap_or(0)
    }

    /// A dump or copy just registered: its file handle (to tell later
    /// whether it still exists), taken through an O_PATH open that also
    /// makes the kernel stamp its watch entry. Live only.
    pub(crate) fn identify(&mut self, id: u32) {
        if self.kmaps.is_none() {
            return;
        }
        let Some(t) = self.registry.get(id) else {
            return;
        };
        let h = crate::handle::Handle::of_inode(Path::new(&t.path), t.kdev, t.ino);
        if let Some(t) = self.registry.get_mut(id) {
            t.handle = h;
        }
    }

    /// A name of a tracked file went away (an unlink, or a rename over
    /// it). The path the event names is resolved late and may be relative
    /// to a directory fd of an exited process, so candidates are the
    /// tracked files with that final name, and the inode decides: a file
    /// whose handle no longer opens (ESTALE: no name left) leaves the
    /// kernel's watch map (its inode number may be reused). Its registry
    /// entry stays, marked gone, so copies made by processes that read it
    /// before keep their lineage; a reused inode number never matches it
    /// (inode generation), and eviction ends it. `keep`: the inode that now
    /// has the name (a rename's source).
    pub(crate) fn name_gone(&mut self, name: &str, keep: Option<(u32, u64)>) {
        let Some(name) = Path::new(name).file_name() else {
            return;
        };
        for id in self.registry.named(name) {
            let Some(t) = self.registry.get(id).cloned() else {
                continue;
            };
            if Some((t.kdev, t.ino)) == keep || t.kind == TrackedKind::Key || t.gone {
                // Keys: the key path watcher's rescan follows them.
                continue;
            }
            let alive = self.view.value(format!("alive:{}:{}", t.kdev, t.ino), || {
                t.handle
                    .as_ref()
                    .and_then(|h| h.alive(Path::new(&t.path)))
                    .map_or(serde_json::Value::Null, serde_json::Value::Bool)
            });
            tracing::debug!(
                "a name of tracked {} went away: alive {alive} (handle {})",
                t.path,
                t.handle.is_some()
            );
            // Unknown (no handle on this filesystem): keep following it.
            if alive.as_bool() != Some(false) {
                continue;
            }
            self.untrack_in_kernel(&t);
            if let Some(t) = self.registry.get_mut(id) {
                t.gone = true;
            }
            self.metrics
                .flow_stopped
                .with_label_values(&["deleted"])
                .inc();
        }
    }
}
