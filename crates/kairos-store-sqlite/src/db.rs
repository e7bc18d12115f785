//! Connections on threads of their own.
//!
//! SQLite calls block, so every connection lives on a dedicated thread and the async side sends
//! it *whole units of work*: one closure per transaction or read, answered through a oneshot
//! channel. A transaction therefore costs one hand-off between threads, however many statements
//! it runs (drivers that send each statement to the connection's thread pay one per statement).
//!
//! - **Writer:** one thread, one connection. SQLite has a single writer; queueing writes here
//!   instead of letting connections race for the lock avoids `SQLITE_BUSY` and the busy
//!   handler's sleeps. Writes that queue up while one runs are **committed together** (group
//!   commit): each runs inside its own `SAVEPOINT`, so a write that fails rolls back alone, and
//!   one `COMMIT` ends the group. No caller hears of success before that commit; if it fails,
//!   every write of the group fails and none is applied.
//! - **Readers:** a few threads sharing one queue, each with its own connection (WAL: readers
//!   never block the writer nor each other).
//! - **Checkpointer:** one thread with its own connection moves the WAL into the database file
//!   (`wal_checkpoint(PASSIVE)`) every [`CHECKPOINT_EVERY`]. The writer's automatic checkpoint
//!   is off: it would run inside a commit, and its `fsync`s (milliseconds on some disks) would
//!   delay every write of that group. A passive checkpoint runs beside the writer and readers
//!   without blocking them; the writer starts the WAL over once it has been checkpointed.
//!
//! Statements are prepared once per connection and cached (`prepare_cached`).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use kairos_store::{StoreError, StoreResult};
use rusqlite::Connection;

use crate::rows::exec;

/// A read: runs on a reader connection and answers its caller itself.
type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

/// A write: runs inside the open transaction (or learns why there is none), says whether it
/// succeeded (a failed write's savepoint is rolled back) and how to answer once the commit's
/// outcome is known.
type WriteTask = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Statements cached per connection; the store uses a few dozen distinct ones.
const STATEMENT_CACHE: usize = 64;
/// Most writes committed together.
const GROUP_COMMIT: usize = 64;
/// How often the checkpointer moves the WAL into the database file.
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

/// The error a write gets when the commit of its group failed.
fn commit_failed(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(msg) => StoreError::Unavailable(msg.clone()),
        other => StoreError::Internal(format!("commit failed: {other}")),
    }
}

fn dropped() -> StoreError {
    StoreError::Internal("the database thread dropped a request (a bug)".into())
}

/// The connection threads. Cheap to share (`Arc`); closing stops every thread.
pub(crate) struct Db {
    writer: Mutex<Option<mpsc::Sender<WriteTask>>>,
    readers: Mutex<Option<mpsc::Sender<ReadTask>>>,
    /// Dropped to stop the checkpointer.
    checkpointer: Mutex<Option<mpsc::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Db {
    /// Starts one writer thread on `writer`, one reader thread per connection in `readers`, and
    /// the checkpointer on `checkpointer` (when given, the writer's automatic checkpoint should
    /// be off). `keep` lives as long as the writer thread (the data-directory lock: it is
    /// released only after the last write is done and the connection closed).
    pub(crate) fn start(
        writer: Connection,
        readers: Vec<Connection>,
        checkpointer: Option<Connection>,
        keep: Option<Arc<std::fs::File>>,
    ) -> StoreResult<Arc<Self>> {
        let mut threads = Vec::with_capacity(2 + readers.len());
        let (ctx, crx) = mpsc::channel::<()>();
        if let Some(conn) = checkpointer {
            threads.push(spawn_thread("kairos-sqlite-checkpointer", move || {
                serve_checkpoints(&conn, &crx);
            })?);
        }
        let (wtx, wrx) = mpsc::channel::<WriteTask>();
        threads.push(spawn_thread("kairos-sqlite-writer", move || {
            let _keep = keep;
            serve_writes(writer, wrx);
        })?);
        let (rtx, rrx) = mpsc::channel::<ReadTask>();
        let rrx = Arc::new(Mutex::new(rrx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rrx = Arc::clone(&rrx);
            threads.push(spawn_thread(
                &format!("kairos-sqlite-reader-{i}"),
                move || {
                    serve_reads(conn, &rrx);
                },
            )?);
        }
        Ok(Arc::new(Self {
            writer: Mutex::new(Some(wtx)),
            readers: Mutex::new(Some(rtx)),
            checkpointer: Mutex::new(Some(ctx)),
            threads: Mutex::new(threads),
        }))
    }

    fn send<T>(lane: &Mutex<Option<mpsc::Sender<T>>>, task: T) -> StoreResult<()> {
        lane.lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .ok_or_else(closed)?
            .send(task)
            .map_err(|_| closed())
    }

    /// Runs `f` in the writer's transaction. Its changes are committed if it returns `Ok` (the
    /// answer comes after the commit) and rolled back if it returns `Err`.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task: WriteTask = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(commit_failed(e)),
            };
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(commit_failed(e)),
                });
            });
            (ok, answer)
        });
        Self::send(&self.writer, task)?;
        rx.await.map_err(|_| dropped())?
    }

    /// Runs `f` on a reader connection. Statements see the last committed state; several
    /// statements that must agree belong in one explicit read transaction inside `f`.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task: ReadTask = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        Self::send(&self.readers, task)?;
        rx.await.map_err(|_| dropped())?
    }

    /// Stops taking work, lets the threads finish what is queued, and closes the connections
    /// (the last one checkpoints the WAL into the database file).
    pub(crate) async fn close(&self) {
        self.checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> StoreResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StoreError::Unavailable(format!("cannot start a database thread: {e}")))
}

