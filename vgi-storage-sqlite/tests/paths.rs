//! Explicit paths in shared directories: the database and its side files must
//! be this user's alone, and side files are never opened through a symlink.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use vgi_storage_core::{ErrorKind, FunctionStorage, dirs};
use vgi_storage_sqlite::SqliteStorage;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn mode(path: &Path) -> std::io::Result<u32> {
    Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

/// Regression: an existing database file was accepted whatever its mode, so
/// another user could pre-create a world-readable `state.db` in a shared
/// directory and our data would land in a file they can read.
#[test]
fn an_existing_database_readable_by_others_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    SqliteStorage::open(&path)?.kv_put(b"s", b"k", b"v")?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    let before = fs::read(&path)?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened a database readable by others")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("state.db") && msg.contains("644") && msg.contains("chmod 600"),
        "{msg}"
    );
    assert_eq!(fs::read(&path)?, before, "the refused file was modified");
    assert_eq!(mode(&path)?, 0o644, "the refused file's mode was changed");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    assert_eq!(
        SqliteStorage::open(&path)?.kv_get(b"s", b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}

/// Regression: a database file owned by another user was accepted, though
/// that user can read it or swap its contents.
#[test]
fn a_database_owned_by_another_user_is_refused() -> TestResult {
    if dirs::current_uid()? != 0 {
        println!("skipped: only root can give a file to another user");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    dirs::ensure_private_file(&path)?;
    let chowned = Command::new("chown").arg("65534").arg(&path).status()?;
    assert!(chowned.success(), "chown failed");
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened another user's database")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("state.db") && msg.contains("uid 65534"),
        "{msg}"
    );
    Ok(())
}

/// Regression: the `-turn` side file was created following symlinks, so
/// another user could plant `state.db-turn` pointing anywhere and we would
/// create (or lock) the file of their choosing.
#[test]
fn a_side_file_planted_as_a_symlink_is_refused_and_its_target_not_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let target = dir.path().join("chosen-by-someone-else");
    std::os::unix::fs::symlink(&target, dir.path().join("state.db-turn"))?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened with a planted side-file symlink")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("state.db-turn") && msg.contains("symbolic link"),
        "{msg}"
    );
    assert!(!target.exists(), "created the file the link points to");
    Ok(())
}

/// Regression: an existing side file was reused whatever its mode.
#[test]
fn a_side_file_writable_by_others_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    drop(SqliteStorage::open(&path)?);
    let turn = dir.path().join("state.db-turn");
    fs::set_permissions(&turn, fs::Permissions::from_mode(0o666))?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("reused a side file writable by others")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("state.db-turn"), "{err}");
    Ok(())
}

/// A `-wal` another user left beside the database would be replayed into it.
#[test]
fn a_wal_file_readable_by_others_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    dirs::ensure_private_file(&path)?;
    let wal = dir.path().join("state.db-wal");
    fs::write(&wal, b"")?;
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o644))?;
    let err = SqliteStorage::open(&path)
        .err()
        .ok_or("opened beside a foreign -wal")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("state.db-wal"), "{err}");
    Ok(())
}

/// A database path that is another user's symlink is refused even when it
/// leads to a private file of ours: they could point it at any of our files.
/// A link of our own is followed.
#[test]
fn a_database_path_that_is_another_users_symlink_is_refused() -> TestResult {
    if dirs::current_uid()? != 0 {
        println!("skipped: only root can make a link another user's");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ours = dir.path().join("ours.db");
    dirs::ensure_private_file(&ours)?;
    let link = dir.path().join("state.db");
    std::os::unix::fs::symlink(&ours, &link)?;
    SqliteStorage::open(&link)?.kv_put(b"s", b"k", b"v")?;
    let chowned = Command::new("chown")
        .args(["-h", "65534"])
        .arg(&link)
        .status()?;
    assert!(chowned.success(), "chown -h failed");
    let err = SqliteStorage::open(&link)
        .err()
        .ok_or("opened through another user's link")?;
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("symbolic link") && msg.contains("uid 65534"),
        "{msg}"
    );
    Ok(())
}
