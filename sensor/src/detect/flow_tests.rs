//! The flow rule families without a kernel or root, driven through the
//! enrich stage's `Context` with a replaying `SystemView` (no /proc, no
//! file reads, no kernel maps): `tracked-copy` (flows.rs), `userspace-dump`
//! (dumps.rs), `exfiltration` (sends.rs) and `key-material` / `key-created`
//! (keyscan.rs), each with the cases that must not alert.

use sensor_common::{TAINT_FILE, TAINT_MEMORY, Taint, VIA_SEND};

use super::tests::{cat, policy, proc, vault};
use super::{
    Policy,
    dumps::Dumps,
    flows::Flows,
    keyscan::{self, Scanned},
    sends,
};
use crate::{
    alert::{Alert, Severity, TrackedKind},
    enrich::{
        context::Context, proctab::ProcInfo, proctab::ProcessTable, scan::ScanOutcome,
        watch::Watcher,
    },
    ingest::decode::{
        Task,
        flow::{CloseRecord, SendRecord, WriteRecord},
    },
    metrics::Metrics,
};

pub(super) const KDEV: u32 = 0x800001;
pub(super) const KEY_INO: u64 = 12;

/// A context that reads nothing of this machine: the process table is
/// offline and the system view answers as a replay with no facts.
pub(super) fn cx() -> Context {
    let mut procs = ProcessTable::new();
    procs.offline = true;
    let mut cx = Context::new(procs, Watcher::new(Vec::new()), Metrics::new().unwrap());
    cx.view.replaying();
    cx
}

pub(super) fn task(p: &ProcInfo) -> Task {
    Task {
        ts_boot_ns: 1_000,
        pid: p.pid,
        tid: p.pid,
        uid: p.uid,
        gid: p.uid,
        cgroup_id: 0,
        comm: p.comm.clone(),
    }
}

/// The key file /etc/ssl/private/ca.key (300 bytes), as the registry
/// knows it once it was opened.
pub(super) fn key(cx: &mut Context) -> u32 {
    let (id, _) = cx.registry.register(
        KDEV,
        KEY_INO,
        "/etc/ssl/private/ca.key".into(),
        TrackedKind::Key,
        "key",
        None,
        None,
        None,
    );
    let t = cx.registry.get_mut(id).unwrap();
    t.igen = Some(1);
    t.size = 300;
    id
}

fn file_taint(generation: u32) -> Taint {
    Taint {
        flags: TAINT_FILE,
        src_dev: KDEV,
        src_ino: KEY_INO,
        src_igen: 1,
        generation,
        ..Default::default()
    }
}

fn write(p: &ProcInfo, taint: Taint, ino: u64, path: &str) -> WriteRecord {
    WriteRecord {
        task: task(p),
        taint,
        dev: KDEV,
        ino,
        mode: 0o100600,
        fd: 3,
        via: 0,
        bytes: 300,
        igen: 7,
        created: true,
        path: Some(path.into()),
        path_truncated: false,
    }
}

fn close(p: &ProcInfo, ino: u64, size: i64) -> CloseRecord {
    CloseRecord {
        task: task(p),
        dev: KDEV,
        ino,
        igen: 7,
        fd: 3,
        size,
        written: size as u64,
    }
}

/// One write and its close through the flow rules; the alerts raised.
fn copy(cx: &mut Context, policy: &Policy, w: &WriteRecord, size: i64) -> Vec<Alert> {
    let (mut flows, mut dumps) = (Flows::default(), Dumps::default());
    let p = cx.procs.get(w.task.pid).cloned().unwrap();
    flows.file_write(cx, policy, &mut dumps, w);
    flows.file_closed(cx, &mut dumps, &close(&p, w.ino, size));
    cx.take_raised().into_iter().map(|(a, _)| a).collect()
}

/// The alerts the rules raised since the last call, in order.
pub(super) fn raised(cx: &mut Context) -> Vec<Alert> {
    cx.take_raised().into_iter().map(|(a, _)| a).collect()
}

pub(super) fn with(procs: &[ProcInfo]) -> Context {
    let mut c = cx();
    for p in procs {
        c.procs.insert(p.clone());
    }
    c
}

// ---- tracked-copy ----

