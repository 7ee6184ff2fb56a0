//! Dump-producing signals sent to another process, whatever the syscall
//! (kill, tkill, tgkill, rt_sigqueueinfo, pidfd_send_signal): the
//! signal:signal_generate tracepoint sees them all. Signals a process gets
//! from its own faults or sends itself (abort) are dropped here.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use sensor_common::{SignalEvent, is_dump_signal};

use crate::{emit::emit, off, setting};

// signal:signal_generate: int sig; int errno; int code; char comm[16];
// pid_t pid; int group; int result (offsets from the format at load time).
#[tracepoint]
pub fn ks_signal_generate(ctx: TracePointContext) -> u32 {
    if setting!(empty_programs) != 0 {
        return 0;
    }
    let Ok(sig) = (unsafe { ctx.read_at::<u32>(off!(tp_sig_sig) as usize) }) else {
        return 0;
    };
    if !is_dump_signal(sig) {
        return 0;
    }
    let Ok(target) = (unsafe { ctx.read_at::<u32>(off!(tp_sig_pid) as usize) }) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if target == pid_tgid as u32 || target == (pid_tgid >> 32) as u32 {
        return 0;
    }
    let code = unsafe { ctx.read_at::<i32>(off!(tp_sig_code) as usize) }.unwrap_or(0);
    let result = unsafe { ctx.read_at::<i32>(off!(tp_sig_result) as usize) }.unwrap_or(0);
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
    }
    rec.submit();
    0
}
