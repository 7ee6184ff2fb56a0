//! The current syscall at its exit tracepoint: the arguments from the
//! task's saved user registers, the result from the tracepoint record.

use aya_ebpf::{EbpfContext, helpers::generated, programs::TracePointContext};

use crate::{
    off,
    vfs::{Ptr, rd},
};

/// (di, si, dx): the first three syscall arguments on x86_64.
#[inline(always)]
pub unsafe fn args3() -> Option<(u64, u64, u64)> {
    unsafe {
        let regs = generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) as Ptr;
        if regs.is_null() {
            return None;
        }
        Some((
            rd(regs, off!(pt_regs_di))?,
            rd(regs, off!(pt_regs_si))?,
            rd(regs, off!(pt_regs_dx))?,
        ))
    }
}

/// The syscall argument register at `reg_off` in pt_regs (r10 is the 4th
/// argument, r8 the 5th on x86_64).
#[inline(always)]
pub unsafe fn arg_reg(reg_off: u32) -> Option<u64> {
    unsafe {
        let regs = generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) as Ptr;
        if regs.is_null() {
            return None;
        }
        rd(regs, reg_off)
    }
}

/// `long ret` of a syscalls:sys_exit_* record: a direct context load at the
/// offset user space checked against the running kernel at load time.
#[inline(always)]
pub fn sys_ret(ctx: &TracePointContext) -> i64 {
    unsafe {
        *((ctx.as_ptr() as *const u8).add(sensor_common::SYS_EXIT_RET_OFFSET as usize)
            as *const i64)
    }
}
