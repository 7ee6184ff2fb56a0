//! What an open is allowed and what it may do: the predicates the open
//! programs (open.rs) and the verdict cache (verdict.rs) decide with.

use sensor_common::{
    ALLOW_ANY_KEY, FMODE_CREATED, FOLD_MODE_ACC, FOLD_MODE_CREAT, FOLD_MODE_CREATED,
    FOLD_MODE_PATH, FOLD_MODE_TRUNC, InodeKey, MATCH_INODE, MATCH_PARENT, MATCH_TRACKED,
};

use crate::{kptr::FilePtr, maps::allowed, vfs::O_PATH};

const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

/// `FoldKey::mode` of an open: what it may do to the file.
#[inline(always)]
pub(super) fn fold_mode(f_flags: u32, fmode: u32) -> u32 {
    let mut m = f_flags & FOLD_MODE_ACC;
    if f_flags & O_PATH != 0 {
        m |= FOLD_MODE_PATH;
    }
    if f_flags & O_CREAT != 0 {
        m |= FOLD_MODE_CREAT;
    }
    if f_flags & O_TRUNC != 0 {
        m |= FOLD_MODE_TRUNC;
    }
    if fmode & FMODE_CREATED != 0 {
        m |= FOLD_MODE_CREATED;
    }
    m
}

/// May this open change the file: opened for writing, truncated or
/// created by it?
#[inline(always)]
pub(super) fn may_change(file: FilePtr) -> bool {
    let f_flags = file.flags().unwrap_or(0);
    let fmode = file.mode().unwrap_or(0);
    f_flags & O_PATH == 0
        && (f_flags & 3 != 0 || f_flags & O_TRUNC != 0 || fmode & FMODE_CREATED != 0)
}

/// Is the current executable allowed the key it opened (tracked dumps
/// and copies are never: `[[allow]] dumps` is a user-space allowance)?
#[inline(always)]
pub(super) fn key_allowed(matched: u32, watch_id: u32, exe_ok: bool, exe: &InodeKey) -> bool {
    if matched & MATCH_TRACKED != 0 {
        return false;
    }
    exe_ok && (allowed(exe, ALLOW_ANY_KEY, None) || allowed(exe, watch_id, None))
}

/// A non-root process reading a file it owns that only a key-name pattern
/// matched (not a configured key path, not a tracked file): a user's own
/// key (ssh reading ~/.ssh/id_ed25519), not followed.
#[inline(always)]
pub(super) fn own_key(matched: u32, owner: u32) -> bool {
    if matched & (MATCH_INODE | MATCH_PARENT | MATCH_TRACKED) != 0 {
        return false;
    }
    let uid = aya_ebpf::helpers::bpf_get_current_uid_gid() as u32;
    uid != 0 && uid == owner
}
