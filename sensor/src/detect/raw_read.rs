//! `raw-read`: the kernel's memory (/dev/mem, /dev/kmem, /dev/port,
//! /proc/kcore) or a block device under a watched key store opened. Either
//! reads every key past the file permissions: the keys in any process's
//! memory, or the key store's blocks (`debugfs`, `dd if=/dev/sda2`). The
//! kernel recognises the device by its number (or procfs's kcore), never
//! by path (`sensor-ebpf/src/probes/open_raw.rs`); this rule decides:
//!
//! - an `[[allow]]` with `raw_read = true` whose executable is genuine and
//!   uncontrolled (`Policy::allowed_raw_read`: udev's probes, LVM, smartd,
//!   fsck), and keysentry itself, are no alert;
//! - anything else is high: kernel memory under T1003 (credential
//!   dumping), a block device under T1006 (direct volume access), with the
//!   key paths the device holds.

use sensor_common::{RAW_BLOCK, RAW_KCORE, RAW_KMEM, RAW_MEM, RAW_PORT, RAW_SWAP};
use serde_json::Value;

use crate::{
    alert::{RawDetail, Target},
    detect::{Policy, access, kernel_reader::is_keysentry, rule_alert},
    enrich::{context::Context, devnum::st_dev},
    ingest::decode::open::OpenRecord,
    rules::Rule,
};

/// The key paths block device `rdev` holds, as the live system says (the
/// recorded answer in a replay).
fn holds(cx: &mut Context, rdev: u32) -> Vec<String> {
    let live = cx.raw_devs.holds(rdev);
    let v = cx.view.value(format!("raw-dev-holds:{rdev}"), || {
        Value::Array(live.into_iter().map(Value::String).collect())
    });
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether block device `rdev` is an active swap area (recorded).
fn is_swap(cx: &mut Context, rdev: u32) -> bool {
    let live = cx.raw_devs.is_swap(rdev);
    cx.view
        .value(format!("raw-dev-swap:{rdev}"), || Value::Bool(live))
        .as_bool()
        .unwrap_or(false)
}

/// A raw open.
pub fn raw_open(cx: &mut Context, policy: &Policy, r: &OpenRecord) {
    let actor = cx.procs.resolve(&r.task);
    if policy.allowed_raw_read(&actor) || is_keysentry(cx, &actor) {
        return;
    }
    let (device, what) = match r.raw {
        RAW_MEM => ("mem", "physical memory".to_string()),
        RAW_KMEM => ("kmem", "kernel virtual memory".to_string()),
        RAW_PORT => ("port", "I/O ports".to_string()),
        RAW_KCORE => ("kcore", "kernel memory (/proc/kcore)".to_string()),
        RAW_BLOCK => ("block", String::new()),
        RAW_SWAP => (
            "swap",
            "an active swap file: pages of every process, keys included".to_string(),
        ),
        _ => return,
    };
    let rdev = (!matches!(r.raw, RAW_KCORE | RAW_SWAP))
        .then(|| format!("{}:{}", r.rdev >> 20, r.rdev & 0xfffff));
    let holds = if r.raw == RAW_BLOCK {
        holds(cx, r.rdev)
    } else {
        Vec::new()
    };
    let swap_area = r.raw == RAW_BLOCK && is_swap(cx, r.rdev);
    let what = if swap_area && holds.is_empty() {
        format!(
            "block device {}, an active swap area: pages of every process, keys included",
            rdev.as_deref().unwrap_or_default()
        )
    } else if r.raw == RAW_BLOCK {
        format!(
            "block device {}, which holds the key store{} {}",
            rdev.as_deref().unwrap_or_default(),
            if holds.len() == 1 { "" } else { "s" },
            holds.join(", ")
        )
    } else {
        what
    };
    let mut path = r.path.clone().unwrap_or_default();
    if r.path_truncated {
        path.insert_str(0, "...");
    }
    let acc = access(r.flags);
    let message = format!(
        "{} (pid {}, uid {}) opened {path} for {acc}: {what}; every key there is readable past the file permissions",
        actor.comm, actor.pid, actor.uid
    );
    let mut alert = rule_alert(
        Rule::RawRead,
        &actor,
        Target::File {
            path,
            dev: st_dev(r.dev),
            inode: r.ino,
        },
        &cx.host,
        cx.wall(r.task.ts_boot_ns),
    )
    .message(message)
    .raw(RawDetail {
        device,
        rdev,
        access: acc,
        arg: r.arg.clone(),
        holds,
    });
    if r.raw != RAW_BLOCK || swap_area {
        alert = alert.attack(Rule::RawRead.alt_attack());
    }
    cx.raise(alert, r.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        alert::Severity,
        detect::{
            flow_tests::{raised, task, with},
            tests::{open_rec, policy, proc},
        },
        enrich::proctab::ProcInfo,
    };

    fn open(actor: &ProcInfo, raw: u32, rdev: u32, path: &str) -> OpenRecord {
        let mut r = open_rec(0, 3, 0);
        r.task = task(actor);
        r.raw = raw;
        r.rdev = rdev;
        r.path = Some(path.into());
        r.arg = Some(path.into());
        r
    }

    const SMARTD: &str = "[[allow]]\nexe = \"/usr/sbin/smartd\"\nraw_read = true\n";

    /// Kernel memory and a key store's device are high, each with its
    /// technique; an allowance holds for the genuine, uncontrolled
    /// program only, and allows no key opens.
    #[test]
    fn raw_opens_are_high_unless_allowed() {
        let dd = proc(300, 1, 0, "/usr/bin/dd");
        let smartd = proc(301, 1, 0, "/usr/sbin/smartd");
        let preloaded = ProcInfo {
            allow_bypass: Some(Arc::from("LD_PRELOAD at exec")),
            ..proc(302, 1, 0, "/usr/sbin/smartd")
        };
        let lookalike = ProcInfo {
            exe_genuine: false,
            exe_in_root: false,
            ..proc(303, 1, 0, "/usr/sbin/smartd")
        };
        let mut cx = with(&[
            dd.clone(),
            smartd.clone(),
            preloaded.clone(),
            lookalike.clone(),
        ]);
        let p = policy(SMARTD);
        raw_open(&mut cx, &p, &open(&dd, RAW_MEM, (1 << 20) | 1, "/tmp/m"));
        raw_open(&mut cx, &p, &open(&dd, RAW_KCORE, 0, "/proc/kcore"));
        raw_open(&mut cx, &p, &open(&dd, RAW_BLOCK, 8 << 20, "/dev/sda"));
        for a in [&smartd, &preloaded, &lookalike] {
            raw_open(&mut cx, &p, &open(a, RAW_BLOCK, 8 << 20, "/dev/sda"));
        }
        let a = raised(&mut cx);
        assert_eq!(
            a.iter().map(|a| a.process.pid).collect::<Vec<_>>(),
            vec![300, 300, 300, 302, 303]
        );
        assert!(
            a.iter()
                .all(|a| a.rule == "raw-read" && a.severity == Severity::High)
        );
        let raw = a[0].raw.as_ref().unwrap();
        assert_eq!((raw.device, raw.rdev.as_deref()), ("mem", Some("1:1")));
        assert_eq!(raw.arg.as_deref(), Some("/tmp/m"));
        assert_eq!(a[0].attack, "T1003");
        assert_eq!(a[1].raw.as_ref().unwrap().rdev, None);
        assert_eq!(a[2].attack, "T1006");
        assert_eq!(a[2].raw.as_ref().unwrap().rdev.as_deref(), Some("8:0"));
        assert!(!p.allowed(&smartd, None));
    }
}
