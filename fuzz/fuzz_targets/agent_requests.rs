//! The agent gateway's request bodies as the control plane receives them.
//!
//! Raw inputs are parsed as every request body (`EnrolRequest`, `PollRequest`,
//! `ResultRequest`, `KeysRequest`, `RenewRequest`, `MetricsBatch`) and as a
//! `SignedKeyRegistration` (`from_json`). Whatever parses must serialise back
//! to an equal body; sealed results and registrations inside are opened or
//! verified with the fixed keys and may only succeed for the fixture messages.
//! Structured inputs (first byte 0xFF) build the deep fields directly:
//! - metrics: a `MetricsBatch` of arbitrary samples (any float, NaN and
//!   infinities included), serialised and parsed back;
//! - registration: a key registration of chosen keys, ids, fingerprint and
//!   times, signed, sent (alone and inside a `KeysRequest`) and verified; the
//!   outcome must be the documented one;
//! - mutated registration: a valid signed registration with field mutations;
//!   nothing that differs from a valid one verifies;
//! - enrolment: an `EnrolRequest` of arbitrary text, whose `Debug` must not
//!   depend on the token.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use channel::api::{
    AgentHealth, DiskUsage, EnrolRequest, KeysRequest, MetricSample, MetricsBatch, PollRequest,
    RenewRequest, ResultRequest,
};
use channel::envelope::MAX_CLOCK_SKEW_MS;
use channel::registration::REGISTRATION_MAX_AGE_MS;
use channel::token::RegistrationToken;
use channel::{
    open_result, sign_registration, verify_registration, ChannelError, KeyRegistration,
    SealedResult, SignedKeyRegistration, SigningKey, VerifyingKey,
};
use channel_fuzz::{
    arb_id, mutate, valid_fingerprint, valid_id, Mutation, AGENT, KEYS, MESSAGES, NOW,
    REGISTRATION_FIELDS, STRUCTURED,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(
    init: channel_fuzz::write_seeds_if_asked("agent_requests"),
    |data: &[u8]| {
        match data.split_first() {
            Some((&STRUCTURED, rest)) => structured(&mut Unstructured::new(rest)),
            _ => raw(data),
        }
    }
);

/// Parses `data` as `T`; what parses must serialise to JSON that parses again
/// and serialises to the same bytes.
fn body<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&v).expect("a parsed body serialises");
    let back: T = serde_json::from_slice(&json).expect("a re-serialised body parses");
    let again = serde_json::to_vec(&back).expect("serialises");
    assert_eq!(again, json, "JSON round trip changed the body");
    Some(v)
}

fn raw(data: &[u8]) {
    if let Some(e) = body::<EnrolRequest>(data) {
        check_enrol(&e);
    }
    let _ = body::<PollRequest>(data);
    let _ = body::<RenewRequest>(data);
    if let Some(r) = body::<ResultRequest>(data) {
        check_result(&r.result);
    }
    if let Some(k) = body::<KeysRequest>(data) {
        check_registration_opens_only_if_valid(&k.registration);
    }
    // Floats may not survive a JSON round trip bit for bit (serde_json parses
    // with best-effort precision), so metrics get their own comparison.
    if let Ok(batch) = serde_json::from_slice::<MetricsBatch>(data) {
        round_trip_metrics(&batch);
    }
    if let Ok(reg) = SignedKeyRegistration::from_json(data) {
        check_registration_opens_only_if_valid(&reg);
        let json = serde_json::to_vec(&reg).expect("serialises");
        assert_eq!(SignedKeyRegistration::from_json(&json), Ok(reg));
    }
}

/// An enrolment's `Debug` is the same whatever its token, and its token
/// parses or not without panicking.
fn check_enrol(e: &EnrolRequest) {
    let mut blank = e.clone();
    blank.token = String::new();
    assert_eq!(
        format!("{e:?}"),
        format!("{blank:?}"),
        "Debug shows the token"
    );
    let _ = e.token.parse::<RegistrationToken>();
}

