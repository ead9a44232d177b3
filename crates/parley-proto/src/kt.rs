//! Key transparency: the value committed for an account in the directory and the server's
//! signature over each published (epoch, root) pair (docs/KT.md §2, §3). The directory itself
//! (tree, VRF, proofs) is the `akd` crate's; this module holds only what Parley defines on top.
//!
//! ```text
//! value(account)  = SHA-256("parley-kt-value-v1" ‖ u32 len(account_key) ‖ account_key
//!                                              ‖ u32 len(device_list) ‖ device_list)
//! tombstone       = SHA-256("parley-kt-deleted-v1")
//! signed root     = Ed25519(kt signing key, "parley-kt-root-v1" ‖ u64 epoch ‖ root[32])
//! ```

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::crypto;

/// Domain label of the committed value (docs/KT.md §2).
pub const DOMAIN_KT_VALUE: &[u8] = b"parley-kt-value-v1";
/// Domain label of a deleted account's value (docs/KT.md §2).
pub const DOMAIN_KT_DELETED: &[u8] = b"parley-kt-deleted-v1";
/// Domain label of a signed root (docs/KT.md §3).
pub const DOMAIN_KT_ROOT: &[u8] = b"parley-kt-root-v1";
/// Length of a committed value.
pub const KT_VALUE_LEN: usize = 32;
/// Length of a root signature.
pub const KT_SIGNATURE_LEN: usize = 64;

/// Why a signed root was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KtSignatureError {
    /// The public key is malformed or weak.
    #[error("malformed key-transparency signing key")]
    BadKey,
    /// The signature does not verify.
    #[error("the key-transparency root signature does not verify")]
    BadSignature,
}

fn len32(bytes: &[u8]) -> [u8; 4] {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes()
}

/// The value the directory commits for an account: a hash of its identity key and its signed
/// device list (docs/KT.md §2). Any change to either changes the value.
pub fn kt_value(account_key: &[u8], device_list: &[u8]) -> [u8; KT_VALUE_LEN] {
    // docs/KT.md §2: SHA-256 over length-prefixed fields under a domain label.
    crypto::sha256(&[
        DOMAIN_KT_VALUE,
        &len32(account_key),
        account_key,
        &len32(device_list),
        device_list,
    ])
}

/// The value committed for a deleted account (docs/KT.md §2).
pub fn kt_tombstone() -> [u8; KT_VALUE_LEN] {
    crypto::sha256(&[DOMAIN_KT_DELETED])
}

fn root_message(epoch: u64, root: &[u8; 32]) -> Vec<u8> {
    // docs/KT.md §3: "parley-kt-root-v1" ‖ u64 epoch (big-endian) ‖ root.
    let mut m = Vec::with_capacity(DOMAIN_KT_ROOT.len() + 8 + 32);
    m.extend_from_slice(DOMAIN_KT_ROOT);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(root);
    m
}

/// The server's key-transparency signing key (Ed25519). `Debug` never shows the secret.
pub struct KtSigningKey {
    key: crypto::Ed25519Secret,
}

impl std::fmt::Debug for KtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KtSigningKey").field("public", &self.public()).finish_non_exhaustive()
    }
}

impl KtSigningKey {
    /// A new random key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self { key: crypto::Ed25519Secret::generate(rng) }
    }

    /// The key from its 32-byte seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self { key: crypto::Ed25519Secret::from_bytes(seed) }
    }

    /// The 32-byte seed (to store it).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.key.secret_bytes()
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Signs a published (epoch, root) pair (docs/KT.md §3).
    pub fn sign_root(&self, epoch: u64, root: &[u8; 32]) -> [u8; KT_SIGNATURE_LEN] {
        // RFC 8032 §5.1.6 signature over the docs/KT.md §3 message.
        self.key.sign(&root_message(epoch, root))
    }
}

/// Verifies the server's signature over an (epoch, root) pair (docs/KT.md §3), strictly
/// (RFC 8032 §5.1.7 with canonical `S`, no small-order points).
pub fn verify_root_signature(
    public: &[u8; 32],
    epoch: u64,
    root: &[u8; 32],
    signature: &[u8; KT_SIGNATURE_LEN],
) -> Result<(), KtSignatureError> {
    crypto::ed25519_check_public(public).map_err(|_| KtSignatureError::BadKey)?;
    crypto::ed25519_verify(public, &root_message(epoch, root), signature)
        .map_err(|_| KtSignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn signed_roots_bind_epoch_root_and_key() {
        let mut rng = rand::rng();
        let k = KtSigningKey::generate(&mut rng);
        let root = [7u8; 32];
        let sig = k.sign_root(3, &root);
        assert_eq!(verify_root_signature(&k.public(), 3, &root, &sig), Ok(()));
        assert_eq!(
            verify_root_signature(&k.public(), 4, &root, &sig),
            Err(KtSignatureError::BadSignature)
        );
        assert_eq!(
            verify_root_signature(&k.public(), 3, &[8u8; 32], &sig),
            Err(KtSignatureError::BadSignature)
        );
        let other = KtSigningKey::generate(&mut rng);
        assert_eq!(
            verify_root_signature(&other.public(), 3, &root, &sig),
            Err(KtSignatureError::BadSignature)
        );
        let again = KtSigningKey::from_bytes(&k.secret_bytes());
        assert_eq!(again.public(), k.public());
        assert!(!format!("{k:?}").contains(&format!("{:?}", &k.secret_bytes()[..])));
    }

    #[test]
    fn values_separate_fields() {
        assert_ne!(kt_value(b"ab", b"c"), kt_value(b"a", b"bc"));
        assert_ne!(kt_value(b"a", b"b"), kt_tombstone());
        assert_eq!(kt_value(b"a", b"b"), kt_value(b"a", b"b"));
    }
}
