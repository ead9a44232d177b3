//! What a chat screen shows: the conversations with their unread counts, and one
//! conversation as a single timeline of messages (delivered, queued in the outbox, received)
//! and notices (gaps, key changes, session resets, dropped messages, key-transparency alarms).
//!
//! Read marks live in the local store's `settings` table (`read|PEER` → the highest message
//! sequence number read), so unread counts survive a restart.

use sqlx::Row;

use crate::client::{Client, HistoryEntry, u64_of};
use crate::error::ClientError;
use crate::store::label;

/// One conversation in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The other person.
    pub peer: String,
    /// A contact (we wrote to them or accepted their request); otherwise a message request.
    pub accepted: bool,
    /// Blocked by us.
    pub blocked: bool,
    /// Messages from them after the read mark.
    pub unread: u64,
    /// The newest message, sent or received (queued ones included).
    pub last: Option<HistoryEntry>,
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineItem {
    /// A message; `state` is `queued` for one waiting in the outbox.
    Message(HistoryEntry),
    /// Something the user should see that is not a message.
    Notice {
        /// `gap`, `key_change`, `key_accepted`, `session_reset`, `dropped` or `kt_alarm`.
        event: String,
        /// The sentence to show.
        text: String,
        /// When it was recorded here, ms since the Unix epoch.
        at: u64,
    },
}

impl TimelineItem {
    /// The time the item sorts by: when a message was received here (or sent), when a notice
    /// was recorded.
    pub fn at(&self) -> u64 {
        match self {
            Self::Message(m) => m.received_at.unwrap_or(m.sent_at),
            Self::Notice { at, .. } => *at,
        }
    }
}

fn read_key(peer: &str) -> String {
    format!("read|{peer}")
}

/// The sentence shown for a recorded event.
fn notice_text(event: &str, peer: &str, count: i64, detail: Option<&[u8]>) -> Option<String> {
    let detail = detail.map(String::from_utf8_lossy);
    Some(match event {
        "gap" => format!(
            "{count} message{} from {peer} could not be decrypted and {} lost.",
            if count == 1 { "" } else { "s" },
            if count == 1 { "is" } else { "are" }
        ),
        "key_change" => format!(
            "{peer}'s key changed. Sending to {peer} is paused: compare safety numbers, then \
             accept the new key."
        ),
        "key_accepted" => format!("You accepted {peer}'s new key."),
        "session_reset" => format!("{peer} started a new secure session."),
        "dropped" => format!(
            "A message from {peer} was dropped: {}.",
            detail.as_deref().unwrap_or("its content did not match its envelope")
        ),
        "kt_alarm" => format!(
            "Key transparency alarm: {}.",
            detail.as_deref().unwrap_or("the directory's answer failed verification")
        ),
        _ => return None,
    })
}

impl Client {
    /// Every conversation: contacts, requests and blocked people we have messages with or
    /// wrote to, newest activity first.
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        let peers = sqlx::query(
            "SELECT username, accepted, blocked FROM peers
             UNION SELECT DISTINCT peer, 0, 0 FROM messages
               WHERE peer NOT IN (SELECT username FROM peers)
             UNION SELECT DISTINCT recipient, 1, 0 FROM outbox
               WHERE recipient NOT IN (SELECT username FROM peers)",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::with_capacity(peers.len());
        for r in peers {
            let peer: String = r.try_get(0)?;
            let accepted = r.try_get::<i64, _>(1)? != 0;
            let blocked = r.try_get::<i64, _>(2)? != 0;
            let mut last = self.history_entries(&peer, true).await?.pop();
            if let Some(q) = self.outbox_entries(&peer).await?.pop()
                && last.as_ref().is_none_or(|l| l.sent_at <= q.sent_at)
            {
                last = Some(q);
            }
            if last.is_none() && !accepted {
                continue; // a declined request leaves nothing to show
            }
            let unread = self.unread(&peer).await?;
            out.push(ConversationSummary { peer, accepted, blocked, unread, last });
        }
        out.sort_by(|a, b| {
            let at = |c: &ConversationSummary| {
                c.last.as_ref().map_or(0, |m| m.received_at.unwrap_or(m.sent_at))
            };
            at(b).cmp(&at(a)).then_with(|| a.peer.cmp(&b.peer))
        });
        Ok(out)
    }

