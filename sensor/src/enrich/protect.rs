//! Protected processes: which processes hold secrets. Chosen by
//! `[[protected]]` (real exe path, comm, pid file, cgroup), keysentry
//! itself, and, with `[protection] key_holders` (the default), every key
//! holder: a process that opened a watched key file for reading, allowed or
//! not (the kernel protects it in the open's own program, `HOLDER_RULE`;
//! this side learns the reason, the key's path, from the open's record).
//! The set is mirrored in the kernel's PROTECTED map; the kernel also
//! protects children at fork and forgets processes at exit, so this side
//! only decides at start, at exec (a new image: a holder's keys are gone
//! from its memory), at a key open, when a process renames itself (comm
//! rules) and when pid files change.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sensor_common::{HOLDER_RULE, InodeKey};

use crate::{
    config::Config,
    enrich::proctab::{ProcInfo, ProcessTable},
};

/// Value stored for keysentry itself.
pub const SELF_RULE: u32 = u32::MAX;

#[derive(Debug, Clone)]
enum Rule {
    /// The configured exe and its canonical path.
    Exe(Vec<String>),
    Comm(String),
    PidFile(PathBuf),
    /// cgroup v2 directory: its inode is the cgroup id.
    Cgroup(PathBuf),
    /// systemd unit: the innermost `.service` or `.scope` of the process's
    /// cgroup path (`enrich/cgroups.rs`).
    Unit(String),
    /// A container's name, as its runtime's state says it
    /// (`enrich/runtimes.rs`).
    ContainerName(String),
    /// A container's image (`runtimes::image_matches`).
    ContainerImage(String),
}

/// Where a process runs, for the rules that select by it: its cgroup's
/// systemd unit and its container (`Context::where_of`).
#[derive(Debug, Clone, Default)]
pub struct Where {
    /// The cgroup is in a user's own manager's tree (`user@<uid>.service`):
    /// its units are its user's to name.
    pub rootless: bool,
    pub unit: Option<String>,
    pub container: Option<crate::alert::ContainerCtx>,
}

/// Protected executables (identity -> rule value) and comms (NUL padded ->
/// rule value), for the kernel to protect processes at exec.
pub type KernelRules = (Vec<(InodeKey, u32)>, Vec<([u8; 16], u32)>);

/// A change to push into the kernel map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Protect(u32, u32),
    Unprotect(u32),
}

#[derive(Debug, Default)]
pub struct Protector {
    rules: Vec<Rule>,
    /// pid -> rule index + 1 (SELF_RULE for keysentry, HOLDER_RULE for a
    /// key holder).
    set: HashMap<u32, u32>,
    /// `[protection] key_holders`.
    key_holders: bool,
    /// Key holders (pid -> the key file whose open made it one; a child
    /// forked after the open holds its parent's key).
    holders: HashMap<u32, std::sync::Arc<str>>,
}

impl Protector {
    pub fn new(cfg: &Config) -> Self {
        let rules = cfg
            .protected
            .iter()
            .map(|p| {
                if let Some(exe) = &p.exe {
                    let mut v = vec![exe.to_string_lossy().into_owned()];
                    if let Ok(c) = std::fs::canonicalize(exe) {
                        v.push(c.to_string_lossy().into_owned());
                    }
                    Rule::Exe(v)
                } else if let Some(c) = &p.comm {
                    Rule::Comm(c.clone())
                } else if let Some(f) = &p.pid_file {
                    Rule::PidFile(f.clone())
                } else if let Some(u) = &p.unit {
                    Rule::Unit(u.clone())
                } else if let Some(n) = &p.container_name {
                    Rule::ContainerName(n.clone())
                } else if let Some(i) = &p.container_image {
                    Rule::ContainerImage(i.clone())
                } else {
                    let cg = p.cgroup.clone().unwrap_or_default();
                    let rel = cg.strip_prefix("/").unwrap_or(&cg).to_path_buf();
                    Rule::Cgroup(Path::new(cgroup_root()).join(rel))
                }
            })
            .collect();
        Self {
            rules,
            set: HashMap::new(),
            key_holders: cfg.protection.key_holders,
            holders: HashMap::new(),
        }
    }

