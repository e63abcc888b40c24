//! `vgi-storage`: inspect, clean up, export, import, copy and check a VGI
//! worker store, given as a URL the way `vgi_storage::open` takes it
//! (`sqlite:/path/state.db`, `redb:/path/state.redb`, `postgres://...`).
//!
//! Unix only, like the backends. Exit codes: see the README.

mod format;
mod transfer;

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vgi_storage::{
    FunctionStorage, ScopeInfo, ScopeStats, SharedStorage, StorageConfig, StorageError,
};

use crate::format::{FORMAT, Header, VERSION};
use crate::transfer::{COPY_MARKER, FileSink, StoreSink};

/// Exit code: the command failed (store error, I/O error, bad file).
const EXIT_FAILED: u8 = 1;
/// Exit code: `check` found problems.
const EXIT_PROBLEMS: u8 = 3;
/// Exit code: refused to act (non-empty target, no confirmation, interrupted copy).
const EXIT_REFUSED: u8 = 4;

/// Operate a vgi-storage store: inspect it, clean it up, back it up, move it.
#[derive(Parser)]
#[command(name = "vgi-storage", version)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Backend, location, capabilities and totals of a store.
    Info {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
    },
    /// List the scopes of a store with their size and last write.
    Scopes {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
        /// Order by total bytes (largest first), age (oldest first) or name.
        #[arg(long, value_enum, default_value_t = SortBy::Size)]
        sort: SortBy,
        /// Show at most this many scopes.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// What one scope holds: kv entries, logs, queue. SCOPE is UTF-8, or hex:... for raw bytes.
    Show {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
        /// The scope: its UTF-8 text, or hex:0a1b... for raw bytes
        scope: String,
    },
    /// Remove scopes whose last write is older than the ttl (e.g. 30s, 15m, 24h, 7d).
    Gc {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
        /// Scopes last written longer ago than this are removed: 30s, 15m, 24h, 7d
        #[arg(long, value_parser = parse_duration)]
        ttl: Duration,
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove everything of one scope. Asks first unless --yes.
    Clear {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
        /// The scope: its UTF-8 text, or hex:0a1b... for raw bytes
        scope: String,
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Write every scope of a store to FILE (vgi-storage-export v1, JSON lines).
    Export {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
        /// The export file to write (replaced if it exists)
        file: PathBuf,
    },
    /// Read FILE (written by export) into a store.
    Import {
        /// The export file to read
        file: PathBuf,
        /// The target store URL (created if it does not exist)
        url: String,
        /// Import even if the target already holds scopes.
        #[arg(long)]
        into_non_empty: bool,
        /// Clear every scope of a target left by an interrupted import or copy, then import again.
        #[arg(long)]
        restart: bool,
    },
    /// Copy every scope of one store into another (e.g. a reference file into sqlite, sqlite into postgres).
    Copy {
        /// The source store URL (must exist)
        from: String,
        /// The target store URL (created if it does not exist)
        to: String,
        /// Copy even if the target already holds scopes.
        #[arg(long, alias = "force")]
        into_non_empty: bool,
        /// Clear every scope of a target left by an interrupted import or copy, then copy again.
        #[arg(long)]
        restart: bool,
    },
    /// Run the engine's integrity check and the store's own invariants.
    Check {
        /// The store, e.g. sqlite:/path/state.db, redb:/path/state.redb, postgres://host/db
        url: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SortBy {
    Size,
    Age,
    Name,
}

/// Why the command stopped: one line, with the fix, and an exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn io(message: String) -> Self {
        Self {
            code: EXIT_FAILED,
            message,
        }
    }

    fn refused(message: String) -> Self {
        Self {
            code: EXIT_REFUSED,
            message,
        }
    }
}

/// A store error as one line: what the tool was doing, the error (which
/// names the store and the fix), and its causes.
#[allow(clippy::needless_pass_by_value)] // used as map_err(|e| ...) everywhere
pub(crate) fn storage_failure(what: &str, e: StorageError) -> Failure {
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let _ = write!(message, " (cause: {cause})");
        source = cause.source();
    }
    Failure::io(message.replace('\n', " "))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    match &cli.command {
        Command::Info { url } => info(cli, &open_existing(url)?),
        Command::Scopes { url, sort, limit } => scopes(cli, &open_existing(url)?, *sort, *limit),
        Command::Show { url, scope } => show(cli, &open_existing(url)?, &parse_scope(scope)?),
        Command::Gc { url, ttl, dry_run } => gc(cli, &open_existing(url)?, *ttl, *dry_run),
        Command::Clear { url, scope, yes } => {
            clear(&open_existing(url)?, &parse_scope(scope)?, *yes)
        }
        Command::Export { url, file } => export(cli, &open_existing(url)?, file),
        Command::Import {
            file,
            url,
            into_non_empty,
            restart,
        } => import(cli, file, url, *into_non_empty, *restart),
        Command::Copy {
            from,
            to,
            into_non_empty,
            restart,
        } => copy(cli, from, to, *into_non_empty, *restart),
        Command::Check { url } => check(cli, &open_existing(url)?),
    }
}

/// Open a store that must exist already (a file backend's file is not created).
fn open_existing(url: &str) -> Result<SharedStorage, Failure> {
    let config =
        StorageConfig::from_url(url).map_err(|e| storage_failure("reading the store URL", e))?;
    if let Some(path) = &config.path
        && !path.exists()
    {
        return Err(Failure::io(format!(
            "no store at {}; check the path in the URL {url}",
            path.display()
        )));
    }
    open(url)
}

fn open(url: &str) -> Result<SharedStorage, Failure> {
    let store = vgi_storage::open(url).map_err(|e| storage_failure("opening the store", e))?;
    if !store.capabilities().inspect {
        return Err(Failure::io(format!(
            "store {} does not implement inspection; this tool needs a backend that does",
            store.name()
        )));
    }
    Ok(store)
}

/// `hex:...` is raw bytes; anything else is the scope's UTF-8 bytes.
fn parse_scope(s: &str) -> Result<Vec<u8>, Failure> {
    let Some(hex) = s.strip_prefix("hex:") else {
        return Ok(s.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err(Failure::io(format!(
            "scope {s} has an odd number of hex digits; write two per byte"
        )));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Failure::io(format!(
                "scope {s} is not valid hex after hex:; use 0-9 and a-f"
            ))
        })
}

/// A scope as text: itself when printable UTF-8, else `hex:...`.
fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.starts_with("hex:") && !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!(
            "hex:{}",
            b.iter().fold(String::new(), |mut out, x| {
                let _ = write!(out, "{x:02x}");
                out
            })
        ),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 30s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in `{s}`; use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn age(stamp: Option<i64>) -> String {
    stamp.map_or_else(
        || "-".into(),
        |s| {
            let secs = (now_millis() - s).max(0) / 1000;
            match secs {
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m", secs / 60),
                3600..86_400 => format!("{}h", secs / 3600),
                _ => format!("{}d", secs / 86_400),
            }
        },
    )
}

/// Every scope of the store, page by page.
fn all_scopes(store: &dyn FunctionStorage) -> Result<Vec<ScopeInfo>, Failure> {
    let mut out: Vec<ScopeInfo> = Vec::new();
    loop {
        let after = out.last().map(|s| s.scope.clone());
        let page = store
            .list_scopes(after.as_deref(), 1024)
            .map_err(|e| storage_failure("listing scopes", e))?;
        let done = page.len() < 1024;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

fn all_stats(store: &dyn FunctionStorage) -> Result<Vec<ScopeStats>, Failure> {
    all_scopes(store)?
        .iter()
        .map(|s| {
            store
                .scope_stats(&s.scope)
                .map_err(|e| storage_failure("measuring a scope", e))
        })
        .collect()
}

fn print_json(value: &serde_json::Value) {
    println!("{value:#}");
}

fn info(cli: &Cli, store: &SharedStorage) -> Result<u8, Failure> {
    let caps = store.capabilities();
    let stats = all_stats(&**store)?;
    let high = store
        .id_high_water()
        .map_err(|e| storage_failure("reading the id mark", e))?;
    let total: u64 = stats.iter().map(ScopeStats::total_bytes).sum();
    let backend = store
        .name()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    if cli.json {
        print_json(&json!({
            "store": store.name(),
            "backend": backend,
            "capabilities": {
                "durable": caps.durable,
                "shared_across_processes": caps.shared_across_processes,
                "shared_across_hosts": caps.shared_across_hosts,
                "max_value_len": caps.max_value_len,
                "max_key_len": caps.max_key_len,
            },
            "scopes": stats.len(),
            "bytes": total,
            "id_high_water": high,
        }));
    } else {
        println!("store          {}", store.name());
        println!("backend        {backend}");
        println!(
            "capabilities   durable={} shared_across_processes={} shared_across_hosts={}",
            caps.durable, caps.shared_across_processes, caps.shared_across_hosts
        );
        println!("max value      {} bytes", caps.max_value_len);
        println!("scopes         {}", stats.len());
        println!("bytes          {total}");
        println!("id high-water  {high}");
    }
    Ok(0)
}

fn scopes(
    cli: &Cli,
    store: &SharedStorage,
    sort: SortBy,
    limit: Option<usize>,
) -> Result<u8, Failure> {
    let mut stats = all_stats(&**store)?;
    match sort {
        SortBy::Size => stats.sort_by_key(|s| std::cmp::Reverse(s.total_bytes())),
        SortBy::Age => stats.sort_by_key(|s| s.last_write_millis.unwrap_or(i64::MIN)),
        SortBy::Name => {}
    }
    stats.truncate(limit.unwrap_or(usize::MAX));
    if cli.json {
        let rows: Vec<_> = stats
            .iter()
            .map(|s| {
                json!({
                    "scope": show_bytes(&s.scope),
                    "last_write_millis": s.last_write_millis,
                    "bytes": s.total_bytes(),
                    "kv_entries": s.kv_entries,
                    "log_entries": s.logs.iter().map(|l| l.entries).sum::<u64>(),
                    "queue_depth": s.queue_depth,
                })
            })
            .collect();
        print_json(&json!(rows));
    } else {
        println!(
            "{:<40} {:>12} {:>8} {:>10} {:>8} {:>8}",
            "SCOPE", "BYTES", "KV", "LOG", "QUEUE", "AGE"
        );
        for s in &stats {
            println!(
                "{:<40} {:>12} {:>8} {:>10} {:>8} {:>8}",
                show_bytes(&s.scope),
                s.total_bytes(),
                s.kv_entries,
                s.logs.iter().map(|l| l.entries).sum::<u64>(),
                s.queue_depth,
                age(s.last_write_millis)
            );
        }
    }
    Ok(0)
}

fn show(cli: &Cli, store: &SharedStorage, scope: &[u8]) -> Result<u8, Failure> {
    let s = store
        .scope_stats(scope)
        .map_err(|e| storage_failure("measuring the scope", e))?;
    if cli.json {
        let logs: Vec<_> = s
            .logs
            .iter()
            .map(|l| {
                json!({
                    "ns": show_bytes(&l.ns), "key": show_bytes(&l.key), "entries": l.entries,
                    "bytes": l.bytes, "first_id": l.first_id, "last_id": l.last_id,
                })
            })
            .collect();
        print_json(&json!({
            "scope": show_bytes(&s.scope),
            "last_write_millis": s.last_write_millis,
            "kv_entries": s.kv_entries,
            "kv_bytes": s.kv_bytes,
            "logs": logs,
            "queue_depth": s.queue_depth,
            "queue_bytes": s.queue_bytes,
        }));
        return Ok(0);
    }
    println!("scope       {}", show_bytes(&s.scope));
    println!("last write  {} ago", age(s.last_write_millis));
    println!("kv          {} entries, {} bytes", s.kv_entries, s.kv_bytes);
    println!(
        "queue       {} items, {} bytes",
        s.queue_depth, s.queue_bytes
    );
    println!(
        "{:<24} {:<24} {:>8} {:>12} {:>10} {:>10}",
        "LOG NS", "KEY", "ENTRIES", "BYTES", "FIRST ID", "LAST ID"
    );
    for l in &s.logs {
        println!(
            "{:<24} {:<24} {:>8} {:>12} {:>10} {:>10}",
            show_bytes(&l.ns),
            show_bytes(&l.key),
            l.entries,
            l.bytes,
            l.first_id,
            l.last_id
        );
    }
    Ok(0)
}

fn gc(cli: &Cli, store: &SharedStorage, ttl: Duration, dry_run: bool) -> Result<u8, Failure> {
    let removed: Vec<Vec<u8>> = if dry_run {
        // By this host's clock: a store on a server's clock may differ a little.
        let cutoff = vgi_storage::gc_cutoff_millis(now_millis(), ttl);
        all_scopes(&**store)?
            .into_iter()
            .filter(|s| cutoff.is_some_and(|c| s.last_write_millis.is_some_and(|w| w < c)))
            .map(|s| s.scope)
            .collect()
    } else {
        store
            .gc(ttl)
            .map_err(|e| storage_failure("collecting stale scopes", e))?
            .scopes
    };
    if cli.json {
        print_json(&json!({
            "dry_run": dry_run,
            "scopes": removed.iter().map(|s| show_bytes(s)).collect::<Vec<_>>(),
        }));
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        println!("{verb} {} scopes", removed.len());
        for s in &removed {
            println!("  {}", show_bytes(s));
        }
    }
    Ok(0)
}

fn clear(store: &SharedStorage, scope: &[u8], yes: bool) -> Result<u8, Failure> {
    if !yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Failure::refused(
                "clear needs confirmation and stdin is not a terminal; pass --yes".into(),
            ));
        }
        eprint!(
            "remove everything of scope {} from {}? [y/N] ",
            show_bytes(scope),
            store.name()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Failure::io(format!("cannot read the answer: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::refused(
                "not confirmed; nothing was removed".into(),
            ));
        }
    }
    store
        .clear(scope)
        .map_err(|e| storage_failure("clearing the scope", e))?;
    eprintln!("cleared {}", show_bytes(scope));
    Ok(0)
}

