//! What the bulk scenarios ([`crate::expiry`], [`crate::scale`]) share: many independent requests over a
//! few keep-alive connections with progress on stderr ([`bulk`]), the server's resident memory from
//! `/proc/<pid>/status` ([`RssSampler`]), a Prometheus text reader ([`metric`]), the wall clock
//! ([`unix_now`]) and RFC 3339 timestamps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::histogram::Summary;
use crate::http::{BaseUrl, Conn};
use crate::load::{LoadSpec, OpError, Worker, closed_loop};

/// One bulk operation in flight, borrowing its worker's connection.
pub type OpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'a>>;

/// How one bulk phase runs.
#[derive(Debug, Clone, Copy)]
pub struct BulkSpec {
    /// Names the phase in progress lines and errors.
    pub label: &'static str,
    /// Operations, numbered `0..n`, each run once.
    pub n: usize,
    /// Workers, each with its own keep-alive connection.
    pub concurrency: usize,
    /// No operation starts after this much time (the phase's timeout).
    pub limit: Duration,
    /// Stop early once more than this fraction of operations failed (after 10 failures).
    pub max_error_ratio: f64,
}

impl BulkSpec {
    /// `n` operations over `concurrency` connections, within `limit`, stopping above 1 % failures.
    pub fn new(label: &'static str, n: usize, concurrency: usize, limit: Duration) -> Self {
        Self {
            label,
            n,
            concurrency,
            limit,
            max_error_ratio: 0.01,
        }
    }
}

/// What a bulk phase did.
#[derive(Debug)]
pub struct Bulk<T> {
    /// Operation `i`'s result at index `i`; `None` where it failed or never ran.
    pub items: Vec<Option<T>>,
    /// What is reported.
    pub report: PhaseReport,
}

/// A bulk phase's figures, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Operations asked for.
    pub requested: usize,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the phase, in seconds.
    pub elapsed_s: f64,
    /// Successful operations per second.
    pub per_s: f64,
    /// Latency of the successful operations.
    pub latency: Summary,
    /// Distinct failure messages, first few.
    pub error_samples: Vec<String>,
    /// Why the phase stopped before every operation ran, if it did.
    pub stopped: Option<String>,
}

impl PhaseReport {
    /// `ok` of `requested` at `per_s`, and the first error if any: for one-line summaries.
    pub fn brief(&self) -> String {
        let mut s = format!(
            "{}/{} in {:.1} s ({:.0}/s, p99 {:.1} ms)",
            self.ok, self.requested, self.elapsed_s, self.per_s, self.latency.p99_ms
        );
        if self.errors > 0 {
            s.push_str(&format!(", {} errors", self.errors));
        }
        if let Some(first) = self.error_samples.first() {
            s.push_str(&format!(" (first: {first})"));
        }
        s
    }
}

