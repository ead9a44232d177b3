//! Padding of plaintexts to size buckets before encryption (docs/PROTOCOL.md §6 "Padding"),
//! so that ciphertext lengths reveal only a coarse size class.
//!
//! Scheme: ISO/IEC 7816-4 — append one `0x80` byte, then `0x00` bytes up to the bucket size.
//! Buckets are the powers of two from [`MIN_PADDED_LEN`] to [`MAX_PADDED_LEN`].

#[cfg(test)]
use zeroize::Zeroizing;

/// Smallest padded size.
pub const MIN_PADDED_LEN: usize = 64;
/// Largest padded size (64 KiB). Larger payloads (attachments) are encrypted separately.
pub const MAX_PADDED_LEN: usize = 65_536;
/// The longest plaintext one message can carry: one byte of padding is always present.
pub const MAX_PLAINTEXT_LEN: usize = MAX_PADDED_LEN - 1;

/// The bucket a plaintext of `len` bytes is padded to, or `None` when it is too long.
pub fn padded_len(len: usize) -> Option<usize> {
    if len > MAX_PLAINTEXT_LEN {
        return None;
    }
    let needed = len + 1;
    Some(needed.next_power_of_two().max(MIN_PADDED_LEN))
}

/// True when `len` is one of the bucket sizes (a ciphertext of any other length is malformed).
pub(crate) fn is_bucket(len: usize) -> bool {
    (MIN_PADDED_LEN..=MAX_PADDED_LEN).contains(&len) && len.is_power_of_two()
}

/// Pads `plaintext` into a fresh buffer; `None` when it is longer than [`MAX_PLAINTEXT_LEN`].
/// (Encryption pads in place in its output buffer; this is for tests.)
#[cfg(test)]
pub(crate) fn pad(plaintext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let total = padded_len(plaintext.len())?;
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(total, 0);
    Some(out)
}

/// The plaintext length inside a padded buffer; `None` when the padding is malformed.
///
/// The scan touches every 8-byte word in the same way whatever the plaintext length, so its
/// timing reveals the bucket (already public) but not the length inside it. Bucket sizes are
/// multiples of 8.
pub(crate) fn unpadded_len(padded: &[u8]) -> Option<usize> {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    let mut last_word = 0u64;
    let mut last_index = 0u64;
    let mut found = subtle::Choice::from(0);
    for (i, chunk) in padded.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let w = u64::from_be_bytes(b);
        let nonzero = !w.ct_eq(&0);
        last_word.conditional_assign(&w, nonzero);
        last_index.conditional_assign(&(i as u64), nonzero);
        found |= nonzero;
    }
    if !bool::from(found) || !padded.len().is_multiple_of(8) {
        return None;
    }
    // The last non-zero byte of the last non-zero word must be the 0x80 marker.
    let zeros_after = (last_word.trailing_zeros() / 8) as usize;
    let marker = (last_word >> (8 * zeros_after)) as u8;
    if marker != 0x80 {
        return None;
    }
    Some(last_index as usize * 8 + 7 - zeros_after)
}

/// Removes the padding; `None` when it is malformed.
#[cfg(test)]
pub(crate) fn unpad(padded: &[u8]) -> Option<&[u8]> {
    padded.get(..unpadded_len(padded)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(padded_len(0), Some(64));
        assert_eq!(padded_len(63), Some(64));
        assert_eq!(padded_len(64), Some(128));
        assert_eq!(padded_len(100), Some(128));
        assert_eq!(padded_len(1024), Some(2048));
        assert_eq!(padded_len(MAX_PLAINTEXT_LEN), Some(MAX_PADDED_LEN));
        assert_eq!(padded_len(MAX_PLAINTEXT_LEN + 1), None);
        for len in [0usize, 1, 63, 64, 65, 1000, 4095, 4096, MAX_PLAINTEXT_LEN] {
            let p: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let padded = pad(&p).unwrap();
            assert!(is_bucket(padded.len()));
            assert_eq!(unpad(&padded).unwrap(), &p[..]);
        }
        assert_eq!(unpad(&[0u8; 64]), None);
        assert_eq!(unpad(&[1u8; 64]), None);
    }
}
