//! ks-actor: performs one kernel action for the integration tests and exits
//! 0 on success, 1 when the action's syscall failed (errno printed), 2 on
//! bad usage. Actions:
//!   open PATH                 open(PATH, O_RDONLY) with the libc open() wrapper (openat)
//!   openat DIR NAME           openat(open(DIR), NAME)
//!   opath-reopen PATH         open(PATH, O_PATH), then open("/proc/self/fd/N", O_RDONLY)
//!   uring PATH                IORING_OP_OPENAT through io_uring
//!   victim                    hold a secret; print "ADDR LEN FD"; block on stdin
//!                             (a line "segv" or "abort" on stdin: crash itself
//!                             with that signal)
//!   victim-prctl-name NAME    prctl(PR_SET_NAME, NAME), then victim
//!   victim-comm-write NAME    a second thread writes NAME to /proc/self/comm
//!                             (renaming the leader), then victim
//!   victim-thread-name NAME   a second thread names itself NAME with
//!                             prctl(PR_SET_NAME) and stays; then victim
//!   threads-crash N           start N threads that wait, raise RLIMIT_CORE, then
//!                             crash with SIGSEGV
//!                             (the dump releases them as the dumper exits)
//!   victim-key PATH           read PATH (a key) into memory, then victim
//!   victim-key-open PATH      open PATH (a key) and keep it open, then victim
//!   victim-handler SIG        handle signal SIG (a no-op handler), then victim
//!   key-then-exec PATH        read PATH (a key), then exec itself as victim
//!   hold-keys-crash PATH...   load each PATH (a PEM private key) as a TLS
//!                             library does: its PEM text, its DER and its raw
//!                             private values (an Ed25519 seed; RSA d, p, q,
//!                             dp, dq, qinv in 64-bit little-endian limbs);
//!                             raise RLIMIT_CORE, then crash with a real
//!                             SIGSEGV (a store through a null pointer) in
//!                             `crash_holding_keys`
//!   victim-threads            start a second thread that waits, then victim,
//!                             printing "ADDR LEN FD TID" (TID: that thread's id)
//!   ptrace-peek PID ADDR      PTRACE_ATTACH, PEEKDATA, DETACH
//!   vm-read PID ADDR LEN      process_vm_readv
//!   vm-write PID ADDR LEN     process_vm_writev
//!   vm-read-many FIRST COUNT  process_vm_readv of pids FIRST..FIRST+COUNT (errors ignored)
//!   proc-mem PID ADDR LEN     pread of /proc/PID/mem
//!   proc-mem-dirfd PID        openat(open("/proc/PID"), "mem")
//!   proc-mem-task PID         open /proc/PID/task/PID/mem
//!   recon-then-read PID ADDR LEN   read /proc/PID/maps, then process_vm_readv
//!   read-then-vm-read MAPS PID ADDR LEN   read the file MAPS (e.g.
//!                             /proc/P/task/T/maps), then process_vm_readv
//!   pread PATH ADDR LEN       open PATH (e.g. /proc/P/task/T/mem), pread LEN at ADDR
//!   vm-read-write PID ADDR LEN OUT  process_vm_readv, then write what it read
//!                             to OUT (a new file)
//!   pidfd-getfd-thread TID FD pidfd_open(TID, PIDFD_THREAD) + pidfd_getfd;
//!                             exits 3 when the kernel has no PIDFD_THREAD (< 6.9)
//!   self-thread-access        start a thread; open /proc/self/task/TID/mem and
//!                             /proc/TID/mem, process_vm_readv(TID) and read
//!                             /proc/self/task/TID/maps: its own thread
//!   pidfd-getfd PID FD        pidfd_open + pidfd_getfd
//!   self-access               process_vm_readv and /proc/self/mem on itself
//!   signal PID SIG            kill(PID, SIG)
//!   victim-dumpable           prctl(PR_SET_DUMPABLE, 1), then victim
//!   prlimit-core PID          prlimit64(PID, RLIMIT_CORE, unlimited)
//!   trace-child               fork; SEIZE the stopped child before it execs /bin/true
//!   attach-running BIN        spawn BIN victim, wait until it runs, PTRACE_ATTACH it
//!   ptrace-dump PID OUT       PTRACE_ATTACH, copy every readable mapping through
//!                             /proc/PID/mem into OUT (a raw dump), DETACH
//!   send-file PATH PORT       read PATH, connect to 127.0.0.1:PORT, send it
//!   uring-copy SRC DST        read SRC, write it to DST with IORING_OP_WRITE
//!   bpf-load TYPE NAME        bpf(BPF_PROG_LOAD) of a program of type TYPE (its
//!                             number: 1 socket filter, 2 kprobe/uprobe) named NAME
//!                             that returns 0
//!   module-load PATH          finit_module(open(PATH), "", 0)
//!   kexec-file PATH           kexec_file_load(open(PATH), -1, 0, NULL, NO_INITRAMFS)
//!   perf-sample PID           perf_event_open sampling PID's user stack and
//!                             registers (PID -1: every process, on CPU 0)
//!   perf-count                perf_event_open counting its own CPU time, no samples
//!   mount-fs FSTYPE DIR       mount(2) of file-system type FSTYPE on DIR (a type the
//!                             kernel lacks makes it ask for its module: request_module)
//!   uring-copy-skip SRC DST   the same, the write with IOSQE_CQE_SKIP_SUCCESS
//!                             (no completion), linked to a NOP
//!   uring-direct SRC DST HOW  io_uring only, direct descriptors: OPENAT SRC into a
//!                             fixed file slot (HOW: `slot` names slot 3, `alloc`
//!                             lets the kernel pick: IORING_FILE_INDEX_ALLOC,
//!                             `slot-skip` names slot 3 with IOSQE_CQE_SKIP_SUCCESS),
//!                             READ it through the slot (IOSQE_FIXED_FILE), then
//!                             (DST not `-`) OPENAT DST (O_CREAT) into a slot and
//!                             WRITE the bytes through it; prints "slot N" for SRC.
//!                             Exit status 3 when io_uring or direct descriptors
//!                             are unavailable.
//!   mmap-copy SRC DST         read SRC, copy it into a shared mapping of DST
//!   scm-pass PATH BIN [PORT]  open PATH (O_CLOEXEC), spawn `BIN scm-recv SOCK [PORT]`
//!                             and pass it the fd over a unix socket (SCM_RIGHTS);
//!                             print the receiver's pid, exit with its status
//!   scm-recv SOCK [PORT]      receive an fd on socket SOCK, read it twice and
//!                             mmap it; with PORT, send what it read to
//!                             127.0.0.1:PORT
//!   exec-read PATH BIN        open PATH (no O_CLOEXEC), exec `BIN read-fd FD`
//!   read-fd FD                read fd FD to its end
//!   hold PATH                 open PATH (O_CLOEXEC), print the fd, block on stdin
//!   pidfd-getfd-read PID FD   pidfd_getfd fd FD out of PID, read it to its end
//!   kcmp PID                  kcmp(self, PID, KCMP_VM): do we share PID's memory?
//!   robust-list PID           get_robust_list(PID): the address of its robust futex list
//!   read-exec-write PATH BIN OUT  read PATH (fd closed), then exec `BIN write-file OUT`
//!   write-file OUT            write 4 KiB of zeros to OUT (a new file)
//!   exec-copy PATH BIN OUT    open PATH (no O_CLOEXEC), exec `BIN copy-fd FD OUT`
//!   copy-fd FD OUT            read fd FD to its end, write it to OUT
//!   leader-exit-copy PATH OUT read PATH; a thread waits for the main thread to
//!                             exit (SYS_exit: the process lives on), then writes OUT
//!   environ-all               read /proc/N/environ of every process, as `ps aux` does
//!   open-loop PATH MAX        print "go", then open and close PATH (O_RDONLY) in a
//!                             tight loop until stdin closes or MAX opens (a flood),
//!                             then print "opened N"

