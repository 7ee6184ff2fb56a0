//! The current syscall: its number, its arguments from the task's saved
//! user registers, its result at an exit tracepoint. The x86_64 register
//! convention is here and nowhere else in the kernel programs; the syscall
//! numbers are `sensor_common::x86_64`'s (the one place that states the
//! architecture).

use aya_ebpf::{EbpfContext, helpers::generated, programs::TracePointContext};

use crate::kptr::{PtRegsPtr, Reg};

/// The current task's saved user registers (None for a kernel thread).
#[inline(always)]
fn user_regs() -> Option<PtRegsPtr> {
    // SAFETY: both helpers take no pointer from us; the result is only
    // read through bpf_probe_read_kernel (PtRegsPtr's readers).
    let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) };
    if regs == 0 {
        None
    } else {
        Some(PtRegsPtr::from_addr(regs as u64))
    }
}

/// (di, si, dx): the first three syscall arguments on x86_64.
#[inline(always)]
pub fn args3() -> Option<(u64, u64, u64)> {
    let regs = user_regs()?;
    Some((
        regs.get(Reg::di())?,
        regs.get(Reg::si())?,
        regs.get(Reg::dx())?,
    ))
}

/// The syscall argument register `reg`.
#[inline(always)]
fn arg_reg(reg: Reg) -> Option<u64> {
    user_regs()?.get(reg)
}

/// The 2nd syscall argument (si).
#[inline(always)]
pub fn arg2() -> Option<u64> {
    arg_reg(Reg::si())
}

/// The 4th syscall argument (r10: the syscall ABI's, not the C ABI's rcx).
#[inline(always)]
pub fn arg4() -> Option<u64> {
    arg_reg(Reg::r10())
}

/// The 5th syscall argument (r8).
#[inline(always)]
pub fn arg5() -> Option<u64> {
    arg_reg(Reg::r8())
}

/// The current syscall's number from the saved registers (`orig_ax`), -1
/// outside a syscall: for hooks other than the syscall tracepoints.
#[inline(always)]
pub fn current_nr() -> i32 {
    let Some(regs) = user_regs() else {
        return -1;
    };
    regs.orig_ax().unwrap_or(-1) as i32
}

/// (number, ax) of the current syscall from the saved registers: `ax` is
/// -ENOSYS while the syscall itself runs (entry sets it), its result once
/// it returned (task work run on the way back to user space). (-1, 0)
/// without user registers.
#[inline(always)]
pub fn current_nr_ax() -> (i32, i64) {
    let Some(regs) = user_regs() else {
        return (-1, 0);
    };
    (regs.orig_ax().unwrap_or(-1) as i32, regs.ax().unwrap_or(0))
}

/// `int __syscall_nr` of a syscalls:sys_{enter,exit}_* record (checked
/// against tracefs at load time), by a direct context load.
#[inline(always)]
pub fn tp_nr(ctx: &TracePointContext) -> i32 {
    // SAFETY: the offset lies inside every syscalls record (checked at load
    // time), and the verifier checks the context access: a direct load,
    // not a bpf_probe_read call.
    unsafe {
        *((ctx.as_ptr() as *const u8).add(sensor_common::SYSCALL_NR_OFFSET as usize) as *const i32)
    }
}

/// `long ret` of a syscalls:sys_exit_* record: a direct context load at the
/// offset user space checked against the running kernel at load time.
#[inline(always)]
pub fn sys_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: the offset lies inside every sys_exit record (checked at load
    // time), and the verifier checks the context access.
    unsafe {
        *((ctx.as_ptr() as *const u8).add(sensor_common::SYS_EXIT_RET_OFFSET as usize)
            as *const i64)
    }
}
