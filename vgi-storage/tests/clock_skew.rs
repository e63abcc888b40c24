//! A host whose clock runs a day ahead: the process's own clock is moved (an
//! `LD_PRELOAD` shim over `clock_gettime`, built here with the C compiler), and
//! that process builds its store from the environment, which runs `gc`.
#![cfg(all(feature = "postgres", target_os = "linux"))]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vgi_storage::FunctionStorage;
use vgi_storage_postgres::testing::TestServer;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// How far the child's clock runs ahead: 25 hours, past the 24 h default TTL.
const SKEW: Duration = Duration::from_secs(25 * 3600);
const SCHEMA: &str = "clock_skew_env";
/// Set in the child: the URL of the store, and the parent's clock in ms.
const CHILD_URL: &str = "VGI_CLOCK_SKEW_CHILD_URL";
const PARENT_NOW: &str = "VGI_CLOCK_SKEW_PARENT_NOW_MS";

/// Wall-clock functions shifted by `VGI_SKEW_SECS` seconds; every other clock
/// (the monotonic ones that time-outs use) is left alone.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew(void) {
    const char *s = getenv("VGI_SKEW_SECS");
    return s ? atol(s) : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += skew();
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int r = real(tv, tz);
    if (r == 0 && tv) tv->tv_sec += skew();
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"#;

fn now_ms() -> Result<u64, Box<dyn std::error::Error>> {
    Ok(u64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// Build the shim into `dir`; an error (no C compiler) fails the test with the reason.
fn build_shim(dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let source = dir.join("skew.c");
    let library = dir.join("libskew.so");
    std::fs::write(&source, SHIM)?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("this test builds a clock shim with `{compiler}` (set CC): {e}"))?;
    assert!(
        output.status.success(),
        "building the clock shim failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(library)
}

/// Regression: writes were stamped and the `gc` cutoff computed with each
/// host's own clock, and building a store from the environment runs `gc`, so
/// a worker started on a host whose clock ran a day ahead removed the whole
/// fleet's fresh state.
///
/// Here that worker is a real process whose wall clock reads 25 h ahead (the
/// child checks that it does) and which builds its store with
/// `vgi_storage::from_env` and the default 24 h TTL: nothing fresh goes.
#[test]
fn a_worker_whose_clock_runs_a_day_ahead_removes_nothing_fresh() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema(SCHEMA)?;
    let url = format!("{}?schema={SCHEMA}", server.url());
    let writer = vgi_storage::open(&url)?;
    writer.kv_put(b"fresh", b"k", b"v")?;
    writer.append(b"fresh-log", b"n", b"k", b"e")?;
    writer.queue_push(b"fresh-queue", &[b"item".to_vec()])?;

    let dir = tempfile::tempdir()?;
    let shim = build_shim(dir.path())?;
    let output = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_builds_its_store_from_the_environment",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", &shim)
        .env("VGI_SKEW_SECS", SKEW.as_secs().to_string())
        .env(CHILD_URL, &url)
        .env(PARENT_NOW, now_ms()?.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the skewed child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(writer.kv_get(b"fresh", b"k")?.as_deref(), Some(&b"v"[..]));
    assert_eq!(writer.scan(b"fresh-log", b"n", b"k", -1, 10)?.len(), 1);
    assert_eq!(
        writer.queue_pop(b"fresh-queue")?.as_deref(),
        Some(&b"item"[..])
    );
    Ok(())
}

/// The child of the test above; it runs only when that test starts it.
#[test]
#[ignore = "started by a_worker_whose_clock_runs_a_day_ahead_removes_nothing_fresh"]
fn child_builds_its_store_from_the_environment() -> TestResult {
    let (Ok(url), Ok(parent_now)) = (std::env::var(CHILD_URL), std::env::var(PARENT_NOW)) else {
        return Err("run only as the child of the clock-skew test".into());
    };
    let parent_now: u64 = parent_now.parse()?;
    let skew_ms = u64::try_from(SKEW.as_millis())?;
    let own_now = now_ms()?;
    assert!(
        own_now >= parent_now + skew_ms - 60_000,
        "the shim did not move this process's clock: {own_now} vs parent {parent_now}"
    );

    let env = vgi_storage::from_vars(|name| match name {
        vgi_storage::STORAGE_VAR => Some(url.clone()),
        _ => None,
    })?;
    assert_eq!(env.ttl, vgi_storage::DEFAULT_TTL);
    assert_eq!(env.gc.scopes, Vec::<Vec<u8>>::new(), "{:?}", env.gc);
    assert_eq!(
        env.storage.kv_get(b"fresh", b"k")?.as_deref(),
        Some(&b"v"[..])
    );
    Ok(())
}
