//! Shared helpers for tests that run the real `parley` binary.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parley_api::{Bytes, DeviceUpload, RegisterRequest};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn spawn_server(data: &std::path::Path, port: u16) -> Child {
    spawn_server_with(data, port, &[])
}

pub fn spawn_server_with(data: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
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

pub fn register(name: &str) -> RegisterRequest {
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
        age_class: parley_api::AgeClass::Adult,
    }
}
