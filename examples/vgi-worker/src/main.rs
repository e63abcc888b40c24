//! Two vgi worker processes sharing state through one vgi-storage SQLite file.
//!
//! Run without arguments, the program is the driver: it makes a temporary
//! SQLite file and starts itself twice on it, first as the `sink` (the phase of
//! a buffering function that writes state), then as the `source` (the phase
//! that reads it back in another process), and checks what the source printed.
//! Each role builds a real `vgi::worker::Worker` and installs the store with
//! `Worker::set_storage`. The sink writes through the very handle the worker
//! holds, by the `vgi` storage trait's calls. The source first serves one real
//! `bind` request through the worker's RPC server (`RpcServer::serve_one`, the
//! Arrow IPC framing DuckDB uses): the bound table function reads the sink's
//! state from the storage the worker hands it. Then it reads the rest through
//! its handle. Last, it installs a store whose every call fails and serves two
//! more requests: the one that touches storage gets an error, the adapter's
//! panic message (the whole storage error) is on stderr, and the next request
//! is served, as `vgi`'s per-call panic isolation promises.

use std::collections::HashMap;
use std::error::Error;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use vgi::arguments::Arguments;
use vgi::function::{ArgSpec, BindParams, BindResponse, FunctionMetadata, ProcessParams};
use vgi::protocol::dtos::{BindRequest, BindResponse as BindResponseDto};
use vgi::storage::SharedStorage as VgiSharedStorage;
use vgi::table_function::{TableFunction, TableProducer};
use vgi::vgi_rpc::RpcServer;
use vgi::vgi_rpc::metadata::{
    LOG_LEVEL_KEY, LOG_MESSAGE_KEY, PROTOCOL_KEY, PROTOCOL_VERSION_KEY, REQUEST_VERSION,
    REQUEST_VERSION_KEY, RPC_METHOD_KEY,
};
use vgi::vgi_rpc::wire::{StreamReader, StreamWriter};
use vgi::vgi_rpc::{Bytes, DictString};
use vgi::worker::Worker;
use vgi::{RpcError, ipc, wire};
use vgi_storage::{
    Capabilities, ErrorKind, FunctionStorage, GcReport, LogEntry, StorageError, default_hint,
};
use vgi_storage_vgi::{RetryPolicy, VgiStorage};

type Res<T = ()> = Result<T, Box<dyn Error>>;

const EXEC: &[u8] = b"exec-42";

/// A worker with a vgi-storage SQLite store at `db` installed, and the handle it holds.
fn worker_on(db: &Path) -> Res<(Worker, VgiSharedStorage)> {
    let ours = vgi_storage::open(&format!("sqlite:{}", db.display()))?;
    let store = VgiStorage::new(ours).into_shared();
    let mut worker = Worker::new();
    worker.set_storage(store.clone());
    Ok((worker, store))
}

/// The sink phase: aggregate state, buffered batches and a scan's work queue.
fn sink(db: &Path) -> Res {
    let (worker, store) = worker_on(db)?;
    store.kv_put(EXEC, b"agg:0", &42_u64.to_le_bytes());
    let ids = store.append_many(
        EXEC,
        b"buf",
        b"",
        vec![b"batch-0".to_vec(), b"batch-1".to_vec()],
    );
    let last = store.append(EXEC, b"buf", b"", b"batch-2".to_vec());
    store.queue_push(EXEC, &[b"task-a".to_vec(), b"task-b".to_vec()]);
    let server = worker.build_server();
    println!(
        "sink pid {}: wrote agg:0, log ids {ids:?} then {last}, 2 tasks; worker serves {} methods",
        std::process::id(),
        server.methods().len()
    );
    Ok(())
}

/// The source phase, in another process: read back everything the sink wrote.
fn source(db: &Path) -> Res {
    let (mut worker, store) = worker_on(db)?;
    worker.register_table(STORED_STATE);
    let server = worker.build_server();
    println!(
        "bind stored_state through the worker: column {}",
        bind(&server, "stored_state")??
    );
    let agg = store.kv_get(EXEC, b"agg:0").ok_or("agg:0 missing")?;
    let agg = u64::from_le_bytes(agg.as_slice().try_into()?);
    println!("agg:0 = {agg}");
    let log = store.scan(EXEC, b"buf", b"", -1, usize::MAX);
    let ascending = log.windows(2).all(|w| w[0].0 < w[1].0);
    let batches: Vec<String> = log
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    println!("log = {batches:?}, ids ascending: {ascending}");
    while let Some(task) = store.queue_pop(EXEC) {
        println!("popped {}", String::from_utf8_lossy(&task));
    }
    println!("queue empty");
    store.clear(EXEC);
    println!("cleared: {}", store.kv_get(EXEC, b"agg:0").is_none());

    // The same worker on a store that fails: the adapter panics (after logging
    // the whole error to stderr), vgi's RPC layer answers that one call with an
    // error, and the worker serves the next call.
    let broken = VgiStorage::new(Arc::new(Broken)).with_policy(RetryPolicy::NO_RETRY);
    let mut worker = Worker::new();
    worker.set_storage(broken.into_shared());
    worker.register_table(STORED_STATE);
    worker.register_table(CONSTANT);
    let server = worker.build_server();
    match bind(&server, "stored_state")? {
        Ok(column) => return Err(format!("a broken store answered: column {column}").into()),
        Err(message) => println!("on a broken store, bind stored_state fails: {message}"),
    }
    println!(
        "and the same worker serves the next call: column {}",
        bind(&server, "constant")??
    );
    Ok(())
}

