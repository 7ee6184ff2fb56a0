//! Key holders (issue 15): a process that opens a watched key file for
//! reading is protected from that open on, with no `[[protected]]` rule:
//! a gcore of it is a critical user-space dump naming the key, its crash a
//! critical core dump; a process that never opened a key keeps its
//! severities. And a dump signal that the target handles itself (nginx's
//! SIGQUIT) is no crash.

mod common;

use std::{
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
};

use common::{lab::*, *};
use serde_json::Value;

fn loud(a: &Value) -> bool {
    matches!(a["severity"].as_str(), Some("medium" | "high" | "critical"))
}

fn about_pid<'a>(alerts: &'a [Value], rule: &str, pid: u32) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["target"]["pid"] == pid)
        .collect()
}

#[test]
fn a_key_holder_is_protected_from_its_key_open_on() {
    let l = lab();
    let key = l.root.join("keys/holder.key");
    std::fs::write(&key, b"not a real key, a watched file").unwrap();
    let _pattern = CorePattern::set(&format!("{}/core.%p", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    // ks-actor is no [[protected]] program: only the key open protects
    // the holder; the plain process never opens a key.
    let (mut holder, hp) = spawn_args(&actor_bin(), &["victim-key", key.to_str().unwrap()]);
    let (mut plain, pp) = spawn_args(&actor_bin(), &["victim"]);
    let alerts = s.alerts_until_marker(&l.marker);
    assert_eq!(by_pid(&alerts, "key-file-open", hp).len(), 1, "{alerts:#?}");
    let holds = format!("holds {}", key.display());

    if have("gcore") {
        for pid in [hp, pp] {
            let st = Command::new("gcore")
                .arg("-o")
                .arg(l.root.join(format!("gcore-{pid}")))
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "gcore {pid}");
        }
        let alerts = s.alerts_until_marker(&l.marker);
        let core = l.root.join(format!("gcore-{hp}.{hp}"));
        let dumps = about(&alerts, "userspace-dump", &core);
        assert_eq!(dumps.len(), 1, "the holder's gcore: {alerts:#?}");
        let a = dumps[0];
        assert_eq!(a["severity"], "critical", "{a:#}");
        assert_eq!(a["process"]["comm"], "gdb");
        assert_eq!(a["flow"]["dumped"]["pid"], hp);
        assert_eq!(a["flow"]["dumped"]["protected"], holds.as_str(), "{a:#}");
        // gdb's attach to the holder is an attach to a protected process.
        let attach = about_pid(&alerts, "ptrace-attach", hp);
        assert!(!attach.is_empty(), "{alerts:#?}");
        for a in attach {
            assert_eq!(a["target"]["protected"], holds.as_str(), "{a:#}");
            assert!(
                matches!(a["severity"].as_str(), Some("high" | "critical")),
                "{a:#}"
            );
        }
        // The plain process's gcore is no dump of a protected process.
        let plain_core = l.root.join(format!("gcore-{pp}.{pp}"));
        assert!(plain_core.exists());
        assert!(
            about(&alerts, "userspace-dump", &plain_core).is_empty(),
            "{alerts:#?}"
        );
        assert!(
            !alerts.iter().any(|a| a["target"]["pid"] == pp && loud(a)),
            "the plain process: {alerts:#?}"
        );
    } else {
        println!("SKIPPED (gcore part): gcore (Debian's gdb) is not installed");
    }

    // Both crash, by a SIGSEGV from another process.
    for pid in [hp, pp] {
        let (_, st) = actor(&["signal", &pid.to_string(), "11"], None, None);
        assert!(st.success());
    }
    let st = holder.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGSEGV));
    assert!(st.core_dumped(), "the kernel wrote the holder's core");
    assert!(plain.wait().unwrap().core_dumped());
    let alerts = s.alerts_until_marker(&l.marker);
    let forced = about_pid(&alerts, "forced-crash", hp);
    assert_eq!(forced.len(), 1, "{alerts:#?}");
    assert_eq!(forced[0]["severity"], "high", "{:#}", forced[0]);
    assert_eq!(forced[0]["target"]["protected"], holds.as_str());
    assert_eq!(forced[0]["dump"]["disposition"], "default");
    let dumps = about_pid(&alerts, "core-dump", hp);
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    assert_eq!(dumps[0]["severity"], "critical", "{:#}", dumps[0]);
    assert_eq!(dumps[0]["target"]["protected"], holds.as_str());
    assert_eq!(
        dumps[0]["dump"]["path"],
        l.root.join(format!("core.{hp}")).to_str().unwrap()
    );
    assert!(
        !alerts.iter().any(|a| a["target"]["pid"] == pp),
        "the plain process's crash: {alerts:#?}"
    );
}

