//! The encrypted local store: one SQLite file, `HOME/parley.db` (WAL, `synchronous = FULL`).
//!
//! ## Key and sealing
//!
//! ```text
//! passphrase ──Argon2id(salt, m_cost KiB, t_cost, p_cost)──> 32-byte store key
//! sealed value = nonce[24] || XChaCha20-Poly1305(store key, nonce, AD = label, plaintext)
//! ```
//!
//! The `meta` row holds the format version, the salt, the Argon2id parameters actually used
//! (the defaults m = 64 MiB, t = 3, p = 1, or m = 256 KiB, t = 1, p = 1 when the account was
//! created with `PARLEY_INSECURE_TEST_KDF=1`) and a key-check value (a sealed constant), so a
//! wrong passphrase is reported as such and never used. Each sealed value's AD is a label that
//! names its table and row (`"account|token"`, `"session|bob|1"`, `"message|bob|<id>"`), so a
//! sealed blob cannot be moved to another row.
//!
//! ## What is sealed and what is in clear
//!
//! Sealed: the account identity secret, the device identity secret, the prekey store, every
//! session's state, every message body, outbox payloads, the server token.
//!
//! In clear: the server URL, our username and device id, public keys (certificate, device
//! list, account key), contacts' usernames and pinned public account keys, message ids,
//! timestamps, delivery state, counters and event kinds (gaps, key changes). Someone holding
//! the file learns who we talk to and when, not what was said nor any key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngExt;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use zeroize::{Zeroize, Zeroizing};

use crate::ClientError;

/// The store's format version.
pub(crate) const FORMAT_VERSION: i64 = 3;
/// The database file name inside HOME.
pub(crate) const DB_FILE: &str = "parley.db";
/// Default Argon2id memory cost, KiB (64 MiB).
pub const DEFAULT_M_COST_KIB: u32 = 64 * 1024;
/// Default Argon2id passes.
pub const DEFAULT_T_COST: u32 = 3;
/// Default Argon2id lanes.
pub const DEFAULT_P_COST: u32 = 1;
/// Test-only Argon2id memory cost (KiB), used when `PARLEY_INSECURE_TEST_KDF=1` at creation.
pub const TEST_M_COST_KIB: u32 = 256;
/// Test-only Argon2id passes.
pub const TEST_T_COST: u32 = 1;
/// The environment variable that selects the weak test parameters at account creation.
pub const INSECURE_TEST_KDF_ENV: &str = "PARLEY_INSECURE_TEST_KDF";

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const CHECK_LABEL: &str = "meta|check";
const CHECK_PLAINTEXT: &[u8] = b"parley local store v1";

/// Argon2id parameters as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KdfParams {
    pub(crate) m_cost: u32,
    pub(crate) t_cost: u32,
    pub(crate) p_cost: u32,
}

impl KdfParams {
    /// The parameters for a new store (the environment may select the test ones).
    pub(crate) fn for_new_store(insecure_test_kdf: bool) -> Self {
        if insecure_test_kdf || std::env::var(INSECURE_TEST_KDF_ENV).is_ok_and(|v| v == "1") {
            Self { m_cost: TEST_M_COST_KIB, t_cost: TEST_T_COST, p_cost: 1 }
        } else {
            Self { m_cost: DEFAULT_M_COST_KIB, t_cost: DEFAULT_T_COST, p_cost: DEFAULT_P_COST }
        }
    }
}

/// The 32-byte store key; zeroized on drop, never printed.
struct StoreKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(***)")
    }
}

fn derive_key(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<StoreKey, ClientError> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| ClientError::CorruptStore(format!("invalid Argon2id parameters: {e}")))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    kdf.hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| ClientError::Crypto(format!("Argon2id: {e}")))?;
    Ok(StoreKey(out))
}

/// Derives the key on the blocking pool (Argon2id takes a noticeable time and 64 MiB).
async fn derive_key_blocking(
    passphrase: &[u8],
    salt: Vec<u8>,
    p: KdfParams,
) -> Result<StoreKey, ClientError> {
    let pw = Zeroizing::new(passphrase.to_vec());
    tokio::task::spawn_blocking(move || derive_key(&pw, &salt, p))
        .await
        .map_err(|e| ClientError::Crypto(format!("key derivation task failed: {e}")))?
}

