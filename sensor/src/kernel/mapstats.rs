//! `MapStats`: the kernel maps user space only counts, for
//! `keysentry_map_entries` (one map per step, each about every 10 s), with
//! the LRU maps' evictions; and the counting helpers the agent's fold
//! sweep uses too.

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use sensor_common::InodeKey;

use super::control::KernelControl;
use crate::metrics::Metrics;

/// The kernel maps user space only counts, and those it fills at start
/// only.
pub(crate) struct MapStats {
    written: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
    writers: BpfHashMap<MapData, u32, u32>,
    sent: BpfHashMap<MapData, [u64; 2], u32>,
    openers: BpfHashMap<MapData, u64, sensor_common::FileOpener>,
    received: BpfHashMap<MapData, [u64; 2], i32>,
    reported: BpfHashMap<MapData, sensor_common::WriteKey, u64>,
    bypass: BpfHashMap<MapData, u32, u32>,
    group_exited: BpfHashMap<MapData, u32, u64>,
    protected_exes: BpfHashMap<MapData, InodeKey, u32>,
    protected_comms: BpfHashMap<MapData, [u8; 16], u32>,
    /// The next map of `SAMPLED` to count.
    next: usize,
    /// TAINTED's last count (keysentry_tainted_processes adds TAINT_RESERVE).
    tainted: i64,
    /// The LRU maps' churn, for their evictions.
    lru: super::lru::LruChurn,
}

/// The kernel maps sampled into `keysentry_map_entries{map}`, one per
/// `MapStats::step` (the agent steps every 500 ms, so each is counted
/// about every 10 s; `FOLD` and `CRIT_RATE` are counted by the agent's
/// fold sweep, `agent/folds.rs`).
pub(crate) const SAMPLED: [&str; 20] = [
    "WATCHED",
    "WATCHED_NAMES",
    "TAINTED",
    "TAINT_RESERVE",
    "PROTECTED",
    "PROTECTED_THREADS",
    "ALLOW_BYPASS",
    "ENVIRON_READS",
    "GROUP_EXITED",
    "TAINTED_PIPES",
    "WRITTEN",
    "SENT",
    "FILE_OPENERS",
    "FD_RECEIVED",
    "FD_REPORTED",
    "ALLOWED",
    "ALLOW_EXES",
    "PROTECTED_EXES",
    "PROTECTED_COMMS",
    "WRITERS",
];

/// A kernel map's `max_entries`, as the kernel has it (0 if it cannot say).
pub(crate) fn capacity(m: &MapData) -> i64 {
    m.info().map_or(0, |i| i.max_entries() as i64)
}

/// Entries of a kernel hash map: one syscall per key, at most its
/// capacity (a key removed while the walk passes it restarts the walk, so
/// a map that changes fast cannot keep the count going).
pub(crate) fn count_keys<K: aya::Pod, V: aya::Pod>(m: &BpfHashMap<MapData, K, V>) -> i64 {
    use aya::maps::IterableMap;
    let cap = capacity(IterableMap::map(m)).max(1) as usize;
    m.keys().take(cap).filter(|k| k.is_ok()).count() as i64
}

/// A map's fill and capacity into `keysentry_map_entries{map}` and
/// `keysentry_map_capacity{map}`.
pub(crate) fn set_fill<K: aya::Pod, V: aya::Pod>(
    metrics: &Metrics,
    name: &str,
    m: &BpfHashMap<MapData, K, V>,
) -> i64 {
    use aya::maps::IterableMap;
    let n = count_keys(m);
    metrics.map_entries.with_label_values(&[name]).set(n);
    metrics
        .map_capacity
        .with_label_values(&[name])
        .set(capacity(IterableMap::map(m)));
    n
}

