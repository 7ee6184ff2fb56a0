//! Kernel keyrings (`keyring-read`): keys held by the kernel for a user
//! (Kerberos KEYRING ccaches, tokens, passphrases) read by another
//! principal.

use crate::{Header, header::record};

/// `KeyringEvent::op`: a key read (`keyctl read`/`print`/`pipe`) whose
/// owner is not the reader's file-system uid. From BPF LSM's
/// `key_permission` (the kernel already granted the read).
pub const KEYRING_READ: u32 = 1;
/// `keyctl get_persistent` of another uid's persistent keyring (which
/// then is the caller's to search and read). From the syscall's exit
/// tracepoint, failed attempts included.
pub const KEYRING_PERSISTENT: u32 = 2;

/// keyctl(2) commands the exit tracepoint looks at.
pub const KEYCTL_GET_PERSISTENT: u64 = 22;

/// Bytes of a key's type name and description kept.
pub const KEY_TYPE_LEN: usize = 16;
pub const KEY_DESC_LEN: usize = 64;

/// A key read by another principal, or another uid's persistent keyring
/// taken.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct KeyringEvent {
    pub hdr: Header,
    /// The syscall's result (persistent: the keyring's serial or -errno);
    /// 0 for a read (the permission was granted).
    pub ret: i64,
    /// `KEYRING_READ` or `KEYRING_PERSISTENT`.
    pub op: u32,
    /// The key's serial (read).
    pub serial: i32,
    /// The key's owner (read), or the uid whose persistent keyring was
    /// asked for.
    pub owner: u32,
    /// The caller's file-system uid (what key permissions check) and login
    /// uid (`NO_LOGINUID` when unknown).
    pub fsuid: u32,
    pub loginuid: u32,
    pub _pad: u32,
    /// The key's type name (`user`, `big_key`, `logon`, `keyring`, ...)
    /// and description, NUL-padded (read).
    pub ktype: [u8; KEY_TYPE_LEN],
    pub desc: [u8; KEY_DESC_LEN],
}
const _: () =
    assert!(core::mem::size_of::<KeyringEvent>() == 56 + 8 + 24 + KEY_TYPE_LEN + KEY_DESC_LEN);
record!(KeyringEvent: KeyringAccess, Critical);
