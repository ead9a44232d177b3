//! The Double Ratchet with header encryption ("The Double Ratchet Algorithm", revision 1,
//! 2016-11-20: §3 and §4; section numbers below refer to that revision).
//!
//! ```text
//!            RK ──KDF_RK_HE(RK, DH(DHs, DHr))──▶ RK' , CK (sending or receiving) , NHK
//!            CK ──KDF_CK──▶ CK' (HMAC(CK, 0x02)) , MK (HMAC(CK, 0x01))
//!            MK ──HKDF-Expand("Parley message keys v1", 80)──▶ enc key | MAC key | IV
//!   header: nonce(16, fresh random) | AES-256-CTR(HK_enc, nonce, DHs | PN | N) | HMAC(HK_mac, nonce | ct)
//!   body:   AES-256-CTR(enc key, IV, padded plaintext) , tag = HMAC-SHA256(MAC key, AD ‖ header ‖ ct)
//! ```
//!
//! Every message is checked before any state changes: keys are derived on the side, the body
//! tag is verified, and only then is the new state assigned (a forged, tampered, truncated or
//! replayed message leaves the session byte-for-byte as it was).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::{self, X25519Secret};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::keys::{AccountPublicKey, DeviceCertificate, MAX_CERT_LEN};
use crate::padding;
use crate::secrets::{ChainKey, MessageKey, RootKey};

/// Most message keys one message may make the receiver derive in a single chain (a message
/// numbered further ahead is refused with [`DecryptError::TooFarAhead`]). Bounds the work an
/// authenticated header can cause. Double Ratchet §3.5 ("MAX_SKIP").
pub const MAX_FORWARD_JUMP: u32 = 1000;
/// Most skipped message keys stored at once; the oldest are dropped (and reported as a
/// [`Gap`]) beyond it. Double Ratchet §3.5 / §6.4.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// Most receiving chains whose skipped keys are kept; the oldest chain's keys are dropped
/// (and reported as a [`Gap`]) beyond it.
pub const MAX_RECEIVING_CHAINS: usize = 5;
/// Largest caller-supplied associated data (the franking commitment and routing data fit).
pub const MAX_AD_LEN: usize = 1024;

/// `info` of KDF_RK_HE (Double Ratchet §4.2, HKDF-SHA256 with RK as salt, §5.2).
pub const INFO_RATCHET: &[u8] = b"Parley ratchet v1";
/// `info` of the message-key expansion (Double Ratchet §5.2: 80 bytes = enc key, MAC key, IV).
pub const INFO_MESSAGE_KEYS: &[u8] = b"Parley message keys v1";
/// `info` of the header-key expansion into an encryption key and a MAC key.
pub const INFO_HEADER_KEYS: &[u8] = b"Parley header keys v1";

pub(crate) const OBJ_MESSAGE: u8 = 0x10;
const OBJ_SESSION: u8 = 0x20;
const VERSION: u8 = 1;

const HEADER_PLAIN_LEN: usize = 32 + 4 + 4;
const HEADER_NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Length of an encrypted header: nonce, encrypted (DH, PN, N), tag.
pub const ENC_HEADER_LEN: usize = HEADER_NONCE_LEN + HEADER_PLAIN_LEN + TAG_LEN;
/// Fixed bytes a ratchet message adds to its padded plaintext (type, version, header, length, tag).
pub const MESSAGE_OVERHEAD: usize = 2 + ENC_HEADER_LEN + 4 + TAG_LEN;

/// A header key (HKs, HKr, NHKs, NHKr in Double Ratchet §4) with its two derived subkeys,
/// kept ready to use: one header key seals or opens every header of a chain, so its AES key
/// schedule and its keyed HMAC state (the two key-block compressions, RFC 2104 §2) are made
/// once, not per message. All three wipe themselves on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct HeaderKey {
    raw: [u8; 32],
    /// The encryption subkey's expanded schedule (zeroized on drop by `aes`).
    #[zeroize(skip)]
    enc: crypto::Aes256Key,
    /// HMAC-SHA256 keyed with the MAC subkey, cloned per header (zeroized on drop by `hmac`).
    #[zeroize(skip)]
    mac: crypto::HmacSha256,
}

impl HeaderKey {
    pub(crate) fn new(raw: [u8; 32]) -> Result<Self, crypto::CryptoError> {
        let mut sub = Zeroizing::new([0u8; 64]);
        crypto::hkdf_expand(&raw, INFO_HEADER_KEYS, &mut sub[..])?;
        let (enc, mac) = split32(&sub[..]).ok_or(crypto::CryptoError)?;
        let (enc, mac) = (Zeroizing::new(enc), Zeroizing::new(mac));
        Ok(Self { raw, enc: crypto::aes256_key(&enc), mac: crypto::hmac_keyed(&mac[..]) })
    }

