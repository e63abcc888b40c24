//! Connection settings: URL and libpq environment parsing, and the builder.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use vgi_storage_core::{Result, SharedClock};

use crate::error;
use crate::store::PostgresStorage;
use crate::tls;

/// The schema the store's tables live in when none is given.
pub const DEFAULT_SCHEMA: &str = "vgi_storage";
/// How many connections a store opens at most, when not set.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a call waits for a free pooled connection, when not set.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening one connection may take, when neither the URL nor the builder says.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a store's connection settings come from; see [`PostgresStorage::builder`].
///
/// Built with `From`: a `&str`/`String` is a connection string (a
/// `postgres://user@host:port/db?...` URL or libpq `key=value` pairs), a
/// [`postgres::Config`] is used as given.
pub enum PostgresSource {
    /// A connection string, parsed when the store connects.
    Url(String),
    /// Ready-made client settings.
    Config(Box<postgres::Config>),
    /// The libpq environment variables (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`).
    Env,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL may carry a password: never print it.
        match self {
            Self::Url(_) => f.write_str("Url(<redacted>)"),
            Self::Config(c) => f.debug_tuple("Config").field(&describe(c, "")).finish(),
            Self::Env => f.write_str("Env"),
        }
    }
}

impl From<&str> for PostgresSource {
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

impl From<String> for PostgresSource {
    fn from(url: String) -> Self {
        Self::Url(url)
    }
}

impl From<&String> for PostgresSource {
    fn from(url: &String) -> Self {
        Self::Url(url.clone())
    }
}

impl From<postgres::Config> for PostgresSource {
    fn from(config: postgres::Config) -> Self {
        Self::Config(Box::new(config))
    }
}

/// Settings for a [`PostgresStorage`], from [`PostgresStorage::builder`].
///
/// `Debug` never shows the password.
pub struct PostgresBuilder {
    pub(crate) source: PostgresSource,
    pub(crate) schema: Option<String>,
    pub(crate) pool_size: usize,
    pub(crate) checkout_timeout: Duration,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) clock: Option<SharedClock>,
    pub(crate) max_value_len: usize,
    pub(crate) max_request_len: usize,
}

impl fmt::Debug for PostgresBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBuilder")
            .field("source", &self.source)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("clock", &self.clock)
            .field("max_value_len", &self.max_value_len)
            .field("max_request_len", &self.max_request_len)
            .finish()
    }
}

impl PostgresBuilder {
    pub(crate) fn new(source: PostgresSource) -> Self {
        Self {
            source,
            schema: None,
            pool_size: DEFAULT_POOL_SIZE,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            connect_timeout: None,
            clock: None,
            max_value_len: crate::MAX_VALUE_LEN,
            max_request_len: crate::MAX_REQUEST_LEN,
        }
    }

    /// The schema to keep the store's tables in (default `vgi_storage`, or the
    /// URL's `schema=` parameter). It must be a plain identifier: ASCII letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the store opens (default 8; 0 is treated as 1).
    /// Connections are opened on demand and kept for reuse.
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long a call waits for a free connection before it fails with
    /// [`ErrorKind::Unavailable`](vgi_storage_core::ErrorKind::Unavailable) (default 30 s).
    #[must_use]
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// How long opening one connection may take (default: the URL's
    /// `connect_timeout`, else 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// For tests only: stamp writes and date `gc` with `clock` instead of the
    /// server's clock.
    ///
    /// By default the server's clock does both, so every host of a fleet agrees
    /// on what is stale: with host clocks, one host whose clock runs a day ahead
    /// would sweep the whole fleet's fresh state. A test clock lets a test move
    /// time (the conformance suite's `gc` checks do); every store on the schema
    /// must then use the same one.
    #[must_use]
    pub fn test_clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The largest value the store accepts, in bytes; [`crate::MAX_VALUE_LEN`] by
    /// default, and never more. A larger value is refused with
    /// [`vgi_storage_core::ErrorKind::TooLarge`] before it is sent to the server.
    #[must_use]
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes.min(crate::MAX_VALUE_LEN);
        self
    }

    /// The largest request one call sends, in bytes: the sum of its names and
    /// values (a batch's included); [`crate::MAX_REQUEST_LEN`] by default, and
    /// never more, since the server refuses protocol messages of 1 GiB. A
    /// larger call is refused with [`vgi_storage_core::ErrorKind::TooLarge`]
    /// before anything is sent: split the batch.
    #[must_use]
    pub fn max_request_len(mut self, bytes: usize) -> Self {
        self.max_request_len = bytes.min(crate::MAX_REQUEST_LEN);
        self
    }

    /// Connect, create or check the schema, and return the store.
    pub fn connect(self) -> Result<PostgresStorage> {
        PostgresStorage::open(self)
    }

    /// The client settings, schema and TLS settings this builder resolves to.
    pub(crate) fn resolve(&self) -> Result<(postgres::Config, String, tls::Settings)> {
        let env = EnvVars::process();
        let (mut config, url_schema, tls) = match &self.source {
            PostgresSource::Url(url) => parse_url(url, &env)?,
            PostgresSource::Config(c) => {
                // A ready-made config says only disable, prefer or require.
                let mode = match c.get_ssl_mode() {
                    SslMode::Disable => tls::Mode::Disable,
                    SslMode::Require => tls::Mode::Require,
                    _ => tls::Mode::Prefer,
                };
                let settings = tls::Settings {
                    mode: Some(mode),
                    ..tls::Settings::default()
                };
                ((**c).clone(), None, settings)
            }
            PostgresSource::Env => (config_from_env(&env)?, None, env.tls()?),
        };
        if let Some(t) = self.connect_timeout {
            config.connect_timeout(t);
        } else if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_hosts().is_empty() {
            default_host(&mut config);
        }
        // CREATE ... IF NOT EXISTS sends notices; the client would log each one.
        config.notice_callback(|_| {});
        let schema = self
            .schema
            .clone()
            .or(url_schema)
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        validate_schema(&schema)?;
        Ok((config, schema, tls))
    }
}

