//! Detect, container escapes (`container-escape`), the part not judged at
//! a key open: a write-open of a cgroup v1 hierarchy's `release_agent`,
//! and of the host's core-dump sysctls from a container (`dump_sysctl`).
//! The kernel runs the program that file names as root in the host's
//! namespaces when a cgroup of the hierarchy empties, so a process that
//! can mount a cgroup v1 hierarchy (root in a container with
//! CAP_SYS_ADMIN) runs code on the host with it. Nothing on a healthy
//! host writes one after boot (systemd sets its own hierarchy's at
//! start), keysentry excepted. A key opened from a container through
//! another namespace's mount is the other half (`keys.rs`,
//! `Policy::key_file_open`).

use crate::{
    alert::{KernelDetail, Severity, Target},
    detect::{Policy, errno_text, kernel_reader::is_keysentry, rule_alert},
    enrich::context::Context,
    ingest::decode::memory::DumpConfigRecord,
    rules::Rule,
};

/// A write-open of a cgroup v1 `release_agent` (DCFG_RELEASE_AGENT).
pub fn release_agent(cx: &mut Context, _policy: &Policy, d: &DumpConfigRecord) {
    raise(
        cx,
        d,
        "release_agent",
        "release_agent",
        "a cgroup v1 release_agent",
        "the program it names runs as root on the host when a cgroup of that hierarchy empties",
    );
}

/// Is `d` a write-open of a core-dump sysctl (core_pattern,
/// core_pipe_limit, suid_dumpable) from a process whose mount namespace
/// is not the host's?
pub fn from_guest(d: &DumpConfigRecord) -> bool {
    d.what <= sensor_common::DCFG_SUID_DUMPABLE
        && d.what != 0
        && d.value & sensor_common::DCFG_FROM_GUEST != 0
}

/// A core-dump sysctl opened for writing from a container. The sysctls
/// are the host's: a core_pattern set there makes the kernel run the
/// program it names as root in the host's namespaces at the next crash
/// (the classic escape of a container that can write /proc/sys). The
/// alert replaces its `dump-config-change`.
pub fn dump_sysctl(cx: &mut Context, _policy: &Policy, d: &DumpConfigRecord) {
    let (op, path) = match d.what {
        sensor_common::DCFG_CORE_PATTERN => ("core_pattern", "/proc/sys/kernel/core_pattern"),
        sensor_common::DCFG_CORE_PIPE_LIMIT => {
            ("core_pipe_limit", "/proc/sys/kernel/core_pipe_limit")
        }
        _ => ("suid_dumpable", "/proc/sys/fs/suid_dumpable"),
    };
    raise(
        cx,
        d,
        op,
        path,
        &format!("the host's {op}, from a mount namespace not the host's,"),
        "the kernel's core dumps are the host's, and a core_pattern pipe runs as root on the host",
    );
}

/// A `container-escape` for the write-open `d` of `path` (`kernel.op`
/// `op`; the message names it `what` and says `why`): high when it
/// opened, medium when refused.
fn raise(
    cx: &mut Context,
    d: &DumpConfigRecord,
    op: &'static str,
    path: &str,
    what: &str,
    why: &str,
) {
    let actor = cx.procs.resolve(&d.task);
    if is_keysentry(cx, &actor) {
        return;
    }
    let ok = d.ret >= 0;
    let message = format!(
        "{} (pid {}, uid {}) {} {what} for writing: {why}",
        actor.comm,
        actor.pid,
        actor.uid,
        if ok { "opened" } else { "tried to open" },
    );
    let mut alert = rule_alert(
        Rule::ContainerEscape,
        &actor,
        Target::File {
            path: path.into(),
            dev: 0,
            inode: 0,
        },
        &cx.host,
        cx.wall(d.task.ts_boot_ns),
    )
    .message(message)
    .kernel(KernelDetail {
        op,
        result: if ok { "success" } else { "failed" },
        errno: (!ok).then(|| errno_text(d.ret)),
        ..Default::default()
    });
    if !ok {
        alert = alert.verdict(Severity::Medium, 45);
    }
    cx.raise(alert, d.task.ts_boot_ns);
}
