//! Decoding of ring-buffer records into owned events. Defensive: the header
//! is checked first, then the length for its kind; anything else is an error
//! that the caller counts and skips.

use std::{
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use sensor_common::{
    ARG_BUF, CMDLINE_BUF, COMM_LEN, DeniedEvent, DumpConfigEvent, EventKind, ExecEvent, ExitEvent,
    FdAccessEvent, FileCloseEvent, FileWriteEvent, ForkEvent, Header, KPath, MemAccessEvent,
    NetSendEvent, OpenEvent, PATH_BUF, PATH_COMPLETE, PATH_TRUNCATED, PathChangeEvent, RenameEvent,
    SignalEvent, Taint,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {got} bytes, expected {want}")]
    BadSize {
        kind: EventKind,
        got: usize,
        want: usize,
    },
}

impl DecodeError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short(_) => "short",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::BadSize { .. } => "bad_size",
        }
    }
}

/// Who did it, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub ts_boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRecord {
    pub task: Task,
    pub failed: bool,
    pub ret: i64,
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub flags: u32,
    pub dfd: i32,
    pub source: u32,
    pub matched: u32,
    pub watch_id: u32,
    pub name_rules: u32,
    /// The path argument as passed, if read.
    pub arg: Option<String>,
    /// Path rebuilt from the dentry (success only).
    pub path: Option<String>,
    pub path_truncated: bool,
    /// For an open of a /proc/<pid>/ file: its PROC_* value, else 0.
    pub proc_file: u32,
    /// The inode's i_generation, f_mode, owner uid and size (success only).
    pub igen: u32,
    pub fmode: u32,
    pub owner: u32,
    pub size: i64,
}

impl OpenRecord {
    /// This open created the file.
    pub fn created(&self) -> bool {
        !self.failed && self.fmode & sensor_common::FMODE_CREATED != 0
    }
}

/// A cross-process memory access (ptrace, process_vm_*, pidfd_getfd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemRecord {
    pub task: Task,
    /// MEM_* value.
    pub op: u32,
    pub ret: i64,
    /// ptrace request, or the pidfd of pidfd_getfd.
    pub request: u64,
    /// ptrace addr, or the target fd of pidfd_getfd.
    pub arg: u64,
    /// Target pid/tid (0: resolve from the pidfd).
    pub target: u32,
    pub target_protected: bool,
}

/// A dump-producing signal sent to another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRecord {
    pub sender: Task,
    pub sig: u32,
    pub target: u32,
    pub code: i32,
    pub result: i32,
}

/// A change that enables or redirects core dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpConfigRecord {
    pub task: Task,
    pub ret: i64,
    pub value: u64,
    /// DCFG_* value.
    pub what: u32,
    pub target: u32,
}

/// A tainted process's first write to a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub task: Task,
    pub taint: Taint,
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub fd: i32,
    /// VIA_* value.
    pub via: u32,
    pub bytes: i64,
    /// The written inode's i_generation.
    pub igen: u32,
    /// The writer created the file with the open it writes through.
    pub created: bool,
    pub path: Option<String>,
    pub path_truncated: bool,
}

/// A tainted process closed a file it had written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRecord {
    pub task: Task,
    pub dev: u32,
    pub ino: u64,
    pub igen: u32,
    pub fd: i32,
    /// The file's size at the close.
    pub size: i64,
    /// Bytes the process wrote to it since its first reported write.
    pub written: u64,
}

/// A tainted process's first send on a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    pub task: Task,
    pub taint: Taint,
    pub bytes: i64,
    pub fd: i32,
    pub via: u32,
    /// AF_* family, SOCK_* type, protocol number.
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub local: Option<SocketAddr>,
    /// The connected peer, or the address the send named.
    pub remote: Option<SocketAddr>,
}

/// A rename or link of a file whose name may be tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRecord {
    pub task: Task,
    /// PATH_OP_* value.
    pub op: u32,
    pub old_dfd: i32,
    pub new_dfd: i32,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec {
        task: Task,
        ppid: u32,
        start_ns: u64,
        /// Arguments (NUL separated in the kernel).
        argv: Vec<String>,
        exe: Option<String>,
    },
    Fork {
        parent: Task,
        child_pid: u32,
        child_start_ns: u64,
    },
    Exit {
        task: Task,
        exit_code: u32,
        /// /proc/<pid>/environ files it opened.
        environ_reads: u32,
    },
    /// Process `task.pid` (its thread-group leader) now has comm `comm`;
    /// `task` is the renaming thread, its `comm` the old name.
    Rename {
        task: Task,
        comm: String,
    },
    Open(OpenRecord),
    Mem(MemRecord),
    Signal(SignalRecord),
    DumpConfig(DumpConfigRecord),
    FileWrite(WriteRecord),
    FileClose(CloseRecord),
    NetSend(SendRecord),
    PathChange(PathRecord),
    Denied(DeniedRecord),
    FdAccess(FdAccessRecord),
}

