//! Names people and agents supply (organisations, hostnames, versions): one
//! check for all of them.
//!
//! Invariant: a name that passes is trimmed, non-empty, bounded, and holds no
//! control character and no Unicode format character (general category Cf:
//! the bidi overrides and isolates, zero-width joiners, the BOM, tag
//! characters). Past this module nobody can make a name render as something
//! else on the dashboard or in the audit log (the "Trojan Source" trick).

use crate::ControlError;

/// Whether `c` is in Unicode general category Cf (format characters), as of
/// Unicode 15.1.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Trims `raw` and checks it: non-empty, at most `max` characters, no control
/// or format characters. `what` names the field in the error ("hostname").
pub fn bounded_name(raw: &str, max: usize, what: &str) -> Result<String, ControlError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(ControlError::invalid(format!("The {what} is missing.")));
    }
    if s.chars().count() > max {
        return Err(ControlError::invalid(format!(
            "The {what} is too long (at most {max} characters)."
        )));
    }
    if s.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err(ControlError::invalid(format!(
            "The {what} contains control or invisible formatting characters."
        )));
    }
    Ok(s.to_string())
}

/// Trims `raw` and checks free text (a reason): non-empty, at most `max`
/// characters, line breaks and tabs allowed, no other control character and
/// no format character. `what` names the field in the error ("reason").
pub fn bounded_text(raw: &str, max: usize, what: &str) -> Result<String, ControlError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(ControlError::invalid(format!("The {what} is missing.")));
    }
    if s.chars().count() > max {
        return Err(ControlError::invalid(format!(
            "The {what} is too long (at most {max} characters)."
        )));
    }
    if s.chars()
        .any(|c| (c.is_control() && !matches!(c, '\n' | '\t' | '\r')) || is_format_char(c))
    {
        return Err(ControlError::invalid(format!(
            "The {what} contains control or invisible formatting characters."
        )));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_bidi_and_invisible_characters() {
        assert_eq!(bounded_name("  web-1 ", 10, "hostname").unwrap(), "web-1");
        for bad in [
            "",
            "   ",
            "web\u{0}1",
            "web\n1",
            "admin\u{202E}gnp.exe",
            "a\u{2066}b\u{2069}",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "tag\u{E0041}",
            "eleven-char",
        ] {
            assert!(bounded_name(bad, 10, "hostname").is_err(), "{bad:?}");
        }
        assert_eq!(
            bounded_text(" disk full\nsee graph ", 50, "reason").unwrap(),
            "disk full\nsee graph"
        );
        let err = bounded_text(&"x".repeat(1 << 20), 2000, "reason").unwrap_err();
        assert!(err.to_string().contains("reason"), "{err}");
        assert!(bounded_text("a\u{202E}b", 50, "reason").is_err());
        // Letters of any script are fine.
        assert!(bounded_name("Zürich-東京", 20, "name").is_ok());
    }
}
