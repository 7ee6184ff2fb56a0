//! `kernel-reader`: reading memory from the kernel side. A BPF tracing
//! program (kprobe and uprobe, tracepoint, perf_event, raw tracepoint,
//! fentry/fexit, LSM) can read any process's memory; so can a kernel
//! module or a kexec'd kernel; perf sampling of user stacks, user
//! registers or raw data copies other processes' data out. The kernel
//! reports each such syscall at exit (`sensor-ebpf/src/probes/kreader.rs`);
//! this rule decides:
//!
//! - an `[[allow]]` with `kernel_reader = true` whose executable is
//!   genuine and uncontrolled (no loader variables at exec, no tracer:
//!   `Policy::allowed_kernel_reader`), and keysentry's own executable, are
//!   no alert;
//! - a module load the kernel asked for (request_module: modprobe started
//!   by a kernel thread) is low: the module is one the kernel named;
//! - a failed attempt is medium, a success high.
//!
//! The kernel's own back doors are judged here too, from the write-opens
//! the open probes report (`back_door`): tracefs's uprobe_events,
//! kprobe_events and dynamic_events (a probe's fetch arguments read any
//! process's or the kernel's memory, no BPF needed), high; and
//! /proc/sysrq-trigger, high when a crash kernel is loaded (a forced crash
//! then writes all memory, every key in it, to a vmcore), else medium.

use sensor_common::{
    DCFG_DYNAMIC_EVENTS, DCFG_KPROBE_EVENTS, DCFG_SYSRQ_TRIGGER, DCFG_UPROBE_EVENTS,
    KR_BPF_PROG_LOAD, KR_FINIT_MODULE, KR_INIT_MODULE, KR_KEXEC_FILE_LOAD, KR_KEXEC_LOAD,
    KR_PERF_EVENT,
};
use serde_json::Value;

use crate::{
    alert::{KernelDetail, Severity, Target},
    detect::{Policy, errno_text, process_target, rule_alert},
    enrich::{context::Context, devnum::st_dev, proctab::ProcInfo},
    ingest::decode::memory::{DumpConfigRecord, KernelReaderRecord},
    rules::Rule,
};

/// kthreadd: the parent of every kernel thread.
const KTHREADD: u32 = 2;

/// The name of a BPF program type keysentry reports.
fn prog_type_name(t: u32) -> &'static str {
    match t {
        2 => "kprobe",
        5 => "tracepoint",
        7 => "perf_event",
        17 => "raw_tracepoint",
        24 => "raw_tracepoint_writable",
        26 => "tracing",
        29 => "lsm",
        _ => "other",
    }
}

/// The user data a perf sample_type copies out.
fn sample_names(sample_type: u64) -> Vec<&'static str> {
    [
        (1 << 13, "stack_user"),
        (1 << 12, "regs_user"),
        (1 << 10, "raw"),
    ]
    .into_iter()
    .filter(|(bit, _)| sample_type & bit != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Where a bpf or perf record's values were read (`KernelDetail::attr_from`).
fn attr_from(verified: bool) -> &'static str {
    if verified { "kernel" } else { "caller" }
}

/// Is `pid` a kernel thread (kthreadd or one of its children without an
/// executable)? A user process can never have one as its parent except
/// through the kernel's own usermode helper.
fn kernel_thread(cx: &mut Context, pid: u32) -> bool {
    if pid == KTHREADD {
        return true;
    }
    let p = cx.procs.lookup(pid);
    p.ppid == KTHREADD && p.exe.is_empty()
}

/// Is `p` a keysentry process (this program's own executable, checked by
/// inode at exec)?
pub(crate) fn is_keysentry(cx: &mut Context, p: &ProcInfo) -> bool {
    let own = cx.view.value("self-exe".to_string(), || {
        std::fs::read_link("/proc/self/exe")
            .map(|p| Value::String(p.to_string_lossy().into_owned()))
            .unwrap_or_default()
    });
    p.exe_genuine && p.allow_bypass.is_none() && own.as_str() == Some(&*p.exe)
}

/// The file the kernel loaded, by the identity and path it reported.
fn loaded(r: &KernelReaderRecord) -> Target {
    Target::File {
        path: r.path.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
        dev: st_dev(r.file.0),
        inode: r.file.1,
    }
}