/// A copy whose writer exec'd (its close-on-exec descriptor went without a
/// close record) is decided and scanned then, like at a close; a later
/// close of a descriptor that survived the exec scans it again; another
/// process's exec decides nothing.
#[test]
fn a_copy_is_decided_and_scanned_at_its_writers_exec() {
    let c = cat();
    let mut cx = with(std::slice::from_ref(&c));
    let _ = key(&mut cx);
    let (mut flows, mut dumps) = (Flows::default(), Dumps::default());
    let policy = Policy::default();
    let w = write(&c, file_taint(0), 40, "/tmp/x");
    flows.file_write(&mut cx, &policy, &mut dumps, &w);
    flows.writer_exec(&mut cx, c.pid + 1);
    assert!(cx.take_raised().is_empty());
    assert!(flows.pending());
    flows.writer_exec(&mut cx, c.pid);
    let a: Vec<Alert> = cx.take_raised().into_iter().map(|(a, _)| a).collect();
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].rule, "tracked-copy");
    assert!(!flows.pending());
    // Queued for a scan, and left to scan again at a later close.
    let t = cx.registry.by_inode(KDEV, 40).unwrap();
    assert!(!t.scanned);
    flows.file_closed(&mut cx, &mut dumps, &close(&c, 40, 300));
    assert!(cx.registry.by_inode(KDEV, 40).unwrap().scanned);
    assert!(cx.take_raised().is_empty());
}

/// Past the bound, the oldest pending copy is decided at once (as at its
/// writer's exit), counted as an eviction of `pending_copies`, and scanned;
/// the others still wait for their writer's close, found by writer.
#[test]
fn past_the_bound_the_oldest_pending_copy_is_decided_early() {
    let writers: Vec<ProcInfo> = (0..4)
        .map(|i| {
            let mut c = cat();
            c.pid += i;
            c
        })
        .collect();
    let mut cx = with(&writers);
    let _ = key(&mut cx);
    let (mut flows, mut dumps) = (Flows::with_bound(3), Dumps::default());
    let policy = Policy::default();
    for (i, w) in writers.iter().take(3).enumerate() {
        let rec = write(w, file_taint(0), 40 + i as u64, &format!("/tmp/c{i}"));
        flows.file_write(&mut cx, &policy, &mut dumps, &rec);
    }
    assert_eq!(flows.pending_len(), 3);
    assert!(cx.take_raised().is_empty());
    assert_eq!(cx_evictions(&cx), 0);
    // A fourth: the first writer's copy is decided now, without its close.
    let rec = write(&writers[3], file_taint(0), 43, "/tmp/c3");
    flows.file_write(&mut cx, &policy, &mut dumps, &rec);
    assert_eq!(flows.pending_len(), 3);
    let a: Vec<Alert> = cx.take_raised().into_iter().map(|(a, _)| a).collect();
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].rule, "tracked-copy");
    assert!(a[0].message.contains("/tmp/c0"), "{}", a[0].message);
    assert_eq!(cx_evictions(&cx), 1);
    // Its writer's close finds nothing pending any more.
    flows.file_closed(&mut cx, &mut dumps, &close(&writers[0], 40, 300));
    assert!(cx.take_raised().is_empty());
    // The others are decided by their own writer.
    for (i, w) in writers.iter().enumerate().skip(1) {
        flows.file_closed(&mut cx, &mut dumps, &close(w, 40 + i as u64, 300));
        assert_eq!(cx.take_raised().len(), 1, "copy {i}");
    }
    assert!(!flows.pending());
    assert_eq!(cx_evictions(&cx), 1);
}

fn cx_evictions(cx: &Context) -> u64 {
    cx.metrics
        .map_evictions
        .with_label_values(&["pending_copies"])
        .get()
}

#[test]
fn a_whole_key_written_by_its_reader_is_a_tracked_copy() {
    let c = cat();
    let mut cx = with(std::slice::from_ref(&c));
    let key_id = key(&mut cx);
    let a = copy(
        &mut cx,
        &Policy::default(),
        &write(&c, file_taint(0), 40, "/tmp/x"),
        300,
    );
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!(
        (a.rule, a.severity, a.score),
        ("tracked-copy", Severity::High, 75)
    );
    let f = a.flow.as_ref().unwrap();
    assert_eq!((f.bytes, f.hops), (Some(300), Some(0)));
    assert_eq!(f.lineage.first().map(|s| s.id), Some(key_id));
    assert!(a.message.contains("/tmp/x from /etc/ssl/private/ca.key"));
    // The copy is tracked (its readers are followed), with the key as its
    // origin.
    let t = cx.registry.by_inode(KDEV, 40).unwrap();
    assert_eq!((t.kind, t.parent), (TrackedKind::Copy, Some(key_id)));
}

