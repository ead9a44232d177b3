//! Safety numbers: 60 digits and a QR payload from the two account identity keys and stable
//! account identifiers (Signal's numeric fingerprint, iterated SHA-512; docs/PROTOCOL.md §8).
//! They depend only on account keys, so adding a device does not change them.
//!
//! ```text
//! fp(key, id) = H^5200 where H^0 = SHA-512(u16 version=1 ‖ 06 key[32] ‖ u32 len(id) ‖ id)
//!                             H^i = SHA-512(H^(i-1) ‖ 06 key[32])
//! digits(fp)  = for each of 6 chunks of 5 bytes of fp[0..30]: (big-endian u40 mod 100000), 5 digits
//! number      = digits(fp_a) ‖ digits(fp_b), the smaller 30-digit string first
//! QR payload  = 30 01 ‖ fp_local[0..32] ‖ fp_remote[0..32]
//! ```

use thiserror::Error;

use crate::crypto;
use crate::keys::AccountPublicKey;

/// Hash iterations (Signal uses 5200).
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;
/// Fingerprint format version, hashed first.
pub const SAFETY_NUMBER_VERSION: u16 = 1;
/// Longest stable account identifier accepted.
pub const MAX_ACCOUNT_ID_LEN: usize = 256;
const QR_TYPE: u8 = 0x30;
const QR_VERSION: u8 = 1;
/// Length of the QR payload.
pub const QR_LEN: usize = 2 + 32 + 32;

/// Why a safety number could not be computed or a QR payload did not match.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SafetyError {
    /// An account identifier is longer than [`MAX_ACCOUNT_ID_LEN`].
    #[error("account identifier too long")]
    IdTooLong,
    /// The scanned payload is malformed or of an unknown version.
    #[error("malformed QR payload")]
    Malformed,
    /// The scanned payload is well formed but does not match: the keys differ.
    #[error("safety numbers do not match")]
    Mismatch,
}

/// The safety number of a conversation, as seen by one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    qr: [u8; QR_LEN],
}

impl SafetyNumber {
    /// The 60 digits, without spaces; equal on both sides.
    pub fn digits(&self) -> &str {
        &self.digits
    }
    /// The digits in 12 groups of 5 separated by spaces, for display.
    pub fn grouped(&self) -> String {
        let chars: Vec<char> = self.digits.chars().collect();
        chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
    }
    /// The QR payload this side displays (local fingerprint first).
    pub fn qr_payload(&self) -> &[u8; QR_LEN] {
        &self.qr
    }
    /// Checks a payload scanned from the peer's screen: it must carry the peer's fingerprint
    /// first and ours second. Constant-time comparison.
    pub fn verify_scanned(&self, scanned: &[u8]) -> Result<(), SafetyError> {
        let Some((head, rest)) = scanned.split_first_chunk::<2>() else {
            return Err(SafetyError::Malformed);
        };
        if head != &[QR_TYPE, QR_VERSION] || rest.len() != 64 {
            return Err(SafetyError::Malformed);
        }
        let mut expected = [0u8; 64];
        let (ours, theirs) = self
            .qr
            .get(2..)
            .and_then(|s| s.split_first_chunk::<32>())
            .ok_or(SafetyError::Malformed)?;
        let (e1, e2) = expected.split_at_mut(32);
        e1.copy_from_slice(theirs);
        e2.copy_from_slice(ours);
        if crypto::ct_eq(rest, &expected) { Ok(()) } else { Err(SafetyError::Mismatch) }
    }
}

fn fingerprint(key: &AccountPublicKey, id: &[u8]) -> [u8; 64] {
    let enc = key.encode();
    let id_len = u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut h = crypto::sha512(&[&SAFETY_NUMBER_VERSION.to_be_bytes(), &enc, &id_len, id]);
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        h = crypto::sha512(&[&h, &enc]);
    }
    h
}

fn digits(fp: &[u8; 64]) -> String {
    let mut out = String::with_capacity(30);
    for chunk in fp.chunks_exact(5).take(6) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", v % 100_000));
    }
    out
}

/// Computes the safety number between `local` and `remote` accounts; `*_id` are their stable
/// account identifiers (Parley uses the UTF-8 username).
pub fn safety_number(
    local: &AccountPublicKey,
    local_id: &[u8],
    remote: &AccountPublicKey,
    remote_id: &[u8],
) -> Result<SafetyNumber, SafetyError> {
    if local_id.len() > MAX_ACCOUNT_ID_LEN || remote_id.len() > MAX_ACCOUNT_ID_LEN {
        return Err(SafetyError::IdTooLong);
    }
    let fl = fingerprint(local, local_id);
    let fr = fingerprint(remote, remote_id);
    let (dl, dr) = (digits(&fl), digits(&fr));
    let digits = if dl <= dr { dl + &dr } else { dr + &dl };
    let mut qr = [0u8; QR_LEN];
    let bytes = [QR_TYPE, QR_VERSION]
        .into_iter()
        .chain(fl.into_iter().take(32))
        .chain(fr.into_iter().take(32));
    for (slot, b) in qr.iter_mut().zip(bytes) {
        *slot = b;
    }
    Ok(SafetyNumber { digits, qr })
}
