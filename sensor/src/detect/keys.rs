//! Detect, key files: the handler that turns an open of a watched or
//! name-matched key file (`OpenRecord`; a failed open is resolved from its
//! path argument) into `key-file-open` or `key-created`, once the registry
//! has noted the key (`tracking.rs`). The alerts are built by `detect.rs`'s
//! policy.

use std::path::Path;

use sensor_common::{InodeKey, MATCH_INODE, MATCH_PARENT, MATCH_TRACKED};

use crate::{
    detect::Policy, enrich::context::Context, enrich::facts::KeyAccess, enrich::watch::st_dev,
    ingest::decode::open::OpenRecord,
};

/// The key-file rule for one open (`OpenRecord`): enriched into a
/// `KeyAccess` (a failed open resolved from its path argument), the key
/// noted in the registry, then judged by the policy.
pub(crate) fn key_open(cx: &mut Context, policy: &Policy, rec: &OpenRecord) {
    let actor = cx.procs.resolve(&rec.task);
    if crate::detect::dumps::Dumps::is_core_handler(cx, &actor) {
        return;
    }
    let (path, dev, ino, watch_id) = if rec.failed {
        match resolve_failed(cx, rec) {
            Some(r) => r,
            None => return,
        }
    } else {
        let watch_id = (rec.matched & (MATCH_INODE | MATCH_PARENT) != 0).then_some(rec.watch_id);
        let mut path = rec.path.clone().unwrap_or_default();
        if rec.path_truncated {
            path.insert_str(0, "...");
        }
        (path, st_dev(rec.dev), rec.ino, watch_id)
    };
    // A successful read of a watched key file (not a tracked copy or
    // dump, not O_PATH) makes the opener a key holder (the kernel
    // protected it already; this learns why, and protects its threads),
    // and the key book reads the file once for its fingerprints.
    if !rec.failed
        && rec.matched & MATCH_TRACKED == 0
        && rec.flags & 3 != libc::O_WRONLY as u32
        && rec.flags & libc::O_PATH as u32 == 0
    {
        // Still a holder in the kernel: an exec since the open (whose
        // record may be read before this one: another lane) ended it
        // there, and the new image must not be made one again. Recorded.
        let pid = actor.pid;
        if cx.protector.may_hold(pid) {
            let k = &cx.kernel;
            let held = cx
                .view
                .value(format!("holder:{pid}:{}", rec.task.ts_boot_ns), || {
                    k.is_holder(pid).unwrap_or(true).into()
                })
                .as_bool()
                .unwrap_or(true);
            if held && let Some(change) = cx.protector.on_key_open(pid, &path) {
                cx.apply(&[change]);
            }
        }
        if !rec.path_truncated {
            cx.queue_book(std::path::PathBuf::from(&path), rec.dev, rec.ino);
        }
    }
    let allowed = policy.allowed(&actor, watch_id);
    // A key this uid created moments ago (checked before this open
    // registers anything).
    let fresh = !rec.created()
        && cx
            .registry
            .by_inode(rec.dev, rec.ino)
            .filter(|t| t.igen.is_none_or(|g| g == rec.igen))
            .is_some_and(|t| {
                t.created.is_some_and(|(u, at)| {
                    u == actor.uid
                        && rec.task.ts_boot_ns.saturating_sub(at)
                            < crate::enrich::tracking::FRESH_KEY_NS
                })
            });
    let k = KeyAccess::of_open(rec, &actor, (path, dev, ino, watch_id), fresh);
    cx.note_key(&k, allowed || fresh);
    if let Some(alert) = policy.key_file_open(&k, &cx.host, cx.wall(rec.task.ts_boot_ns)) {
        cx.raise(alert, rec.task.ts_boot_ns);
    }
}

/// A failed open names no file: resolve its path argument as the
/// process saw it (its root, cwd or dirfd) and check it is watched.
/// The answer is a fact (recorded, and the replay's answer).
fn resolve_failed(cx: &mut Context, rec: &OpenRecord) -> Option<(String, u64, u64, Option<u32>)> {
    let key = format!("failed-open:{}:{:x}", rec.task.tid, rec.task.ts_boot_ns);
    let live = (!cx.view.is_replay()).then(|| resolve_failed_live(cx, rec));
    let v = cx
        .view
        .value(key, || serde_json::to_value(live).unwrap_or_default());
    match serde_json::from_value::<Resolved>(v).unwrap_or(Resolved::Unresolved) {
        Resolved::Path(shown, dev, ino, watch_id) => Some((shown, dev, ino, watch_id)),
        Resolved::NotWatched => None,
        Resolved::Unresolved => {
            cx.metrics.unresolved_failed_opens.inc();
            None
        }
    }
}

fn resolve_failed_live(cx: &Context, rec: &OpenRecord) -> Resolved {
    let Some(arg) = rec.arg.as_deref() else {
        return Resolved::NotWatched;
    };
    let up = crate::enrich::userpath::user_path(rec.task.pid, rec.dfd, arg);
    let (shown, seen) = (&up.shown, &up.seen);
    let covered = cx.watcher.covers(seen);
    let (watch_id, key) = match covered {
        Some((id, key)) => (Some(id), key),
        None if rec.name_rules != 0 => (None, None),
        None => {
            if Path::new(seen).exists() {
                // The name filter matched but the file is not watched.
                return Resolved::NotWatched;
            }
            return Resolved::Unresolved;
        }
    };
    let key = key.unwrap_or(InodeKey {
        dev: 0,
        _pad: 0,
        ino: 0,
    });
    let dev = if key.dev == 0 { 0 } else { st_dev(key.dev) };
    Resolved::Path(shown.to_string_lossy().into_owned(), dev, key.ino, watch_id)
}

/// A failed open's path argument, resolved.
#[derive(serde::Serialize, serde::Deserialize)]
enum Resolved {
    /// (as shown, st_dev, inode, key_path) of a watched or key-named path.
    Path(String, u64, u64, Option<u32>),
    /// It exists and is not watched.
    NotWatched,
    /// Nothing there (or no argument was captured).
    Unresolved,
}
