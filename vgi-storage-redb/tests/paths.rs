//! Explicit paths in shared directories: the store's file must be this user's alone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use vgi_storage_core::{ErrorKind, FunctionStorage, dirs};
use vgi_storage_redb::RedbStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Regression: an existing file was accepted whatever its mode, so another user
/// could pre-create a world-readable store file in a shared directory and read
/// everything we then wrote to it.
#[test]
fn an_existing_file_readable_by_others_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    RedbStorage::open(&path)?.kv_put(b"s", b"k", b"v")?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604))?;
    let before = fs::read(&path)?;
    let err = RedbStorage::open(&path)
        .err()
        .ok_or("opened a file readable by others")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("s.redb") && msg.contains("604") && msg.contains("chmod 600"),
        "{msg}"
    );
    assert_eq!(fs::read(&path)?, before, "the refused file was modified");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    assert_eq!(
        RedbStorage::open(&path)?.kv_get(b"s", b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}

/// Regression: a file owned by another user was accepted, though that user
/// can read it or swap its contents.
#[test]
fn a_file_owned_by_another_user_is_refused() -> TestResult {
    if dirs::current_uid()? != 0 {
        println!("skipped: only root can give a file to another user");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    dirs::ensure_private_file(&path)?;
    let chowned = Command::new("chown").arg("65534").arg(&path).status()?;
    assert!(chowned.success(), "chown failed");
    let err = RedbStorage::open(&path)
        .err()
        .ok_or("opened another user's file")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("s.redb") && msg.contains("uid 65534"), "{msg}");
    assert_eq!(
        fs::metadata(&path)?.len(),
        0,
        "the refused file was written"
    );
    Ok(())
}
