//! `key-holder-tamper`: code put into a program that holds keys or may
//! open them, from its start. The kernel checks, at the exec of a
//! protected program (`[[protected]]` exe or comm, or a child of a
//! protected process) and of an allowlisted one, whether it runs traced
//! and whether LD_PRELOAD or LD_AUDIT (code the loader runs inside it) is
//! in its new environment (`allowance_at_exec`, probes/process.rs); this
//! rule raises the alert at that exec. LD_LIBRARY_PATH alone is no alert
//! (vendor and HSM client software starts with it), though it still
//! withdraws an allowance.
//!
//! The rule's other half is a change of a code-loading path
//! (`[tamper] code_paths`: the loader's preload list and search path, the
//! loader, PAM, OpenSSL's configuration and modules, PKCS#11 modules),
//! code that every program loading it runs, key holders included: an open
//! that may change one of them (or a file in one of their directories),
//! seen by the kernel on the file itself (`CodeWrite`, probes/open.rs:
//! `WATCH_CODE` entries), and a rename, hard link or symlink that makes a
//! name there (`PathChange`, matched in the kernel by the name's final
//! component, resolved here). A package manager (`[[allow]] code_change`)
//! and what it runs (its maintainer scripts) change them as routine: no
//! alert. `[tamper] dump_paths` (systemd-coredump's configuration) are
//! watched the same way and raise `dump-config-change`.

use std::{
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::Path,
};

use sensor_common::{
    CODE_BY_NAME, EXEC_ALLOWLISTED, EXEC_ENV_UNCHECKED, EXEC_LD_AUDIT, EXEC_LD_PRELOAD,
    EXEC_PROTECTED, EXEC_PTRACED, PATH_OP_LINK, PATH_OP_SYMLINK, WATCH_CHILDREN,
};
use serde_json::Value;

use crate::{
    alert::{CodeDetail, DumpDetail, Severity, Target},
    detect::{
        CodeKind, Policy, access,
        kernel_reader::is_keysentry,
        process_target, rule_alert,
        units::{Pending, UnitChecks},
    },
    enrich::{
        context::Context, devnum::st_dev, proctab::ProcInfo, userpath::user_path, watch::inode_key,
    },
    ingest::decode::{Task, flow::PathRecord, open::OpenRecord},
    rules::{Rule, attack},
};

const O_TRUNC: u32 = 0o1000;

/// What a code path is to the programs that load it, and the technique
/// of changing it.
fn role(code_path: &str) -> (&'static str, &'static str) {
    let p = code_path;
    if p.contains("ld.so.preload") {
        (
            "the dynamic loader's preload list: its libraries are loaded into every program started",
            attack::DYLD_HIJACK,
        )
    } else if p.contains("ld.so.conf") {
        (
            "the dynamic loader's library search path: a library put first in it replaces the real one in every program",
            attack::DYLD_HIJACK,
        )
    } else if p.contains("/ld-linux") || p.contains("/ld.so") {
        (
            "the dynamic loader: it runs inside every dynamically linked program",
            attack::DYLD_HIJACK,
        )
    } else if p.contains("pam") {
        (
            "PAM's configuration or modules: code run by every login, sudo and su, and by services that authenticate",
            attack::PAM,
        )
    } else if p.contains("openssl") || p.contains("ossl-modules") || p.contains("engines") {
        (
            "OpenSSL's configuration, providers or engines: code loaded by every program that uses OpenSSL, key services included",
            attack::HIJACK,
        )
    } else if p.contains("pkcs11") || p.contains("p11-kit") {
        (
            "PKCS#11 modules or their registrations: code loaded by every program that signs with a token or HSM",
            attack::HIJACK,
        )
    } else {
        ("a code-loading path ([tamper] code_paths)", attack::HIJACK)
    }
}

