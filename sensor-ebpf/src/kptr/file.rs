//! A file and a task's descriptor table.

use sensor_common::{InodeKey, KPath};

use super::*;
use crate::{off, vfs::Ptr};

impl FilePtr {
    #[inline(always)]
    pub fn inode(self) -> Option<InodePtr> {
        member_ptr(self.0, off!(file_f_inode)).map(InodePtr)
    }

    /// `f_path.dentry`.
    #[inline(always)]
    pub fn dentry(self) -> Option<DentryPtr> {
        member_ptr(self.0, off!(file_f_path) + off!(path_dentry)).map(DentryPtr)
    }

    /// (device, inode number) and the inode.
    #[inline(always)]
    pub fn identity(self) -> Option<(InodeKey, InodePtr)> {
        let inode = self.inode()?;
        let ino = inode.ino()?;
        let dev = inode.dev()?;
        Some((InodeKey { dev, _pad: 0, ino }, inode))
    }

    /// O_* flags.
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        member(self.0, off!(file_f_flags))
    }

    /// FMODE_* bits.
    #[inline(always)]
    pub fn mode(self) -> Option<u32> {
        member(self.0, off!(file_f_mode))
    }

    #[inline(always)]
    pub fn private_data(self) -> Option<Ptr> {
        member_ptr(self.0, off!(file_private_data))
    }

    /// Whether the file's dentry name is `len` bytes whose first 16 are
    /// `head` (`name_head`, zero padded): an anonymous-inode file's kind
    /// ("bpf-prog", "[perf_event]").
    #[inline(always)]
    pub fn named(self, len: u32, head: [u64; 2]) -> bool {
        let Some((l, name)) = self.dentry().and_then(|d| d.name()) else {
            return false;
        };
        if l != len || member::<u64>(name, 0) != Some(head[0]) {
            return false;
        }
        if len <= 8 {
            return true;
        }
        let bits = (len.min(16) - 8) * 8;
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        member::<u64>(name, 8).is_some_and(|w| w & mask == head[1])
    }

    /// `bpf_prog.type` of a BPF program's file (its `private_data`); None
    /// without the offset.
    #[inline(always)]
    pub fn bpf_prog_type(self) -> Option<u32> {
        let off = off!(bpf_prog_type);
        if off == 0 {
            return None;
        }
        member(self.private_data()?, off)
    }

    /// A field of a perf event file's `perf_event.attr`, at its uapi
    /// offset `field`; None without the offset.
    #[inline(always)]
    pub fn perf_attr<T: Copy>(self, field: u32) -> Option<T> {
        let off = off!(perf_event_attr);
        if off == 0 {
            return None;
        }
        member(self.private_data()?, off + field)
    }

    /// Rebuilds the file's path (`f_path`) into `out`.
    ///
    /// # Safety
    /// `out` points at writable memory for a `KPath`.
    #[inline(always)]
    pub unsafe fn read_path(self, out: *mut KPath) {
        // SAFETY: `f_path` is a `struct path` inside the file (an address,
        // read through bpf_probe_read_kernel only); `out` is the caller's.
        unsafe {
            crate::vfs::read_path(self.0.wrapping_add(off!(file_f_path) as usize), out);
        }
    }
}
impl FilesPtr {
    #[inline(always)]
    pub fn fdt(self) -> Option<FdtablePtr> {
        member_ptr(self.0, off!(files_fdt)).map(FdtablePtr)
    }
}

impl FdtablePtr {
    /// Size of the `fd` array.
    #[inline(always)]
    pub fn max_fds(self) -> Option<u32> {
        member(self.0, off!(fdt_max_fds))
    }

    /// The `fd` array (`struct file **`), as an address for
    /// `FdArrayPtr::from_addr`: returning an `FdArrayPtr` here changed the
    /// layout of ks_sched_exec's code.
    #[inline(always)]
    pub fn fd(self) -> Option<Ptr> {
        member_ptr(self.0, off!(fdt_fd))
    }
}

impl FdArrayPtr {
    /// The file of descriptor `fd`, None when the slot is empty. Not
    /// checked against `max_fds`: a slot past the array is a failed read.
    #[inline(always)]
    pub fn get(self, fd: usize) -> Option<FilePtr> {
        // SAFETY: bpf_probe_read_kernel checks the address (computed, never
        // dereferenced directly); the slot is read into an integer.
        let file: u64 = unsafe {
            aya_ebpf::helpers::bpf_probe_read_kernel(self.0.wrapping_add(fd * 8) as *const u64)
        }
        .ok()?;
        if file == 0 {
            None
        } else {
            Some(FilePtr(file as Ptr))
        }
    }
}
