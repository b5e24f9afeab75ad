//! Key types of the channel: the X-Wing KEM key pair (ML-KEM-768 + X25519) that
//! commands and results are sealed to, and the Ed25519 key pair that signs them.
//!
//! Owns key generation, storage encoding and fingerprints ([`KeyId`]).
//!
//! Invariants: secret key types have no `Serialize`, no `Clone`, and a `Debug` that
//! prints only the public key id; their bytes are zeroized on drop and leave the type
//! only through an explicit `to_bytes`, wrapped in [`Zeroizing`]. Public key types are
//! validated when built (an ML-KEM encapsulation key must pass its modulus check, an
//! Ed25519 key must not be of small order), so a `KemPublicKey` or `VerifyingKey`
//! value is always usable.
//!
//! Past this module an attacker who can feed public keys (through JSON or
//! `from_bytes`) can make construction fail but cannot obtain a key object that
//! encapsulates to a malformed ML-KEM key or accepts signatures under a weak Ed25519
//! key. Nothing here protects key files at rest: that is the storing side's job
//! (mode 0600 files on the agent, the data directory on the server).

use crate::error::ChannelError;
use crate::wire;
use rand_core::CryptoRng;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use x_wing::{Decapsulator, Encapsulate, KeyExport};
use zeroize::{Zeroize, Zeroizing};

/// Size of an X-Wing public (encapsulation) key: ML-KEM-768 key (1184) + X25519 key (32).
pub const KEM_PUBLIC_KEY_BYTES: usize = x_wing::ENCAPSULATION_KEY_SIZE;
/// Size of a stored X-Wing secret key: the 32-byte seed both halves are expanded from.
pub const KEM_SECRET_KEY_BYTES: usize = x_wing::DECAPSULATION_KEY_SIZE;
/// Size of an X-Wing ciphertext: ML-KEM-768 ciphertext (1088) + X25519 share (32).
pub const KEM_CIPHERTEXT_BYTES: usize = x_wing::CIPHERTEXT_SIZE;
/// Size of a stored Ed25519 signing key (the RFC 8032 seed).
pub const SIGNING_KEY_BYTES: usize = ed25519_dalek::SECRET_KEY_LENGTH;
/// Size of an Ed25519 verifying key.
pub const VERIFYING_KEY_BYTES: usize = ed25519_dalek::PUBLIC_KEY_LENGTH;
/// Size of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// Length of a [`KeyId`] in hex characters (64 bits of the fingerprint).
const KEY_ID_HEX_LEN: usize = 16;

/// Short public fingerprint of a public key: the first 16 lowercase hex characters of
/// SHA-256 over the key bytes. Shown in the UI and named in envelopes so the receiver
/// can pick the right key; it is a label, not a security binding (signatures and key
/// derivation use the full 32-byte fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    fn from_fingerprint(fp: &[u8; 32]) -> Self {
        let mut s = hex::encode(fp);
        s.truncate(KEY_ID_HEX_LEN);
        Self(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = ChannelError;

    fn try_from(s: String) -> Result<Self, ChannelError> {
        let ok =
            s.len() == KEY_ID_HEX_LEN && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(s))
        } else {
            Err(ChannelError::Malformed("key id"))
        }
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

// ---------------------------------------------------------------------------
// X-Wing
// ---------------------------------------------------------------------------

/// X-Wing public key (ML-KEM-768 + X25519 hybrid). Commands are sealed to an agent's
/// key; results are sealed to the control plane's key.
///
/// On the wire (serde) it is a base64url string of [`KEM_PUBLIC_KEY_BYTES`] bytes.
#[derive(Clone)]
pub struct KemPublicKey {
    inner: x_wing::EncapsulationKey,
    bytes: Vec<u8>,
    fingerprint: [u8; 32],
}

impl KemPublicKey {
    fn from_inner(inner: x_wing::EncapsulationKey) -> Self {
        let bytes = inner.to_bytes().to_vec();
        let fingerprint = fingerprint(&bytes);
        Self {
            inner,
            bytes,
            fingerprint,
        }
    }

