//! Message franking on the client (PROTOCOL.md §12): every message is sealed into a franked
//! body with a fresh NF and a commitment TF bound into the ratchet's associated data; received
//! messages are dropped when their commitment does not open; and a user can report a message
//! with its context, which the server's moderators verify without seeing anything else.

use parley_api::{Bytes, ReportRequest, ReportResponse};
use parley_proto::{
    ChainState, DEFAULT_CONTEXT, FrankedBody, MAX_CONTEXT, Opened, Report, ReportItem,
};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::client::{Client, i64_of, u64_of};
use crate::error::ClientError;
use crate::store::label;
use crate::transport::Answer;

/// What a received message's franking carried (kept for reports).
pub(crate) struct ReceivedFranking<'a> {
    pub(crate) sender: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) tf: [u8; 32],
    pub(crate) rf: [u8; 32],
    pub(crate) kid: u32,
    pub(crate) server_time_ms: u64,
}

fn crypto(e: impl std::fmt::Display) -> ClientError {
    ClientError::Crypto(e.to_string())
}

fn tag32(v: &[u8], what: &str) -> Result<[u8; 32], ClientError> {
    v.try_into().map_err(|_| ClientError::CorruptStore(format!("{what} is not 32 bytes")))
}

/// Why a decrypted message is dropped instead of shown, if it is.
pub(crate) fn check_envelope(
    opened: &Opened,
    me: &str,
    sender: &str,
    sender_device: u32,
    message_id: &str,
) -> Option<&'static str> {
    let b = opened.body();
    if b.sender != sender || b.sender_device != sender_device {
        return Some("the sender inside the message differs from the server's sender");
    }
    if b.recipient != me {
        return Some("the message was addressed to someone else");
    }
    if b.message_id != message_id {
        return Some("the message id inside the message differs from the server's");
    }
    None
}

