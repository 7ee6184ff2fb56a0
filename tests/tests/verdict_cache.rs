//! The kernel keeps "nothing to report" for the files it saw opened
//! (per CPU, per dentry: sensor-ebpf/src/probes/verdict.rs), so the next
//! open of the same file costs one read. These tests make a file matter
//! after it was opened and cached (a reload makes it a key path's file or
//! gives it a key name, a tainted process writes a copy over it) and show
//! its next open, on the same CPU, is reported. Every opener runs on CPU 0, where the verdict was
//! kept.

mod common;

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
};

use common::{lab::*, *};

/// `cat FILE` on CPU 0; returns its pid.
fn cat_on_cpu0(file: &Path) -> u32 {
    let mut c = Command::new("/usr/bin/cat");
    c.arg(file).stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

#[test]
fn a_file_opened_before_a_reload_made_it_a_key_is_reported_at_its_next_open() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    let more = root.join("more-keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&more).unwrap();
    let marker = keys.join("zz-marker");
    let later = more.join("later.secret");
    std::fs::write(&marker, b"m").unwrap();
    std::fs::write(&later, b"not really a key").unwrap();
    let v1 = format!("[[key_path]]\npath = \"{}\"\n", keys.display());
    let mut s = Sensor::start(root, &v1);
    // Not a key yet: opened twice (the verdict is kept), no alert.
    let before: Vec<u32> = (0..2).map(|_| cat_on_cpu0(&later)).collect();
    let a = s.alerts_until_marker(&marker);
    for pid in &before {
        assert!(by_pid(&a, "key-file-open", *pid).is_empty(), "{a:#?}");
    }
    // Its directory becomes a key path.
    let v2 = format!("{v1}[[key_path]]\npath = \"{}\"\n", more.display());
    s.reload(root, "", &v2);
    s.wait_log("config reloaded");
    let after = cat_on_cpu0(&later);
    let a = s.alerts_until_marker(&marker);
    let open = by_pid(&a, "key-file-open", after);
    assert_eq!(open.len(), 1, "{a:#?}");
    assert_eq!(open[0]["target"]["path"], later.to_str().unwrap());
    assert!(s.stop().success());
}

#[test]
fn a_file_opened_before_a_reload_added_its_key_name_is_reported_at_its_next_open() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    let deploy = root.join("deploy");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&deploy).unwrap();
    let marker = keys.join("zz-marker");
    let token = deploy.join("release.token");
    std::fs::write(&marker, b"m").unwrap();
    std::fs::write(&token, b"not really a token").unwrap();
    let v1 = format!("[[key_path]]\npath = \"{}\"\n", keys.display());
    let mut s = Sensor::start(root, &v1);
    // No pattern names it yet: opened twice (the verdict is kept).
    let before: Vec<u32> = (0..2).map(|_| cat_on_cpu0(&token)).collect();
    let a = s.alerts_until_marker(&marker);
    for pid in &before {
        assert!(by_pid(&a, "key-file-open", *pid).is_empty(), "{a:#?}");
    }
    // A key-name rule for it.
    s.reload(
        root,
        "",
        &format!("{v1}[[key_name]]\nsuffix = \".token\"\n"),
    );
    s.wait_log("config reloaded");
    let after = cat_on_cpu0(&token);
    let a = s.alerts_until_marker(&marker);
    let open = by_pid(&a, "key-file-open", after);
    assert_eq!(open.len(), 1, "{a:#?}");
    assert_eq!(open[0]["target"]["path"], token.to_str().unwrap());
    assert!(s.stop().success());
}

#[test]
fn a_file_whose_directory_is_renamed_to_a_key_directory_is_reported_at_its_next_open() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    let staging = root.join("staging");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&staging).unwrap();
    let marker = keys.join("zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    std::fs::write(staging.join("A1B2C3.key"), b"not really a key").unwrap();
    let mut s = Sensor::start(
        root,
        &format!(
            "[[key_path]]\npath = \"{}\"\n[[key_name]]\ndir = \"private-keys-v1.d\"\n",
            keys.display()
        ),
    );
    // Not in such a directory yet: opened twice (the verdict is kept).
    let before: Vec<u32> = (0..2)
        .map(|_| cat_on_cpu0(&staging.join("A1B2C3.key")))
        .collect();
    let a = s.alerts_until_marker(&marker);
    for pid in &before {
        assert!(by_pid(&a, "key-file-open", *pid).is_empty(), "{a:#?}");
    }
    // The directory is renamed: the file's own dentry (parent, name,
    // inode) is unchanged, only its parent's name.
    let gnupg = root.join("private-keys-v1.d");
    std::fs::rename(&staging, &gnupg).unwrap();
    let key = gnupg.join("A1B2C3.key");
    let after = cat_on_cpu0(&key);
    let a = s.alerts_until_marker(&marker);
    let open = by_pid(&a, "key-file-open", after);
    assert_eq!(open.len(), 1, "{a:#?}");
    assert_eq!(open[0]["target"]["path"], key.to_str().unwrap());
    assert!(s.stop().success());
}

#[test]
fn a_file_opened_before_a_key_was_copied_over_it_is_followed() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let l = lab();
    let key = l.root.join("keys/signing.key");
    std::fs::write(&key, vec![b'k'; 2048]).unwrap();
    let notes = l.root.join("notes.txt");
    std::fs::write(&notes, b"meeting notes").unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    // An ordinary file, opened twice: no alert, its verdict is kept.
    let before: Vec<u32> = (0..2).map(|_| cat_on_cpu0(&notes)).collect();
    let a = s.alerts_until_marker(&l.marker);
    for pid in &before {
        assert!(a.iter().all(|x| x["process"]["pid"] != *pid), "{a:#?}");
    }
    // keysentry stops, so only the kernel knows what happens next: a
    // process that read the key writes it over the file (the kernel marks
    // the file at the first write), and another process reads the file.
    let ks = Pid::from_raw(s.pid() as i32);
    kill(ks, Signal::SIGSTOP).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' > '{}'", key.display(), notes.display()))
        .status()
        .unwrap();
    let reader = cat_on_cpu0(&notes);
    kill(ks, Signal::SIGCONT).unwrap();
    assert!(st.success(), "{st}");
    let a = s.alerts_until_marker(&l.marker);
    let copy: Vec<_> = a
        .iter()
        .filter(|x| x["rule"] == "tracked-copy" && x["target"]["path"] == notes.to_str().unwrap())
        .collect();
    assert_eq!(copy.len(), 1, "{a:#?}");
    // The reader's open was reported, though the same file matched
    // nothing on this CPU before.
    let read = by_pid(&a, "dump-file-access", reader);
    assert_eq!(read.len(), 1, "{a:#?}");
    assert_eq!(read[0]["target"]["path"], notes.to_str().unwrap());
    assert!(s.stop().success());
}
