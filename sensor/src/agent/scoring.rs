//! Scoring one alert (docs/scoring.md): the context the pipeline knows
//! about it (is the actor allowed, the target protected, another uid, a
//! fresh process, under an interactive shell, ...) through
//! `correlate::score` into its score, severity and factors. Called by
//! `Pipeline::emit` before correlation.

use crate::{
    agent::pipeline::Pipeline,
    alert::{Alert, Target},
    correlate::score::{self, Context as ScoreContext},
    rules::Rule,
};

impl Pipeline {
    /// Scores `alert` from its context; returns whether its target is
    /// protected (correlation keys on it).
    pub(crate) fn score(&mut self, alert: &mut Alert, now_ns: u64) -> bool {
        let actor = self.cx.procs.get(alert.process.pid).cloned();
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
                self.cx.protector.is_protected(*pid)
                    || alert.memory.as_ref().is_some_and(|m| m.target_protected)
                    // Protected when it dumped (it may have exited since).
                    || alert.rule == Rule::CoreDump.name(),
                self.cx.procs.get(*pid).map(|p| p.uid),
            ),
            Target::File { .. } => (true, None),
        };
        let recent_ns = self.scoring.recent_seconds.saturating_mul(1_000_000_000);
        let withdrawn = actor
            .as_ref()
            .and_then(|a| self.policy.allowance_withdrawn(a));
        let ctx = ScoreContext {
            not_allowlisted: !actor.as_ref().is_some_and(|a| self.policy.allowed(a, None)),
            allow_bypass: withdrawn.is_some(),
            // A process acting on itself is one uid, whatever the table
            // remembers from before a setuid (an nginx worker).
            uid_differs: target_uid.is_some_and(|u| u != alert.process.uid && u != u32::MAX)
                && !matches!(&alert.target, Target::Process { pid, .. } if *pid == alert.process.pid),
            recent_start: actor
                .as_ref()
                .is_some_and(|p| p.start_ns != 0 && now_ns.saturating_sub(p.start_ns) < recent_ns),
            interactive_shell: self.interactive_ancestry(alert.process.pid),
            failed,
            target_not_protected: !target_protected,
            recon,
            own_key: alert.open.as_ref().is_some_and(|o| o.own_key),
            fresh_key: alert.open.as_ref().is_some_and(|o| o.fresh_key),
            signal_handled: alert
                .dump
                .as_ref()
                .is_some_and(|d| matches!(d.disposition, Some("handled") | Some("ignored"))),
            keysentry_handler: alert.rule == Rule::DumpConfigChange.name()
                && alert
                    .dump
                    .as_ref()
                    .is_some_and(|d| d.own_handler == Some(true)),
            holder_own_setting: alert.rule == Rule::DumpConfigChange.name()
                && matches!(&alert.target, Target::Process { pid, .. }
                    if *pid == alert.process.pid && self.cx.protector.is_holder(*pid)),
        };
        // `[scoring]` has the last word: the rule's score counts only for a
        // rule without a `[scoring.base]` (docs/scoring.md), and its
        // severity gives way to the final score's threshold band.
        alert.score = score::alert_score(&self.scoring, alert.rule, alert.score, &ctx);
        alert.severity = self.scoring.severity(alert.score);
        // Rules leave `factors` empty: the context is known only here.
        alert.factors = ctx.factors();
        alert.process.allow_bypass = withdrawn;
        target_protected
    }

    /// Whether an interactive shell (bash, sh, zsh, fish, dash, ksh, with a
    /// terminal on its stdin) is among the actor's ancestors.
    fn interactive_ancestry(&mut self, pid: u32) -> bool {
        const SHELLS: [&str; 6] = ["bash", "sh", "zsh", "fish", "dash", "ksh"];
        let mut shells = Vec::new();
        let mut cur = self.cx.procs.get(pid).map(|p| p.ppid);
        for _ in 0..32 {
            let Some(p) = cur.and_then(|c| self.cx.procs.get(c)) else {
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
            self.cx.view.flag(format!("tty:{spid}:{start:x}"), || {
                std::fs::read_link(format!("/proc/{spid}/fd/0")).is_ok_and(|l| {
                    let l = l.to_string_lossy();
                    l.starts_with("/dev/pts/") || l.starts_with("/dev/tty")
                })
            })
        })
    }
}
