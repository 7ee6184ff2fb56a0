//! systemd's service watchdog: keysentry says it is ready once its probes
//! are attached and then keeps telling systemd it is alive from the event
//! loop itself, as long as the ring reader thread (`agent/reader.rs`) is
//! alive too. The unit (`deploy/systemd/keysentry.service`) sets
//! `WatchdogSec=`: a loop that stalls (a blocking read on a path an
//! attacker controls, a deadlock), or a reader thread that makes no round
//! for `READER_STALL` (it bumps a heartbeat every round, idle ones
//! included: its 50 ms tick wakes it), stops the pings, and systemd
//! restarts keysentry instead of leaving the host silently unwatched.
//! Without systemd (no `NOTIFY_SOCKET`) every call is a no-op, but a
//! stalled reader is still logged.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// A reader whose heartbeat has not moved for this long is stalled (it
/// wakes every 50 ms even when idle).
pub const READER_STALL: Duration = Duration::from_secs(5);

pub struct Watchdog {
    /// How often to ping: half the watchdog interval systemd gave.
    every: Option<Duration>,
    last: Instant,
    reader: Liveness,
}

/// Whether a heartbeat counter moved recently. The clock is passed in.
#[derive(Debug)]
pub struct Liveness {
    beat: u64,
    moved_at: Instant,
    stall: Duration,
    /// Stalled at the last check (the error is logged once per stall).
    stalled: bool,
}

impl Liveness {
    pub fn new(now: Instant, stall: Duration) -> Self {
        Self {
            beat: 0,
            moved_at: now,
            stall,
            stalled: false,
        }
    }

    /// The heartbeat is `beat` at `now`: alive when it moved within the
    /// stall time. Logs an error when it becomes stalled, and when it
    /// comes back.
    pub fn check(&mut self, beat: u64, now: Instant) -> bool {
        if beat != self.beat {
            self.beat = beat;
            self.moved_at = now;
        }
        let alive = now.saturating_duration_since(self.moved_at) <= self.stall;
        if !alive && !self.stalled {
            tracing::error!(
                "the ring reader thread made no progress for {:?}: no more watchdog pings (systemd restarts keysentry when WatchdogSec is set)",
                self.stall
            );
        } else if alive && self.stalled {
            tracing::warn!("the ring reader thread is making progress again");
        }
        self.stalled = !alive;
        alive
    }
}

impl Watchdog {
    /// From the environment systemd sets (`WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let now = Instant::now();
        Self {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: now,
            reader: Liveness::new(now, READER_STALL),
        }
    }

    /// Start-up is done: the probes are attached and the loop starts.
    pub fn ready(&mut self) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
            tracing::warn!("systemd notify (READY): {e}");
        }
        self.last = Instant::now();
        self.reader.moved_at = self.last;
    }

    /// Called from the event loop's tick with the reader thread's
    /// heartbeat: a ping when one is due and the reader is alive.
    pub fn tick(&mut self, reader_beat: u64) {
        let now = Instant::now();
        if !self.reader.check(reader_beat, now) {
            return;
        }
        let Some(every) = self.every else { return };
        if now.saturating_duration_since(self.last) < every {
            return;
        }
        self.last = now;
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::warn!("systemd notify (WATCHDOG): {e}");
        }
    }

    /// Shutting down: systemd stops expecting pings.
    pub fn stopping(&mut self) {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_whose_heartbeat_stops_is_stalled_past_the_stall_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut l = Liveness::new(t0, s);
        // Rounds keep coming: alive.
        assert!(l.check(1, t0 + Duration::from_millis(50)));
        assert!(l.check(2, t0 + Duration::from_secs(3)));
        // No round since 3 s: alive up to the stall time, then stalled.
        assert!(l.check(2, t0 + Duration::from_secs(8)));
        assert!(!l.check(2, t0 + Duration::from_secs(8) + Duration::from_millis(1)));
        assert!(l.stalled);
        assert!(!l.check(2, t0 + Duration::from_secs(60)));
        // A round again: alive at once.
        assert!(l.check(3, t0 + Duration::from_secs(61)));
        assert!(!l.stalled);
    }

    #[test]
    fn a_clock_that_goes_back_is_no_stall() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut l = Liveness::new(t0, Duration::from_secs(5));
        assert!(l.check(0, t0 - Duration::from_secs(1)));
    }
}
