//! Decoding of ring-buffer records into owned events. Defensive: the header
//! is checked first, then the length for its kind; anything else is an error
//! that the caller counts and skips.
//!
//! Here: the `Event` enum, the checks and the dispatch by kind, and the
//! readers every record family shares (header, strings, kernel paths). One
//! module per record family, as in `sensor-common/src/`: `process` (exec,
//! fork, exit, rename), `open`, `memory` (memory access, dump signals and
//! dump configuration), `flow` (writes, closes, sends, path changes) and
//! `lsm` (denials, fd accesses).

pub mod flow;
pub mod lsm;
pub mod memory;
pub mod open;
pub mod process;

use std::mem::offset_of;

use sensor_common::{
    COMM_LEN, Compaction, EventKind, FoldKey, FoldTag, Header, KPath, PATH_BUF, PATH_COMPLETE,
    PATH_TRUNCATED,
};

use self::{
    flow::{CloseRecord, PathRecord, SendRecord, WriteRecord},
    lsm::{DeniedRecord, FdAccessRecord},
    memory::{
        AgentSocketRecord, DumpConfigRecord, KernelReaderRecord, KeyringRecord, MemRecord,
        SignalRecord, SysctlRecord,
    },
    open::OpenRecord,
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
pub enum Event {
    Exec {
        task: Task,
        ppid: u32,
        start_ns: u64,
        /// Arguments (NUL separated in the kernel).
        argv: Vec<String>,
        exe: Option<String>,
        /// (dev, inode) of the executable, kernel dev encoding (None when
        /// unknown).
        exe_id: Option<(u32, u64)>,
        /// EXEC_* bits.
        exec_flags: u32,
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
    KernelReader(KernelReaderRecord),
    Sysctl(SysctlRecord),
    AgentSocket(AgentSocketRecord),
    Keyring(KeyringRecord),
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
            Event::Open(o) if o.raw != 0 => EventKind::RawOpen,
            Event::Open(o) if o.matched & sensor_common::MATCH_CODE != 0 => EventKind::CodeWrite,
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
            Event::KernelReader(_) => EventKind::KernelReader,
            Event::Sysctl(_) => EventKind::Sysctl,
            Event::AgentSocket(_) => EventKind::AgentSocket,
            Event::Keyring(_) => EventKind::KeyringAccess,
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

/// The cgroup id in a record's header.
pub fn cgroup_id(buf: &[u8]) -> Option<u64> {
    form(buf).ok().map(|(h, _, _)| h.cgroup_id)
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let mut space = None;
    let buf = whole(buf, &mut space)?;
    let h: Header = read(buf);
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    Ok(match kind {
        EventKind::Exec => process::exec(buf, &h),
        EventKind::Fork => process::fork(buf),
        EventKind::Exit => process::exit(buf),
        EventKind::Rename => process::rename(buf),
        EventKind::DumpConfig => Event::DumpConfig(memory::dump_config(buf)),
        EventKind::KernelReader => Event::KernelReader(memory::kernel_reader(buf)),
        EventKind::Sysctl => Event::Sysctl(memory::sysctl(buf)),
        EventKind::AgentSocket => Event::AgentSocket(memory::agent_socket(buf)),
        EventKind::KeyringAccess => Event::Keyring(memory::keyring(buf)),
        EventKind::DumpSignal => Event::Signal(memory::signal(buf)),
        EventKind::MemAccess => Event::Mem(memory::mem_access(buf)),
        EventKind::FileWrite => Event::FileWrite(flow::file_write(buf)),
        EventKind::FileClose => Event::FileClose(flow::file_close(buf)),
        EventKind::NetSend => Event::NetSend(flow::net_send(buf)),
        EventKind::PathChange => Event::PathChange(flow::path_change(buf)),
        EventKind::Denied => Event::Denied(lsm::denied(buf, &h)),
        EventKind::FdAccess => Event::FdAccess(lsm::fd_access(buf, &h)),
        EventKind::KeyOpen
        | EventKind::KeyOpenFailed
        | EventKind::ProcFileOpen
        | EventKind::RawOpen
        | EventKind::CodeWrite => Event::Open(open::open(buf, &h, kind)),
    })
}

/// The form a record travelled in (`form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Its kind's record size.
    Whole,
    /// Compact (`sensor_common::Compaction`): shorter by the path bytes it
    /// did not use.
    Compact(Compaction),
    /// An exec record of a recording made before exec records carried the
    /// executable's identity.
    ExecWithoutIdentity,
    /// A record of a recording made before records carried their fold tag
    /// (or, a signal, its disposition; a path change, its new name's
    /// directory): shorter, the missing fields 0.
    Unfolded,
}

/// Checks a record's header and size and tells its form. No compact
/// record is as long as an older layout (`COMPACT_PATH_MAX`), so a size
/// names one form.
fn form(buf: &[u8]) -> Result<(Header, EventKind, Form), DecodeError> {
    if buf.len() < size_of::<Header>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let h: Header = read(buf);
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let want = kind.record_size();
    let size = h.size as usize;
    let bad = || DecodeError::BadSize {
        kind,
        got: buf.len().min(size),
        want,
    };
    if buf.len() < size {
        return Err(bad());
    }
    let form = if size == want {
        Form::Whole
    } else if kind == EventKind::Exec && size == sensor_common::EXEC_RECORD_WITHOUT_IDENTITY {
        Form::ExecWithoutIdentity
    } else if kind.unfolded_record_size() == Some(size)
        || (kind == EventKind::DumpSignal
            && size == sensor_common::SIGNAL_RECORD_WITHOUT_DISPOSITION)
        || (kind == EventKind::PathChange && size == sensor_common::PATH_CHANGE_WITHOUT_BASE)
    {
        Form::Unfolded
    } else {
        let c = kind.compaction().ok_or_else(bad)?;
        if size < c.bytes_at() + c.trailer {
            return Err(bad());
        }
        let len: u32 = at(buf, c.path_at + offset_of!(KPath, len));
        if c.size(len) != Some(size) {
            return Err(bad());
        }
        Form::Compact(c)
    };
    Ok((h, kind, form))
}

/// Bytes of the longest record of any kind: room for one record expanded
/// to its type's layout (`whole`).
const MAX_WHOLE: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < EventKind::ALL.len() {
        if EventKind::ALL[i].record_size() > n {
            n = EventKind::ALL[i].record_size();
        }
        i += 1;
    }
    n
};

/// Room to expand one record into, on the decoder's stack (made only for
/// a record that needs it).
pub(crate) struct Space([u8; MAX_WHOLE]);

impl Space {
    pub(crate) fn new() -> Space {
        Space([0; MAX_WHOLE])
    }
}

/// A record, checked (`form`), in its record type's layout: as it came
/// when whole, else expanded into `space` (a compact one with its unused
/// path bytes zero; an older layout padded with zeroes, an exec record
/// without identity marked `EXEC_NO_IDENTITY`, a record without its fold
/// tag not folded).
pub(crate) fn whole<'a>(
    buf: &'a [u8],
    space: &'a mut Option<Space>,
) -> Result<&'a [u8], DecodeError> {
    let (h, kind, form) = form(buf)?;
    let want = kind.record_size();
    let size = h.size as usize;
    if form == Form::Whole {
        return Ok(&buf[..want]);
    }
    let v = &mut space.get_or_insert_with(Space::new).0[..want];
    match form {
        Form::Whole => unreachable!("returned above"),
        Form::Compact(c) => {
            let kept = size - c.trailer;
            v[..kept].copy_from_slice(&buf[..kept]);
            v[kept..want - c.trailer].fill(0);
            v[want - c.trailer..].copy_from_slice(&buf[kept..size]);
        }
        Form::ExecWithoutIdentity => {
            v[..size].copy_from_slice(&buf[..size]);
            v[size..].fill(0);
            let flags = offset_of!(sensor_common::ExecEvent, exec_flags);
            v[flags..flags + 4].copy_from_slice(&sensor_common::EXEC_NO_IDENTITY.to_le_bytes());
        }
        Form::Unfolded => {
            v[..size].copy_from_slice(&buf[..size]);
            v[size..].fill(0);
        }
    }
    v[offset_of!(Header, size)..offset_of!(Header, size) + 4]
        .copy_from_slice(&(want as u32).to_le_bytes());
    Ok(v)
}

