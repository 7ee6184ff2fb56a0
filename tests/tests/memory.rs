//! Memory access to protected processes: real ptrace, process_vm_readv,
//! /proc/<pid>/mem and pidfd_getfd against a real victim holding a secret.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::Value;

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    /// A copy of ks-actor that is protected by exe path.
    victim_bin: PathBuf,
    /// A copy of ks-actor allowlisted to read the victim's memory.
    backup_bin: PathBuf,
}

fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("keys")).unwrap();
    let marker = root.join("keys/zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let copy = |name: &str| {
        let p = root.join(name);
        std::fs::copy(actor_bin(), &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let victim_bin = copy("ks-victim");
    let backup_bin = copy("ks-backup");
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
        backup_bin,
    }
}

fn config(l: &Lab) -> String {
    format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\ntarget = \"{}\"\n",
        l.root.join("keys").display(),
        l.victim_bin.display(),
        l.backup_bin.display(),
        l.victim_bin.display()
    )
}

struct Victim {
    child: Child,
    pid: u32,
    addr: String,
    len: String,
    fd: String,
    /// The id of its second thread (`victim-threads`).
    tid: Option<u32>,
}

impl Drop for Victim {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn victim(bin: &Path) -> Victim {
    victim_as(bin, "victim")
}

fn victim_as(bin: &Path, role: &str) -> Victim {
    let mut child = Command::new(bin)
        .arg(role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<String> = line.split_whitespace().map(String::from).collect();
    Victim {
        pid: child.id(),
        child,
        addr: f[0].clone(),
        len: f[1].clone(),
        fd: f[2].clone(),
        tid: f.get(3).and_then(|t| t.parse().ok()),
    }
}

fn alerts_of(alerts: &[Value], pid: u32) -> Vec<&Value> {
    alerts
        .iter()
        .filter(|a| a["process"]["pid"] == pid)
        .collect()
}

fn only(alerts: &[Value], pid: u32, rule: &str, target: u32) -> Value {
    let mine = alerts_of(alerts, pid);
    assert_eq!(
        mine.len(),
        1,
        "{rule}: one alert for pid {pid}: {alerts:#?}"
    );
    let a = mine[0].clone();
    assert_eq!(a["rule"], rule);
    assert_eq!(a["target"]["pid"], target, "{rule}: target");
    a
}

#[test]
fn every_technique_against_a_protected_process_alerts() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let v = victim(&l.victim_bin);
    // The victim's exec has been processed once the marker is through.
    let _ = s.alerts_until_marker(&l.marker);
    let vp = v.pid.to_string();

    let (peek, st) = actor(&["ptrace-peek", &vp, &v.addr], None, None);
    assert!(st.success());
    let (vm, st) = actor(&["vm-read", &vp, &v.addr, &v.len], None, None);
    assert!(st.success());
    let (mem, st) = actor(&["proc-mem", &vp, &v.addr, &v.len], None, None);
    assert!(st.success());
    let (dirfd, st) = actor(&["proc-mem-dirfd", &vp], None, None);
    assert!(st.success());
    let (task, st) = actor(&["proc-mem-task", &vp], None, None);
    assert!(st.success());
    let (getfd, st) = actor(&["pidfd-getfd", &vp, &v.fd], None, None);
    assert!(st.success());
    let (recon, st) = actor(&["recon-then-read", &vp, &v.addr, &v.len], None, None);
    assert!(st.success());
    let link = l.root.join("innocent");
    std::os::unix::fs::symlink(format!("/proc/{vp}/mem"), &link).unwrap();
    let (via_link, st) = actor(&["open", link.to_str().unwrap()], None, None);
    assert!(st.success());
    let (environ, st) = actor(&["open", &format!("/proc/{vp}/environ")], None, None);
    assert!(st.success());
    let (write, st) = actor(&["vm-write", &vp, &v.addr, "1"], None, None);
    assert!(st.success());

    let alerts = s.alerts_until_marker(&l.marker);
    let p = alerts_of(&alerts, peek);
    assert_eq!(p.len(), 2, "attach and peek: {alerts:#?}");
    assert_eq!(p[0]["rule"], "ptrace-attach");
    assert_eq!(p[0]["memory"]["op"], "PTRACE_ATTACH");
    assert_eq!(p[0]["memory"]["access"], "attach");
    assert_eq!(p[1]["memory"]["op"], "PTRACE_PEEKDATA");
    assert_eq!(p[1]["memory"]["access"], "read");
    for a in &p {
        assert_eq!(a["target"]["pid"], v.pid);
        assert_eq!(a["severity"], "high");
        assert_eq!(a["memory"]["result"], "success");
        assert_eq!(a["memory"]["target_protected"], true);
        assert_eq!(a["target"]["exe"], l.victim_bin.to_str().unwrap());
    }
    let a = only(&alerts, vm, "process-vm-read", v.pid);
    assert_eq!(a["attack"], "T1003.007");
    assert_eq!(a["memory"]["recon"], false);
    let a = only(&alerts, mem, "proc-mem-open", v.pid);
    assert_eq!(a["memory"]["path"], format!("/proc/{vp}/mem"));
    assert_eq!(a["memory"]["access"], "read");
    only(&alerts, dirfd, "proc-mem-open", v.pid);
    let a = only(&alerts, task, "proc-mem-open", v.pid);
    assert_eq!(a["memory"]["path"], format!("/proc/{vp}/task/{vp}/mem"));
    let a = only(&alerts, getfd, "pidfd-getfd", v.pid);
    assert_eq!(a["attack"], "T1003");
    let a = only(&alerts, via_link, "proc-mem-open", v.pid);
    assert_eq!(
        a["memory"]["path"],
        format!("/proc/{vp}/mem"),
        "symlink resolved"
    );
    // The environment holds tokens, not the process's memory: its own
    // rule, medium (tests/tests/precision.rs: no dump follows from it).
    let a = only(&alerts, environ, "proc-environ-read", v.pid);
    assert_eq!(a["memory"]["path"], format!("/proc/{vp}/environ"));
    assert_eq!(a["severity"], "medium");
    assert_eq!(a["attack"], "T1552");
    let a = only(&alerts, write, "process-vm-write", v.pid);
    assert_eq!(a["memory"]["access"], "write");
    assert_eq!(a["attack"], "T1055");
    let a = only(&alerts, recon, "process-vm-read", v.pid);
    assert_eq!(
        a["memory"]["recon"], true,
        "maps read first raises the score"
    );
    assert!(a["score"].as_u64().unwrap() > 80);
}

#[test]
fn self_access_allowlisted_tools_and_launching_a_child_are_not_alerts() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let v = victim(&l.victim_bin);
    let plain = victim(&actor_bin());
    let _ = s.alerts_until_marker(&l.marker);

