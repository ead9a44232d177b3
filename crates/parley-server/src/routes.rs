//! REST handlers, each documented in the OpenAPI document served at `/openapi.json`.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use parley_api::{
    AccountInfo, AckRequest, AckResponse, AdminStats, AgeClass, BlockList, BundlesResponse, Bytes,
    DeviceBundle, ErrorBody, FetchResponse, Health, KtAuditResponse, KtProofResponse,
    KtPublishResponse, KtRoot, KtSignedRoot, MAX_REPORT_REASON_LEN, ModerationAction, PrekeyStatus,
    PrekeyUpload, RegisterRequest, RegisterResponse, ReportRequest, ReportResponse, ReportView,
    ReportedMessage, ResolveRequest, RotateResponse, SendRequest, SendResponse, SetAgeRequest,
    SetSuspensionRequest, StaleDevices,
};
use parley_proto::{
    AccountPublicKey, DeviceCertificate, DeviceList, FRANKING_TAG_LEN, FrankedBody, ItemVerdict,
    KemPrekey, KemPrekeyKind, OneTimePrekey, PrekeyBundleIn, Report, ReportItem, SignedPrekey,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth;
use crate::error::ApiError;
use crate::franking::Keyring;
use crate::policy;
use crate::state::{Admin, ApiJson, AuthDevice, SharedState, now_ms, now_secs, peer_ip};
use crate::store::{
    self, AccountFlag, AccountRecord, Delivery, DeviceAuth, NewAccount, NewConversation, NewDevice,
    NewReport, PrekeyChanges, ReportStatus, SendBatch, StoredEnvelope, StoredReport,
};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Reads the franking keyring. The lock is only poisoned if a holder panicked, which library
/// code does not do; it is reported as an internal error rather than trusted.
fn keyring(state: &SharedState) -> Result<std::sync::RwLockReadGuard<'_, Keyring>, ApiError> {
    state.franking.read().map_err(|_| ApiError::Internal("franking keyring lock poisoned".into()))
}

/// The one answer for an account the caller cannot reach: unknown, blocking the caller, or a
/// minor who has not written to this adult. The three are indistinguishable on purpose.
fn unreachable_account() -> ApiError {
    ApiError::NotFound("no such account".into())
}

/// Looks the recipient up and applies the contact policy (docs/SAFETY.md). Returns the account
/// and, when this is the caller's first send to it, the conversation to record with the send
/// (after checking the limit on new conversations).
async fn reach(
    state: &SharedState,
    dev: &DeviceAuth,
    username: &str,
) -> Result<(std::sync::Arc<AccountRecord>, Option<NewConversation>), ApiError> {
    let rec = state.store.account_by_username(username).await?.ok_or_else(unreachable_account)?;
    if rec.id == dev.account_id {
        return Ok((rec, None));
    }
    let rel = state.store.relation(dev.account_id, rec.id).await?;
    if !policy::reachable(dev.minor, rec.minor, rel) {
        metrics::counter!("parley_policy_refusals_total").increment(1);
        return Err(unreachable_account());
    }
    if rel.sent {
        return Ok((rec, None));
    }
    let now = now_secs();
    let initiated = !rel.received;
    if initiated {
        let limit = policy::conversations_per_hour(&state.limits, dev.account_created_at, now);
        let recent =
            state.store.new_conversations_since(dev.account_id, now.saturating_sub(3600)).await?;
        if recent.count >= limit {
            metrics::counter!("parley_new_conversation_limited_total").increment(1);
            return Err(ApiError::RateLimited(policy::retry_after(recent.oldest, now)));
        }
    }
    let conv = NewConversation { from: dev.account_id, to: rec.id, initiated, now };
    Ok((rec, Some(conv)))
}

fn check_one_time(
    state: &SharedState,
    device: &parley_proto::DevicePublicKeys,
    ec: &[Bytes],
    kem: &[Bytes],
) -> Result<(Vec<store::OneTimePrekey>, Vec<store::OneTimePrekey>), ApiError> {
    let max = state.limits.max_prekeys_per_upload;
    if ec.len() > max || kem.len() > max {
        return Err(bad(format!("at most {max} one-time prekeys of each kind per upload")));
    }
    let mut out_ec = Vec::with_capacity(ec.len());
    for b in ec {
        let k = OneTimePrekey::decode(b.as_slice())
            .map_err(|e| bad(format!("invalid one-time prekey: {e}")))?;
        out_ec.push(store::OneTimePrekey { key_id: k.id(), bytes: b.0.clone() });
    }
    let mut out_kem = Vec::with_capacity(kem.len());
    for b in kem {
        let k = KemPrekey::decode_verified(b.as_slice(), device)
            .map_err(|e| bad(format!("invalid one-time KEM prekey: {e}")))?;
        if k.kind() != KemPrekeyKind::OneTime {
            return Err(bad("a one-time KEM prekey must be of the one-time kind"));
        }
        out_kem.push(store::OneTimePrekey { key_id: k.id(), bytes: b.0.clone() });
    }
    let unique = |v: &[store::OneTimePrekey]| {
        v.iter().map(|k| k.key_id).collect::<BTreeSet<_>>().len() == v.len()
    };
    if !unique(&out_ec) || !unique(&out_kem) {
        return Err(bad("one-time prekey ids must be unique"));
    }
    Ok((out_ec, out_kem))
}

