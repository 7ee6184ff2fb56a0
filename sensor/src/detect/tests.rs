//! The policy's rules without a kernel or root: enriched facts in, an alert
//! (or none) out. Here memory access and key-file opens, with the helpers;
//! dumps and dump-file access in `dump_tests.rs`.

use std::sync::Arc;

use sensor_common::{FMODE_CREATED, MATCH_INODE, MATCH_NAME, SRC_OPENAT};

use super::*;
use crate::ingest::decode::{Task, open::OpenRecord};

pub(super) const HOST: &str = "h";
const KEYS: &str = "[[key_path]]\npath = \"/etc/ssl/private\"\n";

pub(super) fn ts() -> String {
    "2024-01-01T00:00:00Z".into()
}

pub(super) fn policy(toml: &str) -> Policy {
    Policy::from_config(&Config::parse(toml, "test").unwrap())
}

pub(super) fn proc(pid: u32, ppid: u32, uid: u32, exe: &str) -> ProcInfo {
    let comm = exe.rsplit('/').next().unwrap().to_string();
    ProcInfo {
        pid,
        ppid,
        uid,
        comm: comm.clone(),
        exe: exe.into(),
        argv: Arc::from(vec![comm]),
        start_ns: 0x10,
        cgroup_id: 0,
        execed: true,
        exe_genuine: true,
        exe_in_root: false,
        allow_bypass: None,
    }
}

fn gdb() -> ProcInfo {
    proc(10, 1, 1000, "/usr/bin/gdb")
}

pub(super) fn vault() -> ProcInfo {
    proc(20, 1, 998, "/usr/bin/vault")
}

// ---- memory access ----

fn mem<'a>(
    rule: Rule,
    access: &'static str,
    ret: i64,
    actor: &'a ProcInfo,
    target: &'a ProcInfo,
    protected: bool,
) -> MemAccess<'a> {
    MemAccess {
        rule,
        access,
        op: "PTRACE_ATTACH".into(),
        ret,
        actor,
        target,
        target_protected: protected,
        recon: false,
        path: None,
        thread: None,
        ts_boot_ns: 0,
    }
}

#[test]
fn memory_access_to_a_protected_process() {
    let p = Policy::default();
    let (g, v) = (gdb(), vault());
    let a = p
        .memory_access(
            &mem(Rule::PtraceAttach, "attach", 0, &g, &v, true),
            HOST,
            ts(),
        )
        .unwrap();
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score, a.count),
        ("ptrace-attach", "T1003.007", Severity::High, 80, 1)
    );
    assert_eq!(
        a.message,
        "gdb (pid 10, uid 1000) did a ptrace attach to protected process vault (pid 20) via PTRACE_ATTACH"
    );
    assert_eq!(
        a.target,
        Target::Process {
            pid: 20,
            comm: "vault".into(),
            exe: "/usr/bin/vault".into(),
            protected: None,
            container: None,
            cgroup_id: 0,
        }
    );
    assert_eq!((a.process.pid, a.incident.as_str()), (10, "inc-10-10"));
    let m = a.memory.unwrap();
    assert_eq!(
        (m.result, m.errno, m.target_protected),
        ("success", None, true)
    );
    assert!(a.open.is_none() && a.dump.is_none() && a.flow.is_none() && a.action.is_none());

    // A ptrace write injects.
    let w = p
        .memory_access(
            &mem(Rule::PtraceAttach, "write", 0, &g, &v, true),
            HOST,
            ts(),
        )
        .unwrap();
    assert_eq!(w.attack, "T1055.008");
    assert!(w.message.contains("did a memory write to"), "{}", w.message);

    // A failed attempt: medium, with the errno.
    let f = p
        .memory_access(
            &mem(Rule::ProcessVmRead, "read", -1, &g, &v, true),
            HOST,
            ts(),
        )
        .unwrap();
    assert_eq!(
        (f.rule, f.attack, f.severity, f.score),
        ("process-vm-read", "T1003.007", Severity::Medium, 55)
    );
    assert!(f.message.ends_with("and failed (EPERM)"), "{}", f.message);
    let fm = f.memory.unwrap();
    assert_eq!((fm.result, fm.errno.as_deref()), ("failed", Some("EPERM")));

    // Reconnaissance first: 10 more.
    let mut r = mem(Rule::ProcessVmWrite, "write", 0, &g, &v, true);
    r.recon = true;
    let r = p.memory_access(&r, HOST, ts()).unwrap();
    assert_eq!((r.attack, r.score), ("T1055", 90));
    assert!(r.memory.unwrap().recon);
}

