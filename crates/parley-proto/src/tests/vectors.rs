//! Known-answer test vectors: JSON files under `tests/vectors/` (format in
//! `tests/vectors/README.md` and docs/PROTOCOL.md §10). Each file holds inputs and expected
//! outputs; this test recomputes every output from the inputs and compares. Regenerate with
//! `PARLEY_REGEN_VECTORS=1 cargo test -p parley-proto vectors`.

use serde_json::{Value, json};

use super::support::*;
use crate::*;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors")
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn err_name<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Checks `file` against freshly computed content, or rewrites it when regenerating.
fn check_file(name: &str, inputs: Value, compute: impl Fn(&Value) -> Value) {
    let path = dir().join(name);
    if std::env::var_os("PARLEY_REGEN_VECTORS").is_some() {
        let full = compute(&inputs);
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&full).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored: Value = serde_json::from_str(&text).unwrap();
    // Recompute from the inputs stored in the file itself, not from this file's constants.
    let recomputed = compute(&stored);
    assert_eq!(stored, recomputed, "{name} does not match the implementation");
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

struct Setup {
    alice: Party,
    bob: Party,
    alice_rng: CtrRng,
    bob_rng: CtrRng,
    bundle: PrekeyBundle,
}

/// The documented generation procedure (README in the vectors folder).
fn setup(alice_seed: &[u8], bob_seed: &[u8], one_time: bool) -> Setup {
    let mut bob_rng = CtrRng::new(bob_seed);
    let mut bob = Party::new(&mut bob_rng, usize::from(one_time));
    let mut alice_rng = CtrRng::new(alice_seed);
    let alice = Party::new(&mut alice_rng, 0);
    let bundle = bob.bundle();
    Setup { alice, bob, alice_rng, bob_rng, bundle }
}

fn handshake_case(case: &Value) -> Value {
    let mut s = setup(
        &unh(&case["alice_seed"]),
        &unh(&case["bob_seed"]),
        case["one_time"].as_bool().unwrap(),
    );
    let plaintext = unh(&case["plaintext"]);
    let ad = unh(&case["ad"]);
    let (mut a, keys) =
        crate::pqxdh::initiate_inner(&mut s.alice_rng, &s.alice.device, &s.alice.cert, &s.bundle)
            .unwrap();
    let initial = a.encrypt(&mut s.alice_rng, &plaintext, &ad).unwrap();
    let acc =
        s.bob.store.accept(&mut s.bob_rng, NOW, &s.bob.device, &s.bob.cert, &initial, &ad).unwrap();
    let mut b = acc.session;
    let reply = b.encrypt(&mut s.bob_rng, b"reply", &ad).unwrap();
    assert_eq!(a.decrypt_any(&mut s.alice_rng, &reply, &ad).unwrap().plaintext(), b"reply");
    let okm = &keys.okm[..];
    let mut out = case.clone();
    out["expected"] = json!({
        "bob_account": h(&s.bob.account.public().encode()),
        "bob_certificate": h(&s.bob.cert.encode()),
        "bob_bundle": h(&s.bundle.to_unverified().encode()),
        "alice_certificate": h(&s.alice.cert.encode()),
        "pqxdh_okm": h(okm),
        "root_key": h(&okm[..32]),
        "hka": h(&okm[32..64]),
        "nhkb": h(&okm[64..]),
        "handshake_id": h(a.handshake_id()),
        "initial_message": h(&initial),
        "bob_first_plaintext": h(acc.first.plaintext()),
        "bob_reply": h(&reply),
    });
    out
}

fn handshake_failure(f: &Value, cases: &[Value]) -> Value {
    let case = cases.iter().find(|c| c["name"] == f["case"]).expect("named case");
    let mut s = setup(
        &unh(&case["alice_seed"]),
        &unh(&case["bob_seed"]),
        case["one_time"].as_bool().unwrap(),
    );
    let ad = unh(&case["ad"]);
    let mut a = initiate(&mut s.alice_rng, &s.alice.device, &s.alice.cert, &s.bundle).unwrap();
    let initial = a.encrypt(&mut s.alice_rng, &unh(&case["plaintext"]), &ad).unwrap();
    let mut msg = initial.clone();
    let mut use_ad = ad.clone();
    let mut now = NOW;
    match f["mutation"].as_str().unwrap() {
        "replay" => {
            s.bob
                .store
                .accept(&mut s.bob_rng, NOW, &s.bob.device, &s.bob.cert, &initial, &ad)
                .unwrap();
        }
        "flip_byte" => {
            let i = f["offset"].as_u64().unwrap() as usize;
            msg[i] ^= 0x01;
        }
        "wrong_ad" => use_ad.push(0),
        "expired" => now = NOW + PREKEY_MAX_AGE_SECS,
        other => panic!("unknown mutation {other}"),
    }
    let result = s.bob.store.accept(&mut s.bob_rng, now, &s.bob.device, &s.bob.cert, &msg, &use_ad);
    let mut out = f.clone();
    out["error"] = json!(result.map(|_| "ok".to_string()).unwrap_or_else(err_name));
    out
}

fn handshake_file(v: &Value) -> Value {
    let cases: Vec<Value> = v["cases"].as_array().unwrap().iter().map(handshake_case).collect();
    let failures: Vec<Value> =
        v["failures"].as_array().unwrap().iter().map(|f| handshake_failure(f, &cases)).collect();
    let mut out = v.clone();
    out["cases"] = json!(cases);
    out["failures"] = json!(failures);
    out
}

#[test]
fn vectors_handshake() {
    // Offsets into the initial message: 2 (type, version) + 4 + cert (110+64) + ...
    let cert_len = 2 + 33 + 4 + 33 + 33 + 64;
    let ek_at = 2 + 4 + cert_len + 1;
    let kem_ct_at = ek_at + 32 + 4 + 1 + 1 + 4 + 1;
    let inputs = json!({
        "description": "PQXDH handshakes from fixed seeds. See README.md for the generation procedure.",
        "rng": "ctr-sha256",
        "now": NOW,
        "cases": [
            {"name": "one_time_prekeys", "alice_seed": h(b"alice-1"), "bob_seed": h(b"bob-1"), "one_time": true,
             "plaintext": h(b"Hello Bob, this is Alice."), "ad": ""},
            {"name": "last_resort_only", "alice_seed": h(b"alice-2"), "bob_seed": h(b"bob-2"), "one_time": false,
             "plaintext": h(b"Hi"), "ad": h(b"associated data")},
        ],
        "failures": [
            {"name": "one-time prekeys reused", "case": "one_time_prekeys", "mutation": "replay"},
            {"name": "last-resort initial message replayed", "case": "last_resort_only", "mutation": "replay"},
            {"name": "bit flipped in the ephemeral key", "case": "one_time_prekeys", "mutation": "flip_byte", "offset": ek_at + 5},
            {"name": "bit flipped in the KEM ciphertext", "case": "one_time_prekeys", "mutation": "flip_byte", "offset": kem_ct_at + 100},
            {"name": "bit flipped in the initiator certificate signature", "case": "last_resort_only", "mutation": "flip_byte", "offset": 2 + 4 + cert_len - 1},
            {"name": "wrong associated data", "case": "last_resort_only", "mutation": "wrong_ad"},
            {"name": "expired signed prekey", "case": "last_resort_only", "mutation": "expired"},
        ],
    });
    check_file("handshake.json", inputs, handshake_file);
}

// ---------------------------------------------------------------------------------------------
// Ratchet transcripts
// ---------------------------------------------------------------------------------------------

fn transcript(t: &Value) -> Value {
    let mut s = setup(&unh(&t["alice_seed"]), &unh(&t["bob_seed"]), false);
    let mut a = initiate(&mut s.alice_rng, &s.alice.device, &s.alice.cert, &s.bundle).unwrap();
    let init = a.encrypt(&mut s.alice_rng, b"start", b"").unwrap();
    let b = s
        .bob
        .store
        .accept(&mut s.bob_rng, NOW, &s.bob.device, &s.bob.cert, &init, b"")
        .unwrap()
        .session;
    let mut sessions = [a, b];
    let mut rngs = [s.alice_rng, s.bob_rng];
    let mut sent: std::collections::BTreeMap<String, (usize, Vec<u8>)> = Default::default();
    let who = |v: &Value| if v.as_str() == Some("alice") { 0usize } else { 1 };
    let mut steps_out = Vec::new();
    for step in t["steps"].as_array().unwrap() {
        let mut out = step.clone();
        if let Some(from) = step.get("send") {
            let i = who(from);
            let count = step.get("count").and_then(Value::as_u64).unwrap_or(1);
            let label = step["label"].as_str().unwrap();
            let pt = unh(&step["plaintext"]);
            let ad = unh(&step["ad"]);
            let mut last = Vec::new();
            for k in 0..count {
                let m = sessions[i].encrypt(&mut rngs[i], &pt, &ad).unwrap();
                let name = if count == 1 { label.to_string() } else { format!("{label}{k}") };
                sent.insert(name, (i, m.clone()));
                last = m;
            }
            if count == 1 {
                out["message"] = json!(h(&last));
            } else {
                out["last_message_sha256"] = json!(h(&crate::crypto::sha256(&[&last])));
            }
        } else if let Some(label) = step.get("deliver") {
            let (from, msg) = sent[label.as_str().unwrap()].clone();
            let to = 1 - from;
            let mut msg = msg;
            if let Some(off) = step.get("flip_byte").and_then(Value::as_u64) {
                msg[off as usize] ^= 0x01;
            }
            let ad = unh(&step["ad"]);
            match sessions[to].decrypt_any(&mut rngs[to], &msg, &ad) {
                Ok(d) => {
                    out["result"] = json!("ok");
                    out["plaintext"] = json!(h(d.plaintext()));
                    out["gaps"] = json!(d.gaps().iter().map(|g| json!({"chain": h(&g.chain), "first": g.first, "count": g.count})).collect::<Vec<_>>());
                }
                Err(e) => out["result"] = json!(err_name(e)),
            }
        }
        steps_out.push(out);
    }
    let mut out = t.clone();
    out["steps"] = json!(steps_out);
    out
}

fn ratchet_file(v: &Value) -> Value {
    let mut out = v.clone();
    out["transcripts"] =
        json!(v["transcripts"].as_array().unwrap().iter().map(transcript).collect::<Vec<_>>());
    out
}

fn send(from: &str, label: &str, pt: &[u8]) -> Value {
    json!({"send": from, "label": label, "plaintext": h(pt), "ad": ""})
}
fn deliver(label: &str) -> Value {
    json!({"deliver": label, "ad": ""})
}

#[test]
fn vectors_ratchet() {
    let many = MAX_FORWARD_JUMP + 3;
    let inputs = json!({
        "description": "Double Ratchet transcripts after a last-resort PQXDH handshake (Alice sends \"start\" with empty AD, Bob accepts). See README.md.",
        "rng": "ctr-sha256",
        "transcripts": [
            {"name": "in_order", "alice_seed": h(b"t-alice-1"), "bob_seed": h(b"t-bob-1"), "steps": [
                send("alice", "a1", b"one"), deliver("a1"), send("bob", "b1", b"two"), deliver("b1"),
                send("alice", "a2", b"three"), deliver("a2"), send("alice", "a3", b"four"), deliver("a3"),
                send("bob", "b2", b"five"), deliver("b2")]},
            {"name": "out_of_order_and_skipped", "alice_seed": h(b"t-alice-2"), "bob_seed": h(b"t-bob-2"), "steps": [
                send("alice", "a1", b"1"), send("alice", "a2", b"2"), send("alice", "a3", b"3"),
                deliver("a3"), deliver("a1"),
                send("bob", "b1", b"reply"), deliver("b1"),
                send("alice", "a4", b"4"), deliver("a4"),
                deliver("a2")]},
            {"name": "beyond_limit_gap", "alice_seed": h(b"t-alice-3"), "bob_seed": h(b"t-bob-3"), "steps": [
                json!({"send": "alice", "label": "x", "count": many, "plaintext": h(b"x"), "ad": ""}),
                deliver("x0"), deliver(&format!("x{}", many - 1)),
                send("bob", "b1", b"reply"), deliver("b1"),
                send("alice", "a1", b"after the gap"), deliver("a1"),
                deliver(&format!("x{}", many - 1))]},
            {"name": "tampered", "alice_seed": h(b"t-alice-4"), "bob_seed": h(b"t-bob-4"), "steps": [
                send("alice", "a0", b"first"), deliver("a0"), send("bob", "b0", b"reply"), deliver("b0"),
                send("alice", "a1", b"genuine"),
                json!({"deliver": "a1", "ad": "", "flip_byte": 0}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 2}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 30}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 80}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 92}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 100}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 185}),
                json!({"deliver": "a1", "ad": h(b"other")}),
                deliver("a1")]},
            {"name": "tampered_initial", "alice_seed": h(b"t-alice-6"), "bob_seed": h(b"t-bob-6"), "steps": [
                send("alice", "a1", b"repeated handshake"),
                json!({"deliver": "a1", "ad": "", "flip_byte": 60}),
                json!({"deliver": "a1", "ad": "", "flip_byte": 250}),
                deliver("a1")]},
            {"name": "replayed", "alice_seed": h(b"t-alice-5"), "bob_seed": h(b"t-bob-5"), "steps": [
                send("alice", "a1", b"once"), deliver("a1"), deliver("a1"),
                send("bob", "b1", b"ok"), deliver("b1"), deliver("b1")]},
        ],
    });
    check_file("ratchet.json", inputs, ratchet_file);
}

