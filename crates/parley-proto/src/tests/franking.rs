//! Franking: sealing and opening, the ratchet binding of TF, server tags, reports and their
//! verification (each failure with its precise verdict), encodings and redaction.

use proptest::prelude::*;

use super::support::*;
use crate::franking::seal_with_nf;
use crate::*;

pub(super) const T0: u64 = 1_800_000_000_000;
pub(super) const KID: u32 = 7;

/// One sending device's view of its chain to one recipient account.
pub(super) struct Sender {
    pub(super) name: &'static str,
    pub(super) device: u32,
    pub(super) to: &'static str,
    pub(super) chain: ChainState,
    pub(super) count: u64,
}

impl Sender {
    pub(super) fn new(name: &'static str, device: u32, to: &'static str) -> Self {
        Self { name, device, to, chain: ChainState::new(), count: 0 }
    }

    /// The next body in this chain.
    pub(super) fn body(&self, text: &str) -> FrankedBody {
        FrankedBody {
            message_id: format!("{}-{}-{}", self.name, self.device, self.count),
            sent_at_ms: T0 + self.count * 1000,
            sender: self.name.to_string(),
            sender_device: self.device,
            recipient: self.to.to_string(),
            seq: self.chain.next_seq(),
            prev: *self.chain.prev(),
            text: text.to_string().into(),
        }
    }

    /// Seals `body` with `nf` and moves the chain past it.
    pub(super) fn send_body(&mut self, body: &FrankedBody, nf: &[u8; 32]) -> Sealed {
        let sealed = seal_with_nf(body, nf).unwrap();
        self.chain.advance(sealed.body_bytes()).unwrap();
        self.count += 1;
        sealed
    }

    /// Seals the next message with an NF derived from the counter (deterministic fixture).
    pub(super) fn send(&mut self, text: &str) -> Sealed {
        let body = self.body(text);
        let nf = crate::crypto::sha256(&[b"nf", body.message_id.as_bytes()]);
        self.send_body(&body, &nf)
    }
}

/// The server: tags what it relays with key `KID`, at increasing times.
pub(super) struct Server {
    pub(super) key: FrankingKey,
    pub(super) time: u64,
}

impl Server {
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self { key: FrankingKey::from_bytes(key), time: T0 }
    }

    /// Relays a sealed message from `from` (as authenticated by the server) to `to`.
    pub(super) fn relay(&mut self, sealed: &Sealed, from: &Sender, to: &str) -> ReportItem {
        self.time += 10;
        let rf = server_tag(&self.key, sealed.tf(), from.name, from.device, to, self.time);
        ReportItem::Franked {
            content: sealed.content().to_vec(),
            tf: *sealed.tf(),
            rf,
            kid: KID,
            sender: from.name.to_string(),
            sender_device: from.device,
            recipient: to.to_string(),
            server_time_ms: self.time,
        }
    }

    pub(super) fn keys<'s>(&'s self) -> impl Fn(u32, u64) -> KeyStatus<'s> + 's {
        move |kid, _| if kid == KID { KeyStatus::Active(&self.key) } else { KeyStatus::Unknown }
    }
}

/// Alice (device 1) sends `n` messages to Bob; the items are what Bob's client stored.
pub(super) fn conversation(n: usize) -> (Server, Vec<ReportItem>) {
    let mut server = Server::new([0x42; 32]);
    let mut alice = Sender::new("alice", 1, "bob");
    let items = (0..n)
        .map(|i| {
            let s = alice.send(&format!("message {i}"));
            server.relay(&s, &alice, "bob")
        })
        .collect();
    (server, items)
}

fn report(items: Vec<ReportItem>) -> Report {
    Report { reporter: "bob".into(), items }
}

fn verify(server: &Server, items: Vec<ReportItem>) -> Vec<ItemVerdict> {
    let r = report(items);
    // Every report the tests verify also survives its encoding.
    assert_eq!(Report::decode(&r.encode().unwrap()).unwrap(), r);
    verify_report(&r, server.keys())
}

use ItemVerdict::*;

