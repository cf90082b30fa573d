"""The sandbox's resource use through the official SDK (`get_metrics_latest`)."""

import time

CGROUP_MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
)


def test_get_metrics_latest(sandbox):
    metrics = sandbox.get_metrics_latest()
    assert metrics.cpu_count >= 1
    assert 0.0 <= metrics.cpu_used_pct <= 100.0
    assert metrics.mem_total > 0
    assert 0 < metrics.mem_used <= metrics.mem_total
    assert metrics.mem_cache >= 0
    assert metrics.disk_total > 0
    assert 0 < metrics.disk_used <= metrics.disk_total
    assert abs(metrics.timestamp.timestamp() - time.time()) < 120


def test_metrics_report_the_sandbox_limits(sandbox):
    """Memory is the sandbox's cgroup limit (when it has one), not the machine's."""
    limit = sandbox.process.exec(CGROUP_MEMORY_LIMIT).result.strip()
    metrics = sandbox.get_metrics_latest()
    if limit.isdigit() and int(limit) < 1 << 62:
        assert metrics.mem_total == int(limit)
    cpus = int(sandbox.process.exec("nproc").result.strip())
    assert metrics.cpu_count <= cpus


def test_cpu_use_rises_with_a_busy_process(sandbox):
    sandbox.process.exec("timeout 4 sh -c 'while :; do :; done' >/dev/null 2>&1 &")
    time.sleep(0.5)
    sandbox.get_metrics_latest()
    time.sleep(1.0)
    metrics = sandbox.get_metrics_latest()
    # One busy process would keep one CPU busy; other work on the machine takes a share, so
    # only a clear rise is checked.
    assert metrics.cpu_used_pct >= 10.0, metrics
