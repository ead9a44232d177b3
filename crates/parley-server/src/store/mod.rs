//! Storage behind one trait, with one conformance suite ([`conformance`]) that every backend
//! passes. The SQLite backend ([`sqlite::SqliteStore`]) is the embedded default.
//!
//! What is stored: usernames, public keys and signed public objects, SHA-256 hashes of device
//! tokens, and ciphertext envelopes with their franking tags. Never plaintext, never private
//! keys or tokens in clear: with a master key, the server's own key material (admin token,
//! franking keys) is stored sealed under it ([`Store::secret`], `crate::secrets`). The one
//! exception is deliberate: an abuse report holds the messages its reporter chose to disclose.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use thiserror::Error;

pub mod cached;
pub mod conformance;
pub mod postgres;
pub mod sqlite;

/// Receives, after each commit, the envelopes it stored — (recipient device uid, envelope), in
/// id order — and whether it also deleted envelopes other than by acks (a block's purge, an
/// account deletion, the expiry): then what was handed over before may be gone.
pub type CommitListener = Box<dyn Fn(Vec<(i64, StoredEnvelope)>, bool) + Send + Sync>;

/// A boxed future returned by [`Store`] methods (keeps the trait object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Storage failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The username is already registered.
    #[error("username taken")]
    UsernameTaken,
    /// No such account or device.
    #[error("not found")]
    NotFound,
    /// A recipient device's queue is full.
    #[error("queue full for device {0}")]
    QueueFull(u32),
    /// Too many one-time prekeys would be stored for the device.
    #[error("too many one-time prekeys")]
    TooManyPrekeys,
    /// A one-time prekey id is already stored for the device.
    #[error("duplicate prekey id")]
    DuplicatePrekey,
    /// The report was already resolved.
    #[error("report already resolved")]
    AlreadyResolved,
    /// A key-transparency epoch is already recorded with another root.
    #[error("key-transparency epoch {0} is already recorded with another root")]
    EpochConflict(u64),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Database(e.to_string())
    }
}

/// [`Store::relation`]'s query (the same SQL on every backend): who has written to whom, and
/// whether the second account blocks the first.
pub(crate) const RELATION_SQL: &str = "SELECT \
    CASE WHEN EXISTS (SELECT 1 FROM conversations WHERE from_account = $1 AND to_account = $2) \
      THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS sent, \
    CASE WHEN EXISTS (SELECT 1 FROM conversations WHERE from_account = $2 AND to_account = $1) \
      THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS received, \
    CASE WHEN EXISTS (SELECT 1 FROM blocks WHERE blocker = $2 AND blocked = $1) \
      THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS blocked_by";

/// [`Store::new_conversations_since`]'s query.
pub(crate) const NEW_CONVERSATIONS_SQL: &str = "SELECT COUNT(*) AS n, MIN(created_at) AS oldest \
    FROM conversations WHERE from_account = $1 AND initiated = 1 AND created_at >= $2";

/// [`Store::blocks`]'s query.
pub(crate) const BLOCKS_SQL: &str = "SELECT a.username AS username FROM blocks b \
    JOIN accounts a ON a.id = b.blocked WHERE b.blocker = $1 ORDER BY a.username";

/// A sealed secret as stored, with its version (1 at creation, +1 per replacement).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// The sealed bytes.
    pub value: Vec<u8>,
    /// The version.
    pub version: u64,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("len", &self.value.len())
            .field("version", &self.version)
            .finish()
    }
}

/// [`Store::secret`]'s query (the same SQL on every backend).
pub(crate) const SECRET_SQL: &str = "SELECT value, version FROM secrets WHERE name = $1";
/// [`Store::create_secret`]'s statement.
pub(crate) const CREATE_SECRET_SQL: &str = "INSERT INTO secrets (name, value, version, updated_at) \
    VALUES ($1, $2, 1, $3) ON CONFLICT (name) DO NOTHING";
/// [`Store::replace_secret`]'s statement.
pub(crate) const REPLACE_SECRET_SQL: &str = "UPDATE secrets SET value = $1, version = version + 1, \
    updated_at = $2 WHERE name = $3 AND version = $4";

/// A yes/no property of an account that an admin sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountFlag {
    /// The age class: a minor (docs/SAFETY.md).
    Minor,
    /// Suspended by a moderator: the account cannot send.
    Suspended,
}

