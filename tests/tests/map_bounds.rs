//! Kernel maps at their bounds (issue 13), each shrunk for the test with
//! the hidden `--map-entries MAP=N`: a full `WRITERS` map makes every
//! tainted close take the full path, so a copy closed by a writer the map
//! refused is still decided while that writer runs; an LRU map that makes
//! room by eviction has its evictions counted
//! (`keysentry_map_evictions_total{map}`).

mod common;

use std::{
    process::{Child, Command},
    time::Instant,
};

use common::{lab::*, *};

/// The value of the metric line that starts with `series` (0 if absent).
fn metric(s: &Sensor, series: &str) -> u64 {
    s.metric(series).map_or(0, |v| v as u64)
}

/// Polls the metric `series` until `done` accepts it (the agent samples
/// the kernel maps one per 500 ms step).
fn metric_until(s: &Sensor, series: &str, done: impl Fn(u64) -> bool) -> u64 {
    let end = Instant::now() + deadline();
    loop {
        let v = metric(s, series);
        if done(v) {
            return v;
        }
        assert!(Instant::now() < end, "{series} stayed at {v}");
        std::thread::yield_now();
    }
}

#[test]
fn a_full_writers_map_still_decides_a_copy_at_its_close() {
    let l = lab();
    let key = l.root.join("keys/signing.pem");
    if !openssl_ed25519(&key) {
        return;
    }
    // WRITERS shrunk to 2 entries: two tainted writers that keep their
    // copies open fill it.
    let mut s = Sensor::start_with(&l.root, &config(&l), &["--map-entries", "WRITERS=2"]);
    let _ = s.alerts_until_marker(&l.marker);
    let k = key.to_str().unwrap();
    let fillers: Vec<Child> = (0..2)
        .map(|i| {
            let dst = l.root.join(format!("open-{i}.bin"));
            spawn_ready(&["copy-end", "dup2-other", k, dst.to_str().unwrap()])
        })
        .collect();

    // A third writer is refused by the full map; its plain close is
    // decided while it still runs (not at its exit).
    let dst = l.root.join("closed.bin");
    let mut c = spawn_ready(&["copy-end", "close", k, dst.to_str().unwrap()]);
    let pid = c.id();
    let alerts = s.alerts_until(|a| {
        a["rule"] == "key-material" && a["target"]["path"] == dst.to_str().unwrap()
    });
    let tc = about(&alerts, "tracked-copy", &dst);
    assert_eq!(tc.len(), 1, "{alerts:#?}");
    assert_eq!(tc[0]["process"]["pid"], pid);
    assert_eq!(tc[0]["flow"]["lineage"][0]["path"], k);
    let km = about(&alerts, "key-material", &dst);
    assert_eq!(km[0]["process"]["pid"], pid);
    assert_eq!(km[0]["severity"], "critical");
    assert!(
        c.try_wait().unwrap().is_none(),
        "the writer is alive: its close decided the copy"
    );
    let refused = metric_until(
        &s,
        "keysentry_map_insert_failures_total{map=\"WRITERS\"}",
        |n| n > 0,
    );
    assert!(refused >= 1);
    release(c);
    for f in fillers {
        release(f);
    }
}

#[test]
fn an_lru_map_that_evicts_counts_its_evictions() {
    let l = lab();
    // GROUP_EXITED (every process exit takes an entry) shrunk to 256.
    let s = {
        let mut s =
            Sensor::start_with(&l.root, &config(&l), &["--map-entries", "GROUP_EXITED=256"]);
        let _ = s.alerts_until_marker(&l.marker);
        s
    };
    const EXITS: u64 = 1000;
    for _ in 0..EXITS {
        assert!(Command::new("true").status().unwrap().success());
    }
    // Each exit added its key; at most 256 are left and none was removed,
    // so all but 256 (less any insert the full map refused) were evicted.
    let refused = || {
        metric(
            &s,
            "keysentry_map_insert_failures_total{map=\"GROUP_EXITED\"}",
        )
    };
    let evicted = metric_until(
        &s,
        "keysentry_map_evictions_total{map=\"GROUP_EXITED\"}",
        |n| n >= EXITS - 256 - refused(),
    );
    let entries = metric(&s, "keysentry_map_entries{map=\"GROUP_EXITED\"}");
    println!("GROUP_EXITED: {entries} entries, {evicted} evicted");
    assert!(entries <= 256, "{entries} entries, {evicted} evicted");
    // Maps that were not filled evict nothing.
    assert_eq!(metric(&s, "keysentry_map_evictions_total{map=\"SENT\"}"), 0);
}
