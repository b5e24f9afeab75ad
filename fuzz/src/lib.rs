//! Shared pieces of the channel fuzz targets: fixed keys, a deterministic RNG,
//! valid messages built once, JSON field mutations, reference models of the
//! documented rules, and the seed corpus.
//!
//! Input convention of every target: an input whose first byte is
//! [`STRUCTURED`] (0xFF, which never starts UTF-8 text or JSON) drives the
//! structured mode through [`arbitrary`]; any other input is raw text handed to
//! the parsers as it is. The seed files in `fuzz/corpus/` are raw inputs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use channel::api::{
    kinds, DeliveredCommand, DiskUsage, EnrolRequest, KeysRequest, MetricSample, MetricsBatch,
    PollRequest, PollResponse, RenewRequest, ResultRequest,
};
use channel::rand_core::{TryCryptoRng, TryRng};
use channel::{
    seal_command, seal_result, sign_command, sign_registration, CommandHeader, KemSecretKey,
    KeyRegistration, ReplayGuard, ResultHeader, ResultStatus, SealedCommand, SealedResult,
    SignedCommand, SignedKeyRegistration, SigningKey,
};
use serde::Serialize;
use serde_json::Value;
use std::convert::Infallible;
use std::path::Path;
use std::sync::LazyLock;

pub use arbitrary;

/// First byte of a structured input.
pub const STRUCTURED: u8 = 0xFF;
/// The fixed clock of the fixtures, Unix milliseconds.
pub const NOW: i64 = 1_760_000_000_000;
/// The agent every fixture message is for or from.
pub const AGENT: &str = "agent-7f3a";
/// Environment variable naming the corpus root the seed files are written to.
pub const WRITE_SEEDS_ENV: &str = "CHANNEL_FUZZ_WRITE_SEEDS";

// ---------------------------------------------------------------------------
// Keys and randomness
// ---------------------------------------------------------------------------

/// Fixed key pairs, each from a constant 32-byte seed.
pub struct Keys {
    /// The control plane's command-signing key.
    pub server_signing: SigningKey,
    /// The control plane's KEM key (results are sealed to it).
    pub server_kem: KemSecretKey,
    /// The agent's identity key (signs results and registrations).
    pub agent_signing: SigningKey,
    /// The agent's KEM key (commands are sealed to it).
    pub agent_kem: KemSecretKey,
    /// A second identity: the new key of a rotation, or an untrusted signer.
    pub other_signing: SigningKey,
    /// A second KEM key: a rotated key, or the new key of a registration.
    pub other_kem: KemSecretKey,
}

fn signing(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32]).expect("a 32-byte seed is a signing key")
}

fn kem(seed: u8) -> KemSecretKey {
    KemSecretKey::from_bytes(&[seed; 32]).expect("a 32-byte seed is a KEM key")
}

/// The fixed keys.
pub static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    server_signing: signing(1),
    server_kem: kem(2),
    agent_signing: signing(3),
    agent_kem: kem(4),
    other_signing: signing(5),
    other_kem: kem(6),
});

/// SplitMix64: deterministic sealing randomness, so that every run builds the
/// same messages and a crash reproduces. Not for anything but fixtures.
pub struct FixedRng(u64);

impl FixedRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn step(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl TryRng for FixedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.step() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.step())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.step().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for FixedRng {}

// ---------------------------------------------------------------------------
// Valid messages
// ---------------------------------------------------------------------------

/// A message that opens (or verifies) with the fixed keys at [`NOW`] for
/// [`AGENT`] with a fresh replay guard, with its JSON forms.
pub struct Valid<T> {
    pub msg: T,
    pub json: Vec<u8>,
    pub value: Value,
    /// Payload or output it opens to (empty for registrations).
    pub payload: Vec<u8>,
}

impl<T: Serialize> Valid<T> {
    fn new(msg: T, payload: &[u8]) -> Self {
        let value = serde_json::to_value(&msg).expect("a message serialises");
        let json = serde_json::to_vec(&value).expect("a JSON value serialises");
        Self {
            msg,
            json,
            value,
            payload: payload.to_vec(),
        }
    }
}

