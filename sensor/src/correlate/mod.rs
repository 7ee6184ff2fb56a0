//! Correlation: alerts that share a protected process, a tracked file's
//! lineage, or an actor's process tree within a window join one incident;
//! repeats of one alert fold into a count. Generic over rules: it reads
//! only the alert's rule, actor, target, lineage and score, so a new rule
//! joins incidents with no code here (its stage is a line of `[scoring]`).
//!
//! Time is the kernel's boot-time clock of the events (and of the ticks
//! the agent feeds in), so a replay correlates exactly as the live run did.

pub mod score;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    alert::{Alert, Severity, Target},
    correlate::score::ScoringConfig,
};

/// `[correlation]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationConfig {
    /// An incident stays open this long after its last step (seconds).
    pub window_seconds: u64,
    /// Repeats (same rule, actor, target and operation) within this many seconds of
    /// the first fold into one alert with a count.
    pub fold_seconds: u64,
    /// How many ancestors of the actor join its process tree (0: the actor
    /// only, 1: the actor and its parent, ...).
    pub tree_depth: u32,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            window_seconds: 600,
            fold_seconds: 60,
            tree_depth: 1,
        }
    }
}

impl CorrelationConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.window_seconds == 0 {
            return Err((
                "correlation.window_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if self.tree_depth > 16 {
            return Err(("correlation.tree_depth".into(), "at most 16".into()));
        }
        Ok(())
    }
}

/// One step of an incident: an alert (with its fold count).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub ts: String,
    pub rule: String,
    pub stage: String,
    pub score: u32,
    pub severity: Severity,
    pub actor_pid: u32,
    pub actor_comm: String,
    pub target: Target,
    /// Alerts this step stands for (repeats folded in).
    pub count: u32,
    pub message: String,
}

/// The incident record (docs/alerts.md): `"type": "incident"`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Incident {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    /// "open" (updated on each new step) or "closed" (window passed).
    pub status: &'static str,
    pub first_ts: String,
    pub last_ts: String,
    pub host: String,
    pub score: u32,
    pub severity: Severity,
    /// Distinct stages reached, in chain order.
    pub stages: Vec<String>,
    /// Incidents merged into this one (a step joined two of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<String>,
    pub steps: Vec<Step>,
    /// Steps past `MAX_STEPS`, counted but not listed (a key opened by
    /// thousands of processes in one window is one bounded record).
    #[serde(skip_serializing_if = "is_zero")]
    pub steps_omitted: u64,
    #[serde(skip)]
    last_ns: u64,
    /// Its correlation keys (at most `MAX_KEYS`).
    #[serde(skip)]
    keys: std::collections::BTreeSet<String>,
    #[serde(skip)]
    max_step: u32,
}

/// What the actor's process tree is (the pipeline fills it from the
/// process table): the actor and its ancestors, nearest first.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// (pid, start_ns) of the actor and its ancestors, nearest first.
    pub tree: Vec<(u32, u64)>,
    /// Whether the target process is protected.
    pub target_protected: bool,
    /// More keys from the alert's details (e.g. `proc:<pid>` of the
    /// process a dump came from).
    pub extra_keys: Vec<String>,
}

struct Fold {
    first_ns: u64,
    /// Repeats since the first emission, and the latest of them.
    repeats: u32,
    last: Option<Alert>,
    incident: String,
}

/// What one alert, or one tick, sends to the outputs, in order.
/// Alerts are the common case; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Out {
    Alert(Alert),
    Incident(Incident),
}

#[derive(Default)]
pub struct Correlator {
    cfg: CorrelationConfig,
    scoring: ScoringConfig,
    incidents: BTreeMap<String, Incident>,
    by_key: HashMap<String, String>,
    folds: HashMap<(String, u32, String), Fold>,
    /// No fold or incident expires before this (boot ns): `tick` scans
    /// only after it. A lower bound: steps only push expiries later.
    next_expiry: u64,
}

