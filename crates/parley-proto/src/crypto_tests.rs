//! Known-answer tests of the wrapped primitives (Wycheproof, FIPS 203 / ACVP) and a differential test of ML-KEM.
//!
//! Every vector goes through the wrappers in [`crate::crypto`], never through the primitive
//! crates directly (RustCrypto `ml-kem` is used only as the second implementation of the
//! differential test). Every test counts the vectors it ran and asserts the count, so that a
//! renamed or emptied test set cannot make it pass silently.

use crate::crypto::{
    MLKEM_CT_LEN, MLKEM_KEYGEN_SEED_LEN, MLKEM_PK_LEN, MLKEM_SK_LEN, MlKemSecret, X25519Secret,
    aes256_ctr, aes256_ctr_keyed, aes256_key, ed25519_check_public, ed25519_verify, hkdf_expand,
    hkdf_sha256, hmac_keyed, hmac_sha256, mac_verify, mlkem_check_public,
    mlkem_encapsulate_deterministic, mlkem_generate_from_seed,
};
use hmac::Mac;
use wycheproof::TestResult;

/// `bytes` as a fixed-size array, or `None` if the length is wrong. The wrappers take fixed-size
/// arrays, so a wrong length is rejected by the type system before any wrapper runs.
fn arr<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in test data ({e}): {s:.40}…"))
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: X25519
// ---------------------------------------------------------------------------------------------

