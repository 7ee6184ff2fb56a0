//! Bench only: the floor of one BTF raw-tracepoint (tp_btf) dispatcher on
//! `raw_syscalls:sys_exit`, for `cargo xtask bench` to weigh against the
//! per-syscall exit tracepoints keysentry attaches (issue 13: "evaluate a
//! single tp_btf sys_exit dispatcher ... keep whichever is cheaper").
//! `keysentry run --bench-empty-programs --bench-dispatcher` attaches it in
//! place of every `syscalls:sys_exit_*` tracepoint (the few `sys_enter_*`
//! ones stay) and fills `BENCH_ROUTE` with the numbers of the syscalls
//! those tracepoints hook.
//!
//! The dispatcher does what a real one must on every syscall of the host:
//! load the syscall number from the registers through the BTF pointer,
//! look it up, and tail-call the program of a hooked syscall, here one that
//! returns at once (what the empty-program floor measures of a per-syscall
//! tracepoint). Never attached outside the bench.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{Array, ProgramArray},
    programs::BtfTracePointContext,
};

/// Syscall number -> 1 when keysentry hooks it.
#[map]
static BENCH_ROUTE: Array<u32> = Array::with_max_entries(1024, 0);

/// Slot 0: the handler of a hooked syscall.
#[map]
static BENCH_EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[inline(always)]
fn hooked(nr: u64) -> bool {
    nr < 1024 && BENCH_ROUTE.get(nr as u32).is_some_and(|r| *r != 0)
}

// raw_syscalls:sys_exit(struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn ks_bench_sys_exit(ctx: BtfTracePointContext) -> u32 {
    let regs: *const u64 = ctx.arg(0);
    // x86_64 pt_regs.orig_ax (the loader attaches it on x86_64 only);
    // a direct load: the verifier knows `regs` is a struct pt_regs.
    // SAFETY: a BTF pointer load, checked by the verifier.
    let nr = unsafe { *regs.add(15) };
    if hooked(nr) {
        // SAFETY: the slot holds a program of this attach point or nothing
        // (then the call falls through).
        unsafe { BENCH_EXIT_PROGS.tail_call(&ctx, 0) };
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn ks_bench_exit_handler(_ctx: BtfTracePointContext) -> u32 {
    0
}
