//! Identity keys, device certificates, device lists and prekeys (docs/PROTOCOL.md §3).
//!
//! ```text
//!  account identity (Ed25519) ──signs──▶ device certificate (account, device id, Ed25519 + X25519)
//!            │                                      │
//!            └──signs──▶ device list (version)      └─ device Ed25519 ──signs──▶ signed X25519 prekey
//!                                                                        ├──signs──▶ ML-KEM-1024 last-resort prekey
//!                                                                        └──signs──▶ one-time ML-KEM-1024 prekeys
//!                                                      one-time X25519 prekeys (unsigned, as in X3DH/PQXDH)
//! ```
//!
//! Parley departs from PQXDH's single XEdDSA identity key (PQXDH §2.2, §2.4): each device has an
//! Ed25519 key that signs and a separate X25519 key that agrees, bound together by the device
//! certificate. Public keys carry a type byte in every encoding: [`KEY_TYPE_ED25519`],
//! [`KEY_TYPE_X25519`], [`KEY_TYPE_MLKEM1024`].

use core::fmt;

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{
    self, ED25519_LEN, Ed25519Secret, MLKEM_PK_LEN, SIG_LEN, X25519_LEN, X25519Secret,
};
use crate::encoding::{DecodeError, Reader, Writer};

/// Type byte of an X25519 public key (the value Signal uses for Curve25519 keys).
pub const KEY_TYPE_X25519: u8 = 0x05;
/// Type byte of an Ed25519 public key.
pub const KEY_TYPE_ED25519: u8 = 0x06;
/// Type byte of an ML-KEM-1024 encapsulation key (the value Signal uses for its 1024 KEM keys).
pub const KEY_TYPE_MLKEM1024: u8 = 0x08;

pub(crate) const OBJ_DEVICE_CERT: u8 = 0x01;
pub(crate) const OBJ_DEVICE_LIST: u8 = 0x02;
pub(crate) const OBJ_SIGNED_PREKEY: u8 = 0x03;
pub(crate) const OBJ_KEM_PREKEY: u8 = 0x04;
pub(crate) const OBJ_ONE_TIME_PREKEY: u8 = 0x05;
pub(crate) const OBJ_BUNDLE: u8 = 0x06;
pub(crate) const OBJ_ACCOUNT_SECRET: u8 = 0x22;
pub(crate) const OBJ_DEVICE_SECRET: u8 = 0x23;
pub(crate) const VERSION: u8 = 1;

/// Signature domain of a device certificate.
pub const DOMAIN_DEVICE_CERT: &[u8] = b"Parley device certificate v1";
/// Signature domain of a device list.
pub const DOMAIN_DEVICE_LIST: &[u8] = b"Parley device list v1";
/// Signature domain of a signed X25519 prekey.
pub const DOMAIN_SIGNED_PREKEY: &[u8] = b"Parley signed prekey v1";
/// Signature domain of an ML-KEM-1024 prekey (last-resort or one-time).
pub const DOMAIN_KEM_PREKEY: &[u8] = b"Parley KEM prekey v1";

/// Most devices one account may list.
pub const MAX_DEVICES: usize = 16;
/// Largest encoded device certificate accepted by decoders.
pub const MAX_CERT_LEN: usize = 256;

/// Why a key object failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a well-formed encoding.
    #[error("malformed key object: {0}")]
    Decode(#[from] DecodeError),
    /// A public key is not a valid point or KEM key.
    #[error("invalid public key")]
    InvalidKey,
    /// A signature does not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// The certificate or list was issued by another account than the one expected.
    #[error("issued by another account")]
    WrongAccount,
}

