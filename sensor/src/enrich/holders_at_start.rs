//! Key holders that predate this run of keysentry: a process that has a
//! watched key file open when keysentry starts, and the key holders of the
//! previous run that are still the same processes (a sensor restarted by
//! an upgrade or its watchdog must not leave nginx or Vault unprotected
//! because their key open happened before it). The holders are kept in
//! `[dumps] state_dir`/holders.json at each shutdown, by pid and the
//! kernel's start time of the process, so a reused pid is never taken for
//! a holder.

use std::{os::unix::fs::MetadataExt, path::Path};

use sensor_common::InodeKey;
use serde::{Deserialize, Serialize};

use crate::{
    enrich::rootfiles as store,
    enrich::{devnum::kdev, proctab::ProcessTable, watch::Watcher},
};

/// The file in `[dumps] state_dir`.
pub const HOLDERS_FILE: &str = "holders.json";
/// Holders kept, at most.
const MAX_SAVED: usize = 16384;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    pid: u32,
    /// /proc/PID/stat's starttime (clock ticks since boot).
    start: u64,
    /// The key file that made it a holder.
    path: String,
}

/// The kernel's start time of `pid` (None: gone).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the comm's closing parenthesis: state is field 3, starttime 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Saves `holders` (pid, key file) with their start times.
pub fn save(state_dir: &Path, holders: &[(u32, String)]) -> anyhow::Result<()> {
    let saved: Vec<Saved> = holders
        .iter()
        .take(MAX_SAVED)
        .filter_map(|(pid, path)| {
            Some(Saved {
                pid: *pid,
                start: start_ticks(*pid)?,
                path: path.clone(),
            })
        })
        .collect();
    let dir = store::root_dir(state_dir, false)?;
    store::write_new(
        &dir,
        HOLDERS_FILE,
        serde_json::to_string(&saved)?.as_bytes(),
    )
}

/// The holders at start: (pid, key file), each once.
pub fn find(procs: &ProcessTable, watcher: &Watcher, state_dir: &Path) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = Vec::new();
    if let Ok(text) = store::read_root_file(&state_dir.join(HOLDERS_FILE), 8 << 20)
        && let Ok(saved) = serde_json::from_slice::<Vec<Saved>>(&text)
    {
        for s in saved {
            if start_ticks(s.pid) == Some(s.start) {
                out.push((s.pid, s.path));
            }
        }
    }
    for p in procs.iter() {
        if out.iter().any(|(pid, _)| *pid == p.pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        for fd in fds.flatten() {
            // The open file itself (the link is the kernel's, to the file
            // the descriptor holds).
            let Ok(md) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            let key = InodeKey {
                dev: kdev(md.dev()),
                _pad: 0,
                ino: md.ino(),
            };
            if let Some(w) = watcher.get(&key) {
                out.push((p.pid, w.path.to_string_lossy().into_owned()));
                break;
            }
        }
    }
    out
}
