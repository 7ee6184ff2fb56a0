//! Readers of kernel memory: the raw reader (`rd`) under the typed
//! pointers of `kptr`, the current task's files, dentry names and full
//! paths. Every offset comes from `OFFSETS`, filled from the running
//! kernel's BTF at load time.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use aya_ebpf::{macros::map, maps::PerCpuArray};
use sensor_common::{
    KPath, PATH_BUF, PATH_COMPLETE, PATH_MAX_DEPTH, PATH_TRUNCATED, PATH_WRITE_MASK,
    names::{MAX_PATTERNS, NameKey, PAT_DIR, name_key},
};

use crate::{
    kptr::{DentryPtr, FdArrayPtr, FdtablePtr, FilePtr},
    off,
};

/// The kernel values the programs compare with (uapi and on-disk, stable):
/// i_mode's file type bits, f_mode's access bits, f_flags' O_PATH, and the
/// superblock magics of procfs and tracefs.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;
/// f_mode: opened for reading, for writing (O_PATH: neither).
pub const FMODE_READ: u32 = 1;
pub const FMODE_WRITE: u32 = 2;
pub const O_PATH: u32 = 0o10000000;
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;
pub const TRACEFS_MAGIC: u64 = 0x74726163;
pub const SYSFS_MAGIC: u64 = 0x62656572;
/// A cgroup v1 hierarchy (cgroup2 is another magic, and has no
/// release_agent).
pub const CGROUP_SUPER_MAGIC: u64 = 0x27e0eb;

pub type Ptr = *const u8;

/// Reads a `T` at `base + offset` of kernel memory.
///
/// # Safety
/// `T` is valid for any bits (an integer, a byte array, a pointer).
#[inline(always)]
pub unsafe fn rd<T: Copy>(base: Ptr, offset: u32) -> Option<T> {
    // SAFETY: the address is only handed to bpf_probe_read_kernel, which
    // checks it and fails cleanly; nothing dereferences it directly.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// Reads a non-null kernel pointer at `base + offset`.
///
/// # Safety
/// None beyond `rd`'s, met by a pointer.
#[inline(always)]
pub unsafe fn rd_ptr(base: Ptr, offset: u32) -> Option<Ptr> {
    let p: u64 = unsafe { rd(base, offset)? };
    if p == 0 { None } else { Some(p as Ptr) }
}

/// The current task's mount namespace (`current->nsproxy->mnt_ns`); None
/// where the kernel's BTF lacks the offsets.
#[inline(always)]
pub fn current_mnt_ns() -> Option<Ptr> {
    if off!(task_nsproxy) == 0 {
        return None;
    }
    // SAFETY: kernel memory is read through bpf_probe_read_kernel only.
    unsafe {
        let task = generated::bpf_get_current_task() as Ptr;
        let nsproxy = rd_ptr(task, off!(task_nsproxy))?;
        rd_ptr(nsproxy, off!(nsproxy_mnt_ns))
    }
}

/// Is the current task's mount namespace not the host's? 0 where the
/// kernel's BTF lacks the offsets or the host's namespace is unknown. A
/// BPF function of its own (the programs calling it stay as the verifier
/// knew them).
#[inline(never)]
pub fn in_guest_mnt_ns() -> u32 {
    let host = crate::setting!(host_mnt_ns);
    if host == 0 {
        return 0;
    }
    current_mnt_ns()
        // SAFETY: as in `current_mnt_ns`.
        .and_then(|ns| unsafe { rd::<u32>(ns, off!(mnt_ns_inum)) })
        .is_some_and(|n| n != host) as u32
}

/// `current->files->fdt->fd[fd]`. `files` and `fdt` are direct loads
/// from the current task's BTF pointer: the verifier types each pointer it
/// walks (the offsets are frozen read-only globals, constants to it) and
/// makes every load of an untrusted one a checked load, so this costs no
/// helper call; the array and its slot are helper reads (to the verifier
/// an array of pointers is a plain number).
#[inline(always)]
pub fn fd_file(fd: u64) -> Option<FilePtr> {
    // SAFETY: loads through BTF-typed pointers, which the verifier checks
    // (a fault reads 0); each pointer is null-checked before its use.
    let fdt = unsafe {
        let task = generated::bpf_get_current_task_btf() as Ptr;
        let files = load_ptr(task, off!(task_files))?;
        load_ptr(files, off!(files_fdt))?
    };
    // No max_fds check: `fd` was just installed by the open that
    // returned it, and a stray read would only fail the helper.
    let fds = FdtablePtr::from_addr(fdt as u64).fd()?;
    FdArrayPtr::from_addr(fds as u64).get(fd as usize)
}

/// The pointer member at `base + offset` of a BTF-typed kernel object, by
/// a direct load (None when null).
///
/// # Safety
/// `base` is a pointer the verifier knows the type of (from
/// bpf_get_current_task_btf or a load through one), `offset` a member of
/// that type holding a pointer to a struct.
#[inline(always)]
unsafe fn load_ptr(base: Ptr, offset: u32) -> Option<Ptr> {
    // SAFETY: the caller's.
    let p = unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const Ptr) };
    if p.is_null() { None } else { Some(p) }
}