fn write_ed(w: &mut Writer, k: &[u8; ED25519_LEN]) {
    w.u8(KEY_TYPE_ED25519).raw(k);
}
fn write_x(w: &mut Writer, k: &[u8; X25519_LEN]) {
    w.u8(KEY_TYPE_X25519).raw(k);
}
fn key_type(r: &mut Reader<'_>, expected: u8) -> Result<(), DecodeError> {
    let found = r.u8()?;
    if found != expected {
        return Err(DecodeError::WrongKeyType { found, expected });
    }
    Ok(())
}
pub(crate) fn read_ed(r: &mut Reader<'_>) -> Result<[u8; ED25519_LEN], DecodeError> {
    key_type(r, KEY_TYPE_ED25519)?;
    r.array()
}
pub(crate) fn read_x(r: &mut Reader<'_>) -> Result<[u8; X25519_LEN], DecodeError> {
    key_type(r, KEY_TYPE_X25519)?;
    r.array()
}
pub(crate) fn write_mlkem(w: &mut Writer, k: &[u8; MLKEM_PK_LEN]) {
    w.u8(KEY_TYPE_MLKEM1024).raw(k);
}
pub(crate) fn read_mlkem(r: &mut Reader<'_>) -> Result<Box<[u8; MLKEM_PK_LEN]>, DecodeError> {
    key_type(r, KEY_TYPE_MLKEM1024)?;
    Ok(Box::new(r.array()?))
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Account identity
// ---------------------------------------------------------------------------------------------

/// An account's public identity key (Ed25519), checked to be a valid non-weak point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountPublicKey([u8; ED25519_LEN]);

impl AccountPublicKey {
    /// Checks and wraps 32 bytes.
    pub fn from_bytes(bytes: [u8; ED25519_LEN]) -> Result<Self, KeyError> {
        crypto::ed25519_check_public(&bytes).map_err(|_| KeyError::InvalidKey)?;
        Ok(Self(bytes))
    }
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; ED25519_LEN] {
        &self.0
    }
    /// The encoding with its type byte (33 bytes).
    pub fn encode(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        let (t, k) = out.split_at_mut(1);
        t.copy_from_slice(&[KEY_TYPE_ED25519]);
        k.copy_from_slice(&self.0);
        out
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, KeyError> {
        Self::from_bytes(read_ed(r)?)
    }
    fn verify(&self, domain: &[u8], body: &[u8], sig: &[u8; SIG_LEN]) -> Result<(), ()> {
        let mut msg = Vec::with_capacity(domain.len() + body.len());
        msg.extend_from_slice(domain);
        msg.extend_from_slice(body);
        crypto::ed25519_verify(&self.0, &msg, sig).map_err(|_| ())
    }
}

impl fmt::Debug for AccountPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountPublicKey({}…)", hex8(&self.0))
    }
}

/// An account's identity key pair. It certifies devices and signs device lists; it stays on
/// the device that created the account (and in the encrypted backup).
pub struct AccountIdentity {
    key: Ed25519Secret,
    public: AccountPublicKey,
}

impl AccountIdentity {
    /// A fresh account identity from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let key = Ed25519Secret::generate(rng);
        let public = AccountPublicKey(key.public());
        Self { key, public }
    }

    /// The public key.
    pub fn public(&self) -> &AccountPublicKey {
        &self.public
    }

    /// Issues a certificate binding `device` (id and public keys) to this account.
    pub fn certify(&self, device_id: u32, device: &DevicePublicKeys) -> DeviceCertificate {
        let mut cert = DeviceCertificate {
            account: self.public,
            device_id,
            device: device.clone(),
            signature: [0u8; SIG_LEN],
        };
        let body = cert.body();
        cert.signature = self.sign(DOMAIN_DEVICE_CERT, &body);
        cert
    }

    /// Signs a device list at `version` naming `devices`.
    pub fn sign_device_list(
        &self,
        version: u64,
        mut devices: Vec<(u32, DevicePublicKeys)>,
    ) -> Result<DeviceList, KeyError> {
        devices.sort_by_key(|(id, _)| *id);
        let mut list =
            DeviceList { account: self.public, version, devices, signature: [0; SIG_LEN] };
        list.check_shape()?;
        let body = list.body();
        list.signature = self.sign(DOMAIN_DEVICE_LIST, &body);
        Ok(list)
    }

    fn sign(&self, domain: &[u8], body: &[u8]) -> [u8; SIG_LEN] {
        let mut msg = Zeroizing::new(Vec::with_capacity(domain.len() + body.len()));
        msg.extend_from_slice(domain);
        msg.extend_from_slice(body);
        self.key.sign(&msg)
    }

    /// Serializes the secret key (type 0x22, version 1, 32-byte seed). Handle as a secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(34).header(OBJ_ACCOUNT_SECRET, VERSION);
        w.raw(&*self.key.secret_bytes());
        Zeroizing::new(w.into_vec())
    }

    /// Restores a key serialized by [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_ACCOUNT_SECRET, VERSION)?;
        let seed = Zeroizing::new(r.array::<32>()?);
        r.finish()?;
        let key = Ed25519Secret::from_bytes(&seed);
        let public = AccountPublicKey(key.public());
        Ok(Self { key, public })
    }
}

