//! What user space hands the programs at load time: the running kernel's
//! struct offsets and tracepoint field offsets, and the run-time settings.

/// Offset of `long ret` in every syscalls:sys_exit_* record (common fields,
/// int __syscall_nr, padding). Checked against tracefs at load time.
pub const SYS_EXIT_RET_OFFSET: u32 = 16;
/// Offset of `int __syscall_nr` in every syscalls:sys_{enter,exit}_*
/// record. Checked against tracefs at load time.
pub const SYSCALL_NR_OFFSET: u32 = 8;

/// Byte offsets of kernel struct members, read from the running kernel's
/// BTF at load time and handed to the programs as a global.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_start_time: u32,
    pub task_exit_code: u32,
    pub task_group_leader: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub file_f_inode: u32,
    pub file_f_path: u32,
    pub file_f_flags: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_mode: u32,
    pub sb_s_dev: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    /// Offset of `len` inside struct qstr.
    pub qstr_len: u32,
    /// Offset of `name` inside struct qstr.
    pub qstr_name: u32,
    /// Offset of the embedded `struct vfsmount mnt` in struct mount.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub pt_regs_di: u32,
    pub pt_regs_si: u32,
    pub pt_regs_dx: u32,
    pub pt_regs_r10: u32,
    pub pt_regs_r8: u32,
    /// struct socket -> sk, and struct sock fields (sock_common included).
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub io_kiocb_opcode: u32,
    pub sb_s_magic: u32,
    pub file_private_data: u32,
    pub inode_i_private: u32,
    /// Offset of `numbers[0].nr` in struct pid (the pid in the root namespace).
    pub pid_nr: u32,
    /// Field offsets inside tracepoint records (from tracefs formats).
    pub tp_sys_exit_ret: u32,
    pub tp_iou_complete_req: u32,
    pub tp_iou_complete_res: u32,
    /// IORING_OP_OPENAT / OPENAT2 opcode values.
    pub iou_op_openat: u32,
    pub iou_op_openat2: u32,
    /// io_kiocb.file, and a bit per io_uring opcode that writes or sends.
    pub io_kiocb_file: u32,
    /// IORING_OP_CLOSE's opcode value.
    pub iou_op_close: u32,
    pub iou_sink_ops: u64,
    /// task_struct.flags (PF_DUMPCORE), task_struct.signal,
    /// signal_struct.core_state (non-null while the process dumps core).
    pub task_flags: u32,
    pub task_signal: u32,
    pub signal_core_state: u32,
    /// pt_regs.orig_ax: the current syscall number (LSM hooks).
    pub pt_regs_orig_ax: u32,
    /// inode.i_generation, inode.i_uid, inode.i_size, file.f_mode.
    pub inode_i_generation: u32,
    pub inode_i_uid: u32,
    pub inode_i_size: u32,
    pub file_f_mode: u32,
    /// signal_struct.live (threads alive; 0 once the last one exits) and
    /// signal_struct.group_exit_code (the group's exit code: a core dump's
    /// 0x80 is there, whichever thread exits last).
    pub signal_live: u32,
    pub signal_group_exit_code: u32,
    /// fdtable.max_fds.
    pub fdt_max_fds: u32,
    /// task:task_rename field offsets (`pid`, `newcomm`); 0 when the
    /// kernel has no such tracepoint (its probe then does not attach).
    pub tp_rename_pid: u32,
    pub tp_rename_newcomm: u32,
    /// Offset in struct io_kiocb of an IORING_OP_CLOSE request's `fd`
    /// (struct io_close, in the request's command area), `file_slot`
    /// right after it; 0 when the kernel's BTF lacks it.
    pub iou_close_fd: u32,
    /// task_struct.ptrace (non-zero while traced), mm_struct.env_start and
    /// env_end (the environment strings of the new image, read at exec).
    pub task_ptrace: u32,
    pub _pad_ptrace: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// sched:sched_process_exec `old_pid` field offset: the thread id the
    /// exec'ing thread had before exec (a non-leader's exec takes the
    /// leader's pid); 0 when not found.
    pub tp_exec_old_pid: u32,
    pub _pad_exec: u32,
    /// io_kiocb.ctx (the ring), and the offset in struct io_kiocb of an
    /// OPENAT/OPENAT2 request's `file_slot` (struct io_open, in the command
    /// area: 0 for an open into the fd table, slot + 1, or
    /// IORING_FILE_INDEX_ALLOC); 0 when the kernel's BTF lacks them.
    pub io_kiocb_ctx: u32,
    pub iou_open_slot: u32,
    /// The ring's fixed file table: in struct io_ring_ctx, the array
    /// (`file_table.files`, 6.1-6.12; `file_table.data.nodes`, 6.13+) and
    /// its length (`nr_user_files`; `file_table.data.nr`); the offset of
    /// `file_ptr` in an entry (`io_fixed_file`) or in the node an entry
    /// points to (`io_rsrc_node`); `iou_table_layout` says which
    /// (`IOU_TABLE_*`, 0: not resolved on this kernel).
    pub iou_ctx_files: u32,
    pub iou_ctx_nr_files: u32,
    pub iou_slot_file_ptr: u32,
    pub iou_table_layout: u32,
    /// pt_regs.ax: -ENOSYS while a syscall runs (set at entry), its result
    /// once it returned (task work on the way back to user space).
    pub pt_regs_ax: u32,
    pub _pad_ax: u32,
    /// signal_struct.thread_head and task_struct.thread_node (the thread
    /// group's list, 3.14+): a thread id of the caller's own group is
    /// recognised in the kernel; 0 when the kernel's BTF lacks them.
    pub signal_thread_head: u32,
    pub task_thread_node: u32,
    /// io_kiocb.flags (REQ_F_*, whose low bits are the uapi IOSQE_* bits)
    /// and io_kiocb.cqe.fd (the SQE's fd, or its fixed file slot with
    /// REQ_F_FIXED_FILE): a write or send submitted with
    /// IOSQE_CQE_SKIP_SUCCESS is followed from its submission; 0 when the
    /// kernel's BTF lacks them.
    pub io_kiocb_flags: u32,
    pub io_kiocb_cqe_fd: u32,
    /// 1 when dentry.d_parent, d_name (struct qstr, 16 bytes) and d_inode
    /// are one 32-byte span (every 6.x kernel): the open verdict cache
    /// reads them in one read; 0 leaves the cache off.
    pub dentry_span: u32,
    pub _pad_span: u32,
    /// task_struct.sighand, sighand_struct.action (an array of struct
    /// k_sigaction, `k_sigaction_size` bytes each, `sa.sa_handler` first):
    /// the disposition of a dump signal at the target.
    pub task_sighand: u32,
    pub sighand_action: u32,
    pub k_sigaction_size: u32,
    pub _pad_sighand: u32,
    /// bpf_prog.type and perf_event.attr (the uapi struct perf_event_attr,
    /// fields at their uapi offsets): what a successful bpf(BPF_PROG_LOAD)
    /// or perf_event_open made, read from the kernel's object through the
    /// new fd, since another thread can rewrite the caller's attr after the
    /// kernel copied it; 0 when the kernel's BTF lacks them.
    pub bpf_prog_type: u32,
    pub perf_event_attr: u32,
    /// inode.i_rdev: the device a character or block special file is
    /// (raw-read).
    pub inode_i_rdev: u32,
    /// inode.i_nlink (0: no name leads to it: a memfd, a deleted file).
    pub inode_i_nlink: u32,
    /// unix_sock.peer and unix_sock.path (struct path: the socket file a
    /// bound unix socket is; a connected socket's peer carries the path of
    /// the socket it connected to): agent-socket-use; 0 when the kernel's
    /// BTF lacks them (its probe then does not attach).
    pub unix_sock_peer: u32,
    pub unix_sock_path: u32,
    /// task_struct.loginuid (the uid of the login the process descends
    /// from, kept across setuid and su: CONFIG_AUDIT); 0 when absent.
    pub task_loginuid: u32,
    /// inode.i_flags (S_SWAPFILE: an active swap file).
    pub inode_i_flags: u32,
    /// task_struct.fs and fs_struct.pwd (struct path: the working
    /// directory a relative path starts from).
    pub task_fs: u32,
    pub fs_pwd: u32,
    /// struct key (serial, uid, type, description), key_type.name,
    /// cred.fsuid and enum key_need_perm's KEY_NEED_READ (keyring-read);
    /// `key_need_read` 0 when the kernel has no keys (its hook is then
    /// not attached).
    pub key_serial: u32,
    pub key_uid: u32,
    pub key_type: u32,
    pub key_desc: u32,
    pub key_type_name: u32,
    pub cred_fsuid: u32,
    pub key_need_read: u32,
    /// Pid namespaces (a target named by its pid in the caller's
    /// namespace, `pidns.rs`): task_struct.thread_pid, pid.level, the
    /// offset of `numbers[0].ns` in struct pid and the size of struct upid
    /// (one level's number and namespace), pid_namespace.idr's xarray head
    /// and idr_base, xa_node.shift and .slots and the slot mask (slots per
    /// node - 1); proc_inode.pid and .vfs_inode (the struct pid a
    /// /proc/<pid> directory stands for). `pidns_idr_head` 0 when the
    /// kernel's BTF lacks any of them (numbers are then taken as host pids).
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_ns0: u32,
    pub upid_size: u32,
    pub pidns_idr_head: u32,
    pub pidns_idr_base: u32,
    pub xa_node_shift: u32,
    pub xa_node_slots: u32,
    pub xa_slot_mask: u32,
    pub _pad_xa: u32,
    pub proc_inode_pid: u32,
    pub proc_inode_vfs: u32,
    /// Mount namespaces (a key opened through a mount of another mount
    /// namespace, `probes/open.rs`): task_struct.nsproxy, nsproxy.mnt_ns,
    /// mount.mnt_ns and mnt_namespace.ns.inum. `task_nsproxy` 0 when the
    /// kernel's BTF lacks any of them.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mount_mnt_ns: u32,
    pub mnt_ns_inum: u32,
}

