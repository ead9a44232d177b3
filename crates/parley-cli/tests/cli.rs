//! The `parley` command line as a user runs it: help and usage errors, exit codes, a long
//! conversation across a server crash, and the error sentences of the common mistakes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)] // test code

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{User, as_user, free_port, parley, spawn_server, user};

/// The command failed with `code` and one sentence on stderr that mentions `needle`.
fn one_line(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "stdout: {} stderr: {}", stdout(o), stderr(o));
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn help_and_usage_errors() {
    let o = parley(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for cmd in [
        "server", "demo", "account", "send", "receive", "history", "contacts", "verify", "chat",
        "admin", "audit",
    ] {
        assert!(help.contains(&format!("  {cmd}")), "--help does not list {cmd}:\n{help}");
    }
    for flag in ["--home", "--server", "--json", "--passphrase-file", "--token-file"] {
        assert!(help.contains(flag), "--help does not list {flag}");
    }
    // Usage errors: exit 2, a message on stderr, nothing on stdout.
    for args in
        [&["frobnicate"][..], &["send"], &["receive", "--wait", "soon"], &["account", "create"]]
    {
        let o = parley(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
        assert!(stderr(&o).contains("error:"), "{args:?}");
    }
    // Snapshots of what users and scripts read (update with INSTA_UPDATE=always after an
    // intended change).
    insta::assert_snapshot!("help", help);
    for cmd in ["send", "receive", "account", "server"] {
        let o = parley(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0));
        insta::assert_snapshot!(format!("help_{cmd}"), stdout(&o));
    }
    let o = parley(&["frobnicate"]);
    insta::assert_snapshot!("usage_error", stderr(&o));
    let o = parley(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("parley "));
}

#[test]
fn common_mistakes_give_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_url = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&dir.path().join("server"), port);
    let alice = user(dir.path(), "alice");
    let o = as_user(&alice, &server_url, &["account", "create", "--username", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Wrong passphrase.
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not it").unwrap();
    let o = parley(&[
        "--home",
        alice.home.to_str().unwrap(),
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "account",
        "info",
    ]);
    one_line(&o, 1, "wrong passphrase");
    // Missing home.
    let nobody = user(dir.path(), "nobody");
    one_line(&as_user(&nobody, &server_url, &["account", "info"]), 1, "no account");
    // Unknown recipient.
    one_line(&as_user(&alice, &server_url, &["send", "zed", "hello"]), 1, "zed");
    // Oversized message.
    let bob = user(dir.path(), "bob");
    assert_eq!(
        as_user(&bob, &server_url, &["account", "create", "--username", "bob"]).status.code(),
        Some(0)
    );
    let big = "x".repeat(70_000);
    one_line(&as_user(&alice, &server_url, &["send", "bob", &big]), 1, "too long");
    // Unreachable server: the message is queued (exit 3) and a later command delivers it.
    server.kill().unwrap();
    server.wait().unwrap();
    let o = as_user(&alice, &server_url, &["send", "bob", "while you were away"]);
    one_line(&o, 3, "queued");
    server = spawn_server(&dir.path().join("server"), port);
    assert_eq!(as_user(&alice, &server_url, &["receive"]).status.code(), Some(0));
    let o = as_user(&bob, &server_url, &["--json", "receive", "--all", "--wait", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("while you were away"), "{}", stdout(&o));
    // The store still works after all of that.
    assert_eq!(as_user(&alice, &server_url, &["account", "info"]).status.code(), Some(0));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn two_users_exchange_200_messages_each_way_across_a_server_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server_dir = dir.path().join("server");
    let mut server = spawn_server(&server_dir, port);
    let alice = user(dir.path(), "alice");
    let bob = user(dir.path(), "bob");
    for (u, name) in [(&alice, "alice"), (&bob, "bob")] {
        let o = as_user(u, &url, &["--json", "account", "create", "--username", name]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // alice writes first (bob learns her key from her first message).
    let total = 200; // per direction
    let mut queued = 0;
    for i in 0..total {
        if i == total / 2 {
            server.kill().unwrap(); // SIGKILL in the middle of the conversation
            server.wait().unwrap();
        }
        if i == total / 2 + 5 {
            server = spawn_server(&server_dir, port);
        }
        for (from, to, tag) in [(&alice, "bob", "a"), (&bob, "alice", "b")] {
            let o = as_user(from, &url, &["--json", "send", to, &format!("{tag}{i:03}")]);
            match o.status.code() {
                Some(0) => {}
                Some(3) => {
                    queued += 1;
                    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
                    assert_eq!(v["queued"], true);
                }
                other => panic!("send {tag}{i} exited {other:?}: {}", stderr(&o)),
            }
        }
        // Each side reads now and then, so messages arrive while the conversation goes on.
        if i % 10 == 9 {
            for u in [&alice, &bob] {
                let o = as_user(u, &url, &["receive"]);
                assert!(matches!(o.status.code(), Some(0) | Some(1)), "{}", stderr(&o));
            }
        }
    }
    assert!(queued > 0, "no send was queued while the server was down");
    // Drain: a command that reaches the server also flushes the outbox.
    for _ in 0..3 {
        for u in [&alice, &bob] {
            let o = as_user(u, &url, &["receive", "--wait", "1"]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        }
    }
    for (u, peer, tag) in [(&bob, "alice", "a"), (&alice, "bob", "b")] {
        let o = as_user(u, &url, &["--json", "history", peer]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let got: Vec<String> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["from"] == peer)
            .map(|v| v["text"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..total).map(|i| format!("{tag}{i:03}")).collect();
        assert_eq!(got, expected, "{peer}'s messages as seen by the other side");
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn demo_runs_and_shows_only_ciphertext_on_the_server() {
    let o = parley(&["demo"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("0 of 3 found"), "{out}");
    assert!(out.contains("they match"), "{out}");
    assert!(out.contains("alice checks bob's key: verified"), "{out}");
    assert!(out.contains("bob checks alice's key: verified"), "{out}");
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn safety_commands_minors_requests_blocks_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&dir.path().join("server"), port);
    let (adult, kid, eve) =
        (user(dir.path(), "adult"), user(dir.path(), "kid"), user(dir.path(), "eve"));
    let create = |u: &User, name: &str, minor: bool| {
        let mut a = vec!["--json", "account", "create", "--username", name];
        if minor {
            a.push("--minor");
        }
        let o = as_user(u, &url, &a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        json_lines(&o)[0]["age_class"].as_str().unwrap().to_string()
    };
    assert_eq!(create(&adult, "adult", false), "adult");
    assert_eq!(create(&kid, "kid", true), "minor");
    assert_eq!(create(&eve, "eve", false), "adult");

    // An adult stranger cannot write to a minor: the same sentence as for an unknown account.
    let to_kid = as_user(&adult, &url, &["send", "kid", "hi"]);
    let to_ghost = as_user(&adult, &url, &["send", "ghost", "hi"]);
    one_line(&to_kid, 1, "no such user");
    assert_eq!(stderr(&to_kid).replace("kid", "X"), stderr(&to_ghost).replace("ghost", "X"));

    // The minor writes first: a request on the adult's side, shown only with --all.
    assert_eq!(
        as_user(&kid, &url, &["send", "adult", "hello from the chess club"]).status.code(),
        Some(0)
    );
    let o = as_user(&adult, &url, &["--json", "receive", "--wait", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "a request was printed without --all: {}", stdout(&o));
    let reqs = json_lines(&as_user(&adult, &url, &["--json", "requests"]));
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0]["from"].as_str(), reqs[0]["count"].as_u64()), (Some("kid"), Some(1)));
    assert!(reqs[0]["first_at"].as_str().unwrap().ends_with('Z'));
    let h = json_lines(&as_user(&adult, &url, &["--json", "history", "kid"]));
    assert_eq!(h[0]["request"], true);
    assert_eq!(as_user(&adult, &url, &["accept", "kid"]).status.code(), Some(0));
    one_line(&as_user(&adult, &url, &["accept", "kid"]), 1, "no message request");
    let h = json_lines(&as_user(&adult, &url, &["--json", "history", "kid"]));
    assert_eq!(h[0]["request"], false);

    // The adult answers; the kid's filters (on by default for minors) hide a link.
    assert_eq!(
        as_user(&adult, &url, &["send", "kid", "results: https://example.org/r"]).status.code(),
        Some(0)
    );
    let o = as_user(&kid, &url, &["--json", "receive", "--wait", "5"]);
    let m = &json_lines(&o)[0];
    assert_eq!((m["filtered"].as_bool(), m["filter_reason"].as_str()), (Some(true), Some("link")));
    assert!(m.get("text").is_none(), "filtered text printed without --reveal");
    let h = json_lines(&as_user(&kid, &url, &["--json", "history", "adult", "--reveal"]));
    assert_eq!(h.last().unwrap()["text"], "results: https://example.org/r");
    let f = json_lines(&as_user(&kid, &url, &["--json", "filters"]));
    assert_eq!(
        (f[0]["filters"].as_str(), f[0]["link_warnings"].as_str()),
        (Some("on"), Some("on"))
    );
    assert_eq!(as_user(&kid, &url, &["filters", "links", "off"]).status.code(), Some(0));
    assert_eq!(as_user(&kid, &url, &["filters", "add", "secret club"]).status.code(), Some(0));
    one_line(
        &as_user(&kid, &url, &["filters", "add", "(", "--regex"]),
        1,
        "invalid regular expression",
    );
    let f = json_lines(&as_user(&kid, &url, &["--json", "filters"]));
    assert_eq!(f[0]["link_warnings"], "off");
    assert_eq!(f[0]["rules"][0]["pattern"], "secret club");
    one_line(&as_user(&kid, &url, &["filters", "remove", "nope"]), 1, "no filter");

    // Blocking: eve's messages stop, and she cannot tell a block from a missing account.
    assert_eq!(as_user(&eve, &url, &["send", "adult", "buy my stuff"]).status.code(), Some(0));
    assert_eq!(as_user(&adult, &url, &["block", "eve"]).status.code(), Some(0));
    one_line(&as_user(&eve, &url, &["send", "adult", "hello?"]), 1, "no such user");
    let o = as_user(&adult, &url, &["--json", "receive", "--all", "--wait", "2"]);
    assert!(!stdout(&o).contains("eve"), "{}", stdout(&o));
    one_line(&as_user(&adult, &url, &["send", "eve", "x"]), 1, "unblock");
    assert_eq!(as_user(&adult, &url, &["unblock", "eve"]).status.code(), Some(0));
    assert_eq!(as_user(&eve, &url, &["send", "adult", "sorry"]).status.code(), Some(0));
    assert_eq!(as_user(&adult, &url, &["receive", "--wait", "5"]).status.code(), Some(0));
    assert_eq!(as_user(&adult, &url, &["decline", "eve"]).status.code(), Some(0));
    assert!(json_lines(&as_user(&adult, &url, &["--json", "requests"])).is_empty());

    // Only the admin changes an age class.
    let token = dir.path().join("server").join("admin.token");
    let admin = |args: &[&str]| {
        let mut a = vec!["--server", url.as_str(), "--token-file", token.to_str().unwrap()];
        a.extend_from_slice(args);
        parley(&a)
    };
    let o = admin(&["--json", "admin", "account", "set-age", "eve", "minor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["age_class"], "minor");
    assert_eq!(admin(&["admin", "account", "set-age", "eve", "child"]).status.code(), Some(2));
    one_line(&admin(&["admin", "account", "set-age", "ghost", "adult"]), 1, "not found");
    let info = json_lines(&as_user(&eve, &url, &["--json", "account", "info"]));
    assert_eq!(info[0]["age_class"], "minor");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn report_moderate_and_suspend_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&dir.path().join("server"), port);
    let (alice, bob) = (user(dir.path(), "alice"), user(dir.path(), "bob"));
    for (u, n) in [(&alice, "alice"), (&bob, "bob")] {
        assert_eq!(
            as_user(u, &url, &["account", "create", "--username", n]).status.code(),
            Some(0)
        );
    }
    assert_eq!(as_user(&bob, &url, &["send", "alice", "hi alice"]).status.code(), Some(0));
    for t in ["hello bob", "answer me", "you will regret it"] {
        assert_eq!(as_user(&alice, &url, &["send", "bob", t]).status.code(), Some(0));
    }
    let got = json_lines(&as_user(&bob, &url, &["--json", "receive", "--all", "--wait", "5"]));
    let abusive = got.iter().find(|m| m["text"] == "you will regret it").unwrap()["id"].clone();
    let abusive = abusive.as_str().unwrap();
    one_line(&as_user(&bob, &url, &["report", "nosuchid"]), 1, "cannot report");
    let o =
        as_user(&bob, &url, &["--json", "report", abusive, "--context", "2", "--reason", "threat"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json_lines(&o)[0]["report"].as_u64().unwrap();

    let token = dir.path().join("server").join("admin.token");
    let admin = |args: &[&str]| {
        let mut a = vec!["--server", url.as_str(), "--token-file", token.to_str().unwrap()];
        a.extend_from_slice(args);
        parley(&a)
    };
    let o = admin(&["--json", "admin", "reports"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let list = json_lines(&o);
    assert_eq!(list.len(), 1);
    let r = &list[0];
    assert_eq!((r["id"].as_u64(), r["reporter"].as_str()), (Some(report), Some("bob")));
    assert_eq!((r["sender"].as_str(), r["reason"].as_str()), (Some("alice"), Some("threat")));
    let msgs = r["messages"].as_array().unwrap();
    // Two messages of context and the reported one; all of alice's verify.
    let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap_or("")).collect();
    assert_eq!(texts, ["hello bob", "answer me", "you will regret it"]);
    assert!(msgs.iter().all(|m| m["verified"] == true && m["sender"] == "alice"), "{msgs:?}");
    assert!(msgs.iter().all(|m| m["sent_at"].is_string() && m["server_at"].is_string()));
    let o = admin(&["admin", "report", "show", &report.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("you will regret it") && stdout(&o).contains("verified"));
    let o = admin(&["admin", "report", "resolve", &report.to_string(), "--action", "suspend"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    one_line(&as_user(&alice, &url, &["send", "bob", "still here?"]), 1, "suspended");
    let o = admin(&["--json", "admin", "account", "unsuspend", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["suspended"], false);
    assert_eq!(as_user(&alice, &url, &["send", "bob", "back"]).status.code(), Some(0));
    one_line(&admin(&["admin", "account", "suspend", "ghost"]), 1, "not found");
    assert!(json_lines(&admin(&["--json", "admin", "reports"])).is_empty());
    let o = admin(&["--json", "admin", "rotate-franking-key"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["active"], 2);
    // block --report reports the last message and blocks.
    let carol = user(dir.path(), "carol");
    assert_eq!(
        as_user(&carol, &url, &["account", "create", "--username", "carol"]).status.code(),
        Some(0)
    );
    assert_eq!(as_user(&carol, &url, &["send", "bob", "spam spam"]).status.code(), Some(0));
    assert_eq!(as_user(&bob, &url, &["receive", "--wait", "5"]).status.code(), Some(0));
    let o = as_user(&bob, &url, &["block", "carol", "--report"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_lines(&admin(&["--json", "admin", "reports"])).len(), 1);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn server_flag_overrides_the_stored_address_for_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_url = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&dir.path().join("server"), port);
    let alice = user(dir.path(), "alice");
    let o = as_user(&alice, &server_url, &["account", "create", "--username", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let info = |extra: &[&str]| {
        let mut args = vec![
            "--home",
            alice.home.to_str().unwrap(),
            "--passphrase-file",
            alice.pass.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--json", "account", "info"]);
        let o = parley(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    // Without --server: the address stored at account creation, which answers.
    let v = info(&[]);
    assert_eq!(v["server"], server_url.as_str());
    assert_eq!(v["queued"], 0);
    // With --server: that address, for this command only (nothing listens there).
    let elsewhere = format!("http://127.0.0.1:{}", free_port());
    let v = info(&["--server", &elsewhere]);
    assert_eq!(v["server"], elsewhere.as_str());
    assert!(v["queued"].is_null(), "{v}");
    // The stored address is unchanged.
    let v = info(&[]);
    assert_eq!(v["server"], server_url.as_str());
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn master_key_from_the_environment_seals_key_material_in_the_database() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["server", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env("PARLEY_MASTER_KEY", key)
            .env("PARLEY_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let key = parley_server::secrets::MasterKey::generate();
    let mut server = start(&key.to_base64());
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server exited: {lines:?}");
        let listening = line.starts_with("listening on");
        lines.push(line);
        if listening {
            break;
        }
    }
    assert!(lines[0].starts_with("admin token written to"), "{lines:?}");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(data.join("admin.token").exists());
    assert!(!data.join("franking").exists(), "the franking keys are files, not sealed rows");
    // Another master key cannot open them: one sentence, exit 1.
    let other = parley_server::secrets::MasterKey::generate();
    let o = start(&other.to_base64()).wait_with_output().unwrap();
    one_line(&o, 1, "does not open with this master key");
    let o = start("not a key").wait_with_output().unwrap();
    one_line(&o, 1, "PARLEY_MASTER_KEY");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Key transparency through the CLI: `admin kt publish`, `verify --json`, and the auditor
/// catching a server that shows two clients different roots for the same epoch (a fork: two
/// copies of the server, with the same keys, publishing different epochs).
#[test]
fn audit_detects_a_forked_directory_from_observed_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let url_a = format!("http://127.0.0.1:{port_a}");
    let url_b = format!("http://127.0.0.1:{port_b}");
    let data_a = dir.path().join("server-a");
    let slow = ["--kt-epoch-interval", "3600"];
    let mut server = common::spawn_server_with(&data_a, port_a, &slow);
    let token_a = data_a.join("admin.token");
    let admin = |url: &str, token: &Path, args: &[&str]| {
        let mut a = vec!["--server", url, "--token-file", token.to_str().unwrap()];
        a.extend_from_slice(args);
        parley(&a)
    };
    let (alice, bob, carol) =
        (user(dir.path(), "alice"), user(dir.path(), "bob"), user(dir.path(), "carol"));
    for (u, n) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        let o = as_user(u, &url_a, &["account", "create", "--username", n]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // Before the first epoch bob's key is pending.
    assert_eq!(as_user(&alice, &url_a, &["send", "bob", "hi"]).status.code(), Some(0));
    let o = as_user(&alice, &url_a, &["--json", "verify", "bob"]);
    assert_eq!(json_lines(&o)[0]["kt_status"], "pending", "{}", stdout(&o));
    let o = admin(&url_a, &token_a, &["--json", "admin", "kt", "publish"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        (json_lines(&o)[0]["epoch"].as_u64(), json_lines(&o)[0]["updates"].as_u64()),
        (Some(1), Some(3))
    );
    let o = as_user(&alice, &url_a, &["--json", "verify", "bob"]);
    let v = &json_lines(&o)[0];
    assert_eq!((v["kt_status"].as_str(), v["epoch"].as_u64()), (Some("verified"), Some(1)), "{v}");
    assert_eq!(v["safety_number"].as_str().unwrap().len(), 71);
    assert_eq!(v["root"].as_str().unwrap().len(), 64);
    // receive and history carry the sender's KT state.
    assert_eq!(as_user(&bob, &url_a, &["send", "alice", "hello"]).status.code(), Some(0));
    let got = json_lines(&as_user(&alice, &url_a, &["--json", "receive", "--wait", "5"]));
    assert!(got.iter().any(|m| m["text"] == "hello" && m["verified"] == "verified"), "{got:?}");
    let hist = json_lines(&as_user(&alice, &url_a, &["--json", "history", "bob"]));
    assert!(hist.iter().all(|m| m["verified"] == "verified"), "{hist:?}");

    // The operator forks: a copy of the server (same keys) publishes a different epoch 2.
    server.kill().unwrap();
    server.wait().unwrap();
    let data_b = dir.path().join("server-b");
    copy_dir(&data_a, &data_b);
    let mut server = common::spawn_server_with(&data_a, port_a, &slow);
    let mut fork = common::spawn_server_with(&data_b, port_b, &slow);
    let dave = user(dir.path(), "dave");
    let erin = user(dir.path(), "erin");
    assert_eq!(
        as_user(&dave, &url_a, &["account", "create", "--username", "dave"]).status.code(),
        Some(0)
    );
    assert_eq!(
        as_user(&erin, &url_b, &["account", "create", "--username", "erin"]).status.code(),
        Some(0)
    );
    for (url, data) in [(&url_a, &data_a), (&url_b, &data_b)] {
        let o = admin(url, &data.join("admin.token"), &["--json", "admin", "kt", "publish"]);
        assert_eq!(json_lines(&o)[0]["epoch"].as_u64(), Some(2), "{}", stderr(&o));
    }
    // alice is served by the real log, carol by the fork; each client alone sees a consistent,
    // append-only history.
    let observed_a = dir.path().join("alice.json");
    let o = as_user(&alice, &url_a, &["--json", "verify", "bob"]);
    assert_eq!(json_lines(&o)[0]["kt_status"], "verified", "{}", stderr(&o));
    std::fs::write(&observed_a, &o.stdout).unwrap();
    assert_eq!(as_user(&carol, &url_b, &["send", "bob", "hi bob"]).status.code(), Some(0));
    let observed_c = dir.path().join("carol.json");
    let o = as_user(&carol, &url_b, &["--json", "verify", "bob"]);
    let v = &json_lines(&o)[0];
    assert_eq!((v["kt_status"].as_str(), v["epoch"].as_u64()), (Some("verified"), Some(2)), "{v}");
    std::fs::write(&observed_c, &o.stdout).unwrap();

    // The auditor of the real log accepts alice's view and catches carol's.
    let state = dir.path().join("audit.json");
    let audit = |observed: &[&Path]| {
        let mut a = vec!["--server", url_a.as_str(), "audit", "--state", state.to_str().unwrap()];
        if !observed.is_empty() {
            a.push("--observed");
            a.extend(observed.iter().map(|p| p.to_str().unwrap()));
        }
        parley(&a)
    };
    let o = audit(&[&observed_a]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("audited up to epoch 2"), "{}", stdout(&o));
    let o = audit(&[&observed_a, &observed_c]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("FORK") && stdout(&o).contains("carol.json"), "{}", stdout(&o));
    // The state kept the audited roots: a second run only checks what is new.
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(kept["roots"].as_array().unwrap().len(), 3);
    // Auditing the fork from the real log's roots finds it too.
    let mut forked_state = kept.clone();
    forked_state["server"] = serde_json::json!(url_b);
    let state_b = dir.path().join("audit-b.json");
    std::fs::write(&state_b, forked_state.to_string()).unwrap();
    let o = parley(&["--server", url_b.as_str(), "audit", "--state", state_b.to_str().unwrap()]);
    assert!(stdout(&o).contains("fork"), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    server.kill().unwrap();
    server.wait().unwrap();
    fork.kill().unwrap();
    fork.wait().unwrap();
}
