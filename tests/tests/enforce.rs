//! Enforcement (docs/enforcement.md): rules in enforce mode deny with EPERM
//! through BPF LSM hooks, and the alerts say `action: "denied"`. These
//! tests need a kernel that runs BPF LSM (the VM kernels: `lsm=...,bpf`);
//! elsewhere they print `SKIPPED: <why>` and return. The fallback test runs
//! everywhere (`--backend tracepoint` forces what a kernel without BPF LSM
//! does).

mod common;

use std::{
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{lab::*, *};
use serde_json::Value;

macro_rules! require_lsm {
    () => {
        if let Some(why) = lsm_unavailable() {
            println!("SKIPPED: BPF LSM is not available on this kernel: {why}");
            return;
        }
    };
}

struct Enf {
    lab: Lab,
    /// A name-matched (not watched) marker: never denied, always alerted.
    marker: PathBuf,
    key: PathBuf,
    /// A copy of ks-actor allowlisted for the key directory.
    backup_bin: PathBuf,
}

fn enf_lab() -> Enf {
    let lab = lab();
    let marker = lab.root.join("enforce-marker");
    std::fs::write(&marker, b"m").unwrap();
    let key = lab.root.join("keys/ca.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    let backup_bin = lab.root.join("ks-backup");
    std::fs::copy(actor_bin(), &backup_bin).unwrap();
    std::fs::set_permissions(&backup_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Enf {
        lab,
        marker,
        key,
        backup_bin,
    }
}

fn enf_config(e: &Enf, enforce: &[&str]) -> String {
    let mut c = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[key_name]]\nname = \"enforce-marker\"\n\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        e.lab.root.join("keys").display(),
        e.lab.victim_bin.display(),
        e.backup_bin.display(),
        e.lab.root.join("keys").display(),
    );
    for r in enforce {
        c.push_str(&format!("\n[[rule]]\nname = \"{r}\"\nmode = \"enforce\"\n"));
    }
    c
}

fn run(bin: &Path, args: &[&str]) -> (u32, Output) {
    let child = Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait_with_output().unwrap())
}

fn one<'a>(alerts: &'a [Value], rule: &str, pid: u32) -> &'a Value {
    let mine: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["process"]["pid"] == pid)
        .collect();
    assert_eq!(mine.len(), 1, "one alert for pid {pid}: {alerts:#?}");
    assert_eq!(mine[0]["rule"], rule, "{alerts:#?}");
    mine[0]
}