/// Wycheproof `x25519_test.json` (RFC 7748). Valid vectors must give the expected shared secret.
/// "Acceptable" vectors are low-order / twist / non-canonical public keys: our `dh` must return
/// `Err` exactly when the X25519 output is all-zero (flag `ZeroSharedSecret`), and otherwise the
/// expected secret (RFC 7748 §5: non-canonical u-coordinates are reduced, the top bit masked).
#[test]
fn wycheproof_x25519() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut ran, mut zero_rejected) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let (Some(sk), Some(pk)) = (arr::<32>(&t.private_key), arr::<32>(&t.public_key)) else {
                assert!(t.result.must_fail(), "tc {id}: wrong-length input marked {:?}", t.result);
                ran += 1;
                continue;
            };
            let expected_zero = t.shared_secret.iter().all(|&b| b == 0);
            assert_eq!(
                expected_zero,
                t.flags.contains(&TestFlag::ZeroSharedSecret),
                "tc {id}: flag/secret mismatch in the data"
            );
            let ours = X25519Secret::from_bytes(&sk).dh(&pk);
            match t.result {
                TestResult::Invalid => assert!(ours.is_err(), "tc {id}: invalid vector accepted"),
                TestResult::Valid | TestResult::Acceptable if expected_zero => {
                    assert_eq!(t.result, TestResult::Acceptable, "tc {id}");
                    assert!(ours.is_err(), "tc {id}: all-zero shared secret not rejected");
                    zero_rejected += 1;
                }
                TestResult::Valid | TestResult::Acceptable => {
                    let ss = ours.unwrap_or_else(|_| panic!("tc {id}: rejected ({:?})", t.flags));
                    assert_eq!(&ss[..], &t.shared_secret[..], "tc {id}: {}", t.comment);
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 500, "only {ran} X25519 vectors ran");
    assert!(zero_rejected > 0, "no low-order vector exercised the all-zero check");
    eprintln!("wycheproof x25519: {ran} vectors, {zero_rejected} all-zero outputs rejected");
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: Ed25519
// ---------------------------------------------------------------------------------------------

/// Wycheproof `ed25519_test.json` (RFC 8032). Valid signatures must verify through
/// `ed25519_verify` (dalek `verify_strict`), invalid ones must be rejected.
///
/// No Wycheproof "valid" vector is rejected by `verify_strict` (checked here: the set of
/// valid-but-rejected test cases must be empty). `verify_strict` is stricter than RFC 8032 only
/// for small-order `A` or `R`; Wycheproof's ed25519 set has no valid vector of that kind.
#[test]
fn wycheproof_ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut valid, mut invalid) = (0usize, 0usize);
    let mut stricter_than_wycheproof = Vec::new();
    for group in &set.test_groups {
        let pk: [u8; 32] = arr(&group.key.pk).expect("32-byte Ed25519 key");
        assert!(ed25519_check_public(&pk).is_ok(), "group key rejected by ed25519_check_public");
        for t in &group.tests {
            let id = t.tc_id;
            let ours = arr::<64>(&t.sig).map(|sig| ed25519_verify(&pk, &t.msg, &sig));
            match t.result {
                TestResult::Valid | TestResult::Acceptable => match ours {
                    Some(Ok(())) => valid += 1,
                    _ => stricter_than_wycheproof.push(id),
                },
                TestResult::Invalid => {
                    assert!(!matches!(ours, Some(Ok(()))), "tc {id} accepted: {}", t.comment);
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!(stricter_than_wycheproof, Vec::<usize>::new(), "valid vectors rejected");
    assert!(valid >= 80 && invalid >= 60, "only {valid} valid / {invalid} invalid Ed25519 vectors");
    eprintln!("wycheproof ed25519: {valid} valid verified, {invalid} invalid rejected");
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: HMAC-SHA256
// ---------------------------------------------------------------------------------------------

/// Wycheproof `hmac_sha256_test.json` (RFC 2104). Full 256-bit tags go through `hmac_keyed` +
/// `mac_verify` (the only verification path we have; it takes full tags). Truncated tags
/// (`TruncatedHmac`, 128-bit groups) go through `hmac_sha256` and a prefix comparison.
#[test]
fn wycheproof_hmac_sha256() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let (mut full, mut truncated) = (0usize, 0usize);
    for group in &set.test_groups {
        assert_eq!(group.tag_size % 8, 0);
        let tag_len = group.tag_size / 8;
        for t in &group.tests {
            let id = t.tc_id;
            assert_eq!(t.tag.len(), tag_len, "tc {id}");
            let computed = hmac_sha256(&t.key, &[&t.msg]);
            let matches = if let Some(tag) = arr::<32>(&t.tag) {
                let mut m = hmac_keyed(&t.key);
                m.update(&t.msg);
                let verified = mac_verify(m, &tag).is_ok();
                assert_eq!(
                    verified,
                    computed == tag,
                    "tc {id}: mac_verify disagrees with hmac_sha256"
                );
                full += 1;
                verified
            } else {
                truncated += 1;
                computed.get(..tag_len) == Some(&t.tag[..])
            };
            assert_eq!(matches, !t.result.must_fail(), "tc {id}: {} {:?}", t.comment, t.flags);
        }
    }
    assert!(full > 0 && truncated > 0, "{full} full-tag / {truncated} truncated-tag vectors");
    eprintln!("wycheproof hmac-sha256: {full} full-tag (mac_verify), {truncated} truncated-tag");
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: HKDF-SHA256
// ---------------------------------------------------------------------------------------------

/// Wycheproof `hkdf_sha256_test.json` (RFC 5869) through `hkdf_sha256`, and again as
/// extract-by-hand (`PRK = HMAC(salt, IKM)`, RFC 5869 §2.2) followed by `hkdf_expand`. Invalid
/// vectors ask for more than 255·32 bytes and must be refused by both.
#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let (mut ok, mut too_large) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let mut out = vec![0u8; t.size];
            let res = hkdf_sha256(&t.salt, &[&t.ikm], &t.info, &mut out);
            let prk = hmac_sha256(&t.salt, &[&t.ikm]);
            let mut out2 = vec![0u8; t.size];
            let res2 = hkdf_expand(&prk, &t.info, &mut out2);
            if t.result.must_fail() {
                assert!(res.is_err() && res2.is_err(), "tc {id}: {}", t.comment);
                too_large += 1;
            } else {
                res.unwrap_or_else(|_| panic!("tc {id} refused"));
                res2.unwrap_or_else(|_| panic!("tc {id} refused by hkdf_expand"));
                assert_eq!(out, &t.okm[..], "tc {id}: {}", t.comment);
                assert_eq!(out2, &t.okm[..], "tc {id} (hkdf_expand): {}", t.comment);
                ok += 1;
            }
        }
    }
    assert!(ok > 0 && too_large > 0, "{ok} valid / {too_large} too-large HKDF vectors");
    eprintln!("wycheproof hkdf-sha256: {ok} valid, {too_large} oversize refused");
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: ML-KEM-1024
// ---------------------------------------------------------------------------------------------

/// Wycheproof `mlkem_1024_keygen_seed_test.json`: seed `d || z` → (ek, dk) via
/// `mlkem_generate_from_seed`.
#[test]
fn wycheproof_mlkem1024_keygen_seed() {
    use wycheproof::mlkem::{TestName, TestSet};
    let set = TestSet::load(TestName::MlKem1024KeyGenSeed).unwrap();
    let mut ran = 0usize;
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            assert_eq!(t.result, TestResult::Valid, "tc {id}");
            let seed: [u8; MLKEM_KEYGEN_SEED_LEN] = arr(t.seed.as_ref().unwrap()).unwrap();
            let (sk, pk) = mlkem_generate_from_seed(&seed);
            assert_eq!(&pk[..], &t.encaps_key.as_ref().unwrap()[..], "tc {id}: ek");
            assert_eq!(&sk.secret_bytes()[..], &t.decaps_key.as_ref().unwrap()[..], "tc {id}: dk");
            assert!(mlkem_check_public(&pk).is_ok(), "tc {id}");
            ran += 1;
        }
    }
    assert!(ran > 0);
    eprintln!("wycheproof mlkem-1024 keygen-seed: {ran}");
}