/// Two valid messages of every kind (the second is the donor for splicing).
pub struct Messages {
    pub commands: [Valid<SealedCommand>; 2],
    pub signed: [Valid<SignedCommand>; 2],
    pub results: [Valid<SealedResult>; 2],
    pub registrations: [Valid<SignedKeyRegistration>; 2],
}

/// A command header for [`AGENT`] issued at [`NOW`], valid for five minutes.
pub fn command_header(sequence: u64, kind: &str) -> CommandHeader {
    CommandHeader {
        agent_id: AGENT.into(),
        command_id: format!("cmd-{sequence:04}"),
        sequence,
        issued_at: NOW,
        expires_at: NOW + 5 * 60_000,
        kind: kind.into(),
        operation: None,
    }
}

/// A result header from [`AGENT`], finished at [`NOW`].
pub fn result_header(sequence: u64, status: ResultStatus) -> ResultHeader {
    ResultHeader {
        agent_id: AGENT.into(),
        command_id: format!("cmd-{sequence:04}"),
        sequence,
        finished_at: NOW,
        status,
    }
}

/// The valid messages, built once.
pub static MESSAGES: LazyLock<Messages> = LazyLock::new(|| {
    let k = &*KEYS;
    let mut rng = FixedRng::new(0x5EED);
    let mut command = |seq, kind, payload: &[u8]| {
        let sealed = seal_command(
            &command_header(seq, kind),
            payload,
            k.agent_kem.public_key(),
            &k.server_signing,
            &mut rng,
        )
        .expect("fixture command seals");
        Valid::new(sealed, payload)
    };
    let commands = [
        command(7, "service/restart", b"systemctl restart nginx"),
        command(
            8,
            "package/upgrade",
            b"apt-get install --only-upgrade openssl",
        ),
    ];
    let signed = |seq, kind, payload: &[u8]| {
        let signed = sign_command(&command_header(seq, kind), payload, &k.server_signing)
            .expect("fixture command signs");
        Valid::new(signed, payload)
    };
    let signed = [
        signed(7, kinds::PING, b"{}"),
        signed(8, kinds::ROTATE_KEYS, br#"{"tls":true}"#),
    ];
    let mut result = |seq, status, output: &[u8]| {
        let sealed = seal_result(
            &result_header(seq, status),
            output,
            k.server_kem.public_key(),
            &k.agent_signing,
            &mut rng,
        )
        .expect("fixture result seals");
        Valid::new(sealed, output)
    };
    let results = [
        result(7, ResultStatus::Succeeded, b"active (running)"),
        result(8, ResultStatus::Failed, b"E: Could not get lock"),
    ];
    // A rotation (new identity and KEM key) and a KEM-only activation.
    let rotation = KeyRegistration {
        agent_id: AGENT.into(),
        kem_public_key: k.other_kem.public_key().clone(),
        identity_key: k.other_signing.verifying_key().clone(),
        tls_cert_fingerprint: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        issued_at: NOW,
    };
    let activation = KeyRegistration {
        agent_id: AGENT.into(),
        kem_public_key: k.agent_kem.public_key().clone(),
        identity_key: k.agent_signing.verifying_key().clone(),
        tls_cert_fingerprint: None,
        issued_at: NOW - 1_000,
    };
    let registrations = [
        Valid::new(
            sign_registration(rotation, &k.agent_signing, &k.other_signing)
                .expect("fixture rotation signs"),
            b"",
        ),
        Valid::new(
            sign_registration(activation, &k.agent_signing, &k.agent_signing)
                .expect("fixture activation signs"),
            b"",
        ),
    ];
    Messages {
        commands,
        signed,
        results,
        registrations,
    }
});

/// A replay guard with `last_sequence` and a journal of `executed` ids (invalid
/// ids are dropped).
pub fn replay_guard(last_sequence: u64, executed: &[&str]) -> ReplayGuard {
    let executed: Vec<&str> = executed.iter().copied().filter(|id| valid_id(id)).collect();
    serde_json::from_value(serde_json::json!({
        "last_sequence": last_sequence,
        "executed": executed,
    }))
    .expect("a guard of valid ids loads")
}

// ---------------------------------------------------------------------------
// Reference models of the documented rules (written from the docs, not the code)
// ---------------------------------------------------------------------------

fn id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.:".contains(&c)
}

