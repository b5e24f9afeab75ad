//! The one-time registration token an operator pastes into `pilothouse-agent register`.
//! The one place that formats and parses it: the control plane makes it with
//! [`RegistrationToken::format`], both sides read it with `str::parse`.
//!
//! Format: `pht1_<secret: 32 hex>_<pin: 64 hex>`. The secret authorises one enrolment;
//! the pin is the hex SHA-256 of the DER of the control plane's agent CA certificate,
//! so the very first connection can be authenticated before the agent holds the CA
//! (the kubeadm join idea).
//!
//! Invariant: a [`RegistrationToken`] value is well formed, and neither its `Debug`
//! nor any error of this module shows the secret. Past this module an attacker who
//! can only supply a malformed token gets an error naming the part that is wrong.

use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

const PREFIX: &str = "pht1_";
const SECRET_HEX_LEN: usize = 32;
const PIN_HEX_LEN: usize = 64;

/// SHA-256 of a CA certificate's DER: what the token pins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(der).into())
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != PIN_HEX_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({})", self.to_hex())
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a token string was refused. Never carries the token's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the registration token must start with `pht1_` (copy it again from the dashboard)")]
    Prefix,
    #[error("the registration token must look like pht1_<32 hex characters>_<64 hex characters>")]
    Shape,
    #[error("the secret part of the registration token must be 32 hex characters")]
    Secret,
    #[error("the CA pin part of the registration token must be 64 hex characters")]
    Pin,
}

/// A well-formed registration token. Sent whole to the control plane; the pin is
/// checked locally against the server's CA.
pub struct RegistrationToken {
    whole: Zeroizing<String>,
    pin: CaPin,
}

impl RegistrationToken {
    /// `pht1_<secret>_<CA pin>`, as the control plane hands it out.
    pub fn format(secret_hex: &str, ca_pin_hex: &str) -> String {
        format!("{PREFIX}{secret_hex}_{ca_pin_hex}")
    }

    /// The token as typed (trimmed), for the enrolment request only.
    pub fn expose(&self) -> &str {
        &self.whole
    }

    /// The secret part, which the control plane looks up by its hash.
    pub fn secret(&self) -> &str {
        // Invariant: parsing checked the prefix and a 32-character secret.
        &self.whole[PREFIX.len()..PREFIX.len() + SECRET_HEX_LEN]
    }

    /// The CA pin the token carries.
    pub fn pin(&self) -> CaPin {
        self.pin
    }
}

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationToken")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl FromStr for RegistrationToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let rest = s.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let (secret, pin) = rest.split_once('_').ok_or(TokenError::Shape)?;
        if secret.len() != SECRET_HEX_LEN || !secret.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(TokenError::Secret);
        }
        let pin = CaPin::from_hex(pin).ok_or(TokenError::Pin)?;
        // Hex either case, kept lower-case: the control plane looks the
        // secret up by the hash of its lower-case form.
        Ok(Self {
            whole: Zeroizing::new(s.to_ascii_lowercase()),
            pin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PIN: &str = "aa000000000000000000000000000000000000000000000000000000000000ff";

    #[test]
    fn parses_a_good_token_and_keeps_it_whole() {
        let text = format!("  pht1_{SECRET}_{PIN}\n");
        let t: RegistrationToken = text.parse().unwrap();
        assert_eq!(t.expose(), format!("pht1_{SECRET}_{PIN}"));
        assert_eq!(t.pin().to_hex(), PIN);
        assert_eq!(t.secret(), SECRET);
        assert_eq!(RegistrationToken::format(SECRET, PIN), t.expose());
        // Upper-case hex is the same token.
        let upper: RegistrationToken =
            format!("pht1_{}_{}", SECRET.to_uppercase(), PIN.to_uppercase())
                .parse()
                .unwrap();
        assert_eq!(upper.pin(), t.pin());
        assert_eq!(upper.secret(), SECRET);
    }

    #[test]
    fn refuses_bad_tokens_with_the_part_that_is_wrong() {
        let cases = [
            (String::new(), TokenError::Prefix),
            (format!("pht2_{SECRET}_{PIN}"), TokenError::Prefix),
            (format!("pht1_{SECRET}{PIN}"), TokenError::Shape),
            (format!("pht1_{}_{PIN}", &SECRET[1..]), TokenError::Secret),
            (format!("pht1_{}x_{PIN}", &SECRET[1..]), TokenError::Secret),
            (format!("pht1_{SECRET}_{}", &PIN[1..]), TokenError::Pin),
            (format!("pht1_{SECRET}_{}g", &PIN[1..]), TokenError::Pin),
            (format!("pht1_{SECRET}_{PIN}_extra"), TokenError::Pin),
        ];
        for (text, want) in cases {
            assert_eq!(
                text.parse::<RegistrationToken>().unwrap_err(),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t: RegistrationToken = format!("pht1_{SECRET}_{PIN}").parse().unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(SECRET));
        assert!(dbg.contains(PIN));
    }

    #[test]
    fn pin_of_der_is_sha256() {
        let pin = CaPin::of_der(b"abc");
        assert_eq!(
            pin.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
