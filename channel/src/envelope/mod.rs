//! The sealed envelope: how a command travels from the control plane to one agent,
//! and how its result travels back.
//!
//! Construction (the same in both directions, with a different label):
//!
//! 1. X-Wing encapsulation to the recipient's KEM key gives a fresh 32-byte secret.
//! 2. HKDF-SHA256 turns it into a single-use ChaCha20-Poly1305 key. Salt = the label;
//!    info = a canonical transcript of label, version, agent id, the full SHA-256
//!    fingerprints of the recipient KEM key and of the signer's key, command id and
//!    sequence. A ciphertext moved to another envelope, agent, key or sequence
//!    therefore decrypts under a different key and fails.
//! 3. The payload is encrypted with a random 96-bit nonce; the AAD is the canonical
//!    header bytes. The key is never reused, so a fixed nonce would also be safe; the
//!    nonce is random anyway so that nonce uniqueness does not rest on the KEM
//!    randomness alone, for the price of 12 bytes.
//! 4. Ed25519 signs the canonical bytes of header, key ids, KEM ciphertext, nonce and
//!    AEAD ciphertext.
//!
//! Opening checks, in this order: size, version, structure, signature (before any
//! secret-key operation), addressee, KEM key id, validity window, replay, then
//! decapsulation and decryption. Each failure has its own [`ChannelError`] variant.
//!
//! What an attacker on the network (or a compromised relay) can do past this module:
//! see header metadata (agent id, command id, sequence, times, kind, sizes), drop,
//! delay or reorder envelopes, and redeliver them, which the [`ReplayGuard`] turns
//! into refusals. What they cannot do: read a payload without the recipient's KEM
//! secret key (classical or quantum adversary, as long as either X25519 or
//! ML-KEM-768 holds), alter any byte without the signer's Ed25519 key, redirect an
//! envelope to another agent or KEM key, or make an agent act on an expired or
//! replayed command. Ed25519 is not post-quantum: a future quantum attacker could
//! forge signatures, but not read recorded traffic.
//!
//! Limits: an envelope's JSON is at most [`MAX_ENVELOPE_BYTES`]; a payload at most
//! [`MAX_PAYLOAD_BYTES`]; ids at most [`MAX_ID_BYTES`]; kinds at most
//! [`MAX_KIND_BYTES`]. No input makes this module panic.

use crate::error::ChannelError;
use crate::keys::{
    KemPublicKey, KemSecretKey, KeyId, SigningKey, VerifyingKey, KEM_CIPHERTEXT_BYTES,
    SIGNATURE_BYTES,
};
use crate::replay::ReplayGuard;
use crate::wire::{self, Canonical};
use crate::PROTOCOL_VERSION;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use rand_core::CryptoRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroize;

/// Largest envelope accepted by [`Envelope::from_json`], in bytes of JSON.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Largest command payload or result output that can be sealed, in bytes. Chosen so
/// that the base64 form plus the fixed overhead stays below [`MAX_ENVELOPE_BYTES`];
/// the agent truncates longer output before sealing.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;
/// Longest agent id or command id, in bytes (`[A-Za-z0-9._:-]`).
pub const MAX_ID_BYTES: usize = 128;
/// Longest command kind, in bytes (`[A-Za-z0-9._:/-]`).
pub const MAX_KIND_BYTES: usize = 64;
pub use crate::MAX_CLOCK_SKEW_MS;
/// Domain-separation label of commands (signature, AAD, key derivation).
pub const COMMAND_LABEL: &str = "pilothouse/command/v1";
/// Domain-separation label of results.
pub const RESULT_LABEL: &str = "pilothouse/result/v1";
/// Domain-separation label of live output chunks.
pub const CHUNK_LABEL: &str = "pilothouse/output/v1";

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const MAX_AEAD_CIPHERTEXT_BYTES: usize = MAX_PAYLOAD_BYTES + TAG_BYTES;

mod sealed {
    /// The crate-private half of [`EnvelopeHeader`](super::EnvelopeHeader): no other
    /// crate can add header types or see their encoding.
    pub trait Sealed {
        /// Domain-separation label of this direction.
        const LABEL: &'static str;
        /// Structural checks; `Err` names the offending field.
        fn check_structure(&self) -> Result<(), &'static str>;
        /// Canonical bytes of label, version and every field: the AAD, and the
        /// first part of what is signed.
        fn canonical(&self, v: u16) -> Vec<u8>;
    }
}