use std::{ffi::CString, process::exit};

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| usage())
}

fn usage() -> ! {
    eprintln!("usage: ks-actor open PATH | openat DIR NAME | opath-reopen PATH | uring PATH");
    exit(2)
}

/// `sys-open`: one open syscall by number.
fn sys_open(how: &str, path: &str) {
    let p = cstr(path);
    let rc = match how {
        "open" => unsafe { libc::syscall(libc::SYS_open, p.as_ptr(), libc::O_RDONLY) },
        "openat" => unsafe {
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, p.as_ptr(), libc::O_RDONLY)
        },
        "openat2" => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let open_how = [libc::O_RDONLY as u64, 0, 0];
            unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    open_how.as_ptr(),
                    size_of_val(&open_how),
                )
            }
        }
        "creat" => unsafe { libc::syscall(libc::SYS_creat, p.as_ptr(), 0o600) },
        "open_by_handle_at" => {
            // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
            const MAX_HANDLE: usize = 128;
            let mut fh = [0u32; 2 + MAX_HANDLE / 4];
            fh[0] = MAX_HANDLE as u32;
            let mut mount_id: i32 = 0;
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_name_to_handle_at,
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    fh.as_mut_ptr(),
                    &mut mount_id,
                    0,
                )
            };
            check(rc as i32, "name_to_handle_at");
            let dir = std::path::Path::new(path)
                .parent()
                .unwrap_or_else(|| usage());
            let d = cstr(dir.to_str().unwrap_or_else(|| usage()));
            let mfd = unsafe { libc::open(d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            check(mfd, "open mount dir");
            unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    mfd,
                    fh.as_mut_ptr(),
                    libc::O_RDONLY,
                )
            }
        }
        _ => usage(),
    };
    check(rc as i32, how);
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
        // Drops capability CAP from the bounding set, then execs PROG: as
        // root, the new program has every capability but that one.
        ["without-cap", cap, prog, rest @ ..] => {
            let rc =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, num(cap) as libc::c_ulong, 0, 0, 0) };
            check(rc, "prctl(PR_CAPBSET_DROP)");
            let err = std::os::unix::process::CommandExt::exec(
                std::process::Command::new(prog).args(rest),
            );
            panic!("exec {prog}: {err}");
        }
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
        // Opens PATH for reading through one open syscall by its number
        // (glibc's open() is openat): open, openat, openat2, creat (which
        // creates or truncates PATH for writing), open_by_handle_at (a
        // handle from name_to_handle_at, the mount named by PATH's
        // directory).
        ["sys-open", how, path] => sys_open(how, path),
        ["opath-reopen", path] => {
            let p = unsafe { libc::open(cstr(path).as_ptr(), libc::O_PATH) };
            check(p, "open O_PATH");
            let via = format!("/proc/self/fd/{p}");
            let fd = unsafe { libc::open(cstr(&via).as_ptr(), libc::O_RDONLY) };
            check(fd, "reopen");
        }
        ["uring", path] => uring_open(path),
        // Loads the shared library PATH (a key holder's vendor module),
        // prints "ready" and waits for its stdin to close.
        ["dlopen", path] => {
            use std::io::{Read, Write};
            let h = unsafe { libc::dlopen(cstr(path).as_ptr(), libc::RTLD_NOW) };
            if h.is_null() {
                eprintln!("dlopen {path} failed");
                exit(1)
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
        }
        ["victim"] => victim(None),
        ["victim-memfd"] => victim_memfd(),
        ["victim-threads"] => {
            let tid = spawn_waiting_thread();
            victim_with(None, Some(tid))
        }
        ["victim-key", path] => victim(Some(path)),
        ["victim-key-open", path] => {
            // A daemon that keeps its key file open (ssh-agent-style).
            let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            victim(None);
            drop(f)
        }
        ["key-then-exec", path] => {
            // Reads a key (a key holder), then execs itself as a plain
            // victim: the new image holds no key.
            let key = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            std::hint::black_box(&key);
            let me = cstr(&std::env::current_exe().unwrap().to_string_lossy());
            let arg = cstr("victim");
            let argv = [me.as_ptr(), arg.as_ptr(), std::ptr::null()];
            unsafe { libc::execv(me.as_ptr(), argv.as_ptr()) };
            exit(1)
        }
        ["hold-keys-crash", paths @ ..] if !paths.is_empty() => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            for path in paths {
                let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
                held.extend(load_key(&text));
                held.push(text);
            }
            unlimited_core();
            crash_holding_keys(std::hint::black_box(&held))
        }
        ["victim-handler", sig] => {
            // A daemon that handles a dump signal itself (nginx's SIGQUIT:
            // a graceful stop): the signal runs this, it dumps nothing.
            extern "C" fn noop(_: libc::c_int) {}
            let h: extern "C" fn(libc::c_int) = noop;
            unsafe { libc::signal(num(sig) as i32, h as libc::sighandler_t) };
            victim(None)
        }
        ["victim-prctl-name", name] => {
            set_name(name);
            victim(None)
        }
        ["victim-comm-write", name] => {
            // /proc/self is the thread group's directory: its comm is the
            // leader's, written here by another thread of the group.
            let name = name.to_string();
            std::thread::spawn(move || {
                std::fs::write("/proc/self/comm", name.as_bytes()).unwrap_or_else(|e| {
                    eprintln!("write /proc/self/comm: {e}");
                    exit(1)
                })
            })
            .join()
            .unwrap();
            victim(None)
        }
        ["victim-thread-name", name] => {
            let (tx, rx) = std::sync::mpsc::channel();
            let name = name.to_string();
            std::thread::spawn(move || {
                set_name(&name);
                tx.send(()).unwrap();
                loop {
                    std::thread::park();
                }
            });
            rx.recv().unwrap();
            victim(None)
        }
        ["threads-crash", n] => {
            let n: usize = n.parse().unwrap_or_else(|_| usage());
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..n {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    tx.send(()).unwrap();
                    loop {
                        std::thread::park();
                    }
                });
            }
            for _ in 0..n {
                rx.recv().unwrap();
            }
            unlimited_core();
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            exit(1)
        }
        ["victim-dumpable"] => {
            check(
                unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) },
                "prctl",
            );
            victim(None)
        }
        ["prlimit-core", pid] => {
            let lim = libc::rlimit64 {
                rlim_cur: libc::RLIM64_INFINITY,
                rlim_max: libc::RLIM64_INFINITY,
            };
            let rc = unsafe {
                libc::prlimit64(
                    num(pid) as i32,
                    libc::RLIMIT_CORE,
                    &lim,
                    std::ptr::null_mut(),
                )
            };
            check(rc, "prlimit64");
        }
        ["ptrace-peek", pid, addr] => ptrace_peek(num(pid) as i32, num(addr)),
        ["vm-read-many", first, count] => {
            // Distinct cheap critical events: one process_vm_readv per
            // target pid, whatever it returns (ESRCH for pids nobody has).
            let mut buf = [0u8; 8];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: 0x1000 as *mut libc::c_void,
                iov_len: buf.len(),
            };
            for pid in num(first)..num(first) + num(count) {
                unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
            }
        }
        ["vm-read", pid, addr, len] => {
            vm_read(num(pid) as i32, num(addr), num(len));
        }
        ["vm-write", pid, addr, len] => {
            let buf = vec![b'X'; num(len) as usize];
            let local = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: num(addr) as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let n = unsafe { libc::process_vm_writev(num(pid) as i32, &local, 1, &remote, 1, 0) };
            check(n as i32, "process_vm_writev");
        }
        ["proc-mem", pid, addr, len] => {
            let fd =
                unsafe { libc::open(cstr(&format!("/proc/{pid}/mem")).as_ptr(), libc::O_RDONLY) };
            check(fd, "open mem");
            let mut buf = vec![0u8; num(len) as usize];
            let n =
                unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), num(addr) as i64) };
            check(n as i32, "pread mem");
        }
        ["proc-mem-dirfd", pid] => {
            let dfd = unsafe {
                libc::open(
                    cstr(&format!("/proc/{pid}")).as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
            };
            check(dfd, "open /proc/PID");
            let fd = unsafe { libc::openat(dfd, cstr("mem").as_ptr(), libc::O_RDONLY) };
            check(fd, "openat mem");
        }
        ["proc-mem-task", pid] => {
            let p = format!("/proc/{pid}/task/{pid}/mem");
            check(
                unsafe { libc::open(cstr(&p).as_ptr(), libc::O_RDONLY) },
                "open task mem",
            );
        }
        ["recon-then-read", pid, addr, len] => {
            std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_else(|_| exit(1));
            vm_read(num(pid) as i32, num(addr), num(len));
        }
        ["read-then-vm-read", maps, pid, addr, len] => {
            std::fs::read_to_string(maps).unwrap_or_else(|_| exit(1));
            vm_read(num(pid) as i32, num(addr), num(len));
        }
        ["pread", path, addr, len] => {
            let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY) };
            check(fd, "open");
            let mut buf = vec![0u8; num(len) as usize];
            let n =
                unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), num(addr) as i64) };
            check(n as i32, "pread");
        }
        ["vm-read-write", pid, addr, len, out] => {
            let data = vm_read(num(pid) as i32, num(addr), num(len));
            std::fs::write(out, data).unwrap_or_else(|e| {
                eprintln!("write {out}: {e}");
                exit(1)
            });
        }
        ["pidfd-getfd-thread", tid, fd] => {
            const PIDFD_THREAD: i32 = libc::O_EXCL;
            let pidfd =
                unsafe { libc::syscall(libc::SYS_pidfd_open, num(tid) as i32, PIDFD_THREAD) }
                    as i32;
            if pidfd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                eprintln!("pidfd_open: no PIDFD_THREAD on this kernel");
                exit(3);
            }
            check(pidfd, "pidfd_open");
            let got =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, num(fd) as i32, 0) } as i32;
            check(got, "pidfd_getfd");
        }
        ["self-thread-access"] => {
            let tid = spawn_waiting_thread();
            let secret = std::hint::black_box(*b"self");
            let addr = secret.as_ptr() as u64;
            for p in [
                format!("/proc/self/task/{tid}/mem"),
                format!("/proc/{tid}/mem"),
            ] {
                let fd = unsafe { libc::open(cstr(&p).as_ptr(), libc::O_RDONLY) };
                check(fd, "open own thread's mem");
                let mut buf = [0u8; 4];
                let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 4, addr as i64) };
                check(n as i32, "pread own thread's mem");
            }
            vm_read(tid as i32, addr, 4);
            std::fs::read_to_string(format!("/proc/self/task/{tid}/maps"))
                .unwrap_or_else(|_| exit(1));
        }
        ["pidfd-getfd", pid, fd] => {
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, num(pid) as i32, 0) } as i32;
            check(pidfd, "pidfd_open");
            let got =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, num(fd) as i32, 0) } as i32;
            check(got, "pidfd_getfd");
        }
        ["self-access"] => {
            let secret = *b"self";
            vm_read(std::process::id() as i32, secret.as_ptr() as u64, 4);
            let fd = unsafe { libc::open(cstr("/proc/self/mem").as_ptr(), libc::O_RDONLY) };
            check(fd, "open /proc/self/mem");
        }
        ["trace-child"] => trace_child(),
        ["signal", pid, sig] => {
            let rc = unsafe { libc::kill(num(pid) as i32, num(sig) as i32) };
            check(rc, "kill");
        }
        ["attach-running", bin] => attach_running(bin),
        ["ptrace-dump", pid, out] => ptrace_dump(num(pid) as i32, out),
        ["uring-copy", src, dst] => uring_copy(src, dst, false),
        ["uring-copy-skip", src, dst] => uring_copy(src, dst, true),
        ["uring-direct", src, dst, how] => uring_direct(src, dst, how),
        ["mmap-copy", src, dst] => mmap_copy(src, dst),
        ["scm-pass", path, bin] => scm_pass(path, bin, None),
        ["scm-pass", path, bin, port] => scm_pass(path, bin, Some(port)),
        ["scm-recv", sock] => scm_recv(num(sock) as i32, None),
        ["scm-recv", sock, port] => scm_recv(num(sock) as i32, Some(num(port) as u16)),
        ["exec-read", path, bin] => {
            let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY) };
            check(fd, "open");
            let b = cstr(bin);
            let (a1, a2) = (cstr("read-fd"), cstr(&fd.to_string()));
            let argv = [b.as_ptr(), a1.as_ptr(), a2.as_ptr(), std::ptr::null()];
            unsafe { libc::execv(b.as_ptr(), argv.as_ptr()) };
            check(-1, "execv");
        }
        ["read-fd", fd] => {
            read_all(num(fd) as i32);
        }
        ["hold", path] => {
            use std::io::{Read, Write};
            let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            check(fd, "open");
            let mut out = std::io::stdout();
            writeln!(out, "{fd}").unwrap();
            out.flush().unwrap();
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
        }
        ["kcmp", pid] => {
            const KCMP_VM: i64 = 1;
            let me = std::process::id() as i64;
            let rc = unsafe { libc::syscall(libc::SYS_kcmp, me, num(pid) as i64, KCMP_VM, 0, 0) };
            check(rc as i32, "kcmp");
        }
        ["robust-list", pid] => {
            let mut head: usize = 0;
            let mut len: usize = 0;
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    num(pid) as i64,
                    &mut head as *mut usize,
                    &mut len as *mut usize,
                )
            };
            check(rc as i32, "get_robust_list");
        }
        ["pidfd-getfd-read", pid, fd] => {
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, num(pid) as i32, 0) } as i32;
            check(pidfd, "pidfd_open");
            let got =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, num(fd) as i32, 0) } as i32;
            check(got, "pidfd_getfd");
            read_all(got);
        }
        ["send-file", path, port] => {
            use std::io::Write;
            let data = std::fs::read(path).unwrap_or_else(|e| {
                eprintln!("read {path}: {e}");
                exit(1)
            });
            let mut s = std::net::TcpStream::connect(("127.0.0.1", num(port) as u16))
                .unwrap_or_else(|e| {
                    eprintln!("connect: {e}");
                    exit(1)
                });
            s.write_all(&data).unwrap_or_else(|_| exit(1));
        }
        ["read-exec-write", path, bin, out] => {
            let data = std::fs::read(path).unwrap_or_else(|e| {
                eprintln!("read {path}: {e}");
                exit(1)
            });
            drop(data);
            let b = cstr(bin);
            let (a1, a2) = (cstr("write-file"), cstr(out));
            let argv = [b.as_ptr(), a1.as_ptr(), a2.as_ptr(), std::ptr::null()];
            unsafe { libc::execv(b.as_ptr(), argv.as_ptr()) };
            check(-1, "execv");
        }
        ["write-file", out] => {
            std::fs::write(out, [0u8; 4096]).unwrap_or_else(|e| {
                eprintln!("write {out}: {e}");
                exit(1)
            });
        }
        ["exec-copy", path, bin, out] => {
            let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY) };
            check(fd, "open");
            let b = cstr(bin);
            let (a1, a2, a3) = (cstr("copy-fd"), cstr(&fd.to_string()), cstr(out));
            let argv = [
                b.as_ptr(),
                a1.as_ptr(),
                a2.as_ptr(),
                a3.as_ptr(),
                std::ptr::null(),
            ];
            unsafe { libc::execv(b.as_ptr(), argv.as_ptr()) };
            check(-1, "execv");
        }
        ["copy-fd", fd, out] => {
            let data = read_all(num(fd) as i32);
            std::fs::write(out, data).unwrap_or_else(|e| {
                eprintln!("write {out}: {e}");
                exit(1)
            });
        }
        ["leader-exit-copy", path, out] => leader_exit_copy(path, out),
        ["environ-all"] => {
            let me = std::process::id().to_string();
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.bytes().all(|b| b.is_ascii_digit()) && name != me {
                    let _ = std::fs::read(format!("/proc/{name}/environ"));
                }
            }
        }
        ["open-loop", path, max] => open_loop(path, num(max)),
        ["copy-end", how, src, dst] => copy_end(how, src, dst),
        ["taint-fill", path, n] => taint_fill(path, num(n) as usize),
        ["bpf-load", ty, name] => bpf_load(num(ty) as u32, name),
        ["module-load", path] => {
            let fd = open_ro(path);
            let empty = cstr("");
            let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, empty.as_ptr(), 0) };
            check(rc as i32, "finit_module");
        }
        ["kexec-file", path] => {
            const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 4;
            let fd = open_ro(path);
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_kexec_file_load,
                    fd,
                    -1,
                    0 as libc::c_ulong,
                    std::ptr::null::<u8>(),
                    KEXEC_FILE_NO_INITRAMFS,
                )
            };
            check(rc as i32, "kexec_file_load");
        }
        ["perf-sample", pid] => {
            let pid: i32 = pid.parse().unwrap_or_else(|_| usage());
            perf_open(pid, true)
        }
        ["perf-count"] => perf_open(0, false),
        ["mount-fs", fstype, dir] => {
            let (src, t, d) = (cstr("none"), cstr(fstype), cstr(dir));
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    d.as_ptr(),
                    t.as_ptr(),
                    libc::MS_RDONLY,
                    std::ptr::null(),
                )
            };
            check(rc, "mount");
        }
        _ => usage(),
    }
}

