//! The store conformance suite: the same checks for every backend. A backend's test calls
//! [`run`] with a fresh store and a unique username prefix (so a shared database can be reused).

// The suite is test code shipped for the backends' tests: an out-of-range index here can only
// fail a test run, never a server.
#![allow(clippy::indexing_slicing)]

use std::sync::Arc;

use super::{
    AccountFlag, Delivery, KtEpochRow, KtValueRow, NewAccount, NewConversation, NewDevice,
    NewReport, OneTimePrekey, PrekeyChanges, Relation, ReportStatus, SendBatch, Store, StoreError,
};

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn e(err: StoreError) -> String {
    format!("unexpected store error: {err}")
}

fn otk(kind: u8, ids: std::ops::Range<u32>) -> Vec<OneTimePrekey> {
    ids.map(|id| OneTimePrekey { key_id: id, bytes: vec![kind, id as u8, 0xAA] }).collect()
}

fn account(name: &str, now: u64) -> NewAccount {
    NewAccount {
        username: name.to_string(),
        account_key: vec![1; 32],
        device_list: vec![2; 40],
        device: NewDevice {
            device_id: 1,
            certificate: vec![3; 100],
            token_hash: [4; 32],
            signed_prekey: vec![5; 40],
            last_resort_kem: vec![6; 50],
            one_time: otk(1, 10..13),
            one_time_kem: otk(2, 20..23),
        },
        minor: false,
        now,
    }
}

/// A send of `id` from `sender_uid` to each `(device uid, device id)` of `to` (also used by the
/// SQLite writer's own tests).
pub(crate) fn send(
    sender_uid: i64,
    id: &str,
    to: &[(i64, u32)],
    max_queue: u64,
    t: u64,
) -> SendBatch {
    SendBatch {
        sender_uid,
        sender: "sender".into(),
        sender_device: 1,
        message_id: id.into(),
        server_time_ms: t,
        deliveries: to
            .iter()
            .map(|(uid, dev)| Delivery {
                device_uid: *uid,
                device_id: *dev,
                ciphertext: format!("ct-{id}-{uid}").into_bytes(),
            })
            .collect(),
        max_queue,
        conversation: None,
        franking_tag: [0x7F; 32],
        server_tag: [0x5E; 32],
        franking_kid: 3,
    }
}

/// Runs every check; `prefix` makes the usernames unique.
pub async fn run(store: Arc<dyn Store>, prefix: &str) -> Result<(), String> {
    accounts(&*store, prefix).await?;
    prekeys(&*store, prefix).await?;
    queues(&*store, prefix).await?;
    concurrent_bundles(store.clone(), prefix).await?;
    expiry_and_deletion(&*store, prefix).await?;
    safety(&*store, prefix).await?;
    franking(&*store, prefix).await?;
    key_transparency(&*store, prefix).await?;
    secrets(store.clone(), prefix).await?;
    Ok(())
}

