//! The bounded user-space queue between the ring reader (`reader.rs`, its
//! own thread) and the pipeline, and its merge of the three lanes
//! (`Lane`: critical, lifecycle, bulk) in event-time order.
//!
//! **Bounds and dropping.** The queue holds at most [`BUDGET`]`.total`
//! bytes of records (their bytes and per-record bookkeeping). The reader
//! asks [`Queue::room`] for a record of the largest size before it takes
//! one off a ring, and leaves the ring alone when there is none:
//! - bulk may hold at most `bulk_max` (and never more than the total);
//!   past that the bulk ring is left to fill, and the kernel counts what
//!   it cannot take (`keysentry_events_lost_total{kind,lane="bulk"}`, its
//!   fold entries keeping their counts for the next record);
//! - lifecycle and critical records count only themselves against the
//!   total (lifecycle up to `total - crit_reserve`, critical up to all of
//!   it): when they need the room bulk holds, the newest queued bulk
//!   records are dropped ([`Queue::push`]), counted per kind with their
//!   folded repeats (`keysentry_events_lost_total{kind,lane="bulk"}` and
//!   `keysentry_queue_evicted_total{kind}`);
//! - a critical or lifecycle record is never dropped here: when critical
//!   and lifecycle records fill the queue, the reader stops reading that
//!   ring, the kernel's ring fills, and the kernel counts its losses (a
//!   critical one also sets the sticky flag that becomes a high
//!   `events-lost` alert at the next tick).
//!
//! **Merge by watermark.** Records are handed to the pipeline in the order
//! the events happened (the header's boot time; ring order within a lane;
//! a tie to the lane read first), and only up to the watermarks the reader
//! publishes after each round: every lane it read empty in that round was
//! read past the time the round started reading it (so everything
//! committed before that time has been pushed), and a lane left behind (a
//! full batch, or no room) up to its last record. A record's predecessors
//! in other lanes (the actor's exec before its ptrace, the key open that
//! registers the source before the copy's write, the maps read before a
//! memory read, the close before the writer's exit, a key holder's key
//! opens before its exit), committed before it was even reserved, are
//! therefore handed over before it. Lifecycle and bulk records wait for
//! any lane behind (`ordered`): an exit never overtakes its process's
//! opens still in a flooded bulk ring. Critical records wait only for the
//! critical lane (`watermark`): in a flood they are handed over after at
//! most one batch of older records, and may overtake older lifecycle and
//! bulk records still in a ring that is behind (the process table keeps
//! exited processes for a while and reads /proc
//! for unknown ones). Records and the watermark are pushed under the
//! queue's lock, the watermark after the round's records, so whatever
//! watermark the pipeline sees is valid for every record it can pop.

use std::collections::VecDeque;

use sensor_common::{EventKind, KIND_SLOTS, Lane};

use crate::ingest::decode::fold_tag;

/// The queue's bounds, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// All lanes together.
    pub total: usize,
    /// Bulk records at most.
    pub bulk_max: usize,
    /// Kept for critical records: lifecycle records stop short of it.
    pub crit_reserve: usize,
}

/// The live sensor's bounds: 16 MiB in all, bulk at most 8 MiB, 4 MiB
/// only critical records may use (twice the critical ring).
pub(crate) const BUDGET: Budget = Budget {
    total: 16 << 20,
    bulk_max: 8 << 20,
    crit_reserve: 4 << 20,
};

/// The largest record any kind travels in: room for it is asked before a
/// record is taken off a ring.
pub(crate) const MAX_RECORD: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < EventKind::ALL.len() {
        let s = EventKind::ALL[i].record_size();
        if s > max {
            max = s;
        }
        i += 1;
    }
    max
};

/// One record read off a ring.
pub(crate) struct Rec {
    /// The header's event time (0 for a record too short to have one:
    /// it goes first, and decode counts it malformed).
    pub ts: u64,
    pub bytes: Vec<u8>,
}