    /// HENCRYPT (Double Ratchet §4.2): a fresh random nonce for every header, because one
    /// header key encrypts many headers; encrypt-then-MAC with a full 256-bit tag, so trial
    /// decryption with several candidate keys is reliable.
    fn seal(
        &self,
        nonce: [u8; HEADER_NONCE_LEN],
        dh: &[u8; 32],
        pn: u32,
        n: u32,
    ) -> [u8; ENC_HEADER_LEN] {
        let mut out = [0u8; ENC_HEADER_LEN];
        let (n_part, rest) = out.split_at_mut(HEADER_NONCE_LEN);
        let (body, tag_part) = rest.split_at_mut(HEADER_PLAIN_LEN);
        n_part.copy_from_slice(&nonce);
        let (d, counters) = body.split_at_mut(32);
        d.copy_from_slice(dh);
        let (p, c) = counters.split_at_mut(4);
        p.copy_from_slice(&pn.to_be_bytes());
        c.copy_from_slice(&n.to_be_bytes());
        crypto::aes256_ctr_keyed(&self.enc, &nonce, body);
        let mut m = self.mac.clone();
        hmac::Mac::update(&mut m, &nonce);
        hmac::Mac::update(&mut m, body);
        tag_part.copy_from_slice(&crypto::mac_finish(m));
        out
    }

    /// HDECRYPT (Double Ratchet §4.2): `None` unless the tag verifies under this key.
    fn open(&self, enc: &[u8; ENC_HEADER_LEN]) -> Option<Header> {
        let mut r = Reader::new(enc);
        let nonce: [u8; HEADER_NONCE_LEN] = r.array().ok()?;
        let mut body: [u8; HEADER_PLAIN_LEN] = r.array().ok()?;
        let tag: [u8; TAG_LEN] = r.array().ok()?;
        let mut m = self.mac.clone();
        hmac::Mac::update(&mut m, &nonce);
        hmac::Mac::update(&mut m, &body);
        crypto::mac_verify(m, &tag).ok()?;
        crypto::aes256_ctr_keyed(&self.enc, &nonce, &mut body);
        let mut r = Reader::new(&body);
        let dh = r.array().ok()?;
        let pn = r.u32().ok()?;
        let n = r.u32().ok()?;
        Some(Header { dh, pn, n })
    }
}

struct Header {
    dh: [u8; 32],
    pn: u32,
    n: u32,
}

fn split32(s: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    let (a, rest) = s.split_first_chunk::<32>()?;
    let (b, _) = rest.split_first_chunk::<32>()?;
    Some((*a, *b))
}

/// KDF_RK_HE (Double Ratchet §4.2): HKDF-SHA256 with the root key as salt and the DH output as
/// input key material, 96 bytes split into the new root key, a chain key and a next header key.
fn kdf_rk_he(
    rk: &RootKey,
    dh_out: &[u8; 32],
) -> Result<(RootKey, ChainKey, HeaderKey), crypto::CryptoError> {
    let mut okm = Zeroizing::new([0u8; 96]);
    crypto::hkdf_sha256(rk.expose(), &[dh_out], INFO_RATCHET, &mut okm[..])?;
    let (a, rest) = okm.split_first_chunk::<32>().ok_or(crypto::CryptoError)?;
    let (b, c) = split32(rest).ok_or(crypto::CryptoError)?;
    Ok((RootKey::new(*a), ChainKey::new(b), HeaderKey::new(c)?))
}

/// KDF_CK (Double Ratchet §5.2): MK = HMAC-SHA256(CK, 0x01), CK' = HMAC-SHA256(CK, 0x02);
/// both from one keyed state (RFC 2104 §2: the key blocks are the same for both).
fn kdf_ck(ck: &ChainKey) -> (ChainKey, MessageKey) {
    let keyed = crypto::hmac_keyed(ck.expose());
    let mut m1 = keyed.clone();
    hmac::Mac::update(&mut m1, &[0x01]);
    let mut m2 = keyed;
    hmac::Mac::update(&mut m2, &[0x02]);
    (ChainKey::new(crypto::mac_finish(m2)), MessageKey::new(crypto::mac_finish(m1)))
}

/// The message keys of Double Ratchet §5.2's recommended ENCRYPT: HKDF over MK gives an
/// AES-256 key, an HMAC-SHA256 key and an IV. (HKDF-Expand only, RFC 5869 §3.3: MK is already
/// a uniformly random key.)
struct BodyKeys {
    okm: Zeroizing<[u8; 80]>,
}

impl BodyKeys {
    fn new(mk: &MessageKey) -> Result<Self, crypto::CryptoError> {
        let mut okm = Zeroizing::new([0u8; 80]);
        crypto::hkdf_expand(mk.expose(), INFO_MESSAGE_KEYS, &mut okm[..])?;
        Ok(Self { okm })
    }
    fn parts(&self) -> Option<(&[u8; 32], &[u8; 32], &[u8; 16])> {
        let (enc, rest) = self.okm.split_first_chunk::<32>()?;
        let (mac, rest) = rest.split_first_chunk::<32>()?;
        let (iv, _) = rest.split_first_chunk::<16>()?;
        Some((enc, mac, iv))
    }
}