/// Reads `path`, then the main thread exits alone (SYS_exit ends only the
/// calling thread); a worker waits until it is gone (a zombie leader) and
/// writes what was read to `out`.
fn leader_exit_copy(path: &str, out: &str) {
    let data = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("read {path}: {e}");
        exit(1)
    });
    let out = out.to_string();
    let tgid = std::process::id();
    std::thread::spawn(move || {
        let status = format!("/proc/{tgid}/task/{tgid}/status");
        // The leader's task stays as a zombie while the group lives.
        loop {
            let s = std::fs::read_to_string(&status).unwrap_or_default();
            if s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::yield_now();
        }
        std::fs::write(&out, &data).unwrap_or_else(|e| {
            eprintln!("write {out}: {e}");
            unsafe { libc::_exit(1) }
        });
        unsafe { libc::_exit(0) };
    });
    unsafe { libc::syscall(libc::SYS_exit, 0) };
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

/// Opens and closes `path` until stdin closes (a thread waits for it) or
/// `max` opens; prints "go" first and nothing after (having opened a key,
/// the process is tainted: what it writes to a pipe would taint the reader).
fn open_loop(path: &str, max: u64) {
    use std::{
        io::{Read, Write},
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        s.store(true, Ordering::Relaxed);
    });
    let p = cstr(path);
    println!("go");
    let _ = std::io::stdout().flush();
    let mut opened = 0u64;
    for _ in 0..max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        check(fd, "open");
        unsafe { libc::close(fd) };
        opened += 1;
    }
    println!("opened {opened}");
    let _ = std::io::stdout().flush();
}

