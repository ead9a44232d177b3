//! The store conformance suite on PostgreSQL. Runs when `PARLEY_TEST_POSTGRES_URL` is set (CI
//! sets it and starts the machine's PostgreSQL); otherwise it reports itself as skipped, and
//! under `PARLEY_REQUIRE_ALL=1` a skip is a failure. Each run uses a fresh schema in the given
//! database and drops it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;

use parley_server::store::postgres::PgStore;
use parley_server::store::{Store, conformance};
use sqlx::postgres::PgConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let Ok(url) = std::env::var("PARLEY_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("PARLEY_REQUIRE_ALL").is_none(),
            "PARLEY_TEST_POSTGRES_URL is not set and PARLEY_REQUIRE_ALL is set"
        );
        eprintln!(
            "skipped: set PARLEY_TEST_POSTGRES_URL=postgres://... to run the PostgreSQL conformance suite"
        );
        return;
    };
    let schema = format!("parley_test_{}_{}", std::process::id(), rand::random::<u32>());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let options: PgConnectOptions =
        url.parse::<PgConnectOptions>().unwrap().options([("search_path", schema.as_str())]);
    let store = Arc::new(PgStore::open(options.clone()).await.unwrap());
    let dynstore: Arc<dyn Store> = store.clone();
    let result = conformance::run(dynstore.clone(), "t_").await;
    // akd's own storage test suite against the key-transparency adapter (same schema).
    if result.is_ok() {
        akd::storage::tests::run_test_cases_for_storage_impl(parley_server::kt::StoreDb::new(
            dynstore,
        ))
        .await;
    }
    store.close().await.unwrap();
    // Reopening runs no migration twice and keeps the data.
    if result.is_ok() {
        let again = PgStore::open(options).await.unwrap();
        assert!(again.account_by_username("t_alice").await.unwrap().is_some());
        again.close().await.unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
    result.unwrap();
}
