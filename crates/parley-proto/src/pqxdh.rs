//! PQXDH: the post-quantum extended Diffie–Hellman handshake (Signal PQXDH specification,
//! revision 3, §3.3 sending the initial message, §3.4 receiving it), over X25519 and ML-KEM-1024,
//! and the responder's prekey store.
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
//! (CT, SS) = ML-KEM-1024.Encaps(PQPK_B)
//! SK ‖ HKa ‖ NHKb = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
//!                               info = INFO_PQXDH, L = 96)
//! AD = SHA-256("Parley AD v1" ‖ var(cert_A) ‖ var(cert_B))   (both account keys and device keys)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{self, MLKEM_CT_LEN, MlKemSecret, X25519Secret};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::keys::{
    self, DeviceCertificate, DeviceIdentity, KemPrekey, KemPrekeyKind, KeyError, MAX_CERT_LEN,
    OneTimePrekey, PrekeyBundle, SignedPrekey,
};
use crate::ratchet::{self, DecryptError, Decrypted, RatchetMessage, Session, SessionSeed};
use crate::secrets::RootKey;

/// HKDF `info` of the PQXDH key derivation (PQXDH §2.1: protocol name, curve, hash, KEM).
pub const INFO_PQXDH: &[u8] = b"Parley PQXDH v1 CURVE25519 SHA-256 ML-KEM-1024";
/// Domain of the associated-data hash (PQXDH §3.3: AD = Encode(IK_A) ‖ Encode(IK_B)).
pub const DOMAIN_AD: &[u8] = b"Parley AD v1";
/// Domain of the handshake id (a hash of the whole initial-message prefix).
pub const DOMAIN_HANDSHAKE_ID: &[u8] = b"Parley handshake id v1";
/// Domain of the replay id of a last-resort handshake (a hash of EK and the KEM ciphertext).
pub const DOMAIN_REPLAY_ID: &[u8] = b"Parley replay id v1";
/// PQXDH §2.2: for X25519, F is 32 0xFF bytes, prepended to the key material.
const F: [u8; 32] = [0xFF; 32];

pub(crate) const OBJ_INITIAL: u8 = 0x11;
const OBJ_PREKEY_STORE: u8 = 0x21;
const VERSION: u8 = 1;

/// Largest initial-message prefix (everything before the inner ratchet message).
pub(crate) const MAX_INITIAL_PREFIX_LEN: usize =
    2 + 4 + MAX_CERT_LEN + 33 + 4 + 1 + 4 + 1 + 4 + 1 + MLKEM_CT_LEN;

/// How long a signed prekey or last-resort KEM prekey may be used for new sessions after its
/// creation (30 days). It is also the replay window for initial messages that used no one-time
/// key (PQXDH §4.2): within it the responder remembers them; after it the prekeys are refused.
pub const PREKEY_MAX_AGE_SECS: u64 = 30 * 24 * 3600;
/// Clients rotate their signed prekey and last-resort KEM prekey this often (7 days).
pub const PREKEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// Most one-time prekeys of each kind (X25519, ML-KEM) a store holds.
pub const MAX_ONE_TIME_PREKEYS: usize = 200;
/// Most remembered last-resort handshakes per last-resort KEM prekey. When one key's entries
/// reach it, further handshakes with that key are refused ([`HandshakeError::ReplayCacheFull`])
/// and [`PrekeyStore::needs_rotation`] asks for a new key (it does so from half full); the
/// entries of a key are forgotten with the key.
pub const MAX_REPLAY_ENTRIES: usize = 20_000;
/// Most signed (and most last-resort) prekeys kept at once (current plus retired ones still
/// inside their age).
pub const MAX_ROTATED_PREKEYS: usize = 8;

