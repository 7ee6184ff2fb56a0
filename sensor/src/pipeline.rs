//! The pipeline, everything after the ring buffer: `Pipeline` holds the
//! stages' state (process table, protection, policy, tracked-file
//! registry, outputs). `handle` takes one ring-buffer record, live
//! (`live.rs`) or recorded (`replay.rs`), through decode and hands it to
//! its handler: exec, fork, rename and exit here (process table,
//! protection), the rules in `detect_keys.rs`, `detect_memory.rs`,
//! `detect_dumps.rs`, `flows.rs`, `renames.rs`, `fdaccess.rs` and
//! `enforce.rs`. Every alert a rule makes comes back to `emit`, which
//! scores it (`score.rs`), correlates it into an incident (`correlate.rs`)
//! and hands it to the outputs. The clock is here too; the recording hooks
//! are `recording.rs`, the reads of the live system `sysview.rs`.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use sensor_common::{EventKind, KIND_SLOTS, MATCH_TRACKED};

use crate::{
    alert::{Alert, Origin, Target, rfc3339},
    correlate::{Correlator, Lineage, Out},
    decode::{self, Event},
    detect::Policy,
    kernelmaps::{KernelMaps, count_keys},
    metrics::Metrics,
    proctab::ProcessTable,
    protect::{Change, Protector},
    record::{Record, Recorder},
    rules::Rule,
    score::{self, Context as ScoreContext, ScoringConfig},
    sinks::Outputs,
    sysview::SystemView,
    track::Registry,
    watch::Watcher,
};

/// Clock conversion: kernel boot-time ns to wall-clock ns since the epoch.
pub(crate) struct Clock {
    pub(crate) offset_ns: i128,
}

impl Clock {
    fn new() -> Self {
        use nix::time::{ClockId, clock_gettime};
        let ns = |c| {
            clock_gettime(c)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        Self {
            offset_ns: ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME),
        }
    }

    pub(crate) fn wall(&self, boot_ns: u64) -> String {
        rfc3339(self.offset_ns + boot_ns as i128)
    }
}

/// Everything after the ring buffer: decode, enrich, detect, output.
pub struct Pipeline {
    pub procs: ProcessTable,
    pub watcher: Watcher,
    pub policy: Policy,
    pub outputs: Outputs,
    pub metrics: Arc<Metrics>,
    pub(crate) host: String,
    pub(crate) clock: Clock,
    /// keysentry_events_total{kind}, looked up once.
    events_by_kind: Vec<prometheus::IntCounter>,
    pub protector: Protector,
    /// The kernel's PROTECTED map (None when replaying without a kernel).
    protected_map: Option<BpfHashMap<MapData, u32, u32>>,
    /// actor pid -> protected targets whose maps/smaps/status it read.
    pub(crate) recon: HashMap<u32, HashSet<u32>>,
    /// Dumps, keys seen opened and their derived copies.
    pub registry: Registry,
    /// The kernel maps user space writes (None when replaying).
    pub(crate) kmaps: Option<KernelMaps>,
    /// actor pid -> the protected process whose memory it read.
    pub(crate) mem_readers: HashMap<u32, Origin>,
    /// pipe helper pid -> the dumps it wrote.
    pub(crate) helper_files: HashMap<u32, crate::dumps::HelperRec>,
    /// core_pattern pipe helpers seen exec'd (pid -> argv at that exec).
    pub(crate) dump_helpers: HashMap<u32, Arc<[String]>>,
    pub(crate) pending_dumps: Vec<crate::dumps::PendingDump>,
    pub(crate) pending_udumps: Vec<crate::dumps::PendingUserDump>,
    pub(crate) pending_copies: Vec<crate::flows::PendingCopy>,
    pub(crate) pending_environ: Vec<crate::environ::PendingEnviron>,
    /// Protected processes that crashed (latest last), to attribute files
    /// in the dump directories.
    pub(crate) recent_crashes: std::collections::VecDeque<Origin>,
    /// Tracked files to scan for key material.
    pub(crate) scan_tx: Option<std::sync::mpsc::SyncSender<crate::keyscan::ScanJob>>,
    /// Threads a BPF LSM hook just denied (their follow-up failures are
    /// not alerted again).
    pub(crate) denied_threads: crate::enforce::DeniedThreads,
    scoring: ScoringConfig,
    correlator: Correlator,
    pub(crate) recorder: Option<Recorder>,
    /// Reads of the live system, recorded (live) or answered from the
    /// recording (replay).
    pub(crate) view: SystemView,
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
    pub fn tick(&mut self) {
        let now = boot_now();
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
        let mut out = Vec::new();
        self.correlator.tick(now_ns, &mut out);
        self.deliver(out);
    }

