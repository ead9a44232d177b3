//! The local JSON API (docs/UI.md §2). Every handler runs its work as one job on the engine
//! task, so the page sees exactly what the command line would.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parley_client::filters::{FilterReason, FilterRule, FilterSettings};
use parley_client::{
    AgeClass, Client, ClientError, ConversationSummary, HistoryEntry, KtStatus, TimelineItem,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use zeroize::Zeroizing;

use super::engine::{JobError, Push};
use super::{Shared, Ui};

/// Longest a page may leave the events socket silent before a ping.
const PING: Duration = Duration::from_secs(20);

pub(super) fn routes(ui: Shared) -> Router<Shared> {
    Router::new()
        .route("/state", get(state))
        .route("/unlock", post(unlock))
        .route("/lock", post(lock))
        .route("/account", get(account).post(create_account))
        .route("/conversations", get(conversations))
        .route("/conversations/{peer}", get(conversation))
        .route("/conversations/{peer}/send", post(send))
        .route("/requests", get(requests))
        .route("/requests/{peer}/{action}", post(answer_request))
        .route("/peers/{peer}/{action}", post(peer_action))
        .route("/reports", post(report))
        .route("/safety/{peer}", get(safety))
        .route("/filters", get(filters).post(set_filters))
        .route("/filters/rules", post(add_rule))
        .route("/filters/rules/delete", post(remove_rule))
        .route("/events", get(events))
        .with_state(ui)
}

/// An error answer: a status and one sentence.
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Locked => ApiError(StatusCode::UNAUTHORIZED, "locked: unlock first".into()),
            JobError::Unavailable => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "the client is busy; try again".into())
            }
            JobError::Client(e) => ApiError::from(e),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        use ClientError as E;
        let status = match &e {
            E::WrongPassphrase => StatusCode::UNAUTHORIZED,
            E::Unreachable(_) => StatusCode::BAD_GATEWAY,
            E::NoSuchUser(_) | E::UnknownContact(_) | E::NoRequest(_) => StatusCode::NOT_FOUND,
            E::InvalidUsername(_)
            | E::InvalidServerUrl(_)
            | E::InsecureServer
            | E::SendToSelf
            | E::MessageTooLong(_)
            | E::InvalidFilter(_)
            | E::InvalidReport(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::NoAccount(_)
            | E::AccountExists(_)
            | E::Busy(_)
            | E::IdentityChanged(_)
            | E::BlockedContact(_)
            | E::KtAlarm(_) => StatusCode::CONFLICT,
            // The server's own 401/403 must not read as this page's session being refused.
            E::Server { status, .. }
                if (400..500).contains(status) && ![401, 403].contains(status) =>
            {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            E::Server { .. } | E::Protocol(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Usernames in paths are checked before any work (bounded cost, clear error).
fn peer_name(peer: &str) -> Result<String, ApiError> {
    parley_api::validate_username(peer).map_err(|e| {
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid username: {e}"))
    })?;
    Ok(peer.to_string())
}

fn filtered(f: Option<&FilterReason>) -> Value {
    f.map_or(Value::Null, |r| Value::from(r.as_str()))
}

fn message_json(m: &HistoryEntry) -> Value {
    json!({
        "kind": "message",
        "id": m.id,
        "from": m.from,
        "outgoing": m.outgoing,
        "text": m.text,
        "sent_at": m.sent_at,
        "received_at": m.received_at,
        "state": m.state,
        "filtered": filtered(m.filtered.as_ref()),
    })
}

fn kt_json(s: Option<&KtStatus>) -> Value {
    s.map_or(Value::Null, |s| Value::from(s.as_str()))
}

// ---------------------------------------------------------------------------------------------
// Lock state and account
// ---------------------------------------------------------------------------------------------

async fn state_of(ui: &Ui) -> ApiResult {
    let has_account = ui.engine.settings.home.join("parley.db").exists();
    let online = ui.engine.online();
    let v = ui
        .engine
        .with_slot(move |slot| {
            Box::pin(async move {
                let Some(c) = slot.as_ref() else {
                    return Ok::<_, ClientError>(json!({
                        "locked": true, "has_account": has_account, "username": null,
                        "online": online, "requests": 0, "kt_alarms": [],
                    }));
                };
                let alarms: Vec<Value> = c
                    .kt_alarms()
                    .await?
                    .into_iter()
                    .map(|a| json!({ "user": a.user, "reason": a.reason }))
                    .collect();
                Ok(json!({
                    "locked": false, "has_account": true, "username": c.username(),
                    "online": online, "requests": c.requests().await?.len(),
                    "kt_alarms": alarms,
                }))
            })
        })
        .await??;
    Ok(Json(v))
}

async fn state(State(ui): State<Shared>) -> ApiResult {
    state_of(&ui).await
}

#[derive(Deserialize)]
struct UnlockBody {
    passphrase: String,
}

async fn unlock(State(ui): State<Shared>, Json(body): Json<UnlockBody>) -> ApiResult {
    let pass = Zeroizing::new(body.passphrase);
    let settings = ui.engine.settings.clone();
    ui.engine
        .with_slot(move |slot| {
            Box::pin(async move {
                if slot.is_none() {
                    let c = Client::open(
                        &settings.home,
                        &pass,
                        settings.server_override.clone(),
                        &settings.opts,
                    )
                    .await?;
                    *slot = Some(c);
                }
                Ok::<_, ClientError>(())
            })
        })
        .await??;
    ui.engine.changed();
    state_of(&ui).await
}

async fn lock(State(ui): State<Shared>) -> ApiResult {
    ui.engine
        .with_slot(|slot| {
            Box::pin(async move {
                if let Some(c) = slot.take() {
                    c.close().await;
                }
            })
        })
        .await?;
    ui.engine.changed();
    state_of(&ui).await
}

#[derive(Deserialize)]
struct CreateBody {
    username: String,
    server: String,
    passphrase: String,
}

async fn create_account(State(ui): State<Shared>, Json(body): Json<CreateBody>) -> ApiResult {
    let pass = Zeroizing::new(body.passphrase);
    if pass.is_empty() {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "choose a passphrase".into()));
    }
    let settings = ui.engine.settings.clone();
    ui.engine
        .with_slot(move |slot| {
            Box::pin(async move {
                if slot.is_some() {
                    return Err(ClientError::AccountExists(settings.home.display().to_string()));
                }
                let c = Client::create_account(
                    &settings.home,
                    &body.server,
                    &body.username,
                    &pass,
                    &settings.opts,
                )
                .await?;
                *slot = Some(c);
                Ok(())
            })
        })
        .await??;
    ui.engine.changed();
    state_of(&ui).await
}

async fn account(State(ui): State<Shared>) -> ApiResult {
    let info = ui.engine.with_client(|c| Box::pin(c.account_info())).await?;
    ui.engine.set_online(info.queued.is_some());
    Ok(Json(json!({
        "username": info.username,
        "device_id": info.device_id,
        "server": info.server,
        "fingerprint": info.fingerprint,
        "age_class": match info.age_class { AgeClass::Minor => "minor", _ => "adult" },
        "queued": info.queued,
        "outbox": info.outbox,
    })))
}

// ---------------------------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------------------------

async fn conversations(State(ui): State<Shared>) -> ApiResult {
    let (list, kt) = ui
        .engine
        .with_client(|c| {
            Box::pin(async move {
                let list: Vec<ConversationSummary> = c.conversations().await?;
                let kt: BTreeMap<String, KtStatus> = c.kt_statuses().await?;
                Ok((list, kt))
            })
        })
        .await?;
    let out: Vec<Value> = list
        .iter()
        .filter(|s| s.accepted || s.blocked)
        .map(|s| {
            json!({
                "peer": s.peer,
                "blocked": s.blocked,
                "unread": s.unread,
                "kt": kt_json(kt.get(&s.peer)),
                "last": s.last.as_ref().map(|m| json!({
                    "text": if m.filtered.is_some() { None } else { m.text.clone() },
                    "outgoing": m.outgoing,
                    "at": m.received_at.unwrap_or(m.sent_at),
                    "filtered": filtered(m.filtered.as_ref()),
                })),
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn conversation(State(ui): State<Shared>, Path(peer): Path<String>) -> ApiResult {
    let peer = peer_name(&peer)?;
    let v = ui
        .engine
        .with_client(move |c| {
            Box::pin(async move {
                let items = c.timeline(&peer).await?;
                let request = c.is_request(&peer).await?;
                let blocked = c.is_blocked(&peer).await?;
                let kt = c.kt_status(&peer).await?;
                if !request && c.unread(&peer).await? > 0 {
                    c.mark_read(&peer).await?;
                }
                let items: Vec<Value> = items
                    .iter()
                    .map(|i| match i {
                        TimelineItem::Message(m) => message_json(m),
                        TimelineItem::Notice { event, text, at } => {
                            json!({ "kind": "notice", "event": event, "text": text, "at": at })
                        }
                    })
                    .collect();
                Ok(json!({
                    "peer": peer, "request": request, "blocked": blocked,
                    "kt": kt_json(kt.as_ref()), "items": items,
                }))
            })
        })
        .await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct SendBody {
    text: String,
}

async fn send(
    State(ui): State<Shared>,
    Path(peer): Path<String>,
    Json(body): Json<SendBody>,
) -> ApiResult {
    let peer = peer_name(&peer)?;
    if body.text.trim().is_empty() {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "the message is empty".into()));
    }
    let r = ui
        .engine
        .with_client(move |c| Box::pin(async move { c.send(&peer, &body.text).await }))
        .await?;
    ui.engine.set_online(!r.queued);
    ui.engine.changed();
    Ok(Json(json!({ "id": r.id, "queued": r.queued })))
}

// ---------------------------------------------------------------------------------------------
// Requests, blocks, key changes, reports
// ---------------------------------------------------------------------------------------------

async fn requests(State(ui): State<Shared>) -> ApiResult {
    let v = ui
        .engine
        .with_client(|c| {
            Box::pin(async move {
                let mut out = Vec::new();
                for r in c.requests().await? {
                    let messages: Vec<Value> = c
                        .history(&r.from)
                        .await?
                        .iter()
                        .filter(|m| !m.outgoing)
                        .map(|m| {
                            json!({
                                "id": m.id, "text": m.text, "sent_at": m.sent_at,
                                "filtered": filtered(m.filtered.as_ref()),
                            })
                        })
                        .collect();
                    out.push(json!({
                        "from": r.from, "count": r.count, "first_at": r.first_at,
                        "messages": messages,
                    }));
                }
                Ok(Value::Array(out))
            })
        })
        .await?;
    Ok(Json(v))
}

async fn answer_request(
    State(ui): State<Shared>,
    Path((peer, action)): Path<(String, String)>,
) -> ApiResult {
    relation(&ui, &peer, action, &["accept", "decline", "block"]).await
}

async fn peer_action(
    State(ui): State<Shared>,
    Path((peer, action)): Path<(String, String)>,
) -> ApiResult {
    relation(&ui, &peer, action, &["block", "unblock", "accept-key"]).await
}

/// Changes what this account says of `peer`: one of the `allowed` actions.
async fn relation(ui: &Ui, peer: &str, action: String, allowed: &[&str]) -> ApiResult {
    let peer = peer_name(peer)?;
    if !allowed.contains(&action.as_str()) {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such action".into()));
    }
    ui.engine
        .with_client(move |c| {
            Box::pin(async move {
                match action.as_str() {
                    "accept" => c.accept(&peer).await,
                    "decline" => c.decline(&peer).await,
                    "block" => c.block(&peer).await,
                    "unblock" => c.unblock(&peer).await,
                    _ => c.accept_key_change(&peer).await,
                }
            })
        })
        .await?;
    ui.engine.changed();
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReportBody {
    /// Whose message it is (message ids are chosen by senders).
    from: String,
    message_id: String,
    #[serde(default)]
    reason: String,
    context: Option<usize>,
    #[serde(default)]
    block: bool,
}

async fn report(State(ui): State<Shared>, Json(body): Json<ReportBody>) -> ApiResult {
    if body.message_id.is_empty() || body.message_id.len() > 64 {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "invalid message id".into()));
    }
    let from = peer_name(&body.from)?;
    let id = ui
        .engine
        .with_client(move |c| {
            Box::pin(async move {
                c.report_from(Some(&from), &body.message_id, body.context, &body.reason, body.block)
                    .await
            })
        })
        .await?;
    ui.engine.changed();
    Ok(Json(json!({ "report_id": id })))
}

// ---------------------------------------------------------------------------------------------
// Safety number and key transparency
// ---------------------------------------------------------------------------------------------

async fn safety(State(ui): State<Shared>, Path(peer): Path<String>) -> ApiResult {
    let peer = peer_name(&peer)?;
    let name = peer.clone();
    let (number, fingerprint, kt) = ui
        .engine
        .with_client(move |c| {
            Box::pin(async move {
                let number = c.safety_number(&peer).await?;
                let fingerprint = c
                    .contacts()
                    .await?
                    .into_iter()
                    .find(|k| k.username == peer)
                    .map(|k| k.fingerprint);
                // A fresh proof when the server answers; the last known status otherwise.
                let kt = match c.kt_verify(&peer).await {
                    Ok(r) => json!({
                        "status": r.status.as_str(), "epoch": r.epoch,
                        "root": r.root.map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                        "reason": r.reason,
                    }),
                    Err(e) if e.is_unreachable() => json!({
                        "status": kt_json(c.kt_status(&peer).await?.as_ref()),
                        "epoch": null, "root": null,
                        "reason": "the server could not be reached; last known status",
                    }),
                    Err(e) => return Err(e),
                };
                Ok((number, fingerprint, kt))
            })
        })
        .await?;
    let qr =
        qrcode::QrCode::with_error_correction_level(&number.qr_payload()[..], qrcode::EcLevel::M)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("QR code: {e}")))?;
    let modules: String =
        qr.to_colors().iter().map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' }).collect();
    Ok(Json(json!({
        "peer": name,
        "safety_number": number.grouped(),
        "qr": { "size": qr.width(), "modules": modules },
        "fingerprint": fingerprint,
        "kt": kt,
    })))
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

fn filters_json(s: &FilterSettings) -> Value {
    let rules: Vec<Value> =
        s.rules.iter().map(|r| json!({ "pattern": r.pattern, "regex": r.regex })).collect();
    json!({
        "enabled": s.enabled, "link_warnings": s.link_warnings, "defaults": s.defaults,
        "rules": rules,
    })
}

async fn filters(State(ui): State<Shared>) -> ApiResult {
    let s = ui.engine.with_client(|c| Box::pin(c.filter_settings())).await?;
    Ok(Json(filters_json(&s)))
}

#[derive(Deserialize)]
struct FiltersBody {
    enabled: Option<bool>,
    link_warnings: Option<bool>,
}

async fn set_filters(State(ui): State<Shared>, Json(body): Json<FiltersBody>) -> ApiResult {
    let s = ui
        .engine
        .with_client(move |c| {
            Box::pin(async move {
                c.set_filters(body.enabled, body.link_warnings).await?;
                c.filter_settings().await
            })
        })
        .await?;
    ui.engine.changed();
    Ok(Json(filters_json(&s)))
}

#[derive(Deserialize)]
struct RuleBody {
    pattern: String,
    #[serde(default)]
    regex: bool,
}

async fn add_rule(State(ui): State<Shared>, Json(body): Json<RuleBody>) -> ApiResult {
    change_rule(&ui, body, true).await
}

async fn remove_rule(State(ui): State<Shared>, Json(body): Json<RuleBody>) -> ApiResult {
    change_rule(&ui, body, false).await
}

/// Adds or removes one of the user's filter rules; answers the filters as they are now.
async fn change_rule(ui: &Ui, body: RuleBody, add: bool) -> ApiResult {
    let rule = FilterRule { pattern: body.pattern, regex: body.regex };
    let s = ui
        .engine
        .with_client(move |c| {
            Box::pin(async move {
                if add {
                    c.add_filter(rule).await?;
                } else {
                    c.remove_filter(&rule).await?;
                }
                c.filter_settings().await
            })
        })
        .await?;
    ui.engine.changed();
    Ok(Json(filters_json(&s)))
}

// ---------------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------------

async fn events(State(ui): State<Shared>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(4096).max_frame_size(4096).on_upgrade(move |socket| push_loop(ui, socket))
}

fn push_text(p: Push) -> String {
    match p {
        Push::Changed => json!({ "type": "changed" }).to_string(),
        Push::Online(online) => json!({ "type": "online", "online": online }).to_string(),
    }
}

async fn push_loop(ui: Shared, mut socket: WebSocket) {
    let mut pushes = ui.engine.subscribe();
    if socket.send(Message::text(push_text(Push::Online(ui.engine.online())))).await.is_err() {
        return;
    }
    loop {
        let out = tokio::select! {
            p = pushes.recv() => match p {
                Ok(p) => Message::text(push_text(p)),
                // Missed some: one "changed" covers them all.
                Err(RecvError::Lagged(_)) => Message::text(push_text(Push::Changed)),
                Err(RecvError::Closed) => break,
            },
            m = socket.recv() => match m {
                // The page says nothing; anything but a close is ignored.
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            () = tokio::time::sleep(PING) => Message::Ping(Vec::new().into()),
        };
        if socket.send(out).await.is_err() {
            break;
        }
    }
}
