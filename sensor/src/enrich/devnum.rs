//! Device numbers: the kernel's dev_t and user space's st_dev.

/// Kernel dev_t (MAJOR << 20 | MINOR) of a user-space st_dev.
pub fn kdev(st_dev: u64) -> u32 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    ((major as u32) << 20) | (minor as u32 & 0xfffff)
}

/// User-space st_dev of a kernel dev_t.
pub fn st_dev(kdev: u32) -> u64 {
    let major = (kdev >> 20) as u64;
    let minor = (kdev & 0xfffff) as u64;
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}
