//! The revocation workers. Ending a session commits, in the same transaction, one outbox row per
//! external credential to revoke (see `stint-store`'s `revocations` table); after the commit each
//! becomes a [`Job`] here. A job calls its target's provider; success records `revocation_confirmed`
//! and failure `revocation_failed` (with the error and attempt count), then retries after an
//! exponential, jittered, capped backoff. After `revocation_max_attempts` failures in a row the
//! credential shows `failed` and the job rests until the reconcile sweep starts a new round: a
//! revocation ends only when it is confirmed. A restart re-queues every outstanding row.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use stint_core::{CredentialId, CredentialKind, SessionId};
use tokio::sync::mpsc;

/// One credential to revoke.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its session.
    pub session: SessionId,
    /// The credential.
    pub credential: CredentialId,
    /// Its target (which provider).
    pub target: String,
    /// Its kind.
    pub kind: CredentialKind,
    /// The provider's handle.
    pub handle: String,
}

/// The queue of revocation jobs; each credential is queued at most once at a time.
#[derive(Debug)]
pub struct Revoker {
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    queued: Mutex<HashSet<CredentialId>>,
}

impl Default for Revoker {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: Mutex::default(),
        }
    }
}

impl Revoker {
    /// Queues a job unless the credential is already queued or being worked on.
    pub fn enqueue(&self, job: Job) {
        let fresh = self
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.credential.clone());
        if fresh {
            let _ = self.tx.send(job);
            self.publish();
        }
    }

    /// The job is over (confirmed, or resting until the next round).
    pub fn done(&self, credential: &CredentialId) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(credential);
        self.publish();
    }

    /// Jobs queued or running.
    pub fn outstanding(&self) -> usize {
        self.queued.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn publish(&self) {
        metrics::gauge!(crate::metrics::REVOCATIONS_PENDING).set(self.outstanding() as f64);
    }

    /// The receiving end, taken once by the worker loop.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Job>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`, capped, with "equal jitter"
/// (half fixed, half random) so that retries of many credentials spread out.
pub fn backoff(attempt: u32, base_ms: u64, cap_ms: u64, random: u64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    let d = exp.min(cap_ms).max(1);
    let half = d / 2;
    Duration::from_millis(half + random % (d - half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_stays_capped() {
        for r in [0, 1, 77, u64::MAX] {
            let d1 = backoff(1, 100, 10_000, r).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d4 = backoff(4, 100, 10_000, r).as_millis();
            assert!((400..=800).contains(&d4), "{d4}");
            let d30 = backoff(30, 100, 10_000, r).as_millis();
            assert!((5_000..=10_000).contains(&d30), "{d30}");
            let huge = backoff(u32::MAX, u64::MAX, 60_000, r).as_millis();
            assert!(huge <= 60_000);
        }
        // The jitter really varies.
        let spread: HashSet<u128> = (0..50)
            .map(|r| backoff(3, 100, 10_000, r * 7919).as_millis())
            .collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn a_credential_is_queued_once_at_a_time() {
        let r = Revoker::default();
        let mut rx = r.take_receiver().expect("receiver");
        let job = Job {
            session: SessionId::from_u128(1),
            credential: CredentialId::from_u128(2),
            target: "db".into(),
            kind: CredentialKind::Postgres,
            handle: "stint_x".into(),
        };
        r.enqueue(job.clone());
        r.enqueue(job.clone());
        assert_eq!(r.outstanding(), 1);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the second enqueue was dropped");
        r.done(&job.credential);
        r.enqueue(job);
        assert!(rx.try_recv().is_ok(), "queued again after it finished");
    }
}
