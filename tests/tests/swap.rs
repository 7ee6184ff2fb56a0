//! Swap and hibernation: memory sent to disk, re-enacted with real swap
//! areas on loop devices. `swapon` of a swap file (on an ext4 file system
//! of its own) and of a swap partition are `dump-config-change` (medium,
//! setting "swapon"); reading the active swap file, or the active swap
//! partition, is `raw-read` (the file by the flag swapon set on its inode,
//! the partition by its device number); the same file read after
//! `swapoff` is not. `/sys/power/state` opened for writing (nothing
//! written) is a `dump-config-change` naming it.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;

/// Runs `bin ARGS`; returns (pid, exited 0).
fn run(bin: &str, args: &[&str]) -> (u32, bool) {
    let (pid, st) = run_quiet(Command::new(bin).args(args));
    (pid, st.success())
}

/// Loop devices, mounts and swap areas, undone on drop (a failed
/// assertion too), in reverse order.
#[derive(Default)]
struct Undo(Vec<String>);

impl Drop for Undo {
    fn drop(&mut self) {
        for cmd in self.0.iter().rev() {
            let _ = Command::new("sh")
                .args(["-c", cmd])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A loop device over a new `mib` MiB image at `img`.
fn loop_dev(undo: &mut Undo, img: &Path, mib: u64) -> Option<PathBuf> {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    let dev = shell(&format!("losetup --find --show {}", img.display()))?;
    undo.0.push(format!("losetup -d {dev}"));
    Some(PathBuf::from(dev))
}

/// Why this host cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    for tool in [
        "losetup",
        "mkfs.ext4",
        "mount",
        "mkswap",
        "swapon",
        "swapoff",
        "dd",
    ] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/proc/swaps").exists() {
        return Some("the kernel has no swap support (no /proc/swaps)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop driver absent)".into());
    }
    if !probes_report().contains("a swap area switched on") {
        return Some("keysentry probes lists no swapon probe".into());
    }
    None
}

#[test]
fn swap_areas_switched_on_and_read_alert() {
    require_root();
    if let Some(why) = unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let mut undo = Undo::default();
    // A swap file on an ext4 file system of its own, and a swap partition.
    let Some(fs_dev) = loop_dev(&mut undo, &root.join("fs.img"), 48) else {
        println!("SKIPPED: losetup could not attach a loop device");
        return;
    };
    let Some(part) = loop_dev(&mut undo, &root.join("part.img"), 16) else {
        println!("SKIPPED: losetup could not attach a second loop device");
        return;
    };
    let mnt = root.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    shell(&format!("mkfs.ext4 -q -F {}", fs_dev.display())).expect("mkfs.ext4");
    shell(&format!("mount {} {}", fs_dev.display(), mnt.display())).expect("mount");
    undo.0.push(format!("umount {}", mnt.display()));
    let swapfile = mnt.join("swapfile");
    shell(&format!(
        "dd if=/dev/zero of={} bs=1M count=16 status=none && chmod 600 {0} && mkswap {0}",
        swapfile.display()
    ))
    .expect("mkswap of the swap file");
    shell(&format!("mkswap {}", part.display())).expect("mkswap of the partition");
    let config = format!("[[key_path]]\npath = \"{}\"\n", root.join("keys").display());
    let mut s = Sensor::start(&root, &config);

    let swapfile_s = swapfile.to_str().unwrap();
    let part_s = part.to_str().unwrap();
    undo.0.push(format!("swapoff {swapfile_s}"));
    let (p_on_file, ok) = run("swapon", &[swapfile_s]);
    if !ok {
        println!("SKIPPED: swapon of a file on ext4 failed here");
        return;
    }
    undo.0.push(format!("swapoff {part_s}"));
    let (p_on_part, ok) = run("swapon", &[part_s]);
    assert!(ok, "swapon of the partition");
    // The partition is a raw device once keysentry handled its swapon.
    let mut alerts =
        s.alerts_until(|a| a["rule"] == "dump-config-change" && a["process"]["pid"] == p_on_part);
    let ifile = format!("if={swapfile_s}");
    let ipart = format!("if={part_s}");
    let (p_read_file, ok) = run("dd", &[&ifile, "of=/dev/null", "bs=4096", "count=1"]);
    assert!(ok, "dd of the active swap file");
    let (p_read_part, ok) = run("dd", &[&ipart, "of=/dev/null", "bs=4096", "count=1"]);
    assert!(ok, "dd of the active swap partition");
    let (_, ok) = run("swapoff", &[swapfile_s]);
    assert!(ok, "swapoff of the file");
    let (p_read_off, ok) = run("dd", &[&ifile, "of=/dev/null", "bs=4096", "count=1"]);
    assert!(ok, "dd of the file after swapoff");
    // Hibernation's control, opened for appending, nothing written.
    let power = Path::new("/sys/power/state");
    let p_power = power.exists().then(|| {
        let (p, ok) = run("sh", &["-c", ": >> /sys/power/state"]);
        assert!(ok, "append-open of /sys/power/state");
        p
    });
    alerts.extend(s.alerts_until_marker(&marker));

    for p in [p_on_file, p_on_part] {
        let a = one_by_pid(&alerts, "dump-config-change", p);
        assert_eq!(a["severity"], "medium", "{a:#}");
        assert_eq!(a["dump"]["setting"], "swapon", "{a:#}");
    }
    let a = one_by_pid(&alerts, "raw-read", p_read_file);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["raw"]["device"], "swap", "{a:#}");
    assert_eq!(a["target"]["path"], swapfile_s, "{a:#}");
    let a = one_by_pid(&alerts, "raw-read", p_read_part);
    assert_eq!(a["raw"]["device"], "block", "{a:#}");
    assert!(
        a["message"]
            .as_str()
            .is_some_and(|m| m.contains("swap area")),
        "{a:#}"
    );
    none_by_pid(
        &alerts,
        "raw-read",
        p_read_off,
        "a swap file no longer active",
    );
    match p_power {
        Some(p) => {
            let a = one_by_pid(&alerts, "dump-config-change", p);
            assert_eq!(a["dump"]["setting"], "/sys/power/state", "{a:#}");
        }
        None => println!("SKIPPED part: no /sys/power/state on this kernel"),
    }
    drop(s);
    drop(undo);
}
