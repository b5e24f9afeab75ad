//! Agent releases: the signature a release key makes over an agent binary,
//! and its check.
//!
//! The release key is an Ed25519 key that is not on the control plane: whoever
//! builds releases makes it (`pilothouse release keygen`) and keeps it. The
//! control plane only serves what was signed, so it cannot forge a release.
//!
//! A release is described by a manifest of four lines:
//!
//! ```text
//! version=0.1.0
//! platform=x86_64-linux
//! sha256=<64 lowercase hex digits: SHA-256 of the binary>
//! signature=<base64 of the Ed25519 signature>
//! ```
//!
//! The signature covers [`RELEASE_LABEL`] and a newline, then the first three
//! lines, each ending in a newline. That message is plain text on purpose: the
//! install script rebuilds it in the shell and checks it with
//! `openssl pkeyutl -verify -rawin`. Keys are stored as openssl writes them: the
//! private key as PKCS#8 PEM, the public key as SubjectPublicKeyInfo PEM.
//!
//! Past this module a binary whose bytes, version or platform differ from what
//! the release key signed, or one signed by any other key, is refused.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{SigningKey, VerifyingKey, SIGNATURE_BYTES, SIGNING_KEY_BYTES};

/// The first line of every signed release message.
pub const RELEASE_LABEL: &str = "pilothouse/agent-release/v1";

/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410), before the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Everything that can be wrong with a release, a manifest or a release key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the release key is not an Ed25519 {0} key in PEM form")]
    Key(&'static str),
    #[error("the release manifest is malformed: {0}")]
    Manifest(String),
    #[error("the binary's SHA-256 is {actual}, the manifest says {expected}")]
    Digest { expected: String, actual: String },
    #[error("the release signature does not verify with release key {fingerprint}")]
    Signature { fingerprint: String },
    #[error("the release is for {release}, this machine is {this}")]
    Platform { release: String, this: String },
}

/// The platform name of this build: `<arch>-<os>`, such as `x86_64-linux`.
pub fn current_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Versions are 1 to 64 of `[0-9A-Za-z.+-]`, starting with a digit.
pub fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
}

pub use crate::version::compare_versions;

/// Platforms are `<arch>-<os>`: 3 to 64 of `[a-z0-9_-]`, with one `-` at least.
pub fn valid_platform(p: &str) -> bool {
    (3..=64).contains(&p.len())
        && p.contains('-')
        && !p.starts_with('-')
        && !p.ends_with('-')
        && p.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first `label` PEM block of `text`.
fn pem_der(text: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

/// The release signing key, held by whoever builds releases.
pub struct ReleaseKey {
    key: SigningKey,
}

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseKey")
            .field("fingerprint", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

impl ReleaseKey {
    /// A new key from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(),
        }
    }

    /// Reads a PKCS#8 PEM private key (as `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(text: &str) -> Result<Self, ReleaseError> {
        let der = pem_der(text, "PRIVATE KEY").ok_or(ReleaseError::Key("private"))?;
        if der.len() != PKCS8_PREFIX.len() + SIGNING_KEY_BYTES || der[..16] != PKCS8_PREFIX {
            return Err(ReleaseError::Key("private"));
        }
        let key = SigningKey::from_bytes(&der[16..]).map_err(|_| ReleaseError::Key("private"))?;
        Ok(Self { key })
    }

    /// The private key as PKCS#8 PEM. Keep it in a file only its owner can read.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut der = Zeroizing::new(PKCS8_PREFIX.to_vec());
        der.extend_from_slice(self.key.to_bytes().as_slice());
        Zeroizing::new(pem("PRIVATE KEY", &der))
    }

    pub fn public(&self) -> ReleasePublicKey {
        ReleasePublicKey {
            key: self.key.verifying_key().clone(),
        }
    }

    /// Signs `binary` as `version` for `platform`.
    pub fn sign(
        &self,
        version: &str,
        platform: &str,
        binary: &[u8],
    ) -> Result<Manifest, ReleaseError> {
        let mut m = Manifest {
            version: version.to_string(),
            platform: platform.to_string(),
            sha256: hex::encode(Sha256::digest(binary)),
            signature: [0; SIGNATURE_BYTES],
        };
        m.check_fields()?;
        m.signature = self.key.sign(m.message().as_bytes());
        Ok(m)
    }
}