/// Is `p`, or a process it descends from, allowed to change the code
/// paths (a package manager and the maintainer scripts it runs)? An
/// ancestor counts only if it started no later than its child (a reused
/// pid is another process).
fn code_change_allowed(cx: &Context, policy: &Policy, p: &ProcInfo) -> bool {
    let mut cur = p.clone();
    for _ in 0..32 {
        if policy.allowed_code_change(&cur) {
            return true;
        }
        if cur.ppid == 0 || cur.ppid == cur.pid {
            return false;
        }
        match cx.procs.get(cur.ppid) {
            Some(parent) if parent.start_ns <= cur.start_ns => cur = parent.clone(),
            _ => return false,
        }
    }
    false
}

/// The code path a name (`arg`, as process `pid` passed it, relative to
/// `dfd`) is at: its directory is a watched code directory, or it is a
/// code path's own name (one that did not exist yet included). `base`: the
/// name's directory as the kernel saw it (a bare name: no lookup needed,
/// so the answer holds after the process is gone). Returns the code path's
/// index, the name made absolute and the identity of what is there now. A
/// fact (`key`): recorded, and the replay's answer.
fn code_at(
    cx: &mut Context,
    key: String,
    pid: u32,
    dfd: i32,
    arg: &str,
    base: Option<(u32, u64)>,
) -> Option<(u32, String, u64, u64)> {
    let code = &cx.code;
    let v = cx.view.value(key, || {
        let arg = Path::new(arg);
        let Some(name) = arg.file_name() else {
            return Value::Null;
        };
        // The directory: from the kernel, or looked up as the process saw
        // it (from its root, cwd or dfd).
        let (dkey, dir_shown, dir_seen) = match base {
            Some((dev, ino)) => (sensor_common::InodeKey { dev, _pad: 0, ino }, None, None),
            None => {
                let dir = match arg.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
                    _ => ".".to_string(),
                };
                let up = user_path(pid, dfd, &dir);
                let Ok(dmd) = std::fs::metadata(&up.seen) else {
                    return Value::Null;
                };
                (inode_key(&dmd), Some(up.shown.clone()), Some(up))
            }
        };
        let at = |fallback: &Path| -> (String, u64, u64) {
            let shown = dir_shown
                .as_ref()
                .map(|d| d.join(name))
                .unwrap_or_else(|| fallback.to_path_buf());
            let here = dir_seen
                .as_ref()
                .map(|up| up.seen.join(name))
                .unwrap_or_else(|| fallback.to_path_buf());
            let ident = std::fs::symlink_metadata(here)
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or_default();
            (shown.to_string_lossy().into_owned(), ident.0, ident.1)
        };
        if let Some(w) = code.get(&dkey)
            && w.flags & WATCH_CHILDREN != 0
        {
            let (shown, dev, ino) = at(&w.path.join(name));
            return serde_json::json!([w.watch_id, shown, dev, ino]);
        }
        for (id, root) in code.roots().iter().enumerate() {
            // The path as configured, and the file a symlink there leads
            // to (/lib64/ld-linux-x86-64.so.2 is a link to the loader).
            let real = std::fs::canonicalize(root).ok();
            for p in std::iter::once(root.as_path()).chain(real.as_deref()) {
                if p.file_name().map(|n| n.as_bytes()) != Some(name.as_bytes()) {
                    continue;
                }
                let same_dir = p
                    .parent()
                    .and_then(|d| std::fs::metadata(d).ok())
                    .is_some_and(|m| inode_key(&m) == dkey);
                if same_dir {
                    let (shown, dev, ino) = at(p);
                    return serde_json::json!([id, shown, dev, ino]);
                }
            }
        }
        Value::Null
    });
    serde_json::from_value(v).ok()
}

