//! The three kernel rings (`Lane`: critical, lifecycle, bulk) read into
//! the pipeline.
//!
//! Every wake-up of any ring and every timer drain runs [`Lanes::drain`]:
//! rounds that each read the critical ring first (up to `CRITICAL_BATCH`
//! records, in practice all of it), then a bounded batch of the lifecycle
//! ring and of the bulk ring (`BATCH` each), and hand what was read to the
//! pipeline in the order the events happened (the header's boot time; a
//! tie goes to the lane read first). Reading frees kernel space: a flood
//! of bulk records never delays the reading of the critical ring.
//!
//! Why time order rather than critical records first: the rings are not
//! ordered with each other, and a record can depend on an earlier one of
//! another lane: a process's exec (lifecycle) before its ptrace (critical),
//! the `/proc/<pid>/maps` read (bulk) that makes a later memory read
//! reconnaissance-backed, the key open (bulk) that registers the source
//! before the copy's write (critical), the close (bulk) before the writer's
//! exit (lifecycle). A record is handed over only once every lane has been
//! read past its time (the watermark: each lane's read started after it,
//! or, for the critical lane when a batch filled, read up to it), so a
//! record's predecessors, committed before it was even reserved, are
//! always handled before it; what is newer waits for the next round.
//!
//! When the lifecycle or bulk ring is behind (a batch filled: a flood),
//! the round does not wait for it: the critical records read are handled
//! after at most one batch of older lifecycle and bulk records, and may
//! overtake older records still in a ring that is behind (the process
//! table keeps exited processes for a while and reads /proc for unknown
//! ones). A drain stops after `ROUNDS` rounds and says so, so the event
//! loop serves its timers (and the critical-lost check) during a flood and
//! comes back at once.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use sensor_common::Lane;
use tokio::io::unix::AsyncFd;

use crate::{agent::pipeline::Pipeline, enrich::context::boot_now};

/// Critical records read per round (a round reads the ring empty unless
/// more than this arrive while it reads).
const CRITICAL_BATCH: usize = 4096;
/// Lifecycle and bulk records read per round.
const BATCH: usize = 256;
/// Rounds per drain before the event loop gets a turn.
const ROUNDS: usize = 32;

/// The kernel map of each lane, in `Lane::ALL` order.
const MAPS: [&str; 3] = ["RB_CRITICAL", "RB_LIFECYCLE", "RB_BULK"];

/// Records of one lane read and not yet handed over, in ring order.
#[derive(Default)]
struct Staged {
    bytes: Vec<u8>,
    /// (event time, start, end) in `bytes`.
    recs: VecDeque<(u64, usize, usize)>,
}

impl Staged {
    fn push(&mut self, rec: &[u8]) {
        // Header: kind u32, size u32, ts_boot_ns u64. A record too short
        // to have a time goes first (decode counts it malformed).
        let ts = rec
            .get(8..16)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])));
        let start = self.bytes.len();
        self.bytes.extend_from_slice(rec);
        self.recs.push_back((ts, start, self.bytes.len()));
    }

    fn head_ts(&self) -> Option<u64> {
        self.recs.front().map(|r| r.0)
    }

    fn last_ts(&self) -> u64 {
        self.recs.back().map_or(0, |r| r.0)
    }

    /// Drops the bytes of the records handed over.
    fn compact(&mut self) {
        match self.recs.front() {
            None => self.bytes.clear(),
            Some(&(_, start, _)) if start > 0 => {
                self.bytes.drain(..start);
                for r in self.recs.iter_mut() {
                    r.1 -= start;
                    r.2 -= start;
                }
            }
            Some(_) => {}
        }
    }
}

/// The three rings, registered with tokio.
pub struct Lanes {
    rings: [AsyncFd<RingBuf<MapData>>; 3],
    staged: [Staged; 3],
}

