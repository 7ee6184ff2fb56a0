//! The flow stage: what tainted processes write, send, rename and link, and
//! who opens the tracked files (dumps and derived copies). It feeds the
//! tracked-file registry (`track.rs`) and raises `userspace-dump`,
//! `tracked-copy`, `exfiltration`, `dump-file-access` and (with the
//! scanner) `key-material`.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sensor_common::{
    InodeKey, MATCH_INODE, MATCH_PARENT, PATH_OP_LINK, TAINT_FILE, TAINT_HELPER, TAINT_MEMORY,
    TAINT_PIPE, TRACKED_PENDING, VIA_CLONE, VIA_COPY_FILE_RANGE, VIA_IO_URING, VIA_MMAP, VIA_SEND,
    VIA_SENDFILE, VIA_SPLICE, WATCH_SELF, WATCH_TRACKED, WatchEntry, names::name_key_of,
};

use crate::{
    agent::Pipeline,
    alert::{DumpDetail, FlowDetail, Severity, Target},
    decode::{OpenRecord, PathRecord, SendRecord, Task, WriteRecord},
    detect::{
        ATTACK_ARCHIVE, ATTACK_CREDENTIAL_DUMPING, ATTACK_EXFIL_ALT, ATTACK_EXFIL_C2,
        ATTACK_LOCAL_DATA, ATTACK_STAGED, FlowAlert, RULE_DUMP_FILE_ACCESS, RULE_EXFILTRATION,
        RULE_TRACKED_COPY, RULE_USERSPACE_DUMP,
    },
    proctab::ProcInfo,
    track::{Origin, TrackedKind},
    watch::{kdev, st_dev},
};

/// A protected process's crash through a pipe core_pattern, waiting for
/// its helper to finish writing.
pub struct PendingDump {
    pub pid: u32,
    pub dumped: ProcInfo,
    pub detail: DumpDetail,
    pub ts_boot_ns: u64,
    pub helper: Option<u32>,
    pub deadline: Instant,
}

/// A user-space dump being written, reported at its close.
pub struct PendingUserDump {
    pub id: u32,
    pub actor: ProcInfo,
    pub dumped: Origin,
    pub via: &'static str,
    pub bytes: i64,
    pub ts_boot_ns: u64,
    pub deadline: Instant,
}

/// The files a core_pattern pipe helper wrote.
pub struct HelperRec {
    pub files: Vec<u32>,
    pub argv: std::sync::Arc<[String]>,
    pub exited: bool,
}

/// How long a pipe-helper crash waits for the helper's files.
const HELPER_WAIT: Duration = Duration::from_secs(10);
/// Most memory readers remembered.
const MEM_READERS: usize = 4096;

fn via_name(via: u32) -> &'static str {
    match via {
        VIA_SEND => "send",
        VIA_SENDFILE => "sendfile",
        VIA_COPY_FILE_RANGE => "copy_file_range",
        VIA_SPLICE => "splice",
        VIA_CLONE => "reflink",
        VIA_IO_URING => "io_uring",
        VIA_MMAP => "mmap",
        _ => "write",
    }
}

const ARCHIVERS: &[&str] = &[
    "tar", "gzip", "pigz", "bzip2", "xz", "zstd", "lz4", "zip", "7z", "7za", "rar", "cpio",
];
const ARCHIVE_EXTS: &[&str] = &[
    ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z", ".rar", ".cpio", ".tbz2",
    ".txz",
];

/// Is this write making an archive (by the writer's program or the name)?
fn is_archive(actor: &ProcInfo, path: &str) -> bool {
    let prog = Path::new(&*actor.exe)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&actor.comm);
    ARCHIVERS.contains(&prog)
        || ARCHIVERS.contains(&actor.comm.as_str())
        || ARCHIVE_EXTS.iter().any(|e| path.ends_with(e))
}

/// What the first bytes of a file say it is.
pub fn file_format(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 18];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    if n >= 18 && head[..4] == *b"\x7fELF" {
        // e_type (little endian on the hosts we run on): 4 = ET_CORE.
        let e_type = u16::from_le_bytes([head[16], head[17]]);
        // Anything else is a raw image (a memory dump starts with the
        // program's own mapped ELF header).
        return Some(if e_type == 4 { "elf-core" } else { "raw" }.into());
    }
    Some("raw".into())
}

