//! What an `[[allow]]` trusts: the allowlisted program's own image, named
//! by path and checked by (dev, inode) at exec. Re-enacted here: the same
//! program run with loader variables, under a tracer, and a look-alike
//! bind-mounted over the allowlisted path in a private mount namespace.
//! Each reads a watched key and must alert with the `allow_bypass` factor;
//! the plain program, and one whose environment merely mentions a loader
//! variable in a value, must not.

mod common;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;
use nix::{
    sys::{
        ptrace,
        wait::{WaitStatus, waitpid},
    },
    unistd::Pid,
};

const RULE: &str = "key-file-open";

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    secret: PathBuf,
    marker: PathBuf,
    config: String,
}

/// A watched key directory that /usr/bin/cat is allowed to read.
fn setup() -> Setup {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let keydir = root.join("keys");
    std::fs::create_dir(&keydir).unwrap();
    std::fs::set_permissions(&keydir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = keydir.join("signing.secret");
    std::fs::write(&secret, b"not really a key").unwrap();
    let marker = keydir.join("zz-marker");
    std::fs::write(&marker, b"marker").unwrap();
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[allow]]\nexe = \"/usr/bin/cat\"\nkey_path = \"{}\"\n",
        keydir.display(),
        keydir.display()
    );
    Setup {
        _tmp: tmp,
        root,
        secret,
        marker,
        config,
    }
}

