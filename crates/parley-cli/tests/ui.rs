//! `parley ui` end to end (docs/UI.md): two UI processes (alice, bob) against one server, driven
//! in real headless Chromium through ChromeDriver (Debian's `chromium` and `chromium-driver`).
//! Alice accepts bob's request and writes from her page; bob's page shows it live without a
//! reload and bob reports it; a stranger's message appears under bob's requests with its link
//! inert; the safety numbers match on both pages and the command line; a forged cross-site
//! form post from another localhost port changes nothing; an unreachable server shows as such.
//!
//! The browser test reports itself as skipped when Chromium or ChromeDriver is missing, unless
//! `PARLEY_REQUIRE_ALL=1` (CI), where a skip is a failure. The process-level security test
//! needs no browser and always runs.
//!
//! Screenshots of every main screen go to `$PARLEY_UI_SCREENSHOTS` when it is set (the ones in
//! docs/ui/ come from `PARLEY_UI_SCREENSHOTS=$PWD/docs/ui cargo test -p parley --test ui`),
//! otherwise to a temporary folder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes
)] // test code

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, User, as_user, free_port, parley, spawn_server, user};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);

/// `parley` as `u`, which must succeed.
fn run_as(u: &User, server: &str, args: &[&str]) -> Output {
    let o = as_user(u, server, args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn passphrase(name: &str) -> String {
    format!("passphrase of {name}")
}

/// A user with an account on `server`.
fn account(dir: &Path, server: &str, name: &str) -> User {
    let u = user(dir, name);
    run_as(&u, server, &["account", "create", "--username", name]);
    u
}

/// Starts `parley ui` for `u` (locked: the page asks for the passphrase) and returns the
/// process with its one-time launch URL.
fn spawn_ui(u: &User, server: &str) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["--home", u.home.to_str().unwrap(), "--server", server, "ui"])
        .env_remove("PARLEY_PASSPHRASE")
        .env("PARLEY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("open ").unwrap_or_else(|| panic!("{line:?}")).to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/launch?token="), "{url}");
    (Proc(child), url)
}

fn port_of(url: &str) -> u16 {
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// One raw HTTP/1.1 request to the UI; returns the status and the whole answer.
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

// ---------------------------------------------------------------------------------------------
// The local server's rules against a real process (no browser needed)
// ---------------------------------------------------------------------------------------------

/// A non-loopback IPv4 address of this machine, if it has one.
fn non_loopback_address() -> Option<String> {
    let o = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(str::to_string)
}

#[test]
fn the_ui_process_refuses_foreign_hosts_tokens_origins_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _server = Proc(spawn_server(&dir.path().join("server"), port));
    let alice = account(dir.path(), &server, "alice");
    let (_ui, url) = spawn_ui(&alice, &server);
    let ui = port_of(&url);
    let path = url.split_once(&format!(":{ui}")).unwrap().1.to_string();
    let host = format!("127.0.0.1:{ui}");

    // Wrong Host (DNS rebinding), even with the right token.
    let (status, _) = raw(
        ui,
        &format!("GET {path} HTTP/1.1\r\nHost: evil.example:{ui}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 421);
    // Missing and wrong tokens.
    for p in ["/launch", "/launch?token=", &format!("/launch?token={}", "f".repeat(64))] {
        let (status, _) =
            raw(ui, &format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 403, "{p}");
    }
    // The API without a session.
    let (status, _) =
        raw(ui, &format!("GET /api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 401);
    // The right token, once.
    let (status, answer) =
        raw(ui, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 303, "{answer}");
    // The CSRF token comes in the redirect's fragment, for this browser only.
    let csrf = answer
        .lines()
        .find_map(|l| l.strip_prefix("location: /#token="))
        .expect("the token in the redirect")
        .trim()
        .to_string();
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, _) =
        raw(ui, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 403, "a launch token works once");
    // The page, with its policy, and without the token: the cookie alone is not enough.
    let (status, page) = raw(
        ui,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);
    assert!(page.contains("content-security-policy: default-src 'none'"), "{page}");
    assert!(!page.contains(&csrf));
    // A cross-site POST (a form on another localhost port), with the session cookie.
    let post = |origin: &str, token: &str, ctype: &str| {
        raw(
            ui,
            &format!(
                "POST /api/lock HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nOrigin: {origin}\r\n\
                 X-Parley-CSRF: {token}\r\nContent-Type: {ctype}\r\nContent-Length: 2\r\n\
                 Connection: close\r\n\r\n{{}}"
            ),
        )
        .0
    };
    let foreign = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(post(&foreign, &csrf, "application/json"), 403);
    assert_eq!(post(&format!("http://{host}"), "wrong", "application/json"), 403);
    assert_eq!(post(&format!("http://{host}"), &csrf, "text/plain"), 415);
    assert_eq!(post(&format!("http://{host}"), &csrf, "application/json"), 200);
    // Not reachable from another address of this machine.
    match non_loopback_address() {
        Some(addr) => assert!(
            TcpStream::connect_timeout(
                &format!("{addr}:{ui}").parse().unwrap(),
                Duration::from_secs(3)
            )
            .is_err(),
            "the UI answered on {addr}"
        ),
        None => require_all("this machine has no non-loopback address"),
    }
}

fn require_all(what: &str) {
    assert!(
        std::env::var_os("PARLEY_REQUIRE_ALL").is_none(),
        "{what} and PARLEY_REQUIRE_ALL is set"
    );
    eprintln!("skipped: {what}");
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------------------------

fn browser_available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

fn spawn_chromedriver() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Proc(child), port)
}

async fn open_browser(driver: u16, profile: &Path, width: u32, height: u32) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver}"))
        .await
        .unwrap()
}

