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
        file_f_mode: o("file", "f_mode")?,
        signal_live: o("signal_struct", "live")?,
        signal_group_exit_code: o("signal_struct", "group_exit_code")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        ..Default::default()
    };
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
    let sig = |f| tracefs::field_offset("signal", "signal_generate", f);
    k.tp_sig_sig = sig("sig")?;
    k.tp_sig_code = sig("code")?;
    k.tp_sig_pid = sig("pid")?;
    k.tp_sig_result = sig("result")?;
    if (qstr_len, qstr_name) != (4, 8) {
        bail!(
            "struct qstr has len at {qstr_len} and name at {qstr_name}, the programs expect 4 and 8"
        );
    }
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

/// True when the task:task_rename field offsets were found.
pub fn has_task_rename(k: &KernelOffsets) -> bool {
    k.tp_rename_newcomm != 0
}

/// True when the offsets for the io_uring probe were found.
pub fn has_io_uring(k: &KernelOffsets) -> bool {
    k.tp_iou_complete_res != 0
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
    }
}
