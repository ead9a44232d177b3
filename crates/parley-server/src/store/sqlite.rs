//! The embedded SQLite backend: WAL journal, `synchronous = FULL` (a commit is fsynced, so an
//! acknowledged write survives power loss), and **group commit**: one writer thread owns the
//! write connection and runs every write that is waiting, up to [`MAX_GROUP`], in a single
//! transaction — many sends share one fsync.
//!
//! The group runs plainly, every operation straight in the transaction. Only when one of them
//! fails (rare: a full queue, a taken username) is the transaction rolled back and the group
//! replayed with a savepoint around each operation, so that the failing one fails alone.
//!
//! Reads go through a small pool of WAL readers (sqlx, async). Writes go to the writer thread
//! (rusqlite, with prepared statements cached on its connection): a job crosses threads once
//! on the way in and once with its answer, and its statements run on the thread that owns the
//! connection, with no hand-off per statement.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params, params_from_iter};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    AccountFlag, AccountRecord, BundleParts, CommitListener, CommitStats, ConversationCount,
    DeviceAuth, DeviceRecord, KT_CHUNK, KT_EPOCHS_SQL, KT_LATEST_SQL, KtDirty, KtEpochRow,
    KtValueRow, NewAccount, NewReport, OneTimeKind, OneTimePrekey, PrekeyChanges, PrekeyCounts,
    Relation, ReportStatus, SendBatch, SendOutcome, Store, StoreError, StoreFuture, StoreStats,
    StoredEnvelope, StoredReport,
};
use super::{
    BLOCKS_SQL, CREATE_SECRET_SQL, NEW_CONVERSATIONS_SQL, REPLACE_SECRET_SQL, REPORT_SQL,
    REPORTS_SQL, SECRET_SQL, StoredSecret,
};
use super::{KT_DIRTY_DELETED_SQL, KT_DIRTY_NEW_SQL, KT_FINISH_CHECK_SQL, kt_in_sql};

pub mod floor;
mod queues;
mod readers;

use queues::{QueueLengths, View};

/// Most write operations grouped into one transaction.
pub const MAX_GROUP: usize = 512;
/// Depth of the writer's queue; senders wait (back-pressure) beyond it.
const QUEUE_DEPTH: usize = 4096;
/// How long a connection waits for a lock held by another.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL pages after which the writer checkpoints inside its own commit: a backstop only, for a
/// [`Checkpointer`] that falls behind (SQLite's default is 1 000 pages).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// How often the [`Checkpointer`] copies what was committed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Prepared statements kept by the writer's connection: every fixed statement it runs, and
/// the ack deletes of the most recent sizes.
const STATEMENT_CACHE: usize = 128;

enum Op {
    CreateAccount(NewAccount),
    TakeBundles(i64),
    UpdatePrekeys(i64, PrekeyChanges),
    Enqueue(SendBatch),
    Ack(i64, Vec<u64>),
    DeleteAccount(i64),
    Expire(u64),
    SetBlock { blocker: i64, blocked: i64, on: bool, now: u64 },
    SetFlag(String, AccountFlag, bool),
    InsertReport(NewReport),
    ResolveReport { id: u64, decision: ReportStatus, now_ms: u64 },
    CreateSecret { name: String, value: Vec<u8>, now: u64 },
    ReplaceSecret { name: String, version: u64, value: Vec<u8>, now: u64 },
    KtWrite(Vec<(Vec<u8>, Vec<u8>)>, Vec<KtValueRow>),
    KtFinishEpoch(KtEpochRow, u64),
}

enum Done {
    Id(i64),
    Bundles(Vec<BundleParts>),
    Unit,
    /// The outcome and the ids of the stored envelopes, in the order of the deliveries.
    Sent(SendOutcome, Vec<u64>),
    Count(u64),
    Changed(bool),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The SQLite store.
pub struct SqliteStore {
    pool: SqlitePool,
    /// The hot reads' own connections (see [`readers`]).
    readers: readers::Readers,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
    operations: Arc<AtomicU64>,
    /// Told of every committed envelope, by the writer (see [`Store::set_commit_listener`]).
    listener: Arc<OnceLock<CommitListener>>,
    checkpointer: Mutex<Option<Checkpointer>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Database(format!("out-of-range value in {what}"))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt(what))
}

fn get_u64(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| corrupt(col))
}