impl MapStats {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        Ok(Self {
            written: BpfHashMap::try_from(take("WRITTEN")?)?,
            writers: BpfHashMap::try_from(take("WRITERS")?)?,
            sent: BpfHashMap::try_from(take("SENT")?)?,
            openers: BpfHashMap::try_from(take("FILE_OPENERS")?)?,
            received: BpfHashMap::try_from(take("FD_RECEIVED")?)?,
            reported: BpfHashMap::try_from(take("FD_REPORTED")?)?,
            bypass: BpfHashMap::try_from(take("ALLOW_BYPASS")?)?,
            group_exited: BpfHashMap::try_from(take("GROUP_EXITED")?)?,
            protected_exes: BpfHashMap::try_from(take("PROTECTED_EXES")?)?,
            protected_comms: BpfHashMap::try_from(take("PROTECTED_COMMS")?)?,
            next: 0,
            tainted: 0,
            lru: super::lru::LruChurn::take(ebpf)?,
        })
    }

    /// The LRU maps' churn (FOLD and CRIT_RATE are sampled by the agent's
    /// fold sweep).
    pub(crate) fn lru(&mut self) -> &mut super::lru::LruChurn {
        &mut self.lru
    }

    /// Counts the next map of `SAMPLED` (its cost: one syscall per entry,
    /// at most the map's capacity: 65536 for WATCHED, 16384 or less for
    /// the others), an LRU map's evictions with it. Returns true when the
    /// round of all maps is done.
    pub(crate) fn step(&mut self, metrics: &Metrics, kernel: &KernelControl) -> bool {
        use sensor_common::{
            LRU_ENVIRON_READS, LRU_FD_RECEIVED, LRU_FD_REPORTED, LRU_FILE_OPENERS,
            LRU_GROUP_EXITED, LRU_SENT, LRU_TAINTED_PIPES, LRU_WRITTEN,
        };
        let name = SAMPLED[self.next % SAMPLED.len()];
        self.next = (self.next + 1) % SAMPLED.len();
        let set = |m: &str, n: i64| metrics.map_entries.with_label_values(&[m]).set(n);
        let k = kernel.maps();
        let lru = &mut self.lru;
        match name {
            "WATCHED" => k.map(|k| set_fill(metrics, name, &k.watched)),
            "WATCHED_NAMES" => k.map(|k| set_fill(metrics, name, &k.names)),
            "TAINTED" => k.map(|k| {
                self.tainted = set_fill(metrics, name, &k.tainted);
                self.tainted
            }),
            "TAINT_RESERVE" => k.map(|k| {
                let n = set_fill(metrics, name, &k.taint_reserve);
                metrics.tainted_processes.set(self.tainted + n);
                n
            }),
            "ENVIRON_READS" => k.map(|k| {
                lru.sample(metrics, LRU_ENVIRON_READS, || {
                    set_fill(metrics, name, &k.environ)
                })
            }),
            "ALLOWED" => k.map(|k| set_fill(metrics, name, &k.allowed)),
            "ALLOW_EXES" => k.map(|k| set_fill(metrics, name, &k.allow_exes)),
            "PROTECTED" => kernel
                .protected
                .as_ref()
                .map(|p| set_fill(metrics, name, &p.tgids)),
            "PROTECTED_THREADS" => kernel
                .protected
                .as_ref()
                .map(|p| set_fill(metrics, name, &p.threads)),
            "ALLOW_BYPASS" => Some(set_fill(metrics, name, &self.bypass)),
            "GROUP_EXITED" => Some(lru.sample(metrics, LRU_GROUP_EXITED, || {
                set_fill(metrics, name, &self.group_exited)
            })),
            "TAINTED_PIPES" => k.map(|k| {
                lru.sample(metrics, LRU_TAINTED_PIPES, || {
                    set_fill(metrics, name, &k.pipes)
                })
            }),
            "WRITTEN" => Some(lru.sample(metrics, LRU_WRITTEN, || {
                set_fill(metrics, name, &self.written)
            })),
            "WRITERS" => Some(set_fill(metrics, name, &self.writers)),
            "SENT" => Some(lru.sample(metrics, LRU_SENT, || set_fill(metrics, name, &self.sent))),
            "FILE_OPENERS" => Some(lru.sample(metrics, LRU_FILE_OPENERS, || {
                set_fill(metrics, name, &self.openers)
            })),
            "FD_RECEIVED" => Some(lru.sample(metrics, LRU_FD_RECEIVED, || {
                set_fill(metrics, name, &self.received)
            })),
            "FD_REPORTED" => Some(lru.sample(metrics, LRU_FD_REPORTED, || {
                set_fill(metrics, name, &self.reported)
            })),
            "PROTECTED_EXES" => Some(set_fill(metrics, name, &self.protected_exes)),
            "PROTECTED_COMMS" => Some(set_fill(metrics, name, &self.protected_comms)),
            _ => None,
        }
        .unwrap_or_else(|| {
            set(name, 0);
            0
        });
        self.next == 0
    }
}