impl Rec {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        // Header: kind u32, size u32, ts_boot_ns u64.
        let ts = bytes
            .get(8..16)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])));
        Self {
            ts,
            bytes: bytes.to_vec(),
        }
    }

    /// What the record costs the budget: its bytes and its bookkeeping.
    fn cost(&self) -> usize {
        self.bytes.len() + std::mem::size_of::<Rec>()
    }

    /// The events a dropped record stands for: itself and the repeats the
    /// kernel folded into it (they would have reached its alert's count).
    fn events(&self) -> (Option<EventKind>, u64) {
        let kind = self
            .bytes
            .get(0..4)
            .and_then(|b| EventKind::from_u32(u32::from_ne_bytes(b.try_into().ok()?)));
        let folded = fold_tag(&self.bytes).map_or(0, |t| t.folded);
        (kind, 1 + folded)
    }
}

/// The queue (module doc). Shared by the reader and the pipeline behind a
/// mutex (`reader::Shared`).
pub(crate) struct Queue {
    budget: Budget,
    lanes: [VecDeque<Rec>; 3],
    used: [usize; 3],
    watermark: u64,
    /// Lifecycle and bulk records only up to this (module doc): a lane
    /// behind is waited for by the others, never by critical records.
    ordered: u64,
    /// Bulk events dropped to make room, per kind, not yet exported.
    evicted: [u64; KIND_SLOTS as usize],
}