    /// Parses and validates a public key of exactly [`KEM_PUBLIC_KEY_BYTES`] bytes.
    ///
    /// # Errors
    /// [`ChannelError::InvalidKey`] for a wrong length or an ML-KEM key that fails
    /// the FIPS 203 encapsulation key check.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChannelError> {
        let inner =
            x_wing::EncapsulationKey::try_from(bytes).map_err(|_| ChannelError::InvalidKey)?;
        Ok(Self::from_inner(inner))
    }

    /// The key bytes (ML-KEM-768 encapsulation key followed by the X25519 key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Short fingerprint for transcripts, logs and the UI.
    pub fn key_id(&self) -> KeyId {
        KeyId::from_fingerprint(&self.fingerprint)
    }

    /// Full SHA-256 fingerprint, bound into key derivation.
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Encapsulates a fresh shared secret to this key.
    pub(crate) fn encapsulate<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> (Vec<u8>, Zeroizing<[u8; 32]>) {
        let (ct, mut ss) = self.inner.encapsulate_with_rng(rng);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&ss);
        ss[..].zeroize();
        (ct.to_vec(), out)
    }
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for KemPublicKey {}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KemPublicKey").field(&self.key_id()).finish()
    }
}

/// X-Wing secret key. Stored as its 32-byte seed; both the ML-KEM-768 and the X25519
/// secret are expanded from it (draft-connolly-cfrg-xwing-kem).
///
/// Held expanded: the `x-wing` crate's key expands its seed again on every
/// decapsulation (about 100 µs of 270), so decapsulation here uses the parts
/// expanded once ([`Expanded`]), with the draft's combiner. The tests check it
/// against the `x-wing` crate's own decapsulation.
///
/// Decapsulation rejects X25519 shares that yield an all-zero (non-contributory)
/// secret, so a tampered X25519 half fails loudly instead of silently degrading to
/// ML-KEM alone.
pub struct KemSecretKey {
    inner: x_wing::DecapsulationKeyRejectNonContrib,
    expanded: Expanded,
    public: KemPublicKey,
}

/// The X-Wing combiner's label (draft-connolly-cfrg-xwing-kem, `XWingLabel`).
const X_WING_LABEL: &[u8; 6] = br"\.//^\";
/// Size of the ML-KEM-768 part of an X-Wing ciphertext.
const ML_KEM_CIPHERTEXT_BYTES: usize = 1088;

/// An X-Wing secret key's parts, expanded from its seed as the draft's
/// `expandDecapsulationKey` does: SHAKE256 of the seed gives 64 bytes of
/// ML-KEM-768 seed, then the 32-byte X25519 secret. Zeroized on drop (both
/// types zeroize themselves).
struct Expanded {
    ml_kem: ml_kem::ml_kem_768::DecapsulationKey,
    x25519: x25519_dalek::StaticSecret,
    x25519_public: x25519_dalek::PublicKey,
}

impl Expanded {
    fn from_seed(seed: &[u8; KEM_SECRET_KEY_BYTES]) -> Self {
        use shake::{ExtendableOutput as _, Update as _, XofReader as _};
        let mut xof = shake::Shake256::default();
        xof.update(seed);
        let mut reader = xof.finalize_xof();
        let mut ml_kem_seed = ml_kem::Seed::default();
        reader.read(&mut ml_kem_seed);
        let ml_kem = ml_kem::ml_kem_768::DecapsulationKey::from_seed(ml_kem_seed);
        ml_kem_seed.zeroize();
        let mut x25519_secret = Zeroizing::new([0u8; 32]);
        reader.read(x25519_secret.as_mut_slice());
        let x25519 = x25519_dalek::StaticSecret::from(*x25519_secret);
        let x25519_public = x25519_dalek::PublicKey::from(&x25519);
        Self {
            ml_kem,
            x25519,
            x25519_public,
        }
    }