    let (me, st) = actor(&["self-access"], None, None);
    assert!(st.success());
    let mut c = Command::new(&l.backup_bin)
        .args(["vm-read", &v.pid.to_string(), &v.addr, &v.len])
        .spawn()
        .unwrap();
    let backup = c.id();
    assert!(c.wait().unwrap().success());
    let (tracer, st) = actor(&["trace-child"], None, None);
    assert!(st.success());
    let (unprotected, st) = actor(
        &["vm-read", &plain.pid.to_string(), &plain.addr, &plain.len],
        None,
        None,
    );
    assert!(st.success());
    let out = Command::new(actor_bin())
        .args(["attach-running", l.victim_bin.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let running: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        alerts_of(&alerts, me).is_empty(),
        "self access: {alerts:#?}"
    );
    assert!(
        alerts_of(&alerts, backup).is_empty(),
        "allowlisted: {alerts:#?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["rule"] == "ptrace-attach" && a["memory"]["op"] == "PTRACE_SEIZE"),
        "a tracer starting its own child: {alerts:#?}"
    );
    let _ = tracer;
    let a = only(&alerts, unprotected, "process-vm-read", plain.pid);
    assert_eq!(a["severity"], "low");
    assert_eq!(a["memory"]["target_protected"], false);
    let attach: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "ptrace-attach" && a["target"]["pid"] == running)
        .collect();
    assert_eq!(
        attach.len(),
        1,
        "attaching to a child already running another program: {alerts:#?}"
    );
    assert_eq!(
        attach[0]["severity"], "high",
        "the child runs the protected exe"
    );
}