#[test]
fn no_copy_alert_for_the_keys_own_service_a_fragment_far_away_or_an_untainted_writer() {
    // The key's own service (allowlisted): not a copy, counted.
    let nginx = proc(30, 1, 33, "/usr/sbin/nginx");
    let allow =
        policy("[[key_path]]\npath = \"/etc/ssl/private\"\n[[allow]]\nexe = \"/usr/sbin/nginx\"\n");
    let mut cx = with(std::slice::from_ref(&nginx));
    let key_id = key(&mut cx);
    cx.registry.get_mut(key_id).unwrap().watch = Some(0);
    let a = copy(
        &mut cx,
        &allow,
        &write(&nginx, file_taint(0), 41, "/var/log/x"),
        300,
    );
    assert!(a.is_empty(), "{a:?}");
    assert!(cx.registry.by_inode(KDEV, 41).is_none());
    assert_eq!(
        cx.metrics
            .flow_stopped
            .with_label_values(&["allowlist"])
            .get(),
        1
    );

    // A few bytes written two processes away from the reader: no evidence
    // of a copy, only counted.
    let c = cat();
    let mut cx = with(std::slice::from_ref(&c));
    key(&mut cx);
    let mut fragment = write(&c, file_taint(2), 42, "/tmp/log");
    fragment.bytes = 10;
    let a = copy(&mut cx, &Policy::default(), &fragment, 10);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(cx.metrics.copies.with_label_values(&["none"]).get(), 1);

    // A writer that rewrites its own source, and one whose taint names no
    // tracked file: nothing.
    let mut cx = with(std::slice::from_ref(&c));
    key(&mut cx);
    let own = write(&c, file_taint(0), KEY_INO, "/etc/ssl/private/ca.key");
    assert!(copy(&mut cx, &Policy::default(), &own, 300).is_empty());
    let mut other = file_taint(0);
    other.src_ino = 999;
    assert!(
        copy(
            &mut cx,
            &Policy::default(),
            &write(&c, other, 43, "/tmp/y"),
            300
        )
        .is_empty()
    );
    assert!(cx.registry.by_inode(KDEV, 43).is_none());
    let untainted = write(&c, Taint::default(), 44, "/tmp/z");
    assert!(copy(&mut cx, &Policy::default(), &untainted, 300).is_empty());
}

// ---- userspace-dump ----

fn memory_taint() -> Taint {
    Taint {
        flags: TAINT_MEMORY,
        src_pid: 20,
        ..Default::default()
    }
}

#[test]
fn a_memory_reader_writing_a_file_is_a_userspace_dump_at_its_close() {
    let gdb = proc(10, 1, 0, "/usr/bin/gdb");
    let v = vault();
    let mut cx = with(&[gdb.clone(), v.clone()]);
    cx.note_memory_reader(gdb.pid, &v);
    let a = copy(
        &mut cx,
        &Policy::default(),
        &write(&gdb, memory_taint(), 50, "/tmp/core.20"),
        1 << 20,
    );
    assert_eq!(a.len(), 1, "{a:?}");
    let a = &a[0];
    assert_eq!((a.rule, a.severity), ("userspace-dump", Severity::Critical));
    let f = a.flow.as_ref().unwrap();
    assert_eq!(f.dumped.as_ref().map(|d| d.pid), Some(v.pid));
    let t = cx.registry.by_inode(KDEV, 50).unwrap();
    assert_eq!((t.kind, t.how), (TrackedKind::Dump, "userspace-dump"));

    // A child of the reader inherits its taint: still the reader's dump.
    let child = proc(11, gdb.pid, 0, "/usr/bin/gzip");
    cx.procs.insert(child.clone());
    let a = copy(
        &mut cx,
        &Policy::default(),
        &write(&child, memory_taint(), 51, "/tmp/core.20.gz"),
        4096,
    );
    assert_eq!(a.first().map(|a| a.rule), Some("userspace-dump"));
}

#[test]
fn no_userspace_dump_from_a_process_that_read_no_protected_memory() {
    // Memory taint but no memory read remembered (the reader was another
    // process tree, or the record raced its exit): nothing is made up.
    let sh = proc(12, 1, 0, "/usr/bin/sh");
    let mut cx = with(std::slice::from_ref(&sh));
    let a = copy(
        &mut cx,
        &Policy::default(),
        &write(&sh, memory_taint(), 52, "/tmp/a"),
        4096,
    );
    assert!(a.is_empty(), "{a:?}");
    assert!(cx.registry.by_inode(KDEV, 52).is_none());
}

// ---- exfiltration ----

fn send(p: &ProcInfo, taint: Taint, family: u16) -> SendRecord {
    SendRecord {
        task: task(p),
        taint,
        bytes: 300,
        fd: 4,
        via: VIA_SEND,
        family,
        sock_type: 1,
        protocol: 6,
        local: Some("10.0.0.1:40000".parse().unwrap()),
        remote: Some("203.0.113.9:443".parse().unwrap()),
    }
}

fn sent(cx: &mut Context, policy: &Policy, s: &SendRecord) -> Vec<Alert> {
    sends::net_send(cx, policy, s);
    cx.take_raised().into_iter().map(|(a, _)| a).collect()
}

