//! What is particular to the SQLite store: opening, migrating, closing, and its threads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step panics with its location"
)]

use std::sync::Arc;

use kairos_store::conformance::spec;
use kairos_store::{JobCreateParams, JobGetParams, JobListParams, Store, StoreError};
use kairos_store_sqlite::{DB_FILE_NAME, SqliteStore};

async fn create(store: &SqliteStore, name: &str) {
    store
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: spec(name),
            next_fire_at: None,
            now: None,
            calendars: vec![],
        })
        .await
        .expect("create job");
}

/// The schema version this Kairos writes: the number of migrations.
const SCHEMA_VERSION: i64 = 15;

fn user_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn reopening_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open_file(&path).await.unwrap();
    create(&store, "a").await;
    store.close().await;
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    let store = SqliteStore::open_file(&path).await.unwrap();
    let jobs = store.job_list(JobListParams::default()).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    store.close().await;
}

/// Writes a database at the first schema version with one job, `old`, as an earlier Kairos left
/// it; `bookkeeping` records how far it was migrated.
fn write_first_schema(path: &std::path::Path, bookkeeping: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(include_str!("../migrations/0001_init.sql"))
        .unwrap();
    conn.execute_batch(bookkeeping).unwrap();
    let old = spec("old");
    conn.execute(
        "INSERT INTO jobs (namespace, name, spec, version, created_at, updated_at) \
         VALUES (?1, 'old', ?2, 1, 0, 0)",
        (&old.namespace, serde_json::to_string(&old).unwrap()),
    )
    .unwrap();
}

async fn assert_old_job_readable(store: &SqliteStore) {
    let old = store
        .job_get(JobGetParams {
            namespace: spec("old").namespace,
            name: "old".into(),
        })
        .await
        .unwrap();
    assert!(old.is_some(), "the old job is readable");
}

/// A store written by Kairos before migrations were counted in `user_version` kept them in a
/// `_sqlx_migrations` table: it opens without re-running the schema, and the table is dropped.
#[tokio::test]
async fn adopts_a_store_from_the_earlier_migration_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    write_first_schema(
        &path,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations VALUES (1, 'init', CURRENT_TIMESTAMP, 1, x'00', 1);",
    );
    let store = SqliteStore::open_file(&path).await.unwrap();
    assert_old_job_readable(&store).await;
    create(&store, "new").await;
    store.close().await;
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let left: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = '_sqlx_migrations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

/// A store at the first schema version opens with its data, and the migrations after it apply:
/// the active-runs index answers the overlap checks (`state = 'running'`, `state = 'queued'`)
/// instead of a walk over every run of the job.
#[tokio::test]
async fn a_store_at_the_first_schema_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    write_first_schema(&path, "PRAGMA user_version = 1");
    // A run with an attempt, and a later run since deleted: the rebuild of `runs` for
    // workflows keeps the first with its attempt, and never hands out the second's id again.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO runs (id, job_id, scheduled_for, run_at, state, origin, attempt, \
           max_attempts, execution, created_at) \
         VALUES (1, 1, 0, 0, 'succeeded', 'schedule', 1, 1, 'at_least_once', 0), \
                (7, 1, 60, 60, 'queued', 'schedule', 0, 1, 'at_least_once', 0); \
         INSERT INTO attempts (run_id, attempt, node, started_at, finished_at, status) \
         VALUES (1, 1, 'n', 0, 1, 'succeeded'); \
         DELETE FROM runs WHERE id = 7;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open_file(&path).await.unwrap();
    assert_old_job_readable(&store).await;
    let kept = store
        .run_get(kairos_store::RunGetParams { id: 1 })
        .await
        .unwrap()
        .expect("the run is kept");
    assert_eq!(kept.state, kairos_core::run::RunState::Succeeded);
    let attempts = store
        .attempt_list(kairos_store::AttemptListParams { run_id: 1 })
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1, "its attempt is kept");
    let new = store
        .run_insert(kairos_store::RunInsertParams {
            expected_version: None,
            job_id: 1,
            run: kairos_store::RunInsert {
                scheduled_for: jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_mins(2),
                run_at: jiff::Timestamp::UNIX_EPOCH,
                origin: kairos_core::run::RunOrigin::Manual,
                skip: None,
                exclusive: false,
                max_attempts: 1,
                execution: kairos_core::spec::ExecutionMode::AtLeastOnce,
                event: None,
            },
            params: None,
            actor: "test".into(),
            now: None,
        })
        .await
        .unwrap();
    assert!(new.id > 7, "run ids are not reused: {}", new.id);
    store.close().await;
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    let conn = rusqlite::Connection::open(&path).unwrap();
    for state in ["running", "queued"] {
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT 1 FROM runs WHERE job_id = 1 AND parent_id IS NULL \
                 AND state = '{state}'"
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("runs_job_active")),
            "state = '{state}' reads {plan:?}"
        );
    }
}

