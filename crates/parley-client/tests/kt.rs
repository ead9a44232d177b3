//! Key transparency end to end against a real in-process server (docs/KT.md): an operator
//! who swaps a user's key in the database is caught by the other user's client; a rolled-back
//! directory is refused; a user whose key was changed by someone else is alarmed at the next
//! start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;

use parley_client::{Client, ClientError, ClientOptions, Event, KtStatus};
use parley_server::{Config, Limits, RunningServer};

fn opts() -> ClientOptions {
    ClientOptions { insecure_test_kdf: true, ..ClientOptions::default() }
}

/// A server that publishes epochs only when told to (the interval is an hour).
async fn server(data: &Path, listen: SocketAddr) -> RunningServer {
    let config = Config {
        data_dir: data.to_path_buf(),
        listen,
        limits: Limits {
            registrations_per_hour: 10_000,
            ip_rps: 10_000,
            ip_burst: 10_000,
            kt_epoch_interval_secs: 3600,
            ..Limits::default()
        },
        ..Config::default()
    };
    parley_server::start(config).await.unwrap()
}

/// `POST /v1/admin/kt/publish`; returns (epoch, updates).
async fn publish(srv: &RunningServer) -> (u64, u64) {
    let token = std::fs::read_to_string(&srv.admin_token_path).unwrap();
    let r: parley_api::KtPublishResponse = reqwest::Client::new()
        .post(format!("{}/v1/admin/kt/publish", srv.url()))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    (r.root.epoch, r.updates)
}

async fn account(dir: &Path, url: &str, name: &str) -> Client {
    Client::create_account(&dir.join(name), url, name, &format!("{name} passphrase"), &opts())
        .await
        .unwrap()
}

async fn reopen(dir: &Path, name: &str, url: Option<String>) -> Client {
    Client::open(&dir.join(name), &format!("{name} passphrase"), url, &opts()).await.unwrap()
}