/// The plaintext, signed part of an envelope: [`CommandHeader`] or [`ResultHeader`].
/// Sealed: no other header types exist.
pub trait EnvelopeHeader: sealed::Sealed + Serialize + DeserializeOwned {
    /// Agent the message is for (commands) or from (results).
    fn agent_id(&self) -> &str;
    /// Command this message is or answers.
    fn command_id(&self) -> &str;
    /// Sequence number of the command.
    fn sequence(&self) -> u64;
}

/// Plaintext header of a command. Signed and used as AAD, but not encrypted: the
/// control plane and relays may log it. Put nothing secret here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandHeader {
    /// The one agent allowed to open this command.
    pub agent_id: String,
    /// Unique id of the command (UUID or hex), recorded in the agent's journal.
    pub command_id: String,
    /// Per-agent sequence number, starting at 1 and strictly increasing (gaps are
    /// fine: cancelled commands leave holes).
    pub sequence: u64,
    /// When the control plane issued it, Unix milliseconds.
    pub issued_at: i64,
    /// After this instant (Unix milliseconds) the agent refuses it.
    pub expires_at: i64,
    /// Operation kind, checked against the agent's local allowlist.
    pub kind: String,
    /// For an approved operation: where it came from, the plan hash the agent
    /// recomputes, and the approval record. Absent for the control plane's own
    /// commands (pings, key rounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationHeader>,
}

/// What a command for an approved operation carries, signed with the rest of
/// the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationHeader {
    /// Hex SHA-256 from [`crate::ops::plan_hash`] over this agent and the
    /// operation: the agent refuses the command if what it would run hashes
    /// to anything else.
    pub plan_hash: String,
    pub approval: crate::ops::ApprovalRecord,
}

impl OperationHeader {
    /// Bounds checked before the signature, like every other header field.
    fn check(&self) -> Result<(), &'static str> {
        if self.plan_hash.len() != 64 || !self.plan_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("plan_hash");
        }
        let a = &self.approval;
        if a.operation_id.is_empty() || a.operation_id.len() > 64 || a.approvers.len() > 16 {
            return Err("approval");
        }
        if a.approvers.iter().any(|p| p.role.len() > 16) {
            return Err("approval");
        }
        Ok(())
    }
}

impl EnvelopeHeader for CommandHeader {
    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn command_id(&self) -> &str {
        &self.command_id
    }

    fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl sealed::Sealed for CommandHeader {
    const LABEL: &'static str = COMMAND_LABEL;

    fn check_structure(&self) -> Result<(), &'static str> {
        check_ids(&self.agent_id, &self.command_id)?;
        if !wire::valid_kind(&self.kind, MAX_KIND_BYTES) {
            return Err("kind");
        }
        if let Some(op) = &self.operation {
            op.check()?;
        }
        Ok(())
    }

    fn canonical(&self, v: u16) -> Vec<u8> {
        let mut c = Canonical::new(Self::LABEL);
        c.u16(v)
            .str(&self.agent_id)
            .str(&self.command_id)
            .u64(self.sequence)
            .i64(self.issued_at)
            .i64(self.expires_at)
            .str(&self.kind);
        // A command without an operation keeps its earlier transcript; one
        // with an operation adds a marker and every field of it.
        if let Some(op) = &self.operation {
            let a = &op.approval;
            c.u8(1)
                .str(&op.plan_hash)
                .str(&a.operation_id)
                .str(a.origin.as_str())
                .i64(a.proposed_by.unwrap_or(-1))
                .u8(u8::from(a.self_approved))
                .i64(a.expires_at)
                .u64(a.approvers.len() as u64);
            for p in &a.approvers {
                c.i64(p.user_id).str(&p.role).i64(p.at);
            }
        }
        c.finish()
    }
}

/// How a command ended on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Ran and exited successfully.
    Succeeded,
    /// Ran and failed (non-zero exit or error); details are in the output.
    Failed,
    /// Killed at its timeout.
    TimedOut,
    /// Not run: the agent's local policy refused it.
    Refused,
}