/// A result posted by the fixture agent opens only if it is a fixture result.
fn check_result(sealed: &SealedResult) {
    let k = &*KEYS;
    let opened = open_result(
        sealed,
        AGENT,
        &k.server_kem,
        k.agent_signing.verifying_key(),
        NOW,
    );
    let known = MESSAGES.results.iter().find(|v| &v.msg == sealed);
    match (known, opened) {
        (Some(v), Ok(o)) => assert_eq!(o.output(), &v.payload[..]),
        (Some(_), Err(e)) => panic!("a valid result failed to open: {e:?}"),
        (None, Ok(_)) => panic!("a result that is none of the valid ones opened: {sealed:?}"),
        (None, Err(_)) => {}
    }
}

/// A registration verifies against the agent's current key only if it is one
/// of the fixture registrations.
fn check_registration_opens_only_if_valid(reg: &SignedKeyRegistration) {
    let verified = verify_registration(reg, AGENT, KEYS.agent_signing.verifying_key(), NOW);
    let known = MESSAGES.registrations.iter().find(|v| &v.msg == reg);
    match (known, verified) {
        (Some(v), Ok(r)) => assert_eq!(r.registration(), v.msg.registration()),
        (Some(_), Err(e)) => panic!("a valid registration failed to verify: {e:?}"),
        (None, Ok(_)) => panic!("a registration that is none of the valid ones verified: {reg:?}"),
        (None, Err(_)) => {}
    }
}

fn structured(u: &mut Unstructured) {
    let _ = match u.choose_index(4) {
        Ok(0) => metrics(u),
        Ok(1) => registration(u),
        Ok(2) => mutated_registration(u),
        Ok(_) => enrol(u),
        Err(_) => Ok(()),
    };
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

fn float(u: &mut Unstructured) -> arbitrary::Result<f64> {
    Ok(match u.choose_index(4)? {
        0 => f64::from(u16::arbitrary(u)?) / 10.0,
        1 => *u.choose(&[
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ])?,
        _ => f64::from_bits(u64::arbitrary(u)?),
    })
}

fn sample(u: &mut Unstructured) -> arbitrary::Result<MetricSample> {
    let mut disks = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        disks.push(DiskUsage {
            mount: String::arbitrary(u)?,
            used_bytes: u64::arbitrary(u)?,
            total_bytes: u64::arbitrary(u)?,
        });
    }
    let mut units = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        units.push(channel::api::UnitStatus {
            unit: String::arbitrary(u)?,
            state: String::arbitrary(u)?,
        });
    }
    let mut backups = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        backups.push(channel::api::BackupStatus {
            profile: String::arbitrary(u)?,
            last_success_at: Option::<i64>::arbitrary(u)?,
        });
    }
    Ok(MetricSample {
        at: i64::arbitrary(u)?,
        cpu_pct: float(u)?,
        mem_used_bytes: u64::arbitrary(u)?,
        mem_total_bytes: u64::arbitrary(u)?,
        disks,
        net_rx_bytes_per_sec: float(u)?,
        net_tx_bytes_per_sec: float(u)?,
        load: [float(u)?, float(u)?, float(u)?],
        units,
        backups,
    })
}

fn floats(s: &MetricSample) -> [f64; 6] {
    [
        s.cpu_pct,
        s.net_rx_bytes_per_sec,
        s.net_tx_bytes_per_sec,
        s.load[0],
        s.load[1],
        s.load[2],
    ]
}

/// Equal up to the last bits of float parsing.
fn close(a: f64, b: f64) -> bool {
    a == b
        || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
        || (a - b).abs() <= f64::MIN_POSITIVE
}

/// Serialises a batch and parses it back. JSON has no NaN or infinity:
/// serde_json writes them as `null`, which does not parse as a float, so a
/// batch holding one must be refused whole; any other batch comes back equal.
fn round_trip_metrics(batch: &MetricsBatch) {
    let json = serde_json::to_vec(batch).expect("a batch serialises");
    let finite = batch
        .samples
        .iter()
        .all(|s| floats(s).iter().all(|f| f.is_finite()));
    let back = serde_json::from_slice::<MetricsBatch>(&json);
    let back = match (finite, back) {
        (true, Ok(back)) => back,
        (true, Err(e)) => panic!("a finite batch did not parse back: {e}"),
        (false, Err(_)) => return,
        (false, Ok(_)) => panic!("a batch with a non-finite float parsed back"),
    };
    assert_eq!(back.samples.len(), batch.samples.len());
    for (a, b) in batch.samples.iter().zip(&back.samples) {
        assert_eq!(
            (a.at, a.mem_used_bytes, a.mem_total_bytes),
            (b.at, b.mem_used_bytes, b.mem_total_bytes)
        );
        assert_eq!(a.disks, b.disks);
        for (x, y) in floats(a).into_iter().zip(floats(b)) {
            assert!(close(x, y), "{x:e} came back as {y:e}");
        }
    }
    assert_eq!(back.health, batch.health);
}