/// A path argument as the process saw it: (as shown, as reachable from
/// here through /proc/<pid>/{root,cwd,fd/N}).
pub fn user_path(pid: u32, dfd: i32, arg: &str) -> (PathBuf, PathBuf) {
    let proc_base = |p: &str| PathBuf::from(format!("/proc/{pid}/{p}"));
    if arg.starts_with('/') {
        let root = proc_base("root");
        let seen = if root.exists() {
            root.join(arg.trim_start_matches('/'))
        } else {
            PathBuf::from(arg)
        };
        (PathBuf::from(arg), seen)
    } else {
        let base = if dfd == -100 {
            proc_base("cwd")
        } else {
            proc_base(&format!("fd/{dfd}"))
        };
        let shown = std::fs::read_link(&base)
            .map(|b| b.join(arg))
            .unwrap_or_else(|_| PathBuf::from(arg));
        (shown, base.join(arg))
    }
}

impl Pipeline {
    /// Remembers a successful memory read of a protected process (the
    /// actor's next file may be a dump of it).
    pub(crate) fn note_memory_reader(&mut self, actor: u32, target: &ProcInfo) {
        if self.mem_readers.len() >= MEM_READERS {
            self.mem_readers.clear();
        }
        self.mem_readers.insert(actor, Origin::of(target));
    }

    /// The protected process whose memory `pid` (or an ancestor that
    /// passed its taint on at fork) read.
    fn memory_source(&mut self, pid: u32) -> Option<Origin> {
        let mut cur = pid;
        for _ in 0..8 {
            if let Some(o) = self.mem_readers.get(&cur) {
                return Some(o.clone());
            }
            let p = self.procs.get(cur)?.ppid;
            if p <= 1 {
                return None;
            }
            cur = p;
        }
        None
    }

    /// A key file opened successfully: it is an origin of lineages.
    pub(crate) fn note_key(&mut self, rec: &OpenRecord, path: &str, allowed: bool) {
        if rec.failed || rec.ino == 0 {
            return;
        }
        let (id, _) = self.registry.register(
            rec.dev,
            rec.ino,
            path.to_string(),
            TrackedKind::Key,
            "key",
            None,
            None,
            None,
        );
        if let Some(t) = self.registry.get_mut(id)
            && t.kind == TrackedKind::Key
            && rec.matched & (MATCH_INODE | MATCH_PARENT) != 0
        {
            t.watch = Some(rec.watch_id);
        }
        // An allowlisted reader (the service that owns the key) is not
        // followed: its logs and TLS traffic are not copies.
        if allowed && let Some(m) = self.kmaps.as_mut() {
            let _ = m.tainted.remove(&rec.task.pid);
        }
    }