fn open_ro(path: &str) -> i32 {
    let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    check(fd, "open")
}

/// bpf(BPF_PROG_LOAD) of `r0 = 0; exit` as a program of type `ty`.
fn bpf_load(ty: u32, name: &str) {
    const BPF_PROG_LOAD: libc::c_long = 5;
    // BPF_ALU64|BPF_MOV|BPF_K r0 = 0; BPF_JMP|BPF_EXIT.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = cstr("GPL");
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&ty.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let n = name.len().min(15);
    attr[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    check(fd as i32, "bpf(BPF_PROG_LOAD)");
}

/// perf_event_open of the CPU clock: sampling the user stack and
/// registers of `pid` (-1: every process, on CPU 0) when `sample`, else
/// counting only.
fn perf_open(pid: i32, sample: bool) {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_SAMPLE_IP: u64 = 1;
    const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
    const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
    // struct perf_event_attr, PERF_ATTR_SIZE_VER7 (128 bytes).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&PERF_TYPE_SOFTWARE.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // config: PERF_COUNT_SW_CPU_CLOCK (0)
    // flags: disabled, exclude_kernel, exclude_hv
    attr[40..48].copy_from_slice(&((1u64) | (1 << 5) | (1 << 6)).to_ne_bytes());
    if sample {
        attr[16..24].copy_from_slice(&1_000_000u64.to_ne_bytes());
        let st = PERF_SAMPLE_IP | PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER;
        attr[24..32].copy_from_slice(&st.to_ne_bytes());
        // sample_regs_user: ax..sp; sample_stack_user: 4 KiB.
        attr[80..88].copy_from_slice(&0xffu64.to_ne_bytes());
        attr[88..92].copy_from_slice(&4096u32.to_ne_bytes());
    }
    let cpu: i32 = if pid == -1 { 0 } else { -1 };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            pid,
            cpu,
            -1,
            0 as libc::c_ulong,
        )
    };
    check(fd as i32, "perf_event_open");
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| usage())
}

