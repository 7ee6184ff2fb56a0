//! The kernel's allowlist follows the files `[[allow]]` names. The kernel
//! checks allowances by (dev, inode) (`ALLOWED`, `ALLOW_EXES`), read from
//! the configured paths at start and reload. A program upgraded in place
//! (dpkg writes the new file and renames it over the old one) is a new
//! inode the kernel does not know: its key opens would taint it (and be
//! denied where enforcing), and its exec would skip the loader-variable
//! check. `AllowIds` reads the identities again when a directory holding
//! an allowlisted program changes (inotify, `agent::live`), when an exec
//! shows an allowlisted path whose file the kernel did not know at exec,
//! and every `RECHECK_NS`, and adds what is new to the kernel's maps.
//!
//! The identities of replaced files stay until the next reload or
//! restart: a process started before the upgrade still runs the old file
//! (its path now reads "(deleted)" in /proc, so user space no longer
//! allows it by path; the kernel does not taint it meanwhile).
//!
//! An exec of an allowlisted path whose file the kernel did not know at
//! that moment was not checked for loader variables: that process gets no
//! allowance (`allow_bypass`, fail closed); its next exec is checked.

use std::{collections::HashSet, ffi::OsString, path::PathBuf};

use sensor_common::{AllowKey, InodeKey};

use crate::config::{Allow, Config};

/// How often the identities are read again without a trigger.
pub const RECHECK_NS: u64 = 10_000_000_000;

/// Why an exec of an allowlisted path holds no allowance when the kernel
/// did not know its file at exec.
pub const UNKNOWN_AT_EXEC: &str = "executable replaced since keysentry read its allowlist: not checked for loader variables at this exec";

#[derive(Debug, Default)]
pub struct AllowIds {
    allow: Vec<Allow>,
    key_paths: Vec<PathBuf>,
    /// What the kernel's maps hold (the union since the last reload).
    keys: Vec<AllowKey>,
    exes: Vec<InodeKey>,
    /// File names of the programs (configured and canonical forms).
    names: HashSet<OsString>,
    /// A trigger asked for a check.
    stale: bool,
    last_check_ns: u64,
}

impl AllowIds {
    /// The identities `[[allow]]` names now: what the kernel gets at start
    /// and reload (`set_allowed` with `keys` and `exes`).
    pub fn new(cfg: &Config) -> Self {
        let mut s = Self {
            allow: cfg.allow.clone(),
            key_paths: cfg.key_path.iter().map(|k| k.path.clone()).collect(),
            ..Default::default()
        };
        let (keys, exes) = s.read();
        s.keys = keys;
        s.exes = exes;
        s.names = s.read_names();
        s
    }

    /// The `ALLOWED` entries the kernel holds.
    pub fn keys(&self) -> &[AllowKey] {
        &self.keys
    }

    /// The `ALLOW_EXES` identities the kernel holds.
    pub fn exes(&self) -> &[InodeKey] {
        &self.exes
    }

    /// What the kernel is to hold for `[[allow]]` now (`enforce`'s rules).
    fn read(&self) -> (Vec<AllowKey>, Vec<InodeKey>) {
        crate::detect::enforce::allowlist_of(&self.allow, &self.key_paths)
    }

    /// Is `(kdev, ino)` an identity the kernel holds as allowlisted?
    pub fn knows(&self, kdev: u32, ino: u64) -> bool {
        self.exes.iter().any(|k| k.dev == kdev && k.ino == ino)
    }

    /// Ask for a check on the next `due` (a directory changed, an exec of
    /// an unknown identity).
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// The directories holding allowlisted programs (their configured and
    /// canonical paths), to watch for replacements.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for p in self.exe_paths() {
            if let Some(d) = p.parent()
                && !v.iter().any(|x| x == d)
            {
                v.push(d.to_path_buf());
            }
        }
        v
    }

    /// Is `name` (an inotify event's, in one of `dirs`) the file name of
    /// an allowlisted program? Other names in those directories are not
    /// theirs.
    pub fn is_program_name(&self, name: &std::ffi::OsStr) -> bool {
        self.names.contains(name)
    }

    fn read_names(&self) -> HashSet<OsString> {
        self.exe_paths()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect()
    }

    fn exe_paths(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for a in self.allow.iter().filter(|a| !a.in_container()) {
            for p in [Some(&a.exe), a.target.as_ref()].into_iter().flatten() {
                v.push(p.clone());
                if let Ok(c) = std::fs::canonicalize(p) {
                    v.push(c);
                }
            }
        }
        v
    }

    /// When a check is due (a trigger, or `RECHECK_NS` since the last):
    /// the entries that are new since the kernel was last given the
    /// allowlist, remembered as given. None when nothing is new.
    pub fn due(&mut self, now_ns: u64) -> Option<(Vec<AllowKey>, Vec<InodeKey>)> {
        if !self.stale && now_ns.saturating_sub(self.last_check_ns) < RECHECK_NS {
            return None;
        }
        self.stale = false;
        self.last_check_ns = now_ns;
        self.names = self.read_names();
        let (keys, exes) = self.read();
        let keys: Vec<AllowKey> = keys
            .into_iter()
            .filter(|k| !self.keys.contains(k))
            .collect();
        let exes: Vec<InodeKey> = exes
            .into_iter()
            .filter(|k| !self.exes.contains(k))
            .collect();
        if keys.is_empty() && exes.is_empty() {
            return None;
        }
        self.keys.extend(keys.iter().copied());
        self.exes.extend(exes.iter().copied());
        Some((keys, exes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::MetadataExt, path::Path};

    fn cfg(exe: &Path) -> Config {
        let text = format!("[[allow]]\nexe = \"{}\"\n", exe.display());
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn an_upgrade_in_place_adds_the_new_file_and_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("ks-allow-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let exe = dir.join("service");
        std::fs::write(&exe, b"v1").unwrap();
        let old = std::fs::metadata(&exe).unwrap().ino();
        let mut ids = AllowIds::new(&cfg(&exe));
        let kd = |p: &Path| crate::enrich::watch::kdev(std::fs::metadata(p).unwrap().dev());
        assert!(ids.knows(kd(&exe), old));
        assert!(ids.dirs().contains(&dir));
        // Nothing changed: not due before RECHECK_NS, nothing new after.
        assert!(ids.due(1).is_none());
        assert!(ids.due(RECHECK_NS + 1).is_none());
        // dpkg's way: a new file renamed over the old.
        let tmp = dir.join("service.dpkg-new");
        std::fs::write(&tmp, b"v2").unwrap();
        std::fs::rename(&tmp, &exe).unwrap();
        let new = std::fs::metadata(&exe).unwrap().ino();
        assert_ne!(old, new);
        assert!(!ids.knows(kd(&exe), new));
        // A trigger makes it due at once.
        ids.mark_stale();
        let (_keys, exes) = ids.due(RECHECK_NS + 2).expect("the new file");
        assert_eq!(exes.iter().map(|k| k.ino).collect::<Vec<_>>(), vec![new]);
        assert!(ids.knows(kd(&exe), new));
        assert!(
            ids.knows(kd(&exe), old),
            "the old file is kept until reload"
        );
        assert!(ids.due(3 * RECHECK_NS).is_none(), "given once");
        assert!(ids.is_program_name(std::ffi::OsStr::new("service")));
        assert!(!ids.is_program_name(std::ffi::OsStr::new("service.dpkg-new")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
