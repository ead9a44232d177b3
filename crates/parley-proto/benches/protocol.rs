//! Parley protocol benchmarks: one criterion binary, so that every ratio in docs/BENCHMARKS.md
//! comes from one run on one machine.
//!
//! * `steady/*`: one message in an established session, same direction (no DH ratchet step);
//! * `pingpong/*`: one message per iteration, direction alternating, so every message makes the
//!   receiver take a DH ratchet step (times are per message: encrypt by one side + decrypt by
//!   the other);
//! * `setup/*`: PQXDH session setup (bundle validation excluded; it is `setup/parley_validate`);
//! * `primitives/*`: the primitives alone;
//! * `franking/*`: franking's `seal`, `open` and server tag, without the ratchet.
//!
//! `*/floor*` benches make exactly the primitive calls of the construction they shadow (read
//! off `src/ratchet.rs`, `src/pqxdh.rs`, `src/keys.rs`), on preallocated buffers, with no
//! encoding, allocation or state handling: the cost no implementation of the same construction
//! can go below. See docs/BENCHMARKS.md for the list per bench and the results.

// Benchmarks abort on any failure; unwrap/expect and indexing are fine here (the workspace
// denies them for library code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use aes::cipher::{InnerIvInit, KeyIvInit, StreamCipher};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use parley_proto::{
    Accepted, AccountIdentity, DOMAIN_AD, DOMAIN_DEVICE_CERT, DOMAIN_HANDSHAKE_ID,
    DeviceCertificate, DeviceIdentity, INFO_HEADER_KEYS, INFO_MESSAGE_KEYS, INFO_PQXDH,
    INFO_RATCHET, PrekeyBundle, PrekeyBundleIn, PrekeyStore, Session, initiate,
};
use rand_core::Rng;
use sha2::Digest;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type ThreadRng = rand::rngs::ThreadRng;

const NOW: u64 = 1_800_000_000;
const SIZES: [(&str, usize); 2] = [("100B", 100), ("1KiB", 1024)];
/// What `parley_proto::padded_len` gives for 100 B and 1 KiB.
const PADDED: [usize; 2] = [128, 2048];
const PINGPONG_LEN: usize = 100;
const PINGPONG_PADDED: usize = 128;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(40)
        .noise_threshold(0.05)
}

// =============================================================================================
// Parley fixtures
// =============================================================================================

struct Party {
    account: AccountIdentity,
    device: DeviceIdentity,
    cert: DeviceCertificate,
}

fn party(rng: &mut ThreadRng) -> Party {
    let account = AccountIdentity::generate(rng);
    let device = DeviceIdentity::generate(rng);
    let cert = account.certify(1, device.public());
    Party { account, device, cert }
}

/// A responder with a fresh prekey store holding one signed prekey, one last-resort KEM prekey,
/// one one-time X25519 prekey and one one-time KEM prekey, and the validated bundle that uses
/// the one-time keys (the common case: 4 DH, one-time ML-KEM key).
struct Responder {
    store: PrekeyStore,
    bundle: PrekeyBundle,
}

fn bundle_in(rng: &mut ThreadRng, bob: &Party) -> (PrekeyStore, PrekeyBundleIn) {
    let mut store = PrekeyStore::new();
    let spk = store.generate_signed_prekey(rng, NOW, &bob.device).unwrap();
    store.generate_last_resort_kem(rng, NOW, &bob.device).unwrap();
    let (opks, kems) = store.generate_one_time(rng, &bob.device, 1).unwrap();
    let bundle = PrekeyBundleIn::from_parts(
        bob.cert.encode(),
        spk.encode(),
        kems[0].encode(),
        Some(opks[0].encode()),
    );
    (store, bundle)
}

fn responder(rng: &mut ThreadRng, bob: &Party) -> Responder {
    let (store, bundle) = bundle_in(rng, bob);
    let bundle = bundle.validate(Some(bob.account.public())).unwrap();
    Responder { store, bundle }
}

