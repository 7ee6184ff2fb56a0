//! Key paths inside other mount namespaces (`[[key_path]] scope = "all"`):
//! a container's `/etc/ssl/private` is another directory than the host's,
//! with other inodes. Each mount namespace keysentry sees (a process
//! exec'd in it, or a sweep of /proc every [`SWEEP`]) has its scope-"all"
//! key paths resolved against a member process's root, and what they name
//! there goes into the kernel's watch map like a host key path's entries,
//! under the same key path (`Watched::ns`).
//!
//! The resolution runs on a thread of its own (a container controls its
//! mounts: a FUSE file system mounted at a key path may never answer, and
//! only this thread would wait). It never leaves that root and never
//! follows a symlink it did not expect: the key path is opened with
//! openat2 RESOLVE_IN_ROOT from the member's `/proc/PID/root` (`..` and
//! absolute symlinks stay inside it, magic links refused), and a key
//! directory is walked by descriptor, symlinks not followed. The namespace
//! is checked again after its root is opened (a pid reused meanwhile names
//! another process).
//!
//! Not covered: a file opened before its namespace was resolved (a
//! container reading its key within the first moments after its first
//! exec), and mount namespaces no process has exec'd in since keysentry
//! started, until the next sweep.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::File,
    os::{
        fd::OwnedFd,
        unix::{ffi::OsStrExt, fs::MetadataExt, fs::OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use sensor_common::{InodeKey, WATCH_CHILDREN, WATCH_SELF};

use super::devnum::kdev;

/// How often every process's mount namespace is looked at (namespaces
/// nothing exec'd in, namespaces gone) and every namespace resolved again.
pub const SWEEP: Duration = Duration::from_secs(30);
/// A namespace is resolved again at most this often on execs in it (the
/// last exec's resolution is never skipped, only delayed: a runtime's
/// first exec may come before its last mount).
const SETTLE: Duration = Duration::from_millis(500);
/// Most entries per namespace (files and directories under its key paths).
pub const MAX_PER_NS: usize = 4096;
/// Deepest directory level walked under a key directory.
const MAX_DEPTH: usize = 16;
/// Exec hints queued for the thread at most (more are dropped: the sweep
/// finds their namespaces).
const HINTS: usize = 4096;

/// One inode a scope-"all" key path names in a namespace.
#[derive(Debug)]
pub struct NsEntry {
    pub key: InodeKey,
    /// The key path's index (`watch_id`).
    pub watch_id: u32,
    /// WATCH_SELF (a file) or WATCH_CHILDREN (a directory).
    pub flags: u32,
    /// The path inside the namespace.
    pub path: PathBuf,
    /// The inode, O_PATH: keysentry's open of it stamps the kernel's entry
    /// with the inode's generation once the entry is in.
    pub handle: Option<File>,
}

/// What the thread found.
#[derive(Debug)]
pub enum Found {
    /// The key paths of namespace `ns` (its inode number), resolved from
    /// the root of `pid`: every entry there is now.
    Resolved {
        ns: u64,
        pid: u32,
        entries: Vec<NsEntry>,
    },
    /// No process is in namespace `ns` any more.
    Gone { ns: u64 },
}

enum Msg {
    Exec(u32),
    /// The scope-"all" key paths changed (a reload): (watch_id, path).
    Paths(Vec<(u32, PathBuf)>),
}

/// The resolving thread: hints in, results out.
pub struct NsKeys {
    tx: mpsc::SyncSender<Msg>,
    rx: mpsc::Receiver<Found>,
}

/// The mount namespace (its nsfs inode number) of `pid`.
pub fn mnt_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// The pid namespace (its nsfs inode number) of `pid`.
pub fn pid_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The host's namespace of `kind` ("mnt", "pid"): init's (keysentry's own
/// mount namespace may be private: the unit's PrivateTmp), or keysentry's
/// own where init's cannot be read (keysentry itself confined).
pub fn host_ns(kind: &str) -> Option<u64> {
    ["/proc/1/ns", "/proc/self/ns"]
        .iter()
        .find_map(|d| std::fs::metadata(format!("{d}/{kind}")).ok())
        .map(|m| m.ino())
}

/// The mount and pid namespaces of the running process `pid` whose start
/// time (boot ns, as the kernel's records give it) is `start_ns` (0:
/// unknown, not checked), when either is not the host's (init's).
pub fn namespaces_of(pid: u32, start_ns: u64) -> Option<crate::alert::Namespaces> {
    if start_ns != 0 && !started_at(pid, start_ns) {
        return None;
    }
    let n = crate::alert::Namespaces {
        mnt: mnt_ns(pid)?,
        pid: pid_ns(pid)?,
    };
    let host = (host_ns("mnt")?, host_ns("pid")?);
    (host != (n.mnt, n.pid)).then_some(n)
}

/// Is process `pid` the one that started at `start_ns` (boot ns, as the
/// kernel's records give it), not a later process given its number?
pub fn started_at(pid: u32, start_ns: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // starttime, in clock ticks: field 22, the 20th after the comm.
    let ticks = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .and_then(|rest| rest.split(' ').nth(19))
        .and_then(|t| t.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks == Some(start_ns / (1_000_000_000 / hz))
}

/// The scope-"all" key paths of a configuration, with their indices.
pub fn scoped(cfg: &crate::config::Config) -> Vec<(u32, PathBuf)> {
    cfg.key_path
        .iter()
        .enumerate()
        .filter(|(_, k)| k.scope == crate::config::KeyScope::All)
        .map(|(i, k)| (i as u32, k.path.clone()))
        .collect()
}

impl NsKeys {
    /// Starts the thread for `paths` (scope "all"); None when there are
    /// none or the host's namespace is unknown.
    pub fn start(paths: Vec<(u32, PathBuf)>) -> Option<Self> {
        if paths.is_empty() {
            return None;
        }
        let Some(host) = host_ns("mnt") else {
            tracing::warn!(
                "key paths in other mount namespaces are not watched: no namespace of its own"
            );
            return None;
        };
        let (tx, hints) = mpsc::sync_channel(HINTS);
        let (out, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("ks-ns-keys".into())
            .spawn(move || Resolver::new(host, paths, out).run(hints));
        if let Err(e) = spawned {
            tracing::warn!("key paths in other mount namespaces are not watched: {e}");
            return None;
        }
        tracing::info!("scope-\"all\" key paths: resolved in every mount namespace seen");
        Some(Self { tx, rx })
    }

    /// A process exec'd: its namespace is resolved if it is new, or again
    /// (its mounts may have changed).
    pub fn exec(&self, pid: u32) {
        let _ = self.tx.try_send(Msg::Exec(pid));
    }

    /// New scope-"all" key paths: every namespace is resolved again.
    pub fn set_paths(&self, paths: Vec<(u32, PathBuf)>) {
        let _ = self.tx.send(Msg::Paths(paths));
    }

    /// Results since the last call.
    pub fn take(&self) -> Vec<Found> {
        self.rx.try_iter().collect()
    }
}

struct Space {
    last: Instant,
    /// A resolution is owed at this time (execs within SETTLE).
    due: Option<Instant>,
    /// The last exec'd (or swept) member.
    pid: u32,
}

struct Resolver {
    host: u64,
    paths: Vec<(u32, PathBuf)>,
    spaces: HashMap<u64, Space>,
    out: mpsc::Sender<Found>,
}

impl Resolver {
    fn new(host: u64, paths: Vec<(u32, PathBuf)>, out: mpsc::Sender<Found>) -> Self {
        Self {
            host,
            paths,
            spaces: HashMap::new(),
            out,
        }
    }

    fn run(mut self, hints: mpsc::Receiver<Msg>) {
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sweep {
                if self.sweep().is_err() {
                    return;
                }
                next_sweep = Instant::now() + SWEEP;
            }
            if self.settle(Instant::now()).is_err() {
                return;
            }
            let wait = self
                .spaces
                .values()
                .filter_map(|s| s.due)
                .chain([next_sweep])
                .min()
                .unwrap_or(next_sweep)
                .saturating_duration_since(Instant::now());
            match hints.recv_timeout(wait) {
                Ok(Msg::Exec(pid)) => {
                    if self.exec(pid).is_err() {
                        return;
                    }
                }
                Ok(Msg::Paths(p)) => {
                    self.paths = p;
                    next_sweep = Instant::now();
                    for s in self.spaces.values_mut() {
                        s.due = Some(Instant::now());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// An exec in `pid`: its namespace now, or after SETTLE.
    fn exec(&mut self, pid: u32) -> Result<(), ()> {
        let Some(ns) = mnt_ns(pid) else { return Ok(()) };
        if ns == self.host {
            return Ok(());
        }
        let now = Instant::now();
        match self.spaces.get_mut(&ns) {
            Some(s) => {
                s.pid = pid;
                if now.duration_since(s.last) < SETTLE {
                    s.due.get_or_insert(s.last + SETTLE);
                    return Ok(());
                }
            }
            None => {
                self.spaces.insert(
                    ns,
                    Space {
                        last: now,
                        due: None,
                        pid,
                    },
                );
            }
        }
        self.resolve(ns)
    }

    /// Namespaces whose owed resolution is due.
    fn settle(&mut self, now: Instant) -> Result<(), ()> {
        let due: Vec<u64> = self
            .spaces
            .iter()
            .filter(|(_, s)| s.due.is_some_and(|d| d <= now))
            .map(|(ns, _)| *ns)
            .collect();
        for ns in due {
            self.resolve(ns)?;
        }
        Ok(())
    }

    /// Every process's namespace: new ones resolved, all resolved again,
    /// the ones no process is in any more reported gone.
    fn sweep(&mut self) -> Result<(), ()> {
        let mut members: HashMap<u64, u32> = HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ns) = mnt_ns(pid)
                && ns != self.host
            {
                members.entry(ns).or_insert(pid);
            }
        }
        let gone: Vec<u64> = self
            .spaces
            .keys()
            .filter(|ns| !members.contains_key(ns))
            .copied()
            .collect();
        for ns in gone {
            self.spaces.remove(&ns);
            self.out.send(Found::Gone { ns }).map_err(|_| ())?;
        }
        for (ns, pid) in members {
            let now = Instant::now();
            let s = self.spaces.entry(ns).or_insert(Space {
                last: now,
                due: None,
                pid,
            });
            // The member exec'd last, if it is still one.
            if mnt_ns(s.pid) != Some(ns) {
                s.pid = pid;
            }
            self.resolve(ns)?;
        }
        Ok(())
    }

    /// Resolves the key paths in `ns` from its member's root and sends
    /// what they name there. Err: keysentry is stopping.
    fn resolve(&mut self, ns: u64) -> Result<(), ()> {
        let Some(s) = self.spaces.get_mut(&ns) else {
            return Ok(());
        };
        s.last = Instant::now();
        s.due = None;
        let pid = s.pid;
        // O_PATH|O_DIRECTORY: the magic link is the point here.
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(format!("/proc/{pid}/root"));
        // The root opened is the namespace's only if the process is still
        // in it (a reused pid is another process).
        let Ok(root) = root else { return Ok(()) };
        if mnt_ns(pid) != Some(ns) {
            return Ok(());
        }
        let mut entries = Vec::new();
        for (id, path) in &self.paths {
            resolve_path(&root, *id, path, &mut entries);
        }
        tracing::debug!(
            "mount namespace {ns} (pid {pid}): {} inode(s) under scope-\"all\" key paths",
            entries.len()
        );
        self.out
            .send(Found::Resolved { ns, pid, entries })
            .map_err(|_| ())
    }
}

/// `path` (absolute, as configured) inside `root`: the file, or the
/// directory and everything under it.
fn resolve_path(root: &File, id: u32, path: &Path, out: &mut Vec<NsEntry>) {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let rel = path.strip_prefix("/").unwrap_or(path);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let Ok(fd) = openat2(root, rel, how) else {
        return;
    };
    let f = File::from(fd);
    let Ok(md) = f.metadata() else { return };
    if md.is_file() {
        push(out, id, path.to_path_buf(), &md, WATCH_SELF, Some(f));
    } else if md.is_dir() {
        push(out, id, path.to_path_buf(), &md, WATCH_CHILDREN, None);
        // The directory to read: reopened from the O_PATH handle (no path
        // walked again).
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        if let Ok(dir) = openat2(&f, ".", how) {
            walk(dir, id, path, 1, out);
        }
    }
}

/// The entries of directory `dir` (at `path`), by descriptor: no symlink
/// followed, no other file system's special files.
fn walk(dir: OwnedFd, id: u32, path: &Path, depth: usize, out: &mut Vec<NsEntry>) {
    use nix::{
        dir::{Dir, Type},
        fcntl::OFlag,
        sys::stat::Mode,
    };
    let Ok(fd) = dir.try_clone() else { return };
    let Ok(mut d) = Dir::from_fd(dir) else { return };
    let mut subdirs: Vec<(OwnedFd, PathBuf)> = Vec::new();
    for e in d.iter().flatten() {
        if out.len() >= MAX_PER_NS {
            return;
        }
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let child = path.join(OsStr::from_bytes(name));
        match e.file_type() {
            Some(Type::File) | Some(Type::Directory) | None => {}
            _ => continue,
        }
        let Ok(cfd) = nix::fcntl::openat(
            &fd,
            e.file_name(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let f = File::from(cfd);
        let Ok(md) = f.metadata() else { continue };
        if md.is_file() {
            push(out, id, child, &md, WATCH_SELF, Some(f));
        } else if md.is_dir() {
            push(out, id, child.clone(), &md, WATCH_CHILDREN, None);
            if depth < MAX_DEPTH
                && let Ok(sub) = nix::fcntl::openat(
                    &fd,
                    e.file_name(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            {
                subdirs.push((sub, child));
            }
        }
    }
    for (sub, child) in subdirs {
        walk(sub, id, &child, depth + 1, out);
    }
}

fn push(
    out: &mut Vec<NsEntry>,
    id: u32,
    path: PathBuf,
    md: &std::fs::Metadata,
    flags: u32,
    handle: Option<File>,
) {
    if out.len() >= MAX_PER_NS {
        return;
    }
    out.push(NsEntry {
        key: InodeKey {
            dev: kdev(md.dev()),
            _pad: 0,
            ino: md.ino(),
        },
        watch_id: id,
        flags,
        path,
        handle,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key directory resolved inside a root: its files and directories,
    /// a symlink out of the root neither followed nor listed.
    #[test]
    fn resolves_inside_the_root_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/ssl/private/sub")).unwrap();
        std::fs::write(root.join("etc/ssl/private/a.pem"), "k").unwrap();
        std::fs::write(root.join("etc/ssl/private/sub/b.pem"), "k").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.pem"), "k").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("host.pem"),
            root.join("etc/ssl/private/link.pem"),
        )
        .unwrap();
        // An absolute symlink on the way resolves inside the root.
        std::os::unix::fs::symlink("/etc/ssl", root.join("ssl")).unwrap();
        let r = File::open(root).unwrap();
        let mut out = Vec::new();
        resolve_path(&r, 3, Path::new("/ssl/private"), &mut out);
        let mut paths: Vec<String> = out
            .iter()
            .map(|e| e.path.to_string_lossy().into_owned())
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/ssl/private",
                "/ssl/private/a.pem",
                "/ssl/private/sub",
                "/ssl/private/sub/b.pem"
            ]
        );
        assert!(out.iter().all(|e| e.watch_id == 3));
        let a = out.iter().find(|e| e.path.ends_with("a.pem")).unwrap();
        let md = std::fs::metadata(root.join("etc/ssl/private/a.pem")).unwrap();
        assert_eq!((a.key.ino, a.flags), (md.ino(), WATCH_SELF));
        assert!(a.handle.is_some());
        // `..` does not leave the root.
        let mut out = Vec::new();
        let up = format!("/../../../..{}", outside.path().join("host.pem").display());
        resolve_path(&r, 0, Path::new(&up), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
