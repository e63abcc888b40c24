//! The one place PostgreSQL client errors become [`StorageError`]s.
//!
//! The SQLSTATE decides when the server answered; otherwise the shape of the
//! client error does (an I/O error underneath, a closed connection, a timeout).
//! The engine's error is always kept as the source, never flattened.

use std::error::Error as StdError;
use std::io;

use vgi_storage_core::{BoxError, ErrorKind, StorageError};

/// The client's error type.
pub(crate) type PgError = postgres::Error;

/// What a client error without a SQLSTATE is, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The connection went away or could not be used (I/O, closed, timeout,
    /// TLS, a garbled reply): the connection is done for.
    Lost,
    /// The request could not be encoded (a parameter too large for the
    /// protocol, say): found before anything was sent; the connection is fine.
    Encode { too_large: bool },
    /// Authentication failed.
    Auth,
    /// TLS was refused: the server's certificate failed verification (kind
    /// `PermissionDenied`) or the server offers no TLS (kind `Unsupported`).
    Tls(ErrorKind),
    /// The connection settings are invalid.
    Config,
    /// Anything else (a reply the client could not decode into our types).
    Other,
}

/// Sort a client error without a SQLSTATE. The client's own error kinds are
/// private; their messages are fixed strings, matched here.
fn client(err: &PgError) -> Client {
    let text = err.to_string();
    if text == "error encoding message to server" || text.starts_with("error serializing parameter")
    {
        // "value too large to transmit", from the protocol encoder (an I/O error
        // of kind InvalidInput) or from a type's serializer (a plain message).
        let too_large = io_source(err).is_some_and(|e| e.kind() == io::ErrorKind::InvalidInput)
            || sources(err).any(|e| e.to_string().contains("too large"));
        return Client::Encode { too_large };
    }
    if let Some(kind) = crate::tls::failure(err) {
        return Client::Tls(kind);
    }
    if err.is_closed() || io_source(err).is_some() {
        return Client::Lost;
    }
    match text.as_str() {
        "timeout waiting for server"
        | "error connecting to server"
        | "error communicating with the server"
        | "error performing TLS handshake"
        | "unexpected message from server"
        | "error parsing response from server" => Client::Lost,
        "authentication error" => Client::Auth,
        "invalid configuration" | "invalid connection string" => Client::Config,
        _ => Client::Other,
    }
}

/// What kind of failure a client error is.
pub(crate) fn kind_of(err: &PgError) -> ErrorKind {
    if let Some(state) = err.code() {
        return kind_of_sqlstate(state.code());
    }
    match client(err) {
        Client::Lost => ErrorKind::Unavailable,
        Client::Encode { too_large: true } => ErrorKind::TooLarge,
        Client::Encode { too_large: false } | Client::Config => ErrorKind::InvalidInput,
        Client::Auth => ErrorKind::PermissionDenied,
        Client::Tls(kind) => kind,
        Client::Other => ErrorKind::Other,
    }
}

/// Whether `err` is the connection going away (no answer from the server):
/// after a request was sent, its outcome is then unknown.
pub(crate) fn is_connection_loss(err: &PgError) -> bool {
    err.code().is_none() && client(err) == Client::Lost
}

/// Whether the connection that produced `err` can no longer be trusted.
///
/// Only connection errors count: a request refused before it was sent (an
/// encoding error) or a server error that ends only the statement leaves the
/// connection, and the pool, as they were.
pub(crate) fn breaks_connection(err: &PgError) -> bool {
    match err.code() {
        Some(state) => {
            let code = state.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => matches!(client(err), Client::Lost | Client::Other),
    }
}

fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => ErrorKind::Conflict,
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
        "57P01" | "57P02" | "57P03" | "53300" => ErrorKind::Unavailable,
        // lock_not_available, query_canceled (statement or lock timeout)
        "55P03" | "57014" => ErrorKind::Busy,
        // disk_full, out_of_memory
        "53100" | "53200" => ErrorKind::StorageFull,
        // insufficient_privilege, invalid_password, invalid_authorization_specification
        "42501" | "28P01" | "28000" => ErrorKind::PermissionDenied,
        // invalid_catalog_name: the database does not exist
        "3D000" => ErrorKind::NotFound,
        // read_only_sql_transaction (a standby or a read-only database)
        "25006" => ErrorKind::ReadOnly,
        // data_corrupted, index_corrupted
        "XX001" | "XX002" => ErrorKind::Corrupt,
        // connection_exception and its subclasses
        c if c.starts_with("08") => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

fn sources(err: &PgError) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(err.source(), |e: &&(dyn StdError + 'static)| (*e).source())
}

fn io_source(err: &PgError) -> Option<&io::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// What the caller can do about a failure of `kind`, in PostgreSQL's terms.
pub(crate) fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => {
            "the PostgreSQL server cannot be reached or closed the connection; retry the call"
        }
        ErrorKind::Conflict => "a concurrent transaction conflicted; retry the call",
        ErrorKind::Busy => "a lock or statement timed out on the server; retry the call",
        ErrorKind::PermissionDenied => {
            "the server refused the user, password or privilege; check the connection settings \
             and grants"
        }
        ErrorKind::NotFound => "the database does not exist; create it or fix the URL",
        ErrorKind::ReadOnly => "the server accepts no writes (a standby?); connect to the primary",
        ErrorKind::StorageFull => "the server ran out of disk or memory; free some and retry",
        ErrorKind::IncompatibleVersion => {
            "the schema was written by a newer vgi-storage-postgres; upgrade or use another schema"
        }
        other => vgi_storage_core::default_hint(other),
    }
}

