//! `GET /system/metrics`: the sandbox's CPU, memory and disk use.
//!
//! Limits and usage come from the sandbox's cgroups (see [`cgroup`]); what they do not give
//! comes from `/proc` and from `statvfs` of `/`. Outside a sandbox, in the daemon's own tests,
//! the same code reads the daemon's cgroups and the machine's `/proc`.

mod cgroup;
mod procfs;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use daytona_wire::system::SystemMetrics;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::cgroup::Cgroup;
use super::error::ApiError;
use super::state::Toolbox;

/// Shortest window over which CPU use is measured. A request that comes sooner after the
/// previous one (or first) waits this long to take a second sample.
const MIN_CPU_WINDOW: Duration = Duration::from_millis(200);

/// Maximum window: a previous sample older than this is not used, so that the figure
/// describes the recent past.
const MAX_CPU_WINDOW: Duration = Duration::from_secs(60);

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The last CPU sample, which the next request measures from.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Mutex<Option<CpuSample>>,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    used: Duration,
}

impl CpuSampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// CPU use since the previous sample, as a percentage of `cpus` CPUs, measured over a
    /// fresh window when the previous sample is too recent or too old.
    async fn percent(&self, cgroup: Option<Cgroup>, cpus: u64) -> f64 {
        let read = move || {
            let used = cgroup
                .as_ref()
                .and_then(Cgroup::cpu_usage)
                .or_else(procfs::visible_processes_cpu_time)?;
            Some(CpuSample {
                at: Instant::now(),
                used,
            })
        };
        let Some(now) = sample(read.clone()).await else {
            return 0.0;
        };
        let previous = self.replace(now);
        let usable = previous.filter(|previous| {
            let window = now.at.duration_since(previous.at);
            (MIN_CPU_WINDOW..=MAX_CPU_WINDOW).contains(&window)
        });
        let (start, end) = match usable {
            Some(previous) => (previous, now),
            None => {
                tokio::time::sleep(MIN_CPU_WINDOW).await;
                let Some(end) = sample(read).await else {
                    return 0.0;
                };
                self.replace(end);
                (now, end)
            }
        };
        cpu_percent(start, end, cpus)
    }

    fn replace(&self, sample: CpuSample) -> Option<CpuSample> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(sample)
    }
}

async fn sample(read: impl FnOnce() -> Option<CpuSample> + Send + 'static) -> Option<CpuSample> {
    tokio::task::spawn_blocking(read).await.ok().flatten()
}

/// Percentage of `cpus` CPUs used between two samples, from 0 to 100, to two decimals.
fn cpu_percent(start: CpuSample, end: CpuSample, cpus: u64) -> f64 {
    let wall = end.at.duration_since(start.at).as_secs_f64() * cpus.max(1) as f64;
    if wall <= 0.0 {
        return 0.0;
    }
    let used = end.used.saturating_sub(start.used).as_secs_f64();
    let percent = (used / wall * 100.0).clamp(0.0, 100.0);
    (percent * 100.0).round() / 100.0
}

/// Returns the sandbox's resource use now: CPUs and CPU use, memory limit and use, and the
/// size and use of the file system of `/`. `cpuUsedPct` covers the time since the previous
/// call if that was 0.2 to 60 seconds ago, and otherwise a 0.2 second window that the call
/// waits for.
#[utoipa::path(get, path = "/system/metrics", tag = "system",
    responses((status = 200, body = SystemMetrics), (status = 500, body = daytona_wire::ErrorBody)))]
async fn metrics(State(toolbox): State<Arc<Toolbox>>) -> Result<Json<SystemMetrics>, ApiError> {
    let cgroup = tokio::task::spawn_blocking(Cgroup::discover)
        .await
        .map_err(|error| ApiError::internal("failed to read the cgroups", &error))?;
    let cpus = cpu_count(cgroup.as_ref());
    let cpu_used_pct = toolbox.cpu_sampler.percent(cgroup.clone(), cpus).await;
    let (memory, disk) = tokio::task::spawn_blocking(move || (memory(cgroup.as_ref()), disk()))
        .await
        .map_err(|error| ApiError::internal("failed to read the memory use", &error))?;
    let disk = disk?;

    let now = OffsetDateTime::now_utc();
    Ok(Json(SystemMetrics {
        cpu_count: cpus,
        cpu_used_pct,
        mem_total: memory.total,
        mem_used: memory.used,
        mem_cache: memory.cache,
        disk_total: disk.total,
        disk_used: disk.used,
        disk_free: disk.free,
        timestamp: daytona_wire::rfc3339(now),
        timestamp_unix: now.unix_timestamp(),
    }))
}

/// CPUs the sandbox may use: its quota rounded up, at most the CPUs it may run on.
fn cpu_count(cgroup: Option<&Cgroup>) -> u64 {
    let usable = procfs::usable_cpus();
    match cgroup.and_then(Cgroup::cpu_quota) {
        Some(quota) => (quota.ceil() as u64).clamp(1, usable),
        None => usable,
    }
}

/// Memory figures of the response, in bytes.
struct Memory {
    total: u64,
    used: u64,
    cache: u64,
}

/// Reads the sandbox's memory: its group's limit and use, or the machine's where the group
/// gives none.
fn memory(cgroup: Option<&Cgroup>) -> Memory {
    let machine = procfs::machine_memory();
    let machine_total = machine.map_or(0, |machine| machine.total);
    match cgroup.and_then(Cgroup::memory) {
        Some(group) => {
            let total = match group.limit {
                Some(limit) if machine_total > 0 => limit.min(machine_total),
                Some(limit) => limit,
                None => machine_total,
            };
            Memory {
                total,
                used: group.used,
                cache: group.cache,
            }
        }
        None => Memory {
            total: machine_total,
            used: machine.map_or(0, |machine| machine.used),
            cache: machine.map_or(0, |machine| machine.cache),
        },
    }
}

/// Disk figures of the response, in bytes.
struct Disk {
    total: u64,
    used: u64,
    free: u64,
}

fn disk() -> Result<Disk, ApiError> {
    let stat = nix::sys::statvfs::statvfs("/").map_err(|errno| {
        ApiError::internal(
            "failed to read the size of the root file system",
            &std::io::Error::from(errno),
        )
    })?;
    let block = stat.fragment_size();
    Ok(Disk {
        total: stat.blocks() * block,
        used: stat.blocks().saturating_sub(stat.blocks_free()) * block,
        free: stat.blocks_available() * block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64, used_millis: u64) -> CpuSample {
        CpuSample {
            at: start + Duration::from_millis(millis),
            used: Duration::from_millis(used_millis),
        }
    }

    #[test]
    fn percent_is_of_all_cpus_and_bounded() {
        let start = Instant::now();
        assert_eq!(cpu_percent(at(start, 0, 0), at(start, 1000, 500), 1), 50.0);
        assert_eq!(cpu_percent(at(start, 0, 0), at(start, 1000, 500), 2), 25.0);
        assert_eq!(
            cpu_percent(at(start, 0, 0), at(start, 1000, 5000), 2),
            100.0
        );
        // A counter that went backwards (a process counted twice before) reads as idle.
        assert_eq!(cpu_percent(at(start, 0, 900), at(start, 1000, 500), 1), 0.0);
    }

    #[test]
    fn cpu_count_follows_the_quota() {
        assert!(cpu_count(None) >= 1);
    }
}
