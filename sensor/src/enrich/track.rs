//! The tracked-file registry: every key file seen opened, every dump found
//! (kernel core files, pipe-helper outputs, user-space dumps) and every file
//! derived from one of them (copies, archives, renames, links), with the
//! lineage back to its origin. The kernel's WATCHED map holds the same
//! files by (dev, inode) with WATCH_TRACKED, so opens of them and reads by
//! later processes are followed too.

use std::collections::{HashMap, VecDeque};

use crate::{
    alert::{LineageStep, Origin, TrackedKind},
    enrich::proctab::ProcInfo,
};

impl Origin {
    pub fn of(p: &ProcInfo) -> Self {
        Self {
            pid: p.pid,
            comm: p.comm.clone(),
            exe: p.exe.to_string(),
            protected: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked {
    pub id: u32,
    /// Kernel dev_t encoding (as in the kernel maps) and inode.
    pub kdev: u32,
    pub ino: u64,
    pub path: String,
    pub kind: TrackedKind,
    /// How it was made: "key", "core-dump", "pipe-helper", "userspace-dump",
    /// "write", "sendfile", "copy_file_range", "splice", "reflink",
    /// "archive", "rename", "link".
    pub how: &'static str,
    /// 0 for an origin, parent's + 1 for a derived file.
    pub generation: u32,
    pub parent: Option<u32>,
    pub origin: Option<Origin>,
    /// The protected process whose memory a dump holds.
    pub dumped: Option<Origin>,
    /// Scanned for key material since its last write.
    pub scanned: bool,
    /// For a key: the key_path that covers it (allowlists name it).
    pub watch: Option<u32>,
    /// The inode's i_generation, when known: a record of the same (dev,
    /// inode) with another generation is a new file that reused the number.
    pub igen: Option<u32>,
    /// Size when registered (a key's size, for the copy evidence).
    pub size: i64,
    /// For a key created under keysentry's eyes (an open that created it,
    /// by a writer not tainted by another key or dump): (uid, boot ns).
    pub created: Option<(u32, u64)>,
    /// A copy's writer created the file with the open it wrote through.
    pub new_file: bool,
    /// The inode's file handle (taken when it was registered), to tell
    /// whether it still exists once a name of it goes away.
    pub handle: Option<crate::enrich::handle::Handle>,
    /// The root its path is read from when keysentry's own namespace does
    /// not reach it (a container's file, the host's /tmp under
    /// PrivateTmp): `enrich/roots.rs`.
    pub root: Option<crate::enrich::roots::Root>,
    /// A copy's evidence once decided (Info: too weak to alert).
    pub evidence: Option<crate::alert::Severity>,
    /// Its last name went away: out of the kernel's watch map, kept here
    /// so copies by its earlier readers keep their lineage.
    pub gone: bool,
}

/// Most files tracked: when full, registering one evicts the oldest derived
/// file (copy or dump), or the oldest key when only keys are left, in O(1).
pub const MAX_TRACKED: usize = 16384;
/// Longest lineage walked.
const MAX_DEPTH: usize = 32;

pub struct Registry {
    by_id: HashMap<u32, Tracked>,
    by_inode: HashMap<(u32, u64), u32>,
    next_id: u32,
    evicted: Vec<Tracked>,
    /// Ids in registration order, for eviction: derived files (evicted
    /// first), then keys. Ids removed meanwhile are skipped when they come
    /// up, and pruned when a queue holds twice the bound.
    order: [VecDeque<u32>; 2],
    cap: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_capacity(MAX_TRACKED)
    }
}

/// Ids of tracked files start here, above any key_path index, so a watch
/// entry's id tells which it is.
pub const TRACKED_ID_BASE: u32 = 1 << 20;

impl Registry {
    /// A registry of at most `cap` files (tests; `default()`: MAX_TRACKED).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            by_inode: HashMap::new(),
            next_id: 0,
            evicted: Vec::new(),
            order: Default::default(),
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: u32) -> Option<&Tracked> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Tracked> {
        self.by_id.get_mut(&id)
    }

    pub fn by_inode(&self, kdev: u32, ino: u64) -> Option<&Tracked> {
        self.by_inode
            .get(&(kdev, ino))
            .and_then(|id| self.by_id.get(id))
    }

    /// The entry of (dev, inode) when it is the same file: an entry whose
    /// inode generation differs from `igen` belonged to a deleted file
    /// whose inode number was reused, and is removed (returned in the
    /// second field, for the caller to drop its kernel entry).
    pub fn by_file(
        &mut self,
        kdev: u32,
        ino: u64,
        igen: u32,
    ) -> (Option<&Tracked>, Option<Tracked>) {
        let Some(id) = self.by_inode.get(&(kdev, ino)).copied() else {
            return (None, None);
        };
        let stale = self
            .by_id
            .get(&id)
            .is_some_and(|t| t.igen.is_some_and(|g| g != igen));
        if stale {
            return (None, self.retire(id));
        }
        if let Some(t) = self.by_id.get_mut(&id)
            && t.igen.is_none()
        {
            t.igen = Some(igen);
        }
        (self.by_id.get(&id), None)
    }

    /// A file that is gone while its inode number lives on in a new file:
    /// out of the inode index, kept (marked gone, evictable) for the
    /// lineages that start at it. Returns it.
    pub fn retire(&mut self, id: u32) -> Option<Tracked> {
        let t = self.by_id.get_mut(&id)?;
        t.gone = true;
        let t = t.clone();
        if self.by_inode.get(&(t.kdev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.kdev, t.ino));
        }
        Some(t)
    }

