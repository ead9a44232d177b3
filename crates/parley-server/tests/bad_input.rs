//! Malformed, oversized and hostile input: every case gets its documented 4xx with a JSON body,
//! and the server keeps serving others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use common::*;
use futures_util::SinkExt;
use parley_api::{ErrorBody, ServerFrame};
use parley_server::Limits;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .starts_with("application/json"),
        "error responses are JSON"
    );
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.error, code);
    assert!(!e.message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_4xx() {
    let s = start(Limits { max_body_bytes: 64 * 1024, ..test_limits() }).await;
    let alice = User::register(&s, "alice", 0).await;
    User::register(&s, "bob", 0).await;
    let url = |p: &str| format!("{}{p}", s.url);

    // Registration: malformed JSON, wrong types, unknown fields, not JSON, too big.
    let post = |body: &str| {
        s.http
            .post(url("/v1/accounts"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    expect_error(post("{").send().await.unwrap(), 400, "bad_request").await;
    expect_error(post(r#"{"username": 5}"#).send().await.unwrap(), 400, "bad_request").await;
    expect_error(
        post(r#"{"username":"x","account_key":"AA==","device_list":"AA==","device":{},"extra":1}"#)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.http.post(url("/v1/accounts")).body("{}").send().await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        post(&format!("{{\"username\":\"{}\"}}", "a".repeat(100_000))).send().await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;

    // Registration: invalid username, bad key, unknown version, forged signature.
    let (_, good) = User::keys("carol", 1);
    let mut r = good.clone();
    r.username = "Carol!".into();
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut r = good.clone();
    r.account_key.0 = vec![0; 31];
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut r = good.clone();
    r.device.certificate.0[1] = 2; // version 2
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut r = good.clone();
    let n = r.device.signed_prekey.0.len() - 1;
    r.device.signed_prekey.0[n] ^= 1; // signature
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut r = good.clone();
    r.device.one_time_kem_prekeys[0].0[10] ^= 1;
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut r = good.clone();
    r.username = "alice".into();
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        409,
        "username_taken",
    )
    .await;
    // A device list signed by another account.
    let (_, other) = User::keys("dave", 0);
    let mut r = good.clone();
    r.device_list = other.device_list.clone();
    expect_error(
        s.http.post(url("/v1/accounts")).json(&r).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;

    // Sends: bad id, bad recipient, no envelopes, too many, oversized envelope, bad base64.
    let send = |body: serde_json::Value| alice.post(&s, "/v1/messages").json(&body);
    let env = serde_json::json!([{"device_id": 1, "ciphertext": "AQID"}]);
    expect_error(
        send(serde_json::json!({"recipient": "bob", "message_id": "a/b", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": env}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        send(serde_json::json!({"recipient": "B", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": env}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        send(serde_json::json!({"recipient": "bob", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": []}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    let many: Vec<_> =
        (0..40).map(|d| serde_json::json!({"device_id": d, "ciphertext": "AQID"})).collect();
    expect_error(
        send(serde_json::json!({"recipient": "bob", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": many}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    let big = base64_of(&vec![0u8; 50 * 1024]);
    let s2 = start(Limits { max_envelope_bytes: 1024, ..test_limits() }).await;
    let a2 = User::register(&s2, "alice", 0).await;
    User::register(&s2, "bob", 0).await;
    let r = a2.post(&s2, "/v1/messages").json(&serde_json::json!({"recipient": "bob", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": [{"device_id": 1, "ciphertext": big}]})).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    s2.running.shutdown().await.unwrap();
    expect_error(send(serde_json::json!({"recipient": "bob", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": [{"device_id": 1, "ciphertext": "***"}]})).send().await.unwrap(), 400, "bad_request").await;
    expect_error(send(serde_json::json!({"recipient": "bob", "message_id": "ok", "franking_tag": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "envelopes": [{"device_id": -1, "ciphertext": "AQID"}]})).send().await.unwrap(), 400, "bad_request").await;
    // The franking tag is required and exactly 32 bytes.
    for tag in [None, Some(base64_of(&[0u8; 31])), Some(base64_of(&[0u8; 33])), Some(String::new())]
    {
        let mut body =
            serde_json::json!({"recipient": "bob", "message_id": "ok", "envelopes": env});
        if let Some(t) = tag {
            body["franking_tag"] = serde_json::Value::String(t);
        }
        expect_error(send(body).send().await.unwrap(), 400, "bad_request").await;
    }

    // Fetch and ack: bad query, too many ids.
    expect_error(alice.get(&s, "/v1/messages?after=-3").send().await.unwrap(), 400, "bad_request")
        .await;
    expect_error(alice.get(&s, "/v1/messages?bogus=1").send().await.unwrap(), 400, "bad_request")
        .await;
    let ids: Vec<u64> = (0..2000).collect();
    expect_error(
        alice
            .post(&s, "/v1/messages/ack")
            .json(&serde_json::json!({"ids": ids}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        alice.get(&s, "/v1/accounts/NOPE!/bundles").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        alice.get(&s, "/v1/accounts/nobody/bundles").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    // Unknown paths and methods.
    expect_error(s.http.get(url("/v2/everything")).send().await.unwrap(), 404, "not_found").await;
    expect_error(
        s.http.patch(url("/v1/messages")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        s.http.get(url("/v1/admin/stats")).bearer_auth("wrong").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // Still serving.
    assert_eq!(s.http.get(url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(alice.get(&s, "/v1/accounts/self").send().await.unwrap().status(), 200);
    s.running.shutdown().await.unwrap();
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_others_keep_working() {
    let s = start(Limits {
        account_rps: 5,
        account_burst: 10,
        bundle_fetches_per_hour: 5,
        ..test_limits()
    })
    .await;
    let mallory = User::register(&s, "mallory", 0).await;
    let alice = User::register(&s, "alice", 0).await;
    let mut limited = None;
    for _ in 0..40 {
        let r = mallory.get(&s, "/v1/accounts/self").send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the flood was never limited");
    assert!(r.headers().get("retry-after").is_some());
    let e: ErrorBody = r.json().await.unwrap();
    assert_eq!(e.error, "rate_limited");
    assert!(e.retry_after_secs.unwrap_or(0) >= 1);
    // Another account is unaffected.
    assert_eq!(alice.get(&s, "/v1/accounts/self").send().await.unwrap().status(), 200);
    // Bundle fetches have their own, stricter budget.
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(
            alice.get(&s, "/v1/accounts/mallory/bundles").send().await.unwrap().status().as_u16(),
        );
    }
    assert_eq!(&codes[..5], &[200; 5]);
    assert_eq!(codes[6], 429);
    // Registration floods from one address.
    let s2 = start(Limits { registrations_per_hour: 2, ..test_limits() }).await;
    User::register(&s2, "one", 0).await;
    User::register(&s2, "two", 0).await;
    let (_, req) = User::keys("three", 0);
    let r = s2.http.post(format!("{}/v1/accounts", s2.url)).json(&req).send().await.unwrap();
    assert_eq!(r.status(), 429);
    s2.running.shutdown().await.unwrap();
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_frames_close_only_that_connection() {
    let s = start(Limits { ws_max_message_bytes: 1024, ..test_limits() }).await;
    let bob = User::register(&s, "bob", 0).await;
    let alice = User::register(&s, "alice", 0).await;
    for bad in [
        Message::Text("not json".into()),
        Message::Text(r#"{"type":"ack","ids":"x"}"#.into()),
        Message::Text(r#"{"type":"subscribe"}"#.into()),
        Message::Binary(vec![1, 2, 3].into()),
    ] {
        let mut ws = connect(&s, &bob.token).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
        ws.send(bad).await.unwrap();
        match next_frame(&mut ws).await {
            Some(ServerFrame::Error(e)) => assert_eq!(e.error, "bad_request"),
            other => panic!("expected an error frame, got {other:?}"),
        }
        assert_eq!(next_frame(&mut ws).await, None);
    }
    // An oversized frame closes the connection.
    let mut ws = connect(&s, &bob.token).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
    let _ = ws.send(Message::Text("x".repeat(10_000).into())).await;
    assert_eq!(next_frame(&mut ws).await, None);
    // Everything else still works.
    let mut ws = connect(&s, &alice.token).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
    assert_eq!(s.http.get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_and_startup_rules() {
    let s = start(test_limits()).await;
    let doc: serde_json::Value =
        s.http.get(format!("{}/openapi.json", s.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/accounts",
        "/v1/messages",
        "/v1/messages/ack",
        "/v1/accounts/{username}/bundles",
        "/v1/ws",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    User::register(&s, "alice", 0).await;
    let metrics =
        s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    for name in [
        "parley_accounts",
        "parley_queued_envelopes",
        "parley_commit_group_mean",
        "parley_process_resident_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The admin token file exists with mode 0600 and works.
    let token_path = s.running.admin_token_path.clone();
    assert!(s.running.admin_token_created);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_path).unwrap();
    let stats: parley_api::AdminStats = s
        .http
        .get(format!("{}/v1/admin/stats", s.url))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.accounts, 1);
    s.running.shutdown().await.unwrap();

    // Plain HTTP off loopback is refused with one clear sentence.
    let config = parley_server::Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..parley_server::Config::default()
    };
    let err = parley_server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("without TLS"), "{err}");
}
