//! Key-transparency endpoints and keys (docs/KT.md §1–§4): signed roots, the key files, the
//! not-yet-published answer, bad ranges and authentication, and a damaged key file refused at
//! start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{User, start, test_limits};
use parley_api::{ErrorBody, KtAuditResponse, KtProofResponse, KtPublishResponse, KtRoot};
use parley_server::{Config, Limits};

fn slow() -> Limits {
    Limits { kt_epoch_interval_secs: 3600, ..test_limits() }
}

fn check_root(r: &KtRoot) {
    let key: [u8; 32] = r.signing_key.as_slice().try_into().unwrap();
    let root: [u8; 32] = r.root.root.as_slice().try_into().unwrap();
    let sig: [u8; 64] = r.root.signature.as_slice().try_into().unwrap();
    parley_proto::verify_root_signature(&key, r.root.epoch, &root, &sig).unwrap();
}

#[tokio::test]
async fn signed_roots_lookups_audits_and_bad_input() {
    let s = start(slow()).await;
    let root: KtRoot =
        s.http.get(format!("{}/v1/kt/root", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(root.root.epoch, 0);
    check_root(&root);
    assert_eq!(root.vrf_public_key.as_slice().len(), 32);

    let alice = User::register(&s, "alice", 2).await;
    let _bob = User::register(&s, "bob", 2).await;
    // No authentication, no lookup.
    let r = s.http.get(format!("{}/v1/kt/lookup/bob", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Registered after the latest epoch: not published yet, with its own code.
    let r = alice.get(&s, "/v1/kt/lookup/bob").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<ErrorBody>().await.unwrap().error, "not_published");
    let r = alice.get(&s, "/v1/kt/history").send().await.unwrap();
    assert_eq!(r.json::<ErrorBody>().await.unwrap().error, "not_published");
    let r = alice.get(&s, "/v1/kt/lookup/nobody").send().await.unwrap();
    assert_eq!(r.json::<ErrorBody>().await.unwrap().error, "not_found");
    let r = alice.get(&s, "/v1/kt/lookup/NOT%20A%20NAME").send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Publishing needs the admin token.
    let r = s.http.post(format!("{}/v1/admin/kt/publish", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let token = std::fs::read_to_string(&s.running.admin_token_path).unwrap();
    let publish = || async {
        s.http
            .post(format!("{}/v1/admin/kt/publish", s.url))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json::<KtPublishResponse>()
            .await
            .unwrap()
    };
    let p = publish().await;
    assert_eq!((p.root.epoch, p.updates), (1, 2));
    let root: KtRoot =
        s.http.get(format!("{}/v1/kt/root", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(root.root, p.root);
    check_root(&root);

    let l: KtProofResponse =
        alice.get(&s, "/v1/kt/lookup/bob").send().await.unwrap().json().await.unwrap();
    assert_eq!((l.username.as_str(), l.root.epoch), ("bob", 1));
    assert!(!l.proof.as_slice().is_empty());
    assert_eq!(l.account_key.as_slice().len(), 32);
    let h: KtProofResponse =
        alice.get(&s, "/v1/kt/history").send().await.unwrap().json().await.unwrap();
    assert_eq!(h.username, "alice");

    let a: KtAuditResponse = s
        .http
        .get(format!("{}/v1/kt/audit?start=0&end=1", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a.roots.iter().map(|r| r.epoch).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(a.roots[1], p.root);
    for q in ["start=1&end=1", "start=1&end=0", "start=0&end=2", "start=x&end=1", "start=0"] {
        let r = s.http.get(format!("{}/v1/kt/audit?{q}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    s.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_are_created_once_private_and_kept() {
    let s = start(slow()).await;
    let data = s.dir.path().join("data");
    let root: KtRoot =
        s.http.get(format!("{}/v1/kt/root", s.url)).send().await.unwrap().json().await.unwrap();
    let kt = data.join("kt");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&kt).unwrap().permissions().mode() & 0o777, 0o700);
        for f in ["vrf.key", "signing.key"] {
            let m = std::fs::metadata(kt.join(f)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
            assert_eq!(m.len(), 32, "{f}");
        }
    }
    s.running.shutdown().await.unwrap();
    // A restart loads the same keys: same directory, same signer.
    let config = Config {
        data_dir: data.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: slow(),
        ..Config::default()
    };
    let again = parley_server::start(config.clone()).await.unwrap();
    let root2: KtRoot =
        reqwest::get(format!("{}/v1/kt/root", again.url())).await.unwrap().json().await.unwrap();
    assert_eq!(root2, root);
    again.shutdown().await.unwrap();
    // A damaged key file stops the start with a clear error, never a new key.
    std::fs::write(kt.join("vrf.key"), b"short").unwrap();
    let err = parley_server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("vrf.key") && err.contains("damaged"), "{err}");
}
