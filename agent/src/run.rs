//! `pilothouse-agent run`: start-up checks, then two loops on one current-thread
//! runtime: the command loop (renew if due, [`Agent::poll_once`], back off on
//! errors) and the metrics loop ([`MetricsTask::collect_sample`] and
//! [`MetricsTask::flush_metrics`] every interval).
//!
//! The launcher ([`crate::update::launch`]) runs before all of this, from `main`.
//!
//! Invariant: the loops only sleep, back off and log; every decision is in
//! [`crate::agent`] and [`crate::metrics`]. Nothing after start-up ends the process
//! except a staged self-update ([`Agent::restart_due`]), which ends it with status
//! 0 once its result was delivered, for systemd to start the new binary. An
//! unreachable or restarted control plane, a refused request or a full disk are
//! logged and retried with jittered exponential backoff (base 1 s, cap 30 s).

use crate::agent::Agent;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::{Backlog, Sampler};
use crate::state::{self, StateDir, StateError};
use crate::AgentError;
use channel::api::MetricSample;
use std::path::Path;
use std::time::Duration;

/// Failures in a row after which one is logged at warn again (the others at debug).
const WARN_EVERY: u32 = 20;

/// The metrics side of a running agent.
pub struct MetricsTask {
    dir: StateDir,
    gateway: Gateway,
    sampler: Sampler,
    backlog: Backlog,
    persisted: bool,
}