    /// The draft's `Decapsulate`, refusing a non-contributory X25519 share.
    fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, ChannelError> {
        use ml_kem::Decapsulate as _;
        use sha3::Digest as _;
        if ct.len() != KEM_CIPHERTEXT_BYTES {
            return Err(ChannelError::Malformed("kem_ciphertext"));
        }
        let (ct_m, ct_x) = ct.split_at(ML_KEM_CIPHERTEXT_BYTES);
        let ct_m = ml_kem::Ciphertext::<ml_kem::MlKem768>::try_from(ct_m)
            .map_err(|_| ChannelError::Malformed("kem_ciphertext"))?;
        let ct_x: [u8; 32] = ct_x
            .try_into()
            .map_err(|_| ChannelError::Malformed("kem_ciphertext"))?;
        let mut ss_m = self.ml_kem.decapsulate(&ct_m);
        let ss_x = self
            .x25519
            .diffie_hellman(&x25519_dalek::PublicKey::from(ct_x));
        if !ss_x.was_contributory() {
            ss_m.zeroize();
            return Err(ChannelError::DecryptionFailed);
        }
        let mut hash = sha3::Sha3_256::new();
        hash.update(ss_m.as_slice());
        hash.update(ss_x.as_bytes());
        hash.update(ct_x);
        hash.update(self.x25519_public.as_bytes());
        hash.update(X_WING_LABEL);
        ss_m.zeroize();
        let mut out = Zeroizing::new([0u8; 32]);
        let mut digest = hash.finalize();
        out.copy_from_slice(&digest);
        digest.zeroize();
        Ok(out)
    }
}

impl KemSecretKey {
    /// Generates a key pair from the operating system's RNG. See [`crate::os_rng`].
    pub fn generate() -> Self {
        Self::generate_from_rng(&mut crate::os_rng())
    }

    /// Generates a key pair from `rng` (deterministic with a seeded RNG, for tests
    /// and test vectors).
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SECRET_KEY_BYTES]);
        rng.fill_bytes(seed.as_mut_slice());
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; KEM_SECRET_KEY_BYTES]) -> Self {
        let inner = x_wing::DecapsulationKeyRejectNonContrib::from(*seed);
        let public = KemPublicKey::from_inner(inner.encapsulation_key().clone());
        Self {
            inner,
            expanded: Expanded::from_seed(seed),
            public,
        }
    }

    /// Restores a key from the bytes written by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    /// [`ChannelError::InvalidKey`] unless `bytes` is exactly
    /// [`KEM_SECRET_KEY_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChannelError> {
        let seed: &[u8; KEM_SECRET_KEY_BYTES] =
            bytes.try_into().map_err(|_| ChannelError::InvalidKey)?;
        Ok(Self::from_seed(seed))
    }

    /// The secret seed, for storage. Keep it in a file only the owner can read.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEM_SECRET_KEY_BYTES]> {
        let mut key = self.inner.to_bytes();
        let mut out = Zeroizing::new([0u8; KEM_SECRET_KEY_BYTES]);
        out.copy_from_slice(&key);
        key[..].zeroize();
        out
    }

    /// The matching public key.
    pub fn public_key(&self) -> &KemPublicKey {
        &self.public
    }

    /// Id of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// Recovers the shared secret from an X-Wing ciphertext.
    pub(crate) fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, ChannelError> {
        self.expanded.decapsulate(ct)
    }

    /// [`decapsulate`](Self::decapsulate) as the `x-wing` crate does it, which
    /// expands the seed each time: what the expanded key is checked against.
    #[cfg(test)]
    fn decapsulate_unexpanded(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, ChannelError> {
        use x_wing::TryDecapsulate as _;
        let ct = x_wing::Ciphertext::try_from(ct)
            .map_err(|_| ChannelError::Malformed("kem_ciphertext"))?;
        let mut ss = self
            .inner
            .try_decapsulate(&ct)
            .map_err(|_| ChannelError::DecryptionFailed)?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&ss);
        ss[..].zeroize();
        Ok(out)
    }
}

impl fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemSecretKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Ed25519
// ---------------------------------------------------------------------------

/// Ed25519 verifying key: the control plane's command key (held by every agent) or an
/// agent's identity key (held by the control plane).
///
/// On the wire (serde) it is a base64url string of [`VERIFYING_KEY_BYTES`] bytes.
/// Verification is strict (RFC 8032 with canonical `S` and no small-order `R` or `A`),
/// so signatures are not malleable.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: ed25519_dalek::VerifyingKey,
    fingerprint: [u8; 32],
}

impl VerifyingKey {
    fn from_inner(inner: ed25519_dalek::VerifyingKey) -> Self {
        let fingerprint = fingerprint(inner.as_bytes());
        Self { inner, fingerprint }
    }

