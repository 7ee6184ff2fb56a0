//! `raw-read`: a key store read past its file permissions, from its block
//! device, and the kernel's memory opened, re-enacted with real devices.
//! A loop device with a partition table holds an ext4 file system with a
//! watched key store; `dd` reads the partition, the whole disk (where the
//! kernel reads MBR partition tables), a node
//! made for the partition with mknod elsewhere and a symlink to it. Not
//! alerts: another loop device that holds no key store, an allowlisted
//! program; but the same program under LD_PRELOAD is. /dev/mem (by a
//! mknod'd node) and /proc/kcore where the kernel has them.

mod common;

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    process::Command,
};

use common::*;

const RULE: &str = "raw-read";

/// Runs `bin ARGS` (with `env`); returns (pid, exited 0).
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> (u32, bool) {
    let (pid, st) = run_quiet(Command::new(bin).args(args).envs(env.iter().copied()));
    (pid, st.success())
}

/// `dd if=DEV` of one block (count=0 for character devices: opened, not
/// read).
fn dd(bin: &Path, input: &Path, env: &[(&str, &str)]) -> (u32, bool) {
    run(
        bin,
        &[
            &format!("if={}", input.display()),
            "of=/dev/null",
            "bs=4096",
            "count=1",
            "status=none",
        ],
        env,
    )
}

/// A loop device over `img` (with its partitions scanned), detached and
/// unmounted on drop.
struct Loop {
    dev: PathBuf,
    mounted: Option<PathBuf>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mounted {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// An image of `mib` MiB with one partition from 1 MiB to its end (an MBR
/// written here: no partitioning tool needed), on a loop device.
fn loop_disk(img: &Path, mib: u64) -> Option<Loop> {
    let size = mib << 20;
    let mut mbr = vec![0u8; 512];
    let start: u32 = 2048;
    let sectors = (size / 512) as u32 - start;
    let e = &mut mbr[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &mbr, 0).unwrap();
    drop(f);
    let dev = shell(&format!(
        "losetup --find --show --partscan {}",
        img.display()
    ))?;
    Some(Loop {
        dev: PathBuf::from(dev),
        mounted: None,
    })
}

/// "MAJ:MIN" of a device node.
fn rdev(p: &Path) -> String {
    let r = std::fs::metadata(p).unwrap().rdev();
    format!("{}:{}", nix::sys::stat::major(r), nix::sys::stat::minor(r))
}

/// Why this host cannot run the loop-device test, if it cannot.
fn no_loop_devices() -> Option<String> {
    for tool in ["losetup", "mkfs.ext4", "mount", "dd", "mknod"] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop driver absent)".into());
    }
    None
}

