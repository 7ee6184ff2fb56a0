//! Enforcement (docs/enforcement.md): the kernel's allowlist for the BPF
//! LSM hooks, and the alerts of their denials.
//!
//! The LSM hooks report only what they deny; the tracepoints keep
//! detecting everything else. A denied syscall also fails at its exit
//! tracepoint (EPERM), and a denied ptrace attach makes the actor's next
//! ptrace requests fail: those failures of the denied thread are dropped
//! here, so a denial is one alert, `action: "denied"`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use sensor_common::{
    ALLOW_ANY_KEY, ALLOW_MEMORY, AllowKey, ENF_CORE_DUMP, ENF_FORCED_CRASH, ENF_KEY_OPEN,
    ENF_PIDFD_GETFD, ENF_PROC_MEM, ENF_PTRACE, ENF_RULES, ENF_VM_READ, ENF_VM_WRITE, SRC_CREAT,
    SRC_IO_URING, SRC_OPEN, SRC_OPENAT, SRC_OPENAT2,
};

use crate::{
    alert::{Alert, DumpDetail},
    detect::dump_rules::signal_name,
    detect::{MemAccess, Policy},
    enrich::context::Context,
    enrich::facts::KeyAccess,
    enrich::watch::{kdev, st_dev},
    ingest::decode::lsm::DeniedRecord,
    rules::Rule,
};

const EPERM: i64 = 1;
/// Most threads remembered as just denied.
const MAX_DENIED: usize = 4096;

/// (dev, inode) of every form of an allowlisted executable that exists.
fn exe_ids(p: &std::path::Path) -> Vec<(u32, u64)> {
    let mut v = Vec::new();
    for p in [Some(p.to_path_buf()), std::fs::canonicalize(p).ok()]
        .into_iter()
        .flatten()
    {
        if let Ok(m) = std::fs::metadata(&p) {
            let id = (kdev(m.dev()), m.ino());
            if !v.contains(&id) {
                v.push(id);
            }
        }
    }
    v
}

/// The kernel's allowlist for `allow` (with the configured key paths, by
/// index): the `ALLOWED` entries (executables that do not exist are
/// skipped: nothing can run them) and the `ALLOW_EXES` identities (every
/// kind of allowance: the kernel checks their execs for loader variables
/// and tracing), read from the files the paths name now.
pub fn allowlist_of(
    allow: &[crate::config::Allow],
    key_paths: &[std::path::PathBuf],
) -> (Vec<AllowKey>, Vec<sensor_common::InodeKey>) {
    // A container's program is named by its path inside the container:
    // the host's file at that path is not it (user space decides those).
    let allow: Vec<&crate::config::Allow> = allow.iter().filter(|a| !a.in_container()).collect();
    let mut exes: Vec<sensor_common::InodeKey> = Vec::new();
    for a in &allow {
        for (dev, ino) in exe_ids(&a.exe) {
            let k = sensor_common::InodeKey { dev, _pad: 0, ino };
            if !exes.contains(&k) {
                exes.push(k);
            }
        }
    }
    let mut out = Vec::new();
    for a in &allow {
        if a.dumps
            || a.kernel_reader
            || a.raw_read
            || a.agent_use
            || a.code_change
            || a.keyring_read
        {
            continue;
        }
        for (dev, ino) in exe_ids(&a.exe) {
            if let Some(t) = &a.target {
                for (tdev, tino) in exe_ids(t) {
                    out.push(AllowKey {
                        dev,
                        scope: ALLOW_MEMORY,
                        ino,
                        target_dev: tdev,
                        _pad: 0,
                        target_ino: tino,
                    });
                }
                continue;
            }
            let scope = match &a.key_path {
                None => ALLOW_ANY_KEY,
                Some(p) => match key_paths.iter().position(|k| k == p) {
                    Some(i) => i as u32,
                    None => continue,
                },
            };
            out.push(AllowKey {
                dev,
                scope,
                ino,
                ..Default::default()
            });
        }
    }
    (out, exes)
}

/// Threads whose last operation was denied, with the target (for the
/// memory rules) or 0: their follow-up failures are not alerted again.
#[derive(Debug, Default)]
pub struct DeniedThreads {
    map: HashMap<u32, (u32, u32)>,
}

impl DeniedThreads {
    fn note(&mut self, tid: u32, rule: u32, target: u32) {
        if self.map.len() >= MAX_DENIED {
            self.map.clear();
        }
        self.map.insert(tid, (rule, target));
    }

    /// True when a failed key open of `tid` is the tracepoint's view of a
    /// denial (consumed).
    pub fn take_open(&mut self, tid: u32, ret: i64) -> bool {
        if ret == -EPERM && self.map.get(&tid).is_some_and(|(r, _)| *r == ENF_KEY_OPEN) {
            self.map.remove(&tid);
            return true;
        }
        false
    }

    /// True when a failed memory access of `tid` to `target` follows its
    /// denial (kept: a denied attach makes every later request fail).
    pub fn follows_denial(&self, tid: u32, target: u32, ret: i64) -> bool {
        ret < 0
            && self
                .map
                .get(&tid)
                .is_some_and(|(r, t)| *r != ENF_KEY_OPEN && *t == target)
    }

    pub fn exited(&mut self, tid: u32) {
        self.map.remove(&tid);
    }
}