/// The libpq variables, read once, so parsing can be tested without touching the environment.
#[derive(Default)]
pub(crate) struct EnvVars {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    appname: Option<String>,
    connect_timeout: Option<String>,
}

impl EnvVars {
    /// The TLS settings of `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`.
    fn tls(&self) -> Result<tls::Settings> {
        let mut settings = tls::Settings::default();
        for (key, value) in [
            ("sslmode", &self.sslmode),
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ] {
            if let Some(value) = value {
                settings.take(key, value)?;
            }
        }
        Ok(settings)
    }

    fn process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            host: var("PGHOST"),
            port: var("PGPORT"),
            user: var("PGUSER"),
            password: var("PGPASSWORD"),
            dbname: var("PGDATABASE"),
            sslmode: var("PGSSLMODE"),
            sslrootcert: var("PGSSLROOTCERT"),
            sslcert: var("PGSSLCERT"),
            sslkey: var("PGSSLKEY"),
            appname: var("PGAPPNAME"),
            connect_timeout: var("PGCONNECT_TIMEOUT"),
        }
    }
}

/// Parse a connection string: a `postgres://` / `postgresql://` URL or libpq
/// `key=value` pairs. Our own `schema=NAME` URL parameter is taken out first;
/// settings the string leaves out come from the libpq variables, as libpq does.
pub(crate) fn parse_url(
    url: &str,
    env: &EnvVars,
) -> Result<(postgres::Config, Option<String>, tls::Settings)> {
    let mut schema = None;
    let mut tls = tls::Settings::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    // Ours (schema) and the TLS settings, which the client does not know in
    // full (verify-ca, verify-full, sslrootcert, sslcert, sslkey), are taken
    // out; the rest goes to the client.
    let cleaned = if is_url {
        match url.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_decoded(value);
                    if key == "schema" {
                        schema = Some(value);
                    } else if !tls.take(key, &value)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(url)? {
            if !tls.take(&key, &value)? {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    // The parse error never contains the string itself, so the password stays out of it.
    let mut config = postgres::Config::from_str(&cleaned).map_err(|e| {
        error::config(
            "the connection string is not a valid postgres:// URL or key=value list",
            Some(Box::new(e)),
        )
    })?;
    fill_from_env(&mut config, env)?;
    Ok((config, schema, tls.or(env.tls()?)))
}

/// `%XX` escapes decoded; text that does not decode is kept as it is (the
/// client reports it).
fn percent_decoded(s: &str) -> String {
    String::from_utf8(vgi_storage_core::percent_decode(s)).unwrap_or_else(|_| s.to_owned())
}

/// libpq `key = value` pairs: values bare or single-quoted, `\` escaping.
fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    let bad = || {
        error::config(
            "the connection string is not a valid postgres:// URL or key=value list",
            None,
        )
    };
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// Settings entirely from the libpq variables.
pub(crate) fn config_from_env(env: &EnvVars) -> Result<postgres::Config> {
    let mut config = postgres::Config::new();
    fill_from_env(&mut config, env)?;
    Ok(config)
}

fn fill_from_env(config: &mut postgres::Config, env: &EnvVars) -> Result<()> {
    if config.get_hosts().is_empty()
        && let Some(hosts) = &env.host
    {
        for host in hosts.split(',') {
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = &env.port
    {
        let port = port.parse::<u16>().map_err(|e| {
            error::config("PGPORT is not a port number (1-65535)", Some(Box::new(e)))
        })?;
        config.port(port);
    }
    if config.get_user().is_none()
        && let Some(user) = &env.user
    {
        config.user(user);
    }
    if config.get_password().is_none()
        && let Some(password) = &env.password
    {
        config.password(password);
    }
    if config.get_dbname().is_none()
        && let Some(dbname) = &env.dbname
    {
        config.dbname(dbname);
    }
    if config.get_application_name().is_none() {
        config.application_name(env.appname.as_deref().unwrap_or("vgi-storage"));
    }
    if config.get_connect_timeout().is_none()
        && let Some(secs) = env.connect_timeout.as_deref().and_then(|s| s.parse().ok())
    {
        config.connect_timeout(Duration::from_secs(secs));
    }
    Ok(())
}

/// libpq's default: the local socket directory when there is one, else localhost.
fn default_host(config: &mut postgres::Config) {
    match ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).is_dir() && has_socket(d))
    {
        Some(dir) => config.host_path(dir),
        None => config.host("localhost"),
    };
}

fn has_socket(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(std::result::Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(".s.PGSQL."))
    })
}

/// Refuse anything but a plain identifier, so it can be quoted safely and is not truncated.
pub(crate) fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(error::config(
            format!(
                "schema name {schema:?} is not a plain identifier: use ASCII letters, digits and \
                 _, start with a letter or _, not pg_, at most 63 bytes"
            ),
            None,
        ))
    }
}

