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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use parley_api::{Bytes, DeviceUpload, RegisterRequest};

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `parley` with the weak test KDF and without the caller's PARLEY_* settings.
pub fn parley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_INSECURE_TEST_KDF", "1")
        .env_remove("PARLEY_SERVER")
        .env_remove("PARLEY_HOME")
        .env_remove("PARLEY_PASSPHRASE")
        .env_remove("COLUMNS")
        .output()
        .unwrap()
}

/// A client home with its passphrase file.
pub struct User {
    pub home: PathBuf,
    pub pass: PathBuf,
}

/// A user `name` under `dir` (the passphrase file is written; no account yet).
pub fn user(dir: &Path, name: &str) -> User {
    let pass = dir.join(format!("{name}.pass"));
    std::fs::write(&pass, format!("passphrase of {name}\n")).unwrap();
    User { home: dir.join(name), pass }
}

/// `parley --home … --passphrase-file … --server SERVER ARGS…` as user `u`.
pub fn as_user(u: &User, server: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "--home",
        u.home.to_str().unwrap(),
        "--passphrase-file",
        u.pass.to_str().unwrap(),
        "--server",
        server,
    ];
    all.extend_from_slice(args);
    parley(&all)
}

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