async fn secrets(s: Arc<dyn Store>, p: &str) -> Result<(), String> {
    let name = format!("{p}franking-keyring");
    check!(s.secret(&name).await.map_err(e)?.is_none(), "an unknown secret was found");
    check!(
        !s.replace_secret(&name, 1, vec![9], 10).await.map_err(e)?,
        "an unknown secret was replaced"
    );
    check!(s.create_secret(&name, vec![1, 2, 3], 10).await.map_err(e)?, "create failed");
    check!(
        !s.create_secret(&name, vec![4], 11).await.map_err(e)?,
        "an existing secret was created again"
    );
    let got = s.secret(&name).await.map_err(e)?.ok_or("secret not found")?;
    check!(got.value == vec![1, 2, 3] && got.version == 1, "secret read back as {got:?}");
    check!(s.replace_secret(&name, 1, vec![5, 6], 12).await.map_err(e)?, "replace failed");
    check!(
        !s.replace_secret(&name, 1, vec![7], 13).await.map_err(e)?,
        "a stale version replaced the secret"
    );
    let got = s.secret(&name).await.map_err(e)?.ok_or("secret not found")?;
    check!(got.value == vec![5, 6] && got.version == 2, "replaced secret read back as {got:?}");
    // Several nodes starting at once: exactly one creates, the others load its value.
    let race = format!("{p}admin-token");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (s, race) = (s.clone(), race.clone());
        tasks.push(tokio::spawn(async move { s.create_secret(&race, vec![i], 20).await }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.map_err(|j| j.to_string())?.map_err(e)? {
            created += 1;
        }
    }
    check!(created == 1, "{created} concurrent creations of one secret succeeded");
    let got = s.secret(&race).await.map_err(e)?.ok_or("raced secret not found")?;
    check!(got.version == 1 && got.value.len() == 1, "raced secret is {got:?}");
    Ok(())
}

async fn accounts(s: &dyn Store, p: &str) -> Result<(), String> {
    let name = format!("{p}alice");
    let uid = s.create_account(account(&name, 1000)).await.map_err(e)?;
    check!(
        matches!(s.create_account(account(&name, 1001)).await, Err(StoreError::UsernameTaken)),
        "a second account with the same username was accepted"
    );
    let auth = s.device_auth(uid).await.map_err(e)?.ok_or("registered device not found")?;
    check!(
        auth.username == name && auth.device_id == 1 && auth.token_hash == [4; 32],
        "device_auth returned {auth:?}"
    );
    check!(s.device_auth(uid + 100_000).await.map_err(e)?.is_none(), "unknown device found");
    let rec = s.account_by_username(&name).await.map_err(e)?.ok_or("account not found")?;
    check!(rec.account_key == vec![1; 32] && rec.device_list == vec![2; 40], "account keys differ");
    check!(
        rec.devices.len() == 1
            && rec.devices[0].uid == uid
            && rec.devices[0].certificate == vec![3; 100],
        "devices differ"
    );
    let by_id = s.account_by_id(rec.id).await.map_err(e)?.ok_or("account by id not found")?;
    check!(by_id.username == name, "account_by_id differs");
    check!(
        s.account_by_username(&format!("{p}nobody")).await.map_err(e)?.is_none(),
        "unknown username found"
    );
    Ok(())
}

async fn prekeys(s: &dyn Store, p: &str) -> Result<(), String> {
    let uid = s.create_account(account(&format!("{p}bob"), 1000)).await.map_err(e)?;
    let auth = s.device_auth(uid).await.map_err(e)?.ok_or("device missing")?;
    let counts = s.prekey_counts(uid).await.map_err(e)?;
    check!(
        counts.one_time == 3 && counts.one_time_kem == 3 && counts.signed_prekey_at == 1000,
        "counts {counts:?}"
    );
    // Bundles take the lowest ids first, one of each kind per call, then run out.
    for expect in [10u32, 11, 12] {
        let b = s.take_bundles(auth.account_id).await.map_err(e)?;
        check!(b.len() == 1, "one device expected");
        check!(
            b[0].one_time.as_deref() == Some(&[1, expect as u8, 0xAA][..]),
            "one-time key {expect} expected, got {:?}",
            b[0].one_time
        );
        check!(
            b[0].one_time_kem.as_deref() == Some(&[2, expect as u8 + 10, 0xAA][..]),
            "KEM key expected"
        );
    }
    let b = s.take_bundles(auth.account_id).await.map_err(e)?;
    check!(
        b[0].one_time.is_none() && b[0].one_time_kem.is_none(),
        "keys handed out after running out"
    );
    check!(b[0].device.last_resort_kem == vec![6; 50], "last-resort key differs");
    // Replenish, with the per-device maximum and duplicate ids enforced.
    let mut ch = PrekeyChanges {
        one_time: otk(1, 30..35),
        one_time_kem: otk(2, 40..45),
        max_one_time: 5,
        now: 2000,
        ..Default::default()
    };
    s.update_prekeys(uid, ch.clone()).await.map_err(e)?;
    check!(s.prekey_counts(uid).await.map_err(e)?.one_time == 5, "replenished count");
    ch.one_time = otk(1, 35..36);
    ch.one_time_kem = vec![];
    check!(
        matches!(s.update_prekeys(uid, ch.clone()).await, Err(StoreError::TooManyPrekeys)),
        "maximum not enforced"
    );
    ch.max_one_time = 100;
    ch.one_time = otk(1, 30..31);
    check!(
        matches!(s.update_prekeys(uid, ch.clone()).await, Err(StoreError::DuplicatePrekey)),
        "duplicate id accepted"
    );
    check!(
        s.prekey_counts(uid).await.map_err(e)?.one_time == 5,
        "a failed upload changed the stock"
    );
    let rotate = PrekeyChanges {
        signed_prekey: Some(vec![9; 40]),
        last_resort_kem: Some(vec![8; 50]),
        max_one_time: 100,
        now: 3000,
        ..Default::default()
    };
    s.update_prekeys(uid, rotate).await.map_err(e)?;
    let c = s.prekey_counts(uid).await.map_err(e)?;
    check!(c.signed_prekey_at == 3000 && c.last_resort_at == 3000, "rotation times {c:?}");
    let rec = s.account_by_id(auth.account_id).await.map_err(e)?.ok_or("account")?;
    check!(
        rec.devices[0].signed_prekey == vec![9; 40]
            && rec.devices[0].last_resort_kem == vec![8; 50],
        "rotation not stored"
    );
    check!(
        matches!(
            s.update_prekeys(uid + 100_000, PrekeyChanges::default()).await,
            Err(StoreError::NotFound)
        ),
        "unknown device updated"
    );
    Ok(())
}

async fn queues(s: &dyn Store, p: &str) -> Result<(), String> {
    let a = s.create_account(account(&format!("{p}carol"), 1000)).await.map_err(e)?;
    let b = s.create_account(account(&format!("{p}dave"), 1000)).await.map_err(e)?;
    // In order, per device; idempotent by (sender, message id).
    for i in 0..5 {
        let o =
            s.enqueue(send(a, &format!("m{i}"), &[(b, 1)], 100, 10_000 + i)).await.map_err(e)?;
        check!(!o.duplicate && o.server_time_ms == 10_000 + i, "outcome {o:?}");
    }
    let again = s.enqueue(send(a, "m2", &[(b, 1)], 100, 99_999)).await.map_err(e)?;
    check!(again.duplicate && again.server_time_ms == 10_002, "retry not recognised: {again:?}");
    check!(s.queue_len(b).await.map_err(e)? == 5, "queue length after a retry");
    let got = s.fetch(b, 0, 100).await.map_err(e)?;
    let ids: Vec<String> = got.iter().map(|g| g.message_id.clone()).collect();
    check!(ids == ["m0", "m1", "m2", "m3", "m4"], "order {ids:?}");
    check!(got.windows(2).all(|w| w[0].id < w[1].id), "ids not increasing");
    check!(
        got[0].ciphertext == format!("ct-m0-{b}").into_bytes() && got[0].sender == "sender",
        "envelope content"
    );
    check!(
        got[0].franking_tag == [0x7F; 32]
            && got[0].server_tag == [0x5E; 32]
            && got[0].franking_kid == 3,
        "franking tags not stored with the envelope: {:?}",
        got[0]
    );
    let page = s.fetch(b, got[1].id, 2).await.map_err(e)?;
    check!(page.len() == 2 && page[0].message_id == "m2", "paging after an id");
    // Isolation: the sender's device cannot ack the recipient's envelopes.
    let stolen = s.ack(a, got.iter().map(|g| g.id).collect()).await.map_err(e)?;
    check!(
        stolen == 0 && s.queue_len(b).await.map_err(e)? == 5,
        "another device's ack deleted envelopes"
    );
    check!(
        s.fetch(a, 0, 100).await.map_err(e)?.is_empty(),
        "the sender sees the recipient's queue"
    );
    let n = s.ack(b, vec![got[0].id, got[1].id, got[1].id, u64::MAX]).await.map_err(e)?;
    check!(n == 2, "ack deleted {n}");
    check!(s.queue_len(b).await.map_err(e)? == 3, "queue length after ack");
    check!(
        s.fetch(b, 0, 100).await.map_err(e)?.first().map(|g| g.message_id.as_str()) == Some("m2"),
        "head after ack"
    );
    // A full queue refuses the whole send, atomically.
    let full = s.enqueue(send(a, "over", &[(a, 1), (b, 1)], 3, 20_000)).await;
    check!(matches!(full, Err(StoreError::QueueFull(1))), "queue full not reported: {full:?}");
    check!(s.queue_len(a).await.map_err(e)? == 0, "a refused send left an envelope behind");
    check!(
        !s.enqueue(send(a, "over", &[(a, 1)], 3, 20_001)).await.map_err(e)?.duplicate,
        "refused id was recorded"
    );
    let stats = s.stats().await.map_err(e)?;
    check!(stats.accounts >= 2 && stats.queued >= 4, "stats {stats:?}");
    let cs = s.commit_stats();
    check!(cs.commits > 0 && cs.operations >= cs.commits, "commit stats {cs:?}");
    Ok(())
}

async fn concurrent_bundles(s: Arc<dyn Store>, p: &str) -> Result<(), String> {
    let mut acct = account(&format!("{p}erin"), 1000);
    acct.device.one_time = otk(1, 100..140);
    acct.device.one_time_kem = otk(2, 100..140);
    let uid = s.create_account(acct).await.map_err(e)?;
    let account_id = s.device_auth(uid).await.map_err(e)?.ok_or("device")?.account_id;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.take_bundles(account_id).await }));
    }
    let mut seen = std::collections::HashSet::new();
    let mut handed = 0;
    for t in tasks {
        let b = t.await.map_err(|j| j.to_string())?.map_err(e)?;
        for k in [&b[0].one_time, &b[0].one_time_kem].into_iter().flatten() {
            handed += 1;
            check!(seen.insert(k.clone()), "one-time prekey handed out twice: {k:?}");
        }
    }
    check!(handed == 80, "expected all 80 one-time keys handed out once, got {handed}");
    Ok(())
}

