//! The process drain: the bench re-executes itself with a hidden subcommand so
//! several processes pop one queue, as pooled VGI workers do.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vgi_storage::system_clock;

use crate::workloads::{ChildSpec, item_number, work_item};
use crate::{BenchResult, bail, targets};

/// The hidden subcommand: `__pop-worker TARGET DIR SCOPE_HEX`.
pub(crate) const SUBCOMMAND: &str = "__pop-worker";

/// What the children popped, together.
pub(crate) struct Drained {
    /// Each popped item's number; `None` for bytes that were never pushed.
    pub(crate) items: Vec<Option<usize>>,
    /// From the go signal to the last child's report.
    pub(crate) secs: f64,
    pub(crate) lat_ns: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Report {
    items: Vec<Option<usize>>,
    lat_ns: Vec<u64>,
}

/// Drain the queue of `scope` with `procs` child processes started together.
pub(crate) fn drain_in_processes(
    spec: &ChildSpec,
    scope: &[u8],
    procs: usize,
) -> BenchResult<Drained> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(procs);
    for _ in 0..procs {
        let mut command = Command::new(&exe);
        command
            .arg(SUBCOMMAND)
            .arg(spec.target.as_str())
            .arg(&spec.dir)
            .arg(hex(scope))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = crate::pg::url() {
            command.env(crate::pg::URL_VAR, url);
        }
        let child = command.spawn()?;
        children.push(child);
    }
    // Wait until every child has opened the store, then start them together.
    let mut outs = Vec::with_capacity(procs);
    for child in &mut children {
        let Some(stdout) = child.stdout.take() else {
            bail!("a pop worker has no stdout")
        };
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!(
                "a pop worker failed to open the store (said {:?})",
                line.trim()
            );
        }
        outs.push(out);
    }
    let start = Instant::now();
    for child in &mut children {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"go\n")?;
        }
    }
    let reports: Vec<BenchResult<String>> = std::thread::scope(|s| {
        let readers: Vec<_> = outs
            .into_iter()
            .map(|mut out| {
                s.spawn(move || {
                    let mut text = String::new();
                    out.read_to_string(&mut text).map(|_| text)
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| match r.join() {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err("a reader thread panicked".into()),
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut drained = Drained {
        items: Vec::new(),
        secs,
        lat_ns: Vec::new(),
    };
    for (child, report) in children.iter_mut().zip(reports) {
        let status = child.wait()?;
        if !status.success() {
            bail!("a pop worker process failed ({status})");
        }
        let report: Report = serde_json::from_str(&report?)?;
        drained.items.extend(report.items);
        drained.lat_ns.extend(report.lat_ns);
    }
    Ok(drained)
}

/// The child side: open the store, say ready, wait for go, pop until empty, report.
pub(crate) fn run(args: &[String]) -> BenchResult<()> {
    let [target, dir, scope] = args else {
        bail!("usage: {SUBCOMMAND} TARGET DIR SCOPE_HEX");
    };
    let Some(target) = targets::by_name(target) else {
        bail!("unknown target `{target}`")
    };
    let scope = unhex(scope)?;
    let store = target.open(std::path::Path::new(dir), system_clock())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let mut report = Report {
        items: Vec::new(),
        lat_ns: Vec::new(),
    };
    loop {
        let t = Instant::now();
        let item = store.queue_pop(&scope)?;
        report
            .lat_ns
            .push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let Some(item) = item else { break };
        report
            .items
            .push(item_number(&item).filter(|i| work_item(*i) == item));
    }
    serde_json::to_writer(&mut stdout, &report)?;
    stdout.flush()?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> BenchResult<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex scope");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?))
        .collect()
}