struct BulkWorker<T, F> {
    conn: Conn,
    op: Arc<F>,
    slots: Arc<Mutex<Vec<Option<T>>>>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl<T, F> Worker for BulkWorker<T, F>
where
    T: Send + 'static,
    F: for<'a> Fn(&'a mut Conn, usize) -> OpFuture<'a, T> + Send + Sync + 'static,
{
    async fn call(&mut self, seq: u64) -> Result<(), OpError> {
        let i = usize::try_from(seq).map_err(|_| OpError::new("operation number out of range"))?;
        let result = (self.op)(&mut self.conn, i).await;
        match result {
            Ok(item) => {
                if let Some(slot) = self
                    .slots
                    .lock()
                    .map_err(|_| OpError::new("poisoned results"))?
                    .get_mut(i)
                {
                    *slot = Some(item);
                }
                self.done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// How often long phases report progress on stderr.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs operations `0..spec.n` of `op`, each once, over `spec.concurrency` keep-alive connections (a closed
/// loop), printing progress to stderr every [`PROGRESS_EVERY`]. Failures are counted; the phase fails only
/// when the connections cannot be opened.
pub async fn bulk<T, F>(base: &BaseUrl, spec: BulkSpec, op: F) -> anyhow::Result<Bulk<T>>
where
    T: Send + 'static,
    F: for<'a> Fn(&'a mut Conn, usize) -> OpFuture<'a, T> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let slots = Arc::new(Mutex::new(
        std::iter::repeat_with(|| None).take(spec.n).collect::<Vec<_>>(),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(spec.concurrency.max(1));
    for _ in 0..spec.concurrency.max(1) {
        let conn = Conn::open(base)
            .await
            .with_context(|| format!("{}: connecting to {base}", spec.label))?;
        workers.push(BulkWorker {
            conn,
            op: Arc::clone(&op),
            slots: Arc::clone(&slots),
            done: Arc::clone(&done),
            failed: Arc::clone(&failed),
        });
    }
    let progress = tokio::spawn({
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        let begun = Instant::now();
        async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let ok = done.load(Ordering::Relaxed);
                let secs = begun.elapsed().as_secs_f64();
                eprintln!(
                    "  {}: {ok}/{} after {secs:.0} s ({:.0}/s, {} errors)",
                    spec.label,
                    spec.n,
                    ok as f64 / secs.max(1e-9),
                    failed.load(Ordering::Relaxed)
                );
            }
        }
    });
    let load = LoadSpec {
        max_error_ratio: spec.max_error_ratio,
        op_timeout: Duration::from_secs(30),
        ..LoadSpec::for_duration(spec.limit)
    }
    .with_max_requests(Some(spec.n as u64));
    let result = closed_loop(load, workers).await;
    progress.abort();
    let items = slots
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let started = result.ops + result.errors;
    let stopped = result.aborted.clone().or_else(|| {
        (started < spec.n as u64).then(|| {
            format!(
                "timed out after {:.0} s with {started} of {} operations started",
                spec.limit.as_secs_f64(),
                spec.n
            )
        })
    });
    let report = PhaseReport {
        requested: spec.n,
        ok: result.ops,
        errors: result.errors,
        elapsed_s: result.elapsed.as_secs_f64(),
        per_s: result.ops_per_sec(),
        latency: result.histogram.summary(),
        error_samples: result.error_samples,
        stopped,
    };
    Ok(Bulk { items, report })
}

/// `k` indices spread evenly over `0..n` (all of them when `k >= n`), first and last included.
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    if k == 1 {
        return vec![0];
    }
    (0..k).map(|i| i * (n - 1) / (k - 1)).collect()
}

// ----- server memory ---------------------------------------------------------------------------------

/// Why a process's resident memory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RssError {
    /// `/proc/<pid>/status` could not be read (no such process, or not Linux).
    #[error("cannot read `/proc/{pid}/status`: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// The file has no `VmRSS:` line (a kernel thread, or a zombie).
    #[error("`/proc/{pid}/status` has no `VmRSS` line")]
    Missing {
        /// The process.
        pid: u32,
    },
}

/// The `VmRSS:` figure of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let value = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, RssError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| RssError::Read { pid, source })?;
    parse_vm_rss_kib(&text).ok_or(RssError::Missing { pid })
}

/// A server's resident memory over a run, as written to `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RssReport {
    /// The server process.
    pub pid: u32,
    /// Before the run, in KiB.
    pub before_kib: u64,
    /// Highest reading during the run (every [`RSS_EVERY`]), in KiB.
    pub peak_kib: u64,
    /// At the end of the run, in KiB.
    pub after_kib: u64,
}

impl RssReport {
    /// `before → peak → after` in MiB.
    pub fn brief(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "RSS {:.0} → peak {:.0} → {:.0} MiB",
            mib(self.before_kib),
            mib(self.peak_kib),
            mib(self.after_kib)
        )
    }
}

/// How often [`RssSampler`] reads.
pub const RSS_EVERY: Duration = Duration::from_millis(100);