/// The body MAC: HMAC-SHA256(MAC key, 0x10 0x01 ‖ SHA-256(session AD) ‖ u32 len(AD) ‖ AD ‖
/// encrypted header ‖ ciphertext). Encrypt-then-MAC with a full 256-bit HMAC tag is
/// key-committing: the tag is a collision-resistant commitment to the MAC key, which comes from
/// the same HKDF output as the encryption key (Grubbs–Lu–Ristenpart, CRYPTO 2017, §6;
/// Albertini et al., USENIX Security 2022, §3).
fn body_mac(
    mac_key: &[u8; 32],
    ad_hash: &[u8; 32],
    ad: &[u8],
    header: &[u8; ENC_HEADER_LEN],
    ct: &[u8],
) -> crypto::HmacSha256 {
    let mut m = crypto::hmac_keyed(mac_key);
    let ad_len = u32::try_from(ad.len()).unwrap_or(u32::MAX).to_be_bytes();
    for part in [&[OBJ_MESSAGE, VERSION][..], ad_hash, &ad_len, ad, header, ct] {
        hmac::Mac::update(&mut m, part);
    }
    m
}

/// ENCRYPT (Double Ratchet §5.2, with AES-256-CTR in place of CBC since the plaintext is
/// already padded): encrypts `body` in place and returns the tag.
fn seal_body(
    mk: &MessageKey,
    ad_hash: &[u8; 32],
    ad: &[u8],
    header: &[u8; ENC_HEADER_LEN],
    body: &mut [u8],
) -> Option<[u8; TAG_LEN]> {
    let keys = BodyKeys::new(mk).ok()?;
    let (enc, mac, iv) = keys.parts()?;
    crypto::aes256_ctr(enc, iv, body);
    Some(crypto::mac_finish(body_mac(mac, ad_hash, ad, header, body)))
}

/// DECRYPT (Double Ratchet §5.2): the tag is checked (constant time) before anything is
/// decrypted; a bad tag and bad padding give the same error.
fn open_body(
    mk: &MessageKey,
    ad_hash: &[u8; 32],
    ad: &[u8],
    header: &[u8; ENC_HEADER_LEN],
    ct: &[u8],
    tag: &[u8; TAG_LEN],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let keys = BodyKeys::new(mk)?;
    let (enc, mac, iv) = keys.parts().ok_or(DecryptError::Internal)?;
    crypto::mac_verify(body_mac(mac, ad_hash, ad, header, ct), tag)?;
    let mut body = Zeroizing::new(ct.to_vec());
    crypto::aes256_ctr(enc, iv, &mut body);
    let len = padding::unpadded_len(&body).ok_or(DecryptError::Authentication)?;
    body.truncate(len);
    Ok(body)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn seal_with(
        mk: &[u8; 32],
        ad_hash: &[u8; 32],
        ad: &[u8],
        header: &[u8; ENC_HEADER_LEN],
        pt: &[u8],
    ) -> (Vec<u8>, [u8; TAG_LEN]) {
        let mut body = padding::pad(pt).unwrap();
        let tag = seal_body(&MessageKey::new(*mk), ad_hash, ad, header, &mut body).unwrap();
        (body.to_vec(), tag)
    }

    pub(crate) fn open_with(
        mk: &[u8; 32],
        ad_hash: &[u8; 32],
        ad: &[u8],
        header: &[u8; ENC_HEADER_LEN],
        ct: &[u8],
        tag: &[u8; TAG_LEN],
    ) -> Option<Vec<u8>> {
        open_body(&MessageKey::new(*mk), ad_hash, ad, header, ct, tag).ok().map(|p| p.to_vec())
    }
}

/// Keys that were skipped in one receiving chain (Double Ratchet §3.2 "MKSKIPPED", keyed by
/// header key as in §4).
#[derive(Clone)]
struct SkippedChain {
    hk: HeaderKey,
    dh: [u8; 32],
    keys: BTreeMap<u32, MessageKey>,
}

/// Messages that can no longer be decrypted because a limit forced their keys to be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The sender's ratchet public key that identifies the chain.
    pub chain: [u8; 32],
    /// The first lost message number in that chain.
    pub first: u32,
    /// How many consecutive message numbers were lost.
    pub count: u32,
}

fn push_gap(gaps: &mut Vec<Gap>, chain: [u8; 32], n: u32) {
    if let Some(last) = gaps.last_mut()
        && last.chain == chain
        && last.first.checked_add(last.count) == Some(n)
    {
        last.count += 1;
        return;
    }
    gaps.push(Gap { chain, first: n, count: 1 });
}

/// A successfully decrypted message.
pub struct Decrypted {
    plaintext: Zeroizing<Vec<u8>>,
    gaps: Vec<Gap>,
}