impl Lanes {
    /// Takes the three ring maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut ring = |name: &str| -> Result<AsyncFd<RingBuf<MapData>>> {
            let rb =
                RingBuf::try_from(ebpf.take_map(name).with_context(|| format!("map {name}"))?)?;
            // SAFETY: the ring buffer owns its fd and is moved into the
            // AsyncFd, so the fd stays open for as long as it is registered.
            unsafe { AsyncFd::register(rb) }
                .with_context(|| format!("registering ring {name} with tokio"))
        };
        Ok(Self {
            rings: [ring(MAPS[0])?, ring(MAPS[1])?, ring(MAPS[2])?],
            staged: Default::default(),
        })
    }

    /// Waits until the kernel wakes user space for `lane`'s ring; its
    /// readiness is cleared before the drain that follows, so a record
    /// submitted meanwhile wakes it again.
    pub async fn woken(&self, lane: Lane) -> Result<()> {
        let mut guard = self.rings[lane as usize].readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Reads and hands over records (module doc). Returns true when a ring
    /// was left behind (call again soon).
    pub fn drain(&mut self, pipe: &mut Pipeline) -> bool {
        let mut again = false;
        for _ in 0..ROUNDS {
            let mut behind = false;
            let mut watermark = u64::MAX;
            for lane in Lane::ALL {
                let i = lane as usize;
                let max = if lane == Lane::Critical {
                    CRITICAL_BATCH
                } else {
                    BATCH
                };
                let st = &mut self.staged[i];
                let rb = self.rings[i].get_mut();
                // Everything committed before now is read below, unless
                // the batch fills.
                let read_from = boot_now();
                let mut n = 0;
                while n < max {
                    let Some(item) = rb.next() else { break };
                    st.push(&item);
                    n += 1;
                }
                if n < max {
                    watermark = watermark.min(read_from);
                } else {
                    behind = true;
                    // A critical ring behind: its records read so far. The
                    // other lanes are not waited for when behind.
                    if lane == Lane::Critical {
                        watermark = watermark.min(st.last_ts());
                    }
                }
            }
            self.hand_over(pipe, watermark);
            if !behind {
                // Records that came in while this round read are handed
                // over by one more round (their time is before its reads).
                let waiting = self.staged.iter().any(|s| !s.recs.is_empty());
                if waiting && !again {
                    again = true;
                    continue;
                }
                return false;
            }
        }
        true
    }

    /// Reads every ring empty and hands everything over (at shutdown).
    pub fn drain_all(&mut self, pipe: &mut Pipeline) {
        while self.drain(pipe) {}
        self.hand_over(pipe, u64::MAX);
    }

    /// The staged records up to `watermark`, to the pipeline in event-time
    /// order.
    fn hand_over(&mut self, pipe: &mut Pipeline, watermark: u64) {
        while let Some(rec) = pop_earliest(&mut self.staged, watermark) {
            pipe.handle(rec);
        }
        for st in &mut self.staged {
            st.compact();
        }
    }
}

/// The earliest staged record (the lane heads' least event time, ring order
/// within a lane, a tie to the lane read first) if it is not after
/// `watermark`.
fn pop_earliest(staged: &mut [Staged; 3], watermark: u64) -> Option<&[u8]> {
    let mut best: Option<(u64, usize)> = None;
    for (i, st) in staged.iter().enumerate() {
        if let Some(ts) = st.head_ts()
            && best.is_none_or(|(b, _)| ts < b)
        {
            best = Some((ts, i));
        }
    }
    let (ts, i) = best?;
    if ts > watermark {
        return None;
    }
    let st = &mut staged[i];
    let (_, start, end) = st.recs.pop_front()?;
    Some(&st.bytes[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, tag: u8) -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[8..16].copy_from_slice(&ts.to_ne_bytes());
        v[16] = tag;
        v
    }

    fn staged(lanes: [&[(u64, u8)]; 3]) -> [Staged; 3] {
        let mut staged: [Staged; 3] = Default::default();
        for (st, recs) in staged.iter_mut().zip(lanes) {
            for (ts, tag) in recs {
                st.push(&rec(*ts, *tag));
            }
        }
        staged
    }

    fn tags(staged: &mut [Staged; 3], watermark: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(r) = pop_earliest(staged, watermark) {
            out.push(r[16]);
        }
        for st in staged.iter_mut() {
            st.compact();
        }
        out
    }

    /// Records are handed over by time, ring order kept within a lane,
    /// a tie to the critical lane; nothing after the watermark.
    #[test]
    fn merge_orders_by_time_up_to_the_watermark() {
        let mut s = staged([
            &[(5, b'c'), (9, b'd')],
            &[(1, b'x'), (5, b'y')],
            &[(2, b'a'), (1, b'b'), (20, b'z')],
        ]);
        assert_eq!(tags(&mut s, 9), b"xabcyd");
        // The rest waits; a later record of another lane goes after it.
        s[0].push(&rec(25, b'e'));
        assert_eq!(tags(&mut s, u64::MAX), b"ze");
        assert!(s.iter().all(|st| st.recs.is_empty() && st.bytes.is_empty()));
    }

    /// Compaction keeps the records that wait intact.
    #[test]
    fn waiting_records_survive_compaction() {
        let mut s = staged([&[(1, b'a'), (7, b'b')], &[], &[(3, b'c'), (8, b'd')]]);
        assert_eq!(tags(&mut s, 4), b"ac");
        s[2].push(&rec(9, b'e'));
        assert_eq!(tags(&mut s, 100), b"bde");
    }
}
