//! The scanner thread: tracked files (dumps, copies) are scanned away from
//! the event loop when their writer closes them; kinds and fingerprints
//! come back, never key bytes.

use std::path::PathBuf;

use super::ScanOutcome;

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
fn fingerprints(r: &super::ScanReport) -> Vec<String> {
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
    let limits = super::ScanLimits::default();
    let report = super::scan_path(&job.path, &limits).map_err(|e| format!("{e:#}"))?;
    let found = report.findings.len() + report.findings_dropped as usize;
    let origin_match = match &job.origin {
        Some(o) if found > 0 => super::scan_path(o, &limits).ok().and_then(|r| {
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
pub const SCAN_QUEUE: usize = 256;

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
