//! Commands and results as they arrive: parsing and opening sealed commands,
//! signed-only commands, sealed results and poll responses.
//!
//! Raw inputs are parsed as every one of them and whatever parses is opened with
//! the fixed keys; it may only open if it is one of the fixture messages.
//! Structured inputs (first byte 0xFF) take one of three paths:
//! - mutate: a valid message with 1 to 4 field mutations (header fields, key
//!   ids, KEM ciphertext, nonce, ciphertext, payload, signature, splices from
//!   other valid messages). Nothing that differs from a valid message opens.
//! - context: a valid message opened with a fuzzed clock, agent id, replay
//!   guard and keys; the outcome must be the documented first failing check.
//! - round trip: a header and payload sealed (or signed) and opened again; the
//!   sealing side refuses exactly what the documented rules refuse, and
//!   everything it accepts opens to the same header and payload.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use channel::api::{kinds, PollResponse};
use channel::envelope::{MAX_CLOCK_SKEW_MS, MAX_PAYLOAD_BYTES};
use channel::{
    open_command, open_result, open_signed_command, seal_command, seal_result, sign_command,
    ChannelError, CommandHeader, ReplayGuard, ReplayKind, ResultHeader, ResultStatus,
    SealedCommand, SealedResult, SignedCommand,
};
use channel_fuzz::{
    arb_id, mutate, replay_guard, valid_id, valid_kind, Field, FixedRng, Mutation, Valid, AGENT,
    KEYS, MESSAGES, NOW, STRUCTURED,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fuzz_target!(
    init: channel_fuzz::write_seeds_if_asked("envelope_open"),
    |data: &[u8]| {
        match data.split_first() {
            Some((&STRUCTURED, rest)) => structured(&mut Unstructured::new(rest)),
            _ => raw(data),
        }
    }
);

/// Everything an opener supplies besides the message.
struct Ctx {
    now: i64,
    agent: String,
    guard: ReplayGuard,
    /// Verify with a key other than the real signer's.
    wrong_signer: bool,
    /// Decrypt with a KEM key other than the one sealed to.
    wrong_kem: bool,
}

impl Ctx {
    fn fixed() -> Self {
        Self {
            now: NOW,
            agent: AGENT.into(),
            guard: ReplayGuard::new(),
            wrong_signer: false,
            wrong_kem: false,
        }
    }
}

/// One message type: how it is parsed, opened and mutated.
trait Case {
    type Msg: PartialEq + Serialize + DeserializeOwned + std::fmt::Debug + 'static;
    const FIELDS: &'static [Field];
    fn valid() -> &'static [Valid<Self::Msg>; 2];
    /// Valid messages of another type, as splice donors.
    fn cross() -> &'static Value;
    fn parse(json: &[u8]) -> Result<Self::Msg, ChannelError>;
    /// Opens, returning the payload.
    fn open(msg: &Self::Msg, ctx: &Ctx) -> Result<Vec<u8>, ChannelError>;
    /// The documented outcome of opening valid message `i` in `ctx`.
    fn expected(i: usize, ctx: &Ctx) -> Result<Vec<u8>, ChannelError>;
}

fn skew_exceeded(issued: i64, now: i64) -> bool {
    i128::from(issued) > i128::from(now) + i128::from(MAX_CLOCK_SKEW_MS)
}

/// Shared by sealed and signed commands: the checks after the addressee.
fn expected_command_window(
    h: &CommandHeader,
    ctx: &Ctx,
    payload: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    if ctx.now > h.expires_at {
        Err(ChannelError::Expired)
    } else if skew_exceeded(h.issued_at, ctx.now) || h.expires_at < h.issued_at {
        Err(ChannelError::NotYetValid)
    } else if ctx.guard.has_executed(&h.command_id) {
        Err(ChannelError::Replay(ReplayKind::AlreadyExecuted))
    } else if h.sequence <= ctx.guard.last_sequence() {
        Err(ChannelError::Replay(ReplayKind::StaleSequence))
    } else {
        Ok(payload.to_vec())
    }
}

struct Command;

impl Case for Command {
    type Msg = SealedCommand;
    const FIELDS: &'static [Field] = channel_fuzz::COMMAND_FIELDS;

    fn valid() -> &'static [Valid<SealedCommand>; 2] {
        &MESSAGES.commands
    }

    fn cross() -> &'static Value {
        &MESSAGES.results[0].value
    }

    fn parse(json: &[u8]) -> Result<SealedCommand, ChannelError> {
        SealedCommand::from_json(json)
    }

    fn open(msg: &SealedCommand, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let k = &*KEYS;
        let kem = if ctx.wrong_kem {
            &k.other_kem
        } else {
            &k.agent_kem
        };
        let signer = if ctx.wrong_signer {
            &k.other_signing
        } else {
            &k.server_signing
        };
        open_command(
            msg,
            &ctx.agent,
            kem,
            signer.verifying_key(),
            &ctx.guard,
            ctx.now,
        )
        .map(|o| o.into_payload())
    }

    fn expected(i: usize, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let v = &Self::valid()[i];
        let h = v.msg.header();
        if ctx.wrong_signer {
            Err(ChannelError::BadSignature)
        } else if ctx.agent != h.agent_id {
            Err(ChannelError::WrongAgent)
        } else if ctx.wrong_kem {
            Err(ChannelError::WrongRecipientKey)
        } else {
            expected_command_window(h, ctx, &v.payload)
        }
    }
}

