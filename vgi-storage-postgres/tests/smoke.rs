//! Quick end-to-end checks against the throwaway server.

use std::sync::Arc;
use vgi_storage_core::{FunctionStorage, ManualClock, Result};
use vgi_storage_postgres::testing::open_store;

#[test]
fn round_trip() -> Result<()> {
    let clock = ManualClock::new(1_000);
    let store = open_store("smoke_round_trip", Arc::new(clock.clone()))?;
    store.kv_put(b"s", b"k", b"v")?;
    assert_eq!(store.kv_get(b"s", b"k")?.as_deref(), Some(&b"v"[..]));
    assert!(store.kv_compare_and_swap(b"s", b"k", Some(b"v"), Some(b"w"))?);
    assert!(!store.kv_compare_and_swap(b"s", b"k", Some(b"v"), Some(b"x"))?);
    let a = store.append(b"s", b"n", b"k", b"1")?;
    let ids = store.append_batch(b"s", b"n", b"k", &[b"2".to_vec(), b"3".to_vec()])?;
    assert!(a < ids[0] && ids[0] < ids[1]);
    assert_eq!(store.scan(b"s", b"n", b"k", -1, 10)?.len(), 3);
    store.queue_push(b"s", &[b"a".to_vec(), b"b".to_vec()])?;
    assert_eq!(store.queue_pop(b"s")?.as_deref(), Some(&b"a"[..]));
    clock.advance(std::time::Duration::from_secs(10));
    let report = store.gc(std::time::Duration::from_secs(5))?;
    assert_eq!(report.scopes, vec![b"s".to_vec()]);
    assert_eq!(store.queue_pop(b"s")?, None);
    Ok(())
}
