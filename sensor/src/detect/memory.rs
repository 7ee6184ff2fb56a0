//! Detect, memory access to other processes: the handlers that turn a
//! `MemRecord` (ptrace, process_vm_readv/writev, pidfd_getfd, and BPF LSM's
//! ptrace_access_check) or an open of /proc/<pid>/{mem,pagemap,environ}
//! into `ptrace-attach`, `process-vm-read`, `process-vm-write`,
//! `pidfd-getfd`, `process-access`, `proc-mem-open` and `proc-environ-read`
//! (judged when its reader exits, `environ.rs`). Reads of a protected
//! process's maps/smaps/status are remembered as reconnaissance for
//! scoring. A memfd or deleted file reopened through /proc/<pid>/fd or
//! map_files is `proc-mem-open` of the protected process that holds it.
//! The alerts are built by `detect.rs`'s policy.

use std::path::Path;

use sensor_common::{
    MEM_LSM_ACCESS, MEM_PIDFD_GETFD, MEM_PTRACE, MEM_VM_READV, MEM_VM_WRITEV, PROC_ENVIRON,
    PROC_MAPS, PROC_REOPEN, PROC_STATUS,
};
use serde_json::Value;

use crate::{
    detect::environ::Environ,
    detect::{MemAccess, Policy},
    enrich::context::Context,
    ingest::decode::{memory::MemRecord, open::OpenRecord},
    rules::Rule,
};

/// Most actors remembered for reconnaissance.
const RECON_ACTORS: usize = 4096;

/// The memory rules' state: reconnaissance seen (actor pid -> protected
/// targets whose maps/smaps/status it read).
#[derive(Default)]
pub struct Memory {
    recon: std::collections::HashMap<u32, std::collections::HashSet<u32>>,
}

/// Memory rules: one `MemRecord` or /proc file open each.
impl Memory {
    /// A process exited: its reconnaissance is forgotten.
    pub fn exited(&mut self, pid: u32) {
        self.recon.remove(&pid);
    }

    /// /proc/<pid>/{mem,pagemap,environ} opens alert; maps/smaps/status of
    /// a protected process is reconnaissance, remembered for scoring.
    pub(crate) fn proc_file_open(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        pending: &mut Environ,
        rec: &OpenRecord,
    ) {
        let actor = cx.procs.resolve(&rec.task);
        let Some(path) = rec.path.as_deref() else {
            return;
        };
        let (target, named) = if rec.proc_file == PROC_REOPEN {
            let Some(holder) = reopen_holder(cx, actor.pid, rec) else {
                return;
            };
            (holder, holder)
        } else {
            let Some(t) = proc_file_target(cx, rec, path) else {
                return;
            };
            t
        };
        if target == actor.pid {
            return;
        }
        if (PROC_MAPS..=PROC_STATUS).contains(&rec.proc_file) {
            if self.recon.len() >= RECON_ACTORS {
                self.recon.clear();
            }
            self.recon.entry(actor.pid).or_default().insert(target);
            return;
        }
        let target_info = cx.procs.lookup(target);
        // A protected process's environment (tokens, passwords) read: its
        // own rule; reading it is not reading the process's memory, so no
        // dump follows from it.
        let environ = rec.proc_file == PROC_ENVIRON;
        let m = MemAccess {
            rule: if environ {
                Rule::ProcEnvironRead
            } else {
                Rule::ProcMemOpen
            },
            access: if rec.flags & 3 == 0 { "read" } else { "write" },
            op: if rec.proc_file == PROC_REOPEN {
                format!(
                    "open {path} (a file no name leads to, held by pid {target}: reopened through /proc/{target}/fd or map_files)"
                )
            } else {
                format!("open {path}")
            },
            ret: rec.ret,
            actor: &actor,
            target: &target_info,
            target_protected: rec.proc_target != 0 || cx.protector.is_protected(target),
            recon: self
                .recon
                .get(&actor.pid)
                .is_some_and(|t| t.contains(&target)),
            path: Some(path.to_string()),
            thread: (named != target).then_some(named),
            ts_boot_ns: rec.task.ts_boot_ns,
        };
        alert_memory(cx, policy, pending, &m);
    }

