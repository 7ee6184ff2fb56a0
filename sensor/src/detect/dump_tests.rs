//! The policy's dump rules (forced crash, core dump, dump config;
//! `detect_dumps.rs`) and dump-file access without a kernel or root. The
//! dump rules' not-an-alert cases (a signal to an unprotected process or
//! to itself, a dump setting lowered) are decided in their handlers, which
//! need a pipeline: not tested here (tests/tests/dump.rs, a VM test, has
//! the unprotected crash).

use std::cell::Cell;

use super::tests::{HOST, O_PATH, cat, policy, proc, ts, vault};
use super::*;
use crate::alert::DumpDetail;
use crate::alert::Origin;

#[test]
fn a_forced_crash() {
    let p = Policy::default();
    let (kill, v) = (proc(50, 1, 0, "/usr/bin/kill"), vault());
    let detail = DumpDetail {
        signal: Some("SIGSEGV".into()),
        sent_by: Some("kill"),
        delivered: Some(true),
        ..Default::default()
    };
    let a = p.forced_crash(&kill, &v, detail.clone(), HOST, ts());
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("forced-crash", "T1003", Severity::High, 75)
    );
    assert_eq!(
        a.message,
        "kill (pid 50, uid 0) sent SIGSEGV to protected process vault (pid 20): a crash that dumps its memory"
    );
    assert_eq!(a.process.pid, 50);
    assert!(matches!(a.target, Target::Process { pid: 20, .. }));
    assert_eq!(a.dump, Some(detail));
}

#[test]
fn a_core_dump() {
    let p = Policy::default();
    let v = vault();
    let to_file = DumpDetail {
        signal: Some("SIGABRT".into()),
        path: Some("/var/crash/core.20".into()),
        ..Default::default()
    };
    let a = p.core_dump(&v, to_file, HOST, ts());
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("core-dump", "T1003", Severity::Critical, 90)
    );
    assert_eq!(
        a.message,
        "protected process vault (pid 20) dumped core on SIGABRT to /var/crash/core.20"
    );
    // The dumped process is both actor and target.
    assert_eq!((a.process.pid, a.incident.as_str()), (20, "inc-20-10"));
    assert!(matches!(a.target, Target::Process { pid: 20, .. }));
    let to_pipe = DumpDetail {
        signal: Some("SIGABRT".into()),
        helper: vec!["/usr/lib/systemd/systemd-coredump".into(), "20".into()],
        ..Default::default()
    };
    let b = p.core_dump(&v, to_pipe, HOST, ts());
    assert!(
        b.message
            .ends_with("through /usr/lib/systemd/systemd-coredump")
    );
}

#[test]
fn a_dump_setting_changed_or_tried() {
    let p = Policy::default();
    let (sh, v) = (proc(60, 1, 0, "/usr/bin/sh"), vault());
    let detail = |result| DumpDetail {
        setting: Some("core_pattern"),
        result: Some(result),
        ..Default::default()
    };
    let a = p.dump_config(
        &sh,
        None,
        Some("/proc/sys/kernel/core_pattern"),
        detail("success"),
        HOST,
        ts(),
    );
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("dump-config-change", "T1003", Severity::High, 70)
    );
    assert_eq!(
        a.message,
        "sh (pid 60, uid 0) changed core_pattern: core dumps enabled or redirected"
    );
    assert_eq!(
        a.target,
        Target::File {
            path: "/proc/sys/kernel/core_pattern".into(),
            dev: 0,
            inode: 0
        }
    );
    let rlimit = DumpDetail {
        setting: Some("RLIMIT_CORE"),
        value: Some(u64::MAX),
        result: Some("failed"),
        ..Default::default()
    };
    let f = p.dump_config(&sh, Some(&v), None, rlimit, HOST, ts());
    assert_eq!((f.severity, f.score), (Severity::Medium, 45));
    assert_eq!(
        f.message,
        "sh (pid 60, uid 0) tried to change RLIMIT_CORE of protected process vault (pid 20): core dumps enabled or redirected"
    );
    assert!(matches!(f.target, Target::Process { pid: 20, .. }));
}