/// The public half of a release key: what agents and install scripts pin.
#[derive(Clone, PartialEq, Eq)]
pub struct ReleasePublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for ReleasePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReleasePublicKey")
            .field(&self.fingerprint())
            .finish()
    }
}

impl ReleasePublicKey {
    /// Reads a SubjectPublicKeyInfo PEM (as `openssl pkey -pubout` writes).
    pub fn from_pem(text: &str) -> Result<Self, ReleaseError> {
        let der = pem_der(text, "PUBLIC KEY").ok_or(ReleaseError::Key("public"))?;
        if der.len() != SPKI_PREFIX.len() + 32 || der[..12] != SPKI_PREFIX {
            return Err(ReleaseError::Key("public"));
        }
        let key = VerifyingKey::from_bytes(&der[12..]).map_err(|_| ReleaseError::Key("public"))?;
        Ok(Self { key })
    }

    fn der(&self) -> Vec<u8> {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.key.as_bytes());
        der
    }

    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.der())
    }

    /// `SHA256:` and the hex SHA-256 of the key's DER form, which
    /// `openssl pkey -pubin -outform DER | sha256sum` also prints.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", hex::encode(Sha256::digest(self.der())))
    }
}

/// What a release key signed: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: String,
    pub platform: String,
    /// Lowercase hex SHA-256 of the binary.
    pub sha256: String,
    pub signature: [u8; SIGNATURE_BYTES],
}

impl Manifest {
    fn check_fields(&self) -> Result<(), ReleaseError> {
        if !valid_version(&self.version) {
            return Err(ReleaseError::Manifest(format!(
                "version {:?} is not 1 to 64 of [0-9A-Za-z.+-] starting with a digit",
                self.version
            )));
        }
        if !valid_platform(&self.platform) {
            return Err(ReleaseError::Manifest(format!(
                "platform {:?} is not <arch>-<os> in [a-z0-9_-]",
                self.platform
            )));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(ReleaseError::Manifest(
                "sha256 is not 64 lowercase hex digits".into(),
            ));
        }
        Ok(())
    }

    /// The signed message.
    pub fn message(&self) -> String {
        format!(
            "{RELEASE_LABEL}\nversion={}\nplatform={}\nsha256={}\n",
            self.version, self.platform, self.sha256
        )
    }

    /// The manifest file's text.
    pub fn to_text(&self) -> String {
        format!(
            "version={}\nplatform={}\nsha256={}\nsignature={}\n",
            self.version,
            self.platform,
            self.sha256,
            base64::engine::general_purpose::STANDARD.encode(self.signature)
        )
    }

