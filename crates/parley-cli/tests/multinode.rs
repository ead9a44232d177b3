//! Two `parley server` nodes on one PostgreSQL database and a three-node NATS cluster, all
//! started here on loopback ports (docs/OPERATIONS.md "Several nodes"):
//!
//! 1. both nodes share the admin token and the franking keys (a rotation on node A reaches
//!    node B);
//! 2. alice on node A and bob on node B chat in real time (wake-ups cross over NATS);
//! 3. a device that connects on node A closes its connection on node B;
//! 4. one NATS node is killed (SIGKILL): delivery continues;
//! 5. node B is killed (SIGKILL) while alice's messages stream to bob: bob, reconnecting to
//!    node A, gets every message the server acknowledged, exactly once after deduplication by
//!    message id, in order, and the queue ends empty.
//!
//! Runs when `PARLEY_TEST_POSTGRES_URL` is set and `nats-server` is installed (CI provides
//! both); otherwise it reports itself as skipped, and under `PARLEY_REQUIRE_ALL=1` a skip is a
//! failure. The database gets a fresh schema, dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)] // test code

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, free_port, register, spawn_server_with};
use futures_util::{SinkExt, StreamExt};
use parley_api::{
    Bytes, Envelope, FetchResponse, OutgoingEnvelope, RegisterResponse, SendRequest, ServerFrame,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Generous bound for anything to arrive: a liveness limit, not a timing assertion (a lost
/// wake-up is recovered by the 20 s poll configured below).
const PATIENCE: Duration = Duration::from_secs(90);

fn skip_or_fail(what: &str) {
    assert!(
        std::env::var_os("PARLEY_REQUIRE_ALL").is_none(),
        "{what} and PARLEY_REQUIRE_ALL is set"
    );
    eprintln!("skipped: {what}");
}

fn find_nats_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PARLEY_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

struct NatsNode {
    _proc: Proc,
    port: u16,
    monitor: u16,
}

fn start_nats_cluster(bin: &Path, dir: &Path) -> Vec<NatsNode> {
    let ports: Vec<(u16, u16, u16)> =
        (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
    let nodes: Vec<NatsNode> = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, cluster, monitor))| {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{}", p.1))
                .collect();
            let log = std::fs::File::create(dir.join(format!("nats{i}.log"))).unwrap();
            let child = Command::new(bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string()])
                .args(["--cluster_name", "parley-test", "--name", &format!("n{i}")])
                .args(["-cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["-routes", &routes.join(",")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            NatsNode { _proc: Proc(child), port, monitor }
        })
        .collect();
    nodes
}

/// A user of the `parley` command line.
struct CliUser {
    home: PathBuf,
    pass: PathBuf,
}

impl CliUser {
    fn new(dir: &Path, name: &str) -> Self {
        let pass = dir.join(format!("{name}.pass"));
        std::fs::write(&pass, format!("passphrase of {name}\n")).unwrap();
        Self { home: dir.join(name), pass }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["--home", self.home.to_str().unwrap()])
            .args(["--passphrase-file", self.pass.to_str().unwrap()])
            .args(args)
            .env("PARLEY_INSECURE_TEST_KDF", "1")
            .env_remove("PARLEY_SERVER")
            .env_remove("PARLEY_HOME")
            .env_remove("PARLEY_PASSPHRASE")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(0), "parley {args:?}: {o:?}");
        o
    }
}

