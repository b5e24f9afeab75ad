//! Group commit: requests that each need a small write (an agent's result,
//! for example) queue their job; whoever finds no batch running takes the
//! turn and writes every queued job in one transaction, answering each. Under
//! load, the jobs that arrive while one batch is written form the next, so a
//! fan-out to 1,000 agents costs a few transactions rather than 1,000; alone,
//! a job is written at once.
//!
//! A batch runs and answers its jobs in its own task: a request dropped while
//! it leads (its client went away) neither aborts the others' write nor loses
//! their answers. A batch that fails as a whole fails each of its jobs.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::{ControlError, StoreError};

type Answer<R> = Result<R, ControlError>;
type Waiting<J, R> = Vec<(J, oneshot::Sender<Answer<R>>)>;

pub(crate) struct Batch<J, R> {
    queue: Mutex<Waiting<J, R>>,
    turn: tokio::sync::Mutex<()>,
    max: usize,
    /// What a batch writes, for the log line of a failed one.
    what: &'static str,
}

impl<J: Send + 'static, R: Send + 'static> Batch<J, R> {
    /// At most `max` jobs per batch.
    pub(crate) fn new(max: usize, what: &'static str) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
            max: max.max(1),
            what,
        }
    }

    /// Queues `job` and waits for its answer. `run` writes a batch and
    /// answers its jobs in order (one answer per job); when the whole batch
    /// fails, every job gets that failure (its kind kept: unavailable, not
    /// recorded, or internal).
    pub(crate) async fn submit<F, Fut>(&self, job: J, run: F) -> Answer<R>
    where
        F: Fn(Vec<J>) -> Fut,
        Fut: Future<Output = Result<Vec<Answer<R>>, ControlError>> + Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((job, tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(unanswered())),
                _turn = self.turn.lock() => {
                    let jobs: Waiting<J, R> = {
                        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                        let n = queue.len().min(self.max);
                        queue.drain(..n).collect()
                    };
                    if jobs.is_empty() {
                        // Ours is in a batch already running (its leader went
                        // away and let the turn go): that batch answers it.
                        return rx.await.unwrap_or_else(|_| Err(unanswered()));
                    }
                    let (jobs, replies): (Vec<J>, Vec<_>) = jobs.into_iter().unzip();
                    let what = self.what;
                    let batch = run(jobs);
                    // The task answers every job, even if this request goes away.
                    let _ = tokio::spawn(async move {
                        match batch.await {
                            Ok(answers) => {
                                for (reply, answer) in replies.into_iter().zip(answers) {
                                    let _ = reply.send(answer);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, batch = what, "a batch write failed");
                                for reply in replies {
                                    let _ = reply.send(Err(same_kind(&e)));
                                }
                            }
                        }
                    })
                    .await;
                }
            }
        }
    }
}

/// The failure of a whole batch, for each of its jobs.
fn same_kind(e: &ControlError) -> ControlError {
    let cause = StoreError::Batch(match e {
        ControlError::NotRecorded(s) | ControlError::Unavailable(s) => s.to_string(),
        ControlError::Internal(b) => b.to_string(),
        other => other.to_string(),
    });
    match e {
        ControlError::NotRecorded(_) => ControlError::NotRecorded(cause),
        ControlError::Unavailable(_) => ControlError::Unavailable(cause),
        _ => ControlError::Internal(Box::new(cause)),
    }
}

/// A job whose batch ended without an answer (its task panicked).
fn unanswered() -> ControlError {
    ControlError::Internal(Box::new(StoreError::Batch(
        "the batch ended without an answer".into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_share_batches_and_each_gets_its_own_answer() {
        let batch = Arc::new(Batch::<u32, u32>::new(16, "test"));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let (batch, runs) = (batch.clone(), runs.clone());
            handles.push(tokio::spawn(async move {
                batch
                    .submit(i, move |jobs: Vec<u32>| {
                        let runs = runs.clone();
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            Ok(jobs.into_iter().map(|j| Ok(j * 10)).collect())
                        }
                    })
                    .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), i as u32 * 10);
        }
        let runs = runs.load(Ordering::SeqCst);
        // 200 jobs, at most 16 per batch: at least 13 batches, and far
        // fewer than one per job while they queue behind a running batch.
        assert!((13..200).contains(&runs), "{runs} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_job_with_its_kind() {
        let batch = Batch::<u32, u32>::new(4, "test");
        let answer = batch
            .submit(1, |_jobs: Vec<u32>| async move {
                Err(ControlError::NotRecorded(StoreError::Batch(
                    "refused".into(),
                )))
            })
            .await;
        assert!(
            matches!(answer, Err(ControlError::NotRecorded(_))),
            "{answer:?}"
        );
        let answer = batch
            .submit(1, |_jobs: Vec<u32>| async move {
                panic!("the batch failed");
                #[allow(unreachable_code)]
                Ok(Vec::new())
            })
            .await;
        assert!(
            matches!(answer, Err(ControlError::Internal(_))),
            "{answer:?}"
        );
    }
}