/// Incidents kept open at most (the oldest closes first).
pub const MAX_OPEN: usize = 4096;
/// Steps listed in one incident record; later ones are counted.
pub const MAX_STEPS: usize = 128;
/// Correlation keys one incident holds; later alerts still join it through
/// the keys it has (their target), only their new keys are not indexed.
const MAX_KEYS: usize = 1024;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn target_key(t: &Target) -> String {
    match t {
        Target::File { dev, inode, .. } => format!("file:{dev}:{inode}"),
        Target::Process { pid, .. } => format!("proc:{pid}"),
    }
}

impl Correlator {
    pub fn new(cfg: CorrelationConfig, scoring: ScoringConfig) -> Self {
        Self {
            cfg,
            scoring,
            ..Default::default()
        }
    }

    /// New settings; what is open stays open.
    pub fn reconfigure(&mut self, cfg: CorrelationConfig, scoring: ScoringConfig) {
        self.cfg = cfg;
        self.scoring = scoring;
    }

    /// Whether anything waits for a window to close.
    pub fn pending(&self) -> bool {
        !self.incidents.is_empty() || !self.folds.is_empty()
    }

    pub fn open_incidents(&self) -> usize {
        self.incidents.len()
    }

    fn window_ns(&self) -> u64 {
        self.cfg.window_seconds.saturating_mul(1_000_000_000)
    }

    fn fold_ns(&self) -> u64 {
        self.cfg.fold_seconds.saturating_mul(1_000_000_000)
    }

    /// The correlation keys of an alert.
    fn keys(&self, a: &Alert, lin: &Lineage) -> Vec<String> {
        let mut keys = Vec::new();
        match &a.target {
            Target::Process { pid, .. } => keys.push(format!("proc:{pid}")),
            Target::File { dev, inode, .. } => {
                keys.push(format!("file:{dev}:{inode}"));
            }
        }
        if let Some(l) = &a.lineage {
            keys.push(format!("lineage:{l}"));
        }
        for (pid, start) in lin
            .tree
            .iter()
            .take(self.cfg.tree_depth as usize + 1)
            .filter(|(pid, _)| *pid > 1)
        {
            keys.push(format!("tree:{pid}:{start:x}"));
        }
        keys.extend(lin.extra_keys.iter().cloned());
        // A protected actor (its own core dump) is also its process key.
        if a.rule == "core-dump" {
            keys.push(format!("proc:{}", a.process.pid));
        }
        keys
    }