// ---------------------------------------------------------------------------------------------
// Safety numbers
// ---------------------------------------------------------------------------------------------

fn safety_file(v: &Value) -> Value {
    let key = |x: &Value| AccountPublicKey::from_bytes(unh(x).try_into().unwrap()).unwrap();
    let mut out = v.clone();
    let cases: Vec<Value> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let r = safety_number(
                &key(&c["local_key"]),
                c["local_id"].as_str().unwrap().as_bytes(),
                &key(&c["remote_key"]),
                c["remote_id"].as_str().unwrap().as_bytes(),
            );
            c["expected"] = match r {
                Ok(n) => json!({"digits": n.digits(), "grouped": n.grouped(), "qr_payload": h(n.qr_payload())}),
                Err(e) => json!({"error": err_name(e)}),
            };
            c
        })
        .collect();
    out["cases"] = json!(cases);
    out
}

#[test]
fn vectors_safety_numbers() {
    let mut rng = CtrRng::new(b"safety vectors");
    let keys: Vec<String> =
        (0..3).map(|_| h(AccountIdentity::generate(&mut rng).public().as_bytes())).collect();
    let inputs = json!({
        "description": "Safety numbers (60 digits) and QR payloads; see docs/PROTOCOL.md §8.",
        "cases": [
            {"local_key": keys[0], "local_id": "alice", "remote_key": keys[1], "remote_id": "bob"},
            {"local_key": keys[1], "local_id": "bob", "remote_key": keys[0], "remote_id": "alice"},
            {"local_key": keys[2], "local_id": "mallory", "remote_key": keys[1], "remote_id": "bob"},
            {"local_key": keys[0], "local_id": "", "remote_key": keys[0], "remote_id": ""},
            {"local_key": keys[0], "local_id": "a".repeat(MAX_ACCOUNT_ID_LEN + 1), "remote_key": keys[1], "remote_id": "bob"},
        ],
    });
    check_file("safety_numbers.json", inputs, safety_file);
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

fn decode_case(c: &Value) -> String {
    let bytes = unh(&c["hex"]);
    let device = || {
        DevicePublicKeys::new(
            unh(&c["device_signing"]).try_into().unwrap(),
            unh(&c["device_agreement"]).try_into().unwrap(),
        )
        .unwrap()
    };
    let reencode =
        |e: Vec<u8>| if e == bytes { "ok".to_string() } else { "re-encoding differs".to_string() };
    match c["kind"].as_str().unwrap() {
        "device_certificate" => DeviceCertificate::decode_verified(&bytes)
            .map(|x| reencode(x.encode()))
            .unwrap_or_else(err_name),
        "device_list" => {
            let acct =
                AccountPublicKey::from_bytes(unh(&c["account"]).try_into().unwrap()).unwrap();
            DeviceList::decode_verified(&bytes, &acct)
                .map(|x| reencode(x.encode()))
                .unwrap_or_else(err_name)
        }
        "signed_prekey" => SignedPrekey::decode_verified(&bytes, &device())
            .map(|x| reencode(x.encode()))
            .unwrap_or_else(err_name),
        "kem_prekey" => KemPrekey::decode_verified(&bytes, &device())
            .map(|x| reencode(x.encode()))
            .unwrap_or_else(err_name),
        "one_time_prekey" => {
            OneTimePrekey::decode(&bytes).map(|x| reencode(x.encode())).unwrap_or_else(err_name)
        }
        "bundle" => PrekeyBundleIn::decode(&bytes)
            .and_then(|b| b.validate(None))
            .map(|x| reencode(x.to_unverified().encode()))
            .unwrap_or_else(err_name),
        "message" => message_kind(&bytes)
            .map(|k| format!("ok {k:?}").chars().take(24).collect())
            .unwrap_or_else(err_name),
        other => panic!("unknown kind {other}"),
    }
}

fn encodings_file(v: &Value) -> Value {
    let mut out = v.clone();
    out["cases"] = json!(
        v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c["result"] = json!(decode_case(&c));
                c
            })
            .collect::<Vec<_>>()
    );
    out
}

