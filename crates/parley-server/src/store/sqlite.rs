//! The embedded SQLite backend: WAL journal, `synchronous = FULL` (a commit is fsynced, so an
//! acknowledged write survives power loss), and **group commit**: one writer task owns the
//! write connection and runs every write that is waiting, up to [`MAX_GROUP`], in a single
//! transaction — many sends share one fsync. Each operation runs inside its own savepoint, so
//! one failing operation does not abort the others. Reads use a small pool of WAL readers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{
    AccountFlag, AccountRecord, BundleParts, CommitStats, ConversationCount, DeviceAuth,
    DeviceRecord, KT_CHUNK, KT_EPOCHS_SQL, KT_LATEST_SQL, KtDirty, KtEpochRow, KtValueRow,
    NewAccount, NewReport, OneTimeKind, OneTimePrekey, PrekeyChanges, PrekeyCounts, Relation,
    ReportStatus, SendBatch, SendOutcome, Store, StoreError, StoreFuture, StoreStats,
    StoredEnvelope, StoredReport,
};
use super::{
    BLOCKS_SQL, CREATE_SECRET_SQL, NEW_CONVERSATIONS_SQL, RELATION_SQL, REPLACE_SECRET_SQL,
    REPORT_SQL, REPORTS_SQL, SECRET_SQL, StoredSecret,
};
use super::{KT_DIRTY_DELETED_SQL, KT_DIRTY_NEW_SQL, KT_FINISH_CHECK_SQL, kt_in_sql};

pub mod floor;

/// Most write operations grouped into one transaction.
pub const MAX_GROUP: usize = 512;
/// Depth of the writer's queue; senders wait (back-pressure) beyond it.
const QUEUE_DEPTH: usize = 4096;

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
    Sent(SendOutcome),
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
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
    operations: Arc<AtomicU64>,
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
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let commits = Arc::new(AtomicU64::new(0));
        let operations = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(writer_loop(conn, rx, commits.clone(), operations.clone()));
        Ok(Self {
            pool,
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            commits,
            operations,
        })
    }

    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let sender = self.sender.lock().await.clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        sender.send(Job { op, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn devices_of(&self, account_id: i64) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT uid, device_id, certificate, signed_prekey, last_resort_kem FROM devices \
             WHERE account_id = $1 ORDER BY device_id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_record).collect()
    }

    async fn account_where(
        &self,
        row: Option<SqliteRow>,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        Ok(Some(AccountRecord {
            id,
            username: row.try_get("username")?,
            account_key: row.try_get("account_key")?,
            device_list: row.try_get("device_list")?,
            minor: row.try_get::<i64, _>("minor")? != 0,
            suspended: row.try_get::<i64, _>("suspended")? != 0,
            warnings: get_u64(&row, "warnings")?,
            devices: self.devices_of(id).await?,
        }))
    }
}

fn device_record(row: &SqliteRow) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        uid: row.try_get("uid")?,
        device_id: get_u32(row, "device_id")?,
        certificate: row.try_get("certificate")?,
        signed_prekey: row.try_get("signed_prekey")?,
        last_resort_kem: row.try_get("last_resort_kem")?,
    })
}

/// The connection settings of every connection: WAL, `synchronous = FULL` (durable commits).
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
}

async fn writer_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    commits: Arc<AtomicU64>,
    operations: Arc<AtomicU64>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = jobs.iter().map(|j| &j.op).collect();
        let results = run_group(&mut conn, &ops).await;
        if results.iter().any(Result::is_ok) {
            commits.fetch_add(1, Ordering::Relaxed);
            operations.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        for (job, result) in jobs.drain(..).zip(results) {
            // The caller may have gone away (request cancelled); the write stands regardless.
            let _ = job.reply.send(result);
        }
    }
    let _ = conn.close().await;
}

/// Runs a group of writes in one transaction. Results are only returned once COMMIT has
/// succeeded (durable); if COMMIT fails, every write fails.
///
/// The common case runs every operation straight in the transaction. When one fails (rare: a
/// full queue, a taken username), that transaction is rolled back and the group runs again
/// with a savepoint around each operation, so that only the failing one fails.
async fn run_group(conn: &mut SqliteConnection, jobs: &[&Op]) -> Vec<Result<Done, StoreError>> {
    match run_plain(conn, jobs).await {
        Ok(Some(results)) => results,
        Ok(None) => run_isolated(conn, jobs).await,
        Err(e) => jobs.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect(),
    }
}