async fn expiry_and_deletion(s: &dyn Store, p: &str) -> Result<(), String> {
    let a = s.create_account(account(&format!("{p}frank"), 1000)).await.map_err(e)?;
    let b = s.create_account(account(&format!("{p}grace"), 1000)).await.map_err(e)?;
    s.enqueue(send(a, "old", &[(b, 1)], 100, 1_000)).await.map_err(e)?;
    s.enqueue(send(a, "new", &[(b, 1)], 100, 5_000)).await.map_err(e)?;
    let n = s.expire(2_000).await.map_err(e)?;
    check!(n >= 1, "nothing expired");
    let left: Vec<String> =
        s.fetch(b, 0, 10).await.map_err(e)?.into_iter().map(|g| g.message_id).collect();
    check!(left == ["new"], "after expiry {left:?}");
    check!(s.queue_len(b).await.map_err(e)? == 1, "queue length after expiry");
    let acct = s.device_auth(b).await.map_err(e)?.ok_or("device")?.account_id;
    s.delete_account(acct).await.map_err(e)?;
    check!(s.device_auth(b).await.map_err(e)?.is_none(), "deleted device still authenticates");
    check!(
        s.account_by_username(&format!("{p}grace")).await.map_err(e)?.is_none(),
        "deleted account found"
    );
    check!(s.fetch(b, 0, 10).await.map_err(e)?.is_empty(), "deleted account's queue remains");
    check!(
        matches!(s.delete_account(acct).await, Err(StoreError::NotFound)),
        "second deletion succeeded"
    );
    // The name is free again.
    s.create_account(account(&format!("{p}grace"), 2000)).await.map_err(e)?;
    Ok(())
}

