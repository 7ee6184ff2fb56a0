//! Rules: turn enriched events into alerts. This stage knows the policy
//! (key paths, key-name rules, the allowlist) and nothing of the kernel.

use std::path::Path;

use sensor_common::{
    MATCH_INODE, MATCH_NAME, MATCH_PARENT, SRC_CREAT, SRC_IO_URING, SRC_OPEN, SRC_OPEN_BY_HANDLE,
    SRC_OPENAT, SRC_OPENAT2,
};

use crate::{
    alert::{Alert, OpenDetail, ProcessCtx, Severity, Target},
    config::Config,
    decode::OpenRecord,
    proctab::ProcInfo,
    redact,
};

pub const RULE_KEY_FILE_OPEN: &str = "key-file-open";
pub const ATTACK_PRIVATE_KEYS: &str = "T1552.004";

const O_ACCMODE: u32 = 0o3;
const O_PATH: u32 = 0o10000000;

#[derive(Debug, Clone)]
struct AllowRule {
    /// The configured exe and its canonical form.
    exe: Vec<String>,
    /// Restricts the allowance to one key_path (by index).
    key_path: Option<u32>,
}

/// The detection policy, compiled from the config.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub key_paths: Vec<String>,
    pub key_names: Vec<String>,
    allow: Vec<AllowRule>,
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
            .map(|a| {
                let mut exe = vec![a.exe.to_string_lossy().into_owned()];
                if let Ok(c) = std::fs::canonicalize(&a.exe) {
                    exe.push(c.to_string_lossy().into_owned());
                }
                AllowRule {
                    exe,
                    key_path: a.key_path.as_ref().and_then(|p| {
                        key_paths
                            .iter()
                            .position(|k| Path::new(k) == p.as_path())
                            .map(|i| i as u32)
                    }),
                }
            })
            .collect();
        Self {
            key_paths,
            key_names,
            allow,
        }
    }

    /// Is `exe` allowed to open a key covered by `watch_id` (None: matched by
    /// name only)?
    pub fn allowed(&self, exe: &str, watch_id: Option<u32>) -> bool {
        !exe.is_empty()
            && self.allow.iter().any(|a| {
                a.exe.iter().any(|e| e == exe)
                    && match a.key_path {
                        None => true,
                        Some(k) => watch_id == Some(k),
                    }
            })
    }
}

/// A key-file open after enrichment: the file as resolved and the actor.
pub struct KeyOpen<'a> {
    pub rec: &'a OpenRecord,
    pub actor: &'a ProcInfo,
    /// Path of the file (kernel path, or resolved in user space for a failure).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Which key_path covers it, if any.
    pub watch_id: Option<u32>,
}

pub fn via(source: u32) -> &'static str {
    match source {
        SRC_OPEN => "open",
        SRC_OPENAT => "openat",
        SRC_OPENAT2 => "openat2",
        SRC_CREAT => "creat",
        SRC_OPEN_BY_HANDLE => "open_by_handle_at",
        SRC_IO_URING => "io_uring",
        _ => "unknown",
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
    }
}

/// Incident id of an actor: one per process lifetime (correlation of
/// several processes into one incident comes with the incident engine).
pub fn incident_id(p: &ProcInfo) -> String {
    format!("inc-{}-{:x}", p.pid, p.start_ns)
}

impl Policy {
    /// The `key-file-open` rule. None when allowed or not an access (O_PATH).
    pub fn key_file_open(&self, k: &KeyOpen<'_>, host: &str, ts: String) -> Option<Alert> {
        let rec = k.rec;
        let acc = access(rec.flags);
        if acc == "path" {
            return None;
        }
        if self.allowed(&k.actor.exe, k.watch_id) {
            return None;
        }
        let mut matched = Vec::new();
        if k.watch_id.is_some() || rec.matched & (MATCH_INODE | MATCH_PARENT) != 0 {
            matched.push("key_path");
        }
        let key_name: Vec<String> = (0..32)
            .filter(|b| rec.name_rules & (1 << b) != 0)
            .filter_map(|b| self.key_names.get(b).cloned())
            .collect();
        if rec.matched & MATCH_NAME != 0 || !key_name.is_empty() {
            matched.push("key_name");
        }
        let (severity, score, result) = if rec.failed {
            (Severity::Medium, 40, "failed")
        } else {
            (Severity::High, 70, "success")
        };
        let p = k.actor;
        let message = if rec.failed {
            format!(
                "{} (pid {}, uid {}) tried to open key file {} for {} and failed ({})",
                p.comm,
                p.pid,
                p.uid,
                k.path,
                acc,
                errno_name(rec.ret).unwrap_or("error")
            )
        } else {
            format!(
                "{} (pid {}, uid {}) opened key file {} for {}",
                p.comm, p.pid, p.uid, k.path, acc
            )
        };
        Some(Alert {
            ts,
            rule: RULE_KEY_FILE_OPEN,
            severity,
            score,
            attack: ATTACK_PRIVATE_KEYS,
            host: host.to_string(),
            process: process_ctx(p),
            target: Target::File {
                path: k.path.clone(),
                dev: k.dev,
                inode: k.ino,
            },
            incident: incident_id(p),
            message,
            open: Some(OpenDetail {
                result,
                errno: if rec.failed {
                    errno_name(rec.ret)
                } else {
                    None
                },
                access: acc,
                via: via(rec.source),
                arg: rec.arg.clone(),
                matched,
                key_path: k
                    .watch_id
                    .and_then(|i| self.key_paths.get(i as usize).cloned()),
                key_name,
            }),
        })
    }
}
