//! `pilothouse-agent register`: enrolment with a one-time token.
//!
//! The agent generates its keys locally (Ed25519 identity, X-Wing unless
//! `--no-pqc`, ECDSA P-256 TLS key and its CSR), sends only the public halves to
//! `POST /agent/v1/enrol` over a TLS connection authenticated by the token's CA pin,
//! checks the answer, and stores everything in the state directory in one commit.
//!
//! Past this module an attacker on the network cannot enrol the agent with a
//! control plane of their own (the pin), learn the token (it travels only inside
//! that TLS connection) or any private key (none is sent). An existing registration
//! is replaced only with `--force`.

use crate::gateway::{self, GatewayError};
use crate::pki;
use crate::state::{self, AgentRecord, StateDir, StateError};
use crate::token::{CaPin, RegistrationToken, TokenError};
use crate::AgentError;
use channel::api::{EnrolRequest, EnrolResponse};
use channel::{KemSecretKey, ReplayGuard, SigningKey};
use std::path::PathBuf;

/// What `register` was asked to do.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub server: String,
    pub token: String,
    pub state_dir: PathBuf,
    pub hostname: Option<String>,
    pub no_pqc: bool,
    pub force: bool,
}

/// The outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub agent_id: String,
    pub server_url: String,
    pub post_quantum: bool,
}

/// Ids the channel accepts: `[A-Za-z0-9._:-]`, 1 to 128 bytes.
fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= channel::envelope::MAX_ID_BYTES
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty() && h.len() <= 253 && h.chars().all(|c| c.is_ascii_graphic())
}

/// The kernel's host name.
pub fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| valid_hostname(s))
        .unwrap_or_else(|| "localhost".into())
}

fn explain(e: GatewayError) -> AgentError {
    let hint = match &e {
        GatewayError::Refused { status: 409, reason } => format!(
            "the registration token was already used or has expired ({reason}); create a new one in the dashboard"
        ),
        GatewayError::Refused { status: 401, reason } => format!(
            "the control plane does not know this registration token ({reason}); check that it was copied whole and that --server names the right control plane"
        ),
        GatewayError::Refused { status: 400, reason } => {
            format!("the control plane refused the registration request ({reason})")
        }
        _ => return AgentError::Gateway(e),
    };
    AgentError::Failed(hint)
}

