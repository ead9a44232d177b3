//! A read cache in front of any [`Store`], for the lookups every send repeats: the sending
//! device's credentials ([`Store::device_auth`]), the recipient's account and devices
//! ([`Store::account_by_username`]) and the relation between the two ([`Store::relation`]).
//! Without it each send costs four more round trips to the database; on SQLite those are
//! thread hand-offs that cost more than the queries (docs/BENCHMARKS.md, "parley bench").
//!
//! Consistency: every write through this store that can change a cached answer empties the
//! cache once it has committed, and a read that raced with such a write is not cached (a
//! generation counter), so one node always answers from committed state. Another node's
//! writes are seen within [`DEFAULT_TTL`]: a block, suspension or deletion made on node A
//! takes effect on node B at most that long later (docs/OPERATIONS.md). Absent accounts and
//! devices are never cached, so a new account is usable at once everywhere.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    AccountFlag, AccountRecord, BundleParts, CommitListener, CommitStats, ConversationCount,
    DeviceAuth, NewAccount, NewReport, PrekeyChanges, PrekeyCounts, Relation, ReportStatus,
    SendBatch, SendOutcome, Store, StoreFuture, StoreStats, StoredEnvelope, StoredReport,
    StoredSecret,
};
use super::{KtDirty, KtEpochRow, KtValueRow};

/// How long an answer is reused.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);
/// Entries per map before the map is emptied (bounds memory under any load).
const MAX_ENTRIES: usize = 100_000;

struct Map<K, V> {
    /// Each answer with the moment it stops being used.
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self { entries: HashMap::new() }
    }

    fn get(&self, k: &K) -> Option<V> {
        let now = Instant::now();
        self.entries.get(k).filter(|(until, _)| now < *until).map(|(_, v)| v.clone())
    }

    /// Keeps `v` for a lifetime drawn uniformly from [ttl/2, ttl]: answers cached together
    /// (the first sends after a start, or after a write emptied the cache) do not all expire
    /// together, so their re-reads spread out instead of reaching the database's few read
    /// connections in one burst (docs/BENCHMARKS.md, part 2, S13). No answer outlives `ttl`.
    fn put(&mut self, k: K, v: V, ttl: Duration) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        let life = ttl.mul_f64(rand::RngExt::random_range(&mut rand::rng(), 0.5..=1.0));
        self.entries.insert(k, (Instant::now() + life, v));
    }
}

struct Maps {
    generation: u64,
    auth: Map<i64, DeviceAuth>,
    accounts: Map<String, Arc<AccountRecord>>,
    relations: Map<(i64, i64), Relation>,
}

/// The cache; see the module documentation.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    maps: Mutex<Maps>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Caches `inner`'s hot lookups for `ttl`.
    pub fn new(inner: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            maps: Mutex::new(Maps {
                generation: 0,
                auth: Map::new(),
                accounts: Map::new(),
                relations: Map::new(),
            }),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything (after a write that may change a cached answer has committed).
    fn invalidate(&self) {
        let mut m = self.maps();
        m.generation = m.generation.wrapping_add(1);
        m.auth.entries.clear();
        m.accounts.entries.clear();
        m.relations.entries.clear();
    }

    /// Runs a write, then empties the cache (whether or not it succeeded: a failed write may
    /// still have committed on a backend that lost its answer).
    fn write<'a, T: Send + 'a>(&'a self, fut: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let r = fut.await;
            self.invalidate();
            r
        })
    }
}

