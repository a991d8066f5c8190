//! The wall clock, injected.

use std::time::{Duration, SystemTime};

/// The wall clock, replaceable so expiry and clock skew are tested without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the wall clock is read (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that reads `SystemTime::now()` shifted by a fixed offset (tests of skew).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let now = SystemClock.now();
        let shift = Duration::from_secs(self.0.unsigned_abs());
        let shifted = if self.0 >= 0 {
            now.checked_add(shift)
        } else {
            now.checked_sub(shift)
        };
        shifted.unwrap_or(now)
    }
}

/// A clock whose offset from the system clock can be changed at run time, to
/// test what a wall-clock jump does to cached credentials.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// Moves the clock to `SystemTime::now() + offset_secs`.
    pub fn set_offset(&self, offset_secs: i64) {
        self.offset_secs
            .store(offset_secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        OffsetClock(self.offset_secs.load(std::sync::atomic::Ordering::SeqCst)).now()
    }
}
