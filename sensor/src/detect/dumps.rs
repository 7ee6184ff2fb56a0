//! Dumps: a user-space dump written by a process that read a protected
//! process's memory (`userspace-dump`), the files the core_pattern pipe
//! helper writes, the core file the kernel writes and the files of crash
//! handlers' dump directories (`core-dump` with its files), each
//! registered as a tracked dump.

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{
    alert::{DumpDetail, FlowDetail, Target},
    alert::{Origin, TrackedKind},
    detect::Policy,
    detect::rule_alert,
    enrich::context::Context,
    enrich::corepattern,
    enrich::proctab::ProcInfo,
    enrich::watch::{kdev, st_dev},
    ingest::decode::flow::WriteRecord,
    rules::Rule,
};

/// A protected process's crash through a pipe core_pattern, waiting for
/// its helper to finish writing.
pub struct PendingDump {
    pub pid: u32,
    pub dumped: ProcInfo,
    /// Why it was protected (it has exited when its alert is made).
    pub why: Option<String>,
    pub detail: DumpDetail,
    pub ts_boot_ns: u64,
    pub helper: Option<u32>,
}

/// A user-space dump being written, reported at its close.
pub struct PendingUserDump {
    pub id: u32,
    pub actor: ProcInfo,
    pub dumped: Origin,
    pub via: &'static str,
    pub bytes: i64,
    pub ts_boot_ns: u64,
}

/// The files a core_pattern pipe helper wrote.
pub struct HelperRec {
    pub files: Vec<u32>,
    pub argv: std::sync::Arc<[String]>,
    pub exited: bool,
}

/// How long a pipe-helper crash waits for the helper's files (and a
/// user-space dump or a copy for its writer's close), in event time: from
/// the event's kernel timestamp to the time of a tick, so a replay expires
/// them at the same recorded tick.
pub(crate) const HELPER_WAIT_NS: u64 = 10_000_000_000;

/// What the first bytes of a file say it is.
pub fn file_format(head: &[u8]) -> String {
    if head.len() >= 18 && head[..4] == *b"\x7fELF" {
        // e_type (little endian on the hosts we run on): 4 = ET_CORE.
        let e_type = u16::from_le_bytes([head[16], head[17]]);
        // Anything else is a raw image (a memory dump starts with the
        // program's own mapped ELF header).
        return if e_type == 4 { "elf-core" } else { "raw" }.into();
    }
    "raw".into()
}

/// Metadata of a regular file at `path`, not following a final symlink.
pub fn regular_file(path: &Path) -> Option<std::fs::Metadata> {
    let md = std::fs::symlink_metadata(path).ok()?;
    md.is_file().then_some(md)
}

/// The dump rules' state: crashes and user-space dumps waiting for their
/// files, the core_pattern pipe helpers seen and what they wrote, and
/// protected processes that crashed recently.
#[derive(Default)]
pub struct Dumps {
    pub(crate) pending: Vec<PendingDump>,
    pub(crate) pending_user: Vec<PendingUserDump>,
    /// pipe helper pid -> the dumps it wrote.
    pub(crate) helper_files: HashMap<u32, HelperRec>,
    /// core_pattern pipe helpers seen exec'd (pid -> argv at that exec).
    pub(crate) helpers: HashMap<u32, std::sync::Arc<[String]>>,
    /// Protected processes that crashed (latest last), to attribute files
    /// in the dump directories.
    pub(crate) recent_crashes: VecDeque<Origin>,
    /// The core files the kernel opened for protected processes that were
    /// dumping (BPF LSM file_open, observe mode): tgid -> the file by
    /// (kernel dev, inode) and the kernel's path, taken when the process's
    /// death is handled.
    pub(crate) core_files: HashMap<u32, KernelCoreFile>,
}

/// A core file as the kernel opened it (`Dumps::core_files`).
#[derive(Debug, Clone)]
pub(crate) struct KernelCoreFile {
    pub kdev: u32,
    pub ino: u64,
    pub path: String,
}

/// Most core files remembered for processes whose death is not handled
/// yet.
const MAX_CORE_FILES: usize = 256;