// ---- dump-file access ----

fn tracked<'a>(actor: &'a ProcInfo, dump: bool) -> TrackedOpen<'a> {
    TrackedOpen {
        actor,
        via: "open",
        flags: 0,
        id: 7,
        path: "/var/crash/core.20".into(),
        dev: 2049,
        ino: 99,
        dump,
        weak: false,
        origin_pid: Some(70),
        dumped: Some(Origin {
            pid: 20,
            comm: "vault".into(),
            exe: "/usr/bin/vault".into(),
            protected: None,
        }),
    }
}

fn lineage() -> Vec<LineageStep> {
    vec![LineageStep {
        id: 7,
        path: "/var/crash/core.20".into(),
        kind: crate::alert::TrackedKind::Dump,
        how: "core-dump",
        generation: 0,
        by: None,
    }]
}

#[test]
fn a_dump_file_opened_or_accessed() {
    let p = Policy::default();
    let c = cat();
    let a = p
        .dump_file_access(tracked(&c, true), lineage, HOST, ts())
        .unwrap();
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("dump-file-access", "T1005", Severity::High, 75)
    );
    assert_eq!(
        a.message,
        "cat (pid 10, uid 1000) opened dump file /var/crash/core.20 for read"
    );
    let f = a.flow.unwrap();
    assert_eq!(
        (f.via, f.tracked_id, f.lineage),
        ("open", Some(7), lineage())
    );
    assert_eq!(f.dumped.map(|d| d.pid), Some(20));

    let mut fd = tracked(&c, true);
    fd.via = "fd-inherited";
    let b = p.dump_file_access(fd, lineage, HOST, ts()).unwrap();
    assert_eq!(
        b.message,
        "cat (pid 10, uid 1000) accessed dump file /var/crash/core.20 for read through an fd it did not open (fd-inherited)"
    );

    // A copy of a key whose own evidence was weak: as weak.
    let mut weak = tracked(&c, false);
    weak.weak = true;
    let w = p.dump_file_access(weak, lineage, HOST, ts()).unwrap();
    assert_eq!((w.severity, w.score), (Severity::Low, 25));
    assert!(
        w.message
            .contains("opened a copy of key material, /var/crash/core.20")
    );
}

#[test]
fn no_dump_file_alert_for_its_writer_an_o_path_open_or_an_allowed_reader() {
    let p = policy(
        "[[allow]]\nexe = \"/usr/bin/uploader\"\ndumps = true\n\
         [[allow]]\nexe = \"/usr/sbin/nginx\"\n",
    );
    let read = Cell::new(0);
    let lin = || {
        read.set(read.get() + 1);
        lineage()
    };
    let alert = |o: TrackedOpen<'_>| p.dump_file_access(o, lin, HOST, ts());

    let writer = proc(70, 1, 0, "/usr/bin/gcore");
    let writers_child = proc(71, 70, 0, "/usr/bin/gzip");
    assert!(alert(tracked(&writer, true)).is_none(), "its writer");
    assert!(
        alert(tracked(&writers_child, true)).is_none(),
        "the writer's child"
    );
    let c = cat();
    let mut path_only = tracked(&c, true);
    path_only.flags = O_PATH;
    assert!(alert(path_only).is_none(), "O_PATH");
    // Nothing was alerted: the lineage was never read.
    assert_eq!(read.get(), 0);

    let uploader = proc(80, 1, 0, "/usr/bin/uploader");
    let nginx = proc(81, 1, 33, "/usr/sbin/nginx");
    assert!(alert(tracked(&uploader, true)).is_none(), "allowed dumps");
    assert!(alert(tracked(&uploader, false)).is_some(), "a key copy");
    assert!(alert(tracked(&nginx, false)).is_none(), "allowed keys");
    assert!(alert(tracked(&nginx, true)).is_some(), "a dump");
    assert_eq!(read.get(), 2);

    // No known writer: anyone is alerted.
    let mut unknown = tracked(&writers_child, true);
    unknown.origin_pid = None;
    assert!(alert(unknown).is_some());
}
