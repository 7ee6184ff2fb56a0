//! The block devices under the watched key stores, for `raw-read`: the
//! device each watched file system is on, the whole disk a partition is
//! part of, and the devices a device-mapper (LVM, dm-crypt) or md device
//! is made of, each of which holds the key store's blocks. The kernel
//! checks block-device opens against them (`RAW_DEVS`,
//! sensor-ebpf/src/probes/open_raw.rs).
//!
//! Read from sysfs (`/sys/dev/block/MAJ:MIN`: `partition` marks a
//! partition, its parent directory is the disk; `slaves/` lists what a
//! dm or md device sits on) and, for a file system whose st_dev is not a
//! block device (btrfs and other anonymous devices), from the mount's
//! source in /proc/self/mountinfo. Both are the kernel's own files.
//! Network and pseudo file systems have no block device: nothing to add.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
};

use sensor_common::RAW_DEVS_MAX;

use super::devnum::kdev;

/// A device number as sysfs writes it ("MAJ:MIN").
fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Kernel dev_t of (major, minor).
fn mkdev((major, minor): (u32, u32)) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

fn major_minor(kdev: u32) -> (u32, u32) {
    (kdev >> 20, kdev & 0xfffff)
}

/// The block device a mount of file system `dev` is from, by its source in
/// `mountinfo` (a /dev path that is a block device), for file systems
/// whose st_dev is an anonymous device.
fn mount_source(
    mountinfo: &str,
    dev: (u32, u32),
    stat: &dyn Fn(&Path) -> Option<(u32, u32)>,
) -> Option<(u32, u32)> {
    let want = format!("{}:{}", dev.0, dev.1);
    mountinfo.lines().find_map(|l| {
        let mut f = l.split(' ');
        if f.nth(2)? != want {
            return None;
        }
        let (_, post) = l.split_once(" - ")?;
        let src = post.split(' ').nth(1)?;
        src.starts_with("/dev/")
            .then(|| stat(Path::new(src)))
            .flatten()
    })
}

/// Every block device holding file system `fs` (kernel dev_t), under the
/// sysfs root `sys`: the device itself, the disks of partitions, the
/// members of dm and md devices, recursively (at most RAW_DEVS_MAX).
pub fn devices_of(
    sys: &Path,
    mountinfo: &str,
    fs: u32,
    stat: &dyn Fn(&Path) -> Option<(u32, u32)>,
) -> BTreeSet<u32> {
    let fs = major_minor(fs);
    let block = |d: (u32, u32)| sys.join(format!("dev/block/{}:{}", d.0, d.1));
    let start = if block(fs).exists() {
        Some(fs)
    } else {
        mount_source(mountinfo, fs, stat)
    };
    let mut out = BTreeSet::new();
    let mut todo: Vec<(u32, u32)> = start.into_iter().collect();
    while let Some(d) = todo.pop() {
        if out.len() >= RAW_DEVS_MAX as usize || !out.insert(mkdev(d)) {
            continue;
        }
        // The device's directory (sysfs links /sys/dev/block/M:m to it).
        let Ok(dir) = std::fs::canonicalize(block(d)) else {
            continue;
        };
        if dir.join("partition").exists()
            && let Some(disk) = dir
                .parent()
                .and_then(|p| std::fs::read_to_string(p.join("dev")).ok())
                .and_then(|s| parse_dev(&s))
        {
            todo.push(disk);
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("slaves")) {
            for e in rd.flatten() {
                if let Some(s) = std::fs::read_to_string(e.path().join("dev"))
                    .ok()
                    .and_then(|s| parse_dev(&s))
                {
                    todo.push(s);
                }
            }
        }
    }
    out
}

/// The block device a /dev path is, following /dev's own links
/// (/dev/mapper/x, /dev/disk/by-uuid/...): root-made, and only a block
/// device counts.
fn stat_block(p: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let k = kdev(md.rdev());
    Some(major_minor(k))
}

/// The block devices the kernel checks raw opens against, with the key
/// paths each holds.
#[derive(Debug, Default)]
pub struct RawDevs {
    /// Block device (kernel dev_t) -> key paths whose file system it holds.
    devs: HashMap<u32, BTreeSet<PathBuf>>,
    /// Block devices that are active swap areas (/proc/swaps).
    swaps: BTreeSet<u32>,
}