/// A table function that names its one output column after the aggregate
/// state of the scope it is given, read at bind from the storage the worker
/// hands it (`BindParams::storage`, the store installed by `set_storage`); or,
/// when `reads_storage` is off, a column named after itself.
struct Probe {
    name: &'static str,
    reads_storage: bool,
}

const STORED_STATE: Probe = Probe {
    name: "stored_state",
    reads_storage: true,
};
const CONSTANT: Probe = Probe {
    name: "constant",
    reads_storage: false,
};

impl TableFunction for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn metadata(&self) -> FunctionMetadata {
        FunctionMetadata::default()
    }
    fn argument_specs(&self) -> Vec<ArgSpec> {
        vec![ArgSpec::const_arg(
            "scope",
            0,
            "varchar",
            "the execution whose state to read",
        )]
    }
    fn on_bind(&self, params: &BindParams) -> vgi::Result<BindResponse> {
        let column = if self.reads_storage {
            let store = params
                .storage
                .as_ref()
                .ok_or_else(|| RpcError::runtime_error("the worker passed no storage to bind"))?;
            let scope = params
                .arguments
                .const_str(0)
                .ok_or_else(|| RpcError::runtime_error("stored_state takes a scope"))?;
            let agg = store
                .kv_get(scope.as_bytes(), b"agg:0")
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            format!("agg_{agg}")
        } else {
            self.name.to_owned()
        };
        Ok(BindResponse {
            output_schema: Arc::new(Schema::new(vec![Field::new(column, DataType::Int64, true)])),
            opaque_data: Vec::new(),
        })
    }
    fn producer(&self, _params: &ProcessParams) -> vgi::Result<Box<dyn TableProducer>> {
        Err(RpcError::runtime_error("this example only binds"))
    }
}

/// A store whose every call fails with a permanent error, to show what a
/// worker does when storage breaks.
struct Broken;

impl Broken {
    fn fail<T>(operation: &'static str) -> vgi_storage::Result<T> {
        Err(StorageError::operation(
            "broken:example",
            operation,
            ErrorKind::Corrupt,
            default_hint(ErrorKind::Corrupt),
            std::io::Error::other("every call of this store fails"),
        ))
    }
}