impl Store for CachedStore {
    fn create_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        self.write(self.inner.create_account(account))
    }

    fn device_auth(&self, uid: i64) -> StoreFuture<'_, Option<DeviceAuth>> {
        Box::pin(async move {
            let generation = {
                let m = self.maps();
                if let Some(v) = m.auth.get(&uid) {
                    return Ok(Some(v));
                }
                m.generation
            };
            let v = self.inner.device_auth(uid).await?;
            if let Some(found) = &v {
                let mut m = self.maps();
                if m.generation == generation {
                    m.auth.put(uid, found.clone(), self.ttl);
                }
            }
            Ok(v)
        })
    }

    fn account_by_username(&self, username: &str) -> StoreFuture<'_, Option<Arc<AccountRecord>>> {
        let username = username.to_string();
        Box::pin(async move {
            let generation = {
                let m = self.maps();
                if let Some(v) = m.accounts.get(&username) {
                    return Ok(Some(v));
                }
                m.generation
            };
            let v = self.inner.account_by_username(&username).await?;
            if let Some(found) = &v {
                let mut m = self.maps();
                if m.generation == generation {
                    m.accounts.put(username, found.clone(), self.ttl);
                }
            }
            Ok(v)
        })
    }

    fn account_by_id(&self, id: i64) -> StoreFuture<'_, Option<AccountRecord>> {
        self.inner.account_by_id(id)
    }

    fn take_bundles(&self, account_id: i64) -> StoreFuture<'_, Vec<BundleParts>> {
        // Only one-time prekeys change, which nothing here caches.
        self.inner.take_bundles(account_id)
    }

    fn update_prekeys(&self, device_uid: i64, changes: PrekeyChanges) -> StoreFuture<'_, ()> {
        self.write(self.inner.update_prekeys(device_uid, changes))
    }

    fn prekey_counts(&self, device_uid: i64) -> StoreFuture<'_, PrekeyCounts> {
        self.inner.prekey_counts(device_uid)
    }

    fn enqueue(&self, batch: SendBatch) -> StoreFuture<'_, SendOutcome> {
        // The first send between two accounts changes their relation; later ones change
        // nothing cached.
        if batch.conversation.is_some() {
            self.write(self.inner.enqueue(batch))
        } else {
            self.inner.enqueue(batch)
        }
    }

    fn fetch(
        &self,
        device_uid: i64,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredEnvelope>> {
        self.inner.fetch(device_uid, after, limit)
    }

    fn ack(&self, device_uid: i64, ids: Vec<u64>) -> StoreFuture<'_, u64> {
        self.inner.ack(device_uid, ids)
    }

    fn queue_len(&self, device_uid: i64) -> StoreFuture<'_, u64> {
        self.inner.queue_len(device_uid)
    }

    fn delete_account(&self, account_id: i64) -> StoreFuture<'_, ()> {
        self.write(self.inner.delete_account(account_id))
    }

    fn expire(&self, before_ms: u64) -> StoreFuture<'_, u64> {
        self.inner.expire(before_ms)
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        self.inner.stats()
    }

    fn relation(&self, from: i64, to: i64) -> StoreFuture<'_, Relation> {
        Box::pin(async move {
            let generation = {
                let m = self.maps();
                if let Some(v) = m.relations.get(&(from, to)) {
                    return Ok(v);
                }
                m.generation
            };
            let v = self.inner.relation(from, to).await?;
            let mut m = self.maps();
            if m.generation == generation {
                m.relations.put((from, to), v, self.ttl);
            }
            Ok(v)
        })
    }

    fn new_conversations_since(
        &self,
        account: i64,
        since: u64,
    ) -> StoreFuture<'_, ConversationCount> {
        self.inner.new_conversations_since(account, since)
    }

    fn set_block(&self, blocker: i64, blocked: i64, on: bool, now: u64) -> StoreFuture<'_, bool> {
        self.write(self.inner.set_block(blocker, blocked, on, now))
    }

    fn blocks(&self, blocker: i64) -> StoreFuture<'_, Vec<String>> {
        self.inner.blocks(blocker)
    }

    fn set_flag(&self, username: &str, flag: AccountFlag, on: bool) -> StoreFuture<'_, ()> {
        self.write(self.inner.set_flag(username, flag, on))
    }

    fn insert_report(&self, report: NewReport) -> StoreFuture<'_, u64> {
        self.inner.insert_report(report)
    }

    fn reports(
        &self,
        include_resolved: bool,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredReport>> {
        self.inner.reports(include_resolved, after, limit)
    }

    fn report(&self, id: u64) -> StoreFuture<'_, Option<StoredReport>> {
        self.inner.report(id)
    }

    fn resolve_report(&self, id: u64, decision: ReportStatus, now_ms: u64) -> StoreFuture<'_, ()> {
        self.write(self.inner.resolve_report(id, decision, now_ms))
    }

    fn secret(&self, name: &str) -> StoreFuture<'_, Option<StoredSecret>> {
        self.inner.secret(name)
    }

    fn create_secret(&self, name: &str, value: Vec<u8>, now: u64) -> StoreFuture<'_, bool> {
        self.inner.create_secret(name, value, now)
    }

    fn replace_secret(
        &self,
        name: &str,
        version: u64,
        value: Vec<u8>,
        now: u64,
    ) -> StoreFuture<'_, bool> {
        self.inner.replace_secret(name, version, value, now)
    }

    // Key transparency: nothing cached (akd keeps its own caches).
    fn kt_nodes(&self, ids: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.kt_nodes(ids)
    }

    fn kt_values(&self, labels: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<KtValueRow>> {
        self.inner.kt_values(labels)
    }

    fn kt_write(
        &self,
        nodes: Vec<(Vec<u8>, Vec<u8>)>,
        values: Vec<KtValueRow>,
    ) -> StoreFuture<'_, ()> {
        self.inner.kt_write(nodes, values)
    }

    fn kt_dirty(&self, limit: u32) -> StoreFuture<'_, Vec<KtDirty>> {
        self.inner.kt_dirty(limit)
    }

    fn kt_finish_epoch(&self, epoch: KtEpochRow, done_upto: u64) -> StoreFuture<'_, ()> {
        self.inner.kt_finish_epoch(epoch, done_upto)
    }

    fn kt_epochs(&self, from: u64, limit: u32) -> StoreFuture<'_, Vec<KtEpochRow>> {
        self.inner.kt_epochs(from, limit)
    }

    fn kt_latest_epoch(&self) -> StoreFuture<'_, Option<KtEpochRow>> {
        self.inner.kt_latest_epoch()
    }

    fn set_commit_listener(&self, listener: CommitListener) -> bool {
        self.inner.set_commit_listener(listener)
    }

    fn commit_stats(&self) -> CommitStats {
        self.inner.commit_stats()
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.invalidate();
        self.inner.close()
    }
}
