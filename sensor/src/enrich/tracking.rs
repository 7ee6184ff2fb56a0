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

use sensor_common::{InodeKey, WATCH_IGEN, WATCH_SELF, WATCH_STRONG, WATCH_TRACKED, WatchEntry};

use crate::{
    alert::TrackedKind, enrich::context::Context, enrich::facts::KeyAccess, enrich::watch::kdev,
};

/// How long after a key was created its creator's uid may read it as its
/// own new key (`fresh_key`: `openssl req -key` right after `genpkey`).
pub const FRESH_KEY_NS: u64 = 600 * 1_000_000_000;

impl Context {
    /// A key file opened successfully: it is an origin of lineages. An
    /// open that created it registers who created it (a new key, not a
    /// stolen one), unless its writer turns out to be tainted (its write
    /// then makes it a copy).
    pub(crate) fn note_key(&mut self, k: &KeyAccess<'_>, allowed: bool) {
        if k.failed || k.ino == 0 {
            return;
        }
        let (_, stale) = self.registry.by_file(k.kdev, k.ino, k.igen);
        if let Some(t) = stale {
            self.untrack_in_kernel(&t);
        }
        let (id, new) = self.registry.register(
            k.kdev,
            k.ino,
            k.path.clone(),
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
            t.igen = Some(k.igen);
            if t.kind == TrackedKind::Key {
                if k.by_key_path {
                    t.watch = k.watch_id;
                }
                if new || k.created {
                    t.size = k.size;
                }
                if k.created {
                    t.created = Some((k.task.uid, k.task.ts_boot_ns));
                }
            }
        }
        // An allowlisted reader (the service that owns the key), or the
        // uid that just made the key, is not followed: its logs and TLS
        // traffic are not copies. Only a taint that is this key's alone
        // goes (a dump it read before keeps it followed).
        if allowed {
            self.kernel.drop_key_taint(k.task.pid, k.kdev, k.ino);
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
        let strong = if self.registry.strong_root(id) {
            WATCH_STRONG
        } else {
            0
        };
        if !self.kernel.is_live() {
            return;
        }
        let entry = WatchEntry {
            watch_id: id,
            flags: WATCH_SELF
                | WATCH_TRACKED
                | strong
                | if igen.is_some() { WATCH_IGEN } else { 0 },
            igen: igen.unwrap_or(0),
            generation,
        };
        self.kernel.track(entry, kdev, ino, path);
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// A key that left its key path (moved or linked out): its kernel entry
    /// becomes a tracked file's, so opens of it stay seen after the key
    /// path rescan drops it.
    pub(crate) fn track_moved_key(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        self.kernel.drop_key_entry(kdev, ino);
        self.track_in_kernel(id, kdev, ino, path);
        self.identify(id);
    }

    /// A tracked file is gone (its inode died, or was evicted): out of the
    /// kernel's watch map, unless the entry there is not the tracked one.
    pub(crate) fn untrack_in_kernel(&mut self, t: &crate::enrich::track::Tracked) {
        self.kernel.untrack(t.id, t.kdev, t.ino, t.igen);
        // Its pending copy, if any, is dropped (`Flows::prune`).
        self.untracked.push(t.id);
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// Key files no key path leads to any more (deleted, replaced, or moved
    /// out: a move is re-tracked when its rename is handled): their registry
    /// entries are kept for lineage, marked gone (evictable).
    pub(crate) fn keys_departed(&mut self, removed: &[InodeKey]) {
        for k in removed {
            let Some((id, path, handle, root)) = self
                .registry
                .by_inode(k.dev, k.ino)
                .filter(|t| t.kind == TrackedKind::Key)
                .map(|t| (t.id, t.path.clone(), t.handle.clone(), t.root.clone()))
            else {
                continue;
            };
            let retracked = self.kernel.tracks_as(k.dev, k.ino, id);
            if retracked {
                continue;
            }
            // Still alive under another name (a hard link made outside the
            // key path, then the key's own name removed): followed as a
            // tracked file from now on.
            if handle.and_then(|h| h.alive(root.as_deref(), Path::new(&path))) == Some(true) {
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
        self.metrics
            .map_evictions
            .with_label_values(&["tracked_files"])
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
        if !self.kernel.is_live() {
            return;
        }
        let Some(t) = self.registry.get(id) else {
            return;
        };
        let path = std::path::PathBuf::from(&t.path);
        let (kd, ino) = (t.kdev, t.ino);
        let mut root = None;
        let mut h = crate::enrich::handle::Handle::of_inode(None, &path, kd, ino);
        if h.is_none() && !crate::enrich::handle::reaches(None, &path, kd, ino) {
            // Not this namespace's file: its writer's (`enrich/roots.rs`).
            let mut chain = Vec::new();
            let mut cur = t.origin.as_ref().map(|o| o.pid);
            while let Some(pid) = cur.filter(|p| *p > 1 && chain.len() < 5) {
                chain.push(pid);
                cur = self.procs.get(pid).map(|p| p.ppid);
            }
            let cgroup = chain
                .first()
                .and_then(|p| self.procs.get(*p))
                .map_or(0, |p| p.cgroup_id);
            if let Some((r, rh)) = self.roots.find(&chain, cgroup, &path, kd, ino) {
                tracing::debug!("tracked {} is read from its writer's root", path.display());
                root = Some(r);
                h = rh;
            }
        }
        if let Some(t) = self.registry.get_mut(id) {
            t.handle = h;
            t.root = root;
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
                    .and_then(|h| h.alive(t.root.as_deref(), Path::new(&t.path)))
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
