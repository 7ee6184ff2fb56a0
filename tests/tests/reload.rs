//! SIGHUP reloads the config: a valid file changes behaviour at once, an
//! invalid one is refused (the log names the field) and the old config
//! keeps running. Real opens against the real sensor.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::*;

const RULE: &str = "key-file-open";

fn mkdir(p: &Path) {
    std::fs::create_dir(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Opens `file` with /usr/bin/cat; returns its pid.
fn cat(file: &Path) -> u32 {
    let mut c = Command::new("/usr/bin/cat")
        .arg(file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success());
    pid
}

fn reloads(s: &Sensor, result: &str) -> f64 {
    s.metric(&format!(
        "keysentry_config_reloads_total{{result=\"{result}\"}}"
    ))
    .unwrap_or_else(|| panic!("no keysentry_config_reloads_total{{result={result:?}}}"))
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_an_invalid_one() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    let more = root.join("more-keys");
    mkdir(&keys);
    mkdir(&more);
    let secret = keys.join("signing.secret");
    let marker = keys.join("zz-marker");
    let later = more.join("later.secret");
    for f in [&secret, &marker, &later] {
        std::fs::write(f, b"not really a key").unwrap();
    }
    let alerts_file = root.join("out/alerts.jsonl");
    let v1 = format!("[[key_path]]\npath = \"{}\"\n", keys.display());
    let mut s = Sensor::start(root, &v1);
    assert_eq!(reloads(&s, "ok"), 0.0);
    assert_eq!(reloads(&s, "invalid"), 0.0);

    // Before: cat alerts on the key, the other directory is not watched.
    let cat1 = cat(&secret);
    let (other1, st) = actor(&["open", later.to_str().unwrap()], None, None);
    assert!(st.success());
    let a = s.alerts_until_marker(&marker);
    assert_eq!(by_pid(&a, RULE, cat1).len(), 1, "{a:#?}");
    assert!(by_pid(&a, RULE, other1).is_empty(), "{a:#?}");

    // A valid config: cat allowed for the key directory, a second key
    // path, and a file output.
    let v2 = format!(
        "{v1}[[key_path]]\npath = \"{}\"\n[[allow]]\nexe = \"/usr/bin/cat\"\nkey_path = \"{}\"\n",
        more.display(),
        keys.display()
    );
    let file_line = format!("file = \"{}\"", alerts_file.display());
    s.reload(root, &file_line, &v2);
    let line = s.wait_log("config reloaded");
    assert!(line.contains("2 key paths"), "{line}");
    assert!(line.contains("stdout, file"), "{line}");
    assert_eq!(reloads(&s, "ok"), 1.0);
    let cat2 = cat(&secret);
    let (other2, st) = actor(&["open", later.to_str().unwrap()], None, None);
    assert!(st.success());
    let a = s.alerts_until_marker(&marker);
    assert!(by_pid(&a, RULE, cat2).is_empty(), "allowed now: {a:#?}");
    let new_key = by_pid(&a, RULE, other2);
    assert_eq!(new_key.len(), 1, "new key path: {a:#?}");
    assert_eq!(new_key[0]["target"]["path"], later.to_str().unwrap());
    assert_eq!(new_key[0]["open"]["key_path"], more.to_str().unwrap());
    // The new file output gets the same alert (its own thread: each write
    // to the file is an inotify event, waited for under a deadline).
    let mut ino = inotify::Inotify::init().unwrap();
    ino.watches()
        .add(&alerts_file, inotify::WatchMask::MODIFY)
        .unwrap();
    let end = std::time::Instant::now() + deadline();
    loop {
        let written = std::fs::read_to_string(&alerts_file).unwrap_or_default();
        let seen = written.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["rule"] == RULE && v["process"]["pid"] == other2
        });
        if seen {
            break;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "file output: {written}");
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&ino),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        let mut buf = [0u8; 4096];
        let _ = ino.read_events(&mut buf);
    }

    // An invalid config: refused, the field named, the old config kept.
    let bad = format!("{v2}[[key_path]]\npath = \"relative/keys\"\n");
    s.reload(root, &file_line, &bad);
    let line = s.wait_log("config reload failed");
    assert!(line.contains("key_path[2].path"), "{line}");
    assert!(line.contains("must be absolute"), "{line}");
    assert_eq!(reloads(&s, "invalid"), 1.0);
    assert_eq!(reloads(&s, "ok"), 1.0);
    let cat3 = cat(&secret);
    let (other3, st) = actor(&["open", later.to_str().unwrap()], None, None);
    assert!(st.success());
    let a = s.alerts_until_marker(&marker);
    assert!(by_pid(&a, RULE, cat3).is_empty(), "still allowed: {a:#?}");
    assert_eq!(by_pid(&a, RULE, other3).len(), 1, "still watched: {a:#?}");

    // A TOML error names the key too.
    s.reload(
        root,
        &file_line,
        &format!("{v2}[[allow]]\nexe = \"/x\"\nbogus = 1\n"),
    );
    let line = s.wait_log("config reload failed");
    assert!(line.contains("bogus"), "{line}");
    assert_eq!(reloads(&s, "invalid"), 2.0);
    assert!(s.stop().success());
}

/// `cp KEY DST`; returns cp's pid.
fn cp(key: &Path, dst: &Path) -> u32 {
    let mut c = Command::new("/usr/bin/cp")
        .arg(key)
        .arg(dst)
        .spawn()
        .unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success());
    pid
}

#[test]
fn sighup_changes_the_kernel_allowlist_that_decides_taint() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    mkdir(&keys);
    let key = keys.join("signing.key");
    let marker = keys.join("zz-marker");
    for f in [&key, &marker] {
        std::fs::write(f, b"not really a key").unwrap();
    }
    let base = format!("[[key_path]]\npath = \"{}\"\n", keys.display());
    let allow = format!(
        "{base}[[allow]]\nexe = \"/usr/bin/cp\"\nkey_path = \"{}\"\n",
        keys.display()
    );
    let copies = |a: &[serde_json::Value], pid: u32| by_pid(a, "tracked-copy", pid).len();
    let mut s = Sensor::start(root, &allow);

    // cp is allowed the key: it is not tainted, its copy is not followed.
    let dst1 = root.join("copy1");
    let cp1 = cp(&key, &dst1);
    let a = s.alerts_until_marker(&marker);
    assert_eq!(copies(&a, cp1), 0, "{a:#?}");
    assert!(by_pid(&a, RULE, cp1).is_empty(), "{a:#?}");

    // The allowance removed: the kernel taints cp again.
    s.reload(root, "", &base);
    s.wait_log("config reloaded");
    let dst2 = root.join("copy2");
    let cp2 = cp(&key, &dst2);
    let a = s.alerts_until_marker(&marker);
    assert_eq!(by_pid(&a, RULE, cp2).len(), 1, "{a:#?}");
    let c = by_pid(&a, "tracked-copy", cp2);
    assert_eq!(c.len(), 1, "{a:#?}");
    assert_eq!(c[0]["target"]["path"], dst2.to_str().unwrap());

    // And given back.
    s.reload(root, "", &allow);
    s.wait_log("config reloaded");
    let cp3 = cp(&key, &root.join("copy3"));
    let a = s.alerts_until_marker(&marker);
    assert_eq!(copies(&a, cp3), 0, "{a:#?}");
    assert!(s.stop().success());
}
