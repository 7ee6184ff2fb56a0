//! Key agents' sockets: a key agent (ssh-agent, gpg-agent, a PKCS#11
//! proxy: `[agents] exes`, by executable identity) signs for
//! whoever connects to its socket, with keys that never leave it. One
//! program on the exit tracepoints of bind and connect, dispatched on the
//! syscall number:
//! - bind: a unix socket an agent (or, with `[agents] protected`, a
//!   `[[protected]]` process) bound to a file goes into `AGENT_SOCKS`
//!   (by the socket file's (dev, inode), with the agent's uid and login
//!   uid) and is reported, so user space knows its path;
//! - connect: a connection whose peer is a socket in `AGENT_SOCKS`, made by
//!   a process of another uid or another login uid than the agent's, is
//!   reported (rule `agent-socket-use`). The socket is the one the kernel
//!   connected to, so a symlink, a relative path, a hard link or a path
//!   through /proc/PID/root is the same socket.

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{
    AGENT_BIND, AGENT_CONNECT, AgentSock, AgentSocketEvent, HOLDER_RULE, IGEN_ANY,
    INSERT_FAIL_AGENT_SOCKS, InodeKey, NO_LOGINUID,
    x86_64::{NR_BIND, NR_CONNECT},
};

use crate::{
    emit::emit,
    kptr::{SockPtr, SocketPtr, TaskPtr},
    maps::{AGENT_EXES, AGENT_SOCKS, PROTECTED, acting_tgid, check_insert},
    setting,
    syscall::{args3, sys_ret, tp_nr},
    vfs::{S_IFMT, S_IFSOCK, fd_file},
};

const AF_UNIX: u16 = 1;

/// The unix sock behind descriptor `fd` (None for anything else).
#[inline(always)]
fn unix_sock(fd: u64) -> Option<SockPtr> {
    let file = fd_file(fd)?;
    let mode = file.inode()?.mode()? as u32;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let sk = SocketPtr::from_addr(file.private_data()? as u64).sk()?;
    if sk.family()? != AF_UNIX {
        return None;
    }
    Some(sk)
}

// syscalls:sys_exit_bind and sys_exit_connect: (fd, sockaddr, addrlen).
#[tracepoint]
pub fn ks_exit_unix(ctx: TracePointContext) -> u32 {
    let Some(tgid) = acting_tgid() else { return 0 };
    if sys_ret(&ctx) != 0 {
        return 0;
    }
    let nr = tp_nr(&ctx);
    if nr != NR_BIND && nr != NR_CONNECT {
        return 0;
    }
    let Some((fd, addr, _)) = args3() else {
        return 0;
    };
    let Some(sk) = unix_sock(fd) else { return 0 };
    let task = TaskPtr::current();
    let (op, dentry) = if nr == NR_BIND {
        // Only an agent's own bind (or, with `[agents] protected`, a
        // `[[protected]]` process's): a socket file bound by anybody else
        // is nobody's key oracle.
        let Some(exe) = task.exe() else { return 0 };
        // SAFETY: only whether the key is there is read.
        let agent = unsafe { AGENT_EXES.get(exe) }.is_some();
        let protected = setting!(agent_protected) != 0
            // SAFETY: a plain value copied out of the map.
            && unsafe { PROTECTED.get(tgid) }.is_some_and(|r| *r != HOLDER_RULE);
        if !agent && !protected {
            return 0;
        }
        (AGENT_BIND, sk.unix_path())
    } else {
        (AGENT_CONNECT, sk.unix_peer().and_then(|p| p.unix_path()))
    };
    let Some(inode) = dentry.and_then(|d| d.inode()) else {
        return 0;
    };
    let (Some(ino), Some(dev)) = (inode.ino(), inode.dev()) else {
        return 0;
    };
    let key = InodeKey { dev, _pad: 0, ino };
    // A connect to a socket no agent bound (nearly every one) ends here,
    // before the caller's identity is read.
    let known = if op == AGENT_CONNECT {
        // SAFETY: a plain value copied out of the map.
        let Some(a) = (unsafe { AGENT_SOCKS.get(key) }).copied() else {
            return 0;
        };
        Some(a)
    } else {
        None
    };
    let uid = bpf_get_current_uid_gid() as u32;
    let loginuid = task.loginuid().unwrap_or(NO_LOGINUID);
    let igen = inode.generation().unwrap_or(0);
    let agent = if let Some(a) = known {
        // Another file at a reused inode number, the agent itself, or its
        // owner: the same uid, in the same login or where either has none
        // (an agent systemd --user started has no login uid).
        if (a.igen != IGEN_ANY && a.igen != igen)
            || a.tgid == tgid
            || (a.uid == uid
                && (a.loginuid == loginuid || a.loginuid == NO_LOGINUID || loginuid == NO_LOGINUID))
        {
            return 0;
        }
        a
    } else {
        let a = AgentSock {
            tgid,
            uid,
            loginuid,
            igen,
        };
        check_insert(AGENT_SOCKS.insert(key, a, 0), INSERT_FAIL_AGENT_SOCKS);
        a
    };
    let Some(rec) = emit::<AgentSocketEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; the path is read from user
    // memory through bpf_probe_read_user_str_bytes (a fault leaves it
    // empty).
    unsafe {
        (*ev).sock = key;
        (*ev).op = op;
        (*ev).fd = fd as i32;
        (*ev).agent = agent;
        (*ev).loginuid = loginuid;
        (*ev)._pad = [0; 4];
        // sun_path after the 2-byte family; an abstract name (a leading
        // NUL) reads as empty.
        let path = &mut (*ev).path;
        let n = match bpf_probe_read_user_str_bytes((addr + 2) as *const u8, path) {
            Ok(s) => s.len() as u32,
            Err(_) => {
                path[0] = 0;
                0
            }
        };
        (*ev).path_len = n;
    }
    rec.submit();
    0
}
