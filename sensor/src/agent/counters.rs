//! The kernel's counters into metrics, read each tick by the event loop
//! (`live.rs`): records lost per kind and lane, the sticky critical-lost
//! flags (an `events-lost` alert), map inserts refused, and flows stopped.

use aya::maps::{Array, MapData, PerCpuArray};
use sensor_common::{EventKind, Lane, lost_slot};

use crate::metrics::Metrics;

/// The kernel's LOST counters (per lane and kind; each kind travels in one
/// lane) into keysentry_events_lost_total{kind,lane}; returns the critical
/// records lost since the last call, per kind.
pub(super) fn update_lost(
    lost: &PerCpuArray<MapData, u64>,
    seen: &mut [u64],
    metrics: &Metrics,
) -> Vec<(EventKind, u64)> {
    let mut critical = Vec::new();
    for kind in EventKind::ALL {
        let lane = kind.lane();
        let Ok(values) = lost.get(&lost_slot(lane, kind), 0) else {
            continue;
        };
        let total: u64 = values.iter().sum();
        let prev = seen[kind as usize];
        if total > prev {
            metrics
                .events_lost
                .with_label_values(&[kind.name(), lane.name()])
                .inc_by(total - prev);
            seen[kind as usize] = total;
            if lane == Lane::Critical {
                critical.push((kind, total - prev));
            }
        }
    }
    critical
}

/// Reads and clears one of the kernel's sticky critical flags (0: a
/// critical record did not fit, 1: a process was past its rate limit).
pub(super) fn take_critical_flag(flag: &mut Array<MapData, u64>, slot: u32) -> bool {
    match flag.get(&slot, 0) {
        Ok(0) => false,
        Ok(_) => {
            if let Err(e) = flag.set(slot, 0, 0) {
                tracing::warn!("clearing CRITICAL_LOST: {e}");
            }
            true
        }
        Err(e) => {
            tracing::warn!("reading CRITICAL_LOST: {e}");
            false
        }
    }
}

/// The kernel's INSERT_FAILED counters plus user space's own refused
/// inserts (`kernel::control::count_insert_failed`) into
/// keysentry_map_insert_failures_total{map}. A map whose count moved since
/// the last call is one warning naming what the refusals cost (once per
/// tick per map, however many); strong taints refused by both taint maps
/// are returned instead (an `events-lost` alert).
pub(super) fn update_insert_failed(
    failed: &PerCpuArray<MapData, u64>,
    seen: &mut [u64],
    metrics: &Metrics,
) -> u64 {
    let totals: Vec<u64> = (0..sensor_common::INSERT_FAIL_SLOTS)
        .map(|i| {
            let kernel: u64 = failed.get(&i, 0).map_or(0, |v| v.iter().sum());
            kernel + crate::kernel::control::user_insert_failures(i)
        })
        .collect();
    let mut strong = 0;
    for (slot, n) in insert_failure_deltas(&totals, seen) {
        let map = sensor_common::INSERT_FAIL_MAPS[slot];
        metrics
            .map_insert_failures
            .with_label_values(&[map])
            .inc_by(n);
        if slot as u32 == sensor_common::INSERT_FAIL_RESERVE {
            strong += n;
        } else {
            tracing::warn!(
                "{map} full: {n} insert(s) refused: {}",
                sensor_common::INSERT_FAIL_COSTS[slot]
            );
        }
    }
    strong
}

/// The slots whose total grew past what was `seen`, with by how much;
/// `seen` takes the new totals. A total below `seen` (a counter that
/// could not be read) is no change.
fn insert_failure_deltas(totals: &[u64], seen: &mut [u64]) -> Vec<(usize, u64)> {
    let mut moved = Vec::new();
    for (i, (&total, s)) in totals.iter().zip(seen.iter_mut()).enumerate() {
        if total > *s {
            moved.push((i, total - *s));
            *s = total;
        }
    }
    moved
}

/// The kernel's FLOW_STOPPED counters into keysentry_flow_stopped_total.
pub(super) fn update_stopped(
    stopped: &PerCpuArray<MapData, u64>,
    seen: &mut [u64],
    metrics: &Metrics,
) {
    for (i, reason) in sensor_common::STOP_REASONS.iter().enumerate() {
        let Ok(values) = stopped.get(&(i as u32), 0) else {
            continue;
        };
        let total: u64 = values.iter().sum();
        if total > seen[i] {
            metrics
                .flow_stopped
                .with_label_values(&[reason])
                .inc_by(total - seen[i]);
            seen[i] = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::insert_failure_deltas;

    #[test]
    fn insert_failures_move_once_per_change() {
        let mut seen = [0u64; 3];
        assert_eq!(insert_failure_deltas(&[0, 2, 0], &mut seen), vec![(1, 2)]);
        // Nothing moved: no warning.
        assert!(insert_failure_deltas(&[0, 2, 0], &mut seen).is_empty());
        assert_eq!(
            insert_failure_deltas(&[5, 3, 0], &mut seen),
            vec![(0, 5), (1, 1)]
        );
        // An unreadable counter (0) is no change, and no negative delta.
        assert!(insert_failure_deltas(&[0, 3, 0], &mut seen).is_empty());
        assert_eq!(seen, [5, 3, 0]);
    }
}
