//! The core handler's files: root-only directories opened without
//! following symlinks, the quarantine (cores written under a `.partial`
//! name, renamed when complete, oldest removed first to stay under the
//! cap), the redaction passes over a stored core, and the spool the
//! running sensor reads.

use std::{
    ffi::CString,
    fs::File,
    io::{ErrorKind, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::FileExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use aho_corasick::AhoCorasick;
use anyhow::{Context as _, Result, bail};

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("a path with NUL")
}

fn open_raw(dirfd: i32, path: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = cstr(path).map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; the descriptor returned is ours.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A regular file read whole (at most `max` bytes), never through a
/// symlink, a FIFO or a device: `root_only` also requires it owned by
/// root and writable by no one else.
pub fn read_file(path: &Path, max: u64, root_only: bool) -> Result<Vec<u8>> {
    let fd = open_raw(
        libc::AT_FDCWD,
        path,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )
    .with_context(|| format!("open {}", path.display()))?;
    let f = File::from(fd);
    let md = f.metadata()?;
    if !md.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if root_only && (md.uid() != 0 || md.mode() & 0o022 != 0) {
        bail!("{} is not owned and writable by root only", path.display());
    }
    if md.len() > max {
        bail!("{} is over {max} bytes", path.display());
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `read_file` for a root-owned file.
pub fn read_root_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_file(path, max, true)
}

/// A directory owned by root that no one else may write (`private`: that
/// no one else may even enter, 0700), created so if missing. Opened
/// without following a symlink; returns its descriptor.
pub fn root_dir(path: &Path, private: bool) -> Result<OwnedFd> {
    if !path.is_absolute() {
        bail!("{} is not absolute", path.display());
    }
    if std::fs::symlink_metadata(path).is_err() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("create {}", path.display()))?;
    }
    let fd = open_raw(
        libc::AT_FDCWD,
        path,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .with_context(|| format!("open {}", path.display()))?;
    let md = File::from(fd.try_clone()?).metadata()?;
    let bad = if private { 0o077 } else { 0o022 };
    if md.uid() != 0 || md.mode() & bad != 0 {
        bail!(
            "{} must be a directory owned by root with mode {} (it is uid {}, mode {:o})",
            path.display(),
            if private { "0700" } else { "0755 or stricter" },
            md.uid(),
            md.mode() & 0o7777
        );
    }
    Ok(fd)
}

/// A file created in the directory `dir` (O_EXCL, never through a
/// symlink), mode 0600, open for reading and writing.
pub fn create_in(dir: &OwnedFd, name: &str) -> Result<File> {
    let fd = open_raw(
        dir.as_raw_fd(),
        Path::new(name),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
    .with_context(|| format!("create {name}"))?;
    Ok(File::from(fd))
}

/// Writes `bytes` as `name` in `dir` whole or not at all: a hidden
/// temporary file (0600) synced and renamed over `name`.
pub fn write_new(dir: &OwnedFd, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = format!(".{name}.tmp");
    unlink_in(dir, &tmp);
    let mut f = create_in(dir, &tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    rename_in(dir, &tmp, name)
}

pub fn rename_in(dir: &OwnedFd, from: &str, to: &str) -> Result<()> {
    let (f, t) = (cstr(Path::new(from))?, cstr(Path::new(to))?);
    let d = dir.as_raw_fd();
    // SAFETY: valid C strings and a directory descriptor we hold.
    if unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("rename {from}"));
    }
    Ok(())
}

pub fn unlink_in(dir: &OwnedFd, name: &str) {
    if let Ok(c) = cstr(Path::new(name)) {
        // SAFETY: a valid C string and a directory descriptor we hold.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

/// A file name part made of safe characters only (a comm can hold `/`).
pub fn name_part(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Removes the oldest regular files of `dir` (at `path`) other than
/// `keep` until what is left is at most `cap` bytes. Returns the names
/// removed.
pub fn evict(dir: &OwnedFd, path: &Path, cap: u64, keep: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut files: Vec<(i64, u64, String)> = rd
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            md.is_file().then(|| {
                (
                    md.mtime(),
                    md.len(),
                    e.file_name().to_string_lossy().into_owned(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    let mut removed = Vec::new();
    for (_, len, name) in files {
        if total <= cap {
            break;
        }
        if name == keep {
            continue;
        }
        unlink_in(dir, &name);
        total -= len;
        removed.push(name);
    }
    removed
}

/// Copies what it reads into `out`, up to `cap` bytes: reading past the
/// cap is an error (`over` set).
pub struct Tee<'a, R> {
    pub r: R,
    pub out: Option<&'a mut File>,
    pub bytes: u64,
    pub cap: u64,
    pub over: bool,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        if self.bytes + n as u64 > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the core is over the cap"));
        }
        if let Some(out) = self.out.as_mut() {
            out.write_all(&buf[..n])?;
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads `r` to its end, discarding it (at most `cap` bytes).
pub fn drain(r: impl Read, cap: u64) -> (u64, bool) {
    let mut t = Tee {
        r,
        out: None,
        bytes: 0,
        cap,
        over: false,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match t.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (t.bytes, t.over)
}

/// Every occurrence of a pattern of `ac` in `f` (`max_len`: the longest
/// pattern): (offset, length, pattern index), in bounded memory.
pub fn find_all(
    f: &File,
    ac: &AhoCorasick,
    max_len: usize,
) -> std::io::Result<Vec<(u64, u64, usize)>> {
    const CHUNK: usize = 1 << 20;
    let overlap = max_len.saturating_sub(1);
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut base = 0u64; // file offset of buf[0]
    let mut len = 0usize;
    let mut out = Vec::new();
    loop {
        let n = read_full_at(f, &mut buf[len..], base + len as u64)?;
        let eof = n < buf.len() - len;
        len += n;
        // A match inside the overlap kept for the next window is found
        // again there: the dedup below keeps one.
        for m in ac.find_overlapping_iter(&buf[..len]) {
            out.push((
                base + m.start() as u64,
                m.len() as u64,
                m.pattern().as_usize(),
            ));
        }
        if eof {
            break;
        }
        let keep = overlap.min(len);
        buf.copy_within(len - keep..len, 0);
        base += (len - keep) as u64;
        len = keep;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Overwrites `[off, off + len)` of `f` with zeros.
pub fn zero(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    let zeros = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Records the spool keeps, at most (the oldest go first).
pub const SPOOL_MAX: usize = 1000;

/// The spool directory in `state_dir`.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

/// Writes one spool record (`<pid>.<time>.json`) atomically.
pub fn spool(
    state_dir: &Path,
    pid: &str,
    time: &str,
    record: &serde_json::Value,
) -> Result<PathBuf> {
    root_dir(state_dir, false)?;
    let path = spool_dir(state_dir);
    let dir = root_dir(&path, true)?;
    let name = format!("{}.{}.json", name_part(pid), name_part(time));
    write_new(&dir, &name, serde_json::to_string(record)?.as_bytes())?;
    if let Ok(rd) = std::fs::read_dir(&path) {
        let mut names: Vec<(i64, String)> = rd
            .flatten()
            .filter_map(|e| {
                Some((
                    e.metadata().ok()?.mtime(),
                    e.file_name().to_string_lossy().into_owned(),
                ))
            })
            .collect();
        if names.len() > SPOOL_MAX {
            names.sort();
            for (_, n) in names.iter().take(names.len() - SPOOL_MAX) {
                unlink_in(&dir, n);
            }
        }
    }
    Ok(path.join(name))
}

/// The newest spool record of the crash of `pid` (None: there is none).
pub fn spooled(state_dir: &Path, pid: u32) -> Option<serde_json::Value> {
    let path = spool_dir(state_dir);
    let prefix = format!("{pid}.");
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(&path).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".json"))
        else {
            continue;
        };
        let t: u64 = rest.parse().unwrap_or(0);
        if best.as_ref().is_none_or(|(bt, _)| t >= *bt) {
            best = Some((t, e.path()));
        }
    }
    let text = read_root_file(&best?.1, 1 << 20).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_found_across_chunk_boundaries_once_each() {
        let dir = tempfile_dir();
        let p = dir.join("f");
        let mut data = vec![7u8; (1 << 20) + 100];
        let pat = b"0123456789abcdefXYZ";
        let at = [0usize, (1 << 20) - 5, (1 << 20) + 50];
        for a in at {
            data[a..a + pat.len()].copy_from_slice(pat);
        }
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let ac = AhoCorasick::new([&pat[..]]).unwrap();
        let found = find_all(&f, &ac, pat.len()).unwrap();
        let offs: Vec<u64> = found.iter().map(|m| m.0).collect();
        assert_eq!(offs, at.iter().map(|&a| a as u64).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ks-store-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_quarantine_removes_its_oldest_cores_down_to_the_cap() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED: the quarantine must be root's; run as root");
            return;
        }
        let base = tempfile_dir().join("q-evict");
        let _ = std::fs::remove_dir_all(&base);
        let dir = root_dir(&base, true).unwrap();
        let now = std::time::SystemTime::now();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let f = create_in(&dir, name).unwrap();
            f.set_len(1000).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        // The oldest go first; the core being written stays, whatever its age.
        let removed = evict(&dir, &base, 2000, "old");
        assert_eq!(removed, vec!["mid".to_string()]);
        assert!(base.join("old").exists() && base.join("new").exists());
        assert!(evict(&dir, &base, 2000, "new").is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_quarantine_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED: the quarantine must be root's; run as root");
            return;
        }
        let base = tempfile_dir().join("q-open");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = root_dir(&base, true).unwrap_err().to_string();
        assert!(e.contains("mode 0700"), "{e}");
        let link = tempfile_dir().join("q-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert!(
            root_dir(&link, false).is_err(),
            "a symlink is never followed"
        );
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn reading_past_the_cap_fails_and_says_so() {
        let data = vec![1u8; 5000];
        let mut t = Tee {
            r: &data[..],
            out: None,
            bytes: 0,
            cap: 4096,
            over: false,
        };
        let mut sink = std::io::sink();
        assert!(std::io::copy(&mut t, &mut sink).is_err());
        assert!(t.over);
        let (n, over) = drain(&data[..], 10_000);
        assert_eq!((n, over), (5000, false));
    }

    #[test]
    fn name_parts_are_safe() {
        assert_eq!(name_part("a/b c"), "a_b_c");
        assert_eq!(name_part(""), "_");
    }
}
