//! The storage engine's floor for the server's message work (`parley bench --floor`): the
//! same envelope inserts and deletes the server runs — the very statements of
//! [`super::enqueue`] and [`super::ack`], each in its savepoint — with the same durability
//! (WAL, `synchronous = FULL`, an fsync per commit), in transactions of the mean size the
//! server's group commit produced, on one connection with nothing else around it: no HTTP, no
//! JSON, no WebSocket, no reads for push, no encryption. The server's throughput divided by
//! this one is how close the server runs to what SQLite allows for the same durable work.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;

use super::{Done, Op, SqliteStore, connect_options, run_group};
use crate::store::{Delivery, NewAccount, NewDevice, SendBatch, Store, StoreError};

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

fn account(i: usize) -> NewAccount {
    NewAccount {
        username: format!("floor{i}"),
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
        uids.push(store.create_account(account(i)).await?);
    }
    store.close().await?;
    let mut conn = connect_options(path).connect().await?;

    let mean = spec.ops_per_commit.max(1.0);
    let ack_every = spec.messages_per_ack.round().max(1.0) as usize;
    let ciphertext = vec![0x5a; spec.ciphertext_len.max(1)];
    let mut pending: Vec<Vec<u64>> = vec![Vec::new(); uids.len()];
    // The stream of operations: each message is inserted; a device's messages are acked
    // `ack_every` at a time. Transaction k takes floor((k+1)·mean) − floor(k·mean) of them,
    // so that the mean transaction is the server's.
    let mut stream: std::collections::VecDeque<Op> = std::collections::VecDeque::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut run = FloorRun { messages: 0, operations: 0, commits: 0, elapsed: Duration::ZERO };
    let (mut next_id, mut acked, mut deleted) = (1u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < spec.duration && run.messages < spec.max_messages {
        let k = run.commits as f64;
        let size = (((k + 1.0) * mean).floor() - (k * mean).floor()).max(1.0) as usize;
        while stream.len() < size {
            let d = usize::try_from(run.messages % uids.len() as u64).unwrap_or(0);
            let (Some(&to), Some(&from), Some(queue)) =
                (uids.get(d), uids.get((d + 1) % uids.len()), pending.get_mut(d))
            else {
                return Err(StoreError::Database("floor: device index out of range".into()));
            };
            stream.push_back(Op::Enqueue(SendBatch {
                sender_uid: from,
                sender: format!("floor{}", (d + 1) % uids.len()),
                sender_device: 1,
                message_id: format!("m{}", run.messages),
                server_time_ms: 1,
                deliveries: vec![Delivery {
                    device_uid: to,
                    device_id: 1,
                    ciphertext: ciphertext.clone(),
                }],
                franking_tag: [1; 32],
                server_tag: [2; 32],
                franking_kid: 1,
                max_queue: u64::MAX >> 1,
                conversation: None,
            }));
            queue.push(next_id);
            next_id += 1;
            run.messages += 1;
            if queue.len() >= ack_every {
                let ids = std::mem::take(queue);
                acked += ids.len() as u64;
                stream.push_back(Op::Ack(to, ids));
            }
        }
        ops.extend(stream.drain(..size));
        let refs: Vec<&Op> = ops.iter().collect();
        for r in run_group(&mut conn, &refs).await {
            if let Done::Count(n) = r? {
                deleted += n;
            }
        }
        run.operations += ops.len() as u64;
        run.commits += 1;
        ops.clear();
    }
    // What is still in the stream was generated but never ran.
    for op in stream {
        match op {
            Op::Ack(_, ids) => acked -= ids.len() as u64,
            Op::Enqueue(_) => run.messages -= 1,
            _ => {}
        }
    }
    run.elapsed = start.elapsed();
    let _ = sqlx::Connection::close(conn).await;
    if deleted != acked {
        return Err(StoreError::Database(format!(
            "floor: {acked} envelopes acknowledged but {deleted} deleted"
        )));
    }
    Ok(run)
}