impl MetricsTask {
    /// Restores the backlog from `metrics-backlog.json` and takes the baseline reading.
    pub fn load(dir: StateDir, gateway: Gateway) -> Result<Self, StateError> {
        let samples: Vec<MetricSample> = dir
            .read_json_opt(state::METRICS_BACKLOG)?
            .unwrap_or_default();
        let persisted = !samples.is_empty();
        Ok(Self {
            dir,
            gateway,
            sampler: Sampler::new(),
            backlog: Backlog::from_samples(samples),
            persisted,
        })
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Takes one sample into the backlog.
    pub fn collect_sample(&mut self, now_ms: i64) {
        let sample = self.sampler.collect_sample(now_ms);
        self.backlog.push(sample);
    }

    /// Takes one sample with the watched units' states and backup profiles'
    /// last successes into the backlog.
    pub async fn collect_with_units(&mut self, now_ms: i64, ops: &crate::ops::OpsConfig) {
        let mut sample = self.sampler.collect_sample(now_ms);
        sample.units = crate::ops::unit_states(ops).await;
        sample.backups = crate::ops::backup_states(ops);
        self.backlog.push(sample);
    }

    /// Uploads the backlog (oldest first, in batches) and persists what is left.
    /// A batch the control plane rejects outright is dropped, not retried forever.
    pub async fn flush_metrics(&mut self) -> Result<usize, AgentError> {
        let gateway = self.gateway.clone();
        let (sent, result) = self
            .backlog
            .flush(|batch| {
                let gateway = gateway.clone();
                async move {
                    let n = batch.len();
                    match gateway.post_metrics(batch).await {
                        Err(e) if e.is_rejection() => {
                            tracing::error!(error = %e, samples = n, "metrics rejected by the control plane: dropping them");
                            Ok(())
                        }
                        other => other,
                    }
                }
            })
            .await;
        crate::agent::save_status_if_due(&self.dir, &self.gateway)?;
        self.save_backlog()?;
        result?;
        Ok(sent)
    }

    /// Writes the backlog to `metrics-backlog.json` (removes it when empty).
    pub fn save_backlog(&mut self) -> Result<(), StateError> {
        if self.backlog.is_empty() {
            if self.persisted {
                self.dir.commit(&[], &[state::METRICS_BACKLOG])?;
                self.persisted = false;
            }
        } else {
            self.dir
                .write_json(state::METRICS_BACKLOG, &self.backlog.to_vec())?;
            self.persisted = true;
        }
        Ok(())
    }
}

/// Everything `run` holds: the lock, the command side and the metrics side.
pub struct Running {
    _lock: state::DirLock,
    pub agent: Agent,
    pub metrics: MetricsTask,
    pub config: Config,
}

/// Checks, locks, recovers and loads the state directory, for the binary the
/// launcher's environment describes.
pub fn start(state_dir: &Path, config: Config) -> Result<Running, AgentError> {
    start_as(state_dir, config, crate::update::Binary::from_env())
}

/// [`start`] for a given running binary.
pub fn start_as(
    state_dir: &Path,
    config: Config,
    binary: crate::update::Binary,
) -> Result<Running, AgentError> {
    crate::health::mark_started();
    let dir = StateDir::new(state_dir);
    dir.ensure_registered()?;
    dir.check_permissions()?;
    let lock = dir.lock()?;
    dir.recover()?;
    let agent = Agent::load_as(dir.clone(), config.clone(), binary)?;
    let metrics = MetricsTask::load(dir, agent.gateway().clone())?;
    Ok(Running {
        _lock: lock,
        agent,
        metrics,
        config,
    })
}

/// `pilothouse-agent run`. Returns an error only at start-up, and `Ok` once a
/// staged self-update's result was delivered (the process then exits 0).
pub async fn run(state_dir: &Path, config_path: Option<&Path>) -> Result<(), AgentError> {
    let config = Config::load(config_path)?;
    let Running {
        _lock,
        mut agent,
        mut metrics,
        config,
    } = start(state_dir, config)?;
    let record = agent.record();
    tracing::info!(
        agent_id = %record.agent_id,
        server = %record.server_url,
        pqc = crate::pqc_state(agent.has_kem_key()),
        version = %agent.binary().version,
        on_trial = agent.on_trial(),
        "agent started"
    );
    let cert = agent.certificate();
    if cert.not_after_ms <= crate::now_ms() {
        tracing::error!(
            not_after = %crate::x509::format_utc(cert.not_after_ms),
            "the client certificate has expired and cannot be renewed; register the agent again with --force"
        );
    }
    let interval = Duration::from_secs(config.metrics_interval_secs);
    // The metrics loop never ends; the command loop ends for a restart.
    tokio::select! {
        () = command_loop(&mut agent) => {}
        () = metrics_loop(&mut metrics, interval, &config.operations) => {}
    }
    if let Err(e) = metrics.save_backlog() {
        tracing::warn!(error = %e, "cannot keep the metrics backlog");
    }
    tracing::info!("ending the process for the self-update; systemd starts it again");
    Ok(())
}

fn log_failure(what: &str, failures: u32, error: &AgentError, retry_in: Duration) {
    if failures == 1 || failures.is_multiple_of(WARN_EVERY) {
        tracing::warn!(%error, failures, retry_in_ms = retry_in.as_millis() as u64, "{what} failed");
    } else {
        tracing::debug!(%error, failures, "{what} failed");
    }
}

/// Renew when due, poll, handle; back off on errors and on answers that only
/// carried commands the agent will not answer. Returns once a staged
/// self-update's result was delivered ([`Agent::restart_due`]).
pub async fn command_loop(agent: &mut Agent) {
    let mut backoff = Backoff::standard();
    let mut failing = false;
    loop {
        match agent.maybe_renew(crate::now_ms()).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "certificate renewal failed; will retry"),
        }
        match agent.poll_once().await {
            Ok(outcome) => {
                if failing {
                    tracing::info!("control plane reachable again");
                    failing = false;
                }
                if agent.restart_due() {
                    return;
                }
                if outcome.only_ignored() {
                    // The same unanswerable commands would come back at once.
                    let delay = backoff.next_delay().max(Duration::from_secs(1));
                    tokio::time::sleep(delay).await;
                } else {
                    backoff.reset();
                }
            }
            Err(e) => {
                failing = true;
                let delay = backoff.next_delay();
                log_failure("poll", backoff.failures(), &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Every `interval`: one sample (with the watched units' states), then upload
/// the backlog.
pub async fn metrics_loop(
    metrics: &mut MetricsTask,
    interval: Duration,
    ops: &crate::ops::OpsConfig,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        metrics.collect_with_units(crate::now_ms(), ops).await;
        match metrics.flush_metrics().await {
            Ok(sent) => {
                failures = 0;
                tracing::debug!(sent, "metrics uploaded");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(error = %e, backlog = metrics.backlog().len(), "metrics upload failed; keeping the samples");
                }
            }
        }
    }
}