#[test]
fn memory_access_to_an_unprotected_process_is_low() {
    let p = Policy::default();
    let (g, v) = (gdb(), vault());
    for rule in [
        Rule::PtraceAttach,
        Rule::ProcessVmRead,
        Rule::ProcessVmWrite,
        Rule::ProcMemOpen,
        Rule::PidfdGetfd,
    ] {
        let ok = p
            .memory_access(&mem(rule, "read", 0, &g, &v, false), HOST, ts())
            .unwrap();
        assert_eq!((ok.severity, ok.score), (Severity::Low, 30), "{rule:?}");
        assert!(ok.message.contains(" process vault"), "{}", ok.message);
        assert!(!ok.message.contains("protected"), "{}", ok.message);
        let failed = p
            .memory_access(&mem(rule, "read", -13, &g, &v, false), HOST, ts())
            .unwrap();
        assert_eq!(
            (failed.severity, failed.score),
            (Severity::Low, 20),
            "{rule:?}"
        );
        assert!(failed.message.ends_with("(EACCES)"), "{}", failed.message);
    }
}

#[test]
fn no_memory_alert_for_self_access_an_allowed_pair_or_a_tracer_starting_its_child() {
    let p = policy("[[allow]]\nexe = \"/usr/bin/backup\"\ntarget = \"/usr/bin/vault\"\n");
    let (g, v) = (gdb(), vault());
    let access = |a: &ProcInfo, t: &ProcInfo, rule| {
        p.memory_access(&mem(rule, "attach", 0, a, t, true), HOST, ts())
    };
    assert!(access(&v, &v, Rule::ProcMemOpen).is_none(), "self access");

    let backup = proc(30, 1, 0, "/usr/bin/backup");
    assert!(
        access(&backup, &v, Rule::ProcessVmRead).is_none(),
        "allowed pair"
    );
    assert!(
        access(&backup, &g, Rule::ProcessVmRead).is_some(),
        "another target"
    );
    assert!(
        access(&g, &v, Rule::ProcessVmRead).is_some(),
        "another actor"
    );

    // strace/gdb launching a program: attach to its child before the
    // child's first exec.
    let mut child = proc(11, 10, 1000, "/usr/bin/gdb");
    child.execed = false;
    assert!(
        access(&g, &child, Rule::PtraceAttach).is_none(),
        "own child"
    );
    assert!(
        access(&g, &child, Rule::ProcessVmRead).is_some(),
        "not ptrace"
    );
    child.execed = true;
    assert!(
        access(&g, &child, Rule::PtraceAttach).is_some(),
        "child execed"
    );
    let mut other = proc(12, 99, 1000, "/usr/bin/x");
    other.execed = false;
    assert!(
        access(&g, &other, Rule::PtraceAttach).is_some(),
        "not its child"
    );
}

#[test]
fn environment_reads_and_access_checks() {
    let p = Policy::default();
    let (g, v) = (gdb(), vault());
    let check = |rule, access, ret, protected| {
        p.memory_access(&mem(rule, access, ret, &g, &v, protected), HOST, ts())
            .unwrap()
    };
    let e = check(Rule::ProcEnvironRead, "read", 0, true);
    assert_eq!(
        (e.rule, e.attack, e.severity, e.score),
        ("proc-environ-read", "T1552", Severity::Medium, 50)
    );
    assert!(
        e.message
            .contains("did a read of the environment of protected process vault")
    );
    for (ret, protected) in [(-1, true), (0, false), (-1, false)] {
        let low = check(Rule::ProcEnvironRead, "read", ret, protected);
        assert_eq!((low.severity, low.score), (Severity::Low, 25));
    }

    let c = check(Rule::ProcessAccess, "read", 0, true);
    assert_eq!(
        (c.rule, c.attack, c.severity, c.score),
        ("process-access", "T1057", Severity::Medium, 60)
    );
    assert!(
        c.message
            .contains("did an access (kernel ptrace check) to protected process")
    );
    // A passed check is medium whatever the syscall then returned.
    let failed = check(Rule::ProcessAccess, "read", -1, true);
    assert_eq!((failed.severity, failed.score), (Severity::Medium, 60));
    assert_eq!(
        check(Rule::ProcessAccess, "attach", 0, true).attack,
        "T1003.007"
    );
    let low = check(Rule::ProcessAccess, "read", 0, false);
    assert_eq!((low.severity, low.score), (Severity::Low, 25));
}

