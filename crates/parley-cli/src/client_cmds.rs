//! Client commands: account, send, receive, history, contacts, verify, chat.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use parley_client::{Client, ClientError, ClientOptions, Event, HistoryEntry};
use serde_json::json;
use zeroize::Zeroizing;

use crate::time::rfc3339;

/// Exit code for "accepted locally but not yet sent" (CLI.md).
pub(crate) const EXIT_QUEUED: u8 = 3;
/// The server used when neither `--server` nor the account says otherwise.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7470";

/// What every client command needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The client's state folder.
    pub(crate) home: PathBuf,
    /// `--server`: overrides the account's stored server for this command.
    pub(crate) server: Option<String>,
    /// `--json`.
    pub(crate) json: bool,
    /// `--passphrase-file`.
    pub(crate) passphrase_file: Option<PathBuf>,
    /// Transport options.
    pub(crate) opts: ClientOptions,
}

/// The default home: `$HOME/.parley`.
pub(crate) fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".parley")
}

fn passphrase(ctx: &Ctx, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(file) = &ctx.passphrase_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
        let p = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
        if p.is_empty() {
            bail!("the passphrase file {} is empty", file.display());
        }
        return Ok(p);
    }
    if let Ok(p) = std::env::var("PARLEY_PASSPHRASE") {
        if p.is_empty() {
            bail!("PARLEY_PASSPHRASE is empty");
        }
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: use --passphrase-file FILE, PARLEY_PASSPHRASE, or run in a terminal");
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("passphrase: ").context("cannot read the passphrase")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("again: ").context("cannot read the passphrase")?,
        );
        if *again != *p {
            bail!("the two passphrases differ");
        }
    }
    if p.is_empty() {
        bail!("the passphrase cannot be empty");
    }
    Ok(p)
}

/// Opens the account in the home folder.
pub(crate) async fn open(ctx: &Ctx) -> Result<Client> {
    let pass = passphrase(ctx, false)?;
    Ok(Client::open(&ctx.home, &pass, ctx.server.clone(), &ctx.opts).await?)
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// `parley account create --username NAME`.
pub(crate) async fn account_create(ctx: &Ctx, username: &str) -> Result<u8> {
    let pass = passphrase(ctx, true)?;
    let server = ctx.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let client = Client::create_account(&ctx.home, &server, username, &pass, &ctx.opts).await?;
    if ctx.json {
        print_json(
            json!({"username": client.username(), "server": server, "home": ctx.home.display().to_string()}),
        );
    } else {
        println!(
            "account {} created on {server}; keys are in {}",
            client.username(),
            ctx.home.display()
        );
    }
    client.close().await;
    Ok(0)
}

/// `parley account info`.
pub(crate) async fn account_info(ctx: &Ctx) -> Result<u8> {
    let mut client = open(ctx).await?;
    let info = client.account_info().await?;
    if ctx.json {
        print_json(json!({
            "username": info.username, "device_id": info.device_id, "server": info.server,
            "fingerprint": info.fingerprint, "queued": info.queued, "outbox": info.outbox,
        }));
    } else {
        println!("username     {}", info.username);
        println!("device       {}", info.device_id);
        println!("server       {}", info.server);
        println!("fingerprint  {}", info.fingerprint);
        match info.queued {
            Some(q) => println!("waiting      {q} on the server"),
            None => println!("waiting      unknown (server unreachable)"),
        }
        println!("outbox       {}", info.outbox);
    }
    client.close().await;
    Ok(0)
}

/// `parley account delete [--yes]`.
pub(crate) async fn account_delete(ctx: &Ctx, yes: bool) -> Result<u8> {
    let client = open(ctx).await?;
    let name = client.username().to_string();
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("deleting the account needs confirmation: pass --yes");
        }
        eprint!(
            "This deletes {name} on the server and wipes {}. Type the username to confirm: ",
            ctx.home.display()
        );
        std::io::stderr().flush().ok();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the confirmation")?;
        if line.trim() != name {
            bail!("not confirmed; nothing was deleted");
        }
    }
    client.delete_account().await?;
    if ctx.json {
        print_json(json!({"deleted": name}));
    } else {
        println!("account {name} deleted on the server and locally");
    }
    Ok(0)
}

/// `parley send NAME TEXT` / `--stdin`.
pub(crate) async fn send(ctx: &Ctx, to: &str, text: Option<String>, stdin: bool) -> Result<u8> {
    let text = match (text, stdin) {
        (Some(t), false) => t,
        (None, true) => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("cannot read the message from standard input")?;
            t.trim_end_matches('\n').to_string()
        }
        _ => bail!("give the message as an argument or with --stdin, not both"),
    };
    if text.is_empty() {
        bail!("the message is empty");
    }
    let mut client = open(ctx).await?;
    let r = client.send(to, &text).await;
    client.close().await;
    let r = r?;
    if ctx.json {
        if r.queued {
            print_json(json!({"id": r.id, "queued": true}));
        } else {
            print_json(json!({"id": r.id}));
        }
    } else {
        println!("{}", r.id);
    }
    if r.queued {
        eprintln!(
            "queued: the server could not be reached; the next command that reaches it sends the message"
        );
        return Ok(EXIT_QUEUED);
    }
    Ok(0)
}