fn progress(what: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {pos} records ({per_sec})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

fn header(store: &dyn FunctionStorage) -> Result<Header, Failure> {
    Ok(Header {
        format: FORMAT.into(),
        version: VERSION,
        source: store.name().to_owned(),
        id_high_water: store
            .id_high_water()
            .map_err(|e| storage_failure("reading the id mark", e))?,
    })
}

fn export(cli: &Cli, store: &SharedStorage, file: &std::path::Path) -> Result<u8, Failure> {
    let mut sink = FileSink::create(file, &header(&**store)?)?;
    let bar = progress("exporting");
    let count = transfer::export(&**store, &mut sink, &bar)?;
    sink.finish()?;
    bar.finish_and_clear();
    report(cli, "exported", count, 0);
    Ok(0)
}

fn report(cli: &Cli, verb: &str, records: u64, remapped: u64) {
    if cli.json {
        print_json(&json!({ "records": records, "remapped_log_ids": remapped }));
    } else {
        println!("{verb} {records} records");
        if remapped > 0 {
            println!("{remapped} log ids were remapped (the target had used them); order is kept");
        }
    }
}

/// Refuse a target that holds scopes, or a copy marker, unless asked.
fn check_target(
    target: &dyn FunctionStorage,
    into_non_empty: bool,
    restart: bool,
) -> Result<(), Failure> {
    let marker = target
        .scope_stats(COPY_MARKER)
        .map_err(|e| storage_failure("reading the target", e))?;
    if !marker.is_empty() {
        if !restart {
            return Err(Failure::refused(format!(
                "target {} holds an interrupted import or copy; rerun it with --restart (it clears the target first)",
                target.name()
            )));
        }
        for s in all_scopes(target)? {
            target
                .clear(&s.scope)
                .map_err(|e| storage_failure("clearing the target", e))?;
        }
    }
    let any = target
        .list_scopes(None, 1)
        .map_err(|e| storage_failure("reading the target", e))?;
    if !any.is_empty() && !into_non_empty {
        return Err(Failure::refused(format!(
            "target {} already holds scopes; pass --into-non-empty to merge into it",
            target.name()
        )));
    }
    Ok(())
}

fn import(
    cli: &Cli,
    file: &std::path::Path,
    url: &str,
    into_non_empty: bool,
    restart: bool,
) -> Result<u8, Failure> {
    // Check the whole file first, so a damaged file writes nothing.
    let header = transfer::read_file(file, None)?;
    let target = open(url)?;
    check_target(&*target, into_non_empty, restart)?;
    mark(&*target, &header.source)?;
    let bar = progress("importing");
    let mut sink = StoreSink::new(&*target, bar.clone());
    let mut count = 0u64;
    let mut each = |record| {
        count += 1;
        transfer::Sink::record(&mut sink, record)
    };
    transfer::read_file(file, Some(&mut each))?;
    sink.finish()?;
    finish(&*target, header.id_high_water)?;
    bar.finish_and_clear();
    report(cli, "imported", count, sink.remapped);
    Ok(0)
}

/// Mark `target` as holding an unfinished import or copy from `source`.
fn mark(target: &dyn FunctionStorage, source: &str) -> Result<(), Failure> {
    target
        .kv_put(COPY_MARKER, b"from", source.as_bytes())
        .map_err(|e| storage_failure("marking the target", e))
}

/// Raise the target's id mark to the source's and remove the mark: the
/// import or copy is complete.
fn finish(target: &dyn FunctionStorage, id_high_water: i64) -> Result<(), Failure> {
    target
        .raise_id_high_water(id_high_water)
        .map_err(|e| storage_failure("raising the id mark", e))?;
    target
        .clear(COPY_MARKER)
        .map_err(|e| storage_failure("unmarking the target", e))
}

fn copy(
    cli: &Cli,
    from: &str,
    to: &str,
    into_non_empty: bool,
    restart: bool,
) -> Result<u8, Failure> {
    let source = open_existing(from)?;
    let target = open(to)?;
    if source.name() == target.name() {
        return Err(Failure::refused(
            "source and target are the same store; pick another target".into(),
        ));
    }
    check_target(&*target, into_non_empty, restart)?;
    mark(&*target, source.name())?;
    let header = header(&*source)?;
    let bar = progress("copying");
    let mut sink = StoreSink::new(&*target, bar.clone());
    let count = transfer::export(&*source, &mut sink, &bar)?;
    sink.finish()?;
    finish(&*target, header.id_high_water)?;
    bar.finish_and_clear();
    report(cli, "copied", count, sink.remapped);
    Ok(0)
}

fn check(cli: &Cli, store: &SharedStorage) -> Result<u8, Failure> {
    let mut problems = store
        .check()
        .map_err(|e| storage_failure("checking the store", e))?;
    let high = store
        .id_high_water()
        .map_err(|e| storage_failure("reading the id mark", e))?;
    for s in all_stats(&**store)? {
        if s.scope == COPY_MARKER {
            problems.push(
                "the store holds an interrupted import or copy; rerun it with --restart".into(),
            );
        }
        for l in &s.logs {
            if l.last_id > high {
                problems.push(format!(
                    "log {}/{}/{} holds id {} above the id high-water mark {high}",
                    show_bytes(&s.scope),
                    show_bytes(&l.ns),
                    show_bytes(&l.key),
                    l.last_id
                ));
            }
        }
    }
    if cli.json {
        print_json(&json!({ "store": store.name(), "problems": problems }));
    } else if problems.is_empty() {
        println!("{}: ok", store.name());
    } else {
        for p in &problems {
            println!("{p}");
        }
    }
    Ok(if problems.is_empty() {
        0
    } else {
        EXIT_PROBLEMS
    })
}
