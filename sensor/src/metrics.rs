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
    pub event_bytes: IntCounterVec,
    pub events_lost: IntCounterVec,
    pub events_folded: IntCounterVec,
    pub events_throttled: IntCounterVec,
    pub events_malformed: IntCounterVec,
    pub alerts: IntCounterVec,
    pub probe_attached: IntGaugeVec,
    pub process_table_entries: IntGauge,
    pub watched_inodes: IntGauge,
    pub namespace_inodes: IntGauge,
    pub output_dropped: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub unresolved_failed_opens: IntCounter,
    pub core_dumps: IntCounterVec,
    pub cores_handled: IntCounterVec,
    pub tracked_files: IntGauge,
    pub scans: IntCounterVec,
    pub alerts_suppressed: IntCounterVec,
    pub incidents: IntCounterVec,
    pub incident_score: prometheus::Histogram,
    pub flow_stopped: IntCounterVec,
    pub map_insert_failures: IntCounterVec,
    pub copies: IntCounterVec,
    pub tainted_processes: IntGauge,
    pub map_entries: IntGaugeVec,
    pub map_capacity: IntGaugeVec,
    pub map_evictions: IntCounterVec,
    pub queue_bytes: IntGaugeVec,
    pub queue_evicted: IntCounterVec,
}

