//! A path argument read from user memory and matched by its final
//! component: the failed opens (EACCES/EPERM, no file to look at) and the
//! sources of renames and links (flow.rs). The scan for the final '/' is a
//! bpf_loop, and its results go through `OPEN_STATE` (open.rs), so the
//! verifier checks them once.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::map, maps::PerCpuArray};
use sensor_common::{
    ARG_BUF, MATCH_FAILED_NAME, OpenEvent, OpenKind,
    names::{NameKey, name_key},
};

use crate::{
    emit::stage_as,
    maps::{CODE_NAMES, NAME_PATTERNS, WATCHED_NAMES},
    probes::open::{OPEN_STATE, get, put, syscall_args},
    vfs::eval_patterns,
};

/// Scratch for a failed open's path argument (+ room for 16-byte reads).
#[map]
static ARG_SCRATCH: PerCpuArray<[u8; ARG_BUF + 32]> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct SlashScan {
    len: u64,
    start: u64,
    /// Start of the component before the final one (its end is
    /// `start - 1`); meaningful when `start` > 0.
    pstart: u64,
}

/// bpf_loop callback: remembers the position after each '/'.
#[inline(never)]
unsafe extern "C" fn slash_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is arg_final_name's `SlashScan` (bpf_loop passes it
    // through); the scratch index is masked into the buffer.
    unsafe {
        let scan = ctx as *mut SlashScan;
        if i >= (*scan).len {
            return 1;
        }
        let Some(buf) = ARG_SCRATCH.get_ptr(0) else {
            return 1;
        };
        if (*buf)[(i as usize) & (ARG_BUF - 1)] == b'/' {
            (*scan).pstart = (*scan).start;
            (*scan).start = i + 1;
        }
        0
    }
}

/// Reads the user path at `path` into ARG_SCRATCH and checks its final
/// component: when it names a watched or tracked file or matches a key-name
/// pattern, returns (the scratch buffer, the path length, the matching
/// name rules).
#[inline(always)]
pub unsafe fn arg_final_name(path: u64) -> Option<(*const u8, u32, u32)> {
    // SAFETY: user memory read through bpf_probe_read_user_str only, into
    // this CPU's ARG_SCRATCH (ARG_BUF + 32 bytes); every index into it is
    // masked below ARG_BUF, and the 16-byte reads start below ARG_BUF;
    // `scan` outlives the bpf_loop that hands it to slash_step.
    unsafe {
        if path == 0 {
            return None;
        }
        let buf = ARG_SCRATCH.get_ptr_mut(0)? as *mut u8;
        let n = generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            ARG_BUF as u32,
            path as *const c_void,
        );
        if n <= 1 {
            return None;
        }
        let len = (n - 1) as usize & (ARG_BUF - 1);
        // A trailing '/' (a directory named "dir/"): look at the name before it.
        let mut end = len;
        if end > 1 && *buf.add((end - 1) & (ARG_BUF - 1)) == b'/' {
            end -= 1;
        }
        // Start of the final component (a bpf_loop: verified once).
        let mut scan = SlashScan {
            len: end as u64,
            start: 0,
            pstart: 0,
        };
        generated::bpf_loop(
            ARG_BUF as u32,
            slash_step as *mut c_void,
            &raw mut scan as *mut c_void,
            0,
        );
        // Through map memory: what the verifier knows of these values
        // (from branches before, and the callback's stack writes) is
        // dropped, so the paths before converge (see OpenState).
        let s = OPEN_STATE.get_ptr_mut(0)?;
        put!(s.arg_len, len as u32);
        put!(s.arg_end, end as u32);
        put!(s.arg_start, scan.start as u32);
        let len = get!(s.arg_len) as usize & (ARG_BUF - 1);
        let end = get!(s.arg_end) as usize & (ARG_BUF - 1);
        let start = get!(s.arg_start) as usize & (ARG_BUF - 1);
        let name_len = end.saturating_sub(start);
        if name_len == 0 {
            return None;
        }
        let head: [u64; 2] = core::ptr::read_unaligned(buf.add(start) as *const [u64; 2]);
        let tail: [u64; 2] = if name_len >= 16 {
            core::ptr::read_unaligned(buf.add((end - 16) & (ARG_BUF - 1)) as *const [u64; 2])
        } else {
            [0, 0]
        };
        let key: NameKey = name_key(head, tail, name_len as u32);
        let mut rules = 0u32;
        if let Some(pats) = NAME_PATTERNS.get(0) {
            rules = eval_patterns(pats.count, &key, &NameKey::default());
        }
        let watched = WATCHED_NAMES.get(key).is_some();
        if rules == 0 && !watched {
            return None;
        }
        Some((buf as *const u8, len as u32, rules))
    }
}

/// Where the new name of a rename, link or symlink (`path`, relative to
/// `dfd` or the working directory) goes, as far as the kernel can tell
/// without a lookup.
pub struct NewDir {
    /// The directory's name is a code-loading path's (CODE_NAMES): the
    /// component before the final one, or, for a bare name or `./name`,
    /// the base directory's own name.
    pub code: bool,
    /// The base directory's identity, for a bare name or `./name` (the
    /// directory the name is in), else 0.
    pub dev: u32,
    pub ino: u64,
}