/// `postgres://user@host:port/db?schema=...`, without the password: the store's name.
pub(crate) fn describe(config: &postgres::Config, schema: &str) -> String {
    let user = config.get_user().unwrap_or("");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("[{}]:{port}", path.display()),
            }
        })
        .collect();
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() { "" } else { "@" };
    let mut out = format!("postgres://{user}{at}{}/{db}", hosts.join(","));
    if !schema.is_empty() {
        out.push_str("?schema=");
        out.push_str(schema);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_schema_parameter_is_ours_and_the_rest_goes_to_the_client() -> Result<()> {
        let (config, schema, _) = parse_url(
            "postgres://alice:s3cret@db.example:6543/app?schema=jobs&application_name=w",
            &EnvVars::default(),
        )?;
        assert_eq!(schema.as_deref(), Some("jobs"));
        assert_eq!(config.get_user(), Some("alice"));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(config.get_ports(), &[6543]);
        assert_eq!(config.get_application_name(), Some("w"));
        let name = describe(&config, "jobs");
        assert_eq!(name, "postgres://alice@db.example:6543/app?schema=jobs");
        Ok(())
    }

    #[test]
    fn tls_settings_are_taken_from_urls_key_values_and_the_environment() -> Result<()> {
        let (config, _, tls) = parse_url(
            "postgres://u:pw@h/db?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.pem\
             &sslcert=/c.pem&sslkey=/k.pem&application_name=w",
            &EnvVars::default(),
        )?;
        assert_eq!(tls.mode, Some(tls::Mode::VerifyFull));
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(Path::new("/ca dir/root.pem"))
        );
        assert_eq!(tls.cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(tls.key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(config.get_application_name(), Some("w"));
        let (config, _, tls) = parse_url(
            "host=h user=u password='p w' sslmode = verify-ca sslrootcert='/r o.pem'",
            &EnvVars::default(),
        )?;
        assert_eq!(tls.mode, Some(tls::Mode::VerifyCa));
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/r o.pem")));
        assert_eq!(config.get_password(), Some(&b"p w"[..]));
        let env = EnvVars {
            sslmode: Some("require".into()),
            sslrootcert: Some("/env.pem".into()),
            ..EnvVars::default()
        };
        let (_, _, tls) = parse_url("postgres://u@h/db?sslmode=disable", &env)?;
        assert_eq!(tls.mode, Some(tls::Mode::Disable), "the URL wins");
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/env.pem")));
        assert!(parse_url("postgres://u@h/db?sslmode=sometimes", &EnvVars::default()).is_err());
        Ok(())
    }

    #[test]
    fn missing_parts_come_from_the_libpq_variables() -> Result<()> {
        let env = EnvVars {
            host: Some("/run/pg".into()),
            port: Some("5433".into()),
            user: Some("bob".into()),
            password: Some("hunter2".into()),
            dbname: Some("work".into()),
            ..EnvVars::default()
        };
        let (config, _, _) = parse_url("postgres://carol@/other", &env)?;
        assert_eq!(config.get_user(), Some("carol"));
        assert_eq!(config.get_dbname(), Some("other"));
        assert_eq!(config.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(config.get_ports(), &[5433]);
        let config = config_from_env(&env)?;
        assert_eq!(describe(&config, ""), "postgres://bob@[/run/pg]:5433/work");
        Ok(())
    }

    #[test]
    fn bad_url_error_does_not_echo_the_password() {
        let err = parse_url("postgres://u:topsecret@h:notaport/db", &EnvVars::default()).err();
        let text = err.map(|e| format!("{e} {e:?}")).unwrap_or_default();
        assert!(!text.is_empty() && !text.contains("topsecret"), "{text}");
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let builder = PostgresBuilder::new("postgres://u:topsecret@h/db".into());
        let text = format!("{builder:?}");
        assert!(!text.contains("topsecret"), "{text}");
        let mut config = postgres::Config::new();
        config.host("h").user("u").password("topsecret");
        let text = format!("{:?}", PostgresBuilder::new(config.into()));
        assert!(
            !text.contains("topsecret") && text.contains("postgres://u@h"),
            "{text}"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("vgi_storage").is_ok());
        assert!(validate_schema("_x1").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", "pg_temp", &"x".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
