//! keysentry's kernel programs. One module per hook family under `probes/`;
//! typed pointers to kernel objects in `kptr`, shared kernel-memory readers
//! in `vfs`, maps and globals in `maps`, the record sender in `emit`,
//! folding of repeats and the critical rate limit in `fold`, the current
//! syscall in `syscall`.
#![no_std]
#![no_main]

mod emit;
mod fold;
mod kptr;
mod maps;
mod pidns;
mod probes;
mod syscall;
mod taint;
mod thread;
mod vfs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
