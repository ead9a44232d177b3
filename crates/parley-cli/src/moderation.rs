//! Moderator commands over the admin API: the report queue, one report's verified view, its
//! resolution, and franking-key rotation. The moderator sees only what was reported.

use anyhow::{Context, Result};
use parley_api::{ReportView, ReportedMessage, RotateResponse};
use reqwest::Method;
use serde_json::json;

use crate::AdminApi;
use crate::time::rfc3339;

fn message_json(m: &ReportedMessage) -> serde_json::Value {
    json!({
        "kind": m.kind, "text": m.text, "sender": m.sender, "sender_device": m.sender_device,
        "recipient": m.recipient, "sent_at": m.sent_at_ms.map(rfc3339),
        "server_at": m.server_at_ms.map(rfc3339), "seq": m.seq, "verified": m.verified,
    })
}

fn report_json(r: &ReportView) -> serde_json::Value {
    json!({
        "id": r.id, "reporter": r.reporter, "sender": r.sender, "reason": r.reason,
        "created_at": rfc3339(r.created_at_ms), "status": r.status,
        "messages": r.messages.iter().map(message_json).collect::<Vec<_>>(),
    })
}

fn verdict(m: &ReportedMessage) -> String {
    match &m.verified {
        serde_json::Value::Bool(true) => "verified".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `parley admin reports`.
pub(crate) async fn list(admin: &AdminApi, json: bool) -> Result<()> {
    let resp = admin.call(Method::GET, "/v1/admin/reports", None).await?;
    let reports: Vec<ReportView> =
        resp.json().await.context("the server sent an invalid answer")?;
    if reports.is_empty() && !json {
        println!("no open reports");
    }
    for r in &reports {
        if json {
            println!("{}", report_json(r));
        } else {
            let ok = r.messages.last().is_some_and(|m| m.verified == serde_json::Value::Bool(true));
            println!(
                "#{:<5} {}  {} reported {} ({} message(s), reported message {}){}",
                r.id,
                rfc3339(r.created_at_ms),
                r.reporter,
                r.sender,
                r.messages.len(),
                if ok { "verified" } else { "NOT verified" },
                if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) }
            );
        }
    }
    Ok(())
}

/// `parley admin report show ID`.
pub(crate) async fn show(admin: &AdminApi, id: u64, json: bool) -> Result<()> {
    let resp = admin.call(Method::GET, &format!("/v1/admin/reports/{id}"), None).await?;
    let r: ReportView = resp.json().await.context("the server sent an invalid answer")?;
    if json {
        println!("{}", report_json(&r));
        return Ok(());
    }
    println!("report #{} by {} about {} — {}", r.id, r.reporter, r.sender, r.status);
    if !r.reason.is_empty() {
        println!("reason: {}", r.reason);
    }
    let last = r.messages.len().saturating_sub(1);
    for (i, m) in r.messages.iter().enumerate() {
        let mark = if i == last { "REPORTED" } else { "context " };
        match m.kind.as_str() {
            "gap" => println!("  {mark} [gap] messages the reporter's device never received"),
            _ => println!(
                "  {mark} [{}] {} -> {} (sent {}, server {}): {}  [{}]",
                m.kind,
                m.sender.as_deref().unwrap_or("?"),
                m.recipient.as_deref().unwrap_or("?"),
                m.sent_at_ms.map(rfc3339).unwrap_or_else(|| "?".into()),
                m.server_at_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                m.text.as_deref().unwrap_or("(no text)"),
                verdict(m)
            ),
        }
    }
    Ok(())
}

/// `parley admin report resolve ID --action ACTION`.
pub(crate) async fn resolve(admin: &AdminApi, id: u64, action: &str, json: bool) -> Result<()> {
    admin
        .call(
            Method::POST,
            &format!("/v1/admin/reports/{id}/resolve"),
            Some(json!({ "action": action })),
        )
        .await?;
    if json {
        println!("{}", json!({"id": id, "status": action}));
    } else {
        println!("report #{id} resolved: {action}");
    }
    Ok(())
}

/// `parley admin rotate-franking-key`.
pub(crate) async fn rotate(admin: &AdminApi, json: bool) -> Result<()> {
    let resp = admin.call(Method::POST, "/v1/admin/franking-keys/rotate", None).await?;
    let r: RotateResponse = resp.json().await.context("the server sent an invalid answer")?;
    if json {
        println!("{}", json!({"active": r.active, "retired": r.retired}));
    } else {
        println!(
            "franking key {} is now active; retired keys still verifying: {:?}",
            r.active, r.retired
        );
    }
    Ok(())
}

/// `parley admin account suspend NAME` / `unsuspend NAME`.
pub(crate) async fn suspend(admin: &AdminApi, name: &str, on: bool, json: bool) -> Result<()> {
    parley_api::validate_username(name).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    admin
        .call(
            Method::PUT,
            &format!("/v1/admin/accounts/{name}/suspension"),
            Some(json!({ "suspended": on })),
        )
        .await?;
    if json {
        println!("{}", json!({"username": name, "suspended": on}));
    } else if on {
        println!("{name} is suspended: it can no longer send");
    } else {
        println!("{name}'s suspension is lifted");
    }
    Ok(())
}
