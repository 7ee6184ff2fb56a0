//! `key-holder-tamper`: code put into a protected or allowlisted program
//! from its start. Re-enacted: a protected program started with
//! LD_PRELOAD, with LD_AUDIT, and under strace; an allowlisted program
//! started with LD_PRELOAD. Not alerts: the same programs started plainly
//! or with LD_LIBRARY_PATH only, and an unprotected program with
//! LD_PRELOAD.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::Value;

const RULE: &str = "key-holder-tamper";

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    /// A protected copy of ks-actor.
    victim_bin: PathBuf,
    /// A copy of ks-actor allowed to open the lab's keys.
    reader_bin: PathBuf,
    config: String,
}

fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let keys = root.join("keys");
    let victim_bin = actor_copy(&root, "ks-victim");
    let reader_bin = actor_copy(&root, "ks-reader");
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        keys.display(),
        victim_bin.display(),
        reader_bin.display(),
        keys.display(),
    );
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
        reader_bin,
        config,
    }
}

/// `prefix... bin victim` with `env`, once it printed its first line; its
/// pid (the victim's: the last program of the prefix execs it).
fn start(prefix: &[&str], bin: &Path, env: &[(&str, &str)]) -> Child {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push(bin.to_str().unwrap());
    args.push("victim");
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "{args:?} printed nothing");
    child
}

fn tamper_by(alerts: &[Value], pid: u32) -> Vec<&Value> {
    by_pid(alerts, RULE, pid)
}

#[test]
fn protected_and_allowlisted_programs_started_with_loader_code_alert() {
    require_root();
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    let libc = libc_path();
    let victim = l.victim_bin.as_path();
    let preload = start(&[], victim, &[("LD_PRELOAD", &libc)]);
    let audit = start(&[], victim, &[("LD_AUDIT", "/nonexistent/ks-audit.so")]);
    let libpath = start(&[], victim, &[("LD_LIBRARY_PATH", "/nonexistent")]);
    let plain = start(&[], victim, &[]);
    let allowed = start(&[], &l.reader_bin, &[("LD_PRELOAD", &libc)]);
    let allowed_plain = start(&[], &l.reader_bin, &[]);
    let unprotected = start(&[], &actor_bin(), &[("LD_PRELOAD", &libc)]);
    let traced = have("strace").then(|| start(&["strace", "-o", "/dev/null"], victim, &[]));
    let alerts = s.alerts_until_marker(&l.marker);
    let pids = |c: &Child| c.id();

    let a = tamper_by(&alerts, pids(&preload));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    let a = a[0];
    assert!(
        a["severity"] == "high" || a["severity"] == "critical",
        "{a:#}"
    );
    assert_eq!(a["attack"], "T1574.006");
    assert!(
        a["message"].as_str().unwrap().contains("LD_PRELOAD"),
        "{a:#}"
    );
    assert_eq!(a["target"]["pid"], pids(&preload));
    assert!(a["target"]["protected"].as_str().is_some(), "{a:#}");

    let a = tamper_by(&alerts, pids(&audit));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert!(
        a[0]["message"].as_str().unwrap().contains("LD_AUDIT")
            && !a[0]["message"].as_str().unwrap().contains("LD_PRELOAD"),
        "{:#}",
        a[0]
    );

    let a = tamper_by(&alerts, pids(&allowed));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("allowlisted program"),
        "{:#}",
        a[0]
    );

    for (c, what) in [
        (&libpath, "LD_LIBRARY_PATH only"),
        (&plain, "a plain start"),
        (&allowed_plain, "the allowlisted program's plain start"),
        (&unprotected, "an unprotected program with LD_PRELOAD"),
    ] {
        let got = tamper_by(&alerts, pids(c));
        assert!(got.is_empty(), "{what} must not alert: {got:#?}");
    }

    match &traced {
        Some(t) => {
            let a = tamper_by(&alerts, pids(t));
            // strace's child execs the victim: the alert names the child.
            let a: Vec<&Value> = if a.is_empty() {
                alerts
                    .iter()
                    .filter(|x| x["rule"] == RULE && x["process"]["ppid"] == pids(t))
                    .collect()
            } else {
                a
            };
            assert_eq!(a.len(), 1, "{alerts:#?}");
            assert_eq!(a[0]["attack"], "T1055.008", "{:#}", a[0]);
            assert!(
                a[0]["message"].as_str().unwrap().contains("tracer"),
                "{:#}",
                a[0]
            );
        }
        None => println!("SKIPPED tracer part: strace is not installed"),
    }
    for c in [
        preload,
        audit,
        libpath,
        plain,
        allowed,
        allowed_plain,
        unprotected,
    ]
    .into_iter()
    .chain(traced)
    {
        release(c);
    }
}
