//! Process records (`sensor_common::process`): exec, fork, exit and
//! rename feed the process table.

use std::mem::offset_of;

use sensor_common::{CMDLINE_BUF, ExecEvent, ExitEvent, ForkEvent, Header, RenameEvent};

use super::{Event, at, cstr, kpath_at, read, task};

/// `Exec`: the command line (NUL-separated) and the executable.
pub(super) fn exec(buf: &[u8], h: &Header) -> Event {
    let len: u32 = at(buf, offset_of!(ExecEvent, cmdline_len));
    let c = offset_of!(ExecEvent, cmdline);
    let n = (len as usize).min(CMDLINE_BUF);
    let argv = buf[c..c + n]
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Event::Exec {
        task: task(h),
        ppid: at(buf, offset_of!(ExecEvent, ppid)),
        start_ns: at(buf, offset_of!(ExecEvent, start_ns)),
        argv,
        exe: kpath_at(buf, offset_of!(ExecEvent, exe)).map(|(p, _)| p),
        exe_id: {
            let ino: u64 = at(buf, offset_of!(ExecEvent, exe_ino));
            (ino != 0).then(|| (at(buf, offset_of!(ExecEvent, exe_dev)), ino))
        },
        exec_flags: at(buf, offset_of!(ExecEvent, exec_flags)),
    }
}

pub(super) fn fork(buf: &[u8]) -> Event {
    let e: ForkEvent = read(buf);
    Event::Fork {
        parent: task(&e.hdr),
        child_pid: e.child_pid,
        child_start_ns: e.child_start_ns,
    }
}

pub(super) fn exit(buf: &[u8]) -> Event {
    let e: ExitEvent = read(buf);
    Event::Exit {
        task: task(&e.hdr),
        exit_code: e.exit_code,
        environ_reads: e.environ_reads,
    }
}

pub(super) fn rename(buf: &[u8]) -> Event {
    let e: RenameEvent = read(buf);
    Event::Rename {
        task: task(&e.hdr),
        comm: cstr(&e.comm),
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::{COMM_LEN, EventKind};

    use super::{
        super::{
            DecodeError, decode,
            tests::{bytes_of, header, kpath_of},
        },
        *,
    };

    #[test]
    fn exec_argv() {
        // SAFETY: all-zero is valid for this plain record.
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.hdr = header(EventKind::Exec, 9);
        let cmd = b"cat\0/etc/shadow\0";
        e.cmdline[..cmd.len()].copy_from_slice(cmd);
        e.cmdline_len = cmd.len() as u32;
        e.exe = kpath_of("/usr/bin/cat");
        e.exe_dev = 8 << 20 | 1;
        e.exe_ino = 4242;
        e.exec_flags = sensor_common::EXEC_ALLOWLISTED | sensor_common::EXEC_LD_ENV;
        let Event::Exec {
            argv,
            exe,
            exe_id,
            exec_flags,
            ..
        } = decode(&bytes_of(&e)).unwrap()
        else {
            panic!()
        };
        assert_eq!(argv, vec!["cat", "/etc/shadow"]);
        assert_eq!(exe.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(exe_id, Some((8 << 20 | 1, 4242)));
        assert_eq!(exec_flags, e.exec_flags);
        // The same record as written before it carried the identity.
        let mut old = bytes_of(&e);
        old.truncate(sensor_common::EXEC_RECORD_WITHOUT_IDENTITY);
        let size = std::mem::offset_of!(Header, size);
        old[size..size + 4]
            .copy_from_slice(&(sensor_common::EXEC_RECORD_WITHOUT_IDENTITY as u32).to_le_bytes());
        let Event::Exec {
            argv,
            exe_id,
            exec_flags,
            ..
        } = decode(&old).unwrap()
        else {
            panic!()
        };
        assert_eq!(argv, vec!["cat", "/etc/shadow"]);
        assert_eq!(exe_id, None);
        assert_eq!(exec_flags, sensor_common::EXEC_NO_IDENTITY);
    }

    #[test]
    fn rename_round_trip() {
        let mut comm = [0u8; COMM_LEN];
        comm[..7].copy_from_slice(b"signerd");
        let mut e = RenameEvent {
            hdr: header(EventKind::Rename, 9),
            comm,
        };
        e.hdr.tid = 10;
        let b = bytes_of(&e);
        let Event::Rename { task, comm } = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!((task.pid, task.tid, task.comm.as_str()), (9, 10, "test"));
        assert_eq!(comm, "signerd");
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::BadSize { .. })
        ));
        // A full 16-byte name without its NUL stays within the record.
        e.comm = *b"0123456789abcdef";
        let Event::Rename { comm, .. } = decode(&bytes_of(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(comm, "0123456789abcdef");
    }
}