/// Starts a thread that waits forever; returns its thread id once it runs.
fn spawn_waiting_thread() -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// Holds a secret in memory until stdin closes.
fn victim(key: Option<&str>) {
    victim_with(key, None)
}

/// `victim`, printing the id of its second thread `tid` too.
fn victim_with(key: Option<&str>, tid: Option<u32>) {
    use std::io::Write;
    // A signing service: the key it loaded stays in its memory.
    let key = key.map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("read {p}: {e}")));
    // Rust's runtime catches SIGSEGV/SIGBUS for stack-overflow reports and
    // survives a kill(SIGSEGV); a victim crashes like a C daemon would.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    let secret = std::hint::black_box(b"KEYSENTRY-TEST-SECRET-0123456789".to_vec());
    let fd = unsafe { libc::open(cstr("/dev/null").as_ptr(), libc::O_RDONLY) };
    check(fd, "open /dev/null");
    let mut out = std::io::stdout();
    write!(out, "{:#x} {} {fd}", secret.as_ptr() as u64, secret.len()).unwrap();
    match tid {
        Some(t) => writeln!(out, " {t}"),
        None => writeln!(out),
    }
    .unwrap();
    out.flush().unwrap();
    // Until stdin closes; a line naming a signal crashes the victim itself.
    for line in std::io::stdin().lines() {
        match line.as_deref().map(str::trim) {
            Ok("segv") => unsafe {
                libc::raise(libc::SIGSEGV);
            },
            Ok("abort") => unsafe { libc::abort() },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    std::hint::black_box(&secret);
    std::hint::black_box(&key);
}

/// A key service that keeps its secret in a memfd, mapped: prints
/// "ADDR LEN FD" (the mapping and the memfd's descriptor) once it has
/// reopened the memfd itself through /proc/self/fd (its own: no alert),
/// then waits until stdin closes.
fn victim_memfd() {
    use std::io::Write;
    let name = cstr("ks-secret");
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    check(fd, "memfd_create");
    check(unsafe { libc::ftruncate(fd, 4096) }, "ftruncate");
    let secret = b"KEYSENTRY-TEST-SECRET-0123456789";
    let n = unsafe { libc::pwrite(fd, secret.as_ptr().cast(), secret.len(), 0) };
    check(n as i32, "pwrite");
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        check(-1, "mmap");
    }
    let own = format!("/proc/self/fd/{fd}");
    let again = unsafe { libc::open(cstr(&own).as_ptr(), libc::O_RDONLY) };
    check(again, "reopen own memfd");
    unsafe { libc::close(again) };
    let mut out = std::io::stdout();
    writeln!(out, "{:#x} 4096 {fd}", map as u64).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        if line.is_err() {
            break;
        }
    }
}

/// prctl(PR_SET_NAME): the calling thread's comm.
fn set_name(name: &str) {
    let n = cstr(name);
    check(
        unsafe { libc::prctl(libc::PR_SET_NAME, n.as_ptr() as libc::c_ulong, 0, 0, 0) },
        "prctl(PR_SET_NAME)",
    );
}

