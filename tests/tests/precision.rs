//! Precision: taint follows data, not ancestry, and tracked files die with
//! their inode. Each test causes the real kernel events (reads, execs,
//! copies, renames, deletes) and asserts on the decoded alerts, including
//! the alerts that must NOT come: an exec that drops what it read, a log
//! line of a process that once read a key, an inode number reused by a new
//! file, a process's environment read, a key created or read by its owner.

mod common;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    process::Command,
};

use common::{lab::*, *};
use serde_json::Value;

fn run(cmd: &mut Command) -> u32 {
    let out = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = out.id();
    let st = out.wait_with_output().unwrap().status;
    assert!(st.success(), "{cmd:?}: {st}");
    pid
}

fn sh(script: &str) -> u32 {
    run(Command::new("sh").args(["-c", script]))
}

/// A watched key directory holding a 2 KiB key.
fn key_lab() -> (Lab, PathBuf) {
    let l = lab();
    let key = l.root.join("keys/signing.key");
    std::fs::write(&key, vec![b'k'; 2048]).unwrap();
    (l, key)
}

/// Waits (with the harness's deadline) until `sample` reaches `min`: the
/// agent reads the kernel's counters on its 50 ms tick, which may come
/// just after the alert the test waited for.
fn metric_at_least(s: &Sensor, sample: &str, min: f64) {
    let end = std::time::Instant::now() + deadline();
    loop {
        let v = s.metric(sample).unwrap_or(0.0);
        if v >= min {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{sample} = {v}, expected at least {min}"
        );
    }
}

#[test]
fn exec_ends_taint_unless_a_tainted_descriptor_survives_it() {
    let (l, key) = key_lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let bin = actor_bin();
    let bin = bin.to_str().unwrap();

    // Reads the key, closes it, execs a program that writes a file: the
    // image that held the key is gone, so the file is no copy.
    let dropped = l.root.join("after-exec.bin");
    let (reader, st) = actor(
        &[
            "read-exec-write",
            key.to_str().unwrap(),
            bin,
            dropped.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert!(st.success());
    // Keeps the key open across the exec: the new image reads and copies it.
    let kept = l.root.join("kept-fd.bin");
    let (keeper, st) = actor(
        &[
            "exec-copy",
            key.to_str().unwrap(),
            bin,
            kept.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert!(st.success());
    // The shell opens the key for cat's stdin and execs cat: cat holds it.
    let redirected = l.root.join("cat-stdin.bin");
    sh(&format!(
        "cat < {} > {}",
        key.display(),
        redirected.display()
    ));
    let alerts = s.alerts_until_marker(&l.marker);

    assert_eq!(
        by_pid(&alerts, "key-file-open", reader).len(),
        1,
        "{alerts:#?}"
    );
    assert!(
        about(&alerts, "tracked-copy", &dropped).is_empty(),
        "a file written after an exec that dropped the key is no copy: {alerts:#?}"
    );
    let a = about(&alerts, "tracked-copy", &kept);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["process"]["pid"], keeper);
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["flow"]["lineage"][0]["path"], key.to_str().unwrap());
    let a = about(&alerts, "tracked-copy", &redirected);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["process"]["comm"], "cat");
    metric_at_least(&s, "keysentry_flow_stopped_total{reason=\"exec\"}", 1.0);
}

#[test]
fn taint_survives_the_leaders_exit_while_a_thread_lives() {
    let (l, key) = key_lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let out = l.root.join("from-a-thread.bin");
    let (pid, st) = actor(
        &[
            "leader-exit-copy",
            key.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert!(st.success());
    assert_eq!(std::fs::read(&out).unwrap().len(), 2048);
    let alerts = s.alerts_until_marker(&l.marker);
    let a = about(&alerts, "tracked-copy", &out);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["process"]["pid"], pid);
    assert_eq!(a[0]["severity"], "high");
}

#[test]
fn copies_are_followed_for_max_generations_then_counted() {
    let (l, key) = key_lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let copies: Vec<PathBuf> = (1..=4)
        .map(|g| l.root.join(format!("gen{g}.bin")))
        .collect();
    let mut src = key.clone();
    for dst in &copies {
        run(Command::new("cp").arg(&src).arg(dst));
        src = dst.clone();
    }
    let alerts = s.alerts_until_marker(&l.marker);
    for (g, p) in copies.iter().take(3).enumerate() {
        let a = about(&alerts, "tracked-copy", p);
        assert_eq!(a.len(), 1, "generation {}: {alerts:#?}", g + 1);
        assert_eq!(a[0]["flow"]["lineage"].as_array().unwrap().len(), g + 2);
        assert_eq!(a[0]["flow"]["lineage"][g + 1]["generation"], g + 1);
    }
    assert!(
        about(&alerts, "tracked-copy", &copies[3]).is_empty(),
        "generation 4 is past [flow] max_generations = 3: {alerts:#?}"
    );
    assert!(
        about(&alerts, "dump-file-access", &copies[3]).is_empty(),
        "{alerts:#?}"
    );
    metric_at_least(
        &s,
        "keysentry_flow_stopped_total{reason=\"generation\"}",
        1.0,
    );
}

#[test]
fn a_short_write_of_a_process_that_read_a_key_is_low() {
    let (l, key) = key_lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // The shell itself reads the key (a builtin's redirection), then
    // writes a log line of 11 bytes: not a copy of a 2 KiB key.
    let log = l.root.join("service.log");
    let pid = sh(&format!(
        "read x < {}; echo 0123456789 > {}",
        key.display(),
        log.display()
    ));
    let full = l.root.join("full.bin");
    let cp = run(Command::new("cp").arg(&key).arg(&full));
    let alerts = s.alerts_until_marker(&l.marker);
    let a = about(&alerts, "tracked-copy", &log);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["process"]["pid"], pid);
    assert_eq!(a[0]["severity"], "low", "{:#}", a[0]);
    assert_eq!(a[0]["flow"]["bytes"], 11);
    let a = about(&alerts, "tracked-copy", &full);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["process"]["pid"], cp);
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["flow"]["bytes"], 2048);
    assert_eq!(a[0]["flow"]["hops"], 0);
}

