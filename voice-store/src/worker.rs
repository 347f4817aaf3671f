//! The threads that own the SQLite connections, and the jobs sent to them.
//! SQLite calls block, so they never run on the async runtime: callers send
//! a boxed closure over a crossbeam channel and await a tokio oneshot.
//!
//! The writer thread does group commit (see the crate documentation). Its
//! one subtle promise: nobody hears "done" before the transaction holding
//! their write has committed, and if that commit fails, everybody in the
//! batch hears an error. With a commit feed, each committed batch's
//! deliveries then go to it, in commit order.

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Receiver;
use rusqlite::Connection;
use tokio::sync::oneshot;
use voice_core::error::Result;
use voice_core::store::CommitFeed;
use voice_core::wire::Delivery;
use voice_core::{Error, UserId};

use crate::error::{DbError, DbResult, sql_error};
use crate::event_counters::{EventCounters, LogSlot};

/// What a write job works with: the writer's connection, inside the
/// batch's transaction (it derefs to the [`Connection`]), the event
/// counters that transaction has moved so far, and (when there is a
/// commit feed) the deliveries it has stored.
pub(crate) struct WriteTx<'c> {
    conn: &'c Connection,
    event_counters: RefCell<EventCounters>,
    /// `None` when nobody takes them: no copies are made then.
    deliveries: Option<RefCell<Vec<Delivery>>>,
    /// How many of `deliveries` came before the running job.
    job_start: Cell<usize>,
}

impl<'c> WriteTx<'c> {
    fn new(conn: &'c Connection, keep_deliveries: bool) -> Self {
        Self {
            conn,
            event_counters: RefCell::new(EventCounters::default()),
            deliveries: keep_deliveries.then(RefCell::default),
            job_start: Cell::new(0),
        }
    }

    /// Where `user`'s next event goes; its seq is written to their row at
    /// commit.
    pub(crate) fn next_event_slot(&self, user: UserId) -> DbResult<LogSlot> {
        self.event_counters.borrow_mut().next(self.conn, user)
    }

    /// Notes a delivery the running job stored, for the commit feed.
    pub(crate) fn stored(&self, delivery: &Delivery) {
        if let Some(deliveries) = &self.deliveries {
            deliveries.borrow_mut().push(delivery.clone());
        }
    }

    /// A job starts: what it changes can be rolled back on its own.
    fn begin_job(&self) {
        self.event_counters.borrow_mut().begin_job();
        if let Some(deliveries) = &self.deliveries {
            self.job_start.set(deliveries.borrow().len());
        }
    }