/// Every operation in one transaction; `None` (and nothing written) when one failed.
async fn run_plain(
    conn: &mut SqliteConnection,
    jobs: &[&Op],
) -> Result<Option<Vec<Result<Done, StoreError>>>, StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(jobs.len());
    for op in jobs {
        match apply(&mut tx, op).await {
            Ok(d) => results.push(Ok(d)),
            Err(_) => {
                tx.rollback().await?;
                return Ok(None);
            }
        }
    }
    tx.commit().await?;
    Ok(Some(results))
}

/// Every operation in its own savepoint within one transaction.
async fn run_isolated(conn: &mut SqliteConnection, jobs: &[&Op]) -> Vec<Result<Done, StoreError>> {
    let fail_all =
        |e: &StoreError| jobs.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect();
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e.into()),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for op in jobs {
        if let Err(e) = sqlx::query("SAVEPOINT op").execute(&mut *tx).await {
            return fail_all(&e.into());
        }
        let r = apply(&mut tx, op).await;
        let end = if r.is_ok() { "RELEASE op" } else { "ROLLBACK TO op" };
        if let Err(e) = sqlx::query(end).execute(&mut *tx).await {
            return fail_all(&e.into());
        }
        if r.is_err()
            && let Err(e) = sqlx::query("RELEASE op").execute(&mut *tx).await
        {
            return fail_all(&e.into());
        }
        results.push(r);
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => fail_all(&e.into()),
    }
}

async fn apply(c: &mut SqliteConnection, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::CreateAccount(a) => create_account(c, a).await.map(Done::Id),
        Op::TakeBundles(id) => take_bundles(c, *id).await.map(Done::Bundles),
        Op::UpdatePrekeys(uid, ch) => update_prekeys(c, *uid, ch).await.map(|()| Done::Unit),
        Op::Enqueue(b) => enqueue(c, b).await.map(Done::Sent),
        Op::Ack(uid, ids) => ack(c, *uid, ids).await.map(Done::Count),
        Op::DeleteAccount(id) => delete_account(c, *id).await.map(|()| Done::Unit),
        Op::Expire(before) => expire(c, *before).await.map(Done::Count),
        Op::SetBlock { blocker, blocked, on, now } => {
            set_block(c, *blocker, *blocked, *on, *now).await.map(Done::Changed)
        }
        Op::SetFlag(name, flag, on) => set_flag(c, name, *flag, *on).await.map(|()| Done::Unit),
        Op::InsertReport(r) => insert_report(c, r).await.map(Done::Id),
        Op::ResolveReport { id, decision, now_ms } => {
            resolve_report(c, *id, *decision, *now_ms).await.map(|()| Done::Unit)
        }
        Op::CreateSecret { name, value, now } => {
            let r = sqlx::query(CREATE_SECRET_SQL)
                .bind(name)
                .bind(value)
                .bind(to_i64(*now, "now")?)
                .execute(&mut *c)
                .await?;
            Ok(Done::Changed(r.rows_affected() == 1))
        }
        Op::ReplaceSecret { name, version, value, now } => {
            let r = sqlx::query(REPLACE_SECRET_SQL)
                .bind(value)
                .bind(to_i64(*now, "now")?)
                .bind(name)
                .bind(to_i64(*version, "version")?)
                .execute(&mut *c)
                .await?;
            Ok(Done::Changed(r.rows_affected() == 1))
        }
        Op::KtWrite(nodes, values) => kt_write(c, nodes, values).await.map(|()| Done::Unit),
        Op::KtFinishEpoch(row, upto) => kt_finish_epoch(c, row, *upto).await.map(|()| Done::Unit),
    }
}

