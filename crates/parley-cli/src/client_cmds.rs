//! Client commands: account, send, receive, history, contacts, verify, chat.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;

use parley_client::{AgeClass, Client, ClientError, ClientOptions, Event, HistoryEntry, KtStatus};
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
    let client = Client::open(&ctx.home, &pass, ctx.server.clone(), &ctx.opts).await?;
    // Standing key-transparency alarms are shown by every command until resolved.
    match client.kt_alarms().await {
        Ok(alarms) => {
            for a in alarms {
                eprintln!("! {}", alarm_line(a.user.as_str(), &a.reason));
            }
        }
        Err(e) => {
            client.close().await;
            return Err(e.into());
        }
    }
    Ok(client)
}

fn alarm_line(user: &str, reason: &str) -> String {
    if user.is_empty() {
        format!("KEY TRANSPARENCY ALARM: {reason}")
    } else {
        format!("KEY TRANSPARENCY ALARM for {user}: {reason}; sending to {user} is blocked")
    }
}

/// The key-transparency state of `user`'s key as CLI.md names it (never checked: pending).
fn kt_of(kt: &BTreeMap<String, KtStatus>, user: &str) -> &'static str {
    kt.get(user).copied().unwrap_or(KtStatus::Pending).as_str()
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// `parley account create --username NAME [--minor]`.
pub(crate) async fn account_create(ctx: &Ctx, username: &str, minor: bool) -> Result<u8> {
    let pass = passphrase(ctx, true)?;
    let server = ctx.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let age = AgeClass::from_minor(minor);
    let client = Client::register(&ctx.home, &server, username, &pass, &ctx.opts, age).await?;
    if ctx.json {
        print_json(json!({
            "username": client.username(), "server": server,
            "home": ctx.home.display().to_string(), "age_class": age.as_str(),
        }));
    } else {
        let kind = if minor { " (minor)" } else { "" };
        println!(
            "account {}{kind} created on {server}; keys are in {}",
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
            "age_class": info.age_class.as_str(),
        }));
    } else {
        println!("username     {}", info.username);
        println!("device       {}", info.device_id);
        println!("server       {}", info.server);
        println!("fingerprint  {}", info.fingerprint);
        println!("age class    {}", info.age_class.as_str());
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

/// How messages are printed: `--all` (requests too) and `--reveal` (filtered text too).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Show {
    pub(crate) all: bool,
    pub(crate) reveal: bool,
}

fn message_json(
    base: serde_json::Value,
    text: Option<&str>,
    request: bool,
    filtered: Option<&parley_client::filters::FilterReason>,
    show: Show,
    verified: &str,
) -> serde_json::Value {
    let mut v = base;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("request".into(), json!(request));
        obj.insert("filtered".into(), json!(filtered.is_some()));
        obj.insert("verified".into(), json!(verified));
        if let Some(f) = filtered {
            obj.insert("filter_reason".into(), json!(f.as_str()));
        }
        match text {
            Some(t) if filtered.is_none() || show.reveal => {
                obj.insert("text".into(), json!(t));
            }
            Some(_) => {}
            None => {
                obj.insert("event".into(), json!("undecryptable"));
            }
        }
    }
    v
}

/// One line of text for a message, with the request mark and the filter warning.
fn message_line(
    at: u64,
    from: &str,
    text: &str,
    request: bool,
    filtered: Option<&parley_client::filters::FilterReason>,
    show: Show,
) -> String {
    let req = if request { " (request)" } else { "" };
    let body = match filtered {
        Some(f) if show.reveal => format!("{text}  [{}]", f.warning()),
        Some(f) => format!("[{}; show it with --reveal]", f.warning()),
        None => text.to_string(),
    };
    format!("[{}] {from}{req}: {body}", rfc3339(at))
}