    /// Received messages from `peer` after the read mark.
    pub async fn unread(&self, peer: &str) -> Result<u64, ClientError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE peer = ? AND sender != ? AND kind = 'message'
             AND seq > COALESCE((SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?), 0)",
        )
        .bind(peer)
        .bind(&self.username)
        .bind(read_key(peer))
        .fetch_one(&self.store.pool)
        .await?;
        Ok(u64_of(n))
    }

    /// Marks everything received from `peer` so far as read.
    pub async fn mark_read(&self, peer: &str) -> Result<(), ClientError> {
        let top: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE peer = ?")
            .bind(peer)
            .fetch_one(&self.store.pool)
            .await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(read_key(peer))
        .bind(top.unwrap_or(0).to_string())
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// The conversation with `peer`: its history, the messages still in the outbox (state
    /// `queued`) and the notices recorded for `peer`, in time order.
    pub async fn timeline(&self, peer: &str) -> Result<Vec<TimelineItem>, ClientError> {
        let mut items: Vec<TimelineItem> =
            self.history(peer).await?.into_iter().map(TimelineItem::Message).collect();
        items.extend(self.outbox_entries(peer).await?.into_iter().map(TimelineItem::Message));
        let rows = sqlx::query(
            "SELECT kind, count, detail, at_ms FROM events WHERE peer = ? ORDER BY seq",
        )
        .bind(peer)
        .fetch_all(&self.store.pool)
        .await?;
        for r in rows {
            let event: String = r.try_get("kind")?;
            let detail: Option<Vec<u8>> = r.try_get("detail")?;
            // Key events carry a public key as detail, not a sentence.
            let detail = if event == "dropped" || event == "kt_alarm" { detail } else { None };
            let Some(text) = notice_text(&event, peer, r.try_get("count")?, detail.as_deref())
            else {
                continue;
            };
            items.push(TimelineItem::Notice { event, text, at: u64_of(r.try_get("at_ms")?) });
        }
        // A stable sort keeps the store's order among equal times.
        items.sort_by_key(TimelineItem::at);
        Ok(items)
    }

    /// Messages to `peer` waiting in the outbox, oldest first, as history entries in state
    /// `queued`.
    async fn outbox_entries(&self, peer: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        let rows = sqlx::query(
            "SELECT message_id, payload, sent_at_ms FROM outbox WHERE recipient = ?
             ORDER BY created_ms, rowid",
        )
        .bind(peer)
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("message_id")?;
            let sealed: Vec<u8> = r.try_get("payload")?;
            let text = self.store.open_sealed(&label::outbox(&id), &sealed)?;
            out.push(HistoryEntry {
                text: Some(String::from_utf8_lossy(&text).into_owned()),
                from: self.username.clone(),
                sent_at: u64_of(r.try_get("sent_at_ms")?),
                received_at: None,
                outgoing: true,
                state: "queued".into(),
                request: false,
                filtered: None,
                id,
            });
        }
        Ok(out)
    }
}

impl Client {
    /// True when `peer` wrote to us and is not a contact yet: their messages are a request
    /// (the same definition as [`Client::requests`]).
    pub async fn is_request(&self, peer: &str) -> Result<bool, ClientError> {
        let s = self.peer_state(peer).await?;
        if s.accepted || s.blocked {
            return Ok(false);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM peers p JOIN messages m ON m.peer = p.username
             WHERE p.username = ? AND m.kind = 'message'",
        )
        .bind(peer)
        .fetch_one(&self.store.pool)
        .await?;
        Ok(n > 0)
    }

    /// True when we blocked `peer`.
    pub async fn is_blocked(&self, peer: &str) -> Result<bool, ClientError> {
        Ok(self.peer_state(peer).await?.blocked)
    }
}

/// A cheap summary of what the local store holds for display: it changes whenever a message
/// is stored, a notice recorded, or the outbox or a relation changes. Compare two marks to
/// know whether a screen must be fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivityMark([i64; 4]);

impl Client {
    /// The current [`ActivityMark`].
    pub async fn activity_mark(&self) -> Result<ActivityMark, ClientError> {
        let r = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM messages),
                    (SELECT COALESCE(MAX(seq), 0) FROM events),
                    (SELECT COUNT(*) FROM outbox),
                    (SELECT COALESCE(SUM(accepted + 2 * blocked), 0) + COUNT(*) FROM peers)",
        )
        .fetch_one(&self.store.pool)
        .await?;
        Ok(ActivityMark([r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?]))
    }
}
