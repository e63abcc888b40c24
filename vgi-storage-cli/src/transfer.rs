//! Export, import and copy: the exporter writes records to a [`Sink`]: a file
//! (`export`) or another store (`import`, `copy`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use indicatif::ProgressBar;
use vgi_storage::{FunctionStorage, LogEntry, LogRecord};

use crate::format::{B64, FORMAT, Fnv, Header, Record, VERSION};
use crate::{Failure, storage_failure};

/// Records read or written per store call.
const PAGE: usize = 512;

/// The scope a `copy` marks its target with while it runs.
pub(crate) const COPY_MARKER: &[u8] = b"vgi-storage:copy-in-progress";

/// Where exported records go.
pub(crate) trait Sink {
    fn record(&mut self, record: Record) -> Result<(), Failure>;
}

/// Kv entries batched for one scope.
type KvBatch = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Stream every scope of `store` to `sink`: scope by scope (its kv entries,
/// then its queue), then every log entry of the store in ascending id order,
/// so an import into an empty store can keep every id. Returns the records
/// written (the `end` record excluded).
#[allow(clippy::too_many_lines)] // one pass over scopes, then the merge; splitting hides the order
pub(crate) fn export(
    store: &dyn FunctionStorage,
    sink: &mut dyn Sink,
    progress: &ProgressBar,
) -> Result<u64, Failure> {
    let err = |what: &'static str| move |e| storage_failure(what, e);
    let mut count = 0u64;
    let mut logs: Vec<LogCursor> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .list_scopes(after.as_deref(), PAGE)
            .map_err(err("listing scopes"))?;
        let done = page.len() < PAGE;
        for info in page {
            after = Some(info.scope.clone());
            if info.scope == COPY_MARKER {
                continue;
            }
            let scope = info.scope;
            sink.record(Record::Scope {
                scope: B64(scope.clone()),
                last_write_millis: info.last_write_millis,
            })?;
            count += 1;
            let mut key: Option<Vec<u8>> = None;
            loop {
                let kv = store
                    .export_kv(&scope, key.as_deref(), PAGE)
                    .map_err(err("exporting kv entries"))?;
                let last = kv.len() < PAGE;
                for (k, v) in kv {
                    key = Some(k.clone());
                    sink.record(Record::Kv {
                        scope: B64(scope.clone()),
                        key: B64(k),
                        value: B64(v),
                    })?;
                    count += 1;
                }
                progress.set_position(count);
                if last {
                    break;
                }
            }
            let mut skip = 0u64;
            loop {
                let items = store
                    .export_queue(&scope, skip, PAGE)
                    .map_err(err("exporting a queue"))?;
                let last = items.len() < PAGE;
                skip += items.len() as u64;
                for item in items {
                    sink.record(Record::Queue {
                        scope: B64(scope.clone()),
                        item: B64(item),
                    })?;
                    count += 1;
                }
                progress.set_position(count);
                if last {
                    break;
                }
            }
            let stats = store
                .scope_stats(&scope)
                .map_err(err("measuring a scope"))?;
            logs.extend(stats.logs.into_iter().map(|log| LogCursor {
                scope: scope.clone(),
                ns: log.ns,
                key: log.key,
                after: -1,
                buffer: VecDeque::new(),
                done: false,
            }));
        }
        if done {
            break;
        }
    }
    // Merge the logs by id: one page of each in memory at a time.
    let mut heap = BinaryHeap::new();
    for (i, cursor) in logs.iter_mut().enumerate() {
        if let Some(id) = cursor.peek(store)? {
            heap.push(Reverse((id, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let cursor = &mut logs[i];
        let Some(entry) = cursor.buffer.pop_front() else {
            continue;
        };
        sink.record(Record::Log {
            scope: B64(cursor.scope.clone()),
            ns: B64(cursor.ns.clone()),
            key: B64(cursor.key.clone()),
            id: entry.id,
            value: B64(entry.value),
        })?;
        count += 1;
        if count.is_multiple_of(PAGE as u64) {
            progress.set_position(count);
        }
        if let Some(id) = cursor.peek(store)? {
            heap.push(Reverse((id, i)));
        }
    }
    progress.set_position(count);
    Ok(count)
}

/// One log being read page by page during the merge.
struct LogCursor {
    scope: Vec<u8>,
    ns: Vec<u8>,
    key: Vec<u8>,
    after: i64,
    buffer: VecDeque<LogEntry>,
    done: bool,
}

impl LogCursor {
    /// The id of the next entry, reading a page when the buffer is empty.
    fn peek(&mut self, store: &dyn FunctionStorage) -> Result<Option<i64>, Failure> {
        if self.buffer.is_empty() && !self.done {
            let page = store
                .scan(&self.scope, &self.ns, &self.key, self.after, PAGE)
                .map_err(|e| storage_failure("scanning a log", e))?;
            self.done = page.len() < PAGE;
            if let Some(last) = page.last() {
                self.after = last.id;
            }
            self.buffer.extend(page);
        }
        Ok(self.buffer.front().map(|e| e.id))
    }
}

/// Writes records as lines of an export file.
pub(crate) struct FileSink {
    out: BufWriter<File>,
    fnv: Fnv,
    records: u64,
}

impl FileSink {
    pub(crate) fn create(path: &Path, header: &Header) -> Result<Self, Failure> {
        let file = File::create(path).map_err(|e| {
            Failure::io(format!(
                "cannot create {}: {e}; check the directory exists and is writable",
                path.display()
            ))
        })?;
        let mut sink = Self {
            out: BufWriter::new(file),
            fnv: Fnv::default(),
            records: 0,
        };
        let line = serde_json::to_string(header)
            .map_err(|e| Failure::io(format!("cannot encode the header: {e}")))?;
        writeln!(sink.out, "{line}")
            .map_err(|e| Failure::io(format!("cannot write {}: {e}", path.display())))?;
        Ok(sink)
    }

    /// Write the `end` record and flush.
    pub(crate) fn finish(mut self) -> Result<(), Failure> {
        let end = Record::End {
            records: self.records,
            fnv1a64: self.fnv.hex(),
        };
        let line = serde_json::to_string(&end)
            .map_err(|e| Failure::io(format!("cannot encode a record: {e}")))?;
        writeln!(self.out, "{line}")
            .map_err(|e| Failure::io(format!("cannot write the export: {e}")))?;
        self.out
            .flush()
            .map_err(|e| Failure::io(format!("cannot write the export: {e}")))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Failure::io(format!("cannot sync the export: {e}")))
    }
}

impl Sink for FileSink {
    fn record(&mut self, record: Record) -> Result<(), Failure> {
        let mut line = serde_json::to_string(&record)
            .map_err(|e| Failure::io(format!("cannot encode a record: {e}")))?;
        line.push('\n');
        self.fnv.update(line.as_bytes());
        self.records += 1;
        self.out.write_all(line.as_bytes()).map_err(|e| {
            Failure::io(format!(
                "cannot write the export: {e}; check free disk space"
            ))
        })
    }
}

/// Read and check an export file: header, every record parses, the `end`
/// record's count and checksum match. Calls `each` per record when given.
pub(crate) fn read_file(
    path: &Path,
    mut each: Option<&mut dyn FnMut(Record) -> Result<(), Failure>>,
) -> Result<Header, Failure> {
    let file = File::open(path).map_err(|e| {
        Failure::io(format!(
            "cannot open {}: {e}; check the path",
            path.display()
        ))
    })?;
    let mut lines = BufReader::new(file).lines();
    let bad = |what: String| {
        Failure::io(format!(
            "{} is not a valid export: {what}; export the store again",
            path.display()
        ))
    };
    let first = lines
        .next()
        .ok_or_else(|| bad("it is empty".into()))?
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|_| bad(format!("line 1 is not a {FORMAT} header")))?;
    if header.format != FORMAT {
        return Err(bad(format!("line 1 names format {:?}", header.format)));
    }
    if header.version != VERSION {
        return Err(bad(format!(
            "it is version {} and this tool reads version {VERSION}; use a matching vgi-storage",
            header.version
        )));
    }
    let mut fnv = Fnv::default();
    let mut records = 0u64;
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(format!("cannot read line {}: {e}", n + 2)))?;
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| bad(format!("line {} does not parse ({e})", n + 2)))?;
        if let Record::End {
            records: want,
            fnv1a64,
        } = &record
        {
            if *want != records || *fnv1a64 != fnv.hex() {
                return Err(bad(
                    "its checksum or record count does not match (damaged file)".into(),
                ));
            }
            return Ok(header);
        }
        fnv.update(line.as_bytes());
        fnv.update(b"\n");
        records += 1;
        if let Some(each) = each.as_mut() {
            each(record)?;
        }
    }
    Err(bad(format!(
        "it ends after {records} records without an end record (truncated)"
    )))
}