    /// Why a process is protected, for alerts: "holds PATH" for a key
    /// holder, the `[[protected]]` rule that matched it, or keysentry
    /// itself. None when it is not protected.
    pub fn why(&self, pid: u32) -> Option<String> {
        let rule = *self.set.get(&pid)?;
        Some(match rule {
            SELF_RULE => "keysentry itself".to_string(),
            HOLDER_RULE => match self.holders.get(&pid) {
                Some(path) => format!("holds {path}"),
                None => "holds a key file".to_string(),
            },
            r => match self.rules.get(r as usize - 1) {
                Some(Rule::Exe(v)) => format!("[[protected]] exe = {}", v[0]),
                Some(Rule::Comm(c)) => format!("[[protected]] comm = {c}"),
                Some(Rule::PidFile(f)) => format!("[[protected]] pid_file = {}", f.display()),
                Some(Rule::Cgroup(d)) => format!(
                    "[[protected]] cgroup = /{}",
                    d.strip_prefix(cgroup_root()).unwrap_or(d).display()
                ),
                Some(Rule::Unit(u)) => format!("[[protected]] unit = {u}"),
                Some(Rule::ContainerName(n)) => format!("[[protected]] container_name = {n}"),
                Some(Rule::ContainerImage(i)) => format!("[[protected]] container_image = {i}"),
                None => "[[protected]]".to_string(),
            },
        })
    }

    /// Whether a key open can make `pid` a key holder (the feature is on
    /// and nothing protects it yet).
    pub fn may_hold(&self, pid: u32) -> bool {
        self.key_holders && !self.set.contains_key(&pid)
    }

    /// A process opened the watched key file `path` for reading: with
    /// `[protection] key_holders` it is a key holder from now on (the
    /// kernel made it one in the same instant; the change also protects
    /// the threads it has). A process protected already keeps its reason.
    pub fn on_key_open(&mut self, pid: u32, path: &str) -> Option<Change> {
        if !self.key_holders || self.set.contains_key(&pid) {
            return None;
        }
        self.set.insert(pid, HOLDER_RULE);
        self.holders.insert(pid, std::sync::Arc::from(path));
        Some(Change::Protect(pid, HOLDER_RULE))
    }

