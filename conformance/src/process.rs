//! Checks with real child processes sharing one store.
//!
//! The parent re-executes the running test binary with the name of the running
//! `#[test]` (`<name> --exact --nocapture --test-threads 1`, which both `cargo test`
//! and `cargo nextest` binaries accept) and passes the fixture and the child's
//! role in environment variables. In the child, the same `#[test]` sees
//! [`CHILD_TEST`], opens the store through the factory and plays its role.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use vgi_storage_core::{FunctionStorage, ManualClock};

use crate::concurrency::{check_popped, check_tail, increment, item, read_counter, tail_log};
use crate::harness::{CheckResult, Env, Failure, OrFail, Outcome, Run, ensure, ensure_eq, retry};
use crate::races::{PopEvent, judge_busy_drain, judge_pops};
use crate::{Factory, Fixture};

/// Set in a child process to the libtest name of the test it must act in.
pub(crate) const CHILD_TEST: &str = "VGI_STORAGE_CONFORMANCE_CHILD_TEST";
const CHILD_DIR: &str = "VGI_STORAGE_CONFORMANCE_CHILD_DIR";
const CHILD_NAME: &str = "VGI_STORAGE_CONFORMANCE_CHILD_NAME";
const CHILD_ROLE: &str = "VGI_STORAGE_CONFORMANCE_CHILD_ROLE";
const CHILD_INDEX: &str = "VGI_STORAGE_CONFORMANCE_CHILD_INDEX";
const CHILD_BUSY_MICROS: &str = "VGI_STORAGE_CONFORMANCE_CHILD_BUSY_MICROS";
/// The busy timeout the busy-queue checks ask the factory for.
pub(crate) const SHORT_BUSY: Duration = Duration::from_millis(1);

const CHILDREN: usize = 2;
const QUEUE_ITEMS: usize = 1000;
const LOG_PER_CHILD: usize = 300;
const CAS_PER_PROCESS: usize = 200;
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
enum Role {
    QueuePop,
    LogAppend,
    Cas,
    BusyPop,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueuePop => "queue-pop",
            Self::LogAppend => "log-append",
            Self::Cas => "cas",
            Self::BusyPop => "busy-pop",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::QueuePop, Self::LogAppend, Self::Cas, Self::BusyPop]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

fn out_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("child-{index}.out"))
}

fn log_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("child-{index}.log"))
}

fn ready_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("child-{index}.ready"))
}

fn go_path(dir: &Path) -> PathBuf {
    dir.join("children.go")
}

/// Whether the running process is a child started by one of these checks.
pub(crate) fn child_test() -> Option<String> {
    std::env::var(CHILD_TEST).ok()
}

