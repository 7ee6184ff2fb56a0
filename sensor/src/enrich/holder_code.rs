//! The code key holders run: the executable and every library mapped
//! executable in a protected process, a key holder or an allowlisted
//! program (its `libcrypto`, a vendor PKCS#11 module it dlopened from
//! /opt). These files join the code-loading paths (`key-holder-tamper`)
//! while keysentry runs: a write, a rename or a link onto one of them is
//! code put into the key holder the next time it loads it.
//!
//! The mappings come from /proc/PID/maps, read on a thread of its own:
//! reading maps takes the process's mmap lock, which a process the
//! attacker runs can keep busy, so the event loop never reads them. Each
//! mapped file is taken only if the path names, in keysentry's own mount
//! namespace, the inode the process mapped (a process in another mount
//! namespace maps files keysentry cannot name by that path).

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// How often the holders' mappings are read.
const EVERY: Duration = Duration::from_secs(5);
/// Most files taken (the code watcher's roots grow by at most this many).
pub const MAX_FILES: usize = 1024;

/// A file a key holder has mapped executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub path: PathBuf,
    /// "comm (pid N)" of the first process seen with it mapped.
    pub by: String,
}

/// The reader thread and what it found.
pub struct HolderCode {
    pids: Arc<Mutex<Vec<(u32, String)>>>,
    rx: mpsc::Receiver<Vec<Loaded>>,
}

impl HolderCode {
    /// Starts the reader thread.
    pub fn start() -> std::io::Result<Self> {
        let pids: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let shared = pids.clone();
        std::thread::Builder::new()
            .name("ks-holder-code".into())
            .spawn(move || {
                let mut seen: HashSet<PathBuf> = HashSet::new();
                loop {
                    let now = shared.lock().map(|p| p.clone()).unwrap_or_default();
                    let mut fresh = Vec::new();
                    for (pid, comm) in now {
                        for path in mapped_code(pid) {
                            if seen.len() >= MAX_FILES {
                                break;
                            }
                            if seen.insert(path.clone()) {
                                fresh.push(Loaded {
                                    path,
                                    by: format!("{comm} (pid {pid})"),
                                });
                            }
                        }
                    }
                    if !fresh.is_empty() && tx.send(fresh).is_err() {
                        return;
                    }
                    std::thread::sleep(EVERY);
                }
            })?;
        Ok(Self { pids, rx })
    }

    /// The processes whose code counts now.
    pub fn set_pids(&self, pids: Vec<(u32, String)>) {
        if let Ok(mut p) = self.pids.lock() {
            *p = pids;
        }
    }

    /// Files found since the last call.
    pub fn take(&self) -> Vec<Loaded> {
        let mut out = Vec::new();
        while let Ok(v) = self.rx.try_recv() {
            out.extend(v);
        }
        out
    }
}

/// The files process `pid` has mapped executable that its path names in
/// keysentry's own mount namespace.
pub fn mapped_code(pid: u32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let Some(m) = parse_line(line) else { continue };
        if out.iter().any(|p| p == m.path) {
            continue;
        }
        // The inode the process mapped, not whatever has the name here.
        let same = std::fs::metadata(m.path).is_ok_and(|md| {
            md.is_file() && md.ino() == m.ino && super::devnum::kdev(md.dev()) == m.dev
        });
        if same {
            out.push(m.path.to_path_buf());
        }
    }
    out
}

/// One executable file mapping of a maps line.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    path: &'a Path,
    /// The kernel's device number (major << 20 | minor).
    dev: u32,
    ino: u64,
}

/// `start-end perms offset major:minor inode path`: executable mappings
/// of a file by absolute path, not deleted.
fn parse_line(line: &str) -> Option<Mapping<'_>> {
    let mut f = line.splitn(6, ' ');
    let _range = f.next()?;
    let perms = f.next()?;
    let _off = f.next()?;
    let dev = f.next()?;
    let ino: u64 = f.next()?.parse().ok()?;
    let path = f.next()?.trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') || ino == 0 || !path.starts_with('/') {
        return None;
    }
    if path.ends_with(" (deleted)") {
        return None;
    }
    let (maj, min) = dev.split_once(':')?;
    let maj = u32::from_str_radix(maj, 16).ok()?;
    let min = u32::from_str_radix(min, 16).ok()?;
    Some(Mapping {
        path: Path::new(path),
        dev: (maj << 20) | min,
        ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_line(
            "7f1c2a000000-7f1c2a1b0000 r-xp 00028000 fd:01 1835362                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(m.path, Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(m.dev, (0xfd << 20) | 1);
        assert_eq!(m.ino, 1835362);
        // Data, anonymous, special and deleted mappings are not code
        // keysentry can watch.
        for l in [
            "7f1c2a1b0000-7f1c2a200000 r--p 001b0000 fd:01 1835362   /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7ffd1000-7ffd2000 rw-p 00000000 00:00 0                  [stack]",
            "7ffd3000-7ffd4000 r-xp 00000000 00:00 0                  [vdso]",
            "7f00-7f10 r-xp 00000000 fd:01 99 /opt/hsm/libpkcs11.so (deleted)",
            "7f00-7f10 r-xp 00000000 00:01 99 /memfd:jit (deleted)",
        ] {
            assert_eq!(parse_line(l), None, "{l}");
        }
        // A path with spaces is whole.
        let m = parse_line("7f00-7f10 r-xp 00000000 08:02 7 /opt/my hsm/lib x.so").unwrap();
        assert_eq!(m.path, Path::new("/opt/my hsm/lib x.so"));
    }

    #[test]
    fn own_code_is_found() {
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        let code = mapped_code(std::process::id());
        assert!(code.contains(&me), "{code:?} lacks {}", me.display());
    }
}