    /// Puts a tracked file in the kernel's watch map (opens of it are
    /// reported, reads taint) and its name in the rename filter.
    pub(crate) fn track_in_kernel(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        let Some(m) = self.kmaps.as_mut() else {
            return;
        };
        let key = InodeKey {
            dev: kdev,
            _pad: 0,
            ino,
        };
        let entry = WatchEntry {
            watch_id: id,
            flags: WATCH_SELF | WATCH_TRACKED,
        };
        if let Err(e) = m.watched.insert(key, entry, 0) {
            tracing::warn!("tracking {path} in the kernel: {e}");
        }
        if let Some(name) = Path::new(path).file_name() {
            let _ = m.names.insert(name_key_of(name.as_encoded_bytes()), 1, 0);
        }
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// A tainted process wrote a regular file. The kernel marked it
    /// tracked (`TRACKED_PENDING`) at that write; a file that is not
    /// registered here is taken out of the kernel's watch map again.
    pub(crate) fn file_write(&mut self, w: &WriteRecord) {
        self.file_write_track(w);
        if self.registry.by_inode(w.dev, w.ino).is_none()
            && let Some(m) = self.kmaps.as_mut()
        {
            let key = InodeKey {
                dev: w.dev,
                _pad: 0,
                ino: w.ino,
            };
            if m.watched
                .get(&key, 0)
                .is_ok_and(|e| e.watch_id == TRACKED_PENDING)
            {
                let _ = m.watched.remove(&key);
            }
        }
    }

    fn file_write_track(&mut self, w: &WriteRecord) {
        let actor = self.procs.resolve(&w.task);
        let mut path = w.path.clone().unwrap_or_default();
        if w.path_truncated {
            path.insert_str(0, "...");
        }
        if let Some(t) = self.registry.by_inode(w.dev, w.ino) {
            // Written again (after a close): rescan when it is closed.
            let id = t.id;
            if let Some(t) = self.registry.get_mut(id) {
                t.scanned = false;
            }
            return;
        }
        let via = via_name(w.via);
        let ts = self.clock.wall(w.task.ts_boot_ns);
        let t = &w.taint;

        if t.flags & TAINT_HELPER != 0 && self.helper_of(&actor).is_some() {
            self.helper_wrote(&actor, w, path);
            return;
        }
        if t.flags & TAINT_MEMORY != 0
            && let Some(dumped) = self.memory_source(actor.pid)
        {
            let (id, _) = self.registry.register(
                w.dev,
                w.ino,
                path.clone(),
                TrackedKind::Dump,
                "userspace-dump",
                None,
                Some(Origin::of(&actor)),
                Some(dumped.clone()),
            );
            self.track_in_kernel(id, w.dev, w.ino, &path);
            // Reported when the writer closes it (or exits): by then the
            // file says what it is.
            self.pending_udumps.push(PendingUserDump {
                id,
                actor,
                dumped,
                via,
                bytes: w.bytes,
                ts_boot_ns: w.task.ts_boot_ns,
                deadline: Instant::now() + HELPER_WAIT,
            });
            return;
        }
        if t.flags & (TAINT_FILE | TAINT_PIPE) == 0 || t.src_ino == 0 {
            return;
        }
        if (t.src_dev, t.src_ino) == (w.dev, w.ino) {
            return;
        }
        let Some(src) = self.registry.by_inode(t.src_dev, t.src_ino) else {
            tracing::debug!(
                "write by {} of {path}: source {}:{} not tracked",
                actor.pid,
                t.src_dev,
                t.src_ino
            );
            return;
        };
        let src_id = src.id;
        let src_path = src.path.clone();
        let src_kind = src.kind;
        let src_watch = src.watch;
        if src_kind == TrackedKind::Key && self.policy.allowed(&actor.exe, src_watch) {
            return;
        }
        let archive = is_archive(&actor, &path);
        let how = if archive { "archive" } else { via };
        let (id, _) = self.registry.register(
            w.dev,
            w.ino,
            path.clone(),
            TrackedKind::Copy,
            how,
            Some(src_id),
            Some(Origin::of(&actor)),
            None,
        );
        self.track_in_kernel(id, w.dev, w.ino, &path);
        let root = self.registry.root_kind(id).unwrap_or(src_kind);
        let what = if root == TrackedKind::Dump {
            "a dump"
        } else {
            "key material"
        };
        let message = format!(
            "{} (pid {}, uid {}) {} {path} from {src_path} ({what})",
            actor.comm,
            actor.pid,
            actor.uid,
            if archive { "archived into" } else { "wrote" },
        );
        let dumped = self.registry.get(id).and_then(|t| t.dumped.clone());
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_TRACKED_COPY,
                attack: if archive {
                    ATTACK_ARCHIVE
                } else {
                    ATTACK_STAGED
                },
                severity: if root == TrackedKind::Dump {
                    Severity::Critical
                } else {
                    Severity::High
                },
                score: if root == TrackedKind::Dump { 85 } else { 75 },
                actor: &actor,
                target: Target::File {
                    path: path.clone(),
                    dev: st_dev(w.dev),
                    inode: w.ino,
                },
                message,
                flow: FlowDetail {
                    via,
                    tracked_id: Some(id),
                    lineage: self.registry.lineage(id),
                    dumped,
                    pipe_from: (t.flags & TAINT_PIPE != 0 && t.via_pid != 0).then_some(t.via_pid),
                    bytes: Some(w.bytes),
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, w.task.ts_boot_ns);
    }

    /// A tainted process closed a file it wrote: a tracked file is complete
    /// enough to look at.
    pub(crate) fn file_closed(&mut self, task: &Task, dev: u32, ino: u64) {
        let Some(t) = self.registry.by_inode(dev, ino) else {
            return;
        };
        let id = t.id;
        let path = PathBuf::from(&t.path);
        let scanned = t.scanned;
        if let Some(i) = self
            .pending_udumps
            .iter()
            .position(|d| d.id == id && d.actor.pid == task.pid)
        {
            let d = self.pending_udumps.remove(i);
            self.emit_user_dump(d);
        }
        if !scanned {
            self.queue_scan(id, path);
        }
    }

    /// The writer of pending user-space dumps exited.
    pub(crate) fn writer_exited(&mut self, pid: u32) {
        let mut i = 0;
        while i < self.pending_udumps.len() {
            if self.pending_udumps[i].actor.pid == pid {
                let d = self.pending_udumps.remove(i);
                let id = d.id;
                self.emit_user_dump(d);
                if let Some(t) = self.registry.get(id)
                    && !t.scanned
                {
                    let p = PathBuf::from(&t.path);
                    self.queue_scan(id, p);
                }
            } else {
                i += 1;
            }
        }
    }

    fn emit_user_dump(&mut self, d: PendingUserDump) {
        let Some(t) = self.registry.get(d.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let actor = &d.actor;
        let dumped = &d.dumped;
        let format = self
            .fact_value(format!("format:{kd}:{ino}"), || {
                file_format(Path::new(&path)).into()
            })
            .as_str()
            .map(str::to_string);
        let message = format!(
            "{} (pid {}, uid {}) read the memory of protected process {} (pid {}) and wrote {path}{}: a user-space dump",
            actor.comm,
            actor.pid,
            actor.uid,
            dumped.comm,
            dumped.pid,
            match format.as_deref() {
                Some("elf-core") => " (an ELF core file)",
                _ => "",
            }
        );
        let ts = self.clock.wall(d.ts_boot_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_USERSPACE_DUMP,
                attack: ATTACK_CREDENTIAL_DUMPING,
                severity: Severity::Critical,
                score: 90,
                actor,
                target: Target::File {
                    path,
                    dev: st_dev(kd),
                    inode: ino,
                },
                message,
                flow: FlowDetail {
                    via: d.via,
                    tracked_id: Some(d.id),
                    lineage: self.registry.lineage(d.id),
                    dumped: Some(d.dumped.clone()),
                    bytes: Some(d.bytes),
                    format,
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, d.ts_boot_ns);
    }

    /// A usermode helper (child of kthreadd) exec'd: remember it when it
    /// is the core_pattern pipe helper (a script's argv starts with its
    /// interpreter, so the first two arguments are checked).
    pub(crate) fn usermode_helper_exec(&mut self, pid: u32) {
        let (pattern, _) = self.core_pattern();
        let Some(helper) = pattern
            .strip_prefix('|')
            .and_then(|p| p.split_whitespace().next())
        else {
            return;
        };
        let Some(p) = self.procs.get(pid) else { return };
        if p.argv.iter().take(2).any(|a| a == helper) || &*p.exe == helper {
            if self.dump_helpers.len() >= 256 {
                self.dump_helpers.clear();
            }
            self.dump_helpers.insert(pid, p.argv.clone());
        }
    }

    /// The pipe helper behind `p` (itself or an ancestor).
    fn helper_of(&mut self, p: &ProcInfo) -> Option<(u32, std::sync::Arc<[String]>)> {
        let mut cur = p.pid;
        for _ in 0..8 {
            if let Some(argv) = self.dump_helpers.get(&cur) {
                return Some((cur, argv.clone()));
            }
            let parent = self.procs.get(cur)?.ppid;
            if parent <= 2 {
                return None;
            }
            cur = parent;
        }
        None
    }

    /// The pipe helper (or a child of it) wrote a file: a dump.
    fn helper_wrote(&mut self, actor: &ProcInfo, w: &WriteRecord, path: String) {
        let Some((helper_pid, helper_argv)) = self.helper_of(actor) else {
            return;
        };
        // The crashed process: a pid among the helper's arguments.
        let pending = self.pending_dumps.iter().position(|d| {
            d.helper == Some(helper_pid) || helper_argv.iter().any(|a| *a == d.pid.to_string())
        });
        let dumped = pending.map(|i| Origin::of(&self.pending_dumps[i].dumped));
        let (id, _) = self.registry.register(
            w.dev,
            w.ino,
            path.clone(),
            TrackedKind::Dump,
            "pipe-helper",
            None,
            Some(Origin::of(actor)),
            dumped,
        );
        self.track_in_kernel(id, w.dev, w.ino, &path);
        if self.helper_files.len() >= 256 {
            self.helper_files.retain(|_, h| !h.exited);
        }
        let rec = self
            .helper_files
            .entry(helper_pid)
            .or_insert_with(|| HelperRec {
                files: Vec::new(),
                argv: helper_argv,
                exited: false,
            });
        rec.files.push(id);
        if let Some(i) = pending {
            self.pending_dumps[i].helper = Some(helper_pid);
        }
    }

    /// A protected process dumped core through a pipe: the alert waits
    /// for the helper's files (until the helper exits, or HELPER_WAIT).
    pub(crate) fn pend_pipe_dump(&mut self, dumped: ProcInfo, detail: DumpDetail, ts: u64) {
        let pid = dumped.pid.to_string();
        // A helper that already wrote for this pid (core_pipe_limit makes
        // the kernel wait for the helper before the crashed task exits).
        let helper = self
            .helper_files
            .iter()
            .find(|(_, h)| h.argv.contains(&pid))
            .map(|(p, _)| *p);
        self.pending_dumps.push(PendingDump {
            pid: dumped.pid,
            dumped,
            detail,
            ts_boot_ns: ts,
            helper,
            deadline: Instant::now() + HELPER_WAIT,
        });
        // Its files written and the helper gone: nothing more to wait for.
        if let Some(h) = helper
            && self.helper_files.get(&h).is_some_and(|r| r.exited)
        {
            self.helper_exited(h);
        }
    }

    /// A process exited: when it is a pipe helper, its crash alerts go
    /// (or wait for the crashed process's exit, which comes after).
    pub(crate) fn helper_exited(&mut self, pid: u32) {
        let files = match self.helper_files.get_mut(&pid) {
            Some(h) => {
                let first = !h.exited;
                h.exited = true;
                first.then(|| h.files.clone())
            }
            None => None,
        };
        let mut i = 0;
        while i < self.pending_dumps.len() {
            if self.pending_dumps[i].helper == Some(pid) {
                let d = self.pending_dumps.remove(i);
                let all = self
                    .helper_files
                    .remove(&pid)
                    .map(|h| h.files)
                    .unwrap_or_default();
                self.emit_pipe_dump(d, all);
            } else {
                i += 1;
            }
        }
        if let Some(files) = files {
            for id in files {
                if let Some(t) = self.registry.get(id) {
                    let p = PathBuf::from(&t.path);
                    self.queue_scan(id, p);
                }
            }
        }
    }

    /// Pipe crashes whose helper did not finish in time, and user-space
    /// dumps still open.
    pub(crate) fn expire_pending_dumps(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending_udumps.len() {
            if self.pending_udumps[i].deadline <= now {
                let d = self.pending_udumps.remove(i);
                self.emit_user_dump(d);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.pending_dumps.len() {
            if self.pending_dumps[i].deadline <= now {
                let d = self.pending_dumps.remove(i);
                let files = d
                    .helper
                    .and_then(|h| self.helper_files.get(&h).map(|r| r.files.clone()))
                    .unwrap_or_default();
                self.emit_pipe_dump(d, files);
            } else {
                i += 1;
            }
        }
    }

    fn emit_pipe_dump(&mut self, d: PendingDump, files: Vec<u32>) {
        let mut detail = d.detail;
        detail.helper_pid = d.helper;
        for id in &files {
            if let Some(t) = self.registry.get_mut(*id) {
                if t.dumped.is_none() {
                    t.dumped = Some(Origin::of(&d.dumped));
                }
                detail.files.push(t.path.clone());
            }
        }
        detail.tracked_id = files.first().copied();
        let ts = self.clock.wall(d.ts_boot_ns);
        let alert = self.policy.core_dump(&d.dumped, detail, &self.host, ts);
        self.emit(alert, d.ts_boot_ns);
    }

    /// The core file the kernel wrote for a protected process: registered
    /// as a dump.
    pub(crate) fn register_core_file(&mut self, dumped: &ProcInfo, path: &Path) -> Option<u32> {
        let md = std::fs::metadata(path).ok()?;
        let kd = kdev(md.dev());
        let (id, _) = self.registry.register(
            kd,
            md.ino(),
            path.to_string_lossy().into_owned(),
            TrackedKind::Dump,
            "core-dump",
            None,
            None,
            Some(Origin::of(dumped)),
        );
        self.track_in_kernel(id, kd, md.ino(), &path.to_string_lossy());
        self.queue_scan(id, path.to_path_buf());
        Some(id)
    }

    /// A tainted process sent on a socket.
    pub(crate) fn net_send(&mut self, s: &SendRecord) {
        // Only inet sockets leave the host.
        if s.family != 2 && s.family != 10 {
            return;
        }
        let actor = self.procs.resolve(&s.task);
        let t = &s.taint;
        let src = (t.src_ino != 0)
            .then(|| self.registry.by_inode(t.src_dev, t.src_ino))
            .flatten()
            .map(|x| (x.id, x.kind, x.path.clone(), x.watch));
        let dumped = if t.flags & TAINT_MEMORY != 0 {
            self.memory_source(actor.pid)
        } else {
            None
        };
        let (what, tracked_id) = match (&src, &dumped) {
            (Some((id, kind, path, watch)), _) => {
                if *kind == TrackedKind::Key && self.policy.allowed(&actor.exe, *watch) {
                    return;
                }
                (format!("after reading {path}"), Some(*id))
            }
            (None, Some(d)) => (
                format!(
                    "after reading the memory of protected process {} (pid {})",
                    d.comm, d.pid
                ),
                None,
            ),
            (None, None) => return,
        };
        let protocol = match (s.sock_type, s.protocol) {
            (1, _) | (_, 6) => "tcp",
            (2, _) | (_, 17) => "udp",
            (_, 132) => "sctp",
            (3, _) => "raw",
            _ => "other",
        };
        let remote = s.remote.map(|a| a.to_string());
        let message = format!(
            "{} (pid {}, uid {}) sent data over {protocol} to {} {what}",
            actor.comm,
            actor.pid,
            actor.uid,
            remote.as_deref().unwrap_or("an unknown peer"),
        );
        let dumped = dumped.or_else(|| {
            tracked_id
                .and_then(|id| self.registry.get(id))
                .and_then(|t| t.dumped.clone())
        });
        let ts = self.clock.wall(s.task.ts_boot_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_EXFILTRATION,
                attack: if protocol == "tcp" {
                    ATTACK_EXFIL_C2
                } else {
                    ATTACK_EXFIL_ALT
                },
                severity: Severity::Critical,
                score: 95,
                actor: &actor,
                target: match &src {
                    Some((_, _, path, _)) => Target::File {
                        path: path.clone(),
                        dev: st_dev(t.src_dev),
                        inode: t.src_ino,
                    },
                    None => Target::Process {
                        pid: dumped.as_ref().map_or(0, |d| d.pid),
                        comm: dumped.as_ref().map(|d| d.comm.clone()).unwrap_or_default(),
                        exe: dumped.as_ref().map(|d| d.exe.clone()).unwrap_or_default(),
                    },
                },
                message,
                flow: FlowDetail {
                    via: via_name(s.via),
                    tracked_id,
                    lineage: tracked_id
                        .map(|id| self.registry.lineage(id))
                        .unwrap_or_default(),
                    dumped,
                    pipe_from: (t.flags & TAINT_PIPE != 0 && t.via_pid != 0).then_some(t.via_pid),
                    remote,
                    local: s.local.map(|a| a.to_string()),
                    protocol: Some(protocol),
                    bytes: Some(s.bytes),
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, s.task.ts_boot_ns);
    }

    /// A rename or link whose source name may be tracked.
    pub(crate) fn path_change(&mut self, p: &PathRecord) {
        let (shown, seen) = user_path(p.task.pid, p.new_dfd, &p.new);
        let Ok(md) = std::fs::symlink_metadata(&seen) else {
            return;
        };
        let kd = kdev(md.dev());
        let shown = shown.to_string_lossy().into_owned();
        let is_link = p.op == PATH_OP_LINK;
        let how = if is_link { "link" } else { "rename" };
        // A tracked file (dump or copy), a watched key, or a directory
        // holding watched keys.
        let tracked = self.registry.by_inode(kd, md.ino()).map(|t| t.id);
        let key = InodeKey {
            dev: kd,
            _pad: 0,
            ino: md.ino(),
        };
        let watched = self.watcher.get(&key).is_some();
        if tracked.is_none() && !watched {
            return;
        }
        let actor = self.procs.resolve(&p.task);
        let watch_id = self.watcher.get(&key).map(|w| w.watch_id);
        if tracked.is_none() && self.policy.allowed(&actor.exe, watch_id) {
            return;
        }
        let id = match tracked {
            Some(id) => id,
            None => {
                let kind_path = self
                    .watcher
                    .get(&key)
                    .map(|w| w.path.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.registry
                    .register(
                        kd,
                        md.ino(),
                        kind_path,
                        TrackedKind::Key,
                        "key",
                        None,
                        None,
                        None,
                    )
                    .0
            }
        };
        let old_path = self
            .registry
            .get(id)
            .map(|t| t.path.clone())
            .unwrap_or_default();
        let mut lineage = self.registry.lineage(id);
        // Same inode: the file's record moves (a rename) or stays (a link,
        // whose new name is a step of its own in the lineage).
        let step = if is_link {
            // A link shares the inode: one registry entry per inode, so
            // the step is reported but the entry keeps its first path.
            id
        } else {
            if let Some(t) = self.registry.get_mut(id) {
                t.path = shown.clone();
            }
            id
        };
        if let Some(m) = self.kmaps.as_mut()
            && let Some(name) = Path::new(&shown).file_name()
        {
            let _ = m.names.insert(name_key_of(name.as_encoded_bytes()), 1, 0);
        }
        let root = self.registry.root_kind(step).unwrap_or(TrackedKind::Key);
        let dir = md.is_dir();
        let message = format!(
            "{} (pid {}, uid {}) {} {}{old_path} to {shown}",
            actor.comm,
            actor.pid,
            actor.uid,
            if is_link { "linked" } else { "moved" },
            if dir { "directory " } else { "" },
        );
        lineage.push(crate::track::LineageStep {
            id: step,
            path: shown.clone(),
            kind: root,
            how,
            generation: lineage.last().map_or(0, |l| l.generation + 1),
            by: Some(Origin::of(&actor)),
        });
        let dumped = self.registry.get(step).and_then(|t| t.dumped.clone());
        let ts = self.clock.wall(p.task.ts_boot_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_TRACKED_COPY,
                attack: ATTACK_STAGED,
                severity: if root == TrackedKind::Dump {
                    Severity::Critical
                } else {
                    Severity::High
                },
                score: if root == TrackedKind::Dump { 85 } else { 70 },
                actor: &actor,
                target: Target::File {
                    path: shown,
                    dev: md.dev(),
                    inode: md.ino(),
                },
                message,
                flow: FlowDetail {
                    via: how,
                    tracked_id: Some(step),
                    lineage,
                    dumped,
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, p.task.ts_boot_ns);
    }

    /// An open of a tracked file (a dump or a derived copy); `via` is
    /// "open", or how a reader got an fd it did not open (BPF LSM).
    pub(crate) fn tracked_open(&mut self, rec: &OpenRecord, via: &'static str) {
        // A pending id: the kernel marked the file at its first write; the
        // write's record came first, so it is registered by now (or was
        // not worth tracking).
        let t = if rec.watch_id == TRACKED_PENDING {
            self.registry.by_inode(rec.dev, rec.ino)
        } else {
            self.registry.get(rec.watch_id)
        };
        let Some(t) = t else {
            return;
        };
        let id = t.id;
        let path = t.path.clone();
        let origin_pid = t.origin.as_ref().map(|o| o.pid);
        let dumped = t.dumped.clone();
        let root = self.registry.root_kind(id).unwrap_or(TrackedKind::Copy);
        let actor = self.procs.resolve(&rec.task);
        // The dump's writer (and its children) handle it.
        if origin_pid == Some(actor.pid) || (origin_pid.is_some() && origin_pid == Some(actor.ppid))
        {
            return;
        }
        if crate::detect::access(rec.flags) == "path" {
            return;
        }
        if root == TrackedKind::Dump {
            if self.policy.allowed_dumps(&actor.exe) {
                return;
            }
        } else if self.policy.allowed(&actor.exe, None) {
            return;
        }
        let message = format!(
            "{} (pid {}, uid {}) {} {} {path} for {}{}",
            actor.comm,
            actor.pid,
            actor.uid,
            if via == "open" { "opened" } else { "accessed" },
            if root == TrackedKind::Dump {
                "dump file"
            } else {
                "a copy of key material,"
            },
            crate::detect::access(rec.flags),
            if via == "open" {
                String::new()
            } else {
                format!(" through an fd it did not open ({via})")
            }
        );
        let ts = self.clock.wall(rec.task.ts_boot_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_DUMP_FILE_ACCESS,
                attack: ATTACK_LOCAL_DATA,
                severity: Severity::High,
                score: 75,
                actor: &actor,
                target: Target::File {
                    path,
                    dev: st_dev(rec.dev),
                    inode: rec.ino,
                },
                message,
                flow: FlowDetail {
                    via,
                    tracked_id: Some(id),
                    lineage: self.registry.lineage(id),
                    dumped,
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, rec.task.ts_boot_ns);
    }

    /// Queues a tracked file for the key-material scanner.
    pub(crate) fn queue_scan(&mut self, id: u32, path: PathBuf) {
        if let Some(t) = self.registry.get_mut(id) {
            t.scanned = true;
        }
        if let Some(tx) = &self.scan_tx
            && tx.try_send((id, path)).is_err()
        {
            self.metrics
                .output_dropped
                .with_label_values(&["scanner"])
                .inc();
        }
    }
}

/// What the scanner says of one tracked file.
pub struct ScanResult {
    pub id: u32,
    pub path: PathBuf,
    /// The report (kinds and fingerprints only), or why it failed.
    pub report: Result<ScanOutcome, String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanOutcome {
    /// Keys found.
    pub found: usize,
    /// What the file is ("elf-core", ...).
    pub format: Option<String>,
    /// The findings as JSON (never key bytes).
    pub findings: serde_json::Value,
}

/// The key-material scanner (`scan.rs`) on one tracked file: kinds and
/// fingerprints only, streamed in bounded memory.
pub fn scan_keys(path: &Path) -> Result<ScanOutcome, String> {
    let report = crate::scan::scan_path(path, &crate::scan::ScanLimits::default())
        .map_err(|e| format!("{e:#}"))?;
    let found = report.findings.len() + report.findings_dropped as usize;
    Ok(ScanOutcome {
        found,
        format: Some(report.file_kind.to_string()),
        findings: serde_json::to_value(&report).map_err(|e| e.to_string())?,
    })
}

/// The scanner's queue in, and its results out.
pub type ScanChannels = (
    std::sync::mpsc::SyncSender<(u32, PathBuf)>,
    tokio::sync::mpsc::Receiver<ScanResult>,
);

/// Files waiting for the scanner, at most.
const SCAN_QUEUE: usize = 256;

/// Starts the scanner thread: it reads tracked files (streaming, bounded
/// memory) away from the event loop and sends back what it found.
pub fn start_scanner(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    scan: fn(&Path) -> Result<ScanOutcome, String>,
) -> anyhow::Result<ScanChannels> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, PathBuf)>(SCAN_QUEUE);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(SCAN_QUEUE);
    std::thread::Builder::new()
        .name("keysentry-scan".into())
        .spawn(move || {
            while let Ok((id, path)) = rx.recv() {
                let report = scan(&path);
                let label = match &report {
                    Ok(o) if o.found > 0 => "found",
                    Ok(_) => "clean",
                    Err(_) => "error",
                };
                metrics.scans.with_label_values(&[label]).inc();
                if out_tx
                    .blocking_send(ScanResult { id, path, report })
                    .is_err()
                {
                    break;
                }
            }
        })?;
    Ok((tx, out_rx))
}

impl Pipeline {
    /// The scanner finished a file: `key-material` when it held keys.
    /// A result from the scanner thread (recorded with the time it was
    /// handled, so a replay raises the same alert at the same point).
    pub fn scanned(&mut self, r: ScanResult) {
        let rec = crate::record::ScanRec {
            at_ns: crate::agent::boot_now(),
            id: r.id,
            path: r.path.to_string_lossy().into_owned(),
            report: r.report,
        };
        self.scanned_at(rec.clone());
        self.record(crate::record::Record::Scan(rec));
    }

    /// A scanner result, live or from a recording.
    pub(crate) fn scanned_at(&mut self, r: crate::record::ScanRec) {
        let outcome = match r.report {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("scanning {}: {e}", r.path);
                return;
            }
        };
        if outcome.found == 0 {
            return;
        }
        let Some(t) = self.registry.get(r.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let dumped = t.dumped.clone();
        let origin = t.origin.clone();
        let root = self.registry.root_kind(r.id).unwrap_or(TrackedKind::Copy);
        let actor = match &origin {
            Some(o) => self.procs.lookup(o.pid),
            None => match &dumped {
                Some(d) => self.procs.lookup(d.pid),
                None => self.procs.lookup(0),
            },
        };
        let message = format!(
            "{path} holds {} private key{}{}",
            outcome.found,
            if outcome.found == 1 { "" } else { "s" },
            match (&dumped, root) {
                (Some(d), _) => format!(" from the memory of {} (pid {})", d.comm, d.pid),
                (None, TrackedKind::Copy) => " (a copy of key material)".to_string(),
                _ => String::new(),
            }
        );
        let ts = self.clock.wall(r.at_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: crate::detect::RULE_KEY_MATERIAL,
                attack: crate::detect::ATTACK_PRIVATE_KEYS,
                severity: Severity::Critical,
                score: 95,
                actor: &actor,
                target: Target::File {
                    path,
                    dev: st_dev(kd),
                    inode: ino,
                },
                message,
                flow: FlowDetail {
                    via: "scan",
                    tracked_id: Some(r.id),
                    lineage: self.registry.lineage(r.id),
                    dumped,
                    format: outcome.format,
                    keys: Some(outcome.findings),
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, r.at_ns);
    }
}

impl Pipeline {
    /// A file in a crash handler's dump directory (`[dumps] dirs`): a
    /// registered dump, attributed to a protected process that crashed
    /// through the pipe helper when its pid is a token of the file name
    /// (systemd-coredump: core.COMM.UID.BOOT.PID.TS.zst) or when it is the
    /// only one waiting. `scan`: queue it for the key scanner (new files;
    /// those found at start are registered only).
    pub fn dump_dir_file(&mut self, path: &Path, scan: bool) {
        let Ok(md) = std::fs::metadata(path) else {
            return;
        };
        if !md.is_file() {
            return;
        }
        let kd = kdev(md.dev());
        if self.registry.by_inode(kd, md.ino()).is_some() {
            return;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tokens: Vec<&str> = name.split(['.', '_', '-']).collect();
        let dumped = self
            .recent_crashes
            .iter()
            .rev()
            .find(|c| tokens.contains(&c.pid.to_string().as_str()))
            .or_else(|| {
                (self.recent_crashes.len() == 1)
                    .then(|| self.recent_crashes.back())
                    .flatten()
            })
            .cloned();
        let p = path.to_string_lossy().into_owned();
        let (id, _) = self.registry.register(
            kd,
            md.ino(),
            p.clone(),
            TrackedKind::Dump,
            "dump-handler",
            None,
            None,
            dumped,
        );
        self.track_in_kernel(id, kd, md.ino(), &p);
        if scan {
            self.queue_scan(id, path.to_path_buf());
        }
    }

    /// Remembers a protected process's crash for the dump-directory
    /// attribution above.
    pub(crate) fn note_crash(&mut self, dumped: &ProcInfo) {
        if self.recent_crashes.len() >= 64 {
            self.recent_crashes.pop_front();
        }
        self.recent_crashes.push_back(Origin::of(dumped));
    }
}