/// Why a handshake failed. Every failure leaves the prekey store unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The message is malformed.
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] DecodeError),
    /// A certificate, prekey or bundle failed verification.
    #[error("invalid key material: {0}")]
    InvalidKey(#[from] KeyError),
    /// The local certificate does not certify the local device identity.
    #[error("local certificate does not match the device identity")]
    IdentityMismatch,
    /// The message names a prekey this device does not have (never issued, or already used).
    #[error("unknown or already used prekey")]
    UnknownPrekey,
    /// The message names a signed or last-resort prekey older than [`PREKEY_MAX_AGE_SECS`].
    #[error("expired prekey")]
    ExpiredPrekey,
    /// An initial message that used only last-resort prekeys was seen before (PQXDH §4.2).
    #[error("replayed initial message")]
    Replay,
    /// Too many handshakes with this last-resort key are remembered; the owner must rotate it.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// Too many one-time prekeys would be stored.
    #[error("too many one-time prekeys")]
    TooManyPrekeys,
    /// A key agreement was refused (low-order point or invalid KEM key).
    #[error("key agreement failed")]
    KeyAgreement,
    /// The first message did not decrypt under the derived keys.
    #[error("first message: {0}")]
    Decrypt(#[from] DecryptError),
    /// An internal invariant failed (a bug, never caused by input).
    #[error("internal error")]
    Internal,
}

impl From<crypto::CryptoError> for HandshakeError {
    fn from(_: crypto::CryptoError) -> Self {
        Self::KeyAgreement
    }
}

/// AD hash over both certificates (PQXDH §3.3, extended with the account keys and both
/// device keys, since Parley separates signing and agreement keys).
fn ad_hash(initiator: &DeviceCertificate, responder: &DeviceCertificate) -> [u8; 32] {
    let a = initiator.encode();
    let b = responder.encode();
    let la = u32::try_from(a.len()).unwrap_or(u32::MAX).to_be_bytes();
    let lb = u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes();
    crypto::sha256(&[DOMAIN_AD, &la, &a, &lb, &b])
}

/// The handshake id: SHA-256 over the whole initial-message prefix, so a repeated initial
/// message with any changed field is not routed to the existing session.
fn handshake_id(prefix: &[u8]) -> [u8; 32] {
    crypto::sha256(&[DOMAIN_HANDSHAKE_ID, prefix])
}

/// The replay id of a last-resort handshake (PQXDH §4.2): the fresh values EK and CT, which
/// no other handshake can share.
fn replay_id(ek: &[u8; 32], kem_ct: &[u8; MLKEM_CT_LEN]) -> [u8; 32] {
    crypto::sha256(&[DOMAIN_REPLAY_ID, ek, kem_ct])
}

/// The PQXDH KDF (PQXDH §2.2 / §3.3): 96 bytes → root key, HKa, NHKb.
pub(crate) struct HandshakeKeys {
    pub(crate) rk: RootKey,
    pub(crate) hka: ratchet::HeaderKey,
    pub(crate) nhkb: ratchet::HeaderKey,
    /// The whole KDF output, kept for the test vectors.
    #[allow(dead_code)] // read by the test vectors (src/tests)
    pub(crate) okm: Zeroizing<[u8; 96]>,
}

fn kdf(dhs: &[&[u8]], ss: &[u8; 32]) -> Result<HandshakeKeys, HandshakeError> {
    let mut ikm: Vec<&[u8]> = Vec::with_capacity(6);
    ikm.push(&F);
    ikm.extend_from_slice(dhs);
    ikm.push(ss);
    let mut okm = Zeroizing::new([0u8; 96]);
    crypto::hkdf_sha256(&[0u8; 32], &ikm, INFO_PQXDH, &mut okm[..])?;
    let (sk, rest) = okm.split_first_chunk::<32>().ok_or(HandshakeError::Internal)?;
    let (hka, rest) = rest.split_first_chunk::<32>().ok_or(HandshakeError::Internal)?;
    let (nhkb, _) = rest.split_first_chunk::<32>().ok_or(HandshakeError::Internal)?;
    Ok(HandshakeKeys {
        rk: RootKey::new(*sk),
        hka: ratchet::HeaderKey::new(*hka)?,
        nhkb: ratchet::HeaderKey::new(*nhkb)?,
        okm: okm.clone(),
    })
}

/// Starts a session with the device of a verified bundle (PQXDH §3.3). The returned session's
/// messages carry the handshake until the responder replies.
///
/// Randomness is drawn in this order (test vectors rely on it): the ephemeral key EK (32
/// bytes), ML-KEM encapsulation randomness m (32), the first ratchet key (32).
pub fn initiate<R: CryptoRng + ?Sized>(
    rng: &mut R,
    me: &DeviceIdentity,
    my_cert: &DeviceCertificate,
    bundle: &PrekeyBundle,
) -> Result<Session, HandshakeError> {
    initiate_inner(rng, me, my_cert, bundle).map(|(s, _)| s)
}

pub(crate) fn initiate_inner<R: CryptoRng + ?Sized>(
    rng: &mut R,
    me: &DeviceIdentity,
    my_cert: &DeviceCertificate,
    bundle: &PrekeyBundle,
) -> Result<(Session, HandshakeKeys), HandshakeError> {
    if my_cert.device() != me.public() {
        return Err(HandshakeError::IdentityMismatch);
    }
    let their = bundle.certificate();
    let spk = bundle.signed_prekey().key();
    let ek = X25519Secret::generate(rng);
    let dh1 = me.agreement_secret().dh(spk)?;
    let dh2 = ek.dh(their.device().agreement())?;
    let dh3 = ek.dh(spk)?;
    let dh4 = bundle.one_time().map(|o| ek.dh(o.key())).transpose()?;
    let (ct, ss) = crypto::mlkem_encapsulate(bundle.kem_prekey().key(), rng)?;
    let mut parts: Vec<&[u8]> = vec![&dh1[..], &dh2[..], &dh3[..]];
    if let Some(d) = &dh4 {
        parts.push(&d[..]);
    }
    let keys = kdf(&parts, &ss)?;

    // The initial-message prefix (PQXDH §3.3: IK_A, EK_A, prekey identifiers, CT).
    let mut w = Writer::with_capacity(MAX_INITIAL_PREFIX_LEN).header(OBJ_INITIAL, VERSION);
    w.var(&my_cert.encode());
    w.u8(keys::KEY_TYPE_X25519).raw(ek.public());
    w.u32(bundle.signed_prekey().id());
    match bundle.one_time() {
        Some(o) => w.bool(true).u32(o.id()),
        None => w.bool(false),
    };
    w.u8(bundle.kem_prekey().kind().to_byte()).u32(bundle.kem_prekey().id());
    w.u8(keys::KEY_TYPE_MLKEM1024).raw(&ct[..]);
    let prefix = w.into_vec();

    let seed = SessionSeed {
        handshake_id: handshake_id(&prefix),
        ad_hash: ad_hash(my_cert, their),
        remote_account: *their.account(),
        remote_cert: their.clone(),
        rk: keys.rk.clone(),
        hka: keys.hka.clone(),
        nhkb: keys.nhkb.clone(),
    };
    let session = Session::new_initiator(rng, seed, *spk, prefix)?;
    Ok((session, keys))
}

/// A parsed initial message (type 0x11, version 1):
/// `11 01 | var(initiator certificate) | 05 EK[32] | spk_id u32 | has_opk u8 | [opk_id u32] |
/// kem_kind u8 | kem_id u32 | 08 CT[1568] | var(ratchet message)`.
pub(crate) struct InitialMessage<'a> {
    prefix: &'a [u8],
    cert: &'a [u8],
    ek: [u8; 32],
    spk_id: u32,
    opk_id: Option<u32>,
    kem_kind: KemPrekeyKind,
    kem_id: u32,
    ct: Box<[u8; MLKEM_CT_LEN]>,
    inner: &'a [u8],
}

