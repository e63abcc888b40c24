//! Checkpoints off the caller's path.
//!
//! In WAL mode every commit appends the pages it changed to the `-wal` file;
//! a checkpoint copies them back into the database file (syncing the WAL
//! before and the database after) so the WAL can start again from its
//! beginning. SQLite's own autocheckpoint runs that checkpoint inside the
//! commit that takes the WAL past 1000 pages: the caller whose write happened
//! to cross the line pays for copying every page of the last thousand and two
//! fsyncs (measured: about 15% of `clear`'s time).
//!
//! Here the write connection has a WAL hook instead (which replaces the
//! autocheckpoint). After each commit it learns the WAL's size in frames and:
//!
//! - below the threshold ([`crate::DEFAULT_CHECKPOINT_PAGES`] by default), does nothing;
//! - past it, wakes this store's checkpointer thread (started on first need,
//!   with its own connection) without waiting for it: one atomic swap, and a
//!   mutex and condvar only when the thread sleeps. The thread runs one
//!   PASSIVE checkpoint (a pass) per wake-up; a pass takes no lock that
//!   writers need and waits for nobody. A commit that finds the WAL still
//!   past the threshold wakes it again only once [`STEP_DIVISOR`]th of the
//!   threshold has been written since the frames its last pass reached: every
//!   pass syncs the WAL and the database file, and a thread woken by every
//!   commit made the disk sync twice per commit (measured: 3364 fsyncs for
//!   13.5k paced puts, against SQLite's 124);
//! - the WAL is reused (written again from its start) only when a writer
//!   begins after a pass copied every frame, which a thread racing a busy
//!   writer rarely manages: each pass ends behind the commits made during it.
//!   So past [`SOFT_FACTOR`] times the threshold the thread starts no new pass
//!   and the next committing writer runs one inline (holding the write
//!   connection, so none of this process's commits lands during it); it copies
//!   only the frames since the thread's last pass. A writer that finds a pass
//!   under way leaves the work to its next commit, unless the WAL is past
//!   [`HARD_FACTOR`] times the threshold: then it waits for that pass and
//!   runs its own. When the thread is gone (it could not start, or its
//!   connection could not open) writers checkpoint inline past the threshold,
//!   as SQLite does by default. So the WAL stays bounded whatever happens to
//!   the thread, as far as readers let it: no checkpoint copies frames a
//!   reader's snapshot still needs, here as with SQLite's autocheckpoint.
//!
//! A checkpoint never fails a call: the hook runs after the commit succeeded
//! and always reports success to SQLite, whatever the checkpoint did (a hook
//! error would turn the committed call into an error). Its failures are logged
//! with `tracing` (at most once a second per store); `SQLITE_BUSY` means
//! another connection, here or in another process, is checkpointing the same
//! file, which is normal and not logged.
//!
//! A checkpoint copies only frames every reader has moved past and never
//! touches what a commit depends on, so a process killed in the middle of one
//! loses nothing: the next open finds the WAL and the database as SQLite left
//! them. Between processes each store has its own checkpointer; PASSIVE
//! checkpoints take only the checkpoint lock, never the write lock, so they do
//! not stand in the writers' fair turns (see [`crate::turn`]).
//!
//! The thread stops and is joined when the store is dropped (its [`Checkpointer`]
//! is dropped before the write connection, which then closes as before).

use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode};

use crate::config::Options;
use crate::storage::connect;

/// Past this many times the threshold, a committing writer checkpoints inline
/// unless the thread is at it.
pub(crate) const SOFT_FACTOR: u32 = 3;

/// Past this many times the threshold, a committing writer checkpoints inline,
/// waiting for the thread's pass to end if one is under way.
pub(crate) const HARD_FACTOR: u32 = 4;

/// The thread's next pass waits for the threshold divided by this many new
/// frames past what its last pass reached.
pub(crate) const STEP_DIVISOR: u32 = 4;

