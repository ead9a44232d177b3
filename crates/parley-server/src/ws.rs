//! `/v1/ws`: push delivery. After authentication (bearer header on the upgrade request) the
//! server pushes the device's queue in order, at most `ws_inflight_window` unacknowledged
//! envelopes at a time, then a `drained` frame, then new envelopes as they are committed. The
//! client acks by id; acked envelopes are deleted. Unacked envelopes are pushed again on the
//! next connection (at-least-once; clients drop duplicates by message id). A new connection of
//! the same device closes the old one, on this node or, over the bus, on any other node.
//!
//! The client may also send messages on the connection (`{"type":"send","request":…}`, the
//! body of `POST /v1/messages`, within `ws_max_message_bytes`: a larger frame closes the
//! connection, as any oversized frame does): each is processed exactly as that request would be and
//! answered by a `sent` or `send_failed` frame with its message id. Several sends may be in
//! flight (up to `ws_sends_in_flight`; the connection's further frames are not read until one
//! is answered), and their answers may come in any order. A device that holds its delivery
//! connection so sends without an HTTP request per message.
//!
//! A connection is woken by a committed send (locally, or by a `wake` event from another node)
//! and otherwise re-reads its queue every `ws_poll_secs`: a lost wake-up delays delivery by at
//! most that long and never loses an envelope (the queue in the database is the truth).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use parley_api::{ClientFrame, ErrorBody, SendRequest, ServerFrame};
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;

use crate::error::ApiError;
use crate::hub;

use crate::routes::to_api;
use crate::state::{AuthDevice, SharedState};
use crate::store::DeviceAuth;

/// Acks of one connection being written at once (each is one operation of the writer's next
/// group); beyond that the connection's frames wait.
const MAX_ACKS_IN_FLIGHT: usize = 4;

/// Upgrade to the delivery WebSocket.
#[utoipa::path(get, path = "/v1/ws", tag = "messages", security(("bearer" = [])),
    responses((status = 101, description = "Switching to the WebSocket delivery protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = parley_api::ErrorBody),
        (status = 401, body = parley_api::ErrorBody), (status = 429, body = parley_api::ErrorBody)))]
pub async fn ws(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    parts: axum::http::request::Parts,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, crate::error::ApiError> {
    let upgrade = upgrade.map_err(|_| {
        crate::error::ApiError::BadRequest("this endpoint expects a WebSocket upgrade".into())
    })?;
    let max = state.limits.ws_max_message_bytes;
    let ip = crate::state::peer_ip(&parts);
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(state, dev, ip, socket)))
}

async fn send_frame(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    feed_frame(socket, frame).await && socket.flush().await.is_ok()
}

