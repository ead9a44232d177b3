//! `/v1/ws`: push delivery. After authentication (bearer header on the upgrade request) the
//! server pushes the device's queue in order, at most `ws_inflight_window` unacknowledged
//! envelopes at a time, then a `drained` frame, then new envelopes as they are committed. The
//! client acks by id; acked envelopes are deleted. Unacked envelopes are pushed again on the
//! next connection (at-least-once; clients drop duplicates by message id). A new connection of
//! the same device closes the old one, on this node or, over the bus, on any other node.
//!
//! A connection is woken by a committed send (locally, or by a `wake` event from another node)
//! and otherwise re-reads its queue every `ws_poll_secs`: a lost wake-up delays delivery by at
//! most that long and never loses an envelope (the queue in the database is the truth).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use parley_api::{ClientFrame, ErrorBody, ServerFrame};

use crate::routes::to_api;
use crate::state::{AuthDevice, SharedState};
use crate::store::DeviceAuth;

/// Upgrade to the delivery WebSocket.
#[utoipa::path(get, path = "/v1/ws", tag = "messages", security(("bearer" = [])),
    responses((status = 101, description = "Switching to the WebSocket delivery protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = parley_api::ErrorBody),
        (status = 401, body = parley_api::ErrorBody), (status = 429, body = parley_api::ErrorBody)))]
pub async fn ws(
    State(state): State<SharedState>,
    AuthDevice(dev): AuthDevice,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, crate::error::ApiError> {
    let upgrade = upgrade.map_err(|_| {
        crate::error::ApiError::BadRequest("this endpoint expects a WebSocket upgrade".into())
    })?;
    let max = state.limits.ws_max_message_bytes;
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(state, dev, socket)))
}

async fn send_frame(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
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

async fn serve(state: SharedState, dev: DeviceAuth, mut socket: WebSocket) {
    let reg = state.hub.register(dev.uid);
    // The other nodes close their connection of this device, if any.
    state.connected(dev.uid, reg.conn);
    let mut kicked = reg.kicked;
    let mut shutdown = state.shutdown.clone();
    metrics::gauge!("parley_ws_connections").increment(1.0);
    let window = state.limits.ws_inflight_window;
    let poll = Duration::from_secs(state.limits.ws_poll_secs);
    let mut last_sent = 0u64;
    let mut inflight: BTreeSet<u64> = BTreeSet::new();
    let mut drained_told = false;
    'conn: loop {
        // Push what is waiting, within the window.
        while inflight.len() < window {
            let room = u32::try_from(window - inflight.len()).unwrap_or(u32::MAX);
            let envs = match state.store.fetch(dev.uid, last_sent, room).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed on a connection");
                    close_with(&mut socket, "internal", "the server could not read the queue")
                        .await;
                    break 'conn;
                }
            };
            let short = envs.len() < room as usize;
            for env in envs {
                last_sent = env.id;
                inflight.insert(env.id);
                let latency = crate::state::now_ms().saturating_sub(env.server_time_ms);
                metrics::histogram!("parley_delivery_latency_seconds")
                    .record(latency as f64 / 1000.0);
                if !send_frame(&mut socket, &ServerFrame::Envelope(to_api(env))).await {
                    break 'conn;
                }
                drained_told = false;
            }
            if short {
                if !drained_told {
                    if !send_frame(&mut socket, &ServerFrame::Drained).await {
                        break 'conn;
                    }
                    drained_told = true;
                }
                break;
            }
        }
        tokio::select! {
            _ = reg.notify.notified() => {}
            _ = tokio::time::sleep(poll) => {}
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
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Ack { ids }) if ids.len() <= state.limits.max_ack_ids => {
                        for id in &ids {
                            inflight.remove(id);
                        }
                        if let Err(e) = state.store.ack(dev.uid, ids).await {
                            tracing::warn!(error = %e, "ack failed on a connection");
                            close_with(&mut socket, "internal", "the server could not record the ack").await;
                            break;
                        }
                    }
                    Ok(ClientFrame::Ack { .. }) => {
                        close_with(&mut socket, "bad_request", "too many ids in one ack").await;
                        break;
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
    state.hub.unregister(dev.uid, reg.conn);
    metrics::gauge!("parley_ws_connections").decrement(1.0);
}
