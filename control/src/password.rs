//! Password rules and hashing: argon2id with the OWASP parameters
//! (m = 19 MiB, t = 2, p = 1), always off the async runtime, at most
//! [`max_parallel_hashes`] at a time.
//!
//! Invariant: verifying a password for an unknown account does the same work
//! as for a known one (a dummy hash with the same parameters), so response
//! time does not reveal whether an email is registered.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};

use crate::ControlError;

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

fn argon2() -> Argon2<'static> {
    // Invariant: these constants are valid argon2 parameters.
    #[allow(clippy::unwrap_used)]
    let params = Params::new(19 * 1024, 2, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(crate::crypto::random_token(16).as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Computes the dummy hash now, so the first unknown-user login is not faster.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "123456",
    "12345678",
    "qwerty",
    "letmein",
    "welcome",
    "admin",
    "iloveyou",
    "abc123",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "trustno1",
    "changeme",
    "pilothouse",
    "secret",
    "login",
    "master",
    "superman",
    "starwars",
    "whatever",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "1q2w3e4r",
    "hello",
    "freedom",
    "shadow",
];

/// Checks a new password against the rules; the message says which rule failed.
pub fn validate_new(password: &str, email: &str) -> Result<(), ControlError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(ControlError::invalid(format!(
            "The password must be at least {MIN_CHARS} characters long."
        )));
    }
    if chars > MAX_CHARS {
        return Err(ControlError::invalid(format!(
            "The password must be at most {MAX_CHARS} characters long."
        )));
    }
    let lower = password.to_lowercase();
    let distinct: std::collections::BTreeSet<char> = lower.chars().collect();
    if distinct.len() < 4 {
        return Err(ControlError::invalid(
            "The password repeats too few different characters.",
        ));
    }
    if is_sequence(&lower) {
        return Err(ControlError::invalid("The password is a simple sequence."));
    }
    let stripped: String = lower.chars().filter(|c| c.is_alphabetic()).collect();
    if COMMON.iter().any(|w| {
        lower == *w
            || (stripped == *w)
            || lower.starts_with(w)
                && lower[w.len()..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || !c.is_alphanumeric())
    }) {
        return Err(ControlError::invalid(
            "The password is too common; choose another.",
        ));
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Err(ControlError::invalid(
            "The password must not contain your email address.",
        ));
    }
    Ok(())
}

fn is_sequence(s: &str) -> bool {
    let b: Vec<u32> = s.chars().map(u32::from).collect();
    b.windows(2).all(|w| w[1] == w[0] + 1) || b.windows(2).all(|w| w[0] == w[1] + 1)
}

/// Hashes a password (PHC string) on a blocking thread.
/// At most this many hashes run at once (each takes 19 MiB and a core for
/// about 17 ms); the rest wait their turn, so a burst of logins cannot
/// exhaust memory.
pub fn max_parallel_hashes() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

static HASHING: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(max_parallel_hashes()));
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The most hashes that ever ran at once in this process (for tests and the benchmark).
pub fn peak_parallel_hashes() -> usize {
    PEAK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs one argon2 computation on a blocking thread, under the semaphore.
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    use std::sync::atomic::Ordering;
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| ControlError::Internal(format!("hashing semaphore closed: {e}").into()))?;
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    PEAK.fetch_max(now, Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(work)
        .await
        .map_err(ControlError::internal);
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    result?
}

pub async fn hash(password: SecretString) -> Result<String, ControlError> {
    bounded(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ControlError::Internal(format!("password hashing failed: {e}").into()))
    })
    .await
}

/// Verifies a password on a blocking thread. With `None` (unknown account) it
/// verifies against the dummy hash and returns false.
pub async fn verify(password: SecretString, stored: Option<String>) -> Result<bool, ControlError> {
    bounded(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&phc).map_err(|e| {
            ControlError::Internal(format!("stored password hash is malformed: {e}").into())
        })?;
        let ok = argon2()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        Ok(known && ok)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_reject_the_obvious() {
        let email = "ada.lovelace@example.com";
        for bad in [
            "short",
            "aaaaaaaaaaaaaaaa",
            "abcdefghijklmnop",
            "password123456",
            "Password!!!!!!",
            "my ada.lovelace pass",
            &"x1y2".repeat(40),
        ] {
            assert!(validate_new(bad, email).is_err(), "{bad} should be refused");
        }
        assert!(validate_new("correct horse battery staple", email).is_ok());
    }

    #[tokio::test]
    async fn hash_and_verify_round_trip() {
        let h = hash(SecretString::from("correct horse battery staple"))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(
            SecretString::from("correct horse battery staple"),
            Some(h.clone())
        )
        .await
        .unwrap());
        assert!(
            !verify(SecretString::from("wrong horse battery staple"), Some(h))
                .await
                .unwrap()
        );
        assert!(!verify(SecretString::from("anything at all"), None)
            .await
            .unwrap());
    }
}
