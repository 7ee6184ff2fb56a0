//! Stage 6, output: alerts and incidents to stdout, a file and syslog.
//!
//! Where alerts go: stdout, a rotating file, syslog (RFC 5424). Outputs
//! run in their own threads behind bounded queues: a slow output never
//! blocks detection, and what it cannot take is counted.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    alert::{Alert, Severity, Target},
    config::syslog_facility,
    metrics::Metrics,
};

/// Where alerts go: one bounded queue and one thread per output, so a slow
/// or failing output never blocks detection nor the other outputs. An
/// alert an output's queue cannot take, or that its write fails on, is
/// counted in `keysentry_output_dropped_total{output}`.
pub struct Outputs {
    queues: Vec<Queue>,
    metrics: Arc<Metrics>,
    /// Replay: wait for room in the queues instead of dropping.
    pub blocking: bool,
}

struct Queue {
    name: &'static str,
    tx: std::sync::mpsc::SyncSender<Arc<Line>>,
    dropped: prometheus::IntCounter,
    /// Alerts the output has finished with (written or failed).
    handled: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One output line: an alert or an incident record (docs/alerts.md).
/// Alerts are the common case; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Line {
    Alert(Alert),
    Incident(crate::correlate::Incident),
}

/// An output's writer.
trait Sink: Send {
    fn write(&mut self, line: &Line) -> std::io::Result<()>;
}

fn json_line(line: &Line) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(line)?;
    line.push(b'\n');
    Ok(line)
}

struct Stdout;

impl Sink for Stdout {
    fn write(&mut self, line: &Line) -> std::io::Result<()> {
        let line = json_line(line)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&line)?;
        out.flush()
    }
}

/// JSON lines appended to a file, rotated by size: when the next line would
/// take the file past `max_bytes`, FILE.{keep-1} moves to FILE.{keep}, ...,
/// FILE to FILE.1, and a new FILE starts (the oldest beyond `keep` is
/// deleted). `max_bytes` 0: never rotated.
pub struct RotatingFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_bytes,
            keep,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.size = 0;
        Ok(())
    }

    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        let r = match self.file.as_mut() {
            Some(f) => f.write_all(line),
            None => Ok(()),
        };
        match r {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(e) => {
                // Reopened at the next alert (the file may have been removed).
                self.file = None;
                Err(e)
            }
        }
    }
}

impl Sink for RotatingFile {
    fn write(&mut self, line: &Line) -> std::io::Result<()> {
        let line = json_line(line)?;
        self.write_line(&line)
    }
}

/// RFC 5424 messages to a local syslog socket (a unix datagram socket,
/// /dev/log by default).
struct Syslog {
    socket: PathBuf,
    facility: u8,
    conn: Option<std::os::unix::net::UnixDatagram>,
}

/// How long one datagram may wait for room in the syslog daemon's queue
/// before it counts as dropped.
const SYSLOG_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Syslog {
    fn connect(&mut self) -> std::io::Result<&std::os::unix::net::UnixDatagram> {
        if self.conn.is_none() {
            let s = std::os::unix::net::UnixDatagram::unbound()?;
            s.connect(&self.socket)?;
            s.set_write_timeout(Some(SYSLOG_SEND_TIMEOUT))?;
            self.conn = Some(s);
        }
        Ok(self.conn.as_ref().expect("connected above"))
    }
}

impl Sink for Syslog {
    fn write(&mut self, line: &Line) -> std::io::Result<()> {
        let msg = match line {
            Line::Alert(alert) => rfc5424(alert, self.facility, std::process::id())?,
            Line::Incident(i) => rfc5424_incident(i, self.facility, std::process::id())?,
        };
        let r = self.connect().and_then(|s| s.send(&msg).map(drop));
        if r.is_err() {
            // Reconnect at the next alert (the daemon may have restarted).
            self.conn = None;
        }
        r
    }
}

/// Syslog severity of an alert: critical -> crit (2), high -> err (3),
/// medium -> warning (4), low -> notice (5), info -> info (6).
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// The SD-ID of keysentry's structured data. 32473 is the private
/// enterprise number reserved for documentation (RFC 5612).
pub const SD_ID: &str = "keysentry@32473";