    /// Parses a verifying key of exactly [`VERIFYING_KEY_BYTES`] bytes.
    ///
    /// # Errors
    /// [`ChannelError::InvalidKey`] for a wrong length, a point that does not
    /// decompress, or a small-order (weak) key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChannelError> {
        let bytes: &[u8; VERIFYING_KEY_BYTES] =
            bytes.try_into().map_err(|_| ChannelError::InvalidKey)?;
        let inner =
            ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| ChannelError::InvalidKey)?;
        if inner.is_weak() {
            return Err(ChannelError::InvalidKey);
        }
        Ok(Self::from_inner(inner))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; VERIFYING_KEY_BYTES] {
        self.inner.as_bytes()
    }

    /// Short fingerprint for transcripts, logs and the UI.
    pub fn key_id(&self) -> KeyId {
        KeyId::from_fingerprint(&self.fingerprint)
    }

    /// Full SHA-256 fingerprint, bound into key derivation.
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Strict Ed25519 verification.
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_BYTES],
    ) -> Result<(), ChannelError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.inner
            .verify_strict(message, &sig)
            .map_err(|_| ChannelError::BadSignature)
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_bytes() == other.inner.as_bytes()
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyingKey").field(&self.key_id()).finish()
    }
}

/// Ed25519 signing key: the control plane's command key or an agent's identity key.
/// Stored as the 32-byte RFC 8032 seed.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    public: VerifyingKey,
}

impl SigningKey {
    /// Generates a key from the operating system's RNG. See [`crate::os_rng`].
    pub fn generate() -> Self {
        Self::generate_from_rng(&mut crate::os_rng())
    }

    /// Generates a key from `rng` (deterministic with a seeded RNG).
    pub fn generate_from_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; SIGNING_KEY_BYTES]);
        rng.fill_bytes(seed.as_mut_slice());
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; SIGNING_KEY_BYTES]) -> Self {
        let inner = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = VerifyingKey::from_inner(inner.verifying_key());
        Self { inner, public }
    }

    /// Restores a key from the bytes written by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    /// [`ChannelError::InvalidKey`] unless `bytes` is exactly [`SIGNING_KEY_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChannelError> {
        let seed: &[u8; SIGNING_KEY_BYTES] =
            bytes.try_into().map_err(|_| ChannelError::InvalidKey)?;
        Ok(Self::from_seed(seed))
    }

    /// The secret seed, for storage. Keep it in a file only the owner can read.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SIGNING_KEY_BYTES]> {
        Zeroizing::new(self.inner.to_bytes())
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Id of the matching verifying key.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// Signs canonical bytes. Crate-private on purpose: every message this key signs
    /// starts with a channel label, and no caller can make it sign anything else.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        use ed25519_dalek::Signer as _;
        self.inner.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// serde for public keys: base64url strings
// ---------------------------------------------------------------------------

impl Serialize for KemPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::ser_b64(&self.bytes, s)
    }
}

impl Serialize for VerifyingKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::ser_b64(self.inner.as_bytes(), s)
    }
}

struct PublicKeyVisitor<T> {
    len: usize,
    what: &'static str,
    parse: fn(&[u8]) -> Result<T, ChannelError>,
}

impl<T> Visitor<'_> for PublicKeyVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a base64url {} of {} bytes", self.what, self.len)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        let bytes = wire::b64_decode_bounded(v, self.len, self.len)
            .ok_or_else(|| E::custom(format_args!("invalid base64url {}", self.what)))?;
        (self.parse)(&bytes).map_err(|_| E::custom(format_args!("invalid {}", self.what)))
    }
}

impl<'de> Deserialize<'de> for KemPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(PublicKeyVisitor {
            len: KEM_PUBLIC_KEY_BYTES,
            what: "KEM public key",
            parse: KemPublicKey::from_bytes,
        })
    }
}