fn check_last_resort(
    bytes: &[u8],
    device: &parley_proto::DevicePublicKeys,
) -> Result<(), ApiError> {
    let k = KemPrekey::decode_verified(bytes, device)
        .map_err(|e| bad(format!("invalid last-resort KEM prekey: {e}")))?;
    if k.kind() != KemPrekeyKind::LastResort {
        return Err(bad("the last-resort KEM prekey must be of the last-resort kind"));
    }
    Ok(())
}

/// Register an account with its first device.
#[utoipa::path(post, path = "/v1/accounts", request_body = RegisterRequest, tag = "accounts",
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many registrations", body = ErrorBody)))]
pub async fn register(
    State(state): State<SharedState>,
    parts: axum::http::request::Parts,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    state.limiters.registration(peer_ip(&parts))?;
    create_account(&state, req).await
}

/// Creates an account for an operator (admin token), without the per-IP registration limit:
/// how `parley bench` provisions its devices on a server it does not run itself. The request
/// and its checks are those of `POST /v1/accounts`; the account is an ordinary account.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", request_body = RegisterRequest,
    security(("admin" = [])),
    responses((status = 201, body = RegisterResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn admin_create_account(
    State(state): State<SharedState>,
    _admin: Admin,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    create_account(&state, req).await
}

async fn create_account(
    state: &SharedState,
    req: RegisterRequest,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    parley_api::validate_username(&req.username).map_err(|e| bad(e.to_string()))?;
    let key: [u8; 32] = req
        .account_key
        .0
        .as_slice()
        .try_into()
        .map_err(|_| bad("the account key must be 32 bytes"))?;
    let account = AccountPublicKey::from_bytes(key)
        .map_err(|_| bad("the account key is not a valid Ed25519 key"))?;
    let cert = DeviceCertificate::decode_verified(req.device.certificate.as_slice())
        .map_err(|e| bad(format!("invalid device certificate: {e}")))?;
    if cert.account() != &account {
        return Err(bad("the device certificate was issued by another account key"));
    }
    let list = DeviceList::decode_verified(req.device_list.as_slice(), &account)
        .map_err(|e| bad(format!("invalid device list: {e}")))?;
    if list.devices().len() != 1 || !list.contains(&cert) {
        return Err(bad("the device list must name exactly the registering device"));
    }
    SignedPrekey::decode_verified(req.device.signed_prekey.as_slice(), cert.device())
        .map_err(|e| bad(format!("invalid signed prekey: {e}")))?;
    check_last_resort(req.device.last_resort_kem.as_slice(), cert.device())?;
    let (one_time, one_time_kem) = check_one_time(
        state,
        cert.device(),
        &req.device.one_time_prekeys,
        &req.device.one_time_kem_prekeys,
    )?;
    let cap = state.limits.max_one_time_prekeys;
    if one_time.len() as u64 > cap || one_time_kem.len() as u64 > cap {
        return Err(bad(format!("a device holds at most {cap} one-time prekeys of each kind")));
    }
    let (secret, token_hash) = auth::new_secret();
    let uid = state
        .store
        .create_account(NewAccount {
            username: req.username.clone(),
            account_key: account.as_bytes().to_vec(),
            device_list: req.device_list.0,
            device: NewDevice {
                device_id: cert.device_id(),
                certificate: req.device.certificate.0,
                token_hash,
                signed_prekey: req.device.signed_prekey.0,
                last_resort_kem: req.device.last_resort_kem.0,
                one_time,
                one_time_kem,
            },
            minor: req.age_class.is_minor(),
            now: now_secs(),
        })
        .await?;
    let token = auth::token_for(uid, &secret);
    metrics::counter!("parley_registrations_total").increment(1);
    tracing::info!(username = %req.username, "account registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            username: req.username,
            device_id: cert.device_id(),
            token: token.token.to_string(),
        }),
    ))
}

/// The authenticated account and device.
#[utoipa::path(get, path = "/v1/accounts/self", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = AccountInfo), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn account_self(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
) -> Result<Json<AccountInfo>, ApiError> {
    let rec = state.store.account_by_id(dev.account_id).await?.ok_or(ApiError::Unauthorized)?;
    let queued = state.store.queue_len(dev.uid).await?;
    Ok(Json(AccountInfo {
        username: rec.username,
        device_id: dev.device_id,
        devices: rec.devices.iter().map(|d| d.device_id).collect(),
        queued,
        age_class: AgeClass::from_minor(rec.minor),
    }))
}

