//! `parley demo`: a self-contained tour. An embedded server on a temporary folder and a free
//! loopback port, two accounts, a short conversation both ways, safety numbers, and a look at
//! what the server stored: ciphertext only.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parley_client::{AgeClass, Client, ClientError, ClientOptions, Event};
use sqlx::Row;

const PASSPHRASE: &str = "demo passphrase (the real thing asks for one)";

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// How many of `needles` occur anywhere in the files under `dir`.
fn occurrences(dir: &Path, needles: &[&str]) -> usize {
    let files: Vec<Vec<u8>> =
        files_under(dir).iter().filter_map(|p| std::fs::read(p).ok()).collect();
    needles
        .iter()
        .filter(|n| files.iter().any(|f| f.windows(n.len()).any(|w| w == n.as_bytes())))
        .count()
}

fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, text, .. } => Some((from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

fn err_text(r: &Result<parley_client::SendResult, ClientError>) -> String {
    match r {
        Ok(_) => "sent".into(),
        Err(e) => e.to_string(),
    }
}

/// Runs the demo; returns the exit code.
pub(crate) async fn run() -> Result<u8> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
    println!("Parley demo — everything below runs in {}", tmp.path().display());

    step(1, "Starting an embedded server (SQLite store, loopback only).");
    let server_dir = tmp.path().join("server");
    let config = parley_server::Config {
        data_dir: server_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        ..parley_server::Config::default()
    };
    let server = parley_server::start(config).await?;
    let url = server.url();
    println!("   listening on {url}");

    step(
        2,
        "Creating two accounts. Keys are generated on each device; only public keys are uploaded.",
    );
    let opts = ClientOptions::default();
    let mut alice =
        Client::create_account(&tmp.path().join("alice"), &url, "alice", PASSPHRASE, &opts).await?;
    let mut bob =
        Client::create_account(&tmp.path().join("bob"), &url, "bob", PASSPHRASE, &opts).await?;
    println!(
        "   alice and bob: an Ed25519 account key each, a device with Ed25519 + X25519 identity keys,"
    );
    println!(
        "   a signed X25519 prekey, a signed ML-KEM-1024 last-resort prekey and 50 one-time prekey pairs;"
    );
    println!(
        "   local stores encrypted with XChaCha20-Poly1305 under an Argon2id key from the passphrase."
    );

    step(
        3,
        "alice writes to bob: she fetches bob's prekey bundle, checks its signatures, and runs PQXDH (X25519 + ML-KEM-1024).",
    );
    let outgoing = [
        "Hi Bob! This message is end-to-end encrypted.",
        "The server only ever sees ciphertext.",
        "Post-quantum handshake, Double Ratchet after that.",
    ];
    for text in outgoing {
        let r = alice.send("bob", text).await?;
        if r.queued {
            bail!("the embedded server did not accept the message");
        }
        println!("   sent {} ({} bytes of text)", r.id, text.len());
    }

    step(4, "What the server holds right now (bob has not fetched yet):");
    let db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server_dir.join("parley.db"))
        .read_only(true);
    let mut conn =
        sqlx::ConnectOptions::connect(&db).await.context("cannot open the server's database")?;
    let rows = sqlx::query(
        "SELECT message_id, sender, length(ciphertext) AS n FROM envelopes ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut stored = 0i64;
    for row in &rows {
        let n: i64 = row.try_get("n")?;
        stored += n;
        println!(
            "   envelope {} from {}: {n} bytes of ciphertext",
            row.try_get::<String, _>("message_id")?,
            row.try_get::<String, _>("sender")?
        );
    }
    drop(conn);
    let found = occurrences(&server_dir, &outgoing);
    println!(
        "   searching every file in the server's data folder for each plaintext: {found} of {} found",
        outgoing.len()
    );
    if found != 0 || rows.len() != outgoing.len() {
        bail!("the server's store is not what the demo expects");
    }

    step(
        5,
        "bob receives: the first message carries the handshake; he accepts it and decrypts all three.",
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < outgoing.len() && Instant::now() < deadline {
        got.extend(texts(&bob.receive(Some(Duration::from_secs(2))).await?));
    }
    for (from, text) in &got {
        println!("   {from}: {text}");
    }
    if got.len() != outgoing.len() {
        bail!("bob received {} of {} messages", got.len(), outgoing.len());
    }
    let requests = bob.requests().await?;
    println!(
        "   alice is not bob's contact yet, so her messages wait as a message request ({} from {});",
        requests.first().map_or(0, |r| r.count),
        requests.first().map_or("nobody", |r| r.from.as_str())
    );
    println!("   bob accepts it (replying would accept it too).");
    bob.accept("alice").await?;

    step(
        6,
        "bob replies; alice receives (each direction change is a new Diffie-Hellman ratchet step).",
    );
    for text in ["Hi Alice, got all three.", "Nobody in between can read this either."] {
        bob.send("alice", text).await?;
    }
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replies.len() < 2 && Instant::now() < deadline {
        replies.extend(texts(&alice.receive(Some(Duration::from_secs(2))).await?));
    }
    for (from, text) in &replies {
        println!("   {from}: {text}");
    }
    if replies.len() != 2 {
        bail!("alice received {} of 2 replies", replies.len());
    }

    step(
        7,
        "Safety numbers and key transparency: both sides compute the same 60 digits from the two account keys.",
    );
    let a = alice.safety_number("bob").await?;
    let b = bob.safety_number("alice").await?;
    println!("   alice sees: {}", a.grouped());
    println!("   bob sees:   {}", b.grouped());
    if a.digits() != b.digits() {
        bail!("the safety numbers differ");
    }
    println!("   they match: no one substituted a key between them.");
    println!(
        "   key transparency does that check for every contact: the server publishes its key directory"
    );
    println!(
        "   in signed epochs (every 10 s; here on demand with the admin token, `parley admin kt publish`),"
    );
    println!("   and each client verifies the other's key with a lookup proof (docs/KT.md).");
    let token =
        std::fs::read_to_string(&server.admin_token_path).context("cannot read the admin token")?;
    let published: parley_api::KtPublishResponse = reqwest::Client::new()
        .post(format!("{url}/v1/admin/kt/publish"))
        .bearer_auth(token.trim())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("   epoch {} published", published.root.epoch);
    for (who, client, peer) in [("alice", &alice, "bob"), ("bob", &bob, "alice")] {
        let r = client.kt_verify(peer).await?;
        let root: String = r
            .root
            .map(|x| x.iter().take(8).map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        println!(
            "   {who} checks {peer}'s key: {} (epoch {}, root {root}…)",
            r.status,
            r.epoch.map_or_else(|| "-".to_string(), |e| e.to_string())
        );
        if r.status != parley_client::KtStatus::Verified {
            bail!("{who} could not verify {peer}'s key in the key directory");
        }
    }

    step(8, "The local stores are encrypted too.");
    let in_alice = occurrences(&tmp.path().join("alice"), &outgoing);
    let in_bob = occurrences(&tmp.path().join("bob"), &outgoing);
    println!("   plaintexts found in alice's store files: {in_alice}; in bob's: {in_bob}");
    if in_alice + in_bob != 0 {
        bail!("a local store holds plaintext");
    }

    step(
        9,
        "Verifiable reports (message franking): mallory harasses bob; bob reports it with its context.",
    );
    let mut mallory =
        Client::create_account(&tmp.path().join("mallory"), &url, "mallory", PASSPHRASE, &opts)
            .await?;
    mallory.send("bob", "Answer me.").await?;
    let abusive = mallory.send("bob", "You will regret ignoring me.").await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(texts(&bob.receive(Some(Duration::from_secs(2))).await?));
    }
    if got.len() != 2 {
        bail!("bob received {} of mallory's 2 messages", got.len());
    }
    let report_id = bob.report(&abusive.id, None, "harassment", true).await?;
    println!(
        "   bob reports message {} with its context and blocks mallory: report #{report_id}",
        abusive.id
    );
    let view: parley_api::ReportView = reqwest::Client::new()
        .get(format!("{url}/v1/admin/reports/{report_id}"))
        .bearer_auth(token.trim())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!(
        "   the moderator's view (`parley admin report show {report_id}`): only what bob reported"
    );
    for m in &view.messages {
        let verdict = match &m.verified {
            serde_json::Value::Bool(true) => "verified".to_string(),
            other => other.to_string(),
        };
        println!(
            "     {} -> {}: {:?}  [{verdict}]",
            m.sender.as_deref().unwrap_or("?"),
            m.recipient.as_deref().unwrap_or("?"),
            m.text.as_deref().unwrap_or("")
        );
    }
    if view.messages.last().map(|m| &m.verified) != Some(&serde_json::Value::Bool(true)) {
        bail!("the moderator could not verify the reported message");
    }
    println!(
        "   the server checked its own tag (sender, recipient, time) and the commitment: mallory cannot deny it,"
    );
    println!("   and bob could not have forged it. The moderator saw nothing else.");
    mallory.close().await;

    step(
        10,
        "Protecting minors without reading messages: carol registers as a minor (declared at sign-up).",
    );
    let mut carol = Client::register(
        &tmp.path().join("carol"),
        &url,
        "carol",
        PASSPHRASE,
        &opts,
        AgeClass::Minor,
    )
    .await?;
    let refused = alice.send("carol", "Hi carol, want to chat?").await;
    let unknown = alice.send("nobody", "Hi?").await;
    match (&refused, &unknown) {
        (Err(ClientError::NoSuchUser(_)), Err(ClientError::NoSuchUser(_))) => {
            println!(
                "   alice (an adult stranger) writes to carol: refused by the server — \"{}\"",
                err_text(&refused)
            );
            println!(
                "   alice writes to an account that does not exist:             \"{}\"",
                err_text(&unknown)
            );
            println!("   the same answer, so alice cannot even tell that carol is a minor.");
        }
        _ => bail!("the server did not refuse an adult stranger's message to a minor"),
    }
    carol.send("alice", "Hi Alice, it's Carol from the chess club.").await?;
    println!("   carol writes to alice first; only now may alice answer her.");
    let _ = alice.receive(Some(Duration::from_secs(5))).await?;
    alice.send("carol", "Hi Carol! The club's results are on https://example.org/chess").await?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.is_empty() && Instant::now() < deadline {
        seen.extend(carol.receive(Some(Duration::from_secs(2))).await?);
    }
    match seen.iter().find(|e| matches!(e, Event::Message { .. })) {
        Some(Event::Message { from, filtered: Some(why), .. }) => {
            println!("   carol's device shows the reply from {from} as: [{}]", why.warning());
            println!(
                "   (filters run on carol's device, on by default for minors; nothing is reported anywhere)"
            );
        }
        _ => bail!("carol's on-device link warning did not hide the reply"),
    }

    alice.close().await;
    bob.close().await;
    carol.close().await;
    server.shutdown().await?;
    println!(
        "\nDone: 9 messages; the first 3 were {stored} bytes of ciphertext on the server for {} bytes of text; no plaintext anywhere outside the clients' memory ({:.1} s).",
        outgoing.iter().map(|t| t.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
