//! The tracked-file registry: every key file seen opened, every dump found
//! (kernel core files, pipe-helper outputs, user-space dumps) and every file
//! derived from one of them (copies, archives, renames, links), with the
//! lineage back to its origin. The kernel's WATCHED map holds the same
//! files by (dev, inode) with WATCH_TRACKED, so opens of them and reads by
//! later processes are followed too.

use std::collections::HashMap;

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
    /// A copy's evidence once decided (Info: too weak to alert).
    pub evidence: Option<crate::alert::Severity>,
    /// Its last name went away: out of the kernel's watch map, kept here
    /// so copies by its earlier readers keep their lineage.
    pub gone: bool,
}

/// Most files tracked; the oldest derived files go first when full.
pub const MAX_TRACKED: usize = 16384;
/// Longest lineage walked.
const MAX_DEPTH: usize = 32;

#[derive(Default)]
pub struct Registry {
    by_id: HashMap<u32, Tracked>,
    by_inode: HashMap<(u32, u64), u32>,
    next_id: u32,
    evicted: Vec<Tracked>,
}

/// Ids of tracked files start here, above any key_path index, so a watch
/// entry's id tells which it is.
pub const TRACKED_ID_BASE: u32 = 1 << 20;

impl Registry {
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
        if self.by_id.len() >= MAX_TRACKED {
            let gone = self.evict();
            self.evicted.extend(gone);
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
                evidence: None,
                gone: false,
            },
        );
        self.by_inode.insert((kdev, ino), id);
        (id, true)
    }

    /// Drops the oldest quarter of the derived files and of the keys whose
    /// file is gone (live keys stay); returns them, for their kernel entries
    /// to go too.
    fn evict(&mut self) -> Vec<Tracked> {
        let mut ids: Vec<u32> = self
            .by_id
            .values()
            .filter(|t| t.kind != TrackedKind::Key || t.gone)
            .map(|t| t.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .take(MAX_TRACKED / 4)
            .filter_map(|id| self.remove(id))
            .collect()
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

    #[test]
    fn lineage_runs_from_the_origin() {
        let mut r = Registry::default();
        let dumped = Origin {
            pid: 7,
            comm: "vault".into(),
            exe: "/usr/bin/vault".into(),
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
