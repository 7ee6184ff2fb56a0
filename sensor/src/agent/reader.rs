//! The ring reader: a dedicated thread that drains the three kernel rings
//! into the bounded queue of `lanes.rs`, and the pipeline's side of it.
//!
//! The reader thread runs its own single-threaded tokio runtime and does
//! nothing but read: it waits on the three rings (`AsyncFd`: the kernel's
//! wake-ups) and a 50 ms tick (the lanes submitted without a wake-up),
//! and reads in rounds: the critical ring first (up to `CRITICAL_BATCH`
//! records, in practice all of it), then at most `BATCH` records of the
//! lifecycle ring and of the bulk ring, each record copied into the queue
//! if it has room for it (`Queue::room`: bulk has a share, critical and
//! lifecycle push the newest bulk records out, a ring without room is left
//! to the kernel). After each round it publishes the watermark (`lanes.rs`)
//! and wakes the pipeline. A lane that filled its batch is read again at
//! once; a lane without room is read again when the pipeline took records.
//! Enrichment, /proc reads, scanning, the metrics server and the pipeline
//! all run on the agent's event loop (`live.rs`), never here.
//!
//! The pipeline side ([`Reader::hand_over`]) pops records in event-time
//! order up to the watermark and hands them to `Pipeline::handle`, a
//! bounded number per turn of the event loop. At shutdown
//! ([`Reader::finish`]) the reader reads every ring until no lane is behind
//! (waiting for room rather than leaving a ring), publishes an infinite
//! watermark and ends; the pipeline handles everything left.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use sensor_common::Lane;
use tokio::{io::unix::AsyncFd, sync::Notify};

use crate::{
    agent::lanes::{BUDGET, Queue, Rec},
    agent::pipeline::Pipeline,
    enrich::context::boot_now,
    metrics::Metrics,
};

/// Critical records read per round (a round reads the ring empty unless
/// more than this arrive while it reads).
const CRITICAL_BATCH: usize = 4096;
/// Lifecycle and bulk records read per round.
const BATCH: usize = 256;
/// Records the pipeline takes from the queue under one lock.
const CHUNK: usize = 256;
/// Records handed over per turn of the event loop (it comes back at once).
const TURN: usize = 32 * CHUNK;

/// The kernel map of each lane, in `Lane::ALL` order.
const MAPS: [&str; 3] = ["RB_CRITICAL", "RB_LIFECYCLE", "RB_BULK"];

