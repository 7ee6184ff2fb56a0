//! The pipeline, everything after the ring buffer, as a composition of
//! the stages: `handle` takes one ring-buffer record, live (`live.rs`) or
//! recorded (`replay.rs`), through decode (`decode/`), keeps the enrich
//! stage's state (`Context`: process table, protection, registry) up to
//! date on exec, fork, rename and exit, and hands every other record to
//! its rule family (`detect_keys`, `detect_memory`, `environ`,
//! `detect_dumps`/`dumps`, `flows`, `sends`, `renames`, `fdaccess`,
//! `enforce`, `keyscan`). The rules raise alerts into the context; after
//! each record `emit` scores each (`scoring.rs`, `correlate/score.rs`), correlates it into an
//! incident (`correlate.rs`) and hands it to the outputs (`sinks.rs`).
//! The recording hooks are `recording.rs`.

use std::sync::Arc;

use sensor_common::{EventKind, KIND_SLOTS, MATCH_TRACKED};

use crate::{
    agent::folds::{FoldedAlerts, Settled},
    agent::record::{Record, Recorder},
    alert::Alert,
    correlate::score::ScoringConfig,
    correlate::{Correlator, Lineage, Out},
    detect::Policy,
    detect::allow_ids::AllowIds,
    detect::dumps::Dumps,
    detect::enforce::DeniedThreads,
    detect::environ::Environ,
    detect::flows::Flows,
    detect::memory::Memory,
    enrich::context::{Context, boot_now},
    enrich::facts::TrackedAccess,
    enrich::proctab::ProcessTable,
    enrich::protect::{Change, Protector},
    enrich::watch::Watcher,
    ingest::decode::{self, Event},
    kernel::control::KernelControl,
    metrics::Metrics,
    output::Outputs,
};

/// Everything after the ring buffer: decode, enrich, detect, output.
pub struct Pipeline {
    /// The enrich stage's state, shared by the rules.
    pub cx: Context,
    pub policy: Policy,
    pub outputs: Outputs,
    /// keysentry_events_total{kind} and keysentry_event_bytes_total{kind},
    /// looked up once.
    events_by_kind: Vec<prometheus::IntCounter>,
    bytes_by_kind: Vec<prometheus::IntCounter>,
    /// The rule families' own state.
    memory: Memory,
    environ: Environ,
    dumps: Dumps,
    flows: Flows,
    units: crate::detect::units::UnitChecks,
    /// Threads a BPF LSM hook just denied (their follow-up failures are
    /// not alerted again).
    denied: DeniedThreads,
    pub(crate) scoring: ScoringConfig,
    correlator: Correlator,
    /// The alerts of each kernel fold key's last record (`agent/folds.rs`).
    kfolds: FoldedAlerts,
    pub(crate) recorder: Option<Recorder>,
    /// The kernel's allowlist following `[[allow]]` programs replaced in
    /// place (live only: set at start and reload).
    pub allow_ids: AllowIds,
}

/// The correlate/score stage (the rest of the pipeline calls `emit` with
/// each alert a rule makes); the recording hooks are `recording.rs`'s.
impl Pipeline {
    /// Correlation, scoring and recording from the config.
    pub fn with_correlation(mut self, cfg: &crate::config::Config) -> Self {
        self.scoring = cfg.scoring.clone();
        self.correlator = Correlator::new(cfg.correlation.clone(), cfg.scoring.clone());
        self
    }

    /// SIGHUP: new `[scoring]` and `[correlation]`; open incidents and
    /// folds are kept.
    pub fn reconfigure_scoring(&mut self, cfg: &crate::config::Config) {
        self.scoring = cfg.scoring.clone();
        self.correlator
            .reconfigure(cfg.correlation.clone(), cfg.scoring.clone());
    }

