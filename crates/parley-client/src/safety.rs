//! Message requests, blocks and on-device filters (docs/SAFETY.md).
//!
//! * A peer becomes a **contact** when this account writes to it or accepts its request. Until
//!   then everything it sends is a **request**: stored and acknowledged, shown only on demand,
//!   with links made inert, and answered with nothing (this client sends no read receipts or
//!   typing indicators to anyone; when they exist they must stay off for requests).
//! * A **block** is enforced by the server (nothing from the blocked account is delivered) and
//!   also here (anything that raced the block is dropped unread).
//! * **Filters** run here, on the text after decryption, before it is displayed.

use sqlx::Row;

use crate::client::{Client, i64_of, now_ms, u64_of};
use crate::error::ClientError;
use crate::filters::{self, Filter, FilterReason, FilterRule, FilterSettings};

/// A pending message request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The requester.
    pub from: String,
    /// Messages waiting from them.
    pub count: u64,
    /// When the first arrived here, ms since the Unix epoch.
    pub first_at: u64,
}

/// What this account knows of a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerState {
    /// A contact: we wrote to them or accepted their request.
    pub(crate) accepted: bool,
    /// Blocked by us.
    pub(crate) blocked: bool,
}

const FILTERS_KEY: &str = "filters";
const LINKS_KEY: &str = "link_warnings";

fn blocks_path(peer: &str) -> String {
    format!("/v1/blocks/{peer}")
}

pub(crate) async fn peer_state_in(
    conn: &mut sqlx::SqliteConnection,
    peer: &str,
) -> Result<Option<PeerState>, ClientError> {
    let row = sqlx::query("SELECT accepted, blocked FROM peers WHERE username = ?")
        .bind(peer)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Some(PeerState {
            accepted: r.try_get::<i64, _>("accepted")? != 0,
            blocked: r.try_get::<i64, _>("blocked")? != 0,
        }),
        None => None,
    })
}

/// Records a peer that wrote to us (a request unless already known).
pub(crate) async fn note_sender_in(
    conn: &mut sqlx::SqliteConnection,
    peer: &str,
) -> Result<PeerState, ClientError> {
    if let Some(s) = peer_state_in(conn, peer).await? {
        return Ok(s);
    }
    sqlx::query("INSERT INTO peers (username, accepted, blocked, since_ms) VALUES (?, 0, 0, ?)")
        .bind(peer)
        .bind(i64_of(now_ms()))
        .execute(&mut *conn)
        .await?;
    Ok(PeerState::default())
}

impl Client {
    pub(crate) async fn peer_state(&self, peer: &str) -> Result<PeerState, ClientError> {
        let mut conn = self.store.pool.acquire().await?;
        Ok(peer_state_in(&mut conn, peer).await?.unwrap_or_default())
    }

