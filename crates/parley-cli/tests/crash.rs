//! Crash test: `parley server` is killed with SIGKILL while clients send in a loop. Every send
//! the server acknowledged is delivered after the restart, exactly once after deduplication by
//! message id, in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)] // test code

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{free_port, register, spawn_server_with};
use parley_api::{Bytes, FetchResponse, OutgoingEnvelope, RegisterResponse, SendRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    // One account sends 600 messages as fast as it can: lift its send limits.
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[limits]\naccount_sends_per_sec = 10000\naccount_send_burst = 10000\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let data = dir.path().join("data");
    let mut server = spawn_server_with(&data, port, &["--config", &config]);
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let r: RegisterResponse = http
            .post(format!("{base}/v1/accounts"))
            .json(&register(name))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r.token);
    }
    let (alice, bob) = (tokens[0].clone(), tokens[1].clone());

    // Four concurrent senders, each with its own sequence of message ids.
    let total_per_sender = 150usize;
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for sender in 0..4 {
        let (http, base, alice) = (http.clone(), base.clone(), alice.clone());
        let (acks, failures) = (acks.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while i < total_per_sender && Instant::now() < deadline {
                let id = format!("s{sender}-{i:04}");
                let req = SendRequest {
                    recipient: "bob".into(),
                    message_id: id.clone(),
                    envelopes: vec![OutgoingEnvelope {
                        device_id: 1,
                        ciphertext: Bytes(id.as_bytes().to_vec()),
                    }],
                    franking_tag: Bytes(vec![0; 32]),
                };
                match http
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&alice)
                    .json(&req)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acked.push(id);
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        i += 1;
                    }
                    // Not acknowledged (server down): retry the same id, as a client's outbox does.
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                }
            }
            acked
        }));
    }

    // Kill the server hard mid-stream (after 200 acknowledged sends), then bring it back on the
    // same data folder.
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap(); // SIGKILL
    let acked_before_kill = acks.load(std::sync::atomic::Ordering::SeqCst);
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = spawn_server_with(&data, port, &["--config", &config]);

    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    assert!(acked.iter().all(|a| a.len() == total_per_sender), "senders did not finish");
    assert!(acked_before_kill < 4 * total_per_sender, "the kill came after the senders finished");
    assert!(
        failures.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no send was interrupted by the kill"
    );

    // Bob drains his queue over REST.
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let page: FetchResponse = http
            .get(format!("{base}/v1/messages?after={after}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(last) = page.envelopes.last() {
            after = last.id;
        }
        got.extend(page.envelopes.into_iter().map(|e| e.message_id));
        if !page.more {
            break;
        }
    }
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a message was stored twice despite its id");
    for (sender, ids) in acked.iter().enumerate() {
        for id in ids {
            assert!(unique.contains(id), "acknowledged message {id} was lost");
        }
        // In order per sender.
        let mine: Vec<&String> =
            got.iter().filter(|g| g.starts_with(&format!("s{sender}-"))).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "sender {sender} out of order");
    }
    // SIGTERM is a graceful shutdown: the process exits 0 promptly.
    let pid = server.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful shutdown exited with {status}");
}
