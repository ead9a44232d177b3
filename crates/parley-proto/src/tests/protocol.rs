//! Example-based protocol tests.

use super::support::*;
use crate::*;

fn rng() -> CtrRng {
    CtrRng::new(b"protocol tests")
}

#[test]
fn handshake_with_and_without_one_time_prekeys() {
    let mut rng = rng();
    for one_time in [0usize, 1] {
        let alice = Party::new(&mut rng, 0);
        let mut bob = Party::new(&mut rng, one_time);
        let bundle = bob.bundle();
        assert_eq!(bundle.one_time().is_some(), one_time == 1);
        let mut a = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
        assert!(a.is_pending_handshake());
        let m1 = a.encrypt(&mut rng, b"one", b"ad").unwrap();
        let m2 = a.encrypt(&mut rng, b"two", b"ad").unwrap();
        let kind = message_kind(&m1).unwrap();
        assert_eq!(kind, MessageKind::Initial { handshake_id: *a.handshake_id() });
        let acc = bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"ad").unwrap();
        let mut b = acc.session;
        assert_eq!(acc.first.plaintext(), b"one");
        assert_eq!(b.handshake_id(), a.handshake_id());
        assert_eq!(b.remote_account(), alice.account.public());
        assert_eq!(b.remote_certificate(), &alice.cert);
        // A second initial message of the same handshake is routed to the session.
        assert_eq!(b.decrypt_any(&mut rng, &m2, b"ad").unwrap().plaintext(), b"two");
        let r = b.encrypt(&mut rng, b"three", b"ad").unwrap();
        assert_eq!(message_kind(&r).unwrap(), MessageKind::Ratchet);
        assert_eq!(a.decrypt_any(&mut rng, &r, b"ad").unwrap().plaintext(), b"three");
        assert!(!a.is_pending_handshake());
        let m4 = a.encrypt(&mut rng, b"four", b"ad").unwrap();
        assert_eq!(message_kind(&m4).unwrap(), MessageKind::Ratchet);
        assert_eq!(b.decrypt_any(&mut rng, &m4, b"ad").unwrap().plaintext(), b"four");
    }
}

#[test]
fn one_time_prekeys_are_single_use() {
    let mut rng = rng();
    let alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 1);
    let bundle = bob.bundle();
    let mut a = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m1 = a.encrypt(&mut rng, b"x", b"").unwrap();
    assert_eq!(bob.store.one_time_counts(), (1, 1));
    bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
    assert_eq!(bob.store.one_time_counts(), (0, 0));
    // The same initial message again: its one-time prekeys are gone.
    let err = bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap_err();
    assert_eq!(err, HandshakeError::UnknownPrekey);
    // A new handshake naming the same (consumed) prekeys fails too.
    let mut a2 = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m = a2.encrypt(&mut rng, b"y", b"").unwrap();
    let err = bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m, b"").unwrap_err();
    assert_eq!(err, HandshakeError::UnknownPrekey);
}

#[test]
fn last_resort_replay_is_rejected_within_the_window() {
    let mut rng = rng();
    let alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 0);
    let bundle = bob.bundle();
    assert!(bundle.one_time().is_none());
    assert_eq!(bundle.kem_prekey().kind(), KemPrekeyKind::LastResort);
    let mut a = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m1 = a.encrypt(&mut rng, b"x", b"").unwrap();
    bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
    let later = NOW + PREKEY_MAX_AGE_SECS - 1;
    let err = bob.store.accept(&mut rng, later, &bob.device, &bob.cert, &m1, b"").unwrap_err();
    assert_eq!(err, HandshakeError::Replay);
    // Another handshake with the same last-resort keys is fine.
    let mut a2 = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m2 = a2.encrypt(&mut rng, b"y", b"").unwrap();
    bob.store.accept(&mut rng, NOW + 10, &bob.device, &bob.cert, &m2, b"").unwrap();
    // After the window, the prekeys themselves are refused, so the replay still fails.
    let err = bob
        .store
        .accept(&mut rng, NOW + PREKEY_MAX_AGE_SECS, &bob.device, &bob.cert, &m1, b"")
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Replay | HandshakeError::ExpiredPrekey));
    bob.store.prune(NOW + PREKEY_MAX_AGE_SECS);
    let err = bob
        .store
        .accept(&mut rng, NOW + PREKEY_MAX_AGE_SECS, &bob.device, &bob.cert, &m1, b"")
        .unwrap_err();
    assert_eq!(err, HandshakeError::ExpiredPrekey);
}

