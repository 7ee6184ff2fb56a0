//! ks-actor: performs one kernel action for the integration tests and exits
//! 0 on success, 1 when the action's syscall failed (errno printed), 2 on
//! bad usage. Actions:
//!   open PATH                 open(PATH, O_RDONLY) with the libc open() wrapper (openat)
//!   openat DIR NAME           openat(open(DIR), NAME)
//!   opath-reopen PATH         open(PATH, O_PATH), then open("/proc/self/fd/N", O_RDONLY)
//!   uring PATH                IORING_OP_OPENAT through io_uring

use std::{ffi::CString, process::exit};

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| usage())
}

fn usage() -> ! {
    eprintln!("usage: ks-actor open PATH | openat DIR NAME | opath-reopen PATH | uring PATH");
    exit(2)
}

fn check(fd: i32, what: &str) -> i32 {
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("{what}: {e}");
        exit(1);
    }
    fd
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    match a.as_slice() {
        ["open", path] => {
            let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY) };
            check(fd, "open");
        }
        ["openat", dir, name] => {
            let dfd = unsafe { libc::open(cstr(dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            check(dfd, "open dir");
            let fd = unsafe { libc::openat(dfd, cstr(name).as_ptr(), libc::O_RDONLY) };
            check(fd, "openat");
        }
        ["opath-reopen", path] => {
            let p = unsafe { libc::open(cstr(path).as_ptr(), libc::O_PATH) };
            check(p, "open O_PATH");
            let via = format!("/proc/self/fd/{p}");
            let fd = unsafe { libc::open(cstr(&via).as_ptr(), libc::O_RDONLY) };
            check(fd, "reopen");
        }
        ["uring", path] => uring_open(path),
        _ => usage(),
    }
}

fn uring_open(path: &str) {
    use io_uring::{IoUring, opcode, types};
    let mut ring = IoUring::new(4).unwrap_or_else(|e| {
        eprintln!("io_uring_setup: {e}");
        exit(1)
    });
    let p = cstr(path);
    let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), p.as_ptr())
        .flags(libc::O_RDONLY)
        .build()
        .user_data(7);
    unsafe { ring.submission().push(&sqe) }.unwrap_or_else(|_| exit(1));
    ring.submit_and_wait(1).unwrap_or_else(|e| {
        eprintln!("io_uring_enter: {e}");
        exit(1)
    });
    let cqe = ring.completion().next().unwrap_or_else(|| exit(1));
    check(cqe.result(), "io_uring openat");
}
