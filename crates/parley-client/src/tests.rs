//! Tests that look inside the client: redelivery, what the store file holds, session reset,
//! prekey replenishment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use parley_api::{FetchResponse, PrekeyStatus};
use parley_server::{Config, Limits, RunningServer};

use std::time::Duration;

use crate::{Client, ClientOptions, Event, TimelineItem};

fn opts() -> ClientOptions {
    ClientOptions { insecure_test_kdf: true, ..ClientOptions::default() }
}

async fn server(data: &Path, limits: Limits) -> RunningServer {
    let config = Config {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: Limits {
            registrations_per_hour: 10_000,
            ip_rps: 10_000,
            ip_burst: 10_000,
            ..limits
        },
        ..Config::default()
    };
    parley_server::start(config).await.unwrap()
}

async fn account(dir: &Path, url: &str, name: &str) -> Client {
    Client::create_account(&dir.join(name), url, name, "pw", &opts()).await.unwrap()
}

fn messages(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn redelivered_envelopes_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    for i in 0..3 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    let page: FetchResponse = bob.http.get("/v1/messages").await.unwrap();
    assert_eq!(page.envelopes.len(), 3);
    let mut first = Vec::new();
    for env in &page.envelopes {
        first.extend(bob.process(env.clone()).await.unwrap());
    }
    assert_eq!(messages(&first), ["m0", "m1", "m2"]);
    for env in &page.envelopes {
        assert!(bob.process(env.clone()).await.unwrap().is_empty(), "duplicate dropped");
    }
    // Not acked yet: the server pushes them again, and they are dropped and acked.
    assert!(bob.receive(None).await.unwrap().is_empty());
    let page: FetchResponse = bob.http.get("/v1/messages").await.unwrap();
    assert!(page.envelopes.is_empty());
    assert_eq!(bob.history("alice").await.unwrap().len(), 3);
    srv.shutdown().await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn store_bytes(home: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["parley.db", "parley.db-wal", "parley.db-shm"] {
        if let Ok(b) = std::fs::read(home.join(name)) {
            all.extend(b);
        }
    }
    all
}

#[tokio::test]
async fn store_file_holds_no_plaintext_keys_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    let secret_text = "meet me at the old lighthouse at 23:17";
    alice.send("bob", secret_text).await.unwrap();
    let ev = bob.receive(None).await.unwrap();
    assert_eq!(messages(&ev), [secret_text]);
    bob.send("alice", "the reply is also secret 8812").await.unwrap();
    alice.receive(None).await.unwrap();
    // A queued message too.
    let queued = "queued text that must stay sealed 4471";
    alice.enqueue("bob", "aaaabbbbccccddddeeeeffff00001111", 1, queued, None).await.unwrap();

    for (client, home) in [(&alice, dir.path().join("alice")), (&bob, dir.path().join("bob"))] {
        let account_secret = client.account.to_secret_bytes();
        let device_secret = client.device.to_secret_bytes();
        let token = client.http.token.clone().unwrap();
        let prekeys = client.prekeys.to_bytes();
        let debug = format!("{client:?}");
        assert!(!debug.contains(token.as_str()));
        let server_files = store_bytes(&dir.path().join("data"));
        assert!(!server_files.is_empty());
        for text in [secret_text, "the reply is also secret 8812"] {
            assert!(!contains(&server_files, text.as_bytes()), "plaintext {text:?} on the server");
        }
        assert!(!contains(&server_files, &account_secret[2..]), "account key on the server");
        assert!(!contains(&server_files, &device_secret[2..]), "device key on the server");
        assert!(!contains(&server_files, token.as_bytes()), "token on the server");
        for bytes in [store_bytes(&home)] {
            assert!(!bytes.is_empty());
            for text in [secret_text, "the reply is also secret 8812", queued] {
                assert!(!contains(&bytes, text.as_bytes()), "plaintext {text:?} in the store");
            }
            assert!(!contains(&bytes, &account_secret[2..]), "account key in the store");
            assert!(!contains(&bytes, &device_secret[2..]), "device key in the store");
            assert!(!contains(&bytes, &prekeys[10..42]), "prekey secret in the store");
            assert!(!contains(&bytes, token.as_bytes()), "token in the store");
            // The store is not empty of what is meant to be in clear.
            assert!(contains(&bytes, b"alice") && contains(&bytes, b"bob"));
        }
    }
    let (alice_home, bob_home) = (dir.path().join("alice"), dir.path().join("bob"));
    let (a_secret, a_token) = (alice.account.to_secret_bytes(), alice.http.token.clone().unwrap());
    alice.close().await;
    bob.close().await;
    for home in [alice_home, bob_home] {
        let bytes = store_bytes(&home);
        assert!(!contains(&bytes, secret_text.as_bytes()));
        assert!(!contains(&bytes, &a_secret[2..]));
        assert!(!contains(&bytes, a_token.as_bytes()));
    }
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn new_handshake_resets_the_session_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    alice.send("bob", "one").await.unwrap();
    assert_eq!(messages(&bob.receive(None).await.unwrap()), ["one"]);
    // Alice loses her session (a restored device, say) and starts a new one.
    sqlx::query("DELETE FROM sessions").execute(&alice.store.pool).await.unwrap();
    alice.send("bob", "two").await.unwrap();
    let ev = bob.receive(None).await.unwrap();
    assert_eq!(ev.first(), Some(&Event::SessionReset { from: "alice".into() }));
    assert_eq!(messages(&ev), ["two"]);
    // And the new session works both ways.
    bob.send("alice", "three").await.unwrap();
    assert_eq!(messages(&alice.receive(None).await.unwrap()), ["three"]);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn prekeys_are_replenished_when_low() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { prekey_low_water: 60, ..Limits::default() };
    let srv = server(&dir.path().join("data"), limits).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let before: PrekeyStatus = alice.http.get("/v1/devices/self/prekeys").await.unwrap();
    assert!(before.low);
    assert_eq!(before.one_time_prekeys, 50);
    alice.receive(None).await.unwrap();
    let after: PrekeyStatus = alice.http.get("/v1/devices/self/prekeys").await.unwrap();
    assert_eq!(after.one_time_prekeys, 100);
    assert!(!after.low);
    // The new secrets were stored: a reopened client can accept a handshake on them.
    alice.close().await;
    let mut alice = Client::open(&dir.path().join("alice"), "pw", None, &opts()).await.unwrap();
    assert_eq!(alice.prekeys.one_time_counts(), (100, 100));
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    bob.send("alice", "hi").await.unwrap();
    assert_eq!(messages(&alice.receive(None).await.unwrap()), ["hi"]);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn key_change_on_receive_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    alice.send("bob", "one").await.unwrap();
    bob.receive(None).await.unwrap();
    let other = parley_proto::AccountIdentity::generate(&mut rand::rng());
    sqlx::query("UPDATE contacts SET account_key = ? WHERE username = 'alice'")
        .bind(&other.public().as_bytes()[..])
        .execute(&bob.store.pool)
        .await
        .unwrap();
    alice.send("bob", "two").await.unwrap();
    let ev = bob.receive(None).await.unwrap();
    assert_eq!(ev.first(), Some(&Event::KeyChange { from: "alice".into() }));
    assert_eq!(messages(&ev), ["two"]);
    // Bob will not answer on the changed key until he accepts it.
    assert!(matches!(bob.send("alice", "x").await, Err(crate::ClientError::IdentityChanged(_))));
    bob.accept_key_change("alice").await.unwrap();
    bob.send("alice", "three").await.unwrap();
    assert_eq!(messages(&alice.receive(None).await.unwrap()), ["three"]);
    // The conversation as a screen shows it: each notice right after the message that
    // brought it (it is recorded with that message, so never earlier).
    let shown: Vec<String> = bob
        .timeline("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|i| match i {
            TimelineItem::Message(m) => m.text.unwrap_or_default(),
            TimelineItem::Notice { event, .. } => format!("[{event}]"),
        })
        .collect();
    assert_eq!(shown, ["one", "two", "[key_change]", "[key_accepted]", "three"]);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn conversations_count_unread_and_show_queued_messages() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    assert!(bob.conversations().await.unwrap().is_empty());
    let before = bob.activity_mark().await.unwrap();
    alice.send("bob", "one").await.unwrap();
    alice.send("bob", "two").await.unwrap();
    bob.receive(None).await.unwrap();
    assert_ne!(bob.activity_mark().await.unwrap(), before, "stored messages change the mark");
    // A request from alice, two unread.
    let list = bob.conversations().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].peer.as_str(), list[0].accepted, list[0].unread), ("alice", false, 2));
    assert_eq!(list[0].last.as_ref().and_then(|m| m.text.as_deref()), Some("two"));
    assert!(bob.is_request("alice").await.unwrap());
    bob.mark_read("alice").await.unwrap();
    assert_eq!(bob.unread("alice").await.unwrap(), 0);
    // Bob answers: alice is a contact now; a new message is unread again.
    bob.send("alice", "hi").await.unwrap();
    alice.send("bob", "three").await.unwrap();
    bob.receive(None).await.unwrap();
    let list = bob.conversations().await.unwrap();
    assert_eq!((list[0].accepted, list[0].unread), (true, 1));
    assert!(!bob.is_request("alice").await.unwrap());
    // The server goes away: bob's next message waits in the outbox and shows as queued.
    srv.shutdown().await.unwrap();
    assert!(bob.send("alice", "later").await.unwrap().queued);
    let last = bob.timeline("alice").await.unwrap().pop().unwrap();
    match last {
        TimelineItem::Message(m) => {
            assert_eq!((m.text.as_deref(), m.state.as_str()), (Some("later"), "queued"));
        }
        other => panic!("{other:?}"),
    }
    let list = bob.conversations().await.unwrap();
    assert_eq!(list[0].last.as_ref().map(|m| m.state.as_str()), Some("queued"));
}

