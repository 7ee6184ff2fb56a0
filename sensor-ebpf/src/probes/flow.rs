//! Following tracked material out of a process.
//!
//! A process is *tainted* when it opens a tracked file for reading (a key,
//! a registered dump or a derived copy: see `open.rs`), reads or attaches to
//! a protected process's memory (`memory.rs`), reads a pipe a tainted
//! process wrote, or is the core_pattern pipe helper (`process.rs`).
//! Children inherit the taint at fork.
//!
//! The exit tracepoints of the write, send and in-kernel copy syscalls then
//! look the writer up in `TAINTED` (one hash lookup for everybody else) and
//! report the first write of each regular file (`FileWrite`), the first
//! send on each socket (`NetSend`), and taint the pipes it writes. The end
//! of the writer's descriptor of a reported file (close, close_range,
//! dup2/dup3 over it, io_uring's close: `close.rs`; its exit is user
//! space's) is reported too (`FileClose`), so user space scans it once it
//! is complete. Renames and links whose source's final component
//! names a tracked file are reported (`PathChange`) for user space to
//! resolve.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{
    ARG_BUF, FileWriteEvent, INSERT_FAIL_SENT, INSERT_FAIL_TAINTED_PIPES, INSERT_FAIL_WATCHED,
    INSERT_FAIL_WATCHED_NAMES, INSERT_FAIL_WRITTEN, InodeKey, LRU_SENT, LRU_TAINTED_PIPES,
    LRU_WRITTEN, NetSendEvent, PATH_BASE_KNOWN, PATH_IN_CODE_DIR, PATH_OP_LINK, PATH_OP_RENAME,
    PATH_OP_SYMLINK, PATH_OP_UNLINK, PathChangeEvent, TAINT_FILE, TAINT_PIPE, TAINT_STRONG,
    TRACKED_PENDING, Taint, VIA_CLONE, VIA_COPY_FILE_RANGE, VIA_IO_URING, VIA_MMAP, VIA_SEND,
    VIA_SENDFILE, VIA_SPLICE, VIA_WRITE, WATCH_IGEN, WATCH_SELF, WATCH_STRONG, WATCH_TRACKED,
    WatchEntry, WriteKey,
    x86_64::{
        NR_COPY_FILE_RANGE, NR_IOCTL, NR_LINK, NR_LINKAT, NR_MMAP, NR_PWRITE64, NR_PWRITEV,
        NR_PWRITEV2, NR_RENAME, NR_RENAMEAT, NR_RENAMEAT2, NR_SENDFILE, NR_SENDMMSG, NR_SENDMSG,
        NR_SENDTO, NR_SPLICE, NR_SYMLINK, NR_SYMLINKAT, NR_TEE, NR_UNLINK, NR_UNLINKAT,
        NR_VMSPLICE, NR_WRITE, NR_WRITEV,
    },
};

