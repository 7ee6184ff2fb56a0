//! Detect, dumps of protected processes: the handlers that turn a dump
//! signal sent to a protected process into `forced-crash`, a change of the
//! core-dump settings into `dump-config-change`, and a protected process
//! that died dumping core into `core-dump` (the core file the kernel wrote
//! is registered as a tracked dump; a pipe helper's dump waits for the
//! files the helper writes, `dumps.rs`). The alerts are built by the
//! policy's dump rules at the end of this file.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use sensor_common::{
    DCFG_CORE_PATTERN, DCFG_CORE_PIPE_LIMIT, DCFG_COREDUMP_FILTER, DCFG_RLIMIT_CORE,
    DCFG_SET_DUMPABLE, DCFG_SUID_DUMPABLE,
};

use crate::{
    alert::{Alert, DumpDetail, Severity, Target},
    detect::dumps::Dumps,
    detect::{Policy, process_target, rule_alert},
    enrich::context::Context,
    enrich::coredump,
    enrich::devnum::kdev,
    enrich::proctab::ProcInfo,
    ingest::decode::{
        self,
        memory::{DumpConfigRecord, SignalRecord},
    },
    rules::Rule,
};

/// Dump rules: one signal, dump setting or core dump each.
impl Dumps {
    /// `dump-config-change`: core-dump sysctls (any writer), and
    /// coredump_filter, PR_SET_DUMPABLE (to dumpable) and a raised
    /// RLIMIT_CORE for protected processes.
    pub(crate) fn dump_config(&mut self, cx: &mut Context, policy: &Policy, d: &DumpConfigRecord) {
        let (setting, path, per_process) = match d.what {
            DCFG_CORE_PATTERN => ("core_pattern", Some("/proc/sys/kernel/core_pattern"), false),
            DCFG_CORE_PIPE_LIMIT => (
                "core_pipe_limit",
                Some("/proc/sys/kernel/core_pipe_limit"),
                false,
            ),
            DCFG_SUID_DUMPABLE => ("suid_dumpable", Some("/proc/sys/fs/suid_dumpable"), false),
            DCFG_COREDUMP_FILTER => ("coredump_filter", None, true),
            DCFG_SET_DUMPABLE => ("PR_SET_DUMPABLE", None, true),
            _ => ("RLIMIT_CORE", None, true),
        };
        // Lowering a limit or making a process undumpable is hardening.
        if matches!(d.what, DCFG_SET_DUMPABLE | DCFG_RLIMIT_CORE) && d.value == 0 {
            return;
        }
        let actor = cx.procs.resolve(&d.task);
        let target = if per_process {
            let t = cx.procs.tgid_of(d.target);
            if !cx.protector.is_protected(t) {
                return;
            }
            Some(cx.procs.lookup(t))
        } else {
            None
        };
        let mut detail = DumpDetail {
            setting: Some(setting),
            value: matches!(d.what, DCFG_SET_DUMPABLE | DCFG_RLIMIT_CORE).then_some(d.value),
            result: Some(if d.ret >= 0 { "success" } else { "failed" }),
            ..Default::default()
        };
        if d.what == DCFG_CORE_PATTERN && d.ret >= 0 {
            let (pattern, _) = cx.view.core_pattern();
            let own = cx
                .view
                .value(format!("own-handler:{pattern}"), || {
                    crate::enrich::corepattern::is_own_handler(&pattern).into()
                })
                .as_bool()
                .unwrap_or(false);
            detail.own_handler = own.then_some(true);
            detail.core_pattern = Some(pattern);
        }
        if d.what == DCFG_CORE_PATTERN
            && d.ret >= 0
            && let Some(w) = crate::enrich::corepattern::check_installed(&policy.handler_state)
        {
            tracing::warn!("{w}");
        }
        let ts = cx.wall(d.task.ts_boot_ns);
        let now_ns = d.task.ts_boot_ns;
        let alert = policy.dump_config(&actor, target.as_ref(), path, detail, &cx.host, ts);
        cx.raise(alert, now_ns);
    }

