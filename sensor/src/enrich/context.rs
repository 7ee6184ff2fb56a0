//! The enrich stage's shared state, `Context`: what every rule family may
//! consult and the actions it may ask for, and nothing of the correlate and
//! output stages after it. It holds the process table, protection, the key
//! paths watched, the tracked-file registry (its kernel side is
//! `tracking.rs`), the processes that read a protected process's memory,
//! the reads of the live system (`SystemView`), the clock, the narrow
//! kernel-control interface and the scanner's queue. A rule raises an alert
//! with `raise`; the pipeline takes the raised alerts after each event and
//! scores, correlates and outputs them.

use std::{collections::HashMap, sync::Arc};

use crate::{
    alert::{Alert, Origin, rfc3339},
    enrich::proctab::{ProcInfo, ProcessTable},
    enrich::protect::{Change, Protector},
    enrich::scan::ScanJob,
    enrich::sysview::SystemView,
    enrich::track::Registry,
    enrich::watch::Watcher,
    kernel::control::KernelControl,
    metrics::Metrics,
};

/// Clock conversion: kernel boot-time ns to wall-clock ns since the epoch.
pub(crate) struct Clock {
    pub(crate) offset_ns: i128,
}

impl Clock {
    fn new() -> Self {
        use nix::time::{ClockId, clock_gettime};
        let ns = |c| {
            clock_gettime(c)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        Self {
            offset_ns: ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME),
        }
    }

    pub(crate) fn wall(&self, boot_ns: u64) -> String {
        rfc3339(self.offset_ns + boot_ns as i128)
    }
}

/// CLOCK_BOOTTIME now, in ns (the kernel records' clock).
pub fn boot_now() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Most memory readers remembered.
pub(crate) const MEM_READERS: usize = 4096;

/// Everything the rule families share: enrichment state, system reads,
/// kernel control, and the alerts raised while handling one event.
pub struct Context {
    pub procs: ProcessTable,
    pub watcher: Watcher,
    /// The code-loading paths (`[tamper] code_paths`, then `dump_paths`,
    /// then the files key holders run), watched for changes.
    pub code: Watcher,
    /// The files key holders run, in the order they join `code`'s roots
    /// (`enrich::holder_code`).
    pub holder_code: Vec<crate::enrich::holder_code::Loaded>,
    pub protector: Protector,
    /// Dumps, keys seen opened and their derived copies.
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub(crate) host: String,
    pub(crate) clock: Clock,
    /// Reads of the live system, recorded (live) or answered from the
    /// recording (replay).
    pub(crate) view: SystemView,
    /// Executable identities verified against their paths (exec).
    pub(crate) exe_ids: crate::enrich::exeid::ExeIds,
    /// What the kernel watches, taints and protects (no-ops in replay).
    pub kernel: KernelControl,
    /// Tracked files to scan for key material.
    pub(crate) scan_tx: Option<std::sync::mpsc::SyncSender<ScanJob>>,
    /// Fingerprint -> key file (`keybook.rs`).
    pub keybook: crate::enrich::keybook::KeyBook,
    /// The block devices under the watched key stores (raw-read).
    pub raw_devs: crate::enrich::rawdev::RawDevs,
    /// Key agents and their sockets (agent-socket-use).
    pub agents: crate::enrich::agents::Agents,
    /// actor pid -> the protected process whose memory it read.
    pub(crate) mem_readers: HashMap<u32, Origin>,
    /// Cgroup id -> cgroup path, unit and container (`enrich/cgroups.rs`).
    places: crate::enrich::cgroups::Places,
    /// Containers' names and images from their runtimes' state.
    pub runtimes: crate::enrich::runtimes::Runtimes,
    /// Roots tracked files were found from (`enrich/roots.rs`).
    pub(crate) roots: crate::enrich::roots::Roots,
    /// Scope-"all" key paths resolved in other mount namespaces
    /// (`enrich/nskeys.rs`; live only).
    pub ns_keys: Option<crate::enrich::nskeys::NsKeys>,
    /// Alerts raised by the rules, in order, with their event time.
    raised: Vec<(Alert, u64)>,
    /// Tracked files that left the kernel's watch map since the rules last
    /// looked (their pending copies are dropped).
    pub(crate) untracked: Vec<u32>,
}