/// An established pair: A→B (initial), B→A, A→B; after this A→B messages are steady-state
/// (same chain) and every direction change is a DH ratchet step.
fn parley_pair(rng: &mut ThreadRng) -> (Session, Session) {
    let alice = party(rng);
    let bob = party(rng);
    let Responder { mut store, bundle } = responder(rng, &bob);
    let mut a = initiate(rng, &alice.device, &alice.cert, &bundle).unwrap();
    let m1 = a.encrypt(rng, b"m1", b"").unwrap();
    let Accepted { session: mut b, first } =
        store.accept(rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
    assert_eq!(first.plaintext(), b"m1");
    let m2 = b.encrypt(rng, b"m2", b"").unwrap();
    assert_eq!(a.decrypt_any(rng, &m2, b"").unwrap().plaintext(), b"m2");
    let m3 = a.encrypt(rng, b"m3", b"").unwrap();
    assert_eq!(b.decrypt_any(rng, &m3, b"").unwrap().plaintext(), b"m3");
    assert!(!a.is_pending_handshake());
    (a, b)
}

// =============================================================================================
// Vodozemac fixtures
// =============================================================================================

mod olm {
    use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};

    /// Bob's account with one fresh one-time key (its public part returned).
    pub(crate) fn bob() -> (Account, vodozemac::Curve25519PublicKey) {
        let mut bob = Account::new();
        let otk = bob.generate_one_time_keys(1).created[0];
        bob.mark_keys_as_published();
        (bob, otk)
    }

    /// Outbound session + first (pre-key) message + inbound session from it.
    pub(crate) fn setup(
        alice: &Account,
        bob: &mut Account,
        otk: vodozemac::Curve25519PublicKey,
        plaintext: &[u8],
    ) -> (Session, Session) {
        let mut a = alice
            .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
            .unwrap();
        let OlmMessage::PreKey(m) = a.encrypt(plaintext).unwrap() else { panic!("not pre-key") };
        let res = bob
            .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
            .unwrap();
        (a, res.session)
    }

    /// Established pair, same message flow as `parley_pair`.
    pub(crate) fn pair() -> (Session, Session) {
        let alice = Account::new();
        let (mut bob, otk) = bob();
        let (mut a, mut b) = setup(&alice, &mut bob, otk, b"m1");
        let m2 = b.encrypt(b"m2").unwrap();
        assert_eq!(a.decrypt(&m2).unwrap(), b"m2");
        let m3 = a.encrypt(b"m3").unwrap();
        assert!(matches!(m3, OlmMessage::Normal(_)));
        assert_eq!(b.decrypt(&m3).unwrap(), b"m3");
        (a, b)
    }
}

// =============================================================================================
// Floors: the primitive calls, alone
// =============================================================================================

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hmac_verify(key: &[u8; 32], parts: &[&[u8]], tag: &[u8; 32]) -> bool {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

fn hkdf_expand<const N: usize>(prk: &[u8; 32], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    hkdf::Hkdf::<sha2::Sha256>::from_prk(prk).unwrap().expand(info, &mut out).unwrap();
    out
}

fn hkdf_full<const N: usize>(salt: &[u8], ikm: &[&[u8]], info: &[u8]) -> [u8; N] {
    let mut ext = hkdf::HkdfExtract::<sha2::Sha256>::new(Some(salt));
    for p in ikm {
        ext.input_ikm(p);
    }
    let (_prk, hk) = ext.finalize();
    let mut out = [0u8; N];
    hk.expand(info, &mut out).unwrap();
    out
}

fn aes_ctr(key: &[u8; 32], iv: &[u8; 16], buf: &mut [u8]) {
    let mut c = Aes256Ctr::new(key.into(), iv.into());
    c.apply_keystream(buf);
}

/// AES-256-CTR under a schedule expanded beforehand (a header key's).
fn aes_ctr_keyed(key: &aes::Aes256Enc, iv: &[u8; 16], buf: &mut [u8]) {
    let core =
        ctr::CtrCore::<&aes::Aes256Enc, ctr::flavors::Ctr128BE>::inner_iv_init(key, iv.into());
    let mut c = aes::cipher::StreamCipherCoreWrapper::from_core(core);
    c.apply_keystream(buf);
}

/// HMAC from a keyed state (a header key's), cloned.
fn hmac_from(keyed: &HmacSha256, parts: &[&[u8]]) -> HmacSha256 {
    let mut m = keyed.clone();
    for p in parts {
        m.update(p);
    }
    m
}

/// KDF_CK: MK = HMAC(CK, 0x01), CK' = HMAC(CK, 0x02), from one keyed state.
fn kdf_ck(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let keyed = HmacSha256::new_from_slice(ck).unwrap();
    let mk = hmac_from(&keyed, &[&[0x01]]).finalize().into_bytes().into();
    let next = hmac_from(&keyed, &[&[0x02]]).finalize().into_bytes().into();
    (next, mk)
}

fn x25519_keygen(rng: &mut ThreadRng) -> (x25519_dalek::StaticSecret, [u8; 32]) {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let s = x25519_dalek::StaticSecret::from(seed);
    let p = x25519_dalek::PublicKey::from(&s).to_bytes();
    (s, p)
}

/// X25519 as the construction computes it: libcrux's HACL* `ecdh` (rejects an all-zero result).
fn x25519_dh(s: &x25519_dalek::StaticSecret, their: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    assert!(libcrux_curve25519::ecdh(&mut out, their, &s.to_bytes()).is_ok());
    out
}

/// X25519 with dalek's Montgomery ladder, for comparison.
fn x25519_dh_dalek(s: &x25519_dalek::StaticSecret, their: &[u8; 32]) -> [u8; 32] {
    let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(*their));
    assert!(shared.was_contributory());
    shared.to_bytes()
}

