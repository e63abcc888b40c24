//! The shared vocabulary of the fault and crash checks: run a child process on
//! the store under a fault, read back what it acknowledged, kill it at random.
//!
//! A child re-executes the running test binary (as the across-processes checks
//! do, see `process.rs`) with a job in its environment. It opens the store
//! through the factory on the check's fixture and reports every acknowledged
//! result as one line on its stdout, a pipe the parent reads as it goes: a
//! line the parent has read is a call whose result the child saw.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vgi_storage_core::ManualClock;

use crate::harness::{Failure, Outcome, Run};
use crate::{Factory, Fixture};

const JOB: &str = "VGI_STORAGE_CONFORMANCE_JOB";
const JOB_DIR: &str = "VGI_STORAGE_CONFORMANCE_JOB_DIR";
const JOB_NAME: &str = "VGI_STORAGE_CONFORMANCE_JOB_NAME";
/// Marks a report line: libtest may print `test name ... ` on the same line first.
const MARK: &str = "@@vgi-job@@ ";
/// How long a child may stay silent before the parent gives up on it.
pub(crate) const SILENCE: Duration = Duration::from_secs(120);

/// A seed for a random run: `VGI_CONFORMANCE_SEED` if set (to replay a
/// failure), else the clock.
pub(crate) fn seed() -> u64 {
    std::env::var("VGI_CONFORMANCE_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A small deterministic generator (splitmix64): parent and child draw the
/// same plan from the same seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// `len` bytes that no compressor shrinks.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Bytes as lowercase hex, for report lines.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The bytes of a hex string, `None` if it is not one.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The test name children re-execute, or why the check is skipped without one.
pub(crate) fn test_name(run: &Run<'_>) -> Result<String, Outcome> {
    run.settings.test_name.clone().ok_or_else(|| {
        Outcome::Skipped(
            "run through conformance_suite! to start child processes (run_all and direct \
             calls do not know the test name to re-execute)"
                .into(),
        )
    })
}

/// The job of this process, when it is a child started by [`Job::spawn`].
pub(crate) fn job() -> Option<String> {
    std::env::var(JOB).ok()
}

/// The child's side: open the store on the fixture from the environment and run the job.
pub(crate) fn job_main(job: &str, factory: &dyn Factory) -> Result<(), Failure> {
    let var = |name: &str| {
        std::env::var(name)
            .map_err(|_| Failure::new(format!("child process without {name} in its environment")))
    };
    let fx = Fixture::new(
        PathBuf::from(var(JOB_DIR)?),
        var(JOB_NAME)?,
        ManualClock::starting_now(),
        true,
    );
    let words: Vec<&str> = job.split_whitespace().collect();
    match words.first().copied() {
        Some("faults") => crate::faults::child(factory, &fx, &words[1..]),
        Some("crash") => crate::crash::writer_child(factory, &fx, &words[1..]),
        Some("pop") => crate::crash::popper_child(factory, &fx),
        _ => Err(Failure::new(format!("unknown child job {job:?}"))),
    }
}

/// Report one line to the parent, flushed at once.
pub(crate) fn report(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(format!("cannot report to the parent: {e}")))
}

/// Parse a number argument of a job.
pub(crate) fn arg<T: std::str::FromStr>(args: &[&str], i: usize) -> Result<T, Failure> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Failure::new(format!("child job argument {i} missing or bad: {args:?}")))
}

/// One line a child reported, with the index of the child that sent it.
pub(crate) struct Line {
    pub(crate) from: usize,
    pub(crate) text: String,
}

/// A running child and the log of its stderr.
pub(crate) struct Job {
    child: Child,
    log: PathBuf,
}

impl Job {
    /// Start `job` in a child re-executing `test_name` on `fx`, sending its
    /// report lines, tagged `index`, to `lines`. With `fsize_cap`, the child
    /// runs with RLIMIT_FSIZE at that many bytes and SIGXFSZ ignored, so a
    /// write past it fails with EFBIG (set through `sh`'s `ulimit`, which
    /// needs no unsafe code here).
    pub(crate) fn spawn(
        test_name: &str,
        fx: &Fixture,
        job: &str,
        index: usize,
        fsize_cap: Option<u64>,
        lines: &Sender<Line>,
    ) -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(format!("cannot find the test binary to re-execute: {e}")))?;
        // The log lives beside the fixture, not in it: the fault checks cap or
        // freeze every file of the fixture's directory.
        let log = fx
            .dir()
            .with_file_name(format!("{}-job-{index}.log", fx.name()));
        let err = File::create(&log)
            .map_err(|e| Failure::new(format!("cannot create a child log: {e}")))?;
        let mut cmd = match fsize_cap {
            Some(bytes) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
                        bytes.div_ceil(512)
                    ))
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = cmd
            .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
            .env(crate::process::CHILD_TEST, test_name)
            .env(JOB, job)
            .env(JOB_DIR, fx.dir())
            .env(JOB_NAME, fx.name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| {
                Failure::new(format!("cannot start child process {}: {e}", exe.display()))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Failure::new("the child has no stdout pipe"))?;
        let tx = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = line.find(MARK) {
                    let text = line[at + MARK.len()..].to_owned();
                    if tx.send(Line { from: index, text }).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Line {
                from: index,
                text: "eof".into(),
            });
        });
        Ok(Self { child, log })
    }

    /// SIGKILL the child and reap it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the child to exit on its own; it must exit 0.
    pub(crate) fn wait(&mut self) -> Result<(), Failure> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(self.failure(&format!("exited with {status}")));
                }
                Ok(None) if start.elapsed() > SILENCE => {
                    self.kill();
                    return Err(self.failure("did not finish in time"));
                }
                Ok(None) => thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(Failure::new(format!("cannot wait for a child: {e}"))),
            }
        }
    }

    /// A failure quoting the end of the child's stderr.
    pub(crate) fn failure(&self, what: &str) -> Failure {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Failure::new(format!(
            "child process: {what}; its stderr ends:\n{}",
            tail.join("\n")
        ))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// The next report line, or a failure after [`SILENCE`].
pub(crate) fn next_line(lines: &Receiver<Line>) -> Result<Line, Failure> {
    match lines.recv_timeout(SILENCE) {
        Ok(line) => Ok(line),
        Err(RecvTimeoutError::Timeout) => Err(Failure::new(format!(
            "no child reported anything for {SILENCE:?}"
        ))),
        Err(RecvTimeoutError::Disconnected) => Err(Failure::new("every child pipe closed")),
    }
}

/// A channel for report lines.
pub(crate) fn channel() -> (Sender<Line>, Receiver<Line>) {
    mpsc::channel()
}

/// The regular files directly in `dir`.
pub(crate) fn files_in(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Failure::new(format!("cannot list {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Failure::new(format!("cannot list {}: {e}", dir.display())))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    Ok(files)
}
