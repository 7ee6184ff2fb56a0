//! LSM records (`sensor_common::lsm`): what a BPF LSM hook denied, and
//! watched files accessed through an fd the process did not open.

use std::mem::offset_of;

use sensor_common::{DeniedEvent, FdAccessEvent, Header};

use super::{Task, at, kpath_at, task};

/// A watched file read, written or mapped through an fd the process did
/// not open (BPF LSM backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdAccessRecord {
    /// The reader.
    pub task: Task,
    pub dev: u32,
    pub ino: u64,
    /// FDA_* value.
    pub op: u32,
    /// FDV_* value.
    pub how: u32,
    /// Tgid that opened the file (0: unknown).
    pub opener: u32,
    /// The syscall a received fd arrived by, -1 otherwise.
    pub syscall: i32,
    pub flags: u32,
    pub watch_id: u32,
    pub watch_flags: u32,
    pub igen: u32,
    pub owner: u32,
    pub path: Option<String>,
    pub path_truncated: bool,
}

/// An operation a BPF LSM hook denied (a rule in enforce mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedRecord {
    /// The actor (for core-dump: the process that was dumping).
    pub task: Task,
    /// ENF_* value.
    pub rule: u32,
    /// Target tgid (memory rules, forced-crash).
    pub target: u32,
    /// Signal (forced-crash) or ptrace access mode.
    pub arg: u32,
    /// The actor's syscall number, -1 when none.
    pub syscall: i32,
    pub dev: u32,
    pub ino: u64,
    pub watch_id: u32,
    pub flags: u32,
    /// Not a denial: what the hook saw (`DENIED_OBSERVED`).
    pub observed: bool,
    /// The file (key-file-open, core-dump).
    pub path: Option<String>,
}

pub(super) fn denied(buf: &[u8], h: &Header) -> DeniedRecord {
    let f = |o: usize| -> u32 { at(buf, o) };
    let h2 = task(h);
    DeniedRecord {
        task: h2,
        rule: f(offset_of!(DeniedEvent, rule)),
        target: f(offset_of!(DeniedEvent, target)),
        arg: f(offset_of!(DeniedEvent, arg)),
        syscall: at(buf, offset_of!(DeniedEvent, syscall)),
        dev: f(offset_of!(DeniedEvent, dev)),
        ino: at(buf, offset_of!(DeniedEvent, ino)),
        watch_id: f(offset_of!(DeniedEvent, watch_id)),
        flags: f(offset_of!(DeniedEvent, flags)),
        observed: f(offset_of!(DeniedEvent, observed)) == sensor_common::DENIED_OBSERVED,
        path: kpath_at(buf, offset_of!(DeniedEvent, path)).map(|(p, _)| p),
    }
}

pub(super) fn fd_access(buf: &[u8], h: &Header) -> FdAccessRecord {
    let f = |o: usize| -> u32 { at(buf, o) };
    let (path, path_truncated) = match kpath_at(buf, offset_of!(FdAccessEvent, path)) {
        Some((p, t)) => (Some(p), t),
        None => (None, false),
    };
    FdAccessRecord {
        task: task(h),
        dev: f(offset_of!(FdAccessEvent, dev)),
        ino: at(buf, offset_of!(FdAccessEvent, ino)),
        op: f(offset_of!(FdAccessEvent, op)),
        how: f(offset_of!(FdAccessEvent, how)),
        opener: f(offset_of!(FdAccessEvent, opener)),
        syscall: at(buf, offset_of!(FdAccessEvent, syscall)),
        flags: f(offset_of!(FdAccessEvent, flags)),
        watch_id: f(offset_of!(FdAccessEvent, watch_id)),
        watch_flags: f(offset_of!(FdAccessEvent, watch_flags)),
        igen: f(offset_of!(FdAccessEvent, igen)),
        owner: f(offset_of!(FdAccessEvent, owner)),
        path,
        path_truncated,
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::EventKind;

    use super::{
        super::{
            DecodeError, Event, decode,
            tests::{bytes_of, header, kpath_of},
        },
        *,
    };

    #[test]
    fn fd_access_round_trip() {
        use sensor_common::{FDA_READ, FDV_RECEIVED, WATCH_SELF};
        // SAFETY: all-zero is valid for this plain record.
        let mut e: FdAccessEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::FdAccess, 51);
        e.ino = 77;
        e.dev = (8 << 20) | 1;
        e.op = FDA_READ;
        e.how = FDV_RECEIVED;
        e.opener = 50;
        e.syscall = 47;
        e.watch_id = 2;
        e.watch_flags = WATCH_SELF;
        e.path = kpath_of("/etc/ssl/private/ca.key");
        let Event::FdAccess(r) = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!((r.task.pid, r.opener, r.syscall), (51, 50, 47));
        assert_eq!(
            (r.op, r.how, r.ino, r.watch_id),
            (FDA_READ, FDV_RECEIVED, 77, 2)
        );
        assert_eq!(r.path.as_deref(), Some("/etc/ssl/private/ca.key"));
        let b = bytes_of(&e);
        assert!(matches!(
            decode(&b[..b.len() - 8]),
            Err(DecodeError::BadSize { .. })
        ));
    }
}
