//! The built-in AI Pilot as a principal: it proposes, with evidence, and has
//! no approval rights. The audit log and the history name it "AI Pilot".
//!
//! - It proposes nothing when the organisation switched it off.
//! - It never proposes twice for the same condition: each proposal carries
//!   the condition's key (`unit:nginx.service:failed:<since>`), unique per
//!   organisation, so a condition that stays open is proposed for once,
//!   whatever became of that proposal.
//! - Production Protection, first refusal: a proposal for a production
//!   server is refused and the refusal audited with its reason.

use serde_json::json;

use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::operations::{insert_proposal, settings, Parallel, Proposal, Proposer};
use crate::store::Store;
use crate::{AgentId, ControlError, Operation, OperationId, OrgId, Origin, Timestamp};

/// What the pilot found and wants done about it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub agent: AgentId,
    pub op: Operation,
    /// Why, for people: "nginx.service failed at 12:04".
    pub reason: String,
    /// The measurements behind it.
    pub evidence: String,
    /// Names the open condition; one proposal per key, ever.
    pub condition_key: String,
}

/// What became of a finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Proposed(OperationId),
    /// The condition already has a proposal.
    AlreadyProposed,
    /// The organisation switched the pilot off.
    PilotOff,
    /// Refused, with the reason (Production Protection, a server that cannot
    /// run it); audited.
    Refused(String),
}

/// Proposes for one finding, as the AI Pilot.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn propose(
    store: &Store,
    org: OrgId,
    finding: Finding,
    now: Timestamp,
) -> Result<Outcome, ControlError> {
    let mut tx = store.begin().await?;
    if !settings::read_policy(&mut tx, org).await?.pilot_enabled {
        return Ok(Outcome::PilotOff);
    }
    let taken: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM operations WHERE org_id = $1 AND condition_key = $2",
    )
    .bind(org.0)
    .bind(&finding.condition_key)
    .fetch_one(tx.conn())
    .await?;
    if taken > 0 {
        return Ok(Outcome::AlreadyProposed);
    }
    let who = Proposer {
        origin: Origin::Pilot,
        user: None,
        label: audit::PILOT_LABEL.into(),
        audit: AuditActor::pilot(),
        evidence: Some(finding.evidence.clone()),
        condition_key: Some(finding.condition_key.clone()),
    };
    let proposal = Proposal {
        op: finding.op.clone(),
        targets: vec![finding.agent.clone()],
        reason: finding.reason.clone(),
        idempotency_key: None,
        parallel: Parallel::Count(1),
        error_threshold: 0,
    };
    match insert_proposal(&mut tx, org, &who, &proposal, now).await {
        Ok((id, _)) => {
            tx.commit().await?;
            Ok(Outcome::Proposed(id))
        }
        Err(ControlError::Forbidden(why))
        | Err(ControlError::Conflict(why))
        | Err(ControlError::Invalid(why)) => {
            drop(tx);
            // The refusal is recorded on its own, once per condition.
            let mut tx = store.begin().await?;
            audit::append(
                &mut tx,
                &AuditActor::pilot(),
                Event::new(
                    org,
                    AuditAction::OperationRefused,
                    format!("agent:{}", finding.agent.0),
                    json!({
                        "kind": finding.op.kind().as_str(),
                        "condition": finding.condition_key,
                        "reason": why,
                    }),
                ),
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(Outcome::Refused(why))
        }
        Err(e) => Err(e),
    }
}