#[test]
fn reads_of_a_key_stores_block_device_alert() {
    require_root();
    if let Some(why) = no_loop_devices() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let Some(mut disk) = loop_disk(&root.join("disk.img"), 40) else {
        println!("SKIPPED: losetup could not attach a loop device");
        return;
    };
    // The partition's node (devtmpfs makes it at the scan); a kernel
    // without MBR partition support has none: the file system then goes
    // on the whole device.
    let part = PathBuf::from(format!("{}p1", disk.dev.display()));
    let partitioned = std::fs::metadata(&part).is_ok_and(|m| m.file_type().is_block_device());
    let part = if partitioned {
        part
    } else {
        println!(
            "SKIPPED part: this kernel made no partition of {} (no MBR partition support): the whole disk is not checked",
            disk.dev.display()
        );
        disk.dev.clone()
    };
    let store = root.join("store");
    std::fs::create_dir(&store).unwrap();
    shell(&format!("mkfs.ext4 -q -F {}", part.display())).expect("mkfs.ext4");
    shell(&format!("mount {} {}", part.display(), store.display())).expect("mount");
    disk.mounted = Some(store.clone());
    std::fs::create_dir(store.join("keys")).unwrap();
    std::fs::write(store.join("keys/signing.key"), b"not really a key\n").unwrap();
    // Another device that holds no key store.
    let Some(other) = loop_disk(&root.join("other.img"), 8) else {
        println!("SKIPPED: losetup could not attach a second loop device");
        return;
    };
    // A program allowed raw reads (a disk prober), and dd itself.
    let dd_bin = PathBuf::from(shell("command -v dd").unwrap());
    let prober = root.join("ks-prober");
    std::fs::copy(&dd_bin, &prober).unwrap();
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[key_path]]\npath = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nraw_read = true\n",
        root.join("keys").display(),
        store.join("keys").display(),
        prober.display(),
    );
    // A node for the partition made elsewhere, and a symlink to it.
    let node = root.join("blk");
    let (maj, min) = {
        let r = std::fs::metadata(&part).unwrap().rdev();
        (nix::sys::stat::major(r), nix::sys::stat::minor(r))
    };
    shell(&format!("mknod {} b {maj} {min}", node.display())).expect("mknod");
    let link = root.join("lnk");
    std::os::unix::fs::symlink(&part, &link).unwrap();

    let mut s = Sensor::start(&root, &config);
    let (p_part, ok) = dd(&dd_bin, &part, &[]);
    assert!(ok, "dd of the partition");
    let p_disk = partitioned.then(|| {
        let (p, ok) = dd(&dd_bin, &disk.dev, &[]);
        assert!(ok, "dd of the whole disk");
        p
    });
    let (p_node, node_ok) = dd(&dd_bin, &node, &[]);
    let (p_link, ok) = dd(&dd_bin, &link, &[]);
    assert!(ok, "dd through the symlink");
    let (p_other, ok) = dd(&dd_bin, &other.dev, &[]);
    assert!(ok, "dd of a device without a key store");
    let (p_allowed, ok) = dd(&prober, &part, &[]);
    assert!(ok, "the allowed prober");
    let libc = libc_path();
    let (p_preload, ok) = dd(&prober, &part, &[("LD_PRELOAD", &libc)]);
    assert!(ok, "the allowed prober under LD_PRELOAD");
    let alerts = s.alerts_until_marker(&marker);

    let keys = store.join("keys").display().to_string();
    let a = one_by_pid(&alerts, RULE, p_part);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["attack"], "T1006", "{a:#}");
    assert_eq!(a["raw"]["device"], "block", "{a:#}");
    assert_eq!(a["raw"]["rdev"], rdev(&part), "{a:#}");
    assert_eq!(a["raw"]["access"], "read", "{a:#}");
    assert_eq!(a["raw"]["holds"], serde_json::json!([keys]), "{a:#}");
    assert_eq!(a["target"]["path"], part.display().to_string(), "{a:#}");
    if let Some(p) = p_disk {
        let a = one_by_pid(&alerts, RULE, p);
        assert_eq!(a["raw"]["rdev"], rdev(&disk.dev), "{a:#}");
        assert_eq!(a["raw"]["holds"], serde_json::json!([keys]), "{a:#}");
    }
    if node_ok {
        let a = one_by_pid(&alerts, RULE, p_node);
        assert_eq!(a["target"]["path"], node.display().to_string(), "{a:#}");
        assert_eq!(a["raw"]["rdev"], rdev(&part), "{a:#}");
    } else {
        println!(
            "SKIPPED part: the mknod'd node could not be opened here ({} is mounted nodev?)",
            root.display()
        );
    }
    let a = one_by_pid(&alerts, RULE, p_link);
    assert_eq!(a["target"]["path"], part.display().to_string(), "{a:#}");
    assert_eq!(
        a["raw"]["arg"],
        link.display().to_string(),
        "the path as passed: {a:#}"
    );
    none_by_pid(&alerts, RULE, p_other, "a device that holds no key store");
    none_by_pid(&alerts, RULE, p_allowed, "an allowlisted prober");
    let a = one_by_pid(&alerts, RULE, p_preload);
    assert!(
        a["process"]["allow_bypass"]
            .as_str()
            .is_some_and(|w| w.contains("LD_PRELOAD")),
        "{a:#}"
    );
    drop(s);
    drop(other);
}

#[test]
fn opens_of_the_kernels_memory_alert() {
    require_root();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let config = format!("[[key_path]]\npath = \"{}\"\n", root.join("keys").display());
    let dd_bin = PathBuf::from(shell("command -v dd").unwrap());
    // /dev/mem by a node of its own: the device number decides.
    let mem = root.join("m");
    shell(&format!("mknod {} c 1 1", mem.display())).expect("mknod");
    let mut s = Sensor::start(&root, &config);
    let (p_mem, mem_ok) = dd(&dd_bin, &mem, &[]);
    let kcore = Path::new("/proc/kcore");
    let (p_kcore, kcore_ok) = if kcore.exists() {
        run(
            &dd_bin,
            &["if=/proc/kcore", "of=/dev/null", "count=0", "status=none"],
            &[],
        )
    } else {
        (0, false)
    };
    // Not an alert: /dev/null and /dev/zero (the same major).
    let (p_null, ok) = dd(&dd_bin, Path::new("/dev/zero"), &[]);
    assert!(ok, "dd of /dev/zero");
    let alerts = s.alerts_until_marker(&marker);
    none_by_pid(&alerts, RULE, p_null, "/dev/zero");
    if mem_ok {
        let a = one_by_pid(&alerts, RULE, p_mem);
        assert_eq!(a["severity"], "high", "{a:#}");
        assert_eq!(a["attack"], "T1003", "{a:#}");
        assert_eq!(a["raw"]["device"], "mem", "{a:#}");
        assert_eq!(a["raw"]["rdev"], "1:1", "{a:#}");
        assert_eq!(a["target"]["path"], mem.display().to_string(), "{a:#}");
    } else {
        println!(
            "SKIPPED part: /dev/mem (1:1) cannot be opened on this kernel (no CONFIG_DEVMEM, or lockdown)"
        );
    }
    if kcore_ok {
        let a = one_by_pid(&alerts, RULE, p_kcore);
        assert_eq!(a["raw"]["device"], "kcore", "{a:#}");
        assert_eq!(a["target"]["path"], "/proc/kcore", "{a:#}");
        assert!(a["raw"].get("rdev").is_none(), "{a:#}");
    } else {
        println!("SKIPPED part: /proc/kcore is absent or refused on this kernel");
    }
    if !mem_ok && !kcore_ok {
        println!("SKIPPED: this kernel lets no one open /dev/mem or /proc/kcore");
    }
}
