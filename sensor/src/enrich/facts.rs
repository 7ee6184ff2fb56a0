//! Facts: what the enrich stage makes of an event for the rules, whatever
//! record it came from. A key file read is a `KeyAccess` whether an open
//! tracepoint, a BPF LSM fd hand-off or an enforcement denial saw it; a
//! tracked file's read is a `TrackedAccess` (then, resolved against the
//! registry, a `TrackedOpen`); a cross-process access is a `MemAccess`.

use sensor_common::{
    MATCH_INODE, MATCH_NAME, MATCH_PARENT, SRC_CREAT, SRC_IO_URING, SRC_IO_URING_FIXED, SRC_OPEN,
    SRC_OPEN_BY_HANDLE, SRC_OPENAT, SRC_OPENAT2,
};

use crate::{
    alert::Origin,
    enrich::proctab::ProcInfo,
    ingest::decode::{Task, open::OpenRecord},
    rules::Rule,
};

/// A cross-process memory access after enrichment.
pub struct MemAccess<'a> {
    /// One of the memory rules (ptrace-attach, process-vm-read,
    /// process-vm-write, proc-mem-open, proc-environ-read, pidfd-getfd,
    /// process-access).
    pub rule: Rule,
    /// "read", "write" or "attach".
    pub access: &'static str,
    /// The syscall or request: "PTRACE_ATTACH", "process_vm_readv", ...
    pub op: String,
    pub ret: i64,
    pub actor: &'a ProcInfo,
    pub target: &'a ProcInfo,
    pub target_protected: bool,
    /// The actor read the target's maps/smaps/status before.
    pub recon: bool,
    /// The /proc file opened (proc-mem-open).
    pub path: Option<String>,
    /// The thread id the actor named, when it is not the target's pid (a
    /// thread of the target other than its leader).
    pub thread: Option<u32>,
    pub ts_boot_ns: u64,
}

/// A key file accessed (opened, an open that failed or was denied, or a
/// read, write or mapping through an fd the process did not open), with the
/// file as resolved and the actor.
pub struct KeyAccess<'a> {
    pub actor: &'a ProcInfo,
    pub task: &'a Task,
    /// Path of the file (kernel path, or resolved in user space for a failure).
    pub path: String,
    /// st_dev and inode of the file.
    pub dev: u64,
    pub ino: u64,
    /// The kernel's device number and the inode's generation (0 when the
    /// access failed).
    pub kdev: u32,
    pub igen: u32,
    /// Which key_path covers it, if any.
    pub watch_id: Option<u32>,
    /// The kernel matched it by inode (a key path's file or directory).
    pub by_key_path: bool,
    /// The kernel matched it by a key-name pattern.
    pub by_name: bool,
    /// Which `[[key_name]]` rules matched (bits).
    pub name_rules: u32,
    /// Open flags (O_ACCMODE, O_PATH) of the access.
    pub flags: u32,
    pub failed: bool,
    /// The result (a negative errno when failed).
    pub ret: i64,
    /// How: "openat", "io_uring", "fd-scm-rights"...
    pub via: &'static str,
    /// The path argument as passed, if read.
    pub arg: Option<String>,
    /// The file's owner uid (u32::MAX unknown).
    pub owner: u32,
    /// This access created the file.
    pub created: bool,
    /// The file's size (success only).
    pub size: i64,
    /// A key the actor's uid created in the last ten minutes.
    pub fresh: bool,
    /// Opened from a container through a mount of another mount namespace
    /// (`OpenRecord::escape`).
    pub escape: bool,
}

impl<'a> KeyAccess<'a> {
    /// An open (or failed open) of a key file: `path`, `dev`, `ino` and
    /// `watch_id` as resolved (a failed open's from its path argument).
    pub fn of_open(
        rec: &'a OpenRecord,
        actor: &'a ProcInfo,
        (path, dev, ino, watch_id): (String, u64, u64, Option<u32>),
        fresh: bool,
    ) -> Self {
        KeyAccess {
            actor,
            task: &rec.task,
            path,
            dev,
            ino,
            kdev: rec.dev,
            igen: rec.igen,
            watch_id,
            by_key_path: rec.matched & (MATCH_INODE | MATCH_PARENT) != 0,
            by_name: rec.matched & MATCH_NAME != 0,
            name_rules: rec.name_rules,
            flags: rec.flags,
            failed: rec.failed,
            ret: rec.ret,
            via: via(rec.source),
            arg: rec.arg.clone(),
            owner: rec.owner,
            created: rec.created(),
            size: rec.size,
            fresh,
            escape: rec.escape,
        }
    }
}

/// An access to a file the kernel marked as tracked (a dump or a derived
/// copy), before the registry resolves it.
pub struct TrackedAccess<'a> {
    pub task: &'a Task,
    pub kdev: u32,
    pub ino: u64,
    pub igen: u32,
    /// The registry id the kernel knows it by (or `TRACKED_PENDING`).
    pub watch_id: u32,
    pub flags: u32,
    /// "open", or how the reader got the fd ("fd-*").
    pub via: &'static str,
}

/// An open of a tracked file (a dump, or a copy of a dump or a key) after
/// enrichment, or (BPF LSM) an access through an fd its reader did not
/// open.
pub struct TrackedOpen<'a> {
    pub actor: &'a ProcInfo,
    /// "open", or how the reader got the fd ("fd-*", `fdaccess.rs`).
    pub via: &'static str,
    pub flags: u32,
    /// The file's id in the tracked-file registry, its path and (st_dev,
    /// inode).
    pub id: u32,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Its lineage starts at a dump (else at a key file).
    pub dump: bool,
    /// A copy whose own evidence was weak (low or none).
    pub weak: bool,
    /// The process that wrote it, if known.
    pub origin_pid: Option<u32>,
    /// The protected process whose memory it holds.
    pub dumped: Option<Origin>,
}

/// The syscall an open record came from.
pub fn via(source: u32) -> &'static str {
    match source {
        SRC_OPEN => "open",
        SRC_OPENAT => "openat",
        SRC_OPENAT2 => "openat2",
        SRC_CREAT => "creat",
        SRC_OPEN_BY_HANDLE => "open_by_handle_at",
        SRC_IO_URING => "io_uring",
        SRC_IO_URING_FIXED => "io_uring-fixed",
        _ => "unknown",
    }
}