#[test]
fn vectors_encodings() {
    let mut rng = CtrRng::new(b"encoding vectors");
    let mut bob = Party::new(&mut rng, 1);
    let alice = Party::new(&mut rng, 0);
    let list = bob.account.sign_device_list(3, vec![(1, bob.device.public().clone())]).unwrap();
    let bundle = bob.bundle().to_unverified().encode();
    let mut a = initiate(
        &mut rng,
        &alice.device,
        &alice.cert,
        &PrekeyBundleIn::decode(&bundle).unwrap().validate(None).unwrap(),
    )
    .unwrap();
    let initial = a.encrypt(&mut rng, b"x", b"").unwrap();
    let acc = bob.store.accept(&mut rng, NOW, &bob.device, &bob.cert, &initial, b"").unwrap();
    let mut bs = acc.session;
    let ratchet_msg = bs.encrypt(&mut rng, b"y", b"").unwrap();
    let dev = bob.device.public();
    let with_dev = |mut v: Value| {
        v["device_signing"] = json!(h(dev.signing()));
        v["device_agreement"] = json!(h(dev.agreement()));
        v
    };
    let cert = bob.cert.encode();
    let spk = bob.spk.encode();
    let kem = bob.last_resort.encode();
    let otk = bob
        .one_time
        .first()
        .map(|(o, _)| o.encode())
        .unwrap_or_else(|| OneTimePrekey::new(9, [9; 32]).encode());
    let mutate = |b: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
        let mut x = b.to_vec();
        f(&mut x);
        h(&x)
    };
    let mut cases = vec![
        json!({"name": "certificate", "kind": "device_certificate", "hex": h(&cert)}),
        json!({"name": "certificate, trailing byte", "kind": "device_certificate", "hex": mutate(&cert, &|x| x.push(0))}),
        json!({"name": "certificate, version 2", "kind": "device_certificate", "hex": mutate(&cert, &|x| x[1] = 2)}),
        json!({"name": "certificate, wrong object type", "kind": "device_certificate", "hex": mutate(&cert, &|x| x[0] = 0x02)}),
        json!({"name": "certificate, truncated", "kind": "device_certificate", "hex": h(&cert[..cert.len() - 1])}),
        json!({"name": "certificate, X25519 type byte on the account key", "kind": "device_certificate", "hex": mutate(&cert, &|x| x[2] = KEY_TYPE_X25519)}),
        json!({"name": "certificate, bad signature", "kind": "device_certificate", "hex": mutate(&cert, &|x| { let n = x.len() - 10; x[n] ^= 1 })}),
        json!({"name": "device list", "kind": "device_list", "account": h(bob.account.public().as_bytes()), "hex": h(&list.encode())}),
        json!({"name": "device list, count over the limit", "kind": "device_list", "account": h(bob.account.public().as_bytes()),
               "hex": mutate(&list.encode(), &|x| x[2 + 33 + 8..2 + 33 + 12].copy_from_slice(&1000u32.to_be_bytes()))}),
        with_dev(json!({"name": "signed prekey", "kind": "signed_prekey", "hex": h(&spk)})),
        with_dev(
            json!({"name": "signed prekey, ML-KEM type byte", "kind": "signed_prekey", "hex": mutate(&spk, &|x| x[6] = KEY_TYPE_MLKEM1024)}),
        ),
        with_dev(json!({"name": "KEM prekey", "kind": "kem_prekey", "hex": h(&kem)})),
        with_dev(
            json!({"name": "KEM prekey, kind changed to one-time", "kind": "kem_prekey", "hex": mutate(&kem, &|x| x[2] = 2)}),
        ),
        with_dev(
            json!({"name": "KEM prekey, unknown kind", "kind": "kem_prekey", "hex": mutate(&kem, &|x| x[2] = 7)}),
        ),
        json!({"name": "one-time prekey", "kind": "one_time_prekey", "hex": h(&otk)}),
        json!({"name": "bundle", "kind": "bundle", "hex": h(&bundle)}),
        json!({"name": "bundle, oversize certificate length", "kind": "bundle", "hex": mutate(&bundle, &|x| x[2..6].copy_from_slice(&100_000u32.to_be_bytes()))}),
        json!({"name": "initial message", "kind": "message", "hex": h(&initial)}),
        json!({"name": "ratchet message", "kind": "message", "hex": h(&ratchet_msg)}),
        json!({"name": "ratchet message, ciphertext not a padding bucket", "kind": "message",
               "hex": mutate(&ratchet_msg, &|x| { x.truncate(x.len() - 33); let n = x.len() - 63 - 4; x[n..n + 4].copy_from_slice(&63u32.to_be_bytes()); x.extend_from_slice(&[0; 32]); })}),
        json!({"name": "empty input", "kind": "message", "hex": ""}),
    ];
    cases.iter_mut().for_each(|c| c["result"] = json!(null));
    let inputs = json!({"description": "Decoder pass and fail cases; `result` is \"ok\" (decoded, verified and re-encoded identically) or the error.", "cases": cases});
    check_file("encodings.json", inputs, encodings_file);
}