/// The hint for `err` of `kind`: TLS refusals get their own.
fn hint_for(err: &PgError, kind: ErrorKind) -> &'static str {
    match (err.code(), client(err)) {
        (None, Client::Tls(ErrorKind::Unsupported)) => {
            "the server does not offer TLS, and sslmode requires it; enable ssl on the server, \
             or use sslmode=prefer or disable only on a trusted network"
        }
        (None, Client::Tls(_)) => {
            "the server's TLS certificate failed verification (an unknown certificate authority, \
             or, with sslmode=verify-full, a certificate not issued for this host name); check \
             sslrootcert and the host name in the connection string"
        }
        _ => hint(kind),
    }
}

/// An error of operation `operation` on store `store`.
pub(crate) fn operation(store: &str, operation: &'static str, err: PgError) -> StorageError {
    let kind = kind_of(&err);
    StorageError::operation(store, operation, kind, hint_for(&err, kind), err)
}

/// The connection was lost after `operation`'s request was sent: it may or may
/// not have taken effect. Not retryable; the hint says what is safe for this call.
pub(crate) fn outcome_unknown(store: &str, operation: &'static str, err: PgError) -> StorageError {
    let hint = match operation {
        "kv_put" | "kv_put_batch" | "kv_del" | "clear" | "gc" => {
            "the connection was lost after the request was sent, so the call may or may not have \
             taken effect; it is idempotent: repeating it is safe"
        }
        "append" | "append_batch" => {
            "the connection was lost after the request was sent, so the entries may or may not \
             have been appended; scan the log before appending again, or they may appear twice"
        }
        "queue_push" => {
            "the connection was lost after the request was sent, so the items may or may not have \
             been queued; repeating the push may queue them twice"
        }
        "queue_pop" => {
            "the connection was lost while the pop committed, so the item may have been removed \
             without reaching this caller; a pop lost before its commit leaves the item queued"
        }
        "kv_compare_and_swap" => {
            "the connection was lost while the swap committed, so it may or may not have taken \
             effect; read the value before deciding, as a repeat may answer false for a swap \
             the first attempt made"
        }
        _ => vgi_storage_core::default_hint(ErrorKind::OutcomeUnknown),
    };
    StorageError::operation(store, operation, ErrorKind::OutcomeUnknown, hint, err)
}

/// An error opening the store (connecting, creating the schema).
pub(crate) fn open(store: &str, location: &str, err: PgError) -> StorageError {
    let kind = kind_of(&err);
    let hint = hint_for(&err, kind);
    StorageError::open(store, location, kind, hint, Some(Box::new(err)))
}

/// An error opening the store with a kind and hint of our own.
pub(crate) fn open_with(
    store: &str,
    location: &str,
    kind: ErrorKind,
    hint: impl Into<String>,
    source: Option<BoxError>,
) -> StorageError {
    StorageError::open(store, location, kind, hint, source)
}

/// A pool with no free connection past the checkout timeout.
pub(crate) fn pool_exhausted(
    store: &str,
    operation: &'static str,
    waited_ms: u128,
) -> StorageError {
    StorageError::Operation {
        store: store.to_owned(),
        operation,
        kind: ErrorKind::Unavailable,
        hint: format!(
            "no pooled connection became free within {waited_ms} ms; retry the call, or raise \
             the pool size or checkout timeout"
        ),
        source: None,
    }
}

/// A request too large for one protocol message, refused before it was sent.
pub(crate) fn request_too_large(
    store: &str,
    operation: &'static str,
    len: usize,
    max: usize,
) -> StorageError {
    StorageError::Operation {
        store: store.to_owned(),
        operation,
        kind: ErrorKind::TooLarge,
        hint: format!(
            "the call's names and values come to {len} bytes, more than one request to the \
             server carries ({max} bytes); nothing was written: split the batch into smaller ones"
        ),
        source: None,
    }
}

/// A configuration problem found before connecting.
pub(crate) fn config(hint: impl Into<String>, source: Option<BoxError>) -> StorageError {
    StorageError::Config {
        store: "postgres".to_owned(),
        hint: hint.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_failures_and_connection_loss_are_retryable() {
        for code in ["40001", "40P01", "57P01", "08006", "08001", "53300"] {
            assert!(kind_of_sqlstate(code).is_retryable(), "{code}");
        }
        for code in ["42501", "28P01", "23505", "42P01"] {
            assert!(!kind_of_sqlstate(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn wrong_password_is_permission_denied() {
        assert_eq!(kind_of_sqlstate("28P01"), ErrorKind::PermissionDenied);
    }
}
