//! One clock for the fleet: the server's stamps writes and dates `gc`.

use std::sync::Arc;
use std::time::Duration;

use vgi_storage_core::{Clock, FunctionStorage, ManualClock, SystemClock};
use vgi_storage_postgres::testing::{TestServer, store_builder};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Regression: writes were stamped and the gc cutoff computed with each host's
/// own clock, and building a store from the environment runs gc, so one host
/// whose clock ran a day ahead removed the whole fleet's fresh state.
///
/// A host's clock is what a store used to be handed (the facade passed the
/// system clock); here the sweeping host's clock is 25 h ahead, handed to a
/// store as its test clock: the stamps are the server's, and a default store
/// on that host removes nothing fresh, where a store dated by the host clock
/// would have removed it all. The facade's `tests/clock_skew.rs` moves a real
/// process's clock a day ahead and builds the store from the environment there.
#[test]
fn a_host_clock_a_day_ahead_removes_nothing_fresh() -> TestResult {
    let schema = "clock_host_ahead";
    TestServer::shared()?.drop_schema(schema)?;
    let writer = store_builder(schema)?.connect()?;
    writer.kv_put(b"fresh", b"k", b"v")?;
    writer.append(b"fresh-log", b"n", b"k", b"e")?;
    writer.queue_push(b"fresh-queue", &[b"item".to_vec()])?;

    // The stamps are the server's clock (this host's clock is correct, so they
    // are within minutes of it; a day of skew could not hide here).
    let stamps = stamps(schema)?;
    let host_now = SystemClock.now_millis();
    assert_eq!(stamps.len(), 3);
    for stamp in &stamps {
        assert!(
            (stamp - host_now).abs() < ms(Duration::from_secs(600)),
            "{stamps:?}"
        );
    }

    // The host whose clock runs 25 h ahead sweeps with the 24 h ttl of the
    // environment path: with the server's clock, nothing is stale.
    let ahead = ManualClock::new(host_now + ms(Duration::from_secs(25 * 3600)));
    let sweeper = store_builder(schema)?.connect()?;
    let report = sweeper.gc(DAY)?;
    assert_eq!(report.scopes, Vec::<Vec<u8>>::new());
    assert_eq!(sweeper.kv_get(b"fresh", b"k")?.as_deref(), Some(&b"v"[..]));
    assert_eq!(sweeper.scan(b"fresh-log", b"n", b"k", -1, 10)?.len(), 1);

    // The hazard is real: dated by that host's clock, the same sweep takes all.
    let host_dated = store_builder(schema)?
        .test_clock(Arc::new(ahead))
        .connect()?;
    let report = host_dated.gc(DAY)?;
    assert_eq!(report.scopes_removed(), 3, "{report:?}");
    Ok(())
}

/// `gc` on the server's clock still removes what is stale by it.
#[test]
fn gc_on_the_server_clock_removes_stale_scopes() -> TestResult {
    let schema = "clock_server_gc";
    TestServer::shared()?.drop_schema(schema)?;
    let store = store_builder(schema)?.connect()?;
    store.kv_put(b"old", b"k", b"v")?;
    store.kv_put(b"new", b"k", b"v")?;
    // Age one scope by an hour on the server (as if written an hour ago).
    TestServer::shared()?.superuser_sql(&format!(
        "UPDATE {schema}.touch SET touched_at = touched_at - 3600000 WHERE scope = 'old'"
    ))?;
    let report = store.gc(Duration::from_secs(1800))?;
    assert_eq!(report.scopes, vec![b"old".to_vec()]);
    assert_eq!(store.kv_get(b"old", b"k")?, None);
    assert_eq!(store.kv_get(b"new", b"k")?.as_deref(), Some(&b"v"[..]));
    assert_eq!(store.gc(Duration::MAX)?.scopes_removed(), 0);
    Ok(())
}

/// Every stamp in the schema's touch table.
fn stamps(schema: &str) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let server = TestServer::shared()?;
    let mut client = server.config().connect(postgres::NoTls)?;
    let rows = client.query(&format!("SELECT touched_at FROM {schema}.touch"), &[])?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
