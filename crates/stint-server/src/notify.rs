//! Outgoing notifications: a break-glass session starting is POSTed at once to a configured webhook,
//! signed like incoming hooks (`X-Stint-Signature: sha256=<hex HMAC-SHA256 of the body>`,
//! `X-Stint-Timestamp`, `X-Stint-Event-Id`), retried a few times with backoff.

use std::time::Duration;

/// Attempts per notification.
pub const ATTEMPTS: u32 = 4;

/// Sends `body` to `url`, signed with `secret`; `Ok` on a 2xx answer. Returns the attempts made.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &[u8],
    event_id: &str,
    timestamp: i64,
    body: &serde_json::Value,
) -> Result<u32, String> {
    let raw = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let signature = crate::hooks::sign(secret, &raw);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let res = http
            .post(url)
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .header("x-stint-signature", &signature)
            .header("x-stint-timestamp", timestamp.to_string())
            .header("x-stint-event-id", event_id)
            .body(raw.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            Ok(r) => last = format!("the webhook answered {}", r.status()),
            Err(e) if e.is_timeout() => last = "the webhook timed out".into(),
            Err(_) => last = "the webhook could not be reached".into(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
        }
    }
    Err(last)
}
