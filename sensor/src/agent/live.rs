//! The live sensor, from start to stop: privileges, tracefs, BTF, load,
//! the kernel maps filled from the config, attach (tracepoints, then the
//! LSM hooks), the ring reader's thread (`reader.rs`), and the event loop
//! that hands what it read to the `Pipeline`, with its timers: the
//! kernel's counters (`counters.rs`: lost records and the critical-lost
//! flag, an `events-lost` alert; refused inserts; stopped flows), map fill, key-path rescans (inotify and every 30 s), dump
//! directories, pid files and SIGHUP's reload (`reload.rs`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use sensor_common::{InodeKey, KIND_SLOTS, SensorSettings, names::NamePatterns};
use tokio::signal::unix::{SignalKind, signal};

use super::counters;
use crate::{
    agent::folds::KernelFolds,
    agent::pipeline::Pipeline,
    agent::reader::Reader,
    agent::reload::{add_watches, name_patterns, set_cmdline_mode},
    config::Config,
    detect::Policy,
    enrich::context::boot_now,
    enrich::proctab::ProcessTable,
    enrich::protect::Protector,
    enrich::watch::Watcher,
    kernel::btf,
    kernel::control::{KernelControl, KernelMaps, ProtectedMaps},
    kernel::loader,
    kernel::mapstats::MapStats,
    kernel::tracefs,
    metrics::{self, Metrics},
    output::Outputs,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bench only: attach the programs but make them return at once.
    pub empty_programs: bool,
    /// Bench only: one tp_btf dispatcher in place of the `syscalls:`
    /// tracepoints (kernel/loader/bench.rs).
    pub bench_dispatcher: bool,
    /// Bench and diagnosis only: the kernel sends every repeat (fold
    /// window 0).
    pub no_kernel_fold: bool,
    /// Size of the bulk lane's ring buffer in bytes.
    pub ring_bytes: u32,
    /// Tests: kernel maps sized other than built (name, entries).
    pub map_entries: Vec<(String, u32)>,
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

/// Watches the directories of `[[allow]]` programs for files created,
/// written, moved in or changed (re-adding is a no-op).
fn watch_allow_dirs(mut watches: inotify::Watches, dirs: &[PathBuf]) {
    use inotify::WatchMask;
    let mask = WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::ATTRIB;
    for d in dirs {
        if let Err(e) = watches.add(d, mask) {
            tracing::debug!(
                "inotify on allowlisted program directory {}: {e}",
                d.display()
            );
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
    set_cmdline_mode(&cfg);
    // The endpoint's certificate, key and token, before anything loads: a
    // bad file refuses to start, naming the field.
    let endpoint = if cfg.metrics.enabled {
        metrics_endpoint(&cfg.metrics).map_err(|e| anyhow::anyhow!("invalid config: {e}"))?
    } else {
        metrics::Endpoint::default()
    };
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
        // Repeats of an event within a second are counted in the kernel,
        // not sent (agent/folds.rs takes the counts).
        fold_window_ms: if opts.no_kernel_fold {
            0
        } else {
            sensor_common::FOLD_WINDOW_MS
        },
        crit_rate_limit: 1,
        key_holders: cfg.protection.key_holders as u32,
        agent_protected: cfg.agents.protected as u32,
        host_mnt_ns: crate::enrich::nskeys::host_ns("mnt").unwrap_or(0) as u32,
    };
    let mut ebpf = loader::load(&offsets, &settings, opts.ring_bytes, &opts.map_entries)?;
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
        taint_reserve: BpfHashMap::try_from(
            ebpf.take_map("TAINT_RESERVE")
                .context("map TAINT_RESERVE")?,
        )?,
        allowed: BpfHashMap::try_from(ebpf.take_map("ALLOWED").context("map ALLOWED")?)?,
        allow_exes: BpfHashMap::try_from(ebpf.take_map("ALLOW_EXES").context("map ALLOW_EXES")?)?,
        environ: BpfHashMap::try_from(
            ebpf.take_map("ENVIRON_READS")
                .context("map ENVIRON_READS")?,
        )?,
        pipes: BpfHashMap::try_from(
            ebpf.take_map("TAINTED_PIPES")
                .context("map TAINTED_PIPES")?,
        )?,
        verdict_gen: aya::maps::Array::try_from(
            ebpf.take_map("VERDICT_GEN").context("map VERDICT_GEN")?,
        )?,
        raw_devs: BpfHashMap::try_from(ebpf.take_map("RAW_DEVS").context("map RAW_DEVS")?)?,
        agent_socks: BpfHashMap::try_from(
            ebpf.take_map("AGENT_SOCKS").context("map AGENT_SOCKS")?,
        )?,
        code_names: BpfHashMap::try_from(ebpf.take_map("CODE_NAMES").context("map CODE_NAMES")?)?,
    });
    // The key agents' executables: a socket one binds is watched.
    let agents = crate::enrich::agents::Agents::new(&cfg.agents.exes, cfg.agents.protected);
    {
        let mut m: BpfHashMap<&mut MapData, InodeKey, u32> =
            BpfHashMap::try_from(ebpf.map_mut("AGENT_EXES").context("map AGENT_EXES")?)?;
        for k in agents.exe_keys() {
            m.insert(k, 1, 0)?;
        }
    }
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
    if !btf::has_unix_sock(&offsets) {
        skip.push("ks_exit_unix");
    }
    // The io_uring close probe: the submit tracepoint this kernel has (the
    // other name is another kernel version's; without either, or without
    // the offsets, one warning).
    let mut other_kernel = match btf::io_uring_close_probe(&offsets) {
        Some("ks_iou_submit_req") => vec!["ks_iou_submit_sqe"],
        Some(_) => vec!["ks_iou_submit_req"],
        None => {
            skip.push("ks_iou_submit_req");
            vec!["ks_iou_submit_sqe"]
        }
    };
    if opts.bench_dispatcher {
        other_kernel.extend(
            loader::probes::PROBES
                .iter()
                .filter(|p| loader::bench::replaced(&p.hook))
                .map(|p| p.program),
        );
        loader::bench::attach_dispatcher(&mut ebpf)?;
    }
    loader::attach_all(&mut ebpf, &metrics, &skip, &other_kernel)?;
    // The open probes see keysentry's own opens now: stamp the key path
    // entries with their inodes' generations.
    for (k, w) in watcher.entries() {
        crate::enrich::handle::stamp(&w.path, k.dev, k.ino);
    }
    // The code-loading paths (key-holder-tamper): watched from now on, each
    // entry stamped as it goes in.
    let mut code = Watcher::code(cfg.tamper.all_paths());
    let delta = code.scan().without(&watcher);
    delta.push(&mut kernel, false);
    kernel.watch_code_names(code.roots());
    kernel.watch_code_names(&delta.new_dirs);

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
    let allow_ids = crate::detect::allow_ids::AllowIds::new(&cfg);
    {
        kernel.set_allowed(allow_ids.keys(), allow_ids.exes());
        let mut bits: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut("ENFORCE").context("map ENFORCE")?)?;
        bits.set(0, enforce, 0)?;
    }
    let detecting = loader::lsm::attach_lsm(&mut ebpf, &metrics, enforce, lsm.available)?;
    // io_uring opens: lsm/file_open sees every one with its file (into a
    // fixed file slot too); the completion probe then leaves them to it.
    if detecting.iter().any(|l| l == "lsm/file_open") {
        let mut flag: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut("LSM_FILE_OPEN").context("map LSM_FILE_OPEN")?)?;
        flag.set(0, 1, 0)?;
    }

    let lost: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("LOST").context("map LOST")?)?;
    let mut lost_seen = [0u64; KIND_SLOTS as usize];
    let mut critical_flag: Array<MapData, u64> = Array::try_from(
        ebpf.take_map("CRITICAL_LOST")
            .context("map CRITICAL_LOST")?,
    )?;
    let mut kfolds = KernelFolds::take(&mut ebpf, settings.fold_window_ms)?;
    // The fold map is swept every this many ticks.
    const SWEEP_TICKS: u32 = 10;
    let mut ticks = 0u32;
    let stopped: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("FLOW_STOPPED").context("map FLOW_STOPPED")?)?;
    let mut stopped_seen = [0u64; sensor_common::STOP_SLOTS as usize];
    let insert_failed: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
        ebpf.take_map("INSERT_FAILED")
            .context("map INSERT_FAILED")?,
    )?;
    let mut insert_failed_seen = [0u64; sensor_common::INSERT_FAIL_SLOTS as usize];
    let mut map_stats = MapStats::take(&mut ebpf)?;

    let _server = if cfg.metrics.enabled {
        Some(metrics::serve(
            cfg.metrics.listen,
            endpoint,
            metrics.clone(),
        )?)
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

    // The core handler asks the kernel's PROTECTED map whether a crashed
    // process was protected or a key holder (docs/dumps.md).
    let _pin = match ebpf.map("PROTECTED").map(crate::kernel::pin::pin_protected) {
        Some(Ok(pin)) => Some(pin),
        Some(Err(e)) => {
            tracing::warn!(
                "{e:#}: the core handler can tell key holders only by their open key files"
            );
            None
        }
        None => None,
    };
    if let Some(w) = crate::enrich::corepattern::check_installed(&cfg.dumps.state_dir) {
        tracing::warn!("{w}");
    }
    // Attached first, then the snapshot: no process falls between them.
    let protected_map = ProtectedMaps {
        tgids: BpfHashMap::try_from(ebpf.take_map("PROTECTED").context("map PROTECTED")?)?,
        threads: BpfHashMap::try_from(
            ebpf.take_map("PROTECTED_THREADS")
                .context("map PROTECTED_THREADS")?,
        )?,
    };
    let mut pipe = Pipeline::new(
        ProcessTable::snapshot(),
        watcher,
        Policy::from_config(&cfg),
        outputs,
        metrics.clone(),
    )
    .with_protection(protector, kernel.with_protected(protected_map))
    .with_correlation(&cfg);
    // From here on, new files at `[[allow]]` paths reach the kernel too.
    pipe.allow_ids = allow_ids;
    pipe.cx.code = code;
    // Scope-"all" key paths in other mount namespaces: resolved on a
    // thread of their own, applied at each stats tick.
    pipe.cx.ns_keys = crate::enrich::nskeys::NsKeys::start(crate::enrich::nskeys::scoped(&cfg));
    pipe.cx.runtimes = crate::enrich::runtimes::Runtimes::new(&cfg.containers);
    // The block devices under the key stores (raw-read).
    pipe.cx.sync_raw_devs();
    // The sockets key agents already hold (agent-socket-use).
    pipe.cx.agents = agents;
    pipe.cx.sync_agents();
    // The files key holders run (key-holder-tamper): their mappings are
    // read on a thread of their own.
    let holder_code =
        crate::enrich::holder_code::HolderCode::start().context("holder code thread")?;
    let mut allowed_pids = allowed_pids_of(&pipe);
    // Directories of `[[allow]]` programs: a program replaced in place
    // (an upgrade) reaches the kernel's allowlist before it is run.
    let allow_inotify = inotify::Inotify::init().context("inotify")?;
    watch_allow_dirs(allow_inotify.watches(), &pipe.allow_ids.dirs());
    let mut allow_events = allow_inotify.into_event_stream([0u8; 1024])?;
    let (scan_tx, mut scan_results) =
        crate::enrich::scan::start_scanner(metrics.clone(), crate::enrich::scan::scan_keys)?;
    pipe.cx.scan_tx = Some(scan_tx);
    // The key book: the watched key files' fingerprints (read on the
    // scanner's thread; the others when first opened).
    let book = crate::enrich::keybook::start_files(&pipe.cx.watcher);
    let queued = book
        .into_iter()
        .filter(|(p, kdev, ino)| pipe.cx.queue_book(p.clone(), *kdev, *ino))
        .count();
    tracing::info!("key book: reading {queued} watched key files for their fingerprints");
    // Where the processes' cgroups are (unit, container), when a rule
    // selects by it.
    let mut places: std::collections::HashMap<u64, crate::enrich::protect::Where> =
        Default::default();
    if pipe.cx.protector.needs_place() {
        let ids: Vec<u64> = pipe.cx.procs.iter().map(|p| p.cgroup_id).collect();
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(e) = places.entry(id) {
                e.insert(pipe.cx.where_of(id));
            }
        }
    }
    let initial = pipe
        .cx
        .protector
        .initial(&pipe.cx.procs, std::process::id(), &mut |id| {
            places.get(&id).cloned()
        });
    pipe.apply(&initial);
    // Key holders whose key open came before this run.
    let before = crate::enrich::holders_at_start::find(
        &pipe.cx.procs,
        &pipe.cx.watcher,
        &cfg.dumps.state_dir,
    );
    let held: Vec<_> = before
        .iter()
        .filter_map(|(pid, path)| pipe.cx.protector.on_key_open(*pid, path))
        .collect();
    if !held.is_empty() {
        tracing::info!("{} key holders from before this start", held.len());
    }
    pipe.apply(&held);
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
    // The table gauges hold from the start, not from the first tick (the
    // first records may be handled before it).
    metrics
        .process_table_entries
        .set(pipe.cx.procs.len() as i64);
    pipe.update_table_metrics();
    // The ring reader starts last: the pipeline is ready for its records.
    let reader = Reader::start(&mut ebpf, metrics.clone())?;
    let mut watchdog = crate::agent::watchdog::Watchdog::from_env();
    watchdog.ready();

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    // One kernel map counted per step (MapStats::step): each about every
    // 10 s, at most one map's walk (65536 keys for WATCHED) per step.
    let mut stats_tick = tokio::time::interval(Duration::from_millis(500));
    let mut slow_tick = tokio::time::interval(Duration::from_secs(30));
    use futures_util::StreamExt;
    // Records left by a hand-over that stopped to let the loop turn.
    let mut more = false;
    loop {
        tokio::select! {
            _ = reader.ready() => {
                more = reader.hand_over(&mut pipe)?;
            }
            _ = std::future::ready(()), if more => {
                more = reader.hand_over(&mut pipe)?;
            }
            _ = tick.tick() => {
                pipe.tick();
                watchdog.tick(reader.heartbeat());
                // The flag first, then the counters: a critical record lost
                // between the two is in the counts, and sets the flag again.
                let flagged = counters::take_critical_flag(&mut critical_flag, 0);
                let critical = counters::update_lost(&lost, &mut lost_seen, &metrics);
                if flagged || !critical.is_empty() {
                    pipe.critical_lost(&critical);
                }
                counters::update_stopped(&stopped, &mut stopped_seen, &metrics);
                let lost_taints = counters::update_insert_failed(&insert_failed, &mut insert_failed_seen, &metrics);
                if lost_taints > 0 {
                    pipe.taint_lost(lost_taints);
                }
                metrics.process_table_entries.set(pipe.cx.procs.len() as i64);
                pipe.update_table_metrics();
                reader.update_metrics(&metrics);
                // Processes past their critical rate limit (flag 1).
                if counters::take_critical_flag(&mut critical_flag, 1) {
                    kfolds.update_counters(&metrics);
                    let held = kfolds.held();
                    if !held.is_empty() {
                        pipe.critical_held(&held);
                    }
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SWEEP_TICKS) {
                    kfolds.sweep(boot_now(), false, |items| pipe.folded(items));
                    kfolds.update_counters(&metrics);
                }
            }
            ev = inotify.next() => {
                if ev.is_some() {
                    rescan(&mut pipe, &metrics, inotify.watches());
                }
            }
            Some(Ok(ev)) = allow_events.next() => {
                if ev.name.as_deref().is_some_and(|n| pipe.allow_ids.is_program_name(n)) {
                    pipe.allow_ids.mark_stale();
                    pipe.refresh_allowlist(boot_now());
                }
            }
            Some(result) = scan_results.recv() => pipe.scanned(result),
            Some(Ok(ev)) = dump_events.next() => {
                if let (Some(dir), Some(name)) = (dump_dirs.get(&ev.wd), ev.name) {
                    pipe.dump_dir_file(&dir.join(name), true);
                }
            }
            _ = stats_tick.tick() => {
                if map_stats.step(&metrics, &pipe.cx.kernel) {
                    kfolds.update_fill(&metrics, map_stats.lru());
                }
                pipe.cx.apply_ns_keys();
                holder_code.set_pids(pipe.cx.holder_pids(&allowed_pids));
                let found = holder_code.take();
                if !found.is_empty() {
                    pipe.cx.watch_holder_code(found);
                    add_watches(inotify.watches(), &pipe.cx.code.inotify_dirs());
                }
            }
            _ = slow_tick.tick() => {
                rescan(&mut pipe, &metrics, inotify.watches());
                pipe.cx.sync_agents();
                allowed_pids = allowed_pids_of(&pipe);
                let changes = pipe.cx.protector.refresh_pid_files();
                pipe.apply(&changes);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                crate::agent::reload::reload(&mut pipe, &mut cfg, opts.config_path.as_deref(), &mut pats, inotify.watches());
                watch_allow_dirs(allow_events.watches(), &pipe.allow_ids.dirs());
            }
        }
    }
    reader.finish(&mut pipe).await;
    // Every count still in the kernel's fold map goes to its alerts.
    kfolds.sweep(boot_now(), true, |items| pipe.folded(items));
    kfolds.update_counters(&metrics);
    watchdog.stopping();
    pipe.finish();
    // The next start takes them over (`holders_at_start`).
    if let Err(e) =
        crate::enrich::holders_at_start::save(&cfg.dumps.state_dir, &pipe.cx.protector.holders())
    {
        tracing::warn!("saving the key holders: {e:#}");
    }
    tracing::info!("stopping: detaching probes");
    drop(ebpf);
    // Alerts still queued are written before exit (bounded: a stuck output
    // does not hold the shutdown).
    pipe.into_outputs().close_within(Duration::from_secs(5));
    Ok(())
}

