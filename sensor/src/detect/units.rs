//! `key-holder-tamper`, systemd units: a unit file or drop-in
//! (`[tamper] unit_paths`) changed so that the service starts with
//! `LD_PRELOAD` or `LD_AUDIT`, code the loader runs inside it. The
//! kernel reports the change like a code path's (`CodeWrite`, or a
//! rename, link or symlink made there: tamper.rs); what matters is the
//! content, which an open for writing has not written yet. So the change
//! waits here: each tick the file (the one the event named, by inode) is
//! read, for at most `WAIT_NS`, and the alert is raised once it sets a
//! loader variable. High when the unit runs a key holder: its `ExecStart`
//! program is a `[[protected]]` or `[[allow]]` executable, or a protected
//! process or key holder runs in its cgroup now; low otherwise (the
//! variable is recorded, nothing holds keys there). Units changed without
//! one (`systemctl enable`, a new timer) are no alert.

use std::{
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    alert::{CodeDetail, Severity, Target},
    detect::{Policy, rule_alert},
    enrich::{context::Context, proctab::ProcInfo},
    ingest::decode::Task,
    rules::{Rule, attack},
};

/// How long a changed unit is read again for a loader variable.
pub const WAIT_NS: u64 = 60_000_000_000;
/// Most bytes of a unit file read.
const MAX_UNIT: u64 = 256 * 1024;
/// Most changes waiting (older ones are dropped first, counted in the log).
const MAX_PENDING: usize = 256;

/// A unit change waiting for its content.
#[derive(Debug, Clone)]
pub struct Pending {
    pub actor: ProcInfo,
    pub task: Task,
    /// The file as keysentry reads it, and its identity when changed.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// The configured unit directory that covers it.
    pub unit_dir: String,
    pub how: &'static str,
    pub verb: &'static str,
    pub arg: Option<String>,
    pub from: Option<String>,
}

#[derive(Default)]
pub struct UnitChecks {
    pending: Vec<Pending>,
}

impl UnitChecks {
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn add(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            tracing::warn!(
                "unit changes waiting for their content: over {MAX_PENDING}, the oldest is dropped"
            );
            self.pending.remove(0);
        }
        self.pending.push(p);
    }

    /// Reads each waiting unit; raises and forgets those that set a loader
    /// variable, forgets those older than `WAIT_NS` (all at `finish`).
    pub fn expire(&mut self, cx: &mut Context, policy: &Policy, now_ns: u64, finish: bool) {
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            // A fact recorded only when found (read again every tick).
            let key = format!("unit-env:{}:{:x}", p.task.tid, p.task.ts_boot_ns);
            let found = cx.view.found(key, || {
                loader_env(&p.path, p.dev, p.ino)
                    .map(|(var, file)| serde_json::json!([var, file]))
                    .unwrap_or(Value::Null)
            });
            if let Ok((var, file)) = serde_json::from_value::<(String, String)>(found) {
                raise(cx, policy, &p, &var, &file);
                continue;
            }
            if !finish && now_ns < p.task.ts_boot_ns.saturating_add(WAIT_NS) {
                keep.push(p);
            }
        }
        self.pending = keep;
    }
}

fn raise(cx: &mut Context, policy: &Policy, p: &Pending, var: &str, file: &str) {
    let unit = unit_name(&p.path);
    let key = format!("unit-holder:{}:{:x}", p.task.tid, p.task.ts_boot_ns);
    let dirs = policy.unit_paths.clone();
    let protector = &cx.protector;
    let holder = cx.view.value(key, || {
        runs_key_holder(policy, &dirs, &p.path, &unit, protector)
            .map(Value::from)
            .unwrap_or(Value::Null)
    });
    let holder = holder.as_str().map(str::to_string);
    let shown = p.path.to_string_lossy().into_owned();
    let role = "a systemd unit: the environment and command line its service starts with";
    let subject = match &holder {
        Some(h) => format!("the key holder it runs ({h})"),
        None => "its service (no key holder known to run in it)".to_string(),
    };
    let via = if file != shown {
        format!(" (through {file})")
    } else {
        String::new()
    };
    let message = format!(
        "{} (pid {}, uid {}) {} {shown}: unit {unit} starts with {var}{via}, code the loader runs inside {subject}",
        p.actor.comm, p.actor.pid, p.actor.uid, p.verb
    );
    let target = Target::File {
        path: shown,
        dev: p.dev,
        inode: p.ino,
    };
    let mut alert = rule_alert(
        Rule::KeyHolderTamper,
        &p.actor,
        target,
        &cx.host,
        cx.wall(p.task.ts_boot_ns),
    )
    .message(message)
    .attack(attack::DYLD_HIJACK);
    alert = if holder.is_some() {
        alert.verdict(Severity::High, 80)
    } else {
        alert.verdict(Severity::Low, 30)
    };
    let alert = alert.code(CodeDetail {
        code_path: p.unit_dir.clone(),
        role,
        how: p.how,
        arg: p.arg.clone(),
        from: p.from.clone(),
        loaded_by: holder,
        unit: Some(unit),
        setting: Some(var.to_string()),
    });
    cx.raise(alert, p.task.ts_boot_ns);
}

