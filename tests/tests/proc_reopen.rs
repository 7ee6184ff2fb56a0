//! A protected process's memfd reopened through /proc: `proc-mem-open`
//! against the process that holds it, however the path is spelt. A
//! protected victim keeps a secret in a mapped memfd; another process opens
//! it through /proc/<pid>/fd/N, through a symlink to that, by a relative
//! path from /proc/<pid>/fd, through /proc/<pid>/map_files/A-B, and in two
//! steps (an O_PATH open of the link, then a reopen of its own descriptor
//! through /proc/self/fd). Not alerts: the victim reopening its own memfd,
//! and an unprotected process's memfd reopened.

mod common;

use std::path::{Path, PathBuf};

use common::{lab::spawn_line, *};

const RULE: &str = "proc-mem-open";

/// The victim's line: mapping address, length and the memfd's descriptor.
fn parse(line: &str) -> (u64, u64, u32) {
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
    )
}

#[test]
fn a_protected_processs_memfd_reopened_through_proc_alerts() {
    require_root();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let victim_bin = actor_copy(&root, "ks-victim");
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
        root.join("keys").display(),
        victim_bin.display(),
    );
    let mut s = Sensor::start(&root, &config);
    let (victim, vpid, line) = spawn_line(&victim_bin, &["victim-memfd"]);
    let (addr, len, fd) = parse(&line);
    let (plain, ppid, pline) = spawn_line(&actor_bin(), &["victim-memfd"]);
    let (_, _, pfd) = parse(&pline);

    let fd_link = PathBuf::from(format!("/proc/{vpid}/fd/{fd}"));
    let link = root.join("lnk");
    std::os::unix::fs::symlink(&fd_link, &link).unwrap();
    let map_file = format!("/proc/{vpid}/map_files/{addr:x}-{:x}", addr + len);
    let open = |path: &str, cwd: Option<&Path>| {
        let (pid, st) = actor(&["open", path], cwd, None);
        assert!(st.success(), "open {path}");
        pid
    };
    let direct = open(&fd_link.display().to_string(), None);
    let via_link = open(&link.display().to_string(), None);
    let relative = open(
        &fd.to_string(),
        Some(Path::new(&format!("/proc/{vpid}/fd"))),
    );
    let mapped = open(&map_file, None);
    let (two_step, st) = actor(
        &["opath-reopen", &fd_link.display().to_string()],
        None,
        None,
    );
    assert!(st.success(), "opath-reopen");
    let unprotected = open(&format!("/proc/{ppid}/fd/{pfd}"), None);
    let alerts = s.alerts_until_marker(&marker);
    release(victim);
    release(plain);

    for (pid, what) in [
        (direct, "/proc/PID/fd/N"),
        (via_link, "a symlink to it"),
        (relative, "a relative path"),
        (mapped, "map_files"),
        (two_step, "O_PATH, then /proc/self/fd"),
    ] {
        let a = one_by_pid(&alerts, RULE, pid);
        assert_eq!(a["severity"], "high", "{what}: {a:#}");
        assert_eq!(a["target"]["pid"], vpid, "{what}: {a:#}");
        assert!(
            a["target"]["protected"].is_string(),
            "{what}: the target says why it is protected: {a:#}"
        );
    }
    assert!(
        by_pid(&alerts, RULE, vpid).is_empty(),
        "the victim's own reopen must not alert"
    );
    assert!(
        by_pid(&alerts, RULE, unprotected).is_empty(),
        "an unprotected process's memfd must not alert"
    );
}