/// A watched file read, written or mapped through an fd the process did
/// not open (BPF LSM backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdAccessRecord {
    /// The reader.
    pub task: Task,
    pub dev: u32,
    pub ino: u64,
    /// FDA_* value.
    pub op: u32,
    /// FDV_* value.
    pub how: u32,
    /// Tgid that opened the file (0: unknown).
    pub opener: u32,
    /// The syscall a received fd arrived by, -1 otherwise.
    pub syscall: i32,
    pub flags: u32,
    pub watch_id: u32,
    pub watch_flags: u32,
    pub igen: u32,
    pub owner: u32,
    pub path: Option<String>,
    pub path_truncated: bool,
}

/// An operation a BPF LSM hook denied (a rule in enforce mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedRecord {
    /// The actor (for core-dump: the process that was dumping).
    pub task: Task,
    /// ENF_* value.
    pub rule: u32,
    /// Target tgid (memory rules, forced-crash).
    pub target: u32,
    /// Signal (forced-crash) or ptrace access mode.
    pub arg: u32,
    /// The actor's syscall number, -1 when none.
    pub syscall: i32,
    pub dev: u32,
    pub ino: u64,
    pub watch_id: u32,
    pub flags: u32,
    /// The file (key-file-open, core-dump).
    pub path: Option<String>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Exec { .. } => EventKind::Exec,
            Event::Fork { .. } => EventKind::Fork,
            Event::Exit { .. } => EventKind::Exit,
            Event::Rename { .. } => EventKind::Rename,
            Event::Open(o) if o.failed => EventKind::KeyOpenFailed,
            Event::Open(o) if o.proc_file != 0 => EventKind::ProcFileOpen,
            Event::Open(_) => EventKind::KeyOpen,
            Event::Mem(_) => EventKind::MemAccess,
            Event::Signal(_) => EventKind::DumpSignal,
            Event::DumpConfig(_) => EventKind::DumpConfig,
            Event::FileWrite(_) => EventKind::FileWrite,
            Event::FileClose(_) => EventKind::FileClose,
            Event::NetSend(_) => EventKind::NetSend,
            Event::PathChange(_) => EventKind::PathChange,
            Event::Denied(_) => EventKind::Denied,
            Event::FdAccess(_) => EventKind::FdAccess,
        }
    }
}

fn read<T: Copy>(buf: &[u8]) -> T {
    assert!(buf.len() >= size_of::<T>());
    // SAFETY: length checked; T is a plain repr(C) record valid for any bits.
    unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const T) }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn task(h: &Header) -> Task {
    Task {
        ts_boot_ns: h.ts_boot_ns,
        pid: h.pid,
        tid: h.tid,
        uid: h.uid,
        gid: h.gid,
        cgroup_id: h.cgroup_id,
        comm: cstr(&h.comm[..COMM_LEN]),
    }
}

/// Turns a kernel path (components leaf first, each followed by '/') into
/// an absolute path. Returns (path, truncated).
pub fn kpath(p: &KPath) -> Option<(String, bool)> {
    kpath_parts(p.len, p.flags, &p.buf)
}

fn kpath_parts(len: u32, flags: u32, buf: &[u8]) -> Option<(String, bool)> {
    let len = (len as usize).min(buf.len());
    if len == 0 && flags & PATH_COMPLETE == 0 {
        return None;
    }
    let mut out = String::with_capacity(len + 1);
    for c in buf[..len]
        .split(|b| *b == b'/')
        .rev()
        .filter(|c| !c.is_empty())
    {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(c));
    }
    if out.is_empty() {
        out.push('/');
    }
    Some((out, flags & PATH_TRUNCATED != 0))
}

/// A field of type `T` at `off` in a record (length checked by the caller).
fn at<T: Copy>(buf: &[u8], off: usize) -> T {
    read(&buf[off..])
}

