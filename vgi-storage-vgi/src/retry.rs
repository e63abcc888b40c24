//! The error policy: retry what may pass with bounded, jittered backoff, then fail loudly.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, Instant};

use vgi_storage_core::{ErrorKind, StorageError};

/// How long the adapter keeps retrying a call that failed with a retryable error.
///
/// The `vgi` storage trait cannot return an error, so the adapter retries
/// errors whose [`kind`](StorageError::kind) is retryable (`Busy`,
/// `Unavailable`, `Conflict`), sleeping between attempts with exponential
/// backoff and jitter, until the call succeeds or the [`deadline`](Self::deadline)
/// has passed. Then it fails loudly (see the crate docs).
///
/// The defaults: a 30 s deadline, a first backoff of 10 ms doubling up to 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The total time one call may spend retrying, counted from its first attempt.
    /// Zero means one attempt and no retry.
    pub deadline: Duration,
    /// The backoff before the second attempt; it doubles after every attempt.
    /// The adapter sleeps at least 1 ms between attempts whatever this says.
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// The default policy: retry for up to 30 s, backing off from 10 ms up to 1 s.
    pub const DEFAULT: Self = Self {
        deadline: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(1),
    };

    /// One attempt per call, no retry: every error fails loudly at once.
    pub const NO_RETRY: Self = Self {
        deadline: Duration::ZERO,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// This policy with another total deadline per call.
    #[must_use]
    pub const fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// This policy with another first backoff.
    #[must_use]
    pub const fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// This policy with another longest backoff.
    #[must_use]
    pub const fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// The sleep before attempt `attempt + 1` (after `attempt` failures, from 1):
    /// half the exponential step plus a random part of the other half, so that
    /// workers that failed together do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .initial_backoff
            .saturating_mul(
                1_u32
                    .checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_backoff);
        let half = step / 2;
        half + jitter(step.saturating_sub(half))
    }
}

/// A duration in `0..=bound`, drawn from std's randomly keyed hasher (no
/// dependency needed for jitter that only has to differ between processes).
fn jitter(bound: Duration) -> Duration {
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(nanos);
    Duration::from_nanos(hasher.finish() % nanos.saturating_add(1))
}

/// Whether repeating a call is safe when its outcome is unknown
/// ([`ErrorKind::OutcomeUnknown`]: the request was sent and the reply lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// The call's effect does not depend on how often it runs (reads, puts,
    /// deletes, clear, gc): an unknown outcome is retried like a busy store.
    Idempotent,
    /// Repeating may write twice or lose an item (append, push, pop): an
    /// unknown outcome fails loudly at once.
    Once,
}

/// A call that did not succeed within the policy.
#[derive(Debug)]
pub(crate) struct GaveUp {
    pub(crate) error: StorageError,
    pub(crate) attempts: u32,
    pub(crate) elapsed: Duration,
    /// Why the adapter stopped trying, for the message.
    reason: &'static str,
}

impl GaveUp {
    /// The whole story in one line: the operation, the attempts and the full
    /// error chain (the source's text included, since a panic message is the
    /// only place the caller will see it).
    pub(crate) fn message(&self, store: &str, operation: &str) -> String {
        let mut out = format!(
            "vgi-storage: {operation} on store {store} failed after {} attempt{} over {:?} ({})",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed,
            self.reason,
        );
        let mut source: Option<&dyn StdError> = Some(&self.error);
        while let Some(e) = source {
            let _ = write!(out, ": {e}");
            source = e.source();
        }
        out
    }
}

impl RetryPolicy {
    /// Run `call` until it succeeds, fails permanently, or the deadline passes.
    pub(crate) fn run<T>(
        &self,
        store: &str,
        operation: &'static str,
        repeat: Repeat,
        mut call: impl FnMut() -> Result<T, StorageError>,
    ) -> Result<T, Box<GaveUp>> {
        let start = Instant::now();
        let mut attempts = 0_u32;
        loop {
            attempts = attempts.saturating_add(1);
            let error = match call() {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let unknown = error.kind() == ErrorKind::OutcomeUnknown;
            let elapsed = start.elapsed();
            let remaining = self.deadline.saturating_sub(elapsed);
            let reason = if unknown && repeat == Repeat::Once {
                Some("its outcome is unknown and repeating it could apply it twice or lose an item")
            } else if !error.is_retryable() && !unknown {
                Some("the error is permanent")
            } else if remaining.is_zero() {
                Some("still failing at the retry deadline")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Box::new(GaveUp {
                    error,
                    attempts,
                    elapsed,
                    reason,
                }));
            }
            // At least 1 ms, so that a zero backoff does not spin until the deadline.
            let sleep = self
                .backoff(attempts)
                .max(Duration::from_millis(1))
                .min(remaining);
            tracing::debug!(
                store,
                operation,
                attempts,
                kind = ?error.kind(),
                backoff = ?sleep,
                "vgi-storage: retrying a storage call"
            );
            std::thread::sleep(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds_and_never_passes_the_cap() {
        let policy = RetryPolicy::DEFAULT
            .with_initial_backoff(Duration::from_millis(8))
            .with_max_backoff(Duration::from_millis(100));
        for attempt in 1..40 {
            let step = Duration::from_millis(8)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(Duration::from_millis(100));
            let b = policy.backoff(attempt);
            assert!(
                b >= step / 2 && b <= step,
                "attempt {attempt}: {b:?} vs {step:?}"
            );
        }
        assert_eq!(RetryPolicy::NO_RETRY.backoff(3), Duration::ZERO);
    }
}