// ---------------------------------------------------------------------------------------------
// Franking
// ---------------------------------------------------------------------------------------------

/// A report item from its JSON spec: `{"ref": label, ...mutations}`, `{"own": label}` or
/// `{"gap": [sender, device, from, to]}`.
fn franking_item(
    spec: &Value,
    franked: &std::collections::BTreeMap<String, ReportItem>,
    bodies: &std::collections::BTreeMap<String, Vec<u8>>,
) -> ReportItem {
    if let Some(label) = spec.get("own") {
        return ReportItem::Own { body_bytes: bodies[label.as_str().unwrap()].clone() };
    }
    if let Some(g) = spec.get("gap") {
        return ReportItem::Gap {
            sender: g[0].as_str().unwrap().into(),
            sender_device: g[1].as_u64().unwrap() as u32,
            from_seq: g[2].as_u64().unwrap(),
            to_seq: g[3].as_u64().unwrap(),
        };
    }
    let mut item = franked[spec["ref"].as_str().unwrap()].clone();
    let ReportItem::Franked {
        content,
        tf,
        rf,
        kid,
        sender,
        sender_device,
        recipient,
        server_time_ms,
    } = &mut item
    else {
        unreachable!()
    };
    if let Some(off) = spec.get("flip_content").and_then(Value::as_u64) {
        content[off as usize] ^= 0x01;
    }
    if let Some(s) = spec.get("set_sender").and_then(Value::as_str) {
        *sender = s.into();
    }
    if let Some(d) = spec.get("set_sender_device").and_then(Value::as_u64) {
        *sender_device = d as u32;
    }
    if let Some(s) = spec.get("set_recipient").and_then(Value::as_str) {
        *recipient = s.into();
    }
    if let Some(t) = spec.get("set_server_time_ms").and_then(Value::as_u64) {
        *server_time_ms = t;
    }
    if let Some(k) = spec.get("set_kid").and_then(Value::as_u64) {
        *kid = k as u32;
    }
    if let Some(other) = spec.get("tags_from").and_then(Value::as_str) {
        let ReportItem::Franked { tf: t, rf: r, server_time_ms: s, .. } = &franked[other] else {
            unreachable!()
        };
        (*tf, *rf, *server_time_ms) = (*t, *r, *s);
    }
    item
}