impl Dumps {
    /// Whether a crash or a user-space dump waits for its files.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty() || !self.pending_user.is_empty()
    }

    /// The kernel opened `d.path` to write the core of the protected
    /// process `d.task` (an observed, not denied, ENF_CORE_DUMP).
    pub fn core_file_opened(&mut self, d: &crate::ingest::decode::lsm::DeniedRecord) {
        if d.ino == 0 {
            return;
        }
        if self.core_files.len() >= MAX_CORE_FILES {
            self.core_files.clear();
        }
        self.core_files.insert(
            d.task.pid,
            KernelCoreFile {
                kdev: d.dev,
                ino: d.ino,
                path: d.path.clone().unwrap_or_default(),
            },
        );
    }

    /// Whether `pid` is a pipe helper that wrote files or is awaited.
    pub fn is_helper(&self, pid: u32) -> bool {
        self.helper_files.contains_key(&pid) || self.pending.iter().any(|d| d.helper == Some(pid))
    }

    /// A process exited: forgotten as a pipe helper unless its files are
    /// still awaited.
    pub fn exited(&mut self, pid: u32) {
        if !self.helper_files.contains_key(&pid) {
            self.helpers.remove(&pid);
        }
    }

    /// The writer of pending user-space dumps exited.
    pub(crate) fn writer_exited(&mut self, cx: &mut Context, pid: u32) {
        let mut i = 0;
        while i < self.pending_user.len() {
            if self.pending_user[i].actor.pid == pid {
                let d = self.pending_user.remove(i);
                let id = d.id;
                self.emit_user_dump(cx, d);
                if let Some(t) = cx.registry.get(id)
                    && !t.scanned
                {
                    let p = PathBuf::from(&t.path);
                    cx.queue_scan(id, p);
                }
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn emit_user_dump(&mut self, cx: &mut Context, d: PendingUserDump) {
        let Some(t) = cx.registry.get(d.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let root = t.root.clone();
        let actor = &d.actor;
        let dumped = &d.dumped;
        let format = cx
            .view
            .value(format!("format:{kd}:{ino}"), || {
                crate::enrich::handle::head(root.as_deref(), Path::new(&path), kd, ino, 18)
                    .map(|h| file_format(&h))
                    .into()
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
        let ts = cx.wall(d.ts_boot_ns);
        let target = Target::File {
            path,
            dev: st_dev(kd),
            inode: ino,
        };
        let alert = rule_alert(Rule::UserspaceDump, actor, target, &cx.host, ts)
            .message(message)
            .flow(FlowDetail {
                via: d.via,
                tracked_id: Some(d.id),
                lineage: cx.registry.lineage(d.id),
                dumped: Some(d.dumped.clone()),
                bytes: Some(d.bytes),
                format,
                ..Default::default()
            });
        cx.raise(alert, d.ts_boot_ns);
    }

    /// A usermode helper (child of kthreadd) exec'd: remember it when it
    /// is the core_pattern pipe helper (a script's argv starts with its
    /// interpreter, so the first two arguments are checked).
    pub(crate) fn usermode_helper_exec(&mut self, cx: &mut Context, pid: u32) {
        let (pattern, _) = cx.view.core_pattern();
        let Some(helper) = corepattern::helper_path(&pattern) else {
            return;
        };
        let Some(p) = cx.procs.get(pid) else { return };
        if p.argv.iter().take(2).any(|a| a == helper) || &*p.exe == helper {
            if self.helpers.len() >= 256 {
                self.helpers.clear();
            }
            self.helpers.insert(pid, p.argv.clone());
        }
    }

    /// Whether `p` is keysentry's own core handler, started by the kernel
    /// for a crash (a usermode helper: a child of kthreadd, running the
    /// program core_pattern names, as `core-handler`). It reads the watched
    /// key files to redact a key holder's core (docs/dumps.md): no alert.
    pub(crate) fn is_core_handler(cx: &mut Context, p: &ProcInfo) -> bool {
        if p.ppid != 2 || !corepattern::runs_handler(&p.argv) {
            return false;
        }
        let (pattern, _) = cx.view.core_pattern();
        corepattern::is_handler(&pattern)
            && corepattern::helper_path(&pattern).is_some_and(|helper| *p.exe == *helper)
    }

    /// The pipe helper behind `p` (itself or an ancestor).
    pub(crate) fn helper_of(
        &self,
        cx: &mut Context,
        p: &ProcInfo,
    ) -> Option<(u32, std::sync::Arc<[String]>)> {
        let mut cur = p.pid;
        for _ in 0..8 {
            if let Some(argv) = self.helpers.get(&cur) {
                return Some((cur, argv.clone()));
            }
            let parent = cx.procs.get(cur)?.ppid;
            if parent <= 2 {
                return None;
            }
            cur = parent;
        }
        None
    }

    /// The pipe helper (or a child of it) wrote a file: a dump.
    pub(crate) fn helper_wrote(
        &mut self,
        cx: &mut Context,
        actor: &ProcInfo,
        w: &WriteRecord,
        path: String,
    ) {
        let Some((helper_pid, helper_argv)) = self.helper_of(cx, actor) else {
            return;
        };
        // The crashed process: a pid among the helper's arguments.
        let pending = self.pending.iter().position(|d| {
            d.helper == Some(helper_pid) || helper_argv.iter().any(|a| *a == d.pid.to_string())
        });
        // keysentry's own handler writes its cores and its spool records
        // (`enrich::rootfiles::spool`): a record is no dump, but it ties
        // the handler to the crash even when no core was kept.
        if corepattern::runs_handler(&helper_argv)
            && Path::new(&path).parent().and_then(Path::file_name) == Some("spool".as_ref())
        {
            self.helper_files
                .entry(helper_pid)
                .or_insert_with(|| HelperRec {
                    files: Vec::new(),
                    argv: helper_argv,
                    exited: false,
                });
            if let Some(i) = pending {
                self.pending[i].helper = Some(helper_pid);
            }
            return;
        }
        let dumped = pending.map(|i| {
            let mut o = Origin::of(&self.pending[i].dumped);
            o.protected = self.pending[i].why.clone();
            o
        });
        let (id, _) = cx.registry.register(
            w.dev,
            w.ino,
            path.clone(),
            TrackedKind::Dump,
            "pipe-helper",
            None,
            Some(Origin::of(actor)),
            dumped,
        );
        if let Some(t) = cx.registry.get_mut(id) {
            t.igen = Some(w.igen);
        }
        cx.track_in_kernel(id, w.dev, w.ino, &path);
        cx.identify(id);
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
            self.pending[i].helper = Some(helper_pid);
        }
    }

    /// A protected process dumped core through a pipe: the alert waits
    /// for the helper's files (until the helper exits, or HELPER_WAIT_NS).
    pub(crate) fn pend_pipe_dump(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        dumped: ProcInfo,
        detail: DumpDetail,
        ts: u64,
    ) {
        let pid = dumped.pid.to_string();
        // A helper that already wrote for this pid (core_pipe_limit makes
        // the kernel wait for the helper before the crashed task exits).
        let helper = self
            .helper_files
            .iter()
            .find(|(_, h)| h.argv.contains(&pid))
            .map(|(p, _)| *p);
        self.pending.push(PendingDump {
            pid: dumped.pid,
            why: cx.protector.why(dumped.pid),
            dumped,
            detail,
            ts_boot_ns: ts,
            helper,
        });
        // Its files written and the helper gone: nothing more to wait for.
        if let Some(h) = helper
            && self.helper_files.get(&h).is_some_and(|r| r.exited)
        {
            self.helper_exited(cx, policy, h);
        }
    }

    /// A process exited: when it is a pipe helper, its crash alerts go
    /// (or wait for the crashed process's exit, which comes after).
    pub(crate) fn helper_exited(&mut self, cx: &mut Context, policy: &Policy, pid: u32) {
        let files = match self.helper_files.get_mut(&pid) {
            Some(h) => {
                let first = !h.exited;
                h.exited = true;
                first.then(|| h.files.clone())
            }
            None => None,
        };
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].helper == Some(pid) {
                let d = self.pending.remove(i);
                let all = self
                    .helper_files
                    .remove(&pid)
                    .map(|h| h.files)
                    .unwrap_or_default();
                self.emit_pipe_dump(cx, policy, d, all);
            } else {
                i += 1;
            }
        }
        if let Some(files) = files {
            for id in files {
                if let Some(t) = cx.registry.get(id) {
                    let p = PathBuf::from(&t.path);
                    cx.queue_scan(id, p);
                }
            }
        }
    }

    /// Pipe crashes whose helper did not finish by `now_ns` (boot ns),
    /// and user-space dumps still open; `all`: every one (shutdown, the
    /// end of a replay).
    pub(crate) fn expire(&mut self, cx: &mut Context, policy: &Policy, now_ns: u64, all: bool) {
        let due = |ts: u64| all || ts.saturating_add(HELPER_WAIT_NS) <= now_ns;
        let mut i = 0;
        while i < self.pending_user.len() {
            if due(self.pending_user[i].ts_boot_ns) {
                let d = self.pending_user.remove(i);
                self.emit_user_dump(cx, d);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.pending.len() {
            if due(self.pending[i].ts_boot_ns) {
                let d = self.pending.remove(i);
                let files = d
                    .helper
                    .and_then(|h| self.helper_files.get(&h).map(|r| r.files.clone()))
                    .unwrap_or_default();
                self.emit_pipe_dump(cx, policy, d, files);
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn emit_pipe_dump(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        d: PendingDump,
        files: Vec<u32>,
    ) {
        let mut detail = d.detail;
        detail.helper_pid = d.helper;
        if let Some(h) = d.helper
            && self.handled_by_keysentry(h)
        {
            handled(cx, policy, d.pid, &mut detail);
        }
        for id in &files {
            if let Some(t) = cx.registry.get_mut(*id) {
                if t.dumped.is_none() {
                    let mut o = Origin::of(&d.dumped);
                    o.protected = d.why.clone();
                    t.dumped = Some(o);
                }
                detail.files.push(t.path.clone());
            }
        }
        detail.tracked_id = files.first().copied();
        let ts = cx.wall(d.ts_boot_ns);
        let mut alert = policy.core_dump(&d.dumped, detail, &cx.host, ts);
        if let crate::alert::Target::Process { protected, .. } = &mut alert.target {
            protected.clone_from(&d.why);
        }
        cx.raise(alert, d.ts_boot_ns);
    }

    /// Whether the pipe helper `pid` is keysentry's own core handler.
    fn handled_by_keysentry(&self, pid: u32) -> bool {
        self.helper_files
            .get(&pid)
            .map(|h| &h.argv)
            .or_else(|| self.helpers.get(&pid))
            .is_some_and(|argv| corepattern::runs_handler(argv))
    }

    /// The core file the kernel wrote for a protected process: registered
    /// as a dump (a regular file at that path, never through a symlink).
    pub(crate) fn register_core_file(
        &mut self,
        cx: &mut Context,
        dumped: &ProcInfo,
        path: &Path,
    ) -> Option<u32> {
        let md = regular_file(path)?;
        self.register_core_inode(cx, dumped, path, kdev(md.dev()), md.ino())
    }

    /// `register_core_file` for the file (`kd`, `ino`) the kernel opened.
    pub(crate) fn register_core_inode(
        &mut self,
        cx: &mut Context,
        dumped: &ProcInfo,
        path: &Path,
        kd: u32,
        ino: u64,
    ) -> Option<u32> {
        let (id, _) = cx.registry.register(
            kd,
            ino,
            path.to_string_lossy().into_owned(),
            TrackedKind::Dump,
            "core-dump",
            None,
            None,
            Some(cx.dumped(dumped)),
        );
        cx.track_in_kernel(id, kd, ino, &path.to_string_lossy());
        cx.identify(id);
        cx.queue_scan(id, path.to_path_buf());
        Some(id)
    }

    /// A file in a crash handler's dump directory (`[dumps] dirs`): a
    /// registered dump, attributed to a protected process that crashed
    /// through the pipe helper when its pid is a token of the file name
    /// (systemd-coredump: core.COMM.UID.BOOT.PID.TS.zst) or when it is the
    /// only one waiting. `scan`: queue it for the key scanner (new files;
    /// those found at start are registered only).
    pub fn dump_dir_file(&mut self, cx: &mut Context, path: &Path, scan: bool) {
        // A regular file, never what a symlink there points to.
        let Some(md) = regular_file(path) else {
            return;
        };
        let kd = kdev(md.dev());
        if cx.registry.by_inode(kd, md.ino()).is_some() {
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
        let (id, _) = cx.registry.register(
            kd,
            md.ino(),
            p.clone(),
            TrackedKind::Dump,
            "dump-handler",
            None,
            None,
            dumped,
        );
        cx.track_in_kernel(id, kd, md.ino(), &p);
        cx.identify(id);
        if scan {
            cx.queue_scan(id, path.to_path_buf());
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

/// What keysentry's core handler did with the core of `pid` (its spool
/// record, read once and recorded, so a replay says the same).
fn handled(cx: &mut Context, policy: &Policy, pid: u32, detail: &mut DumpDetail) {
    let dir = policy.handler_state.clone();
    let rec = cx.view.value(format!("core-handler:{pid}"), || {
        crate::enrich::rootfiles::spooled(&dir, pid).unwrap_or(serde_json::Value::Null)
    });
    let text = |k: &str| rec.get(k).and_then(|v| v.as_str()).map(str::to_string);
    detail.action = text("action");
    // Bounded labels: whatever a record says, one of four.
    let action = detail
        .action
        .as_deref()
        .filter(|a| matches!(*a, "redacted" | "quarantined" | "dropped"))
        .unwrap_or("unknown");
    cx.metrics.cores_handled.with_label_values(&[action]).inc();
    detail.stored = text("path");
    detail.handler_error = text("error");
    detail.bytes = rec.get("bytes").and_then(|v| v.as_u64());
    detail.removed = rec
        .get("removed")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    // The handler wrote the core under a hidden name and renamed it before
    // the kernel knew to report the rename: the tracked dump takes its
    // final name (the file there, by inode).
    if let Some(stored) = detail.stored.clone() {
        let v = cx.view.value(format!("core-handler-file:{stored}"), || {
            regular_file(Path::new(&stored))
                .map(|m| serde_json::json!([m.dev(), m.ino()]))
                .unwrap_or_default()
        });
        if let Ok((dev, ino)) = serde_json::from_value::<(u64, u64)>(v)
            && let Some(id) = cx.registry.by_inode(kdev(dev), ino).map(|t| t.id)
            && let Some(t) = cx.registry.get_mut(id)
        {
            t.path = stored;
        }
    }
}
