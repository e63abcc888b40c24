//! Passwords never show: not in errors about a connection string given where a
//! storage URL is expected, not in `StorageConfig`'s `Debug`, in any spelling.

use std::error::Error as _;

use vgi_storage::{STORAGE_VAR, StorageConfig, StorageError, config_from_vars};

const SECRET: &str = "s3cr3t-pw";

/// The message, the Debug form and every source: everything a log could show.
fn full_text(err: &StorageError) -> String {
    let mut text = format!("{err} | {err:?}");
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn spellings() -> Vec<String> {
    vec![
        format!("postgres://u:{SECRET}@h/db"),
        format!("postgresql://u:{SECRET}@h1,h2:5433/db?sslmode=disable&schema=s"),
        format!("postgres://u:a/b@{SECRET}@h/db"),
        format!("postgres://u@h/db?password={SECRET}"),
        format!("postgres://u@h/db?PASSWORD={SECRET}&application_name=w"),
        format!("postgres://u@h/db?pass%77ord={SECRET}"),
        format!("postgres://u@h/db?%70%61%73%73%77%6F%72%64={SECRET}"),
        format!("postgres://u@h/db?sslpassword={SECRET}"),
        format!("host=h user=u password={SECRET}"),
        format!("host=h password='{SECRET} with spaces' dbname=d"),
        format!("host=h password = {SECRET}"),
        format!("password='it\\'s {SECRET}' host=h"),
        format!("host=h port=5432 password={SECRET}:x"),
        format!("user:{SECRET}@h/db"),
    ]
}

/// Regression: a libpq `key=value` string given where a storage URL is
/// expected was quoted whole in the error ("unknown backend `host=... password=...`"),
/// and `StorageConfig`'s `Debug` missed `key=value` strings and percent-encoded
/// option names.
#[test]
fn no_spelling_of_a_password_shows_in_errors_or_debug() {
    for s in spellings() {
        match StorageConfig::from_url(&s) {
            Ok(config) => {
                let shown = format!("{config:?}");
                assert!(!shown.contains("s3cr3t"), "{s} -> {shown}");
            }
            Err(err) => {
                let shown = full_text(&err);
                assert!(!shown.contains("s3cr3t"), "{s} -> {shown}");
            }
        }
        let from_env = config_from_vars(|name| (name == STORAGE_VAR).then(|| s.clone()));
        let shown = match from_env {
            Ok(config) => format!("{config:?}"),
            Err(err) => full_text(&err),
        };
        assert!(!shown.contains("s3cr3t"), "{s} -> {shown}");
    }
}

/// A `key=value` URL field in a config file shows redacted in `Debug`.
#[test]
fn a_key_value_url_in_a_config_is_redacted_in_debug() {
    let mut config = StorageConfig::new(vgi_storage::BackendKind::Postgres);
    config.url = Some(format!("host=db user=w password='{SECRET}' dbname=state"));
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("host=db user=w password=*** dbname=state"),
        "{shown}"
    );
}

/// A plain unknown name is still quoted, so the message stays useful.
#[test]
fn an_unknown_backend_name_is_still_quoted() {
    let err = StorageConfig::from_url("sqlit:/tmp/x.db").err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("`sqlit`"), "{text}");
}
