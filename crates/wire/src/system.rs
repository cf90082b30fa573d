//! Types of the toolbox's system routes: `/system/*`.

use serde::{Deserialize, Serialize};

/// Response of `GET /system/metrics`: the sandbox's resource use at one moment. Byte counts
/// are JSON integers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemMetrics {
    /// CPUs the sandbox may use: its CPU quota rounded up, at most the CPUs it can run on.
    pub cpu_count: u64,
    /// CPU time used since the previous sample, as a percentage of `cpuCount` CPUs (0 to 100).
    pub cpu_used_pct: f64,
    /// The sandbox's memory limit, or the machine's memory when it has none.
    pub mem_total: u64,
    /// Memory in use, without page cache that can be reclaimed.
    pub mem_used: u64,
    /// Page cache charged to the sandbox.
    pub mem_cache: u64,
    /// Size of the file system of `/`.
    pub disk_total: u64,
    pub disk_used: u64,
    /// Space available to unprivileged users.
    pub disk_free: u64,
    /// Time of the sample, RFC 3339.
    pub timestamp: String,
    /// Time of the sample, in seconds since the Unix epoch.
    pub timestamp_unix: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_camel_case_with_integer_bytes() {
        let metrics = SystemMetrics {
            cpu_count: 2,
            cpu_used_pct: 12.5,
            mem_total: 1024,
            mem_used: 512,
            mem_cache: 64,
            disk_total: 4096,
            disk_used: 1024,
            disk_free: 3072,
            timestamp: "2026-01-01T00:00:00.000Z".to_owned(),
            timestamp_unix: 1_767_225_600,
        };
        let value = serde_json::to_value(metrics).unwrap();
        for key in [
            "cpuCount",
            "memTotal",
            "memUsed",
            "memCache",
            "diskTotal",
            "diskUsed",
            "diskFree",
            "timestampUnix",
        ] {
            assert!(value[key].is_u64() || value[key].is_i64(), "{key}: {value}");
        }
        assert_eq!(value["cpuUsedPct"], 12.5);
        assert_eq!(value["timestamp"], "2026-01-01T00:00:00.000Z");
    }
}
