//! The sensor mounts tracefs itself when it is missing (fresh machines).

mod common;

use std::path::Path;

use common::*;

fn tracefs_mounted_at(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            let (fs, at) = (f.next(), f.next());
            at == Some(path) && fs == Some("tracefs")
        })
}

#[test]
fn mounts_tracefs_when_missing() {
    require_root();
    let tracing = "/sys/kernel/tracing";
    if tracefs_mounted_at(tracing)
        && let Err(e) = nix::mount::umount(tracing)
    {
        eprintln!("skipped: tracefs at {tracing} is busy ({e}), cannot test mounting it");
        return;
    }
    assert!(!tracefs_mounted_at(tracing));
    let dir = tempdir();
    let mut s = Sensor::start(dir.path(), "");
    // Ready means every required tracepoint attached, through tracefs.
    assert!(
        tracefs_mounted_at(tracing) || Path::new("/sys/kernel/debug/tracing/events").is_dir(),
        "keysentry started without a tracefs"
    );
    assert_eq!(
        s.stop_with(nix::sys::signal::Signal::SIGINT),
        Some(0),
        "SIGINT exits 0"
    );
}
