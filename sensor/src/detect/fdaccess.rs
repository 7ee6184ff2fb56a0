//! A watched file read, written or mapped through an fd the process did not
//! open itself (BPF LSM backend, `sensor-ebpf/src/probes/lsm_detect.rs`):
//! a key fd passed over a unix socket (SCM_RIGHTS), taken with
//! pidfd_getfd, inherited at fork (`cat < key`) or kept across an exec into
//! another program. The tracepoints see only opens, so these readers are
//! alerted here, with the rule and fields of an open (`key-file-open`, or
//! `dump-file-access` for a tracked file) and `open.via` / `flow.via`
//! saying how the fd came (`fd-*`), `open.fd_op` what was done with it and
//! `open.opened_by` who opened it.

use sensor_common::{FDA_MMAP, FDA_WRITE, FDV_EXEC, FDV_INHERITED, FDV_RECEIVED, WATCH_TRACKED};

use crate::{
    alert::Origin,
    detect::Policy,
    detect::flows::Flows,
    enrich::context::Context,
    enrich::facts::{KeyAccess, TrackedAccess},
    enrich::watch::st_dev,
    ingest::decode::lsm::FdAccessRecord,
};

const O_WRONLY: u32 = 1;

/// `via` of an fd the process did not open.
pub fn fd_via(how: u32, syscall: i32) -> &'static str {
    match (how, syscall) {
        // recvmsg, recvmmsg
        (FDV_RECEIVED, 47 | 299) => "fd-scm-rights",
        (FDV_RECEIVED, 438) => "fd-pidfd-getfd",
        (FDV_RECEIVED, _) => "fd-received",
        (FDV_INHERITED, _) => "fd-inherited",
        (FDV_EXEC, _) => "fd-kept-across-exec",
        _ => "fd-unknown",
    }
}

/// What the process did with the fd.
pub fn fd_op(op: u32) -> &'static str {
    match op {
        FDA_WRITE => "write",
        FDA_MMAP => "mmap",
        _ => "read",
    }
}

/// How the fd came, in words, for the alert message.
fn how_words(r: &FdAccessRecord, via: &str, opener: Option<&Origin>) -> String {
    let by = match opener {
        Some(o) => format!("{} (pid {})", o.comm, o.pid),
        None => "another process".to_string(),
    };
    match via {
        "fd-scm-rights" => format!("received over a unix socket (SCM_RIGHTS), opened by {by}"),
        "fd-pidfd-getfd" => format!("taken with pidfd_getfd, opened by {by}"),
        "fd-received" => format!("received, opened by {by}"),
        "fd-inherited" => format!("inherited, opened by {by}"),
        "fd-kept-across-exec" => {
            format!("opened by pid {} before it exec'd this program", r.task.pid)
        }
        _ => "opened before keysentry started".to_string(),
    }
}

/// One access through an fd the process did not open: a tracked file's
/// goes to the dump-file-access rule, a key file's to the key-file rule.
pub(crate) fn fd_access(cx: &mut Context, policy: &Policy, flows: &mut Flows, r: &FdAccessRecord) {
    let actor = cx.procs.resolve(&r.task);
    let via = fd_via(r.how, r.syscall);
    let op = fd_op(r.op);
    let opener = (r.opener != 0).then(|| Origin::of(&cx.procs.lookup(r.opener)));
    let mut path = r.path.clone().unwrap_or_default();
    if r.path_truncated {
        path.insert_str(0, "...");
    }
    let tracked = r.watch_flags & WATCH_TRACKED != 0;
    // The access as the open rules see it: a read, or a write.
    let flags = match r.op {
        FDA_WRITE => O_WRONLY,
        FDA_MMAP => r.flags & 3,
        _ => 0,
    };
    if tracked {
        let a = TrackedAccess {
            task: &r.task,
            kdev: r.dev,
            ino: r.ino,
            igen: r.igen,
            watch_id: r.watch_id,
            flags,
            via,
        };
        flows.tracked_open(cx, policy, &a);
        return;
    }
    let allowed = policy.allowed(&actor, Some(r.watch_id));
    let k = KeyAccess {
        actor: &actor,
        task: &r.task,
        path: path.clone(),
        dev: st_dev(r.dev),
        ino: r.ino,
        kdev: r.dev,
        igen: r.igen,
        watch_id: Some(r.watch_id),
        by_key_path: true,
        by_name: false,
        name_rules: 0,
        flags,
        failed: false,
        ret: 0,
        via,
        arg: None,
        owner: r.owner,
        created: false,
        size: 0,
        fresh: false,
        escape: false,
    };
    cx.note_key(&k, allowed);
    let ts = cx.wall(r.task.ts_boot_ns);
    let Some(mut alert) = policy.key_file_open(&k, &cx.host, ts) else {
        return;
    };
    // The open rule judged it (rule, verdict, allowlist); this is no
    // open, so the message and the open's `via` say what happened.
    alert.message = format!(
        "{} (pid {}, uid {}) {} key file {path} through an fd it did not open: {}",
        actor.comm,
        actor.pid,
        actor.uid,
        match op {
            "write" => "wrote",
            "mmap" => "mapped",
            _ => "read",
        },
        how_words(r, via, opener.as_ref())
    );
    if let Some(o) = alert.open.as_mut() {
        o.via = via;
        o.fd_op = Some(op);
        o.opened_by = opener;
    }
    cx.raise(alert, r.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::FDV_UNKNOWN;

    #[test]
    fn via_names_how_the_fd_came() {
        assert_eq!(fd_via(FDV_RECEIVED, 47), "fd-scm-rights");
        assert_eq!(fd_via(FDV_RECEIVED, 299), "fd-scm-rights");
        assert_eq!(fd_via(FDV_RECEIVED, 438), "fd-pidfd-getfd");
        assert_eq!(fd_via(FDV_RECEIVED, 16), "fd-received");
        assert_eq!(fd_via(FDV_INHERITED, -1), "fd-inherited");
        assert_eq!(fd_via(FDV_EXEC, -1), "fd-kept-across-exec");
        assert_eq!(fd_via(FDV_UNKNOWN, -1), "fd-unknown");
        assert_eq!(fd_op(FDA_MMAP), "mmap");
        assert_eq!(fd_op(FDA_WRITE), "write");
    }
}
