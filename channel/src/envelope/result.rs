//! Results: sealed to the control plane's X-Wing key and signed by the agent's
//! identity key; opened on the control plane.
use super::*;

/// Seals a command's output for the control plane and signs it with the agent's
/// identity key.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a malformed id; [`ChannelError::PayloadTooLarge`]
/// above [`MAX_PAYLOAD_BYTES`] (truncate output first).
pub fn seal_result<R: CryptoRng + ?Sized>(
    header: &ResultHeader,
    output: &[u8],
    server_kem_public: &KemPublicKey,
    agent_signing: &SigningKey,
    rng: &mut R,
) -> Result<SealedResult, ChannelError> {
    seal(
        header.clone(),
        output,
        server_kem_public,
        agent_signing,
        rng,
    )
}

/// A result that passed every check. Its `Debug` shows the header and output length.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedResult {
    header: ResultHeader,
    output: Vec<u8>,
}

impl OpenedResult {
    /// The authenticated header.
    pub fn header(&self) -> &ResultHeader {
        &self.header
    }

    /// The decrypted output.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Takes the decrypted output.
    pub fn into_output(self) -> Vec<u8> {
        self.output
    }
}

impl fmt::Debug for OpenedResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedResult")
            .field("header", &self.header)
            .field("output_len", &self.output.len())
            .finish()
    }
}

/// Verifies and decrypts a result on the control plane.
///
/// Results have no expiry (an agent may post them late after an outage) and no
/// replay guard here: the caller must match `command_id` and `sequence` against the
/// command it sent to this agent and record each result once.
///
/// # Errors
/// In check order: [`ChannelError::UnknownVersion`], [`ChannelError::Malformed`],
/// [`ChannelError::BadSignature`], [`ChannelError::WrongAgent`],
/// [`ChannelError::WrongRecipientKey`], [`ChannelError::NotYetValid`] (finished more
/// than [`MAX_CLOCK_SKEW_MS`] in the future), [`ChannelError::DecryptionFailed`].
pub fn open_result(
    sealed: &SealedResult,
    expected_agent_id: &str,
    server_kem_secret: &KemSecretKey,
    agent_verifying: &VerifyingKey,
    now_ms: i64,
) -> Result<OpenedResult, ChannelError> {
    let header_bytes =
        sealed.authenticate(expected_agent_id, server_kem_secret, agent_verifying)?;
    if sealed.header.finished_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(ChannelError::NotYetValid);
    }
    let output = sealed.decrypt(&header_bytes, server_kem_secret, agent_verifying)?;
    Ok(OpenedResult {
        header: sealed.header.clone(),
        output,
    })
}
