//! Prometheus metrics (prometheus crate) and their HTTP endpoint (hyper).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sensor_common::EventKind;

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub events_lost: IntCounterVec,
    pub events_malformed: IntCounterVec,
    pub alerts: IntCounterVec,
    pub probe_attached: IntGaugeVec,
    pub process_table_entries: IntGauge,
    pub watched_inodes: IntGauge,
    pub output_dropped: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub unresolved_failed_opens: IntCounter,
    pub core_dumps: IntCounterVec,
    pub tracked_files: IntGauge,
    pub scans: IntCounterVec,
    pub alerts_suppressed: IntCounterVec,
    pub incidents: IntCounterVec,
    pub incident_score: prometheus::Histogram,
    pub flow_stopped: IntCounterVec,
    pub copies: IntCounterVec,
    pub tainted_processes: IntGauge,
    pub map_entries: IntGaugeVec,
}

/// `reason` labels of `keysentry_flow_stopped_total` counted in user space
/// (the kernel's are `sensor_common::STOP_REASONS`).
pub const USER_STOP_REASONS: [&str; 2] = ["eviction", "deleted"];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Arc<Self>> {
        let r = Registry::new();
        let events = counter_vec(
            &r,
            "keysentry_events_total",
            "Kernel events received, by kind.",
            &["kind"],
        )?;
        let events_lost = counter_vec(
            &r,
            "keysentry_events_lost_total",
            "Kernel events dropped because their lane's ring buffer was full, by kind and lane.",
            &["kind", "lane"],
        )?;
        let events_malformed = counter_vec(
            &r,
            "keysentry_events_malformed_total",
            "Ring-buffer records that failed to decode and were skipped.",
            &["reason"],
        )?;
        let alerts = counter_vec(
            &r,
            "keysentry_alerts_total",
            "Alerts raised.",
            &["rule", "severity"],
        )?;
        let output_dropped = counter_vec(
            &r,
            "keysentry_output_dropped_total",
            "Alerts an output could not take (queue full or write error).",
            &["output"],
        )?;
        let config_reloads = counter_vec(
            &r,
            "keysentry_config_reloads_total",
            "Config reloads at SIGHUP: ok, or invalid (the running config was kept).",
            &["result"],
        )?;
        for result in ["ok", "invalid"] {
            config_reloads.with_label_values(&[result]);
        }
        let probe_attached = IntGaugeVec::new(
            Opts::new(
                "keysentry_probe_attached",
                "1 when the probe is attached, 0 when not; backend: tracepoint or lsm.",
            ),
            &["probe", "backend"],
        )?;
        r.register(Box::new(probe_attached.clone()))?;
        let process_table_entries = IntGauge::new(
            "keysentry_process_table_entries",
            "Processes in the process table.",
        )?;
        r.register(Box::new(process_table_entries.clone()))?;
        let watched_inodes = IntGauge::new(
            "keysentry_watched_inodes",
            "Files and directories in the kernel's watch map.",
        )?;
        r.register(Box::new(watched_inodes.clone()))?;
        let unresolved_failed_opens = IntCounter::new(
            "keysentry_failed_opens_unresolved_total",
            "Failed opens reported by the kernel that user space could not resolve to a file.",
        )?;
        r.register(Box::new(unresolved_failed_opens.clone()))?;
        let core_dumps = counter_vec(
            &r,
            "keysentry_core_dumps_total",
            "Processes that dumped core, by whether they were protected.",
            &["protected"],
        )?;
        let tracked_files = IntGauge::new(
            "keysentry_tracked_files",
            "Files in the tracked-file registry: keys seen opened, dumps and derived copies.",
        )?;
        r.register(Box::new(tracked_files.clone()))?;
        let scans = counter_vec(
            &r,
            "keysentry_scans_total",
            "Tracked files scanned for key material, by result (clean, found, error).",
            &["result"],
        )?;
        let alerts_suppressed = counter_vec(
            &r,
            "keysentry_alerts_suppressed_total",
            "Repeated alerts folded into a count (same rule, actor and target).",
            &["rule"],
        )?;
        let incidents = counter_vec(
            &r,
            "keysentry_incidents_total",
            "Incidents closed, by final severity.",
            &["severity"],
        )?;
        let incident_score = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "keysentry_incident_score",
                "Final score of closed incidents.",
            )
            .buckets(vec![
                10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
            ]),
        )?;
        r.register(Box::new(incident_score.clone()))?;
        let flow_stopped = counter_vec(
            &r,
            "keysentry_flow_stopped_total",
            "Taint or tracking that stopped, by reason: exec (a tainted process exec'd holding no tainted descriptor), generation (past [flow] max_generations), allowlist (an allowed reader, or a new key read by the uid that made it), own_key (a user's own key, matched by name only), map_full (the kernel's taint map is full), stale_inode (a watch entry whose inode number a new file reuses), eviction (the tracked-file registry was full), deleted (a tracked file's last name went away).",
            &["reason"],
        )?;
        for reason in sensor_common::STOP_REASONS.iter().chain(&USER_STOP_REASONS) {
            flow_stopped.with_label_values(&[reason]);
        }
        let copies = counter_vec(
            &r,
            "keysentry_copies_total",
            "Files written by tainted processes, by the severity their evidence earned (none: only counted).",
            &["severity"],
        )?;
        let tainted_processes = IntGauge::new(
            "keysentry_tainted_processes",
            "Processes the kernel follows (its taint map), read every 10 s.",
        )?;
        r.register(Box::new(tainted_processes.clone()))?;
        let map_entries = IntGaugeVec::new(
            Opts::new(
                "keysentry_map_entries",
                "Entries in each kernel map, read every 10 s (compare with keysentry_map_capacity).",
            ),
            &["map"],
        )?;
        r.register(Box::new(map_entries.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "keysentry_build_info",
                "Version of keysentry and the running kernel.",
            ),
            &["version", "kernel"],
        )?;
        r.register(Box::new(build_info.clone()))?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel.as_str()])
            .set(1);
        // Known label sets start at zero so dashboards see them.
        for k in EventKind::ALL {
            events.with_label_values(&[k.name()]);
            events_lost.with_label_values(&[k.name(), k.lane().name()]);
        }
        Ok(Arc::new(Self {
            registry: r,
            events,
            events_lost,
            events_malformed,
            alerts,
            probe_attached,
            process_table_entries,
            watched_inodes,
            output_dropped,
            config_reloads,
            build_info,
            unresolved_failed_opens,
            core_dumps,
            tracked_files,
            scans,
            alerts_suppressed,
            incidents,
            incident_score,
            flow_stopped,
            copies,
            tainted_processes,
            map_entries,
        }))
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// A listener that could not bind tries again this often.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// Serves /metrics on its own thread and runtime: detection never waits
/// for it and never depends on it. The listener is bound here first (so it
/// is up when start-up says ready); a bind that fails (the port taken) is a
/// warning, and the thread keeps trying. Each connection gets a header
/// timeout and a lifetime cap, and at most `MAX_CONNECTIONS` are served.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<std::thread::JoinHandle<()>> {
    let first = std::net::TcpListener::bind(addr);
    match &first {
        Ok(_) => tracing::info!("metrics on http://{addr}/metrics"),
        Err(e) => tracing::warn!(
            "metrics listener {addr}: {e}; retrying every {}s (detection runs without it)",
            RETRY_BIND.as_secs()
        ),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("metrics runtime")?;
    let thread = std::thread::Builder::new()
        .name("keysentry-metrics".into())
        .spawn(move || rt.block_on(serve_on(addr, first, metrics)))
        .context("metrics thread")?;
    Ok(thread)
}

async fn serve_on(
    addr: SocketAddr,
    first: std::io::Result<std::net::TcpListener>,
    metrics: Arc<Metrics>,
) {
    let mut bound = first;
    let listener = loop {
        match bound.and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }) {
            Ok(l) => break l,
            Err(e) => tracing::debug!("metrics listener {addr}: {e}"),
        }
        tokio::time::sleep(RETRY_BIND).await;
        bound = std::net::TcpListener::bind(addr);
        if bound.is_ok() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Over the cap: closed at once (a scraper retries; a flood of idle
        // connections never starves the next scrape for long).
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(handle(&req, &metrics)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn handle(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found; try /metrics\n")))
            .unwrap_or_default();
    }
    Response::builder()
        .header("content-type", prometheus::TEXT_FORMAT)
        .body(Full::new(Bytes::from(metrics.render())))
        .unwrap_or_default()
}