fn event_json(e: &Event) -> serde_json::Value {
    match e {
        Event::Message { id, from, text, sent_at, received_at } => json!({
            "id": id, "from": from, "text": text, "sent_at": rfc3339(*sent_at),
            "received_at": rfc3339(*received_at), "request": false, "filtered": false, "verified": "pending",
        }),
        Event::Gap { from, count } => json!({"event": "gap", "from": from, "count": count}),
        Event::KeyChange { from } => json!({"event": "key_change", "from": from}),
        Event::Undecryptable { from, message_id } => {
            json!({"event": "undecryptable", "from": from, "id": message_id})
        }
        Event::SessionReset { from } => json!({"event": "session_reset", "from": from}),
        other => json!({"event": format!("{other:?}")}),
    }
}

fn event_line(e: &Event) -> String {
    match e {
        Event::Message { from, text, sent_at, .. } => {
            format!("[{}] {from}: {text}", rfc3339(*sent_at))
        }
        Event::Gap { from, count } => {
            format!("! {count} message(s) from {from} can no longer be decrypted")
        }
        Event::KeyChange { from } => {
            format!(
                "! the identity key of {from} changed; compare safety numbers with `parley verify {from}`"
            )
        }
        Event::Undecryptable { from, message_id } => {
            format!("! a message from {from} ({message_id}) could not be decrypted")
        }
        Event::SessionReset { from } => format!("! {from} started a new session"),
        other => format!("! {other:?}"),
    }
}

fn print_events(ctx: &Ctx, events: &[Event]) {
    for e in events {
        if ctx.json {
            print_json(event_json(e));
        } else {
            println!("{}", event_line(e));
        }
    }
}

/// `parley receive [--wait SECONDS]`.
pub(crate) async fn receive(ctx: &Ctx, wait: Option<u64>) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = client.receive(wait.map(Duration::from_secs)).await;
    client.close().await;
    print_events(ctx, &r?);
    Ok(0)
}

fn history_json(h: &HistoryEntry) -> serde_json::Value {
    let mut v = json!({
        "id": h.id, "from": h.from, "sent_at": rfc3339(h.sent_at), "outgoing": h.outgoing, "state": h.state,
        "request": false, "filtered": false, "verified": "pending",
    });
    if let Some(obj) = v.as_object_mut() {
        match &h.text {
            Some(t) => obj.insert("text".into(), json!(t)),
            None => obj.insert("event".into(), json!("undecryptable")),
        };
        if let Some(r) = h.received_at {
            obj.insert("received_at".into(), json!(rfc3339(r)));
        }
    }
    v
}

/// `parley history NAME`.
pub(crate) async fn history(ctx: &Ctx, peer: &str) -> Result<u8> {
    let client = open(ctx).await?;
    let entries = client.history(peer).await;
    client.close().await;
    for h in entries? {
        if ctx.json {
            print_json(history_json(&h));
        } else {
            let text = h.text.as_deref().unwrap_or("(could not be decrypted)");
            let mark = if h.state == "failed" { " (not delivered)" } else { "" };
            println!("[{}] {}: {text}{mark}", rfc3339(h.sent_at), h.from);
        }
    }
    Ok(0)
}

/// `parley contacts`.
pub(crate) async fn contacts(ctx: &Ctx) -> Result<u8> {
    let client = open(ctx).await?;
    let list = client.contacts().await;
    client.close().await;
    for c in list? {
        if ctx.json {
            print_json(
                json!({"username": c.username, "fingerprint": c.fingerprint, "messages": c.messages, "verified": "pending"}),
            );
        } else {
            println!("{:<24} {} messages  key {}", c.username, c.messages, c.fingerprint);
        }
    }
    Ok(0)
}

/// `parley verify NAME`.
pub(crate) async fn verify(ctx: &Ctx, peer: &str, accept_new_key: bool) -> Result<u8> {
    let mut client = open(ctx).await?;
    if accept_new_key {
        if let Err(e) = client.accept_key_change(peer).await {
            client.close().await;
            return Err(e.into());
        }
        if !ctx.json {
            println!("{peer}'s new key is now trusted.");
        }
    }
    let n = client.safety_number(peer).await;
    client.close().await;
    let n = n?;
    if ctx.json {
        print_json(
            json!({"safety_number": n.grouped(), "kt_status": "pending", "epoch": null, "root": null}),
        );
    } else {
        println!("safety number with {peer}:");
        println!("  {}", n.grouped());
        println!("Compare it with {peer} in person or over a trusted channel.");
        println!(
            "key transparency: pending (no directory yet: the key is pinned at first contact)"
        );
    }
    Ok(0)
}

/// `parley chat NAME`: lines typed are sent; incoming messages are printed as they arrive.
pub(crate) async fn chat(ctx: &Ctx, peer: &str) -> Result<u8> {
    let mut client = open(ctx).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    if !ctx.json {
        eprintln!("chatting with {peer}; type a line to send it, end with Ctrl-D");
    }
    let mut queued = false;
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                match client.send(peer, &line).await {
                    Ok(r) if r.queued => {
                        queued = true;
                        eprintln!("queued (server unreachable): {}", r.id);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            r = client.receive(Some(Duration::from_secs(2))) => match r {
                Ok(events) => print_events(ctx, &events),
                Err(e) if e.is_unreachable() => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(e) => eprintln!("error: {e}"),
            },
        }
    }
    client.close().await;
    Ok(if queued { EXIT_QUEUED } else { 0 })
}

/// Maps a client error to the process's message (one sentence) — used by main.
pub(crate) fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(c) => c.to_string(),
        None => format!("{e:#}"),
    }
}
