//! The only module that names primitive crates. Everything above it works with byte arrays and
//! the secret newtypes defined here.
//!
//! Primitives and where they come from (docs/PROTOCOL.md §1):
//! * X25519 (RFC 7748): libcrux-curve25519 (HACL*, formally verified) for the shared secret,
//!   dalek's fixed-base tables for public keys; Ed25519 (RFC 8032): dalek;
//! * ML-KEM-1024 (FIPS 203): libcrux-ml-kem (formally verified; AVX2 at run time);
//! * HMAC-SHA256 (RFC 2104), HKDF-SHA256 (RFC 5869), SHA-256/SHA-512 (FIPS 180-4): RustCrypto;
//! * AES-256-CTR (NIST SP 800-38A): RustCrypto.

use aes::cipher::{InnerIvInit, KeyIvInit, StreamCipher, StreamCipherCoreWrapper};
use ed25519_dalek::Signer;
use hmac::{KeyInit, Mac};
use rand_core::CryptoRng;
use sha2::Digest;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// HMAC-SHA256 with a fixed key, kept so that the keyed state can be cloned per message.
pub(crate) type HmacSha256 = hmac::Hmac<sha2::Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
/// An AES-256 key with its schedule expanded once (SP 800-38A CTR only ever encrypts blocks), for
/// a key that encrypts many messages (a header key). Wiped on drop (`aes` feature `zeroize`).
pub(crate) type Aes256Key = aes::Aes256Enc;

/// X25519 public keys and shared secrets are 32 bytes (RFC 7748 §5).
pub(crate) const X25519_LEN: usize = 32;
/// Ed25519 public keys are 32 bytes, signatures 64 (RFC 8032 §5.1).
pub(crate) const ED25519_LEN: usize = 32;
/// Ed25519 signature length (RFC 8032 §5.1.6).
pub(crate) const SIG_LEN: usize = 64;
/// ML-KEM-1024 encapsulation key length (FIPS 203 Table 3: 384·k + 32, k = 4).
pub(crate) const MLKEM_PK_LEN: usize = 1568;
/// ML-KEM-1024 ciphertext length (FIPS 203 Table 3: 32·(du·k + dv), du = 11, dv = 5).
pub(crate) const MLKEM_CT_LEN: usize = 1568;
/// ML-KEM-1024 decapsulation key length (FIPS 203 Table 3: 768·k + 96).
pub(crate) const MLKEM_SK_LEN: usize = 3168;
/// ML-KEM key-generation seed (d || z), FIPS 203 Algorithm 19.
pub(crate) const MLKEM_KEYGEN_SEED_LEN: usize = 64;

/// An ML-KEM ciphertext with its shared secret.
pub(crate) type Encapsulated = (Box<[u8; MLKEM_CT_LEN]>, Zeroizing<[u8; 32]>);

/// A primitive refused its input. Deliberately opaque: callers map it to their own error
/// without saying which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CryptoError;

// ---------------------------------------------------------------------------------------------
// Hashes, MACs, KDFs
// ---------------------------------------------------------------------------------------------

/// SHA-256 over the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-512 over the concatenation of `parts`.
pub(crate) fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = sha2::Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A keyed HMAC-SHA256 state (RFC 2104). Cloning it skips the two key-block compressions.
pub(crate) fn hmac_keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail; the fallback keeps
    // the library free of `expect` and is never taken.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

/// HMAC-SHA256(key, concatenation of `parts`).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = hmac_keyed(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Finishes a MAC computation.
pub(crate) fn mac_finish(m: HmacSha256) -> [u8; 32] {
    m.finalize().into_bytes().into()
}

/// Checks a full-length (32-byte) tag in constant time.
pub(crate) fn mac_verify(m: HmacSha256, tag: &[u8; 32]) -> Result<(), CryptoError> {
    m.verify_slice(tag).map_err(|_| CryptoError)
}

