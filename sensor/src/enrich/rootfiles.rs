//! Files only root may write, for keysentry's own state: regular files
//! read without following a symlink or blocking on a FIFO, root-only
//! directories (checked, created 0700), files created in them never
//! through a symlink and written whole or not at all, and the core
//! handler's spool (`agent::corehandler` writes a record per core it kept
//! or dropped; `detect::dumps` reads it into the `core-dump` alert).

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("a path with NUL")
}

/// openat(2) of `path` at `dirfd` (close-on-exec).
pub(crate) fn open_raw(dirfd: i32, path: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = cstr(path).map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; the descriptor returned is ours.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2(2) of `path` at `dir` (close-on-exec), resolved as `resolve`
/// (RESOLVE_* bits) says.
pub(crate) fn openat2(
    dir: &impl AsRawFd,
    path: &Path,
    flags: i32,
    mode: u64,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let c = cstr(path).map_err(std::io::Error::other)?;
    // SAFETY: open_how is plain data; all zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode;
    how.resolve = resolve;
    // SAFETY: openat2 with a valid C string, struct and its size; the
    // descriptor returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ks-rootfiles-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
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
    fn name_parts_are_safe() {
        assert_eq!(name_part("a/b c"), "a_b_c");
        assert_eq!(name_part(""), "_");
    }
}
