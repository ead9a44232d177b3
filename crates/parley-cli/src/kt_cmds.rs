//! Key-transparency commands: `parley admin kt publish` and the independent auditor
//! `parley audit` (docs/KT.md §7).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use parley_api::{KtAuditResponse, KtPublishResponse, KtRoot, KtSignedRoot};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AdminApi;

/// Epochs fetched per audit request (the server's limit).
const AUDIT_SPAN: u64 = 64;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `parley admin kt publish`.
pub(crate) async fn publish(admin: &AdminApi, json: bool) -> Result<()> {
    let resp = admin.call(Method::POST, "/v1/admin/kt/publish", None).await?;
    let p: KtPublishResponse = resp.json().await.context("the server sent an invalid answer")?;
    if json {
        println!(
            "{}",
            json!({"epoch": p.root.epoch, "root": hex(p.root.root.as_slice()), "updates": p.updates})
        );
    } else if p.updates == 0 {
        println!("nothing new to publish; the latest epoch is {}", p.root.epoch);
    } else {
        println!(
            "epoch {} published with {} change(s); root {}",
            p.root.epoch,
            p.updates,
            hex(p.root.root.as_slice())
        );
    }
    Ok(())
}

/// What the auditor keeps between runs: the directory's signing key and the root of every
/// audited epoch (index = epoch, from epoch 0).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditState {
    server: String,
    signing_key: String,
    roots: Vec<String>,
}

fn load_state(path: Option<&Path>) -> Result<AuditState> {
    let Some(path) = path else { return Ok(AuditState::default()) };
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("the audit state {} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuditState::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read the audit state {}", path.display())),
    }
}

fn save_state(path: &Path, state: &AuditState) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn arr<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
    b.try_into().map_err(|_| anyhow::anyhow!("the server sent a malformed {what}"))
}

fn check_signed(key: &[u8; 32], r: &KtSignedRoot) -> Result<[u8; 32]> {
    let root: [u8; 32] = arr(r.root.as_slice(), "root")?;
    let sig: [u8; 64] = arr(r.signature.as_slice(), "signature")?;
    parley_proto::verify_root_signature(key, r.epoch, &root, &sig)
        .map_err(|e| anyhow::anyhow!("epoch {}: {e}", r.epoch))?;
    Ok(root)
}

