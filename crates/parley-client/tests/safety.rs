//! Message requests, blocks, minors and on-device filters, end to end through a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::Duration;

use parley_client::filters::{FilterReason, FilterRule};
use parley_client::{AgeClass, Client, ClientError, ClientOptions, Event};
use parley_server::{Config, Limits, RunningServer};

fn opts() -> ClientOptions {
    ClientOptions { insecure_test_kdf: true, ..ClientOptions::default() }
}

async fn server(data: &Path) -> RunningServer {
    let config = Config {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: Limits {
            registrations_per_hour: 10_000,
            ip_rps: 10_000,
            ip_burst: 10_000,
            ..Limits::default()
        },
        ..Config::default()
    };
    parley_server::start(config).await.unwrap()
}

async fn account(dir: &Path, url: &str, name: &str, age: AgeClass) -> Client {
    Client::register(&dir.join(name), url, name, "passphrase", &opts(), age).await.unwrap()
}

/// (from, text, request, filtered) of the messages among `events`.
fn messages(events: &[Event]) -> Vec<(String, String, bool, Option<FilterReason>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, text, request, filtered, .. } => {
                Some((from.clone(), text.clone(), *request, filtered.clone()))
            }
            _ => None,
        })
        .collect()
}

async fn receive_n(c: &mut Client, n: usize) -> Vec<(String, String, bool, Option<FilterReason>)> {
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(messages(&c.receive(Some(Duration::from_secs(2))).await.unwrap()));
        if got.len() >= n {
            break;
        }
    }
    got
}