impl<'a> InitialMessage<'a> {
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_INITIAL, VERSION)?;
        let cert = r.var(MAX_CERT_LEN)?;
        let ek = keys::read_x(&mut r)?;
        let spk_id = r.u32()?;
        let opk_id = if r.bool("has_opk")? { Some(r.u32()?) } else { None };
        let kem_kind = KemPrekeyKind::from_byte(r.u8()?)?;
        let kem_id = r.u32()?;
        let ct = keys::read_mlkem(&mut r)?;
        let prefix = bytes.get(..bytes.len() - r.remaining()).ok_or(DecodeError::Truncated)?;
        let inner = r.var(crate::padding::MAX_PADDED_LEN + ratchet::MESSAGE_OVERHEAD)?;
        r.finish()?;
        Ok(Self { prefix, cert, ek, spk_id, opk_id, kem_kind, kem_id, ct, inner })
    }

    pub(crate) fn handshake_id(&self) -> [u8; 32] {
        handshake_id(self.prefix)
    }

    pub(crate) fn inner(&self) -> Result<RatchetMessage<'a>, DecodeError> {
        RatchetMessage::decode(self.inner)
    }
}

/// What kind of message some bytes are, for routing before decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// An initial message: route it to the session with this handshake id, or accept it with
    /// the prekey store when there is none.
    Initial {
        /// The handshake id ([`Session::handshake_id`]).
        handshake_id: [u8; 32],
    },
    /// A ratchet message for an established session.
    Ratchet,
}