fn metrics(u: &mut Unstructured) -> arbitrary::Result<()> {
    let mut samples = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        samples.push(sample(u)?);
    }
    let health = if bool::arbitrary(u)? {
        Some(AgentHealth {
            sent_at: i64::arbitrary(u)?,
            uptime_secs: u64::arbitrary(u)?,
            last_error: if bool::arbitrary(u)? {
                Some(channel::api::LastError {
                    age_secs: u64::arbitrary(u)?,
                    message: String::arbitrary(u)?,
                })
            } else {
                None
            },
        })
    } else {
        None
    };
    let batch = MetricsBatch { samples, health };
    round_trip_metrics(&batch);
    // No other request body takes a metrics batch.
    let json = serde_json::to_vec(&batch).expect("serialises");
    assert!(serde_json::from_slice::<PollRequest>(&json).is_err());
    assert!(serde_json::from_slice::<KeysRequest>(&json).is_err());
    assert!(serde_json::from_slice::<RenewRequest>(&json).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------
// Registrations
// ---------------------------------------------------------------------------

/// A signing key: one of the fixed ones, or one from an arbitrary seed.
fn signer(u: &mut Unstructured) -> arbitrary::Result<SigningKey> {
    let k = &*KEYS;
    let seed = match u.choose_index(4)? {
        0 | 1 => k.agent_signing.to_bytes(),
        2 => k.other_signing.to_bytes(),
        _ => {
            let seed = <[u8; 32]>::arbitrary(u)?;
            return Ok(SigningKey::from_bytes(&seed).expect("32 bytes"));
        }
    };
    Ok(SigningKey::from_bytes(seed.as_slice()).expect("32 bytes"))
}

fn fingerprint(u: &mut Unstructured) -> arbitrary::Result<Option<String>> {
    Ok(match u.choose_index(4)? {
        0 => None,
        1 => Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        2 => Some("sha256:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into()),
        _ => Some(String::arbitrary(u)?),
    })
}

fn time_near(u: &mut Unstructured, base: i64) -> arbitrary::Result<i64> {
    Ok(match u.choose_index(3)? {
        0 => base,
        1 => base.wrapping_add(i64::from(i32::arbitrary(u)?)),
        _ => base.wrapping_add(i64::arbitrary(u)?),
    })
}

/// The documented outcome of verifying a registration that signed correctly.
fn expected_verify(
    reg: &KeyRegistration,
    current: &VerifyingKey,
    trusted: &VerifyingKey,
    expected_agent: &str,
    now: i64,
) -> Result<(), ChannelError> {
    let age = i128::from(now) - i128::from(reg.issued_at);
    if current != trusted {
        Err(ChannelError::BadSignature)
    } else if reg.agent_id != expected_agent {
        Err(ChannelError::WrongAgent)
    } else if -age > i128::from(MAX_CLOCK_SKEW_MS) {
        Err(ChannelError::NotYetValid)
    } else if age > i128::from(REGISTRATION_MAX_AGE_MS) {
        Err(ChannelError::Expired)
    } else {
        Ok(())
    }
}

fn registration(u: &mut Unstructured) -> arbitrary::Result<()> {
    let k = &*KEYS;
    let kem = [&k.server_kem, &k.agent_kem, &k.other_kem][u.choose_index(3)?]
        .public_key()
        .clone();
    let current = signer(u)?;
    let new_identity = signer(u)?;
    let declared = if u.ratio(7, 8)? {
        new_identity.verifying_key().clone()
    } else {
        signer(u)?.verifying_key().clone()
    };
    let reg = KeyRegistration {
        agent_id: arb_id(u)?,
        kem_public_key: kem,
        identity_key: declared,
        tls_cert_fingerprint: fingerprint(u)?,
        issued_at: time_near(u, NOW)?,
    };
    let expected_agent = match u.choose_index(4)? {
        0 => String::arbitrary(u)?,
        _ => reg.agent_id.clone(),
    };
    let now = time_near(u, reg.issued_at)?;
    let csr_pem = Option::<String>::arbitrary(u)?;

    let refusal = if !valid_id(&reg.agent_id) {
        Some(ChannelError::InvalidField("agent_id"))
    } else if !reg
        .tls_cert_fingerprint
        .as_deref()
        .is_none_or(valid_fingerprint)
    {
        Some(ChannelError::InvalidField("tls_cert_fingerprint"))
    } else if &reg.identity_key != new_identity.verifying_key() {
        Some(ChannelError::InvalidField("identity_key"))
    } else {
        None
    };
    let signed = match sign_registration(reg.clone(), &current, &new_identity) {
        Ok(signed) => signed,
        Err(e) => {
            assert_eq!(
                Some(e),
                refusal,
                "refusal differs from the documented rules"
            );
            return Ok(());
        }
    };
    assert_eq!(refusal, None, "signed a registration the rules refuse");

    let trusted = k.agent_signing.verifying_key();
    let want = expected_verify(&reg, current.verifying_key(), trusted, &expected_agent, now);
    // Alone, as the agent's registration body...
    let json = serde_json::to_vec(&signed).expect("serialises");
    let parsed = SignedKeyRegistration::from_json(&json).expect("a signed registration parses");
    assert_eq!(parsed, signed);
    let got = verify_registration(&parsed, &expected_agent, trusted, now);
    assert_eq!(
        got.as_ref().map(|v| v.registration()),
        want.as_ref().map(|()| &reg)
    );
    // ...and inside the keys request that carries it.
    let request = KeysRequest {
        registration: signed,
        csr_pem,
    };
    let json = serde_json::to_vec(&request).expect("serialises");
    let parsed: KeysRequest = serde_json::from_slice(&json).expect("a keys request parses");
    assert_eq!(parsed.registration, request.registration);
    assert_eq!(parsed.csr_pem, request.csr_pem);
    let got = verify_registration(&parsed.registration, &expected_agent, trusted, now);
    assert_eq!(got.map(|v| v.into_inner()), want.map(|()| reg));
    Ok(())
}

fn mutated_registration(u: &mut Unstructured) -> arbitrary::Result<()> {
    let valid = &MESSAGES.registrations;
    let i = u.choose_index(2)?;
    let mut value = valid[i].value.clone();
    let donors = [&valid[1 - i].value];
    for _ in 0..u.int_in_range(1..=4)? {
        let m = Mutation::arbitrary(u)?;
        mutate(&mut value, REGISTRATION_FIELDS, &donors, &m);
    }
    let json = serde_json::to_vec(&value).expect("serialises");
    if let Ok(reg) = SignedKeyRegistration::from_json(&json) {
        check_registration_opens_only_if_valid(&reg);
    }
    // The keys request parses its registration through serde alone (no size
    // or version pre-check), and verification must still hold.
    let request = serde_json::json!({ "registration": value, "csr_pem": null });
    if let Ok(k) = serde_json::from_value::<KeysRequest>(request) {
        check_registration_opens_only_if_valid(&k.registration);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Enrolment
// ---------------------------------------------------------------------------

fn enrol(u: &mut Unstructured) -> arbitrary::Result<()> {
    let k = &*KEYS;
    let e = EnrolRequest {
        token: String::arbitrary(u)?,
        csr_pem: String::arbitrary(u)?,
        identity_key: signer(u)?.verifying_key().clone(),
        kem_key: u.ratio(1, 2)?.then(|| k.agent_kem.public_key().clone()),
        hostname: String::arbitrary(u)?,
        agent_version: String::arbitrary(u)?,
    };
    check_enrol(&e);
    let json = serde_json::to_vec(&e).expect("serialises");
    let back: EnrolRequest = serde_json::from_slice(&json).expect("an enrol request parses");
    assert_eq!(back.token, e.token);
    assert_eq!(back.csr_pem, e.csr_pem);
    assert_eq!(back.identity_key, e.identity_key);
    assert_eq!(back.kem_key, e.kem_key);
    assert_eq!(
        (back.hostname, back.agent_version),
        (e.hostname, e.agent_version)
    );
    Ok(())
}
