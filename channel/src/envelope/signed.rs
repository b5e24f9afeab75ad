//! Signed-only commands, for an agent in classical fallback: signed like a sealed
//! command but not encrypted, and only for the kinds `api::kinds::UNSEALED` lists.
use super::*;

/// Domain-separation label of signed-only commands.
pub const SIGNED_COMMAND_LABEL: &str = "pilothouse/command-signed/v1";

/// A command for an agent that has no KEM key registered yet (the "Classical
/// fallback" state): signed by the control plane's command key like a sealed
/// one, but not encrypted, so only TLS protects its confidentiality. The
/// control plane sends only non-secret commands this way (ping, key
/// registration requests); everything else waits for a KEM key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    v: u16,
    header: CommandHeader,
    signer_key_id: KeyId,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_vec::<_, 0, MAX_PAYLOAD_BYTES>"
    )]
    payload: Vec<u8>,
    #[serde(
        serialize_with = "wire::ser_b64",
        deserialize_with = "wire::de_b64_array::<_, SIGNATURE_BYTES>"
    )]
    signature: [u8; SIGNATURE_BYTES],
}

impl fmt::Debug for SignedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCommand")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl SignedCommand {
    /// The plaintext header. Not authenticated until opened.
    pub fn header(&self) -> &CommandHeader {
        &self.header
    }

    fn signed_bytes(&self) -> Vec<u8> {
        use sealed::Sealed as _;
        Canonical::new(SIGNED_COMMAND_LABEL)
            .nested(&self.header.canonical(self.v))
            .str(self.signer_key_id.as_str())
            .bytes(&self.payload)
            .finish()
    }
}

/// Signs (without encrypting) a command for an agent in classical fallback.
///
/// # Errors
/// As [`seal_command`], without the KEM, and [`ChannelError::MustBeSealed`] for a
/// kind outside [`kinds::UNSEALED`](crate::api::kinds::UNSEALED).
pub fn sign_command(
    header: &CommandHeader,
    payload: &[u8],
    server_signing: &SigningKey,
) -> Result<SignedCommand, ChannelError> {
    use sealed::Sealed as _;
    if header.sequence == 0 {
        return Err(ChannelError::InvalidField("sequence"));
    }
    if header.expires_at <= header.issued_at {
        return Err(ChannelError::InvalidField("expires_at"));
    }
    header
        .check_structure()
        .map_err(ChannelError::InvalidField)?;
    if !crate::api::kinds::may_travel_unsealed(&header.kind) {
        return Err(ChannelError::MustBeSealed);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ChannelError::PayloadTooLarge);
    }
    let mut signed = SignedCommand {
        v: PROTOCOL_VERSION,
        header: header.clone(),
        signer_key_id: server_signing.verifying_key().key_id(),
        payload: payload.to_vec(),
        signature: [0; SIGNATURE_BYTES],
    };
    signed.signature = server_signing.sign(&signed.signed_bytes());
    Ok(signed)
}

/// Verifies and checks a signed-only command, with the same checks and order
/// as [`open_command`] minus decryption.
///
/// # Errors
/// [`ChannelError::UnknownVersion`], [`ChannelError::Malformed`],
/// [`ChannelError::BadSignature`], [`ChannelError::WrongAgent`],
/// [`ChannelError::Expired`], [`ChannelError::NotYetValid`], [`ChannelError::Replay`].
pub fn open_signed_command(
    signed: &SignedCommand,
    my_agent_id: &str,
    server_verifying: &VerifyingKey,
    replay: &ReplayGuard,
    now_ms: i64,
) -> Result<OpenedCommand, ChannelError> {
    use sealed::Sealed as _;
    if signed.v != PROTOCOL_VERSION {
        return Err(ChannelError::UnknownVersion(u64::from(signed.v)));
    }
    signed
        .header
        .check_structure()
        .map_err(ChannelError::Malformed)?;
    server_verifying.verify(&signed.signed_bytes(), &signed.signature)?;
    if signed.signer_key_id != server_verifying.key_id() {
        return Err(ChannelError::BadSignature);
    }
    let h = &signed.header;
    if h.agent_id != my_agent_id {
        return Err(ChannelError::WrongAgent);
    }
    if !crate::api::kinds::may_travel_unsealed(&h.kind) {
        return Err(ChannelError::MustBeSealed);
    }
    if now_ms > h.expires_at {
        return Err(ChannelError::Expired);
    }
    if h.issued_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) || h.expires_at < h.issued_at {
        return Err(ChannelError::NotYetValid);
    }
    replay.check(h)?;
    Ok(OpenedCommand {
        header: h.clone(),
        payload: signed.payload.clone(),
    })
}