/// A kernel-reader record.
pub fn kernel_reader(cx: &mut Context, policy: &Policy, r: &KernelReaderRecord) {
    let actor = cx.procs.resolve(&r.task);
    if policy.allowed_kernel_reader(&actor) || is_keysentry(cx, &actor) {
        return;
    }
    let ok = r.ret >= 0;
    let mut detail = KernelDetail {
        result: if ok { "success" } else { "failed" },
        errno: (!ok).then(|| errno_text(r.ret)),
        ..Default::default()
    };
    let mut target = Target::File {
        path: "kernel".into(),
        dev: 0,
        inode: 0,
    };
    let what: String;
    let mut verdict = None;
    match r.what {
        KR_BPF_PROG_LOAD => {
            detail.op = "bpf";
            detail.attr_from = Some(attr_from(r.verified));
            let t = prog_type_name(r.detail);
            detail.prog_type = Some(t);
            detail.prog_name = (!r.name.is_empty()).then(|| r.name.clone());
            detail.attach_type = Some(r.detail2);
            what = format!(
                "a BPF {t} program{} into the kernel: it can read any process's memory",
                match &detail.prog_name {
                    Some(n) => format!(" ({n})"),
                    None => String::new(),
                }
            );
        }
        KR_INIT_MODULE | KR_FINIT_MODULE => {
            detail.op = if r.what == KR_INIT_MODULE {
                "init_module"
            } else {
                "finit_module"
            };
            let file = r.path.as_ref().map(|(p, _)| p.clone());
            if r.file != (0, 0) {
                target = loaded(r);
            }
            detail.kernel_requested = kernel_thread(cx, actor.ppid);
            what = format!(
                "a kernel module{}",
                file.map(|f| format!(" ({f})")).unwrap_or_default()
            );
            if detail.kernel_requested {
                verdict = Some((Severity::Low, 20));
            }
        }
        KR_KEXEC_LOAD | KR_KEXEC_FILE_LOAD => {
            detail.op = if r.what == KR_KEXEC_LOAD {
                "kexec_load"
            } else {
                "kexec_file_load"
            };
            if r.what == KR_KEXEC_FILE_LOAD && r.file != (0, 0) {
                target = loaded(r);
            }
            what = "a kernel image to boot into (kexec): the new kernel sees all memory".into();
        }
        KR_PERF_EVENT => {
            detail.op = "perf_event_open";
            detail.attr_from = Some(attr_from(r.verified));
            detail.sample = sample_names(r.arg);
            let whose = match r.target {
                -1 => "every process",
                -2 => "a cgroup",
                _ => "protected process",
            };
            detail.sampled = Some(whose);
            if r.target > 0 {
                let tgid = cx.procs.tgid_of(r.target_tgid);
                let t = cx.procs.lookup(tgid);
                what = format!(
                    "perf sampling of protected process {} (pid {})'s {}",
                    t.comm,
                    t.pid,
                    detail.sample.join(", ")
                );
                target = process_target(&t);
            } else {
                what = format!("perf sampling of {whose}'s {}", detail.sample.join(", "));
            }
        }
        _ => return,
    }
    let message = format!(
        "{} (pid {}, uid {}) {} {what}{}",
        actor.comm,
        actor.pid,
        actor.uid,
        match (ok, r.what) {
            (true, KR_PERF_EVENT) => "started",
            (false, KR_PERF_EVENT) => "tried to start",
            (true, _) => "loaded",
            (false, _) => "tried to load",
        },
        if detail.kernel_requested {
            ", asked for by the kernel (request_module)"
        } else {
            ""
        }
    );
    let verdict = verdict.or((!ok).then_some((Severity::Medium, 45)));
    let mut alert = rule_alert(
        Rule::KernelReader,
        &actor,
        target,
        &cx.host,
        cx.wall(r.task.ts_boot_ns),
    )
    .message(message)
    .kernel(detail);
    if let Some((s, score)) = verdict {
        alert = alert.verdict(s, score);
    }
    if matches!(r.what, KR_INIT_MODULE | KR_FINIT_MODULE) {
        alert = alert.attack(Rule::KernelReader.alt_attack());
    }
    cx.raise(alert, r.task.ts_boot_ns);
}

/// A DumpConfig record that is one of the kernel's back doors (sysrq,
/// tracefs dynamic probes), judged by `back_door`.
pub fn is_back_door(what: u32) -> bool {
    matches!(
        what,
        DCFG_SYSRQ_TRIGGER | DCFG_UPROBE_EVENTS | DCFG_KPROBE_EVENTS | DCFG_DYNAMIC_EVENTS
    )
}

