//! Key agents and their sockets (`agent-socket-use`): which programs are
//! agents (`[agents] exes`, by executable identity), and which socket
//! files they bound. The kernel learns an agent's socket at its bind
//! (`sensor-ebpf/src/probes/agent.rs`) and tells user space; the sockets
//! agents already held when keysentry started, or received from systemd
//! (socket activation: gpg-agent), are found here, from the agents'
//! descriptors, at start and every 30 s, and put in the kernel's
//! `AGENT_SOCKS`. A socket whose file is gone (or is another file now) is
//! dropped from both.

use std::{
    collections::HashMap,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use sensor_common::{AgentSock, IGEN_ANY, InodeKey};

use crate::enrich::{
    devnum::kdev,
    rootfiles::{open_raw, openat2},
    watch::inode_key,
};

/// A socket a key agent bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSocket {
    /// The socket file as the agent named it, absolute in the agent's
    /// mount namespace.
    pub path: String,
    /// The agent process (at bind, or holding it when found).
    pub pid: u32,
    pub exe: String,
    pub uid: u32,
    pub loginuid: Option<u32>,
}

/// The agents' executables and the sockets they bound.
#[derive(Debug, Default)]
pub struct Agents {
    /// `[agents] protected`: `[[protected]]` processes' sockets count.
    pub protected: bool,
    exes: Vec<(InodeKey, PathBuf)>,
    socks: HashMap<InodeKey, AgentSocket>,
}

impl Agents {
    /// The configured agents present on this host.
    pub fn new(exes: &[PathBuf], protected: bool) -> Self {
        let exes = exes
            .iter()
            .filter_map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|md| (inode_key(&md), p.clone()))
            })
            .collect();
        Self {
            protected,
            exes,
            socks: HashMap::new(),
        }
    }

    /// The agents' executable identities (for the kernel's `AGENT_EXES`).
    pub fn exe_keys(&self) -> Vec<InodeKey> {
        self.exes.iter().map(|(k, _)| *k).collect()
    }

    /// The socket at `key`, if an agent bound it.
    pub fn socket(&self, key: &InodeKey) -> Option<&AgentSocket> {
        self.socks.get(key)
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// The kernel saw an agent bind `path` (as the agent passed it).
    pub fn bound(&mut self, key: InodeKey, s: AgentSocket) {
        self.socks.insert(key, s);
    }

    /// Brings the table in line with the sockets the agents hold now:
    /// returns those not known yet, each with its kernel entry, and those
    /// no agent holds any more (the agent exited or closed it; the kernel
    /// entry goes too). Agents are recognised by their executable's
    /// identity (/proc/PID/exe), their sockets by the descriptors they
    /// hold, the socket file looked up in the agent's own root without
    /// following a symlink. A socket bound by a process that then forked
    /// and exited (ssh-agent) is held by its child.
    /// `protected`: the `[[protected]]` processes whose sockets count
    /// (`[agents] protected`).
    pub fn sync(&mut self, protected: &[u32]) -> (Vec<(InodeKey, AgentSock)>, Vec<InodeKey>) {
        let mut fresh = Vec::new();
        if self.exes.is_empty() && protected.is_empty() && self.socks.is_empty() {
            return (fresh, Vec::new());
        }
        let Ok(procs) = procfs::process::all_processes() else {
            return (fresh, Vec::new());
        };
        let mut held: HashMap<InodeKey, AgentSocket> = HashMap::new();
        // Sockets with a path, per network namespace as each agent sees
        // them (read once per namespace).
        let mut bound_by_ns: HashMap<u64, HashMap<u64, PathBuf>> = HashMap::new();
        for p in procs.flatten() {
            let pid = p.pid() as u32;
            let Ok(md) = std::fs::metadata(format!("/proc/{pid}/exe")) else {
                continue;
            };
            let id = inode_key(&md);
            let exe = match self.exes.iter().find(|(k, _)| *k == id) {
                Some((_, exe)) => exe.to_string_lossy().into_owned(),
                None if protected.contains(&pid) => std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => continue,
            };
            let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            let bound = bound_by_ns.entry(ns.ino()).or_insert_with(|| {
                p.unix()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|e| {
                        let path = e.path?;
                        (!path.as_os_str().as_bytes().starts_with(b"@")).then_some((e.inode, path))
                    })
                    .collect()
            });
            let Ok(fds) = p.fd() else { continue };
            let (uid, loginuid) = owner(pid);
            for fd in fds.flatten() {
                let procfs::process::FDTarget::Socket(ino) = fd.target else {
                    continue;
                };
                let Some(path) = bound.get(&ino) else {
                    continue;
                };
                let Some(key) = socket_file(pid, path) else {
                    continue;
                };
                held.entry(key).or_insert_with(|| AgentSocket {
                    path: path.to_string_lossy().into_owned(),
                    pid,
                    exe: exe.clone(),
                    uid,
                    loginuid,
                });
            }
        }
        let gone: Vec<InodeKey> = self
            .socks
            .keys()
            .filter(|k| !held.contains_key(k))
            .copied()
            .collect();
        for k in &gone {
            self.socks.remove(k);
        }
        for (key, s) in held {
            if self.socks.contains_key(&key) {
                continue;
            }
            fresh.push((
                key,
                AgentSock {
                    tgid: s.pid,
                    uid: s.uid,
                    loginuid: s.loginuid.unwrap_or(sensor_common::NO_LOGINUID),
                    igen: IGEN_ANY,
                },
            ));
            self.socks.insert(key, s);
        }
        (fresh, gone)
    }
}

/// A process's uid and login uid.
fn owner(pid: u32) -> (u32, Option<u32>) {
    let uid = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    let loginuid = std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|l| *l != sensor_common::NO_LOGINUID);
    (uid, loginuid)
}

/// The socket file at `path` in process `pid`'s root.
pub fn socket_file(pid: u32, path: &Path) -> Option<InodeKey> {
    socket_file_from(Path::new(&format!("/proc/{pid}/root")), path)
}

/// The socket file at absolute `path` under `root`: resolved inside it
/// (RESOLVE_IN_ROOT), never through a symlink, and only a socket.
fn socket_file_from(root: &Path, path: &Path) -> Option<InodeKey> {
    if !path.is_absolute() {
        return None;
    }
    let dir = open_raw(libc::AT_FDCWD, root, libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
    let fd = openat2(
        &dir,
        path,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let md = std::fs::File::from(fd).metadata().ok()?;
    use std::os::unix::fs::FileTypeExt;
    if !md.file_type().is_socket() {
        return None;
    }
    Some(InodeKey {
        dev: kdev(md.dev()),
        _pad: 0,
        ino: md.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket file is found through its root, never through a symlink,
    /// and a regular file is not a socket.
    #[test]
    fn socket_files_by_identity() {
        let dir = std::env::temp_dir().join(format!("ks-agents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let md = std::fs::symlink_metadata(&sock).unwrap();
        let key = socket_file_from(Path::new("/"), &sock).unwrap();
        assert_eq!((key.dev, key.ino), (kdev(md.dev()), md.ino()));
        std::os::unix::fs::symlink(&sock, dir.join("link")).unwrap();
        assert_eq!(socket_file_from(Path::new("/"), &dir.join("link")), None);
        std::fs::write(dir.join("plain"), b"x").unwrap();
        assert_eq!(socket_file_from(Path::new("/"), &dir.join("plain")), None);
        assert_eq!(socket_file_from(Path::new("/"), Path::new("rel")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
