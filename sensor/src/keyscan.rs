//! The key-material scanner: tracked files (dumps, copies) are scanned on
//! a thread of their own when their writer closes them (`scan/`), and what
//! it finds is `key-material` (or `key-created` for keys that are not the
//! origin key file's: the writer generated them).

use std::path::PathBuf;

use crate::{
    alert::{FlowDetail, Target, TrackedKind},
    detect::rule_alert,
    pipeline::Pipeline,
    rules::Rule,
    scan::ScanOutcome,
    watch::st_dev,
};

/// A file for the scanner.
pub struct ScanJob {
    pub id: u32,
    pub path: PathBuf,
    /// The key file the lineage starts at.
    pub origin: Option<PathBuf>,
}

/// What the scanner says of one tracked file.
pub struct ScanResult {
    pub id: u32,
    pub path: PathBuf,
    /// The report (kinds and fingerprints only), or why it failed.
    pub report: Result<ScanOutcome, String>,
}

/// Public-key fingerprints of a scan's findings.
fn fingerprints(r: &crate::scan::ScanReport) -> Vec<String> {
    r.findings
        .iter()
        .flat_map(|f| [f.fingerprint.clone(), f.ssh_fingerprint.clone()])
        .flatten()
        .collect()
}

/// The key-material scanner (`scan.rs`) on one tracked file: kinds and
/// fingerprints only, streamed in bounded memory. When it finds keys and
/// the file descends from a key file, that key file is scanned too, to
/// tell whether the keys found are its keys (a copy) or others (a key the
/// writer generated).
pub fn scan_keys(job: &ScanJob) -> Result<ScanOutcome, String> {
    let limits = crate::scan::ScanLimits::default();
    let report = crate::scan::scan_path(&job.path, &limits).map_err(|e| format!("{e:#}"))?;
    let found = report.findings.len() + report.findings_dropped as usize;
    let origin_match = match &job.origin {
        Some(o) if found > 0 => crate::scan::scan_path(o, &limits).ok().and_then(|r| {
            let theirs = fingerprints(&r);
            let ours = fingerprints(&report);
            (!theirs.is_empty() && !ours.is_empty())
                .then(|| ours.iter().any(|f| theirs.contains(f)))
        }),
        _ => None,
    };
    Ok(ScanOutcome {
        found,
        format: Some(report.file_kind.to_string()),
        findings: serde_json::to_value(&report).map_err(|e| e.to_string())?,
        origin_match,
    })
}

/// The scanner's queue in, and its results out.
pub type ScanChannels = (
    std::sync::mpsc::SyncSender<ScanJob>,
    tokio::sync::mpsc::Receiver<ScanResult>,
);

/// Files waiting for the scanner, at most.
pub(crate) const SCAN_QUEUE: usize = 256;

/// Starts the scanner thread: it reads tracked files (streaming, bounded
/// memory) away from the event loop and sends back what it found.
pub fn start_scanner(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    scan: fn(&ScanJob) -> Result<ScanOutcome, String>,
) -> anyhow::Result<ScanChannels> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<ScanJob>(SCAN_QUEUE);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(SCAN_QUEUE);
    std::thread::Builder::new()
        .name("keysentry-scan".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let report = scan(&job);
                let label = match &report {
                    Ok(o) if o.found > 0 => "found",
                    Ok(_) => "clean",
                    Err(_) => "error",
                };
                metrics.scans.with_label_values(&[label]).inc();
                if out_tx
                    .blocking_send(ScanResult {
                        id: job.id,
                        path: job.path,
                        report,
                    })
                    .is_err()
                {
                    break;
                }
            }
        })?;
    Ok((tx, out_rx))
}

impl Pipeline {
    /// Queues a tracked file for the key-material scanner (with the key
    /// file its lineage starts at, if any: keys found are compared with
    /// that key's, to tell a copy from a new key).
    pub(crate) fn queue_scan(&mut self, id: u32, path: PathBuf) {
        if let Some(t) = self.registry.get_mut(id) {
            t.scanned = true;
        }
        let origin = self
            .registry
            .root(id)
            .filter(|r| r.kind == TrackedKind::Key && r.id != id)
            .map(|r| PathBuf::from(&r.path));
        if let Some(tx) = &self.scan_tx
            && tx.try_send(ScanJob { id, path, origin }).is_err()
        {
            self.metrics
                .output_dropped
                .with_label_values(&["scanner"])
                .inc();
        }
    }

    /// The scanner finished a file: `key-material` when it held keys.
    /// A result from the scanner thread (recorded with the time it was
    /// handled, so a replay raises the same alert at the same point).
    pub fn scanned(&mut self, r: ScanResult) {
        let rec = crate::record::ScanRec {
            at_ns: crate::pipeline::boot_now(),
            id: r.id,
            path: r.path.to_string_lossy().into_owned(),
            report: r.report,
        };
        self.scanned_at(rec.clone());
        self.record(crate::record::Record::Scan(rec));
    }

    /// A scanner result, live or from a recording.
    pub(crate) fn scanned_at(&mut self, r: crate::record::ScanRec) {
        let outcome = match r.report {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("scanning {}: {e}", r.path);
                return;
            }
        };
        if outcome.found == 0 {
            return;
        }
        let Some(t) = self.registry.get(r.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let dumped = t.dumped.clone();
        let origin = t.origin.clone();
        let root = self.registry.root_kind(r.id).unwrap_or(TrackedKind::Copy);
        let actor = match &origin {
            Some(o) => self.procs.lookup(o.pid),
            None => match &dumped {
                Some(d) => self.procs.lookup(d.pid),
                None => self.procs.lookup(0),
            },
        };
        // Keys that are not the origin key file's: the writer generated
        // them (ssh-keygen, openssl genpkey after reading another key). An
        // inventory event, not stolen material. A dump's keys are always
        // material.
        let generated = root == TrackedKind::Key && outcome.origin_match == Some(false);
        let origin_path = self
            .registry
            .root(r.id)
            .map(|o| o.path.clone())
            .unwrap_or_default();
        let n = outcome.found;
        let plural = if n == 1 { "" } else { "s" };
        let message = if generated {
            format!("{path} holds {n} new private key{plural} (not those of {origin_path})")
        } else {
            format!(
                "{path} holds {n} private key{plural}{}",
                match (&dumped, root) {
                    (Some(d), _) => format!(" from the memory of {} (pid {})", d.comm, d.pid),
                    (None, TrackedKind::Key) if origin_path != path => {
                        format!(" (a copy of {origin_path})")
                    }
                    _ => String::new(),
                }
            )
        };
        let ts = self.clock.wall(r.at_ns);
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
        let alert = rule_alert(rule, &actor, target, &self.host, ts)
            .message(message)
            .flow(FlowDetail {
                via: "scan",
                tracked_id: Some(r.id),
                lineage: self.registry.lineage(r.id),
                dumped,
                format: outcome.format,
                keys: Some(outcome.findings),
                ..Default::default()
            });
        self.emit(alert, r.at_ns);
    }
}