impl fmt::Debug for AccountIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { key: _, public } = self;
        f.debug_struct("AccountIdentity").field("public", public).field("key", &"***").finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Device identity and certificate
// ---------------------------------------------------------------------------------------------

/// A device's public identity: an Ed25519 signing key and an X25519 agreement key.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePublicKeys {
    signing: [u8; ED25519_LEN],
    agreement: [u8; X25519_LEN],
}

impl DevicePublicKeys {
    /// Checks and wraps the two keys.
    pub fn new(signing: [u8; ED25519_LEN], agreement: [u8; X25519_LEN]) -> Result<Self, KeyError> {
        crypto::ed25519_check_public(&signing).map_err(|_| KeyError::InvalidKey)?;
        Ok(Self { signing, agreement })
    }
    /// The Ed25519 signing key.
    pub fn signing(&self) -> &[u8; ED25519_LEN] {
        &self.signing
    }
    /// The X25519 agreement key (IK in PQXDH).
    pub fn agreement(&self) -> &[u8; X25519_LEN] {
        &self.agreement
    }
    pub(crate) fn write(&self, w: &mut Writer) {
        write_ed(w, &self.signing);
        write_x(w, &self.agreement);
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, KeyError> {
        let signing = read_ed(r)?;
        let agreement = read_x(r)?;
        Self::new(signing, agreement)
    }
    fn verify(&self, domain: &[u8], body: &[u8], sig: &[u8; SIG_LEN]) -> Result<(), ()> {
        let mut msg = Vec::with_capacity(domain.len() + body.len());
        msg.extend_from_slice(domain);
        msg.extend_from_slice(body);
        crypto::ed25519_verify(&self.signing, &msg, sig).map_err(|_| ())
    }
}

impl fmt::Debug for DevicePublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKeys(sign {}…, dh {}…)", hex8(&self.signing), hex8(&self.agreement))
    }
}

/// A device's identity key pairs.
pub struct DeviceIdentity {
    signing: Ed25519Secret,
    agreement: X25519Secret,
    public: DevicePublicKeys,
}