fn ptrace_peek(pid: i32, addr: u64) {
    unsafe {
        check(
            libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) as i32,
            "PTRACE_ATTACH",
        );
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
        *libc::__errno_location() = 0;
        let v = libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr, 0);
        let failed = v == -1 && *libc::__errno_location() != 0;
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        if failed {
            exit(1);
        }
    }
}

fn vm_read(pid: i32, addr: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len as usize,
    };
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(n as i32, "process_vm_readv");
    buf
}

/// strace's way of launching: the child stops itself, the parent seizes it
/// before it execs, then lets it run /bin/true.
fn trace_child() {
    unsafe {
        let child = libc::fork();
        if child == 0 {
            libc::raise(libc::SIGSTOP);
            let t = cstr("/bin/true");
            let argv = [t.as_ptr(), std::ptr::null()];
            libc::execv(t.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, libc::WUNTRACED);
        check(
            libc::ptrace(libc::PTRACE_SEIZE, child, 0, 0) as i32,
            "PTRACE_SEIZE",
        );
        libc::kill(child, libc::SIGCONT);
        loop {
            if libc::waitpid(child, &mut status, libc::__WALL) < 0 {
                break;
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
            libc::ptrace(libc::PTRACE_CONT, child, 0, 0);
        }
    }
}

/// Attaches to its own child after the child exec'd another program.
fn attach_running(bin: &str) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin)
        .arg("victim")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|_| exit(1));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap_or_else(|_| exit(1));
    let pid = child.id() as i32;
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } as i32;
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    drop(child.stdin.take());
    let _ = child.wait();
    println!("{pid}");
    check(rc, "PTRACE_ATTACH");
}

/// A gcore-style dumper: attach, copy the readable mappings through
/// /proc/PID/mem into OUT, detach.
fn ptrace_dump(pid: i32, out: &str) {
    use std::io::{Read, Seek, SeekFrom, Write};
    unsafe {
        check(
            libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) as i32,
            "PTRACE_ATTACH",
        );
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_else(|_| exit(1));
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap_or_else(|_| exit(1));
    let mut dump = std::fs::File::create(out).unwrap_or_else(|e| {
        eprintln!("create {out}: {e}");
        exit(1)
    });
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap_or(0),
            u64::from_str_radix(b, 16).unwrap_or(0),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            dump.write_all(&buf).unwrap_or_else(|_| exit(1));
        }
    }
    drop(dump);
    unsafe {
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
}

/// Reads SRC, then writes it to DST through io_uring (no write syscall);
/// with `skip`, the write has IOSQE_CQE_SKIP_SUCCESS (no completion when
/// it succeeds) and is linked to a NOP whose completion says it is done.
fn uring_copy(src: &str, dst: &str, skip: bool) {
    use io_uring::{IoUring, opcode, squeue, types};
    use std::os::fd::AsRawFd;
    let data = std::fs::read(src).unwrap_or_else(|e| {
        eprintln!("read {src}: {e}");
        exit(1)
    });
    let out = std::fs::File::create(dst).unwrap_or_else(|e| {
        eprintln!("create {dst}: {e}");
        exit(1)
    });
    let mut ring = IoUring::new(4).unwrap_or_else(|_| exit(1));
    let write = opcode::Write::new(types::Fd(out.as_raw_fd()), data.as_ptr(), data.len() as u32)
        .build()
        .user_data(9);
    if skip {
        let write = write.flags(squeue::Flags::SKIP_SUCCESS | squeue::Flags::IO_LINK);
        let nop = opcode::Nop::new().build().user_data(10);
        unsafe {
            ring.submission().push(&write).unwrap_or_else(|_| exit(1));
            ring.submission().push(&nop).unwrap_or_else(|_| exit(1));
        }
    } else {
        unsafe { ring.submission().push(&write) }.unwrap_or_else(|_| exit(1));
    }
    ring.submit_and_wait(1).unwrap_or_else(|_| exit(1));
    let cqe = ring.completion().next().unwrap_or_else(|| exit(1));
    // With `skip`, a completion of the write itself means it failed.
    check(cqe.result(), "io_uring write");
    if skip && cqe.user_data() != 10 {
        exit(1);
    }
}

/// `uring-direct`: see the usage at the top. Nothing but io_uring touches
/// SRC or DST (no open, read or write syscall).
fn uring_direct(src: &str, dst: &str, how: &str) {
    use io_uring::{IoUring, opcode, squeue, types};
    let unavailable = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("{what}: {e}");
        exit(3)
    };
    let mut ring = IoUring::new(8).unwrap_or_else(|e| unavailable("io_uring_setup", &e));
    ring.submitter()
        .register_files_sparse(8)
        .unwrap_or_else(|e| unavailable("IORING_REGISTER_FILES2 (sparse)", &e));
    // One request, its result (None when its completion was skipped).
    let mut run = |sqe: squeue::Entry, skip: bool| -> Option<i32> {
        let sqe = if skip {
            sqe.flags(squeue::Flags::SKIP_SUCCESS)
        } else {
            sqe
        };
        unsafe { ring.submission().push(&sqe) }.unwrap_or_else(|_| exit(1));
        if skip {
            ring.submit().unwrap_or_else(|e| {
                eprintln!("io_uring_enter: {e}");
                exit(1)
            });
            // A NOP behind it, so the skipped request is known done.
            let nop = opcode::Nop::new().build().user_data(99);
            unsafe { ring.submission().push(&nop) }.unwrap_or_else(|_| exit(1));
        }
        ring.submit_and_wait(1).unwrap_or_else(|e| {
            eprintln!("io_uring_enter: {e}");
            exit(1)
        });
        let cqe = ring.completion().next().unwrap_or_else(|| exit(1));
        if skip && cqe.user_data() == 99 {
            return None;
        }
        Some(cqe.result())
    };
    let p = cstr(src);
    let (dest, skip) = match how {
        "slot" => (
            types::DestinationSlot::try_from_slot_target(3).unwrap(),
            false,
        ),
        "slot-skip" => (
            types::DestinationSlot::try_from_slot_target(3).unwrap(),
            true,
        ),
        "alloc" => (types::DestinationSlot::auto_target(), false),
        _ => usage(),
    };
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), p.as_ptr())
        .flags(libc::O_RDONLY)
        .file_index(Some(dest))
        .build()
        .user_data(1);
    let slot = match run(open, skip) {
        Some(r) if r == -libc::EINVAL || r == -libc::EOPNOTSUPP => {
            unavailable("direct descriptors", &std::io::Error::from_raw_os_error(-r))
        }
        Some(r) if r < 0 => {
            eprintln!(
                "io_uring openat (direct) {src}: {}",
                std::io::Error::from_raw_os_error(-r)
            );
            exit(1)
        }
        Some(r) if how == "alloc" => r as u32,
        _ => 3,
    };
    println!("slot {slot}");
    let mut buf = vec![0u8; 1 << 16];
    let read = opcode::Read::new(types::Fixed(slot), buf.as_mut_ptr(), buf.len() as u32)
        .build()
        .user_data(2);
    let n = run(read, false).unwrap_or(-1);
    if n < 0 {
        eprintln!(
            "io_uring read (fixed {slot}): {}",
            std::io::Error::from_raw_os_error(-n)
        );
        exit(1)
    }
    if dst == "-" {
        return;
    }
    let d = cstr(dst);
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), d.as_ptr())
        .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .mode(0o600)
        .file_index(Some(
            types::DestinationSlot::try_from_slot_target(5).unwrap(),
        ))
        .build()
        .user_data(3);
    let r = run(open, false).unwrap_or(-1);
    if r < 0 {
        eprintln!(
            "io_uring openat (direct) {dst}: {}",
            std::io::Error::from_raw_os_error(-r)
        );
        exit(1)
    }
    let write = opcode::Write::new(types::Fixed(5), buf.as_ptr(), n as u32)
        .build()
        .user_data(4);
    let w = run(write, false).unwrap_or(-1);
    if w != n {
        eprintln!("io_uring write (fixed 5): {w} of {n}");
        exit(1)
    }
}

