//! What every check shares: outcomes, failures, settings, fresh fixtures and small helpers.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use vgi_storage_core::{ManualClock, SharedStorage, StorageError};

use crate::{Factory, Fixture};

/// How a check ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend behaved as the contract says.
    Passed,
    /// The backend's capabilities do not call for this check; the reason says why.
    Skipped(String),
}

/// Why a check failed: what the backend did against the contract.
///
/// The message says what was expected and what happened; when a store call
/// failed unexpectedly, its [`StorageError`] is kept as the source.
#[derive(Debug)]
pub struct Failure {
    message: String,
    source: Option<StorageError>,
}

impl Failure {
    /// A failure described by `message`.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A store call (`what`) returned an error the contract does not allow.
    #[must_use]
    pub fn storage(what: impl Into<String>, source: StorageError) -> Self {
        Self {
            message: format!("{} returned an error", what.into()),
            source: Some(source),
        }
    }

    /// What went wrong, without the source chain.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by every source in the chain, one per line.
    #[must_use]
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut source: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(s) = source {
            out.push_str("\n  caused by: ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// What a check returns.
pub type CheckResult = Result<Outcome, Failure>;

/// How the suite runs: case counts, where proptest keeps regressions, and the
/// test name under which child processes re-execute the test binary.
///
/// `Settings::default()` reads `PROPTEST_CASES`, keeps no regression file and
/// knows no test name (so the across-processes checks are skipped).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Settings {
    /// Cases for the model tests; `None` reads `PROPTEST_CASES`, else [`DEFAULT_CASES`].
    pub cases: Option<u32>,
    /// The file where the model tests persist failing cases (created on first failure).
    pub regressions: Option<&'static str>,
    /// The libtest name of the running `#[test]` (e.g. `memory::queue_pop_is_exactly_once_across_processes`),
    /// which child processes are started with.
    pub test_name: Option<String>,
}

/// Model-test cases per check when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 32;

/// Cases of the concentrating model test when `PROPTEST_CASES` is not set
/// (each case is up to 64 operations on few cells).
pub const DEFAULT_CONCENTRATED_CASES: u32 = 64;

impl Settings {
    /// The model-test case count: [`Settings::cases`], else `PROPTEST_CASES`,
    /// else [`DEFAULT_CASES`] (four times as many under `VGI_CONFORMANCE_DEEP`).
    #[must_use]
    pub fn model_cases(&self) -> u32 {
        self.cases_or(DEFAULT_CASES)
    }

    /// The concentrating model test's case count: as [`Settings::model_cases`],
    /// with [`DEFAULT_CONCENTRATED_CASES`] as the default.
    #[must_use]
    pub fn concentrated_cases(&self) -> u32 {
        self.cases_or(DEFAULT_CONCENTRATED_CASES)
    }

    fn cases_or(&self, default: u32) -> u32 {
        self.cases.unwrap_or_else(|| {
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| scaled(default, default * 4))
        })
    }
}

/// One check while it runs: the factory, the settings, and fresh fixtures.
pub(crate) struct Run<'a> {
    pub(crate) factory: &'a dyn Factory,
    pub(crate) settings: &'a Settings,
}

/// A fresh fixture and the directory it lives in (removed on drop).
pub(crate) struct Scratch {
    pub(crate) fx: Fixture,
    _dir: TempDir,
}

/// A fresh fixture with the store the factory built on it.
pub(crate) struct Env {
    pub(crate) scratch: Scratch,
    pub(crate) store: SharedStorage,
}

impl Env {
    pub(crate) fn clock(&self) -> &ManualClock {
        self.scratch.fx.manual_clock()
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// A name token unique across checks, threads and concurrent test processes:
/// `[a-z0-9_]`, starting with a letter, at most 40 bytes.
fn fresh_token() -> String {
    let n = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("vgic_{}_{n}_{nanos:x}", std::process::id())
}

impl Run<'_> {
    #[allow(clippy::unused_self)] // a check asks its run for fixtures
    pub(crate) fn scratch(&self) -> Result<Scratch, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("vgi-conformance-")
            .tempdir()
            .map_err(|e| Failure::new(format!("cannot create a temp dir for the fixture: {e}")))?;
        let fx = Fixture::new(
            dir.path().to_path_buf(),
            fresh_token(),
            ManualClock::starting_now(),
            false,
        );
        Ok(Scratch { fx, _dir: dir })
    }

