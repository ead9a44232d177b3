//! Safety commands (docs/SAFETY.md): message requests, blocks, on-device filters.

use anyhow::Result;
use clap::Subcommand;
use parley_client::filters::FilterRule;
use serde_json::json;

use crate::client_cmds::{Ctx, open};
use crate::time::rfc3339;

fn done(ctx: &Ctx, v: serde_json::Value, line: String) {
    if ctx.json {
        println!("{v}");
    } else {
        println!("{line}");
    }
}

/// `parley requests`.
pub(crate) async fn requests(ctx: &Ctx) -> Result<u8> {
    let client = open(ctx).await?;
    let list = client.requests().await;
    client.close().await;
    let list = list?;
    if list.is_empty() && !ctx.json {
        println!("no message requests");
    }
    for r in list {
        done(
            ctx,
            json!({"from": r.from, "count": r.count, "first_at": rfc3339(r.first_at)}),
            format!(
                "{:<24} {} message(s) since {}  (parley accept|decline|block {})",
                r.from,
                r.count,
                rfc3339(r.first_at),
                r.from
            ),
        );
    }
    Ok(0)
}

/// `parley accept NAME` / `parley decline NAME`.
pub(crate) async fn answer_request(ctx: &Ctx, name: &str, accept: bool) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = if accept { client.accept(name).await } else { client.decline(name).await };
    client.close().await;
    r?;
    if accept {
        done(
            ctx,
            json!({"accepted": name}),
            format!("{name} is now a contact; their messages are in `parley history {name}`"),
        );
    } else {
        done(ctx, json!({"declined": name}), format!("request from {name} deleted"));
    }
    Ok(0)
}

/// `parley report MESSAGE_ID [--context N] [--reason TEXT] [--block]`.
pub(crate) async fn report(
    ctx: &Ctx,
    message_id: &str,
    context: Option<usize>,
    reason: Option<String>,
    block: bool,
) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = client.report(message_id, context, reason.as_deref().unwrap_or(""), block).await;
    client.close().await;
    let id = r?;
    let also = if block { " and the sender is blocked" } else { "" };
    done(
        ctx,
        json!({"report": id, "message": message_id, "blocked": block}),
        format!("report {id} sent to the server's moderators{also}"),
    );
    Ok(0)
}

/// `parley block NAME [--report]` / `parley unblock NAME`.
pub(crate) async fn block(ctx: &Ctx, name: &str, on: bool, report: bool) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = async {
        if report {
            let last = client.last_received_from(name).await?.ok_or_else(|| {
                parley_client::ClientError::InvalidReport(format!(
                    "no message from {name} to report"
                ))
            })?;
            let id = client.report(&last, None, "reported while blocking", false).await?;
            if !ctx.json {
                println!("report {id} sent to the server's moderators");
            }
        }
        if on { client.block(name).await } else { client.unblock(name).await }
    }
    .await;
    client.close().await;
    r?;
    if on {
        done(
            ctx,
            json!({"blocked": name}),
            format!("{name} is blocked: the server no longer delivers their messages to you"),
        );
    } else {
        done(ctx, json!({"unblocked": name}), format!("{name} is unblocked"));
    }
    Ok(0)
}

/// `parley filters ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FiltersCommand {
    /// Show the settings and your own filters (the default).
    Show,
    /// Hide messages that match the default list or your filters.
    On,
    /// Stop hiding messages that match filters.
    Off,
    /// Link warnings: hide messages that contain links behind a warning.
    Links {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Add a phrase (case-insensitive) or, with --regex, a regular expression.
    Add {
        /// The phrase or expression.
        pattern: String,
        /// PATTERN is a regular expression.
        #[arg(long)]
        regex: bool,
    },
    /// Remove one of your filters.
    Remove {
        /// The phrase or expression.
        pattern: String,
        /// PATTERN is a regular expression.
        #[arg(long)]
        regex: bool,
    },
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Runs a `parley filters` subcommand.
pub(crate) async fn filters(ctx: &Ctx, cmd: Option<FiltersCommand>) -> Result<u8> {
    let mut client = open(ctx).await?;
    let r = filters_with(ctx, &mut client, cmd.unwrap_or(FiltersCommand::Show)).await;
    client.close().await;
    r
}

async fn filters_with(
    ctx: &Ctx,
    client: &mut parley_client::Client,
    cmd: FiltersCommand,
) -> Result<u8> {
    match cmd {
        FiltersCommand::Show => {}
        FiltersCommand::On => client.set_filters(Some(true), None).await?,
        FiltersCommand::Off => client.set_filters(Some(false), None).await?,
        FiltersCommand::Links { state } => client.set_filters(None, Some(state == "on")).await?,
        FiltersCommand::Add { pattern, regex } => {
            client.add_filter(FilterRule { pattern, regex }).await?;
        }
        FiltersCommand::Remove { pattern, regex } => {
            if !client.remove_filter(&FilterRule { pattern: pattern.clone(), regex }).await? {
                anyhow::bail!("there is no filter {pattern:?}");
            }
        }
    }
    let s = client.filter_settings().await?;
    if ctx.json {
        let rules: Vec<_> =
            s.rules.iter().map(|r| json!({"pattern": r.pattern, "regex": r.regex})).collect();
        println!(
            "{}",
            json!({"filters": on_off(s.enabled), "link_warnings": on_off(s.link_warnings),
                   "age_defaults": s.defaults, "default_list": s.enabled, "rules": rules})
        );
    } else {
        let why = if s.defaults { " (default for this account's age class)" } else { "" };
        println!("filters        {}{why}", on_off(s.enabled));
        println!("link warnings  {}", on_off(s.link_warnings));
        println!(
            "default list   {} phrases{}",
            parley_client::filters::DEFAULT_LIST
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count(),
            if s.enabled { "" } else { " (not applied while filters are off)" }
        );
        if s.rules.is_empty() {
            println!("your filters   none (add one with `parley filters add PHRASE`)");
        }
        for r in &s.rules {
            let kind = if r.regex { "regex " } else { "phrase" };
            println!("  {kind} {}", r.pattern);
        }
    }
    Ok(0)
}
