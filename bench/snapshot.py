"""Time to snapshot, fork, archive and restore a sandbox with 100 MB of changed files, through
the official Python SDK, and to create a sandbox from that snapshot.

Each iteration creates a sandbox, writes 100 files of 1 MB of random data into it (plus a
deleted image file), then times `sandbox.create_snapshot(name)`, `daytona.create()` from the
new snapshot until it is started, `sandbox.fork()` until the fork is started, and, after a
stop, `sandbox.start()` of the stopped sandbox (the baseline), `sandbox.archive()` until the
sandbox is archived, and `sandbox.start()` of the archived sandbox (the restore) until it is
started. Everything is deleted between iterations, outside the timed parts.

Run as root with DAYTONA_BIN, DAYTONA_DAEMON_BIN and DAYTONA_IMAGE_CACHE set, as for the
Python suite: python bench/snapshot.py --iterations 5
"""

import argparse
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

from daytona_server import Server  # noqa: E402

WRITE_100_MB = (
    "mkdir -p /home/daytona/data && for i in $(seq 1 100); do "
    "head -c 1048576 /dev/urandom > /home/daytona/data/file-$i; done && "
    "sudo rm /etc/debian_version && sync"
)


def one_iteration(daytona) -> dict[str, float]:
    from daytona import CreateSandboxFromSnapshotParams

    sandbox = daytona.create()
    times = {}
    name = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        response = sandbox.process.exec(WRITE_100_MB, timeout=120)
        assert response.exit_code == 0, response.result

        started = time.perf_counter()
        sandbox.create_snapshot(name, timeout=300)
        times["snapshot"] = time.perf_counter() - started

        started = time.perf_counter()
        restored = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=300)
        times["create from snapshot"] = time.perf_counter() - started
        daytona.delete(restored)

        started = time.perf_counter()
        forked = sandbox.fork(timeout=300)
        times["fork"] = time.perf_counter() - started
        check = forked.process.exec("du -sm /home/daytona/data | cut -f1").result.strip()
        assert int(check) >= 100, check
        daytona.delete(forked)

        times.update(archive_and_restore(daytona, sandbox))
    finally:
        daytona.delete(sandbox)
        try:
            daytona.snapshot.delete(daytona.snapshot.get(name))
        except Exception:  # noqa: BLE001 - the snapshot may not exist after a failure
            pass
    return times


def archive_and_restore(daytona, sandbox) -> dict[str, float]:
    """Times a start of the stopped sandbox, its archive, and the start that restores it."""
    times = {}
    sandbox.stop()
    started = time.perf_counter()
    sandbox.start()
    times["start (stopped)"] = time.perf_counter() - started
    sandbox.stop()

    started = time.perf_counter()
    sandbox.archive()
    while daytona.get(sandbox.id).state != "archived":
        time.sleep(0.01)
    times["archive"] = time.perf_counter() - started

    started = time.perf_counter()
    sandbox.start(timeout=300)
    times["start (restore)"] = time.perf_counter() - started
    check = sandbox.process.exec("du -sm /home/daytona/data | cut -f1").result.strip()
    assert int(check) >= 100, check
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    server = Server()
    try:
        server.start()
        os.environ["DAYTONA_API_URL"] = server.api_url
        os.environ["DAYTONA_API_KEY"] = server.api_key
        from daytona import Daytona

        daytona = Daytona()
        samples: dict[str, list[float]] = {}
        for _ in range(args.iterations):
            for label, seconds in one_iteration(daytona).items():
                samples.setdefault(label, []).append(seconds * 1000)
    finally:
        server.stop()
        server.remove_data()
    for label, values in samples.items():
        values.sort()
        print(
            f"{label:<22} median {statistics.median(values):8.1f} ms  "
            f"min {values[0]:8.1f} ms  max {values[-1]:8.1f} ms  ({len(values)} samples)"
        )
    baseline = statistics.median(samples["start (stopped)"])
    restore = statistics.median(samples["start (restore)"])
    print(f"restore / start of a stopped sandbox: {restore / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