/// The unit a file configures: `name.service` for the unit file and for
/// a drop-in in `name.service.d/`.
pub fn unit_name(path: &Path) -> String {
    let parent = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match parent.strip_suffix(".d") {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Opens a file keysentry did not make: no symlink followed, no FIFO or
/// device blocked on, regular files only, `(dev, ino)` when given.
fn open_plain(path: &Path, ident: Option<(u64, u64)>) -> Option<Vec<u8>> {
    let (f, md) = crate::enrich::handle::open_plain(path)?;
    if ident.is_some_and(|(d, i)| (md.dev(), md.ino()) != (d, i)) {
        return None;
    }
    let mut buf = Vec::new();
    f.take(MAX_UNIT).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// The content a unit file at `path` (the inode `dev`/`ino`) gives
/// systemd: the file itself, or, for a symlink (`systemctl link`, `ln -s`),
/// the file it names (one level, read without following further).
/// Returns the file read too.
fn unit_content(path: &Path, dev: u64, ino: u64) -> Option<(Vec<u8>, PathBuf)> {
    let md = std::fs::symlink_metadata(path).ok()?;
    if (md.dev(), md.ino()) != (dev, ino) && dev != 0 {
        // Replaced since: the change that replaced it has its own event.
        return None;
    }
    if md.file_type().is_symlink() {
        let to = std::fs::read_link(path).ok()?;
        let to = path.parent().map(|d| d.join(&to)).unwrap_or(to);
        return open_plain(&to, None).map(|b| (b, to));
    }
    open_plain(path, Some((md.dev(), md.ino()))).map(|b| (b, path.to_path_buf()))
}

/// The loader variable a unit sets (`LD_PRELOAD=/tmp/x.so`), directly or
/// through an `EnvironmentFile=`, and the file that sets it.
pub fn loader_env(path: &Path, dev: u64, ino: u64) -> Option<(String, String)> {
    let (text, file) = unit_content(path, dev, ino)?;
    let text = String::from_utf8_lossy(&text);
    if let Some(v) = loader_var(&text) {
        return Some((v, file.to_string_lossy().into_owned()));
    }
    for line in lines(&text) {
        let Some(env) = line.strip_prefix("EnvironmentFile=") else {
            continue;
        };
        let env = Path::new(env.trim().trim_start_matches('-'));
        if !env.is_absolute() {
            continue;
        }
        if let Some(v) =
            open_plain(env, None).and_then(|b| loader_var(&String::from_utf8_lossy(&b)))
        {
            return Some((v, env.to_string_lossy().into_owned()));
        }
    }
    None
}

/// Lines that are not comments, trimmed.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
}

/// `LD_PRELOAD=value` or `LD_AUDIT=value` set in `text` (the assignment
/// only: other variables on the line may be secrets).
fn loader_var(text: &str) -> Option<String> {
    for line in lines(text) {
        for var in ["LD_PRELOAD=", "LD_AUDIT="] {
            let mut from = 0;
            while let Some(at) = line[from..].find(var) {
                let start = from + at;
                from = start + var.len();
                // A whole variable name, not FOO_LD_PRELOAD=.
                let before = line[..start].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &line[start..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                    .unwrap_or(rest.len());
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

/// The programs a unit's `ExecStart=` lines run, from the file changed
/// and the unit's main file in the unit directories.
fn exec_starts(dirs: &[PathBuf], changed: &Path, unit: &str) -> Vec<String> {
    let mut files = vec![changed.to_path_buf()];
    files.extend(dirs.iter().map(|d| d.join(unit)));
    let mut out = Vec::new();
    for f in files {
        let Some(text) = unit_content(&f, 0, 0).map(|(b, _)| b) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        for line in lines(&text) {
            let Some(cmd) = line.strip_prefix("ExecStart=") else {
                continue;
            };
            let prog = cmd
                .trim()
                .trim_start_matches(['@', '-', ':', '+', '!', '|'])
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if !prog.is_empty() {
                out.push(prog.to_string());
            }
        }
    }
    out
}

/// Does the unit run a key holder? Its `ExecStart` program is a
/// `[[protected]]` or `[[allow]]` executable (by path or canonical path),
/// or a protected process or key holder runs in the unit's cgroup now.
/// Returns how it is one.
fn runs_key_holder(
    policy: &Policy,
    dirs: &[PathBuf],
    changed: &Path,
    unit: &str,
    protector: &crate::enrich::protect::Protector,
) -> Option<String> {
    for prog in exec_starts(dirs, changed, unit) {
        let mut forms = vec![prog.clone()];
        if let Ok(c) = std::fs::canonicalize(&prog) {
            forms.push(c.to_string_lossy().into_owned());
        }
        for f in &forms {
            if policy.protects_exe(f) {
                return Some(format!("{prog}, [[protected]]"));
            }
            if policy.names_exe(f) {
                return Some(format!("{prog}, [[allow]]"));
            }
        }
    }
    for (pid, rule) in protector.snapshot() {
        if rule == crate::enrich::protect::SELF_RULE {
            continue;
        }
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if cg
            .lines()
            .any(|l| l.rsplit('/').next().is_some_and(|u| u == unit))
        {
            return Some(format!("pid {pid} runs in it"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_variables_in_units() {
        assert_eq!(
            loader_var("[Service]\nEnvironment=\"A=1\" LD_PRELOAD=/tmp/x.so TOKEN=s3cret\n"),
            Some("LD_PRELOAD=/tmp/x.so".into())
        );
        assert_eq!(
            loader_var("[Service]\nEnvironment=\"LD_AUDIT=/opt/a.so\"\n"),
            Some("LD_AUDIT=/opt/a.so".into())
        );
        assert_eq!(
            loader_var("ExecStart=/usr/bin/env LD_PRELOAD=/dev/shm/e.so /usr/bin/vault\n"),
            Some("LD_PRELOAD=/dev/shm/e.so".into())
        );
        for benign in [
            "# Environment=LD_PRELOAD=/tmp/x.so\n",
            "; LD_PRELOAD=/tmp/x.so\n",
            "Environment=MY_LD_PRELOAD=1\n",
            "[Service]\nExecStart=/usr/sbin/sshd -D\n",
        ] {
            assert_eq!(loader_var(benign), None, "{benign}");
        }
    }

    #[test]
    fn unit_names() {
        assert_eq!(
            unit_name(Path::new(
                "/etc/systemd/system/vault.service.d/override.conf"
            )),
            "vault.service"
        );
        assert_eq!(
            unit_name(Path::new("/etc/systemd/system/vault.service")),
            "vault.service"
        );
    }

    #[test]
    fn units_read_without_following_more_than_one_link() {
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        impl Dir {
            fn path(&self) -> &Path {
                &self.0
            }
        }
        let d = Dir(std::env::temp_dir().join(format!("ks-units-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(d.path());
        std::fs::create_dir(d.path()).unwrap();
        let env = d.path().join("env");
        std::fs::write(&env, "LD_AUDIT=/tmp/a.so\n").unwrap();
        let unit = d.path().join("a.service");
        std::fs::write(
            &unit,
            format!("[Service]\nEnvironmentFile=-{}\n", env.display()),
        )
        .unwrap();
        let md = std::fs::metadata(&unit).unwrap();
        assert_eq!(
            loader_env(&unit, md.dev(), md.ino()),
            Some((
                "LD_AUDIT=/tmp/a.so".into(),
                env.to_string_lossy().into_owned()
            ))
        );
        // A symlinked drop-in: the file it names.
        let link = d.path().join("b.conf");
        std::os::unix::fs::symlink(&unit, &link).unwrap();
        let lmd = std::fs::symlink_metadata(&link).unwrap();
        assert!(loader_env(&link, lmd.dev(), lmd.ino()).is_some());
        // A link to a link is not followed; a FIFO is not read.
        let link2 = d.path().join("c.conf");
        std::os::unix::fs::symlink(&link, &link2).unwrap();
        let l2 = std::fs::symlink_metadata(&link2).unwrap();
        assert_eq!(loader_env(&link2, l2.dev(), l2.ino()), None);
        let fifo = d.path().join("d.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let f = std::fs::symlink_metadata(&fifo).unwrap();
        assert_eq!(loader_env(&fifo, f.dev(), f.ino()), None);
        // Another inode at the name: not this change's content.
        assert_eq!(loader_env(&unit, md.dev(), md.ino() + 1), None);
    }
}