fn franking_file(v: &Value) -> Value {
    use std::collections::BTreeMap;
    let key = FrankingKey::from_bytes(unh(&v["k_frank"]).try_into().unwrap());
    let kid = v["kid"].as_u64().unwrap() as u32;
    let retired = v["retired_kid"].as_u64().unwrap() as u32;
    let mut franked: BTreeMap<String, ReportItem> = BTreeMap::new();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    let mut out = v.clone();
    let mut chains_out = Vec::new();
    for chain in v["chains"].as_array().unwrap() {
        let sender = chain["sender"].as_str().unwrap();
        let device = chain["sender_device"].as_u64().unwrap() as u32;
        let recipient = chain["recipient"].as_str().unwrap();
        let mut state = ChainState::new();
        let mut msgs = Vec::new();
        for m in chain["messages"].as_array().unwrap() {
            let body = FrankedBody {
                message_id: m["message_id"].as_str().unwrap().into(),
                sent_at_ms: m["sent_at_ms"].as_u64().unwrap(),
                sender: sender.into(),
                sender_device: device,
                recipient: recipient.into(),
                seq: state.next_seq(),
                prev: *state.prev(),
                text: m["text"].as_str().unwrap().to_string().into(),
            };
            let nf: [u8; 32] = unh(&m["nf"]).try_into().unwrap();
            let sealed = crate::franking::seal_with_nf(&body, &nf).unwrap();
            let time = m["server_time_ms"].as_u64().unwrap();
            let rf = server_tag(&key, sealed.tf(), sender, device, recipient, time);
            assert!(verify_server_tag(&key, sealed.tf(), sender, device, recipient, time, &rf));
            assert_eq!(open(sealed.content(), sealed.tf()).unwrap().body(), &body);
            state.advance(sealed.body_bytes()).unwrap();
            let label = m["label"].as_str().unwrap().to_string();
            let mut mo = m.clone();
            mo["expected"] = json!({
                "seq": body.seq,
                "prev": h(&body.prev),
                "body": h(sealed.body_bytes()),
                "content": h(sealed.content()),
                "tf": h(sealed.tf()),
                "ratchet_ad": h(&ratchet_ad(sealed.tf())),
                "rf": h(&rf),
                "chain_state_after": h(&state.to_bytes()),
            });
            msgs.push(mo);
            bodies.insert(label.clone(), sealed.body_bytes().to_vec());
            franked.insert(
                label,
                ReportItem::Franked {
                    content: sealed.content().to_vec(),
                    tf: *sealed.tf(),
                    rf,
                    kid,
                    sender: sender.into(),
                    sender_device: device,
                    recipient: recipient.into(),
                    server_time_ms: time,
                },
            );
        }
        let mut co = chain.clone();
        co["messages"] = json!(msgs);
        chains_out.push(co);
    }
    out["chains"] = json!(chains_out);

    let open_failures: Vec<Value> = v["open_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let ReportItem::Franked { content, tf, .. } = &franked[f["ref"].as_str().unwrap()]
            else {
                unreachable!()
            };
            let (mut content, mut tf) = (content.clone(), *tf);
            if let Some(off) = f.get("flip_content").and_then(Value::as_u64) {
                content[off as usize] ^= 0x01;
            }
            if let Some(off) = f.get("flip_tf").and_then(Value::as_u64) {
                tf[off as usize] ^= 0x01;
            }
            if let Some(n) = f.get("truncate_to").and_then(Value::as_u64) {
                content.truncate(n as usize);
            }
            let mut fo = f.clone();
            fo["error"] =
                json!(open(&content, &tf).map(|_| "ok".to_string()).unwrap_or_else(err_name));
            fo
        })
        .collect();
    out["open_failures"] = json!(open_failures);

    let keys = |k: u32, _t: u64| {
        if k == kid {
            KeyStatus::Active(&key)
        } else if k == retired {
            KeyStatus::Retired
        } else {
            KeyStatus::Unknown
        }
    };
    let reports: Vec<Value> = v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let report = Report {
                reporter: r["reporter"].as_str().unwrap().into(),
                items: r["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| franking_item(s, &franked, &bodies))
                    .collect(),
            };
            let bytes = report.encode().unwrap();
            let decoded = Report::decode(&bytes).unwrap();
            assert_eq!(decoded, report);
            let verdicts: Vec<String> =
                verify_report(&decoded, keys).iter().map(|v| format!("{v:?}")).collect();
            let mut ro = r.clone();
            ro["expected"] = json!({"report_sha256": h(&crate::crypto::sha256(&[&bytes])), "verdicts": verdicts});
            if r.get("full_encoding").and_then(Value::as_bool) == Some(true) {
                ro["expected"]["report"] = json!(h(&bytes));
            }
            ro
        })
        .collect();
    out["reports"] = json!(reports);
    out
}