/// `reason` labels of `keysentry_flow_stopped_total` counted in user space
/// (the kernel's are `sensor_common::STOP_REASONS`).
pub const USER_STOP_REASONS: [&str; 3] = ["eviction", "deleted", "not_a_copy"];

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
        let event_bytes = counter_vec(
            &r,
            "keysentry_event_bytes_total",
            "Bytes of kernel records received, by kind: what each kind takes of its lane's ring (a record with a rebuilt path takes the bytes its path uses).",
            &["kind"],
        )?;
        let events_lost = counter_vec(
            &r,
            "keysentry_events_lost_total",
            "Kernel events dropped because their lane's ring buffer was full, by kind and lane.",
            &["kind", "lane"],
        )?;
        let events_folded = counter_vec(
            &r,
            "keysentry_events_folded_total",
            "Kernel events counted instead of sent because they repeated one sent less than the fold window ago (same process, executable, object and access), by kind; their count reaches the alert's count.",
            &["kind"],
        )?;
        let events_throttled = counter_vec(
            &r,
            "keysentry_events_throttled_total",
            "Critical kernel events held back by the critical lane's per-process rate limit, by kind (each raises an events-lost alert naming the process).",
            &["kind"],
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
        let namespace_inodes = IntGauge::new(
            "keysentry_namespace_watched_inodes",
            "Of the watched inodes, those scope-\"all\" key paths name in other mount namespaces.",
        )?;
        r.register(Box::new(namespace_inodes.clone()))?;
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
        let cores_handled = counter_vec(
            &r,
            "keysentry_cores_handled_total",
            "Cores of protected processes and key holders keysentry's core handler kept or dropped, by action (redacted, quarantined, dropped, unknown: no spool record).",
            &["action"],
        )?;
        let tracked_files = IntGauge::new(
            "keysentry_tracked_files",
            "Files in the tracked-file registry: keys seen opened, dumps and derived copies.",
        )?;
        r.register(Box::new(tracked_files.clone()))?;
        let scans = counter_vec(
            &r,
            "keysentry_scans_total",
            "Tracked files scanned for key material, by result (clean, found, error), and key files read for their fingerprints (key_book).",
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
        let map_insert_failures = counter_vec(
            &r,
            "keysentry_map_insert_failures_total",
            "Entries a kernel map that decides detection refused (full), inserted by the kernel or by keysentry: each a warning naming what it costs; TAINT_RESERVE (a strong taint, from a key path, a protected process's memory or a dump, refused by both taint maps) also an events-lost alert.",
            &["map"],
        )?;
        for map in sensor_common::INSERT_FAIL_MAPS {
            map_insert_failures.with_label_values(&[map]);
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
                "Entries in each kernel map (UPPERCASE, as in sensor-ebpf/src/maps.rs; counted about every 10 s) and user-space table (lowercase; every 50 ms); compare with keysentry_map_capacity.",
            ),
            &["map"],
        )?;
        r.register(Box::new(map_entries.clone()))?;
        let map_capacity = IntGaugeVec::new(
            Opts::new(
                "keysentry_map_capacity",
                "The bound of each kernel map (its max_entries) and user-space table in keysentry_map_entries.",
            ),
            &["map"],
        )?;
        r.register(Box::new(map_capacity.clone()))?;
        let map_evictions = counter_vec(
            &r,
            "keysentry_map_evictions_total",
            "Entries pushed out of a full table to make room, where keysentry sees it: the user-space tables (tracked_files: the oldest derived file, then the oldest key; fold_alerts: the alerts of the oldest fold keys; pending_copies: the oldest copy waiting for its evidence, decided early). The kernel's LRU maps evict without telling: watch their keysentry_map_entries against keysentry_map_capacity.",
            &["map"],
        )?;
        for map in ["tracked_files", "fold_alerts"] {
            map_evictions.with_label_values(&[map]);
        }
        let queue_bytes = IntGaugeVec::new(
            Opts::new(
                "keysentry_queue_bytes",
                "Bytes of records read from the kernel rings and not yet handled, per lane, read every 50 ms (bounded: 16 MiB in all, bulk at most 8 MiB).",
            ),
            &["lane"],
        )?;
        r.register(Box::new(queue_bytes.clone()))?;
        let queue_evicted = counter_vec(
            &r,
            "keysentry_queue_evicted_total",
            "Bulk events dropped from the user-space queue (newest first) to make room for critical or lifecycle records, by kind, with the repeats the kernel folded into them; also counted in keysentry_events_lost_total{lane=\"bulk\"}.",
            &["kind"],
        )?;
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
            events_folded.with_label_values(&[k.name()]);
            if k.lane() == sensor_common::Lane::Critical {
                events_throttled.with_label_values(&[k.name()]);
            }
            if k.lane() == sensor_common::Lane::Bulk {
                queue_evicted.with_label_values(&[k.name()]);
            }
        }
        for lane in sensor_common::Lane::ALL {
            queue_bytes.with_label_values(&[lane.name()]);
        }
        Ok(Arc::new(Self {
            registry: r,
            events,
            event_bytes,
            events_lost,
            events_folded,
            events_throttled,
            events_malformed,
            alerts,
            probe_attached,
            process_table_entries,
            watched_inodes,
            namespace_inodes,
            output_dropped,
            config_reloads,
            build_info,
            unresolved_failed_opens,
            core_dumps,
            cores_handled,
            tracked_files,
            scans,
            alerts_suppressed,
            incidents,
            incident_score,
            flow_stopped,
            map_insert_failures,
            copies,
            tainted_processes,
            map_entries,
            map_capacity,
            map_evictions,
            queue_bytes,
            queue_evicted,
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

/// How the endpoint proves itself and whom it answers (`[metrics]`
/// tls_* and bearer_token_file), loaded once at start: a bad file refuses
/// to start, naming the field.
#[derive(Clone, Default)]
pub struct Endpoint {
    tls: Option<tokio_rustls::TlsAcceptor>,
    token: Option<Arc<[u8]>>,
}

/// A file named in `[metrics]` that holds a secret: opened without
/// following a final symlink, owned by root, readable by no one else.
fn secret_file(field: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::{
        io::Read,
        os::unix::fs::{MetadataExt, OpenOptionsExt},
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{field}: {}: {e}", path.display()))?;
    let md = f
        .metadata()
        .map_err(|e| format!("{field}: {}: {e}", path.display()))?;
    if !md.is_file() {
        return Err(format!("{field}: {}: not a regular file", path.display()));
    }
    if md.uid() != 0 || md.mode() & 0o077 != 0 {
        return Err(format!(
            "{field}: {}: refused: owner uid {}, mode {:o} (a secret: owner root, no group or other access)",
            path.display(),
            md.uid(),
            md.mode() & 0o7777
        ));
    }
    let mut buf = Vec::new();
    f.by_ref()
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{field}: {}: {e}", path.display()))?;
    Ok(buf)
}

/// The files `[metrics]` names for the endpoint (all optional).
#[derive(Default)]
pub struct EndpointFiles<'a> {
    pub tls_cert: Option<&'a std::path::Path>,
    pub tls_key: Option<&'a std::path::Path>,
    pub tls_client_ca: Option<&'a std::path::Path>,
    pub bearer_token_file: Option<&'a std::path::Path>,
}

impl Endpoint {
    pub fn load(m: &EndpointFiles<'_>) -> Result<Endpoint, String> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        use tokio_rustls::rustls;
        let mut e = Endpoint::default();
        if let Some(path) = m.bearer_token_file {
            let raw = secret_file("metrics.bearer_token_file", path)?;
            let token = String::from_utf8_lossy(&raw).trim().to_string();
            if token.len() < 16 {
                return Err(format!(
                    "metrics.bearer_token_file: {}: the token is shorter than 16 characters",
                    path.display()
                ));
            }
            e.token = Some(Arc::from(token.into_bytes()));
        }
        let (Some(cert), Some(key)) = (m.tls_cert, m.tls_key) else {
            return Ok(e);
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|err| format!("metrics.tls_cert: {}: {err}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "metrics.tls_cert: {}: no certificate in the file",
                cert.display()
            ));
        }
        let key_pem = secret_file("metrics.tls_key", key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|err| format!("metrics.tls_key: {}: {err}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("metrics: TLS: {err}"))?;
        let builder = match m.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|err| format!("metrics.tls_client_ca: {}: {err}", ca.display()))?
                {
                    let c =
                        c.map_err(|err| format!("metrics.tls_client_ca: {}: {err}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|err| format!("metrics.tls_client_ca: {}: {err}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|err| format!("metrics.tls_client_ca: {}: {err}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key_der)
            .map_err(|err| format!("metrics.tls_key: {}: {err}", key.display()))?;
        e.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        Ok(e)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Serves /metrics on its own thread and runtime: detection never waits
/// for it and never depends on it. The listener is bound here first (so it
/// is up when start-up says ready); a bind that fails (the port taken) is a
/// warning, and the thread keeps trying. Each connection gets a header
/// timeout (the TLS handshake included) and a lifetime cap, and at most
/// `MAX_CONNECTIONS` are served.
pub fn serve(
    addr: SocketAddr,
    endpoint: Endpoint,
    metrics: Arc<Metrics>,
) -> Result<std::thread::JoinHandle<()>> {
    let first = std::net::TcpListener::bind(addr);
    let scheme = endpoint.scheme();
    match &first {
        Ok(_) => tracing::info!("metrics on {scheme}://{addr}/metrics"),
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
        .spawn(move || rt.block_on(serve_on(addr, first, endpoint, metrics)))
        .context("metrics thread")?;
    Ok(thread)
}

async fn serve_on(
    addr: SocketAddr,
    first: std::io::Result<std::net::TcpListener>,
    endpoint: Endpoint,
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
            tracing::info!("metrics on {}://{addr}/metrics", endpoint.scheme());
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
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let work = async {
                match &endpoint.tls {
                    None => serve_conn(stream, &endpoint, metrics).await,
                    Some(acceptor) => {
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        serve_conn(tls, &endpoint, metrics).await
                    }
                }
            };
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, work).await;
            drop(slot);
        });
    }
}

/// One HTTP/1 connection on `io` (plain or TLS).
async fn serve_conn<S>(io: S, endpoint: &Endpoint, metrics: Arc<Metrics>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let token = endpoint.token.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let metrics = metrics.clone();
        let token = token.clone();
        async move { Ok::<_, Infallible>(handle(&req, &metrics, token.as_deref())) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Does the request carry `Authorization: Bearer <token>` (compared in
/// constant time)?
fn authorized(req: &Request<Incoming>, token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|t| t.len() == token.len() && bool::from(t.ct_eq(token)))
}

fn handle(
    req: &Request<Incoming>,
    metrics: &Metrics,
    token: Option<&[u8]>,
) -> Response<Full<Bytes>> {
    if token.is_some_and(|t| !authorized(req, t)) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(hyper::header::WWW_AUTHENTICATE, "Bearer")
            .body(Full::new(Bytes::from_static(b"unauthorized\n")))
            .unwrap_or_default();
    }
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
