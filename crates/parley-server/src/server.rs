//! Wiring: the router ([`app`]) and a running server ([`start`]) with graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::{Bus, Event as BusEvent, Incoming};
use crate::config::{Config, ConfigError};
use crate::franking::Keyring;
use crate::hub::{Hub, Kick};
use crate::secrets::{MasterKey, Vault};
use crate::state::{AppState, Limiters, SharedState};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::{auth, metrics, openapi, routes, ws};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data folder or a key file could not be used.
    #[error("{0}")]
    Io(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The franking keyring could not be loaded.
    #[error(transparent)]
    Keyring(#[from] crate::franking::KeyringError),
    /// Shared key material could not be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// The NATS bus could not start.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// The key-transparency directory or its keys could not be loaded.
    #[error(transparent)]
    Kt(#[from] crate::kt::KtError),
}

/// The router, with every route and the JSON fallbacks.
pub fn app(state: SharedState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let report_limit = state.limits.max_report_bytes;
    Router::new()
        .route("/v1/accounts", post(routes::register))
        .route("/v1/accounts/self", get(routes::account_self).delete(routes::delete_self))
        .route("/v1/accounts/{username}/bundles", get(routes::bundles))
        .route("/v1/devices/self/prekeys", put(routes::upload_prekeys).get(routes::prekey_status))
        .route("/v1/messages", post(routes::send).get(routes::fetch))
        .route("/v1/messages/ack", post(routes::ack))
        .route("/v1/ws", get(ws::ws))
        .route("/v1/blocks", get(routes::blocks))
        .route("/v1/blocks/{username}", put(routes::block).delete(routes::unblock))
        .route("/v1/admin/stats", get(routes::admin_stats))
        .route("/v1/admin/accounts", post(routes::admin_create_account))
        .route("/v1/admin/accounts/{username}/age", put(routes::admin_set_age))
        .route("/v1/admin/accounts/{username}/suspension", put(routes::admin_set_suspension))
        .route("/v1/reports", post(routes::report).layer(DefaultBodyLimit::max(report_limit)))
        .route("/v1/admin/reports", get(routes::admin_reports))
        .route("/v1/admin/reports/{id}", get(routes::admin_report))
        .route("/v1/admin/reports/{id}/resolve", post(routes::admin_resolve_report))
        .route("/v1/admin/franking-keys/rotate", post(routes::admin_rotate_franking_key))
        .route("/v1/kt/root", get(routes::kt_root))
        .route("/v1/kt/lookup/{username}", get(routes::kt_lookup))
        .route("/v1/kt/history", get(routes::kt_history))
        .route("/v1/kt/audit", get(routes::kt_audit))
        .route("/v1/admin/kt/publish", post(routes::admin_kt_publish))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(metrics_handler))
        .route("/openapi.json", get(openapi_handler))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), ip_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(close_after_refused_body))
        .with_state(state)
}

/// A body refused for its size was not read to its end, so the connection cannot carry
/// another request: say so (`Connection: close`, RFC 9112 §9.6), or a client would reuse it
/// and see its next request fail.
async fn close_after_refused_body(mut resp: axum::response::Response) -> axum::response::Response {
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn ip_limit(
    State(state): State<SharedState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let ip = crate::state::peer_ip(&parts);
    if let Err(e) = state.limiters.ip(ip) {
        return e.into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

async fn metrics_handler(State(state): State<SharedState>) -> impl IntoResponse {
    let body = metrics::render(&state).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body)
}

async fn openapi_handler() -> impl IntoResponse {
    axum::Json(openapi::document())
}

/// Key material from files in the data folder (a single node; the default).
fn file_keys(config: &Config) -> Result<([u8; 32], PathBuf, bool, Keyring), ServerError> {
    let (hash, path, created) = admin_token(&config.data_dir)?;
    let keyring = Keyring::open(
        &config.data_dir,
        config.limits.franking_grace_secs,
        crate::state::now_secs(),
    )?;
    Ok((hash, path, created, keyring))
}

/// Reads `DATA/admin.token`, creating it (mode 0600) at first start. Returns the token's hash
/// and whether it was created now.
pub fn admin_token(data_dir: &Path) -> Result<([u8; 32], PathBuf, bool), ServerError> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::Io(format!("cannot read {}: {e}", path.display()))),
    }
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if t.is_empty() {
            return Err(ServerError::Io(format!(
                "{} is empty; delete it to create a new token",
                path.display()
            )));
        }
        return Ok((auth::hash_secret(t.as_bytes()), path, false));
    }
    let token = auth::new_admin_token();
    write_private(&path, token.as_bytes())?;
    Ok((auth::hash_secret(token.as_bytes()), path, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| ServerError::Io(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ServerError::Io(format!("cannot write {}: {e}", path.display())))
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// True when serving HTTPS.
    pub tls: bool,
    /// The admin token file.
    pub admin_token_path: PathBuf,
    /// True when the admin token was created by this start.
    pub admin_token_created: bool,
    shutdown: watch::Sender<bool>,
    handle: axum_server::Handle<SocketAddr>,
    join: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The base URL (`http://ADDR` or `https://ADDR`).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Graceful shutdown: stop accepting, let requests and in-flight commits finish, close
    /// WebSockets, close the store.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        self.join.await.map_err(|e| ServerError::Io(e.to_string()))?
    }

    /// Waits until the server stops by itself (an error).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        (&mut self.join).await.map_err(|e| ServerError::Io(e.to_string()))?
    }
}

