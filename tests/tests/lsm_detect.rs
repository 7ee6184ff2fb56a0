//! Detection by BPF LSM hooks (docs/architecture.md, `lsm_detect.rs` and
//! `lsm.rs`): a key read through an fd the reader did not open
//! (SCM_RIGHTS, pidfd_getfd, inherited, kept across exec) is alerted as
//! `key-file-open` with `open.via` saying how the fd came, once per
//! process, and taints the reader; an access to a protected process
//! through a syscall the tracepoints do not enumerate (kcmp,
//! get_robust_list) is `process-access`, and the syscalls they do
//! enumerate are not alerted twice. Needs a kernel that runs BPF LSM (the
//! VM kernels); elsewhere those tests print `SKIPPED: <why>`. The
//! tracepoint-backend test runs everywhere.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
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

struct FdLab {
    lab: Lab,
    key: PathBuf,
    /// A copy of ks-actor: the program that reads a handed-over fd.
    reader_bin: PathBuf,
    /// A copy of ks-actor allowlisted for the key directory.
    allowed_bin: PathBuf,
}

fn copy_actor(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    std::fs::copy(actor_bin(), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fd_lab() -> FdLab {
    let lab = lab();
    let key = lab.root.join("keys/ca.key");
    std::fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n",
    )
    .unwrap();
    let reader_bin = copy_actor(&lab.root, "ks-reader");
    let allowed_bin = copy_actor(&lab.root, "ks-allowed");
    FdLab {
        lab,
        key,
        reader_bin,
        allowed_bin,
    }
}

fn fd_config(l: &FdLab) -> String {
    let keys = l.lab.root.join("keys");
    format!(
        "{}\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        config(&l.lab),
        l.allowed_bin.display(),
        keys.display()
    )
}

/// `ks-actor scm-pass KEY BIN [PORT]`: (sender pid, receiver pid).
fn scm_pass(key: &Path, bin: &Path, port: Option<u16>) -> (u32, u32) {
    let mut c = Command::new(actor_bin());
    c.arg("scm-pass").arg(key).arg(bin);
    if let Some(p) = port {
        c.arg(p.to_string());
    }
    let child = c.stdout(Stdio::piped()).spawn().unwrap();
    let sender = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "scm-pass: {out:?}");
    let receiver = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (sender, receiver)
}

fn key_opens(alerts: &[Value], pid: u32) -> Vec<&Value> {
    by_pid(alerts, "key-file-open", pid)
}