/// `cat FILE` with extra environment variables; its pid.
fn cat_with_env(file: &Path, env: &[(&str, &str)]) -> u32 {
    let mut c = Command::new("/usr/bin/cat");
    c.arg(file).stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

/// The one key-file-open alert of `pid`, which must carry the
/// allow_bypass factor and a reason containing `why`.
fn bypass_alert(alerts: &[serde_json::Value], pid: u32, file: &Path, why: &str) {
    let mine = by_pid(alerts, RULE, pid);
    assert_eq!(mine.len(), 1, "pid {pid} ({why}): {alerts:#?}");
    let a = mine[0];
    assert_eq!(a["target"]["inode"], ino(file));
    assert_eq!(a["process"]["exe"], "/usr/bin/cat");
    assert!(
        a["factors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "allow_bypass"),
        "{why}: {a:#}"
    );
    let reason = a["process"]["allow_bypass"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
}

/// `cat FILE` started the way a debugger starts its program
/// (PTRACE_TRACEME, then exec) and run to its end; its pid. The child is
/// reaped by the tracer's waitpid loop, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn cat_traced(file: &Path) -> u32 {
    let mut c = Command::new("/usr/bin/cat");
    c.arg(file).stdout(Stdio::null());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe.
    unsafe {
        c.pre_exec(|| ptrace::traceme().map_err(std::io::Error::from));
    }
    let child = c.spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        match waitpid(pid, None).unwrap() {
            WaitStatus::Exited(_, code) => {
                assert_eq!(code, 0);
                return child.id();
            }
            WaitStatus::Stopped(_, _) => ptrace::cont(pid, None).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `cat FILE` with a look-alike bind-mounted over /usr/bin/cat in a private
/// mount namespace: the path string is /usr/bin/cat, the inode is not. Its
/// pid, or None when unshare(1) is missing.
fn cat_look_alike(root: &Path, file: &Path) -> Option<u32> {
    if Command::new("unshare").arg("--version").output().is_err() {
        return None;
    }
    let copy = root.join("cat");
    std::fs::copy("/usr/bin/cat", &copy).unwrap();
    let pidfile = root.join("pid");
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /usr/bin/cat && echo $$ > {} && exec /usr/bin/cat {} > /dev/null",
            copy.display(),
            pidfile.display(),
            file.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    Some(
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    )
}

#[test]
fn an_allowance_holds_only_for_the_program_itself() {
    let s0 = setup();
    let mut s = Sensor::start(&s0.root, &s0.config);
    let plain = cat_with_env(&s0.secret, &[]);
    // A value that mentions a loader variable is not one.
    let mention = cat_with_env(&s0.secret, &[("NOTE", "LD_PRELOAD=/x")]);
    let preload = cat_with_env(&s0.secret, &[("LD_PRELOAD", &libc_path())]);
    let libpath = cat_with_env(&s0.secret, &[("LD_LIBRARY_PATH", "/nonexistent")]);
    // Far into a large environment: the kernel reads all of it.
    let pad = "x".repeat(20_000);
    let deep = cat_with_env(
        &s0.secret,
        &[("A_PAD", pad.as_str()), ("LD_AUDIT", "/nonexistent.so")],
    );
    let traced = cat_traced(&s0.secret);
    let look_alike = cat_look_alike(&s0.root, &s0.secret);
    let alerts = s.alerts_until_marker(&s0.marker);

    for pid in [plain, mention] {
        assert!(
            by_pid(&alerts, RULE, pid).is_empty(),
            "allowed cat {pid} alerted: {alerts:#?}"
        );
    }
    for pid in [preload, libpath, deep] {
        bypass_alert(
            &alerts,
            pid,
            &s0.secret,
            "LD_PRELOAD, LD_AUDIT or LD_LIBRARY_PATH",
        );
    }
    bypass_alert(&alerts, traced, &s0.secret, "traced");
    match look_alike {
        Some(pid) => bypass_alert(
            &alerts,
            pid,
            &s0.secret,
            "is not the file /usr/bin/cat names",
        ),
        None => eprintln!("SKIP look-alike part: unshare(1) is not installed"),
    }
}

/// dpkg's way of upgrading a program: the new file written beside it and
/// renamed over it (a new inode at the same path).
fn replace_in_place(exe: &Path) {
    let new = exe.with_extension("dpkg-new");
    std::fs::copy("/usr/bin/cat", &new).unwrap();
    std::fs::rename(&new, exe).unwrap();
}

/// `exe FILE > out` with extra environment variables; its pid.
fn run_to(exe: &Path, file: &Path, out: &Path, env: &[(&str, &str)]) -> u32 {
    let mut c = Command::new(exe);
    c.arg(file)
        .stdout(std::fs::File::create(out).unwrap())
        .envs(env.iter().copied());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

/// An `[[allow]]` program upgraded in place (a new inode at its path)
/// keeps its allowance, in the kernel as in user space, and the upgraded
/// program is checked for loader variables at exec like the old one.
#[test]
fn an_allowance_follows_its_program_upgraded_in_place() {
    let s0 = setup();
    let keydir = s0.secret.parent().unwrap();
    let bin = s0.root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("ks-signer");
    std::fs::copy("/usr/bin/cat", &exe).unwrap();
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        keydir.display(),
        exe.display(),
        keydir.display()
    );
    let mut s = Sensor::start(&s0.root, &config);
    let before = ino(&exe);
    replace_in_place(&exe);
    assert_ne!(ino(&exe), before, "the upgrade is a new inode");
    // keysentry gives the kernel the new file's identity (inotify on the
    // program's directory) before anyone runs it.
    s.wait_log("allowlist: 1 replaced");

    // The upgraded program reads its key and writes a file of its own: no
    // alert, and its file is not a copy (the kernel did not taint it).
    let state = s0.root.join("signer-state");
    let plain = run_to(&exe, &s0.secret, &state, &[]);
    // The upgraded program with LD_PRELOAD: the kernel checks its exec
    // again, so the allowance does not hold.
    let preload = run_to(
        &exe,
        &s0.secret,
        Path::new("/dev/null"),
        &[("LD_PRELOAD", &libc_path())],
    );
    let alerts = s.alerts_until_marker(&s0.marker);

    assert!(
        by_pid(&alerts, RULE, plain).is_empty(),
        "the upgraded program alerted: {alerts:#?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["target"]["path"] == state.to_str().unwrap()),
        "the upgraded program's own file was followed: {alerts:#?}"
    );
    let mine = by_pid(&alerts, RULE, preload);
    assert_eq!(mine.len(), 1, "LD_PRELOAD after the upgrade: {alerts:#?}");
    assert_eq!(mine[0]["process"]["exe"], exe.to_str().unwrap());
    assert!(
        mine[0]["factors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "allow_bypass"),
        "{:#}",
        mine[0]
    );
    let reason = mine[0]["process"]["allow_bypass"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("LD_PRELOAD"), "reason {reason:?}");
}