/// The child's side: open the store from the environment's fixture and play the role.
pub(crate) fn child_main(factory: &dyn Factory) -> Result<(), Failure> {
    let var = |name: &str| {
        std::env::var(name)
            .map_err(|_| Failure::new(format!("child process without {name} in its environment")))
    };
    let dir = PathBuf::from(var(CHILD_DIR)?);
    let name = var(CHILD_NAME)?;
    let role_name = var(CHILD_ROLE)?;
    let role = Role::parse(&role_name)
        .ok_or_else(|| Failure::new(format!("unknown child role {role_name}")))?;
    let index: usize = var(CHILD_INDEX)?
        .parse()
        .map_err(|_| Failure::new("child index is not a number"))?;
    let mut fx = Fixture::new(dir.clone(), name, ManualClock::starting_now(), true);
    if let Some(micros) = std::env::var(CHILD_BUSY_MICROS)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        fx = fx.with_busy_timeout(Duration::from_micros(micros));
    }
    let store = factory(&fx)
        .map_err(|e| Failure::storage("the factory opening the store in a child process", e))?;
    let st = &*store;
    let write = |path: PathBuf, text: String| {
        fs::write(&path, text)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
    };
    write(ready_path(&dir, index), String::new())?;
    let start = Instant::now();
    while !go_path(&dir).exists() {
        ensure!(start.elapsed() < CHILD_TIMEOUT, "the parent never said go");
        thread::sleep(Duration::from_millis(2));
    }
    let mut out = String::new();
    match role {
        Role::QueuePop => {
            while let Some(bytes) = retry(|| st.queue_pop(b"q")).or_fail("queue_pop")? {
                out.push_str(&String::from_utf8_lossy(&bytes));
                out.push('\n');
            }
        }
        Role::LogAppend => {
            for i in 0..LOG_PER_CHILD {
                let value = format!("w{index}-{i}").into_bytes();
                let id = retry(|| st.append(b"s", b"n", b"k", &value)).or_fail("append")?;
                writeln!(out, "{id}").map_err(|_| Failure::new("cannot format"))?;
            }
        }
        Role::BusyPop => {
            for e in pop_with_wall_ticks(st)? {
                let item = e.item.map_or_else(
                    || "-".to_owned(),
                    |i| String::from_utf8_lossy(&i).into_owned(),
                );
                writeln!(out, "{} {} {item}", e.began, e.returned)
                    .map_err(|_| Failure::new("cannot format"))?;
            }
        }
        Role::Cas => {
            for _ in 0..CAS_PER_PROCESS {
                let n = increment(st, b"s", b"counter")?;
                writeln!(out, "{n}").map_err(|_| Failure::new("cannot format"))?;
            }
        }
    }
    drop(store);
    // The out file is written last: its presence says the role ran to the end.
    write(out_path(&dir, index), out)
}

/// The children of one check, killed if the check ends early.
struct Children {
    dir: PathBuf,
    procs: Mutex<Vec<Child>>,
}