/// Head/tail words of a dentry's name (see `sensor_common::names`); all
/// zero (matching no pattern) when it cannot be read.
#[inline(always)]
pub fn dentry_name_key(dentry: DentryPtr) -> NameKey {
    let Some((len, name)) = dentry.name() else {
        return NameKey::default();
    };
    name_key_at(len, name)
}

/// Head/tail words of the `len`-byte dentry name at `name` (a qstr's
/// name pointer, which is never null); all zero when it cannot be read.
#[inline(always)]
pub fn name_key_at(len: u32, name: Ptr) -> NameKey {
    // SAFETY: kernel memory read through bpf_probe_read_kernel only, 16
    // bytes into each of the two 16-byte arrays on the stack.
    unsafe {
        // Short names live in the dentry's inline storage (at least 32
        // bytes), long ones in an allocation of len + 1: 16 bytes are there.
        let mut head = [0u64; 2];
        let mut tail = [0u64; 2];
        if generated::bpf_probe_read_kernel(
            head.as_mut_ptr() as *mut c_void,
            16,
            name as *const c_void,
        ) != 0
        {
            return NameKey::default();
        }
        if len >= 16
            && generated::bpf_probe_read_kernel(
                tail.as_mut_ptr() as *mut c_void,
                16,
                name.add((len - 16) as usize) as *const c_void,
            ) != 0
        {
            return NameKey::default();
        }
        name_key(head, tail, len)
    }
}

/// Per-CPU scratch the path walk writes into (the walk runs in a bpf_loop
/// callback, verified once instead of once per level).
#[map]
static PATH_SCRATCH: PerCpuArray<KPath> = PerCpuArray::with_max_entries(1, 0);

/// State of a path walk, on the caller's stack.
#[repr(C)]
struct Walk {
    dentry: u64,
    mnt: u64,
    mnt_root: u64,
    pos: u64,
    flags: u64,
}

/// One level of the walk: writes the current dentry's name or crosses a
/// mount. Returns 1 to stop.
#[inline(never)]
unsafe extern "C" fn path_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is read_path's `Walk` (bpf_loop passes it through);
    // kernel memory is read through bpf_probe_read_kernel only; the name
    // is written at `pos & PATH_WRITE_MASK` with at most 255 + 1 bytes,
    // inside PATH_BUF (checked at compile time in sensor-common).
    unsafe {
        let w = ctx as *mut Walk;
        let Some(out) = PATH_SCRATCH.get_ptr_mut(0) else {
            return 1;
        };
        let dentry = DentryPtr::from_addr((*w).dentry);
        let mnt = (*w).mnt as Ptr;
        let Some(parent) = dentry.parent() else {
            return 1;
        };
        if dentry.addr() == (*w).mnt_root || dentry.addr() == parent.addr() {
            let Some(mnt_parent) = rd_ptr(mnt, off!(mount_mnt_parent)) else {
                return 1;
            };
            if mnt_parent == mnt || dentry.addr() != (*w).mnt_root {
                (*w).flags = PATH_COMPLETE as u64;
                return 1;
            }
            let Some(mp) = rd_ptr(mnt, off!(mount_mnt_mountpoint)) else {
                return 1;
            };
            (*w).dentry = mp as u64;
            (*w).mnt = mnt_parent as u64;
            (*w).mnt_root = rd_ptr(mnt_parent, off!(mount_mnt) + off!(vfsmount_mnt_root))
                .map(|p| p as u64)
                .unwrap_or(0);
            return 0;
        }
        let Some((len, name)) = dentry.name() else {
            return 1;
        };
        let pos = (*w).pos as usize;
        if pos > PATH_WRITE_MASK {
            return 1;
        }
        let buf = (*out).buf.as_mut_ptr();
        let at = pos & PATH_WRITE_MASK;
        let n = (len & 0xff) as usize;
        generated::bpf_probe_read_kernel(
            buf.add(at) as *mut c_void,
            n as u32,
            name as *const c_void,
        );
        *buf.add(at + n) = b'/';
        (*w).pos = (at + n + 1) as u64;
        (*w).dentry = parent.addr();
        0
    }
}

