//! Dump-producing signals sent to another process, whatever the syscall
//! (kill, tkill, tgkill, rt_sigqueueinfo, pidfd_send_signal): the
//! signal_generate tracepoint sees them all. Signals a process gets from
//! its own faults or sends itself (abort) are dropped here. Each record
//! says what the target does with the signal (`SIG_DISP_*`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use sensor_common::{SignalEvent, is_dump_signal};

use crate::{emit::emit, kptr::TaskPtr, setting};

/// SEND_SIG_NOINFO and SEND_SIG_PRIV: the kernel's stand-ins for a
/// siginfo, whose si_code the tracepoint reports as SI_USER and SI_KERNEL.
const SEND_SIG_PRIV: u64 = 1;
const SI_KERNEL: i32 = 0x80;

// raw_tp signal_generate: TP_PROTO(int sig, struct kernel_siginfo *info,
// struct task_struct *task, int group, int result). The raw tracepoint
// gives the target task itself: its thread group, and the signal's
// disposition there (a handled SIGQUIT is nginx's graceful stop, not a
// crash).
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn ks_signal_generate(ctx: RawTracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let sig = ctx.arg::<u64>(0) as u32;
    if !is_dump_signal(sig) {
        return 0;
    }
    let task = TaskPtr::from_addr(ctx.arg(2));
    let (Some(target), Some(target_tgid)) = (task.pid(), task.tgid()) else {
        return 0;
    };
    // Its own thread group (abort, a fault, a thread signalling another).
    if target_tgid == (bpf_get_current_pid_tgid() >> 32) as u32 {
        return 0;
    }
    let info: u64 = ctx.arg(1);
    let code = match info {
        0 => 0,
        SEND_SIG_PRIV => SI_KERNEL,
        // SAFETY: bpf_probe_read_kernel checks the address; si_code is
        // the third int of struct kernel_siginfo.
        p => unsafe { bpf_probe_read_kernel((p + 8) as *const i32) }.unwrap_or(0),
    };
    let result = ctx.arg::<u64>(4) as i32;
    let disposition = task.sig_disposition(sig);
    let Some(rec) = emit::<SignalEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).sig = sig;
        (*ev).target = target;
        (*ev).code = code;
        (*ev).result = result;
        (*ev).disposition = disposition;
        (*ev)._pad = 0;
    }
    rec.submit();
    0
}
