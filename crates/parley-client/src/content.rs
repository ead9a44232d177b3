//! The content encoding inside the end-to-end encryption (version 1), all integers big-endian:
//!
//! ```text
//! 0x40 0x01 | u32 len | message_id (UTF-8) | u64 sent_at_ms | u32 len | text (UTF-8)
//! ```
//!
//! `message_id` is the sender's logical id (the same in every device copy; the server's
//! `message_id` must match it); `sent_at_ms` is the sender's clock, milliseconds since the Unix
//! epoch. Nothing may follow the text.

use zeroize::Zeroizing;

/// The content type byte.
pub(crate) const CONTENT_TYPE: u8 = 0x40;
/// The content version byte.
pub(crate) const CONTENT_VERSION: u8 = 0x01;
/// Longest message id accepted inside content.
const MAX_ID_LEN: usize = parley_api::MESSAGE_ID_MAX_LEN;

/// Decoded content.
pub(crate) struct Content {
    pub(crate) message_id: String,
    pub(crate) sent_at_ms: u64,
    pub(crate) text: Zeroizing<String>,
}

/// Encodes content (the buffer holds plaintext: zeroized on drop).
pub(crate) fn encode(message_id: &str, sent_at_ms: u64, text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let id_len = u32::try_from(message_id.len()).ok()?;
    let text_len = u32::try_from(text.len()).ok()?;
    let mut out = Zeroizing::new(Vec::with_capacity(2 + 4 + message_id.len() + 8 + 4 + text.len()));
    out.push(CONTENT_TYPE);
    out.push(CONTENT_VERSION);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    out.extend_from_slice(&text_len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Some(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn u32_at(buf: &mut &[u8]) -> Option<usize> {
    let b: [u8; 4] = take(buf, 4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(b)).ok()
}

/// Decodes content; `None` when malformed.
pub(crate) fn decode(bytes: &[u8]) -> Option<Content> {
    let mut buf = bytes;
    if take(&mut buf, 2)? != [CONTENT_TYPE, CONTENT_VERSION] {
        return None;
    }
    let id_len = u32_at(&mut buf)?;
    if id_len > MAX_ID_LEN {
        return None;
    }
    let message_id = std::str::from_utf8(take(&mut buf, id_len)?).ok()?.to_string();
    if !parley_api::validate_message_id(&message_id) {
        return None;
    }
    let sent: [u8; 8] = take(&mut buf, 8)?.try_into().ok()?;
    let text_len = u32_at(&mut buf)?;
    let text = std::str::from_utf8(take(&mut buf, text_len)?).ok()?;
    if !buf.is_empty() {
        return None;
    }
    Some(Content {
        message_id,
        sent_at_ms: u64::from_be_bytes(sent),
        text: Zeroizing::new(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let e = encode("ab", 0x0102, "hé").unwrap();
        assert_eq!(
            e.as_slice(),
            &[
                0x40, 1, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3, b'h', 0xc3,
                0xa9
            ]
        );
        let c = decode(&e).unwrap();
        assert_eq!((c.message_id.as_str(), c.sent_at_ms, c.text.as_str()), ("ab", 0x0102, "hé"));
        let mut long = e.to_vec();
        long.push(0);
        assert!(decode(&long).is_none());
        assert!(decode(&e[..e.len() - 1]).is_none());
        assert!(decode(&[0x41, 1]).is_none());
    }
}
