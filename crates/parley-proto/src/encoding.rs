//! The deterministic, length-prefixed, versioned encoding used for everything Parley signs,
//! MACs, hashes or sends (docs/PROTOCOL.md §2 "Encodings").
//!
//! * integers are big-endian and fixed-width (`u8`, `u16`, `u32`, `u64`);
//! * fixed-size values (keys, tags, nonces) are written raw, their size is implied by their type;
//! * variable-size values are a `u32` big-endian length followed by the bytes, and every decoder
//!   names the largest length it accepts;
//! * every top-level object starts with a one-byte object type and a one-byte version.
//!
//! Decoders reject trailing bytes, truncated input, oversize lengths, unknown types and unknown
//! versions with a typed [`DecodeError`].

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the object did.
    #[error("input truncated")]
    Truncated,
    /// Bytes were left after a complete object.
    #[error("trailing bytes after the object")]
    TrailingBytes,
    /// A length prefix is larger than the field allows.
    #[error("field too long: {len} bytes, at most {max}")]
    TooLong {
        /// The length that was announced.
        len: u64,
        /// The largest length the field accepts.
        max: u64,
    },
    /// The object type byte is not the one expected.
    #[error("unexpected object type {found:#04x}, expected {expected:#04x}")]
    WrongType {
        /// The type byte found.
        found: u8,
        /// The type byte expected.
        expected: u8,
    },
    /// The object version is not supported.
    #[error("unsupported version {0}")]
    UnknownVersion(u8),
    /// A key type byte is not the one expected (EC and KEM keys carry distinct type bytes).
    #[error("unexpected key type {found:#04x}, expected {expected:#04x}")]
    WrongKeyType {
        /// The type byte found.
        found: u8,
        /// The type byte expected.
        expected: u8,
    },
    /// A field holds a value outside its domain (an invalid point, an unsorted list, a flag
    /// that is neither 0 nor 1, ...).
    #[error("invalid value in field {0}")]
    InvalidValue(&'static str),
}

/// Appends the encoding of fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Self { buf: Vec::with_capacity(cap) }
    }

    /// Starts a top-level object: type byte, then version byte.
    pub(crate) fn header(mut self, object_type: u8, version: u8) -> Self {
        self.buf.push(object_type);
        self.buf.push(version);
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A fixed-size value, written raw.
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A variable-size value: `u32` length, then the bytes. Callers only pass values whose
    /// length they have bounded (every such field has a `MAX_*` far below 4 GiB).
    pub(crate) fn var(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// `n` zero bytes.
    pub(crate) fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a byte slice; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Reads and checks a top-level object's type and version bytes.
    pub(crate) fn header(&mut self, object_type: u8, version: u8) -> Result<(), DecodeError> {
        let found = self.u8()?;
        if found != object_type {
            return Err(DecodeError::WrongType { found, expected: object_type });
        }
        let v = self.u8()?;
        if v != version {
            return Err(DecodeError::UnknownVersion(v));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array::<1>()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue(field)),
        }
    }

    /// A variable-size value of at most `max` bytes.
    pub(crate) fn var(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > max {
            return Err(DecodeError::TooLong { len: u64::from(len), max: max as u64 });
        }
        self.take(len_usize)
    }

    /// A count of list items, at most `max`.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        if n_usize > max {
            return Err(DecodeError::TooLong { len: u64::from(n), max: max as u64 });
        }
        Ok(n_usize)
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Ends decoding: any byte left is an error.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let mut w = Writer::default().header(0x42, 1);
        w.u8(7).u32(3).u64(9).var(b"abc").bool(true).raw(&[1, 2]);
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        r.header(0x42, 1).unwrap();
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 9);
        assert_eq!(r.var(3).unwrap(), b"abc");
        assert!(r.bool("b").unwrap());
        assert_eq!(r.array::<2>().unwrap(), [1, 2]);
        r.finish().unwrap();

        let mut r = Reader::new(&bytes);
        assert_eq!(r.header(0x43, 1), Err(DecodeError::WrongType { found: 0x42, expected: 0x43 }));
        let mut r = Reader::new(&bytes);
        assert_eq!(r.header(0x42, 2), Err(DecodeError::UnknownVersion(1)));
        let mut r = Reader::new(&bytes[..bytes.len() - 1]);
        r.header(0x42, 1).unwrap();
        r.take(1 + 4 + 8).unwrap();
        assert_eq!(r.var(2), Err(DecodeError::TooLong { len: 3, max: 2 }));
        let r = Reader::new(&[1]);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes));
        let mut r = Reader::new(&[2]);
        assert_eq!(r.bool("flag"), Err(DecodeError::InvalidValue("flag")));
    }
}