#[test]
fn vectors_franking() {
    let nf = |s: &str| h(&crate::crypto::sha256(&[b"franking vectors nf", s.as_bytes()]));
    let msg = |label: &str, id: &str, sent: u64, text: &str, time: u64| json!({"label": label, "message_id": id, "sent_at_ms": sent, "text": text, "nf": nf(label), "server_time_ms": time});
    let t = 1_800_000_000_000u64;
    let r =
        |name: &str, items: Vec<Value>| json!({"name": name, "reporter": "bob", "items": items});
    let refs = |labels: &[&str]| labels.iter().map(|l| json!({"ref": l})).collect::<Vec<_>>();
    let m = |label: &str, extra: Value| {
        let mut v = json!({"ref": label});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    // Offset of the first text byte of a0..a4 in the content: 2 + 4 + len(id) + 8 + 4 + 5 + 4
    // + 4 + 3 + 8 + 32 + 4, with 4-byte ids ("a-00"): 82.
    let text_at = 82;
    let mut honest = r(
        "honest, with an own message",
        vec![
            json!({"ref": "a0"}),
            json!({"own": "b0"}),
            json!({"ref": "a1"}),
            json!({"ref": "d0"}),
            json!({"ref": "a2"}),
            json!({"ref": "a3"}),
            json!({"ref": "a4"}),
        ],
    );
    honest["full_encoding"] = json!(true);
    let inputs = json!({
        "description": "Message franking (docs/PROTOCOL.md §12): sealed bodies with fixed NF, commitments, ratchet AD, server tags, chain states; open failures; reports and their verdicts. See README.md.",
        "k_frank": h(&[0x4b; 32]),
        "kid": 7,
        "retired_kid": 6,
        "chains": [
            {"sender": "alice", "sender_device": 1, "recipient": "bob", "messages": [
                msg("a0", "a-00", t, "hello bob", t + 15),
                msg("a1", "a-01", t + 1000, "second", t + 1016),
                msg("a2", "a-02", t + 2000, "third, with UTF-8: ✓", t + 2017),
                msg("a3", "a-03", t + 3000, "fourth", t + 3018),
                msg("a4", "a-04", t + 4000, "the reported message", t + 4019),
            ]},
            {"sender": "alice", "sender_device": 2, "recipient": "bob", "messages": [
                msg("d0", "d-00", t + 1500, "from alice's second device", t + 1520),
            ]},
            {"sender": "alice", "sender_device": 1, "recipient": "carol", "messages": [
                msg("c0", "c-00", t + 500, "for carol only", t + 510),
            ]},
            {"sender": "bob", "sender_device": 1, "recipient": "alice", "messages": [
                msg("b0", "b-00", t + 700, "bob's own reply", t + 720),
            ]},
        ],
        "open_failures": [
            {"name": "genuine", "ref": "a0"},
            {"name": "bit flipped in the text", "ref": "a0", "flip_content": text_at},
            {"name": "bit flipped in the type byte", "ref": "a0", "flip_content": 0},
            {"name": "bit flipped in NF", "ref": "a0", "flip_content": 100},
            {"name": "bit flipped in TF", "ref": "a0", "flip_tf": 31},
            {"name": "NF cut short", "ref": "a0", "truncate_to": 100},
            {"name": "shorter than NF", "ref": "a0", "truncate_to": 31},
        ],
        "reports": [
            honest,
            r("altered plaintext", [refs(&["a0", "a1", "a2", "a3"]), vec![m("a4", json!({"flip_content": text_at}))]].concat()),
            r("altered sender", [refs(&["a0", "a1", "a2", "a3"]), vec![m("a4", json!({"set_sender": "mallory"}))]].concat()),
            r("altered sender device", [refs(&["a3"]), vec![m("a4", json!({"set_sender_device": 2}))]].concat()),
            r("altered server time", [refs(&["a3"]), vec![m("a4", json!({"set_server_time_ms": t}))]].concat()),
            r("tag taken from another message", [refs(&["a0", "a1", "a2", "a3"]), vec![m("a4", json!({"tags_from": "a1"}))]].concat()),
            r("tag replayed to another recipient", refs(&["a0", "c0"])),
            r("another recipient's tag, recipient rewritten", vec![json!({"ref": "a0"}), m("c0", json!({"set_recipient": "bob"}))]),
            r("reordered context", refs(&["a0", "a2", "a1", "a3", "a4"])),
            r("message removed from the middle", refs(&["a0", "a1", "a3", "a4"])),
            r("declared gap", vec![json!({"ref": "a0"}), json!({"ref": "a1"}), json!({"gap": ["alice", 1, 2, 2]}), json!({"ref": "a3"}), json!({"ref": "a4"})]),
            r("two removed, one declared", vec![json!({"ref": "a0"}), json!({"gap": ["alice", 1, 1, 1]}), json!({"ref": "a3"}), json!({"ref": "a4"})]),
            r("unknown key id", [refs(&["a3"]), vec![m("a4", json!({"set_kid": 99}))]].concat()),
            r("retired key id", [refs(&["a3"]), vec![m("a4", json!({"set_kid": 6}))]].concat()),
        ],
    });
    check_file("franking.json", inputs, franking_file);
}
