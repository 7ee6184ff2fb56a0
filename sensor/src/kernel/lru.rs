//! Evictions from the kernel's LRU maps, into
//! `keysentry_map_evictions_total{map}`.
//!
//! An LRU map makes room for a new key by dropping its least recently
//! used entry without telling anyone. The kernel counts, per CPU, the keys
//! its programs add to each LRU map and remove from it (`LRU_CHURN`,
//! `sensor_common::LRU_*`); user space counts the keys it removes itself
//! ([`count_removed`]). Every key added that is neither in the map nor
//! removed was evicted. [`LruChurn::sample`] counts a map's entries
//! between reading the added keys (before) and the removed ones (after),
//! so keys that come and go during the walk make the count lower, never
//! higher: the metric is at least the evictions there were.

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use sensor_common::{LRU_MAPS, LRU_SLOTS, lru_added, lru_removed};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;

/// Keys user space removed from each LRU map, per LRU_* slot.
static USER_REMOVED: [AtomicU64; LRU_SLOTS as usize] =
    [const { AtomicU64::new(0) }; LRU_SLOTS as usize];

/// Counts `n` keys user space removed from the LRU map of slot `slot`
/// (removals that succeeded).
pub(crate) fn count_removed(slot: u32, n: u64) {
    if let Some(c) = USER_REMOVED.get(slot as usize) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The kernel's `LRU_CHURN` counters and the evictions reported so far.
pub struct LruChurn {
    churn: PerCpuArray<MapData, u64>,
    reported: [u64; LRU_SLOTS as usize],
}

impl LruChurn {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let map = ebpf.take_map("LRU_CHURN").context("map LRU_CHURN")?;
        Ok(Self {
            churn: PerCpuArray::try_from(map)?,
            reported: [0; LRU_SLOTS as usize],
        })
    }

    /// One counter summed over the CPUs (0 if it cannot be read).
    fn sum(&self, i: u32) -> u64 {
        self.churn
            .get(&i, 0)
            .map_or(0, |v| v.iter().fold(0u64, |a, n| a.wrapping_add(*n)))
    }

    /// Counts the entries of the LRU map of `slot` with `count` and adds
    /// the evictions found since the last sample to
    /// `keysentry_map_evictions_total{map}`. Returns the entries.
    pub(crate) fn sample(
        &mut self,
        metrics: &Metrics,
        slot: u32,
        count: impl FnOnce() -> i64,
    ) -> i64 {
        let added = self.sum(lru_added(slot));
        let entries = count();
        let removed = self
            .sum(lru_removed(slot))
            .wrapping_add(USER_REMOVED[slot as usize].load(Ordering::Relaxed));
        let evicted = evictions(added, removed, entries);
        let seen = &mut self.reported[slot as usize];
        if evicted > *seen {
            metrics
                .map_evictions
                .with_label_values(&[LRU_MAPS[slot as usize]])
                .inc_by(evicted - *seen);
            *seen = evicted;
        }
        entries
    }
}

/// Keys added that are neither in the map nor removed.
fn evictions(added: u64, removed: u64, entries: i64) -> u64 {
    added
        .saturating_sub(removed)
        .saturating_sub(entries.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_the_keys_neither_present_nor_removed() {
        assert_eq!(evictions(100, 30, 50), 20);
        // Keys added during the walk and counted: never below zero.
        assert_eq!(evictions(100, 30, 80), 0);
        assert_eq!(evictions(10, 20, 0), 0);
        assert_eq!(evictions(10, 0, -1), 10);
    }

    #[test]
    fn every_lru_slot_has_a_map_name() {
        assert_eq!(LRU_MAPS.len(), LRU_SLOTS as usize);
        let mut names = LRU_MAPS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LRU_MAPS.len());
    }
}
