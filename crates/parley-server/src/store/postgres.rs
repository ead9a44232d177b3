//! The PostgreSQL backend, for several server nodes sharing one database. Every write is one
//! transaction (PostgreSQL group-commits concurrent transactions itself); the same conformance
//! suite as SQLite runs against it.
//!
//! Per-device order: a send locks each recipient device's row (`UPDATE devices … RETURNING`,
//! devices in ascending uid order so two sends cannot deadlock) before it draws envelope ids, so
//! within one device ids are committed in increasing order and a reader that has seen id N never
//! later finds a smaller id for that device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

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

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    commits: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Database(format!("out-of-range value in {what}"))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt(what))
}

fn get_u64(row: &PgRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| corrupt(col))
}

fn get_u32(row: &PgRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| corrupt(col))
}

fn device_record(row: &PgRow) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        uid: row.try_get("uid")?,
        device_id: get_u32(row, "device_id")?,
        certificate: row.try_get("certificate")?,
        signed_prekey: row.try_get("signed_prekey")?,
        last_resort_kem: row.try_get("last_resort_kem")?,
    })
}

impl PgStore {
    /// Connects with `options` (URL, and optionally a `search_path`) and runs the migrations.
    pub async fn open(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool, commits: AtomicU64::new(0) })
    }

    /// Connects to a `postgres://` URL.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        Self::open(options).await
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(
            &'c mut PgConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>,
        >,
    {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let r = f(&mut tx).await;
        match r {
            Ok(v) => {
                tx.commit().await?;
                self.commits.fetch_add(1, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
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

    async fn account_from(&self, row: Option<PgRow>) -> Result<Option<AccountRecord>, StoreError> {
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

async fn insert_one_time(
    c: &mut PgConnection,
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

async fn create_account(c: &mut PgConnection, a: NewAccount) -> Result<i64, StoreError> {
    let now = to_i64(a.now, "now")?;
    let row = sqlx::query(
        "INSERT INTO accounts (username, account_key, device_list, created_at, minor) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING RETURNING id",
    )
    .bind(&a.username)
    .bind(&a.account_key)
    .bind(&a.device_list)
    .bind(now)
    .bind(i64::from(a.minor))
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StoreError::UsernameTaken)?;
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

async fn take_one(
    c: &mut PgConnection,
    uid: i64,
    kind: OneTimeKind,
) -> Result<Option<Vec<u8>>, StoreError> {
    // SKIP LOCKED: concurrent fetchers each take a different row, never the same one.
    let row = sqlx::query(
        "DELETE FROM one_time_prekeys WHERE (device_uid, kind, key_id) = (SELECT device_uid, kind, key_id \
         FROM one_time_prekeys WHERE device_uid = $1 AND kind = $2 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING prekey",
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
    c: &mut PgConnection,
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

async fn update_prekeys(
    c: &mut PgConnection,
    uid: i64,
    ch: PrekeyChanges,
) -> Result<(), StoreError> {
    let now = to_i64(ch.now, "now")?;
    // Lock the device row so concurrent uploads cannot both pass the count check.
    let exists = sqlx::query("SELECT uid FROM devices WHERE uid = $1 FOR UPDATE")
        .bind(uid)
        .fetch_optional(&mut *c)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound);
    }
    for (kind, keys) in [(OneTimeKind::Ec, &ch.one_time), (OneTimeKind::Kem, &ch.one_time_kem)] {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM one_time_prekeys WHERE device_uid = $1 AND kind = $2",
        )
        .bind(uid)
        .bind(kind as i64)
        .fetch_one(&mut *c)
        .await?;
        if get_u64(&row, "n")? + keys.len() as u64 > ch.max_one_time {
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

async fn enqueue(c: &mut PgConnection, mut b: SendBatch) -> Result<SendOutcome, StoreError> {
    let time = to_i64(b.server_time_ms, "server time")?;
    // Claim the (sender, message id) first: a concurrent retry waits on this row and then sees
    // it, so a message is never stored twice.
    let claimed = sqlx::query(
        "INSERT INTO sent_messages (sender_uid, message_id, server_time) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING RETURNING server_time",
    )
    .bind(b.sender_uid)
    .bind(&b.message_id)
    .bind(time)
    .fetch_optional(&mut *c)
    .await?;
    if claimed.is_none() {
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
    b.deliveries.sort_by_key(|d| d.device_uid);
    for d in &b.deliveries {
        let row = sqlx::query("UPDATE devices SET queued = queued + 1 WHERE uid = $1 AND queued < $2 RETURNING queued")
            .bind(d.device_uid)
            .bind(max)
            .fetch_optional(&mut *c)
            .await?;
        if row.is_none() {
            return Err(StoreError::QueueFull(d.device_id));
        }
        sqlx::query(
            "INSERT INTO envelopes (device_uid, message_id, sender, sender_device, server_time, ciphertext, \
             franking_tag, server_tag, franking_kid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&mut *c)
        .await?;
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

async fn ack(c: &mut PgConnection, uid: i64, ids: Vec<u64>) -> Result<u64, StoreError> {
    let ids: Vec<i64> = ids.into_iter().filter_map(|i| i64::try_from(i).ok()).collect();
    let r = sqlx::query("DELETE FROM envelopes WHERE device_uid = $1 AND id = ANY($2)")
        .bind(uid)
        .bind(&ids)
        .execute(&mut *c)
        .await?;
    let deleted = r.rows_affected();
    if deleted > 0 {
        sqlx::query("UPDATE devices SET queued = GREATEST(queued - $1, 0) WHERE uid = $2")
            .bind(to_i64(deleted, "deleted")?)
            .bind(uid)
            .execute(&mut *c)
            .await?;
    }
    Ok(deleted)
}

async fn delete_account(c: &mut PgConnection, account_id: i64) -> Result<(), StoreError> {
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

async fn expire(c: &mut PgConnection, before_ms: u64) -> Result<u64, StoreError> {
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
    c: &mut PgConnection,
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
    // Lock the blocker's device rows (as a send does) before touching their queues.
    sqlx::query("SELECT uid FROM devices WHERE account_id = $1 ORDER BY uid FOR UPDATE")
        .bind(blocker)
        .fetch_all(&mut *c)
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
    c: &mut PgConnection,
    username: String,
    flag: AccountFlag,
    on: bool,
) -> Result<(), StoreError> {
    let r =
        sqlx::query(flag.update_sql()).bind(i64::from(on)).bind(&username).execute(&mut *c).await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn stored_report(row: &PgRow) -> Result<StoredReport, StoreError> {
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

async fn insert_report(c: &mut PgConnection, r: NewReport) -> Result<i64, StoreError> {
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
    c: &mut PgConnection,
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
    c: &mut PgConnection,
    nodes: Vec<(Vec<u8>, Vec<u8>)>,
    values: Vec<KtValueRow>,
) -> Result<(), StoreError> {
    for (id, record) in &nodes {
        sqlx::query(
            "INSERT INTO kt_nodes (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        )
        .bind(id)
        .bind(record)
        .execute(&mut *c)
        .await?;
    }
    for v in &values {
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
    c: &mut PgConnection,
    row: KtEpochRow,
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

fn kt_epoch_row(row: &PgRow) -> Result<KtEpochRow, StoreError> {
    Ok(KtEpochRow {
        epoch: get_u64(row, "epoch")?,
        root: row.try_get("root")?,
        signature: row.try_get("signature")?,
        published_at_ms: get_u64(row, "published_at_ms")?,
    })
}

fn kt_value_row(row: &PgRow) -> Result<KtValueRow, StoreError> {
    Ok(KtValueRow {
        label: row.try_get("label")?,
        epoch: get_u64(row, "epoch")?,
        version: get_u64(row, "version")?,
        value: row.try_get("value")?,
        node_val: row.try_get("node_val")?,
        node_len: get_u32(row, "node_len")?,
    })
}

impl Store for PgStore {
    fn create_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        Box::pin(self.write(move |c| Box::pin(create_account(c, account))))
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

    fn account_by_username(&self, username: &str) -> StoreFuture<'_, Option<Arc<AccountRecord>>> {
        let username = username.to_string();
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT id, username, account_key, device_list, minor, suspended, warnings FROM accounts WHERE username = $1",
            )
            .bind(&username)
            .fetch_optional(&self.pool)
            .await?;
            Ok(self.account_from(row).await?.map(Arc::new))
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
            self.account_from(row).await
        })
    }

    fn take_bundles(&self, account_id: i64) -> StoreFuture<'_, Vec<BundleParts>> {
        Box::pin(self.write(move |c| Box::pin(take_bundles(c, account_id))))
    }

    fn update_prekeys(&self, device_uid: i64, changes: PrekeyChanges) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| Box::pin(update_prekeys(c, device_uid, changes))))
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
        Box::pin(self.write(move |c| Box::pin(enqueue(c, batch))))
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
        Box::pin(self.write(move |c| Box::pin(ack(c, device_uid, ids))))
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
        Box::pin(self.write(move |c| Box::pin(delete_account(c, account_id))))
    }

    fn expire(&self, before_ms: u64) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |c| Box::pin(expire(c, before_ms))))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM accounts) AS accounts, (SELECT COUNT(*) FROM devices) AS devices, \
                 (SELECT COALESCE(SUM(queued), 0)::BIGINT FROM devices) AS queued",
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
        Box::pin(self.write(move |c| Box::pin(set_block(c, blocker, blocked, on, now))))
    }

    fn blocks(&self, blocker: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = sqlx::query(BLOCKS_SQL).bind(blocker).fetch_all(&self.pool).await?;
            rows.iter().map(|r| r.try_get("username").map_err(StoreError::from)).collect()
        })
    }

    fn set_flag(&self, username: &str, flag: AccountFlag, on: bool) -> StoreFuture<'_, ()> {
        let username = username.to_string();
        Box::pin(self.write(move |c| Box::pin(set_flag(c, username, flag, on))))
    }

    fn insert_report(&self, report: NewReport) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let id = self.write(move |c| Box::pin(insert_report(c, report))).await?;
            u64::try_from(id).map_err(|_| corrupt("report id"))
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
        Box::pin(self.write(move |c| Box::pin(resolve_report(c, id, decision, now_ms))))
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
        Box::pin(self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query(CREATE_SECRET_SQL)
                    .bind(&name)
                    .bind(&value)
                    .bind(to_i64(now, "now")?)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected() == 1)
            })
        }))
    }

    fn replace_secret(
        &self,
        name: &str,
        version: u64,
        value: Vec<u8>,
        now: u64,
    ) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query(REPLACE_SECRET_SQL)
                    .bind(&value)
                    .bind(to_i64(now, "now")?)
                    .bind(&name)
                    .bind(to_i64(version, "version")?)
                    .execute(&mut *c)
                    .await?;
                Ok(r.rows_affected() == 1)
            })
        }))
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
        Box::pin(self.write(move |c| Box::pin(kt_write(c, nodes, values))))
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
        Box::pin(self.write(move |c| Box::pin(kt_finish_epoch(c, epoch, done_upto))))
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
        let c = self.commits.load(Ordering::Relaxed);
        CommitStats { commits: c, operations: c }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.pool.close().await;
            Ok(())
        })
    }
}