struct Signed;

impl Case for Signed {
    type Msg = SignedCommand;
    const FIELDS: &'static [Field] = channel_fuzz::SIGNED_FIELDS;

    fn valid() -> &'static [Valid<SignedCommand>; 2] {
        &MESSAGES.signed
    }

    fn cross() -> &'static Value {
        &MESSAGES.commands[0].value
    }

    fn parse(json: &[u8]) -> Result<SignedCommand, ChannelError> {
        // Signed commands have no `from_json`: they reach the agent inside a
        // poll response, through serde.
        serde_json::from_slice(json).map_err(|_| ChannelError::Malformed("signed command"))
    }

    fn open(msg: &SignedCommand, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let k = &*KEYS;
        let signer = if ctx.wrong_signer {
            &k.other_signing
        } else {
            &k.server_signing
        };
        open_signed_command(msg, &ctx.agent, signer.verifying_key(), &ctx.guard, ctx.now)
            .map(|o| o.into_payload())
    }

    fn expected(i: usize, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let v = &Self::valid()[i];
        let h = v.msg.header();
        if ctx.wrong_signer {
            Err(ChannelError::BadSignature)
        } else if ctx.agent != h.agent_id {
            Err(ChannelError::WrongAgent)
        } else {
            expected_command_window(h, ctx, &v.payload)
        }
    }
}

struct ResultCase;

impl Case for ResultCase {
    type Msg = SealedResult;
    const FIELDS: &'static [Field] = channel_fuzz::RESULT_FIELDS;

    fn valid() -> &'static [Valid<SealedResult>; 2] {
        &MESSAGES.results
    }

    fn cross() -> &'static Value {
        &MESSAGES.commands[0].value
    }

    fn parse(json: &[u8]) -> Result<SealedResult, ChannelError> {
        SealedResult::from_json(json)
    }

    fn open(msg: &SealedResult, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let k = &*KEYS;
        let kem = if ctx.wrong_kem {
            &k.other_kem
        } else {
            &k.server_kem
        };
        let signer = if ctx.wrong_signer {
            &k.other_signing
        } else {
            &k.agent_signing
        };
        open_result(msg, &ctx.agent, kem, signer.verifying_key(), ctx.now).map(|o| o.into_output())
    }

    fn expected(i: usize, ctx: &Ctx) -> Result<Vec<u8>, ChannelError> {
        let v = &Self::valid()[i];
        let h = v.msg.header();
        if ctx.wrong_signer {
            Err(ChannelError::BadSignature)
        } else if ctx.agent != h.agent_id {
            Err(ChannelError::WrongAgent)
        } else if ctx.wrong_kem {
            Err(ChannelError::WrongRecipientKey)
        } else if skew_exceeded(h.finished_at, ctx.now) {
            Err(ChannelError::NotYetValid)
        } else {
            Ok(v.payload.clone())
        }
    }
}

/// A parsed message opened in the fixed context: it may open only if it is
/// one of the valid messages, and then to that message's payload. The valid
/// messages themselves must open. `strict`: it came through `C::parse`, not
/// plain serde (as inside a poll response, where header checks wait until
/// opening).
fn check_opens_only_if_valid<C: Case>(msg: &C::Msg, strict: bool) {
    let _ = format!("{msg:?}");
    let opened = C::open(msg, &Ctx::fixed());
    let known = C::valid().iter().find(|v| &v.msg == msg);
    match (known, opened) {
        (Some(v), Ok(payload)) => assert_eq!(payload, v.payload),
        (Some(_), Err(e)) => panic!("a valid message failed to open: {e:?}"),
        (None, Ok(_)) => panic!("a message that is none of the valid ones opened: {msg:?}"),
        (None, Err(_)) => {}
    }
    // Whatever parses serialises back to the same message.
    let json = serde_json::to_vec(msg).expect("a parsed message serialises");
    let back: C::Msg = serde_json::from_slice(&json).expect("a re-serialised message parses");
    assert_eq!(&back, msg, "JSON round trip changed the message");
    if strict {
        let back = C::parse(&json).expect("a re-serialised message passes the parser");
        assert_eq!(&back, msg, "JSON round trip changed the message");
    }
}

