//! File handles (name_to_handle_at): an inode's identity that outlives its
//! names, to tell whether a tracked file still exists once a name of it
//! went away (other hard links keep it) without trusting a path.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
};

/// MAX_HANDLE_SZ.
const MAX_HANDLE: usize = 128;

/// keysentry's own open of a file it just put in the kernel's watch map:
/// the open probe stamps the entry of the inode it reaches with that
/// inode's generation. O_PATH (no FIFO blocks, nothing read); true when
/// the path reached (kd, ino).
pub fn stamp(path: &Path, kd: u32, ino: u64) -> bool {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|md| super::devnum::kdev(md.dev()) == kd && md.ino() == ino)
}

/// Opens `path` with `flags` (O_CLOEXEC added) as seen from `root`, a
/// process's root directory (`enrich/roots.rs`): openat2 with
/// RESOLVE_IN_ROOT, so `..` and absolute symlinks stay inside that root
/// and magic links are refused; from keysentry's own root when None.
pub fn open_in(root: Option<&File>, path: &Path, flags: i32) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = flags | libc::O_CLOEXEC;
    let Some(root) = root else {
        return std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
            .ok();
    };
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::from_bits_truncate(flags))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, path, how).ok().map(File::from)
}

/// Does `path`, from `root` (keysentry's own when None), reach the inode
/// (kd, ino)? (O_PATH, a final symlink not followed.)
pub fn reaches(root: Option<&File>, path: &Path, kd: u32, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    open_in(root, path, libc::O_PATH | libc::O_NOFOLLOW)
        .and_then(|f| f.metadata().ok())
        .is_some_and(|md| super::devnum::kdev(md.dev()) == kd && md.ino() == ino)
}

/// Opens the tracked file (kd, ino) at `path` (from `root`: its writer's
/// root, `enrich/roots.rs`) to read it, never blocking on what someone
/// else put there: O_NONBLOCK (a FIFO renamed over it does not hang the
/// event loop), O_NOFOLLOW, O_NOCTTY, and only a regular file that is
/// that inode.
pub fn open_tracked(root: Option<&File>, path: &Path, kd: u32, ino: u64) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let (f, md) = open_plain_in(root, path)?;
    (super::devnum::kdev(md.dev()) == kd && md.ino() == ino).then_some(f)
}

/// Opens a regular file someone else may control, for reading, never
/// blocking on what is there: O_NONBLOCK (a FIFO does not hang the
/// caller), O_NOFOLLOW, O_NOCTTY. With its metadata, for the caller's
/// identity check.
pub fn open_plain(path: &Path) -> Option<(File, std::fs::Metadata)> {
    open_plain_in(None, path)
}

/// `open_plain` from `root` (see `open_in`).
pub fn open_plain_in(root: Option<&File>, path: &Path) -> Option<(File, std::fs::Metadata)> {
    let f = open_in(
        root,
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY,
    )?;
    let md = f.metadata().ok()?;
    md.is_file().then_some((f, md))
}

/// The inode generation (i_generation) of the regular file (kd, ino) at
/// `path` (FS_IOC_GETVERSION: ext4, xfs, btrfs; None elsewhere).
pub fn generation(path: &Path, kd: u32, ino: u64) -> Option<u32> {
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    let f = open_tracked(None, path, kd, ino)?;
    let mut g: libc::c_int = 0;
    // SAFETY: FS_IOC_GETVERSION writes one int to the pointer given.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETVERSION, &mut g) };
    (r == 0).then_some(g as u32)
}

/// Up to `n` first bytes of the tracked file (kd, ino) at `path` (from
/// `root`, see `open_tracked`).
pub fn head(root: Option<&File>, path: &Path, kd: u32, ino: u64, n: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = open_tracked(root, path, kd, ino)?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    handle_type: i32,
    bytes: Vec<u8>,
}

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE],
}

impl Handle {
    /// name_to_handle_at(dirfd, path, flags): None on filesystems that
    /// cannot export handles.
    fn at(dirfd: i32, path: &std::ffi::CStr, flags: i32) -> Option<Handle> {
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE],
        };
        let mut mount_id = 0;
        // SAFETY: `raw` is a file_handle with MAX_HANDLE bytes of room, as
        // handle_bytes says; `path` is NUL-terminated.
        let r = unsafe {
            libc::name_to_handle_at(
                dirfd,
                path.as_ptr(),
                &raw mut raw as *mut libc::file_handle,
                &mut mount_id,
                flags,
            )
        };
        if r != 0 || raw.handle_bytes as usize > MAX_HANDLE {
            return None;
        }
        Some(Handle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..raw.handle_bytes as usize].to_vec(),
        })
    }

    /// The handle of the inode at `path` (a final symlink is not
    /// followed).
    pub fn of(path: &Path) -> Option<Handle> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        Self::at(libc::AT_FDCWD, &c, 0)
    }

    /// The handle of the inode (kd, ino) reached by `path` (opened O_PATH,
    /// a final symlink not followed; None when the path leads elsewhere or
    /// the filesystem has no handles). keysentry's open also makes the
    /// kernel stamp the inode's watch entry with its generation.
    pub fn of_inode(root: Option<&File>, path: &Path, kd: u32, ino: u64) -> Option<Handle> {
        use std::os::unix::fs::MetadataExt;
        let f = open_in(root, path, libc::O_PATH | libc::O_NOFOLLOW)?;
        let md = f.metadata().ok()?;
        if super::devnum::kdev(md.dev()) != kd || md.ino() != ino {
            return None;
        }
        Self::at(f.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
    }

    /// Does the inode still exist? Asked through the directory that held
    /// the name that went away (`near`: the old path; the filesystem is
    /// the same). None when it cannot be told.
    pub fn alive(&self, root: Option<&File>, near: &Path) -> Option<bool> {
        let dir = near.parent()?;
        // open_by_handle_at refuses an O_PATH mount fd (EBADF): a
        // directory opened for reading (it cannot block).
        let d = open_in(
            root,
            dir,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as u32,
            handle_type: self.handle_type,
            f_handle: [0; MAX_HANDLE],
        };
        raw.f_handle[..self.bytes.len()].copy_from_slice(&self.bytes);
        // SAFETY: `raw` holds the handle name_to_handle_at gave; the fd it
        // returns is closed at once.
        let fd = unsafe {
            libc::open_by_handle_at(
                d.as_raw_fd(),
                &raw mut raw as *mut libc::file_handle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: an fd this function owns.
            unsafe { libc::close(fd) };
            return Some(true);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESTALE) => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_no_name_left_is_gone() {
        let dir = std::env::temp_dir().join(format!("ks-handle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, b"x").unwrap();
        let Some(h) = Handle::of(&a) else {
            // A filesystem without handles: nothing to check here.
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        };
        let b = dir.join("b");
        std::fs::hard_link(&a, &b).unwrap();
        std::fs::remove_file(&a).unwrap();
        // Needs CAP_DAC_READ_SEARCH: as root it must tell.
        if nix::unistd::geteuid().is_root() {
            assert_eq!(h.alive(None, &a), Some(true), "still linked as b");
            std::fs::remove_file(&b).unwrap();
            assert_eq!(h.alive(None, &a), Some(false));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
