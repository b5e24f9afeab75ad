//! Reads the few fields of an X.509 certificate the agent needs: serial number,
//! validity window and public key. Used to schedule renewal, to show the certificate
//! in `status`, and to check that a certificate the control plane issued carries the
//! key the agent generated.
//!
//! This is not a validator: chains and signatures are verified by rustls/webpki when
//! a certificate is used. A minimal DER walker keeps a full X.509 parser out of the
//! agent. Invariant: any input yields a value or an error, never a panic, and reads
//! stay inside the input.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

/// What the agent knows about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial_hex: String,
    /// Unix milliseconds.
    pub not_before_ms: i64,
    /// Unix milliseconds.
    pub not_after_ms: i64,
    /// DER of the SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, &'static str> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| "no PEM certificate")?;
        Self::from_der(&der)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, &'static str> {
        let (cert, rest) = expect(der, SEQUENCE)?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate");
        }
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let mut t = tbs;
        if t.first() == Some(&VERSION_TAG) {
            t = read(t)?.2;
        }
        let (serial, t) = expect(t, INTEGER)?;
        let (_sig_alg, t) = expect(t, SEQUENCE)?;
        let (_issuer, t) = expect(t, SEQUENCE)?;
        let (validity, t) = expect(t, SEQUENCE)?;
        let (_subject, t) = expect(t, SEQUENCE)?;
        let spki = read_whole(t)?;
        if spki.tag != SEQUENCE {
            return Err("subject public key info");
        }
        let (nb_tag, nb, v) = read(validity)?;
        let (na_tag, na, _) = read(v)?;
        let serial = match serial {
            [0, rest @ ..] if !rest.is_empty() => rest,
            s => s,
        };
        if serial.is_empty() {
            return Err("serial number");
        }
        Ok(Self {
            serial_hex: hex::encode(serial),
            not_before_ms: time_ms(nb_tag, nb)?,
            not_after_ms: time_ms(na_tag, na)?,
            spki_der: spki.whole.to_vec(),
        })
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

/// One DER element and what follows it.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    rest: &'a [u8],
    /// The element's own bytes, header included.
    whole: &'a [u8],
}

/// One TLV: (tag, content, rest).
fn read(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let t = read_whole(input)?;
    Ok((t.tag, t.content, t.rest))
}

fn read_whole(input: &[u8]) -> Result<Tlv<'_>, &'static str> {
    const TRUNCATED: &str = "truncated DER";
    let (&tag, after_tag) = input.split_first().ok_or(TRUNCATED)?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tag");
    }
    let (&first, mut after_len) = after_tag.split_first().ok_or(TRUNCATED)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("unsupported DER length");
        }
        if after_len.len() < n {
            return Err(TRUNCATED);
        }
        let (len_bytes, rest) = after_len.split_at(n);
        after_len = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if after_len.len() < len {
        return Err(TRUNCATED);
    }
    let header = input.len() - after_len.len();
    let (content, rest) = after_len.split_at(len);
    Ok(Tlv {
        tag,
        content,
        rest,
        whole: &input[..header + len],
    })
}

fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (t, content, rest) = read(input)?;
    if t != tag {
        return Err("unexpected DER structure");
    }
    Ok((content, rest))
}

fn digits(s: &[u8]) -> Result<i64, &'static str> {
    s.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err("certificate time")
        }
    })
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` to Unix ms.
fn time_ms(tag: u8, v: &[u8]) -> Result<i64, &'static str> {
    let (year, rest) = match (tag, v.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&v[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &v[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&v[..4])?, &v[4..]),
        _ => return Err("certificate time"),
    };
    if rest.last() != Some(&b'Z') {
        return Err("certificate time");
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err("certificate time");
    }
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or("certificate time")?;
    let date = i32::try_from(year)
        .ok()
        .and_then(|y| time::Date::from_calendar_date(y, month, day as u8).ok())
        .ok_or("certificate time")?;
    // A leap second (:60) counts as :59; the time crate has no :60.
    let at = date
        .with_hms(hour as u8, min as u8, sec.min(59) as u8)
        .map_err(|_| "certificate time")?
        .assume_utc();
    Ok(at.unix_timestamp() * 1000)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix milliseconds (`out of range` past the
/// years -9999..=9999).
pub fn format_utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "out of range".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SerialNumber};

    #[test]
    fn reads_serial_validity_and_key_of_an_rcgen_certificate() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["agent.example".into()]).unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x8f, 0x01, 0x02]));
        params.not_before = rcgen::date_time_ymd(2026, 3, 1);
        params.not_after = rcgen::date_time_ymd(2051, 2, 28);
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::from_pem(&cert.pem()).unwrap();
        assert_eq!(info.serial_hex, "8f0102");
        assert_eq!(info.not_before_ms, 1_772_323_200_000); // 2026-03-01
        assert_eq!(info.not_after_ms, 2_561_155_200_000); // 2051-02-28
        assert_eq!(format_utc(info.not_after_ms), "2051-02-28 00:00:00 UTC");
        use rcgen::PublicKeyData as _;
        assert_eq!(info.spki_der, key.subject_public_key_info());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CertInfo::from_pem("not pem").is_err());
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 0, 0, 0, 0, 1],
            &[0x30, 0x03, 0x30, 0x01],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x1f, 0x00],
        ] {
            assert!(CertInfo::from_der(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn times_round_trip_through_the_calendar() {
        assert_eq!(
            time_ms(GENERALIZED_TIME, b"20240229120000Z").unwrap() / 1000,
            1_709_208_000
        );
        assert!(time_ms(GENERALIZED_TIME, b"20230229120000Z").is_err());
        assert_eq!(format_utc(1_709_208_000_000), "2024-02-29 12:00:00 UTC");
        assert_eq!(format_utc(i64::MAX), "out of range");
        assert_eq!(
            time_ms(UTC_TIME, b"491231235959Z").unwrap() / 1000,
            2_524_607_999
        );
        assert_eq!(time_ms(UTC_TIME, b"700101000000Z").unwrap(), 0);
        assert_eq!(
            time_ms(GENERALIZED_TIME, b"20380119031408Z").unwrap() / 1000,
            2_147_483_648
        );
        assert!(time_ms(UTC_TIME, b"701301000000Z").is_err());
        assert!(time_ms(UTC_TIME, b"7001010000000").is_err());
        assert_eq!(format_utc(1_000), "1970-01-01 00:00:01 UTC");
    }
}
