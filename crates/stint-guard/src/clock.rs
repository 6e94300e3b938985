//! The wall clock, injected: token expiry and revocation retention read time only through [`Clock`].

use std::time::UNIX_EPOCH;

/// A source of the current time as Unix seconds.
///
/// Every closure `Fn() -> i64` is a clock, which lets tests move time without sleeping:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// let now = Arc::new(AtomicI64::new(1_800_000_000));
/// let seen = now.clone();
/// let clock: Arc<dyn stint_guard::Clock> = Arc::new(move || seen.load(Ordering::Relaxed));
/// now.fetch_add(60, Ordering::Relaxed);
/// assert_eq!(clock.now_unix(), 1_800_000_060);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

impl<F> Clock for F
where
    F: Fn() -> i64 + Send + Sync + 'static,
{
    fn now_unix(&self) -> i64 {
        self()
    }
}

/// The system's wall clock: the only reader of the system time in this crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the system time"
    )]
    fn now_unix(&self) -> i64 {
        let since = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    }
}