fn seal_with(key: &StoreKey, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
    let cipher = XChaCha20Poly1305::new_from_slice(&key.0[..])
        .map_err(|_| ClientError::Crypto("store key length".into()))?;
    let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
    let nonce = XNonce::from(nonce_bytes);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad: label.as_bytes() })
        .map_err(|_| ClientError::Crypto("sealing failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with(key: &StoreKey, label: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce_bytes, ct) = sealed.split_first_chunk::<NONCE_LEN>()?;
    let cipher = XChaCha20Poly1305::new_from_slice(&key.0[..]).ok()?;
    let nonce = XNonce::from(*nonce_bytes);
    cipher.decrypt(&nonce, Payload { msg: ct, aad: label.as_bytes() }).ok().map(Zeroizing::new)
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        salt BLOB NOT NULL,
        m_cost INTEGER NOT NULL,
        t_cost INTEGER NOT NULL,
        p_cost INTEGER NOT NULL,
        key_check BLOB NOT NULL)",
    "CREATE TABLE account (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        username TEXT NOT NULL,
        server_url TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        account_key BLOB NOT NULL,
        certificate BLOB NOT NULL,
        device_list BLOB NOT NULL,
        account_secret BLOB NOT NULL,
        device_secret BLOB NOT NULL,
        prekeys BLOB NOT NULL,
        token BLOB NOT NULL)",
    "CREATE TABLE contacts (
        username TEXT PRIMARY KEY,
        account_key BLOB NOT NULL,
        first_seen_ms INTEGER NOT NULL)",
    "CREATE TABLE sessions (
        peer TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        handshake_id BLOB NOT NULL,
        state BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        active_seq INTEGER NOT NULL,
        PRIMARY KEY (peer, device_id, handshake_id))",
    "CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        body BLOB,
        sent_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER,
        state TEXT NOT NULL,
        UNIQUE (sender, message_id))",
    "CREATE INDEX messages_peer ON messages (peer, seq)",
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        peer TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        detail BLOB,
        at_ms INTEGER NOT NULL)",
    "CREATE TABLE outbox (
        message_id TEXT PRIMARY KEY,
        recipient TEXT NOT NULL,
        payload BLOB NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_error TEXT)",
];

/// Format 2 (safety, docs/SAFETY.md): the age class, what this account knows of each peer
/// (accepted as a contact, blocked), the on-device filter settings, and franking state. Applied on top of
/// format 1 both for new stores and when a format-1 store is opened.
const SCHEMA_V2: &[&str] = &[
    "ALTER TABLE account ADD COLUMN minor INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE peers (
        username TEXT PRIMARY KEY,
        accepted INTEGER NOT NULL,
        blocked INTEGER NOT NULL,
        since_ms INTEGER NOT NULL)",
    "CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)",
    "CREATE TABLE filter_rules (
        pattern TEXT NOT NULL,
        regex INTEGER NOT NULL,
        PRIMARY KEY (pattern, regex))",
    // Franking (PROTOCOL.md §12). Our hash chain per recipient account (sealed: the previous
    // body's hash could confirm a guessed plaintext); what we sealed for each message we sent
    // (reused on retries, so a retry never skips a chain position; reports include it as our
    // own context); what each received message carried, for reports; the chain positions seen
    // per sender device, and the gaps in them.
    "CREATE TABLE frank_chains (
        peer TEXT PRIMARY KEY,
        state BLOB NOT NULL)",
    "CREATE TABLE franked_sent (
        message_id TEXT PRIMARY KEY,
        peer TEXT NOT NULL,
        content BLOB NOT NULL,
        tf BLOB NOT NULL)",
    "CREATE TABLE franked_received (
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sender_device INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        content BLOB NOT NULL,
        tf BLOB NOT NULL,
        rf BLOB NOT NULL,
        kid INTEGER NOT NULL,
        server_time_ms INTEGER NOT NULL,
        PRIMARY KEY (sender, message_id))",
    "CREATE TABLE chain_seen (
        peer TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (peer, device_id))",
    "CREATE TABLE chain_gaps (
        peer TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        from_seq INTEGER NOT NULL,
        to_seq INTEGER NOT NULL)",
    // Conversations that existed before format 2 stay conversations, not requests.
    "INSERT OR IGNORE INTO peers (username, accepted, blocked, since_ms)
        SELECT DISTINCT peer, 1, 0, 0 FROM messages",
];