async fn safety(s: &dyn Store, p: &str) -> Result<(), String> {
    let mut minor = account(&format!("{p}hana"), 1000);
    minor.minor = true;
    let m_uid = s.create_account(minor).await.map_err(e)?;
    let a_uid = s.create_account(account(&format!("{p}ivan"), 5000)).await.map_err(e)?;
    let m = s.device_auth(m_uid).await.map_err(e)?.ok_or("device")?;
    let a = s.device_auth(a_uid).await.map_err(e)?.ok_or("device")?;
    check!(m.minor && !a.minor, "age class not stored: {} {}", m.minor, a.minor);
    check!(a.account_created_at == 5000, "creation time {}", a.account_created_at);
    let rec = s.account_by_id(m.account_id).await.map_err(e)?.ok_or("account")?;
    check!(rec.minor, "account record lost the age class");
    // Age class changes by username.
    s.set_flag(&format!("{p}ivan"), AccountFlag::Minor, true).await.map_err(e)?;
    check!(s.device_auth(a_uid).await.map_err(e)?.ok_or("device")?.minor, "set_flag(minor)");
    s.set_flag(&format!("{p}ivan"), AccountFlag::Minor, false).await.map_err(e)?;
    s.set_flag(&format!("{p}ivan"), AccountFlag::Suspended, true).await.map_err(e)?;
    let d = s.device_auth(a_uid).await.map_err(e)?.ok_or("device")?;
    check!(d.suspended && !d.minor, "set_flag(suspended) {d:?}");
    s.set_flag(&format!("{p}ivan"), AccountFlag::Suspended, false).await.map_err(e)?;
    check!(!s.device_auth(a_uid).await.map_err(e)?.ok_or("device")?.suspended, "unsuspend");
    check!(
        matches!(
            s.set_flag(&format!("{p}nobody"), AccountFlag::Minor, true).await,
            Err(StoreError::NotFound)
        ),
        "set_flag on an unknown name"
    );
    // Conversations are recorded with the send, once, in order of who wrote first.
    check!(
        s.relation(a.account_id, m.account_id).await.map_err(e)? == Relation::default(),
        "strangers have a relation"
    );
    let mut first = send(m_uid, "c1", &[(a_uid, 1)], 100, 10_000);
    first.conversation =
        Some(NewConversation { from: m.account_id, to: a.account_id, initiated: true, now: 7000 });
    s.enqueue(first.clone()).await.map_err(e)?;
    s.enqueue(first).await.map_err(e)?;
    let r = s.relation(a.account_id, m.account_id).await.map_err(e)?;
    check!(!r.sent && r.received && !r.blocked_by, "after the minor wrote: {r:?}");
    let r = s.relation(m.account_id, a.account_id).await.map_err(e)?;
    check!(r.sent && !r.received, "seen from the minor: {r:?}");
    let c = s.new_conversations_since(m.account_id, 6000).await.map_err(e)?;
    check!(c.count == 1 && c.oldest == Some(7000), "new conversations {c:?}");
    check!(
        s.new_conversations_since(m.account_id, 7001).await.map_err(e)?.count == 0,
        "window start not honoured"
    );
    let mut reply = send(a_uid, "c2", &[(m_uid, 1)], 100, 11_000);
    reply.sender = format!("{p}ivan");
    reply.conversation =
        Some(NewConversation { from: a.account_id, to: m.account_id, initiated: false, now: 8000 });
    s.enqueue(reply).await.map_err(e)?;
    check!(
        s.new_conversations_since(a.account_id, 0).await.map_err(e)?.count == 0,
        "a reply counted as a new conversation"
    );
    // Blocking: recorded, listed, purges what the blocked account queued, and is undone.
    check!(s.queue_len(m_uid).await.map_err(e)? == 1, "the reply was not queued");
    check!(
        s.set_block(m.account_id, a.account_id, true, 9000).await.map_err(e)?,
        "block not recorded"
    );
    check!(
        !s.set_block(m.account_id, a.account_id, true, 9001).await.map_err(e)?,
        "a second block changed something"
    );
    check!(s.queue_len(m_uid).await.map_err(e)? == 0, "the blocked account's envelope remains");
    check!(s.fetch(m_uid, 0, 10).await.map_err(e)?.is_empty(), "blocked envelope fetched");
    let r = s.relation(a.account_id, m.account_id).await.map_err(e)?;
    check!(r.blocked_by, "block not seen by relation: {r:?}");
    check!(
        !s.relation(m.account_id, a.account_id).await.map_err(e)?.blocked_by,
        "a block works both ways"
    );
    check!(s.blocks(m.account_id).await.map_err(e)? == [format!("{p}ivan")], "block list differs");
    check!(
        s.set_block(m.account_id, a.account_id, false, 9002).await.map_err(e)?,
        "unblock not recorded"
    );
    check!(s.blocks(m.account_id).await.map_err(e)?.is_empty(), "block list after unblock");
    // Deleting an account removes its relations.
    s.delete_account(a.account_id).await.map_err(e)?;
    check!(
        s.relation(m.account_id, a.account_id).await.map_err(e)? == Relation::default(),
        "relations of a deleted account remain"
    );
    Ok(())
}

