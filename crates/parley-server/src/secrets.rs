//! Shared key material (docs/OPERATIONS.md "Key material"): named secrets stored in the
//! database, sealed under a node master key that never enters the database.
//!
//! Every node of a cluster is given the same master key (`--master-key-file FILE` or the
//! environment variable `PARLEY_MASTER_KEY`: 32 random bytes in standard base64, for instance
//! from `openssl rand -base64 32`). A secret is stored as
//!
//! ```text
//! sealed = 0x01 || nonce[24] || XChaCha20-Poly1305(master key, nonce, AD, plaintext)
//! AD     = "parley secret v1\0" || name
//! ```
//!
//! The name is the associated data, so a sealed blob moved to another name (or altered) fails to
//! open. XChaCha20's 192-bit nonces are drawn at random for every seal, so there is no nonce
//! state to share between nodes. The first node to need a secret creates it (`INSERT … ON
//! CONFLICT DO NOTHING`); every other node loads the winner's value; changes are
//! compare-and-swap on a version number ([`Vault::replace`]).
//!
//! The franking keyring and the admin token use this today; the key-transparency signing and
//! VRF keys are meant to use the same mechanism (one name each).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::{Rng, RngExt};
use zeroize::Zeroizing;

use crate::store::{Store, StoreError};

/// The environment variable that may hold the master key (base64).
pub const MASTER_KEY_ENV: &str = "PARLEY_MASTER_KEY";
/// Name of the franking keyring secret.
pub const FRANKING_KEYRING: &str = "franking-keyring";
/// Name of the admin token secret.
pub const ADMIN_TOKEN: &str = "admin-token";
/// The key-transparency keys (VRF key, then signing key; docs/KT.md): the same on every node.
pub const KT_KEYS: &str = "kt-keys";
/// Which node publishes key-transparency epochs, until when (a lease; docs/OPERATIONS.md §10).
pub const KT_PUBLISHER: &str = "kt-publisher";

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const AD_PREFIX: &[u8] = b"parley secret v1\0";
/// Longest accepted master key text (a base64 key is 44 characters; whitespace around it is
/// allowed).
const MAX_KEY_TEXT: usize = 1024;

/// Why a secret could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The master key is malformed or unreadable.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A stored secret does not open under this master key (wrong key, or the row was altered).
    #[error(
        "the secret {0:?} in the database does not open with this master key (every node needs the same master key)"
    )]
    Open(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another node kept changing the secret.
    #[error("the secret {0:?} kept changing under concurrent updates; try again")]
    Contended(String),
}

/// The node master key. `Debug` never shows it; it is zeroized on drop.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Parses 32 bytes in standard base64 (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SecretsError> {
        if text.len() > MAX_KEY_TEXT {
            return Err(SecretsError::MasterKey("too long: expected 32 bytes in base64".into()));
        }
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| {
                SecretsError::MasterKey(
                    "not base64: expected 32 random bytes in base64 (openssl rand -base64 32)"
                        .into(),
                )
            })?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretsError::MasterKey(format!("{} bytes, expected 32", bytes.len())))?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// Reads a master key file (base64, as [`MasterKey::from_base64`]).
    pub fn from_file(path: &Path) -> Result<Self, SecretsError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| SecretsError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        if meta.len() > MAX_KEY_TEXT as u64 {
            return Err(SecretsError::MasterKey(format!("{} is too large", path.display())));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            SecretsError::MasterKey(format!("cannot read {}: {e}", path.display()))
        })?);
        Self::from_base64(&text)
            .map_err(|e| SecretsError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// A fresh random key (tests, and `openssl rand -base64 32` for operators).
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut k[..]);
        Self(k)
    }

    /// The key in standard base64 (for writing a key file in tests and tools).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&self.0[..]))
    }

    fn cipher(&self, name: &str) -> Result<XChaCha20Poly1305, SecretsError> {
        XChaCha20Poly1305::new_from_slice(&self.0[..])
            .map_err(|_| SecretsError::Open(name.to_string()))
    }
}

fn associated_data(name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + name.len());
    ad.extend_from_slice(AD_PREFIX);
    ad.extend_from_slice(name.as_bytes());
    ad
}