impl DeviceIdentity {
    /// A fresh device identity from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let signing = Ed25519Secret::generate(rng);
        let agreement = X25519Secret::generate(rng);
        let public = DevicePublicKeys { signing: signing.public(), agreement: *agreement.public() };
        Self { signing, agreement, public }
    }

    /// The public keys.
    pub fn public(&self) -> &DevicePublicKeys {
        &self.public
    }

    pub(crate) fn agreement_secret(&self) -> &X25519Secret {
        &self.agreement
    }

    pub(crate) fn sign(&self, domain: &[u8], body: &[u8]) -> [u8; SIG_LEN] {
        let mut msg = Vec::with_capacity(domain.len() + body.len());
        msg.extend_from_slice(domain);
        msg.extend_from_slice(body);
        self.signing.sign(&msg)
    }

    /// Serializes the secret keys (type 0x23, version 1: Ed25519 seed, X25519 scalar).
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(66).header(OBJ_DEVICE_SECRET, VERSION);
        w.raw(&*self.signing.secret_bytes()).raw(&*self.agreement.secret_bytes());
        Zeroizing::new(w.into_vec())
    }

    /// Restores keys serialized by [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_DEVICE_SECRET, VERSION)?;
        let s = Zeroizing::new(r.array::<32>()?);
        let a = Zeroizing::new(r.array::<32>()?);
        r.finish()?;
        let signing = Ed25519Secret::from_bytes(&s);
        let agreement = X25519Secret::from_bytes(&a);
        let public = DevicePublicKeys { signing: signing.public(), agreement: *agreement.public() };
        Ok(Self { signing, agreement, public })
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { signing: _, agreement: _, public } = self;
        f.debug_struct("DeviceIdentity").field("public", public).field("secrets", &"***").finish()
    }
}

/// A device certificate: the account key's signature over (account, device id, device keys).
///
/// Encoding (type 0x01, version 1): `01 01 | 06 account[32] | device_id u32 | 06 sign[32] |
/// 05 dh[32] | signature[64]`; the signature covers `DOMAIN_DEVICE_CERT || encoding without
/// the signature`.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    account: AccountPublicKey,
    device_id: u32,
    device: DevicePublicKeys,
    signature: [u8; SIG_LEN],
}

impl DeviceCertificate {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(110).header(OBJ_DEVICE_CERT, VERSION);
        write_ed(&mut w, self.account.as_bytes());
        w.u32(self.device_id);
        self.device.write(&mut w);
        w.into_vec()
    }

    /// The encoded certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and verifies a certificate: well-formed, and signed by the account key it names.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_DEVICE_CERT, VERSION)?;
        let account = AccountPublicKey::read(&mut r)?;
        let device_id = r.u32()?;
        let device = DevicePublicKeys::read(&mut r)?;
        let signature = r.array()?;
        r.finish()?;
        let cert = Self { account, device_id, device, signature };
        cert.account
            .verify(DOMAIN_DEVICE_CERT, &cert.body(), &cert.signature)
            .map_err(|_| KeyError::BadSignature("device certificate"))?;
        Ok(cert)
    }

    /// The certifying account.
    pub fn account(&self) -> &AccountPublicKey {
        &self.account
    }
    /// The device id within the account.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }
    /// The certified device keys.
    pub fn device(&self) -> &DevicePublicKeys {
        &self.device
    }
}

impl fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("account", &self.account)
            .field("device_id", &self.device_id)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A versioned list of an account's devices, signed by the account key (Sesame §2; the
/// version is monotonic so that an old list cannot be replayed).
///
/// Encoding (type 0x02, version 1): `02 01 | 06 account[32] | version u64 | count u32 |
/// (device_id u32 | 06 sign[32] | 05 dh[32])* | signature[64]`, devices sorted by id, ids unique.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceList {
    account: AccountPublicKey,
    version: u64,
    devices: Vec<(u32, DevicePublicKeys)>,
    signature: [u8; SIG_LEN],
}