impl Decrypted {
    /// The plaintext.
    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }
    /// Consumes the result, returning the plaintext.
    pub fn into_plaintext(self) -> Zeroizing<Vec<u8>> {
        self.plaintext
    }
    /// Messages that became undecryptable while processing this one (visible gap events).
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { plaintext, gaps } = self;
        f.debug_struct("Decrypted")
            .field("plaintext_len", &plaintext.len())
            .field("gaps", gaps)
            .finish()
    }
}

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The plaintext is longer than [`padding::MAX_PLAINTEXT_LEN`].
    #[error("plaintext too long: {0} bytes, at most {max}", max = padding::MAX_PLAINTEXT_LEN)]
    PlaintextTooLong(usize),
    /// The associated data is longer than [`MAX_AD_LEN`].
    #[error("associated data too long: {0} bytes, at most {MAX_AD_LEN}")]
    AdTooLong(usize),
    /// The sending chain reached 2^32 − 1 messages.
    #[error("sending chain exhausted")]
    ChainExhausted,
    /// An internal invariant failed (a bug, never caused by input).
    #[error("internal error")]
    Internal,
}

/// Why a message could not be decrypted. The session is unchanged after every one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The bytes are not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// No known header key opens the header: forged, corrupted, for another session, or from a
    /// chain whose keys were dropped (reported earlier as a gap).
    #[error("message undecryptable")]
    Undecryptable,
    /// The header is authentic but its message number was already used (a replay or duplicate),
    /// or its key was dropped by a limit and reported earlier as a [`Gap`].
    #[error("message already received")]
    Replay,
    /// The message is further ahead in its chain than [`MAX_FORWARD_JUMP`].
    #[error("message too far ahead ({0} messages skipped)")]
    TooFarAhead(u32),
    /// The body failed authentication (tag, padding or key agreement): opaque on purpose.
    #[error("message failed authentication")]
    Authentication,
    /// The associated data is longer than [`MAX_AD_LEN`].
    #[error("associated data too long")]
    AdTooLong,
    /// An internal invariant failed (a bug, never caused by input).
    #[error("internal error")]
    Internal,
}

impl From<crypto::CryptoError> for DecryptError {
    fn from(_: crypto::CryptoError) -> Self {
        Self::Authentication
    }
}

/// A parsed ratchet message (type 0x10, version 1): `10 01 | enc_header[88] | var(ct) | tag[32]`.
pub(crate) struct RatchetMessage<'a> {
    header: [u8; ENC_HEADER_LEN],
    ct: &'a [u8],
    tag: [u8; TAG_LEN],
}

impl<'a> RatchetMessage<'a> {
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_MESSAGE, VERSION)?;
        Self::read(&mut r).and_then(|m| r.finish().map(|()| m))
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let header = r.array()?;
        let ct = r.var(padding::MAX_PADDED_LEN)?;
        if !padding::is_bucket(ct.len()) {
            return Err(DecodeError::InvalidValue("ciphertext length is not a padding bucket"));
        }
        let tag = r.array()?;
        Ok(Self { header, ct, tag })
    }
}

/// An established Double Ratchet session with one peer device.
pub struct Session {
    handshake_id: [u8; 32],
    ad_hash: [u8; 32],
    remote_account: AccountPublicKey,
    remote_cert: DeviceCertificate,
    dhs: X25519Secret,
    dhr: Option<[u8; 32]>,
    rk: RootKey,
    cks: Option<ChainKey>,
    ckr: Option<ChainKey>,
    hks: Option<HeaderKey>,
    hkr: Option<HeaderKey>,
    nhks: HeaderKey,
    nhkr: HeaderKey,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<SkippedChain>,
    pending_initial: Option<Vec<u8>>,
}

/// What the PQXDH handshake hands to the ratchet.
pub(crate) struct SessionSeed {
    pub(crate) handshake_id: [u8; 32],
    pub(crate) ad_hash: [u8; 32],
    pub(crate) remote_account: AccountPublicKey,
    pub(crate) remote_cert: DeviceCertificate,
    pub(crate) rk: RootKey,
    pub(crate) hka: HeaderKey,
    pub(crate) nhkb: HeaderKey,
}

/// What a successful decryption changes; assigned to the session only after the body verified.
struct Commit {
    step: Option<Step>,
    ckr: ChainKey,
    nr: u32,
    new_skipped: Vec<(HeaderKey, [u8; 32], u32, MessageKey)>,
    used_skipped: Option<(usize, u32)>,
    gaps: Vec<Gap>,
}

/// The results of a DH ratchet step (Double Ratchet §4.6, DHRatchetHE).
struct Step {
    dhr: [u8; 32],
    rk: RootKey,
    dhs: X25519Secret,
    cks: ChainKey,
    nhkr: HeaderKey,
    nhks: HeaderKey,
}

