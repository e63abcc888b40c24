//! Runs `examples/worker.rs` (built by `cargo test` beside this test) against every
//! compiled-in backend that several processes can share, and checks its result line.

use std::path::PathBuf;
use std::process::Command;

use vgi_storage::{BackendKind, StorageConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `target/<profile>/examples/worker`, next to this test's `deps/` directory.
fn worker_exe() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let test_exe = std::env::current_exe()?;
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("test binary has no target directory")?;
    let exe = profile_dir.join("examples").join("worker");
    if !exe.exists() {
        return Err(format!(
            "{} is missing: run through `cargo test`, which builds the examples",
            exe.display()
        )
        .into());
    }
    Ok(exe)
}

/// Run the example with `VGI_WORKER_SHARED_STORAGE` set to `storage`; return its stdout.
fn run_worker(
    storage: Option<&str>,
    extra_env: &[(&str, String)],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut cmd = Command::new(worker_exe()?);
    match storage {
        Some(url) => cmd.env(vgi_storage::STORAGE_VAR, url),
        None => cmd.env_remove(vgi_storage::STORAGE_VAR),
    };
    cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "worker failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    Ok(stdout)
}

fn assert_checked(stdout: &str, processes: bool) {
    assert!(
        stdout.lines().any(|l| l.starts_with("check: ok")),
        "no passing check:\n{stdout}"
    );
    let mode = if processes {
        "roles run as processes"
    } else {
        "roles run as threads"
    };
    assert!(stdout.contains(mode), "expected {mode}:\n{stdout}");
    assert!(stdout.contains("240 claimed, 240 distinct"), "{stdout}");
}

#[test]
fn worker_example_passes_on_the_default_backend() -> TestResult {
    // The default store lives in the per-user temp directory; point TMPDIR at a
    // private one so the test does not share it with other runs.
    let tmp = tempfile::tempdir()?;
    let stdout = run_worker(None, &[("TMPDIR", tmp.path().display().to_string())])?;
    assert!(stdout.starts_with("store sqlite:"), "{stdout}");
    assert_checked(&stdout, true);
    Ok(())
}

#[test]
fn worker_example_passes_on_every_shared_backend_compiled_in() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut ran = Vec::new();
    for kind in BackendKind::compiled_in() {
        let url = match kind {
            BackendKind::Sqlite => format!("sqlite:{}", tmp.path().join("w.db").display()),
            BackendKind::Redb => {
                format!(
                    "redb:{}?multi_process=true",
                    tmp.path().join("w.redb").display()
                )
            }
            BackendKind::Memory => "memory:".to_owned(),
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => {
                let server = vgi_storage_postgres::testing::TestServer::shared()?;
                format!("{}?schema=worker_example", server.url())
            }
            _ => continue,
        };
        let config = StorageConfig::from_url(&url)?;
        let shared = config.open()?.capabilities().shared_across_processes;
        let stdout = run_worker(Some(&url), &[])?;
        assert_checked(&stdout, shared);
        ran.push(kind);
    }
    assert!(ran.contains(&BackendKind::Sqlite) || !BackendKind::Sqlite.is_compiled_in());
    Ok(())
}

/// When the per-user default directory cannot be made (here the temp dir is a
/// plain file), building the default store fails with a message saying what
/// to set instead, and the worker exits non-zero rather than running without state.
#[test]
fn an_unusable_default_directory_fails_with_what_to_set() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let not_a_dir = tmp.path().join("a-file");
    std::fs::write(&not_a_dir, b"")?;
    let out = Command::new(worker_exe()?)
        .env_remove(vgi_storage::STORAGE_VAR)
        .env("TMPDIR", &not_a_dir)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the worker ran without a store: {stderr}"
    );
    assert!(
        stderr.contains("cannot create the per-user default directory"),
        "{stderr}"
    );
    assert!(stderr.contains("VGI_WORKER_SHARED_STORAGE"), "{stderr}");
    Ok(())
}