impl Context {
    pub fn new(procs: ProcessTable, watcher: Watcher, metrics: Arc<Metrics>) -> Self {
        Self {
            procs,
            watcher,
            code: Watcher::code(Vec::new()),
            holder_code: Vec::new(),
            protector: Protector::default(),
            registry: Registry::default(),
            metrics,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            clock: Clock::new(),
            view: SystemView::default(),
            exe_ids: Default::default(),
            kernel: KernelControl::default(),
            scan_tx: None,
            keybook: Default::default(),
            raw_devs: Default::default(),
            agents: Default::default(),
            mem_readers: HashMap::new(),
            places: Default::default(),
            runtimes: Default::default(),
            roots: Default::default(),
            ns_keys: None,
            raised: Vec::new(),
            untracked: Vec::new(),
        }
    }

    /// The cgroup path, systemd unit and container of an alert's process,
    /// and the container of a target process, from the cgroup ids of the
    /// kernel's records (`cgroup:<id>` facts).
    pub fn place(&mut self, alert: &mut Alert) {
        let p = &mut alert.process;
        if let Some(place) = self.place_of(p.cgroup_id) {
            p.cgroup = Some(place.cgroup.clone());
            p.unit.clone_from(&place.unit);
            p.container = self.container_of(&place);
        }
        if p.pid != 0 {
            let (pid, start) = (p.pid, p.start_ns);
            let v = self.view.found(format!("ns:{pid}:{start}"), || {
                crate::enrich::nskeys::namespaces_of(pid, start)
                    .and_then(|n| serde_json::to_value(n).ok())
                    .unwrap_or_default()
            });
            p.namespaces = serde_json::from_value(v).ok();
        }
        if let crate::alert::Target::Process {
            container,
            cgroup_id,
            ..
        } = &mut alert.target
            && let Some(place) = self.place_of(*cgroup_id)
        {
            *container = self.container_of(&place);
        }
    }

    /// A place's container, named by its runtime's state.
    fn container_of(
        &mut self,
        place: &crate::enrich::cgroups::Place,
    ) -> Option<crate::alert::ContainerCtx> {
        let mut c = place.container.clone()?;
        if let Some(n) = self.runtimes.named(&c, &place.cgroup, &mut self.view) {
            c.name.clone_from(&n.name);
            c.image.clone_from(&n.image);
            c.pod.clone_from(&n.pod);
        }
        Some(c)
    }

    /// Where the processes of cgroup `id` run: the unit and the named
    /// container (the rules that select by them).
    pub fn where_of(&mut self, id: u64) -> crate::enrich::protect::Where {
        let Some(place) = self.place_of(id) else {
            return Default::default();
        };
        crate::enrich::protect::Where {
            rootless: crate::enrich::runtimes::rootless(&place.cgroup),
            unit: place.unit.clone(),
            container: self.container_of(&place),
        }
    }

    /// The cgroup path, unit and container cgroup `id` names.
    pub fn place_of(&mut self, id: u64) -> Option<Arc<crate::enrich::cgroups::Place>> {
        if id == 0 {
            return None;
        }
        let view = &mut self.view;
        self.places.get(id, || {
            view.found(format!("cgroup:{id}"), || {
                crate::enrich::cgroups::path_of(id)
                    .map_or(serde_json::Value::Null, serde_json::Value::String)
            })
            .as_str()
            .map(String::from)
        })
    }

    /// What the namespace resolver found (`enrich/nskeys.rs`): each
    /// namespace's key path entries into the kernel's watch map (stamped
    /// through the handles it opened), the gone namespaces' out.
    pub fn apply_ns_keys(&mut self) {
        let Some(n) = self.ns_keys.as_ref() else {
            return;
        };
        let found = n.take();
        if found.is_empty() {
            return;
        }
        for f in found {
            let (ns, entries, pid) = match f {
                crate::enrich::nskeys::Found::Resolved { ns, pid, entries } => {
                    (ns, entries, Some(pid))
                }
                crate::enrich::nskeys::Found::Gone { ns } => (ns, Vec::new(), None),
            };
            let (delta, handles) = self.watcher.set_ns(ns, entries);
            if delta.entries.is_empty() && delta.removed.is_empty() {
                continue;
            }
            delta.push(&mut self.kernel, true);
            // keysentry's own open of each new inode (through the handle:
            // no path walked in the namespace again) stamps its entry.
            for h in handles {
                use std::os::fd::AsRawFd;
                let _ = std::fs::File::open(format!("/proc/self/fd/{}", h.as_raw_fd()));
            }
            match pid {
                Some(pid) if !delta.entries.is_empty() => tracing::info!(
                    "watching {} inode(s) under scope-\"all\" key paths in mount namespace {ns} (pid {pid})",
                    delta.entries.len()
                ),
                _ => {}
            }
        }
        self.metrics
            .namespace_inodes
            .set(self.watcher.ns_len() as i64);
        self.metrics.watched_inodes.set(self.watcher.len() as i64);
    }