impl Session {
    /// RatchetInitAliceHE (Double Ratchet §4.4): the initiator knows Bob's ratchet key (his
    /// signed prekey) and performs the first DH ratchet at once.
    pub(crate) fn new_initiator<R: CryptoRng + ?Sized>(
        rng: &mut R,
        seed: SessionSeed,
        remote_ratchet: [u8; 32],
        pending_initial: Vec<u8>,
    ) -> Result<Self, crypto::CryptoError> {
        let dhs = X25519Secret::generate(rng);
        let dh = dhs.dh(&remote_ratchet)?;
        let (rk, cks, nhks) = kdf_rk_he(&seed.rk, &dh)?;
        Ok(Self {
            handshake_id: seed.handshake_id,
            ad_hash: seed.ad_hash,
            remote_account: seed.remote_account,
            remote_cert: seed.remote_cert,
            dhs,
            dhr: Some(remote_ratchet),
            rk,
            cks: Some(cks),
            ckr: None,
            hks: Some(seed.hka),
            hkr: None,
            nhks,
            nhkr: seed.nhkb,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            pending_initial: Some(pending_initial),
        })
    }

    /// RatchetInitBobHE (Double Ratchet §4.4): the responder's ratchet key is its signed prekey;
    /// it has no sending chain until the first message arrives.
    pub(crate) fn new_responder(seed: SessionSeed, spk: X25519Secret) -> Self {
        Self {
            handshake_id: seed.handshake_id,
            ad_hash: seed.ad_hash,
            remote_account: seed.remote_account,
            remote_cert: seed.remote_cert,
            dhs: spk,
            dhr: None,
            rk: seed.rk,
            cks: None,
            ckr: None,
            hks: None,
            hkr: None,
            nhks: seed.nhkb,
            nhkr: seed.hka,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            pending_initial: None,
        }
    }

    /// Identifies the PQXDH handshake this session came from (equal on both sides); a responder
    /// that receives another initial message with the same id routes it to this session.
    pub fn handshake_id(&self) -> &[u8; 32] {
        &self.handshake_id
    }
    /// The peer's account key.
    pub fn remote_account(&self) -> &AccountPublicKey {
        &self.remote_account
    }
    /// The peer device's certificate.
    pub fn remote_certificate(&self) -> &DeviceCertificate {
        &self.remote_cert
    }
    /// True until the initiator has received a reply: its messages still carry the handshake.
    pub fn is_pending_handshake(&self) -> bool {
        self.pending_initial.is_some()
    }
    /// The (ratchet public key, message number) the next encrypted message will carry.
    #[cfg(test)]
    pub(crate) fn next_send_position(&self) -> ([u8; 32], u32) {
        (*self.dhs.public(), self.ns)
    }

