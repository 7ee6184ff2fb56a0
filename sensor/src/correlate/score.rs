//! Scoring: a data-driven score for each alert and each incident, from the
//! `[scoring]` config section (docs/scoring.md has the formula and a worked
//! example). A new rule needs a line of config (`base`, `stages`), no code.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{
    alert::Severity,
    rules::{Rule, Stage},
};

/// `[scoring]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Base score of a successful attempt, by rule (defaults: the rules
    /// table, `rules.rs`). A rule not listed keeps the score its detector
    /// gave (`default_base` when that is 0).
    pub base: BTreeMap<String, i32>,
    /// Base for a rule that is in neither `base` nor scored by its detector.
    pub default_base: i32,
    /// Context weights, added to the base when the context holds.
    pub weights: Weights,
    /// An actor whose process started less than this many seconds before
    /// the event "started recently".
    pub recent_seconds: u64,
    /// Stage of each rule in the attack chain: "access", "dump", "copy",
    /// "send" or "key" (defaults: the rules table, `rules.rs`). Rules not
    /// listed are "access".
    pub stages: BTreeMap<String, String>,
    /// Points an incident gains for each distinct stage it reached.
    pub stage_bonus: BTreeMap<String, i32>,
    /// Lowest score of each severity.
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub not_allowlisted: i32,
    pub uid_differs: i32,
    pub recent_start: i32,
    pub interactive_shell: i32,
    pub failed: i32,
    pub target_not_protected: i32,
    pub recon: i32,
    pub own_key: i32,
    pub fresh_key: i32,
    pub allow_bypass: i32,
    /// `forced-crash` of a target that handles (or ignores) the signal:
    /// no dump unless its own handler makes one.
    pub signal_handled: i32,
    /// `dump-config-change` of a key holder's own per-process setting
    /// (nginx workers and sudo make themselves dumpable again after
    /// changing uid).
    pub holder_own_setting: i32,
    /// `dump-config-change` that set core_pattern to keysentry's own core
    /// handler (this binary: `keysentry install-core-handler`).
    pub keysentry_handler: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Below this: info (inventory, never paged on).
    pub low: i32,
    pub medium: i32,
    pub high: i32,
    pub critical: i32,
}

/// The stage names, in chain order (`rules::Stage`).
pub const STAGES: [&str; 5] = [
    Stage::ALL[0].as_str(),
    Stage::ALL[1].as_str(),
    Stage::ALL[2].as_str(),
    Stage::ALL[3].as_str(),
    Stage::ALL[4].as_str(),
];

impl Default for Weights {
    fn default() -> Self {
        Self {
            not_allowlisted: 0,
            uid_differs: 5,
            recent_start: 5,
            interactive_shell: 5,
            failed: -30,
            target_not_protected: -50,
            recon: 10,
            own_key: -45,
            fresh_key: -45,
            allow_bypass: 10,
            signal_handled: -50,
            holder_own_setting: -60,
            keysentry_handler: -60,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            low: 20,
            medium: 40,
            high: 70,
            critical: 90,
        }
    }
}

impl Default for ScoringConfig {
    /// `base` and `stages` from the rules table (`rules.rs`).
    fn default() -> Self {
        let bonus = [
            ("access", 0),
            ("dump", 10),
            ("copy", 10),
            ("send", 15),
            ("key", 20),
        ];
        Self {
            base: Rule::all()
                .filter_map(|r| Some((r.name().to_string(), r.base()? as i32)))
                .collect(),
            default_base: 50,
            weights: Weights::default(),
            recent_seconds: 60,
            stages: Rule::all()
                .map(|r| (r.name().to_string(), r.stage().as_str().to_string()))
                .collect(),
            stage_bonus: bonus.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            thresholds: Thresholds::default(),
        }
    }
}

impl ScoringConfig {
    /// Entries of `base`, `stages` and `stage_bonus` the file did not give
    /// keep their defaults (a table in the file is merged over them).
    pub fn fill_defaults(&mut self) {
        let d = Self::default();
        for (k, v) in d.base {
            self.base.entry(k).or_insert(v);
        }
        for (k, v) in d.stages {
            self.stages.entry(k).or_insert(v);
        }
        for (k, v) in d.stage_bonus {
            self.stage_bonus.entry(k).or_insert(v);
        }
    }