use crate::vfs::{S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK};
use crate::{
    emit::{emit, stage},
    kptr::{FilePtr, InodePtr, IoKiocbPtr, SocketPtr},
    maps::{
        PIPE_TAINT_TS, SENT, TAINTED_PIPES, WATCHED, WATCHED_NAMES, WRITTEN, acting_tgid,
        any_watch_entry, check_insert, lru_insert, note_writer,
    },
    probes::open_arg::{NewDir, arg_final_name, new_name_dir},
    syscall::{arg2, arg4, arg5, args3, sys_ret, tp_nr},
    taint::{is_tainted, next_gen, pipe_gate, pipe_read, taint_of},
    vfs::{dentry_name_key, fd_file},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_NOEXIST: u64 = 1;
const FICLONE: u64 = 0x4004_9409;
const FICLONERANGE: u64 = 0x4020_940d;
/// WRITTEN value of a file past the last generation: not reported.
pub(super) const NOT_FOLLOWED: u64 = u64::MAX;

// syscalls:sys_exit_read and sys_exit_readv (one program): (fd, ...)
#[tracepoint]
pub fn ks_exit_read(ctx: TracePointContext) -> u32 {
    let Some(tgid) = acting_tgid() else { return 0 };
    if sys_ret(&ctx) <= 0 || !pipe_gate(tgid) {
        return 0;
    }
    if let Some((fd, _, _)) = args3() {
        pipe_read(tgid, fd);
    }
    0
}

const PROT_WRITE: u64 = 2;
const MAP_SHARED: u64 = 1;

// One program, attached to the exit tracepoints of every sink syscall and
// dispatched on the syscall number (one verification instead of fourteen):
// write, pwrite64, writev, pwritev, pwritev2: (fd, ...);
// sendto(fd, buf, len, flags, dest_addr, addrlen), sendmsg(fd, msg, flags),
// sendmmsg(fd, msgvec, vlen, flags); sendfile64(out_fd, in_fd, ...);
// copy_file_range(fd_in, off_in, fd_out, ...); splice(fd_in, off_in,
// fd_out, ...); vmsplice(fd, ...): user memory into a pipe; tee(fd_in,
// fd_out, ...): pipe to pipe; ioctl(fd, FICLONE, src_fd) and
// ioctl(fd, FICLONERANGE, &range): a reflink copy shares the source's
// blocks without reading or writing them.
#[tracepoint]
pub fn ks_exit_sink(ctx: TracePointContext) -> u32 {
    match tp_nr(&ctx) {
        NR_WRITE | NR_PWRITE64 | NR_WRITEV | NR_PWRITEV | NR_PWRITEV2 => {
            on_sink_to(&ctx, VIA_WRITE, ArgFd::Di, None, Dest::None)
        }
        NR_SENDTO => on_sink_to(&ctx, VIA_SEND, ArgFd::Di, None, Dest::Sockaddr),
        NR_SENDMSG | NR_SENDMMSG => on_sink_to(&ctx, VIA_SEND, ArgFd::Di, None, Dest::Msghdr),
        NR_SENDFILE => on_sink_to(&ctx, VIA_SENDFILE, ArgFd::Di, Some(ArgFd::Si), Dest::None),
        NR_COPY_FILE_RANGE => on_sink_to(
            &ctx,
            VIA_COPY_FILE_RANGE,
            ArgFd::Dx,
            Some(ArgFd::Di),
            Dest::None,
        ),
        NR_SPLICE => on_sink_to(&ctx, VIA_SPLICE, ArgFd::Dx, Some(ArgFd::Di), Dest::None),
        NR_VMSPLICE => on_sink_to(&ctx, VIA_SPLICE, ArgFd::Di, None, Dest::None),
        NR_TEE => on_sink_to(&ctx, VIA_SPLICE, ArgFd::Si, Some(ArgFd::Di), Dest::None),
        NR_IOCTL => {
            let Some(tgid) = acting_tgid() else { return 0 };
            if !is_tainted(tgid) {
                return 0;
            }
            let Some((_, cmd, _)) = args3() else {
                return 0;
            };
            if cmd != FICLONE && cmd != FICLONERANGE {
                return 0;
            }
            on_sink_to(&ctx, VIA_CLONE, ArgFd::Di, None, Dest::None)
        }
        // mmap(addr, len, prot, flags, fd, off): a shared writable mapping
        // of a file writes it without a write syscall.
        NR_MMAP => {
            let Some(tgid) = acting_tgid() else { return 0 };
            let Some(taint) = taint_of(tgid) else {
                return 0;
            };
            if sys_ret(&ctx) < 0 {
                return 0;
            }
            let Some((_, len, prot)) = args3() else {
                return 0;
            };
            let flags = arg4().unwrap_or(0);
            if prot & PROT_WRITE == 0 || flags & MAP_SHARED == 0 {
                return 0;
            }
            let fd = arg5().unwrap_or(u64::MAX);
            let Some(file) = fd_file(fd) else { return 0 };
            sink_file(tgid, &taint, file, fd, VIA_MMAP, len as i64, Dest::None);
            0
        }
        _ => 0,
    }
}

#[derive(Clone, Copy)]
enum ArgFd {
    Di,
    Si,
    Dx,
}

#[inline(always)]
fn pick(args: (u64, u64, u64), which: ArgFd) -> u64 {
    match which {
        ArgFd::Di => args.0,
        ArgFd::Si => args.1,
        ArgFd::Dx => args.2,
    }
}

/// Where a send names its destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    None,
    /// sendto: the 5th argument.
    Sockaddr,
    /// sendmsg/sendmmsg: msg_name of the (first) msghdr, the 2nd argument.
    Msghdr,
}