    /// The running job's savepoint was rolled back: so are its counts and
    /// its deliveries.
    fn roll_back_job(&self) {
        self.event_counters.borrow_mut().roll_back_job();
        if let Some(deliveries) = &self.deliveries {
            deliveries.borrow_mut().truncate(self.job_start.get());
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// A write waiting for the writer thread. It is run inside the batch's
/// transaction, and answered only once the transaction's fate is known.
pub(crate) trait WriteJob: Send {
    /// Runs the work and keeps its outcome; returns whether it succeeded,
    /// so the writer knows whether to keep or roll back its savepoint.
    fn run(&mut self, tx: &WriteTx<'_>) -> bool;

    /// Answers the caller: with the kept outcome, or with `failure` when the
    /// transaction did not commit.
    fn finish(self: Box<Self>, failure: Option<Error>);
}

/// A read for any reader thread: it answers its caller itself.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The [`WriteJob`] behind [`crate::SqliteStore`]'s typed `write`.
pub(crate) struct Write<F, T> {
    work: F,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Write<F, T> {
    pub(crate) fn new(work: F, reply: oneshot::Sender<Result<T>>) -> Self {
        Self {
            work,
            outcome: None,
            reply,
        }
    }
}

impl<F, T> WriteJob for Write<F, T>
where
    F: FnMut(&WriteTx<'_>) -> DbResult<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &WriteTx<'_>) -> bool {
        let outcome = run_guarded(&mut self.work, tx);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, failure: Option<Error>) {
        let outcome = match (failure, self.outcome) {
            (Some(error), _) => Err(error),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(Error::internal()),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

/// Runs one job's closure, turning its errors (and a panic, which is a bug
/// in the job) into the caller's error, so that one bad job cannot take
/// down the thread that every other caller depends on.
pub(crate) fn run_guarded<A, T>(work: impl FnOnce(&A) -> DbResult<T>, on: &A) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(|| work(on))) {
        Ok(result) => result.map_err(DbError::into_error),
        Err(_) => {
            tracing::error!("a store job panicked");
            Err(Error::internal())
        }
    }
}

/// Counts of what the writer did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write transactions the writer started (one per batch).
    pub batches: u64,
    /// Write jobs taken from the queue, in all batches.
    pub writes: u64,
    /// The most writes one transaction held.
    pub largest_batch: u64,
    /// Batches that did not commit: every write in them got an error.
    pub failed_batches: u64,
    /// Batches run a second time, each write in its own savepoint, because
    /// one of their writes failed.
    pub rerun_batches: u64,
}

/// The live counters behind [`StoreStats`], shared with the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    failed_batches: AtomicU64,
    rerun_batches: AtomicU64,
    /// Cleared when the writer thread ends for any reason, so the readiness
    /// probe can report a store that can no longer write.
    writer_stopped: AtomicBool,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            rerun_batches: self.rerun_batches.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn writer_running(&self) -> bool {
        !self.writer_stopped.load(Ordering::Acquire)
    }

    fn record_batch(&self, size: usize) {
        let size = size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(size, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
    }
}

/// Marks the writer stopped however its thread ends, panics included.
struct StoppedOnDrop(Arc<Counters>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.writer_stopped.store(true, Ordering::Release);
    }
}

/// The writer thread's body: batches until every sender is gone and the
/// queue is drained, then closes the connection.
pub(crate) fn writer_loop(
    conn: Connection,
    jobs: Receiver<Box<dyn WriteJob>>,
    max_batch: usize,
    counters: Arc<Counters>,
    feed: Arc<OnceLock<CommitFeed>>,
) {
    let _stopped = StoppedOnDrop(counters.clone());
    let max_batch = max_batch.max(1);
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::new();
    // `recv` fails only once all senders are dropped *and* the queue is
    // empty, so every accepted write is run before the thread ends.
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        // Only what is already queued: waiting for more would add latency
        // to a lone write for no gain.
        batch.extend(jobs.try_iter().take(max_batch - 1));
        counters.record_batch(batch.len());
        // Read once the batch is taken: a write queued after the feed was
        // set is in this batch or a later one, so it is fed.
        let feed = feed.get();
        let committed = commit_batch(&conn, &mut batch, &counters, feed.is_some());
        let failure = committed.as_ref().err().cloned();
        if failure.is_some() {
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            job.finish(failure.clone());
        }
        // After the answers: a device that sent a message hears that it was
        // stored before it hears the message itself.
        if let (Ok(deliveries), Some(feed)) = (committed, feed)
            && !deliveries.is_empty()
            && catch_unwind(AssertUnwindSafe(|| feed(deliveries))).is_err()
        {
            tracing::error!("the commit feed panicked");
        }
    }
    close(conn, "writer");
}

/// Runs a batch in one transaction. An error means nothing in the batch
/// was committed.
///
/// The batch first runs with no savepoints: a savepoint per job copies
/// every page the job changes into SQLite's statement journal, and a
/// message to a group changes a page per member (measured: without them,
/// saturated group fan-out rose by 14-19%). Jobs rarely fail; when one does,
/// the whole transaction is rolled back and the batch runs again from the
/// start with a savepoint around each job, so that only the failing job's
/// work is undone. Jobs may run twice because they touch nothing but the
/// transaction (see [`crate::SqliteStore`]'s `write`).
///
/// Returns the deliveries the batch committed, if `keep_deliveries`.
fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    counters: &Counters,
    keep_deliveries: bool,
) -> Result<Vec<Delivery>> {
    // A job alone needs no second run: rolled back, it answers with its
    // own error and nothing else waits.
    match run_batch(conn, batch, false, keep_deliveries)? {
        Some(deliveries) => return Ok(deliveries),
        None if batch.len() == 1 => return Ok(Vec::new()),
        None => {}
    }
    counters.rerun_batches.fetch_add(1, Ordering::Relaxed);
    Ok(run_batch(conn, batch, true, keep_deliveries)?.unwrap_or_default())
}

/// Runs every job of the batch in one transaction and commits it; returns
/// the deliveries it committed (kept only if `keep_deliveries`), or `None`
/// if it rolled back. With `savepoints`, a failing job's work is rolled
/// back alone and the others' committed. Without, a failing job rolls back
/// the whole transaction and the answer is `None`.
fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    savepoints: bool,
    keep_deliveries: bool,
) -> Result<Option<Vec<Delivery>>> {
    run_cached(conn, "BEGIN IMMEDIATE").map_err(|e| sql_error(&e))?;
    let tx = WriteTx::new(conn, keep_deliveries);
    for job in batch.iter_mut() {
        if savepoints {
            run_cached(conn, "SAVEPOINT job").map_err(|e| abort(conn, &e))?;
        }
        tx.begin_job();
        let ok = job.run(&tx);
        // Some errors (disk full, I/O) make SQLite roll back the whole
        // transaction, taking the earlier jobs' work with it.
        if conn.is_autocommit() {
            tracing::error!("sqlite rolled back a write transaction; failing its whole batch");
            return Err(Error::internal());
        }
        match (savepoints, ok) {
            (false, true) => {}
            (false, false) => {
                run_cached(conn, "ROLLBACK").map_err(|e| abort(conn, &e))?;
                return Ok(None);
            }
            (true, ok) => {
                if !ok {
                    run_cached(conn, "ROLLBACK TO job").map_err(|e| abort(conn, &e))?;
                    tx.roll_back_job();
                }
                run_cached(conn, "RELEASE job").map_err(|e| abort(conn, &e))?;
            }
        }
    }
    tx.event_counters
        .borrow_mut()
        .write_back(conn)
        .map_err(|e| abort(conn, &e))?;
    run_cached(conn, "COMMIT").map_err(|e| abort(conn, &e))?;
    Ok(Some(
        tx.deliveries.map(RefCell::into_inner).unwrap_or_default(),
    ))
}

