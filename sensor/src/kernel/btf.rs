//! Kernel struct offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux),
//! resolved at load time and handed to the kernel programs (CO-RE by hand:
//! rustc emits no field relocations).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use sensor_common::KernelOffsets;

use crate::kernel::tracefs;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let btf = Btf::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading kernel BTF {}", path.display()))?;
        Ok(Self { btf })
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("BTF: no type {name}: {e}"))?;
        for t in types {
            match t {
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => return Ok(s),
                _ => {}
            }
        }
        bail!("BTF: no struct {name}")
    }

    /// Follows typedef/const/volatile to a struct or union, if it is one.
    fn as_struct(&self, mut t: Type) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) => {
                    let bt = t.as_btf_type()?;
                    t = self.btf.resolve_chained_type(bt).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of `member` in `s`, looking inside anonymous members.
    fn member_bits(&self, s: &btf_rs::Struct, member: &str, depth: u32) -> Option<u32> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Some(m.bit_offset());
            }
            if name.is_empty() && depth < 8 {
                let inner = self.btf.resolve_chained_type(m).ok()?;
                if let Some(inner) = self.as_struct(inner)
                    && let Some(bits) = self.member_bits(&inner, member, depth + 1)
                {
                    return Some(m.bit_offset() + bits);
                }
            }
        }
        None
    }

    /// Byte offset of `strukt.member` (a dotted path walks nested structs).
    pub fn offset(&self, strukt: &str, member: &str) -> Result<u32> {
        let mut s = self.find_struct(strukt)?;
        let mut total = 0u32;
        let parts: Vec<&str> = member.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let bits = self
                .member_bits(&s, part, 0)
                .ok_or_else(|| anyhow!("BTF: struct {strukt} has no member {member}"))?;
            if bits % 8 != 0 {
                bail!("BTF: {strukt}.{member} is a bitfield");
            }
            total += bits / 8;
            if i + 1 < parts.len() {
                s = self
                    .member_struct(&s, part)
                    .ok_or_else(|| anyhow!("BTF: {strukt}.{part} is not a struct"))?;
            }
        }
        Ok(total)
    }

    fn member_struct(&self, s: &btf_rs::Struct, member: &str) -> Option<btf_rs::Struct> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                let t = self.btf.resolve_chained_type(m).ok()?;
                return self.as_struct(t);
            }
            if name.is_empty() {
                let t = self.btf.resolve_chained_type(m).ok()?;
                if let Some(inner) = self.as_struct(t)
                    && let Some(found) = self.member_struct(&inner, member)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<usize> {
        Ok(self.find_struct(name)?.size())
    }

    /// Value of an enumerator of enum `enum_name` (e.g. io_uring_op,
    /// IORING_OP_OPENAT).
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<u64> {
        let types = self
            .btf
            .resolve_types_by_name(enum_name)
            .map_err(|e| anyhow!("BTF: no enum {enum_name}: {e}"))?;
        for t in types {
            match &t {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).ok().as_deref() == Some(enumerator) {
                            return Ok(m.val() as u64);
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.btf.resolve_name(m).ok().as_deref() == Some(enumerator) {
                            return Ok(m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        bail!("BTF: enum {enum_name} has no {enumerator}")
    }
}

/// Offsets the programs need. io_uring offsets are optional (0 when the
/// kernel lacks io_uring: its probe then does not attach).
pub fn kernel_offsets(btf: &KernelBtf) -> Result<KernelOffsets> {
    let o = |s: &str, m: &str| btf.offset(s, m);
    let qstr_len = o("qstr", "len")?;
    let qstr_name = o("qstr", "name")?;
    let mut k = KernelOffsets {
        task_files: o("task_struct", "files")?,
        task_fs: o("task_struct", "fs")?,
        fs_pwd: o("fs_struct", "pwd")?,
        task_mm: o("task_struct", "mm")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_tgid: o("task_struct", "tgid")?,
        task_pid: o("task_struct", "pid")?,
        task_start_time: o("task_struct", "start_boottime")?,
        task_exit_code: o("task_struct", "exit_code")?,
        task_group_leader: o("task_struct", "group_leader")?,
        files_fdt: o("files_struct", "fdt")?,
        fdt_fd: o("fdtable", "fd")?,
        file_f_inode: o("file", "f_inode")?,
        file_f_path: o("file", "f_path")?,
        file_f_flags: o("file", "f_flags")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        inode_i_ino: o("inode", "i_ino")?,
        inode_i_sb: o("inode", "i_sb")?,
        inode_i_mode: o("inode", "i_mode")?,
        sb_s_dev: o("super_block", "s_dev")?,
        sb_s_magic: o("super_block", "s_magic")?,
        file_private_data: o("file", "private_data")?,
        inode_i_private: o("inode", "i_private")?,
        pid_nr: o("pid", "numbers")? + o("upid", "nr")?,
        dentry_d_parent: o("dentry", "d_parent")?,
        dentry_d_name: o("dentry", "d_name")?,
        dentry_d_inode: o("dentry", "d_inode")?,
        qstr_len,
        qstr_name,
        mount_mnt: o("mount", "mnt")?,
        mount_mnt_parent: o("mount", "mnt_parent")?,
        mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
        vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
        mm_exe_file: o("mm_struct", "exe_file")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        pt_regs_di: o("pt_regs", "di")?,
        pt_regs_si: o("pt_regs", "si")?,
        pt_regs_dx: o("pt_regs", "dx")?,
        pt_regs_r10: o("pt_regs", "r10")?,
        pt_regs_r8: o("pt_regs", "r8")?,
        socket_sk: o("socket", "sk")?,
        sk_family: o("sock", "__sk_common.skc_family")?,
        sk_daddr: o("sock", "__sk_common.skc_daddr")?,
        sk_rcv_saddr: o("sock", "__sk_common.skc_rcv_saddr")?,
        sk_dport: o("sock", "__sk_common.skc_dport")?,
        sk_num: o("sock", "__sk_common.skc_num")?,
        sk_v6_daddr: o("sock", "__sk_common.skc_v6_daddr")?,
        sk_v6_rcv_saddr: o("sock", "__sk_common.skc_v6_rcv_saddr")?,
        sk_type: o("sock", "sk_type")?,
        sk_protocol: o("sock", "sk_protocol")?,
        task_flags: o("task_struct", "flags")?,
        task_signal: o("task_struct", "signal")?,
        signal_core_state: o("signal_struct", "core_state")?,
        pt_regs_orig_ax: o("pt_regs", "orig_ax")?,
        inode_i_generation: o("inode", "i_generation")?,
        inode_i_uid: o("inode", "i_uid")?,
        inode_i_size: o("inode", "i_size")?,
        inode_i_rdev: o("inode", "i_rdev")?,
        inode_i_nlink: o("inode", "i_nlink")?,
        inode_i_flags: o("inode", "i_flags")?,
        file_f_mode: o("file", "f_mode")?,
        signal_live: o("signal_struct", "live")?,
        signal_group_exit_code: o("signal_struct", "group_exit_code")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        task_ptrace: o("task_struct", "ptrace")?,
        mm_env_start: o("mm_struct", "env_start")?,
        mm_env_end: o("mm_struct", "env_end")?,
        pt_regs_ax: o("pt_regs", "ax")?,
        ..Default::default()
    };
    // A dump signal's disposition at its target (optional: without it,
    // SIG_DISP_UNKNOWN): task->sighand->action[sig - 1].sa.sa_handler,
    // the handler first in its k_sigaction.
    if let (Ok(sighand), Ok(action), Ok(size), Ok(sa), Ok(handler)) = (
        o("task_struct", "sighand"),
        o("sighand_struct", "action"),
        btf.struct_size("k_sigaction"),
        o("k_sigaction", "sa"),
        o("sigaction", "sa_handler"),
    ) && sa + handler == 0
    {
        k.task_sighand = sighand;
        k.sighand_action = action;
        k.k_sigaction_size = size as u32;
    }
    // What a BPF program or perf event fd is (kernel-reader): optional.
    if let Ok(t) = o("bpf_prog", "type") {
        k.bpf_prog_type = t;
    }
    if let Ok(a) = o("perf_event", "attr") {
        k.perf_event_attr = a;
    }
    // A unix socket's peer and bound path (agent-socket-use), the login
    // uid: optional.
    if let (Ok(peer), Ok(path)) = (o("unix_sock", "peer"), o("unix_sock", "path")) {
        k.unix_sock_peer = peer;
        k.unix_sock_path = path;
    }
    if let Ok(l) = o("task_struct", "loginuid") {
        k.task_loginuid = l;
    }
    // Kernel keys (keyring-read): optional, all or none.
    if let (Ok(serial), Ok(uid), Ok(ty), Ok(desc), Ok(tname), Ok(fsuid), Ok(read)) = (
        o("key", "serial"),
        o("key", "uid"),
        o("key", "type"),
        o("key", "description"),
        o("key_type", "name"),
        o("cred", "fsuid"),
        btf.enum_value("key_need_perm", "KEY_NEED_READ"),
    ) {
        k.key_serial = serial;
        k.key_uid = uid;
        k.key_type = ty;
        k.key_desc = desc;
        k.key_type_name = tname;
        k.cred_fsuid = fsuid;
        k.key_need_read = read as u32;
    }
    pid_namespaces(btf, &mut k);
    mount_namespaces(btf, &mut k);
    // The thread list (own-thread checks): optional, both or neither.
    if let (Ok(head), Ok(node)) = (
        o("signal_struct", "thread_head"),
        o("task_struct", "thread_node"),
    ) {
        k.signal_thread_head = head;
        k.task_thread_node = node;
    }
    // The programs read these with fixed offsets: refuse a kernel whose
    // layout differs rather than read the wrong bytes.
    k.tp_sys_exit_ret = tracefs::field_offset("syscalls", "sys_exit_openat", "ret")?;
    if k.tp_sys_exit_ret != sensor_common::SYS_EXIT_RET_OFFSET {
        bail!(
            "syscalls:sys_exit_openat has ret at offset {}, the programs expect {}",
            k.tp_sys_exit_ret,
            sensor_common::SYS_EXIT_RET_OFFSET
        );
    }
    let nr = tracefs::field_offset("syscalls", "sys_exit_openat", "__syscall_nr")?;
    if nr != sensor_common::SYSCALL_NR_OFFSET {
        bail!(
            "syscalls:sys_exit_openat has __syscall_nr at offset {nr}, the programs expect {}",
            sensor_common::SYSCALL_NR_OFFSET
        );
    }
    if (qstr_len, qstr_name) != (4, 8) {
        bail!(
            "struct qstr has len at {qstr_len} and name at {qstr_name}, the programs expect 4 and 8"
        );
    }
    // The open verdict cache reads d_parent, d_name and d_inode at once.
    if k.dentry_d_name == k.dentry_d_parent + 8 && k.dentry_d_inode == k.dentry_d_parent + 24 {
        k.dentry_span = 1;
    }
    // A non-leader's exec: its old thread id leaves PROTECTED_THREADS.
    k.tp_exec_old_pid = tracefs::field_offset("sched", "sched_process_exec", "old_pid")?;
    // task:task_rename is optional (its probe is skipped without it).
    if let (Ok(pid), Ok(comm)) = (
        tracefs::field_offset("task", "task_rename", "pid"),
        tracefs::field_offset("task", "task_rename", "newcomm"),
    ) {
        k.tp_rename_pid = pid;
        k.tp_rename_newcomm = comm;
    }
    // io_uring is optional.
    if let (Ok(op), Ok(a), Ok(b), Ok(req), Ok(res)) = (
        o("io_kiocb", "opcode"),
        btf.enum_value("io_uring_op", "IORING_OP_OPENAT"),
        btf.enum_value("io_uring_op", "IORING_OP_OPENAT2"),
        tracefs::field_offset("io_uring", "io_uring_complete", "req"),
        tracefs::field_offset("io_uring", "io_uring_complete", "res"),
    ) {
        k.io_kiocb_opcode = op;
        k.iou_op_openat = a as u32;
        k.iou_op_openat2 = b as u32;
        k.tp_iou_complete_req = req;
        k.tp_iou_complete_res = res;
        // Writes and sends through io_uring, followed for tainted
        // processes (opcodes this kernel lacks are left out).
        if let Ok(file) = o("io_kiocb", "file") {
            k.io_kiocb_file = file;
            // IORING_OP_CLOSE: struct io_close (file, fd, file_slot) is the
            // request's command area, which starts where `file` does.
            if let (Ok(close), Ok(fd), Ok(slot)) = (
                btf.enum_value("io_uring_op", "IORING_OP_CLOSE"),
                o("io_close", "fd"),
                o("io_close", "file_slot"),
            ) && slot == fd + 4
            {
                k.iou_op_close = close as u32;
                k.iou_close_fd = file + fd;
            }
            // OPENAT/OPENAT2 into a fixed file slot: struct io_open's
            // file_slot, the ring, and its fixed file table.
            if let Ok(slot) = o("io_open", "file_slot") {
                io_uring_fixed_table(btf, &mut k, file + slot);
            }
            // A write or send with a skipped completion is seen at its
            // submission, from the fd (or slot) the SQE named.
            if let (Ok(flags), Ok(fd)) = (o("io_kiocb", "flags"), o("io_kiocb", "cqe.fd")) {
                k.io_kiocb_flags = flags;
                k.io_kiocb_cqe_fd = fd;
            }
            for op in [
                "IORING_OP_WRITEV",
                "IORING_OP_WRITE_FIXED",
                "IORING_OP_WRITE",
                "IORING_OP_SENDMSG",
                "IORING_OP_SEND",
                "IORING_OP_SPLICE",
                "IORING_OP_TEE",
                "IORING_OP_SEND_ZC",
                "IORING_OP_SENDMSG_ZC",
            ] {
                if let Ok(v) = btf.enum_value("io_uring_op", op)
                    && v < 64
                {
                    k.iou_sink_ops |= 1 << v;
                }
            }
        }
    }
    Ok(k)
}

/// The offsets the io_uring completion probe needs to find the file of an
/// open into a fixed file slot (`iou_open_slot` is where the request keeps
/// `io_open.file_slot`). Two layouts of the ring's fixed file table are
/// known: `ctx->file_table.files[slot].file_ptr` (6.1-6.12, length
/// `ctx->nr_user_files`) and `ctx->file_table.data.nodes[slot]->file_ptr`
/// (6.13+, length `ctx->file_table.data.nr`). Any other layout leaves
/// `iou_table_layout` 0: direct-descriptor opens are then seen only through
/// BPF LSM (`keysentry probes` says so).
fn io_uring_fixed_table(btf: &KernelBtf, k: &mut KernelOffsets, open_slot: u32) {
    let o = |s: &str, m: &str| btf.offset(s, m);
    let Ok(ctx) = o("io_kiocb", "ctx") else {
        return;
    };
    k.io_kiocb_ctx = ctx;
    k.iou_open_slot = open_slot;
    let Ok(table) = o("io_ring_ctx", "file_table") else {
        return;
    };
    if let (Ok(files), Ok(nr), Ok(ptr), Ok(8)) = (
        o("io_file_table", "files"),
        o("io_ring_ctx", "nr_user_files"),
        o("io_fixed_file", "file_ptr"),
        btf.struct_size("io_fixed_file"),
    ) {
        k.iou_ctx_files = table + files;
        k.iou_ctx_nr_files = nr;
        k.iou_slot_file_ptr = ptr;
        k.iou_table_layout = sensor_common::IOU_TABLE_FIXED_FILES;
    } else if let (Ok(nodes), Ok(nr), Ok(ptr)) = (
        o("io_file_table", "data.nodes"),
        o("io_file_table", "data.nr"),
        o("io_rsrc_node", "file_ptr"),
    ) {
        k.iou_ctx_files = table + nodes;
        k.iou_ctx_nr_files = table + nr;
        k.iou_slot_file_ptr = ptr;
        k.iou_table_layout = sensor_common::IOU_TABLE_RSRC_NODES;
    }
}

/// Pid namespace offsets (`pidns.rs`): all or none.
fn pid_namespaces(btf: &KernelBtf, k: &mut KernelOffsets) {
    let o = |s: &str, m: &str| btf.offset(s, m);
    let (
        Ok(thread_pid),
        Ok(level),
        Ok(numbers),
        Ok(upid_ns),
        Ok(upid_size),
        Ok(head),
        Ok(base),
        Ok(shift),
        Ok(slots),
        Ok(pi_pid),
        Ok(pi_vfs),
    ) = (
        o("task_struct", "thread_pid"),
        o("pid", "level"),
        o("pid", "numbers"),
        o("upid", "ns"),
        btf.struct_size("upid"),
        o("pid_namespace", "idr.idr_rt.xa_head"),
        o("pid_namespace", "idr.idr_base"),
        o("xa_node", "shift"),
        o("xa_node", "slots"),
        o("proc_inode", "pid"),
        o("proc_inode", "vfs_inode"),
    )
    else {
        return;
    };
    // The slot array runs up to the marks (`tags` before 4.20's xarray
    // naming): its length is the node's fan-out, a power of two.
    let Ok(marks) = o("xa_node", "marks").or_else(|_| o("xa_node", "tags")) else {
        return;
    };
    let n = marks.saturating_sub(slots) / 8;
    if !n.is_power_of_two() || n < 4 {
        return;
    }
    k.task_thread_pid = thread_pid;
    k.pid_level = level;
    k.pid_ns0 = numbers + upid_ns;
    k.upid_size = upid_size as u32;
    k.pidns_idr_head = head;
    k.pidns_idr_base = base;
    k.xa_node_shift = shift;
    k.xa_node_slots = slots;
    k.xa_slot_mask = n - 1;
    k.proc_inode_pid = pi_pid;
    k.proc_inode_vfs = pi_vfs;
}

/// Mount namespace offsets (a key opened through another namespace's
/// mount): all or none.
fn mount_namespaces(btf: &KernelBtf, k: &mut KernelOffsets) {
    let o = |s: &str, m: &str| btf.offset(s, m);
    if let (Ok(nsproxy), Ok(mnt_ns), Ok(mount_ns), Ok(inum)) = (
        o("task_struct", "nsproxy"),
        o("nsproxy", "mnt_ns"),
        o("mount", "mnt_ns"),
        o("mnt_namespace", "ns.inum"),
    ) {
        k.task_nsproxy = nsproxy;
        k.nsproxy_mnt_ns = mnt_ns;
        k.mount_mnt_ns = mount_ns;
        k.mnt_ns_inum = inum;
    }
}

/// True when a key opened through a mount of another mount namespace is
/// told apart in the kernel.
pub fn has_mount_namespaces(k: &KernelOffsets) -> bool {
    k.task_nsproxy != 0
}

/// True when a pid named in the caller's pid namespace is translated to
/// the host's in the kernel.
pub fn has_pid_namespaces(k: &KernelOffsets) -> bool {
    k.pidns_idr_head != 0
}

/// True when the completion probe can find the file of an io_uring open
/// into a fixed file slot (direct descriptor) on this kernel.
pub fn has_io_uring_fixed_table(k: &KernelOffsets) -> bool {
    k.iou_open_slot != 0 && k.iou_table_layout != 0
}

/// True when the task:task_rename field offsets were found.
pub fn has_task_rename(k: &KernelOffsets) -> bool {
    k.tp_rename_newcomm != 0
}

/// True when the unix socket offsets (agent-socket-use) were found.
pub fn has_unix_sock(k: &KernelOffsets) -> bool {
    k.unix_sock_peer != 0 && k.unix_sock_path != 0
}

/// True when the kernel key offsets (keyring-read's LSM hook) were found.
pub fn has_keys(k: &KernelOffsets) -> bool {
    k.key_need_read != 0
}

/// True when the offsets for the io_uring probe were found.
pub fn has_io_uring(k: &KernelOffsets) -> bool {
    k.tp_iou_complete_res != 0
}

/// The io_uring submit probe that sees IORING_OP_CLOSE on this kernel
/// (`io_uring_submit_req` since 6.2, `io_uring_submit_sqe` before), or
/// None without the close offsets or either tracepoint.
pub fn io_uring_close_probe(k: &KernelOffsets) -> Option<&'static str> {
    if k.iou_close_fd == 0 {
        return None;
    }
    if crate::kernel::tracefs::has_tracepoint("io_uring", "io_uring_submit_req") {
        Some("ks_iou_submit_req")
    } else if crate::kernel::tracefs::has_tracepoint("io_uring", "io_uring_submit_sqe") {
        Some("ks_iou_submit_sqe")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: no {VMLINUX}");
            return;
        }
        let btf = KernelBtf::load().unwrap();
        // qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }
        assert_eq!(btf.offset("qstr", "len").unwrap(), 4);
        assert_eq!(btf.offset("qstr", "name").unwrap(), 8);
        assert_eq!(btf.offset("path", "dentry").unwrap(), 8);
        assert!(btf.offset("task_struct", "files").unwrap() > 0);
        assert!(btf.offset("task_struct", "no_such_member").is_err());
        assert!(btf.enum_value("io_uring_op", "IORING_OP_OPENAT").unwrap() > 0);
        let mut k = KernelOffsets::default();
        pid_namespaces(&btf, &mut k);
        assert!(has_pid_namespaces(&k), "{k:?}");
        mount_namespaces(&btf, &mut k);
        assert!(has_mount_namespaces(&k), "{k:?}");
        assert_eq!(k.xa_slot_mask, 63, "64 slots per xarray node");
        assert!(k.proc_inode_pid < k.proc_inode_vfs);
    }

    /// The fixed file table of the running kernel, and of the raw BTF files
    /// (`btf-6.1`, `btf-6.12`, `btf-6.18`: the `.BTF` section of each
    /// kernel) in `$KEYSENTRY_TEST_BTF_DIR` when set: each known layout
    /// resolves.
    #[test]
    fn io_uring_fixed_table_layouts() {
        let mut kernels: Vec<(String, KernelBtf)> = Vec::new();
        if Path::new(VMLINUX).exists() {
            kernels.push(("running".into(), KernelBtf::load().unwrap()));
        }
        if let Ok(dir) = std::env::var("KEYSENTRY_TEST_BTF_DIR") {
            for v in ["6.1", "6.12", "6.18"] {
                let p = Path::new(&dir).join(format!("btf-{v}"));
                if p.exists() {
                    kernels.push((v.into(), KernelBtf::from_file(&p).unwrap()));
                }
            }
        }
        for (name, btf) in &kernels {
            let file = btf.offset("io_kiocb", "file").unwrap();
            let slot = btf.offset("io_open", "file_slot").unwrap();
            let mut k = KernelOffsets::default();
            io_uring_fixed_table(btf, &mut k, file + slot);
            assert!(has_io_uring_fixed_table(&k), "{name}: {k:?}");
            let want = if btf.offset("io_file_table", "files").is_ok() {
                sensor_common::IOU_TABLE_FIXED_FILES
            } else {
                sensor_common::IOU_TABLE_RSRC_NODES
            };
            assert_eq!(k.iou_table_layout, want, "{name}");
            eprintln!(
                "{name}: layout {} files@{} nr@{} file_ptr@{} slot@{}",
                k.iou_table_layout,
                k.iou_ctx_files,
                k.iou_ctx_nr_files,
                k.iou_slot_file_ptr,
                k.iou_open_slot
            );
        }
    }
}
