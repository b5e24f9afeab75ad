//! Delivery: from a committed command to the agent's long-poll, and back.
//!
//! [`Delivery`] owns the in-memory wake-ups and the control plane's channel
//! keys. Every path that queues a command for an agent (ping, key rounds,
//! an operation's approval, a later wave, the sweep) or ends its polls
//! (revocation, deletion) wakes the agent through it after its transaction
//! commits. It also takes the agent's results and live output chunks. The
//! long-polls, results and chunks that arrive together are written together,
//! one transaction per batch ([`crate::batch`]). With SQLite the process is
//! alone and memory is enough.
//!
//! Rules kept here: a command travels sealed to the agent's X-Wing key, or
//! only signed while the agent has none, and then only for the kinds
//! `channel::api::kinds::UNSEALED` lists (the agent refuses any other kind
//! signed-only); commands go out in sequence order; an agent on its previous
//! certificate (a key handover) gets no commands until it finishes its round;
//! a result or output chunk must be sealed to our key and signed by the
//! agent's identity key; an operation's command carries its plan hash and
//! approval record in the signed header; the control-plane secrets a backup's
//! task uses travel only inside the sealed payload, read at delivery and never
//! stored with the command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel::api::DeliveredCommand;
use channel::{CommandHeader, ResultStatus, SealedResult};
use serde_json::json;
use sqlx::Row;
use tokio::sync::Notify;

use crate::access::Authorized;
use crate::agents::{self, AgentSession, KeyAction, ManageAgents};
use crate::audit::{self, AuditAction, Event};
use crate::batch::Batch;
use crate::commands::{self, AgentReport, NewCommand, QueuedCommand};
use crate::server_keys::ServerKeys;
use crate::store::Store;
use crate::{AgentId, CommandId, CommandKind, ControlError, Origin, Timestamp};
use channel::ops::OpKind;
use secrecy::ExposeSecret as _;

/// The signed operation part of a command's header: its plan hash and
/// approval record, for an operation's command; nothing for the control
/// plane's own.
fn operation_header(c: &QueuedCommand) -> Result<Option<channel::OperationHeader>, ControlError> {
    match (&c.plan_hash, &c.approval) {
        (Some(plan_hash), Some(approval)) => Ok(Some(channel::OperationHeader {
            plan_hash: plan_hash.clone(),
            approval: serde_json::from_str(approval).map_err(ControlError::internal)?,
        })),
        _ => Ok(None),
    }
}

/// How often the server writes the heartbeats that polls noted.
pub const HEARTBEAT_FLUSH_SECS: u64 = 5;

/// How often the server sweeps operations (approvals that ran out, results
/// overdue).
pub const OPERATIONS_SWEEP_SECS: u64 = 15;

/// How long a ping waits for its agent.
pub const PING_TTL_SECS: i64 = 300;
/// How long a key round waits for an agent that is offline.
pub const KEY_ACTION_TTL_SECS: i64 = 7 * 86_400;
/// How long an offered update waits for its agent: an agent offline longer
/// gets it offered again by a person, never a stale one.
pub const UPDATE_TTL_SECS: i64 = 86_400;

pub struct Delivery {
    store: Store,
    keys: Arc<ServerKeys>,
    /// The master key of the secrets at rest, for the secrets tasks use.
    secrets: Option<Arc<crate::secrets::Keyring>>,
    waiters: Mutex<HashMap<AgentId, Arc<Notify>>>,
    heartbeats: agents::Heartbeats,
    /// Results waiting for their group commit.
    results: Batch<AgentReport, Vec<AgentId>>,
    /// Long-polls waiting to take their commands, in one transaction.
    takes: Batch<AgentId, commands::Taken>,
    /// Live output chunks waiting for their group commit.
    chunks: Batch<commands::KeptChunk, ()>,
    clock: fn() -> Timestamp,
}

