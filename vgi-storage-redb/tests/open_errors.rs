//! Opening what is not a healthy store of ours gives a clear error, never a panic.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use vgi_storage_core::{ErrorKind, FunctionStorage, StorageError};
use vgi_storage_redb::RedbStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn open_err(path: &std::path::Path) -> Result<StorageError, &'static str> {
    RedbStorage::open(path).err().ok_or("the open succeeded")
}

#[test]
fn a_file_that_is_not_a_redb_database_is_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("text.redb");
    fs::write(&path, "this is a text file, not a database\n".repeat(500))?;
    // Owner-only, so it is refused for its contents, not for its mode.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    let err = open_err(&path)?;
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    // The text is untouched: we never write over a file we could not open.
    assert!(fs::read_to_string(&path)?.starts_with("this is a text file"));
    Ok(())
}

#[test]
fn a_truncated_database_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    for keep in [10_u64, 600, 4096, 20_000] {
        let path = dir.path().join(format!("t{keep}.redb"));
        {
            let store = RedbStorage::open(&path)?;
            for i in 0..200_u32 {
                store.kv_put(b"s", &i.to_le_bytes(), &[7; 100])?;
            }
        }
        let file = fs::OpenOptions::new().write(true).open(&path)?;
        assert!(file.metadata()?.len() > keep);
        file.set_len(keep)?;
        drop(file);
        let err = open_err(&path)?;
        assert_eq!(
            err.kind(),
            ErrorKind::Corrupt,
            "truncated to {keep}: {err:?}"
        );
    }
    Ok(())
}

#[test]
fn a_path_under_a_regular_file_cannot_be_opened() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("plain");
    fs::write(&file, b"x")?;
    let err = open_err(&file.join("sub").join("s.redb"))?;
    assert!(matches!(err, StorageError::Open { .. }), "{err:?}");
    assert_ne!(err.kind(), ErrorKind::Other, "{err:?}");
    Ok(())
}

#[test]
fn a_directory_is_not_a_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = open_err(dir.path())?;
    assert!(matches!(err, StorageError::Open { .. }), "{err:?}");
    Ok(())
}

#[test]
fn a_second_handle_in_this_process_is_already_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let first = RedbStorage::open(&path)?;
    let err = open_err(&path)?;
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen);
    first.kv_put(b"s", b"k", b"v")?;
    drop(first);
    assert_eq!(
        RedbStorage::open(&path)?.kv_get(b"s", b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}

#[test]
fn new_files_are_owner_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let store = RedbStorage::open(&path)?;
    assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(store.name(), format!("redb:{}", path.display()));
    Ok(())
}

/// A missing directory is an error naming the path, as for SQLite; it is not
/// created, so a typo in a path cannot grow a new directory tree.
#[test]
fn a_missing_directory_is_a_not_found_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("typo").join("s.redb");
    let err = RedbStorage::open(&path)
        .err()
        .ok_or("opened a store in a missing directory")?;
    assert_eq!(err.kind(), vgi_storage_core::ErrorKind::NotFound);
    assert!(err.to_string().contains("typo"), "{err}");
    assert!(!dir.path().join("typo").exists());
    Ok(())
}