#[test]
fn a_key_readers_send_is_exfiltration() {
    let curl = proc(13, 1, 1000, "/usr/bin/curl");
    let mut cx = with(std::slice::from_ref(&curl));
    key(&mut cx);
    let a = sent(&mut cx, &Policy::default(), &send(&curl, file_taint(0), 2));
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!(a.rule, "exfiltration");
    let f = a.flow.as_ref().unwrap();
    assert_eq!(
        (f.protocol, f.remote.as_deref()),
        (Some("tcp"), Some("203.0.113.9:443"))
    );
    assert!(a.message.contains("after reading /etc/ssl/private/ca.key"));

    // After reading a protected process's memory: the target is the process.
    let gdb = proc(10, 1, 0, "/usr/bin/gdb");
    let v = vault();
    cx.procs.insert(gdb.clone());
    cx.procs.insert(v.clone());
    cx.note_memory_reader(gdb.pid, &v);
    let a = sent(&mut cx, &Policy::default(), &send(&gdb, memory_taint(), 10));
    assert_eq!(a.first().map(|a| a.rule), Some("exfiltration"));
}

#[test]
fn no_exfiltration_for_unix_sockets_the_keys_service_or_a_taint_with_no_source() {
    let nginx = proc(30, 1, 33, "/usr/sbin/nginx");
    let curl = proc(13, 1, 1000, "/usr/bin/curl");
    let mut cx = with(&[nginx.clone(), curl.clone()]);
    let key_id = key(&mut cx);
    cx.registry.get_mut(key_id).unwrap().watch = Some(0);
    // A unix socket (journald, a local agent) is not the network.
    assert!(sent(&mut cx, &Policy::default(), &send(&curl, file_taint(0), 1)).is_empty());
    // The key's own service serving TLS.
    let allow =
        policy("[[key_path]]\npath = \"/etc/ssl/private\"\n[[allow]]\nexe = \"/usr/sbin/nginx\"\n");
    assert!(sent(&mut cx, &allow, &send(&nginx, file_taint(0), 2)).is_empty());
    // Taint of a file no longer tracked, or memory taint with no reader.
    let mut gone = file_taint(0);
    gone.src_ino = 999;
    assert!(sent(&mut cx, &Policy::default(), &send(&curl, gone, 2)).is_empty());
    assert!(sent(&mut cx, &Policy::default(), &send(&curl, memory_taint(), 2)).is_empty());
}

// ---- key-material ----

fn outcome(found: usize, origin_match: Option<bool>) -> Result<ScanOutcome, String> {
    Ok(ScanOutcome {
        found,
        format: Some("pem".into()),
        findings: serde_json::json!([]),
        origin_match,
    })
}

fn scanned(cx: &mut Context, id: u32, report: Result<ScanOutcome, String>) -> Vec<Alert> {
    let s = Scanned {
        at_ns: 2_000,
        id,
        path: String::new(),
        book: false,
        report,
    };
    keyscan::scanned(cx, &s);
    cx.take_raised().into_iter().map(|(a, _)| a).collect()
}

#[test]
fn keys_found_in_a_copy_or_a_dump_are_key_material_and_new_keys_are_inventory() {
    let c = cat();
    let v = vault();
    let mut cx = with(&[c.clone(), v.clone()]);
    let key_id = key(&mut cx);
    let (copy_id, _) = cx.registry.register(
        KDEV,
        60,
        "/tmp/x".into(),
        TrackedKind::Copy,
        "write",
        Some(key_id),
        Some(crate::alert::Origin::of(&c)),
        None,
    );
    let a = scanned(&mut cx, copy_id, outcome(1, Some(true)));
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].rule, a[0].process.pid), ("key-material", c.pid));
    assert!(a[0].message.contains("(a copy of /etc/ssl/private/ca.key)"));
    // Keys that are not the origin key's: the writer made a new key.
    let a = scanned(&mut cx, copy_id, outcome(2, Some(false)));
    assert_eq!(a.first().map(|a| a.rule), Some("key-created"));
    // A dump's keys are always material, attributed to the dumped process.
    let (dump_id, _) = cx.registry.register(
        KDEV,
        61,
        "/var/crash/core.20".into(),
        TrackedKind::Dump,
        "core-dump",
        None,
        None,
        Some(crate::alert::Origin::of(&v)),
    );
    let a = scanned(&mut cx, dump_id, outcome(1, Some(false)));
    assert_eq!(a.first().map(|a| a.rule), Some("key-material"));
    assert!(a[0].message.contains("from the memory of vault"));
}

#[test]
fn no_key_material_alert_for_a_clean_file_a_failed_scan_or_an_unknown_id() {
    let c = cat();
    let mut cx = with(std::slice::from_ref(&c));
    let key_id = key(&mut cx);
    assert!(scanned(&mut cx, key_id, outcome(0, None)).is_empty());
    assert!(scanned(&mut cx, key_id, Err("unreadable".into())).is_empty());
    assert!(scanned(&mut cx, 0xdead, outcome(3, None)).is_empty());
}