/// An open that may change a code-loading path (`CodeWrite`).
pub fn code_write(cx: &mut Context, policy: &Policy, units: &mut UnitChecks, r: &OpenRecord) {
    let actor = cx.procs.resolve(&r.task);
    if is_keysentry(cx, &actor) || code_change_allowed(cx, policy, &actor) {
        return;
    }
    // A file created under a code path's name: is it at that path?
    let id = if r.watch_id == CODE_BY_NAME {
        let Some(path) = r.path.as_deref().filter(|_| !r.path_truncated) else {
            return;
        };
        let key = format!("code-name:{}:{:x}", r.task.tid, r.task.ts_boot_ns);
        match code_at(cx, key, r.task.pid, -100, path, None) {
            Some((id, ..)) => id,
            None => return,
        }
    } else {
        r.watch_id
    };
    let key = format!("code-root:{id}:{}:{:x}", r.task.tid, r.task.ts_boot_ns);
    let Some((code_path, loaded_by)) = code_root(cx, policy, key, id) else {
        return;
    };
    let how = if r.created() {
        "create"
    } else if r.flags & 3 == 0 && r.flags & O_TRUNC != 0 {
        "truncate"
    } else {
        access(r.flags)
    };
    let mut path = r.path.clone().unwrap_or_default();
    if r.path_truncated {
        path.insert_str(0, "...");
    }
    let target = Target::File {
        path: path.clone(),
        dev: st_dev(r.dev),
        inode: r.ino,
    };
    let verb = match how {
        "create" => "created",
        "truncate" => "truncated",
        _ => "opened for writing",
    };
    if policy.code_kind(id) == CodeKind::Unit {
        units.add(Pending {
            actor,
            task: r.task.clone(),
            path: path.clone().into(),
            dev: st_dev(r.dev),
            ino: r.ino,
            unit_dir: code_path,
            how,
            verb,
            arg: r.arg.clone(),
            from: None,
        });
        return;
    }
    raise_code(
        cx,
        (policy.code_kind(id), loaded_by),
        &actor,
        &r.task,
        target,
        &code_path,
        how,
        &path,
        verb,
        r.arg.clone(),
        None,
    );
}

/// A rename, hard link or symlink whose new name may be at a code-loading
/// path (its final component is a watched name): where the new name is,
/// as the process saw it, decides.
pub fn code_path_change(cx: &mut Context, policy: &Policy, units: &mut UnitChecks, p: &PathRecord) {
    if p.new.is_empty() {
        return;
    }
    let key = format!("code-name:{}:{:x}", p.task.tid, p.task.ts_boot_ns);
    let Some((id, shown, dev, ino)) = code_at(cx, key, p.task.pid, p.new_dfd, &p.new, p.base)
    else {
        return;
    };
    let actor = cx.procs.resolve(&p.task);
    if is_keysentry(cx, &actor) || code_change_allowed(cx, policy, &actor) {
        return;
    }
    let key = format!("code-root:{id}:{}:{:x}", p.task.tid, p.task.ts_boot_ns);
    let Some((code_path, loaded_by)) = code_root(cx, policy, key, id) else {
        return;
    };
    let (how, verb) = match p.op {
        PATH_OP_LINK => ("link", "hard-linked a file to"),
        PATH_OP_SYMLINK => ("symlink", "made a symlink at"),
        _ => ("rename", "renamed a file to"),
    };
    let target = Target::File {
        path: shown.clone(),
        dev,
        inode: ino,
    };
    if policy.code_kind(id) == CodeKind::Unit {
        units.add(Pending {
            actor,
            task: p.task.clone(),
            path: shown.clone().into(),
            dev,
            ino,
            unit_dir: code_path,
            how,
            verb,
            arg: Some(p.new.clone()),
            from: (!p.old.is_empty()).then(|| p.old.clone()),
        });
        return;
    }
    raise_code(
        cx,
        (policy.code_kind(id), loaded_by),
        &actor,
        &p.task,
        target,
        &code_path,
        how,
        &shown,
        verb,
        Some(p.new.clone()),
        (!p.old.is_empty()).then(|| p.old.clone()),
    );
}