/// Format 3 (key transparency, docs/KT.md §6): the directory's pinned keys and the last
/// verified (epoch, root), with a standing directory-level alarm (rollback, fork, failed audit);
/// and the status of every user checked (ourselves included). Applied on top of format 2.
const SCHEMA_V3: &[&str] = &[
    "CREATE TABLE kt_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        signing_key BLOB NOT NULL,
        vrf_key BLOB NOT NULL,
        epoch INTEGER NOT NULL,
        root BLOB NOT NULL,
        alarm TEXT,
        updated_ms INTEGER NOT NULL)",
    "CREATE TABLE kt_peers (
        username TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('verified', 'pending', 'mismatch')),
        value BLOB,
        epoch INTEGER,
        version INTEGER,
        reason TEXT,
        checked_ms INTEGER NOT NULL)",
];

/// The open store: the pool and the derived key.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) pool: SqlitePool,
    key: StoreKey,
    path: PathBuf,
    /// Held for the store's lifetime: one process per home, so two processes never advance
    /// the same ratchet from the same state (which would reuse message keys).
    _lock: std::fs::File,
}

/// The lock file inside HOME.
pub(crate) const LOCK_FILE: &str = "parley.lock";

fn lock_home(home: &Path) -> Result<std::fs::File, ClientError> {
    let path = home.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ClientError::Io(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(ClientError::Busy(home.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(ClientError::Io(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

fn connect_options(path: &Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
}

async fn pool(path: &Path, create: bool) -> Result<SqlitePool, ClientError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(path, create))
        .await?)
}

/// The database path for a home folder.
pub(crate) fn db_path(home: &Path) -> PathBuf {
    home.join(DB_FILE)
}

impl Store {
    /// Creates a new store in `home` (refused when one exists).
    pub(crate) async fn create(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Self, ClientError> {
        std::fs::create_dir_all(home).map_err(|e| {
            ClientError::Io(format!("cannot create the folder {}: {e}", home.display()))
        })?;
        let path = db_path(home);
        if path.exists() {
            return Err(ClientError::AccountExists(home.display().to_string()));
        }
        let lock = lock_home(home)?;
        if path.exists() {
            return Err(ClientError::AccountExists(home.display().to_string()));
        }
        let salt: [u8; SALT_LEN] = rand::rng().random();
        let key = derive_key_blocking(passphrase, salt.to_vec(), params).await?;
        let check = seal_with(&key, CHECK_LABEL, CHECK_PLAINTEXT)?;
        let pool = pool(&path, true).await?;
        let mut tx = pool.begin().await?;
        for stmt in SCHEMA.iter().chain(SCHEMA_V2).chain(SCHEMA_V3) {
            sqlx::query(*stmt).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO meta (id, version, salt, m_cost, t_cost, p_cost, key_check)
             VALUES (1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(FORMAT_VERSION)
        .bind(&salt[..])
        .bind(i64::from(params.m_cost))
        .bind(i64::from(params.t_cost))
        .bind(i64::from(params.p_cost))
        .bind(check)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Self { pool, key, path, _lock: lock })
    }

    /// Opens the store in `home` with `passphrase`.
    pub(crate) async fn open(home: &Path, passphrase: &[u8]) -> Result<Self, ClientError> {
        let path = db_path(home);
        if !path.is_file() {
            return Err(ClientError::NoAccount(home.display().to_string()));
        }
        let lock = lock_home(home)?;
        let pool = pool(&path, false).await?;
        let row = sqlx::query(
            "SELECT version, salt, m_cost, t_cost, p_cost, key_check FROM meta WHERE id = 1",
        )
        .fetch_optional(&pool)
        .await
        .map_err(|e| ClientError::CorruptStore(e.to_string()))?
        .ok_or_else(|| ClientError::CorruptStore("no header".into()))?;
        let version: i64 = row.try_get("version")?;
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(ClientError::CorruptStore(format!("format version {version}")));
        }
        let salt: Vec<u8> = row.try_get("salt")?;
        let u = |v: i64| {
            u32::try_from(v).map_err(|_| ClientError::CorruptStore("Argon2id parameters".into()))
        };
        let params = KdfParams {
            m_cost: u(row.try_get("m_cost")?)?,
            t_cost: u(row.try_get("t_cost")?)?,
            p_cost: u(row.try_get("p_cost")?)?,
        };
        let check: Vec<u8> = row.try_get("key_check")?;
        let key = derive_key_blocking(passphrase, salt, params).await?;
        match open_with(&key, CHECK_LABEL, &check) {
            Some(p) if p.as_slice() == CHECK_PLAINTEXT => {}
            _ => return Err(ClientError::WrongPassphrase),
        }
        if version < FORMAT_VERSION {
            let mut tx = pool.begin().await?;
            let upgrades: &[&[&str]] = &[SCHEMA_V2, SCHEMA_V3];
            let from = usize::try_from(version - 1).unwrap_or(0);
            for stmts in upgrades.iter().skip(from) {
                for stmt in stmts.iter() {
                    sqlx::query(*stmt).execute(&mut *tx).await?;
                }
            }
            sqlx::query("UPDATE meta SET version = ? WHERE id = 1")
                .bind(FORMAT_VERSION)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(Self { pool, key, path, _lock: lock })
    }

    /// The recorded Argon2id parameters.
    #[cfg(test)]
    pub(crate) async fn kdf_params(&self) -> Result<KdfParams, ClientError> {
        let row = sqlx::query("SELECT m_cost, t_cost, p_cost FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let g = |c: &str| -> Result<u32, ClientError> {
            let v: i64 = row.try_get(c)?;
            u32::try_from(v).map_err(|_| ClientError::CorruptStore(c.into()))
        };
        Ok(KdfParams { m_cost: g("m_cost")?, t_cost: g("t_cost")?, p_cost: g("p_cost")? })
    }

    /// Seals `plaintext` for the row named by `label`.
    pub(crate) fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        seal_with(&self.key, label, plaintext)
    }

    /// Opens a value sealed for `label`.
    pub(crate) fn open_sealed(
        &self,
        label: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        open_with(&self.key, label, sealed)
            .ok_or_else(|| ClientError::CorruptStore(format!("sealed value {label} does not open")))
    }

    /// Closes the pool (checkpointing the WAL).
    pub(crate) async fn close(self) -> PathBuf {
        self.pool.close().await;
        let Self { pool: _, mut key, path, _lock } = self;
        key.0.zeroize();
        path
    }
}

/// Row labels (the AD of each sealed value).
pub(crate) mod label {
    /// A field of the account row.
    pub(crate) fn account(field: &str) -> String {
        format!("account|{field}")
    }
    /// A session row.
    pub(crate) fn session(peer: &str, device: u32) -> String {
        format!("session|{peer}|{device}")
    }
    /// A message body.
    pub(crate) fn message(sender: &str, message_id: &str) -> String {
        format!("message|{sender}|{message_id}")
    }
    /// An outbox payload.
    pub(crate) fn outbox(message_id: &str) -> String {
        format!("outbox|{message_id}")
    }
    /// Our franking chain towards a peer.
    pub(crate) fn chain(peer: &str) -> String {
        format!("chain|{peer}")
    }
    /// Franked content (body and NF) of a message.
    pub(crate) fn franked(sender: &str, message_id: &str) -> String {
        format!("franked|{sender}|{message_id}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn seal_binds_label() {
        let key =
            derive_key(b"pw", &[1u8; 16], KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 }).unwrap();
        let s = seal_with(&key, "a|1", b"hello").unwrap();
        assert_eq!(open_with(&key, "a|1", &s).unwrap().as_slice(), b"hello");
        assert!(open_with(&key, "a|2", &s).is_none());
        assert_eq!(format!("{key:?}"), "StoreKey(***)");
    }

    #[tokio::test]
    async fn header_records_params() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), b"pw", KdfParams::for_new_store(true)).await.unwrap();
        let p = s.kdf_params().await.unwrap();
        assert_eq!(p, KdfParams { m_cost: TEST_M_COST_KIB, t_cost: TEST_T_COST, p_cost: 1 });
        assert!(matches!(
            Store::create(dir.path(), b"pw", KdfParams::for_new_store(true)).await,
            Err(ClientError::AccountExists(_))
        ));
        s.close().await;
        let s = Store::open(dir.path(), b"pw").await.unwrap();
        s.close().await;
        assert!(matches!(
            Store::open(dir.path(), b"wrong").await,
            Err(ClientError::WrongPassphrase)
        ));
    }

    #[tokio::test]
    async fn format_1_stores_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), b"pw", KdfParams::for_new_store(true)).await.unwrap();
        // Make it a format-1 store with one conversation.
        for stmt in [
            "DROP TABLE peers",
            "DROP TABLE settings",
            "DROP TABLE filter_rules",
            "DROP TABLE frank_chains",
            "DROP TABLE franked_sent",
            "DROP TABLE franked_received",
            "DROP TABLE chain_seen",
            "DROP TABLE chain_gaps",
            "DROP TABLE kt_state",
            "DROP TABLE kt_peers",
            "ALTER TABLE account DROP COLUMN minor",
            "UPDATE meta SET version = 1",
            "INSERT INTO messages (peer, sender, message_id, kind, sent_at_ms, state)
             VALUES ('bob', 'bob', 'm1', 'message', 1, 'received')",
        ] {
            sqlx::query(stmt).execute(&s.pool).await.unwrap();
        }
        s.close().await;
        let s = Store::open(dir.path(), b"pw").await.unwrap();
        let v: i64 =
            sqlx::query_scalar("SELECT version FROM meta").fetch_one(&s.pool).await.unwrap();
        assert_eq!(v, FORMAT_VERSION);
        let accepted: i64 = sqlx::query_scalar("SELECT accepted FROM peers WHERE username = 'bob'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(accepted, 1, "an earlier conversation became a request");
        s.close().await;
        // A store from a newer version is refused.
        let s = Store::open(dir.path(), b"pw").await.unwrap();
        sqlx::query("UPDATE meta SET version = 99").execute(&s.pool).await.unwrap();
        s.close().await;
        assert!(matches!(Store::open(dir.path(), b"pw").await, Err(ClientError::CorruptStore(_))));
    }

    #[tokio::test]
    async fn format_2_stores_get_key_transparency_tables() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), b"pw", KdfParams::for_new_store(true)).await.unwrap();
        for stmt in ["DROP TABLE kt_state", "DROP TABLE kt_peers", "UPDATE meta SET version = 2"] {
            sqlx::query(stmt).execute(&s.pool).await.unwrap();
        }
        s.close().await;
        let s = Store::open(dir.path(), b"pw").await.unwrap();
        let v: i64 =
            sqlx::query_scalar("SELECT version FROM meta").fetch_one(&s.pool).await.unwrap();
        assert_eq!(v, 3);
        // The new tables exist and start empty: every contact is unchecked (pending).
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM kt_peers").fetch_one(&s.pool).await.unwrap();
        assert_eq!(n, 0);
        sqlx::query(
            "INSERT INTO kt_state (id, signing_key, vrf_key, epoch, root, updated_ms)
             VALUES (1, x'00', x'00', 3, x'00', 0)",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        // The status is constrained to the three states.
        assert!(
            sqlx::query(
                "INSERT INTO kt_peers (username, status, checked_ms) VALUES ('x', 'ok', 0)"
            )
            .execute(&s.pool)
            .await
            .is_err()
        );
        s.close().await;
    }
}
