//! `str::parse::<RegistrationToken>()`, on arbitrary UTF-8 (raw inputs) and on
//! tokens assembled from pieces the fuzzer picks (first byte 0xFF): prefix,
//! separator, hex-ish secret and pin of lengths around the right ones, case,
//! surrounding (Unicode) whitespace and trailing junk.
//!
//! Checked for every input: the parser accepts exactly what the documented
//! shape `pht1_<32 hex>_<64 hex>` (trimmed) accepts; an accepted token is the
//! trimmed input in lower case (hex of either case is the same token),
//! round-trips through `RegistrationToken::format(secret, pin)`, and its
//! `Debug` does not depend on the secret.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use channel::token::RegistrationToken;
use channel_fuzz::{valid_token, STRUCTURED};
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(
    init: channel_fuzz::write_seeds_if_asked("registration_token"),
    |data: &[u8]| -> Corpus {
        match data.split_first() {
            Some((&STRUCTURED, rest)) => match assemble(&mut Unstructured::new(rest)) {
                Ok(text) => check(&text),
                Err(_) => return Corpus::Reject,
            },
            _ => match std::str::from_utf8(data) {
                Ok(text) => check(text),
                Err(_) => return Corpus::Reject,
            },
        }
        Corpus::Keep
    }
);

const PREFIX: &str = "pht1_";
const SECRET_LEN: usize = 32;

fn check(text: &str) {
    let parsed = text.parse::<RegistrationToken>();
    assert_eq!(
        parsed.is_ok(),
        valid_token(text),
        "parser and documented shape disagree on {text:?}: {parsed:?}"
    );
    let Ok(token) = parsed else {
        return;
    };
    let trimmed = text.trim().to_ascii_lowercase();
    let trimmed = trimmed.as_str();
    assert_eq!(token.expose(), trimmed);
    let secret = token.secret();
    assert_eq!(secret, &trimmed[PREFIX.len()..PREFIX.len() + SECRET_LEN]);
    let pin_as_typed = &trimmed[PREFIX.len() + SECRET_LEN + 1..];
    assert_eq!(token.pin().to_hex(), pin_as_typed);

    // Formatting the parts gives back the token...
    assert_eq!(RegistrationToken::format(secret, pin_as_typed), trimmed);
    // ...and the canonical (lower-case pin) form is the same token.
    let canonical = RegistrationToken::format(secret, &token.pin().to_hex());
    let again: RegistrationToken = canonical.parse().expect("a formatted token parses");
    assert_eq!(again.secret(), secret);
    assert_eq!(again.pin(), token.pin());

    // Debug shows the pin and nothing that depends on the secret.
    let other_secret = if secret == "0".repeat(SECRET_LEN) {
        "1"
    } else {
        "0"
    }
    .repeat(SECRET_LEN);
    let other: RegistrationToken = RegistrationToken::format(&other_secret, pin_as_typed)
        .parse()
        .expect("same shape parses");
    let debug = format!("{token:?}");
    assert_eq!(debug, format!("{other:?}"), "Debug depends on the secret");
    assert!(!debug.replace(&token.pin().to_hex(), "").contains(secret));
}

/// A piece of hex: usually `len` hex digits of the chosen case, sometimes one
/// character off, sometimes with a non-hex character inside.
fn hexish(u: &mut Unstructured, len: usize) -> arbitrary::Result<String> {
    let len = match u.choose_index(8)? {
        0 => len - 1,
        1 => len + 1,
        2 => u.int_in_range(0..=len * 2)?,
        _ => len,
    };
    let upper = u.ratio(1, 4)?;
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        let c = if u.ratio(1, 64)? {
            char::arbitrary(u)?
        } else {
            let d = u.int_in_range(0u8..=15)?;
            let c = char::from_digit(u32::from(d), 16).expect("a hex digit");
            if upper {
                c.to_ascii_uppercase()
            } else {
                c
            }
        };
        s.push(c);
    }
    Ok(s)
}

fn whitespace(u: &mut Unstructured) -> arbitrary::Result<String> {
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=3)? {
        s.push(*u.choose(&[
            ' ', '\t', '\n', '\r', '\u{a0}', '\u{2003}', '\u{3000}', '\u{feff}', '\u{85}',
        ])?);
    }
    Ok(s)
}

fn assemble(u: &mut Unstructured) -> arbitrary::Result<String> {
    let prefix = match u.choose_index(8)? {
        0 => String::arbitrary(u)?,
        1 => "PHT1_".into(),
        2 => "pht2_".into(),
        3 => "pht1".into(),
        4 => String::new(),
        _ => PREFIX.into(),
    };
    let secret = hexish(u, SECRET_LEN)?;
    let separator = match u.choose_index(8)? {
        0 => String::new(),
        1 => "-".into(),
        2 => "__".into(),
        3 => char::arbitrary(u)?.to_string(),
        _ => "_".into(),
    };
    let pin = hexish(u, 64)?;
    let suffix = if u.ratio(1, 8)? {
        String::arbitrary(u)?
    } else {
        String::new()
    };
    Ok(format!(
        "{}{prefix}{secret}{separator}{pin}{suffix}{}",
        whitespace(u)?,
        whitespace(u)?
    ))
}