/// The live processes of `[[allow]]` programs (genuine executables): their
/// code counts like a key holder's.
fn allowed_pids_of(pipe: &Pipeline) -> Vec<u32> {
    pipe.cx
        .procs
        .live()
        .filter(|p| p.exe_genuine && pipe.policy.names_exe(&p.exe))
        .map(|p| p.pid)
        .collect()
}

/// An inotify event (or the periodic rescan): watch the directories where
/// key paths may appear *before* scanning, so a directory created between
/// the two (`mkdir -p a/b/keys` creates `b` right after `a`) is seen by the
/// scan or by the new watch; repeat while the scan finds more.
fn rescan(pipe: &mut Pipeline, metrics: &Metrics, watches: inotify::Watches) {
    // Bounded: each round adds at least one directory level.
    for _ in 0..64 {
        add_watches(watches.clone(), &pipe.cx.watcher.inotify_dirs());
        add_watches(watches.clone(), &pipe.cx.code.inotify_dirs());
        let code_changed = pipe.cx.scan_code(false);
        let delta = pipe.cx.watcher.scan();
        if delta.entries.is_empty() && delta.appeared.is_empty() && delta.removed.is_empty() {
            if code_changed {
                continue;
            }
            return;
        }
        delta.push(&mut pipe.cx.kernel, false);
        pipe.cx.sync_raw_devs();
        pipe.keys_departed(&delta.removed);
        metrics.watched_inodes.set(pipe.cx.watcher.len() as i64);
    }
}

/// The metrics endpoint's certificate, key and token as `[metrics]` names
/// them (a bad file: the field and why).
pub fn metrics_endpoint(m: &crate::config::Metrics) -> Result<metrics::Endpoint, String> {
    metrics::Endpoint::load(&metrics::EndpointFiles {
        tls_cert: m.tls_cert.as_deref(),
        tls_key: m.tls_key.as_deref(),
        tls_client_ca: m.tls_client_ca.as_deref(),
        bearer_token_file: m.bearer_token_file.as_deref(),
    })
}