    /// `forced-crash` when the target is protected; other targets are
    /// only counted as events.
    pub(crate) fn dump_signal(&mut self, cx: &mut Context, policy: &Policy, s: &SignalRecord) {
        let target = cx.procs.tgid_of(s.target);
        if !cx.protector.is_protected(target) {
            return;
        }
        let sender = cx.procs.resolve(&s.sender);
        if sender.pid == target {
            return;
        }
        let target = cx.procs.lookup(target);
        let detail = DumpDetail {
            signal: Some(signal_name(s.sig)),
            sent_by: Some(match s.code {
                0 => "kill",
                -6 => "tkill",
                -1 => "sigqueue",
                _ => "other",
            }),
            delivered: Some(s.result == 0),
            disposition: match s.disposition {
                sensor_common::SIG_DISP_DEFAULT => Some("default"),
                sensor_common::SIG_DISP_HANDLED => Some("handled"),
                sensor_common::SIG_DISP_IGNORED => Some("ignored"),
                _ => None,
            },
            ..Default::default()
        };
        let ts = cx.wall(s.sender.ts_boot_ns);
        let now_ns = s.sender.ts_boot_ns;
        let alert = policy.forced_crash(&sender, &target, detail, &cx.host, ts);
        cx.raise(alert, now_ns);
    }

    /// A process died dumping core: counted, and `core-dump` when protected.
    pub(crate) fn core_dumped(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        task: &decode::Task,
        sig: u32,
    ) {
        let protected = cx.protector.is_protected(task.pid);
        cx.metrics
            .core_dumps
            .with_label_values(&[if protected { "true" } else { "false" }])
            .inc();
        if !protected {
            return;
        }
        let dumped = cx.procs.resolve(task);
        self.note_crash(&dumped);
        let (pattern, uses_pid) = cx.view.core_pattern();
        // The file the kernel opened for this dump (BPF LSM): named by its
        // inode, whatever the pattern, the dead process's cwd or a rename
        // since would say.
        if let Some(cf) = self.core_files.remove(&task.pid) {
            let path = PathBuf::from(&cf.path);
            let here = cx
                .view
                .value(
                    format!("core-at:{}:{}:{}", cf.path, cf.kdev, cf.ino),
                    || {
                        crate::detect::dumps::regular_file(&path)
                            .is_some_and(|m| kdev(m.dev()) == cf.kdev && m.ino() == cf.ino)
                            .into()
                    },
                )
                .as_bool()
                .unwrap_or(false);
            let detail = DumpDetail {
                signal: Some(signal_name(sig)),
                core_pattern: Some(pattern),
                path: Some(cf.path.clone()),
                exists: Some(here),
                tracked_id: self.register_core_inode(cx, &dumped, &path, cf.kdev, cf.ino),
                ..Default::default()
            };
            let ts = cx.wall(task.ts_boot_ns);
            let alert = policy.core_dump(&dumped, detail, &cx.host, ts);
            cx.raise(alert, task.ts_boot_ns);
            return;
        }
        let pid = task.pid;
        let cwd = cx
            .view
            .value(format!("cwd:{pid}"), || {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
                    .into()
            })
            .as_str()
            .map(PathBuf::from);
        let wall_s = (cx.clock.offset_ns + task.ts_boot_ns as i128) / 1_000_000_000;
        let ctx = coredump::DumpCtx {
            proc: &dumped,
            tid: task.tid,
            sig,
            time_s: wall_s.max(0) as u64,
            host: &cx.host,
            cwd: cwd.as_deref(),
        };
        let mut detail = DumpDetail {
            signal: Some(signal_name(sig)),
            core_pattern: Some(pattern.clone()),
            ..Default::default()
        };
        match coredump::target(&pattern, uses_pid, &ctx) {
            coredump::DumpTarget::File(p) => {
                detail.exists = Some(p.exists());
                detail.path = Some(p.to_string_lossy().into_owned());
                detail.tracked_id = self.register_core_file(cx, &dumped, &p);
            }
            coredump::DumpTarget::Pipe(argv) => {
                detail.helper = argv;
                // Reported with the files the helper writes.
                self.pend_pipe_dump(cx, policy, dumped, detail, task.ts_boot_ns);
                return;
            }
        }
        let ts = cx.wall(task.ts_boot_ns);
        let now_ns = task.ts_boot_ns;
        let alert = policy.core_dump(&dumped, detail, &cx.host, ts);
        cx.raise(alert, now_ns);
    }
}