/// The syscall names of the x86_64 numbers the hooks see.
fn syscall_name(nr: i32) -> &'static str {
    const REPORTED: [&str; 15] = [
        "open",
        "creat",
        "openat",
        "openat2",
        "io_uring_enter",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kill",
        "tkill",
        "tgkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_send_signal",
    ];
    sensor_common::x86_64::syscall_name(nr)
        .filter(|n| REPORTED.contains(n))
        .unwrap_or("other")
}

impl DeniedThreads {
    /// A BPF LSM hook denied an operation: one alert, `action: "denied"`.
    pub(crate) fn denied(&mut self, cx: &mut Context, policy: &Policy, d: &DeniedRecord) {
        self.note(d.task.tid, d.rule, d.target);
        let actor = cx.procs.resolve(&d.task);
        let ts = cx.wall(d.task.ts_boot_ns);
        let rule = ENF_RULES.get(d.rule as usize).copied().unwrap_or("unknown");
        let mut alert = judge(cx, policy, d, &actor, ts.clone());
        let mut note = "";
        if alert.is_none() {
            // The kernel's allowlist and user space's disagree (the file
            // changed on disk before a reload): the denial happened, so it
            // is an alert, judged without the allowlist.
            tracing::warn!(
                "rule {rule}: the kernel denied pid {} ({}) but user space's policy allows it (allowlist changed on disk?)",
                actor.pid,
                actor.exe
            );
            alert = judge(cx, &Policy::default(), d, &actor, ts);
            note = "; user space's allowlist allows it: was the config changed without a reload?";
        }
        if let Some(mut a) = alert {
            // The rule judged the attempt (a failure, as the kernel
            // refused it); the denial is said here.
            a.action = Some("denied");
            a.message = format!("{} (denied: enforce mode{note})", a.message);
            cx.raise(a, d.task.ts_boot_ns);
        }
    }
}

/// What the rule behind a denial says of the attempt, as a failure (the
/// kernel refused it); None when `policy` allows it.
fn judge(
    cx: &mut Context,
    policy: &Policy,
    d: &DeniedRecord,
    actor: &crate::enrich::proctab::ProcInfo,
    ts: String,
) -> Option<Alert> {
    match d.rule {
        ENF_KEY_OPEN => {
            // An attempt that failed (EPERM), as the policy words it.
            let k = KeyAccess {
                actor,
                task: &d.task,
                path: d.path.clone().unwrap_or_default(),
                dev: st_dev(d.dev),
                ino: d.ino,
                kdev: d.dev,
                igen: 0,
                watch_id: Some(d.watch_id),
                by_key_path: true,
                by_name: false,
                name_rules: 0,
                flags: d.flags,
                failed: true,
                ret: -EPERM,
                via: crate::detect::via(match d.syscall {
                    2 => SRC_OPEN,
                    85 => SRC_CREAT,
                    437 => SRC_OPENAT2,
                    426 => SRC_IO_URING,
                    _ => SRC_OPENAT,
                }),
                arg: None,
                owner: u32::MAX,
                created: false,
                size: 0,
                fresh: false,
                escape: false,
            };
            policy.key_file_open(&k, &cx.host, ts)
        }
        ENF_PTRACE | ENF_VM_READ | ENF_VM_WRITE | ENF_PROC_MEM | ENF_PIDFD_GETFD => {
            let target = cx.procs.lookup(d.target);
            let (rule, access) = match d.rule {
                ENF_PTRACE => (Rule::PtraceAttach, "attach"),
                ENF_VM_READ => (Rule::ProcessVmRead, "read"),
                ENF_VM_WRITE => (Rule::ProcessVmWrite, "write"),
                ENF_PROC_MEM => (Rule::ProcMemOpen, "read"),
                _ => (Rule::PidfdGetfd, "read"),
            };
            let m = MemAccess {
                rule,
                access,
                op: syscall_name(d.syscall).to_string(),
                ret: -EPERM,
                actor,
                target: &target,
                target_protected: true,
                recon: false,
                path: (d.rule == ENF_PROC_MEM).then(|| format!("/proc/{}/mem", d.target)),
                thread: None,
                ts_boot_ns: d.task.ts_boot_ns,
            };
            policy.memory_access(&m, &cx.host, ts)
        }
        ENF_FORCED_CRASH => {
            let target = cx.procs.lookup(d.target);
            let detail = DumpDetail {
                signal: Some(signal_name(d.arg)),
                sent_by: Some(match d.syscall {
                    62 | 424 => "kill",
                    200 | 234 => "tkill",
                    129 | 297 => "sigqueue",
                    _ => "other",
                }),
                delivered: Some(false),
                ..Default::default()
            };
            Some(policy.forced_crash(actor, &target, detail, &cx.host, ts))
        }
        ENF_CORE_DUMP => {
            let (pattern, _) = cx.view.core_pattern();
            let exists = d.path.clone().map(|p| {
                cx.view
                    .value(format!("exists:{p}"), || {
                        std::path::Path::new(&p).exists().into()
                    })
                    .as_bool()
                    .unwrap_or(false)
            });
            let detail = DumpDetail {
                core_pattern: Some(pattern),
                path: d.path.clone(),
                exists,
                ..Default::default()
            };
            Some(policy.core_dump(actor, detail, &cx.host, ts))
        }
        _ => None,
    }
}
