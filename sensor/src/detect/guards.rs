//! Kernel guards weakened (`dump-config-change`, with the knob named): a
//! sysctl write that lowers a guard between a key holder and a reader of
//! its memory. The kernel's cgroup sysctl program reports every sysctl
//! write with the value in force and the value written
//! (`sensor-ebpf/src/probes/sysctl.rs`); only a weakening is an alert, so
//! systemd-sysctl and `sysctl --system` writing the configured values
//! again, and any hardening, are not. Guards that can only be raised until
//! the next boot (kernel.kexec_load_disabled, kernel.modules_disabled, the
//! lockdown mode) need no rule: a write cannot weaken them.

use crate::{
    alert::DumpDetail,
    detect::{Policy, rule_alert},
    enrich::context::Context,
    ingest::decode::memory::SysctlRecord,
    rules::Rule,
};

/// A guard: its name as the kernel gives it, its sysctl name, what it
/// guards, and whether a change from `old` to `new` weakens it.
struct Guard {
    kernel_name: &'static str,
    name: &'static str,
    guards: &'static str,
    weaker: fn(i64, i64) -> bool,
}

fn lower(old: i64, new: i64) -> bool {
    new < old
}

/// 0 lets every user load BPF; 1 and 2 both refuse (1 until reboot).
fn to_zero(old: i64, new: i64) -> bool {
    new == 0 && old != 0
}

/// kernel.sysrq is a bit mask (1: every function): a value that enables a
/// function the old one did not is weaker. Sysrq 'c' crashes the kernel,
/// and kdump then writes all of memory, every key holder's included.
fn more_sysrq(old: i64, new: i64) -> bool {
    old != 1 && new != 0 && (new == 1 || new & !old != 0)
}

const GUARDS: [Guard; 6] = [
    Guard {
        kernel_name: "kernel/yama/ptrace_scope",
        name: "kernel.yama.ptrace_scope",
        guards: "who may ptrace another process",
        weaker: lower,
    },
    Guard {
        kernel_name: "kernel/kptr_restrict",
        name: "kernel.kptr_restrict",
        guards: "kernel addresses hidden from users",
        weaker: lower,
    },
    Guard {
        kernel_name: "kernel/perf_event_paranoid",
        name: "kernel.perf_event_paranoid",
        guards: "who may sample other processes and the kernel with perf",
        weaker: lower,
    },
    Guard {
        kernel_name: "kernel/unprivileged_bpf_disabled",
        name: "kernel.unprivileged_bpf_disabled",
        guards: "BPF for unprivileged users",
        weaker: to_zero,
    },
    Guard {
        kernel_name: "kernel/sysrq",
        name: "kernel.sysrq",
        guards: "the magic SysRq functions (a forced crash makes kdump write all memory)",
        weaker: more_sysrq,
    },
    Guard {
        kernel_name: "kernel/randomize_va_space",
        name: "kernel.randomize_va_space",
        guards: "address-space layout randomisation",
        weaker: lower,
    },
];

/// A sysctl write.
pub fn sysctl(cx: &mut Context, _policy: &Policy, r: &SysctlRecord) {
    let Some(g) = GUARDS.iter().find(|g| g.kernel_name == r.name) else {
        return;
    };
    let (Some(old), Some(new)) = (&r.old, &r.new) else {
        return;
    };
    let (Ok(o), Ok(n)) = (old.trim().parse::<i64>(), new.trim().parse::<i64>()) else {
        return;
    };
    if !(g.weaker)(o, n) {
        return;
    }
    let actor = cx.procs.resolve(&r.task);
    let detail = DumpDetail {
        setting: Some(g.name),
        from: Some(old.trim().to_string()),
        to: Some(new.trim().to_string()),
        ..Default::default()
    };
    let message = format!(
        "{} (pid {}, uid {}) wrote {} = {} (was {}): a kernel guard weakened ({})",
        actor.comm, actor.pid, actor.uid, g.name, n, o, g.guards
    );
    let target = crate::alert::Target::File {
        path: format!("/proc/sys/{}", g.kernel_name),
        dev: 0,
        inode: 0,
    };
    let alert = rule_alert(
        Rule::DumpConfigChange,
        &actor,
        target,
        &cx.host,
        cx.wall(r.task.ts_boot_ns),
    )
    .message(message)
    .dump(detail);
    cx.raise(alert, r.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{
        flow_tests::{raised, task, with},
        tests::proc,
    };

    fn write(
        who: &crate::enrich::proctab::ProcInfo,
        name: &str,
        old: &str,
        new: &str,
    ) -> SysctlRecord {
        SysctlRecord {
            task: task(who),
            name: name.into(),
            old: Some(old.into()),
            new: Some(new.into()),
        }
    }

    #[test]
    fn only_a_weakening_is_an_alert() {
        let sh = proc(50, 1, 0, "/usr/bin/sh");
        let mut cx = with(std::slice::from_ref(&sh));
        let p = Policy::default();
        for (name, old, new) in [
            ("kernel/randomize_va_space", "2", "0\n"),
            ("kernel/randomize_va_space", "0", "2\n"),
            ("kernel/randomize_va_space", "2", "2"),
            ("kernel/perf_event_paranoid", "2", "-1"),
            ("kernel/unprivileged_bpf_disabled", "2", "1"),
            ("kernel/unprivileged_bpf_disabled", "2", "0"),
            ("kernel/yama/ptrace_scope", "1", "0"),
            ("vm/swappiness", "60", "0"),
            ("kernel/sysrq", "176", "1"),
            ("kernel/sysrq", "176", "16"),
            ("kernel/sysrq", "1", "0"),
            ("kernel/sysrq", "0", "8"),
            ("kernel/kptr_restrict", "1", "x"),
        ] {
            sysctl(&mut cx, &p, &write(&sh, name, old, new));
        }
        let a = raised(&mut cx);
        let got: Vec<(&str, &str, &str)> = a
            .iter()
            .map(|a| {
                let d = a.dump.as_ref().unwrap();
                (
                    d.setting.unwrap(),
                    d.from.as_deref().unwrap(),
                    d.to.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("kernel.randomize_va_space", "2", "0"),
                ("kernel.perf_event_paranoid", "2", "-1"),
                ("kernel.unprivileged_bpf_disabled", "2", "0"),
                ("kernel.yama.ptrace_scope", "1", "0"),
                ("kernel.sysrq", "176", "1"),
                ("kernel.sysrq", "0", "8"),
            ]
        );
        assert_eq!(a[0].rule, "dump-config-change");
        assert_eq!(
            a[0].message,
            "sh (pid 50, uid 0) wrote kernel.randomize_va_space = 0 (was 2): a kernel guard weakened (address-space layout randomisation)"
        );
    }
}