fn event_json(e: &Event, show: Show, kt: &BTreeMap<String, KtStatus>) -> serde_json::Value {
    match e {
        Event::Message { id, from, text, sent_at, received_at, request, filtered } => message_json(
            json!({"id": id, "from": from, "sent_at": rfc3339(*sent_at), "received_at": rfc3339(*received_at)}),
            Some(text),
            *request,
            filtered.as_ref(),
            show,
            kt_of(kt, from),
        ),
        Event::KtAlarm { user, reason } => {
            json!({"event": "kt_alarm", "from": user, "reason": reason, "verified": "mismatch"})
        }
        Event::Gap { from, count } => json!({"event": "gap", "from": from, "count": count}),
        Event::KeyChange { from } => json!({"event": "key_change", "from": from}),
        Event::Undecryptable { from, message_id } => {
            json!({"event": "undecryptable", "from": from, "id": message_id})
        }
        Event::SessionReset { from } => json!({"event": "session_reset", "from": from}),
        Event::Dropped { from, message_id, reason } => {
            json!({"event": "dropped", "from": from, "id": message_id, "reason": reason})
        }
        other => json!({"event": format!("{other:?}")}),
    }
}

fn event_line(e: &Event, show: Show, kt: &BTreeMap<String, KtStatus>) -> String {
    match e {
        Event::Message { from, text, sent_at, request, filtered, .. } => {
            let line = message_line(*sent_at, from, text, *request, filtered.as_ref(), show);
            match kt_of(kt, from) {
                "verified" => line,
                other => format!("{line}  [key {other}]"),
            }
        }
        Event::KtAlarm { user, reason } => {
            format!("! {}", alarm_line(user.as_deref().unwrap_or(""), reason))
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
        Event::Dropped { from, message_id, reason } => {
            format!("! a message from {from} ({message_id}) was dropped unread: {reason}")
        }
        other => format!("! {other:?}"),
    }
}

/// Prints events; requests only with `--all`. Returns how many request messages were held back.
fn print_events(ctx: &Ctx, events: &[Event], show: Show, kt: &BTreeMap<String, KtStatus>) -> usize {
    let mut held = 0;
    for e in events {
        if let Event::Message { request: true, .. } = e
            && !show.all
        {
            held += 1;
            continue;
        }
        if ctx.json {
            print_json(event_json(e, show, kt));
        } else {
            println!("{}", event_line(e, show, kt));
        }
    }
    held
}

/// `parley receive [--wait SECONDS] [--all] [--reveal]`.
pub(crate) async fn receive(ctx: &Ctx, wait: Option<u64>, show: Show) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = client.receive(wait.map(Duration::from_secs)).await;
    let kt = client.kt_statuses().await;
    client.close().await;
    let held = print_events(ctx, &r?, show, &kt?);
    if held > 0 && !ctx.json {
        eprintln!(
            "{held} message(s) from people who are not your contacts yet: see `parley requests` \
             (or `parley receive --all`)"
        );
    }
    Ok(0)
}

fn history_json(
    h: &HistoryEntry,
    show: Show,
    kt: &BTreeMap<String, KtStatus>,
) -> serde_json::Value {
    let mut v = message_json(
        json!({"id": h.id, "from": h.from, "sent_at": rfc3339(h.sent_at), "outgoing": h.outgoing, "state": h.state}),
        h.text.as_deref(),
        h.request,
        h.filtered.as_ref(),
        show,
        kt_of(kt, &h.from),
    );
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = h.received_at {
            obj.insert("received_at".into(), json!(rfc3339(r)));
        }
        if h.text.is_none() && h.state == "dropped" {
            obj.insert("event".into(), json!("dropped"));
        }
    }
    v
}

/// `parley history NAME [--reveal]`.
pub(crate) async fn history(ctx: &Ctx, peer: &str, show: Show) -> Result<u8> {
    let client = open(ctx).await?;
    let entries = client.history(peer).await;
    let kt = client.kt_statuses().await;
    client.close().await;
    let kt = kt?;
    for h in entries? {
        if ctx.json {
            print_json(history_json(&h, show, &kt));
        } else {
            let text = h.text.as_deref().unwrap_or(if h.state == "dropped" {
                "(dropped: its franking commitment did not open)"
            } else {
                "(could not be decrypted)"
            });
            let mark = if h.state == "failed" { " (not delivered)" } else { "" };
            let line = message_line(h.sent_at, &h.from, text, h.request, h.filtered.as_ref(), show);
            let key = match kt_of(&kt, &h.from) {
                "verified" => String::new(),
                other => format!("  [key {other}]"),
            };
            println!("{line}{mark}{key}");
        }
    }
    Ok(0)
}

