//! Rules: turn enriched events into alerts. This stage knows the policy
//! (key paths, key-name rules, the allowlist) and nothing of the kernel.
//! Here: the policy, and its key-file, memory and dump-file-access rules
//! (the dump rules are in `detect_dumps.rs`); each rule's name, technique,
//! stage and verdict are in `rules.rs`.

use std::{collections::HashMap, path::Path};

pub mod agent_socket;
pub mod allow_ids;
pub mod dump_rules;
pub mod dumps;
pub mod enforce;
pub mod environ;
pub mod escape;
pub mod evidence;
pub mod fdaccess;
pub mod flows;
pub mod guards;
pub mod kernel_reader;
pub mod keyring;
pub mod keys;
pub mod keyscan;
pub mod lost;
pub mod memory;
pub mod raw_read;
pub mod renames;
pub mod sends;
pub mod swap;
pub mod tamper;
pub mod units;

pub use crate::enrich::facts::{KeyAccess, MemAccess, TrackedOpen, via};

use crate::{
    alert::{Alert, FlowDetail, LineageStep, MemDetail, OpenDetail, ProcessCtx, Severity, Target},
    config::Config,
    enrich::proctab::ProcInfo,
    redact,
    rules::Rule,
};

const O_ACCMODE: u32 = 0o3;
/// Cgroups whose place `Policy` remembers (emptied when full).
const MAX_PLACES: usize = 4096;
const O_PATH: u32 = 0o10000000;

#[derive(Debug, Clone)]
struct AllowRule {
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
    fn in_container(&self) -> bool {
        self.container_name.is_some() || self.container_image.is_some()
    }
}

/// Where the processes of a cgroup run, as the allowances select it.
#[derive(Debug, Clone, Default)]
struct PlaceSel {
    /// The system manager's unit (None: in none, or in a user's own
    /// manager's tree, whose units its user names).
    unit: Option<String>,
    /// The container's name and image, from root's runtime state.
    container_name: Option<String>,
    container_image: Option<String>,
}

/// A path and its canonical form, for comparing with real exe paths.
fn exe_forms(p: &Path) -> Vec<String> {
    let mut v = vec![p.to_string_lossy().into_owned()];
    if let Ok(c) = std::fs::canonicalize(p) {
        v.push(c.to_string_lossy().into_owned());
    }
    v
}

/// The kinds of path the code watcher watches (`Policy::code_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// `[tamper] code_paths`.
    Configured,
    /// `[tamper] dump_paths`.
    DumpConfig,
    /// `[tamper] unit_paths`: the content decides (`detect::units`).
    Unit,
    /// A file a key holder runs (`enrich::holder_code`).
    HolderFile,
}