async fn json_get(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Waits until every NATS node has routes to the two others.
async fn wait_cluster(http: &reqwest::Client, nodes: &[NatsNode]) {
    let deadline = Instant::now() + PATIENCE;
    for n in nodes {
        loop {
            let url = format!("http://127.0.0.1:{}/routez", n.monitor);
            if let Some(v) = json_get(http, &url).await
                && v["num_routes"].as_u64().unwrap_or(0) >= 2
            {
                break;
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Clients connected to a NATS node whose name starts with `parley-`.
async fn parley_clients(http: &reqwest::Client, n: &NatsNode) -> usize {
    let url = format!("http://127.0.0.1:{}/connz", n.monitor);
    let Some(v) = json_get(http, &url).await else { return 0 };
    v["connections"]
        .as_array()
        .map(|c| {
            c.iter().filter(|c| c["name"].as_str().unwrap_or("").starts_with("parley-")).count()
        })
        .unwrap_or(0)
}

async fn connect(base: &str, token: &str) -> Ws {
    let url = base.replacen("http", "ws", 1) + "/v1/ws";
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next server frame; `None` when the connection ends or nothing comes within `PATIENCE`.
async fn next_frame(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next()).await.ok()??.ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// The next frame that is not `drained` (one follows every batch of envelopes).
async fn next_not_drained(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        match next_frame(ws).await? {
            ServerFrame::Drained => continue,
            other => return Some(other),
        }
    }
}

/// The next envelope (skipping `drained`), acked at once.
async fn next_envelope(ws: &mut Ws) -> Option<Envelope> {
    loop {
        match next_frame(ws).await? {
            ServerFrame::Envelope(e) => {
                ack(ws, &[e.id]).await;
                return Some(e);
            }
            ServerFrame::Drained => continue,
            other => panic!("unexpected frame: {other:?}"),
        }
    }
}

async fn ack(ws: &mut Ws, ids: &[u64]) {
    let frame = serde_json::json!({"type": "ack", "ids": ids});
    let _ = ws.send(Message::Text(frame.to_string().into())).await;
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    to: &str,
    id: &str,
) -> Result<(), String> {
    let req = SendRequest {
        recipient: to.into(),
        message_id: id.into(),
        envelopes: vec![OutgoingEnvelope {
            device_id: 1,
            ciphertext: Bytes(id.as_bytes().to_vec()),
        }],
        franking_tag: Bytes(vec![0; 32]),
    };
    let r = http
        .post(format!("{base}/v1/messages"))
        .bearer_auth(token)
        .json(&req)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() { Ok(()) } else { Err(r.status().to_string()) }
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One message each way, each waited for on the other side.
async fn exchange(
    http: &reqwest::Client,
    (a_url, alice, alice_ws): (&str, &str, &mut Ws),
    (b_url, bob, bob_ws): (&str, &str, &mut Ws),
    id: &str,
) {
    let to_bob = format!("{id}-to-bob");
    send(http, a_url, alice, "bob", &to_bob).await.unwrap();
    let got = next_envelope(bob_ws).await.expect("bob got nothing");
    assert_eq!(got.message_id, to_bob);
    let to_alice = format!("{id}-to-alice");
    send(http, b_url, bob, "alice", &to_alice).await.unwrap();
    let got = next_envelope(alice_ws).await.expect("alice got nothing");
    assert_eq!(got.message_id, to_alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_one_database_three_nats_nodes() {
    let Ok(pg_url) = std::env::var("PARLEY_TEST_POSTGRES_URL") else {
        return skip_or_fail("PARLEY_TEST_POSTGRES_URL is not set");
    };
    let Some(nats_bin) = find_nats_server() else {
        return skip_or_fail("nats-server is not installed (or set PARLEY_NATS_SERVER)");
    };
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // A fresh schema in the given database.
    let schema = format!("parley_mn_{}_{}", std::process::id(), rand::random::<u32>());
    let admin_db = sqlx::PgPool::connect(&pg_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin_db)
        .await
        .unwrap();
    let sep = if pg_url.contains('?') { '&' } else { '?' };
    let db_url = format!("{pg_url}{sep}options[search_path]={schema}");

    let nats = start_nats_cluster(&nats_bin, dir.path());
    wait_cluster(&http, &nats).await;
    let nats_list: String =
        nats.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",");

    // Both nodes: one database, one master key, the NATS cluster. The poll safety net is 20 s,
    // the sends are unlimited for this one account.
    let key = dir.path().join("master.key");
    std::fs::write(&key, parley_server::secrets::MasterKey::generate().to_base64().as_bytes())
        .unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[limits]\nws_poll_secs = 20\naccount_sends_per_sec = 10000\naccount_send_burst = 10000\n",
    )
    .unwrap();
    let node_args = || -> Vec<String> {
        vec![
            "--database".into(),
            db_url.clone(),
            "--nats".into(),
            nats_list.clone(),
            "--master-key-file".into(),
            key.to_str().unwrap().into(),
            "--config".into(),
            config.to_str().unwrap().into(),
        ]
    };
    let (port_a, port_b) = (free_port(), free_port());
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let args_a = node_args();
    let args_b = node_args();
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    // Started together: both race to create the shared key material.
    let (node_a, node_b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_server_with(&data_a, port_a, &args_a));
        let b = s.spawn(|| spawn_server_with(&data_b, port_b, &args_b));
        (Proc(a.join().unwrap()), Proc(b.join().unwrap()))
    });
    let mut node_b = Some(node_b);
    let a_url = format!("http://127.0.0.1:{port_a}");
    let b_url = format!("http://127.0.0.1:{port_b}");

    // 1. Shared key material: the same admin token on both nodes, accepted by both.
    let token_a = std::fs::read_to_string(data_a.join("admin.token")).unwrap();
    let token_b = std::fs::read_to_string(data_b.join("admin.token")).unwrap();
    assert_eq!(token_a.trim(), token_b.trim(), "the nodes have different admin tokens");
    for base in [&a_url, &b_url] {
        let r = http
            .get(format!("{base}/v1/admin/stats"))
            .bearer_auth(token_a.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{base} refused the shared admin token");
    }

    // Alice registers on node A, bob on node B.
    let mut tokens = HashMap::new();
    for (name, base) in [("alice", &a_url), ("bob", &b_url)] {
        let r: RegisterResponse = http
            .post(format!("{base}/v1/accounts"))
            .json(&register(name))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.insert(name, r.token);
    }
    let (alice, bob) = (tokens["alice"].clone(), tokens["bob"].clone());

    // 2. Real-time chat across the nodes.
    let mut alice_ws = connect(&a_url, &alice).await;
    let mut bob_ws = connect(&b_url, &bob).await;
    assert!(matches!(next_frame(&mut alice_ws).await, Some(ServerFrame::Drained)));
    assert!(matches!(next_frame(&mut bob_ws).await, Some(ServerFrame::Drained)));
    for i in 0..10 {
        exchange(
            &http,
            (&a_url, &alice, &mut alice_ws),
            (&b_url, &bob, &mut bob_ws),
            &format!("rt{i:02}"),
        )
        .await;
    }
    for base in [&a_url, &b_url] {
        assert!(
            metric(&http, base, "parley_bus_events_received_total").await > 0.0,
            "{base} received no event over NATS"
        );
    }

    // Franking keys: both nodes tag with key 1; after a rotation on node A, node B tags with
    // key 2 (told over NATS, or at its next reload).
    let before = {
        send(&http, &b_url, &bob, "alice", "kid-before").await.unwrap();
        next_envelope(&mut alice_ws).await.unwrap()
    };
    assert_eq!(before.franking_key_id, 1);
    let r = http
        .post(format!("{a_url}/v1/admin/franking-keys/rotate"))
        .bearer_auth(token_a.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    loop {
        send(&http, &b_url, &bob, "alice", &format!("kid-after-{n}")).await.unwrap();
        let e = next_envelope(&mut alice_ws).await.unwrap();
        if e.franking_key_id == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "node B never took the rotated franking key");
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. Bob connects on node A: his connection on node B is closed as replaced. Then he goes
    // back to node B (which closes the one on node A).
    let mut bob_on_a = connect(&a_url, &bob).await;
    assert!(matches!(next_frame(&mut bob_on_a).await, Some(ServerFrame::Drained)));
    match next_not_drained(&mut bob_ws).await {
        Some(ServerFrame::Error(e)) => assert_eq!(e.error, "replaced"),
        other => panic!("bob's connection on node B was not replaced: {other:?}"),
    }
    let mut bob_ws = connect(&b_url, &bob).await;
    assert!(matches!(next_frame(&mut bob_ws).await, Some(ServerFrame::Drained)));
    match next_not_drained(&mut bob_on_a).await {
        Some(ServerFrame::Error(e)) => assert_eq!(e.error, "replaced"),
        other => panic!("bob's connection on node A was not replaced: {other:?}"),
    }

    // 4. Kill (SIGKILL) a NATS node that serves a parley node: delivery continues.
    let mut nats = nats;
    let mut victim = None;
    for (i, n) in nats.iter().enumerate() {
        if parley_clients(&http, n).await > 0 {
            victim = Some(i);
            break;
        }
    }
    let victim = victim.expect("no NATS node serves a parley node");
    drop(nats.remove(victim));
    for i in 0..10 {
        exchange(
            &http,
            (&a_url, &alice, &mut alice_ws),
            (&b_url, &bob, &mut bob_ws),
            &format!("nk{i:02}"),
        )
        .await;
    }

    // The CLI's `--server` points a client at another node for one command: carol (account
    // stored on node A) sends to dave (stored on node B) through node B.
    let carol = CliUser::new(dir.path(), "carol");
    let dave = CliUser::new(dir.path(), "dave");
    carol.ok(&["--server", &a_url, "account", "create", "--username", "carol"]);
    dave.ok(&["--server", &b_url, "account", "create", "--username", "dave"]);
    carol.ok(&["--server", &b_url, "send", "dave", "hello dave, through node B"]);

    // 5. Alice streams 400 messages to bob from four senders (on node A); bob reads them on
    // node B; node B is killed (SIGKILL) mid-stream; bob reconnects to node A.
    let per_sender = 100usize;
    let acked_sends = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (http, a_url, alice, acked_sends) =
            (http.clone(), a_url.clone(), alice.clone(), acked_sends.clone());
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_sender {
                let id = format!("s{s}-{i:04}");
                let deadline = Instant::now() + PATIENCE;
                // Not acknowledged: retry the same id, as a client's outbox does.
                while send(&http, &a_url, &alice, "bob", &id).await.is_err() {
                    assert!(Instant::now() < deadline, "node A stopped accepting sends");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acked.push(id);
                acked_sends.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            acked
        }));
    }
    let mut on_b: Vec<String> = Vec::new();
    while on_b.len() < 60 {
        let e = next_envelope(&mut bob_ws).await.expect("bob stopped receiving on node B");
        on_b.push(e.message_id);
    }
    drop(node_b.take()); // SIGKILL
    let in_flight_at_kill = acked_sends.load(Ordering::SeqCst);
    // The connection ends. Whatever was pushed before the kill and is read now is not acked:
    // it must come again from node A.
    while next_frame(&mut bob_ws).await.is_some() {}
    let mut acked = Vec::new();
    for t in senders {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 4 * per_sender);
    assert!(in_flight_at_kill < acked.len(), "node B was killed after the stream ended");

    // Bob on node A: everything, exactly once after deduplication, in order per sender.
    let mut bob_ws = connect(&a_url, &bob).await;
    let mut on_a: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = on_b.iter().cloned().collect();
    let all: BTreeSet<String> = acked.iter().cloned().collect();
    while !all.is_subset(&seen) {
        let e = next_envelope(&mut bob_ws)
            .await
            .unwrap_or_else(|| panic!("bob is missing {:?}", all.difference(&seen).next()));
        seen.insert(e.message_id.clone());
        on_a.push(e.message_id);
    }
    // Up to the `drained` frame that follows the last envelope: nothing else is queued.
    loop {
        match next_frame(&mut bob_ws).await.expect("bob's connection on node A ended") {
            ServerFrame::Envelope(e) => {
                ack(&mut bob_ws, &[e.id]).await;
                on_a.push(e.message_id);
            }
            ServerFrame::Drained => break,
            other => panic!("unexpected frame: {other:?}"),
        }
    }
    assert!(on_a.iter().all(|m| all.contains(m)), "node A delivered something never sent");
    let unique_on_a: BTreeSet<&String> = on_a.iter().collect();
    assert_eq!(unique_on_a.len(), on_a.len(), "node A delivered a message twice");
    for s in 0..4 {
        let prefix = format!("s{s}-");
        let mine: Vec<&String> = on_a.iter().filter(|m| m.starts_with(&prefix)).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "sender {s} out of order on node A");
    }
    // Bob acked everything: his queue ends empty.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page: FetchResponse = http
            .get(format!("{a_url}/v1/messages?after=0"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page.envelopes.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} envelopes left in bob's queue",
            page.envelopes.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "bob read {} on node B before the kill ({} sends acknowledged then), {} on node A",
        on_b.len(),
        in_flight_at_kill,
        on_a.len()
    );

    // Dave's stored node is dead; `--server` takes him to node A, where both of carol's
    // messages wait (the second sent through carol's stored node, A).
    carol.ok(&["send", "dave", "node B is gone"]);
    let o = dave.run(&["receive", "--all", "--json"]);
    assert_eq!(o.status.code(), Some(1), "dave reached his dead node: {o:?}");
    let o = dave.ok(&["--server", &a_url, "receive", "--all", "--json"]);
    let texts: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(texts, ["hello dave, through node B", "node B is gone"], "{o:?}");

    drop(bob_ws);
    drop(alice_ws);
    drop(node_a);
    drop(nats);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin_db)
        .await
        .unwrap();
}