/// The KPath at `off` in a record, without copying the whole record.
fn kpath_at(buf: &[u8], off: usize) -> Option<(String, bool)> {
    let len: u32 = at(buf, off + offset_of!(KPath, len));
    let flags: u32 = at(buf, off + offset_of!(KPath, flags));
    let b = off + offset_of!(KPath, buf);
    kpath_parts(len, flags, &buf[b..b + PATH_BUF])
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    if buf.len() < size_of::<Header>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let h: Header = read(buf);
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let want = kind.record_size();
    if h.size as usize != want || buf.len() < want {
        return Err(DecodeError::BadSize {
            kind,
            got: buf.len().min(h.size as usize),
            want,
        });
    }
    Ok(match kind {
        EventKind::Exec => {
            let len: u32 = at(buf, offset_of!(ExecEvent, cmdline_len));
            let c = offset_of!(ExecEvent, cmdline);
            let n = (len as usize).min(CMDLINE_BUF);
            let argv = buf[c..c + n]
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Event::Exec {
                task: task(&h),
                ppid: at(buf, offset_of!(ExecEvent, ppid)),
                start_ns: at(buf, offset_of!(ExecEvent, start_ns)),
                argv,
                exe: kpath_at(buf, offset_of!(ExecEvent, exe)).map(|(p, _)| p),
            }
        }
        EventKind::Fork => {
            let e: ForkEvent = read(buf);
            Event::Fork {
                parent: task(&e.hdr),
                child_pid: e.child_pid,
                child_start_ns: e.child_start_ns,
            }
        }
        EventKind::Exit => {
            let e: ExitEvent = read(buf);
            Event::Exit {
                task: task(&e.hdr),
                exit_code: e.exit_code,
                environ_reads: e.environ_reads,
            }
        }
        EventKind::Rename => {
            let e: RenameEvent = read(buf);
            Event::Rename {
                task: task(&e.hdr),
                comm: cstr(&e.comm),
            }
        }
        EventKind::DumpConfig => {
            let e: DumpConfigEvent = read(buf);
            Event::DumpConfig(DumpConfigRecord {
                task: task(&e.hdr),
                ret: e.ret,
                value: e.value,
                what: e.what,
                target: e.target,
            })
        }
        EventKind::DumpSignal => {
            let e: SignalEvent = read(buf);
            Event::Signal(SignalRecord {
                sender: task(&e.hdr),
                sig: e.sig,
                target: e.target,
                code: e.code,
                result: e.result,
            })
        }
        EventKind::MemAccess => {
            let m: MemAccessEvent = read(buf);
            Event::Mem(MemRecord {
                task: task(&m.hdr),
                op: m.op,
                ret: m.ret,
                request: m.request,
                arg: m.arg,
                target: m.target,
                target_protected: m.target_protected != 0,
            })
        }
        EventKind::FileWrite => {
            let w: FileWriteEvent = read(buf);
            let (path, path_truncated) = match kpath(&w.path) {
                Some((p, t)) => (Some(p), t),
                None => (None, false),
            };
            Event::FileWrite(WriteRecord {
                task: task(&w.hdr),
                taint: w.taint,
                dev: w.dev,
                ino: w.ino,
                mode: w.mode,
                fd: w.fd,
                via: w.via,
                bytes: w.bytes,
                igen: w.igen,
                created: w.fmode & sensor_common::FMODE_CREATED != 0,
                path,
                path_truncated,
            })
        }
        EventKind::FileClose => {
            let c: FileCloseEvent = read(buf);
            Event::FileClose(CloseRecord {
                task: task(&c.hdr),
                dev: c.dev,
                ino: c.ino,
                igen: c.igen,
                fd: c.fd,
                size: c.size,
                written: c.written,
            })
        }
        EventKind::NetSend => {
            let n: NetSendEvent = read(buf);
            let dest = (n.dest_len > 0).then(|| sockaddr(&n.dest)).flatten();
            let (local, peer) = sock_addrs(&n);
            Event::NetSend(SendRecord {
                task: task(&n.hdr),
                taint: n.taint,
                bytes: n.bytes,
                fd: n.fd,
                via: n.via,
                family: n.family,
                sock_type: n.sock_type,
                protocol: n.protocol,
                local,
                remote: dest.or(peer),
            })
        }
        EventKind::PathChange => {
            let p: PathChangeEvent = read(buf);
            let old = (p.old_len as usize).min(ARG_BUF);
            let new = (p.new_len as usize).min(ARG_BUF);
            Event::PathChange(PathRecord {
                task: task(&p.hdr),
                op: p.op,
                old_dfd: p.old_dfd,
                new_dfd: p.new_dfd,
                old: cstr(&p.old[..old]),
                new: cstr(&p.new[..new]),
            })
        }
        EventKind::Denied => {
            let f = |o: usize| -> u32 { at(buf, o) };
            let h2 = task(&h);
            Event::Denied(DeniedRecord {
                task: h2,
                rule: f(offset_of!(DeniedEvent, rule)),
                target: f(offset_of!(DeniedEvent, target)),
                arg: f(offset_of!(DeniedEvent, arg)),
                syscall: at(buf, offset_of!(DeniedEvent, syscall)),
                dev: f(offset_of!(DeniedEvent, dev)),
                ino: at(buf, offset_of!(DeniedEvent, ino)),
                watch_id: f(offset_of!(DeniedEvent, watch_id)),
                flags: f(offset_of!(DeniedEvent, flags)),
                path: kpath_at(buf, offset_of!(DeniedEvent, path)).map(|(p, _)| p),
            })
        }
        EventKind::FdAccess => {
            let f = |o: usize| -> u32 { at(buf, o) };
            let (path, path_truncated) = match kpath_at(buf, offset_of!(FdAccessEvent, path)) {
                Some((p, t)) => (Some(p), t),
                None => (None, false),
            };
            Event::FdAccess(FdAccessRecord {
                task: task(&h),
                dev: f(offset_of!(FdAccessEvent, dev)),
                ino: at(buf, offset_of!(FdAccessEvent, ino)),
                op: f(offset_of!(FdAccessEvent, op)),
                how: f(offset_of!(FdAccessEvent, how)),
                opener: f(offset_of!(FdAccessEvent, opener)),
                syscall: at(buf, offset_of!(FdAccessEvent, syscall)),
                flags: f(offset_of!(FdAccessEvent, flags)),
                watch_id: f(offset_of!(FdAccessEvent, watch_id)),
                watch_flags: f(offset_of!(FdAccessEvent, watch_flags)),
                igen: f(offset_of!(FdAccessEvent, igen)),
                owner: f(offset_of!(FdAccessEvent, owner)),
                path,
                path_truncated,
            })
        }
        EventKind::KeyOpen | EventKind::KeyOpenFailed | EventKind::ProcFileOpen => {
            let f = |o: usize| -> u32 { at(buf, o) };
            let n = (f(offset_of!(OpenEvent, arg_len)) as usize).min(ARG_BUF);
            let a = offset_of!(OpenEvent, arg);
            let arg = (n > 0).then(|| cstr(&buf[a..a + n]));
            let failed = kind == EventKind::KeyOpenFailed;
            let (path, path_truncated) = if failed {
                (None, false)
            } else {
                match kpath_at(buf, offset_of!(OpenEvent, path)) {
                    Some((p, t)) => (Some(p), t),
                    None => (None, false),
                }
            };
            Event::Open(OpenRecord {
                task: task(&h),
                failed,
                ret: at(buf, offset_of!(OpenEvent, ret)),
                dev: f(offset_of!(OpenEvent, dev)),
                ino: at(buf, offset_of!(OpenEvent, ino)),
                mode: f(offset_of!(OpenEvent, mode)),
                flags: f(offset_of!(OpenEvent, flags)),
                dfd: at(buf, offset_of!(OpenEvent, dfd)),
                source: f(offset_of!(OpenEvent, source)),
                matched: f(offset_of!(OpenEvent, matched)),
                watch_id: f(offset_of!(OpenEvent, watch_id)),
                name_rules: f(offset_of!(OpenEvent, name_rules)),
                arg,
                path,
                path_truncated,
                proc_file: if kind == EventKind::ProcFileOpen {
                    f(offset_of!(OpenEvent, name_rules))
                } else {
                    0
                },
                igen: f(offset_of!(OpenEvent, igen)),
                fmode: f(offset_of!(OpenEvent, fmode)),
                owner: f(offset_of!(OpenEvent, owner)),
                size: at(buf, offset_of!(OpenEvent, size)),
            })
        }
    })
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A raw `struct sockaddr_in`/`sockaddr_in6` as user space passed it.
fn sockaddr(raw: &[u8; 32]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match family {
        AF_INET => {
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[8..24]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port))
        }
        _ => None,
    }
}

