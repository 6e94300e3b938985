//! Prometheus metrics: names, the recorder, and the helpers the service calls.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stint_core::{EndReason, Session, State};
use time::OffsetDateTime;

/// Gauge: sessions active on this node.
pub const SESSIONS_ACTIVE: &str = "stint_sessions_active";
/// Counter: sessions requested.
pub const SESSIONS_REQUESTED: &str = "stint_sessions_requested_total";
/// Counter: sessions ended, by `reason`.
pub const SESSIONS_ENDED: &str = "stint_sessions_ended_total";
/// Counter: sessions that reached another final state, by `state`.
pub const SESSIONS_CLOSED: &str = "stint_sessions_closed_total";
/// Counter: credentials issued, by `kind`.
pub const CREDENTIALS_ISSUED: &str = "stint_credentials_issued_total";
/// Counter: single credentials revoked on request, by `kind`.
pub const CREDENTIALS_REVOKED: &str = "stint_credentials_revoked_total";
/// Counter: introspections, by `result` (`active`/`inactive`).
pub const INTROSPECTIONS: &str = "stint_introspections_total";
/// Histogram: seconds from a deadline (or idle timeout) to the session's credentials being dead.
pub const REVOCATION_LAG: &str = "stint_revocation_lag_seconds";
/// Counter: audit events written.
pub const AUDIT_EVENTS: &str = "stint_audit_events_total";
/// Gauge: 1 when the audit chain verified at start, 0 when it did not.
pub const AUDIT_CHAIN_OK: &str = "stint_audit_chain_ok";
/// Gauge: revocations of external credentials queued or running on this node.
pub const REVOCATIONS_PENDING: &str = "stint_revocations_pending";
/// Counter: failed revocation attempts, by `kind`.
pub const REVOCATION_FAILURES: &str = "stint_revocation_failures_total";
/// Counter: revocations confirmed by the target system, by `kind`.
pub const REVOCATIONS_CONFIRMED: &str = "stint_revocations_confirmed_total";
/// Counter: zombies found (and revoked) by the reconcile sweep, by `kind`.
pub const RECONCILE_ZOMBIES: &str = "stint_reconcile_zombies_total";
/// Counter: HTTP requests, by matched `path` and `status`.
pub const HTTP_REQUESTS: &str = "stint_http_requests_total";

/// The process-wide recorder (installed once; later calls share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REVOCATION_LAG.to_owned()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (tests embedding several servers).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts audit events written.
pub fn audit_written(n: usize) {
    metrics::counter!(AUDIT_EVENTS).increment(n as u64);
}

/// Records a state change: ends by reason and, for timer-driven ends, the revocation lag.
pub fn session_state_changed(old: &Session, new: &Session, now: OffsetDateTime) {
    match new.state {
        State::Ended => {
            let reason = new.end_reason.map_or("unknown", |r| r.as_str());
            metrics::counter!(SESSIONS_ENDED, "reason" => reason).increment(1);
            let due = match new.end_reason {
                Some(EndReason::Deadline) => old.expires_at,
                Some(EndReason::Idle) => old.idle_deadline(),
                _ => None,
            };
            if let Some(due) = due {
                let lag = (now - due).as_seconds_f64().max(0.0);
                metrics::histogram!(REVOCATION_LAG).record(lag);
            }
        }
        State::Denied | State::Canceled | State::Expired => {
            metrics::counter!(SESSIONS_CLOSED, "state" => new.state.as_str()).increment(1);
        }
        _ => {}
    }
}