#[cfg(test)]
mod signed_tests {
    use super::*;

    fn header(now: i64) -> CommandHeader {
        CommandHeader {
            agent_id: "agt_1".into(),
            command_id: "cmd_1".into(),
            sequence: 1,
            issued_at: now,
            expires_at: now + 60_000,
            kind: "ping".into(),
            operation: None,
        }
    }

    #[test]
    fn only_unsealed_kinds_travel_signed_only() {
        let server = SigningKey::generate();
        let now = 1_700_000_000_000;
        let mut secret = header(now);
        secret.kind = "restart_service".into();
        assert_eq!(
            sign_command(&secret, b"{}", &server).err(),
            Some(ChannelError::MustBeSealed)
        );
        // A signed envelope whose kind was never allowed unsealed (as a
        // compromised or buggy server could produce) is refused on opening,
        // even though its signature verifies.
        let mut forged = sign_command(&header(now), b"{}", &server).unwrap();
        forged.header.kind = "restart_service".into();
        forged.signature = server.sign(&forged.signed_bytes());
        assert_eq!(
            open_signed_command(
                &forged,
                "agt_1",
                server.verifying_key(),
                &ReplayGuard::new(),
                now
            )
            .err(),
            Some(ChannelError::MustBeSealed)
        );
    }

    #[test]
    fn signed_commands_verify_and_refuse_forgery_tampering_and_replay() {
        let server = SigningKey::generate();
        let other = SigningKey::generate();
        let now = 1_800_000_000_000;
        let signed = sign_command(&header(now), b"{}", &server).unwrap();
        let mut guard = ReplayGuard::new();
        let opened =
            open_signed_command(&signed, "agt_1", server.verifying_key(), &guard, now).unwrap();
        assert_eq!(opened.payload(), b"{}");
        guard.commit(&opened);
        assert!(matches!(
            open_signed_command(&signed, "agt_1", server.verifying_key(), &guard, now),
            Err(ChannelError::Replay(_))
        ));
        let fresh = ReplayGuard::new();
        let forged = sign_command(&header(now), b"{}", &other).unwrap();
        assert!(matches!(
            open_signed_command(&forged, "agt_1", server.verifying_key(), &fresh, now),
            Err(ChannelError::BadSignature)
        ));
        let mut tampered = signed.clone();
        tampered.payload = b"{\"x\":1}".to_vec();
        assert!(matches!(
            open_signed_command(&tampered, "agt_1", server.verifying_key(), &fresh, now),
            Err(ChannelError::BadSignature)
        ));
        assert!(matches!(
            open_signed_command(&signed, "agt_2", server.verifying_key(), &fresh, now),
            Err(ChannelError::WrongAgent)
        ));
        assert!(matches!(
            open_signed_command(
                &signed,
                "agt_1",
                server.verifying_key(),
                &fresh,
                now + 61_000
            ),
            Err(ChannelError::Expired)
        ));
        assert!(matches!(
            open_signed_command(
                &signed,
                "agt_1",
                server.verifying_key(),
                &fresh,
                now - 31_000
            ),
            Err(ChannelError::NotYetValid)
        ));
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedCommand = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
    }
}
