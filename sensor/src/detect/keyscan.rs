//! The key-material scanner: tracked files (dumps, copies) are scanned on
//! a thread of their own when their writer closes them (`scan/`), and what
//! it finds is `key-material` (or `key-created` for keys that are not the
//! origin key file's: the writer generated them), naming the key file of
//! each key the key book knows (`enrich/keybook.rs`). The key book's own
//! reads of key files come back here too and fill it.

use crate::{
    alert::{FlowDetail, Target, TrackedKind},
    detect::rule_alert,
    enrich::context::Context,
    enrich::scan::ScanOutcome,
    enrich::watch::st_dev,
    rules::Rule,
};

/// What the scanner said of a tracked file, when it was handled.
pub struct Scanned {
    pub at_ns: u64,
    pub id: u32,
    pub path: String,
    /// A key file read for the key book: its fingerprints, no alert.
    pub book: bool,
    pub report: Result<ScanOutcome, String>,
}

/// The key-material rule: one scanner result (live, or from a recording).
pub fn scanned(cx: &mut Context, r: &Scanned) {
    let outcome = match &r.report {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("scanning {}: {e}", r.path);
            return;
        }
    };
    if r.book {
        let n = cx.keybook.learn(&r.path, &outcome.findings);
        tracing::debug!("key book: {} new fingerprints from {}", n, r.path);
        return;
    }
    let mut outcome = outcome.clone();
    if outcome.found == 0 {
        return;
    }
    // Whose keys they are, when the key book read their files.
    let named = cx.keybook.name(&mut outcome.findings);
    let Some(t) = cx.registry.get(r.id) else {
        return;
    };
    let path = t.path.clone();
    let (kd, ino) = (t.kdev, t.ino);
    let dumped = t.dumped.clone();
    let origin = t.origin.clone();
    let root = cx.registry.root_kind(r.id).unwrap_or(TrackedKind::Copy);
    let actor = match &origin {
        Some(o) => cx.procs.lookup(o.pid),
        None => match &dumped {
            Some(d) => cx.procs.lookup(d.pid),
            None => cx.procs.lookup(0),
        },
    };
    // Keys that are not the origin key file's: the writer generated
    // them (ssh-keygen, openssl genpkey after reading another key). An
    // inventory event, not stolen material. A dump's keys are always
    // material.
    let generated = root == TrackedKind::Key && outcome.origin_match == Some(false);
    let origin_path = cx
        .registry
        .root(r.id)
        .map(|o| o.path.clone())
        .unwrap_or_default();
    let n = outcome.found;
    let plural = if n == 1 { "" } else { "s" };
    let whose = if named.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            named
                .iter()
                .map(|(file, fp)| format!("the private key of {file} ({fp})"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let message = if generated {
        format!("{path} holds {n} new private key{plural} (not those of {origin_path})")
    } else {
        format!(
            "{path} holds {n} private key{plural}{}{whose}",
            match (&dumped, root) {
                (Some(d), _) => format!(" from the memory of {} (pid {})", d.comm, d.pid),
                (None, TrackedKind::Key) if origin_path != path => {
                    format!(" (a copy of {origin_path})")
                }
                _ => String::new(),
            }
        )
    };
    let ts = cx.wall(r.at_ns);
    let rule = if generated {
        Rule::KeyCreated
    } else {
        Rule::KeyMaterial
    };
    let target = Target::File {
        path,
        dev: st_dev(kd),
        inode: ino,
    };
    let alert = rule_alert(rule, &actor, target, &cx.host, ts)
        .message(message)
        .flow(FlowDetail {
            via: "scan",
            tracked_id: Some(r.id),
            lineage: cx.registry.lineage(r.id),
            dumped,
            format: outcome.format,
            keys: Some(outcome.findings),
            ..Default::default()
        });
    cx.raise(alert, r.at_ns);
}