#[test]
fn failed_accept_leaves_the_store_unchanged() {
    let mut rng = rng();
    let alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 1);
    let bundle = bob.bundle();
    let mut a = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m1 = a.encrypt(&mut rng, b"x", b"").unwrap();
    let before = bob.store.to_bytes().to_vec();
    // Wrong associated data, then every single-byte corruption of the tail (the KEM ciphertext
    // and the inner message) fails and consumes nothing.
    assert!(bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"other").is_err());
    for pos in (0..m1.len()).step_by(97) {
        let mut bad = m1.clone();
        bad[pos] ^= 0x01;
        assert!(bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &bad, b"").is_err());
    }
    assert_eq!(bob.store.to_bytes().to_vec(), before);
    bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
}

#[test]
fn bundle_validation_checks_the_chain() {
    let mut rng = rng();
    let mut bob = Party::new(&mut rng, 0);
    let other = Party::new(&mut rng, 0);
    let good = bob.bundle().to_unverified();
    assert!(good.clone().validate(None).is_ok());
    assert_eq!(
        good.clone().validate(Some(other.account.public())).unwrap_err(),
        KeyError::WrongAccount
    );
    // A prekey signed by another device.
    let forged = PrekeyBundleIn::from_parts(
        bob.cert.encode(),
        other.spk.encode(),
        bob.last_resort.encode(),
        None,
    );
    assert_eq!(forged.validate(None).unwrap_err(), KeyError::BadSignature("signed prekey"));
    let forged = PrekeyBundleIn::from_parts(
        bob.cert.encode(),
        bob.spk.encode(),
        other.last_resort.encode(),
        None,
    );
    assert_eq!(forged.validate(None).unwrap_err(), KeyError::BadSignature("KEM prekey"));
    // A certificate whose signature was altered.
    let mut cert = bob.cert.encode();
    let last = cert.len() - 1;
    cert[last] ^= 1;
    let forged = PrekeyBundleIn::from_parts(cert, bob.spk.encode(), bob.last_resort.encode(), None);
    assert_eq!(forged.validate(None).unwrap_err(), KeyError::BadSignature("device certificate"));
    // Round trip of the outer encoding.
    let enc = good.encode();
    assert_eq!(PrekeyBundleIn::decode(&enc).unwrap().encode(), enc);
    let mut trailing = enc.clone();
    trailing.push(0);
    assert!(matches!(
        PrekeyBundleIn::decode(&trailing),
        Err(KeyError::Decode(DecodeError::TrailingBytes))
    ));
}

#[test]
fn device_list_signature_version_and_membership() {
    let mut rng = rng();
    let acct = AccountIdentity::generate(&mut rng);
    let d1 = DeviceIdentity::generate(&mut rng);
    let d2 = DeviceIdentity::generate(&mut rng);
    let list =
        acct.sign_device_list(7, vec![(2, d2.public().clone()), (1, d1.public().clone())]).unwrap();
    let enc = list.encode();
    let back = DeviceList::decode_verified(&enc, acct.public()).unwrap();
    assert_eq!(back.version(), 7);
    assert_eq!(back.devices()[0].0, 1);
    assert!(back.contains(&acct.certify(2, d2.public())));
    assert!(!back.contains(&acct.certify(3, d2.public())));
    let other = AccountIdentity::generate(&mut rng);
    assert_eq!(
        DeviceList::decode_verified(&enc, other.public()).unwrap_err(),
        KeyError::WrongAccount
    );
    let mut bad = enc.clone();
    bad[40] ^= 1; // inside the version field
    assert_eq!(
        DeviceList::decode_verified(&bad, acct.public()).unwrap_err(),
        KeyError::BadSignature("device list")
    );
    assert!(
        acct.sign_device_list(1, vec![(1, d1.public().clone()), (1, d2.public().clone())]).is_err()
    );
    assert!(acct.sign_device_list(1, vec![]).is_err());
}

#[test]
fn in_order_out_of_order_and_skipped() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let msgs: Vec<Vec<u8>> =
        (0..10).map(|i| a.encrypt(&mut rng, format!("m{i}").as_bytes(), b"").unwrap()).collect();
    for i in [3usize, 0, 9, 1, 2, 8, 4, 7, 5, 6] {
        let d = b.decrypt_any(&mut rng, &msgs[i], b"").unwrap();
        assert_eq!(d.plaintext(), format!("m{i}").as_bytes());
        assert!(d.gaps().is_empty());
    }
    assert_eq!(b.skipped_key_count(), 0);
    // Every one of them again is a replay.
    for m in &msgs {
        let before = snapshot(&b);
        assert_eq!(b.decrypt_any(&mut rng, m, b"").unwrap_err(), DecryptError::Replay);
        assert_eq!(snapshot(&b), before);
    }
}

