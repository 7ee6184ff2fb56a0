//! The key book: the public-key fingerprints of the host's key files, so
//! that a key the scanner finds in a dump or a copy is named by the file it
//! belongs to ("the private key of /etc/ssl/private/ca.key"), not only by
//! its kind. keysentry reads each key file itself, on the scanner's thread
//! (`scan::scan_keys`, a `book` job: opened with O_NOFOLLOW|O_NONBLOCK, the
//! inode checked, at most `BOOK_MAX_BYTES`): the watched key files at start
//! (`START_FILES` at most) and every other one the first time a process
//! opens it for reading. Only fingerprints are kept, never key bytes; the
//! results travel as scan records, so a recording replays the same names.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
};

use serde_json::Value;

/// Fingerprints kept, at most (then the book keeps what it has).
pub const MAX_KEYS: usize = 16384;
/// Key files read at most once each (by device and inode).
pub const MAX_FILES: usize = 16384;
/// Key files read at start, at most (the others when first opened).
pub const START_FILES: usize = 128;
/// Bytes of a key file read, at most (key files are small; a watched path
/// that is a big file is not read past this).
pub const BOOK_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct KeyBook {
    /// Fingerprint (SPKI or OpenSSH, `SHA256:...`) -> key file.
    by_fingerprint: HashMap<String, Arc<str>>,
    /// (kernel dev, inode) of the key files read or queued.
    read: HashSet<(u32, u64)>,
}

impl KeyBook {
    /// Whether the key file (kdev, ino) is still to be read; from now on it
    /// counts as read (`forget` undoes it when its job could not be queued).
    pub fn wants(&mut self, kdev: u32, ino: u64) -> bool {
        self.read.len() < MAX_FILES && self.read.insert((kdev, ino))
    }

    pub fn forget(&mut self, kdev: u32, ino: u64) {
        self.read.remove(&(kdev, ino));
    }

    /// The fingerprints the scanner found in key file `path` (its report's
    /// `findings`). A fingerprint already known keeps its first file (the
    /// original, read at start, before any copy). Returns how many were new.
    pub fn learn(&mut self, path: &str, report: &Value) -> usize {
        let path: Arc<str> = Arc::from(path);
        let mut new = 0;
        for fp in fingerprints(report) {
            if self.by_fingerprint.len() >= MAX_KEYS {
                break;
            }
            if !self.by_fingerprint.contains_key(fp) {
                self.by_fingerprint.insert(fp.to_string(), path.clone());
                new += 1;
            }
        }
        new
    }

    /// The key file a fingerprint belongs to.
    pub fn owner(&self, fingerprint: &str) -> Option<&str> {
        self.by_fingerprint.get(fingerprint).map(|p| &**p)
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// Marks each finding of a scan report whose key the book knows with
    /// `key_file`; returns the (key file, fingerprint) pairs, in order,
    /// each file once.
    pub fn name(&self, report: &mut Value) -> Vec<(String, String)> {
        let mut named: Vec<(String, String)> = Vec::new();
        let Some(findings) = report.get_mut("findings").and_then(Value::as_array_mut) else {
            return named;
        };
        for f in findings {
            let owner = ["fingerprint", "ssh_fingerprint"].iter().find_map(|k| {
                let fp = f.get(*k)?.as_str()?;
                Some((self.owner(fp)?.to_string(), fp.to_string()))
            });
            if let Some((file, fp)) = owner {
                f["key_file"] = Value::String(file.clone());
                if !named.iter().any(|(p, _)| *p == file) {
                    named.push((file, fp));
                }
            }
        }
        named
    }
}

/// The watched key files to read at start: each watched regular file, and
/// the regular files directly in each watched directory (never through a
/// symlink), `START_FILES` at most, as (path, kernel dev, inode).
pub fn start_files(watcher: &crate::enrich::watch::Watcher) -> Vec<(PathBuf, u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let entries = watcher
        .entries()
        .filter(|(_, w)| w.ns.is_none())
        .map(|(_, w)| w.path.clone());
    files_of(entries, START_FILES)
        .into_iter()
        .map(|(p, md)| (p, crate::enrich::devnum::kdev(md.dev()), md.ino()))
        .collect()
}

/// The regular files among `paths` and directly in those that are
/// directories (not below, never through a symlink), in path order, at
/// most `max`.
pub fn files_of(
    paths: impl IntoIterator<Item = PathBuf>,
    max: usize,
) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut add = |p: PathBuf, md: std::fs::Metadata| {
        if out.len() < max && md.file_type().is_file() {
            out.push((p, md));
        }
    };
    let mut paths: Vec<PathBuf> = paths.into_iter().collect();
    paths.sort();
    for path in paths {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            let Ok(dir) = std::fs::read_dir(&path) else {
                continue;
            };
            let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                if let Ok(m) = std::fs::symlink_metadata(&f) {
                    add(f, m);
                }
            }
        } else {
            add(path, md);
        }
    }
    out
}

/// The fingerprints of a scan report's findings.
fn fingerprints(report: &Value) -> impl Iterator<Item = &str> {
    report
        .get("findings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|f| {
            ["fingerprint", "ssh_fingerprint"]
                .into_iter()
                .filter_map(move |k| f.get(k).and_then(Value::as_str))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_the_findings_whose_key_it_read() {
        let mut b = KeyBook::default();
        assert!(b.wants(1, 10));
        assert!(!b.wants(1, 10), "each key file is read once");
        let ca = json!({"findings": [
            {"kind": "ed25519", "fingerprint": "SHA256:aaa"},
            {"kind": "rsa", "fingerprint": "SHA256:bbb", "ssh_fingerprint": "SHA256:ccc"},
        ]});
        assert_eq!(b.learn("/etc/ssl/private/ca.key", &ca), 3);
        // A copy read later does not take the original's keys.
        let copy = json!({"findings": [{"kind": "ed25519", "fingerprint": "SHA256:aaa"}]});
        assert_eq!(b.learn("/tmp/copy.key", &copy), 0);
        assert_eq!(b.owner("SHA256:aaa"), Some("/etc/ssl/private/ca.key"));
        let mut dump = json!({"file_kind": "elf-core", "findings": [
            {"kind": "ed25519", "fingerprint": "SHA256:aaa"},
            {"kind": "ec-p256", "fingerprint": "SHA256:zzz"},
            {"kind": "openssh", "ssh_fingerprint": "SHA256:ccc"},
        ]});
        let named = b.name(&mut dump);
        assert_eq!(
            named,
            vec![(
                "/etc/ssl/private/ca.key".to_string(),
                "SHA256:aaa".to_string()
            )]
        );
        assert_eq!(dump["findings"][0]["key_file"], "/etc/ssl/private/ca.key");
        assert!(dump["findings"][1].get("key_file").is_none());
        assert_eq!(dump["findings"][2]["key_file"], "/etc/ssl/private/ca.key");
    }
}