/// The node master key: `config.master_key_file`, else the environment variable
/// `PARLEY_MASTER_KEY` (base64), else none (key material in files).
fn master_key(config: &Config) -> Result<Option<MasterKey>, ServerError> {
    if let Some(path) = &config.master_key_file {
        return Ok(Some(MasterKey::from_file(path)?));
    }
    match std::env::var(crate::secrets::MASTER_KEY_ENV) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            Ok(Some(MasterKey::from_base64(&text).map_err(|e| {
                ServerError::Io(format!("{}: {e}", crate::secrets::MASTER_KEY_ENV))
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// The key-transparency keys: files in `DATA/kt/` on a single node; with shared key material,
/// the cluster's (created by the first node, which contributes its own files if it has them). A
/// directory's VRF key never changes, so a node whose files differ from the cluster's keys
/// refuses to start rather than serve another directory's keys.
async fn kt_keys(config: &Config, vault: Option<&Vault>) -> Result<crate::kt::KtKeys, ServerError> {
    let Some(vault) = vault else { return Ok(crate::kt::load_or_create_keys(&config.data_dir)?) };
    let local = crate::kt::existing_keys(&config.data_dir)?.map(|k| k.to_secret());
    let seed = local.clone();
    let loaded = vault
        .load_or_create(
            crate::secrets::KT_KEYS,
            || Ok(seed.unwrap_or_else(|| crate::kt::KtKeys::generate().to_secret())),
            crate::state::now_secs(),
        )
        .await?;
    if let Some(l) = &local
        && !bool::from(subtle::ConstantTimeEq::ct_eq(l.as_slice(), loaded.value.as_slice()))
    {
        return Err(ServerError::Io(format!(
            "{} holds other key-transparency keys than the cluster's in the database; move it away (the node uses the cluster's keys)",
            config.data_dir.join("kt").display()
        )));
    }
    Ok(crate::kt::KtKeys::from_secret(&loaded.value)?)
}

/// Key material from the database (shared by every node): the admin token and the franking
/// keyring, each created by the first node that needs it. A node that already has its own
/// files (a single node moving to a cluster) contributes them if it is first; otherwise its
/// files must agree with the database (admin token) or are ignored (franking keys).
async fn shared_keys(
    config: &Config,
    vault: &Vault,
) -> Result<([u8; 32], PathBuf, bool, Keyring), ServerError> {
    let now = crate::state::now_secs();
    let path = config.data_dir.join("admin.token");
    let local = match std::fs::read_to_string(&path) {
        Ok(t) => Some(zeroize::Zeroizing::new(t.trim().to_string())).filter(|t| !t.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ServerError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let token = vault
        .load_or_create(
            crate::secrets::ADMIN_TOKEN,
            || {
                let t = local.clone().unwrap_or_else(auth::new_admin_token);
                Ok(zeroize::Zeroizing::new(t.as_bytes().to_vec()))
            },
            now,
        )
        .await?;
    let hash = auth::hash_secret(&token.value);
    let mut written = false;
    match &local {
        Some(t)
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                &auth::hash_secret(t.as_bytes())[..],
                &hash[..],
            )) =>
        {
            return Err(ServerError::Io(format!(
                "{} differs from the cluster's admin token in the database; delete the file (the node writes the cluster's token there)",
                path.display()
            )));
        }
        Some(_) => {}
        None => {
            write_private(&path, &token.value)?;
            written = true;
        }
    }
    let grace = config.limits.franking_grace_secs;
    let local_ring = Keyring::open_existing(&config.data_dir, grace)?;
    let had_local = local_ring.is_some();
    let loaded = vault
        .load_or_create(
            crate::secrets::FRANKING_KEYRING,
            || {
                Ok(local_ring
                    .map_or_else(|| Keyring::generate(grace, now), Keyring::into_memory)
                    .to_secret())
            },
            now,
        )
        .await?;
    if loaded.created && had_local {
        tracing::info!("franking keys imported from the data folder into the database");
    } else if had_local {
        tracing::warn!(
            "the data folder's franking keys are ignored: every node uses the keyring in the database"
        );
    }
    let ring = Keyring::from_secret(&loaded.value, grace)?;
    Ok((hash, path, written, ring))
}

/// Starts a server for `config` (validated first). Returns once it is listening.
///
/// Key material: with a master key (`master_key_file`, or the environment variable
/// `PARLEY_MASTER_KEY`) the admin token and franking keys are shared through the database
/// ([`crate::secrets`]); otherwise they are files in the data folder. `nats` requires the
/// former.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServerError::Io(format!("cannot create the data folder {}: {e}", config.data_dir.display()))
    })?;
    let master = master_key(&config)?;
    if config.nats.is_some() && master.is_none() {
        return Err(ServerError::Io(format!(
            "--nats needs a master key (--master-key-file FILE or {}) so that every node shares the franking keys and the admin token",
            crate::secrets::MASTER_KEY_ENV
        )));
    }
    let store: Arc<dyn Store> = match &config.database {
        Some(url) => Arc::new(crate::store::postgres::PgStore::open_url(url).await?),
        None => Arc::new(SqliteStore::open(&config.data_dir.join("parley.db")).await?),
    };
    let store: Arc<dyn Store> =
        Arc::new(crate::store::cached::CachedStore::new(store, crate::store::cached::DEFAULT_TTL));
    let vault = master.map(|key| Vault::new(store.clone(), key));
    let keys = match &vault {
        Some(v) => shared_keys(&config, v).await,
        None => file_keys(&config),
    };
    let (admin_token_hash, admin_token_path, admin_token_created, keyring) = match keys {
        Ok(k) => k,
        Err(e) => {
            let _ = store.close().await;
            return Err(e);
        }
    };
    tracing::info!(
        active_kid = keyring.active_kid(),
        shared = vault.is_some(),
        "franking keys loaded"
    );
    // This process's node id (the bus's sender id and the KT publisher lease's holder).
    let mut node = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut node);
    let (bus, incoming) = match &config.nats {
        Some(list) => match Bus::connect(list, node).await {
            Ok((bus, rx)) => (Some(bus), Some(rx)),
            Err(e) => {
                let _ = store.close().await;
                return Err(e.into());
            }
        },
        None => (None, None),
    };
    let kt = Arc::new(
        crate::kt::Kt::open(store.clone(), kt_keys(&config, vault.as_ref()).await?).await?,
    );
    metrics::install();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // A store with one writer hands committed envelopes to the connections (pushed from
    // memory, not read back); the others wake connections, which read their queue.
    let hub = Arc::new(Hub::default());
    let listener = hub.clone();
    if store.set_commit_listener(Box::new(move |envelopes, purged| {
        listener.deliver(envelopes);
        if purged {
            listener.forget_all();
        }
    })) {
        hub.enable_memory_push();
    }
    let state = Arc::new(AppState {
        store: store.clone(),
        limiters: Limiters::new(&config.limits),
        limits: config.limits.clone(),
        hub,
        admin_token_hash,
        franking: Arc::new(RwLock::new(keyring)),
        shutdown: shutdown_rx.clone(),
        bus,
        vault,
        kt,
        node,
    });
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| ServerError::Io(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| ServerError::Io(e.to_string()))?;
    let handle = axum_server::Handle::new();
    // TCP_NODELAY on every connection: WebSocket frames are small, written one by one, and
    // must not wait for the peer's delayed ACK (Nagle's algorithm, RFC 896).
    use axum_server::accept::NoDelayAcceptor;
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let tls = config.uses_tls();
    let serve: JoinHandle<std::io::Result<()>> = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.map_err(
                    |e| ServerError::Io(format!("cannot load the TLS certificate or key: {e}")),
                )?;
            let server = axum_server::from_tcp_rustls(listener, rustls)
                .map_err(|e| ServerError::Io(e.to_string()))?;
            let server = server.map(|tls| tls.acceptor(NoDelayAcceptor::new()));
            tokio::spawn(server.handle(handle.clone()).serve(service))
        }
        _ => {
            let server = axum_server::from_tcp(listener)
                .map_err(|e| ServerError::Io(e.to_string()))?
                .acceptor(NoDelayAcceptor::new());
            tokio::spawn(server.handle(handle.clone()).serve(service))
        }
    };
    let housekeeping = tokio::spawn(housekeeping(state.clone(), shutdown_rx.clone()));
    let kt_epochs = tokio::spawn(kt_epochs(state.clone(), shutdown_rx.clone()));
    let listener_task =
        incoming.map(|rx| tokio::spawn(bus_listener(state.clone(), rx, shutdown_rx)));
    let join = tokio::spawn(async move {
        let served = serve.await;
        housekeeping.abort();
        kt_epochs.abort();
        if let Some(t) = listener_task {
            t.abort();
        }
        if let Some(bus) = &state.bus {
            bus.close(Duration::from_secs(2)).await;
        }
        let closed = store.close().await;
        served
            .map_err(|e| ServerError::Io(e.to_string()))?
            .map_err(|e| ServerError::Io(e.to_string()))?;
        closed.map_err(ServerError::from)
    });
    tracing::info!(%addr, tls, "listening");
    Ok(RunningServer {
        addr,
        tls,
        admin_token_path,
        admin_token_created,
        shutdown: shutdown_tx,
        handle,
        join,
    })
}

