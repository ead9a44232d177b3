//! The client against a real in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use parley_client::{Client, ClientError, ClientOptions, Event};
use parley_server::{Config, Limits, RunningServer};

fn opts() -> ClientOptions {
    ClientOptions { insecure_test_kdf: true, ..ClientOptions::default() }
}

async fn server(data: &Path, listen: SocketAddr) -> RunningServer {
    let config = Config {
        data_dir: data.to_path_buf(),
        listen,
        limits: Limits {
            registrations_per_hour: 10_000,
            ip_rps: 10_000,
            ip_burst: 10_000,
            ..Limits::default()
        },
        ..Config::default()
    };
    parley_server::start(config).await.unwrap()
}

async fn account(dir: &Path, url: &str, name: &str) -> Client {
    Client::create_account(&dir.join(name), url, name, &format!("{name} passphrase"), &opts())
        .await
        .unwrap()
}

fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, text, .. } => Some((from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn conversation_in_order_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice").await;
    let mut bob = account(dir.path(), &url, "bob").await;

    let mut ids = Vec::new();
    for i in 0..20 {
        let r = alice.send("bob", &format!("message {i}")).await.unwrap();
        assert!(!r.queued);
        assert_eq!(r.id.len(), 32);
        ids.push(r.id);
    }
    let events = bob.receive(None).await.unwrap();
    let got = texts(&events);
    let want: Vec<(String, String)> =
        (0..20).map(|i| ("alice".to_string(), format!("message {i}"))).collect();
    assert_eq!(got, want);
    let got_ids: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(got_ids, ids.iter().collect::<Vec<_>>());
    // Everything was acked: nothing more.
    assert!(bob.receive(None).await.unwrap().is_empty());

    bob.send("alice", "hi alice").await.unwrap();
    let events = alice.receive(Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(texts(&events), vec![("bob".to_string(), "hi alice".to_string())]);

    let h = alice.history("bob").await.unwrap();
    assert_eq!(h.len(), 21);
    assert!(h[..20].iter().all(|e| e.outgoing && e.state == "sent"));
    assert_eq!(h[0].text.as_deref(), Some("message 0"));
    assert_eq!(h[20].text.as_deref(), Some("hi alice"));
    assert!(!h[20].outgoing);
    let h = bob.history("alice").await.unwrap();
    assert_eq!(h.len(), 21);
    assert_eq!(h[19].text.as_deref(), Some("message 19"));
    assert_eq!(h[20].text.as_deref(), Some("hi alice"));
    assert!(h[20].outgoing);

    // Contacts and safety numbers agree on both sides.
    let ca = alice.contacts().await.unwrap();
    assert_eq!(ca.len(), 1);
    assert_eq!(ca[0].username, "bob");
    assert_eq!(ca[0].messages, 21);
    let sa = alice.safety_number("bob").await.unwrap();
    let sb = bob.safety_number("alice").await.unwrap();
    assert_eq!(sa.digits(), sb.digits());
    assert_eq!(sa.digits().len(), 60);
    assert!(matches!(alice.safety_number("carol").await, Err(ClientError::UnknownContact(_))));

    let info = alice.account_info().await.unwrap();
    assert_eq!(info.username, "alice");
    assert_eq!(info.device_id, 1);
    assert_eq!(info.queued, Some(0));
    assert_eq!(info.outbox, 0);

    // A message to nobody is a clear error.
    assert!(matches!(alice.send("nobody", "x").await, Err(ClientError::NoSuchUser(_))));
    assert!(matches!(alice.send("alice", "x").await, Err(ClientError::SendToSelf)));

    // Wait: a message that arrives while waiting is received.
    let waiter = tokio::spawn(async move {
        let ev = bob.receive(Some(Duration::from_secs(10))).await.unwrap();
        (bob, ev)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send("bob", "late").await.unwrap();
    let (bob, ev) = waiter.await.unwrap();
    assert_eq!(texts(&ev), vec![("alice".to_string(), "late".to_string())]);

    alice.close().await;
    bob.close().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn passphrase_and_missing_account() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let alice = account(dir.path(), &srv.url(), "alice").await;
    alice.close().await;
    let db = dir.path().join("alice").join("parley.db");
    let before = std::fs::read(&db).unwrap();
    let err = Client::open(&dir.path().join("alice"), "wrong", None, &opts()).await.unwrap_err();
    assert!(matches!(err, ClientError::WrongPassphrase));
    assert_eq!(err.to_string(), "wrong passphrase");
    assert_eq!(std::fs::read(&db).unwrap(), before, "a wrong passphrase changes nothing");
    let alice =
        Client::open(&dir.path().join("alice"), "alice passphrase", None, &opts()).await.unwrap();
    assert_eq!(alice.username(), "alice");
    // One process per home.
    let busy = Client::open(&dir.path().join("alice"), "alice passphrase", None, &opts())
        .await
        .unwrap_err();
    assert!(matches!(busy, ClientError::Busy(_)), "{busy}");
    alice.close().await;

    // A second account in the same home is refused.
    let again =
        Client::create_account(&dir.path().join("alice"), &srv.url(), "alice2", "pw", &opts())
            .await
            .unwrap_err();
    assert!(matches!(again, ClientError::AccountExists(_)), "{again}");

    let err = Client::open(&dir.path().join("empty"), "pw", None, &opts()).await.unwrap_err();
    assert!(matches!(err, ClientError::NoAccount(_)));
    assert!(err.to_string().starts_with("no account in "), "{err}");
    assert!(!dir.path().join("empty").exists());

    // A taken username is refused and leaves no local store behind.
    let err = Client::create_account(&dir.path().join("other"), &srv.url(), "alice", "pw", &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Server { status: 409, .. }), "{err}");
    assert!(!dir.path().join("other").join("parley.db").exists());
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn outbox_survives_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice").await;
    let mut bob = account(dir.path(), &url, "bob").await;
    alice.send("bob", "before").await.unwrap();
    srv.shutdown().await.unwrap();

    let r = alice.send("bob", "while down").await.unwrap();
    assert!(r.queued);
    let r2 = alice.send("bob", "also while down").await.unwrap();
    assert!(r2.queued);
    assert!(matches!(bob.receive(None).await, Err(ClientError::Unreachable(_))));
    let err = alice.flush_outbox().await.unwrap_err();
    assert!(err.is_unreachable());
    assert_eq!(alice.account_info().await.unwrap().outbox, 2);
    assert_eq!(alice.account_info().await.unwrap().queued, None);
    // Not in history until the server acknowledged it.
    assert_eq!(alice.history("bob").await.unwrap().len(), 1);

    let lost = alice.send("nobody", "to nobody").await.unwrap();
    assert!(lost.queued);
    let srv = server(&data, addr).await;
    let flushed = alice.flush_outbox().await.unwrap();
    assert_eq!(flushed.delivered, [r.id.clone(), r2.id.clone()]);
    assert_eq!(flushed.failed.len(), 1);
    assert_eq!(flushed.failed[0].0, lost.id);
    assert!(matches!(flushed.failed[0].1, ClientError::NoSuchUser(_)));
    assert!(alice.flush_outbox().await.unwrap().delivered.is_empty());
    assert_eq!(alice.account_info().await.unwrap().outbox, 0);
    let failed = alice.history("nobody").await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, lost.id);
    assert_eq!(failed[0].state, "failed");
    let h = alice.history("bob").await.unwrap();
    let ids: Vec<&str> = h.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids[1..], [r.id.as_str(), r2.id.as_str()]);

    let events = bob.receive(None).await.unwrap();
    let got = texts(&events);
    assert_eq!(
        got,
        vec![
            ("alice".to_string(), "before".to_string()),
            ("alice".to_string(), "while down".to_string()),
            ("alice".to_string(), "also while down".to_string()),
        ]
    );
    assert!(bob.receive(None).await.unwrap().is_empty());
    alice.close().await;
    bob.close().await;
    srv.shutdown().await.unwrap();
}

async fn raw_db(path: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

#[tokio::test]
async fn identity_change_refuses_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice").await;
    let mut bob = account(dir.path(), &url, "bob").await;
    alice.send("bob", "hello").await.unwrap();
    assert_eq!(texts(&bob.receive(None).await.unwrap()).len(), 1);
    alice.close().await;

    // Someone else's key is pinned for bob.
    let other = parley_proto::AccountIdentity::generate(&mut rand::rng());
    let db = raw_db(&dir.path().join("alice").join("parley.db")).await;
    sqlx::query("UPDATE contacts SET account_key = ? WHERE username = 'bob'")
        .bind(&other.public().as_bytes()[..])
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let mut alice =
        Client::open(&dir.path().join("alice"), "alice passphrase", None, &opts()).await.unwrap();
    let err = alice.send("bob", "secret").await.unwrap_err();
    assert!(matches!(&err, ClientError::IdentityChanged(u) if u == "bob"), "{err}");
    alice.close().await;

    // Without a session, the fetched bundles' key is compared with the pin too.
    let db = raw_db(&dir.path().join("alice").join("parley.db")).await;
    sqlx::query("DELETE FROM sessions").execute(&db).await.unwrap();
    db.close().await;
    let mut alice =
        Client::open(&dir.path().join("alice"), "alice passphrase", None, &opts()).await.unwrap();
    let err = alice.send("bob", "secret").await.unwrap_err();
    assert!(matches!(&err, ClientError::IdentityChanged(u) if u == "bob"), "{err}");
    alice.close().await;
    let db = raw_db(&dir.path().join("alice").join("parley.db")).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'key_change'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.close().await;
    // Nothing reached bob.
    assert!(bob.receive(None).await.unwrap().is_empty());

    // After checking, alice accepts the key the server published: sending works again.
    let mut alice =
        Client::open(&dir.path().join("alice"), "alice passphrase", None, &opts()).await.unwrap();
    assert!(matches!(alice.accept_key_change("carol").await, Err(ClientError::UnknownContact(_))));
    alice.accept_key_change("bob").await.unwrap();
    assert!(!alice.send("bob", "after verification").await.unwrap().queued);
    assert_eq!(
        texts(&bob.receive(None).await.unwrap()),
        vec![("alice".to_string(), "after verification".to_string())]
    );
    assert_eq!(
        alice.safety_number("bob").await.unwrap().digits(),
        bob.safety_number("alice").await.unwrap().digits()
    );
    alice.close().await;
    bob.close().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_to_remote_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Client::create_account(
        &dir.path().join("a"),
        "http://example.invalid:7470",
        "alice",
        "pw",
        &opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::InsecureServer));
    assert_eq!(
        err.to_string(),
        "refusing plain HTTP to a non-loopback server; use https:// or --insecure-http"
    );
    assert!(!dir.path().join("a").join("parley.db").exists());

    // The same policy applies to a server override at open.
    let srv = server(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    account(dir.path(), &srv.url(), "alice").await.close().await;
    let err = Client::open(
        &dir.path().join("alice"),
        "alice passphrase",
        Some("http://192.0.2.1:7470".into()),
        &opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::InsecureServer));
    // Explicitly allowed: accepted (not contacted here).
    let insecure = ClientOptions { insecure_http: true, ..opts() };
    Client::open(
        &dir.path().join("alice"),
        "alice passphrase",
        Some("http://192.0.2.1:7470".into()),
        &insecure,
    )
    .await
    .unwrap()
    .close()
    .await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_and_wss_with_an_extra_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path),
        ..Config::default()
    };
    let srv = parley_server::start(config).await.unwrap();
    let url = format!("https://localhost:{}", srv.addr.port());

    // Without the CA the certificate is refused (and nothing is left behind).
    let err = Client::create_account(&dir.path().join("x"), &url, "xavier", "pw", &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    assert!(!err.is_unreachable());
    assert!(!dir.path().join("x").join("parley.db").exists());

    let tls = ClientOptions { ca_cert: Some(cert_path), ..opts() };
    let mut alice =
        Client::create_account(&dir.path().join("alice"), &url, "alice", "pw", &tls).await.unwrap();
    let mut bob =
        Client::create_account(&dir.path().join("bob"), &url, "bob", "pw", &tls).await.unwrap();
    alice.send("bob", "over tls").await.unwrap();
    assert_eq!(
        texts(&bob.receive(None).await.unwrap()),
        vec![("alice".to_string(), "over tls".to_string())]
    );

    // Deleting an account removes it on the server and wipes the local store.
    bob.delete_account().await.unwrap();
    assert!(!dir.path().join("bob").join("parley.db").exists());
    assert!(matches!(alice.send("bob", "gone?").await, Err(ClientError::NoSuchUser(_))));
    alice.close().await;
    srv.shutdown().await.unwrap();
}