    /// Scans the code-loading paths and pushes what changed into the
    /// kernel (inodes the key paths watch stay keys). `initial`: before
    /// the probes are attached (nothing is stamped).
    pub fn scan_code(&mut self, initial: bool) -> bool {
        let delta = self.code.scan().without(&self.watcher);
        let changed = !delta.entries.is_empty() || !delta.removed.is_empty();
        delta.push(&mut self.kernel, initial);
        // A name made in a subdirectory of a code path (a unit's drop-in
        // directory) is reported by the directory's name too.
        self.kernel.watch_code_names(&delta.new_dirs);
        changed
    }

    /// A new code watcher for `configured` paths (start, reload), with
    /// the files key holders run after them.
    pub fn set_code_paths(&mut self, configured: Vec<std::path::PathBuf>) {
        self.code = Watcher::code(configured);
        for l in &self.holder_code {
            self.code.add_root(l.path.clone());
        }
    }

    /// Files key holders run, found since the last call: watched from now
    /// on as code paths (their names too, for a file created or renamed
    /// there after a delete).
    pub fn watch_holder_code(&mut self, found: Vec<crate::enrich::holder_code::Loaded>) {
        let mut added = Vec::new();
        for l in found {
            if self.holder_code.len() >= crate::enrich::holder_code::MAX_FILES {
                break;
            }
            if self.code.add_root(l.path.clone()) {
                added.push(l.path.clone());
                self.holder_code.push(l);
            }
        }
        if added.is_empty() {
            return;
        }
        self.kernel.watch_code_names(&added);
        // (Logged below as one line, not each as a path appearing.)
        let mut delta = self.code.scan().without(&self.watcher);
        delta.appeared.clear();
        delta.push(&mut self.kernel, false);
        let shown: Vec<String> = added.iter().map(|p| p.display().to_string()).collect();
        tracing::info!(
            "watching {} more file(s) key holders run: {}",
            added.len(),
            shown.join(", ")
        );
    }

    /// The processes whose code counts (`enrich::holder_code`): protected
    /// processes and key holders (not keysentry), with `allowed`, the
    /// processes of allowlisted programs.
    pub fn holder_pids(&self, allowed: &[u32]) -> Vec<(u32, String)> {
        let mut pids: Vec<u32> = self
            .protector
            .snapshot()
            .into_iter()
            .filter(|(_, r)| *r != crate::enrich::protect::SELF_RULE)
            .map(|(p, _)| p)
            .chain(allowed.iter().copied())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .map(|p| {
                let comm = self
                    .procs
                    .get(p)
                    .map(|i| i.comm.clone())
                    .unwrap_or_default();
                (p, comm)
            })
            .collect()
    }

    /// Puts the block devices under the watched key stores' file systems
    /// in the kernel's RAW_DEVS (those not there yet): after each scan of
    /// the key paths (live only).
    pub fn sync_raw_devs(&mut self) {
        if !self.kernel.is_live() {
            return;
        }
        let mut stores: Vec<(std::path::PathBuf, u32)> = Vec::new();
        for (k, w) in self.watcher.entries().filter(|(_, w)| w.ns.is_none()) {
            let root = self
                .watcher
                .roots()
                .iter()
                .find(|r| w.path.starts_with(r))
                .unwrap_or(&w.path);
            if !stores.iter().any(|(p, d)| p == root && *d == k.dev) {
                stores.push((root.clone(), k.dev));
            }
        }
        let fresh = self.raw_devs.add(&stores);
        self.watch_raw_devs(&fresh);
        self.sync_swap_devs();
    }

    /// Puts the active swap partitions (/proc/swaps) not there yet in the
    /// kernel's RAW_DEVS (live only): with the key stores' devices, and at
    /// each swapon.
    pub fn sync_swap_devs(&mut self) {
        if !self.kernel.is_live() {
            return;
        }
        let fresh = self.raw_devs.add_swaps();
        self.watch_raw_devs(&fresh);
    }

    fn watch_raw_devs(&mut self, fresh: &[u32]) {
        for d in fresh {
            self.kernel.watch_raw_dev(*d);
        }
        if !fresh.is_empty() {
            tracing::info!(
                "raw reads watched on {} block device(s): the key stores' and the swap areas'",
                self.raw_devs.len()
            );
        }
    }

