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
    InodeKey, MATCH_INODE, MATCH_PARENT, PATH_OP_LINK, PATH_OP_UNLINK, TAINT_FILE, TAINT_HELPER,
    TAINT_MEMORY, TAINT_PIPE, TRACKED_PENDING, VIA_CLONE, VIA_COPY_FILE_RANGE, VIA_IO_URING,
    VIA_MMAP, VIA_SEND, VIA_SENDFILE, VIA_SPLICE, WATCH_IGEN, WATCH_SELF, WATCH_TRACKED,
    WatchEntry, names::name_key_of,
};

use crate::{
    agent::Pipeline,
    alert::{DumpDetail, FlowDetail, Severity, Target},
    decode::{CloseRecord, OpenRecord, PathRecord, SendRecord, WriteRecord},
    detect::{
        ATTACK_ARCHIVE, ATTACK_CREDENTIAL_DUMPING, ATTACK_EXFIL_ALT, ATTACK_EXFIL_C2,
        ATTACK_LOCAL_DATA, ATTACK_STAGED, FlowAlert, RULE_DUMP_FILE_ACCESS, RULE_EXFILTRATION,
        RULE_TRACKED_COPY, RULE_USERSPACE_DUMP,
    },
    evidence::CopyEvidence,
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

/// A file a tainted process is writing: whether it is a copy, and how
/// strong the evidence is, is decided when the writer closes it (or exits):
/// by then the bytes written are known.
pub struct PendingCopy {
    pub id: u32,
    pub actor: ProcInfo,
    pub src_id: u32,
    pub via: &'static str,
    pub archive: bool,
    /// Hops between the source and this writer: 0 when it read the source
    /// itself; each child or pipe between them is one.
    pub hops: u32,
    pub pipe_from: Option<u32>,
    pub bytes: i64,
    pub ts_boot_ns: u64,
    pub deadline: Instant,
}

/// How long after a key was created its creator's uid may read it as its
/// own new key (`fresh_key`: `openssl req -key` right after `genpkey`).
pub const FRESH_KEY_NS: u64 = 600 * 1_000_000_000;

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

/// Does a file's content start like an archive or a compressed stream
/// (gzip, xz, zstd, bzip2, lz4, zip, 7z, rar, tar, cpio)?
pub fn is_archive_content(head: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x1f\x8b",
        b"\xfd7zXZ\x00",
        b"\x28\xb5\x2f\xfd",
        b"BZh",
        b"\x04\x22\x4d\x18",
        b"PK\x03\x04",
        b"7z\xbc\xaf\x27\x1c",
        b"Rar!",
        b"070701",
        b"070707",
    ];
    MAGIC.iter().any(|m| head.starts_with(m)) || head.get(257..262).is_some_and(|u| u == b"ustar")
}