fn with_content(item: &ReportItem, f: impl FnOnce(&mut Vec<u8>)) -> ReportItem {
    let mut item = item.clone();
    if let ReportItem::Franked { content, .. } = &mut item {
        f(content);
    }
    item
}

// ---------------------------------------------------------------------------------------------
// Sender and receiver
// ---------------------------------------------------------------------------------------------

#[test]
fn seal_open_round_trip_and_chain() {
    let mut rng = CtrRng::new(b"franking");
    let mut alice = Sender::new("alice", 1, "bob");
    let body = alice.body("hello");
    let sealed = seal(&mut rng, &body).unwrap();
    assert_eq!(sealed.content().len(), sealed.body_bytes().len() + 32);
    assert_eq!(sealed.body_bytes(), &body.encode().unwrap()[..]);
    let opened = open(sealed.content(), sealed.tf()).unwrap();
    assert_eq!(opened.body(), &body);
    assert_eq!(opened.body_bytes(), sealed.body_bytes());
    assert_eq!(opened.content(), sealed.content());
    assert_eq!(&sealed.content()[sealed.body_bytes().len()..], opened.nf());
    // Two seals of one body use fresh NFs: different commitments.
    let again = seal(&mut rng, &body).unwrap();
    assert_ne!(again.tf(), sealed.tf());

    // The chain: seq 0 with a zero prev, then prev = H(domain ‖ previous body).
    assert_eq!((body.seq, body.prev), (0, [0; 32]));
    alice.chain.advance(sealed.body_bytes()).unwrap();
    let next = alice.body("again");
    assert_eq!(next.seq, 1);
    assert_eq!(
        next.prev,
        crate::crypto::sha256(&[b"Parley franking chain v1", sealed.body_bytes()])
    );
    let bytes = alice.chain.to_bytes();
    assert_eq!(bytes.len(), CHAIN_STATE_LEN);
    assert_eq!(&bytes[..2], &[0x24, 0x01]);
    assert_eq!(ChainState::from_bytes(&bytes).unwrap(), alice.chain);
    assert_eq!(
        ChainState::from_bytes(&bytes[1..]),
        Err(DecodeError::WrongType { found: 1, expected: 0x24 })
    );
    assert_eq!(ChainState::from_bytes(&bytes[..41]), Err(DecodeError::Truncated));
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(ChainState::from_bytes(&long), Err(DecodeError::TrailingBytes));
    let mut last =
        ChainState::from_bytes(&[[0x24, 1].as_slice(), &[0xff; 8], &[0; 32]].concat()).unwrap();
    assert_eq!(last.advance(b"x"), Err(FrankingError::ChainExhausted));
    assert_eq!(last.next_seq(), u64::MAX);
}

#[test]
fn open_rejects_a_commitment_that_does_not_open() {
    let mut alice = Sender::new("alice", 1, "bob");
    let sealed = alice.send("hello");
    let c = sealed.content();
    let tf = *sealed.tf();
    let flip = |i: usize| {
        let mut x = c.to_vec();
        x[i] ^= 1;
        x
    };
    // Altered body, altered NF, another TF: all CommitmentMismatch.
    assert_eq!(open(&flip(c.len() - 40), &tf).unwrap_err(), FrankingError::CommitmentMismatch);
    assert_eq!(open(&flip(0), &tf).unwrap_err(), FrankingError::CommitmentMismatch);
    assert_eq!(open(&flip(c.len() - 1), &tf).unwrap_err(), FrankingError::CommitmentMismatch);
    let mut other = tf;
    other[31] ^= 1;
    assert_eq!(open(c, &other).unwrap_err(), FrankingError::CommitmentMismatch);
    // NF moved into the body: the split is fixed, so this fails too.
    assert_eq!(open(&c[..c.len() - 1], &tf).unwrap_err(), FrankingError::CommitmentMismatch);
    assert_eq!(open(&c[..31], &tf).unwrap_err(), FrankingError::Malformed(DecodeError::Truncated));
    assert!(matches!(
        open(&vec![0; MAX_FRANKED_CONTENT_LEN + 1], &tf).unwrap_err(),
        FrankingError::FieldTooLong { field: "content", .. }
    ));
    // A sender that commits to bytes that are not a body: the receiver drops it too.
    let nf = [9u8; 32];
    let junk = b"not a body".to_vec();
    let tf = crate::crypto::hmac_sha256(&nf, &[DOMAIN_FRANKING_COMMITMENT, &junk]);
    let content = [junk, nf.to_vec()].concat();
    assert!(matches!(open(&content, &tf).unwrap_err(), FrankingError::Malformed(_)));
}

