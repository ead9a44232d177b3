//! Device tokens and the admin token.
//!
//! A device token is `pt1.<device uid>.<secret>`, the secret being 32 random bytes in base64url.
//! The server stores only SHA-256(secret) (the secret is uniformly random, so a fast hash is
//! enough) and compares hashes in constant time. The admin token is 32 random bytes in
//! base64url, written to `DATA/admin.token` (mode 0600) at first start.

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const PREFIX: &str = "pt1";

/// A freshly minted device token: the string for the client, the hash for the store.
pub struct MintedToken {
    /// The bearer token (shown once).
    pub token: Zeroizing<String>,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MintedToken(***)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Draws 32 random bytes from the OS-seeded thread RNG.
pub fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut s[..]);
    s
}

/// SHA-256 of a token secret.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Mints a token for the device with internal id `uid`: draws the secret first, so the hash
/// can be stored before the uid is known — see [`token_for`].
pub fn new_secret() -> (Zeroizing<[u8; 32]>, [u8; 32]) {
    let secret = random_secret();
    let hash = hash_secret(&secret[..]);
    (secret, hash)
}

/// The token string for a device uid and its secret.
pub fn token_for(uid: i64, secret: &[u8; 32]) -> MintedToken {
    let token = Zeroizing::new(format!("{PREFIX}.{uid}.{}", b64().encode(secret)));
    MintedToken { token, hash: hash_secret(secret) }
}

/// Splits a bearer token into (uid, secret). `None` for anything malformed.
pub fn parse_token(token: &str) -> Option<(i64, Zeroizing<Vec<u8>>)> {
    if token.len() > 128 {
        return None;
    }
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(uid), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let uid: i64 = uid.parse().ok().filter(|u| *u > 0)?;
    let secret = Zeroizing::new(b64().decode(secret).ok()?);
    (secret.len() == 32).then_some((uid, secret))
}

/// Constant-time check of a presented secret against a stored hash.
pub fn verify_secret(secret: &[u8], stored_hash: &[u8; 32]) -> bool {
    bool::from(hash_secret(secret).ct_eq(stored_hash))
}

/// A new admin token string.
pub fn new_admin_token() -> Zeroizing<String> {
    Zeroizing::new(b64().encode(&random_secret()[..]))
}

/// Constant-time comparison of two tokens (by their hashes, so lengths leak nothing).
pub fn admin_token_matches(presented: &str, expected_hash: &[u8; 32]) -> bool {
    bool::from(hash_secret(presented.as_bytes()).ct_eq(expected_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let (secret, hash) = new_secret();
        let t = token_for(42, &secret);
        assert_eq!(t.hash, hash);
        let (uid, s) = parse_token(&t.token).unwrap();
        assert_eq!(uid, 42);
        assert!(verify_secret(&s, &hash));
        let (other, _) = new_secret();
        assert!(!verify_secret(&other[..], &hash));
        for bad in [
            "",
            "pt1",
            "pt1.42",
            "pt2.42.AAAA",
            "pt1.x.AAAA",
            "pt1.-1.AAAA",
            "pt1.1.AAAA",
            "pt1.1.a.b",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
        assert!(parse_token(&"a".repeat(500)).is_none());
        assert_eq!(format!("{t:?}"), "MintedToken(***)");
        let admin = new_admin_token();
        let h = hash_secret(admin.as_bytes());
        assert!(admin_token_matches(&admin, &h));
        assert!(!admin_token_matches("nope", &h));
    }
}
