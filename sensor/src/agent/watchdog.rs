//! systemd's service watchdog: keysentry says it is ready once its probes
//! are attached and then keeps telling systemd it is alive from the event
//! loop itself. The unit (`deploy/systemd/keysentry.service`) sets
//! `WatchdogSec=`: a loop that stalls (a blocking read on a path an
//! attacker controls, a deadlock) stops the pings, and systemd restarts
//! keysentry instead of leaving the host silently unwatched. Without
//! systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Watchdog {
    /// How often to ping: half the watchdog interval systemd gave.
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    /// From the environment systemd sets (`WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Self {
        Self {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: Instant::now(),
        }
    }

    /// Start-up is done: the probes are attached and the loop starts.
    pub fn ready(&mut self) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
            tracing::warn!("systemd notify (READY): {e}");
        }
        self.last = Instant::now();
    }

    /// Called from the event loop's tick: a ping when one is due.
    pub fn tick(&mut self) {
        let Some(every) = self.every else { return };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::warn!("systemd notify (WATCHDOG): {e}");
        }
    }

    /// Shutting down: systemd stops expecting pings.
    pub fn stopping(&mut self) {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }
}