    pub(crate) fn mem_access(
        &mut self,
        cx: &mut Context,
        policy: &Policy,
        pending: &mut Environ,
        rec: &MemRecord,
    ) {
        let actor = cx.procs.resolve(&rec.task);
        let target = match rec.op {
            // The kernel resolves the pidfd; fdinfo is the fallback.
            MEM_PIDFD_GETFD if rec.target == 0 => match cx
                .view
                .value(format!("pidfd:{}:{}", actor.pid, rec.request), || {
                    pidfd_target(actor.pid, rec.request).into()
                })
                .as_u64()
                .map(|p| p as u32)
            {
                Some(t) => t,
                None => {
                    tracing::debug!("pidfd_getfd by {}: target not resolved", actor.pid);
                    return;
                }
            },
            // The kernel resolved a thread id of a protected process to
            // its tgid already; any other thread id is resolved here.
            _ => cx.procs.tgid_of(rec.target),
        };
        // A thread of the actor's own group is the actor itself.
        if target == actor.pid {
            return;
        }
        let thread = match rec.tid {
            0 => (rec.target != 0 && rec.target != target).then_some(rec.target),
            tid => Some(tid),
        };
        let (rule, access, op) = match rec.op {
            MEM_PTRACE => {
                let (name, access) = ptrace_request(rec.request);
                (Rule::PtraceAttach, access, name)
            }
            MEM_VM_READV => (Rule::ProcessVmRead, "read", "process_vm_readv".into()),
            MEM_VM_WRITEV => (Rule::ProcessVmWrite, "write", "process_vm_writev".into()),
            MEM_LSM_ACCESS => {
                let (op, access) = process_access_op(rec.request, rec.arg);
                (Rule::ProcessAccess, access, op)
            }
            _ => (
                Rule::PidfdGetfd,
                "read",
                format!("pidfd_getfd(fd {})", rec.arg),
            ),
        };
        if rule == Rule::PtraceAttach && access == "attach" && rec.ret >= 0 {
            // A traced process is run by its tracer: no allowance holds
            // for it from now on (the kernel checks `ptrace` itself).
            cx.procs.withdraw_allowance(
                target,
                &format!("traced by pid {} ({})", actor.pid, actor.comm),
            );
        }
        let target_info = cx.procs.lookup(target);
        let m = MemAccess {
            rule,
            access,
            op,
            ret: rec.ret,
            actor: &actor,
            target: &target_info,
            target_protected: rec.target_protected || cx.protector.is_protected(target),
            recon: self
                .recon
                .get(&actor.pid)
                .is_some_and(|t| t.contains(&target)),
            path: None,
            thread,
            ts_boot_ns: rec.task.ts_boot_ns,
        };
        alert_memory(cx, policy, pending, &m);
    }
}

/// The protected process, other than `actor`, that holds the file a
/// `PROC_REOPEN` open reopened (a memfd or deleted file: only a /proc magic
/// link of a process holding it reaches it), by (dev, inode) among its
/// descriptors and mapped files; the recorded answer in a replay.
fn reopen_holder(cx: &mut Context, actor: u32, rec: &OpenRecord) -> Option<u32> {
    let dev = crate::enrich::devnum::st_dev(rec.dev);
    let mut pids: Vec<u32> = cx
        .protector
        .snapshot()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| *p != actor)
        .collect();
    pids.sort_unstable();
    cx.view
        .value(format!("reopen-holder:{actor}:{dev}:{}", rec.ino), || {
            holder_of(&pids, dev, rec.ino).map_or(Value::Null, Value::from)
        })
        .as_u64()
        .map(|p| p as u32)
}

/// Most descriptors and mappings looked at for one reopen.
const HOLDER_ENTRIES: usize = 65536;

/// The first of `pids` with (dev, ino) among its descriptors or mapped
/// files. stat() through the magic links never opens what they name.
fn holder_of(pids: &[u32], dev: u64, ino: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = 0usize;
    for pid in pids {
        for sub in ["fd", "map_files"] {
            let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/{sub}")) else {
                continue;
            };
            for e in rd.flatten() {
                seen += 1;
                if seen > HOLDER_ENTRIES {
                    return None;
                }
                if std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
                    return Some(*pid);
                }
            }
        }
    }
    None
}

