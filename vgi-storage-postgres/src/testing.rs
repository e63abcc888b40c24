//! A throwaway PostgreSQL server for tests and benchmarks (cargo feature `testing`).
//!
//! [`TestServer::shared`] starts one server per process, the first time it is
//! called, from the server binaries installed on the machine (`initdb`,
//! `pg_ctl` and `postgres` on `PATH`, under `/usr/lib/postgresql/*/bin`,
//! `/usr/pgsql-*/bin`, or in the directory named by `VGI_STORAGE_PG_BIN`), in a
//! fresh temp directory, listening on a unix socket there and on a free
//! loopback port. Where no server binaries are installed it returns an error
//! saying what to install; tests that use it fail rather than silently pass.
//!
//! - Root: PostgreSQL refuses to run as root, so the server runs as an
//!   unprivileged user (`nobody`, or `VGI_STORAGE_PG_TEST_USER`) through
//!   `setpriv` (or `runuser`); its directory is handed to that user.
//! - Child processes: a test binary that re-executes itself (the conformance
//!   suite's multi-process checks) reuses the server of the ancestor process
//!   that started one, found through a small registry file, rather than
//!   starting its own.
//! - Cleanup: statics are never dropped, so each server has a watcher shell
//!   whose stdin is a pipe from the test process. When the test process exits,
//!   however it exits, the kernel closes the pipe; the watcher then stops the
//!   server and removes its directory.
//!
//! Authentication: the unix socket trusts everyone (the superuser is
//! [`SUPERUSER`]); TCP asks for a password (SCRAM), and the role
//! [`PASSWORD_USER`] with password [`PASSWORD`] exists for tests of that path.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use vgi_storage_core::{ErrorKind, SharedClock, StorageError};

use crate::{PostgresBuilder, PostgresStorage};

/// The superuser the test server is initialised with; it logs in over the socket without a password.
pub const SUPERUSER: &str = "vgi";
/// A role that logs in over TCP with [`PASSWORD`].
pub const PASSWORD_USER: &str = "vgi_password_user";
/// The password of [`PASSWORD_USER`].
pub const PASSWORD: &str = "correct-horse-battery";

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found \
    on PATH, under /usr/lib/postgresql/*/bin or /usr/pgsql-*/bin, or in VGI_STORAGE_PG_BIN; \
    the vgi-storage-postgres tests start their own throwaway server from them: install them \
    (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; \
    macOS: brew install postgresql)";

/// A PostgreSQL server started for tests, in its own temp directory.
///
/// Stopped and removed on drop (for [`TestServer::start`]) or when the test
/// process exits (for [`TestServer::shared`]).
#[derive(Debug)]
pub struct TestServer {
    base: PathBuf,
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<RunAs>,
    /// Extra `-c` settings, as passed to `postgres`.
    settings: String,
    /// The write end of the watcher's stdin, and the watcher; `None` when the
    /// server belongs to an ancestor process.
    watcher: Mutex<Option<(ChildStdin, Child)>>,
}

#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

static SHARED: OnceLock<Result<TestServer, String>> = OnceLock::new();

