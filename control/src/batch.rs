//! Group commit: requests that each need a small write (an agent's result,
//! for example) queue their job; whoever finds no batch running takes the
//! turn and writes every queued job in one transaction, answering each. Under
//! load, the jobs that arrive while one batch is written form the next, so a
//! fan-out to 1,000 agents costs a few transactions rather than 1,000; alone,
//! a job is written at once.
//!
//! A batch runs in its own task: a request dropped while it leads (its client
//! went away) does not abort the other jobs' write.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

type Waiting<J, R> = Vec<(J, oneshot::Sender<R>)>;

pub(crate) struct Batch<J, R> {
    queue: Mutex<Waiting<J, R>>,
    turn: tokio::sync::Mutex<()>,
    max: usize,
}

impl<J: Send + 'static, R: Send + 'static> Batch<J, R> {
    /// At most `max` jobs per batch.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
            max: max.max(1),
        }
    }

    /// Queues `job` and waits for its answer. `run` writes a batch and
    /// answers its jobs in order (one answer per job). `None` when the batch
    /// that held the job failed to answer (its task panicked).
    pub(crate) async fn submit<F, Fut>(&self, job: J, run: F) -> Option<R>
    where
        F: Fn(Vec<J>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((job, tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => return answer.ok(),
                _turn = self.turn.lock() => {
                    let jobs: Waiting<J, R> = {
                        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                        let n = queue.len().min(self.max);
                        queue.drain(..n).collect()
                    };
                    if jobs.is_empty() {
                        // Ours is in a batch already running (its leader went
                        // away and let the turn go): that batch answers it.
                        return rx.await.ok();
                    }
                    let (jobs, replies): (Vec<J>, Vec<oneshot::Sender<R>>) = jobs.into_iter().unzip();
                    if let Ok(answers) = tokio::spawn(run(jobs)).await {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_share_batches_and_each_gets_its_own_answer() {
        let batch = Arc::new(Batch::<u32, u32>::new(16));
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
                            jobs.into_iter().map(|j| j * 10).collect()
                        }
                    })
                    .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32 * 10));
        }
        let runs = runs.load(Ordering::SeqCst);
        // 200 jobs, at most 16 per batch: at least 13 batches, and far
        // fewer than one per job while they queue behind a running batch.
        assert!((13..200).contains(&runs), "{runs} batches");
    }

    #[tokio::test]
    async fn a_panicking_batch_answers_none() {
        let batch = Batch::<u32, u32>::new(4);
        let answer = batch
            .submit(1, |_jobs: Vec<u32>| async move {
                panic!("the batch failed");
                #[allow(unreachable_code)]
                Vec::new()
            })
            .await;
        assert_eq!(answer, None);
    }
}
