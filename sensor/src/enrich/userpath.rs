//! A path argument of a syscall (a rename's, a failed open's), resolved as
//! the process that made the call saw it: from its root, its cwd or the
//! directory descriptor it named, held open while the caller looks.

use std::path::PathBuf;

/// A path argument as the process saw it: `shown` (as the process named
/// it, made absolute) and `seen` (the same file as reachable from here).
/// The process's root (absolute argument) or cwd / `dfd` (relative) is
/// held as an O_PATH descriptor and `seen` goes through it, so the
/// process exiting while the caller looks (a rename handled while `mv`
/// exits) cannot make the lookup fail. When the process is already gone,
/// an absolute argument is looked up from here; a relative one cannot be.
pub struct UserPath {
    pub shown: PathBuf,
    pub seen: PathBuf,
    /// Keeps `seen`'s /proc/self/fd/N valid.
    _base: Option<std::fs::File>,
}

pub fn user_path(pid: u32, dfd: i32, arg: &str) -> UserPath {
    use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
    let absolute = arg.starts_with('/');
    let base = if absolute {
        format!("/proc/{pid}/root")
    } else if dfd == -100 {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dfd}")
    };
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&base)
        .ok();
    let Some(dir) = held else {
        // Gone (or dfd is not a directory): the argument as it is.
        return UserPath {
            shown: PathBuf::from(arg),
            seen: if absolute {
                PathBuf::from(arg)
            } else {
                PathBuf::from(&base).join(arg)
            },
            _base: None,
        };
    };
    let via = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let shown = if absolute {
        PathBuf::from(arg)
    } else {
        std::fs::read_link(&via)
            .map(|b| b.join(arg))
            .unwrap_or_else(|_| PathBuf::from(arg))
    };
    UserPath {
        shown,
        seen: via.join(arg.trim_start_matches('/')),
        _base: Some(dir),
    }
}

/// [`user_path`] and the metadata of what it names, not following a
/// final symlink.
pub fn stat_user_path(pid: u32, dfd: i32, arg: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let up = user_path(pid, dfd, arg);
    let md = std::fs::symlink_metadata(&up.seen).ok()?;
    Some((up.shown, md))
}