/// The fold tag a record carries (`sensor_common::FoldTag`, its last
/// field): the kernel's fold key and the identical events folded since the
/// previous record of that key. None for a record that was not folded by
/// any key (a kind without a tag, folding off, a record made before tags).
pub fn fold_tag(buf: &[u8]) -> Option<FoldRef> {
    let (h, kind, form) = form(buf).ok()?;
    kind.unfolded_record_size()?;
    if form == Form::Unfolded || form == Form::ExecWithoutIdentity {
        return None;
    }
    // Last, whole or compact (a compact record's trailer is its tag).
    let end = h.size as usize;
    let tag: FoldTag = read(&buf[end - size_of::<FoldTag>()..end]);
    (tag.key.kind != 0).then_some(FoldRef {
        key: tag.key,
        folded: tag.folded,
        ts: h.ts_boot_ns,
    })
}

/// A record's fold tag (`fold_tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldRef {
    pub key: FoldKey,
    /// Identical events the kernel folded since the key's previous record.
    pub folded: u64,
    /// The record's time (boot ns).
    pub ts: u64,
}

// The tag is the last field of each record that carries one, and the
// whole trailer of a compact one.
const _: () = {
    use sensor_common::{Compact, MemAccessEvent, OpenEvent};
    assert!(<OpenEvent as Compact>::COMPACTION.trailer == size_of::<FoldTag>());
    assert!(offset_of!(OpenEvent, fold) + size_of::<FoldTag>() == size_of::<OpenEvent>());
    assert!(offset_of!(MemAccessEvent, fold) + size_of::<FoldTag>() == size_of::<MemAccessEvent>());
};

