//! The closed loop: a fixed number of workers, each awaiting its operation in a loop until the duration or
//! the request budget is spent. Each worker keeps its own histogram (no shared lock on the hot path); they
//! are merged at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::histogram::Histogram;

/// Why one operation failed. Failures are counted, never fatal on their own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// One closed-loop worker: awaits one operation at a time. Its state (a keep-alive connection, say) lives
/// in `self`.
pub trait Worker: Send + 'static {
    /// Performs operation number `seq`. Every `seq` below the request budget is handed out exactly once
    /// across all workers, so it can index work prepared in advance (a session to end, a token to check).
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), OpError>> + Send;
}

impl<F, Fut> Worker for F
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), OpError>> + Send,
{
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), OpError>> + Send {
        self(seq)
    }
}

/// How long and how hard to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSpec {
    /// Stop starting operations once this much time has passed.
    pub duration: Duration,
    /// Stop after this many operations (succeeded or failed) in all; `None`: no budget.
    pub max_requests: Option<u64>,
    /// Stop early once more than this fraction of operations failed (after at least
    /// [`LoadSpec::min_errors_to_abort`] failures).
    pub max_error_ratio: f64,
    /// Failures tolerated before the ratio can stop the run, so one early failure does not end it.
    pub min_errors_to_abort: u64,
    /// An operation taking longer than this counts as failed (its worker goes on).
    pub op_timeout: Duration,
}

impl LoadSpec {
    /// `duration` with no budget, stopping early above 1 % failures, 10 s per operation.
    pub fn for_duration(duration: Duration) -> Self {
        Self {
            duration,
            max_requests: None,
            max_error_ratio: 0.01,
            min_errors_to_abort: 10,
            op_timeout: Duration::from_secs(10),
        }
    }

    /// The same with a request budget.
    pub fn with_max_requests(self, max_requests: Option<u64>) -> Self {
        Self { max_requests, ..self }
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Workers (the concurrency).
    pub concurrency: usize,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// From the first operation started to the last one finished.
    pub elapsed: Duration,
    /// Latency of the operations that succeeded.
    pub histogram: Histogram,
    /// Up to [`ERROR_SAMPLES`] distinct failure messages, first seen first.
    pub error_samples: Vec<String>,
    /// Why the run stopped before its duration and budget were spent, if it did.
    pub aborted: Option<String>,
}

impl LoadResult {
    /// Successful operations per second of elapsed time.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ops as f64 / secs } else { 0.0 }
    }
}

/// How many distinct error messages a result keeps.
pub const ERROR_SAMPLES: usize = 5;

struct Shared {
    spec: LoadSpec,
    deadline: Instant,
    next_seq: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    samples: Mutex<Vec<String>>,
    aborted: Mutex<Option<String>>,
}

impl Shared {
    /// The next operation number, or `None` once the run is over.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        match self.spec.max_requests {
            Some(max) if seq >= max => None,
            _ => Some(seq),
        }
    }

    fn failed(&self, error: OpError) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let finished = self.finished.load(Ordering::Relaxed);
        if let Ok(mut samples) = self.samples.lock()
            && samples.len() < ERROR_SAMPLES
            && !samples.contains(&error.0)
        {
            samples.push(error.0);
        }
        if errors >= self.spec.min_errors_to_abort
            && errors as f64 > self.spec.max_error_ratio * finished as f64
            && !self.stop.swap(true, Ordering::Relaxed)
            && let Ok(mut aborted) = self.aborted.lock()
        {
            *aborted = Some(format!(
                "stopped early: {errors} of {finished} operations failed (more than {:.1} %)",
                self.spec.max_error_ratio * 100.0
            ));
        }
    }
}