/// The detection policy, compiled from the config.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub key_paths: Vec<String>,
    pub key_names: Vec<String>,
    allow: Vec<AllowRule>,
    /// `[dumps] state_dir`: the core handler's spool.
    pub handler_state: std::path::PathBuf,
    /// How many of the code watcher's paths are code paths; then come
    /// `[tamper] dump_paths`, then the files key holders run
    /// (`enrich::holder_code`).
    pub code_paths: usize,
    pub dump_paths: usize,
    /// `[tamper] unit_paths` (after the dump paths in the code watcher).
    pub unit_paths: Vec<std::path::PathBuf>,
    /// `[[protected]]` executables (and their canonical paths).
    protected_exes: Vec<String>,
    /// Where each cgroup an event came from runs, when an `[[allow]]`
    /// selects by unit or container (`learn_place`).
    places: HashMap<u64, PlaceSel>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Self {
        let key_paths: Vec<String> = cfg
            .key_path
            .iter()
            .map(|k| k.path.to_string_lossy().into_owned())
            .collect();
        let key_names = cfg.key_name.iter().map(|k| k.to_string()).collect();
        let allow = cfg
            .allow
            .iter()
            .map(|a| AllowRule {
                // A container's path means nothing on the host: as written.
                exe: if a.in_container() {
                    vec![a.exe.to_string_lossy().into_owned()]
                } else {
                    exe_forms(&a.exe)
                },
                target: a.target.as_deref().map(exe_forms),
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
            })
            .collect();
        Self {
            key_paths,
            key_names,
            allow,
            handler_state: cfg.dumps.state_dir.clone(),
            code_paths: cfg.tamper.code_paths.len(),
            dump_paths: cfg.tamper.dump_paths.len(),
            unit_paths: cfg.tamper.unit_paths.clone(),
            protected_exes: cfg
                .protected
                .iter()
                .filter_map(|p| p.exe.as_deref())
                .flat_map(exe_forms)
                .collect(),
            places: HashMap::new(),
        }
    }

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

    /// What the code watcher's path `id` is.
    pub fn code_kind(&self, id: u32) -> CodeKind {
        let id = id as usize;
        if id < self.code_paths {
            CodeKind::Configured
        } else if id < self.code_paths + self.dump_paths {
            CodeKind::DumpConfig
        } else if id < self.code_paths + self.dump_paths + self.unit_paths.len() {
            CodeKind::Unit
        } else {
            CodeKind::HolderFile
        }
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

    /// Does a `[[protected]]` rule name the executable `exe`?
    pub fn protects_exe(&self, exe: &str) -> bool {
        !exe.is_empty() && self.protected_exes.iter().any(|e| e == exe)
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
}

impl Policy {
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

pub fn errno_text(ret: i64) -> String {
    if ret >= 0 {
        return String::new();
    }
    format!("{:?}", nix::errno::Errno::from_raw((-ret) as i32))
}

impl Policy {
    /// The memory-access rules. None for self access, an allowlisted
    /// actor, or a tracer starting its own child (attach before the
    /// child's first exec, as strace and gdb do).
    pub fn memory_access(&self, m: &MemAccess<'_>, host: &str, ts: String) -> Option<Alert> {
        let (a, t) = (m.actor, m.target);
        if a.pid == t.pid {
            return None;
        }
        if self.allowed_memory(a, &t.exe) {
            return None;
        }
        if m.rule == Rule::PtraceAttach && t.ppid == a.pid && !t.execed {
            return None;
        }
        let ok = m.ret >= 0;
        let environ = m.rule == Rule::ProcEnvironRead;
        let access_check = m.rule == Rule::ProcessAccess;
        // The rule's verdict (rules.rs) is for a protected process reached;
        // the other cases lower it.
        let lowered = match (m.target_protected, ok) {
            (true, true) => None,
            // An access check passed, not a memory read seen happening:
            // the same verdict whatever the syscall then did.
            (true, false) if access_check => None,
            // A process's environment holds tokens, not its memory.
            _ if environ || access_check => Some((Severity::Low, 25)),
            (true, false) => Some((Severity::Medium, 55)),
            (false, true) => Some((Severity::Low, 30)),
            (false, false) => Some((Severity::Low, 20)),
        };
        // The technique: a ptrace write injects; an attach-mode access
        // check reaches the memory (rules.rs, the rules' variants).
        let attack = match (m.rule, m.access) {
            (Rule::PtraceAttach, "write") | (Rule::ProcessAccess, "attach") => m.rule.alt_attack(),
            _ => m.rule.attack(),
        };
        let what = if m.target_protected {
            "protected process"
        } else {
            "process"
        };
        let message = format!(
            "{} (pid {}, uid {}) {} {} {} {} (pid {}) via {}{}",
            a.comm,
            a.pid,
            a.uid,
            if ok { "did" } else { "tried" },
            match m.access {
                _ if access_check => "an access (kernel ptrace check) to",
                _ if environ => "a read of the environment of",
                "attach" => "a ptrace attach to",
                "write" => "a memory write to",
                _ => "a memory read of",
            },
            what,
            t.comm,
            t.pid,
            m.op,
            if ok {
                String::new()
            } else {
                format!(" and failed ({})", errno_text(m.ret))
            }
        );
        let mut alert = rule_alert(m.rule, a, process_target(t), host, ts)
            .attack(attack)
            .message(message)
            .memory(MemDetail {
                op: m.op.clone(),
                access: m.access,
                result: if ok { "success" } else { "failed" },
                errno: (!ok).then(|| errno_text(m.ret)),
                target_protected: m.target_protected,
                recon: m.recon,
                path: m.path.clone(),
                thread: m.thread,
            });
        if let Some((severity, score)) = lowered {
            alert = alert.verdict(severity, score);
        }
        if m.recon {
            alert.score += 10;
        }
        Some(alert)
    }
}

pub fn access(flags: u32) -> &'static str {
    if flags & O_PATH != 0 {
        return "path";
    }
    match flags & O_ACCMODE {
        0 => "read",
        1 => "write",
        _ => "read-write",
    }
}

pub fn errno_name(ret: i64) -> Option<&'static str> {
    match -ret {
        1 => Some("EPERM"),
        13 => Some("EACCES"),
        _ => None,
    }
}