    /// Makes `peer` a contact (we wrote to them, or accepted their request).
    pub(crate) async fn mark_accepted(&self, peer: &str) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO peers (username, accepted, blocked, since_ms) VALUES (?, 1, 0, ?)
             ON CONFLICT (username) DO UPDATE SET accepted = 1",
        )
        .bind(peer)
        .bind(i64_of(now_ms()))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Pending message requests, oldest first.
    pub async fn requests(&self) -> Result<Vec<Request>, ClientError> {
        let rows = sqlx::query(
            "SELECT p.username AS username, COUNT(m.seq) AS n,
             COALESCE(MIN(m.received_at_ms), p.since_ms) AS first_at
             FROM peers p JOIN messages m ON m.peer = p.username AND m.kind = 'message'
             WHERE p.accepted = 0 AND p.blocked = 0
             GROUP BY p.username ORDER BY first_at, p.username",
        )
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Request {
                    from: r.try_get("username")?,
                    count: u64_of(r.try_get("n")?),
                    first_at: u64_of(r.try_get("first_at")?),
                })
            })
            .collect()
    }

    async fn pending_request(&self, peer: &str) -> Result<(), ClientError> {
        let has = self.requests().await?.iter().any(|r| r.from == peer);
        if has { Ok(()) } else { Err(ClientError::NoRequest(peer.to_string())) }
    }

    /// Accepts `peer`'s message request: they become a contact and their messages show as usual.
    pub async fn accept(&mut self, peer: &str) -> Result<(), ClientError> {
        self.pending_request(peer).await?;
        self.mark_accepted(peer).await
    }

    /// Declines `peer`'s message request: their messages and the request are deleted here. They
    /// are not told; a later message from them is a new request (block them to stop that).
    pub async fn decline(&mut self, peer: &str) -> Result<(), ClientError> {
        self.pending_request(peer).await?;
        let mut tx = self.store.pool.begin().await?;
        for q in [
            "DELETE FROM messages WHERE peer = ?",
            "DELETE FROM events WHERE peer = ?",
            "DELETE FROM peers WHERE username = ?",
        ] {
            sqlx::query(q).bind(peer).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Blocks `peer` on the server (nothing they send is delivered any more, and what they had
    /// queued for us is deleted) and here.
    pub async fn block(&mut self, peer: &str) -> Result<(), ClientError> {
        crate::client::check_username(peer)?;
        self.http
            .put::<_, Option<serde_json::Value>>(&blocks_path(peer), &())
            .await
            .map_err(|e| crate::client::not_found_as_user(e, peer))?;
        sqlx::query(
            "INSERT INTO peers (username, accepted, blocked, since_ms) VALUES (?, 0, 1, ?)
             ON CONFLICT (username) DO UPDATE SET blocked = 1",
        )
        .bind(peer)
        .bind(i64_of(now_ms()))
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Unblocks `peer`.
    pub async fn unblock(&mut self, peer: &str) -> Result<(), ClientError> {
        crate::client::check_username(peer)?;
        self.http
            .delete(&blocks_path(peer))
            .await
            .map_err(|e| crate::client::not_found_as_user(e, peer))?;
        sqlx::query("UPDATE peers SET blocked = 0 WHERE username = ?")
            .bind(peer)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Accounts blocked from this client, sorted.
    pub async fn blocked(&self) -> Result<Vec<String>, ClientError> {
        let names =
            sqlx::query_scalar("SELECT username FROM peers WHERE blocked = 1 ORDER BY username")
                .fetch_all(&self.store.pool)
                .await?;
        Ok(names)
    }

    // ---------------------------------------------------------------------------------------
    // Filters
    // ---------------------------------------------------------------------------------------

    async fn setting(&self, key: &str) -> Result<Option<bool>, ClientError> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(v.map(|v| v == "on"))
    }

    /// The filter settings: unset switches follow the age class (on for minors).
    pub async fn filter_settings(&self) -> Result<FilterSettings, ClientError> {
        let enabled = self.setting(FILTERS_KEY).await?;
        let links = self.setting(LINKS_KEY).await?;
        let rows = sqlx::query("SELECT pattern, regex FROM filter_rules ORDER BY regex, pattern")
            .fetch_all(&self.store.pool)
            .await?;
        let rules = rows
            .iter()
            .map(|r| {
                Ok(FilterRule {
                    pattern: r.try_get("pattern")?,
                    regex: r.try_get::<i64, _>("regex")? != 0,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(FilterSettings {
            enabled: enabled.unwrap_or(self.minor),
            link_warnings: links.unwrap_or(self.minor),
            defaults: enabled.is_none() && links.is_none(),
            rules,
        })
    }

    pub(crate) async fn reload_filter(&mut self) -> Result<(), ClientError> {
        self.filter = Filter::new(&self.filter_settings().await?);
        Ok(())
    }

    /// Turns keyword filtering and/or link warnings on or off.
    pub async fn set_filters(
        &mut self,
        enabled: Option<bool>,
        link_warnings: Option<bool>,
    ) -> Result<(), ClientError> {
        for (key, v) in [(FILTERS_KEY, enabled), (LINKS_KEY, link_warnings)] {
            if let Some(on) = v {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES (?, ?)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(if on { "on" } else { "off" })
                .execute(&self.store.pool)
                .await?;
            }
        }
        self.reload_filter().await
    }

    /// Adds a phrase or regular expression to the user's filter list.
    pub async fn add_filter(&mut self, rule: FilterRule) -> Result<(), ClientError> {
        filters::validate_rule(&rule)?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM filter_rules")
            .fetch_one(&self.store.pool)
            .await?;
        if u64_of(count) >= filters::MAX_RULES as u64 {
            return Err(ClientError::InvalidFilter(format!(
                "at most {} filters; remove one first",
                filters::MAX_RULES
            )));
        }
        sqlx::query("INSERT OR IGNORE INTO filter_rules (pattern, regex) VALUES (?, ?)")
            .bind(rule.pattern.trim())
            .bind(i64::from(rule.regex))
            .execute(&self.store.pool)
            .await?;
        self.reload_filter().await
    }

    /// Removes a rule; false when there was no such rule.
    pub async fn remove_filter(&mut self, rule: &FilterRule) -> Result<bool, ClientError> {
        let r = sqlx::query("DELETE FROM filter_rules WHERE pattern = ? AND regex = ?")
            .bind(rule.pattern.trim())
            .bind(i64::from(rule.regex))
            .execute(&self.store.pool)
            .await?;
        self.reload_filter().await?;
        Ok(r.rows_affected() > 0)
    }

    /// What to display for a message: the text (links inert for requests) and why it is hidden,
    /// if it is.
    pub(crate) fn present(&self, text: &str, request: bool) -> (String, Option<FilterReason>) {
        let reason = self.filter.check(text);
        let shown = if request { filters::inert_links(text) } else { text.to_string() };
        (shown, reason)
    }
}
