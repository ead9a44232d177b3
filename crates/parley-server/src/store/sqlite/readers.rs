//! The hot reads of the SQLite store on connections of its own: the lookups every send makes
//! when the read cache misses (the sending device, the recipient's account, their relation),
//! the queue reads of delivery connections, and the account lookups by id.
//!
//! Through sqlx's pool each of those reads took several hand-offs on the async runtime (the
//! acquire, the query on the connection's worker thread, and the connection's return, which
//! sqlx runs as a spawned task). Under load the runtime's queue delayed each hand-off, and a
//! lookup of tens of microseconds waited tens to hundreds of milliseconds for a connection
//! (docs/BENCHMARKS.md, part 2, S13). Here a read is one job for one of [`READERS`] threads of
//! the store's own, each with its connection and statement cache: the caller hands the job
//! over and awaits its answer. (The first version ran each read on tokio's pool of blocking
//! threads, which under a burst of reads — 10 000 connections opening — grew to some forty
//! threads, each with its stack and its allocator's heap: S16.)

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{OptionalExtension, params};

use super::{BUSY_TIMEOUT, row_u32, row_u64};
use crate::store::{AccountRecord, DeviceAuth, Relation, StoreError, StoredEnvelope};

/// Reader threads, each with a connection of its own: the reads running at once.
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
    /// The reader threads' queue; `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<ReadJob>>>,
}

/// A read, given its thread's connection (or why the thread could not open one).
type ReadJob = Box<dyn FnOnce(Result<&rusqlite::Connection, StoreError>) + Send>;

/// A reader thread: opens its connection at its first job (after the migrations), then runs
/// jobs until the queue is closed.
fn reader_loop(path: &Path, jobs: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut conn: Option<rusqlite::Connection> = None;
    loop {
        // One thread at a time waits on the queue; the others wait for the lock.
        let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = next else { return };
        match &conn {
            Some(c) => job(Ok(c)),
            None => match open_reader(path) {
                Ok(c) => job(Ok(conn.insert(c))),
                Err(e) => job(Err(e)),
            },
        }
    }
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
    /// Starts the reader threads; their connections open at their first read.
    pub(super) fn new(path: &Path) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..READERS {
            let (rx, path) = (rx.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name(format!("parley-sqlite-r{i}"))
                .spawn(move || reader_loop(&path, &rx))
                .map_err(|e| StoreError::Database(format!("starting a reader thread: {e}")))?;
        }
        Ok(Self { inner: Arc::new(Inner { jobs: Mutex::new(Some(tx)) }) })
    }

    /// Runs `f` on a reader thread's connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone away; the read is done either way.
            let _ = tx.send(conn.and_then(f));
        });
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Database("a read did not finish".into()))?
    }

    /// Closes the queue: each thread finishes the reads already queued, closes its
    /// connection and ends. Later reads fail with [`StoreError::Closed`].
    pub(super) fn close(&self) {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
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
