//! End-to-end tests: run the `vgi-storage` binary against sqlite and redb stores.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use vgi_storage::{FunctionStorage, FunctionStorageExt};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgi-storage"));
    cmd.env_remove("VGI_STORAGE_CLI_FAIL_AFTER")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> TestResult<Output> {
    Ok(bin().args(args).output()?)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fill a store with two scopes of every kind of data, ids interleaved across logs.
fn fill(url: &str) -> TestResult {
    let store = vgi_storage::open(url)?;
    for scope in [&b"query-1"[..], b"q\0bin"] {
        store.kv_put(scope, b"k", b"value")?;
        store.append(scope, b"ns", b"a", b"one")?;
        store.append(scope, b"ns", b"b", b"two")?;
        store.queue_push(scope, &[b"first".to_vec(), b"second".to_vec()])?;
    }
    store.append(b"query-1", b"ns", b"a", b"three")?;
    Ok(())
}

fn urls(dir: &Path, name: &str) -> [String; 2] {
    [
        format!("sqlite:{}", dir.join(format!("{name}.db")).display()),
        format!("redb:{}", dir.join(format!("{name}.redb")).display()),
    ]
}

#[test]
fn every_read_subcommand_works_on_sqlite_and_redb() -> TestResult {
    let dir = tempfile::tempdir()?;
    for url in urls(dir.path(), "a") {
        fill(&url)?;
        let o = run(&["info", &url])?;
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("scopes         2"), "{}", stdout(&o));
        let o = run(&["--json", "scopes", &url, "--sort", "age"])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        assert_eq!(rows.as_array().map(Vec::len), Some(2));
        let o = run(&["--json", "show", &url, "query-1"])?;
        let shown: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        assert_eq!(shown["queue_depth"], 2);
        assert_eq!(shown["logs"][0]["entries"], 2);
        let o = run(&["show", &url, "hex:71006269"])?;
        assert!(stdout(&o).contains("hex:71006269"), "{}", stdout(&o));
        let o = run(&["check", &url])?;
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let o = run(&["gc", &url, "--ttl", "1h", "--dry-run"])?;
        assert!(
            stdout(&o).contains("would remove 0 scopes"),
            "{}",
            stdout(&o)
        );
        let o = run(&["gc", &url, "--ttl", "1h"])?;
        assert!(stdout(&o).contains("removed 0 scopes"), "{}", stdout(&o));
    }
    Ok(())
}

#[test]
fn clear_refuses_without_a_tty_and_clears_with_yes() -> TestResult {
    let dir = tempfile::tempdir()?;
    for url in urls(dir.path(), "c") {
        fill(&url)?;
        let o = run(&["clear", &url, "query-1"])?;
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
        let o = run(&["clear", &url, "query-1", "--yes"])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let store = vgi_storage::open(&url)?;
        assert_eq!(store.kv_get(b"query-1", b"k")?, None);
        assert_eq!(store.kv_get(b"q\0bin", b"k")?, Some(b"value".to_vec()));
    }
    Ok(())
}

/// Reads every log, kv entry and queue item of the two filled scopes.
fn contents(url: &str) -> TestResult<Vec<String>> {
    let store = vgi_storage::open(url)?;
    let mut out = Vec::new();
    for scope in [&b"query-1"[..], b"q\0bin"] {
        out.push(format!("{:?}", store.kv_get(scope, b"k")?));
        for key in [&b"a"[..], b"b"] {
            out.push(format!("{:?}", store.scan_all(scope, b"ns", key, -1, 10)?));
        }
        out.push(format!("{:?}", store.queue_drain(scope)?));
    }
    Ok(out)
}

#[test]
fn export_import_and_copy_keep_contents_ids_and_queue_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let [sqlite, redb] = urls(dir.path(), "src");
    fill(&sqlite)?;
    let file = dir.path().join("dump.jsonl");
    let file = file.to_str().ok_or("non-UTF-8 temp path")?;
    let o = run(&["export", &sqlite, file])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["import", file, &redb])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let [copied, _] = urls(dir.path(), "copied");
    let o = run(&["copy", &redb, &copied])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["copy", &redb, &copied])?;
    assert_eq!(o.status.code(), Some(4), "a non-empty target is refused");
    assert!(stderr(&o).contains("--into-non-empty"), "{}", stderr(&o));
    let want = contents(&sqlite)?;
    assert_eq!(
        contents(&redb)?,
        want,
        "import kept contents, ids and order"
    );
    assert_eq!(
        contents(&copied)?,
        want,
        "copy kept contents, ids and order"
    );
    // The target continues above the source's ids.
    let store = vgi_storage::open(&copied)?;
    let src = vgi_storage::open(&sqlite)?;
    assert!(store.id_high_water()? >= src.id_high_water()?);
    Ok(())
}

#[test]
fn a_damaged_or_missing_export_file_is_refused_and_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let [sqlite, redb] = urls(dir.path(), "d");
    fill(&sqlite)?;
    let file = dir.path().join("dump.jsonl");
    let path = file.to_str().ok_or("non-UTF-8 temp path")?;
    let o = run(&["import", path, &redb])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("check the path"), "{}", stderr(&o));
    assert!(run(&["export", &sqlite, path])?.status.success());
    let text = std::fs::read_to_string(&file)?;
    let damaged = text.replacen("dmFsdWU=", "dmFsdWY=", 1);
    assert_ne!(damaged, text, "the test found the value to damage");
    std::fs::write(&file, damaged)?;
    let o = run(&["import", path, &redb])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    let store = vgi_storage::open(&redb)?;
    assert!(store.list_scopes(None, 1)?.is_empty());
    Ok(())
}