/// Reads a process's resident memory now and every [`RSS_EVERY`] until [`RssSampler::finish`], keeping
/// the peak.
#[derive(Debug)]
pub struct RssSampler {
    pid: u32,
    before: u64,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`; `None` when no pid is given. Fails when the process cannot be read now.
    pub fn start(pid: Option<u32>) -> Result<Option<Self>, RssError> {
        let Some(pid) = pid else { return Ok(None) };
        let before = rss_kib(pid)?;
        let peak = Arc::new(AtomicU64::new(before));
        let task = tokio::spawn({
            let peak = Arc::clone(&peak);
            async move {
                let mut every = tokio::time::interval(RSS_EVERY);
                loop {
                    every.tick().await;
                    // A failed read (the process just exited) keeps the peak seen so far.
                    if let Ok(now) = rss_kib(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Some(Self {
            pid,
            before,
            peak,
            task,
        }))
    }

    /// The reading taken at start, in KiB.
    pub fn before_kib(&self) -> u64 {
        self.before
    }

    /// Stops sampling and reads once more.
    pub fn finish(self) -> Result<RssReport, RssError> {
        self.task.abort();
        let after = rss_kib(self.pid)?;
        Ok(RssReport {
            pid: self.pid,
            before_kib: self.before,
            peak_kib: self.peak.load(Ordering::Relaxed).max(after),
            after_kib: after,
        })
    }
}

// ----- metrics -----------------------------------------------------------------------------------------

/// The sum of every sample of `name` in a Prometheus text exposition whose labels include all of
/// `labels`; `None` when no sample matches (a labelled counter appears only once it was first counted).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let has = |(k, v): &(&str, &str)| {
            label_text
                .split(',')
                .any(|pair| pair.trim() == format!("{k}=\"{v}\""))
        };
        if !labels.iter().all(has) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ----- wall clock and RFC 3339 -------------------------------------------------------------------------

/// Seconds since the Unix epoch, now. Deadlines are wall-clock times the server judges by its own clock;
/// client and server share the machine's.
#[expect(
    clippy::disallowed_methods,
    reason = "the load generator measures against the server's wall clock; this is its one clock"
)]
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until the wall clock reads `unix_s` (at once if it already passed).
pub async fn sleep_until_unix(unix_s: f64) {
    let left = unix_s - unix_now();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// `unix_s` (whole seconds) as RFC 3339 in UTC: `2026-01-02T03:04:05Z`.
pub fn rfc3339(unix_s: i64) -> String {
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses RFC 3339 (`2026-01-02T03:04:05.123456789Z`, or with a `±hh:mm` offset) into seconds since the
/// Unix epoch; `None` if it is not that shape.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut frac = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset_s = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let at = s.len() - rest.len();
            let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let mo = u32::try_from(mo).ok()?;
    let d = u32::try_from(d).ok()?;
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs as f64 + frac)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // INVARIANT: d in 1..=31 and m in 1..=12, so both fit.
    (y, m as u32, d as u32)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let (m, d) = (i64::from(m), i64::from(d));
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_proc_status_text() {
        let status =
            "Name:\tstint\nUmask:\t0022\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(123_456));
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\nVmPeak:\t1 kB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None, "an unknown unit");
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
        // This process is resident: some memory, and more than a page.
        let own = rss_kib(std::process::id()).unwrap();
        assert!(own > 4, "{own}");
        assert!(matches!(rss_kib(u32::MAX), Err(RssError::Read { .. })));
    }

    #[tokio::test]
    async fn rss_sampler_keeps_the_peak_and_reports_nothing_without_a_pid() {
        assert!(RssSampler::start(None).unwrap().is_none());
        let sampler = RssSampler::start(Some(std::process::id())).unwrap().unwrap();
        tokio::time::sleep(RSS_EVERY * 3).await;
        let report = sampler.finish().unwrap();
        assert_eq!(report.pid, std::process::id());
        assert!(report.before_kib > 0 && report.after_kib > 0);
        assert!(report.peak_kib >= report.before_kib.max(report.after_kib));
        assert!(report.brief().starts_with("RSS "), "{}", report.brief());
    }

    #[test]
    fn metrics_are_summed_over_matching_label_sets() {
        let text = "\
# TYPE stint_sessions_ended_total counter
stint_sessions_ended_total{reason=\"deadline\"} 95
stint_sessions_ended_total{reason=\"completed\"} 5
stint_sessions_ended_total_extra 1000
# TYPE stint_sessions_active gauge
stint_sessions_active 12
stint_http_requests_total{path=\"/v1/sessions\",status=\"201\"} 7
stint_http_requests_total{path=\"/v1/sessions\",status=\"409\"} 2
";
        let ended = |reason| metric(text, "stint_sessions_ended_total", &[("reason", reason)]);
        assert_eq!(ended("deadline"), Some(95.0));
        assert_eq!(ended("idle"), None);
        assert_eq!(metric(text, "stint_sessions_ended_total", &[]), Some(100.0));
        assert_eq!(metric(text, "stint_sessions_active", &[]), Some(12.0));
        assert_eq!(
            metric(text, "stint_http_requests_total", &[("status", "409")]),
            Some(2.0)
        );
        assert_eq!(
            metric(text, "stint_sessions", &[]),
            None,
            "a prefix is not a name"
        );
    }

    #[test]
    fn rfc3339_formats_and_parses_utc_and_offsets() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z"), Some(1_709_210_096.0));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.25Z"), Some(1_709_210_096.25));
        assert_eq!(
            parse_rfc3339("2024-02-29T14:34:56.5+02:00"),
            Some(1_709_210_096.5)
        );
        assert_eq!(parse_rfc3339("2024-02-29T07:34:56-05:00"), Some(1_709_210_096.0));
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29T12:34:56",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0200",
            "2024-02-29T1a:34:56Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // Every day over four centuries (leap years and the 100/400 rules) survives a round trip.
        for day in (-200 * 366)..(200 * 366) {
            let t = day * 86_400 + 3723;
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t as f64), "{}", rfc3339(t));
        }
    }

    #[test]
    fn spread_picks_first_last_and_evenly_between() {
        assert_eq!(spread(10, 3), [0, 4, 9]);
        assert_eq!(spread(3, 5), [0, 1, 2]);
        assert_eq!(spread(100, 1), [0]);
        assert!(spread(0, 4).is_empty());
        let picks = spread(100_000, 200);
        assert_eq!(picks.len(), 200);
        assert!(picks.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(picks.last(), Some(&99_999));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_runs_each_operation_once_and_keeps_results_by_index() {
        use axum::Router;
        use axum::routing::post;
        let app = Router::new().route(
            "/echo",
            post(|body: String| async move {
                if body == "13" {
                    Err(axum::http::StatusCode::CONFLICT)
                } else {
                    Ok(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = BaseUrl::parse(&format!("http://{addr}")).unwrap();
        let spec = BulkSpec {
            max_error_ratio: 0.5,
            ..BulkSpec::new("echo", 50, 4, Duration::from_secs(30))
        };
        let done = bulk(&base, spec, |conn, i| {
            Box::pin(async move {
                let body = crate::http::Body::Json(i.to_string().into());
                let answer = conn
                    .send(hyper::Method::POST, "/echo", crate::http::Auth::None, body)
                    .await?
                    .expect(&[200])?;
                Ok(String::from_utf8_lossy(&answer.body).into_owned())
            })
        })
        .await
        .unwrap();
        assert_eq!((done.report.ok, done.report.errors), (49, 1));
        assert!(done.report.stopped.is_none(), "{:?}", done.report.stopped);
        assert_eq!(done.items.len(), 50);
        for (i, item) in done.items.iter().enumerate() {
            let want = (i != 13).then(|| i.to_string());
            assert_eq!(item, &want);
        }
        assert!(done.report.error_samples[0].starts_with("status 409"));
    }
}
