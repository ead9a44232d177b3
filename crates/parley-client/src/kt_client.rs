//! The client's key-transparency checks (docs/KT.md §6): the directory's keys pinned at first
//! contact, the last verified (epoch, root) kept and only ever moved forward along verified
//! append-only proofs, contacts' keys checked against lookup proofs, and our own key history
//! monitored.
//!
//! Per user, the local store keeps a status:
//! * `verified`: the keys we use are the ones the directory commits at the epoch shown;
//! * `pending`: the account is newer than the latest epoch; its keys are used, shown as pending
//!   and checked again at the next operation that talks to the server;
//! * `mismatch`: an alarm. The keys we were given (or the server's own answer) differ from the
//!   committed value, or our own history holds a version we did not make. Sending to that user
//!   is refused until the user is verified again.

use std::collections::BTreeMap;

use parley_api::{KtAuditResponse, KtProofResponse, KtRoot, KtSignedRoot};
use parley_proto::{AccountPublicKey, kt_tombstone, kt_value, verify_root_signature};
use sqlx::Row;

use crate::ClientError;
use crate::client::{Client, i64_of, now_ms, u64_of};
use crate::kt::{self, Committed};

/// Most epochs fetched in one audit request (the server's limit).
pub(crate) const AUDIT_SPAN: u64 = 64;

/// A user's key-transparency state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KtStatus {
    /// The keys in use are the ones the directory commits.
    Verified,
    /// Not in the directory yet (or not checked yet): used, shown as pending, checked again.
    Pending,
    /// An alarm: the keys differ from the committed ones. Sends are refused.
    Mismatch,
}

impl KtStatus {
    /// `verified`, `pending` or `mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Pending => "pending",
            Self::Mismatch => "mismatch",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "verified" => Self::Verified,
            "mismatch" => Self::Mismatch,
            _ => Self::Pending,
        }
    }
}

impl std::fmt::Display for KtStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a key-transparency check of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtReport {
    /// The user.
    pub user: String,
    /// The status.
    pub status: KtStatus,
    /// The epoch the status refers to (the epoch of the proof), when one was checked.
    pub epoch: Option<u64>,
    /// The root of that epoch.
    pub root: Option<[u8; 32]>,
    /// Why, for a mismatch.
    pub reason: Option<String>,
}

/// A standing key-transparency alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtAlarm {
    /// The user whose keys are in question (possibly ourselves).
    pub user: String,
    /// What was found.
    pub reason: String,
}

fn arr32(b: &[u8], what: &str) -> Result<[u8; 32], ClientError> {
    b.try_into().map_err(|_| ClientError::Protocol(format!("{what} must be 32 bytes")))
}

fn alarm(reason: impl Into<String>) -> ClientError {
    ClientError::KtAlarm(reason.into())
}

/// The directory's pinned keys and the last verified root.
struct DirState {
    signing: [u8; 32],
    vrf: [u8; 32],
    epoch: u64,
    root: [u8; 32],
}

fn is_not_published(e: &ClientError) -> bool {
    matches!(e, ClientError::Server { status: 404, code, .. } if code == "not_published")
}

impl Client {
    async fn kt_state(&self) -> Result<Option<DirState>, ClientError> {
        let row =
            sqlx::query("SELECT signing_key, vrf_key, epoch, root FROM kt_state WHERE id = 1")
                .fetch_optional(&self.store.pool)
                .await?;
        let Some(r) = row else { return Ok(None) };
        let corrupt = |w: &str| ClientError::CorruptStore(format!("key transparency {w}"));
        let b = |c: &str| -> Result<[u8; 32], ClientError> {
            let v: Vec<u8> = r.try_get(c)?;
            v.as_slice().try_into().map_err(|_| corrupt(c))
        };
        Ok(Some(DirState {
            signing: b("signing_key")?,
            vrf: b("vrf_key")?,
            epoch: u64_of(r.try_get("epoch")?),
            root: b("root")?,
        }))
    }