impl FunctionStorage for Broken {
    fn name(&self) -> &str {
        "broken:example"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn kv_get(&self, _: &[u8], _: &[u8]) -> vgi_storage::Result<Option<Vec<u8>>> {
        Self::fail("kv_get")
    }
    fn kv_put(&self, _: &[u8], _: &[u8], _: &[u8]) -> vgi_storage::Result<()> {
        Self::fail("kv_put")
    }
    fn kv_del(&self, _: &[u8], _: &[u8]) -> vgi_storage::Result<()> {
        Self::fail("kv_del")
    }
    fn kv_compare_and_swap(
        &self,
        _: &[u8],
        _: &[u8],
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> vgi_storage::Result<bool> {
        Self::fail("kv_compare_and_swap")
    }
    fn append(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> vgi_storage::Result<i64> {
        Self::fail("append")
    }
    fn scan(
        &self,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: i64,
        _: usize,
    ) -> vgi_storage::Result<Vec<LogEntry>> {
        Self::fail("scan")
    }
    fn queue_push(&self, _: &[u8], _: &[Vec<u8>]) -> vgi_storage::Result<()> {
        Self::fail("queue_push")
    }
    fn queue_pop(&self, _: &[u8]) -> vgi_storage::Result<Option<Vec<u8>>> {
        Self::fail("queue_pop")
    }
    fn clear(&self, _: &[u8]) -> vgi_storage::Result<()> {
        Self::fail("clear")
    }
    fn gc(&self, _: Duration) -> vgi_storage::Result<GcReport> {
        Self::fail("gc")
    }
}

/// Serve one real `bind` request for `function` (with the scope as its
/// argument) through the worker's RPC server, framed as DuckDB sends it.
/// Returns the output column's name, or the error the worker answered.
fn bind(server: &RpcServer, function: &str) -> Res<Result<String, String>> {
    let bind = BindRequest {
        function_name: function.to_owned(),
        arguments: Bytes::from(Arguments::serialize_positional(&[
            Arc::new(StringArray::from(vec![
                String::from_utf8_lossy(EXEC).into_owned(),
            ])) as ArrayRef,
        ])?),
        function_type: DictString("TABLE".to_owned()),
        input_schema: None,
        settings: None,
        secrets: None,
        attach_opaque_data: None,
        transaction_opaque_data: None,
        resolved_secrets_provided: false,
        at_unit: None,
        at_value: None,
        copy_from: None,
        copy_to: None,
        schema_path: Some(vec![vgi::catalog::MAIN_SCHEMA.to_owned()]),
        argument_names: Some(vec![Some("scope".to_owned())]),
    };
    let inner = ipc::write_batch(&wire::to_batch(bind)?)?;
    let request = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "request",
            DataType::Binary,
            false,
        )])),
        vec![Arc::new(BinaryArray::from(vec![inner.as_slice()])) as ArrayRef],
    )?;
    let metadata = HashMap::from([
        (RPC_METHOD_KEY.to_owned(), "bind".to_owned()),
        (REQUEST_VERSION_KEY.to_owned(), REQUEST_VERSION.to_owned()),
        (PROTOCOL_KEY.to_owned(), vgi::VGI_PROTOCOL_NAME.to_owned()),
        (
            PROTOCOL_VERSION_KEY.to_owned(),
            vgi::VGI_PROTOCOL_VERSION.to_owned(),
        ),
    ]);
    let mut body = Vec::new();
    let mut writer = StreamWriter::new(&mut body, request.schema().as_ref())?;
    writer.write(&request, Some(&metadata))?;
    writer.finish()?;
    drop(writer);

    let mut reply = Vec::new();
    server.serve_one(&mut Cursor::new(body), &mut reply)?;

    let mut reader = StreamReader::new(Cursor::new(reply))?;
    while let Some((batch, metadata)) = reader.read_next()? {
        if metadata.get(LOG_LEVEL_KEY).map(String::as_str) == Some("EXCEPTION") {
            return Ok(Err(metadata
                .get(LOG_MESSAGE_KEY)
                .cloned()
                .unwrap_or_default()));
        }
        let Some(result) = batch.column_by_name("result") else {
            continue;
        };
        let bytes = result
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or("the bind result is not binary")?;
        let response: BindResponseDto = wire::from_batch(&ipc::read_batch(bytes.value(0))?)?;
        let schema = ipc::read_schema(&response.output_schema.0)?;
        return Ok(Ok(schema.field(0).name().clone()));
    }
    Err("the worker sent no bind result".into())
}

const EXPECTED: &str = "bind stored_state through the worker: column agg_42
agg:0 = 42
log = [\"batch-0\", \"batch-1\", \"batch-2\"], ids ascending: true
popped task-a
popped task-b
queue empty
cleared: true
on a broken store, bind stored_state fails: handler panicked
and the same worker serves the next call: column constant
";

/// What the source's stderr must hold: the adapter's panic message, with the
/// store's error and its source, where the operator reads it.
const EXPECTED_IN_STDERR: &str =
    "vgi-storage: kv_get on store broken:example failed after 1 attempt";

/// Run this program as `role` on `db`; its stdout and stderr.
fn run_role(role: &str, db: &Path) -> Res<(String, String)> {
    let out = Command::new(std::env::current_exe()?)
        .arg(role)
        .arg(db)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("{role} process failed ({}): {stderr}", out.status).into());
    }
    Ok((String::from_utf8(out.stdout)?, stderr))
}

fn drive() -> Res {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    print!("{}", run_role("sink", &db)?.0);
    let (read, stderr) = run_role("source", &db)?;
    print!("{read}");
    if read != EXPECTED {
        return Err(format!("the source process read\n{read}\nexpected\n{EXPECTED}").into());
    }
    if !stderr.contains(EXPECTED_IN_STDERR) {
        return Err(format!("the source's stderr lacks the storage error:\n{stderr}").into());
    }
    println!("vgi worker example: ok (vgi 0.48, two processes, one SQLite file)");
    Ok(())
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (None, _) => drive(),
        (Some("sink"), Some(db)) => sink(Path::new(db)),
        (Some("source"), Some(db)) => source(Path::new(db)),
        _ => Err("usage: vgi-worker-example [sink|source <db>]".into()),
    }
}
