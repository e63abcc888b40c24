//! The time source backends use for `gc` timestamps.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time source, in milliseconds since the Unix epoch.
///
/// Backends stamp every write with [`Clock::now_millis`] and `gc` compares
/// against it, so tests can move time with a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
}

/// The wall clock. A clock set before 1970 reads as 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to. Clones share one time.
///
/// ```
/// use std::time::Duration;
/// use vgi_storage_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_millis(), 3_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock that reads `millis` until advanced.
    #[must_use]
    pub fn new(millis: i64) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(millis)),
        }
    }

    /// A clock that starts at the current wall-clock time.
    #[must_use]
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_millis())
    }

    /// Move the clock forward by `by` (saturating at `i64::MAX` milliseconds).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(by))
            });
    }

    /// Set the clock to `millis`.
    pub fn set(&self, millis: i64) {
        self.millis.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

/// The shared clock handle backends keep.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock as a [`SharedClock`].
#[must_use]
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// The `gc` cutoff for `ttl` at `now_millis`: a scope whose last write is stamped
/// strictly before the cutoff is stale.
///
/// Returns `None` when nothing can be stale because `ttl` reaches back before the
/// clock's range (for example `Duration::MAX`). A `ttl` of zero makes every scope
/// written before `now_millis` stale.
#[must_use]
pub fn gc_cutoff_millis(now_millis: i64, ttl: Duration) -> Option<i64> {
    let ttl = i64::try_from(ttl.as_millis()).ok()?;
    now_millis.checked_sub(ttl).filter(|c| *c > i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_of_zero_ttl_is_now() {
        assert_eq!(gc_cutoff_millis(5_000, Duration::ZERO), Some(5_000));
    }

    #[test]
    fn cutoff_beyond_the_clock_range_is_none() {
        assert_eq!(gc_cutoff_millis(5_000, Duration::MAX), None);
        assert_eq!(
            gc_cutoff_millis(i64::MIN + 10, Duration::from_millis(10)),
            None
        );
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(0);
        let b = a.clone();
        a.advance(Duration::from_millis(7));
        assert_eq!(b.now_millis(), 7);
        b.advance(Duration::MAX);
        assert_eq!(a.now_millis(), i64::MAX);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_millis() > 1_577_836_800_000);
    }
}
