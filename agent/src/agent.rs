//! The command side of a running agent: open what the control plane delivers,
//! check it against the local policy, execute it once, seal and sign the result,
//! and deliver the result until the control plane accepts it. Also key rotation,
//! post-quantum activation and certificate renewal, which change the agent's keys,
//! and `update_agent` ([`crate::update`]): once a verified release is staged and
//! the result delivered, [`Agent::restart_due`] tells the loop to end the process.
//! A launched version still on trial is marked stable after a successful round
//! once it has run long enough, and the capabilities declaration carries the
//! running version and the pending self-update report.
//!
//! Invariants:
//! - A command runs only after [`channel::open_command`] (or, while the agent has no
//!   KEM key, [`channel::open_signed_command`]) accepted it: signature under the
//!   control plane's command key, addressed to this agent, inside its validity
//!   window, not replayed. Failures are logged and never answered.
//! - Once the agent holds a KEM key, signed-only (unencrypted) commands are refused:
//!   a downgrade to classical delivery is not possible from the network.
//! - The replay guard and the sealed result are committed to disk together before
//!   the result is posted; a redelivered command is never run twice, its stored
//!   result is posted again instead.
//! - Key changes are written through the state directory's commit journal, only
//!   after the control plane accepted them, and the mTLS client is rebuilt on the
//!   new certificate before the next request.
//!
//! Past this module an attacker who controls the network or the delivery queue can
//! delay, drop or redeliver commands (redeliveries change nothing), but cannot make
//! the agent run a command the control plane did not sign for it, a kind its local
//! allowlist forbids, or an old command again. Nothing from a command (payload or
//! output) is logged.

use crate::config::Config;
use crate::gateway::Gateway;
use crate::pki::{self, TlsIdentity};
use crate::state::{self, AgentRecord, Keys, StateDir, StateError, StatusFile};
use crate::update::{self, UpdateError};
use crate::x509::{format_utc, CertInfo};
use crate::AgentError;
use channel::api::{kinds, CapabilitiesRequest, DeliveredCommand, KeysRequest, KeysResponse};
use channel::{
    ChannelError, KemSecretKey, KeyRegistration, OpenedCommand, ReplayGuard, ReplayKind,
    ResultHeader, ResultStatus, SealedResult, SigningKey,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most results kept while the control plane does not accept them.
pub const MAX_PENDING_RESULTS: usize = 64;
/// Results the control plane refused, kept on disk for the operator.
pub const MAX_REJECTED_RESULTS: usize = 16;
/// How many ignored command ids are remembered to log each only once.
const IGNORED_MEMORY: usize = 64;
/// Attempts of a key registration when the control plane is briefly unreachable.
const KEYS_ATTEMPTS: u32 = 4;
/// Wait after a failed certificate renewal before trying again.
const RENEW_RETRY_MS: i64 = 5 * 60 * 1000;
/// How often a running task's output (or a keep-alive) goes to the control plane.
const OUTPUT_EVERY: Duration = Duration::from_secs(2);
/// Output sent at once when this much piled up.
const OUTPUT_CHUNK_BYTES: usize = 16 * 1024;
/// How often `status.json` is rewritten at most.
const STATUS_EVERY_MS: i64 = 60 * 1000;

/// A sealed result waiting for the control plane to accept it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingResult {
    pub command_id: String,
    pub result: SealedResult,
}

/// What [`Agent::handle`] did with one delivered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Executed (or refused by the local policy); the result is stored for delivery.
    Executed {
        command_id: String,
        status: ResultStatus,
    },
    /// Executed before: its stored result is queued for delivery again.
    Resent { command_id: String },
    /// Not answered: it failed to open or is a stale replay (logged at warn).
    Ignored { reason: String },
}

/// The sum of one [`Agent::poll_once`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub delivered: usize,
    pub executed: usize,
    pub resent: usize,
    pub ignored: usize,
    pub results_sent: usize,
}

impl PollOutcome {
    /// True when the answer carried commands but none led anywhere: polling again
    /// at once would get the same answer, so the loop waits first.
    pub fn only_ignored(&self) -> bool {
        self.delivered > 0 && self.executed == 0 && self.resent == 0
    }
}

/// A command's header text, cut to a loggable size before it is authenticated.
fn loggable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/'))
        .take(channel::envelope::MAX_ID_BYTES)
        .collect()
}

