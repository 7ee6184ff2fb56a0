//! The process table: what user space knows of each process, seeded from
//! /proc at start and kept current by the kernel's exec/fork/exit events.
//! Enrichment of every event goes through `ProcessTable::get`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::ingest::decode::Task;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    /// Real executable path (the kernel's mm->exe_file, or /proc/<pid>/exe).
    /// Shared: forks and lookups clone the entry.
    pub exe: Arc<str>,
    pub argv: Arc<[String]>,
    /// Start time, ns since boot.
    pub start_ns: u64,
    pub cgroup_id: u64,
    /// False between fork and the child's first exec (still the parent's
    /// program: a tracer attaching then is launching it, as strace does).
    pub execed: bool,
    /// The exe path names this process's executable (dev, inode) in
    /// keysentry's own mount namespace (checked at exec): false when the
    /// path string came from another namespace's mount (a bind mount over
    /// an allowlisted path) or the file was replaced. An `[[allow]]` by
    /// path holds only for a genuine executable.
    pub exe_genuine: bool,
    /// The exe path names this process's executable (dev, inode) inside
    /// its own root (checked at exec, for a process in another mount
    /// namespace whose path an `[[allow]]` with a container selector
    /// names): what such an allowance holds for, instead of
    /// `exe_genuine`.
    pub exe_in_root: bool,
    /// Why no `[[allow]]` holds for this process although its executable
    /// is allowlisted: loader variables or tracing at exec, a tracer that
    /// attached since. Kept across fork (the child runs the same code).
    pub allow_bypass: Option<Arc<str>>,
}

/// What an exec put in a process (`ProcessTable::exec`).
#[derive(Debug, Default)]
pub struct Image {
    pub argv: Vec<String>,
    pub exe: Option<String>,
    /// See `ProcInfo::exe_genuine`.
    pub exe_genuine: bool,
    /// See `ProcInfo::exe_in_root`.
    pub exe_in_root: bool,
    /// See `ProcInfo::allow_bypass`.
    pub allow_bypass: Option<Arc<str>>,
}

/// How long an exited process stays in the table for late lookups.
const EXITED_KEEP: usize = 4096;

/// A /proc read made while handling an event, for a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Proc(ProcInfo),
    Tgid(u32, u32),
}