/// Wycheproof `mlkem_1024_test.json`: seed → keygen (ek compared), then decapsulation of `c`
/// must give `K`, including implicit rejection (`K` = J(z, c) for a bad `c`) and the
/// `MalleableCiphertext` / `Strcmp` cases. Invalid vectors all have a wrong seed or ciphertext
/// length, which our fixed-size API cannot even express.
#[test]
fn wycheproof_mlkem1024_decaps() {
    use wycheproof::mlkem::{TestName, TestSet};
    let set = TestSet::load(TestName::MlKem1024).unwrap();
    let (mut valid, mut bad_length) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let seed = arr::<MLKEM_KEYGEN_SEED_LEN>(t.seed.as_ref().unwrap());
            let ct = arr::<MLKEM_CT_LEN>(t.ct.as_ref().unwrap());
            let (Some(seed), Some(ct)) = (seed, ct) else {
                assert!(t.result.must_fail(), "tc {id}: wrong length but {:?}", t.result);
                bad_length += 1;
                continue;
            };
            assert!(!t.result.must_fail(), "tc {id}: invalid vector with correct lengths");
            let (sk, pk) = mlkem_generate_from_seed(&seed);
            if let Some(ek) = &t.encaps_key {
                assert_eq!(&pk[..], &ek[..], "tc {id}: ek");
            }
            let k = sk.decapsulate(&ct);
            assert_eq!(&k[..], &t.shared_secret.as_ref().unwrap()[..], "tc {id}: {}", t.comment);
            valid += 1;
        }
    }
    assert!(valid > 0 && bad_length > 0, "{valid} valid / {bad_length} bad-length vectors");
    eprintln!("wycheproof mlkem-1024 decaps: {valid} valid, {bad_length} wrong-length");
}

/// Wycheproof `mlkem_1024_encaps_test.json`: (ek, m) → (c, K) via
/// `mlkem_encapsulate_deterministic`. Invalid encapsulation keys (coefficients ≥ q,
/// `ModulusOverflow` / "Public key not reduced") must be refused by the FIPS 203 §7.2 modulus
/// check, both there and in `mlkem_check_public`; wrong lengths are unrepresentable.
#[test]
fn wycheproof_mlkem1024_encaps() {
    use wycheproof::mlkem::{TestName, TestSet};
    let set = TestSet::load(TestName::MlKem1024Encaps).unwrap();
    let (mut valid, mut not_reduced, mut bad_length) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let m: [u8; 32] = arr(t.msg.as_ref().unwrap()).unwrap();
            let Some(ek) = arr::<MLKEM_PK_LEN>(t.encaps_key.as_ref().unwrap()) else {
                assert!(t.result.must_fail(), "tc {id}");
                bad_length += 1;
                continue;
            };
            let ours = mlkem_encapsulate_deterministic(&ek, &m);
            if t.result.must_fail() {
                assert!(ours.is_err(), "tc {id}: unreduced ek accepted: {}", t.comment);
                assert!(mlkem_check_public(&ek).is_err(), "tc {id}");
                not_reduced += 1;
            } else {
                let (ct, k) = ours.unwrap_or_else(|_| panic!("tc {id} refused"));
                assert_eq!(&ct[..], &t.ct.as_ref().unwrap()[..], "tc {id}: c");
                assert_eq!(&k[..], &t.shared_secret.as_ref().unwrap()[..], "tc {id}: K");
                assert!(mlkem_check_public(&ek).is_ok(), "tc {id}");
                valid += 1;
            }
        }
    }
    assert!(valid > 0 && not_reduced > 0 && bad_length > 0);
    eprintln!(
        "wycheproof mlkem-1024 encaps: {valid} valid, {not_reduced} unreduced refused, \
         {bad_length} wrong-length"
    );
}

