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

use sensor_common::{InodeKey, KPath};

use crate::{
    off,
    vfs::{Ptr, rd, rd_ptr},
};

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
    /// `struct pt_regs *`: a task's saved user registers (x86_64's
    /// members; which one holds which syscall argument is syscall.rs's).
    PtRegsPtr
);

impl TaskPtr {
    /// The current task.
    #[inline(always)]
    pub fn current() -> TaskPtr {
        // SAFETY: a helper without arguments.
        TaskPtr(unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as Ptr)
    }

    #[inline(always)]
    pub fn tgid(self) -> Option<u32> {
        member(self.0, off!(task_tgid))
    }

    #[inline(always)]
    pub fn pid(self) -> Option<u32> {
        member(self.0, off!(task_pid))
    }

    /// start_boottime (ns since boot).
    #[inline(always)]
    pub fn start_time(self) -> Option<u64> {
        member(self.0, off!(task_start_time))
    }

    /// PF_* flags.
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        member(self.0, off!(task_flags))
    }

    /// task_struct.ptrace: non-zero while the task is traced.
    #[inline(always)]
    pub fn ptrace(self) -> Option<u32> {
        member(self.0, off!(task_ptrace))
    }

    #[inline(always)]
    pub fn exit_code(self) -> Option<u32> {
        member(self.0, off!(task_exit_code))
    }

    #[inline(always)]
    pub fn real_parent(self) -> Option<TaskPtr> {
        member_ptr(self.0, off!(task_real_parent)).map(TaskPtr)
    }

    #[inline(always)]
    pub fn group_leader(self) -> Option<TaskPtr> {
        member_ptr(self.0, off!(task_group_leader)).map(TaskPtr)
    }

    /// None for a kernel thread.
    #[inline(always)]
    pub fn mm(self) -> Option<MmPtr> {
        member_ptr(self.0, off!(task_mm)).map(MmPtr)
    }

    #[inline(always)]
    pub fn files(self) -> Option<FilesPtr> {
        member_ptr(self.0, off!(task_files)).map(FilesPtr)
    }

    /// `struct signal_struct *`, as an address for `SignalPtr::from_addr`:
    /// returning a `SignalPtr` here changed the code of ks_sched_exit, the
    /// program that once failed to load after such a change.
    #[inline(always)]
    pub fn signal(self) -> Option<Ptr> {
        member_ptr(self.0, off!(task_signal))
    }

    /// What this task does with signal `sig` (1..=64): `SIG_DISP_*`,
    /// from `sighand->action[sig - 1].sa.sa_handler`.
    #[inline(always)]
    pub fn sig_disposition(self, sig: u32) -> u32 {
        let size = off!(k_sigaction_size);
        if size == 0 || sig == 0 || sig > 64 {
            return sensor_common::SIG_DISP_UNKNOWN;
        }
        let Some(sighand) = member_ptr(self.0, off!(task_sighand)) else {
            return sensor_common::SIG_DISP_UNKNOWN;
        };
        match member::<u64>(sighand, off!(sighand_action) + (sig - 1) * size) {
            Some(0) => sensor_common::SIG_DISP_DEFAULT,
            Some(1) => sensor_common::SIG_DISP_IGNORED,
            Some(_) => sensor_common::SIG_DISP_HANDLED,
            None => sensor_common::SIG_DISP_UNKNOWN,
        }
    }

    /// The task whose `thread_node` is at `node` (an entry of a
    /// `SignalPtr::thread_head` list).
    #[inline(always)]
    pub fn of_thread_node(node: u64) -> TaskPtr {
        TaskPtr::from_addr(node.wrapping_sub(off!(task_thread_node) as u64))
    }

    /// (dev, inode) of the task's executable.
    #[inline(always)]
    pub fn exe(self) -> Option<InodeKey> {
        self.mm()?.exe_file()?.identity().map(|(k, _)| k)
    }
}

impl MmPtr {
    /// Start and end of the command line in the process's memory.
    #[inline(always)]
    pub fn arg_start(self) -> Option<u64> {
        member(self.0, off!(mm_arg_start))
    }

    #[inline(always)]
    pub fn arg_end(self) -> Option<u64> {
        member(self.0, off!(mm_arg_end))
    }

