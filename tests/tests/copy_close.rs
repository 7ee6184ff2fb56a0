//! A copy of a key ended without close(2) is still decided and scanned
//! (issue 14): the writer exits with it open, close_range()s it, dup2()s
//! another file over it, or closes it with io_uring's IORING_OP_CLOSE (of a
//! descriptor, or of a fixed file slot it was opened into and written
//! through); each gives the tracked-copy alert and the
//! key-material scan a plain close gives. And a TAINTED map filled by
//! thousands of self-tainted processes does not hide a real theft.

mod common;

use std::{path::Path, process::Command};

use common::{lab::*, *};
use serde_json::Value;

/// The tracked-copy and key-material alerts of `dst` written by `pid`
/// from `key`, both seen in `alerts`.
fn assert_copy_scanned(alerts: &[Value], key: &Path, dst: &Path, pid: u32) {
    assert_copy_scanned_via(alerts, key, dst, pid, "write");
}

fn assert_copy_scanned_via(alerts: &[Value], key: &Path, dst: &Path, pid: u32, via: &str) {
    let tc = about(alerts, "tracked-copy", dst);
    assert_eq!(
        tc.len(),
        1,
        "one tracked-copy for {}: {alerts:#?}",
        dst.display()
    );
    assert_eq!(tc[0]["process"]["pid"], pid);
    assert_eq!(tc[0]["flow"]["via"], via);
    assert_eq!(tc[0]["flow"]["lineage"][0]["path"], key.to_str().unwrap());
    let km = about(alerts, "key-material", dst);
    assert_eq!(
        km.len(),
        1,
        "one key-material for {}: {alerts:#?}",
        dst.display()
    );
    assert_eq!(km[0]["process"]["pid"], pid);
    assert_eq!(km[0]["severity"], "critical");
    assert_eq!(km[0]["flow"]["keys"]["findings"][0]["kind"], "ed25519");
}