pub fn process_ctx(p: &ProcInfo) -> ProcessCtx {
    ProcessCtx {
        pid: p.pid,
        ppid: p.ppid,
        uid: p.uid,
        comm: p.comm.clone(),
        exe: p.exe.to_string(),
        cmdline: redact::cmdline(&p.argv),
        allow_bypass: None,
        cgroup_id: p.cgroup_id,
        start_ns: p.start_ns,
        ..Default::default()
    }
}

/// Incident id of an actor: one per process lifetime (correlation of
/// several processes into one incident comes with the incident engine).
pub fn incident_id(p: &ProcInfo) -> String {
    format!("inc-{}-{:x}", p.pid, p.start_ns)
}

/// A process as an alert's target.
pub fn process_target(p: &ProcInfo) -> Target {
    Target::Process {
        pid: p.pid,
        comm: p.comm.clone(),
        exe: p.exe.to_string(),
        protected: None,
        container: None,
        cgroup_id: p.cgroup_id,
    }
}

/// `Alert::new` (rules.rs) for an actor of the process table: its context
/// and its own incident id.
pub fn rule_alert(rule: Rule, actor: &ProcInfo, target: Target, host: &str, ts: String) -> Alert {
    Alert::new(
        rule,
        process_ctx(actor),
        incident_id(actor),
        target,
        host,
        ts,
    )
}