#[test]
fn failed_attempts_and_the_sensor_itself_are_protected() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let v = victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);
    let (nobody, st) = actor(
        &["vm-read", &v.pid.to_string(), &v.addr, &v.len],
        None,
        Some(65534),
    );
    assert_eq!(st.code(), Some(1), "EPERM expected as nobody");
    let sensor_pid = s.pid();
    let (at_sensor, _) = actor(
        &["vm-read", &sensor_pid.to_string(), "0x1000", "8"],
        None,
        None,
    );

    let alerts = s.alerts_until_marker(&l.marker);
    let a = only(&alerts, nobody, "process-vm-read", v.pid);
    assert_eq!(a["memory"]["result"], "failed");
    assert_eq!(a["memory"]["errno"], "EPERM");
    assert_eq!(a["process"]["uid"], 65534);
    assert_eq!(a["severity"], "medium");
    let a = only(&alerts, at_sensor, "process-vm-read", sensor_pid);
    assert_eq!(
        a["memory"]["target_protected"], true,
        "keysentry protects itself"
    );
}

/// The memory alerts through a thread id: the target is the process (tgid)
/// the thread belongs to, the thread named is `memory.thread`, and the
/// severity, taint and dump tracking are the leader's.
fn assert_via_thread(a: &Value, rule: &str, v: &Victim, tid: u32) {
    assert_via_thread_any_severity(a, rule, v, tid);
    assert_eq!(a["severity"], "high", "{rule}: {a:#}");
}

fn assert_via_thread_any_severity(a: &Value, rule: &str, v: &Victim, tid: u32) {
    assert_eq!(a["rule"], rule, "{a:#}");
    assert_eq!(
        a["target"]["pid"], v.pid,
        "{rule}: target is the tgid: {a:#}"
    );
    assert_eq!(a["memory"]["thread"], tid, "{rule}: the tid named: {a:#}");
    assert_eq!(a["memory"]["target_protected"], true, "{rule}: {a:#}");
    assert_eq!(a["memory"]["result"], "success", "{rule}: {a:#}");
}

