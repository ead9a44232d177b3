//! Fuzz target bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, which
//! include this file with `#[path = ...]`) and by the corpus replay test
//! (`tests/fuzz_corpus.rs`), so that `cargo test` runs exactly the code the fuzzer runs.
//!
//! Every body takes arbitrary bytes and must not panic; it panics (fails the test / reports a
//! crash) only when a property of parley-proto is violated:
//!
//! * decoders never panic, and whatever decodes re-encodes to the same bytes;
//! * `Session::decrypt_any` and `PrekeyStore::accept` leave the state byte-for-byte unchanged
//!   on every error ("state changes only after authentication"), and refuse a replay of
//!   whatever they accepted.
//!
//! The fixture (identities, prekeys, a live Alice/Bob session in several states) is built once
//! from a seeded RNG, so it is the same in every process; the seed corpus
//! (`fuzz/corpus/<target>/gen-*`) is generated from it by [`corpus`].

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use parley_proto::{
    Accepted, AccountIdentity, AccountPublicKey, ChainState, DeviceCertificate, DeviceIdentity,
    DeviceList, FrankedBody, FrankingKey, ItemVerdict, KemPrekey, KeyStatus, MAX_PLAINTEXT_LEN,
    MessageKind, OneTimePrekey, PrekeyBundleIn, PrekeyStore, Report, ReportItem, Session,
    SignedPrekey, initiate, message_kind, open, seal, server_tag, verify_report,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A fuzz target body.
pub(crate) type Body = fn(&[u8]);

/// Every fuzz target: its name (the cargo-fuzz binary and `fuzz/corpus/<name>/`) and body.
pub(crate) const TARGETS: &[(&str, Body)] = &[
    ("bundle", bundle),
    ("certificate", certificate),
    ("device_list", device_list),
    ("signed_prekey", signed_prekey),
    ("kem_prekey", kem_prekey),
    ("one_time_prekey", one_time_prekey),
    ("identity_secrets", identity_secrets),
    ("session_from_bytes", session_from_bytes),
    ("prekey_store_from_bytes", prekey_store_from_bytes),
    ("message_kind", message_kind_target),
    ("session_decrypt", session_decrypt),
    ("prekey_accept", prekey_accept),
    ("franking_report", franking_report),
    ("franking_open", franking_open),
];

/// The fixture's clock (all prekeys are created at this time and accepted at it).
pub(crate) const NOW: u64 = 1_800_000_000;
/// Associated data of every fixture message.
pub(crate) const AD: &[u8] = b"";
const FIXTURE_SEED: u64 = 0x5041_524c_4559_4655; // "PARLEYFU"

/// A deterministic RNG (the library only needs `rand_core::CryptoRng`).
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Deterministic keys, objects and a live session, built once per process.
pub(crate) struct Fixture {
    pub(crate) bob_account: AccountIdentity,
    pub(crate) bob_device: DeviceIdentity,
    pub(crate) bob_cert: DeviceCertificate,
    pub(crate) alice_account: AccountIdentity,
    pub(crate) alice_device: DeviceIdentity,
    pub(crate) alice_cert: DeviceCertificate,
    /// Encoded objects, each labelled, per decoder target.
    pub(crate) certificates: Vec<(&'static str, Vec<u8>)>,
    pub(crate) device_lists: Vec<(&'static str, Vec<u8>)>,
    pub(crate) signed_prekeys: Vec<(&'static str, Vec<u8>)>,
    pub(crate) kem_prekeys: Vec<(&'static str, Vec<u8>)>,
    pub(crate) one_time_prekeys: Vec<(&'static str, Vec<u8>)>,
    pub(crate) bundles: Vec<(&'static str, Vec<u8>)>,
    /// Bob's prekey store before any handshake (the `prekey_accept` target starts from it).
    pub(crate) bob_store: Vec<u8>,
    /// Bob's store after accepting `a1`.
    pub(crate) bob_store_after: Vec<u8>,
    /// Initial messages for Bob's store, labelled.
    pub(crate) initials: Vec<(&'static str, Vec<u8>)>,
    /// Session states the `session_decrypt` target decrypts against (selected by input byte 0).
    pub(crate) states: Vec<(&'static str, Vec<u8>)>,
    /// Messages for `session_decrypt`: (state index, label, message).
    pub(crate) messages: Vec<(u8, &'static str, Vec<u8>)>,
}

/// The process-wide fixture.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let rng = &mut rng(FIXTURE_SEED);
    let bob_account = AccountIdentity::generate(rng);
    let bob_device = DeviceIdentity::generate(rng);
    let bob_cert = bob_account.certify(1, bob_device.public());
    let bob_device2 = DeviceIdentity::generate(rng);
    let bob_cert2 = bob_account.certify(7, bob_device2.public());
    let alice_account = AccountIdentity::generate(rng);
    let alice_device = DeviceIdentity::generate(rng);
    let alice_cert = alice_account.certify(1, alice_device.public());

    let list1 = bob_account.sign_device_list(1, vec![(1, bob_device.public().clone())]).unwrap();
    let list2 = bob_account
        .sign_device_list(
            u64::MAX,
            vec![(7, bob_device2.public().clone()), (1, bob_device.public().clone())],
        )
        .unwrap();
    let alice_list =
        alice_account.sign_device_list(3, vec![(1, alice_device.public().clone())]).unwrap();

    let mut store = PrekeyStore::new();
    let spk = store.generate_signed_prekey(rng, NOW, &bob_device).unwrap();
    let kem_lr = store.generate_last_resort_kem(rng, NOW, &bob_device).unwrap();
    let (otks, kem_ots) = store.generate_one_time(rng, &bob_device, 2).unwrap();
    let bob_store = store.to_bytes().to_vec();

    let parts = |kem: &KemPrekey, otk: Option<&OneTimePrekey>| {
        PrekeyBundleIn::from_parts(
            bob_cert.encode(),
            spk.encode(),
            kem.encode(),
            otk.map(OneTimePrekey::encode),
        )
    };
    let bundle_ot = parts(&kem_ots[0], Some(&otks[0]));
    let bundle_lr = parts(&kem_lr, None);
    let bundle_mixed = parts(&kem_lr, Some(&otks[1]));
    let bundle_kem_only = parts(&kem_ots[1], None);
    let validated = |b: &PrekeyBundleIn| b.clone().validate(Some(bob_account.public())).unwrap();

    // Alice starts a session (one-time keys of both kinds) and sends twice before any reply.
    let mut alice = initiate(rng, &alice_device, &alice_cert, &validated(&bundle_ot)).unwrap();
    let a1 = alice.encrypt(rng, b"hello bob", AD).unwrap();
    let alice_pending = alice.to_bytes().to_vec();
    let a2 = alice.encrypt(rng, b"are you there?", AD).unwrap();

    // Other handshakes: last-resort only, mixed.
    let m_lr = initiate(rng, &alice_device, &alice_cert, &validated(&bundle_lr))
        .unwrap()
        .encrypt(rng, b"last resort", AD)
        .unwrap();
    let m_mixed = initiate(rng, &alice_device, &alice_cert, &validated(&bundle_mixed))
        .unwrap()
        .encrypt(rng, b"mixed", AD)
        .unwrap();
    let m_kem_only = initiate(rng, &alice_device, &alice_cert, &validated(&bundle_kem_only))
        .unwrap()
        .encrypt(rng, &[0x42; 300], AD)
        .unwrap();

    // Bob accepts a1 and replies three times; Alice gets b1 and b3 (b2 is skipped).
    let Accepted { session: mut bob, first } =
        store.accept(rng, NOW, &bob_device, &bob_cert, &a1, AD).unwrap();
    assert_eq!(first.plaintext(), b"hello bob");
    let bob_store_after = store.to_bytes().to_vec();
    let bob_fresh = bob.to_bytes().to_vec();
    let b1 = bob.encrypt(rng, b"b1", AD).unwrap();
    let b2 = bob.encrypt(rng, b"b2", AD).unwrap();
    let b3 = bob.encrypt(rng, &[0x33; 100], AD).unwrap();
    alice.decrypt_any(rng, &b1, AD).unwrap();
    alice.decrypt_any(rng, &b3, AD).unwrap();
    let a3 = alice.encrypt(rng, b"a3", AD).unwrap();
    let alice_established = alice.to_bytes().to_vec();
    assert_eq!(alice.skipped_key_count(), 1);

    // Bob keeps sending on his chain (b4), then receives a2, a3 and answers on a new chain (b5).
    let b4 = bob.encrypt(rng, b"b4", AD).unwrap();
    bob.decrypt_any(rng, &a2, AD).unwrap();
    bob.decrypt_any(rng, &a3, AD).unwrap();
    let b5 = bob.encrypt(rng, b"b5", AD).unwrap();

    Fixture {
        certificates: vec![
            ("bob-cert", bob_cert.encode()),
            ("bob-cert-device-7", bob_cert2.encode()),
            ("alice-cert", alice_cert.encode()),
        ],
        device_lists: vec![
            ("bob-list-1-device", list1.encode()),
            ("bob-list-2-devices", list2.encode()),
            ("alice-list", alice_list.encode()),
        ],
        signed_prekeys: vec![("bob-spk", spk.encode())],
        kem_prekeys: vec![
            ("bob-kem-last-resort", kem_lr.encode()),
            ("bob-kem-one-time", kem_ots[0].encode()),
        ],
        one_time_prekeys: otks
            .iter()
            .zip(["bob-otk-0", "bob-otk-1"])
            .map(|(o, l)| (l, o.encode()))
            .collect(),
        bundles: vec![
            ("bundle-one-time", bundle_ot.encode()),
            ("bundle-last-resort", bundle_lr.encode()),
            ("bundle-mixed", bundle_mixed.encode()),
        ],
        bob_store,
        bob_store_after,
        initials: vec![
            ("a1-one-time", a1.clone()),
            ("a2-one-time-second", a2.clone()),
            ("last-resort", m_lr),
            ("mixed", m_mixed),
            ("kem-one-time-only", m_kem_only),
            ("ratchet-not-initial", a3.clone()),
        ],
        states: vec![
            ("alice-pending", alice_pending),
            ("bob-fresh", bob_fresh),
            ("alice-established", alice_established),
        ],
        messages: vec![
            (0, "b1", b1.clone()),
            (0, "b3-skips-b2", b3.clone()),
            (0, "a1-own", a1.clone()),
            (1, "a1-replay", a1),
            (1, "a2-repeated-initial", a2.clone()),
            (1, "a3-new-chain", a3),
            (2, "b1-replay", b1),
            (2, "b2-skipped-key", b2),
            (2, "b4-current-chain", b4),
            (2, "b5-next-chain", b5),
            (2, "a2-other-direction", a2),
            (2, "b3-replay", b3),
        ],
        bob_account,
        bob_device,
        bob_cert,
        alice_account,
        alice_device,
        alice_cert,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoders: never panic; what decodes re-encodes to the same bytes.
// ---------------------------------------------------------------------------------------------

/// `PrekeyBundleIn::decode`, `.encode()` round trip, then `.validate(None)`.
pub(crate) fn bundle(data: &[u8]) {
    let Ok(b) = PrekeyBundleIn::decode(data) else { return };
    assert_eq!(b.encode(), data, "bundle re-encodes differently");
    if let Ok(v) = b.validate(None) {
        assert_eq!(v.to_unverified().encode(), data, "validated bundle re-encodes differently");
    }
}

/// `DeviceCertificate::decode_verified` and its round trip.
pub(crate) fn certificate(data: &[u8]) {
    if let Ok(c) = DeviceCertificate::decode_verified(data) {
        assert_eq!(c.encode(), data, "certificate re-encodes differently");
        assert!(data.len() <= parley_proto::MAX_CERT_LEN);
    }
}

/// `DeviceList::decode_verified` against the fixture's account and against the account the
/// input names (so signatures by any key are reachable), with the round trip.
pub(crate) fn device_list(data: &[u8]) {
    let fx = fixture();
    let mut accounts = vec![*fx.bob_account.public()];
    if let Some(Ok(named)) =
        data.get(3..35).map(|k| AccountPublicKey::from_bytes(k.try_into().unwrap()))
    {
        accounts.push(named);
    }
    for account in &accounts {
        if let Ok(list) = DeviceList::decode_verified(data, account) {
            assert_eq!(list.encode(), data, "device list re-encodes differently");
            assert_eq!(list.account(), account);
            let devices = list.devices();
            assert!(!devices.is_empty() && devices.len() <= parley_proto::MAX_DEVICES);
            assert!(devices.windows(2).all(|w| w[0].0 < w[1].0), "device ids not sorted");
        }
    }
}

/// `SignedPrekey::decode_verified` against Bob's device keys, with the round trip.
pub(crate) fn signed_prekey(data: &[u8]) {
    if let Ok(p) = SignedPrekey::decode_verified(data, fixture().bob_device.public()) {
        assert_eq!(p.encode(), data, "signed prekey re-encodes differently");
    }
}

/// `KemPrekey::decode_verified` against Bob's device keys, with the round trip.
pub(crate) fn kem_prekey(data: &[u8]) {
    if let Ok(p) = KemPrekey::decode_verified(data, fixture().bob_device.public()) {
        assert_eq!(p.encode(), data, "KEM prekey re-encodes differently");
    }
}

/// `OneTimePrekey::decode` and its round trip.
pub(crate) fn one_time_prekey(data: &[u8]) {
    if let Ok(p) = OneTimePrekey::decode(data) {
        assert_eq!(p.encode(), data, "one-time prekey re-encodes differently");
    }
}

/// `AccountIdentity::from_secret_bytes` and `DeviceIdentity::from_secret_bytes`, with their
/// round trips; a restored identity's signatures verify.
pub(crate) fn identity_secrets(data: &[u8]) {
    if let Ok(a) = AccountIdentity::from_secret_bytes(data) {
        assert_eq!(&a.to_secret_bytes()[..], data, "account secret re-encodes differently");
    }
    if let Ok(d) = DeviceIdentity::from_secret_bytes(data) {
        assert_eq!(&d.to_secret_bytes()[..], data, "device secret re-encodes differently");
        // The restored device can be certified, and the certificate verifies.
        let cert = fixture().bob_account.certify(9, d.public());
        DeviceCertificate::decode_verified(&cert.encode()).unwrap();
    }
}

/// `Session::from_bytes` and its round trip.
pub(crate) fn session_from_bytes(data: &[u8]) {
    if let Ok(s) = Session::from_bytes(data) {
        assert_eq!(&s.to_bytes()[..], data, "session re-encodes differently");
    }
}

/// `PrekeyStore::from_bytes` against Bob's device keys. The encoding is not canonical (entries
/// are keyed by id), so the property is that one decode/encode pass reaches a fixed point.
pub(crate) fn prekey_store_from_bytes(data: &[u8]) {
    let device = fixture().bob_device.public();
    if let Ok(s) = PrekeyStore::from_bytes(data, device) {
        let once = s.to_bytes();
        let again = PrekeyStore::from_bytes(&once, device).expect("re-encoded store decodes");
        assert_eq!(again.to_bytes(), once, "store encoding is not a fixed point");
    }
}

/// `message_kind` never panics, and classifies consistently with the first byte.
pub(crate) fn message_kind_target(data: &[u8]) {
    match message_kind(data) {
        Ok(MessageKind::Initial { .. }) => assert_eq!(data.first(), Some(&0x11)),
        Ok(MessageKind::Ratchet) => assert_eq!(data.first(), Some(&0x10)),
        Ok(_) | Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Stateful targets: errors leave the state unchanged; replays are refused.
// ---------------------------------------------------------------------------------------------

/// Input: one byte selecting a session state of the fixture, then a message. Decrypts it with
/// `Session::decrypt_any`: on error the session must serialize byte-identically to before; on
/// success it must have changed, refuse the same message again (without changing), and still
/// round-trip through `to_bytes`/`from_bytes`.
pub(crate) fn session_decrypt(data: &[u8]) {
    let fx = fixture();
    let Some((&selector, message)) = data.split_first() else { return };
    let (_, state) = &fx.states[usize::from(selector) % fx.states.len()];
    let mut session = Session::from_bytes(state).expect("fixture session decodes");
    let before = session.to_bytes();
    let parses = message_kind(message).is_ok();
    let mut rng = rng(u64::from(selector));
    match session.decrypt_any(&mut rng, message, AD) {
        Err(e) => {
            assert_eq!(session.to_bytes(), before, "session changed on error {e:?}");
        }
        Ok(decrypted) => {
            assert!(parses, "decrypted a message that message_kind rejects");
            assert!(decrypted.plaintext().len() <= MAX_PLAINTEXT_LEN);
            let after = session.to_bytes();
            assert_ne!(after, before, "session unchanged after a successful decryption");
            let replay = session.decrypt_any(&mut rng, message, AD);
            assert!(replay.is_err(), "replayed message decrypted twice");
            assert_eq!(session.to_bytes(), after, "session changed on a refused replay");
            let restored = Session::from_bytes(&after).expect("updated session decodes");
            assert_eq!(restored.to_bytes(), after, "updated session re-encodes differently");
        }
    }
}

/// Input: an initial message for Bob's prekey store. On error the store must serialize
/// byte-identically to before; on success it must have consumed a one-time prekey or
/// remembered the handshake, so the same message is then refused (without changing it).
pub(crate) fn prekey_accept(data: &[u8]) {
    let fx = fixture();
    let device = fx.bob_device.public();
    let mut store = PrekeyStore::from_bytes(&fx.bob_store, device).expect("fixture store");
    let before = store.to_bytes();
    let kind = message_kind(data);
    let mut rng = rng(7);
    match store.accept(&mut rng, NOW, &fx.bob_device, &fx.bob_cert, data, AD) {
        Err(e) => {
            assert_eq!(store.to_bytes(), before, "prekey store changed on error {e:?}");
        }
        Ok(Accepted { session, first }) => {
            let Ok(MessageKind::Initial { handshake_id }) = kind else {
                panic!("accepted a message that message_kind does not call initial: {kind:?}");
            };
            assert_eq!(&handshake_id, session.handshake_id());
            assert!(first.plaintext().len() <= MAX_PLAINTEXT_LEN);
            let after = store.to_bytes();
            assert_ne!(after, before, "store unchanged after accepting a handshake");
            let again = store.accept(&mut rng, NOW, &fx.bob_device, &fx.bob_cert, data, AD);
            assert!(again.is_err(), "initial message accepted twice");
            assert_eq!(store.to_bytes(), after, "prekey store changed on a refused replay");
            let s = session.to_bytes();
            assert_eq!(Session::from_bytes(&s).expect("accepted session decodes").to_bytes(), s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seed corpus
// ---------------------------------------------------------------------------------------------

/// A few invalid variants of a valid input: truncated, extended, bit flips at both ends.
fn mutants(label: &str, valid: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if !valid.is_empty() {
        out.push((format!("bad-truncated-{label}"), valid[..valid.len() - 1].to_vec()));
        let mut v = valid.to_vec();
        *v.last_mut().unwrap() ^= 0x01;
        out.push((format!("bad-last-bit-{label}"), v));
    }
    let mut v = valid.to_vec();
    v.push(0);
    out.push((format!("bad-trailing-{label}"), v));
    if valid.len() > 1 {
        let mut v = valid.to_vec();
        v[1] ^= 0x02;
        out.push((format!("bad-version-{label}"), v));
    }
    out
}

/// Valid inputs, labelled, plus invalid variants of the first one.
fn with_mutants(valid: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = valid.clone();
    if let Some((label, bytes)) = valid.first() {
        out.extend(mutants(label, bytes));
    }
    out.push(("bad-empty".into(), Vec::new()));
    out
}

fn labelled(items: &[(&'static str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    items.iter().map(|(l, b)| ((*l).to_owned(), b.clone())).collect()
}

/// The franking fixture: Alice (device 1) sends three franked messages to Bob, Bob one to
/// Alice; the server key is `[0x4b; 32]` with kid 7. Returns (franked items, Bob's own body).
fn franking_fixture() -> (Vec<ReportItem>, Vec<u8>) {
    let rng = &mut rng(FIXTURE_SEED ^ 0xf4);
    let key = FrankingKey::from_bytes(FRANKING_KEY);
    let mut chain = ChainState::new();
    let mut items = Vec::new();
    for i in 0..3u64 {
        let body = FrankedBody {
            message_id: format!("m{i}"),
            sent_at_ms: NOW * 1000 + i,
            sender: "alice".into(),
            sender_device: 1,
            recipient: "bob".into(),
            seq: chain.next_seq(),
            prev: *chain.prev(),
            text: format!("message {i}").into(),
        };
        let sealed = seal(rng, &body).unwrap();
        chain.advance(sealed.body_bytes()).unwrap();
        let time = NOW * 1000 + 10 * i;
        items.push(ReportItem::Franked {
            content: sealed.content().to_vec(),
            tf: *sealed.tf(),
            rf: server_tag(&key, sealed.tf(), "alice", 1, "bob", time),
            kid: FRANKING_KID,
            sender: "alice".into(),
            sender_device: 1,
            recipient: "bob".into(),
            server_time_ms: time,
        });
    }
    let own = FrankedBody {
        message_id: "b0".into(),
        sent_at_ms: NOW * 1000,
        sender: "bob".into(),
        sender_device: 1,
        recipient: "alice".into(),
        seq: 0,
        prev: [0; 32],
        text: "reply".to_string().into(),
    };
    (items, own.encode().unwrap().to_vec())
}

const FRANKING_KEY: [u8; 32] = [0x4b; 32];
const FRANKING_KID: u32 = 7;

/// `Report::decode` with the round trip, then `verify_report` against the fixture key: one
/// verdict per item, no panic, and a report that verifies fully only if every franked item
/// opens.
pub(crate) fn franking_report(data: &[u8]) {
    let Ok(report) = Report::decode(data) else { return };
    assert_eq!(report.encode().unwrap(), data, "report re-encodes differently");
    let key = FrankingKey::from_bytes(FRANKING_KEY);
    let verdicts = verify_report(&report, |kid, _| {
        if kid == FRANKING_KID { KeyStatus::Active(&key) } else { KeyStatus::Unknown }
    });
    assert_eq!(verdicts.len(), report.items.len());
    for (item, verdict) in report.items.iter().zip(&verdicts) {
        if let (ReportItem::Franked { content, tf, .. }, ItemVerdict::Verified) = (item, verdict) {
            assert!(open(content, tf).is_ok(), "verified item does not open");
        }
    }
}

/// `open(content, tf)` with `tf = data[..32]`: whatever opens decodes to a body that
/// re-encodes to the committed bytes.
pub(crate) fn franking_open(data: &[u8]) {
    let Some((tf, content)) = data.split_first_chunk::<32>() else { return };
    if let Ok(opened) = open(content, tf) {
        assert_eq!(&opened.body().encode().unwrap()[..], opened.body_bytes());
        assert_eq!(opened.content(), content);
    }
}

/// The generated seed corpus of `target`: (file name without the `gen-` prefix, bytes).
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let fx = fixture();
    let secret = |b: &[u8]| b.to_vec();
    match target {
        "bundle" => with_mutants(labelled(&fx.bundles)),
        "certificate" => with_mutants(labelled(&fx.certificates)),
        "device_list" => with_mutants(labelled(&fx.device_lists)),
        "signed_prekey" => with_mutants(labelled(&fx.signed_prekeys)),
        "kem_prekey" => with_mutants(labelled(&fx.kem_prekeys)),
        "one_time_prekey" => with_mutants(labelled(&fx.one_time_prekeys)),
        "identity_secrets" => with_mutants(vec![
            ("bob-device".into(), secret(&fx.bob_device.to_secret_bytes())),
            ("bob-account".into(), secret(&fx.bob_account.to_secret_bytes())),
            ("alice-device".into(), secret(&fx.alice_device.to_secret_bytes())),
            ("alice-account".into(), secret(&fx.alice_account.to_secret_bytes())),
        ]),
        "session_from_bytes" => with_mutants(labelled(&fx.states)),
        "prekey_store_from_bytes" => {
            let empty = PrekeyStore::new().to_bytes().to_vec();
            with_mutants(vec![
                ("bob-store".into(), fx.bob_store.clone()),
                ("bob-store-after-accept".into(), fx.bob_store_after.clone()),
                ("empty-store".into(), empty),
            ])
        }
        "message_kind" => {
            let mut v = labelled(&fx.initials);
            v.extend(fx.messages.iter().map(|(_, l, m)| ((*l).to_owned(), m.clone())));
            let mut seen = std::collections::HashSet::new();
            v.retain(|(_, m)| seen.insert(m.clone()));
            with_mutants(v)
        }
        "session_decrypt" => {
            let valid: Vec<(String, Vec<u8>)> = fx
                .messages
                .iter()
                .map(|(state, label, m)| {
                    let mut input = vec![*state];
                    input.extend_from_slice(m);
                    (format!("{}-{label}", fx.states[usize::from(*state)].0), input)
                })
                .collect();
            let mut out = valid.clone();
            // Invalid variants of a valid ratchet message (b4 for Alice): a flipped header byte,
            // a flipped ciphertext byte, a flipped tag byte, truncated.
            let (label, b4) = valid.iter().find(|(l, _)| l.ends_with("b4-current-chain")).unwrap();
            for (what, at) in [("header", 10), ("ciphertext", 100), ("tag", b4.len() - 1)] {
                let mut v = b4.clone();
                v[at] ^= 0x80;
                out.push((format!("bad-{what}-{label}"), v));
            }
            out.push((format!("bad-truncated-{label}"), b4[..b4.len() - 1].to_vec()));
            out.push(("bad-selector-only".into(), vec![2]));
            out
        }
        "prekey_accept" => {
            let mut out = with_mutants(labelled(&fx.initials));
            // A flipped byte inside the KEM ciphertext: implicit rejection, then the first
            // message fails to authenticate.
            let (_, a1) = &fx.initials[0];
            let mut v = a1.clone();
            v[300] ^= 0x01;
            out.push(("bad-kem-ciphertext-a1".into(), v));
            out
        }
        "franking_report" => {
            let (items, own) = franking_fixture();
            let report =
                |items: Vec<ReportItem>| Report { reporter: "bob".into(), items }.encode().unwrap();
            let gap = ReportItem::Gap {
                sender: "alice".into(),
                sender_device: 1,
                from_seq: 1,
                to_seq: 1,
            };
            with_mutants(vec![
                ("honest".into(), report(items.clone())),
                (
                    "own-and-gap".into(),
                    report(vec![
                        items[0].clone(),
                        ReportItem::Own { body_bytes: own },
                        gap,
                        items[2].clone(),
                    ]),
                ),
                ("reordered".into(), report(vec![items[1].clone(), items[0].clone()])),
            ])
        }
        "franking_open" => {
            let (items, _) = franking_fixture();
            let inputs = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let ReportItem::Franked { content, tf, .. } = item else { unreachable!() };
                    (format!("m{i}"), [&tf[..], content].concat())
                })
                .collect();
            with_mutants(inputs)
        }
        other => panic!("no corpus for unknown target {other}"),
    }
}