    pub(crate) fn open(&self, fx: &Fixture) -> Result<SharedStorage, Failure> {
        (self.factory)(fx).map_err(|e| {
            let what = if fx.is_reopen() {
                "the factory reopening the store"
            } else {
                "the factory building the store"
            };
            Failure::storage(what, e)
        })
    }

    /// A fresh fixture and a store on it.
    pub(crate) fn env(&self) -> Result<Env, Failure> {
        let scratch = self.scratch()?;
        let store = self.open(&scratch.fx)?;
        Ok(Env { scratch, store })
    }
}

/// Turn a store error into a [`Failure`] naming the call.
pub(crate) trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, Failure>;
}

impl<T> OrFail<T> for Result<T, StorageError> {
    fn or_fail(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::storage(what, e))
    }
}

/// `Debug` of a value, cut to a readable length.
pub(crate) fn short(value: &dyn fmt::Debug) -> String {
    const MAX: usize = 400;
    let s = format!("{value:?}");
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} chars)", &s[..end], s.len())
}

/// A byte string as an escaped literal, long ones cut.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 48;
    let head: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        format!("b\"{head}\"… ({} bytes)", bytes.len())
    } else {
        format!("b\"{head}\"")
    }
}

/// The error chain of a store error, on one line, for messages inside proptest.
pub(crate) fn chain(err: &StorageError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Retry `call` while it fails with a retryable error, for up to `RETRY_FOR`.
pub(crate) fn retry<T>(
    mut call: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    const RETRY_FOR: Duration = Duration::from_secs(30);
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match call() {
            Err(e) if e.is_retryable() && start.elapsed() < RETRY_FOR => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A patterned value of `len` bytes (cheap to build, differs per `seed`).
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 8) as u8).rotate_left(3) ^ seed)
        .collect()
}

/// The call must have failed with `kind` (it was refused before writing anything).
pub(crate) fn expect_kind<T: fmt::Debug>(
    kind: vgi_storage_core::ErrorKind,
    what: &str,
    res: Result<T, StorageError>,
) -> Result<(), Failure> {
    match res {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(Failure::storage(
            format!("{what} should fail with {kind:?}, but it"),
            e,
        )),
        Ok(v) => Err(Failure::new(format!(
            "{what} should fail with {kind:?}, got Ok({})",
            short(&v)
        ))),
    }
}

/// The environment variable that runs the size, race and busy checks bigger and longer.
pub const DEEP_ENV: &str = "VGI_CONFORMANCE_DEEP";

/// Whether `VGI_CONFORMANCE_DEEP` asks for the deeper settings (any value but
/// empty, `0` or `false`).
#[must_use]
pub fn deep() -> bool {
    std::env::var(DEEP_ENV).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

/// `default`, or `deeper` under `VGI_CONFORMANCE_DEEP`.
pub(crate) fn scaled<T>(default: T, deeper: T) -> T {
    if deep() { deeper } else { default }
}

/// `len` pseudo-random bytes (splitmix64 from `seed`): incompressible, so a
/// backend cannot store a long name or value cheaply by compressing it.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A global order of events across threads: each call to [`Ticks::now`]
/// returns a larger number, so "this call began after that one returned" is a
/// comparison of two ticks.
#[derive(Debug, Default)]
pub(crate) struct Ticks(AtomicU64);

impl Ticks {
    pub(crate) fn now(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
}

/// Fail the check with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::harness::Failure::new(format!($($msg)+)));
        }
    };
}

/// Fail the check unless `actual == expected`, saying what was compared.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($what:tt)+) => {{
        let actual = $actual;
        let expected = $expected;
        if actual != expected {
            return Err($crate::harness::Failure::new(format!(
                "{}: expected {}, got {}",
                format!($($what)+),
                $crate::harness::short(&expected),
                $crate::harness::short(&actual),
            )));
        }
    }};
}

pub(crate) use {ensure, ensure_eq};
