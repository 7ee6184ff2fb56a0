//! The flow stage: what tainted processes write and send, and who opens
//! tracked files. Raises `tracked-copy` (decided at the writer's close
//! from its evidence, `evidence.rs`) and `dump-file-access`; sends are
//! `sends.rs`'s (`exfiltration`). Renames, links and unlinks of tracked files are
//! `renames.rs`'s, dumps `dumps.rs`'s, the tracked-file registry's kernel
//! side `tracking.rs`'s, the key-material scanner `keyscan.rs`'s.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use sensor_common::{
    TAINT_FILE, TAINT_HELPER, TAINT_MEMORY, TAINT_PIPE, TRACKED_PENDING, Taint, VIA_CLONE,
    VIA_COPY_FILE_RANGE, VIA_IO_URING, VIA_MMAP, VIA_SEND, VIA_SENDFILE, VIA_SPLICE,
};

use crate::{
    alert::{FlowDetail, Severity, Target},
    alert::{Origin, TrackedKind},
    detect::dumps::{Dumps, HELPER_WAIT_NS, PendingUserDump},
    detect::evidence::CopyEvidence,
    detect::{Policy, rule_alert},
    enrich::context::Context,
    enrich::facts::{TrackedAccess, TrackedOpen},
    enrich::proctab::ProcInfo,
    enrich::watch::st_dev,
    ingest::decode::flow::{CloseRecord, WriteRecord},
    rules::Rule,
};

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
}

pub(crate) fn via_name(via: u32) -> &'static str {
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

/// Copies that may wait for their evidence at once. Past it, the oldest
/// is decided at once, as at its writer's exit (what it holds now, and a
/// scan), and counted in `keysentry_map_evictions_total{map="pending_copies"}`:
/// a flood of files written by tainted processes costs early decisions,
/// never a copy that goes undecided. Half the tracked-file registry's
/// bound (`MAX_TRACKED`): every pending copy is a tracked file, and one
/// the registry pushed out would leave the queue undecided.
pub const MAX_PENDING: usize = crate::enrich::track::MAX_TRACKED / 2;

/// The copy rule's state: files tainted processes are writing, decided
/// when their writer closes them. Kept in arrival order (a sequence
/// number), with an index by writer: a close, an exec or an exit finds its
/// writer's copies, and the bound its oldest, in O(log n).
pub struct Flows {
    pending: BTreeMap<u64, PendingCopy>,
    /// Writer pid -> the sequence numbers of its pending copies.
    by_writer: HashMap<u32, BTreeSet<u64>>,
    next_seq: u64,
    /// `MAX_PENDING` (smaller in tests).
    max: usize,
}

impl Default for Flows {
    fn default() -> Self {
        Self::with_bound(MAX_PENDING)
    }
}