/// A header key as the construction keeps it: its encryption subkey's AES schedule and its MAC
/// subkey's keyed HMAC state.
#[derive(Clone)]
struct HeaderSubkeys {
    enc: aes::Aes256Enc,
    mac: HmacSha256,
}

/// HeaderKey::new: the two 32-byte subkeys of a header key (HKDF-Expand, 64 bytes), the AES key
/// schedule and the keyed HMAC state.
fn header_subkeys(raw: &[u8; 32]) -> HeaderSubkeys {
    use aes::cipher::KeyInit as _;
    let okm: [u8; 64] = hkdf_expand(raw, INFO_HEADER_KEYS);
    let enc: [u8; 32] = okm[..32].try_into().unwrap();
    HeaderSubkeys {
        enc: aes::Aes256Enc::new(&enc.into()),
        mac: HmacSha256::new_from_slice(&okm[32..]).unwrap(),
    }
}

/// KDF_RK_HE: HKDF(salt = RK, ikm = DH output, 96 bytes) then HeaderKey::new on the third part.
fn kdf_rk_he(rk: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32], HeaderSubkeys) {
    let okm: [u8; 96] = hkdf_full(rk, &[dh], INFO_RATCHET);
    let nhk = header_subkeys(okm[64..].try_into().unwrap());
    (okm[..32].try_into().unwrap(), okm[32..64].try_into().unwrap(), nhk)
}

/// The symmetric state of one direction of a session, as the floor sees it.
#[derive(Clone)]
struct FloorChain {
    /// Sender's chain key.
    cks: [u8; 32],
    /// Receiver's chain key (the same chain, one step behind after each encrypt).
    ckr: [u8; 32],
    hk: HeaderSubkeys,
    dh_pub: [u8; 32],
    ad_hash: [u8; 32],
    header: [u8; 88],
    tag: [u8; 32],
}

impl FloorChain {
    fn new() -> Self {
        Self {
            cks: [1; 32],
            ckr: [1; 32],
            hk: header_subkeys(&[2; 32]),
            dh_pub: [4; 32],
            ad_hash: [5; 32],
            header: [0; 88],
            tag: [0; 32],
        }
    }

    /// RatchetEncryptHE's primitive calls: KDF_CK (2 HMAC, one key setup), 16 random bytes,
    /// header AES-CTR (40 B, prepared schedule) + HMAC (56 B, prepared keyed state),
    /// HKDF-Expand(MK, 80), body AES-CTR, body HMAC.
    fn encrypt(&mut self, rng: &mut ThreadRng, body: &mut [u8]) {
        let mk;
        (self.cks, mk) = kdf_ck(&self.cks);
        let (nonce, rest) = self.header.split_at_mut(16);
        rng.fill_bytes(nonce);
        let (hct, htag) = rest.split_at_mut(40);
        hct[..32].copy_from_slice(&self.dh_pub);
        aes_ctr_keyed(&self.hk.enc, nonce[..].try_into().unwrap(), hct);
        let t: [u8; 32] = hmac_from(&self.hk.mac, &[nonce, hct]).finalize().into_bytes().into();
        htag.copy_from_slice(&t);
        let okm: [u8; 80] = hkdf_expand(&mk, INFO_MESSAGE_KEYS);
        let (enc, mac, iv) = split_body_keys(&okm);
        aes_ctr(enc, iv, body);
        let ad_len = 0u32.to_be_bytes();
        self.tag = hmac(mac, &[&[0x10, 0x01], &self.ad_hash, &ad_len, b"", &self.header, body]);
    }

    /// RatchetDecryptHE's primitive calls for a message of the current receiving chain:
    /// header HMAC verify (56 B) + AES-CTR (40 B), KDF_CK, HKDF-Expand(MK, 80), body HMAC
    /// verify, body AES-CTR.
    fn decrypt(&mut self, body: &mut [u8]) {
        let mut plain_header = [0u8; 40];
        self.open_header(&mut plain_header);
        self.decrypt_body(body);
    }

    fn open_header(&self, out: &mut [u8; 40]) {
        let (nonce, rest) = self.header.split_at(16);
        let (hct, htag) = rest.split_at(40);
        assert!(hmac_from(&self.hk.mac, &[nonce, hct]).verify_slice(htag).is_ok());
        out.copy_from_slice(hct);
        aes_ctr_keyed(&self.hk.enc, nonce.try_into().unwrap(), out);
    }