#[test]
fn a_dump_signal_the_target_handles_is_no_crash() {
    let l = lab();
    let _pattern = CorePattern::set(&format!("{}/core.%p", l.root.display()));
    let mut s = Sensor::start(&l.root, &config(&l));
    // The protected victim handles SIGQUIT (as nginx does: a graceful
    // stop), and leaves SIGSEGV to the kernel.
    let (mut victim, vp) = spawn_args(&l.victim_bin, &["victim-handler", "3"]);
    let _ = s.alerts_until_marker(&l.marker);
    let (_, st) = actor(&["signal", &vp.to_string(), "3"], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let quit = about_pid(&alerts, "forced-crash", vp);
    assert_eq!(quit.len(), 1, "{alerts:#?}");
    let a = quit[0];
    assert_eq!(a["dump"]["signal"], "SIGQUIT");
    assert_eq!(a["dump"]["disposition"], "handled", "{a:#}");
    assert_eq!(a["severity"], "low", "{a:#}");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .ends_with("it handles SIGQUIT itself: no dump unless its handler makes one"),
        "{a:#}"
    );
    assert!(
        a["factors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "signal_handled"),
        "{a:#}"
    );
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the handled SIGQUIT ended the victim"
    );
    let (_, st) = actor(&["signal", &vp.to_string(), "11"], None, None);
    assert!(st.success());
    assert!(victim.wait().unwrap().core_dumped());
    let alerts = s.alerts_until_marker(&l.marker);
    let segv = about_pid(&alerts, "forced-crash", vp);
    assert_eq!(segv.len(), 1, "{alerts:#?}");
    assert_eq!(segv[0]["dump"]["disposition"], "default");
    assert_eq!(segv[0]["severity"], "high");
    assert_eq!(about_pid(&alerts, "core-dump", vp).len(), 1, "{alerts:#?}");
}

#[test]
fn a_key_holder_is_protected_before_keysentry_hears_of_it() {
    let l = lab();
    let key = l.root.join("keys/early.key");
    std::fs::write(&key, b"not a real key, a watched file").unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // keysentry stopped: only the kernel can protect the holder when the
    // dumper reads its memory (and so taint the dumper and follow the
    // file it writes).
    let ks = nix::unistd::Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    let (mut holder, hp) = spawn_args(&actor_bin(), &["victim-key", key.to_str().unwrap()]);
    let out = l.root.join("early.dump");
    let (dumper, st) = actor(
        &["ptrace-dump", &hp.to_string(), out.to_str().unwrap()],
        None,
        None,
    );
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let dumps = about(&alerts, "userspace-dump", &out);
    assert_eq!(dumps.len(), 1, "{alerts:#?}");
    assert_eq!(dumps[0]["process"]["pid"], dumper);
    assert_eq!(dumps[0]["flow"]["dumped"]["pid"], hp);
    assert_eq!(
        dumps[0]["flow"]["dumped"]["protected"],
        format!("holds {}", key.display())
    );
    assert_eq!(dumps[0]["severity"], "critical");
    drop(holder.stdin.take());
    let _ = holder.wait();
}

#[test]
fn a_key_found_in_a_dump_is_named_by_its_key_file() {
    let l = lab();
    // A signing service (a [[protected]] program) loaded its key before
    // keysentry started: the key book reads that key file at start. A key
    // written later is read when a process first opens it.
    let (pem_early, fp_early) = fresh_key();
    let early = l.root.join("keys/early.pem");
    std::fs::write(&early, &pem_early).unwrap();
    let service = spawn_args(&l.victim_bin, &["victim-key", early.to_str().unwrap()]);
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let (pem_late, fp_late) = fresh_key();
    let late = l.root.join("keys/late.pem");
    std::fs::write(&late, &pem_late).unwrap();
    let holder = spawn_args(&actor_bin(), &["victim-key", late.to_str().unwrap()]);
    for ((mut victim, vp), key, fp, pem) in [
        (service, &early, &fp_early, &pem_early),
        (holder, &late, &fp_late, &pem_late),
    ] {
        let dump = l.root.join(format!("dump-{vp}.bin"));
        let (_, st) = actor(
            &["ptrace-dump", &vp.to_string(), dump.to_str().unwrap()],
            None,
            None,
        );
        assert!(st.success());
        let alerts = s.alerts_until(|a| a["rule"] == "key-material");
        let found = about(&alerts, "key-material", &dump);
        assert_eq!(found.len(), 1, "{alerts:#?}");
        let a = found[0];
        let named = format!("the private key of {} ({fp})", key.display());
        assert!(
            a["message"].as_str().unwrap().contains(&named),
            "{named}: {a:#}"
        );
        let findings = a["flow"]["keys"]["findings"].as_array().unwrap();
        let mine: Vec<_> = findings
            .iter()
            .filter(|f| f["fingerprint"] == fp.as_str())
            .collect();
        assert!(!mine.is_empty(), "{a:#}");
        for f in mine {
            assert_eq!(f["key_file"], key.to_str().unwrap(), "{a:#}");
        }
        // Fingerprints only: no key bytes anywhere.
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for v in &alerts {
            assert!(!v.to_string().contains(&body), "key bytes in {v}");
        }
        drop(victim.stdin.take());
        let _ = victim.wait();
    }
    assert!(
        s.metric("keysentry_scans_total{result=\"key_book\"}")
            .is_some_and(|n| n >= 2.0),
        "the key book read both key files"
    );
}