/// Metadata of a regular file at `path`, not following a final symlink.
pub fn regular_file(path: &Path) -> Option<std::fs::Metadata> {
    let md = std::fs::symlink_metadata(path).ok()?;
    md.is_file().then_some(md)
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

    /// A key file opened successfully: it is an origin of lineages. An
    /// open that created it registers who created it (a new key, not a
    /// stolen one), unless its writer turns out to be tainted (its write
    /// then makes it a copy).
    pub(crate) fn note_key(&mut self, rec: &OpenRecord, path: &str, allowed: bool) {
        if rec.failed || rec.ino == 0 {
            return;
        }
        let (_, stale) = self.registry.by_file(rec.dev, rec.ino, rec.igen);
        if let Some(t) = stale {
            self.untrack_in_kernel(&t);
        }
        let (id, new) = self.registry.register(
            rec.dev,
            rec.ino,
            path.to_string(),
            TrackedKind::Key,
            "key",
            None,
            None,
            None,
        );
        if new {
            self.identify(id);
        }
        if let Some(t) = self.registry.get_mut(id) {
            t.igen = Some(rec.igen);
            if t.kind == TrackedKind::Key {
                if rec.matched & (MATCH_INODE | MATCH_PARENT) != 0 {
                    t.watch = Some(rec.watch_id);
                }
                if new || rec.created() {
                    t.size = rec.size;
                }
                if rec.created() {
                    t.created = Some((rec.task.uid, rec.task.ts_boot_ns));
                }
            }
        }
        // An allowlisted reader (the service that owns the key), or the
        // uid that just made the key, is not followed: its logs and TLS
        // traffic are not copies. Only a taint that is this key's alone
        // goes (a dump it read before keeps it followed).
        if allowed
            && let Some(m) = self.kmaps.as_mut()
            && m.tainted.get(&rec.task.pid, 0).is_ok_and(|t| {
                t.flags == TAINT_FILE && (t.src_dev, t.src_ino) == (rec.dev, rec.ino)
            })
        {
            let _ = m.tainted.remove(&rec.task.pid);
        }
    }

    /// Is `actor` reading the key `id` as a benign reader: a key its uid
    /// created in the last ten minutes (`fresh_key`)?
    pub(crate) fn fresh_own_key(&self, id: u32, uid: u32, now_ns: u64) -> bool {
        self.registry
            .get(id)
            .and_then(|t| t.created)
            .is_some_and(|(u, at)| u == uid && now_ns.saturating_sub(at) < FRESH_KEY_NS)
    }

    /// Puts a tracked file in the kernel's watch map (opens of it are
    /// reported, reads taint) and its name in the rename filter. Never
    /// replaces a key path's entry (a dump registered over a key's inode
    /// stays a key to the kernel).
    pub(crate) fn track_in_kernel(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        let (igen, generation) = self
            .registry
            .get(id)
            .map_or((None, 0), |t| (t.igen, t.generation));
        let Some(m) = self.kmaps.as_mut() else {
            return;
        };
        let key = InodeKey {
            dev: kdev,
            _pad: 0,
            ino,
        };
        if m.watched
            .get(&key, 0)
            .is_ok_and(|e| e.flags & WATCH_TRACKED == 0 && e.flags & WATCH_SELF != 0)
        {
            return;
        }
        let entry = WatchEntry {
            watch_id: id,
            flags: WATCH_SELF | WATCH_TRACKED | if igen.is_some() { WATCH_IGEN } else { 0 },
            igen: igen.unwrap_or(0),
            generation,
        };
        if let Err(e) = m.watched.insert(key, entry, 0) {
            tracing::warn!("tracking {path} in the kernel: {e}");
        }
        if let Some(name) = Path::new(path).file_name() {
            let _ = m.names.insert(name_key_of(name.as_encoded_bytes()), 1, 0);
        }
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// A key that left its key path (moved or linked out): its kernel entry
    /// becomes a tracked file's, so opens of it stay seen after the key
    /// path rescan drops it.
    fn track_moved_key(&mut self, id: u32, kdev: u32, ino: u64, path: &str) {
        if let Some(m) = self.kmaps.as_mut() {
            let key = InodeKey {
                dev: kdev,
                _pad: 0,
                ino,
            };
            if m.watched
                .get(&key, 0)
                .is_ok_and(|e| e.flags & WATCH_TRACKED == 0)
            {
                let _ = m.watched.remove(&key);
            }
        }
        self.track_in_kernel(id, kdev, ino, path);
        self.identify(id);
    }

    /// A tracked file is gone (its inode died, or was evicted): out of the
    /// kernel's watch map, unless the entry there is not the tracked one.
    pub(crate) fn untrack_in_kernel(&mut self, t: &crate::track::Tracked) {
        if let Some(m) = self.kmaps.as_mut() {
            let key = InodeKey {
                dev: t.kdev,
                _pad: 0,
                ino: t.ino,
            };
            // Its own entry, or the kernel's pending entry for that inode;
            // never an entry of a new file that reused the number.
            if m.watched.get(&key, 0).is_ok_and(|e| {
                e.flags & WATCH_TRACKED != 0
                    && (e.watch_id == t.id
                        || (e.watch_id == TRACKED_PENDING
                            && t.igen
                                .is_none_or(|g| e.flags & WATCH_IGEN == 0 || e.igen == g)))
            }) {
                let _ = m.watched.remove(&key);
            }
        }
        self.pending_copies.retain(|c| c.id != t.id);
        self.metrics.tracked_files.set(self.registry.len() as i64);
    }

    /// Key files no key path leads to any more (deleted, replaced, or moved
    /// out: a move is re-tracked when its rename is handled): their registry
    /// entries are kept for lineage, marked gone (evictable).
    pub(crate) fn keys_departed(&mut self, removed: &[InodeKey]) {
        for k in removed {
            let Some(id) = self
                .registry
                .by_inode(k.dev, k.ino)
                .filter(|t| t.kind == TrackedKind::Key)
                .map(|t| t.id)
            else {
                continue;
            };
            let retracked = self.kmaps.as_ref().is_some_and(|m| {
                m.watched
                    .get(k, 0)
                    .is_ok_and(|e| e.flags & WATCH_TRACKED != 0 && e.watch_id == id)
            });
            if !retracked && let Some(t) = self.registry.get_mut(id) {
                t.gone = true;
            }
        }
    }

    /// Kernel entries of files the registry evicted (it was full).
    pub(crate) fn drop_evicted(&mut self) {
        let gone = self.registry.take_evicted();
        if gone.is_empty() {
            return;
        }
        self.metrics
            .flow_stopped
            .with_label_values(&["eviction"])
            .inc_by(gone.len() as u64);
        for t in &gone {
            self.untrack_in_kernel(t);
        }
    }

    /// A tainted process wrote a regular file. The kernel marked it
    /// tracked (`TRACKED_PENDING`) at that write; a file that is not
    /// registered here is taken out of the kernel's watch map again.
    pub(crate) fn file_write(&mut self, w: &WriteRecord) {
        self.file_write_track(w);
        self.drop_evicted();
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
        let (known, stale) = self.registry.by_file(w.dev, w.ino, w.igen);
        let known = known.map(|t| (t.id, t.kind, t.created));
        if let Some(t) = stale {
            self.untrack_in_kernel(&t);
        }
        let t = &w.taint;
        if let Some((id, kind, created)) = known {
            // A key file its (tainted) writer just created: a copy after
            // all, registered as one below. Anything else was written again
            // (after a close): rescan when it is closed.
            let fresh_by_writer = kind == TrackedKind::Key
                && created.is_some()
                && (t.src_dev, t.src_ino) != (w.dev, w.ino)
                && (t.flags & (TAINT_FILE | TAINT_PIPE) != 0 || t.flags & TAINT_MEMORY != 0);
            if !fresh_by_writer {
                if let Some(t) = self.registry.get_mut(id) {
                    t.scanned = false;
                }
                return;
            }
            if let Some(old) = self.registry.remove(id) {
                self.untrack_in_kernel(&old);
            }
        }
        let via = via_name(w.via);
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
            if let Some(t) = self.registry.get_mut(id) {
                t.igen = Some(w.igen);
            }
            self.track_in_kernel(id, w.dev, w.ino, &path);
            self.identify(id);
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
        let (src, stale) = self.registry.by_file(t.src_dev, t.src_ino, t.src_igen);
        let src = src.map(|s| (s.id, s.kind, s.watch, s.generation));
        if let Some(old) = stale {
            self.untrack_in_kernel(&old);
        }
        let Some((src_id, src_kind, src_watch, src_gen)) = src else {
            tracing::debug!(
                "write by {} of {path}: source {}:{} not tracked",
                actor.pid,
                t.src_dev,
                t.src_ino
            );
            return;
        };
        if src_kind == TrackedKind::Key {
            // The key's own service, or a new key read by the uid that
            // just made it: not a copy.
            if self.policy.allowed(&actor.exe, src_watch)
                || self.fresh_own_key(src_id, actor.uid, w.task.ts_boot_ns)
            {
                self.metrics
                    .flow_stopped
                    .with_label_values(&["allowlist"])
                    .inc();
                return;
            }
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
        // The kernel's count of hops (children and pipes count too).
        let generation = (t.generation + 1).max(src_gen + 1);
        if let Some(c) = self.registry.get_mut(id) {
            c.igen = Some(w.igen);
            c.generation = generation;
            c.new_file = w.created;
        }
        self.track_in_kernel(id, w.dev, w.ino, &path);
        self.identify(id);
        self.pending_copies.push(PendingCopy {
            id,
            actor,
            src_id,
            via,
            archive,
            hops: t.generation.saturating_sub(src_gen),
            pipe_from: (t.flags & TAINT_PIPE != 0 && t.via_pid != 0).then_some(t.via_pid),
            bytes: w.bytes.max(0),
            ts_boot_ns: w.task.ts_boot_ns,
            deadline: Instant::now() + HELPER_WAIT,
        });
    }

    /// A pending copy is complete (its writer closed it or exited, or it
    /// waited long enough): `tracked-copy`, with the severity its evidence
    /// earns (docs/scoring.md, "Copies"), or only counted.
    fn emit_copy(&mut self, c: PendingCopy, size: i64, written: u64) {
        let Some(t) = self.registry.get(c.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let (src_path, src_size) = self
            .registry
            .get(c.src_id)
            .map_or((String::new(), 0), |s| (s.path.clone(), s.size));
        let root = self.registry.root_kind(c.id).unwrap_or(TrackedKind::Key);
        let total = size.max(written as i64).max(c.bytes);
        // An archive is a file whose content is one (tar extracting a
        // package writes plain files); by the writer and the name only when
        // the content cannot be read.
        let head = self
            .fact_value(format!("archive:{kd}:{ino}"), || {
                crate::handle::head(Path::new(&path), kd, ino, 262)
                    .map(|h| is_archive_content(&h))
                    .into()
            })
            .as_bool();
        let archive = head.unwrap_or(c.archive);
        if let Some(t) = self.registry.get_mut(c.id) {
            t.size = total;
            if archive {
                t.how = "archive";
            } else if t.how == "archive" {
                t.how = c.via;
            }
        }
        let ev = CopyEvidence {
            dump: root == TrackedKind::Dump,
            // An archiver fed by the reader through a pipe (tar c | gzip)
            // is as good as the reader.
            direct: c.hops == 0 || (archive && c.hops <= 1),
            hops: c.hops,
            bytes: total,
            source_bytes: src_size,
            archive,
        };
        let grade = ev.grade();
        if let Some(t) = self.registry.get_mut(c.id) {
            t.evidence = Some(grade.map_or(Severity::Info, |g| g.0));
        }
        let Some((severity, score)) = grade else {
            self.metrics.copies.with_label_values(&["none"]).inc();
            return;
        };
        self.metrics
            .copies
            .with_label_values(&[severity.as_str()])
            .inc();
        let actor = &c.actor;
        let what = if root == TrackedKind::Dump {
            "a dump"
        } else {
            "key material"
        };
        let message = format!(
            "{} (pid {}, uid {}) {} {path} from {src_path} ({what}; {})",
            actor.comm,
            actor.pid,
            actor.uid,
            if archive { "archived into" } else { "wrote" },
            ev.words(),
        );
        let dumped = self.registry.get(c.id).and_then(|t| t.dumped.clone());
        let ts = self.clock.wall(c.ts_boot_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: RULE_TRACKED_COPY,
                attack: if archive {
                    ATTACK_ARCHIVE
                } else {
                    ATTACK_STAGED
                },
                severity,
                score,
                actor,
                target: Target::File {
                    path: path.clone(),
                    dev: st_dev(kd),
                    inode: ino,
                },
                message,
                flow: FlowDetail {
                    via: c.via,
                    tracked_id: Some(c.id),
                    lineage: self.registry.lineage(c.id),
                    dumped,
                    pipe_from: c.pipe_from,
                    bytes: Some(total),
                    hops: Some(c.hops),
                    ..Default::default()
                },
            },
            &self.host,
            ts,
        );
        self.emit(alert, c.ts_boot_ns);
    }

    /// A tainted process closed a file it wrote: a pending copy is
    /// decided, and a tracked file is complete enough to scan.
    pub(crate) fn file_closed(&mut self, c: &CloseRecord) {
        let (t, stale) = self.registry.by_file(c.dev, c.ino, c.igen);
        let t = t.map(|t| (t.id, PathBuf::from(&t.path), t.scanned));
        if let Some(old) = stale {
            self.untrack_in_kernel(&old);
        }
        let Some((id, path, scanned)) = t else {
            return;
        };
        if let Some(i) = self
            .pending_copies
            .iter()
            .position(|p| p.id == id && p.actor.pid == c.task.pid)
        {
            let p = self.pending_copies.remove(i);
            self.emit_copy(p, c.size, c.written);
        }
        if let Some(i) = self
            .pending_udumps
            .iter()
            .position(|d| d.id == id && d.actor.pid == c.task.pid)
        {
            let d = self.pending_udumps.remove(i);
            self.emit_user_dump(d);
        }
        if !scanned {
            self.queue_scan(id, path);
        }
    }

    /// The writer of pending copies exited (its files closed without a
    /// close(2), or never closed): decide them on what was written.
    pub(crate) fn copy_writer_exited(&mut self, pid: u32) {
        let mut i = 0;
        while i < self.pending_copies.len() {
            if self.pending_copies[i].actor.pid == pid {
                let p = self.pending_copies.remove(i);
                let id = p.id;
                let size = self.size_fact(id);
                self.emit_copy(p, size, 0);
                if let Some(t) = self.registry.get(id)
                    && !t.scanned
                {
                    let path = PathBuf::from(&t.path);
                    self.queue_scan(id, path);
                }
            } else {
                i += 1;
            }
        }
    }

    /// A tracked file's size now, read through its path only when the
    /// path still leads to the same inode, never following a link
    /// (recorded for replay).
    fn size_fact(&mut self, id: u32) -> i64 {
        let Some(t) = self.registry.get(id) else {
            return 0;
        };
        let (path, kd, ino) = (PathBuf::from(&t.path), t.kdev, t.ino);
        self.fact_value(
            format!("size:{kd}:{ino}"),
            || match std::fs::symlink_metadata(&path) {
                Ok(md) if md.is_file() && kdev(md.dev()) == kd && md.ino() == ino => {
                    md.len().into()
                }
                _ => 0.into(),
            },
        )
        .as_i64()
        .unwrap_or(0)
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
                crate::handle::head(Path::new(&path), kd, ino, 18)
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
        if let Some(t) = self.registry.get_mut(id) {
            t.igen = Some(w.igen);
        }
        self.track_in_kernel(id, w.dev, w.ino, &path);
        self.identify(id);
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
    /// dumps and copies still open.
    pub(crate) fn expire_pending_dumps(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending_copies.len() {
            if self.pending_copies[i].deadline <= now {
                let p = self.pending_copies.remove(i);
                let size = self.size_fact(p.id);
                self.emit_copy(p, size, 0);
            } else {
                i += 1;
            }
        }
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

    /// Copies still pending at shutdown (or the end of a replay).
    pub(crate) fn flush_pending_copies(&mut self) {
        while let Some(p) = self.pending_copies.pop() {
            let size = self.size_fact(p.id);
            self.emit_copy(p, size, 0);
        }
    }

    /// The core file the kernel wrote for a protected process: registered
    /// as a dump (a regular file at that path, never through a symlink).
    pub(crate) fn register_core_file(&mut self, dumped: &ProcInfo, path: &Path) -> Option<u32> {
        let md = regular_file(path)?;
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
        self.identify(id);
        self.queue_scan(id, path.to_path_buf());
        Some(id)
    }

    /// A dump or copy just registered: its file handle (to tell later
    /// whether it still exists), taken through an O_PATH open that also
    /// makes the kernel stamp its watch entry. Live only.
    pub(crate) fn identify(&mut self, id: u32) {
        if self.kmaps.is_none() {
            return;
        }
        let Some(t) = self.registry.get(id) else {
            return;
        };
        let h = crate::handle::Handle::of_inode(Path::new(&t.path), t.kdev, t.ino);
        if let Some(t) = self.registry.get_mut(id) {
            t.handle = h;
        }
    }

    /// A tainted process sent on a socket.
    pub(crate) fn net_send(&mut self, s: &SendRecord) {
        // Only inet sockets leave the host.
        if s.family != 2 && s.family != 10 {
            return;
        }
        let actor = self.procs.resolve(&s.task);
        let t = &s.taint;
        let src = if t.src_ino != 0 {
            let (src, stale) = self.registry.by_file(t.src_dev, t.src_ino, t.src_igen);
            let src = src.map(|x| (x.id, x.kind, x.path.clone(), x.watch));
            if let Some(old) = stale {
                self.untrack_in_kernel(&old);
            }
            src
        } else {
            None
        };
        let dumped = if t.flags & TAINT_MEMORY != 0 {
            self.memory_source(actor.pid)
        } else {
            None
        };
        let (what, tracked_id) = match (&src, &dumped) {
            (Some((id, kind, path, watch)), _) => {
                if *kind == TrackedKind::Key
                    && (self.policy.allowed(&actor.exe, *watch)
                        || self.fresh_own_key(*id, actor.uid, s.task.ts_boot_ns))
                {
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

    /// A name of a tracked file went away (an unlink, or a rename over
    /// it). The path the event names is resolved late and may be relative
    /// to a directory fd of an exited process, so candidates are the
    /// tracked files with that final name, and the inode decides: a file
    /// whose handle no longer opens (ESTALE: no name left) leaves the
    /// kernel's watch map (its inode number may be reused). Its registry
    /// entry stays, marked gone, so copies made by processes that read it
    /// before keep their lineage; a reused inode number never matches it
    /// (inode generation), and eviction ends it. `keep`: the inode that now
    /// has the name (a rename's source).
    fn name_gone(&mut self, name: &str, keep: Option<(u32, u64)>) {
        let Some(name) = Path::new(name).file_name() else {
            return;
        };
        for id in self.registry.named(name) {
            let Some(t) = self.registry.get(id).cloned() else {
                continue;
            };
            if Some((t.kdev, t.ino)) == keep || t.kind == TrackedKind::Key || t.gone {
                // Keys: the key path watcher's rescan follows them.
                continue;
            }
            let alive = self.fact_value(format!("alive:{}:{}", t.kdev, t.ino), || {
                t.handle
                    .as_ref()
                    .and_then(|h| h.alive(Path::new(&t.path)))
                    .map_or(serde_json::Value::Null, serde_json::Value::Bool)
            });
            tracing::debug!(
                "a name of tracked {} went away: alive {alive} (handle {})",
                t.path,
                t.handle.is_some()
            );
            // Unknown (no handle on this filesystem): keep following it.
            if alive.as_bool() != Some(false) {
                continue;
            }
            self.untrack_in_kernel(&t);
            if let Some(t) = self.registry.get_mut(id) {
                t.gone = true;
            }
            self.metrics
                .flow_stopped
                .with_label_values(&["deleted"])
                .inc();
        }
    }

    /// A rename or link whose source or destination name may be tracked,
    /// or an unlink of such a name.
    pub(crate) fn path_change(&mut self, p: &PathRecord) {
        if p.op == PATH_OP_UNLINK {
            self.name_gone(&p.old, None);
            return;
        }
        let (shown, seen) = user_path(p.task.pid, p.new_dfd, &p.new);
        let Ok(md) = std::fs::symlink_metadata(&seen) else {
            return;
        };
        let kd = kdev(md.dev());
        let shown = shown.to_string_lossy().into_owned();
        if p.op != PATH_OP_LINK {
            // What had the new name before a rename lost it.
            self.name_gone(&p.new, Some((kd, md.ino())));
        }
        let is_link = p.op == PATH_OP_LINK;
        let how = if is_link { "link" } else { "rename" };
        // A tracked file (dump or copy), a watched key, or a directory
        // holding watched keys. The path is resolved late: an entry whose
        // file handle differs from the file's there now is a file that is
        // gone, whose inode number the file at the path reuses.
        let tracked = self
            .registry
            .by_inode(kd, md.ino())
            .filter(|t| !t.gone)
            .map(|t| (t.id, t.handle.clone(), t.igen));
        let tracked = match tracked {
            Some((id, h, igen)) if h.is_some() || igen.is_some() => {
                let ino = md.ino();
                let now = self
                    .fact_value(format!("same:{kd}:{ino}:{id}"), || {
                        let by_gen = igen.zip(crate::handle::generation(&seen, kd, ino));
                        match (by_gen, &h) {
                            (Some((was, is)), _) => Some(was == is),
                            (None, Some(h)) => {
                                crate::handle::Handle::of_inode(&seen, kd, ino).map(|n| n == *h)
                            }
                            (None, None) => None,
                        }
                        .into()
                    })
                    .as_bool();
                if now == Some(false) {
                    if let Some(t) = self.registry.retire(id) {
                        self.untrack_in_kernel(&t);
                    }
                    None
                } else {
                    Some(id)
                }
            }
            Some((id, _, _)) => Some(id),
            None => None,
        };
        let key = InodeKey {
            dev: kd,
            _pad: 0,
            ino: md.ino(),
        };
        let watched = self.watcher.get_or_departed(&key).cloned();
        // A key path's file (as the registry or the watcher knows it), and
        // whether its new name is still under a key path.
        let is_key = watched.is_some()
            || tracked
                .and_then(|id| self.registry.get(id))
                .is_some_and(|t| t.kind == TrackedKind::Key);
        if tracked.is_none() && watched.is_none() {
            return;
        }
        let actor = self.procs.resolve(&p.task);
        let watch_id = watched.as_ref().map(|w| w.watch_id);
        if tracked.is_none() && self.policy.allowed(&actor.exe, watch_id) {
            return;
        }
        let id = match tracked {
            Some(id) => id,
            None => {
                let kind_path = watched
                    .as_ref()
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
        if let Some(t) = self.registry.get_mut(id) {
            t.gone = false;
        }
        if let Some(m) = self.kmaps.as_mut()
            && let Some(name) = Path::new(&shown).file_name()
        {
            let _ = m.names.insert(name_key_of(name.as_encoded_bytes()), 1, 0);
        }
        // A key moved (or linked) out of every key path: the key path
        // rescan lets go of it, so it is followed as a tracked file.
        let under_key_path = self
            .watcher
            .roots()
            .iter()
            .any(|r| Path::new(&shown).starts_with(r));
        if is_key && !md.is_dir() && !under_key_path {
            self.track_moved_key(id, kd, md.ino(), &shown);
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
        // Another file that reused the inode number.
        if t.igen.is_some_and(|g| g != rec.igen) || t.gone {
            return;
        }
        let id = t.id;
        let path = t.path.clone();
        let origin_pid = t.origin.as_ref().map(|o| o.pid);
        let dumped = t.dumped.clone();
        // A copy whose evidence was weak (a log line of a process that once
        // read a key) makes a weak open too; a dump, or a copy still being
        // written, is opened at full weight.
        let weak = t.kind == TrackedKind::Copy && t.evidence.is_some_and(|e| e < Severity::Medium);
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
                severity: if weak { Severity::Low } else { Severity::High },
                score: if weak { 25 } else { 75 },
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

    /// Queues a tracked file for the key-material scanner (with the key
    /// file its lineage starts at, if any: keys found are compared with
    /// that key's, to tell a copy from a new key).
    pub(crate) fn queue_scan(&mut self, id: u32, path: PathBuf) {
        if let Some(t) = self.registry.get_mut(id) {
            t.scanned = true;
        }
        let origin = self
            .registry
            .root(id)
            .filter(|r| r.kind == TrackedKind::Key && r.id != id)
            .map(|r| PathBuf::from(&r.path));
        if let Some(tx) = &self.scan_tx
            && tx.try_send(ScanJob { id, path, origin }).is_err()
        {
            self.metrics
                .output_dropped
                .with_label_values(&["scanner"])
                .inc();
        }
    }
}

/// A file for the scanner.
pub struct ScanJob {
    pub id: u32,
    pub path: PathBuf,
    /// The key file the lineage starts at.
    pub origin: Option<PathBuf>,
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
    /// Whether a key found is one of the origin key file's (None: no origin,
    /// or no key could be read from it).
    #[serde(default)]
    pub origin_match: Option<bool>,
}

/// Public-key fingerprints of a scan's findings.
fn fingerprints(r: &crate::scan::ScanReport) -> Vec<String> {
    r.findings
        .iter()
        .flat_map(|f| [f.fingerprint.clone(), f.ssh_fingerprint.clone()])
        .flatten()
        .collect()
}

/// The key-material scanner (`scan.rs`) on one tracked file: kinds and
/// fingerprints only, streamed in bounded memory. When it finds keys and
/// the file descends from a key file, that key file is scanned too, to
/// tell whether the keys found are its keys (a copy) or others (a key the
/// writer generated).
pub fn scan_keys(job: &ScanJob) -> Result<ScanOutcome, String> {
    let limits = crate::scan::ScanLimits::default();
    let report = crate::scan::scan_path(&job.path, &limits).map_err(|e| format!("{e:#}"))?;
    let found = report.findings.len() + report.findings_dropped as usize;
    let origin_match = match &job.origin {
        Some(o) if found > 0 => crate::scan::scan_path(o, &limits).ok().and_then(|r| {
            let theirs = fingerprints(&r);
            let ours = fingerprints(&report);
            (!theirs.is_empty() && !ours.is_empty())
                .then(|| ours.iter().any(|f| theirs.contains(f)))
        }),
        _ => None,
    };
    Ok(ScanOutcome {
        found,
        format: Some(report.file_kind.to_string()),
        findings: serde_json::to_value(&report).map_err(|e| e.to_string())?,
        origin_match,
    })
}

/// The scanner's queue in, and its results out.
pub type ScanChannels = (
    std::sync::mpsc::SyncSender<ScanJob>,
    tokio::sync::mpsc::Receiver<ScanResult>,
);

/// Files waiting for the scanner, at most.
const SCAN_QUEUE: usize = 256;

/// Starts the scanner thread: it reads tracked files (streaming, bounded
/// memory) away from the event loop and sends back what it found.
pub fn start_scanner(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    scan: fn(&ScanJob) -> Result<ScanOutcome, String>,
) -> anyhow::Result<ScanChannels> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<ScanJob>(SCAN_QUEUE);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(SCAN_QUEUE);
    std::thread::Builder::new()
        .name("keysentry-scan".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let report = scan(&job);
                let label = match &report {
                    Ok(o) if o.found > 0 => "found",
                    Ok(_) => "clean",
                    Err(_) => "error",
                };
                metrics.scans.with_label_values(&[label]).inc();
                if out_tx
                    .blocking_send(ScanResult {
                        id: job.id,
                        path: job.path,
                        report,
                    })
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
        // Keys that are not the origin key file's: the writer generated
        // them (ssh-keygen, openssl genpkey after reading another key). An
        // inventory event, not stolen material. A dump's keys are always
        // material.
        let generated = root == TrackedKind::Key && outcome.origin_match == Some(false);
        let origin_path = self
            .registry
            .root(r.id)
            .map(|o| o.path.clone())
            .unwrap_or_default();
        let n = outcome.found;
        let plural = if n == 1 { "" } else { "s" };
        let message = if generated {
            format!("{path} holds {n} new private key{plural} (not those of {origin_path})")
        } else {
            format!(
                "{path} holds {n} private key{plural}{}",
                match (&dumped, root) {
                    (Some(d), _) => format!(" from the memory of {} (pid {})", d.comm, d.pid),
                    (None, TrackedKind::Key) if origin_path != path => {
                        format!(" (a copy of {origin_path})")
                    }
                    _ => String::new(),
                }
            )
        };
        let ts = self.clock.wall(r.at_ns);
        let alert = self.policy.flow_alert(
            FlowAlert {
                rule: if generated {
                    crate::detect::RULE_KEY_CREATED
                } else {
                    crate::detect::RULE_KEY_MATERIAL
                },
                attack: crate::detect::ATTACK_PRIVATE_KEYS,
                severity: if generated {
                    Severity::Info
                } else {
                    Severity::Critical
                },
                score: if generated { 5 } else { 95 },
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
        // A regular file, never what a symlink there points to.
        let Some(md) = regular_file(path) else {
            return;
        };
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
        self.identify(id);
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
