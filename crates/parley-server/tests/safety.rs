//! The contact policy, blocks and rate limits of docs/SAFETY.md, tried the way someone would try
//! to get around them: through the raw API, with fresh accounts and fresh sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use common::*;
use parley_api::{AccountInfo, AgeClass, BlockList, Bytes, OutgoingEnvelope, SendRequest};
use parley_server::Limits;

/// What a client sees: the status and the JSON body, byte for byte.
async fn answer(r: reqwest::RequestBuilder) -> (u16, String) {
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn junk_send(to: &str, id: &str) -> SendRequest {
    SendRequest {
        recipient: to.into(),
        message_id: id.into(),
        envelopes: vec![OutgoingEnvelope { device_id: 1, ciphertext: Bytes(vec![7; 64]) }],
        franking_tag: Bytes(vec![0x33; 32]),
    }
}

async fn bundles(s: &TestServer, from: &User, name: &str) -> (u16, String) {
    answer(from.get(s, &format!("/v1/accounts/{name}/bundles"))).await
}

async fn send(s: &TestServer, from: &User, to: &str, id: &str) -> (u16, String) {
    answer(from.post(s, "/v1/messages").json(&junk_send(to, id))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adult_cannot_reach_a_minor_until_the_minor_writes_first() {
    let s = start(test_limits()).await;
    let adam = User::register(&s, "adam", 5).await;
    let mia = User::register_as(&s, "mia", 5, AgeClass::Minor).await;
    let info: AccountInfo =
        mia.get(&s, "/v1/accounts/self").send().await.unwrap().json().await.unwrap();
    assert_eq!(info.age_class, AgeClass::Minor);

    // Probing: fetching a minor's bundle directly, or sending to her with a hand-made envelope,
    // gets exactly the answer an unknown username gets.
    let unknown = bundles(&s, &adam, "nobody").await;
    assert_eq!(unknown.0, 404);
    assert_eq!(bundles(&s, &adam, "mia").await, unknown);
    let unknown_send = send(&s, &adam, "nobody", "probe1").await;
    assert_eq!(unknown_send.0, 404);
    assert_eq!(send(&s, &adam, "mia", "probe2").await, unknown_send);
    assert!(queued_ids(&s, &mia).await.is_empty(), "a refused message was queued");

    // A minor can write to an adult first; then the adult may answer, and it keeps working.
    assert_eq!(bundles(&s, &mia, "adam").await.0, 200);
    assert_eq!(send(&s, &mia, "adam", "m1").await.0, 200);
    assert_eq!(queued_ids(&s, &adam).await, ["m1"]);
    assert_eq!(bundles(&s, &adam, "mia").await.0, 200);
    for i in 0..3 {
        assert_eq!(send(&s, &adam, "mia", &format!("a{i}")).await.0, 200);
    }
    assert_eq!(queued_ids(&s, &mia).await, ["a0", "a1", "a2"]);

    // Another adult is still refused: the minor wrote to adam, not to everyone.
    let eve = User::register(&s, "eve", 5).await;
    assert_eq!(send(&s, &eve, "mia", "e1").await, unknown_send);

    // Minors write to each other freely (those become message requests on the device).
    let max = User::register_as(&s, "max", 5, AgeClass::Minor).await;
    assert_eq!(send(&s, &max, "mia", "x1").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_sets_the_age_class() {
    let s = start(test_limits()).await;
    let adam = User::register(&s, "adam", 5).await;
    let kid = User::register(&s, "kid", 5).await;
    let body = serde_json::json!({"age_class": "minor"});
    // A device token is not the admin's.
    let r = adam.put(&s, "/v1/admin/accounts/kid/age").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let admin = std::fs::read_to_string(&s.running.admin_token_path).unwrap();
    let put = |name: &str, body: &serde_json::Value| {
        s.http
            .put(format!("{}/v1/admin/accounts/{name}/age", s.url))
            .bearer_auth(admin.trim())
            .json(body)
    };
    assert_eq!(put("kid", &body).send().await.unwrap().status(), 204);
    assert_eq!(put("nobody", &body).send().await.unwrap().status(), 404);
    let bad = serde_json::json!({"age_class": "child"});
    assert_eq!(put("kid", &bad).send().await.unwrap().status(), 400);
    // The new class applies at once.
    assert_eq!(send(&s, &adam, "kid", "k1").await.0, 404);
    assert_eq!(
        put("kid", &serde_json::json!({"age_class": "adult"})).send().await.unwrap().status(),
        204
    );
    assert_eq!(send(&s, &adam, "kid", "k2").await.0, 200);
    let info: AccountInfo =
        kid.get(&s, "/v1/accounts/self").send().await.unwrap().json().await.unwrap();
    assert_eq!(info.age_class, AgeClass::Adult);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_account_cannot_get_through_even_with_a_fresh_session() {
    let s = start(test_limits()).await;
    let bob = User::register(&s, "bob", 5).await;
    let eve = User::register(&s, "eve", 5).await;
    assert_eq!(send(&s, &eve, "bob", "before").await.0, 200);
    assert_eq!(answer(bob.put(&s, "/v1/blocks/eve")).await.0, 204);
    // What eve had queued for bob is gone.
    assert!(queued_ids(&s, &bob).await.is_empty());
    let list: BlockList = bob.get(&s, "/v1/blocks").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.blocked, ["eve"]);
    // A fresh session starts with a bundle fetch: refused like an unknown account; a send with a
    // hand-made envelope too. Nothing is delivered.
    let unknown = bundles(&s, &eve, "nobody").await;
    assert_eq!(bundles(&s, &eve, "bob").await, unknown);
    let unknown_send = send(&s, &eve, "nobody", "x").await;
    assert_eq!(send(&s, &eve, "bob", "after").await, unknown_send);
    assert!(queued_ids(&s, &bob).await.is_empty());
    // The block is one-way: bob can still write to eve.
    assert_eq!(send(&s, &bob, "eve", "b1").await.0, 200);
    // Blocking oneself or an unknown account is a clear error.
    assert_eq!(answer(bob.put(&s, "/v1/blocks/bob")).await.0, 400);
    assert_eq!(answer(bob.put(&s, "/v1/blocks/nobody")).await.0, 404);
    assert_eq!(answer(bob.put(&s, "/v1/blocks/NOT VALID")).await.0, 400);
    // Unblocked, eve gets through again.
    assert_eq!(answer(bob.delete(&s, "/v1/blocks/eve")).await.0, 204);
    assert_eq!(send(&s, &eve, "bob", "again").await.0, 200);
    assert_eq!(queued_ids(&s, &bob).await, ["again"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_conversations_are_limited_more_for_new_accounts() {
    let limits = Limits {
        new_account_conversations_per_hour: 2,
        new_conversations_per_hour: 4,
        ..test_limits()
    };
    let s = start(limits.clone()).await;
    let fresh = User::register(&s, "fresh", 5).await;
    let mut targets = Vec::new();
    for i in 0..4 {
        targets.push(User::register(&s, &format!("target{i}"), 5).await);
    }
    // Someone who wrote first can always be answered: not a new conversation.
    assert_eq!(send(&s, &targets[3], "fresh", "hello").await.0, 200);
    assert_eq!(send(&s, &fresh, "target3", "reply").await.0, 200);
    assert_eq!(send(&s, &fresh, "target0", "n0").await.0, 200);
    assert_eq!(send(&s, &fresh, "target1", "n1").await.0, 200);
    // More messages in open conversations are fine.
    assert_eq!(send(&s, &fresh, "target0", "n0b").await.0, 200);
    // A third new conversation within the hour is refused, with a retry-after, at the bundle
    // fetch (so prekeys are not drained) and at the send.
    let r = fresh.get(&s, "/v1/accounts/target2/bundles").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&retry), "retry-after {retry}");
    let body: parley_api::ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error, "rate_limited");
    assert_eq!(body.retry_after_secs, Some(retry));
    assert_eq!(send(&s, &fresh, "target2", "n2").await.0, 429);

    // An account older than `new_account_secs` gets the larger limit.
    let s2 = start(Limits { new_account_secs: 0, ..limits }).await;
    let old = User::register(&s2, "old", 5).await;
    for i in 0..5 {
        User::register(&s2, &format!("tgt{i}"), 5).await;
    }
    for i in 0..4 {
        assert_eq!(send(&s2, &old, &format!("tgt{i}"), &format!("m{i}")).await.0, 200);
    }
    assert_eq!(send(&s2, &old, "tgt4", "m4").await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_limited_per_account_and_per_ip() {
    let s = start(Limits {
        account_sends_per_sec: 1,
        account_send_burst: 3,
        ip_sends_per_sec: 1,
        ip_send_burst: 5,
        ..test_limits()
    })
    .await;
    let a = User::register(&s, "alice", 5).await;
    let b = User::register(&s, "bob", 5).await;
    let c = User::register(&s, "carol", 5).await;
    for i in 0..3 {
        assert_eq!(send(&s, &a, "bob", &format!("a{i}")).await.0, 200);
    }
    let r = a.post(&s, "/v1/messages").json(&junk_send("bob", "a3")).send().await.unwrap();
    assert_eq!(r.status(), 429, "the account's burst is spent");
    assert!(r.headers().contains_key("retry-after"));
    // Another account on the same address has its own account budget but shares the address's.
    assert_eq!(send(&s, &b, "carol", "b0").await.0, 200);
    assert_eq!(send(&s, &b, "carol", "b1").await.0, 200);
    assert_eq!(send(&s, &c, "bob", "c0").await.0, 429, "the address's burst is spent");
}
