//! Dumps of protected processes: a real SIGSEGV from another process and
//! the real core file the kernel writes.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::{
        fs::PermissionsExt,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;

/// Sets /proc/sys/kernel/core_pattern and restores the old one on drop,
/// whatever happens in the test.
struct CorePattern {
    old: String,
}

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

impl CorePattern {
    fn set(p: &str) -> Self {
        let old = std::fs::read_to_string(CORE_PATTERN).unwrap();
        std::fs::write(CORE_PATTERN, p).unwrap();
        CorePattern { old }
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PATTERN, self.old.trim_end());
    }
}

fn spawn_victim(bin: &Path) -> (Child, u32) {
    spawn_as(bin, "victim")
}

fn spawn_as(bin: &Path, role: &str) -> (Child, u32) {
    let mut c = Command::new(bin);
    c.arg(role).stdin(Stdio::piped()).stdout(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = child.id();
    (child, pid)
}

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    victim_bin: PathBuf,
}

fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("keys")).unwrap();
    let marker = root.join("keys/zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let victim_bin = root.join("ks-victim");
    std::fs::copy(actor_bin(), &victim_bin).unwrap();
    std::fs::set_permissions(&victim_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
    }
}

fn config(l: &Lab) -> String {
    format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
        l.root.join("keys").display(),
        l.victim_bin.display()
    )
}

#[test]
fn forced_crash_then_core_dump_of_a_protected_process() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    let (sender, st) = actor(&["signal", &vp.to_string(), "11"], None, None);
    assert!(st.success());
    let status = victim.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert!(status.core_dumped(), "the kernel wrote a core");
    let core = l.root.join(format!("core.{vp}.ks-victim"));
    assert!(core.exists(), "{} missing", core.display());

    let alerts = s.alerts_until_marker(&l.marker);
    let forced: Vec<_> = alerts
        .iter()
        .filter(|a| a["rule"] == "forced-crash")
        .collect();
    assert_eq!(forced.len(), 1, "{alerts:#?}");
    let a = forced[0];
    assert_eq!(a["process"]["pid"], sender);
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["dump"]["signal"], "SIGSEGV");
    assert_eq!(a["dump"]["sent_by"], "kill");
    assert_eq!(a["dump"]["delivered"], true);
    assert_eq!(a["severity"], "high");

    let dumps: Vec<_> = alerts.iter().filter(|a| a["rule"] == "core-dump").collect();
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    let a = dumps[0];
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["dump"]["path"], core.to_str().unwrap());
    assert_eq!(a["dump"]["exists"], true);
    assert_eq!(a["severity"], "critical");
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"true\"}"),
        Some(1.0)
    );
}

#[test]
fn an_unprotected_crash_is_counted_not_alerted() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut plain, pp) = spawn_victim(&actor_bin());
    let _ = s.alerts_until_marker(&l.marker);
    let (_, st) = actor(&["signal", &pp.to_string(), "11"], None, None);
    assert!(st.success());
    assert!(plain.wait().unwrap().core_dumped());
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        !alerts.iter().any(|a| a["target"]["pid"] == pp),
        "unprotected crash alerted: {alerts:#?}"
    );
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"false\"}"),
        Some(1.0)
    );
}

#[test]
fn changes_that_enable_or_redirect_dumps_alert() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (_victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    let pattern = CorePattern::set(&format!("{}/core.%p", l.root.display()));
    drop(pattern);
    std::fs::write(format!("/proc/{vp}/coredump_filter"), "0x7f").unwrap();
    let (limiter, st) = actor(&["prlimit-core", &vp.to_string()], None, None);
    assert!(st.success());
    let (_dumpable, dp) = spawn_as(&l.victim_bin, "victim-dumpable");

    let alerts = s.alerts_until_marker(&l.marker);
    let of = |setting: &str| -> Vec<&serde_json::Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "dump-config-change" && a["dump"]["setting"] == setting)
            .collect()
    };
    let me = std::process::id();
    let cp = of("core_pattern");
    assert_eq!(cp.len(), 2, "set and restore: {alerts:#?}");
    assert_eq!(cp[0]["process"]["pid"], me);
    assert_eq!(cp[0]["target"]["path"], "/proc/sys/kernel/core_pattern");
    let f = of("coredump_filter");
    assert_eq!(f.len(), 1, "{alerts:#?}");
    assert_eq!(f[0]["target"]["pid"], vp);
    let r = of("RLIMIT_CORE");
    assert_eq!(r.len(), 1, "{alerts:#?}");
    assert_eq!(r[0]["process"]["pid"], limiter);
    assert_eq!(r[0]["target"]["pid"], vp);
    assert_eq!(r[0]["dump"]["result"], "success");
    let d = of("PR_SET_DUMPABLE");
    assert_eq!(d.len(), 1, "{alerts:#?}");
    assert_eq!(d[0]["process"]["pid"], dp);
    assert_eq!(d[0]["dump"]["value"], 1);
}