    /// The agent's clock: closes fold and incident windows and expires
    /// what waits for a writer or a helper (recorded when anything was
    /// pending, so a replay does the same at the same point).
    /// The user-space tables' fill and bounds into
    /// `keysentry_map_entries{map}` and `keysentry_map_capacity{map}`
    /// (lowercase names), and their evictions into
    /// `keysentry_map_evictions_total{map}` (the registry counts its own).
    /// A few lengths: cheap enough for every tick.
    pub fn update_table_metrics(&mut self) {
        let m = &self.cx.metrics;
        for (map, len, cap) in [
            ("process_table", self.cx.procs.len(), None),
            (
                "tracked_files",
                self.cx.registry.len(),
                Some(crate::enrich::track::MAX_TRACKED),
            ),
            (
                "pending_copies",
                self.flows.pending_len(),
                Some(crate::detect::flows::MAX_PENDING),
            ),
            (
                "fold_alerts",
                self.kfolds.len(),
                Some(crate::agent::folds::ALERTS_MAX),
            ),
            (
                "incidents",
                self.correlator.open_incidents(),
                Some(crate::correlate::MAX_OPEN),
            ),
        ] {
            m.map_entries.with_label_values(&[map]).set(len as i64);
            if let Some(cap) = cap {
                m.map_capacity.with_label_values(&[map]).set(cap as i64);
            }
        }
        let evicted = self.kfolds.take_evicted();
        if evicted > 0 {
            m.map_evictions
                .with_label_values(&["fold_alerts"])
                .inc_by(evicted);
        }
    }

    pub fn tick(&mut self) {
        let now = boot_now();
        self.refresh_allowlist(now);
        if !self.correlator.pending() && !self.timers_pending() {
            return;
        }
        self.tick_at(now);
        self.record(Record::Tick(now));
        if let Some(r) = self.recorder.as_mut() {
            let _ = r.flush();
        }
    }

    pub(crate) fn tick_at(&mut self, now_ns: u64) {
        self.expire(now_ns);
        self.emit_raised();
        let mut out = Vec::new();
        self.correlator.tick(now_ns, &mut out);
        self.deliver(out);
    }

    /// Shutdown or the end of a replay: report folds, close incidents.
    pub fn finish(&mut self) {
        self.flows.flush(&mut self.cx);
        self.dumps.expire(&mut self.cx, &self.policy, 0, true);
        self.environ.expire(&mut self.cx, 0, true);
        self.units.expire(&mut self.cx, &self.policy, 0, true);
        self.emit_raised();
        let mut out = Vec::new();
        self.correlator.flush(&mut out);
        self.deliver(out);
        self.record_with(None);
        if let Some(r) = self.recorder.as_mut() {
            let _ = r.flush();
        }
    }

    fn deliver(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Alert(a) => self.outputs.send(a),
                Out::Incident(i) => {
                    if i.status == "closed" {
                        self.cx
                            .metrics
                            .incidents
                            .with_label_values(&[i.severity.as_str()])
                            .inc();
                        self.cx.metrics.incident_score.observe(i.score as f64);
                    }
                    self.outputs.send_incident(i)
                }
            }
        }
    }

    /// The actor and its ancestors, nearest first.
    fn tree(&self, pid: u32) -> Vec<(u32, u64)> {
        let mut v = Vec::new();
        let mut cur = Some(pid);
        while let Some(p) = cur.and_then(|c| self.cx.procs.get(c)) {
            v.push((p.pid, p.start_ns));
            if v.len() > 16 || p.ppid == 0 || p.ppid == p.pid {
                break;
            }
            cur = Some(p.ppid);
        }
        if v.is_empty() {
            v.push((pid, 0));
        }
        v
    }

    /// The alerts the rules raised, in order, each through `emit`.
    pub(crate) fn emit_raised(&mut self) {
        for (alert, ts) in self.cx.take_raised() {
            self.emit(alert, ts);
        }
        self.flows.prune(&mut self.cx);
    }

    /// The hand-off point between rules and outputs: place the process
    /// (cgroup, unit, container), score the alert from its context,
    /// correlate it into an incident, fold repeats, output.
    pub fn emit(&mut self, mut alert: Alert, now_ns: u64) {
        self.cx.place(&mut alert);
        let target_protected = self.score(&mut alert, now_ns);
        let flow = alert.flow.as_ref();
        if alert.lineage.is_none() {
            // Tracked files: the origin of the lineage (origin first).
            alert.lineage = flow
                .and_then(|f| f.lineage.first())
                .map(|s| format!("tracked-{}", s.id));
        }
        let mut extra_keys = Vec::new();
        if let Some(d) = alert.flow.as_ref().and_then(|f| f.dumped.as_ref()) {
            // A dump's copies and sends join the dumped process's incident.
            extra_keys.push(format!("proc:{}", d.pid));
        }
        let lin = Lineage {
            tree: self.tree(alert.process.pid),
            target_protected,
            extra_keys,
        };
        let rule = alert.rule;
        let mut out = Vec::new();
        if !self.correlator.add(alert, now_ns, &lin, &mut out) {
            self.cx
                .metrics
                .alerts_suppressed
                .with_label_values(&[rule])
                .inc();
        }
        self.deliver(out);
    }
}

