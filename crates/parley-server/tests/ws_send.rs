//! Sends over the delivery WebSocket (`{"type":"send","request":…}` frames): the same rules
//! as `POST /v1/messages`, answered on the connection by `sent` or `send_failed`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::collections::BTreeSet;

use common::*;
use futures_util::SinkExt;
use parley_api::{Bytes, OutgoingEnvelope, SendFailure, SendRequest, SendResponse, ServerFrame};
use parley_server::Limits;
use tokio_tungstenite::tungstenite::Message;

fn request(to: &str, id: &str, device: u32, ciphertext: &[u8]) -> SendRequest {
    SendRequest {
        recipient: to.into(),
        message_id: id.into(),
        envelopes: vec![OutgoingEnvelope {
            device_id: device,
            ciphertext: Bytes(ciphertext.into()),
        }],
        franking_tag: Bytes(vec![0x33; 32]),
    }
}

async fn send_frame(ws: &mut Ws, req: &SendRequest) {
    let frame = serde_json::json!({"type": "send", "request": req});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

/// Connects and reads the initial `drained`.
async fn connected(s: &TestServer, u: &User) -> Ws {
    let mut ws = connect(s, &u.token).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
    ws
}

async fn sent(ws: &mut Ws) -> SendResponse {
    match next_frame(ws).await {
        Some(ServerFrame::Sent(r)) => r,
        other => panic!("expected a sent frame, got {other:?}"),
    }
}

async fn failed(ws: &mut Ws) -> SendFailure {
    match next_frame(ws).await {
        Some(ServerFrame::SendFailed(f)) => f,
        other => panic!("expected a send_failed frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_frame_is_stored_pushed_and_idempotent() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 1).await;
    let bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;
    let mut b = connected(&s, &bob).await;

    send_frame(&mut a, &request("bob", "m1", 1, b"ciphertext one")).await;
    let ok = sent(&mut a).await;
    assert_eq!((ok.message_id.as_str(), ok.duplicate), ("m1", false));
    match next_frame(&mut b).await {
        Some(ServerFrame::Envelope(e)) => {
            assert_eq!((e.message_id.as_str(), e.sender.as_str()), ("m1", "alice"));
            assert_eq!(e.ciphertext.0, b"ciphertext one");
            assert_eq!(e.server_time_ms, ok.server_time_ms);
            assert_eq!(e.server_tag.0.len(), 32, "the server franks it as it does a POST");
        }
        other => panic!("expected the pushed envelope, got {other:?}"),
    }

    // A retry with the same id, on the socket or over HTTP, is a duplicate: nothing new stored.
    send_frame(&mut a, &request("bob", "m1", 1, b"ciphertext one")).await;
    let again = sent(&mut a).await;
    assert!(again.duplicate);
    assert_eq!(again.server_time_ms, ok.server_time_ms);
    let r = alice.post(&s, "/v1/messages").json(&request("bob", "m1", 1, b"x")).send().await;
    let r: SendResponse = r.unwrap().json().await.unwrap();
    assert!(r.duplicate, "HTTP and WebSocket sends share the idempotency record");
    assert_eq!(queued_ids(&s, &bob).await, vec!["m1".to_string()]);

    // Many sends in flight at once: every one is answered once, and all arrive.
    let ids: BTreeSet<String> = (0..40).map(|i| format!("p{i}")).collect();
    for id in &ids {
        send_frame(&mut a, &request("bob", id, 1, id.as_bytes())).await;
    }
    let mut answered = BTreeSet::new();
    for _ in 0..ids.len() {
        let r = sent(&mut a).await;
        assert!(!r.duplicate);
        assert!(answered.insert(r.message_id), "one answer per send");
    }
    assert_eq!(answered, ids);
    let mut queued: BTreeSet<String> = queued_ids(&s, &bob).await.into_iter().collect();
    assert!(queued.remove("m1"));
    assert_eq!(queued, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_send_frames_are_answered_and_the_connection_stays_open() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 1).await;
    let _bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;

    // Wrong device set: the 409 of POST, with the devices to add and drop.
    send_frame(&mut a, &request("bob", "s1", 2, b"c")).await;
    let f = failed(&mut a).await;
    assert_eq!((f.message_id.as_str(), f.status, f.error.as_str()), ("s1", 409, "stale_devices"));
    assert_eq!((f.missing_devices, f.extra_devices), (vec![1], vec![2]));

    // Malformed content and unknown recipients.
    let mut empty = request("bob", "s2", 1, b"c");
    empty.envelopes.clear();
    send_frame(&mut a, &empty).await;
    let f = failed(&mut a).await;
    assert_eq!((f.status, f.error.as_str()), (400, "bad_request"));
    send_frame(&mut a, &request("bob", "bad id!", 1, b"c")).await;
    let f = failed(&mut a).await;
    assert_eq!((f.message_id.as_str(), f.status), ("bad id!", 400));
    send_frame(&mut a, &request("nobody", "s3", 1, b"c")).await;
    assert_eq!(failed(&mut a).await.status, 404);
    let big = vec![0u8; Limits::default().max_envelope_bytes + 1];
    let mut w = connect(&s, &alice.token).await.unwrap();
    assert_eq!(next_frame(&mut w).await, Some(ServerFrame::Drained));
    a = w; // the new connection replaced the first one
    send_frame(&mut a, &request("bob", "s4", 1, &big)).await;
    // 72 KiB of ciphertext is a frame larger than ws_max_message_bytes: the connection is
    // closed, as for any oversized frame (such sends go over HTTP).
    assert_eq!(next_frame(&mut a).await, None);

    // The connection stays usable after refused sends.
    let mut a = connected(&s, &alice).await;
    send_frame(&mut a, &request("bob", "s5", 1, b"c")).await;
    send_frame(&mut a, &request("bob", "", 1, b"c")).await;
    send_frame(&mut a, &request("bob", "s6", 1, b"c")).await;
    // Answers come as the sends finish, in any order.
    let (mut ok, mut refused) = (BTreeSet::new(), Vec::new());
    for _ in 0..3 {
        match next_frame(&mut a).await {
            Some(ServerFrame::Sent(r)) => assert!(ok.insert(r.message_id)),
            Some(ServerFrame::SendFailed(f)) => refused.push((f.message_id, f.status)),
            other => panic!("expected an answer, got {other:?}"),
        }
    }
    assert_eq!(ok, BTreeSet::from(["s5".to_string(), "s6".to_string()]));
    assert_eq!(refused, vec![(String::new(), 400)]);

    // A suspension takes effect on the open connection's next send.
    let admin = std::fs::read_to_string(&s.running.admin_token_path).unwrap();
    let r = s
        .http
        .put(format!("{}/v1/admin/accounts/alice/suspension", s.url))
        .bearer_auth(admin.trim())
        .json(&serde_json::json!({"suspended": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The per-device credential cache lives for up to a second (OPERATIONS.md §4).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        send_frame(&mut a, &request("bob", "s7", 1, b"c")).await;
        match next_frame(&mut a).await {
            Some(ServerFrame::SendFailed(f)) => {
                assert_eq!((f.status, f.error.as_str()), (403, "suspended"));
                break;
            }
            Some(ServerFrame::Sent(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => panic!("the suspension did not take effect: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_frames_count_against_the_send_rate_limits() {
    let s =
        start(Limits { account_sends_per_sec: 1, account_send_burst: 2, ..test_limits() }).await;
    let alice = User::register(&s, "alice", 1).await;
    let _bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;
    for id in ["r1", "r2"] {
        send_frame(&mut a, &request("bob", id, 1, b"c")).await;
        assert_eq!(sent(&mut a).await.message_id, id);
    }
    send_frame(&mut a, &request("bob", "r3", 1, b"c")).await;
    let f = failed(&mut a).await;
    assert_eq!((f.status, f.error.as_str()), (429, "rate_limited"));
    assert!(f.retry_after_secs.is_some());
    // The same budget as HTTP: a POST right after is refused too.
    let r = alice.post(&s, "/v1/messages").json(&request("bob", "r4", 1, b"c")).send().await;
    assert_eq!(r.unwrap().status(), 429);
}

/// A connection pushes committed envelopes from memory once it has read its queue to the end;
/// across a small window, an overflow of that memory (more than 1 024 waiting) and a
/// reconnection, every envelope arrives once, in queue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_keep_queue_order_across_windows_overflows_and_reconnections() {
    let s = start(Limits { ws_inflight_window: 4, ..Limits::load_test() }).await;
    let alice = User::register(&s, "alice", 1).await;
    let bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;
    let mut b = connected(&s, &bob).await;
    let total = 1_300;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            send_frame(&mut a, &request("bob", &format!("k{i}"), 1, b"c")).await;
        }
        for _ in 0..total {
            sent(&mut a).await;
        }
        a
    });
    // Bob acks slowly at first (the memory overflows while the window is full), then
    // reconnects half-way, then takes the rest.
    let mut got: Vec<(u64, String)> = Vec::new();
    let mut pending = Vec::new();
    let mut reconnected = false;
    while got.len() < total {
        match next_frame(&mut b).await {
            Some(ServerFrame::Envelope(e)) => {
                pending.push(e.id);
                got.push((e.id, e.message_id));
            }
            Some(ServerFrame::Drained) => {}
            other => panic!("expected envelopes, got {other:?} after {}", got.len()),
        }
        if got.len() == 8 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if pending.len() == 4 {
            send_ack(&mut b, &pending).await;
            pending.clear();
        }
        if !reconnected && got.len() >= total / 2 {
            // Unacked envelopes come again on the new connection: drop what was not acked.
            reconnected = true;
            let keep = got.len() - pending.len();
            got.truncate(keep);
            pending.clear();
            b = connect(&s, &bob.token).await.unwrap();
        }
    }
    sender.await.unwrap();
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "queue order");
    let names: BTreeSet<&String> = got.iter().map(|(_, m)| m).collect();
    assert_eq!(names.len(), total, "each message once");
}

/// A block deletes what the blocked account had queued: also what a connection was keeping in
/// memory behind a full window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_purges_what_a_connection_kept_in_memory() {
    let s = start(Limits { ws_inflight_window: 2, ..Limits::load_test() }).await;
    let alice = User::register(&s, "alice", 1).await;
    let bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;
    let mut b = connected(&s, &bob).await;
    for i in 0..2 {
        send_frame(&mut a, &request("bob", &format!("w{i}"), 1, b"c")).await;
        sent(&mut a).await;
    }
    let mut first = Vec::new();
    while first.len() < 2 {
        match next_frame(&mut b).await {
            Some(ServerFrame::Envelope(e)) => first.push(e.id),
            Some(ServerFrame::Drained) => {}
            other => panic!("expected an envelope, got {other:?}"),
        }
    }
    // The window is full: these wait in memory.
    for i in 0..5 {
        send_frame(&mut a, &request("bob", &format!("k{i}"), 1, b"c")).await;
        sent(&mut a).await;
    }
    let r = bob.put(&s, "/v1/blocks/alice").send().await.unwrap();
    assert_eq!(r.status(), 204);
    send_ack(&mut b, &first).await;
    // Nothing of alice's comes any more: at most a `drained`, then silence.
    let next = tokio::time::timeout(std::time::Duration::from_secs(1), next_frame(&mut b)).await;
    match next {
        Err(_) | Ok(Some(ServerFrame::Drained)) => {}
        Ok(other) => panic!("a purged envelope was pushed: {other:?}"),
    }
    assert!(queued_ids(&s, &bob).await.is_empty());
}

/// Acks are written while the connection goes on, and those read before a close are written
/// before the connection is gone: what a device acked and then hung up on is not delivered
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_read_before_a_close_still_delete() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 1).await;
    let bob = User::register(&s, "bob", 1).await;
    let mut a = connected(&s, &alice).await;
    for i in 0..20 {
        send_frame(&mut a, &request("bob", &format!("c{i}"), 1, b"c")).await;
        sent(&mut a).await;
    }
    let mut b = connect(&s, &bob.token).await.unwrap();
    let mut ids = Vec::new();
    loop {
        match next_frame(&mut b).await {
            Some(ServerFrame::Envelope(e)) => ids.push(e.id),
            Some(ServerFrame::Drained) => break,
            other => panic!("expected envelopes, got {other:?}"),
        }
    }
    assert_eq!(ids.len(), 20);
    // Ack everything and close at once.
    send_ack(&mut b, &ids).await;
    b.close(None).await.unwrap();
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !queued_ids(&s, &bob).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "acked envelopes are still queued");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