/// Checks `tag == HMAC-SHA256(key, concatenation of parts)` in constant time (RFC 2104 with
/// `Mac::verify_slice`, which compares with `subtle`).
pub(crate) fn hmac_sha256_verify(key: &[u8], parts: &[&[u8]], tag: &[u8; 32]) -> bool {
    let mut m = hmac_keyed(key);
    for p in parts {
        m.update(p);
    }
    mac_verify(m, tag).is_ok()
}

/// HKDF-SHA256 (RFC 5869 §2.2 extract, §2.3 expand) with the input keying material given as
/// parts, so that callers need not concatenate secrets into a temporary buffer.
pub(crate) fn hkdf_sha256(
    salt: &[u8],
    ikm_parts: &[&[u8]],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let mut ext = hkdf::HkdfExtract::<sha2::Sha256>::new(Some(salt));
    for p in ikm_parts {
        ext.input_ikm(p);
    }
    let (_prk, hk) = ext.finalize();
    hk.expand(info, out).map_err(|_| CryptoError)
}

/// HKDF-Expand only (RFC 5869 §3.3: extract may be skipped when the input is already a
/// uniformly random key, as a message key from the symmetric ratchet is).
pub(crate) fn hkdf_expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(prk).map_err(|_| CryptoError)?;
    hk.expand(info, out).map_err(|_| CryptoError)
}

/// AES-256 in counter mode (SP 800-38A §6.5), 128-bit big-endian counter block starting at `iv`.
/// Encryption and decryption are the same operation.
pub(crate) fn aes256_ctr(key: &[u8; 32], iv: &[u8; 16], buf: &mut [u8]) {
    let mut c = Aes256Ctr::new(key.into(), iv.into());
    c.apply_keystream(buf);
}

/// Expands an AES-256 key schedule once (FIPS 197 §5.2), for [`aes256_ctr_keyed`].
pub(crate) fn aes256_key(key: &[u8; 32]) -> Aes256Key {
    Aes256Key::new(key.into())
}

/// [`aes256_ctr`] under an expanded key: the same keystream (SP 800-38A §6.5, 128-bit
/// big-endian counter from `iv`) without expanding the schedule again.
pub(crate) fn aes256_ctr_keyed(key: &Aes256Key, iv: &[u8; 16], buf: &mut [u8]) {
    let core = ctr::CtrCore::<&Aes256Key, ctr::flavors::Ctr128BE>::inner_iv_init(key, iv.into());
    let mut c = StreamCipherCoreWrapper::from_core(core);
    c.apply_keystream(buf);
}

/// Constant-time equality of two byte strings (lengths are public).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Fills a fresh array from the caller's RNG.
pub(crate) fn random_array<const N: usize, R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// X25519
// ---------------------------------------------------------------------------------------------

/// An X25519 private key with its public key cached (computing the public key is a fixed-base
/// scalar multiplication; it is done once, at generation or load).
pub(crate) struct X25519Secret {
    secret: x25519_dalek::StaticSecret,
    public: [u8; X25519_LEN],
}

impl X25519Secret {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new(random_array::<32, R>(rng));
        let s = Self::from_bytes(&seed);
        seed.zeroize();
        s
    }

    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The raw private scalar bytes; the one exit for serialization.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn public(&self) -> &[u8; X25519_LEN] {
        &self.public
    }

    /// X25519(self, their) (RFC 7748 §5, §6.1), computed with libcrux's formally verified
    /// HACL* implementation (faster than dalek's variable-base multiplication; the public key
    /// above uses dalek's fixed-base tables). An all-zero output means the peer sent a
    /// low-order point; it is rejected, as RFC 7748 §6.1 allows ("MAY check").
    pub(crate) fn dh(&self, their: &[u8; X25519_LEN]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut out = Zeroizing::new([0u8; 32]);
        let sk = self.secret_bytes();
        libcrux_curve25519::ecdh(&mut out, their, &sk).map_err(|_| CryptoError)?;
        Ok(out)
    }
}

impl Clone for X25519Secret {
    fn clone(&self) -> Self {
        Self { secret: self.secret.clone(), public: self.public }
    }
}

