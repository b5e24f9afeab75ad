//! Byte-level encodings shared by every message: the canonical, length-prefixed
//! transcript that signatures, AAD and key derivation are computed over, and bounded
//! base64url fields for JSON.
//!
//! Invariant: the canonical encoding is injective. Every variable-length item carries
//! a 64-bit big-endian length prefix and every message starts with its own label, so
//! two different messages (or the same fields under another label) never produce the
//! same bytes. JSON is only the carrier; nothing is ever signed over JSON text.
//!
//! Decoding never allocates more than the field's maximum: the encoded length is
//! checked before base64 decoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;

/// Builder for canonical bytes.
pub(crate) struct Canonical {
    buf: Vec<u8>,
}

impl Canonical {
    /// Starts a transcript with its domain-separation label.
    pub(crate) fn new(label: &str) -> Self {
        let mut c = Self {
            buf: Vec::with_capacity(256),
        };
        c.bytes(label.as_bytes());
        c
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends bytes that are already canonical (a nested transcript), length-prefixed.
    pub(crate) fn nested(&mut self, inner: &[u8]) -> &mut Self {
        self.bytes(inner)
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Base64url without padding: the form of every byte field and public key on the wire.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url into at most `max` bytes and at least `min`; `None` otherwise.
/// Rejects padding, non-alphabet characters and non-zero trailing bits, so each byte
/// string has exactly one accepted encoding.
pub(crate) fn b64_decode_bounded(s: &str, min: usize, max: usize) -> Option<Vec<u8>> {
    // Unpadded base64 of n bytes is ceil(4n/3) characters.
    let max_encoded = max.div_ceil(3).saturating_mul(4);
    if s.len() > max_encoded {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
    (min..=max).contains(&bytes.len()).then_some(bytes)
}

/// Serde adapter for byte fields: a base64url string.
pub(crate) fn ser_b64<S: Serializer, B: AsRef<[u8]>>(bytes: B, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b64_encode(bytes.as_ref()))
}

struct BoundedB64 {
    min: usize,
    max: usize,
}

impl Visitor<'_> for BoundedB64 {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a base64url string of {} to {} bytes",
            self.min, self.max
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        b64_decode_bounded(v, self.min, self.max)
            .ok_or_else(|| E::custom("base64 field out of bounds or invalid"))
    }
}

/// Serde adapter: a base64url byte field of `MIN..=MAX` bytes.
pub(crate) fn de_b64_vec<'de, D: Deserializer<'de>, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<Vec<u8>, D::Error> {
    d.deserialize_str(BoundedB64 { min: MIN, max: MAX })
}

/// Serde adapter: a base64url byte field of exactly `N` bytes.
pub(crate) fn de_b64_array<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    let v = d.deserialize_str(BoundedB64 { min: N, max: N })?;
    <[u8; N]>::try_from(v.as_slice()).map_err(|_| de::Error::custom("wrong length"))
}

/// Characters allowed in agent ids, command ids and kinds: enough for UUIDs, hex,
/// and dotted or slashed names, nothing that needs escaping in logs or paths.
fn allowed_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':')
}

/// Whether `s` is a well-formed identifier of at most `max` bytes.
pub(crate) fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(allowed_id_char)
}

/// Whether `s` is a well-formed operation kind: an id that may also contain `/`.
pub(crate) fn valid_kind(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|c| allowed_id_char(c) || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_separates_fields() {
        let a = Canonical::new("l").str("ab").str("c").finish();
        let b = Canonical::new("l").str("a").str("bc").finish();
        assert_ne!(a, b);
        let c = Canonical::new("l2").str("ab").str("c").finish();
        assert_ne!(a, c);
    }

    #[test]
    fn b64_bounds() {
        let enc = b64_encode(&[7u8; 12]);
        assert_eq!(b64_decode_bounded(&enc, 12, 12).unwrap(), vec![7u8; 12]);
        assert!(b64_decode_bounded(&enc, 13, 20).is_none());
        assert!(b64_decode_bounded(&enc, 0, 11).is_none());
        assert!(b64_decode_bounded("AAAA=", 0, 10).is_none());
        assert!(b64_decode_bounded("+/+/", 0, 10).is_none());
        // Non-canonical trailing bits are refused.
        assert!(b64_decode_bounded("AB", 0, 10).is_none());
        assert!(b64_decode_bounded("AA", 0, 10).is_some());
    }

    #[test]
    fn ids() {
        assert!(valid_id("550e8400-e29b-41d4-a716-446655440000", 128));
        assert!(!valid_id("", 128));
        assert!(!valid_id("a b", 128));
        assert!(!valid_id("a/b", 128));
        assert!(valid_kind("service/restart", 64));
        assert!(!valid_id(&"a".repeat(129), 128));
        assert!(!valid_id("é", 128));
    }
}
