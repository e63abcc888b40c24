//! Stores built through the facade: each compiled-in backend from its URL, and
//! `from_vars` with its start-up gc pass.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use vgi_storage::{
    BackendKind, ErrorKind, FunctionStorage, ManualClock, STORAGE_VAR, StorageConfig, TTL_VAR,
    from_vars, open,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn round_trip(store: &dyn FunctionStorage) -> TestResult {
    store.kv_put(b"s", b"k", b"v")?;
    assert_eq!(store.kv_get(b"s", b"k")?.as_deref(), Some(&b"v"[..]));
    store.clear(b"s")?;
    assert_eq!(store.kv_get(b"s", b"k")?, None);
    Ok(())
}

#[test]
fn memory_url_opens_a_working_store() -> TestResult {
    let store = open("memory:")?;
    assert_eq!(store.name(), "memory");
    round_trip(store.as_ref())
}

#[test]
fn sqlite_url_with_options_opens_a_private_file() -> TestResult {
    if !BackendKind::Sqlite.is_compiled_in() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("state.db");
    let store = open(&format!(
        "sqlite:{}?synchronous=full&busy_timeout_ms=250",
        path.display()
    ))?;
    assert!(
        store.name().contains(&path.display().to_string()),
        "{}",
        store.name()
    );
    assert!(store.capabilities().durable && store.capabilities().shared_across_processes);
    round_trip(store.as_ref())?;
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    Ok(())
}

/// `checkpoint_pages` reaches the sqlite store: with a small threshold the
/// `-wal` file stays within four times it (plus a commit), where the default
/// (1000 pages) lets the same writes grow it past that.
#[test]
fn sqlite_checkpoint_pages_option_bounds_the_wal() -> TestResult {
    if !BackendKind::Sqlite.is_compiled_in() {
        return Ok(());
    }
    // Frames of the `-wal` file after 400 puts of 1 KiB (about 1200 frames).
    let wal_frames = |query: &str| -> std::result::Result<u64, Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("state.db");
        let store = open(&format!("sqlite:{}{query}", path.display()))?;
        for i in 0..400_u32 {
            store.kv_put(b"s", &i.to_be_bytes(), &[7; 1024])?;
        }
        let mut wal = path.into_os_string();
        wal.push("-wal");
        let len = std::fs::metadata(wal)?.len();
        Ok(len.saturating_sub(32) / (4096 + 24))
    };
    let bound = 4 * 32 + 16;
    let small = wal_frames("?checkpoint_pages=32")?;
    assert!(
        small <= bound,
        "-wal of {small} frames with checkpoint_pages=32"
    );
    let default = wal_frames("")?;
    assert!(default > bound, "-wal of only {default} frames by default");
    Ok(())
}

#[test]
fn redb_url_opens_in_either_mode() -> TestResult {
    if !BackendKind::Redb.is_compiled_in() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let single = open(&format!("redb:{}", tmp.path().join("a.redb").display()))?;
    assert!(!single.capabilities().shared_across_processes);
    round_trip(single.as_ref())?;
    let multi = open(&format!(
        "redb:{}?multi_process=true",
        tmp.path().join("b.redb").display()
    ))?;
    assert!(multi.capabilities().shared_across_processes);
    round_trip(multi.as_ref())
}

#[test]
fn max_value_len_caps_what_every_durable_backend_accepts() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for kind in [BackendKind::Sqlite, BackendKind::Redb]
        .into_iter()
        .filter(|k| k.is_compiled_in())
    {
        let path = tmp.path().join(format!("capped.{kind}"));
        let store = open(&format!("{kind}:{}?max_value_len=1024", path.display()))?;
        assert_eq!(store.capabilities().max_value_len, 1024, "{kind}");
        store.kv_put(b"s", b"fits", &[7; 1024])?;
        let err = store
            .kv_put(b"s", b"big", &[7; 1025])
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::TooLarge), "{kind}");
        assert_eq!(store.kv_get(b"s", b"big")?, None, "{kind}");
    }
    Ok(())
}

#[test]
fn a_file_backend_in_a_missing_directory_is_an_open_error_naming_the_path() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("no/such/dir/state.db");
    for kind in [BackendKind::Sqlite, BackendKind::Redb]
        .into_iter()
        .filter(|k| k.is_compiled_in())
    {
        let result = StorageConfig::new(kind).with_path(&missing).open();
        let err = result
            .err()
            .ok_or("opened a store in a missing directory")?;
        assert!(!err.is_retryable(), "{kind}: {err}");
        assert!(err.to_string().contains("no/such/dir"), "{kind}: {err}");
    }
    Ok(())
}

fn vars(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn from_vars_runs_one_gc_pass_and_reports_it() -> TestResult {
    if !BackendKind::Sqlite.is_compiled_in() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let url = format!("sqlite:{}", tmp.path().join("env.db").display());
    {
        // An earlier worker left one scope two hours ago and one a minute ago.
        let clock = ManualClock::new(clock_now_minus(Duration::from_secs(7_200)));
        let store =
            StorageConfig::from_url(&url)?.open_with_clock(std::sync::Arc::new(clock.clone()))?;
        store.kv_put(b"orphan", b"k", b"v")?;
        clock.set(clock_now_minus(Duration::from_secs(60)));
        store.kv_put(b"recent", b"k", b"v")?;
    }
    let env = from_vars(vars(&[(STORAGE_VAR, url), (TTL_VAR, "3600".to_owned())]))?;
    assert_eq!(env.ttl, Duration::from_secs(3_600));
    assert_eq!(env.gc.scopes, vec![b"orphan".to_vec()]);
    assert_eq!(env.storage.kv_get(b"orphan", b"k")?, None);
    assert_eq!(
        env.storage.kv_get(b"recent", b"k")?.as_deref(),
        Some(&b"v"[..])
    );
    Ok(())
}

fn clock_now_minus(ago: Duration) -> i64 {
    use vgi_storage::Clock as _;
    vgi_storage::SystemClock.now_millis() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)
}

#[test]
fn from_vars_with_a_malformed_ttl_fails_before_touching_the_store() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("never.db");
    let result = from_vars(vars(&[
        (STORAGE_VAR, format!("sqlite:{}", path.display())),
        (TTL_VAR, "one day".to_owned()),
    ]));
    let err = result.err().ok_or("a malformed TTL was accepted")?;
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        !path.exists(),
        "the store was created although the TTL was malformed"
    );
    Ok(())
}