/// An RFC 5424 header field: printable US-ASCII without spaces, at most
/// `max` characters, "-" when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

/// PARAM-VALUE escaping (RFC 5424 6.3.3): '"', '\' and ']' get a backslash.
pub fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424 TIMESTAMP: the alert's RFC 3339 time with at most 6 fractional
/// digits.
fn syslog_time(ts: &str) -> String {
    match (ts.find('.'), ts.strip_suffix('Z')) {
        (Some(dot), Some(body)) => {
            let frac = &body[dot + 1..];
            format!("{}.{}Z", &body[..dot], &frac[..frac.len().min(6)])
        }
        _ if ts.is_empty() => "-".into(),
        _ => ts.to_string(),
    }
}

/// One alert as an RFC 5424 message: header, a `[keysentry@32473 ...]`
/// structured-data element with the fields a SIEM filters on, and the
/// alert's JSON as the UTF-8 MSG (with BOM).
pub fn rfc5424(alert: &Alert, facility: u8, procid: u32) -> std::io::Result<Vec<u8>> {
    let pri = u32::from(facility) * 8 + u32::from(syslog_severity(alert.severity));
    let (target, target_pid) = match &alert.target {
        Target::File { path, .. } => (path.clone(), None),
        Target::Process { pid, exe, .. } => (exe.clone(), Some(*pid)),
    };
    let mut sd = format!(
        "[{SD_ID} rule=\"{}\" severity=\"{}\" score=\"{}\" attack=\"{}\" incident=\"{}\" pid=\"{}\" uid=\"{}\" exe=\"{}\" target=\"{}\"",
        sd_escape(alert.rule),
        alert.severity.as_str(),
        alert.score,
        sd_escape(alert.attack),
        sd_escape(&alert.incident),
        alert.process.pid,
        alert.process.uid,
        sd_escape(&alert.process.exe),
        sd_escape(&target),
    );
    if let Some(p) = target_pid {
        sd.push_str(&format!(" target_pid=\"{p}\""));
    }
    sd.push(']');
    let mut msg = format!(
        "<{pri}>1 {} {} keysentry {procid} {} {sd} \u{feff}",
        syslog_time(&alert.ts),
        header_field(&alert.host, 255),
        header_field(alert.rule, 32),
    )
    .into_bytes();
    msg.extend_from_slice(&serde_json::to_vec(alert)?);
    Ok(msg)
}

/// An incident record as an RFC 5424 message: MSGID "incident", its id,
/// status, score and severity as structured data, the record's JSON as MSG.
pub fn rfc5424_incident(
    i: &crate::correlate::Incident,
    facility: u8,
    procid: u32,
) -> std::io::Result<Vec<u8>> {
    let pri = u32::from(facility) * 8 + u32::from(syslog_severity(i.severity));
    let mut msg = format!(
        "<{pri}>1 {} {} keysentry {procid} incident [{SD_ID} incident=\"{}\" status=\"{}\" score=\"{}\" severity=\"{}\" steps=\"{}\"] \u{feff}",
        syslog_time(&i.last_ts),
        header_field(&i.host, 255),
        sd_escape(&i.id),
        i.status,
        i.score,
        i.severity.as_str(),
        i.steps.len(),
    )
    .into_bytes();
    msg.extend_from_slice(&serde_json::to_vec(i)?);
    Ok(msg)
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening alert file {}", path.display()))
}