impl ResultStatus {
    fn tag(self) -> u8 {
        match self {
            Self::Succeeded => 1,
            Self::Failed => 2,
            Self::TimedOut => 3,
            Self::Refused => 4,
        }
    }
}

/// Plaintext header of a result. Signed and used as AAD, not encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultHeader {
    /// The agent that ran the command.
    pub agent_id: String,
    /// The command this answers.
    pub command_id: String,
    /// The command's sequence number.
    pub sequence: u64,
    /// When the agent finished, Unix milliseconds.
    pub finished_at: i64,
    /// How it ended.
    pub status: ResultStatus,
}

impl EnvelopeHeader for ResultHeader {
    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn command_id(&self) -> &str {
        &self.command_id
    }

    fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl sealed::Sealed for ResultHeader {
    const LABEL: &'static str = RESULT_LABEL;

    fn check_structure(&self) -> Result<(), &'static str> {
        check_ids(&self.agent_id, &self.command_id)
    }

    fn canonical(&self, v: u16) -> Vec<u8> {
        Canonical::new(Self::LABEL)
            .u16(v)
            .str(&self.agent_id)
            .str(&self.command_id)
            .u64(self.sequence)
            .i64(self.finished_at)
            .u8(self.status.tag())
            .finish()
    }
}

/// Plaintext header of a live output chunk: part of a running command's
/// output, sent while it runs. Signed and used as AAD, not encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkHeader {
    /// The agent running the command.
    pub agent_id: String,
    /// The command whose output this is.
    pub command_id: String,
    /// The command's sequence number.
    pub sequence: u64,
    /// Position of this chunk in the command's output, from 0. A chunk with
    /// no output is a keep-alive (the answer says whether to cancel).
    pub index: u32,
    /// When the agent sent it, Unix milliseconds.
    pub at: i64,
}

impl EnvelopeHeader for ChunkHeader {
    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn command_id(&self) -> &str {
        &self.command_id
    }

    fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl sealed::Sealed for ChunkHeader {
    const LABEL: &'static str = CHUNK_LABEL;

    fn check_structure(&self) -> Result<(), &'static str> {
        check_ids(&self.agent_id, &self.command_id)
    }

    fn canonical(&self, v: u16) -> Vec<u8> {
        Canonical::new(Self::LABEL)
            .u16(v)
            .str(&self.agent_id)
            .str(&self.command_id)
            .u64(self.sequence)
            .u64(u64::from(self.index))
            .i64(self.at)
            .finish()
    }
}

fn check_ids(agent_id: &str, command_id: &str) -> Result<(), &'static str> {
    if !wire::valid_id(agent_id, MAX_ID_BYTES) {
        return Err("agent_id");
    }
    if !wire::valid_id(command_id, MAX_ID_BYTES) {
        return Err("command_id");
    }
    Ok(())
}

/// A sealed, signed message on the wire. Serialize it with `serde_json`; parse it
/// with [`Envelope::from_json`], which adds the size limit and a clean
/// [`ChannelError::UnknownVersion`] for envelopes from newer peers.
///
/// JSON form: `{"v":1,"header":{..},"recipient_key_id":"..","signer_key_id":"..",
/// "kem_ciphertext":"<b64url>","nonce":"<b64url>","ciphertext":"<b64url>",
/// "signature":"<b64url>"}`. Byte fields are bounded while deserializing, so even a
/// direct `serde_json::from_slice` never allocates past the field limits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<H> {
    v: u16,
    header: H,
    recipient_key_id: KeyId,
    signer_key_id: KeyId,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_vec::<_, KEM_CIPHERTEXT_BYTES, KEM_CIPHERTEXT_BYTES>"
    )]
    kem_ciphertext: Vec<u8>,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, NONCE_BYTES>"
    )]
    nonce: [u8; NONCE_BYTES],
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_vec::<_, TAG_BYTES, MAX_AEAD_CIPHERTEXT_BYTES>"
    )]
    ciphertext: Vec<u8>,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    signature: [u8; SIGNATURE_BYTES],
}

