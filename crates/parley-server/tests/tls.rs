//! HTTPS with rustls: a self-signed certificate, a client that trusts it, and no plain HTTP on
//! the TLS port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use parley_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..Config::default()
    };
    let running = parley_server::start(config).await.unwrap();
    assert!(running.url().starts_with("https://"));
    let port = running.addr.port();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = trusting.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A client that does not trust the certificate refuses it; plain HTTP gets nowhere.
    assert!(
        reqwest::Client::new()
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    running.shutdown().await.unwrap();

    // A missing key file is one clear error.
    let config = Config {
        data_dir: dir.path().join("data2"),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("missing.pem")),
        ..Config::default()
    };
    let err = parley_server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("TLS"), "{err}");
}