/// The checkpointer thread has not been started yet.
const UNSTARTED: u8 = 0;
/// It runs and takes requests.
const RUNNING: u8 = 1;
/// It could not start, or has ended: writers checkpoint inline.
const GONE: u8 = 2;

/// How often, at most, a store logs checkpoint failures.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// One store's background checkpointer. Dropping it stops and joins its thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The store's name, for logs.
    name: String,
    path: PathBuf,
    options: Options,
    threshold: u32,
    /// Past this many frames a writer checkpoints once the thread's pass is over.
    soft: u32,
    /// Past this many frames a writer checkpoints, waiting for the thread's pass.
    hard: u32,
    /// New frames that earn the thread another pass.
    step: u32,
    /// The WAL frames the last pass copied, the thread's or a writer's (the
    /// WAL's size it reached); 0 once the WAL was reused. A stale value after
    /// a reuse only delays the next pass by one step.
    reached: AtomicU32,
    /// The WAL's size at the last commit, to tell when it was reused. Only the
    /// write connection's hook touches it.
    seen: AtomicU32,
    /// [`UNSTARTED`], [`RUNNING`] or [`GONE`].
    status: AtomicU8,
    /// A writer asked for a checkpoint the thread has not begun yet.
    requested: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
    /// The thread, once started; taken and joined on drop.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A writer found the WAL past the soft limit: the thread leaves the next
    /// pass to it.
    tail_wanted: AtomicBool,
    /// Held while a checkpoint runs on this store's behalf, by the thread or
    /// by a writer: see [`Shared::after_commit`].
    gate: Mutex<()>,
    /// When a failure was last logged.
    logged: Mutex<Option<Instant>>,
    #[cfg(test)]
    stats: Stats,
}

/// Who ran a checkpoint pass.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The checkpointer thread.
    Background,
    /// A committing writer, in the WAL hook.
    Inline,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Background => "background",
            Pass::Inline => "inline",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    stop: bool,
}