    /// (exe identity, rule value) and (comm, rule value) the kernel uses to
    /// protect a process at its exec.
    pub fn kernel_rules(&self) -> KernelRules {
        let mut exes = Vec::new();
        let mut comms = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let v = i as u32 + 1;
            match r {
                Rule::Exe(paths) => {
                    if let Some(md) = paths.iter().find_map(|p| std::fs::metadata(p).ok()) {
                        exes.push((crate::enrich::watch::inode_key(&md), v));
                    }
                }
                Rule::Comm(c) => {
                    let mut k = [0u8; 16];
                    let n = c.len().min(15);
                    k[..n].copy_from_slice(&c.as_bytes()[..n]);
                    comms.push((k, v));
                }
                _ => {}
            }
        }
        (exes, comms)
    }

    pub fn is_protected(&self, pid: u32) -> bool {
        self.set.contains_key(&pid)
    }

    /// Protected only as a key holder (no `[[protected]]` rule).
    pub fn is_holder(&self, pid: u32) -> bool {
        self.set.get(&pid) == Some(&HOLDER_RULE)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// The protected set, (pid, rule), for a recording's header.
    pub fn snapshot(&self) -> Vec<(u32, u32)> {
        self.set.iter().map(|(p, r)| (*p, *r)).collect()
    }

    /// The key holders, (pid, key path), for a recording's header.
    pub fn holders(&self) -> Vec<(u32, String)> {
        self.holders
            .iter()
            .map(|(p, k)| (*p, k.to_string()))
            .collect()
    }

    /// The protected set and key holders of a recording.
    pub fn restore(&mut self, set: &[(u32, u32)], holders: &[(u32, String)]) {
        self.set = set.iter().copied().collect();
        self.holders = holders
            .iter()
            .map(|(p, k)| (*p, std::sync::Arc::from(k.as_str())))
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether a rule names a systemd unit or a container (the caller
    /// then looks up where a process runs for `on_exec` and `initial`).
    pub fn needs_place(&self) -> bool {
        self.rules.iter().any(|r| {
            matches!(
                r,
                Rule::Unit(_) | Rule::ContainerName(_) | Rule::ContainerImage(_)
            )
        })
    }

    /// The rule (index + 1) protecting a process by what it runs; `at`:
    /// where it runs, when a rule needs it.
    fn rule_for(&self, p: &ProcInfo, at: Option<&Where>) -> Option<u32> {
        let unit = at.and_then(|w| w.unit.as_deref());
        let container = at.and_then(|w| w.container.as_ref());
        self.rules
            .iter()
            .position(|r| match r {
                Rule::Exe(v) => v.iter().any(|e| **e == *p.exe),
                Rule::Comm(c) => *c == p.comm,
                Rule::PidFile(f) => read_pid(f) == Some(p.pid),
                Rule::Cgroup(dir) => {
                    p.cgroup_id != 0 && std::fs::metadata(dir).is_ok_and(|m| m.ino() == p.cgroup_id)
                }
                Rule::Unit(u) => unit == Some(u.as_str()),
                Rule::ContainerName(n) => container.and_then(|c| c.name.as_deref()) == Some(n),
                Rule::ContainerImage(i) => container
                    .and_then(|c| c.image.as_deref())
                    .is_some_and(|image| crate::enrich::runtimes::image_matches(i, image)),
            })
            .map(|i| i as u32 + 1)
    }

    /// Everything to protect at start: matching processes and keysentry.
    /// `where_of`: where the processes of a cgroup id run (asked only when
    /// a rule needs it).
    pub fn initial(
        &mut self,
        procs: &ProcessTable,
        self_pid: u32,
        where_of: &mut dyn FnMut(u64) -> Option<Where>,
    ) -> Vec<Change> {
        let mut out = vec![Change::Protect(self_pid, SELF_RULE)];
        self.set.insert(self_pid, SELF_RULE);
        let needs_place = self.needs_place();
        for p in procs.iter() {
            let at = if needs_place {
                where_of(p.cgroup_id)
            } else {
                None
            };
            if let Some(r) = self.rule_for(p, at.as_ref()) {
                self.set.insert(p.pid, r);
                out.push(Change::Protect(p.pid, r));
            }
        }
        out
    }

    /// A process exec'd: it is protected when its new program matches, and
    /// stops being protected (inherited at fork) when it does not.
    pub fn on_exec(&mut self, p: &ProcInfo, at: Option<&Where>) -> Option<Change> {
        match (self.rule_for(p, at), self.set.get(&p.pid).copied()) {
            (Some(r), prev) if prev != Some(r) => {
                self.set.insert(p.pid, r);
                self.holders.remove(&p.pid);
                Some(Change::Protect(p.pid, r))
            }
            (None, Some(prev)) if prev != SELF_RULE => {
                self.set.remove(&p.pid);
                self.holders.remove(&p.pid);
                Some(Change::Unprotect(p.pid))
            }
            _ => None,
        }
    }

    /// A process's leader was renamed (prctl(PR_SET_NAME), a write to
    /// /proc/<pid>/comm): it is protected when a comm rule names its new
    /// comm, as the kernel's task_rename program did already. A process
    /// already protected keeps its rule, and renaming away from a
    /// protected name never lifts protection: the keys it loaded under that
    /// name are still in its memory (only an exec, a new image, does).
    pub fn on_rename(&mut self, pid: u32, comm: &str) -> Option<Change> {
        if self.set.contains_key(&pid) {
            return None;
        }
        let r = self
            .rules
            .iter()
            .position(|r| matches!(r, Rule::Comm(c) if c == comm))? as u32
            + 1;
        self.set.insert(pid, r);
        Some(Change::Protect(pid, r))
    }

    /// Mirrors the kernel's inheritance at fork.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        if let Some(r) = self.set.get(&parent).copied() {
            self.set.insert(child, r);
            if let Some(k) = self.holders.get(&parent).cloned() {
                self.holders.insert(child, k);
            }
        }
    }

    pub fn on_exit(&mut self, pid: u32) {
        self.set.remove(&pid);
        self.holders.remove(&pid);
    }

    /// Re-reads pid files (a daemon restarted): new pids to protect.
    pub fn refresh_pid_files(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if let Rule::PidFile(f) = r
                && let Some(pid) = read_pid(f)
                && !self.set.contains_key(&pid)
                && Path::new(&format!("/proc/{pid}")).exists()
            {
                self.set.insert(pid, i as u32 + 1);
                out.push(Change::Protect(pid, i as u32 + 1));
            }
        }
        out
    }
}

