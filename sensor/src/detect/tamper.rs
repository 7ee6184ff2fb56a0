//! `key-holder-tamper`: code put into a program that holds keys or may
//! open them, from its start. The kernel checks, at the exec of a
//! protected program (`[[protected]]` exe or comm, or a child of a
//! protected process) and of an allowlisted one, whether it runs traced
//! and whether LD_PRELOAD or LD_AUDIT (code the loader runs inside it) is
//! in its new environment (`allowance_at_exec`, probes/process.rs); this
//! rule raises the alert at that exec. LD_LIBRARY_PATH alone is no alert
//! (vendor and HSM client software starts with it), though it still
//! withdraws an allowance.

use sensor_common::{
    EXEC_ALLOWLISTED, EXEC_ENV_UNCHECKED, EXEC_LD_AUDIT, EXEC_LD_PRELOAD, EXEC_PROTECTED,
    EXEC_PTRACED,
};

use crate::{
    alert::Severity,
    detect::{Policy, process_target, rule_alert},
    enrich::context::Context,
    ingest::decode::Task,
    rules::Rule,
};

/// An exec's EXEC_* bits, after the process table and protection took the
/// exec in.
pub fn exec(cx: &mut Context, policy: &Policy, task: &Task, flags: u32) {
    let subject = if flags & EXEC_PROTECTED != 0 {
        "protected process"
    } else if flags & EXEC_ALLOWLISTED != 0 {
        "allowlisted program"
    } else {
        return;
    };
    let mut vars = Vec::new();
    if flags & EXEC_LD_PRELOAD != 0 {
        vars.push("LD_PRELOAD");
    }
    if flags & EXEC_LD_AUDIT != 0 {
        vars.push("LD_AUDIT");
    }
    let traced = flags & EXEC_PTRACED != 0;
    let unchecked = flags & EXEC_ENV_UNCHECKED != 0;
    if vars.is_empty() && !traced && !unchecked {
        return;
    }
    let Some(p) = cx.procs.get(task.pid).cloned() else {
        return;
    };
    // An allowlisted path that is not this host's file holds no
    // allowance anyway (the look-alike is seen when it opens a key).
    if subject == "allowlisted program" && !(p.exe_genuine && policy.names_exe(&p.exe)) {
        return;
    }
    let mut what = Vec::new();
    if !vars.is_empty() {
        what.push(format!(
            "with {} in its environment: the loader runs that code inside it",
            vars.join(" and ")
        ));
    }
    if traced {
        what.push("under a tracer: the tracer reads and writes its memory".to_string());
    }
    if unchecked {
        what.push("with an environment too large to check for loader variables".to_string());
    }
    let message = format!(
        "{subject} {} (pid {}, uid {}) started {}",
        p.comm,
        p.pid,
        p.uid,
        what.join("; ")
    );
    let mut alert = rule_alert(
        Rule::KeyHolderTamper,
        &p,
        process_target(&p),
        &cx.host,
        cx.wall(task.ts_boot_ns),
    )
    .message(message);
    if vars.is_empty() && traced {
        alert = alert.attack(Rule::KeyHolderTamper.alt_attack());
    } else if vars.is_empty() {
        alert = alert.verdict(Severity::Medium, 45);
    }
    cx.raise(alert, task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use sensor_common::EXEC_LD_ENV;

    use super::*;
    use crate::{
        detect::{
            flow_tests::{raised, task, with},
            tests::{policy, proc},
        },
        enrich::proctab::ProcInfo,
    };

    const ALLOW_AGENT: &str =
        "[[key_path]]\npath = \"/k\"\n[[allow]]\nexe = \"/usr/bin/agent\"\nkey_path = \"/k\"\n";

    #[test]
    fn loader_code_or_a_tracer_at_a_protected_or_allowed_exec() {
        let vault = proc(20, 1, 0, "/usr/bin/vault");
        let agent = proc(30, 1, 0, "/usr/bin/agent");
        let lookalike = ProcInfo {
            exe_genuine: false,
            ..proc(31, 1, 0, "/usr/bin/agent")
        };
        let other = proc(40, 1, 0, "/usr/bin/other");
        let mut cx = with(&[
            vault.clone(),
            agent.clone(),
            lookalike.clone(),
            other.clone(),
        ]);
        let p = policy(ALLOW_AGENT);
        let pre = EXEC_LD_ENV | EXEC_LD_PRELOAD;
        for (who, flags) in [
            (&vault, EXEC_PROTECTED | pre),
            (&vault, EXEC_PROTECTED | EXEC_LD_ENV),
            (&vault, EXEC_PROTECTED),
            (&vault, EXEC_PROTECTED | EXEC_PTRACED),
            (&vault, EXEC_PROTECTED | EXEC_ENV_UNCHECKED),
            (&agent, EXEC_ALLOWLISTED | EXEC_LD_ENV | EXEC_LD_AUDIT),
            (&lookalike, EXEC_ALLOWLISTED | pre),
            (&other, pre),
        ] {
            exec(&mut cx, &p, &task(who), flags);
        }
        let a = raised(&mut cx);
        let got: Vec<(u32, &str, Severity)> = a
            .iter()
            .map(|a| (a.process.pid, a.attack, a.severity))
            .collect();
        assert_eq!(
            got,
            vec![
                (20, "T1574.006", Severity::High),
                (20, "T1055.008", Severity::High),
                (20, "T1574.006", Severity::Medium),
                (30, "T1574.006", Severity::High),
            ]
        );
        assert!(
            a[0].message.starts_with("protected process vault (pid 20"),
            "{}",
            a[0].message
        );
        assert!(a[0].message.contains("LD_PRELOAD"), "{}", a[0].message);
        assert!(a[3].message.contains("LD_AUDIT"), "{}", a[3].message);
        assert!(matches!(
            a[0].target,
            crate::alert::Target::Process { pid: 20, .. }
        ));
    }
}
