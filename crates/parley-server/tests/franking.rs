//! Message franking through the server (docs/PROTOCOL.md §12): the server tags every relayed
//! commitment, reports verify against its keys (and fail with the precise reason when tampered
//! with), keys rotate with a grace period, moderators suspend verified senders, and the server
//! keeps nothing of unreported messages.
//!
//! The ciphertext is opaque to the server, so these tests send random bytes as ciphertext next
//! to a real commitment TF made with `parley_proto::seal`; the franked content (body ‖ NF) goes
//! only into reports, as a receiving client's would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use common::*;
use parley_api::{
    Bytes, Envelope, ErrorBody, FetchResponse, OutgoingEnvelope, ReportResponse, ReportView,
    RotateResponse, SendRequest, SendResponse, ServerFrame,
};
use parley_proto::{FrankedBody, FrankingKey, Report, ReportItem, Sealed, seal};
use parley_server::Limits;
use rand::Rng;

fn limits() -> Limits {
    Limits { reports_per_hour: 1000, ..test_limits() }
}

fn admin_token(s: &TestServer) -> String {
    std::fs::read_to_string(&s.running.admin_token_path).unwrap().trim().to_string()
}

fn admin_get(s: &TestServer, path: &str) -> reqwest::RequestBuilder {
    s.http.get(format!("{}{path}", s.url)).bearer_auth(admin_token(s))
}

fn admin_post(s: &TestServer, path: &str) -> reqwest::RequestBuilder {
    s.http.post(format!("{}{path}", s.url)).bearer_auth(admin_token(s))
}

fn franking_dir(s: &TestServer) -> std::path::PathBuf {
    s.dir.path().join("data").join("franking")
}

fn key_on_disk(s: &TestServer, kid: u32) -> FrankingKey {
    let bytes = std::fs::read(franking_dir(s).join(format!("{kid}.key"))).unwrap();
    FrankingKey::from_bytes(bytes.try_into().unwrap())
}

/// A chain of franked messages from one sender device to one recipient account.
struct Chain {
    from: String,
    to: String,
    state: parley_proto::ChainState,
}

impl Chain {
    fn new(from: &User, to: &str) -> Self {
        Self { from: from.name.clone(), to: to.into(), state: parley_proto::ChainState::new() }
    }

    fn body(&self, id: &str, text: &str) -> FrankedBody {
        FrankedBody {
            message_id: id.into(),
            sent_at_ms: 1_800_000_000_000,
            sender: self.from.clone(),
            sender_device: 1,
            recipient: self.to.clone(),
            seq: self.state.next_seq(),
            prev: *self.state.prev(),
            text: text.to_string().into(),
        }
    }

    fn seal(&mut self, id: &str, text: &str) -> Sealed {
        let sealed = seal(&mut rand::rng(), &self.body(id, text)).unwrap();
        self.state.advance(sealed.body_bytes()).unwrap();
        sealed
    }
}

async fn send_sealed(
    s: &TestServer,
    from: &User,
    to: &str,
    id: &str,
    sealed: &Sealed,
) -> reqwest::Response {
    let mut ct = vec![0u8; 96];
    rand::rng().fill_bytes(&mut ct);
    let req = SendRequest {
        recipient: to.into(),
        message_id: id.into(),
        envelopes: vec![OutgoingEnvelope { device_id: 1, ciphertext: Bytes(ct) }],
        franking_tag: Bytes(sealed.tf().to_vec()),
    };
    from.post(s, "/v1/messages").json(&req).send().await.unwrap()
}

