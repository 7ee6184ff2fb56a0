//! Typed pointers to the kernel objects the programs read: a task, its mm,
//! a file, a dentry, an inode, a signal struct, a descriptor table, a
//! socket, an io_uring request, a struct pid, the saved user registers.
//! Each type reads only its own struct's members (at the offsets of
//! `OFFSETS`, from the running kernel's BTF), so a dentry cannot be read
//! as a file. The superblock is read through its inode (`InodePtr::dev`,
//! `fs_magic`); the path walk (`struct path`, mounts) reads where it is
//! used, in vfs.rs, with `rd`.
//!
//! The readers are safe: every read goes through bpf_probe_read_kernel,
//! which checks the address and fails cleanly (None), into plain integers
//! or pointers, valid for any bits.
//!
//! The types are declared here; their readers live by kernel area:
//! task.rs (task, mm, signal struct, struct pid), file.rs (file and
//! descriptor table), dentry.rs (dentry, inode), net.rs (socket, sock),
//! io_uring.rs (request, ring), regs.rs (saved user registers), key.rs
//! (kernel key, credentials).

use crate::vfs::{Ptr, rd, rd_ptr};

macro_rules! kptr {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        pub struct $name(Ptr);

        // Not every type is built from or turned into an address.
        #[allow(dead_code)]
        impl $name {
            /// An address the kernel handed over (a hook argument, a
            /// pointer read from another object or kept in a map).
            #[inline(always)]
            pub fn from_addr(addr: u64) -> Self {
                Self(addr as Ptr)
            }

            #[inline(always)]
            pub fn addr(self) -> u64 {
                self.0 as u64
            }
        }
    };
}

/// A plain member of the object at `base`.
#[inline(always)]
fn member<T: Copy>(base: Ptr, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; every `T` read
    // through this module is an integer or a byte array.
    unsafe { rd(base, offset) }
}

/// A non-null pointer member of the object at `base`.
#[inline(always)]
fn member_ptr(base: Ptr, offset: u32) -> Option<Ptr> {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { rd_ptr(base, offset) }
}

kptr!(
    /// `struct task_struct *`.
    TaskPtr
);
kptr!(
    /// `struct mm_struct *`.
    MmPtr
);
kptr!(
    /// `struct file *`.
    FilePtr
);
kptr!(
    /// `struct dentry *`.
    DentryPtr
);
kptr!(
    /// `struct inode *`.
    InodePtr
);
kptr!(
    /// `struct signal_struct *`: a thread group's shared state.
    SignalPtr
);
kptr!(
    /// `struct files_struct *`: a task's descriptor table.
    FilesPtr
);
kptr!(
    /// `struct fdtable *`.
    FdtablePtr
);
kptr!(
    /// `struct file **`: an fdtable's array of files, by descriptor.
    FdArrayPtr
);
kptr!(
    /// `struct socket *` (a socket file's private data).
    SocketPtr
);
kptr!(
    /// `struct sock *`.
    SockPtr
);
kptr!(
    /// `struct io_kiocb *`: an io_uring request.
    IoKiocbPtr
);
kptr!(
    /// `struct io_ring_ctx *`: an io_uring instance.
    IoRingCtxPtr
);
kptr!(
    /// `struct pid *`.
    PidPtr
);
kptr!(
    /// `struct pid_namespace *`.
    PidNsPtr
);
kptr!(
    /// `struct pt_regs *`: a task's saved user registers (x86_64's
    /// members; which one holds which syscall argument is syscall.rs's).
    PtRegsPtr
);
kptr!(
    /// `struct key *`: a kernel key.
    KeyPtr
);
kptr!(
    /// `struct cred *`.
    CredPtr
);

mod dentry;
mod file;
mod io_uring;
mod key;
mod net;
mod regs;
mod task;

pub use regs::Reg;
