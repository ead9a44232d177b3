//! Test support: a real server on 127.0.0.1:0 and users with real keys.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use futures_util::{SinkExt, StreamExt};
use parley_api::{
    Bytes, DeviceUpload, FetchResponse, RegisterRequest, RegisterResponse, ServerFrame,
};
use parley_proto::{AccountIdentity, DeviceCertificate, DeviceIdentity, PrekeyStore};
use parley_server::{Config, Limits, RunningServer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const NOW: u64 = 1_800_000_000;

pub struct TestServer {
    pub running: RunningServer,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn test_limits() -> Limits {
    Limits { registrations_per_hour: 10_000, ip_rps: 10_000, ip_burst: 10_000, ..Limits::default() }
}

pub async fn start(limits: Limits) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        limits,
        ..Config::default()
    };
    let running = parley_server::start(config).await.unwrap();
    let url = running.url();
    TestServer { running, url, dir, http: reqwest::Client::new() }
}

pub struct User {
    pub name: String,
    pub account: AccountIdentity,
    pub device: DeviceIdentity,
    pub cert: DeviceCertificate,
    pub store: PrekeyStore,
    pub token: String,
}

impl User {
    pub fn keys(name: &str, one_time: usize) -> (User, RegisterRequest) {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let device = DeviceIdentity::generate(&mut rng);
        let cert = account.certify(1, device.public());
        let list = account.sign_device_list(1, vec![(1, device.public().clone())]).unwrap();
        let mut store = PrekeyStore::new();
        let spk = store.generate_signed_prekey(&mut rng, NOW, &device).unwrap();
        let lr = store.generate_last_resort_kem(&mut rng, NOW, &device).unwrap();
        let (ec, kem) = store.generate_one_time(&mut rng, &device, one_time).unwrap();
        let req = RegisterRequest {
            username: name.to_string(),
            account_key: Bytes(account.public().as_bytes().to_vec()),
            device_list: Bytes(list.encode()),
            device: DeviceUpload {
                certificate: Bytes(cert.encode()),
                signed_prekey: Bytes(spk.encode()),
                last_resort_kem: Bytes(lr.encode()),
                one_time_prekeys: ec.iter().map(|k| Bytes(k.encode())).collect(),
                one_time_kem_prekeys: kem.iter().map(|k| Bytes(k.encode())).collect(),
            },
            age_class: parley_api::AgeClass::Adult,
        };
        (User { name: name.to_string(), account, device, cert, store, token: String::new() }, req)
    }

    pub async fn register(s: &TestServer, name: &str, one_time: usize) -> User {
        Self::register_as(s, name, one_time, parley_api::AgeClass::Adult).await
    }

    pub async fn register_as(
        s: &TestServer,
        name: &str,
        one_time: usize,
        age_class: parley_api::AgeClass,
    ) -> User {
        let (mut user, mut req) = Self::keys(name, one_time);
        req.age_class = age_class;
        let resp = s.http.post(format!("{}/v1/accounts", s.url)).json(&req).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
        let r: RegisterResponse = resp.json().await.unwrap();
        assert_eq!(r.device_id, 1);
        user.token = r.token;
        user
    }

    pub fn get(&self, s: &TestServer, path: &str) -> reqwest::RequestBuilder {
        s.http.get(format!("{}{path}", s.url)).bearer_auth(&self.token)
    }

    pub fn post(&self, s: &TestServer, path: &str) -> reqwest::RequestBuilder {
        s.http.post(format!("{}{path}", s.url)).bearer_auth(&self.token)
    }

    pub fn put(&self, s: &TestServer, path: &str) -> reqwest::RequestBuilder {
        s.http.put(format!("{}{path}", s.url)).bearer_auth(&self.token)
    }

    pub fn delete(&self, s: &TestServer, path: &str) -> reqwest::RequestBuilder {
        s.http.delete(format!("{}{path}", s.url)).bearer_auth(&self.token)
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(
    s: &TestServer,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = s.url.replacen("http", "ws", 1) + "/v1/ws";
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// Next server frame, or None on close/timeout.
pub async fn next_frame(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

pub async fn send_ack(ws: &mut Ws, ids: &[u64]) {
    let frame = serde_json::json!({"type": "ack", "ids": ids});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

/// The message ids in `user`'s queue (`GET /v1/messages`), in queue order.
pub async fn queued_ids(s: &TestServer, user: &User) -> Vec<String> {
    let r: FetchResponse = user.get(s, "/v1/messages").send().await.unwrap().json().await.unwrap();
    r.envelopes.into_iter().map(|e| e.message_id).collect()
}
