//! What every record starts with: the [`Header`], the [`EventKind`] that
//! tags it (and the size of the record each kind travels in), the path
//! buffers ([`KPath`]) and their limits.

use crate::{
    AgentSocketEvent, DeniedEvent, DumpConfigEvent, ExecEvent, ExitEvent, FdAccessEvent,
    FileCloseEvent, FileWriteEvent, ForkEvent, KernelReaderEvent, KeyringEvent, MemAccessEvent,
    NetSendEvent, OpenEvent, PathChangeEvent, RenameEvent, SignalEvent, SysctlEvent,
};

/// Bytes kept of a path rebuilt from dentries (components leaf first).
pub const PATH_BUF: usize = 1280;
/// Offset mask used while writing a component (must be a power of two - 1,
/// and `PATH_WRITE_MASK + NAME_MAX + 1 < PATH_BUF`).
pub const PATH_WRITE_MASK: usize = 1023;
/// Longest file-name component (NAME_MAX).
pub const NAME_MAX: usize = 255;
const _: () = assert!(PATH_WRITE_MASK + NAME_MAX + 1 < PATH_BUF);
/// Bytes kept of a path argument as the process passed it.
pub const ARG_BUF: usize = 256;
/// Bytes kept of a command line (NUL separated).
pub const CMDLINE_BUF: usize = 512;
pub const COMM_LEN: usize = 16;
/// Most components walked when rebuilding a path.
pub const PATH_MAX_DEPTH: u32 = 48;

/// Declares [`EventKind`] and [`EventKind::ALL`] from one list, so no kind
/// can be left out of `ALL` (user space decodes only the kinds in it).
macro_rules! event_kinds {
    ($($(#[$attr:meta])* $kind:ident = $value:literal,)+) => {
        /// Event kinds. The value indexes the per-kind lost-event counters.
        #[repr(u32)]
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $($(#[$attr])* $kind = $value,)+
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: [EventKind; [$(EventKind::$kind),+].len()] = [$(EventKind::$kind),+];
        }
    };
}

event_kinds! {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    /// The thread-group leader's comm changed (prctl(PR_SET_NAME), a write
    /// to /proc/<pid>/comm); not at exec.
    Rename = 5,
    /// A successful open of a watched or key-named file.
    KeyOpen = 10,
    /// A failed open (EACCES/EPERM) whose path may name a key file.
    KeyOpenFailed = 11,
    /// An open of /proc/<pid>/{mem,pagemap,environ}, or of
    /// /proc/<pid>/{maps,smaps,status} of a protected process.
    ProcFileOpen = 12,
    /// ptrace, process_vm_readv/writev or pidfd_getfd on another process.
    MemAccess = 20,
    /// A dump-producing signal sent to another process.
    DumpSignal = 21,
    /// A change that enables or redirects core dumps.
    DumpConfig = 22,
    /// A tainted process wrote a regular file (first write per file).
    FileWrite = 30,
    /// A tainted process closed a file it had written.
    FileClose = 31,
    /// A tainted process sent on a socket (first send per socket).
    NetSend = 32,
    /// A rename or link whose source names a tracked file or a key name.
    PathChange = 33,
    /// A BPF LSM hook denied an operation (rule in enforce mode).
    Denied = 24,
    /// A BPF LSM hook saw a process read, write or map a watched file
    /// through an fd it did not open itself (first access per process).
    FdAccess = 13,
    /// A BPF tracing program, kernel module or kexec image loaded, or
    /// perf sampling of other processes' user stacks (failed or not).
    KernelReader = 25,
    /// A write to a sysctl, with the value in force and the value written.
    Sysctl = 26,
    /// An open of the kernel's memory (/dev/mem, /dev/kmem, /dev/port,
    /// /proc/kcore) or of a block device holding a watched file system.
    RawOpen = 14,
    /// An open that may change a code-loading file (the loader's preload
    /// list and search path, the loader, PAM, OpenSSL and PKCS#11 modules:
    /// `[tamper] code_paths`): for writing, truncating or creating.
    CodeWrite = 15,
    /// A key agent's unix socket bound, or connected to by another
    /// principal.
    AgentSocket = 27,
    /// A kernel key read by another principal, or another uid's
    /// persistent keyring taken.
    KeyringAccess = 28,
}

/// Number of slots in the lost-event counter array.
pub const KIND_SLOTS: u32 = 64;

/// The ring buffer a record travels in, chosen per record type at compile
/// time (`Record::LANE`, `SharedRecord::LANE`), so a flood of bulk records
/// can never take the space of a critical one.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lane {
    /// What must never vanish: memory access, dump signals and
    /// configuration, LSM denials and fd accesses, tracked writes, sends and
    /// path changes. Every submit wakes user space.
    Critical = 0,
    /// Exec, fork, exit, rename: the process table.
    Lifecycle = 1,
    /// Opens (key, failed, /proc files) and closes of written files.
    Bulk = 2,
}

/// Number of lanes (the lost-event counters are `LANES * KIND_SLOTS`,
/// indexed by [`lost_slot`]).
pub const LANES: u32 = 3;

impl Lane {
    /// In drain order (user space reads the critical lane first).
    pub const ALL: [Lane; LANES as usize] = [Lane::Critical, Lane::Lifecycle, Lane::Bulk];

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::Lifecycle => "lifecycle",
            Lane::Bulk => "bulk",
        }
    }
}