/// A command sealed to one agent and signed by the control plane's command key.
pub type SealedCommand = Envelope<CommandHeader>;
/// A result sealed to the control plane and signed by the agent's identity key.
pub type SealedResult = Envelope<ResultHeader>;
/// A live output chunk as it travels.
pub type SealedChunk = Envelope<ChunkHeader>;

impl<H: EnvelopeHeader> Envelope<H> {
    /// Parses an envelope from JSON bytes, refusing oversized input, unknown versions
    /// and malformed structure. Verifies nothing cryptographic: pass the result to
    /// [`open_command`] or [`open_result`].
    ///
    /// # Errors
    /// [`ChannelError::TooLarge`], [`ChannelError::UnknownVersion`],
    /// [`ChannelError::Malformed`].
    pub fn from_json(input: &[u8]) -> Result<Self, ChannelError> {
        if input.len() > MAX_ENVELOPE_BYTES {
            return Err(ChannelError::TooLarge);
        }
        check_version(input)?;
        let env: Self =
            serde_json::from_slice(input).map_err(|_| ChannelError::Malformed("envelope"))?;
        env.header
            .check_structure()
            .map_err(ChannelError::Malformed)?;
        Ok(env)
    }

    /// The plaintext header. Not authenticated until the envelope has been opened.
    pub fn header(&self) -> &H {
        &self.header
    }

    /// Protocol version the envelope declares.
    pub fn version(&self) -> u16 {
        self.v
    }

    /// Id of the KEM key the envelope is sealed to (lets a receiver holding several
    /// keys during a rotation pick the right one).
    pub fn recipient_key_id(&self) -> &KeyId {
        &self.recipient_key_id
    }

    /// Id of the key that signed the envelope.
    pub fn signer_key_id(&self) -> &KeyId {
        &self.signer_key_id
    }

    fn header_bytes(&self) -> Vec<u8> {
        self.header.canonical(self.v)
    }

    fn signed_bytes(&self, header_bytes: &[u8]) -> Vec<u8> {
        Canonical::new(H::LABEL)
            .nested(header_bytes)
            .str(self.recipient_key_id.as_str())
            .str(self.signer_key_id.as_str())
            .bytes(&self.kem_ciphertext)
            .bytes(&self.nonce)
            .bytes(&self.ciphertext)
            .finish()
    }

    /// Everything before decryption: version, structure, signature, addressee, key id.
    /// Returns the canonical header bytes (the AAD).
    fn authenticate(
        &self,
        expected_agent_id: &str,
        my_kem: &KemSecretKey,
        signer: &VerifyingKey,
    ) -> Result<Vec<u8>, ChannelError> {
        if self.v != PROTOCOL_VERSION {
            return Err(ChannelError::UnknownVersion(u64::from(self.v)));
        }
        self.header
            .check_structure()
            .map_err(ChannelError::Malformed)?;
        let header_bytes = self.header_bytes();
        signer.verify(&self.signed_bytes(&header_bytes), &self.signature)?;
        if self.signer_key_id != signer.key_id() {
            return Err(ChannelError::BadSignature);
        }
        if self.header.agent_id() != expected_agent_id {
            return Err(ChannelError::WrongAgent);
        }
        if self.recipient_key_id != my_kem.key_id() {
            return Err(ChannelError::WrongRecipientKey);
        }
        Ok(header_bytes)
    }

    fn decrypt(
        &self,
        header_bytes: &[u8],
        my_kem: &KemSecretKey,
        signer: &VerifyingKey,
    ) -> Result<Vec<u8>, ChannelError> {
        let shared = my_kem.decapsulate(&self.kem_ciphertext)?;
        let cipher = aead_cipher(
            H::LABEL,
            self.v,
            &self.header,
            my_kem.public_key(),
            signer,
            &shared,
        );
        cipher
            .decrypt(
                &self.nonce.into(),
                Payload {
                    msg: &self.ciphertext,
                    aad: header_bytes,
                },
            )
            .map_err(|_| ChannelError::DecryptionFailed)
    }
}

