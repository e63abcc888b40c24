//! URL forms, config files, the environment, and the errors each gives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use vgi_storage::{
    BackendKind, DEFAULT_TTL, ErrorKind, STORAGE_VAR, StorageConfig, StorageError, TTL_VAR,
    config_from_vars, ttl_from_vars,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn err_of(result: Result<StorageConfig, StorageError>) -> StorageError {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

/// The message with its source chain, as a user would read it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[test]
fn memory_url_forms() -> TestResult {
    for url in ["memory:", "memory", "memory://", "MEMORY:"] {
        let config = StorageConfig::from_url(url)?;
        assert_eq!(config.backend, BackendKind::Memory, "{url}");
        assert_eq!(config.path, None);
    }
    Ok(())
}

#[test]
fn sqlite_url_with_path_and_options() -> TestResult {
    let config = StorageConfig::from_url(
        "sqlite:/var/lib/vgi/state.db?synchronous=full&busy_timeout_ms=5000",
    )?;
    assert_eq!(config.backend, BackendKind::Sqlite);
    assert_eq!(config.path, Some(PathBuf::from("/var/lib/vgi/state.db")));
    assert_eq!(
        config.options.get("synchronous").map(String::as_str),
        Some("full")
    );
    assert_eq!(
        config.options.get("busy_timeout_ms").map(String::as_str),
        Some("5000")
    );
    Ok(())
}

#[test]
fn sqlite_url_variants() -> TestResult {
    assert_eq!(
        StorageConfig::from_url("sqlite:///tmp/a.db")?.path,
        Some("/tmp/a.db".into())
    );
    assert_eq!(
        StorageConfig::from_url("sqlite:relative.db")?.path,
        Some("relative.db".into())
    );
    assert_eq!(
        StorageConfig::from_url("sqlite:/tmp/a%20b.db")?.path,
        Some("/tmp/a b.db".into())
    );
    assert_eq!(StorageConfig::from_url("sqlite:")?.path, None);
    assert_eq!(StorageConfig::from_url("sqlite")?.path, None);
    Ok(())
}

#[test]
fn redb_url_with_options() -> TestResult {
    let config =
        StorageConfig::from_url("redb:/data/state.redb?durability=deferred&multi_process=true")?;
    assert_eq!(config.backend, BackendKind::Redb);
    assert_eq!(config.path, Some(PathBuf::from("/data/state.redb")));
    assert_eq!(config.options.len(), 2);
    Ok(())
}

#[test]
fn postgres_url_keeps_client_params_and_takes_ours() -> TestResult {
    let config = StorageConfig::from_url(
        "postgres://vgi@db.internal:5432/state?sslmode=disable&schema=vgi_a&pool_size=4",
    )?;
    assert_eq!(config.backend, BackendKind::Postgres);
    assert_eq!(
        config.url.as_deref(),
        Some("postgres://vgi@db.internal:5432/state?sslmode=disable")
    );
    assert_eq!(
        config.options.get("schema").map(String::as_str),
        Some("vgi_a")
    );
    assert_eq!(
        config.options.get("pool_size").map(String::as_str),
        Some("4")
    );
    let plain = StorageConfig::from_url("postgresql://localhost/db")?;
    assert_eq!(plain.url.as_deref(), Some("postgresql://localhost/db"));
    Ok(())
}

#[test]
fn debug_output_hides_the_postgres_password() -> TestResult {
    let config = StorageConfig::from_url("postgres://vgi:hunter2@db/state?password=hunter3")?;
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("hunter3"),
        "{shown}"
    );
    assert!(shown.contains("vgi:***@db"), "{shown}");
    Ok(())
}

#[test]
fn unknown_scheme_is_an_error_listing_the_backends() {
    let e = err_of(StorageConfig::from_url("sqlit:/tmp/x.db"));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let msg = e.to_string();
    assert!(
        msg.contains("unknown backend `sqlit`") && msg.contains("sqlite, redb"),
        "{msg}"
    );
}

#[test]
fn unknown_option_names_the_valid_ones() {
    let e = err_of(StorageConfig::from_url("sqlite:/tmp/x.db?synchronus=full"));
    let msg = e.to_string();
    assert!(msg.contains("unknown option `synchronus`"), "{msg}");
    assert!(
        msg.contains("synchronous, busy_timeout_ms, max_value_len, checkpoint_pages"),
        "{msg}"
    );
    let e = err_of(StorageConfig::from_url("memory:?x=1"));
    assert!(e.to_string().contains("memory takes no options"), "{e}");
}

#[test]
fn bad_option_values_say_what_is_allowed() {
    let cases = [
        (
            "sqlite:/tmp/x.db?synchronous=fast",
            "use one of normal, full",
        ),
        (
            "sqlite:/tmp/x.db?busy_timeout_ms=soon",
            "not a whole number",
        ),
        ("sqlite:/tmp/x.db?busy_timeout_ms=-1", "not a whole number"),
        ("redb:/tmp/x.redb?max_value_len=1MiB", "not a whole number"),
        ("redb:/tmp/x.redb?multi_process=maybe", "use true or false"),
        (
            "redb:/tmp/x.redb?durability=eventual",
            "use one of immediate, deferred",
        ),
        ("postgres://h/db?pool_size=0", "at least 1"),
        ("sqlite:/tmp/x.db?checkpoint_pages=0", "at least 1"),
        ("sqlite:/tmp/x.db?checkpoint_pages=4294967296", "too large"),
        (
            "postgres://h/db?schema=Robert');DROP",
            "not a plain identifier",
        ),
        ("sqlite:/tmp/x.db?synchronous", "has no value"),
        (
            "sqlite:/tmp/x.db?synchronous=full&synchronous=normal",
            "given twice",
        ),
        ("sqlite:/tmp/x%zz.db", "bad percent-escape"),
        ("memory:/tmp/x", "takes no path"),
    ];
    for (url, expected) in cases {
        let e = err_of(StorageConfig::from_url(url));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}");
        assert!(e.to_string().contains(expected), "{url}: {e}");
    }
}