/// Waits until `script` (a JavaScript expression) is truthy in the page; returns its value.
async fn until(b: &Browser, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = b.execute(&format!("return ({script});"), vec![]).await.unwrap();
        if !(v.is_null() || v == Value::Bool(false) || v == "" || v == 0) {
            return v;
        }
        if Instant::now() >= deadline {
            // What the page showed, for the failure message.
            let shown = b.execute("return document.body.innerText;", vec![]).await.unwrap();
            let state = b
                .execute_async(
                    "const done = arguments[0]; fetch('/api/state', {headers: {'X-Parley-CSRF': \
                     document.querySelector('meta[name=parley-csrf]').content}}).then(r => \
                     r.text()).then(done, e => done(String(e)));",
                    vec![],
                )
                .await
                .unwrap_or_default();
            eprintln!("the UI's state: {state}");
            if let Ok(png) = b.screenshot().await {
                let _ = std::fs::write(std::env::temp_dir().join("parley-ui-failure.png"), png);
            }
            panic!("timed out waiting for {what} ({script}); the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(b: &Browser, css: &str) {
    b.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

async fn type_into(b: &Browser, css: &str, text: &str) {
    let e = b.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn text_of(b: &Browser, css: &str) -> String {
    b.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Where screenshots go; the temporary folder (if any) lives as long as this.
struct Shots(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Shots {
    fn new() -> Shots {
        match std::env::var_os("PARLEY_UI_SCREENSHOTS") {
            Some(d) => {
                std::fs::create_dir_all(&d).unwrap();
                Shots(PathBuf::from(d), None)
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                Shots(t.path().to_path_buf(), Some(t))
            }
        }
    }

    /// Takes a screenshot of a main screen, after checking what a screen reader needs there:
    /// every visible field has a label, every visible button and link has a name.
    async fn take(&self, b: &Browser, name: &str) {
        // Let fonts and the last re-render settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let unlabelled = b
            .execute(
                "const shown = (e) => e.offsetParent !== null; \
                 const fields = [...document.querySelectorAll('input, textarea, select')] \
                   .filter(e => shown(e) && e.labels.length === 0 && !e.getAttribute('aria-label')); \
                 const controls = [...document.querySelectorAll('button, a[href]')] \
                   .filter(e => shown(e) && !e.textContent.trim() && !e.getAttribute('aria-label')); \
                 return fields.concat(controls).map(e => e.outerHTML.slice(0, 80));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, serde_json::json!([]), "{name}: unlabelled controls");
        let png = b.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

/// Unlocks a freshly launched page with the passphrase.
async fn launch_and_unlock(b: &Browser, url: &str, pass: &str, shots: Option<&Shots>) {
    b.goto(url).await.unwrap();
    b.wait().at_most(WAIT).for_element(Locator::Css("#unlock-form")).await.unwrap();
    if let Some(s) = shots {
        s.take(b, "unlock").await;
    }
    type_into(b, "#passphrase", pass).await;
    click(b, "#unlock-submit").await;
    b.wait().at_most(WAIT).for_element(Locator::Css("#conversation-list")).await.unwrap();
}

/// Serves one page forever from another localhost port: the attacker's site.
fn serve_forged_page(target_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><html><body>\
         <form id=f method=post enctype=text/plain \
         action=\"http://127.0.0.1:{target_port}/api/conversations/alice/send\">\
         <input name='{{\"text\":\"forged\",\"x\":\"' value='\"}}'></form>\
         <script>\
         fetch('http://127.0.0.1:{target_port}/api/conversations/alice/send', {{method: 'POST', \
         mode: 'no-cors', credentials: 'include', headers: {{'Content-Type': 'text/plain'}}, \
         body: JSON.stringify({{text: 'forged by fetch'}})}}).finally(() => \
         document.getElementById('f').submit());\
         </script></body></html>"
    );
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

fn verify_json(u: &User, server: &str, peer: &str) -> Value {
    let o = run_as(u, server, &["--json", "verify", peer]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_report_and_verify_in_headless_chromium() {
    if !browser_available() {
        require_all(
            "Chromium or ChromeDriver is not installed (apt-get install chromium chromium-driver)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("server");
    let mut server_proc = Proc(spawn_server(&data, port));
    let alice = account(dir.path(), &server, "alice");
    let bob = account(dir.path(), &server, "bob");
    let mallory = account(dir.path(), &server, "mallory");
    // Bob wrote to alice first: alice is bob's contact, bob is a request for alice.
    run_as(&bob, &server, &["send", "alice", "hello alice, it is bob"]);
    // Publish a key-transparency epoch so both keys are in the directory.
    parley(&[
        "--server",
        &server,
        "--token-file",
        data.join("admin.token").to_str().unwrap(),
        "admin",
        "kt",
        "publish",
    ]);

    let (_alice_ui, alice_url) = spawn_ui(&alice, &server);
    let (_bob_ui, bob_url) = spawn_ui(&bob, &server);
    let (_driver, driver) = spawn_chromedriver();
    let shots = Shots::new();
    let a = open_browser(driver, &dir.path().join("chrome-alice"), 1100, 760).await;
    let b = open_browser(driver, &dir.path().join("chrome-bob"), 1100, 760).await;

    // Unlock both pages with their passphrases.
    launch_and_unlock(&a, &alice_url, &passphrase("alice"), Some(&shots)).await;
    launch_and_unlock(&b, &bob_url, &passphrase("bob"), None).await;

    // Alice: bob's message waits under requests; she accepts it.
    until(
        &a,
        "alice's request badge",
        "document.querySelector('#requests-count')?.textContent.trim() === '1'",
    )
    .await;
    click(&a, "#nav-requests").await;
    let req = text_of(&a, "#requests-list li[data-peer='bob'] .request-message").await;
    assert!(req.contains("hello alice, it is bob"), "{req}");
    click(&a, "#requests-list li[data-peer='bob'] .accept").await;
    until(
        &a,
        "alice's chat with bob",
        "document.querySelector('#conversation')?.dataset.peer === 'bob'",
    )
    .await;

    // Bob opens his conversation with alice and marks the page to prove there is no reload.
    b.goto(&format!("http://127.0.0.1:{}/#/chat/alice", port_of(&bob_url))).await.unwrap();
    until(
        &b,
        "bob's chat with alice",
        "document.querySelector('#conversation')?.dataset.peer === 'alice'",
    )
    .await;
    b.execute("window.__noReload = 'still here'; return 1;", vec![]).await.unwrap();

    // Alice writes from her page.
    type_into(&a, "#compose-text", "hi bob, this came from a browser").await;
    click(&a, "#compose-submit").await;
    until(
        &a,
        "alice's message marked sent",
        "[...document.querySelectorAll('#messages .message.outgoing')].some(m => \
         m.querySelector('.text')?.textContent.includes('came from a browser') && \
         m.querySelector('.state')?.textContent.includes('sent'))",
    )
    .await;

    // Bob's page shows it live, without a reload.
    let id = until(
        &b,
        "alice's message on bob's page",
        "[...document.querySelectorAll('#messages .message.incoming')].find(m => \
         m.querySelector('.text')?.textContent.includes('came from a browser'))?.dataset.id",
    )
    .await;
    let id = id.as_str().unwrap().to_string();
    let still = b.execute("return window.__noReload;", vec![]).await.unwrap();
    assert_eq!(still, Value::from("still here"), "bob's page was reloaded");
    shots.take(&b, "conversation").await;

    // Bob reports it.
    click(&b, &format!("#messages .message[data-id='{id}'] .report-button")).await;
    b.wait().at_most(WAIT).for_element(Locator::Css("#report-dialog[open]")).await.unwrap();
    type_into(&b, "#report-reason", "testing the report button").await;
    shots.take(&b, "report").await;
    click(&b, "#report-submit").await;
    let result =
        until(&b, "the report result", "document.querySelector('#report-result')?.textContent")
            .await;
    assert!(result.as_str().unwrap().contains("Report"), "{result}");
    let o = parley(&[
        "--server",
        &server,
        "--token-file",
        data.join("admin.token").to_str().unwrap(),
        "--json",
        "admin",
        "reports",
    ]);
    let reports = String::from_utf8_lossy(&o.stdout);
    assert!(
        reports.contains("came from a browser") && reports.contains("testing the report button"),
        "the moderators do not see the report: {reports}"
    );

    // A stranger writes to bob: a request, live, with its link inert.
    run_as(&mallory, &server, &["send", "bob", "free stuff at www.example.com/win"]);
    until(
        &b,
        "bob's request badge",
        "document.querySelector('#requests-count')?.textContent.trim() === '1'",
    )
    .await;
    click(&b, "#nav-requests").await;
    let item = "#requests-list li[data-peer='mallory']";
    let shown = text_of(&b, &format!("{item} .request-message")).await;
    assert!(shown.contains("example"), "{shown}");
    let links = b
        .execute(
            &format!("return document.querySelectorAll(\"{item} a[href*='example']\").length;"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(links, Value::from(0), "a link in a request is live");
    shots.take(&b, "requests").await;

    // The safety number matches on both pages and on the command line.
    a.goto(&format!("http://127.0.0.1:{}/#/safety/bob", port_of(&alice_url))).await.unwrap();
    b.goto(&format!("http://127.0.0.1:{}/#/safety/alice", port_of(&bob_url))).await.unwrap();
    let sa = until(
        &a,
        "alice's safety number",
        "document.querySelector('#safety-number')?.textContent.trim()",
    )
    .await;
    let sb = until(
        &b,
        "bob's safety number",
        "document.querySelector('#safety-number')?.textContent.trim()",
    )
    .await;
    assert_eq!(sa, sb);
    let digits: String = sa.as_str().unwrap().chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 60);
    until(&a, "the QR code", "document.querySelector('#safety-qr')?.width >= 100").await;
    let kt = until(&a, "the KT status", "document.querySelector('#kt-status')?.textContent").await;
    assert!(kt.as_str().unwrap().contains("verified"), "{kt}");
    shots.take(&a, "safety").await;

    // The other screens, for the record.
    click(&a, "#nav-filters").await;
    a.wait().at_most(WAIT).for_element(Locator::Css("#filter-enabled")).await.unwrap();
    shots.take(&a, "filters").await;
    click(&a, "#nav-account").await;
    let fp =
        until(&a, "the fingerprint", "document.querySelector('#account-fingerprint')?.textContent")
            .await;
    assert!(!fp.as_str().unwrap().is_empty());
    shots.take(&a, "account").await;

    // A forged cross-site form post and fetch from another localhost port, with bob's cookie
    // in the browser, send nothing.
    let forged = serve_forged_page(port_of(&bob_url));
    b.goto(&format!("http://127.0.0.1:{forged}/")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.goto(&format!("http://127.0.0.1:{}/#/chat/alice", port_of(&bob_url))).await.unwrap();
    until(&b, "bob's chat again", "document.querySelectorAll('#messages .message').length >= 2")
        .await;
    let forged_seen = b
        .execute(
            "return document.querySelector('#messages').textContent.includes('forged');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged_seen, Value::Bool(false), "a cross-site request sent a message");
    // Bob leaves the conversation: what arrives now is unread.
    click(&b, "#nav-account").await;
    b.wait().at_most(WAIT).for_element(Locator::Css("#account-fingerprint")).await.unwrap();

    // The server goes away: the page says so, and a message waits in the outbox.
    drop(server_proc);
    a.goto(&format!("http://127.0.0.1:{}/#/chat/bob", port_of(&alice_url))).await.unwrap();
    until(&a, "alice's chat", "document.querySelector('#conversation')?.dataset.peer === 'bob'")
        .await;
    type_into(&a, "#compose-text", "are you there?").await;
    click(&a, "#compose-submit").await;
    until(
        &a,
        "the queued state",
        "[...document.querySelectorAll('#messages .message.outgoing .state')].some(s => \
         s.textContent.includes('queued'))",
    )
    .await;
    until(
        &a,
        "the unreachable banner",
        "!document.querySelector('#status-banner')?.hidden && \
        document.querySelector('#status-banner')?.textContent.includes('unreachable')",
    )
    .await;
    shots.take(&a, "offline").await;
    // It comes back: the outbox is flushed and the message is marked sent.
    server_proc = Proc(spawn_server(&data, port));
    until(
        &a,
        "the queued message sent",
        "[...document.querySelectorAll('#messages .message.outgoing')].some(m => \
         m.querySelector('.text')?.textContent.includes('are you there') && \
         m.querySelector('.state')?.textContent.includes('sent'))",
    )
    .await;

    // Bob's list counts it as unread, live.
    let unread = until(
        &b,
        "bob's unread badge",
        "document.querySelector(\"#conversation-list li[data-peer='alice'] .unread\")?.textContent.trim()",
    )
    .await;
    assert_eq!(unread, Value::from("1"));
    shots.take(&b, "conversations").await;

    // A narrow window still shows the conversation.
    let n = open_browser(driver, &dir.path().join("chrome-narrow"), 400, 760).await;
    // Bob's launch link is used up: the narrow window gets the cookie-less hint page.
    n.goto(&bob_url).await.unwrap();
    let body = text_of(&n, "body").await;
    assert!(body.contains("parley ui"), "{body}");
    n.close().await.unwrap();
    b.set_window_size(400, 760).await.unwrap();
    b.goto(&format!("http://127.0.0.1:{}/#/chat/alice", port_of(&bob_url))).await.unwrap();
    until(
        &b,
        "bob's chat, narrow",
        "document.querySelector('#conversation')?.dataset.peer === 'alice'",
    )
    .await;
    shots.take(&b, "narrow").await;

    // Lock: the keys are forgotten and the unlock screen is back.
    click(&a, "#lock-button").await;
    a.wait().at_most(WAIT).for_element(Locator::Css("#unlock-form")).await.unwrap();

    // A home without an account: the page creates one.
    let carol = user(dir.path(), "carol");
    let (_carol_ui, carol_url) = spawn_ui(&carol, &server);
    let c = open_browser(driver, &dir.path().join("chrome-carol"), 1100, 760).await;
    c.goto(&carol_url).await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Css("#create-form")).await.unwrap();
    type_into(&c, "#create-username", "carol").await;
    type_into(&c, "#create-server", &server).await;
    type_into(&c, "#create-passphrase", &passphrase("carol")).await;
    shots.take(&c, "create").await;
    click(&c, "#create-submit").await;
    c.wait().at_most(WAIT).for_element(Locator::Css("#conversation-list")).await.unwrap();
    let who = text_of(&c, "#whoami").await;
    assert!(who.contains("carol"), "{who}");
    c.close().await.unwrap();

    // The numbers the pages showed are the command line's too (the UIs hold the homes'
    // locks, so read them after closing).
    a.close().await.unwrap();
    b.close().await.unwrap();
    drop(_alice_ui);
    drop(_bob_ui);
    let v = verify_json(&alice, &server, "bob");
    let cli: String =
        v["safety_number"].as_str().unwrap().chars().filter(char::is_ascii_digit).collect();
    assert_eq!(cli, digits);
    drop(server_proc);
}