/// (local, peer) of an inet socket as the kernel holds them; the peer is
/// None when the socket is not connected.
fn sock_addrs(n: &NetSendEvent) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let ip = |b: &[u8; 16]| -> Option<IpAddr> {
        match n.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
            _ => None,
        }
    };
    let local = ip(&n.saddr).map(|a| SocketAddr::new(a, n.sport));
    let peer = ip(&n.daddr)
        .filter(|_| n.dport != 0)
        .map(|a| SocketAddr::new(a, n.dport));
    (local, peer)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use sensor_common::{MATCH_INODE, SRC_OPENAT};

    pub fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) value.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    pub fn header(kind: EventKind, pid: u32) -> Header {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        Header {
            kind: kind as u32,
            size: kind.record_size() as u32,
            ts_boot_ns: 5,
            pid,
            tid: pid,
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            comm,
        }
    }

    pub fn kpath_of(path: &str) -> KPath {
        KPath::from_path(path)
    }

    pub fn open_event(pid: u32, path: &str, ino: u64) -> OpenEvent {
        // SAFETY: all-zero is valid for this plain record.
        let mut e: OpenEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::KeyOpen, pid);
        e.ret = 3;
        e.ino = ino;
        e.dev = (8 << 20) | 1;
        e.mode = 0o100600;
        e.source = SRC_OPENAT;
        e.matched = MATCH_INODE;
        e.path = kpath_of(path);
        e.arg[..path.len()].copy_from_slice(path.as_bytes());
        e.arg_len = path.len() as u32;
        e
    }

    #[test]
    fn open_round_trip() {
        let e = open_event(42, "/etc/ssl/private/server.key", 77);
        let Event::Open(o) = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(o.task.pid, 42);
        assert_eq!(o.task.comm, "test");
        assert_eq!(o.ino, 77);
        assert_eq!(o.path.as_deref(), Some("/etc/ssl/private/server.key"));
        assert_eq!(o.arg.as_deref(), Some("/etc/ssl/private/server.key"));
        assert!(!o.failed);
    }

    #[test]
    fn fd_access_round_trip() {
        use sensor_common::{FDA_READ, FDV_RECEIVED, WATCH_SELF};
        // SAFETY: all-zero is valid for this plain record.
        let mut e: FdAccessEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::FdAccess, 51);
        e.ino = 77;
        e.dev = (8 << 20) | 1;
        e.op = FDA_READ;
        e.how = FDV_RECEIVED;
        e.opener = 50;
        e.syscall = 47;
        e.watch_id = 2;
        e.watch_flags = WATCH_SELF;
        e.path = kpath_of("/etc/ssl/private/ca.key");
        let Event::FdAccess(r) = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!((r.task.pid, r.opener, r.syscall), (51, 50, 47));
        assert_eq!(
            (r.op, r.how, r.ino, r.watch_id),
            (FDA_READ, FDV_RECEIVED, 77, 2)
        );
        assert_eq!(r.path.as_deref(), Some("/etc/ssl/private/ca.key"));
        let b = bytes_of(&e);
        assert!(matches!(
            decode(&b[..b.len() - 8]),
            Err(DecodeError::BadSize { .. })
        ));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut h = header(EventKind::Exit, 1);
        h.kind = 999;
        let mut b = bytes_of(&h);
        b.resize(200, 0);
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(999)));
        let e = open_event(1, "/x", 1);
        let b = bytes_of(&e);
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::BadSize { .. })
        ));
        let mut h = header(EventKind::Exit, 1);
        h.size = 3;
        let mut b = bytes_of(&h);
        b.resize(64, 0);
        assert!(matches!(decode(&b), Err(DecodeError::BadSize { .. })));
    }

    #[test]
    fn exec_argv() {
        // SAFETY: all-zero is valid for this plain record.
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::Exec, 9);
        let cmd = b"cat\0/etc/shadow\0";
        e.cmdline[..cmd.len()].copy_from_slice(cmd);
        e.cmdline_len = cmd.len() as u32;
        e.exe = kpath_of("/usr/bin/cat");
        let Event::Exec { argv, exe, .. } = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(argv, vec!["cat", "/etc/shadow"]);
        assert_eq!(exe.as_deref(), Some("/usr/bin/cat"));
    }

    #[test]
    fn rename_round_trip() {
        let mut comm = [0u8; COMM_LEN];
        comm[..7].copy_from_slice(b"signerd");
        let mut e = RenameEvent {
            hdr: header(EventKind::Rename, 9),
            comm,
        };
        e.hdr.tid = 10;
        let b = bytes_of(&e);
        let Event::Rename { task, comm } = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!((task.pid, task.tid, task.comm.as_str()), (9, 10, "test"));
        assert_eq!(comm, "signerd");
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::BadSize { .. })
        ));
        // A full 16-byte name without its NUL stays within the record.
        e.comm = *b"0123456789abcdef";
        let Event::Rename { comm, .. } = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(comm, "0123456789abcdef");
    }

    #[test]
    fn kpath_root_and_truncation() {
        let mut p = kpath_of("/");
        assert_eq!(kpath(&p), Some(("/".to_string(), false)));
        p.flags = PATH_TRUNCATED;
        p.len = 0;
        assert_eq!(kpath(&p), None);
    }
}