/// Reads SRC, then copies it into a MAP_SHARED writable mapping of DST.
fn mmap_copy(src: &str, dst: &str) {
    use std::os::fd::AsRawFd;
    let data = std::fs::read(src).unwrap_or_else(|_| exit(1));
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .unwrap_or_else(|_| exit(1));
    out.set_len(data.len() as u64).unwrap_or_else(|_| exit(1));
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            out.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            check(-1, "mmap");
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, data.len());
        libc::msync(p, data.len(), libc::MS_SYNC);
        libc::munmap(p, data.len());
    }
}

/// Reads `fd` from its start to its end.
fn read_all(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        check(n as i32, "read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Opens PATH and hands the fd to a new process running BIN over a unix
/// socket (SCM_RIGHTS); the receiver did not open the file.
fn scm_pass(path: &str, bin: &str, port: Option<&&str>) {
    let mut sv = [0i32; 2];
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        "socketpair",
    );
    // Our end is not inherited; the child's end is.
    unsafe { libc::fcntl(sv[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["scm-recv", &sv[1].to_string()]);
    if let Some(p) = port {
        cmd.arg(p);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        eprintln!("spawn {bin}: {e}");
        exit(1)
    });
    unsafe { libc::close(sv[1]) };
    let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    check(fd, "open");
    unsafe {
        let mut byte = *b"k";
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let space = libc::CMSG_SPACE(size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
        check(libc::sendmsg(sv[0], &msg, 0) as i32, "sendmsg");
        libc::close(fd);
    }
    let st = child.wait().unwrap_or_else(|_| exit(1));
    println!("{}", child.id());
    exit(st.code().unwrap_or(1));
}

/// Receives an fd over unix socket `sock`, reads it twice and maps it (one
/// alert expected), and with `port` sends what it read to 127.0.0.1:port.
fn scm_recv(sock: i32, port: Option<u16>) {
    let fd = unsafe {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let space = libc::CMSG_SPACE(size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        check(libc::recvmsg(sock, &mut msg, 0) as i32, "recvmsg");
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            eprintln!("recvmsg: no fd received");
            exit(1);
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
    };
    let data = read_all(fd);
    unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
    read_all(fd);
    unsafe {
        let len = data.len().max(1);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            check(-1, "mmap");
        }
        libc::munmap(p, len);
    }
    if let Some(port) = port {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| {
            eprintln!("connect: {e}");
            exit(1)
        });
        s.write_all(&data).unwrap_or_else(|_| exit(1));
    }
}

/// Reads SRC, writes it to DST and ends the descriptor without close(2):
/// `exit` (exit_group with it open), `close-range` (close_range from it
/// up), `close-range-far` (moved to descriptor 100000, then close_range
/// from 3 up), `dup2` (/dev/null dup2'd over it), `uring-close` (an io_uring
/// IORING_OP_CLOSE; exit status 3 when io_uring is unavailable),
/// `uring-slot-close` (opened, written and closed through an io_uring
/// fixed file slot only: `uring_slot_write_close`), `dup2-other` (dup2 over an
/// unrelated descriptor: the copy stays open), or `close` (a plain close(2),
/// for the tests of the close probe itself). Except for `exit`, it then
/// prints "ready" and waits for its stdin to close, then exits with the
/// copy's descriptor (if still open) open.
fn copy_end(how: &str, src: &str, dst: &str) {
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;
    let data = std::fs::read(src).unwrap_or_else(|e| {
        eprintln!("read {src}: {e}");
        exit(1)
    });
    if how == "uring-slot-close" {
        uring_slot_write_close(&data, dst);
        println!("ready");
        let _ = std::io::stdout().flush();
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        unsafe { libc::_exit(0) }
    }
    let mut out = std::fs::File::create(dst).unwrap_or_else(|e| {
        eprintln!("create {dst}: {e}");
        exit(1)
    });
    out.write_all(&data).unwrap_or_else(|_| exit(1));
    let fd = out.into_raw_fd();
    let null = || {
        check(
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) },
            "open /dev/null",
        )
    };
    match how {
        "exit" => unsafe { libc::_exit(0) },
        "close-range" => {
            let r = unsafe { libc::syscall(libc::SYS_close_range, fd as u32, u32::MAX, 0u32) };
            check(r as i32, "close_range");
        }
        "close-range-far" => {
            // The copy's descriptor moved far up the table (fd 100000,
            // above 2^16), then everything from 3 closed.
            // Exit status 4 when the hard limit does not reach it.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
                "getrlimit NOFILE",
            );
            if lim.rlim_max <= 100_000 {
                // Raised where allowed (CAP_SYS_RESOURCE, fs.nr_open).
                let want = libc::rlimit {
                    rlim_cur: 200_000,
                    rlim_max: 200_000,
                };
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
                    lim = want;
                }
            }
            if lim.rlim_max <= 100_000 {
                eprintln!("RLIMIT_NOFILE hard limit {} <= 100000", lim.rlim_max);
                exit(4);
            }
            lim.rlim_cur = lim.rlim_max.min(200_000);
            check(
                unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) },
                "setrlimit NOFILE",
            );
            check(unsafe { libc::dup2(fd, 100_000) }, "dup2 to 100000");
            check(unsafe { libc::close(fd) }, "close");
            let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            check(r as i32, "close_range");
        }
        "dup2" => {
            let n = null();
            check(unsafe { libc::dup2(n, fd) }, "dup2");
        }
        "uring-close" => {
            use io_uring::{IoUring, opcode, types};
            let mut ring = IoUring::new(4).unwrap_or_else(|e| {
                eprintln!("io_uring: {e}");
                exit(3)
            });
            let sqe = opcode::Close::new(types::Fd(fd)).build().user_data(7);
            unsafe { ring.submission().push(&sqe) }.unwrap_or_else(|_| exit(1));
            ring.submit_and_wait(1).unwrap_or_else(|_| exit(1));
            let cqe = ring.completion().next().unwrap_or_else(|| exit(1));
            check(cqe.result(), "io_uring close");
        }
        "dup2-other" => {
            let (a, b) = (null(), null());
            check(unsafe { libc::dup2(a, b) }, "dup2");
        }
        "close" => {
            check(unsafe { libc::close(fd) }, "close");
        }
        _ => usage(),
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    unsafe { libc::_exit(0) }
}

