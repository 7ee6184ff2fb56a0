//! `events-lost`: the kernel could not hand user space a critical record
//! (its lane's ring was full), so a detection may be missing. The kernel
//! sets a sticky flag (`CRITICAL_LOST`) that the event loop reads and
//! clears on every tick (`agent/live.rs`); the alert says how many
//! critical records of which kinds were lost. Its actor and target are
//! keysentry itself: what was lost is unknown.

use sensor_common::EventKind;

use crate::{
    detect::{process_target, rule_alert},
    enrich::context::{Context, boot_now},
    rules::Rule,
};

/// Raises `events-lost` for `lost` (critical records lost since the last
/// alert, per kind; empty when only the flag was seen).
pub fn critical_lost(cx: &mut Context, lost: &[(EventKind, u64)]) {
    let now = boot_now();
    let total: u64 = lost.iter().map(|(_, n)| n).sum();
    let kinds = lost
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let message = if total == 0 {
        "the kernel could not deliver critical records (the critical ring was full): detections may be missing".to_string()
    } else {
        format!(
            "the kernel could not deliver {total} critical record{} ({kinds}): the critical ring was full, detections may be missing",
            if total == 1 { "" } else { "s" }
        )
    };
    raise_lost(cx, std::process::id(), message, now);
}

/// Raises `events-lost` for `n` strong taints (a key path's key, a
/// protected process's memory, a dump) that neither `TAINTED` nor
/// `TAINT_RESERVE` could hold: what those processes write and send is
/// not followed.
pub fn taint_lost(cx: &mut Context, n: u64) {
    let now = boot_now();
    let message = format!(
        "the kernel could not record {n} taint{} of processes that read a key, a dump or a protected process's memory (the taint maps were full): their copies and sends may go unseen",
        if n == 1 { "" } else { "s" }
    );
    raise_lost(cx, std::process::id(), message, now);
}

/// Raises `events-lost` for each process whose critical records the
/// kernel held back (past its per-(process, kind) rate limit in the
/// critical lane): `held` is (tgid, kind, how many) since the last call.
/// The process is the actor and the target: what it did beyond its first
/// records of those kinds is unknown.
pub fn critical_held(cx: &mut Context, held: &[(u32, EventKind, u64)]) {
    let now = boot_now();
    let mut tgids: Vec<u32> = held.iter().map(|(t, _, _)| *t).collect();
    tgids.sort_unstable();
    tgids.dedup();
    for tgid in tgids {
        let of: Vec<_> = held.iter().filter(|(t, _, _)| *t == tgid).collect();
        let total: u64 = of.iter().map(|(_, _, n)| n).sum();
        let kinds = of
            .iter()
            .map(|(_, k, n)| format!("{n} {}", k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let per_s = 1_000_000_000 / sensor_common::CRIT_INTERVAL_NS;
        let message = format!(
            "the kernel held back {total} critical record{} of this process ({kinds}): past its rate limit in the critical lane ({} at once, then {per_s}/s), what it did beyond is not detected",
            if total == 1 { "" } else { "s" },
            sensor_common::CRIT_BURST
        );
        raise_lost(cx, tgid, message, now);
    }
}

/// One `events-lost` alert whose actor and target are process `pid`.
fn raise_lost(cx: &mut Context, pid: u32, message: String, now: u64) {
    let p = cx.procs.lookup(pid);
    let alert = rule_alert(
        Rule::EventsLost,
        &p,
        process_target(&p),
        &cx.host,
        cx.wall(now),
    )
    .message(message);
    cx.raise(alert, now);
}