async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T> {
    let resp = http.get(url).send().await.with_context(|| format!("cannot reach {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Option<parley_api::ErrorBody> = resp.json().await.ok();
        bail!("the server refused: {} ({status})", body.map(|b| b.message).unwrap_or_default());
    }
    resp.json().await.context("the server sent an invalid answer")
}

/// Audits from the last audited epoch to the latest; returns the failures found (empty: the
/// log is consistent). Roots that verified are appended to `state` as it goes.
async fn audit_log(
    server: &str,
    state: &mut AuditState,
    lines: &mut Vec<String>,
) -> Result<Vec<String>> {
    let http = reqwest::Client::new();
    let base = server.trim_end_matches('/');
    let latest: KtRoot = get(&http, &format!("{base}/v1/kt/root")).await?;
    let key: [u8; 32] = arr(latest.signing_key.as_slice(), "signing key")?;
    if !state.signing_key.is_empty() && state.signing_key != hex(&key) {
        return Ok(vec![format!(
            "the directory's signing key changed (was {}, now {})",
            state.signing_key,
            hex(&key)
        )]);
    }
    state.signing_key = hex(&key);
    state.server = server.to_string();
    let latest_root = match check_signed(&key, &latest.root) {
        Ok(r) => r,
        Err(e) => return Ok(vec![format!("the latest root's signature does not verify: {e}")]),
    };
    let end = latest.root.epoch;
    let audited = state.roots.len() as u64;
    if audited > 0 && end < audited - 1 {
        return Ok(vec![format!(
            "the server's latest epoch {end} is older than the audited epoch {} (rollback)",
            audited - 1
        )]);
    }
    if audited == 0 && end == 0 {
        state.roots.push(hex(&latest_root));
    }
    let mut from = audited.saturating_sub(1);
    while from < end {
        let to = end.min(from + AUDIT_SPAN);
        let a: KtAuditResponse =
            get(&http, &format!("{base}/v1/kt/audit?start={from}&end={to}")).await?;
        let mut roots = Vec::with_capacity(a.roots.len());
        for (i, r) in a.roots.iter().enumerate() {
            if r.epoch != from + i as u64 {
                return Ok(vec![format!(
                    "the audit answer for {from}..{to} skips epoch {}",
                    from + i as u64
                )]);
            }
            match check_signed(&key, r) {
                Ok(root) => roots.push(root),
                Err(e) => return Ok(vec![format!("bad signature: {e}")]),
            }
        }
        if roots.len() as u64 != to - from + 1 {
            return Ok(vec![format!("the audit answer for epochs {from}..{to} is incomplete")]);
        }
        if let Some(known) = state.roots.get(from as usize)
            && roots.first().map(|r| hex(r)).as_ref() != Some(known)
        {
            return Ok(vec![format!(
                "the server's root for epoch {from} differs from the audited one (a fork)"
            )]);
        }
        if let Err(e) =
            parley_client::kt::verify_append_only(from, &roots, a.proof.as_slice()).await
        {
            return Ok(vec![format!("epochs {from}..{to} are not append-only: {e}")]);
        }
        for (i, r) in roots.iter().enumerate() {
            let epoch = from + i as u64;
            if epoch as usize == state.roots.len() {
                state.roots.push(hex(r));
            }
        }
        lines.push(format!(
            "epochs {from}..{to}: signatures and append-only proof verified ({} bytes)",
            a.proof.as_slice().len()
        ));
        from = to;
    }
    match state.roots.get(end as usize) {
        Some(r) if *r == hex(&latest_root) => Ok(Vec::new()),
        _ => Ok(vec![format!(
            "the latest root of epoch {end} differs from the audited one (a fork)"
        )]),
    }
}

/// One observed (epoch, root) pair from `parley verify --json`.
#[derive(Debug, Deserialize)]
struct Observed {
    epoch: Option<u64>,
    root: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

fn check_observed(
    state: &AuditState,
    files: &[PathBuf],
    lines: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the observed roots {}", f.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let o: Observed = serde_json::from_str(line).with_context(|| {
                format!("{} line {}: not a `parley verify --json` object", f.display(), n + 1)
            })?;
            let (Some(epoch), Some(root)) = (o.epoch, o.root) else { continue };
            let about = o.username.map(|u| format!(" (verify {u})")).unwrap_or_default();
            match usize::try_from(epoch).ok().and_then(|e| state.roots.get(e)) {
                None => failures.push(format!(
                    "{}{about}: epoch {epoch} is not in the audited log (latest audited: {})",
                    f.display(),
                    state.roots.len().saturating_sub(1)
                )),
                Some(r) if *r != root.to_ascii_lowercase() => failures.push(format!(
                    "{}{about}: FORK: a client was shown root {root} for epoch {epoch}, the audited \
                     log has {r}",
                    f.display()
                )),
                Some(_) => lines.push(format!("{}{about}: epoch {epoch} matches the log", f.display())),
            }
        }
    }
    Ok(failures)
}

/// `parley audit [--state FILE] [--observed FILE ...]`: exit 0 when everything verified, 1
/// with a report of each failure otherwise.
pub(crate) async fn audit(
    server: &str,
    state_path: Option<&Path>,
    observed: &[PathBuf],
    json: bool,
) -> Result<u8> {
    let mut state = load_state(state_path)?;
    if !state.server.is_empty() && state.server != server {
        bail!("the audit state is for {}, not {server}; use another --state", state.server);
    }
    let before = state.roots.len();
    let mut lines = Vec::new();
    let mut failures = audit_log(server, &mut state, &mut lines).await?;
    if let Some(p) = state_path {
        save_state(p, &state)?;
    }
    failures.extend(check_observed(&state, observed, &mut lines)?);
    let latest = state.roots.len().checked_sub(1);
    if json {
        println!(
            "{}",
            json!({
                "ok": failures.is_empty(), "audited_epoch": latest,
                "root": latest.and_then(|e| state.roots.get(e)),
                "new_epochs": state.roots.len().saturating_sub(before), "failures": failures,
            })
        );
    } else {
        for l in &lines {
            println!("{l}");
        }
        match latest {
            Some(e) => println!("audited up to epoch {e}"),
            None => println!("nothing audited yet"),
        }
        for f in &failures {
            println!("FAILED: {f}");
        }
        if failures.is_empty() {
            println!("key directory audit passed");
        }
    }
    Ok(if failures.is_empty() { 0 } else { 1 })
}