#[tokio::test]
async fn an_interrupted_round_stops_between_frames_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    // Nothing waiting: an interrupted wait returns at once, not after the wait.
    let started = std::time::Instant::now();
    let ev = bob.receive_until(Some(Duration::from_secs(20)), std::future::ready(())).await;
    assert!(ev.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    // Messages waiting, interrupted before the first frame: nothing is processed, nothing
    // acknowledged, and the next round gets everything (the first message is a handshake:
    // its one-time prekey must still be there).
    for i in 0..3 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    let ev = bob.receive_until(None, std::future::ready(())).await.unwrap();
    assert!(messages(&ev).is_empty());
    assert_eq!(messages(&bob.receive(None).await.unwrap()), ["m0", "m1", "m2"]);
    // Interrupted while waiting for more: what arrived is stored and acknowledged.
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let wake = notify.clone();
    let waiter = tokio::spawn(async move {
        let ev = bob.receive_until(Some(Duration::from_secs(20)), wake.notified()).await;
        (bob, ev)
    });
    alice.send("bob", "m3").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    notify.notify_one();
    let (mut bob, ev) = waiter.await.unwrap();
    assert_eq!(messages(&ev.unwrap()), ["m3"]);
    assert!(bob.receive(None).await.unwrap().is_empty(), "m3 was not acknowledged");
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecryptable_messages_are_stored_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut alice = account(dir.path(), &srv.url(), "alice").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    // Garbage from alice, straight to the server.
    let req = parley_api::SendRequest {
        recipient: "bob".into(),
        message_id: "garbage1".into(),
        envelopes: vec![parley_api::OutgoingEnvelope {
            device_id: 1,
            ciphertext: parley_api::Bytes(vec![0x10, 1, 2, 3]),
        }],
        franking_tag: parley_api::Bytes(vec![0; 32]),
    };
    let _: crate::transport::Answer<parley_api::SendResponse> =
        alice.http.post("/v1/messages", &req).await.unwrap();
    alice.send("bob", "fine").await.unwrap();
    let ev = bob.receive(None).await.unwrap();
    assert_eq!(
        ev.first(),
        Some(&Event::Undecryptable { from: "alice".into(), message_id: "garbage1".into() })
    );
    assert_eq!(messages(&ev), ["fine"]);
    assert!(bob.receive(None).await.unwrap().is_empty());
    let h = bob.history("alice").await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].state, "undecryptable");
    assert_eq!(h[0].text, None);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_commitment_that_does_not_open_is_dropped_visibly_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let mut mallory = account(dir.path(), &srv.url(), "mallory").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    // A malicious sender encrypts real franked content but commits to something else: the
    // ratchet opens (TF is what it was encrypted under), the commitment does not.
    let (content, _tf) =
        mallory.franked_for("bob", "evil1", 1, "you cannot report this").await.unwrap();
    let sessions = mallory.start_sessions("bob", None).await.unwrap();
    let bogus = [0x5a; 32];
    mallory.deliver_franked("bob", "evil1", sessions, &content, &bogus).await.unwrap();
    // A second message whose sealed recipient is someone else (a replayed body).
    let (other, tf) = mallory.franked_for("carol", "evil2", 2, "meant for carol").await.unwrap();
    let sessions = mallory.load_sessions("bob").await.unwrap();
    mallory.deliver_franked("bob", "evil2", sessions, &other, &tf).await.unwrap();
    let events = bob.receive(None).await.unwrap();
    assert!(messages(&events).is_empty(), "a message that cannot be reported was shown");
    let dropped: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { message_id, reason, .. } => {
                Some((message_id.as_str(), reason.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        [
            ("evil1", "its franking commitment does not open"),
            ("evil2", "the message was addressed to someone else")
        ]
    );
    let h = bob.history("mallory").await.unwrap();
    assert!(h.iter().all(|e| e.text.is_none() && e.state == "dropped"), "{h:?}");
    // An honest message afterwards goes through (the session moved on).
    mallory.send("bob", "honest").await.unwrap();
    assert_eq!(messages(&bob.receive(None).await.unwrap()), ["honest"]);
}

#[tokio::test]
async fn a_message_id_two_senders_used_is_reported_by_sender() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), Limits::default()).await;
    let alice = account(dir.path(), &srv.url(), "alice").await;
    let mallory = account(dir.path(), &srv.url(), "mallory").await;
    let mut bob = account(dir.path(), &srv.url(), "bob").await;
    // Message ids are chosen by senders: both use "same1".
    for (who, text) in [(&alice, "from alice"), (&mallory, "from mallory")] {
        let (content, tf) = who.franked_for("bob", "same1", 1, text).await.unwrap();
        let sessions = who.start_sessions("bob", None).await.unwrap();
        who.deliver_franked("bob", "same1", sessions, &content, &tf).await.unwrap();
    }
    assert_eq!(messages(&bob.receive(None).await.unwrap()), ["from alice", "from mallory"]);
    // Without the sender the id is ambiguous; with it, the right message is reported.
    let e = bob.report("same1", Some(0), "spam", false).await.unwrap_err();
    assert!(e.to_string().contains("several people"), "{e}");
    let id = bob.report_from(Some("mallory"), "same1", Some(0), "spam", false).await.unwrap();
    assert!(id > 0);
    let e = bob.report_from(Some("carol"), "same1", Some(0), "spam", false).await.unwrap_err();
    assert!(e.to_string().contains("no received message"), "{e}");
    srv.shutdown().await.unwrap();
}

/// Message ids are valid for the server, unique, and ordered by the time they were made
/// (the server's idempotency records append at the end of their index).
#[test]
fn message_ids_are_valid_unique_and_ordered_by_time() {
    let first = super::new_message_id();
    std::thread::sleep(Duration::from_millis(2));
    let later: Vec<String> = (0..100).map(|_| super::new_message_id()).collect();
    for id in std::iter::once(&first).chain(&later) {
        assert_eq!(id.len(), 32, "{id}");
        assert!(parley_api::validate_message_id(id), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
    }
    let distinct: std::collections::BTreeSet<&String> = later.iter().collect();
    assert_eq!(distinct.len(), later.len(), "two ids made in the same millisecond collided");
    let ms = u64::from_str_radix(&first[..12], 16).unwrap();
    assert!(ms.abs_diff(super::now_ms()) < 60_000, "the id does not begin with the time");
    assert!(later.iter().all(|id| *id > first), "an id made 2 ms later sorts before");
}
