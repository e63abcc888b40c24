//! TLS with libpq's `sslmode` meanings, on rustls (pure Rust, ring provider).
//!
//! | sslmode | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | - | - |
//! | `allow`, `prefer` | if the server offers it | no | no |
//! | `require` | yes | only if a root certificate is given (then as `verify-ca`) | no |
//! | `verify-ca` | yes | yes, against `sslrootcert` | no |
//! | `verify-full` | yes | yes, against `sslrootcert` | yes |
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt` as with libpq;
//! `sslcert`/`sslkey` (PEM) present a client certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::Client;
use postgres::config::SslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;
use vgi_storage_core::{ErrorKind, Result, StorageError};

use crate::error::PgError;

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    /// Parse libpq's spelling (`allow` is taken as `prefer`).
    pub(crate) fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(crate::error::config(
                    "sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
                    None,
                ));
            }
        })
    }
}

/// The TLS settings of a connection string (or the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Option<Mode>,
    pub(crate) root_cert: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

impl Settings {
    /// Take one `key=value` if it is a TLS setting; `false` if it is not ours.
    pub(crate) fn take(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "sslmode" => self.mode = Some(Mode::parse(value)?),
            "sslrootcert" => self.root_cert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Fill what is unset from `other` (the environment).
    pub(crate) fn or(self, other: Settings) -> Settings {
        Settings {
            mode: self.mode.or(other.mode),
            root_cert: self.root_cert.or(other.root_cert),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
        }
    }
}

/// How connections are made: in clear, or with a TLS connector.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    Tls(MakeRustlsConnect),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Tls(_) => "Tls",
        })
    }
}

impl Connector {
    /// Connect `config` with this connector.
    pub(crate) fn connect(&self, config: &postgres::Config) -> Result<Client, PgError> {
        match self {
            Self::Plain => config.connect(postgres::NoTls),
            Self::Tls(tls) => config.connect(tls.clone()),
        }
    }
}

fn tls_config_error(hint: String, source: Option<vgi_storage_core::BoxError>) -> StorageError {
    StorageError::Config {
        store: "postgres".to_owned(),
        hint,
        source,
    }
}

/// libpq's default root certificate file, if it exists.
fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then_some(path)
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| {
            tls_config_error(
                format!(
                    "cannot read the root certificates in sslrootcert {}; give a PEM file of \
                     the certificate authority that signed the server's certificate",
                    path.display()
                ),
                Some(Box::new(e)),
            )
        })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(tls_config_error(
            format!(
                "sslrootcert {} holds no usable certificate; give a PEM file of the certificate \
                 authority that signed the server's certificate",
                path.display()
            ),
            None,
        ));
    }
    Ok(roots)
}

/// The connector and client `sslmode` for `settings`, and the mode the client
/// library is to run in (it knows only disable, prefer and require).
pub(crate) fn connector(settings: &Settings) -> Result<(Connector, SslMode)> {
    let mode = settings.mode.unwrap_or(Mode::Prefer);
    if mode == Mode::Disable {
        return Ok((Connector::Plain, SslMode::Disable));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_cert = settings.root_cert.clone().or_else(default_root_cert);
    // libpq: with a root certificate at hand, `require` verifies the chain.
    let check = match (mode, &root_cert) {
        (Mode::VerifyFull, _) => Check::Full,
        (Mode::VerifyCa, _) | (Mode::Require, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            tls_config_error(
                "the TLS library refused its own defaults".to_owned(),
                Some(Box::new(e)),
            )
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(NoVerify(provider.clone())),
        Check::Chain | Check::Full => {
            let Some(path) = &root_cert else {
                return Err(tls_config_error(
                    "sslmode=verify-ca and verify-full need the certificate authority to check \
                     the server against: set sslrootcert (or PGSSLROOTCERT) to its PEM file, or \
                     put it at ~/.postgresql/root.crt"
                        .to_owned(),
                    None,
                ));
            };
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(read_roots(path)?), provider)
                    .build()
                    .map_err(|e| {
                        tls_config_error(
                            format!(
                                "the certificates in sslrootcert {} cannot verify servers",
                                path.display()
                            ),
                            Some(Box::new(e)),
                        )
                    })?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.cert, &settings.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
                .map_err(|e| {
                    tls_config_error(
                        format!(
                            "cannot read the client certificate sslcert {}",
                            cert.display()
                        ),
                        Some(Box::new(e)),
                    )
                })?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                tls_config_error(
                    format!("cannot read the client key sslkey {}", key.display()),
                    Some(Box::new(e)),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                tls_config_error(
                    "the client certificate and key do not match or are not usable".to_owned(),
                    Some(Box::new(e)),
                )
            })?
        }
        _ => {
            return Err(tls_config_error(
                "sslcert and sslkey go together: give both (PEM files) or neither".to_owned(),
                None,
            ));
        }
    };
    let client_mode = if mode == Mode::Prefer {
        SslMode::Prefer
    } else {
        SslMode::Require
    };
    Ok((Connector::Tls(MakeRustlsConnect::new(config)), client_mode))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// `prefer` and `require` without a root certificate: encrypt, verify nothing
/// (libpq's meaning), but still check the handshake's signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the host name is
/// not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether `err` (a connection error) is a TLS failure, and which.
pub(crate) fn failure(err: &PgError) -> Option<ErrorKind> {
    use std::error::Error as _;
    if err.to_string() != "error performing TLS handshake" {
        return None;
    }
    let mut source = err.source();
    while let Some(e) = source {
        // tokio-rustls wraps rustls' error in an io::Error, whose `source` skips it.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(_)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(ErrorKind::PermissionDenied);
            }
        }
        if e.to_string().contains("does not support TLS") {
            return Some(ErrorKind::Unsupported);
        }
        source = e.source();
    }
    None
}
