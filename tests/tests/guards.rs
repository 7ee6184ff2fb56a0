//! Kernel guards weakened: real writes to /proc/sys (through `sh -c 'echo
//! V > FILE'`, as an admin or a script would) that lower
//! kernel.randomize_va_space and kernel.perf_event_paranoid are
//! `dump-config-change` alerts naming the knob, the value in force and the
//! value written; writing the same value again (systemd-sysctl, `sysctl
//! --system`) and raising a guard back are not. Each knob is restored
//! whatever happens.

mod common;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

/// Sets a sysctl and restores its value on drop.
struct Knob {
    path: &'static str,
    old: String,
}

impl Knob {
    fn new(path: &'static str) -> Option<Knob> {
        let old = std::fs::read_to_string(path).ok()?;
        Some(Knob {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

/// `sh -c 'echo VALUE > PATH'`: its pid.
fn echo(value: &str, path: &str) -> u32 {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(format!("echo {value} > {path}"))
        .spawn()
        .unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success(), "echo {value} > {path}");
    pid
}

const ASLR: &str = "/proc/sys/kernel/randomize_va_space";
const PERF: &str = "/proc/sys/kernel/perf_event_paranoid";

#[test]
fn a_weakened_kernel_guard_is_an_alert_a_hardened_one_is_not() {
    require_root();
    if !["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|d| Path::new(d).join("cgroup.procs").exists() && !Path::new(d).join("tasks").exists())
    {
        println!("SKIPPED: no cgroup v2 hierarchy (the sysctl hook attaches to its root)");
        return;
    }
    let (Some(aslr), Some(perf)) = (Knob::new(ASLR), Knob::new(PERF)) else {
        println!("SKIPPED: this kernel has no {ASLR} or {PERF}");
        return;
    };
    let tmp = tempdir();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let marker = keys.join("zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let mut s = Sensor::start(
        tmp.path(),
        &format!("[[key_path]]\npath = \"{}\"\n", keys.display()),
    );
    if let Some(l) = s.logged("probe cgroup_sysctl not attached") {
        println!("SKIPPED: the kernel refused the cgroup sysctl program: {l}");
        return;
    }
    // From a known strong state, so "lower" is a real weakening.
    let same = echo("2", ASLR);
    let weaken = echo("0", ASLR);
    let harden = echo("2", ASLR);
    let p_base: i64 = perf.old.parse().unwrap();
    let p_low = (p_base - 1).to_string();
    let perf_weaken = echo(&p_low, PERF);
    let perf_back = echo(&perf.old, PERF);
    let alerts = s.alerts_until_marker(&marker);
    drop(aslr);
    drop(perf);

    let of = |pid: u32| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "dump-config-change" && a["process"]["pid"] == pid)
            .collect()
    };
    for (pid, what) in [
        (harden, "raising ASLR back"),
        (perf_back, "raising perf_event_paranoid back"),
    ] {
        assert!(of(pid).is_empty(), "{what} must not alert: {alerts:#?}");
    }
    // Writing 2 over whatever the host had: an alert only if that lowered it.
    assert!(of(same).is_empty(), "{alerts:#?}");

    let a = of(weaken);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    let a = a[0];
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["dump"]["setting"], "kernel.randomize_va_space");
    assert_eq!(a["dump"]["from"], "2");
    assert_eq!(a["dump"]["to"], "0");
    assert_eq!(a["target"]["path"], ASLR);
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("kernel guard weakened"),
        "{a:#}"
    );

    let a = of(perf_weaken);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["dump"]["setting"], "kernel.perf_event_paranoid");
    assert_eq!(a[0]["dump"]["to"], p_low.as_str());
}