    /// How many skipped message keys are stored.
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.iter().map(|c| c.keys.len()).sum()
    }

    /// RatchetEncryptHE (Double Ratchet §4.5). `ad` is caller-supplied associated data bound
    /// into the body tag (the franking commitment goes there). While the handshake is pending
    /// the result is an initial message (type 0x11) carrying the PQXDH data; otherwise a ratchet
    /// message (type 0x10).
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
        ad: &[u8],
    ) -> Result<Vec<u8>, EncryptError> {
        if ad.len() > MAX_AD_LEN {
            return Err(EncryptError::AdTooLong(ad.len()));
        }
        let padded_len = padding::padded_len(plaintext.len())
            .ok_or(EncryptError::PlaintextTooLong(plaintext.len()))?;
        let next_ns = self.ns.checked_add(1).ok_or(EncryptError::ChainExhausted)?;
        let (cks, hks) = match (&self.cks, &self.hks) {
            (Some(c), Some(h)) => (c, h),
            _ => return Err(EncryptError::Internal),
        };
        let (next_ck, mk) = kdf_ck(cks);
        let nonce = crypto::random_array::<HEADER_NONCE_LEN, R>(rng);
        let header = hks.seal(nonce, self.dhs.public(), self.pn, self.ns);

        // The body is padded and encrypted in place inside the output buffer, which holds
        // plaintext only until `seal_body` returns (and is wiped if it fails).
        let prefix_len = self.pending_initial.as_ref().map_or(0, Vec::len);
        let body_len = u32::try_from(padded_len).map_err(|_| EncryptError::Internal)?;
        let mut w = Writer::with_capacity(prefix_len + 4 + MESSAGE_OVERHEAD + padded_len);
        if let Some(prefix) = &self.pending_initial {
            w.raw(prefix);
            w.u32(
                u32::try_from(MESSAGE_OVERHEAD + padded_len).map_err(|_| EncryptError::Internal)?,
            );
        }
        w.u8(OBJ_MESSAGE).u8(VERSION).raw(&header).u32(body_len);
        let body_start = w.len();
        w.raw(plaintext).u8(0x80).zeros(padded_len - plaintext.len() - 1);
        let mut out = Zeroizing::new(w.into_vec());
        let body = out.get_mut(body_start..).ok_or(EncryptError::Internal)?;
        let tag = seal_body(&mk, &self.ad_hash, ad, &header, body).ok_or(EncryptError::Internal)?;
        out.extend_from_slice(&tag);

        self.cks = Some(next_ck);
        self.ns = next_ns;
        Ok(std::mem::take(&mut *out))
    }

    /// RatchetDecryptHE (Double Ratchet §4.6) of a ratchet message (type 0x10).
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        message: &[u8],
        ad: &[u8],
    ) -> Result<Decrypted, DecryptError> {
        let msg = RatchetMessage::decode(message)?;
        self.decrypt_parsed(rng, &msg, ad)
    }

    pub(crate) fn decrypt_parsed<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        msg: &RatchetMessage<'_>,
        ad: &[u8],
    ) -> Result<Decrypted, DecryptError> {
        if ad.len() > MAX_AD_LEN {
            return Err(DecryptError::AdTooLong);
        }
        let (commit, plaintext) = self.plan(rng, msg, ad)?;
        let gaps = self.apply(commit);
        Ok(Decrypted { plaintext, gaps })
    }

    /// Works out, without touching `self`, what decrypting `msg` would change, and verifies it.
    fn plan<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        msg: &RatchetMessage<'_>,
        ad: &[u8],
    ) -> Result<(Commit, Zeroizing<Vec<u8>>), DecryptError> {
        // TrySkippedMessageKeysHE (§4.6).
        for (ci, chain) in self.skipped.iter().enumerate() {
            if let Some(h) = chain.hk.open(&msg.header) {
                let Some(mk) = chain.keys.get(&h.n) else {
                    // The current chain may also hold skipped keys: a later number in it is
                    // handled below; anything else under a skipped key was already received.
                    if self.dhr == Some(chain.dh) {
                        break;
                    }
                    return Err(DecryptError::Replay);
                };
                let pt = self.open_body(mk, msg, ad)?;
                let commit = Commit {
                    step: None,
                    ckr: self.ckr.clone().ok_or(DecryptError::Internal)?,
                    nr: self.nr,
                    new_skipped: Vec::new(),
                    used_skipped: Some((ci, h.n)),
                    gaps: Vec::new(),
                };
                return Ok((commit, pt));
            }
        }

        let mut new_skipped = Vec::new();
        let mut gaps = Vec::new();
        if let Some(h) = self.hkr.as_ref().and_then(|hk| hk.open(&msg.header)) {
            // Current receiving chain.
            let hkr = self.hkr.as_ref().ok_or(DecryptError::Internal)?;
            let dhr = self.dhr.ok_or(DecryptError::Internal)?;
            if !crypto::ct_eq(&h.dh, &dhr) {
                return Err(DecryptError::Authentication);
            }
            if h.n < self.nr {
                return Err(DecryptError::Replay);
            }
            let ckr = self.ckr.as_ref().ok_or(DecryptError::Internal)?;
            let (ck, mk) = skip_to(ckr, self.nr, h.n, hkr, &dhr, &mut new_skipped)?;
            let pt = self.open_body(&mk, msg, ad)?;
            let nr = h.n.checked_add(1).ok_or(DecryptError::Authentication)?;
            let commit = Commit { step: None, ckr: ck, nr, new_skipped, used_skipped: None, gaps };
            return Ok((commit, pt));
        }

        let h = self.nhkr.open(&msg.header).ok_or(DecryptError::Undecryptable)?;
        // SkipMessageKeysHE(state, header.pn) for the chain that is ending (§4.6).
        if let (Some(hkr), Some(ckr), Some(dhr)) = (&self.hkr, &self.ckr, &self.dhr) {
            if h.pn < self.nr {
                return Err(DecryptError::Authentication);
            }
            let behind = h.pn - self.nr;
            if behind > MAX_FORWARD_JUMP {
                // Too many to derive: the rest of the old chain is reported as lost.
                gaps.push(Gap { chain: *dhr, first: self.nr, count: behind });
            } else if behind > 0 {
                let last = h.pn - 1;
                let (_ck, mk) = skip_to(ckr, self.nr, last, hkr, dhr, &mut new_skipped)?;
                new_skipped.push((hkr.clone(), *dhr, last, mk));
            }
        }
        // DHRatchetHE (§4.6).
        let dh1 = self.dhs.dh(&h.dh)?;
        let (rk1, ckr, nhkr) = kdf_rk_he(&self.rk, &dh1)?;
        let dhs = X25519Secret::generate(rng);
        let dh2 = dhs.dh(&h.dh)?;
        let (rk2, cks, nhks) = kdf_rk_he(&rk1, &dh2)?;
        let (ck, mk) = skip_to(&ckr, 0, h.n, &self.nhkr, &h.dh, &mut new_skipped)?;
        let pt = self.open_body(&mk, msg, ad)?;
        let nr = h.n.checked_add(1).ok_or(DecryptError::Authentication)?;
        let step = Step { dhr: h.dh, rk: rk2, dhs, cks, nhkr, nhks };
        Ok((Commit { step: Some(step), ckr: ck, nr, new_skipped, used_skipped: None, gaps }, pt))
    }

    fn open_body(
        &self,
        mk: &MessageKey,
        msg: &RatchetMessage<'_>,
        ad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        open_body(mk, &self.ad_hash, ad, &msg.header, msg.ct, &msg.tag)
    }

    /// Assigns a verified plan; returns the gaps it caused.
    fn apply(&mut self, commit: Commit) -> Vec<Gap> {
        let Commit { step, ckr, nr, new_skipped, used_skipped, mut gaps } = commit;
        if let Some((ci, n)) = used_skipped {
            if let Some(chain) = self.skipped.get_mut(ci) {
                chain.keys.remove(&n);
                if chain.keys.is_empty() {
                    self.skipped.remove(ci);
                }
            }
            self.pending_initial = None;
            return gaps;
        }
        if let Some(s) = step {
            // DHRatchetHE: PN = Ns; Ns = Nr = 0; HKs = NHKs; HKr = NHKr; then the new keys.
            self.pn = self.ns;
            self.ns = 0;
            self.hks = Some(core::mem::replace(&mut self.nhks, s.nhks));
            self.hkr = Some(core::mem::replace(&mut self.nhkr, s.nhkr));
            self.dhr = Some(s.dhr);
            self.rk = s.rk;
            self.dhs = s.dhs;
            self.cks = Some(s.cks);
        }
        self.ckr = Some(ckr);
        self.nr = nr;
        self.pending_initial = None;
        for (hk, dh, n, mk) in new_skipped {
            match self.skipped.iter_mut().find(|c| c.dh == dh) {
                Some(chain) => {
                    chain.keys.insert(n, mk);
                }
                None => {
                    let mut keys = BTreeMap::new();
                    keys.insert(n, mk);
                    self.skipped.push_back(SkippedChain { hk, dh, keys });
                }
            }
        }
        self.enforce_limits(&mut gaps);
        gaps
    }

    /// Drops the oldest skipped keys beyond [`MAX_RECEIVING_CHAINS`] and [`MAX_SKIPPED_KEYS`],
    /// reporting each dropped message as a gap.
    fn enforce_limits(&mut self, gaps: &mut Vec<Gap>) {
        while self.skipped.len() > MAX_RECEIVING_CHAINS {
            if let Some(chain) = self.skipped.pop_front() {
                for n in chain.keys.keys() {
                    push_gap(gaps, chain.dh, *n);
                }
            }
        }
        let mut total = self.skipped_key_count();
        while total > MAX_SKIPPED_KEYS {
            let Some(front) = self.skipped.front_mut() else { break };
            if let Some((n, _mk)) = front.keys.pop_first() {
                push_gap(gaps, front.dh, n);
                total -= 1;
            }
            if front.keys.is_empty() {
                self.skipped.pop_front();
            }
        }
    }

    /// Serializes the whole session (type 0x20, version 1), deterministically; see
    /// docs/PROTOCOL.md §7. The result holds secrets.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let Self {
            handshake_id,
            ad_hash,
            remote_account,
            remote_cert,
            dhs,
            dhr,
            rk,
            cks,
            ckr,
            hks,
            hkr,
            nhks,
            nhkr,
            ns,
            nr,
            pn,
            skipped,
            pending_initial,
        } = self;
        let mut w = Writer::with_capacity(1024).header(OBJ_SESSION, VERSION);
        w.raw(handshake_id).raw(ad_hash).raw(&remote_account.encode()).var(&remote_cert.encode());
        w.raw(&*dhs.secret_bytes());
        write_opt(&mut w, dhr.as_ref());
        w.raw(rk.expose());
        write_opt(&mut w, cks.as_ref().map(ChainKey::expose));
        write_opt(&mut w, ckr.as_ref().map(ChainKey::expose));
        write_opt(&mut w, hks.as_ref().map(|h| &h.raw));
        write_opt(&mut w, hkr.as_ref().map(|h| &h.raw));
        w.raw(&nhks.raw).raw(&nhkr.raw).u32(*ns).u32(*nr).u32(*pn);
        w.u32(u32::try_from(skipped.len()).unwrap_or(u32::MAX));
        for c in skipped {
            w.raw(&c.hk.raw).raw(&c.dh).u32(u32::try_from(c.keys.len()).unwrap_or(u32::MAX));
            for (n, mk) in &c.keys {
                w.u32(*n).raw(mk.expose());
            }
        }
        match pending_initial {
            Some(p) => {
                w.bool(true).var(p);
            }
            None => {
                w.bool(false);
            }
        }
        Zeroizing::new(w.into_vec())
    }

    /// Restores a session serialized by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_SESSION, VERSION)?;
        let handshake_id = r.array()?;
        let ad_hash = r.array()?;
        let remote_account = AccountPublicKey::read(&mut r)
            .map_err(|_| DecodeError::InvalidValue("remote account"))?;
        let remote_cert = DeviceCertificate::decode_verified(r.var(MAX_CERT_LEN)?)
            .map_err(|_| DecodeError::InvalidValue("remote certificate"))?;
        let dhs = X25519Secret::from_bytes(&Zeroizing::new(r.array()?));
        let dhr = read_opt(&mut r)?;
        let rk = RootKey::new(r.array()?);
        let cks = read_opt(&mut r)?.map(ChainKey::new);
        let ckr = read_opt(&mut r)?.map(ChainKey::new);
        let hk =
            |b: [u8; 32]| HeaderKey::new(b).map_err(|_| DecodeError::InvalidValue("header key"));
        let hks = read_opt(&mut r)?.map(hk).transpose()?;
        let hkr = read_opt(&mut r)?.map(hk).transpose()?;
        let nhks = hk(r.array()?)?;
        let nhkr = hk(r.array()?)?;
        let ns = r.u32()?;
        let nr = r.u32()?;
        let pn = r.u32()?;
        let chains = r.count(MAX_RECEIVING_CHAINS)?;
        let mut skipped = VecDeque::with_capacity(chains);
        let mut total = 0usize;
        for _ in 0..chains {
            let chk = hk(r.array()?)?;
            let dh = r.array()?;
            let n_keys = r.count(MAX_SKIPPED_KEYS)?;
            total += n_keys;
            if total > MAX_SKIPPED_KEYS || n_keys == 0 {
                return Err(DecodeError::InvalidValue("skipped key count"));
            }
            let mut keys = BTreeMap::new();
            let mut last = None;
            for _ in 0..n_keys {
                let n = r.u32()?;
                if last.is_some_and(|l| l >= n) {
                    return Err(DecodeError::InvalidValue("skipped keys not sorted"));
                }
                last = Some(n);
                keys.insert(n, MessageKey::new(r.array()?));
            }
            skipped.push_back(SkippedChain { hk: chk, dh, keys });
        }
        let pending_initial = if r.bool("pending")? {
            Some(r.var(crate::pqxdh::MAX_INITIAL_PREFIX_LEN)?.to_vec())
        } else {
            None
        };
        r.finish()?;
        let distinct_chains = skipped
            .iter()
            .enumerate()
            .all(|(i, c)| skipped.iter().skip(i + 1).all(|d| d.dh != c.dh));
        let consistent = cks.is_some()
            && hks.is_some()
            && dhr.is_some()
            && ckr.is_some() == hkr.is_some()
            && remote_cert.account() == &remote_account
            && distinct_chains;
        if !consistent {
            return Err(DecodeError::InvalidValue("session chains"));
        }
        Ok(Self {
            handshake_id,
            ad_hash,
            remote_account,
            remote_cert,
            dhs,
            dhr,
            rk,
            cks,
            ckr,
            hks,
            hkr,
            nhks,
            nhkr,
            ns,
            nr,
            pn,
            skipped,
            pending_initial,
        })
    }
}

