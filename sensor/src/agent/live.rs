//! The live sensor, from start to stop: privileges, tracefs, BTF, load,
//! the kernel maps filled from the config, attach (tracepoints, then the
//! LSM hooks), and the event loop that drains the three ring buffers
//! (`lanes.rs`: at each kernel wake-up, through tokio's `AsyncFd`, and
//! every 50 ms) into the `Pipeline`, with its timers: lost counters and
//! the critical-lost flag (an `events-lost` alert), stopped counters, map
//! fill, key-path rescans (inotify and every 30 s), dump directories, pid
//! files and SIGHUP's reload.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use sensor_common::{
    EventKind, InodeKey, KIND_SLOTS, Lane, SensorSettings, lost_slot,
    names::{NamePattern, NamePatterns, PAT_DIR, PAT_EXACT, PAT_PREFIX, PAT_SUFFIX},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    agent::lanes::Lanes,
    agent::pipeline::Pipeline,
    config::{Config, names::NameMatch},
    detect::Policy,
    enrich::proctab::ProcessTable,
    enrich::protect::Protector,
    enrich::watch::Watcher,
    kernel::btf,
    kernel::control::{KernelControl, KernelMaps, MapStats},
    kernel::loader,
    kernel::tracefs,
    metrics::{self, Metrics},
    output::Outputs,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bench only: attach the programs but make them return at once.
    pub empty_programs: bool,
    /// Size of the bulk lane's ring buffer in bytes.
    pub ring_bytes: u32,
    /// The config file, re-read at SIGHUP (None: the embedded default).
    pub config_path: Option<PathBuf>,
    /// `--backend`: tracepoint forces the tracepoint backend (no LSM).
    pub backend: loader::lsm::Backend,
    /// `--record FILE`, with the config text to put in its header.
    pub record: Option<(PathBuf, String)>,
}

/// Refuses to start without the privileges loading needs.
pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    if !(has(CAP_BPF) && has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
        bail!(
            "keysentry needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load its kernel probes; running as uid {}",
            nix::unistd::geteuid()
        );
    }
    Ok(())
}

/// Compiles the key_name rules into the kernel's pattern table.
pub fn name_patterns(cfg: &Config) -> Result<NamePatterns> {
    let mut t = NamePatterns::default();
    let mut n = 0usize;
    let mut push = |m: NameMatch, rule: usize, exclude: bool| -> Result<()> {
        let (kind, text) = match m {
            NameMatch::Exact(s) => (PAT_EXACT, s),
            NameMatch::Prefix(s) => (PAT_PREFIX, s),
            NameMatch::Suffix(s) => (PAT_SUFFIX, s),
            NameMatch::Dir(s) => (PAT_DIR, s),
        };
        if n >= t.pats.len() {
            bail!("too many key_name patterns");
        }
        let p = NamePattern::new(kind, text.as_bytes(), rule as u8, exclude)
            .with_context(|| format!("key_name[{rule}]: pattern {text:?} cannot be compiled"))?;
        if kind == PAT_DIR {
            t.has_dir = 1;
        }
        t.pats[n] = p;
        n += 1;
        Ok(())
    };
    for (i, k) in cfg.key_name.iter().enumerate() {
        push(k.include(), i, false)?;
        for e in k.excludes() {
            push(e, i, true)?;
        }
    }
    t.count = n as u32;
    Ok(t)
}

/// Watches directories for files created, moved in or out, or deleted
/// (re-adding is a no-op).
fn add_watches(mut watches: inotify::Watches, dirs: &[PathBuf]) {
    use inotify::WatchMask;
    for d in dirs {
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM;
        if let Err(e) = watches.add(d, mask) {
            tracing::warn!("inotify on {}: {e}", d.display());
        }
    }
}