impl RawDevs {
    /// Adds the block devices under the file systems of `stores` (each a
    /// key path and the kernel dev_t of its file system); returns the
    /// devices new to the set (to be put in the kernel's map).
    pub fn add(&mut self, stores: &[(PathBuf, u32)]) -> Vec<u32> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut fresh = Vec::new();
        let mut seen: HashMap<u32, BTreeSet<u32>> = HashMap::new();
        for (path, fs) in stores {
            let devs = seen
                .entry(*fs)
                .or_insert_with(|| devices_of(Path::new("/sys"), &mountinfo, *fs, &stat_block));
            for d in devs.iter() {
                if self.devs.len() >= RAW_DEVS_MAX as usize && !self.devs.contains_key(d) {
                    continue;
                }
                let e = self.devs.entry(*d).or_default();
                if e.is_empty() {
                    fresh.push(*d);
                }
                e.insert(path.clone());
            }
        }
        fresh.sort_unstable();
        fresh.dedup();
        fresh
    }

    /// Adds the block devices that are active swap areas (/proc/swaps,
    /// partitions only: a swap file is recognised by its inode in the
    /// kernel); returns those new to the kernel's set.
    pub fn add_swaps(&mut self) -> Vec<u32> {
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        let mut fresh = Vec::new();
        for line in swaps.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(path), Some("partition")) = (f.next(), f.next()) else {
                continue;
            };
            // /proc/swaps escapes spaces as \040; device nodes have none.
            let Ok(md) = std::fs::metadata(path) else {
                continue;
            };
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if !md.file_type().is_block_device() {
                continue;
            }
            let d = crate::enrich::devnum::kdev(md.rdev());
            if !self.swaps.insert(d) {
                continue;
            }
            if !self.devs.contains_key(&d) && self.devs.len() < RAW_DEVS_MAX as usize {
                self.devs.insert(d, BTreeSet::new());
                fresh.push(d);
            }
        }
        fresh
    }

    /// Whether block device `rdev` is an active swap area.
    pub fn is_swap(&self, rdev: u32) -> bool {
        self.swaps.contains(&rdev)
    }

    /// The key paths block device `rdev` holds.
    pub fn holds(&self, rdev: u32) -> Vec<String> {
        self.devs
            .get(&rdev)
            .map(|s| s.iter().map(|p| p.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.devs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A sysfs tree: sda with partitions sda1 (8:1) and sda2 (8:2), dm-0
    /// (253:0) on sda2, and nvme0n1 (259:0) with no partitions.
    fn fake_sys() -> PathBuf {
        let root = std::env::temp_dir().join(format!("ks-rawdev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = |p: &Path, d: &str| {
            std::fs::create_dir_all(p).unwrap();
            std::fs::write(p.join("dev"), format!("{d}\n")).unwrap();
        };
        let sda = root.join("devices/pci/sda");
        dev(&sda, "8:0");
        dev(&sda.join("sda1"), "8:1");
        std::fs::write(sda.join("sda1/partition"), "1\n").unwrap();
        dev(&sda.join("sda2"), "8:2");
        std::fs::write(sda.join("sda2/partition"), "2\n").unwrap();
        let dm = root.join("devices/virtual/block/dm-0");
        dev(&dm, "253:0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink(sda.join("sda2"), dm.join("slaves/sda2")).unwrap();
        dev(&root.join("devices/pci/nvme0n1"), "259:0");
        let links = root.join("dev/block");
        std::fs::create_dir_all(&links).unwrap();
        for (n, t) in [
            ("8:0", sda.clone()),
            ("8:1", sda.join("sda1")),
            ("8:2", sda.join("sda2")),
            ("253:0", dm.clone()),
            ("259:0", root.join("devices/pci/nvme0n1")),
        ] {
            symlink(t, links.join(n)).unwrap();
        }
        root
    }

    fn k(major: u32, minor: u32) -> u32 {
        mkdev((major, minor))
    }

    #[test]
    fn partitions_name_their_disk_and_dm_devices_their_members() {
        let sys = fake_sys();
        let none = |_: &Path| None;
        assert_eq!(
            devices_of(&sys, "", k(8, 1), &none),
            [k(8, 0), k(8, 1)].into()
        );
        assert_eq!(
            devices_of(&sys, "", k(253, 0), &none),
            [k(8, 0), k(8, 2), k(253, 0)].into()
        );
        assert_eq!(devices_of(&sys, "", k(259, 0), &none), [k(259, 0)].into());
        // An anonymous device (btrfs, overlay, tmpfs): by the mount's
        // source when it is a /dev block device, else nothing.
        let mi = "36 1 0:45 / / rw - btrfs /dev/mapper/root rw\n\
                  40 1 0:46 / /run rw - tmpfs tmpfs rw\n";
        let stat = |p: &Path| (p == Path::new("/dev/mapper/root")).then_some((253, 0));
        assert_eq!(
            devices_of(&sys, mi, k(0, 45), &stat),
            [k(8, 0), k(8, 2), k(253, 0)].into()
        );
        assert!(devices_of(&sys, mi, k(0, 46), &stat).is_empty());
        let _ = std::fs::remove_dir_all(&sys);
    }
}
