//! `proc-environ-read`: a protected process's environment read through
//! /proc/<pid>/environ (tokens, passwords). `ps aux` (procps 4) reads the
//! environment of every process it lists, so a read is judged once the
//! reader exits (or after a wait): a process that read the environments of
//! many processes (at least 8, or at least 3 and half of the programs
//! running: a small host has few) is a process lister and its read is low;
//! a targeted read (`cat /proc/PID/environ`, `ps eww -p PID`) is medium.

use crate::{alert::Alert, alert::Severity, enrich::context::Context};

/// Environments read by one process from which it counts as a lister.
pub const LISTER_READS: u32 = 8;
/// On a host with few programs running: this many, and half of them.
const LISTER_READS_FEW: u32 = 3;
/// How long a read waits for its reader to exit, in event time (boot ns).
const WAIT_NS: u64 = 10_000_000_000;

/// A protected environment read, waiting for the reader's count.
pub struct PendingEnviron {
    pub alert: Alert,
    pub pid: u32,
    pub ts_boot_ns: u64,
}

/// The `proc-environ-read` rule's state: reads waiting for their reader's
/// count.
#[derive(Default)]
pub struct Environ {
    pending: Vec<PendingEnviron>,
}

impl Environ {
    /// Whether a read waits for its reader.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Holds a `proc-environ-read` alert until its reader exits.
    pub(crate) fn pend(&mut self, alert: Alert, ts_boot_ns: u64) {
        let pid = alert.process.pid;
        self.pending.push(PendingEnviron {
            alert,
            pid,
            ts_boot_ns,
        });
    }

    /// The reader exited having read `reads` environments.
    pub(crate) fn reader_exited(&mut self, cx: &mut Context, pid: u32, reads: u32) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].pid == pid {
                let p = self.pending.remove(i);
                emit(cx, p, reads);
            } else {
                i += 1;
            }
        }
    }

    /// Reads still waiting after WAIT_NS at `now_ns`: judged on the count so far (read
    /// from the kernel now, recorded for replay).
    pub(crate) fn expire(&mut self, cx: &mut Context, now_ns: u64, all: bool) {
        let mut i = 0;
        while i < self.pending.len() {
            if all || self.pending[i].ts_boot_ns.saturating_add(WAIT_NS) <= now_ns {
                let p = self.pending.remove(i);
                let pid = p.pid;
                let live = cx.kernel.environ_reads(pid);
                let reads = cx
                    .view
                    .value(format!("environ_reads:{pid}"), || live.into())
                    .as_u64()
                    .unwrap_or(0) as u32;
                emit(cx, p, reads);
            } else {
                i += 1;
            }
        }
    }
}

fn emit(cx: &mut Context, p: PendingEnviron, reads: u32) {
    let mut alert = p.alert;
    let running = cx.procs.live_programs() as u32;
    let lister =
        reads >= LISTER_READS || (reads >= LISTER_READS_FEW && reads.saturating_mul(2) >= running);
    if lister {
        // What `Policy::memory_access` could not know when the read
        // happened: a lister's read is low, whatever the target.
        alert.severity = Severity::Low;
        alert.score = 25;
        alert.message = format!(
            "{} (it read the environments of {reads} processes: a process lister such as ps)",
            alert.message
        );
    }
    cx.raise(alert, p.ts_boot_ns);
}