/// Is a crash kernel loaded (kdump)? As the live system says (the
/// recorded answer in a replay).
fn crash_kernel_loaded(cx: &mut Context) -> bool {
    cx.view
        .value("kexec-crash-loaded".to_string(), || {
            std::fs::read_to_string("/sys/kernel/kexec_crash_loaded")
                .is_ok_and(|s| s.trim() == "1")
                .into()
        })
        .as_bool()
        .unwrap_or(false)
}

/// A write-open of /proc/sysrq-trigger or of a tracefs dynamic-probe file.
pub fn back_door(cx: &mut Context, policy: &Policy, d: &DumpConfigRecord) {
    let actor = cx.procs.resolve(&d.task);
    if policy.allowed_kernel_reader(&actor) || is_keysentry(cx, &actor) {
        return;
    }
    let ok = d.ret >= 0;
    let (op, path) = match d.what {
        DCFG_SYSRQ_TRIGGER => ("sysrq-trigger", "/proc/sysrq-trigger"),
        DCFG_UPROBE_EVENTS => ("uprobe_events", "/sys/kernel/tracing/uprobe_events"),
        DCFG_KPROBE_EVENTS => ("kprobe_events", "/sys/kernel/tracing/kprobe_events"),
        _ => ("dynamic_events", "/sys/kernel/tracing/dynamic_events"),
    };
    let mut detail = KernelDetail {
        op,
        result: if ok { "success" } else { "failed" },
        errno: (!ok).then(|| errno_text(d.ret)),
        ..Default::default()
    };
    let (what, verdict) = if d.what == DCFG_SYSRQ_TRIGGER {
        let crash = crash_kernel_loaded(cx);
        detail.crash_kernel = Some(crash);
        if crash {
            (
                "the SysRq trigger, with a crash kernel loaded: a forced crash writes all memory, every key in it, to a vmcore",
                None,
            )
        } else {
            (
                "the SysRq trigger: it can crash the kernel or dump tasks and memory to the console",
                Some((Severity::Medium, 45)),
            )
        }
    } else {
        (
            "a tracefs dynamic-probe file: a probe's fetch arguments read any process's or the kernel's memory",
            None,
        )
    };
    let verdict = verdict.or((!ok).then_some((Severity::Medium, 45)));
    let message = format!(
        "{} (pid {}, uid {}) {} {path} for writing, {what}",
        actor.comm,
        actor.pid,
        actor.uid,
        if ok { "opened" } else { "tried to open" },
    );
    let mut alert = rule_alert(
        Rule::KernelReader,
        &actor,
        Target::File {
            path: path.into(),
            dev: 0,
            inode: 0,
        },
        &cx.host,
        cx.wall(d.task.ts_boot_ns),
    )
    .message(message)
    .kernel(detail);
    if let Some((s, score)) = verdict {
        alert = alert.verdict(s, score);
    }
    cx.raise(alert, d.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::{
        flow_tests::{raised, task, with},
        tests::{policy, proc},
    };

    fn record(actor: &ProcInfo, what: u32, ret: i64) -> KernelReaderRecord {
        KernelReaderRecord {
            task: task(actor),
            ret,
            what,
            arg: 0,
            file: (0, 0),
            detail: 2,
            detail2: 0,
            target: 0,
            target_tgid: 0,
            verified: true,
            name: "peek".into(),
            path: None,
        }
    }

    const AGENT: &str = "[[allow]]\nexe = \"/usr/bin/agent\"\nkernel_reader = true\n";

    /// A module the kernel asked for (modprobe run by a kworker) is low;
    /// the same modprobe run from a shell is high; a refused one medium.
    #[test]
    fn a_module_the_kernel_asked_for_is_low() {
        let kworker = ProcInfo {
            exe: "".into(),
            ..proc(30, KTHREADD, 0, "/kworker")
        };
        let shell = proc(40, 1, 0, "/usr/bin/bash");
        let by_kernel = proc(31, 30, 0, "/usr/sbin/modprobe");
        let by_shell = proc(41, 40, 0, "/usr/sbin/modprobe");
        let mut cx = with(&[kworker, shell, by_kernel.clone(), by_shell.clone()]);
        let p = Policy::default();
        kernel_reader(&mut cx, &p, &record(&by_kernel, KR_FINIT_MODULE, 0));
        kernel_reader(&mut cx, &p, &record(&by_shell, KR_FINIT_MODULE, 0));
        kernel_reader(&mut cx, &p, &record(&by_shell, KR_FINIT_MODULE, -8));
        let a = raised(&mut cx);
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].rule, a[0].severity), ("kernel-reader", Severity::Low));
        assert!(a[0].kernel.as_ref().unwrap().kernel_requested);
        assert!(
            a[0].message.contains("asked for by the kernel"),
            "{}",
            a[0].message
        );
        assert_eq!(a[1].severity, Severity::High);
        assert_eq!(a[1].attack, "T1547.006");
        assert!(!a[1].kernel.as_ref().unwrap().kernel_requested);
        assert_eq!(a[2].severity, Severity::Medium);
        assert_eq!(
            a[2].kernel.as_ref().unwrap().errno.as_deref(),
            Some("ENOEXEC")
        );
    }

    /// An allowance holds for the genuine program only.
    #[test]
    fn an_allowance_holds_for_the_genuine_program_only() {
        let agent = proc(50, 1, 0, "/usr/bin/agent");
        let preloaded = ProcInfo {
            allow_bypass: Some(Arc::from("LD_PRELOAD at exec")),
            ..proc(51, 1, 0, "/usr/bin/agent")
        };
        let lookalike = ProcInfo {
            exe_genuine: false,
            exe_in_root: false,
            ..proc(52, 1, 0, "/usr/bin/agent")
        };
        let mut cx = with(&[agent.clone(), preloaded.clone(), lookalike.clone()]);
        let p = policy(AGENT);
        for a in [&agent, &preloaded, &lookalike] {
            kernel_reader(&mut cx, &p, &record(a, KR_BPF_PROG_LOAD, 3));
        }
        let a = raised(&mut cx);
        assert_eq!(
            a.iter().map(|a| a.process.pid).collect::<Vec<_>>(),
            vec![51, 52]
        );
        assert_eq!(a[0].kernel.as_ref().unwrap().prog_type, Some("kprobe"));
        // A kernel-reader allowance allows no key opens.
        assert!(!p.allowed(&agent, None));
    }

    fn door(actor: &ProcInfo, what: u32) -> DumpConfigRecord {
        DumpConfigRecord {
            task: task(actor),
            ret: 3,
            value: 0,
            what,
            target: 0,
        }
    }

    /// A tracefs dynamic-probe file opened for writing is high; the SysRq
    /// trigger high with a crash kernel loaded, else medium; an allowed
    /// agent is silent.
    #[test]
    fn the_kernels_back_doors_are_kernel_readers() {
        let sh = proc(60, 1, 0, "/usr/bin/dash");
        let agent = proc(61, 1, 0, "/usr/bin/agent");
        let mut cx = with(&[sh.clone(), agent.clone()]);
        let p = policy(AGENT);
        back_door(&mut cx, &p, &door(&sh, DCFG_UPROBE_EVENTS));
        back_door(&mut cx, &p, &door(&agent, DCFG_KPROBE_EVENTS));
        back_door(&mut cx, &p, &door(&sh, DCFG_SYSRQ_TRIGGER));
        let a = raised(&mut cx);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(
            (a[0].rule, a[0].severity),
            ("kernel-reader", Severity::High)
        );
        assert_eq!(a[0].kernel.as_ref().unwrap().op, "uprobe_events");
        let k = a[1].kernel.as_ref().unwrap();
        assert_eq!(k.op, "sysrq-trigger");
        let want = if k.crash_kernel == Some(true) {
            Severity::High
        } else {
            Severity::Medium
        };
        assert_eq!(a[1].severity, want);
        assert!(is_back_door(DCFG_DYNAMIC_EVENTS) && !is_back_door(1));
    }

    #[test]
    fn sample_names_are_the_user_data_bits() {
        assert_eq!(
            sample_names((1 << 13) | (1 << 12) | 1),
            vec!["stack_user", "regs_user"]
        );
        assert_eq!(sample_names(1 << 10), vec!["raw"]);
        assert!(sample_names(1).is_empty());
    }

    #[test]
    fn every_reported_program_type_has_a_name() {
        for t in sensor_common::BPF_TRACING_PROG_TYPES {
            assert_ne!(prog_type_name(t), "other", "{t}");
        }
    }
}