/// The slot of the lost-event counters that counts `kind` lost in `lane`.
#[inline(always)]
pub const fn lost_slot(lane: Lane, kind: EventKind) -> u32 {
    lane as u32 * KIND_SLOTS + kind as u32
}

// Every kind indexes the per-kind counters.
const _: () = {
    let mut i = 0;
    while i < EventKind::ALL.len() {
        assert!((EventKind::ALL[i] as u32) < KIND_SLOTS);
        i += 1;
    }
};

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }

    /// Stable metric label.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::Rename => "rename",
            EventKind::KeyOpen => "key_open",
            EventKind::KeyOpenFailed => "key_open_failed",
            EventKind::ProcFileOpen => "proc_file_open",
            EventKind::RawOpen => "raw_open",
            EventKind::CodeWrite => "code_write",
            EventKind::MemAccess => "mem_access",
            EventKind::DumpSignal => "dump_signal",
            EventKind::DumpConfig => "dump_config",
            EventKind::FileWrite => "file_write",
            EventKind::FileClose => "file_close",
            EventKind::NetSend => "net_send",
            EventKind::PathChange => "path_change",
            EventKind::Denied => "denied",
            EventKind::FdAccess => "fd_access",
            EventKind::KernelReader => "kernel_reader",
            EventKind::Sysctl => "sysctl",
            EventKind::AgentSocket => "agent_socket",
            EventKind::KeyringAccess => "keyring_access",
        }
    }

    /// The lane this kind travels in: its record type's (`Record::LANE`,
    /// `SharedRecord::LANE`), so the lane is stated once, next to the
    /// record. An exhaustive match, as `record_size`.
    pub const fn lane(self) -> Lane {
        match self {
            EventKind::Exec => <ExecEvent as Record>::LANE,
            EventKind::Fork => <ForkEvent as Record>::LANE,
            EventKind::Exit => <ExitEvent as Record>::LANE,
            EventKind::Rename => <RenameEvent as Record>::LANE,
            EventKind::KeyOpen
            | EventKind::KeyOpenFailed
            | EventKind::ProcFileOpen
            | EventKind::RawOpen
            | EventKind::CodeWrite => <OpenEvent as SharedRecord>::LANE,
            EventKind::MemAccess => <MemAccessEvent as Record>::LANE,
            EventKind::DumpSignal => <SignalEvent as Record>::LANE,
            EventKind::DumpConfig => <DumpConfigEvent as Record>::LANE,
            EventKind::FileWrite => <FileWriteEvent as Record>::LANE,
            EventKind::FileClose => <FileCloseEvent as Record>::LANE,
            EventKind::NetSend => <NetSendEvent as Record>::LANE,
            EventKind::PathChange => <PathChangeEvent as Record>::LANE,
            EventKind::Denied => <DeniedEvent as Record>::LANE,
            EventKind::FdAccess => <FdAccessEvent as Record>::LANE,
            EventKind::KernelReader => <KernelReaderEvent as Record>::LANE,
            EventKind::Sysctl => <SysctlEvent as Record>::LANE,
            EventKind::AgentSocket => <AgentSocketEvent as Record>::LANE,
            EventKind::KeyringAccess => <KeyringEvent as Record>::LANE,
        }
    }

    /// Size of the record this kind travels in. An exhaustive match, so a new
    /// kind cannot be added without its size.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::Exec => core::mem::size_of::<ExecEvent>(),
            EventKind::Fork => core::mem::size_of::<ForkEvent>(),
            EventKind::Exit => core::mem::size_of::<ExitEvent>(),
            EventKind::Rename => core::mem::size_of::<RenameEvent>(),
            EventKind::KeyOpen
            | EventKind::KeyOpenFailed
            | EventKind::ProcFileOpen
            | EventKind::RawOpen
            | EventKind::CodeWrite => core::mem::size_of::<OpenEvent>(),
            EventKind::MemAccess => core::mem::size_of::<MemAccessEvent>(),
            EventKind::DumpSignal => core::mem::size_of::<SignalEvent>(),
            EventKind::DumpConfig => core::mem::size_of::<DumpConfigEvent>(),
            EventKind::FileWrite => core::mem::size_of::<FileWriteEvent>(),
            EventKind::FileClose => core::mem::size_of::<FileCloseEvent>(),
            EventKind::NetSend => core::mem::size_of::<NetSendEvent>(),
            EventKind::PathChange => core::mem::size_of::<PathChangeEvent>(),
            EventKind::Denied => core::mem::size_of::<DeniedEvent>(),
            EventKind::FdAccess => core::mem::size_of::<FdAccessEvent>(),
            EventKind::KernelReader => core::mem::size_of::<KernelReaderEvent>(),
            EventKind::Sysctl => core::mem::size_of::<SysctlEvent>(),
            EventKind::AgentSocket => core::mem::size_of::<AgentSocketEvent>(),
            EventKind::KeyringAccess => core::mem::size_of::<KeyringEvent>(),
        }
    }
}

