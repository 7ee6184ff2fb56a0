//! More rule families through the `Context`, without a kernel: the BPF LSM
//! paths (enforcement denials, `enforce.rs`; key and tracked-file reads
//! through an fd the reader did not open, `fdaccess.rs`), the environment
//! reads judged at the reader's exit (`environ.rs`) and renames of tracked
//! files (`renames.rs`), each with what must not alert.

use sensor_common::{
    ENF_KEY_OPEN, ENF_PTRACE, FDA_READ, FDV_RECEIVED, PATH_OP_RENAME, PATH_OP_UNLINK, WATCH_TRACKED,
};

use super::flow_tests::{KDEV, KEY_INO, raised, task, with};
use super::tests::{cat, policy, proc, vault};
use super::{Policy, enforce::DeniedThreads, environ::Environ, fdaccess, flows::Flows, renames};
use crate::{
    alert::{Alert, Origin, Severity, TrackedKind},
    enrich::{context::Context, watch::st_dev},
    ingest::decode::{
        flow::PathRecord,
        lsm::{DeniedRecord, FdAccessRecord},
    },
};

const ALLOW_NGINX: &str =
    "[[key_path]]\npath = \"/etc/ssl/private\"\n[[allow]]\nexe = \"/usr/sbin/nginx\"\n";

// ---- enforcement denials ----

fn denial(actor: &crate::enrich::proctab::ProcInfo, rule: u32, target: u32) -> DeniedRecord {
    DeniedRecord {
        task: task(actor),
        rule,
        target,
        arg: 0,
        syscall: 257,
        dev: KDEV,
        ino: KEY_INO,
        watch_id: 0,
        flags: 0,
        observed: false,
        path: Some("/etc/ssl/private/ca.key".into()),
    }
}

#[test]
fn a_denial_is_one_alert_and_its_follow_up_failures_are_not_alerted_again() {
    let c = cat();
    let v = vault();
    let mut cx = with(&[c.clone(), v.clone()]);
    let keys = policy("[[key_path]]\npath = \"/etc/ssl/private\"\n");
    let mut d = DeniedThreads::default();
    d.denied(&mut cx, &keys, &denial(&c, ENF_KEY_OPEN, 0));
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].rule, a[0].action), ("key-file-open", Some("denied")));
    assert!(
        a[0].message.ends_with("(denied: enforce mode)"),
        "{}",
        a[0].message
    );
    assert_eq!(
        a[0].open.as_ref().map(|o| (o.result, o.via)),
        Some(("failed", "openat"))
    );
    // The open's own exit tracepoint then sees EPERM: consumed once.
    assert!(d.take_open(c.pid, -1));
    assert!(!d.take_open(c.pid, -1));

    d.denied(&mut cx, &keys, &denial(&c, ENF_PTRACE, v.pid));
    let a = raised(&mut cx);
    assert_eq!((a[0].rule, a[0].action), ("ptrace-attach", Some("denied")));
    // Every later failing request of that thread to that target follows
    // from the denial; another target, or a success, does not.
    assert!(d.follows_denial(c.pid, v.pid, -3));
    assert!(!d.follows_denial(c.pid, 99, -3));
    assert!(!d.follows_denial(c.pid, v.pid, 0));
    d.exited(c.pid);
    assert!(!d.follows_denial(c.pid, v.pid, -3));
}

#[test]
fn a_denial_is_an_alert_even_when_user_space_allows_it() {
    // The allowlist changed on disk before the kernel's copy: the kernel
    // denied the open, so that is said, with the disagreement.
    let nginx = proc(30, 1, 33, "/usr/sbin/nginx");
    let mut cx = with(std::slice::from_ref(&nginx));
    let mut d = DeniedThreads::default();
    d.denied(
        &mut cx,
        &policy(ALLOW_NGINX),
        &denial(&nginx, ENF_KEY_OPEN, 0),
    );
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].rule, a[0].action), ("key-file-open", Some("denied")));
    assert!(
        a[0].message.contains("user space's allowlist allows it"),
        "{}",
        a[0].message
    );
}