impl DeviceList {
    fn check_shape(&self) -> Result<(), KeyError> {
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return Err(DecodeError::InvalidValue("device count").into());
        }
        if self.devices.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
            return Err(DecodeError::InvalidValue("device ids not sorted and unique").into());
        }
        Ok(())
    }

    fn body(&self) -> Vec<u8> {
        let mut w =
            Writer::with_capacity(50 + 70 * self.devices.len()).header(OBJ_DEVICE_LIST, VERSION);
        write_ed(&mut w, self.account.as_bytes());
        w.u64(self.version);
        w.u32(u32::try_from(self.devices.len()).unwrap_or(u32::MAX));
        for (id, keys) in &self.devices {
            w.u32(*id);
            keys.write(&mut w);
        }
        w.into_vec()
    }

    /// The encoded list.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and verifies a list signed by `account`.
    pub fn decode_verified(bytes: &[u8], account: &AccountPublicKey) -> Result<Self, KeyError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_DEVICE_LIST, VERSION)?;
        let acct = AccountPublicKey::read(&mut r)?;
        let version = r.u64()?;
        let n = r.count(MAX_DEVICES)?;
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u32()?;
            devices.push((id, DevicePublicKeys::read(&mut r)?));
        }
        let signature = r.array()?;
        r.finish()?;
        let list = Self { account: acct, version, devices, signature };
        list.check_shape()?;
        if &list.account != account {
            return Err(KeyError::WrongAccount);
        }
        list.account
            .verify(DOMAIN_DEVICE_LIST, &list.body(), &list.signature)
            .map_err(|_| KeyError::BadSignature("device list"))?;
        Ok(list)
    }

    /// The signing account.
    pub fn account(&self) -> &AccountPublicKey {
        &self.account
    }
    /// The list's version.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The listed devices, sorted by id.
    pub fn devices(&self) -> &[(u32, DevicePublicKeys)] {
        &self.devices
    }
    /// True when the list names this exact certificate's device id and keys.
    pub fn contains(&self, cert: &DeviceCertificate) -> bool {
        cert.account == self.account
            && self.devices.iter().any(|(id, k)| *id == cert.device_id && k == &cert.device)
    }
}

impl fmt::Debug for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceList")
            .field("account", &self.account)
            .field("version", &self.version)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Prekeys (public halves)
// ---------------------------------------------------------------------------------------------

/// A signed X25519 prekey (SPK in PQXDH §2.4).
///
/// Encoding (type 0x03, version 1): `03 01 | id u32 | 05 key[32] | signature[64]`; the device's
/// Ed25519 key signs `DOMAIN_SIGNED_PREKEY || encoding without the signature`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPrekey {
    id: u32,
    key: [u8; X25519_LEN],
    signature: [u8; SIG_LEN],
}

impl SignedPrekey {
    pub(crate) fn sign(identity: &DeviceIdentity, id: u32, key: [u8; X25519_LEN]) -> Self {
        let mut p = Self { id, key, signature: [0; SIG_LEN] };
        p.signature = identity.sign(DOMAIN_SIGNED_PREKEY, &p.body());
        p
    }
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(40).header(OBJ_SIGNED_PREKEY, VERSION);
        w.u32(self.id);
        write_x(&mut w, &self.key);
        w.into_vec()
    }
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }
    /// Decodes and checks the signature against the device's signing key.
    pub fn decode_verified(bytes: &[u8], device: &DevicePublicKeys) -> Result<Self, KeyError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_SIGNED_PREKEY, VERSION)?;
        let id = r.u32()?;
        let key = read_x(&mut r)?;
        let signature = r.array()?;
        r.finish()?;
        let p = Self { id, key, signature };
        device
            .verify(DOMAIN_SIGNED_PREKEY, &p.body(), &p.signature)
            .map_err(|_| KeyError::BadSignature("signed prekey"))?;
        Ok(p)
    }
    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The X25519 public key.
    pub fn key(&self) -> &[u8; X25519_LEN] {
        &self.key
    }
}

impl fmt::Debug for SignedPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedPrekey(id {}, {}…)", self.id, hex8(&self.key))
    }
}

/// The two kinds of ML-KEM prekey (PQXDH §2.4: PQSPK last-resort and PQOPK one-time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KemPrekeyKind {
    /// Signed last-resort key, used when one-time keys run out; may be used more than once.
    LastResort,
    /// Signed one-time key, deleted after one use.
    OneTime,
}

impl KemPrekeyKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::LastResort => 1,
            Self::OneTime => 2,
        }
    }
    pub(crate) fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(Self::LastResort),
            2 => Ok(Self::OneTime),
            _ => Err(DecodeError::InvalidValue("KEM prekey kind")),
        }
    }
}