#[test]
fn tf_is_bound_to_the_ratchet_ciphertext() {
    let mut rng = CtrRng::new(b"franking ratchet");
    let (mut a, mut b) = established(&mut rng);
    let alice = Sender::new("alice", 1, "bob");
    let body = alice.body("bound to the ciphertext");
    let sealed = seal(&mut rng, &body).unwrap();
    let ad = ratchet_ad(sealed.tf());
    assert_eq!(ad.len(), 21 + 32);
    assert_eq!(&ad[..21], b"Parley franking AD v1");
    let ct = a.encrypt(&mut rng, sealed.content(), &ad).unwrap();

    // TF changed in transit (by the server or anyone): decryption fails, state untouched.
    let before = snapshot(&b);
    let mut tf = *sealed.tf();
    tf[0] ^= 0x80;
    assert_eq!(
        b.decrypt_any(&mut rng, &ct, &ratchet_ad(&tf)).unwrap_err(),
        DecryptError::Authentication
    );
    assert_eq!(b.decrypt_any(&mut rng, &ct, b"").unwrap_err(), DecryptError::Authentication);
    assert_eq!(snapshot(&b), before);

    // The genuine TF decrypts and opens.
    let d = b.decrypt_any(&mut rng, &ct, &ad).unwrap();
    let opened = open(d.plaintext(), sealed.tf()).unwrap();
    assert_eq!(opened.body(), &body);
}