#[test]
fn an_exec_ends_a_key_holder_in_the_kernel() {
    let l = lab();
    let key = l.root.join("keys/exec.key");
    std::fs::write(&key, b"not a real key, a watched file").unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // keysentry stopped: what the kernel decides alone. The process reads
    // a key, then execs a new image, which is dumped.
    let ks = nix::unistd::Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    let (mut execd, ep) = spawn_args(&actor_bin(), &["key-then-exec", key.to_str().unwrap()]);
    let out = l.root.join("after-exec.dump");
    let (dumper, st) = actor(
        &["ptrace-dump", &ep.to_string(), out.to_str().unwrap()],
        None,
        None,
    );
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    // It was a key holder until its exec (its key open is there) ...
    assert_eq!(by_pid(&alerts, "key-file-open", ep).len(), 1, "{alerts:#?}");
    // ... and the image dumped after it holds no key: no dump of a
    // protected process, nothing of medium or above about it.
    assert!(
        about(&alerts, "userspace-dump", &out).is_empty(),
        "{alerts:#?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["process"]["pid"] == dumper && loud(a)),
        "{alerts:#?}"
    );
    drop(execd.stdin.take());
    let _ = execd.wait();
}

/// A sensor that restarts (an upgrade, its watchdog) keeps the key holders
/// of the run before (the same processes, by start time), and a process
/// that has a key file open when it starts is one too.
#[test]
fn key_holders_from_before_a_start_stay_key_holders() {
    let l = lab();
    let key = l.root.join("keys/holder.key");
    std::fs::write(&key, b"not a real key, a watched file").unwrap();
    let _pattern = CorePattern::set(&format!("{}/core.%p", l.root.display()));
    let state = l.root.join("state");
    let body = format!(
        "[[key_path]]\npath = \"{}\"\n\n[dumps]\nstate_dir = \"{}\"\n",
        l.root.join("keys").display(),
        state.display()
    );
    // Opened before any sensor runs, and kept open.
    let (mut early, ep) = spawn_args(&actor_bin(), &["victim-key-open", key.to_str().unwrap()]);
    let mut s = Sensor::start(&l.root, &body);
    // Read under the first run, then closed (nginx loading its TLS key).
    let (mut late, lp) = spawn_args(&actor_bin(), &["victim-key", key.to_str().unwrap()]);
    let (mut plain, pp) = spawn_args(&actor_bin(), &["victim"]);
    let alerts = s.alerts_until_marker(&l.marker);
    assert_eq!(by_pid(&alerts, "key-file-open", lp).len(), 1, "{alerts:#?}");
    assert!(s.stop().success());

    let mut s = Sensor::start(&l.root, &body);
    for pid in [ep, lp, pp] {
        let (_, st) = actor(&["signal", &pid.to_string(), "11"], None, None);
        assert!(st.success());
    }
    for c in [&mut early, &mut late, &mut plain] {
        assert!(c.wait().unwrap().core_dumped());
    }
    let alerts = s.alerts_until(|a| a["rule"] == "core-dump" && a["target"]["pid"] == lp);
    let alerts = [alerts, s.alerts_until_marker(&l.marker)].concat();
    let holds = format!("holds {}", key.display());
    for pid in [ep, lp] {
        let dumps = about_pid(&alerts, "core-dump", pid);
        assert_eq!(dumps.len(), 1, "{pid}: {alerts:#?}");
        assert_eq!(
            dumps[0]["target"]["protected"],
            holds.as_str(),
            "{:#}",
            dumps[0]
        );
        assert_eq!(dumps[0]["severity"], "critical", "{:#}", dumps[0]);
    }
    assert!(
        !alerts.iter().any(|a| a["target"]["pid"] == pp),
        "the plain process: {alerts:#?}"
    );
}