/// A signed ML-KEM-1024 prekey.
///
/// Encoding (type 0x04, version 1): `04 01 | kind u8 (1 last-resort, 2 one-time) | id u32 |
/// 08 key[1568] | signature[64]`; the device's Ed25519 key signs `DOMAIN_KEM_PREKEY || encoding
/// without the signature` (the kind is signed, so one kind cannot pass for the other).
#[derive(Clone, PartialEq, Eq)]
pub struct KemPrekey {
    kind: KemPrekeyKind,
    id: u32,
    key: Box<[u8; MLKEM_PK_LEN]>,
    signature: [u8; SIG_LEN],
}

impl KemPrekey {
    pub(crate) fn sign(
        identity: &DeviceIdentity,
        kind: KemPrekeyKind,
        id: u32,
        key: Box<[u8; MLKEM_PK_LEN]>,
    ) -> Self {
        let mut p = Self { kind, id, key, signature: [0; SIG_LEN] };
        p.signature = identity.sign(DOMAIN_KEM_PREKEY, &p.body());
        p
    }
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1580).header(OBJ_KEM_PREKEY, VERSION);
        w.u8(self.kind.to_byte()).u32(self.id);
        write_mlkem(&mut w, &self.key);
        w.into_vec()
    }
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }
    /// Decodes, checks the key (FIPS 203 §7.2) and the signature against the device key.
    pub fn decode_verified(bytes: &[u8], device: &DevicePublicKeys) -> Result<Self, KeyError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_KEM_PREKEY, VERSION)?;
        let kind = KemPrekeyKind::from_byte(r.u8()?)?;
        let id = r.u32()?;
        let key = read_mlkem(&mut r)?;
        let signature = r.array()?;
        r.finish()?;
        let p = Self { kind, id, key, signature };
        device
            .verify(DOMAIN_KEM_PREKEY, &p.body(), &p.signature)
            .map_err(|_| KeyError::BadSignature("KEM prekey"))?;
        crypto::mlkem_check_public(&p.key).map_err(|_| KeyError::InvalidKey)?;
        Ok(p)
    }
    /// Last-resort or one-time.
    pub fn kind(&self) -> KemPrekeyKind {
        self.kind
    }
    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }
    pub(crate) fn key(&self) -> &[u8; MLKEM_PK_LEN] {
        &self.key
    }
}

impl fmt::Debug for KemPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPrekey({:?}, id {}, {}…)", self.kind, self.id, hex8(&self.key[..]))
    }
}

/// An unsigned one-time X25519 prekey (OPK in PQXDH §2.4).
///
/// Encoding (type 0x05, version 1): `05 01 | id u32 | 05 key[32]`.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimePrekey {
    id: u32,
    key: [u8; X25519_LEN],
}

impl OneTimePrekey {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(39).header(OBJ_ONE_TIME_PREKEY, VERSION);
        w.u32(self.id);
        write_x(&mut w, &self.key);
        w.into_vec()
    }
    /// Decodes a one-time prekey.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_ONE_TIME_PREKEY, VERSION)?;
        let id = r.u32()?;
        let key = read_x(&mut r)?;
        r.finish()?;
        Ok(Self { id, key })
    }
    pub(crate) fn new(id: u32, key: [u8; X25519_LEN]) -> Self {
        Self { id, key }
    }
    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The X25519 public key.
    pub fn key(&self) -> &[u8; X25519_LEN] {
        &self.key
    }
}

impl fmt::Debug for OneTimePrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OneTimePrekey(id {}, {}…)", self.id, hex8(&self.key))
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles
// ---------------------------------------------------------------------------------------------

/// Largest encoded bundle a decoder accepts.
pub const MAX_BUNDLE_LEN: usize = 4096;