#[test]
fn bad_urls_and_missing_stores_are_one_clear_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let o = run(&["info", "nosuch:/x"])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("use one of"), "{}", stderr(&o));
    let missing = format!("sqlite:{}", dir.path().join("missing.db").display());
    let o = run(&["scopes", &missing])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    assert!(
        !dir.path().join("missing.db").exists(),
        "a read command created the file"
    );
    let o = run(&["gc", &missing, "--ttl", "soon"])?;
    assert_eq!(o.status.code(), Some(2), "clap usage errors exit 2");
    Ok(())
}

#[test]
fn a_redb_store_held_by_another_process_is_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let [_, redb] = urls(dir.path(), "held");
    fill(&redb)?;
    // This test process holds the redb file open; the binary is another process.
    let _held = vgi_storage::open(&redb)?;
    let o = run(&["info", &redb])?;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: opening the store"),
        "{}",
        stderr(&o)
    );
    Ok(())
}

#[test]
fn an_interrupted_copy_is_detected_and_restarted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let [sqlite, redb] = urls(dir.path(), "i");
    fill(&sqlite)?;
    let o = bin()
        .args(["copy", &sqlite, &redb])
        .env("VGI_STORAGE_CLI_FAIL_AFTER", "3")
        .output()?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = run(&["check", &redb])?;
    assert_eq!(
        o.status.code(),
        Some(3),
        "check reports the interrupted copy"
    );
    let o = run(&["copy", &sqlite, &redb])?;
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    let o = run(&["copy", &sqlite, &redb, "--restart"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(contents(&redb)?, contents(&sqlite)?);
    assert!(run(&["check", &redb])?.status.success());
    Ok(())
}

/// The tables of a file written by the reference implementation (vgi 0.5.0), a copy of
/// vgi-storage-sqlite/tests/reference_schema.sql so the packaged crate is self-contained.
const REFERENCE_SCHEMA: &str = include_str!("reference_schema.sql");

#[test]
fn a_reference_file_moves_to_redb_in_one_copy_keeping_ids_and_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("reference.db");
    vgi_storage::dirs::ensure_private_file(&path)?;
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    conn.execute_batch(REFERENCE_SCHEMA)?;
    conn.execute_batch(
        "INSERT INTO function_state VALUES (x'00ff', x'6b', x'0102');
         INSERT INTO function_log (id, scope, ns, key, value) VALUES
             (3, x'00ff', x'6e73', x'6c', x'61'), (7, x'00ff', x'6e73', x'6c', x'62'),
             (9, x'00ff', x'6e73', x'6c', x'63');
         DELETE FROM function_log WHERE id = 9;
         INSERT INTO work_queue (scope, value) VALUES (x'00ff', x'71'), (x'00ff', x'72');
         INSERT INTO scope_touch VALUES (x'00ff', 2000);",
    )?;
    drop(conn);
    let from = format!("sqlite:{}", path.display());
    let to = format!("redb:{}", dir.path().join("new.redb").display());
    let o = run(&["copy", &from, &to])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let store = vgi_storage::open(&to)?;
    let scope = b"\x00\xff";
    assert_eq!(store.kv_get(scope, b"k")?, Some(vec![1, 2]));
    let ids: Vec<i64> = store
        .scan_all(scope, b"ns", b"l", -1, 10)?
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![3, 7], "log ids kept");
    assert_eq!(
        store.queue_drain(scope)?,
        vec![b"q".to_vec(), b"r".to_vec()]
    );
    let next = store.append(scope, b"ns", b"l", b"d")?;
    assert!(
        next > 9,
        "ids continue past the reference's highest ever (9), got {next}"
    );
    Ok(())
}

#[test]
fn an_interrupted_import_is_detected_and_restarted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let [sqlite, redb] = urls(dir.path(), "ii");
    fill(&sqlite)?;
    let file = dir.path().join("dump.jsonl");
    let file = file.to_str().ok_or("non-UTF-8 temp path")?;
    assert!(run(&["export", &sqlite, file])?.status.success());
    let o = bin()
        .args(["import", file, &redb])
        .env("VGI_STORAGE_CLI_FAIL_AFTER", "5")
        .output()?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = run(&["import", file, &redb, "--into-non-empty"])?;
    assert_eq!(o.status.code(), Some(4), "a marked target needs --restart");
    assert!(stderr(&o).contains("--restart"), "{}", stderr(&o));
    let o = run(&["import", file, &redb, "--restart"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(contents(&redb)?, contents(&sqlite)?);
    Ok(())
}

/// sqlite to postgres in one copy, then back out through an export: contents,
/// ids and queue order survive, and the read commands work on a server store.
/// Runs with `--features postgres` (the `.ci/run` script does).
#[cfg(feature = "postgres")]
#[test]
fn copy_into_postgres_and_back_keeps_contents() -> TestResult {
    let server = vgi_storage_postgres::testing::TestServer::shared()?;
    let schema = format!("cli_copy_{}", std::process::id());
    let pg = format!("{}?schema={schema}", server.url());
    let dir = tempfile::tempdir()?;
    let [sqlite, redb] = urls(dir.path(), "pg");
    fill(&sqlite)?;
    let o = run(&["copy", &sqlite, &pg])?;
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [["info", &pg], ["scopes", &pg], ["check", &pg]] {
        let o = run(&args)?;
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let file = dir.path().join("pg.jsonl");
    let file = file.to_str().ok_or("non-UTF-8 temp path")?;
    assert!(run(&["export", &pg, file])?.status.success());
    assert!(run(&["import", file, &redb])?.status.success());
    // Reading contents drains the queues, so read the source once.
    let want = contents(&sqlite)?;
    assert_eq!(
        contents(&redb)?,
        want,
        "sqlite -> postgres -> export -> redb"
    );
    assert_eq!(contents(&pg)?, want, "sqlite -> postgres");
    Ok(())
}
