//! Every backend, whether or not this build includes it.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use vgi_storage_core::{Result, StorageError};

/// Every backend vgi-storage has, whatever the features of this build.
///
/// Asking for one that is not compiled in is a clear runtime error naming the
/// Cargo feature to enable, never a silent fallback to another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    /// In-process, on dashmap: for tests and single-process workers. Feature `memory`.
    Memory,
    /// Durable single file on SQLite (WAL), shared by the processes of one host. Feature `sqlite`.
    Sqlite,
    /// Durable single file on redb, pure Rust, one process by default. Feature `redb`.
    Redb,
    /// A PostgreSQL server, shared by processes on many hosts. Feature `postgres`.
    Postgres,
}

impl BackendKind {
    /// Every backend, in a stable order.
    pub const ALL: [BackendKind; 4] = [Self::Memory, Self::Sqlite, Self::Redb, Self::Postgres];

    /// The backend's name as URLs and `VGI_WORKER_SHARED_STORAGE` spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Redb => "redb",
            Self::Postgres => "postgres",
        }
    }

    /// The Cargo feature of `vgi-storage` that compiles this backend in.
    #[must_use]
    pub const fn feature(self) -> &'static str {
        self.name()
    }

    /// Whether this build includes the backend.
    #[must_use]
    pub const fn is_compiled_in(self) -> bool {
        match self {
            Self::Memory => cfg!(feature = "memory"),
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Redb => cfg!(feature = "redb"),
            Self::Postgres => cfg!(feature = "postgres"),
        }
    }

    /// The backends this build includes.
    pub fn compiled_in() -> impl Iterator<Item = BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled_in())
    }

    /// `Ok(())` if compiled in, else the error that names the feature to enable.
    pub fn ensure_compiled_in(self) -> Result<()> {
        if self.is_compiled_in() {
            return Ok(());
        }
        Err(StorageError::Unsupported {
            backend: self.name().to_owned(),
            hint: format!(
                "enable the Cargo feature `{feature}` of vgi-storage \
                 (vgi-storage = {{ version = \"{version}\", features = [\"{feature}\"] }})",
                feature = self.feature(),
                version = env!("CARGO_PKG_VERSION"),
            ),
        })
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = StorageError;

    /// Parse a backend name (`memory`, `sqlite`, `redb`, `postgres` or `postgresql`),
    /// ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "memory" | "mem" => Ok(Self::Memory),
            "sqlite" | "sqlite3" => Ok(Self::Sqlite),
            "redb" => Ok(Self::Redb),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            // Quote the name only when it is plainly one: a libpq `key=value`
            // string or a mangled URL may hold a password.
            _ if crate::redact::is_quotable_name(s.trim()) => Err(StorageError::Config {
                store: "vgi-storage".to_owned(),
                hint: format!(
                    "unknown backend `{}`; use one of memory, sqlite, redb, postgres \
                     (or a URL such as sqlite:/path/state.db)",
                    s.trim()
                ),
                source: None,
            }),
            _ => Err(StorageError::Config {
                store: "vgi-storage".to_owned(),
                hint: "not a backend name or storage URL (not quoted here, as it may hold a \
                       password); use memory, sqlite, redb, or a URL such as \
                       sqlite:/path/state.db or postgres://user@host/db (a libpq key=value \
                       string is not accepted: write it as a postgres:// URL)"
                    .to_owned(),
                source: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() -> Result<()> {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>()?, kind);
        }
        assert_eq!("PostgreSQL".parse::<BackendKind>()?, BackendKind::Postgres);
        Ok(())
    }

    #[test]
    fn unknown_backend_lists_the_known_ones() {
        let err = "sqlit"
            .parse::<BackendKind>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown backend `sqlit`") && err.contains("redb"),
            "{err}"
        );
    }

    #[test]
    fn missing_backend_names_its_feature() {
        for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled_in()) {
            let err = kind
                .ensure_compiled_in()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(&format!("features = [\"{}\"]", kind.feature())),
                "{err}"
            );
        }
        for kind in BackendKind::compiled_in() {
            assert!(kind.ensure_compiled_in().is_ok());
        }
    }
}
