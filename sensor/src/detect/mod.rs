//! Rules: turn enriched events into alerts. This stage knows the policy
//! (key paths, key-name rules, the allowlist) and nothing of the kernel.
//! Here: the policy, and its key-file, memory and dump-file-access rules
//! (the dump rules are in `detect_dumps.rs`); each rule's name, technique,
//! stage and verdict are in `rules.rs`.

use std::{collections::HashMap, path::Path};

use allowance::{AllowRule, PlaceSel};

pub mod agent_socket;
pub mod allow_ids;
mod allowance;
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
const O_PATH: u32 = 0o10000000;

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
            .map(|a| AllowRule::of(a, &key_paths))
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

    /// Does a `[[protected]]` rule name the executable `exe`?
    pub fn protects_exe(&self, exe: &str) -> bool {
        !exe.is_empty() && self.protected_exes.iter().any(|e| e == exe)
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
