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
    let me = cx.procs.lookup(std::process::id());
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
    let alert = rule_alert(
        Rule::EventsLost,
        &me,
        process_target(&me),
        &cx.host,
        cx.wall(now),
    )
    .message(message);
    cx.raise(alert, now);
}
