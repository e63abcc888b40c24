//! Names of any length: scopes, namespaces and keys are indexed by digest.

use std::sync::Arc;
use std::time::Duration;

use vgi_storage_core::{FunctionStorage, ManualClock, Result};
use vgi_storage_postgres::testing::{TestServer, open_store};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// `len` bytes that do not compress (xorshift), differing per `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Regression: names were primary-key columns, and a btree index row holds at
/// most about 2.7 KB, so an incompressible scope, namespace or key longer than
/// that failed with kind `Other` although the contract allows any bytes.
#[test]
fn incompressible_names_of_a_mebibyte_work_in_every_call() -> Result<()> {
    let clock = ManualClock::new(1_000_000);
    let store = open_store("names_mebibyte", Arc::new(clock.clone()))?;
    let mib = 1 << 20;
    let (s1, s2) = (noise(mib, 1), noise(mib, 2));
    let (n, k1, k2) = (noise(mib, 3), noise(mib, 4), noise(8 * 1024, 5));
    // Same long prefix, last byte differs: the full bytes decide.
    let mut k1b = k1.clone();
    *k1b.last_mut().unwrap_or(&mut 0) ^= 1;

    store.kv_put(&s1, &k1, b"a")?;
    store.kv_put(&s1, &k1b, b"b")?;
    store.kv_put_batch(
        &s2,
        &[(k1.clone(), b"c".to_vec()), (k2.clone(), b"d".to_vec())],
    )?;
    assert_eq!(store.kv_get(&s1, &k1)?.as_deref(), Some(&b"a"[..]));
    assert_eq!(store.kv_get(&s1, &k1b)?.as_deref(), Some(&b"b"[..]));
    assert_eq!(store.kv_get(&s2, &k1)?.as_deref(), Some(&b"c"[..]));
    assert_eq!(store.kv_get(&s1, &k2)?, None);
    assert!(store.kv_compare_and_swap(&s1, &k1, Some(b"a"), Some(b"a2"))?);
    assert!(store.kv_compare_and_swap(&s1, &k2, None, Some(b"new"))?);
    store.kv_del(&s1, &k1b)?;
    assert_eq!(store.kv_get(&s1, &k1b)?, None);

    let a = store.append(&s1, &n, &k1, b"e1")?;
    let ids = store.append_batch(&s1, &n, &k1, &[b"e2".to_vec()])?;
    store.append(&s1, &n, &k1b, b"other log")?;
    let entries = store.scan(&s1, &n, &k1, -1, 10)?;
    assert_eq!(
        entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a, ids[0]]
    );

    store.queue_push(&s1, &[b"q1".to_vec(), b"q2".to_vec()])?;
    store.queue_push(&s2, &[b"other".to_vec()])?;
    assert_eq!(store.queue_pop(&s1)?.as_deref(), Some(&b"q1"[..]));

    store.clear(&s2)?;
    assert_eq!(store.kv_get(&s2, &k1)?, None);
    assert_eq!(store.queue_pop(&s2)?, None);
    assert_eq!(store.kv_get(&s1, &k1)?.as_deref(), Some(&b"a2"[..]));

    clock.advance(Duration::from_secs(10));
    let report = store.gc(Duration::from_secs(5))?;
    assert_eq!(report.scopes, vec![s1.clone()]);
    assert_eq!(store.kv_get(&s1, &k1)?, None);
    assert_eq!(store.scan(&s1, &n, &k1, -1, 10)?, vec![]);
    assert_eq!(store.queue_pop(&s1)?, None);
    Ok(())
}

/// The layout-1 tables, as vgi-storage-postgres 0.1 created them (primary keys
/// on the raw names).
const LAYOUT_1: &str = "
    CREATE SCHEMA {s};
    CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE {s}.kv (scope bytea NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
        PRIMARY KEY (scope, key));
    CREATE SEQUENCE {s}.log_id AS bigint MINVALUE 0 START 0;
    CREATE TABLE {s}.log (scope bytea NOT NULL, ns bytea NOT NULL, key bytea NOT NULL,
        id bigint NOT NULL, value bytea NOT NULL, PRIMARY KEY (scope, ns, key, id));
    CREATE SEQUENCE {s}.queue_seq AS bigint;
    CREATE TABLE {s}.queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        scope bytea NOT NULL, seq bigint NOT NULL, n bigint NOT NULL, value bytea NOT NULL);
    CREATE INDEX queue_order ON {s}.queue (scope, seq, n);
    CREATE TABLE {s}.touch (scope bytea PRIMARY KEY, touched_at bigint NOT NULL);
    CREATE INDEX touch_touched_at ON {s}.touch (touched_at);
    INSERT INTO {s}.meta VALUES ('version', '1');
    INSERT INTO {s}.touch VALUES ('old', 500);
    INSERT INTO {s}.kv VALUES ('old', 'k', 'kept');
    SELECT setval('{s}.log_id', 41);
    INSERT INTO {s}.log VALUES ('old', 'n', 'k', 41, 'logged');
    SELECT nextval('{s}.queue_seq');
    INSERT INTO {s}.queue (scope, seq, n, value) VALUES ('old', 1, 1, 'queued');
";

/// A schema of layout 1 opens: migrated in place, its data kept, long names then work.
#[test]
fn a_layout_1_schema_is_migrated_with_its_data() -> TestResult {
    let server = TestServer::shared()?;
    server.drop_schema("names_layout_1")?;
    server.superuser_sql(&LAYOUT_1.replace("{s}", "names_layout_1"))?;
    let clock = ManualClock::new(1_000);
    let store = open_store("names_layout_1", Arc::new(clock.clone()))?;
    assert_eq!(store.kv_get(b"old", b"k")?.as_deref(), Some(&b"kept"[..]));
    let scanned = store.scan(b"old", b"n", b"k", -1, 10)?;
    assert_eq!(scanned.iter().map(|e| e.id).collect::<Vec<_>>(), vec![41]);
    assert!(store.append(b"old", b"n", b"k", b"next")? > 41);
    assert_eq!(store.queue_pop(b"old")?.as_deref(), Some(&b"queued"[..]));
    let long = noise(64 * 1024, 9);
    store.kv_put(&long, &long, b"long")?;
    assert_eq!(store.kv_get(&long, &long)?.as_deref(), Some(&b"long"[..]));
    // The stamps drive gc after the migration: nothing is stale yet, then both scopes are.
    let report = store.gc(Duration::from_millis(100))?;
    assert_eq!(report.scopes, Vec::<Vec<u8>>::new());
    clock.advance(Duration::from_secs(1));
    let report = store.gc(Duration::from_millis(500))?;
    assert_eq!(report.scopes_removed(), 2);
    // Reopening finds layout 2 and does not migrate again.
    drop(store);
    let store = open_store("names_layout_1", Arc::new(clock))?;
    assert_eq!(store.kv_get(b"old", b"k")?, None);
    Ok(())
}