    /// Closes what expired by `now_ns`: folded repeats are reported, closed
    /// incidents are emitted with status "closed".
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Out>) {
        if now_ns <= self.next_expiry {
            return;
        }
        let fold_ns = self.fold_ns();
        let mut expired: Vec<_> = self
            .folds
            .iter()
            .filter(|(_, f)| now_ns.saturating_sub(f.first_ns) > fold_ns)
            .map(|(k, _)| k.clone())
            .collect();
        expired.sort();
        for k in expired {
            if let Some(f) = self.folds.remove(&k) {
                self.report_fold(f, out);
            }
        }
        let window = self.window_ns();
        let closed: Vec<String> = self
            .incidents
            .iter()
            .filter(|(_, i)| now_ns.saturating_sub(i.last_ns) > window)
            .map(|(id, _)| id.clone())
            .collect();
        for id in closed {
            self.close(&id, out);
        }
        let folds = self
            .folds
            .values()
            .map(|f| f.first_ns.saturating_add(fold_ns));
        let incs = self
            .incidents
            .values()
            .map(|i| i.last_ns.saturating_add(window));
        self.next_expiry = folds.chain(incs).min().unwrap_or(u64::MAX);
    }

    /// Something new expires at `ns + span` at the earliest.
    fn expires(&mut self, ns: u64, span: u64) {
        self.next_expiry = self.next_expiry.min(ns.saturating_add(span));
    }

    /// Everything still open, as at shutdown or the end of a replay.
    pub fn flush(&mut self, out: &mut Vec<Out>) {
        self.next_expiry = 0;
        self.tick(u64::MAX, out);
    }

    fn report_fold(&mut self, f: Fold, out: &mut Vec<Out>) {
        if let Some(mut a) = f.last {
            a.count = f.repeats;
            a.incident = self.resolve_id(&f.incident);
            out.push(Out::Alert(a));
        }
    }

    /// An incident id, following merges.
    fn resolve_id(&self, id: &str) -> String {
        if self.incidents.contains_key(id) {
            return id.to_string();
        }
        self.incidents
            .values()
            .find(|i| i.merged.iter().any(|m| m == id))
            .map_or_else(|| id.to_string(), |i| i.id.clone())
    }

    fn close(&mut self, id: &str, out: &mut Vec<Out>) {
        if let Some(mut inc) = self.incidents.remove(id) {
            for k in &inc.keys {
                if self.by_key.get(k).is_some_and(|v| v == id) {
                    self.by_key.remove(k);
                }
            }
            inc.status = "closed";
            out.push(Out::Incident(inc));
        }
    }

    /// One scored alert at boot-time `now_ns`: it joins (or opens) an
    /// incident, and is emitted now unless it repeats one still folding.
    /// The incident record follows each alert that adds or counts a step.
    pub fn add(&mut self, mut a: Alert, now_ns: u64, lin: &Lineage, out: &mut Vec<Out>) -> bool {
        self.tick(now_ns, out);
        // The message names the operation (PTRACE_ATTACH vs PEEKDATA, read
        // vs write): only the same operation again is a repeat.
        let fold_key = (
            a.rule.to_string(),
            a.process.pid,
            format!("{}|{}", target_key(&a.target), a.message),
        );
        // An alert may stand for several events (`count`: repeats the
        // kernel folded into its record); each is counted.
        let weight = a.count.max(1);
        if let Some(inc_id) = self.folds.get(&fold_key).map(|f| f.incident.clone()) {
            // A repeat: counted on its step, reported when the fold closes.
            let id = self.resolve_id(&inc_id);
            a.incident = id.clone();
            let f = self.folds.get_mut(&fold_key).expect("present");
            f.repeats = f.repeats.saturating_add(weight);
            f.last = Some(a.clone());
            if let Some(inc) = self.incidents.get_mut(&id) {
                inc.last_ns = now_ns;
                inc.last_ts = a.ts.clone();
                if let Some(s) = inc.steps.iter_mut().rev().find(|s| {
                    s.rule == a.rule && s.actor_pid == a.process.pid && s.message == a.message
                }) {
                    s.count = s.count.saturating_add(weight);
                }
            }
            return false;
        }
        // Low and info alerts are not attack steps: they fold, but neither
        // open an incident nor join one (an admin session's gdb of its own
        // program and a new ssh key must not gather into, or merge, the
        // incident of an attack run from the same shell). They keep the
        // actor's own incident id.
        if self.scoring.severity(a.score) < Severity::Medium {
            a.count = weight;
            self.folds.insert(
                fold_key,
                Fold {
                    first_ns: now_ns,
                    repeats: 0,
                    last: None,
                    incident: a.incident.clone(),
                },
            );
            let fold_ns = self.fold_ns();
            self.expires(now_ns, fold_ns);
            out.push(Out::Alert(a));
            return true;
        }
        let keys = self.keys(&a, lin);
        let mut ids: Vec<String> = keys
            .iter()
            .filter_map(|k| self.by_key.get(k).cloned())
            .collect();
        ids.sort();
        ids.dedup();
        if self.incidents.len() >= MAX_OPEN && ids.is_empty() {
            let oldest = self
                .incidents
                .values()
                .min_by_key(|i| i.last_ns)
                .map(|i| i.id.clone());
            if let Some(o) = oldest {
                self.close(&o, out);
            }
        }
        // The oldest incident absorbs the others.
        ids.sort_by_key(|id| self.incidents.get(id).map_or(0, |i| i.last_ns));
        let id = match ids.first() {
            Some(first) => {
                let first = self
                    .incidents
                    .values()
                    .filter(|i| ids.contains(&i.id))
                    .min_by_key(|i| (i.first_ts.clone(), i.id.clone()))
                    .map_or_else(|| first.clone(), |i| i.id.clone());
                for other in ids.iter().filter(|o| **o != first) {
                    if let Some(o) = self.incidents.remove(other) {
                        for k in &o.keys {
                            self.by_key.insert(k.clone(), first.clone());
                        }
                        let inc = self.incidents.get_mut(&first).expect("present");
                        inc.merged.push(o.id.clone());
                        inc.merged.extend(o.merged);
                        inc.keys.extend(o.keys);
                        inc.steps.extend(o.steps);
                        inc.steps.sort_by(|x, y| x.ts.cmp(&y.ts));
                        inc.steps_omitted += o.steps_omitted;
                        if inc.steps.len() > MAX_STEPS {
                            inc.steps_omitted += (inc.steps.len() - MAX_STEPS) as u64;
                            inc.steps.truncate(MAX_STEPS);
                        }
                        inc.max_step = inc.max_step.max(o.max_step);
                        for s in o.stages {
                            if !inc.stages.contains(&s) {
                                inc.stages.push(s);
                            }
                        }
                    }
                }
                first
            }
            None => {
                let id = format!("inc-{now_ns:x}-{}", a.process.pid);
                self.incidents.insert(
                    id.clone(),
                    Incident {
                        kind: "incident",
                        id: id.clone(),
                        status: "open",
                        first_ts: a.ts.clone(),
                        last_ts: a.ts.clone(),
                        host: a.host.clone(),
                        score: 0,
                        severity: Severity::Low,
                        stages: Vec::new(),
                        merged: Vec::new(),
                        steps: Vec::new(),
                        steps_omitted: 0,
                        last_ns: now_ns,
                        keys: Default::default(),
                        max_step: 0,
                    },
                );
                id
            }
        };
        let stage = self.scoring.stage(a.rule).to_string();
        let inc = self.incidents.get_mut(&id).expect("present");
        for k in keys {
            if inc.keys.len() < MAX_KEYS || inc.keys.contains(&k) {
                self.by_key.insert(k.clone(), id.clone());
                inc.keys.insert(k);
            }
        }
        let before = (inc.score, inc.stages.len());
        inc.last_ns = now_ns;
        inc.last_ts = a.ts.clone();
        inc.status = "open";
        inc.max_step = inc.max_step.max(a.score);
        if !inc.stages.contains(&stage) {
            inc.stages.push(stage.clone());
            inc.stages.sort_by_key(|s| {
                score::STAGES
                    .iter()
                    .position(|x| x == s)
                    .unwrap_or(usize::MAX)
            });
        }
        inc.score = score::incident_score(
            &self.scoring,
            inc.max_step,
            inc.stages.iter().map(|s| s.as_str()),
        );
        inc.severity = self.scoring.severity(inc.score);
        let listed = inc.steps.len() < MAX_STEPS;
        if !listed {
            inc.steps_omitted += 1;
        }
        let step = listed.then(|| Step {
            ts: a.ts.clone(),
            rule: a.rule.to_string(),
            stage,
            score: a.score,
            severity: a.severity,
            actor_pid: a.process.pid,
            actor_comm: a.process.comm.clone(),
            target: a.target.clone(),
            count: weight,
            message: a.message.clone(),
        });
        inc.steps.extend(step);
        // The record is written when the incident changed beyond its count.
        let record = (listed || (inc.score, inc.stages.len()) != before).then(|| inc.clone());
        a.incident = id.clone();
        a.count = weight;
        self.folds.insert(
            fold_key,
            Fold {
                first_ns: now_ns,
                repeats: 0,
                last: None,
                incident: id,
            },
        );
        let (fold_ns, window) = (self.fold_ns(), self.window_ns());
        self.expires(now_ns, fold_ns.min(window));
        out.push(Out::Alert(a));
        out.extend(record.map(Out::Incident));
        true
    }
}

#[cfg(test)]
mod tests;