/// Seals `plaintext` for secret `name` (module docs for the format).
pub fn seal(key: &MasterKey, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
    // docs/OPERATIONS.md §10 "Key material": XChaCha20-Poly1305 (RFC 8439 §2.8 AEAD with the
    // XChaCha 192-bit nonce extension), a fresh random nonce per seal, the name as AD.
    let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
    let ad = associated_data(name);
    let ct = key
        .cipher(name)?
        .encrypt(&XNonce::from(nonce_bytes), Payload { msg: plaintext, aad: &ad })
        .map_err(|_| SecretsError::Open(name.to_string()))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a sealed secret `name`; any mismatch (key, name, format, tampering) is an error.
pub fn open(
    key: &MasterKey,
    name: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    // One opaque error for every failure (format, length, key, name, tag): the AEAD's tag
    // check is constant-time inside chacha20poly1305.
    let fail = || SecretsError::Open(name.to_string());
    let (&format, rest) = sealed.split_first().ok_or_else(fail)?;
    if format != FORMAT {
        return Err(fail());
    }
    let (nonce, ct) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(fail)?;
    let ad = associated_data(name);
    key.cipher(name)?
        .decrypt(&XNonce::from(*nonce), Payload { msg: ct, aad: &ad })
        .map(Zeroizing::new)
        .map_err(|_| fail())
}

/// A secret in clear with the version it was read at.
pub struct Loaded {
    /// The plaintext.
    pub value: Zeroizing<Vec<u8>>,
    /// Its version (for [`Vault::replace`]).
    pub version: u64,
    /// True when this call created it.
    pub created: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("version", &self.version)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Named secrets in the store, sealed under the master key.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    key: MasterKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault over `store` with `key`.
    pub fn new(store: Arc<dyn Store>, key: MasterKey) -> Self {
        Self { store, key }
    }

    /// Reads secret `name`.
    pub async fn load(&self, name: &str) -> Result<Option<Loaded>, SecretsError> {
        let Some(row) = self.store.secret(name).await? else { return Ok(None) };
        let value = open(&self.key, name, &row.value)?;
        Ok(Some(Loaded { value, version: row.version, created: false }))
    }

    /// Reads secret `name`, creating it with `initial()` if it does not exist. Race-safe: when
    /// several nodes start at once, one creates it and all end up with that node's value.
    pub async fn load_or_create(
        &self,
        name: &str,
        initial: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, SecretsError>,
        now: u64,
    ) -> Result<Loaded, SecretsError> {
        if let Some(found) = self.load(name).await? {
            return Ok(found);
        }
        let value = initial()?;
        if self.store.create_secret(name, seal(&self.key, name, &value)?, now).await? {
            return Ok(Loaded { value, version: 1, created: true });
        }
        // Another node created it between our read and our insert: take its value.
        self.load(name).await?.ok_or_else(|| SecretsError::Contended(name.to_string()))
    }

    /// Replaces secret `name` if it is still at `version`; `false` when another node changed
    /// it first (reload and retry).
    pub async fn replace(
        &self,
        name: &str,
        version: u64,
        value: &[u8],
        now: u64,
    ) -> Result<bool, SecretsError> {
        let sealed = seal(&self.key, name, value)?;
        Ok(self.store.replace_secret(name, version, sealed, now).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_their_key_and_name() {
        let key = MasterKey::generate();
        let sealed = seal(&key, "admin-token", b"hunter2").unwrap();
        assert_eq!(&open(&key, "admin-token", &sealed).unwrap()[..], b"hunter2");
        assert!(open(&key, "franking-keyring", &sealed).is_err(), "moved to another name");
        assert!(open(&MasterKey::generate(), "admin-token", &sealed).is_err(), "another key");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&key, "admin-token", &bad).is_err(), "flipped byte {i}");
        }
        assert!(open(&key, "admin-token", &sealed[..sealed.len() - 1]).is_err());
        assert!(open(&key, "admin-token", &[]).is_err());
        assert!(open(&key, "admin-token", &[1; 10]).is_err());
        // Two seals of the same value differ (random nonces).
        assert_ne!(sealed, seal(&key, "admin-token", b"hunter2").unwrap());
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn master_keys_parse_strictly() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let again = MasterKey::from_base64(&format!("  {}\n", &*text)).unwrap();
        let sealed = seal(&key, "n", b"v").unwrap();
        assert_eq!(&open(&again, "n", &sealed).unwrap()[..], b"v");
        for bad in ["", "not base64!", "AAAA", &"A".repeat(5000)] {
            assert!(MasterKey::from_base64(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, text.as_bytes()).unwrap();
        MasterKey::from_file(&path).unwrap();
        let err = MasterKey::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..200)) {
            let key = MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
            proptest::prop_assert!(open(&key, "n", &bytes).is_err());
        }
    }
}