#[test]
fn a_key_read_through_a_handed_over_fd_is_alerted() {
    require_lsm!();
    let l = fd_lab();
    let mut s = Sensor::start(&l.lab.root, &fd_config(&l));
    let _ = s.alerts_until_marker(&l.lab.marker);
    let port = listener();
    let key = l.key.to_str().unwrap();

    // SCM_RIGHTS: the receiver reads twice and maps the file, then sends
    // what it read to 127.0.0.1.
    let (sender, receiver) = scm_pass(&l.key, &l.reader_bin, Some(port));
    // An fd kept across exec into another program (same pid).
    let (execer, st) = actor(
        &["exec-read", key, l.reader_bin.to_str().unwrap()],
        None,
        None,
    );
    assert!(st.success());
    // Inherited: the shell opens the key, cat (its child) reads it (not the
    // last command, so the shell forks rather than exec'ing cat itself).
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3< '{key}'; cat <&3 >/dev/null; true"))
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    assert!(sh.wait_with_output().unwrap().status.success());
    // pidfd_getfd out of a process that holds the key open.
    let mut holder = Command::new(actor_bin())
        .args(["hold", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (taker, st) = actor(
        &["pidfd-getfd-read", &holder.id().to_string(), line.trim()],
        None,
        None,
    );
    assert!(st.success());
    drop(holder.stdin.take());
    let holder_pid = holder.id();
    let _ = holder.wait();
    // An allowlisted receiver: no alert.
    let (_, allowed) = scm_pass(&l.key, &l.allowed_bin, None);
    let alerts = s.alerts_until_marker(&l.lab.marker);

    // The sender's own open: the tracepoint alert, as always.
    let a = key_opens(&alerts, sender);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["open"]["via"], "openat");

    // The receiver: one alert for two reads and a mapping.
    let a = key_opens(&alerts, receiver);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    let a = a[0];
    assert_eq!(a["open"]["via"], "fd-scm-rights", "{a:#}");
    assert_eq!(a["open"]["fd_op"], "read");
    assert_eq!(a["open"]["access"], "read");
    assert_eq!(a["open"]["result"], "success");
    assert_eq!(a["open"]["opened_by"]["pid"], sender, "{a:#}");
    assert_eq!(a["open"]["matched"], serde_json::json!(["key_path"]));
    assert_eq!(
        a["open"]["key_path"],
        l.lab.root.join("keys").to_str().unwrap()
    );
    assert_eq!(a["target"]["path"], key);
    assert_eq!(a["target"]["inode"], ino(&l.key));
    assert_eq!(a["process"]["exe"], l.reader_bin.to_str().unwrap());
    assert_eq!(a["severity"], "high");
    // Tainted like an opener: its send is exfiltration.
    let ex = by_pid(&alerts, "exfiltration", receiver);
    assert_eq!(ex.len(), 1, "{alerts:#?}");
    assert_eq!(ex[0]["flow"]["remote"], format!("127.0.0.1:{port}"));

    // exec-read: the open (ks-actor), then the read by the new program.
    let a = key_opens(&alerts, execer);
    assert_eq!(a.len(), 2, "{alerts:#?}");
    assert_eq!(a[0]["open"]["via"], "openat");
    assert_eq!(a[1]["open"]["via"], "fd-kept-across-exec", "{:#}", a[1]);
    assert_eq!(a[1]["open"]["opened_by"]["pid"], execer);
    assert_eq!(a[1]["process"]["exe"], l.reader_bin.to_str().unwrap());

    // cat < key: the shell's open, then cat's read of the inherited fd.
    assert_eq!(key_opens(&alerts, sh_pid).len(), 1, "{alerts:#?}");
    let cat: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "key-file-open" && a["process"]["comm"] == "cat")
        .collect();
    assert_eq!(cat.len(), 1, "{alerts:#?}");
    assert_eq!(cat[0]["open"]["via"], "fd-inherited", "{:#}", cat[0]);
    assert_eq!(cat[0]["open"]["opened_by"]["pid"], sh_pid);
    assert_eq!(cat[0]["process"]["ppid"], sh_pid);

    // pidfd_getfd: the memory rule, and the read of the key it took.
    let a = key_opens(&alerts, taker);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["open"]["via"], "fd-pidfd-getfd", "{:#}", a[0]);
    assert_eq!(a[0]["open"]["opened_by"]["pid"], holder_pid);
    assert_eq!(
        by_pid(&alerts, "pidfd-getfd", taker).len(),
        1,
        "{alerts:#?}"
    );

    assert!(key_opens(&alerts, allowed).is_empty(), "{alerts:#?}");

    // A tracked copy of the key handed over: dump-file-access, flow.via.
    let copy = l.lab.root.join("stolen.bin");
    assert!(
        Command::new("cp")
            .arg(&l.key)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    // Once the copy's alert is out, the kernel tracks the copy.
    let alerts = s.alerts_until_marker(&l.lab.marker);
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "tracked-copy" && a["target"]["path"] == copy.to_str().unwrap()),
        "{alerts:#?}"
    );
    let (csender, creceiver) = scm_pass(&copy, &l.reader_bin, None);
    let alerts = s.alerts_until_marker(&l.lab.marker);
    let a = by_pid(&alerts, "dump-file-access", creceiver);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["flow"]["via"], "fd-scm-rights", "{:#}", a[0]);
    assert_eq!(a[0]["target"]["path"], copy.to_str().unwrap());
    assert_eq!(a[0]["target"]["inode"], ino(&copy));
    let a = by_pid(&alerts, "dump-file-access", csender);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["flow"]["via"], "open");
    // The LSM programs staged these accesses per thread and sent them
    // compact.
    assert_sent_compact(&s, "fd_access", key.len().max(copy.as_os_str().len()));
    for hook in ["file_permission", "mmap_file", "file_receive", "file_open"] {
        assert_eq!(
            s.metric(&format!(
                "keysentry_probe_attached{{backend=\"lsm\",probe=\"lsm/{hook}\"}}"
            )),
            Some(1.0),
            "{hook}"
        );
    }
}