/// The path the code watcher's `id` names and, for a file a key holder
/// runs, who was seen running it. A fact (`key`); a recording made before
/// it was one gives the configured path alone.
fn code_root(
    cx: &mut Context,
    policy: &Policy,
    key: String,
    id: u32,
) -> Option<(String, Option<String>)> {
    let code = &cx.code;
    let holders = &cx.holder_code;
    let configured = policy.code_paths + policy.dump_paths + policy.unit_paths.len();
    let v = cx.view.value(key, || {
        let Some(root) = code.root(id) else {
            return Value::Null;
        };
        let by = (id as usize)
            .checked_sub(configured)
            .and_then(|i| holders.get(i))
            .map(|l| l.by.clone());
        serde_json::json!([root.to_string_lossy(), by])
    });
    serde_json::from_value(v).ok().or_else(|| {
        code.root(id)
            .map(|p| (p.to_string_lossy().into_owned(), None))
    })
}

#[allow(clippy::too_many_arguments)]
fn raise_code(
    cx: &mut Context,
    (kind, loaded_by): (CodeKind, Option<String>),
    actor: &ProcInfo,
    task: &Task,
    target: Target,
    code_path: &str,
    how: &'static str,
    path: &str,
    verb: &str,
    arg: Option<String>,
    from: Option<String>,
) {
    let dump_path = kind == CodeKind::DumpConfig;
    let (role, technique) = match kind {
        CodeKind::DumpConfig => (
            "systemd-coredump's configuration: where core dumps are kept (Storage=journal keeps every dump, keys included, in the journal) and how large they may be",
            Rule::DumpConfigChange.attack(),
        ),
        CodeKind::HolderFile => (
            "a file a key holder runs (its executable or a library it has mapped): code that runs inside the process holding the keys",
            attack::HIJACK,
        ),
        CodeKind::Configured | CodeKind::Unit => role(code_path),
    };
    let mut message = format!(
        "{} (pid {}, uid {}) {verb} {path}, {role}",
        actor.comm, actor.pid, actor.uid
    );
    if let Some(by) = &loaded_by {
        message.push_str(&format!(" (seen running in {by})"));
    }
    let rule = if dump_path {
        Rule::DumpConfigChange
    } else {
        Rule::KeyHolderTamper
    };
    let mut alert = rule_alert(rule, actor, target, &cx.host, cx.wall(task.ts_boot_ns))
        .message(message)
        .attack(technique);
    alert = if dump_path {
        alert.verdict(Severity::Medium, 50).dump(DumpDetail {
            setting: Some("coredump.conf"),
            ..Default::default()
        })
    } else {
        alert.verdict(Severity::High, 80)
    };
    let alert = alert.code(CodeDetail {
        code_path: code_path.to_string(),
        role,
        how,
        arg,
        from,
        loaded_by,
        unit: None,
        setting: None,
    });
    cx.raise(alert, task.ts_boot_ns);
}