impl ZeroizeOnDrop for X25519Secret {}

// ---------------------------------------------------------------------------------------------
// Ed25519
// ---------------------------------------------------------------------------------------------

/// An Ed25519 signing key (RFC 8032 §5.1.5); dalek zeroizes it on drop.
pub(crate) struct Ed25519Secret {
    key: ed25519_dalek::SigningKey,
}

impl Ed25519Secret {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let seed = Zeroizing::new(random_array::<32, R>(rng));
        Self::from_bytes(&seed)
    }

    pub(crate) fn from_bytes(seed: &[u8; 32]) -> Self {
        Self { key: ed25519_dalek::SigningKey::from_bytes(seed) }
    }

    /// The 32-byte seed; the one exit for serialization.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    pub(crate) fn public(&self) -> [u8; ED25519_LEN] {
        self.key.verifying_key().to_bytes()
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; SIG_LEN] {
        self.key.sign(msg).to_bytes()
    }
}

impl Clone for Ed25519Secret {
    fn clone(&self) -> Self {
        Self { key: self.key.clone() }
    }
}

impl ZeroizeOnDrop for Ed25519Secret {}

/// Checks that 32 bytes are a valid, non-weak Ed25519 public key.
pub(crate) fn ed25519_check_public(pk: &[u8; ED25519_LEN]) -> Result<(), CryptoError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).map_err(|_| CryptoError)?;
    if vk.is_weak() {
        return Err(CryptoError);
    }
    Ok(())
}

/// Strict Ed25519 verification (RFC 8032 §5.1.7 with dalek's `verify_strict`: canonical `S`,
/// no small-order `A` or `R`).
pub(crate) fn ed25519_verify(
    pk: &[u8; ED25519_LEN],
    msg: &[u8],
    sig: &[u8; SIG_LEN],
) -> Result<(), CryptoError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).map_err(|_| CryptoError)?;
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    vk.verify_strict(msg, &sig).map_err(|_| CryptoError)
}

// ---------------------------------------------------------------------------------------------
// ML-KEM-1024
// ---------------------------------------------------------------------------------------------

/// An ML-KEM-1024 decapsulation key (FIPS 203 §7.1), zeroized on drop.
pub(crate) struct MlKemSecret {
    dk: Box<[u8; MLKEM_SK_LEN]>,
}

impl MlKemSecret {
    /// The raw decapsulation key; the one exit for serialization.
    pub(crate) fn secret_bytes(&self) -> &[u8; MLKEM_SK_LEN] {
        &self.dk
    }

    pub(crate) fn from_bytes(bytes: &[u8; MLKEM_SK_LEN]) -> Self {
        Self { dk: Box::new(*bytes) }
    }

    /// The decapsulation-key check of FIPS 203 §7.3 (the embedded H(ek) matches the embedded
    /// ek), done when a stored key is loaded.
    pub(crate) fn is_well_formed(&self) -> bool {
        let sk = libcrux_ml_kem::mlkem1024::MlKem1024PrivateKey::from(&*self.dk);
        let ok = libcrux_ml_kem::mlkem1024::portable::validate_private_key_only(&sk);
        let mut raw: [u8; MLKEM_SK_LEN] = sk.into();
        raw.zeroize();
        ok
    }

    /// True when this decapsulation key embeds `ek` (FIPS 203 Algorithm 16: dk = dk_PKE ‖ ek ‖
    /// H(ek) ‖ z, with dk_PKE of 384·k = 1536 bytes).
    pub(crate) fn matches_public(&self, ek: &[u8; MLKEM_PK_LEN]) -> bool {
        self.dk.get(1536..1536 + MLKEM_PK_LEN).is_some_and(|embedded| ct_eq(embedded, ek))
    }