/// True when nothing but non-message events arrives within a second.
async fn receive_none(c: &mut Client) -> bool {
    messages(&c.receive(Some(Duration::from_secs(1))).await.unwrap()).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_requests_until_accepted_and_their_links_are_inert() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data")).await;
    let url = srv.url();
    let mut alice = account(dir.path(), &url, "alice", AgeClass::Adult).await;
    let mut bob = account(dir.path(), &url, "bob", AgeClass::Adult).await;
    let mut carol = account(dir.path(), &url, "carol", AgeClass::Adult).await;

    alice.send("bob", "hi bob, see https://evil.example.com/x").await.unwrap();
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(
        got,
        vec![("alice".into(), "hi bob, see https[:]//evil[.]example[.]com/x".into(), true, None)]
    );
    let reqs = bob.requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].from.as_str(), reqs[0].count), ("alice", 1));
    let h = bob.history("alice").await.unwrap();
    assert!(h[0].request && h[0].text.as_deref().unwrap().contains("[:]//"));
    // Accepting makes alice a contact: her messages show as they are, links live.
    bob.accept("alice").await.unwrap();
    assert!(bob.requests().await.unwrap().is_empty());
    let h = bob.history("alice").await.unwrap();
    assert!(!h[0].request && h[0].text.as_deref().unwrap().contains("https://evil.example.com"));
    alice.send("bob", "second").await.unwrap();
    assert_eq!(receive_n(&mut bob, 1).await, vec![("alice".into(), "second".into(), false, None)]);
    assert!(matches!(bob.accept("alice").await, Err(ClientError::NoRequest(_))));

    // Replying to a request accepts it too.
    carol.send("bob", "hello from carol").await.unwrap();
    assert!(receive_n(&mut bob, 1).await[0].2);
    bob.send("carol", "hi carol").await.unwrap();
    assert!(bob.requests().await.unwrap().is_empty());
    // And on carol's side bob was never a request: she wrote first.
    assert_eq!(
        receive_n(&mut carol, 1).await,
        vec![("bob".into(), "hi carol".into(), false, None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_deletes_and_a_block_stops_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data")).await;
    let url = srv.url();
    let mut bob = account(dir.path(), &url, "bob", AgeClass::Adult).await;
    let mut eve = account(dir.path(), &url, "eve", AgeClass::Adult).await;

    eve.send("bob", "spam 1").await.unwrap();
    assert_eq!(receive_n(&mut bob, 1).await.len(), 1);
    bob.decline("eve").await.unwrap();
    assert!(bob.requests().await.unwrap().is_empty());
    assert!(bob.history("eve").await.unwrap().is_empty());
    assert!(matches!(bob.decline("eve").await, Err(ClientError::NoRequest(_))));

    // A new message after a decline is a new request; a block stops everything after it.
    eve.send("bob", "spam 2").await.unwrap();
    bob.block("eve").await.unwrap();
    assert!(receive_none(&mut bob).await, "the queued message survived the block");
    assert_eq!(bob.blocked().await.unwrap(), ["eve"]);
    let refused = eve.send("bob", "spam 3").await.unwrap_err();
    assert!(matches!(refused, ClientError::NoSuchUser(_)), "{refused}");
    assert!(receive_none(&mut bob).await);
    assert!(matches!(bob.send("eve", "hey").await, Err(ClientError::BlockedContact(_))));

    bob.unblock("eve").await.unwrap();
    assert!(bob.blocked().await.unwrap().is_empty());
    eve.send("bob", "sorry").await.unwrap();
    assert_eq!(receive_n(&mut bob, 1).await, vec![("eve".into(), "sorry".into(), true, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minors_are_protected_and_keep_their_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data")).await;
    let url = srv.url();
    let mut adult = account(dir.path(), &url, "adult", AgeClass::Adult).await;
    let mut kid = account(dir.path(), &url, "kid", AgeClass::Minor).await;
    let mut friend = account(dir.path(), &url, "friend", AgeClass::Minor).await;
    assert_eq!(kid.account_info().await.unwrap().age_class, AgeClass::Minor);

    // An adult stranger is refused exactly as for an account that does not exist.
    let to_kid = adult.send("kid", "hi").await.unwrap_err();
    let to_ghost = adult.send("ghost", "hi").await.unwrap_err();
    assert!(matches!(to_kid, ClientError::NoSuchUser(_)));
    assert_eq!(to_kid.to_string().replace("kid", "X"), to_ghost.to_string().replace("ghost", "X"));

    // The minor writes first; from then on the conversation works normally, both ways.
    kid.send("adult", "hello, I'm from the chess club").await.unwrap();
    let got = receive_n(&mut adult, 1).await;
    assert!(got[0].2, "a minor's first message is a request for the adult too");
    for i in 0..3 {
        adult.send("kid", &format!("answer {i}")).await.unwrap();
        kid.send("adult", &format!("reply {i}")).await.unwrap();
    }
    let k = receive_n(&mut kid, 3).await;
    assert_eq!(
        k.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["answer 0", "answer 1", "answer 2"]
    );
    assert!(k.iter().all(|m| !m.2 && m.3.is_none()));
    assert_eq!(receive_n(&mut adult, 3).await.len(), 3);

    // Filters are on by default for minors: the shipped list and link warnings.
    let s = kid.filter_settings().await.unwrap();
    assert!(s.enabled && s.link_warnings && s.defaults);
    adult.send("kid", "don't tell your parents about me").await.unwrap();
    adult.send("kid", "look: www.example.org").await.unwrap();
    let k = receive_n(&mut kid, 2).await;
    assert_eq!(k[0].3, Some(FilterReason::Keyword));
    assert_eq!(k[1].3, Some(FilterReason::Link));
    // Hidden, not lost: the text is there to reveal, in the event and in the history.
    assert_eq!(k[0].1, "don't tell your parents about me");
    let h = kid.history("adult").await.unwrap();
    assert_eq!(h.iter().filter(|e| e.filtered.is_some()).count(), 2);

    // Another minor is a request, not refused.
    friend.send("kid", "hi from another kid").await.unwrap();
    assert!(receive_n(&mut kid, 1).await[0].2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adults_opt_in_to_filters_and_add_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir.path().join("data")).await;
    let url = srv.url();
    let mut a = account(dir.path(), &url, "anna", AgeClass::Adult).await;
    let mut b = account(dir.path(), &url, "bert", AgeClass::Adult).await;
    let s = b.filter_settings().await.unwrap();
    assert!(!s.enabled && !s.link_warnings && s.defaults);
    b.send("anna", "hi").await.unwrap(); // anna is bert's contact: no request noise below
    a.send("bert", "send nudes").await.unwrap();
    assert_eq!(receive_n(&mut b, 1).await[0].3, None, "filters are opt-in for adults");

    b.set_filters(Some(true), None).await.unwrap();
    b.add_filter(FilterRule { pattern: "crypto giveaway".into(), regex: false }).await.unwrap();
    b.add_filter(FilterRule { pattern: r"\bwire \$\d+".into(), regex: true }).await.unwrap();
    assert!(matches!(
        b.add_filter(FilterRule { pattern: "(".into(), regex: true }).await,
        Err(ClientError::InvalidFilter(_))
    ));
    for t in ["Crypto Giveaway today", "please wire $500", "send nudes", "a normal message"] {
        a.send("bert", t).await.unwrap();
    }
    let got = receive_n(&mut b, 4).await;
    let reasons: Vec<_> = got.iter().map(|m| m.3.clone()).collect();
    assert_eq!(
        reasons,
        [
            Some(FilterReason::Keyword),
            Some(FilterReason::Keyword),
            Some(FilterReason::Keyword),
            None
        ]
    );
    // Filters apply when displayed: turning them off shows the history unfiltered.
    b.set_filters(Some(false), None).await.unwrap();
    assert!(b.history("anna").await.unwrap().iter().all(|e| e.filtered.is_none()));
    assert!(
        b.remove_filter(&FilterRule { pattern: "crypto giveaway".into(), regex: false })
            .await
            .unwrap()
    );
    assert_eq!(b.filter_settings().await.unwrap().rules.len(), 1);
}
