//! User-space pipeline throughput: synthetic ring-buffer records (the
//! kernel's exact layouts, compact where the kernel sends them compact)
//! through decode -> enrich -> detect -> outputs,
//! on one core. Reports events/s and peak RSS after a 1M-event flood.
//! Run by `cargo xtask bench`.

use std::time::Instant;

use sensor::{
    agent::pipeline::Pipeline, config::Config, detect::Policy, enrich::proctab::ProcessTable,
    enrich::watch::Watcher, metrics::Metrics, output::Outputs,
};
use sensor_common::{
    EventKind, ExecEvent, ExitEvent, ForkEvent, Header, KPath, MATCH_INODE, OpenEvent, SRC_OPENAT,
};

fn header(kind: EventKind, pid: u32) -> Header {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"work");
    Header {
        kind: kind as u32,
        size: kind.record_size() as u32,
        ts_boot_ns: 1,
        pid,
        tid: pid,
        uid: 1000,
        gid: 1000,
        cgroup_id: 1,
        comm,
    }
}

fn kpath(path: &str) -> KPath {
    KPath::from_path(path)
}

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: the bytes of a plain repr(C) record.
    let mut b =
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec();
    // As the kernel sends it: compact when its kind has a rebuilt path.
    // SAFETY: every record starts with its Header, valid for any bits.
    let h: Header = unsafe { std::ptr::read_unaligned(b.as_ptr() as *const Header) };
    if let Some(c) = EventKind::from_u32(h.kind).and_then(|k| k.compaction()) {
        let n = c.compact(&mut b);
        b.truncate(n);
    }
    b
}

fn records() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let pid = 100_000 + i;
        // SAFETY: all-zero is valid for these plain records.
        let mut exec: ExecEvent = unsafe { std::mem::zeroed() };
        exec.hdr = header(EventKind::Exec, pid);
        let cmd = b"/usr/bin/worker\0--job\0nightly\0";
        exec.cmdline[..cmd.len()].copy_from_slice(cmd);
        exec.cmdline_len = cmd.len() as u32;
        exec.exe = kpath("/usr/bin/worker");
        out.push(bytes(&exec));
        let mut fork: ForkEvent = unsafe { std::mem::zeroed() };
        fork.hdr = header(EventKind::Fork, pid);
        fork.child_pid = pid + 5000;
        out.push(bytes(&fork));
        let mut open: OpenEvent = unsafe { std::mem::zeroed() };
        open.hdr = header(EventKind::KeyOpen, pid);
        open.ret = 3;
        open.ino = 42;
        open.dev = (8 << 20) | 1;
        open.mode = 0o100600;
        open.source = SRC_OPENAT;
        open.matched = MATCH_INODE;
        open.path = kpath("/etc/ssl/private/ca.key");
        out.push(bytes(&open));
        let mut exit: ExitEvent = unsafe { std::mem::zeroed() };
        exit.hdr = header(EventKind::Exit, pid + 5000);
        out.push(bytes(&exit));
    }
    out
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cfg = Config::default_config();
    let metrics = Metrics::new().expect("metrics");
    // No sinks: alerts are built and queued, as in production, then dropped.
    let off = sensor::config::Alerts {
        stdout: false,
        ..Default::default()
    };
    let outputs = Outputs::start(&off, metrics.clone()).expect("outputs");
    let mut pipe = Pipeline::new(
        ProcessTable::new(),
        Watcher::new(vec![]),
        Policy::from_config(&cfg),
        outputs,
        metrics,
    );
    let recs = records();
    let total: usize = std::env::var("KS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let mut n = 0;
    while n < total {
        for r in &recs {
            pipe.handle(r);
        }
        n += recs.len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pipeline: {n} events in {secs:.2}s = {:.0} events/s on one core (goal >= 500000); mix: exec, fork, key open (alert), exit",
        n as f64 / secs
    );
    println!(
        "pipeline: peak RSS {} MB after the flood (goal <= 64)",
        peak_rss_kb() / 1024
    );
}
