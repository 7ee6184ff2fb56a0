//! Tracked files as their writer's mount namespace sees them. A dump or
//! copy is named by the path its writer used; in a container, or in the
//! host's /tmp while keysentry runs with its unit's PrivateTmp, that path
//! names nothing (or another file) in keysentry's own namespace. When it
//! does not reach the tracked inode from here, `find` looks for a root it
//! does reach it from: the writer's own (`/proc/<pid>/root`) or its
//! ancestors' (a shell in the namespace that ran it), those of the live
//! processes of the writer's cgroup (a container's other processes
//! outlive its short-lived `cp`), and the host's (pid 1's). The root found
//! is held (a directory descriptor) with the tracked file, and every later
//! read of the file (its format, the scan, whether it still exists) goes
//! through it with openat2's RESOLVE_IN_ROOT (`handle::open_in`), never
//! through keysentry's own namespace. The inode decides each time: a root
//! a pid now names by reuse, or a path someone changed, reaches another
//! inode and is refused.

use std::{fs::File, path::Path, sync::Arc};

use crate::enrich::handle::{Handle, open_in, reaches};

/// A process's root directory, held.
pub type Root = Arc<File>;

/// Roots that served lately, tried first (a container writes many files).
const RECENT: usize = 8;
/// Processes of the writer's cgroup tried at most.
const CGROUP_PIDS: usize = 8;

/// The roots that served lately.
#[derive(Default)]
pub struct Roots {
    recent: Vec<Root>,
}

/// The root directory of `pid` (O_PATH: nothing is read through it but
/// paths).
pub fn proc_root(pid: u32) -> Option<File> {
    open_in(
        None,
        Path::new(&format!("/proc/{pid}/root")),
        libc::O_PATH | libc::O_DIRECTORY,
    )
}

/// Does `path` reach the inode (kd, ino) from the root of the container
/// whose cgroup is `cgroup_id`: its oldest live process's (the one the
/// runtime started, before anything it runs could make a mount namespace
/// of its own and mount another file at the path)? A process's own root
/// is not asked: inside a user and mount namespace it mounts what it
/// likes.
pub fn in_container(cgroup_id: u64, path: &Path, kd: u32, ino: u64) -> bool {
    let Some(root) = crate::kernel::loader::probes::cgroup2_root() else {
        return false;
    };
    let Some(cg) = crate::enrich::cgroups::path_of(cgroup_id) else {
        return false;
    };
    let procs = std::fs::read_to_string(format!("{root}{cg}/cgroup.procs")).unwrap_or_default();
    let started = |pid: u32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.get(stat.rfind(')')? + 2..)?
            .split(' ')
            .nth(19)?
            .parse()
            .ok()
    };
    let oldest = procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .take(MEMBERS)
        .filter_map(|pid| Some((started(pid)?, pid)))
        .min();
    oldest
        .and_then(|(_, pid)| proc_root(pid))
        .is_some_and(|r| reaches(Some(&r), path, kd, ino))
}

/// Processes of a container's cgroup looked at for its oldest.
const MEMBERS: usize = 256;

/// Up to `CGROUP_PIDS` live processes of cgroup `id`.
fn cgroup_pids(id: u64) -> Vec<u32> {
    let Some(root) = crate::kernel::loader::probes::cgroup2_root() else {
        return Vec::new();
    };
    let Some(path) = crate::enrich::cgroups::path_of(id) else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("{root}{path}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(CGROUP_PIDS)
        .collect()
}

impl Roots {
    /// A root from which `path` reaches the inode (kd, ino), with that
    /// inode's file handle: the recent roots, then those of `writer` (the
    /// writer and its ancestors, nearest first), of its cgroup's processes
    /// (`cgroup_id`), then pid 1's.
    pub fn find(
        &mut self,
        writer: &[u32],
        cgroup_id: u64,
        path: &Path,
        kd: u32,
        ino: u64,
    ) -> Option<(Root, Option<Handle>)> {
        let hits = |r: &File| reaches(Some(r), path, kd, ino);
        if let Some(i) = self.recent.iter().position(|r| hits(r)) {
            let r = self.recent.remove(i);
            let h = Handle::of_inode(Some(&r), path, kd, ino);
            self.recent.insert(0, r.clone());
            return Some((r, h));
        }
        let mut pids: Vec<u32> = writer.to_vec();
        if cgroup_id != 0 {
            pids.extend(cgroup_pids(cgroup_id));
        }
        pids.push(1);
        for pid in pids {
            let Some(r) = proc_root(pid) else { continue };
            if hits(&r) {
                let r = Arc::new(r);
                let h = Handle::of_inode(Some(&r), path, kd, ino);
                self.recent.insert(0, r.clone());
                self.recent.truncate(RECENT);
                return Some((r, h));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_path_is_read_from_the_root_that_reaches_its_inode() {
        let d = tempfile::tempdir().unwrap();
        // A "container root" with its own /tmp/x, and a symlink in it that
        // points at an absolute path: RESOLVE_IN_ROOT keeps it inside.
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        let x = d.path().join("tmp/x");
        std::fs::write(&x, b"inside").unwrap();
        std::os::unix::fs::symlink("/tmp/x", d.path().join("tmp/link")).unwrap();
        let md = std::fs::metadata(&x).unwrap();
        let (kd, ino) = (crate::enrich::devnum::kdev(md.dev()), md.ino());
        let root = File::open(d.path()).unwrap();
        assert!(reaches(Some(&root), Path::new("/tmp/x"), kd, ino));
        // The same path from keysentry's own root is another file (or none).
        assert!(crate::enrich::handle::open_tracked(None, Path::new("/tmp/x"), kd, ino).is_none());
        let f = crate::enrich::handle::head(Some(&root), Path::new("/tmp/x"), kd, ino, 6);
        assert_eq!(f.as_deref(), Some(&b"inside"[..]));
        // A final symlink is not followed, even to the right inode.
        assert!(!reaches(Some(&root), Path::new("/tmp/link"), kd, ino));
        // `..` cannot climb out of the root.
        let out = d.path().file_name().unwrap().to_str().unwrap();
        assert!(!reaches(
            Some(&root),
            Path::new(&format!("/../../{out}/tmp/x")),
            kd,
            ino
        ));
    }

    #[test]
    fn the_writers_root_is_found_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("f");
        std::fs::write(&x, b"x").unwrap();
        let md = std::fs::metadata(&x).unwrap();
        let (kd, ino) = (crate::enrich::devnum::kdev(md.dev()), md.ino());
        let mut r = Roots::default();
        let (root, _) = r
            .find(&[std::process::id()], 0, &x, kd, ino)
            .expect("this process's root reaches it");
        assert_eq!(r.recent.len(), 1);
        assert!(reaches(Some(&root), &x, kd, ino));
        // Another inode at the path: no root reaches the tracked one.
        let y = d.path().join("g");
        std::fs::write(&y, b"y").unwrap();
        std::fs::rename(&y, &x).unwrap();
        assert!(r.find(&[std::process::id()], 0, &x, kd, ino).is_none());
    }
}