/// Runs the sensor until SIGTERM/SIGINT.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<()> {
    check_privileges()?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut cfg = cfg;
    tracefs::ensure_mounted()?;
    let kbtf = btf::KernelBtf::load()?;
    let offsets = btf::kernel_offsets(&kbtf)?;
    let metrics = Metrics::new()?;
    let settings = SensorSettings {
        self_pid: std::process::id(),
        empty_programs: opts.empty_programs as u32,
        // Wake user space when a sixteenth of a ring is used (the
        // critical lane wakes it at every record).
        wakeup_bytes: opts.ring_bytes / 16,
        lifecycle_wakeup_bytes: loader::LIFECYCLE_RING_BYTES / 16,
        max_generations: cfg.flow.max_generations,
    };
    let mut ebpf = loader::load(&offsets, &settings, opts.ring_bytes)?;
    if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
        tracing::debug!("no kernel log map: {e}");
    }

    // Policy into the kernel before the probes attach.
    let mut pats: Array<MapData, NamePatterns> = Array::try_from(
        ebpf.take_map("NAME_PATTERNS")
            .context("map NAME_PATTERNS")?,
    )?;
    pats.set(0, name_patterns(&cfg)?, 0)?;
    let mut kernel = KernelControl::new(KernelMaps {
        watched: BpfHashMap::try_from(ebpf.take_map("WATCHED").context("map WATCHED")?)?,
        names: BpfHashMap::try_from(
            ebpf.take_map("WATCHED_NAMES")
                .context("map WATCHED_NAMES")?,
        )?,
        tainted: BpfHashMap::try_from(ebpf.take_map("TAINTED").context("map TAINTED")?)?,
        allowed: BpfHashMap::try_from(ebpf.take_map("ALLOWED").context("map ALLOWED")?)?,
        environ: BpfHashMap::try_from(
            ebpf.take_map("ENVIRON_READS")
                .context("map ENVIRON_READS")?,
        )?,
    });
    let protector = Protector::new(&cfg);
    {
        let (exes, comms) = protector.kernel_rules();
        let mut m: BpfHashMap<&mut MapData, InodeKey, u32> = BpfHashMap::try_from(
            ebpf.map_mut("PROTECTED_EXES")
                .context("map PROTECTED_EXES")?,
        )?;
        for (k, v) in exes {
            m.insert(k, v, 0)?;
        }
        let mut m: BpfHashMap<&mut MapData, [u8; 16], u32> = BpfHashMap::try_from(
            ebpf.map_mut("PROTECTED_COMMS")
                .context("map PROTECTED_COMMS")?,
        )?;
        for (k, v) in comms {
            m.insert(k, v, 0)?;
        }
    }
    let mut watcher = Watcher::new(cfg.key_path.iter().map(|k| k.path.clone()).collect());
    let delta = watcher.scan();
    delta.push(&mut kernel, true);
    for m in watcher.missing() {
        tracing::warn!(
            "key path {} does not exist yet: it is watched once it appears",
            m.display()
        );
    }
    metrics.watched_inodes.set(watcher.len() as i64);

    let mut skip: Vec<&str> = if btf::has_io_uring(&offsets) {
        vec![]
    } else {
        vec!["ks_iou_complete"]
    };
    if !btf::has_task_rename(&offsets) {
        skip.push("ks_task_rename");
    }
    loader::attach_all(&mut ebpf, &metrics, &skip)?;
    // The open probes see keysentry's own opens now: stamp the key path
    // entries with their inodes' generations.
    for (k, w) in watcher.entries() {
        crate::enrich::handle::stamp(&w.path, k.dev, k.ino);
    }

    // Enforcement: only where BPF LSM is active and a rule asks for it.
    let lsm = loader::lsm::probe_lsm(&mut ebpf, opts.backend);
    let enforce = loader::lsm::effective_enforce(cfg.enforce_bits(), &lsm);
    tracing::info!(
        "backend: tracepoints detect; BPF LSM {} ({}): {}; enforcing: {}",
        if lsm.available {
            "available"
        } else {
            "unavailable"
        },
        lsm.reason,
        if lsm.available {
            "LSM hooks detect accesses through an fd the reader did not open"
        } else {
            "accesses through an fd the reader did not open are not seen"
        },
        if enforce == 0 {
            "nothing (every rule in observe mode)".to_string()
        } else {
            loader::lsm::rule_names(enforce)
        }
    );
    {
        kernel.set_allowed(&crate::detect::enforce::allow_keys(&cfg));
        let mut bits: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut("ENFORCE").context("map ENFORCE")?)?;
        bits.set(0, enforce, 0)?;
    }
    loader::lsm::attach_lsm(&mut ebpf, &metrics, enforce, lsm.available)?;

    let mut lanes = Lanes::take(&mut ebpf)?;
    let lost: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("LOST").context("map LOST")?)?;
    let mut lost_seen = [0u64; KIND_SLOTS as usize];
    let mut critical_flag: Array<MapData, u64> = Array::try_from(
        ebpf.take_map("CRITICAL_LOST")
            .context("map CRITICAL_LOST")?,
    )?;
    let stopped: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("FLOW_STOPPED").context("map FLOW_STOPPED")?)?;
    let mut stopped_seen = [0u64; sensor_common::STOP_SLOTS as usize];
    let map_stats = MapStats::take(&mut ebpf)?;

    let _server = if cfg.metrics.enabled {
        Some(metrics::serve(cfg.metrics.listen, metrics.clone())?)
    } else {
        None
    };
    let outputs = Outputs::start(&cfg.alerts, metrics.clone())?;
    let inotify = inotify::Inotify::init().context("inotify")?;
    add_watches(inotify.watches(), &watcher.inotify_dirs());
    let mut inotify = inotify.into_event_stream([0u8; 4096])?;
    let dump_inotify = inotify::Inotify::init().context("inotify")?;
    let mut dump_dirs = HashMap::new();
    for d in &cfg.dumps.dirs {
        use inotify::WatchMask;
        match dump_inotify
            .watches()
            .add(d, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO)
        {
            Ok(wd) => {
                dump_dirs.insert(wd, d.clone());
            }
            Err(e) => tracing::debug!("dump directory {}: {e}", d.display()),
        }
    }
    let mut dump_events = dump_inotify.into_event_stream([0u8; 4096])?;

    // Attached first, then the snapshot: no process falls between them.
    let protected_map: BpfHashMap<MapData, u32, u32> =
        BpfHashMap::try_from(ebpf.take_map("PROTECTED").context("map PROTECTED")?)?;
    let mut pipe = Pipeline::new(
        ProcessTable::snapshot(),
        watcher,
        Policy::from_config(&cfg),
        outputs,
        metrics.clone(),
    )
    .with_protection(protector, kernel.with_protected(protected_map))
    .with_correlation(&cfg);
    let (scan_tx, mut scan_results) =
        crate::enrich::scan::start_scanner(metrics.clone(), crate::enrich::scan::scan_keys)?;
    pipe.cx.scan_tx = Some(scan_tx);
    let initial = pipe
        .cx
        .protector
        .initial(&pipe.cx.procs, std::process::id());
    pipe.apply(&initial);
    if let Some((path, text)) = &opts.record {
        pipe.record_to(path, text.clone())?;
        tracing::info!("recording events to {}", path.display());
    }
    // Dumps already on disk are registered (not scanned: they may be big).
    for d in dump_dirs.values() {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            pipe.dump_dir_file(&e.path(), false);
        }
    }
    tracing::info!(
        "ready: watching {} inodes under {} key paths, {} key-name rules, {} processes known, {} protected",
        pipe.cx.watcher.len(),
        cfg.key_path.len(),
        cfg.key_name.len(),
        pipe.cx.procs.len(),
        pipe.cx.protector.len()
    );
    let mut watchdog = crate::agent::watchdog::Watchdog::from_env();
    watchdog.ready();

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut stats_tick = tokio::time::interval(Duration::from_secs(10));
    let mut slow_tick = tokio::time::interval(Duration::from_secs(30));
    use futures_util::StreamExt;
    // Records left by a drain that stopped to let the loop turn.
    let mut more = false;
    loop {
        tokio::select! {
            r = lanes.woken(Lane::Critical) => {
                r?;
                more = lanes.drain(&mut pipe);
            }
            r = lanes.woken(Lane::Lifecycle) => {
                r?;
                more = lanes.drain(&mut pipe);
            }
            r = lanes.woken(Lane::Bulk) => {
                r?;
                more = lanes.drain(&mut pipe);
            }
            _ = std::future::ready(()), if more => {
                more = lanes.drain(&mut pipe);
            }
            _ = tick.tick() => {
                more = lanes.drain(&mut pipe);
                pipe.tick();
                watchdog.tick();
                // The flag first, then the counters: a critical record lost
                // between the two is in the counts, and sets the flag again.
                let flagged = take_critical_flag(&mut critical_flag);
                let critical = update_lost(&lost, &mut lost_seen, &metrics);
                if flagged || !critical.is_empty() {
                    pipe.critical_lost(&critical);
                }
                update_stopped(&stopped, &mut stopped_seen, &metrics);
                metrics.process_table_entries.set(pipe.cx.procs.len() as i64);
            }
            ev = inotify.next() => {
                if ev.is_some() {
                    rescan(&mut pipe, &metrics, inotify.watches());
                }
            }
            Some(result) = scan_results.recv() => pipe.scanned(result),
            Some(Ok(ev)) = dump_events.next() => {
                if let (Some(dir), Some(name)) = (dump_dirs.get(&ev.wd), ev.name) {
                    pipe.dump_dir_file(&dir.join(name), true);
                }
            }
            _ = stats_tick.tick() => {
                map_stats.update(
                    &metrics,
                    pipe.cx.kernel.maps(),
                    pipe.cx.kernel.protected_entries(),
                );
            }
            _ = slow_tick.tick() => {
                rescan(&mut pipe, &metrics, inotify.watches());
                let changes = pipe.cx.protector.refresh_pid_files();
                pipe.apply(&changes);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                reload(&mut pipe, &mut cfg, opts.config_path.as_deref(), &mut pats, inotify.watches());
            }
        }
    }
    lanes.drain_all(&mut pipe);
    watchdog.stopping();
    pipe.finish();
    tracing::info!("stopping: detaching probes");
    drop(lanes);
    drop(ebpf);
    // Alerts still queued are written before exit (bounded: a stuck output
    // does not hold the shutdown).
    pipe.into_outputs().close_within(Duration::from_secs(5));
    Ok(())
}