async fn create_account(c: &mut SqliteConnection, a: &NewAccount) -> Result<i64, StoreError> {
    let now = to_i64(a.now, "now")?;
    let exists = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
        .bind(&a.username)
        .fetch_optional(&mut *c)
        .await?;
    if exists.is_some() {
        return Err(StoreError::UsernameTaken);
    }
    let row = sqlx::query(
        "INSERT INTO accounts (username, account_key, device_list, created_at, minor) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&a.username)
    .bind(&a.account_key)
    .bind(&a.device_list)
    .bind(now)
    .bind(i64::from(a.minor))
    .fetch_one(&mut *c)
    .await?;
    let account_id: i64 = row.try_get("id")?;
    let d = &a.device;
    let row = sqlx::query(
        "INSERT INTO devices (account_id, device_id, certificate, token_hash, signed_prekey, signed_prekey_at, \
         last_resort_kem, last_resort_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING uid",
    )
    .bind(account_id)
    .bind(i64::from(d.device_id))
    .bind(&d.certificate)
    .bind(&d.token_hash[..])
    .bind(&d.signed_prekey)
    .bind(now)
    .bind(&d.last_resort_kem)
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    let uid: i64 = row.try_get("uid")?;
    insert_one_time(c, uid, OneTimeKind::Ec, &d.one_time).await?;
    insert_one_time(c, uid, OneTimeKind::Kem, &d.one_time_kem).await?;
    sqlx::query(KT_DIRTY_NEW_SQL).bind(&a.username).execute(&mut *c).await?;
    Ok(uid)
}

async fn insert_one_time(
    c: &mut SqliteConnection,
    uid: i64,
    kind: OneTimeKind,
    keys: &[OneTimePrekey],
) -> Result<(), StoreError> {
    for k in keys {
        let r = sqlx::query(
            "INSERT INTO one_time_prekeys (device_uid, kind, key_id, prekey) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(kind as i64)
        .bind(i64::from(k.key_id))
        .bind(&k.bytes)
        .execute(&mut *c)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::DuplicatePrekey);
        }
    }
    Ok(())
}

async fn take_one(
    c: &mut SqliteConnection,
    uid: i64,
    kind: OneTimeKind,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query(
        "DELETE FROM one_time_prekeys WHERE rowid = (SELECT rowid FROM one_time_prekeys \
         WHERE device_uid = $1 AND kind = $2 ORDER BY key_id LIMIT 1) RETURNING prekey",
    )
    .bind(uid)
    .bind(kind as i64)
    .fetch_optional(&mut *c)
    .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("prekey")?),
        None => None,
    })
}

async fn take_bundles(
    c: &mut SqliteConnection,
    account_id: i64,
) -> Result<Vec<BundleParts>, StoreError> {
    let rows = sqlx::query(
        "SELECT uid, device_id, certificate, signed_prekey, last_resort_kem FROM devices \
         WHERE account_id = $1 ORDER BY device_id",
    )
    .bind(account_id)
    .fetch_all(&mut *c)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let device = device_record(row)?;
        let one_time = take_one(c, device.uid, OneTimeKind::Ec).await?;
        let one_time_kem = take_one(c, device.uid, OneTimeKind::Kem).await?;
        out.push(BundleParts { device, one_time, one_time_kem });
    }
    Ok(out)
}

async fn count_one_time(
    c: &mut SqliteConnection,
    uid: i64,
    kind: OneTimeKind,
) -> Result<u64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM one_time_prekeys WHERE device_uid = $1 AND kind = $2",
    )
    .bind(uid)
    .bind(kind as i64)
    .fetch_one(&mut *c)
    .await?;
    get_u64(&row, "n")
}

