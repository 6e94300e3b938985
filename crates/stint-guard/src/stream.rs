//! The revocation stream task: connect, read events, apply them, reconnect with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL};
use secrecy::{ExposeSecret, SecretString};

use crate::guard::Shared;
use crate::revocation::read_event;
use crate::sse::{Frame, Parser};

/// First reconnection delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The revoked set is pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the stream task needs besides the shared state.
pub(crate) struct Settings {
    pub(crate) http: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) api_key: SecretString,
    pub(crate) staleness: Duration,
    pub(crate) replay_from: Option<u64>,
}

/// How one connection ended.
enum End {
    /// The server closed the stream, or it went silent; `heard` if it greeted us first.
    Closed { heard: bool, reason: &'static str },
    /// 401/403: the API key is wrong or not a resource server's.
    Refused(StatusCode),
    /// Anything else: connection errors, other statuses, a broken stream.
    Failed(String),
}

/// Follows the stream until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>, settings: Settings) {
    let mut backoff = Backoff::default();
    let mut pruned = Instant::now();
    loop {
        match connect(&shared, &settings, &mut pruned).await {
            End::Closed { heard, reason } => {
                if heard {
                    backoff.reset();
                }
                tracing::info!(reason, "stint revocation stream closed; reconnecting");
            }
            End::Refused(status) => {
                shared.health.down();
                backoff.exhaust();
                tracing::error!(
                    status = status.as_u16(),
                    "stint refused the revocation stream: check the API key (a resource_server \
                     principal's); refusing every token meanwhile"
                );
            }
            End::Failed(error) => tracing::warn!(%error, "stint revocation stream failed; reconnecting"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn connect(shared: &Shared, settings: &Settings, pruned: &mut Instant) -> End {
    let mut request = settings
        .http
        .get(settings.url.clone())
        .bearer_auth(settings.api_key.expose_secret())
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    if let Some(id) = shared.last_event_id().or(settings.replay_from) {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut response = match tokio::time::timeout(settings.staleness, request.send()).await {
        Err(_) => return End::Failed("no response within the staleness bound".into()),
        Ok(Err(e)) => return End::Failed(e.to_string()),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return End::Refused(status);
    }
    if !status.is_success() {
        return End::Failed(format!("status {status}"));
    }
    let mut parser = Parser::default();
    let mut greeted = false;
    loop {
        let chunk = match tokio::time::timeout(settings.staleness, response.chunk()).await {
            Err(_) => {
                return End::Closed {
                    heard: greeted,
                    reason: "silent longer than the staleness bound",
                };
            }
            Ok(Err(e)) => return End::Failed(e.to_string()),
            Ok(Ok(None)) => {
                return End::Closed {
                    heard: greeted,
                    reason: "closed by stint",
                };
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        let frames = match parser.feed(&chunk) {
            Ok(frames) => frames,
            Err(e) => return End::Failed(e.to_string()),
        };
        for frame in frames {
            match frame {
                Frame::Comment(_) => greeted = true,
                Frame::Event { id, event, data } => apply(shared, id.as_deref(), &event, &data),
            }
        }
        // A connection is trusted from its first comment (`: connected`, else a keep-alive) on, and
        // only once the events before it in the same chunk are applied: when stint replays missed
        // events before greeting, none of them is ever missing while the guard says healthy.
        if greeted {
            shared.health.alive();
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            *pruned = Instant::now();
            shared.write_revoked().prune(shared.clock.now_unix());
        }
    }
}

fn apply(shared: &Shared, id: Option<&str>, event: &str, data: &str) {
    let id_num = id.and_then(|id| id.parse::<u64>().ok());
    if id.is_some() && id_num.is_none() {
        tracing::warn!(id, "stint event id is not a number; not resuming from it");
    }
    if !data.is_empty() {
        match read_event(event, data) {
            Ok(Some(change)) => {
                let now = shared.clock.now_unix();
                shared.write_revoked().apply(&change, now, shared.retention_secs);
                tracing::debug!(
                    id,
                    event,
                    sid = change.sid.as_deref(),
                    jtis = change.jtis.len(),
                    "revoked"
                );
            }
            Ok(None) => tracing::trace!(id, event, "event ignored"),
            Err(e) => tracing::error!(id, event, error = %e, "unreadable revocation event skipped"),
        }
    }
    if let Some(n) = id_num {
        shared.seen_event(n);
    }
}

/// Exponential backoff with jitter between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn exhaust(&mut self) {
        self.next = BACKOFF_MAX;
    }

    /// A delay in `[next/2, next]`, doubling `next` up to the cap.
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let half = d / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in `[0, 1)`.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
        b.exhaust();
        assert!(b.next_delay() >= BACKOFF_MAX / 2);
    }
}