/// Registers the agent. See the module documentation.
pub async fn register(opts: RegisterOptions) -> Result<Registered, AgentError> {
    let token: RegistrationToken = opts
        .token
        .parse()
        .map_err(|e: TokenError| AgentError::Usage(e.to_string()))?;
    let server_url = gateway::normalize_base_url(&opts.server).map_err(AgentError::Usage)?;
    let hostname = match opts.hostname {
        Some(h) if valid_hostname(&h) => h,
        Some(h) => {
            return Err(AgentError::Usage(format!(
                "`{h}` is not a usable host name (1 to 253 printable characters, no spaces)"
            )))
        }
        None => local_hostname(),
    };

    let dir = StateDir::new(&opts.state_dir);
    dir.create()?;
    dir.check_permissions()?;
    let _lock = dir.lock()?;
    dir.recover()?;
    match dir.load_record() {
        Ok(record) if !opts.force => {
            return Err(StateError::AlreadyRegistered {
                path: dir.file(state::AGENT_FILE),
                agent_id: record.agent_id,
            }
            .into())
        }
        Ok(_) | Err(StateError::NotRegistered { .. }) => {}
        Err(StateError::Corrupt { .. }) if opts.force => {}
        Err(e) => return Err(e.into()),
    }

    let identity = SigningKey::generate();
    let kem = (!opts.no_pqc).then(KemSecretKey::generate);
    let tls = pki::new_tls_key(&hostname)?;
    let request = EnrolRequest {
        token: token.expose().to_string(),
        csr_pem: tls.csr_pem.clone(),
        identity_key: identity.verifying_key().clone(),
        kem_key: kem.as_ref().map(|k| k.public_key().clone()),
        hostname: hostname.clone(),
        agent_version: crate::VERSION.to_string(),
    };
    let (tls_config, mismatch) = pki::enrol_config(token.pin())?;
    let answer = gateway::enrol(&server_url, tls_config, &mismatch, &request)
        .await
        .map_err(explain)?;
    let cert = check_answer(&answer, token.pin(), &tls.spki_der)?;

    let now = crate::now_ms();
    let record = AgentRecord::new(
        answer.agent_id.clone(),
        server_url.clone(),
        token.pin(),
        answer.command_verifying_key.clone(),
        answer.control_kem_key.clone(),
        cert.not_after_ms,
        now,
        hostname,
    );
    let record_json = serde_json::to_vec(&record)
        .map_err(|e| AgentError::Failed(format!("cannot encode agent.json: {e}")))?;
    let replay_json = serde_json::to_vec(&ReplayGuard::new())
        .map_err(|e| AgentError::Failed(format!("cannot encode replay.json: {e}")))?;
    let identity_hex = state::secret_hex(identity.to_bytes().as_slice());
    let kem_hex = kem
        .as_ref()
        .map(|k| state::secret_hex(k.to_bytes().as_slice()));
    let mut writes: Vec<(&str, &[u8])> = vec![
        (state::IDENTITY_KEY, &identity_hex),
        (state::TLS_KEY, tls.key_pem.as_bytes()),
        (state::TLS_CERT, answer.client_cert_pem.as_bytes()),
        (state::CA_CERT, answer.ca_cert_pem.as_bytes()),
        (state::REPLAY, &replay_json),
        (state::AGENT_FILE, &record_json),
    ];
    let mut removes = vec![
        state::PENDING_RESULTS,
        state::METRICS_BACKLOG,
        state::STATUS,
    ];
    match &kem_hex {
        Some(k) => writes.push((state::KEM_KEY, k)),
        None => removes.push(state::KEM_KEY),
    }
    dir.commit(&writes, &removes)?;
    Ok(Registered {
        agent_id: answer.agent_id,
        server_url,
        post_quantum: kem.is_some(),
    })
}

/// Checks the enrolment answer: a usable agent id, the CA the pin names, and a
/// client certificate for the agent's own key issued by that CA.
fn check_answer(
    answer: &EnrolResponse,
    pin: CaPin,
    spki_der: &[u8],
) -> Result<crate::x509::CertInfo, AgentError> {
    if !valid_agent_id(&answer.agent_id) {
        return Err(AgentError::Failed(
            "the control plane answered with an unusable agent id".into(),
        ));
    }
    let ca = pki::first_cert_der(&answer.ca_cert_pem).ok_or_else(|| {
        AgentError::Failed("the control plane sent a CA certificate that is not PEM".into())
    })?;
    if CaPin::of_der(&ca) != pin {
        return Err(GatewayError::PinMismatch.into());
    }
    Ok(pki::check_client_cert(
        &answer.ca_cert_pem,
        &answer.client_cert_pem,
        spki_der,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_and_hostnames() {
        assert!(valid_agent_id("agt_01J9Z-x.y:z"));
        assert!(!valid_agent_id(""));
        assert!(!valid_agent_id("a b"));
        assert!(!valid_agent_id(&"a".repeat(129)));
        assert!(valid_hostname("web-1.example.com"));
        assert!(!valid_hostname("web 1"));
        assert!(!valid_hostname(""));
        assert!(valid_hostname(&local_hostname()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_tokens_and_urls_are_usage_errors() {
        let t = tempfile::tempdir().unwrap();
        let opts = RegisterOptions {
            server: "https://cp.example:8443".into(),
            token: "pht1_nope".into(),
            state_dir: t.path().join("s"),
            hostname: None,
            no_pqc: false,
            force: false,
        };
        let err = register(opts.clone()).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = register(RegisterOptions {
            server: "http://cp.example".into(),
            token: format!("pht1_{}_{}", "a".repeat(32), "b".repeat(64)),
            ..opts
        })
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("https://"), "{err}");
        // Nothing was created for a refused command line.
        assert!(!t.path().join("s").exists());
    }
}