#[derive(Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcInfo>,
    exited: VecDeque<(u32, u64)>,
    /// Replay: never read /proc; what the recording gave is all there is.
    pub offline: bool,
    /// Recording: /proc reads are kept here until the pipeline writes them.
    pub recording: bool,
    pub fetched: Vec<Fetched>,
    /// Thread groups from a recording.
    tgids: HashMap<u32, u32>,
    /// `replay --trim`: the pids the pipeline looked up in the table, and
    /// whether as an event's process (`true`: its command line may be
    /// shown) or only as an ancestor or parent (`false`).
    pub used: Option<std::cell::RefCell<HashMap<u32, bool>>>,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds the table from /proc.
    pub fn snapshot() -> Self {
        let mut t = Self::new();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Some(info) = read_proc(&p) {
                    t.procs.insert(info.pid, info);
                }
            }
        }
        t
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProcInfo> {
        self.procs.values()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.mark(pid, false);
        self.procs.get(&pid)
    }

    fn mark(&self, pid: u32, full: bool) {
        if let Some(u) = &self.used {
            *u.borrow_mut().entry(pid).or_default() |= full;
        }
    }

    /// An entry from a recording.
    pub fn insert(&mut self, p: ProcInfo) {
        self.procs.insert(p.pid, p);
    }

    /// A thread group from a recording.
    pub fn insert_tgid(&mut self, tid: u32, tgid: u32) {
        self.tgids.insert(tid, tgid);
    }

    /// A process read from /proc (none when offline), remembered for a
    /// recording.
    fn read_live(&mut self, pid: u32) -> Option<ProcInfo> {
        if self.offline {
            return None;
        }
        let p = procfs::process::Process::new(pid as i32)
            .ok()
            .and_then(|p| read_proc(&p))?;
        if self.recording {
            self.fetched.push(Fetched::Proc(p.clone()));
        }
        Some(p)
    }

    /// The process, from the table, else from /proc, else from what the
    /// kernel record says.
    pub fn resolve(&mut self, task: &Task) -> ProcInfo {
        self.mark(task.pid, true);
        if let Some(p) = self.procs.get(&task.pid) {
            let mut p = p.clone();
            p.uid = task.uid;
            return p;
        }
        if let Some(p) = self.read_live(task.pid) {
            self.procs.insert(p.pid, p.clone());
            return p;
        }
        ProcInfo {
            pid: task.pid,
            ppid: 0,
            uid: task.uid,
            comm: task.comm.clone(),
            exe: Arc::from(""),
            argv: Arc::from([]),
            start_ns: 0,
            cgroup_id: task.cgroup_id,
            execed: true,
            exe_genuine: true,
            exe_in_root: false,
            allow_bypass: None,
        }
    }

    /// Thread-group id of a thread id (the pid of the process it belongs to).
    pub fn tgid_of(&mut self, tid: u32) -> u32 {
        if self.procs.contains_key(&tid) {
            return tid;
        }
        if self.offline {
            return self.tgids.get(&tid).copied().unwrap_or(tid);
        }
        let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(tid);
        if self.recording {
            self.fetched.push(Fetched::Tgid(tid, tgid));
        }
        tgid
    }

    /// A process by pid: the table, else /proc, else a bare entry.
    pub fn lookup(&mut self, pid: u32) -> ProcInfo {
        self.mark(pid, true);
        if let Some(p) = self.procs.get(&pid) {
            return p.clone();
        }
        if let Some(p) = self.read_live(pid) {
            self.procs.insert(p.pid, p.clone());
            return p;
        }
        ProcInfo {
            pid,
            ppid: 0,
            uid: u32::MAX,
            comm: String::new(),
            exe: Arc::from(""),
            argv: Arc::from([]),
            start_ns: 0,
            cgroup_id: 0,
            execed: true,
            exe_genuine: true,
            exe_in_root: false,
            allow_bypass: None,
        }
    }

    /// The process exec'd `image`.
    pub fn exec(&mut self, task: &Task, ppid: u32, start_ns: u64, image: Image) {
        self.procs.insert(
            task.pid,
            ProcInfo {
                pid: task.pid,
                ppid,
                uid: task.uid,
                comm: task.comm.clone(),
                exe: Arc::from(image.exe.unwrap_or_default()),
                argv: Arc::from(image.argv),
                start_ns,
                cgroup_id: task.cgroup_id,
                execed: true,
                exe_genuine: image.exe_genuine,
                exe_in_root: image.exe_in_root,
                allow_bypass: image.allow_bypass,
            },
        );
    }

    pub fn fork(&mut self, parent: &Task, child_pid: u32, child_start_ns: u64) {
        self.mark(parent.pid, false);
        let base = self.procs.get(&parent.pid).cloned();
        let child = match base {
            Some(p) => ProcInfo {
                pid: child_pid,
                ppid: parent.pid,
                start_ns: child_start_ns,
                execed: false,
                ..p
            },
            None => ProcInfo {
                pid: child_pid,
                ppid: parent.pid,
                uid: parent.uid,
                comm: parent.comm.clone(),
                exe: Arc::from(""),
                argv: Arc::from([]),
                start_ns: child_start_ns,
                cgroup_id: parent.cgroup_id,
                execed: false,
                exe_genuine: true,
                exe_in_root: false,
                allow_bypass: None,
            },
        };
        self.procs.insert(child_pid, child);
    }

    /// No `[[allow]]` holds for the process from now on (until it execs).
    pub fn withdraw_allowance(&mut self, pid: u32, why: &str) {
        if let Some(p) = self.procs.get_mut(&pid)
            && p.allow_bypass.is_none()
        {
            p.allow_bypass = Some(Arc::from(why));
        }
    }

    /// The process's leader was renamed (prctl(PR_SET_NAME), a write to
    /// /proc/<pid>/comm). A process not in the table is left out: /proc
    /// has its current name when it is looked up.
    pub fn rename(&mut self, pid: u32, comm: &str) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.comm = comm.to_string();
        }
    }

    /// Processes that have not exited.
    pub fn live(&self) -> impl Iterator<Item = &ProcInfo> {
        let exited: std::collections::HashSet<(u32, u64)> = self.exited.iter().copied().collect();
        self.procs
            .values()
            .filter(move |p| !exited.contains(&(p.pid, p.start_ns)))
    }

    /// Processes with a program (not kernel threads) that have not exited.
    pub fn live_programs(&self) -> usize {
        let exited: std::collections::HashSet<(u32, u64)> = self.exited.iter().copied().collect();
        self.procs
            .values()
            .filter(|p| !p.exe.is_empty() && !exited.contains(&(p.pid, p.start_ns)))
            .count()
    }

    /// Marks a process exited; it is dropped after EXITED_KEEP later exits,
    /// so events already queued behind its exit still find it.
    pub fn exit(&mut self, pid: u32) {
        let start = self.procs.get(&pid).map(|p| p.start_ns).unwrap_or(0);
        self.exited.push_back((pid, start));
        while self.exited.len() > EXITED_KEEP {
            if let Some((old, start)) = self.exited.pop_front() {
                // Only drop it if the pid was not reused meanwhile.
                if self.procs.get(&old).is_some_and(|p| p.start_ns == start) {
                    self.procs.remove(&old);
                }
            }
        }
    }
}