#[cfg(test)]
pub mod tests {
    use super::*;
    use sensor_common::{COMPACT_PATH_MAX, MATCH_INODE, OpenEvent, SRC_OPENAT};

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

    /// A key open of pid 42 (inode 77) carrying a fold tag with `folded`
    /// repeats.
    fn folded_open(folded: u64) -> OpenEvent {
        let mut e = open_event(42, "/etc/ssl/private/server.key", 77);
        e.fold.key.tgid = 42;
        e.fold.key.kind = EventKind::KeyOpen as u32;
        e.fold.key.obj = 77;
        e.fold.folded = folded;
        e
    }

    #[test]
    fn a_record_carries_its_fold_tag_and_an_older_one_decodes_without() {
        let mut e = folded_open(1234);
        let b = bytes_of(&e);
        let f = fold_tag(&b).unwrap();
        assert_eq!((f.key.obj, f.folded, f.ts), (77, 1234, e.hdr.ts_boot_ns));
        // Not folded by any key: no tag.
        e.fold.key.kind = 0;
        assert_eq!(fold_tag(&bytes_of(&e)), None);
        // A record from before fold tags (a recording): the same event.
        let short = EventKind::KeyOpen.unfolded_record_size().unwrap();
        let mut old = bytes_of(&e)[..short].to_vec();
        old[4..8].copy_from_slice(&(short as u32).to_le_bytes());
        assert_eq!(decode(&old).unwrap(), decode(&bytes_of(&e)).unwrap());
        assert_eq!(fold_tag(&old), None);
    }

