//! Dumps of protected processes: a real SIGSEGV from another process and
//! the real core file the kernel writes.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{lab::*, *};

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

    // The core file is registered: another process opening it is seen.
    let (reader, st) = actor(&["open", core.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let opens = by_pid(&alerts, "dump-file-access", reader);
    assert_eq!(opens.len(), 1, "{alerts:#?}");
    assert_eq!(opens[0]["flow"]["dumped"]["pid"], vp);
    assert_eq!(opens[0]["flow"]["lineage"][0]["how"], "core-dump");
}

#[test]
fn a_pipe_core_pattern_reports_the_helper_and_its_files() {
    use std::os::unix::fs::PermissionsExt;
    let l = lab();
    let helper = l.root.join("ks-helper.sh");
    std::fs::write(&helper, "#!/bin/sh\ncat > \"$1/piped-core.$2\"\n").unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The kernel waits for the helper before the crashed task exits.
    let _limit = PipeLimit::set(1);
    let _pattern = CorePattern::set(&format!("|{} {} %p", helper.display(), l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    let (_, st) = actor(&["signal", &vp.to_string(), "11"], None, None);
    assert!(st.success());
    let status = victim.wait().unwrap();
    assert!(status.core_dumped());
    let written = l.root.join(format!("piped-core.{vp}"));
    assert!(written.exists());

    let alerts = s.alerts_until_marker(&l.marker);
    let dumps: Vec<_> = alerts.iter().filter(|a| a["rule"] == "core-dump").collect();
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    let a = dumps[0];
    assert_eq!(a["target"]["pid"], vp);
    assert_eq!(a["dump"]["helper"][0], helper.to_str().unwrap());
    assert!(a["dump"]["helper_pid"].is_u64(), "{a:#}");
    assert_eq!(a["dump"]["files"][0], written.to_str().unwrap());

    // The helper's file is a registered dump.
    let (reader, st) = actor(&["open", written.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let opens = by_pid(&alerts, "dump-file-access", reader);
    assert_eq!(opens.len(), 1, "{alerts:#?}");
    assert_eq!(opens[0]["flow"]["lineage"][0]["how"], "pipe-helper");
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

    // A process of many threads dies once: the dump releases its threads
    // as the dumper exits, and each can find the group's live count at 0.
    const CRASHES: usize = 24;
    for _ in 0..CRASHES {
        let (_, st) = actor(&["threads-crash", "16"], None, None);
        assert!(st.core_dumped(), "{st:?}");
    }
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        !alerts
            .iter()
            .any(|a| a["rule"] == "core-dump" || a["rule"] == "forced-crash"),
        "unprotected crashes alerted: {alerts:#?}"
    );
    assert_eq!(
        s.metric("keysentry_core_dumps_total{protected=\"false\"}"),
        Some(1.0 + CRASHES as f64)
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
    // Set and restore by the same process: a repeat, folded (docs/alerts.md).
    let cp = of("core_pattern");
    assert_eq!(cp.len(), 1, "set, with the restore folded in: {alerts:#?}");
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
    // The fold is reported with its count when it closes (here: at exit).
    let (rest, _) = s.stop_and_drain();
    let folded: Vec<&serde_json::Value> = rest
        .iter()
        .filter(|a| a["rule"] == "dump-config-change" && a["dump"]["setting"] == "core_pattern")
        .collect();
    assert_eq!(folded.len(), 1, "{rest:#?}");
    assert_eq!(folded[0]["count"], 1, "one repeat folded in: {rest:#?}");
    assert_eq!(folded[0]["process"]["pid"], me);
}

/// RLIMIT_CORE and coredump_filter are per process: set through a thread
/// id of a protected process, they change (and alert for) the process.
#[test]
fn dump_settings_changed_through_a_thread_id_alert_for_the_process() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (_victim, vp, line) = spawn_line(&l.victim_bin, &["victim-threads"]);
    let tid: u32 = line
        .split_whitespace()
        .nth(3)
        .and_then(|t| t.parse().ok())
        .expect("victim-threads prints its thread id");
    assert_ne!(tid, vp);
    let _ = s.alerts_until_marker(&l.marker);

    std::fs::write(format!("/proc/{tid}/coredump_filter"), "0x7f").unwrap();
    let (limiter, st) = actor(&["prlimit-core", &tid.to_string()], None, None);
    assert!(st.success());

    let alerts = s.alerts_until_marker(&l.marker);
    let of = |setting: &str| -> Vec<&serde_json::Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "dump-config-change" && a["dump"]["setting"] == setting)
            .collect()
    };
    let f = of("coredump_filter");
    assert_eq!(f.len(), 1, "{alerts:#?}");
    assert_eq!(f[0]["target"]["pid"], vp);
    let r = of("RLIMIT_CORE");
    assert_eq!(r.len(), 1, "{alerts:#?}");
    assert_eq!(r[0]["process"]["pid"], limiter);
    assert_eq!(r[0]["target"]["pid"], vp);
    assert_eq!(r[0]["dump"]["result"], "success");
}

#[test]
fn files_in_dump_directories_are_registered_dumps() {
    let l = lab();
    let crash = l.root.join("crash");
    std::fs::create_dir(&crash).unwrap();
    let old = crash.join("core.vault.0.boot.4242.1.zst");
    std::fs::write(&old, b"an old dump").unwrap();
    let cfg = format!(
        "{}\n[dumps]\ndirs = [\"{}\"]\n",
        config(&l),
        crash.display()
    );
    let mut s = Sensor::start(&l.root, &cfg);
    let _ = s.alerts_until_marker(&l.marker);
    let tracked = s.metric("keysentry_tracked_files").unwrap();

    // A dump written later (a crash handler's close is what registers it).
    let new = crash.join("_usr_bin_vault.0.crash");
    std::fs::write(&new, b"a new dump").unwrap();
    let deadline = std::time::Instant::now() + deadline();
    while s.metric("keysentry_tracked_files").unwrap() <= tracked {
        assert!(
            std::time::Instant::now() < deadline,
            "new dump not registered"
        );
        std::thread::yield_now();
    }

    let (r1, st) = actor(&["open", old.to_str().unwrap()], None, None);
    assert!(st.success());
    let (r2, st) = actor(&["open", new.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    for (reader, path) in [(r1, &old), (r2, &new)] {
        let a = by_pid(&alerts, "dump-file-access", reader);
        assert_eq!(a.len(), 1, "{}: {alerts:#?}", path.display());
        assert_eq!(a[0]["target"]["path"], path.to_str().unwrap());
        assert_eq!(a[0]["flow"]["lineage"][0]["how"], "dump-handler");
    }
}

/// The core file is the inode the kernel wrote (BPF LSM file_open): a
/// core renamed away and replaced by a decoy before keysentry handles the
/// crash (keysentry stopped meanwhile) is still the file tracked; the
/// decoy at its name is not.
#[test]
fn the_core_file_is_the_inode_the_kernel_wrote_not_what_its_name_holds_later() {
    if let Some(why) = lsm_unavailable() {
        println!("SKIPPED: the core file's identity comes from BPF LSM file_open: {why}");
        return;
    }
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p.%e", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    // keysentry stopped: its records wait in the kernel's rings while the
    // crash is written and the core swapped for a decoy.
    let ks = nix::unistd::Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vp as i32),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();
    let status = victim.wait().unwrap();
    assert!(status.core_dumped(), "the kernel wrote a core");
    let core = l.root.join(format!("core.{vp}.ks-victim"));
    let hidden = l.root.join("hidden.bin");
    std::fs::rename(&core, &hidden).unwrap();
    std::fs::write(&core, b"a decoy, not a core").unwrap();
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();

    let alerts = s.alerts_until_marker(&l.marker);
    let dumps: Vec<_> = alerts.iter().filter(|a| a["rule"] == "core-dump").collect();
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    assert_eq!(dumps[0]["target"]["pid"], vp);
    assert_eq!(dumps[0]["dump"]["path"], core.to_str().unwrap());
    // The name holds another file now.
    assert_eq!(dumps[0]["dump"]["exists"], false, "{:#}", dumps[0]);

    // The real core, under its new name, is the tracked dump; the decoy is
    // nothing.
    let (real_reader, st) = actor(&["open", hidden.to_str().unwrap()], None, None);
    assert!(st.success());
    let (decoy_reader, st) = actor(&["open", core.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let real = by_pid(&alerts, "dump-file-access", real_reader);
    assert_eq!(real.len(), 1, "{alerts:#?}");
    assert_eq!(real[0]["flow"]["dumped"]["pid"], vp);
    assert!(
        by_pid(&alerts, "dump-file-access", decoy_reader).is_empty(),
        "the decoy is not the dump: {alerts:#?}"
    );
}
