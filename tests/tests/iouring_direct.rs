//! io_uring direct descriptors (issue 14): a key opened by io_uring into a
//! fixed file slot never enters the fd table, and is read and copied
//! through the slot (IOSQE_FIXED_FILE) with no open, read or write
//! syscall. Where BPF LSM runs, lsm/file_open reports every io_uring open
//! with its file; on tracepoint-only kernels the completion probe finds the
//! file in the ring's fixed file table (`keysentry probes` says which, or
//! that neither works: the test then prints `SKIPPED: <why>`). Either way
//! the key open is a `key-file-open` alert naming the key and the process,
//! the opener is tainted, and the copy it writes through another fixed
//! slot is a `tracked-copy`; a direct open of an unwatched file is neither.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::{lab::*, *};
use serde_json::Value;

/// How the running kernel sees io_uring opens into fixed file slots.
#[derive(Debug, PartialEq)]
enum Coverage {
    /// lsm/file_open: every io_uring open, with its file.
    Lsm,
    /// The completion probe's walk of the ring's fixed file table.
    Table,
    /// Not seen on this kernel: why (`keysentry probes`).
    No(String),
}

fn coverage() -> Coverage {
    let text = probes_report();
    let line = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("key-file-open (io_uring direct descriptor)")
        })
        .unwrap_or_else(|| {
            panic!("no io_uring direct descriptor line in keysentry probes: {text}")
        });
    let how = line
        .trim_start()
        .trim_start_matches("key-file-open (io_uring direct descriptor)")
        .trim();
    if how.starts_with("lsm/file_open") {
        Coverage::Lsm
    } else if how.starts_with("tracepoint/io_uring/io_uring_complete") {
        Coverage::Table
    } else {
        Coverage::No(how.to_string())
    }
}

/// `ks-actor uring-direct SRC DST HOW`: (pid, slot), or None when io_uring
/// or direct descriptors are unavailable here (exit status 3, printed).
fn uring_direct(src: &Path, dst: &str, how: &str) -> Option<(u32, u32)> {
    let child = Command::new(actor_bin())
        .args(["uring-direct", src.to_str().unwrap(), dst, how])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        println!("SKIPPED: io_uring direct descriptors are not available here: {stderr}");
        return None;
    }
    assert!(
        out.status.success(),
        "uring-direct {how}: {}: {stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let slot = stdout
        .trim()
        .strip_prefix("slot ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("uring-direct {how} printed {stdout:?}"));
    Some((pid, slot))
}

fn of_pid(alerts: &[Value], pid: u32) -> Vec<&Value> {
    alerts
        .iter()
        .filter(|a| a["process"]["pid"] == pid)
        .collect()
}

#[test]
fn a_key_opened_into_a_fixed_slot_is_seen_and_its_copy_followed() {
    let l = lab();
    let key = l.root.join("keys/signing.key");
    std::fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n",
    )
    .unwrap();
    let plain = l.root.join("notes.txt");
    std::fs::write(&plain, b"nothing secret\n").unwrap();
    let cov = coverage();
    if let Coverage::No(why) = &cov {
        println!("SKIPPED: io_uring direct-descriptor opens are not seen on this kernel: {why}");
        return;
    }
    let mut s = Sensor::start(&l.root, &config(&l));
    let exe = actor_bin().canonicalize().unwrap();

    // An explicit slot and a slot the kernel picks, each read through the
    // slot and copied through another slot.
    let mut runs = Vec::new();
    for how in ["slot", "alloc"] {
        let dst = l.root.join(format!("copy-{how}.bin"));
        let Some((pid, slot)) = uring_direct(&key, dst.to_str().unwrap(), how) else {
            return;
        };
        runs.push((how, pid, slot, dst));
    }
    // The same of a file nobody watches: no alert at all.
    let plain_copy = l.root.join("notes-copy.txt");
    let (quiet, _) = uring_direct(&plain, plain_copy.to_str().unwrap(), "slot").unwrap();
    // A direct open whose completion is skipped (IOSQE_CQE_SKIP_SUCCESS):
    // no completion event at all, only BPF LSM sees it.
    let (skipped, _) = uring_direct(&key, "-", "slot-skip").unwrap();

    let alerts = s.alerts_until_marker(&l.marker);
    for (how, pid, slot, dst) in &runs {
        let opens = by_pid(&alerts, "key-file-open", *pid);
        assert_eq!(
            opens.len(),
            1,
            "{how} (slot {slot}): one key-file-open: {alerts:#?}"
        );
        let a = opens[0];
        assert_eq!(a["target"]["path"], key.to_str().unwrap(), "{how}");
        assert_eq!(a["target"]["inode"], ino(&key), "{how}");
        assert_eq!(a["process"]["exe"], exe.to_str().unwrap(), "{how}");
        assert_eq!(a["open"]["result"], "success", "{how}");
        assert_eq!(a["open"]["access"], "read", "{how}");
        let via = if cov == Coverage::Lsm {
            "io_uring"
        } else {
            "io_uring-fixed"
        };
        assert_eq!(a["open"]["via"], via, "{how}: {a:#}");
        assert_eq!(a["severity"], "high", "{how}");

        // The opener is tainted: its write through a fixed slot is a copy.
        let copies: Vec<_> = by_pid(&alerts, "tracked-copy", *pid);
        assert_eq!(copies.len(), 1, "{how}: one tracked-copy: {alerts:#?}");
        let c = copies[0];
        assert_eq!(c["target"]["path"], dst.to_str().unwrap(), "{how}");
        assert_eq!(c["flow"]["via"], "io_uring", "{how}");
        let lineage: Vec<&str> = c["flow"]["lineage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            lineage.first(),
            Some(&key.to_str().unwrap()),
            "{how}: {c:#}"
        );
    }
    assert!(
        of_pid(&alerts, quiet).is_empty(),
        "a direct open of an unwatched file, read and copied, is no alert: {alerts:#?}"
    );
    let skipped_opens = by_pid(&alerts, "key-file-open", skipped);
    if cov == Coverage::Lsm {
        assert_eq!(
            skipped_opens.len(),
            1,
            "a direct open with its completion skipped: {alerts:#?}"
        );
        assert_eq!(skipped_opens[0]["target"]["path"], key.to_str().unwrap());
    } else {
        assert!(skipped_opens.is_empty(), "{skipped_opens:#?}");
        println!(
            "SKIPPED (part): a direct open with IOSQE_CQE_SKIP_SUCCESS posts no completion: \
             seen only with BPF LSM, which this kernel does not run"
        );
    }
    let st = s.stop();
    assert_eq!(st.code(), Some(0));
}