impl EventKind {
    /// How records of this kind travel compact, for the kinds that can.
    pub const fn compaction(self) -> Option<Compaction> {
        match self {
            EventKind::Exec => Some(<ExecEvent as Compact>::COMPACTION),
            EventKind::KeyOpen
            | EventKind::KeyOpenFailed
            | EventKind::ProcFileOpen
            | EventKind::RawOpen
            | EventKind::CodeWrite => Some(<OpenEvent as Compact>::COMPACTION),
            EventKind::FileWrite => Some(<FileWriteEvent as Compact>::COMPACTION),
            EventKind::Denied => Some(<DeniedEvent as Compact>::COMPACTION),
            EventKind::FdAccess => Some(<FdAccessEvent as Compact>::COMPACTION),
            _ => None,
        }
    }
}

impl EventKind {
    /// The size records of this kind had before they carried a
    /// [`crate::FoldTag`] (recordings made before kernel folding), for the
    /// kinds that carry one now.
    pub const fn unfolded_record_size(self) -> Option<usize> {
        match self {
            EventKind::KeyOpen
            | EventKind::KeyOpenFailed
            | EventKind::ProcFileOpen
            | EventKind::MemAccess => {
                Some(self.record_size() - core::mem::size_of::<crate::FoldTag>())
            }
            _ => None,
        }
    }
}

