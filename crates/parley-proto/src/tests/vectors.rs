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
