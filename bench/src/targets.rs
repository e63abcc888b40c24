//! What the bench compares: our backends through the facade, and the raw-engine ceilings.

use std::path::Path;
use std::sync::Arc;

use vgi_storage::{BackendKind, SharedClock, SharedStorage, StorageConfig};

use crate::BenchResult;
use crate::ceiling::{
    map::RawMap, naive::NaiveMap, postgres::RawPostgres, redb::RawRedb, sqlite::RawSqlite,
};

/// One column of the table.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Column name, also how a child process is told what to open.
    pub(crate) name: &'static str,
    /// For a ceiling, the backend it bounds.
    pub(crate) ceiling_of: Option<&'static str>,
    /// What a successful write promises, in words.
    pub(crate) durability: &'static str,
    /// Every commit waits for an fsync: the run gives it fewer single-op writes.
    pub(crate) fsync_per_commit: bool,
    opener: Opener,
}

#[derive(Debug, Clone, Copy)]
enum Opener {
    Backend(BackendKind),
    /// The sqlite backend (always [`BackendKind::Sqlite`]) with
    /// `synchronous=full`: every commit fsyncs the WAL.
    SqliteFull(BackendKind),
    RawMap,
    NaiveMap,
    RawSqlite,
    RawRedb,
    RawPostgres,
    BrokenQueue,
}

impl Target {
    /// Open a fresh store in `dir` (which is empty), stamping writes with `clock`.
    pub(crate) fn open(&self, dir: &Path, clock: SharedClock) -> BenchResult<SharedStorage> {
        Ok(match self.opener {
            Opener::Backend(BackendKind::Memory) => {
                StorageConfig::new(BackendKind::Memory).open_with_clock(clock)?
            }
            Opener::Backend(BackendKind::Sqlite) => StorageConfig::new(BackendKind::Sqlite)
                .with_path(dir.join("state.db"))
                .with_option("synchronous", "normal")
                .open_with_clock(clock)?,
            Opener::SqliteFull(_) => StorageConfig::new(BackendKind::Sqlite)
                .with_path(dir.join("state.db"))
                .with_option("synchronous", "full")
                .open_with_clock(clock)?,
            Opener::Backend(BackendKind::Redb) => StorageConfig::new(BackendKind::Redb)
                .with_path(dir.join("state.redb"))
                .with_option("durability", "immediate")
                .open_with_clock(clock)?,
            Opener::Backend(BackendKind::Postgres) => {
                let Some(url) = crate::pg::url() else {
                    crate::bail!("no postgres server was started")
                };
                StorageConfig::from_url(&format!("{url}?schema={}", crate::pg::schema_for(dir)))?
                    .open_with_clock(clock)?
            }
            Opener::Backend(other) => StorageConfig::new(other).open_with_clock(clock)?,
            Opener::RawMap => Arc::new(RawMap::new(clock)),
            Opener::NaiveMap => Arc::new(NaiveMap::new(clock)),
            Opener::RawSqlite => Arc::new(RawSqlite::open(&dir.join("raw.db"), clock)?),
            Opener::RawRedb => Arc::new(RawRedb::open(&dir.join("raw.redb"), clock)?),
            Opener::RawPostgres => {
                let Some(url) = crate::pg::url() else {
                    crate::bail!("no postgres server was started")
                };
                Arc::new(RawPostgres::open(&url, &crate::pg::schema_for(dir), clock)?)
            }
            Opener::BrokenQueue => Arc::new(crate::faulty::BrokenQueue::new(clock)),
        })
    }
}

/// Every target this build can run, backends first, then ceilings; and why
/// any other was left out.
pub(crate) fn available() -> (Vec<Target>, Vec<String>) {
    let mut skipped = Vec::new();
    let targets = all()
        .into_iter()
        .filter(|t| match t.opener {
            Opener::Backend(kind) | Opener::SqliteFull(kind) if !kind.is_compiled_in() => {
                skipped.push(format!(
                    "{}: not compiled in (feature `{}` of vgi-storage)",
                    t.name,
                    kind.feature()
                ));
                false
            }
            _ => true,
        })
        .collect();
    (targets, skipped)
}

fn all() -> Vec<Target> {
    let backend = |name, kind, durability| Target {
        name,
        ceiling_of: None,
        durability,
        fsync_per_commit: matches!(kind, BackendKind::Redb | BackendKind::Postgres),
        opener: Opener::Backend(kind),
    };
    let ceiling = |name, of, durability, opener| Target {
        name,
        ceiling_of: Some(of),
        durability,
        fsync_per_commit: matches!(opener, Opener::RawRedb | Opener::RawPostgres),
        opener,
    };
    vec![
        backend(
            "memory",
            BackendKind::Memory,
            "none: process memory, gone when the process exits",
        ),
        backend(
            "sqlite",
            BackendKind::Sqlite,
            "WAL, synchronous=normal: a commit survives a process crash; the last commits \
             may be lost on power loss (fsync at checkpoints)",
        ),
        Target {
            name: "sqlite-full",
            ceiling_of: None,
            durability: "WAL, synchronous=full: every commit fsyncs the WAL, survives power loss \
                         (threads of one process share commits)",
            fsync_per_commit: true,
            opener: Opener::SqliteFull(BackendKind::Sqlite),
        },
        backend(
            "redb",
            BackendKind::Redb,
            "Durability::Immediate: fsync on every commit, survives power loss",
        ),
        backend(
            "postgres",
            BackendKind::Postgres,
            "a local throwaway server, fsync=on, synchronous_commit=on: every commit waits for \
             its WAL flush, survives power loss (concurrent commits share flushes)",
        ),
        ceiling(
            "raw-map",
            "memory",
            "none: a bare dashmap of scopes",
            Opener::RawMap,
        ),
        ceiling(
            "naive-map",
            "memory",
            "none: every scope in one Mutex<BTreeMap> (a floor, not a ceiling)",
            Opener::NaiveMap,
        ),
        ceiling(
            "raw-sqlite",
            "sqlite",
            "raw rusqlite, WAL, synchronous=NORMAL (same as sqlite)",
            Opener::RawSqlite,
        ),
        ceiling(
            "raw-redb",
            "redb",
            "raw redb, Durability::Immediate (same as redb)",
            Opener::RawRedb,
        ),
        ceiling(
            "raw-postgres",
            "postgres",
            "raw postgres crate on the same server, fsync=on, synchronous_commit=on (same as \
             postgres); one statement or transaction per call; a pop commits with the row in \
             hand (VGI_BENCH_PG_AUTOCOMMIT_POP=1: one autocommit statement, which does not)",
            Opener::RawPostgres,
        ),
    ]
}

/// A target by name, the hidden `broken-queue` included.
pub(crate) fn by_name(name: &str) -> Option<Target> {
    all()
        .into_iter()
        .chain([broken_queue()])
        .find(|t| t.name == name)
}

/// A store whose queue hands an item out twice: for the test that a broken
/// run fails. Not in the normal list; `--only broken-queue` runs it.
pub(crate) fn broken_queue() -> Target {
    Target {
        name: "broken-queue",
        ceiling_of: None,
        durability: "none (a deliberately broken store for the runner's own test)",
        fsync_per_commit: false,
        opener: Opener::BrokenQueue,
    }
}
