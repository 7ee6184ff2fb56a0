//! Detect, container escapes (`container-escape`), the part not judged at
//! a key open: a write-open of a cgroup v1 hierarchy's `release_agent`.
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
    let actor = cx.procs.resolve(&d.task);
    if is_keysentry(cx, &actor) {
        return;
    }
    let ok = d.ret >= 0;
    let message = format!(
        "{} (pid {}, uid {}) {} a cgroup v1 release_agent for writing: the program it names runs as root on the host when a cgroup of that hierarchy empties",
        actor.comm,
        actor.pid,
        actor.uid,
        if ok { "opened" } else { "tried to open" },
    );
    let mut alert = rule_alert(
        Rule::ContainerEscape,
        &actor,
        Target::File {
            path: "release_agent".into(),
            dev: 0,
            inode: 0,
        },
        &cx.host,
        cx.wall(d.task.ts_boot_ns),
    )
    .message(message)
    .kernel(KernelDetail {
        op: "release_agent",
        result: if ok { "success" } else { "failed" },
        errno: (!ok).then(|| errno_text(d.ret)),
        ..Default::default()
    });
    if !ok {
        alert = alert.verdict(Severity::Medium, 45);
    }
    cx.raise(alert, d.task.ts_boot_ns);
}
