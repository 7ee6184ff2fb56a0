//! Key agents' sockets (`agent-socket-use`): a unix socket bound by a key
//! agent (ssh-agent, gpg-agent, a PKCS#11 proxy, ...) signs with
//! keys that never leave the agent, for whoever connects to it.

use crate::{Header, InodeKey, header::record};

/// `AgentSocketEvent::op`: an agent bound a unix socket (the kernel put it
/// in `AGENT_SOCKS`).
pub const AGENT_BIND: u32 = 1;
/// A process connected to an agent's socket, not as the agent's owner
/// (another uid or another login uid).
pub const AGENT_CONNECT: u32 = 2;

/// Agent programs by executable (dev, inode): at most this many.
pub const AGENT_EXES_MAX: u32 = 64;
/// Agent sockets watched at once.
pub const AGENT_SOCKS_MAX: u32 = 4096;

/// Login uid when the kernel has none (not set, or no audit support).
pub const NO_LOGINUID: u32 = u32::MAX;

/// `AgentSock::igen` of a socket user space found (it cannot read the
/// file's i_generation): any generation matches.
pub const IGEN_ANY: u32 = u32::MAX;

/// Value of `AGENT_SOCKS` (key: the socket file's (dev, inode)): who bound
/// it, so that the kernel reports only connections by someone else.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSock {
    /// The agent's process (tgid) at bind.
    pub tgid: u32,
    /// Its uid and login uid (`NO_LOGINUID` when unknown).
    pub uid: u32,
    pub loginuid: u32,
    /// The socket file's i_generation at bind: an inode number reused by
    /// another file after the socket's removal is not the agent's.
    pub igen: u32,
}
const _: () = assert!(core::mem::size_of::<AgentSock>() == 16);

/// Bytes of a `struct sockaddr_un`'s sun_path.
pub const SUN_PATH: usize = 108;

/// A key agent's unix socket bound, or connected to by another principal.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct AgentSocketEvent {
    pub hdr: Header,
    /// The socket file (dev, inode).
    pub sock: InodeKey,
    /// `AGENT_BIND` or `AGENT_CONNECT`.
    pub op: u32,
    /// The descriptor bound or connected.
    pub fd: i32,
    /// The agent's `AgentSock` (at bind: the caller's own).
    pub agent: AgentSock,
    /// The caller's login uid (`NO_LOGINUID` when unknown).
    pub loginuid: u32,
    /// Bytes of `path` the caller passed (sun_path, up to its NUL).
    pub path_len: u32,
    /// sun_path as the caller passed it (relative, or through a symlink,
    /// as it was given: the socket is `sock`).
    pub path: [u8; SUN_PATH],
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<AgentSocketEvent>() == 56 + 16 + 8 + 16 + 8 + 112);
record!(AgentSocketEvent: AgentSocket, Critical);
