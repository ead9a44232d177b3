//! The storage engine's floor for the server's message work (`parley bench --floor`): the
//! same envelope rows inserted (same table, columns and sizes) and deleted one by one as acks
//! delete them, with the same durability (WAL, `synchronous = FULL`, an fsync per commit),
//! through the same driver (rusqlite, prepared statements), as the server's writer, on a
//! thread of its own, in transactions of the mean size the server's group commit produced —
//! and nothing else: no savepoints, no idempotency or queue-length bookkeeping, no HTTP, JSON,
//! WebSocket, reads for push or encryption. The server's throughput divided by this one is how
//! close the server runs to what SQLite allows for the durable part of delivery.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{TransactionBehavior, params, params_from_iter};

use super::{Checkpointer, INSERT_ENVELOPE_SQL, SqliteStore, open_writer};
use crate::store::{NewAccount, NewDevice, Store, StoreError};

/// One operation of the floor: a message's envelope row, or an ack deleting several.
enum FloorOp {
    Insert { to: i64, sender: usize, message: u64 },
    Delete { to: i64, ids: Vec<u64> },
}

/// What the floor run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloorSpec {
    /// Recipient devices; messages go round-robin over them, as the bench's clients send.
    pub devices: usize,
    /// Operations per transaction (the mean group the server committed; rounded, at least 1).
    pub ops_per_commit: f64,
    /// Messages acknowledged by one ack operation (as the bench's clients acked; at least 1).
    pub messages_per_ack: f64,
    /// Ciphertext bytes per envelope.
    pub ciphertext_len: usize,
    /// Stop after this long...
    pub duration: Duration,
    /// ...or after this many messages, whichever comes first.
    pub max_messages: u64,
}

/// What the floor run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloorRun {
    /// Messages stored and then deleted.
    pub messages: u64,
    /// Operations (inserts of one message, acks of several).
    pub operations: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl FloorRun {
    /// Messages per second through the storage engine.
    pub fn messages_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.messages as f64 / s } else { 0.0 }
    }

    /// Mean operations per transaction.
    pub fn ops_per_commit(&self) -> f64 {
        if self.commits == 0 { 0.0 } else { self.operations as f64 / self.commits as f64 }
    }
}

/// An account with one device and no key material: a row for envelopes to point at.
pub(super) fn bare_account(username: String) -> NewAccount {
    NewAccount {
        username,
        account_key: vec![0; 32],
        device_list: Vec::new(),
        device: NewDevice {
            device_id: 1,
            certificate: Vec::new(),
            token_hash: [0; 32],
            signed_prekey: Vec::new(),
            last_resort_kem: Vec::new(),
            one_time: Vec::new(),
            one_time_kem: Vec::new(),
        },
        minor: false,
        now: 0,
    }
}

/// Runs the floor in a new database at `path` (which must not exist yet: envelope ids are
/// predicted from a fresh sequence, and the run checks at the end that every ack deleted what
/// it named).
pub async fn storage_floor(path: &Path, spec: FloorSpec) -> Result<FloorRun, StoreError> {
    if path.exists() {
        return Err(StoreError::Database(format!("{} already exists", path.display())));
    }
    // The schema and the accounts, through the store itself.
    let store = SqliteStore::open(path).await?;
    let mut uids = Vec::new();
    for i in 0..spec.devices.max(2) {
        uids.push(store.create_account(bare_account(format!("floor{i}"))).await?);
    }
    store.close().await?;
    // The run blocks on the database, as the server's writer thread does: off the runtime.
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || run_floor(&path, spec, &uids))
        .await
        .map_err(|e| StoreError::Database(format!("floor: {e}")))?
}

/// The floor's work, on its own connection with the writer's settings.
fn run_floor(path: &Path, spec: FloorSpec, uids: &[i64]) -> Result<FloorRun, StoreError> {
    let mut conn = open_writer(path)?;
    // Checkpoints off the commits, as the server's store runs them.
    let checkpointer = Checkpointer::spawn(path)?;
    let run = floor_loop(&mut conn, spec, uids);
    checkpointer.stop();
    let _ = conn.close();
    run
}

fn floor_loop(
    conn: &mut rusqlite::Connection,
    spec: FloorSpec,
    uids: &[i64],
) -> Result<FloorRun, StoreError> {
    let mean = spec.ops_per_commit.max(1.0);
    let ack_every = spec.messages_per_ack.round().max(1.0) as usize;
    let ciphertext = vec![0x5a_u8; spec.ciphertext_len.max(1)];
    let mut pending: Vec<Vec<u64>> = vec![Vec::new(); uids.len()];
    // The stream of operations: each message is inserted; a device's messages are deleted
    // `ack_every` at a time. Transaction k takes floor((k+1)·mean) − floor(k·mean) of them,
    // so that the mean transaction is the server's.
    let mut stream: std::collections::VecDeque<FloorOp> = std::collections::VecDeque::new();
    let mut run = FloorRun { messages: 0, operations: 0, commits: 0, elapsed: Duration::ZERO };
    let (mut generated, mut next_id, mut deleted) = (0u64, 1u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < spec.duration && run.messages < spec.max_messages {
        let k = run.commits as f64;
        let size = (((k + 1.0) * mean).floor() - (k * mean).floor()).max(1.0) as usize;
        while stream.len() < size {
            let d = usize::try_from(generated % uids.len() as u64).unwrap_or(0);
            let (Some(&to), Some(queue)) = (uids.get(d), pending.get_mut(d)) else {
                return Err(StoreError::Database("floor: device index out of range".into()));
            };
            stream.push_back(FloorOp::Insert {
                to,
                sender: (d + 1) % uids.len(),
                message: generated,
            });
            generated += 1;
            queue.push(next_id);
            next_id += 1;
            if queue.len() >= ack_every {
                stream.push_back(FloorOp::Delete { to, ids: std::mem::take(queue) });
            }
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in stream.drain(..size) {
            match op {
                // The row of `super::enqueue`.
                FloorOp::Insert { to, sender, message } => {
                    tx.prepare_cached(INSERT_ENVELOPE_SQL)?.execute(params![
                        to,
                        format!("m{message}"),
                        format!("floor{sender}"),
                        1i64,
                        1i64,
                        ciphertext,
                        &[1u8; 32][..],
                        &[2u8; 32][..],
                        1i64
                    ])?;
                    run.messages += 1;
                }
                // The delete of `super::ack`: one statement per ack.
                FloorOp::Delete { to, ids } => {
                    let ids = ids
                        .into_iter()
                        .map(|id| {
                            i64::try_from(id).map_err(|_| StoreError::Database("floor: id".into()))
                        })
                        .collect::<Result<Vec<i64>, _>>()?;
                    for chunk in ids.chunks(super::ACK_CHUNK) {
                        let sql = super::delete_envelopes_sql(chunk.len());
                        let n = tx
                            .prepare_cached(&sql)?
                            .execute(params_from_iter(std::iter::once(&to).chain(chunk)))?;
                        deleted += n as u64;
                    }
                }
            }
            run.operations += 1;
        }
        tx.commit()?;
        run.commits += 1;
    }
    run.elapsed = start.elapsed();
    // Every envelope inserted and not yet acked is still there; every ack deleted its rows.
    let left: i64 = conn.query_row("SELECT COUNT(*) FROM envelopes", [], |row| row.get(0))?;
    if u64::try_from(left).ok() != run.messages.checked_sub(deleted) {
        return Err(StoreError::Database(format!(
            "floor: {} envelopes inserted, {deleted} deleted, but {left} left",
            run.messages
        )));
    }
    Ok(run)
}