impl AccountFlag {
    /// The statement that sets it (`$1` the value, `$2` the username); the same SQL on every
    /// backend.
    pub(crate) fn update_sql(self) -> &'static str {
        match self {
            Self::Minor => "UPDATE accounts SET minor = $1 WHERE username = $2",
            Self::Suspended => "UPDATE accounts SET suspended = $1 WHERE username = $2",
        }
    }
}

/// One-time prekey kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneTimeKind {
    /// One-time X25519 prekey.
    Ec = 1,
    /// Signed one-time ML-KEM-1024 prekey.
    Kem = 2,
}

/// A one-time prekey: its id (from the encoding) and encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimePrekey {
    /// The prekey id.
    pub key_id: u32,
    /// The encoded prekey.
    pub bytes: Vec<u8>,
}

/// A device to create with its account.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The device id from the certificate.
    pub device_id: u32,
    /// The encoded certificate.
    pub certificate: Vec<u8>,
    /// SHA-256 of the device token.
    pub token_hash: [u8; 32],
    /// The encoded signed prekey.
    pub signed_prekey: Vec<u8>,
    /// The encoded last-resort KEM prekey.
    pub last_resort_kem: Vec<u8>,
    /// One-time X25519 prekeys.
    pub one_time: Vec<OneTimePrekey>,
    /// One-time KEM prekeys.
    pub one_time_kem: Vec<OneTimePrekey>,
}

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The username (validated).
    pub username: String,
    /// The account identity key.
    pub account_key: Vec<u8>,
    /// The encoded, signed device list.
    pub device_list: Vec<u8>,
    /// The first device.
    pub device: NewDevice,
    /// Declared a minor at registration.
    pub minor: bool,
    /// Creation time, Unix seconds.
    pub now: u64,
}

/// What authenticates a device.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    /// The device's internal id.
    pub uid: i64,
    /// The account's internal id.
    pub account_id: i64,
    /// The username.
    pub username: String,
    /// The device id within the account.
    pub device_id: u32,
    /// SHA-256 of the device token.
    pub token_hash: [u8; 32],
    /// The account is a minor.
    pub minor: bool,
    /// When the account was created, Unix seconds.
    pub account_created_at: u64,
    /// The account is suspended: it cannot send.
    pub suspended: bool,
}

/// A device's public record.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Internal id.
    pub uid: i64,
    /// Device id within the account.
    pub device_id: u32,
    /// Encoded certificate.
    pub certificate: Vec<u8>,
    /// Encoded signed prekey.
    pub signed_prekey: Vec<u8>,
    /// Encoded last-resort KEM prekey.
    pub last_resort_kem: Vec<u8>,
}

/// An account's public record.
#[derive(Debug, Clone)]
pub struct AccountRecord {
    /// Internal id.
    pub id: i64,
    /// Username.
    pub username: String,
    /// Account identity key.
    pub account_key: Vec<u8>,
    /// Encoded device list.
    pub device_list: Vec<u8>,
    /// The account is a minor.
    pub minor: bool,
    /// The account is suspended by a moderator.
    pub suspended: bool,
    /// Warnings moderators recorded against the account.
    pub warnings: u64,
    /// Devices, by device id.
    pub devices: Vec<DeviceRecord>,
}

/// The parts of one device's bundle, with the one-time prekeys it consumed.
#[derive(Debug, Clone)]
pub struct BundleParts {
    /// The device.
    pub device: DeviceRecord,
    /// A one-time X25519 prekey, if any was left (now deleted).
    pub one_time: Option<Vec<u8>>,
    /// A one-time KEM prekey, if any was left (now deleted); else use the last-resort key.
    pub one_time_kem: Option<Vec<u8>>,
}

/// Changes to a device's prekeys.
#[derive(Debug, Clone, Default)]
pub struct PrekeyChanges {
    /// New signed prekey.
    pub signed_prekey: Option<Vec<u8>>,
    /// New last-resort KEM prekey.
    pub last_resort_kem: Option<Vec<u8>>,
    /// One-time X25519 prekeys to add.
    pub one_time: Vec<OneTimePrekey>,
    /// One-time KEM prekeys to add.
    pub one_time_kem: Vec<OneTimePrekey>,
    /// Most one-time prekeys of each kind the device may hold.
    pub max_one_time: u64,
    /// Now, Unix seconds.
    pub now: u64,
}

