//! Kernel keyrings (`keyring-read`): a key the kernel holds for one user
//! (a Kerberos KEYRING ccache, a token, a passphrase) read by another.
//! - BPF LSM `key_permission` (where BPF LSM runs): a read the kernel
//!   granted (`KEY_NEED_READ`: keyctl read, print, pipe) of a key whose
//!   owner is not the reader's file-system uid: root reading a user's key
//!   it came to possess (a persistent keyring it took, a session it
//!   joined). The key's serial, owner, type and description go along.
//! - The exit tracepoint of keyctl: `KEYCTL_GET_PERSISTENT` of another
//!   uid's persistent keyring (which the caller may then search and
//!   read), failed attempts included.
//!
//! User space decides (`detect/keyring.rs`).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_kernel, generated},
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use sensor_common::{
    KEY_DESC_LEN, KEY_TYPE_LEN, KEYCTL_GET_PERSISTENT, KEYRING_PERSISTENT, KEYRING_READ,
    KeyringEvent, NO_LOGINUID, x86_64::NR_KEYCTL,
};

use crate::{
    emit::emit,
    kptr::{CredPtr, KeyPtr, TaskPtr},
    maps::acting_tgid,
    off,
    syscall::{args3, sys_ret, tp_nr},
};

/// security_key_permission(key_ref_t key_ref, const struct cred *cred,
/// enum key_need_perm need_perm): reached only when the key's own
/// permissions granted the access.
#[lsm(hook = "key_permission")]
pub fn ks_lsm_key_permission(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let need: u32 = ctx.arg(2);
    if need != off!(key_need_read) || need == 0 {
        return 0;
    }
    if acting_tgid().is_none() {
        return 0;
    }
    // `key_ref_t` points to an opaque struct, whose BTF the verifier
    // refuses a direct context read of: read the argument slot instead.
    let Ok(key_ref) = (unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }) else {
        return 0;
    };
    let cred: u64 = ctx.arg(1);
    let key = KeyPtr::from_ref(key_ref);
    let Some(owner) = key.uid() else { return 0 };
    let Some(fsuid) = CredPtr::from_addr(cred).fsuid() else {
        return 0;
    };
    if owner == fsuid {
        return 0;
    }
    let Some(rec) = emit::<KeyringEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record; kernel strings read with
    // bpf_probe_read_kernel_str into its arrays, bounded by their size.
    unsafe {
        (*ev).ret = 0;
        (*ev).op = KEYRING_READ;
        (*ev).serial = key.serial().unwrap_or(0);
        (*ev).owner = owner;
        (*ev).fsuid = fsuid;
        (*ev).loginuid = TaskPtr::current().loginuid().unwrap_or(NO_LOGINUID);
        (*ev)._pad = 0;
        (*ev).ktype = [0; KEY_TYPE_LEN];
        (*ev).desc = [0; KEY_DESC_LEN];
        if let Some(t) = key.type_name() {
            generated::bpf_probe_read_kernel_str(
                (*ev).ktype.as_mut_ptr() as *mut c_void,
                KEY_TYPE_LEN as u32,
                t as *const c_void,
            );
        }
        if let Some(d) = key.description() {
            generated::bpf_probe_read_kernel_str(
                (*ev).desc.as_mut_ptr() as *mut c_void,
                KEY_DESC_LEN as u32,
                d as *const c_void,
            );
        }
    }
    rec.submit();
    0
}

// syscalls:sys_exit_keyctl: keyctl(cmd, arg2, arg3, ...).
#[tracepoint]
pub fn ks_exit_keyctl(ctx: TracePointContext) -> u32 {
    if tp_nr(&ctx) != NR_KEYCTL || acting_tgid().is_none() {
        return 0;
    }
    let Some((cmd, uid, _)) = args3() else {
        return 0;
    };
    if cmd != KEYCTL_GET_PERSISTENT {
        return 0;
    }
    // uid_t -1: the caller's own.
    let uid = uid as u32;
    let own = bpf_get_current_uid_gid() as u32;
    if uid == u32::MAX || uid == own {
        return 0;
    }
    let ret = sys_ret(&ctx);
    let Some(rec) = emit::<KeyringEvent>() else {
        return 0;
    };
    let ev = rec.ptr();
    // SAFETY: `ev` is the reserved record.
    unsafe {
        (*ev).ret = ret;
        (*ev).op = KEYRING_PERSISTENT;
        (*ev).serial = if ret > 0 { ret as i32 } else { 0 };
        (*ev).owner = uid;
        (*ev).fsuid = own;
        (*ev).loginuid = TaskPtr::current().loginuid().unwrap_or(NO_LOGINUID);
        (*ev)._pad = 0;
        (*ev).ktype = [0; KEY_TYPE_LEN];
        (*ev).desc = [0; KEY_DESC_LEN];
    }
    rec.submit();
    0
}