#[test]
fn server_tag_binds_every_field() {
    let key = FrankingKey::from_bytes([1; 32]);
    let tf = [2u8; 32];
    let rf = server_tag(&key, &tf, "alice", 1, "bob", T0);
    assert!(verify_server_tag(&key, &tf, "alice", 1, "bob", T0, &rf));
    assert!(!verify_server_tag(&key, &[3; 32], "alice", 1, "bob", T0, &rf));
    assert!(!verify_server_tag(&key, &tf, "alicf", 1, "bob", T0, &rf));
    assert!(!verify_server_tag(&key, &tf, "alice", 2, "bob", T0, &rf));
    assert!(!verify_server_tag(&key, &tf, "alice", 1, "bobb", T0, &rf));
    assert!(!verify_server_tag(&key, &tf, "alice", 1, "bob", T0 + 1, &rf));
    // Length prefixes: moving a byte from one name to the other changes the tag.
    assert!(!verify_server_tag(&key, &tf, "alic", 1, "ebob", T0, &rf));
    assert!(!verify_server_tag(&FrankingKey::from_bytes([9; 32]), &tf, "alice", 1, "bob", T0, &rf));
    let expected = crate::crypto::hmac_sha256(
        &[1; 32],
        &[
            b"Parley franking server tag v1",
            &tf,
            &5u32.to_be_bytes(),
            b"alice",
            &1u32.to_be_bytes(),
            &3u32.to_be_bytes(),
            b"bob",
            &T0.to_be_bytes(),
        ],
    );
    assert_eq!(rf, expected);
    let mut rng = CtrRng::new(b"k");
    assert_ne!(FrankingKey::generate(&mut rng).expose_secret(), key.expose_secret());
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

#[test]
fn honest_report_verifies_with_own_messages_and_two_devices() {
    let mut server = Server::new([5; 32]);
    let mut alice1 = Sender::new("alice", 1, "bob");
    let mut alice2 = Sender::new("alice", 2, "bob");
    let mut bob = Sender::new("bob", 1, "alice");
    let mut items = Vec::new();
    for i in 0..4 {
        let s = alice1.send(&format!("from device 1: {i}"));
        items.push(server.relay(&s, &alice1, "bob"));
        let s = bob.send(&format!("bob: {i}"));
        items.push(ReportItem::Own { body_bytes: s.body_bytes().to_vec() });
        let s = alice2.send(&format!("from device 2: {i}"));
        items.push(server.relay(&s, &alice2, "bob"));
    }
    let v = verify(&server, items);
    let expected: Vec<ItemVerdict> =
        (0..4).flat_map(|_| [Verified, Unverifiable, Verified]).collect();
    assert_eq!(v, expected);
}

#[test]
fn altered_plaintext_is_a_commitment_mismatch() {
    let (server, mut items) = conversation(5);
    let last = items.len() - 1;
    let needle = b"message 4";
    items[last] = with_content(&items[last], |c| {
        let at = c.windows(needle.len()).position(|w| w == needle).unwrap();
        c[at] = b'M';
    });
    assert_eq!(
        verify(&server, items),
        [Verified, Verified, Verified, Verified, CommitmentMismatch]
    );
}

#[test]
fn altered_sender_invalidates_the_server_tag() {
    let (server, mut items) = conversation(3);
    if let ReportItem::Franked { sender, .. } = &mut items[2] {
        *sender = "carol".into();
    }
    assert_eq!(verify(&server, items.clone()), [Verified, Verified, ServerTagInvalid]);
    // Same for the device, the tagged time and the tagged recipient.
    let (server, items) = conversation(3);
    for edit in 0..3 {
        let mut items = items.clone();
        if let ReportItem::Franked { sender_device, server_time_ms, recipient, .. } = &mut items[2]
        {
            match edit {
                0 => *sender_device = 2,
                1 => *server_time_ms += 1,
                _ => *recipient = "carol".into(),
            }
        }
        assert_eq!(verify(&server, items), [Verified, Verified, ServerTagInvalid]);
    }
}

#[test]
fn sender_named_in_the_body_must_be_the_tagged_sender() {
    // A malicious Alice writes "carol" as the sender inside the (committed) body; the server
    // tags the sender it authenticated.
    let mut server = Server::new([5; 32]);
    let mut alice = Sender::new("alice", 1, "bob");
    let mut body = alice.body("I am carol");
    body.sender = "carol".into();
    let s = alice.send_body(&body, &[3; 32]);
    let item = server.relay(&s, &alice, "bob");
    assert_eq!(verify(&server, vec![item]), [SenderMismatch]);
    // Same for the device id.
    let mut body = alice.body("from device 9");
    body.sender_device = 9;
    let s = alice.send_body(&body, &[4; 32]);
    let item = server.relay(&s, &alice, "bob");
    assert_eq!(verify(&server, vec![item]), [SenderMismatch]);
}

#[test]
fn tag_taken_from_another_message() {
    let (server, items) = conversation(4);
    let swap = |from: &ReportItem, into: &ReportItem| {
        let mut x = into.clone();
        if let (
            ReportItem::Franked { tf, rf, server_time_ms, .. },
            ReportItem::Franked { tf: t2, rf: r2, server_time_ms: s2, .. },
        ) = (&mut x, from)
        {
            (*tf, *rf, *server_time_ms) = (*t2, *r2, *s2);
        }
        x
    };
    // Message 3's content presented with message 1's (valid) TF and RF.
    let mut forged = items.clone();
    forged[3] = swap(&items[1], &items[3]);
    assert_eq!(verify(&server, forged), [Verified, Verified, Verified, CommitmentMismatch]);
    // Only RF swapped: the tag no longer matches this TF.
    let mut forged = items.clone();
    let ReportItem::Franked { rf: other, .. } = &items[1] else { panic!() };
    if let ReportItem::Franked { rf, .. } = &mut forged[3] {
        *rf = *other;
    }
    assert_eq!(verify(&server, forged), [Verified, Verified, Verified, ServerTagInvalid]);
}

#[test]
fn tag_replayed_to_another_recipient() {
    // Alice sent a message to Carol; Carol hands it over, and Bob reports it as his.
    let mut server = Server::new([5; 32]);
    let mut to_bob = Sender::new("alice", 1, "bob");
    let mut to_carol = Sender::new("alice", 1, "carol");
    let a0 = to_bob.send("hi bob");
    let i0 = server.relay(&a0, &to_bob, "bob");
    let c0 = to_carol.send("for carol only");
    let carols = server.relay(&c0, &to_carol, "carol");
    // As tagged (recipient carol): the tag verifies but names another recipient.
    assert_eq!(verify(&server, vec![i0.clone(), carols.clone()]), [Verified, RecipientMismatch]);
    // Recipient rewritten to bob: the server tag fails.
    let mut rewritten = carols.clone();
    if let ReportItem::Franked { recipient, .. } = &mut rewritten {
        *recipient = "bob".into();
    }
    assert_eq!(verify(&server, vec![i0.clone(), rewritten]), [Verified, ServerTagInvalid]);
    // The server relayed Carol's content to Bob (a tag for Bob), but the body names Carol.
    let to_bob_copy = server.relay(&c0, &to_carol, "bob");
    assert_eq!(verify(&server, vec![i0, to_bob_copy]), [Verified, RecipientMismatch]);
}

#[test]
fn reordered_context() {
    let (server, items) = conversation(5);
    let mut r = items.clone();
    r.swap(1, 2);
    assert_eq!(verify(&server, r), [Verified, Reordered, Reordered, Verified, Verified]);
    // The same message twice.
    let mut r = items.clone();
    r.insert(2, items[1].clone());
    assert_eq!(verify(&server, r), [Verified, Reordered, Reordered, Verified, Verified, Verified]);
    // The reported message moved to the front.
    let mut r = items.clone();
    r.rotate_right(1);
    assert_eq!(verify(&server, r), [Reordered; 5]);
}

#[test]
fn message_removed_from_the_middle_vs_declared_gap() {
    let (server, items) = conversation(6);
    let mut removed = items.clone();
    removed.remove(2);
    assert_eq!(
        verify(&server, removed.clone()),
        [Verified, Verified, HiddenGap { missing: 1 }, Verified, Verified]
    );
    // The reporter's client saw seq 2 missing and says so.
    let gap = |from_seq, to_seq| ReportItem::Gap {
        sender: "alice".into(),
        sender_device: 1,
        from_seq,
        to_seq,
    };
    let mut declared = removed.clone();
    declared.insert(2, gap(2, 2));
    assert_eq!(
        verify(&server, declared),
        [Verified, Verified, ObservedGap, Verified, Verified, Verified]
    );
    // Two removed, one declared: one is still hidden.
    let mut partly = items.clone();
    partly.drain(2..4);
    partly.insert(2, gap(3, 3));
    assert_eq!(
        verify(&server, partly),
        [Verified, Verified, ObservedGap, HiddenGap { missing: 1 }, Verified]
    );
    // A gap declared for another device or sender does not cover it.
    let mut other = removed.clone();
    other.insert(
        2,
        ReportItem::Gap { sender: "alice".into(), sender_device: 2, from_seq: 2, to_seq: 2 },
    );
    other.insert(
        2,
        ReportItem::Gap { sender: "mallory".into(), sender_device: 1, from_seq: 0, to_seq: 9 },
    );
    assert_eq!(
        verify(&server, other),
        [
            Verified,
            Verified,
            ObservedGap,
            ObservedGap,
            HiddenGap { missing: 1 },
            Verified,
            Verified
        ]
    );
}

#[test]
fn chain_link_that_does_not_hash_the_previous_body() {
    let mut server = Server::new([5; 32]);
    let mut alice = Sender::new("alice", 1, "bob");
    let s0 = alice.send("zero");
    let i0 = server.relay(&s0, &alice, "bob");
    let mut body = alice.body("one");
    body.prev[0] ^= 1;
    let s1 = alice.send_body(&body, &[1; 32]);
    let i1 = server.relay(&s1, &alice, "bob");
    let s2 = alice.send("two");
    let i2 = server.relay(&s2, &alice, "bob");
    assert_eq!(verify(&server, vec![i0, i1, i2]), [Verified, ChainBroken, Verified]);
    // seq 0 must start from the zero hash.
    let mut fresh = Sender::new("alice", 3, "bob");
    let mut body = fresh.body("first");
    body.prev = [7; 32];
    let s = fresh.send_body(&body, &[2; 32]);
    let item = server.relay(&s, &fresh, "bob");
    assert_eq!(verify(&server, vec![item]), [ChainBroken]);
}

#[test]
fn unknown_and_retired_keys() {
    let (server, mut items) = conversation(3);
    if let ReportItem::Franked { kid, .. } = &mut items[1] {
        *kid = 99;
    }
    assert_eq!(
        verify(&server, items.clone()),
        [Verified, UnknownKey(99), HiddenGap { missing: 1 }]
    );
    // Key 7 retired for tags older than the second message's time.
    let (server, items) = conversation(3);
    let cutoff = T0 + 20;
    let keys = |kid: u32, t: u64| match kid {
        KID if t > cutoff => KeyStatus::Active(&server.key),
        KID => KeyStatus::Retired,
        _ => KeyStatus::Unknown,
    };
    assert_eq!(verify_report(&report(items), keys), [RetiredKey(KID), RetiredKey(KID), Verified]);
}

#[test]
fn own_items_that_are_not_bodies() {
    let (server, mut items) = conversation(1);
    items.insert(0, ReportItem::Own { body_bytes: b"junk".to_vec() });
    assert_eq!(verify(&server, items), [MalformedBody, Verified]);
}

#[test]
fn verdicts_display() {
    let all = [
        (Verified, "verified"),
        (UnknownKey(3), "unknown server key 3"),
        (RetiredKey(4), "server key 4 is retired"),
        (ServerTagInvalid, "server tag invalid (sender, recipient or time altered, or forged)"),
        (CommitmentMismatch, "content does not match its commitment (altered or swapped)"),
        (MalformedBody, "malformed message body"),
        (SenderMismatch, "message sender differs from the server's"),
        (RecipientMismatch, "message was not sent to the reporter"),
        (Reordered, "out of order"),
        (HiddenGap { missing: 2 }, "2 message(s) removed before this one"),
        (ChainBroken, "chain link broken"),
        (Unverifiable, "reporter's own message (unverifiable)"),
        (ObservedGap, "gap observed by the reporter"),
    ];
    for (v, s) in all {
        assert_eq!(v.to_string(), s);
        assert_eq!(v.is_verified(), s == "verified");
    }
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

#[test]
fn body_encoding_layout_and_rejections() {
    let body = FrankedBody {
        message_id: "m1".into(),
        sent_at_ms: 0x0102,
        sender: "al".into(),
        sender_device: 3,
        recipient: "b".into(),
        seq: 5,
        prev: [0xaa; 32],
        text: "hé".to_string().into(),
    };
    let bytes = body.encode().unwrap();
    let want = [
        &[0x41, 0x01][..],
        &[0, 0, 0, 2],
        b"m1",
        &[0, 0, 0, 0, 0, 0, 1, 2],
        &[0, 0, 0, 2],
        b"al",
        &[0, 0, 0, 3],
        &[0, 0, 0, 1],
        b"b",
        &[0, 0, 0, 0, 0, 0, 0, 5],
        &[0xaa; 32],
        &[0, 0, 0, 3],
        "hé".as_bytes(),
    ]
    .concat();
    assert_eq!(&bytes[..], &want[..]);
    assert_eq!(FrankedBody::decode(&bytes).unwrap(), body);
    for n in 0..bytes.len() {
        assert!(FrankedBody::decode(&bytes[..n]).is_err(), "prefix {n}");
    }
    let mut x = bytes.to_vec();
    x.push(0);
    assert_eq!(FrankedBody::decode(&x), Err(DecodeError::TrailingBytes));
    let mut x = bytes.to_vec();
    x[0] = 0x40;
    assert_eq!(
        FrankedBody::decode(&x),
        Err(DecodeError::WrongType { found: 0x40, expected: 0x41 })
    );
    let mut x = bytes.to_vec();
    x[1] = 2;
    assert_eq!(FrankedBody::decode(&x), Err(DecodeError::UnknownVersion(2)));
    let mut x = bytes.to_vec();
    x[6] = 0xff; // invalid UTF-8 in the message id
    assert_eq!(FrankedBody::decode(&x), Err(DecodeError::InvalidValue("message_id")));
    let mut x = bytes.to_vec();
    x[2..6].copy_from_slice(&65u32.to_be_bytes());
    assert_eq!(FrankedBody::decode(&x), Err(DecodeError::TooLong { len: 65, max: 64 }));

    // Encoding refuses oversize fields.
    let mut long = body.clone();
    long.sender = "x".repeat(MAX_FRANKED_NAME_LEN + 1);
    assert_eq!(
        long.encode().unwrap_err(),
        FrankingError::FieldTooLong { field: "sender", len: 65, max: 64 }
    );
    let mut long = body.clone();
    long.text = "x".repeat(MAX_FRANKED_TEXT_LEN + 1).into();
    assert!(matches!(
        long.encode().unwrap_err(),
        FrankingError::FieldTooLong { field: "text", .. }
    ));
    // The largest body, with NF, fits one ratchet message.
    let mut big = body.clone();
    big.message_id = "i".repeat(MAX_FRANKED_ID_LEN);
    big.sender = "s".repeat(MAX_FRANKED_NAME_LEN);
    big.recipient = "r".repeat(MAX_FRANKED_NAME_LEN);
    big.text = "t".repeat(MAX_FRANKED_TEXT_LEN).into();
    let sealed = seal_with_nf(&big, &[0; 32]).unwrap();
    assert_eq!(sealed.body_bytes().len(), MAX_FRANKED_BODY_LEN);
    assert_eq!(sealed.content().len(), MAX_FRANKED_CONTENT_LEN);
    assert!(open(sealed.content(), sealed.tf()).is_ok());
}

#[test]
fn report_encoding_rejections() {
    let (_server, mut items) = conversation(2);
    items.insert(1, ReportItem::Own { body_bytes: b"own".to_vec() });
    items.insert(
        1,
        ReportItem::Gap { sender: "alice".into(), sender_device: 1, from_seq: 1, to_seq: 2 },
    );
    let r = report(items.clone());
    let bytes = r.encode().unwrap();
    assert_eq!(&bytes[..2], &[0x42, 0x01]);
    assert_eq!(Report::decode(&bytes).unwrap(), r);
    for n in 0..bytes.len() {
        assert!(Report::decode(&bytes[..n]).is_err(), "prefix {n}");
    }
    let mut x = bytes.clone();
    x.push(0);
    assert_eq!(Report::decode(&x), Err(DecodeError::TrailingBytes));
    // Count over the limit, refused before reading items.
    let count_at = 2 + 4 + 3;
    let mut x = bytes.clone();
    x[count_at..count_at + 4].copy_from_slice(&52u32.to_be_bytes());
    assert_eq!(Report::decode(&x), Err(DecodeError::TooLong { len: 52, max: 51 }));
    // Unknown item kind.
    let mut x = bytes.clone();
    x[count_at + 4] = 9;
    assert_eq!(Report::decode(&x), Err(DecodeError::InvalidValue("report item kind")));
    // Oversize content length.
    let mut x = bytes.clone();
    x[count_at + 5..count_at + 9].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(Report::decode(&x), Err(DecodeError::TooLong { .. })));

    // Structural rules, on both sides.
    let empty = report(vec![]);
    assert!(matches!(empty.encode(), Err(FrankingError::InvalidReport(_))));
    assert_eq!(
        Report::decode(&[0x42, 1, 0, 0, 0, 3, b'b', b'o', b'b', 0, 0, 0, 0]),
        Err(DecodeError::InvalidValue("last report item"))
    );
    let own_last = report(vec![items[0].clone(), ReportItem::Own { body_bytes: vec![] }]);
    assert!(matches!(own_last.encode(), Err(FrankingError::InvalidReport(_))));
    let inverted = report(vec![
        ReportItem::Gap { sender: "alice".into(), sender_device: 1, from_seq: 3, to_seq: 2 },
        items[0].clone(),
    ]);
    assert!(matches!(inverted.encode(), Err(FrankingError::InvalidReport(_))));
    let too_many = report(vec![items[0].clone(); MAX_REPORT_ITEMS + 1]);
    assert!(matches!(too_many.encode(), Err(FrankingError::FieldTooLong { field: "items", .. })));
    let max = report(vec![items[0].clone(); MAX_REPORT_ITEMS]);
    assert_eq!(Report::decode(&max.encode().unwrap()).unwrap(), max);
    assert_eq!((MAX_CONTEXT, DEFAULT_CONTEXT, MAX_REPORT_ITEMS), (50, 10, 51));
}

#[test]
fn debug_output_is_redacted() {
    let key = FrankingKey::from_bytes([0xab; 32]);
    assert_eq!(format!("{key:?}"), "FrankingKey(***)");
    let mut alice = Sender::new("alice", 1, "bob");
    let body = alice.body("secret text");
    let sealed = alice.send_body(&body, &[0xcd; 32]);
    let opened = open(sealed.content(), sealed.tf()).unwrap();
    let (_server, items) = conversation(1);
    for out in [
        format!("{body:?}"),
        format!("{sealed:?}"),
        format!("{opened:?}"),
        format!("{:?}", items[0]),
        format!("{:?}", report(items.clone())),
    ] {
        assert!(!out.contains("secret text"), "{out}");
        assert!(!out.contains("message 0"), "{out}");
        assert!(!out.contains("cdcd"), "{out}");
        assert!(!out.contains("205, 205"), "{out}");
    }
    insta::assert_snapshot!(format!("{body:?}"), @r#"FrankedBody { message_id: "alice-1-0", sent_at_ms: 1800000000000, sender: "alice", sender_device: 1, recipient: "bob", seq: 0, text_len: 11, .. }"#);
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const N: usize = 12;

fn conversation_fixture() -> &'static (Server, Vec<ReportItem>) {
    static C: std::sync::OnceLock<(Server, Vec<ReportItem>)> = std::sync::OnceLock::new();
    C.get_or_init(|| conversation(N))
}

proptest! {
    #![proptest_config(config())]

    /// Any in-order subset of a conversation (the reported message kept): every kept item
    /// verifies, except the first one after each hole, which reports exactly the hole's size.
    #[test]
    fn removals_are_reported_exactly(keep in prop::collection::vec(any::<bool>(), N - 1)) {
        let (server, items) = conversation_fixture();
        let kept: Vec<usize> = (0..N - 1).filter(|&i| keep[i]).chain([N - 1]).collect();
        let v = verify_report(&report(kept.iter().map(|&i| items[i].clone()).collect()), server.keys());
        for (j, &i) in kept.iter().enumerate() {
            let want = match j.checked_sub(1).map(|p| kept[p]) {
                Some(p) if i > p + 1 => HiddenGap { missing: (i - p - 1) as u64 },
                _ => Verified,
            };
            prop_assert_eq!(v[j], want);
        }
    }

    /// Any permutation: an item is Reordered exactly when another item is on the wrong side
    /// of it; nothing is reported as a gap or a broken link.
    #[test]
    fn permutations_are_reported_as_reordering(perm in Just((0..N).collect::<Vec<usize>>()).prop_shuffle()) {
        let (server, items) = conversation_fixture();
        let v = verify_report(&report(perm.iter().map(|&i| items[i].clone()).collect()), server.keys());
        for (j, &i) in perm.iter().enumerate() {
            let wrong = perm[..j].iter().any(|&e| e > i) || perm[j + 1..].iter().any(|&e| e < i);
            prop_assert_eq!(v[j], if wrong { Reordered } else { Verified });
        }
    }

    /// A bit flipped anywhere in a franked item's content makes it fail (never Verified) and
    /// never panics; the report decoder never panics on a mutated encoding.
    #[test]
    fn bit_flips_never_verify(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (server, items) = conversation_fixture();
        let last = items[N - 1].clone();
        let flipped = with_content(&last, |c| { let i = pos.index(c.len()); c[i] ^= 1 << bit; });
        let v = verify_report(&report(vec![flipped]), server.keys());
        prop_assert_eq!(v[0], CommitmentMismatch);
        let enc = report(vec![last]).encode().unwrap();
        let mut m = enc.clone();
        let i = pos.index(m.len());
        m[i] ^= 1 << bit;
        if let Ok(r) = Report::decode(&m) {
            prop_assert_eq!(r.encode().unwrap(), m);
            let _ = verify_report(&r, server.keys());
        }
    }
}