/// Writes records into a store, in batches.
pub(crate) struct StoreSink<'a> {
    store: &'a dyn FunctionStorage,
    kv: KvBatch,
    queue: (Vec<u8>, Vec<Vec<u8>>),
    logs: Vec<LogRecord>,
    written: u64,
    /// Test hook: fail after this many records (`VGI_STORAGE_CLI_FAIL_AFTER`).
    fail_after: Option<u64>,
    progress: ProgressBar,
    /// Log ids the target gave differently from the source.
    pub(crate) remapped: u64,
}

impl<'a> StoreSink<'a> {
    pub(crate) fn new(store: &'a dyn FunctionStorage, progress: ProgressBar) -> Self {
        Self {
            store,
            kv: (Vec::new(), Vec::new()),
            queue: (Vec::new(), Vec::new()),
            logs: Vec::new(),
            written: 0,
            fail_after: std::env::var("VGI_STORAGE_CLI_FAIL_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
            progress,
            remapped: 0,
        }
    }

    fn flush_kv(&mut self) -> Result<(), Failure> {
        if !self.kv.1.is_empty() {
            self.store
                .kv_put_batch(&self.kv.0, &self.kv.1)
                .map_err(|e| storage_failure("importing kv entries", e))?;
            self.kv.1.clear();
        }
        Ok(())
    }

    fn flush_queue(&mut self) -> Result<(), Failure> {
        if !self.queue.1.is_empty() {
            self.store
                .queue_push(&self.queue.0, &self.queue.1)
                .map_err(|e| storage_failure("importing queue items", e))?;
            self.queue.1.clear();
        }
        Ok(())
    }

    fn flush_logs(&mut self) -> Result<(), Failure> {
        if !self.logs.is_empty() {
            let ids = self
                .store
                .import_log(&self.logs)
                .map_err(|e| storage_failure("importing log entries", e))?;
            self.remapped += self
                .logs
                .iter()
                .zip(&ids)
                .filter(|(r, id)| r.id != **id)
                .count() as u64;
            self.logs.clear();
        }
        Ok(())
    }

    /// Write what is still batched.
    pub(crate) fn finish(&mut self) -> Result<(), Failure> {
        self.flush_kv()?;
        self.flush_queue()?;
        self.flush_logs()
    }
}

impl Sink for StoreSink<'_> {
    fn record(&mut self, record: Record) -> Result<(), Failure> {
        if self.fail_after.is_some_and(|n| self.written >= n) {
            return Err(Failure::io(
                "interrupted by VGI_STORAGE_CLI_FAIL_AFTER (a test hook); unset it".into(),
            ));
        }
        match record {
            Record::Scope { .. } => {
                self.flush_kv()?;
                self.flush_queue()?;
            }
            Record::Kv { scope, key, value } => {
                if self.kv.0 != scope.0 || self.kv.1.len() >= PAGE {
                    self.flush_kv()?;
                    self.kv.0 = scope.0;
                }
                self.kv.1.push((key.0, value.0));
            }
            Record::Queue { scope, item } => {
                if self.queue.0 != scope.0 || self.queue.1.len() >= PAGE {
                    self.flush_queue()?;
                    self.queue.0 = scope.0;
                }
                self.queue.1.push(item.0);
            }
            Record::Log {
                scope,
                ns,
                key,
                id,
                value,
            } => {
                self.flush_kv()?;
                self.flush_queue()?;
                self.logs.push(LogRecord {
                    scope: scope.0,
                    ns: ns.0,
                    key: key.0,
                    id,
                    value: value.0,
                });
                if self.logs.len() >= PAGE {
                    self.flush_logs()?;
                }
            }
            Record::End { .. } => self.finish()?,
        }
        self.written += 1;
        if self.written.is_multiple_of(PAGE as u64) {
            self.progress.set_position(self.written);
        }
        Ok(())
    }
}