    /// ML-KEM.Decaps (FIPS 203 Algorithm 21). Implicit rejection: a bad ciphertext yields a
    /// pseudorandom secret, which then fails the key confirmation of the first message.
    pub(crate) fn decapsulate(&self, ct: &[u8; MLKEM_CT_LEN]) -> Zeroizing<[u8; 32]> {
        let sk = libcrux_ml_kem::mlkem1024::MlKem1024PrivateKey::from(&*self.dk);
        let ct = libcrux_ml_kem::mlkem1024::MlKem1024Ciphertext::from(ct);
        let ss = libcrux_ml_kem::mlkem1024::decapsulate(&sk, &ct);
        let mut raw: [u8; MLKEM_SK_LEN] = sk.into();
        raw.zeroize();
        Zeroizing::new(ss)
    }
}

impl Clone for MlKemSecret {
    fn clone(&self) -> Self {
        Self { dk: self.dk.clone() }
    }
}

impl Drop for MlKemSecret {
    fn drop(&mut self) {
        self.dk.zeroize();
    }
}

impl ZeroizeOnDrop for MlKemSecret {}

/// ML-KEM.KeyGen (FIPS 203 Algorithm 19) from 64 bytes of the caller's randomness.
pub(crate) fn mlkem_generate<R: CryptoRng + ?Sized>(
    rng: &mut R,
) -> (MlKemSecret, Box<[u8; MLKEM_PK_LEN]>) {
    let seed = Zeroizing::new(random_array::<MLKEM_KEYGEN_SEED_LEN, R>(rng));
    mlkem_generate_from_seed(&seed)
}

/// ML-KEM.KeyGen_internal (FIPS 203 Algorithm 16) from a fixed seed `d || z`.
pub(crate) fn mlkem_generate_from_seed(
    seed: &[u8; MLKEM_KEYGEN_SEED_LEN],
) -> (MlKemSecret, Box<[u8; MLKEM_PK_LEN]>) {
    let kp = libcrux_ml_kem::mlkem1024::generate_key_pair(*seed);
    let (sk, pk) = kp.into_parts();
    let mut raw: [u8; MLKEM_SK_LEN] = sk.into();
    let secret = MlKemSecret::from_bytes(&raw);
    raw.zeroize();
    let pk: [u8; MLKEM_PK_LEN] = pk.into();
    (secret, Box::new(pk))
}

/// ML-KEM.Encaps (FIPS 203 Algorithm 20) with the encapsulation-key check of FIPS 203 §7.2
/// (modulus check) done first; a key that fails it is refused.
pub(crate) fn mlkem_encapsulate<R: CryptoRng + ?Sized>(
    pk: &[u8; MLKEM_PK_LEN],
    rng: &mut R,
) -> Result<Encapsulated, CryptoError> {
    let m = Zeroizing::new(random_array::<32, R>(rng));
    mlkem_encapsulate_deterministic(pk, &m)
}

/// ML-KEM.Encaps_internal (FIPS 203 Algorithm 17) with fixed randomness `m`.
pub(crate) fn mlkem_encapsulate_deterministic(
    pk: &[u8; MLKEM_PK_LEN],
    m: &[u8; 32],
) -> Result<Encapsulated, CryptoError> {
    let pk = libcrux_ml_kem::mlkem1024::MlKem1024PublicKey::from(pk);
    if !libcrux_ml_kem::mlkem1024::validate_public_key(&pk) {
        return Err(CryptoError);
    }
    let (ct, ss) = libcrux_ml_kem::mlkem1024::encapsulate(&pk, *m);
    let ct: [u8; MLKEM_CT_LEN] = ct.into();
    Ok((Box::new(ct), Zeroizing::new(ss)))
}

/// Checks an ML-KEM-1024 encapsulation key (FIPS 203 §7.2, modulus check).
pub(crate) fn mlkem_check_public(pk: &[u8; MLKEM_PK_LEN]) -> Result<(), CryptoError> {
    let pk = libcrux_ml_kem::mlkem1024::MlKem1024PublicKey::from(pk);
    if libcrux_ml_kem::mlkem1024::validate_public_key(&pk) { Ok(()) } else { Err(CryptoError) }
}