/// Wycheproof `mlkem_1024_semi_expanded_decaps_test.json` (3168-byte decapsulation keys).
///
/// DISCREPANCY (documented, asserted): tc 6 and 7 carry a decapsulation key whose embedded
/// `H(ek)` or embedded `ek` is corrupted; FIPS 203 §7.3 ("hash check") says such a key must be
/// refused, but `MlKemSecret::from_bytes` / `decapsulate` have no way to refuse (they are
/// infallible and libcrux's `decapsulate` does not check). This test pins today's behaviour:
/// exactly those two invalid keys are accepted. See the report for the fix
/// (`libcrux_ml_kem::mlkem1024::validate_private_key` in a fallible `MlKemSecret::from_bytes`).
#[test]
fn wycheproof_mlkem1024_semi_expanded_decaps() {
    use wycheproof::mlkem::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::MlKem1024SemiExpandedDecaps).unwrap();
    let (mut valid, mut bad_length) = (0usize, 0usize);
    let mut invalid_key_accepted = Vec::new();
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let dk = arr::<MLKEM_SK_LEN>(t.decaps_key.as_ref().unwrap());
            let ct = arr::<MLKEM_CT_LEN>(t.ct.as_ref().unwrap());
            let (Some(dk), Some(ct)) = (dk, ct) else {
                assert!(t.result.must_fail(), "tc {id}");
                bad_length += 1;
                continue;
            };
            let k = MlKemSecret::from_bytes(&dk).decapsulate(&ct);
            if t.result.must_fail() {
                assert!(t.flags.contains(&TestFlag::InvalidDecapsulationKey), "tc {id}");
                invalid_key_accepted.push(id);
            } else {
                assert_eq!(&k[..], &t.shared_secret.as_ref().unwrap()[..], "tc {id}");
                valid += 1;
            }
        }
    }
    assert_eq!(invalid_key_accepted, [6, 7], "FIPS 203 §7.3 hash-check gap changed");
    assert!(valid > 0 && bad_length > 0);
    eprintln!(
        "wycheproof mlkem-1024 semi-expanded decaps: {valid} valid, {bad_length} wrong-length, \
         invalid dk accepted (known gap): {invalid_key_accepted:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// AES-256-CTR: NIST SP 800-38A
// ---------------------------------------------------------------------------------------------

/// NIST SP 800-38A Appendix F.5.5 (CTR-AES256.Encrypt) and F.5.6 (CTR-AES256.Decrypt).
/// Wycheproof has no AES-CTR set. The counter goes …feff → …ff00, so the carry out of the last
/// byte is exercised. Also checks that the keystream is position-independent of how the buffer
/// is split (one call per block with the counter advanced by hand).
#[test]
fn sp800_38a_f55_ctr_aes256() {
    let key: [u8; 32] =
        arr(&unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")).unwrap();
    let iv: [u8; 16] = arr(&unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")).unwrap();
    let blocks = [
        // (counter block, plaintext, ciphertext) — F.5.5 blocks #1..#4
        (
            "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            "6bc1bee22e409f96e93d7e117393172a",
            "601ec313775789a5b7a7f504bbf3d228",
        ),
        (
            "f0f1f2f3f4f5f6f7f8f9fafbfcfdff00",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "f443e3ca4d62b59aca84e990cacaf5c5",
        ),
        (
            "f0f1f2f3f4f5f6f7f8f9fafbfcfdff01",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "2b0930daa23de94ce87017ba2d84988d",
        ),
        (
            "f0f1f2f3f4f5f6f7f8f9fafbfcfdff02",
            "f69f2445df4f9b17ad2b417be66c3710",
            "dfc9c58db67aada613c2dd08457941a6",
        ),
    ];
    let pt: Vec<u8> = blocks.iter().flat_map(|b| unhex(b.1)).collect();
    let ct: Vec<u8> = blocks.iter().flat_map(|b| unhex(b.2)).collect();

    let mut buf = pt.clone();
    aes256_ctr(&key, &iv, &mut buf);
    assert_eq!(buf, ct, "F.5.5 encrypt");
    aes256_ctr(&key, &iv, &mut buf);
    assert_eq!(buf, pt, "F.5.6 decrypt");

    // The same vectors under a schedule expanded once (a header key's), used twice.
    let expanded = aes256_key(&key);
    aes256_ctr_keyed(&expanded, &iv, &mut buf);
    assert_eq!(buf, ct, "F.5.5 encrypt, expanded key");
    aes256_ctr_keyed(&expanded, &iv, &mut buf);
    assert_eq!(buf, pt, "F.5.6 decrypt, expanded key");

    let mut ran = 2usize;
    for (counter, p, c) in blocks {
        let counter: [u8; 16] = arr(&unhex(counter)).unwrap();
        let mut b = unhex(p);
        aes256_ctr(&key, &counter, &mut b);
        assert_eq!(b, unhex(c), "block with counter {counter:02x?}");
        ran += 1;
    }
    // Odd split points (partial blocks) must not change the keystream.
    for split in [1usize, 15, 17, 33, 63] {
        let (mut a, mut b) = (pt[..split].to_vec(), pt.to_vec());
        aes256_ctr(&key, &iv, &mut a);
        aes256_ctr(&key, &iv, &mut b);
        assert_eq!(a, b[..split], "prefix of length {split}");
        ran += 1;
    }
    assert_eq!(ran, 11);
}

// ---------------------------------------------------------------------------------------------
// FIPS 203 / ACVP known answers for ML-KEM-1024
// ---------------------------------------------------------------------------------------------

/// The subset of an ACVP `internalProjection.json` that we keep (see tests/vectors/acvp/README.md).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcvpFile {
    algorithm: String,
    mode: String,
    revision: String,
    test_groups: Vec<AcvpGroup>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcvpGroup {
    tg_id: u32,
    parameter_set: String,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    dk: Option<String>,
    tests: Vec<AcvpTest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcvpTest {
    tc_id: u32,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    z: Option<String>,
    #[serde(default)]
    ek: Option<String>,
    #[serde(default)]
    dk: Option<String>,
    #[serde(default)]
    m: Option<String>,
    #[serde(default)]
    c: Option<String>,
    #[serde(default)]
    k: Option<String>,
    /// Derived, not in ACVP: `k == SHAKE256(z ‖ c, 32)` (FIPS 203 Alg. 18, K̄ = J(z, c)),
    /// computed when the subset was extracted; see the README.
    #[serde(default)]
    implicit_rejection: Option<bool>,
}

fn acvp(json: &str, mode: &str) -> AcvpFile {
    let f: AcvpFile = serde_json::from_str(json).unwrap();
    assert_eq!(
        (f.algorithm.as_str(), f.mode.as_str(), f.revision.as_str()),
        ("ML-KEM", mode, "FIPS203")
    );
    for g in &f.test_groups {
        assert_eq!(g.parameter_set, "ML-KEM-1024", "tgId {}", g.tg_id);
    }
    f
}

fn field<const N: usize>(v: &Option<String>, what: &str, tc: u32) -> [u8; N] {
    let bytes = unhex(v.as_deref().unwrap_or_else(|| panic!("tc {tc}: no {what}")));
    arr(&bytes).unwrap_or_else(|| panic!("tc {tc}: {what} has {} bytes, want {N}", bytes.len()))
}

/// ACVP ML-KEM keyGen (FIPS 203 Algorithm 16, ML-KEM.KeyGen_internal): (d, z) → (ek, dk).
#[test]
fn acvp_mlkem1024_keygen() {
    let f = acvp(include_str!("../tests/vectors/acvp/ML-KEM-1024-keyGen.json"), "keyGen");
    let mut ran = 0usize;
    for g in &f.test_groups {
        for t in &g.tests {
            let (d, z) = (field::<32>(&t.d, "d", t.tc_id), field::<32>(&t.z, "z", t.tc_id));
            let mut seed = [0u8; MLKEM_KEYGEN_SEED_LEN];
            seed[..32].copy_from_slice(&d);
            seed[32..].copy_from_slice(&z);
            let (sk, pk) = mlkem_generate_from_seed(&seed);
            assert_eq!(pk[..], field::<MLKEM_PK_LEN>(&t.ek, "ek", t.tc_id), "tc {}: ek", t.tc_id);
            assert_eq!(
                sk.secret_bytes()[..],
                field::<MLKEM_SK_LEN>(&t.dk, "dk", t.tc_id),
                "tc {}: dk",
                t.tc_id
            );
            ran += 1;
        }
    }
    assert!(ran >= 1, "only {ran} ACVP keyGen vectors");
    eprintln!("acvp mlkem-1024 keyGen: {ran}");
}

/// ACVP ML-KEM encapsulation (FIPS 203 Algorithm 17, ML-KEM.Encaps_internal): (ek, m) → (c, k).
#[test]
fn acvp_mlkem1024_encapsulation() {
    let f = acvp(include_str!("../tests/vectors/acvp/ML-KEM-1024-encapDecap.json"), "encapDecap");
    let mut ran = 0usize;
    for g in f.test_groups.iter().filter(|g| g.function.as_deref() == Some("encapsulation")) {
        for t in &g.tests {
            let tc = t.tc_id;
            let ek = field::<MLKEM_PK_LEN>(&t.ek, "ek", tc);
            let (ct, k) = mlkem_encapsulate_deterministic(&ek, &field::<32>(&t.m, "m", tc))
                .unwrap_or_else(|_| panic!("tc {tc}: ek refused"));
            assert_eq!(ct[..], field::<MLKEM_CT_LEN>(&t.c, "c", tc), "tc {tc}: c");
            assert_eq!(k[..], field::<32>(&t.k, "k", tc), "tc {tc}: k");
            ran += 1;
        }
    }
    assert!(ran >= 3, "only {ran} ACVP encapsulation vectors");
    eprintln!("acvp mlkem-1024 encapsulation: {ran}");
}

/// ACVP ML-KEM decapsulation (FIPS 203 Algorithm 18, ML-KEM.Decaps_internal): (dk, c) → k, for
/// valid ciphertexts and for modified ones, whose expected k is the implicit-rejection value
/// J(z ‖ c).
#[test]
fn acvp_mlkem1024_decapsulation() {
    let f = acvp(include_str!("../tests/vectors/acvp/ML-KEM-1024-encapDecap.json"), "encapDecap");
    let (mut ran, mut rejected) = (0usize, 0usize);
    for g in f.test_groups.iter().filter(|g| g.function.as_deref() == Some("decapsulation")) {
        let dk = field::<MLKEM_SK_LEN>(&g.dk, "dk", 0);
        let sk = MlKemSecret::from_bytes(&dk);
        for t in &g.tests {
            let tc = t.tc_id;
            let k = sk.decapsulate(&field::<MLKEM_CT_LEN>(&t.c, "c", tc));
            assert_eq!(k[..], field::<32>(&t.k, "k", tc), "tc {tc}");
            match t.implicit_rejection {
                Some(true) => rejected += 1,
                Some(false) => {}
                None => panic!("tc {tc}: no implicitRejection flag"),
            }
            ran += 1;
        }
    }
    assert!(
        ran >= 4 && rejected >= 2 && ran > rejected,
        "{ran} decapsulations, {rejected} rejected"
    );
    eprintln!("acvp mlkem-1024 decapsulation: {ran} ({rejected} implicit rejection)");
}

// ---------------------------------------------------------------------------------------------
// Differential test: libcrux-ml-kem (ours) vs RustCrypto ml-kem
// ---------------------------------------------------------------------------------------------

/// For 4 fixed edge seeds and 200 seeded-random (d, z, m): both implementations must agree on
/// the encapsulation key, the expanded decapsulation key, the ciphertext and the shared secret;
/// each must decapsulate the other's ciphertext; and a corrupted ciphertext (one bit flipped)
/// must give the same implicit-rejection secret in both.
///
/// RustCrypto's code is generic, so it is monomorphized into this crate and built at the test
/// profile's opt-level 0 (~7 ms per keygen/encaps/decaps, against ~0.25 ms for libcrux). To stay
/// well under the time budget, RustCrypto decapsulates the valid ciphertext in every 4th case,
/// the corrupted one in every 2nd case, and re-parses ek / loads the expanded dk in every 10th;
/// keygen and encapsulation are compared in every case, and our side runs every check always.
#[test]
fn differential_mlkem1024_libcrux_vs_rustcrypto() {
    #[allow(deprecated)]
    use ml_kem::ExpandedKeyEncoding;
    use ml_kem::array::Array;
    use ml_kem::{Decapsulate, KeyExport, MlKem1024};
    use rand::rngs::ChaCha20Rng;
    use rand::{Rng, SeedableRng};

    type RcDk = ml_kem::DecapsulationKey<MlKem1024>;
    type RcEk = ml_kem::EncapsulationKey<MlKem1024>;

    let mut cases: Vec<([u8; 64], [u8; 32])> = vec![
        ([0; 64], [0; 32]),
        ([0xff; 64], [0xff; 32]),
        ([0; 64], [0xff; 32]),
        ([0xff; 64], [0; 32]),
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(0x7061_726c_6579); // "parley"
    for _ in 0..200 {
        let (mut seed, mut m) = ([0u8; 64], [0u8; 32]);
        rng.fill_bytes(&mut seed);
        rng.fill_bytes(&mut m);
        cases.push((seed, m));
    }

    let (mut ran, mut rc_decaps) = (0usize, 0usize);
    for (i, (seed, m)) in cases.iter().enumerate() {
        // Key generation.
        let (ours_sk, ours_pk) = mlkem_generate_from_seed(seed);
        let rc_dk = RcDk::from_seed(Array::from(*seed));
        let rc_ek = rc_dk.encapsulation_key();
        assert_eq!(ours_pk[..], rc_ek.to_bytes()[..], "case {i}: ek");
        #[allow(deprecated)]
        let rc_expanded = rc_dk.to_expanded_bytes();
        assert_eq!(ours_sk.secret_bytes()[..], rc_expanded[..], "case {i}: dk");

        // Encapsulation.
        let (ours_ct, ours_k) = mlkem_encapsulate_deterministic(&ours_pk, m).unwrap();
        let (rc_ct, rc_k) = rc_ek.encapsulate_deterministic(&Array::from(*m));
        assert_eq!(ours_ct[..], rc_ct[..], "case {i}: c");
        assert_eq!(ours_k[..], rc_k[..], "case {i}: k");

        // Cross-decapsulation both ways (the ciphertexts are equal, so feed each the other's).
        let rc_ct_bytes: [u8; MLKEM_CT_LEN] = arr(&rc_ct[..]).unwrap();
        assert_eq!(ours_sk.decapsulate(&rc_ct_bytes)[..], rc_k[..], "case {i}: ours(rc c)");
        let ours_ct_rc = Array::try_from(&ours_ct[..]).unwrap();
        if i % 4 == 0 {
            assert_eq!(rc_dk.decapsulate(&ours_ct_rc)[..], ours_k[..], "case {i}: rc(our c)");
            rc_decaps += 1;
        }

        // Every 10th case: our ek parses in RustCrypto, and RustCrypto loaded from our expanded
        // dk decapsulates our ciphertext.
        if i % 10 == 0 {
            let rc_ek2 = RcEk::new(&Array::try_from(&ours_pk[..]).unwrap()).unwrap();
            assert_eq!(&rc_ek2, rc_ek, "case {i}: ek parse");
            #[allow(deprecated)]
            let rc_dk2 =
                RcDk::from_expanded_bytes(&Array::try_from(&ours_sk.secret_bytes()[..]).unwrap())
                    .unwrap();
            assert_eq!(rc_dk2.decapsulate(&ours_ct_rc)[..], ours_k[..], "case {i}: rc(our dk)");
        }

        // Implicit rejection: flip one bit (position varies per case) in c.
        let mut bad = *ours_ct;
        let pos = (i * 7919) % MLKEM_CT_LEN;
        bad[pos] ^= 1 << (i % 8);
        let ours_rej = ours_sk.decapsulate(&bad);
        assert_ne!(ours_rej[..], ours_k[..], "case {i}: corrupted c decapsulated to k");
        if i % 2 == 0 {
            let rc_rej = rc_dk.decapsulate(&Array::try_from(&bad[..]).unwrap());
            assert_eq!(ours_rej[..], rc_rej[..], "case {i}: implicit rejection differs");
            rc_decaps += 1;
        }
        ran += 1;
    }
    assert_eq!((ran, rc_decaps), (204, 51 + 102));
    eprintln!("differential ml-kem-1024: {ran} cases, {rc_decaps} RustCrypto decapsulations");
}

// ---------------------------------------------------------------------------------------------
// Wrapper-level properties
// ---------------------------------------------------------------------------------------------

/// X25519 DH is symmetric, and the cached public key is the scalar multiplication of the base
/// point (RFC 7748 §6.1), here checked against RFC 7748 §6.1's Alice/Bob example.
#[test]
fn x25519_dh_symmetric() {
    let a_sk: [u8; 32] =
        arr(&unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).unwrap();
    let b_sk: [u8; 32] =
        arr(&unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")).unwrap();
    let (a, b) = (X25519Secret::from_bytes(&a_sk), X25519Secret::from_bytes(&b_sk));
    assert_eq!(
        a.public()[..],
        unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        b.public()[..],
        unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let k = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(a.dh(b.public()).unwrap()[..], k);
    assert_eq!(b.dh(a.public()).unwrap()[..], k);

    let mut rng = <rand::rngs::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(25519);
    let mut ran = 1usize;
    for _ in 0..50 {
        let (x, y) = (X25519Secret::generate(&mut rng), X25519Secret::generate(&mut rng));
        assert_eq!(*x.dh(y.public()).unwrap(), *y.dh(x.public()).unwrap());
        ran += 1;
    }
    assert_eq!(ran, 51);
}

/// `mac_verify` rejects every single-bit flip of a correct 32-byte tag (all 256 positions).
#[test]
fn mac_verify_rejects_every_bit_flip() {
    let key = b"parley mac key";
    let parts: [&[u8]; 3] = [b"header", b"", b"body"];
    let tag = hmac_sha256(key, &parts);
    let keyed = hmac_keyed(key);
    let with_parts = || {
        let mut m = keyed.clone();
        for p in parts {
            m.update(p);
        }
        m
    };
    assert!(mac_verify(with_parts(), &tag).is_ok());
    let mut flips = 0usize;
    for bit in 0..256 {
        let mut t = tag;
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(mac_verify(with_parts(), &t).is_err(), "bit {bit} flip accepted");
        flips += 1;
    }
    assert_eq!(flips, 256);
}

/// RFC 5869 Appendix A.1 (test case 1) as a KAT of `hkdf_sha256` and of `hkdf_expand` with the
/// published PRK; and `hkdf_sha256` with the IKM split into parts (at every split point, and into
/// single bytes) equals the concatenated IKM.
#[test]
fn hkdf_rfc5869_a1_and_ikm_parts() {
    let ikm = [0x0bu8; 22];
    let salt = unhex("000102030405060708090a0b0c");
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    let prk: [u8; 32] =
        arr(&unhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")).unwrap();
    let okm = unhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );

    let mut out = [0u8; 42];
    hkdf_sha256(&salt, &[&ikm], &info, &mut out).unwrap();
    assert_eq!(out[..], okm);
    assert_eq!(hmac_sha256(&salt, &[&ikm]), prk, "RFC 5869 A.1 PRK");
    let mut out2 = [0u8; 42];
    hkdf_expand(&prk, &info, &mut out2).unwrap();
    assert_eq!(out2[..], okm);

    let mut ran = 0usize;
    for split in 0..=ikm.len() {
        let mut o = [0u8; 42];
        hkdf_sha256(&salt, &[&ikm[..split], &ikm[split..]], &info, &mut o).unwrap();
        assert_eq!(o[..], okm, "split at {split}");
        ran += 1;
    }
    let bytes: Vec<&[u8]> = ikm.chunks(1).collect();
    let mut o = [0u8; 42];
    hkdf_sha256(&salt, &bytes, &info, &mut o).unwrap();
    assert_eq!(o[..], okm, "one part per byte");
    let mut o = [0u8; 42];
    hkdf_sha256(&salt, &[&[], &ikm, &[]], &info, &mut o).unwrap();
    assert_eq!(o[..], okm, "empty parts");
    assert_eq!(ran, 23);
}
