//! Is an exec's path the file the kernel ran? The kernel reports an
//! executable by its path (rebuilt from dentries in the process's own mount
//! namespace) and its (dev, inode). A user who bind-mounts a program of its
//! own over an allowlisted path inside a user+mount namespace gets the
//! allowlisted path string with another file. `ExeIds` answers whether the
//! path names that (dev, inode) in keysentry's namespace, through
//! `SystemView` (so a replay decides as the live run did), and remembers
//! the identities it verified, so each (path, inode) costs one stat.

use std::{collections::HashMap, os::unix::fs::MetadataExt};

use serde_json::{Value, json};

use crate::enrich::{devnum::kdev, sysview::SystemView};

/// Most paths remembered (the table is cleared when full: a cleared entry
/// costs one more stat).
const MAX_PATHS: usize = 4096;
/// Identities remembered per path (a program replaced by upgrades while
/// older copies still run).
const MAX_IDS: usize = 4;

#[derive(Debug, Default)]
pub struct ExeIds {
    verified: HashMap<String, Vec<(u32, u64)>>,
}

impl ExeIds {
    /// Does `path` name the file (`kdev`, `ino`) (kernel dev encoding)
    /// here? An empty path or a zero inode is never genuine.
    pub fn genuine(&mut self, view: &mut SystemView, path: &str, kdev_ino: (u32, u64)) -> bool {
        if path.is_empty() || kdev_ino.1 == 0 {
            return false;
        }
        if self
            .verified
            .get(path)
            .is_some_and(|ids| ids.contains(&kdev_ino))
        {
            return true;
        }
        let now = view.value(format!("exe-id:{path}"), || match std::fs::metadata(path) {
            Ok(m) => json!([kdev(m.dev()), m.ino()]),
            Err(_) => Value::Null,
        });
        let named = (
            now.get(0).and_then(Value::as_u64).unwrap_or(0) as u32,
            now.get(1).and_then(Value::as_u64).unwrap_or(0),
        );
        if named != kdev_ino {
            return false;
        }
        if self.verified.len() >= MAX_PATHS {
            self.verified.clear();
        }
        let ids = self.verified.entry(path.to_string()).or_default();
        if ids.len() >= MAX_IDS {
            ids.remove(0);
        }
        ids.push(kdev_ino);
        true
    }
}

impl ExeIds {
    /// Does `path` name the file (`kdev`, `ino`) in the container of
    /// cgroup `cgroup_id` (`roots::in_container`)? What an allowance for
    /// a container's program checks: the path is the container's.
    pub fn in_root(
        &mut self,
        view: &mut SystemView,
        cgroup_id: u64,
        path: &str,
        (kdev, ino): (u32, u64),
    ) -> bool {
        if path.is_empty() || ino == 0 || cgroup_id == 0 {
            return false;
        }
        view.flag(
            format!("exe-in-root:{cgroup_id}:{path}:{kdev}:{ino}"),
            || crate::enrich::roots::in_container(cgroup_id, std::path::Path::new(path), kdev, ino),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(p: &str) -> (u32, u64) {
        let m = std::fs::metadata(p).unwrap();
        (kdev(m.dev()), m.ino())
    }

    #[test]
    fn a_path_is_genuine_only_for_the_file_it_names() {
        let mut ids = ExeIds::default();
        let mut view = SystemView::default();
        let sh = id_of("/bin/sh");
        let cat = id_of("/usr/bin/env");
        assert!(ids.genuine(&mut view, "/bin/sh", sh));
        assert!(!ids.genuine(&mut view, "/bin/sh", cat));
        assert!(!ids.genuine(&mut view, "/nonexistent/x", cat));
        assert!(!ids.genuine(&mut view, "", sh));
        // Remembered: a replaced file's earlier identity stays genuine.
        assert!(ids.genuine(&mut view, "/bin/sh", sh));
    }

    #[test]
    fn a_replay_decides_from_the_recorded_fact() {
        let mut ids = ExeIds::default();
        let mut view = SystemView::default();
        view.replaying();
        view.insert_recorded("exe-id:/usr/bin/vault".into(), json!([8, 1234]));
        assert!(ids.genuine(&mut view, "/usr/bin/vault", (8, 1234)));
        assert!(!ids.genuine(&mut view, "/usr/bin/vault", (8, 99)));
    }
}