#[test]
fn reading_a_protected_environment_is_not_dumping_it() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);
    let out = l.root.join("environ.txt");
    sh(&format!("cat /proc/{vp}/environ > {}", out.display()));
    // `ps aux` (procps 4) reads the environment of every process it lists,
    // the protected ones included: a lister, low. ks-actor does the same
    // (the VMs' busybox ps reads none).
    let (lister, st) = actor(&["environ-all"], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let env: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "proc-environ-read" && a["process"]["comm"] == "cat")
        .collect();
    assert_eq!(env.len(), 1, "{alerts:#?}");
    assert_eq!(env[0]["severity"], "medium");
    assert_eq!(env[0]["target"]["pid"], vp);
    let listed = by_pid(&alerts, "proc-environ-read", lister);
    assert!(
        !listed.is_empty(),
        "the lister read the victim's environment: {alerts:#?}"
    );
    for a in &listed {
        assert_eq!(a["severity"], "low", "{a:#}");
        assert!(a["message"].as_str().unwrap().contains("process lister"));
    }
    for rule in ["userspace-dump", "tracked-copy", "proc-mem-open"] {
        assert!(
            alerts.iter().all(|a| a["rule"] != rule),
            "no {rule}: {alerts:#?}"
        );
    }
    drop(victim.stdin.take());
    let _ = victim.wait();
}