    fn decrypt_body(&mut self, body: &mut [u8]) {
        let mk;
        (self.ckr, mk) = kdf_ck(&self.ckr);
        let okm: [u8; 80] = hkdf_expand(&mk, INFO_MESSAGE_KEYS);
        let (enc, mac, iv) = split_body_keys(&okm);
        let ad_len = 0u32.to_be_bytes();
        assert!(hmac_verify(
            mac,
            &[&[0x10, 0x01], &self.ad_hash, &ad_len, b"", &self.header, body],
            &self.tag
        ));
        aes_ctr(enc, iv, body);
    }

    /// A failed header trial: HMAC over the 56 header bytes under another prepared key.
    fn failed_trial(&self, other: &HeaderSubkeys) {
        let (nonce, rest) = self.header.split_at(16);
        let (hct, htag) = rest.split_at(40);
        assert!(hmac_from(&other.mac, &[nonce, hct]).verify_slice(htag).is_err());
    }
}

fn split_body_keys(okm: &[u8; 80]) -> (&[u8; 32], &[u8; 32], &[u8; 16]) {
    (
        okm[..32].try_into().unwrap(),
        okm[32..64].try_into().unwrap(),
        okm[64..80].try_into().unwrap(),
    )
}

/// The primitive calls of DHRatchetHE on receive (Double Ratchet §4.2): DH, KDF_RK_HE (HKDF 96 +
/// header expand), keygen, DH, KDF_RK_HE.
fn floor_dh_ratchet(
    rng: &mut ThreadRng,
    rk: &[u8; 32],
    mine: &x25519_dalek::StaticSecret,
    their: &[u8; 32],
) -> [u8; 32] {
    let dh1 = x25519_dh(mine, their);
    let (rk1, _ckr, _nhkr) = kdf_rk_he(rk, &dh1);
    let (s, _p) = x25519_keygen(rng);
    let dh2 = x25519_dh(&s, their);
    let (rk2, _cks, _nhks) = kdf_rk_he(&rk1, &dh2);
    black_box(rk2)
}

/// Inputs of the setup floors, built once (sizes as on the wire).
struct SetupFloor {
    ik_a: x25519_dalek::StaticSecret,
    ik_b: x25519_dalek::StaticSecret,
    ik_b_pub: [u8; 32],
    spk_b: x25519_dalek::StaticSecret,
    spk_b_pub: [u8; 32],
    opk_b: x25519_dalek::StaticSecret,
    opk_b_pub: [u8; 32],
    ek_a_pub: [u8; 32],
    kem_pk: libcrux_ml_kem::mlkem1024::MlKem1024PublicKey,
    kem_sk: libcrux_ml_kem::mlkem1024::MlKem1024PrivateKey,
    kem_ct: libcrux_ml_kem::mlkem1024::MlKem1024Ciphertext,
    cert_a: Vec<u8>,
    cert_b: Vec<u8>,
    /// DOMAIN_DEVICE_CERT ‖ body of cert_a (the message that is signed).
    cert_a_signed: Vec<u8>,
    cert_a_sig: [u8; 64],
    account_a: [u8; 32],
    device_a_signing: [u8; 32],
    ratchet_pub_a: [u8; 32],
}

impl SetupFloor {
    fn new(rng: &mut ThreadRng) -> Self {
        let (ik_a, _) = x25519_keygen(rng);
        let (ik_b, ik_b_pub) = x25519_keygen(rng);
        let (spk_b, spk_b_pub) = x25519_keygen(rng);
        let (opk_b, opk_b_pub) = x25519_keygen(rng);
        let (_, ek_a_pub) = x25519_keygen(rng);
        let (_, ratchet_pub_a) = x25519_keygen(rng);
        let mut seed = [0u8; 64];
        rng.fill_bytes(&mut seed);
        let (kem_sk, kem_pk) = libcrux_ml_kem::mlkem1024::generate_key_pair(seed).into_parts();
        let (kem_ct, _) = libcrux_ml_kem::mlkem1024::encapsulate(&kem_pk, [7; 32]);
        let alice = party(rng);
        let bob = party(rng);
        let cert_a = alice.cert.encode();
        let (body, sig) = cert_a.split_at(cert_a.len() - 64);
        let mut cert_a_signed = DOMAIN_DEVICE_CERT.to_vec();
        cert_a_signed.extend_from_slice(body);
        Self {
            ik_a,
            ik_b,
            ik_b_pub,
            spk_b,
            spk_b_pub,
            opk_b,
            opk_b_pub,
            ek_a_pub,
            kem_pk,
            kem_sk,
            kem_ct,
            cert_a_sig: sig.try_into().unwrap(),
            cert_a_signed,
            cert_a: cert_a.clone(),
            cert_b: bob.cert.encode(),
            account_a: *alice.account.public().as_bytes(),
            device_a_signing: *alice.device.public().signing(),
            ratchet_pub_a,
        }
    }