/// Every minute: expire old envelopes (queue TTL) and forget idle rate-limit keys.
async fn housekeeping(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let before =
            crate::state::now_ms().saturating_sub(state.limits.queue_ttl_secs.saturating_mul(1000));
        match state.store.expire(before).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "expired old envelopes"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiry failed"),
        }
        state.limiters.retain_recent();
        // Shared keys: catch a rotation whose bus notice was lost.
        if let Err(e) = state.reload_franking().await {
            tracing::warn!(error = %e, "reloading the shared franking keys failed");
        }
    }
}

/// Dispatches the events other nodes publish (crate::bus): wake-ups, connection notices,
/// deletions, key changes.
async fn bus_listener(
    state: SharedState,
    mut rx: tokio::sync::mpsc::Receiver<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.changed() => return,
        };
        match incoming {
            None => return,
            Some(Incoming::Reconnected) => state.hub.notify_all(),
            Some(Incoming::Event(BusEvent::Wake(uids))) => state.hub.notify(uids),
            Some(Incoming::Event(BusEvent::Connected { uid, .. })) => {
                if state.hub.kick(uid, Kick::Replaced) {
                    ::metrics::counter!("parley_ws_replaced_by_other_node_total").increment(1);
                }
            }
            Some(Incoming::Event(BusEvent::Deleted(uids))) => {
                for uid in uids {
                    state.hub.kick(uid, Kick::AccountDeleted);
                }
            }
            Some(Incoming::Event(BusEvent::Keys)) => {
                if let Err(e) = state.reload_franking().await {
                    tracing::warn!(error = %e, "reloading the shared franking keys failed");
                }
            }
        }
    }
}

/// Every `kt_epoch_interval_secs`: publish a key-transparency epoch with every change queued
/// since the last one (nothing is published when nothing changed).
async fn kt_epochs(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(state.limits.kt_epoch_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // With shared key material (several nodes), only the holder of the publisher lease
        // publishes (docs/OPERATIONS.md §10).
        match state.kt_publisher().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "the key-transparency publisher lease could not be read");
                continue;
            }
        }
        if let Err(e) = state.kt.publish().await {
            tracing::warn!(error = %e, "key-transparency publication failed");
        }
    }
}