/// A thread id of a protected process given as the target: ptrace
/// (attach and PEEKDATA of the thread), process_vm_readv, /proc/TID/mem,
/// /proc/PID/task/TID/mem, task/TID/maps (reconnaissance), task/TID/environ,
/// pidfd_getfd
/// through a thread pidfd, and a reader that writes what it read (a dump,
/// followed by the kernel's taint). `protect_before_start`: the victim and
/// its thread run before keysentry starts (user space fills the kernel's
/// thread map from /proc/PID/task), else its thread starts after its
/// protected exec (the kernel adds it at clone).
fn thread_id_targets(protect_before_start: bool) {
    let l = lab();
    let (v, mut s) = if protect_before_start {
        let v = victim_as(&l.victim_bin, "victim-threads");
        (v, Sensor::start(&l.root, &config(&l)))
    } else {
        let s = Sensor::start(&l.root, &config(&l));
        (victim_as(&l.victim_bin, "victim-threads"), s)
    };
    let _ = s.alerts_until_marker(&l.marker);
    let tid = v.tid.expect("victim-threads prints its thread id");
    assert_ne!(tid, v.pid);
    let (vp, ts) = (v.pid.to_string(), tid.to_string());

    let (peek, st) = actor(&["ptrace-peek", &ts, &v.addr], None, None);
    assert!(st.success());
    let (vm, st) = actor(&["vm-read", &ts, &v.addr, &v.len], None, None);
    assert!(st.success());
    let (mem, st) = actor(&["proc-mem", &ts, &v.addr, &v.len], None, None);
    assert!(st.success());
    let task_mem = format!("/proc/{vp}/task/{ts}/mem");
    let (task, st) = actor(&["pread", &task_mem, &v.addr, &v.len], None, None);
    assert!(st.success());
    let task_maps = format!("/proc/{vp}/task/{ts}/maps");
    let (recon, st) = actor(
        &["read-then-vm-read", &task_maps, &ts, &v.addr, &v.len],
        None,
        None,
    );
    assert!(st.success());
    let task_environ = format!("/proc/{vp}/task/{ts}/environ");
    let (environ, st) = actor(&["open", &task_environ], None, None);
    assert!(st.success());
    let (getfd, st) = actor(&["pidfd-getfd-thread", &ts, &v.fd], None, None);
    let thread_pidfd = match st.code() {
        Some(0) => true,
        Some(3) => {
            eprintln!("SKIP pidfd_getfd through a thread pidfd: no PIDFD_THREAD (kernel < 6.9)");
            false
        }
        _ => panic!("pidfd-getfd-thread: {st}"),
    };
    let out = l.root.join("thread-read.bin");
    let (dumper, st) = actor(
        &["vm-read-write", &ts, &v.addr, &v.len, out.to_str().unwrap()],
        None,
        None,
    );
    assert!(st.success());

    let alerts = s.alerts_until_marker(&l.marker);
    let p = alerts_of(&alerts, peek);
    assert_eq!(p.len(), 2, "attach and peek of a thread: {alerts:#?}");
    assert_eq!(p[0]["memory"]["op"], "PTRACE_ATTACH");
    assert_eq!(p[1]["memory"]["op"], "PTRACE_PEEKDATA");
    assert_eq!(p[1]["memory"]["access"], "read");
    for a in &p {
        assert_via_thread(a, "ptrace-attach", &v, tid);
    }
    let a = only(&alerts, vm, "process-vm-read", v.pid);
    assert_via_thread(&a, "process-vm-read", &v, tid);
    let a = only(&alerts, mem, "proc-mem-open", v.pid);
    assert_via_thread(&a, "proc-mem-open", &v, tid);
    assert_eq!(a["memory"]["path"], format!("/proc/{ts}/mem"));
    let a = only(&alerts, task, "proc-mem-open", v.pid);
    assert_via_thread(&a, "proc-mem-open", &v, tid);
    assert_eq!(a["memory"]["path"], task_mem);
    // task/TID/maps is reconnaissance of the process: the read after it
    // scores higher.
    let a = only(&alerts, recon, "process-vm-read", v.pid);
    assert_via_thread_any_severity(&a, "process-vm-read", &v, tid);
    assert_eq!(a["memory"]["recon"], true, "task/TID/maps is recon: {a:#}");
    assert!(
        a["score"].as_u64().unwrap() > 80,
        "recon raises the score: {a:#}"
    );
    // The environment through a thread: the process's, medium as ever.
    let a = only(&alerts, environ, "proc-environ-read", v.pid);
    assert_eq!(a["memory"]["path"], task_environ);
    assert_eq!(a["memory"]["thread"], tid);
    assert_eq!(a["severity"], "medium");
    if thread_pidfd {
        let a = only(&alerts, getfd, "pidfd-getfd", v.pid);
        assert_via_thread(&a, "pidfd-getfd", &v, tid);
    }
    // The reader was tainted by the kernel like a reader of the leader:
    // its file is a user-space dump of the process.
    let d = alerts_of(&alerts, dumper);
    let read = d
        .iter()
        .find(|a| a["rule"] == "process-vm-read")
        .unwrap_or_else(|| panic!("the dumper's read: {alerts:#?}"));
    assert_via_thread(read, "process-vm-read", &v, tid);
    let dump: Vec<_> = d.iter().filter(|a| a["rule"] == "userspace-dump").collect();
    assert_eq!(dump.len(), 1, "the reader's write is a dump: {alerts:#?}");
    assert_eq!(dump[0]["target"]["path"], out.to_str().unwrap());
    assert_eq!(dump[0]["flow"]["dumped"]["pid"], v.pid);
    assert_eq!(dump[0]["severity"], "critical");
}

#[test]
fn a_thread_id_of_a_protected_process_is_the_process() {
    thread_id_targets(false);
}

#[test]
fn threads_a_process_had_when_protected_at_start_are_the_process() {
    thread_id_targets(true);
}

#[test]
fn own_threads_are_no_alert_and_an_unprotected_thread_stays_low() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let plain = victim_as(&actor_bin(), "victim-threads");
    let _ = s.alerts_until_marker(&l.marker);
    let tid = plain.tid.expect("victim-threads prints its thread id");

    // keysentry stops while the actor reads its own thread and exits: by
    // the time user space sees the records, the thread id names nobody,
    // so only the kernel can say it was the actor's own.
    let ks = nix::unistd::Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    let (me, st) = actor(&["self-thread-access"], None, None);
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(st.success());
    let (unprotected, st) = actor(
        &["vm-read", &tid.to_string(), &plain.addr, &plain.len],
        None,
        None,
    );
    assert!(st.success());
    let out = l.root.join("plain-read.bin");
    let (writer, st) = actor(
        &[
            "vm-read-write",
            &tid.to_string(),
            &plain.addr,
            &plain.len,
            out.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert!(st.success());

    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        alerts_of(&alerts, me).is_empty(),
        "a process's own threads: {alerts:#?}"
    );
    let a = only(&alerts, unprotected, "process-vm-read", plain.pid);
    assert_eq!(a["severity"], "low");
    assert_eq!(a["memory"]["target_protected"], false);
    assert_eq!(a["memory"]["thread"], tid);
    let w = alerts_of(&alerts, writer);
    assert_eq!(w.len(), 1, "a read, no dump: {alerts:#?}");
    assert_eq!(w[0]["severity"], "low");
}

