//! Schemathesis (property-based API testing from PyPI) against `/openapi.json` on a live
//! `parley server`: fails on any 5xx or any response that violates the documented schema.
//! Skipped when `schemathesis` is not installed, unless `PARLEY_REQUIRE_ALL=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::zombie_processes)] // test code

mod common;

use std::process::Command;

use common::{free_port, register, spawn_server_with};
use parley_api::RegisterResponse;

fn schemathesis_available() -> bool {
    Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document() {
    if !schemathesis_available() {
        assert!(
            std::env::var_os("PARLEY_REQUIRE_ALL").is_none(),
            "schemathesis is not installed and PARLEY_REQUIRE_ALL is set"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Generated traffic is fast; keep the rate limits out of the way so every answer is a
    // real one (429s are documented, but they would hide the other paths).
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[limits]\nip_rps = 100000\nip_burst = 100000\naccount_rps = 100000\naccount_burst = 100000\n\
         registrations_per_hour = 100000\nbundle_fetches_per_hour = 100000\n\
         account_sends_per_sec = 100000\naccount_send_burst = 100000\nip_sends_per_sec = 100000\n\
         ip_send_burst = 100000\nnew_conversations_per_hour = 100000\n\
         new_account_conversations_per_hour = 100000\nreports_per_hour = 100000\n",
    )
    .unwrap();
    let port = free_port();
    let mut server =
        spawn_server_with(&dir.path().join("data"), port, &["--config", config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let r: RegisterResponse = http
        .post(format!("{base}/v1/accounts"))
        .json(&register("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.post(format!("{base}/v1/accounts")).json(&register("bob")).send().await.unwrap();
    let carol: RegisterResponse = http
        .post(format!("{base}/v1/accounts"))
        .json(&register("carol"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // How many operations each run must cover, from the document itself.
    let doc: serde_json::Value =
        http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    let methods: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().keys().cloned().collect::<Vec<_>>())
        .collect();
    let deletes = methods.iter().filter(|m| m.as_str() == "delete").count().to_string();
    let others = methods.iter().filter(|m| m.as_str() != "delete").count().to_string();
    let examples = std::env::var("PARLEY_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    // Every operation but the account deletion, with Alice's token; then the deletion alone,
    // with Carol's (so deleting the account does not turn the rest into 401s).
    let main = run(&base, &r.token, &examples, &["--exclude-method", "DELETE"]).await;
    let delete = run(&base, &carol.token, &examples, &["--include-method", "DELETE"]).await;
    server.kill().unwrap();
    server.wait().unwrap();
    for (out, operations) in [(&main, others.as_str()), (&delete, deletes.as_str())] {
        let tested =
            out.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or_default();
        assert!(
            tested.split(|c: char| !c.is_ascii_digit()).any(|n| n == operations),
            "schemathesis did not test all {operations} operations:\n{out}"
        );
    }
    // Only the admin endpoints may answer nothing but 401 (the device token is not the admin's).
    if let Some(section) = main.split("401 Unauthorized").nth(1) {
        let listed: Vec<&str> =
            section.lines().skip(1).take_while(|l| l.trim_start().starts_with("- ")).collect();
        assert!(
            listed.iter().all(|l| l.contains("/v1/admin/")),
            "the bearer token was not accepted by {listed:?}:\n{main}"
        );
    }
}

async fn run(base: &str, token: &str, examples: &str, filter: &[&str]) -> String {
    let (base, token, examples) = (base.to_string(), token.to_string(), examples.to_string());
    // Schemathesis keeps a cache in its working directory: give it a temporary one.
    let workdir = tempfile::tempdir().unwrap();
    let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--max-examples", &examples])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--suppress-health-check", "all"])
            .args(&filter)
            .env("NO_COLOR", "1")
            .current_dir(workdir.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
