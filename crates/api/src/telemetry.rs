//! CPU and memory samples of started sandboxes, read from their cgroups at a fixed interval
//! and kept in a bounded ring per sandbox, for `GET /sandbox/{id}/telemetry/metrics`.
//!
//! Samples live in memory only: a server restart starts every history afresh.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use daytona_isolation::cgroup::{CgroupManager, SandboxCgroup};
use daytona_wire::api::SandboxState;
use daytona_wire::telemetry::{MetricDataPoint, MetricSeries, metric};
use time::OffsetDateTime;

use crate::state::AppState;

/// Samples kept per sandbox; the oldest go first. At the default 10 s interval this is two
/// hours of history.
pub const SAMPLES_KEPT: usize = 720;

const GIB: u64 = 1024 * 1024 * 1024;

/// One reading of a sandbox's cgroups.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// CPU time used since the cgroup was created.
    pub cpu_time: Duration,
    /// Memory charged to the cgroup in bytes, page cache included.
    pub memory: u64,
    /// Page cache part of `memory`, when the cgroup reports it.
    pub cache: Option<u64>,
}

/// One sample, as reported.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: OffsetDateTime,
    /// Percent of the CPU limit, over the interval since the previous reading; `None` for the
    /// first reading after a start.
    cpu_percent: Option<f64>,
    cpu_limit: i64,
    memory_used: u64,
    memory_cache: Option<u64>,
    memory_limit: u64,
}

impl Sample {
    fn value(&self, name: &str) -> Option<f64> {
        match name {
            metric::CPU_UTILIZATION => self.cpu_percent,
            metric::CPU_LIMIT => Some(self.cpu_limit as f64),
            metric::MEMORY_USAGE => Some(self.memory_used as f64),
            metric::MEMORY_LIMIT => Some(self.memory_limit as f64),
            metric::MEMORY_CACHE => self.memory_cache.map(|bytes| bytes as f64),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// The previous reading's CPU time and when it was taken, while the sandbox runs.
    previous_cpu: Option<(Instant, Duration)>,
}

/// The samples of every sandbox.
#[derive(Debug, Default)]
pub struct Telemetry {
    rings: Mutex<HashMap<String, Ring>>,
}

impl Telemetry {
    /// Records a reading of a started sandbox with `cpu_limit` vCPUs and `memory_limit_gib`.
    pub fn record(
        &self,
        sandbox_id: &str,
        reading: Reading,
        cpu_limit: i64,
        memory_limit_gib: i64,
    ) {
        self.record_at(
            sandbox_id,
            reading,
            cpu_limit,
            memory_limit_gib,
            Instant::now(),
            OffsetDateTime::now_utc(),
        );
    }

    fn record_at(
        &self,
        sandbox_id: &str,
        reading: Reading,
        cpu_limit: i64,
        memory_limit_gib: i64,
        now: Instant,
        at: OffsetDateTime,
    ) {
        let mut rings = self.rings.lock().expect("telemetry lock");
        let ring = rings.entry(sandbox_id.to_owned()).or_default();
        let cpu_percent = ring.previous_cpu.and_then(|(then, cpu_then)| {
            let wall = now.checked_duration_since(then)?.as_secs_f64();
            // A smaller CPU time means the cgroup was created anew.
            let used = reading.cpu_time.checked_sub(cpu_then)?.as_secs_f64();
            (wall > 0.0 && cpu_limit > 0)
                .then(|| (used / wall / cpu_limit as f64 * 100.0).min(100.0))
        });
        ring.previous_cpu = Some((now, reading.cpu_time));

        let cache = reading.cache.map(|cache| cache.min(reading.memory));
        if ring.samples.len() == SAMPLES_KEPT {
            ring.samples.pop_front();
        }
        ring.samples.push_back(Sample {
            at,
            cpu_percent,
            cpu_limit,
            memory_used: reading.memory - cache.unwrap_or(0),
            memory_cache: cache,
            memory_limit: u64::try_from(memory_limit_gib).unwrap_or(0) * GIB,
        });
    }

    /// Marks a sandbox as not running, so that its next reading starts a new CPU interval.
    fn pause(&self, sandbox_id: &str) {
        if let Some(ring) = self
            .rings
            .lock()
            .expect("telemetry lock")
            .get_mut(sandbox_id)
        {
            ring.previous_cpu = None;
        }
    }

    /// Forgets the samples of sandboxes not in `known`.
    fn retain(&self, known: &HashSet<String>) {
        self.rings
            .lock()
            .expect("telemetry lock")
            .retain(|sandbox_id, _| known.contains(sandbox_id));
    }

    /// Returns the samples of a sandbox between `from` and `to` (both included), one series per
    /// metric of `names` that has any.
    pub fn series(
        &self,
        sandbox_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        names: &[&str],
    ) -> Vec<MetricSeries> {
        let rings = self.rings.lock().expect("telemetry lock");
        let Some(ring) = rings.get(sandbox_id) else {
            return Vec::new();
        };
        names
            .iter()
            .map(|name| MetricSeries {
                metric_name: (*name).to_owned(),
                data_points: ring
                    .samples
                    .iter()
                    .filter(|sample| from <= sample.at && sample.at <= to)
                    .filter_map(|sample| {
                        Some(MetricDataPoint {
                            timestamp: daytona_wire::rfc3339(sample.at),
                            value: sample.value(name)?,
                        })
                    })
                    .collect(),
            })
            .filter(|series| !series.data_points.is_empty())
            .collect()
    }
}

/// Samples every started sandbox each `metrics_interval`, for as long as the server runs.
pub async fn run_sampler(state: AppState) {
    let cgroups = match CgroupManager::detect() {
        Ok(cgroups) => cgroups,
        Err(error) => {
            tracing::warn!(%error, "sandbox metrics are off: the cgroup layout was not found");
            return;
        }
    };
    let mut ticker = tokio::time::interval(state.config.metrics_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if let Err(error) = sample_once(&state, &cgroups).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "failed to sample sandbox metrics"
            );
        }
    }
}