fn raw_case<C: Case>(data: &[u8]) {
    if let Ok(msg) = C::parse(data) {
        check_opens_only_if_valid::<C>(&msg, true);
    }
}

fn raw(data: &[u8]) {
    raw_case::<Command>(data);
    raw_case::<Signed>(data);
    raw_case::<ResultCase>(data);
    // How commands reach the agent.
    if let Ok(poll) = serde_json::from_slice::<PollResponse>(data) {
        for delivered in &poll.commands {
            let _ = delivered.header();
            match delivered {
                channel::api::DeliveredCommand::Sealed { envelope } => {
                    check_opens_only_if_valid::<Command>(envelope, false)
                }
                channel::api::DeliveredCommand::Signed { envelope } => {
                    check_opens_only_if_valid::<Signed>(envelope, false)
                }
            }
        }
    }
}

fn structured(u: &mut Unstructured) {
    let Ok(path) = u.choose_index(9) else {
        return;
    };
    let _ = match path {
        0 => mutated::<Command>(u),
        1 => mutated::<Signed>(u),
        2 => mutated::<ResultCase>(u),
        3 => context::<Command>(u),
        4 => context::<Signed>(u),
        5 => context::<ResultCase>(u),
        6 => round_trip_command(u, false),
        7 => round_trip_command(u, true),
        _ => round_trip_result(u),
    };
}

fn mutated<C: Case>(u: &mut Unstructured) -> arbitrary::Result<()> {
    let i = u.choose_index(2)?;
    let valid = C::valid();
    let mut value = valid[i].value.clone();
    let donors = [&valid[1 - i].value, C::cross()];
    let n = u.int_in_range(1..=4)?;
    for _ in 0..n {
        let m = Mutation::arbitrary(u)?;
        mutate(&mut value, C::FIELDS, &donors, &m);
    }
    let json = serde_json::to_vec(&value).expect("a JSON value serialises");
    if let Ok(msg) = C::parse(&json) {
        check_opens_only_if_valid::<C>(&msg, true);
    }
    Ok(())
}

fn context<C: Case>(u: &mut Unstructured) -> arbitrary::Result<()> {
    let i = u.choose_index(2)?;
    let header_id = match i {
        0 => "cmd-0007",
        _ => "cmd-0008",
    };
    let now = NOW.wrapping_add(i64::arbitrary(u)?);
    let agent = if u.ratio(1, 4)? {
        String::arbitrary(u)?
    } else {
        AGENT.to_string()
    };
    let last_sequence = if u.ratio(1, 2)? {
        u.int_in_range(0..=10)?
    } else {
        u64::arbitrary(u)?
    };
    let journal: &[&str] = match u.choose_index(3)? {
        0 => &[],
        1 => &["cmd-0001", "cmd-0002"],
        _ => &["cmd-0001", header_id],
    };
    let ctx = Ctx {
        now,
        agent,
        guard: replay_guard(last_sequence, journal),
        wrong_signer: u.ratio(1, 8)?,
        wrong_kem: u.ratio(1, 8)?,
    };
    let got = C::open(&C::valid()[i].msg, &ctx);
    let want = C::expected(i, &ctx);
    assert_eq!(got, want, "now {} agent {:?}", ctx.now, ctx.agent);
    Ok(())
}

fn kind(u: &mut Unstructured) -> arbitrary::Result<String> {
    Ok(match u.choose_index(6)? {
        0 => kinds::PING.into(),
        1 => kinds::ROTATE_KEYS.into(),
        2 => kinds::REGISTER_PQC_KEY.into(),
        3 => "service/restart".into(),
        4 => "k".repeat(u.int_in_range(63..=65)?),
        _ => String::arbitrary(u)?,
    })
}

fn payload(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    Ok(if u.ratio(1, 64)? {
        vec![0u8; MAX_PAYLOAD_BYTES + usize::from(u.ratio(1, 2)?)]
    } else {
        Vec::<u8>::arbitrary(u)?
    })
}

/// The documented refusals of `seal_command` / `sign_command`, in order.
fn expected_command_refusal(
    h: &CommandHeader,
    payload: &[u8],
    signed_only: bool,
) -> Option<ChannelError> {
    if h.sequence == 0 {
        Some(ChannelError::InvalidField("sequence"))
    } else if h.expires_at <= h.issued_at {
        Some(ChannelError::InvalidField("expires_at"))
    } else if !valid_id(&h.agent_id) {
        Some(ChannelError::InvalidField("agent_id"))
    } else if !valid_id(&h.command_id) {
        Some(ChannelError::InvalidField("command_id"))
    } else if !valid_kind(&h.kind) {
        Some(ChannelError::InvalidField("kind"))
    } else if signed_only && !kinds::UNSEALED.contains(&h.kind.as_str()) {
        Some(ChannelError::MustBeSealed)
    } else if payload.len() > MAX_PAYLOAD_BYTES {
        Some(ChannelError::PayloadTooLarge)
    } else {
        None
    }
}

