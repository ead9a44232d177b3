//! The store conformance suite on the embedded SQLite backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::sync::Arc;

use parley_server::store::{Store, conformance, sqlite::SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("parley.db")).await.unwrap());
    let dynstore: Arc<dyn Store> = store.clone();
    conformance::run(dynstore, "t_").await.unwrap();
    store.close().await.unwrap();
    // Reopening runs no migration twice and keeps the data.
    let again = SqliteStore::open(&dir.path().join("parley.db")).await.unwrap();
    assert!(again.account_by_username("t_alice").await.unwrap().is_some());
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_cache_passes_the_conformance_suite_too() {
    // The server runs every backend behind `CachedStore`: one node must read its own writes.
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("parley.db")).await.unwrap());
    let cached: Arc<dyn Store> = Arc::new(parley_server::store::cached::CachedStore::new(
        inner,
        std::time::Duration::from_secs(3600),
    ));
    conformance::run(cached.clone(), "c_").await.unwrap();
    cached.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_floor_runs_the_servers_statements_and_checks_itself() {
    use parley_server::store::sqlite::floor::{FloorSpec, storage_floor};
    let dir = tempfile::tempdir().unwrap();
    let spec = FloorSpec {
        devices: 3,
        ops_per_commit: 2.5,
        messages_per_ack: 4.0,
        ciphertext_len: 300,
        duration: std::time::Duration::from_secs(30),
        max_messages: 200,
    };
    let run = storage_floor(&dir.path().join("floor.db"), spec).await.unwrap();
    assert!((200..205).contains(&run.messages), "{run:?}");
    // Transactions follow the requested mean size.
    assert!((run.ops_per_commit() - 2.5).abs() < 0.1, "{run:?}");
    assert!(run.messages_per_sec() > 0.0);
    // An existing database is refused (ids are predicted from a fresh one).
    assert!(storage_floor(&dir.path().join("floor.db"), spec).await.is_err());
}

/// akd's own storage test suite against the key-transparency adapter over SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_akds_storage_tests() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("kt.db")).await.unwrap());
    akd::storage::tests::run_test_cases_for_storage_impl(parley_server::kt::StoreDb::new(
        store.clone(),
    ))
    .await;
    store.close().await.unwrap();
}
