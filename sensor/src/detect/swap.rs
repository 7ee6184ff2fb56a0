//! Swap and hibernation (`dump-config-change`, with the setting named):
//! a swap area switched on (swapon), and a hibernation control written in
//! sysfs's power/ directory (`/sys/power/state`, `disk`, `resume`,
//! `resume_offset`). Both send memory to disk: the kernel swaps out
//! every process's pages, keys included, and hibernation writes all of
//! memory to the swap area, where whoever can read it finds them. Medium:
//! the kernel cannot tell a suspend to RAM (`mem` written to
//! `/sys/power/state`) from hibernation (`disk`) at the open. Reads of an
//! active swap area are `raw-read` (`raw_read.rs`).

use sensor_common::{DCFG_SWAPON, POWER_DISK, POWER_RESUME, POWER_RESUME_OFFSET, POWER_STATE};
use serde_json::Value;

use crate::{
    alert::{DumpDetail, Severity, Target},
    detect::{Policy, kernel_reader::is_keysentry, rule_alert},
    enrich::context::Context,
    ingest::decode::memory::DumpConfigRecord,
    rules::Rule,
};

/// The active swap areas (/proc/swaps: path and type), recorded.
fn swap_areas(cx: &mut Context) -> Vec<String> {
    let v = cx.view.value("proc-swaps".to_string(), || {
        let s = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        Value::Array(
            s.lines()
                .skip(1)
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    Some(Value::String(format!("{} ({})", f.next()?, f.next()?)))
                })
                .collect(),
        )
    });
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A swap area switched on, or a hibernation control opened for writing.
pub fn swap_config(cx: &mut Context, _policy: &Policy, d: &DumpConfigRecord) {
    let actor = cx.procs.resolve(&d.task);
    if is_keysentry(cx, &actor) {
        return;
    }
    let ok = d.ret >= 0;
    let (setting, path, what) = if d.what == DCFG_SWAPON {
        // A new swap partition is a raw device from now on.
        cx.sync_swap_devs();
        let areas = swap_areas(cx);
        (
            "swapon",
            areas.join(", "),
            "a swap area switched on: every process's pages, keys included, may be written to it"
                .to_string(),
        )
    } else {
        let (setting, path) = match d.value {
            POWER_STATE => ("/sys/power/state", "/sys/power/state"),
            POWER_DISK => ("/sys/power/disk", "/sys/power/disk"),
            POWER_RESUME => ("/sys/power/resume", "/sys/power/resume"),
            POWER_RESUME_OFFSET => ("/sys/power/resume_offset", "/sys/power/resume_offset"),
            _ => return,
        };
        (
            setting,
            path.to_string(),
            "a hibernation control: hibernation writes all of memory, every key in it, to the swap area"
                .to_string(),
        )
    };
    let message = format!(
        "{} (pid {}, uid {}) {} {setting}: {what}",
        actor.comm,
        actor.pid,
        actor.uid,
        if d.what == DCFG_SWAPON {
            "ran"
        } else if ok {
            "opened for writing"
        } else {
            "tried to open for writing"
        }
    );
    let detail = DumpDetail {
        setting: Some(setting),
        value: (d.what == DCFG_SWAPON).then_some(d.value),
        result: Some(if ok { "success" } else { "failed" }),
        ..Default::default()
    };
    let alert = rule_alert(
        Rule::DumpConfigChange,
        &actor,
        Target::File {
            path,
            dev: 0,
            inode: 0,
        },
        &cx.host,
        cx.wall(d.task.ts_boot_ns),
    )
    .message(message)
    .dump(detail)
    .verdict(Severity::Medium, 50);
    cx.raise(alert, d.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alert::Severity,
        detect::{
            flow_tests::{raised, task, with},
            tests::{policy, proc},
        },
    };
    use sensor_common::DCFG_SYS_POWER;

    /// swapon and a hibernation control are medium dump-config-changes
    /// naming the setting.
    #[test]
    fn swap_and_hibernation_are_medium() {
        let admin = proc(600, 1, 0, "/usr/sbin/swapon");
        let mut cx = with(std::slice::from_ref(&admin));
        let p = policy("");
        let rec = |what, value| DumpConfigRecord {
            task: task(&admin),
            ret: 0,
            value,
            what,
            target: 0,
        };
        swap_config(&mut cx, &p, &rec(DCFG_SWAPON, 0));
        swap_config(&mut cx, &p, &rec(DCFG_SYS_POWER, POWER_RESUME));
        let a = raised(&mut cx);
        assert_eq!(a.len(), 2);
        assert!(
            a.iter()
                .all(|a| a.rule == "dump-config-change" && a.severity == Severity::Medium)
        );
        assert_eq!(a[0].dump.as_ref().unwrap().setting, Some("swapon"));
        assert_eq!(
            a[1].dump.as_ref().unwrap().setting,
            Some("/sys/power/resume")
        );
    }
}
