"""Crash safety of sandbox snapshots and image builds: the server is stopped at each named step
of a `create_snapshot` and of a snapshot build (a build with the `fault-injection` feature,
given DAYTONA_FAULT=<step>:exit), restarted, and then the sandbox runs, the snapshot is
complete or cleanly failed, and the same request succeeds when it is made again."""

import os
import time
import uuid

import pytest
from conftest import client_for as client
from daytona import CreateSandboxFromSnapshotParams, CreateSnapshotParams, Image

from daytona_server import Server

FAULT_BIN = os.environ.get("DAYTONA_FAULT_BIN")

CAPTURE_STEPS = ["capture.blob-written", "capture.layer-unpacked", "capture.manifest-written"]
BUILD_STEPS = ["build.step-started", "build.layer-written", "build.committed"]


@pytest.fixture
def fault_server():
    if not FAULT_BIN or not os.path.exists(FAULT_BIN):
        pytest.skip("SKIPPED: DAYTONA_FAULT_BIN does not name a daytona built with --features fault-injection")
    instance = Server(binary=FAULT_BIN)
    yield instance
    instance.stop()
    instance.remove_data()


def crash_at(server, step, call):
    """Starts the server with a fault at `step`, runs `call`, and waits for the crash."""
    server.start({"DAYTONA_FAULT": f"{step}:exit"})
    try:
        call(client(server))
    except Exception:  # noqa: BLE001 - the connection drops when the server exits
        pass
    assert server.process.wait(timeout=120) == 86, server.log_tail()
    server.process = None
    server.start()


def wait_snapshot(daytona, name, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        snapshot = daytona.snapshot.get(name)
        if snapshot.state not in ("pending", "building") or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.3)


@pytest.mark.parametrize("step", CAPTURE_STEPS)
def test_crash_during_sandbox_snapshot(fault_server, step):
    name = f"crash-{uuid.uuid4().hex[:8]}"
    holder = {}

    def snapshot(daytona):
        sandbox = daytona.create()
        holder["id"] = sandbox.id
        sandbox.fs.upload_file(b"captured\n", "/home/daytona/captured.txt")
        sandbox.create_snapshot(name)

    crash_at(fault_server, step, snapshot)
    daytona = client(fault_server)
    sandbox = daytona.get(holder["id"])
    assert sandbox.state == "started"
    # The sandbox is not left frozen: a command runs.
    assert sandbox.process.exec("echo alive", timeout=20).result.strip() == "alive"

    existing = [item.name for item in daytona.snapshot.list().items]
    if name not in existing:
        sandbox.create_snapshot(name)
    created = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
    assert created.fs.download_file("/home/daytona/captured.txt") == b"captured\n"
    daytona.delete(created)
    daytona.delete(sandbox)
    daytona.snapshot.delete(daytona.snapshot.get(name))


@pytest.mark.parametrize("step", BUILD_STEPS)
def test_crash_during_build(fault_server, step):
    name = f"crash-build-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    image = Image.base("daytona-default").run_commands(f"echo {marker} > /built.txt")

    def build(daytona):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), timeout=120)

    crash_at(fault_server, step, build)
    daytona = client(fault_server)
    snapshot = wait_snapshot(daytona, name)
    assert snapshot.state in ("active", "build_failed"), snapshot.state
    if snapshot.state == "build_failed":
        assert snapshot.error_reason
        daytona.snapshot.delete(snapshot)
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), timeout=300)

    sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
    assert sandbox.process.exec("cat /built.txt").result.strip() == marker
    daytona.delete(sandbox)
    daytona.snapshot.delete(daytona.snapshot.get(name))