async fn server_db(data: &Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data.join("parley.db"))
                .busy_timeout(std::time::Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn pending_until_published_then_verified() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice").await;
    let mut bob = account(dir.path(), &url, "bob").await;
    // Nobody is in the directory yet: bob's key is used, as pending.
    assert!(!alice.send("bob", "before the epoch").await.unwrap().queued);
    assert_eq!(alice.kt_status("bob").await.unwrap(), Some(KtStatus::Pending));
    let r = alice.kt_verify("bob").await.unwrap();
    assert_eq!((r.status, r.epoch), (KtStatus::Pending, None));

    assert_eq!(publish(&srv).await, (1, 2));
    // Nothing new: no new epoch.
    assert_eq!(publish(&srv).await, (1, 0));
    // The pending key is verified at the next operation that reaches the server.
    assert!(!alice.send("bob", "after the epoch").await.unwrap().queued);
    assert_eq!(alice.kt_status("bob").await.unwrap(), Some(KtStatus::Verified));
    let r = alice.kt_verify("bob").await.unwrap();
    assert_eq!((r.status, r.epoch), (KtStatus::Verified, Some(1)));
    assert_eq!(alice.kt_last_root().await.unwrap().map(|(e, _)| e), Some(1));
    // bob, receiving, checks the sender and himself.
    let events = bob.receive(None).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(bob.kt_status("alice").await.unwrap(), Some(KtStatus::Verified));
    assert_eq!(bob.kt_status("bob").await.unwrap(), Some(KtStatus::Verified));
    assert!(bob.kt_alarms().await.unwrap().is_empty());
    alice.close().await;
    bob.close().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn operator_key_swap_in_the_database_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let url = srv.url();
    let alice = account(dir.path(), &url, "alice").await;
    let bob = account(dir.path(), &url, "bob").await;
    let mut mallory = account(dir.path(), &url, "mallory").await;
    assert_eq!(publish(&srv).await, (1, 3));
    bob.close().await;

    // The operator (or whoever holds the database) gives "bob" mallory's identity key, device
    // list and devices, straight in the server's SQLite database, without telling the
    // directory. (The server is restarted around the edit so no cache of it can hide it.)
    let addr = srv.addr;
    srv.shutdown().await.unwrap();
    let db = server_db(&data).await;
    for q in [
        "UPDATE accounts SET username = 'bob_tmp' WHERE username = 'bob'",
        "UPDATE accounts SET username = 'bob' WHERE username = 'mallory'",
        "UPDATE accounts SET username = 'mallory' WHERE username = 'bob_tmp'",
    ] {
        sqlx::query(q).execute(&db).await.unwrap();
    }
    db.close().await;
    let srv = server(&data, addr).await;

    // alice has never talked to bob: no pinned key to compare with. Key transparency catches
    // the swap before anything is encrypted.
    let mut alice = alice;
    let err = alice.send("bob", "for bob only").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::KtMismatch { user, .. } if user == "bob"),
        "unexpected: {err}"
    );
    assert!(err.to_string().contains("key transparency alarm"), "{err}");
    assert_eq!(alice.kt_status("bob").await.unwrap(), Some(KtStatus::Mismatch));
    let alarms = alice.kt_alarms().await.unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].user, "bob");
    // Sends stay blocked, without another lookup.
    let again = alice.send("bob", "again").await.unwrap_err();
    assert!(matches!(again, ClientError::KtMismatch { .. }), "{again}");
    // The substitute received nothing.
    let got = mallory.receive(None).await.unwrap();
    assert!(!got.iter().any(|e| matches!(e, Event::Message { .. })), "{got:?}");
    // `verify` reports the mismatch too.
    let r = alice.kt_verify("bob").await.unwrap();
    assert_eq!(r.status, KtStatus::Mismatch);
    assert!(r.reason.unwrap().contains("not the ones in the key directory"));
    alice.close().await;
    mallory.close().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rolled_back_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice").await;
    let bob = account(dir.path(), &url, "bob").await;
    bob.close().await;
    assert_eq!(publish(&srv).await.0, 1);
    alice.send("bob", "hello").await.unwrap();
    assert_eq!(alice.kt_verify("bob").await.unwrap().epoch, Some(1));
    alice.close().await;

    // A copy of the server as it is at epoch 1.
    srv.shutdown().await.unwrap();
    let backup = dir.path().join("backup");
    copy_dir(&data, &backup);
    let srv = server(&data, addr).await;
    let carol = account(dir.path(), &url, "carol").await;
    carol.close().await;
    assert_eq!(publish(&srv).await.0, 2);
    let alice = reopen(dir.path(), "alice", None).await;
    assert_eq!(alice.kt_verify("bob").await.unwrap().epoch, Some(2));
    let (_, root2) = alice.kt_last_root().await.unwrap().unwrap();
    alice.close().await;

    // The server comes back from the epoch-1 copy.
    srv.shutdown().await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let srv = server(&data, addr).await;
    let alice = reopen(dir.path(), "alice", None).await;
    let err = alice.kt_verify("bob").await.unwrap_err();
    assert!(matches!(err, ClientError::KtRollback { have: 2, got: 1 }), "unexpected: {err}");
    // The older root was not taken, and the alarm stands.
    assert_eq!(alice.kt_last_root().await.unwrap(), Some((2, root2)));
    assert!(alice.kt_alarms().await.unwrap().iter().any(|a| a.reason.contains("rollback")));
    alice.close().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_changed_by_someone_else_alarms_its_owner_at_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let url = srv.url();
    let bob = account(dir.path(), &url, "bob").await;
    let mallory = account(dir.path(), &url, "mallory").await;
    mallory.close().await;
    publish(&srv).await;
    bob.close().await;
    let bob = reopen(dir.path(), "bob", None).await;
    assert_eq!(bob.kt_status("bob").await.unwrap(), Some(KtStatus::Verified));
    assert!(bob.kt_alarms().await.unwrap().is_empty());
    bob.close().await;

    // Someone with the database gives bob's account mallory's keys and has the directory
    // publish them (as an operator serving a substitute key consistently would have to).
    let addr = srv.addr;
    srv.shutdown().await.unwrap();
    let db = server_db(&data).await;
    sqlx::query(
        "UPDATE accounts SET (account_key, device_list) = \
         (SELECT account_key, device_list FROM accounts WHERE username = 'mallory') \
         WHERE username = 'bob'",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO kt_dirty (username) VALUES ('bob')").execute(&db).await.unwrap();
    db.close().await;
    let srv = server(&data, addr).await;
    // The server also publishes when it starts: that epoch or ours is epoch 2, with bob's
    // substituted key (then ours finds nothing left to publish).
    let (epoch, updates) = publish(&srv).await;
    assert_eq!(epoch, 2);
    assert!(updates <= 1);

    // At his next start bob's client finds a version of his key he never made.
    let bob = reopen(dir.path(), "bob", None).await;
    assert_eq!(bob.kt_status("bob").await.unwrap(), Some(KtStatus::Mismatch));
    let alarms = bob.kt_alarms().await.unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].user, "bob");
    assert!(alarms[0].reason.contains("not made by this account"), "{}", alarms[0].reason);
    bob.close().await;
    srv.shutdown().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
