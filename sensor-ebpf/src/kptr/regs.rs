//! The saved user registers.

use super::*;
use crate::off;

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