/// A device's prekey stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrekeyCounts {
    /// One-time X25519 prekeys left.
    pub one_time: u64,
    /// One-time KEM prekeys left.
    pub one_time_kem: u64,
    /// When the signed prekey was uploaded (Unix seconds).
    pub signed_prekey_at: u64,
    /// When the last-resort KEM prekey was uploaded (Unix seconds).
    pub last_resort_at: u64,
}

/// One ciphertext for one device.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The recipient device's internal id.
    pub device_uid: i64,
    /// The recipient device id (for errors).
    pub device_id: u32,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
}

/// A send to store atomically.
#[derive(Debug, Clone)]
pub struct SendBatch {
    /// The sender device's internal id (idempotency key with `message_id`).
    pub sender_uid: i64,
    /// The sender's username.
    pub sender: String,
    /// The sender's device id.
    pub sender_device: u32,
    /// The client message id.
    pub message_id: String,
    /// Server time, milliseconds since the epoch.
    pub server_time_ms: u64,
    /// One per recipient device.
    pub deliveries: Vec<Delivery>,
    /// The sender's franking commitment TF (the same for every device copy).
    pub franking_tag: [u8; 32],
    /// The server tag RF over TF, sender, device, recipient account and `server_time_ms`.
    pub server_tag: [u8; 32],
    /// The franking key id that made `server_tag`.
    pub franking_kid: u32,
    /// Largest queue a recipient device may have.
    pub max_queue: u64,
    /// The first send from one account to another: recorded with the envelopes.
    pub conversation: Option<NewConversation>,
}

/// The first send from `from` to `to` (see [`Relation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewConversation {
    /// The sending account.
    pub from: i64,
    /// The receiving account.
    pub to: i64,
    /// True when neither had written to the other before (counts toward the limit on new
    /// conversations).
    pub initiated: bool,
    /// Now, Unix seconds.
    pub now: u64,
}

/// What the server knows about two accounts: who has written to whom and who blocked whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    /// The first account has sent to the second.
    pub sent: bool,
    /// The second account has sent to the first.
    pub received: bool,
    /// The second account blocks the first.
    pub blocked_by: bool,
}

/// How many new conversations an account opened since some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationCount {
    /// New conversations in the window.
    pub count: u64,
    /// When the oldest of them was opened, Unix seconds.
    pub oldest: Option<u64>,
}

/// The result of storing a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    /// When it was first accepted.
    pub server_time_ms: u64,
    /// True when the same (sender device, message id) had already been stored.
    pub duplicate: bool,
}

/// A stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Queue position, increasing per device.
    pub id: u64,
    /// Client message id.
    pub message_id: String,
    /// Sender username.
    pub sender: String,
    /// Sender device id.
    pub sender_device: u32,
    /// Acceptance time, ms since the epoch.
    pub server_time_ms: u64,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The franking commitment TF (empty for envelopes stored before franking).
    pub franking_tag: Vec<u8>,
    /// The server tag RF (empty for envelopes stored before franking).
    pub server_tag: Vec<u8>,
    /// The franking key id of `server_tag`.
    pub franking_kid: u32,
}

/// A report's state: open, or the moderator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    /// Waiting for a moderator.
    Open,
    /// Resolved without action.
    Dismiss,
    /// Resolved with a warning to the sender.
    Warn,
    /// Resolved by suspending the sender.
    Suspend,
}

impl ReportStatus {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Dismiss => "dismiss",
            Self::Warn => "warn",
            Self::Suspend => "suspend",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "dismiss" => Some(Self::Dismiss),
            "warn" => Some(Self::Warn),
            "suspend" => Some(Self::Suspend),
            _ => None,
        }
    }
}

/// A report to store.
#[derive(Clone, PartialEq, Eq)]
pub struct NewReport {
    /// The reporting account's username.
    pub reporter: String,
    /// The sender the reported (last) item names.
    pub sender: String,
    /// The reporter's reason.
    pub reason: String,
    /// The encoded `parley_proto::Report`.
    pub report: Vec<u8>,
    /// When it was received, ms since the epoch.
    pub created_at_ms: u64,
}

