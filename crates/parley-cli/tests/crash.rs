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

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parley_api::{
    Bytes, DeviceUpload, FetchResponse, OutgoingEnvelope, RegisterRequest, RegisterResponse,
    SendRequest,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_server(data: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PARLEY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the server exited before listening");
        }
        if line.starts_with("listening on http://") {
            return child;
        }
    }
    panic!("the server did not print its listening line");
}

fn register(name: &str) -> RegisterRequest {
    let mut rng = rand::rng();
    let account = parley_proto::AccountIdentity::generate(&mut rng);
    let device = parley_proto::DeviceIdentity::generate(&mut rng);
    let cert = account.certify(1, device.public());
    let list = account.sign_device_list(1, vec![(1, device.public().clone())]).unwrap();
    let mut store = parley_proto::PrekeyStore::new();
    let spk = store.generate_signed_prekey(&mut rng, 1, &device).unwrap();
    let lr = store.generate_last_resort_kem(&mut rng, 1, &device).unwrap();
    RegisterRequest {
        username: name.into(),
        account_key: Bytes(account.public().as_bytes().to_vec()),
        device_list: Bytes(list.encode()),
        device: DeviceUpload {
            certificate: Bytes(cert.encode()),
            signed_prekey: Bytes(spk.encode()),
            last_resort_kem: Bytes(lr.encode()),
            one_time_prekeys: vec![],
            one_time_kem_prekeys: vec![],
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut server = spawn_server(dir.path(), port);
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
    let mut server = spawn_server(dir.path(), port);

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
    server.kill().unwrap();
    server.wait().unwrap();
}
