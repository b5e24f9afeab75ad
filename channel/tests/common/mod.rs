//! Shared fixture: deterministic keys for both ends of the channel.
// Each test crate uses a different part of the fixture.
#![allow(dead_code)]
// Test code: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use chacha20::ChaCha20Rng;
use channel::{seal_command, CommandHeader, KemSecretKey, ReplayGuard, SealedCommand, SigningKey};
use rand_core::SeedableRng;

pub const NOW: i64 = 1_760_000_000_000;
pub const AGENT: &str = "agent-7f3a";

pub struct Fixture {
    pub rng: ChaCha20Rng,
    pub server_signing: SigningKey,
    pub server_kem: KemSecretKey,
    pub agent_signing: SigningKey,
    pub agent_kem: KemSecretKey,
    pub guard: ReplayGuard,
}

impl Fixture {
    pub fn new() -> Self {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        Self {
            server_signing: SigningKey::generate_from_rng(&mut rng),
            server_kem: KemSecretKey::generate_from_rng(&mut rng),
            agent_signing: SigningKey::generate_from_rng(&mut rng),
            agent_kem: KemSecretKey::generate_from_rng(&mut rng),
            guard: ReplayGuard::new(),
            rng,
        }
    }

    pub fn header(&self, sequence: u64) -> CommandHeader {
        CommandHeader {
            agent_id: AGENT.into(),
            command_id: format!("cmd-{sequence:04}"),
            sequence,
            issued_at: NOW,
            expires_at: NOW + 5 * 60_000,
            kind: "service/restart".into(),
            operation: None,
        }
    }

    pub fn seal(&mut self, header: &CommandHeader, payload: &[u8]) -> SealedCommand {
        seal_command(
            header,
            payload,
            self.agent_kem.public_key(),
            &self.server_signing,
            &mut self.rng,
        )
        .unwrap()
    }

    pub fn open_at(
        &self,
        sealed: &SealedCommand,
        now: i64,
    ) -> Result<channel::OpenedCommand, channel::ChannelError> {
        channel::open_command(
            sealed,
            AGENT,
            &self.agent_kem,
            self.server_signing.verifying_key(),
            &self.guard,
            now,
        )
    }

    pub fn open(
        &self,
        sealed: &SealedCommand,
    ) -> Result<channel::OpenedCommand, channel::ChannelError> {
        self.open_at(sealed, NOW)
    }
}

/// Round-trips an envelope through JSON with `edit` applied to the JSON value, as an
/// attacker on the wire would.
pub fn edit_json<T, F>(value: &T, edit: F) -> Vec<u8>
where
    T: serde::Serialize,
    F: FnOnce(&mut serde_json::Value),
{
    let mut v = serde_json::to_value(value).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Flips one bit in a base64url field of a JSON object.
pub fn flip_b64_field(v: &mut serde_json::Value, field: &str, byte: usize) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let s = v[field].as_str().unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
    bytes[byte] ^= 0x01;
    v[field] = serde_json::Value::String(URL_SAFE_NO_PAD.encode(bytes));
}
