//! Sysctl writes, from a cgroup sysctl program attached to the root cgroup
//! (every process): the name, the value in force and the value written,
//! before the kernel applies it. No tracepoint sees the value; the
//! write-open of a /proc/sys file (open_proc.rs) does not either. User
//! space decides which writes weaken a kernel guard (`guards.rs`). The
//! program always lets the write through.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::cgroup_sysctl, programs::SysctlContext};
use sensor_common::{SYSCTL_NAME, SYSCTL_VALUE, SysctlEvent};

use crate::{emit::emit, maps::acting_tgid};

#[cgroup_sysctl]
pub fn ks_sysctl(ctx: SysctlContext) -> i32 {
    // SAFETY: `ctx.sysctl` is the kernel's bpf_sysctl context, read
    // directly (the verifier checks the access).
    let write = unsafe { (*ctx.sysctl).write };
    if write == 0 || acting_tgid().is_none() {
        return 1;
    }
    let Some(rec) = emit::<SysctlEvent>() else {
        return 1;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; each helper writes at most the
    // size it is given into its field.
    unsafe {
        (*ev)._pad = 0;
        (*ev).name_len = generated::bpf_sysctl_get_name(
            ctx.sysctl,
            (*ev).name.as_mut_ptr() as *mut _,
            SYSCTL_NAME as u64,
            0,
        ) as i32;
        (*ev).old_len = generated::bpf_sysctl_get_current_value(
            ctx.sysctl,
            (*ev).old.as_mut_ptr() as *mut _,
            SYSCTL_VALUE as u64,
        ) as i32;
        (*ev).new_len = generated::bpf_sysctl_get_new_value(
            ctx.sysctl,
            (*ev).new.as_mut_ptr() as *mut c_void as *mut _,
            SYSCTL_VALUE as u64,
        ) as i32;
    }
    rec.submit();
    1
}