    /// The first invalid field, named as in the file.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (rule, stage) in &self.stages {
            if !STAGES.contains(&stage.as_str()) {
                return Err((
                    format!("scoring.stages.{rule}"),
                    format!("unknown stage {stage:?} (one of {})", STAGES.join(", ")),
                ));
            }
        }
        for stage in self.stage_bonus.keys() {
            if !STAGES.contains(&stage.as_str()) {
                return Err((
                    format!("scoring.stage_bonus.{stage}"),
                    format!("unknown stage (one of {})", STAGES.join(", ")),
                ));
            }
        }
        for (rule, b) in &self.base {
            if !(0..=100).contains(b) {
                return Err((format!("scoring.base.{rule}"), "must be 0..=100".into()));
            }
        }
        let t = &self.thresholds;
        if !(0 <= t.low
            && t.low < t.medium
            && t.medium < t.high
            && t.high < t.critical
            && t.critical <= 100)
        {
            return Err((
                "scoring.thresholds".into(),
                "needs 0 <= low < medium < high < critical <= 100".into(),
            ));
        }
        Ok(())
    }

    pub fn severity(&self, score: u32) -> Severity {
        let s = score as i32;
        let t = &self.thresholds;
        if s >= t.critical {
            Severity::Critical
        } else if s >= t.high {
            Severity::High
        } else if s >= t.medium {
            Severity::Medium
        } else if s >= t.low {
            Severity::Low
        } else {
            Severity::Info
        }
    }

    pub fn stage(&self, rule: &str) -> &str {
        self.stages.get(rule).map_or("access", |s| s.as_str())
    }
}

/// What the scorer knows of an alert's context (filled by the pipeline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    pub not_allowlisted: bool,
    pub uid_differs: bool,
    pub recent_start: bool,
    pub interactive_shell: bool,
    pub failed: bool,
    pub target_not_protected: bool,
    pub recon: bool,
    pub own_key: bool,
    pub fresh_key: bool,
    /// The actor's executable is allowlisted but the allowance did not
    /// hold (loader variables, a tracer, a path that is not its file).
    pub allow_bypass: bool,
    pub signal_handled: bool,
    pub holder_own_setting: bool,
    pub keysentry_handler: bool,
}

impl Context {
    /// The names of the weights that applied, for the alert's `factors`.
    pub fn factors(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let flags = [
            (self.not_allowlisted, "not_allowlisted"),
            (self.uid_differs, "uid_differs"),
            (self.recent_start, "recent_start"),
            (self.interactive_shell, "interactive_shell"),
            (self.failed, "failed"),
            (self.target_not_protected, "target_not_protected"),
            (self.recon, "recon"),
            (self.own_key, "own_key"),
            (self.fresh_key, "fresh_key"),
            (self.allow_bypass, "allow_bypass"),
            (self.signal_handled, "signal_handled"),
            (self.holder_own_setting, "holder_own_setting"),
            (self.keysentry_handler, "keysentry_handler"),
        ];
        for (on, name) in flags {
            if on {
                v.push(name);
            }
        }
        v
    }
}

/// Score of one alert: base + the weights whose context holds, in 0..=100.
/// A rule missing from `base` keeps its detector's score (which already
/// counts failure and the target), plus the actor weights; `default_base`
/// serves a rule whose detector gives none.
pub fn alert_score(cfg: &ScoringConfig, rule: &str, detector_score: u32, ctx: &Context) -> u32 {
    match cfg.base.get(rule) {
        Some(b) => clamp(*b + weights(cfg, ctx)),
        None if detector_score > 0 => {
            let actor_only = Context {
                failed: false,
                target_not_protected: false,
                recon: false,
                ..*ctx
            };
            clamp(detector_score as i32 + weights(cfg, &actor_only))
        }
        None => clamp(cfg.default_base + weights(cfg, ctx)),
    }
}