/// SIGHUP: re-reads and validates the config file and applies it: the
/// allowlist and rules (`[[allow]]`), `[[key_path]]`, `[[key_name]]` and
/// `[alerts]`, `[scoring]` and `[correlation]` (open incidents stay open).
/// `[metrics]`, `[[protected]]`, `[dumps]` and `[flow]` need a restart
/// (logged when they changed). An invalid file changes nothing: the running
/// config stays and the log says why, naming the field.
fn reload(
    pipe: &mut Pipeline,
    cur: &mut Config,
    path: Option<&Path>,
    pats: &mut Array<MapData, NamePatterns>,
    watches: inotify::Watches,
) {
    let metrics = pipe.metrics().clone();
    let count = |result: &str| metrics.config_reloads.with_label_values(&[result]).inc();
    let Some(path) = path else {
        tracing::warn!("SIGHUP: running on the embedded default config, nothing to reload");
        return;
    };
    let invalid = |why: String| {
        // One log line (TOML errors span several).
        let why: Vec<&str> = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        tracing::error!(
            "config reload failed, keeping the running config: {}",
            why.join(" ")
        );
        count("invalid");
    };
    let mut new = match Config::load_trusted(path) {
        Ok(c) => c,
        Err(e) => return invalid(e.to_string()),
    };
    // Everything that can fail first; then apply.
    let new_pats = match name_patterns(&new) {
        Ok(p) => p,
        Err(e) => return invalid(format!("{}: key_name: {e:#}", path.display())),
    };
    let new_outputs = if new.alerts != cur.alerts {
        match Outputs::start(&new.alerts, metrics.clone()) {
            Ok(o) => Some(o),
            Err(e) => return invalid(format!("{}: alerts: {e:#}", path.display())),
        }
    } else {
        None
    };
    if new.key_name != cur.key_name
        && let Err(e) = pats.set(0, new_pats, 0)
    {
        return invalid(format!("{}: key_name: kernel map: {e}", path.display()));
    }
    if let Some(o) = new_outputs {
        // The old outputs finish their queues on their own threads.
        drop(std::mem::replace(&mut pipe.outputs, o));
    }
    let paths = |c: &Config| {
        c.key_path
            .iter()
            .map(|k| k.path.clone())
            .collect::<Vec<_>>()
    };
    if paths(&new) != paths(cur) {
        // Key-path entries go; tracked files (flows) stay.
        pipe.cx.kernel.clear_key_paths();
        pipe.cx.watcher = Watcher::new(paths(&new));
        let delta = pipe.cx.watcher.scan();
        delta.push(&mut pipe.cx.kernel, true);
        pipe.cx
            .metrics
            .watched_inodes
            .set(pipe.cx.watcher.len() as i64);
        add_watches(watches, &pipe.cx.watcher.inotify_dirs());
    }
    pipe.policy = Policy::from_config(&new);
    pipe.cx
        .kernel
        .set_allowed(&crate::detect::enforce::allow_keys(&new));
    pipe.reconfigure_scoring(&new);
    for (field, changed) in [
        ("metrics", new.metrics != cur.metrics),
        ("protected", new.protected != cur.protected),
        ("dumps", new.dumps != cur.dumps),
        ("flow", new.flow != cur.flow),
    ] {
        if changed {
            tracing::warn!("config reload: [{field}] changed; it takes effect at the next restart");
        }
    }
    new.metrics = cur.metrics.clone();
    new.protected = cur.protected.clone();
    new.dumps = cur.dumps.clone();
    new.flow = cur.flow.clone();
    *cur = new;
    count("ok");
    tracing::info!(
        "config reloaded from {}: {} key paths ({} inodes), {} key-name rules, {} allow entries, outputs: {}",
        path.display(),
        cur.key_path.len(),
        pipe.cx.watcher.len(),
        cur.key_name.len(),
        cur.allow.len(),
        pipe.outputs.names().join(", ")
    );
}