#[test]
fn config_file_form_deserialises_with_typed_values() -> TestResult {
    let config: StorageConfig = serde_json::from_str(
        r#"{"backend": "sqlite", "path": "/tmp/s.db",
            "options": {"synchronous": "full", "busy_timeout_ms": 250}}"#,
    )?;
    assert_eq!(
        config,
        StorageConfig::from_url("sqlite:/tmp/s.db?synchronous=full&busy_timeout_ms=250")?
    );
    config.validate()?;
    Ok(())
}

#[test]
fn config_file_rejects_unknown_fields_and_backends() {
    let typo = serde_json::from_str::<StorageConfig>(r#"{"backend": "sqlite", "pth": "/x"}"#);
    assert!(
        typo.err()
            .is_some_and(|e| e.to_string().contains("unknown field `pth`"))
    );
    let unknown = serde_json::from_str::<StorageConfig>(r#"{"backend": "mongo"}"#);
    assert!(
        unknown
            .err()
            .is_some_and(|e| e.to_string().contains("unknown variant `mongo`"))
    );
}

#[test]
fn config_file_rejects_a_location_for_the_wrong_backend() {
    let config = StorageConfig::new(BackendKind::Memory).with_path("/tmp/x");
    let e = config
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("`path` is for sqlite and redb"), "{e}");
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn env_unset_means_sqlite_in_the_default_dir_and_a_day_of_ttl() -> TestResult {
    let config = config_from_vars(vars(&[]))?;
    assert_eq!(config, StorageConfig::new(BackendKind::Sqlite));
    assert_eq!(ttl_from_vars(vars(&[]))?, DEFAULT_TTL);
    assert_eq!(DEFAULT_TTL, Duration::from_secs(86_400));
    assert_eq!(
        config_from_vars(vars(&[(STORAGE_VAR, "  ")]))?.backend,
        BackendKind::Sqlite
    );
    Ok(())
}

#[test]
fn env_takes_names_and_urls() -> TestResult {
    for (value, kind) in [
        ("memory", BackendKind::Memory),
        ("sqlite", BackendKind::Sqlite),
        ("redb", BackendKind::Redb),
        ("postgres", BackendKind::Postgres),
        ("sqlite:/tmp/w.db", BackendKind::Sqlite),
        ("redb:/tmp/w.redb", BackendKind::Redb),
    ] {
        assert_eq!(
            config_from_vars(vars(&[(STORAGE_VAR, value)]))?.backend,
            kind,
            "{value}"
        );
    }
    assert_eq!(
        ttl_from_vars(vars(&[(TTL_VAR, "60")]))?,
        Duration::from_secs(60)
    );
    assert_eq!(ttl_from_vars(vars(&[(TTL_VAR, " 0 ")]))?, Duration::ZERO);
    Ok(())
}

#[test]
fn env_malformed_values_are_errors_naming_the_variable() {
    let e = config_from_vars(vars(&[(STORAGE_VAR, "sqlight")])).err();
    let msg = e.as_ref().map(|e| chain(e)).unwrap_or_default();
    assert!(
        msg.contains(STORAGE_VAR) && msg.contains("unknown backend `sqlight`"),
        "{msg}"
    );
    for bad in ["1h", "-5", "", "ten"] {
        let e = ttl_from_vars(vars(&[(TTL_VAR, bad)])).err();
        let msg = e.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            msg.contains(TTL_VAR) && msg.contains("whole number of seconds"),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled_in()) {
        let e = StorageConfig::new(kind).open().err();
        assert_eq!(
            e.as_ref().map(StorageError::kind),
            Some(ErrorKind::Unsupported),
            "{kind}"
        );
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains(&format!("enable the Cargo feature `{kind}`")),
            "{msg}"
        );
    }
}

/// The reference implementation accepts `fs` and `http` for its own filesystem
/// store and HTTP service client; here they used to fail as "not a backend
/// name", which left the user guessing what to pick instead.
#[test]
fn env_reference_only_values_name_what_to_use_instead() {
    for value in ["fs", "FS", " fs "] {
        let e = err_of(config_from_vars(vars(&[(STORAGE_VAR, value)])));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{value}");
        let msg = chain(&e);
        assert!(
            msg.contains(STORAGE_VAR)
                && msg.contains("filesystem store")
                && msg.contains("sqlite:/path/state.db")
                && !msg.contains("unknown backend"),
            "{value}: {msg}"
        );
    }
    for value in ["http", "HTTP", "https"] {
        let e = err_of(config_from_vars(vars(&[(STORAGE_VAR, value)])));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{value}");
        let msg = chain(&e);
        assert!(
            msg.contains(STORAGE_VAR)
                && msg.contains("HTTP storage service")
                && msg.contains("postgres://")
                && msg.contains("feature `postgres`"),
            "{value}: {msg}"
        );
    }
    // A value that merely starts with the same letters is still an ordinary unknown backend.
    let msg = chain(&err_of(config_from_vars(vars(&[(STORAGE_VAR, "fsx")]))));
    assert!(msg.contains("unknown backend `fsx`"), "{msg}");
}