/// Classifies a message (fully parsing it) without decrypting anything.
pub fn message_kind(bytes: &[u8]) -> Result<MessageKind, DecodeError> {
    match bytes.first() {
        Some(&OBJ_INITIAL) => {
            let m = InitialMessage::decode(bytes)?;
            m.inner()?;
            Ok(MessageKind::Initial { handshake_id: m.handshake_id() })
        }
        Some(_) => RatchetMessage::decode(bytes).map(|_| MessageKind::Ratchet),
        None => Err(DecodeError::Truncated),
    }
}

impl Session {
    /// Decrypts either kind of message for this session: a ratchet message, or a further initial
    /// message of the handshake this session came from (the initiator repeats the handshake
    /// until it hears back). An initial message of another handshake is
    /// [`DecryptError::Undecryptable`].
    pub fn decrypt_any<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        message: &[u8],
        ad: &[u8],
    ) -> Result<Decrypted, DecryptError> {
        if message.first() == Some(&OBJ_INITIAL) {
            let m = InitialMessage::decode(message)?;
            if !crypto::ct_eq(&m.handshake_id(), self.handshake_id()) {
                return Err(DecryptError::Undecryptable);
            }
            let inner = m.inner()?;
            return self.decrypt_parsed(rng, &inner, ad);
        }
        self.decrypt(rng, message, ad)
    }
}

struct DatedX {
    secret: X25519Secret,
    public: SignedPrekey,
    created: u64,
}

struct DatedKem {
    secret: MlKemSecret,
    public: KemPrekey,
    created: u64,
}

/// A device's prekey secrets and the replay cache of last-resort handshakes (PQXDH §3.4, §4.2).
/// Everything is in memory; the caller persists [`PrekeyStore::to_bytes`] (it holds secrets).
pub struct PrekeyStore {
    next_id: u32,
    signed: BTreeMap<u32, DatedX>,
    last_resort: BTreeMap<u32, DatedKem>,
    one_time: BTreeMap<u32, X25519Secret>,
    one_time_kem: BTreeMap<u32, MlKemSecret>,
    /// Replay id → (last-resort KEM prekey id, first seen).
    replay: BTreeMap<[u8; 32], (u32, u64)>,
}

/// A session accepted from an initial message, with that message's plaintext.
#[derive(Debug)]
pub struct Accepted {
    /// The new session; the peer is [`Session::remote_certificate`].
    pub session: Session,
    /// The first message.
    pub first: Decrypted,
}

