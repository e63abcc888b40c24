//! `StorageConfig`: which backend, where, and its options; built from a URL or a config file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use vgi_storage_core::{Result, SharedClock, SharedStorage, StorageError};

use crate::BackendKind;

/// Which backend to build, where, and with which options.
///
/// Deserialise it from a worker's config file, or parse it from a URL with
/// [`StorageConfig::from_url`] (what [`crate::open`] does). Options use the same
/// names in both: the URL's query parameters are the `options` table.
///
/// | backend | location | options |
/// |---|---|---|
/// | `memory` | none | none |
/// | `sqlite` | `path` (default: per-user temp dir, `state.db`) | `synchronous` (`normal`, `full`), `busy_timeout_ms`, `max_value_len`, `checkpoint_pages` |
/// | `redb` | `path` (default: per-user temp dir, `state.redb`) | `durability` (`immediate`, `deferred`), `multi_process` (`true`, `false`), `max_value_len` |
/// | `postgres` | `url` (default: libpq `PG*` variables) | `schema`, `pool_size`, `checkout_timeout_ms`, `max_value_len` |
///
/// `max_value_len` caps the bytes of one value below the backend's own limit:
/// a larger value is refused with `ErrorKind::TooLarge` and nothing is written.
/// `checkpoint_pages` (at least 1; 1000 by default) is the WAL size past which
/// a sqlite store's background thread checkpoints it (see
/// `SqliteBuilder::checkpoint_pages`).
///
/// ```
/// use vgi_storage::{BackendKind, StorageConfig};
///
/// let from_url = StorageConfig::from_url("sqlite:/var/lib/vgi/state.db?synchronous=full")?;
/// assert_eq!(from_url.backend, BackendKind::Sqlite);
/// assert_eq!(from_url.options.get("synchronous").map(String::as_str), Some("full"));
/// # Ok::<(), vgi_storage::StorageError>(())
/// ```
///
/// In a TOML or JSON config file (values may be strings, numbers or booleans):
///
/// ```toml
/// [storage]
/// backend = "sqlite"
/// path = "/var/lib/vgi/state.db"
/// options = { synchronous = "full", busy_timeout_ms = 5000 }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StorageConfig {
    /// The backend to build.
    pub backend: BackendKind,
    /// The database file, for `sqlite` and `redb`; `None` means the per-user default.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The server URL, for `postgres`; `None` means the libpq environment variables.
    #[serde(default)]
    pub url: Option<String>,
    /// Backend options by name (see the table above).
    #[serde(default, deserialize_with = "deserialize_options")]
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for StorageConfig {
    // The postgres URL may carry a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(crate::redact::redact_connection_string),
            )
            .field("options", &self.options)
            .finish()
    }
}

/// Option names each backend accepts, for validation and error messages.
fn known_options(backend: BackendKind) -> &'static [&'static str] {
    match backend {
        BackendKind::Memory => &[],
        BackendKind::Sqlite => &[
            "synchronous",
            "busy_timeout_ms",
            "max_value_len",
            "checkpoint_pages",
        ],
        BackendKind::Redb => &["durability", "multi_process", "max_value_len"],
        BackendKind::Postgres => &[
            "schema",
            "pool_size",
            "checkout_timeout_ms",
            "max_value_len",
        ],
    }
}