#[test]
fn skipped_messages_across_ratchet_steps() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let early: Vec<_> = (0..3).map(|i| a.encrypt(&mut rng, &[i], b"").unwrap()).collect();
    b.decrypt_any(&mut rng, &early[2], b"").unwrap();
    let r = b.encrypt(&mut rng, b"r", b"").unwrap();
    a.decrypt_any(&mut rng, &r, b"").unwrap();
    let late = a.encrypt(&mut rng, b"late", b"").unwrap();
    b.decrypt_any(&mut rng, &late, b"").unwrap();
    assert_eq!(b.skipped_key_count(), 2);
    assert_eq!(b.decrypt_any(&mut rng, &early[0], b"").unwrap().plaintext(), &[0]);
    assert_eq!(b.decrypt_any(&mut rng, &early[1], b"").unwrap().plaintext(), &[1]);
    assert_eq!(b.skipped_key_count(), 0);
}

#[test]
fn too_far_ahead_is_refused_and_old_chain_beyond_limit_is_a_gap() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let sent: Vec<_> =
        (0..MAX_FORWARD_JUMP + 3).map(|_| a.encrypt(&mut rng, b"x", b"").unwrap()).collect();
    b.decrypt_any(&mut rng, &sent[0], b"").unwrap();
    // Same chain: a jump over MAX_FORWARD_JUMP is refused, state untouched.
    let last = sent.last().unwrap();
    let before = snapshot(&b);
    assert_eq!(
        b.decrypt_any(&mut rng, last, b"").unwrap_err(),
        DecryptError::TooFarAhead(MAX_FORWARD_JUMP + 1)
    );
    assert_eq!(snapshot(&b), before);
    // Bob replies; Alice ratchets and sends in a new chain: the unreceived rest of the old
    // chain is too long to derive, so it is reported as one gap.
    let r = b.encrypt(&mut rng, b"r", b"").unwrap();
    a.decrypt_any(&mut rng, &r, b"").unwrap();
    let fresh = a.encrypt(&mut rng, b"fresh", b"").unwrap();
    let d = b.decrypt_any(&mut rng, &fresh, b"").unwrap();
    assert_eq!(d.plaintext(), b"fresh");
    assert_eq!(d.gaps().len(), 1);
    assert_eq!(d.gaps()[0].first, 1);
    assert_eq!(d.gaps()[0].count, MAX_FORWARD_JUMP + 2);
    assert_eq!(b.decrypt_any(&mut rng, last, b"").unwrap_err(), DecryptError::Undecryptable);
}

#[test]
fn receiving_chain_limit_evicts_oldest_with_gaps() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let mut lost = Vec::new();
    let mut gaps = Vec::new();
    for round in 0..(MAX_RECEIVING_CHAINS + 2) {
        // Alice sends two; Bob only gets the second, so one key per chain is skipped.
        let m0 = a.encrypt(&mut rng, b"lost", b"").unwrap();
        let m1 = a.encrypt(&mut rng, b"seen", b"").unwrap();
        let d = b.decrypt_any(&mut rng, &m1, b"").unwrap();
        gaps.extend(d.gaps().to_vec());
        lost.push(m0);
        let r = b.encrypt(&mut rng, &[round as u8], b"").unwrap();
        gaps.extend(a.decrypt_any(&mut rng, &r, b"").unwrap().gaps().to_vec());
    }
    assert!(b.skipped_key_count() <= MAX_RECEIVING_CHAINS);
    // The chains beyond the limit were dropped, each reported as a one-message gap.
    let dropped = lost.len() - MAX_RECEIVING_CHAINS;
    assert_eq!(gaps.len(), dropped);
    assert!(gaps.iter().all(|g| g.count == 1 && g.first == 0));
    for m in &lost[..dropped] {
        assert_eq!(b.decrypt_any(&mut rng, m, b"").unwrap_err(), DecryptError::Undecryptable);
    }
    for m in &lost[dropped..] {
        assert_eq!(b.decrypt_any(&mut rng, m, b"").unwrap().plaintext(), b"lost");
    }
}