/// A record type that travels as one kind: the kernel's `emit::<T>()`
/// takes the kind from the type and reserves `size_of::<T>()`, so the two
/// cannot disagree. Implemented with `record!` next to each record.
///
/// # Safety
/// `Self` is `#[repr(C)]` and starts with its `hdr: Header` (`record!`
/// checks the field and its offset): the kernel fills the header through
/// the record pointer cast to `*mut Header`.
pub unsafe trait Record: Sized {
    const KIND: EventKind;
    /// The ring buffer it travels in.
    const LANE: Lane;
}

/// A record type several kinds travel in (only [`crate::OpenEvent`]: a
/// key open, a failed open, a /proc file open): each record's kind is one
/// value of `Kind`, each of which names one [`EventKind`].
///
/// # Safety
/// As for [`Record`] (`header_first!` checks it).
pub unsafe trait SharedRecord: Sized {
    type Kind: Copy + Into<EventKind> + 'static;
    /// Every value of `Kind`.
    const KINDS: &'static [Self::Kind];
    /// The ring buffer every kind of it travels in.
    const LANE: Lane;
}

/// Checks that a record type starts with `hdr: Header`.
macro_rules! header_first {
    ($t:ty) => {
        const _: () = {
            fn _hdr_is_a_header(r: &$t) -> &$crate::Header {
                &r.hdr
            }
            assert!(core::mem::offset_of!($t, hdr) == 0);
        };
    };
}
pub(crate) use header_first;

/// `record!(ExecEvent: Exec, Lifecycle)`: `ExecEvent` travels as
/// `EventKind::Exec` in the lifecycle lane.
macro_rules! record {
    ($t:ty : $kind:ident, $lane:ident) => {
        $crate::header::header_first!($t);
        // SAFETY: repr(C) (the type's own attribute), `hdr` first (checked above).
        unsafe impl $crate::Record for $t {
            const KIND: $crate::EventKind = $crate::EventKind::$kind;
            const LANE: $crate::Lane = $crate::Lane::$lane;
        }
    };
}
pub(crate) use record;

/// First bytes of every record.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct Header {
    pub kind: u32,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// bpf_ktime_get_boot_ns() at the event.
    pub ts_boot_ns: u64,
    /// Thread-group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<Header>() == 56);

/// A path rebuilt in the kernel from dentries and mounts. `buf[..len]` holds
/// the components leaf first, each followed by `/`; user space reverses them.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct KPath {
    pub len: u32,
    /// PATH_* flags.
    pub flags: u32,
    pub buf: [u8; PATH_BUF],
}
const _: () = assert!(core::mem::size_of::<KPath>() == 8 + PATH_BUF);

impl KPath {
    /// Encodes `path` the way the kernel writes it (components leaf first,
    /// each followed by '/'): for tests and benchmarks that build records.
    /// Panics when the path does not fit.
    pub fn from_path(path: &str) -> KPath {
        let mut p = KPath {
            len: 0,
            flags: PATH_COMPLETE,
            buf: [0; PATH_BUF],
        };
        let mut pos = 0;
        for c in path.split('/').filter(|c| !c.is_empty()).rev() {
            p.buf[pos..pos + c.len()].copy_from_slice(c.as_bytes());
            pos += c.len();
            p.buf[pos] = b'/';
            pos += 1;
        }
        p.len = pos as u32;
        p
    }
}

/// Longest rebuilt path a record travels compact with: the record ends
/// after the path bytes used (rounded up to 8) and its trailer, instead of
/// carrying all `PATH_BUF` bytes. A longer path travels in the full record.
/// Below `PATH_BUF - 56`, so no compact record is as long as a record of
/// an older layout (`EventKind::unfolded_record_size`,
/// `EXEC_RECORD_WITHOUT_IDENTITY`): a size never means two layouts.
pub const COMPACT_PATH_MAX: usize = 1024;
const _: () = assert!(COMPACT_PATH_MAX + 56 < PATH_BUF && COMPACT_PATH_MAX.is_multiple_of(8));

