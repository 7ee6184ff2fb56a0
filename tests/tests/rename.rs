//! `[[protected]] comm` follows the process's current name: a daemon that
//! names itself after exec (prctl(PR_SET_NAME), a write to
//! /proc/self/comm) is protected from then on (task:task_rename, in the
//! kernel at once and in user space), while a worker THREAD taking the
//! protected name protects nothing.

mod common;

use std::{
    io::Write,
    os::unix::process::ExitStatusExt,
    process::{Child, ExitStatus},
};

use common::{lab::*, *};
use serde_json::Value;

/// The protected name: never the name a process execs under (ks-actor).
const NAME: &str = "ks-signerd";

fn config(l: &Lab) -> String {
    format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\ncomm = \"{NAME}\"\n",
        l.root.join("keys").display()
    )
}

/// ks-actor `role NAME` (exec'd as ks-actor, renamed by the role), RLIMIT_CORE
/// raised: (child, pid, secret address, secret length).
fn renamed_victim(role: &str) -> (Child, u32, String, String) {
    let (child, pid, line) = spawn_line(&actor_bin(), &[role, NAME]);
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 3, "victim line: {line:?}");
    (child, pid, f[0].to_string(), f[1].to_string())
}

fn comm_of(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// Tells the victim to crash itself with `how` ("segv", "abort"); its status.
fn crash(mut victim: Child, how: &str) -> ExitStatus {
    let mut stdin = victim.stdin.take().unwrap();
    writeln!(stdin, "{how}").unwrap();
    drop(stdin);
    victim.wait().unwrap()
}

fn of<'a>(alerts: &'a [Value], rule: &str, target: u32) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["target"]["pid"] == target)
        .collect()
}

/// The proc-mem-open alert of `reader` (exactly one) against `target`.
fn mem_alert(alerts: &[Value], reader: u32, target: u32) -> &Value {
    let a = by_pid(alerts, "proc-mem-open", reader);
    assert_eq!(a.len(), 1, "one proc-mem-open by {reader}: {alerts:#?}");
    assert_eq!(a[0]["target"]["pid"], target);
    assert_eq!(a[0]["memory"]["path"], format!("/proc/{target}/mem"));
    assert_eq!(a[0]["memory"]["access"], "read");
    a[0]
}

/// The protected daemon: its memory read is high against a protected
/// target, its own crash is one `core-dump` alert (the core file the
/// kernel named after the new comm), and no `forced-crash` (it crashed
/// itself). Returns (reader pid, victim pid) for the replay check.
fn protected_after_rename(s: &mut Sensor, l: &Lab, role: &str, how: &str, sig: i32) -> (u32, u32) {
    let (victim, vp, addr, len) = renamed_victim(role);
    assert_eq!(comm_of(vp, vp), NAME, "the leader is renamed");
    // The rename has been handled once the marker is through.
    let before = s.alerts_until_marker(&l.marker);
    assert!(
        before.iter().all(|a| a["target"]["pid"] != vp),
        "a rename alone is no alert: {before:#?}"
    );

    let (reader, st) = actor(&["proc-mem", &vp.to_string(), &addr, &len], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = mem_alert(&alerts, reader, vp);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["memory"]["target_protected"], true, "{a:#}");
    assert_eq!(
        a["target"]["comm"], NAME,
        "the process table follows the name"
    );

    let status = crash(victim, how);
    assert_eq!(status.signal(), Some(sig));
    assert!(status.core_dumped(), "the kernel wrote a core");
    let core = l.root.join(format!("core.{vp}.{NAME}"));
    assert!(core.exists(), "{} missing", core.display());
    let alerts = s.alerts_until_marker(&l.marker);
    let dumps = of(&alerts, "core-dump", vp);
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    let d = dumps[0];
    assert_eq!(d["dump"]["path"], core.to_str().unwrap(), "{d:#}");
    assert_eq!(d["dump"]["exists"], true);
    assert_eq!(d["target"]["comm"], NAME);
    assert!(
        of(&alerts, "forced-crash", vp).is_empty(),
        "a process crashing itself is no forced crash: {alerts:#?}"
    );
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"true\"}"),
        Some(1.0)
    );
    assert!(s.metric("keysentry_events_total{kind=\"rename\"}").unwrap() >= 1.0);
    (reader, vp)
}

#[test]
fn comm_rename_by_prctl_after_exec_protects_and_replays() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", l.root.display()));
    let rec = l.root.join("rename.ksrec");
    let mut s = Sensor::start_with(&l.root, &config(&l), &["--record", rec.to_str().unwrap()]);
    let (reader, vp) =
        protected_after_rename(&mut s, &l, "victim-prctl-name", "segv", libc::SIGSEGV);
    let _ = s.stop_and_drain();

    // The rename is a raw ring record like any other: the replay protects
    // the process at the same point and gives the same alerts.
    let out = replay(&rec, &[]);
    let a = mem_alert(&out, reader, vp);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["memory"]["target_protected"], true);
    assert_eq!(a["target"]["comm"], NAME);
    let dumps = of(&out, "core-dump", vp);
    assert_eq!(dumps.len(), 1, "{out:#?}");
    assert_eq!(
        dumps[0]["dump"]["path"],
        l.root.join(format!("core.{vp}.{NAME}")).to_str().unwrap()
    );
}

#[test]
fn comm_rename_through_proc_comm_by_another_thread_protects() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    protected_after_rename(&mut s, &l, "victim-comm-write", "abort", libc::SIGABRT);
}

#[test]
fn comm_rename_of_a_thread_protects_nothing() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    let (victim, vp, addr, len) = renamed_victim("victim-thread-name");
    // One of its threads (not the leader) has the protected name.
    assert_ne!(comm_of(vp, vp), NAME);
    let named: Vec<u32> = std::fs::read_dir(format!("/proc/{vp}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .filter(|tid| comm_of(vp, *tid) == NAME)
        .collect();
    assert_eq!(named.len(), 1, "one renamed thread");
    assert_ne!(named[0], vp);
    let _ = s.alerts_until_marker(&l.marker);

    let (reader, st) = actor(&["proc-mem", &vp.to_string(), &addr, &len], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = mem_alert(&alerts, reader, vp);
    assert_eq!(a["severity"], "low", "{a:#}");
    assert_eq!(a["memory"]["target_protected"], false, "{a:#}");

    let status = crash(victim, "segv");
    assert!(status.core_dumped());
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        alerts.iter().all(|a| a["target"]["pid"] != vp),
        "an unprotected crash is no alert: {alerts:#?}"
    );
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"false\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"true\"}")
            .unwrap_or(0.0),
        0.0
    );
}