// ---- key-file opens ----

const O_WRONLY: u32 = 1;
const O_CREAT: u32 = 0o100;
pub(super) const O_PATH: u32 = 0o10000000;

pub(super) fn open_rec(flags: u32, ret: i64, matched: u32) -> OpenRecord {
    OpenRecord {
        task: Task {
            ts_boot_ns: 0,
            pid: 10,
            tid: 10,
            uid: 1000,
            gid: 1000,
            cgroup_id: 0,
            comm: "cat".into(),
        },
        failed: ret < 0,
        ret,
        dev: 0x800001,
        ino: 12,
        mode: 0o100600,
        flags,
        dfd: -100,
        source: SRC_OPENAT,
        matched,
        watch_id: 0,
        name_rules: 0,
        arg: Some("ca.key".into()),
        path: Some("/etc/ssl/private/ca.key".into()),
        path_truncated: false,
        escape: false,
        proc_file: 0,
        proc_target: 0,
        raw: 0,
        rdev: 0,
        igen: 1,
        fmode: 0,
        owner: 0,
        size: 100,
    }
}

fn key_open<'a>(rec: &'a OpenRecord, actor: &'a ProcInfo, watch_id: Option<u32>) -> KeyAccess<'a> {
    let file = ("/etc/ssl/private/ca.key".to_string(), 2049, 12, watch_id);
    KeyAccess::of_open(rec, actor, file, false)
}

pub(super) fn cat() -> ProcInfo {
    proc(10, 9, 1000, "/usr/bin/cat")
}

#[test]
fn key_file_open_success_and_failure() {
    let p = policy(KEYS);
    let c = cat();
    let rec = open_rec(0, 3, MATCH_INODE);
    let a = p
        .key_file_open(&key_open(&rec, &c, Some(0)), HOST, ts())
        .unwrap();
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("key-file-open", "T1552.004", Severity::High, 70)
    );
    assert_eq!(
        a.message,
        "cat (pid 10, uid 1000) opened key file /etc/ssl/private/ca.key for read"
    );
    assert_eq!(
        a.target,
        Target::File {
            path: "/etc/ssl/private/ca.key".into(),
            dev: 2049,
            inode: 12
        }
    );
    let o = a.open.unwrap();
    assert_eq!(
        (o.result, o.errno, o.access, o.via),
        ("success", None, "read", "openat")
    );
    assert_eq!(o.matched, vec!["key_path"]);
    assert_eq!(o.key_path.as_deref(), Some("/etc/ssl/private"));
    assert!(!o.own_key && !o.fresh_key);

    let rec = open_rec(O_WRONLY, -13, MATCH_INODE);
    let f = p
        .key_file_open(&key_open(&rec, &c, Some(0)), HOST, ts())
        .unwrap();
    assert_eq!(
        (f.rule, f.severity, f.score),
        ("key-file-open", Severity::Medium, 40)
    );
    assert_eq!(
        f.message,
        "cat (pid 10, uid 1000) tried to open key file /etc/ssl/private/ca.key for write and failed (EACCES)"
    );
    let fo = f.open.unwrap();
    assert_eq!((fo.result, fo.errno), ("failed", Some("EACCES")));
}