/// The base directory of a relative path: `dfd`'s, or the working
/// directory (AT_FDCWD).
#[inline(always)]
fn base_dir(dfd: i32) -> Option<crate::kptr::DentryPtr> {
    if dfd == AT_FDCWD {
        crate::kptr::TaskPtr::current().cwd()
    } else if dfd >= 0 {
        crate::vfs::fd_file(dfd as u64)?.dentry()
    } else {
        None
    }
}

const AT_FDCWD: i32 = -100;

/// See [`NewDir`].
#[inline(always)]
pub unsafe fn new_name_dir(path: u64, dfd: i32) -> NewDir {
    let mut out = NewDir {
        code: false,
        dev: 0,
        ino: 0,
    };
    // SAFETY: as arg_final_name: user memory read with
    // bpf_probe_read_user_str into this CPU's ARG_SCRATCH, every index
    // masked below ARG_BUF, 16-byte reads starting below ARG_BUF.
    unsafe {
        if path == 0 {
            return out;
        }
        let Some(buf) = ARG_SCRATCH.get_ptr_mut(0) else {
            return out;
        };
        let buf = buf as *mut u8;
        let n = generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            ARG_BUF as u32,
            path as *const c_void,
        );
        if n <= 1 {
            return out;
        }
        let mut end = (n - 1) as usize & (ARG_BUF - 1);
        if end > 1 && *buf.add((end - 1) & (ARG_BUF - 1)) == b'/' {
            end -= 1;
        }
        let mut scan = SlashScan {
            len: end as u64,
            start: 0,
            pstart: 0,
        };
        generated::bpf_loop(
            ARG_BUF as u32,
            slash_step as *mut c_void,
            &raw mut scan as *mut c_void,
            0,
        );
        let Some(s) = OPEN_STATE.get_ptr_mut(0) else {
            return out;
        };
        put!(s.arg_start, scan.start as u32);
        put!(s.arg_end, scan.pstart as u32);
        let start = get!(s.arg_start) as usize & (ARG_BUF - 1);
        let pstart = get!(s.arg_end) as usize & (ARG_BUF - 1);
        let first = *buf;
        // The parent component [pstart, start - 1), if any.
        let plen = if start > 0 {
            (start - 1).saturating_sub(pstart)
        } else {
            0
        };
        let dot = plen == 1 && *buf.add(pstart) == b'.';
        let key = if start == 0 || (dot && pstart == 0) {
            // A bare name, or `./name`: in the base directory.
            if first == b'/' {
                return out;
            }
            let Some(d) = base_dir(dfd) else {
                return out;
            };
            if let Some(i) = d.inode() {
                out.dev = i.dev().unwrap_or(0);
                out.ino = i.ino().unwrap_or(0);
            }
            crate::vfs::dentry_name_key(d)
        } else if plen > 0 {
            let head: [u64; 2] = core::ptr::read_unaligned(buf.add(pstart) as *const [u64; 2]);
            let pend = (start - 1) & (ARG_BUF - 1);
            let tail: [u64; 2] = if plen >= 16 {
                core::ptr::read_unaligned(buf.add((pend - 16) & (ARG_BUF - 1)) as *const [u64; 2])
            } else {
                [0, 0]
            };
            name_key(head, tail, plen as u32)
        } else {
            return out;
        };
        out.code = CODE_NAMES.get(key).is_some();
        out
    }
}

/// A failed open (EACCES/EPERM) has no file: report it when the final
/// component of the path argument names a watched file or matches a key
/// name pattern. User space resolves the path and confirms.
#[inline(always)]
pub(super) fn check_failed(src: u32, ret: i64) {
    // SAFETY: user memory read through bpf_probe_read_user only; `buf` is
    // arg_final_name's scratch, ARG_BUF bytes readable; `ev` is the
    // staged record.
    unsafe {
        let Some((dfd, path, flags)) = syscall_args(src) else {
            return;
        };
        let Some((buf, len, rules)) = arg_final_name(path) else {
            return;
        };
        let Some(rec) = stage_as::<OpenEvent>(OpenKind::KeyOpenFailed) else {
            return;
        };
        let ev = rec.ptr();
        (*ev).ret = ret;
        (*ev).ino = 0;
        (*ev).dev = 0;
        (*ev).mode = 0;
        (*ev).flags = flags as u32;
        (*ev).dfd = dfd;
        (*ev).source = src;
        (*ev).matched = MATCH_FAILED_NAME;
        (*ev).watch_id = 0;
        (*ev).name_rules = rules;
        (*ev).igen = 0;
        (*ev).fmode = 0;
        (*ev).owner = u32::MAX;
        (*ev).size = 0;
        (*ev).arg_len = len;
        generated::bpf_probe_read_kernel(
            (*ev).arg.as_mut_ptr() as *mut c_void,
            ARG_BUF as u32,
            buf as *const c_void,
        );
        (*ev).path.len = 0;
        (*ev).path.flags = 0;
        crate::fold::no_fold(&raw mut (*ev).fold);
        rec.submit();
    }
}