impl TestServer {
    /// The server shared by every test of this process (and its child
    /// processes), started on first use.
    pub fn shared() -> io::Result<&'static TestServer> {
        let server = SHARED.get_or_init(|| {
            if let Some(server) = Self::from_ancestor() {
                return Ok(server);
            }
            let server = Self::start().map_err(|e| e.to_string())?;
            server.register();
            Ok(server)
        });
        server.as_ref().map_err(|e| io::Error::other(e.clone()))
    }

    /// Start a server of its own (for tests that stop and restart it).
    ///
    /// For speed it runs with `fsync=off`: committed work survives a crash of
    /// the server process (see [`TestServer::kill`]), not of the machine.
    pub fn start() -> io::Result<TestServer> {
        Self::start_with(&[])
    }

    /// Start a server of its own with extra settings (`-c name=value`), which
    /// override the test defaults: e.g. `[("fsync", "on")]` for measurements.
    pub fn start_with(settings: &[(&str, &str)]) -> io::Result<TestServer> {
        Self::start_inner(settings, None, None)
    }

    /// As [`TestServer::start_with`], with the server's directory (its data
    /// and socket) created inside `parent` rather than the system temp dir:
    /// e.g. a tmpfs, to measure the server without a disk's flush cost.
    pub fn start_in(parent: &Path, settings: &[(&str, &str)]) -> io::Result<TestServer> {
        Self::start_inner(settings, None, Some(parent))
    }

    /// Start a server of its own with TLS on (`ssl=on`), serving the PEM
    /// certificate (chain) `cert` with private key `key`, both copied into the
    /// server's directory. Clients may connect with or without TLS over TCP.
    /// With `client_ca`, the server asks clients for a certificate signed by
    /// it (optional to present; `pg_stat_ssl.client_dn` shows who did).
    /// `settings` as for [`TestServer::start_with`].
    pub fn start_with_tls(
        settings: &[(&str, &str)],
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> io::Result<TestServer> {
        Self::start_inner(settings, Some((cert, key, client_ca)), None)
    }

    fn start_inner(
        settings: &[(&str, &str)],
        tls: Option<(&Path, &Path, Option<&Path>)>,
        parent: Option<&Path>,
    ) -> io::Result<TestServer> {
        let bin = find_binaries()?;
        let run_as = if vgi_storage_core::dirs::current_uid()? == 0 {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let mut base = tempfile::Builder::new();
        base.prefix("vgi-pg-");
        let base = match parent {
            Some(parent) => base.tempdir_in(parent)?,
            None => base.tempdir()?,
        }
        .keep();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid))?;
        }
        let mut all: String = settings.iter().fold(String::new(), |mut out, (k, v)| {
            let _ = write!(out, " -c {k}={v}");
            out
        });
        if let Some((cert, key, client_ca)) = tls {
            // The server reads them as its own user and wants the key private.
            let (cert_to, key_to) = (base.join("server.crt"), base.join("server.key"));
            fs::copy(cert, &cert_to)?;
            fs::copy(key, &key_to)?;
            fs::set_permissions(&key_to, fs::Permissions::from_mode(0o600))?;
            if let Some(user) = &run_as {
                for file in [&cert_to, &key_to] {
                    std::os::unix::fs::chown(file, Some(user.uid), Some(user.gid))?;
                }
            }
            let _ = write!(
                all,
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_to.display(),
                key_to.display()
            );
            if let Some(ca) = client_ca {
                let ca_to = base.join("client-ca.crt");
                fs::copy(ca, &ca_to)?;
                if let Some(user) = &run_as {
                    std::os::unix::fs::chown(&ca_to, Some(user.uid), Some(user.gid))?;
                }
                let _ = write!(all, " -c ssl_ca_file={}", ca_to.display());
            }
        }
        let server = TestServer {
            data: base.join("data"),
            base,
            port: free_port()?,
            bin,
            run_as,
            settings: all,
            watcher: Mutex::new(None),
        };
        server.spawn_watcher()?;
        server.initdb()?;
        server.start_again()?;
        server.create_password_user()?;
        Ok(server)
    }

    /// Start a streaming standby of `primary` (a base backup taken with
    /// `pg_basebackup -R`), on a port and directory of its own. It follows
    /// the primary until [`TestServer::promote`]d. To make it synchronous, set
    /// `synchronous_standby_names` on the primary afterwards (see
    /// [`TestServer::superuser_sql`]).
    pub fn start_standby(primary: &TestServer) -> io::Result<TestServer> {
        let base = tempfile::Builder::new().prefix("vgi-pg-").tempdir()?.keep();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = &primary.run_as {
            std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid))?;
        }
        let server = TestServer {
            data: base.join("data"),
            base,
            port: free_port()?,
            bin: primary.bin.clone(),
            run_as: primary.run_as.clone(),
            settings: String::new(),
            watcher: Mutex::new(None),
        };
        server.spawn_watcher()?;
        let data = server.data.to_string_lossy().into_owned();
        let host = primary.base.to_string_lossy().into_owned();
        let port = primary.port.to_string();
        server.run(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "--no-sync",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// Promote a standby to primary, waiting until it accepts writes.
    pub fn promote(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["promote", "-D", &data, "-w", "-t", "60", "-s"])
    }

    /// The port the server listens on, over TCP on 127.0.0.1 and as its socket's name.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    #[must_use]
    pub fn socket_dir(&self) -> &Path {
        &self.base
    }

    /// A `postgres://` URL for [`SUPERUSER`] over the unix socket (database `postgres`).
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{}/postgres",
            percent_encode(&self.base.to_string_lossy()),
            self.port
        )
    }

    /// A `postgres://` URL over TCP on 127.0.0.1 with `user` and `password`.
    #[must_use]
    pub fn tcp_url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/postgres?sslmode=disable",
            percent_encode(user),
            percent_encode(password),
            self.port
        )
    }

    /// Client settings for [`SUPERUSER`] over the unix socket.
    #[must_use]
    pub fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host_path(&self.base)
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A store builder on this server using `schema`.
    #[must_use]
    pub fn builder(&self, schema: &str) -> PostgresBuilder {
        PostgresStorage::builder(self.config()).schema(schema)
    }

    /// Stop the server (fast shutdown: sessions are cut off, committed work kept).
    pub fn stop(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "60", "-s"],
        )
    }

    /// Crash the server (immediate shutdown: no checkpoint, as after a power-less
    /// crash of the server process; committed work survives in the WAL).
    pub fn kill(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-D",
                &data,
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "-s",
            ],
        )
    }

    /// Start the server again on the same data, port and socket.
    pub fn start_again(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.base.join("server.log").to_string_lossy().into_owned();
        let options = format!(
            "-k {} -p {} -h 127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=32MB{}",
            self.base.display(),
            self.port,
            self.settings
        );
        let started = self.run(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-s", "-o", &options,
            ],
        );
        started.map_err(|e| {
            let tail = fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
            io::Error::other(format!("{e}; server log:\n{tail}"))
        })
    }

    /// Drop `schema` and everything in it (for a test that wants a fresh store).
    pub fn drop_schema(&self, schema: &str) -> io::Result<()> {
        crate::config::validate_schema(schema).map_err(io::Error::other)?;
        self.superuser_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
    }

    /// Run `sql` as [`SUPERUSER`] over the socket, from any thread (the blocking
    /// client cannot run inside a tokio runtime, so there it runs on a helper thread).
    pub fn superuser_sql(&self, sql: &str) -> io::Result<()> {
        let config = self.config();
        let work = move || -> io::Result<()> {
            let mut client = config.connect(postgres::NoTls).map_err(io::Error::other)?;
            client.batch_execute(sql).map_err(io::Error::other)
        };
        if !crate::blocking::in_runtime() {
            return work();
        }
        std::thread::scope(|s| {
            s.spawn(work)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn initdb(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )
    }

    fn create_password_user(&self) -> io::Result<()> {
        self.superuser_sql(&format!(
            "CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'; \
             GRANT CREATE ON DATABASE postgres TO {PASSWORD_USER}"
        ))
    }

    /// A command running `program` from the server's bin dir, as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = as_user(self.run_as.as_ref(), &path);
        cmd.current_dir(&self.base)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        let out = self.command(program).args(args).output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{program} {} failed ({}): {}{}",
            args.first().unwrap_or(&""),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }

    /// The watcher: waits for EOF on its stdin (the test process exited), then
    /// stops the server and removes its directory. It ignores the terminal's
    /// signals so a Ctrl-C still ends in cleanup.
    fn spawn_watcher(&self) -> io::Result<()> {
        let script = "trap '' INT TERM HUP; cat >/dev/null; \
                      \"$0\" stop -D \"$1\" -m immediate -w -t 30 >/dev/null 2>&1; rm -rf \"$2\"";
        let sh = Path::new("/bin/sh");
        let mut child = as_user(self.run_as.as_ref(), sh)
            .arg("-c")
            .arg(script)
            .arg(self.bin.join("pg_ctl"))
            .arg(&self.data)
            .arg(&self.base)
            .current_dir(&self.base)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("watcher has no stdin"))?;
        *self
            .watcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((stdin, child));
        Ok(())
    }

    fn registry_dir() -> io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "vgi-storage-pg-test-{}",
            vgi_storage_core::dirs::current_uid()?
        ));
        vgi_storage_core::dirs::ensure_private_dir(&dir)?;
        Ok(dir)
    }

    /// Record this process's shared server so child processes find it.
    fn register(&self) {
        let Ok(dir) = Self::registry_dir() else {
            return;
        };
        // Forget servers of processes that are gone.
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let mut text = String::new();
        let _ = writeln!(text, "{}", self.base.display());
        let _ = writeln!(text, "{}", self.port);
        let _ = writeln!(text, "{}", self.bin.display());
        let _ = fs::write(dir.join(std::process::id().to_string()), text);
    }

    /// The shared server of an ancestor process, if one registered and is still up.
    fn from_ancestor() -> Option<TestServer> {
        let dir = Self::registry_dir().ok()?;
        let mut pid = std::os::unix::process::parent_id();
        for _ in 0..16 {
            if pid <= 1 {
                return None;
            }
            if let Ok(text) = fs::read_to_string(dir.join(pid.to_string())) {
                let mut lines = text.lines();
                let base = PathBuf::from(lines.next()?);
                let port: u16 = lines.next()?.parse().ok()?;
                let bin = PathBuf::from(lines.next()?);
                if !base.join(format!(".s.PGSQL.{port}")).exists() {
                    return None;
                }
                return Some(TestServer {
                    data: base.join("data"),
                    base,
                    port,
                    bin,
                    run_as: None,
                    settings: String::new(),
                    watcher: Mutex::new(None),
                });
            }
            pid = parent_of(pid)?;
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let watcher = self
            .watcher
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stdin, mut child)) = watcher {
            let data = self.data.to_string_lossy().into_owned();
            let _ = self.run(
                "pg_ctl",
                &["stop", "-D", &data, "-m", "immediate", "-w", "-s"],
            );
            // Closing its stdin lets the watcher remove the directory.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Settings for a store with `schema` on the shared test server, for options
/// beyond [`open_store`]'s.
///
/// Errors (no PostgreSQL installed, the server failed to start) come back as a
/// [`StorageError`] whose message says what to do.
pub fn store_builder(schema: &str) -> vgi_storage_core::Result<PostgresBuilder> {
    let server = TestServer::shared().map_err(|e| {
        StorageError::open(
            "postgres",
            "test server",
            ErrorKind::NotFound,
            "the throwaway test server could not be started; see the source",
            Some(Box::new(e)),
        )
    })?;
    Ok(server.builder(schema))
}

/// Open a store with `schema` on the shared test server, stamping writes with `clock`.
///
/// Errors as for [`store_builder`].
pub fn open_store(schema: &str, clock: SharedClock) -> vgi_storage_core::Result<PostgresStorage> {
    store_builder(schema)?.test_clock(clock).connect()
}

fn as_user(run_as: Option<&RunAs>, program: &Path) -> Command {
    match run_as {
        None => Command::new(program),
        Some(user) if which("setpriv").is_some() => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            cmd
        }
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.arg("-u").arg(&user.name).arg("--").arg(program);
            cmd
        }
    }
}

