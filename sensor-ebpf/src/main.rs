//! keysentry's kernel programs. One module per hook family under `probes/`;
//! shared kernel-memory readers in `vfs`, maps and globals in `maps`.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;
mod syscall;
mod vfs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
