//! The command line: config checking and refusal to run unprivileged.

mod common;

use std::{os::unix::process::CommandExt, process::Command};

use common::*;

#[test]
fn check_config_names_the_bad_field() {
    let dir = tempdir();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[key_path]]\npath = \"relative/path\"\n").unwrap();
    let out = Command::new(keysentry_bin())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key_path[0].path"), "{err}");

    std::fs::write(&bad, "[metrics]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
    let out = Command::new(keysentry_bin())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));

    // `run` refuses the same file before loading anything.
    let out = Command::new(keysentry_bin())
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn default_config_is_valid() {
    let dir = tempdir();
    let out = Command::new(keysentry_bin())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = Command::new(keysentry_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_to_run_without_privileges() {
    require_root();
    let out = Command::new(world_executable(&keysentry_bin()))
        .arg("run")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("root"), "{err}");
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY once the probes are
/// attached, watchdog pings from the event loop while it runs, STOPPING at
/// SIGTERM. The socket stands in for systemd's.
#[test]
fn it_tells_systemd_it_is_ready_and_pings_the_watchdog_from_its_loop() {
    use std::os::unix::net::UnixDatagram;
    require_root();
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(deadline())).unwrap();
    let usec = std::path::PathBuf::from("200000");
    let s = Sensor::start_env(
        dir.path(),
        "",
        &[],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", &usec)],
    );
    let next = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification from keysentry");
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    assert_eq!(next(), "READY=1");
    // Pings keep coming while the loop runs (each one a tick of the loop).
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    s.stop();
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
}

/// The config decides what is watched and who is allowed: a file someone
/// other than root owns or can write is refused, with why, before anything
/// is loaded.
#[test]
fn refuses_a_config_others_could_have_written() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let dir = tempdir();
    let cfg = dir.path().join("keysentry.toml");
    std::fs::write(&cfg, default_config_body()).unwrap();
    let run = || {
        let out = Command::new(keysentry_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = run();
    assert!(e.contains("refused: mode 666: writable by anyone"), "{e}");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o620)).unwrap();
    let e = run();
    assert!(e.contains("writable by its group"), "{e}");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&cfg, Some(65534), None).unwrap();
    let e = run();
    assert!(e.contains("refused: owned by uid 65534, not root"), "{e}");
}

/// Detection never depends on the metrics server: with its port taken,
/// keysentry starts, says so, and serves metrics once the port is free.
#[test]
fn a_taken_metrics_port_is_a_warning_and_is_retried() {
    require_root();
    let dir = tempdir();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut s = Sensor::start_on_port(dir.path(), "", port);
    let warn = s
        .logged("retrying every")
        .expect("a warning about the metrics port");
    assert!(warn.contains(&format!("127.0.0.1:{port}")), "{warn}");
    drop(squatter);
    s.wait_log(&format!("metrics on http://127.0.0.1:{port}/metrics"));
    assert!(s.metrics().contains("keysentry_events_total"));
}

/// With tracefs mounted (the unit's privileged ExecStartPre) keysentry
/// needs no CAP_SYS_ADMIN where perf_event_paranoid is 2 or less: it runs
/// and alerts without it.
#[test]
fn it_runs_and_alerts_without_cap_sys_admin() {
    require_root();
    // Debian's kernels carry perf_event_paranoid 3, where only
    // CAP_SYS_ADMIN may open perf events (attach a tracepoint).
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2);
    if paranoid > 2 {
        eprintln!(
            "SKIPPED: perf_event_paranoid is {paranoid}: this kernel lets only CAP_SYS_ADMIN attach tracepoints"
        );
        return;
    }
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("ca.key");
    std::fs::write(&key, b"k").unwrap();
    let mut s = Sensor::start_wrapped(
        dir.path(),
        &format!("[[key_path]]\npath = \"{}\"\n", keys.display()),
        &[actor_bin().to_str().unwrap(), "without-cap", "21"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN still effective: {eff:x}");
    let (pid, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until(|a| a["process"]["pid"] == pid);
    let a = by_pid(&alerts, "key-file-open", pid);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["target"]["path"], key.to_str().unwrap());
}
