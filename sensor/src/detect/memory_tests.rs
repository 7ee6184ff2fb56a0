//! The memory rules through the `Context`, without a kernel: a thread id
//! given as the target (resolved by the kernel, or here) is the process it
//! belongs to, and a process's own threads are no alert.

use sensor_common::{MEM_VM_READV, PROC_MAPS, PROC_MEM};

use super::flow_tests::{cx, raised, task};
use super::tests::{open_rec, proc, vault};
use super::{Policy, environ::Environ, memory::Memory};
use crate::{
    alert::Severity,
    enrich::context::Context,
    ingest::decode::{memory::MemRecord, open::OpenRecord},
};

/// vault (pid 20, protected) with its thread 21; an unprotected worker
/// (pid 30) with its thread 31; the reader (pid 10) with its thread 11.
fn setup() -> Context {
    let mut cx = cx();
    cx.procs.insert(vault());
    cx.procs.insert(proc(30, 1, 1000, "/usr/bin/worker"));
    cx.procs.insert(proc(10, 1, 1000, "/usr/bin/reader"));
    cx.procs.insert_tgid(21, 20);
    cx.procs.insert_tgid(31, 30);
    cx.procs.insert_tgid(11, 10);
    cx.protector.restore(&[(20, 1)], &[]);
    cx
}

fn vm_read(target: u32, protected: bool, tid: u32) -> MemRecord {
    MemRecord {
        task: task(&proc(10, 1, 1000, "/usr/bin/reader")),
        op: MEM_VM_READV,
        ret: 32,
        request: 0,
        arg: 0,
        target,
        target_protected: protected,
        tid,
    }
}

fn proc_open(path: &str, proc_file: u32, proc_target: u32) -> OpenRecord {
    let mut r = open_rec(0, 3, 0);
    r.task = task(&proc(10, 1, 1000, "/usr/bin/reader"));
    r.path = Some(path.into());
    r.proc_file = proc_file;
    r.proc_target = proc_target;
    r
}

#[test]
fn a_thread_id_is_its_process_with_the_leaders_severity() {
    let mut cx = setup();
    let (mut m, mut env, p) = (Memory::default(), Environ::default(), Policy::default());
    // Resolved by the kernel (a thread of a protected process).
    m.mem_access(&mut cx, &p, &mut env, &vm_read(20, true, 21));
    // Resolved here (the kernel's map missed it): the same alert.
    m.mem_access(&mut cx, &p, &mut env, &vm_read(21, false, 0));
    let a = raised(&mut cx);
    assert_eq!(a.len(), 2, "{a:#?}");
    for a in &a {
        assert_eq!(a.rule, "process-vm-read");
        assert_eq!(a.severity, Severity::High, "{a:#?}");
        let v = serde_json::to_value(a).unwrap();
        assert_eq!(v["target"]["pid"], 20);
        assert_eq!(v["memory"]["thread"], 21);
        assert_eq!(v["memory"]["target_protected"], true);
    }
    // The reader is a memory reader of the process, as of its leader.
    assert_eq!(cx.memory_source(10).map(|o| o.pid), Some(20));
}

#[test]
fn proc_files_of_a_thread_name_its_process() {
    let mut cx = setup();
    let (mut m, mut env, p) = (Memory::default(), Environ::default(), Policy::default());
    // /proc/<tid>/mem, resolved by the kernel.
    m.proc_file_open(
        &mut cx,
        &p,
        &mut env,
        &proc_open("/proc/21/mem", PROC_MEM, 20),
    );
    // /proc/<pid>/task/<tid>/mem: the pid is in the path.
    m.proc_file_open(
        &mut cx,
        &p,
        &mut env,
        &proc_open("/proc/20/task/21/mem", PROC_MEM, 0),
    );
    let a = raised(&mut cx);
    assert_eq!(a.len(), 2, "{a:#?}");
    for a in &a {
        assert_eq!(a.rule, "proc-mem-open");
        assert_eq!(a.severity, Severity::High, "{a:#?}");
        let v = serde_json::to_value(a).unwrap();
        assert_eq!(v["target"]["pid"], 20);
        assert_eq!(v["memory"]["thread"], 21);
    }
    // task/<tid>/maps is reconnaissance of the process.
    m.proc_file_open(
        &mut cx,
        &p,
        &mut env,
        &proc_open("/proc/20/task/21/maps", PROC_MAPS, 20),
    );
    m.mem_access(&mut cx, &p, &mut env, &vm_read(20, true, 0));
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1, "{a:#?}");
    let v = serde_json::to_value(&a[0]).unwrap();
    assert_eq!(v["memory"]["recon"], true);
    assert!(
        v["memory"].get("thread").is_none(),
        "the leader's pid: {v:#}"
    );
}

#[test]
fn own_threads_are_no_alert_and_other_threads_stay_low() {
    let mut cx = setup();
    let (mut m, mut env, p) = (Memory::default(), Environ::default(), Policy::default());
    m.mem_access(&mut cx, &p, &mut env, &vm_read(11, false, 0));
    m.proc_file_open(
        &mut cx,
        &p,
        &mut env,
        &proc_open("/proc/10/task/11/mem", PROC_MEM, 0),
    );
    m.proc_file_open(
        &mut cx,
        &p,
        &mut env,
        &proc_open("/proc/11/mem", PROC_MEM, 0),
    );
    assert!(raised(&mut cx).is_empty());
    m.mem_access(&mut cx, &p, &mut env, &vm_read(31, false, 0));
    let a = raised(&mut cx);
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].severity, Severity::Low);
    let v = serde_json::to_value(&a[0]).unwrap();
    assert_eq!(v["target"]["pid"], 30);
    assert_eq!(v["memory"]["thread"], 31);
    assert_eq!(cx.memory_source(10), None);
}