fn report(reporter: &str, sender: &str, t: u64) -> NewReport {
    NewReport {
        reporter: reporter.into(),
        sender: sender.into(),
        reason: format!("reason at {t}"),
        report: vec![0x42, 1, t as u8],
        created_at_ms: t,
    }
}

async fn franking(s: &dyn Store, p: &str) -> Result<(), String> {
    let reporter = format!("{p}judy");
    let sender = format!("{p}mallory");
    let j_uid = s.create_account(account(&reporter, 1000)).await.map_err(e)?;
    let m_uid = s.create_account(account(&sender, 1000)).await.map_err(e)?;
    let m = s.device_auth(m_uid).await.map_err(e)?.ok_or("device")?;
    check!(!m.suspended, "a new account is suspended");
    let rec = s.account_by_username(&sender).await.map_err(e)?.ok_or("account")?;
    check!(!rec.suspended && rec.warnings == 0, "a new account has moderation state");
    // Reports: stored open, listed oldest first, paged, fetched by id.
    let r1 = s.insert_report(report(&reporter, &sender, 50_000)).await.map_err(e)?;
    let r2 = s.insert_report(report(&reporter, &sender, 50_001)).await.map_err(e)?;
    let r3 = s.insert_report(report(&reporter, &sender, 50_002)).await.map_err(e)?;
    check!(r1 < r2 && r2 < r3, "report ids not increasing: {r1} {r2} {r3}");
    let got = s.report(r1).await.map_err(e)?.ok_or("report not found")?;
    check!(
        got.id == r1
            && got.reporter == reporter
            && got.sender == sender
            && got.reason == "reason at 50000"
            && got.report == [0x42, 1, 0x50]
            && got.created_at_ms == 50_000
            && got.status == ReportStatus::Open
            && got.resolved_at_ms.is_none(),
        "stored report differs: {got:?}"
    );
    check!(s.report(r3 + 1000).await.map_err(e)?.is_none(), "unknown report found");
    check!(s.report(u64::MAX).await.map_err(e)?.is_none(), "out-of-range report id found");
    let ids = |v: Vec<super::StoredReport>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let open = ids(s.reports(false, r1 - 1, 100).await.map_err(e)?);
    check!(open == [r1, r2, r3], "open reports {open:?}");
    check!(ids(s.reports(false, r1, 1).await.map_err(e)?) == [r2], "report paging");
    // Dismiss changes nothing but the report; warn adds a warning; suspend suspends.
    s.resolve_report(r1, ReportStatus::Dismiss, 60_000).await.map_err(e)?;
    let done = s.report(r1).await.map_err(e)?.ok_or("report")?;
    check!(
        done.status == ReportStatus::Dismiss && done.resolved_at_ms == Some(60_000),
        "dismissed report {done:?}"
    );
    check!(
        matches!(
            s.resolve_report(r1, ReportStatus::Warn, 60_001).await,
            Err(StoreError::AlreadyResolved)
        ),
        "a resolved report was resolved again"
    );
    check!(
        matches!(
            s.resolve_report(r3 + 1000, ReportStatus::Warn, 60_001).await,
            Err(StoreError::NotFound)
        ),
        "an unknown report was resolved"
    );
    s.resolve_report(r2, ReportStatus::Warn, 60_002).await.map_err(e)?;
    let rec = s.account_by_username(&sender).await.map_err(e)?.ok_or("account")?;
    check!(rec.warnings == 1 && !rec.suspended, "after a warning: {rec:?}");
    check!(
        !s.device_auth(m_uid).await.map_err(e)?.ok_or("device")?.suspended,
        "a warning suspended"
    );
    s.resolve_report(r3, ReportStatus::Suspend, 60_003).await.map_err(e)?;
    check!(
        s.device_auth(m_uid).await.map_err(e)?.ok_or("device")?.suspended,
        "suspension not seen by device_auth"
    );
    let rec = s.account_by_username(&sender).await.map_err(e)?.ok_or("account")?;
    check!(rec.suspended && rec.warnings == 1, "after a suspension: {rec:?}");
    check!(s.reports(false, r1 - 1, 100).await.map_err(e)?.is_empty(), "resolved reports open");
    let all = s.reports(true, r1 - 1, 100).await.map_err(e)?;
    let statuses: Vec<_> = all.iter().map(|r| r.status).collect();
    check!(
        statuses == [ReportStatus::Dismiss, ReportStatus::Warn, ReportStatus::Suspend],
        "all reports {statuses:?}"
    );
    // A report outlives the accounts it names; resolving it then touches no account.
    let r4 = s.insert_report(report(&reporter, &format!("{p}gone"), 70_000)).await.map_err(e)?;
    s.resolve_report(r4, ReportStatus::Suspend, 70_001).await.map_err(e)?;
    // Envelopes carry their tags to the recipient and are deleted (with them) on ack.
    let mut b = send(m_uid, "f1", &[(j_uid, 1)], 100, 80_000);
    b.franking_tag = [1; 32];
    b.server_tag = [2; 32];
    b.franking_kid = 7;
    s.enqueue(b.clone()).await.map_err(e)?;
    b.franking_tag = [9; 32];
    s.enqueue(b).await.map_err(e)?;
    let got = s.fetch(j_uid, 0, 10).await.map_err(e)?;
    check!(
        got.len() == 1
            && got[0].franking_tag == [1; 32]
            && got[0].server_tag == [2; 32]
            && got[0].franking_kid == 7,
        "a retry changed the stored tags, or they were lost: {got:?}"
    );
    s.ack(j_uid, vec![got[0].id]).await.map_err(e)?;
    check!(s.fetch(j_uid, 0, 10).await.map_err(e)?.is_empty(), "acked envelope remains");
    Ok(())
}