    #[test]
    fn a_signal_carries_its_disposition_and_an_older_one_decodes_without() {
        // SAFETY: all-zero is valid for this plain record.
        let mut e: sensor_common::SignalEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::DumpSignal, 9);
        e.sig = 3;
        e.target = 20;
        e.disposition = sensor_common::SIG_DISP_HANDLED;
        let Event::Signal(s) = decode(&bytes_of(&e)).unwrap() else {
            panic!("a signal")
        };
        assert_eq!((s.sig, s.target, s.disposition), (3, 20, 3));
        // A record from before the disposition (a recording): not known.
        let short = sensor_common::SIGNAL_RECORD_WITHOUT_DISPOSITION;
        let mut old = bytes_of(&e)[..short].to_vec();
        old[4..8].copy_from_slice(&(short as u32).to_le_bytes());
        let Event::Signal(o) = decode(&old).unwrap() else {
            panic!("a signal")
        };
        assert_eq!(
            (o.sig, o.target, o.disposition),
            (3, 20, sensor_common::SIG_DISP_UNKNOWN)
        );
        // Any other size is malformed.
        let mut bad = bytes_of(&e)[..short + 4].to_vec();
        bad[4..8].copy_from_slice(&((short + 4) as u32).to_le_bytes());
        assert!(matches!(decode(&bad), Err(DecodeError::BadSize { .. })));
    }

    #[test]
    fn a_path_change_carries_its_new_names_directory_and_an_older_one_decodes_without() {
        // SAFETY: all-zero is valid for this plain record.
        let mut e: sensor_common::PathChangeEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::PathChange, 9);
        e.op = sensor_common::PATH_OP_RENAME;
        e.new[..4].copy_from_slice(b"evil");
        e.new_len = 4;
        e.base_flags = sensor_common::PATH_BASE_KNOWN;
        e.base_dev = 0x800001;
        e.base_ino = 77;
        let Event::PathChange(p) = decode(&bytes_of(&e)).unwrap() else {
            panic!("a path change")
        };
        assert_eq!((p.new.as_str(), p.base), ("evil", Some((0x800001, 77))));
        let short = sensor_common::PATH_CHANGE_WITHOUT_BASE;
        let mut old = bytes_of(&e)[..short].to_vec();
        old[4..8].copy_from_slice(&(short as u32).to_le_bytes());
        let Event::PathChange(o) = decode(&old).unwrap() else {
            panic!("a path change")
        };
        assert_eq!((o.new.as_str(), o.base), ("evil", None));
        assert_eq!(fold_tag(&bytes_of(&e)), None);
    }

    /// What the kernel sends for a whole record of a compactable kind
    /// (`Compaction::compact`).
    pub fn compact_bytes(whole: &[u8]) -> Vec<u8> {
        let h: Header = read(whole);
        let c = EventKind::from_u32(h.kind)
            .and_then(|k| k.compaction())
            .unwrap();
        let mut v = whole.to_vec();
        let n = c.compact(&mut v);
        v.truncate(n);
        v
    }

    /// A KPath of `n` bytes (components of up to 9 letters).
    fn kpath_len(n: usize) -> KPath {
        let mut p = kpath_of("/");
        for (i, b) in p.buf[..n].iter_mut().enumerate() {
            *b = if i % 10 == 9 {
                b'/'
            } else {
                b'a' + (i % 10) as u8
            };
        }
        p.len = n as u32;
        p
    }

    #[test]
    fn a_compact_record_decodes_as_the_whole_one() {
        let mut e = folded_open(9);
        let whole = bytes_of(&e);
        let c = compact_bytes(&whole);
        assert_eq!(
            c.len(),
            offset_of!(OpenEvent, path) + 8 + 32 + size_of::<FoldTag>()
        );
        assert_eq!(decode(&c).unwrap(), decode(&whole).unwrap());
        assert_eq!(fold_tag(&c), fold_tag(&whole));
        assert_eq!(fold_tag(&c).unwrap().folded, 9);
        // Every path length: compact up to COMPACT_PATH_MAX, whole beyond.
        for n in [0, 1, 7, 8, 9, 500, 1016, 1017, 1024, 1025, 1100, PATH_BUF] {
            e.path = kpath_len(n);
            let whole = bytes_of(&e);
            let c = compact_bytes(&whole);
            assert_eq!(c.len() < whole.len(), n <= COMPACT_PATH_MAX, "{n}");
            assert_eq!(decode(&c).unwrap(), decode(&whole).unwrap(), "{n}");
            assert_eq!(fold_tag(&c), fold_tag(&whole), "{n}");
        }
        // A size its path's length does not give is malformed: one word
        // more or less, or a path too long for a compact record.
        e.path = kpath_len(40);
        let c = compact_bytes(&bytes_of(&e));
        for delta in [-8i64, 8] {
            let mut bad = c.clone();
            let at = (c.len() as i64 - 56 + delta.min(0)) as usize;
            if delta > 0 {
                bad.splice(at..at, [0u8; 8]);
            } else {
                bad.drain(at..at + 8);
            }
            let n = bad.len() as u32;
            bad[4..8].copy_from_slice(&n.to_le_bytes());
            assert!(
                matches!(decode(&bad), Err(DecodeError::BadSize { .. })),
                "{delta}"
            );
            assert_eq!(fold_tag(&bad), None);
        }
        let mut long = c.clone();
        let path_len = offset_of!(OpenEvent, path);
        long[path_len..path_len + 4].copy_from_slice(&1100u32.to_le_bytes());
        assert!(matches!(decode(&long), Err(DecodeError::BadSize { .. })));
        // A record cut short of the size its header gives.
        assert!(matches!(
            decode(&c[..c.len() - 8]),
            Err(DecodeError::BadSize { .. })
        ));
    }

    #[test]
    fn compact_exec_write_and_lsm_records_decode_as_whole_ones() {
        use sensor_common::{DeniedEvent, ExecEvent, FdAccessEvent, FileWriteEvent};
        // SAFETY: all-zero is valid for these plain records.
        let mut x: ExecEvent = unsafe { std::mem::zeroed() };
        x.hdr = header(EventKind::Exec, 9);
        x.cmdline[..8].copy_from_slice(b"signerd\0");
        x.cmdline_len = 8;
        x.exe = kpath_of("/usr/sbin/signerd");
        (x.exe_ino, x.exe_dev, x.exec_flags) = (4242, 8 << 20 | 1, 2);
        // SAFETY: as above.
        let mut w: FileWriteEvent = unsafe { std::mem::zeroed() };
        w.hdr = header(EventKind::FileWrite, 9);
        (w.ino, w.dev, w.bytes) = (77, 8 << 20 | 1, 4096);
        w.path = kpath_of("/var/tmp/core.dump");
        // The LSM programs' records (staged per thread, `emit_lsm`).
        // SAFETY: as above.
        let mut d: DeniedEvent = unsafe { std::mem::zeroed() };
        d.hdr = header(EventKind::Denied, 9);
        (d.rule, d.ino, d.dev, d.observed) = (1, 77, 8 << 20 | 1, 1);
        d.path = kpath_of("/etc/ssl/private/ca.key");
        // SAFETY: as above.
        let mut f: FdAccessEvent = unsafe { std::mem::zeroed() };
        f.hdr = header(EventKind::FdAccess, 9);
        (f.ino, f.dev, f.op, f.opener, f.owner) = (77, 8 << 20 | 1, 1, 4242, 0);
        f.path = kpath_of("/etc/ssl/private/ca.key");
        for whole in [bytes_of(&x), bytes_of(&w), bytes_of(&d), bytes_of(&f)] {
            let c = compact_bytes(&whole);
            assert!(c.len() + PATH_BUF - 24 <= whole.len(), "{}", c.len());
            assert_eq!(decode(&c).unwrap(), decode(&whole).unwrap());
        }
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