impl<H: fmt::Debug> fmt::Debug for Envelope<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("v", &self.v)
            .field("header", &self.header)
            .field("recipient_key_id", &self.recipient_key_id)
            .field("signer_key_id", &self.signer_key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Reads only the `v` field, so that an envelope from a newer peer is reported as
/// [`ChannelError::UnknownVersion`] even if the rest of its shape has changed.
pub(crate) fn check_version(input: &[u8]) -> Result<(), ChannelError> {
    #[derive(Deserialize)]
    struct Probe {
        v: u64,
    }
    let probe: Probe =
        serde_json::from_slice(input).map_err(|_| ChannelError::Malformed("json"))?;
    if probe.v != u64::from(PROTOCOL_VERSION) {
        return Err(ChannelError::UnknownVersion(probe.v));
    }
    Ok(())
}

/// HKDF-SHA256 from the KEM secret to a single-use AEAD key, bound to the transcript.
fn aead_cipher<H: EnvelopeHeader>(
    label: &str,
    version: u16,
    header: &H,
    recipient: &KemPublicKey,
    signer: &VerifyingKey,
    shared: &[u8; 32],
) -> ChaCha20Poly1305 {
    let info = Canonical::new(label)
        .u16(version)
        .str(header.agent_id())
        .bytes(recipient.fingerprint())
        .bytes(signer.fingerprint())
        .str(header.command_id())
        .u64(header.sequence())
        .finish();
    let hk = Hkdf::<Sha256>::new(Some(label.as_bytes()), shared);
    let mut key = chacha20poly1305::Key::default();
    // Invariant: HKDF-SHA256 can expand to 255 * 32 bytes; 32 are asked for, so this
    // never fails.
    hk.expand(&info, key.as_mut_slice())
        .expect("32-byte HKDF-SHA256 output is within the 8160-byte limit");
    let cipher = ChaCha20Poly1305::new(&key);
    key.as_mut_slice().zeroize();
    cipher
}

fn seal<H: EnvelopeHeader, R: CryptoRng + ?Sized>(
    header: H,
    payload: &[u8],
    recipient: &KemPublicKey,
    signer: &SigningKey,
    rng: &mut R,
) -> Result<Envelope<H>, ChannelError> {
    header
        .check_structure()
        .map_err(ChannelError::InvalidField)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ChannelError::PayloadTooLarge);
    }
    let (kem_ciphertext, shared) = recipient.encapsulate(rng);
    let mut nonce = [0u8; NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let mut env = Envelope {
        v: PROTOCOL_VERSION,
        header,
        recipient_key_id: recipient.key_id(),
        signer_key_id: signer.key_id(),
        kem_ciphertext,
        nonce,
        ciphertext: Vec::new(),
        signature: [0u8; SIGNATURE_BYTES],
    };
    let header_bytes = env.header_bytes();
    let cipher = aead_cipher(
        H::LABEL,
        env.v,
        &env.header,
        recipient,
        signer.verifying_key(),
        &shared,
    );
    env.ciphertext = cipher
        .encrypt(
            &env.nonce.into(),
            Payload {
                msg: payload,
                aad: &header_bytes,
            },
        )
        // ChaCha20-Poly1305 only refuses messages above 256 GiB.
        .map_err(|_| ChannelError::PayloadTooLarge)?;
    env.signature = signer.sign(&env.signed_bytes(&header_bytes));
    Ok(env)
}

mod chunk;
mod command;
mod result;
mod signed;

pub use chunk::{open_chunk, seal_chunk, OpenedChunk};
pub use command::{open_command, seal_command, OpenedCommand};
pub use result::{open_result, seal_result, OpenedResult};
pub use signed::{open_signed_command, sign_command, SignedCommand, SIGNED_COMMAND_LABEL};

#[cfg(test)]
mod tests {
    //! Checks that need to re-sign a tampered envelope, i.e. play a signer that is
    //! buggy or compromised: they show that decryption catches what the signature
    //! would otherwise have caught.
    use super::sealed::Sealed as _;
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    const NOW: i64 = 1_760_000_000_000;

    struct Fixture {
        rng: ChaCha20Rng,
        server: SigningKey,
        agent_kem: KemSecretKey,
        header: CommandHeader,
    }