/// An exec's EXEC_* bits, after the process table and protection took the
/// exec in.
pub fn exec(cx: &mut Context, policy: &Policy, task: &Task, flags: u32) {
    let subject = if flags & EXEC_PROTECTED != 0 {
        "protected process"
    } else if flags & EXEC_ALLOWLISTED != 0 {
        "allowlisted program"
    } else {
        return;
    };
    let mut vars = Vec::new();
    if flags & EXEC_LD_PRELOAD != 0 {
        vars.push("LD_PRELOAD");
    }
    if flags & EXEC_LD_AUDIT != 0 {
        vars.push("LD_AUDIT");
    }
    let traced = flags & EXEC_PTRACED != 0;
    let unchecked = flags & EXEC_ENV_UNCHECKED != 0;
    if vars.is_empty() && !traced && !unchecked {
        return;
    }
    let Some(p) = cx.procs.get(task.pid).cloned() else {
        return;
    };
    // An allowlisted path that is not this host's file holds no
    // allowance anyway (the look-alike is seen when it opens a key).
    if subject == "allowlisted program" && !(p.exe_genuine && policy.names_exe(&p.exe)) {
        return;
    }
    let mut what = Vec::new();
    if !vars.is_empty() {
        what.push(format!(
            "with {} in its environment: the loader runs that code inside it",
            vars.join(" and ")
        ));
    }
    if traced {
        what.push("under a tracer: the tracer reads and writes its memory".to_string());
    }
    if unchecked {
        what.push("with an environment too large to check for loader variables".to_string());
    }
    let message = format!(
        "{subject} {} (pid {}, uid {}) started {}",
        p.comm,
        p.pid,
        p.uid,
        what.join("; ")
    );
    let mut alert = rule_alert(
        Rule::KeyHolderTamper,
        &p,
        process_target(&p),
        &cx.host,
        cx.wall(task.ts_boot_ns),
    )
    .message(message);
    if vars.is_empty() && traced {
        alert = alert.attack(Rule::KeyHolderTamper.alt_attack());
    } else if vars.is_empty() {
        alert = alert.verdict(Severity::Medium, 45);
    }
    cx.raise(alert, task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use sensor_common::EXEC_LD_ENV;

    use super::*;
    use crate::{
        detect::{
            flow_tests::{raised, task, with},
            tests::{policy, proc},
        },
        enrich::proctab::ProcInfo,
    };

    const ALLOW_AGENT: &str =
        "[[key_path]]\npath = \"/k\"\n[[allow]]\nexe = \"/usr/bin/agent\"\nkey_path = \"/k\"\n";

    #[test]
    fn loader_code_or_a_tracer_at_a_protected_or_allowed_exec() {
        let vault = proc(20, 1, 0, "/usr/bin/vault");
        let agent = proc(30, 1, 0, "/usr/bin/agent");
        let lookalike = ProcInfo {
            exe_genuine: false,
            exe_in_root: false,
            ..proc(31, 1, 0, "/usr/bin/agent")
        };
        let other = proc(40, 1, 0, "/usr/bin/other");
        let mut cx = with(&[
            vault.clone(),
            agent.clone(),
            lookalike.clone(),
            other.clone(),
        ]);
        let p = policy(ALLOW_AGENT);
        let pre = EXEC_LD_ENV | EXEC_LD_PRELOAD;
        for (who, flags) in [
            (&vault, EXEC_PROTECTED | pre),
            (&vault, EXEC_PROTECTED | EXEC_LD_ENV),
            (&vault, EXEC_PROTECTED),
            (&vault, EXEC_PROTECTED | EXEC_PTRACED),
            (&vault, EXEC_PROTECTED | EXEC_ENV_UNCHECKED),
            (&agent, EXEC_ALLOWLISTED | EXEC_LD_ENV | EXEC_LD_AUDIT),
            (&lookalike, EXEC_ALLOWLISTED | pre),
            (&other, pre),
        ] {
            exec(&mut cx, &p, &task(who), flags);
        }
        let a = raised(&mut cx);
        let got: Vec<(u32, &str, Severity)> = a
            .iter()
            .map(|a| (a.process.pid, a.attack, a.severity))
            .collect();
        assert_eq!(
            got,
            vec![
                (20, "T1574.006", Severity::High),
                (20, "T1055.008", Severity::High),
                (20, "T1574.006", Severity::Medium),
                (30, "T1574.006", Severity::High),
            ]
        );
        assert!(
            a[0].message.starts_with("protected process vault (pid 20"),
            "{}",
            a[0].message
        );
        assert!(a[0].message.contains("LD_PRELOAD"), "{}", a[0].message);
        assert!(a[3].message.contains("LD_AUDIT"), "{}", a[3].message);
        assert!(matches!(
            a[0].target,
            crate::alert::Target::Process { pid: 20, .. }
        ));
    }

    const DPKG: &str = "[[allow]]\nexe = \"/usr/bin/dpkg\"\ncode_change = true\n";

    fn code_open(p: &ProcInfo, watch_id: u32, flags: u32, fmode: u32) -> OpenRecord {
        OpenRecord {
            task: task(p),
            matched: sensor_common::MATCH_CODE,
            watch_id,
            flags,
            fmode,
            path: Some("/etc/ld.so.preload".into()),
            arg: Some("../etc/ld.so.preload".into()),
            ..crate::detect::tests::open_rec(flags, 3, sensor_common::MATCH_CODE)
        }
    }

    #[test]
    fn code_path_writes_alert_unless_a_package_manager_runs_them() {
        let dpkg = ProcInfo {
            start_ns: 0x10,
            ..proc(50, 1, 0, "/usr/bin/dpkg")
        };
        let script = ProcInfo {
            start_ns: 0x20,
            ..proc(51, 50, 0, "/usr/bin/perl")
        };
        let grandchild = ProcInfo {
            start_ns: 0x30,
            ..proc(52, 51, 0, "/usr/sbin/ldconfig")
        };
        // Started before the pid its ppid names now: not dpkg's child.
        let older = ProcInfo {
            start_ns: 0x01,
            ..proc(53, 50, 0, "/usr/bin/tee")
        };
        let preloaded = ProcInfo {
            allow_bypass: Some("LD_PRELOAD at exec".into()),
            start_ns: 0x10,
            ..proc(54, 1, 0, "/usr/bin/dpkg")
        };
        let admin = proc(60, 1, 0, "/usr/bin/tee");
        let mut cx = with(&[
            dpkg.clone(),
            script.clone(),
            grandchild.clone(),
            older.clone(),
            preloaded.clone(),
            admin.clone(),
        ]);
        cx.code = crate::enrich::watch::Watcher::code(vec![
            "/etc/ld.so.preload".into(),
            "/etc/pam.d".into(),
            "/usr/lib/x86_64-linux-gnu/pkcs11".into(),
            "/etc/systemd/coredump.conf".into(),
        ]);
        let p = policy(&format!(
            "{DPKG}[tamper]\ncode_paths = [\"/etc/ld.so.preload\", \"/etc/pam.d\", \"/usr/lib/x86_64-linux-gnu/pkcs11\"]\n\
             dump_paths = [\"/etc/systemd/coredump.conf\"]\nunit_paths = []\n"
        ));
        const O_WRONLY: u32 = 1;
        for who in [&dpkg, &script, &grandchild] {
            code_write(
                &mut cx,
                &p,
                &mut UnitChecks::default(),
                &code_open(who, 0, O_WRONLY, 0),
            );
        }
        assert!(raised(&mut cx).is_empty());
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&older, 0, O_WRONLY, 0),
        );
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&preloaded, 1, O_TRUNC, 0),
        );
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&admin, 2, O_WRONLY, sensor_common::FMODE_CREATED),
        );
        let a = raised(&mut cx);
        // A dump path: dump-config-change, medium.
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&admin, 3, O_WRONLY, 0),
        );
        let d = raised(&mut cx);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].rule, d[0].severity),
            ("dump-config-change", Severity::Medium)
        );
        assert_eq!(
            d[0].code.as_ref().unwrap().code_path,
            "/etc/systemd/coredump.conf"
        );
        assert!(d[0].message.contains("Storage=journal"), "{}", d[0].message);
        // A file a key holder runs (after the configured paths): high,
        // naming the process seen running it; dpkg still replaces it.
        // (Live lookups: who ran it is a fact.)
        cx.view = Default::default();
        cx.watch_holder_code(vec![crate::enrich::holder_code::Loaded {
            path: "/opt/hsm/lib/libhsm.so".into(),
            by: "vault (pid 77)".into(),
        }]);
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&dpkg, 4, O_WRONLY, 0),
        );
        assert!(raised(&mut cx).is_empty());
        code_write(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &code_open(&admin, 4, O_WRONLY, 0),
        );
        let h = raised(&mut cx);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].rule, h[0].severity, h[0].attack),
            ("key-holder-tamper", Severity::High, "T1574")
        );
        let c = h[0].code.as_ref().unwrap();
        assert_eq!(c.code_path, "/opt/hsm/lib/libhsm.so");
        assert_eq!(c.loaded_by.as_deref(), Some("vault (pid 77)"));
        assert!(c.role.contains("key holder runs"), "{}", c.role);
        let got: Vec<(u32, &str, &str, Severity)> = a
            .iter()
            .map(|a| {
                let c = a.code.as_ref().unwrap();
                (a.process.pid, c.how, a.attack, a.severity)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (53, "write", "T1574.006", Severity::High),
                (54, "truncate", "T1556.003", Severity::High),
                (60, "create", "T1574", Severity::High),
            ]
        );
        assert_eq!(a[0].rule, "key-holder-tamper");
        assert_eq!(a[0].code.as_ref().unwrap().code_path, "/etc/ld.so.preload");
        assert_eq!(
            a[0].code.as_ref().unwrap().arg.as_deref(),
            Some("../etc/ld.so.preload")
        );
        assert!(a[0].message.contains("preload list"), "{}", a[0].message);
    }

    #[test]
    fn names_made_at_code_paths() {
        struct Dir(std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        impl Dir {
            fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        let dir = Dir(std::env::temp_dir().join(format!("ks-code-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(dir.path());
        std::fs::create_dir(dir.path()).unwrap();
        let pamd = dir.path().join("pam.d");
        std::fs::create_dir(&pamd).unwrap();
        let preload = dir.path().join("ld.so.preload");
        let admin = ProcInfo {
            pid: std::process::id(),
            ..proc(0, 1, 0, "/usr/bin/mv")
        };
        let mut cx = with(std::slice::from_ref(&admin));
        // Live: the names are looked up on this file system.
        cx.view = Default::default();
        cx.code = crate::enrich::watch::Watcher::code(vec![preload.clone(), pamd.clone()]);
        let _ = cx.code.scan();
        let p = policy("");
        let change = |op: u32, new: &std::path::Path| PathRecord {
            task: task(&admin),
            op,
            old_dfd: -100,
            new_dfd: -100,
            old: "/tmp/x".into(),
            new: new.to_string_lossy().into_owned(),
            base: None,
        };
        // The preload list did not exist: its name is a code path all the
        // same; a file renamed into the PAM directory; a symlink there; a
        // name elsewhere is nothing.
        std::fs::write(&preload, "").unwrap();
        std::fs::write(pamd.join("sshd"), "").unwrap();
        std::os::unix::fs::symlink("/tmp/x", pamd.join("sudo")).unwrap();
        std::fs::write(dir.path().join("other"), "").unwrap();
        code_path_change(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &change(sensor_common::PATH_OP_RENAME, &preload),
        );
        code_path_change(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &change(sensor_common::PATH_OP_LINK, &pamd.join("sshd")),
        );
        code_path_change(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &change(PATH_OP_SYMLINK, &pamd.join("sudo")),
        );
        code_path_change(
            &mut cx,
            &p,
            &mut UnitChecks::default(),
            &change(sensor_common::PATH_OP_RENAME, &dir.path().join("other")),
        );
        let a = raised(&mut cx);
        let got: Vec<(&str, &str)> = a
            .iter()
            .map(|a| {
                let c = a.code.as_ref().unwrap();
                (c.how, c.code_path.rsplit('/').next().unwrap())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("rename", "ld.so.preload"),
                ("link", "pam.d"),
                ("symlink", "pam.d")
            ]
        );
        assert_eq!(a[2].code.as_ref().unwrap().from.as_deref(), Some("/tmp/x"));
    }
}