/// Runs `workers` (one task each, so `workers.len()` is the concurrency) in a closed loop under `spec`.
///
/// Must be called within a tokio runtime; with a multi-threaded one the workers run in parallel.
pub async fn closed_loop<W: Worker>(spec: LoadSpec, workers: Vec<W>) -> LoadResult {
    let concurrency = workers.len();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        spec,
        deadline: start + spec.duration,
        next_seq: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
        aborted: Mutex::new(None),
    });
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut histogram = Histogram::new();
                let mut ops = 0u64;
                while let Some(seq) = shared.next() {
                    let begun = Instant::now();
                    let outcome = tokio::time::timeout(shared.spec.op_timeout, worker.call(seq)).await;
                    let took = begun.elapsed();
                    shared.finished.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(Ok(())) => {
                            histogram.record(took);
                            ops += 1;
                        }
                        Ok(Err(error)) => shared.failed(error),
                        Err(_) => shared.failed(OpError::new(format!(
                            "timed out after {:?}",
                            shared.spec.op_timeout
                        ))),
                    }
                }
                (ops, histogram)
            })
        })
        .collect();

    let mut histogram = Histogram::new();
    let mut ops = 0;
    let mut panics = 0;
    for task in tasks {
        match task.await {
            Ok((n, h)) => {
                ops += n;
                histogram.merge(&h);
            }
            Err(_) => panics += 1,
        }
    }
    let elapsed = start.elapsed();
    let errors = shared.errors.load(Ordering::Relaxed);
    let error_samples = shared.samples.lock().map(|s| s.clone()).unwrap_or_default();
    let mut aborted = shared.aborted.lock().ok().and_then(|a| a.clone());
    if panics > 0 {
        aborted = Some(format!("{panics} worker(s) panicked"));
    }
    LoadResult {
        concurrency,
        ops,
        errors,
        elapsed,
        histogram,
        error_samples,
        aborted,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn spec(duration_ms: u64, max_requests: Option<u64>) -> LoadSpec {
        LoadSpec::for_duration(Duration::from_millis(duration_ms)).with_max_requests(max_requests)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn budget_hands_out_each_seq_exactly_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let seen = Arc::clone(&seen);
                move |seq| {
                    seen.lock().unwrap().push(seq);
                    async { Ok(()) }
                }
            })
            .collect();
        let result = closed_loop(spec(10_000, Some(1000)), workers).await;
        assert_eq!((result.ops, result.errors, result.concurrency), (1000, 0, 4));
        assert_eq!(result.histogram.count(), 1000);
        assert!(result.aborted.is_none());
        assert!(result.elapsed < Duration::from_secs(5), "{:?}", result.elapsed);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duration_bounds_the_run_and_latency_is_measured() {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                |_| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(())
                }
            })
            .collect();
        let result = closed_loop(spec(200, None), workers).await;
        // Each worker starts at most one operation after the deadline passes… and none after that.
        assert!(
            result.elapsed >= Duration::from_millis(200),
            "{:?}",
            result.elapsed
        );
        assert!(
            result.elapsed < Duration::from_millis(1500),
            "{:?}",
            result.elapsed
        );
        assert!(
            result.ops >= 3 && result.ops <= 3 * (200 / 20 + 1),
            "{}",
            result.ops
        );
        assert!(result.histogram.quantile(0.5) >= Duration::from_millis(20));
        assert!(result.ops_per_sec() > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_counted_not_fatal_below_the_ratio() {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                |seq: u64| async move {
                    if seq.is_multiple_of(10) {
                        Err(OpError::new(format!("boom {}", seq % 20)))
                    } else {
                        Ok(())
                    }
                }
            })
            .collect();
        let lenient = LoadSpec {
            max_error_ratio: 0.5,
            ..spec(10_000, Some(200))
        };
        let result = closed_loop(lenient, workers).await;
        assert_eq!((result.ops, result.errors), (180, 20));
        assert_eq!(
            result.histogram.count(),
            180,
            "only successes are in the histogram"
        );
        assert!(result.aborted.is_none());
        let mut samples = result.error_samples.clone();
        samples.sort();
        assert_eq!(samples, ["boom 0", "boom 10"], "distinct messages only");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_many_errors_stop_the_run_early() {
        let workers: Vec<_> = (0..4)
            .map(|_| |_| async { Err(OpError::new("refused")) })
            .collect();
        let result = closed_loop(spec(10_000, Some(1_000_000)), workers).await;
        assert_eq!(result.ops, 0);
        // Each of the four workers may finish the operation it had started.
        assert!(result.errors >= 10 && result.errors < 10 + 4, "{}", result.errors);
        assert!(
            result.aborted.as_deref().unwrap().contains("failed"),
            "{:?}",
            result.aborted
        );
        assert!(result.elapsed < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_operation_times_out_as_an_error() {
        let workers = vec![|seq: u64| async move {
            if seq == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }];
        let quick = LoadSpec {
            op_timeout: Duration::from_millis(50),
            ..spec(10_000, Some(5))
        };
        let result = closed_loop(quick, workers).await;
        assert_eq!((result.ops, result.errors), (4, 1));
        assert!(result.error_samples[0].contains("timed out"));
    }
}