/// Derives the keys of messages `from..to` of a chain (recording them as skipped) and returns
/// the chain key after message `to` with message `to`'s key (Double Ratchet §3.5
/// SkipMessageKeys, bounded by [`MAX_FORWARD_JUMP`]).
fn skip_to(
    ck: &ChainKey,
    from: u32,
    to: u32,
    hk: &HeaderKey,
    dh: &[u8; 32],
    out: &mut Vec<(HeaderKey, [u8; 32], u32, MessageKey)>,
) -> Result<(ChainKey, MessageKey), DecryptError> {
    let jump = to.checked_sub(from).ok_or(DecryptError::Replay)?;
    if jump > MAX_FORWARD_JUMP {
        return Err(DecryptError::TooFarAhead(jump));
    }
    let (mut ck, mut mk) = kdf_ck(ck);
    for n in from..to {
        out.push((hk.clone(), *dh, n, mk));
        (ck, mk) = kdf_ck(&ck);
    }
    Ok((ck, mk))
}

fn write_opt(w: &mut Writer, v: Option<&[u8; 32]>) {
    match v {
        Some(b) => {
            w.bool(true).raw(b);
        }
        None => {
            w.bool(false);
        }
    }
}

fn read_opt(r: &mut Reader<'_>) -> Result<Option<[u8; 32]>, DecodeError> {
    if r.bool("option flag")? { Ok(Some(r.array()?)) } else { Ok(None) }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            handshake_id: _,
            ad_hash: _,
            remote_account,
            remote_cert,
            dhs: _,
            dhr: _,
            rk: _,
            cks: _,
            ckr: _,
            hks: _,
            hkr: _,
            nhks: _,
            nhkr: _,
            ns,
            nr,
            pn,
            skipped,
            pending_initial,
        } = self;
        f.debug_struct("Session")
            .field("remote_account", remote_account)
            .field("remote_device", &remote_cert.device_id())
            .field("ns", ns)
            .field("nr", nr)
            .field("pn", pn)
            .field("skipped_keys", &skipped.iter().map(|c| c.keys.len()).sum::<usize>())
            .field("pending_handshake", &pending_initial.is_some())
            .field("keys", &"***")
            .finish()
    }
}
