//! Kernel folding, user space's side (issue 13; the kernel's is
//! `sensor-ebpf/src/fold.rs`).
//!
//! The kernel sends the first of identical events and counts the others
//! in its `FOLD` map; the next record of the same key after the fold
//! window carries the count folded since the previous one. Two things
//! here:
//! - [`KernelFolds`] (live only) sweeps the `FOLD` map for windows that
//!   closed with nothing sent after them (a loop that stopped), takes
//!   their counts and removes the entries; it exports
//!   `keysentry_events_folded_total{kind}` and
//!   `keysentry_events_throttled_total{kind}`, and finds the processes the
//!   critical lane's rate limit held back (`CRIT_RATE`).
//! - [`FoldedAlerts`] (the pipeline's, live and in a replay) remembers,
//!   per fold key, the alerts its last record raised, so a count the sweep
//!   took is added to those alerts' `count` (`Pipeline::folded`).

use std::collections::{HashMap, VecDeque};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use sensor_common::{CritBucket, EventKind, FoldKey, FoldVal, KIND_SLOTS, LRU_CRIT_RATE, LRU_FOLD};

use crate::{alert::Alert, kernel::lru::LruChurn, metrics::Metrics};

/// A window is swept this long after it closed, so that the sweep does
/// not race the record the next identical event would send.
const SETTLE_NS: u64 = 500_000_000;
/// A key user space holds no record of is left in the kernel map this
/// long (its record may still be in a ring behind a flood), then dropped.
const UNKNOWN_KEEP_NS: u64 = 30_000_000_000;
/// The alerts of a fold key are kept this long after its last record.
const ALERTS_KEEP_NS: u64 = 30_000_000_000;
/// At most this many fold keys' alerts are kept (the oldest go first,
/// `keysentry_map_evictions_total{map="fold_alerts"}`).
pub const ALERTS_MAX: usize = 2 * sensor_common::FOLD_ENTRIES as usize;

/// The kernel's fold and rate-limit maps and counters.
pub struct KernelFolds {
    fold: PerCpuHashMap<MapData, FoldKey, FoldVal>,
    folded: PerCpuArray<MapData, u64>,
    folded_seen: [u64; KIND_SLOTS as usize],
    throttled: PerCpuArray<MapData, u64>,
    throttled_seen: [u64; KIND_SLOTS as usize],
    crit_rate: BpfHashMap<MapData, u64, CritBucket>,
    /// Held-back counts already reported, per (tgid << 32 | kind).
    held_seen: HashMap<u64, u64>,
    window_ns: u64,
}

/// A window the sweep found closed: its key, and the events folded since
/// its last record (0: nothing to add, the entry just goes).
pub type Settled = (FoldKey, u64);

impl KernelFolds {
    pub fn take(ebpf: &mut Ebpf, window_ms: u32) -> Result<Self> {
        let mut map = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        Ok(Self {
            fold: PerCpuHashMap::try_from(map("FOLD")?)?,
            folded: PerCpuArray::try_from(map("FOLDED")?)?,
            folded_seen: [0; KIND_SLOTS as usize],
            throttled: PerCpuArray::try_from(map("THROTTLED")?)?,
            throttled_seen: [0; KIND_SLOTS as usize],
            crit_rate: BpfHashMap::try_from(map("CRIT_RATE")?)?,
            held_seen: HashMap::new(),
            window_ns: window_ms as u64 * 1_000_000,
        })
    }

    /// The keys whose windows closed on every CPU (every key when `all`,
    /// at shutdown): their counts (summed over the CPUs) and the age of
    /// their newest window.
    pub fn settled(&self, now_ns: u64, all: bool) -> Vec<(Settled, u64)> {
        let mut out = Vec::new();
        for item in self.fold.iter() {
            let Ok((k, per_cpu)) = item else { continue };
            let newest = per_cpu.iter().map(|v| v.first_ns).max().unwrap_or(0);
            let age = now_ns.saturating_sub(newest);
            if all || age > self.window_ns + SETTLE_NS {
                let pending = per_cpu.iter().map(|v| v.pending).sum();
                out.push(((k, pending), age));
            }
        }
        out
    }

    /// Sweeps the fold map: the closed windows whose key `known` accepts
    /// are handed to `take` and removed; unknown ones are kept for a while
    /// (their record may still be in a ring).
    pub fn sweep(&mut self, now_ns: u64, all: bool, take: impl FnOnce(&[Settled]) -> Vec<FoldKey>) {
        let settled = self.settled(now_ns, all);
        if settled.is_empty() {
            return;
        }
        let items: Vec<Settled> = settled.iter().map(|(s, _)| *s).collect();
        let unknown = take(&items);
        for ((k, _), age) in &settled {
            if unknown.contains(k) && age < &UNKNOWN_KEEP_NS && !all {
                continue;
            }
            if self.fold.remove(k).is_ok() {
                crate::kernel::lru::count_removed(LRU_FOLD, 1);
            }
        }
    }

    /// The fill of FOLD and CRIT_RATE into `keysentry_map_entries{map}`
    /// (one syscall per key, at most each map's capacity: 16384 and 4096),
    /// and their evictions.
    pub fn update_fill(&self, metrics: &Metrics, lru: &mut LruChurn) {
        use aya::maps::IterableMap;
        let cap = crate::kernel::mapstats::capacity(IterableMap::map(&self.fold));
        lru.sample(metrics, LRU_FOLD, || {
            let n = self
                .fold
                .keys()
                .take(cap.max(1) as usize)
                .filter(|k| k.is_ok())
                .count() as i64;
            metrics.map_entries.with_label_values(&["FOLD"]).set(n);
            n
        });
        metrics.map_capacity.with_label_values(&["FOLD"]).set(cap);
        lru.sample(metrics, LRU_CRIT_RATE, || {
            crate::kernel::mapstats::set_fill(metrics, "CRIT_RATE", &self.crit_rate)
        });
    }