/// Data left the current process through `out` (read from `input`, for the
/// in-kernel copies).
#[inline(always)]
fn on_sink_to(
    ctx: &TracePointContext,
    via: u32,
    out: ArgFd,
    input: Option<ArgFd>,
    dest: Dest,
) -> u32 {
    let Some(tgid) = acting_tgid() else { return 0 };
    let ret = sys_ret(ctx);
    // splice and tee return 0 at end of input; a clone returns 0 on success.
    if ret < 0 || (ret == 0 && via != VIA_CLONE) {
        return 0;
    }
    // Untainted writers (nearly every write on the host) stop here, after
    // one TAINTED lookup, unless a recent pipe taint may reach them
    // through `input` (then the taint is looked up after the pipe read,
    // which may have made it).
    let gate = input.is_some() && pipe_gate(tgid);
    let early = if gate {
        None
    } else {
        let Some(t) = taint_of(tgid) else { return 0 };
        Some(t)
    };
    let Some(args) = args3() else { return 0 };
    if gate && let Some(input) = input {
        pipe_read(tgid, pick(args, input));
    }
    let Some(taint) = early.or_else(|| taint_of(tgid)) else {
        return 0;
    };
    let fd = pick(args, out);
    let Some(file) = fd_file(fd) else { return 0 };
    sink_file(tgid, &taint, file, fd, via, ret, dest);
    0
}

/// A tainted process's data went into `file`: a regular file is reported
/// (once), a pipe tainted, a socket send reported (once).
#[inline(always)]
fn sink_file(tgid: u32, taint: &Taint, file: FilePtr, fd: u64, via: u32, ret: i64, dest: Dest) {
    // SAFETY: map values are live while the program runs.
    unsafe {
        let Some((key, inode)) = file.identity() else {
            return;
        };
        let mode = inode.mode().unwrap_or(0) as u32;
        match mode & S_IFMT {
            S_IFREG => wrote_file(tgid, taint, file, inode, key, mode, fd, via, ret),
            S_IFIFO => {
                if TAINTED_PIPES.get(inode.addr()).is_none() {
                    // Its reader is one generation further; past the last
                    // one, the pipe is marked not followed (flags 0), so
                    // the next writes stop here uncounted.
                    let mut t = *taint;
                    t.via_pid = tgid;
                    match next_gen(taint.generation) {
                        Some(g) => t.generation = g,
                        None => t.flags = 0,
                    }
                    check_insert(
                        lru_insert(&TAINTED_PIPES, LRU_TAINTED_PIPES, &inode.addr(), &t),
                        INSERT_FAIL_TAINTED_PIPES,
                    );
                    if t.flags == 0 {
                        return;
                    }
                }
                if let Some(ts) = PIPE_TAINT_TS.get_ptr_mut(0) {
                    *ts = bpf_ktime_get_boot_ns();
                }
            }
            S_IFSOCK => sent(tgid, taint, file, fd, via, ret, dest),
            _ => {}
        }
    }
}

