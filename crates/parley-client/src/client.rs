//! The client: account, sessions, send (with outbox), receive, history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use parley_api::{
    AccountInfo as ApiAccountInfo, AgeClass, BundlesResponse, Bytes, ClientFrame, DeviceUpload,
    Envelope, OutgoingEnvelope, PrekeyStatus, PrekeyUpload, RegisterRequest, RegisterResponse,
    SendRequest, SendResponse, ServerFrame, StaleDevices,
};
use parley_proto::{
    Accepted, AccountIdentity, AccountPublicKey, DeviceCertificate, DeviceIdentity, DeviceList,
    MAX_ONE_TIME_PREKEYS, MessageKind, PrekeyBundleIn, PrekeyStore, SafetyNumber, Session,
};
use rand::RngExt;
use sqlx::Row;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

use crate::ClientError;
use crate::filters::{Filter, FilterReason};
use crate::safety::{self, PeerState};
use crate::store::{Store, label};
use crate::transport::{Answer, Http, ServerUrl, Ws, check_server_url};

/// One-time prekeys generated at account creation.
pub const INITIAL_ONE_TIME_PREKEYS: usize = 50;
/// One-time prekeys uploaded when the server reports the stock is low.
pub const REPLENISH_BATCH: usize = 50;
/// Envelopes acknowledged in one WebSocket ack frame (below the server's in-flight window).
pub const ACK_BATCH: usize = 64;
/// How long `receive` waits for the next frame before giving up on a silent server.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions kept per contact device (the active one and earlier handshakes' sessions).
pub const MAX_SESSIONS_PER_DEVICE: i64 = 5;
/// Longest outbox retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Options for reaching the server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// An extra CA certificate (PEM) trusted for `https://` and `wss://`.
    pub ca_cert: Option<PathBuf>,
    /// Allow plain `http://` to a non-loopback host.
    pub insecure_http: bool,
    /// At account creation, derive the store key with the weak test parameters (Argon2id
    /// m = 256 KiB, t = 1) instead of the defaults; also selected by the environment variable
    /// `PARLEY_INSECURE_TEST_KDF=1`. The header records whichever was used. Tests only.
    pub insecure_test_kdf: bool,
}

/// The outcome of [`Client::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message id (the same on every device copy).
    pub id: String,
    /// True when the server could not be reached: the message waits in the outbox.
    pub queued: bool,
}

/// The outcome of [`Client::flush_outbox`].
#[derive(Debug)]
pub struct Flushed {
    /// Ids of the messages the server acknowledged now.
    pub delivered: Vec<String>,
    /// Messages that will never go through as they are, with the reason; they are in the
    /// history with state `failed`.
    pub failed: Vec<(String, ClientError)>,
}

/// Something that happened while receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message.
    Message {
        /// The sender's message id.
        id: String,
        /// The sender's username.
        from: String,
        /// The text as it should be displayed (links made inert in requests). When `filtered`
        /// is set, show its warning instead unless the user asks to reveal the text.
        text: String,
        /// The sender's clock, ms since the Unix epoch (inside the encryption).
        sent_at: u64,
        /// When this client stored it, ms since the Unix epoch.
        received_at: u64,
        /// From someone who is not a contact yet: a message request.
        request: bool,
        /// Why the on-device filters hide it, if they do.
        filtered: Option<FilterReason>,
    },
    /// Messages from `from` that can no longer be decrypted (their keys were dropped).
    Gap {
        /// The sender.
        from: String,
        /// How many messages were lost.
        count: u32,
    },
    /// `from`'s account key differs from the pinned one.
    KeyChange {
        /// The contact.
        from: String,
    },
    /// A message that could not be decrypted (stored and acknowledged, never silently lost).
    Undecryptable {
        /// The claimed sender.
        from: String,
        /// The claimed message id.
        message_id: String,
    },
    /// A message whose franking commitment does not open, or whose signed-in content
    /// contradicts its envelope: it is dropped and never shown (it could not be reported).
    Dropped {
        /// The claimed sender.
        from: String,
        /// The claimed message id.
        message_id: String,
        /// Why.
        reason: String,
    },
    /// A contact started a new session, replacing the old one.
    SessionReset {
        /// The contact.
        from: String,
    },
    /// Key transparency found something wrong (docs/KT.md §6): a user's keys differ from the
    /// directory (`user` set; sends to them are blocked), or the directory's answers failed
    /// verification (rollback, fork, bad signature, not append-only; `user` unset).
    KtAlarm {
        /// The user concerned (ourselves included), if any.
        user: Option<String>,
        /// What was found.
        reason: String,
    },
}

/// What [`Client::account_info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The username.
    pub username: String,
    /// This device's id.
    pub device_id: u32,
    /// The server URL in use.
    pub server: String,
    /// The account public key, hex in groups of 4 (what the safety number is computed from).
    pub fingerprint: String,
    /// The age class (as the server last said).
    pub age_class: AgeClass,
    /// Envelopes waiting on the server, when it could be reached.
    pub queued: Option<u64>,
    /// Messages waiting in the local outbox.
    pub outbox: u64,
}

/// One entry of a conversation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The message id.
    pub id: String,
    /// The sender's username.
    pub from: String,
    /// The text (`None` for undecryptable messages).
    pub text: Option<String>,
    /// The sender's clock, ms.
    pub sent_at: u64,
    /// When received, ms (`None` for our own messages).
    pub received_at: Option<u64>,
    /// True for messages we sent.
    pub outgoing: bool,
    /// `sent`, `received`, `undecryptable`, or `failed` (an outbox message that could not be
    /// delivered: see [`Client::flush_outbox`]).
    pub state: String,
    /// A message request (the sender is not a contact yet): links in `text` are inert.
    pub request: bool,
    /// Why the on-device filters hide it, if they do (incoming messages only).
    pub filtered: Option<FilterReason>,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The username.
    pub username: String,
    /// The pinned account key, hex in groups of 4.
    pub fingerprint: String,
    /// Messages in the history with this contact.
    pub messages: u64,
}

/// The result of routing and decrypting one envelope.
struct Decryption {
    decrypted: Option<(Session, parley_proto::Decrypted)>,
    /// The prekey store changed (a one-time prekey was used or a replay id remembered).
    accepted: bool,
    /// A new handshake replaced an existing session with that device.
    reset: bool,
}

/// A logged-in client over one home folder.
pub struct Client {
    home: PathBuf,
    pub(crate) store: Store,
    pub(crate) http: Http,
    pub(crate) username: String,
    pub(crate) device_id: u32,
    account: AccountIdentity,
    device: DeviceIdentity,
    cert: DeviceCertificate,
    prekeys: PrekeyStore,
    /// The account's age class as last known (from registration or the server).
    pub(crate) minor: bool,
    /// The compiled on-device filters.
    pub(crate) filter: Filter,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            home,
            store: _,
            http,
            username,
            device_id,
            account: _,
            device: _,
            cert: _,
            prekeys: _,
            minor,
            filter: _,
        } = self;
        f.debug_struct("Client")
            .field("home", home)
            .field("server", &http.url.base)
            .field("username", username)
            .field("device_id", device_id)
            .field("minor", minor)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex in groups of four characters.
