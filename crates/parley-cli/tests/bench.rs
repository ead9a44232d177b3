//! `parley bench` as a user runs it: every figure of CLI.md's `bench` fields is produced, by
//! real devices that deliver every message; against a separate server it measures idle
//! connections; its misuses are refused with one sentence. No timing is asserted here: the
//! figures are for docs/BENCHMARKS.md, measured on a release build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)] // test code

mod common;

use std::process::{Command, Output};

use common::{free_port, spawn_server_with};

fn parley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env_remove("PARLEY_SERVER")
        .env_remove("COLUMNS")
        .output()
        .unwrap()
}

fn report(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn num(r: &serde_json::Value, field: &str) -> f64 {
    r[field].as_f64().unwrap_or_else(|| panic!("no number {field} in {r}"))
}

#[test]
fn embedded_bench_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let o = parley(&[
        "bench",
        "--clients",
        "3",
        "--duration",
        "1",
        "--size",
        "200",
        "--floor",
        "--plaintext",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = report(&o);
    assert_eq!(r["clients"], 3);
    assert_eq!(r["duration_s"], 1);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["plaintext_errors"], 0);
    // Messages were sent and delivered (decrypted and checked by their recipients).
    assert!(num(&r, "sent") > 0.0 && num(&r, "delivered") > 0.0, "{r}");
    assert!(num(&r, "delivered_per_s") > 0.0);
    let (p50, p99, p999) = (num(&r, "p50_ms"), num(&r, "p99_ms"), num(&r, "p999_ms"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{r}");
    assert!(num(&r, "plaintext_per_s") > 0.0);
    assert!(num(&r, "encryption_cost") < 1.0);
    // The floor ran in transactions of the server's mean group size.
    let (batch, server) = (num(&r, "floor_batch"), num(&r, "server_ops_per_commit"));
    assert!(num(&r, "floor_per_s") > 0.0);
    assert!(batch >= 1.0 && (batch - server.max(1.0)).abs() < 0.5, "{r}");
    assert!(num(&r, "floor_ratio") > 0.0);
    // --out holds the same result.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(file, r);
}

#[test]
fn bench_against_a_separate_server_measures_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let config = dir.path().join("load-test.toml");
    // An operator's load-test server: rate limits lifted by configuration, as
    // docs/BENCHMARKS.md shows (the defaults stay for real servers).
    std::fs::write(
        &config,
        "[limits]\naccount_rps = 1000000\naccount_burst = 1000000\nip_rps = 1000000\n\
         ip_burst = 1000000\naccount_sends_per_sec = 1000000\naccount_send_burst = 1000000\n\
         ip_sends_per_sec = 1000000\nip_send_burst = 1000000\n\
         new_conversations_per_hour = 1000000\nnew_account_conversations_per_hour = 1000000\n",
    )
    .unwrap();
    let port = free_port();
    let mut server = spawn_server_with(&data, port, &["--config", config.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{port}");
    let token = data.join("admin.token");
    let o = parley(&[
        "bench",
        "--server",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "--idle",
        "40",
        "--clients",
        "2",
        "--duration",
        "1",
        "--json",
    ]);
    server.kill().unwrap();
    let _ = server.wait();
    let r = report(&o);
    assert_eq!(r["target"], url.as_str());
    assert_eq!(r["idle_conns"], 40);
    assert!(num(&r, "idle_bytes_per_conn") >= 0.0);
    assert_eq!(r["errors"], 0);
    assert!(num(&r, "delivered") > 0.0);
}

#[test]
fn bench_misuse_is_refused_with_one_sentence() {
    for (args, code, needle) in [
        (&["bench", "--clients", "1"][..], 2, "--clients"),
        (&["bench", "--duration", "0"], 2, "--duration"),
        (&["bench", "--idle", "10"], 1, "--idle measures the memory of a separate server"),
        (&["bench", "--server", "http://127.0.0.1:9", "--floor"], 1, "--floor measures"),
        (&["bench", "--server", "http://127.0.0.1:9", "--embedded"], 1, "exclusive"),
    ] {
        let o = parley(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