/// Name of a signal number.
pub fn signal_name(sig: u32) -> String {
    nix::sys::signal::Signal::try_from(sig as i32)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

impl Policy {
    /// `forced-crash`: a dump-producing signal to a protected process from
    /// another process.
    pub fn forced_crash(
        &self,
        sender: &ProcInfo,
        target: &ProcInfo,
        detail: DumpDetail,
        host: &str,
        ts: String,
    ) -> Alert {
        let signal = detail.signal.as_deref().unwrap_or("a signal");
        let outcome = match detail.disposition {
            Some("handled") => {
                format!("it handles {signal} itself: no dump unless its handler makes one")
            }
            Some("ignored") => format!("it ignores {signal}: no dump"),
            _ => "a crash that dumps its memory".to_string(),
        };
        let message = format!(
            "{} (pid {}, uid {}) sent {signal} to protected process {} (pid {}): {outcome}",
            sender.comm, sender.pid, sender.uid, target.comm, target.pid
        );
        rule_alert(Rule::ForcedCrash, sender, process_target(target), host, ts)
            .message(message)
            .dump(detail)
    }

    /// `core-dump`: a protected process dumped core.
    pub fn core_dump(
        &self,
        dumped: &ProcInfo,
        detail: DumpDetail,
        host: &str,
        ts: String,
    ) -> Alert {
        let whereto = match (&detail.path, detail.helper.first()) {
            (Some(p), _) => format!("to {p}"),
            (None, Some(h)) => format!("through {h}"),
            _ => String::new(),
        };
        let mut message = format!(
            "protected process {} (pid {}) dumped core on {} {whereto}",
            dumped.comm,
            dumped.pid,
            detail.signal.as_deref().unwrap_or("a signal")
        );
        if let Some(action) = &detail.action {
            message.push_str(&handled_message(action, &detail));
        }
        rule_alert(Rule::CoreDump, dumped, process_target(dumped), host, ts)
            .message(message)
            .dump(detail)
    }
}

impl Policy {
    /// `dump-config-change`: `target` is the process affected (None for a
    /// system-wide setting, whose file is `path`).
    pub fn dump_config(
        &self,
        actor: &ProcInfo,
        target: Option<&ProcInfo>,
        path: Option<&str>,
        detail: DumpDetail,
        host: &str,
        ts: String,
    ) -> Alert {
        let ok = detail.result == Some("success");
        let setting = detail.setting.unwrap_or("dump setting");
        let on = match target {
            Some(t) => format!(" of protected process {} (pid {})", t.comm, t.pid),
            None => String::new(),
        };
        let what = if detail.own_handler == Some(true) {
            "keysentry's core handler installed"
        } else {
            "core dumps enabled or redirected"
        };
        let message = format!(
            "{} (pid {}, uid {}) {} {setting}{on}: {what}",
            actor.comm,
            actor.pid,
            actor.uid,
            if ok { "changed" } else { "tried to change" }
        );
        let target = match target {
            Some(t) => process_target(t),
            None => Target::File {
                path: path.unwrap_or_default().to_string(),
                dev: 0,
                inode: 0,
            },
        };
        let alert = rule_alert(Rule::DumpConfigChange, actor, target, host, ts)
            .message(message)
            .dump(detail);
        // A failed attempt is medium; the rule's verdict is a success's.
        if ok {
            alert
        } else {
            alert.verdict(Severity::Medium, 45)
        }
    }
}

/// What keysentry's core handler did, for a core-dump alert's message.
fn handled_message(action: &str, d: &DumpDetail) -> String {
    let keys: Vec<String> = d
        .removed
        .iter()
        .map(|k| match (&k.key_file, &k.fingerprint) {
            (Some(f), Some(fp)) => format!("the private key of {f} ({fp})"),
            (Some(f), None) => format!("bytes of {f}"),
            (None, Some(fp)) => format!("a {} key ({fp})", k.kind),
            (None, None) => format!("a {} key", k.kind),
        })
        .collect();
    let kept = d
        .stored
        .as_deref()
        .map(|p| format!(", kept at {p}"))
        .unwrap_or_default();
    match action {
        "redacted" if keys.is_empty() => {
            format!("; keysentry's core handler found no key in it{kept}")
        }
        "redacted" => format!(
            "; keysentry's core handler removed {}{kept}",
            keys.join(", ")
        ),
        "quarantined" => format!("; keysentry's core handler quarantined it unmodified{kept}"),
        _ => match &d.handler_error {
            Some(e) => format!("; keysentry's core handler kept nothing of it ({e})"),
            None => "; keysentry's core handler kept nothing of it".to_string(),
        },
    }
}