    fn fixture() -> Fixture {
        let mut rng = ChaCha20Rng::from_seed([42; 32]);
        let server = SigningKey::generate_from_rng(&mut rng);
        let agent_kem = KemSecretKey::generate_from_rng(&mut rng);
        let header = CommandHeader {
            agent_id: "agent-1".into(),
            command_id: "cmd-1".into(),
            sequence: 1,
            issued_at: NOW,
            expires_at: NOW + 60_000,
            kind: "service/restart".into(),
            operation: None,
        };
        Fixture {
            rng,
            server,
            agent_kem,
            header,
        }
    }

    fn resign(env: &mut SealedCommand, key: &SigningKey) {
        env.signature = key.sign(&env.signed_bytes(&env.header_bytes()));
    }

    fn open(f: &Fixture, env: &SealedCommand) -> Result<OpenedCommand, ChannelError> {
        open_command(
            env,
            "agent-1",
            &f.agent_kem,
            f.server.verifying_key(),
            &ReplayGuard::new(),
            NOW,
        )
    }

    fn sealed(f: &mut Fixture) -> SealedCommand {
        seal_command(
            &f.header,
            b"payload",
            f.agent_kem.public_key(),
            &f.server,
            &mut f.rng,
        )
        .unwrap()
    }

    #[test]
    fn resigned_tampering_fails_decryption() {
        let mut f = fixture();
        let good = sealed(&mut f);
        assert_eq!(open(&f, &good).unwrap().payload(), b"payload");

        type Tamper = fn(&mut SealedCommand);
        let cases: [(&str, Tamper); 8] = [
            ("ml-kem ciphertext", |e| e.kem_ciphertext[10] ^= 1),
            ("x25519 share", |e| {
                e.kem_ciphertext[KEM_CIPHERTEXT_BYTES - 1] ^= 0x40
            }),
            ("nonce", |e| e.nonce[0] ^= 1),
            ("aead ciphertext", |e| e.ciphertext[0] ^= 1),
            ("aead tag", |e| {
                let last = e.ciphertext.len() - 1;
                e.ciphertext[last] ^= 1;
            }),
            ("kind (aad)", |e| e.header.kind = "service/stop".into()),
            ("command id (kdf)", |e| e.header.command_id = "cmd-2".into()),
            ("expiry (aad)", |e| e.header.expires_at += 1),
        ];
        for (what, tamper) in cases {
            let mut env = good.clone();
            tamper(&mut env);
            assert_eq!(
                open(&f, &env).unwrap_err(),
                ChannelError::BadSignature,
                "{what} without re-signing"
            );
            resign(&mut env, &f.server);
            assert_eq!(
                open(&f, &env).unwrap_err(),
                ChannelError::DecryptionFailed,
                "{what} re-signed"
            );
        }
    }

    #[test]
    fn non_contributory_x25519_share_is_refused() {
        let mut f = fixture();
        let mut env = sealed(&mut f);
        let n = env.kem_ciphertext.len();
        env.kem_ciphertext[n - 32..].fill(0);
        resign(&mut env, &f.server);
        assert_eq!(open(&f, &env).unwrap_err(), ChannelError::DecryptionFailed);
    }

    #[test]
    fn inverted_window_from_a_signer_is_not_yet_valid() {
        let mut f = fixture();
        let mut env = sealed(&mut f);
        env.header.expires_at = NOW + 10;
        env.header.issued_at = NOW + 20;
        resign(&mut env, &f.server);
        assert_eq!(open(&f, &env).unwrap_err(), ChannelError::NotYetValid);
    }

    #[test]
    fn result_label_separates_directions() {
        // Same fields, different label: the canonical bytes never coincide.
        let c = CommandHeader {
            agent_id: "a".into(),
            command_id: "c".into(),
            sequence: 1,
            issued_at: 0,
            expires_at: 1,
            kind: "k".into(),
            operation: None,
        };
        let r = ResultHeader {
            agent_id: "a".into(),
            command_id: "c".into(),
            sequence: 1,
            finished_at: 0,
            status: ResultStatus::Succeeded,
        };
        assert_ne!(c.canonical(1), r.canonical(1));
        assert!(c
            .canonical(1)
            .starts_with(&(COMMAND_LABEL.len() as u64).to_be_bytes()));
    }
}