#[test]
fn no_key_alert_for_an_allowed_program_or_an_o_path_open() {
    let p = policy(&format!(
        "{KEYS}[[key_path]]\npath = \"/etc/other\"\n\
         [[allow]]\nexe = \"/usr/sbin/nginx\"\nkey_path = \"/etc/ssl/private\"\n\
         [[allow]]\nexe = \"/usr/bin/ssh-agent\"\n"
    ));
    let rec = open_rec(0, 3, MATCH_INODE);
    let nginx = proc(40, 1, 33, "/usr/sbin/nginx");
    assert!(
        p.key_file_open(&key_open(&rec, &nginx, Some(0)), HOST, ts())
            .is_none()
    );
    // Its allowance is for one key path only.
    assert!(
        p.key_file_open(&key_open(&rec, &nginx, Some(1)), HOST, ts())
            .is_some()
    );
    assert!(
        p.key_file_open(&key_open(&rec, &nginx, None), HOST, ts())
            .is_some()
    );
    let agent = proc(41, 1, 1000, "/usr/bin/ssh-agent");
    assert!(
        p.key_file_open(&key_open(&rec, &agent, Some(1)), HOST, ts())
            .is_none()
    );
    // O_PATH grants no access to the content.
    let path_only = open_rec(O_PATH, 3, MATCH_INODE);
    assert!(
        p.key_file_open(&key_open(&path_only, &cat(), Some(0)), HOST, ts())
            .is_none()
    );
}

#[test]
fn a_created_key_is_inventory() {
    let p = policy(KEYS);
    let c = cat();
    let mut rec = open_rec(O_WRONLY | O_CREAT, 3, MATCH_INODE);
    rec.fmode = FMODE_CREATED;
    let mut k = key_open(&rec, &c, Some(0));
    k.fresh = true;
    let a = p.key_file_open(&k, HOST, ts()).unwrap();
    assert_eq!(
        (a.rule, a.attack, a.severity, a.score),
        ("key-created", "T1552.004", Severity::Info, 5)
    );
    assert_eq!(
        a.message,
        "cat (pid 10, uid 1000) created key file /etc/ssl/private/ca.key"
    );
    let o = a.open.unwrap();
    assert!(!o.own_key && !o.fresh_key);
    // Created by an open for reading only: an open like any other.
    let mut read = open_rec(O_CREAT, 3, MATCH_INODE);
    read.fmode = FMODE_CREATED;
    let r = p
        .key_file_open(&key_open(&read, &c, Some(0)), HOST, ts())
        .unwrap();
    assert_eq!((r.rule, r.score), ("key-file-open", 70));
}

#[test]
fn own_and_fresh_keys_are_marked_for_scoring() {
    let p = policy("[[key_name]]\nsuffix = \".key\"\n");
    let c = cat();
    // A user's own file that only a name pattern matched.
    let mut rec = open_rec(0, 3, MATCH_NAME);
    rec.name_rules = 1;
    rec.owner = 1000;
    let a = p
        .key_file_open(&key_open(&rec, &c, None), HOST, ts())
        .unwrap();
    let o = a.open.unwrap();
    assert!(o.own_key);
    assert_eq!(o.matched, vec!["key_name"]);
    assert_eq!(o.key_name, p.key_names);
    assert_eq!(o.key_path, None);
    // Someone else's file, or root reading: not its own key.
    rec.owner = 0;
    let other = p
        .key_file_open(&key_open(&rec, &c, None), HOST, ts())
        .unwrap();
    assert!(!other.open.unwrap().own_key);
    rec.owner = 1000;
    let root = proc(10, 9, 0, "/usr/bin/cat");
    let mut root_rec = rec.clone();
    root_rec.owner = 0;
    let r = p
        .key_file_open(&key_open(&root_rec, &root, None), HOST, ts())
        .unwrap();
    assert!(!r.open.unwrap().own_key);

    let mut k = key_open(&rec, &c, None);
    k.fresh = true;
    assert!(
        p.key_file_open(&k, HOST, ts())
            .unwrap()
            .open
            .unwrap()
            .fresh_key
    );
    let failed = open_rec(0, -13, MATCH_NAME);
    let mut k = key_open(&failed, &c, None);
    k.fresh = true;
    let f = p.key_file_open(&k, HOST, ts()).unwrap().open.unwrap();
    assert!(!f.fresh_key && !f.own_key);
}