    fn ad_hash(&self) -> [u8; 32] {
        let la = (self.cert_a.len() as u32).to_be_bytes();
        let lb = (self.cert_b.len() as u32).to_be_bytes();
        sha2::Sha256::new()
            .chain_update(DOMAIN_AD)
            .chain_update(la)
            .chain_update(&self.cert_a)
            .chain_update(lb)
            .chain_update(&self.cert_b)
            .finalize()
            .into()
    }

    fn handshake_id(&self, ek: &[u8; 32]) -> [u8; 32] {
        sha2::Sha256::new()
            .chain_update(DOMAIN_HANDSHAKE_ID)
            .chain_update(ek)
            .chain_update(self.kem_ct.as_slice())
            .finalize()
            .into()
    }

    /// The PQXDH KDF: HKDF(salt 0^32, F ‖ DH1..DH4 ‖ SS, 96) + two header-key expansions.
    fn kdf(dhs: &[&[u8]; 4], ss: &[u8; 32]) -> [u8; 32] {
        let f = [0xFF; 32];
        let okm: [u8; 96] =
            hkdf_full(&[0; 32], &[&f, dhs[0], dhs[1], dhs[2], dhs[3], ss], INFO_PQXDH);
        black_box(header_subkeys(okm[32..64].try_into().unwrap()));
        black_box(header_subkeys(okm[64..].try_into().unwrap()));
        okm[..32].try_into().unwrap()
    }

    /// `initiate` + the first `encrypt`: EK keygen, 4 DH, 32 random bytes, ML-KEM public-key
    /// check + encapsulation, PQXDH KDF, handshake id (SHA-256 over 1.6 KB), AD hash (SHA-256
    /// over both certificates), RatchetInitAliceHE (keygen, DH, KDF_RK_HE), symmetric encrypt.
    fn initiator(&self, rng: &mut ThreadRng, chain: &mut FloorChain, body: &mut [u8]) {
        let (ek, ek_pub) = x25519_keygen(rng);
        let dh1 = x25519_dh(&self.ik_a, &self.spk_b_pub);
        let dh2 = x25519_dh(&ek, &self.ik_b_pub);
        let dh3 = x25519_dh(&ek, &self.spk_b_pub);
        let dh4 = x25519_dh(&ek, &self.opk_b_pub);
        let mut m = [0u8; 32];
        rng.fill_bytes(&mut m);
        assert!(libcrux_ml_kem::mlkem1024::validate_public_key(&self.kem_pk));
        let (ct, ss) = libcrux_ml_kem::mlkem1024::encapsulate(&self.kem_pk, m);
        black_box(ct);
        let rk = Self::kdf(&[&dh1, &dh2, &dh3, &dh4], &ss);
        black_box(self.handshake_id(&ek_pub));
        black_box(self.ad_hash());
        let (dhs, _) = x25519_keygen(rng);
        let dh = x25519_dh(&dhs, &self.spk_b_pub);
        black_box(kdf_rk_he(&rk, &dh));
        chain.encrypt(rng, body);
    }

    /// `accept`: handshake id, certificate check (decompress the device signing key, strict
    /// Ed25519 verification under the account key), 4 DH, ML-KEM decapsulation, PQXDH KDF, AD
    /// hash, then the first message: header open, DH ratchet step, body.
    fn responder(&self, rng: &mut ThreadRng, chain: &mut FloorChain, body: &mut [u8]) {
        black_box(self.handshake_id(&self.ek_a_pub));
        let dk = ed25519_dalek::VerifyingKey::from_bytes(&self.device_a_signing).unwrap();
        black_box(dk.is_weak());
        let ak = ed25519_dalek::VerifyingKey::from_bytes(&self.account_a).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&self.cert_a_sig);
        ak.verify_strict(&self.cert_a_signed, &sig).unwrap();
        let dh1 = x25519_dh(&self.spk_b, &self.ik_b_pub);
        let dh2 = x25519_dh(&self.ik_b, &self.ek_a_pub);
        let dh3 = x25519_dh(&self.spk_b, &self.ek_a_pub);
        let dh4 = x25519_dh(&self.opk_b, &self.ek_a_pub);
        let ss = libcrux_ml_kem::mlkem1024::decapsulate(&self.kem_sk, &self.kem_ct);
        let rk = Self::kdf(&[&dh1, &dh2, &dh3, &dh4], &ss);
        black_box(self.ad_hash());
        let mut h = [0u8; 40];
        chain.open_header(&mut h);
        black_box(floor_dh_ratchet(rng, &rk, &self.spk_b, &self.ratchet_pub_a));
        chain.decrypt_body(body);
    }
}