/// Where a record that can travel compact keeps its rebuilt path: the
/// [`KPath`] at `path_at`, followed by `trailer` bytes of fields to the end
/// of the record. Compact, the record is its bytes up to the path's used
/// bytes (rounded up to 8), then the trailer: `size` in its header says
/// which form it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub path_at: usize,
    pub trailer: usize,
}

impl Compaction {
    /// Of a record type `T` whose `KPath` is at `path_at`.
    pub const fn of<T>(path_at: usize) -> Compaction {
        // Word-aligned, so the kernel moves the trailer a word at a time.
        assert!(path_at.is_multiple_of(8) && core::mem::size_of::<T>().is_multiple_of(8));
        Compaction {
            path_at,
            trailer: core::mem::size_of::<T>() - path_at - core::mem::size_of::<KPath>(),
        }
    }

    /// Offset of the path bytes.
    pub const fn bytes_at(self) -> usize {
        self.path_at + core::mem::offset_of!(KPath, buf)
    }

    /// The compact size of a record whose path uses `path_len` bytes, or
    /// None when the path is too long to travel compact.
    pub const fn size(self, path_len: u32) -> Option<usize> {
        let used = (path_len as usize).next_multiple_of(8);
        if used > COMPACT_PATH_MAX {
            return None;
        }
        Some(self.bytes_at() + used + self.trailer)
    }

    /// Turns a whole record (`rec`, of its type's size) into the compact
    /// form the kernel sends (`emit::Staged::submit` in sensor-ebpf: the
    /// trailer moved up behind the path's used bytes, the header's size
    /// set) and returns its length; a path too long leaves it whole. For
    /// tests and benchmarks that build records.
    pub fn compact(self, rec: &mut [u8]) -> usize {
        let at = self.path_at + core::mem::offset_of!(KPath, len);
        let len = u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
        let Some(size) = self.size(len) else {
            return rec.len();
        };
        let from = rec.len() - self.trailer;
        rec.copy_within(from.., size - self.trailer);
        let h = core::mem::offset_of!(Header, size);
        rec[h..h + 4].copy_from_slice(&(size as u32).to_le_bytes());
        size
    }
}

/// A record type that can travel compact (`Compaction`): the kernel stages
/// it, then sends only the bytes its path uses.
///
/// # Safety
/// `COMPACTION.path_at` is the offset of a `KPath` field of `Self`.
pub unsafe trait Compact: Sized {
    const COMPACTION: Compaction;
}