impl Queue {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            lanes: Default::default(),
            used: [0; 3],
            watermark: 0,
            ordered: 0,
            evicted: [0; KIND_SLOTS as usize],
        }
    }

    /// Bytes queued per lane (`Lane::ALL` order).
    pub(crate) fn used(&self) -> [usize; 3] {
        self.used
    }

    fn total(&self) -> usize {
        self.used.iter().sum()
    }

    /// Whether a record of `cost` bytes of `lane` may be taken (critical
    /// and lifecycle counting bulk as room: it is dropped for them).
    pub(crate) fn room(&self, lane: Lane, cost: usize) -> bool {
        let b = &self.budget;
        let prio = self.used[Lane::Critical as usize] + self.used[Lane::Lifecycle as usize];
        match lane {
            Lane::Critical => prio + cost <= b.total,
            Lane::Lifecycle => prio + cost <= b.total.saturating_sub(b.crit_reserve),
            Lane::Bulk => {
                self.used[Lane::Bulk as usize] + cost <= b.bulk_max
                    && self.total() + cost <= b.total
            }
        }
    }

    /// Room for a record of any kind of `lane`.
    pub(crate) fn room_for_any(&self, lane: Lane) -> bool {
        self.room(lane, MAX_RECORD + std::mem::size_of::<Rec>())
    }

    /// Queues a record the reader took after [`Queue::room`] said yes;
    /// drops the newest bulk records while the queue is over its total.
    pub(crate) fn push(&mut self, lane: Lane, rec: Rec) {
        let i = lane as usize;
        self.used[i] += rec.cost();
        self.lanes[i].push_back(rec);
        let bulk = Lane::Bulk as usize;
        while self.total() > self.budget.total {
            let Some(r) = self.lanes[bulk].pop_back() else {
                break;
            };
            self.used[bulk] -= r.cost();
            if let (Some(kind), n) = r.events() {
                self.evicted[kind as usize % KIND_SLOTS as usize] += n;
            }
        }
    }

    /// The reader's watermarks after a round (module doc): `watermark`
    /// for critical records, `ordered` (never above it) for the others.
    pub(crate) fn set_watermark(&mut self, watermark: u64, ordered: u64) {
        self.watermark = watermark;
        self.ordered = ordered.min(watermark);
    }

    /// The earliest queued record (the lane heads' least event time, ring
    /// order within a lane, a tie to the lane read first) that is not after
    /// its lane's watermark: a critical record may go ahead of a lifecycle
    /// or bulk record that waits for a lane behind.
    pub(crate) fn pop_earliest(&mut self) -> Option<Rec> {
        let mut best: Option<(u64, usize)> = None;
        for (i, q) in self.lanes.iter().enumerate() {
            let limit = if i == Lane::Critical as usize {
                self.watermark
            } else {
                self.ordered
            };
            if let Some(r) = q.front()
                && r.ts <= limit
                && best.is_none_or(|(b, _)| r.ts < b)
            {
                best = Some((r.ts, i));
            }
        }
        let (_, i) = best?;
        let r = self.lanes[i].pop_front()?;
        self.used[i] -= r.cost();
        Some(r)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }

    /// The bulk events dropped since the last call, per kind.
    pub(crate) fn take_evicted(&mut self) -> Vec<(EventKind, u64)> {
        let out = EventKind::ALL
            .into_iter()
            .filter_map(|k| {
                let n = self.evicted[k as usize % KIND_SLOTS as usize];
                (n > 0).then_some((k, n))
            })
            .collect();
        self.evicted = [0; KIND_SLOTS as usize];
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `kind`'s size at time `ts`, tagged.
    fn rec_of(kind: EventKind, ts: u64, tag: u8) -> Rec {
        let mut v = vec![0u8; kind.record_size()];
        v[0..4].copy_from_slice(&(kind as u32).to_ne_bytes());
        v[4..8].copy_from_slice(&(kind.record_size() as u32).to_ne_bytes());
        v[8..16].copy_from_slice(&ts.to_ne_bytes());
        v[16] = tag;
        Rec::new(&v)
    }

    fn rec(ts: u64, tag: u8) -> Rec {
        let mut v = vec![0u8; 24];
        v[8..16].copy_from_slice(&ts.to_ne_bytes());
        v[16] = tag;
        Rec::new(&v)
    }

    fn queue(lanes: [&[(u64, u8)]; 3]) -> Queue {
        let mut q = Queue::new(BUDGET);
        for (lane, recs) in Lane::ALL.into_iter().zip(lanes) {
            for (ts, tag) in recs {
                q.push(lane, rec(*ts, *tag));
            }
        }
        q
    }

    fn tags(q: &mut Queue, watermark: u64) -> Vec<u8> {
        tags2(q, watermark, watermark)
    }

    fn tags2(q: &mut Queue, watermark: u64, ordered: u64) -> Vec<u8> {
        q.set_watermark(watermark, ordered);
        let mut out = Vec::new();
        while let Some(r) = q.pop_earliest() {
            out.push(r.bytes[16]);
        }
        out
    }

    /// Records are handed over by time, ring order kept within a lane,
    /// a tie to the critical lane; nothing after the watermark.
    #[test]
    fn merge_orders_by_time_up_to_the_watermark() {
        let mut q = queue([
            &[(5, b'c'), (9, b'd')],
            &[(1, b'x'), (5, b'y')],
            &[(2, b'a'), (1, b'b'), (20, b'z')],
        ]);
        assert_eq!(tags(&mut q, 9), b"xabcyd");
        // The rest waits; a later record of another lane goes after it.
        q.push(Lane::Critical, rec(25, b'e'));
        assert_eq!(tags(&mut q, u64::MAX), b"ze");
        assert!(q.is_empty());
        assert_eq!(q.used(), [0; 3]);
    }

    /// A lane behind (its ring not read to the round's start): lifecycle
    /// and bulk records after its last record read wait for it (an exit
    /// never goes ahead of its process's key opens still in the bulk ring);
    /// critical records do not wait.
    #[test]
    fn a_lane_behind_holds_the_others_but_not_critical_records() {
        let mut q = queue([&[(4, b'c'), (8, b'd')], &[(6, b'x')], &[(3, b'a')]]);
        // Bulk read up to 3 only (a full batch): the exit at 6 waits.
        assert_eq!(tags2(&mut q, 10, 3), b"acd");
        q.push(Lane::Bulk, rec(5, b'b'));
        assert_eq!(tags2(&mut q, 10, 10), b"bx");
        assert!(q.is_empty());
    }

    /// A budget small enough to fill with a few records.
    fn small() -> (Queue, usize) {
        let open = rec_of(EventKind::KeyOpen, 0, 0).cost();
        let budget = Budget {
            total: 6 * open,
            bulk_max: 4 * open,
            crit_reserve: 2 * open,
        };
        (Queue::new(budget), open)
    }

    /// Bulk stops at its share: the reader leaves the rest in the ring
    /// (the kernel counts what it cannot take); nothing is dropped.
    #[test]
    fn bulk_stops_at_its_share() {
        let (mut q, open) = small();
        for i in 0..4 {
            assert!(q.room(Lane::Bulk, open));
            q.push(Lane::Bulk, rec_of(EventKind::KeyOpen, i, b'b'));
        }
        assert!(!q.room(Lane::Bulk, open));
        assert!(q.take_evicted().is_empty());
        // Critical and lifecycle still have room.
        assert!(q.room(Lane::Critical, open));
        assert!(q.room(Lane::Lifecycle, open));
    }

    /// Critical and lifecycle records take the room bulk holds: the newest
    /// bulk records go, counted per kind with their folded repeats; the
    /// oldest bulk records stay.
    #[test]
    fn critical_and_lifecycle_drop_the_newest_bulk_first() {
        let (mut q, open) = small();
        for i in 0..3 {
            q.push(Lane::Bulk, rec_of(EventKind::KeyOpen, i, b'0' + i as u8));
        }
        // The newest bulk record carries 41 repeats the kernel folded.
        let mut folded = rec_of(EventKind::KeyOpen, 3, b'3');
        let n = folded.bytes.len();
        folded.bytes[n - 52] = 1; // FoldKey.kind: a tag is present
        folded.bytes[n - 8..].copy_from_slice(&41u64.to_ne_bytes());
        q.push(Lane::Bulk, folded);
        // Two critical records fit beside four bulk ones: nothing dropped.
        for i in 0..2 {
            assert!(q.room(Lane::Critical, open));
            q.push(Lane::Critical, rec_of(EventKind::KeyOpen, 10 + i, b'c'));
        }
        assert!(q.take_evicted().is_empty());
        // A lifecycle record: the newest bulk record (and its 41 repeats)
        // goes; a third critical one: the next newest.
        assert!(q.room(Lane::Lifecycle, open));
        q.push(Lane::Lifecycle, rec_of(EventKind::KeyOpen, 12, b'l'));
        assert_eq!(q.take_evicted(), vec![(EventKind::KeyOpen, 42)]);
        q.push(Lane::Critical, rec_of(EventKind::KeyOpen, 13, b'c'));
        assert_eq!(q.take_evicted(), vec![(EventKind::KeyOpen, 1)]);
        assert!(q.total() <= 6 * open);
        assert_eq!(tags(&mut q, u64::MAX), b"01cclc");
    }

    /// Critical and lifecycle records are never dropped: when they fill
    /// the queue (all bulk gone) there is no room, and the reader leaves
    /// their rings alone; lifecycle stops short of the critical reserve.
    #[test]
    fn critical_is_refused_never_dropped() {
        let (mut q, open) = small();
        q.push(Lane::Bulk, rec_of(EventKind::KeyOpen, 0, b'b'));
        for i in 0..4 {
            assert!(q.room(Lane::Lifecycle, open));
            q.push(Lane::Lifecycle, rec_of(EventKind::KeyOpen, i, b'l'));
        }
        assert!(!q.room(Lane::Lifecycle, open), "the critical reserve");
        for i in 0..2 {
            assert!(q.room(Lane::Critical, open));
            q.push(Lane::Critical, rec_of(EventKind::KeyOpen, i, b'c'));
        }
        assert_eq!(q.take_evicted(), vec![(EventKind::KeyOpen, 1)]);
        assert!(!q.room(Lane::Critical, open));
        assert!(!q.room(Lane::Bulk, open));
        assert_eq!(q.used()[Lane::Bulk as usize], 0);
        // Handing records over makes room again.
        q.set_watermark(u64::MAX, u64::MAX);
        assert!(q.pop_earliest().is_some());
        assert!(q.room(Lane::Critical, open));
    }

    /// The largest record fits the live budget's every share.
    #[test]
    fn the_live_budget_takes_the_largest_record() {
        let q = Queue::new(BUDGET);
        for lane in Lane::ALL {
            assert!(q.room_for_any(lane));
        }
    }
}
