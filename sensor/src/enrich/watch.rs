//! Key paths: which inodes the kernel watches. Each configured key_path is
//! walked; files go into the kernel's WATCHED map as themselves, directories
//! as "children watched" (so files created in them later match at once), and
//! the names of watched files go into WATCHED_NAMES (the filter for failed
//! opens). inotify on the watched directories triggers a rescan when
//! something is created or moved in, and paths that do not exist yet are
//! picked up when they appear.

use std::{
    collections::{HashMap, HashSet},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use sensor_common::{InodeKey, WATCH_CHILDREN, WATCH_CODE, WATCH_SELF, WatchEntry, names::NameKey};

pub use super::devnum::{kdev, st_dev};

pub fn inode_key(md: &std::fs::Metadata) -> InodeKey {
    InodeKey {
        dev: kdev(md.dev()),
        _pad: 0,
        ino: md.ino(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub watch_id: u32,
    pub flags: u32,
    /// One path under which it was found (inside `ns` when set).
    pub path: PathBuf,
    /// The mount namespace (nsfs inode) whose scope-"all" key path names
    /// it; None: a host key path (`enrich/nskeys.rs`).
    pub ns: Option<u64>,
}

/// Most inodes put in the kernel map (its size).
pub const MAX_WATCHED: usize = 65536;

#[derive(Default, Debug)]
pub struct ScanDelta {
    /// New entries, with the path each was found under (keysentry opens it
    /// once so the kernel stamps the entry with the inode's generation).
    pub entries: Vec<(InodeKey, WatchEntry, PathBuf)>,
    /// Entries whose inode no key path leads to any more (a key file
    /// deleted, or replaced by a rename over it): out of the kernel map.
    pub removed: Vec<InodeKey>,
    pub names: Vec<NameKey>,
    /// key_paths that exist now but did not at the previous scan.
    pub appeared: Vec<PathBuf>,
    /// Directories newly watched.
    pub new_dirs: Vec<PathBuf>,
    /// Entries not added because the map is full.
    pub overflow: usize,
    /// "key path" or "code path" (the logs).
    pub what: &'static str,
}

impl ScanDelta {
    /// Leaves out the entries `other` watches already (a code path that is
    /// also a key path stays a key: one entry per inode in the kernel).
    pub fn without(mut self, other: &Watcher) -> Self {
        self.entries.retain(|(k, _, _)| other.get(k).is_none());
        self.removed.retain(|k| other.get(k).is_none());
        self
    }

    /// Pushes a scan's new entries into the kernel. `initial`: the first
    /// scan (summarised); later ones log each new directory.
    pub fn push(&self, kernel: &mut crate::kernel::control::KernelControl, initial: bool) {
        for (k, v, _) in &self.entries {
            kernel.watch_inode(k, v);
        }
        // Once the probes are attached (not at the first scan: `stamp_all`
        // follows the attach), keysentry's own open of each new entry makes
        // the kernel stamp it with the inode's generation.
        if !initial {
            for (k, _, p) in &self.entries {
                crate::enrich::handle::stamp(p, k.dev, k.ino);
            }
        }
        // Key files no key path leads to any more (deleted, or replaced by
        // a rename over them).
        for k in &self.removed {
            kernel.drop_key_entry(k.dev, k.ino);
        }
        for n in &self.names {
            kernel.watch_name_key(n);
        }
        if !initial {
            for d in &self.new_dirs {
                tracing::info!("watching new directory {}", d.display());
            }
            for p in &self.appeared {
                tracing::info!("watching {} {}", self.what, p.display());
            }
        }
        if self.overflow > 0 {
            tracing::warn!(
                "watch map full: {} inodes not watched (at most {})",
                self.overflow,
                MAX_WATCHED
            );
        }
    }
}

pub struct Watcher {
    roots: Vec<PathBuf>,
    present: Vec<bool>,
    index: HashMap<InodeKey, Watched>,
    names: HashSet<NameKey>,
    /// Entries a rescan dropped lately (a key moved out of its key path is
    /// reported as a rename that may be handled after the rescan).
    departed: HashMap<InodeKey, Watched>,
    /// Bits added to every entry's flags (`WATCH_CODE` for the code paths).
    extra: u32,
}

/// Most departed entries remembered.
const DEPARTED: usize = 1024;

impl Watcher {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        let n = roots.len();
        Self {
            roots,
            present: vec![false; n],
            index: HashMap::new(),
            names: HashSet::new(),
            departed: HashMap::new(),
            extra: 0,
        }
    }

    /// The code-loading paths (`[tamper] code_paths`): entries flagged
    /// `WATCH_CODE`, whose `watch_id` indexes the code paths.
    pub fn code(roots: Vec<PathBuf>) -> Self {
        Self {
            extra: WATCH_CODE,
            ..Self::new(roots)
        }
    }

    /// One more root (a file a key holder runs): its id is the next.
    /// False when it is a root already.
    pub fn add_root(&mut self, root: PathBuf) -> bool {
        if self.roots.contains(&root) {
            return false;
        }
        self.roots.push(root);
        self.present.push(false);
        true
    }

    /// The root `watch_id` names.
    pub fn root(&self, watch_id: u32) -> Option<&Path> {
        self.roots.get(watch_id as usize).map(PathBuf::as_path)
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, key: &InodeKey) -> Option<&Watched> {
        self.index.get(key)
    }

    /// A watched inode, or one a rescan dropped lately (moved out of its
    /// key path, or deleted).
    pub fn get_or_departed(&self, key: &InodeKey) -> Option<&Watched> {
        self.index.get(key).or_else(|| self.departed.get(key))
    }

    /// Every watched inode.
    pub fn entries(&self) -> impl Iterator<Item = (&InodeKey, &Watched)> {
        self.index.iter()
    }

    /// Missing key paths.
    pub fn missing(&self) -> Vec<&Path> {
        self.roots
            .iter()
            .zip(&self.present)
            .filter(|(_, p)| !**p)
            .map(|(r, _)| r.as_path())
            .collect()
    }

    /// Walks every key path; returns what is new since the last scan and
    /// what is gone.
    pub fn scan(&mut self) -> ScanDelta {
        let mut delta = ScanDelta {
            what: if self.extra & WATCH_CODE != 0 {
                "code path"
            } else {
                "key path"
            },
            ..Default::default()
        };
        let mut seen = HashSet::new();
        for id in 0..self.roots.len() {
            let root = self.roots[id].clone();
            let Ok(md) = std::fs::metadata(&root) else {
                // A missing path's name goes in the name filter all the
                // same: a rename or link that makes it is then reported.
                if let Some(name) = root.file_name() {
                    let nk = sensor_common::names::name_key_of(name.as_bytes());
                    if self.names.insert(nk) {
                        delta.names.push(nk);
                    }
                }
                continue;
            };
            if !self.present[id] {
                self.present[id] = true;
                delta.appeared.push(root.clone());
            }
            // A root that is a symlink: the name of the file it leads to
            // too (a rename onto the real loader, not onto /lib64's link).
            if let Some(name) = std::fs::canonicalize(&root)
                .ok()
                .and_then(|c| c.file_name().map(|n| n.to_os_string()))
            {
                let nk = sensor_common::names::name_key_of(name.as_bytes());
                if self.names.insert(nk) {
                    delta.names.push(nk);
                }
            }
            if md.is_dir() {
                for entry in walkdir::WalkDir::new(&root)
                    .follow_links(false)
                    .into_iter()
                    .flatten()
                {
                    let Ok(md) = std::fs::metadata(entry.path()) else {
                        continue;
                    };
                    let flags = if md.is_dir() {
                        WATCH_CHILDREN
                    } else {
                        WATCH_SELF
                    };
                    seen.insert(inode_key(&md));
                    self.add(id as u32, entry.path(), &md, flags, &mut delta);
                }
            } else {
                seen.insert(inode_key(&md));
                self.add(id as u32, &root, &md, WATCH_SELF, &mut delta);
            }
        }
        // Inodes no key path reaches any more. Their names stay in the
        // name filter (the same name is usually the replacement's). Other
        // namespaces' entries are theirs to drop (`set_ns`).
        let gone: Vec<InodeKey> = self
            .index
            .iter()
            .filter(|(k, w)| w.ns.is_none() && !seen.contains(*k))
            .map(|(k, _)| *k)
            .collect();
        if self.departed.len() + gone.len() > DEPARTED {
            self.departed.clear();
        }
        for k in gone {
            if let Some(w) = self.index.remove(&k) {
                self.departed.insert(k, w);
            }
            delta.removed.push(k);
        }
        delta
    }

    fn add(
        &mut self,
        id: u32,
        path: &Path,
        md: &std::fs::Metadata,
        flags: u32,
        delta: &mut ScanDelta,
    ) {
        self.add_entry(inode_key(md), id, path, flags, None, delta);
    }

    /// One inode into the index and the delta (with its name), unless it
    /// is watched already or the map is full. True when it went in.
    fn add_entry(
        &mut self,
        key: InodeKey,
        id: u32,
        path: &Path,
        flags: u32,
        ns: Option<u64>,
        delta: &mut ScanDelta,
    ) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.departed.remove(&key);
        if self.index.len() >= MAX_WATCHED {
            delta.overflow += 1;
            return false;
        }
        let flags = flags | self.extra;
        self.index.insert(
            key,
            Watched {
                watch_id: id,
                flags,
                path: path.to_path_buf(),
                ns,
            },
        );
        delta.entries.push((
            key,
            WatchEntry {
                watch_id: id,
                flags,
                igen: 0,
                generation: 0,
            },
            path.to_path_buf(),
        ));
        // (Another namespace's directories are no inotify or log matter.)
        if flags & WATCH_CHILDREN != 0 && ns.is_none() {
            delta.new_dirs.push(path.to_path_buf());
        }
        // Names of files (failed opens, renames) and of directories
        // (a rename of a key directory moves its keys).
        if let Some(name) = path.file_name() {
            let nk = sensor_common::names::name_key_of(name.as_bytes());
            if self.names.insert(nk) {
                delta.names.push(nk);
            }
        }
        true
    }

    /// Makes `entries` what namespace `ns`'s key paths name (all of them:
    /// the ones not among them are dropped). An inode a host key path (or
    /// another namespace) watches already stays theirs. Returns the delta
    /// for the kernel, with the entries' O_PATH handles to stamp them.
    pub fn set_ns(
        &mut self,
        ns: u64,
        entries: Vec<super::nskeys::NsEntry>,
    ) -> (ScanDelta, Vec<std::fs::File>) {
        let mut delta = ScanDelta {
            what: "key path",
            ..Default::default()
        };
        let mut handles = Vec::new();
        let keep: HashSet<InodeKey> = entries.iter().map(|e| e.key).collect();
        let gone: Vec<InodeKey> = self
            .index
            .iter()
            .filter(|(k, w)| w.ns == Some(ns) && !keep.contains(*k))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(w) = self.index.remove(&k) {
                self.departed.insert(k, w);
            }
            delta.removed.push(k);
        }
        for e in entries {
            if self.add_entry(e.key, e.watch_id, &e.path, e.flags, Some(ns), &mut delta) {
                handles.extend(e.handle);
            }
        }
        if self.departed.len() > DEPARTED {
            self.departed.clear();
        }
        (delta, handles)
    }

    /// Entries of other mount namespaces.
    pub fn ns_len(&self) -> usize {
        self.index.values().filter(|w| w.ns.is_some()).count()
    }

    /// Directories to watch with inotify: every watched directory, and the
    /// nearest existing ancestor of each missing key path.
    pub fn inotify_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .index
            .values()
            .filter(|w| w.flags & WATCH_CHILDREN != 0 && w.ns.is_none())
            .map(|w| w.path.clone())
            .collect();
        for (root, present) in self.roots.iter().zip(&self.present) {
            let start = if *present {
                root.parent()
            } else {
                Some(root.as_path())
            };
            let mut cur = start;
            while let Some(p) = cur {
                if p.is_dir() {
                    dirs.push(p.to_path_buf());
                    break;
                }
                cur = p.parent();
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Is the file at `path` (as seen by the sensor) watched? Returns its
    /// watch id and identity. Checks the file itself, then its directory.
    pub fn covers(&self, path: &Path) -> Option<(u32, Option<InodeKey>)> {
        if let Ok(md) = std::fs::metadata(path) {
            let key = inode_key(&md);
            if let Some(w) = self.index.get(&key)
                && w.flags & WATCH_SELF != 0
            {
                return Some((w.watch_id, Some(key)));
            }
            if let Some(w) = path
                .parent()
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|md| self.index.get(&inode_key(&md)))
                && w.flags & WATCH_CHILDREN != 0
                && !md.is_dir()
            {
                return Some((w.watch_id, Some(key)));
            }
            return None;
        }
        // Gone or unreachable: its directory may still be watched.
        let parent = path.parent()?;
        let md = std::fs::metadata(parent).ok()?;
        let w = self.index.get(&inode_key(&md))?;
        (w.flags & WATCH_CHILDREN != 0).then_some((w.watch_id, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_round_trip() {
        for (major, minor) in [(8u64, 1u64), (259, 3), (0, 25), (4095, 255), (259, 1 << 19)] {
            let st = (minor & 0xff)
                | ((major & 0xfff) << 8)
                | ((minor & !0xff) << 12)
                | ((major & !0xfff) << 32);
            let k = kdev(st);
            assert_eq!(k, ((major as u32) << 20) | minor as u32);
            assert_eq!(st_dev(k), st);
        }
    }

    #[test]
    fn scans_dirs_files_and_missing() {
        let dir = std::env::temp_dir().join(format!("ks-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keys/sub")).unwrap();
        std::fs::write(dir.join("keys/a.key"), b"x").unwrap();
        std::fs::write(dir.join("keys/sub/b.key"), b"x").unwrap();
        std::fs::write(dir.join("single"), b"x").unwrap();
        let mut w = Watcher::new(vec![
            dir.join("keys"),
            dir.join("single"),
            dir.join("later/k"),
        ]);
        let d = w.scan();
        assert_eq!(d.entries.len(), 5, "{d:?}");
        assert_eq!(d.appeared.len(), 2);
        assert_eq!(w.missing(), vec![dir.join("later/k").as_path()]);
        assert!(
            w.inotify_dirs().contains(&dir),
            "ancestor of the missing path"
        );
        let (id, key) = w.covers(&dir.join("keys/sub/b.key")).unwrap();
        assert_eq!(id, 0);
        assert!(key.is_some());
        assert_eq!(w.covers(&dir.join("single")).unwrap().0, 1);
        assert!(w.covers(&dir.join("other")).is_none());
        // A file created later is covered through its directory.
        std::fs::write(dir.join("keys/new.key"), b"x").unwrap();
        assert_eq!(w.covers(&dir.join("keys/new.key")).unwrap().0, 0);
        // Rescans add only what is new.
        std::fs::create_dir_all(dir.join("later")).unwrap();
        std::fs::write(dir.join("later/k"), b"x").unwrap();
        let d = w.scan();
        assert_eq!(d.appeared, vec![dir.join("later/k")]);
        assert_eq!(d.entries.len(), 2, "new.key and later/k: {d:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