/// Runs one of the writer's own statements, cached: parsing these on every
/// job showed up in profiles.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Gives up on the open transaction after `error`.
fn abort(conn: &Connection, error: &rusqlite::Error) -> Error {
    tracing::error!(%error, "write transaction failed; rolling back its whole batch");
    // Whatever the cause (even a constraint checked at commit), the writes
    // in the batch are lost through no fault of most of their callers.
    let mapped = match sql_error(error) {
        busy if busy.code == voice_core::ErrorCode::Unavailable => busy,
        _ => Error::internal(),
    };
    // A failed COMMIT can leave the transaction open (e.g. a deferred
    // constraint); it must not leak into the next batch.
    if !conn.is_autocommit()
        && let Err(error) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(%error, "rollback failed");
    }
    mapped
}

/// The checkpointer thread's body: every `interval`, copies what the WAL
/// holds into the database file, until `stop`'s sender is dropped.
///
/// PASSIVE never waits for the writer or the readers: it copies what it
/// can. It cannot start the WAL over (only the writer's own backstop
/// checkpoint, `max_wal_pages`, leads to that under sustained writes), but
/// it leaves that checkpoint little to copy and sync. A checkpoint that
/// finds the database busy (another process) is simply tried again next
/// time.
pub(crate) fn checkpoint_loop(conn: Connection, interval: std::time::Duration, stop: Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        match outcome {
            Ok((_busy, wal_pages, copied)) => {
                tracing::trace!(wal_pages, copied, "checkpoint");
            }
            Err(error) => tracing::warn!(%error, "background checkpoint failed"),
        }
    }
    close(conn, "checkpointer");
}

/// A reader thread's body: serves reads until the store is dropped.
pub(crate) fn reader_loop(conn: Connection, jobs: Receiver<ReadJob>) {
    while let Ok(job) = jobs.recv() {
        job(&conn);
    }
    close(conn, "reader");
}

fn close(conn: Connection, role: &str) {
    if let Err((_, error)) = conn.close() {
        tracing::error!(%error, role, "closing a database connection failed");
    }
}
