//! Shared server state and the request extractors that use it (authentication, JSON bodies,
//! rate limits).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;

use crate::auth;
use crate::bus::{Bus, Event as BusEvent};
use crate::config::Limits;
use crate::error::ApiError;
use crate::franking::Keyring;
use crate::hub::{Hub, Kick};
use crate::secrets::{self, Vault};
use crate::store::{DeviceAuth, Store};

/// Keyed rate limiters (governor's GCRA).
pub struct Limiters {
    account: DefaultKeyedRateLimiter<i64>,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    registration: DefaultKeyedRateLimiter<IpAddr>,
    bundles: DefaultKeyedRateLimiter<i64>,
    account_sends: DefaultKeyedRateLimiter<i64>,
    ip_sends: DefaultKeyedRateLimiter<IpAddr>,
    reports: DefaultKeyedRateLimiter<i64>,
}

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

fn per_hour(n: u32) -> Quota {
    let period = Duration::from_secs(3600) / n.max(1);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(nz(n))
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").finish_non_exhaustive()
    }
}

impl Limiters {
    /// Limiters for these limits.
    pub fn new(l: &Limits) -> Self {
        Self {
            account: RateLimiter::keyed(
                Quota::per_second(nz(l.account_rps)).allow_burst(nz(l.account_burst)),
            ),
            ip: RateLimiter::keyed(Quota::per_second(nz(l.ip_rps)).allow_burst(nz(l.ip_burst))),
            registration: RateLimiter::keyed(per_hour(l.registrations_per_hour)),
            bundles: RateLimiter::keyed(per_hour(l.bundle_fetches_per_hour)),
            account_sends: RateLimiter::keyed(
                Quota::per_second(nz(l.account_sends_per_sec))
                    .allow_burst(nz(l.account_send_burst)),
            ),
            ip_sends: RateLimiter::keyed(
                Quota::per_second(nz(l.ip_sends_per_sec)).allow_burst(nz(l.ip_send_burst)),
            ),
            reports: RateLimiter::keyed(per_hour(l.reports_per_hour)),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        lim: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), ApiError> {
        lim.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    /// Per-account request limit.
    pub fn account(&self, account_id: i64) -> Result<(), ApiError> {
        Self::check(&self.account, &account_id)
    }
    /// Per-IP request limit.
    pub fn ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        Self::check(&self.ip, &ip)
    }
    /// Per-IP registration limit.
    pub fn registration(&self, ip: IpAddr) -> Result<(), ApiError> {
        Self::check(&self.registration, &ip)
    }
    /// Per-requesting-device bundle limit.
    pub fn bundles(&self, device_uid: i64) -> Result<(), ApiError> {
        Self::check(&self.bundles, &device_uid)
    }
    /// Per-account and per-IP send limits.
    pub fn send(&self, account_id: i64, ip: IpAddr) -> Result<(), ApiError> {
        Self::check(&self.account_sends, &account_id)?;
        Self::check(&self.ip_sends, &ip)
    }
    /// Per-account abuse report limit.
    pub fn report(&self, account_id: i64) -> Result<(), ApiError> {
        Self::check(&self.reports, &account_id)
    }
    /// Forgets idle keys (called periodically).
    pub fn retain_recent(&self) {
        self.account_sends.retain_recent();
        self.ip_sends.retain_recent();
        self.account.retain_recent();
        self.ip.retain_recent();
        self.registration.retain_recent();
        self.bundles.retain_recent();
        self.reports.retain_recent();
    }
}

/// Everything a handler can reach.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The limits.
    pub limits: Limits,
    /// Connected devices.
    pub hub: Arc<Hub>,
    /// Rate limiters.
    pub limiters: Limiters,
    /// SHA-256 of the admin token.
    pub admin_token_hash: [u8; 32],
    /// The franking keys (read on every send and report view; written by rotation only).
    pub franking: Arc<RwLock<Keyring>>,
    /// Becomes true when the server shuts down (WebSocket loops end).
    pub shutdown: watch::Receiver<bool>,
    /// The NATS bus to the other nodes (`--nats`), if any.
    pub bus: Option<Bus>,
    /// Shared key material in the database (with a master key), if any; else files.
    pub vault: Option<Vault>,
    /// The key-transparency directory (docs/KT.md).
    pub kt: Arc<crate::kt::Kt>,
    /// This process's node id (bus sender, KT publisher lease holder).
    pub node: [u8; 16],
}

