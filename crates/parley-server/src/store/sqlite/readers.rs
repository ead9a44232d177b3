//! The hot reads of the SQLite store on connections of its own: the lookups every send makes
//! when the read cache misses (the sending device, the recipient's account, their relation),
//! the queue reads of delivery connections, and the account lookups by id.
//!
//! Through sqlx's pool each of those reads took several hand-offs on the async runtime (the
//! acquire, the query on the connection's worker thread, and the connection's return, which
//! sqlx runs as a spawned task). Under load the runtime's queue delayed each hand-off, and a
//! lookup of tens of microseconds waited tens to hundreds of milliseconds for a connection
//! (docs/BENCHMARKS.md, part 2, S13). Here a read is one blocking task: it takes an idle
//! connection (or opens one), runs its statement from the connection's statement cache, and
//! puts the connection back before it answers. A semaphore bounds the reads running at once,
//! and so the number of connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{OptionalExtension, params};

use super::{BUSY_TIMEOUT, row_u32, row_u64};
use crate::store::{AccountRecord, DeviceAuth, Relation, StoreError, StoredEnvelope};

/// Reads running at once (each on a blocking thread, with a connection of its own).
const READERS: usize = 4;
/// Statements each reader keeps prepared.
const READER_STATEMENTS: usize = 16;

/// How [`Readers::account`] finds an account.
pub(super) enum AccountKey {
    Username(String),
    Id(i64),
}

/// The readers; cheap to clone.
#[derive(Clone)]
pub(super) struct Readers {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// A read connection: the busy timeout of every connection, and refusing writes (the writer
/// thread is the only writer).
pub(super) fn open_reader(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.set_prepared_statement_cache_capacity(READER_STATEMENTS);
    Ok(conn)
}

impl Readers {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::with_capacity(READERS)),
                permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
        }
    }

    /// Runs `f` on a read connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit goes back as soon as the connection does, on the blocking thread: a
        // read waits only for reads that are running, not for tasks the runtime has yet to poll.
        let permit =
            self.inner.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("a read did not finish: {e}")))?
    }

    /// Closes the idle connections (reads still running close theirs when they finish).
    pub(super) fn close(&self) {
        self.inner.permits.close();
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub(super) async fn device_auth(&self, uid: i64) -> Result<Option<DeviceAuth>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT d.uid, d.account_id, a.username, d.device_id, d.token_hash, a.minor, \
                 a.created_at, a.suspended FROM devices d JOIN accounts a ON a.id = d.account_id \
                 WHERE d.uid = ?1",
            )?
            .query_row(params![uid], |row| {
                Ok((
                    row.get::<_, i64>("uid")?,
                    row.get::<_, i64>("account_id")?,
                    row.get::<_, String>("username")?,
                    row.get::<_, i64>("device_id")?,
                    row.get::<_, Vec<u8>>("token_hash")?,
                    row.get::<_, i64>("minor")?,
                    row.get::<_, i64>("created_at")?,
                    row.get::<_, i64>("suspended")?,
                ))
            })
            .optional()?
            .map(|(uid, account_id, username, device_id, hash, minor, created, suspended)| {
                Ok(DeviceAuth {
                    uid,
                    account_id,
                    username,
                    device_id: u32::try_from(device_id).map_err(|_| super::corrupt("device_id"))?,
                    token_hash: hash.try_into().map_err(|_| super::corrupt("token_hash"))?,
                    minor: minor != 0,
                    account_created_at: u64::try_from(created)
                        .map_err(|_| super::corrupt("created_at"))?,
                    suspended: suspended != 0,
                })
            })
            .transpose()
        })
        .await
    }

    /// An account with its devices (one snapshot: one read transaction).
    pub(super) async fn account(
        &self,
        key: AccountKey,
    ) -> Result<Option<AccountRecord>, StoreError> {
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let (sql, param): (&str, &dyn rusqlite::ToSql) = match &key {
                AccountKey::Username(name) => (
                    "SELECT id, username, account_key, device_list, minor, suspended, warnings \
                     FROM accounts WHERE username = ?1",
                    name,
                ),
                AccountKey::Id(id) => (
                    "SELECT id, username, account_key, device_list, minor, suspended, warnings \
                     FROM accounts WHERE id = ?1",
                    id,
                ),
            };
            let found = tx
                .prepare_cached(sql)?
                .query_row([param], |row| {
                    Ok((
                        row.get::<_, i64>("id")?,
                        row.get::<_, String>("username")?,
                        row.get::<_, Vec<u8>>("account_key")?,
                        row.get::<_, Vec<u8>>("device_list")?,
                        row.get::<_, i64>("minor")?,
                        row.get::<_, i64>("suspended")?,
                        row.get::<_, i64>("warnings")?,
                    ))
                })
                .optional()?;
            let Some((id, username, account_key, device_list, minor, suspended, warnings)) = found
            else {
                return Ok(None);
            };
            let devices = super::device_records(&tx, id)?;
            Ok(Some(AccountRecord {
                id,
                username,
                account_key,
                device_list,
                minor: minor != 0,
                suspended: suspended != 0,
                warnings: u64::try_from(warnings).map_err(|_| super::corrupt("warnings"))?,
                devices,
            }))
        })
        .await
    }

    pub(super) async fn relation(&self, from: i64, to: i64) -> Result<Relation, StoreError> {
        self.read(move |c| {
            let r = c.prepare_cached(crate::store::RELATION_SQL)?.query_row(
                params![from, to],
                |row| {
                    Ok(Relation {
                        sent: row.get::<_, i64>("sent")? != 0,
                        received: row.get::<_, i64>("received")? != 0,
                        blocked_by: row.get::<_, i64>("blocked_by")? != 0,
                    })
                },
            )?;
            Ok(r)
        })
        .await
    }

    pub(super) async fn fetch(
        &self,
        device_uid: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, message_id, sender, sender_device, server_time, ciphertext, \
                 franking_tag, server_tag, franking_kid FROM envelopes \
                 WHERE device_uid = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?
            .query_and_then(params![device_uid, after, i64::from(limit)], |row| {
                Ok::<_, StoreError>(StoredEnvelope {
                    id: row_u64(row, "id")?,
                    message_id: row.get("message_id")?,
                    sender: row.get("sender")?,
                    sender_device: row_u32(row, "sender_device")?,
                    server_time_ms: row_u64(row, "server_time")?,
                    ciphertext: row.get("ciphertext")?,
                    franking_tag: row.get("franking_tag")?,
                    server_tag: row.get("server_tag")?,
                    franking_kid: row_u32(row, "franking_kid")?,
                })
            })?
            .collect()
        })
        .await
    }
}