pub(crate) fn fingerprint(key: &[u8]) -> String {
    let h = hex(key);
    h.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new message id: 12 hex digits of milliseconds since the Unix epoch, then 80 random bits
/// in 20 hex digits (32 characters, as UUIDv7 orders its bits). Ids made later sort later,
/// so the server's idempotency records, keyed by message id first, are appended at the end of
/// their index instead of scattered through it (docs/BENCHMARKS.md, part 2, S15). The random
/// part keeps ids unique: the clock only orders them.
fn new_message_id() -> String {
    let random: [u8; 10] = rand::rng().random();
    format!("{:012x}{}", now_ms() & 0xffff_ffff_ffff, hex(&random))
}

pub(crate) fn check_username(name: &str) -> Result<(), ClientError> {
    parley_api::validate_username(name).map_err(|e| ClientError::InvalidUsername(e.to_string()))
}

fn account_key_from(bytes: &[u8]) -> Option<AccountPublicKey> {
    let arr: [u8; 32] = bytes.try_into().ok()?;
    AccountPublicKey::from_bytes(arr).ok()
}

fn backoff(attempts: u32) -> Duration {
    let secs = 1u64.checked_shl(attempts.min(16)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

pub(crate) fn not_found_as_user(e: ClientError, user: &str) -> ClientError {
    match e {
        ClientError::Server { status: 404, .. } => ClientError::NoSuchUser(user.to_string()),
        other => other,
    }
}

impl Client {
    /// Creates an account: keys generated locally, registered on the server, stored sealed in
    /// `home/parley.db`. Refused when `home` already holds an account.
    pub async fn create_account(
        home: &Path,
        server_url: &str,
        username: &str,
        passphrase: &str,
        opts: &ClientOptions,
    ) -> Result<Client, ClientError> {
        Self::register(home, server_url, username, passphrase, opts, AgeClass::Adult).await
    }

    /// [`Client::create_account`] with the age class declared at registration (only the
    /// server's admin can change it afterwards). Minors get the contact policy of
    /// docs/SAFETY.md and on-device filters on by default.
    pub async fn register(
        home: &Path,
        server_url: &str,
        username: &str,
        passphrase: &str,
        opts: &ClientOptions,
        age_class: AgeClass,
    ) -> Result<Client, ClientError> {
        check_username(username)?;
        let url = check_server_url(server_url, opts.insecure_http)?;
        if crate::store::db_path(home).exists() {
            return Err(ClientError::AccountExists(home.display().to_string()));
        }
        let mut http = Http::new(url, opts.ca_cert.as_deref(), None)?;
        let (account, device, cert, list, prekeys, req) = {
            let mut rng = rand::rng();
            let now_s = now_ms() / 1000;
            let account = AccountIdentity::generate(&mut rng);
            let device = DeviceIdentity::generate(&mut rng);
            let device_id = 1;
            let cert = account.certify(device_id, device.public());
            let list = account
                .sign_device_list(1, vec![(device_id, device.public().clone())])
                .map_err(|e| ClientError::Crypto(e.to_string()))?;
            let mut prekeys = PrekeyStore::new();
            let crypto = |e: parley_proto::HandshakeError| ClientError::Crypto(e.to_string());
            let spk = prekeys.generate_signed_prekey(&mut rng, now_s, &device).map_err(crypto)?;
            let lr = prekeys.generate_last_resort_kem(&mut rng, now_s, &device).map_err(crypto)?;
            let (ec, kem) = prekeys
                .generate_one_time(&mut rng, &device, INITIAL_ONE_TIME_PREKEYS)
                .map_err(crypto)?;
            let req = RegisterRequest {
                username: username.to_string(),
                account_key: Bytes(account.public().as_bytes().to_vec()),
                device_list: Bytes(list.encode()),
                device: DeviceUpload {
                    certificate: Bytes(cert.encode()),
                    signed_prekey: Bytes(spk.encode()),
                    last_resort_kem: Bytes(lr.encode()),
                    one_time_prekeys: ec.iter().map(|k| Bytes(k.encode())).collect(),
                    one_time_kem_prekeys: kem.iter().map(|k| Bytes(k.encode())).collect(),
                },
                age_class,
            };
            (account, device, cert, list, prekeys, req)
        };
        // The store first (so a local failure does not leave a registered account whose token
        // is lost), then the server, then the account row.
        let store = Store::create(
            home,
            passphrase.as_bytes(),
            crate::store::KdfParams::for_new_store(opts.insecure_test_kdf),
        )
        .await?;
        let registered: Result<RegisterResponse, ClientError> =
            match http.post("/v1/accounts", &req).await {
                Ok(Answer::Ok(r)) => Ok(r),
                Ok(Answer::Conflict(body)) => {
                    let b: Option<parley_api::ErrorBody> = serde_json::from_slice(&body).ok();
                    Err(ClientError::Server {
                        status: 409,
                        code: b.as_ref().map_or_else(|| "conflict".into(), |b| b.error.clone()),
                        message: b.map_or_else(|| "the username is taken".into(), |b| b.message),
                    })
                }
                Err(e) => Err(e),
            };
        let registered = match registered {
            Ok(r) => r,
            Err(e) => {
                wipe(store).await;
                return Err(e);
            }
        };
        let token = Zeroizing::new(registered.token);
        let seal = |field: &str, v: &[u8]| store.seal(&label::account(field), v);
        let inserted = async {
            sqlx::query(
                "INSERT INTO account (id, username, server_url, device_id, account_key, certificate,
                 device_list, account_secret, device_secret, prekeys, token, minor)
                 VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(username)
            .bind(&http.url.base)
            .bind(i64::from(registered.device_id))
            .bind(&account.public().as_bytes()[..])
            .bind(cert.encode())
            .bind(list.encode())
            .bind(seal("account_secret", &account.to_secret_bytes())?)
            .bind(seal("device_secret", &device.to_secret_bytes())?)
            .bind(seal("prekeys", &prekeys.to_bytes())?)
            .bind(seal("token", token.as_bytes())?)
            .bind(i64::from(age_class.is_minor()))
            .execute(&store.pool)
            .await?;
            Ok::<(), ClientError>(())
        }
        .await;
        inserted?;
        http.set_token(token);
        let mut client = Client {
            home: home.to_path_buf(),
            store,
            http,
            username: username.to_string(),
            device_id: registered.device_id,
            account,
            device,
            cert,
            prekeys,
            minor: age_class.is_minor(),
            filter: Filter::default(),
        };
        client.reload_filter().await?;
        // Key transparency: pin the directory's keys now, at registration (docs/KT.md §6).
        match client.kt_monitor_self().await {
            Ok(_) => {}
            Err(e) if e.is_kt_alarm() => client.kt_directory_alarm(&e.to_string()).await?,
            Err(_) => {}
        }
        Ok(client)
    }

    /// Opens the account in `home`. `server_override` replaces the stored server address for
    /// this client only (it is not saved).
    pub async fn open(
        home: &Path,
        passphrase: &str,
        server_override: Option<String>,
        opts: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let store = Store::open(home, passphrase.as_bytes()).await?;
        let row = sqlx::query(
            "SELECT username, server_url, device_id, certificate, account_secret, device_secret,
             prekeys, token, minor FROM account WHERE id = 1",
        )
        .fetch_optional(&store.pool)
        .await?
        .ok_or_else(|| ClientError::NoAccount(home.display().to_string()))?;
        let username: String = row.try_get("username")?;
        let server: String = row.try_get("server_url")?;
        let device_id = u32::try_from(row.try_get::<i64, _>("device_id")?)
            .map_err(|_| ClientError::CorruptStore("device id".into()))?;
        let corrupt = |what: &str| ClientError::CorruptStore(what.to_string());
        let cert = DeviceCertificate::decode_verified(&row.try_get::<Vec<u8>, _>("certificate")?)
            .map_err(|_| corrupt("certificate"))?;
        let open = |field: &str| -> Result<Zeroizing<Vec<u8>>, ClientError> {
            let sealed: Vec<u8> = row.try_get(field)?;
            store.open_sealed(&label::account(field), &sealed)
        };
        let account = AccountIdentity::from_secret_bytes(&open("account_secret")?)
            .map_err(|_| corrupt("account key"))?;
        let device = DeviceIdentity::from_secret_bytes(&open("device_secret")?)
            .map_err(|_| corrupt("device key"))?;
        let prekeys = PrekeyStore::from_bytes(&open("prekeys")?, device.public())
            .map_err(|_| corrupt("prekeys"))?;
        let token_bytes = open("token")?;
        let token = Zeroizing::new(
            std::str::from_utf8(&token_bytes).map_err(|_| corrupt("token"))?.to_string(),
        );
        if cert.device() != device.public() || cert.account() != account.public() {
            return Err(corrupt("certificate does not match the keys"));
        }
        let url: ServerUrl =
            check_server_url(server_override.as_deref().unwrap_or(&server), opts.insecure_http)?;
        let http = Http::new(url, opts.ca_cert.as_deref(), Some(token))?;
        let minor = row.try_get::<i64, _>("minor")? != 0;
        let mut client = Client {
            home: home.to_path_buf(),
            store,
            http,
            username,
            device_id,
            account,
            device,
            cert,
            prekeys,
            minor,
            filter: Filter::default(),
        };
        client.reload_filter().await?;
        // Key transparency: monitor our own key at every start (docs/KT.md §6). An alarm is
        // recorded and shown, never a reason not to open; an unreachable server is not news.
        match client.kt_monitor_self().await {
            Ok(_) => {}
            Err(e) if e.is_kt_alarm() => client.kt_directory_alarm(&e.to_string()).await?,
            Err(_) => {}
        }
        Ok(client)
    }

    /// This account's username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The account, with the server's queue length when it can be reached.
    pub async fn account_info(&mut self) -> Result<AccountInfo, ClientError> {
        self.flush_quietly().await?;
        let queued = match self.http.get::<ApiAccountInfo>("/v1/accounts/self").await {
            Ok(i) => {
                // The server's age class wins (an admin may have changed it).
                if i.age_class.is_minor() != self.minor {
                    sqlx::query("UPDATE account SET minor = ? WHERE id = 1")
                        .bind(i64::from(i.age_class.is_minor()))
                        .execute(&self.store.pool)
                        .await?;
                    self.minor = i.age_class.is_minor();
                    self.reload_filter().await?;
                }
                Some(i.queued)
            }
            Err(e) if e.is_unreachable() => None,
            Err(e) => return Err(e),
        };
        Ok(AccountInfo {
            username: self.username.clone(),
            device_id: self.device_id,
            server: self.http.url.base.clone(),
            fingerprint: fingerprint(self.account.public().as_bytes()),
            age_class: AgeClass::from_minor(self.minor),
            queued,
            outbox: self.outbox_len().await?,
        })
    }

    /// Deletes the account on the server, then wipes the local store.
    pub async fn delete_account(self) -> Result<(), ClientError> {
        self.http.delete("/v1/accounts/self").await?;
        wipe(self.store).await;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Contacts and sessions
    // -----------------------------------------------------------------------------------------

    /// Our account's public identity key.
    pub(crate) fn account_public(&self) -> &AccountPublicKey {
        self.account.public()
    }

    pub(crate) async fn pinned_key(
        &self,
        peer: &str,
    ) -> Result<Option<AccountPublicKey>, ClientError> {
        self.pinned(peer).await
    }

    /// Records a key-transparency alarm in the event log.
    pub(crate) async fn record_kt_alarm(
        &self,
        user: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.record_event("kt_alarm", user, 0, Some(reason.as_bytes())).await
    }

    async fn pinned(&self, peer: &str) -> Result<Option<AccountPublicKey>, ClientError> {
        let row = sqlx::query("SELECT account_key FROM contacts WHERE username = ?")
            .bind(peer)
            .fetch_optional(&self.store.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let b: Vec<u8> = r.try_get("account_key")?;
                account_key_from(&b)
                    .map(Some)
                    .ok_or_else(|| ClientError::CorruptStore("pinned key".into()))
            }
        }
    }

    async fn pin(&self, peer: &str, key: &AccountPublicKey) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO contacts (username, account_key, first_seen_ms) VALUES (?, ?, ?)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(peer)
        .bind(&key.as_bytes()[..])
        .bind(i64_of(now_ms()))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    async fn record_event(
        &self,
        kind: &str,
        peer: &str,
        count: u32,
        detail: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        let mut conn = self.store.pool.acquire().await?;
        record_event_in(&mut conn, kind, peer, count, detail).await
    }

    /// The active (most recently used) session of each of `peer`'s devices.
    async fn load_sessions(&self, peer: &str) -> Result<BTreeMap<u32, Session>, ClientError> {
        let rows = sqlx::query(
            "SELECT device_id, state FROM sessions WHERE peer = ? ORDER BY active_seq ASC",
        )
        .bind(peer)
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let dev = u32::try_from(r.try_get::<i64, _>("device_id")?)
                .map_err(|_| ClientError::CorruptStore("session device id".into()))?;
            let sealed: Vec<u8> = r.try_get("state")?;
            let bytes = self.store.open_sealed(&label::session(peer, dev), &sealed)?;
            let s = Session::from_bytes(&bytes)
                .map_err(|_| ClientError::CorruptStore("session state".into()))?;
            out.insert(dev, s);
        }
        Ok(out)
    }

    /// Every kept session with one device, the active one first (Sesame keeps the sessions of
    /// earlier handshakes so that messages sent on them, e.g. when both sides started a session
    /// at once, still decrypt; a message decrypted on a session makes it the active one).
    async fn load_device_sessions(
        &self,
        peer: &str,
        dev: u32,
    ) -> Result<Vec<Session>, ClientError> {
        let rows = sqlx::query(
            "SELECT state FROM sessions WHERE peer = ? AND device_id = ? ORDER BY active_seq DESC",
        )
        .bind(peer)
        .bind(i64::from(dev))
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let sealed: Vec<u8> = r.try_get("state")?;
            let bytes = self.store.open_sealed(&label::session(peer, dev), &sealed)?;
            out.push(
                Session::from_bytes(&bytes)
                    .map_err(|_| ClientError::CorruptStore("session state".into()))?,
            );
        }
        Ok(out)
    }

    fn session_row(
        &self,
        peer: &str,
        dev: u32,
        s: &Session,
    ) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let sealed = self.store.seal(&label::session(peer, dev), &s.to_bytes())?;
        Ok((s.handshake_id().to_vec(), sealed))
    }

    async fn save_session_in(
        &self,
        tx: &mut sqlx::SqliteConnection,
        peer: &str,
        dev: u32,
        s: &Session,
    ) -> Result<(), ClientError> {
        let (hid, sealed) = self.session_row(peer, dev, s)?;
        sqlx::query(
            "INSERT INTO sessions (peer, device_id, handshake_id, state, updated_ms, active_seq)
             VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(active_seq), 0) + 1 FROM sessions))
             ON CONFLICT (peer, device_id, handshake_id) DO UPDATE SET state = excluded.state,
             updated_ms = excluded.updated_ms, active_seq = excluded.active_seq",
        )
        .bind(peer)
        .bind(i64::from(dev))
        .bind(&hid)
        .bind(sealed)
        .bind(i64_of(now_ms()))
        .execute(&mut *tx)
        .await?;
        // Keep the most recently used MAX_SESSIONS_PER_DEVICE sessions per device.
        sqlx::query(
            "DELETE FROM sessions WHERE peer = ? AND device_id = ? AND handshake_id NOT IN
             (SELECT handshake_id FROM sessions WHERE peer = ? AND device_id = ?
              ORDER BY active_seq DESC LIMIT ?)",
        )
        .bind(peer)
        .bind(i64::from(dev))
        .bind(peer)
        .bind(i64::from(dev))
        .bind(MAX_SESSIONS_PER_DEVICE)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn save_sessions(
        &self,
        peer: &str,
        sessions: &BTreeMap<u32, Session>,
    ) -> Result<(), ClientError> {
        let mut tx = self.store.pool.begin().await?;
        for (dev, s) in sessions {
            self.save_session_in(&mut tx, peer, *dev, s).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn save_prekeys_in(&self, tx: &mut sqlx::SqliteConnection) -> Result<(), ClientError> {
        let sealed = self.store.seal(&label::account("prekeys"), &self.prekeys.to_bytes())?;
        sqlx::query("UPDATE account SET prekeys = ? WHERE id = 1")
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Fetches `peer`'s bundles, checks them (pinned account key, certificates in the
    /// account-signed device list) and starts a session per device (all, or only `only`).
    async fn start_sessions(
        &self,
        peer: &str,
        only: Option<&[u32]>,
    ) -> Result<BTreeMap<u32, Session>, ClientError> {
        let resp: BundlesResponse = self
            .http
            .get(&format!("/v1/accounts/{peer}/bundles"))
            .await
            .map_err(|e| not_found_as_user(e, peer))?;
        let invalid =
            |reason: String| ClientError::InvalidPeerKeys { user: peer.to_string(), reason };
        if resp.username != peer {
            return Err(invalid("the server answered for another account".into()));
        }
        let account = account_key_from(resp.account_key.as_slice())
            .ok_or_else(|| invalid("malformed account key".into()))?;
        let list = DeviceList::decode_verified(resp.device_list.as_slice(), &account)
            .map_err(|e| invalid(format!("device list: {e}")))?;
        let pinned = self.pinned(peer).await?;
        if pinned.is_some_and(|p| p != account) {
            self.record_event("key_change", peer, 0, Some(&account.as_bytes()[..])).await?;
            return Err(ClientError::IdentityChanged(peer.to_string()));
        }
        // Key transparency (docs/KT.md §6): the keys must be the ones the directory commits
        // (or the account is newer than the latest epoch: pending). Checked before the key is
        // pinned, so a substituted key is never trusted.
        let value =
            parley_proto::kt_value(resp.account_key.as_slice(), resp.device_list.as_slice());
        let report = self.kt_check(peer, Some(value), Some(&account)).await?;
        if report.status == crate::KtStatus::Mismatch {
            return Err(ClientError::KtMismatch {
                user: peer.to_string(),
                reason: report.reason.unwrap_or_else(|| "mismatch".into()),
            });
        }
        if pinned.is_none() {
            self.pin(peer, &account).await?;
        }
        let mut rng = rand::rng();
        let mut out = BTreeMap::new();
        for d in resp.devices {
            if only.is_some_and(|o| !o.contains(&d.device_id)) {
                continue;
            }
            let bundle = PrekeyBundleIn::decode(d.bundle.as_slice())
                .and_then(|b| b.validate(Some(&account)))
                .map_err(|e| invalid(format!("device {}: {e}", d.device_id)))?;
            if bundle.certificate().device_id() != d.device_id {
                return Err(invalid(format!("device {} has another id", d.device_id)));
            }
            if !list.contains(bundle.certificate()) {
                return Err(invalid(format!(
                    "device {} is not in the account's signed device list",
                    d.device_id
                )));
            }
            let s = parley_proto::initiate(&mut rng, &self.device, &self.cert, &bundle)
                .map_err(|e| ClientError::Crypto(e.to_string()))?;
            out.insert(d.device_id, s);
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Send and outbox
    // -----------------------------------------------------------------------------------------

    /// Sends `text` to `to`. When the server cannot be reached the message is sealed into the
    /// outbox and `queued` is true; a later operation retries it with the same id.
    pub async fn send(&mut self, to: &str, text: &str) -> Result<SendResult, ClientError> {
        check_username(to)?;
        if to == self.username {
            return Err(ClientError::SendToSelf);
        }
        if self.peer_state(to).await?.blocked {
            return Err(ClientError::BlockedContact(to.to_string()));
        }
        if text.len() > parley_proto::MAX_FRANKED_TEXT_LEN {
            return Err(ClientError::MessageTooLong(text.len()));
        }
        // A pending key is checked again before use; a key in alarm is never used.
        if self.kt_status(to).await? == Some(crate::KtStatus::Pending) {
            match self.kt_verify(to).await {
                Ok(_) => {}
                Err(e) if e.is_unreachable() => {}
                Err(e) => return Err(e),
            }
        }
        self.kt_gate_send(to).await?;
        let id = new_message_id();
        let sent_at = now_ms();
        let flushed = self.flush_outbox().await;
        let blocked = match flushed {
            Err(e) if e.is_unreachable() => true,
            Err(e) => return Err(e),
            // Keep order: a message waits behind older ones to the same recipient.
            Ok(_) => self.outbox_has(to).await?,
        };
        // Writing to someone makes them a contact (and accepts their request, if any).
        if blocked {
            self.enqueue(to, &id, sent_at, text, None).await?;
            self.mark_accepted(to).await?;
            return Ok(SendResult { id, queued: true });
        }
        match self.deliver(to, &id, sent_at, text).await {
            Ok(_) => {
                self.record_sent(to, &id, sent_at, text).await?;
                self.mark_accepted(to).await?;
                Ok(SendResult { id, queued: false })
            }
            Err(e) if e.is_unreachable() => {
                self.enqueue(to, &id, sent_at, text, Some(&e.to_string())).await?;
                self.mark_accepted(to).await?;
                Ok(SendResult { id, queued: true })
            }
            Err(e) => Err(e),
        }
    }

    async fn record_sent(
        &self,
        to: &str,
        id: &str,
        sent_at: u64,
        text: &str,
    ) -> Result<(), ClientError> {
        let body = self.store.seal(&label::message(&self.username, id), text.as_bytes())?;
        sqlx::query(
            "INSERT INTO messages (peer, sender, message_id, kind, body, sent_at_ms, received_at_ms,
             state) VALUES (?, ?, ?, 'message', ?, ?, NULL, 'sent')
             ON CONFLICT (sender, message_id) DO NOTHING",
        )
        .bind(to)
        .bind(&self.username)
        .bind(id)
        .bind(body)
        .bind(i64_of(sent_at))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    async fn enqueue(
        &self,
        to: &str,
        id: &str,
        sent_at: u64,
        text: &str,
        error: Option<&str>,
    ) -> Result<(), ClientError> {
        let payload = self.store.seal(&label::outbox(id), text.as_bytes())?;
        let now = now_ms();
        let attempts: i64 = if error.is_some() { 1 } else { 0 };
        let next = now.saturating_add(u64::try_from(backoff(0).as_millis()).unwrap_or(0));
        sqlx::query(
            "INSERT INTO outbox (message_id, recipient, payload, sent_at_ms, created_ms, attempts,
             next_attempt_ms, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(to)
        .bind(payload)
        .bind(i64_of(sent_at))
        .bind(i64_of(now))
        .bind(attempts)
        .bind(i64_of(next))
        .bind(error)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    async fn outbox_has(&self, to: &str) -> Result<bool, ClientError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE recipient = ?")
            .bind(to)
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }

    async fn outbox_len(&self) -> Result<u64, ClientError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?;
        Ok(u64_of(n))
    }

    /// Moves an outbox message into the history with `state` (`sent` or `failed`), in one
    /// transaction.
    async fn outbox_to_history(
        &self,
        to: &str,
        id: &str,
        sent_at: u64,
        text: &str,
        state: &str,
    ) -> Result<(), ClientError> {
        let body = self.store.seal(&label::message(&self.username, id), text.as_bytes())?;
        let mut tx = self.store.pool.begin().await?;
        sqlx::query(
            "INSERT INTO messages (peer, sender, message_id, kind, body, sent_at_ms,
             received_at_ms, state) VALUES (?, ?, ?, 'message', ?, ?, NULL, ?)
             ON CONFLICT (sender, message_id) DO NOTHING",
        )
        .bind(to)
        .bind(&self.username)
        .bind(id)
        .bind(body)
        .bind(i64_of(sent_at))
        .bind(state)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE message_id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retries every message in the outbox, oldest first, with its original id (the server
    /// drops a copy it already has). Stops at the first "unreachable" error, recording the
    /// attempt and the next retry time (exponential backoff, at most [`MAX_BACKOFF`]) for
    /// long-running callers. Returns how many were delivered.
    ///
    /// A message that can never go through as it is (unknown user, changed identity, refused
    /// by the server) leaves the outbox and is kept in the history with state `failed`; its id
    /// and error are in [`Flushed::failed`]. Other errors (rate limits) leave it queued.
    pub async fn flush_outbox(&mut self) -> Result<Flushed, ClientError> {
        let rows = sqlx::query(
            "SELECT message_id, recipient, payload, sent_at_ms, attempts FROM outbox
             ORDER BY created_ms, rowid",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let mut delivered = Vec::new();
        let mut failures = Vec::new();
        for r in rows {
            let id: String = r.try_get("message_id")?;
            let to: String = r.try_get("recipient")?;
            let sealed: Vec<u8> = r.try_get("payload")?;
            let sent_at = u64_of(r.try_get("sent_at_ms")?);
            let attempts = u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX);
            let text_bytes = self.store.open_sealed(&label::outbox(&id), &sealed)?;
            let text = Zeroizing::new(
                std::str::from_utf8(&text_bytes)
                    .map_err(|_| ClientError::CorruptStore("outbox payload".into()))?
                    .to_string(),
            );
            match self.deliver(&to, &id, sent_at, &text).await {
                Ok(_) => {
                    self.outbox_to_history(&to, &id, sent_at, &text, "sent").await?;
                    delivered.push(id);
                }
                Err(e) if e.is_permanent() => {
                    // It will never go through as it is: it leaves the outbox for the history,
                    // marked failed, so later messages to the same contact are not held back.
                    self.outbox_to_history(&to, &id, sent_at, &text, "failed").await?;
                    failures.push((id, e));
                }
                Err(e) => {
                    let next = now_ms().saturating_add(
                        u64::try_from(backoff(attempts).as_millis()).unwrap_or(u64::MAX),
                    );
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?,
                         last_error = ? WHERE message_id = ?",
                    )
                    .bind(i64_of(next))
                    .bind(e.to_string())
                    .bind(&id)
                    .execute(&self.store.pool)
                    .await?;
                    if e.is_unreachable() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(Flushed { delivered, failed: failures })
    }

    /// Flushes the outbox before an operation that talks to the server; "unreachable" is left
    /// for the operation itself to report.
    async fn flush_quietly(&mut self) -> Result<(), ClientError> {
        match self.flush_outbox().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_unreachable() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Encrypts for every device of `to` and posts, handling a stale device set once.
    async fn deliver(
        &self,
        to: &str,
        id: &str,
        sent_at: u64,
        text: &str,
    ) -> Result<SendResponse, ClientError> {
        let mut sessions = self.load_sessions(to).await?;
        if sessions.is_empty() {
            sessions = self.start_sessions(to, None).await?;
        }
        let pinned = self.pinned(to).await?;
        for s in sessions.values() {
            if pinned.as_ref() != Some(s.remote_account()) {
                return Err(ClientError::IdentityChanged(to.to_string()));
            }
        }
        let (content, tf) = self.franked_for(to, id, sent_at, text).await?;
        self.deliver_franked(to, id, sessions, &content, &tf).await
    }

    /// Encrypts franked `content` for every device of `to` (the sessions given plus any the
    /// server says are missing) and posts it with its commitment `tf`.
    pub(crate) async fn deliver_franked(
        &self,
        to: &str,
        id: &str,
        mut sessions: BTreeMap<u32, Session>,
        content: &[u8],
        tf: &[u8; 32],
    ) -> Result<SendResponse, ClientError> {
        // Franking (PROTOCOL.md §12): the franked content is encrypted with TF bound into the
        // associated data; TF itself travels in clear for the server to tag.
        let ad = parley_proto::ratchet_ad(tf);
        let mut envelopes = self.encrypt_all(to, &mut sessions, content, &ad).await?;
        for attempt in 0..2 {
            let req = SendRequest {
                recipient: to.to_string(),
                message_id: id.to_string(),
                envelopes: envelopes
                    .iter()
                    .map(|(d, c)| OutgoingEnvelope { device_id: *d, ciphertext: Bytes(c.clone()) })
                    .collect(),
                franking_tag: Bytes(tf.to_vec()),
            };
            match self.http.post::<_, SendResponse>("/v1/messages", &req).await {
                Ok(Answer::Ok(r)) => return Ok(r),
                Ok(Answer::Conflict(body)) if attempt == 0 => {
                    let stale: StaleDevices = serde_json::from_slice(&body).map_err(|_| {
                        ClientError::Protocol("unexpected conflict answer to a send".into())
                    })?;
                    for extra in &stale.extra_devices {
                        envelopes.remove(extra);
                        sessions.remove(extra);
                        sqlx::query("DELETE FROM sessions WHERE peer = ? AND device_id = ?")
                            .bind(to)
                            .bind(i64::from(*extra))
                            .execute(&self.store.pool)
                            .await?;
                    }
                    if !stale.missing_devices.is_empty() {
                        let mut fresh =
                            self.start_sessions(to, Some(&stale.missing_devices)).await?;
                        let more = self.encrypt_all(to, &mut fresh, content, &ad).await?;
                        envelopes.extend(more);
                    }
                }
                Ok(Answer::Conflict(_)) => {
                    return Err(ClientError::Protocol(
                        "the recipient's device set changed twice during one send".into(),
                    ));
                }
                Err(e) => return Err(not_found_as_user(e, to)),
            }
        }
        Err(ClientError::Protocol("the send was not accepted".into()))
    }

    /// Encrypts `content` with each session and persists the advanced sessions before anything
    /// leaves (a message key is never used twice, even if the post is retried).
    async fn encrypt_all(
        &self,
        to: &str,
        sessions: &mut BTreeMap<u32, Session>,
        content: &[u8],
        ad: &[u8],
    ) -> Result<BTreeMap<u32, Vec<u8>>, ClientError> {
        let mut out = BTreeMap::new();
        {
            let mut rng = rand::rng();
            for (dev, s) in sessions.iter_mut() {
                let ct = s.encrypt(&mut rng, content, ad).map_err(|e| match e {
                    parley_proto::EncryptError::PlaintextTooLong(n) => {
                        ClientError::MessageTooLong(n)
                    }
                    other => ClientError::Crypto(other.to_string()),
                })?;
                out.insert(*dev, ct);
            }
        }
        self.save_sessions(to, sessions).await?;
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Receive
    // -----------------------------------------------------------------------------------------

    /// Fetches, stores and acknowledges everything waiting. With `wait`, waits up to that long
    /// for a first envelope when none is waiting, then drains.
    pub async fn receive(&mut self, wait: Option<Duration>) -> Result<Vec<Event>, ClientError> {
        self.receive_until(wait, std::future::pending()).await
    }

    /// [`Client::receive`] that also stops, cleanly, when `interrupt` completes: it is only
    /// looked at while waiting for the server's next frame, so what arrived is stored and
    /// acknowledged and nothing is half done. An interactive client listens this way and
    /// interrupts the round to run the user's request. (Dropping a `receive` future instead is
    /// not safe: the in-memory prekey store can run ahead of the saved one, and a redelivered
    /// first message then fails to decrypt.)
    pub async fn receive_until(
        &mut self,
        wait: Option<Duration>,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Vec<Event>, ClientError> {
        let mut interrupt = std::pin::pin!(interrupt);
        let mut interrupted = false;
        self.flush_quietly().await?;
        let mut ws = self.http.websocket().await?;
        let deadline = wait.map(|w| Instant::now() + w);
        let mut events = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        let mut got_any = false;
        let mut drained = false;
        let result: Result<(), ClientError> = loop {
            let limit = if drained {
                match deadline {
                    Some(d) if !got_any => d.saturating_duration_since(Instant::now()),
                    _ => break Ok(()),
                }
            } else {
                FRAME_TIMEOUT
            };
            if limit.is_zero() {
                break Ok(());
            }
            let next = tokio::select! {
                biased;
                () = &mut interrupt => None,
                f = tokio::time::timeout(limit, ws.next()) => Some(f),
            };
            let Some(next) = next else {
                interrupted = true;
                break Ok(());
            };
            let frame = match next {
                Err(_) if drained => break Ok(()),
                Err(_) => {
                    break Err(ClientError::Unreachable("the server stopped responding".into()));
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(ClientError::Unreachable(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            let text = match frame {
                Message::Text(t) => t,
                Message::Close(_) => break Ok(()),
                _ => continue,
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Envelope(env)) => {
                    let env_id = env.id;
                    match self.process(env).await {
                        Ok(evs) => events.extend(evs),
                        Err(e) => break Err(e),
                    }
                    pending.push(env_id);
                    got_any = true;
                    if pending.len() >= ACK_BATCH
                        && let Err(e) = send_ack(&mut ws, &mut pending).await
                    {
                        break Err(e);
                    }
                }
                Ok(ServerFrame::Drained) => {
                    drained = true;
                    if let Err(e) = send_ack(&mut ws, &mut pending).await {
                        break Err(e);
                    }
                    if got_any || deadline.is_none() {
                        break Ok(());
                    }
                }
                // This client sends with POST /v1/messages, never with send frames: an answer
                // to one is not for it.
                Ok(ServerFrame::Sent(_) | ServerFrame::SendFailed(_)) => {}
                Ok(ServerFrame::Error(b)) => {
                    break Err(ClientError::Server {
                        status: 0,
                        code: b.error,
                        message: b.message,
                    });
                }
                Err(e) => break Err(ClientError::Protocol(format!("bad frame: {e}"))),
            }
        };
        let acked = send_ack(&mut ws, &mut pending).await;
        let _ = ws.close(None).await;
        // Let the server read the acks and the close before the socket goes away.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        result?;
        acked?;
        if interrupted && events.is_empty() {
            // Cut short with nothing new: the caller has something else to do now.
            return Ok(events);
        }
        match self.maintain_prekeys().await {
            Ok(()) => {}
            Err(e) if e.is_unreachable() => {}
            Err(e) => return Err(e),
        }
        self.kt_after_receive(&mut events).await?;
        Ok(events)
    }

    /// Key transparency after receiving: senders never checked and users still pending are
    /// checked, and our own key history is monitored; every alarm becomes an event (the
    /// messages are stored and acknowledged already, so an alarm never hides them).
    async fn kt_after_receive(&self, events: &mut Vec<Event>) -> Result<(), ClientError> {
        let known = self.kt_statuses().await?;
        let mut senders: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message { from, .. } if !known.contains_key(from) => Some(from.clone()),
                _ => None,
            })
            .collect();
        senders.sort();
        senders.dedup();
        let mut results = Vec::new();
        for s in senders {
            results.push(self.kt_verify(&s).await);
        }
        results.push(self.kt_monitor_self().await);
        match self.kt_recheck_pending().await {
            Ok(r) => results.extend(r.into_iter().map(Ok)),
            Err(e) => results.push(Err(e)),
        }
        for r in results {
            match r {
                Ok(rep) if rep.status == crate::KtStatus::Mismatch => {
                    let reason = rep.reason.unwrap_or_else(|| "mismatch".into());
                    if !events.iter().any(
                        |e| matches!(e, Event::KtAlarm { user: Some(u), .. } if *u == rep.user),
                    ) {
                        events.push(Event::KtAlarm { user: Some(rep.user), reason });
                    }
                }
                Ok(_) => {}
                Err(e) if e.is_kt_alarm() => {
                    self.kt_directory_alarm(&e.to_string()).await?;
                    events.push(Event::KtAlarm { user: None, reason: e.to_string() });
                }
                // Unreachable, a sender whose account is gone, a refused lookup: the status
                // stays as it was (unchecked senders count as pending) and is checked again
                // later; the received messages are already stored.
                Err(_) => {}
            }
        }
        Ok(())
    }

    async fn is_duplicate(&self, sender: &str, message_id: &str) -> Result<bool, ClientError> {
        let row = sqlx::query("SELECT 1 AS x FROM messages WHERE sender = ? AND message_id = ?")
            .bind(sender)
            .bind(message_id)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Decrypts and stores one envelope. Everything is committed before this returns, so the
    /// caller may ack.
    async fn process(&mut self, env: Envelope) -> Result<Vec<Event>, ClientError> {
        let Envelope {
            id: _,
            message_id,
            sender,
            sender_device,
            server_time_ms,
            ciphertext,
            franking_tag,
            server_tag,
            franking_key_id,
        } = env;
        if self.is_duplicate(&sender, &message_id).await? {
            return Ok(Vec::new());
        }
        // Without well-formed franking tags the message cannot be opened (TF is part of the
        // associated data) nor reported: it is kept as undecryptable.
        let tags: Option<([u8; 32], [u8; 32])> =
            match (franking_tag.as_slice().try_into(), server_tag.as_slice().try_into()) {
                (Ok(tf), Ok(rf)) => Some((tf, rf)),
                _ => None,
            };
        let tf = tags.map_or([0u8; 32], |t| t.0);
        let ad = parley_proto::ratchet_ad(&tf);
        let now = now_ms();
        let ct = ciphertext.as_slice();
        let kind = parley_proto::message_kind(ct);
        let existing = match kind {
            Ok(_) => self.load_device_sessions(&sender, sender_device).await?,
            Err(_) => Vec::new(),
        };
        let kind = if tags.is_some() { kind.ok() } else { None };
        let Decryption { decrypted, accepted, reset } =
            self.decrypt_envelope(kind, existing, ct, sender_device, now / 1000, &ad);
        let mut events = Vec::new();
        let Some((session, dec)) = decrypted else {
            let mut tx = self.store.pool.begin().await?;
            if accepted {
                self.save_prekeys_in(&mut tx).await?;
            }
            self.insert_undecryptable(&mut tx, &sender, &message_id, server_time_ms, now).await?;
            tx.commit().await?;
            events.push(Event::Undecryptable { from: sender, message_id });
            return Ok(events);
        };
        // The sender's identity: pin on first contact; a different key is a visible event.
        let remote = *session.remote_account();
        let mut key_changed = false;
        match self.pinned(&sender).await? {
            None => self.pin(&sender, &remote).await?,
            Some(p) if p != remote => key_changed = true,
            Some(_) => {}
        }
        let gap_count: u32 = dec.gaps().iter().map(|g| g.count).fold(0, u32::saturating_add);
        let plaintext = dec.into_plaintext();
        // The commitment must open and the body must match its envelope, or the message is
        // dropped, visibly, and never shown: it could not be reported (PROTOCOL.md §12).
        let opened = parley_proto::open(&plaintext, &tf);
        let dropped = match &opened {
            Err(parley_proto::FrankingError::CommitmentMismatch) => {
                Some("its franking commitment does not open")
            }
            Err(_) => Some("its content is malformed"),
            Ok(o) => crate::franking::check_envelope(
                o,
                &self.username,
                &sender,
                sender_device,
                &message_id,
            ),
        };
        let mut tx = self.store.pool.begin().await?;
        self.save_session_in(&mut tx, &sender, sender_device, &session).await?;
        if accepted {
            self.save_prekeys_in(&mut tx).await?;
        }
        let peer: PeerState = safety::note_sender_in(&mut tx, &sender).await?;
        if peer.blocked {
            // It raced the block on the server: the ratchet moves on, the message is dropped.
            tx.commit().await?;
            return Ok(Vec::new());
        }
        if key_changed {
            record_event_in(&mut tx, "key_change", &sender, 0, Some(&remote.as_bytes()[..]))
                .await?;
            events.push(Event::KeyChange { from: sender.clone() });
        }
        if reset {
            record_event_in(&mut tx, "session_reset", &sender, 0, None).await?;
            events.push(Event::SessionReset { from: sender.clone() });
        }
        if gap_count > 0 {
            record_event_in(&mut tx, "gap", &sender, gap_count, None).await?;
            events.push(Event::Gap { from: sender.clone(), count: gap_count });
        }
        match (opened, dropped) {
            (Ok(o), None) => {
                let b = o.body();
                let body =
                    self.store.seal(&label::message(&sender, &message_id), b.text.as_bytes())?;
                let inserted = sqlx::query(
                    "INSERT INTO messages (peer, sender, message_id, kind, body, sent_at_ms,
                     received_at_ms, state) VALUES (?, ?, ?, 'message', ?, ?, ?, 'received')
                     ON CONFLICT (sender, message_id) DO NOTHING",
                )
                .bind(&sender)
                .bind(&sender)
                .bind(&message_id)
                .bind(body)
                .bind(i64_of(b.sent_at_ms))
                .bind(i64_of(now))
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() > 0 {
                    let (_, rf) = tags.unwrap_or_default();
                    let f = crate::franking::ReceivedFranking {
                        sender: &sender,
                        message_id: &message_id,
                        tf,
                        rf,
                        kid: franking_key_id,
                        server_time_ms,
                    };
                    crate::franking::record_received_in(self, &mut tx, &o, &f).await?;
                    let request = !peer.accepted;
                    let (text, filtered) = self.present(&b.text, request);
                    events.push(Event::Message {
                        id: message_id,
                        from: sender,
                        text,
                        sent_at: b.sent_at_ms,
                        received_at: now,
                        request,
                        filtered,
                    });
                }
            }
            (_, reason) => {
                let reason = reason.unwrap_or("its content is malformed");
                sqlx::query(
                    "INSERT INTO messages (peer, sender, message_id, kind, body, sent_at_ms,
                     received_at_ms, state) VALUES (?, ?, ?, 'dropped', NULL, ?, ?, 'dropped')
                     ON CONFLICT (sender, message_id) DO NOTHING",
                )
                .bind(&sender)
                .bind(&sender)
                .bind(&message_id)
                .bind(i64_of(server_time_ms))
                .bind(i64_of(now))
                .execute(&mut *tx)
                .await?;
                record_event_in(&mut tx, "dropped", &sender, 0, Some(reason.as_bytes())).await?;
                events.push(Event::Dropped {
                    from: sender,
                    message_id,
                    reason: reason.to_string(),
                });
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    /// Routes and decrypts one message (no I/O): an initial message goes to the session of
    /// its handshake when there is one, else to the prekey store; a ratchet message goes to the
    /// session of the sending device.
    fn decrypt_envelope(
        &mut self,
        kind: Option<MessageKind>,
        mut existing: Vec<Session>,
        ct: &[u8],
        sender_device: u32,
        now_s: u64,
        ad: &[u8],
    ) -> Decryption {
        let mut rng = rand::rng();
        let mut out = Decryption { decrypted: None, accepted: false, reset: false };
        match kind {
            Some(MessageKind::Initial { handshake_id }) => {
                let known = existing.iter().position(|s| s.handshake_id() == &handshake_id);
                if let Some(i) = known {
                    let mut s = existing.swap_remove(i);
                    out.decrypted = s.decrypt_any(&mut rng, ct, ad).ok().map(|d| (s, d));
                } else if let Ok(Accepted { session, first }) =
                    self.prekeys.accept(&mut rng, now_s, &self.device, &self.cert, ct, ad)
                {
                    out.accepted = true;
                    out.reset = !existing.is_empty();
                    if session.remote_certificate().device_id() == sender_device {
                        out.decrypted = Some((session, first));
                    }
                }
            }
            Some(MessageKind::Ratchet) => {
                // Trial decryption: only the session the message belongs to opens its header;
                // a failed try changes nothing.
                for mut s in existing {
                    if let Ok(d) = s.decrypt_any(&mut rng, ct, ad) {
                        out.decrypted = Some((s, d));
                        break;
                    }
                }
            }
            _ => {}
        }
        out
    }

    async fn insert_undecryptable(
        &self,
        tx: &mut sqlx::SqliteConnection,
        sender: &str,
        message_id: &str,
        server_time_ms: u64,
        now: u64,
    ) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO messages (peer, sender, message_id, kind, body, sent_at_ms,
             received_at_ms, state) VALUES (?, ?, ?, 'undecryptable', NULL, ?, ?, 'undecryptable')
             ON CONFLICT (sender, message_id) DO NOTHING",
        )
        .bind(sender)
        .bind(sender)
        .bind(message_id)
        .bind(i64_of(server_time_ms))
        .bind(i64_of(now))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Uploads one-time prekeys when the server says the stock is low, and rotates the signed
    /// and last-resort prekeys when due.
    /// Generates what `status` asks for (no I/O).
    fn prekey_upload(&mut self, status: &PrekeyStatus) -> Result<PrekeyUpload, ClientError> {
        let now_s = now_ms() / 1000;
        let mut rng = rand::rng();
        let crypto = |e: parley_proto::HandshakeError| ClientError::Crypto(e.to_string());
        let mut upload = PrekeyUpload::default();
        if status.rotate || self.prekeys.needs_rotation(now_s) {
            let spk = self
                .prekeys
                .generate_signed_prekey(&mut rng, now_s, &self.device)
                .map_err(crypto)?;
            let lr = self
                .prekeys
                .generate_last_resort_kem(&mut rng, now_s, &self.device)
                .map_err(crypto)?;
            self.prekeys.prune(now_s);
            upload.signed_prekey = Some(Bytes(spk.encode()));
            upload.last_resort_kem = Some(Bytes(lr.encode()));
        }
        if status.low {
            let (a, b) = self.prekeys.one_time_counts();
            let room = MAX_ONE_TIME_PREKEYS.saturating_sub(a.max(b));
            let n = REPLENISH_BATCH.min(room);
            if n > 0 {
                let (ec, kem) =
                    self.prekeys.generate_one_time(&mut rng, &self.device, n).map_err(crypto)?;
                upload.one_time_prekeys = ec.iter().map(|k| Bytes(k.encode())).collect();
                upload.one_time_kem_prekeys = kem.iter().map(|k| Bytes(k.encode())).collect();
            }
        }
        Ok(upload)
    }

    async fn maintain_prekeys(&mut self) -> Result<(), ClientError> {
        let status: PrekeyStatus = self.http.get("/v1/devices/self/prekeys").await?;
        let upload = self.prekey_upload(&status)?;
        if upload == PrekeyUpload::default() {
            return Ok(());
        }
        // The secrets are stored before the public halves are published.
        let mut tx = self.store.pool.begin().await?;
        self.save_prekeys_in(&mut tx).await?;
        tx.commit().await?;
        let _: PrekeyStatus = self.http.put("/v1/devices/self/prekeys", &upload).await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // History, contacts, safety numbers
    // -----------------------------------------------------------------------------------------

    /// The conversation with `peer`, in the order messages were received or sent here.
    pub async fn history(&self, peer: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        self.history_entries(peer, false).await
    }

    /// The history with `peer`, or only its newest entry when `newest_only` is set.
    pub(crate) async fn history_entries(
        &self,
        peer: &str,
        newest_only: bool,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let sql = if newest_only {
            "SELECT sender, message_id, body, sent_at_ms, received_at_ms, state FROM messages
             WHERE peer = ? ORDER BY COALESCE(received_at_ms, sent_at_ms) DESC, seq DESC LIMIT 1"
        } else {
            "SELECT sender, message_id, body, sent_at_ms, received_at_ms, state FROM messages
             WHERE peer = ? ORDER BY COALESCE(received_at_ms, sent_at_ms), seq"
        };
        let rows = sqlx::query(sql).bind(peer).fetch_all(&self.store.pool).await?;
        let request = !self.peer_state(peer).await?.accepted;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let sender: String = r.try_get("sender")?;
            let id: String = r.try_get("message_id")?;
            let body: Option<Vec<u8>> = r.try_get("body")?;
            let outgoing = sender == self.username;
            let (text, filtered) = match body {
                Some(b) => {
                    let p = self.store.open_sealed(&label::message(&sender, &id), &b)?;
                    let t = String::from_utf8_lossy(&p);
                    if outgoing {
                        (Some(t.into_owned()), None)
                    } else {
                        let (shown, why) = self.present(&t, request);
                        (Some(shown), why)
                    }
                }
                None => (None, None),
            };
            out.push(HistoryEntry {
                request: request && !outgoing,
                filtered,
                outgoing,
                id,
                from: sender,
                text,
                sent_at: u64_of(r.try_get("sent_at_ms")?),
                received_at: r.try_get::<Option<i64>, _>("received_at_ms")?.map(u64_of),
                state: r.try_get("state")?,
            });
        }
        Ok(out)
    }

    /// Contacts: everyone whose key is pinned.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let rows = sqlx::query(
            "SELECT c.username AS username, c.account_key AS account_key,
             (SELECT COUNT(*) FROM messages m WHERE m.peer = c.username) AS n
             FROM contacts c ORDER BY c.username",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<u8> = r.try_get("account_key")?;
            out.push(Contact {
                username: r.try_get("username")?,
                fingerprint: fingerprint(&key),
                messages: u64_of(r.try_get("n")?),
            });
        }
        Ok(out)
    }

    /// Accepts the newest key seen for `peer` after a key change (once the user has checked
    /// the new safety number out of band): it becomes the pinned key, and sessions with any
    /// other key are dropped. Fails with [`ClientError::UnknownContact`] when no key change was
    /// recorded for `peer`.
    pub async fn accept_key_change(&mut self, peer: &str) -> Result<(), ClientError> {
        let row = sqlx::query(
            "SELECT detail FROM events WHERE kind = 'key_change' AND peer = ? AND detail IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(peer)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| ClientError::UnknownContact(peer.to_string()))?;
        let detail: Vec<u8> = row.try_get("detail")?;
        let key = account_key_from(&detail)
            .ok_or_else(|| ClientError::CorruptStore("recorded key".into()))?;
        let sessions = self.load_sessions(peer).await?;
        let mut tx = self.store.pool.begin().await?;
        sqlx::query(
            "INSERT INTO contacts (username, account_key, first_seen_ms) VALUES (?, ?, ?)
             ON CONFLICT (username) DO UPDATE SET account_key = excluded.account_key",
        )
        .bind(peer)
        .bind(&key.as_bytes()[..])
        .bind(i64_of(now_ms()))
        .execute(&mut *tx)
        .await?;
        for (dev, s) in &sessions {
            if s.remote_account() != &key {
                sqlx::query("DELETE FROM sessions WHERE peer = ? AND device_id = ?")
                    .bind(peer)
                    .bind(i64::from(*dev))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        record_event_in(&mut tx, "key_accepted", peer, 0, Some(&key.as_bytes()[..])).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The safety number with `peer` (from the pinned key).
    pub async fn safety_number(&self, peer: &str) -> Result<SafetyNumber, ClientError> {
        let theirs = self
            .pinned(peer)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(peer.to_string()))?;
        parley_proto::safety_number(
            self.account.public(),
            self.username.as_bytes(),
            &theirs,
            peer.as_bytes(),
        )
        .map_err(|e| ClientError::Crypto(e.to_string()))
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Closes the store cleanly (checkpointing the WAL).
    pub async fn close(self) {
        self.store.close().await;
    }
}

async fn record_event_in(
    tx: &mut sqlx::SqliteConnection,
    kind: &str,
    peer: &str,
    count: u32,
    detail: Option<&[u8]>,
) -> Result<(), ClientError> {
    sqlx::query("INSERT INTO events (kind, peer, count, detail, at_ms) VALUES (?, ?, ?, ?, ?)")
        .bind(kind)
        .bind(peer)
        .bind(i64::from(count))
        .bind(detail)
        .bind(i64_of(now_ms()))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn send_ack(ws: &mut Ws, pending: &mut Vec<u64>) -> Result<(), ClientError> {
    if pending.is_empty() {
        return Ok(());
    }
    let frame = ClientFrame::Ack { ids: std::mem::take(pending) };
    let text = serde_json::to_string(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into())).await.map_err(|e| ClientError::Unreachable(e.to_string()))
}

/// Closes the store and deletes its files.
async fn wipe(store: Store) {
    let path = store.close().await;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    if let Some(home) = path.parent() {
        let _ = std::fs::remove_file(home.join(crate::store::LOCK_FILE));
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