#[test]
fn total_skipped_key_limit_reports_gaps() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let mut total_gap = 0u32;
    let mut first_msgs = Vec::new();
    // Three chains of MAX_FORWARD_JUMP skipped keys each exceed MAX_SKIPPED_KEYS.
    for _ in 0..3 {
        let mut last = Vec::new();
        for i in 0..=MAX_FORWARD_JUMP {
            let m = a.encrypt(&mut rng, b"x", b"").unwrap();
            if i == 0 {
                first_msgs.push(m.clone());
            }
            last = m;
        }
        let d = b.decrypt_any(&mut rng, &last, b"").unwrap();
        total_gap += d.gaps().iter().map(|g| g.count).sum::<u32>();
        let r = b.encrypt(&mut rng, b"r", b"").unwrap();
        a.decrypt_any(&mut rng, &r, b"").unwrap();
    }
    assert_eq!(b.skipped_key_count(), MAX_SKIPPED_KEYS);
    assert_eq!(total_gap as usize, 3 * MAX_FORWARD_JUMP as usize - MAX_SKIPPED_KEYS);
    assert_eq!(
        b.decrypt_any(&mut rng, &first_msgs[0], b"").unwrap_err(),
        DecryptError::Undecryptable
    );
    assert_eq!(b.decrypt_any(&mut rng, &first_msgs[2], b"").unwrap().plaintext(), b"x");
}

#[test]
fn tampering_and_wrong_ad_leave_the_session_untouched() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let m = a.encrypt(&mut rng, b"payload", b"franking tag").unwrap();
    let before = snapshot(&b);
    for pos in 0..m.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = m.clone();
            bad[pos] ^= bit;
            assert!(b.decrypt_any(&mut rng, &bad, b"franking tag").is_err(), "flip at {pos}");
        }
    }
    for len in [0, 1, 2, 50, 90, m.len() - 33, m.len() - 1] {
        assert!(b.decrypt_any(&mut rng, &m[..len], b"franking tag").is_err(), "truncated to {len}");
    }
    assert_eq!(
        b.decrypt_any(&mut rng, &m, b"other tag").unwrap_err(),
        DecryptError::Authentication
    );
    let mut ad = vec![0u8; MAX_AD_LEN + 1];
    assert_eq!(b.decrypt_any(&mut rng, &m, &ad).unwrap_err(), DecryptError::AdTooLong);
    ad.truncate(MAX_AD_LEN);
    assert_eq!(
        a.encrypt(&mut rng, b"", &[0; MAX_AD_LEN + 1]).unwrap_err(),
        EncryptError::AdTooLong(MAX_AD_LEN + 1)
    );
    assert_eq!(snapshot(&b), before);
    assert_eq!(b.decrypt_any(&mut rng, &m, b"franking tag").unwrap().plaintext(), b"payload");
}

#[test]
fn message_sizes_are_padded_buckets() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let m1 = a.encrypt(&mut rng, &[7; 1], b"").unwrap();
    let m2 = a.encrypt(&mut rng, &[7; 60], b"").unwrap();
    assert_eq!(m1.len(), m2.len());
    assert_eq!(m1.len(), MESSAGE_OVERHEAD + 64);
    let big = vec![9u8; MAX_PLAINTEXT_LEN];
    let m3 = a.encrypt(&mut rng, &big, b"").unwrap();
    assert_eq!(m3.len(), MESSAGE_OVERHEAD + MAX_PADDED_LEN);
    assert_eq!(
        a.encrypt(&mut rng, &vec![0; MAX_PLAINTEXT_LEN + 1], b"").unwrap_err(),
        EncryptError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1)
    );
    for m in [&m1, &m2, &m3] {
        b.decrypt_any(&mut rng, m, b"").unwrap();
    }
}

/// The body encryption is key-committing: the same ciphertext opened with any other message
/// key, IV/nonce or associated data fails (Encrypt-then-HMAC with a full tag).
#[test]
fn body_encryption_is_key_committing() {
    use crate::ratchet::tests_support::{open_with, seal_with};
    let mk = [1u8; 32];
    let header = [2u8; crate::ENC_HEADER_LEN];
    let ad_hash = [3u8; 32];
    let (ct, tag) = seal_with(&mk, &ad_hash, b"ad", &header, b"secret");
    assert_eq!(open_with(&mk, &ad_hash, b"ad", &header, &ct, &tag).unwrap(), b"secret");
    for other in 0..=255u8 {
        if other == 1 {
            continue;
        }
        assert!(open_with(&[other; 32], &ad_hash, b"ad", &header, &ct, &tag).is_none());
    }
    let mut h2 = header;
    h2[0] ^= 1; // the header nonce
    assert!(open_with(&mk, &ad_hash, b"ad", &h2, &ct, &tag).is_none());
    assert!(open_with(&mk, &[4u8; 32], b"ad", &header, &ct, &tag).is_none());
    assert!(open_with(&mk, &ad_hash, b"ae", &header, &ct, &tag).is_none());
    assert!(open_with(&mk, &ad_hash, b"", &header, &ct, &tag).is_none());
}

