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
//! its handle.

use std::collections::HashMap;
use std::error::Error;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use vgi::arguments::Arguments;
use vgi::function::{ArgSpec, BindParams, BindResponse, FunctionMetadata, ProcessParams};
use vgi::protocol::dtos::{BindRequest, BindResponse as BindResponseDto};
use vgi::storage::SharedStorage as VgiSharedStorage;
use vgi::table_function::{TableFunction, TableProducer};
use vgi::vgi_rpc::metadata::{
    LOG_LEVEL_KEY, LOG_MESSAGE_KEY, PROTOCOL_KEY, PROTOCOL_VERSION_KEY, REQUEST_VERSION,
    REQUEST_VERSION_KEY, RPC_METHOD_KEY,
};
use vgi::vgi_rpc::wire::{StreamReader, StreamWriter};
use vgi::vgi_rpc::{Bytes, DictString};
use vgi::worker::Worker;
use vgi::{RpcError, ipc, wire};
use vgi_storage_vgi::VgiStorage;

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
    worker.register_table(StoredState);
    println!(
        "bind stored_state through the worker: column {}",
        bind_through_the_worker(worker)?
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
    Ok(())
}

/// A table function whose bind reads the state the sink wrote, through the
/// storage the worker hands it (`BindParams::storage`, the store installed by
/// `set_storage`), and names its one output column after it.
struct StoredState;

impl TableFunction for StoredState {
    fn name(&self) -> &str {
        "stored_state"
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
        Ok(BindResponse {
            output_schema: Arc::new(Schema::new(vec![Field::new(
                format!("agg_{agg}"),
                DataType::Int64,
                true,
            )])),
            opaque_data: Vec::new(),
        })
    }
    fn producer(&self, _params: &ProcessParams) -> vgi::Result<Box<dyn TableProducer>> {
        Err(RpcError::runtime_error(
            "stored_state is only bound in this example",
        ))
    }
}

/// Serve one real `bind` request for `stored_state` through the worker's RPC
/// server, as DuckDB would send it, and return the output column's name.
fn bind_through_the_worker(worker: Worker) -> Res<String> {
    let bind = BindRequest {
        function_name: "stored_state".to_owned(),
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

    let server = worker.build_server();
    let mut reply = Vec::new();
    server.serve_one(&mut Cursor::new(body), &mut reply)?;

    let mut reader = StreamReader::new(Cursor::new(reply))?;
    while let Some((batch, metadata)) = reader.read_next()? {
        if metadata.get(LOG_LEVEL_KEY).map(String::as_str) == Some("EXCEPTION") {
            let message = metadata.get(LOG_MESSAGE_KEY).cloned().unwrap_or_default();
            return Err(format!("bind failed: {message}").into());
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
        return Ok(schema.field(0).name().clone());
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
";

fn run_role(role: &str, db: &Path) -> Res<String> {
    let out = Command::new(std::env::current_exe()?)
        .arg(role)
        .arg(db)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{role} process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn drive() -> Res {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    print!("{}", run_role("sink", &db)?);
    let read = run_role("source", &db)?;
    print!("{read}");
    if read != EXPECTED {
        return Err(format!("the source process read\n{read}\nexpected\n{EXPECTED}").into());
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