// =============================================================================================
// Benches
// =============================================================================================

fn steady(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("steady");
    for ((label, len), padded) in SIZES.into_iter().zip(PADDED) {
        assert_eq!(parley_proto::padded_len(len), Some(padded));
        let pt = vec![0x61u8; len];

        let (mut a, mut b) = parley_pair(&mut rng);
        g.bench_function(format!("parley/{label}"), |bench| {
            bench.iter(|| {
                let m = a.encrypt(&mut rng, black_box(&pt), b"").unwrap();
                let d = b.decrypt_any(&mut rng, &m, b"").unwrap();
                debug_assert_eq!(d.plaintext(), &pt[..]);
                black_box(d)
            });
        });
        assert_eq!(b.skipped_key_count(), 0);

        let mut chain = FloorChain::new();
        let mut body = vec![0u8; padded];
        g.bench_function(format!("floor/{label}"), |bench| {
            bench.iter(|| {
                chain.encrypt(&mut rng, black_box(&mut body));
                chain.decrypt(black_box(&mut body));
            });
        });

        let (mut oa, mut ob) = olm::pair();
        g.bench_function(format!("vodozemac/{label}"), |bench| {
            bench.iter(|| {
                let m = oa.encrypt(black_box(&pt)).unwrap();
                let d = ob.decrypt(&m).unwrap();
                debug_assert_eq!(d, pt);
                black_box(d)
            });
        });
    }
    g.finish();
}

fn pingpong(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("pingpong");
    let pt = vec![0x61u8; PINGPONG_LEN];

    let (mut a, mut b) = parley_pair(&mut rng);
    // After parley_pair the last message went A→B, so B sends first.
    let mut b_sends = true;
    g.bench_function("parley", |bench| {
        bench.iter(|| {
            let (tx, rx) = if b_sends { (&mut b, &mut a) } else { (&mut a, &mut b) };
            b_sends = !b_sends;
            let m = tx.encrypt(&mut rng, black_box(&pt), b"").unwrap();
            black_box(rx.decrypt_any(&mut rng, &m, b"").unwrap())
        });
    });
    assert_eq!(a.skipped_key_count() + b.skipped_key_count(), 0);

    let mut chain = FloorChain::new();
    let mut body = vec![0u8; PINGPONG_PADDED];
    let (rx_secret, _) = x25519_keygen(&mut rng);
    let (_, tx_pub) = x25519_keygen(&mut rng);
    let rk = [8u8; 32];
    let other_hk = header_subkeys(&[9; 32]);
    g.bench_function("floor", |bench| {
        bench.iter(|| {
            chain.encrypt(&mut rng, black_box(&mut body));
            // Receive: one failed trial with the current HKr, the open with NHKr, the DH
            // ratchet step, then the body.
            chain.failed_trial(&other_hk);
            let mut h = [0u8; 40];
            chain.open_header(&mut h);
            black_box(floor_dh_ratchet(&mut rng, &rk, &rx_secret, &tx_pub));
            chain.decrypt_body(black_box(&mut body));
        });
    });

    let (mut oa, mut ob) = olm::pair();
    let mut b_sends = true;
    g.bench_function("vodozemac", |bench| {
        bench.iter(|| {
            let (tx, rx) = if b_sends { (&mut ob, &mut oa) } else { (&mut oa, &mut ob) };
            b_sends = !b_sends;
            let m = tx.encrypt(black_box(&pt)).unwrap();
            black_box(rx.decrypt(&m).unwrap())
        });
    });
    g.finish();
}