fn round_trip_command(u: &mut Unstructured, signed_only: bool) -> arbitrary::Result<()> {
    let issued_at = if u.ratio(1, 2)? {
        NOW
    } else {
        i64::arbitrary(u)?
    };
    let expires_at = if u.ratio(3, 4)? {
        issued_at.saturating_add(i64::from(u.int_in_range(1u32..=86_400_000)?))
    } else {
        i64::arbitrary(u)?
    };
    let h = CommandHeader {
        agent_id: arb_id(u)?,
        command_id: arb_id(u)?,
        sequence: if u.ratio(1, 8)? {
            0
        } else {
            u64::arbitrary(u)?.max(1)
        },
        issued_at,
        expires_at,
        kind: kind(u)?,
        operation: None,
    };
    let payload = payload(u)?;
    let seed = u64::arbitrary(u)?;
    let want = expected_command_refusal(&h, &payload, signed_only);
    let k = &*KEYS;
    // Opened at the moment it was issued, by its addressee.
    let ctx = Ctx {
        now: h.issued_at,
        agent: h.agent_id.clone(),
        ..Ctx::fixed()
    };
    let opened = if signed_only {
        match sign_command(&h, &payload, &k.server_signing) {
            Err(e) => return refused(e, want),
            Ok(msg) => {
                assert_eq!(want, None, "signed what the rules refuse");
                let json = serde_json::to_vec(&msg).expect("serialises");
                let back = Signed::parse(&json).expect("a signed command parses");
                assert_eq!(back, msg);
                Signed::open(&back, &ctx)
            }
        }
    } else {
        let sealed = seal_command(
            &h,
            &payload,
            k.agent_kem.public_key(),
            &k.server_signing,
            &mut FixedRng::new(seed),
        );
        match sealed {
            Err(e) => return refused(e, want),
            Ok(msg) => {
                assert_eq!(want, None, "sealed what the rules refuse");
                let json = serde_json::to_vec(&msg).expect("serialises");
                let back = SealedCommand::from_json(&json).expect("a sealed command parses");
                assert_eq!(back, msg);
                Command::open(&back, &ctx)
            }
        }
    };
    assert_eq!(opened, Ok(payload), "a freshly sealed command must open");
    Ok(())
}

fn refused(got: ChannelError, want: Option<ChannelError>) -> arbitrary::Result<()> {
    assert_eq!(Some(got), want, "refusal differs from the documented rules");
    Ok(())
}

fn round_trip_result(u: &mut Unstructured) -> arbitrary::Result<()> {
    let h = ResultHeader {
        agent_id: arb_id(u)?,
        command_id: arb_id(u)?,
        sequence: u64::arbitrary(u)?,
        finished_at: if u.ratio(1, 2)? {
            NOW
        } else {
            i64::arbitrary(u)?
        },
        status: *u.choose(&[
            ResultStatus::Succeeded,
            ResultStatus::Failed,
            ResultStatus::TimedOut,
            ResultStatus::Refused,
        ])?,
    };
    let output = payload(u)?;
    let seed = u64::arbitrary(u)?;
    let want = if !valid_id(&h.agent_id) {
        Some(ChannelError::InvalidField("agent_id"))
    } else if !valid_id(&h.command_id) {
        Some(ChannelError::InvalidField("command_id"))
    } else if output.len() > MAX_PAYLOAD_BYTES {
        Some(ChannelError::PayloadTooLarge)
    } else {
        None
    };
    let k = &*KEYS;
    let sealed = seal_result(
        &h,
        &output,
        k.server_kem.public_key(),
        &k.agent_signing,
        &mut FixedRng::new(seed),
    );
    let msg = match sealed {
        Err(e) => return refused(e, want),
        Ok(msg) => msg,
    };
    assert_eq!(want, None, "sealed a result the rules refuse");
    let json = serde_json::to_vec(&msg).expect("serialises");
    let back = SealedResult::from_json(&json).expect("a sealed result parses");
    assert_eq!(back, msg);
    let ctx = Ctx {
        now: h.finished_at,
        agent: h.agent_id.clone(),
        ..Ctx::fixed()
    };
    let opened = open_result(
        &back,
        &ctx.agent,
        &k.server_kem,
        k.agent_signing.verifying_key(),
        ctx.now,
    )
    .expect("a freshly sealed result must open");
    assert_eq!(opened.header(), &h);
    assert_eq!(opened.output(), &output[..]);
    Ok(())
}