/// Records a received franked message and the chain position it fills (gaps included).
pub(crate) async fn record_received_in(
    client: &Client,
    tx: &mut sqlx::SqliteConnection,
    opened: &Opened,
    f: &ReceivedFranking<'_>,
) -> Result<(), ClientError> {
    let body = opened.body();
    let device = i64::from(body.sender_device);
    let seq = i64_of(body.seq);
    let sealed = client.store.seal(&label::franked(f.sender, f.message_id), opened.content())?;
    sqlx::query(
        "INSERT OR IGNORE INTO franked_received (sender, message_id, sender_device, seq, content,
         tf, rf, kid, server_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(f.sender)
    .bind(f.message_id)
    .bind(device)
    .bind(seq)
    .bind(sealed)
    .bind(&f.tf[..])
    .bind(&f.rf[..])
    .bind(i64::from(f.kid))
    .bind(i64_of(f.server_time_ms))
    .execute(&mut *tx)
    .await?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM chain_seen WHERE peer = ? AND device_id = ?")
            .bind(f.sender)
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
    let expected = last.map_or(0, |l| l.saturating_add(1));
    if seq > expected {
        // Messages this device never received: shown as a gap in reports, not as forgery.
        sqlx::query(
            "INSERT INTO chain_gaps (peer, device_id, from_seq, to_seq) VALUES (?, ?, ?, ?)",
        )
        .bind(f.sender)
        .bind(device)
        .bind(expected)
        .bind(seq - 1)
        .execute(&mut *tx)
        .await?;
    }
    if last.is_none_or(|l| seq > l) {
        sqlx::query(
            "INSERT INTO chain_seen (peer, device_id, last_seq) VALUES (?, ?, ?)
             ON CONFLICT (peer, device_id) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(f.sender)
        .bind(device)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl Client {
    /// The franked content (body ‖ NF) and TF of our message `id` to `to`: sealed once, on the
    /// first attempt, advancing our chain towards `to`; later attempts reuse it.
    pub(crate) async fn franked_for(
        &self,
        to: &str,
        id: &str,
        sent_at: u64,
        text: &str,
    ) -> Result<(Zeroizing<Vec<u8>>, [u8; 32]), ClientError> {
        let row = sqlx::query("SELECT content, tf FROM franked_sent WHERE message_id = ?")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await?;
        if let Some(r) = row {
            let sealed: Vec<u8> = r.try_get("content")?;
            let content = self.store.open_sealed(&label::franked(&self.username, id), &sealed)?;
            return Ok((content, tag32(&r.try_get::<Vec<u8>, _>("tf")?, "tf")?));
        }
        let mut tx = self.store.pool.begin().await?;
        let state: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT state FROM frank_chains WHERE peer = ?")
                .bind(to)
                .fetch_optional(&mut *tx)
                .await?;
        let mut chain = match state {
            Some(s) => {
                let plain = self.store.open_sealed(&label::chain(to), &s)?;
                ChainState::from_bytes(&plain)
                    .map_err(|_| ClientError::CorruptStore("franking chain".into()))?
            }
            None => ChainState::new(),
        };
        let body = FrankedBody {
            message_id: id.to_string(),
            sent_at_ms: sent_at,
            sender: self.username.clone(),
            sender_device: self.device_id,
            recipient: to.to_string(),
            seq: chain.next_seq(),
            prev: *chain.prev(),
            text: Zeroizing::new(text.to_string()),
        };
        let sealed = {
            let mut rng = rand::rng();
            parley_proto::seal(&mut rng, &body).map_err(crypto)?
        };
        chain.advance(sealed.body_bytes()).map_err(crypto)?;
        sqlx::query(
            "INSERT INTO frank_chains (peer, state) VALUES (?, ?)
             ON CONFLICT (peer) DO UPDATE SET state = excluded.state",
        )
        .bind(to)
        .bind(self.store.seal(&label::chain(to), &chain.to_bytes())?)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO franked_sent (message_id, peer, content, tf) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(to)
            .bind(self.store.seal(&label::franked(&self.username, id), sealed.content())?)
            .bind(&sealed.tf()[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((Zeroizing::new(sealed.content().to_vec()), *sealed.tf()))
    }

    /// Reports the received message `message_id` to the server's moderators, with up to
    /// `context` earlier messages of the conversation (default 10, at most 50; ours are marked
    /// as ours and cannot be verified), and blocks the sender when `block` is set. Returns the
    /// report's id. Only what is in the report is disclosed.
    pub async fn report(
        &mut self,
        message_id: &str,
        context: Option<usize>,
        reason: &str,
        block: bool,
    ) -> Result<u64, ClientError> {
        self.report_from(None, message_id, context, reason, block).await
    }

    /// [`Client::report`] of the message `message_id` received from `sender` (message ids are
    /// chosen by senders: two senders can use the same one). Without `sender`, an id that
    /// several senders used is refused as ambiguous.
    pub async fn report_from(
        &mut self,
        sender: Option<&str>,
        message_id: &str,
        context: Option<usize>,
        reason: &str,
        block: bool,
    ) -> Result<u64, ClientError> {
        let context = context.unwrap_or(DEFAULT_CONTEXT);
        if context > MAX_CONTEXT {
            return Err(ClientError::InvalidReport(format!(
                "at most {MAX_CONTEXT} messages of context"
            )));
        }
        if reason.len() > parley_api::MAX_REPORT_REASON_LEN {
            return Err(ClientError::InvalidReport(format!(
                "the reason has at most {} bytes",
                parley_api::MAX_REPORT_REASON_LEN
            )));
        }
        let mut rows = sqlx::query(
            "SELECT m.seq AS seq, m.peer AS peer FROM messages m JOIN franked_received f
             ON f.sender = m.sender AND f.message_id = m.message_id
             WHERE m.message_id = ? AND m.sender != ? AND (? IS NULL OR m.sender = ?)
             LIMIT 2",
        )
        .bind(message_id)
        .bind(&self.username)
        .bind(sender)
        .bind(sender)
        .fetch_all(&self.store.pool)
        .await?;
        if rows.len() > 1 {
            return Err(ClientError::InvalidReport(format!(
                "several people sent a message with the id {message_id}; say whose"
            )));
        }
        let row = rows.pop().ok_or_else(|| {
            ClientError::InvalidReport(format!("no received message {message_id}"))
        })?;
        let upto: i64 = row.try_get("seq")?;
        let peer: String = row.try_get("peer")?;
        let limit = i64::try_from(context).unwrap_or(0).saturating_add(1);
        let mut rows = sqlx::query(
            "SELECT sender, message_id FROM messages
             WHERE peer = ? AND seq <= ? AND kind = 'message' ORDER BY seq DESC LIMIT ?",
        )
        .bind(&peer)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        rows.reverse();
        let mut items = Vec::with_capacity(rows.len() + 1);
        let mut seqs: Vec<(u32, u64)> = Vec::new();
        for r in &rows {
            let sender: String = r.try_get("sender")?;
            let id: String = r.try_get("message_id")?;
            if sender == self.username {
                if let Some(item) = self.own_item(&id).await? {
                    items.push(item);
                }
            } else if let Some((item, device, seq)) = self.franked_item(&sender, &id).await? {
                items.push(item);
                seqs.push((device, seq));
            }
        }
        // Gaps this device saw inside the reported stretch: shown as gaps, not as forgery.
        for (device, lo, hi) in stream_ranges(&seqs) {
            let gaps = sqlx::query(
                "SELECT from_seq, to_seq FROM chain_gaps
                 WHERE peer = ? AND device_id = ? AND from_seq > ? AND to_seq < ?",
            )
            .bind(&peer)
            .bind(i64::from(device))
            .bind(i64_of(lo))
            .bind(i64_of(hi))
            .fetch_all(&self.store.pool)
            .await?;
            let mut gap_items = Vec::with_capacity(gaps.len());
            for g in gaps {
                gap_items.push(ReportItem::Gap {
                    sender: peer.clone(),
                    sender_device: device,
                    from_seq: u64_of(g.try_get("from_seq")?),
                    to_seq: u64_of(g.try_get("to_seq")?),
                });
            }
            // Before the reported message, which must stay last.
            let at = items.len().saturating_sub(1);
            items.splice(at..at, gap_items);
        }
        let report = Report { reporter: self.username.clone(), items };
        let encoded = report.encode().map_err(|e| ClientError::InvalidReport(e.to_string()))?;
        let req = ReportRequest { report: Bytes(encoded), reason: reason.to_string() };
        let id = match self.http.post::<_, ReportResponse>("/v1/reports", &req).await? {
            Answer::Ok(r) => r.id,
            Answer::Conflict(_) => {
                return Err(ClientError::Protocol("unexpected conflict answer to a report".into()));
            }
        };
        if block {
            self.block(&peer).await?;
        }
        Ok(id)
    }

    /// The id of the newest message received from `peer` (for `block --report`).
    pub async fn last_received_from(&self, peer: &str) -> Result<Option<String>, ClientError> {
        let id = sqlx::query_scalar(
            "SELECT m.message_id FROM messages m JOIN franked_received f
             ON f.sender = m.sender AND f.message_id = m.message_id
             WHERE m.peer = ? AND m.sender = ? ORDER BY m.seq DESC LIMIT 1",
        )
        .bind(peer)
        .bind(peer)
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(id)
    }

    async fn own_item(&self, id: &str) -> Result<Option<ReportItem>, ClientError> {
        let Some(r) = sqlx::query("SELECT content, tf FROM franked_sent WHERE message_id = ?")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await?
        else {
            return Ok(None);
        };
        let sealed: Vec<u8> = r.try_get("content")?;
        let content = self.store.open_sealed(&label::franked(&self.username, id), &sealed)?;
        let tf = tag32(&r.try_get::<Vec<u8>, _>("tf")?, "tf")?;
        let opened = parley_proto::open(&content, &tf).map_err(crypto)?;
        Ok(Some(ReportItem::Own { body_bytes: opened.body_bytes().to_vec() }))
    }

    async fn franked_item(
        &self,
        sender: &str,
        id: &str,
    ) -> Result<Option<(ReportItem, u32, u64)>, ClientError> {
        let Some(r) = sqlx::query(
            "SELECT sender_device, seq, content, tf, rf, kid, server_time_ms FROM franked_received
             WHERE sender = ? AND message_id = ?",
        )
        .bind(sender)
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await?
        else {
            return Ok(None);
        };
        let sealed: Vec<u8> = r.try_get("content")?;
        let content = self.store.open_sealed(&label::franked(sender, id), &sealed)?;
        let device = u32::try_from(r.try_get::<i64, _>("sender_device")?)
            .map_err(|_| ClientError::CorruptStore("sender device".into()))?;
        let kid = u32::try_from(r.try_get::<i64, _>("kid")?)
            .map_err(|_| ClientError::CorruptStore("franking key id".into()))?;
        let item = ReportItem::Franked {
            content: content.to_vec(),
            tf: tag32(&r.try_get::<Vec<u8>, _>("tf")?, "tf")?,
            rf: tag32(&r.try_get::<Vec<u8>, _>("rf")?, "rf")?,
            kid,
            sender: sender.to_string(),
            sender_device: device,
            recipient: self.username.clone(),
            server_time_ms: u64_of(r.try_get("server_time_ms")?),
        };
        Ok(Some((item, device, u64_of(r.try_get("seq")?))))
    }
}

/// For each sender device among `(device, seq)`, the lowest and highest seq.
fn stream_ranges(seqs: &[(u32, u64)]) -> Vec<(u32, u64, u64)> {
    let mut out: Vec<(u32, u64, u64)> = Vec::new();
    for &(d, s) in seqs {
        match out.iter_mut().find(|(dev, _, _)| *dev == d) {
            Some(e) => {
                e.1 = e.1.min(s);
                e.2 = e.2.max(s);
            }
            None => out.push((d, s, s)),
        }
    }
    out
}