async fn update_prekeys(
    c: &mut SqliteConnection,
    uid: i64,
    ch: &PrekeyChanges,
) -> Result<(), StoreError> {
    let now = to_i64(ch.now, "now")?;
    let exists = sqlx::query("SELECT 1 FROM devices WHERE uid = $1")
        .bind(uid)
        .fetch_optional(&mut *c)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound);
    }
    for (kind, keys) in [(OneTimeKind::Ec, &ch.one_time), (OneTimeKind::Kem, &ch.one_time_kem)] {
        let have = count_one_time(c, uid, kind).await?;
        if have + keys.len() as u64 > ch.max_one_time {
            return Err(StoreError::TooManyPrekeys);
        }
        insert_one_time(c, uid, kind, keys).await?;
    }
    if let Some(spk) = &ch.signed_prekey {
        sqlx::query("UPDATE devices SET signed_prekey = $1, signed_prekey_at = $2 WHERE uid = $3")
            .bind(spk)
            .bind(now)
            .bind(uid)
            .execute(&mut *c)
            .await?;
    }
    if let Some(lr) = &ch.last_resort_kem {
        sqlx::query("UPDATE devices SET last_resort_kem = $1, last_resort_at = $2 WHERE uid = $3")
            .bind(lr)
            .bind(now)
            .bind(uid)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

async fn enqueue(c: &mut SqliteConnection, b: &SendBatch) -> Result<SendOutcome, StoreError> {
    let time = to_i64(b.server_time_ms, "server time")?;
    // Idempotency first: a (sender device, message id) seen before is answered with its
    // first acceptance, and nothing is written. (A later failure in this operation rolls the
    // row back with the rest.)
    let fresh = sqlx::query(
        "INSERT INTO sent_messages (sender_uid, message_id, server_time) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(b.sender_uid)
    .bind(&b.message_id)
    .bind(time)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if fresh == 0 {
        let row = sqlx::query(
            "SELECT server_time FROM sent_messages WHERE sender_uid = $1 AND message_id = $2",
        )
        .bind(b.sender_uid)
        .bind(&b.message_id)
        .fetch_one(&mut *c)
        .await?;
        return Ok(SendOutcome { server_time_ms: get_u64(&row, "server_time")?, duplicate: true });
    }
    let max = to_i64(b.max_queue, "max queue")?;
    for d in &b.deliveries {
        // One statement: the envelope, only while the device's queue is under its bound (the
        // counter follows the envelopes by trigger, migration 0006).
        let stored = sqlx::query(
            "INSERT INTO envelopes (device_uid, message_id, sender, sender_device, server_time, ciphertext, \
             franking_tag, server_tag, franking_kid) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE (SELECT queued FROM devices WHERE uid = $1) < $10",
        )
        .bind(d.device_uid)
        .bind(&b.message_id)
        .bind(&b.sender)
        .bind(i64::from(b.sender_device))
        .bind(time)
        .bind(&d.ciphertext)
        .bind(&b.franking_tag[..])
        .bind(&b.server_tag[..])
        .bind(i64::from(b.franking_kid))
        .bind(max)
        .execute(&mut *c)
        .await?
        .rows_affected();
        if stored == 0 {
            return Err(StoreError::QueueFull(d.device_id));
        }
    }
    if let Some(conv) = &b.conversation {
        sqlx::query(
            "INSERT INTO conversations (from_account, to_account, created_at, initiated) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(conv.from)
        .bind(conv.to)
        .bind(to_i64(conv.now, "now")?)
        .bind(i64::from(conv.initiated))
        .execute(&mut *c)
        .await?;
    }
    Ok(SendOutcome { server_time_ms: b.server_time_ms, duplicate: false })
}

/// `DELETE FROM envelopes WHERE device_uid = $1 AND id IN ($2, …)` for `n` ids: one statement
/// per ack (shared with the storage floor). Only placeholders are generated: the ids are
/// bound, never formatted in.
pub(crate) fn delete_envelopes_sql(n: usize) -> String {
    let mut sql = String::from("DELETE FROM envelopes WHERE device_uid = $1 AND id IN (");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('$');
        sql.push_str(&(i + 2).to_string());
    }
    sql.push(')');
    sql
}

async fn ack(c: &mut SqliteConnection, uid: i64, ids: &[u64]) -> Result<u64, StoreError> {
    let ids: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0;
    // At most 500 ids per statement, well under SQLite's limit on bound parameters.
    for chunk in ids.chunks(500) {
        let sql = delete_envelopes_sql(chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(uid);
        for id in chunk {
            q = q.bind(*id);
        }
        deleted += q.execute(&mut *c).await?.rows_affected();
    }
    // The queue counter follows by trigger (migration 0006).
    Ok(deleted)
}

async fn delete_account(c: &mut SqliteConnection, account_id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM envelopes WHERE device_uid IN (SELECT uid FROM devices WHERE account_id = $1)",
    )
    .bind(account_id)
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM sent_messages WHERE sender_uid IN (SELECT uid FROM devices WHERE account_id = $1)")
        .bind(account_id)
        .execute(&mut *c)
        .await?;
    sqlx::query(KT_DIRTY_DELETED_SQL).bind(account_id).execute(&mut *c).await?;
    let r =
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account_id).execute(&mut *c).await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn expire(c: &mut SqliteConnection, before_ms: u64) -> Result<u64, StoreError> {
    let before = to_i64(before_ms, "expiry time")?;
    let r = sqlx::query("DELETE FROM envelopes WHERE server_time < $1")
        .bind(before)
        .execute(&mut *c)
        .await?;
    sqlx::query("DELETE FROM sent_messages WHERE server_time < $1")
        .bind(before)
        .execute(&mut *c)
        .await?;
    if r.rows_affected() > 0 {
        sqlx::query("UPDATE devices SET queued = (SELECT COUNT(*) FROM envelopes WHERE device_uid = devices.uid)")
            .execute(&mut *c)
            .await?;
    }
    Ok(r.rows_affected())
}

async fn set_block(
    c: &mut SqliteConnection,
    blocker: i64,
    blocked: i64,
    on: bool,
    now: u64,
) -> Result<bool, StoreError> {
    if !on {
        let r = sqlx::query("DELETE FROM blocks WHERE blocker = $1 AND blocked = $2")
            .bind(blocker)
            .bind(blocked)
            .execute(&mut *c)
            .await?;
        return Ok(r.rows_affected() > 0);
    }
    let r = sqlx::query(
        "INSERT INTO blocks (blocker, blocked, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(to_i64(now, "now")?)
    .execute(&mut *c)
    .await?;
    let purged = sqlx::query(
        "DELETE FROM envelopes WHERE device_uid IN (SELECT uid FROM devices WHERE account_id = $1) \
         AND sender = (SELECT username FROM accounts WHERE id = $2)",
    )
    .bind(blocker)
    .bind(blocked)
    .execute(&mut *c)
    .await?;
    if purged.rows_affected() > 0 {
        sqlx::query(
            "UPDATE devices SET queued = (SELECT COUNT(*) FROM envelopes WHERE device_uid = devices.uid) \
             WHERE account_id = $1",
        )
        .bind(blocker)
        .execute(&mut *c)
        .await?;
    }
    Ok(r.rows_affected() > 0)
}

async fn set_flag(
    c: &mut SqliteConnection,
    username: &str,
    flag: AccountFlag,
    on: bool,
) -> Result<(), StoreError> {
    let r =
        sqlx::query(flag.update_sql()).bind(i64::from(on)).bind(username).execute(&mut *c).await?;
    if r.rows_affected() == 0 {
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

async fn insert_report(c: &mut SqliteConnection, r: &NewReport) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO reports (reporter, sender, reason, report, created_at_ms, status) \
         VALUES ($1, $2, $3, $4, $5, 'open') RETURNING id",
    )
    .bind(&r.reporter)
    .bind(&r.sender)
    .bind(&r.reason)
    .bind(&r.report)
    .bind(to_i64(r.created_at_ms, "created_at_ms")?)
    .fetch_one(&mut *c)
    .await?;
    Ok(row.try_get("id")?)
}

async fn resolve_report(
    c: &mut SqliteConnection,
    id: u64,
    decision: ReportStatus,
    now_ms: u64,
) -> Result<(), StoreError> {
    if decision == ReportStatus::Open {
        return Err(StoreError::Database("a report cannot be resolved as open".into()));
    }
    let Ok(id) = i64::try_from(id) else { return Err(StoreError::NotFound) };
    let row = sqlx::query(
        "UPDATE reports SET status = $1, resolved_at_ms = $2 WHERE id = $3 AND status = 'open' \
         RETURNING sender",
    )
    .bind(decision.as_str())
    .bind(to_i64(now_ms, "now")?)
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else {
        let exists = sqlx::query("SELECT 1 AS one FROM reports WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        return Err(if exists.is_some() {
            StoreError::AlreadyResolved
        } else {
            StoreError::NotFound
        });
    };
    let sender: String = row.try_get("sender")?;
    let change = match decision {
        ReportStatus::Suspend => Some("UPDATE accounts SET suspended = 1 WHERE username = $1"),
        ReportStatus::Warn => {
            Some("UPDATE accounts SET warnings = warnings + 1 WHERE username = $1")
        }
        ReportStatus::Open | ReportStatus::Dismiss => None,
    };
    if let Some(sql) = change {
        sqlx::query(sql).bind(&sender).execute(&mut *c).await?;
    }
    Ok(())
}

async fn kt_write(
    c: &mut SqliteConnection,
    nodes: &[(Vec<u8>, Vec<u8>)],
    values: &[KtValueRow],
) -> Result<(), StoreError> {
    for (id, record) in nodes {
        sqlx::query(
            "INSERT INTO kt_nodes (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        )
        .bind(id)
        .bind(record)
        .execute(&mut *c)
        .await?;
    }
    for v in values {
        sqlx::query(
            "INSERT INTO kt_values (label, epoch, version, value, node_val, node_len) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (label, epoch) DO UPDATE SET \
             version = excluded.version, value = excluded.value, node_val = excluded.node_val, \
             node_len = excluded.node_len",
        )
        .bind(&v.label)
        .bind(to_i64(v.epoch, "epoch")?)
        .bind(to_i64(v.version, "version")?)
        .bind(&v.value)
        .bind(&v.node_val)
        .bind(i64::from(v.node_len))
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

async fn kt_finish_epoch(
    c: &mut SqliteConnection,
    row: &KtEpochRow,
    upto: u64,
) -> Result<(), StoreError> {
    let epoch = to_i64(row.epoch, "epoch")?;
    let existing: Option<Vec<u8>> =
        sqlx::query_scalar(KT_FINISH_CHECK_SQL).bind(epoch).fetch_optional(&mut *c).await?;
    match existing {
        Some(root) if root == row.root => {}
        Some(_) => return Err(StoreError::EpochConflict(row.epoch)),
        None => {
            sqlx::query(
                "INSERT INTO kt_epochs (epoch, root, signature, published_at_ms) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(epoch)
            .bind(&row.root)
            .bind(&row.signature)
            .bind(to_i64(row.published_at_ms, "publication time")?)
            .execute(&mut *c)
            .await?;
        }
    }
    sqlx::query("DELETE FROM kt_dirty WHERE seq <= $1")
        .bind(to_i64(upto, "queue position")?)
        .execute(&mut *c)
        .await?;
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
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT d.uid, d.account_id, a.username, d.device_id, d.token_hash, a.minor, \
                 a.created_at, a.suspended FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.uid = $1",
            )
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let hash: Vec<u8> = row.try_get("token_hash")?;
            Ok(Some(DeviceAuth {
                uid: row.try_get("uid")?,
                account_id: row.try_get("account_id")?,
                username: row.try_get("username")?,
                device_id: get_u32(&row, "device_id")?,
                token_hash: hash.try_into().map_err(|_| corrupt("token_hash"))?,
                minor: row.try_get::<i64, _>("minor")? != 0,
                account_created_at: get_u64(&row, "created_at")?,
                suspended: row.try_get::<i64, _>("suspended")? != 0,
            }))
        })
    }

    fn account_by_username(&self, username: &str) -> StoreFuture<'_, Option<AccountRecord>> {
        let username = username.to_string();
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT id, username, account_key, device_list, minor, suspended, warnings FROM accounts WHERE username = $1",
            )
            .bind(&username)
            .fetch_optional(&self.pool)
            .await?;
            self.account_where(row).await
        })
    }

    fn account_by_id(&self, id: i64) -> StoreFuture<'_, Option<AccountRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT id, username, account_key, device_list, minor, suspended, warnings FROM accounts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            self.account_where(row).await
        })
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
                Done::Sent(o) => Ok(o),
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
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, message_id, sender, sender_device, server_time, ciphertext, franking_tag, \
                 server_tag, franking_kid FROM envelopes WHERE device_uid = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(device_uid)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredEnvelope {
                        id: get_u64(row, "id")?,
                        message_id: row.try_get("message_id")?,
                        sender: row.try_get("sender")?,
                        sender_device: get_u32(row, "sender_device")?,
                        server_time_ms: get_u64(row, "server_time")?,
                        ciphertext: row.try_get("ciphertext")?,
                        franking_tag: row.try_get("franking_tag")?,
                        server_tag: row.try_get("server_tag")?,
                        franking_kid: get_u32(row, "franking_kid")?,
                    })
                })
                .collect()
        })
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
            let row = sqlx::query("SELECT queued FROM devices WHERE uid = $1")
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
                 (SELECT COALESCE(SUM(queued), 0) FROM devices) AS queued",
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
        Box::pin(async move {
            let row = sqlx::query(RELATION_SQL).bind(from).bind(to).fetch_one(&self.pool).await?;
            Ok(Relation {
                sent: row.try_get::<i64, _>("sent")? != 0,
                received: row.try_get::<i64, _>("received")? != 0,
                blocked_by: row.try_get::<i64, _>("blocked_by")? != 0,
            })
        })
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

    fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.sender.lock().await.take();
            if let Some(w) = self.writer.lock().await.take() {
                let _ = w.await;
            }
            self.pool.close().await;
            Ok(())
        })
    }
}