/// An io_uring write or send completed (`res` bytes) in a tainted
/// process (or its io_uring worker, which shares its tgid).
#[inline(always)]
pub fn iou_sink(req: IoKiocbPtr, res: i32) {
    if let Some(file) = req.file() {
        iou_sink_file(file, res);
    }
}

/// `res` bytes of a tainted process went into `file` through io_uring (at
/// a completion, or at the submission of a request whose completion is
/// skipped: close.rs).
#[inline(always)]
pub fn iou_sink_file(file: FilePtr, res: i32) {
    let Some(tgid) = acting_tgid() else { return };
    let Some(taint) = taint_of(tgid) else {
        return;
    };
    sink_file(
        tgid,
        &taint,
        file,
        u64::MAX,
        VIA_IO_URING,
        res as i64,
        Dest::None,
    );
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn wrote_file(
    tgid: u32,
    taint: &Taint,
    file: FilePtr,
    inode: InodePtr,
    key: InodeKey,
    mode: u32,
    fd: u64,
    via: u32,
    ret: i64,
) {
    let wk = WriteKey {
        tgid,
        dev: key.dev,
        ino: key.ino,
    };
    // SAFETY: map values are live while the program runs; `ev` is the
    // staged record.
    unsafe {
        // Reported already: count the bytes for the close.
        if let Some(n) = WRITTEN.get_ptr_mut(wk) {
            if ret > 0 && *n != NOT_FOLLOWED {
                *n += ret as u64;
            }
            return;
        }
        // A file written from a protected process's memory (or by the core
        // pipe helper) is a dump: an origin, generation 0 like its writer.
        // Anything else is one generation further, unless that is past the
        // last one followed.
        let g = if taint.flags & (TAINT_FILE | TAINT_PIPE) == 0 {
            taint.generation
        } else {
            let Some(g) = next_gen(taint.generation) else {
                // Marked, so its next writes stop here uncounted.
                check_insert(
                    lru_insert(&WRITTEN, LRU_WRITTEN, &wk, &NOT_FOLLOWED),
                    INSERT_FAIL_WRITTEN,
                );
                return;
            };
            g
        };
        // A writer first: its closes are looked at from now on.
        note_writer(tgid);
        check_insert(
            lru_insert(
                &WRITTEN,
                LRU_WRITTEN,
                &wk,
                &if ret > 0 { ret as u64 } else { 0 },
            ),
            INSERT_FAIL_WRITTEN,
        );
        let igen: u32 = inode.generation().unwrap_or(0);
        // Tracked from now on (unless already watched, and not stale): a
        // `cp` of a dump started right after the dumper exits opens it
        // before user space could register it. User space replaces the
        // pending id with the tracked id, or removes the entry when the
        // write is no copy.
        // (A code-loading path's entry counts: it stays the open probes'.)
        if any_watch_entry(&key, inode).is_none() {
            // Its name too, for the rename and unlink filter: an `rm` right
            // after the copy is seen before user space registers it.
            if let Some(d) = file.dentry() {
                check_insert(
                    WATCHED_NAMES.insert(dentry_name_key(d), 1, 0),
                    INSERT_FAIL_WATCHED_NAMES,
                );
            }
            // A copy that no map entry follows: its readers are not
            // tainted until user space registers it (counted, warned).
            let r = WATCHED.insert(
                key,
                WatchEntry {
                    watch_id: TRACKED_PENDING,
                    // Its readers' taint is as strong as its writer's.
                    flags: WATCH_SELF
                        | WATCH_TRACKED
                        | WATCH_IGEN
                        | if taint.flags & TAINT_STRONG != 0 {
                            WATCH_STRONG
                        } else {
                            0
                        },
                    igen,
                    generation: g,
                },
                BPF_NOEXIST,
            );
            if r.is_ok() {
                crate::probes::verdict::bump();
            }
            check_insert(r, INSERT_FAIL_WATCHED);
        }
        let Some(rec) = stage::<FileWriteEvent>() else {
            return;
        };
        let ev = rec.ptr();
        (*ev).taint = *taint;
        (*ev).ino = key.ino;
        (*ev).dev = key.dev;
        (*ev).mode = mode;
        (*ev).fd = fd as i32;
        (*ev).via = via;
        (*ev).bytes = ret;
        (*ev).igen = igen;
        (*ev).fmode = file.mode().unwrap_or(0);
        file.read_path(&raw mut (*ev).path);
        rec.submit();
    }
}

#[inline(always)]
fn sent(tgid: u32, taint: &Taint, file: FilePtr, fd: u64, via: u32, ret: i64, dest: Dest) {
    // SAFETY: kernel and user memory read through bpf_probe_read_kernel/user
    // only (the destination into `dest`, 28 of its 32 bytes); `ev` is the
    // reserved record.
    unsafe {
        let Some(sock) = file.private_data() else {
            return;
        };
        let Some(sk) = SocketPtr::from_addr(sock as u64).sk() else {
            return;
        };
        let key = [tgid as u64, sk.addr()];
        if SENT.get(key).is_some() {
            return;
        }
        check_insert(lru_insert(&SENT, LRU_SENT, &key, &1), INSERT_FAIL_SENT);
        let Some(rec) = emit::<NetSendEvent>() else {
            return;
        };
        let ev = rec.ptr();
        (*ev).taint = *taint;
        (*ev).bytes = ret;
        (*ev).fd = fd as i32;
        (*ev).via = via;
        let family = sk.family().unwrap_or(0);
        (*ev).family = family;
        (*ev).sock_type = sk.sock_type().unwrap_or(0);
        (*ev).protocol = sk.protocol().unwrap_or(0);
        (*ev).sport = sk.num().unwrap_or(0);
        (*ev).dport = u16::from_be(sk.dport().unwrap_or(0));
        (*ev)._pad = [0; 3];
        (*ev).saddr = [0; 16];
        (*ev).daddr = [0; 16];
        if family == AF_INET {
            let s = sk.rcv_saddr().unwrap_or([0; 4]);
            let d = sk.daddr().unwrap_or([0; 4]);
            (*ev).saddr = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            (*ev).daddr = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        } else if family == AF_INET6 {
            (*ev).saddr = sk.v6_rcv_saddr().unwrap_or([0; 16]);
            (*ev).daddr = sk.v6_daddr().unwrap_or([0; 16]);
        }
        (*ev).dest_len = 0;
        (*ev)._pad2 = 0;
        (*ev).dest = [0; 32];
        // An unconnected datagram socket names its peer per call.
        if dest != Dest::None {
            let name = if dest == Dest::Sockaddr {
                arg5().unwrap_or(0)
            } else {
                let msg = arg2().unwrap_or(0);
                let mut p = 0u64;
                if msg != 0 {
                    generated::bpf_probe_read_user(
                        &raw mut p as *mut c_void,
                        8,
                        msg as *const c_void,
                    );
                }
                p
            };
            if name != 0
                && generated::bpf_probe_read_user(
                    (*ev).dest.as_mut_ptr() as *mut c_void,
                    28,
                    name as *const c_void,
                ) == 0
            {
                (*ev).dest_len = 28;
            }
        }
        rec.submit();
    }
}

// One program for rename(old, new), renameat(olddfd, old, newdfd, new),
// renameat2(olddfd, old, newdfd, new, flags), link(old, new),
// linkat(olddfd, old, newdfd, new, flags), unlink(path) and
// unlinkat(dfd, path, flags), dispatched on the number.
#[tracepoint]
pub fn ks_exit_pathchange(ctx: TracePointContext) -> u32 {
    match tp_nr(&ctx) {
        NR_RENAME => path_change(&ctx, PATH_OP_RENAME, false),
        NR_RENAMEAT | NR_RENAMEAT2 => path_change(&ctx, PATH_OP_RENAME, true),
        NR_LINK => path_change(&ctx, PATH_OP_LINK, false),
        NR_LINKAT => path_change(&ctx, PATH_OP_LINK, true),
        NR_UNLINK => path_change(&ctx, PATH_OP_UNLINK, false),
        NR_UNLINKAT => path_change(&ctx, PATH_OP_UNLINK, true),
        NR_SYMLINK => path_change(&ctx, PATH_OP_SYMLINK, false),
        NR_SYMLINKAT => path_change(&ctx, PATH_OP_SYMLINK, true),
        _ => 0,
    }
}

const AT_FDCWD: i32 = -100;

#[inline(always)]
fn path_change(ctx: &TracePointContext, op: u32, at: bool) -> u32 {
    if acting_tgid().is_none() {
        return 0;
    }
    let ret = sys_ret(ctx);
    if ret != 0 {
        return 0;
    }
    // SAFETY: user memory read through bpf_probe_read_user_str only, into
    // the ARG_BUF-byte `old` and `new` of the reserved record `ev`.
    unsafe {
        let Some((a0, a1, a2)) = args3() else {
            return 0;
        };
        let (old_dfd, old, new_dfd, new) = if op == PATH_OP_SYMLINK {
            // symlink(target, linkpath), symlinkat(target, newdirfd, linkpath).
            if at {
                (AT_FDCWD, a0, a1 as i32, a2)
            } else {
                (AT_FDCWD, a0, AT_FDCWD, a1)
            }
        } else if op == PATH_OP_UNLINK {
            if at {
                (a0 as i32, a1, AT_FDCWD, 0)
            } else {
                (AT_FDCWD, a0, AT_FDCWD, 0)
            }
        } else if at {
            let a3 = arg4().unwrap_or(0);
            (a0 as i32, a1, a2 as i32, a3)
        } else {
            (AT_FDCWD, a0, AT_FDCWD, a1)
        };
        // The old name's last component (the file moved, linked or
        // unlinked), else the new name's (a rename over a tracked file
        // ends that file).
        // Where the new name goes: a directory named like a code path's
        // (a file put in /etc/ld.so.conf.d under a new name), and the
        // directory itself for a bare name.
        let dir = if op == PATH_OP_UNLINK {
            NewDir {
                code: false,
                dev: 0,
                ino: 0,
            }
        } else {
            new_name_dir(new, new_dfd)
        };
        // A symlink's target is only a string: its new name alone counts.
        let old_named = op != PATH_OP_SYMLINK && arg_final_name(old).is_some();
        if !old_named && !dir.code && (new == 0 || arg_final_name(new).is_none()) {
            return 0;
        }
        let Some(rec) = emit::<PathChangeEvent>() else {
            return 0;
        };
        let ev = rec.ptr();
        (*ev).ret = ret;
        (*ev).op = op;
        (*ev).flags = if dir.code { PATH_IN_CODE_DIR } else { 0 };
        (*ev).base_dev = dir.dev;
        (*ev).base_ino = dir.ino;
        (*ev).base_flags = if dir.ino != 0 { PATH_BASE_KNOWN } else { 0 };
        (*ev).old_dfd = old_dfd;
        (*ev).new_dfd = new_dfd;
        (*ev).old_len = 0;
        let n = generated::bpf_probe_read_user_str(
            (*ev).old.as_mut_ptr() as *mut c_void,
            ARG_BUF as u32,
            old as *const c_void,
        );
        if n > 0 {
            (*ev).old_len = n as u32 - 1;
        }
        (*ev).new_len = 0;
        if new != 0 {
            let n = generated::bpf_probe_read_user_str(
                (*ev).new.as_mut_ptr() as *mut c_void,
                ARG_BUF as u32,
                new as *const c_void,
            );
            if n > 0 {
                (*ev).new_len = n as u32 - 1;
            }
        }
        rec.submit();
    }
    0
}