/// `copy-end uring-slot-close`: DST is opened into fixed file slot 2,
/// written through it and closed by IORING_OP_CLOSE of the slot; no
/// descriptor of the process's table ever holds it. Exit status 3 when
/// io_uring or direct descriptors are unavailable.
fn uring_slot_write_close(data: &[u8], dst: &str) {
    use io_uring::{IoUring, opcode, squeue, types};
    let unavailable = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("{what}: {e}");
        exit(3)
    };
    let mut ring = IoUring::new(4).unwrap_or_else(|e| unavailable("io_uring_setup", &e));
    ring.submitter()
        .register_files_sparse(4)
        .unwrap_or_else(|e| unavailable("IORING_REGISTER_FILES2 (sparse)", &e));
    let mut run = |sqe: squeue::Entry, what: &str| -> i32 {
        unsafe { ring.submission().push(&sqe) }.unwrap_or_else(|_| exit(1));
        ring.submit_and_wait(1).unwrap_or_else(|e| {
            eprintln!("io_uring_enter: {e}");
            exit(1)
        });
        let r = ring.completion().next().unwrap_or_else(|| exit(1)).result();
        if r < 0 {
            eprintln!("io_uring {what}: {}", std::io::Error::from_raw_os_error(-r));
        }
        r
    };
    let d = cstr(dst);
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), d.as_ptr())
        .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .mode(0o600)
        .file_index(Some(
            types::DestinationSlot::try_from_slot_target(2).unwrap(),
        ))
        .build()
        .user_data(1);
    match run(open, "openat (direct)") {
        r if r == -libc::EINVAL || r == -libc::EOPNOTSUPP => exit(3),
        r if r < 0 => exit(1),
        _ => {}
    }
    let write = opcode::Write::new(types::Fixed(2), data.as_ptr(), data.len() as u32)
        .build()
        .user_data(2);
    if run(write, "write (fixed 2)") < 0 {
        exit(1);
    }
    let close = opcode::Close::new(types::Fixed(2)).build().user_data(3);
    if run(close, "close (fixed 2)") < 0 {
        exit(1);
    }
}

/// Opens PATH (a file matched by name only: a self-inflicted taint), then
/// forks N children that inherit the taint and wait; prints "ready" once
/// all are forked, and ends them when its stdin closes.
fn taint_fill(path: &str, n: usize) {
    use std::io::{Read, Write};
    let _f = std::fs::File::open(path).unwrap_or_else(|e| {
        eprintln!("open {path}: {e}");
        exit(1)
    });
    let mut p = [0i32; 2];
    check(unsafe { libc::pipe(p.as_mut_ptr()) }, "pipe");
    let mut kids = Vec::new();
    for _ in 0..n {
        let pid = check(unsafe { libc::fork() }, "fork");
        if pid == 0 {
            unsafe {
                libc::close(p[1]);
                let mut b = 0u8;
                libc::read(p[0], &raw mut b as *mut libc::c_void, 1);
                libc::_exit(0);
            }
        }
        kids.push(pid);
    }
    unsafe { libc::close(p[0]) };
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    unsafe { libc::close(p[1]) };
    for k in kids {
        unsafe { libc::waitpid(k, std::ptr::null_mut(), 0) };
    }
}

/// A PEM private key as a crypto library holds it once loaded: the DER,
/// and the raw private values in the form its arithmetic uses.
fn load_key(text: &[u8]) -> Vec<Vec<u8>> {
    use pkcs8::der::Decode;
    let pem = pem::parse(text).expect("a PEM key");
    let der = pem.contents().to_vec();
    let info = pkcs8::PrivateKeyInfo::from_der(&der).expect("a PKCS#8 key");
    let mut out = vec![der.clone()];
    if let Ok(k) = pkcs1::RsaPrivateKey::from_der(info.private_key) {
        for v in [
            k.private_exponent,
            k.prime1,
            k.prime2,
            k.exponent1,
            k.exponent2,
            k.coefficient,
        ] {
            // Big-endian bytes to 64-bit limbs, least significant first.
            let be = v.as_bytes();
            let mut limbs: Vec<u64> = be
                .rchunks(8)
                .map(|c| c.iter().fold(0u64, |a, &b| a << 8 | b as u64))
                .collect();
            limbs.push(0);
            out.push(limbs.iter().flat_map(|l| l.to_le_bytes()).collect());
        }
    } else if let Ok(seed) = pkcs8::der::asn1::OctetStringRef::from_der(info.private_key) {
        out.push(seed.as_bytes().to_vec());
    }
    out
}

/// Crashes with a real SIGSEGV (a store through a null pointer) while
/// `held` is live.
#[inline(never)]
fn crash_holding_keys(held: &[Vec<u8>]) -> ! {
    std::hint::black_box(held);
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        std::ptr::write_volatile(
            std::hint::black_box(std::ptr::null_mut::<u64>()),
            held.len() as u64,
        );
    }
    exit(1)
}

/// RLIMIT_CORE raised to unlimited, so the kernel dumps whatever the
/// core_pattern.
fn unlimited_core() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    check(
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &lim) },
        "setrlimit",
    );
}