/// An inotify event (or the periodic rescan): watch the directories where
/// key paths may appear *before* scanning, so a directory created between
/// the two (`mkdir -p a/b/keys` creates `b` right after `a`) is seen by the
/// scan or by the new watch; repeat while the scan finds more.
fn rescan(pipe: &mut Pipeline, metrics: &Metrics, watches: inotify::Watches) {
    // Bounded: each round adds at least one directory level.
    for _ in 0..64 {
        add_watches(watches.clone(), &pipe.cx.watcher.inotify_dirs());
        let delta = pipe.cx.watcher.scan();
        if delta.entries.is_empty() && delta.appeared.is_empty() && delta.removed.is_empty() {
            return;
        }
        delta.push(&mut pipe.cx.kernel, false);
        pipe.keys_departed(&delta.removed);
        metrics.watched_inodes.set(pipe.cx.watcher.len() as i64);
    }
}

/// The kernel's LOST counters (per lane and kind; each kind travels in one
/// lane) into keysentry_events_lost_total{kind,lane}; returns the critical
/// records lost since the last call, per kind.
fn update_lost(
    lost: &PerCpuArray<MapData, u64>,
    seen: &mut [u64],
    metrics: &Metrics,
) -> Vec<(EventKind, u64)> {
    let mut critical = Vec::new();
    for kind in EventKind::ALL {
        let lane = kind.lane();
        let Ok(values) = lost.get(&lost_slot(lane, kind), 0) else {
            continue;
        };
        let total: u64 = values.iter().sum();
        let prev = seen[kind as usize];
        if total > prev {
            metrics
                .events_lost
                .with_label_values(&[kind.name(), lane.name()])
                .inc_by(total - prev);
            seen[kind as usize] = total;
            if lane == Lane::Critical {
                critical.push((kind, total - prev));
            }
        }
    }
    critical
}

/// Reads and clears the kernel's sticky critical-lost flag.
fn take_critical_flag(flag: &mut Array<MapData, u64>) -> bool {
    match flag.get(&0, 0) {
        Ok(0) => false,
        Ok(_) => {
            if let Err(e) = flag.set(0, 0, 0) {
                tracing::warn!("clearing CRITICAL_LOST: {e}");
            }
            true
        }
        Err(e) => {
            tracing::warn!("reading CRITICAL_LOST: {e}");
            false
        }
    }
}

/// The kernel's FLOW_STOPPED counters into keysentry_flow_stopped_total.
fn update_stopped(stopped: &PerCpuArray<MapData, u64>, seen: &mut [u64], metrics: &Metrics) {
    for (i, reason) in sensor_common::STOP_REASONS.iter().enumerate() {
        let Ok(values) = stopped.get(&(i as u32), 0) else {
            continue;
        };
        let total: u64 = values.iter().sum();
        if total > seen[i] {
            metrics
                .flow_stopped
                .with_label_values(&[reason])
                .inc_by(total - seen[i]);
            seen[i] = total;
        }
    }
}