#[test]
fn an_allowance_holds_only_for_the_genuine_untouched_program() {
    let p = policy("[[allow]]\nexe = \"/usr/bin/cat\"\n");
    let cat = cat();
    assert!(p.allowed(&cat, None));
    assert_eq!(p.allowance_withdrawn(&cat), None);
    // Another file at that path (a bind mount in another namespace).
    let look_alike = ProcInfo {
        exe_genuine: false,
        exe_in_root: false,
        ..cat.clone()
    };
    assert!(!p.allowed(&look_alike, None));
    assert!(
        p.allowance_withdrawn(&look_alike)
            .unwrap()
            .contains("not the file /usr/bin/cat names")
    );
    // Loader variables or a tracer at exec.
    let preloaded = ProcInfo {
        allow_bypass: crate::enrich::proctab::exec_bypass(
            sensor_common::EXEC_ALLOWLISTED | sensor_common::EXEC_LD_ENV,
        ),
        ..cat.clone()
    };
    assert!(!p.allowed(&preloaded, None));
    assert!(
        p.allowance_withdrawn(&preloaded)
            .unwrap()
            .contains("LD_PRELOAD")
    );
    assert_eq!(
        crate::enrich::proctab::exec_bypass(sensor_common::EXEC_ALLOWLISTED),
        None
    );
    // A program no [[allow]] names has nothing withdrawn.
    let gdb = ProcInfo {
        allow_bypass: crate::enrich::proctab::exec_bypass(sensor_common::EXEC_PTRACED),
        ..gdb()
    };
    assert_eq!(p.allowance_withdrawn(&gdb), None);
}

// ---- allowances by unit and container ----

#[test]
fn a_container_allowance_holds_for_its_containers_own_file_only() {
    use crate::{alert::ContainerCtx, enrich::protect::Where};
    let mut p = policy(
        "[[allow]]\nexe = \"/usr/sbin/nginx\"\ncontainer_image = \"nginx\"\n\n[[allow]]\nexe = \"/usr/bin/signer\"\nunit = \"signer.service\"\n",
    );
    let at = |rootless, unit: &str, name: Option<&str>, image: Option<&str>| Where {
        rootless,
        unit: Some(unit.to_string()),
        container: name.map(|n| ContainerCtx {
            id: "c".into(),
            runtime: "docker",
            name: Some(n.into()),
            image: image.map(String::from),
            pod: None,
        }),
    };
    p.learn_place(
        1,
        &at(
            false,
            "docker-c.scope",
            Some("web"),
            Some("docker.io/library/nginx:1.27"),
        ),
    );
    p.learn_place(
        2,
        &at(false, "docker-d.scope", Some("db"), Some("postgres:16")),
    );
    p.learn_place(3, &at(false, "signer.service", None, None));
    p.learn_place(4, &at(true, "signer.service", None, None));
    let mut nginx = proc(30, 1, 33, "/usr/sbin/nginx");
    nginx.cgroup_id = 1;
    nginx.exe_genuine = false;
    nginx.exe_in_root = true;
    assert!(p.allowed(&nginx, None));
    // Another container, or not the file the path names in its root.
    let mut other = nginx.clone();
    other.cgroup_id = 2;
    assert!(!p.allowed(&other, None));
    let mut fake = nginx.clone();
    fake.exe_in_root = false;
    assert!(!p.allowed(&fake, None));
    assert_eq!(
        p.allowance_withdrawn(&fake).as_deref(),
        Some("its executable is not the file /usr/sbin/nginx names in its container")
    );
    let mut preloaded = nginx.clone();
    preloaded.allow_bypass = Some(Arc::from("LD_PRELOAD at exec"));
    assert!(!p.allowed(&preloaded, None));
    // An unknown cgroup holds nothing.
    let mut unknown = nginx.clone();
    unknown.cgroup_id = 9;
    assert!(!p.allowed(&unknown, None));
    // The unit's allowance: the host's file, in the system manager's unit.
    let mut signer = proc(40, 1, 0, "/usr/bin/signer");
    signer.cgroup_id = 3;
    assert!(p.allowed(&signer, None));
    signer.cgroup_id = 4;
    assert!(!p.allowed(&signer, None), "a user's own signer.service");
    signer.cgroup_id = 1;
    assert!(!p.allowed(&signer, None));
}