/// A prekey bundle as received from the server: untrusted. Its only exit is
/// [`PrekeyBundleIn::validate`].
///
/// Encoding (type 0x06, version 1): `06 01 | var(device certificate) | var(signed prekey) |
/// var(KEM prekey) | has_one_time u8 | [var(one-time prekey)]`.
#[derive(Debug, Clone)]
pub struct PrekeyBundleIn {
    cert: Vec<u8>,
    signed_prekey: Vec<u8>,
    kem_prekey: Vec<u8>,
    one_time: Option<Vec<u8>>,
}

impl PrekeyBundleIn {
    /// Assembles a bundle from its encoded parts (as a server stores them).
    pub fn from_parts(
        cert: Vec<u8>,
        signed_prekey: Vec<u8>,
        kem_prekey: Vec<u8>,
        one_time: Option<Vec<u8>>,
    ) -> Self {
        Self { cert, signed_prekey, kem_prekey, one_time }
    }

    /// Parses the bundle's outer encoding (nothing is verified yet).
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len() as u64,
                max: MAX_BUNDLE_LEN as u64,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        r.header(OBJ_BUNDLE, VERSION)?;
        let cert = r.var(MAX_CERT_LEN)?.to_vec();
        let signed_prekey = r.var(256)?.to_vec();
        let kem_prekey = r.var(2048)?.to_vec();
        let one_time = if r.bool("has_one_time")? { Some(r.var(256)?.to_vec()) } else { None };
        r.finish()?;
        Ok(Self { cert, signed_prekey, kem_prekey, one_time })
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(2048).header(OBJ_BUNDLE, VERSION);
        w.var(&self.cert).var(&self.signed_prekey).var(&self.kem_prekey);
        match &self.one_time {
            Some(o) => {
                w.bool(true).var(o);
            }
            None => {
                w.bool(false);
            }
        }
        w.into_vec()
    }

    /// Verifies the chain account key → device certificate → prekey signatures, the key
    /// encodings and sizes. `expected_account`, when given (from key transparency or a pinned
    /// contact), must be the certificate's issuer.
    pub fn validate(
        self,
        expected_account: Option<&AccountPublicKey>,
    ) -> Result<PrekeyBundle, KeyError> {
        let cert = DeviceCertificate::decode_verified(&self.cert)?;
        if expected_account.is_some_and(|expected| expected != cert.account()) {
            return Err(KeyError::WrongAccount);
        }
        let signed_prekey = SignedPrekey::decode_verified(&self.signed_prekey, cert.device())?;
        let kem_prekey = KemPrekey::decode_verified(&self.kem_prekey, cert.device())?;
        let one_time = match &self.one_time {
            Some(b) => Some(OneTimePrekey::decode(b)?),
            None => None,
        };
        Ok(PrekeyBundle { cert, signed_prekey, kem_prekey, one_time })
    }
}

/// A prekey bundle whose signatures and keys have been verified.
#[derive(Debug, Clone)]
pub struct PrekeyBundle {
    cert: DeviceCertificate,
    signed_prekey: SignedPrekey,
    kem_prekey: KemPrekey,
    one_time: Option<OneTimePrekey>,
}

impl PrekeyBundle {
    /// The responder's device certificate.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.cert
    }
    /// The signed X25519 prekey.
    pub fn signed_prekey(&self) -> &SignedPrekey {
        &self.signed_prekey
    }
    /// The ML-KEM prekey (one-time, or last-resort when none was left).
    pub fn kem_prekey(&self) -> &KemPrekey {
        &self.kem_prekey
    }
    /// The one-time X25519 prekey, when one was left.
    pub fn one_time(&self) -> Option<&OneTimePrekey> {
        self.one_time.as_ref()
    }
    /// Back to the wire form.
    pub fn to_unverified(&self) -> PrekeyBundleIn {
        PrekeyBundleIn {
            cert: self.cert.encode(),
            signed_prekey: self.signed_prekey.encode(),
            kem_prekey: self.kem_prekey.encode(),
            one_time: self.one_time.as_ref().map(OneTimePrekey::encode),
        }
    }
}