    /// Parses a manifest file: exactly the four lines, in order.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let mut lines = text.lines();
        let mut field = |name: &str| -> Result<String, ReleaseError> {
            let line = lines
                .next()
                .ok_or_else(|| ReleaseError::Manifest(format!("line {name}= is missing")))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| ReleaseError::Manifest(format!("expected {name}=, found {line:?}")))
        };
        let version = field("version")?;
        let platform = field("platform")?;
        let sha256 = field("sha256")?;
        let signature = field("signature")?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(ReleaseError::Manifest(
                "text follows the signature line".into(),
            ));
        }
        let signature: [u8; SIGNATURE_BYTES] = base64::engine::general_purpose::STANDARD
            .decode(signature.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ReleaseError::Manifest("signature is not 64 bytes of base64".into()))?;
        let m = Manifest {
            version,
            platform,
            sha256,
            signature,
        };
        m.check_fields()?;
        Ok(m)
    }

    /// Checks that `key` signed this manifest (not yet that a binary matches it).
    pub fn verify_signature(&self, key: &ReleasePublicKey) -> Result<(), ReleaseError> {
        self.check_fields()?;
        key.key
            .verify(self.message().as_bytes(), &self.signature)
            .map_err(|_| ReleaseError::Signature {
                fingerprint: key.fingerprint(),
            })
    }

    /// Checks that `key` signed this manifest and that `binary` is what it names.
    pub fn verify(&self, key: &ReleasePublicKey, binary: &[u8]) -> Result<(), ReleaseError> {
        self.verify_signature(key)?;
        let actual = hex::encode(Sha256::digest(binary));
        if actual != self.sha256 {
            return Err(ReleaseError::Digest {
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// [`verify`](Self::verify), and the release must be for `platform`.
    pub fn verify_for(
        &self,
        key: &ReleasePublicKey,
        binary: &[u8],
        platform: &str,
    ) -> Result<(), ReleaseError> {
        self.verify(key, binary)?;
        if self.platform != platform {
            return Err(ReleaseError::Platform {
                release: self.platform.clone(),
                this: platform.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn signed() -> (ReleaseKey, Manifest, Vec<u8>) {
        let key = ReleaseKey::generate();
        let binary = b"\x7fELF not really a binary".to_vec();
        let m = key.sign("0.1.0", "x86_64-linux", &binary).unwrap();
        (key, m, binary)
    }

    #[test]
    fn a_signed_release_verifies_after_a_round_trip_through_its_files() {
        let (key, m, binary) = signed();
        let key2 = ReleaseKey::from_pem(&key.to_pem()).unwrap();
        let public = ReleasePublicKey::from_pem(&key2.public().to_pem()).unwrap();
        assert_eq!(public, key.public());
        let parsed = Manifest::parse(&m.to_text()).unwrap();
        assert_eq!(parsed, m);
        parsed.verify_for(&public, &binary, "x86_64-linux").unwrap();
        assert!(m
            .message()
            .starts_with("pilothouse/agent-release/v1\nversion=0.1.0\n"));
    }

    #[test]
    fn a_flipped_byte_another_version_another_platform_or_another_key_is_refused() {
        let (key, m, binary) = signed();
        let public = key.public();
        let mut tampered = binary.clone();
        tampered[3] ^= 1;
        assert!(matches!(
            m.verify(&public, &tampered),
            Err(ReleaseError::Digest { .. })
        ));
        let mut other_version = m.clone();
        other_version.version = "0.2.0".into();
        assert!(matches!(
            other_version.verify(&public, &binary),
            Err(ReleaseError::Signature { .. })
        ));
        assert!(matches!(
            m.verify_for(&public, &binary, "aarch64-linux"),
            Err(ReleaseError::Platform { .. })
        ));
        let stranger = ReleaseKey::generate().public();
        assert!(matches!(
            m.verify(&stranger, &binary),
            Err(ReleaseError::Signature { .. })
        ));
    }

    #[test]
    fn malformed_manifests_and_keys_are_named() {
        let (key, m, _) = signed();
        let text = m.to_text();
        for (bad, what) in [
            (text.replace("version=", "versio="), "expected version="),
            (text.replace("version=0.1.0", "version=../x"), "version"),
            (
                text.replace("platform=x86_64-linux", "platform=X86"),
                "platform",
            ),
            (format!("{text}extra=1\n"), "follows"),
            (
                text.lines().take(3).collect::<Vec<_>>().join("\n"),
                "missing",
            ),
        ] {
            let e = Manifest::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let public_pem = key.public().to_pem();
        assert!(ReleaseKey::from_pem(&public_pem).is_err());
        assert!(ReleasePublicKey::from_pem(&key.to_pem()).is_err());
        assert!(ReleasePublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn versions_are_ordered_by_their_numbers() {
        use std::cmp::Ordering::*;
        for (a, b, o) in [
            ("0.10.0", "0.9.1", Greater),
            ("1.0.0", "1.0.0", Equal),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0-rc.2", "1.0.0-rc.10", Less),
            ("1.0", "1.0.1", Less),
            ("2.0.0+build.7", "2.0.0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn versions_and_platforms_have_a_shape() {
        assert!(valid_version("1.2.3-rc.1+build.5"));
        assert!(!valid_version("v1"));
        assert!(!valid_version("1 2"));
        assert!(valid_platform(&current_platform()));
        assert!(!valid_platform("linux"));
        assert!(!valid_platform("x86_64-linux/../x"));
    }
}
