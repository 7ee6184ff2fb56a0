//! A dentry and its inode (the superblock through the inode).

use super::*;
use crate::{off, vfs::Ptr};

impl DentryPtr {
    #[inline(always)]
    pub fn parent(self) -> Option<DentryPtr> {
        member_ptr(self.0, off!(dentry_d_parent)).map(DentryPtr)
    }

    /// None for a negative dentry.
    #[inline(always)]
    pub fn inode(self) -> Option<InodePtr> {
        member_ptr(self.0, off!(dentry_d_inode)).map(InodePtr)
    }

    /// d_parent, d_name (hash_len, name pointer) and d_inode in one read
    /// (a 32-byte span when `OFFSETS.dentry_span` says so).
    #[inline(always)]
    pub fn span(self) -> Option<[u64; 4]> {
        member(self.0, off!(dentry_d_parent))
    }

    /// d_name.hash_len (the name's hash and length).
    #[inline(always)]
    pub fn hash_len(self) -> Option<u64> {
        member(self.0, off!(dentry_d_name))
    }

    /// (len, name pointer) of the dentry's name.
    #[inline(always)]
    pub fn name(self) -> Option<(u32, Ptr)> {
        // struct qstr { u32 hash; u32 len; const char *name; } in one read
        // (layout checked by user space at load time).
        let q: [u32; 4] = member(self.0, off!(dentry_d_name))?;
        let name = (q[2] as u64) | ((q[3] as u64) << 32);
        if name == 0 {
            return None;
        }
        Some((q[1], name as Ptr))
    }
}

impl InodePtr {
    #[inline(always)]
    pub fn ino(self) -> Option<u64> {
        member(self.0, off!(inode_i_ino))
    }

    /// `struct super_block *`.
    #[inline(always)]
    pub fn sb(self) -> Option<Ptr> {
        member_ptr(self.0, off!(inode_i_sb))
    }

    /// The device of its superblock (`s_dev`).
    #[inline(always)]
    pub fn dev(self) -> Option<u32> {
        member(self.sb()?, off!(sb_s_dev))
    }

    /// The magic of its superblock (`s_magic`: procfs, pidfs...).
    #[inline(always)]
    pub fn fs_magic(self) -> Option<u64> {
        member(self.sb()?, off!(sb_s_magic))
    }

    /// S_IF* type and permission bits.
    #[inline(always)]
    pub fn mode(self) -> Option<u16> {
        member(self.0, off!(inode_i_mode))
    }

    /// S_* inode flags (`i_flags`: S_SWAPFILE).
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        member(self.0, off!(inode_i_flags))
    }

    /// Names that lead to it (0: a memfd, a deleted or O_TMPFILE file).
    #[inline(always)]
    pub fn nlink(self) -> Option<u32> {
        member(self.0, off!(inode_i_nlink))
    }

    /// The device a special file is (kernel dev_t).
    #[inline(always)]
    pub fn rdev(self) -> Option<u32> {
        member(self.0, off!(inode_i_rdev))
    }

    #[inline(always)]
    pub fn generation(self) -> Option<u32> {
        member(self.0, off!(inode_i_generation))
    }

    /// Owner (in the initial user namespace).
    #[inline(always)]
    pub fn uid(self) -> Option<u32> {
        member(self.0, off!(inode_i_uid))
    }

    #[inline(always)]
    pub fn size(self) -> Option<i64> {
        member(self.0, off!(inode_i_size))
    }

    #[inline(always)]
    pub fn private(self) -> Option<Ptr> {
        member_ptr(self.0, off!(inode_i_private))
    }
}