fn weights(cfg: &ScoringConfig, ctx: &Context) -> i32 {
    let w = &cfg.weights;
    let mut s = 0;
    let add = |on: bool, v: i32, s: &mut i32| {
        if on {
            *s += v
        }
    };
    add(ctx.not_allowlisted, w.not_allowlisted, &mut s);
    add(ctx.uid_differs, w.uid_differs, &mut s);
    add(ctx.recent_start, w.recent_start, &mut s);
    add(ctx.interactive_shell, w.interactive_shell, &mut s);
    add(ctx.failed, w.failed, &mut s);
    add(ctx.target_not_protected, w.target_not_protected, &mut s);
    add(ctx.recon, w.recon, &mut s);
    add(ctx.own_key, w.own_key, &mut s);
    add(ctx.fresh_key, w.fresh_key, &mut s);
    add(ctx.allow_bypass, w.allow_bypass, &mut s);
    add(ctx.signal_handled, w.signal_handled, &mut s);
    add(ctx.holder_own_setting, w.holder_own_setting, &mut s);
    add(ctx.keysentry_handler, w.keysentry_handler, &mut s);
    s
}

fn clamp(s: i32) -> u32 {
    s.clamp(0, 100) as u32
}

/// Score of an incident: the highest step score plus the bonus of each
/// distinct stage the chain reached, in 0..=100.
pub fn incident_score<'a>(
    cfg: &ScoringConfig,
    max_step: u32,
    stages: impl IntoIterator<Item = &'a str>,
) -> u32 {
    let bonus: i32 = stages
        .into_iter()
        .map(|s| cfg.stage_bonus.get(s).copied().unwrap_or(0))
        .sum();
    clamp(max_step as i32 + bonus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_plus_weights_and_thresholds() {
        let c = ScoringConfig::default();
        let ctx = Context {
            recent_start: true,
            ..Default::default()
        };
        assert_eq!(alert_score(&c, "key-file-open", 70, &ctx), 75);
        let failed = Context {
            failed: true,
            ..ctx
        };
        assert_eq!(alert_score(&c, "key-file-open", 40, &failed), 45);
        assert_eq!(c.severity(45), Severity::Medium);
        assert_eq!(c.severity(75), Severity::High);
        assert_eq!(c.severity(90), Severity::Critical);
        assert_eq!(c.severity(39), Severity::Low);
        let unprot = Context {
            target_not_protected: true,
            failed: true,
            ..ctx
        };
        assert_eq!(alert_score(&c, "ptrace-attach", 20, &unprot), 5);
    }

    #[test]
    fn unknown_rule_keeps_detector_score_or_default() {
        let c = ScoringConfig::default();
        let ctx = Context {
            uid_differs: true,
            failed: true,
            ..Default::default()
        };
        // The detector's 60 already counts the failure.
        assert_eq!(alert_score(&c, "new-rule", 60, &ctx), 65);
        assert_eq!(alert_score(&c, "new-rule", 0, &ctx), 25);
    }

    #[test]
    fn incident_score_rises_with_stages() {
        let c = ScoringConfig::default();
        assert_eq!(incident_score(&c, 75, ["access"]), 75);
        assert_eq!(incident_score(&c, 75, ["access", "dump"]), 85);
        assert_eq!(
            incident_score(&c, 75, ["access", "dump", "copy", "send"]),
            100
        );
    }

    #[test]
    fn config_tables_merge_over_defaults() {
        let cfg = crate::config::Config::parse(
            "[scoring.base]\nexfiltration = 85\n[scoring.weights]\nuid_differs = 10\n",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.scoring.base["exfiltration"], 85);
        assert_eq!(cfg.scoring.base["key-file-open"], 70);
        assert_eq!(cfg.scoring.weights.uid_differs, 10);
        assert_eq!(cfg.scoring.weights.failed, -30);
        let e = crate::config::Config::parse("[scoring.stages]\nx = \"steal\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scoring.stages.x"), "{e}");
        let e = crate::config::Config::parse("[correlation]\nwindow_seconds = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("correlation.window_seconds"), "{e}");
    }

    #[test]
    fn bad_stage_is_named() {
        let mut c = ScoringConfig::default();
        c.stages.insert("x".into(), "steal".into());
        assert_eq!(c.validate().unwrap_err().0, "scoring.stages.x");
    }
}