impl<'de> Deserialize<'de> for VerifyingKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(PublicKeyVisitor {
            len: VERIFYING_KEY_BYTES,
            what: "verifying key",
            parse: VerifyingKey::from_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([3; 32])
    }

    #[test]
    fn kem_secret_round_trips_through_bytes() {
        let sk = KemSecretKey::generate_from_rng(&mut rng());
        let restored = KemSecretKey::from_bytes(sk.to_bytes().as_slice()).unwrap();
        assert_eq!(sk.public_key(), restored.public_key());
        let (ct, ss) = sk.public_key().encapsulate(&mut rng());
        assert_eq!(*restored.decapsulate(&ct).unwrap(), *ss);
        assert!(KemSecretKey::from_bytes(&[0; 31]).is_err());
    }

    /// The expanded key decapsulates exactly as the `x-wing` crate does: the
    /// same secret for honest ciphertexts, the same implicit-rejection secret
    /// for a tampered ML-KEM half, the same refusal for a non-contributory
    /// X25519 share, and the same error for a wrong length.
    #[test]
    fn the_expanded_key_decapsulates_as_x_wing_does() {
        let mut rng = rng();
        for n in 0..32 {
            let sk = KemSecretKey::generate_from_rng(&mut rng);
            let (ct, ss) = sk.public_key().encapsulate(&mut rng);
            assert_eq!(*sk.decapsulate(&ct).unwrap(), *ss);
            assert_eq!(*sk.decapsulate_unexpanded(&ct).unwrap(), *ss);
            let mut tampered = ct.clone();
            let i = (n * 211 + 5) % ML_KEM_CIPHERTEXT_BYTES;
            tampered[i] ^= 1;
            let rejected = sk.decapsulate(&tampered).unwrap();
            assert_ne!(*rejected, *ss);
            assert_eq!(*rejected, *sk.decapsulate_unexpanded(&tampered).unwrap());
            let mut other_share = ct.clone();
            other_share[KEM_CIPHERTEXT_BYTES - 1] ^= 0x40;
            assert_eq!(
                *sk.decapsulate(&other_share).unwrap(),
                *sk.decapsulate_unexpanded(&other_share).unwrap()
            );
            let mut zero_share = ct.clone();
            zero_share[ML_KEM_CIPHERTEXT_BYTES..].fill(0);
            assert_eq!(
                sk.decapsulate(&zero_share).unwrap_err(),
                ChannelError::DecryptionFailed
            );
            assert_eq!(
                sk.decapsulate_unexpanded(&zero_share).unwrap_err(),
                ChannelError::DecryptionFailed
            );
            for len in [0, KEM_CIPHERTEXT_BYTES - 1, KEM_CIPHERTEXT_BYTES + 1] {
                let short = vec![0u8; len];
                assert_eq!(
                    sk.decapsulate(&short).unwrap_err(),
                    sk.decapsulate_unexpanded(&short).unwrap_err()
                );
            }
        }
    }

    #[test]
    fn kem_public_round_trips_through_json() {
        let sk = KemSecretKey::generate();
        let json = serde_json::to_string(sk.public_key()).unwrap();
        let back: KemPublicKey = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, sk.public_key());
        assert!(KemPublicKey::from_bytes(&[0u8; 10]).is_err());
        // All 0xff coefficients are out of range for ML-KEM: the modulus check fails.
        assert_eq!(
            KemPublicKey::from_bytes(&[0xff; KEM_PUBLIC_KEY_BYTES]).unwrap_err(),
            ChannelError::InvalidKey
        );
    }

    #[test]
    fn signing_key_round_trips_and_verifies() {
        let sk = SigningKey::generate_from_rng(&mut rng());
        let restored = SigningKey::from_bytes(sk.to_bytes().as_slice()).unwrap();
        assert_eq!(sk.verifying_key(), restored.verifying_key());
        let sig = sk.sign(b"m");
        sk.verifying_key().verify(b"m", &sig).unwrap();
        assert_eq!(
            sk.verifying_key().verify(b"n", &sig),
            Err(ChannelError::BadSignature)
        );
        let json = serde_json::to_string(sk.verifying_key()).unwrap();
        let back: VerifyingKey = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, sk.verifying_key());
    }

    #[test]
    fn weak_verifying_key_refused() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            VerifyingKey::from_bytes(&identity).unwrap_err(),
            ChannelError::InvalidKey
        );
    }

    #[test]
    fn key_ids_are_short_hex_and_debug_hides_secrets() {
        let sk = SigningKey::from_bytes(&[9u8; 32]).unwrap();
        let id = sk.key_id();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(
            id.as_str(),
            &hex::encode(Sha256::digest(sk.verifying_key().as_bytes()))[..16]
        );
        let dbg = format!("{sk:?}");
        assert!(!dbg.contains(&hex::encode([9u8; 32])));
        assert!(dbg.contains(id.as_str()));
        let kem = KemSecretKey::from_bytes(&[5u8; 32]).unwrap();
        let dbg = format!("{kem:?}");
        assert!(!dbg.contains("5, 5") && !dbg.contains("0505"));
        assert!(KeyId::try_from("ABCDEF0123456789".to_string()).is_err());
    }
}