#[test]
fn forward_secrecy_old_messages_stay_closed() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let mut sent = Vec::new();
    for round in 0..4u8 {
        for i in 0..4u8 {
            sent.push(a.encrypt(&mut rng, &[round, i], b"").unwrap());
        }
        // Deliver out of order, with message 1 of each round arriving only after the next round
        // started (skipped, then received).
        let base = sent.len() - 4;
        for idx in [base + 3, base, base + 2] {
            b.decrypt_any(&mut rng, &sent[idx], b"").unwrap();
        }
        if round > 0 {
            b.decrypt_any(&mut rng, &sent[base - 3], b"").unwrap();
        }
        let r = b.encrypt(&mut rng, b"ack", b"").unwrap();
        a.decrypt_any(&mut rng, &r, b"").unwrap();
    }
    b.decrypt_any(&mut rng, &sent[sent.len() - 3], b"").unwrap();
    // Bob's state captured now cannot decrypt any earlier message.
    let captured = b.to_bytes();
    for m in &sent {
        let mut thief = Session::from_bytes(&captured).unwrap();
        assert!(thief.decrypt_any(&mut rng, m, b"").is_err());
    }
}

#[test]
fn post_compromise_security_after_one_round_trip() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let stolen_a = a.to_bytes();
    let stolen_b = b.to_bytes();
    let mut eve_a = Session::from_bytes(&stolen_a).unwrap();
    let mut eve_b = Session::from_bytes(&stolen_b).unwrap();
    let mut eve_rng = CtrRng::new(b"eve");
    // Before healing, the thief reads the chains that were already under way.
    let m1 = a.encrypt(&mut rng, b"a1", b"").unwrap();
    assert_eq!(eve_b.decrypt_any(&mut eve_rng, &m1, b"").unwrap().plaintext(), b"a1");
    b.decrypt_any(&mut rng, &m1, b"").unwrap();
    // One full round trip with fresh ratchet keys.
    let m2 = b.encrypt(&mut rng, b"b1", b"").unwrap();
    let _ = eve_a.decrypt_any(&mut eve_rng, &m2, b"");
    a.decrypt_any(&mut rng, &m2, b"").unwrap();
    let m3 = a.encrypt(&mut rng, b"a2", b"").unwrap();
    let _ = eve_b.decrypt_any(&mut eve_rng, &m3, b"");
    b.decrypt_any(&mut rng, &m3, b"").unwrap();
    // Everything sent after the round trip is closed to both stolen states, even though the
    // thief followed every message.
    for i in 0..3u8 {
        let from_b = b.encrypt(&mut rng, &[i], b"").unwrap();
        assert!(eve_a.decrypt_any(&mut eve_rng, &from_b, b"").is_err());
        assert!(
            Session::from_bytes(&stolen_a)
                .unwrap()
                .decrypt_any(&mut eve_rng, &from_b, b"")
                .is_err()
        );
        a.decrypt_any(&mut rng, &from_b, b"").unwrap();
        let from_a = a.encrypt(&mut rng, &[i], b"").unwrap();
        assert!(eve_b.decrypt_any(&mut eve_rng, &from_a, b"").is_err());
        assert!(
            Session::from_bytes(&stolen_b)
                .unwrap()
                .decrypt_any(&mut eve_rng, &from_a, b"")
                .is_err()
        );
        b.decrypt_any(&mut rng, &from_a, b"").unwrap();
    }
}