/// `ks-actor copy-end HOW` where it can run: its copy decided while the
/// writer still runs. Where it cannot (exit status `unavailable`), SKIP
/// with `why`; its copy is still decided at its exit.
fn copy_ended_where_possible(
    s: &mut Sensor,
    key: &Path,
    root: &Path,
    how: &str,
    unavailable: i32,
    why: &str,
    via: &str,
) {
    let dst = root.join(format!("out-{how}.bin"));
    let (mut c, line) = spawn_first_line(&[
        "copy-end",
        how,
        key.to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    if line.trim() == "ready" {
        let pid = c.id();
        let alerts = s.alerts_until(|a| a["rule"] == "key-material");
        assert_copy_scanned_via(&alerts, key, &dst, pid, via);
        assert!(
            c.try_wait().unwrap().is_none(),
            "{how}: the writer is alive"
        );
        release(c);
    } else {
        let st = c.wait().unwrap();
        assert_eq!(st.code(), Some(unavailable), "{how}: {st}");
        println!("SKIPPED: {why}");
        let _ = s.alerts_until(|a| a["rule"] == "key-material");
    }
}

#[test]
fn a_copy_ended_by_exit_close_range_dup2_or_io_uring_is_scanned_like_a_close() {
    let l = lab();
    let key = l.root.join("keys/signing.pem");
    if !openssl_ed25519(&key) {
        return;
    }
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let k = key.to_str().unwrap();

    // exit_group with the copy's descriptor open.
    let dst = l.root.join("out-exit.bin");
    let (pid, st) = actor(&["copy-end", "exit", k, dst.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until(|a| a["rule"] == "key-material");
    assert_copy_scanned(&alerts, &key, &dst, pid);

    // close_range and dup2 over it: decided while the writer still runs
    // (so not by its exit).
    for how in ["close-range", "dup2"] {
        let dst = l.root.join(format!("out-{how}.bin"));
        let mut c = spawn_ready(&["copy-end", how, k, dst.to_str().unwrap()]);
        let pid = c.id();
        let alerts = s.alerts_until(|a| a["rule"] == "key-material");
        assert_copy_scanned(&alerts, &key, &dst, pid);
        assert!(
            c.try_wait().unwrap().is_none(),
            "{how}: the writer is alive"
        );
        release(c);
    }

    // close_range of a copy far up a large table (descriptor 100000, past
    // a 2^16 scan), where the descriptor limit can be raised that far.
    copy_ended_where_possible(
        &mut s,
        &key,
        &l.root,
        "close-range-far",
        4,
        "close_range far up the table: RLIMIT_NOFILE cannot be raised above 100000 here",
        "write",
    );
    // io_uring's IORING_OP_CLOSE, where io_uring works (kernel.io_uring_disabled).
    copy_ended_where_possible(
        &mut s,
        &key,
        &l.root,
        "uring-close",
        3,
        "io_uring close: io_uring is not available here",
        "write",
    );
    // Opened, written and closed through an io_uring fixed file slot only
    // (a direct descriptor): the close is found in the ring's table.
    copy_ended_where_possible(
        &mut s,
        &key,
        &l.root,
        "uring-slot-close",
        3,
        "io_uring slot close: io_uring or direct descriptors are not available here",
        "io_uring",
    );

    // A dup2 over another descriptor ends nothing: no decision while the
    // copy stays open; its writer's exit decides it.
    let dst = l.root.join("out-dup2-other.bin");
    let c = spawn_ready(&["copy-end", "dup2-other", k, dst.to_str().unwrap()]);
    let pid = c.id();
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        about(&alerts, "tracked-copy", &dst).is_empty(),
        "{alerts:#?}"
    );
    assert!(
        about(&alerts, "key-material", &dst).is_empty(),
        "{alerts:#?}"
    );
    release(c);
    let alerts = s.alerts_until(|a| a["rule"] == "key-material");
    assert_copy_scanned(&alerts, &key, &dst, pid);
}

fn insert_failures(s: &Sensor, map: &str) -> u64 {
    s.metric(&format!(
        "keysentry_map_insert_failures_total{{map=\"{map}\"}}"
    ))
    .map_or(0, |v| v as u64)
}

#[test]
fn a_taint_map_full_of_self_tainted_processes_does_not_hide_a_real_copy() {
    let l = lab();
    let key = l.root.join("keys/deploy.pem");
    std::fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let own = l.root.join("mine");
    std::fs::create_dir_all(&own).unwrap();
    let filler = own.join("filler.key");
    std::fs::write(&filler, b"not a key").unwrap();
    let cfg = format!("{}\n[[key_name]]\nsuffix = \".key\"\n", config(&l));
    // TAINTED shrunk to 64 entries: 100 children of a process that read a
    // file matched by name only fill it.
    let mut s = Sensor::start_with(&l.root, &cfg, &["--map-entries", "TAINTED=64"]);
    let _ = s.alerts_until_marker(&l.marker);
    let fill = spawn_ready(&["taint-fill", filler.to_str().unwrap(), "100"]);
    let _ = s.alerts_until_marker(&l.marker);
    // The map is full: the fill's later children were refused (a warning
    // and a metric, counted every 50 ms tick).
    let end = std::time::Instant::now() + deadline();
    while insert_failures(&s, "TAINTED") == 0 {
        assert!(std::time::Instant::now() < end, "TAINTED never filled");
        std::thread::yield_now();
    }

    // A real key read and copy still taints (the reserve) and alerts.
    let stolen = l.root.join("stolen.bin");
    let mut cp = Command::new("cp").arg(&key).arg(&stolen).spawn().unwrap();
    let cp_pid = cp.id();
    assert!(cp.wait().unwrap().success());
    let alerts = s.alerts_until_marker(&l.marker);
    let tc = about(&alerts, "tracked-copy", &stolen);
    assert_eq!(tc.len(), 1, "{alerts:#?}");
    assert_eq!(tc[0]["process"]["pid"], cp_pid);
    assert_eq!(tc[0]["flow"]["lineage"][0]["path"], key.to_str().unwrap());
    // Nothing strong was refused: no events-lost alert, no reserve failure.
    assert!(
        alerts.iter().all(|a| a["rule"] != "events-lost"),
        "{alerts:#?}"
    );
    assert_eq!(insert_failures(&s, "TAINT_RESERVE"), 0);
    release(fill);
}