/// Sends a sealed message and returns the envelope the recipient fetches for it.
async fn relay(s: &TestServer, from: &User, to: &User, id: &str, sealed: &Sealed) -> Envelope {
    let r = send_sealed(s, from, &to.name, id, sealed).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let q: FetchResponse = to.get(s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    q.envelopes.into_iter().find(|e| e.message_id == id).expect("relayed envelope")
}

fn item(sealed: &Sealed, env: &Envelope, recipient: &str) -> ReportItem {
    ReportItem::Franked {
        content: sealed.content().to_vec(),
        tf: env.franking_tag.0.as_slice().try_into().unwrap(),
        rf: env.server_tag.0.as_slice().try_into().unwrap(),
        kid: env.franking_key_id,
        sender: env.sender.clone(),
        sender_device: env.sender_device,
        recipient: recipient.into(),
        server_time_ms: env.server_time_ms,
    }
}

async fn post_report(
    s: &TestServer,
    by: &User,
    report: &Report,
    reason: &str,
) -> reqwest::Response {
    let body = serde_json::json!({
        "report": base64(&report.encode().unwrap()),
        "reason": reason,
    });
    by.post(s, "/v1/reports").json(&body).send().await.unwrap()
}

async fn report_ok(s: &TestServer, by: &User, items: Vec<ReportItem>) -> u64 {
    let report = Report { reporter: by.name.clone(), items };
    let r = post_report(s, by, &report, "abusive").await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<ReportResponse>().await.unwrap().id
}

async fn view(s: &TestServer, id: u64) -> ReportView {
    let r = admin_get(s, &format!("/v1/admin/reports/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The verdict on a report's last (reported) message.
async fn last_verdict(s: &TestServer, id: u64) -> serde_json::Value {
    view(s, id).await.messages.last().unwrap().verified.clone()
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn error_of(r: reqwest::Response) -> (u16, ErrorBody) {
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_is_tagged_and_its_report_verifies() {
    let s = start(limits()).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let mut chain = Chain::new(&alice, "bob");
    let first = chain.seal("m1", "hello bob");
    let second = chain.seal("m2", "you will regret this");
    let e1 = relay(&s, &alice, &bob, "m1", &first).await;
    let e2 = relay(&s, &alice, &bob, "m2", &second).await;

    // The envelope carries TF as sent and RF under key 1, over (TF, sender, device,
    // recipient account, server time); the key is the one in DATA/franking/1.key.
    assert_eq!(e2.franking_tag.0, second.tf());
    assert_eq!((e2.franking_key_id, e2.server_tag.0.len()), (1, 32));
    let key = key_on_disk(&s, 1);
    let rf: [u8; 32] = e2.server_tag.0.as_slice().try_into().unwrap();
    assert!(parley_proto::verify_server_tag(
        &key,
        second.tf(),
        "alice",
        1,
        "bob",
        e2.server_time_ms,
        &rf
    ));
    assert!(!parley_proto::verify_server_tag(
        &key,
        second.tf(),
        "alice",
        1,
        "carol",
        e2.server_time_ms,
        &rf
    ));

    // A retry is idempotent: the original envelope and tag stand.
    let r = send_sealed(&s, &alice, "bob", "m2", &first).await;
    let sent: SendResponse = r.json().await.unwrap();
    assert!(sent.duplicate);
    assert_eq!(sent.server_time_ms, e2.server_time_ms);
    let q: FetchResponse = bob.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert_eq!(q.envelopes.len(), 2);
    assert_eq!(q.envelopes[1], e2);

    // The WebSocket push carries the same tags.
    let mut ws = connect(&s, &bob.token).await.unwrap();
    match next_frame(&mut ws).await {
        Some(ServerFrame::Envelope(pushed)) => assert_eq!(pushed, e1),
        other => panic!("expected an envelope, got {other:?}"),
    }
    drop(ws);

    // Bob reports the second message with the first as context: both verify.
    let id = report_ok(&s, &bob, vec![item(&first, &e1, "bob"), item(&second, &e2, "bob")]).await;
    let queue: Vec<ReportView> =
        admin_get(&s, "/v1/admin/reports").send().await.unwrap().json().await.unwrap();
    assert_eq!(queue.len(), 1);
    let v = &queue[0];
    assert_eq!(*v, view(&s, id).await);
    assert_eq!((v.id, v.reporter.as_str(), v.sender.as_str()), (id, "bob", "alice"));
    assert_eq!((v.reason.as_str(), v.status.as_str()), ("abusive", "open"));
    assert_eq!(v.messages.len(), 2);
    for (m, (text, seq, env)) in
        v.messages.iter().zip([("hello bob", 0, &e1), ("you will regret this", 1, &e2)])
    {
        assert_eq!(m.verified, serde_json::Value::Bool(true), "{m:?}");
        assert_eq!(m.kind, "message");
        assert_eq!(m.text.as_deref(), Some(text));
        assert_eq!(m.sender.as_deref(), Some("alice"));
        assert_eq!(m.sender_device, Some(1));
        assert_eq!(m.recipient.as_deref(), Some("bob"));
        assert_eq!(m.seq, Some(seq));
        assert_eq!(m.sent_at_ms, Some(1_800_000_000_000));
        assert_eq!(m.server_at_ms, Some(env.server_time_ms));
    }
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_reports_fail_with_the_precise_reason() {
    let s = start(limits()).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let carol = User::register(&s, "carol", 0).await;
    let mallory = User::register(&s, "mallory", 0).await;
    let mut chain = Chain::new(&alice, "bob");
    let sealed = chain.seal("m1", "the real message");
    let env = relay(&s, &alice, &bob, "m1", &sealed).await;
    let honest = item(&sealed, &env, "bob");

    // Altered plaintext under the original commitment.
    let ReportItem::Franked { content, .. } = &honest else { unreachable!() };
    let nf = &content[content.len() - 32..];
    let mut forged = chain.body("m1", "something alice never wrote");
    forged.seq = 0;
    forged.prev = [0; 32];
    let mut altered = honest.clone();
    if let ReportItem::Franked { content, .. } = &mut altered {
        *content = [forged.encode().unwrap().as_slice(), nf].concat();
    }
    let id = report_ok(&s, &bob, vec![altered]).await;
    assert_eq!(
        last_verdict(&s, id).await,
        "content does not match its commitment (altered or swapped)"
    );
    // The moderator still sees the claimed text, marked as failing.
    assert_eq!(view(&s, id).await.messages[0].text.as_deref(), Some("something alice never wrote"));

    // Altered sender in the tagged fields: the server tag no longer verifies.
    let mut resent = honest.clone();
    if let ReportItem::Franked { sender, .. } = &mut resent {
        *sender = "carol".into();
    }
    let id = report_ok(&s, &bob, vec![resent]).await;
    assert_eq!(
        last_verdict(&s, id).await,
        "server tag invalid (sender, recipient or time altered, or forged)"
    );

    // A body that names someone other than the account the server saw sending it.
    let mut fake = Chain::new(&alice, "bob");
    let spoof = fake.seal("s1", "I am alice");
    let spoof_env = relay(&s, &mallory, &bob, "s1", &spoof).await;
    assert_eq!(spoof_env.sender, "mallory");
    let id = report_ok(&s, &bob, vec![item(&spoof, &spoof_env, "bob")]).await;
    assert_eq!(last_verdict(&s, id).await, "message sender differs from the server's");
    // Suspension needs a verified reported message.
    let (status, body) = error_of(
        admin_post(&s, &format!("/v1/admin/reports/{id}/resolve"))
            .json(&serde_json::json!({"action": "suspend"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.error.as_str()), (409, "conflict"));
    assert!(body.message.starts_with("cannot suspend on an unverified report"), "{}", body.message);

    // A tag replayed from another recipient's copy: alice wrote to carol; bob reports it.
    let mut to_carol = Chain::new(&alice, "carol");
    let c = to_carol.seal("c1", "for carol only");
    let c_env = relay(&s, &alice, &carol, "c1", &c).await;
    let id = report_ok(&s, &bob, vec![item(&c, &c_env, "carol")]).await;
    assert_eq!(last_verdict(&s, id).await, "message was not sent to the reporter");
    let id = report_ok(&s, &bob, vec![item(&c, &c_env, "bob")]).await;
    assert_eq!(
        last_verdict(&s, id).await,
        "server tag invalid (sender, recipient or time altered, or forged)"
    );

    // An unknown key id.
    let mut unknown = honest.clone();
    if let ReportItem::Franked { kid, .. } = &mut unknown {
        *kid = 99;
    }
    let id = report_ok(&s, &bob, vec![unknown]).await;
    assert_eq!(last_verdict(&s, id).await, "unknown server key 99");

    // The honest report verifies.
    let id = report_ok(&s, &bob, vec![honest]).await;
    assert_eq!(last_verdict(&s, id).await, true);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_verifies_until_its_grace_period_ends() {
    let s = start(Limits { franking_grace_secs: 3, ..limits() }).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let mut chain = Chain::new(&alice, "bob");
    let old = chain.seal("m1", "before rotation");
    let old_env = relay(&s, &alice, &bob, "m1", &old).await;
    assert_eq!(old_env.franking_key_id, 1);

    let r = admin_post(&s, "/v1/admin/franking-keys/rotate").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rot: RotateResponse = r.json().await.unwrap();
    assert_eq!((rot.active, rot.retired), (2, vec![1]));
    let index = std::fs::read_to_string(franking_dir(&s).join("keyring.toml")).unwrap();
    assert!(index.contains("kid = 2") && index.contains("retired_at"), "{index}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(franking_dir(&s)) & 0o777, 0o700);
        assert_eq!(mode(franking_dir(&s).join("2.key")) & 0o777, 0o600);
    }

    let new = chain.seal("m2", "after rotation");
    let new_env = relay(&s, &alice, &bob, "m2", &new).await;
    assert_eq!(new_env.franking_key_id, 2);
    let rf: [u8; 32] = new_env.server_tag.0.as_slice().try_into().unwrap();
    assert!(parley_proto::verify_server_tag(
        &key_on_disk(&s, 2),
        new.tf(),
        "alice",
        1,
        "bob",
        new_env.server_time_ms,
        &rf
    ));

    // Within the grace period the old key still verifies.
    let old_id = report_ok(&s, &bob, vec![item(&old, &old_env, "bob")]).await;
    let new_id = report_ok(&s, &bob, vec![item(&new, &new_env, "bob")]).await;
    assert_eq!(last_verdict(&s, old_id).await, true);
    assert_eq!(last_verdict(&s, new_id).await, true);

    // After it, the old key's tags are refused as retired; the active key's still verify.
    tokio::time::sleep(std::time::Duration::from_millis(4_100)).await;
    assert_eq!(last_verdict(&s, old_id).await, "server key 1 is retired");
    assert_eq!(last_verdict(&s, new_id).await, true);
    let rot: RotateResponse = admin_post(&s, "/v1/admin/franking-keys/rotate")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((rot.active, rot.retired), (3, vec![2]));
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_suspends_a_verified_sender() {
    let s = start(limits()).await;
    let mallory = User::register(&s, "mallory", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let mut chain = Chain::new(&mallory, "bob");
    let m1 = chain.seal("m1", "first threat");
    let e1 = relay(&s, &mallory, &bob, "m1", &m1).await;
    let m2 = chain.seal("m2", "second threat");
    let e2 = relay(&s, &mallory, &bob, "m2", &m2).await;
    let warn_id = report_ok(&s, &bob, vec![item(&m1, &e1, "bob")]).await;
    let suspend_id = report_ok(&s, &bob, vec![item(&m1, &e1, "bob"), item(&m2, &e2, "bob")]).await;
    let dismiss_id = report_ok(&s, &bob, vec![item(&m2, &e2, "bob")]).await;
    let resolve = |id: u64, action: &str| {
        admin_post(&s, &format!("/v1/admin/reports/{id}/resolve"))
            .json(&serde_json::json!({ "action": action }))
    };

    let v: ReportView = resolve(warn_id, "warn").send().await.unwrap().json().await.unwrap();
    assert_eq!(v.status, "warn");
    assert_eq!(send_sealed(&s, &mallory, "bob", "m3", &chain.seal("m3", "x")).await.status(), 200);
    let r = resolve(suspend_id, "suspend").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<ReportView>().await.unwrap().status, "suspend");

    // The suspended account's sends are refused with a clear sentence; it can still read.
    let (status, body) =
        error_of(send_sealed(&s, &mallory, "bob", "m4", &chain.seal("m4", "y")).await).await;
    assert_eq!((status, body.error.as_str()), (403, "suspended"));
    assert_eq!(body.message, "this account is suspended and cannot send messages");
    assert_eq!(mallory.get(&s, "/v1/messages").send().await.unwrap().status(), 200);
    // Bob is not affected.
    let mut back = Chain::new(&bob, "mallory");
    assert_eq!(
        send_sealed(&s, &bob, "mallory", "b1", &back.seal("b1", "stop")).await.status(),
        200
    );

    // Resolved reports leave the queue and cannot be resolved again.
    let (status, _) = error_of(resolve(suspend_id, "dismiss").send().await.unwrap()).await;
    assert_eq!(status, 409);
    let v: ReportView = resolve(dismiss_id, "dismiss").send().await.unwrap().json().await.unwrap();
    assert_eq!(v.status, "dismiss");
    let open: Vec<ReportView> =
        admin_get(&s, "/v1/admin/reports").send().await.unwrap().json().await.unwrap();
    assert!(open.is_empty(), "{open:?}");
    let all: Vec<ReportView> =
        admin_get(&s, "/v1/admin/reports?all=true").send().await.unwrap().json().await.unwrap();
    let statuses: Vec<&str> = all.iter().map(|v| v.status.as_str()).collect();
    assert_eq!(statuses, ["warn", "suspend", "dismiss"]);
    let page: Vec<ReportView> =
        admin_get(&s, &format!("/v1/admin/reports?all=true&after={warn_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(page.len(), 2);

    // Unknown and malformed ids, bad actions.
    assert_eq!(error_of(resolve(999_999, "warn").send().await.unwrap()).await.0, 404);
    assert_eq!(
        error_of(admin_get(&s, "/v1/admin/reports/999999").send().await.unwrap()).await.0,
        404
    );
    assert_eq!(
        error_of(admin_get(&s, "/v1/admin/reports/18446744073709551615").send().await.unwrap())
            .await
            .0,
        404
    );
    assert_eq!(error_of(admin_get(&s, "/v1/admin/reports/abc").send().await.unwrap()).await.0, 400);
    assert_eq!(error_of(admin_get(&s, "/v1/admin/reports/-1").send().await.unwrap()).await.0, 400);
    assert_eq!(error_of(resolve(dismiss_id, "ban").send().await.unwrap()).await.0, 400);
    assert_eq!(
        error_of(admin_get(&s, "/v1/admin/reports?all=maybe").send().await.unwrap()).await.0,
        400
    );
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_checked_and_rate_limited() {
    let s = start(Limits { reports_per_hour: 2, ..test_limits() }).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let eve = User::register(&s, "eve", 0).await;
    let mut chain = Chain::new(&alice, "bob");
    let m = chain.seal("m1", "hi");
    let env = relay(&s, &alice, &bob, "m1", &m).await;
    let report = Report { reporter: "bob".into(), items: vec![item(&m, &env, "bob")] };

    // Someone else's report (eve submitting bob's), a long reason, garbage: refused, not stored.
    let (status, body) = error_of(post_report(&s, &eve, &report, "").await).await;
    assert_eq!((status, body.error.as_str()), (403, "forbidden"));
    let long = "x".repeat(parley_api::MAX_REPORT_REASON_LEN + 1);
    let (status, body) = error_of(post_report(&s, &bob, &report, &long).await).await;
    assert_eq!(status, 400);
    assert!(body.message.contains("at most 1000 bytes"), "{}", body.message);
    for junk in [vec![], vec![0x42, 1], vec![0xFF; 100]] {
        let r = bob
            .post(&s, "/v1/reports")
            .json(&serde_json::json!({"report": base64(&junk)}))
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(r).await;
        assert_eq!(status, 400);
        assert!(body.message.starts_with("invalid report: "), "{}", body.message);
    }
    // A report may be larger than an ordinary request (`max_report_bytes`), not unbounded.
    let big = vec![0xFF; 4 * 1024 * 1024];
    let r = bob.post(&s, "/v1/reports").json(&serde_json::json!({"report": base64(&big)})).send();
    let (status, body) = error_of(r.await.unwrap()).await;
    assert_eq!(status, 400, "a 5.6 MB report was refused for its size: {}", body.message);
    let huge = vec![0xFF; 7 * 1024 * 1024];
    let r = bob.post(&s, "/v1/reports").json(&serde_json::json!({"report": base64(&huge)})).send();
    // The server answers 413 without reading the rest and closes the connection; a client
    // still writing the body may see that close before the answer (seen once in CI). Either
    // way the body was refused, and the requests below show the server is still up.
    match r.await {
        Ok(resp) => assert_eq!(resp.status(), 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let r = bob.post(&s, "/v1/reports").json(&serde_json::json!({"reason": "x"})).send().await;
    assert_eq!(r.unwrap().status(), 400);
    let r = s
        .http
        .post(format!("{}/v1/reports", s.url))
        .json(&serde_json::json!({"report": base64(&report.encode().unwrap())}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Two accepted reports per hour, then 429 with a retry-after.
    let max_reason = "r".repeat(parley_api::MAX_REPORT_REASON_LEN);
    assert_eq!(post_report(&s, &bob, &report, &max_reason).await.status(), 201);
    assert_eq!(post_report(&s, &bob, &report, "again").await.status(), 201);
    let r = post_report(&s, &bob, &report, "third").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let queue: Vec<ReportView> =
        admin_get(&s, "/v1/admin/reports").send().await.unwrap().json().await.unwrap();
    assert_eq!(queue.len(), 2);
    assert_eq!(queue[0].reason, max_reason);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_moderates_and_rotates() {
    let s = start(limits()).await;
    let bob = User::register(&s, "bob", 0).await;
    let resolve = serde_json::json!({"action": "suspend"});
    for r in [
        bob.get(&s, "/v1/admin/reports"),
        bob.get(&s, "/v1/admin/reports/1"),
        bob.post(&s, "/v1/admin/reports/1/resolve").json(&resolve),
        bob.post(&s, "/v1/admin/franking-keys/rotate"),
        s.http.get(format!("{}/v1/admin/reports", s.url)),
        s.http.post(format!("{}/v1/admin/franking-keys/rotate", s.url)),
    ] {
        let (status, body) = error_of(r.send().await.unwrap()).await;
        assert_eq!((status, body.error.as_str()), (401, "unauthorized"));
    }
    // Nothing rotated.
    let index = std::fs::read_to_string(franking_dir(&s).join("keyring.toml")).unwrap();
    assert!(!index.contains("kid = 2"), "{index}");
    let doc: serde_json::Value =
        s.http.get(format!("{}/openapi.json", s.url)).send().await.unwrap().json().await.unwrap();
    for path in [
        "/v1/reports",
        "/v1/admin/reports",
        "/v1/admin/reports/{id}",
        "/v1/admin/reports/{id}/resolve",
        "/v1/admin/franking-keys/rotate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    s.running.shutdown().await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_nothing_of_unreported_messages() {
    let s = start(limits()).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let mut chain = Chain::new(&alice, "bob");
    let secret_text = "UNREPORTED-private-words-4f1c";
    let reported_text = "REPORTED-abusive-words-9b2e";
    let secret = chain.seal("m1", secret_text);
    let abusive = chain.seal("m2", reported_text);
    let e1 = relay(&s, &alice, &bob, "m1", &secret).await;
    let e2 = relay(&s, &alice, &bob, "m2", &abusive).await;
    let r = bob.post(&s, "/v1/messages/ack").json(&serde_json::json!({"ids": [e1.id, e2.id]}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    report_ok(&s, &bob, vec![item(&abusive, &e2, "bob")]).await;

    // Every file of the data folder (SQLite database, WAL, keyring): the unreported message's
    // text and its opening NF never reached the server; the franking key is only in its file.
    let secret_nf = &secret.content()[secret.content().len() - 32..];
    let key = key_on_disk(&s, 1);
    let mut files = Vec::new();
    files_under(&s.dir.path().join("data"), &mut files);
    assert!(files.iter().any(|f| f.to_string_lossy().contains("parley.db")), "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!contains(&bytes, secret_text.as_bytes()), "plaintext found in {f:?}");
        assert!(!contains(&bytes, secret_nf), "an unreported NF found in {f:?}");
        if !f.ends_with("1.key") {
            assert!(!contains(&bytes, key.expose_secret()), "the franking key found in {f:?}");
        }
    }

    // The moderator sees the reported message only.
    let queue = admin_get(&s, "/v1/admin/reports").send().await.unwrap().text().await.unwrap();
    assert!(queue.contains(reported_text));
    assert!(!queue.contains(secret_text));
    s.running.shutdown().await.unwrap();
}
