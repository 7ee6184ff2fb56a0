//! An io_uring request and its ring.

use super::*;
use crate::{off, vfs::Ptr};

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