/// Most results (or output chunks) one transaction records.
const RESULTS_PER_BATCH: usize = 256;

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(store: Store, keys: Arc<ServerKeys>) -> Self {
        Self::with_clock(store, keys, Timestamp::now)
    }

    pub fn with_clock(store: Store, keys: Arc<ServerKeys>, clock: fn() -> Timestamp) -> Self {
        Self {
            store,
            keys,
            secrets: None,
            waiters: Mutex::default(),
            heartbeats: agents::Heartbeats::default(),
            results: Batch::new(RESULTS_PER_BATCH, "agent results"),
            chunks: Batch::new(RESULTS_PER_BATCH, "live output"),
            takes: Batch::new(RESULTS_PER_BATCH, "long-polls taking commands"),
            clock,
        }
    }

    /// Gives operations the control-plane secrets their tasks use (without
    /// it they go without, and the agent fails such a task before it starts,
    /// naming the secret).
    pub fn with_secrets(mut self, ring: Arc<crate::secrets::Keyring>) -> Self {
        self.secrets = Some(ring);
        self
    }

    /// Writes the heartbeats the polls noted since the last call (the server
    /// calls this every [`HEARTBEAT_FLUSH_SECS`]).
    pub async fn flush_heartbeats(&self) -> Result<usize, ControlError> {
        self.heartbeats.flush(&self.store).await
    }

    /// Expires what operations' approvals no longer cover, gives up on overdue
    /// results, and wakes the agents of any next wave (the server calls this
    /// every [`OPERATIONS_SWEEP_SECS`]).
    pub async fn sweep_operations(&self) -> Result<usize, ControlError> {
        let wake = crate::operations::dispatch::sweep(&self.store, (self.clock)()).await?;
        for agent in &wake {
            self.wake(agent);
        }
        Ok(wake.len())
    }

    pub fn keys(&self) -> &ServerKeys {
        &self.keys
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn slot(&self, agent: &AgentId) -> Arc<Notify> {
        let mut map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(agent.clone()).or_default().clone()
    }

    /// Wakes every poll the agent holds. A poll registers for wake-ups before
    /// it reads the queue, so a commit between its read and its wait is not missed.
    pub fn wake(&self, agent: &AgentId) {
        self.slot(agent).notify_waiters();
    }

    /// The long-poll: records the heartbeat, then answers at once with pending
    /// commands, otherwise waits up to `wait` for a wake-up. Every wake-up
    /// authenticates the agent again (it may have been revoked or re-keyed
    /// meanwhile).
    pub async fn poll(
        &self,
        session: AgentSession,
        tls_group: &str,
        wait: Duration,
    ) -> Result<Vec<DeliveredCommand>, ControlError> {
        let now = (self.clock)();
        if self.heartbeats.record(&session, tls_group, now) {
            agents::touch(&self.store, &session, tls_group, now).await?;
        }
        if session.handover().is_some() {
            // On its previous certificate the agent may only finish its key round.
            return Ok(Vec::new());
        }
        let notify = self.slot(session.agent());
        let deadline = tokio::time::Instant::now() + wait;
        let mut session = session;
        let mut first = true;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered from here on: notify_waiters reaches it even before it is polled.
            notified.as_mut().enable();
            if !first {
                // The heartbeat was recorded when the poll began.
                session = agents::authenticate(&self.store, session.fingerprint(), (self.clock)())
                    .await?;
            }
            first = false;
            // A plain read first, so an agent with nothing queued never takes
            // the write lock; the rest with the polls woken meanwhile, in one
            // transaction (a fan-out wakes a thousand together).
            let taken = if commands::any_open(&self.store, session.agent()).await? {
                self.take(session.agent()).await?
            } else {
                commands::Taken::default()
            };
            for agent in &taken.wake {
                self.wake(agent);
            }
            let payloads = self.task_secrets(&session, &taken.commands).await;
            let delivered = self.seal_in_order(&session, &taken.commands, &payloads)?;
            if !delivered.is_empty() {
                return Ok(delivered);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Takes the agent's pending commands with the other polls that take
    /// theirs meanwhile, in one transaction.
    async fn take(&self, agent: &AgentId) -> Result<commands::Taken, ControlError> {
        let store = self.store.clone();
        let now = (self.clock)();
        self.takes
            .submit(agent.clone(), move |agents| {
                let store = store.clone();
                async move {
                    let taken = commands::take_pending_all(&store, &agents, now).await?;
                    Ok(taken.into_iter().map(Ok).collect())
                }
            })
            .await
    }

    /// Seals (or, in classical fallback, signs) the commands in sequence
    /// order, stopping at the first that cannot travel to this agent: a later
    /// one must never overtake it, or the agent's replay guard would refuse it
    /// for good. Queueing refuses such commands, so this stop is a safeguard.
    /// A command's payload is its arguments, or what [`Self::task_secrets`]
    /// built for it in `payloads`.
    fn seal_in_order(
        &self,
        session: &AgentSession,
        pending: &[QueuedCommand],
        payloads: &HashMap<String, Vec<u8>>,
    ) -> Result<Vec<DeliveredCommand>, ControlError> {
        let mut out = Vec::with_capacity(pending.len());
        for c in pending {
            let payload = payloads
                .get(&c.id.0)
                .map_or(c.args.as_bytes(), Vec::as_slice);
            let header = CommandHeader {
                agent_id: session.agent().0.clone(),
                command_id: c.id.0.clone(),
                sequence: c.seq,
                issued_at: c.created_at.0,
                expires_at: c.expires_at.0,
                kind: c.kind.as_str().to_string(),
                operation: operation_header(c)?,
            };
            let delivered = match session.kem_key() {
                Some(kem) => channel::seal_command(
                    &header,
                    payload,
                    kem,
                    &self.keys.signing,
                    &mut channel::os_rng(),
                )
                .map(|envelope| DeliveredCommand::Sealed { envelope }),
                None => channel::sign_command(&header, payload, &self.keys.signing)
                    .map(|envelope| DeliveredCommand::Signed { envelope }),
            };
            match delivered {
                Ok(d) => out.push(d),
                Err(channel::ChannelError::MustBeSealed) => {
                    tracing::warn!(agent = %session.agent(), command = %c.id, "command needs a KEM key the agent has not registered; later commands wait behind it");
                    break;
                }
                Err(e) => return Err(ControlError::internal(e)),
            }
        }
        Ok(out)
    }

    /// The payloads of the `taken` commands whose tasks are given
    /// control-plane secrets (a backup whose profile names `secret://NAME` in
    /// the agent's config, as its declared capabilities say): the approved
    /// arguments with the values, built here so that the values are never
    /// stored with the command, and only for an agent with a sealing key.
    /// Each delivery is audited (`secret.delivered`, names only). A secret
    /// that cannot be read is logged (naming it) and left out; the agent then
    /// does not start the task and fails the operation, naming it.
    async fn task_secrets(
        &self,
        session: &AgentSession,
        taken: &[QueuedCommand],
    ) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        let Some(ring) = &self.secrets else {
            return out;
        };
        if session.kem_key().is_none() {
            return out;
        }
        let mut caps: Option<Option<channel::ops::Capabilities>> = None;
        let mut events = Vec::new();
        let now = (self.clock)();
        for c in taken {
            let CommandKind::Operation(kind @ (OpKind::RunBackup | OpKind::RunPlan)) = c.kind
            else {
                continue;
            };
            let Ok(op) = channel::ops::Operation::from_wire(kind.as_str(), c.args.as_bytes())
            else {
                continue;
            };
            if caps.is_none() {
                caps = Some(self.capabilities(session.agent()).await);
            }
            let Some(Some(declared)) = &caps else {
                continue;
            };
            let names = declared.secrets_for(&op);
            if names.is_empty() {
                continue;
            }
            let given = match crate::secrets::for_task(
                &self.store,
                ring,
                session.org(),
                session.agent(),
                &names,
                now,
            )
            .await
            {
                Ok(given) => given,
                Err(e) => {
                    tracing::error!(agent = %session.agent(), command = %c.id, error = %e, "a secret for this task cannot be read; the task goes without it");
                    continue;
                }
            };
            if given.is_empty() {
                continue;
            }
            let values = given
                .iter()
                .map(|s| (s.name.clone(), s.value.expose_secret().to_string()))
                .collect();
            match channel::ops::payload_with_secrets(c.args.as_bytes(), values) {
                Ok(payload) if payload.len() <= channel::envelope::MAX_PAYLOAD_BYTES => {
                    out.insert(c.id.0.clone(), payload);
                    events.push((
                        audit::AuditActor::system(),
                        Event::new(
                            session.org(),
                            AuditAction::SecretDelivered,
                            format!("agent:{}", session.agent().0),
                            json!({
                                "command": c.id.0,
                                "kind": kind.as_str(),
                                "secrets": given.iter().map(|s| json!({"id": s.id, "name": s.name})).collect::<Vec<_>>(),
                            }),
                        ),
                    ));
                }
                Ok(_) => {
                    tracing::error!(agent = %session.agent(), command = %c.id, "the task's secrets do not fit in one command; the task goes without them")
                }
                Err(e) => {
                    tracing::error!(agent = %session.agent(), command = %c.id, error = %e, "cannot add the task's secrets")
                }
            }
        }
        if !events.is_empty() {
            if let Err(e) = self.audit_deliveries(events, now).await {
                tracing::error!(error = %e, "could not record secret.delivered");
            }
        }
        out
    }

    async fn audit_deliveries(
        &self,
        events: Vec<(audit::AuditActor, Event)>,
        now: Timestamp,
    ) -> Result<(), ControlError> {
        let mut tx = self.store.begin().await?;
        audit::append_many(&mut tx, events, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What an agent declared it can run, if it declared anything readable.
    async fn capabilities(&self, agent: &AgentId) -> Option<channel::ops::Capabilities> {
        let declared: Option<String> =
            sqlx::query_scalar("SELECT capabilities FROM agents WHERE id = $1")
                .bind(&agent.0)
                .fetch_optional(self.store.pool())
                .await
                .ok()
                .flatten();
        serde_json::from_str(&declared?).ok()
    }

    /// Opens and records an agent's result: sealed to our KEM key, signed by
    /// the agent's identity key, for one of its own commands at the sequence
    /// number it was queued with.
    #[tracing::instrument(skip_all, err(level = "info"))]
    pub async fn accept_result(
        &self,
        session: &AgentSession,
        result: &SealedResult,
    ) -> Result<(), ControlError> {
        let now = (self.clock)();
        let opened = channel::open_result(
            result,
            &session.agent().0,
            &self.keys.kem,
            session.identity_key(),
            now.0,
        )
        .map_err(|e| ControlError::invalid(format!("The result was refused: {e}.")))?;
        let header = opened.header();
        let output = String::from_utf8_lossy(opened.output());
        let refused = header.status == ResultStatus::Refused;
        // The agent's own words for a refusal, for `agent.command_refused`.
        let reason = refused.then(|| {
            output
                .chars()
                .take(commands::MAX_REFUSAL_REASON_CHARS)
                .collect::<String>()
        });
        let text = match header.status {
            ResultStatus::Succeeded | ResultStatus::Failed => output.into_owned(),
            ResultStatus::TimedOut => format!("Timed out on the agent. {output}"),
            ResultStatus::Refused => format!("Refused by the agent's local policy. {output}"),
        };
        let report = AgentReport {
            agent: session.agent().clone(),
            org: session.org(),
            command: header.command_id.clone(),
            sequence: header.sequence,
            succeeded: header.status == ResultStatus::Succeeded,
            refused,
            reason,
            text,
        };
        // Recorded with the other results that arrive meanwhile, in one
        // transaction (a fan-out's results arrive together).
        let store = self.store.clone();
        let wake = self
            .results
            .submit(report, move |reports| {
                let store = store.clone();
                async move { commands::finish_all(&store, reports, now).await }
            })
            .await?;
        for agent in &wake {
            self.wake(agent);
        }
        Ok(())
    }

    /// Opens and keeps a live output chunk of one of the agent's running
    /// commands (sealed to our key, signed by the agent's identity key), notes
    /// the heartbeat (an agent busy with a task does not poll), and answers
    /// whether the command was cancelled.
    #[tracing::instrument(skip_all, err(level = "info"))]
    pub async fn accept_output(
        &self,
        session: &AgentSession,
        tls_group: &str,
        chunk: &channel::SealedChunk,
    ) -> Result<bool, ControlError> {
        let now = (self.clock)();
        let opened = channel::open_chunk(
            chunk,
            &session.agent().0,
            &self.keys.kem,
            session.identity_key(),
            now.0,
        )
        .map_err(|e| ControlError::invalid(format!("The output chunk was refused: {e}.")))?;
        let header = opened.header();
        let text = String::from_utf8_lossy(opened.output());
        let (cancel, keep) = commands::check_output(
            &self.store,
            session,
            commands::Chunk {
                command: &header.command_id,
                sequence: header.sequence,
                index: header.index,
                text: &text,
            },
        )
        .await?;
        if let Some(keep) = keep {
            // Kept with the other chunks that arrive meanwhile, in one transaction.
            let store = self.store.clone();
            self.chunks
                .submit(keep, move |chunks| {
                    let store = store.clone();
                    async move {
                        commands::keep_output(&store, &chunks, now).await?;
                        Ok(chunks.iter().map(|_| Ok(())).collect())
                    }
                })
                .await?;
        }
        if self.heartbeats.record(session, tls_group, now) {
            agents::touch(&self.store, session, tls_group, now).await?;
        }
        Ok(cancel)
    }

    /// Queues a ping for a server of the caller's organisation.
    #[tracing::instrument(skip_all, err(level = "info"))]
    pub async fn ping(
        &self,
        auth: &Authorized<'_, ManageAgents>,
        agent: &AgentId,
        now: Timestamp,
    ) -> Result<CommandId, ControlError> {
        let actor = auth.actor();
        let mut tx = auth.store().begin().await?;
        actor.recheck::<ManageAgents>(&mut tx).await?;
        let id = commands::insert(
            &mut tx,
            &actor.audit_actor(),
            NewCommand {
                org: actor.org(),
                agent,
                kind: CommandKind::Ping,
                args: json!({}),
                created_by: Some(actor.user()),
                ttl_secs: PING_TTL_SECS,
                expires_at: None,
                origin: Origin::System,
                operation: None,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        self.wake(agent);
        Ok(id)
    }

    /// Asks an agent to rotate its keys or register an ML-KEM key, in one
    /// transaction: re-checks the role, checks the server, queues the command
    /// and audits the request. The Security tab shows "Pending key
    /// registration" while the command is open (derived, so a command that
    /// fails or expires leaves nothing behind). An agent that is offline
    /// completes it when it returns (the command waits for a week).
    #[tracing::instrument(skip_all, err(level = "info"))]
    pub async fn request_key_action(
        &self,
        auth: &Authorized<'_, ManageAgents>,
        agent: &AgentId,
        action: KeyAction,
        now: Timestamp,
    ) -> Result<CommandId, ControlError> {
        let actor = auth.actor();
        let mut tx = auth.store().begin().await?;
        actor.recheck::<ManageAgents>(&mut tx).await?;
        let kem = active_agent(&mut tx, actor.org(), agent).await?.kem_key;
        if action == KeyAction::ActivatePqc && kem.is_some() {
            return Err(ControlError::conflict(
                "Post-quantum encryption is already active on this server.",
            ));
        }
        let command = commands::insert(
            &mut tx,
            &actor.audit_actor(),
            NewCommand {
                org: actor.org(),
                agent,
                kind: action.kind(),
                args: json!({}),
                created_by: Some(actor.user()),
                ttl_secs: KEY_ACTION_TTL_SECS,
                expires_at: None,
                origin: Origin::System,
                operation: None,
            },
            now,
        )
        .await?;
        let what = match action {
            KeyAction::RotateKeys => AuditAction::KeyRotationRequested,
            KeyAction::ActivatePqc => AuditAction::PqcActivationRequested,
        };
        audit::append(
            &mut tx,
            &actor.audit_actor(),
            Event::new(
                actor.org(),
                what,
                format!("agent:{}", agent.0),
                json!({ "command": command.0 }),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        self.wake(agent);
        Ok(command)
    }

    /// Offers a signed agent release to one server ("Update agent", Owner or
    /// Admin): queues an `update_agent` command carrying the release manifest
    /// and audits `agent.self_update_offered`, in one transaction. The agent
    /// downloads the binary over its own channel and checks the manifest
    /// against the release key it pinned; the control plane cannot sign one.
    /// Refuses (409) a server that already runs this version, and a downgrade
    /// unless `allow_downgrade`.
    pub async fn offer_update(
        &self,
        auth: &Authorized<'_, ManageAgents>,
        agent: &AgentId,
        release: &channel::release::Manifest,
        allow_downgrade: bool,
        now: Timestamp,
    ) -> Result<CommandId, ControlError> {
        let actor = auth.actor();
        let mut tx = auth.store().begin().await?;
        actor.recheck::<ManageAgents>(&mut tx).await?;
        let command = offer_in(&mut tx, actor, agent, release, allow_downgrade, now).await?;
        tx.commit().await?;
        self.wake(agent);
        Ok(command)
    }

    /// [`Self::offer_update`] to a selection of servers, in one transaction:
    /// every server that can take the release gets its command and audit
    /// event, or none does. A server that cannot (not found or revoked,
    /// already on this version, a downgrade not asked for) is skipped with
    /// the reason. At most [`MAX_UPDATE_SELECTION`] servers, each once.
    pub async fn offer_updates(
        &self,
        auth: &Authorized<'_, ManageAgents>,
        agents: &[AgentId],
        release: &channel::release::Manifest,
        allow_downgrade: bool,
        now: Timestamp,
    ) -> Result<Vec<UpdateOffer>, ControlError> {
        if agents.is_empty() {
            return Err(ControlError::invalid("Select at least one server."));
        }
        if agents.len() > MAX_UPDATE_SELECTION {
            return Err(ControlError::invalid(format!(
                "Update at most {MAX_UPDATE_SELECTION} servers at once."
            )));
        }
        let actor = auth.actor();
        let mut tx = auth.store().begin().await?;
        actor.recheck::<ManageAgents>(&mut tx).await?;
        let mut offers: Vec<UpdateOffer> = Vec::with_capacity(agents.len());
        for agent in agents {
            if offers.iter().any(|o| o.agent == *agent) {
                continue;
            }
            let outcome = match offer_in(&mut tx, actor, agent, release, allow_downgrade, now).await
            {
                Ok(command) => Ok(command),
                Err(e @ (ControlError::NotFound(_) | ControlError::Conflict(_))) => {
                    Err(e.to_string())
                }
                Err(e) => return Err(e),
            };
            offers.push(UpdateOffer {
                agent: agent.clone(),
                outcome,
            });
        }
        tx.commit().await?;
        for o in offers.iter().filter(|o| o.outcome.is_ok()) {
            self.wake(&o.agent);
        }
        Ok(offers)
    }

    /// Revokes an agent (see [`agents::revoke`]) and ends every poll it holds.
    #[tracing::instrument(skip_all, err(level = "info"))]
    pub async fn revoke(
        &self,
        auth: &Authorized<'_, ManageAgents>,
        agent: &AgentId,
        now: Timestamp,
    ) -> Result<(), ControlError> {
        agents::revoke(auth, agent, now).await?;
        self.wake(agent);
        Ok(())
    }
}

/// The most servers one "Update agent" on a selection may name.
pub const MAX_UPDATE_SELECTION: usize = 1000;

/// What became of one server of a selection offered an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOffer {
    pub agent: AgentId,
    /// The queued command, or why this server was skipped.
    pub outcome: Result<CommandId, String>,
}

/// Queues one `update_agent` command with its audit event in `tx`.
async fn offer_in(
    tx: &mut crate::store::Tx,
    actor: &crate::access::Actor,
    agent: &AgentId,
    release: &channel::release::Manifest,
    allow_downgrade: bool,
    now: Timestamp,
) -> Result<CommandId, ControlError> {
    let running = active_agent(tx, actor.org(), agent).await?.agent_version;
    let order = channel::release::compare_versions(&release.version, &running);
    if order == std::cmp::Ordering::Equal {
        return Err(ControlError::conflict(format!(
            "This server already runs agent {running}."
        )));
    }
    if order == std::cmp::Ordering::Less && !allow_downgrade {
        return Err(ControlError::conflict(format!(
            "Agent {} is older than the {running} this server runs; a downgrade must be asked for explicitly.",
            release.version
        )));
    }
    let args = channel::api::UpdateAgentArgs {
        manifest: release.to_text(),
        allow_downgrade,
    };
    let command = commands::insert(
        tx,
        &actor.audit_actor(),
        NewCommand {
            org: actor.org(),
            agent,
            kind: CommandKind::UpdateAgent,
            args: serde_json::to_value(&args).map_err(ControlError::internal)?,
            created_by: Some(actor.user()),
            ttl_secs: UPDATE_TTL_SECS,
            expires_at: None,
            origin: Origin::System,
            operation: None,
        },
        now,
    )
    .await?;
    audit::append(
        tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::SelfUpdateOffered,
            format!("agent:{}", agent.0),
            json!({
                "command": command.0,
                "from_version": running,
                "version": release.version,
                "platform": release.platform,
                "sha256": release.sha256,
                "allow_downgrade": allow_downgrade,
            }),
        ),
        now,
    )
    .await?;
    Ok(command)
}

/// What a request about one of the organisation's servers reads of it.
struct ActiveAgent {
    kem_key: Option<String>,
    agent_version: String,
}

/// The organisation's server `agent`, unless revoked; "No such active
/// server." otherwise (another organisation's included).
async fn active_agent(
    tx: &mut crate::store::Tx,
    org: crate::OrgId,
    agent: &AgentId,
) -> Result<ActiveAgent, ControlError> {
    let row = sqlx::query(
        "SELECT kem_key, agent_version FROM agents WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
    )
    .bind(&agent.0)
    .bind(org.0)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ControlError::not_found("No such active server."))?;
    Ok(ActiveAgent {
        kem_key: row.try_get("kem_key")?,
        agent_version: row.try_get("agent_version")?,
    })
}