/// Agent and command ids: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(id_char)
}

/// Command kinds: 1 to 64 bytes of `[A-Za-z0-9._:/-]`.
pub fn valid_kind(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|c| id_char(c) || c == b'/')
}

/// TLS certificate fingerprints: 1 to 128 bytes of `[A-Za-z0-9:+/=_-]`.
pub fn valid_fingerprint(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b":+/=_-".contains(&c))
}

/// Whether `t` is `pht1_<32 hex>_<64 hex>` once surrounding whitespace is trimmed.
pub fn valid_token(t: &str) -> bool {
    let b = t.trim().as_bytes();
    b.len() == 5 + 32 + 1 + 64
        && b.starts_with(b"pht1_")
        && b[37] == b'_'
        && b[5..37].iter().all(u8::is_ascii_hexdigit)
        && b[38..].iter().all(u8::is_ascii_hexdigit)
}

/// An agent or command id: usually one of a few valid shapes (the longest
/// allowed among them), sometimes one byte too long, sometimes arbitrary text.
pub fn arb_id(u: &mut arbitrary::Unstructured) -> arbitrary::Result<String> {
    use arbitrary::Arbitrary as _;
    Ok(match u.choose_index(6)? {
        0 => AGENT.into(),
        1 => "550e8400-e29b-41d4-a716-446655440000".into(),
        2 => "x".repeat(128),
        3 => "x".repeat(129),
        4 => "a:b.c_d-e".into(),
        _ => String::arbitrary(u)?,
    })
}

// ---------------------------------------------------------------------------
// JSON field mutations
// ---------------------------------------------------------------------------

/// What a JSON field holds, which decides how a [`Mutation`] applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A base64url byte field.
    Bytes,
    /// A string (id, kind, fingerprint, status).
    Str,
    /// A hex key id.
    KeyId,
    /// An integer.
    Int,
}

