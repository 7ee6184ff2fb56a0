//! The scanner thread: tracked files (dumps, copies) are scanned away from
//! the event loop when their writer closes them; kinds and fingerprints
//! come back, never key bytes.

use std::{
    io::{ErrorKind, Read},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{ScanLimits, ScanOutcome, ScanReport};

/// A tracked file for the scanner: its path and the inode it must be.
#[derive(Debug, Clone)]
pub struct ScanJob {
    pub id: u32,
    pub path: PathBuf,
    /// The root `path` is read from (None: keysentry's own; `enrich/roots.rs`).
    pub root: Option<crate::enrich::roots::Root>,
    /// Kernel dev_t and inode of the tracked file.
    pub kdev: u32,
    pub ino: u64,
    /// The key file the lineage starts at (path, dev_t, inode).
    pub origin: Option<(PathBuf, u32, u64)>,
    /// A key file read for the key book (`keybook.rs`): its fingerprints,
    /// no alert; `id` is 0.
    pub book: bool,
}

/// Most data bytes read of one file (a core of a large process is big; a
/// sparse file's holes do not count).
pub const MAX_SCAN_BYTES: u64 = 16 << 30;
/// Longest one scan may take; past it the scan stops with an error.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// The data of one tracked file, read without trusting what is at its path:
/// opened with O_NONBLOCK|O_NOFOLLOW|O_NOCTTY (`handle::open_tracked`: a
/// FIFO, a symlink, a device or another inode renamed over it is refused),
/// at most the size it had when opened (it cannot grow under the scan) and
/// `MAX_SCAN_BYTES`, its holes skipped (SEEK_DATA), within `SCAN_TIMEOUT`.
struct TrackedReader {
    file: std::fs::File,
    pos: u64,
    end: u64,
    budget: u64,
    deadline: Instant,
}

impl TrackedReader {
    fn open(
        root: Option<&std::fs::File>,
        path: &Path,
        kdev: u32,
        ino: u64,
        timeout: Duration,
    ) -> Result<Self, String> {
        let file = crate::enrich::handle::open_tracked(root, path, kdev, ino).ok_or_else(|| {
            format!(
                "{}: not the tracked regular file (gone, replaced, or not regular)",
                path.display()
            )
        })?;
        let end = file.metadata().map_err(|e| e.to_string())?.len();
        Ok(Self {
            file,
            pos: 0,
            end,
            budget: MAX_SCAN_BYTES,
            deadline: Instant::now() + timeout,
        })
    }
}

impl Read for TrackedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "scan timed out"));
        }
        if self.pos >= self.end || self.budget == 0 {
            return Ok(0);
        }
        // SAFETY: lseek on a descriptor this reader owns; no memory passed.
        let data = unsafe {
            libc::lseek(
                self.file.as_raw_fd(),
                self.pos as libc::off_t,
                libc::SEEK_DATA,
            )
        };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            // ENXIO: only a hole is left. EINVAL: no SEEK_DATA here.
            match e.raw_os_error() {
                Some(libc::ENXIO) => return Ok(0),
                Some(libc::EINVAL) => {}
                _ => return Err(e),
            }
        } else {
            self.pos = data as u64;
        }
        let want = (buf.len() as u64)
            .min(self.end.saturating_sub(self.pos))
            .min(self.budget) as usize;
        if want == 0 {
            return Ok(0);
        }
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        self.budget -= n as u64;
        Ok(n)
    }
}

/// Scans the tracked file (kdev, ino) at `path` (see `TrackedReader`).
pub fn scan_tracked(
    root: Option<&std::fs::File>,
    path: &Path,
    kdev: u32,
    ino: u64,
    limits: &ScanLimits,
    timeout: Duration,
) -> Result<ScanReport, String> {
    let r = TrackedReader::open(root, path, kdev, ino, timeout)?;
    super::scan_reader(r, limits).map_err(|e| format!("{}: {e:#}", path.display()))
}

/// What the scanner says of one tracked file.
pub struct ScanResult {
    pub id: u32,
    pub path: PathBuf,
    /// A key book job (`ScanJob::book`).
    pub book: bool,
    /// The report (kinds and fingerprints only), or why it failed.
    pub report: Result<ScanOutcome, String>,
}

/// Public-key fingerprints of a scan's findings.
fn fingerprints(r: &ScanReport) -> Vec<String> {
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
    let limits = ScanLimits::default();
    let report = if job.book {
        // A key file: its first BOOK_MAX_BYTES, read as a tracked file
        // (no symlink, no FIFO, the inode checked).
        let r = TrackedReader::open(
            job.root.as_deref(),
            &job.path,
            job.kdev,
            job.ino,
            SCAN_TIMEOUT,
        )?
        .take(crate::enrich::keybook::BOOK_MAX_BYTES);
        super::scan_reader(r, &limits).map_err(|e| format!("{}: {e:#}", job.path.display()))?
    } else {
        scan_tracked(
            job.root.as_deref(),
            &job.path,
            job.kdev,
            job.ino,
            &limits,
            SCAN_TIMEOUT,
        )?
    };
    let found = report.findings.len() + report.findings_dropped as usize;
    let origin_match = match &job.origin {
        Some((o, kd, ino)) if found > 0 => scan_tracked(None, o, *kd, *ino, &limits, SCAN_TIMEOUT)
            .ok()
            .and_then(|r| {
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
                    _ if job.book => "key_book",
                    Ok(o) if o.found > 0 => "found",
                    Ok(_) => "clean",
                    Err(_) => "error",
                };
                metrics.scans.with_label_values(&[label]).inc();
                if out_tx
                    .blocking_send(ScanResult {
                        id: job.id,
                        path: job.path,
                        book: job.book,
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
