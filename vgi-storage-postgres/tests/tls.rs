//! TLS with libpq's sslmode meanings, against a throwaway server with `ssl=on`
//! and a certificate authority and server certificate made here with the
//! `openssl` command line.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vgi_storage_core::{ErrorKind, FunctionStorage, StorageError};
use vgi_storage_postgres::PostgresStorage;
use vgi_storage_postgres::testing::{PASSWORD, PASSWORD_USER, TestServer};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A CA, a server certificate for `localhost` signed by it, and a second CA
/// that signed nothing, in a temp directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!("the openssl command line is needed to make test certificates: {e}")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A key and a certificate `name`.crt for `subject`, signed by ca.crt with
/// the extensions `ext` (openssl's config lines).
fn signed(dir: &Path, name: &str, subject: &str, ext: &str) -> Result<(), String> {
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let mut args = vec!["req"];
    args.extend(EC_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &args)?;
    std::fs::write(dir.join(&extfile), ext).map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ],
    )
}

fn make_pki() -> Result<Pki, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    for (name, cn) in [("ca", "vgi test ca"), ("other-ca", "vgi other ca")] {
        let (key, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(EC_KEY);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &args)?;
    }
    signed(
        d,
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    // A client certificate for the password user, from the same CA.
    signed(
        d,
        "client",
        &format!("/CN={PASSWORD_USER}"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )?;
    Ok(Pki { dir })
}

/// One TLS server (and its PKI) for every test of this file.
fn tls_server() -> Result<&'static (Pki, TestServer), String> {
    static SERVER: OnceLock<Result<(Pki, TestServer), String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let pki = make_pki()?;
            let d = pki.dir.path();
            let server = TestServer::start_with_tls(
                &[],
                &d.join("server.crt"),
                &d.join("server.key"),
                Some(&d.join("ca.crt")),
            )
            .map_err(|e| e.to_string())?;
            Ok((pki, server))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn url(host: &str, port: u16, schema: &str, params: &str) -> String {
    format!("postgres://{PASSWORD_USER}:{PASSWORD}@{host}:{port}/postgres?schema={schema}&{params}")
}

/// The message and every source, for checking what an operator would read.
fn full_text(err: &StorageError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Whether the server sees this store's session as encrypted.
fn session_is_encrypted(store: &PostgresStorage) -> Result<bool, Box<dyn std::error::Error>> {
    // The store has no raw query; a kv round trip proves the session works, and
    // the server's pg_stat_ssl view (read over the socket) proves TLS.
    store.kv_put(b"s", b"k", b"v")?;
    let (_, server) = tls_server()?;
    let mut admin = server.config().connect(postgres::NoTls)?;
    let row = admin.query_one(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.usename = $1 AND s.ssl",
        &[&PASSWORD_USER],
    )?;
    Ok(row.get::<_, i64>(0) > 0)
}

#[test]
fn verify_full_connects_to_the_right_host_over_tls() -> TestResult {
    let (pki, server) = tls_server()?;
    let ca = pki.ca();
    let store = PostgresStorage::connect(&url(
        "localhost",
        server.port(),
        "tls_full",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))?;
    assert!(session_is_encrypted(&store)?);
    assert_eq!(store.kv_get(b"s", b"k")?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[test]
fn a_client_certificate_is_presented_from_sslcert_and_sslkey() -> TestResult {
    let (pki, server) = tls_server()?;
    let d = pki.dir.path();
    let store = PostgresStorage::connect(&url(
        "localhost",
        server.port(),
        "tls_client_cert",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}&application_name=with_cert",
            pki.ca().display(),
            d.join("client.crt").display(),
            d.join("client.key").display()
        ),
    ))?;
    store.kv_put(b"s", b"k", b"v")?;
    let mut admin = server.config().connect(postgres::NoTls)?;
    let row = admin.query_one(
        "SELECT s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'with_cert'",
        &[],
    )?;
    let dn: Option<String> = row.get(0);
    assert_eq!(dn.as_deref(), Some(format!("/CN={PASSWORD_USER}").as_str()));
    // sslcert without sslkey is a configuration error, said plainly.
    let err = PostgresStorage::connect(&url(
        "localhost",
        server.port(),
        "tls_client_cert",
        &format!("sslmode=require&sslcert={}", d.join("client.crt").display()),
    ))
    .err()
    .ok_or("sslcert without sslkey was accepted")?;
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(full_text(&err).contains("sslcert and sslkey go together"));
    Ok(())
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_name() -> TestResult {
    let (pki, server) = tls_server()?;
    let ca = pki.ca();
    // The certificate names localhost; 127.0.0.1 is the same server, another name.
    let err = PostgresStorage::connect(&url(
        "127.0.0.1",
        server.port(),
        "tls_wrong_name",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .err()
    .ok_or("verify-full accepted a certificate for another name")?;
    assert_eq!(
        err.kind(),
        ErrorKind::PermissionDenied,
        "{}",
        full_text(&err)
    );
    assert!(!err.is_retryable());
    let text = full_text(&err);
    assert!(
        text.contains("certificate") && text.contains("host name"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    // verify-ca checks the chain only, so the same address is accepted.
    let store = PostgresStorage::connect(&url(
        "127.0.0.1",
        server.port(),
        "tls_wrong_name",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    ))?;
    assert!(session_is_encrypted(&store)?);
    Ok(())
}

#[test]
fn an_unknown_certificate_authority_is_refused() -> TestResult {
    let (pki, server) = tls_server()?;
    for mode in ["verify-full", "verify-ca", "require"] {
        let other = pki.other_ca();
        let err = PostgresStorage::connect(&url(
            "localhost",
            server.port(),
            "tls_unknown_ca",
            &format!("sslmode={mode}&sslrootcert={}", other.display()),
        ))
        .err()
        .ok_or(format!("{mode} trusted a certificate from an unknown CA"))?;
        assert_eq!(
            err.kind(),
            ErrorKind::PermissionDenied,
            "{mode}: {}",
            full_text(&err)
        );
        assert!(
            full_text(&err).contains("certificate authority"),
            "{}",
            full_text(&err)
        );
    }
    Ok(())
}

#[test]
fn require_without_a_root_certificate_encrypts_without_verifying() -> TestResult {
    let (_, server) = tls_server()?;
    let store = PostgresStorage::connect(&url(
        "127.0.0.1",
        server.port(),
        "tls_require",
        "sslmode=require",
    ))?;
    assert!(session_is_encrypted(&store)?);
    Ok(())
}

#[test]
fn require_against_a_server_without_tls_fails() -> TestResult {
    let server = TestServer::shared()?;
    let err = PostgresStorage::connect(&url(
        "127.0.0.1",
        server.port(),
        "tls_none",
        "sslmode=require",
    ))
    .err()
    .ok_or("require connected in clear")?;
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{}", full_text(&err));
    assert!(
        full_text(&err).contains("does not offer TLS"),
        "{}",
        full_text(&err)
    );
    Ok(())
}

#[test]
fn verify_modes_without_a_root_certificate_are_a_clear_config_error() {
    let err = PostgresStorage::connect("postgres://u@localhost:1/db?sslmode=verify-full").err();
    let text = err.as_ref().map(full_text).unwrap_or_default();
    // Unless ~/.postgresql/root.crt exists, which the default then is.
    if std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".postgresql/root.crt").exists())
    {
        return;
    }
    assert_eq!(
        err.map(|e| e.kind()),
        Some(ErrorKind::InvalidInput),
        "{text}"
    );
    assert!(text.contains("sslrootcert"), "{text}");
}
