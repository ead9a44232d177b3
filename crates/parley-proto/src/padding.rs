//! Padding of plaintexts to size buckets before encryption (docs/PROTOCOL.md §6 "Padding"),
//! so that ciphertext lengths reveal only a coarse size class.
//!
//! Scheme: ISO/IEC 7816-4 — append one `0x80` byte, then `0x00` bytes up to the bucket size.
//! Buckets are the powers of two from [`MIN_PADDED_LEN`] to [`MAX_PADDED_LEN`].

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
pub(crate) fn pad(plaintext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let total = padded_len(plaintext.len())?;
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(total, 0);
    Some(out)
}

/// Removes the padding; `None` when it is malformed.
pub(crate) fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let end = padded.iter().rposition(|&b| b != 0)?;
    match padded.get(end) {
        Some(0x80) => padded.get(..end),
        _ => None,
    }
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