impl Policy {
    /// The `key-file-open` rule (`container-escape` for a key opened from
    /// a container through another namespace's mount). None when allowed
    /// or not an access (O_PATH).
    pub fn key_file_open(&self, k: &KeyAccess<'_>, host: &str, ts: String) -> Option<Alert> {
        let acc = access(k.flags);
        if acc == "path" {
            return None;
        }
        // An allowance is for the key where the program keeps it, not for
        // a way out of its container.
        let escape = k.escape && !k.failed;
        if !escape && self.allowed(k.actor, k.watch_id) {
            return None;
        }
        let mut matched = Vec::new();
        if k.watch_id.is_some() || k.by_key_path {
            matched.push("key_path");
        }
        let key_name: Vec<String> = (0..32)
            .filter(|b| k.name_rules & (1 << b) != 0)
            .filter_map(|b| self.key_names.get(b).cloned())
            .collect();
        if k.by_name || !key_name.is_empty() {
            matched.push("key_name");
        }
        let p = k.actor;
        // A non-root user's own file that only a key-name pattern matched
        // (ssh reading ~/.ssh/id_ed25519): `own_key` lowers its score.
        let own_key =
            !k.failed && p.uid != 0 && k.owner == p.uid && k.watch_id.is_none() && !k.by_key_path;
        // An open that created the key file: a new key, inventory (never a
        // failed open).
        let created = k.created && acc != "read";
        let (rule, message) = if created {
            (
                Rule::KeyCreated,
                format!(
                    "{} (pid {}, uid {}) created key file {}",
                    p.comm, p.pid, p.uid, k.path
                ),
            )
        } else if escape {
            (
                Rule::ContainerEscape,
                format!(
                    "{} (pid {}, uid {}) opened key file {} for {} from its container, through a mount of another mount namespace (another process's /proc/<pid>/root)",
                    p.comm, p.pid, p.uid, k.path, acc
                ),
            )
        } else if k.failed {
            (
                Rule::KeyFileOpen,
                format!(
                    "{} (pid {}, uid {}) tried to open key file {} for {} and failed ({})",
                    p.comm,
                    p.pid,
                    p.uid,
                    k.path,
                    acc,
                    errno_name(k.ret).unwrap_or("error")
                ),
            )
        } else {
            (
                Rule::KeyFileOpen,
                format!(
                    "{} (pid {}, uid {}) opened key file {} for {}",
                    p.comm, p.pid, p.uid, k.path, acc
                ),
            )
        };
        let target = Target::File {
            path: k.path.clone(),
            dev: k.dev,
            inode: k.ino,
        };
        let alert = rule_alert(rule, p, target, host, ts)
            .message(message)
            .open(OpenDetail {
                result: if k.failed { "failed" } else { "success" },
                errno: if k.failed { errno_name(k.ret) } else { None },
                access: acc,
                via: k.via,
                arg: k.arg.clone(),
                matched,
                key_path: k
                    .watch_id
                    .and_then(|i| self.key_paths.get(i as usize).cloned()),
                key_name,
                fd_op: None,
                opened_by: None,
                own_key: own_key && !created,
                fresh_key: k.fresh && !k.failed && !created,
            });
        // A failed attempt is medium; the rule's verdict is a success's.
        Some(if k.failed {
            alert.verdict(Severity::Medium, 40)
        } else {
            alert
        })
    }
}

impl Policy {
    /// The `dump-file-access` rule (`lineage` is read only for an alert).
    /// None for the file's writer and its children (they handle it), an
    /// O_PATH open, and a reader allowlisted for dumps (`dumps = true`) or,
    /// for a copy of a key, for keys.
    pub fn dump_file_access(
        &self,
        o: TrackedOpen<'_>,
        lineage: impl FnOnce() -> Vec<LineageStep>,
        host: &str,
        ts: String,
    ) -> Option<Alert> {
        let actor = o.actor;
        if o.origin_pid == Some(actor.pid)
            || (o.origin_pid.is_some() && o.origin_pid == Some(actor.ppid))
        {
            return None;
        }
        if access(o.flags) == "path" {
            return None;
        }
        if o.dump {
            if self.allowed_dumps(actor) {
                return None;
            }
        } else if self.allowed(actor, None) {
            return None;
        }
        let message = format!(
            "{} (pid {}, uid {}) {} {} {} for {}{}",
            actor.comm,
            actor.pid,
            actor.uid,
            if o.via == "open" {
                "opened"
            } else {
                "accessed"
            },
            if o.dump {
                "dump file"
            } else {
                "a copy of key material,"
            },
            o.path,
            access(o.flags),
            if o.via == "open" {
                String::new()
            } else {
                format!(" through an fd it did not open ({})", o.via)
            }
        );
        let target = Target::File {
            path: o.path,
            dev: o.dev,
            inode: o.ino,
        };
        let alert = rule_alert(Rule::DumpFileAccess, actor, target, host, ts)
            .message(message)
            .flow(FlowDetail {
                via: o.via,
                tracked_id: Some(o.id),
                lineage: lineage(),
                dumped: o.dumped,
                ..Default::default()
            });
        // A weak copy's open is as weak as the copy.
        Some(if o.weak {
            alert.verdict(Severity::Low, 25)
        } else {
            alert
        })
    }
}

#[cfg(test)]
mod dump_tests;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod lsm_tests;
#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod tests;