    /// Shutdown or the end of a replay: report folds, close incidents.
    pub fn finish(&mut self) {
        self.flush_pending_copies();
        self.expire_pending_dumps(0, true);
        self.expire_environ(0, true);
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
                        self.metrics
                            .incidents
                            .with_label_values(&[i.severity.as_str()])
                            .inc();
                        self.metrics.incident_score.observe(i.score as f64);
                    }
                    self.outputs.send_incident(i)
                }
            }
        }
    }

    /// Whether an interactive shell (bash, sh, zsh, fish, dash, ksh, with a
    /// terminal on its stdin) is among the actor's ancestors.
    fn interactive_ancestry(&mut self, pid: u32) -> bool {
        const SHELLS: [&str; 6] = ["bash", "sh", "zsh", "fish", "dash", "ksh"];
        let mut shells = Vec::new();
        let mut cur = self.procs.get(pid).map(|p| p.ppid);
        for _ in 0..32 {
            let Some(p) = cur.and_then(|c| self.procs.get(c)) else {
                break;
            };
            if SHELLS.contains(&p.comm.as_str()) {
                shells.push((p.pid, p.start_ns));
            }
            if p.ppid == p.pid || p.ppid == 0 {
                break;
            }
            cur = Some(p.ppid);
        }
        shells.into_iter().any(|(spid, start)| {
            self.view.flag(format!("tty:{spid}:{start:x}"), || {
                std::fs::read_link(format!("/proc/{spid}/fd/0")).is_ok_and(|l| {
                    let l = l.to_string_lossy();
                    l.starts_with("/dev/pts/") || l.starts_with("/dev/tty")
                })
            })
        })
    }

    /// The actor and its ancestors, nearest first.
    fn tree(&self, pid: u32) -> Vec<(u32, u64)> {
        let mut v = Vec::new();
        let mut cur = Some(pid);
        while let Some(p) = cur.and_then(|c| self.procs.get(c)) {
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

    /// The hand-off point between rules and outputs: score the alert from
    /// its context, correlate it into an incident, fold repeats, output.
    pub fn emit(&mut self, mut alert: Alert, now_ns: u64) {
        let actor = self.procs.get(alert.process.pid).cloned();
        // The detail objects that carry a `result` (typed: no JSON round
        // trip per alert).
        let failed = alert.open.as_ref().is_some_and(|o| o.result == "failed")
            || alert.memory.as_ref().is_some_and(|m| m.result == "failed")
            || alert
                .dump
                .as_ref()
                .is_some_and(|d| d.result == Some("failed"));
        let recon = alert.memory.as_ref().is_some_and(|m| m.recon);
        let (target_protected, target_uid) = match &alert.target {
            Target::Process { pid, .. } => (
                self.protector.is_protected(*pid)
                    || alert.memory.as_ref().is_some_and(|m| m.target_protected)
                    // Protected when it dumped (it may have exited since).
                    || alert.rule == Rule::CoreDump.name(),
                self.procs.get(*pid).map(|p| p.uid),
            ),
            Target::File { .. } => (true, None),
        };
        let recent_ns = self.scoring.recent_seconds.saturating_mul(1_000_000_000);
        let ctx = ScoreContext {
            not_allowlisted: !self.policy.allowed(&alert.process.exe, None),
            uid_differs: target_uid.is_some_and(|u| u != alert.process.uid && u != u32::MAX),
            recent_start: actor
                .as_ref()
                .is_some_and(|p| p.start_ns != 0 && now_ns.saturating_sub(p.start_ns) < recent_ns),
            interactive_shell: self.interactive_ancestry(alert.process.pid),
            failed,
            target_not_protected: !target_protected,
            recon,
            own_key: alert.open.as_ref().is_some_and(|o| o.own_key),
            fresh_key: alert.open.as_ref().is_some_and(|o| o.fresh_key),
        };
        // `[scoring]` has the last word: the rule's score counts only for a
        // rule without a `[scoring.base]` (docs/scoring.md), and its
        // severity gives way to the final score's threshold band.
        alert.score = score::alert_score(&self.scoring, alert.rule, alert.score, &ctx);
        alert.severity = self.scoring.severity(alert.score);
        // Rules leave `factors` empty: the context is known only here.
        alert.factors = ctx.factors();
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
            self.metrics
                .alerts_suppressed
                .with_label_values(&[rule])
                .inc();
        }
        self.deliver(out);
    }
}

