//! Shared key material (docs/OPERATIONS.md §10, `secrets.rs`) on the embedded SQLite store, so
//! it runs everywhere: with a master key the admin token and the franking keyring live in the
//! database, sealed; a single node's files are imported on the first start with a master key;
//! a wrong master key, a conflicting local admin token, or `--nats` without a master key are
//! refused at start. (Two nodes on PostgreSQL: crates/parley-cli/tests/multinode.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parley_server::franking::Keyring;
use parley_server::secrets::{ADMIN_TOKEN, FRANKING_KEYRING, MasterKey, Vault};
use parley_server::store::Store;
use parley_server::store::sqlite::SqliteStore;
use parley_server::{Config, ServerError};

fn config(data: &Path, key: Option<PathBuf>) -> Config {
    Config {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        master_key_file: key,
        ..Config::default()
    }
}

fn key_file(dir: &Path, name: &str, key: &MasterKey) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, key.to_base64().as_bytes()).unwrap();
    path
}

/// The secret `name` as stored (sealed) and opened with `key`.
async fn stored(data: &Path, key: &MasterKey, name: &str) -> (Vec<u8>, Vec<u8>) {
    let store = Arc::new(SqliteStore::open(&data.join("parley.db")).await.unwrap());
    let raw = store.secret(name).await.unwrap().expect("secret stored").value;
    let dynstore: Arc<dyn Store> = store.clone();
    let opened = Vault::new(dynstore, key.clone()).load(name).await.unwrap().unwrap();
    store.close().await.unwrap();
    (raw, opened.value.to_vec())
}

#[tokio::test]
async fn a_master_key_moves_key_material_into_the_database_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = MasterKey::generate();
    let kf = key_file(dir.path(), "master.key", &key);

    let s = parley_server::start(config(&data, Some(kf.clone()))).await.unwrap();
    assert!(s.admin_token_created, "the node writes the cluster's token to its data folder");
    s.shutdown().await.unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert!(!data.join("franking").exists(), "franking keys went to files, not the database");

    // Sealed in the database: the token is not there in clear, and opens only with the key.
    let (raw, opened) = stored(&data, &key, ADMIN_TOKEN).await;
    assert_eq!(opened, token.trim().as_bytes());
    assert!(!raw.windows(opened.len()).any(|w| w == opened.as_slice()), "token stored in clear");
    let (raw_ring, ring) = stored(&data, &key, FRANKING_KEYRING).await;
    let ring = Keyring::from_secret(&ring, 100).unwrap();
    assert_eq!(ring.active_kid(), 1);
    assert!(raw_ring.len() > 52, "keyring not stored");

    // Restart: the same token, no new file.
    let s = parley_server::start(config(&data, Some(kf))).await.unwrap();
    assert!(!s.admin_token_created);
    s.shutdown().await.unwrap();

    // Another master key does not open it: refused at start, with the reason.
    let wrong = key_file(dir.path(), "wrong.key", &MasterKey::generate());
    let err = parley_server::start(config(&data, Some(wrong))).await.unwrap_err();
    assert!(matches!(err, ServerError::Secrets(_)), "{err:?}");
    assert!(err.to_string().contains("does not open with this master key"), "{err}");

    // A local admin token that differs from the database's is refused.
    let kf = key_file(dir.path(), "master.key", &key);
    std::fs::write(data.join("admin.token"), "not-the-cluster-token\n").unwrap();
    let err = parley_server::start(config(&data, Some(kf))).await.unwrap_err();
    assert!(err.to_string().contains("differs from the cluster's admin token"), "{err}");

    // A malformed master key file is refused.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "too short").unwrap();
    let err = parley_server::start(config(&data, Some(bad))).await.unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");
}