impl std::fmt::Debug for NewReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { reporter, sender, reason: _, report, created_at_ms } = self;
        f.debug_struct("NewReport")
            .field("reporter", reporter)
            .field("sender", sender)
            .field("report_len", &report.len())
            .field("created_at_ms", created_at_ms)
            .finish_non_exhaustive()
    }
}

/// A stored report.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// The report id.
    pub id: u64,
    /// The reporting account's username.
    pub reporter: String,
    /// The sender the reported (last) item names.
    pub sender: String,
    /// The reporter's reason.
    pub reason: String,
    /// The encoded `parley_proto::Report`.
    pub report: Vec<u8>,
    /// When it was received, ms since the epoch.
    pub created_at_ms: u64,
    /// Open, or the decision.
    pub status: ReportStatus,
    /// When it was resolved, ms since the epoch.
    pub resolved_at_ms: Option<u64>,
}

impl std::fmt::Debug for StoredReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { id, reporter, sender, reason: _, report, created_at_ms, status, resolved_at_ms } =
            self;
        f.debug_struct("StoredReport")
            .field("id", id)
            .field("reporter", reporter)
            .field("sender", sender)
            .field("report_len", &report.len())
            .field("created_at_ms", created_at_ms)
            .field("status", status)
            .field("resolved_at_ms", resolved_at_ms)
            .finish_non_exhaustive()
    }
}

/// [`Store::reports`]' query (the same SQL on every backend); `$1` = 1 for every status.
pub(crate) const REPORTS_SQL: &str = "SELECT id, reporter, sender, reason, report, created_at_ms, \
    status, resolved_at_ms FROM reports WHERE ($1 = 1 OR status = 'open') AND id > $2 \
    ORDER BY id LIMIT $3";

/// [`Store::report`]'s query.
pub(crate) const REPORT_SQL: &str = "SELECT id, reporter, sender, reason, report, created_at_ms, \
    status, resolved_at_ms FROM reports WHERE id = $1";

/// One committed value state of the key-transparency directory (akd's `ValueState` as bytes):
/// label = username, value = the account's committed hash (docs/KT.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtValueRow {
    /// The akd label (the username's bytes).
    pub label: Vec<u8>,
    /// The epoch that committed it.
    pub epoch: u64,
    /// The label's version (1 for the first value).
    pub version: u64,
    /// The committed value.
    pub value: Vec<u8>,
    /// The VRF node label's bits (32 bytes).
    pub node_val: Vec<u8>,
    /// The VRF node label's length in bits.
    pub node_len: u32,
}

/// A published key-transparency epoch: its root and the server's signature (docs/KT.md §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtEpochRow {
    /// The epoch.
    pub epoch: u64,
    /// The directory's root hash at that epoch.
    pub root: Vec<u8>,
    /// The KT signing key's signature over (epoch, root).
    pub signature: Vec<u8>,
    /// When it was published, ms since the Unix epoch.
    pub published_at_ms: u64,
}

/// A username waiting for the next key-transparency epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtDirty {
    /// Position in the queue.
    pub seq: u64,
    /// The username.
    pub username: String,
}

/// Most ids or labels per key-transparency read query (bounded statement size).
pub(crate) const KT_CHUNK: usize = 500;

/// `{head} WHERE {col} IN ($1, …, $n) {tail}` with `n` placeholders (the same SQL on every
/// backend). Safe to run: built only from this crate's constant strings and placeholder
/// numbers, never from input (the values are bound).
pub(crate) fn kt_in_sql(
    head: &'static str,
    col: &'static str,
    n: usize,
    tail: &'static str,
) -> sqlx::AssertSqlSafe<String> {
    let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    sqlx::AssertSqlSafe(format!("{head} WHERE {col} IN ({}) {tail}", marks.join(", ")))
}

/// Queues a new account for the next key-transparency epoch (`$1` the username).
pub(crate) const KT_DIRTY_NEW_SQL: &str = "INSERT INTO kt_dirty (username) VALUES ($1)";

/// Queues an account about to be deleted (`$1` its id) for the next epoch.
pub(crate) const KT_DIRTY_DELETED_SQL: &str =
    "INSERT INTO kt_dirty (username) SELECT username FROM accounts WHERE id = $1";