/// A field of a message: JSON pointer and type.
pub type Field = (&'static str, FieldType);

/// One change an attacker on the wire could make to a field.
#[derive(arbitrary::Arbitrary, Debug, Clone)]
pub enum Mutation {
    /// Flips one bit (of the decoded bytes, the string bytes or the number).
    FlipBit { field: u8, index: u16, bit: u8 },
    /// Replaces the field with base64url of these bytes.
    SetBytes { field: u8, bytes: Vec<u8> },
    /// Truncates or extends (zeros, or the last character) the field.
    Resize { field: u8, len: u16 },
    /// Sets a signed number.
    SetInt { field: u8, value: i64 },
    /// Sets an unsigned number.
    SetUint { field: u8, value: u64 },
    /// Adds a small delta to a number.
    Nudge { field: u8, delta: i8 },
    /// Sets a string.
    SetString { field: u8, value: String },
    /// Sets a well-formed key id.
    SetKeyId { field: u8, id: u64 },
    /// Copies the field from another valid message (`from` picks which).
    Splice { field: u8, from: u8 },
    /// Removes the field.
    Remove { field: u8 },
    /// Sets the field to JSON null.
    SetNull { field: u8 },
    /// Adds a field to the top level or to the nested object.
    AddField { name: String, nested: bool },
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn flip_number(v: &Value, bit: u8) -> Option<Value> {
    let bit = u32::from(bit % 64);
    if let Some(u) = v.as_u64() {
        Some(Value::from(u ^ (1u64 << bit)))
    } else {
        v.as_i64().map(|i| Value::from(i ^ (1i64 << bit)))
    }
}

fn nudge_number(v: &Value, delta: i8) -> Option<Value> {
    if let Some(u) = v.as_u64() {
        Some(Value::from(u.wrapping_add_signed(i64::from(delta))))
    } else {
        v.as_i64()
            .map(|i| Value::from(i.wrapping_add(i64::from(delta))))
    }
}

/// Applies `m` to `value`, whose fields are `fields`; `donors` are other valid
/// messages (of the same or another kind) that `Splice` copies from.
pub fn mutate(value: &mut Value, fields: &[Field], donors: &[&Value], m: &Mutation) {
    let pick = |f: u8| fields[usize::from(f) % fields.len()];
    match m {
        Mutation::AddField { name, nested } => {
            let target = if *nested {
                // The one nested object of every message is the first field's parent.
                let (ptr, _) = fields[1];
                value.pointer_mut(parent(ptr))
            } else {
                Some(&mut *value)
            };
            if let Some(Value::Object(map)) = target {
                map.insert(name.clone(), Value::from(1));
            }
        }
        Mutation::Remove { field } => {
            let (ptr, _) = pick(*field);
            if let Some(Value::Object(map)) = value.pointer_mut(parent(ptr)) {
                map.remove(last(ptr));
            }
        }
        Mutation::Splice { field, from } => {
            let (ptr, _) = pick(*field);
            let donor = donors
                .get(usize::from(*from) % donors.len().max(1))
                .and_then(|d| d.pointer(ptr));
            if let (Some(donor), Some(slot)) = (donor, value.pointer_mut(ptr)) {
                *slot = donor.clone();
            }
        }
        _ => {
            let field = match m {
                Mutation::FlipBit { field, .. }
                | Mutation::SetBytes { field, .. }
                | Mutation::Resize { field, .. }
                | Mutation::SetInt { field, .. }
                | Mutation::SetUint { field, .. }
                | Mutation::Nudge { field, .. }
                | Mutation::SetString { field, .. }
                | Mutation::SetKeyId { field, .. }
                | Mutation::SetNull { field } => *field,
                Mutation::Splice { .. } | Mutation::Remove { .. } | Mutation::AddField { .. } => {
                    return
                }
            };
            let (ptr, ty) = pick(field);
            let Some(slot) = value.pointer_mut(ptr) else {
                return;
            };
            if let Some(new) = mutated_field(slot, ty, m) {
                *slot = new;
            }
        }
    }
}

fn mutated_field(slot: &Value, ty: FieldType, m: &Mutation) -> Option<Value> {
    match m {
        Mutation::FlipBit { index, bit, .. } => match (ty, slot) {
            (FieldType::Int, v) => flip_number(v, *bit),
            (FieldType::Bytes, Value::String(s)) => {
                let mut bytes = unb64(s)?;
                if bytes.is_empty() {
                    return None;
                }
                let i = usize::from(*index) % bytes.len();
                bytes[i] ^= 1 << (bit % 8);
                Some(Value::from(b64(&bytes)))
            }
            (_, Value::String(s)) => {
                let mut bytes = s.clone().into_bytes();
                if bytes.is_empty() {
                    return None;
                }
                let i = usize::from(*index) % bytes.len();
                bytes[i] ^= 1 << (bit % 8);
                String::from_utf8(bytes).ok().map(Value::from)
            }
            _ => None,
        },
        Mutation::SetBytes { bytes, .. } => Some(Value::from(b64(bytes))),
        Mutation::Resize { len, .. } => {
            let Value::String(s) = slot else {
                return None;
            };
            let len = usize::from(*len);
            if ty == FieldType::Bytes {
                let mut bytes = unb64(s)?;
                bytes.resize(len, 0);
                Some(Value::from(b64(&bytes)))
            } else {
                let mut chars: Vec<char> = s.chars().collect();
                let fill = chars.last().copied().unwrap_or('a');
                chars.resize(len, fill);
                Some(Value::from(chars.into_iter().collect::<String>()))
            }
        }
        Mutation::SetInt { value, .. } => Some(Value::from(*value)),
        Mutation::SetUint { value, .. } => Some(Value::from(*value)),
        Mutation::Nudge { delta, .. } => nudge_number(slot, *delta),
        Mutation::SetString { value, .. } => Some(Value::from(value.clone())),
        Mutation::SetKeyId { id, .. } => Some(Value::from(format!("{id:016x}"))),
        Mutation::SetNull { .. } => Some(Value::Null),
        Mutation::Splice { .. } | Mutation::Remove { .. } | Mutation::AddField { .. } => None,
    }
}

fn parent(ptr: &str) -> &str {
    ptr.rsplit_once('/').map_or("", |(p, _)| p)
}

fn last(ptr: &str) -> &str {
    ptr.rsplit_once('/').map_or(ptr, |(_, k)| k)
}

/// Fields of a sealed command.
pub const COMMAND_FIELDS: &[Field] = &[
    ("/v", FieldType::Int),
    ("/header/agent_id", FieldType::Str),
    ("/header/command_id", FieldType::Str),
    ("/header/sequence", FieldType::Int),
    ("/header/issued_at", FieldType::Int),
    ("/header/expires_at", FieldType::Int),
    ("/header/kind", FieldType::Str),
    ("/recipient_key_id", FieldType::KeyId),
    ("/signer_key_id", FieldType::KeyId),
    ("/kem_ciphertext", FieldType::Bytes),
    ("/nonce", FieldType::Bytes),
    ("/ciphertext", FieldType::Bytes),
    ("/signature", FieldType::Bytes),
];

/// Fields of a signed-only command.
pub const SIGNED_FIELDS: &[Field] = &[
    ("/v", FieldType::Int),
    ("/header/agent_id", FieldType::Str),
    ("/header/command_id", FieldType::Str),
    ("/header/sequence", FieldType::Int),
    ("/header/issued_at", FieldType::Int),
    ("/header/expires_at", FieldType::Int),
    ("/header/kind", FieldType::Str),
    ("/signer_key_id", FieldType::KeyId),
    ("/payload", FieldType::Bytes),
    ("/signature", FieldType::Bytes),
];

/// Fields of a sealed result.
pub const RESULT_FIELDS: &[Field] = &[
    ("/v", FieldType::Int),
    ("/header/agent_id", FieldType::Str),
    ("/header/command_id", FieldType::Str),
    ("/header/sequence", FieldType::Int),
    ("/header/finished_at", FieldType::Int),
    ("/header/status", FieldType::Str),
    ("/recipient_key_id", FieldType::KeyId),
    ("/signer_key_id", FieldType::KeyId),
    ("/kem_ciphertext", FieldType::Bytes),
    ("/nonce", FieldType::Bytes),
    ("/ciphertext", FieldType::Bytes),
    ("/signature", FieldType::Bytes),
];

/// Fields of a signed key registration.
pub const REGISTRATION_FIELDS: &[Field] = &[
    ("/v", FieldType::Int),
    ("/registration/agent_id", FieldType::Str),
    ("/registration/kem_public_key", FieldType::Bytes),
    ("/registration/identity_key", FieldType::Bytes),
    ("/registration/tls_cert_fingerprint", FieldType::Str),
    ("/registration/issued_at", FieldType::Int),
    ("/signer_key_id", FieldType::KeyId),
    ("/signature", FieldType::Bytes),
    ("/proof_of_possession", FieldType::Bytes),
];

// ---------------------------------------------------------------------------
// Seed corpus
// ---------------------------------------------------------------------------

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("a message serialises");
    out.push(b'\n');
    out
}

const TOKEN_SECRET: &str = "0123456789abcdef0123456789abcdef";
const TOKEN_PIN: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// The seed files of one target: (file name, contents). All are raw inputs.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    let m = &*MESSAGES;
    let k = &*KEYS;
    let token = channel::token::RegistrationToken::format(TOKEN_SECRET, TOKEN_PIN);
    match target {
        "envelope_open" => vec![
            ("sealed-command.json", json(&m.commands[0].msg)),
            ("signed-command.json", json(&m.signed[0].msg)),
            ("sealed-result.json", json(&m.results[0].msg)),
            (
                "poll-response.json",
                json(&PollResponse {
                    commands: vec![
                        DeliveredCommand::Sealed {
                            envelope: m.commands[1].msg.clone(),
                        },
                        DeliveredCommand::Signed {
                            envelope: m.signed[1].msg.clone(),
                        },
                    ],
                }),
            ),
        ],
        "agent_requests" => vec![
            (
                "enrol.json",
                json(&EnrolRequest {
                    token,
                    csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nMIHTMHsCAQAwGTEXMBUGA1UEAwwOcGlsb3Rob3VzZS1hZ2VudA==\n-----END CERTIFICATE REQUEST-----\n".into(),
                    identity_key: k.agent_signing.verifying_key().clone(),
                    kem_key: Some(k.agent_kem.public_key().clone()),
                    hostname: "web-1.example.internal".into(),
                    agent_version: "0.1.0".into(),
                }),
            ),
            ("poll.json", json(&PollRequest { wait_secs: Some(25) })),
            ("result.json", json(&ResultRequest { result: m.results[1].msg.clone() })),
            (
                "keys.json",
                json(&KeysRequest {
                    registration: m.registrations[1].msg.clone(),
                    csr_pem: None,
                }),
            ),
            (
                "renew.json",
                {
                    let csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIHTMHsCAQAw\n-----END CERTIFICATE REQUEST-----\n";
                    json(&RenewRequest {
                        csr_pem: csr_pem.into(),
                        renewal: channel::sign_renewal(AGENT, csr_pem, &k.agent_signing, NOW)
                            .expect("a well-formed agent id"),
                    })
                },
            ),
            (
                "metrics.json",
                json(&MetricsBatch {
                    samples: vec![MetricSample {
                        at: NOW,
                        cpu_pct: 12.5,
                        mem_used_bytes: 1_073_741_824,
                        mem_total_bytes: 4_294_967_296,
                        disks: vec![DiskUsage {
                            mount: "/".into(),
                            used_bytes: 10_737_418_240,
                            total_bytes: 53_687_091_200,
                        }],
                        net_rx_bytes_per_sec: 2048.0,
                        net_tx_bytes_per_sec: 512.25,
                        load: [0.42, 0.35, 0.3],
                        units: Vec::new(),
                        backups: Vec::new(),
                    }],
                    health: Some(channel::api::AgentHealth {
                        sent_at: NOW,
                        uptime_secs: 3600,
                        last_error: Some(channel::api::LastError {
                            age_secs: 120,
                            message: "poll failed: cannot reach the control plane".into(),
                        }),
                    }),
                }),
            ),
            ("registration.json", json(&m.registrations[0].msg)),
        ],
        "registration_token" => vec![
            ("token.txt", format!("{token}\n").into_bytes()),
            (
                "token-upper-pin.txt",
                channel::token::RegistrationToken::format(TOKEN_SECRET, &TOKEN_PIN.to_uppercase())
                    .into_bytes(),
            ),
            ("token-spaces.txt", format!("  \t{token}  ").into_bytes()),
        ],
        _ => Vec::new(),
    }
}

/// When [`WRITE_SEEDS_ENV`] names a directory, writes `target`'s seeds into
/// `<dir>/<target>/` and exits. Called from each target's `init`.
pub fn write_seeds_if_asked(target: &str) {
    let Some(root) = std::env::var_os(WRITE_SEEDS_ENV) else {
        return;
    };
    let dir = Path::new(&root).join(target);
    std::fs::create_dir_all(&dir).expect("seed directory can be created");
    for (name, contents) in seeds(target) {
        std::fs::write(dir.join(name), contents).expect("seed file can be written");
    }
    eprintln!("wrote the {target} seeds to {}", dir.display());
    std::process::exit(0);
}