// ---- fd hand-offs (BPF LSM) ----

fn fd_read(actor: &crate::enrich::proctab::ProcInfo, watch_flags: u32, ino: u64) -> FdAccessRecord {
    FdAccessRecord {
        task: task(actor),
        dev: KDEV,
        ino,
        op: FDA_READ,
        how: FDV_RECEIVED,
        opener: 30,
        syscall: 47,
        flags: 0,
        watch_id: 0,
        watch_flags,
        igen: 1,
        owner: 0,
        path: Some("/etc/ssl/private/ca.key".into()),
        path_truncated: false,
    }
}

#[test]
fn a_key_read_through_a_received_fd_is_a_key_file_open_saying_how_the_fd_came() {
    let c = cat();
    let nginx = proc(30, 1, 33, "/usr/sbin/nginx");
    let mut cx = with(&[c.clone(), nginx.clone()]);
    let mut flows = Flows::default();
    let keys = policy(ALLOW_NGINX);
    fdaccess::fd_access(&mut cx, &keys, &mut flows, &fd_read(&c, 0, KEY_INO));
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].rule, "key-file-open");
    let o = a[0].open.as_ref().unwrap();
    assert_eq!((o.via, o.fd_op), ("fd-scm-rights", Some("read")));
    assert_eq!(o.opened_by.as_ref().map(|o| o.pid), Some(nginx.pid));
    assert!(a[0].message.contains("through an fd it did not open"));
    // The key is now known to the registry (an origin of lineages).
    assert_eq!(
        cx.registry.by_inode(KDEV, KEY_INO).map(|t| t.kind),
        Some(TrackedKind::Key)
    );
    // The key's own service reading it through a received fd: nothing.
    fdaccess::fd_access(&mut cx, &keys, &mut flows, &fd_read(&nginx, 0, KEY_INO));
    assert!(raised(&mut cx).is_empty());
}

#[test]
fn a_dump_read_through_a_received_fd_is_dump_file_access_and_its_writer_is_not_alerted() {
    let c = cat();
    let gdb = proc(15, 1, 0, "/usr/bin/gdb");
    let v = vault();
    let mut cx = with(&[c.clone(), gdb.clone(), v.clone()]);
    let (id, _) = cx.registry.register(
        KDEV,
        70,
        "/tmp/core.20".into(),
        TrackedKind::Dump,
        "userspace-dump",
        None,
        Some(Origin::of(&gdb)),
        Some(Origin::of(&v)),
    );
    cx.registry.get_mut(id).unwrap().igen = Some(1);
    let mut r = fd_read(&c, WATCH_TRACKED, 70);
    r.watch_id = id;
    let mut flows = Flows::default();
    fdaccess::fd_access(&mut cx, &Policy::default(), &mut flows, &r);
    let a = raised(&mut cx);
    assert_eq!(a.first().map(|a| a.rule), Some("dump-file-access"));
    assert_eq!(a[0].flow.as_ref().map(|f| f.via), Some("fd-scm-rights"));
    // Its writer handles its own dump; a reused inode number is another file.
    let mut own = fd_read(&gdb, WATCH_TRACKED, 70);
    own.watch_id = id;
    fdaccess::fd_access(&mut cx, &Policy::default(), &mut flows, &own);
    let mut reused = r.clone();
    reused.igen = 2;
    fdaccess::fd_access(&mut cx, &Policy::default(), &mut flows, &reused);
    assert!(raised(&mut cx).is_empty());
}

// ---- environment reads ----

fn environ_alert(cx: &mut Context, reader: &crate::enrich::proctab::ProcInfo) -> Alert {
    let v = vault();
    let m = crate::enrich::facts::MemAccess {
        rule: crate::rules::Rule::ProcEnvironRead,
        access: "read",
        op: "open /proc/20/environ".into(),
        ret: 3,
        actor: reader,
        target: &v,
        target_protected: true,
        recon: false,
        path: Some("/proc/20/environ".into()),
        thread: None,
        ts_boot_ns: 1_000,
    };
    Policy::default()
        .memory_access(&m, &cx.host, cx.wall(1_000))
        .unwrap()
}

