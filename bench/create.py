"""Benchmark sandbox creation against bwrap and crun, side by side in one run.

Measures, on the default snapshot's root filesystem:

  (a) server-side create: `POST /api/sandbox` over raw HTTP with keep-alive on loopback, from
      the API receiving the request to its answer (the handler's `Server-Timing: total`; the
      sandbox is started by then), and the client's round trip of the same request;
  (b) create to first exec through the official Python SDK: `Daytona().create()` followed by
      `sandbox.process.exec("true")`;

and as baselines, `bwrap` and `crun` running `/bin/true` on the same root filesystem. Prints the
median and p95 of each, and the ratios to bwrap. The sandbox measurements run with and without
sandbox networking (an uplink of `none`: links, rules and resolver, but no egress).

Run as root, with DAYTONA_BIN, DAYTONA_DAEMON_BIN and DAYTONA_IMAGE_CACHE set (scripts/bench
sets them). Sandboxes are deleted between samples, outside the timed part.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

from daytona_server import Server  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run_timed(argv: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({completed.returncode}): {completed.stderr.decode()[-500:]}")
    return elapsed


def bwrap_samples(rootfs: str, count: int) -> list[float]:
    argv = [
        "bwrap", "--unshare-all", "--die-with-parent",
        "--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--", "/bin/true",
    ]
    run_timed(argv)  # warm-up
    return [run_timed(argv) for _ in range(count)]


def own_cgroup(controller: str) -> str:
    with open("/proc/self/cgroup") as own:
        for line in own:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


def crun_samples(rootfs: str, count: int) -> list[float]:
    bundle = tempfile.mkdtemp(prefix="crun-bench-")
    created_groups = []
    try:
        subprocess.run(["crun", "spec"], cwd=bundle, check=True)
        with open(os.path.join(bundle, "config.json")) as spec_file:
            spec = json.load(spec_file)
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"]["args"] = ["/bin/true"]
        spec["process"]["terminal"] = False
        # Below this process's own cgroup, which differs per hierarchy on cgroup v1; crun takes
        # one path for all, so use the memory hierarchy's and clean up every level crun made.
        parent = own_cgroup("memory").rstrip("/") + f"/crun-bench-{uuid.uuid4().hex[:8]}"
        spec["linux"]["cgroupsPath"] = parent
        with open(os.path.join(bundle, "config.json"), "w") as spec_file:
            json.dump(spec, spec_file)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            level = f"/sys/fs/cgroup/{hierarchy}"
            for part in parent.strip("/").split("/"):
                level = f"{level}/{part}"
                if not os.path.exists(level):
                    created_groups.append(level)

        # crun 1.8 refuses a hybrid layout (a cgroup2 mount beside the v1 hierarchies), so the
        # loop runs in a private mount namespace without that mount; the host's mounts stay.
        script = (
            "umount /sys/fs/cgroup/unified 2>/dev/null; "
            f"exec {sys.executable} {os.path.abspath(__file__)} --crun-loop {bundle} {count}"
        )
        output = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(output)
    finally:
        for group in sorted(created_groups, key=len, reverse=True):
            try:
                os.rmdir(group)
            except OSError:
                pass
        shutil.rmtree(bundle, ignore_errors=True)


def crun_loop(bundle: str, count: int) -> None:
    """Times `crun run` in the current mount namespace and prints the samples as JSON."""

    def once(index: int) -> float:
        return run_timed(["crun", "run", "--bundle", bundle, f"bench-{os.getpid()}-{index}"])

    once(-1)
    print(json.dumps([once(index) for index in range(count)]))


def server_timing_total(header: str | None) -> float:
    """The `total` duration of a Server-Timing header, in seconds."""
    for metric in (header or "").split(","):
        name, _, params = metric.strip().partition(";")
        if name == "total" and params.startswith("dur="):
            return float(params[4:]) / 1000
    raise RuntimeError(f"no total in Server-Timing {header!r}")


def server_create_samples(server: Server, count: int) -> tuple[list[float], list[float]]:
    """Returns (server-side times from Server-Timing, client round trips)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port)
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    body = json.dumps({"labels": {"code-toolbox-language": "python"}})
    server_side, round_trips = [], []
    for index in range(count + 1):
        started = time.perf_counter()
        connection.request("POST", "/api/sandbox", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"create failed: {response.status} {payload[:300]!r}")
        sandbox_id = json.loads(payload)["id"]
        connection.request("DELETE", f"/api/sandbox/{sandbox_id}", headers=headers)
        connection.getresponse().read()
        if index > 0:  # the first one warms up
            server_side.append(server_timing_total(response.getheader("server-timing")))
            round_trips.append(elapsed)
    connection.close()
    return server_side, round_trips


def sdk_samples(server: Server, count: int) -> list[float]:
    from daytona import Daytona, DaytonaConfig

    daytona = Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
    samples = []
    for index in range(count + 1):
        started = time.perf_counter()
        sandbox = daytona.create()
        result = sandbox.process.exec("true")
        elapsed = time.perf_counter() - started
        if result.exit_code != 0:
            raise RuntimeError(f"exec failed: {result.exit_code} {result.result!r}")
        daytona.delete(sandbox)
        if index > 0:
            samples.append(elapsed)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--crun-loop", nargs=2, metavar=("BUNDLE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crun_loop:
        crun_loop(args.crun_loop[0], int(args.crun_loop[1]))
        return 0

    layers = subprocess.run(
        [os.environ["DAYTONA_BIN"], "image", "prepare-default", "--image-cache",
         os.environ.get("DAYTONA_IMAGE_CACHE", "/var/cache/daytona/images")],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    rootfs = layers[-1]

    results = {
        "bwrap /bin/true": bwrap_samples(rootfs, args.iterations),
        "crun /bin/true": crun_samples(rootfs, args.iterations),
    }
    # The default server takes creates from its warm pool; the cold runs start every sandbox
    # inside the request. The servers run without sandbox networking unless the label says
    # so; with it, the uplink is `none`, so every sandbox gets its link, rules and resolver
    # but no packet leaves the host.
    networking = ["--network-uplink", "none"]
    configurations = (
        ("", []),
        (" (cold, no pool)", ["--warm-pool-size", "0"]),
        (" (networking)", networking),
        (" (cold, no pool, networking)", ["--warm-pool-size", "0", *networking]),
    )
    for label, extra_args in configurations:
        server = Server(extra_args)
        try:
            server.start()
            server_side, round_trips = server_create_samples(server, args.iterations)
            results[f"daytona server-side create{label}"] = server_side
            results[f"daytona POST /sandbox round trip{label}"] = round_trips
            results[f"daytona SDK create + first exec{label}"] = sdk_samples(server, args.iterations)
        finally:
            server.stop()
            server.remove_data()

    baseline = statistics.median(results["bwrap /bin/true"])
    print(f"{'measurement':<50} {'median ms':>10} {'p95 ms':>10} {'x bwrap':>8}")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"{name:<50} {median * 1000:>10.2f} {percentile(samples, 0.95) * 1000:>10.2f} {median / baseline:>8.2f}")
    print(f"({args.iterations} samples each, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