pub const PATH_TRUNCATED: u32 = 1;
/// The walk reached the root of the mount namespace.
pub const PATH_COMPLETE: u32 = 2;
/// (Opens.) The file's mount belongs to another mount namespace than the
/// opener's: reached through `/proc/<pid>/root`, a descriptor from another
/// namespace, or a detached mount.
pub const PATH_OTHER_NS: u32 = 4;
/// (Opens.) The opener's mount namespace is not the host's.
pub const PATH_GUEST: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` comes from the enum's own list (`event_kinds!`), so every kind
    /// is in it; `name` and `record_size` are exhaustive matches. What the
    /// compiler does not check is checked here.
    #[test]
    fn every_kind_has_its_own_value_name_and_record() {
        let all = EventKind::ALL;
        for (i, k) in all.iter().enumerate() {
            let v = *k as u32;
            assert!(v != 0, "{k:?}: 0 is no kind (a zeroed header is malformed)");
            assert!(v < KIND_SLOTS, "{k:?} = {v}: no lost-event slot");
            assert_eq!(EventKind::from_u32(v), Some(*k));
            let name = k.name();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k:?}: metric label {name:?}"
            );
            assert!(
                k.record_size() > core::mem::size_of::<Header>(),
                "{k:?}: record of {} bytes",
                k.record_size()
            );
            for other in &all[i + 1..] {
                assert_ne!(v, *other as u32, "{k:?} and {other:?}");
                assert_ne!(name, other.name(), "{k:?} and {other:?}");
            }
        }
        let decoded = (0..KIND_SLOTS)
            .filter(|v| EventKind::from_u32(*v).is_some())
            .count();
        assert_eq!(decoded, all.len());
        assert_eq!(EventKind::from_u32(KIND_SLOTS), None);
    }

    /// Every kind is sent by exactly one record type (its `Record::KIND`,
    /// or one of a `SharedRecord`'s kinds), of the size user space's decode
    /// checks the record against (`record_size`). A record type left out
    /// of this list leaves its kind without one.
    #[test]
    fn every_kind_has_one_record_type_of_its_size() {
        use crate::*;
        use core::mem::size_of;
        macro_rules! single {
            ($($t:ty),+ $(,)?) => {
                [$((<$t as Record>::KIND, size_of::<$t>(), stringify!($t))),+]
            };
        }
        let singles = single!(
            ExecEvent,
            ForkEvent,
            ExitEvent,
            RenameEvent,
            MemAccessEvent,
            SignalEvent,
            DumpConfigEvent,
            FileWriteEvent,
            FileCloseEvent,
            NetSendEvent,
            PathChangeEvent,
            DeniedEvent,
            FdAccessEvent,
            KernelReaderEvent,
            SysctlEvent,
            AgentSocketEvent,
            KeyringEvent,
        );
        let records = || {
            singles.iter().copied().chain(
                <OpenEvent as SharedRecord>::KINDS
                    .iter()
                    .map(|k| (EventKind::from(*k), size_of::<OpenEvent>(), "OpenEvent")),
            )
        };
        for k in EventKind::ALL {
            let mut of_kind = records().filter(|(rk, _, _)| *rk == k);
            let Some((_, size, name)) = of_kind.next() else {
                panic!("{k:?}: no record type sends it");
            };
            if let Some((_, _, other)) = of_kind.next() {
                panic!("{k:?}: sent by {name} and by {other}");
            }
            assert_eq!(
                size,
                k.record_size(),
                "{k:?}: {name} is {size} bytes, decode expects {}",
                k.record_size()
            );
        }
        // The lanes issue 13 names, each kind in exactly one.
        for k in EventKind::ALL {
            let want = match k {
                EventKind::Exec | EventKind::Fork | EventKind::Exit | EventKind::Rename => {
                    Lane::Lifecycle
                }
                EventKind::KeyOpen
                | EventKind::KeyOpenFailed
                | EventKind::ProcFileOpen
                | EventKind::RawOpen
                | EventKind::CodeWrite
                | EventKind::FileClose => Lane::Bulk,
                _ => Lane::Critical,
            };
            assert_eq!(k.lane(), want, "{k:?}");
            for lane in Lane::ALL {
                assert!(lost_slot(lane, k) < LANES * KIND_SLOTS);
            }
        }
        // A compact record is shorter than its whole record and than any
        // older layout of its kind, so its size names its form.
        for k in EventKind::ALL {
            let Some(c) = k.compaction() else { continue };
            let longest = c.size(COMPACT_PATH_MAX as u32).unwrap();
            assert_eq!(c.size(COMPACT_PATH_MAX as u32 + 1), None, "{k:?}");
            assert!(longest < k.record_size(), "{k:?}");
            if let Some(old) = k.unfolded_record_size() {
                assert!(longest < old, "{k:?}");
            }
            if k == EventKind::Exec {
                assert!(longest < EXEC_RECORD_WITHOUT_IDENTITY);
            }
            assert_eq!(c.size(0), Some(c.bytes_at() + c.trailer));
        }
        // The kernel tags an OpenEvent with `OpenKind as u32`.
        for k in <OpenEvent as SharedRecord>::KINDS {
            assert_eq!(*k as u32, EventKind::from(*k) as u32, "{k:?}");
        }
    }
}
