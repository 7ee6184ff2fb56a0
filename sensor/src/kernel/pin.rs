//! The kernel's PROTECTED map (tgid -> why protected), pinned on bpffs by
//! `keysentry run` so the core handler, a separate process the kernel
//! starts, asks the kernel itself whether a crashed process was protected
//! or a key holder: the answer holds from the moment of the key open, even
//! when the sensor's user space is behind.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};

/// Where bpffs is mounted (systemd mounts it; the unit's ExecStartPre too).
pub const BPF_FS: &str = "/sys/fs/bpf";
/// The pin of the PROTECTED map.
pub const PIN_PROTECTED: &str = "/sys/fs/bpf/keysentry/protected";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A pinned map, unpinned when dropped (a sensor that exits takes its
/// answers with it; one that crashes leaves them, and the next start
/// replaces them).
pub struct Pin(PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether `path` is on bpffs.
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::FsType(BPF_FS_MAGIC as _))
        .unwrap_or(false)
}

/// Pins PROTECTED at `PIN_PROTECTED`, replacing a pin a previous run left.
pub fn pin_protected(map: &Map) -> Result<Pin> {
    if !is_bpffs(Path::new(BPF_FS)) {
        bail!("{BPF_FS} is not a bpffs mount (mount -t bpf bpf {BPF_FS})");
    }
    let path = PathBuf::from(PIN_PROTECTED);
    let dir = path.parent().expect("a parent");
    if std::fs::symlink_metadata(dir).is_err() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    map.pin(&path)
        .with_context(|| format!("pin PROTECTED at {}", path.display()))?;
    Ok(Pin(path))
}

/// What the pinned PROTECTED map says of `tgid`: Ok(None) when it is not
/// protected, Err when there is no map to ask (no sensor running).
pub fn lookup(tgid: u32) -> Result<Option<u32>> {
    if !is_bpffs(Path::new(PIN_PROTECTED)) {
        bail!("no pinned map at {PIN_PROTECTED}");
    }
    let data = MapData::from_pin(PIN_PROTECTED).context("open the pinned PROTECTED map")?;
    let map: BpfHashMap<MapData, u32, u32> = BpfHashMap::try_from(Map::HashMap(data))?;
    match map.get(&tgid, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
