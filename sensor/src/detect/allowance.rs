//! Allowances: whether an `[[allow]]` holds for a process. An entry
//! names a program by path; it holds for a process whose executable is
//! that file (on the host, or inside its container for a container's
//! entry: `ProcInfo::exe_genuine`, `exe_in_root`), that nothing else
//! controls (no loader variables at exec, not traced: `allow_bypass`),
//! and that runs where the entry says (its `unit`, `container_name`,
//! `container_image`: `Policy::learn_place`). The kernel's side of the
//! allowlist is `allow_ids.rs` and `enforce.rs`.

use std::path::Path;

use super::{Policy, exe_forms};
use crate::{config::Allow, enrich::proctab::ProcInfo};

/// Cgroups whose place `Policy` remembers (emptied when full).
const MAX_PLACES: usize = 4096;

#[derive(Debug, Clone)]
pub(super) struct AllowRule {
    /// The configured exe and its canonical form.
    exe: Vec<String>,
    /// Restricts the allowance to one key_path (by index).
    key_path: Option<u32>,
    /// A memory-access allowance for targets running this exe.
    target: Option<Vec<String>>,
    /// May open registered dump files.
    dumps: bool,
    /// May load code into the kernel and sample other processes.
    kernel_reader: bool,
    /// May open kernel memory and the key stores' block devices.
    raw_read: bool,
    /// May use other users' key agents.
    agent_use: bool,
    /// May change the code-loading paths, with the programs it runs.
    code_change: bool,
    /// May read other users' kernel keys.
    keyring_read: bool,
    /// Holds only in this systemd unit of the system manager.
    unit: Option<String>,
    /// Holds only in this container (by name) ...
    container_name: Option<String>,
    /// ... or in containers of this image. `exe` is then the path inside
    /// the container, checked there (`ProcInfo::exe_in_root`).
    container_image: Option<String>,
}

impl AllowRule {
    /// The rule of config entry `a` (`key_paths`: the configured key
    /// paths, by index).
    pub(super) fn of(a: &Allow, key_paths: &[String]) -> Self {
        // A container's paths mean nothing on the host: as written.
        let forms = |p: &Path| {
            if a.in_container() {
                vec![p.to_string_lossy().into_owned()]
            } else {
                exe_forms(p)
            }
        };
        AllowRule {
            exe: forms(&a.exe),
            target: a.target.as_deref().map(forms),
            dumps: a.dumps,
            kernel_reader: a.kernel_reader,
            raw_read: a.raw_read,
            agent_use: a.agent_use,
            code_change: a.code_change,
            keyring_read: a.keyring_read,
            unit: a.unit.clone(),
            container_name: a.container_name.clone(),
            container_image: a.container_image.clone(),
            key_path: a.key_path.as_ref().and_then(|p| {
                key_paths
                    .iter()
                    .position(|k| Path::new(k) == p.as_path())
                    .map(|i| i as u32)
            }),
        }
    }

    fn in_container(&self) -> bool {
        self.container_name.is_some() || self.container_image.is_some()
    }
}

/// Where the processes of a cgroup run, as the allowances select it.
#[derive(Debug, Clone, Default)]
pub(super) struct PlaceSel {
    /// The system manager's unit (None: in none, or in a user's own
    /// manager's tree, whose units its user names).
    unit: Option<String>,
    /// The container's name and image, from root's runtime state.
    container_name: Option<String>,
    container_image: Option<String>,
}

impl Policy {
    /// Whether an `[[allow]]` selects by unit or container (the pipeline
    /// then tells `learn_place` where each event's cgroup is).
    pub fn needs_place(&self) -> bool {
        self.allow
            .iter()
            .any(|a| a.unit.is_some() || a.in_container())
    }

    /// Does the policy know where cgroup `id` is?
    pub fn knows_place(&self, id: u64) -> bool {
        self.places.contains_key(&id)
    }

    /// Cgroup `id` is at `at`.
    pub fn learn_place(&mut self, id: u64, at: &crate::enrich::protect::Where) {
        if self.places.len() >= MAX_PLACES {
            self.places.clear();
        }
        let c = at.container.as_ref();
        self.places.insert(
            id,
            PlaceSel {
                unit: at.unit.clone().filter(|_| !at.rootless),
                container_name: c.and_then(|c| c.name.clone()),
                container_image: c.and_then(|c| c.image.clone()),
            },
        );
    }

    /// Does an `[[allow]]` with a container selector name `exe` (the
    /// exec then checks the path inside the process's root)?
    pub fn names_container_exe(&self, exe: &str) -> bool {
        self.allow
            .iter()
            .any(|a| a.in_container() && a.exe.iter().any(|e| e == exe))
    }

    /// Does allowance `a` hold for `p`: its program is the file `a`
    /// names (on the host, or inside its container for a container's
    /// allowance), nothing else controls it, and it runs where `a` says?
    fn holds(&self, a: &AllowRule, p: &ProcInfo) -> bool {
        let identity = if a.in_container() {
            p.exe_in_root
        } else {
            p.exe_genuine
        };
        identity && p.allow_bypass.is_none() && self.holds_where(a, p)
    }