impl Drop for Children {
    fn drop(&mut self) {
        if let Ok(procs) = self.procs.get_mut() {
            for c in procs.iter_mut() {
                if matches!(c.try_wait(), Ok(None)) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

impl Children {
    fn spawn(test_name: &str, fx: &Fixture, role: Role) -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(format!("cannot find the test binary to re-execute: {e}")))?;
        let mut procs = Vec::new();
        for index in 0..CHILDREN {
            let log = File::create(log_path(fx.dir(), index))
                .map_err(|e| Failure::new(format!("cannot create a child log: {e}")))?;
            let log2 = log
                .try_clone()
                .map_err(|e| Failure::new(format!("cannot create a child log: {e}")))?;
            let child = Command::new(&exe)
                .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
                .env(CHILD_TEST, test_name)
                .env(CHILD_DIR, fx.dir())
                .env(CHILD_NAME, fx.name())
                .env(CHILD_ROLE, role.as_str())
                .env(CHILD_INDEX, index.to_string())
                .env(
                    CHILD_BUSY_MICROS,
                    fx.busy_timeout()
                        .map_or_else(String::new, |t| t.as_micros().to_string()),
                )
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| {
                    Failure::new(format!("cannot start child process {}: {e}", exe.display()))
                })?;
            procs.push(child);
        }
        let children = Self {
            dir: fx.dir().to_path_buf(),
            procs: Mutex::new(procs),
        };
        children.go()?;
        Ok(children)
    }

    /// Wait until every child opened the store, then let them all start at once.
    fn go(&self) -> Result<(), Failure> {
        let start = Instant::now();
        for index in 0..CHILDREN {
            while !ready_path(&self.dir, index).exists() {
                if self.all_exited() || start.elapsed() > CHILD_TIMEOUT {
                    self.wait()?;
                    return Err(self.failure(index, "the child process never opened the store"));
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        File::create(go_path(&self.dir))
            .map_err(|e| Failure::new(format!("cannot signal the children: {e}")))?;
        Ok(())
    }

    fn all_exited(&self) -> bool {
        let Ok(mut procs) = self.procs.lock() else {
            return true;
        };
        procs.iter_mut().all(|c| !matches!(c.try_wait(), Ok(None)))
    }

    fn failure(&self, index: usize, what: &str) -> Failure {
        let log = fs::read_to_string(log_path(&self.dir, index)).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Failure::new(format!(
            "child process {index}: {what}; its output ends:\n{tail}"
        ))
    }

    /// Wait for every child; each must exit 0 and have written its out file.
    fn wait(&self) -> Result<Vec<String>, Failure> {
        let start = Instant::now();
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; CHILDREN];
        while statuses.iter().any(Option::is_none) {
            {
                let mut procs = self
                    .procs
                    .lock()
                    .map_err(|_| Failure::new("child list poisoned"))?;
                for (i, c) in procs.iter_mut().enumerate() {
                    if statuses[i].is_none() {
                        statuses[i] = c
                            .try_wait()
                            .map_err(|e| Failure::new(format!("cannot wait for a child: {e}")))?;
                    }
                }
            }
            if start.elapsed() > CHILD_TIMEOUT {
                return Err(Failure::new(format!(
                    "child processes did not finish within {CHILD_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut outs = Vec::new();
        for (index, status) in statuses.into_iter().enumerate() {
            let status = status.ok_or_else(|| Failure::new("child status missing"))?;
            if !status.success() {
                return Err(self.failure(index, &format!("exited with {status}")));
            }
            match fs::read_to_string(out_path(&self.dir, index)) {
                Ok(out) => outs.push(out),
                Err(_) => {
                    return Err(self.failure(index, "exited 0 without playing its role (did the test name reach the child's test?)"));
                }
            }
        }
        Ok(outs)
    }
}

/// Skip unless the backend is shared across processes and the test name is known.
fn test_name(run: &Run<'_>, env: &Env) -> Result<String, Outcome> {
    if !env.store.capabilities().shared_across_processes {
        return Err(Outcome::Skipped("the backend is not shared across processes (capabilities().shared_across_processes is false)".into()));
    }
    run.settings.test_name.clone().ok_or_else(|| {
        Outcome::Skipped("run through conformance_suite! to start child processes (run_all and direct calls do not know the test name to re-execute)".into())
    })
}

pub(crate) fn queue_pop_is_exactly_once_across_processes(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let test_name = match test_name(run, &env) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let st = &*env.store;
    for chunk in (0..QUEUE_ITEMS).collect::<Vec<_>>().chunks(50) {
        let items: Vec<Vec<u8>> = chunk.iter().map(|i| item(*i)).collect();
        st.queue_push(b"q", &items).or_fail("queue_push")?;
    }
    let children = Children::spawn(&test_name, &env.scratch.fx, Role::QueuePop)?;
    let mut mine = Vec::new();
    while let Some(bytes) = retry(|| st.queue_pop(b"q")).or_fail("queue_pop")? {
        mine.push(bytes);
    }
    let outs = children.wait()?;
    let mut per_popper: Vec<Vec<Vec<u8>>> = outs
        .iter()
        .map(|o| o.lines().map(|l| l.as_bytes().to_vec()).collect())
        .collect();
    per_popper.push(mine);
    check_popped(QUEUE_ITEMS, &per_popper)?;
    ensure_eq!(
        st.queue_pop(b"q").or_fail("queue_pop")?,
        None,
        "queue_pop after every item was popped"
    );
    Ok(Outcome::Passed)
}

pub(crate) fn log_tail_sees_every_entry_in_order_across_processes(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let test_name = match test_name(run, &env) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let st: &dyn FunctionStorage = &*env.store;
    let log: (&[u8], &[u8], &[u8]) = (b"s", b"n", b"k");
    let children = Children::spawn(&test_name, &env.scratch.fx, Role::LogAppend)?;
    let tail = tail_log(st, log, &|| children.all_exited())?;
    let outs = children.wait()?;
    let mut ids = BTreeSet::new();
    for out in &outs {
        for line in out.lines() {
            let id: i64 = line
                .parse()
                .map_err(|_| Failure::new(format!("a child reported a bad id {line}")))?;
            ensure!(
                ids.insert(id),
                "two appends in different processes returned the same id {id}"
            );
        }
    }
    let full = st
        .scan(log.0, log.1, log.2, -1, usize::MAX)
        .or_fail("scan")?;
    check_tail(&tail, &full, CHILDREN, LOG_PER_CHILD, Some(&ids))?;
    Ok(Outcome::Passed)
}

pub(crate) fn cas_counter_loses_no_update_across_processes(run: &Run<'_>) -> CheckResult {
    let env = run.env()?;
    let test_name = match test_name(run, &env) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let st = &*env.store;
    let children = Children::spawn(&test_name, &env.scratch.fx, Role::Cas)?;
    let mut counts = Vec::new();
    for _ in 0..CAS_PER_PROCESS {
        counts.push(increment(st, b"s", b"counter")?);
    }
    for out in children.wait()? {
        for line in out.lines() {
            counts.push(
                line.parse()
                    .map_err(|_| Failure::new(format!("a child reported a bad count {line}")))?,
            );
        }
    }
    let total = ((CHILDREN + 1) * CAS_PER_PROCESS) as u64;
    ensure_eq!(
        read_counter(st, b"s", b"counter")?,
        Some(total),
        "counter after {} processes added {CAS_PER_PROCESS} each through CAS",
        CHILDREN + 1
    );
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    ensure!(
        distinct.len() == counts.len(),
        "two CAS updates in different processes both won from the same value"
    );
    Ok(Outcome::Passed)
}

/// Wall-clock nanoseconds: one clock for every process on the host, to order
/// pops of different processes (an order of events, not a timed assertion).
fn wall_tick() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Pop `b"q"` until it answers empty, each pop stamped with wall ticks.
fn pop_with_wall_ticks(st: &dyn FunctionStorage) -> Result<Vec<PopEvent>, Failure> {
    let start = Instant::now();
    let mut events = Vec::new();
    loop {
        let began = wall_tick();
        let item = retry(|| st.queue_pop(b"q")).or_fail("queue_pop")?;
        let returned = wall_tick();
        let empty = item.is_none();
        events.push(PopEvent {
            began,
            returned,
            item,
        });
        ensure!(
            events.len() <= BUSY_ITEMS + 1,
            "more items were popped than the {BUSY_ITEMS} pushed"
        );
        if empty {
            return Ok(events);
        }
        ensure!(
            start.elapsed() < CHILD_TIMEOUT,
            "draining the queue did not finish"
        );
    }
}

const BUSY_ITEMS: usize = 2000;

pub(crate) fn a_busy_queue_never_answers_empty_across_processes(run: &Run<'_>) -> CheckResult {
    let scratch = run.scratch()?;
    let fx = scratch.fx.clone().with_busy_timeout(SHORT_BUSY);
    let store = run.open(&fx)?;
    let env = Env { scratch, store };
    let test_name = match test_name(run, &env) {
        Ok(name) => name,
        Err(skip) => return Ok(skip),
    };
    let st = &*env.store;
    let pushes: Vec<Vec<Vec<u8>>> = (0..BUSY_ITEMS / 100)
        .map(|p| (0..100).map(|j| item(p * 100 + j)).collect())
        .collect();
    for p in &pushes {
        st.queue_push(b"q", p).or_fail("queue_push")?;
    }
    let children = Children::spawn(&test_name, &fx, Role::BusyPop)?;
    let mut pops = pop_with_wall_ticks(st)?;
    for (index, out) in children.wait()?.iter().enumerate() {
        for line in out.lines() {
            let mut parts = line.splitn(3, ' ');
            let mut tick = || parts.next().and_then(|t| t.parse::<u64>().ok());
            let (Some(began), Some(returned)) = (tick(), tick()) else {
                return Err(Failure::new(format!(
                    "child {index} reported a bad pop: {line}"
                )));
            };
            let item = match parts.next() {
                Some("-") => None,
                Some(i) => Some(i.as_bytes().to_vec()),
                None => {
                    return Err(Failure::new(format!(
                        "child {index} reported a bad pop: {line}"
                    )));
                }
            };
            pops.push(PopEvent {
                began,
                returned,
                item,
            });
        }
    }
    judge_busy_drain(BUSY_ITEMS, &pops)?;
    judge_pops(&pushes, &pops)?;
    Ok(Outcome::Passed)
}