impl Default for PrekeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl PrekeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            next_id: 1,
            signed: BTreeMap::new(),
            last_resort: BTreeMap::new(),
            one_time: BTreeMap::new(),
            one_time_kem: BTreeMap::new(),
            replay: BTreeMap::new(),
        }
    }

    fn take_id(&mut self) -> Result<u32, HandshakeError> {
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or(HandshakeError::TooManyPrekeys)?;
        Ok(id)
    }

    /// Generates a new signed X25519 prekey, which becomes the current one.
    pub fn generate_signed_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: u64,
        identity: &DeviceIdentity,
    ) -> Result<SignedPrekey, HandshakeError> {
        let id = self.take_id()?;
        let secret = X25519Secret::generate(rng);
        let public = SignedPrekey::sign(identity, id, *secret.public());
        self.signed.insert(id, DatedX { secret, public: public.clone(), created: now });
        while self.signed.len() > MAX_ROTATED_PREKEYS {
            self.signed.pop_first();
        }
        Ok(public)
    }

    /// Generates a new signed last-resort ML-KEM-1024 prekey, which becomes the current one.
    pub fn generate_last_resort_kem<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: u64,
        identity: &DeviceIdentity,
    ) -> Result<KemPrekey, HandshakeError> {
        let id = self.take_id()?;
        let (secret, pk) = crypto::mlkem_generate(rng);
        let public = KemPrekey::sign(identity, KemPrekeyKind::LastResort, id, pk);
        self.last_resort.insert(id, DatedKem { secret, public: public.clone(), created: now });
        while self.last_resort.len() > MAX_ROTATED_PREKEYS {
            self.last_resort.pop_first();
        }
        Ok(public)
    }

    /// Generates `count` one-time X25519 prekeys and `count` signed one-time ML-KEM prekeys.
    pub fn generate_one_time<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        identity: &DeviceIdentity,
        count: usize,
    ) -> Result<(Vec<OneTimePrekey>, Vec<KemPrekey>), HandshakeError> {
        let room =
            MAX_ONE_TIME_PREKEYS.saturating_sub(self.one_time.len().max(self.one_time_kem.len()));
        if count > room {
            return Err(HandshakeError::TooManyPrekeys);
        }
        let mut ec = Vec::with_capacity(count);
        let mut kem = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.take_id()?;
            let s = X25519Secret::generate(rng);
            ec.push(OneTimePrekey::new(id, *s.public()));
            self.one_time.insert(id, s);
            let id = self.take_id()?;
            let (sk, pk) = crypto::mlkem_generate(rng);
            kem.push(KemPrekey::sign(identity, KemPrekeyKind::OneTime, id, pk));
            self.one_time_kem.insert(id, sk);
        }
        Ok((ec, kem))
    }

    /// The newest signed prekey (to publish).
    pub fn current_signed_prekey(&self) -> Option<&SignedPrekey> {
        self.signed.values().max_by_key(|d| (d.created, d.public.id())).map(|d| &d.public)
    }

    /// The newest last-resort KEM prekey (to publish).
    pub fn current_last_resort(&self) -> Option<&KemPrekey> {
        self.last_resort.values().max_by_key(|d| (d.created, d.public.id())).map(|d| &d.public)
    }

    /// True when the current signed or last-resort prekey is older than
    /// [`PREKEY_ROTATION_SECS`] (or missing), or when the current last-resort key's replay
    /// entries are half of [`MAX_REPLAY_ENTRIES`].
    pub fn needs_rotation(&self, now: u64) -> bool {
        let newest_spk = self.signed.values().map(|d| d.created).max();
        let newest_lr = self.last_resort.values().map(|d| d.created).max();
        let crowded = self
            .current_last_resort()
            .is_some_and(|k| self.replay_entries_for(k.id()) >= MAX_REPLAY_ENTRIES / 2);
        match (newest_spk, newest_lr) {
            (Some(a), Some(b)) => crowded || now.saturating_sub(a.min(b)) >= PREKEY_ROTATION_SECS,
            _ => true,
        }
    }

    fn replay_entries_for(&self, kem_id: u32) -> usize {
        self.replay.values().filter(|(id, _)| *id == kem_id).count()
    }

    /// How many one-time prekeys of each kind (X25519, ML-KEM) remain.
    pub fn one_time_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.one_time_kem.len())
    }

    /// Forgets retired prekeys older than [`PREKEY_MAX_AGE_SECS`] (never the current ones) and
    /// replay entries older than the same window.
    pub fn prune(&mut self, now: u64) {
        let newest_spk = self.current_signed_prekey().map(SignedPrekey::id);
        let newest_lr = self.current_last_resort().map(KemPrekey::id);
        self.signed.retain(|id, d| {
            Some(*id) == newest_spk || now.saturating_sub(d.created) < PREKEY_MAX_AGE_SECS
        });
        self.last_resort.retain(|id, d| {
            Some(*id) == newest_lr || now.saturating_sub(d.created) < PREKEY_MAX_AGE_SECS
        });
        let live = &self.last_resort;
        self.replay.retain(|_, (kem_id, seen)| {
            live.contains_key(kem_id) && now.saturating_sub(*seen) < PREKEY_MAX_AGE_SECS
        });
    }

    /// Receives an initial message (PQXDH §3.4): verifies the initiator's certificate, finds
    /// the named prekeys, derives the keys, and decrypts the first message. Only when that
    /// message authenticates are the one-time prekeys deleted (single use) or, for a handshake
    /// that used only last-resort keys, its id remembered so a replay is refused (PQXDH §4.2).
    ///
    /// The caller must check the initiator's account key ([`Session::remote_account`]) against
    /// key transparency or its contact record before trusting the session.
    pub fn accept<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: u64,
        me: &DeviceIdentity,
        my_cert: &DeviceCertificate,
        message: &[u8],
        ad: &[u8],
    ) -> Result<Accepted, HandshakeError> {
        if my_cert.device() != me.public() {
            return Err(HandshakeError::IdentityMismatch);
        }
        let m = InitialMessage::decode(message)?;
        let inner = m.inner()?;
        let their = DeviceCertificate::decode_verified(m.cert)?;
        let hid = m.handshake_id();
        let rid = replay_id(&m.ek, &m.ct);
        let uses_one_time = m.opk_id.is_some() || m.kem_kind == KemPrekeyKind::OneTime;
        if !uses_one_time {
            if self.replay.contains_key(&rid) {
                return Err(HandshakeError::Replay);
            }
            if self.replay_entries_for(m.kem_id) >= MAX_REPLAY_ENTRIES {
                return Err(HandshakeError::ReplayCacheFull);
            }
        }
        let spk = self.signed.get(&m.spk_id).ok_or(HandshakeError::UnknownPrekey)?;
        if now.saturating_sub(spk.created) >= PREKEY_MAX_AGE_SECS {
            return Err(HandshakeError::ExpiredPrekey);
        }
        let kem_secret = match m.kem_kind {
            KemPrekeyKind::OneTime => {
                self.one_time_kem.get(&m.kem_id).ok_or(HandshakeError::UnknownPrekey)?
            }
            KemPrekeyKind::LastResort => {
                let d = self.last_resort.get(&m.kem_id).ok_or(HandshakeError::UnknownPrekey)?;
                if now.saturating_sub(d.created) >= PREKEY_MAX_AGE_SECS {
                    return Err(HandshakeError::ExpiredPrekey);
                }
                &d.secret
            }
        };
        let opk = match m.opk_id {
            Some(id) => Some(self.one_time.get(&id).ok_or(HandshakeError::UnknownPrekey)?),
            None => None,
        };

        let dh1 = spk.secret.dh(their.device().agreement())?;
        let dh2 = me.agreement_secret().dh(&m.ek)?;
        let dh3 = spk.secret.dh(&m.ek)?;
        let dh4 = opk.map(|o| o.dh(&m.ek)).transpose()?;
        let ss = kem_secret.decapsulate(&m.ct);
        let mut parts: Vec<&[u8]> = vec![&dh1[..], &dh2[..], &dh3[..]];
        if let Some(d) = &dh4 {
            parts.push(&d[..]);
        }
        let keys = kdf(&parts, &ss)?;
        let seed = SessionSeed {
            handshake_id: hid,
            ad_hash: ad_hash(&their, my_cert),
            remote_account: *their.account(),
            remote_cert: their,
            rk: keys.rk,
            hka: keys.hka,
            nhkb: keys.nhkb,
        };
        let mut session = Session::new_responder(seed, spk.secret.clone());
        let first = session.decrypt_parsed(rng, &inner, ad)?;

        // Authenticated: now consume.
        if let Some(id) = m.opk_id {
            self.one_time.remove(&id);
        }
        if m.kem_kind == KemPrekeyKind::OneTime {
            self.one_time_kem.remove(&m.kem_id);
        }
        if !uses_one_time {
            self.replay.insert(rid, (m.kem_id, now));
        }
        Ok(Accepted { session, first })
    }

    /// Serializes the store (type 0x21, version 1); holds secrets. Layout in PROTOCOL.md §7.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let Self { next_id, signed, last_resort, one_time, one_time_kem, replay } = self;
        let mut w = Writer::with_capacity(4096).header(OBJ_PREKEY_STORE, VERSION);
        w.u32(*next_id);
        w.u32(len32(signed.len()));
        for d in signed.values() {
            w.raw(&*d.secret.secret_bytes()).u64(d.created).var(&d.public.encode());
        }
        w.u32(len32(last_resort.len()));
        for d in last_resort.values() {
            w.raw(d.secret.secret_bytes()).u64(d.created).var(&d.public.encode());
        }
        w.u32(len32(one_time.len()));
        for (id, s) in one_time {
            w.u32(*id).raw(&*s.secret_bytes());
        }
        w.u32(len32(one_time_kem.len()));
        for (id, s) in one_time_kem {
            w.u32(*id).raw(s.secret_bytes());
        }
        w.u32(len32(replay.len()));
        for (h, (kem_id, t)) in replay {
            w.raw(h).u32(*kem_id).u64(*t);
        }
        Zeroizing::new(w.into_vec())
    }

    /// Restores a store serialized by [`Self::to_bytes`]; `device` is the owner's public keys
    /// (the stored public prekeys are re-verified against them).
    pub fn from_bytes(
        bytes: &[u8],
        device: &keys::DevicePublicKeys,
    ) -> Result<Self, HandshakeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_PREKEY_STORE, VERSION)?;
        let mut s = Self::new();
        s.next_id = r.u32()?;
        let dup = || HandshakeError::Malformed(DecodeError::InvalidValue("duplicate prekey id"));
        for _ in 0..r.count(MAX_ROTATED_PREKEYS)? {
            let secret = X25519Secret::from_bytes(&Zeroizing::new(r.array()?));
            let created = r.u64()?;
            let public = SignedPrekey::decode_verified(r.var(256)?, device)?;
            if public.key() != secret.public() {
                return Err(DecodeError::InvalidValue("signed prekey pair").into());
            }
            if s.signed.insert(public.id(), DatedX { secret, public, created }).is_some() {
                return Err(dup());
            }
        }
        for _ in 0..r.count(MAX_ROTATED_PREKEYS)? {
            let secret = MlKemSecret::from_bytes(&r.array()?);
            let created = r.u64()?;
            let public = KemPrekey::decode_verified(r.var(2048)?, device)?;
            if public.kind() != KemPrekeyKind::LastResort
                || !secret.matches_public(public.key())
                || !secret.is_well_formed()
            {
                return Err(DecodeError::InvalidValue("last-resort prekey pair").into());
            }
            if s.last_resort.insert(public.id(), DatedKem { secret, public, created }).is_some() {
                return Err(dup());
            }
        }
        for _ in 0..r.count(MAX_ONE_TIME_PREKEYS)? {
            let id = r.u32()?;
            if s.one_time
                .insert(id, X25519Secret::from_bytes(&Zeroizing::new(r.array()?)))
                .is_some()
            {
                return Err(dup());
            }
        }
        for _ in 0..r.count(MAX_ONE_TIME_PREKEYS)? {
            let id = r.u32()?;
            let secret = MlKemSecret::from_bytes(&r.array()?);
            if !secret.is_well_formed() {
                return Err(DecodeError::InvalidValue("one-time KEM secret").into());
            }
            if s.one_time_kem.insert(id, secret).is_some() {
                return Err(dup());
            }
        }
        for _ in 0..r.count(MAX_REPLAY_ENTRIES * MAX_ROTATED_PREKEYS)? {
            let h = r.array()?;
            let kem_id = r.u32()?;
            s.replay.insert(h, (kem_id, r.u64()?));
        }
        let max_id = [
            s.signed.keys().max(),
            s.last_resort.keys().max(),
            s.one_time.keys().max(),
            s.one_time_kem.keys().max(),
        ]
        .into_iter()
        .flatten()
        .max()
        .copied();
        if max_id.is_some_and(|m| m >= s.next_id) {
            return Err(DecodeError::InvalidValue("next prekey id").into());
        }
        r.finish()?;
        Ok(s)
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Debug for PrekeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { next_id, signed, last_resort, one_time, one_time_kem, replay } = self;
        f.debug_struct("PrekeyStore")
            .field("next_id", next_id)
            .field("signed", &signed.keys().collect::<Vec<_>>())
            .field("last_resort", &last_resort.keys().collect::<Vec<_>>())
            .field("one_time", &one_time.len())
            .field("one_time_kem", &one_time_kem.len())
            .field("replay_entries", &replay.len())
            .field("secrets", &"***")
            .finish()
    }
}