/// Runs reads until the store closes. A panicking read loses only its own answer (its caller
/// gets an error).
/// Checkpoints every [`CHECKPOINT_EVERY`] until `stop` is dropped. A failed checkpoint (a
/// busy database, an I/O error) is logged and tried again at the next tick; the WAL keeps
/// every change meanwhile.
fn serve_checkpoints(conn: &Connection, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpointing the WAL failed; trying again");
        }
    }
}

fn serve_reads(conn: Connection, queue: &Mutex<mpsc::Receiver<ReadTask>>) {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(task) = next else { break };
        if std::panic::catch_unwind(AssertUnwindSafe(|| task(&conn))).is_err() {
            tracing::error!("a database read panicked; its request failed");
        }
        // Keep a read that failed halfway from pinning an old snapshot.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    drop(conn);
}

/// Runs writes until the store closes: whatever is queued (up to [`GROUP_COMMIT`]) goes into one
/// transaction, each write in its own savepoint.
fn serve_writes(conn: Connection, queue: mpsc::Receiver<WriteTask>) {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mut group: Vec<WriteTask> = Vec::with_capacity(GROUP_COMMIT);
    let mut answers: Vec<Answer> = Vec::with_capacity(GROUP_COMMIT);
    while let Ok(first) = queue.recv() {
        group.push(first);
        while group.len() < GROUP_COMMIT {
            match queue.try_recv() {
                Ok(task) => group.push(task),
                Err(_) => break,
            }
        }
        // A transaction left open by an earlier failure must not swallow this group.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut broken = exec(&conn, "BEGIN IMMEDIATE", []).err();
        for task in group.drain(..) {
            if let Some(e) = &broken {
                // The transaction is gone: the rest of the group fails without running.
                let (_, answer) = task(Err(e));
                answers.push(answer);
                continue;
            }
            let (answer, failure) = run_in_savepoint(&conn, task);
            answers.extend(answer);
            broken = failure;
        }
        let commit = match broken {
            None => exec(&conn, "COMMIT", []).map(drop),
            Some(e) => Err(e),
        };
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Every write of the group hears the same outcome: all committed, or none.
        for answer in answers.drain(..) {
            answer(commit.as_ref().map(|_| ()));
        }
    }
    drop(conn);
}