#[test]
fn an_environment_read_is_judged_when_its_reader_exits() {
    let c = cat();
    let ps = proc(40, 1, 1000, "/usr/bin/ps");
    let mut procs: Vec<_> = (100..120)
        .map(|p| proc(p, 1, 0, "/usr/bin/sleep"))
        .collect();
    procs.push(c.clone());
    procs.push(ps.clone());
    let mut cx = with(&procs);
    let mut env = Environ::default();
    // A targeted read (`cat /proc/PID/environ`): medium, at the exit.
    let a = environ_alert(&mut cx, &c);
    env.pend(a, 1_000);
    assert!(env.pending() && raised(&mut cx).is_empty());
    env.reader_exited(&mut cx, c.pid, 1);
    let a = raised(&mut cx);
    assert_eq!(
        (a[0].rule, a[0].severity),
        ("proc-environ-read", Severity::Medium)
    );
    // A process lister (`ps aux` reads every environment): low.
    let a = environ_alert(&mut cx, &ps);
    env.pend(a, 1_000);
    env.reader_exited(&mut cx, ps.pid, 21);
    let a = raised(&mut cx);
    assert_eq!(a[0].severity, Severity::Low);
    assert!(a[0].message.contains("a process lister"));
    // Another process's exit decides nothing; the wait ends at 10 s of
    // event time, on the kernel's count (none in a replay: targeted).
    let a = environ_alert(&mut cx, &c);
    env.pend(a, 1_000);
    env.reader_exited(&mut cx, 999, 50);
    env.expire(&mut cx, 1_000 + 9_999_999_999, false);
    assert!(env.pending() && raised(&mut cx).is_empty());
    env.expire(&mut cx, 1_000 + 10_000_000_000, false);
    assert_eq!(raised(&mut cx)[0].severity, Severity::Medium);
    assert!(!env.pending());
}

// ---- renames of tracked files ----

fn rename(actor: &crate::enrich::proctab::ProcInfo, op: u32, new: &str) -> PathRecord {
    PathRecord {
        task: task(actor),
        op,
        old_dfd: -100,
        new_dfd: -100,
        old: "/tmp/core.20".into(),
        new: new.into(),
        base: None,
    }
}

#[test]
fn moving_a_tracked_dump_is_a_critical_tracked_copy_and_other_renames_are_not() {
    let c = cat();
    let v = vault();
    let mut cx = with(&[c.clone(), v.clone()]);
    let (id, _) = cx.registry.register(
        KDEV,
        80,
        "/tmp/core.20".into(),
        TrackedKind::Dump,
        "core-dump",
        None,
        None,
        Some(Origin::of(&v)),
    );
    cx.registry.get_mut(id).unwrap().igen = Some(1);
    // What the new name leads to, as the live path resolution recorded it.
    let r = rename(&c, PATH_OP_RENAME, "/srv/share/core.20");
    let fact = |ino: u64| serde_json::json!(["/srv/share/core.20", st_dev(KDEV), ino, false]);
    cx.view
        .insert_recorded(format!("path:{}:{:x}", c.pid, 1_000), fact(80));
    renames::path_change(&mut cx, &Policy::default(), &mut Default::default(), &r);
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].rule, a[0].severity),
        ("tracked-copy", Severity::Critical)
    );
    assert_eq!(a[0].flow.as_ref().map(|f| f.via), Some("rename"));
    assert_eq!(cx.registry.get(id).unwrap().path, "/srv/share/core.20");

    // A rename of a file that is neither tracked nor a key: nothing.
    let mut cx = with(std::slice::from_ref(&c));
    cx.view
        .insert_recorded(format!("path:{}:{:x}", c.pid, 1_000), fact(81));
    renames::path_change(&mut cx, &Policy::default(), &mut Default::default(), &r);
    // An unlink is the registry's business (the file may be gone), never an alert.
    renames::path_change(
        &mut cx,
        &Policy::default(),
        &mut Default::default(),
        &rename(&c, PATH_OP_UNLINK, ""),
    );
    assert!(raised(&mut cx).is_empty());
}
