//! The flow stage, sends: a tainted process (one that read a key, a dump
//! or a copy, or memory of a protected process) sending on an inet socket
//! is `exfiltration`, with the lineage of what it read.

use sensor_common::{TAINT_MEMORY, TAINT_PIPE};

use crate::{
    alert::{FlowDetail, Target, TrackedKind},
    detect::flows::via_name,
    detect::{Policy, rule_alert},
    enrich::context::Context,
    enrich::watch::st_dev,
    ingest::decode::flow::SendRecord,
    rules::Rule,
};

/// A tainted process sent on a socket.
pub(crate) fn net_send(cx: &mut Context, policy: &Policy, s: &SendRecord) {
    // Only inet sockets leave the host.
    if s.family != 2 && s.family != 10 {
        return;
    }
    let actor = cx.procs.resolve(&s.task);
    let t = &s.taint;
    let src = if t.src_ino != 0 {
        let (src, stale) = cx.registry.by_file(t.src_dev, t.src_ino, t.src_igen);
        let src = src.map(|x| (x.id, x.kind, x.path.clone(), x.watch));
        if let Some(old) = stale {
            cx.untrack_in_kernel(&old);
        }
        src
    } else {
        None
    };
    let dumped = if t.flags & TAINT_MEMORY != 0 {
        cx.memory_source(actor.pid)
    } else {
        None
    };
    let (what, tracked_id) = match (&src, &dumped) {
        (Some((id, kind, path, watch)), _) => {
            if *kind == TrackedKind::Key
                && (policy.allowed(&actor, *watch)
                    || cx.fresh_own_key(*id, actor.uid, s.task.ts_boot_ns))
            {
                return;
            }
            (format!("after reading {path}"), Some(*id))
        }
        (None, Some(d)) => (
            format!(
                "after reading the memory of protected process {} (pid {})",
                d.comm, d.pid
            ),
            None,
        ),
        (None, None) => return,
    };
    let protocol = match (s.sock_type, s.protocol) {
        (1, _) | (_, 6) => "tcp",
        (2, _) | (_, 17) => "udp",
        (_, 132) => "sctp",
        (3, _) => "raw",
        _ => "other",
    };
    let remote = s.remote.map(|a| a.to_string());
    let message = format!(
        "{} (pid {}, uid {}) sent data over {protocol} to {} {what}",
        actor.comm,
        actor.pid,
        actor.uid,
        remote.as_deref().unwrap_or("an unknown peer"),
    );
    let dumped = dumped.or_else(|| {
        tracked_id
            .and_then(|id| cx.registry.get(id))
            .and_then(|t| t.dumped.clone())
    });
    let ts = cx.wall(s.task.ts_boot_ns);
    let rule = Rule::Exfiltration;
    let target = match &src {
        Some((_, _, path, _)) => Target::File {
            path: path.clone(),
            dev: st_dev(t.src_dev),
            inode: t.src_ino,
        },
        None => Target::Process {
            pid: dumped.as_ref().map_or(0, |d| d.pid),
            comm: dumped.as_ref().map(|d| d.comm.clone()).unwrap_or_default(),
            exe: dumped.as_ref().map(|d| d.exe.clone()).unwrap_or_default(),
            protected: dumped.as_ref().and_then(|d| d.protected.clone()),
            container: None,
            cgroup_id: 0,
        },
    };
    let alert = rule_alert(rule, &actor, target, &cx.host, ts)
        .attack(if protocol == "tcp" {
            rule.attack()
        } else {
            rule.alt_attack()
        })
        .message(message)
        .flow(FlowDetail {
            via: via_name(s.via),
            tracked_id,
            lineage: tracked_id
                .map(|id| cx.registry.lineage(id))
                .unwrap_or_default(),
            dumped,
            pipe_from: (t.flags & TAINT_PIPE != 0 && t.via_pid != 0).then_some(t.via_pid),
            remote,
            local: s.local.map(|a| a.to_string()),
            protocol: Some(protocol),
            bytes: Some(s.bytes),
            ..Default::default()
        });
    cx.raise(alert, s.task.ts_boot_ns);
}