/// Runs one write in a savepoint; rolls the savepoint back if it failed or panicked. Returns
/// its answer (`None` if it panicked: its caller then gets an error) and, if the transaction
/// itself was lost (an error such as a full disk rolls back the whole transaction, or the
/// savepoint could not be opened, rolled back or released), why: then nothing of the group
/// can be committed.
fn run_in_savepoint(conn: &Connection, task: WriteTask) -> (Option<Answer>, Option<StoreError>) {
    if let Err(e) = exec(conn, "SAVEPOINT w", []) {
        let (_, answer) = task(Err(&e));
        return (Some(answer), Some(e));
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| task(Ok(conn))));
    let ok = matches!(outcome, Ok((true, _)));
    let mut step = Ok(0);
    if conn.is_autocommit() {
        step = Err(StoreError::Internal(
            "an error rolled the whole transaction back".into(),
        ));
    } else if !ok {
        step = exec(conn, "ROLLBACK TO w", []);
    }
    if step.is_ok() {
        step = exec(conn, "RELEASE w", []);
    }
    let answer = match outcome {
        Ok((_, answer)) => Some(answer),
        Err(_) => {
            tracing::error!("a database write panicked; its request failed");
            None
        }
    };
    (answer, step.err())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn db(dir: &std::path::Path) -> Arc<Db> {
        let path = dir.join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER UNIQUE)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        Db::start(writer, vec![reader], None, None).unwrap()
    }

    async fn values(db: &Arc<Db>) -> Vec<i64> {
        db.read(|c| {
            crate::rows::all(c, "SELECT v FROM t ORDER BY v", [], |r| {
                crate::rows::col(r, 0)
            })
        })
        .await
        .unwrap()
    }

    /// Writes queued together share one commit, but a write that fails after changing rows is
    /// rolled back alone: its neighbours in the group are committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_rolls_back_alone_within_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let mut writes = Vec::new();
        for i in 0..200i64 {
            let db = Arc::clone(&db);
            writes.push(tokio::spawn(async move {
                db.write(move |c| {
                    exec(c, "INSERT INTO t (v) VALUES (?1)", [i])?;
                    if i % 3 == 0 {
                        return Err(StoreError::Internal(format!("write {i} fails")));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        for (i, w) in writes.into_iter().enumerate() {
            let result = w.await.unwrap();
            assert_eq!(result.is_ok(), i % 3 != 0, "write {i}: {result:?}");
        }
        let expected: Vec<i64> = (0..200).filter(|i| i % 3 != 0).collect();
        assert_eq!(values(&db).await, expected);
    }

    /// A write whose statement fails (a constraint) fails alone, with the store's error.
    #[tokio::test]
    async fn a_constraint_error_is_reported_to_its_caller_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        db.write(|c| exec(c, "INSERT INTO t (v) VALUES (1)", []))
            .await
            .unwrap();
        let dup = db
            .write(|c| exec(c, "INSERT INTO t (v) VALUES (1)", []))
            .await;
        assert!(matches!(dup, Err(StoreError::Internal(_))), "{dup:?}");
        db.write(|c| exec(c, "INSERT INTO t (v) VALUES (2)", []))
            .await
            .unwrap();
        assert_eq!(values(&db).await, vec![1, 2]);
    }

    /// An error that rolls back the whole transaction (here a full database) fails every write
    /// of its group: no write is reported committed that was not, nor failed that was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_transaction_fails_its_whole_group_and_the_writer_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER UNIQUE, b BLOB)")
            .unwrap();
        let pages: i64 = writer
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        writer
            .pragma_update(None, "max_page_count", pages + 4)
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let db = Db::start(writer, vec![reader], None, None).unwrap();
        // Hold the writer so that the next writes queue up into one group.
        let (started, wait) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hold = {
            let db = Arc::clone(&db);
            tokio::spawn(async move {
                db.write(move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
            })
        };
        wait.recv().unwrap();
        let mut writes = Vec::new();
        for (v, size) in [(1i64, 10usize), (2, 1_000_000), (3, 10)] {
            let db = Arc::clone(&db);
            writes.push(tokio::spawn(async move {
                db.write(move |c| {
                    exec(
                        c,
                        "INSERT INTO t (v, b) VALUES (?1, zeroblob(?2))",
                        (v, size as i64),
                    )
                })
                .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        let mut reported = Vec::new();
        for w in writes {
            reported.push(w.await.unwrap().is_ok());
        }
        let stored = values(&db).await;
        for (i, v) in [1i64, 2, 3].iter().enumerate() {
            assert_eq!(
                reported[i],
                stored.contains(v),
                "write {v}: reported ok = {}, stored = {stored:?}",
                reported[i]
            );
        }
        assert!(!reported[1], "the write that filled the database fails");
        // The writer keeps working.
        db.write(|c| exec(c, "INSERT INTO t (v) VALUES (9)", []))
            .await
            .unwrap();
        assert!(values(&db).await.contains(&9));
    }

    /// A panicking write fails its caller, is rolled back, and the writer keeps working.
    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_survives() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let panicked = db
            .write(|c| -> StoreResult<()> {
                exec(c, "INSERT INTO t (v) VALUES (7)", [])?;
                panic!("a bug in a write")
            })
            .await;
        assert!(panicked.is_err());
        db.write(|c| exec(c, "INSERT INTO t (v) VALUES (8)", []))
            .await
            .unwrap();
        assert_eq!(values(&db).await, vec![8]);
    }
}