    /// Start and end of the environment strings in the process's memory.
    #[inline(always)]
    pub fn env_start(self) -> Option<u64> {
        member(self.0, off!(mm_env_start))
    }

    #[inline(always)]
    pub fn env_end(self) -> Option<u64> {
        member(self.0, off!(mm_env_end))
    }

    #[inline(always)]
    pub fn exe_file(self) -> Option<FilePtr> {
        member_ptr(self.0, off!(mm_exe_file)).map(FilePtr)
    }
}

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

impl SignalPtr {
    /// Address of `thread_head`, the list of the group's threads (None
    /// when the kernel's BTF did not give its offset).
    #[inline(always)]
    pub fn thread_head(self) -> Option<u64> {
        match off!(signal_thread_head) {
            0 => None,
            o => Some(self.0 as u64 + o as u64),
        }
    }

    /// Threads alive (0 once the last one exits).
    #[inline(always)]
    pub fn live(self) -> Option<i32> {
        member(self.0, off!(signal_live))
    }

    /// The group's exit code when it exited as a group (exit_group, a
    /// fatal signal, a core dump's 0x80).
    #[inline(always)]
    pub fn group_exit_code(self) -> Option<u32> {
        member(self.0, off!(signal_group_exit_code))
    }

    /// `struct core_state *`, non-null while the group dumps core.
    #[inline(always)]
    pub fn core_state(self) -> Option<Ptr> {
        member_ptr(self.0, off!(signal_core_state))
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

impl SocketPtr {
    #[inline(always)]
    pub fn sk(self) -> Option<SockPtr> {
        member_ptr(self.0, off!(socket_sk)).map(SockPtr)
    }
}

impl SockPtr {
    /// AF_* (`sk_family`).
    #[inline(always)]
    pub fn family(self) -> Option<u16> {
        member(self.0, off!(sk_family))
    }

    /// SOCK_* (`sk_type`).
    #[inline(always)]
    pub fn sock_type(self) -> Option<u16> {
        member(self.0, off!(sk_type))
    }

    /// IPPROTO_* (`sk_protocol`).
    #[inline(always)]
    pub fn protocol(self) -> Option<u16> {
        member(self.0, off!(sk_protocol))
    }

    /// The local port, host order (`skc_num`).
    #[inline(always)]
    pub fn num(self) -> Option<u16> {
        member(self.0, off!(sk_num))
    }

    /// The peer's port, network order (`skc_dport`).
    #[inline(always)]
    pub fn dport(self) -> Option<u16> {
        member(self.0, off!(sk_dport))
    }

    /// The local IPv4 address (`skc_rcv_saddr`).
    #[inline(always)]
    pub fn rcv_saddr(self) -> Option<[u8; 4]> {
        member(self.0, off!(sk_rcv_saddr))
    }

    /// The peer's IPv4 address (`skc_daddr`).
    #[inline(always)]
    pub fn daddr(self) -> Option<[u8; 4]> {
        member(self.0, off!(sk_daddr))
    }

    /// The local IPv6 address (`skc_v6_rcv_saddr`).
    #[inline(always)]
    pub fn v6_rcv_saddr(self) -> Option<[u8; 16]> {
        member(self.0, off!(sk_v6_rcv_saddr))
    }

    /// The peer's IPv6 address (`skc_v6_daddr`).
    #[inline(always)]
    pub fn v6_daddr(self) -> Option<[u8; 16]> {
        member(self.0, off!(sk_v6_daddr))
    }
}

impl IoKiocbPtr {
    /// IORING_OP_* of the request.
    #[inline(always)]
    pub fn opcode(self) -> Option<u8> {
        member(self.0, off!(io_kiocb_opcode))
    }

    /// The file the request works on.
    #[inline(always)]
    pub fn file(self) -> Option<FilePtr> {
        member_ptr(self.0, off!(io_kiocb_file)).map(FilePtr)
    }

    /// An IORING_OP_CLOSE request's `fd` (low half) and `file_slot` (high
    /// half: nonzero for a direct descriptor) (struct io_close).
    #[inline(always)]
    pub fn close_fd_slot(self) -> Option<u64> {
        member(self.0, off!(iou_close_fd))
    }

    /// An OPENAT/OPENAT2 request's `file_slot` (struct io_open): 0 for an
    /// open into the fd table, the slot + 1, or IORING_FILE_INDEX_ALLOC.
    /// None where the kernel's BTF did not give its offset.
    #[inline(always)]
    pub fn open_slot(self) -> Option<u32> {
        let off = off!(iou_open_slot);
        if off == 0 {
            return None;
        }
        member(self.0, off)
    }

    /// REQ_F_* flags (their low 32 bits; None where the kernel's BTF did
    /// not give the offsets of `flags` and `cqe.fd`).
    #[inline(always)]
    pub fn flags(self) -> Option<u32> {
        match off!(io_kiocb_flags) {
            0 => None,
            o => member(self.0, o),
        }
    }

    /// `cqe.fd`: the fd the SQE named (a fixed file slot with
    /// REQ_F_FIXED_FILE), set at submission for requests that take a file.
    #[inline(always)]
    pub fn cqe_fd(self) -> Option<i32> {
        match off!(io_kiocb_cqe_fd) {
            0 => None,
            o => member(self.0, o),
        }
    }

    /// The ring the request belongs to.
    #[inline(always)]
    pub fn ctx(self) -> Option<IoRingCtxPtr> {
        member_ptr(self.0, off!(io_kiocb_ctx)).map(IoRingCtxPtr)
    }
}

impl IoRingCtxPtr {
    /// The file in fixed file slot `slot` (a direct descriptor), within
    /// the table's length, in the layout of the running kernel
    /// (`KernelOffsets::iou_table_layout`).
    #[inline(always)]
    pub fn fixed_file(self, slot: u32) -> Option<FilePtr> {
        let layout = off!(iou_table_layout);
        let nr: u32 = member(self.0, off!(iou_ctx_nr_files))?;
        if slot >= nr || slot >= 1 << 20 {
            return None;
        }
        let table = member_ptr(self.0, off!(iou_ctx_files))?;
        let at = slot * 8;
        let v: u64 = if layout == sensor_common::IOU_TABLE_FIXED_FILES {
            // struct io_fixed_file files[nr]: file_ptr in each entry.
            member(table, at + off!(iou_slot_file_ptr))?
        } else if layout == sensor_common::IOU_TABLE_RSRC_NODES {
            // struct io_rsrc_node *nodes[nr]: file_ptr in each node.
            let node = member_ptr(table, at)?;
            member(node, off!(iou_slot_file_ptr))?
        } else {
            return None;
        };
        let file = v & sensor_common::IOU_FILE_PTR_MASK;
        if file == 0 {
            None
        } else {
            Some(FilePtr(file as Ptr))
        }
    }
}

impl PidPtr {
    /// `numbers[0].nr`: the pid in the root namespace.
    #[inline(always)]
    pub fn nr(self) -> Option<i32> {
        member(self.0, off!(pid_nr))
    }
}

/// A register of `struct pt_regs` (its offset, from `OFFSETS`), so only a
/// register can be read from a `PtRegsPtr`. A value rather than a method
/// per register: syscall.rs picks the register (reads its offset) before
/// it finds the registers.
#[derive(Clone, Copy)]
pub struct Reg(u32);

impl Reg {
    #[inline(always)]
    pub fn di() -> Reg {
        Reg(off!(pt_regs_di))
    }

    #[inline(always)]
    pub fn si() -> Reg {
        Reg(off!(pt_regs_si))
    }

    #[inline(always)]
    pub fn dx() -> Reg {
        Reg(off!(pt_regs_dx))
    }

    #[inline(always)]
    pub fn r10() -> Reg {
        Reg(off!(pt_regs_r10))
    }

    #[inline(always)]
    pub fn r8() -> Reg {
        Reg(off!(pt_regs_r8))
    }
}

impl PtRegsPtr {
    #[inline(always)]
    pub fn get(self, reg: Reg) -> Option<u64> {
        member(self.0, reg.0)
    }

    /// `ax`: -ENOSYS while the syscall runs, its result once it returned.
    #[inline(always)]
    pub fn ax(self) -> Option<i64> {
        member(self.0, off!(pt_regs_ax))
    }

    /// The syscall number the task entered with (-1 outside a syscall).
    #[inline(always)]
    pub fn orig_ax(self) -> Option<i64> {
        member(self.0, off!(pt_regs_orig_ax))
    }
}
