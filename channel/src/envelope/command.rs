//! Commands: sealed to one agent's X-Wing key and signed by the control plane's
//! command key; opened on the agent.
use super::*;

/// Seals `payload` for one agent and signs it with the control plane's command key.
///
/// # Errors
/// [`ChannelError::InvalidField`] for a malformed id or kind, a `sequence` of 0, or
/// `expires_at <= issued_at`; [`ChannelError::PayloadTooLarge`] above
/// [`MAX_PAYLOAD_BYTES`].
pub fn seal_command<R: CryptoRng + ?Sized>(
    header: &CommandHeader,
    payload: &[u8],
    recipient: &KemPublicKey,
    server_signing: &SigningKey,
    rng: &mut R,
) -> Result<SealedCommand, ChannelError> {
    if header.sequence == 0 {
        return Err(ChannelError::InvalidField("sequence"));
    }
    if header.expires_at <= header.issued_at {
        return Err(ChannelError::InvalidField("expires_at"));
    }
    seal(header.clone(), payload, recipient, server_signing, rng)
}

/// A command that passed every check. Only [`open_command`] makes one, so holding it
/// proves the checks ran. Its `Debug` shows the header and the payload length only.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedCommand {
    pub(super) header: CommandHeader,
    pub(super) payload: Vec<u8>,
}

impl OpenedCommand {
    /// Builds one without the checks, for unit tests of the replay guard.
    #[cfg(test)]
    pub(crate) fn unchecked_for_test(header: CommandHeader) -> Self {
        Self {
            header,
            payload: Vec::new(),
        }
    }

    /// The authenticated header.
    pub fn header(&self) -> &CommandHeader {
        &self.header
    }

    /// The decrypted payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the decrypted payload.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

impl fmt::Debug for OpenedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedCommand")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Verifies, checks and decrypts a command on the agent.
///
/// `replay` is only read; call [`ReplayGuard::commit`] after executing the command
/// (and persist the guard) so that a redelivery is refused.
///
/// # Errors
/// In check order: [`ChannelError::UnknownVersion`], [`ChannelError::Malformed`],
/// [`ChannelError::BadSignature`], [`ChannelError::WrongAgent`],
/// [`ChannelError::WrongRecipientKey`], [`ChannelError::Expired`],
/// [`ChannelError::NotYetValid`], [`ChannelError::Replay`],
/// [`ChannelError::DecryptionFailed`].
pub fn open_command(
    sealed: &SealedCommand,
    my_agent_id: &str,
    my_kem_secret: &KemSecretKey,
    server_verifying: &VerifyingKey,
    replay: &ReplayGuard,
    now_ms: i64,
) -> Result<OpenedCommand, ChannelError> {
    let header_bytes = sealed.authenticate(my_agent_id, my_kem_secret, server_verifying)?;
    let h = &sealed.header;
    if now_ms > h.expires_at {
        return Err(ChannelError::Expired);
    }
    if h.issued_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) || h.expires_at < h.issued_at {
        return Err(ChannelError::NotYetValid);
    }
    replay.check(h)?;
    let payload = sealed.decrypt(&header_bytes, my_kem_secret, server_verifying)?;
    Ok(OpenedCommand {
        header: h.clone(),
        payload,
    })
}