    /// Does allowance `a` hold where `p` runs (its `unit` or container,
    /// if it names one)?
    fn holds_where(&self, a: &AllowRule, p: &ProcInfo) -> bool {
        if a.unit.is_none() && !a.in_container() {
            return true;
        }
        let Some(at) = self.places.get(&p.cgroup_id) else {
            return false;
        };
        let unit = a.unit.as_ref().is_none_or(|u| at.unit.as_ref() == Some(u));
        let name = a
            .container_name
            .as_ref()
            .is_none_or(|n| at.container_name.as_ref() == Some(n));
        let image = a.container_image.as_ref().is_none_or(|want| {
            at.container_image
                .as_deref()
                .is_some_and(|have| crate::enrich::runtimes::image_matches(want, have))
        });
        unit && name && image
    }

    /// Is the actor allowed to open a key covered by `watch_id` (None:
    /// matched by name only)? An allowance names an executable by path and
    /// holds for a process whose executable is the file that path names
    /// here (its (dev, inode) at exec, `exe_genuine`) and that nothing else
    /// controls (no loader variables at exec, not traced: `allow_bypass`).
    pub fn allowed(&self, p: &ProcInfo, watch_id: Option<u32>) -> bool {
        let exe = &*p.exe;
        !exe.is_empty()
            && self.allow.iter().any(|a| {
                a.target.is_none()
                    && !a.dumps
                    && !a.kernel_reader
                    && !a.raw_read
                    && !a.agent_use
                    && !a.code_change
                    && !a.keyring_read
                    && a.exe.iter().any(|e| e == exe)
                    && match a.key_path {
                        None => true,
                        Some(k) => watch_id == Some(k),
                    }
                    && self.holds(a, p)
            })
    }

    /// Does an `[[allow]]` entry (of any kind) name `exe`?
    pub fn names_exe(&self, exe: &str) -> bool {
        !exe.is_empty()
            && self.allow.iter().any(|a| {
                a.exe.iter().any(|e| e == exe)
                    || a.target
                        .as_ref()
                        .is_some_and(|t| t.iter().any(|e| e == exe))
            })
    }

    /// Why an `[[allow]]` naming the actor's executable does not hold for
    /// it (None when no entry names it, or when it holds).
    pub fn allowance_withdrawn(&self, p: &ProcInfo) -> Option<String> {
        let naming: Vec<&AllowRule> = self
            .allow
            .iter()
            .filter(|a| !p.exe.is_empty() && a.exe.iter().any(|e| **e == *p.exe))
            .collect();
        if naming.is_empty() {
            return None;
        }
        if let Some(why) = &p.allow_bypass {
            return Some(why.to_string());
        }
        let host = naming.iter().any(|a| !a.in_container());
        let container = naming.iter().any(|a| a.in_container());
        let genuine = (host && p.exe_genuine) || (container && p.exe_in_root);
        (!genuine).then(|| {
            format!(
                "its executable is not the file {} names {}",
                p.exe,
                if host {
                    "on this host"
                } else {
                    "in its container"
                }
            )
        })
    }

    /// Does an `[[allow]]` of the kind `kind` picks name the actor's
    /// executable, and does the allowance hold for it (`holds`)?
    fn allowed_kind(&self, p: &ProcInfo, kind: impl Fn(&AllowRule) -> bool) -> bool {
        !p.exe.is_empty()
            && self
                .allow
                .iter()
                .any(|a| kind(a) && a.exe.iter().any(|e| **e == *p.exe) && self.holds(a, p))
    }

    /// Is the actor allowed to open dump files (an `[[allow]]` with `dumps`)?
    pub fn allowed_dumps(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.dumps)
    }

    /// Is the actor allowed to load code into the kernel or sample other
    /// processes (an `[[allow]]` with `kernel_reader`)?
    pub fn allowed_kernel_reader(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.kernel_reader)
    }

    /// Is the actor allowed to open kernel memory and the key stores'
    /// block devices (an `[[allow]]` with `raw_read`)?
    pub fn allowed_raw_read(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.raw_read)
    }

    /// Is the actor allowed to use other users' key agents (an
    /// `[[allow]]` with `agent_use`)?
    pub fn allowed_agent_use(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.agent_use)
    }

    /// Is this process allowed to change the code-loading paths (an
    /// `[[allow]]` with `code_change`)? The caller checks its ancestors
    /// too (the programs a package manager runs).
    pub fn allowed_code_change(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.code_change)
    }

    /// Is the actor allowed to read other users' kernel keys (an
    /// `[[allow]]` with `keyring_read`)?
    pub fn allowed_keyring_read(&self, p: &ProcInfo) -> bool {
        self.allowed_kind(p, |a| a.keyring_read)
    }

    /// Is the actor allowed to access the memory of processes running
    /// `target`?
    pub fn allowed_memory(&self, p: &ProcInfo, target: &str) -> bool {
        !p.exe.is_empty()
            && self.allow.iter().any(|a| {
                a.exe.iter().any(|e| **e == *p.exe)
                    && a.target
                        .as_ref()
                        .is_some_and(|t| t.iter().any(|t| t == target))
                    && self.holds(a, p)
            })
    }
}