#[test]
fn a_reused_inode_number_is_a_new_file() {
    let (l, key) = key_lab();
    let dir = l.root.join("stage");
    std::fs::create_dir(&dir).unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let copy = dir.join("copy.bin");
    run(Command::new("cp").arg(&key).arg(&copy));
    let alerts = s.alerts_until_marker(&l.marker);
    assert_eq!(
        about(&alerts, "tracked-copy", &copy).len(),
        1,
        "{alerts:#?}"
    );
    let old = std::fs::metadata(&copy).unwrap().ino();
    sh(&format!("rm {}", copy.display()));
    // New files until one gets the old inode number (ext4 and xfs reuse
    // freed numbers at once; tmpfs never does).
    let mut reused = None;
    for i in 0..4000 {
        let p = dir.join(format!("new-{i}"));
        std::fs::write(&p, b"an unrelated new file").unwrap();
        if std::fs::metadata(&p).unwrap().ino() == old {
            reused = Some(p);
            break;
        }
    }
    let Some(reused) = reused else {
        println!("SKIPPED: this filesystem did not reuse inode {old} in 4000 new files");
        return;
    };
    let (reader, st) = actor(&["open", reused.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        alerts.iter().all(|a| a["process"]["pid"] != reader),
        "{} reuses the inode number of a deleted copy: {alerts:#?}",
        reused.display()
    );
    metric_at_least(&s, "keysentry_flow_stopped_total{reason=\"deleted\"}", 1.0);
}

#[test]
fn a_file_renamed_over_a_tracked_file_is_followed_only_from_a_tainted_writer() {
    let (l, key) = key_lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // ldconfig's way: write NAME~, rename it over NAME.
    let cache = l.root.join("ld.so.cache");
    run(Command::new("cp").arg(&key).arg(&cache));
    let fresh = l.root.join("ld.so.cache~");
    sh(&format!(
        "echo unrelated > {} && mv {} {}",
        fresh.display(),
        fresh.display(),
        cache.display()
    ));
    let (reader, st) = actor(&["open", cache.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    assert_eq!(
        about(&alerts, "tracked-copy", &cache).len(),
        1,
        "{alerts:#?}"
    );
    assert!(
        alerts.iter().all(|a| a["process"]["pid"] != reader),
        "the new file an untainted writer renamed over the copy is not tracked: {alerts:#?}"
    );
    // The same, from a writer that read the key: its file is followed.
    let staged = l.root.join("stolen~");
    let cp = run(Command::new("cp").arg(&key).arg(&staged));
    let mv = run(Command::new("mv").arg(&staged).arg(&cache));
    let (reader, st) = actor(&["open", cache.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    assert_eq!(
        about(&alerts, "tracked-copy", &staged).len(),
        1,
        "{alerts:#?}"
    );
    assert_eq!(by_pid(&alerts, "tracked-copy", cp).len(), 1, "{alerts:#?}");
    let moved = by_pid(&alerts, "tracked-copy", mv);
    assert_eq!(moved.len(), 1, "{alerts:#?}");
    assert_eq!(moved[0]["flow"]["via"], "rename");
    assert_eq!(
        by_pid(&alerts, "dump-file-access", reader).len(),
        1,
        "{alerts:#?}"
    );
}

#[test]
fn creating_a_key_is_inventory_and_its_creator_reads_it_freely() {
    if !have("openssl") {
        println!("SKIPPED: openssl (to make a key at test time) is not installed");
        return;
    }
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let key = l.root.join("keys/new.key");
    let genpkey = run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    let crt = l.root.join("new.crt");
    // A config of its own: the VMs have no openssl.cnf.
    let cnf = l.root.join("req.cnf");
    std::fs::write(&cnf, "[req]\ndistinguished_name = dn\n[dn]\n").unwrap();
    let req = run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-subj",
            "/CN=keysentry-test",
            "-config",
        ])
        .arg(&cnf)
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    let alerts = s.alerts_until_marker(&l.marker);
    let created = by_pid(&alerts, "key-created", genpkey);
    assert_eq!(created.len(), 1, "{alerts:#?}");
    assert_eq!(created[0]["severity"], "info");
    assert_eq!(created[0]["target"]["path"], key.to_str().unwrap());
    assert!(
        by_pid(&alerts, "key-file-open", genpkey).is_empty(),
        "{alerts:#?}"
    );
    let read = by_pid(&alerts, "key-file-open", req);
    assert_eq!(read.len(), 1, "{alerts:#?}");
    assert_eq!(read[0]["severity"], "low", "{:#}", read[0]);
    assert!(
        read[0]["factors"]
            .as_array()
            .unwrap()
            .contains(&Value::from("fresh_key")),
        "{:#}",
        read[0]
    );
    assert!(
        about(&alerts, "tracked-copy", &crt).is_empty(),
        "a certificate made from a new key is no copy of it: {alerts:#?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["severity"] == "info" || a["severity"] == "low"),
        "{alerts:#?}"
    );
}

#[test]
fn a_users_own_key_is_low_and_not_followed() {
    let l = lab();
    let home = l.root.join("home");
    std::fs::create_dir(&home).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&home, Some(nobody), Some(nobody)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = home.join("id_test");
    std::fs::write(&key, vec![b'k'; 400]).unwrap();
    std::os::unix::fs::chown(&key, Some(nobody), Some(nobody)).unwrap();
    let cfg = format!("{}\n[[key_name]]\nprefix = \"id_\"\n", config(&l));
    let mut s = Sensor::start(&l.root, &cfg);
    let _ = s.alerts_until_marker(&l.marker);
    let port = listener();
    // ssh's way: read the user's own key, then talk to the network.
    let (sender, st) = actor(
        &["send-file", key.to_str().unwrap(), &port.to_string()],
        None,
        Some(nobody),
    );
    assert!(st.success());
    // A new key in the user's home.
    let made = home.join("id_new");
    let (maker, st) = actor(&["write-file", made.to_str().unwrap()], None, Some(nobody));
    assert!(st.success());
    // root reading the same key is another matter.
    let (root_reader, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = by_pid(&alerts, "key-file-open", sender);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["severity"], "low", "{:#}", a[0]);
    assert!(
        by_pid(&alerts, "exfiltration", sender).is_empty(),
        "a user's own key is not followed: {alerts:#?}"
    );
    let a = by_pid(&alerts, "key-created", maker);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["severity"], "info");
    let a = by_pid(&alerts, "key-file-open", root_reader);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["severity"], "high");
    metric_at_least(&s, "keysentry_flow_stopped_total{reason=\"own_key\"}", 1.0);
}

/// The order the benign-day flake took, on purpose: a process read a file
/// while the kernel had it pending (a key reader's first write, before user
/// space judged it), and user space then found that write no copy (its
/// creator's fresh key). The reader's taint must go with the pending mark,
/// or its later work (a key it makes, which another process reads) is
/// judged from a source nobody tracks.
#[test]
fn a_file_read_before_it_was_found_no_copy_taints_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // A key made while keysentry runs: its creator (root) is known.
    let key = l.root.join("keys/made.key");
    let (maker, st) = actor(&["write-file", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let made = s.alerts_until_marker(&l.marker);
    assert_eq!(by_pid(&made, "key-created", maker).len(), 1, "{made:#?}");
    let copy = l.root.join("made.copy");
    let key2 = l.root.join("keys/second.key");
    let copy2 = l.root.join("second.copy");
    // keysentry stops, so the kernel runs ahead of user space: the copy is
    // pending (marked at its writer's first write) when the shell reads it.
    let ks = Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    let cp1 = run(Command::new("cp").arg(&key).arg(&copy));
    let script = format!(
        "read x < '{copy}'; echo ready; read go; printf 'new key' > '{key2}'; \
         cp '{key2}' '{copy2}'",
        copy = copy.display(),
        key2 = key2.display(),
        copy2 = copy2.display()
    );
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    kill(ks, Signal::SIGCONT).unwrap();
    assert_eq!(line.trim(), "ready");
    // User space has judged the copy (no copy: the creator's fresh key).
    let first = s.alerts_until_marker(&l.marker);
    shell.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let st = shell.wait().unwrap();
    assert!(st.success(), "{st}");
    let shell_pid = shell.id();
    let mut alerts = first;
    alerts.extend(s.alerts_until_marker(&l.marker));
    let read = by_pid(&alerts, "key-file-open", cp1);
    assert_eq!(read.len(), 1, "{alerts:#?}");
    assert_eq!(read[0]["severity"], "low", "{:#}", read[0]);
    let created = by_pid(&alerts, "key-created", shell_pid);
    assert_eq!(created.len(), 1, "{alerts:#?}");
    // The second key's reader: its creator's uid, so a fresh own key (low),
    // not a key whose creator a stale taint erased (high).
    let second: Vec<&Value> = about(&alerts, "key-file-open", &key2)
        .into_iter()
        .filter(|a| a["process"]["pid"] != shell_pid)
        .collect();
    assert_eq!(second.len(), 1, "{alerts:#?}");
    assert_eq!(second[0]["severity"], "low", "{:#}", second[0]);
    assert!(
        second[0]["factors"]
            .as_array()
            .unwrap()
            .contains(&Value::from("fresh_key")),
        "{:#}",
        second[0]
    );
    assert!(
        about(&alerts, "tracked-copy", &copy).is_empty(),
        "{alerts:#?}"
    );
    assert!(
        about(&alerts, "tracked-copy", &copy2).is_empty(),
        "{alerts:#?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["severity"] == "info" || a["severity"] == "low"),
        "{alerts:#?}"
    );
    metric_at_least(
        &s,
        "keysentry_flow_stopped_total{reason=\"not_a_copy\"}",
        1.0,
    );
}
