//! The tracked-file registry: every key file seen opened, every dump found
//! (kernel core files, pipe-helper outputs, user-space dumps) and every file
//! derived from one of them (copies, archives, renames, links), with the
//! lineage back to its origin. The kernel's WATCHED map holds the same
//! files by (dev, inode) with WATCH_TRACKED, so opens of them and reads by
//! later processes are followed too.

use std::collections::HashMap;

use serde::Serialize;

use crate::proctab::ProcInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackedKind {
    /// A watched or key-named file.
    Key,
    /// A memory dump of a protected process.
    Dump,
    /// A file derived from a tracked file.
    Copy,
}

/// Who made a tracked file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
}

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
}

/// One step of a lineage, origin first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageStep {
    pub id: u32,
    pub path: String,
    pub kind: TrackedKind,
    pub how: &'static str,
    pub generation: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<Origin>,
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
            self.evict();
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
            },
        );
        self.by_inode.insert((kdev, ino), id);
        (id, true)
    }

    /// Drops the oldest quarter of the derived files (keys stay).
    fn evict(&mut self) {
        let mut ids: Vec<u32> = self
            .by_id
            .values()
            .filter(|t| t.kind != TrackedKind::Key)
            .map(|t| t.id)
            .collect();
        ids.sort_unstable();
        for id in ids.into_iter().take(MAX_TRACKED / 4) {
            if let Some(t) = self.by_id.remove(&id) {
                self.by_inode.remove(&(t.kdev, t.ino));
            }
        }
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