fn get_u32(row: &SqliteRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| corrupt(col))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and runs the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = connect_options(path);
        let mut conn = opts.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        conn.close().await?;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let commits = Arc::new(AtomicU64::new(0));
        let operations = Arc::new(AtomicU64::new(0));
        let listener = Arc::new(OnceLock::new());
        let writer =
            spawn_writer(path, rx, commits.clone(), operations.clone(), listener.clone()).await?;
        let checkpointer = Checkpointer::spawn(path)?;
        Ok(Self {
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: readers::Readers::new(path)?,
            pool,
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            commits,
            operations,
            listener,
        })
    }

    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let sender = self.sender.lock().await.clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        sender.send(Job { op, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The connection settings of every connection: WAL, `synchronous = FULL` (durable commits).
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Starts the writer thread on the database at `path` and waits until its connection is open.
async fn spawn_writer(
    path: &Path,
    rx: mpsc::Receiver<Job>,
    commits: Arc<AtomicU64>,
    operations: Arc<AtomicU64>,
    listener: Arc<OnceLock<CommitListener>>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let path = path.to_path_buf();
    let (ready, opened) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("parley-sqlite-writer".into())
        .spawn(move || match open_writer(&path) {
            Ok(conn) => {
                let _ = ready.send(Ok(()));
                writer_loop(conn, rx, &commits, &operations, &listener);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        })
        .map_err(|e| StoreError::Database(format!("starting the SQLite writer: {e}")))?;
    // On an error the thread has nothing left to do and ends by itself.
    opened.await.map_err(|_| StoreError::Closed)??;
    Ok(thread)
}

/// Opens a rusqlite connection with the settings of [`connect_options`] (WAL,
/// `synchronous = FULL`, the busy timeout, foreign keys) and a statement cache that holds every
/// statement the writer runs. The writer's connection, and the storage floor's.
fn open_writer(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!("journal mode {mode}, not WAL")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints are the Checkpointer's; this is the backstop.
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Copies committed WAL frames into the database file on its own thread and connection, so
/// that the writer's commits do not. SQLite's automatic checkpoint runs inside the COMMIT that
/// takes the WAL past `wal_autocheckpoint` pages (sqlite.org/wal.html §"Automatic
/// Checkpoint"): that whole group of writes then waits for the copy and the database file's
/// fsync. Here a PASSIVE checkpoint (sqlite.org/c3ref/wal_checkpoint_v2.html: it never waits
/// for, nor blocks, the writer or the readers) runs every [`CHECKPOINT_EVERY`]; the writer
/// restarts the WAL from its beginning at its next transaction once everything was copied
/// (sqlite.org/wal.html §"Avoiding Excessively Large WAL Files"), so the WAL stays small, and
/// the writer's own automatic checkpoint at [`WRITER_AUTOCHECKPOINT_PAGES`] bounds it should
/// this thread fall behind.
pub(crate) struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (in WAL mode).
    pub(crate) fn spawn(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The checkpoint's fsyncs (WAL, then database file) as every other connection's.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("parley-sqlite-checkpoint".into())
            .spawn(move || {
                // Until stopped (or the store dropped without stopping it).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // Answers (busy, frames in the WAL, frames copied); nothing to act on.
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "SQLite WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("starting the SQLite checkpointer: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and waits for it (at most one checkpoint's time).
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// The writer thread: takes every job waiting (up to [`MAX_GROUP`]), runs them as one group,
/// answers each, and closes the connection once every sender is gone.
fn writer_loop(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<Job>,
    commits: &AtomicU64,
    operations: &AtomicU64,
    listener: &OnceLock<CommitListener>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut queues = QueueLengths::default();
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = jobs.iter().map(|j| &j.op).collect();
        let results = run_group(&mut conn, &ops, &mut queues);
        if results.iter().any(Result::is_ok) {
            commits.fetch_add(1, Ordering::Relaxed);
            operations.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        // The committed envelopes go to the listener before anyone is answered, in the order
        // of their ids (the order of the group): a device's envelopes arrive in queue order.
        let mut committed = Vec::new();
        let mut purged = false;
        let mut replies = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.drain(..).zip(results) {
            purged |= result.is_ok()
                && matches!(
                    job.op,
                    Op::SetBlock { on: true, .. } | Op::DeleteAccount(_) | Op::Expire(_)
                );
            let result = match (job.op, result, listener.get()) {
                (Op::Enqueue(batch), Ok(Done::Sent(outcome, ids)), Some(_)) => {
                    committed.extend(committed_envelopes(batch, &ids));
                    Ok(Done::Sent(outcome, ids))
                }
                (_, result, _) => result,
            };
            replies.push((job.reply, result));
        }
        if let (true, Some(listen)) = (!committed.is_empty() || purged, listener.get()) {
            listen(committed, purged);
        }
        for (reply, result) in replies {
            // The caller may have gone away (request cancelled); the write stands regardless.
            let _ = reply.send(result);
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite writer connection");
    }
}

/// The envelopes a committed send stored, each with its recipient device.
fn committed_envelopes(b: SendBatch, ids: &[u64]) -> Vec<(i64, StoredEnvelope)> {
    let SendBatch {
        message_id,
        sender,
        sender_device,
        server_time_ms,
        deliveries,
        franking_tag,
        server_tag,
        franking_kid,
        ..
    } = b;
    deliveries
        .into_iter()
        .zip(ids)
        .map(|(d, id)| {
            let env = StoredEnvelope {
                id: *id,
                message_id: message_id.clone(),
                sender: sender.clone(),
                sender_device,
                server_time_ms,
                ciphertext: d.ciphertext,
                franking_tag: franking_tag.to_vec(),
                server_tag: server_tag.to_vec(),
                franking_kid,
            };
            (d.device_uid, env)
        })
        .collect()
}

/// Every operation of the group failing with `e`.
fn fail_all(jobs: &[&Op], e: &StoreError) -> Vec<Result<Done, StoreError>> {
    jobs.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect()
}

/// Runs a group of writes in one transaction. Results are only returned once COMMIT has
/// succeeded (durable); if COMMIT fails, every write fails.
///
/// The common case runs every operation straight in the transaction. When one fails (rare: a
/// full queue, a taken username), that transaction is rolled back and the group runs again
/// with a savepoint around each operation, so that only the failing one fails.
///
/// The queue lengths the group changes become known only once its COMMIT has succeeded.
fn run_group(
    conn: &mut rusqlite::Connection,
    jobs: &[&Op],
    queues: &mut QueueLengths,
) -> Vec<Result<Done, StoreError>> {
    match run_plain(conn, jobs, queues) {
        Ok(Some(results)) => results,
        Ok(None) => run_isolated(conn, jobs, queues).unwrap_or_else(|e| fail_all(jobs, &e)),
        Err(e) => fail_all(jobs, &e),
    }
}

/// Every operation in one transaction; `None` (and nothing written) when one failed.
fn run_plain(
    conn: &mut rusqlite::Connection,
    jobs: &[&Op],
    queues: &mut QueueLengths,
) -> Result<Option<Vec<Result<Done, StoreError>>>, StoreError> {
    // A transaction that is not committed (an error on the way, a failed COMMIT) is rolled
    // back when dropped.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut view = queues.begin();
    for op in jobs {
        match apply(&tx, op, &mut view) {
            Ok(d) => results.push(Ok(d)),
            Err(_) => {
                tx.rollback()?;
                return Ok(None);
            }
        }
    }
    let changes = view.into_changes();
    tx.commit()?;
    queues.commit(changes);
    Ok(Some(results))
}

/// Every operation in its own savepoint within one transaction.
fn run_isolated(
    conn: &mut rusqlite::Connection,
    jobs: &[&Op],
    queues: &mut QueueLengths,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut view = queues.begin();
    for op in jobs {
        run(&tx, "SAVEPOINT op")?;
        view.savepoint();
        let r = apply(&tx, op, &mut view);
        if r.is_err() {
            run(&tx, "ROLLBACK TO op")?;
        }
        view.end_savepoint(r.is_err());
        run(&tx, "RELEASE op")?;
        results.push(r);
    }
    let changes = view.into_changes();
    tx.commit()?;
    queues.commit(changes);
    Ok(results)
}

/// Runs a statement without parameters (prepared once, cached).
fn run(c: &rusqlite::Connection, sql: &str) -> Result<usize, StoreError> {
    Ok(c.prepare_cached(sql)?.execute([])?)
}

fn row_u64(row: &rusqlite::Row<'_>, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.get(col)?;
    u64::try_from(v).map_err(|_| corrupt(col))
}

fn row_u32(row: &rusqlite::Row<'_>, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.get(col)?;
    u32::try_from(v).map_err(|_| corrupt(col))
}

fn apply(c: &rusqlite::Connection, op: &Op, q: &mut View<'_>) -> Result<Done, StoreError> {
    match op {
        Op::CreateAccount(a) => create_account(c, a).map(Done::Id),
        Op::TakeBundles(id) => take_bundles(c, *id).map(Done::Bundles),
        Op::UpdatePrekeys(uid, ch) => update_prekeys(c, *uid, ch).map(|()| Done::Unit),
        Op::Enqueue(b) => enqueue(c, b, q).map(|(o, ids)| Done::Sent(o, ids)),
        Op::Ack(uid, ids) => ack(c, *uid, ids, q).map(Done::Count),
        Op::DeleteAccount(id) => delete_account(c, *id, q).map(|()| Done::Unit),
        Op::Expire(before) => expire(c, *before, q).map(Done::Count),
        Op::SetBlock { blocker, blocked, on, now } => {
            set_block(c, *blocker, *blocked, *on, *now, q).map(Done::Changed)
        }
        Op::SetFlag(name, flag, on) => set_flag(c, name, *flag, *on).map(|()| Done::Unit),
        Op::InsertReport(r) => insert_report(c, r).map(Done::Id),
        Op::ResolveReport { id, decision, now_ms } => {
            resolve_report(c, *id, *decision, *now_ms).map(|()| Done::Unit)
        }
        Op::CreateSecret { name, value, now } => {
            let n = c.prepare_cached(CREATE_SECRET_SQL)?.execute(params![
                name,
                value,
                to_i64(*now, "now")?
            ])?;
            Ok(Done::Changed(n == 1))
        }
        Op::ReplaceSecret { name, version, value, now } => {
            let n = c.prepare_cached(REPLACE_SECRET_SQL)?.execute(params![
                value,
                to_i64(*now, "now")?,
                name,
                to_i64(*version, "version")?
            ])?;
            Ok(Done::Changed(n == 1))
        }
        Op::KtWrite(nodes, values) => kt_write(c, nodes, values).map(|()| Done::Unit),
        Op::KtFinishEpoch(row, upto) => kt_finish_epoch(c, row, *upto).map(|()| Done::Unit),
    }
}

fn create_account(c: &rusqlite::Connection, a: &NewAccount) -> Result<i64, StoreError> {
    let now = to_i64(a.now, "now")?;
    if c.prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .exists(params![a.username])?
    {
        return Err(StoreError::UsernameTaken);
    }
    let account_id: i64 = c
        .prepare_cached(
            "INSERT INTO accounts (username, account_key, device_list, created_at, minor) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )?
        .query_row(
            params![a.username, a.account_key, a.device_list, now, i64::from(a.minor)],
            |row| row.get("id"),
        )?;
    let d = &a.device;
    let uid: i64 = c
        .prepare_cached(
            "INSERT INTO devices (account_id, device_id, certificate, token_hash, signed_prekey, \
             signed_prekey_at, last_resort_kem, last_resort_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING uid",
        )?
        .query_row(
            params![
                account_id,
                i64::from(d.device_id),
                d.certificate,
                &d.token_hash[..],
                d.signed_prekey,
                now,
                d.last_resort_kem,
                now
            ],
            |row| row.get("uid"),
        )?;
    insert_one_time(c, uid, OneTimeKind::Ec, &d.one_time)?;
    insert_one_time(c, uid, OneTimeKind::Kem, &d.one_time_kem)?;
    c.prepare_cached(KT_DIRTY_NEW_SQL)?.execute(params![a.username])?;
    Ok(uid)
}

fn insert_one_time(
    c: &rusqlite::Connection,
    uid: i64,
    kind: OneTimeKind,
    keys: &[OneTimePrekey],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut insert = c.prepare_cached(
        "INSERT INTO one_time_prekeys (device_uid, kind, key_id, prekey) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT DO NOTHING",
    )?;
    for k in keys {
        if insert.execute(params![uid, kind as i64, i64::from(k.key_id), k.bytes])? == 0 {
            return Err(StoreError::DuplicatePrekey);
        }
    }
    Ok(())
}

fn take_one(
    c: &rusqlite::Connection,
    uid: i64,
    kind: OneTimeKind,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(c.prepare_cached(
        "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys \
         WHERE device_uid = ?1 AND kind = ?2 ORDER BY key_id LIMIT 1) RETURNING prekey",
    )?
    .query_row(params![uid, kind as i64], |row| row.get("prekey"))
    .optional()?)
}

/// An account's devices in device-id order (the writer's bundle fetch and the readers'
/// account lookup).
fn device_records(
    c: &rusqlite::Connection,
    account_id: i64,
) -> Result<Vec<DeviceRecord>, StoreError> {
    c.prepare_cached(
        "SELECT uid, device_id, certificate, signed_prekey, last_resort_kem FROM devices \
         WHERE account_id = ?1 ORDER BY device_id",
    )?
    .query_and_then(params![account_id], |row| {
        Ok::<_, StoreError>(DeviceRecord {
            uid: row.get("uid")?,
            device_id: row_u32(row, "device_id")?,
            certificate: row.get("certificate")?,
            signed_prekey: row.get("signed_prekey")?,
            last_resort_kem: row.get("last_resort_kem")?,
        })
    })?
    .collect()
}

fn take_bundles(c: &rusqlite::Connection, account_id: i64) -> Result<Vec<BundleParts>, StoreError> {
    let devices = device_records(c, account_id)?;
    if devices.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut out = Vec::with_capacity(devices.len());
    for device in devices {
        let one_time = take_one(c, device.uid, OneTimeKind::Ec)?;
        let one_time_kem = take_one(c, device.uid, OneTimeKind::Kem)?;
        out.push(BundleParts { device, one_time, one_time_kem });
    }
    Ok(out)
}

fn count_one_time(
    c: &rusqlite::Connection,
    uid: i64,
    kind: OneTimeKind,
) -> Result<u64, StoreError> {
    c.prepare_cached(
        "SELECT COUNT(*) AS n FROM one_time_prekeys WHERE device_uid = ?1 AND kind = ?2",
    )?
    .query_row(params![uid, kind as i64], |row| Ok(row_u64(row, "n")))?
}

fn update_prekeys(
    c: &rusqlite::Connection,
    uid: i64,
    ch: &PrekeyChanges,
) -> Result<(), StoreError> {
    let now = to_i64(ch.now, "now")?;
    if !c.prepare_cached("SELECT 1 FROM devices WHERE uid = ?1")?.exists(params![uid])? {
        return Err(StoreError::NotFound);
    }
    for (kind, keys) in [(OneTimeKind::Ec, &ch.one_time), (OneTimeKind::Kem, &ch.one_time_kem)] {
        let have = count_one_time(c, uid, kind)?;
        if have + keys.len() as u64 > ch.max_one_time {
            return Err(StoreError::TooManyPrekeys);
        }
        insert_one_time(c, uid, kind, keys)?;
    }
    if let Some(spk) = &ch.signed_prekey {
        c.prepare_cached(
            "UPDATE devices SET signed_prekey = ?1, signed_prekey_at = ?2 WHERE uid = ?3",
        )?
        .execute(params![spk, now, uid])?;
    }
    if let Some(lr) = &ch.last_resort_kem {
        c.prepare_cached(
            "UPDATE devices SET last_resort_kem = ?1, last_resort_at = ?2 WHERE uid = ?3",
        )?
        .execute(params![lr, now, uid])?;
    }
    Ok(())
}

/// The envelope insert of [`enqueue`] (and of the storage floor); the queue's bound is checked
/// against the writer's queue lengths before it (migration 0009).
pub(crate) const INSERT_ENVELOPE_SQL: &str = "INSERT INTO envelopes (device_uid, message_id, \
    sender, sender_device, server_time, ciphertext, franking_tag, server_tag, franking_kid) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

fn enqueue(
    c: &rusqlite::Connection,
    b: &SendBatch,
    q: &mut View<'_>,
) -> Result<(SendOutcome, Vec<u64>), StoreError> {
    let time = to_i64(b.server_time_ms, "server time")?;
    // Idempotency first: a (sender device, message id) seen before is answered with its
    // first acceptance, and nothing is written. (A later failure in this operation rolls the
    // row back with the rest.)
    let fresh = c
        .prepare_cached(
            "INSERT INTO sent_messages (sender_uid, message_id, server_time) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![b.sender_uid, b.message_id, time])?;
    if fresh == 0 {
        let server_time_ms = c
            .prepare_cached(
                "SELECT server_time FROM sent_messages WHERE sender_uid = ?1 AND message_id = ?2",
            )?
            .query_row(params![b.sender_uid, b.message_id], |row| {
                Ok(row_u64(row, "server_time"))
            })??;
        return Ok((SendOutcome { server_time_ms, duplicate: true }, Vec::new()));
    }
    let mut insert = c.prepare_cached(INSERT_ENVELOPE_SQL)?;
    let mut ids = Vec::with_capacity(b.deliveries.len());
    for d in &b.deliveries {
        // A device that is gone (deleted since the sender looked its account up) takes no
        // envelope either.
        let queued = match q.len(c, d.device_uid)? {
            Some(n) if n < b.max_queue => n,
            _ => return Err(StoreError::QueueFull(d.device_id)),
        };
        insert.execute(params![
            d.device_uid,
            b.message_id,
            b.sender,
            i64::from(b.sender_device),
            time,
            d.ciphertext,
            &b.franking_tag[..],
            &b.server_tag[..],
            i64::from(b.franking_kid),
        ])?;
        q.set_len(d.device_uid, queued + 1);
        ids.push(u64::try_from(c.last_insert_rowid()).map_err(|_| corrupt("envelope id"))?);
    }
    drop(insert);
    if let Some(conv) = &b.conversation {
        c.prepare_cached(
            "INSERT INTO conversations (from_account, to_account, created_at, initiated) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            conv.from,
            conv.to,
            to_i64(conv.now, "now")?,
            i64::from(conv.initiated)
        ])?;
    }
    Ok((SendOutcome { server_time_ms: b.server_time_ms, duplicate: false }, ids))
}

/// `DELETE FROM envelopes WHERE device_uid = ?1 AND id IN (?2, …)` for `n` ids: one statement
/// per ack (shared with the storage floor). Only placeholders are generated: the ids are
/// bound, never formatted in.
pub(crate) fn delete_envelopes_sql(n: usize) -> String {
    let mut sql = String::from("DELETE FROM envelopes WHERE device_uid = ?1 AND id IN (");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
        sql.push_str(&(i + 2).to_string());
    }
    sql.push(')');
    sql
}

/// Most ids in one ack statement, well under SQLite's limit on bound parameters.
const ACK_CHUNK: usize = 500;

fn ack(
    c: &rusqlite::Connection,
    uid: i64,
    ids: &[u64],
    q: &mut View<'_>,
) -> Result<u64, StoreError> {
    let ids: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0;
    for chunk in ids.chunks(ACK_CHUNK) {
        let mut delete = c.prepare_cached(&delete_envelopes_sql(chunk.len()))?;
        let n = delete.execute(params_from_iter(std::iter::once(&uid).chain(chunk)))?;
        deleted += n as u64;
    }
    q.deleted(uid, deleted);
    Ok(deleted)
}

fn delete_account(
    c: &rusqlite::Connection,
    account_id: i64,
    q: &mut View<'_>,
) -> Result<(), StoreError> {
    let devices: Vec<i64> = c
        .prepare_cached("SELECT uid FROM devices WHERE account_id = ?1")?
        .query_map(params![account_id], |row| row.get("uid"))?
        .collect::<Result<_, _>>()?;
    c.prepare_cached(
        "DELETE FROM envelopes WHERE device_uid IN (SELECT uid FROM devices WHERE account_id = ?1)",
    )?
    .execute(params![account_id])?;
    for uid in devices {
        q.forget(uid);
    }
    // The idempotency records are keyed by message id first (migration 0008): the account's
    // devices are listed for the housekeeping's purge instead of scanning the table here.
    c.prepare_cached(SENT_PURGE_ADD_SQL)?.execute(params![account_id])?;
    c.prepare_cached(KT_DIRTY_DELETED_SQL)?.execute(params![account_id])?;
    let n = c.prepare_cached("DELETE FROM accounts WHERE id = ?1")?.execute(params![account_id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Lists an account's devices (`?1`) for the purge of their idempotency records
/// ([`purge_sent`]). A device listed while a pass is under way waits for the next pass too:
/// the current one has already looked at the keys before its cursor.
const SENT_PURGE_ADD_SQL: &str = "INSERT INTO sent_purge (sender_uid, last_pass) \
    SELECT uid, (SELECT pass + (cursor <> '') FROM sent_purge_pass WHERE id = 1) \
    FROM devices WHERE account_id = ?1 ON CONFLICT DO NOTHING";

/// Idempotency records looked at per housekeeping run by [`purge_sent`]: a bounded slice of
/// the writer's time (the table holds a queue TTL's worth of sends).
const SENT_PURGE_SLICE: i64 = 100_000;

/// One slice of the purge of deleted devices' idempotency records (migration 0008): looks at
/// up to `slice` records after the pass's cursor, in key order, deletes those of the listed
/// devices and moves the cursor. At the end of the table the pass ends, and the devices listed
/// before it began leave the list: none of their records is left. Returns the records deleted.
fn purge_sent(c: &rusqlite::Connection, slice: i64) -> Result<u64, StoreError> {
    let listed: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sent_purge)")?
        .query_row([], |r| r.get(0))?;
    if !listed {
        return Ok(0);
    }
    let (pass, cursor): (i64, String) = c
        .prepare_cached("SELECT pass, cursor FROM sent_purge_pass WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // The last key of this slice; none when the table ends within it.
    let end: Option<String> = c
        .prepare_cached(
            "SELECT message_id FROM sent_messages WHERE message_id > ?1 \
             ORDER BY message_id LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![cursor, slice.saturating_sub(1).max(0)], |r| r.get(0))
        .optional()?;
    let deleted = match &end {
        Some(end) => c
            .prepare_cached(
                "DELETE FROM sent_messages WHERE message_id > ?1 AND message_id <= ?2 \
                 AND sender_uid IN (SELECT sender_uid FROM sent_purge)",
            )?
            .execute(params![cursor, end])?,
        None => c
            .prepare_cached(
                "DELETE FROM sent_messages WHERE message_id > ?1 \
                 AND sender_uid IN (SELECT sender_uid FROM sent_purge)",
            )?
            .execute(params![cursor])?,
    };
    match end {
        Some(end) => {
            c.prepare_cached("UPDATE sent_purge_pass SET cursor = ?1 WHERE id = 1")?
                .execute(params![end])?;
        }
        None => {
            c.prepare_cached("DELETE FROM sent_purge WHERE last_pass <= ?1")?
                .execute(params![pass])?;
            c.prepare_cached(
                "UPDATE sent_purge_pass SET pass = pass + 1, cursor = '' WHERE id = 1",
            )?
            .execute([])?;
        }
    }
    Ok(deleted as u64)
}

/// Runs a `DELETE … RETURNING device_uid` of envelopes and tells the queue lengths; returns how
/// many were deleted.
fn delete_counted(
    c: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
    q: &mut View<'_>,
) -> Result<u64, StoreError> {
    let mut per_device: HashMap<i64, u64> = HashMap::new();
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    while let Some(row) = rows.next()? {
        *per_device.entry(row.get("device_uid")?).or_default() += 1;
    }
    let mut n = 0;
    for (device, deleted) in per_device {
        q.deleted(device, deleted);
        n += deleted;
    }
    Ok(n)
}

fn expire(c: &rusqlite::Connection, before_ms: u64, q: &mut View<'_>) -> Result<u64, StoreError> {
    let before = to_i64(before_ms, "expiry time")?;
    let n = delete_counted(
        c,
        "DELETE FROM envelopes WHERE server_time < ?1 RETURNING device_uid",
        params![before],
        q,
    )?;
    c.prepare_cached("DELETE FROM sent_messages WHERE server_time < ?1")?
        .execute(params![before])?;
    purge_sent(c, SENT_PURGE_SLICE)?;
    Ok(n)
}

fn set_block(
    c: &rusqlite::Connection,
    blocker: i64,
    blocked: i64,
    on: bool,
    now: u64,
    q: &mut View<'_>,
) -> Result<bool, StoreError> {
    if !on {
        let n = c
            .prepare_cached("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")?
            .execute(params![blocker, blocked])?;
        return Ok(n > 0);
    }
    let n = c
        .prepare_cached(
            "INSERT INTO blocks (blocker, blocked, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![blocker, blocked, to_i64(now, "now")?])?;
    delete_counted(
        c,
        "DELETE FROM envelopes WHERE device_uid IN \
         (SELECT uid FROM devices WHERE account_id = ?1) \
         AND sender = (SELECT username FROM accounts WHERE id = ?2) RETURNING device_uid",
        params![blocker, blocked],
        q,
    )?;
    Ok(n > 0)
}

fn set_flag(
    c: &rusqlite::Connection,
    username: &str,
    flag: AccountFlag,
    on: bool,
) -> Result<(), StoreError> {
    let n = c.prepare_cached(flag.update_sql())?.execute(params![i64::from(on), username])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn stored_report(row: &SqliteRow) -> Result<StoredReport, StoreError> {
    let status: String = row.try_get("status")?;
    let resolved: Option<i64> = row.try_get("resolved_at_ms")?;
    Ok(StoredReport {
        id: get_u64(row, "id")?,
        reporter: row.try_get("reporter")?,
        sender: row.try_get("sender")?,
        reason: row.try_get("reason")?,
        report: row.try_get("report")?,
        created_at_ms: get_u64(row, "created_at_ms")?,
        status: ReportStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        resolved_at_ms: resolved
            .map(|v| u64::try_from(v).map_err(|_| corrupt("resolved_at_ms")))
            .transpose()?,
    })
}

fn insert_report(c: &rusqlite::Connection, r: &NewReport) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "INSERT INTO reports (reporter, sender, reason, report, created_at_ms, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'open') RETURNING id",
    )?
    .query_row(
        params![
            r.reporter,
            r.sender,
            r.reason,
            r.report,
            to_i64(r.created_at_ms, "created_at_ms")?
        ],
        |row| row.get("id"),
    )?)
}

fn resolve_report(
    c: &rusqlite::Connection,
    id: u64,
    decision: ReportStatus,
    now_ms: u64,
) -> Result<(), StoreError> {
    if decision == ReportStatus::Open {
        return Err(StoreError::Database("a report cannot be resolved as open".into()));
    }
    let Ok(id) = i64::try_from(id) else { return Err(StoreError::NotFound) };
    let sender: Option<String> = c
        .prepare_cached(
            "UPDATE reports SET status = ?1, resolved_at_ms = ?2 WHERE id = ?3 AND status = 'open' \
             RETURNING sender",
        )?
        .query_row(params![decision.as_str(), to_i64(now_ms, "now")?, id], |row| row.get("sender"))
        .optional()?;
    let Some(sender) = sender else {
        let exists =
            c.prepare_cached("SELECT 1 AS one FROM reports WHERE id = ?1")?.exists(params![id])?;
        return Err(if exists { StoreError::AlreadyResolved } else { StoreError::NotFound });
    };
    let change = match decision {
        ReportStatus::Suspend => Some("UPDATE accounts SET suspended = 1 WHERE username = ?1"),
        ReportStatus::Warn => {
            Some("UPDATE accounts SET warnings = warnings + 1 WHERE username = ?1")
        }
        ReportStatus::Open | ReportStatus::Dismiss => None,
    };
    if let Some(sql) = change {
        c.prepare_cached(sql)?.execute(params![sender])?;
    }
    Ok(())
}

fn kt_write(
    c: &rusqlite::Connection,
    nodes: &[(Vec<u8>, Vec<u8>)],
    values: &[KtValueRow],
) -> Result<(), StoreError> {
    if !nodes.is_empty() {
        let mut insert = c.prepare_cached(
            "INSERT INTO kt_nodes (id, record) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        )?;
        for (id, record) in nodes {
            insert.execute(params![id, record])?;
        }
    }
    if !values.is_empty() {
        let mut insert = c.prepare_cached(
            "INSERT INTO kt_values (label, epoch, version, value, node_val, node_len) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (label, epoch) DO UPDATE SET \
             version = excluded.version, value = excluded.value, node_val = excluded.node_val, \
             node_len = excluded.node_len",
        )?;
        for v in values {
            insert.execute(params![
                v.label,
                to_i64(v.epoch, "epoch")?,
                to_i64(v.version, "version")?,
                v.value,
                v.node_val,
                i64::from(v.node_len)
            ])?;
        }
    }
    Ok(())
}

fn kt_finish_epoch(
    c: &rusqlite::Connection,
    row: &KtEpochRow,
    upto: u64,
) -> Result<(), StoreError> {
    let epoch = to_i64(row.epoch, "epoch")?;
    let existing: Option<Vec<u8>> = c
        .prepare_cached(KT_FINISH_CHECK_SQL)?
        .query_row(params![epoch], |r| r.get(0))
        .optional()?;
    match existing {
        Some(root) if root == row.root => {}
        Some(_) => return Err(StoreError::EpochConflict(row.epoch)),
        None => {
            c.prepare_cached(
                "INSERT INTO kt_epochs (epoch, root, signature, published_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                epoch,
                row.root,
                row.signature,
                to_i64(row.published_at_ms, "publication time")?
            ])?;
        }
    }
    c.prepare_cached("DELETE FROM kt_dirty WHERE seq <= ?1")?
        .execute(params![to_i64(upto, "queue position")?])?;
    Ok(())
}

fn kt_epoch_row(row: &SqliteRow) -> Result<KtEpochRow, StoreError> {
    Ok(KtEpochRow {
        epoch: get_u64(row, "epoch")?,
        root: row.try_get("root")?,
        signature: row.try_get("signature")?,
        published_at_ms: get_u64(row, "published_at_ms")?,
    })
}

fn kt_value_row(row: &SqliteRow) -> Result<KtValueRow, StoreError> {
    Ok(KtValueRow {
        label: row.try_get("label")?,
        epoch: get_u64(row, "epoch")?,
        version: get_u64(row, "version")?,
        value: row.try_get("value")?,
        node_val: row.try_get("node_val")?,
        node_len: get_u32(row, "node_len")?,
    })
}

impl Store for SqliteStore {
    fn create_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            match self.write(Op::CreateAccount(account)).await? {
                Done::Id(id) => Ok(id),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn device_auth(&self, uid: i64) -> StoreFuture<'_, Option<DeviceAuth>> {
        Box::pin(self.readers.device_auth(uid))
    }

    fn account_by_username(&self, username: &str) -> StoreFuture<'_, Option<Arc<AccountRecord>>> {
        let key = readers::AccountKey::Username(username.to_string());
        Box::pin(async move { Ok(self.readers.account(key).await?.map(Arc::new)) })
    }

    fn account_by_id(&self, id: i64) -> StoreFuture<'_, Option<AccountRecord>> {
        Box::pin(self.readers.account(readers::AccountKey::Id(id)))
    }

    fn take_bundles(&self, account_id: i64) -> StoreFuture<'_, Vec<BundleParts>> {
        Box::pin(async move {
            match self.write(Op::TakeBundles(account_id)).await? {
                Done::Bundles(b) => Ok(b),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn update_prekeys(&self, device_uid: i64, changes: PrekeyChanges) -> StoreFuture<'_, ()> {
        Box::pin(
            async move { self.write(Op::UpdatePrekeys(device_uid, changes)).await.map(|_| ()) },
        )
    }

    fn prekey_counts(&self, device_uid: i64) -> StoreFuture<'_, PrekeyCounts> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT signed_prekey_at, last_resort_at, \
                 (SELECT COUNT(*) FROM one_time_prekeys WHERE device_uid = $1 AND kind = 1) AS ec, \
                 (SELECT COUNT(*) FROM one_time_prekeys WHERE device_uid = $1 AND kind = 2) AS kem \
                 FROM devices WHERE uid = $1",
            )
            .bind(device_uid)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
            Ok(PrekeyCounts {
                one_time: get_u64(&row, "ec")?,
                one_time_kem: get_u64(&row, "kem")?,
                signed_prekey_at: get_u64(&row, "signed_prekey_at")?,
                last_resort_at: get_u64(&row, "last_resort_at")?,
            })
        })
    }

    fn enqueue(&self, batch: SendBatch) -> StoreFuture<'_, SendOutcome> {
        Box::pin(async move {
            match self.write(Op::Enqueue(batch)).await? {
                Done::Sent(o, _) => Ok(o),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn fetch(
        &self,
        device_uid: i64,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredEnvelope>> {
        Box::pin(self.readers.fetch(device_uid, after, limit))
    }

    fn ack(&self, device_uid: i64, ids: Vec<u64>) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.write(Op::Ack(device_uid, ids)).await? {
                Done::Count(n) => Ok(n),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn queue_len(&self, device_uid: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM envelopes WHERE device_uid = $1) AS queued \
                 FROM devices WHERE uid = $1",
            )
            .bind(device_uid)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
            get_u64(&row, "queued")
        })
    }

    fn delete_account(&self, account_id: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.write(Op::DeleteAccount(account_id)).await.map(|_| ()) })
    }

    fn expire(&self, before_ms: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.write(Op::Expire(before_ms)).await? {
                Done::Count(n) => Ok(n),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM accounts) AS accounts, (SELECT COUNT(*) FROM devices) AS devices, \
                 (SELECT COUNT(*) FROM envelopes) AS queued",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(StoreStats {
                accounts: get_u64(&row, "accounts")?,
                devices: get_u64(&row, "devices")?,
                queued: get_u64(&row, "queued")?,
            })
        })
    }

    fn relation(&self, from: i64, to: i64) -> StoreFuture<'_, Relation> {
        Box::pin(self.readers.relation(from, to))
    }

    fn new_conversations_since(
        &self,
        account: i64,
        since: u64,
    ) -> StoreFuture<'_, ConversationCount> {
        Box::pin(async move {
            let row = sqlx::query(NEW_CONVERSATIONS_SQL)
                .bind(account)
                .bind(to_i64(since, "since")?)
                .fetch_one(&self.pool)
                .await?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            Ok(ConversationCount {
                count: get_u64(&row, "n")?,
                oldest: oldest.map(|v| u64::try_from(v).unwrap_or(0)),
            })
        })
    }

    fn set_block(&self, blocker: i64, blocked: i64, on: bool, now: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            match self.write(Op::SetBlock { blocker, blocked, on, now }).await? {
                Done::Changed(b) => Ok(b),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn blocks(&self, blocker: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = sqlx::query(BLOCKS_SQL).bind(blocker).fetch_all(&self.pool).await?;
            rows.iter().map(|r| r.try_get("username").map_err(StoreError::from)).collect()
        })
    }

    fn set_flag(&self, username: &str, flag: AccountFlag, on: bool) -> StoreFuture<'_, ()> {
        let username = username.to_string();
        Box::pin(async move { self.write(Op::SetFlag(username, flag, on)).await.map(|_| ()) })
    }

    fn insert_report(&self, report: NewReport) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            match self.write(Op::InsertReport(report)).await? {
                Done::Id(id) => u64::try_from(id).map_err(|_| corrupt("report id")),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn reports(
        &self,
        include_resolved: bool,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredReport>> {
        Box::pin(async move {
            let rows = sqlx::query(REPORTS_SQL)
                .bind(i64::from(include_resolved))
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(stored_report).collect()
        })
    }

    fn report(&self, id: u64) -> StoreFuture<'_, Option<StoredReport>> {
        Box::pin(async move {
            let Ok(id) = i64::try_from(id) else { return Ok(None) };
            let row = sqlx::query(REPORT_SQL).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(stored_report).transpose()
        })
    }

    fn resolve_report(&self, id: u64, decision: ReportStatus, now_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(
            async move { self.write(Op::ResolveReport { id, decision, now_ms }).await.map(|_| ()) },
        )
    }

    fn secret(&self, name: &str) -> StoreFuture<'_, Option<StoredSecret>> {
        let name = name.to_string();
        Box::pin(async move {
            let row = sqlx::query(SECRET_SQL).bind(&name).fetch_optional(&self.pool).await?;
            row.map(|r| {
                Ok(StoredSecret { value: r.try_get("value")?, version: get_u64(&r, "version")? })
            })
            .transpose()
        })
    }

    fn create_secret(&self, name: &str, value: Vec<u8>, now: u64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            match self.write(Op::CreateSecret { name, value, now }).await? {
                Done::Changed(b) => Ok(b),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn replace_secret(
        &self,
        name: &str,
        version: u64,
        value: Vec<u8>,
        now: u64,
    ) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            match self.write(Op::ReplaceSecret { name, version, value, now }).await? {
                Done::Changed(b) => Ok(b),
                _ => Err(StoreError::Database("unexpected writer result".into())),
            }
        })
    }

    fn kt_nodes(&self, ids: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<(Vec<u8>, Vec<u8>)>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(KT_CHUNK) {
                let sql = kt_in_sql("SELECT id, record FROM kt_nodes", "id", chunk.len(), "");
                let mut q = sqlx::query(sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for row in q.fetch_all(&self.pool).await? {
                    out.push((row.try_get("id")?, row.try_get("record")?));
                }
            }
            Ok(out)
        })
    }

    fn kt_values(&self, labels: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<KtValueRow>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for chunk in labels.chunks(KT_CHUNK) {
                let sql = kt_in_sql(
                    "SELECT label, epoch, version, value, node_val, node_len FROM kt_values",
                    "label",
                    chunk.len(),
                    "ORDER BY label, epoch",
                );
                let mut q = sqlx::query(sql);
                for l in chunk {
                    q = q.bind(l);
                }
                for row in q.fetch_all(&self.pool).await? {
                    out.push(kt_value_row(&row)?);
                }
            }
            Ok(out)
        })
    }

    fn kt_write(
        &self,
        nodes: Vec<(Vec<u8>, Vec<u8>)>,
        values: Vec<KtValueRow>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.write(Op::KtWrite(nodes, values)).await.map(|_| ()) })
    }

    fn kt_dirty(&self, limit: u32) -> StoreFuture<'_, Vec<KtDirty>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT seq, username FROM kt_dirty ORDER BY seq LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| Ok(KtDirty { seq: get_u64(r, "seq")?, username: r.try_get("username")? }))
                .collect()
        })
    }

    fn kt_finish_epoch(&self, epoch: KtEpochRow, done_upto: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.write(Op::KtFinishEpoch(epoch, done_upto)).await.map(|_| ()) })
    }

    fn kt_epochs(&self, from: u64, limit: u32) -> StoreFuture<'_, Vec<KtEpochRow>> {
        Box::pin(async move {
            let rows = sqlx::query(KT_EPOCHS_SQL)
                .bind(i64::try_from(from).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(kt_epoch_row).collect()
        })
    }

    fn kt_latest_epoch(&self) -> StoreFuture<'_, Option<KtEpochRow>> {
        Box::pin(async move {
            let row = sqlx::query(KT_LATEST_SQL).fetch_optional(&self.pool).await?;
            row.as_ref().map(kt_epoch_row).transpose()
        })
    }

    fn set_commit_listener(&self, listener: CommitListener) -> bool {
        self.listener.set(listener).is_ok()
    }

    fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Without a sender the writer finishes the jobs already queued, closes its
            // connection and ends; the join waits for that off the async runtime.
            self.sender.lock().await.take();
            if let Some(c) = self.checkpointer.lock().await.take() {
                let _ = tokio::task::spawn_blocking(move || c.stop()).await;
            }
            if let Some(w) = self.writer.lock().await.take() {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
            self.pool.close().await;
            self.readers.close();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;

    use super::*;

    /// The writer's connection has the settings of the pool's, and the statements it shares
    /// with PostgreSQL (`$1`, `$2`, … named parameters, which SQLite numbers in order of first
    /// appearance) bind by position as written.
    #[tokio::test]
    async fn the_writer_connection_matches_the_pool_and_binds_shared_statements_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.close().await.unwrap();
        let conn = open_writer(&path).unwrap();
        let pragma = |name: &str| -> Value {
            conn.pragma_query_value(None, name, |row| row.get(0)).unwrap()
        };
        assert_eq!(pragma("journal_mode"), Value::Text("wal".into()));
        assert_eq!(pragma("synchronous"), Value::Integer(2)); // FULL
        assert_eq!(pragma("foreign_keys"), Value::Integer(1));
        assert_eq!(pragma("busy_timeout"), Value::Integer(10_000));
        assert_eq!(pragma("wal_autocheckpoint"), Value::Integer(WRITER_AUTOCHECKPOINT_PAGES));
        for sql in [
            CREATE_SECRET_SQL,
            REPLACE_SECRET_SQL,
            KT_DIRTY_NEW_SQL,
            KT_DIRTY_DELETED_SQL,
            KT_FINISH_CHECK_SQL,
            AccountFlag::Minor.update_sql(),
            AccountFlag::Suspended.update_sql(),
        ] {
            let stmt = conn.prepare(sql).unwrap();
            assert!(stmt.parameter_count() > 0, "{sql}");
            for i in 1..=stmt.parameter_count() {
                assert_eq!(stmt.parameter_name(i), Some(format!("${i}").as_str()), "{sql}");
            }
        }
        let ack = conn.prepare(&delete_envelopes_sql(3)).unwrap();
        assert_eq!(ack.parameter_count(), 4);
    }

    fn account(name: &str) -> NewAccount {
        floor::bare_account(name.into())
    }

    /// Commits reach the database file while the store runs, far below the writer's own
    /// automatic checkpoint: the checkpointer copies them (in WAL mode only a checkpoint
    /// writes the database file).
    #[tokio::test]
    async fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_account(account("bob")).await.unwrap();
        let bob = store.account_by_username("bob").await.unwrap().unwrap();
        let uid = bob.devices[0].uid;
        // Let the checkpointer copy the schema and the account first.
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();
        // About 600 KiB of envelopes: some 150 pages, far below the writer's backstop.
        for i in 0..40 {
            let batch = SendBatch {
                sender_uid: uid,
                sender: "bob".into(),
                sender_device: 1,
                message_id: format!("m{i}"),
                server_time_ms: 1,
                deliveries: vec![super::super::Delivery {
                    device_uid: uid,
                    device_id: 1,
                    ciphertext: vec![i as u8; 16 * 1024],
                }],
                max_queue: 1_000,
                conversation: None,
                franking_tag: [1; 32],
                server_tag: [2; 32],
                franking_kid: 1,
            };
            store.enqueue(batch).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let grown = loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now >= before + 512 * 1024 || std::time::Instant::now() > deadline {
                break now - before;
            }
            tokio::time::sleep(CHECKPOINT_EVERY).await;
        };
        assert!(grown >= 512 * 1024, "the database file grew by {grown} bytes only");
        store.close().await.unwrap();
    }

    /// Queue lengths survive the upgrades: migration 0007 moved them out of `devices` into
    /// `device_queues`, and 0009 drops that table (the writer counts the rows instead). A
    /// database at migration 0006 with queued envelopes opens with the same lengths, which then
    /// follow acks, a new device and the device's deletion.
    #[tokio::test]
    async fn queue_lengths_survive_the_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.db");
        {
            let mut conn = connect_options(&path).connect().await.unwrap();
            sqlx::migrate!("./migrations/sqlite").run_to(6, &mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        {
            let c = open_writer(&path).unwrap();
            c.execute_batch(
                "INSERT INTO accounts (id, username, account_key, device_list, created_at) \
                     VALUES (1, 'old', x'01', x'02', 0); \
                 INSERT INTO devices (uid, account_id, device_id, certificate, token_hash, \
                     signed_prekey, signed_prekey_at, last_resort_kem, last_resort_at) \
                     VALUES (7, 1, 1, x'03', x'04', x'05', 0, x'06', 0); \
                 INSERT INTO envelopes (device_uid, message_id, sender, sender_device, \
                     server_time, ciphertext) VALUES (7, 'a', 'x', 1, 1, x'aa'), \
                     (7, 'b', 'x', 1, 1, x'bb'), (7, 'c', 'x', 1, 1, x'cc');",
            )
            .unwrap();
            let queued: i64 =
                c.query_row("SELECT queued FROM devices WHERE uid = 7", [], |r| r.get(0)).unwrap();
            assert_eq!(queued, 3);
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.queue_len(7).await.unwrap(), 3);
        let ids: Vec<u64> = store.fetch(7, 0, 10).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(store.ack(7, ids[..2].to_vec()).await.unwrap(), 2);
        assert_eq!(store.queue_len(7).await.unwrap(), 1);
        // A new device's queue is empty; a deleted device has none.
        store.create_account(account("new")).await.unwrap();
        let new = store.account_by_username("new").await.unwrap().unwrap();
        assert_eq!(store.queue_len(new.devices[0].uid).await.unwrap(), 0);
        store.delete_account(1).await.unwrap();
        assert!(matches!(store.queue_len(7).await, Err(StoreError::NotFound)));
        store.close().await.unwrap();
        let c = open_writer(&path).unwrap();
        assert!(c.prepare("SELECT COUNT(*) FROM device_queues").is_err(), "device_queues stays");
        let triggers: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(triggers, 0);
        let has_column = c.prepare("SELECT queued FROM devices").is_ok();
        assert!(!has_column, "devices still has its queue column");
    }

    /// A deleted account's idempotency records go a slice at a time (migration 0008), with
    /// those of an account deleted while a pass was under way, behind its cursor, in the next
    /// pass; other senders' records stay.
    #[tokio::test]
    async fn deleted_senders_records_are_purged_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("purge.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let mut ids = Vec::new();
        for name in ["early", "late", "kept"] {
            store.create_account(account(name)).await.unwrap();
            let a = store.account_by_username(name).await.unwrap().unwrap();
            ids.push((a.id, a.devices[0].uid));
        }
        store.close().await.unwrap();
        let [(early, early_uid), (late, late_uid), (_, kept_uid)] = ids[..] else { panic!() };
        let c = open_writer(&path).unwrap();
        for i in 0..30 {
            for uid in [early_uid, late_uid, kept_uid] {
                c.execute(
                    "INSERT INTO sent_messages (sender_uid, message_id, server_time) \
                     VALUES (?1, ?2, 1)",
                    params![uid, format!("{i:04}")],
                )
                .unwrap();
            }
        }
        let count = |uid: i64| -> i64 {
            c.query_row("SELECT COUNT(*) FROM sent_messages WHERE sender_uid = ?1", [uid], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let pass = || -> (i64, String) {
            c.query_row("SELECT pass, cursor FROM sent_purge_pass", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let listed = || -> Vec<i64> {
            let mut s = c.prepare("SELECT sender_uid FROM sent_purge ORDER BY 1").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        // Nothing listed: nothing looked at.
        assert_eq!(purge_sent(&c, 10).unwrap(), 0);
        assert_eq!(pass(), (0, String::new()));
        let queues = QueueLengths::default();
        delete_account(&c, early, &mut queues.begin()).unwrap();
        assert_eq!(count(early_uid), 30, "the deletion itself scans nothing");
        // Ten records: keys 0000 to 0003, the last key whole.
        assert_eq!(purge_sent(&c, 10).unwrap(), 4);
        assert_eq!(pass(), (0, "0003".into()));
        delete_account(&c, late, &mut queues.begin()).unwrap();
        let mut slices = 0;
        while pass().0 == 0 {
            purge_sent(&c, 10).unwrap();
            slices += 1;
            assert!(slices < 20, "the pass does not end");
        }
        assert_eq!(count(early_uid), 0);
        // The late device's keys behind the cursor wait for the next pass.
        assert_eq!(count(late_uid), 4);
        assert_eq!(listed(), [late_uid]);
        while !listed().is_empty() {
            purge_sent(&c, 10).unwrap();
            slices += 1;
            assert!(slices < 40, "the second pass does not end");
        }
        assert_eq!(count(late_uid), 0);
        assert_eq!(count(kept_uid), 30);
        assert_eq!(pass(), (2, String::new()));
    }

    /// The read connections refuse writes: the writer thread is the only writer.
    #[tokio::test]
    async fn read_connections_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readers.db");
        SqliteStore::open(&path).await.unwrap().close().await.unwrap();
        let c = readers::open_reader(&path).unwrap();
        assert!(c.execute("DELETE FROM accounts", []).is_err());
        assert!(c.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get::<_, i64>(0)).is_ok());
    }

    /// A failing operation fails alone: the group is replayed with a savepoint per operation
    /// and the others are committed.
    #[tokio::test]
    async fn one_failing_operation_fails_alone_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.db");
        SqliteStore::open(&path).await.unwrap().close().await.unwrap();
        let mut conn = open_writer(&path).unwrap();
        let ops = [
            Op::CreateAccount(account("alice")),
            Op::CreateAccount(account("alice")),
            Op::CreateAccount(account("bob")),
        ];
        let mut queues = QueueLengths::default();
        let results = run_group(&mut conn, &ops.iter().collect::<Vec<_>>(), &mut queues);
        assert!(matches!(results[0], Ok(Done::Id(_))), "{:?}", results[0].as_ref().err());
        assert!(matches!(results[1], Err(StoreError::UsernameTaken)));
        assert!(matches!(results[2], Ok(Done::Id(_))), "{:?}", results[2].as_ref().err());
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        assert!(conn.is_autocommit(), "the group's transaction is still open");
        // A plain group after the replay.
        let results = run_group(&mut conn, &[&Op::CreateAccount(account("carol"))], &mut queues);
        assert!(matches!(results[0], Ok(Done::Id(_))));
    }

    /// The writer's queue lengths (migration 0009) follow what commits: in a group replayed
    /// with a savepoint per operation, the send that failed leaves no length behind and the
    /// others count; acks, a block's purge, expiry and the account's deletion follow; a device
    /// that is gone takes nothing. After every group the lengths agree with the rows.
    #[tokio::test]
    async fn the_writers_queue_lengths_follow_what_commits() {
        use crate::store::conformance::send;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queues.db");
        SqliteStore::open(&path).await.unwrap().close().await.unwrap();
        let mut conn = open_writer(&path).unwrap();
        let mut queues = QueueLengths::default();
        let uid =
            |conn: &mut rusqlite::Connection, q: &mut QueueLengths, name: &str| match run_group(
                conn,
                &[&Op::CreateAccount(account(name))],
                q,
            )
            .remove(0)
            {
                Ok(Done::Id(uid)) => uid,
                other => panic!("{:?}", other.err()),
            };
        let (a, b) = (uid(&mut conn, &mut queues, "alice"), uid(&mut conn, &mut queues, "bob"));
        let rows = |c: &rusqlite::Connection, uid: i64| -> u64 {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM envelopes WHERE device_uid = ?1", [uid], |r| {
                    r.get(0)
                })
                .unwrap();
            u64::try_from(n).unwrap()
        };
        let agree = |c: &rusqlite::Connection, q: &QueueLengths, uid: i64| {
            if let Some(n) = q.get(uid) {
                assert_eq!(n, rows(c, uid), "device {uid}: known {n}");
            }
        };

        // Bound 2: the third send, to a and then b, fails at b after its envelope for a was
        // stored (the group replays with savepoints, and that savepoint's length for a is
        // undone); the fourth, to a, goes through.
        let ops = [
            Op::Enqueue(send(a, "m1", &[(b, 1)], 2, 1_000)),
            Op::Enqueue(send(a, "m2", &[(b, 1)], 2, 1_000)),
            Op::Enqueue(send(b, "m3", &[(a, 1), (b, 1)], 2, 1_000)),
            Op::Enqueue(send(b, "m4", &[(a, 1)], 2, 1_000)),
        ];
        let results = run_group(&mut conn, &ops.iter().collect::<Vec<_>>(), &mut queues);
        assert!(
            matches!(results[2], Err(StoreError::QueueFull(1))),
            "{:?}",
            results[2].as_ref().err()
        );
        assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
        assert_eq!((queues.get(a), queues.get(b)), (Some(1), Some(2)));
        assert_eq!((rows(&conn, a), rows(&conn, b)), (1, 2));

        // A group whose plain run rolls back (a taken username) after a send: the replay keeps
        // the send, counted once.
        let ops =
            [Op::Enqueue(send(b, "m5", &[(a, 1)], 10, 1_000)), Op::CreateAccount(account("alice"))];
        let results = run_group(&mut conn, &ops.iter().collect::<Vec<_>>(), &mut queues);
        assert!(results[0].is_ok() && matches!(results[1], Err(StoreError::UsernameTaken)));
        assert_eq!(queues.get(a), Some(2));
        agree(&conn, &queues, a);

        // Acks, and a block's purge, counted from what was deleted.
        let ids: Vec<u64> = conn
            .prepare("SELECT id FROM envelopes WHERE device_uid = ?1 ORDER BY id")
            .unwrap()
            .query_map([b], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| u64::try_from(r.unwrap()).unwrap())
            .collect();
        let results = run_group(&mut conn, &[&Op::Ack(b, vec![ids[0], 999_999])], &mut queues);
        assert!(matches!(results[0], Ok(Done::Count(1))));
        assert_eq!(queues.get(b), Some(1));
        agree(&conn, &queues, b);
        let account_of = |c: &rusqlite::Connection, uid: i64| -> i64 {
            c.query_row("SELECT account_id FROM devices WHERE uid = ?1", [uid], |r| r.get(0))
                .unwrap()
        };
        let (acc_a, acc_b) = (account_of(&conn, a), account_of(&conn, b));
        let mut from_bob = send(b, "m8", &[(a, 1)], 10, 1_500);
        from_bob.sender = "bob".into();
        assert!(run_group(&mut conn, &[&Op::Enqueue(from_bob)], &mut queues)[0].is_ok());
        assert_eq!(queues.get(a), Some(3));
        let block = Op::SetBlock { blocker: acc_a, blocked: acc_b, on: true, now: 1 };
        assert!(run_group(&mut conn, &[&block], &mut queues)[0].is_ok());
        // Only bob's envelope goes (the others name the helper's sender).
        assert_eq!(queues.get(a), Some(2));
        agree(&conn, &queues, a);

        // Expiry of everything before t = 2 000.
        let later = Op::Enqueue(send(a, "m6", &[(b, 1)], 10, 5_000));
        assert!(run_group(&mut conn, &[&later], &mut queues)[0].is_ok());
        let results = run_group(&mut conn, &[&Op::Expire(2_000)], &mut queues);
        assert!(matches!(results[0], Ok(Done::Count(3))), "{:?}", results[0].as_ref().err());
        assert_eq!((queues.get(a), queues.get(b)), (Some(0), Some(1)));
        agree(&conn, &queues, a);
        agree(&conn, &queues, b);

        // The account's deletion: its device is forgotten, and a send to it is refused.
        assert!(run_group(&mut conn, &[&Op::DeleteAccount(acc_b)], &mut queues)[0].is_ok());
        assert_eq!(queues.get(b), None);
        let late = Op::Enqueue(send(a, "m7", &[(b, 1)], 10, 6_000));
        let results = run_group(&mut conn, &[&late], &mut queues);
        assert!(
            matches!(results[0], Err(StoreError::QueueFull(1))),
            "{:?}",
            results[0].as_ref().err()
        );
        assert_eq!(rows(&conn, b), 0);
    }
}