/// The root already recorded for an epoch (`$1`).
pub(crate) const KT_FINISH_CHECK_SQL: &str = "SELECT root FROM kt_epochs WHERE epoch = $1";

/// [`Store::kt_epochs`]' query.
pub(crate) const KT_EPOCHS_SQL: &str = "SELECT epoch, root, signature, published_at_ms \
    FROM kt_epochs WHERE epoch >= $1 ORDER BY epoch LIMIT $2";

/// [`Store::kt_latest_epoch`]'s query.
pub(crate) const KT_LATEST_SQL: &str = "SELECT epoch, root, signature, published_at_ms \
    FROM kt_epochs ORDER BY epoch DESC LIMIT 1";

/// Store-wide counts for `/metrics` and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Accounts.
    pub accounts: u64,
    /// Devices.
    pub devices: u64,
    /// Envelopes waiting in all queues.
    pub queued: u64,
}

/// Group-commit figures (for metrics and the bench).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Write operations they carried.
    pub operations: u64,
}

/// The server's storage. Every method that returns `Ok` for a write has made it durable.
pub trait Store: Send + Sync + 'static {
    /// Creates an account with its first device; returns the device's internal id.
    fn create_account(&self, account: NewAccount) -> StoreFuture<'_, i64>;
    /// Looks a device up by internal id (for authentication).
    fn device_auth(&self, uid: i64) -> StoreFuture<'_, Option<DeviceAuth>>;
    /// Looks an account up by username.
    /// Shared, not copied: a send looks its recipient up, and the read cache hands the same
    /// record to every send until it expires (it holds a device's certificate and prekeys).
    fn account_by_username(&self, username: &str) -> StoreFuture<'_, Option<Arc<AccountRecord>>>;
    /// Looks an account up by internal id.
    fn account_by_id(&self, id: i64) -> StoreFuture<'_, Option<AccountRecord>>;
    /// For each device of the account: its record plus one one-time prekey of each kind, which
    /// are deleted in the same transaction (no two callers ever receive the same one).
    fn take_bundles(&self, account_id: i64) -> StoreFuture<'_, Vec<BundleParts>>;
    /// Applies prekey changes to a device.
    fn update_prekeys(&self, device_uid: i64, changes: PrekeyChanges) -> StoreFuture<'_, ()>;
    /// A device's prekey stock.
    fn prekey_counts(&self, device_uid: i64) -> StoreFuture<'_, PrekeyCounts>;
    /// Stores a send durably and idempotently.
    fn enqueue(&self, batch: SendBatch) -> StoreFuture<'_, SendOutcome>;
    /// Envelopes of a device's queue with id > `after`, oldest first, at most `limit`.
    fn fetch(
        &self,
        device_uid: i64,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredEnvelope>>;
    /// Deletes envelopes of this device's queue; ids of other queues are ignored.
    fn ack(&self, device_uid: i64, ids: Vec<u64>) -> StoreFuture<'_, u64>;
    /// Envelopes waiting for a device.
    fn queue_len(&self, device_uid: i64) -> StoreFuture<'_, u64>;
    /// Deletes an account, its devices, prekeys and queues.
    fn delete_account(&self, account_id: i64) -> StoreFuture<'_, ()>;
    /// Deletes envelopes and send records older than `before_ms`; returns envelopes deleted.
    fn expire(&self, before_ms: u64) -> StoreFuture<'_, u64>;
    /// Store-wide counts.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;
    /// What the server knows about `from` and `to` (account ids).
    fn relation(&self, from: i64, to: i64) -> StoreFuture<'_, Relation>;
    /// New conversations `account` opened at or after `since` (Unix seconds).
    fn new_conversations_since(
        &self,
        account: i64,
        since: u64,
    ) -> StoreFuture<'_, ConversationCount>;
    /// Blocks (`on`) or unblocks `blocked` for `blocker`. Blocking also deletes what `blocked`
    /// has queued for `blocker`'s devices. Returns whether anything changed.
    fn set_block(&self, blocker: i64, blocked: i64, on: bool, now: u64) -> StoreFuture<'_, bool>;
    /// Usernames `blocker` blocks, sorted.
    fn blocks(&self, blocker: i64) -> StoreFuture<'_, Vec<String>>;
    /// Sets a yes/no property of an account (an admin's decision); [`StoreError::NotFound`]
    /// for an unknown username.
    fn set_flag(&self, username: &str, flag: AccountFlag, on: bool) -> StoreFuture<'_, ()>;
    /// Stores an abuse report (status open); returns its id.
    fn insert_report(&self, report: NewReport) -> StoreFuture<'_, u64>;
    /// Reports with id > `after`, oldest first, at most `limit`: open ones only, or all when
    /// `include_resolved`.
    fn reports(
        &self,
        include_resolved: bool,
        after: u64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<StoredReport>>;
    /// One report.
    fn report(&self, id: u64) -> StoreFuture<'_, Option<StoredReport>>;
    /// Resolves an open report with `decision` (not [`ReportStatus::Open`]) and, in the same
    /// transaction, applies it to the account named by the report's `sender`, if it still
    /// exists: `Suspend` suspends it, `Warn` adds a warning. [`StoreError::NotFound`] for an
    /// unknown id, [`StoreError::AlreadyResolved`] for a resolved one.
    fn resolve_report(&self, id: u64, decision: ReportStatus, now_ms: u64) -> StoreFuture<'_, ()>;
    /// A named secret (sealed by [`crate::secrets::Vault`]; the store never sees it in clear).
    fn secret(&self, name: &str) -> StoreFuture<'_, Option<StoredSecret>>;
    /// Stores secret `name` at version 1 unless it exists. `true` when this call created it
    /// (race-safe: of several nodes creating the same name at once, exactly one gets `true`).
    fn create_secret(&self, name: &str, value: Vec<u8>, now: u64) -> StoreFuture<'_, bool>;
    /// Replaces secret `name` only if it is still at `version` (compare-and-swap); the new
    /// version is `version + 1`. `false` when another writer changed it first (or it is gone).
    fn replace_secret(
        &self,
        name: &str,
        version: u64,
        value: Vec<u8>,
        now: u64,
    ) -> StoreFuture<'_, bool>;
    /// Key transparency: the directory records (aZKS and tree nodes) stored under these akd
    /// binary ids, as (id, record); missing ids are left out.
    fn kt_nodes(&self, ids: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<(Vec<u8>, Vec<u8>)>>;
    /// Key transparency: every value state of these labels, by label then epoch.
    fn kt_values(&self, labels: Vec<Vec<u8>>) -> StoreFuture<'_, Vec<KtValueRow>>;
    /// Key transparency: stores directory records and value states (insert or replace) in one
    /// transaction.
    fn kt_write(
        &self,
        nodes: Vec<(Vec<u8>, Vec<u8>)>,
        values: Vec<KtValueRow>,
    ) -> StoreFuture<'_, ()>;
    /// Key transparency: the oldest `limit` usernames waiting for the next epoch.
    fn kt_dirty(&self, limit: u32) -> StoreFuture<'_, Vec<KtDirty>>;
    /// Key transparency: records a published epoch and, in the same transaction, removes the
    /// waiting usernames with `seq <= done_upto`. Recording an epoch again with the same root
    /// is a no-op; with another root it fails (an epoch is never rewritten).
    fn kt_finish_epoch(&self, epoch: KtEpochRow, done_upto: u64) -> StoreFuture<'_, ()>;
    /// Key transparency: published epochs from `from` on, oldest first, at most `limit`.
    fn kt_epochs(&self, from: u64, limit: u32) -> StoreFuture<'_, Vec<KtEpochRow>>;
    /// Key transparency: the latest published epoch.
    fn kt_latest_epoch(&self) -> StoreFuture<'_, Option<KtEpochRow>>;
    /// Asks the store to hand every envelope it commits, with its recipient device, to
    /// `listener`, after the commit and before the send is answered, in queue order (and to say
    /// when a commit deleted envelopes other than by acks): a store
    /// with one writer (SQLite) can, so that connections push from memory instead of reading
    /// the queue back. Returns false (the default) when the store cannot; a listener can be
    /// set once.
    fn set_commit_listener(&self, listener: CommitListener) -> bool {
        let _ = listener;
        false
    }
    /// Group-commit counters since start.
    fn commit_stats(&self) -> CommitStats;
    /// Stops accepting writes, finishes those in flight, and closes.
    fn close(&self) -> StoreFuture<'_, ()>;
}