/// The queue and what the two threads tell each other.
struct Inner {
    queue: Queue,
    /// The reader left a ring for want of room: the pipeline wakes it when
    /// it takes records.
    reader_waiting: bool,
    /// The reader has ended (every ring read at shutdown, or an error).
    closed: bool,
    error: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// The reader queued records or moved the watermark.
    ready: Notify,
    /// The pipeline took records while the reader waited for room.
    room: Notify,
    /// Shutdown was asked.
    stop: Notify,
    stopping: AtomicBool,
    /// Rounds the reader made (idle ones included: its tick wakes it
    /// every 50 ms): the loop's watchdog pings only while it moves.
    heartbeat: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in the other thread leaves the queue consistent (every
        // change is one push or pop): go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reader thread, seen from the event loop.
pub struct Reader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Takes the three ring maps out of the loaded object and starts the
    /// reader thread on them.
    pub fn start(ebpf: &mut Ebpf, metrics: Arc<Metrics>) -> Result<Self> {
        let mut ring = |name: &str| -> Result<RingBuf<MapData>> {
            Ok(RingBuf::try_from(
                ebpf.take_map(name).with_context(|| format!("map {name}"))?,
            )?)
        };
        let rings = [ring(MAPS[0])?, ring(MAPS[1])?, ring(MAPS[2])?];
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                queue: Queue::new(BUDGET),
                reader_waiting: false,
                closed: false,
                error: None,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ks-reader".into())
            .spawn(move || reader_thread(rings, &theirs, &metrics))
            .context("starting the ring reader thread")?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until the reader queued records or moved the watermark (a
    /// wake-up while the loop was busy is kept for the next call).
    pub async fn ready(&self) {
        self.shared.ready.notified().await;
    }

    /// Hands queued records up to the watermark to the pipeline, at most
    /// `TURN`; true when more are ready (call again soon). An error when
    /// the reader thread failed.
    pub fn hand_over(&self, pipe: &mut Pipeline) -> Result<bool> {
        let more = self.pass(pipe);
        match &self.shared.lock().error {
            Some(e) => Err(anyhow!("ring reader: {e}")),
            None => Ok(more),
        }
    }

    /// `hand_over` without the reader's health.
    fn pass(&self, pipe: &mut Pipeline) -> bool {
        let mut recs: Vec<Rec> = Vec::with_capacity(CHUNK);
        let mut handed = 0;
        while handed < TURN {
            {
                let mut g = self.shared.lock();
                while recs.len() < CHUNK {
                    match g.queue.pop_earliest() {
                        Some(r) => recs.push(r),
                        None => break,
                    }
                }
                if !recs.is_empty() && g.reader_waiting {
                    g.reader_waiting = false;
                    self.shared.room.notify_one();
                }
            }
            let n = recs.len();
            for r in recs.drain(..) {
                pipe.handle(&r.bytes);
            }
            handed += n;
            if n < CHUNK {
                return false;
            }
        }
        true
    }

    /// The reader's heartbeat (`agent::watchdog`): a count that moves every
    /// round, at least every 50 ms while the thread runs.
    pub fn heartbeat(&self) -> u64 {
        self.shared.heartbeat.load(Ordering::Relaxed)
    }

    /// Bytes queued per lane into `keysentry_queue_bytes{lane}`.
    pub fn update_metrics(&self, metrics: &Metrics) {
        let used = self.shared.lock().queue.used();
        for lane in Lane::ALL {
            metrics
                .queue_bytes
                .with_label_values(&[lane.name()])
                .set(used[lane as usize] as i64);
        }
    }

    /// Shutdown: the reader reads every ring (module doc) while the
    /// pipeline handles what it queues, then everything left is handed
    /// over.
    pub async fn finish(mut self, pipe: &mut Pipeline) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.stop.notify_one();
        loop {
            if self.pass(pipe) {
                continue;
            }
            {
                let g = self.shared.lock();
                if g.closed && g.queue.is_empty() {
                    if let Some(e) = &g.error {
                        tracing::error!("ring reader: {e}");
                    }
                    break;
                }
            }
            self.ready().await;
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the ring reader thread panicked");
        }
    }
}

/// The reader thread's body: its runtime, the loop, and the close.
fn reader_thread(rings: [RingBuf<MapData>; 3], shared: &Shared, metrics: &Metrics) {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the ring reader's runtime")
        .and_then(|rt| rt.block_on(read_loop(rings, shared, metrics)));
    let mut g = shared.lock();
    if let Err(e) = result {
        g.error = Some(format!("{e:#}"));
    }
    g.closed = true;
    g.queue.set_watermark(u64::MAX, u64::MAX);
    drop(g);
    shared.ready.notify_one();
}

/// What one round found.
#[derive(Default)]
struct Round {
    read: usize,
    /// A lane filled its batch: read again at once.
    batch_full: bool,
    /// A lane had no room in the queue: read again when the pipeline took
    /// records.
    no_room: bool,
}

async fn read_loop(rings: [RingBuf<MapData>; 3], shared: &Shared, metrics: &Metrics) -> Result<()> {
    let [c, l, b] = rings;
    let register = |rb: RingBuf<MapData>, name: &str| {
        // SAFETY: the ring buffer owns its fd and is moved into the
        // AsyncFd, so the fd stays open for as long as it is registered.
        unsafe { AsyncFd::register(rb) }
            .with_context(|| format!("registering ring {name} with the reader's runtime"))
    };
    let mut rings = [
        register(c, MAPS[0])?,
        register(l, MAPS[1])?,
        register(b, MAPS[2])?,
    ];
    let mut last_ts = [0u64; 3];
    let mut published = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = shared.stopping.load(Ordering::Acquire);
        shared.heartbeat.fetch_add(1, Ordering::Relaxed);
        let r = round(&mut rings, shared, metrics, &mut last_ts, &mut published);
        if r.batch_full {
            continue;
        }
        if stopping && !r.no_room {
            return Ok(());
        }
        if r.read > 0 && !r.no_room {
            // Records that came in while this round read: their time may be
            // past its watermark, one more round hands them over.
            continue;
        }
        tokio::select! {
            g = rings[0].readable() => g?.clear_ready(),
            g = rings[1].readable() => g?.clear_ready(),
            g = rings[2].readable() => g?.clear_ready(),
            _ = tick.tick() => {}
            _ = shared.room.notified(), if r.no_room => {}
            _ = shared.stop.notified() => {}
        }
    }
}

/// One round over the three rings (module doc); publishes the watermark.
fn round(
    rings: &mut [AsyncFd<RingBuf<MapData>>; 3],
    shared: &Shared,
    metrics: &Metrics,
    last_ts: &mut [u64; 3],
    published: &mut u64,
) -> Round {
    let mut out = Round::default();
    let mut watermark = u64::MAX;
    let mut ordered = u64::MAX;
    for lane in Lane::ALL {
        let i = lane as usize;
        let max = if lane == Lane::Critical {
            CRITICAL_BATCH
        } else {
            BATCH
        };
        let rb = rings[i].get_mut();
        // Everything committed before now is read below, unless the batch
        // fills or the queue has no room.
        let read_from = boot_now();
        let mut n = 0;
        let mut no_room = false;
        while n < max {
            let mut g = shared.lock();
            if !g.queue.room_for_any(lane) {
                g.reader_waiting = true;
                no_room = true;
                break;
            }
            let Some(item) = rb.next() else { break };
            let rec = Rec::new(&item);
            drop(item);
            last_ts[i] = rec.ts;
            g.queue.push(lane, rec);
            n += 1;
        }
        out.read += n;
        if n < max && !no_room {
            watermark = watermark.min(read_from);
        } else {
            out.batch_full |= n == max;
            out.no_room |= no_room;
            // A ring behind: its records read so far. Critical records do
            // not wait for a lifecycle or bulk ring behind; the others do.
            if lane == Lane::Critical {
                watermark = watermark.min(last_ts[i]);
            } else {
                ordered = ordered.min(last_ts[i]);
            }
        }
    }
    let evicted = {
        let mut g = shared.lock();
        g.queue.set_watermark(watermark, ordered);
        g.queue.take_evicted()
    };
    for (kind, n) in evicted {
        metrics
            .events_lost
            .with_label_values(&[kind.name(), kind.lane().name()])
            .inc_by(n);
        metrics
            .queue_evicted
            .with_label_values(&[kind.name()])
            .inc_by(n);
    }
    if out.read > 0 || watermark != *published {
        *published = watermark;
        shared.ready.notify_one();
    }
    out
}