#[tokio::test]
async fn a_single_node_keeps_its_keys_when_it_gets_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Files first (the default).
    let s = parley_server::start(config(&data, None)).await.unwrap();
    s.shutdown().await.unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let files = Keyring::open_existing(&data, 100).unwrap().unwrap();

    // Then with a master key: both are imported as they are.
    let key = MasterKey::generate();
    let kf = key_file(dir.path(), "master.key", &key);
    let s = parley_server::start(config(&data, Some(kf))).await.unwrap();
    assert!(!s.admin_token_created);
    s.shutdown().await.unwrap();
    let (_, opened) = stored(&data, &key, ADMIN_TOKEN).await;
    assert_eq!(opened, token.trim().as_bytes());
    let (_, ring) = stored(&data, &key, FRANKING_KEYRING).await;
    assert_eq!(ring.as_slice(), &files.to_secret()[..], "the file keyring was not imported");
}

#[tokio::test]
async fn nats_needs_a_database_and_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = config(&data, None);
    c.nats = Some("nats://127.0.0.1:4222".into());
    let err = parley_server::start(c.clone()).await.unwrap_err();
    assert!(err.to_string().contains("--nats needs --database"), "{err}");
    c.database = Some("postgres://nobody@127.0.0.1:1/none".into());
    let err = parley_server::start(c).await.unwrap_err();
    assert!(err.to_string().contains("--nats needs a master key"), "{err}");
}

/// Key-transparency keys with a master key: a single node's `DATA/kt/` files become the
/// cluster's (the VRF key of an existing directory never changes), and a node whose files differ
/// from the cluster's refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_transparency_keys_are_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A single node first: its KT keys are files.
    let s = parley_server::start(config(&data, None)).await.unwrap();
    s.shutdown().await.unwrap();
    let local = parley_server::kt::existing_keys(&data).unwrap().unwrap().to_secret();
    // With a master key, they are imported, sealed, and used.
    let key = MasterKey::generate();
    let kf = key_file(dir.path(), "master.key", &key);
    let s = parley_server::start(config(&data, Some(kf.clone()))).await.unwrap();
    s.shutdown().await.unwrap();
    let (raw, opened) = stored(&data, &key, parley_server::secrets::KT_KEYS).await;
    assert_eq!(opened, local.to_vec());
    assert!(raw.windows(16).all(|w| !local.windows(16).any(|l| l == w)), "stored in clear");
    // A node with other KT files is refused.
    let kt = data.join("kt");
    std::fs::remove_dir_all(&kt).unwrap();
    std::fs::create_dir_all(&kt).unwrap();
    std::fs::write(kt.join("vrf.key"), [7u8; 32]).unwrap();
    std::fs::write(kt.join("signing.key"), [8u8; 32]).unwrap();
    let e = parley_server::start(config(&data, Some(kf))).await.unwrap_err();
    assert!(e.to_string().contains("other key-transparency keys"), "{e}");
}

/// One publisher of epochs in a cluster: the lease goes to one node, is renewed by it, and
/// passes to another only once it has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_holds_the_publisher_lease() {
    use parley_server::kt::publisher_lease;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("parley.db")).await.unwrap());
    let key = MasterKey::generate();
    let (a, b) = (Vault::new(store.clone(), key.clone()), Vault::new(store.clone(), key.clone()));
    let (na, nb) = ([1u8; 16], [2u8; 16]);
    assert!(publisher_lease(&a, &na, 1_000, 60_000).await.unwrap());
    assert!(!publisher_lease(&b, &nb, 2_000, 60_000).await.unwrap());
    // The holder renews.
    assert!(publisher_lease(&a, &na, 50_000, 60_000).await.unwrap());
    assert!(!publisher_lease(&b, &nb, 100_000, 60_000).await.unwrap());
    // Expired (not renewed since 50 s + 60 s): another node takes it, and the first one is out.
    assert!(publisher_lease(&b, &nb, 110_001, 60_000).await.unwrap());
    assert!(!publisher_lease(&a, &na, 110_002, 60_000).await.unwrap());
    // Nodes racing for an expired lease: exactly one wins.
    let mut tasks = Vec::new();
    for i in 3..11u8 {
        let v = Vault::new(store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            publisher_lease(&v, &[i; 16], 1_000_000, 60_000).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
    store.close().await.unwrap();
}
