//! The load generator's own CPU use, so a report can say when the client, not the server, was the
//! bottleneck. Reads user + system time of the whole process (all threads) from `/proc/self/stat`
//! (Linux); clock ticks are taken as 100 per second (the Linux default) unless `STINT_BENCH_CLK_TCK` says
//! otherwise.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Above this fraction of the machine's cores the client may be what limits the figure.
pub const CLIENT_BOUND_FRACTION: f64 = 0.25;

/// Why the process's CPU time could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// `/proc/self/stat` could not be read (not Linux?).
    #[error("cannot read `/proc/self/stat`: {0}")]
    Read(#[from] std::io::Error),
    /// The file did not have the expected shape.
    #[error("unexpected `/proc/self/stat` contents")]
    Parse,
}

/// Measures the process's CPU time over an interval of wall time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    started: Instant,
    ticks: u64,
    ticks_per_sec: u64,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> Result<Self, CpuError> {
        Ok(Self {
            started: Instant::now(),
            ticks: process_ticks()?,
            ticks_per_sec: ticks_per_sec(),
        })
    }

    /// CPU and wall time since [`CpuMeter::start`].
    pub fn read(&self) -> Result<CpuUsage, CpuError> {
        let ticks = process_ticks()?.saturating_sub(self.ticks);
        Ok(CpuUsage {
            cpu: Duration::from_secs_f64(ticks as f64 / self.ticks_per_sec as f64),
            wall: self.started.elapsed(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }
}

/// CPU used over some wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// User + system time of every thread of this process (at clock-tick resolution, 10 ms by default).
    pub cpu: Duration,
    /// Wall time it was measured over.
    pub wall: Duration,
    /// Cores available to this process.
    pub cores: usize,
}

impl CpuUsage {
    /// CPU time per wall time: 1.0 is one core busy all along.
    pub fn cores_used(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall > 0.0 {
            self.cpu.as_secs_f64() / wall
        } else {
            0.0
        }
    }

    /// [`CpuUsage::cores_used`] as a fraction of the cores available.
    pub fn machine_fraction(&self) -> f64 {
        self.cores_used() / self.cores.max(1) as f64
    }

    /// Whether the client used more than [`CLIENT_BOUND_FRACTION`] of the machine.
    pub fn client_bound(&self) -> bool {
        self.machine_fraction() > CLIENT_BOUND_FRACTION
    }

    /// The figures a report shows.
    pub fn summary(&self) -> CpuSummary {
        CpuSummary {
            cpu_s: self.cpu.as_secs_f64(),
            wall_s: self.wall.as_secs_f64(),
            cores: self.cores,
            cores_used: self.cores_used(),
            machine_fraction: self.machine_fraction(),
            client_bound: self.client_bound(),
        }
    }
}

/// [`CpuUsage`] as reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuSummary {
    /// CPU seconds of the client process.
    pub cpu_s: f64,
    /// Wall seconds measured over.
    pub wall_s: f64,
    /// Cores available.
    pub cores: usize,
    /// CPU seconds per wall second.
    pub cores_used: f64,
    /// `cores_used / cores`.
    pub machine_fraction: f64,
    /// More than a quarter of the machine: the figure may be limited by the client.
    pub client_bound: bool,
}

fn ticks_per_sec() -> u64 {
    std::env::var("STINT_BENCH_CLK_TCK")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

fn process_ticks() -> Result<u64, CpuError> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat")?)
}

/// utime + stime (fields 14 and 15 of `proc(5)`) from a `/proc/<pid>/stat` line. The command name (field
/// 2) sits in parentheses and may itself hold spaces and parentheses, so fields are counted from the last
/// `)`.
fn parse_stat(stat: &str) -> Result<u64, CpuError> {
    let (_, rest) = stat.rsplit_once(')').ok_or(CpuError::Parse)?;
    // `rest` starts at field 3 (state): fields 14 and 15 are its 12th and 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or(CpuError::Parse)
    };
    let user = next()?;
    let system = next()?;
    Ok(user + system)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "4242 (a b) c)) R 1 4242 4242 0 -1 4194560 1593 0 0 0 1234 56 0 0 20 0 3 0 9 1 2 3\n";
        assert_eq!(parse_stat(line).unwrap(), 1234 + 56);
        assert!(parse_stat("4242 (x) R 1 2").is_err());
        assert!(parse_stat("no parenthesis").is_err());
    }

    #[test]
    fn busy_loop_raises_cpu_time() {
        let meter = CpuMeter::start().unwrap();
        let begun = Instant::now();
        let mut x = 0u64;
        // Spin until the meter sees 100 ms of CPU (a few ticks); a shared machine may deschedule us, so
        // allow generous wall time, but a meter that never moves fails.
        let usage = loop {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            let usage = meter.read().unwrap();
            if usage.cpu >= Duration::from_millis(100) || begun.elapsed() > Duration::from_secs(10) {
                break usage;
            }
        };
        assert!(usage.cpu >= Duration::from_millis(100), "{usage:?}");
        assert!(usage.cores_used() > 0.0 && usage.cores >= 1);
        let summary = usage.summary();
        assert_eq!(
            summary.client_bound,
            summary.machine_fraction > CLIENT_BOUND_FRACTION
        );
    }

    #[test]
    fn machine_fraction_and_client_bound() {
        let quarter = CpuUsage {
            cpu: Duration::from_secs(1),
            wall: Duration::from_secs(2),
            cores: 2,
        };
        assert!((quarter.cores_used() - 0.5).abs() < 1e-9);
        assert!((quarter.machine_fraction() - 0.25).abs() < 1e-9);
        assert!(
            !quarter.client_bound(),
            "exactly a quarter is not more than a quarter"
        );
        let busy = CpuUsage {
            cpu: Duration::from_secs(3),
            ..quarter
        };
        assert!(busy.client_bound());
        let nothing = CpuUsage {
            cpu: Duration::ZERO,
            wall: Duration::ZERO,
            cores: 0,
        };
        assert_eq!(nothing.machine_fraction(), 0.0);
    }
}