#[tokio::test]
async fn a_closed_store_refuses_work_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_file(&dir.path().join("k.db"))
        .await
        .unwrap();
    let clone = store.clone();
    store.close().await;
    match clone.ping().await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("closed"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match clone
        .job_create(JobCreateParams {
            actor: "test".into(),
            spec: spec("late"),
            next_fire_at: None,
            now: None,
            calendars: vec![],
        })
        .await
    {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The directory lock is held until the store's writer has closed, then a new node may open it.
#[tokio::test]
async fn the_data_directory_lock_is_released_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).await.unwrap();
    match SqliteStore::open_dir(dir.path()).await {
        Err(StoreError::Locked(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    create(&store, "a").await;
    store.close().await;
    drop(store);
    let again = SqliteStore::open_dir(dir.path()).await.unwrap();
    assert_eq!(
        again
            .job_list(JobListParams::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(dir.path().join(DB_FILE_NAME).exists());
}

/// Reads and writes from many tasks at once all complete (the reader threads share one queue;
/// the writer serialises transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_writes_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_file(&dir.path().join("k.db"))
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            create(&store, &format!("job-{i}")).await;
            store
                .job_list(JobListParams::default())
                .await
                .unwrap()
                .len()
        });
    }
    while let Some(n) = tasks.join_next().await {
        assert!(n.unwrap() >= 1);
    }
    assert_eq!(
        store
            .job_list(JobListParams::default())
            .await
            .unwrap()
            .len(),
        50
    );
}

/// A database written by a newer Kairos (a schema version this one does not know) is refused
/// with a clear message instead of being used.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open_file(&path).await.unwrap();
    store.close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteStore::open_file(&path).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The data directory holds job environments and task output: only its owner may read it.
#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("data");
    let store = SqliteStore::open_dir(&dir).await.unwrap();
    create(&store, "a").await;
    assert_eq!(mode(&dir), 0o700);
    for name in [
        DB_FILE_NAME,
        "kairos.db-wal",
        "kairos.db-shm",
        "kairos.lock",
        "kairos.activity.db",
        "kairos.activity.db-wal",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    store.close().await;

    // A database an earlier Kairos left readable by everyone is tightened on open.
    use std::os::unix::fs::PermissionsExt;
    let db = dir.join(DB_FILE_NAME);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lock = dir.join("kairos.lock");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = SqliteStore::open_dir(&dir).await.unwrap();
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&lock), 0o600);
    store.close().await;
}

/// The WAL reaches the database file while the store is open, without a commit doing it: the
/// checkpointer's thread moves it (the writer's automatic checkpoint, inside a commit, is off;
/// with it, these few hundred pages would stay in the WAL until close).
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open_file(&path).await.unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    for i in 0..300 {
        create(&store, &format!("job-{i}")).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
    let jobs = SqliteStore::open_file(&path).await.unwrap();
    assert_eq!(
        jobs.job_list(JobListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        300
    );
}