fn unprivileged_user() -> io::Result<RunAs> {
    let name = std::env::var("VGI_STORAGE_PG_TEST_USER").unwrap_or_else(|_| "nobody".to_owned());
    let id = |flag: &str| -> io::Result<u32> {
        let out = Command::new("id").arg(flag).arg(&name).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "running as root, the test server needs an unprivileged user to run \
                         as, and user {name} does not exist; create one or set \
                         VGI_STORAGE_PG_TEST_USER"
                    ),
                )
            })
    };
    Ok(RunAs {
        uid: id("-u")?,
        gid: id("-g")?,
        name,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// A directory holding initdb, pg_ctl and postgres.
fn find_binaries() -> io::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("VGI_STORAGE_PG_BIN") {
        candidates.push(dir.into());
    }
    for root in ["/usr/lib/postgresql", "/usr/local/lib/postgresql"] {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    let mut pgsql: Vec<PathBuf> = fs::read_dir("/usr")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
        .map(|e| e.path().join("bin"))
        .collect();
    pgsql.sort();
    candidates.extend(pgsql.into_iter().rev());
    if let Some(pg_ctl) = which("pg_ctl") {
        // Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl).
        let real = fs::canonicalize(&pg_ctl).unwrap_or(pg_ctl);
        candidates.extend(real.parent().map(Path::to_path_buf));
    }
    candidates
        .into_iter()
        .find(|dir| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|p| dir.join(p).is_file())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_this_process_is_known() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn socket_paths_are_percent_encoded_in_urls() {
        assert_eq!(percent_encode("/tmp/vgi-pg-a b"), "%2Ftmp%2Fvgi-pg-a%20b");
    }
}
