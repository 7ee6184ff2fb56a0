//! The flow stage, renames, links and unlinks (`PathChange` records) of
//! tracked files, watched keys and directories holding them: the
//! registry follows the file to its new name (a key moved out of its key
//! path is tracked from then on), and a rename or link is a
//! `tracked-copy`. An unlink, or a name a rename replaced, lets go of the
//! files that had that name (`tracking.rs`).

use std::{os::unix::fs::MetadataExt, path::Path};

use sensor_common::{InodeKey, PATH_OP_LINK, PATH_OP_SYMLINK, PATH_OP_UNLINK};

use crate::{
    alert::{FlowDetail, Origin, Severity, Target, TrackedKind},
    detect::{Policy, rule_alert},
    enrich::context::Context,
    enrich::userpath::{stat_user_path, user_path},
    enrich::watch::kdev,
    ingest::decode::flow::PathRecord,
    rules::Rule,
};

/// A rename or link whose source or destination name may be tracked,
/// or an unlink of such a name.
pub(crate) fn path_change(
    cx: &mut Context,
    policy: &Policy,
    units: &mut crate::detect::units::UnitChecks,
    p: &PathRecord,
) {
    // A name made at a code-loading path (key-holder-tamper); a symlink
    // is nothing else.
    if p.op != PATH_OP_UNLINK {
        crate::detect::tamper::code_path_change(cx, policy, units, p);
    }
    if p.op == PATH_OP_SYMLINK {
        return;
    }
    if p.op == PATH_OP_UNLINK {
        cx.name_gone(&p.old, None);
        return;
    }
    // Where the new name is, as the process saw it (a fact: recorded,
    // and the replay's answer).
    let key = format!("path:{}:{:x}", p.task.tid, p.task.ts_boot_ns);
    let v = cx.view.value(key, || {
        stat_user_path(p.task.pid, p.new_dfd, &p.new)
            .map(|(shown, md)| {
                serde_json::json!([shown.to_string_lossy(), md.dev(), md.ino(), md.is_dir()])
            })
            .unwrap_or_default()
    });
    let Ok((shown, dev, ino, is_dir)) = serde_json::from_value::<(String, u64, u64, bool)>(v)
    else {
        return;
    };
    let kd = kdev(dev);
    // The new name as reachable from here (live reads only).
    let seen = || user_path(p.task.pid, p.new_dfd, &p.new);
    if p.op != PATH_OP_LINK {
        // What had the new name before a rename lost it.
        cx.name_gone(&p.new, Some((kd, ino)));
    }
    let is_link = p.op == PATH_OP_LINK;
    let how = if is_link { "link" } else { "rename" };
    // A tracked file (dump or copy), a watched key, or a directory
    // holding watched keys. The path is resolved late: an entry whose
    // file handle differs from the file's there now is a file that is
    // gone, whose inode number the file at the path reuses.
    let tracked = cx
        .registry
        .by_inode(kd, ino)
        .filter(|t| !t.gone)
        .map(|t| (t.id, t.handle.clone(), t.igen));
    let tracked = match tracked {
        Some((id, h, igen)) if h.is_some() || igen.is_some() => {
            let now = cx
                .view
                .value(format!("same:{kd}:{ino}:{id}"), || {
                    let by_gen = igen.zip(crate::enrich::handle::generation(&seen().seen, kd, ino));
                    match (by_gen, &h) {
                        (Some((was, is)), _) => Some(was == is),
                        (None, Some(h)) => {
                            crate::enrich::handle::Handle::of_inode(None, &seen().seen, kd, ino)
                                .map(|n| n == *h)
                        }
                        (None, None) => None,
                    }
                    .into()
                })
                .as_bool();
            if now == Some(false) {
                if let Some(t) = cx.registry.retire(id) {
                    cx.untrack_in_kernel(&t);
                }
                None
            } else {
                Some(id)
            }
        }
        Some((id, _, _)) => Some(id),
        None => None,
    };
    let key = InodeKey {
        dev: kd,
        _pad: 0,
        ino,
    };
    let watched = cx.watcher.get_or_departed(&key).cloned();
    // A key path's file (as the registry or the watcher knows it), and
    // whether its new name is still under a key path.
    let is_key = watched.is_some()
        || tracked
            .and_then(|id| cx.registry.get(id))
            .is_some_and(|t| t.kind == TrackedKind::Key);
    if tracked.is_none() && watched.is_none() {
        return;
    }
    let actor = cx.procs.resolve(&p.task);
    let watch_id = watched.as_ref().map(|w| w.watch_id);
    if tracked.is_none() && policy.allowed(&actor, watch_id) {
        return;
    }
    let id = match tracked {
        Some(id) => id,
        None => {
            let kind_path = watched
                .as_ref()
                .map(|w| w.path.to_string_lossy().into_owned())
                .unwrap_or_default();
            cx.registry
                .register(
                    kd,
                    ino,
                    kind_path,
                    TrackedKind::Key,
                    "key",
                    None,
                    None,
                    None,
                )
                .0
        }
    };
    let old_path = cx
        .registry
        .get(id)
        .map(|t| t.path.clone())
        .unwrap_or_default();
    let mut lineage = cx.registry.lineage(id);
    // Same inode: the file's record moves (a rename) or stays (a link,
    // whose new name is a step of its own in the lineage).
    let step = if is_link {
        // A link shares the inode: one registry entry per inode, so
        // the step is reported but the entry keeps its first path.
        id
    } else {
        if let Some(t) = cx.registry.get_mut(id) {
            t.path = shown.clone();
        }
        id
    };
    if let Some(t) = cx.registry.get_mut(id) {
        t.gone = false;
    }
    if let Some(name) = Path::new(&shown).file_name() {
        cx.kernel.watch_name(name.as_encoded_bytes());
    }
    // A key moved out of every key path: the key path rescan lets go
    // of it, so it is followed as a tracked file. A key linked out
    // keeps its name under the key path (if that name goes later, the
    // rescan hands it over: `keys_departed`); its handle tells.
    let under_key_path = cx
        .watcher
        .roots()
        .iter()
        .any(|r| Path::new(&shown).starts_with(r));
    if is_key && !is_dir && !under_key_path {
        if is_link {
            if cx.registry.get(id).is_some_and(|t| t.handle.is_none()) {
                cx.identify(id);
            }
        } else {
            cx.track_moved_key(id, kd, ino, &shown);
        }
    }
    let root = cx.registry.root_kind(step).unwrap_or(TrackedKind::Key);
    let dir = is_dir;
    let message = format!(
        "{} (pid {}, uid {}) {} {}{old_path} to {shown}",
        actor.comm,
        actor.pid,
        actor.uid,
        if is_link { "linked" } else { "moved" },
        if dir { "directory " } else { "" },
    );
    lineage.push(crate::alert::LineageStep {
        id: step,
        path: shown.clone(),
        kind: root,
        how,
        generation: lineage.last().map_or(0, |l| l.generation + 1),
        by: Some(Origin::of(&actor)),
    });
    let dumped = cx.registry.get(step).and_then(|t| t.dumped.clone());
    let ts = cx.wall(p.task.ts_boot_ns);
    let target = Target::File {
        path: shown,
        dev,
        inode: ino,
    };
    // A rename or link moves the whole file: no evidence to weigh.
    let (severity, score) = if root == TrackedKind::Dump {
        (Severity::Critical, 85)
    } else {
        (Severity::High, 70)
    };
    let alert = rule_alert(Rule::TrackedCopy, &actor, target, &cx.host, ts)
        .verdict(severity, score)
        .message(message)
        .flow(FlowDetail {
            via: how,
            tracked_id: Some(step),
            lineage,
            dumped,
            ..Default::default()
        });
    cx.raise(alert, p.task.ts_boot_ns);
}