impl AppState {
    /// Whether this node may publish key-transparency epochs now: always on its own; with
    /// shared key material, only while it holds the cluster's publisher lease (taken or renewed
    /// here, for six epoch intervals and at least a minute).
    pub async fn kt_publisher(&self) -> Result<bool, crate::kt::KtError> {
        let Some(vault) = &self.vault else { return Ok(true) };
        let lease = self
            .limits
            .kt_epoch_interval_secs
            .saturating_mul(6000)
            .max(crate::kt::MIN_PUBLISHER_LEASE_MS);
        crate::kt::publisher_lease(vault, &self.node, now_ms(), lease).await
    }

    /// After a committed send: wakes the recipients' connections here and on every other node.
    pub fn wake(&self, uids: &[i64]) {
        // With memory push the store's writer has already woken local connections.
        if !self.hub.memory_push() {
            self.hub.notify(uids.iter().copied());
        }
        if let Some(bus) = &self.bus {
            bus.publish(&BusEvent::Wake(uids.to_vec()));
        }
    }

    /// A device opened connection `conn` here: the other nodes close theirs.
    pub fn connected(&self, uid: i64, conn: u64) {
        if let Some(bus) = &self.bus {
            bus.publish(&BusEvent::Connected { uid, conn });
        }
    }

    /// An account was deleted: its devices' connections close here and on every other node.
    pub fn deleted(&self, uids: &[i64]) {
        for uid in uids {
            self.hub.kick(*uid, Kick::AccountDeleted);
        }
        if let Some(bus) = &self.bus {
            bus.publish(&BusEvent::Deleted(uids.to_vec()));
        }
    }

    /// Reloads the franking keyring from the database (shared key material only; a no-op with
    /// files).
    pub async fn reload_franking(&self) -> Result<(), ApiError> {
        let Some(vault) = &self.vault else { return Ok(()) };
        let loaded = vault
            .load(secrets::FRANKING_KEYRING)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .ok_or_else(|| ApiError::Internal("the shared franking keyring is missing".into()))?;
        let ring = Keyring::from_secret(&loaded.value, self.limits.franking_grace_secs)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut current = self
            .franking
            .write()
            .map_err(|_| ApiError::Internal("franking keyring lock poisoned".into()))?;
        if current.active_kid() != ring.active_kid() {
            tracing::info!(active_kid = ring.active_kid(), "franking keys reloaded");
        }
        *current = ring;
        Ok(())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Shared state handle.
pub type SharedState = Arc<AppState>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// The peer address (ConnectInfo), or loopback when the router runs without it (tests).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// An authenticated device (extractor): checks the bearer token in constant time and the
/// per-account rate limit.
#[derive(Debug, Clone)]
pub struct AuthDevice(pub DeviceAuth);

impl FromRequestParts<SharedState> for AuthDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let (uid, secret) = auth::parse_token(token).ok_or(ApiError::Unauthorized)?;
        let device = state.store.device_auth(uid).await?.ok_or(ApiError::Unauthorized)?;
        if !auth::verify_secret(&secret, &device.token_hash) {
            return Err(ApiError::Unauthorized);
        }
        state.limiters.account(device.account_id)?;
        Ok(Self(device))
    }
}

/// The admin credential (extractor).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if auth::admin_token_matches(token, &state.admin_token_hash) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// A JSON body whose rejections become [`ApiError`]s with JSON bodies.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rej) => Err(match rej {
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::TooLarge("the request body is too large".into())
                }
                other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
            }),
        }
    }
}