fn setup(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("setup");
    let alice = party(&mut rng);
    let bob = party(&mut rng);
    let pt = vec![0x61u8; PINGPONG_LEN];

    // Full setup: initiate + first encrypt + accept (which decrypts the first message).
    g.bench_function("parley", |bench| {
        bench.iter_batched(
            || responder(&mut rand::rng(), &bob),
            |Responder { mut store, bundle }| {
                let mut rng = rand::rng();
                let mut a = initiate(&mut rng, &alice.device, &alice.cert, &bundle).unwrap();
                let m1 = a.encrypt(&mut rng, black_box(&pt), b"").unwrap();
                let acc = store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
                (a, acc, store)
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("parley_initiator", |bench| {
        bench.iter_batched(
            || responder(&mut rand::rng(), &bob),
            |r| {
                let mut rng = rand::rng();
                let mut a = initiate(&mut rng, &alice.device, &alice.cert, &r.bundle).unwrap();
                let m1 = a.encrypt(&mut rng, black_box(&pt), b"").unwrap();
                (a, m1, r)
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("parley_responder", |bench| {
        bench.iter_batched(
            || {
                let mut rng = rand::rng();
                let r = responder(&mut rng, &bob);
                let mut a = initiate(&mut rng, &alice.device, &alice.cert, &r.bundle).unwrap();
                let m1 = a.encrypt(&mut rng, &pt, b"").unwrap();
                (r.store, m1)
            },
            |(mut store, m1)| {
                let mut rng = rand::rng();
                let acc = store.accept(&mut rng, NOW, &bob.device, &bob.cert, &m1, b"").unwrap();
                (acc, store)
            },
            BatchSize::SmallInput,
        );
    });
    // Bundle validation, excluded from the setups above: certificate + 2 prekey signatures +
    // ML-KEM public-key check.
    g.bench_function("parley_validate", |bench| {
        bench.iter_batched(
            || bundle_in(&mut rand::rng(), &bob),
            |(store, b)| (b.validate(Some(bob.account.public())).unwrap(), store),
            BatchSize::SmallInput,
        );
    });

    let f = SetupFloor::new(&mut rng);
    let mut body = vec![0u8; PINGPONG_PADDED];
    let mut chain = FloorChain::new();
    g.bench_function("floor", |bench| {
        bench.iter(|| {
            f.initiator(&mut rng, &mut chain, black_box(&mut body));
            f.responder(&mut rng, &mut chain, black_box(&mut body));
        });
    });
    g.bench_function("floor_initiator", |bench| {
        bench.iter(|| f.initiator(&mut rng, &mut chain, black_box(&mut body)));
    });
    // The responder floor decrypts one message encrypted once, beforehand; each iteration
    // starts from a copy of that state (a ~300-byte and a 128-byte memcpy, in the timing).
    chain.ckr = chain.cks;
    chain.encrypt(&mut rng, &mut body);
    let (saved_chain, saved_body) = (chain.clone(), body.clone());
    g.bench_function("floor_responder", |bench| {
        bench.iter(|| {
            let mut ch = saved_chain.clone();
            body.copy_from_slice(&saved_body);
            f.responder(&mut rng, &mut ch, black_box(&mut body));
        });
    });

    // Vodozemac: create_outbound_session + first encrypt (pre-key message) +
    // create_inbound_session (which decrypts it). Bob's account and one-time key are made
    // outside the timed part.
    let olm_alice = vodozemac::olm::Account::new();
    g.bench_function("vodozemac", |bench| {
        bench.iter_batched(
            olm::bob,
            |(mut bob, otk)| {
                let s = olm::setup(&olm_alice, &mut bob, otk, black_box(&pt));
                (s, bob)
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("primitives");

    g.bench_function("x25519_keygen", |b| b.iter(|| black_box(x25519_keygen(&mut rng))));
    let (s, _) = x25519_keygen(&mut rng);
    let (_, p) = x25519_keygen(&mut rng);
    g.bench_function("x25519_dh", |b| b.iter(|| x25519_dh(black_box(&s), black_box(&p))));
    assert_eq!(x25519_dh(&s, &p), x25519_dh_dalek(&s, &p));
    g.bench_function("x25519_dh_dalek", |b| {
        b.iter(|| x25519_dh_dalek(black_box(&s), black_box(&p)))
    });

    // The same X25519 function computed on the Edwards form, where curve25519-dalek has an AVX2
    // backend (its Montgomery ladder is serial-only): u(k·P) does not depend on which of the two
    // Edwards lifts of u is taken. Twist points have no lift (`to_edwards` gives `None`) and would
    // need the ladder as a fallback. Candidate optimisation, see docs/BENCHMARKS.md.
    let sk = s.to_bytes();
    let via_edwards = |sk: [u8; 32], p: [u8; 32]| {
        let e = curve25519_dalek::MontgomeryPoint(p).to_edwards(0).unwrap();
        e.mul_clamped(sk).to_montgomery().to_bytes()
    };
    assert_eq!(via_edwards(sk, p), x25519_dh(&s, &p));
    g.bench_function("x25519_dh_via_edwards", |b| {
        b.iter(|| via_edwards(black_box(sk), black_box(p)))
    });

    let mut seed = [0u8; 64];
    rng.fill_bytes(&mut seed);
    g.bench_function("mlkem1024_keygen/libcrux", |b| {
        b.iter(|| libcrux_ml_kem::mlkem1024::generate_key_pair(black_box(seed)))
    });
    let (sk, pk) = libcrux_ml_kem::mlkem1024::generate_key_pair(seed).into_parts();
    g.bench_function("mlkem1024_validate_pk/libcrux", |b| {
        b.iter(|| libcrux_ml_kem::mlkem1024::validate_public_key(black_box(&pk)))
    });
    g.bench_function("mlkem1024_encaps/libcrux", |b| {
        b.iter(|| libcrux_ml_kem::mlkem1024::encapsulate(black_box(&pk), [3; 32]))
    });
    let (ct, ss) = libcrux_ml_kem::mlkem1024::encapsulate(&pk, [3; 32]);
    assert_eq!(libcrux_ml_kem::mlkem1024::decapsulate(&sk, &ct), ss);
    g.bench_function("mlkem1024_decaps/libcrux", |b| {
        b.iter(|| libcrux_ml_kem::mlkem1024::decapsulate(black_box(&sk), black_box(&ct)))
    });

    {
        use ml_kem::kem::{Decapsulate, KeyExport};
        use ml_kem::{DecapsulationKey, EncapsulationKey, MlKem1024, Seed};
        let seed = Seed::from(seed);
        g.bench_function("mlkem1024_keygen/ml-kem", |b| {
            b.iter(|| DecapsulationKey::<MlKem1024>::from_seed(black_box(seed)))
        });
        let dk = DecapsulationKey::<MlKem1024>::from_seed(seed);
        let ek = dk.encapsulation_key().clone();
        let ek_bytes = ek.to_bytes();
        // Decoding checks the key (FIPS 203 §7.2), as libcrux's validate_public_key does.
        g.bench_function("mlkem1024_validate_pk/ml-kem", |b| {
            b.iter(|| EncapsulationKey::<MlKem1024>::new(black_box(&ek_bytes)).unwrap())
        });
        let m = ml_kem::B32::from([3u8; 32]);
        g.bench_function("mlkem1024_encaps/ml-kem", |b| {
            b.iter(|| black_box(&ek).encapsulate_deterministic(&m))
        });
        let (ct, ss) = ek.encapsulate_deterministic(&m);
        assert_eq!(dk.decapsulate(&ct), ss);
        g.bench_function("mlkem1024_decaps/ml-kem", |b| {
            b.iter(|| black_box(&dk).decapsulate(black_box(&ct)))
        });
    }

    let key = [7u8; 32];
    let data = [1u8; 64];
    g.bench_function("hmac_sha256_64B", |b| b.iter(|| hmac(black_box(&key), &[&data])));
    g.bench_function("hkdf_sha256_96B", |b| {
        b.iter(|| hkdf_full::<96>(black_box(&key), &[&data[..32]], INFO_RATCHET))
    });
    g.bench_function("hkdf_expand_80B", |b| {
        b.iter(|| hkdf_expand::<80>(black_box(&key), INFO_MESSAGE_KEYS))
    });
    let mut buf = [0u8; 128];
    let iv = [0u8; 16];
    g.bench_function("aes256_ctr_128B", |b| {
        b.iter(|| aes_ctr(black_box(&key), &iv, black_box(&mut buf)))
    });
    let long = vec![0u8; 22 + 32 + 1568];
    g.bench_function("sha256_1622B", |b| b.iter(|| sha2::Sha256::digest(black_box(&long))));

    let ed = ed25519_dalek::SigningKey::from_bytes(&key);
    let vk = ed.verifying_key().to_bytes();
    let msg = [5u8; 128];
    let sig = ed25519_dalek::Signer::sign(&ed, &msg).to_bytes();
    g.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(black_box(&vk)).unwrap();
            vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig)).unwrap()
        })
    });
    g.bench_function("ed25519_decompress", |b| {
        b.iter(|| ed25519_dalek::VerifyingKey::from_bytes(black_box(&vk)).unwrap())
    });
    g.finish();
}

/// Franking alone (no ratchet): `seal` (encode a body with 100 bytes of text, draw NF, one
/// HMAC-SHA256), `open` (one HMAC-SHA256 verify, body decode, one copy) and the server's tag.
fn franking(c: &mut Criterion) {
    let mut rng = rand::rng();
    let mut g = c.benchmark_group("franking");
    let body = parley_proto::FrankedBody {
        message_id: "0123456789abcdef".into(),
        sent_at_ms: NOW * 1000,
        sender: "alice".into(),
        sender_device: 1,
        recipient: "bob".into(),
        seq: 41,
        prev: [7; 32],
        text: "x".repeat(PINGPONG_LEN).into(),
    };
    g.bench_function("seal_100B", |b| {
        b.iter(|| parley_proto::seal(&mut rng, black_box(&body)).unwrap())
    });
    let sealed = parley_proto::seal(&mut rng, &body).unwrap();
    g.bench_function("open_100B", |b| {
        b.iter(|| parley_proto::open(black_box(sealed.content()), sealed.tf()).unwrap())
    });
    let key = parley_proto::FrankingKey::generate(&mut rng);
    g.bench_function("server_tag", |b| {
        b.iter(|| {
            parley_proto::server_tag(&key, black_box(sealed.tf()), "alice", 1, "bob", NOW * 1000)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = steady, pingpong, setup, primitives, franking
}
criterion_main!(benches);
