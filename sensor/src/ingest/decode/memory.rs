//! Memory records (`sensor_common::memory`): cross-process memory access,
//! dump-producing signals and core-dump configuration changes.

use sensor_common::{
    AgentSocketEvent, DumpConfigEvent, KernelReaderEvent, MemAccessEvent, SignalEvent, SysctlEvent,
};

use super::{Task, cstr, read, task};

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
    /// Target pid/tid (0: resolve from the pidfd). The kernel resolves a
    /// thread id of a protected process to its tgid (`tid` then says which
    /// thread the caller named).
    pub target: u32,
    pub target_protected: bool,
    /// The thread id the caller named, when the kernel resolved it to
    /// another tgid (`target`); 0 otherwise.
    pub tid: u32,
}

/// A dump-producing signal sent to another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRecord {
    pub sender: Task,
    pub sig: u32,
    pub target: u32,
    pub code: i32,
    pub result: i32,
    /// `SIG_DISP_*`: what the target does with the signal.
    pub disposition: u32,
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

/// Code loaded into the kernel, or other processes' user data sampled
/// (`KR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelReaderRecord {
    pub task: Task,
    pub ret: i64,
    /// KR_* value.
    pub what: u32,
    pub arg: u64,
    /// The file loaded: (kernel dev, inode), (0, 0) when none.
    pub file: (u32, u64),
    pub detail: u32,
    pub detail2: u32,
    pub target: i32,
    pub target_tgid: u32,
    /// bpf, perf: read from the kernel's object, not the caller's attr.
    pub verified: bool,
    pub name: String,
    /// The file loaded, as the kernel rebuilt its path (and whether it was
    /// cut short).
    pub path: Option<(String, bool)>,
}

pub(super) fn kernel_reader(buf: &[u8]) -> KernelReaderRecord {
    let e: KernelReaderEvent = read(buf);
    KernelReaderRecord {
        task: task(&e.hdr),
        ret: e.ret,
        what: e.what,
        arg: e.arg,
        file: (e.file.dev, e.file.ino),
        detail: e.detail,
        detail2: e.detail2,
        target: e.target,
        target_tgid: e.target_tgid,
        verified: e.verified != 0,
        name: cstr(&e.name),
        path: super::kpath(&e.path),
    }
}

/// A sysctl write: its name as the kernel gives it ("kernel/yama/ptrace_scope"),
/// the value in force and the value written (None when the kernel could
/// not give it whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlRecord {
    pub task: Task,
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

pub(super) fn sysctl(buf: &[u8]) -> SysctlRecord {
    let e: SysctlEvent = read(buf);
    let text = |len: i32, bytes: &[u8]| (len >= 0).then(|| cstr(bytes));
    SysctlRecord {
        task: task(&e.hdr),
        name: cstr(&e.name),
        old: text(e.old_len, &e.old),
        new: text(e.new_len, &e.new),
    }
}

pub(super) fn mem_access(buf: &[u8]) -> MemRecord {
    let m: MemAccessEvent = read(buf);
    MemRecord {
        task: task(&m.hdr),
        op: m.op,
        ret: m.ret,
        request: m.request,
        arg: m.arg,
        target: m.target,
        target_protected: m.target_protected != 0,
        tid: m.tid,
    }
}

pub(super) fn signal(buf: &[u8]) -> SignalRecord {
    let e: SignalEvent = read(buf);
    SignalRecord {
        sender: task(&e.hdr),
        sig: e.sig,
        target: e.target,
        code: e.code,
        result: e.result,
        disposition: e.disposition,
    }
}

pub(super) fn dump_config(buf: &[u8]) -> DumpConfigRecord {
    let e: DumpConfigEvent = read(buf);
    DumpConfigRecord {
        task: task(&e.hdr),
        ret: e.ret,
        value: e.value,
        what: e.what,
        target: e.target,
    }
}

/// A key agent's socket bound, or connected to by another principal
/// (`sensor_common::AgentSocketEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSocketRecord {
    pub task: Task,
    /// AGENT_BIND or AGENT_CONNECT.
    pub op: u32,
    pub fd: i32,
    /// The socket file: (kernel dev, inode).
    pub sock: (u32, u64),
    /// Who bound it: tgid, uid, login uid (None when unknown).
    pub agent_pid: u32,
    pub agent_uid: u32,
    pub agent_loginuid: Option<u32>,
    /// The caller's login uid.
    pub loginuid: Option<u32>,
    /// sun_path as the caller passed it.
    pub path: String,
}

pub(super) fn agent_socket(buf: &[u8]) -> AgentSocketRecord {
    let e: AgentSocketEvent = read(buf);
    let login = |l: u32| (l != sensor_common::NO_LOGINUID).then_some(l);
    let n = (e.path_len as usize).min(e.path.len());
    AgentSocketRecord {
        task: task(&e.hdr),
        op: e.op,
        fd: e.fd,
        sock: (e.sock.dev, e.sock.ino),
        agent_pid: e.agent.tgid,
        agent_uid: e.agent.uid,
        agent_loginuid: login(e.agent.loginuid),
        loginuid: login(e.loginuid),
        path: cstr(&e.path[..n]),
    }
}

/// A kernel key read by another principal, or another uid's persistent
/// keyring taken (`sensor_common::KeyringEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringRecord {
    pub task: Task,
    /// KEYRING_READ or KEYRING_PERSISTENT.
    pub op: u32,
    pub ret: i64,
    /// The key's serial (a read; the keyring's, a persistent one taken).
    pub serial: i32,
    /// The key's owner, or the uid whose persistent keyring was asked for.
    pub owner: u32,
    pub fsuid: u32,
    pub loginuid: Option<u32>,
    pub ktype: String,
    pub desc: String,
}

pub(super) fn keyring(buf: &[u8]) -> KeyringRecord {
    let e: sensor_common::KeyringEvent = read(buf);
    KeyringRecord {
        task: task(&e.hdr),
        op: e.op,
        ret: e.ret,
        serial: e.serial,
        owner: e.owner,
        fsuid: e.fsuid,
        loginuid: (e.loginuid != sensor_common::NO_LOGINUID).then_some(e.loginuid),
        ktype: cstr(&e.ktype),
        desc: cstr(&e.desc),
    }
}
