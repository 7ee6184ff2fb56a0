//! key-file-open: real opens of real files against the real sensor.

mod common;

use std::{
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

const RULE: &str = "key-file-open";

struct Keys {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    keydir: PathBuf,
    secret: PathBuf,
    marker: PathBuf,
}

/// A key directory with a secret and a marker key, and an unwatched area.
fn keys() -> Keys {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let keydir = root.join("keys");
    std::fs::create_dir(&keydir).unwrap();
    std::fs::set_permissions(&keydir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = keydir.join("signing.secret");
    std::fs::write(&secret, b"not really a key").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let marker = keydir.join("zz-marker");
    std::fs::write(&marker, b"marker").unwrap();
    std::fs::create_dir(root.join("elsewhere")).unwrap();
    Keys {
        _tmp: tmp,
        root,
        keydir,
        secret,
        marker,
    }
}

fn config(k: &Keys, extra: &str) -> String {
    format!(
        "[[key_path]]\npath = \"{}\"\n\n[[key_name]]\nsuffix = \".p12\"\n\n{extra}",
        k.keydir.display()
    )
}

fn one_alert(alerts: &[serde_json::Value], pid: u32, file: &Path, how: &str) -> serde_json::Value {
    let mine = by_pid(alerts, RULE, pid);
    assert_eq!(
        mine.len(),
        1,
        "{how}: expected exactly one alert for pid {pid}, got {alerts:#?}"
    );
    let a = mine[0].clone();
    assert_eq!(a["target"]["inode"], ino(file), "{how}: inode");
    assert_eq!(a["attack"], "T1552.004");
    assert_eq!(a["open"]["result"], "success", "{how}");
    assert!(a["ts"].as_str().unwrap().ends_with('Z'));
    a
}

#[test]
fn every_name_of_a_key_gives_exactly_one_alert() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let secret = k.secret.to_str().unwrap();

    let (abs, st) = actor(&["open", secret], None, None);
    assert!(st.success());
    let (rel, st) = actor(&["open", "signing.secret"], Some(&k.keydir), None);
    assert!(st.success());
    let (rel_up, st) = actor(
        &["open", "../keys/./signing.secret"],
        Some(&k.root.join("elsewhere")),
        None,
    );
    assert!(st.success());
    let link = k.root.join("elsewhere/innocent-link");
    symlink(&k.secret, &link).unwrap();
    let (via_link, st) = actor(&["open", link.to_str().unwrap()], None, None);
    assert!(st.success());
    let hard = k.root.join("elsewhere/hardlink");
    std::fs::hard_link(&k.secret, &hard).unwrap();
    let (via_hard, st) = actor(&["open", hard.to_str().unwrap()], None, None);
    assert!(st.success());
    let (via_dirfd, st) = actor(
        &["openat", k.keydir.to_str().unwrap(), "signing.secret"],
        None,
        None,
    );
    assert!(st.success());
    let (reopen, st) = actor(&["opath-reopen", secret], None, None);
    assert!(st.success());

    let alerts = s.alerts_until_marker(&k.marker);
    let a = one_alert(&alerts, abs, &k.secret, "absolute path");
    assert_eq!(a["target"]["path"], secret);
    assert_eq!(a["open"]["arg"], secret);
    assert_eq!(a["open"]["access"], "read");
    assert_eq!(a["open"]["key_path"], k.keydir.to_str().unwrap());
    assert_eq!(
        a["process"]["exe"],
        actor_bin().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(a["severity"], "high");
    let a = one_alert(&alerts, rel, &k.secret, "relative path");
    assert_eq!(a["target"]["path"], secret, "kernel path, not the argument");
    assert_eq!(a["open"]["arg"], "signing.secret");
    one_alert(&alerts, rel_up, &k.secret, "relative path with ..");
    let a = one_alert(&alerts, via_link, &k.secret, "symlink");
    assert_eq!(a["target"]["path"], secret);
    let a = one_alert(&alerts, via_hard, &k.secret, "hardlink");
    assert_eq!(a["target"]["path"], hard.to_str().unwrap());
    one_alert(&alerts, via_dirfd, &k.secret, "openat on a dirfd");
    // O_PATH grants no read: only the reopen is an access.
    let a = one_alert(
        &alerts,
        reopen,
        &k.secret,
        "O_PATH reopened via /proc/self/fd",
    );
    assert_eq!(a["open"]["access"], "read");

    let st = s.stop();
    assert_eq!(st.code(), Some(0), "SIGTERM exits 0");
}

#[test]
fn io_uring_open_bind_mount_and_files_created_later() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let (uring, st) = actor(&["uring", k.secret.to_str().unwrap()], None, None);
    assert!(st.success(), "io_uring open");

    let bind = k.root.join("elsewhere/bind");
    std::fs::create_dir(&bind).unwrap();
    nix::mount::mount(
        Some(&k.keydir),
        &bind,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind mount");
    let (via_bind, st) = actor(
        &["open", bind.join("signing.secret").to_str().unwrap()],
        None,
        None,
    );
    nix::mount::umount(&bind).expect("umount");
    assert!(st.success());

    let later = k.keydir.join("created-after-start");
    std::fs::write(&later, b"new key").unwrap();
    let (new_file, st) = actor(&["open", later.to_str().unwrap()], None, None);
    assert!(st.success());

    let sub = k.keydir.join("sub/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let nested = sub.join("nested.secret");
    std::fs::write(&nested, b"k").unwrap();
    // The new directories are picked up by inotify; the sensor logs it.
    s.wait_log(&format!("watching new directory {}", sub.display()));
    let (in_new_dir, st) = actor(&["open", nested.to_str().unwrap()], None, None);
    assert!(st.success());

    let alerts = s.alerts_until_marker(&k.marker);
    let a = one_alert(&alerts, uring, &k.secret, "io_uring");
    assert_eq!(a["open"]["via"], "io_uring");
    one_alert(&alerts, via_bind, &k.secret, "bind mount");
    one_alert(&alerts, new_file, &later, "file created after start");
    one_alert(
        &alerts,
        in_new_dir,
        &nested,
        "file in a directory created after start",
    );
}

#[test]
fn key_names_match_anywhere_and_unwatched_files_never_reach_user_space() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let copied = k.root.join("elsewhere/copied.p12");
    std::fs::write(&copied, b"pkcs12").unwrap();
    let plain = k.root.join("elsewhere/notes.txt");
    std::fs::write(&plain, b"hello").unwrap();
    // Writing the .p12 above was itself a key open: let it through first.
    let _ = s.alerts_until_marker(&k.marker);
    let before = s
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap();

    let (by_name, st) = actor(&["open", copied.to_str().unwrap()], None, None);
    assert!(st.success());
    let mut unwatched = Vec::new();
    for _ in 0..3 {
        let (pid, st) = actor(&["open", plain.to_str().unwrap()], None, None);
        assert!(st.success());
        unwatched.push(pid);
    }
    let alerts = s.alerts_until_marker(&k.marker);
    let a = one_alert(&alerts, by_name, &copied, "key name pattern");
    assert_eq!(a["open"]["matched"], serde_json::json!(["key_name"]));
    assert_eq!(a["open"]["key_name"], serde_json::json!(["*.p12"]));
    for pid in unwatched {
        assert!(by_pid(&alerts, RULE, pid).is_empty());
    }
    // Only the .p12 and the marker reached user space.
    let after = s
        .metric("keysentry_events_total{kind=\"key_open\"}")
        .unwrap();
    assert_eq!(after - before, 2.0, "kernel filtered the unwatched opens");
}

#[test]
fn allowed_exe_gives_no_alert_but_a_renamed_copy_does() {
    let k = keys();
    let cat = Path::new("/usr/bin/cat");
    let cfg = config(
        &k,
        &format!(
            "[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
            cat.display(),
            k.keydir.display()
        ),
    );
    let mut s = Sensor::start(&k.root, &cfg);
    let allowed = Command::new(cat).arg(&k.secret).output().unwrap();
    assert!(allowed.status.success());
    let copy = k.root.join("elsewhere/cat");
    std::fs::copy(cat, &copy).unwrap();
    let mut c = Command::new(&copy)
        .arg(&k.secret)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let copy_pid = c.id();
    assert!(c.wait().unwrap().success());

    let alerts = s.alerts_until_marker(&k.marker);
    assert!(
        !alerts.iter().any(|a| a["process"]["exe"] == "/usr/bin/cat"),
        "allowed exe alerted: {alerts:#?}"
    );
    let a = one_alert(
        &alerts,
        copy_pid,
        &k.secret,
        "renamed copy of an allowed exe",
    );
    assert_eq!(a["process"]["exe"], copy.to_str().unwrap());
}

#[test]
fn failed_open_is_reported_as_an_attempt() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let (pid, st) = actor(&["open", k.secret.to_str().unwrap()], None, Some(65534));
    assert_eq!(st.code(), Some(1), "EACCES expected as nobody");
    let alerts = s.alerts_until_marker(&k.marker);
    let mine = by_pid(&alerts, RULE, pid);
    assert_eq!(mine.len(), 1, "{alerts:#?}");
    let a = mine[0];
    assert_eq!(a["open"]["result"], "failed");
    assert_eq!(a["open"]["errno"], "EACCES");
    assert_eq!(a["process"]["uid"], 65534);
    assert_eq!(a["target"]["path"], k.secret.to_str().unwrap());
    assert_eq!(a["target"]["inode"], ino(&k.secret));
    assert_eq!(a["severity"], "medium");
}

#[test]
fn metrics_are_served_over_http() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let _ = s.alerts_until_marker(&k.marker);
    let m = s.metrics();
    assert!(
        m.contains("keysentry_probe_attached{backend=\"tracepoint\",probe=\"tracepoint/syscalls/sys_exit_openat\"} 1"),
        "{m}"
    );
    assert!(m.contains(
        "keysentry_probe_attached{backend=\"tracepoint\",probe=\"raw_tp/sched_process_fork\"} 1"
    ));
    assert!(m.contains("keysentry_build_info{kernel="));
    assert!(
        s.metric("keysentry_alerts_total{rule=\"key-file-open\",severity=\"high\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        s.metric("keysentry_events_lost_total{kind=\"key_open\",lane=\"bulk\"}"),
        Some(0.0)
    );
    let procs = s.metric("keysentry_process_table_entries").unwrap();
    assert!(
        procs > 1.0,
        "process table entries {procs}: {}",
        s.metrics()
            .lines()
            .filter(|l| l.contains("process_table") || l.contains("events_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(s.metric("keysentry_watched_inodes").unwrap() >= 3.0);
}

#[test]
fn key_path_created_after_start_is_watched_once_it_appears() {
    let k = keys();
    let later = k.root.join("later/keys");
    let cfg = format!(
        "{}\n[[key_path]]\npath = \"{}\"\n",
        config(&k, ""),
        later.display()
    );
    let mut s = Sensor::start(&k.root, &cfg);
    std::fs::create_dir_all(&later).unwrap();
    let key = later.join("fresh.secret");
    std::fs::write(&key, b"k").unwrap();
    s.wait_log(&format!("watching key path {}", later.display()));
    let (pid, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&k.marker);
    one_alert(&alerts, pid, &key, "key path that appeared");
}

#[test]
fn a_full_ring_buffer_is_counted_per_kind_and_lane_never_silent() {
    let k = keys();
    // 300 distinct key files: the kernel folds repeats of one open, never
    // opens of different files, so each of these is a record.
    let n = 300;
    let files: Vec<_> = (0..n)
        .map(|i| {
            let f = k.keydir.join(format!("burst-{i}.secret"));
            std::fs::write(&f, b"k").unwrap();
            f
        })
        .collect();
    // Room for about sixteen open records (compact, about 450 bytes each):
    // a burst must overflow it.
    let mut s = Sensor::start_with(&k.root, &config(&k, ""), &["--ring-buffer-bytes", "8192"]);
    let _ = s.alerts_until_marker(&k.marker);
    let seen = |s: &Sensor| {
        s.metric("keysentry_events_total{kind=\"key_open\"}")
            .unwrap()
            + s.metric("keysentry_events_lost_total{kind=\"key_open\",lane=\"bulk\"}")
                .unwrap()
            + s.metric("keysentry_events_folded_total{kind=\"key_open\"}")
                .unwrap()
    };
    let lost_before = s
        .metric("keysentry_events_lost_total{kind=\"key_open\",lane=\"bulk\"}")
        .unwrap();
    let before = seen(&s);
    // keysentry stops for the burst, so the ring overflows by the scenario,
    // not by a race with a reader that may keep up.
    let ks = nix::unistd::Pid::from_raw(s.pid() as i32);
    stop_and_wait(ks);
    for f in &files {
        std::fs::File::open(f).unwrap();
    }
    nix::sys::signal::kill(ks, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Every open is accounted for, delivered, folded or lost (lost and
    // folded counts are read by the agent on its 50 and 500 ms timers, so
    // wait for them with a deadline).
    let end = std::time::Instant::now() + deadline();
    let mut got = seen(&s) - before;
    while got < n as f64 {
        assert!(
            std::time::Instant::now() < end,
            "only {got} of {n} opens accounted for"
        );
        got = seen(&s) - before;
    }
    assert_eq!(
        got, n as f64,
        "each open is delivered, folded or counted lost, once"
    );
    let lost = s
        .metric("keysentry_events_lost_total{kind=\"key_open\",lane=\"bulk\"}")
        .unwrap()
        - lost_before;
    assert!(
        lost > 0.0,
        "a burst of {n} opens into an 8 KiB ring lost nothing"
    );
    // Each kind has its own counter, labelled with its lane; the option
    // sizes the bulk lane only, so the other lanes lost nothing.
    assert_eq!(
        s.metric("keysentry_events_lost_total{kind=\"exec\",lane=\"lifecycle\"}"),
        Some(0.0)
    );
    assert_eq!(
        s.metric("keysentry_events_lost_total{kind=\"mem_access\",lane=\"critical\"}"),
        Some(0.0)
    );
}

/// A directory under `root` whose key file `x.p12` has a path of exactly
/// `len` bytes.
fn key_at_length(root: &Path, len: usize) -> PathBuf {
    let mut dir = root.join(format!("deep{len}"));
    let leaf = "/x.p12".len();
    while dir.as_os_str().len() + leaf + 1 + 120 < len {
        dir = dir.join("d".repeat(120));
    }
    let pad = len - leaf - dir.as_os_str().len() - 1;
    dir = dir.join("e".repeat(pad));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.p12");
    assert_eq!(f.as_os_str().len(), len);
    std::fs::write(&f, b"k").unwrap();
    f
}

/// An open's record takes of its ring the bytes its path uses (the kernel
/// sends it compact), up to `COMPACT_PATH_MAX`; a longer path travels in
/// the whole record. Either way the alert has the path the kernel rebuilt.
#[test]
fn an_open_record_is_as_long_as_its_path_and_a_long_path_arrives_whole() {
    use sensor_common::{COMPACT_PATH_MAX, EventKind, OpenEvent};
    let k = keys();
    let c = EventKind::KeyOpen.compaction().unwrap();
    let short = k.root.join("short.p12");
    std::fs::write(&short, b"k").unwrap();
    // (file, sent compact, path complete): the longest path sent compact,
    // one byte more, and one longer than the kernel's walk keeps (it keeps
    // the components that start within its first 1024 bytes).
    let cases = [
        (short, true, true),
        (key_at_length(&k.root, COMPACT_PATH_MAX), true, true),
        (key_at_length(&k.root, COMPACT_PATH_MAX + 1), false, true),
        (key_at_length(&k.root, 1200), false, false),
    ];
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let _ = s.alerts_until_marker(&k.marker);
    let metric = |s: &Sensor, m: &str| s.metric(&format!("{m}{{kind=\"key_open\"}}")).unwrap();
    for (file, compact, complete) in &cases {
        let len = file.as_os_str().len();
        let (events, bytes) = (
            metric(&s, "keysentry_events_total"),
            metric(&s, "keysentry_event_bytes_total"),
        );
        let (pid, st) = actor(&["open", file.to_str().unwrap()], None, None);
        assert!(st.success());
        let got = s.alerts_until(|a| a["rule"] == RULE && a["process"]["pid"] == pid);
        let a = got.last().unwrap();
        let path = a["target"]["path"].as_str().unwrap();
        if *complete {
            assert_eq!(path, file.to_str().unwrap(), "{len}");
        } else {
            let tail = path.strip_prefix("...").unwrap();
            assert!(tail.len() > COMPACT_PATH_MAX, "{len}: {path}");
            assert!(file.to_str().unwrap().ends_with(tail), "{len}: {path}");
        }
        assert_eq!(a["target"]["inode"], ino(file), "{len}");
        assert_eq!(metric(&s, "keysentry_events_total") - events, 1.0, "{len}");
        let want = if *compact {
            c.size(len as u32).unwrap()
        } else {
            assert_eq!(c.size(len as u32), None);
            size_of::<OpenEvent>()
        };
        assert_eq!(
            metric(&s, "keysentry_event_bytes_total") - bytes,
            want as f64,
            "a {len}-byte path"
        );
    }
}

/// Every open syscall is seen (one program serves the five tracepoints,
/// dispatched on the syscall number): each gives an alert naming it, with
/// the path argument read from that syscall's own argument.
#[test]
fn each_open_syscall_gives_one_alert_naming_it() {
    let k = keys();
    let mut s = Sensor::start(&k.root, &config(&k, ""));
    let _ = s.alerts_until_marker(&k.marker);
    let made = k.root.join("made.p12");
    for (how, file) in [
        ("open", k.secret.as_path()),
        ("openat", k.secret.as_path()),
        ("openat2", k.secret.as_path()),
        ("creat", made.as_path()),
        ("open_by_handle_at", k.secret.as_path()),
    ] {
        let path = file.to_str().unwrap();
        let (pid, st) = actor(&["sys-open", how, path], None, None);
        if !st.success() && how == "open_by_handle_at" {
            println!("SKIP open_by_handle_at: no file handles on this file system");
            continue;
        }
        assert!(st.success(), "{how}");
        // creat makes a new key-named file: a key-created alert.
        let rule = if how == "creat" { "key-created" } else { RULE };
        let got = s.alerts_until(|a| a["rule"] == rule && a["process"]["pid"] == pid);
        let a = got.last().unwrap();
        assert_eq!(a["open"]["via"], how);
        assert_eq!(a["target"]["path"], path, "{how}");
        assert_eq!(a["target"]["inode"], ino(file), "{how}");
        if how == "open_by_handle_at" {
            // No path argument: the file came from a handle.
            assert!(a["open"].get("arg").is_none(), "{how}: {a:#}");
        } else {
            assert_eq!(a["open"]["arg"], path, "{how}");
        }
        let access = if how == "creat" { "write" } else { "read" };
        assert_eq!(a["open"]["access"], access, "{how}");
    }
}