/// Delete the account: devices, prekeys, queues.
#[utoipa::path(delete, path = "/v1/accounts/self", tag = "accounts", security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn delete_self(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
) -> Result<StatusCode, ApiError> {
    let rec = state.store.account_by_id(dev.account_id).await?.ok_or(ApiError::Unauthorized)?;
    state.store.delete_account(dev.account_id).await?;
    let uids: Vec<i64> = rec.devices.iter().map(|d| d.uid).collect();
    state.deleted(&uids);
    tracing::info!(username = %dev.username, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn status_for(state: &SharedState, uid: i64) -> Result<PrekeyStatus, ApiError> {
    let c = state.store.prekey_counts(uid).await?;
    let now = now_secs();
    let age = now.saturating_sub(c.signed_prekey_at);
    let lr_age = now.saturating_sub(c.last_resort_at);
    let low = state.limits.prekey_low_water;
    Ok(PrekeyStatus {
        one_time_prekeys: c.one_time,
        one_time_kem_prekeys: c.one_time_kem,
        low: c.one_time < low || c.one_time_kem < low,
        signed_prekey_age_secs: age,
        rotate: age.max(lr_age) >= state.limits.prekey_rotation_secs,
    })
}

/// Upload more one-time prekeys, or rotate the signed / last-resort prekeys.
#[utoipa::path(put, path = "/v1/devices/self/prekeys", request_body = PrekeyUpload, tag = "prekeys", security(("bearer" = [])),
    responses((status = 200, body = PrekeyStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn upload_prekeys(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    ApiJson(up): ApiJson<PrekeyUpload>,
) -> Result<Json<PrekeyStatus>, ApiError> {
    let rec = state.store.account_by_id(dev.account_id).await?.ok_or(ApiError::Unauthorized)?;
    let me = rec.devices.iter().find(|d| d.uid == dev.uid).ok_or(ApiError::Unauthorized)?;
    let cert = DeviceCertificate::decode_verified(&me.certificate)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(spk) = &up.signed_prekey {
        SignedPrekey::decode_verified(spk.as_slice(), cert.device())
            .map_err(|e| bad(format!("invalid signed prekey: {e}")))?;
    }
    if let Some(lr) = &up.last_resort_kem {
        check_last_resort(lr.as_slice(), cert.device())?;
    }
    let (one_time, one_time_kem) =
        check_one_time(&state, cert.device(), &up.one_time_prekeys, &up.one_time_kem_prekeys)?;
    state
        .store
        .update_prekeys(
            dev.uid,
            PrekeyChanges {
                signed_prekey: up.signed_prekey.map(|b| b.0),
                last_resort_kem: up.last_resort_kem.map(|b| b.0),
                one_time,
                one_time_kem,
                max_one_time: state.limits.max_one_time_prekeys,
                now: now_secs(),
            },
        )
        .await?;
    Ok(Json(status_for(&state, dev.uid).await?))
}

/// The device's prekey stock (tells the owner when to replenish or rotate).
#[utoipa::path(get, path = "/v1/devices/self/prekeys", tag = "prekeys", security(("bearer" = [])),
    responses((status = 200, body = PrekeyStatus), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn prekey_status(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
) -> Result<Json<PrekeyStatus>, ApiError> {
    Ok(Json(status_for(&state, dev.uid).await?))
}

/// Fetch one prekey bundle per device of an account (consumes one-time prekeys; rate-limited
/// per requesting device).
#[utoipa::path(get, path = "/v1/accounts/{username}/bundles", tag = "prekeys", security(("bearer" = [])),
    params(("username" = String, Path, description = "The account")),
    responses((status = 200, body = BundlesResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn bundles(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    Path(username): Path<String>,
) -> Result<Json<BundlesResponse>, ApiError> {
    parley_api::validate_username(&username).map_err(|e| bad(e.to_string()))?;
    state.limiters.bundles(dev.uid)?;
    let (rec, _first_contact) = reach(&state, &dev, &username).await?;
    let parts = state.store.take_bundles(rec.id).await?;
    let devices = parts
        .into_iter()
        .map(|p| {
            let kem = p.one_time_kem.unwrap_or(p.device.last_resort_kem);
            let bundle = PrekeyBundleIn::from_parts(
                p.device.certificate,
                p.device.signed_prekey,
                kem,
                p.one_time,
            );
            DeviceBundle { device_id: p.device.device_id, bundle: Bytes(bundle.encode()) }
        })
        .collect();
    Ok(Json(BundlesResponse {
        username: rec.username.clone(),
        account_key: Bytes(rec.account_key.clone()),
        device_list: Bytes(rec.device_list.clone()),
        devices,
    }))
}

/// Send one message: one ciphertext per recipient device, with the franking commitment TF.
/// The server tags TF (docs/PROTOCOL.md §12.4) and stores TF, its tag and key id with each
/// device's envelope. Answered only once durable.
#[utoipa::path(post, path = "/v1/messages", request_body = SendRequest, tag = "messages", security(("bearer" = [])),
    responses((status = 200, body = SendResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The sending account is suspended", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Stale device set", body = StaleDevices),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, description = "Rate limited or recipient queue full", body = ErrorBody)))]
pub async fn send(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    parts: axum::http::request::Parts,
    ApiJson(req): ApiJson<SendRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    send_message(&state, &dev, peer_ip(&parts), req).await.map(Json)
}

/// The work of a send, shared by `POST /v1/messages` and the `send` frame of `/v1/ws`: the
/// same checks, rate limits, franking tag and durable enqueue, whichever way it came.
pub(crate) async fn send_message(
    state: &SharedState,
    dev: &DeviceAuth,
    ip: std::net::IpAddr,
    req: SendRequest,
) -> Result<SendResponse, ApiError> {
    if dev.suspended {
        return Err(ApiError::Suspended);
    }
    state.limiters.send(dev.account_id, ip)?;
    let tf: [u8; FRANKING_TAG_LEN] = req
        .franking_tag
        .0
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("the franking tag must be {FRANKING_TAG_LEN} bytes")))?;
    if !parley_api::validate_message_id(&req.message_id) {
        return Err(bad("the message id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"));
    }
    parley_api::validate_username(&req.recipient).map_err(|e| bad(e.to_string()))?;
    let l = &state.limits;
    if req.envelopes.is_empty() || req.envelopes.len() > l.max_envelopes_per_send {
        return Err(bad(format!("a send carries 1 to {} envelopes", l.max_envelopes_per_send)));
    }
    if req.envelopes.iter().any(|e| e.ciphertext.0.is_empty()) {
        return Err(bad("an envelope's ciphertext cannot be empty"));
    }
    if let Some(big) = req.envelopes.iter().find(|e| e.ciphertext.0.len() > l.max_envelope_bytes) {
        return Err(ApiError::TooLarge(format!(
            "envelope for device {} has {} bytes; an envelope has at most {} bytes",
            big.device_id,
            big.ciphertext.0.len(),
            l.max_envelope_bytes
        )));
    }
    let named: BTreeSet<u32> = req.envelopes.iter().map(|e| e.device_id).collect();
    if named.len() != req.envelopes.len() {
        return Err(bad("each device may appear only once in a send"));
    }
    let (rec, conversation) = reach(state, dev, &req.recipient).await?;
    let have: BTreeSet<u32> = rec.devices.iter().map(|d| d.device_id).collect();
    let same_account = rec.id == dev.account_id;
    // To one's own account, the sending device itself is neither required nor allowed.
    let expected: BTreeSet<u32> =
        have.iter().copied().filter(|d| !(same_account && *d == dev.device_id)).collect();
    if named != expected {
        return Err(ApiError::StaleDevices {
            missing: expected.difference(&named).copied().collect(),
            extra: named.difference(&expected).copied().collect(),
        });
    }
    let uids: Vec<i64> =
        rec.devices.iter().filter(|d| expected.contains(&d.device_id)).map(|d| d.uid).collect();
    let deliveries = req
        .envelopes
        .into_iter()
        .filter_map(|e| {
            rec.devices.iter().find(|d| d.device_id == e.device_id).map(|d| Delivery {
                device_uid: d.uid,
                device_id: d.device_id,
                ciphertext: e.ciphertext.0,
            })
        })
        .collect();
    // One tag per send: the recipient is the account (its own username for a send to the
    // sender's other devices), the same for every device copy.
    let server_time_ms = now_ms();
    let (franking_kid, server_tag) = keyring(state)?
        .tag(&tf, &dev.username, dev.device_id, &rec.username, server_time_ms)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let outcome = state
        .store
        .enqueue(SendBatch {
            sender_uid: dev.uid,
            sender: dev.username.clone(),
            sender_device: dev.device_id,
            message_id: req.message_id.clone(),
            server_time_ms,
            deliveries,
            franking_tag: tf,
            server_tag,
            franking_kid,
            max_queue: l.max_queue_len,
            conversation,
        })
        .await?;
    if !outcome.duplicate {
        state.wake(&uids);
        metrics::counter!("parley_sends_total").increment(1);
    }
    Ok(SendResponse {
        message_id: req.message_id,
        server_time_ms: outcome.server_time_ms,
        duplicate: outcome.duplicate,
    })
}

/// Query parameters of `GET /v1/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    /// Only envelopes with an id greater than this.
    #[serde(default)]
    pub after: Option<u64>,
    /// At most this many (capped by the server's page size).
    #[serde(default)]
    pub limit: Option<u32>,
}

pub(crate) fn to_api(e: StoredEnvelope) -> parley_api::Envelope {
    parley_api::Envelope {
        id: e.id,
        message_id: e.message_id,
        sender: e.sender,
        sender_device: e.sender_device,
        server_time_ms: e.server_time_ms,
        ciphertext: Bytes(e.ciphertext),
        franking_tag: Bytes(e.franking_tag),
        server_tag: Bytes(e.server_tag),
        franking_key_id: e.franking_kid,
    }
}

/// Fetch waiting envelopes (the WebSocket pushes them; this is the polling alternative).
#[utoipa::path(get, path = "/v1/messages", tag = "messages", security(("bearer" = [])), params(FetchParams),
    responses((status = 200, body = FetchResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn fetch(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    params: Result<Query<FetchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FetchResponse>, ApiError> {
    let Query(p) = params.map_err(|e| bad(format!("invalid query: {}", e.body_text())))?;
    let page = state.limits.fetch_page;
    let limit = p.limit.unwrap_or(page).clamp(1, page);
    let mut envs = state.store.fetch(dev.uid, p.after.unwrap_or(0), limit + 1).await?;
    let more = envs.len() > limit as usize;
    envs.truncate(limit as usize);
    Ok(Json(FetchResponse { envelopes: envs.into_iter().map(to_api).collect(), more }))
}

/// Acknowledge (delete) envelopes of this device's queue.
#[utoipa::path(post, path = "/v1/messages/ack", request_body = AckRequest, tag = "messages", security(("bearer" = [])),
    responses((status = 200, body = AckResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn ack(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    if req.ids.len() > state.limits.max_ack_ids {
        return Err(bad(format!("at most {} ids per ack", state.limits.max_ack_ids)));
    }
    let deleted = state.store.ack(dev.uid, req.ids).await?;
    Ok(Json(AckResponse { deleted }))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Store-wide counts (admin token required).
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = AdminStats), (status = 401, body = ErrorBody)))]
pub async fn admin_stats(
    State(state): State<SharedState>,
    _admin: Admin,
) -> Result<Json<AdminStats>, ApiError> {
    let s = state.store.stats().await?;
    let c = state.store.commit_stats();
    Ok(Json(AdminStats {
        accounts: s.accounts,
        devices: s.devices,
        queued: s.queued,
        connections: state.hub.connections() as u64,
        commits: c.commits,
        committed_operations: c.operations,
    }))
}

fn checked_username(username: &str) -> Result<(), ApiError> {
    parley_api::validate_username(username).map_err(|e| bad(e.to_string()))
}

/// Block an account: nothing it sends reaches this account any more, and what it had queued for
/// this account's devices is deleted. The blocked account is answered as for an unknown account.
#[utoipa::path(put, path = "/v1/blocks/{username}", tag = "safety", security(("bearer" = [])),
    params(("username" = String, Path, description = "The account to block")),
    responses((status = 204, description = "Blocked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn block(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_block(&state, &dev, &username, true).await
}

/// Unblock an account.
#[utoipa::path(delete, path = "/v1/blocks/{username}", tag = "safety", security(("bearer" = [])),
    params(("username" = String, Path, description = "The account to unblock")),
    responses((status = 204, description = "Unblocked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn unblock(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_block(&state, &dev, &username, false).await
}

async fn set_block(
    state: &SharedState,
    dev: &DeviceAuth,
    username: &str,
    on: bool,
) -> Result<StatusCode, ApiError> {
    checked_username(username)?;
    let rec = state
        .store
        .account_by_username(username)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such account".into()))?;
    if rec.id == dev.account_id {
        return Err(bad("an account cannot block itself"));
    }
    state.store.set_block(dev.account_id, rec.id, on, now_secs()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The accounts this account blocks.
#[utoipa::path(get, path = "/v1/blocks", tag = "safety", security(("bearer" = [])),
    responses((status = 200, body = BlockList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn blocks(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
) -> Result<Json<BlockList>, ApiError> {
    Ok(Json(BlockList { blocked: state.store.blocks(dev.account_id).await? }))
}

/// Set an account's age class (admin token required).
#[utoipa::path(put, path = "/v1/admin/accounts/{username}/age", request_body = SetAgeRequest, tag = "admin",
    security(("admin" = [])), params(("username" = String, Path, description = "The account")),
    responses((status = 204, description = "Changed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn admin_set_age(
    State(state): State<SharedState>,
    _admin: Admin,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<SetAgeRequest>,
) -> Result<StatusCode, ApiError> {
    checked_username(&username)?;
    state.store.set_flag(&username, AccountFlag::Minor, req.age_class.is_minor()).await?;
    tracing::info!(username = %username, age_class = req.age_class.as_str(), "age class set by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// Suspend an account or lift its suspension (admin token required). A suspended account can
/// no longer send; it can still read, acknowledge and report.
#[utoipa::path(put, path = "/v1/admin/accounts/{username}/suspension", request_body = SetSuspensionRequest,
    tag = "admin", security(("admin" = [])), params(("username" = String, Path, description = "The account")),
    responses((status = 204, description = "Changed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn admin_set_suspension(
    State(state): State<SharedState>,
    _admin: Admin,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<SetSuspensionRequest>,
) -> Result<StatusCode, ApiError> {
    checked_username(&username)?;
    state.store.set_flag(&username, AccountFlag::Suspended, req.suspended).await?;
    tracing::info!(username = %username, suspended = req.suspended, "suspension set by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// 404 for unknown paths, as JSON.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// 405 for a known path with the wrong method, as JSON.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

// ---------------------------------------------------------------------------------------------
// Reports and moderation (docs/PROTOCOL.md §12.5-12.6, docs/OPERATIONS.md "Moderation")
// ---------------------------------------------------------------------------------------------

/// Most reports in one `GET /v1/admin/reports` page.
pub const REPORTS_PAGE: u32 = 100;

/// Report abuse: a franked report of received messages (the last one is the reported message,
/// the others context). The report's `reporter` must be the caller. Stored for moderators,
/// who verify it against the server's franking keys.
#[utoipa::path(post, path = "/v1/reports", request_body = ReportRequest, tag = "moderation", security(("bearer" = [])),
    responses((status = 201, description = "Queued for moderation", body = ReportResponse),
        (status = 400, description = "Malformed report or reason too long", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The report names another reporter", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, description = "Too many reports from this account", body = ErrorBody)))]
pub async fn report(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<(StatusCode, Json<ReportResponse>), ApiError> {
    if req.reason.len() > MAX_REPORT_REASON_LEN {
        return Err(bad(format!(
            "the reason has {} bytes; a reason has at most {MAX_REPORT_REASON_LEN} bytes",
            req.reason.len()
        )));
    }
    let report =
        Report::decode(req.report.as_slice()).map_err(|e| bad(format!("invalid report: {e}")))?;
    if report.reporter != dev.username {
        return Err(ApiError::Forbidden(
            "the report's reporter must be the reporting account".into(),
        ));
    }
    // `decode` guarantees a franked last item; this is only the sender it names.
    let Some(ReportItem::Franked { sender, .. }) = report.items.last() else {
        return Err(bad("invalid report: the last item must be a franked message"));
    };
    state.limiters.report(dev.account_id)?;
    let id = state
        .store
        .insert_report(NewReport {
            reporter: dev.username.clone(),
            sender: sender.clone(),
            reason: req.reason,
            report: req.report.0,
            created_at_ms: now_ms(),
        })
        .await?;
    metrics::counter!("parley_reports_total").increment(1);
    tracing::info!(report = id, reporter = %dev.username, "abuse report received");
    Ok((StatusCode::CREATED, Json(ReportResponse { id })))
}

fn body_of(content: &[u8]) -> Option<FrankedBody> {
    let (body, _nf) = content.split_last_chunk::<FRANKING_TAG_LEN>()?;
    FrankedBody::decode(body).ok()
}

fn verdict_json(v: ItemVerdict) -> serde_json::Value {
    if v.is_verified() {
        serde_json::Value::Bool(true)
    } else {
        serde_json::Value::String(v.to_string())
    }
}

fn from_body(kind: &str, body: Option<FrankedBody>, v: ItemVerdict) -> ReportedMessage {
    let mut m = ReportedMessage {
        kind: kind.into(),
        text: None,
        sender: None,
        sender_device: None,
        recipient: None,
        sent_at_ms: None,
        server_at_ms: None,
        seq: None,
        verified: verdict_json(v),
    };
    if let Some(b) = body {
        m.text = Some(b.text.to_string());
        m.sender = Some(b.sender.clone());
        m.sender_device = Some(b.sender_device);
        m.recipient = Some(b.recipient.clone());
        m.sent_at_ms = Some(b.sent_at_ms);
        m.seq = Some(b.seq);
    }
    m
}

fn reported_message(item: &ReportItem, v: ItemVerdict) -> ReportedMessage {
    match item {
        ReportItem::Franked { content, server_time_ms, .. } => {
            // The text is shown whenever the body decodes; `verified` says whether it is the
            // committed, server-tagged message.
            let mut m = from_body("message", body_of(content), v);
            m.server_at_ms = Some(*server_time_ms);
            m
        }
        ReportItem::Own { body_bytes } => from_body("own", FrankedBody::decode(body_bytes).ok(), v),
        ReportItem::Gap { sender, sender_device, from_seq, to_seq } => {
            let mut m = from_body("gap", None, v);
            m.text = Some(format!("messages {from_seq} to {to_seq} of this chain never arrived"));
            m.sender = Some(sender.clone());
            m.sender_device = Some(*sender_device);
            m.seq = Some(*from_seq);
            m
        }
    }
}

/// Verifies a stored report with the keyring at `now_secs`: the view, and the verdict on the
/// reported (last) message.
fn verify_stored(
    r: StoredReport,
    ring: &Keyring,
    now_secs: u64,
) -> Result<(ReportView, Option<ItemVerdict>), ApiError> {
    let report = Report::decode(&r.report)
        .map_err(|e| ApiError::Internal(format!("stored report {} does not decode: {e}", r.id)))?;
    let verdicts = parley_proto::verify_report(&report, |kid, _| ring.status(kid, now_secs));
    let last = verdicts.last().copied();
    let messages = report.items.iter().zip(verdicts).map(|(i, v)| reported_message(i, v)).collect();
    let view = ReportView {
        id: r.id,
        reporter: r.reporter,
        sender: r.sender,
        reason: r.reason,
        created_at_ms: r.created_at_ms,
        status: r.status.as_str().into(),
        messages,
    };
    Ok((view, last))
}

fn report_id(
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<u64, ApiError> {
    id.map(|Path(id)| id).map_err(|_| bad("the report id must be a non-negative integer"))
}

fn no_such_report() -> ApiError {
    ApiError::NotFound("no such report".into())
}

/// Query parameters of `GET /v1/admin/reports`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportsParams {
    /// Also resolved reports (default: open ones only).
    #[serde(default)]
    pub all: Option<bool>,
    /// Only reports with an id greater than this (paging).
    #[serde(default)]
    pub after: Option<u64>,
}

/// The moderation queue: open reports (or all with `all=true`), oldest first, at most 100 per
/// page, each verified against the franking keys (admin token required).
#[utoipa::path(get, path = "/v1/admin/reports", tag = "admin", security(("admin" = [])), params(ReportsParams),
    responses((status = 200, body = Vec<ReportView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn admin_reports(
    State(state): State<SharedState>,
    _admin: Admin,
    params: Result<Query<ReportsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ReportView>>, ApiError> {
    let Query(p) = params.map_err(|e| bad(format!("invalid query: {}", e.body_text())))?;
    let stored =
        state.store.reports(p.all.unwrap_or(false), p.after.unwrap_or(0), REPORTS_PAGE).await?;
    let ring = keyring(&state)?;
    let now = now_secs();
    let views = stored
        .into_iter()
        .map(|r| verify_stored(r, &ring, now).map(|(v, _)| v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(views))
}

/// One report, verified against the franking keys (admin token required).
#[utoipa::path(get, path = "/v1/admin/reports/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = u64, Path, description = "The report id")),
    responses((status = 200, body = ReportView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn admin_report(
    State(state): State<SharedState>,
    _admin: Admin,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ReportView>, ApiError> {
    let id = report_id(id)?;
    let stored = state.store.report(id).await?.ok_or_else(no_such_report)?;
    let (view, _) = verify_stored(stored, &*keyring(&state)?, now_secs())?;
    Ok(Json(view))
}

/// Resolve an open report: `dismiss`, `warn` (adds a warning to the sender's account) or
/// `suspend` (the sender's account can no longer send; only when the reported message
/// verifies). Answers the resolved report (admin token required).
#[utoipa::path(post, path = "/v1/admin/reports/{id}/resolve", request_body = ResolveRequest, tag = "admin",
    security(("admin" = [])), params(("id" = u64, Path, description = "The report id")),
    responses((status = 200, description = "Resolved", body = ReportView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already resolved, or a suspension on an unverified report", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn admin_resolve_report(
    State(state): State<SharedState>,
    _admin: Admin,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> Result<Json<ReportView>, ApiError> {
    let id = report_id(id)?;
    let stored = state.store.report(id).await?.ok_or_else(no_such_report)?;
    if stored.status != ReportStatus::Open {
        return Err(ApiError::Conflict(format!(
            "this report was already resolved ({})",
            stored.status.as_str()
        )));
    }
    let decision = match req.action {
        ModerationAction::Dismiss => ReportStatus::Dismiss,
        ModerationAction::Warn => ReportStatus::Warn,
        ModerationAction::Suspend => ReportStatus::Suspend,
    };
    if decision == ReportStatus::Suspend {
        let (_, last) = verify_stored(stored.clone(), &*keyring(&state)?, now_secs())?;
        if let Some(v) = last.filter(|v| !v.is_verified()) {
            return Err(ApiError::Conflict(format!(
                "cannot suspend on an unverified report: the reported message does not verify ({v})"
            )));
        }
    }
    state.store.resolve_report(id, decision, now_ms()).await?;
    tracing::info!(report = id, decision = decision.as_str(), sender = %stored.sender,
        "report resolved by an admin");
    let resolved = state.store.report(id).await?.ok_or_else(no_such_report)?;
    let (view, _) = verify_stored(resolved, &*keyring(&state)?, now_secs())?;
    Ok(Json(view))
}

/// Rotate the franking key: a new key tags messages from now on; the previous one still
/// verifies reports for `franking_grace_secs` (admin token required).
#[utoipa::path(post, path = "/v1/admin/franking-keys/rotate", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = RotateResponse), (status = 401, body = ErrorBody),
        (status = 409, description = "Other nodes kept rotating at the same time", body = ErrorBody)))]
pub async fn admin_rotate_franking_key(
    State(state): State<SharedState>,
    _admin: Admin,
) -> Result<Json<RotateResponse>, ApiError> {
    let now = now_secs();
    if let Some(vault) = &state.vault {
        let (active, retired) = rotate_shared(&state, vault, now).await?;
        tracing::info!(active, "franking key rotated by an admin (shared keyring)");
        return Ok(Json(RotateResponse { active, retired }));
    }
    let ring = state.franking.clone();
    // File writes and fsyncs run off the async workers; sends wait for the write lock only
    // while they run.
    let (active, retired) = tokio::task::spawn_blocking(move || {
        let mut ring = ring
            .write()
            .map_err(|_| ApiError::Internal("franking keyring lock poisoned".into()))?;
        let active = ring.rotate(now).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok::<_, ApiError>((active, ring.in_grace(now)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(active, "franking key rotated by an admin");
    Ok(Json(RotateResponse { active, retired }))
}

/// Rotation of the keyring shared by every node (in the database): read it, rotate, store it
/// if nobody changed it meanwhile (compare-and-swap on its version; retried on a race), then
/// take it here and tell the other nodes to reload it.
async fn rotate_shared(
    state: &SharedState,
    vault: &crate::secrets::Vault,
    now: u64,
) -> Result<(u32, Vec<u32>), ApiError> {
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(e.to_string());
    for _ in 0..8 {
        let loaded = vault
            .load(crate::secrets::FRANKING_KEYRING)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| ApiError::Internal("the shared franking keyring is missing".into()))?;
        let mut ring = Keyring::from_secret(&loaded.value, state.limits.franking_grace_secs)
            .map_err(|e| internal(&e))?;
        let active = ring.rotate(now).map_err(|e| internal(&e))?;
        let stored = vault
            .replace(crate::secrets::FRANKING_KEYRING, loaded.version, &ring.to_secret(), now)
            .await
            .map_err(|e| internal(&e))?;
        if stored {
            let retired = ring.in_grace(now);
            *state
                .franking
                .write()
                .map_err(|_| ApiError::Internal("franking keyring lock poisoned".into()))? = ring;
            if let Some(bus) = &state.bus {
                bus.publish(&crate::bus::Event::Keys);
            }
            return Ok((active, retired));
        }
    }
    Err(ApiError::Conflict(
        "the franking keyring kept changing under concurrent rotations; try again".into(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Key transparency (docs/KT.md)
// ---------------------------------------------------------------------------------------------

fn kt_error(e: crate::kt::KtError) -> ApiError {
    use crate::kt::KtError;
    match e {
        KtError::NotPublished => ApiError::NotPublished,
        KtError::BadRange(m) => ApiError::BadRequest(m),
        KtError::Store(s) => s.into(),
        other => ApiError::Internal(other.to_string()),
    }
}

fn signed_root(r: crate::kt::SignedRoot) -> KtSignedRoot {
    KtSignedRoot {
        epoch: r.epoch,
        root: Bytes(r.root.to_vec()),
        signature: Bytes(r.signature.to_vec()),
    }
}

/// The latest signed root and the directory's public keys (no authentication: auditors and
/// clients alike).
#[utoipa::path(get, path = "/v1/kt/root", tag = "key-transparency",
    responses((status = 200, body = KtRoot), (status = 429, body = ErrorBody)))]
pub async fn kt_root(State(state): State<SharedState>) -> Result<Json<KtRoot>, ApiError> {
    let root = state.kt.latest().await.map_err(kt_error)?;
    Ok(Json(KtRoot {
        root: signed_root(root),
        vrf_public_key: Bytes(state.kt.vrf_public_key().to_vec()),
        signing_key: Bytes(state.kt.signing_public_key().to_vec()),
    }))
}

/// The lookup proof of an account's current directory entry at the latest epoch (the same
/// reachability rules as its bundles; 404 also before the account's first epoch).
#[utoipa::path(get, path = "/v1/kt/lookup/{username}", tag = "key-transparency", security(("bearer" = [])),
    params(("username" = String, Path, description = "The account")),
    responses((status = 200, body = KtProofResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn kt_lookup(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    Path(username): Path<String>,
) -> Result<Json<KtProofResponse>, ApiError> {
    parley_api::validate_username(&username).map_err(|e| bad(e.to_string()))?;
    let rec = if username == dev.username {
        std::sync::Arc::new(
            state.store.account_by_id(dev.account_id).await?.ok_or(ApiError::Unauthorized)?,
        )
    } else {
        reach(&state, &dev, &username).await?.0
    };
    let (proof, root) = state.kt.lookup(&username).await.map_err(kt_error)?;
    Ok(Json(KtProofResponse {
        username,
        root: signed_root(root),
        proof: Bytes(proof),
        account_key: Bytes(rec.account_key.clone()),
        device_list: Bytes(rec.device_list.clone()),
    }))
}

/// The complete key history of the caller's own account (self-monitoring).
#[utoipa::path(get, path = "/v1/kt/history", tag = "key-transparency", security(("bearer" = [])),
    responses((status = 200, body = KtProofResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn kt_history(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
) -> Result<Json<KtProofResponse>, ApiError> {
    let rec = state.store.account_by_id(dev.account_id).await?.ok_or(ApiError::Unauthorized)?;
    let (proof, root) = state.kt.history(&dev.username).await.map_err(kt_error)?;
    Ok(Json(KtProofResponse {
        username: dev.username,
        root: signed_root(root),
        proof: Bytes(proof),
        account_key: Bytes(rec.account_key),
        device_list: Bytes(rec.device_list),
    }))
}

/// `GET /v1/kt/audit` query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditParams {
    /// First epoch (its root is included).
    pub start: u64,
    /// Last epoch: `start < end`, at most 64 epochs after `start`.
    pub end: u64,
}

/// The append-only proof between two epochs, with every signed root of the range (no
/// authentication: for auditors and clients).
#[utoipa::path(get, path = "/v1/kt/audit", tag = "key-transparency", params(AuditParams),
    responses((status = 200, body = KtAuditResponse), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn kt_audit(
    State(state): State<SharedState>,
    Query(q): Query<AuditParams>,
) -> Result<Json<KtAuditResponse>, ApiError> {
    let a = state.kt.audit(q.start, q.end).await.map_err(kt_error)?;
    Ok(Json(KtAuditResponse {
        roots: a.roots.into_iter().map(signed_root).collect(),
        proof: Bytes(a.proof),
    }))
}

/// Publish a key-transparency epoch now with everything queued (admin token required; the
/// server also publishes every `kt_epoch_interval_secs`).
#[utoipa::path(post, path = "/v1/admin/kt/publish", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = KtPublishResponse), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn admin_kt_publish(
    State(state): State<SharedState>,
    _admin: Admin,
) -> Result<Json<KtPublishResponse>, ApiError> {
    if !state.kt_publisher().await.map_err(kt_error)? {
        return Err(ApiError::Conflict(
            "another node of this cluster publishes the key-transparency epochs; it publishes every kt_epoch_interval_secs".into(),
        ));
    }
    let p = state.kt.publish().await.map_err(kt_error)?;
    tracing::info!(
        epoch = p.root.epoch,
        updates = p.updates,
        "key-transparency epoch published by an admin"
    );
    Ok(Json(KtPublishResponse { root: signed_root(p.root), updates: p.updates }))
}