#[test]
fn an_access_the_tracepoints_do_not_enumerate_is_alerted_once() {
    require_lsm!();
    let l = fd_lab();
    let mut s = Sensor::start(&l.lab.root, &fd_config(&l));
    let (mut victim, vp) = spawn_victim(&l.lab.victim_bin);
    let _ = s.alerts_until_marker(&l.lab.marker);
    let vps = vp.to_string();
    let me = std::process::id().to_string();

    // Seen only by the kernel's ptrace access check.
    let (kcmp, st) = actor(&["kcmp", &vps], None, None);
    assert!(st.success());
    let (robust, st) = actor(&["robust-list", &vps], None, None);
    assert!(st.success());
    // A read-mode access to an unprotected process: not reported.
    let (kcmp_other, st) = actor(&["kcmp", &me], None, None);
    assert!(st.success());
    // Syscalls the tracepoints report: alerted by them, not by the LSM.
    let (tracer, _) = actor(&["ptrace-peek", &vps, "0x1000"], None, None);
    let (reader, _) = actor(&["vm-read", &vps, "0x1000", "8"], None, None);
    let (mem, _) = actor(&["proc-mem", &vps, "0x1000", "8"], None, None);
    let alerts = s.alerts_until_marker(&l.lab.marker);

    for (pid, op) in [(kcmp, "kcmp"), (robust, "get_robust_list")] {
        let a = by_pid(&alerts, "process-access", pid);
        assert_eq!(a.len(), 1, "{op}: {alerts:#?}");
        let a = a[0];
        assert_eq!(a["memory"]["op"], op, "{a:#}");
        assert_eq!(a["memory"]["access"], "read");
        assert_eq!(a["memory"]["target_protected"], true);
        assert_eq!(a["target"]["pid"], vp);
        assert_eq!(a["target"]["exe"], l.lab.victim_bin.to_str().unwrap());
        assert_eq!(a["attack"], "T1057");
        assert_eq!(a["severity"], "medium");
    }
    assert!(
        alerts.iter().all(|a| a["process"]["pid"] != kcmp_other),
        "{alerts:#?}"
    );
    for (pid, rule) in [
        (tracer, "ptrace-attach"),
        (reader, "process-vm-read"),
        (mem, "proc-mem-open"),
    ] {
        assert!(
            !by_pid(&alerts, rule, pid).is_empty(),
            "{rule}: {alerts:#?}"
        );
        assert!(
            by_pid(&alerts, "process-access", pid).is_empty(),
            "{rule}: {alerts:#?}"
        );
    }
    assert_eq!(
        s.metric("keysentry_probe_attached{backend=\"lsm\",probe=\"lsm/ptrace_access_check\"}"),
        Some(1.0)
    );
    drop(victim.stdin.take());
    let _ = victim.wait();
}

/// Runs on every kernel: the tracepoint backend (forced, or a kernel
/// without BPF LSM) still alerts the open, does not see the hand-over, and
/// `keysentry probes` says why.
#[test]
fn the_tracepoint_backend_alerts_the_open_but_not_a_handed_over_fd() {
    let l = fd_lab();
    let mut s = Sensor::start_with(&l.lab.root, &fd_config(&l), &["--backend", "tracepoint"]);
    let _ = s.alerts_until_marker(&l.lab.marker);
    let (mut victim, vp) = spawn_victim(&l.lab.victim_bin);
    let (sender, receiver) = scm_pass(&l.key, &l.reader_bin, None);
    let (kcmp, st) = actor(&["kcmp", &vp.to_string()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.lab.marker);
    drop(victim.stdin.take());
    let _ = victim.wait();
    assert!(
        alerts.iter().all(|a| a["process"]["pid"] != kcmp),
        "{alerts:#?}"
    );
    let a = key_opens(&alerts, sender);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["open"]["via"], "openat");
    assert_eq!(a[0]["target"]["inode"], ino(&l.key));
    assert!(key_opens(&alerts, receiver).is_empty(), "{alerts:#?}");
    assert_eq!(
        s.metric("keysentry_probe_attached{backend=\"lsm\",probe=\"lsm/file_permission\"}"),
        Some(0.0)
    );
    drop(s);

    let out = Command::new(keysentry_bin())
        .args(["probes", "--backend", "tracepoint"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for what in ["via an fd it did not open", "process-access ("] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("not covered: --backend tracepoint"), "{line}");
    }
}