fn read_pid(f: &Path) -> Option<u32> {
    std::fs::read_to_string(f).ok()?.trim().parse().ok()
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on a hybrid host.
fn cgroup_root() -> &'static str {
    crate::kernel::loader::probes::cgroup2_root().unwrap_or("/sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn proc(pid: u32, exe: &str, comm: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            uid: 0,
            comm: comm.into(),
            exe: Arc::from(exe),
            argv: Arc::from([]),
            start_ns: 1,
            cgroup_id: 0,
            execed: true,
            exe_genuine: true,
            exe_in_root: false,
            allow_bypass: None,
        }
    }

    #[test]
    fn rules_exec_fork_exit() {
        let dir = std::env::temp_dir().join(format!("ks-protect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("d.pid");
        std::fs::write(&pid_file, "4242\n").unwrap();
        let cfg = Config::parse(
            &format!(
                "[[protected]]\nexe = \"/usr/bin/vault\"\n[[protected]]\ncomm = \"signerd\"\n[[protected]]\npid_file = \"{}\"\n",
                pid_file.display()
            ),
            "t",
        )
        .unwrap();
        let mut p = Protector::new(&cfg);
        assert_eq!(
            p.initial(&ProcessTable::new(), 7, &mut |_| None),
            vec![Change::Protect(7, SELF_RULE)]
        );
        assert_eq!(
            p.on_exec(&proc(10, "/usr/bin/vault", "vault"), None),
            Some(Change::Protect(10, 1))
        );
        assert_eq!(
            p.on_exec(&proc(11, "/usr/bin/x", "signerd"), None),
            Some(Change::Protect(11, 2))
        );
        assert_eq!(
            p.on_exec(&proc(4242, "/usr/bin/y", "y"), None),
            Some(Change::Protect(4242, 3))
        );
        // A protected process's child is protected until it execs something else.
        p.on_fork(10, 12);
        assert!(p.is_protected(12));
        assert_eq!(
            p.on_exec(&proc(12, "/bin/sh", "sh"), None),
            Some(Change::Unprotect(12))
        );
        assert!(!p.is_protected(12));
        // keysentry stays protected whatever it execs.
        assert_eq!(
            p.on_exec(&proc(7, "/usr/bin/keysentry", "keysentry"), None),
            None
        );
        p.on_exit(10);
        assert!(!p.is_protected(10));
        assert_eq!(
            p.on_exec(&proc(13, "/usr/bin/vaultx", "vaultx"), None),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rename_protects_by_comm_and_never_unprotects() {
        let cfg = Config::parse(
            "[[protected]]\nexe = \"/usr/bin/vault\"\n[[protected]]\ncomm = \"signerd\"\n",
            "t",
        )
        .unwrap();
        let mut p = Protector::new(&cfg);
        p.initial(&ProcessTable::new(), 7, &mut |_| None);
        // Exec'd under another name, then named itself.
        assert_eq!(
            p.on_exec(&proc(20, "/usr/bin/python3", "python3"), None),
            None
        );
        assert_eq!(p.on_rename(20, "signerd"), Some(Change::Protect(20, 2)));
        assert!(p.is_protected(20));
        // Renaming away keeps it protected, and back again changes nothing.
        assert_eq!(p.on_rename(20, "worker"), None);
        assert!(p.is_protected(20));
        assert_eq!(p.on_rename(20, "signerd"), None);
        // Other names protect nothing; exe rules are not comm rules.
        assert_eq!(p.on_rename(21, "signer"), None);
        assert_eq!(p.on_rename(21, "vault"), None);
        assert!(!p.is_protected(21));
        // Already protected by its exe: keeps that rule.
        assert_eq!(
            p.on_exec(&proc(22, "/usr/bin/vault", "vault"), None),
            Some(Change::Protect(22, 1))
        );
        assert_eq!(p.on_rename(22, "signerd"), None);
        assert_eq!(
            p.snapshot().into_iter().find(|(pid, _)| *pid == 22),
            Some((22, 1))
        );
        // keysentry itself stays as it is.
        assert_eq!(p.on_rename(7, "signerd"), None);
        // An exec (a new image) under an unprotected name ends it.
        assert_eq!(
            p.on_exec(&proc(20, "/bin/sh", "sh"), None),
            Some(Change::Unprotect(20))
        );
        assert!(!p.is_protected(20));
    }

    #[test]
    fn key_holders_until_exec_or_exit_and_why() {
        let cfg = Config::parse("[[protected]]\nexe = \"/usr/bin/vault\"\n", "t").unwrap();
        let mut p = Protector::new(&cfg);
        p.initial(&ProcessTable::new(), 7, &mut |_| None);
        // A key open makes a holder, with its key as the reason.
        assert_eq!(
            p.on_key_open(30, "/etc/ssl/private/ca.key"),
            Some(Change::Protect(30, HOLDER_RULE))
        );
        assert!(p.is_protected(30) && p.is_holder(30));
        assert_eq!(p.why(30).as_deref(), Some("holds /etc/ssl/private/ca.key"));
        // A second key changes nothing: the first reason stays.
        assert_eq!(p.on_key_open(30, "/etc/ssl/private/b.key"), None);
        // A child forked after the open holds the key too.
        p.on_fork(30, 31);
        assert!(p.is_holder(31));
        assert_eq!(p.why(31).as_deref(), Some("holds /etc/ssl/private/ca.key"));
        // Exec: a new image, the key is gone from its memory.
        assert_eq!(
            p.on_exec(&proc(31, "/bin/sh", "sh"), None),
            Some(Change::Unprotect(31))
        );
        assert!(!p.is_protected(31) && p.why(31).is_none());
        // ... unless the new program is a protected one: its rule now.
        p.on_key_open(32, "/k");
        assert_eq!(
            p.on_exec(&proc(32, "/usr/bin/vault", "vault"), None),
            Some(Change::Protect(32, 1))
        );
        assert!(!p.is_holder(32));
        assert_eq!(
            p.why(32).as_deref(),
            Some("[[protected]] exe = /usr/bin/vault")
        );
        // A process protected by a rule keeps its rule when it opens a key.
        assert_eq!(p.on_key_open(32, "/k"), None);
        assert_eq!(p.why(7).as_deref(), Some("keysentry itself"));
        // A recording carries the holders.
        let (set, holders) = (p.snapshot(), p.holders());
        let mut q = Protector::new(&cfg);
        q.restore(&set, &holders);
        assert_eq!(q.why(30).as_deref(), Some("holds /etc/ssl/private/ca.key"));
        p.on_exit(30);
        assert!(!p.is_protected(30) && p.why(30).is_none());
        // Off: key opens protect nothing.
        let off = Config::parse("[protection]\nkey_holders = false\n", "t").unwrap();
        let mut p = Protector::new(&off);
        assert_eq!(p.on_key_open(30, "/k"), None);
        assert!(!p.is_protected(30));
    }
}