/// The host pid of `parent`'s only child (the pid 1 `unshare --fork`
/// starts), checked to be pid 1 of its own namespace.
fn ns_init_of(parent: u32) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if st.lines().any(|l| l == format!("PPid:\t{parent}")) {
            assert!(
                st.lines().any(|l| l == format!("NSpid:\t{pid}\t1")),
                "pid 1 of a new pid namespace: {st}"
            );
            return pid;
        }
    }
    panic!("no child of {parent}");
}

/// ks-actor `args` run inside the pid and mount namespaces of `pid`
/// (nsenter forks it there): nsenter's pid (the actor's parent) and the
/// exit status.
fn actor_in_ns(pid: u32, args: &[&str]) -> (u32, std::process::ExitStatus) {
    let mut c = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-p", "-m", "--"])
        .arg(actor_bin())
        .args(args)
        .spawn()
        .expect("spawn nsenter");
    (c.id(), c.wait().unwrap())
}

#[test]
fn a_container_naming_its_pid_1_reaches_the_protected_process() {
    if shell("command -v unshare && command -v nsenter").is_none() {
        eprintln!("SKIP pid namespaces: no unshare/nsenter (util-linux)");
        return;
    }
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    // The protected program as pid 1 of a new pid namespace with its own
    // /proc, like a containerised Vault.
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(&l.victim_bin)
        .arg("victim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let (addr, len) = (f[0].to_string(), f[1].to_string());
    let host = ns_init_of(child.id());
    let _ = s.alerts_until_marker(&l.marker);

    // From inside the namespace the protected process is pid 1.
    let (peek, st) = actor_in_ns(host, &["ptrace-peek", "1", &addr]);
    assert!(st.success());
    let (vm, st) = actor_in_ns(host, &["vm-read", "1", &addr, &len]);
    assert!(st.success());
    let (mem, st) = actor_in_ns(host, &["proc-mem", "1", &addr, &len]);
    assert!(st.success());
    let out = l.root.join("ns-read.bin");
    let (dumper, st) = actor_in_ns(
        host,
        &["vm-read-write", "1", &addr, &len, out.to_str().unwrap()],
    );
    assert!(st.success());

    let alerts = s.alerts_until_marker(&l.marker);
    drop(child.stdin.take());
    let _ = child.wait();
    let by = |nsenter: u32| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["process"]["ppid"] == nsenter)
            .collect()
    };
    let high = |a: &Value, rule: &str| {
        assert_eq!(a["rule"], rule, "{a:#}");
        assert_eq!(a["target"]["pid"], host, "the host pid: {a:#}");
        assert_eq!(a["memory"]["target_protected"], true, "{a:#}");
        assert_eq!(a["severity"], "high", "{a:#}");
    };
    let p = by(peek);
    assert_eq!(p.len(), 2, "attach and peek: {alerts:#?}");
    assert_eq!(p[0]["memory"]["op"], "PTRACE_ATTACH");
    assert_eq!(p[1]["memory"]["op"], "PTRACE_PEEKDATA");
    for a in &p {
        high(a, "ptrace-attach");
    }
    let v = by(vm);
    assert_eq!(v.len(), 1, "{alerts:#?}");
    high(v[0], "process-vm-read");
    let m = by(mem);
    assert_eq!(m.len(), 1, "{alerts:#?}");
    high(m[0], "proc-mem-open");
    // The reader is tainted as on the host: what it writes is a dump of
    // the protected process.
    let d = by(dumper);
    let dump: Vec<_> = d.iter().filter(|a| a["rule"] == "userspace-dump").collect();
    assert_eq!(dump.len(), 1, "the reader's write is a dump: {alerts:#?}");
    assert_eq!(dump[0]["flow"]["dumped"]["pid"], host);
    assert_eq!(dump[0]["severity"], "critical");
    // Nothing is reported against the host's pid 1.
    assert!(
        alerts.iter().all(|a| a["target"]["pid"] != 1),
        "the host's init is no target: {alerts:#?}"
    );
}
