//! The postgres column: a throwaway server started for the run, one schema per store.

use std::path::Path;
use std::sync::OnceLock;

use vgi_storage::postgres::testing::TestServer;

/// How child processes learn the server's URL.
pub(crate) const URL_VAR: &str = "VGI_BENCH_PG_URL";

static SERVER: OnceLock<TestServer> = OnceLock::new();

/// Start the server, durable as a real deployment (`fsync=on`,
/// `full_page_writes=on`, `synchronous_commit=on`): a commit waits for its WAL
/// flush. Its data and socket live in `parent` (`VGI_BENCH_DIR`, as the
/// other stores) when given, else in the system temp dir. Returns where its
/// data lives.
pub(crate) fn start(parent: Option<&Path>) -> Result<String, String> {
    let settings = [
        ("fsync", "on"),
        ("full_page_writes", "on"),
        ("synchronous_commit", "on"),
    ];
    let server = match parent {
        Some(parent) => TestServer::start_in(parent, &settings),
        None => TestServer::start_with(&settings),
    }
    .map_err(|e| e.to_string())?;
    let dir = server.socket_dir().display().to_string();
    let _ = SERVER.set(server);
    Ok(dir)
}

/// Start the server in `parent` (the bench dir, `var` naming it), as the other
/// stores: on a tmpfs its WAL flushes cost nothing, leaving the store's own
/// cost. The server may run as another user (as root: `nobody`), who cannot
/// reach into a private directory: then it starts in the system temp dir, and
/// a note says so. The outer error is the bench dir's; the inner, the server's.
pub(crate) fn start_in_bench_dir(
    parent: Option<&Path>,
    var: &str,
    notes: &mut Vec<String>,
) -> Result<Result<String, String>, String> {
    let Some(parent) = parent else {
        return Ok(start(None));
    };
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {var}={}: {e}", parent.display()))?;
    Ok(start(Some(parent)).or_else(|e| {
        notes.push(format!(
            "postgres:  cannot start in {var} ({}), so in the system temp dir",
            e.lines().last().unwrap_or_default()
        ));
        start(None)
    }))
}

/// The server's URL: this process's server, or the parent's for a pop worker.
pub(crate) fn url() -> Option<String> {
    SERVER
        .get()
        .map(TestServer::url)
        .or_else(|| std::env::var(URL_VAR).ok())
}

/// The schema of the store in `dir`: a name derived from the path, so a pop
/// worker given the same dir opens the same store.
pub(crate) fn schema_for(dir: &Path) -> String {
    // FNV-1a: stable across processes, unlike the std hasher's random keys.
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("bench_{hash:016x}")
}

/// Drop the store in `dir` once its run is over, so the server stays small.
pub(crate) fn drop_store(dir: &Path) {
    if let Some(server) = SERVER.get() {
        let _ = server.drop_schema(&schema_for(dir));
    }
}