impl Flows {
    /// At most `max` (at least 1) pending copies.
    pub(crate) fn with_bound(max: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            by_writer: HashMap::new(),
            next_seq: 0,
            max: max.max(1),
        }
    }

    /// Whether a copy waits for its writer.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Copies waiting for their evidence (each decided within 10 s of
    /// event time, or earlier past `MAX_PENDING`).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Adds a pending copy; past `MAX_PENDING`, the oldest ones are decided
    /// first.
    fn push(&mut self, cx: &mut Context, c: PendingCopy) {
        while self.pending.len() >= self.max {
            let Some((seq, old)) = self.pending.pop_first() else {
                break;
            };
            self.unindex(&old, seq);
            cx.metrics
                .map_evictions
                .with_label_values(&["pending_copies"])
                .inc();
            self.decide_now(cx, old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_writer.entry(c.actor.pid).or_default().insert(seq);
        self.pending.insert(seq, c);
    }

    /// Removes `seq`, a copy of `c`'s writer, from the writer index.
    fn unindex(&mut self, c: &PendingCopy, seq: u64) {
        let pid = c.actor.pid;
        if let Some(set) = self.by_writer.get_mut(&pid) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_writer.remove(&pid);
            }
        }
    }

    /// Takes the pending copy `seq` out of both the queue and the index.
    fn take(&mut self, seq: u64) -> Option<PendingCopy> {
        let c = self.pending.remove(&seq)?;
        self.unindex(&c, seq);
        Some(c)
    }

    /// Decides a copy on what it holds now and scans it, as at its
    /// writer's exit.
    fn decide_now(&mut self, cx: &mut Context, p: PendingCopy) {
        let id = p.id;
        let size = cx.size_fact(id);
        self.emit_copy(cx, p, size, 0);
        if let Some(t) = cx.registry.get(id)
            && !t.scanned
        {
            let path = PathBuf::from(&t.path);
            cx.queue_scan(id, path);
        }
    }

    /// Drops the pending copies of tracked files that left the kernel's
    /// watch map since the last call.
    pub fn prune(&mut self, cx: &mut Context) {
        if cx.untracked.is_empty() {
            return;
        }
        let gone = std::mem::take(&mut cx.untracked);
        let seqs: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, c)| gone.contains(&c.id))
            .map(|(&s, _)| s)
            .collect();
        for s in seqs {
            self.take(s);
        }
    }

    /// A tainted process wrote a regular file. The kernel marked it
    /// tracked (`TRACKED_PENDING`) at that write; a file that is not
    /// registered here is taken out of the kernel's watch map again.
    pub(crate) fn file_write(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        dumps: &mut Dumps,
        w: &WriteRecord,
    ) {
        self.prune(cx);
        self.file_write_track(cx, policy, dumps, w);
        self.prune(cx);
        cx.drop_evicted();
        if cx.registry.by_inode(w.dev, w.ino).is_none()
            && let Some(igen) = cx.kernel.drop_pending(w.dev, w.ino)
        {
            // Readers the kernel followed while the file was pending carry a
            // source nobody tracks: their taint goes with the mark.
            let n = cx.kernel.drop_taint_from(w.dev, w.ino, igen);
            if n > 0 {
                cx.metrics
                    .flow_stopped
                    .with_label_values(&["not_a_copy"])
                    .inc_by(n);
            }
        }
    }

    /// Whether a writer's taint names a source user space knows: a tracked
    /// file of the same generation, a protected process's memory it read,
    /// or the core helper.
    fn taint_source_known(cx: &mut Context, dumps: &Dumps, actor: &ProcInfo, t: &Taint) -> bool {
        if t.flags & TAINT_HELPER != 0 && dumps.helper_of(cx, actor).is_some() {
            return true;
        }
        if t.flags & TAINT_MEMORY != 0 && cx.memory_source(actor.pid).is_some() {
            return true;
        }
        if t.flags & (TAINT_FILE | TAINT_PIPE) == 0 || t.src_ino == 0 {
            return false;
        }
        let (src, stale) = cx.registry.by_file(t.src_dev, t.src_ino, t.src_igen);
        let known = src.is_some();
        if let Some(old) = stale {
            cx.untrack_in_kernel(&old);
        }
        known
    }

    fn file_write_track(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        dumps: &mut Dumps,
        w: &WriteRecord,
    ) {
        let actor = cx.procs.resolve(&w.task);
        let mut path = w.path.clone().unwrap_or_default();
        if w.path_truncated {
            path.insert_str(0, "...");
        }
        let (known, stale) = cx.registry.by_file(w.dev, w.ino, w.igen);
        let known = known.map(|t| (t.id, t.kind, t.created));
        if let Some(t) = stale {
            cx.untrack_in_kernel(&t);
        }
        let t = &w.taint;
        if let Some((id, kind, created)) = known {
            // A key file its (tainted) writer just created: a copy after
            // all, registered as one below. Anything else was written again
            // (after a close): rescan when it is closed.
            // Only when the writer's source is known: a taint left from a
            // file found no copy must not unmake a new key's creator.
            let fresh_by_writer = kind == TrackedKind::Key
                && created.is_some()
                && (t.src_dev, t.src_ino) != (w.dev, w.ino)
                && (t.flags & (TAINT_FILE | TAINT_PIPE) != 0 || t.flags & TAINT_MEMORY != 0)
                && Self::taint_source_known(cx, dumps, &actor, t);
            if !fresh_by_writer {
                if let Some(t) = cx.registry.get_mut(id) {
                    t.scanned = false;
                }
                return;
            }
            if let Some(old) = cx.registry.remove(id) {
                cx.untrack_in_kernel(&old);
            }
        }
        let via = via_name(w.via);
        if t.flags & TAINT_HELPER != 0 && dumps.helper_of(cx, &actor).is_some() {
            dumps.helper_wrote(cx, &actor, w, path);
            return;
        }
        if t.flags & TAINT_MEMORY != 0
            && let Some(dumped) = cx.memory_source(actor.pid)
        {
            let (id, _) = cx.registry.register(
                w.dev,
                w.ino,
                path.clone(),
                TrackedKind::Dump,
                "userspace-dump",
                None,
                Some(Origin::of(&actor)),
                Some(dumped.clone()),
            );
            if let Some(t) = cx.registry.get_mut(id) {
                t.igen = Some(w.igen);
            }
            cx.track_in_kernel(id, w.dev, w.ino, &path);
            cx.identify(id);
            // Reported when the writer closes it (or exits): by then the
            // file says what it is.
            dumps.pending_user.push(PendingUserDump {
                id,
                actor,
                dumped,
                via,
                bytes: w.bytes,
                ts_boot_ns: w.task.ts_boot_ns,
            });
            return;
        }
        if t.flags & (TAINT_FILE | TAINT_PIPE) == 0 || t.src_ino == 0 {
            return;
        }
        if (t.src_dev, t.src_ino) == (w.dev, w.ino) {
            return;
        }
        let (src, stale) = cx.registry.by_file(t.src_dev, t.src_ino, t.src_igen);
        let src = src.map(|s| (s.id, s.kind, s.watch, s.generation));
        if let Some(old) = stale {
            cx.untrack_in_kernel(&old);
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
            if policy.allowed(&actor, src_watch)
                || cx.fresh_own_key(src_id, actor.uid, w.task.ts_boot_ns)
            {
                cx.metrics
                    .flow_stopped
                    .with_label_values(&["allowlist"])
                    .inc();
                return;
            }
        }
        let archive = is_archive(&actor, &path);
        let how = if archive { "archive" } else { via };
        let (id, _) = cx.registry.register(
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
        if let Some(c) = cx.registry.get_mut(id) {
            c.igen = Some(w.igen);
            c.generation = generation;
            c.new_file = w.created;
        }
        cx.track_in_kernel(id, w.dev, w.ino, &path);
        cx.identify(id);
        self.push(
            cx,
            PendingCopy {
                id,
                actor,
                src_id,
                via,
                archive,
                hops: t.generation.saturating_sub(src_gen),
                pipe_from: (t.flags & TAINT_PIPE != 0 && t.via_pid != 0).then_some(t.via_pid),
                bytes: w.bytes.max(0),
                ts_boot_ns: w.task.ts_boot_ns,
            },
        );
    }

    /// A pending copy is complete (its writer closed it or exited, or it
    /// waited long enough): `tracked-copy`, with the severity its evidence
    /// earns (docs/scoring.md, "Copies"), or only counted.
    fn emit_copy(&mut self, cx: &mut Context, c: PendingCopy, size: i64, written: u64) {
        let Some(t) = cx.registry.get(c.id) else {
            return;
        };
        let path = t.path.clone();
        let (kd, ino) = (t.kdev, t.ino);
        let fs_root = t.root.clone();
        let (src_path, src_size) = cx
            .registry
            .get(c.src_id)
            .map_or((String::new(), 0), |s| (s.path.clone(), s.size));
        let root = cx.registry.root_kind(c.id).unwrap_or(TrackedKind::Key);
        let total = size.max(written as i64).max(c.bytes);
        // An archive is a file whose content is one (tar extracting a
        // package writes plain files); by the writer and the name only when
        // the content cannot be read.
        let head = cx
            .view
            .value(format!("archive:{kd}:{ino}"), || {
                crate::enrich::handle::head(fs_root.as_deref(), Path::new(&path), kd, ino, 262)
                    .map(|h| is_archive_content(&h))
                    .into()
            })
            .as_bool();
        let archive = head.unwrap_or(c.archive);
        if let Some(t) = cx.registry.get_mut(c.id) {
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
        if let Some(t) = cx.registry.get_mut(c.id) {
            t.evidence = Some(grade.map_or(Severity::Info, |g| g.0));
        }
        let Some((severity, score)) = grade else {
            cx.metrics.copies.with_label_values(&["none"]).inc();
            return;
        };
        cx.metrics
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
        let dumped = cx.registry.get(c.id).and_then(|t| t.dumped.clone());
        let ts = cx.wall(c.ts_boot_ns);
        let rule = Rule::TrackedCopy;
        let target = Target::File {
            path: path.clone(),
            dev: st_dev(kd),
            inode: ino,
        };
        let alert = rule_alert(rule, actor, target, &cx.host, ts)
            .attack(if archive {
                rule.alt_attack()
            } else {
                rule.attack()
            })
            .verdict(severity, score)
            .message(message)
            .flow(FlowDetail {
                via: c.via,
                tracked_id: Some(c.id),
                lineage: cx.registry.lineage(c.id),
                dumped,
                pipe_from: c.pipe_from,
                bytes: Some(total),
                hops: Some(c.hops),
                ..Default::default()
            });
        cx.raise(alert, c.ts_boot_ns);
    }

    /// A tainted process closed a file it wrote: a pending copy is
    /// decided, and a tracked file is complete enough to scan.
    pub(crate) fn file_closed(&mut self, cx: &mut Context, dumps: &mut Dumps, c: &CloseRecord) {
        let (t, stale) = cx.registry.by_file(c.dev, c.ino, c.igen);
        let t = t.map(|t| (t.id, PathBuf::from(&t.path), t.scanned));
        if let Some(old) = stale {
            cx.untrack_in_kernel(&old);
        }
        self.prune(cx);
        let Some((id, path, scanned)) = t else {
            return;
        };
        let seq = self.by_writer.get(&c.task.pid).and_then(|seqs| {
            seqs.iter()
                .copied()
                .find(|s| self.pending.get(s).is_some_and(|p| p.id == id))
        });
        if let Some(p) = seq.and_then(|s| self.take(s)) {
            self.emit_copy(cx, p, c.size, c.written);
        }
        if let Some(i) = dumps
            .pending_user
            .iter()
            .position(|d| d.id == id && d.actor.pid == c.task.pid)
        {
            let d = dumps.pending_user.remove(i);
            dumps.emit_user_dump(cx, d);
        }
        if !scanned {
            cx.queue_scan(id, path);
        }
    }

    /// The writer of pending copies exec'd: its close-on-exec descriptors
    /// went without a close record, and the image that read the source is
    /// gone. Decided and scanned as at an exit; a descriptor that survived
    /// the exec is still the kernel's `WRITTEN`, so the file is left
    /// unscanned-since-written and its later close (a `FileClose`) scans
    /// it again with whatever the new image added.
    pub(crate) fn writer_exec(&mut self, cx: &mut Context, pid: u32) {
        let ids: Vec<u32> = self
            .by_writer
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(|s| self.pending.get(s).map(|p| p.id))
            .collect();
        self.writer_exited(cx, pid);
        for id in ids {
            if let Some(t) = cx.registry.get_mut(id) {
                t.scanned = false;
            }
        }
    }

    /// The writer of pending copies exited (its files closed by the exit,
    /// without a close record), or exec'd: decide them on what was written,
    /// and scan them, as at a close.
    pub(crate) fn writer_exited(&mut self, cx: &mut Context, pid: u32) {
        self.prune(cx);
        let Some(seqs) = self.by_writer.remove(&pid) else {
            return;
        };
        for s in seqs {
            if let Some(p) = self.pending.remove(&s) {
                self.decide_now(cx, p);
            }
        }
    }

    /// Copies still open after their wait (at `now_ns`, boot ns): decided
    /// on what they hold now.
    pub(crate) fn expire(&mut self, cx: &mut Context, now_ns: u64) {
        self.prune(cx);
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.ts_boot_ns.saturating_add(HELPER_WAIT_NS) <= now_ns)
            .map(|(&s, _)| s)
            .collect();
        for s in due {
            if let Some(p) = self.take(s) {
                let size = cx.size_fact(p.id);
                self.emit_copy(cx, p, size, 0);
            }
        }
    }

    /// Copies still pending at shutdown (or the end of a replay).
    pub(crate) fn flush(&mut self, cx: &mut Context) {
        self.prune(cx);
        self.by_writer.clear();
        while let Some((_, p)) = self.pending.pop_last() {
            let size = cx.size_fact(p.id);
            self.emit_copy(cx, p, size, 0);
        }
    }

    /// An open of a tracked file (a dump or a derived copy); `via` is
    /// "open", or how a reader got an fd it did not open (BPF LSM).
    pub(crate) fn tracked_open(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        rec: &TrackedAccess<'_>,
    ) {
        // A pending id: the kernel marked the file at its first write; the
        // write's record came first, so it is registered by now (or was
        // not worth tracking).
        let t = if rec.watch_id == TRACKED_PENDING {
            cx.registry.by_inode(rec.kdev, rec.ino)
        } else {
            cx.registry.get(rec.watch_id)
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
        let root = cx.registry.root_kind(id).unwrap_or(TrackedKind::Copy);
        let actor = cx.procs.resolve(rec.task);
        let ts = cx.wall(rec.task.ts_boot_ns);
        let open = TrackedOpen {
            actor: &actor,
            via: rec.via,
            flags: rec.flags,
            id,
            path,
            dev: st_dev(rec.kdev),
            ino: rec.ino,
            dump: root == TrackedKind::Dump,
            weak,
            origin_pid,
            dumped,
        };
        let lineage = || cx.registry.lineage(id);
        let Some(alert) = policy.dump_file_access(open, lineage, &cx.host, ts) else {
            return;
        };
        cx.raise(alert, rec.task.ts_boot_ns);
    }
}