/// The process whose /proc file `path` is, and the number its directory
/// names: the kernel's resolution (a protected process, also through one
/// of its threads), else the `<pid>` of /proc/<pid>/task/<tid>, else the
/// thread group of /proc/<n>.
fn proc_file_target(cx: &mut Context, rec: &OpenRecord, path: &str) -> Option<(u32, u32)> {
    let num = |d: &Path| d.file_name()?.to_str()?.parse::<u32>().ok();
    let dir = Path::new(path).parent()?;
    let named = num(dir)?;
    if rec.proc_target != 0 {
        return Some((rec.proc_target, named));
    }
    let up = dir.parent()?;
    if up.file_name().is_some_and(|n| n == "task")
        && let Some(pid) = up.parent().and_then(num)
    {
        return Some((pid, named));
    }
    Some((cx.procs.tgid_of(named), named))
}

fn alert_memory(cx: &mut Context, policy: &Policy, pending: &mut Environ, m: &MemAccess<'_>) {
    if let Some(alert) = policy.memory_access(m, &cx.host, cx.wall(m.ts_boot_ns)) {
        // A process-access is an access check, and environ is not the
        // memory: neither makes the actor a memory reader.
        if m.target_protected
            && m.ret >= 0
            && m.access != "write"
            && m.rule != Rule::ProcessAccess
            && m.rule != Rule::ProcEnvironRead
        {
            cx.note_memory_reader(m.actor.pid, m.target);
        }
        if m.rule == Rule::ProcEnvironRead && m.target_protected && m.ret >= 0 {
            // Judged when the reader exits: a lister reads them all.
            pending.pend(alert, m.ts_boot_ns);
            return;
        }
        cx.raise(alert, m.ts_boot_ns);
    }
}

/// What a `process-access` was, from the actor's syscall (x86_64) and the
/// ptrace access mode the kernel checked: (op, access).
pub fn process_access_op(nr: u64, mode: u64) -> (String, &'static str) {
    const PTRACE_MODE_ATTACH: u64 = 0x02;
    const ACCESSES: [&str; 12] = [
        "read",
        "pread64",
        "readv",
        "readlink",
        "readlinkat",
        "get_robust_list",
        "migrate_pages",
        "move_pages",
        "perf_event_open",
        "kcmp",
        "process_madvise",
        "process_mrelease",
    ];
    let name = i32::try_from(nr)
        .ok()
        .and_then(sensor_common::x86_64::syscall_name)
        .filter(|n| ACCESSES.contains(n))
        .unwrap_or("");
    let op = if name.is_empty() {
        format!("syscall {nr}")
    } else {
        name.to_string()
    };
    (
        op,
        if mode & PTRACE_MODE_ATTACH != 0 {
            "attach"
        } else {
            "read"
        },
    )
}

/// Name of a ptrace request, and whether it reads, writes or attaches.
pub fn ptrace_request(req: u64) -> (String, &'static str) {
    let (name, access) = match req {
        1 => ("PTRACE_PEEKTEXT", "read"),
        2 => ("PTRACE_PEEKDATA", "read"),
        3 => ("PTRACE_PEEKUSER", "read"),
        4 => ("PTRACE_POKETEXT", "write"),
        5 => ("PTRACE_POKEDATA", "write"),
        6 => ("PTRACE_POKEUSER", "write"),
        12 => ("PTRACE_GETREGS", "read"),
        13 => ("PTRACE_SETREGS", "write"),
        14 => ("PTRACE_GETFPREGS", "read"),
        15 => ("PTRACE_SETFPREGS", "write"),
        16 => ("PTRACE_ATTACH", "attach"),
        0x4204 => ("PTRACE_GETREGSET", "read"),
        0x4205 => ("PTRACE_SETREGSET", "write"),
        0x4206 => ("PTRACE_SEIZE", "attach"),
        other => return (format!("ptrace request {other}"), "read"),
    };
    (name.to_string(), access)
}

/// The pid behind `pidfd` in process `pid` (from its fdinfo).
fn pidfd_target(pid: u32, pidfd: u64) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{pidfd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|p| *p > 0)
        .map(|p| p as u32)
}
