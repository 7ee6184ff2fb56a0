//! The kernel keeps "nothing to report" for the files it saw opened
//! (per CPU, per dentry: sensor-ebpf/src/probes/verdict.rs), so the next
//! open of the same file costs one read. These tests make a file matter
//! after it was opened and cached (a reload makes it a key path's file or
//! gives it a key name, a tainted process writes a copy over it) and show
//! its next open, on the same CPU, is reported. Every opener runs on CPU 0, where the verdict was
//! kept.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{lab::*, *};

/// `cat FILE` on CPU 0; returns its pid.
fn cat_on_cpu0(file: &Path) -> u32 {
    let mut c = Command::new("/usr/bin/cat");
    c.arg(file).stdout(Stdio::null());
    pin_to_cpu0(&mut c);
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

/// keysentry watching a key directory (which holds the marker) under a
/// temporary root, with `extra` config.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    base: String,
    s: Sensor,
}

impl Scene {
    fn new(extra: &str) -> Scene {
        let tmp = tempdir();
        let root = tmp.path().to_path_buf();
        let keys = root.join("keys");
        std::fs::create_dir(&keys).unwrap();
        let marker = keys.join("zz-marker");
        std::fs::write(&marker, b"m").unwrap();
        let base = format!("[[key_path]]\npath = \"{}\"\n", keys.display());
        let s = Sensor::start(&root, &format!("{base}{extra}"));
        Scene {
            _tmp: tmp,
            root,
            marker,
            base,
            s,
        }
    }

    /// A file at `rel` under the root (its directory made).
    fn file(&self, rel: &str) -> PathBuf {
        let f = self.root.join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, b"not really a key").unwrap();
        f
    }

    /// `file` opened twice on CPU 0, where its verdict is then kept: no
    /// alert.
    fn opened_unreported(&mut self, file: &Path) {
        let pids: Vec<u32> = (0..2).map(|_| cat_on_cpu0(file)).collect();
        let a = self.s.alerts_until_marker(&self.marker);
        for pid in &pids {
            assert!(by_pid(&a, "key-file-open", *pid).is_empty(), "{a:#?}");
        }
    }

    /// The config is now the key directory and `extra`.
    fn reload(&mut self, extra: &str) {
        let body = format!("{}{extra}", self.base);
        self.s.reload(&self.root, "", &body);
        self.s.wait_log("config reloaded");
    }

    /// `file` opened once more on CPU 0: one key-file-open naming it.
    fn reported_at_next_open(mut self, file: &Path) {
        let pid = cat_on_cpu0(file);
        let a = self.s.alerts_until_marker(&self.marker);
        let open = by_pid(&a, "key-file-open", pid);
        assert_eq!(open.len(), 1, "{a:#?}");
        assert_eq!(open[0]["target"]["path"], file.to_str().unwrap());
        assert!(self.s.stop().success());
    }
}

#[test]
fn a_file_opened_before_a_reload_made_it_a_key_is_reported_at_its_next_open() {
    let mut sc = Scene::new("");
    let later = sc.file("more-keys/later.secret");
    sc.opened_unreported(&later);
    // Its directory becomes a key path.
    let more = later.parent().unwrap().display().to_string();
    sc.reload(&format!("[[key_path]]\npath = \"{more}\"\n"));
    sc.reported_at_next_open(&later);
}

#[test]
fn a_file_opened_before_a_reload_added_its_key_name_is_reported_at_its_next_open() {
    let mut sc = Scene::new("");
    let token = sc.file("deploy/release.token");
    sc.opened_unreported(&token);
    sc.reload("[[key_name]]\nsuffix = \".token\"\n");
    sc.reported_at_next_open(&token);
}

#[test]
fn a_file_whose_directory_is_renamed_to_a_key_directory_is_reported_at_its_next_open() {
    let mut sc = Scene::new("[[key_name]]\ndir = \"private-keys-v1.d\"\n");
    let staged = sc.file("staging/A1B2C3.key");
    sc.opened_unreported(&staged);
    // The directory is renamed: the file's own dentry (parent, name,
    // inode) is unchanged, only its parent's name.
    let gnupg = sc.root.join("private-keys-v1.d");
    std::fs::rename(staged.parent().unwrap(), &gnupg).unwrap();
    sc.reported_at_next_open(&gnupg.join("A1B2C3.key"));
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
    stop_and_wait(ks);
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