impl Outputs {
    /// Opens the configured outputs (errors now, not at the first alert;
    /// a syslog socket that is not there yet is retried at each alert).
    pub fn start(cfg: &crate::config::Alerts, metrics: Arc<Metrics>) -> Result<Self> {
        let mut sinks: Vec<(&'static str, Box<dyn Sink>)> = Vec::new();
        if cfg.stdout {
            sinks.push(("stdout", Box::new(Stdout)));
        }
        if let Some(path) = &cfg.file {
            let f = RotatingFile::open(path, cfg.file_max_bytes, cfg.file_keep)?;
            sinks.push(("file", Box::new(f)));
        }
        if cfg.syslog {
            let facility = syslog_facility(&cfg.syslog_facility)
                .with_context(|| format!("syslog facility {:?}", cfg.syslog_facility))?;
            let mut s = Syslog {
                socket: cfg.syslog_socket.clone(),
                facility,
                conn: None,
            };
            if let Err(e) = s.connect() {
                tracing::warn!(
                    "syslog socket {}: {e}; retried at each alert",
                    cfg.syslog_socket.display()
                );
            }
            sinks.push(("syslog", Box::new(s)));
        }
        let mut queues = Vec::new();
        for (name, mut sink) in sinks {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Line>>(cfg.queue);
            let dropped = metrics.output_dropped.with_label_values(&[name]);
            let d = dropped.clone();
            let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let h = handled.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ks-out-{name}"))
                .spawn(move || {
                    let mut failing = false;
                    while let Ok(alert) = rx.recv() {
                        match sink.write(&alert) {
                            Ok(()) => failing = false,
                            Err(e) => {
                                d.inc();
                                if !failing {
                                    tracing::warn!("output {name}: {e} (alerts counted as dropped until it recovers)");
                                }
                                failing = true;
                            }
                        }
                        h.fetch_add(1, std::sync::atomic::Ordering::Release);
                    }
                })
                .with_context(|| format!("starting the {name} output thread"))?;
            queues.push(Queue {
                name,
                tx,
                dropped,
                handled,
                thread: Some(thread),
            });
        }
        Ok(Self {
            queues,
            metrics,
            blocking: false,
        })
    }

    /// Names of the running outputs.
    pub fn names(&self) -> Vec<&'static str> {
        self.queues.iter().map(|q| q.name).collect()
    }

    /// Alerts output `name` has finished with (written or failed).
    pub fn handled(&self, name: &str) -> Option<u64> {
        self.queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.handled.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Counts the alert and hands it to every output without waiting.
    pub fn send(&self, mut alert: Alert) {
        if alert.action.is_none() && sensor_common::ENF_RULES.contains(&alert.rule) {
            alert.action = Some("observed");
        }
        self.metrics
            .alerts
            .with_label_values(&[alert.rule, alert.severity.as_str()])
            .inc();
        self.queue(Line::Alert(alert));
    }

    /// An incident record (docs/alerts.md), on the same outputs.
    pub fn send_incident(&self, incident: crate::correlate::Incident) {
        self.queue(Line::Incident(incident));
    }

    fn queue(&self, line: Line) {
        let line = Arc::new(line);
        for q in &self.queues {
            let sent = if self.blocking {
                q.tx.send(line.clone()).is_ok()
            } else {
                q.tx.try_send(line.clone()).is_ok()
            };
            if !sent {
                q.dropped.inc();
            }
        }
    }

    /// Closes the queues and waits for every output to write what it was
    /// given (a blocked syslog socket waits for its send timeout per alert).
    /// `close` within `limit`: the alerts still queued at shutdown are
    /// written unless an output is stuck (a hung syslog), which is then
    /// left behind and named in the log.
    pub fn close_within(mut self, limit: std::time::Duration) {
        let names: Vec<&'static str> = self.queues.iter().map(|q| q.name).collect();
        let threads: Vec<_> = self
            .queues
            .drain(..)
            .filter_map(|mut q| q.thread.take())
            .collect();
        let (done, wait) = std::sync::mpsc::channel();
        let joiner = std::thread::spawn(move || {
            for t in threads {
                let _ = t.join();
            }
            let _ = done.send(());
        });
        match wait.recv_timeout(limit) {
            Ok(()) => {
                let _ = joiner.join();
            }
            Err(_) => tracing::warn!(
                "outputs {} did not finish their queues within {limit:?} at shutdown",
                names.join(", ")
            ),
        }
    }

    pub fn close(mut self) {
        let threads: Vec<_> = self
            .queues
            .drain(..)
            .filter_map(|mut q| q.thread.take())
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