    /// Forgets a file (its inode is gone).
    pub fn remove(&mut self, id: u32) -> Option<Tracked> {
        let t = self.by_id.remove(&id)?;
        if self.by_inode.get(&(t.kdev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.kdev, t.ino));
        }
        Some(t)
    }

    /// Tracked files (not keys) whose current name is `name`.
    pub fn named(&self, name: &std::ffi::OsStr) -> Vec<u32> {
        self.by_id
            .values()
            .filter(|t| t.kind != TrackedKind::Key)
            .filter(|t| std::path::Path::new(&t.path).file_name() == Some(name))
            .map(|t| t.id)
            .collect()
    }

    /// Registers a file (or returns the id it already has: a file keeps
    /// its first registration, whose lineage is the oldest).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        kdev: u32,
        ino: u64,
        path: String,
        kind: TrackedKind,
        how: &'static str,
        parent: Option<u32>,
        origin: Option<Origin>,
        dumped: Option<Origin>,
    ) -> (u32, bool) {
        if let Some(id) = self.by_inode.get(&(kdev, ino)) {
            return (*id, false);
        }
        while self.by_id.len() >= self.cap {
            let Some(gone) = self.evict_one() else { break };
            self.evicted.push(gone);
        }
        let generation = parent
            .and_then(|p| self.by_id.get(&p))
            .map_or(0, |p| p.generation + 1);
        let dumped = dumped.or_else(|| {
            parent
                .and_then(|p| self.by_id.get(&p))
                .and_then(|p| p.dumped.clone())
        });
        let id = TRACKED_ID_BASE + self.next_id;
        self.next_id = (self.next_id + 1) % (u32::MAX - TRACKED_ID_BASE);
        self.by_id.insert(
            id,
            Tracked {
                id,
                kdev,
                ino,
                path,
                kind,
                how,
                generation,
                parent,
                origin,
                dumped,
                scanned: false,
                watch: None,
                igen: None,
                size: 0,
                created: None,
                new_file: false,
                handle: None,
                root: None,
                evidence: None,
                gone: false,
            },
        );
        self.by_inode.insert((kdev, ino), id);
        let q = usize::from(kind == TrackedKind::Key);
        self.order[q].push_back(id);
        if self.order[q].len() > 2 * self.cap {
            // Ids of files removed since: each pruning follows at least
            // `cap` registrations, so this is O(1) per registration.
            let by_id = &self.by_id;
            self.order[q].retain(|id| by_id.contains_key(id));
        }
        (id, true)
    }

    /// Drops the oldest derived file, or the oldest key when no derived
    /// file is left; returns it, for its kernel entry to go too. Amortized
    /// O(1): every id is queued once and popped at most once.
    fn evict_one(&mut self) -> Option<Tracked> {
        for q in 0..2 {
            while let Some(id) = self.order[q].pop_front() {
                if let Some(t) = self.remove(id) {
                    return Some(t);
                }
            }
        }
        None
    }

    /// Files evicted since the last call (their kernel entries must go).
    pub fn take_evicted(&mut self) -> Vec<Tracked> {
        std::mem::take(&mut self.evicted)
    }

    /// The chain from the origin to `id`.
    pub fn lineage(&self, id: u32) -> Vec<LineageStep> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        while let Some(i) = cur {
            let Some(t) = self.by_id.get(&i) else { break };
            out.push(LineageStep {
                id: t.id,
                path: t.path.clone(),
                kind: t.kind,
                how: t.how,
                generation: t.generation,
                by: t.origin.clone(),
            });
            if out.len() >= MAX_DEPTH {
                break;
            }
            cur = t.parent;
        }
        out.reverse();
        out
    }

    /// The origin of `id`'s lineage.
    pub fn root(&self, id: u32) -> Option<&Tracked> {
        let mut cur = self.by_id.get(&id)?;
        for _ in 0..MAX_DEPTH {
            match cur.parent.and_then(|p| self.by_id.get(&p)) {
                Some(p) => cur = p,
                None => break,
            }
        }
        Some(cur)
    }

    /// The kind of the origin of `id`'s lineage.
    /// Whether a reader of tracked file `id` gets a strong taint
    /// (`WATCH_STRONG`): its lineage starts at a dump, or at a key a key
    /// path covers (not one matched by its name only).
    pub fn strong_root(&self, id: u32) -> bool {
        let Some(mut cur) = self.by_id.get(&id) else {
            return false;
        };
        for _ in 0..MAX_DEPTH {
            match cur.parent.and_then(|p| self.by_id.get(&p)) {
                Some(p) => cur = p,
                None => break,
            }
        }
        cur.kind == TrackedKind::Dump || (cur.kind == TrackedKind::Key && cur.watch.is_some())
    }

    pub fn root_kind(&self, id: u32) -> Option<TrackedKind> {
        let mut cur = self.by_id.get(&id)?;
        for _ in 0..MAX_DEPTH {
            match cur.parent.and_then(|p| self.by_id.get(&p)) {
                Some(p) => cur = p,
                None => break,
            }
        }
        Some(cur.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader's taint is strong for tracked files whose lineage starts
    /// at a dump or at a key a key path covers, not at a key matched by
    /// its name only.
    #[test]
    fn strong_roots_are_dumps_and_key_path_keys() {
        let mut r = Registry::default();
        let reg = |r: &mut Registry, ino, kind, parent| {
            r.register(
                1,
                ino,
                format!("/f{ino}"),
                kind,
                "write",
                parent,
                None,
                None,
            )
            .0
        };
        let dump = reg(&mut r, 1, TrackedKind::Dump, None);
        let dump_copy = reg(&mut r, 2, TrackedKind::Copy, Some(dump));
        let path_key = reg(&mut r, 3, TrackedKind::Key, None);
        r.get_mut(path_key).unwrap().watch = Some(0);
        let path_copy = reg(&mut r, 4, TrackedKind::Copy, Some(path_key));
        let name_key = reg(&mut r, 5, TrackedKind::Key, None);
        let name_copy = reg(&mut r, 6, TrackedKind::Copy, Some(name_key));
        let name_copy2 = reg(&mut r, 7, TrackedKind::Copy, Some(name_copy));
        for id in [dump, dump_copy, path_key, path_copy] {
            assert!(r.strong_root(id), "{id}");
        }
        for id in [name_key, name_copy, name_copy2, 999] {
            assert!(!r.strong_root(id), "{id}");
        }
    }

    /// A full registry evicts the oldest derived file first, then the
    /// oldest key when only keys are left; ids removed meanwhile are
    /// skipped; it never holds more than its bound.
    #[test]
    fn eviction_takes_the_oldest_derived_file_then_keys() {
        let mut r = Registry::with_capacity(4);
        let reg = |r: &mut Registry, ino, kind| {
            r.register(1, ino, format!("/f{ino}"), kind, "write", None, None, None)
                .0
        };
        let k1 = reg(&mut r, 1, TrackedKind::Key);
        let c1 = reg(&mut r, 2, TrackedKind::Copy);
        let d1 = reg(&mut r, 3, TrackedKind::Dump);
        let k2 = reg(&mut r, 4, TrackedKind::Key);
        assert!(r.take_evicted().is_empty());
        // c1 removed (its inode went): d1 is the oldest derived file left.
        r.remove(c1);
        let c2 = reg(&mut r, 5, TrackedKind::Copy);
        assert!(r.take_evicted().is_empty(), "room left by c1");
        let c3 = reg(&mut r, 6, TrackedKind::Copy);
        let ids = |v: Vec<Tracked>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(r.take_evicted()), [d1]);
        let c4 = reg(&mut r, 7, TrackedKind::Copy);
        assert_eq!(ids(r.take_evicted()), [c2]);
        assert_eq!(r.len(), 4);
        // Only keys left after two more keys: the oldest keys go.
        let k3 = reg(&mut r, 8, TrackedKind::Key);
        let k4 = reg(&mut r, 9, TrackedKind::Key);
        assert_eq!(ids(r.take_evicted()), [c3, c4]);
        let _k5 = reg(&mut r, 10, TrackedKind::Key);
        assert_eq!(ids(r.take_evicted()), [k1]);
        assert_eq!(r.len(), 4);
        assert!(r.get(k2).is_some() && r.get(k3).is_some() && r.get(k4).is_some());
        assert!(r.by_inode(1, 1).is_none(), "the inode index follows");
    }

    /// Files removed without eviction do not pile up in the eviction
    /// queues.
    #[test]
    fn removed_files_do_not_grow_the_eviction_queues() {
        let mut r = Registry::with_capacity(8);
        for ino in 0..1000 {
            let (id, _) = r.register(
                1,
                ino,
                "/f".into(),
                TrackedKind::Copy,
                "write",
                None,
                None,
                None,
            );
            r.remove(id);
        }
        assert!(r.order[0].len() <= 2 * 8 + 1);
        assert!(r.is_empty());
    }

    #[test]
    fn lineage_runs_from_the_origin() {
        let mut r = Registry::default();
        let dumped = Origin {
            pid: 7,
            comm: "vault".into(),
            exe: "/usr/bin/vault".into(),
            protected: None,
        };
        let (a, new) = r.register(
            1,
            10,
            "/var/crash/core.7".into(),
            TrackedKind::Dump,
            "core-dump",
            None,
            None,
            Some(dumped.clone()),
        );
        assert!(new);
        let (b, _) = r.register(
            1,
            11,
            "/tmp/c".into(),
            TrackedKind::Copy,
            "write",
            Some(a),
            None,
            None,
        );
        let (c, _) = r.register(
            2,
            11,
            "/home/x/c.tgz".into(),
            TrackedKind::Copy,
            "archive",
            Some(b),
            None,
            None,
        );
        let l = r.lineage(c);
        assert_eq!(
            l.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
            ["/var/crash/core.7", "/tmp/c", "/home/x/c.tgz"]
        );
        assert_eq!(l[2].generation, 2);
        assert_eq!(r.root_kind(c), Some(TrackedKind::Dump));
        assert_eq!(r.get(c).unwrap().dumped.as_ref(), Some(&dumped));
        // Registering the same inode again keeps the first lineage.
        let (again, new) = r.register(
            2,
            11,
            "/elsewhere".into(),
            TrackedKind::Copy,
            "write",
            None,
            None,
            None,
        );
        assert_eq!((again, new), (c, false));
        assert!(r.by_inode(1, 11).is_some());
    }
}
