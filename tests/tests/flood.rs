//! Floods (issue 13): a flood of bulk records (key-file opens in a tight
//! loop) never makes a critical record vanish, and the kernel folds its
//! repeats into counts.
//! - Several processes open a watched key in a loop while the test
//!   ptraces a protected process N times: every one of the N memory
//!   accesses is alerted, no critical record is lost, whatever the flood
//!   lost is counted in the bulk lane, and the flooders' alerts carry the
//!   count of their opens (each open is in an alert's count or counted
//!   lost).
//! - The same flood while keysentry is stopped (SIGSTOP) for 5 s: the
//!   ptrace and /proc/PID/mem read of the protected process made during
//!   the stall are alerted once it resumes; losses, if any, are bulk and
//!   counted per kind and lane; no critical record is lost.

mod common;

use std::{
    cell::RefCell,
    collections::HashSet,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

use common::*;
use serde_json::Value;

/// Processes opening the key in a loop.
const FLOODERS: usize = 4;
/// Opens per flooder at most (each stops earlier, when the test closes
/// its stdin).
const FLOOD_MAX: &str = "5000000";
/// Memory accesses of the protected process during the flood.
const ATTACHES: usize = 10;
/// The bulk lane's ring (`--ring-buffer-bytes`): about 160 open records,
/// so an unfolded flood overflows it on any machine; the critical lane
/// keeps its own 2 MiB.
const BULK_RING: &str = "262144";
/// How long keysentry stays stopped in the stall test (the scenario, not
/// a wait for anything).
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

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

/// A ks-actor open-loop process.
struct Flooder {
    child: Stoppable,
    out: BufReader<ChildStdout>,
}

impl Flooder {
    /// Starts one and waits until it says "go" (its loop starts).
    fn start(key: &Path) -> Flooder {
        let mut child = Stoppable(
            Command::new(actor_bin())
                .args(["open-loop", key.to_str().unwrap(), FLOOD_MAX])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut go = String::new();
        out.read_line(&mut go).unwrap();
        assert_eq!(go.trim(), "go");
        Flooder { child, out }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Stops it: (pid, how many opens it made).
    fn stop(mut self) -> (u32, u64) {
        let pid = self.pid();
        drop(self.child.0.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let n = line
            .trim()
            .strip_prefix("opened ")
            .unwrap_or_else(|| panic!("flooder {pid}: {line:?}"))
            .parse()
            .unwrap();
        (pid, n)
    }
}

/// A watched key directory with a marker and a key to flood, a protected
/// victim program, and keysentry watching them with a small bulk ring.
struct Scene {
    _tmp: tempfile::TempDir,
    marker: PathBuf,
    key: PathBuf,
    sensor: Sensor,
    victim: Stoppable,
    victim_pid: u32,
    /// An address in the victim's memory (a secret it holds).
    addr: String,
}

impl Scene {
    fn new() -> Scene {
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
        let mut sensor = Sensor::start_with(root, &cfg, &["--ring-buffer-bytes", BULK_RING]);
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
        // The victim's exec (and so its protection) is through.
        let _ = sensor.alerts_until_marker(&marker);
        Scene {
            _tmp: tmp,
            marker,
            key,
            sensor,
            victim,
            victim_pid,
            addr,
        }
    }

    fn lost(&self, kind: &str, lane: &str) -> f64 {
        self.sensor
            .metric(&format!(
                "keysentry_events_lost_total{{kind=\"{kind}\",lane=\"{lane}\"}}"
            ))
            .unwrap_or_else(|| panic!("no lost counter for {kind} in lane {lane}"))
    }

    /// Nothing critical lost: no counter moved, no events-lost alert among
    /// `alerts`; the open kinds' losses, if any, are in the bulk lane only.
    fn assert_no_critical_loss(&self, alerts: &[Value]) {
        for a in alerts {
            assert_ne!(a["rule"], "events-lost", "{a:#}");
        }
        for kind in CRITICAL_KINDS {
            assert_eq!(self.lost(kind, "critical"), 0.0, "{kind}");
        }
        for l in self.sensor.metrics().lines() {
            if l.starts_with("keysentry_events_lost_total{kind=\"key_open\"")
                || l.starts_with("keysentry_events_lost_total{kind=\"proc_file_open\"")
            {
                assert!(l.contains("lane=\"bulk\""), "{l}");
            }
        }
    }
}

/// Waits until every pid of `actors` has an alert `matches` accepts
/// (alerts of one actor arrive in order): the alerts read meanwhile.
fn until_each(s: &mut Sensor, actors: &[u32], matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    let missing: RefCell<HashSet<u32>> = RefCell::new(actors.iter().copied().collect());
    s.alerts_until(|a| {
        if matches(a)
            && let Some(pid) = a["process"]["pid"].as_u64()
        {
            missing.borrow_mut().remove(&(pid as u32));
        }
        missing.borrow().is_empty()
    })
}

/// The sum of the `count` of `rule`'s alerts of `pid` (first alerts and
/// fold reports), and how many alerts that was.
fn counted(alerts: &[Value], rule: &str, pid: u32) -> (u64, usize) {
    let a = by_pid(alerts, rule, pid);
    (
        a.iter().map(|a| a["count"].as_u64().unwrap()).sum(),
        a.len(),
    )
}

#[test]
fn a_bulk_flood_never_costs_a_critical_event() {
    let mut sc = Scene::new();
    let vp = sc.victim_pid.to_string();
    let bulk_lost_before = sc.lost("key_open", "bulk");
    let delivered_before = sc
        .sensor
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap();

    let mut flooders: Vec<Flooder> = (0..FLOODERS).map(|_| Flooder::start(&sc.key)).collect();

    // N memory accesses of the protected process, one actor each, while
    // the flooders run.
    let mut attackers = Vec::new();
    for _ in 0..ATTACHES {
        let (pid, st) = actor(&["ptrace-peek", &vp, &sc.addr], None, None);
        assert!(st.success(), "ptrace-peek failed");
        attackers.push(pid);
    }
    let still_flooding = flooders
        .iter_mut()
        .map(|f| f.running())
        .filter(|r| *r)
        .count();
    // Stop the flood (each flooder stops when its stdin closes).
    let opened: Vec<(u32, u64)> = flooders.into_iter().map(Flooder::stop).collect();

    // Every attach is alerted.
    let victim_pid = sc.victim_pid;
    let mut alerts = until_each(&mut sc.sensor, &attackers, |a| {
        a["rule"] == "ptrace-attach"
            && a["memory"]["op"] == "PTRACE_ATTACH"
            && a["target"]["pid"] == victim_pid
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
    let marker = sc.marker.clone();
    alerts.extend(sc.sensor.alerts_until_marker(&marker));
    sc.assert_no_critical_loss(&alerts);
    let bulk_lost = sc.lost("key_open", "bulk") - bulk_lost_before;
    let delivered = sc
        .sensor
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap()
        - delivered_before;
    let folded = sc
        .sensor
        .metric("keysentry_events_folded_total{kind=\"key_open\"}")
        .unwrap();

    // The flooders' alerts carry their opens as counts: the first alert
    // of each, then the fold report written at shutdown with the repeats
    // (those the kernel folded included). Every open is in a count or
    // counted lost.
    let key = sc.key.clone();
    let Scene { sensor, victim, .. } = sc;
    let (rest, _) = sensor.stop_and_drain();
    alerts.extend(rest);
    let total_opens: u64 = opened.iter().map(|(_, n)| n).sum();
    let mut total_counted = 0;
    for (pid, n) in &opened {
        let (c, lines) = counted(&alerts, "key-file-open", *pid);
        let first = by_pid(&alerts, "key-file-open", *pid);
        assert_eq!(first[0]["count"], 1, "flooder {pid}: its first open");
        assert_eq!(first[0]["target"]["inode"], ino(&key));
        assert!(*n > 1, "flooder {pid} opened {n} times");
        assert!(
            lines >= 2,
            "flooder {pid}: a fold report follows its first alert"
        );
        assert!(c > 1, "flooder {pid}: {c} of its {n} opens counted");
        total_counted += c;
    }
    assert_eq!(
        total_counted + bulk_lost as u64,
        total_opens,
        "every open is in an alert's count or counted lost ({bulk_lost} lost)"
    );
    eprintln!(
        "flood: {total_opens} key opens, {delivered} records delivered, {folded} folded in the \
         kernel, {bulk_lost} lost in the bulk lane; {still_flooding} of {FLOODERS} flooders still \
         running after the {ATTACHES} attaches"
    );
    drop(victim);
}

#[test]
fn a_stalled_keysentry_still_delivers_the_critical_events_of_the_stall() {
    let mut sc = Scene::new();
    let vp = sc.victim_pid.to_string();
    let victim_pid = sc.victim_pid;
    let bulk_lost_before = sc.lost("key_open", "bulk");
    let mut flooders: Vec<Flooder> = (0..FLOODERS).map(|_| Flooder::start(&sc.key)).collect();

    // keysentry stops reading; the flood goes on, and the protected
    // process is ptraced and read through /proc/PID/mem meanwhile.
    let ks = nix::unistd::Pid::from_raw(sc.sensor.pid() as i32);
    stop_and_wait(ks);
    let (tracer, st) = actor(&["ptrace-peek", &vp, &sc.addr], None, None);
    assert!(st.success(), "ptrace-peek failed");
    let (reader, st) = actor(&["proc-mem", &vp, &sc.addr, "8"], None, None);
    assert!(st.success(), "proc-mem failed");
    std::thread::sleep(STALL);
    let still_flooding = flooders
        .iter_mut()
        .map(|f| f.running())
        .filter(|r| *r)
        .count();
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();
    let opened: Vec<(u32, u64)> = flooders.into_iter().map(Flooder::stop).collect();

    // Both are alerted once keysentry runs again.
    let mut alerts = until_each(&mut sc.sensor, &[tracer, reader], |a| {
        a["target"]["pid"] == victim_pid
            && (a["rule"] == "ptrace-attach" || a["rule"] == "proc-mem-open")
    });
    let t: Vec<_> = by_pid(&alerts, "ptrace-attach", tracer)
        .into_iter()
        .filter(|a| a["memory"]["op"] == "PTRACE_ATTACH")
        .collect();
    assert_eq!(t.len(), 1, "{alerts:#?}");
    assert_eq!(t[0]["target"]["pid"], victim_pid);
    assert_eq!(t[0]["memory"]["target_protected"], true);
    assert_eq!(t[0]["severity"], "high");
    let r = by_pid(&alerts, "proc-mem-open", reader);
    assert_eq!(r.len(), 1, "{alerts:#?}");
    assert_eq!(r[0]["target"]["pid"], victim_pid);
    let marker = sc.marker.clone();
    alerts.extend(sc.sensor.alerts_until_marker(&marker));
    sc.assert_no_critical_loss(&alerts);
    let bulk_lost = sc.lost("key_open", "bulk") - bulk_lost_before;
    let total_opens: u64 = opened.iter().map(|(_, n)| n).sum();
    // The flood's opens are in its alerts' counts or counted lost, here too.
    let Scene { sensor, victim, .. } = sc;
    let (rest, _) = sensor.stop_and_drain();
    alerts.extend(rest);
    let counted_total: u64 = opened
        .iter()
        .map(|(pid, _)| counted(&alerts, "key-file-open", *pid).0)
        .sum();
    assert_eq!(counted_total + bulk_lost as u64, total_opens);
    drop(victim);
    eprintln!(
        "stall: {total_opens} key opens during a {STALL:?} stop, {bulk_lost} lost in the bulk \
         lane; {still_flooding} of {FLOODERS} flooders still running at the resume"
    );
}

#[test]
fn a_process_flooding_the_critical_lane_is_held_back_and_named() {
    let mut sc = Scene::new();
    let vp = sc.victim_pid.to_string();
    let victim_pid = sc.victim_pid;
    // 600 distinct memory accesses (no two alike, so none folds): past
    // the critical lane's limit of 256 at once.
    let (flooder, st) = actor(&["vm-read-many", "3000000", "600"], None, None);
    assert!(st.success());
    let (tracer, st) = actor(&["ptrace-peek", &vp, &sc.addr], None, None);
    assert!(st.success());
    // The other process's attach is alerted, and an events-lost alert
    // names the flooder.
    let seen: RefCell<(bool, bool)> = RefCell::new((false, false));
    let alerts = sc.sensor.alerts_until(|a| {
        let mut s = seen.borrow_mut();
        if a["rule"] == "ptrace-attach"
            && a["process"]["pid"] == tracer
            && a["memory"]["op"] == "PTRACE_ATTACH"
            && a["target"]["pid"] == victim_pid
        {
            s.0 = true;
        }
        if a["rule"] == "events-lost" && a["process"]["pid"] == flooder {
            s.1 = true;
        }
        s.0 && s.1
    });
    let lost: Vec<_> = by_pid(&alerts, "events-lost", flooder);
    assert_eq!(lost[0]["severity"], "high");
    assert_eq!(lost[0]["target"]["pid"], flooder);
    let msg = lost[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("held back") && msg.contains("mem_access"),
        "{msg}"
    );
    // Its first records went through: alerted as themselves.
    assert!(!by_pid(&alerts, "process-vm-read", flooder).is_empty());
    // Held back is not lost: no critical record failed to fit.
    for kind in CRITICAL_KINDS {
        assert_eq!(sc.lost(kind, "critical"), 0.0, "{kind}");
    }
    let held = sc
        .sensor
        .metric("keysentry_events_throttled_total{kind=\"mem_access\"}")
        .unwrap();
    assert!(held > 0.0, "{held}");
    eprintln!("critical flood: 600 memory accesses, {held} held back");
}
