//! Open records (`sensor_common::open`): opens of watched or name-matched
//! files (failed ones by their path argument), of `/proc/<pid>/` files and
//! of raw devices.

use std::mem::offset_of;

use sensor_common::{ARG_BUF, EventKind, Header, KPath, OpenEvent};

use super::{Task, at, cstr, kpath_at, task};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRecord {
    pub task: Task,
    pub failed: bool,
    pub ret: i64,
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub flags: u32,
    pub dfd: i32,
    pub source: u32,
    pub matched: u32,
    pub watch_id: u32,
    pub name_rules: u32,
    /// The path argument as passed, if read.
    pub arg: Option<String>,
    /// Path rebuilt from the dentry (success only).
    pub path: Option<String>,
    pub path_truncated: bool,
    /// The opener's mount namespace is not the host's, and the file's mount
    /// is not in the opener's namespace (PATH_GUEST | PATH_OTHER_NS): a way
    /// out of a container (`/proc/<pid>/root`).
    pub escape: bool,
    /// For an open of a /proc/<pid>/ file: its PROC_* value, else 0.
    pub proc_file: u32,
    /// For an open of a /proc/<pid>/ file: the process (tgid) whose file it
    /// is, as the kernel resolved it (a protected process, also through one
    /// of its thread ids); 0 when user space resolves the directory.
    pub proc_target: u32,
    /// For a raw open (kernel memory, a key store's block device): its
    /// RAW_* value, else 0; `rdev` the device's number (kernel dev_t).
    pub raw: u32,
    pub rdev: u32,
    /// The inode's i_generation, f_mode, owner uid and size (success only).
    pub igen: u32,
    pub fmode: u32,
    pub owner: u32,
    pub size: i64,
}

impl OpenRecord {
    /// This open created the file.
    pub fn created(&self) -> bool {
        !self.failed && self.fmode & sensor_common::FMODE_CREATED != 0
    }
}

/// `KeyOpen`, `KeyOpenFailed` (no path: the open failed), `ProcFileOpen`
/// (its PROC_* value in `name_rules`, the kernel's target in `watch_id`)
/// and `RawOpen` (RAW_* in `name_rules`, the device in `watch_id`).
pub(super) fn open(buf: &[u8], h: &Header, kind: EventKind) -> OpenRecord {
    let f = |o: usize| -> u32 { at(buf, o) };
    let n = (f(offset_of!(OpenEvent, arg_len)) as usize).min(ARG_BUF);
    let a = offset_of!(OpenEvent, arg);
    let arg = (n > 0).then(|| cstr(&buf[a..a + n]));
    let failed = kind == EventKind::KeyOpenFailed;
    let pflags: u32 = at(buf, offset_of!(OpenEvent, path) + offset_of!(KPath, flags));
    let both = sensor_common::PATH_GUEST | sensor_common::PATH_OTHER_NS;
    let escape = !failed && pflags & both == both;
    let (path, path_truncated) = if failed {
        (None, false)
    } else {
        match kpath_at(buf, offset_of!(OpenEvent, path)) {
            Some((p, t)) => (Some(p), t),
            None => (None, false),
        }
    };
    OpenRecord {
        task: task(h),
        failed,
        ret: at(buf, offset_of!(OpenEvent, ret)),
        dev: f(offset_of!(OpenEvent, dev)),
        ino: at(buf, offset_of!(OpenEvent, ino)),
        mode: f(offset_of!(OpenEvent, mode)),
        flags: f(offset_of!(OpenEvent, flags)),
        dfd: at(buf, offset_of!(OpenEvent, dfd)),
        source: f(offset_of!(OpenEvent, source)),
        matched: f(offset_of!(OpenEvent, matched)),
        watch_id: f(offset_of!(OpenEvent, watch_id)),
        name_rules: f(offset_of!(OpenEvent, name_rules)),
        arg,
        path,
        path_truncated,
        escape,
        proc_file: if kind == EventKind::ProcFileOpen {
            f(offset_of!(OpenEvent, name_rules))
        } else {
            0
        },
        proc_target: if kind == EventKind::ProcFileOpen {
            f(offset_of!(OpenEvent, watch_id))
        } else {
            0
        },
        raw: if kind == EventKind::RawOpen {
            f(offset_of!(OpenEvent, name_rules))
        } else {
            0
        },
        rdev: if kind == EventKind::RawOpen {
            f(offset_of!(OpenEvent, watch_id))
        } else {
            0
        },
        igen: f(offset_of!(OpenEvent, igen)),
        fmode: f(offset_of!(OpenEvent, fmode)),
        owner: f(offset_of!(OpenEvent, owner)),
        size: at(buf, offset_of!(OpenEvent, size)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Event, decode,
        tests::{bytes_of, open_event},
    };

    #[test]
    fn open_round_trip() {
        let e = open_event(42, "/etc/ssl/private/server.key", 77);
        let Event::Open(o) = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(o.task.pid, 42);
        assert_eq!(o.task.comm, "test");
        assert_eq!(o.ino, 77);
        assert_eq!(o.path.as_deref(), Some("/etc/ssl/private/server.key"));
        assert_eq!(o.arg.as_deref(), Some("/etc/ssl/private/server.key"));
        assert!(!o.failed);
    }
}