impl StorageConfig {
    /// A config for `backend` at its default location with no options.
    #[must_use]
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            path: None,
            url: None,
            options: BTreeMap::new(),
        }
    }

    /// Set the database file (`sqlite`, `redb`).
    #[must_use]
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Set one option (see the table on [`StorageConfig`]).
    #[must_use]
    pub fn with_option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(name.into(), value.into());
        self
    }

    /// Parse a storage URL.
    ///
    /// Accepted forms: `memory:`; `sqlite:` or `sqlite:/path/state.db` (also
    /// `sqlite:///path`); `redb:` or `redb:/path/state.redb`;
    /// `postgres://user@host:port/db` (or `postgresql://`). Options go in the query
    /// string: `sqlite:/path/state.db?synchronous=full&busy_timeout_ms=5000`.
    /// A bare backend name (`sqlite`) means its default location.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once(':') else {
            return Ok(Self::new(url.parse()?));
        };
        let backend: BackendKind = scheme.parse()?;
        let mut config = Self::new(backend);
        if backend == BackendKind::Postgres {
            let (url, options) = split_postgres_options(url)?;
            config.url = Some(url);
            config.options = options;
        } else {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.is_empty() {
                if backend == BackendKind::Memory {
                    return Err(config_error(
                        backend,
                        format!("`memory:` takes no path, got `{path}`; use `memory:`"),
                    ));
                }
                config.path = Some(PathBuf::from(percent_decode(path, backend)?));
            }
            config.options = parse_query(query, backend)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Check that every option is known to the backend and well formed, and
    /// that the location fits the backend.
    pub fn validate(&self) -> Result<()> {
        let known = known_options(self.backend);
        for (name, value) in &self.options {
            if !known.contains(&name.as_str()) {
                let hint = if known.is_empty() {
                    format!("unknown option `{name}`; {} takes no options", self.backend)
                } else {
                    format!(
                        "unknown option `{name}`; {} accepts {}",
                        self.backend,
                        known.join(", ")
                    )
                };
                return Err(config_error(self.backend, hint));
            }
            self.check_option(name, value)?;
        }
        if self.url.is_some() && self.backend != BackendKind::Postgres {
            return Err(config_error(
                self.backend,
                "`url` is for postgres; give a file backend a `path`".to_owned(),
            ));
        }
        if self.path.is_some()
            && matches!(self.backend, BackendKind::Memory | BackendKind::Postgres)
        {
            return Err(config_error(
                self.backend,
                format!("`path` is for sqlite and redb; {} takes none", self.backend),
            ));
        }
        Ok(())
    }

    fn check_option(&self, name: &str, value: &str) -> Result<()> {
        match name {
            "busy_timeout_ms" | "checkout_timeout_ms" | "max_value_len" => {
                self.u64_option(name).map(|_| ())
            }
            "checkpoint_pages" => match self.u64_option(name)? {
                Some(0) => Err(config_error(
                    self.backend,
                    "`checkpoint_pages` must be at least 1".into(),
                )),
                Some(pages) if u32::try_from(pages).is_err() => Err(config_error(
                    self.backend,
                    format!(
                        "`checkpoint_pages={pages}` is too large; use at most {}",
                        u32::MAX
                    ),
                )),
                _ => Ok(()),
            },
            "pool_size" => match self.u64_option(name)? {
                Some(0) => Err(config_error(
                    self.backend,
                    "`pool_size` must be at least 1".into(),
                )),
                _ => Ok(()),
            },
            "multi_process" => self.bool_option(name).map(|_| ()),
            "synchronous" => one_of(self.backend, name, value, &["normal", "full"]),
            "durability" => one_of(self.backend, name, value, &["immediate", "deferred"]),
            "schema" => {
                let ok = value
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && value.len() <= 63
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if ok {
                    Ok(())
                } else {
                    Err(config_error(
                        self.backend,
                        format!(
                            "`schema={value}` is not a plain identifier; use lowercase letters, \
                             digits and `_`, starting with a letter, at most 63 characters"
                        ),
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// An option parsed as a whole number, `None` when absent.
    pub(crate) fn u64_option(&self, name: &str) -> Result<Option<u64>> {
        self.options
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|e| StorageError::Config {
                    store: self.backend.name().to_owned(),
                    hint: format!("`{name}={v}` is not a whole number of the right size"),
                    source: Some(Box::new(e)),
                })
            })
            .transpose()
    }

    /// An option parsed as a boolean (`true`/`false`/`1`/`0`), `None` when absent.
    pub(crate) fn bool_option(&self, name: &str) -> Result<Option<bool>> {
        self.options
            .get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(config_error(
                    self.backend,
                    format!("`{name}={v}` is not a boolean; use true or false"),
                )),
            })
            .transpose()
    }

    /// Build the store this config describes, on its own clock: the system
    /// clock for the local backends, the server's clock for PostgreSQL (one
    /// clock for every host of a fleet).
    pub fn open(&self) -> Result<SharedStorage> {
        self.validate()?;
        self.backend.ensure_compiled_in()?;
        crate::backends::open(self, None)
    }

    /// Build the store this config describes, stamping writes and dating `gc`
    /// with `clock`, for tests and benchmarks that move time.
    ///
    /// For PostgreSQL this replaces the server's clock (the backend's
    /// `test_clock`): every store sharing the schema must then use the same clock.
    pub fn open_with_clock(&self, clock: SharedClock) -> Result<SharedStorage> {
        self.validate()?;
        self.backend.ensure_compiled_in()?;
        crate::backends::open(self, Some(clock))
    }
}

impl FromStr for StorageConfig {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_url(s)
    }
}

pub(crate) fn config_error(backend: BackendKind, hint: String) -> StorageError {
    StorageError::Config {
        store: backend.name().to_owned(),
        hint,
        source: None,
    }
}

fn one_of(backend: BackendKind, name: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
        return Ok(());
    }
    Err(config_error(
        backend,
        format!(
            "`{name}={value}` is not valid; use one of {}",
            allowed.join(", ")
        ),
    ))
}

fn parse_query(query: &str, backend: BackendKind) -> Result<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(config_error(
                backend,
                format!("option `{pair}` has no value; write `{pair}=...`"),
            ));
        };
        let name = percent_decode(name, backend)?;
        let value = percent_decode(value, backend)?;
        if options.insert(name.clone(), value).is_some() {
            return Err(config_error(
                backend,
                format!("option `{name}` is given twice"),
            ));
        }
    }
    Ok(options)
}

/// Split our own options (schema, pool size, checkout timeout) off a postgres URL;
/// the rest of the URL goes to the postgres client unchanged.
fn split_postgres_options(url: &str) -> Result<(String, BTreeMap<String, String>)> {
    let backend = BackendKind::Postgres;
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), BTreeMap::new()));
    };
    let ours = known_options(backend);
    let mut options = BTreeMap::new();
    let mut passthrough = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if ours.contains(&name) {
            options.extend(parse_query(pair, backend)?);
        } else {
            passthrough.push(pair);
        }
    }
    let url = if passthrough.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", passthrough.join("&"))
    };
    Ok((url, options))
}

fn percent_decode(s: &str, backend: BackendKind) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(config_error(
                    backend,
                    format!("bad percent-escape in `{s}`; write `%` as `%25`"),
                ));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| StorageError::Config {
        store: backend.name().to_owned(),
        hint: format!("`{s}` does not decode to UTF-8"),
        source: Some(Box::new(e)),
    })
}

fn deserialize_options<'de, D>(de: D) -> std::result::Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Str(String),
        Int(i64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Value>::deserialize(de)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}