/// REQ_F_FIXED_FILE (= IOSQE_FIXED_FILE): the request's fd is a fixed
/// file slot.
pub const REQ_F_FIXED_FILE: u32 = 1 << 0;
/// REQ_F_CQE_SKIP (= IOSQE_CQE_SKIP_SUCCESS): no completion is posted
/// when the request succeeds.
pub const REQ_F_CQE_SKIP: u32 = 1 << 6;

/// `KernelOffsets::iou_table_layout`: the fixed file table is an array of
/// `struct io_fixed_file { unsigned long file_ptr; }` (6.1-6.12).
pub const IOU_TABLE_FIXED_FILES: u32 = 1;
/// ... an array of `struct io_rsrc_node *`, each with its `file_ptr` (6.13+).
pub const IOU_TABLE_RSRC_NODES: u32 = 2;
/// The low bits of a table entry's `file_ptr` are flags (FFS_NOWAIT,
/// FFS_ISREG, and FFS_SCM before 6.7); `struct file` is at least 8-aligned.
pub const IOU_FILE_PTR_MASK: u64 = !7;
/// `io_open.file_slot` asking the kernel to pick a free slot (the slot is
/// then the completion's result).
pub const IORING_FILE_INDEX_ALLOC: u32 = u32::MAX;

/// Run-time switches handed to the programs as a global.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SensorSettings {
    /// The sensor's own pid: its opens are not reported.
    pub self_pid: u32,
    /// Bench switch: every program returns at once (measures the hook floor).
    pub empty_programs: u32,
    /// Bulk ring fill (bytes) above which a bulk submit wakes user space.
    pub wakeup_bytes: u32,
    /// Lifecycle ring fill (bytes) above which a lifecycle submit wakes
    /// user space (critical submits always wake it).
    pub lifecycle_wakeup_bytes: u32,
    /// `[flow] max_generations`: the last generation of tracked files.
    pub max_generations: u32,
    /// Kernel fold window (ms): an event identical to one sent less than
    /// this long ago is counted, not sent (0: folding off).
    pub fold_window_ms: u32,
    /// 1: the critical lane's per-(tgid, kind) rate limit is on.
    pub crit_rate_limit: u32,
    /// `[protection] key_holders`: 1: a process that opens a watched key
    /// file for reading is protected (`PROTECTED` = `HOLDER_RULE`) in the
    /// open's own program.
    pub key_holders: u32,
    /// `[agents] protected`: 1: a unix socket a `[[protected]]` process
    /// (a rule, not a key holder) binds is a key agent's socket.
    pub agent_protected: u32,
    /// The host's mount namespace (its nsfs inode number; 0: unknown): an
    /// opener in another one is a guest (`PATH_GUEST`).
    pub host_mnt_ns: u32,
}

/// The `PROTECTED` value of a key holder: a process protected because it
/// opened a watched key file for reading (no `[[protected]]` rule). A
/// process a rule protects already keeps its rule.
pub const HOLDER_RULE: u32 = u32::MAX - 1;

// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: repr(C), without padding, valid for any bits.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SensorSettings {}