#[test]
fn ptrace_and_a_crash_signal_to_a_protected_process_are_denied() {
    require_lsm!();
    let e = enf_lab();
    let mut s = Sensor::start(
        &e.lab.root,
        &enf_config(&e, &["ptrace-attach", "forced-crash"]),
    );
    let (mut victim, vp) = spawn_victim(&e.lab.victim_bin);
    let _ = s.alerts_until_marker(&e.marker);
    let vps = vp.to_string();

    // PTRACE_ATTACH is refused: ks-actor exits 1 with EPERM.
    let (tracer, out) = run(&actor_bin(), &["ptrace-peek", &vps, "0x1000"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PTRACE_ATTACH") && err.contains("Operation not permitted"),
        "{err}"
    );
    // A dump-producing signal from another process is refused; the victim
    // lives on.
    let (killer, out) = run(&actor_bin(), &["signal", &vps, "11"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    assert!(victim.try_wait().unwrap().is_none(), "the victim died");
    // process_vm_readv is in observe mode: it goes ahead, alerted as observed.
    let (reader, out) = run(&actor_bin(), &["vm-read", &vps, "0x1000", "8"]);
    let _ = out; // the address is arbitrary: success or EFAULT, never EPERM
    let alerts = s.alerts_until_marker(&e.marker);

    let a = one(&alerts, "ptrace-attach", tracer);
    assert_eq!(a["action"], "denied", "{a:#}");
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["memory"]["result"], "failed");
    assert_eq!(a["memory"]["errno"], "EPERM");
    // A failed attempt on a protected process, as the policy scores it.
    assert_eq!(a["severity"], "medium");

    let a = one(&alerts, "forced-crash", killer);
    assert_eq!(a["action"], "denied", "{a:#}");
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["dump"]["signal"], "SIGSEGV");
    assert_eq!(a["dump"]["delivered"], false);

    let a = one(&alerts, "process-vm-read", reader);
    assert_eq!(a["action"], "observed", "{a:#}");
    assert_ne!(a["memory"]["errno"], "EPERM", "{a:#}");

    assert_eq!(
        s.metric("keysentry_probe_attached{backend=\"lsm\",probe=\"lsm/ptrace_access_check\"}"),
        Some(1.0)
    );
    // Not enforcing here, but attached for detection (fd hand-offs).
    assert_eq!(
        s.metric("keysentry_probe_attached{backend=\"lsm\",probe=\"lsm/file_open\"}"),
        Some(1.0)
    );
    drop(victim.stdin.take());
    let _ = victim.wait();
}

#[test]
fn a_dump_signal_the_target_handles_is_not_denied() {
    require_lsm!();
    let e = enf_lab();
    let mut s = Sensor::start(&e.lab.root, &enf_config(&e, &["forced-crash"]));
    // The protected victim handles SIGQUIT itself (nginx's graceful stop).
    let (mut victim, vp) = spawn_args(&e.lab.victim_bin, &["victim-handler", "3"]);
    let _ = s.alerts_until_marker(&e.marker);
    let vps = vp.to_string();
    let (quitter, out) = run(&actor_bin(), &["signal", &vps, "3"]);
    assert!(
        out.status.success(),
        "the handled SIGQUIT was refused: {out:?}"
    );
    assert!(victim.try_wait().unwrap().is_none(), "the victim died");
    // A SIGSEGV it leaves to the kernel would dump it: refused.
    let (killer, out) = run(&actor_bin(), &["signal", &vps, "11"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(victim.try_wait().unwrap().is_none(), "the victim died");
    let alerts = s.alerts_until_marker(&e.marker);
    let a = one(&alerts, "forced-crash", quitter);
    assert_eq!(a["action"], "observed", "{a:#}");
    assert_eq!(a["dump"]["disposition"], "handled", "{a:#}");
    assert_eq!(a["severity"], "low", "{a:#}");
    let a = one(&alerts, "forced-crash", killer);
    assert_eq!(a["action"], "denied", "{a:#}");
    drop(victim.stdin.take());
    let _ = victim.wait();
}

#[test]
fn a_key_open_by_a_program_not_allowed_is_denied() {
    require_lsm!();
    let e = enf_lab();
    let mut s = Sensor::start(&e.lab.root, &enf_config(&e, &["key-file-open"]));
    let _ = s.alerts_until_marker(&e.marker);
    let key = e.key.to_str().unwrap();

    let (thief, out) = run(&actor_bin(), &["open", key]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    // The allowlisted program opens it (no alert), and so does everyone
    // for a file outside the key paths.
    let (backup, out) = run(&e.backup_bin, &["open", key]);
    assert!(out.status.success(), "{out:?}");
    // The same program with a loader variable is not the allowlisted
    // program any more: the kernel denies it too.
    let preloaded = Command::new(&e.backup_bin)
        .args(["open", key])
        .env("LD_LIBRARY_PATH", "/nonexistent")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let preloaded_pid = preloaded.id();
    let out = preloaded.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let alerts = s.alerts_until_marker(&e.marker);
    let a = one(&alerts, "key-file-open", preloaded_pid);
    assert_eq!(a["action"], "denied", "{a:#}");
    assert_eq!(a["open"]["errno"], "EPERM");
    assert!(
        a["factors"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "allow_bypass")),
        "{a:#}"
    );

    let a = one(&alerts, "key-file-open", thief);
    assert_eq!(a["action"], "denied", "{a:#}");
    assert_eq!(a["target"]["path"], key);
    assert_eq!(a["target"]["inode"], ino(&e.key));
    assert_eq!(a["open"]["result"], "failed");
    assert_eq!(a["open"]["errno"], "EPERM");
    assert!(
        by_pid(&alerts, "key-file-open", backup).is_empty(),
        "{alerts:#?}"
    );
    // The LSM program staged its denials per thread and sent them compact.
    assert_sent_compact(&s, "denied", key.len());
}

#[test]
fn the_core_dump_of_a_protected_process_is_prevented() {
    require_lsm!();
    let e = enf_lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", e.lab.root.display()));
    // forced-crash stays in observe mode: the signal goes through.
    let mut s = Sensor::start(&e.lab.root, &enf_config(&e, &["core-dump"]));
    let (mut victim, vp) = spawn_victim(&e.lab.victim_bin);
    let _ = s.alerts_until_marker(&e.marker);

    let (sender, st) = actor(&["signal", &vp.to_string(), "11"], None, None);
    assert!(st.success());
    let status = victim.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert!(!status.core_dumped(), "the kernel wrote a core");
    // The kernel creates the file before it opens it (O_CREAT|O_EXCL): an
    // empty file may remain, but no byte of memory reaches it.
    let core = e.lab.root.join(format!("core.{vp}.ks-victim"));
    let written = std::fs::metadata(&core).map(|m| m.len()).unwrap_or(0);
    assert_eq!(written, 0, "{} holds a core", core.display());

    let alerts = s.alerts_until_marker(&e.marker);
    let a = one(&alerts, "forced-crash", sender);
    assert_eq!(a["action"], "observed", "{a:#}");
    let dumps: Vec<_> = alerts.iter().filter(|a| a["rule"] == "core-dump").collect();
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    let a = dumps[0];
    assert_eq!(a["action"], "denied", "{a:#}");
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["dump"]["path"], core.to_str().unwrap());
}

/// Runs on every kernel: with the tracepoint backend forced (what a kernel
/// without BPF LSM gets), enforce falls back to observe with a warning,
/// nothing is denied, and `keysentry probes` says why.
#[test]
fn enforce_falls_back_to_observe_on_the_tracepoint_backend() {
    let e = enf_lab();
    let cfg = enf_config(&e, &["ptrace-attach"]);
    let mut s = Sensor::start_with(&e.lab.root, &cfg, &["--backend", "tracepoint"]);
    let (mut victim, vp) = spawn_victim(&e.lab.victim_bin);
    let _ = s.alerts_until_marker(&e.marker);
    let (tracer, out) = run(&actor_bin(), &["ptrace-peek", &vp.to_string(), "0x1000"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("PTRACE_ATTACH"),
        "attach refused: {out:?}"
    );
    let alerts = s.alerts_until_marker(&e.marker);
    let a: Vec<_> = by_pid(&alerts, "ptrace-attach", tracer);
    assert!(!a.is_empty(), "{alerts:#?}");
    assert!(a.iter().all(|a| a["action"] == "observed"), "{alerts:#?}");
    assert_eq!(
        s.metric("keysentry_probe_attached{backend=\"lsm\",probe=\"lsm/ptrace_access_check\"}"),
        Some(0.0)
    );
    drop(victim.stdin.take());
    let _ = victim.wait();
    drop(s);

    let cfg_path = e.lab.root.join("keysentry.toml");
    let out = Command::new(keysentry_bin())
        .args(["probes", "--backend", "tracepoint", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BPF LSM: unavailable (--backend tracepoint)"),
        "{text}"
    );
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("enforcement"))
        .find(|l| l.trim_start().starts_with("ptrace-attach"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("observe") && line.contains("enforce requested"),
        "{line}"
    );
    assert!(
        text.contains("tracepoint/syscalls/sys_exit_openat"),
        "{text}"
    );
}
