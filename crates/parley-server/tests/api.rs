//! Integration tests against a real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::collections::HashSet;

use common::*;
use parley_api::{
    AckResponse, BundlesResponse, Bytes, ErrorBody, FetchResponse, OutgoingEnvelope, PrekeyStatus,
    PrekeyUpload, SendRequest, SendResponse, ServerFrame, StaleDevices,
};
use parley_proto::{PrekeyBundleIn, initiate};
use parley_server::Limits;

async fn bundles_of(s: &TestServer, from: &User, name: &str) -> BundlesResponse {
    let r = from.get(s, &format!("/v1/accounts/{name}/bundles")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn send_req(to: &str, id: &str, devices: &[(u32, Vec<u8>)]) -> SendRequest {
    SendRequest {
        recipient: to.into(),
        message_id: id.into(),
        envelopes: devices
            .iter()
            .map(|(d, c)| OutgoingEnvelope { device_id: *d, ciphertext: Bytes(c.clone()) })
            .collect(),
        franking_tag: Bytes(vec![0x33; 32]),
    }
}

async fn send(s: &TestServer, from: &User, req: &SendRequest) -> reqwest::Response {
    from.post(s, "/v1/messages").json(req).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_through_the_server_with_redelivery() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 5).await;
    let mut bob = User::register(&s, "bob", 5).await;
    let mut rng = rand::rng();

    // Alice fetches Bob's bundle, verifies it, and starts a PQXDH session.
    let b = bundles_of(&s, &alice, "bob").await;
    assert_eq!(b.account_key.0, bob.account.public().as_bytes().to_vec());
    assert_eq!(b.devices.len(), 1);
    let bundle = PrekeyBundleIn::decode(&b.devices[0].bundle.0)
        .unwrap()
        .validate(Some(bob.account.public()))
        .unwrap();
    assert!(bundle.one_time().is_some());
    let mut session = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        let ct = session.encrypt(&mut rng, format!("hello {i}").as_bytes(), b"").unwrap();
        let r = send(&s, &alice, &send_req("bob", &format!("m{i}"), &[(1, ct.clone())])).await;
        assert_eq!(r.status(), 200);
        let ok: SendResponse = r.json().await.unwrap();
        assert!(!ok.duplicate);
        sent.push(ct);
    }

    // Bob connects: the queue is pushed in order, then `drained`. He acks nothing.
    let mut ws = connect(&s, &bob.token).await.unwrap();
    let mut first = Vec::new();
    for (i, ct) in sent.iter().enumerate() {
        match next_frame(&mut ws).await {
            Some(ServerFrame::Envelope(e)) => {
                assert_eq!(e.message_id, format!("m{i}"));
                assert_eq!(e.sender, "alice");
                assert_eq!(&e.ciphertext.0, ct);
                first.push(e);
            }
            other => panic!("expected an envelope, got {other:?}"),
        }
    }
    assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
    drop(ws);

    // Reconnect: everything unacked comes again; Bob decrypts and acks.
    let mut ws = connect(&s, &bob.token).await.unwrap();
    let acc = match next_frame(&mut ws).await {
        Some(ServerFrame::Envelope(e)) => {
            assert_eq!(e.id, first[0].id);
            bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &e.ciphertext.0, b"").unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(acc.first.plaintext(), b"hello 0");
    let mut bob_session = acc.session;
    for i in 1..3 {
        let Some(ServerFrame::Envelope(e)) = next_frame(&mut ws).await else { panic!("envelope") };
        assert_eq!(
            bob_session.decrypt_any(&mut rng, &e.ciphertext.0, b"").unwrap().plaintext(),
            format!("hello {i}").as_bytes()
        );
    }
    assert_eq!(next_frame(&mut ws).await, Some(ServerFrame::Drained));
    send_ack(&mut ws, &first.iter().map(|e| e.id).collect::<Vec<_>>()).await;

    // A live push: Bob replies, Alice sends again while Bob is connected.
    let reply = bob_session.encrypt(&mut rng, b"hi alice", b"").unwrap();
    assert_eq!(send(&s, &bob, &send_req("alice", "r1", &[(1, reply)])).await.status(), 200);
    let live = session.encrypt(&mut rng, b"live", b"").unwrap();
    assert_eq!(send(&s, &alice, &send_req("bob", "m3", &[(1, live)])).await.status(), 200);
    let Some(ServerFrame::Envelope(e)) = next_frame(&mut ws).await else { panic!("live envelope") };
    assert_eq!(e.message_id, "m3");
    assert_eq!(
        bob_session.decrypt_any(&mut rng, &e.ciphertext.0, b"").unwrap().plaintext(),
        b"live"
    );
    send_ack(&mut ws, &[e.id]).await;
    drop(ws);

    // Acked envelopes are gone; Alice reads her reply over REST and acks it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let q: FetchResponse = bob.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert!(q.envelopes.is_empty(), "acked envelopes remain: {:?}", q.envelopes);
    let q: FetchResponse =
        alice.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert_eq!(q.envelopes.len(), 1);
    assert_eq!(
        session.decrypt_any(&mut rng, &q.envelopes[0].ciphertext.0, b"").unwrap().plaintext(),
        b"hi alice"
    );
    let a: AckResponse = alice
        .post(&s, "/v1/messages/ack")
        .json(&serde_json::json!({"ids": [q.envelopes[0].id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a.deleted, 1);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_idempotent_and_device_sets_checked() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let r = send(&s, &alice, &send_req("bob", "x1", &[(1, vec![1, 2, 3])])).await;
    let first: SendResponse = r.json().await.unwrap();
    let r = send(&s, &alice, &send_req("bob", "x1", &[(1, vec![9, 9])])).await;
    let again: SendResponse = r.json().await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.server_time_ms, first.server_time_ms);
    let q: FetchResponse = bob.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert_eq!(q.envelopes.len(), 1);
    assert_eq!(q.envelopes[0].ciphertext.0, vec![1, 2, 3]);

    // Stale device set: 409 with the devices to add and drop.
    let r = send(&s, &alice, &send_req("bob", "x2", &[(2, vec![1])])).await;
    assert_eq!(r.status(), 409);
    let stale: StaleDevices = r.json().await.unwrap();
    assert_eq!((stale.missing_devices, stale.extra_devices), (vec![1], vec![2]));
    let r = send(&s, &alice, &send_req("bob", "x3", &[(1, vec![1]), (1, vec![2])])).await;
    assert_eq!(r.status(), 400);
    let r = send(&s, &alice, &send_req("nobody", "x4", &[(1, vec![1])])).await;
    assert_eq!(r.status(), 404);
    // To oneself: the own sending device is excluded (a single-device account has nobody to send to).
    let r = send(&s, &alice, &send_req("alice", "x5", &[(1, vec![1])])).await;
    assert_eq!(r.status(), 409);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_touch_another_devices_queue() {
    let s = start(test_limits()).await;
    let alice = User::register(&s, "alice", 0).await;
    let bob = User::register(&s, "bob", 0).await;
    let eve = User::register(&s, "eve", 0).await;
    send(&s, &alice, &send_req("bob", "s1", &[(1, vec![7; 10])])).await;
    let q: FetchResponse = bob.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    let id = q.envelopes[0].id;
    // Eve sees only her own (empty) queue, and her ack of Bob's id deletes nothing.
    let eq: FetchResponse = eve.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert!(eq.envelopes.is_empty());
    let a: AckResponse = eve
        .post(&s, "/v1/messages/ack")
        .json(&serde_json::json!({"ids": [id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a.deleted, 0);
    // Forged or altered credentials are refused.
    let uid = bob.token.split('.').nth(1).unwrap();
    let forged = format!("pt1.{uid}.{}", eve.token.split('.').nth(2).unwrap());
    for bad in [forged.as_str(), "pt1.1.AAAA", "garbage", ""] {
        let r = s.http.get(format!("{}/v1/messages", s.url)).bearer_auth(bad).send().await.unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let e: ErrorBody = r.json().await.unwrap();
        assert_eq!(e.error, "unauthorized");
    }
    assert_eq!(s.http.get(format!("{}/v1/messages", s.url)).send().await.unwrap().status(), 401);
    assert!(connect(&s, &forged).await.is_err());
    // Bob still has his envelope.
    let q: FetchResponse = bob.get(&s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    assert_eq!(q.envelopes.len(), 1);
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bundle_fetches_never_share_a_one_time_prekey() {
    let s = start(test_limits()).await;
    let bob = User::register(&s, "bob", 40).await;
    let mut fetchers = Vec::new();
    for i in 0..4 {
        fetchers.push(std::sync::Arc::new(User::register(&s, &format!("fetcher{i}"), 0).await));
    }
    let mut tasks = Vec::new();
    for i in 0..48 {
        let f = fetchers[i % 4].clone();
        let (http, url) = (s.http.clone(), s.url.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(format!("{url}/v1/accounts/bob/bundles"))
                .bearer_auth(&f.token)
                .send()
                .await
                .unwrap();
            r.json::<BundlesResponse>().await.unwrap()
        }));
    }
    let mut ec = HashSet::new();
    let mut kem = HashSet::new();
    let mut with_one_time = 0;
    for t in tasks {
        let b = t.await.unwrap();
        let bundle = PrekeyBundleIn::decode(&b.devices[0].bundle.0)
            .unwrap()
            .validate(Some(bob.account.public()))
            .unwrap();
        if let Some(o) = bundle.one_time() {
            assert!(ec.insert(o.id()), "one-time prekey {} handed out twice", o.id());
            with_one_time += 1;
        }
        if bundle.kem_prekey().kind() == parley_proto::KemPrekeyKind::OneTime {
            assert!(kem.insert(bundle.kem_prekey().id()), "one-time KEM prekey handed out twice");
        }
    }
    assert_eq!(with_one_time, 40);
    assert_eq!(kem.len(), 40);
    let st: PrekeyStatus =
        bob.get(&s, "/v1/devices/self/prekeys").send().await.unwrap().json().await.unwrap();
    assert_eq!((st.one_time_prekeys, st.one_time_kem_prekeys, st.low), (0, 0, true));
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekeys_replenish_and_rotate_with_checks() {
    let s = start(test_limits()).await;
    let mut bob = User::register(&s, "bob", 2).await;
    let other = User::register(&s, "other", 1).await;
    let mut rng = rand::rng();
    let st: PrekeyStatus =
        bob.get(&s, "/v1/devices/self/prekeys").send().await.unwrap().json().await.unwrap();
    assert!(st.low && !st.rotate);
    let (ec, kem) = bob.store.generate_one_time(&mut rng, &bob.device, 30).unwrap();
    let spk = bob.store.generate_signed_prekey(&mut rng, NOW, &bob.device).unwrap();
    let up = PrekeyUpload {
        signed_prekey: Some(Bytes(spk.encode())),
        last_resort_kem: None,
        one_time_prekeys: ec.iter().map(|k| Bytes(k.encode())).collect(),
        one_time_kem_prekeys: kem.iter().map(|k| Bytes(k.encode())).collect(),
    };
    let r = bob.put(&s, "/v1/devices/self/prekeys").json(&up).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let st: PrekeyStatus = r.json().await.unwrap();
    assert_eq!((st.one_time_prekeys, st.one_time_kem_prekeys, st.low), (32, 32, false));
    // The same ids again, keys signed by another device, a one-time key as last-resort: refused.
    assert_eq!(
        bob.put(&s, "/v1/devices/self/prekeys").json(&up).send().await.unwrap().status(),
        400
    );
    let (_, other_kem) = User::keys("x", 1);
    let bad = PrekeyUpload {
        one_time_kem_prekeys: other_kem.device.one_time_kem_prekeys.clone(),
        ..Default::default()
    };
    assert_eq!(
        bob.put(&s, "/v1/devices/self/prekeys").json(&bad).send().await.unwrap().status(),
        400
    );
    let bad = PrekeyUpload {
        last_resort_kem: Some(up.one_time_kem_prekeys[0].clone()),
        ..Default::default()
    };
    assert_eq!(
        bob.put(&s, "/v1/devices/self/prekeys").json(&bad).send().await.unwrap().status(),
        400
    );
    let too_many = PrekeyUpload {
        one_time_prekeys: vec![up.one_time_prekeys[0].clone(); 101],
        ..Default::default()
    };
    assert_eq!(
        bob.put(&s, "/v1/devices/self/prekeys").json(&too_many).send().await.unwrap().status(),
        400
    );
    // The rotated signed prekey is served.
    let b = bundles_of(&s, &other, "bob").await;
    let bundle = PrekeyBundleIn::decode(&b.devices[0].bundle.0).unwrap().validate(None).unwrap();
    assert_eq!(bundle.signed_prekey().id(), spk.id());
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_a_clear_error() {
    let s = start(Limits { max_queue_len: 3, ..test_limits() }).await;
    let alice = User::register(&s, "alice", 0).await;
    User::register(&s, "bob", 0).await;
    for i in 0..3 {
        assert_eq!(
            send(&s, &alice, &send_req("bob", &format!("q{i}"), &[(1, vec![1])])).await.status(),
            200
        );
    }
    let r = send(&s, &alice, &send_req("bob", "q3", &[(1, vec![1])])).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let e: ErrorBody = r.json().await.unwrap();
    assert_eq!(e.error, "queue_full");
    s.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_replaces_the_old_one() {
    let s = start(test_limits()).await;
    let bob = User::register(&s, "bob", 0).await;
    let mut first = connect(&s, &bob.token).await.unwrap();
    assert_eq!(next_frame(&mut first).await, Some(ServerFrame::Drained));
    let mut second = connect(&s, &bob.token).await.unwrap();
    assert_eq!(next_frame(&mut second).await, Some(ServerFrame::Drained));
    match next_frame(&mut first).await {
        Some(ServerFrame::Error(e)) => assert_eq!(e.error, "replaced"),
        other => panic!("expected the old connection to be replaced, got {other:?}"),
    }
    s.running.shutdown().await.unwrap();
}