#[test]
fn serialization_round_trips_exactly_and_continues() {
    let mut rng = rng();
    let (mut a, mut b) = established(&mut rng);
    let skipped = a.encrypt(&mut rng, b"skipped", b"").unwrap();
    let m = a.encrypt(&mut rng, b"seen", b"").unwrap();
    b.decrypt_any(&mut rng, &m, b"").unwrap();
    for s in [&a, &b] {
        let bytes = s.to_bytes();
        let back = Session::from_bytes(&bytes).unwrap();
        assert_eq!(&back.to_bytes()[..], &bytes[..]);
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert_eq!(Session::from_bytes(&trailing).unwrap_err(), DecodeError::TrailingBytes);
        let mut unknown = bytes.to_vec();
        unknown[1] = 2;
        assert_eq!(Session::from_bytes(&unknown).unwrap_err(), DecodeError::UnknownVersion(2));
        for len in [0, 1, 2, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(Session::from_bytes(&bytes[..len]).is_err());
        }
    }
    let mut b2 = Session::from_bytes(&b.to_bytes()).unwrap();
    assert_eq!(b2.decrypt_any(&mut rng, &skipped, b"").unwrap().plaintext(), b"skipped");
    let r = b2.encrypt(&mut rng, b"r", b"").unwrap();
    assert_eq!(a.decrypt_any(&mut rng, &r, b"").unwrap().plaintext(), b"r");

    // Identities and prekey stores too.
    let party = Party::new(&mut rng, 3);
    let acct = AccountIdentity::from_secret_bytes(&party.account.to_secret_bytes()).unwrap();
    assert_eq!(acct.public(), party.account.public());
    let dev = DeviceIdentity::from_secret_bytes(&party.device.to_secret_bytes()).unwrap();
    assert_eq!(dev.public(), party.device.public());
    let sb = party.store.to_bytes();
    let store = PrekeyStore::from_bytes(&sb, party.device.public()).unwrap();
    assert_eq!(&store.to_bytes()[..], &sb[..]);
    let other = DeviceIdentity::generate(&mut rng);
    assert!(PrekeyStore::from_bytes(&sb, other.public()).is_err());
}

#[test]
fn debug_output_is_redacted() {
    let mut rng = rng();
    let (a, _b) = established(&mut rng);
    let party = Party::new(&mut rng, 1);
    let session = format!("{a:?}");
    let store = format!("{:?}", party.store);
    let account = format!("{:?}", party.account);
    let device = format!("{:?}", party.device);
    // No secret bytes in any of them (hex of the serialized secrets never appears).
    let secrets = [
        a.to_bytes().to_vec(),
        party.store.to_bytes().to_vec(),
        party.account.to_secret_bytes().to_vec(),
        party.device.to_secret_bytes().to_vec(),
    ];
    for out in [&session, &store, &account, &device] {
        for s in &secrets {
            for w in s.windows(8).step_by(8) {
                let hex: String = w.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!out.contains(&hex), "{out}");
            }
        }
    }
    assert!(session.starts_with("Session { remote_account: AccountPublicKey("));
    insta::assert_snapshot!(session.split_once("remote_device").unwrap().1, @r#": 1, ns: 0, nr: 1, pn: 1, skipped_keys: 0, pending_handshake: false, keys: "***" }"#);
    insta::assert_snapshot!(store.split_once("one_time:").unwrap().1, @r#" 1, one_time_kem: 1, replay_entries: 0, secrets: "***" }"#);
    assert!(account.ends_with("key: \"***\" }"));
    assert!(device.ends_with("secrets: \"***\" }"));
    let d = format!("{:?}", crate::secrets::RootKey::new([7; 32]));
    assert_eq!(d, "RootKey(***)");
}

#[test]
fn safety_numbers_are_symmetric_and_device_independent() {
    let mut rng = rng();
    let a = AccountIdentity::generate(&mut rng);
    let b = AccountIdentity::generate(&mut rng);
    let sa = safety_number(a.public(), b"alice", b.public(), b"bob").unwrap();
    let sb = safety_number(b.public(), b"bob", a.public(), b"alice").unwrap();
    assert_eq!(sa.digits(), sb.digits());
    assert_eq!(sa.digits().len(), 60);
    assert!(sa.digits().bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(sa.grouped().split(' ').count(), 12);
    sa.verify_scanned(sb.qr_payload()).unwrap();
    sb.verify_scanned(sa.qr_payload()).unwrap();
    assert_eq!(sa.verify_scanned(sa.qr_payload()).unwrap_err(), SafetyError::Mismatch);
    let c = AccountIdentity::generate(&mut rng);
    let sc = safety_number(c.public(), b"bob", a.public(), b"alice").unwrap();
    assert_ne!(sc.digits(), sa.digits());
    assert_eq!(sa.verify_scanned(sc.qr_payload()).unwrap_err(), SafetyError::Mismatch);
    assert_eq!(sa.verify_scanned(&[0x30]).unwrap_err(), SafetyError::Malformed);
    assert_eq!(
        safety_number(a.public(), &[0; 257], b.public(), b"bob").unwrap_err(),
        SafetyError::IdTooLong
    );
}
