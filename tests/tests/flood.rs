//! Priority lanes (issue 13): a flood of bulk records (key-file opens in a
//! tight loop) never makes a critical record vanish. Several processes
//! open a watched key in a loop while the test ptraces a protected process
//! N times: every one of the N memory accesses is alerted, no critical
//! record is lost, and whatever the flood lost is counted in the bulk lane.

mod common;

use std::{
    cell::RefCell,
    collections::HashSet,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Child, Command, Stdio},
};

use common::*;

/// Processes opening the key in a loop.
const FLOODERS: usize = 4;
/// Opens per flooder at most (each stops earlier, when the test closes
/// its stdin after the ptraces).
const FLOOD_MAX: &str = "5000000";
/// Memory accesses of the protected process during the flood.
const ATTACHES: usize = 10;
/// The bulk lane's ring (`--ring-buffer-bytes`): about 160 open records,
/// so the flood overflows it on any machine; the critical lane keeps its
/// own 2 MiB.
const BULK_RING: &str = "262144";

/// The critical kinds' lost counters (lane "critical").
const CRITICAL_KINDS: [&str; 8] = [
    "mem_access",
    "dump_signal",
    "dump_config",
    "file_write",
    "net_send",
    "path_change",
    "denied",
    "fd_access",
];

/// A child that stops when its stdin closes: closed and waited for on drop.
struct Stoppable(Child);

impl Drop for Stoppable {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn a_bulk_flood_never_costs_a_critical_event() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let marker = keys.join("zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let key = keys.join("flood.key");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    let victim_bin = root.join("ks-victim");
    std::fs::copy(actor_bin(), &victim_bin).unwrap();
    std::fs::set_permissions(&victim_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
        keys.display(),
        victim_bin.display()
    );
    let mut s = Sensor::start_with(root, &cfg, &["--ring-buffer-bytes", BULK_RING]);

    let mut victim = Stoppable(
        Command::new(&victim_bin)
            .arg("victim")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(victim.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.split_whitespace().next().unwrap().to_string();
    let victim_pid = victim.0.id();
    let vp = victim_pid.to_string();
    // The victim's exec (and so its protection) is through.
    let _ = s.alerts_until_marker(&marker);
    let lost_metric = |s: &Sensor, kind: &str, lane: &str| {
        s.metric(&format!(
            "keysentry_events_lost_total{{kind=\"{kind}\",lane=\"{lane}\"}}"
        ))
        .unwrap_or_else(|| panic!("no lost counter for {kind} in lane {lane}"))
    };
    let bulk_lost_before = lost_metric(&s, "key_open", "bulk");
    let delivered_before = s
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap();

    // The flood: each flooder says "go" as it starts its loop.
    let mut flooders: Vec<Stoppable> = (0..FLOODERS)
        .map(|_| {
            Stoppable(
                Command::new(actor_bin())
                    .args(["open-loop", key.to_str().unwrap(), FLOOD_MAX])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for f in &mut flooders {
        let mut go = String::new();
        BufReader::new(f.0.stdout.take().unwrap())
            .read_line(&mut go)
            .unwrap();
        assert_eq!(go.trim(), "go");
    }

    // N memory accesses of the protected process, one actor each, while
    // the flooders run.
    let mut attackers = Vec::new();
    for _ in 0..ATTACHES {
        let (pid, st) = actor(&["ptrace-peek", &vp, &addr], None, None);
        assert!(st.success(), "ptrace-peek failed");
        attackers.push(pid);
    }
    let still_flooding = flooders
        .iter_mut()
        .map(|f| matches!(f.0.try_wait(), Ok(None)))
        .filter(|running| *running)
        .count();
    // Stop the flood (each flooder stops when its stdin closes).
    drop(flooders);

    // Every attach is alerted (the alerts of each attacker arrive in
    // order: collect until all N are in, with the harness's deadline).
    let missing: RefCell<HashSet<u32>> = RefCell::new(attackers.iter().copied().collect());
    let alerts = s.alerts_until(|a| {
        if a["rule"] == "ptrace-attach"
            && a["memory"]["op"] == "PTRACE_ATTACH"
            && a["target"]["pid"] == victim_pid
            && let Some(pid) = a["process"]["pid"].as_u64()
        {
            missing.borrow_mut().remove(&(pid as u32));
        }
        missing.borrow().is_empty()
    });
    for pid in &attackers {
        let a: Vec<_> = by_pid(&alerts, "ptrace-attach", *pid)
            .into_iter()
            .filter(|a| a["memory"]["op"] == "PTRACE_ATTACH")
            .collect();
        assert_eq!(a.len(), 1, "attacker {pid}: one attach alert");
        assert_eq!(a[0]["target"]["pid"], victim_pid);
        assert_eq!(a[0]["memory"]["target_protected"], true);
        assert_eq!(a[0]["severity"], "high");
    }
    // Everything before the marker has been handled: no critical record
    // was lost, and no events-lost alert was raised.
    let rest = s.alerts_until_marker(&marker);
    for a in alerts.iter().chain(&rest) {
        assert_ne!(a["rule"], "events-lost", "{a:#}");
    }
    for kind in CRITICAL_KINDS {
        assert_eq!(lost_metric(&s, kind, "critical"), 0.0, "{kind}");
    }
    // The flood's losses, if any, are counted in the bulk lane (and in no
    // other lane: open records travel in bulk only).
    let bulk_lost = lost_metric(&s, "key_open", "bulk") - bulk_lost_before;
    let delivered = s
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap()
        - delivered_before;
    let m = s.metrics();
    for l in m.lines() {
        if l.starts_with("keysentry_events_lost_total{kind=\"key_open\"") {
            assert!(l.contains("lane=\"bulk\""), "{l}");
        }
    }
    eprintln!(
        "flood: {delivered} key opens delivered, {bulk_lost} lost in the bulk lane; \
         {still_flooding} of {FLOODERS} flooders still running after the {ATTACHES} attaches"
    );
    drop(victim);
}
