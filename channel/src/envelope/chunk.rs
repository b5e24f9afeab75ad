//! Live output chunks: part of a running command's output, sealed to the
//! control plane's X-Wing key and signed by the agent's identity key like a
//! result, under a label of their own (a chunk can never pass for a result).
use super::*;

/// Seals part of a running command's output for the control plane.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a malformed id; [`ChannelError::PayloadTooLarge`]
/// above [`MAX_PAYLOAD_BYTES`].
pub fn seal_chunk<R: CryptoRng + ?Sized>(
    header: &ChunkHeader,
    output: &[u8],
    server_kem_public: &KemPublicKey,
    agent_signing: &SigningKey,
    rng: &mut R,
) -> Result<SealedChunk, ChannelError> {
    seal(
        header.clone(),
        output,
        server_kem_public,
        agent_signing,
        rng,
    )
}

/// A chunk that passed every check. Its `Debug` shows the header and output length.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedChunk {
    header: ChunkHeader,
    output: Vec<u8>,
}

impl OpenedChunk {
    pub fn header(&self) -> &ChunkHeader {
        &self.header
    }

    pub fn output(&self) -> &[u8] {
        &self.output
    }
}

impl fmt::Debug for OpenedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedChunk")
            .field("header", &self.header)
            .field("output_len", &self.output.len())
            .finish()
    }
}

/// Verifies and decrypts a chunk on the control plane. As for results, the
/// caller matches `command_id` and `sequence` against the command it sent
/// this agent, and keeps each `index` once.
///
/// # Errors
/// As [`open_result`](super::open_result), with `at` in place of `finished_at`.
pub fn open_chunk(
    sealed: &SealedChunk,
    expected_agent_id: &str,
    server_kem_secret: &KemSecretKey,
    agent_verifying: &VerifyingKey,
    now_ms: i64,
) -> Result<OpenedChunk, ChannelError> {
    let header_bytes =
        sealed.authenticate(expected_agent_id, server_kem_secret, agent_verifying)?;
    if sealed.header.at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(ChannelError::NotYetValid);
    }
    let output = sealed.decrypt(&header_bytes, server_kem_secret, agent_verifying)?;
    Ok(OpenedChunk {
        header: sealed.header.clone(),
        output,
    })
}