/// Why a delivered command was not opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("sealed command but this agent has no KEM key (was a key registration lost?)")]
    NoKemKey,
    #[error("signed-only command refused: this agent has a KEM key, commands must be sealed")]
    Downgrade,
}

/// The running agent's command side.
pub struct Agent {
    dir: StateDir,
    record: AgentRecord,
    keys: Keys,
    cert: CertInfo,
    replay: ReplayGuard,
    pending: Vec<PendingResult>,
    config: Config,
    gateway: Gateway,
    executions: u64,
    ignored: VecDeque<String>,
    renew_retry_after_ms: i64,
    capabilities_sent: bool,
    binary: update::Binary,
    /// Set while a launched version is not yet stable.
    trial: Option<update::Trial>,
    /// An update is staged: end the process once its result is delivered.
    restart_requested: bool,
}

impl Agent {
    /// Loads a registered agent from `dir` (checked, locked and recovered by the
    /// caller) and builds its mTLS client. The running binary is described by
    /// the launcher's environment ([`update::Binary::from_env`]).
    pub fn load(dir: StateDir, config: Config) -> Result<Self, AgentError> {
        Self::load_as(dir, config, update::Binary::from_env())
    }

    /// [`load`](Self::load) for a given running binary.
    pub fn load_as(
        dir: StateDir,
        config: Config,
        binary: update::Binary,
    ) -> Result<Self, AgentError> {
        let record = dir.load_record()?;
        let keys = dir.load_keys(&record)?;
        let cert = CertInfo::from_pem(&keys.tls_cert_pem).map_err(|r| StateError::Corrupt {
            path: dir.file(state::TLS_CERT),
            reason: r.into(),
        })?;
        let replay: ReplayGuard =
            dir.read_json_opt(state::REPLAY)?
                .ok_or_else(|| StateError::Corrupt {
                    path: dir.file(state::REPLAY),
                    reason: "the file is missing (without it old commands could run again)".into(),
                })?;
        let pending: Vec<PendingResult> = dir
            .read_json_opt(state::PENDING_RESULTS)?
            .unwrap_or_default();
        let status_saved: StatusFile = dir.read_json_opt(state::STATUS)?.unwrap_or_default();
        let tls = pki::mtls_config(
            &keys.ca_pem,
            &TlsIdentity {
                cert_pem: keys.tls_cert_pem.clone(),
                key_pem: keys.tls_key_pem.clone(),
            },
        )?;
        let gateway = Gateway::new(&record.server_url, tls)?;
        gateway.set_saved_contact(status_saved.last_contact);
        let trial = update::Trial::begin(
            &dir,
            &binary,
            Duration::from_secs(config.update_stable_after_secs),
            Instant::now(),
        );
        let mut agent = Self {
            dir,
            record,
            keys,
            cert,
            replay,
            pending,
            config,
            gateway,
            executions: 0,
            ignored: VecDeque::new(),
            renew_retry_after_ms: 0,
            capabilities_sent: false,
            binary,
            trial,
            restart_requested: false,
        };
        agent.recover_in_flight()?;
        Ok(agent)
    }