    /// The directory's keys: pinned at first contact with the directory, compared after.
    async fn kt_directory(&self) -> Result<DirState, ClientError> {
        if let Some(s) = self.kt_state().await? {
            return Ok(s);
        }
        let r: KtRoot = self.http.get("/v1/kt/root").await?;
        let signing = arr32(r.signing_key.as_slice(), "the KT signing key")?;
        let vrf = arr32(r.vrf_public_key.as_slice(), "the VRF key")?;
        let root = arr32(r.root.root.as_slice(), "a root")?;
        let sig: [u8; 64] = r
            .root
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("a root signature must be 64 bytes".into()))?;
        // docs/KT.md §3: every root we accept carries the pinned key's signature.
        verify_root_signature(&signing, r.root.epoch, &root, &sig)
            .map_err(|e| alarm(format!("the directory's first root: {e}")))?;
        sqlx::query(
            "INSERT INTO kt_state (id, signing_key, vrf_key, epoch, root, updated_ms)
             VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&signing[..])
        .bind(&vrf[..])
        .bind(i64_of(r.root.epoch))
        .bind(&root[..])
        .bind(i64_of(now_ms()))
        .execute(&self.store.pool)
        .await?;
        self.kt_state().await?.ok_or_else(|| ClientError::CorruptStore("kt_state".into()))
    }

    /// The last verified (epoch, root), if any.
    pub async fn kt_last_root(&self) -> Result<Option<(u64, [u8; 32])>, ClientError> {
        Ok(self.kt_state().await?.map(|s| (s.epoch, s.root)))
    }

    /// Moves the last verified root forward to `presented`: its signature must verify under the
    /// pinned key; an older epoch is a rollback and an equal epoch with another root a fork
    /// (both refused); a newer one must follow from the last verified root through append-only
    /// proofs whose every root is signed.
    async fn kt_advance(
        &self,
        dir: &DirState,
        presented: &KtSignedRoot,
    ) -> Result<(), ClientError> {
        let root = arr32(presented.root.as_slice(), "a root")?;
        let sig: [u8; 64] = presented
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("a root signature must be 64 bytes".into()))?;
        verify_root_signature(&dir.signing, presented.epoch, &root, &sig)
            .map_err(|e| alarm(format!("epoch {}: {e}", presented.epoch)))?;
        if presented.epoch < dir.epoch {
            return Err(ClientError::KtRollback { have: dir.epoch, got: presented.epoch });
        }
        if presented.epoch == dir.epoch {
            if root != dir.root {
                return Err(alarm(format!(
                    "the server presented two different roots for epoch {} (a fork)",
                    dir.epoch
                )));
            }
            return Ok(());
        }
        let mut from = dir.epoch;
        let mut prev = dir.root;
        while from < presented.epoch {
            let to = presented.epoch.min(from.saturating_add(AUDIT_SPAN));
            let a: KtAuditResponse =
                self.http.get(&format!("/v1/kt/audit?start={from}&end={to}")).await?;
            let mut roots = Vec::with_capacity(a.roots.len());
            for (i, r) in a.roots.iter().enumerate() {
                let want = from + i as u64;
                if r.epoch != want {
                    return Err(alarm(format!("the audit answer skips epoch {want}")));
                }
                let rr = arr32(r.root.as_slice(), "a root")?;
                let rs: [u8; 64] = r.signature.as_slice().try_into().map_err(|_| {
                    ClientError::Protocol("a root signature must be 64 bytes".into())
                })?;
                verify_root_signature(&dir.signing, r.epoch, &rr, &rs)
                    .map_err(|e| alarm(format!("epoch {}: {e}", r.epoch)))?;
                roots.push(rr);
            }
            if roots.len() as u64 != to - from + 1 {
                return Err(alarm(format!(
                    "the audit answer for epochs {from}..{to} is incomplete"
                )));
            }
            if roots.first() != Some(&prev) {
                return Err(alarm(format!(
                    "the server's root for epoch {from} differs from the one verified before (a fork)"
                )));
            }
            kt::verify_append_only(from, &roots, a.proof.as_slice())
                .await
                .map_err(|e| alarm(format!("epochs {from}..{to} are not append-only: {e}")))?;
            prev = roots.last().copied().unwrap_or(prev);
            from = to;
        }
        if prev != root {
            return Err(alarm(format!(
                "the root of epoch {} does not follow from the audited ones (a fork)",
                presented.epoch
            )));
        }
        sqlx::query(
            "UPDATE kt_state SET epoch = ?, root = ?, updated_ms = ? WHERE id = 1 AND epoch < ?",
        )
        .bind(i64_of(presented.epoch))
        .bind(&root[..])
        .bind(i64_of(now_ms()))
        .bind(i64_of(presented.epoch))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    async fn kt_record(
        &self,
        user: &str,
        status: KtStatus,
        value: Option<&[u8]>,
        committed: Option<&Committed>,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        let before = self.kt_status(user).await?;
        sqlx::query(
            "INSERT INTO kt_peers (username, status, value, epoch, version, reason, checked_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET
             status = excluded.status, value = COALESCE(excluded.value, kt_peers.value),
             epoch = excluded.epoch, version = excluded.version, reason = excluded.reason,
             checked_ms = excluded.checked_ms",
        )
        .bind(user)
        .bind(status.as_str())
        .bind(value)
        .bind(committed.map(|c| i64_of(c.epoch)))
        .bind(committed.map(|c| i64_of(c.version)))
        .bind(reason)
        .bind(i64_of(now_ms()))
        .execute(&self.store.pool)
        .await?;
        if status == KtStatus::Mismatch && before != Some(KtStatus::Mismatch) {
            self.record_kt_alarm(user, reason.unwrap_or("mismatch")).await?;
        }
        Ok(())
    }

    /// The stored status of `user` (`None`: never checked).
    pub async fn kt_status(&self, user: &str) -> Result<Option<KtStatus>, ClientError> {
        let s: Option<String> =
            sqlx::query_scalar("SELECT status FROM kt_peers WHERE username = ?")
                .bind(user)
                .fetch_optional(&self.store.pool)
                .await?;
        Ok(s.map(|s| KtStatus::parse(&s)))
    }

    /// Every stored status, by user (ours included).
    pub async fn kt_statuses(&self) -> Result<BTreeMap<String, KtStatus>, ClientError> {
        let rows = sqlx::query("SELECT username, status FROM kt_peers")
            .fetch_all(&self.store.pool)
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let s: String = r.try_get("status")?;
            out.insert(r.try_get("username")?, KtStatus::parse(&s));
        }
        Ok(out)
    }

    /// Records a directory-level alarm (rollback, fork, failed audit or signature).
    pub(crate) async fn kt_directory_alarm(&self, reason: &str) -> Result<(), ClientError> {
        sqlx::query("UPDATE kt_state SET alarm = ? WHERE id = 1")
            .bind(reason)
            .execute(&self.store.pool)
            .await?;
        self.record_kt_alarm("", reason).await
    }

    /// Standing alarms: the directory's (user `""`), then every user (ourselves included)
    /// whose status is `mismatch`.
    pub async fn kt_alarms(&self) -> Result<Vec<KtAlarm>, ClientError> {
        let mut out = Vec::new();
        let dir: Option<Option<String>> =
            sqlx::query_scalar("SELECT alarm FROM kt_state WHERE id = 1")
                .fetch_optional(&self.store.pool)
                .await?;
        if let Some(Some(reason)) = dir {
            out.push(KtAlarm { user: String::new(), reason });
        }
        let rows = sqlx::query(
            "SELECT username, reason FROM kt_peers WHERE status = 'mismatch' ORDER BY username",
        )
        .fetch_all(&self.store.pool)
        .await?;
        for r in rows {
            out.push(KtAlarm {
                user: r.try_get("username")?,
                reason: r
                    .try_get::<Option<String>, _>("reason")?
                    .unwrap_or_else(|| "mismatch".into()),
            });
        }
        Ok(out)
    }

    /// Checks `user`'s directory entry at the latest epoch. `used_value` is the value of the
    /// keys we were given (from a bundle), `used_key` the account key we use for them: both
    /// must match what the directory commits, and so must the keys the server serves now.
    /// A user not in the directory yet is `pending`.
    pub(crate) async fn kt_check(
        &self,
        user: &str,
        used_value: Option<[u8; 32]>,
        used_key: Option<&AccountPublicKey>,
    ) -> Result<KtReport, ClientError> {
        let dir = self.kt_directory().await?;
        let resp: KtProofResponse = match self.http.get(&format!("/v1/kt/lookup/{user}")).await {
            Ok(r) => r,
            Err(e) if is_not_published(&e) => {
                let v = used_value.as_ref().map(|v| &v[..]);
                self.kt_record(user, KtStatus::Pending, v, None, None).await?;
                return Ok(KtReport {
                    user: user.to_string(),
                    status: KtStatus::Pending,
                    epoch: None,
                    root: None,
                    reason: None,
                });
            }
            Err(e) => return Err(crate::client::not_found_as_user(e, user)),
        };
        if resp.username != user {
            return Err(ClientError::Protocol("the lookup answered for another user".into()));
        }
        self.kt_advance(&dir, &resp.root).await?;
        let root = arr32(resp.root.root.as_slice(), "a root")?;
        let verdict = match kt::verify_lookup(
            &dir.vrf,
            &root,
            resp.root.epoch,
            user,
            resp.proof.as_slice(),
        ) {
            Err(e) => Err(format!("the lookup proof does not verify: {e}")),
            Ok(c) => {
                let served = kt_value(resp.account_key.as_slice(), resp.device_list.as_slice());
                if c.value == kt_tombstone() {
                    Err("the directory says this account was deleted".to_string())
                } else if c.value != served {
                    Err("the keys the server serves are not the ones in the key directory".into())
                } else if used_value.is_some_and(|v| v[..] != c.value[..]) {
                    Err("the keys we were given are not the ones in the key directory".into())
                } else if used_key.is_some_and(|k| k.as_bytes()[..] != *resp.account_key.as_slice())
                {
                    Err("the identity key in use is not the one in the key directory".into())
                } else {
                    Ok(c)
                }
            }
        };
        let (status, reason, committed) = match verdict {
            Ok(c) => (KtStatus::Verified, None, Some(c)),
            Err(r) => (KtStatus::Mismatch, Some(r), None),
        };
        let v = used_value.as_ref().map(|v| &v[..]);
        self.kt_record(user, status, v, committed.as_ref(), reason.as_deref()).await?;
        Ok(KtReport {
            user: user.to_string(),
            status,
            epoch: Some(resp.root.epoch),
            root: Some(root),
            reason,
        })
    }

    /// Checks `user` again with the value we used for them before (for `parley verify` and
    /// for pending users).
    pub async fn kt_verify(&self, user: &str) -> Result<KtReport, ClientError> {
        if user == self.username {
            return self.kt_monitor_self().await;
        }
        let row = sqlx::query("SELECT value FROM kt_peers WHERE username = ?")
            .bind(user)
            .fetch_optional(&self.store.pool)
            .await?;
        let used: Option<[u8; 32]> = match row {
            Some(r) => {
                r.try_get::<Option<Vec<u8>>, _>("value")?.and_then(|v| v.as_slice().try_into().ok())
            }
            None => None,
        };
        let pinned = self.pinned_key(user).await?;
        self.kt_check(user, used, pinned.as_ref()).await
    }

    /// Monitors our own account: every version the directory ever committed for our username
    /// must be the value of our own keys; any other is an alarm (someone changed our key).
    pub async fn kt_monitor_self(&self) -> Result<KtReport, ClientError> {
        let me = self.username.clone();
        let dir = self.kt_directory().await?;
        let resp: KtProofResponse = match self.http.get("/v1/kt/history").await {
            Ok(r) => r,
            Err(e) if is_not_published(&e) => {
                self.kt_record(&me, KtStatus::Pending, None, None, None).await?;
                return Ok(KtReport {
                    user: me,
                    status: KtStatus::Pending,
                    epoch: None,
                    root: None,
                    reason: None,
                });
            }
            Err(e) => return Err(e),
        };
        self.kt_advance(&dir, &resp.root).await?;
        let root = arr32(resp.root.root.as_slice(), "a root")?;
        let mine = kt_value(self.account_public().as_bytes(), &self.own_device_list().await?);
        let verdict = match kt::verify_history(
            &dir.vrf,
            &root,
            resp.root.epoch,
            &me,
            resp.proof.as_slice(),
        ) {
            Err(e) => Err(format!("our key history proof does not verify: {e}")),
            Ok(versions) => match versions.iter().find(|c| c.value[..] != mine[..]) {
                Some(c) => Err(format!(
                    "version {} of our own key (epoch {}) was not made by this account",
                    c.version, c.epoch
                )),
                None => versions.into_iter().next().ok_or_else(|| "empty key history".into()),
            },
        };
        let (status, reason, committed) = match verdict {
            Ok(c) => (KtStatus::Verified, None, Some(c)),
            Err(r) => (KtStatus::Mismatch, Some(r), None),
        };
        self.kt_record(&me, status, Some(&mine[..]), committed.as_ref(), reason.as_deref()).await?;
        Ok(KtReport { user: me, status, epoch: Some(resp.root.epoch), root: Some(root), reason })
    }

    /// Re-checks every user still pending (called by operations that reach the server).
    pub(crate) async fn kt_recheck_pending(&self) -> Result<Vec<KtReport>, ClientError> {
        let users: Vec<String> =
            sqlx::query_scalar("SELECT username FROM kt_peers WHERE status = 'pending'")
                .fetch_all(&self.store.pool)
                .await?;
        let mut out = Vec::new();
        for u in users {
            out.push(self.kt_verify(&u).await?);
        }
        Ok(out)
    }

    /// Refuses sending to a user whose keys are in alarm.
    pub(crate) async fn kt_gate_send(&self, user: &str) -> Result<(), ClientError> {
        if self.kt_status(user).await? == Some(KtStatus::Mismatch) {
            let reason: Option<String> =
                sqlx::query_scalar("SELECT reason FROM kt_peers WHERE username = ?")
                    .bind(user)
                    .fetch_optional(&self.store.pool)
                    .await?
                    .flatten();
            return Err(ClientError::KtMismatch {
                user: user.to_string(),
                reason: reason.unwrap_or_else(|| "mismatch".into()),
            });
        }
        Ok(())
    }

    async fn own_device_list(&self) -> Result<Vec<u8>, ClientError> {
        Ok(sqlx::query_scalar("SELECT device_list FROM account WHERE id = 1")
            .fetch_one(&self.store.pool)
            .await?)
    }
}