    /// The key agents' sockets in the kernel's AGENT_SOCKS as the agents
    /// hold them now (live only): at start and every 30 s.
    pub fn sync_agents(&mut self) {
        if !self.kernel.is_live() {
            return;
        }
        // `[agents] protected`: the processes a [[protected]] rule
        // protects (not key holders, not keysentry).
        let protected: Vec<u32> = if self.agents.protected {
            self.protector
                .snapshot()
                .into_iter()
                .filter(|(_, r)| {
                    *r != sensor_common::HOLDER_RULE && *r != crate::enrich::protect::SELF_RULE
                })
                .map(|(p, _)| p)
                .collect()
        } else {
            Vec::new()
        };
        let (fresh, gone) = self.agents.sync(&protected);
        for k in &gone {
            self.kernel.forget_agent_sock(k);
        }
        for (k, v) in &fresh {
            self.kernel.watch_agent_sock(*k, *v);
        }
        if !fresh.is_empty() || !gone.is_empty() {
            tracing::info!("{} key-agent socket(s) watched", self.agents.len());
        }
    }

    /// A rule's alert, to be scored, correlated and output after the rule.
    pub fn raise(&mut self, mut alert: Alert, ts_boot_ns: u64) {
        // A process target says why it is protected.
        if let crate::alert::Target::Process { pid, protected, .. } = &mut alert.target
            && protected.is_none()
        {
            *protected = self.protector.why(*pid);
        }
        self.raised.push((alert, ts_boot_ns));
    }

    /// The alerts raised since the last call, in order.
    pub fn take_raised(&mut self) -> Vec<(Alert, u64)> {
        std::mem::take(&mut self.raised)
    }

    /// Wall-clock time of a kernel timestamp.
    pub(crate) fn wall(&self, boot_ns: u64) -> String {
        self.clock.wall(boot_ns)
    }

    /// Protection changes, carried out in the kernel.
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            match *c {
                Change::Protect(pid, rule) => self.kernel.protect(pid, rule),
                Change::Unprotect(pid) => self.kernel.unprotect(pid),
            }
        }
    }

    /// A process whose memory a dump holds, with why it is protected.
    pub(crate) fn dumped(&self, p: &ProcInfo) -> Origin {
        let mut o = Origin::of(p);
        o.protected = self.protector.why(p.pid);
        o
    }

    /// Remembers a successful memory read of a protected process (the
    /// actor's next file may be a dump of it).
    pub(crate) fn note_memory_reader(&mut self, actor: u32, target: &ProcInfo) {
        if self.mem_readers.len() >= MEM_READERS {
            self.mem_readers.clear();
        }
        let dumped = self.dumped(target);
        self.mem_readers.insert(actor, dumped);
    }

    /// The protected process whose memory `pid` (or an ancestor that
    /// passed its taint on at fork) read.
    pub(crate) fn memory_source(&mut self, pid: u32) -> Option<Origin> {
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

    /// Queues a tracked file for the key-material scanner (with the key
    /// file its lineage starts at, if any: keys found are compared with
    /// that key's, to tell a copy from a new key).
    pub(crate) fn queue_scan(&mut self, id: u32, path: std::path::PathBuf) {
        if let Some(t) = self.registry.get_mut(id) {
            t.scanned = true;
        }
        let origin = self
            .registry
            .root(id)
            .filter(|r| r.kind == crate::alert::TrackedKind::Key && r.id != id)
            .map(|r| (std::path::PathBuf::from(&r.path), r.kdev, r.ino));
        let Some((kdev, ino, root)) = self
            .registry
            .get(id)
            .map(|t| (t.kdev, t.ino, t.root.clone()))
        else {
            return;
        };
        let job = ScanJob {
            id,
            path,
            root,
            kdev,
            ino,
            origin,
            book: false,
        };
        if let Some(tx) = &self.scan_tx
            && tx.try_send(job).is_err()
        {
            self.metrics
                .output_dropped
                .with_label_values(&["scanner"])
                .inc();
        }
    }

    /// Reads the key file (kdev, ino) at `path` for the key book, once
    /// (on the scanner's thread; its fingerprints come back as a scan
    /// result). Returns false when it was read already or the scanner's
    /// queue is full (then a later open tries again).
    pub(crate) fn queue_book(&mut self, path: std::path::PathBuf, kdev: u32, ino: u64) -> bool {
        let Some(tx) = &self.scan_tx else {
            return false;
        };
        if !self.keybook.wants(kdev, ino) {
            return false;
        }
        let job = ScanJob {
            id: 0,
            path,
            root: None,
            kdev,
            ino,
            origin: None,
            book: true,
        };
        if tx.try_send(job).is_err() {
            self.keybook.forget(kdev, ino);
            return false;
        }
        true
    }
}