/// Rebuilds the path of a `struct path` into `out`, crossing mounts up to
/// the root of the mount namespace. Components are written leaf first,
/// each followed by '/'. Through `FilePtr::read_path`.
///
/// # Safety
/// `out` points at writable memory for a `KPath`.
#[inline(always)]
pub(crate) unsafe fn read_path(path: Ptr, out: *mut KPath) {
    // SAFETY: `out` is a writable KPath (the caller's); kernel memory is
    // read through bpf_probe_read_kernel only; `w` outlives the bpf_loop
    // that hands it to path_step, whose signature is bpf_loop's callback's.
    unsafe {
        (*out).len = 0;
        (*out).flags = 0;
        let Some(dentry) = rd_ptr(path, off!(path_dentry)) else {
            return;
        };
        let Some(vfsmnt) = rd_ptr(path, off!(path_mnt)) else {
            return;
        };
        let mut w = Walk {
            dentry: dentry as u64,
            mnt: vfsmnt as u64 - off!(mount_mnt) as u64,
            mnt_root: rd_ptr(vfsmnt, off!(vfsmount_mnt_root))
                .map(|p| p as u64)
                .unwrap_or(0),
            pos: 0,
            flags: PATH_TRUNCATED as u64,
        };
        generated::bpf_loop(
            PATH_MAX_DEPTH,
            path_step as *mut c_void,
            &raw mut w as *mut c_void,
            0,
        );
        let Some(scratch) = PATH_SCRATCH.get_ptr(0) else {
            return;
        };
        // Only the bytes the walk wrote: a compact record sends no more
        // (`emit::Staged::submit`), and the rest is never read.
        let len = (w.pos as usize).min(PATH_BUF);
        generated::bpf_probe_read_kernel(
            (*out).buf.as_mut_ptr() as *mut c_void,
            len as u32,
            (*scratch).buf.as_ptr() as *const c_void,
        );
        (*out).len = len as u32;
        (*out).flags = w.flags as u32;
    }
}

/// State of one `eval_patterns` walk (on the caller's stack).
#[repr(C)]
struct PatternWalk {
    name: NameKey,
    parent: NameKey,
    count: u64,
    include: u32,
    exclude: u32,
}

/// bpf_loop callback: one pattern of the table.
#[inline(never)]
unsafe extern "C" fn pattern_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is eval_patterns' `PatternWalk` (bpf_loop passes it
    // through); the pattern index is masked into the table.
    unsafe {
        let w = ctx as *mut PatternWalk;
        if i >= (*w).count {
            return 1;
        }
        let Some(pats) = crate::maps::NAME_PATTERNS.get(0) else {
            return 1;
        };
        let p = &pats.pats[(i as usize) & (MAX_PATTERNS - 1)];
        let hit = if p.kind == PAT_DIR {
            p.matches(&(*w).parent)
        } else {
            p.matches(&(*w).name)
        };
        if hit {
            let bit = 1u32 << (p.rule & 31);
            if p.exclude != 0 {
                (*w).exclude |= bit;
            } else {
                (*w).include |= bit;
            }
        }
        0
    }
}

/// The key-name rules matching `name` (in a bpf_loop, so the verifier walks
/// one pattern once instead of the unrolled table).
#[inline(always)]
pub fn eval_patterns(count: u32, name: &NameKey, parent: &NameKey) -> u32 {
    if count == 0 {
        return 0;
    }
    let mut w = PatternWalk {
        name: *name,
        parent: *parent,
        count: count as u64,
        include: 0,
        exclude: 0,
    };
    // SAFETY: `w` outlives the loop that hands it to pattern_step, whose
    // signature is bpf_loop's callback's.
    unsafe {
        generated::bpf_loop(
            MAX_PATTERNS as u32,
            pattern_step as *mut c_void,
            &raw mut w as *mut c_void,
            0,
        );
    }
    w.include & !w.exclude
}