/// CLOCK_BOOTTIME now, in ns (the kernel records' clock).
pub fn boot_now() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
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
            procs,
            watcher,
            policy,
            outputs,
            metrics: metrics.clone(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            clock: Clock::new(),
            events_by_kind: (0..KIND_SLOTS)
                .map(|i| {
                    let name = EventKind::from_u32(i).map_or("unknown", |k| k.name());
                    metrics.events.with_label_values(&[name])
                })
                .collect(),
            protector: Protector::default(),
            protected_map: None,
            recon: HashMap::new(),
            registry: Registry::default(),
            kmaps: None,
            mem_readers: HashMap::new(),
            helper_files: HashMap::new(),
            dump_helpers: HashMap::new(),
            pending_dumps: Vec::new(),
            pending_udumps: Vec::new(),
            pending_copies: Vec::new(),
            pending_environ: Vec::new(),
            scan_tx: None,
            recent_crashes: Default::default(),
            denied_threads: Default::default(),
            scoring: ScoringConfig::default(),
            correlator: Correlator::new(Default::default(), ScoringConfig::default()),
            recorder: None,
            view: SystemView::default(),
        }
    }

    /// Whether anything waits for a writer, a helper or a reader's exit.
    fn timers_pending(&self) -> bool {
        !self.pending_dumps.is_empty()
            || !self.pending_udumps.is_empty()
            || !self.pending_copies.is_empty()
            || !self.pending_environ.is_empty()
    }

    /// Timers, in event time: pipe-helper crashes, user-space dumps,
    /// copies and environment reads that waited long enough by `now_ns`.
    fn expire(&mut self, now_ns: u64) {
        if !self.pending_dumps.is_empty() || !self.pending_udumps.is_empty() {
            self.expire_pending_dumps(now_ns, false);
        }
        if !self.pending_copies.is_empty() {
            self.expire_pending_copies(now_ns);
        }
        if !self.pending_environ.is_empty() {
            self.expire_environ(now_ns, false);
        }
    }

    /// Protection decisions, with the kernel map that enforces them.
    pub fn with_protection(
        mut self,
        protector: Protector,
        map: Option<BpfHashMap<MapData, u32, u32>>,
    ) -> Self {
        self.protector = protector;
        self.protected_map = map;
        self
    }

    /// Entries of the kernel's PROTECTED map (0 when replaying).
    pub(crate) fn protected_entries(&self) -> i64 {
        self.protected_map.as_ref().map_or(0, count_keys)
    }

    pub fn apply(&mut self, changes: &[Change]) {
        let Some(map) = self.protected_map.as_mut() else {
            return;
        };
        for c in changes {
            let r = match *c {
                Change::Protect(pid, rule) => map.insert(pid, rule, 0),
                Change::Unprotect(pid) => map.remove(&pid),
            };
            if let Err(e) = r {
                tracing::debug!("protected map {c:?}: {e}");
            }
        }
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
        let ev = match decode::decode(bytes) {
            Ok(ev) => ev,
            Err(e) => {
                self.metrics
                    .events_malformed
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::debug!("skipped malformed record: {e}");
                return;
            }
        };
        self.events_by_kind[ev.kind() as usize % KIND_SLOTS as usize].inc();
        match ev {
            Event::Exec {
                task,
                ppid,
                start_ns,
                argv,
                exe,
            } => {
                self.procs.exec(&task, ppid, start_ns, argv, exe);
                if ppid == 2 && !self.dump_helpers.contains_key(&task.pid) {
                    self.usermode_helper_exec(task.pid);
                }
                let change = self
                    .procs
                    .get(task.pid)
                    .and_then(|p| self.protector.on_exec(p));
                if let Some(c) = change {
                    self.apply(&[c]);
                }
            }
            Event::Fork {
                parent,
                child_pid,
                child_start_ns,
            } => {
                self.procs.fork(&parent, child_pid, child_start_ns);
                self.protector.on_fork(parent.pid, child_pid);
            }
            Event::Rename { task, comm } => {
                self.procs.rename(task.pid, &comm);
                if let Some(c) = self.protector.on_rename(task.pid, &comm) {
                    self.apply(&[c]);
                }
            }
            Event::Exit {
                task,
                exit_code,
                environ_reads,
            } => {
                if !self.pending_environ.is_empty() {
                    self.environ_reader_exited(task.pid, environ_reads);
                }
                if exit_code & 0x80 != 0 {
                    self.core_dumped(&task, exit_code & 0x7f);
                }
                if !self.pending_udumps.is_empty() {
                    self.writer_exited(task.pid);
                }
                if !self.pending_copies.is_empty() {
                    self.copy_writer_exited(task.pid);
                }
                if self.helper_files.contains_key(&task.pid)
                    || self
                        .pending_dumps
                        .iter()
                        .any(|d| d.helper == Some(task.pid))
                {
                    self.helper_exited(task.pid);
                }
                self.denied_threads.exited(task.tid);
                self.procs.exit(task.pid);
                self.protector.on_exit(task.pid);
                self.recon.remove(&task.pid);
                self.mem_readers.remove(&task.pid);
                if !self.helper_files.contains_key(&task.pid) {
                    self.dump_helpers.remove(&task.pid);
                }
            }
            // The exit tracepoint's view of an open an LSM hook denied.
            Event::Open(rec)
                if rec.failed && self.denied_threads.take_open(rec.task.tid, rec.ret) => {}
            Event::Open(rec) if rec.proc_file != 0 => self.proc_file_open(&rec),
            Event::Open(rec) if rec.matched & MATCH_TRACKED != 0 => self.tracked_open(&rec, "open"),
            Event::Open(rec) => self.key_open(&rec),
            Event::Mem(m)
                if self.denied_threads.follows_denial(
                    m.task.tid,
                    self.procs.tgid_of(m.target),
                    m.ret,
                ) => {}
            Event::Mem(m) => self.mem_access(&m),
            Event::Denied(d) => self.denied(&d),
            Event::FdAccess(r) => self.fd_access(&r),
            Event::Signal(s) => self.dump_signal(&s),
            Event::DumpConfig(d) => self.dump_config(&d),
            Event::FileWrite(w) => self.file_write(&w),
            Event::FileClose(c) => self.file_closed(&c),
            Event::NetSend(n) => self.net_send(&n),
            Event::PathChange(p) => self.path_change(&p),
        }
    }
}