async fn key_transparency(s: &dyn Store, p: &str) -> Result<(), String> {
    // Registration and deletion queue the username for the next epoch, in order.
    let before = s.kt_dirty(100_000).await.map_err(e)?;
    let last = before.last().map_or(0, |d| d.seq);
    let ivy = format!("{p}ivy");
    let a = s.create_account(account(&ivy, 1000)).await.map_err(e)?;
    let acct = s.device_auth(a).await.map_err(e)?.ok_or("device")?.account_id;
    s.delete_account(acct).await.map_err(e)?;
    let after = s.kt_dirty(100_000).await.map_err(e)?;
    let mine: Vec<&str> =
        after.iter().filter(|d| d.seq > last).map(|d| d.username.as_str()).collect();
    check!(mine == [ivy.as_str(), ivy.as_str()], "queued after register + delete: {mine:?}");
    check!(after.windows(2).all(|w| w[0].seq < w[1].seq), "queue not in order");
    check!(s.kt_dirty(1).await.map_err(e)?.len() == 1, "limit ignored");

    // Records and value states: insert, replace, read back; unknown ids are left out.
    let id = |n: u8| vec![2, n, n, 9];
    s.kt_write(vec![(id(1), vec![1; 10]), (id(2), vec![2; 10])], vec![]).await.map_err(e)?;
    s.kt_write(vec![(id(1), vec![7; 3])], vec![]).await.map_err(e)?;
    let mut got = s.kt_nodes(vec![id(1), id(2), id(3)]).await.map_err(e)?;
    got.sort();
    check!(got == vec![(id(1), vec![7; 3]), (id(2), vec![2; 10])], "kt_nodes returned {got:?}");
    // More ids than one query chunk.
    let many: Vec<(Vec<u8>, Vec<u8>)> =
        (0..1200u32).map(|i| (format!("{p}n{i}").into_bytes(), i.to_be_bytes().to_vec())).collect();
    s.kt_write(many.clone(), vec![]).await.map_err(e)?;
    let ids: Vec<Vec<u8>> = many.iter().map(|(k, _)| k.clone()).collect();
    check!(s.kt_nodes(ids).await.map_err(e)?.len() == 1200, "chunked kt_nodes lost rows");

    let label = format!("{p}ivy").into_bytes();
    let v = |epoch: u64, version: u64, b: u8| KtValueRow {
        label: label.clone(),
        epoch,
        version,
        value: vec![b; 32],
        node_val: vec![b; 32],
        node_len: 256,
    };
    s.kt_write(vec![], vec![v(3, 2, 0xB), v(1, 1, 0xA)]).await.map_err(e)?;
    s.kt_write(vec![], vec![v(3, 2, 0xC)]).await.map_err(e)?;
    let vals = s.kt_values(vec![label.clone(), b"nobody".to_vec()]).await.map_err(e)?;
    check!(vals == vec![v(1, 1, 0xA), v(3, 2, 0xC)], "kt_values returned {vals:?}");

    // Epochs: recorded once; the same root again is a no-op, another root is refused; the
    // finished queue positions go with the epoch.
    let ep = |epoch: u64, r: u8| KtEpochRow {
        epoch,
        root: vec![r; 32],
        signature: vec![r; 64],
        published_at_ms: 1000 + epoch,
    };
    let upto = after.last().map_or(0, |d| d.seq);
    s.kt_finish_epoch(ep(1, 1), upto).await.map_err(e)?;
    check!(
        s.kt_dirty(100_000).await.map_err(e)?.iter().all(|d| d.seq > upto),
        "finished queue entries remain"
    );
    s.kt_finish_epoch(ep(1, 1), upto).await.map_err(e)?;
    check!(
        matches!(s.kt_finish_epoch(ep(1, 2), upto).await, Err(StoreError::EpochConflict(1))),
        "an epoch was rewritten with another root"
    );
    s.kt_finish_epoch(ep(2, 5), upto).await.map_err(e)?;
    s.kt_finish_epoch(ep(3, 6), upto).await.map_err(e)?;
    check!(s.kt_latest_epoch().await.map_err(e)? == Some(ep(3, 6)), "latest epoch differs");
    let range = s.kt_epochs(2, 1).await.map_err(e)?;
    check!(range == vec![ep(2, 5)], "kt_epochs(2, 1) returned {range:?}");
    check!(s.kt_epochs(2, 10).await.map_err(e)?.len() == 2, "kt_epochs(2, 10) count");
    Ok(())
}