    /// FOLDED and THROTTLED into their metrics.
    pub fn update_counters(&mut self, metrics: &Metrics) {
        for kind in EventKind::ALL {
            let i = kind as usize;
            if let Ok(v) = self.folded.get(&(kind as u32), 0) {
                let total: u64 = v.iter().sum();
                if total > self.folded_seen[i] {
                    metrics
                        .events_folded
                        .with_label_values(&[kind.name()])
                        .inc_by(total - self.folded_seen[i]);
                    self.folded_seen[i] = total;
                }
            }
            if let Ok(v) = self.throttled.get(&(kind as u32), 0) {
                let total: u64 = v.iter().sum();
                if total > self.throttled_seen[i] {
                    metrics
                        .events_throttled
                        .with_label_values(&[kind.name()])
                        .inc_by(total - self.throttled_seen[i]);
                    self.throttled_seen[i] = total;
                }
            }
        }
    }

    /// The processes whose critical records the rate limit held back since
    /// the last call: (tgid, kind, how many).
    pub fn held(&mut self) -> Vec<(u32, EventKind, u64)> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for item in self.crit_rate.iter() {
            let Ok((k, b)) = item else { continue };
            let before = self.held_seen.get(&k).copied().unwrap_or(0);
            if b.held > before
                && let Some(kind) = EventKind::from_u32(k as u32)
            {
                out.push(((k >> 32) as u32, kind, b.held - before));
            }
            if b.held > 0 {
                seen.insert(k, b.held);
            }
        }
        self.held_seen = seen;
        out.sort_by_key(|(t, k, _)| (*t, *k as u32));
        out
    }
}

/// Per fold key, the alerts its last record raised (before scoring and
/// correlation), to which the counts the sweep takes are added.
#[derive(Default)]
pub struct FoldedAlerts {
    keys: HashMap<FoldKey, Entry>,
    /// Keys in the order their records came, with that record's time:
    /// the oldest goes first when full, in O(1) (a key remembered again
    /// since is skipped; the queue is pruned at twice the bound).
    order: VecDeque<(FoldKey, u64)>,
    /// Keys pushed out since the last `take_evicted`.
    evicted: u64,
}

struct Entry {
    alerts: Vec<Alert>,
    /// Boot time of the key's last record.
    last_ns: u64,
}

impl FoldedAlerts {
    /// The record of `key` at `ts` raised `alerts`.
    pub fn remember(&mut self, key: FoldKey, ts: u64, alerts: Vec<Alert>) {
        self.keys.insert(
            key,
            Entry {
                alerts,
                last_ns: ts,
            },
        );
        self.order.push_back((key, ts));
        while self.keys.len() > ALERTS_MAX {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            if self.keys.get(&k).is_some_and(|e| e.last_ns == t) {
                self.keys.remove(&k);
                self.evicted += 1;
            }
        }
        if self.order.len() > 2 * ALERTS_MAX {
            let keys = &self.keys;
            self.order
                .retain(|(k, t)| keys.get(k).is_some_and(|e| e.last_ns == *t));
        }
    }

    /// Keys pushed out of the full table since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    pub fn knows(&self, key: &FoldKey) -> bool {
        self.keys.contains_key(key)
    }

    /// The alerts `n` more events of `key` stand for (the key's entry is
    /// done: its kernel window closed).
    pub fn take(&mut self, key: &FoldKey) -> Vec<Alert> {
        self.keys.remove(key).map(|e| e.alerts).unwrap_or_default()
    }

    /// Drops the keys whose last record is older than `keep_ns`.
    pub fn prune(&mut self, now_ns: u64, keep_ns: u64) {
        self.keys
            .retain(|_, e| now_ns.saturating_sub(e.last_ns) < keep_ns);
    }

    pub fn prune_old(&mut self, now_ns: u64) {
        self.prune(now_ns, ALERTS_KEEP_NS);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32) -> FoldKey {
        FoldKey {
            tgid,
            kind: EventKind::KeyOpen as u32,
            ..Default::default()
        }
    }

    #[test]
    fn alerts_of_a_key_are_taken_once_and_pruned_when_old() {
        let mut f = FoldedAlerts::default();
        f.remember(key(1), 10, Vec::new());
        f.remember(key(2), 20, Vec::new());
        assert!(f.knows(&key(1)));
        assert!(f.take(&key(1)).is_empty());
        assert!(!f.knows(&key(1)));
        f.prune(20 + ALERTS_KEEP_NS, ALERTS_KEEP_NS);
        assert!(f.is_empty());
    }

    /// Full, the table pushes out the key whose last record is oldest
    /// (a key remembered again is young again), and counts it.
    #[test]
    fn a_full_table_evicts_the_oldest_key() {
        let mut f = FoldedAlerts::default();
        for t in 0..ALERTS_MAX as u32 {
            f.remember(key(t), t as u64, Vec::new());
        }
        f.remember(key(0), 1_000_000, Vec::new());
        assert_eq!(f.take_evicted(), 0);
        f.remember(key(u32::MAX), 1_000_001, Vec::new());
        assert_eq!(f.take_evicted(), 1);
        assert_eq!(f.len(), ALERTS_MAX);
        assert!(f.knows(&key(0)), "remembered again");
        assert!(!f.knows(&key(1)), "the oldest");
        assert!(f.order.len() <= 2 * ALERTS_MAX);
    }
}
