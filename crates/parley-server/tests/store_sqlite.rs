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