async fn sample_once(state: &AppState, cgroups: &CgroupManager) -> anyhow::Result<()> {
    let sandboxes = state.store.all_sandboxes().await?;
    let known: HashSet<String> = sandboxes.iter().map(|record| record.id.clone()).collect();
    state.telemetry.retain(&known);

    let mut started = Vec::new();
    for record in sandboxes {
        if record.state != SandboxState::Started {
            state.telemetry.pause(&record.id);
            continue;
        }
        // Sandbox ids that are no valid cgroup names have no cgroup to read.
        if let Ok(cgroup) = cgroups.sandbox(&record.id) {
            started.push((record.id, record.cpu, record.memory, cgroup));
        }
    }
    let readings = tokio::task::spawn_blocking(move || {
        started
            .into_iter()
            .filter_map(|(id, cpu, memory, cgroup)| Some((id, cpu, memory, read(&cgroup)?)))
            .collect::<Vec<_>>()
    })
    .await?;
    for (sandbox_id, cpu, memory, reading) in readings {
        state.telemetry.record(&sandbox_id, reading, cpu, memory);
    }
    Ok(())
}

/// Reads a sandbox's cgroups; `None` when they are gone (the sandbox stopped meanwhile).
fn read(cgroup: &SandboxCgroup) -> Option<Reading> {
    Some(Reading {
        cpu_time: cgroup.cpu_usage().ok()?,
        memory: cgroup.memory_usage().ok()?,
        cache: cgroup.dirs().iter().find_map(|dir| page_cache(dir)),
    })
}

/// Reads the page cache from a cgroup directory's `memory.stat`: `total_cache` on cgroup v1 (the
/// group and its descendants), `file` on v2.
fn page_cache(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let field = |name: &str| {
        stat.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    };
    field("total_cache").or_else(|| field("file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_secs: f64, memory: u64, cache: u64) -> Reading {
        Reading {
            cpu_time: Duration::from_secs_f64(cpu_secs),
            memory,
            cache: Some(cache),
        }
    }

    #[test]
    fn cpu_percent_is_of_the_limit() {
        let telemetry = Telemetry::default();
        let start = Instant::now();
        let at = OffsetDateTime::now_utc();
        telemetry.record_at("s", reading(1.0, 100, 10), 2, 1, start, at);
        telemetry.record_at(
            "s",
            reading(2.0, 200, 50),
            2,
            1,
            start + Duration::from_secs(1),
            at + Duration::from_secs(1),
        );

        let series = telemetry.series("s", at, at + Duration::from_secs(1), &metric::ALL);
        let points = |name: &str| {
            series
                .iter()
                .find(|s| s.metric_name == name)
                .map(|s| s.data_points.iter().map(|p| p.value).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        // One second of CPU time in one second of two vCPUs is 50 %.
        assert_eq!(points(metric::CPU_UTILIZATION), vec![50.0]);
        assert_eq!(points(metric::CPU_LIMIT), vec![2.0, 2.0]);
        assert_eq!(points(metric::MEMORY_USAGE), vec![90.0, 150.0]);
        assert_eq!(points(metric::MEMORY_CACHE), vec![10.0, 50.0]);
        assert_eq!(points(metric::MEMORY_LIMIT), vec![GIB as f64, GIB as f64]);
    }

    #[test]
    fn ring_is_bounded_and_filtered_by_time() {
        let telemetry = Telemetry::default();
        let start = Instant::now();
        let at = OffsetDateTime::now_utc();
        for i in 0..SAMPLES_KEPT + 5 {
            let offset = Duration::from_secs(i as u64);
            telemetry.record_at("s", reading(0.0, 1, 0), 1, 1, start + offset, at + offset);
        }
        let all = telemetry.series(
            "s",
            at,
            at + Duration::from_secs(10_000),
            &[metric::CPU_LIMIT],
        );
        assert_eq!(all[0].data_points.len(), SAMPLES_KEPT);
        let window = telemetry.series(
            "s",
            at + Duration::from_secs(100),
            at + Duration::from_secs(102),
            &[metric::CPU_LIMIT],
        );
        assert_eq!(window[0].data_points.len(), 3);
        assert!(telemetry.series("other", at, at, &metric::ALL).is_empty());
    }
}