impl Pipeline {
    pub fn new(
        procs: ProcessTable,
        watcher: Watcher,
        policy: Policy,
        outputs: Outputs,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            events_by_kind: (0..KIND_SLOTS)
                .map(|i| {
                    let name = EventKind::from_u32(i).map_or("unknown", |k| k.name());
                    metrics.events.with_label_values(&[name])
                })
                .collect(),
            bytes_by_kind: (0..KIND_SLOTS)
                .map(|i| {
                    let name = EventKind::from_u32(i).map_or("unknown", |k| k.name());
                    metrics.event_bytes.with_label_values(&[name])
                })
                .collect(),
            cx: Context::new(procs, watcher, metrics),
            policy,
            outputs,
            memory: Memory::default(),
            environ: Environ::default(),
            dumps: Dumps::default(),
            units: Default::default(),
            flows: Flows::default(),
            denied: DeniedThreads::default(),
            scoring: ScoringConfig::default(),
            correlator: Correlator::new(Default::default(), ScoringConfig::default()),
            kfolds: FoldedAlerts::default(),
            recorder: None,
            allow_ids: AllowIds::default(),
        }
    }

    /// A directory holding an `[[allow]]` program changed, or a check is
    /// due: new identities go to the kernel at once.
    pub fn refresh_allowlist(&mut self, now_ns: u64) {
        if let Some((keys, exes)) = self.allow_ids.due(now_ns) {
            // In the kernel before the log line says so (tests wait for it).
            self.cx.kernel.add_allowed(&keys, &exes);
            let ids: Vec<String> = exes
                .iter()
                .map(|k| format!("{}:{}", k.dev, k.ino))
                .collect();
            tracing::info!(
                "allowlist: {} replaced [[allow]] executable(s) added to the kernel's allowlist ({} entries; dev:inode {})",
                exes.len(),
                keys.len(),
                ids.join(", ")
            );
        }
    }

    /// The outputs, to close at shutdown.
    pub fn into_outputs(self) -> Outputs {
        self.outputs
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.cx.metrics
    }

    /// Whether anything waits for a writer, a helper or a reader's exit.
    fn timers_pending(&self) -> bool {
        self.dumps.pending()
            || self.flows.pending()
            || self.environ.pending()
            || self.units.pending()
    }

    /// Timers, in event time: pipe-helper crashes, user-space dumps,
    /// copies and environment reads that waited long enough by `now_ns`.
    fn expire(&mut self, now_ns: u64) {
        if self.dumps.pending() {
            self.dumps.expire(&mut self.cx, &self.policy, now_ns, false);
        }
        if self.flows.pending() {
            self.flows.expire(&mut self.cx, now_ns);
        }
        if self.environ.pending() {
            self.environ.expire(&mut self.cx, now_ns, false);
        }
        if self.units.pending() {
            self.units.expire(&mut self.cx, &self.policy, now_ns, false);
        }
    }

    /// Protection decisions, with the kernel that enforces them.
    pub fn with_protection(mut self, protector: Protector, kernel: KernelControl) -> Self {
        self.cx.protector = protector;
        self.cx.kernel = kernel;
        self
    }

    /// Protection changes, carried out in the kernel.
    pub fn apply(&mut self, changes: &[Change]) {
        self.cx.apply(changes);
    }

    /// A file that appeared in a crash handler's dump directory (`scan`: a
    /// new one, for the key scanner).
    pub fn dump_dir_file(&mut self, path: &std::path::Path, scan: bool) {
        self.dumps.dump_dir_file(&mut self.cx, path, scan);
        self.emit_raised();
    }

    /// Critical records the kernel held back because their process was
    /// past its rate limit, per (tgid, kind): `events-lost` per process.
    pub fn critical_held(&mut self, held: &[(u32, EventKind, u64)]) {
        crate::detect::lost::critical_held(&mut self.cx, held);
        self.emit_raised();
    }

    /// Critical records the kernel could not deliver (the sticky flag, and
    /// the counts per kind since the last call): `events-lost`.
    pub fn critical_lost(&mut self, lost: &[(EventKind, u64)]) {
        crate::detect::lost::critical_lost(&mut self.cx, lost);
        self.emit_raised();
    }

    /// Strong taints the kernel could not record (both taint maps full).
    pub fn taint_lost(&mut self, n: u64) {
        crate::detect::lost::taint_lost(&mut self.cx, n);
        self.emit_raised();
    }

    /// Key files the key-path rescan no longer finds.
    pub fn keys_departed(&mut self, removed: &[sensor_common::InodeKey]) {
        self.cx.keys_departed(removed);
        self.emit_raised();
    }

    /// The scanner finished a file: `key-material` when it held keys.
    /// Recorded with the time it was handled, so a replay raises the same
    /// alert at the same point.
    pub fn scanned(&mut self, r: crate::enrich::scan::ScanResult) {
        let rec = crate::agent::record::ScanRec {
            at_ns: boot_now(),
            id: r.id,
            path: r.path.to_string_lossy().into_owned(),
            book: r.book,
            report: r.report,
        };
        self.scanned_at(rec.clone());
        self.record(Record::Scan(rec));
    }

    /// A scanner result, live or from a recording.
    pub(crate) fn scanned_at(&mut self, r: crate::agent::record::ScanRec) {
        let s = crate::detect::keyscan::Scanned {
            at_ns: r.at_ns,
            id: r.id,
            path: r.path,
            book: r.book,
            report: r.report,
        };
        crate::detect::keyscan::scanned(&mut self.cx, &s);
        self.emit_raised();
    }

    /// One ring-buffer record through decode, enrich, detect, correlate,
    /// score and output; with `--record`, the record and the /proc reads
    /// its handling made are written to the recording first.
    pub fn handle(&mut self, bytes: &[u8]) {
        self.handle_event(bytes);
        if self.recorder.is_some() {
            self.record_event(bytes);
        }
    }

    pub(crate) fn handle_event(&mut self, bytes: &[u8]) {
        let fold = decode::fold_tag(bytes);
        let ev = match decode::decode(bytes) {
            Ok(ev) => ev,
            Err(e) => {
                self.cx
                    .metrics
                    .events_malformed
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::debug!("skipped malformed record: {e}");
                return;
            }
        };
        if self.policy.needs_place()
            && let Some(id) = decode::cgroup_id(bytes)
            && !self.policy.knows_place(id)
        {
            let at = self.cx.where_of(id);
            self.policy.learn_place(id, &at);
        }
        let slot = ev.kind() as usize % KIND_SLOTS as usize;
        self.events_by_kind[slot].inc();
        self.bytes_by_kind[slot].inc_by(bytes.len() as u64);
        let (cx, policy) = (&mut self.cx, &self.policy);
        match ev {
            Event::Exec {
                task,
                ppid,
                start_ns,
                argv,
                exe,
                exe_id,
                exec_flags,
            } => {
                // Its close-on-exec descriptors are gone: its copies are
                // decided and scanned now, like at a close or an exit.
                if self.flows.pending() {
                    self.flows.writer_exec(cx, task.pid);
                    self.emit_raised();
                }
                let cx = &mut self.cx;
                let genuine = match (&exe, exe_id) {
                    (Some(path), Some(id)) => cx.exe_ids.genuine(&mut cx.view, path, id),
                    // A recording's record from before exec records had
                    // the identity: the path as it was trusted then.
                    _ => exec_flags & sensor_common::EXEC_NO_IDENTITY != 0,
                };
                let mut allow_bypass = crate::enrich::proctab::exec_bypass(exec_flags);
                // An allowlisted path whose file the kernel did not know
                // at exec (replaced in place since the allowlist was read):
                // its loader variables were not checked, so no allowance
                // (fail closed), and the kernel learns the new file.
                if genuine
                    && exec_flags
                        & (sensor_common::EXEC_ALLOWLISTED | sensor_common::EXEC_NO_IDENTITY)
                        == 0
                    && exe.as_deref().is_some_and(|e| self.policy.names_exe(e))
                {
                    allow_bypass = Some(Arc::from(crate::detect::allow_ids::UNKNOWN_AT_EXEC));
                    self.allow_ids.mark_stale();
                }
                // A container's program an `[[allow]]` names by its path
                // inside the container: is that path its executable there?
                let in_root = !genuine
                    && exec_flags & sensor_common::EXEC_GUEST != 0
                    && match (&exe, exe_id) {
                        (Some(path), Some(id)) if self.policy.names_container_exe(path) => {
                            cx.exe_ids.in_root(&mut cx.view, task.cgroup_id, path, id)
                        }
                        _ => false,
                    };
                let image = crate::enrich::proctab::Image {
                    argv,
                    exe,
                    exe_genuine: genuine,
                    exe_in_root: in_root,
                    allow_bypass,
                };
                cx.procs.exec(&task, ppid, start_ns, image);
                if let Some(n) = &cx.ns_keys {
                    n.exec(task.pid);
                }
                if ppid == 2 && !self.dumps.helpers.contains_key(&task.pid) {
                    self.dumps.usermode_helper_exec(cx, task.pid);
                }
                let at = if cx.protector.needs_place() {
                    let id = cx.procs.get(task.pid).map_or(0, |p| p.cgroup_id);
                    Some(cx.where_of(id))
                } else {
                    None
                };
                let change = cx
                    .procs
                    .get(task.pid)
                    .and_then(|p| cx.protector.on_exec(p, at.as_ref()));
                if let Some(c) = change {
                    cx.apply(&[c]);
                }
                crate::detect::tamper::exec(cx, &self.policy, &task, exec_flags);
            }
            Event::Fork {
                parent,
                child_pid,
                child_start_ns,
            } => {
                cx.procs.fork(&parent, child_pid, child_start_ns);
                cx.protector.on_fork(parent.pid, child_pid);
            }
            Event::Rename { task, comm } => {
                cx.procs.rename(task.pid, &comm);
                if let Some(c) = cx.protector.on_rename(task.pid, &comm) {
                    cx.apply(&[c]);
                }
            }
            Event::Exit {
                task,
                exit_code,
                environ_reads,
            } => {
                if self.environ.pending() {
                    self.environ.reader_exited(cx, task.pid, environ_reads);
                }
                if exit_code & 0x80 != 0 {
                    self.dumps.core_dumped(cx, policy, &task, exit_code & 0x7f);
                }
                if !self.dumps.pending_user.is_empty() {
                    self.dumps.writer_exited(cx, task.pid);
                }
                if self.flows.pending() {
                    self.flows.writer_exited(cx, task.pid);
                }
                if self.dumps.is_helper(task.pid) {
                    self.dumps.helper_exited(cx, policy, task.pid);
                }
                // Scored and correlated while the process is still known.
                self.emit_raised();
                let cx = &mut self.cx;
                self.denied.exited(task.tid);
                cx.procs.exit(task.pid);
                cx.protector.on_exit(task.pid);
                self.memory.exited(task.pid);
                cx.mem_readers.remove(&task.pid);
                self.dumps.exited(task.pid);
            }
            // The exit tracepoint's view of an open an LSM hook denied.
            Event::Open(rec) if rec.failed && self.denied.take_open(rec.task.tid, rec.ret) => {}
            Event::Open(rec) if rec.proc_file != 0 => {
                self.memory
                    .proc_file_open(cx, policy, &mut self.environ, &rec)
            }
            Event::Open(rec) if rec.raw != 0 => crate::detect::raw_read::raw_open(cx, policy, &rec),
            Event::Open(rec) if rec.matched & sensor_common::MATCH_CODE != 0 => {
                crate::detect::tamper::code_write(cx, policy, &mut self.units, &rec)
            }
            Event::Open(rec) if rec.matched & MATCH_TRACKED != 0 => {
                let a = TrackedAccess {
                    task: &rec.task,
                    kdev: rec.dev,
                    ino: rec.ino,
                    igen: rec.igen,
                    watch_id: rec.watch_id,
                    flags: rec.flags,
                    via: "open",
                };
                self.flows.tracked_open(cx, policy, &a)
            }
            Event::Open(rec) => crate::detect::keys::key_open(cx, policy, &rec),
            Event::Mem(m)
                if self
                    .denied
                    .follows_denial(m.task.tid, cx.procs.tgid_of(m.target), m.ret) => {}
            Event::Mem(m) => self.memory.mem_access(cx, policy, &mut self.environ, &m),
            // The core file the kernel opened for a protected process
            // (observe mode): its identity, for the core-dump alert.
            Event::Denied(d) if d.observed => self.dumps.core_file_opened(&d),
            Event::Denied(d) => self.denied.denied(cx, policy, &d),
            Event::FdAccess(r) => {
                crate::detect::fdaccess::fd_access(cx, policy, &mut self.flows, &r)
            }
            Event::Signal(s) => self.dumps.dump_signal(cx, policy, &s),
            Event::DumpConfig(d) if d.what == sensor_common::DCFG_RELEASE_AGENT => {
                crate::detect::escape::release_agent(cx, policy, &d)
            }
            Event::DumpConfig(d) if crate::detect::escape::from_guest(&d) => {
                crate::detect::escape::dump_sysctl(cx, policy, &d)
            }
            Event::DumpConfig(d) if crate::detect::kernel_reader::is_back_door(d.what) => {
                crate::detect::kernel_reader::back_door(cx, policy, &d)
            }
            Event::DumpConfig(d)
                if matches!(
                    d.what,
                    sensor_common::DCFG_SWAPON | sensor_common::DCFG_SYS_POWER
                ) =>
            {
                crate::detect::swap::swap_config(cx, policy, &d)
            }
            Event::DumpConfig(d) => self.dumps.dump_config(cx, policy, &d),
            Event::KernelReader(r) => crate::detect::kernel_reader::kernel_reader(cx, policy, &r),
            Event::Sysctl(r) => crate::detect::guards::sysctl(cx, policy, &r),
            Event::AgentSocket(r) => crate::detect::agent_socket::agent_socket(cx, policy, &r),
            Event::Keyring(r) => crate::detect::keyring::keyring(cx, policy, &r),
            Event::FileWrite(w) => self.flows.file_write(cx, policy, &mut self.dumps, &w),
            Event::FileClose(c) => self.flows.file_closed(cx, &mut self.dumps, &c),
            Event::NetSend(n) => crate::detect::sends::net_send(cx, policy, &n),
            Event::PathChange(p) => {
                crate::detect::renames::path_change(cx, policy, &mut self.units, &p)
            }
        }
        match fold {
            Some(f) => self.emit_folded(f),
            None => self.emit_raised(),
        }
    }

    /// The alerts a record with a kernel fold tag raised: each stands for
    /// itself and the identical events the kernel folded since the key's
    /// previous record; kept for the counts the sweep takes later.
    fn emit_folded(&mut self, f: decode::FoldRef) {
        let raised = self.cx.take_raised();
        self.kfolds
            .remember(f.key, f.ts, raised.iter().map(|(a, _)| a.clone()).collect());
        let extra = u32::try_from(f.folded).unwrap_or(u32::MAX);
        for (mut a, ts) in raised {
            a.count = a.count.max(1).saturating_add(extra);
            self.emit(a, ts);
        }
        self.flows.prune(&mut self.cx);
    }

    /// Windows of the kernel's FOLD map that closed with nothing sent after
    /// them (`KernelFolds::sweep`): their counts go to the alerts of their
    /// keys' last records. Returns the keys no record of which was handled
    /// yet (kept in the kernel for a later sweep). Recorded.
    pub fn folded(&mut self, items: &[Settled]) -> Vec<sensor_common::FoldKey> {
        let (known, unknown): (Vec<Settled>, Vec<Settled>) =
            items.iter().partition(|(k, _)| self.kfolds.knows(k));
        if !known.is_empty() {
            let now = boot_now();
            self.folded_at(now, &known);
            self.record(Record::Folded(now, known));
        }
        unknown.into_iter().map(|(k, _)| k).collect()
    }

    /// Counts the sweep took, live or from a recording.
    pub(crate) fn folded_at(&mut self, now_ns: u64, items: &[Settled]) {
        for (key, n) in items {
            let alerts = self.kfolds.take(key);
            if *n == 0 {
                continue;
            }
            let n = u32::try_from(*n).unwrap_or(u32::MAX);
            for mut a in alerts {
                a.count = n;
                a.ts = self.cx.wall(now_ns);
                self.emit(a, now_ns);
            }
        }
        self.kfolds.prune_old(now_ns);
    }
}