/// Queues a frame in the socket's write buffer without flushing it: frames fed together
/// leave in one write (one system call) at the next flush, instead of one write each.
async fn feed_frame(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => socket.feed(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn close_with(socket: &mut WebSocket, error: &str, message: &str) {
    let frame = ServerFrame::Error(ErrorBody {
        error: error.into(),
        message: message.into(),
        retry_after_secs: None,
    });
    let _ = send_frame(socket, &frame).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// The wait before a connection's next safety-net read, drawn uniformly from [poll/2, poll]:
/// connections opened together (a server restart, a load test) would otherwise all read the
/// database at the same moment, every `poll`, for as long as they stay open, and each read
/// then waits its turn for a read connection (docs/BENCHMARKS.md, part 2, S13). Never longer
/// than `poll`, the documented bound on a lost wake-up.
fn poll_delay(poll: Duration) -> Duration {
    poll.mul_f64(rand::RngExt::random_range(&mut rand::rng(), 0.5..=1.0))
}

/// Runs a `send` frame as `POST /v1/messages` would, for the device authenticated at the
/// upgrade. The device is looked up again (as every HTTP request does): a deleted device, a
/// replaced token or a suspension since the upgrade take effect on the next send.
///
/// Each send runs as its own task: it must make progress while the connection's task waits
/// on something else (a send polled only by the connection's task could hold a pooled
/// database connection that the connection's own queue read then waits for).
async fn run_send(
    state: SharedState,
    uid: i64,
    token_hash: [u8; 32],
    ip: IpAddr,
    request: SendRequest,
) -> ServerFrame {
    let message_id = request.message_id.clone();
    let result = async {
        let dev = state.store.device_auth(uid).await?.ok_or(ApiError::Unauthorized)?;
        if !bool::from(dev.token_hash.ct_eq(&token_hash)) {
            return Err(ApiError::Unauthorized);
        }
        // The limits every HTTP request passes (per address, per account), then the send's.
        state.limiters.ip(ip)?;
        state.limiters.account(dev.account_id)?;
        crate::routes::send_message(&state, &dev, ip, request).await
    }
    .await;
    match result {
        Ok(r) => ServerFrame::Sent(r),
        Err(e) => ServerFrame::SendFailed(e.into_send_failure(message_id)),
    }
}

async fn serve(state: SharedState, dev: DeviceAuth, ip: IpAddr, mut socket: WebSocket) {
    let reg = state.hub.register(dev.uid);
    // The other nodes close their connection of this device, if any.
    state.connected(dev.uid, reg.conn);
    let mut kicked = reg.kicked;
    let mut shutdown = state.shutdown.clone();
    metrics::gauge!("parley_ws_connections").increment(1.0);
    let window = state.limits.ws_inflight_window;
    let max_sends = state.limits.ws_sends_in_flight;
    let poll = Duration::from_secs(state.limits.ws_poll_secs);
    let mut last_sent = 0u64;
    let mut inflight: BTreeSet<u64> = BTreeSet::new();
    let mut drained_told = false;
    // Dropped with the connection: a send still running is abandoned as a cancelled HTTP
    // request is (committed or not; the client retries with the same message id).
    let mut sends: JoinSet<ServerFrame> = JoinSet::new();
    // Read the queue now; then when woken, when the poll is due, and when acks open the
    // window while more is waiting (not after every frame: a connection that sends a lot
    // would otherwise read its queue once per send).
    let mut read_queue = true;
    let mut more_waiting = false;
    // With a store that hands committed envelopes over (SQLite), pushes come from memory once
    // the database has been read to its end (crate::hub::Memory); otherwise from the database.
    let memory = state.hub.memory_push();
    let mut next_poll = tokio::time::Instant::now() + poll_delay(poll);
    // Acks being written. The connection goes on pushing and reading meanwhile (an ack is not
    // answered, and a later read starts after the last envelope pushed whatever the acks'
    // progress); at most MAX_ACKS_IN_FLIGHT at a time, then frames are not read until one is done.
    let mut acks: JoinSet<Result<u64, crate::store::StoreError>> = JoinSet::new();
    'conn: loop {
        // Push what is waiting, within the window. The frames are fed, then flushed together.
        let mut fed = false;
        while read_queue && inflight.len() < window {
            let room = u32::try_from(window - inflight.len()).unwrap_or(u32::MAX);
            // One look at the memory: either take from it, or restart it before the read.
            let taken = if memory {
                let mut m = hub::lock(&reg.memory);
                if more_waiting || m.is_stale() {
                    m.restart();
                    None
                } else {
                    Some(m.take(last_sent, room as usize))
                }
            } else {
                None
            };
            let from_memory = taken.is_some();
            let envs = if let Some(envs) = taken {
                envs
            } else {
                match state.store.fetch(dev.uid, last_sent, room).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "fetch failed on a connection");
                        close_with(&mut socket, "internal", "the server could not read the queue")
                            .await;
                        break 'conn;
                    }
                }
            };
            let short = envs.len() < room as usize;
            if !from_memory {
                more_waiting = !short;
            }
            for env in envs {
                last_sent = env.id;
                inflight.insert(env.id);
                let latency = crate::state::now_ms().saturating_sub(env.server_time_ms);
                metrics::histogram!("parley_delivery_latency_seconds")
                    .record(latency as f64 / 1000.0);
                if !feed_frame(&mut socket, &ServerFrame::Envelope(to_api(env))).await {
                    break 'conn;
                }
                fed = true;
                drained_told = false;
            }
            if short {
                if !drained_told {
                    if !feed_frame(&mut socket, &ServerFrame::Drained).await {
                        break 'conn;
                    }
                    fed = true;
                    drained_told = true;
                }
                break;
            }
        }
        if fed && socket.flush().await.is_err() {
            break 'conn;
        }
        read_queue = false;
        tokio::select! {
            _ = reg.notify.notified() => read_queue = true,
            _ = tokio::time::sleep_until(next_poll) => {
                // The safety net reads the database, whatever the memory holds.
                hub::lock(&reg.memory).mark_stale();
                read_queue = true;
                next_poll = tokio::time::Instant::now() + poll_delay(poll);
            }
            why = &mut kicked => {
                match why {
                    Ok(crate::hub::Kick::AccountDeleted) => close_with(&mut socket, "account_deleted", "this account was deleted").await,
                    _ => close_with(&mut socket, "replaced", "this device connected again elsewhere").await,
                }
                break;
            }
            _ = shutdown.changed() => {
                close_with(&mut socket, "unavailable", "the server is shutting down").await;
                break;
            }
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                // This answer and every other one already done leave in one write.
                let mut done = Some(done);
                while let Some(d) = done.take().or_else(|| sends.try_join_next()) {
                    match d {
                        Ok(answer) => {
                            if !feed_frame(&mut socket, &answer).await {
                                break 'conn;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a send on a connection did not finish");
                            close_with(&mut socket, "internal", "the server could not process a send").await;
                            break 'conn;
                        }
                    }
                }
                if socket.flush().await.is_err() {
                    break;
                }
            }
            Some(done) = acks.join_next(), if !acks.is_empty() => match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "ack failed on a connection");
                    close_with(&mut socket, "internal", "the server could not record the ack").await;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "an ack on a connection did not finish");
                    close_with(&mut socket, "internal", "the server could not record the ack").await;
                    break;
                }
            },
            // Back-pressure: no further frames are read while `max_sends` sends (or
            // MAX_ACKS_IN_FLIGHT acks) are running.
            msg = socket.recv(), if sends.len() < max_sends && acks.len() < MAX_ACKS_IN_FLIGHT => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Ack { ids }) if ids.len() <= state.limits.max_ack_ids => {
                        for id in &ids {
                            inflight.remove(id);
                        }
                        let store = state.store.clone();
                        acks.spawn(async move { store.ack(dev.uid, ids).await });
                        // The window opened: push what waits (memory is cheap to look at).
                        read_queue = more_waiting || memory;
                    }
                    Ok(ClientFrame::Ack { .. }) => {
                        close_with(&mut socket, "bad_request", "too many ids in one ack").await;
                        break;
                    }
                    Ok(ClientFrame::Send { request }) => {
                        sends.spawn(run_send(state.clone(), dev.uid, dev.token_hash, ip, request));
                    }
                    Err(_) => {
                        close_with(&mut socket, "bad_request", "unknown or malformed frame").await;
                        break;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    close_with(&mut socket, "bad_request", "frames are JSON text").await;
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            },
        }
    }
    // The acks already read are written before the connection is gone (an ack the client
    // sent just before closing still deletes what it acknowledged).
    while let Some(done) = acks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "ack failed on a closing connection");
        }
    }
    state.hub.unregister(dev.uid, reg.conn);
    metrics::gauge!("parley_ws_connections").decrement(1.0);
}
