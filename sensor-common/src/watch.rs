//! The watched-inode map (key paths, their directories and tracked files)
//! and the once-per-file write filter.

/// Key of the watched-inode map.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

/// Value of the watched-inode map.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    /// Index of the key_path this inode belongs to.
    pub watch_id: u32,
    /// WATCH_* bits.
    pub flags: u32,
    /// The inode's i_generation (valid with WATCH_IGEN): an entry whose
    /// inode number was reused by a new file does not match it.
    pub igen: u32,
    /// Taint generation a reader of this file starts at (tracked copies).
    pub generation: u32,
}
const _: () = assert!(core::mem::size_of::<WatchEntry>() == 16);

/// The inode itself is watched.
pub const WATCH_SELF: u32 = 1;
/// Files directly inside this directory are watched.
pub const WATCH_CHILDREN: u32 = 2;
/// The inode is a tracked file (registered dump or derived copy); its
/// `watch_id` is the tracked-file id.
pub const WATCH_TRACKED: u32 = 4;
/// `igen` holds the inode's i_generation. Entries without it get it from
/// keysentry's own open of the file (user space registers, then opens it
/// and checks the fd's (dev, inode): the kernel stamps the entry).
pub const WATCH_IGEN: u32 = 8;
/// A tracked file whose reader gets a strong taint (`TAINT_STRONG`): a
/// dump, or a copy of a key path's key or of a dump. Set by the kernel at
/// the first write of a strongly tainted writer and by user space when it
/// registers the file (from its root's kind).
pub const WATCH_STRONG: u32 = 16;
/// A code-loading path (`[tamper] code_paths`: the loader's preload list,
/// PAM, OpenSSL and PKCS#11 modules), not a key: the open programs report
/// an open of it (or, with `WATCH_CHILDREN`, of a file in it) only when it
/// may change the file (`CodeWrite`); reads are neither reported nor taint.
/// `watch_id` indexes the code paths.
pub const WATCH_CODE: u32 = 32;
/// Entries of the kernel's CODE_NAMES map (final components of the code
/// paths).
pub const CODE_NAMES_MAX: u32 = 2048;
/// `watch_id` of a `CodeWrite` matched by its name in CODE_NAMES (a file
/// created under a code path's name): user space finds which code path.
pub const CODE_BY_NAME: u32 = u32::MAX - 1;
/// `watch_id` of a file the kernel marked tracked itself, at the first
/// write of a tainted process, before user space registered it (or
/// removed it: not every write of a tainted process is a copy). A reader
/// that opens it at once is then followed without waiting for user space.
pub const TRACKED_PENDING: u32 = u32::MAX;

/// Key of the once-per-file write filter: (process, file).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteKey {
    pub tgid: u32,
    pub dev: u32,
    pub ino: u64,
}

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for InodeKey {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WatchEntry {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WriteKey {}