/// `parley contacts`.
pub(crate) async fn contacts(ctx: &Ctx) -> Result<u8> {
    let client = open(ctx).await?;
    let list = client.contacts().await;
    let kt = client.kt_statuses().await;
    client.close().await;
    let kt = kt?;
    for c in list? {
        let verified = kt_of(&kt, &c.username);
        if ctx.json {
            print_json(
                json!({"username": c.username, "fingerprint": c.fingerprint, "messages": c.messages, "verified": verified}),
            );
        } else {
            println!(
                "{:<24} {} messages  key {}  ({verified})",
                c.username, c.messages, c.fingerprint
            );
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
    // Key transparency: check the key again now; offline, report what was last verified.
    let checked = match client.kt_verify(peer).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_unreachable() => Ok(None),
        Err(e) => Err(e),
    };
    let stored = client.kt_status(peer).await;
    let last = client.kt_last_root().await;
    client.close().await;
    let n = n?;
    let checked = checked?;
    let status = match &checked {
        Some(r) => r.status,
        None => stored?.unwrap_or(KtStatus::Pending),
    };
    let (epoch, root) = match (&checked, last?) {
        (Some(r), _) if r.epoch.is_some() => (r.epoch, r.root),
        (_, Some((e, root))) => (Some(e), Some(root)),
        _ => (None, None),
    };
    let root_hex = root.map(|r| r.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let reason = checked.as_ref().and_then(|r| r.reason.clone());
    if ctx.json {
        print_json(json!({
            "username": peer, "safety_number": n.grouped(), "kt_status": status.as_str(),
            "epoch": epoch, "root": root_hex, "reason": reason, "server": ctx.server,
        }));
    } else {
        println!("safety number with {peer}:");
        println!("  {}", n.grouped());
        println!("Compare it with {peer} in person or over a trusted channel.");
        let at = match (epoch, &root_hex) {
            (Some(e), Some(r)) => format!(" (epoch {e}, root {r})"),
            _ => String::new(),
        };
        match status {
            KtStatus::Verified => {
                println!("key transparency: verified{at}: this key is the one in the key directory")
            }
            KtStatus::Pending => println!(
                "key transparency: pending{at}: {peer}'s key is not in the key directory yet; \
                 it is checked again at the next epoch"
            ),
            KtStatus::Mismatch => println!(
                "key transparency: MISMATCH{at}: {}; sending to {peer} is blocked",
                reason.as_deref().unwrap_or("the key differs from the key directory")
            ),
        }
    }
    Ok(if status == KtStatus::Mismatch { 1 } else { 0 })
}

/// `parley chat NAME`: lines typed are sent; incoming messages are printed as they arrive.
pub(crate) async fn chat(ctx: &Ctx, peer: &str) -> Result<u8> {
    let mut client = open(ctx).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    // A typed line interrupts the listening round between frames (never half way through a
    // message: see `Client::receive_until`).
    let typed = std::sync::Arc::new(tokio::sync::Notify::new());
    let typed_in = typed.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
            typed_in.notify_one();
        }
        // End of input: close the channel, then wake the loop so that it sees it closed.
        drop(tx);
        typed_in.notify_one();
    });
    if !ctx.json {
        eprintln!("chatting with {peer}; type a line to send it, end with Ctrl-D");
    }
    let mut queued = false;
    'chat: loop {
        loop {
            match rx.try_recv() {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => match client.send(peer, &line).await {
                    Ok(r) if r.queued => {
                        queued = true;
                        eprintln!("queued (server unreachable): {}", r.id);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("error: {e}"),
                },
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break 'chat,
            }
        }
        match client.receive_until(Some(Duration::from_secs(25)), typed.notified()).await {
            Ok(events) => {
                // Requests from others wait for `parley requests`.
                let kt = client.kt_statuses().await.unwrap_or_default();
                print_events(ctx, &events, Show::default(), &kt);
            }
            Err(e) if e.is_unreachable() => {
                tokio::select! {
                    () = typed.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => eprintln!("error: {e}"),
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