fn read_proc(p: &procfs::process::Process) -> Option<ProcInfo> {
    let stat = p.stat().ok()?;
    let tps = procfs::ticks_per_second().max(1);
    let exe = p.exe().ok();
    // The executable's identity through the /proc link (the file the
    // process runs, wherever it is mounted) against what its path names
    // here.
    let exe_genuine = exe.as_ref().is_some_and(|e| {
        use std::os::unix::fs::MetadataExt;
        let real = std::fs::metadata(format!("/proc/{}/exe", stat.pid));
        let named = std::fs::metadata(e);
        matches!((real, named), (Ok(r), Ok(n)) if (r.dev(), r.ino()) == (n.dev(), n.ino()))
    });
    let cgroup = cgroup_id(stat.pid).unwrap_or(0);
    // Not the host's file: is it the file its path names in its
    // container (a container's program)?
    let exe_in_root = !exe_genuine
        && cgroup != 0
        && exe.as_ref().is_some_and(|e| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{}/exe", stat.pid)).is_ok_and(|real| {
                crate::enrich::roots::in_container(
                    cgroup,
                    e,
                    crate::enrich::devnum::kdev(real.dev()),
                    real.ino(),
                )
            })
        });
    Some(ProcInfo {
        pid: stat.pid as u32,
        ppid: stat.ppid as u32,
        uid: p.uid().unwrap_or(u32::MAX),
        comm: stat.comm.clone(),
        exe: Arc::from(
            exe.map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        argv: Arc::from(p.cmdline().unwrap_or_default()),
        start_ns: stat.starttime.saturating_mul(1_000_000_000 / tps),
        cgroup_id: cgroup,
        execed: true,
        exe_genuine,
        exe_in_root,
        allow_bypass: running_bypass(p),
    })
}

/// Loader variables in a running process's environment, or a tracer: why
/// an allowance would not hold for a process found in /proc (the kernel
/// checks a new one at exec).
fn running_bypass(p: &procfs::process::Process) -> Option<Arc<str>> {
    if let Ok(st) = p.status()
        && st.tracerpid != 0
    {
        return Some(Arc::from(format!("traced by pid {}", st.tracerpid)));
    }
    let env = p.environ().ok()?;
    LD_VARS
        .iter()
        .find(|v| env.contains_key(std::ffi::OsStr::new(v)))
        .map(|v| Arc::from(format!("{v} in its environment")))
}

/// The loader variables that put code into an allowlisted executable (the
/// kernel's list, probes/process.rs).
pub const LD_VARS: [&str; 3] = ["LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH"];

/// Why an allowance does not hold, from an exec record's EXEC_* bits
/// (of an allowlisted executable: a protected one's are for
/// `key-holder-tamper`).
pub fn exec_bypass(flags: u32) -> Option<Arc<str>> {
    use sensor_common::{EXEC_ALLOWLISTED, EXEC_ENV_UNCHECKED, EXEC_LD_ENV, EXEC_PTRACED};
    use sensor_common::{EXEC_GUEST, EXEC_PROTECTED};
    // Only these execs had their environment and tracer checked.
    let why = if flags & (EXEC_ALLOWLISTED | EXEC_PROTECTED | EXEC_GUEST) == 0 {
        return None;
    } else if flags & EXEC_PTRACED != 0 {
        "traced at exec"
    } else if flags & EXEC_LD_ENV != 0 {
        "LD_PRELOAD, LD_AUDIT or LD_LIBRARY_PATH at exec"
    } else if flags & EXEC_ENV_UNCHECKED != 0 {
        "environment too large to check at exec"
    } else {
        return None;
    };
    Some(Arc::from(why))
}

/// cgroup v2 id of a process: the inode of its cgroup directory.
pub fn cgroup_id(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = crate::kernel::loader::probes::cgroup2_root()?;
    std::fs::metadata(format!("{root}{path}"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32) -> Task {
        Task {
            ts_boot_ns: 0,
            pid,
            tid: pid,
            uid: 7,
            gid: 7,
            cgroup_id: 3,
            comm: "sh".into(),
        }
    }

    #[test]
    fn exec_fork_exit() {
        let mut t = ProcessTable::new();
        t.exec(
            &task(10),
            1,
            100,
            Image {
                argv: vec!["sh".into()],
                exe: Some("/usr/bin/sh".into()),
                ..Default::default()
            },
        );
        t.fork(&task(10), 11, 200);
        let c = t.get(11).unwrap();
        assert_eq!((c.ppid, &*c.exe, c.start_ns), (10, "/usr/bin/sh", 200));
        t.exit(11);
        assert!(t.get(11).is_some(), "kept for late events");
        for pid in 1000..1000 + EXITED_KEEP as u32 + 1 {
            t.exit(pid);
        }
        assert!(t.get(11).is_none());
        assert!(t.get(10).is_some());
    }

    #[test]
    fn rename_changes_comm() {
        let mut t = ProcessTable::new();
        t.exec(
            &task(10),
            1,
            100,
            Image {
                exe: Some("/usr/bin/sh".into()),
                ..Default::default()
            },
        );
        t.rename(10, "signerd");
        assert_eq!(t.get(10).unwrap().comm, "signerd");
        t.rename(99, "other");
        assert!(t.get(99).is_none());
    }

    #[test]
    fn snapshot_sees_self() {
        let t = ProcessTable::snapshot();
        let me = t.get(std::process::id()).expect("own pid in snapshot");
        assert!(me.exe.len() > 1);
        assert!(me.start_ns > 0);
    }
}
