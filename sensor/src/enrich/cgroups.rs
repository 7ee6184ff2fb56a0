//! Where a process runs: the cgroup v2 path of the cgroup id the kernel
//! stamps on every record (`bpf_get_current_cgroup_id`), and the systemd
//! unit and container that path names. Every alert's `process` gets them
//! on its way out (`Context::place`, from `Pipeline::emit`).
//!
//! The id is the cgroup directory's kernfs id, which is also a file
//! handle: `open_by_handle_at` on the cgroup2 root gives the directory
//! without walking the tree, and /proc/self/fd names it. Ids are not
//! reused, so an answer is kept (`MAX_PLACES` of them). A replay answers
//! from the recording's `cgroup:<id>` facts.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, OnceLock},
};

use crate::alert::ContainerCtx;

/// Cgroups remembered (the map is emptied when full).
const MAX_PLACES: usize = 4096;

/// `FILEID_KERNFS`: a kernfs node's 64-bit id as a file handle.
const FILEID_KERNFS: i32 = 0xfe;

/// A cgroup and what its path names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The cgroup v2 path ("/system.slice/vault.service").
    pub cgroup: String,
    /// The systemd unit the process runs in: the innermost `.service` or
    /// `.scope` of the path.
    pub unit: Option<String>,
    pub container: Option<ContainerCtx>,
}

/// Cgroup id -> place, for the ids alerts have named.
#[derive(Default)]
pub struct Places {
    known: HashMap<u64, Option<Arc<Place>>>,
}

impl Places {
    /// The place of cgroup `id` (`path` reads its path when it is not
    /// known yet).
    pub fn get(&mut self, id: u64, path: impl FnOnce() -> Option<String>) -> Option<Arc<Place>> {
        if let Some(p) = self.known.get(&id) {
            return p.clone();
        }
        if self.known.len() >= MAX_PLACES {
            self.known.clear();
        }
        let p = path().map(|c| Arc::new(place(&c)));
        self.known.insert(id, p.clone());
        p
    }
}

/// The cgroup2 mount and a descriptor of its root, opened once.
fn root() -> Option<&'static (String, File)> {
    static ROOT: OnceLock<Option<(String, File)>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = crate::kernel::loader::probes::cgroup2_root()?;
        let f = File::open(dir).ok()?;
        Some((dir.to_string(), f))
    })
    .as_ref()
}

/// The cgroup v2 path of cgroup `id`, None when no cgroup2 hierarchy is
/// mounted or the cgroup is gone.
pub fn path_of(id: u64) -> Option<String> {
    let (dir, rootf) = root()?;
    #[repr(C)]
    struct KernfsHandle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    let mut h = KernfsHandle {
        bytes: 8,
        kind: FILEID_KERNFS,
        id,
    };
    // SAFETY: `h` is a file_handle header followed by its 8 bytes; the
    // returned descriptor is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            rootf.as_raw_fd(),
            (&raw mut h).cast::<libc::file_handle>(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor the call just returned, owned here only.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let rel = full.to_str()?.strip_prefix(dir.as_str())?;
    Some(if rel.is_empty() {
        "/".into()
    } else {
        rel.into()
    })
}

/// What a cgroup path names: the innermost systemd unit and the container
/// of the runtimes' own naming (systemd and cgroupfs drivers).
pub fn place(cgroup: &str) -> Place {
    let segs: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    let unit = segs
        .iter()
        .rev()
        .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
        .map(|s| s.to_string());
    let container = segs
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| container_of(s, i.checked_sub(1).map(|p| segs[p])));
    Place {
        cgroup: cgroup.to_string(),
        unit,
        container,
    }
}

fn hex_id(s: &str) -> Option<&str> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

/// The container a path segment names (`parent`: the segment before it).
fn container_of(seg: &str, parent: Option<&str>) -> Option<ContainerCtx> {
    let c = |runtime: &'static str, id: &str| {
        Some(ContainerCtx {
            id: id.to_string(),
            runtime,
            ..Default::default()
        })
    };
    // systemd driver: <prefix><id>.scope (conmon's own scopes are not the
    // container).
    if let Some(body) = seg.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = body.strip_prefix(prefix).and_then(hex_id) {
                return c(runtime, id);
            }
        }
    }
    // lxc 4+ (and LXD): lxc.payload.<name>; older: /lxc/<name>.
    if let Some(name) = seg.strip_prefix("lxc.payload.") {
        return c("lxc", name);
    }
    match parent {
        // cgroupfs driver: /docker/<id>, /libpod_parent/libpod-<id>.
        Some("docker") => hex_id(seg).and_then(|id| c("docker", id)),
        Some("lxc") => c("lxc", seg),
        _ => seg
            .strip_prefix("libpod-")
            .and_then(hex_id)
            .and_then(|id| c("podman", id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn units_and_containers_by_their_runtimes_names() {
        let p = place("/system.slice/vault.service");
        assert_eq!(p.unit.as_deref(), Some("vault.service"));
        assert_eq!(p.container, None);
        let p = place(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(p.unit, Some(format!("docker-{ID}.scope")));
        let c = p.container.unwrap();
        assert_eq!((c.runtime, c.id.as_str()), ("docker", ID));
        for (path, runtime) in [
            (format!("/docker/{ID}"), "docker"),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            (format!("/kubepods.slice/crio-{ID}.scope"), "cri-o"),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                "podman",
            ),
            (format!("/libpod_parent/libpod-{ID}"), "podman"),
        ] {
            let c = place(&path).container.unwrap_or_else(|| panic!("{path}"));
            assert_eq!((c.runtime, c.id.as_str()), (runtime, ID), "{path}");
        }
        let c = place("/lxc.payload.ca-1").container.unwrap();
        assert_eq!((c.runtime, c.id.as_str()), ("lxc", "ca-1"));
        // Not containers: conmon's scope, a short id, a plain service.
        for path in [
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            "/system.slice/docker-abc.scope".to_string(),
            "/system.slice/docker.service".to_string(),
            "/".to_string(),
        ] {
            assert_eq!(place(&path).container, None, "{path}");
        }
        assert_eq!(place("/").unit, None);
    }

    #[test]
    fn places_are_kept_by_id() {
        let mut p = Places::default();
        let a = p.get(7, || Some("/a.service".into())).unwrap();
        assert_eq!(a.unit.as_deref(), Some("a.service"));
        // Known: the path is not read again.
        assert_eq!(p.get(7, || panic!("read again")), Some(a));
        assert_eq!(p.get(8, || None), None);
        assert_eq!(p.get(8, || panic!("read again")), None);
    }

    #[test]
    fn the_running_process_cgroup_by_its_id() {
        let Some(id) = crate::enrich::proctab::cgroup_id(std::process::id() as i32) else {
            eprintln!("SKIP: no cgroup v2 id for this process");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let want = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        assert_eq!(path_of(id).as_deref(), Some(want));
    }
}