/// What happened, for the tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Checkpoints the thread ran, and succeeded.
    pub(crate) background: std::sync::atomic::AtomicUsize,
    /// Checkpoints writers ran inline, and succeeded.
    pub(crate) inline: std::sync::atomic::AtomicUsize,
    /// The largest WAL size a commit reported, in frames.
    pub(crate) max_frames: std::sync::atomic::AtomicU32,
    /// The WAL size the last commit reported, in frames.
    pub(crate) last_frames: std::sync::atomic::AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkpointer {
    /// A checkpointer for the store `name` at `path`, checkpointing past
    /// `options.checkpoint_pages` frames. Starts no thread yet.
    pub(crate) fn new(name: &str, path: PathBuf, options: Options) -> Self {
        let threshold = options.checkpoint_pages.max(1);
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                path,
                options,
                threshold,
                soft: threshold.saturating_mul(SOFT_FACTOR),
                hard: threshold.saturating_mul(HARD_FACTOR),
                step: (threshold / STEP_DIVISOR).max(1),
                reached: AtomicU32::new(0),
                seen: AtomicU32::new(0),
                status: AtomicU8::new(UNSTARTED),
                requested: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                thread: Mutex::new(None),
                gate: Mutex::new(()),
                tail_wanted: AtomicBool::new(false),
                logged: Mutex::new(None),
                #[cfg(test)]
                stats: Stats::default(),
            }),
        }
    }

    /// Put the WAL hook on `writer` (replacing SQLite's autocheckpoint).
    pub(crate) fn install(&self, writer: &mut Connection) -> rusqlite::Result<()> {
        let shared = Arc::clone(&self.shared);
        writer.wal_hook(Some(move |wal: &mut Wal, frames: c_int| {
            shared.after_commit(wal, frames);
            // Always success: the commit is done, and an error here would
            // make SQLite report the committed call as failed.
            Ok(())
        }))
    }

    /// Stop the thread and wait for it; writers checkpoint inline from now on.
    pub(crate) fn stop(&self) {
        self.shared.status.store(GONE, Ordering::SeqCst);
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        let thread = lock(&self.shared.thread).take();
        if let Some(thread) = thread {
            // A panic of the thread was already reported by the panic hook.
            let _ = thread.join();
        }
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.shared.status.load(Ordering::SeqCst) == RUNNING
    }

    /// What the thread holds, to tell whether it is gone.
    #[cfg(test)]
    pub(crate) fn weak(&self) -> std::sync::Weak<impl Sized + use<>> {
        Arc::downgrade(&self.shared)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// The WAL hook's body: `frames` is the WAL's size after a commit.
    fn after_commit(self: &Arc<Self>, wal: &mut Wal, frames: c_int) {
        let frames = u32::try_from(frames).unwrap_or(0);
        #[cfg(test)]
        {
            self.stats.max_frames.fetch_max(frames, Ordering::Relaxed);
            self.stats.last_frames.store(frames, Ordering::Relaxed);
        }
        if frames < self.seen.swap(frames, Ordering::Relaxed) {
            // The WAL was reused: it is written from its start again.
            self.reached.store(0, Ordering::Relaxed);
        }
        if frames < self.threshold {
            return;
        }
        let mut status = self.status.load(Ordering::Acquire);
        if status == UNSTARTED {
            status = self.start();
        }
        let running = status == RUNNING;
        if running && frames < self.soft {
            let reached = self.reached.load(Ordering::Relaxed);
            if frames >= reached.saturating_add(self.step) {
                self.request();
            }
            return;
        }
        // Inline. While commits land during the thread's passes, each pass
        // ends behind the newest frame, and the WAL is reused (written from
        // its start again) only after a pass copied every frame. A writer
        // holds the write connection, so no commit of this process lands
        // during its pass. The thread starts no pass while a writer wants
        // one. Up to the hard limit, a writer that finds a pass under way
        // does not wait for it (the thread holds the checkpoint lock: its own
        // pass would fail busy) but leaves the work to its next commit; past
        // it, it waits.
        let _gate = if running && frames < self.hard {
            self.tail_wanted.store(true, Ordering::Release);
            match self.gate.try_lock() {
                Ok(gate) => gate,
                Err(TryLockError::Poisoned(gate)) => gate.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        } else {
            lock(&self.gate)
        };
        self.passed(Pass::Inline, wal.checkpoint_v2(CheckpointMode::PASSIVE));
        self.tail_wanted.store(false, Ordering::Release);
    }

    /// Ask the thread for a checkpoint, waking it if it sleeps.
    fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            // Taking the lock orders this with the thread's check-then-wait.
            drop(lock(&self.state));
            self.wake.notify_one();
        }
    }

    /// Start the thread (once); returns the status after trying.
    fn start(self: &Arc<Self>) -> u8 {
        let mut thread = lock(&self.thread);
        let status = self.status.load(Ordering::Acquire);
        if status != UNSTARTED {
            return status;
        }
        // Running before it starts: a thread that ends at once (its
        // connection does not open) marks itself gone after this.
        self.status.store(RUNNING, Ordering::Release);
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vgi-sqlite-checkpoint".to_owned())
            .spawn(move || shared.run());
        match spawned {
            Ok(handle) => *thread = Some(handle),
            Err(e) => {
                self.status.store(GONE, Ordering::Release);
                self.log(format_args!(
                    "cannot start the checkpointer thread ({e}); commits checkpoint inline"
                ));
            }
        }
        self.status.load(Ordering::Acquire)
    }

    /// The thread's body.
    fn run(&self) {
        /// Marks the thread gone however it ends, also by a panic.
        struct Gone<'a>(&'a AtomicU8);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                self.0.store(GONE, Ordering::Release);
            }
        }
        let _gone = Gone(&self.status);
        let mut conn = None;
        while self.next() {
            if conn.is_none() {
                match self.open() {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        self.log(format_args!(
                            "cannot open the checkpointer's connection ({e}); commits \
                             checkpoint inline"
                        ));
                        return;
                    }
                }
            }
            if let Some(c) = &conn {
                let _gate = lock(&self.gate);
                if self.tail_wanted.load(Ordering::Acquire) {
                    // A writer checkpoints next, when this thread is out of its way.
                    continue;
                }
                let result = c.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::PASSIVE);
                self.passed(Pass::Background, result);
            }
        }
    }

    /// Sleep until a checkpoint is requested (true) or the store stops (false).
    fn next(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.stop {
                return false;
            }
            if self.requested.swap(false, Ordering::AcqRel) {
                return true;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The thread's connection: it only checkpoints, never writes a row.
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = connect(&self.path, &self.options, true, None)?;
        // Reading the schema opens the WAL, which the checkpoint works on.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(conn)
    }

    /// Note how a pass ended: the frames it copied, from which the next
    /// step is counted ([`Shared::reached`]), or its failure.
    fn passed(&self, pass: Pass, result: rusqlite::Result<(c_int, c_int)>) {
        match result {
            Ok((_, copied)) => {
                self.reached
                    .store(u32::try_from(copied).unwrap_or(0), Ordering::Relaxed);
                #[cfg(test)]
                match pass {
                    Pass::Background => &self.stats.background,
                    Pass::Inline => &self.stats.inline,
                }
                .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed(pass.name(), &e),
        }
    }

    /// Log a failed checkpoint; busy (another connection checkpoints) is normal.
    fn failed(&self, what: &str, e: &rusqlite::Error) {
        if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) {
            return;
        }
        self.log(format_args!(
            "{what} checkpoint failed ({e}); the commits are safe in the WAL, which \
             grows until a checkpoint succeeds: check the disk and the file's permissions"
        ));
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        let mut logged = lock(&self.logged);
        if logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        *logged = Some(Instant::now());
        tracing::warn!(store = %self.name, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use vgi_storage_core::{FunctionStorage, FunctionStorageExt};

    use super::*;
    use crate::SqliteStorage;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Pages a commit of these tests writes at most, on top of the WAL's bound.
    const SLACK: u32 = 16;

    fn store(dir: &tempfile::TempDir, pages: u32) -> vgi_storage_core::Result<SqliteStorage> {
        SqliteStorage::builder(dir.path().join("state.db"))
            .checkpoint_pages(pages)
            .open()
    }

    fn key(t: usize, i: usize) -> Vec<u8> {
        format!("{t}-{i:06}").into_bytes()
    }

    /// The `-wal` file's size in frames: it never shrinks while the store is
    /// open (SQLite reuses it from the start), so it is the largest the WAL got.
    fn wal_frames(dir: &tempfile::TempDir) -> std::io::Result<u64> {
        let len = std::fs::metadata(dir.path().join("state.db-wal"))?.len();
        Ok(len.saturating_sub(32) / (4096 + 24))
    }

    /// The WAL stayed within `bound` frames, as the hook reported it after
    /// each commit (`max`) and as the `-wal` file's size.
    fn assert_wal_within(dir: &tempfile::TempDir, max: u32, bound: u32) -> TestResult {
        assert!(max <= bound, "WAL reached {max} frames");
        let on_disk = wal_frames(dir)?;
        assert!(on_disk <= u64::from(bound), "-wal file of {on_disk} frames");
        Ok(())
    }

    fn stats(store: &SqliteStorage) -> (usize, usize, u32) {
        let s = store.checkpointer.stats();
        (
            s.background.load(Relaxed),
            s.inline.load(Relaxed),
            s.max_frames.load(Relaxed),
        )
    }

    /// Writes `n` 1 KiB kv entries and a tenth as many log entries from each
    /// of `threads` threads (they share group commits). No thread reads
    /// meanwhile: a reader's snapshot holds every checkpoint back (see
    /// [`a_reader_holding_a_snapshot_delays_checkpoints_and_fails_no_write`]).
    fn write(store: &SqliteStorage, threads: usize, n: usize) -> TestResult {
        let value = vec![7u8; 1024];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let value = &value;
                    s.spawn(move || -> vgi_storage_core::Result<()> {
                        for i in 0..n {
                            store.kv_put(b"s", &key(t, i), value)?;
                            if i % 10 == 0 {
                                store.append(b"s", b"n", b"log", value)?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| "a writer panicked")??;
            }
            Ok(())
        })
    }

    /// Every entry [`write`] wrote, read back from a fresh store on the file.
    fn assert_all_there(dir: &tempfile::TempDir, threads: usize, n: usize) -> TestResult {
        let store = store(dir, 1000)?;
        for t in 0..threads {
            for i in 0..n {
                assert_eq!(
                    store.kv_get(b"s", &key(t, i))?.map(|v| v.len()),
                    Some(1024),
                    "entry {t}-{i} lost"
                );
            }
        }
        let log = store.scan_all(b"s", b"n", b"log", -1, 1000)?;
        assert_eq!(log.len(), threads * n.div_ceil(10));
        Ok(())
    }

    /// The background thread checkpoints a long write loop of several threads,
    /// and the WAL stays within the hard limit (on disk too).
    #[test]
    fn a_long_write_loop_is_checkpointed_in_the_background_within_the_bound() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pages = 32;
        let store = store(&dir, pages)?;
        write(&store, 3, 600)?;
        assert!(store.kv_get(b"s", &key(2, 599))?.is_some());
        let (background, inline, max) = stats(&store);
        assert!(store.checkpointer.is_running());
        assert!(background > 0, "the thread never checkpointed");
        assert_wal_within(&dir, max, pages * HARD_FACTOR + SLACK)?;
        assert!(
            background > inline,
            "the writers checkpointed {inline} times, the thread only {background}"
        );
        drop(store);
        assert_all_there(&dir, 3, 600)
    }

    /// Regression: every commit past the threshold woke the thread for another
    /// pass, and each pass syncs the WAL and the database file. A writer
    /// committing a little slower than a pass made the disk sync twice per
    /// commit (3364 fsyncs for 13.5k paced puts, where SQLite's autocheckpoint
    /// made 124). A pass now waits for a step of new frames.
    #[test]
    fn a_paced_writer_wakes_the_thread_once_per_step_not_per_commit() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pages = 64;
        let writer = store(&dir, pages)?;
        let value = vec![7u8; 1024];
        let commits = 1200;
        for i in 0..commits {
            writer.kv_put(b"s", &key(0, i), &value)?;
            std::thread::sleep(Duration::from_micros(50));
        }
        let (background, inline, max) = stats(&writer);
        // A put writes about three frames (table, index, scope stamp), and a
        // pass needs a quarter of the threshold (16) of new frames, or a WAL
        // that was reused since: far fewer passes than commits.
        assert!(background > 0, "the thread never checkpointed");
        assert!(
            background + inline <= commits / 4,
            "{background} passes by the thread and {inline} by the writer for {commits} commits"
        );
        assert!(
            max <= pages * HARD_FACTOR + SLACK,
            "WAL reached {max} frames"
        );
        drop(writer);
        let reopened = store(&dir, pages)?;
        assert!(reopened.kv_get(b"s", &key(0, commits - 1))?.is_some());
        Ok(())
    }

    /// With the thread gone, writers checkpoint inline at the threshold, as
    /// SQLite's autocheckpoint did, and the WAL stays as small as it kept it.
    #[test]
    fn without_the_thread_writers_checkpoint_inline_and_the_wal_stays_bounded() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pages = 32;
        let store = store(&dir, pages)?;
        store.checkpointer.stop();
        write(&store, 2, 400)?;
        let (background, inline, max) = stats(&store);
        assert_eq!(background, 0);
        assert!(inline > 0, "nobody checkpointed");
        assert_wal_within(&dir, max, pages + SLACK)?;
        drop(store);
        assert_all_there(&dir, 2, 400)
    }

    /// A thread whose connection cannot open (here: the file was renamed
    /// after the store opened it) is gone, and writers checkpoint inline at
    /// the threshold instead.
    #[test]
    fn a_thread_that_cannot_open_its_connection_leaves_checkpoints_to_writers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pages = 32;
        let store = store(&dir, pages)?;
        store.kv_put(b"s", b"first", b"v")?;
        std::fs::rename(dir.path().join("state.db"), dir.path().join("moved.db"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while store.checkpointer.stats().inline.load(Relaxed) < 3 {
            assert!(Instant::now() < deadline, "writers never took over");
            store.kv_put(b"s", &key(0, i), &[1; 1024])?;
            i += 1;
        }
        let (background, _, max) = stats(&store);
        assert!(!store.checkpointer.is_running());
        assert_eq!(background, 0);
        assert!(
            max <= pages * SOFT_FACTOR + SLACK,
            "WAL reached {max} frames"
        );
        Ok(())
    }

    /// A reader holding a snapshot keeps every checkpoint from passing it:
    /// the WAL grows, writes still succeed (a checkpoint never fails a
    /// call), and once the reader lets go the WAL is checkpointed and reused.
    #[test]
    fn a_reader_holding_a_snapshot_delays_checkpoints_and_fails_no_write() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pages = 16;
        let store = store(&dir, pages)?;
        store.kv_put(b"s", b"first", b"v")?;
        let reader = rusqlite::Connection::open(dir.path().join("state.db"))?;
        reader.execute_batch("BEGIN")?;
        let seen: i64 = reader.query_row("SELECT count(*) FROM vgi_kv", [], |r| r.get(0))?;
        assert_eq!(seen, 1);
        write(&store, 1, 400)?;
        let (_, _, max) = stats(&store);
        assert!(
            max > pages * HARD_FACTOR + SLACK,
            "the WAL stayed at {max} frames although no checkpoint could pass the reader"
        );
        reader.execute_batch("COMMIT")?;
        // Checkpoints catch up and a later commit starts the WAL over.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while store.checkpointer.stats().last_frames.load(Relaxed) > pages * HARD_FACTOR + SLACK {
            assert!(Instant::now() < deadline, "the WAL was never reused");
            store.kv_put(b"after", &i.to_string().into_bytes(), &[1; 1024])?;
            i += 1;
        }
        drop(store);
        assert_all_there(&dir, 1, 400)
    }

    /// Dropping the store stops its thread and waits for it: nothing of the
    /// checkpointer is left (no thread, no connection).
    #[test]
    fn dropping_the_store_joins_the_thread() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = store(&dir, 4)?;
        write(&store, 1, 200)?;
        assert!(store.checkpointer.is_running());
        let weak = store.checkpointer.weak();
        drop(store);
        assert!(
            weak.upgrade().is_none(),
            "the checkpointer outlived its store"
        );
        Ok(())
    }

    /// A store dropped while its thread checkpoints (threshold of one page:
    /// a checkpoint after every commit) loses nothing.
    #[test]
    fn a_store_dropped_mid_checkpoint_loses_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        for round in 0..5 {
            let store = store(&dir, 1)?;
            let value = vec![round; 1024];
            for i in 0..100 {
                store.kv_put(b"s", &key(usize::from(round), i), &value)?;
            }
            drop(store);
        }
        let store = store(&dir, 1000)?;
        for round in 0..5u8 {
            for i in 0..100 {
                assert_eq!(
                    store.kv_get(b"s", &key(usize::from(round), i))?,
                    Some(vec![round; 1024])
                );
            }
        }
        Ok(())
    }
}