    pub fn record(&self) -> &AgentRecord {
        &self.record
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    pub fn has_kem_key(&self) -> bool {
        self.keys.kem.is_some()
    }

    /// The current identity key's public half.
    pub fn identity(&self) -> &channel::VerifyingKey {
        self.keys.identity.verifying_key()
    }

    pub fn kem_key_id(&self) -> Option<channel::KeyId> {
        self.keys.kem.as_ref().map(KemSecretKey::key_id)
    }

    pub fn certificate(&self) -> &CertInfo {
        &self.cert
    }

    /// The binary this process runs, and the version it reports.
    pub fn binary(&self) -> &update::Binary {
        &self.binary
    }

    /// Whether this process runs a launched version not yet marked stable.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// An update is staged and its result delivered (or refused by the control
    /// plane): the process should end so that systemd starts it again and the
    /// launcher starts the new binary.
    pub fn restart_due(&self) -> bool {
        self.restart_requested && self.pending.is_empty()
    }

    /// How many commands this process has executed (refusals included).
    pub fn executions(&self) -> u64 {
        self.executions
    }

    /// Results not yet accepted by the control plane, oldest first.
    pub fn pending(&self) -> &[PendingResult] {
        &self.pending
    }

    /// One round: deliver stored results, long-poll, then handle the commands in
    /// sequence order, delivering each result before the next command runs (so
    /// that no result is left signed by a key a later `rotate_keys` replaced). If a
    /// delivery fails the round ends there; the remaining commands come again.
    /// Once an update is staged no further command runs here (the new version
    /// gets them), and no poll is made once [`restart_due`](Self::restart_due).
    /// A successful round may mark a version on trial stable.
    pub async fn poll_once(&mut self) -> Result<PollOutcome, AgentError> {
        if !self.capabilities_sent {
            self.send_capabilities().await?;
        }
        let mut outcome = PollOutcome {
            results_sent: self.report_pending().await?,
            ..PollOutcome::default()
        };
        if self.restart_due() {
            return Ok(outcome);
        }
        let mut answer = self.gateway.poll(self.config.poll_wait_secs).await?;
        answer.commands.sort_by_key(|c| c.header().sequence);
        outcome.delivered = answer.commands.len();
        for delivered in &answer.commands {
            match self.handle(delivered, crate::now_ms()).await? {
                Handled::Executed { .. } => outcome.executed += 1,
                Handled::Resent { .. } => outcome.resent += 1,
                Handled::Ignored { .. } => outcome.ignored += 1,
            }
            outcome.results_sent += self.report_pending().await?;
            if self.restart_requested {
                break;
            }
        }
        self.settle_trial(Instant::now())?;
        self.save_status_if_due()?;
        Ok(outcome)
    }

    /// Declares what this agent's config lets it run, the version it runs and
    /// the pending self-update report, if any (once per start and after a
    /// version was marked stable; the control plane stores it when it changed).
    /// The report is deleted once the control plane accepted it; one it refuses
    /// outright is dropped, so that it cannot block the declaration.
    pub async fn send_capabilities(&mut self) -> Result<(), AgentError> {
        let mut request = CapabilitiesRequest {
            capabilities: self.config.operations.capabilities(self.config.production),
            agent_version: Some(self.binary.version.clone()),
            update: update::pending_report(&self.dir),
        };
        let had_report = request.update.is_some();
        match self.gateway.post_capabilities(&request).await {
            Ok(()) => {}
            Err(e) if e.is_rejection() && had_report => {
                tracing::error!(error = %e, "the control plane refused the self-update report: dropping it");
                request.update = None;
                self.gateway.post_capabilities(&request).await?;
            }
            Err(e) => return Err(e.into()),
        }
        if had_report {
            update::clear_report(&self.dir)?;
        }
        self.capabilities_sent = true;
        Ok(())
    }

    /// Marks a version on trial stable once it has run long enough; called after
    /// a successful round. Its report goes out with the next declaration (at the
    /// start of the next round, and at every start until accepted).
    pub fn settle_trial(&mut self, now: Instant) -> Result<bool, AgentError> {
        let due = self.trial.is_some_and(|t| t.due(now));
        // A staged update removed the stable mark for the *next* binary.
        if !due || self.restart_requested {
            return Ok(false);
        }
        update::mark_stable(&self.dir, &self.binary)?;
        self.trial = None;
        self.capabilities_sent = false;
        tracing::info!(version = %self.binary.version, "the updated agent ran healthy: marked stable");
        Ok(true)
    }

    fn open(&self, delivered: &DeliveredCommand, now_ms: i64) -> Result<OpenedCommand, OpenError> {
        let vk = &self.record.command_verifying_key;
        let id = &self.record.agent_id;
        match (delivered, &self.keys.kem) {
            (DeliveredCommand::Sealed { envelope }, Some(kem)) => Ok(channel::open_command(
                envelope,
                id,
                kem,
                vk,
                &self.replay,
                now_ms,
            )?),
            (DeliveredCommand::Sealed { .. }, None) => Err(OpenError::NoKemKey),
            (DeliveredCommand::Signed { envelope }, None) => Ok(channel::open_signed_command(
                envelope,
                id,
                vk,
                &self.replay,
                now_ms,
            )?),
            (DeliveredCommand::Signed { .. }, Some(_)) => Err(OpenError::Downgrade),
        }
    }

    fn ignore(&mut self, command_id: &str, reason: String) -> Handled {
        let id = loggable(command_id);
        if self.ignored.contains(&id) {
            tracing::debug!(command_id = %id, %reason, "command ignored again");
        } else {
            tracing::warn!(command_id = %id, %reason, "command not executed");
            self.ignored.push_back(id);
            if self.ignored.len() > IGNORED_MEMORY {
                self.ignored.pop_front();
            }
        }
        Handled::Ignored { reason }
    }

    /// Opens one delivered command and executes it, or recognises it as already
    /// executed. The result is sealed and stored, not yet posted
    /// (see [`report_pending`](Self::report_pending)).
    pub async fn handle(
        &mut self,
        delivered: &DeliveredCommand,
        now_ms: i64,
    ) -> Result<Handled, AgentError> {
        let claimed_id = delivered.header().command_id.clone();
        let opened = match self.open(delivered, now_ms) {
            Ok(c) => c,
            Err(OpenError::Channel(ChannelError::Replay(ReplayKind::AlreadyExecuted))) => {
                return Ok(if self.pending.iter().any(|p| p.command_id == claimed_id) {
                    tracing::info!(command_id = %loggable(&claimed_id), "redelivered command: resending its result");
                    Handled::Resent {
                        command_id: claimed_id,
                    }
                } else {
                    self.ignore(
                        &claimed_id,
                        "already executed and its result was accepted".into(),
                    )
                });
            }
            Err(e) => return Ok(self.ignore(&claimed_id, e.to_string())),
        };
        let header = opened.header().clone();
        let (status, output) = if self.config.allows(&header.kind)
            && crate::ops::is_operation(&header.kind)
        {
            self.run_operation(&opened).await?
        } else if self.config.allows(&header.kind) {
            tracing::info!(command_id = %header.command_id, kind = %header.kind, sequence = header.sequence, "executing command");
            self.execute(&opened, now_ms).await
        } else {
            tracing::warn!(command_id = %header.command_id, kind = %header.kind, "command kind refused by the local allowlist");
            (
                ResultStatus::Refused,
                format!(
                    "command kind `{}` is not allowed by this agent's local policy",
                    header.kind
                ),
            )
        };
        self.executions += 1;
        self.replay.commit(&opened);
        let result = self.seal(&header, status, output.as_bytes())?;
        self.pending.push(PendingResult {
            command_id: header.command_id.clone(),
            result,
        });
        while self.pending.len() > MAX_PENDING_RESULTS {
            let dropped = self.pending.remove(0);
            tracing::warn!(command_id = %dropped.command_id, "too many undelivered results: dropping the oldest");
        }
        let replay = json(&self.replay)?;
        let pending = json(&self.pending)?;
        self.dir.commit(
            &[(state::REPLAY, &replay), (state::PENDING_RESULTS, &pending)],
            &[state::IN_FLIGHT],
        )?;
        tracing::info!(command_id = %header.command_id, ?status, "command finished");
        Ok(Handled::Executed {
            command_id: header.command_id,
            status,
        })
    }

    fn seal(
        &self,
        header: &channel::CommandHeader,
        status: ResultStatus,
        output: &[u8],
    ) -> Result<SealedResult, AgentError> {
        let max = channel::envelope::MAX_PAYLOAD_BYTES;
        let output = &output[..output.len().min(max)];
        let result_header = ResultHeader {
            agent_id: self.record.agent_id.clone(),
            command_id: header.command_id.clone(),
            sequence: header.sequence,
            finished_at: crate::now_ms(),
            status,
        };
        Ok(channel::seal_result(
            &result_header,
            output,
            &self.record.control_kem_key,
            &self.keys.identity,
            &mut channel::os_rng(),
        )?)
    }

    /// Runs a catalogued operation after the local policy admitted it
    /// ([`crate::ops::admit`]; a refusal is answered as refused). Before the task
    /// starts, the command is recorded as executed together with the in-flight
    /// marker, so an agent that stops mid-task reports it failed at its next
    /// start ([`Agent::recover_in_flight`]) and never runs it twice.
    async fn run_operation(
        &mut self,
        opened: &OpenedCommand,
    ) -> Result<(ResultStatus, String), AgentError> {
        let header = opened.header();
        let crate::ops::Admitted { op, secrets } = match crate::ops::admit(
            &self.record.agent_id,
            self.config.production,
            &self.config.operations,
            header,
            opened.payload(),
        ) {
            Ok(admitted) => admitted,
            Err(why) => {
                tracing::warn!(command_id = %header.command_id, kind = %header.kind, reason = %why, "operation refused by the local policy");
                return Ok((
                    ResultStatus::Refused,
                    format!("Refused by this agent: {why}."),
                ));
            }
        };
        self.replay.commit(opened);
        let replay = json(&self.replay)?;
        let in_flight = json(header)?;
        self.dir.commit(
            &[(state::REPLAY, &replay), (state::IN_FLIGHT, &in_flight)],
            &[],
        )?;
        tracing::info!(command_id = %header.command_id, kind = %header.kind, sequence = header.sequence, "running operation");
        let (cancel, token) = crate::sandbox::cancellation();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let this = &*self;
        let runner = async move {
            let mut sink = move |bytes: &[u8]| {
                // The receiver lives until the task ends; a send cannot fail before.
                let _ = tx.send(bytes.to_vec());
            };
            crate::ops::run(&this.config.operations, &op, secrets, token, &mut sink).await
        };
        let (ran, ()) = tokio::join!(runner, this.stream_output(header, &mut rx, &cancel));
        let status = if ran.succeeded {
            ResultStatus::Succeeded
        } else if ran.timed_out {
            ResultStatus::TimedOut
        } else {
            ResultStatus::Failed
        };
        Ok((status, String::from_utf8_lossy(&ran.output).into_owned()))
    }

    /// Sends a running task's output to the control plane in sealed, signed
    /// chunks: whatever arrived every [`OUTPUT_EVERY`] (an empty keep-alive
    /// when nothing did), sooner once [`OUTPUT_CHUNK_BYTES`] piled up, the rest
    /// when the task ends. Each answer says whether the command was cancelled;
    /// then the task is killed. A chunk that cannot be delivered is dropped:
    /// the final result carries the whole output.
    async fn stream_output(
        &self,
        header: &channel::CommandHeader,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        cancel: &crate::sandbox::CancelHandle,
    ) {
        let mut buf = Vec::new();
        let mut index = 0u32;
        let mut next = tokio::time::Instant::now() + OUTPUT_EVERY;
        loop {
            let done = tokio::select! {
                got = rx.recv() => match got {
                    Some(bytes) => {
                        buf.extend_from_slice(&bytes);
                        if buf.len() < OUTPUT_CHUNK_BYTES {
                            continue;
                        }
                        false
                    }
                    None => true,
                },
                () = tokio::time::sleep_until(next) => false,
            };
            if done && buf.is_empty() {
                return;
            }
            next = tokio::time::Instant::now() + OUTPUT_EVERY;
            let chunk = channel::ChunkHeader {
                agent_id: self.record.agent_id.clone(),
                command_id: header.command_id.clone(),
                sequence: header.sequence,
                index,
                at: crate::now_ms(),
            };
            index = index.saturating_add(1);
            let sealed = channel::seal_chunk(
                &chunk,
                &std::mem::take(&mut buf),
                &self.record.control_kem_key,
                &self.keys.identity,
                &mut channel::os_rng(),
            );
            match sealed {
                Ok(sealed) => match self.gateway.post_output(&sealed).await {
                    Ok(answer) if answer.cancel => {
                        tracing::info!(command_id = %header.command_id, "the control plane cancelled the running task");
                        cancel.cancel();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "an output chunk was not delivered"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot seal an output chunk"),
            }
            if done {
                return;
            }
        }
    }

    /// After a restart: an operation that was running when the agent stopped
    /// is reported failed ("agent restarted"), never run again (the replay
    /// guard already holds it).
    pub fn recover_in_flight(&mut self) -> Result<bool, AgentError> {
        let Some(header) = self
            .dir
            .read_json_opt::<channel::CommandHeader>(state::IN_FLIGHT)?
        else {
            return Ok(false);
        };
        tracing::warn!(command_id = %header.command_id, kind = %header.kind, "an operation was running when the agent stopped: reporting it failed");
        let result = self.seal(
            &header,
            ResultStatus::Failed,
            b"The agent restarted while this task was running; it was not run again.",
        )?;
        self.pending.retain(|p| p.command_id != header.command_id);
        self.pending.push(PendingResult {
            command_id: header.command_id.clone(),
            result,
        });
        let pending = json(&self.pending)?;
        self.dir
            .commit(&[(state::PENDING_RESULTS, &pending)], &[state::IN_FLIGHT])?;
        Ok(true)
    }

    /// Runs one opened, allowed command. Returns its status and output.
    pub async fn execute(&mut self, cmd: &OpenedCommand, now_ms: i64) -> (ResultStatus, String) {
        let payload = cmd.payload();
        let args_ok = payload.iter().all(u8::is_ascii_whitespace)
            || matches!(
                serde_json::from_slice::<serde_json::Value>(payload),
                Ok(serde_json::Value::Object(_))
            );
        if !args_ok {
            return (
                ResultStatus::Failed,
                "the command's arguments are not a JSON object".into(),
            );
        }
        let outcome = match cmd.header().kind.as_str() {
            kinds::PING => Ok("pong".to_string()),
            kinds::ROTATE_KEYS => self.rotate_keys(now_ms).await,
            kinds::REGISTER_PQC_KEY => self.register_pqc_key(now_ms).await,
            kinds::UPDATE_AGENT => self.update_agent(payload).await,
            other => Err(AgentError::Failed(format!(
                "this agent version ({}) does not know command kind `{other}`",
                self.binary.version
            ))),
        };
        match outcome {
            Ok(out) => (ResultStatus::Succeeded, out),
            Err(AgentError::Update(e)) if e.is_refusal() => {
                tracing::warn!(kind = %cmd.header().kind, error = %e, "command refused");
                (ResultStatus::Refused, e.to_string())
            }
            Err(e) => {
                tracing::warn!(kind = %cmd.header().kind, error = %e, "command failed");
                (ResultStatus::Failed, e.to_string())
            }
        }
    }

    /// `update_agent`: verify and stage the release (see [`update::apply`]), then
    /// end the process once the result is delivered. Refused while this version
    /// is itself on trial: it would become the version to revert to.
    async fn update_agent(&mut self, payload: &[u8]) -> Result<String, AgentError> {
        let args: channel::api::UpdateAgentArgs =
            serde_json::from_slice(payload).map_err(|e| UpdateError::Arguments(e.to_string()))?;
        if let Some(trial) = &self.trial {
            return Err(UpdateError::OnTrial {
                version: self.binary.version.clone(),
                after_secs: trial.after().as_secs(),
            }
            .into());
        }
        let gateway = self.gateway.clone();
        let message = update::apply(
            &self.dir,
            &args,
            &self.config.release_key,
            &self.binary,
            &update::running_exe(),
            |platform| async move { gateway.download_release(&platform).await },
        )
        .await?;
        self.restart_requested = true;
        tracing::info!("{message}");
        Ok(message)
    }

    /// Posts stored results, oldest first. A result the control plane rejects
    /// outright (a 4xx other than 401/408/429) is dropped, so that one bad result
    /// cannot block the others forever.
    pub async fn report_pending(&mut self) -> Result<usize, AgentError> {
        let mut sent = 0;
        while let Some(first) = self.pending.first() {
            match self.gateway.post_result(&first.result).await {
                Ok(()) => {
                    tracing::debug!(command_id = %first.command_id, "result delivered");
                    sent += 1;
                }
                Err(e) if e.is_rejection() => {
                    // Kept for the operator, and the control plane hears that
                    // the command ran but its result could not be delivered.
                    tracing::error!(command_id = %first.command_id, error = %e, "result refused by the control plane: kept in {} and reported as failed", state::REJECTED_RESULTS);
                    self.keep_rejected(first)?;
                    if let Some(notice) = self.delivery_failure_notice(first, &e) {
                        match self.gateway.post_result(&notice).await {
                            Ok(()) => sent += 1,
                            Err(e2) if e2.is_rejection() => {
                                tracing::error!(command_id = %first.command_id, error = %e2, "the failure report was refused too");
                            }
                            Err(e2) => return Err(e2.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            self.pending.remove(0);
            self.dir
                .write(state::PENDING_RESULTS, &json(&self.pending)?)?;
        }
        Ok(sent)
    }

    /// Appends a refused result to [`state::REJECTED_RESULTS`] (the newest
    /// [`MAX_REJECTED_RESULTS`]), so that it is never lost without a trace.
    fn keep_rejected(&self, result: &PendingResult) -> Result<(), AgentError> {
        // An unreadable file is replaced rather than allowed to block delivery.
        let mut kept: Vec<PendingResult> = match self.dir.read_opt(state::REJECTED_RESULTS) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => Vec::new(),
        };
        kept.push(result.clone());
        if kept.len() > MAX_REJECTED_RESULTS {
            kept.drain(..kept.len() - MAX_REJECTED_RESULTS);
        }
        self.dir.write(state::REJECTED_RESULTS, &json(&kept)?)?;
        Ok(())
    }

    /// A short, failed result for the same command saying why its real result
    /// could not be delivered (`None` if it cannot be sealed).
    fn delivery_failure_notice(
        &self,
        refused: &PendingResult,
        error: &crate::gateway::GatewayError,
    ) -> Option<SealedResult> {
        let original = refused.result.header();
        let header = ResultHeader {
            agent_id: original.agent_id.clone(),
            command_id: original.command_id.clone(),
            sequence: original.sequence,
            finished_at: crate::now_ms(),
            status: ResultStatus::Failed,
        };
        let text = format!(
            "The command ran, but the control plane refused its result ({error}). The agent keeps the result in {} on the server.",
            state::REJECTED_RESULTS
        );
        channel::seal_result(
            &header,
            text.as_bytes(),
            &self.record.control_kem_key,
            &self.keys.identity,
            &mut channel::os_rng(),
        )
        .ok()
    }

    async fn post_keys(&self, request: &KeysRequest) -> Result<KeysResponse, AgentError> {
        let mut backoff = crate::backoff::Backoff::standard();
        let mut attempt = 1;
        loop {
            match self.gateway.post_keys(request).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && attempt < KEYS_ATTEMPTS => {
                    let delay = backoff.next_delay().max(Duration::from_millis(250));
                    tracing::warn!(error = %e, attempt, "key registration failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `rotate_keys`: new identity, KEM and TLS keys, registered with a signature by
    /// the current identity key and one by the new key, then stored and used.
    async fn rotate_keys(&mut self, now_ms: i64) -> Result<String, AgentError> {
        let new_identity = SigningKey::generate();
        let new_kem = KemSecretKey::generate();
        let tls = pki::new_tls_key(&self.record.agent_id)?;
        let registration = KeyRegistration {
            agent_id: self.record.agent_id.clone(),
            kem_public_key: new_kem.public_key().clone(),
            identity_key: new_identity.verifying_key().clone(),
            tls_cert_fingerprint: Some(pki::csr_fingerprint(&tls.csr_pem)),
            issued_at: now_ms,
        };
        let signed = channel::sign_registration(registration, &self.keys.identity, &new_identity)?;
        let answer = self
            .post_keys(&KeysRequest {
                registration: signed,
                csr_pem: Some(tls.csr_pem.clone()),
            })
            .await?;
        let cert_pem = answer.client_cert_pem.ok_or_else(|| {
            AgentError::Failed(
                "the control plane accepted the keys but sent no client certificate".into(),
            )
        })?;
        let cert = pki::check_client_cert(&self.keys.ca_pem, &cert_pem, &tls.spki_der)?;
        let identity = TlsIdentity {
            cert_pem,
            key_pem: tls.key_pem,
        };
        let tls_config = pki::mtls_config(&self.keys.ca_pem, &identity)?;
        let mut record = self.record.clone();
        record.cert_not_after = cert.not_after_ms;
        record.keys_registered_at = now_ms;
        self.dir.commit(
            &[
                (
                    state::IDENTITY_KEY,
                    &state::secret_hex(new_identity.to_bytes().as_slice()),
                ),
                (
                    state::KEM_KEY,
                    &state::secret_hex(new_kem.to_bytes().as_slice()),
                ),
                (state::TLS_KEY, identity.key_pem.as_bytes()),
                (state::TLS_CERT, identity.cert_pem.as_bytes()),
                (state::AGENT_FILE, &json(&record)?),
            ],
            &[],
        )?;
        let old_id = self.keys.identity.key_id();
        let message = format!(
            "keys rotated: identity key {old_id} -> {}, KEM key {}, certificate serial {} valid until {}",
            new_identity.key_id(),
            new_kem.key_id(),
            cert.serial_hex,
            format_utc(cert.not_after_ms)
        );
        self.keys.identity = new_identity;
        self.keys.kem = Some(new_kem);
        self.keys.tls_key_pem = identity.key_pem;
        self.keys.tls_cert_pem = identity.cert_pem;
        self.cert = cert;
        self.record = record;
        self.gateway.set_tls(tls_config)?;
        tracing::info!("{message}");
        Ok(message)
    }

    /// `register_pqc_key`: make an X-Wing key if there is none and register it with
    /// the unchanged identity key in both signature roles. With a key already
    /// present it is announced again (the control plane may have missed it).
    async fn register_pqc_key(&mut self, now_ms: i64) -> Result<String, AgentError> {
        let (kem_public, fresh) = match &self.keys.kem {
            Some(k) => (k.public_key().clone(), None),
            None => {
                let k = KemSecretKey::generate();
                (k.public_key().clone(), Some(k))
            }
        };
        let kem_id = kem_public.key_id();
        let registration = KeyRegistration {
            agent_id: self.record.agent_id.clone(),
            kem_public_key: kem_public,
            identity_key: self.keys.identity.verifying_key().clone(),
            tls_cert_fingerprint: None,
            issued_at: now_ms,
        };
        let signed =
            channel::sign_registration(registration, &self.keys.identity, &self.keys.identity)?;
        self.post_keys(&KeysRequest {
            registration: signed,
            csr_pem: None,
        })
        .await?;
        let Some(kem) = fresh else {
            return Ok(format!(
                "post-quantum encryption was already active (KEM key {kem_id}); the key was registered again"
            ));
        };
        let mut record = self.record.clone();
        record.keys_registered_at = now_ms;
        self.dir.commit(
            &[
                (
                    state::KEM_KEY,
                    &state::secret_hex(kem.to_bytes().as_slice()),
                ),
                (state::AGENT_FILE, &json(&record)?),
            ],
            &[],
        )?;
        self.keys.kem = Some(kem);
        self.record = record;
        tracing::info!(kem_key_id = %kem_id, "post-quantum encryption activated");
        Ok(format!(
            "post-quantum encryption activated: KEM key {kem_id}"
        ))
    }

    /// Whether two thirds of the certificate's lifetime have passed.
    pub fn renewal_due(&self, now_ms: i64) -> bool {
        let life = self.cert.not_after_ms - self.cert.not_before_ms;
        now_ms >= self.cert.not_before_ms + life / 3 * 2
    }

    /// Renews the client certificate when it is due (with a new TLS key). Returns
    /// whether it did; after a failure it waits a few minutes before trying again.
    pub async fn maybe_renew(&mut self, now_ms: i64) -> Result<bool, AgentError> {
        if !self.renewal_due(now_ms) || now_ms < self.renew_retry_after_ms {
            return Ok(false);
        }
        match self.renew_certificate().await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.renew_retry_after_ms = now_ms + RENEW_RETRY_MS;
                Err(e)
            }
        }
    }

    async fn renew_certificate(&mut self) -> Result<(), AgentError> {
        let tls = pki::new_tls_key(&self.record.agent_id)?;
        let renewal = channel::sign_renewal(
            &self.record.agent_id,
            &tls.csr_pem,
            &self.keys.identity,
            crate::now_ms(),
        )?;
        let answer = self.gateway.renew(&tls.csr_pem, renewal).await?;
        let cert =
            pki::check_client_cert(&self.keys.ca_pem, &answer.client_cert_pem, &tls.spki_der)?;
        let identity = TlsIdentity {
            cert_pem: answer.client_cert_pem,
            key_pem: tls.key_pem,
        };
        let tls_config = pki::mtls_config(&self.keys.ca_pem, &identity)?;
        let mut record = self.record.clone();
        record.cert_not_after = cert.not_after_ms;
        self.dir.commit(
            &[
                (state::TLS_KEY, identity.key_pem.as_bytes()),
                (state::TLS_CERT, identity.cert_pem.as_bytes()),
                (state::AGENT_FILE, &json(&record)?),
            ],
            &[],
        )?;
        tracing::info!(serial = %cert.serial_hex, not_after = %format_utc(cert.not_after_ms), "client certificate renewed");
        self.keys.tls_key_pem = identity.key_pem;
        self.keys.tls_cert_pem = identity.cert_pem;
        self.cert = cert;
        self.record = record;
        self.gateway.set_tls(tls_config)?;
        Ok(())
    }

    /// Writes the last contact time to `status.json`, at most once a minute.
    pub fn save_status_if_due(&mut self) -> Result<(), StateError> {
        save_status_if_due(&self.dir, &self.gateway)
    }
}

/// Writes the gateway's last contact time to `status.json` if a minute has passed
/// since the last write (shared by the command and metrics sides).
pub fn save_status_if_due(dir: &StateDir, gateway: &Gateway) -> Result<(), StateError> {
    match gateway.contact_to_save(STATUS_EVERY_MS) {
        Some(contact) => dir.write_json(
            state::STATUS,
            &StatusFile {
                last_contact: Some(contact),
            },
        ),
        None => Ok(()),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(value).map_err(|e| AgentError::Failed(format!("cannot encode state: {e}")))
}
